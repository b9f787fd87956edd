/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods that hand a volume's bytes to the caller over file descriptors: Export,
 * ExportBegin, ExportEnd. Bytes never travel inside D-Bus messages. The committed image is
 * opened on the loop when the call arrives; since committed images are never written in place,
 * that fd keeps the content of the moment even if a Stop commits meanwhile. */

#include <fcntl.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
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

/* Opens, read-only, the committed image or revision the options name. */
static int open_export_source(Volume *v, const ExportOptions *o, sd_bus_error *error) {
        _cleanup_free_ char *object = NULL;
        _cleanup_close_ int vdir_fd = -EBADF;
        uint64_t id = 0;
        int fd;

        if (o->format && !streq(o->format, v->settings.format))
                return sd_bus_error_setf(error, streq(o->format, "qcow2") ? ERR_NOT_SUPPORTED : ERR_INVALID_ARGUMENT,
                                         "Exporting volume %s/%s as '%s' is not supported.", v->pool->name, v->name, o->format);
        if (o->revision) {
                id = revision_id_from_string(o->revision);
                if (id == 0 || !volume_find_revision(v, id))
                        return sd_bus_error_setf(error, ERR_NOT_FOUND, "Volume %s/%s has no revision '%s'.",
                                                 v->pool->name, v->name, o->revision);
        }
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
        sd_bus_message_unref(w->msg);
        free(w);
        return NULL;
}

static int export_work(void *userdata) {
        ExportWork *w = userdata;
        CopyProgress *progress = &w->job->progress;
        int r;

        if (!w->file)
                return copy_stream(w->src_fd, w->dst_fd, progress);
        r = w->sparse ? copy_sparse(w->src_fd, w->dst_fd, progress) : copy_whole(w->src_fd, w->dst_fd, progress);
        if (r >= 0 && fsync(w->dst_fd) < 0 && errno != EINVAL)
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
        else if (r < 0)
                (void) bus_reply_errno(w->msg, r, "Failed to export the volume");
        else
                (void) sd_bus_reply_method_return(w->msg, NULL);
        export_work_free(w, r);
}

/* Starts the copy of src into the caller's dst as a Job. Takes both fds. */
static int export_start(Volume *v, sd_bus_message *msg, int src_fd, int dst_fd, bool file, bool sparse, sd_bus_error *error) {
        const char *objects[] = { v->object_path, NULL };
        ExportWork *w;
        struct stat st;
        uid_t uid;
        int r;

        w = calloc(1, sizeof *w);
        if (!w) {
                safe_close(src_fd);
                safe_close(dst_fd);
                return -ENOMEM;
        }
        *w = (ExportWork) { .msg = sd_bus_message_ref(msg), .volume = v, .src_fd = src_fd, .dst_fd = dst_fd, .file = file, .sparse = sparse };
        v->readers++;
        r = bus_message_sender_uid(msg, &uid);
        if (r >= 0)
                r = fstat(src_fd, &st) < 0 ? -errno : 0;
        if (r >= 0)
                r = job_new(v->pool->manager, "Export", objects, uid,
                            file && sparse ? copy_data_size(src_fd) : (uint64_t) st.st_size, &w->job);
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
        struct stat st;
        int fd, r, src_fd;

        r = sd_bus_message_read(msg, "h", &fd);
        if (r < 0)
                return r;
        r = options_read(msg, export_spec, &o, NULL, error);
        if (r < 0)
                return r;
        r = bus_validate_caller_fd(fd, true, &st, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        src_fd = open_export_source(v, &o, error);
        if (src_fd < 0)
                return src_fd;
        dst_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (dst_fd < 0) {
                safe_close(src_fd);
                return -errno;
        }
        return export_start(v, msg, src_fd, TAKE_FD(dst_fd), S_ISREG(st.st_mode), o.sparse, error);
}

int method_export_begin(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ExportOptions o = {};
        _cleanup_close_ int fd = -EBADF;
        Session *s;
        int r;

        r = options_read(msg, export_begin_spec, &o, NULL, error);
        if (r < 0)
                return r;
        if (session_find(v->pool->manager, v, SESSION_EXPORT, sd_bus_message_get_sender(msg)))
                return sd_bus_error_setf(error, ERR_BUSY, "You already export volume %s/%s; call ExportEnd first.",
                                         v->pool->name, v->name);

        r = volume_authorize(v, msg, ACTION_VOLUME_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        fd = open_export_source(v, &o, error);
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
