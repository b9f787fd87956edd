/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* Every mount cisternd makes goes through mount_hardened(): nosuid, nodev and noexec always, a
 * filesystem type from the allow-list named explicitly (never left to the kernel to guess), and
 * a target reached by an fd opened beneath a directory cisternd owns, never by a path a symlink
 * could redirect. */

/* Whether cisternd mounts filesystems of type: ext2/3/4, xfs, btrfs, vfat, exfat, iso9660,
 * squashfs, erofs. */
bool mount_type_allowed(const char *type);

/* The filesystem libblkid finds on the block device node, into buf ("" when none or several). */
int mount_probe_type(const char *node, char *buf, size_t size);

/* Mounts the block device source, of filesystem type, on the directory open (O_PATH) as
 * target_fd. -EUCLEAN when the filesystem refuses what the device holds (damaged, or of
 * features this kernel lacks). */
int mount_hardened(const char *source, const char *type, bool read_only, int target_fd);

/* Adds (partition, a copy of path) to v's Mounts. -ENOMEM leaves them as they were. */
int mount_add(Volume *v, unsigned partition, const char *path);

/* Whether cisternd's own Unmount of a filesystem of v is running. */
bool mount_unmount_running(const Volume *v);

/* Forgets the mounts of v that are not in the mount table any more (unmounted by someone
 * else). Returns whether there were any; announcing Mounts is the caller's. */
bool mount_forget_unmounted(Volume *v);

/* At start, once devices are found again: gives each attached volume the mounts under
 * <runtime>/mounts that are of its device, and unmounts the others there. */
void mount_rediscover(Manager *m);

/* Follows the mount table (libmount's monitor), so that a mount of a volume that someone else
 * unmounts leaves its Mounts. */
int mount_watch(Manager *m);
