/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods that replace a volume's content with bytes a caller passes over a file
 * descriptor: Import (the daemon reads the caller's fd) and ImportBegin/ImportEnd (the caller
 * writes into an fd of a staging object). Either way a new object is made and committed like a
 * Stop commits: the old image becomes a revision and nothing is written in place.
 *
 * The bytes may be of either format, whatever the volume's: the work converts them when they
 * differ. A qcow2 image is only read by anything once it passed cistern's inspector
 * (UnsafeImage otherwise), so its size is that of a file, not a disk: no multiple of 512.
 *
 * ImportEnd commits only once the caller has closed its fd of the staging object, and every
 * copy and mapping of it: a committed image is never written again, and a caller keeping a
 * writable fd could otherwise change it, and every revision linked to it, at will. A read lease
 * tells whether anyone still has the object open for writing. */

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

typedef struct ImportOptions {
        const char *format;
        uint64_t size;
} ImportOptions;

static const OptionSpec import_spec[] = {
        OPTION("format", OPTION_STRING, ImportOptions, format),
        OPTION("size", OPTION_UINT64, ImportOptions, size),
        {}
};

/* What Import and ImportBegin check alike, once the size is known. Sets o->format to the
 * format of the incoming bytes, the volume's unless given, as a static string. */
static int check_import(Volume *v, ImportOptions *o, sd_bus_error *error) {
        uint64_t max = v->pool->manager->limits.max_volume_size;
        int r;

        if (o->format && !image_format_is_valid(o->format))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Unknown image format '%s'; use raw or qcow2.", o->format);
        o->format = image_format_static(o->format ?: v->settings.format);
        if (!streq(o->format, "qcow2"))
                r = validate_volume_size(v->pool->manager, o->size, error);
        else if (o->size == 0 || o->size > max)
                r = sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "A qcow2 image of %" PRIu64 " bytes cannot be imported: "
                                      "it must hold between 1 and %" PRIu64 " bytes.", o->size, max);
        else
                r = 0;
        if (r < 0)
                return r;
        r = volume_check_idle(v, error);
        if (r >= 0)
                r = volume_check_detached(v, error);
        if (r < 0)
                return r;
        if (v->state == VOLUME_STARTED)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Volume %s/%s is started; stop it before importing into it.",
                                         v->pool->name, v->name);
        return 0;
}

static void imported(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        log_info("Imported %" PRIu64 " bytes of %s data into volume %s/%s.", w->size, w->format, v->pool->name, v->name);
        volume_work_reply_changed(w);
}

static void import_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (r < 0) {
                if (r == -ENODATA || r == -EMSGSIZE)
                        (void) sd_bus_reply_method_errorf(w->msg, ERR_INVALID_ARGUMENT,
                                                          "The data is %s than the %" PRIu64 " bytes announced; nothing was imported.",
                                                          r == -ENODATA ? "shorter" : "longer", w->size);
                else if (r == -EBADMSG && w->error)
                        (void) sd_bus_reply_method_errorf(w->msg, ERR_UNSAFE_IMAGE, "The qcow2 image is unsafe: %s.", w->error);
                else
                        volume_work_reply_error(w, r, "Failed to import into the volume");
                volume_work_free(w, r);
                return;
        }
        volume_apply_revisions(v, w, 0);
        volume_committed(v);
        volume_work_save(w, imported);
}

/* Runs work for the call, an import that adds a revision; as a job when it copies bytes.
 * Returns 1. */
static int run_import(VolumeWork *w, bool job, uint64_t bytes, WorkFunc work, sd_bus_error *error) {
        int r;

        r = volume_plan_revisions(w->volume, true, 0, w);
        if (r >= 0 && job)
                r = volume_work_publish_job(w, bytes, error);
        if (r < 0) {
                volume_work_free(w, r);
                return r;
        }
        r = volume_work_start(w, work, import_done, error);
        return r < 0 ? r : 1;
}

int method_import(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ImportOptions o = {};
        VolumeWork *w;
        struct stat st;
        uint64_t bytes;
        uint32_t seen;
        int fd, r;

        r = sd_bus_message_read(msg, "h", &fd);
        if (r < 0)
                return r;
        r = options_read(msg, import_spec, &o, &seen, error);
        if (r < 0)
                return r;
        r = bus_validate_caller_fd(fd, false, &st, error);
        if (r < 0)
                return r;
        if (!option_seen(seen, import_spec, "size")) {
                if (!S_ISREG(st.st_mode))
                        return sd_bus_error_set(error, ERR_INVALID_ARGUMENT,
                                                "Importing from a pipe or socket needs the size of the data.");
                o.size = (uint64_t) st.st_size;
        } else if (S_ISREG(st.st_mode) && o.size != (uint64_t) st.st_size)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "The file holds %" PRIu64 " bytes, not %" PRIu64 ".",
                                         (uint64_t) st.st_size, o.size);
        r = check_import(v, &o, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->size = o.size;
        w->format = o.format;
        w->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (w->fd < 0) {
                r = -errno;
                volume_work_free(w, r);
                return r;
        }
        bytes = S_ISREG(st.st_mode) ? copy_data_size(w->fd) : o.size;
        /* Bytes of another format are converted once they are in: as much work again. */
        if (!streq(w->format, v->settings.format))
                bytes *= 2;
        return run_import(w, true, bytes, volume_import_work, error);
}

static void import_begin_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = sd_bus_message_ref(w->msg);
        _cleanup_close_ int write_fd = -EBADF;
        uint64_t size = w->size;
        const char *format = w->format;
        char *staging;
        Session *s;
        int read_fd;

        if (r < 0) {
                volume_work_reply_error(w, r, "Failed to create the staging image");
                volume_work_free(w, r);
                return;
        }
        /* The work ends, and the session takes over the volume and the staging object. */
        write_fd = TAKE_FD(w->fd);
        read_fd = TAKE_FD(w->staging_fd);
        staging = TAKE_PTR(w->staging);
        volume_work_free(w, 0);
        r = session_new_import(v, sd_bus_message_get_sender(msg), staging, read_fd, size, format, &s);
        if (r == -EMFILE)
                (void) sd_bus_reply_method_errorf(msg, ERR_LIMITS_EXCEEDED, "Too many import and export sessions are open.");
        else if (r < 0)
                (void) bus_reply_errno(msg, r, "Failed to open the import session");
        else {
                log_debug("%s imports %" PRIu64 " bytes of %s data into %s/%s.", s->sender, size, format, v->pool->name, v->name);
                (void) sd_bus_reply_method_return(msg, "h", write_fd);
        }
}

int method_import_begin(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ImportOptions o = {};
        VolumeWork *w;
        uint32_t seen;
        int r;

        r = options_read(msg, import_spec, &o, &seen, error);
        if (r < 0)
                return r;
        if (!option_seen(seen, import_spec, "size"))
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "ImportBegin needs the size of the image.");
        r = check_import(v, &o, error);
        if (r < 0)
                return r;
        if (v->pool->manager->n_sessions >= v->pool->manager->limits.max_sessions)
                return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many import and export sessions are open.");

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->size = o.size;
        w->format = o.format;
        r = volume_work_start(w, volume_import_begin_work, import_begin_done, error);
        return r < 0 ? r : 1;
}

static void import_discarded(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (r < 0 && r != -ENOENT)
                volume_work_reply_error(w, r, "Failed to remove the staging image");
        else
                (void) sd_bus_reply_method_return(w->msg, NULL);
        volume_work_free(w, r);
}

int method_import_end(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeWork *w;
        Session *s;
        int commit, r;

        r = sd_bus_message_read(msg, "b", &commit);
        if (r < 0)
                return r;
        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        s = session_find(v->pool->manager, v, SESSION_IMPORT, sd_bus_message_get_sender(msg));
        if (!s)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "You do not import into volume %s/%s.", v->pool->name, v->name);
        if (commit) {
                r = file_open_for_writing(s->staging_fd);
                if (r < 0)
                        return bus_error_from_errno(error, r, "Cannot tell whether the staging image is still open");
                if (r > 0)
                        return sd_bus_error_set(error, ERR_BUSY, "The staging image is still open for writing; "
                                                "close every descriptor and mapping of it, then call ImportEnd again.");
        }

        /* The session ends; its staging object goes to the work, which commits or removes it
         * before the call returns. */
        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->size = s->size;
        w->format = s->format;
        w->staging = TAKE_PTR(s->staging);
        session_free(s);
        /* Committing bytes of another format converts them: a job. */
        if (commit)
                return run_import(w, !streq(w->format, v->settings.format), w->size, volume_import_end_work, error);
        log_debug("%s discards its import into %s/%s.", sd_bus_message_get_sender(msg), v->pool->name, v->name);
        r = volume_work_start(w, volume_import_discard_work, import_discarded, error);
        return r < 0 ? r : 1;
}
