/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "fuse-export.h"
#include "volume.h"

/* The block devices that expose volumes, as the runtime directory records them: one file
 * <runtime>/devices/<diskseq> per attached device, naming its pool and volume in udev's
 * environment-file format. udev's rules read it (CISTERN_POOL, CISTERN_VOLUME) to name the
 * device /dev/cistern/<pool>/<volume>; cisternd reads them all at start to find its devices
 * again. A diskseq is never reused before a reboot empties /run, so a record can only ever
 * describe the device it was written for.
 *
 * The diskseq is known only once the device is configured, and the kernel's own "change" uevent
 * of LOOP_CONFIGURE may reach udev before the record exists. So an attach first claims the free
 * device by its name, <runtime>/devices/loop<N> (same text), for which the rules keep the host's
 * hands off the content too; the claim goes once the record is written.
 *
 * The device of a qcow2 volume is attached to the file of a FUSE export (fuse-export.h), not to
 * the image: its record and claim name that export too (CISTERN_EXPORT=), which goes when the
 * device goes. */

/* Attaches backing_fd for v as a loop device (loop_attach()) and writes its record; -errno
 * with nothing left behind. export: the FUSE export backing_fd is the file of, or NULL. udev
 * has not been asked to look at it yet. */
int device_attach(Volume *v, int backing_fd, bool read_only, const char *export, LoopDevice *ret);

/* The export d's record names, into buf: 1, 0 when it names none (raw volumes), or -errno. */
int device_export(Manager *m, const LoopDevice *d, char buf[static FUSE_EXPORT_NAME_MAX]);

/* After d was detached (loop_detach()), its record goes: now, or, when another process still
 * holds d open and the kernel has only promised to let go of it on the last close, once udev
 * reports that has happened — until then, udev's rules must still see the record. Loop only. */
void device_release(Manager *m, const LoopDevice *d);
/* The udev watch's handler: finishes device_release() for devnum. */
void device_on_uevent(dev_t devnum, void *userdata);

/* At start, once the pools are loaded: gives each volume the device its record names, when that
 * device still exists and is backed by the volume's image or working copy, or for a qcow2 volume
 * by the live export its record names; detaches devices whose volume or export is gone, drops
 * the records of devices that are gone, and ends the exports of no device found again. */
void device_rediscover(Manager *m);
