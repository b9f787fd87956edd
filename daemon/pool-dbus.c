/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* org.cistern.Cistern1.Pool */

#include <stdarg.h>
#include <inttypes.h>
#include <stddef.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "image.h"
#include "log.h"
#include "names.h"
#include "options.h"
#include "pool.h"
#include "volume-dbus.h"

int pool_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        Pool *p;
        int r;

        r = sd_bus_path_decode_many(path, CISTERN_POOL_PREFIX "/%", &name);
        if (r <= 0)
                return r;
        p = manager_get_pool(userdata, name);
        if (!p)
                return 0;
        *found = p;
        return 1;
}

void pool_emit_changed(Pool *p, const char *property, ...) {
        va_list ap;

        va_start(ap, property);
        bus_emit_changed_va(p->manager->bus, p->object_path, POOL_INTERFACE, property, ap);
        va_end(ap);
}

static int property_get_driver(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;

        return sd_bus_message_append(reply, "s", p->driver->name);
}

static int property_get_config(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        r = p->driver->config_append(p, reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int property_get_usage_details(sd_bus *bus, const char *path, const char *interface, const char *property,
                                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "a{sv}", 0);
}

static int property_get_volumes(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        Volume *v;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        NAMEMAP_FOREACH(v, &p->volumes) {
                r = sd_bus_message_append_basic(reply, 'o', v->object_path);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

typedef struct CreateOptions {
        const char *format;
        bool save_on_stop;
        bool snap_on_start;
        const char *source;
        uint32_t revisions_to_keep;
        bool read_only;
        bool preallocate;
        uint32_t owner;
} CreateOptions;

static const OptionSpec create_spec[] = {
        OPTION("format", OPTION_STRING, CreateOptions, format),
        OPTION("save_on_stop", OPTION_BOOL, CreateOptions, save_on_stop),
        OPTION("snap_on_start", OPTION_BOOL, CreateOptions, snap_on_start),
        OPTION("source", OPTION_PATH, CreateOptions, source),
        OPTION("revisions_to_keep", OPTION_UINT32, CreateOptions, revisions_to_keep),
        OPTION("read_only", OPTION_BOOL, CreateOptions, read_only),
        OPTION("preallocate", OPTION_BOOL, CreateOptions, preallocate),
        OPTION("owner", OPTION_UINT32, CreateOptions, owner),
        {}
};

int pool_volume_by_path(Pool *p, const char *path, Volume **ret, sd_bus_error *error) {
        _cleanup_free_ char *pool = NULL, *name = NULL;
        Volume *v;
        int r;

        r = sd_bus_path_decode_many(path, CISTERN_POOL_PREFIX "/%/%", &pool, &name);
        if (r < 0)
                return r;
        if (r == 0 || !streq(pool, p->name))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Source %s is not a volume of pool %s.", path, p->name);
        v = pool_get_volume(p, name);
        if (!v)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "Source volume %s/%s does not exist.", p->name, name);
        if (v->operation)   /* it may be on its way out */
                return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is busy with %s.", p->name, name, v->operation);
        *ret = v;
        return 0;
}

static int validate_create(Pool *p, sd_bus_message *msg, const char *name, uint64_t size, CreateOptions *o,
                           uint32_t seen, Volume **ret_source, sd_bus_error *error) {
        Manager *m = p->manager;
        uid_t caller;
        int r;

        if (!name_is_valid(name))
                return sd_bus_error_setf(error, ERR_INVALID_NAME, "Invalid volume name '%s'.", name);
        r = validate_volume_size(m, size, error);
        if (r < 0)
                return r;
        if (!image_format_is_valid(o->format))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Unknown volume format '%s'; use raw or qcow2.",
                                         o->format);
        /* snap_on_start volumes are discarded at stop unless told otherwise. */
        if (o->snap_on_start && !option_seen(seen, create_spec, "save_on_stop"))
                o->save_on_stop = false;
        r = validate_life_cycle(o->save_on_stop, o->snap_on_start, o->source, error);
        if (r < 0)
                return r;
        if (o->source) {
                r = pool_volume_by_path(p, o->source, ret_source, error);
                if (r < 0)
                        return r;
        }
        r = validate_revisions_to_keep(m, o->revisions_to_keep, error);
        if (r < 0)
                return r;

        r = bus_message_sender_uid(msg, &caller);
        if (r < 0)
                return sd_bus_error_set(error, ERR_NOT_AUTHORIZED, "Could not identify the caller.");
        if (!option_seen(seen, create_spec, "owner"))
                o->owner = caller;
        else if (o->owner == UINT32_MAX)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "Owner 4294967295 is not a valid uid.");
        else if (caller != 0 && o->owner != caller)
                return sd_bus_error_set(error, ERR_NOT_AUTHORIZED, "Only root may create volumes owned by another user.");

        if (pool_get_volume(p, name) || namemap_get(&p->creating, name))
                return sd_bus_error_setf(error, ERR_ALREADY_EXISTS, "Volume %s/%s already exists.", p->name, name);
        if (p->volumes.n + p->creating.n >= m->limits.max_volumes_per_pool)
                return sd_bus_error_setf(error, ERR_LIMITS_EXCEEDED, "Pool %s already holds the most volumes a pool may, %u.",
                                         p->name, m->limits.max_volumes_per_pool);
        return 0;
}

static int create_work(void *userdata) {
        VolumeWork *w = userdata;

        return volume_create(w->volume, w->size, w->preallocate);
}

static void create_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        Pool *p = v->pool;

        namemap_remove(&p->creating, v->name);
        if (r >= 0)
                r = namemap_put(&p->volumes, v->name, v);
        if (r < 0) {
                volume_work_reply_error(w, r, "Failed to create the volume");
                w->volume = NULL;
                volume_free(v);
                volume_work_free(w, r);
                return;
        }

        log_info("Created volume %s/%s of %" PRIu64 " bytes for uid %u.", p->name, v->name, w->size, v->settings.owner);
        pool_refresh(p);
        (void) sd_bus_emit_object_added(p->manager->bus, v->object_path);
        pool_emit_changed(p, "Volumes", "Usage", "Available", NULL);
        (void) sd_bus_reply_method_return(w->msg, "o", v->object_path);
        volume_work_free(w, 0);
}

static int volume_new_from_options(Pool *p, const char *name, const CreateOptions *o, const Volume *source, Volume **ret) {
        _cleanup_(volume_freep) Volume *v = NULL;
        int r;

        r = volume_new(p, name, &v);
        if (r < 0)
                return r;
        v->settings = (VolumeSettings) {
                .owner = o->owner,
                .read_only = o->read_only,
                .save_on_stop = o->save_on_stop,
                .snap_on_start = o->snap_on_start,
                .revisions_to_keep = o->revisions_to_keep,
                .created = now_usec(CLOCK_REALTIME),
        };
        strcpy(v->settings.format, o->format);
        if (source && !(v->settings.source = strdup(source->name)))
                return -ENOMEM;
        *ret = TAKE_PTR(v);
        return 0;
}

static int method_create_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_freep) Volume *v = NULL;
        Pool *p = userdata;
        CreateOptions o = { .format = "raw", .save_on_stop = true, .revisions_to_keep = p->revisions_to_keep };
        Volume *source = NULL;
        VolumeWork *w;
        const char *name;
        uint64_t size;
        uint32_t seen;
        int r;

        r = sd_bus_message_read(msg, "st", &name, &size);
        if (r < 0)
                return r;
        r = options_read(msg, create_spec, &o, &seen, error);
        if (r < 0)
                return r;
        r = validate_create(p, msg, name, size, &o, seen, &source, error);
        if (r < 0)
                return r;

        r = authorize(p->manager, msg, ACTION_VOLUME_CREATE, p->name, name, o.owner, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_new_from_options(p, name, &o, source, &v);
        if (r < 0)
                return r;
        /* The name is taken from now on; the volume appears when its files are complete. */
        r = namemap_put(&p->creating, v->name, v);
        if (r < 0)
                return r;
        r = volume_work_new(v, msg, &w);
        if (r < 0) {
                namemap_remove(&p->creating, v->name);
                return r;
        }
        w->size = size;
        w->preallocate = o.preallocate;
        r = volume_work_start(w, create_work, create_done, error);
        if (r < 0) {
                namemap_remove(&p->creating, v->name);
                return r;
        }
        TAKE_PTR(v);
        return 1;
}

typedef struct PoolSettings {
        uint32_t revisions_to_keep;
} PoolSettings;

static const OptionSpec pool_settings_spec[] = {
        OPTION("revisions_to_keep", OPTION_UINT32, PoolSettings, revisions_to_keep),
        {}
};

static int method_configure(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        PoolSettings s = { .revisions_to_keep = p->revisions_to_keep };
        uint32_t seen, old;
        int r;

        r = options_read(msg, pool_settings_spec, &s, &seen, error);
        if (r < 0)
                return r;
        r = validate_revisions_to_keep(p->manager, s.revisions_to_keep, error);
        if (r < 0)
                return r;

        r = authorize(p->manager, msg, ACTION_POOL_MANAGE, p->name, NULL, 0, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (seen == 0 || s.revisions_to_keep == p->revisions_to_keep)
                return sd_bus_reply_method_return(msg, NULL);
        old = p->revisions_to_keep;
        p->revisions_to_keep = s.revisions_to_keep;
        r = pool_save(p);
        if (r < 0) {
                p->revisions_to_keep = old;
                return bus_error_from_errno(error, r, "Failed to save the pool's settings");
        }
        pool_emit_changed(p, "RevisionsToKeep", "Config", NULL);
        return sd_bus_reply_method_return(msg, NULL);
}

static void restat_volume(Volume *v) {
        uint64_t size = v->size, usage = v->usage;
        int r;

        r = volume_stat(v);
        if (r < 0) {
                log_warning_errno(r, "Failed to read the image of volume %s/%s: %m", v->pool->name, v->name);
                return;
        }
        if (size != v->size || usage != v->usage)
                volume_emit_changed(v, "Size", "Usage", NULL);
}

static int method_refresh(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Pool *p = userdata;
        Volume *v;

        NAMEMAP_FOREACH(v, &p->volumes)
                restat_volume(v);
        pool_refresh(p);
        pool_emit_changed(p, "Size", "Usage", "Available", "CopyOnWrite", NULL);
        return sd_bus_reply_method_return(msg, NULL);
}

const sd_bus_vtable pool_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", NULL, offsetof(Pool, name), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Driver", "s", property_get_driver, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Config", "a{sv}", property_get_config, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Size", "t", NULL, offsetof(Pool, size), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Usage", "t", NULL, offsetof(Pool, usage), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Available", "t", NULL, offsetof(Pool, available), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("UsageDetails", "a{sv}", property_get_usage_details, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CopyOnWrite", "b", bus_property_get_bool, offsetof(Pool, copy_on_write), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("RevisionsToKeep", "u", NULL, offsetof(Pool, revisions_to_keep), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Volumes", "ao", property_get_volumes, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("CreateVolume",
                                SD_BUS_ARGS("s", name, "t", size, "a{sv}", options),
                                SD_BUS_RESULT("o", volume),
                                method_create_volume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Configure",
                                SD_BUS_ARGS("a{sv}", settings),
                                SD_BUS_NO_RESULT,
                                method_configure, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Refresh",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_refresh, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};
