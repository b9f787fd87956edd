/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods that hand a volume's bytes to the caller over file descriptors: Export,
 * ExportBegin, ExportEnd. Bytes never travel inside D-Bus messages. The committed image is
 * opened on the loop when the call arrives; since committed images are never written in place,
 * that fd keeps the content of the moment even if a Stop commits meanwhile.
 *
 * Export in the image's own format copies its bytes. Another format goes through a staging
 * object of the volume: qemu-img converts the open image into it (a qcow2 image once it passed
 * cistern's inspector), then it is copied like an image would be, then removed. qemu never sees
 * the caller's fd: it would reopen it as /proc/self/fd/N, with root's rights on what it names. */

#include <fcntl.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "image.h"
#include "job.h"
#include "log.h"
#include "session.h"
#include "store.h"
#include "volume-dbus.h"

typedef struct ExportOptions {
        const char *format;
        bool sparse;
        const char *revision;
} ExportOptions;

static const OptionSpec export_spec[] = {
        OPTION("format", OPTION_STRING, ExportOptions, format),
        OPTION("sparse", OPTION_BOOL, ExportOptions, sparse),
        OPTION("revision", OPTION_STRING, ExportOptions, revision),
        {}
};

static const OptionSpec export_begin_spec[] = {
        OPTION("revision", OPTION_STRING, ExportOptions, revision),
        {}
};

/* The committed image or revision the options name (0 for the image) and its format. With
 * dst, the caller's fd of an Export, also whether the format asked for can be written there. */
static int find_export_source(Volume *v, const ExportOptions *o, const struct stat *dst, uint64_t *ret_id,
                              const char **ret_format, sd_bus_error *error) {
        const Revision *rev = NULL;
        const char *format;
        uint64_t id = 0;

        if (o->revision) {
                id = revision_id_from_string(o->revision);
                rev = id ? volume_find_revision(v, id) : NULL;
                if (!rev)
                        return sd_bus_error_setf(error, ERR_NOT_FOUND, "Volume %s/%s has no revision '%s'.",
                                                 v->pool->name, v->name, o->revision);
        }
        format = image_format_static(rev ? rev->format : v->settings.format);
        if (!format)
                return -EMEDIUMTYPE;
        /* qemu writes qcow2 at any offset: into a file, then copied. Nothing to rewind in a stream. */
        if (dst && !S_ISREG(dst->st_mode) && streq(o->format, "qcow2") && !streq(format, "qcow2"))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Exporting the raw image of volume %s/%s as qcow2 needs a regular file to write into, "
                                         "not a pipe or a socket.", v->pool->name, v->name);
        *ret_id = id;
        *ret_format = format;
        return 0;
}

/* Opens, read-only, the committed image (id 0) or revision id. */
static int open_export_source(Volume *v, uint64_t id, sd_bus_error *error) {
        _cleanup_free_ char *object = NULL;
        _cleanup_close_ int vdir_fd = -EBADF;
        int fd;

        object = id ? revision_object(id) : strdup(OBJECT_IMAGE);
        if (!object)
                return -ENOMEM;
        vdir_fd = volume_open_dir(v);
        if (vdir_fd < 0)
                return bus_error_from_errno(error, vdir_fd, "Failed to open the volume");
        fd = open_beneath(vdir_fd, object, O_RDONLY | O_NOFOLLOW, 0);
        if (fd < 0)
                return bus_error_from_errno(error, fd, "Failed to open the volume's image");
        return fd;
}

typedef struct ExportWork {
        sd_bus_message *msg;
        Volume *volume;         /* kept alive by readers */
        int src_fd;
        int dst_fd;
        bool file;              /* into a regular file, written from its start; else streamed */
        bool sparse;            /* holes staying holes in that file */
        const char *from;       /* the image's format */
        const char *to;         /* the format written: from, or converted into */
        int staging_fd;         /* the converted image */
        char *error;            /* the inspector's or qemu's words */
        Job *job;
} ExportWork;

static ExportWork *export_work_free(ExportWork *w, int result) {
        if (!w)
                return NULL;
        w->volume->readers--;
        if (w->job)
                job_finish(w->job, result, NULL);
        safe_close(w->src_fd);
        safe_close(w->dst_fd);
        safe_close(w->staging_fd);
        free(w->error);
        sd_bus_message_unref(w->msg);
        free(w);
        return NULL;
}

/* The bytes the copy of src into the caller's fd moves: all of them, or the data where holes
 * stay holes. */
static uint64_t export_copy_size(const ExportWork *w, int src) {
        struct stat st;

        if (w->file && w->sparse)
                return copy_data_size(src);
        return fstat(src, &st) < 0 ? 0 : (uint64_t) st.st_size;
}

static int export_copy(const ExportWork *w, int src, CopyProgress *progress) {
        if (!w->file)
                return copy_stream(src, w->dst_fd, progress);
        return w->sparse ? copy_sparse(src, w->dst_fd, progress) : copy_whole(src, w->dst_fd, progress);
}

static int convert_step(void *userdata, CopyProgress *progress) {
        ExportWork *w = userdata;
        Qcow2Problem problem = {};
        Qcow2Info info;
        struct stat st;
        int r;

        if (streq(w->from, "qcow2")) {
                r = image_inspect_qcow2(w->volume, w->src_fd, &info, &problem);
                if (r == -EBADMSG || r == -ENOMEDIUM) {
                        w->error = strdup(problem.message);
                        return -EBADMSG;
                }
                if (r < 0)
                        return r;
                progress->total = info.virtual_size;
        } else {
                if (fstat(w->src_fd, &st) < 0)
                        return -errno;
                progress->total = (uint64_t) st.st_size;
        }
        return qemu_img_convert(w->src_fd, qemu_format_from_string(w->from), w->staging_fd,
                                qemu_format_from_string(w->to), &(QemuConvertOptions) { .sparse = true }, progress,
                                &w->error);
}

static int copy_step(void *userdata, CopyProgress *progress) {
        ExportWork *w = userdata;

        progress->total = export_copy_size(w, w->staging_fd);
        return export_copy(w, w->staging_fd, progress);
}

/* The conversion takes the first half of the job, the copy the second. */
static int export_converted(ExportWork *w, CopyProgress *progress) {
        Volume *v = w->volume;
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int vdir_fd = volume_open_dir(v);
        _cleanup_free_ char *staging = NULL;
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        r = staging_name_new(&staging);
        if (r >= 0)
                r = d->object_create(v, vdir_fd, staging, 0, false);
        if (r < 0)
                return r;
        w->staging_fd = d->object_open(vdir_fd, staging, O_RDWR);
        r = w->staging_fd;
        if (r >= 0)
                r = progress_run_step(progress, progress->total / 2, convert_step, w);
        if (r >= 0)
                r = progress_run_step(progress, progress->total - MIN(atomic_load(&progress->done), progress->total),
                                       copy_step, w);
        (void) d->object_remove(vdir_fd, staging);
        return r;
}

static int export_work(void *userdata) {
        ExportWork *w = userdata;
        CopyProgress *progress = &w->job->progress;
        int r;

        r = streq(w->from, w->to) ? export_copy(w, w->src_fd, progress) : export_converted(w, progress);
        if (r >= 0 && w->file && fsync(w->dst_fd) < 0 && errno != EINVAL)
                r = -errno;
        return r;
}

static void export_done(int r, void *userdata) {
        ExportWork *w = userdata;

        /* The job ends — Completed, then the object vanishes — before the method replies. */
        job_finish(w->job, r, NULL);
        w->job = NULL;

        if (r == -ECANCELED)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_CANCELLED, "The export was cancelled.");
        else if (r == -EBADMSG)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_UNSAFE_IMAGE, "The qcow2 image of volume %s/%s is unsafe: %s.",
                                                  w->volume->pool->name, w->volume->name, w->error ?: "it fails cistern's checks");
        else if (r == -EIO && w->error)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_FAILED, "Failed to convert the volume's image: qemu-img: %s",
                                                  w->error);
        else if (r < 0)
                (void) bus_reply_errno(w->msg, r, "Failed to export the volume");
        else
                (void) sd_bus_reply_method_return(w->msg, NULL);
        export_work_free(w, r);
}

/* Starts the copy of src, an image of format from, into the caller's dst as a Job, converted to
 * format to when that differs. Takes both fds. */
static int export_start(Volume *v, sd_bus_message *msg, int src_fd, const char *from, int dst_fd, const char *to,
                        bool file, bool sparse, sd_bus_error *error) {
        const char *objects[] = { v->object_path, NULL };
        ExportWork *w;
        uint64_t bytes;
        uid_t uid;
        int r;

        w = calloc(1, sizeof *w);
        if (!w) {
                safe_close(src_fd);
                safe_close(dst_fd);
                return -ENOMEM;
        }
        *w = (ExportWork) { .msg = sd_bus_message_ref(msg), .volume = v, .src_fd = src_fd, .dst_fd = dst_fd, .file = file,
                            .sparse = sparse, .from = from, .to = to, .staging_fd = -EBADF };
        v->readers++;
        /* A conversion first: about as much work again as the copy. */
        bytes = streq(from, to) ? export_copy_size(w, src_fd) : 2 * copy_data_size(src_fd);
        r = bus_message_sender_uid(msg, &uid);
        if (r >= 0)
                r = job_new(v->pool->manager, "Export", objects, uid, bytes, &w->job);
        if (r >= 0)
                r = workers_run(v->pool->manager->workers, export_work, export_done, w);
        if (r < 0) {
                export_work_free(w, r);
                if (r == -EMFILE)
                        return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many operations are running; try again later.");
                return r;
        }
        return 1;
}

int method_export(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ExportOptions o = { .sparse = true };
        _cleanup_close_ int dst_fd = -EBADF;
        const char *from;
        struct stat st;
        uint64_t id;
        int fd, r, src_fd;

        r = sd_bus_message_read(msg, "h", &fd);
        if (r < 0)
                return r;
        r = options_read(msg, export_spec, &o, NULL, error);
        if (r < 0)
                return r;
        if (o.format && !image_format_is_valid(o.format))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Unknown image format '%s'; use raw or qcow2.", o.format);
        o.format = image_format_static(o.format ?: "raw");
        r = bus_validate_caller_fd(fd, true, &st, error);
        if (r < 0)
                return r;
        r = find_export_source(v, &o, &st, &id, &from, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        src_fd = open_export_source(v, id, error);
        if (src_fd < 0)
                return src_fd;
        dst_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dst_fd < 0) {
                safe_close(src_fd);
                return -errno;
        }
        return export_start(v, msg, src_fd, from, TAKE_FD(dst_fd), o.format, S_ISREG(st.st_mode), o.sparse, error);
}

int method_export_begin(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ExportOptions o = {};
        _cleanup_close_ int fd = -EBADF;
        const char *format;
        uint64_t id;
        Session *s;
        int r;

        r = options_read(msg, export_begin_spec, &o, NULL, error);
        if (r < 0)
                return r;
        r = find_export_source(v, &o, NULL, &id, &format, error);
        if (r < 0)
                return r;
        if (session_find(v->pool->manager, v, SESSION_EXPORT, sd_bus_message_get_sender(msg)))
                return sd_bus_error_setf(error, ERR_BUSY, "You already export volume %s/%s; call ExportEnd first.",
                                         v->pool->name, v->name);

        r = volume_authorize(v, msg, ACTION_VOLUME_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        fd = open_export_source(v, id, error);
        if (fd < 0)
                return fd;
        r = session_new(v, SESSION_EXPORT, sd_bus_message_get_sender(msg), &s);
        if (r == -EMFILE)
                return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many export sessions are open.");
        if (r < 0)
                return bus_error_from_errno(error, r, "Failed to open the export session");
        log_debug("%s exports %s/%s.", s->sender, v->pool->name, v->name);
        return sd_bus_reply_method_return(msg, "h", fd);
}

int method_export_end(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        Session *s;
        int r;

        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        s = session_find(v->pool->manager, v, SESSION_EXPORT, sd_bus_message_get_sender(msg));
        if (!s)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "You do not export volume %s/%s.", v->pool->name, v->name);
        session_free(s);
        return sd_bus_reply_method_return(msg, NULL);
}
