/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A volume: its settings (volume.json in its own directory), its life cycle, and the calls
 * into its pool's driver. */

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "errors.h"
#include "image.h"
#include "job.h"
#include "log.h"
#include "polkit.h"
#include "store.h"
#include "udev-watch.h"
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
        free(v->revisions);
        free(v->partitions);
        for (size_t i = 0; i < v->n_mounts; i++)
                free(v->mounts[i].path);
        free(v->mounts);
        free(v->object_path);
        free(v->name);
        free(v);
        return NULL;
}

int volume_open_dir(Volume *v) {
        return open_beneath(v->pool->volumes_fd, v->name, O_RDONLY | O_DIRECTORY, 0);
}

static json_object *revisions_to_json(Volume *v) {
        _cleanup_(json_object_putp) json_object *a = json_object_new_array();

        if (!a)
                return NULL;
        for (size_t i = 0; i < v->n_revisions; i++) {
                json_object *r = json_object_new_object();
                char id[21];

                snprintf(id, sizeof id, "%" PRIu64, v->revisions[i].id);
                if (!r || json_object_array_add(a, r) < 0) {
                        json_object_put(r);
                        return NULL;
                }
                if (json_object_object_add(r, "id", json_object_new_string(id)) < 0 ||
                    json_object_object_add(r, "created", json_object_new_uint64(v->revisions[i].created)) < 0 ||
                    json_object_object_add(r, "format", json_object_new_string(v->revisions[i].format)) < 0)
                        return NULL;
        }
        return TAKE_PTR(a);
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
            json_object_object_add(o, "next_revision", json_object_new_uint64(v->next_revision)) < 0 ||
            json_object_object_add(o, "generation", json_object_new_uint64(v->generation)) < 0 ||
            json_object_object_add(o, "source_generation", json_object_new_uint64(v->source_generation)) < 0 ||
            json_object_object_add(o, "revisions", revisions_to_json(v)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

/* The format a change recorded by volume_format_change_record() gave the image, when that change
 * was committed (the image has the inode it recorded), else NULL. */
static const char *format_changed_to(json_object *o, int vdir_fd) {
        json_object *change;
        const char *format;
        struct stat st;

        if (!json_object_object_get_ex(o, "format_change", &change))
                return NULL;
        format = json_get_string(change, "format");
        if (!image_format_is_valid(format) || fstatat(vdir_fd, OBJECT_IMAGE, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            (uint64_t) st.st_ino != json_get_u64(change, "ino", 0))
                return NULL;
        return format;
}

static int volume_from_json(Volume *v, json_object *o, int vdir_fd) {
        VolumeSettings *s = &v->settings;
        const char *format = json_get_string(o, "format"), *source = json_get_string(o, "source");
        uint64_t owner;

        if (!image_format_is_valid(format))
                return -EBADMSG;
        format = format_changed_to(o, vdir_fd) ?: format;
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
        v->generation = json_get_u64(o, "generation", 0);
        v->source_generation = json_get_u64(o, "source_generation", 0);
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

/* volume.json as it reads with the new revision (0: none) in the present format. */
static json_object *format_change_json(Volume *v, uint64_t new_revision) {
        _cleanup_(json_object_putp) json_object *o = volume_to_json(v);
        json_object *list, *r;
        char id[21];

        if (!o || !new_revision)
                return TAKE_PTR(o);
        snprintf(id, sizeof id, "%" PRIu64, new_revision);
        r = json_object_new_object();
        if (!r || !json_object_object_get_ex(o, "revisions", &list) || json_object_array_add(list, r) < 0) {
                json_object_put(r);
                return NULL;
        }
        if (json_object_object_add(r, "id", json_object_new_string(id)) < 0 ||
            json_object_object_add(r, "created", json_object_new_uint64(now_usec(CLOCK_REALTIME))) < 0 ||
            json_object_object_add(r, "format", json_object_new_string(v->settings.format)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

int volume_plan_format(Volume *v, VolumeWork *w, const char *format) {
        w->format = image_format_static(format);
        if (!w->format)
                return -EINVAL;
        if (streq(w->format, v->settings.format))
                return 0;
        w->metadata = format_change_json(v, w->new_revision);
        return w->metadata ? 0 : -ENOMEM;
}

int volume_format_change_record(json_object *o, int vdir_fd, const char *object, const char *format) {
        json_object *change = json_object_new_object();
        struct stat st;

        if (!change || json_object_object_add(o, "format_change", change) < 0) {
                json_object_put(change);
                return -ENOMEM;
        }
        if (fstatat(vdir_fd, object, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (json_object_object_add(change, "ino", json_object_new_uint64(st.st_ino)) < 0 ||
            json_object_object_add(change, "format", json_object_new_string(format)) < 0)
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

        r = image_stat(v, vdir_fd, v->state == VOLUME_STARTED ? OBJECT_WORK : OBJECT_IMAGE, v->settings.format,
                       &size, &usage);
        if (r == -EBADMSG) {
                /* A qcow2 header a VM runner wrote through Open: the volume stays, with the size
                 * last read (none at start), and everything that would hand the image to qemu
                 * refuses it (UnsafeImage). */
                log_warning("The qcow2 image of volume %s/%s fails cistern's checks.", v->pool->name, v->name);
                size = v->size;
                usage = v->usage;
        } else if (r < 0)
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

/* Revision id's entry in volume.json, or NULL. */
static json_object *revision_json(json_object *o, uint64_t id) {
        json_object *list;

        if (json_object_object_get_ex(o, "revisions", &list) && json_object_is_type(list, json_type_array))
                for (size_t i = 0; i < json_object_array_length(list); i++) {
                        json_object *e = json_object_array_get_idx(list, i);

                        if (revision_id_from_string(json_get_string(e, "id") ?: "") == id)
                                return e;
                }
        return NULL;
}

static usec_t revision_created(json_object *o, uint64_t id, int dir_fd, const char *name) {
        json_object *e = revision_json(o, id);
        struct stat st;

        if (e)
                return json_get_u64(e, "created", 0);
        /* Committed, but the daemon died before recording it: its file knows when. */
        if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return 0;
        return (usec_t) st.st_mtim.tv_sec * USEC_PER_SEC + (usec_t) st.st_mtim.tv_nsec / 1000;
}

/* A revision's format as recorded; one recorded before formats could change is the volume's. */
static const char *revision_format(json_object *o, uint64_t id, const Volume *v) {
        const char *format = json_get_string(revision_json(o, id), "format");

        return image_format_is_valid(format) ? format : v->settings.format;
}

static int compare_revisions(const void *a, const void *b) {
        const Revision *x = a, *y = b;

        return (x->id > y->id) - (x->id < y->id);
}

/* The revision objects on disk are the truth; volume.json only adds their creation times. A
 * crash between committing and recording leaves no disagreement behind. */
/* A crash after a commit and before its pruning leaves more revisions than the volume keeps. */
static int volume_prune_loaded(Volume *v, int vdir_fd) {
        size_t excess = v->n_revisions > v->settings.revisions_to_keep ? v->n_revisions - v->settings.revisions_to_keep : 0;

        for (size_t i = 0; i < excess; i++) {
                _cleanup_free_ char *object = revision_object(v->revisions[i].id);
                int r;

                if (!object)
                        return -ENOMEM;
                r = v->pool->driver->object_remove(vdir_fd, object);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        if (excess > 0)
                memmove(v->revisions, v->revisions + excess, (v->n_revisions - excess) * sizeof *v->revisions);
        v->n_revisions -= excess;
        return 0;
}

static int volume_add_revision(Volume *v, uint64_t id, usec_t created, const char *format) {
        Revision *n;

        n = reallocarray(v->revisions, v->n_revisions + 1, sizeof *n);
        if (!n)
                return -ENOMEM;
        v->revisions = n;
        v->revisions[v->n_revisions] = (Revision) { id, created };
        strcpy(v->revisions[v->n_revisions++].format, format);
        if (id >= v->next_revision)
                v->next_revision = id + 1;
        return 0;
}

/* Settles a commit that a crash interrupted (see keep_image_as()): a pending link that is still
 * the image is dropped, any other is the previous image and becomes revision id. */
static int volume_settle_pending(Volume *v, int vdir_fd, uint64_t id, json_object *o) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_free_ char *pending = revision_pending_object(id), *object = revision_object(id);
        int r;

        if (!pending || !object)
                return -ENOMEM;
        r = d->object_is_same(vdir_fd, pending, OBJECT_IMAGE);
        if (r != 0 || volume_find_revision(v, id))
                return d->object_remove(vdir_fd, pending);
        r = d->object_rename(vdir_fd, pending, object, false);
        if (r < 0)
                return r;
        return volume_add_revision(v, id, now_usec(CLOCK_REALTIME), revision_format(o, id, v));
}

/* The revision objects on disk are the truth; volume.json only adds their creation times. A
 * crash between committing and recording leaves no disagreement behind. */
static int volume_load_revisions(Volume *v, int vdir_fd, json_object *o) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_close_ int dir_fd = -EBADF;
        _cleanup_free_ uint64_t *pending = NULL;
        size_t n_pending = 0;
        struct dirent *de;
        int r;

        dir_fd = open_or_create_dir_beneath(vdir_fd, OBJECT_REVISIONS, 0700);
        if (dir_fd < 0)
                return dir_fd;
        r = opendir_beneath(dir_fd, ".", &d);
        if (r < 0)
                return r;
        while ((de = readdir(d))) {
                uint64_t id = revision_id_from_string(de->d_name);

                if (strncmp(de->d_name, OBJECT_PENDING_PREFIX, strlen(OBJECT_PENDING_PREFIX)) == 0) {
                        uint64_t *n = reallocarray(pending, n_pending + 1, sizeof *n);

                        if (!n)
                                return -ENOMEM;
                        pending = n;
                        pending[n_pending++] = revision_id_from_string(de->d_name + strlen(OBJECT_PENDING_PREFIX));
                        continue;
                }
                if (strncmp(de->d_name, STORE_STAGING_PREFIX, strlen(STORE_STAGING_PREFIX)) == 0) {
                        (void) remove_tree_beneath(dir_fd, de->d_name);
                        continue;
                }
                if (id == 0)
                        continue;
                r = volume_add_revision(v, id, revision_created(o, id, dir_fd, de->d_name), revision_format(o, id, v));
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < n_pending; i++)
                if (pending[i] != 0)
                        (void) volume_settle_pending(v, vdir_fd, pending[i], o);
        if (v->n_revisions > 1)
                qsort(v->revisions, v->n_revisions, sizeof *v->revisions, compare_revisions);
        return volume_prune_loaded(v, vdir_fd);
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
        r = volume_from_json(v, o, vdir_fd);
        if (r < 0)
                return r;
        (void) store_remove_staging(vdir_fd);
        r = volume_load_revisions(v, vdir_fd, o);
        if (r < 0)
                return r;
        v->state = faccessat(vdir_fd, OBJECT_WORK, F_OK, AT_SYMLINK_NOFOLLOW) >= 0 ? VOLUME_STARTED : VOLUME_STOPPED;
        r = volume_stat_at(v, vdir_fd);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        return 0;
}

/* The volume is built in a staging directory and renamed into place, so that after a crash there
 * is either a complete volume or a staging entry that the next start sweeps away. fill makes its
 * committed image. */
static int volume_build(Volume *v, int (*fill)(Volume *v, int vdir_fd, void *userdata), void *userdata) {
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
        r = fill(v, vdir_fd, userdata);
        if (r < 0)
                goto fail;
        if (mkdirat(vdir_fd, OBJECT_REVISIONS, 0700) < 0) {
                r = -errno;
                goto fail;
        }
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
        (void) remove_tree_beneath(p->volumes_fd, staging);
        return r;
}

typedef struct NewImage {
        uint64_t size;
        bool preallocate;
        Volume *source;
        const char *source_object;
        CopyProgress *progress;
} NewImage;

static int fill_empty(Volume *v, int vdir_fd, void *userdata) {
        NewImage *n = userdata;

        return image_create(v, vdir_fd, OBJECT_IMAGE, v->settings.format, n->size, n->preallocate, NULL);
}

static int fill_copy(Volume *v, int vdir_fd, void *userdata) {
        _cleanup_close_ int src_fd = -EBADF;
        NewImage *n = userdata;
        int r;

        src_fd = volume_open_dir(n->source);
        if (src_fd < 0)
                return src_fd;
        r = v->pool->driver->object_copy(v->pool, src_fd, n->source_object, vdir_fd, OBJECT_IMAGE, n->progress);
        return r < 0 ? r : 0;
}

int volume_create(Volume *v, uint64_t size, bool preallocate) {
        NewImage n = { .size = size, .preallocate = preallocate };

        return volume_build(v, fill_empty, &n);
}

int volume_create_copy(Volume *v, Volume *source, const char *source_object, CopyProgress *progress) {
        NewImage n = { .source = source, .source_object = source_object, .progress = progress };

        return volume_build(v, fill_copy, &n);
}

/* The volume's directory is first renamed to a staging name, so that it vanishes atomically;
 * whatever a crash leaves of it afterwards is swept at the next start. */
int volume_remove(Volume *v) {
        _cleanup_free_ char *staging = NULL;
        Pool *p = v->pool;
        int r;

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

int volume_work_new(Volume *v, sd_bus_message *msg, VolumeWork **ret) {
        VolumeWork *w;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->msg = sd_bus_message_ref(msg);
        w->volume = v;
        w->fd = w->staging_fd = -EBADF;
        *ret = w;
        return 0;
}

int volume_work_publish_job(VolumeWork *w, uint64_t bytes, sd_bus_error *error) {
        const char *objects[3] = { w->volume->object_path, w->target ? w->target->object_path : NULL, NULL };
        uid_t uid;
        int r;

        r = bus_message_sender_uid(w->msg, &uid);
        if (r < 0)
                return r;
        r = job_new(w->volume->pool->manager, sd_bus_message_get_member(w->msg), objects, uid, bytes, &w->job);
        if (r == -EMFILE)
                return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many jobs are running; try again later.");
        return r;
}

CopyProgress *volume_work_progress(VolumeWork *w) {
        return w->job ? &w->job->progress : &w->progress;
}

/* A job ends — Completed, then the object vanishes — before the method replies. */
static void volume_work_done(int result, void *userdata) {
        VolumeWork *w = userdata;

        if (w->job) {
                job_finish(w->job, result, NULL);
                w->job = NULL;
        }
        w->done(result, w);
}

int volume_work_start(VolumeWork *w, WorkFunc work, WorkDone done, sd_bus_error *error) {
        Volume *v = w->volume;
        int r;

        w->done = done;
        r = workers_run(v->pool->manager->workers, work, volume_work_done, w);
        if (r < 0) {
                volume_work_free(w, r);
                if (r == -EMFILE)
                        return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many operations are running; try again later.");
                return r;
        }
        v->operation = sd_bus_message_get_member(w->msg);
        return 0;
}

static int save_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);

        if (vdir_fd < 0)
                return vdir_fd;
        return store_write_json(vdir_fd, VOLUME_JSON, w->metadata);
}

static void save_done(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (r < 0)
                log_warning_errno(r, "Failed to record the state of volume %s/%s: %m", w->volume->pool->name, w->volume->name);
        w->done(0, w);
}

void volume_work_save(VolumeWork *w, WorkDone then) {
        w->done = then;
        json_object_put(w->metadata);   /* a journal written before the commit, if any */
        w->metadata = volume_to_json(w->volume);
        if (!w->metadata)
                save_done(-ENOMEM, w);
        else if (workers_run(w->volume->pool->manager->workers, save_work, save_done, w) < 0)
                save_done(save_work(w), w);     /* no room for more work: on the loop, as before */
}

void volume_work_continue(VolumeWork *w, WorkFunc work, WorkDone done) {
        w->done = done;
        if (workers_run(w->volume->pool->manager->workers, work, volume_work_done, w) < 0)
                done(-EMFILE, w);
}

VolumeWork *volume_work_free(VolumeWork *w, int result) {
        if (!w)
                return NULL;
        if (w->volume)
                w->volume->operation = NULL;
        if (w->job)
                job_finish(w->job, result, NULL);       /* published, but the work never ran */
        if (w->staging)
                volume_discard_object(w->volume, w->staging);
        udev_wait_free(w->udev_wait);
        sd_bus_message_unref(w->msg);
        safe_close(w->fd);
        safe_close(w->staging_fd);
        json_object_put(w->metadata);
        free(w->source_object);
        free(w->error);
        free(w->staging);
        free(w->device_partitions);
        free(w->path);
        free(w->prune);
        free(w);
        return NULL;
}

typedef struct Discard {
        const PoolDriver *driver;
        int vdir_fd;
        char *name;
} Discard;

static int discard_work(void *userdata) {
        Discard *d = userdata;

        return d->driver->object_remove(d->vdir_fd, d->name);
}

static void discard_done(int r, void *userdata) {
        Discard *d = userdata;

        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Failed to remove staging object %s, the next start retries: %m", d->name);
        safe_close(d->vdir_fd);
        free(d->name);
        free(d);
}

void volume_discard_object(Volume *v, const char *name) {
        Discard *d = calloc(1, sizeof *d);

        if (!d || !(d->name = strdup(name))) {
                free(d);
                log_warning("Out of memory; staging object %s stays until the next start.", name);
                return;
        }
        d->driver = v->pool->driver;
        d->vdir_fd = volume_open_dir(v);
        if (d->vdir_fd < 0) {
                discard_done(d->vdir_fd, d);
                return;
        }
        if (workers_run(v->pool->manager->workers, discard_work, discard_done, d) < 0)
                discard_done(discard_work(d), d);
}

bool volume_is_busy(Volume *v, const char **ret_reason) {
        const char *reason = NULL;

        if (v->operation)
                reason = "a change to it is in progress";
        else if (v->readers > 0)
                reason = "it is being exported";
        else if (volume_is_attached(v))
                reason = "it is attached";
        else if (v->state == VOLUME_STARTED)
                reason = "it is started";
        if (ret_reason)
                *ret_reason = reason;
        return reason;
}
