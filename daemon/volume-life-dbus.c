/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods of the life cycle: Start, Stop, CreateSnapshot, RemoveRevision, Revert, Clone.
 * Each validates, authorizes, plans on the loop and hands the file work to a worker thread; the
 * done callback applies the outcome, emits signals and replies. */

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "image.h"
#include "job.h"
#include "log.h"
#include "names.h"
#include "store.h"
#include "volume-dbus.h"

/* The revision named by id, or a named error. */
static int find_revision(Volume *v, const char *id, uint64_t *ret, sd_bus_error *error) {
        uint64_t n = revision_id_from_string(id);

        if (n == 0 || !volume_find_revision(v, n))
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "Volume %s/%s has no revision '%s'.", v->pool->name, v->name, id);
        *ret = n;
        return 0;
}

/* In a done callback: answers a failed call and frees its work. */
static bool work_failed(VolumeWork *w, int r, const char *what) {
        if (r >= 0)
                return false;
        volume_work_reply_error(w, r, what);
        volume_work_free(w, r);
        return true;
}

/* Reads the a{sv} of a call that takes no options, and refuses it while work runs on v. */
static int read_call(sd_bus_message *msg, Volume *v, sd_bus_error *error) {
        int r;

        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        return volume_check_idle(v, error);
}

/* The same for a call whose first argument names a revision of v. */
static int read_revision_call(sd_bus_message *msg, Volume *v, uint64_t *ret, sd_bus_error *error) {
        const char *id;
        int r;

        r = sd_bus_message_read(msg, "s", &id);
        if (r < 0)
                return r;
        r = read_call(msg, v, error);
        if (r < 0)
                return r;
        return find_revision(v, id, ret, error);
}

/* Runs work for the call, with the revision bookkeeping planned first when revisions: adds
 * one when adds_revision, revision is the one consumed. Returns 1 (the reply comes later). */
static int run_work(Volume *v, sd_bus_message *msg, bool revisions, bool adds_revision, uint64_t revision,
                    WorkFunc work, WorkDone done, sd_bus_error *error) {
        VolumeWork *w;
        int r;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->revision = revision;
        if (revisions) {
                r = volume_plan_revisions(v, adds_revision, revision, w);
                if (r < 0) {
                        volume_work_free(w, r);
                        return r;
                }
        }
        r = volume_work_start(w, work, done, error);
        return r < 0 ? r : 1;
}

static void started(int r, void *userdata) {
        VolumeWork *w = userdata;

        log_info("Started volume %s/%s.", w->volume->pool->name, w->volume->name);
        volume_work_reply_changed(w);
}

static void start_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (work_failed(w, r, "Failed to start the volume"))
                return;
        v->state = VOLUME_STARTED;
        if (!w->source) {
                started(0, w);
                return;
        }
        v->source_generation = w->source->generation;
        volume_work_save(w, started);
}

/* The source a snap_on_start volume starts from. */
static int start_source(Volume *v, Volume **ret, sd_bus_error *error) {
        Volume *source = v->settings.source ? pool_get_volume(v->pool, v->settings.source) : NULL;

        if (!source)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "The source of volume %s/%s does not exist.",
                                         v->pool->name, v->name);
        if (source->operation)
                return sd_bus_error_setf(error, ERR_BUSY, "Source volume %s/%s is busy with %s.",
                                         v->pool->name, source->name, source->operation);
        *ret = source;
        return 0;
}

int method_start(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata, *source = NULL;
        VolumeWork *w;
        int r;

        r = read_call(msg, v, error);
        if (r < 0)
                return r;
        if (v->settings.snap_on_start) {
                r = start_source(v, &source, error);
                if (r < 0)
                        return r;
        }

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (v->state == VOLUME_STARTED)   /* already started, or resumed after a crash */
                return sd_bus_reply_method_return(msg, NULL);
        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->size = v->size;
        w->source = source;
        w->format = source ? image_format_static(source->settings.format) : NULL;
        /* A copy that is not instant, or a snapshot of a source of another format (converted),
         * moves data: a job. */
        if (((v->settings.save_on_stop || source) && !v->pool->driver->copy_is_instant(v->pool, v->pool)) ||
            (source && !streq(source->settings.format, v->settings.format))) {
                r = volume_work_publish_job(w, source ? source->usage : v->usage, error);
                if (r < 0) {
                        volume_work_free(w, r);
                        return r;
                }
        }
        r = volume_work_start(w, volume_start_work, start_done, error);
        return r < 0 ? r : 1;
}

static void stopped(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        log_info("Stopped volume %s/%s%s.", v->pool->name, v->name, v->settings.save_on_stop ? ", committed" : "");
        volume_work_reply_changed(w);
}

static void stop_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (work_failed(w, r, "Failed to stop the volume"))
                return;
        v->state = VOLUME_STOPPED;
        if (!v->settings.save_on_stop) {
                stopped(0, w);
                return;
        }
        volume_apply_revisions(v, w, 0);
        volume_committed(v);
        volume_work_save(w, stopped);
}

/* A working copy about to be committed must not be written any more: no fd from Open may
 * still be open for writing, or it would write into the committed image and its revisions. */
static int check_work_closed(Volume *v, sd_bus_error *error) {
        _cleanup_close_ int vdir_fd = -EBADF, fd = -EBADF;
        int r;

        if (v->state != VOLUME_STARTED || !v->settings.save_on_stop)
                return 0;
        vdir_fd = volume_open_dir(v);
        if (vdir_fd < 0)
                return bus_error_from_errno(error, vdir_fd, "Failed to open the volume");
        fd = v->pool->driver->object_open(vdir_fd, OBJECT_WORK, O_RDONLY);
        if (fd < 0)
                return bus_error_from_errno(error, fd, "Failed to open the working copy");
        r = file_open_for_writing(fd);
        if (r < 0)
                return bus_error_from_errno(error, r, "Cannot tell whether the working copy is still open");
        if (r > 0)
                return sd_bus_error_setf(error, ERR_BUSY, "The working copy of volume %s/%s is still open for writing; "
                                         "close it before stopping the volume.", v->pool->name, v->name);
        return 0;
}

int method_stop(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        int r;

        r = read_call(msg, v, error);
        /* Stop is idempotent: a stopped volume stays as it is, attached or not. A started one
         * must be detached first, or its device would lose the working copy under it. */
        if (r >= 0 && v->state == VOLUME_STARTED)
                r = volume_check_detached(v, error);
        if (r >= 0)
                r = check_work_closed(v, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        if (v->state == VOLUME_STOPPED)
                return sd_bus_reply_method_return(msg, NULL);
        return run_work(v, msg, v->settings.save_on_stop, true, 0, volume_stop_work, stop_done, error);
}

static void snapshot_saved(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        char id[21];

        log_info("Kept the image of volume %s/%s as revision %" PRIu64 ".", v->pool->name, v->name, w->new_revision);
        volume_emit_changed(v, "Revisions", NULL);
        snprintf(id, sizeof id, "%" PRIu64, w->new_revision);
        (void) sd_bus_reply_method_return(w->msg, "s", id);
        volume_work_free(w, 0);
}

static void snapshot_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (work_failed(w, r, "Failed to snapshot the volume"))
                return;
        volume_apply_revisions(v, w, 0);
        volume_work_save(w, snapshot_saved);
}

int method_create_snapshot(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        int r;

        r = read_call(msg, v, error);
        if (r < 0)
                return r;
        if (v->settings.revisions_to_keep == 0)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Volume %s/%s keeps no revisions (RevisionsToKeep is 0).", v->pool->name, v->name);

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        return run_work(v, msg, true, true, 0, volume_snapshot_work, snapshot_done, error);
}

static void revision_removed(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        volume_emit_changed(v, "Revisions", NULL);
        pool_refresh(v->pool);
        pool_emit_changed(v->pool, "Usage", "Available", NULL);
        (void) sd_bus_reply_method_return(w->msg, NULL);
        volume_work_free(w, 0);
}

static void remove_revision_done(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (work_failed(w, r, "Failed to remove the revision"))
                return;
        volume_apply_revisions(w->volume, w, 0);
        volume_work_save(w, revision_removed);
}

/* Starts the deletion of the revisions planned in w (RemoveRevision, Configure's pruning). */
int volume_start_pruning(VolumeWork *w, sd_bus_error *error) {
        return volume_work_start(w, volume_prune_work, remove_revision_done, error);
}

int method_remove_revision(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeWork *w;
        uint64_t n;
        int r;

        r = read_revision_call(msg, v, &n, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->prune = calloc(1, sizeof *w->prune);
        if (!w->prune) {
                volume_work_free(w, -ENOMEM);
                return -ENOMEM;
        }
        w->prune[w->n_prune++] = n;
        r = volume_start_pruning(w, error);
        return r < 0 ? r : 1;
}

static void reverted(int r, void *userdata) {
        VolumeWork *w = userdata;

        log_info("Reverted volume %s/%s to revision %" PRIu64 ".", w->volume->pool->name, w->volume->name, w->revision);
        volume_work_reply_changed(w);
}

static void revert_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (work_failed(w, r, "Failed to revert the volume"))
                return;
        volume_apply_revisions(v, w, w->revision);
        if (w->format && !streq(w->format, v->settings.format)) {
                strcpy(v->settings.format, w->format);
                volume_emit_changed(v, "Format", NULL);
        }
        volume_committed(v);
        volume_work_save(w, reverted);
}

int method_revert(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeWork *w;
        uint64_t n;
        int r;

        r = read_revision_call(msg, v, &n, error);
        if (r >= 0)
                r = volume_check_detached(v, error);
        if (r < 0)
                return r;
        if (v->state != VOLUME_STOPPED)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Volume %s/%s must be stopped to revert it.", v->pool->name, v->name);

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->revision = n;
        r = volume_plan_revisions(v, true, n, w);
        if (r >= 0)     /* the revision's format: it may predate a Convert */
                r = volume_plan_format(v, w, volume_find_revision(v, n)->format);
        if (r < 0) {
                volume_work_free(w, r);
                return r;
        }
        r = volume_work_start(w, volume_revert_work, revert_done, error);
        return r < 0 ? r : 1;
}

typedef struct CloneOptions {
        const char *revision;
} CloneOptions;

static const OptionSpec clone_spec[] = {
        OPTION("revision", OPTION_STRING, CloneOptions, revision),
        {}
};

static void clone_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *t = w->target;
        Pool *p = t->pool;

        namemap_remove(&p->creating, t->name);
        if (r >= 0)
                r = namemap_put(&p->volumes, t->name, t);
        if (r < 0) {
                volume_work_reply_error(w, r, "Failed to clone the volume");
                volume_free(t);
                volume_work_free(w, r);
                return;
        }
        log_info("Cloned volume %s/%s to %s/%s.", w->volume->pool->name, w->volume->name, p->name, t->name);
        pool_refresh(p);
        (void) sd_bus_emit_object_added(p->manager->bus, t->object_path);
        pool_emit_changed(p, "Volumes", "Usage", "Available", NULL);
        (void) sd_bus_reply_method_return(w->msg, "o", t->object_path);
        volume_work_free(w, 0);
}

static int validate_clone(Volume *v, const char *pool_path, const char *name, const CloneOptions *o,
                          Pool **ret_pool, char **ret_object, sd_bus_error *error) {
        Manager *m = v->pool->manager;
        _cleanup_free_ char *pool_name = NULL;
        uint64_t revision = 0;
        Pool *dst;
        int r;

        r = sd_bus_path_decode_many(pool_path, CISTERN_POOL_PREFIX "/%", &pool_name);
        if (r < 0)
                return r;
        dst = r > 0 ? manager_get_pool(m, pool_name) : NULL;
        if (!dst)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "No pool at %s.", pool_path);
        if (!name_is_valid(name))
                return sd_bus_error_setf(error, ERR_INVALID_NAME, "Invalid volume name '%s'.", name);
        if (pool_get_volume(dst, name) || namemap_get(&dst->creating, name))
                return sd_bus_error_setf(error, ERR_ALREADY_EXISTS, "Volume %s/%s already exists.", dst->name, name);
        if (dst->volumes.n + dst->creating.n >= m->limits.max_volumes_per_pool)
                return sd_bus_error_setf(error, ERR_LIMITS_EXCEEDED, "Pool %s already holds the most volumes a pool may, %u.",
                                         dst->name, m->limits.max_volumes_per_pool);
        if (o->revision) {
                r = find_revision(v, o->revision, &revision, error);
                if (r < 0)
                        return r;
        }
        r = volume_check_idle(v, error);
        if (r < 0)
                return r;
        *ret_object = revision ? revision_object(revision) : strdup(OBJECT_IMAGE);
        if (!*ret_object)
                return -ENOMEM;
        *ret_pool = dst;
        return 0;
}

/* The new volume: the source's settings, the caller as owner, not tied to any source. */
static int clone_target(Volume *v, Pool *dst, const char *name, uid_t owner, Volume **ret) {
        Volume *t;
        int r;

        r = volume_new(dst, name, &t);
        if (r < 0)
                return r;
        t->settings = v->settings;
        t->settings.source = NULL;
        t->settings.snap_on_start = false;
        t->settings.save_on_stop = v->settings.save_on_stop || v->settings.snap_on_start;
        t->settings.owner = owner;
        t->settings.created = now_usec(CLOCK_REALTIME);
        *ret = t;
        return 0;
}

int method_clone(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *object = NULL;
        Volume *v = userdata, *t = NULL;
        const char *pool_path, *name;
        CloneOptions o = {};
        uint64_t size, usage;
        VolumeWork *w;
        Pool *dst = NULL;
        uid_t caller;
        int r;

        r = sd_bus_message_read(msg, "os", &pool_path, &name);
        if (r < 0)
                return r;
        r = options_read(msg, clone_spec, &o, NULL, error);
        if (r < 0)
                return r;
        r = validate_clone(v, pool_path, name, &o, &dst, &object, error);
        if (r < 0)
                return r;
        r = bus_message_sender_uid(msg, &caller);
        if (r < 0)
                return sd_bus_error_set(error, ERR_NOT_AUTHORIZED, "Could not identify the caller.");

        /* Reading the source and creating in the destination are two permissions. */
        r = volume_authorize(v, msg, ACTION_VOLUME_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        r = authorize(v->pool->manager, msg, ACTION_VOLUME_CREATE, dst->name, name, caller, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = clone_target(v, dst, name, caller, &t);
        if (r < 0)
                return r;
        r = namemap_put(&dst->creating, t->name, t);
        if (r >= 0)
                r = volume_work_new(v, msg, &w);
        if (r < 0) {
                namemap_remove(&dst->creating, t->name);
                volume_free(t);
                return r;
        }
        w->target = t;
        w->source_object = TAKE_PTR(object);
        if (o.revision)         /* a revision may predate a Convert */
                strcpy(t->settings.format, volume_find_revision(v, revision_id_from_string(o.revision))->format);
        if (!v->pool->driver->copy_is_instant(v->pool, dst)) {
                _cleanup_close_ int vdir_fd = volume_open_dir(v);

                if (vdir_fd < 0 || v->pool->driver->object_stat(vdir_fd, w->source_object, &size, &usage) < 0)
                        usage = v->usage;
                r = volume_work_publish_job(w, usage, error);
        }
        if (r >= 0)
                r = volume_work_start(w, volume_clone_work, clone_done, error);
        else
                volume_work_free(w, r);
        if (r < 0) {
                namemap_remove(&dst->creating, t->name);
                volume_free(t);
                return r;
        }
        return 1;
}
