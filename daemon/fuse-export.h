/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "names.h"
#include "volume.h"

/* How a qcow2 volume becomes a block device: qemu-storage-daemon (qemu.c) serves the guest's view
 * of the image, raw, as a file over FUSE, and the loop device is attached to that file exactly
 * as it is to a raw volume's image. Each such export has two files in <runtime>/exports (mode
 * 0700: root only):
 *
 *   <pool>:<volume>:<16 random hex digits>       the FUSE mount point: the guest's disk;
 *   <pool>:<volume>:<16 random hex digits>.pid   the daemon's pidfile, locked while it lives.
 *
 * ':' never occurs in pool and volume names, so the names cannot collide, and the random part
 * makes every export's names new: stopping an old export of a volume can never touch a newer
 * one. The device record (device.h) names the export behind its device. The daemon is nobody's
 * child and outlives cisternd, as the loop device it backs does; its pidfile finds it again. */

#define FUSE_EXPORT_NAME_MAX (2 * NAME_MAX_LENGTH + sizeof "::0123456789abcdef")

/* Whether name could be an export's name (not its pidfile's): what is read back from a record
 * must name no other file. */
bool fuse_export_name_is_valid(const char *name);

/* Serves the qcow2 image open as image_fd for v, writable or not, and opens the served file
 * (read-write when writable): the fd for the loop device, in ret_fd, and the export's name.
 * On failure nothing is left behind: no daemon, no mount, no file; where qemu-storage-daemon
 * failed (-EIO), *error gets its own words. Waits for qemu: worker threads only. */
int fuse_export_start(Volume *v, int image_fd, bool writable, char ret_name[static FUSE_EXPORT_NAME_MAX],
                      int *ret_fd, char **error);

/* Ends the export name: SIGTERM, which makes the daemon flush the image, unmount and exit
 * (SIGKILL when it has not after FUSE_EXPORT_STOP_TIMEOUT_SEC), then unmounts what a daemon that
 * died left mounted and removes both files. 0 too when it was gone already. The loop device on
 * it must be detached first. Waits for the daemon: worker threads only. */
#define FUSE_EXPORT_STOP_TIMEOUT_SEC 30
int fuse_export_stop(Manager *m, const char *name);

/* fuse_export_stop() on a worker thread, for the event loop, which must not wait; a failure is
 * logged, and the export is then swept at the next start. */
void fuse_export_stop_async(Manager *m, const char *name);

/* Sets the size of the disk export name serves, writable: qemu-storage-daemon resizes the
 * image under it (as qemu-img resize would, which the daemon's lock on the image forbids now).
 * The loop device on it learns the new size from loop_set_capacity(). Worker threads only. */
int fuse_export_resize(Manager *m, const char *name, uint64_t size);

/* Whether export name is alive (its daemon holds its pidfile) and its file is dev:ino, as a
 * loop device's backing file: 1 yes, 0 no. The file is looked at only while its daemon lives,
 * so a dead export's mount never makes this wait. */
int fuse_export_backs(Manager *m, const char *name, dev_t dev, ino_t ino);

/* At start, once the devices are found again: stops every export whose name is not among keep
 * (n_keep names), on worker threads. */
void fuse_export_sweep(Manager *m, const char (*keep)[FUSE_EXPORT_NAME_MAX], size_t n_keep);
