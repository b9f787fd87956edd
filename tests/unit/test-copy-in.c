/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* copy_in(), what Import fills a new volume with: a caller's regular file, pipe or socket. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <time.h>
#include <cmocka.h>

#include "copy.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define BLOCK (4 * KiB)
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* How long a stream copy may take before the test calls it stuck, and how long a Cancel may
 * take to stop a stalled one: generous, so that a slow CI machine never makes them flaky. */
#define COPY_DEADLINE (10 * USEC_PER_SEC)
#define CANCEL_DEADLINE (5 * USEC_PER_SEC)
#define TIMED_OUT INT_MIN

/* Linked with -Wl,--wrap=ioctl,--wrap=pread64,--wrap=pwrite64 (see meson.build; pread() and
 * pwrite() are the 64-bit ones meson builds with): copy.c's calls land here and pass through to
 * the kernel unless a test says otherwise. setup() resets everything. */
int __real_ioctl(int fd, unsigned long request, ...);
ssize_t __real_pread64(int fd, void *buf, size_t count, off_t offset);
ssize_t __real_pwrite64(int fd, const void *buf, size_t count, off_t offset);

static unsigned ficlone_calls;
static int ficlone_errno;               /* FICLONE fails with this; 0: the real ioctl */
static bool ficlone_fake;               /* FICLONE "reflinks": dst becomes a copy of src... */
static int64_t ficlone_fake_size;       /* ...of this size, when >= 0 (src changed meanwhile) */

static int pread_fd = -EBADF;           /* only reads of this fd are counted and hooked */
static unsigned pread_calls;
static int64_t pread_resize = -1;       /* the first read truncates pread_fd to this first */

static int pwrite_fd = -EBADF;          /* only writes to this fd misbehave */
static int pwrite_errno;                /* every write fails with this; 0: never */
static size_t pwrite_max;               /* write at most this many bytes per call; 0: all */
static bool pwrite_eintr_once;
static unsigned pwrite_calls;

/* What a reflink looks like to copy_in(): dst holds src's bytes, in one call. */
static int fake_reflink(int dst, int src) {
        struct stat st;
        loff_t in = 0, out = 0;

        if (fstat(src, &st) < 0 || ftruncate(dst, 0) < 0 || ftruncate(dst, st.st_size) < 0)
                return -1;
        while (in < st.st_size) {
                ssize_t n = copy_file_range(src, &in, dst, &out, (size_t) (st.st_size - in), 0);

                if (n <= 0)
                        return -1;
        }
        if (ficlone_fake_size >= 0 && ftruncate(dst, (off_t) ficlone_fake_size) < 0)
                return -1;
        return 0;
}

int __wrap_ioctl(int fd, unsigned long request, ...) {
        va_list ap;
        unsigned long arg;

        va_start(ap, request);
        arg = va_arg(ap, unsigned long);
        va_end(ap);

        if (request == FICLONE) {
                ficlone_calls++;
                if (ficlone_errno != 0) {
                        errno = ficlone_errno;
                        return -1;
                }
                if (ficlone_fake)
                        return fake_reflink(fd, (int) arg);
        }
        return __real_ioctl(fd, request, arg);
}

ssize_t __wrap_pread64(int fd, void *buf, size_t count, off_t offset) {
        if (fd == pread_fd) {
                pread_calls++;
                if (pread_resize >= 0) {
                        if (ftruncate(fd, (off_t) pread_resize) < 0)
                                return -1;
                        pread_resize = -1;
                }
        }
        return __real_pread64(fd, buf, count, offset);
}

ssize_t __wrap_pwrite64(int fd, const void *buf, size_t count, off_t offset) {
        if (fd != pwrite_fd)
                return __real_pwrite64(fd, buf, count, offset);
        pwrite_calls++;
        if (pwrite_errno != 0) {
                errno = pwrite_errno;
                return -1;
        }
        if (pwrite_eintr_once) {
                pwrite_eintr_once = false;
                errno = EINTR;
                return -1;
        }
        if (pwrite_max > 0 && count > pwrite_max)
                count = pwrite_max;
        return __real_pwrite64(fd, buf, count, offset);
}

static void reset_mocks(void) {
        ficlone_calls = 0;
        ficlone_errno = 0;
        ficlone_fake = false;
        ficlone_fake_size = -1;
        pread_fd = -EBADF;
        pread_calls = 0;
        pread_resize = -1;
        pwrite_fd = -EBADF;
        pwrite_errno = 0;
        pwrite_max = 0;
        pwrite_eintr_once = false;
        pwrite_calls = 0;
}

static usec_t monotonic_usec(void) {
        struct timespec ts;

        assert_int_equal(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

/* Writes an image into one end of a pipe or socket from its own thread, in chunks of odd sizes
 * so that the reader's buffers never line up with them, then closes that end. Owns fd. */
typedef struct Feeder {
        pthread_t thread;
        bool running;
        int fd;
        bool socket;
        const uint8_t *data;
        size_t size;
        useconds_t pause;       /* between chunks, so that the reader finds the stream empty */
        size_t chunk;           /* every chunk this size (a record, on a SOCK_SEQPACKET); 0: odd sizes */
        size_t written;
        int error;              /* errno of the write that failed, e.g. EPIPE after the reader left */
} Feeder;

static void *feeder_main(void *userdata) {
        static const size_t chunks[] = { 1, 4099, 65537, 511, 12345, 3, 262147 };
        Feeder *fe = userdata;

        for (size_t i = 0; fe->written < fe->size; i++) {
                size_t n = MIN(fe->chunk > 0 ? fe->chunk : chunks[i % ELEMENTSOF(chunks)], fe->size - fe->written);
                ssize_t k;

                k = fe->socket ? send(fe->fd, fe->data + fe->written, n, MSG_NOSIGNAL)
                               : write(fe->fd, fe->data + fe->written, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        fe->error = errno;
                        break;
                }
                fe->written += (size_t) k;
                if (fe->pause > 0)
                        usleep(fe->pause);
        }
        fe->fd = safe_close(fe->fd);
        return NULL;
}

struct fixture {
        char dir[64];           /* the temporary directory, on /tmp */
        int dir_fd;
        int src, dst;           /* regular files <dir>/src and <dir>/dst */
        int rd, wr;             /* a pipe or socket pair, when a test makes one */
        Feeder feeder;          /* writes into wr, which it then owns */
        size_t record;          /* the feeder's chunks all this size; 0: odd sizes */
        uint8_t *image;         /* what src or the stream holds */
};

static int nftw_remove(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof *f);

        if (!f)
                return -1;
        reset_mocks();
        f->src = f->dst = f->rd = f->wr = f->feeder.fd = -EBADF;
        strcpy(f->dir, "/tmp/cistern-test-copy-in.XXXXXX");
        if (!mkdtemp(f->dir)) {
                free(f);
                return -1;
        }
        f->dir_fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        f->src = openat(f->dir_fd, "src", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        f->dst = openat(f->dir_fd, "dst", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        *state = f;
        return f->dir_fd >= 0 && f->src >= 0 && f->dst >= 0 ? 0 : -1;
}

/* Closing the read end first makes a feeder that still writes fail with EPIPE and end. */
static void feeder_stop(struct fixture *f) {
        f->rd = safe_close(f->rd);
        if (f->feeder.running) {
                pthread_join(f->feeder.thread, NULL);
                f->feeder.running = false;
        }
}

static int teardown(void **state) {
        struct fixture *f = *state;
        int r;

        feeder_stop(f);
        safe_close(f->wr);
        safe_close(f->src);
        safe_close(f->dst);
        safe_close(f->dir_fd);
        free(f->image);
        /* Deliberately not anything from copy.c: cleanup must not depend on the code under test. */
        r = nftw(f->dir, nftw_remove, 16, FTW_DEPTH | FTW_PHYS);
        free(f);
        return r;
}

/* A source: where its data lies, where it holds zeros that were written (allocated in a file);
 * everything else is a hole (zeros in a stream). A later segment overwrites an earlier one. */
typedef struct Segment {
        uint64_t offset, length;
        bool zeros;
} Segment;

typedef struct Image {
        uint64_t size;
        size_t n_segments;
        Segment segments[8];
} Image;

/* Never zero, and different at every offset within 128 KiB, so that a misplaced byte shows. */
static uint8_t pattern(uint64_t offset) {
        return (uint8_t) (((offset >> 9) * 37 + offset) | 1);
}

/* f->image: the bytes of im. */
static const uint8_t *make_image(struct fixture *f, const Image *im) {
        free(f->image);
        f->image = calloc(1, MAX(im->size, 1));
        assert_non_null(f->image);
        for (size_t i = 0; i < im->n_segments; i++) {
                const Segment *s = &im->segments[i];

                assert_true(s->offset + s->length <= im->size);
                for (uint64_t o = s->offset; o < s->offset + s->length; o++)
                        f->image[o] = s->zeros ? 0 : pattern(o);
        }
        return f->image;
}

/* f->src holding im, its zero segments written as zeros, everything else a hole. */
static void make_source_file(struct fixture *f, const Image *im) {
        make_image(f, im);
        assert_int_equal(ftruncate(f->src, (off_t) im->size), 0);
        for (size_t i = 0; i < im->n_segments; i++) {
                const Segment *s = &im->segments[i];

                assert_int_equal(pwrite(f->src, f->image + s->offset, s->length, (off_t) s->offset),
                                 (ssize_t) s->length);
        }
}

typedef struct Range {
        uint64_t start, end;
} Range;

#define MAX_RANGES 64

/* The data ranges of fd as the filesystem reports them, independently of copy.c. */
static size_t data_map(int fd, Range *ranges) {
        off_t size = lseek(fd, 0, SEEK_END), offset = 0;
        size_t n = 0;

        assert_true(size >= 0);
        while (offset < size) {
                off_t data = lseek(fd, offset, SEEK_DATA), hole;

                if (data < 0 && errno == ENXIO)
                        break;
                assert_true(data >= 0);
                hole = lseek(fd, data, SEEK_HOLE);
                assert_true(hole > data);
                assert_true(n < MAX_RANGES);
                ranges[n++] = (Range) { (uint64_t) data, (uint64_t) hole };
                offset = hole;
        }
        return n;
}

static uint64_t map_bytes(const Range *ranges, size_t n) {
        uint64_t sum = 0;

        for (size_t i = 0; i < n; i++)
                sum += ranges[i].end - ranges[i].start;
        return sum;
}

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i] != 0)
                        return false;
        return true;
}

/* What copy_in() must leave: every 4 KiB block of the file (the last one maybe shorter) that
 * holds a non-zero byte is data, every other one a hole. */
static size_t expected_map(const uint8_t *image, uint64_t size, Range *ranges) {
        size_t n = 0;

        for (uint64_t o = 0; o < size; o += BLOCK) {
                uint64_t end = MIN(o + BLOCK, size);

                if (all_zero(image + o, end - o))
                        continue;
                if (n > 0 && ranges[n - 1].end == o)
                        ranges[n - 1].end = end;
                else {
                        assert_true(n < MAX_RANGES);
                        ranges[n++] = (Range) { o, end };
                }
        }
        return n;
}

static void print_map(const char *what, const Range *ranges, size_t n) {
        print_message("%s:", what);
        for (size_t i = 0; i < n; i++)
                print_message(" [%" PRIu64 ", %" PRIu64 ")", ranges[i].start, ranges[i].end);
        print_message("\n");
}

/* dst holds exactly f->image's size bytes, and its holes are its blocks of zeros. */
static void assert_dst_is_image(struct fixture *f, uint64_t size) {
        static Range want[MAX_RANGES], got[MAX_RANGES];
        uint8_t *buf = malloc(MAX(size, 1));
        size_t n_want, n_got;

        assert_non_null(buf);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), (off_t) size);
        assert_int_equal(pread(f->dst, buf, size, 0), (ssize_t) size);
        assert_memory_equal(buf, f->image, size);
        free(buf);

        n_want = expected_map(f->image, size, want);
        n_got = data_map(f->dst, got);
        if (n_want != n_got || memcmp(want, got, n_want * sizeof(Range)) != 0) {
                print_map("expected data", want, n_want);
                print_map("dst data", got, n_got);
                fail_msg("dst's holes are not its blocks of zeros");
        }
}

/* A pipe (O_NONBLOCK on the read end when asked) or a stream socket pair: f->rd and f->wr. */
static void make_pipe(struct fixture *f, bool nonblocking) {
        int p[2];

        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        f->rd = p[0];
        f->wr = p[1];
        if (nonblocking)
                assert_int_equal(fcntl(f->rd, F_SETFL, O_NONBLOCK), 0);
}

static void make_socketpair(struct fixture *f, int type) {
        int s[2];

        assert_int_equal(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, s), 0);
        f->rd = s[0];
        f->wr = s[1];
}

/* Hands f->wr to a feeder that writes n bytes of f->image (or of a copy of it extended with
 * pattern bytes, when n is larger than image_size), then closes it. */
static void feed(struct fixture *f, uint64_t image_size, uint64_t n, useconds_t pause) {
        struct stat st;

        if (n > image_size) {
                uint8_t *more = realloc(f->image, n);

                assert_non_null(more);
                for (uint64_t o = image_size; o < n; o++)
                        more[o] = pattern(o);
                f->image = more;
        }
        assert_int_equal(fstat(f->wr, &st), 0);
        f->feeder = (Feeder) {
                .fd = TAKE_FD(f->wr),
                .socket = S_ISSOCK(st.st_mode),
                .data = f->image,
                .size = n,
                .pause = pause,
                .chunk = f->record,
        };
        assert_int_equal(pthread_create(&f->feeder.thread, NULL, feeder_main, &f->feeder), 0);
        f->feeder.running = true;
}

/* copy_in() in a thread of its own, so that a copy that never returns fails the test instead
 * of hanging it. */
typedef struct Copier {
        pthread_t thread;
        int src, dst;
        uint64_t size;
        ReflinkMode mode;
        CopyProgress *progress;
        int r;
        int done_fd;            /* an eventfd, written when copy_in() returned */
        usec_t started, returned;
} Copier;

static void *copier_main(void *userdata) {
        Copier *c = userdata;

        c->r = copy_in(c->src, c->dst, c->size, c->mode, c->progress);
        c->returned = monotonic_usec();
        (void) eventfd_write(c->done_fd, 1);
        return NULL;
}

static void copier_start(Copier *c) {
        c->done_fd = eventfd(0, EFD_CLOEXEC);
        assert_true(c->done_fd >= 0);
        c->started = monotonic_usec();
        assert_int_equal(pthread_create(&c->thread, NULL, copier_main, c), 0);
}

static bool copier_wait(Copier *c, usec_t timeout) {
        struct pollfd pfd = { .fd = c->done_fd, .events = POLLIN };
        int r;

        do
                r = poll(&pfd, 1, (int) (timeout / USEC_PER_MSEC));
        while (r < 0 && errno == EINTR);
        return r > 0;
}

/* Waits for copy_in() to return, at most timeout; past that, cancels it and ends the stream
 * (a copy_in() blocked in read() gets its end only so), and returns TIMED_OUT once the thread is
 * gone. Nothing may fail before the thread is joined: it uses the fixture's fds. */
static int copier_finish(struct fixture *f, Copier *c, usec_t timeout) {
        bool returned = copier_wait(c, timeout);

        if (!returned) {
                if (c->progress)
                        atomic_store(&c->progress->cancel, true);
                f->wr = safe_close(f->wr);
                if (f->feeder.running)
                        shutdown(f->rd, SHUT_RDWR);     /* a socket's reader sees its end */
        }
        pthread_join(c->thread, NULL);
        close(c->done_fd);
        return returned ? c->r : TIMED_OUT;
}

/* copy_in() from the stream f->rd, bounded; closes f->rd afterwards and waits for the feeder. */
static int stream_copy_in(struct fixture *f, uint64_t size, CopyProgress *progress) {
        Copier c = { .src = f->rd, .dst = f->dst, .size = size, .mode = REFLINK_AUTO, .progress = progress };
        int r;

        copier_start(&c);
        r = copier_finish(f, &c, COPY_DEADLINE);
        feeder_stop(f);
        if (r == TIMED_OUT)
                fail_msg("copy_in() did not return within %" PRIu64 " s", COPY_DEADLINE / USEC_PER_SEC);
        return r;
}

/* ---- regular files ---- */

/* Data at the start, a run of zeros within a data range (aligned, and one that is not), a hole,
 * a written extent of zeros, data, and a trailing hole. */
static const Image mixed_file = {
        .size = 12 * MiB,
        .n_segments = 6,
        .segments = {
                { 0, 1536 * KiB },
                { 300 * KiB, 40 * KiB, .zeros = true },                 /* 4 KiB aligned */
                { 400 * KiB + 100, 6000, .zeros = true },               /* not: stays data */
                { 5 * MiB, 1 * MiB, .zeros = true },
                { 7 * MiB, 8 * KiB },
                { 7 * MiB + 8 * KiB, 4 * KiB, .zeros = true },
        },
};

static void file_copy_is_identical_with_zero_blocks_as_holes(void **state) {
        static Range src_map[MAX_RANGES];
        struct fixture *f = *state;
        CopyProgress progress = { .total = mixed_file.size };

        make_source_file(f, &mixed_file);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_NEVER, &progress), 0);

        assert_dst_is_image(f, mixed_file.size);
        /* The explicit zeros inside the first data range are a hole in dst, and nothing after
         * the last data block is allocated: the trailing hole stays. */
        assert_int_equal(lseek(f->dst, 300 * KiB, SEEK_HOLE), 300 * KiB);
        assert_int_equal(lseek(f->dst, 340 * KiB, SEEK_DATA), 340 * KiB);
        assert_int_equal(lseek(f->dst, 7 * MiB + 8 * KiB, SEEK_HOLE), 7 * MiB + 8 * KiB);
        assert_int_equal(lseek(f->dst, 7 * MiB + 8 * KiB, SEEK_DATA), -1);
        assert_int_equal(errno, ENXIO);
        /* Every data range of src was read, written zeros included; no hole was. */
        assert_int_equal(atomic_load(&progress.done), map_bytes(src_map, data_map(f->src, src_map)));
        assert_true(atomic_load(&progress.done) < mixed_file.size);
}

static void file_copy_keeps_an_unaligned_tail(void **state) {
        static const Image data_tail = {
                .size = 3 * MiB + 1536,
                .n_segments = 2,
                .segments = { { 0, 4 * KiB }, { 3 * MiB - 4 * KiB, 4 * KiB + 1536 } },
        };
        static const Image zero_tail = {
                .size = 3 * MiB + 1536,
                .n_segments = 2,
                .segments = { { 0, 4 * KiB }, { 3 * MiB - 4 * KiB, 4 * KiB + 1536, .zeros = true } },
        };
        struct fixture *f = *state;

        make_source_file(f, &data_tail);
        assert_int_equal(copy_in(f->src, f->dst, data_tail.size, REFLINK_NEVER, NULL), 0);
        assert_dst_is_image(f, data_tail.size);

        make_source_file(f, &zero_tail);
        assert_int_equal(copy_in(f->src, f->dst, zero_tail.size, REFLINK_NEVER, NULL), 0);
        assert_dst_is_image(f, zero_tail.size);
        assert_int_equal(lseek(f->dst, 4 * KiB, SEEK_DATA), -1);
}

static void file_copy_leaves_nothing_of_what_dst_held(void **state) {
        static const Image im = { .size = 2 * MiB, .n_segments = 1, .segments = { { 1 * MiB, 4 * KiB } } };
        struct fixture *f = *state;
        uint8_t junk[8 * KiB];

        memset(junk, 0xaa, sizeof junk);
        assert_int_equal(pwrite(f->dst, junk, sizeof junk, 0), (ssize_t) sizeof junk);
        assert_int_equal(pwrite(f->dst, junk, sizeof junk, 5 * MiB), (ssize_t) sizeof junk);
        make_source_file(f, &im);
        assert_int_equal(copy_in(f->src, f->dst, im.size, REFLINK_NEVER, NULL), 0);
        assert_dst_is_image(f, im.size);
}

static void empty_file_gives_an_empty_object(void **state) {
        struct fixture *f = *state;

        assert_int_equal(copy_in(f->src, f->dst, 0, REFLINK_NEVER, NULL), 0);
        assert_int_equal(copy_in(f->src, f->dst, 0, REFLINK_AUTO, NULL), 0);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static const char *fs_name(int fd) {
        struct statfs sf;

        assert_int_equal(fstatfs(fd, &sf), 0);
        switch ((unsigned long) sf.f_type) {
        case EXT4_SUPER_MAGIC:          /* also ext2 and ext3 */
                return "ext4";
        case TMPFS_MAGIC:
                return "tmpfs";
        case XFS_SUPER_MAGIC:
                return "xfs";
        case BTRFS_SUPER_MAGIC:
                return "btrfs";
        default:
                return "other";
        }
}

/* On /tmp as it is: "never" copies without trying FICLONE; "auto", and "require" which copy_in()
 * takes as "auto", reflink where the filesystem can and copy where it cannot (ext4, tmpfs). */
static void file_copy_on_the_local_fs_reflinks_only_where_it_can(void **state) {
        struct fixture *f = *state;
        CopyProgress progress = { .total = mixed_file.size };
        int r;

        make_source_file(f, &mixed_file);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_NEVER, &progress), 0);
        assert_int_equal(ficlone_calls, 0);
        assert_dst_is_image(f, mixed_file.size);

        for (ReflinkMode m = REFLINK_AUTO; m <= REFLINK_REQUIRE; m++) {
                assert_int_equal(ftruncate(f->dst, 0), 0);
                ficlone_calls = 0;
                r = copy_in(f->src, f->dst, mixed_file.size, m, NULL);
                print_message("/tmp is %s: copy_in(%s) = %d\n", fs_name(f->dst), reflink_mode_to_string(m), r);
                assert_int_equal(ficlone_calls, 1);
                if (streq(fs_name(f->dst), "ext4") || streq(fs_name(f->dst), "tmpfs"))
                        assert_int_equal(r, 0);
                else
                        assert_true(r == 0 || r == 1);
                if (r == 0)
                        assert_dst_is_image(f, mixed_file.size);
                else {
                        /* A clone is a clone of the holes too: only the content can be held
                         * against the image. */
                        uint8_t *buf = malloc(mixed_file.size);

                        assert_non_null(buf);
                        assert_int_equal(pread(f->dst, buf, mixed_file.size, 0), (ssize_t) mixed_file.size);
                        assert_memory_equal(buf, f->image, mixed_file.size);
                        free(buf);
                }
        }
}

static void reflinked_file_returns_1_without_reading(void **state) {
        struct fixture *f = *state;
        CopyProgress progress = { .total = mixed_file.size };

        make_source_file(f, &mixed_file);
        ficlone_fake = true;
        pread_fd = f->src;
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_AUTO, &progress), 1);
        assert_int_equal(ficlone_calls, 1);
        assert_int_equal(pread_calls, 0);
        assert_int_equal(atomic_load(&progress.done), progress.total);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), (off_t) mixed_file.size);

        /* "require" is "auto" for a caller's file: reflinked here too. */
        atomic_store(&progress.done, 0);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_REQUIRE, &progress), 1);
        assert_int_equal(atomic_load(&progress.done), progress.total);
}

/* The file was checked before FICLONE, but may have changed before it ran: what was cloned is
 * held against size too. */
static void reflinked_file_of_the_wrong_size_fails(void **state) {
        struct fixture *f = *state;

        make_source_file(f, &mixed_file);
        ficlone_fake = true;
        ficlone_fake_size = (int64_t) (mixed_file.size - 512);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_AUTO, NULL), -ENODATA);
        ficlone_fake_size = (int64_t) (mixed_file.size + 512);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_AUTO, NULL), -EMSGSIZE);
}

static void reflink_refusals_fall_back_to_a_copy(void **state) {
        static const int refusals[] = { EBADF, EINVAL, EOPNOTSUPP, EXDEV };
        struct fixture *f = *state;

        make_source_file(f, &mixed_file);
        for (size_t i = 0; i < ELEMENTSOF(refusals); i++) {
                ficlone_errno = refusals[i];
                assert_int_equal(ftruncate(f->dst, 0), 0);
                assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_REQUIRE, NULL), 0);
                assert_dst_is_image(f, mixed_file.size);
        }
}

static void reflink_errors_fail_the_copy(void **state) {
        static const int errors[] = { EIO, ENOSPC, EDQUOT };
        struct fixture *f = *state;

        make_source_file(f, &mixed_file);
        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                ficlone_errno = errors[i];
                assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_AUTO, NULL), -errors[i]);
        }
}

static void file_of_the_wrong_size_fails_without_reading(void **state) {
        static const Image im = { .size = 1 * MiB, .n_segments = 1, .segments = { { 0, 1 * MiB } } };
        static const struct {
                uint64_t size;
                int error;
        } cases[] = {
                { 1 * MiB + 512, -ENODATA },
                { 2 * MiB, -ENODATA },
                { 1 * MiB - 512, -EMSGSIZE },
                { 0, -EMSGSIZE },
        };
        struct fixture *f = *state;

        make_source_file(f, &im);
        pread_fd = f->src;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                for (ReflinkMode m = 0; m < _REFLINK_MODE_MAX; m++) {
                        CopyProgress progress = { .total = cases[i].size };

                        assert_int_equal(copy_in(f->src, f->dst, cases[i].size, m, &progress), cases[i].error);
                        assert_int_equal(atomic_load(&progress.done), 0);
                }
        assert_int_equal(pread_calls, 0);
        assert_int_equal(ficlone_calls, 0);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static void file_that_grows_or_shrinks_while_read_fails(void **state) {
        static const Image im = { .size = 3 * MiB, .n_segments = 1, .segments = { { 0, 3 * MiB } } };
        struct fixture *f = *state;

        make_source_file(f, &im);
        pread_fd = f->src;
        pread_resize = (int64_t) (im.size + 4 * KiB);
        assert_int_equal(copy_in(f->src, f->dst, im.size, REFLINK_NEVER, NULL), -EMSGSIZE);

        assert_int_equal(ftruncate(f->src, (off_t) im.size), 0);
        pread_resize = (int64_t) (im.size / 2);
        assert_int_equal(copy_in(f->src, f->dst, im.size, REFLINK_NEVER, NULL), -ENODATA);
}

/* ---- pipes and sockets ---- */

/* More than the 1 MiB buffer, a tail of 512 bytes after the last whole block; zeros that are
 * whole blocks, within data, a long run of them, and at the end. */
static const Image mixed_stream = {
        .size = 3 * MiB + 1536,
        .n_segments = 4,
        .segments = {
                { 0, 1 * MiB + 3 * KiB },
                { 128 * KiB, 8 * KiB, .zeros = true },
                { 1 * MiB + 200 * KiB + 17, 1 * MiB },
                { 3 * MiB - 4 * KiB, 4 * KiB + 1000 },
        },
};

static void check_stream(struct fixture *f, useconds_t pause) {
        CopyProgress progress = { .total = mixed_stream.size };

        make_image(f, &mixed_stream);
        feed(f, mixed_stream.size, mixed_stream.size, pause);
        assert_int_equal(stream_copy_in(f, mixed_stream.size, &progress), 0);
        assert_int_equal(f->feeder.error, 0);
        assert_dst_is_image(f, mixed_stream.size);
        assert_int_equal(atomic_load(&progress.done), mixed_stream.size);
}

static void pipe_copy_is_identical_with_zero_blocks_as_holes(void **state) {
        struct fixture *f = *state;

        make_pipe(f, false);
        check_stream(f, 0);
}

static void nonblocking_pipe_copy_is_identical(void **state) {
        struct fixture *f = *state;

        /* The feeder pauses, so that the reader finds the pipe empty and read() says EAGAIN. */
        make_pipe(f, true);
        check_stream(f, 200);
}

static void socket_copy_is_identical_with_zero_blocks_as_holes(void **state) {
        struct fixture *f = *state;

        make_socketpair(f, SOCK_STREAM);
        check_stream(f, 0);
}

static void stream_of_zeros_allocates_nothing_and_counts_every_byte(void **state) {
        static const Image zeros = { .size = 2 * MiB + 512 };
        struct fixture *f = *state;
        CopyProgress progress = { .total = zeros.size };
        struct stat st;

        make_pipe(f, false);
        make_image(f, &zeros);
        feed(f, zeros.size, zeros.size, 0);
        assert_int_equal(stream_copy_in(f, zeros.size, &progress), 0);
        assert_dst_is_image(f, zeros.size);
        assert_int_equal(fstat(f->dst, &st), 0);
        assert_int_equal(st.st_blocks, 0);
        assert_int_equal(atomic_load(&progress.done), zeros.size);
}

static void short_stream_is_enodata(void **state) {
        static const uint64_t shortfalls[] = { 1, 4 * KiB + 7, 1 * MiB, 1 * MiB + 1, 3 * MiB + 1536 };
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(shortfalls); i++) {
                make_pipe(f, false);
                make_image(f, &mixed_stream);
                feed(f, mixed_stream.size, mixed_stream.size - shortfalls[i], 0);
                assert_int_equal(stream_copy_in(f, mixed_stream.size, NULL), -ENODATA);
                assert_int_equal(f->feeder.error, 0);
        }
}

static void long_stream_is_emsgsize(void **state) {
        /* One byte more, less than a pipe's capacity more, and more than the pipe holds, which
         * leaves the feeder blocked until the reader goes. */
        static const uint64_t surpluses[] = { 1, 5000, 2 * MiB };
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(surpluses); i++) {
                make_pipe(f, false);
                make_image(f, &mixed_stream);
                feed(f, mixed_stream.size, mixed_stream.size + surpluses[i], 0);
                assert_int_equal(stream_copy_in(f, mixed_stream.size, NULL), -EMSGSIZE);
        }

        /* Nothing at all was announced. */
        make_pipe(f, false);
        feed(f, mixed_stream.size, 1, 0);
        assert_int_equal(stream_copy_in(f, 0, NULL), -EMSGSIZE);
}

static void empty_stream_of_size_0_gives_an_empty_object(void **state) {
        struct fixture *f = *state;

        make_pipe(f, false);
        f->wr = safe_close(f->wr);
        assert_int_equal(stream_copy_in(f, 0, NULL), 0);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static void short_socket_stream_is_enodata(void **state) {
        struct fixture *f = *state;

        make_socketpair(f, SOCK_STREAM);
        make_image(f, &mixed_stream);
        feed(f, mixed_stream.size, mixed_stream.size - 4097, 0);
        assert_int_equal(stream_copy_in(f, mixed_stream.size, NULL), -ENODATA);
}

static void long_socket_stream_is_emsgsize(void **state) {
        struct fixture *f = *state;

        make_socketpair(f, SOCK_STREAM);
        make_image(f, &mixed_stream);
        feed(f, mixed_stream.size, mixed_stream.size + 1, 0);
        assert_int_equal(stream_copy_in(f, mixed_stream.size, NULL), -EMSGSIZE);
}

/* A writer that keeps the stream open and sends nothing (more): the copy waits, and a Cancel
 * from another thread stops it within a poll interval or so (bounded generously here). */
static void check_cancel_of_a_stalled_stream(struct fixture *f, size_t prefix) {
        CopyProgress progress = { .total = 1 * MiB };
        Copier c = { .src = f->rd, .dst = f->dst, .size = 1 * MiB, .mode = REFLINK_AUTO, .progress = &progress };
        bool early;
        usec_t cancelled;
        int r;

        if (prefix > 0) {
                make_image(f, &(Image) { .size = prefix, .n_segments = 1, .segments = { { 0, prefix } } });
                assert_int_equal(write(f->wr, f->image, prefix), (ssize_t) prefix);
        }
        copier_start(&c);
        early = copier_wait(&c, 200 * USEC_PER_MSEC);
        atomic_store(&progress.cancel, true);
        cancelled = monotonic_usec();
        r = copier_finish(f, &c, CANCEL_DEADLINE);

        if (early)
                fail_msg("copy_in() returned %d while its writer was stalled", r);
        if (r == TIMED_OUT)
                fail_msg("copy_in() did not return within %" PRIu64 " s of a cancel",
                         CANCEL_DEADLINE / USEC_PER_SEC);
        print_message("Cancelled after %" PRIu64 " ms, returned %" PRIu64 " ms later\n",
                      (cancelled - c.started) / USEC_PER_MSEC, (c.returned - cancelled) / USEC_PER_MSEC);
        assert_int_equal(r, -ECANCELED);
        assert_true(c.returned - cancelled < CANCEL_DEADLINE);
        /* Nothing that was never written is counted. */
        assert_true(atomic_load(&progress.done) <= prefix);
}

static void cancel_stops_a_stalled_pipe(void **state) {
        struct fixture *f = *state;

        make_pipe(f, false);
        check_cancel_of_a_stalled_stream(f, 0);
}

static void cancel_stops_a_pipe_stalled_after_some_data(void **state) {
        struct fixture *f = *state;

        make_pipe(f, false);
        check_cancel_of_a_stalled_stream(f, 10000);
}

static void cancel_stops_a_stalled_nonblocking_pipe(void **state) {
        struct fixture *f = *state;

        make_pipe(f, true);
        check_cancel_of_a_stalled_stream(f, 10000);
}

static void cancel_stops_a_stalled_socket(void **state) {
        struct fixture *f = *state;

        make_socketpair(f, SOCK_STREAM);
        check_cancel_of_a_stalled_stream(f, 0);
}

static void cancel_before_the_copy_reads_nothing(void **state) {
        struct fixture *f = *state;
        CopyProgress progress = { .total = mixed_file.size };

        atomic_store(&progress.cancel, true);
        make_source_file(f, &mixed_file);
        pread_fd = f->src;
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_NEVER, &progress), -ECANCELED);
        assert_int_equal(pread_calls, 0);
        assert_int_equal(atomic_load(&progress.done), 0);

        make_pipe(f, false);
        assert_int_equal(write(f->wr, "data", 4), 4);
        f->wr = safe_close(f->wr);
        assert_int_equal(copy_in(f->rd, f->dst, 4, REFLINK_NEVER, &progress), -ECANCELED);
        assert_int_equal(atomic_load(&progress.done), 0);
}

/* A socket that keeps record boundaries drops what a recv() has no room for. Records of 3000
 * bytes: the 1 MiB buffer ends 1576 bytes into the 350th, so 1424 bytes vanish there; a stream
 * that is 1424 bytes too long must not come out as a success (and one of the announced size not
 * as -ENODATA). Refusing such sockets (-EINVAL) would be right too. */
static void seqpacket_socket_loses_no_bytes(void **state) {
        static const Image im = { .size = 400 * 3000, .n_segments = 1, .segments = { { 0, 400 * 3000 } } };
        static const uint64_t surplus = 1424;
        struct fixture *f = *state;
        int too_long, exact;

        f->record = 3000;
        make_socketpair(f, SOCK_SEQPACKET);
        make_image(f, &im);
        feed(f, im.size, im.size + surplus, 0);
        too_long = stream_copy_in(f, im.size, NULL);

        make_socketpair(f, SOCK_SEQPACKET);
        feed(f, im.size, im.size, 0);
        exact = stream_copy_in(f, im.size, NULL);

        print_message("Records of 3000 bytes for a size of %" PRIu64 ": %" PRIu64 " bytes: copy_in() = %d, "
                      "%" PRIu64 " bytes: copy_in() = %d\n",
                      im.size, im.size + surplus, too_long, im.size, exact);
        assert_true(too_long == -EMSGSIZE || too_long == -EINVAL);
        if (exact == 0)
                assert_dst_is_image(f, im.size);
        else
                assert_int_equal(exact, -EINVAL);
}

static void progress_counts_the_data_of_a_file(void **state) {
        static const Image im = {
                .size = 64 * MiB,
                .n_segments = 2,
                .segments = { { 4 * MiB, 1 * MiB + 512 }, { 40 * MiB, 64 * KiB } },
        };
        static Range src_map[MAX_RANGES];
        struct fixture *f = *state;
        CopyProgress progress = { .total = im.size };
        uint64_t data;

        make_source_file(f, &im);
        data = map_bytes(src_map, data_map(f->src, src_map));
        assert_int_equal(copy_in(f->src, f->dst, im.size, REFLINK_NEVER, &progress), 0);
        /* The data ranges, rounded to the filesystem's blocks: holes are skipped, not read. */
        assert_int_equal(atomic_load(&progress.done), data);
        assert_true(data >= 1 * MiB + 512 + 64 * KiB);
        assert_true(data <= 1 * MiB + 64 * KiB + 4 * KiB + 64 * KiB);
        assert_dst_is_image(f, im.size);

        /* And without progress at all. */
        assert_int_equal(copy_in(f->src, f->dst, im.size, REFLINK_NEVER, NULL), 0);
        assert_dst_is_image(f, im.size);
}

/* ---- what copy_in() refuses, and failures ---- */

static void neither_file_nor_stream_is_einval(void **state) {
        static const char *const devices[] = { "/dev/null", "/dev/zero" };
        struct fixture *f = *state;
        int fd;

        assert_int_equal(copy_in(f->dir_fd, f->dst, 0, REFLINK_NEVER, NULL), -EINVAL);
        assert_int_equal(copy_in(f->dir_fd, f->dst, 4096, REFLINK_AUTO, NULL), -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(devices); i++) {
                fd = open(devices[i], O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(copy_in(fd, f->dst, 4096, REFLINK_AUTO, NULL), -EINVAL);
                assert_int_equal(copy_in(fd, f->dst, 0, REFLINK_NEVER, NULL), -EINVAL);
                close(fd);
        }
        fd = eventfd(0, EFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(copy_in(fd, f->dst, 8, REFLINK_AUTO, NULL), -EINVAL);
        close(fd);
        assert_int_equal(copy_in(-EBADF, f->dst, 8, REFLINK_AUTO, NULL), -EBADF);
        assert_int_equal(ficlone_calls, 0);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static void write_errors_fail_the_copy(void **state) {
        struct fixture *f = *state;
        CopyProgress progress = {};

        pwrite_fd = f->dst;
        pwrite_errno = ENOSPC;
        make_source_file(f, &mixed_file);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_NEVER, &progress), -ENOSPC);
        assert_int_equal(atomic_load(&progress.done), 0);

        make_pipe(f, false);
        make_image(f, &mixed_stream);
        feed(f, mixed_stream.size, mixed_stream.size, 0);
        assert_int_equal(stream_copy_in(f, mixed_stream.size, &progress), -ENOSPC);
        assert_int_equal(atomic_load(&progress.done), 0);
        assert_true(pwrite_calls >= 2);
}

static void short_writes_and_eintr_are_retried(void **state) {
        struct fixture *f = *state;

        pwrite_fd = f->dst;
        pwrite_max = 4099;
        pwrite_eintr_once = true;
        make_source_file(f, &mixed_file);
        assert_int_equal(copy_in(f->src, f->dst, mixed_file.size, REFLINK_NEVER, NULL), 0);
        assert_dst_is_image(f, mixed_file.size);

        pwrite_calls = 0;
        pwrite_eintr_once = true;
        make_pipe(f, false);
        make_image(f, &mixed_stream);
        feed(f, mixed_stream.size, mixed_stream.size, 0);
        assert_int_equal(stream_copy_in(f, mixed_stream.size, NULL), 0);
        assert_dst_is_image(f, mixed_stream.size);
        assert_true(pwrite_calls > 100);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(file_copy_is_identical_with_zero_blocks_as_holes),
                T(file_copy_keeps_an_unaligned_tail),
                T(file_copy_leaves_nothing_of_what_dst_held),
                T(empty_file_gives_an_empty_object),
                T(file_copy_on_the_local_fs_reflinks_only_where_it_can),
                T(reflinked_file_returns_1_without_reading),
                T(reflinked_file_of_the_wrong_size_fails),
                T(reflink_refusals_fall_back_to_a_copy),
                T(reflink_errors_fail_the_copy),
                T(file_of_the_wrong_size_fails_without_reading),
                T(file_that_grows_or_shrinks_while_read_fails),
                T(progress_counts_the_data_of_a_file),
                T(pipe_copy_is_identical_with_zero_blocks_as_holes),
                T(nonblocking_pipe_copy_is_identical),
                T(socket_copy_is_identical_with_zero_blocks_as_holes),
                T(stream_of_zeros_allocates_nothing_and_counts_every_byte),
                T(short_stream_is_enodata),
                T(long_stream_is_emsgsize),
                T(empty_stream_of_size_0_gives_an_empty_object),
                T(short_socket_stream_is_enodata),
                T(long_socket_stream_is_emsgsize),
                T(cancel_stops_a_stalled_pipe),
                T(cancel_stops_a_pipe_stalled_after_some_data),
                T(cancel_stops_a_stalled_nonblocking_pipe),
                T(cancel_stops_a_stalled_socket),
                T(cancel_before_the_copy_reads_nothing),
                T(seqpacket_socket_loses_no_bytes),
                T(neither_file_nor_stream_is_einval),
                T(write_errors_fail_the_copy),
                T(short_writes_and_eintr_are_retried),
        };
#undef T

        /* A feeder writing into a pipe whose reader has gone gets EPIPE, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
