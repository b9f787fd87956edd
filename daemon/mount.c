/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <libmount.h>
#include <stdio.h>
#include <sys/mount.h>
#include <unistd.h>

#include "log.h"
#include "mount.h"
#include "partition.h"
#include "volume-dbus.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_table *, mnt_free_table);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct libmnt_iter *, mnt_free_iter);

static const char *const allowed_types[] = {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat", "iso9660", "squashfs", "erofs",
};

bool mount_type_allowed(const char *type) {
        for (size_t i = 0; i < ELEMENTSOF(allowed_types); i++)
                if (streq(type, allowed_types[i]))
                        return true;
        return false;
}

int mount_probe_type(const char *node, char *buf, size_t size) {
        _cleanup_close_ int fd = open(node, O_RDONLY | O_CLOEXEC | O_NOCTTY);

        if (fd < 0)
                return -errno;
        probe_filesystem(fd, 0, 0, buf, size);
        return 0;
}

int mount_hardened(const char *source, const char *type, bool read_only, int target_fd) {
        _cleanup_close_ int fs_fd = -EBADF, mount_fd = -EBADF;
        unsigned attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | (read_only ? MOUNT_ATTR_RDONLY : 0);

        if (!mount_type_allowed(type))
                return -EPERM;
        fs_fd = fsopen(type, FSOPEN_CLOEXEC);
        if (fs_fd < 0)
                return -errno;
        if (fsconfig(fs_fd, FSCONFIG_SET_STRING, "source", source, 0) < 0 ||
            (read_only && fsconfig(fs_fd, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0))
                return -errno;
        /* Here the filesystem reads its superblock: EINVAL (and EFBIG) is its verdict on what
         * the device holds (damaged, or made with features this kernel lacks), not on anything
         * cisternd or its caller passed. */
        if (fsconfig(fs_fd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return errno == EINVAL || errno == EFBIG ? -EUCLEAN : -errno;
        mount_fd = fsmount(fs_fd, FSMOUNT_CLOEXEC, attr);
        if (mount_fd < 0)
                return -errno;
        if (move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                return -errno;
        return 0;
}

/* The volume and partition of a mount point <runtime>/mounts/<pool>/<volume>/<partition>. */
static Volume *volume_of_mount_point(Manager *m, const char *target, unsigned *ret_partition) {
        char pool[65], volume[65], rest[2];
        size_t len = strlen(m->runtime_dir);
        unsigned partition;
        Pool *p;

        if (strncmp(target, m->runtime_dir, len) != 0 || strncmp(target + len, "/mounts/", 8) != 0 ||
            sscanf(target + len + 8, "%64[^/]/%64[^/]/%u%1s", pool, volume, &partition, rest) != 3)
                return NULL;
        p = manager_get_pool(m, pool);
        *ret_partition = partition;
        return p ? pool_get_volume(p, volume) : NULL;
}

/* Whether devnum is partition of v's device (0: the disk). */
static bool is_volume_device(Volume *v, unsigned partition, dev_t devnum) {
        if (!volume_is_attached(v))
                return false;
        if (partition == 0)
                return devnum == v->device.devnum;
        for (size_t i = 0; i < v->n_partitions; i++)
                if (v->partitions[i].number == partition)
                        return devnum == v->partitions[i].devnum;
        return false;
}

bool mount_unmount_running(const Volume *v) {
        return v->operation && streq(v->operation, "Unmount");
}

int mount_add(Volume *v, unsigned partition, const char *path) {
        VolumeMount *mounts = reallocarray(v->mounts, v->n_mounts + 1, sizeof *mounts);
        char *copy;

        if (!mounts)
                return -ENOMEM;
        v->mounts = mounts;     /* one more slot, used or not */
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        v->mounts[v->n_mounts++] = (VolumeMount) { partition, copy };
        return 0;
}

void mount_rediscover(Manager *m) {
        _cleanup_(mnt_free_tablep) struct libmnt_table *table = mnt_new_table_from_file("/proc/self/mountinfo");
        _cleanup_(mnt_free_iterp) struct libmnt_iter *iter = mnt_new_iter(MNT_ITER_FORWARD);
        struct libmnt_fs *fs;

        if (!table || !iter)
                return;
        while (mnt_table_next_fs(table, iter, &fs) == 0) {
                const char *target = mnt_fs_get_target(fs);
                unsigned partition;
                Volume *v;

                if (!target)
                        continue;
                v = volume_of_mount_point(m, target, &partition);
                if (v && is_volume_device(v, partition, mnt_fs_get_devno(fs))) {
                        if (mount_add(v, partition, target) >= 0)
                                log_debug("Volume %s/%s is mounted on %s.", v->pool->name, v->name, target);
                } else if (strncmp(target, m->runtime_dir, strlen(m->runtime_dir)) == 0 &&
                           strstr(target + strlen(m->runtime_dir), "/mounts/") == target + strlen(m->runtime_dir)) {
                        log_info("Unmounting %s: the volume it was mounted for is gone.", target);
                        if (umount2(target, UMOUNT_NOFOLLOW) < 0)
                                log_warning_errno(errno, "Failed to unmount %s: %m", target);
                }
        }
}

/* Forgets the mounts of v that table no longer has. Returns whether there were any. */
static bool forget_unmounted(Volume *v, struct libmnt_table *table) {
        bool changed = false;

        for (size_t i = 0; i < v->n_mounts;)
                if (mnt_table_find_target(table, v->mounts[i].path, MNT_ITER_FORWARD))
                        i++;
                else {
                        log_info("%s was unmounted by someone else.", v->mounts[i].path);
                        free(v->mounts[i].path);
                        v->mounts[i] = v->mounts[--v->n_mounts];
                        changed = true;
                }
        return changed;
}

bool mount_forget_unmounted(Volume *v) {
        _cleanup_(mnt_free_tablep) struct libmnt_table *table = NULL;

        if (v->n_mounts == 0)
                return false;
        table = mnt_new_table_from_file("/proc/self/mountinfo");
        return table && forget_unmounted(v, table);
}

/* After a change of the mount table: forgets the mounts of volumes that are not there any
 * more, e.g. unmounted by someone else. A volume whose Unmount is running is left to
 * unmount_done(): its own umount2() changes the table before the call has finished, and that
 * is no news (unmount_done() calls mount_forget_unmounted() for anything else that went). */
static int on_mount_change(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Manager *m = userdata;
        _cleanup_(mnt_free_tablep) struct libmnt_table *table = NULL;
        Pool *p;

        (void) mnt_monitor_event_cleanup(m->mount_monitor);
        table = mnt_new_table_from_file("/proc/self/mountinfo");
        if (!table)
                return 0;
        NAMEMAP_FOREACH(p, &m->pools) {
                Volume *v;

                NAMEMAP_FOREACH(v, &p->volumes)
                        if (!mount_unmount_running(v) && forget_unmounted(v, table))
                                volume_emit_changed(v, "Mounts", NULL);
        }
        return 0;
}

int mount_watch(Manager *m) {
        int r;

        m->mount_monitor = mnt_new_monitor();
        if (!m->mount_monitor)
                return -ENOMEM;
        r = mnt_monitor_enable_kernel(m->mount_monitor, 1);
        if (r < 0)
                return r;
        r = mnt_monitor_get_fd(m->mount_monitor);
        if (r < 0)
                return r;
        return sd_event_add_io(m->event, &m->mount_source, r, EPOLLIN, on_mount_change, m);
}
