/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods about a volume's image format: Info, which reads a qcow2 image's details with
 * cistern's own inspector (never qemu-img), and Convert, which writes the committed image anew
 * in the other format through qemu-img, as a Job; the previous image becomes a revision. */

#include <fcntl.h>
#include <sys/stat.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "image.h"
#include "job.h"
#include "log.h"
#include "volume-dbus.h"

/* Info reads the image on a worker thread, never on the loop (a qcow2 image's L2 tables may be
 * megabytes), while the volume is kept by readers. */
typedef struct InfoWork {
        sd_bus_message *msg;
        Volume *volume;
        char format[8];
        uint64_t size, usage;
        Qcow2Info qcow2;
        uint64_t compressed;
        bool compressed_known;
} InfoWork;

static int info_work(void *userdata) {
        InfoWork *i = userdata;
        Volume *v = i->volume;
        const char *object = v->state == VOLUME_STARTED ? OBJECT_WORK : OBJECT_IMAGE;
        _cleanup_close_ int vdir_fd = volume_open_dir(v), fd = -EBADF;
        struct stat st;
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        r = image_stat(v, vdir_fd, object, i->format, &i->size, &i->usage);
        if (r < 0 || !streq(i->format, "qcow2"))
                return r;
        fd = v->pool->driver->object_open(vdir_fd, object, O_RDONLY);
        if (fd < 0)
                return fd;
        r = image_inspect_qcow2(v, fd, &i->qcow2, NULL);
        if (r < 0)
                return r == -ENOMEDIUM ? -EBADMSG : r;
        if (fstat(fd, &st) < 0)
                return -errno;
        /* A working copy changes under the walk while its VM writes: a count that fails is left
         * out rather than failing the call. */
        r = qcow2_count_compressed(fd, (uint64_t) st.st_size, &i->qcow2, &i->compressed);
        if (r < 0)
                log_debug_errno(r, "Could not count the compressed clusters of %s/%s: %m", v->pool->name, v->name);
        i->compressed_known = r >= 0;
        return 0;
}

static int info_append_qcow2(sd_bus_message *reply, const InfoWork *i) {
        const Qcow2Info *q = &i->qcow2;

        int r;

        if (i->compressed_known) {
                r = sd_bus_message_append(reply, "{sv}", "compressed_clusters", "t", i->compressed);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_append(reply, "{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}",
                                     "compat", "s", q->compat,
                                     "cluster_size", "t", q->cluster_size,
                                     "compression_type", "s", q->compression_type,
                                     "refcount_bits", "u", q->refcount_bits,
                                     "dirty", "b", q->dirty,
                                     "lazy_refcounts", "b", q->lazy_refcounts,
                                     "extended_l2", "b", q->extended_l2,
                                     "snapshots", "u", q->snapshots,
                                     "l1_entries", "u", q->l1_entries);
}

static int info_reply(const InfoWork *i) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(i->msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r >= 0)
                r = sd_bus_message_append(reply, "{sv}{sv}{sv}",
                                          "format", "s", i->format,
                                          "virtual_size", "t", i->size,
                                          "actual_size", "t", i->usage);
        if (r >= 0 && streq(i->format, "qcow2"))
                r = info_append_qcow2(reply, i);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_send(NULL, reply, NULL);
        return r;
}

static void info_done(int r, void *userdata) {
        InfoWork *i = userdata;
        Volume *v = i->volume;

        v->readers--;
        if (r >= 0 && (i->size != v->size || i->usage != v->usage)) {
                v->size = i->size;
                v->usage = i->usage;
                volume_emit_changed(v, "Size", "Usage", NULL);
        }
        if (r == -EBADMSG)
                (void) sd_bus_reply_method_errorf(i->msg, ERR_UNSAFE_IMAGE,
                                                  "The qcow2 image of volume %s/%s fails cistern's checks.",
                                                  v->pool->name, v->name);
        else if (r >= 0)
                r = info_reply(i);
        if (r < 0 && r != -EBADMSG)
                (void) bus_reply_errno(i->msg, r, "Failed to read the volume's image");
        sd_bus_message_unref(i->msg);
        free(i);
}

int method_info(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        InfoWork *i;
        int r;

        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_READ, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        i = calloc(1, sizeof *i);
        if (!i)
                return -ENOMEM;
        i->msg = sd_bus_message_ref(msg);
        i->volume = v;
        strcpy(i->format, v->settings.format);
        r = workers_run(v->pool->manager->workers, info_work, info_done, i);
        if (r < 0) {
                sd_bus_message_unref(i->msg);
                free(i);
                if (r == -EMFILE)
                        return sd_bus_error_set(error, ERR_LIMITS_EXCEEDED, "Too many operations are running; try again later.");
                return r;
        }
        v->readers++;
        return 1;
}

typedef struct ConvertOptions {
        bool compress;
} ConvertOptions;

static const OptionSpec convert_spec[] = {
        OPTION("compress", OPTION_BOOL, ConvertOptions, compress),
        {}
};

static void converted(int r, void *userdata) {
        VolumeWork *w = userdata;

        log_info("Converted volume %s/%s to %s.", w->volume->pool->name, w->volume->name, w->volume->settings.format);
        volume_emit_changed(w->volume, "Format", NULL);
        volume_work_reply_changed(w);
}

static void convert_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;

        if (r < 0) {
                volume_work_reply_error(w, r, "Failed to convert the volume");
                volume_work_free(w, r);
                return;
        }
        volume_apply_revisions(v, w, 0);        /* the previous image, of the previous format */
        strcpy(v->settings.format, w->format);
        volume_committed(v);
        volume_work_save(w, converted);
}

static int validate_convert(Volume *v, const char *format, const ConvertOptions *o, sd_bus_error *error) {
        int r;

        if (!image_format_is_valid(format))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Unknown image format '%s'; use raw or qcow2.", format);
        if (o->compress && !streq(format, "qcow2"))
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "Only qcow2 images can be compressed.");
        r = volume_check_idle(v, error);
        if (r >= 0)
                r = volume_check_detached(v, error);
        if (r < 0)
                return r;
        if (v->state != VOLUME_STOPPED)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Volume %s/%s must be stopped to convert it.",
                                         v->pool->name, v->name);
        if (v->readers > 0)
                return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is being read (Export or Info); try again once "
                                         "that is done.", v->pool->name, v->name);
        return 0;
}

int method_convert(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        ConvertOptions o = {};
        const char *format;
        VolumeWork *w;
        int r;

        r = sd_bus_message_read(msg, "s", &format);
        if (r < 0)
                return r;
        r = options_read(msg, convert_spec, &o, NULL, error);
        if (r < 0)
                return r;
        r = validate_convert(v, format, &o, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        if (streq(format, v->settings.format) && !o.compress)
                return sd_bus_reply_method_return(msg, NULL);   /* nothing to change */

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->compress = o.compress;
        r = volume_plan_revisions(v, true, 0, w);
        if (r >= 0)
                r = volume_plan_format(v, w, format);
        if (r >= 0)
                r = volume_work_publish_job(w, v->size, error);
        if (r < 0) {
                volume_work_free(w, r);
                return r;
        }
        r = volume_work_start(w, volume_convert_work, convert_done, error);
        return r < 0 ? r : 1;
}
