/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "util.h"

/* Partition tables of attached images, read in userspace with libblkid and checked before any
 * partition device exists: the kernel never parses a guest's table (no partscan), it only gets
 * the partitions cistern found sane, through the BLKPG ioctl. */

#define PARTITIONS_MAX 128

/* The filesystem libblkid finds in size bytes (0: to the end) at offset of fd, into fstype: ""
 * when there is none it knows, or more than one signature. */
void probe_filesystem(int fd, uint64_t offset, uint64_t size, char *fstype, size_t len);

typedef struct Partition {
        unsigned number;        /* as in the table: 1…, logical MBR partitions from 5 */
        uint64_t start;         /* bytes */
        uint64_t size;          /* bytes */
        char fstype[32];        /* what libblkid finds inside, "" when nothing it knows */
        dev_t devnum;           /* the partition's device, once it exists */
} Partition;

/* Reads and checks the partition table of the disk open as fd, of size bytes: at most
 * PARTITIONS_MAX entries, each inside the disk, none overlapping another, starts and sizes in
 * whole 512-byte sectors, numbers the kernel accepts. The table must be the only one, and must
 * hold nothing libblkid skipped: no MBR of other partitions with a GPT (hybrids included), no
 * GPT header with an MBR or any other table, every GPT header (primary and backup) sound and
 * listing exactly the partitions libblkid reported. No table is 0 partitions. A table that
 * breaks a rule is -EBADMSG (UnsafeImage). The extended container of MBR logical partitions is
 * left out. */
int partitions_read(int fd, uint64_t size, Partition **ret, size_t *ret_n);

/* Creates the block devices of the partitions on the disk open as fd (sysname "loopN") and
 * fills in their devnum; on failure removes those it created. */
int partitions_add(int fd, const char *sysname, Partition *p, size_t n);

/* The partition devices the disk open as fd (sysname "loopN") has, as sysfs lists them, with
 * what libblkid finds inside each. */
int partitions_list(int fd, const char *sysname, Partition **ret, size_t *ret_n);

/* Removes every partition device of the disk open as fd: -EBUSY when one is in use (mounted),
 * after removing what it could. */
int partitions_remove_all(int fd, const char *sysname);
