/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The life cycle every driver shares: start, stop, revisions, revert, resize, clone. The work
 * functions run on a worker thread and only move objects through the pool's driver; the loop
 * plans them (revision ids, what to prune) and applies the outcome to the volume afterwards.
 *
 * A committed image is never written in place. Each change makes a new object under a staging
 * name and renames it over the old one, so that at every instant one complete committed image
 * exists and a crash leaves at most staging objects, which the next start sweeps away. */

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>

#include "device.h"
#include "fuse-export.h"
#include "image.h"
#include "store.h"
#include "volume.h"

uint64_t revision_id_from_string(const char *s) {
        uint64_t id = 0;

        if (!s || !*s || *s == '0' || strlen(s) > 19)
                return 0;
        for (const char *c = s; *c; c++) {
                if (*c < '0' || *c > '9')
                        return 0;
                id = id * 10 + (uint64_t) (*c - '0');
        }
        return id;
}

char *revision_object(uint64_t id) {
        char *s;

        if (asprintf(&s, OBJECT_REVISIONS "/%" PRIu64, id) < 0)
                return NULL;
        return s;
}

const Revision *volume_find_revision(Volume *v, uint64_t id) {
        for (size_t i = 0; i < v->n_revisions; i++)
                if (v->revisions[i].id == id)
                        return &v->revisions[i];
        return NULL;
}

int volume_plan_revisions(Volume *v, bool adds_revision, uint64_t consumed, VolumeWork *w) {
        uint32_t keep = v->settings.revisions_to_keep;
        size_t count = v->n_revisions - (consumed ? 1 : 0), excess;

        w->new_revision = adds_revision && keep > 0 ? v->next_revision : 0;
        if (w->new_revision)
                count++;
        excess = count > keep ? count - keep : 0;
        if (excess == 0)
                return 0;
        w->prune = calloc(excess, sizeof *w->prune);
        if (!w->prune)
                return -ENOMEM;
        for (size_t i = 0; i < v->n_revisions && w->n_prune < excess; i++)   /* oldest first */
                if (v->revisions[i].id != consumed)
                        w->prune[w->n_prune++] = v->revisions[i].id;
        return 0;
}

void volume_apply_revisions(Volume *v, const VolumeWork *w, uint64_t consumed) {
        size_t n = 0;

        for (size_t i = 0; i < v->n_revisions; i++) {
                bool gone = v->revisions[i].id == consumed;

                for (size_t k = 0; k < w->n_prune && !gone; k++)
                        gone = v->revisions[i].id == w->prune[k];
                if (!gone)
                        v->revisions[n++] = v->revisions[i];
        }
        v->n_revisions = n;
        if (w->new_revision) {
                /* The array had room for the consumed or pruned entry, or gets it now. */
                Revision *r = reallocarray(v->revisions, n + 1, sizeof *r);

                if (r) {
                        v->revisions = r;
                        v->revisions[v->n_revisions] = (Revision) { w->new_revision, now_usec(CLOCK_REALTIME) };
                        strcpy(v->revisions[v->n_revisions++].format, v->settings.format);
                }
                v->next_revision = w->new_revision + 1;
        }
}

static int prune(const Volume *v, int vdir_fd, const VolumeWork *w) {
        int ret = 0;

        for (size_t i = 0; i < w->n_prune; i++) {
                _cleanup_free_ char *object = revision_object(w->prune[i]);
                int r;

                if (!object)
                        return -ENOMEM;
                r = v->pool->driver->object_remove(vdir_fd, object);
                if (r < 0 && r != -ENOENT && ret == 0)
                        ret = r;
        }
        return ret;
}

char *revision_pending_object(uint64_t id) {
        char *s;

        if (asprintf(&s, OBJECT_REVISIONS "/" OBJECT_PENDING_PREFIX "%" PRIu64, id) < 0)
                return NULL;
        return s;
}

/* Keeps the committed image as revision id, in two steps around the change that replaces the
 * image: first a pending link, then — once the image is replaced — its final name. A crash in
 * between is settled at load: a pending link that is still the image is dropped (the change did
 * not happen), any other becomes the revision (it did). */
static int keep_image_as(const Volume *v, int vdir_fd, uint64_t id, char **ret_pending) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_free_ char *pending = revision_pending_object(id);
        int r;

        if (!pending)
                return -ENOMEM;
        (void) d->object_remove(vdir_fd, pending);
        r = d->object_link(vdir_fd, OBJECT_IMAGE, pending);
        if (r < 0)
                return r;
        *ret_pending = TAKE_PTR(pending);
        return 0;
}

static int publish_revision(const Volume *v, int vdir_fd, const char *pending, uint64_t id) {
        _cleanup_free_ char *object = revision_object(id);

        if (!object)
                return -ENOMEM;
        return v->pool->driver->object_rename(vdir_fd, pending, object, false);
}

/* Makes the complete object the committed image: the old image is kept as w->new_revision
 * through a pending link, then object is renamed over it, then the revisions beyond the limit
 * go. object must be synced. */
static int commit_object(const VolumeWork *w, int vdir_fd, const char *object) {
        const Volume *v = w->volume;
        const PoolDriver *d = v->pool->driver;
        _cleanup_free_ char *pending = NULL;
        int r;

        if (w->new_revision) {
                r = keep_image_as(v, vdir_fd, w->new_revision, &pending);
                if (r < 0)
                        return r;
        }
        r = d->object_rename(vdir_fd, object, OBJECT_IMAGE, true);   /* the commit */
        if (r < 0) {
                if (pending)
                        (void) d->object_remove(vdir_fd, pending);
                return r;
        }
        if (pending)
                (void) publish_revision(v, vdir_fd, pending, w->new_revision);
        (void) prune(v, vdir_fd, w);
        return 0;
}

/* Makes a new object with a fresh staging name by calling make, then renames it to dst. */
static int make_object(const Volume *v, int vdir_fd, const char *dst, bool replace,
                       int (*make)(VolumeWork *w, int vdir_fd, const char *name), VolumeWork *w) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_free_ char *staging = NULL;
        int r;

        r = staging_name_new(&staging);
        if (r < 0)
                return r;
        r = make(w, vdir_fd, staging);
        if (r >= 0)
                r = d->object_rename(vdir_fd, staging, dst, replace);
        if (r < 0)
                (void) d->object_remove(vdir_fd, staging);
        return r;
}

static int make_working_copy(VolumeWork *w, int vdir_fd, const char *name) {
        Volume *v = w->volume;
        const char *format = v->settings.format;
        CopyProgress *progress = volume_work_progress(w);
        _cleanup_close_ int src_fd = -EBADF;
        uint64_t size, usage;
        int r;

        if (!v->settings.save_on_stop && !v->settings.snap_on_start)
                return image_create(v, vdir_fd, name, format, w->size, false, &w->error);      /* volatile */
        if (v->settings.snap_on_start) {
                src_fd = volume_open_dir(w->source);
                if (src_fd < 0)
                        return src_fd;
        }
        /* A source of another format (converted since) is read as its own format. */
        if (w->format && !streq(w->format, format))
                r = image_convert(v, src_fd >= 0 ? src_fd : vdir_fd, OBJECT_IMAGE, w->format, vdir_fd, name, format,
                                  &(QemuConvertOptions) { .sparse = true }, progress, &w->error);
        else
                r = v->pool->driver->object_copy(v->pool, src_fd >= 0 ? src_fd : vdir_fd, OBJECT_IMAGE, vdir_fd,
                                                 name, progress);
        if (r < 0)
                return r;
        /* A snapshot is at least as large as the volume itself. */
        r = image_stat(v, vdir_fd, name, format, &size, &usage);
        if (r >= 0 && size < w->size)
                r = image_resize(v, vdir_fd, name, format, w->size, false, &w->error);
        return r;
}

int volume_start_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);

        if (vdir_fd < 0)
                return vdir_fd;
        return make_object(w->volume, vdir_fd, OBJECT_WORK, false, make_working_copy, w);
}

int volume_stop_work(void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int vdir_fd = volume_open_dir(v);
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        if (!v->settings.save_on_stop)
                return d->object_remove(vdir_fd, OBJECT_WORK);

        r = d->object_sync(vdir_fd, OBJECT_WORK);
        if (r < 0)
                return r;
        return commit_object(w, vdir_fd, OBJECT_WORK);
}

int volume_snapshot_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);
        _cleanup_free_ char *object = revision_object(w->new_revision);
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        if (!object)
                return -ENOMEM;
        r = w->volume->pool->driver->object_link(vdir_fd, OBJECT_IMAGE, object);
        if (r < 0)
                return r;
        (void) prune(w->volume, vdir_fd, w);
        return 0;
}

int volume_revert_work(void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int vdir_fd = volume_open_dir(v);
        _cleanup_free_ char *staging = NULL, *chosen = revision_object(w->revision);
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        if (!chosen)
                return -ENOMEM;
        if (w->new_revision) {
                r = keep_image_as(v, vdir_fd, w->new_revision, &staging);
                if (r < 0)
                        return r;
        }
        /* A revision of another format: the record first, so that a crash after the rename
         * finds the format the image has by then. */
        r = w->metadata ? volume_format_change_record(w->metadata, vdir_fd, chosen, w->format) : 0;
        if (r >= 0)
                r = d->object_rename(vdir_fd, chosen, OBJECT_IMAGE, true);
        if (r < 0) {
                if (staging)
                        (void) d->object_remove(vdir_fd, staging);
                return r;
        }
        /* A revision that is a link of the image itself (a snapshot of it): renaming one link
         * over the other leaves both. */
        (void) d->object_remove(vdir_fd, chosen);
        if (staging)
                (void) publish_revision(v, vdir_fd, staging, w->new_revision);
        (void) prune(v, vdir_fd, w);
        return 0;
}

int volume_prune_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);

        if (vdir_fd < 0)
                return vdir_fd;
        return prune(w->volume, vdir_fd, w);
}

static int make_resized_image(VolumeWork *w, int vdir_fd, const char *name) {
        Volume *v = w->volume;
        int r;

        r = v->pool->driver->object_copy(v->pool, vdir_fd, OBJECT_IMAGE, vdir_fd, name, volume_work_progress(w));
        if (r < 0)
                return r;
        return image_resize(v, vdir_fd, name, v->settings.format, w->size, w->size < v->size, &w->error);
}

/* Resizes the disk of v's export, which its device is attached to. */
static int resize_export(Volume *v, uint64_t size) {
        char export[FUSE_EXPORT_NAME_MAX];
        int r;

        r = device_export(v->pool->manager, &v->device, export);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        return fuse_export_resize(v->pool->manager, export, size);
}

int volume_resize_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);

        if (vdir_fd < 0)
                return vdir_fd;
        /* The working copy is the VM's to change, and its device follows; a committed image gets
         * a resized successor. */
        if (w->volume->state == VOLUME_STARTED) {
                Volume *v = w->volume;
                bool device = volume_is_attached(v) && v->device_on_work;
                int r;

                if (device && streq(v->settings.format, "qcow2"))
                        r = resize_export(v, w->size);  /* the storage daemon holds the image */
                else
                        r = image_resize(v, vdir_fd, OBJECT_WORK, v->settings.format, w->size, w->size < v->size,
                                         &w->error);
                if (r >= 0 && device)
                        r = loop_set_capacity(&v->device);
                return r;
        }
        return make_object(w->volume, vdir_fd, OBJECT_IMAGE, true, make_resized_image, w);
}

int volume_clone_work(void *userdata) {
        VolumeWork *w = userdata;

        return volume_create_copy(w->target, w->volume, w->source_object, volume_work_progress(w));
}

/* Import and ImportEnd: the caller's bytes, of the format w->format, are first a staging object
 * of their own (staged). A qcow2 image passes cistern's inspector before anything else reads
 * it: qemu-img follows whatever an image names. Bytes of the volume's format are then committed
 * as they are; others are converted into a second staging object, which is. */

typedef struct ImportStep {
        VolumeWork *w;
        int vdir_fd;
        const char *staged;
        const char *converted;
} ImportStep;

static bool import_converts(const VolumeWork *w) {
        return !streq(w->format, w->volume->settings.format);
}

static int stage_step(void *userdata, CopyProgress *progress) {
        ImportStep *s = userdata;
        Pool *p = s->w->volume->pool;

        return p->driver->object_import(p, s->w->fd, s->w->size, s->vdir_fd, s->staged, progress);
}

static int convert_step(void *userdata, CopyProgress *progress) {
        ImportStep *s = userdata;
        Volume *v = s->w->volume;

        return image_convert(v, s->vdir_fd, s->staged, s->w->format, s->vdir_fd, s->converted, v->settings.format,
                             &(QemuConvertOptions) { .sparse = true }, progress, &s->w->error);
}

/* The inspector's verdict on the staged qcow2 image: -EBADMSG, its reason in w->error, when
 * unsafe, bytes that are no qcow2 image at all included. */
static int inspect_staged(VolumeWork *w, int vdir_fd, const char *staged) {
        Volume *v = w->volume;
        _cleanup_close_ int fd = v->pool->driver->object_open(vdir_fd, staged, O_RDONLY);
        Qcow2Problem problem = {};
        Qcow2Info info;
        int r;

        if (fd < 0)
                return fd;
        r = image_inspect_qcow2(v, fd, &info, &problem);
        if (r != -EBADMSG && r != -ENOMEDIUM)
                return r;
        free(w->error);
        w->error = strdup(problem.message);     /* NULL: the reply says less */
        return -EBADMSG;
}

/* Makes the complete staged object the committed image, converted first when the volume keeps
 * another format (the rest of the job's progress). No staging object stays. */
static int commit_import(VolumeWork *w, int vdir_fd, const char *staged) {
        const PoolDriver *d = w->volume->pool->driver;
        CopyProgress *progress = volume_work_progress(w);
        _cleanup_free_ char *converted = NULL;
        uint64_t rest;
        int r = 0;

        if (streq(w->format, "qcow2"))
                r = inspect_staged(w, vdir_fd, staged);
        if (r >= 0 && import_converts(w)) {
                rest = progress->total - MIN(atomic_load(&progress->done), progress->total);
                r = staging_name_new(&converted);
                if (r >= 0)
                        r = progress_run_step(progress, rest, convert_step, &(ImportStep) { w, vdir_fd, staged, converted });
                (void) d->object_remove(vdir_fd, staged);
                if (r < 0)
                        return r;       /* a failed image_convert() leaves no object */
        }
        if (r >= 0)
                r = commit_object(w, vdir_fd, converted ?: staged);
        if (r < 0)
                (void) d->object_remove(vdir_fd, converted ?: staged);
        return r;
}

int volume_import_work(void *userdata) {
        VolumeWork *w = userdata;
        CopyProgress *progress = volume_work_progress(w);
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);
        _cleanup_free_ char *staged = NULL;
        ImportStep s;
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        r = staging_name_new(&staged);
        if (r < 0)
                return r;
        s = (ImportStep) { .w = w, .vdir_fd = vdir_fd, .staged = staged };
        /* A conversion to follow takes the second half of the job. */
        if (import_converts(w))
                r = progress_run_step(progress, progress->total / 2, stage_step, &s);
        else
                r = stage_step(&s, progress);
        if (r < 0)
                return r;       /* object_import() leaves no object behind when it fails */
        return commit_import(w, vdir_fd, staged);
}

/* Convert: the committed image written anew in w->format, which becomes the committed image
 * (and the format recorded before the rename, see volume_plan_format()). */
int volume_convert_work(void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        _cleanup_close_ int vdir_fd = volume_open_dir(v);
        _cleanup_free_ char *staging = NULL;
        QemuConvertOptions options = { .compress = w->compress, .sparse = true };
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        r = staging_name_new(&staging);
        if (r < 0)
                return r;
        r = image_convert(v, vdir_fd, OBJECT_IMAGE, v->settings.format, vdir_fd, staging, w->format, &options,
                          volume_work_progress(w), &w->error);
        if (r < 0)
                return r;
        /* Another format: recorded first (see volume_plan_format()). */
        r = w->metadata ? volume_format_change_record(w->metadata, vdir_fd, staging, w->format) : 0;
        if (r >= 0)
                r = commit_object(w, vdir_fd, staging);
        if (r < 0)
                (void) v->pool->driver->object_remove(vdir_fd, staging);
        return r;
}

/* ImportBegin: a new staging object of w->size bytes, with a write-only fd for the caller and
 * a read-only one for the session. */
int volume_import_begin_work(void *userdata) {
        VolumeWork *w = userdata;
        const PoolDriver *d = w->volume->pool->driver;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);
        _cleanup_free_ char *staging = NULL;
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        r = staging_name_new(&staging);
        if (r < 0)
                return r;
        r = d->object_create(w->volume, vdir_fd, staging, w->size, false);
        if (r < 0)
                return r;
        w->staging = TAKE_PTR(staging);         /* from now on discarded on failure */
        w->fd = d->object_open(vdir_fd, w->staging, O_WRONLY);
        if (w->fd < 0)
                return w->fd;
        w->staging_fd = d->object_open(vdir_fd, w->staging, O_RDONLY);
        return w->staging_fd < 0 ? w->staging_fd : 0;
}

/* ImportEnd: the staging object the caller wrote becomes the committed image, if it still has
 * the size it was given (and, as for Import, passes the inspector, converted when need be);
 * else it goes. */
int volume_import_end_work(void *userdata) {
        VolumeWork *w = userdata;
        const PoolDriver *d = w->volume->pool->driver;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);
        _cleanup_free_ char *staged = TAKE_PTR(w->staging);
        uint64_t size, usage;
        int r;

        if (vdir_fd < 0) {
                w->staging = TAKE_PTR(staged);  /* discarded with w */
                return vdir_fd;
        }
        r = d->object_sync(vdir_fd, staged);
        if (r >= 0)
                r = d->object_stat(vdir_fd, staged, &size, &usage);
        if (r >= 0 && size != w->size)
                r = size < w->size ? -ENODATA : -EMSGSIZE;
        if (r < 0) {
                (void) d->object_remove(vdir_fd, staged);
                return r;
        }
        return commit_import(w, vdir_fd, staged);
}

/* ImportEnd without commit: the staging object goes before the call returns. */
int volume_import_discard_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_close_ int vdir_fd = volume_open_dir(w->volume);
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        r = w->volume->pool->driver->object_remove(vdir_fd, w->staging);
        free(w->staging);
        w->staging = NULL;
        return r;
}
