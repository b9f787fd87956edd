/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A volume: its settings (volume.json in its own directory), its life cycle, and the calls
 * into its pool's driver. */

#include <fcntl.h>

#include "errors.h"
#include "log.h"
#include "store.h"
#include "volume.h"

#define VOLUME_JSON "volume.json"
#define VOLUME_JSON_MAX (256 * 1024)

static const char *const volume_state_names[] = {
        [VOLUME_STOPPED] = "stopped",
        [VOLUME_STARTED] = "started",
};

const char *volume_state_to_string(VolumeState s) {
        return volume_state_names[s];
}

int volume_new(Pool *p, const char *name, Volume **ret) {
        _cleanup_(volume_freep) Volume *v = NULL;
        int r;

        v = calloc(1, sizeof *v);
        if (!v)
                return -ENOMEM;
        v->pool = p;
        v->next_revision = 1;
        strcpy(v->settings.format, "raw");
        v->settings.save_on_stop = true;
        v->settings.revisions_to_keep = p->revisions_to_keep;
        v->name = strdup(name);
        if (!v->name)
                return -ENOMEM;
        r = sd_bus_path_encode_many(&v->object_path, CISTERN_POOL_PREFIX "/%/%", p->name, name);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        return 0;
}

Volume *volume_free(Volume *v) {
        if (!v)
                return NULL;
        free(v->settings.source);
        free(v->object_path);
        free(v->name);
        free(v);
        return NULL;
}

int volume_open_dir(Volume *v) {
        return open_beneath(v->pool->volumes_fd, v->name, O_RDONLY | O_DIRECTORY, 0);
}

static json_object *volume_to_json(Volume *v) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        const VolumeSettings *s = &v->settings;

        if (!o)
                return NULL;
        if (json_object_object_add(o, "format", json_object_new_string(s->format)) < 0 ||
            json_object_object_add(o, "owner", json_object_new_uint64(s->owner)) < 0 ||
            json_object_object_add(o, "read_only", json_object_new_boolean(s->read_only)) < 0 ||
            json_object_object_add(o, "save_on_stop", json_object_new_boolean(s->save_on_stop)) < 0 ||
            json_object_object_add(o, "snap_on_start", json_object_new_boolean(s->snap_on_start)) < 0 ||
            json_object_object_add(o, "source", s->source ? json_object_new_string(s->source) : NULL) < 0 ||
            json_object_object_add(o, "revisions_to_keep", json_object_new_uint64(s->revisions_to_keep)) < 0 ||
            json_object_object_add(o, "created", json_object_new_uint64(s->created)) < 0 ||
            json_object_object_add(o, "next_revision", json_object_new_uint64(v->next_revision)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

static int volume_from_json(Volume *v, json_object *o) {
        VolumeSettings *s = &v->settings;
        const char *format = json_get_string(o, "format"), *source = json_get_string(o, "source");
        uint64_t owner;

        if (!format || (!streq(format, "raw") && !streq(format, "qcow2")))
                return -EBADMSG;
        owner = json_get_u64(o, "owner", UINT64_MAX);
        if (owner >= UINT32_MAX)
                return -EBADMSG;    /* no owner, or not a uid: never fall back to root */
        strcpy(s->format, format);
        s->owner = (uid_t) owner;
        s->read_only = json_get_bool(o, "read_only", false);
        s->save_on_stop = json_get_bool(o, "save_on_stop", true);
        s->snap_on_start = json_get_bool(o, "snap_on_start", false);
        s->revisions_to_keep = (uint32_t) MIN(json_get_u64(o, "revisions_to_keep", v->pool->revisions_to_keep),
                                              v->pool->manager->limits.max_revisions_to_keep);
        s->created = json_get_u64(o, "created", 0);
        v->next_revision = json_get_u64(o, "next_revision", 1);
        if (source) {
                s->source = strdup(source);
                if (!s->source)
                        return -ENOMEM;
        }
        return 0;
}

static int volume_write_json(Volume *v, int vdir_fd) {
        _cleanup_(json_object_putp) json_object *o = volume_to_json(v);

        if (!o)
                return -ENOMEM;
        return store_write_json(vdir_fd, VOLUME_JSON, o);
}

int volume_save(Volume *v) {
        _cleanup_close_ int vdir_fd = volume_open_dir(v);

        if (vdir_fd < 0)
                return vdir_fd;
        return volume_write_json(v, vdir_fd);
}

static int volume_stat_at(Volume *v, int vdir_fd) {
        uint64_t size, usage;
        int r;

        r = v->pool->driver->volume_stat(v, vdir_fd, &size, &usage);
        if (r < 0)
                return r;
        v->size = size;
        v->usage = usage;
        return 0;
}

int volume_stat(Volume *v) {
        _cleanup_close_ int vdir_fd = volume_open_dir(v);

        if (vdir_fd < 0)
                return vdir_fd;
        return volume_stat_at(v, vdir_fd);
}

int volume_load(Pool *p, const char *name, Volume **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(volume_freep) Volume *v = NULL;
        _cleanup_close_ int vdir_fd = -EBADF;
        int r;

        r = volume_new(p, name, &v);
        if (r < 0)
                return r;
        vdir_fd = volume_open_dir(v);
        if (vdir_fd == -ENOTDIR)
                return -ENOENT;     /* a file that happens to have a volume's name: not ours */
        if (vdir_fd < 0)
                return vdir_fd;
        r = store_read_json(vdir_fd, VOLUME_JSON, VOLUME_JSON_MAX, &o);
        if (r < 0)
                return r;
        r = volume_from_json(v, o);
        if (r < 0)
                return r;
        (void) store_remove_staging(vdir_fd);
        r = volume_stat_at(v, vdir_fd);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        return 0;
}

/* The volume is built in a staging directory and renamed into place, so that after a crash there
 * is either a complete volume or a staging entry that the next start sweeps away. */
int volume_create(Volume *v, uint64_t size, bool preallocate) {
        _cleanup_free_ char *staging = NULL;
        _cleanup_close_ int vdir_fd = -EBADF;
        Pool *p = v->pool;
        int r;

        r = staging_dir_create(p->volumes_fd, 0700, &staging);
        if (r < 0)
                return r;
        vdir_fd = open_beneath(p->volumes_fd, staging, O_RDONLY | O_DIRECTORY, 0);
        if (vdir_fd < 0) {
                r = vdir_fd;
                goto fail;
        }
        r = p->driver->volume_create(v, vdir_fd, size, preallocate);
        if (r < 0)
                goto fail;
        r = volume_write_json(v, vdir_fd);
        if (r < 0)
                goto fail;
        r = fsync_dir(vdir_fd);
        if (r < 0)
                goto fail;
        r = rename_beneath(p->volumes_fd, staging, v->name, false);
        if (r < 0)
                goto fail;
        return volume_stat_at(v, vdir_fd);

fail:
        (void) p->driver->volume_remove(v, vdir_fd);
        (void) remove_tree_beneath(p->volumes_fd, staging);
        return r;
}

/* The volume's directory is first renamed to a staging name, so that it vanishes atomically;
 * whatever a crash leaves of it afterwards is swept at the next start. */
int volume_remove(Volume *v) {
        _cleanup_free_ char *staging = NULL;
        _cleanup_close_ int vdir_fd = -EBADF;
        Pool *p = v->pool;
        int r;

        vdir_fd = volume_open_dir(v);
        if (vdir_fd < 0)
                return vdir_fd;
        r = p->driver->volume_remove(v, vdir_fd);
        if (r < 0)
                return r;
        r = staging_dir_create(p->volumes_fd, 0700, &staging);
        if (r < 0)
                return r;
        r = rename_beneath(p->volumes_fd, v->name, staging, true);
        if (r < 0) {
                (void) unlinkat(p->volumes_fd, staging, AT_REMOVEDIR);
                return r;
        }
        r = remove_tree_beneath(p->volumes_fd, staging);
        if (r < 0)
                log_warning_errno(r, "Failed to remove the data of volume %s/%s, the next start retries: %m", p->name, v->name);
        return 0;
}

int volume_resize(Volume *v, uint64_t size) {
        _cleanup_close_ int vdir_fd = volume_open_dir(v);

        if (vdir_fd < 0)
                return vdir_fd;
        return v->pool->driver->volume_resize(v, vdir_fd, size);
}

int volume_work_start(Volume *v, sd_bus_message *msg, uint64_t size, bool preallocate,
                      WorkFunc work, WorkDone done, sd_bus_error *error) {
        VolumeWork *w;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        *w = (VolumeWork) {
                .msg = sd_bus_message_ref(msg),
                .volume = v,
                .size = size,
                .preallocate = preallocate,
        };
        r = workers_run(v->pool->manager->workers, work, done, w);
        if (r < 0) {
                volume_work_free(w);
                if (r == -EMFILE)
                        return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many operations are running; try again later.");
                return r;
        }
        v->operation = sd_bus_message_get_member(w->msg);
        return 0;
}

VolumeWork *volume_work_free(VolumeWork *w) {
        if (!w)
                return NULL;
        if (w->volume)
                w->volume->operation = NULL;
        sd_bus_message_unref(w->msg);
        free(w);
        return NULL;
}

bool volume_is_busy(Volume *v, const char **ret_reason) {
        const char *reason = NULL;

        if (v->operation)
                reason = "a change to it is in progress";
        else if (v->state == VOLUME_STARTED)
                reason = "it is started";
        if (ret_reason)
                *ret_reason = reason;
        return reason;
}
