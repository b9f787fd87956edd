/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods that give access to a volume's data as a device or an fd: Attach, Detach and
 * Open. A volume is attached as a loop device (the working copy while started, else the
 * committed image), named in the runtime directory's records for udev's rules, and the call
 * returns only once udev has processed the device. A raw image is the loop device's backing
 * file itself; a qcow2 image is served, as the raw disk the guest sees, by qemu-storage-daemon
 * over FUSE (fuse-export.h), and the loop device is attached to that file.
 *
 * The committed image of a stopped volume is shared with its revisions (hard links) and is never
 * written in place, so it is attached read-only (by default, and refused otherwise): writing
 * needs a started volume, whose working copy is the volume's to change. */

#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/ioctl.h>

#include "authorize.h"
#include "bus-util.h"
#include "device.h"
#include "errors.h"
#include "fuse-export.h"
#include "image.h"
#include "log.h"
#include "qemu.h"
#include "udev-watch.h"
#include "volume-dbus.h"

typedef struct AttachOptions {
        bool read_only;
        bool partitions;
} AttachOptions;

static const OptionSpec attach_spec[] = {
        OPTION("read_only", OPTION_BOOL, AttachOptions, read_only),
        OPTION("partitions", OPTION_BOOL, AttachOptions, partitions),
        {}
};

/* Whether v's device is attached to an export of its image rather than to the image itself. */
static bool is_exported(const Volume *v) {
        return streq(v->settings.format, "qcow2");
}

void volume_set_detached(Volume *v) {
        v->device = (LoopDevice) {};
        v->device_on_work = false;
        v->partitions = mfree(v->partitions);
        v->n_partitions = 0;
        volume_emit_changed(v, "Device", "Partitions", NULL);
}

int volume_check_detached(Volume *v, sd_bus_error *error) {
        char node[LOOP_NODE_MAX];

        if (!volume_is_attached(v))
                return 0;
        return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is attached as %s%s; detach it first.",
                                 v->pool->name, v->name, loop_node(&v->device, node),
                                 is_exported(v) ? ", its qcow2 image held open by qemu-storage-daemon" : "");
}

/* The partition devices of w's new device, from its table, checked first. */
static int add_partitions(VolumeWork *w) {
        _cleanup_close_ int fd = loop_open(&w->device, O_RDONLY);
        char sysname[LOOP_NODE_MAX];
        uint64_t size;
        int r;

        if (fd < 0)
                return fd;
        if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                return -errno;
        r = partitions_read(fd, size, &w->device_partitions, &w->n_device_partitions);
        if (r < 0)
                return r;
        snprintf(sysname, sizeof sysname, "loop%u", w->device.number);
        return partitions_add(fd, sysname, w->device_partitions, w->n_device_partitions);
}

/* Takes the device of a failed attach down again. Safe on any thread; its record goes on the
 * loop (attach_release()). */
static void attach_undo(VolumeWork *w) {
        int r;

        r = loop_detach(&w->device);
        if (r < 0 && r != -ESTALE)
                log_warning_errno(r, "Failed to detach /dev/loop%u again: %m", w->device.number);
}

static void attach_release(VolumeWork *w) {
        if (w->device.diskseq != 0)
                device_release(w->volume->pool->manager, &w->device);
        w->device = (LoopDevice) {};
}

static int attach_work(void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        _cleanup_close_ int vdir_fd = volume_open_dir(v), fd = -EBADF;
        char export[FUSE_EXPORT_NAME_MAX];
        int r;

        if (vdir_fd < 0)
                return vdir_fd;
        fd = v->pool->driver->object_open(vdir_fd, v->state == VOLUME_STARTED ? OBJECT_WORK : OBJECT_IMAGE,
                                          w->read_only ? O_RDONLY : O_RDWR);
        if (fd < 0)
                return fd;
        if (is_exported(v)) {
                _cleanup_close_ int image_fd = TAKE_FD(fd);
                Qcow2Problem problem = {};
                Qcow2Info info;

                /* A working copy is the VM's to write, header included (Open): checked again
                 * before qemu reads it. */
                r = image_inspect_qcow2(v, image_fd, &info, &problem);
                if (r == -EBADMSG || r == -ENOMEDIUM) {
                        w->error = strdup(problem.message);
                        return -ENOEXEC;
                }
                if (r < 0)
                        return r;
                r = fuse_export_start(v, image_fd, !w->read_only, export, &fd, &w->error);
                if (r < 0)
                        return r;
        }
        r = device_attach(v, fd, w->read_only, is_exported(v) ? export : NULL, &w->device);
        if (r >= 0) {
                /* udev looks at the disk again, now with its record, then the partitions come: udev
                 * handles a disk's events before those of its partitions, which take the disk's
                 * names. */
                r = udev_trigger_change(w->device.devnum);
                if (r >= 0 && w->partitions)
                        r = add_partitions(w);
                if (r < 0)
                        attach_undo(w);
        }
        /* The export goes after the device on it, whose record goes on the loop. */
        if (r < 0 && is_exported(v)) {
                int k = fuse_export_stop(v->pool->manager, export);

                if (k < 0)
                        log_warning_errno(k, "Failed to end export %s again, the next start retries: %m", export);
        }
        return r;
}

void volume_attach_reply_error(VolumeWork *w, int r) {
        Volume *v = w->volume;

        if (r == -EBUSY)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_BUSY, "Other processes took every free loop device first; try again.");
        else if (r == -EBADMSG)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_UNSAFE_IMAGE,
                                                  "The partition table of volume %s/%s is not safe to expose (entries "
                                                  "beyond the disk, overlapping, or more than %d; two tables, a hybrid "
                                                  "MBR, or GPT entries or headers that do not check out); attach it "
                                                  "with partitions=false for the whole disk only.",
                                                  v->pool->name, v->name, PARTITIONS_MAX);
        else if (r == -ENOEXEC)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_UNSAFE_IMAGE,
                                                  "The qcow2 image of volume %s/%s is unsafe: %s.", v->pool->name, v->name,
                                                  w->error ?: "it fails cistern's checks");
        else if (r == -ETIMEDOUT)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_FAILED,
                                                  "udev did not process the device in time; is systemd-udevd running?");
        else if (r == -EIO && w->error)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_FAILED,
                                                  "qemu-storage-daemon could not serve the qcow2 image of volume %s/%s: %s",
                                                  v->pool->name, v->name, w->error);
        else
                volume_work_reply_error(w, r, "Failed to attach the volume");
}

void volume_work_undo_attach(VolumeWork *w) {
        Manager *m = w->volume->pool->manager;
        char export[FUSE_EXPORT_NAME_MAX];
        bool exported = w->device.diskseq != 0 && device_export(m, &w->device, export) > 0;

        attach_undo(w);
        attach_release(w);
        /* Its daemon takes a moment to end: not on the loop. */
        if (exported)
                fuse_export_stop_async(m, export);
        volume_set_detached(w->volume);
}

static void attach_ready(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        char node[LOOP_NODE_MAX];

        w->udev_wait = NULL;
        if (r < 0)
                volume_work_undo_attach(w);
        else {
                log_info("Attached volume %s/%s as %s%s.", v->pool->name, v->name, loop_node(&v->device, node),
                         v->device_read_only ? ", read-only" : "");
                volume_emit_changed(v, "Device", "Partitions", NULL);
        }
        w->attached(r, w);
}

static void attach_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        _cleanup_free_ dev_t *devnums = NULL;

        if (r < 0) {
                attach_release(w);
                w->attached(r, w);
                return;
        }
        v->device = w->device;
        v->device_read_only = w->read_only;
        /* A working copy that is the device's own backing file can be resized under it; an
         * exported one through its export, when that is writable. */
        v->device_on_work = v->state == VOLUME_STARTED && (!is_exported(v) || !w->read_only);
        v->partitions = TAKE_PTR(w->device_partitions);
        v->n_partitions = w->n_device_partitions;

        devnums = calloc(v->n_partitions + 1, sizeof *devnums);
        if (!devnums) {
                attach_ready(-ENOMEM, w);
                return;
        }
        devnums[0] = v->device.devnum;
        for (size_t i = 0; i < v->n_partitions; i++)
                devnums[i + 1] = v->partitions[i].devnum;
        r = udev_watch_wait(v->pool->manager->udev, devnums, v->n_partitions + 1, v->device.diskseq,
                            attach_ready, w, &w->udev_wait);
        if (r < 0)
                attach_ready(r, w);
}

/* NotSupported when v's format cannot be attached here: qcow2 without qemu-storage-daemon. */
static int check_attachable(Volume *v, sd_bus_error *error) {
        if (is_exported(v) && access(QEMU_STORAGE_DAEMON_PATH, X_OK) < 0)
                return sd_bus_error_setf(error, ERR_NOT_SUPPORTED,
                                         "Attaching qcow2 volumes needs %s (Debian package qemu-system-common), "
                                         "which is not installed.", QEMU_STORAGE_DAEMON_PATH);
        return 0;
}

int volume_work_attach(VolumeWork *w, WorkDone then, sd_bus_error *error) {
        int r;

        r = check_attachable(w->volume, error);
        if (r < 0) {
                volume_work_free(w, r);
                return r;
        }
        w->attached = then;
        return volume_work_start(w, attach_work, attach_done, error);
}

/* Attach's own end: the device's node, or the error. */
static void attached(int r, void *userdata) {
        VolumeWork *w = userdata;
        char node[LOOP_NODE_MAX];

        if (r < 0)
                volume_attach_reply_error(w, r);
        else
                (void) sd_bus_reply_method_return(w->msg, "s", loop_node(&w->volume->device, node));
        volume_work_free(w, r);
}

int method_attach(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        AttachOptions o = { .partitions = true };
        VolumeWork *w;
        uint32_t seen;
        int r;

        r = options_read(msg, attach_spec, &o, &seen, error);
        if (r < 0)
                return r;
        if (!option_seen(seen, attach_spec, "read_only"))
                o.read_only = v->settings.read_only || v->state == VOLUME_STOPPED;
        r = check_attachable(v, error);
        if (r >= 0)
                r = volume_check_idle(v, error);
        if (r >= 0)
                r = volume_check_detached(v, error);
        if (r < 0)
                return r;
        if (v->settings.read_only && !o.read_only)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Volume %s/%s is read-only.", v->pool->name, v->name);
        if (v->state == VOLUME_STOPPED && !o.read_only)
                return sd_bus_error_setf(error, ERR_WRONG_STATE,
                                         "Volume %s/%s is stopped: its committed image can be attached read-only only; "
                                         "start it to attach it writable.", v->pool->name, v->name);
        if (!v->pool->manager->udev)
                return sd_bus_error_set(error, ERR_NOT_SUPPORTED, "Devices cannot be attached: udev cannot be watched.");

        r = volume_authorize(v, msg, ACTION_VOLUME_ATTACH, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->read_only = o.read_only;
        w->partitions = o.partitions;
        r = volume_work_attach(w, attached, error);
        return r < 0 ? r : 1;
}

static int detach_work(void *userdata) {
        VolumeWork *w = userdata;
        Manager *m = w->volume->pool->manager;
        char export[FUSE_EXPORT_NAME_MAX];
        int r, exported;

        exported = device_export(m, &w->volume->device, export);
        r = loop_detach(&w->volume->device);
        if (r == -ESTALE)
                r = 0;  /* gone already */
        /* Then the export the device was attached to, if any. Should it refuse to end, the
         * device is gone all the same, and the next start ends it. */
        if (r >= 0 && exported > 0) {
                int k = fuse_export_stop(m, export);

                if (k < 0)
                        log_warning_errno(k, "Failed to end export %s, the next start retries: %m", export);
        }
        return r;
}

static void detach_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        char node[LOOP_NODE_MAX];

        if (r == -EBUSY)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_BUSY, "%s is in use (mounted?).", loop_node(&v->device, node));
        else if (r < 0)
                volume_work_reply_error(w, r, "Failed to detach the volume");
        else {
                log_info("Detached volume %s/%s from %s.", v->pool->name, v->name, loop_node(&v->device, node));
                device_release(v->pool->manager, &v->device);
                volume_set_detached(v);
                (void) sd_bus_reply_method_return(w->msg, NULL);
        }
        volume_work_free(w, r);
}

int method_detach(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeWork *w;
        int r;

        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        if (!volume_is_attached(v))
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Volume %s/%s is not attached.", v->pool->name, v->name);
        if (v->n_mounts > 0)
                return sd_bus_error_setf(error, ERR_BUSY, "Volume %s/%s is mounted on %s; unmount it first.",
                                         v->pool->name, v->name, v->mounts[0].path);
        r = volume_check_idle(v, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, ACTION_VOLUME_ATTACH, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        r = volume_work_start(w, detach_work, detach_done, error);
        return r < 0 ? r : 1;
}

typedef struct OpenOptions {
        bool read_only;
} OpenOptions;

static const OptionSpec open_spec[] = {
        OPTION("read_only", OPTION_BOOL, OpenOptions, read_only),
        {}
};

int method_open(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        OpenOptions o = { .read_only = true };
        _cleanup_close_ int vdir_fd = -EBADF, fd = -EBADF;
        int r;

        r = options_read(msg, open_spec, &o, NULL, error);
        if (r < 0)
                return r;
        if (!o.read_only && v->settings.read_only)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Volume %s/%s is read-only.", v->pool->name, v->name);
        if (!o.read_only && v->state != VOLUME_STARTED)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Volume %s/%s is stopped: only its working copy is written; "
                                         "start it first.", v->pool->name, v->name);
        r = volume_check_idle(v, error);
        if (r < 0)
                return r;

        r = volume_authorize(v, msg, o.read_only ? ACTION_VOLUME_READ : ACTION_VOLUME_MODIFY, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        vdir_fd = volume_open_dir(v);
        if (vdir_fd < 0)
                return bus_error_from_errno(error, vdir_fd, "Failed to open the volume");
        fd = v->pool->driver->object_open(vdir_fd, v->state == VOLUME_STARTED ? OBJECT_WORK : OBJECT_IMAGE,
                                          o.read_only ? O_RDONLY : O_RDWR);
        if (fd < 0)
                return bus_error_from_errno(error, fd, "Failed to open the volume's data");
        return sd_bus_reply_method_return(msg, "h", fd);
}
