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

/* Called for every block device event udev has processed. */
typedef void (*UdevEventFunc)(dev_t devnum, void *userdata);

int udev_watch_new(sd_event *event, UdevEventFunc on_event, void *userdata, UdevWatch **ret);
UdevWatch *udev_watch_free(UdevWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(UdevWatch *, udev_watch_free);

/* Asks udev to run its rules on the device again (a "change" uevent): for a device whose
 * earlier events were handled before its record existed. Safe on any thread. */
int udev_trigger_change(dev_t devnum);

/* Calls ready once udev's database shows each of the n block devices processed with cistern's
 * rules: devnums[0] a disk, which must have diskseq, the others its partitions. Looks at the
 * database first, then at the monitor's events. The wait is freed after ready ran. */
int udev_watch_wait(UdevWatch *w, const dev_t *devnums, size_t n, uint64_t diskseq, UdevReadyFunc ready, void *userdata,
                    UdevWait **ret);
/* Whether any wait is under way. */
bool udev_watch_busy(UdevWatch *w);
/* Gives up a wait; ready is not called. */
UdevWait *udev_wait_free(UdevWait *wait);
