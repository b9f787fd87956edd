/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdatomic.h>

#include "util.h"

/* The copy engine of the dir driver. A reflink (FICLONE) shares all blocks at once; when the
 * filesystem cannot reflink, a sparse copy moves only the data, leaving holes as holes. The
 * fallback is taken only for the errors that mean "cannot reflink here" (EBADF, EINVAL,
 * EOPNOTSUPP, EXDEV): anything else may be a real storage error and fails the copy. */

typedef enum ReflinkMode {
        REFLINK_AUTO,           /* reflink, else sparse copy */
        REFLINK_REQUIRE,        /* reflink or fail */
        REFLINK_NEVER,          /* always a sparse copy through read and write: no shared blocks */
        _REFLINK_MODE_MAX,
} ReflinkMode;

const char *reflink_mode_to_string(ReflinkMode m);
int reflink_mode_from_string(const char *s);   /* ReflinkMode or -EINVAL */

/* Shared between the copying thread and the event loop: the thread adds to done, the loop
 * reads it for Job progress and sets cancel. */
typedef struct CopyProgress {
        uint64_t total;                 /* bytes to copy, set before the copy starts */
        _Atomic uint64_t done;
        atomic_bool cancel;
        /* A step of a larger job (progress_run_step()): the share of the job's progress from
         * job_start on that this step's done moves, in proportion to total. */
        struct CopyProgress *job;
        uint64_t job_start, job_share;
} CopyProgress;

/* What the copying thread reports, on p and through it on the job it is a step of: n more bytes
 * done, or done raised to at least done (never lowered). p may be NULL. */
void progress_add(CopyProgress *p, uint64_t n);
void progress_raise(CopyProgress *p, uint64_t done);
/* Whether p, or the job it is a step of, was cancelled. */
bool progress_cancelled(const CopyProgress *p);

/* For work in steps (stage, then convert): runs step(userdata, p) as the next share bytes of
 * progress. The step reports on p, a progress of its own whose total starts as share (the step
 * may set it, say to an image's size, before it reports), which moves progress in proportion;
 * progress's cancel reaches the step. On success progress ends share bytes further on. */
typedef int (*ProgressStep)(void *userdata, CopyProgress *p);
int progress_run_step(CopyProgress *progress, uint64_t share, ProgressStep step, void *userdata);

/* FICLONE src onto dst. 1 done; 0 the filesystem cannot reflink these files (the fallback
 * errors above); negative errno on any other failure. */
int copy_reflink(int src_fd, int dst_fd);

/* Copies the regular file src into the empty regular file dst (anything dst held is dropped):
 * dst gets src's size, data ranges found with SEEK_DATA/SEEK_HOLE are copied with
 * copy_file_range() (through a buffer where the kernel cannot copy between the two files),
 * holes stay holes. Checks progress->cancel between chunks of at most 8 MiB (-ECANCELED) and
 * adds the data bytes copied to progress->done; progress may be NULL. -EINVAL when either file
 * is not regular or both are the same file. Moves src's file offset; does not fsync.
 * On a filesystem that can reflink (xfs, btrfs), copy_file_range() itself shares the blocks
 * within one filesystem, and it has no flag against that. */
int copy_sparse(int src_fd, int dst_fd, CopyProgress *progress);

/* Streams all of src, holes as zeros, into the pipe or socket dst, never blocking on dst
 * whatever its flags (a stalled reader cannot hold the thread past a Cancel). Checks
 * progress->cancel between blocks of at most 1 MiB and counts them in progress->done. */
int copy_stream(int src_fd, int dst_fd, CopyProgress *progress);

/* Copies all of src into the regular file dst from its start, holes written as zeros; dst is
 * emptied first and ends with src's size. */
int copy_whole(int src_fd, int dst_fd, CopyProgress *progress);

/* A reflink or a sparse copy as mode says. Returns 1 when reflinked (progress->done is then
 * raised to progress->total), 0 when copied. REFLINK_NEVER copies through read and write, so
 * that the copy has blocks of its own even there; REFLINK_REQUIRE where the filesystem cannot
 * reflink is -EOPNOTSUPP. The fds stay the caller's; a failed copy leaves dst for the caller to
 * discard. */
int copy_file(int src_fd, int dst_fd, ReflinkMode mode, CopyProgress *progress);

/* Whether the socket fd carries a byte stream (SOCK_STREAM), not datagrams or records. */
bool socket_is_stream(int fd);

/* Fills the new object dst with exactly size bytes read from a caller's src, for Import:
 *   - a regular file, which must be size bytes long: reflinked unless mode is REFLINK_NEVER
 *     (REFLINK_REQUIRE is taken as REFLINK_AUTO: a caller's file may lie anywhere), else read
 *     from its start, its holes skipped;
 *   - a pipe or stream socket: read until its end, never blocking past a cancel, whatever its
 *     flags.
 * Blocks of 4 KiB that hold only zeros become holes. -ENODATA when src holds fewer than size
 * bytes, -EMSGSIZE when it holds more (a file checked before and after), -EINVAL for any other
 * kind of fd. Returns 1 when reflinked, 0 when copied; does not fsync. */
int copy_in(int src_fd, int dst_fd, uint64_t size, ReflinkMode mode, CopyProgress *progress);

/* The bytes in fd's data ranges (SEEK_DATA/SEEK_HOLE), what copy_sparse() will add to
 * progress->done: for setting progress->total. Only an estimate: fd's size when the map cannot
 * be read, 0 when fd is not a regular file. Moves fd's file offset. */
uint64_t copy_data_size(int fd);
