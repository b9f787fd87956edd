/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "util.h"

/* Loop devices, by the kernel's ioctls. A device is known by its number and its disk sequence
 * number (diskseq), which the kernel raises each time the device is configured: a number alone
 * may name another file's device by now, a diskseq never does. Partitions are never scanned by
 * the kernel (no LO_FLAGS_PARTSCAN). */

typedef struct LoopDevice {
        unsigned number;        /* /dev/loop<number> */
        dev_t devnum;
        uint64_t diskseq;
} LoopDevice;

/* "/dev/loop<number>" into buf. */
#define LOOP_NODE_MAX sizeof("/dev/loop4294967295")
char *loop_node(const LoopDevice *d, char buf[static LOOP_NODE_MAX]);

/* Called with the number of the free device about to be configured (claimed true) before
 * LOOP_CONFIGURE, and again (claimed false) when configuring it failed. */
typedef int (*LoopClaimFunc)(unsigned number, bool claimed, void *userdata);

/* Attaches the file open as backing_fd to a free loop device with LOOP_CONFIGURE, atomically:
 * read-only when asked, with direct I/O when asked and where the backing filesystem allows it.
 * Another process may take the free device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE; that is
 * retried up to LOOP_ATTACH_TRIES times, then -EBUSY. Attaches within the process take turns
 * from LOOP_CTL_GET_FREE to LOOP_CONFIGURE, so a number is claimed by one of them at a time. */
#define LOOP_ATTACH_TRIES 64
int loop_attach(int backing_fd, bool read_only, bool direct_io, LoopClaimFunc claim, void *userdata,
                LoopDevice *ret);

/* Opens d with flags, or -ESTALE when the device no longer has d's diskseq. */
int loop_open(const LoopDevice *d, int flags);

/* Removes d's partition devices and detaches d (-ESTALE: it is no longer that device; -EBUSY:
 * it or a partition is mounted or otherwise claimed exclusively). A device that some process
 * still holds open goes once it is closed. */
int loop_detach(const LoopDevice *d);

/* Whether d is still configured with a backing file: after loop_detach(), until the last other
 * process that held it open closes it. */
bool loop_is_bound(const LoopDevice *d);

/* Makes d's size follow its backing file's. */
int loop_set_capacity(const LoopDevice *d);

/* The configured loop device number's identity and its backing file's device and inode:
 * -ENXIO when it is not configured. For finding devices again after a restart. */
int loop_identify(unsigned number, LoopDevice *ret, dev_t *ret_backing_dev, ino_t *ret_backing_ino);
