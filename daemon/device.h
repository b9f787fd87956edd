/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "volume.h"

/* The block devices that expose volumes, as the runtime directory records them: one file
 * <runtime>/devices/<diskseq> per attached device, naming its pool and volume in udev's
 * environment-file format. udev's rules read it (CISTERN_POOL, CISTERN_VOLUME) to name the
 * device /dev/cistern/<pool>/<volume>; cisternd reads them all at start to find its devices
 * again. A diskseq is never reused before a reboot empties /run, so a record can only ever
 * describe the device it was written for. */

/* Written after the device is configured and before udev is asked to look at it. */
int device_record_write(Volume *v, const LoopDevice *d);
void device_record_remove(Manager *m, const LoopDevice *d);

/* At start, once the pools are loaded: gives each volume the device its record names, when that
 * device still exists and is backed by the volume's image or working copy; detaches devices
 * whose volume is gone and drops the records of devices that are gone. */
void device_rediscover(Manager *m);
