/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Volume methods that mount the filesystems of an attached volume: Mount and Unmount. A volume
 * that is not attached is attached first. Mount points lie at
 * <runtime>/mounts/<pool>/<volume>/<partition>: the <volume> directory belongs to the volume's
 * owner with mode 0700, so only the owner and root reach them; nothing a guest wrote (labels,
 * UUIDs) ever becomes a path component. */

#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "log.h"
#include "mount.h"
#include "store.h"
#include "volume-dbus.h"

typedef struct MountOptions {
        bool read_only;
} MountOptions;

static const OptionSpec mount_spec[] = {
        OPTION("read_only", OPTION_BOOL, MountOptions, read_only),
        {}
};

static VolumeMount *find_mount(Volume *v, unsigned partition) {
        for (size_t i = 0; i < v->n_mounts; i++)
                if (v->mounts[i].partition == partition)
                        return &v->mounts[i];
        return NULL;
}

/* The device node of partition of v's device (0: the disk), or NULL when it has none such. */
static char *partition_node(Volume *v, unsigned partition) {
        char disk[LOOP_NODE_MAX], *node;

        loop_node(&v->device, disk);
        if (partition == 0)
                return strdup(disk);
        for (size_t i = 0; i < v->n_partitions; i++)
                if (v->partitions[i].number == partition)
                        return asprintf(&node, "%sp%u", disk, partition) < 0 ? NULL : node;
        return NULL;
}

/* Makes the directories down to the mount point and opens it (O_PATH), every step beneath the
 * runtime directory without following a symlink. */
static int open_mount_point(Volume *v, unsigned partition, char **ret_path) {
        Manager *m = v->pool->manager;
        _cleanup_close_ int runtime_fd = -EBADF, mounts_fd = -EBADF, pool_fd = -EBADF, volume_fd = -EBADF;
        char name[16];
        int fd;

        runtime_fd = open(m->runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (runtime_fd < 0)
                return -errno;
        mounts_fd = open_or_create_dir_beneath(runtime_fd, "mounts", 0711);
        if (mounts_fd < 0)
                return mounts_fd;
        pool_fd = open_or_create_dir_beneath(mounts_fd, v->pool->name, 0711);
        if (pool_fd < 0)
                return pool_fd;
        volume_fd = open_or_create_dir_beneath(pool_fd, v->name, 0700);
        if (volume_fd < 0)
                return volume_fd;
        if (fchown(volume_fd, v->settings.owner, 0) < 0 || fchmod(volume_fd, 0700) < 0)
                return -errno;
        snprintf(name, sizeof name, "%u", partition);
        if (mkdirat(volume_fd, name, 0755) < 0 && errno != EEXIST)
                return -errno;
        fd = open_beneath(volume_fd, name, O_PATH | O_DIRECTORY, 0);
        if (fd < 0)
                return fd;
        if (asprintf(ret_path, "%s/mounts/%s/%s/%s", m->runtime_dir, v->pool->name, v->name, name) < 0) {
                safe_close(fd);
                return -ENOMEM;
        }
        return fd;
}

static int mount_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_free_ char *node = partition_node(w->volume, w->partition);
        _cleanup_close_ int target_fd = -EBADF;
        char type[32];
        int r;

        if (!node)
                return -ENXIO;
        r = mount_probe_type(node, type, sizeof type);
        if (r < 0)
                return r;
        if (!mount_type_allowed(type))
                return -EMEDIUMTYPE;
        target_fd = open_mount_point(w->volume, w->partition, &w->path);
        if (target_fd < 0)
                return target_fd;
        r = mount_hardened(node, type, w->read_only || w->volume->device_read_only, target_fd);
        if (r < 0)
                (void) rmdir(w->path);
        return r;
}

static void mount_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        VolumeMount *mounts;

        if (r >= 0) {
                mounts = reallocarray(v->mounts, v->n_mounts + 1, sizeof *mounts);
                if (!mounts)
                        r = -ENOMEM;    /* mounted; found again at the next start */
                else {
                        v->mounts = mounts;
                        v->mounts[v->n_mounts++] = (VolumeMount) { w->partition, strdup(w->path) };
                }
        }
        if (r == -ENXIO)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_NOT_FOUND, "Volume %s/%s has no partition %u.",
                                                  v->pool->name, v->name, w->partition);
        else if (r == -EMEDIUMTYPE)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_NOT_SUPPORTED,
                                                  "Partition %u of volume %s/%s holds no filesystem cisternd mounts.",
                                                  w->partition, v->pool->name, v->name);
        else if (r < 0)
                volume_work_reply_error(w, r, "Failed to mount the volume");
        else {
                log_info("Mounted partition %u of volume %s/%s on %s.", w->partition, v->pool->name, v->name, w->path);
                volume_emit_changed(v, "Mounts", NULL);
                (void) sd_bus_reply_method_return(w->msg, "s", w->path);
        }
        /* A device attached for this mount alone (w->attached is set) goes again when the mount
         * failed. */
        if (r < 0 && w->attached && v->n_mounts == 0)
                volume_work_undo_attach(w);
        volume_work_free(w, r);
}

static void attached_for_mount(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (r < 0) {
                volume_attach_reply_error(w, r);
                volume_work_free(w, r);
                return;
        }
        volume_work_continue(w, mount_work, mount_done);
}

int method_mount(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        _cleanup_free_ char *node = NULL;
        MountOptions o = {};
        VolumeMount *mnt;
        VolumeWork *w;
        uint32_t partition, seen;
        int r;

        r = sd_bus_message_read(msg, "u", &partition);
        if (r < 0)
                return r;
        r = options_read(msg, mount_spec, &o, &seen, error);
        if (r < 0)
                return r;
        r = volume_check_idle(v, error);
        if (r < 0)
                return r;
        mnt = find_mount(v, partition);
        if (mnt)
                return sd_bus_error_setf(error, ERR_BUSY, "Partition %u of volume %s/%s is mounted on %s already.",
                                         partition, v->pool->name, v->name, mnt->path);
        if (volume_is_attached(v) && partition > 0 && !(node = partition_node(v, partition)))
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "Volume %s/%s has no partition %u.", v->pool->name, v->name, partition);
        if (!volume_is_attached(v) && !streq(v->settings.format, "raw"))
                return sd_bus_error_setf(error, ERR_NOT_SUPPORTED, "Attaching %s volumes is not supported.", v->settings.format);
        if (volume_is_attached(v) && v->device_read_only && option_seen(seen, mount_spec, "read_only") && !o.read_only)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Volume %s/%s is attached read-only.", v->pool->name, v->name);
        if (!v->pool->manager->udev && !volume_is_attached(v))
                return sd_bus_error_set(error, ERR_NOT_SUPPORTED, "Devices cannot be attached: udev cannot be watched.");

        r = volume_authorize(v, msg, ACTION_VOLUME_MOUNT, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->partition = partition;
        w->read_only = o.read_only;
        if (volume_is_attached(v))
                r = volume_work_start(w, mount_work, mount_done, error);
        else {
                /* Attached as Attach would by default: writable only when started and asked. */
                w->read_only = v->settings.read_only || v->state == VOLUME_STOPPED || o.read_only;
                w->partitions = true;
                r = volume_work_attach(w, attached_for_mount, error);
        }
        return r < 0 ? r : 1;
}

static int unmount_work(void *userdata) {
        VolumeWork *w = userdata;

        if (umount2(w->path, UMOUNT_NOFOLLOW) < 0 && errno != EINVAL)   /* EINVAL: not mounted any more */
                return -errno;
        (void) rmdir(w->path);
        return 0;
}

static void unmount_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        VolumeMount *mnt = find_mount(v, w->partition);

        if (r == -EBUSY)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_BUSY, "%s is in use.", w->path);
        else if (r < 0)
                volume_work_reply_error(w, r, "Failed to unmount the volume");
        else {
                log_info("Unmounted partition %u of volume %s/%s.", w->partition, v->pool->name, v->name);
                if (mnt) {
                        free(mnt->path);
                        *mnt = v->mounts[--v->n_mounts];
                }
                volume_emit_changed(v, "Mounts", NULL);
                (void) sd_bus_reply_method_return(w->msg, NULL);
        }
        volume_work_free(w, r);
}

int method_unmount(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeMount *mnt;
        VolumeWork *w;
        uint32_t partition;
        int r;

        r = sd_bus_message_read(msg, "u", &partition);
        if (r < 0)
                return r;
        r = options_read(msg, volume_no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        r = volume_check_idle(v, error);
        if (r < 0)
                return r;
        mnt = find_mount(v, partition);
        if (!mnt)
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "Partition %u of volume %s/%s is not mounted.",
                                         partition, v->pool->name, v->name);

        r = volume_authorize(v, msg, ACTION_VOLUME_MOUNT, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = volume_work_new(v, msg, &w);
        if (r < 0)
                return r;
        w->partition = partition;
        w->path = strdup(mnt->path);
        if (!w->path) {
                volume_work_free(w, -ENOMEM);
                return -ENOMEM;
        }
        r = volume_work_start(w, unmount_work, unmount_done, error);
        return r < 0 ? r : 1;
}
