/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* copy_file_range(), SEEK_DATA and SEEK_HOLE. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "copy.h"
#include "log.h"

/* The most one copy_file_range() call moves, and so the most copied between two looks at
 * progress->cancel: a fraction of a second even on a slow disk, and large enough that the
 * per-call cost vanishes next to the copying itself. */
#define COPY_CHUNK (UINT64_C(8) << 20)
/* The buffer of the read/write fallback. */
#define BUFFER_SIZE ((size_t) 1 << 20)
/* Imported blocks of this size that hold only zeros are left as holes. */
#define ZERO_BLOCK ((size_t) 4096)

static const char *const reflink_mode_table[_REFLINK_MODE_MAX] = {
        [REFLINK_AUTO] = "auto",
        [REFLINK_REQUIRE] = "require",
        [REFLINK_NEVER] = "never",
};

const char *reflink_mode_to_string(ReflinkMode m) {
        if ((unsigned) m >= _REFLINK_MODE_MAX)
                return NULL;
        return reflink_mode_table[m];
}

int reflink_mode_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (int i = 0; i < _REFLINK_MODE_MAX; i++)
                if (streq(reflink_mode_table[i], s))
                        return i;
        return -EINVAL;
}

bool progress_cancelled(const CopyProgress *p) {
        return p && (atomic_load_explicit(&p->cancel, memory_order_relaxed) || progress_cancelled(p->job));
}

/* Moves the job p is a step of as far as p has come. */
static void progress_propagate(CopyProgress *p) {
        uint64_t done;

        if (!p->job || p->total == 0)
                return;
        done = MIN(atomic_load_explicit(&p->done, memory_order_relaxed), p->total);
        progress_raise(p->job, p->job_start + (uint64_t) ((long double) done / (long double) p->total *
                                                          (long double) p->job_share));
}

void progress_add(CopyProgress *p, uint64_t n) {
        if (!p)
                return;
        atomic_fetch_add_explicit(&p->done, n, memory_order_relaxed);
        progress_propagate(p);
}

/* Only the copying thread writes done: a load and a store cannot lose an update. */
void progress_raise(CopyProgress *p, uint64_t done) {
        if (!p)
                return;
        if (done > atomic_load_explicit(&p->done, memory_order_relaxed))
                atomic_store_explicit(&p->done, done, memory_order_relaxed);
        progress_propagate(p);
}

int progress_run_step(CopyProgress *progress, uint64_t share, ProgressStep step, void *userdata) {
        uint64_t start = atomic_load(&progress->done);
        CopyProgress p = { .total = share, .job = progress, .job_start = start, .job_share = share };
        int r;

        r = step(userdata, &p);
        if (r >= 0)
                progress_raise(progress, start + share);
        return r;
}

/* The errors with which FICLONE says "not here" rather than "failed", as measured on Linux 6.18:
 *   EOPNOTSUPP  the filesystem cannot share blocks (ext4, tmpfs, xfs without reflink=1), or
 *               src and dst are the same file on ext4;
 *   EXDEV       the files are on different filesystems, or one is a pipe or a device;
 *   EINVAL      ranges the filesystem cannot share (e.g. the same file on xfs);
 *   EBADF       src not open for reading, dst not open for writing or opened O_APPEND.
 * Everything else (EIO, ENOSPC, EDQUOT, EISDIR...) is a real failure, which a fallback copy
 * would only hide or repeat. ENOTTY too: FICLONE is handled by the VFS for every fd since
 * Linux 4.5, so ENOTTY can only come from an older kernel or something that is not a file. */
static bool reflink_unsupported(int error) {
        switch (error) {
        case EBADF:
        case EINVAL:
        case EOPNOTSUPP:
        case EXDEV:
                return true;
        default:
                return false;
        }
}

int copy_reflink(int src_fd, int dst_fd) {
        if (ioctl(dst_fd, FICLONE, src_fd) >= 0)
                return 1;
        if (!reflink_unsupported(errno))
                return -errno;
        log_debug_errno(errno, "Cannot reflink here, a copy is needed: %m");
        return 0;
}

/* The first data range of fd at or after offset, cut at size (fd's size when the copy began):
 * 1 and [*ret_start, *ret_end), or 0 when only a hole remains. */
static int next_data_range(int fd, uint64_t offset, uint64_t size, uint64_t *ret_start, uint64_t *ret_end) {
        off_t data, hole;

        if (offset >= size)
                return 0;
        data = lseek(fd, (off_t) offset, SEEK_DATA);
        if (data < 0)
                return errno == ENXIO ? 0 : -errno;
        if ((uint64_t) data >= size)
                return 0;
        hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0)
                return -errno;

        *ret_start = (uint64_t) data;
        *ret_end = MIN((uint64_t) hole, size);
        return 1;
}

uint64_t copy_data_size(int fd) {
        uint64_t offset = 0, start = 0, end = 0, sum = 0;
        struct stat st;
        int r;

        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;
        while ((r = next_data_range(fd, offset, (uint64_t) st.st_size, &start, &end)) > 0) {
                sum += end - start;
                offset = end;
        }
        /* Only an estimate for progress: when the map cannot be read, the copy will say why. */
        return r < 0 ? (uint64_t) st.st_size : sum;
}

typedef struct Copy {
        int src_fd;
        int dst_fd;
        CopyProgress *progress;
        bool read_write;        /* copy_file_range() refused: copy through buffer */
        void *buffer;
} Copy;

/* Copies from *offset up to end with copy_file_range(), advancing *offset. Stops early, with
 * c->read_write set, when the kernel cannot copy between these files. */
static int copy_in_kernel(Copy *c, uint64_t *offset, uint64_t end) {
        while (*offset < end) {
                loff_t in = (loff_t) *offset, out = (loff_t) *offset;
                ssize_t n;

                n = copy_file_range(c->src_fd, &in, c->dst_fd, &out, end - *offset, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EXDEV && errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
                                return -errno;
                        log_debug_errno(errno, "copy_file_range() refused, copying through a buffer: %m");
                        c->read_write = true;
                        return 0;
                }
                if (n == 0) {
                        /* Inside a data range, so not the end of src: some filesystems report
                         * "nothing copied" instead of an error. read() will tell. */
                        log_debug("copy_file_range() copied nothing, copying through a buffer.");
                        c->read_write = true;
                        return 0;
                }
                *offset += (uint64_t) n;
                progress_add(c->progress, (uint64_t) n);
        }
        return 0;
}

static int write_all_at(int fd, const uint8_t *p, size_t n, uint64_t offset) {
        while (n > 0) {
                ssize_t k = pwrite(fd, p, n, (off_t) offset);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t) k;
                offset += (uint64_t) k;
        }
        return 0;
}

static int copy_through_buffer(Copy *c, uint64_t *offset, uint64_t end) {
        if (!c->buffer) {
                c->buffer = malloc(BUFFER_SIZE);
                if (!c->buffer)
                        return -ENOMEM;
        }

        while (*offset < end) {
                ssize_t n = pread(c->src_fd, c->buffer, MIN(end - *offset, BUFFER_SIZE), (off_t) *offset);
                int r;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)     /* src shrank under us: a committed image never does */
                        return -EIO;
                r = write_all_at(c->dst_fd, c->buffer, (size_t) n, *offset);
                if (r < 0)
                        return r;
                *offset += (uint64_t) n;
                progress_add(c->progress, (uint64_t) n);
        }
        return 0;
}

static int copy_range(Copy *c, uint64_t offset, uint64_t end) {
        while (offset < end) {
                uint64_t chunk_end = MIN(end, offset + COPY_CHUNK);
                int r;

                if (progress_cancelled(c->progress))
                        return -ECANCELED;
                if (!c->read_write) {
                        r = copy_in_kernel(c, &offset, chunk_end);
                        if (r < 0)
                                return r;
                }
                if (c->read_write) {
                        r = copy_through_buffer(c, &offset, chunk_end);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* through_buffer: copy with read and write only, so that no filesystem can share blocks (within
 * one reflink-capable filesystem copy_file_range() clones). */
static int copy_data(int src_fd, int dst_fd, CopyProgress *progress, bool through_buffer) {
        Copy c = { .src_fd = src_fd, .dst_fd = dst_fd, .progress = progress, .read_write = through_buffer };
        uint64_t size, offset = 0, start = 0, end = 0;
        struct stat st, dst_st;
        int r;

        if (fstat(src_fd, &st) < 0 || fstat(dst_fd, &dst_st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || !S_ISREG(dst_st.st_mode))
                return -EINVAL;
        if (st.st_dev == dst_st.st_dev && st.st_ino == dst_st.st_ino)
                return -EINVAL;         /* emptying dst would destroy src */
        if (progress_cancelled(progress))
                return -ECANCELED;

        /* Sizing dst first keeps a trailing hole, which no data range reaches; emptying it first
         * makes sure every hole of src is a hole of dst, whatever dst held. */
        size = (uint64_t) st.st_size;
        if (dst_st.st_size > 0 && ftruncate(dst_fd, 0) < 0)
                return -errno;
        if (ftruncate(dst_fd, st.st_size) < 0)
                return -errno;

        while ((r = next_data_range(src_fd, offset, size, &start, &end)) > 0) {
                r = copy_range(&c, start, end);
                if (r < 0)
                        break;
                offset = end;
        }
        free(c.buffer);
        return r < 0 ? r : 0;
}

int copy_sparse(int src_fd, int dst_fd, CopyProgress *progress) {
        return copy_data(src_fd, dst_fd, progress, false);
}

int copy_file(int src_fd, int dst_fd, ReflinkMode mode, CopyProgress *progress) {
        int r;

        if ((unsigned) mode >= _REFLINK_MODE_MAX)
                return -EINVAL;
        if (progress_cancelled(progress))
                return -ECANCELED;

        if (mode != REFLINK_NEVER) {
                r = copy_reflink(src_fd, dst_fd);
                if (r < 0)
                        return r;
                if (r > 0) {
                        /* All at once: the job is complete. */
                        if (progress)
                                progress_raise(progress, progress->total);
                        return 1;
                }
                if (mode == REFLINK_REQUIRE)
                        return -EOPNOTSUPP;
        }

        /* "never" means blocks of their own, even where the kernel would clone them. */
        r = copy_data(src_fd, dst_fd, progress, mode == REFLINK_NEVER);
        return r < 0 ? r : 0;
}

/* Waits up to 100 ms for fd to take more data; the caller then looks at cancel again. */
static int wait_writable(int fd) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };

        if (poll(&pfd, 1, 100) < 0 && errno != EINTR)
                return -errno;
        return 0;
}

/* Moves up to n bytes from src at *offset into the pipe or socket dst without ever blocking,
 * whatever the caller's flags on dst: a reader that stops reading must not hold the thread
 * past a Cancel. Returns the bytes moved, 0 when dst is full for now. */
static ssize_t stream_some(int src_fd, uint64_t offset, int dst_fd, bool pipe, uint8_t *buffer, size_t n) {
        loff_t in = (loff_t) offset;
        ssize_t k;

        if (pipe)
                k = splice(src_fd, &in, dst_fd, NULL, n, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        else {
                k = pread(src_fd, buffer, n, (off_t) offset);
                if (k <= 0)
                        return k < 0 ? -errno : -EIO;   /* a committed image does not shrink */
                k = send(dst_fd, buffer, (size_t) k, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (k == 0 && pipe)
                return -EIO;
        return k;
}

int copy_stream(int src_fd, int dst_fd, CopyProgress *progress) {
        _cleanup_free_ uint8_t *buffer = malloc(BUFFER_SIZE);
        struct stat src, dst;
        uint64_t offset = 0;

        if (!buffer)
                return -ENOMEM;
        if (fstat(src_fd, &src) < 0 || fstat(dst_fd, &dst) < 0)
                return -errno;
        if (!S_ISFIFO(dst.st_mode) && !S_ISSOCK(dst.st_mode))
                return -EINVAL;
        while (offset < (uint64_t) src.st_size) {
                ssize_t k;
                int r;

                if (progress_cancelled(progress))
                        return -ECANCELED;
                k = stream_some(src_fd, offset, dst_fd, S_ISFIFO(dst.st_mode), buffer,
                                (size_t) MIN((uint64_t) src.st_size - offset, BUFFER_SIZE));
                if (k < 0)
                        return (int) k;
                if (k == 0) {
                        r = wait_writable(dst_fd);
                        if (r < 0)
                                return r;
                        continue;
                }
                offset += (uint64_t) k;
                progress_add(progress, (uint64_t) k);
        }
        return 0;
}

int copy_whole(int src_fd, int dst_fd, CopyProgress *progress) {
        Copy c = { .src_fd = src_fd, .dst_fd = dst_fd, .progress = progress, .read_write = true };
        struct stat st;
        int r;

        if (fstat(src_fd, &st) < 0)
                return -errno;
        if (ftruncate(dst_fd, 0) < 0 || ftruncate(dst_fd, st.st_size) < 0)
                return -errno;
        r = copy_range(&c, 0, (uint64_t) st.st_size);
        free(c.buffer);
        return r;
}

static bool is_zero(const uint8_t *p, size_t n) {
        return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Writes the n bytes of buffer at offset, leaving out the blocks that hold only zeros: dst was
 * sized beforehand, so they stay holes. */
static int write_sparse_at(int fd, const uint8_t *buffer, size_t n, uint64_t offset) {
        size_t run = 0;         /* start of the run of data blocks being gathered */

        for (size_t i = 0; i < n; i += ZERO_BLOCK) {
                size_t len = MIN(ZERO_BLOCK, n - i);
                int r;

                if (!is_zero(buffer + i, len))
                        continue;
                if (i > run) {
                        r = write_all_at(fd, buffer + run, i - run, offset + run);
                        if (r < 0)
                                return r;
                }
                run = i + len;
        }
        return run < n ? write_all_at(fd, buffer + run, n - run, offset + run) : 0;
}

/* Waits up to 100 ms for fd to have data or reach its end: 1 when it does, 0 when the caller
 * should look at cancel and wait again. */
static int wait_readable(int fd) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int n = poll(&pfd, 1, 100);

        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        return n > 0;
}

bool socket_is_stream(int fd) {
        int type;
        socklen_t len = sizeof type;

        return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) >= 0 && type == SOCK_STREAM;
}

/* Reads up to n bytes of the pipe or socket fd as soon as some are there, looking at cancel
 * every 100 ms while none come: a writer that stalls must not hold the thread past a Cancel.
 * Returns the bytes read, 0 at the end of the stream. */
static ssize_t read_stream(int fd, bool socket, uint8_t *buffer, size_t n, CopyProgress *progress) {
        for (;;) {
                ssize_t k;
                int r;

                if (progress_cancelled(progress))
                        return -ECANCELED;
                r = wait_readable(fd);
                if (r <= 0) {
                        if (r < 0)
                                return r;
                        continue;
                }
                k = socket ? recv(fd, buffer, n, MSG_DONTWAIT) : read(fd, buffer, n);
                if (k >= 0)
                        return k;
                if (errno != EAGAIN && errno != EINTR)
                        return -errno;
        }
}

/* Fills buffer with up to n bytes of the stream, fewer only at its end. */
static ssize_t read_stream_full(int fd, bool socket, uint8_t *buffer, size_t n, CopyProgress *progress) {
        size_t got = 0;

        while (got < n) {
                ssize_t k = read_stream(fd, socket, buffer + got, n - got, progress);

                if (k < 0)
                        return k;
                if (k == 0)
                        break;
                got += (size_t) k;
        }
        return (ssize_t) got;
}

static int copy_in_stream(int src_fd, bool socket, int dst_fd, uint64_t size, uint8_t *buffer, CopyProgress *progress) {
        uint64_t offset = 0;
        ssize_t k;

        while (offset < size) {
                int r;

                k = read_stream_full(src_fd, socket, buffer, (size_t) MIN(size - offset, BUFFER_SIZE), progress);
                if (k < 0)
                        return (int) k;
                if (k == 0)
                        return -ENODATA;
                r = write_sparse_at(dst_fd, buffer, (size_t) k, offset);
                if (r < 0)
                        return r;
                offset += (uint64_t) k;
                progress_add(progress, (uint64_t) k);
        }
        /* All of size is in: the stream must end here. */
        k = read_stream(src_fd, socket, buffer, 1, progress);
        if (k < 0)
                return (int) k;
        return k > 0 ? -EMSGSIZE : 0;
}

static int copy_in_file(int src_fd, int dst_fd, uint64_t size, uint8_t *buffer, CopyProgress *progress) {
        uint64_t offset = 0, start = 0, end = 0;
        int r;

        while ((r = next_data_range(src_fd, offset, size, &start, &end)) > 0) {
                for (offset = start; offset < end;) {
                        ssize_t n;

                        if (progress_cancelled(progress))
                                return -ECANCELED;
                        n = pread(src_fd, buffer, (size_t) MIN(end - offset, BUFFER_SIZE), (off_t) offset);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                return -errno;
                        if (n == 0)
                                return -ENODATA;        /* the file shrank under us */
                        r = write_sparse_at(dst_fd, buffer, (size_t) n, offset);
                        if (r < 0)
                                return r;
                        offset += (uint64_t) n;
                        progress_add(progress, (uint64_t) n);
                }
        }
        return r;
}

/* The size of the regular file fd against the size asked for: 0 when equal, else the error of
 * a stream that was too short or too long. */
static int check_file_size(int fd, uint64_t size) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if ((uint64_t) st.st_size == size)
                return 0;
        return (uint64_t) st.st_size < size ? -ENODATA : -EMSGSIZE;
}

int copy_in(int src_fd, int dst_fd, uint64_t size, ReflinkMode mode, CopyProgress *progress) {
        _cleanup_free_ uint8_t *buffer = NULL;
        struct stat st;
        int r;

        if (fstat(src_fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode))
                return -EINVAL;
        if (S_ISSOCK(st.st_mode) && !socket_is_stream(src_fd))
                return -EINVAL;         /* datagrams would lose what does not fit the buffer */
        if (S_ISREG(st.st_mode)) {
                r = check_file_size(src_fd, size);
                if (r < 0)
                        return r;
                r = mode == REFLINK_NEVER ? 0 : copy_reflink(src_fd, dst_fd);
                if (r > 0) {
                        if (progress)
                                progress_raise(progress, progress->total);
                        /* The file's size when it was cloned is what was cloned. */
                        r = check_file_size(dst_fd, size);
                        return r < 0 ? r : 1;
                }
                if (r < 0)
                        return r;
        }
        buffer = malloc(BUFFER_SIZE);
        if (!buffer)
                return -ENOMEM;
        if (ftruncate(dst_fd, 0) < 0 || ftruncate(dst_fd, (off_t) size) < 0)
                return -errno;

        if (S_ISREG(st.st_mode))
                r = copy_in_file(src_fd, dst_fd, size, buffer, progress);
        else
                r = copy_in_stream(src_fd, S_ISSOCK(st.st_mode), dst_fd, size, buffer, progress);
        if (r < 0)
                return r;
        /* A file that grew or shrank while it was read is not what was asked for. */
        return S_ISREG(st.st_mode) ? check_file_size(src_fd, size) : 0;
}
