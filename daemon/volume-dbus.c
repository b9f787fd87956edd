/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* org.cistern.Cistern1.Volume */

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "log.h"
#include "options.h"
#include "volume-dbus.h"

int volume_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error) {
        _cleanup_free_ char *pool = NULL, *name = NULL;
        Volume *v;
        Pool *p;
        int r;

        r = sd_bus_path_decode_many(path, CISTERN_POOL_PREFIX "/%/%", &pool, &name);
        if (r <= 0)
                return r;
        p = manager_get_pool(userdata, pool);
        if (!p)
                return 0;
        v = pool_get_volume(p, name);
        if (!v)
                return 0;
        *found = v;
        return 1;
}

void volume_emit_changed(Volume *v, const char *property, ...) {
        va_list ap;

        va_start(ap, property);
        bus_emit_changed_va(v->pool->manager->bus, v->object_path, VOLUME_INTERFACE, property, ap);
        va_end(ap);
}

static int property_get_pool(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;

        return sd_bus_message_append_basic(reply, 'o', v->pool->object_path);
}

static int property_get_format(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;

        return sd_bus_message_append_basic(reply, 's', v->settings.format);
}

static int property_get_source(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        Volume *source = v->settings.source ? pool_get_volume(v->pool, v->settings.source) : NULL;

        return sd_bus_message_append_basic(reply, 'o', source ? source->object_path : "/");
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;

        return sd_bus_message_append_basic(reply, 's', volume_state_to_string(v->state));
}

static int property_get_outdated(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        Volume *source = v->settings.source ? pool_get_volume(v->pool, v->settings.source) : NULL;
        int b = v->settings.snap_on_start && v->state == VOLUME_STARTED && source &&
                source->generation != v->source_generation;

        return sd_bus_message_append_basic(reply, 'b', &b);
}

static int property_get_revisions(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(st)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < v->n_revisions; i++) {
                char id[21];

                snprintf(id, sizeof id, "%" PRIu64, v->revisions[i].id);
                r = sd_bus_message_append(reply, "(st)", id, v->revisions[i].created);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_device(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        char node[LOOP_NODE_MAX];

        return sd_bus_message_append_basic(reply, 's', volume_is_attached(v) ? loop_node(&v->device, node) : "");
}

static int property_get_partitions(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        char disk[LOOP_NODE_MAX], node[LOOP_NODE_MAX + 16];
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(ustts)");
        for (size_t i = 0; r >= 0 && i < v->n_partitions; i++) {
                const Partition *p = &v->partitions[i];

                snprintf(node, sizeof node, "%sp%u", loop_node(&v->device, disk), p->number);
                r = sd_bus_message_append(reply, "(ustts)", p->number, node, p->start, p->size, p->fstype);
        }
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int property_get_mounts(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(us)");
        for (size_t i = 0; r >= 0 && i < v->n_mounts; i++)
                r = sd_bus_message_append(reply, "(us)", v->mounts[i].partition, v->mounts[i].path);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

int volume_authorize(Volume *v, sd_bus_message *msg, const char *action, sd_bus_error *error) {
        return authorize_own(v->pool->manager, msg, action, v->pool->name, v->name, v->settings.owner, error);
}

/* A volume, existing or being created, that snaps its working copy from v at start. */
static Volume *find_user(Volume *v) {
        Volume *other;

        NAMEMAP_FOREACH(other, &v->pool->volumes)
                if (other != v && streq_ptr(other->settings.source, v->name))
                        return other;
        NAMEMAP_FOREACH(other, &v->pool->creating)
                if (streq_ptr(other->settings.source, v->name))
                        return other;
        return NULL;
}

const OptionSpec volume_no_options[] = { {} };

int volume_check_idle(Volume *v, sd_bus_error *error) {
        if (v->operation)
                return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is busy with %s.", v->pool->name, v->name, v->operation);
        return 0;
}

void volume_work_reply_error(VolumeWork *w, int r, const char *what) {
        if (r == -EFBIG)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_INVALID_ARGUMENT,
                                                  "%s: the size is larger than the pool's filesystem allows.", what);
        else if (r == -EIO && w->error)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_FAILED, "%s: qemu-img: %s", what, w->error);
        else if (r == -EBADMSG)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_UNSAFE_IMAGE,
                                                  "%s: its qcow2 image fails cistern's checks.", what);
        else if (r == -ECANCELED)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_CANCELLED, "%s: cancelled.", what);
        else
                (void) bus_reply_errno(w->msg, r, what);
}

void volume_restat_and_emit(Volume *v) {
        (void) volume_stat(v);
        volume_emit_changed(v, "State", "Size", "Usage", "Outdated", "Revisions", NULL);
        pool_refresh(v->pool);
        pool_emit_changed(v->pool, "Usage", "Available", NULL);
}

void volume_work_reply_changed(VolumeWork *w) {
        volume_restat_and_emit(w->volume);
        (void) sd_bus_reply_method_return(w->msg, NULL);
        volume_work_free(w, 0);
}

void volume_committed(Volume *v) {
        Volume *other;

        v->generation++;
        NAMEMAP_FOREACH(other, &v->pool->volumes)
                if (other->state == VOLUME_STARTED && streq_ptr(other->settings.source, v->name))
                        volume_emit_changed(other, "Outdated", NULL);
}

static int remove_work(void *userdata) {
        VolumeWork *w = userdata;

        return volume_remove(w->volume);
}

static void remove_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        Pool *p = v->pool;

        if (r < 0) {
                volume_work_reply_error(w, r, "Failed to remove the volume");
                volume_work_free(w, r);
                return;
        }
        log_info("Removed volume %s/%s.", p->name, v->name);
        (void) sd_bus_emit_object_removed(p->manager->bus, v->object_path);
        namemap_remove(&p->volumes, v->name);
        pool_refresh(p);
        pool_emit_changed(p, "Volumes", "Usage", "Available", NULL);
        (void) sd_bus_reply_method_return(w->msg, NULL);
        w->volume = NULL;
        volume_work_free(w, 0);
        volume_free(v);
}

static int method_remove(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        Pool *p = v->pool;
        const char *reason;
        VolumeWork *w;
        Volume *user;
        int r;

        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        if (volume_is_busy(v, &reason))
                return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is in use: %s.", p->name, v->name, reason);
        user = find_user(v);
        if (user)
                return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is the source of volume %s.", p->name, v->name, user->name);

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        r = volume_work_start(w, remove_work, remove_done, error);
        return r < 0 ? r : 1;
}

static void resized(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (r < 0)
                volume_work_reply_error(w, r, "Failed to resize the volume");
        else {
                log_info("Resized volume %s/%s to %" PRIu64 " bytes.", v->pool->name, v->name, w->size);
                (void) sd_bus_reply_method_return(w->msg, NULL);
        }
        /* Read back what the image says in every case: a failed resize may have done part of it. */
        if (volume_stat(v) >= 0)
                volume_emit_changed(v, "Size", "Usage", NULL);
        pool_refresh(v->pool);
        pool_emit_changed(v->pool, "Usage", "Available", NULL);
        volume_work_free(w, r);
}

static void resize_done(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (r < 0 || w->volume->state != VOLUME_STOPPED) {
                resized(r, w);
                return;
        }
        volume_committed(w->volume);
        volume_work_save(w, resized);
}

typedef struct ResizeOptions {
        bool allow_shrink;
} ResizeOptions;

static const OptionSpec resize_spec[] = {
        OPTION("allow_shrink", OPTION_BOOL, ResizeOptions, allow_shrink),
        {}
};

static int method_resize(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ResizeOptions o = {};
        VolumeWork *w;
        uint64_t size;
        int r;

        r = sd_bus_message_read(msg, "t", &size);
        if (r < 0)
                return r;
        r = options_read(msg, resize_spec, &o, NULL, error);
        if (r < 0)
                return r;
        r = validate_volume_size(v->pool->manager, size, error);
        if (r < 0)
                return r;
        r = volume_check_idle(v, error);
        if (r >= 0 && !v->device_on_work)     /* the committed image is replaced, not resized */
                r = volume_check_detached(v, error);
        if (r < 0)
                return r;
        if (size < v->size && !o.allow_shrink)
                return sd_bus_error_setf(error, ERR_WOULD_SHRINK,
                                         "Size %" PRIu64 " is smaller than the volume's %" PRIu64 " bytes; "
                                         "pass allow_shrink to cut off its end.", size, v->size);

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (size == v->size)
                return sd_bus_reply_method_return(msg, NULL);
        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->size = size;
        /* A stopped volume gets a resized copy of its image: a job unless copies are instant. */
        if (v->state == VOLUME_STOPPED && !v->pool->driver->copy_is_instant(v->pool, v->pool)) {
                r = volume_work_publish_job(w, v->usage, error);
                if (r < 0) {
                        volume_work_free(w, r);
                        return r;
                }
        }
        r = volume_work_start(w, volume_resize_work, resize_done, error);
        return r < 0 ? r : 1;
}

typedef struct VolumeConfig {
        bool read_only;
        uint32_t revisions_to_keep;
        bool save_on_stop;
        bool snap_on_start;
        const char *source;
} VolumeConfig;

static const OptionSpec configure_spec[] = {
        OPTION("read_only", OPTION_BOOL, VolumeConfig, read_only),
        OPTION("revisions_to_keep", OPTION_UINT32, VolumeConfig, revisions_to_keep),
        OPTION("save_on_stop", OPTION_BOOL, VolumeConfig, save_on_stop),
        OPTION("snap_on_start", OPTION_BOOL, VolumeConfig, snap_on_start),
        OPTION("source", OPTION_PATH, VolumeConfig, source),
        {}
};

/* Resolves the source option: "/" clears it, anything else must be another volume of the pool. */
static int resolve_source(Volume *v, const char *path, const char **ret_name, sd_bus_error *error) {
        Volume *source;
        int r;

        if (streq(path, "/")) {
                *ret_name = NULL;
                return 0;
        }
        r = pool_volume_by_path(v->pool, path, &source, error);
        if (r < 0)
                return r;
        if (source == v)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "A volume cannot be its own source.");
        *ret_name = source->name;
        return 0;
}

static int validate_configure(Volume *v, VolumeConfig *c, uint32_t seen, const char **ret_source, sd_bus_error *error) {
        int r;

        r = volume_check_idle(v, error);
        if (r < 0)
                return r;
        r = validate_revisions_to_keep(v->pool->manager, c->revisions_to_keep, error);
        if (r < 0)
                return r;
        if ((option_seen(seen, configure_spec, "save_on_stop") || option_seen(seen, configure_spec, "snap_on_start") ||
             option_seen(seen, configure_spec, "source")) && v->state != VOLUME_STOPPED)
                return sd_bus_error_setf(error, ERR_WRONG_STATE,
                                         "save_on_stop, snap_on_start and source change only while volume %s/%s is stopped.",
                                         v->pool->name, v->name);
        *ret_source = v->settings.source;
        if (option_seen(seen, configure_spec, "source")) {
                r = resolve_source(v, c->source, ret_source, error);
                if (r < 0)
                        return r;
        }
        return validate_life_cycle(c->save_on_stop, c->snap_on_start, *ret_source, error);
}

static int volume_apply_config(Volume *v, const VolumeConfig *c, const char *source) {
        VolumeSettings old = v->settings;
        char *s = NULL;
        int r;

        if (source && !(s = strdup(source)))
                return -ENOMEM;
        v->settings.read_only = c->read_only;
        v->settings.revisions_to_keep = c->revisions_to_keep;
        v->settings.save_on_stop = c->save_on_stop;
        v->settings.snap_on_start = c->snap_on_start;
        v->settings.source = s;
        r = volume_save(v);
        if (r < 0) {
                free(s);
                v->settings = old;
                return r;
        }
        free(old.source);
        return 0;
}

/* A lower RevisionsToKeep takes effect at once: the oldest revisions go. */
static int configure_prune(Volume *v, sd_bus_message *msg, sd_bus_error *error) {
        VolumeWork *w;
        int r;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        r = volume_plan_revisions(v, false, 0, w);
        if (r < 0) {
                volume_work_free(w, r);
                return r;
        }
        r = volume_start_pruning(w, error);
        return r < 0 ? r : 1;
}

static int method_configure(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeConfig c = {
                .read_only = v->settings.read_only,
                .revisions_to_keep = v->settings.revisions_to_keep,
                .save_on_stop = v->settings.save_on_stop,
                .snap_on_start = v->settings.snap_on_start,
        };
        const char *source = NULL;
        uint32_t seen;
        int r;

        r = options_read(msg, configure_spec, &c, &seen, error);
        if (r < 0)
                return r;
        r = validate_configure(v, &c, seen, &source, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_apply_config(v, &c, source);
        if (r < 0)
                return bus_error_from_errno(error, r, "Failed to save the volume's settings");
        volume_emit_changed(v, "ReadOnly", "RevisionsToKeep", "SaveOnStop", "SnapOnStart", "Source", "Outdated", NULL);
        if (v->n_revisions > v->settings.revisions_to_keep)
                return configure_prune(v, msg, error);
        return sd_bus_reply_method_return(msg, NULL);
}

const sd_bus_vtable volume_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", NULL, offsetof(Volume, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Pool", "o", property_get_pool, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Format", "s", property_get_format, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Size", "t", NULL, offsetof(Volume, size), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Usage", "t", NULL, offsetof(Volume, usage), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Owner", "u", NULL, offsetof(Volume, settings.owner), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ReadOnly", "b", bus_property_get_bool, offsetof(Volume, settings.read_only), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SaveOnStop", "b", bus_property_get_bool, offsetof(Volume, settings.save_on_stop), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SnapOnStart", "b", bus_property_get_bool, offsetof(Volume, settings.snap_on_start), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Source", "o", property_get_source, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("RevisionsToKeep", "u", NULL, offsetof(Volume, settings.revisions_to_keep), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Outdated", "b", property_get_outdated, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Revisions", "a(st)", property_get_revisions, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Created", "t", NULL, offsetof(Volume, settings.created), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Device", "s", property_get_device, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Partitions", "a(ustts)", property_get_partitions, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Mounts", "a(us)", property_get_mounts, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Remove",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_remove, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Resize",
                                SD_BUS_ARGS("t", size, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_resize, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Configure",
                                SD_BUS_ARGS("a{sv}", settings),
                                SD_BUS_NO_RESULT,
                                method_configure, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Info",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("a{sv}", info),
                                method_info, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Convert",
                                SD_BUS_ARGS("s", format, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_convert, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Start",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_start, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Stop",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateSnapshot",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("s", revision),
                                method_create_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemoveRevision",
                                SD_BUS_ARGS("s", revision, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_remove_revision, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Revert",
                                SD_BUS_ARGS("s", revision, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_revert, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Clone",
                                SD_BUS_ARGS("o", pool, "s", name, "a{sv}", options),
                                SD_BUS_RESULT("o", volume),
                                method_clone, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Import",
                                SD_BUS_ARGS("h", fd, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_import, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportBegin",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("h", fd),
                                method_import_begin, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ImportEnd",
                                SD_BUS_ARGS("b", commit, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_import_end, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Attach",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("s", device),
                                method_attach, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Detach",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_detach, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Open",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("h", fd),
                                method_open, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Mount",
                                SD_BUS_ARGS("u", partition, "a{sv}", options),
                                SD_BUS_RESULT("s", mountpoint),
                                method_mount, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Unmount",
                                SD_BUS_ARGS("u", partition, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_unmount, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Export",
                                SD_BUS_ARGS("h", fd, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_export, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExportBegin",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("h", fd),
                                method_export_begin, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ExportEnd",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_export_end, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};
