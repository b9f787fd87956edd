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
#include "names.h"
#include "store.h"
#include "volume-dbus.h"

typedef struct MountOptions {
        bool read_only;
} MountOptions;

static const OptionSpec mount_spec[] = {
        OPTION("read_only", OPTION_BOOL, MountOptions, read_only),
        {}
};

/* Room for subject(). */
#define SUBJECT_MAX (sizeof "partition 4294967295 of volume /" + 2 * NAME_MAX_LENGTH)

/* How messages name what is mounted: "partition N of volume P/V", or "the whole device of
 * volume P/V" for partition 0; with a capital first letter when capital. */
static const char *subject(const Volume *v, unsigned partition, bool capital, char buf[static SUBJECT_MAX]) {
        if (partition == 0)
                snprintf(buf, SUBJECT_MAX, "%s whole device of volume %s/%s", capital ? "The" : "the",
                         v->pool->name, v->name);
        else
                snprintf(buf, SUBJECT_MAX, "%cartition %u of volume %s/%s", capital ? 'P' : 'p', partition,
                         v->pool->name, v->name);
        return buf;
}

static VolumeMount *find_mount(Volume *v, unsigned partition) {
        for (size_t i = 0; i < v->n_mounts; i++)
                if (v->mounts[i].partition == partition)
                        return &v->mounts[i];
        return NULL;
}

/* The device node of partition of v's device (0: the disk); -ENXIO when it has none such. */
static int partition_node(Volume *v, unsigned partition, char **ret) {
        char disk[LOOP_NODE_MAX], *node = NULL;
        bool found = partition == 0;

        for (size_t i = 0; !found && i < v->n_partitions; i++)
                found = v->partitions[i].number == partition;
        if (!found)
                return -ENXIO;
        loop_node(&v->device, disk);
        if (partition == 0)
                node = strdup(disk);
        else if (asprintf(&node, "%sp%u", disk, partition) < 0)
                node = NULL;
        if (!node)
                return -ENOMEM;
        *ret = node;
        return 0;
}

/* Opens the <volume> directory of v's mount points, making it and those above it when missing,
 * every step beneath the runtime directory without following a symlink. */
static int open_volume_dir(Volume *v) {
        Manager *m = v->pool->manager;
        _cleanup_close_ int runtime_fd = -EBADF, mounts_fd = -EBADF, pool_fd = -EBADF, volume_fd = -EBADF;

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
        return TAKE_FD(volume_fd);
}

/* Removes the <volume> directory of v's mount points when nothing is in it: after a failed
 * Mount, so that it leaves nothing behind. (Unmount keeps it; the owner may keep things there.) */
static void remove_volume_dir_if_empty(Volume *v) {
        _cleanup_close_ int runtime_fd = -EBADF, pool_fd = -EBADF;
        _cleanup_free_ char *pool_dir = NULL;

        runtime_fd = open(v->pool->manager->runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (runtime_fd < 0 || asprintf(&pool_dir, "mounts/%s", v->pool->name) < 0)
                return;
        pool_fd = open_beneath(runtime_fd, pool_dir, O_RDONLY | O_DIRECTORY, 0);
        if (pool_fd >= 0)
                (void) unlinkat(pool_fd, v->name, AT_REMOVEDIR);
}

/* Makes the mount point <runtime>/mounts/<pool>/<volume>/<partition> (into w->path) and mounts
 * node there; what it made goes again when that fails. */
static int mount_at_mount_point(VolumeWork *w, const char *node, const char *type) {
        Volume *v = w->volume;
        _cleanup_close_ int volume_fd = -EBADF, target_fd = -EBADF;
        char name[16];
        bool made = false;
        int r;

        snprintf(name, sizeof name, "%u", w->partition);
        volume_fd = r = open_volume_dir(v);
        if (r >= 0) {
                made = mkdirat(volume_fd, name, 0755) >= 0;
                if (!made && errno != EEXIST)
                        r = -errno;
        }
        if (r >= 0)
                target_fd = r = open_beneath(volume_fd, name, O_PATH | O_DIRECTORY, 0);
        if (r >= 0 && asprintf(&w->path, "%s/mounts/%s/%s/%s", v->pool->manager->runtime_dir,
                               v->pool->name, v->name, name) < 0) {
                w->path = NULL;
                r = -ENOMEM;
        }
        if (r >= 0)
                r = mount_hardened(node, type, w->read_only || v->device_read_only, target_fd);
        if (r < 0) {
                if (made)
                        (void) unlinkat(volume_fd, name, AT_REMOVEDIR);
                remove_volume_dir_if_empty(v);
        }
        return r < 0 ? r : 0;
}

static int mount_work(void *userdata) {
        VolumeWork *w = userdata;
        _cleanup_free_ char *node = NULL;
        char type[32];
        int r;

        r = partition_node(w->volume, w->partition, &node);
        if (r < 0)
                return r;
        r = mount_probe_type(node, type, sizeof type);
        if (r < 0)
                return r;
        if (!mount_type_allowed(type))
                return -EMEDIUMTYPE;
        return mount_at_mount_point(w, node, type);
}

static int unmount_work(void *userdata) {
        VolumeWork *w = userdata;

        if (umount2(w->path, UMOUNT_NOFOLLOW) < 0 && errno != EINVAL)   /* EINVAL: not mounted any more */
                return -errno;
        (void) rmdir(w->path);
        return 0;
}

/* Takes back a mount that cisternd could not record, with what mount_work() made for it. */
static int unmount_unrecorded_work(void *userdata) {
        VolumeWork *w = userdata;
        int r;

        r = unmount_work(w);
        if (r >= 0)
                remove_volume_dir_if_empty(w->volume);
        return r;
}

/* Answers Mount with r; a device attached for this call alone (w->attached is set) goes again
 * when it failed. */
static void mount_reply(int r, VolumeWork *w) {
        Volume *v = w->volume;
        char what[SUBJECT_MAX], failed[SUBJECT_MAX + 16];

        if (r == -ENXIO)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_NOT_FOUND, "Volume %s/%s has no partition %u.",
                                                  v->pool->name, v->name, w->partition);
        else if (r == -EMEDIUMTYPE)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_NOT_SUPPORTED, "%s holds no filesystem cisternd mounts.",
                                                  subject(v, w->partition, true, what));
        else if (r == -EUCLEAN)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_FAILED,
                                                  "The filesystem could not be mounted: the kernel rejects the one on %s "
                                                  "as damaged, or as made with features this kernel lacks.",
                                                  subject(v, w->partition, false, what));
        else if (r < 0) {
                snprintf(failed, sizeof failed, "Failed to mount %s", subject(v, w->partition, false, what));
                volume_work_reply_error(w, r, failed);
        } else {
                log_info("Mounted %s on %s.", subject(v, w->partition, false, what), w->path);
                volume_emit_changed(v, "Mounts", NULL);
                (void) sd_bus_reply_method_return(w->msg, "s", w->path);
        }
        if (r < 0 && w->attached && v->n_mounts == 0)
                volume_work_undo_attach(w);
        volume_work_free(w, r);
}

static void unrecorded_unmounted(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (r == -EMFILE)       /* no worker was free: rare enough to do it here */
                r = unmount_unrecorded_work(w);
        if (r < 0)
                log_warning_errno(r, "Failed to unmount %s again, which cisternd could not record: %m", w->path);
        mount_reply(-ENOMEM, w);
}

static void mount_done(int r, void *userdata) {
        VolumeWork *w = userdata;

        if (r >= 0) {
                r = mount_add(w->volume, w->partition, w->path);
                if (r < 0) {
                        /* A mount missing from Mounts could be neither unmounted nor detached
                         * through cisternd: it goes again, and the call fails. */
                        volume_work_continue(w, unmount_unrecorded_work, unrecorded_unmounted);
                        return;
                }
        }
        mount_reply(r, w);
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
        char what[SUBJECT_MAX];
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
                return sd_bus_error_setf(error, ERR_BUSY, "%s is mounted on %s already.",
                                         subject(v, partition, true, what), mnt->path);
        if (volume_is_attached(v) && partition > 0) {
                r = partition_node(v, partition, &node);
                if (r == -ENXIO)
                        return sd_bus_error_setf(error, ERR_NOT_FOUND, "Volume %s/%s has no partition %u.",
                                                 v->pool->name, v->name, partition);
                if (r < 0)
                        return r;
        }
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

static void unmount_done(int r, void *userdata) {
        VolumeWork *w = userdata;
        Volume *v = w->volume;
        VolumeMount *mnt = find_mount(v, w->partition);
        char what[SUBJECT_MAX], failed[SUBJECT_MAX + 20];
        bool changed = false;

        if (r >= 0 && mnt) {
                free(mnt->path);
                *mnt = v->mounts[--v->n_mounts];
                changed = true;
        }
        /* The mount monitor passed over v while this ran (mount_unmount_running()): catch up on
         * what someone else unmounted meanwhile. */
        if (mount_forget_unmounted(v))
                changed = true;
        if (changed)
                volume_emit_changed(v, "Mounts", NULL);

        if (r == -EBUSY)
                (void) sd_bus_reply_method_errorf(w->msg, ERR_BUSY, "%s is in use.", w->path);
        else if (r < 0) {
                snprintf(failed, sizeof failed, "Failed to unmount %s", subject(v, w->partition, false, what));
                volume_work_reply_error(w, r, failed);
        } else {
                log_info("Unmounted %s.", subject(v, w->partition, false, what));
                (void) sd_bus_reply_method_return(w->msg, NULL);
        }
        volume_work_free(w, r);
}

int method_unmount(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Volume *v = userdata;
        VolumeMount *mnt;
        VolumeWork *w;
        char what[SUBJECT_MAX];
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
                return sd_bus_error_setf(error, ERR_WRONG_STATE, "%s is not mounted.", subject(v, partition, true, what));

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
