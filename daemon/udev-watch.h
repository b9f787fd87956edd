/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

/* Waits for udev to have processed the block devices cisternd creates, on the udev monitor's
 * events — no sleeping, no polling. A device is ready when udev has run cistern's rules on it:
 * its database entry carries CISTERN_VOLUME (the rules in udev/), which the rules set only for
 * a device whose diskseq has a record in the runtime directory. */

#define UDEV_WAIT_USEC (30 * USEC_PER_SEC)

typedef struct UdevWatch UdevWatch;
typedef struct UdevWait UdevWait;

/* result: 0 ready, -ETIMEDOUT when udev did not get to it within UDEV_WAIT_USEC. */
typedef void (*UdevReadyFunc)(int result, void *userdata);

int udev_watch_new(sd_event *event, UdevWatch **ret);
UdevWatch *udev_watch_free(UdevWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(UdevWatch *, udev_watch_free);

/* Calls ready once the block device devnum has been processed with cistern's rules; diskseq,
 * when not 0, must be the device's. Looks at udev's database first, then asks udev to process
 * the device again (a "change" uevent), since an event handled before the device's record was
 * written carries nothing of cistern's. The wait is freed after ready ran. */
int udev_watch_wait(UdevWatch *w, dev_t devnum, uint64_t diskseq, UdevReadyFunc ready, void *userdata, UdevWait **ret);
/* Whether any wait is under way. */
bool udev_watch_busy(UdevWatch *w);
/* Gives up a wait; ready is not called. */
UdevWait *udev_wait_free(UdevWait *wait);
