/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* copy_file_range(), SEEK_DATA, mkdtemp(), unshare(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "copy.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

/* Linked with -Wl,--wrap=ioctl,--wrap=copy_file_range,--wrap=pwrite64 (see meson.build; pwrite()
 * is pwrite64() with the 64-bit off_t meson builds with): copy.c's calls land here. By default
 * they pass through to the kernel; each test decides how they misbehave, and setup() resets
 * everything. */
int __real_ioctl(int fd, unsigned long request, ...);
ssize_t __real_copy_file_range(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len, unsigned flags);
ssize_t __real_pwrite64(int fd, const void *buf, size_t count, off_t offset);

static unsigned ficlone_calls;
static int ficlone_errno;               /* FICLONE fails with this; 0: the real ioctl */
static bool ficlone_fake_success;       /* FICLONE "succeeds" without doing anything */

static unsigned cfr_calls;
static int cfr_errno;                   /* the first call fails with this; 0: never */
static size_t cfr_max;                  /* copy at most this many bytes per call; 0: all */
static bool cfr_eintr_once, cfr_zero_once;
static size_t cfr_longest;              /* the largest len asked for */
static int cfr_real_errno;              /* what the kernel answered last, 0: success */
static CopyProgress *cancel_after_first_cfr;   /* cancelled by the first call, before it copies */

static int pwrite_fd = -EBADF;          /* only writes to this fd misbehave */
static size_t pwrite_max;               /* write at most this many bytes per call; 0: all */
static bool pwrite_eintr_once;
static int pwrite_errno;                /* every write fails with this; 0: never */
static unsigned pwrite_calls;

int __wrap_ioctl(int fd, unsigned long request, ...) {
        va_list ap;
        void *arg;

        va_start(ap, request);
        arg = va_arg(ap, void *);
        va_end(ap);

        if (request == FICLONE) {
                ficlone_calls++;
                if (ficlone_errno != 0) {
                        errno = ficlone_errno;
                        return -1;
                }
                if (ficlone_fake_success)
                        return 0;
        }
        return __real_ioctl(fd, request, arg);
}

ssize_t __wrap_copy_file_range(int fd_in, loff_t *off_in, int fd_out, loff_t *off_out, size_t len, unsigned flags) {
        ssize_t n;

        cfr_calls++;
        if (len > cfr_longest)
                cfr_longest = len;
        if (cancel_after_first_cfr)
                atomic_store(&cancel_after_first_cfr->cancel, true);
        if (cfr_errno != 0) {
                errno = cfr_errno;
                cfr_errno = 0;
                return -1;
        }
        if (cfr_eintr_once) {
                cfr_eintr_once = false;
                errno = EINTR;
                return -1;
        }
        if (cfr_zero_once) {
                cfr_zero_once = false;
                return 0;
        }
        if (cfr_max > 0 && len > cfr_max)
                len = cfr_max;
        n = __real_copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
        cfr_real_errno = n < 0 ? errno : 0;
        return n;
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
        ficlone_fake_success = false;
        cfr_calls = 0;
        cfr_errno = 0;
        cfr_max = 0;
        cfr_eintr_once = cfr_zero_once = false;
        cfr_longest = 0;
        cfr_real_errno = 0;
        cancel_after_first_cfr = NULL;
        pwrite_fd = -EBADF;
        pwrite_max = 0;
        pwrite_eintr_once = false;
        pwrite_errno = 0;
        pwrite_calls = 0;
}

/* A source file: its size and where its data lies; everything else is a hole. */
typedef struct Extent {
        uint64_t offset, length;
} Extent;

typedef struct Layout {
        uint64_t size;
        size_t n_extents;
        Extent extents[8];
} Layout;

struct fixture {
        char dir[64];           /* the temporary directory, on /tmp */
        int dir_fd;
        int src, dst;           /* closed by teardown, so a failed assertion leaks nothing */
        char mnt[96];           /* a filesystem mounted for the test, or "" */
        char image[96];
        bool mounted;
};

static int nftw_remove(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof *f);

        if (!f)
                return -1;
        reset_mocks();
        f->src = f->dst = -EBADF;
        strcpy(f->dir, "/tmp/cistern-test-copy.XXXXXX");
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

static int run_quietly(const char *const argv[]) {
        int status;
        pid_t pid;

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);

                if (null >= 0) {
                        dup2(null, STDOUT_FILENO);
                        dup2(null, STDERR_FILENO);
                }
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        int r;

        safe_close(f->src);
        safe_close(f->dst);
        safe_close(f->dir_fd);
        if (f->mounted && umount2(f->mnt, 0) < 0 && umount2(f->mnt, MNT_DETACH) < 0)
                fprintf(stderr, "Failed to unmount %s: %m\n", f->mnt);
        /* Loop devices set up by mount -o loop are autoclear: the unmount detached it. */
        /* Deliberately not anything from copy.c: cleanup must not depend on the code under test. */
        r = nftw(f->dir, nftw_remove, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        free(f);
        return r;
}

/* Mounts made by the tests live in a private mount namespace: whatever happens to the test,
 * they vanish with the process and never show up on the host. */
static bool private_mount_namespace(void) {
        static bool done;

        if (done)
                return true;
        if (geteuid() != 0 || unshare(CLONE_NEWNS) < 0 ||
            mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return false;
        done = true;
        return true;
}

/* Replaces dst with a file of the same name on a tmpfs mounted at <dir>/tmpfs (root only). */
static int setup_tmpfs(void **state) {
        struct fixture *f;

        if (setup(state) < 0)
                return -1;
        f = *state;
        if (!private_mount_namespace())
                return 0;
        snprintf(f->mnt, sizeof f->mnt, "%s/tmpfs", f->dir);
        if (mkdir(f->mnt, 0755) < 0 ||
            mount("tmpfs", f->mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=128m,mode=0755") < 0)
                return -1;
        f->mounted = true;
        return 0;
}

static const char *find_tool(const char *name, char *buf, size_t size) {
        static const char *const dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };

        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                snprintf(buf, size, "%s/%s", dirs[i], name);
                if (access(buf, X_OK) == 0)
                        return buf;
        }
        return NULL;
}

/* An xfs with reflink=1 on a loop device at <dir>/xfs (root, mkfs.xfs and mount(8) only). */
static int setup_xfs(void **state) {
        char mkfs_path[64], mount_path[64];
        struct fixture *f;
        int fd;

        if (setup(state) < 0)
                return -1;
        f = *state;
        if (!find_tool("mkfs.xfs", mkfs_path, sizeof mkfs_path) ||
            !find_tool("mount", mount_path, sizeof mount_path) ||
            !private_mount_namespace())
                return 0;

        snprintf(f->image, sizeof f->image, "%s/xfs.img", f->dir);
        snprintf(f->mnt, sizeof f->mnt, "%s/xfs", f->dir);
        fd = open(f->image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -1;
        if (ftruncate(fd, (off_t) (512 * MiB)) < 0) {
                close(fd);
                return -1;
        }
        close(fd);
        if (mkdir(f->mnt, 0755) < 0)
                return -1;
        if (run_quietly((const char *const[]) { mkfs_path, "-q", "-m", "reflink=1", f->image, NULL }) < 0)
                return 0;       /* e.g. an mkfs.xfs too old for reflink: the test skips */
        if (run_quietly((const char *const[]) { mount_path, "-t", "xfs", "-o", "loop,nosuid,nodev",
                                                f->image, f->mnt, NULL }) < 0)
                return 0;       /* e.g. no loop devices in this container */
        f->mounted = true;
        return 0;
}

/* Moves src and dst of the fixture onto the mounted filesystem; the test skips without one. */
static void use_mounted_fs(struct fixture *f, bool src_too) {
        char path[128];

        if (!f->mounted) {
                print_message("No test filesystem could be mounted here (needs root, mkfs.xfs, loop devices): skipped.\n");
                skip();
        }
        if (src_too) {
                snprintf(path, sizeof path, "%s/src", f->mnt);
                safe_close(f->src);
                f->src = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                assert_true(f->src >= 0);
        }
        snprintf(path, sizeof path, "%s/dst", f->mnt);
        safe_close(f->dst);
        f->dst = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        assert_true(f->dst >= 0);
}

/* Never zero, and different at every offset within 128 KiB, so that a misplaced byte shows. */
static uint8_t pattern(uint64_t offset) {
        return (uint8_t) (((offset >> 9) * 37 + offset) | 1);
}

static void write_pattern(int fd, uint64_t offset, uint64_t length) {
        uint8_t *buf = malloc(MiB);

        assert_non_null(buf);
        while (length > 0) {
                size_t n = MIN(length, MiB);

                for (size_t i = 0; i < n; i++)
                        buf[i] = pattern(offset + i);
                assert_int_equal(pwrite(fd, buf, n, (off_t) offset), (ssize_t) n);
                offset += n;
                length -= n;
        }
        free(buf);
}

static uint64_t make_source(int fd, const Layout *l) {
        uint64_t data = 0;

        assert_int_equal(ftruncate(fd, (off_t) l->size), 0);
        for (size_t i = 0; i < l->n_extents; i++) {
                write_pattern(fd, l->extents[i].offset, l->extents[i].length);
                data += l->extents[i].length;
        }
        return data;
}

static void assert_same_content(int a, int b) {
        uint8_t *x = malloc(MiB), *y = malloc(MiB);
        struct stat sa, sb;

        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(fstat(a, &sa), 0);
        assert_int_equal(fstat(b, &sb), 0);
        assert_int_equal(sa.st_size, sb.st_size);
        for (off_t offset = 0; offset < sa.st_size; offset += (off_t) MiB) {
                ssize_t n = pread(a, x, MiB, offset);

                assert_true(n > 0);
                assert_int_equal(pread(b, y, MiB, offset), n);
                assert_memory_equal(x, y, (size_t) n);
        }
        free(x);
        free(y);
}

typedef struct Range {
        uint64_t start, end;
} Range;

#define MAX_RANGES 1100

/* The data ranges as the filesystem reports them, independently of copy.c. */
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

static uint64_t allocated(int fd) {
        struct stat st;

        assert_int_equal(fstat(fd, &st), 0);
        return (uint64_t) st.st_blocks * 512;
}

/* Copies a source laid out as l with copy_sparse() and checks that dst is the same file:
 * byte for byte, with the same data ranges, no more allocated than the data, and progress that
 * counted exactly the data. */
static void check_sparse_copy(struct fixture *f, const Layout *l) {
        static Range src_map[MAX_RANGES], dst_map[MAX_RANGES];
        CopyProgress progress = {};
        uint64_t data, map_data = 0;
        size_t n;

        data = make_source(f->src, l);
        progress.total = copy_data_size(f->src);

        assert_int_equal(copy_sparse(f->src, f->dst, &progress), 0);

        assert_same_content(f->src, f->dst);
        n = data_map(f->src, src_map);
        assert_int_equal(data_map(f->dst, dst_map), n);
        assert_memory_equal(src_map, dst_map, n * sizeof(Range));
        for (size_t i = 0; i < n; i++)
                map_data += src_map[i].end - src_map[i].start;
        /* The filesystem rounds the written ranges to its blocks; progress counts what it
         * reports as data, which is what was copied. */
        assert_true(map_data >= data);
        assert_int_equal(progress.total, map_data);
        assert_int_equal(atomic_load(&progress.done), map_data);
        assert_true(allocated(f->dst) <= map_data + 64 * KiB);
        assert_false(atomic_load(&progress.cancel));
        assert_true(cfr_longest <= 64 * MiB);
}

static void sparse_copy_keeps_data_at_start_middle_and_end(void **state) {
        static const Layout l = {
                .size = 16 * MiB,
                .n_extents = 3,
                .extents = { { 0, 64 * KiB }, { 5 * MiB, 300 * KiB }, { 16 * MiB - 8 * KiB, 8 * KiB } },
        };

        check_sparse_copy(*state, &l);
        assert_int_equal(ficlone_calls, 0);
}

static void sparse_copy_keeps_a_trailing_hole(void **state) {
        static const Layout l = { .size = 32 * MiB, .n_extents = 1, .extents = { { 1 * MiB, 1 * MiB } } };
        struct fixture *f = *state;

        check_sparse_copy(f, &l);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), (off_t) (32 * MiB));
}

static void sparse_copy_keeps_an_unaligned_tail(void **state) {
        static const Layout l = {
                .size = 3 * MiB + 1234,
                .n_extents = 2,
                .extents = { { 0, 4097 }, { 3 * MiB, 1234 } },
        };

        check_sparse_copy(*state, &l);
}

static void sparse_copy_of_an_empty_file_is_empty(void **state) {
        static const Layout l = { .size = 0 };
        struct fixture *f = *state;

        check_sparse_copy(f, &l);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
        assert_int_equal(cfr_calls, 0);
}

static void sparse_copy_of_a_hole_allocates_nothing(void **state) {
        static const Layout l = { .size = 64 * MiB };
        struct fixture *f = *state;

        check_sparse_copy(f, &l);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), (off_t) (64 * MiB));
        assert_int_equal(allocated(f->dst), 0);
        assert_int_equal(cfr_calls, 0);
}

static void sparse_copy_moves_large_ranges_in_bounded_chunks(void **state) {
        static const Layout l = { .size = 40 * MiB, .n_extents = 1, .extents = { { 1 * MiB, 20 * MiB + 4 * KiB } } };

        check_sparse_copy(*state, &l);
        /* So that cancel and progress are looked at every so often. */
        assert_true(cfr_calls >= 3);
}

static void sparse_copy_walks_many_extents(void **state) {
        struct fixture *f = *state;
        Layout l = { .size = 4 * MiB };
        CopyProgress progress = {};

        /* Every other 4 KiB block: 512 data ranges. */
        assert_int_equal(ftruncate(f->src, (off_t) l.size), 0);
        for (uint64_t o = 0; o < l.size; o += 8 * KiB)
                write_pattern(f->src, o, 4 * KiB);
        check_sparse_copy(f, &l);

        /* And copy_data_size() agrees with what a copy counts. */
        assert_int_equal(ftruncate(f->dst, 0), 0);
        assert_int_equal(copy_sparse(f->src, f->dst, &progress), 0);
        assert_int_equal(atomic_load(&progress.done), 2 * MiB);
        assert_int_equal(copy_data_size(f->src), 2 * MiB);
}

static void sparse_copy_leaves_nothing_of_what_dst_held(void **state) {
        static const Layout l = { .size = 8 * MiB, .n_extents = 1, .extents = { { 0, 4 * KiB } } };
        struct fixture *f = *state;

        /* Data where src has holes, and beyond src's end. */
        write_pattern(f->dst, 1 * MiB, 1 * MiB);
        write_pattern(f->dst, 12 * MiB, 4 * KiB);
        check_sparse_copy(f, &l);
}

static void sparse_copy_works_without_progress(void **state) {
        static const Layout l = { .size = 2 * MiB, .n_extents = 1, .extents = { { 4 * KiB, 100 * KiB } } };
        struct fixture *f = *state;

        make_source(f->src, &l);
        assert_int_equal(copy_sparse(f->src, f->dst, NULL), 0);
        assert_same_content(f->src, f->dst);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, NULL) >= 0, true);
        assert_same_content(f->src, f->dst);
}

static void cancel_before_copying_copies_nothing(void **state) {
        static const Layout l = { .size = 4 * MiB, .n_extents = 1, .extents = { { 0, 1 * MiB } } };
        struct fixture *f = *state;
        CopyProgress progress = {};

        make_source(f->src, &l);
        atomic_store(&progress.cancel, true);

        assert_int_equal(copy_sparse(f->src, f->dst, &progress), -ECANCELED);
        for (ReflinkMode m = 0; m < _REFLINK_MODE_MAX; m++)
                assert_int_equal(copy_file(f->src, f->dst, m, &progress), -ECANCELED);

        assert_int_equal(ficlone_calls, 0);
        assert_int_equal(cfr_calls, 0);
        assert_int_equal(atomic_load(&progress.done), 0);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static void cancel_while_copying_stops_at_the_next_chunk(void **state) {
        static const Layout l = { .size = 64 * MiB, .n_extents = 1, .extents = { { 0, 32 * MiB } } };
        struct fixture *f = *state;
        CopyProgress progress = {};

        make_source(f->src, &l);
        progress.total = copy_data_size(f->src);
        cancel_after_first_cfr = &progress;

        assert_int_equal(copy_sparse(f->src, f->dst, &progress), -ECANCELED);
        assert_int_equal(cfr_calls, 1);
        assert_true(atomic_load(&progress.done) > 0);
        assert_true(atomic_load(&progress.done) <= 8 * MiB);
        assert_true(atomic_load(&progress.done) < progress.total);
}

static void cancel_while_copying_through_the_buffer_stops_at_the_next_chunk(void **state) {
        static const Layout l = { .size = 64 * MiB, .n_extents = 1, .extents = { { 0, 32 * MiB } } };
        struct fixture *f = *state;
        CopyProgress progress = {};

        make_source(f->src, &l);
        progress.total = copy_data_size(f->src);
        /* copy_file_range() refuses and cancel comes at once: the first chunk goes through the
         * buffer, the second is never started. */
        cfr_errno = EXDEV;
        cancel_after_first_cfr = &progress;

        assert_int_equal(copy_sparse(f->src, f->dst, &progress), -ECANCELED);
        assert_int_equal(cfr_calls, 1);
        assert_int_equal(atomic_load(&progress.done), 8 * MiB);
}

static void sparse_copy_refuses_what_is_not_a_regular_file(void **state) {
        struct fixture *f = *state;
        int p[2];

        write_pattern(f->src, 0, 4 * KiB);
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        assert_int_equal(copy_sparse(p[0], f->dst, NULL), -EINVAL);
        assert_int_equal(copy_sparse(f->src, p[1], NULL), -EINVAL);
        assert_int_equal(copy_sparse(f->dir_fd, f->dst, NULL), -EINVAL);
        assert_int_equal(copy_file(p[0], f->dst, REFLINK_AUTO, NULL), -EINVAL);
        assert_int_equal(copy_data_size(p[0]), 0);
        close(p[0]);
        close(p[1]);
        assert_int_equal(copy_sparse(-EBADF, f->dst, NULL), -EBADF);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static void sparse_copy_refuses_to_copy_a_file_onto_itself(void **state) {
        struct fixture *f = *state;
        char path[96];
        int again;

        write_pattern(f->src, 0, 64 * KiB);
        snprintf(path, sizeof path, "%s/src", f->dir);
        again = open(path, O_RDWR | O_CLOEXEC);
        assert_true(again >= 0);
        assert_int_equal(copy_sparse(f->src, again, NULL), -EINVAL);
        assert_int_equal(copy_file(f->src, again, REFLINK_AUTO, NULL), -EINVAL);
        close(again);
        assert_int_equal(lseek(f->src, 0, SEEK_END), (off_t) (64 * KiB));
        assert_int_equal(copy_data_size(f->src), 64 * KiB);
}

static void copy_file_range_refusals_fall_back_to_a_buffer(void **state) {
        static const Layout l = {
                .size = 12 * MiB,
                .n_extents = 2,
                .extents = { { 0, 3 * MiB + 5 }, { 9 * MiB, 2 * MiB } },
        };
        static const int refusals[] = { EXDEV, EOPNOTSUPP, ENOSYS, EINVAL };
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(refusals); i++) {
                assert_int_equal(ftruncate(f->dst, 0), 0);
                cfr_calls = 0;
                cfr_errno = refusals[i];
                check_sparse_copy(f, &l);
                /* Refused once, not asked again for the rest of the copy. */
                assert_int_equal(cfr_calls, 1);
        }
}

/* "never" must give the copy blocks of its own, and copy_file_range() may clone them. */
static void never_copies_through_read_and_write(void **state) {
        static const Layout l = { .size = 4 * MiB, .n_extents = 1, .extents = { { 0, 1 * MiB } } };
        struct fixture *f = *state;
        CopyProgress progress = {};

        make_source(f->src, &l);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_NEVER, &progress), 0);
        assert_int_equal(cfr_calls, 0);
        assert_int_equal(atomic_load(&progress.done), 1 * MiB);
}

static void copy_file_range_errors_fail_the_copy(void **state) {
        static const Layout l = { .size = 4 * MiB, .n_extents = 1, .extents = { { 0, 1 * MiB } } };
        static const int errors[] = { EIO, ENOSPC, EBADF };
        struct fixture *f = *state;

        make_source(f->src, &l);
        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                CopyProgress progress = {};

                cfr_errno = errors[i];
                assert_int_equal(copy_sparse(f->src, f->dst, &progress), -errors[i]);
                assert_int_equal(atomic_load(&progress.done), 0);
        }
}

static void copy_file_range_short_counts_and_eintr_are_retried(void **state) {
        static const Layout l = { .size = 12 * MiB, .n_extents = 1, .extents = { { 1 * MiB, 9 * MiB + 77 } } };
        struct fixture *f = *state;

        cfr_max = 100003;
        cfr_eintr_once = true;
        check_sparse_copy(f, &l);
        assert_true(cfr_calls > 90);
}

static void copy_file_range_copying_nothing_falls_back(void **state) {
        static const Layout l = { .size = 6 * MiB, .n_extents = 1, .extents = { { 0, 5 * MiB } } };
        struct fixture *f = *state;

        cfr_max = 1 * MiB;
        cfr_zero_once = true;
        check_sparse_copy(f, &l);
}

static void buffer_copy_retries_short_writes_and_eintr(void **state) {
        static const Layout l = { .size = 12 * MiB, .n_extents = 2, .extents = { { 0, 1 * MiB + 3 }, { 8 * MiB, 3 * MiB } } };
        struct fixture *f = *state;

        cfr_errno = EXDEV;
        pwrite_fd = f->dst;
        pwrite_max = 65537;
        pwrite_eintr_once = true;
        check_sparse_copy(f, &l);
        assert_true(pwrite_calls > 60);
}

static void buffer_copy_write_errors_fail_the_copy(void **state) {
        static const Layout l = { .size = 4 * MiB, .n_extents = 1, .extents = { { 0, 1 * MiB } } };
        struct fixture *f = *state;
        CopyProgress progress = {};

        make_source(f->src, &l);
        cfr_errno = EXDEV;
        pwrite_fd = f->dst;
        pwrite_errno = ENOSPC;
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, &progress), -ENOSPC);
        assert_int_equal(atomic_load(&progress.done), 0);
}

static void reflink_modes_have_names(void **state) {
        static const char *const names[] = { "auto", "require", "never" };

        for (ReflinkMode m = 0; m < _REFLINK_MODE_MAX; m++) {
                assert_string_equal(reflink_mode_to_string(m), names[m]);
                assert_int_equal(reflink_mode_from_string(names[m]), m);
        }
        assert_null(reflink_mode_to_string(_REFLINK_MODE_MAX));
        assert_null(reflink_mode_to_string((ReflinkMode) -1));
        assert_int_equal(reflink_mode_from_string("Auto"), -EINVAL);
        assert_int_equal(reflink_mode_from_string(""), -EINVAL);
        assert_int_equal(reflink_mode_from_string(NULL), -EINVAL);
}

static void copy_file_refuses_an_unknown_mode(void **state) {
        struct fixture *f = *state;

        assert_int_equal(copy_file(f->src, f->dst, _REFLINK_MODE_MAX, NULL), -EINVAL);
        assert_int_equal(ficlone_calls, 0);
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

/* What this machine's /tmp does; either answer is right, but it must be one of the two and
 * the copy must be whole. ext4 cannot reflink, so there it must be the fallback. */
static void reflink_on_the_local_tmp_clones_or_falls_back(void **state) {
        static const Layout l = { .size = 8 * MiB, .n_extents = 2, .extents = { { 0, 1 * MiB }, { 4 * MiB, 4 * KiB } } };
        struct fixture *f = *state;
        int r;

        make_source(f->src, &l);
        r = copy_reflink(f->src, f->dst);
        print_message("/tmp is %s: copy_reflink() = %d\n", fs_name(f->dst), r);
        assert_true(r == 0 || r == 1);
        if (streq(fs_name(f->dst), "ext4") || streq(fs_name(f->dst), "tmpfs"))
                assert_int_equal(r, 0);

        assert_int_equal(ftruncate(f->dst, 0), 0);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, NULL), r);
        assert_same_content(f->src, f->dst);
}

static void reflink_refusals_fall_back_to_a_sparse_copy(void **state) {
        static const Layout l = { .size = 8 * MiB, .n_extents = 2, .extents = { { 0, 1 * MiB }, { 6 * MiB, 8 * KiB } } };
        static const int refusals[] = { EBADF, EINVAL, EOPNOTSUPP, EXDEV };
        struct fixture *f = *state;

        make_source(f->src, &l);
        for (size_t i = 0; i < ELEMENTSOF(refusals); i++) {
                CopyProgress progress = { .total = copy_data_size(f->src) };

                assert_int_equal(ftruncate(f->dst, 0), 0);
                ficlone_calls = 0;
                ficlone_errno = refusals[i];

                assert_int_equal(copy_reflink(f->src, f->dst), 0);
                assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, &progress), 0);
                assert_int_equal(ficlone_calls, 2);
                assert_same_content(f->src, f->dst);
                assert_int_equal(atomic_load(&progress.done), progress.total);
        }
}

static void reflink_errors_fail_without_a_fallback(void **state) {
        static const Layout l = { .size = 8 * MiB, .n_extents = 1, .extents = { { 0, 1 * MiB } } };
        static const int errors[] = { EIO, ENOSPC, EDQUOT, ENOTTY, EISDIR };
        struct fixture *f = *state;

        make_source(f->src, &l);
        for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
                CopyProgress progress = {};

                ficlone_errno = errors[i];
                assert_int_equal(copy_reflink(f->src, f->dst), -errors[i]);
                assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, &progress), -errors[i]);
                assert_int_equal(copy_file(f->src, f->dst, REFLINK_REQUIRE, &progress), -errors[i]);
                /* No copy was attempted: dst is as empty as it came. */
                assert_int_equal(cfr_calls, 0);
                assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
                assert_int_equal(allocated(f->dst), 0);
                assert_int_equal(atomic_load(&progress.done), 0);
        }
}

static void require_without_reflink_is_not_supported(void **state) {
        static const Layout l = { .size = 8 * MiB, .n_extents = 1, .extents = { { 0, 1 * MiB } } };
        static const int refusals[] = { EBADF, EINVAL, EOPNOTSUPP, EXDEV };
        struct fixture *f = *state;

        make_source(f->src, &l);
        for (size_t i = 0; i < ELEMENTSOF(refusals); i++) {
                ficlone_errno = refusals[i];
                assert_int_equal(copy_file(f->src, f->dst, REFLINK_REQUIRE, NULL), -EOPNOTSUPP);
        }
        assert_int_equal(cfr_calls, 0);
        assert_int_equal(lseek(f->dst, 0, SEEK_END), 0);
}

static void a_reflink_completes_the_progress(void **state) {
        struct fixture *f = *state;
        CopyProgress progress = { .total = 123 * MiB };

        ficlone_fake_success = true;
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_REQUIRE, &progress), 1);
        assert_int_equal(atomic_load(&progress.done), 123 * MiB);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, &progress), 1);
        assert_int_equal(atomic_load(&progress.done), 123 * MiB);
        assert_int_equal(cfr_calls, 0);
}

static void never_does_not_reflink(void **state) {
        static const Layout l = { .size = 8 * MiB, .n_extents = 1, .extents = { { 2 * MiB, 1 * MiB } } };
        struct fixture *f = *state;

        /* Even where FICLONE would work. */
        ficlone_fake_success = true;
        check_sparse_copy(f, &l);
        assert_int_equal(ftruncate(f->dst, 0), 0);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_NEVER, NULL), 0);
        assert_int_equal(ficlone_calls, 0);
        assert_same_content(f->src, f->dst);
}

/* ext4 (/tmp here) to tmpfs: FICLONE and copy_file_range() both refuse with EXDEV on current
 * kernels (before 5.19 copy_file_range() copied across filesystems itself): the copy must be
 * whole all the same. */
static void copy_across_filesystems_is_whole(void **state) {
        static const Layout l = { .size = 16 * MiB, .n_extents = 2, .extents = { { 0, 3 * MiB }, { 10 * MiB, 5 } } };
        struct fixture *f = *state;
        CopyProgress progress = {};
        int r;

        use_mounted_fs(f, false);
        make_source(f->src, &l);
        progress.total = copy_data_size(f->src);

        r = copy_file(f->src, f->dst, REFLINK_AUTO, &progress);
        print_message("%s to %s: copy_file() = %d, copy_file_range() said %s\n", fs_name(f->src),
                      fs_name(f->dst), r, cfr_real_errno ? strerror(cfr_real_errno) : "ok");
        assert_int_equal(r, 0);
        assert_same_content(f->src, f->dst);
        assert_int_equal(atomic_load(&progress.done), progress.total);
}

static void reflink_on_tmpfs_falls_back(void **state) {
        static const Layout l = { .size = 16 * MiB, .n_extents = 2, .extents = { { 0, 3 * MiB }, { 10 * MiB, 5 } } };
        struct fixture *f = *state;
        int r;

        use_mounted_fs(f, true);
        make_source(f->src, &l);
        r = __real_ioctl(f->dst, FICLONE, f->src);
        print_message("FICLONE on tmpfs: %s\n", r < 0 ? strerror(errno) : "ok");
        assert_int_equal(copy_reflink(f->src, f->dst), 0);
        check_sparse_copy(f, &l);
        assert_int_equal(ftruncate(f->dst, 0), 0);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_AUTO, NULL), 0);
        assert_same_content(f->src, f->dst);
        assert_int_equal(copy_file(f->src, f->dst, REFLINK_REQUIRE, NULL), -EOPNOTSUPP);
}

static bool first_extent_shared(int fd) {
        struct {
                struct fiemap map;
                struct fiemap_extent extents[1];
        } m = { .map = { .fm_length = FIEMAP_MAX_OFFSET, .fm_flags = FIEMAP_FLAG_SYNC, .fm_extent_count = 1 } };

        assert_int_equal(ioctl(fd, FS_IOC_FIEMAP, &m.map), 0);
        assert_int_equal(m.map.fm_mapped_extents, 1);
        return m.map.fm_extents[0].fe_flags & FIEMAP_EXTENT_SHARED;
}

static uint64_t free_bytes(int fd) {
        struct statvfs sv;

        assert_int_equal(syncfs(fd), 0);
        assert_int_equal(fstatvfs(fd, &sv), 0);
        return (uint64_t) sv.f_bfree * sv.f_frsize;
}

static void reflink_on_xfs_shares_the_blocks(void **state) {
        static const Layout l = { .size = 128 * MiB, .n_extents = 1, .extents = { { 0, 100 * MiB } } };
        struct fixture *f = *state;
        CopyProgress progress = {};
        uint64_t before, after;

        use_mounted_fs(f, true);
        make_source(f->src, &l);
        progress.total = copy_data_size(f->src);
        before = free_bytes(f->dst);

        assert_int_equal(copy_file(f->src, f->dst, REFLINK_REQUIRE, &progress), 1);
        after = free_bytes(f->dst);
        print_message("FICLONE on xfs (reflink=1): ok, 100 MiB cloned for %" PRIu64 " KiB\n",
                      (before - after) / KiB);

        assert_true(before - after < 4 * MiB);
        assert_true(first_extent_shared(f->dst));
        assert_true(first_extent_shared(f->src));
        assert_int_equal(atomic_load(&progress.done), 100 * MiB);
        assert_same_content(f->src, f->dst);
        assert_int_equal(ficlone_calls, 1);
        assert_int_equal(cfr_calls, 0);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(reflink_modes_have_names),
                T(sparse_copy_keeps_data_at_start_middle_and_end),
                T(sparse_copy_keeps_a_trailing_hole),
                T(sparse_copy_keeps_an_unaligned_tail),
                T(sparse_copy_of_an_empty_file_is_empty),
                T(sparse_copy_of_a_hole_allocates_nothing),
                T(sparse_copy_moves_large_ranges_in_bounded_chunks),
                T(sparse_copy_walks_many_extents),
                T(sparse_copy_leaves_nothing_of_what_dst_held),
                T(sparse_copy_works_without_progress),
                T(cancel_before_copying_copies_nothing),
                T(cancel_while_copying_stops_at_the_next_chunk),
                T(cancel_while_copying_through_the_buffer_stops_at_the_next_chunk),
                T(sparse_copy_refuses_what_is_not_a_regular_file),
                T(sparse_copy_refuses_to_copy_a_file_onto_itself),
                T(copy_file_range_refusals_fall_back_to_a_buffer),
                T(never_copies_through_read_and_write),
                T(copy_file_range_errors_fail_the_copy),
                T(copy_file_range_short_counts_and_eintr_are_retried),
                T(copy_file_range_copying_nothing_falls_back),
                T(buffer_copy_retries_short_writes_and_eintr),
                T(buffer_copy_write_errors_fail_the_copy),
                T(copy_file_refuses_an_unknown_mode),
                T(reflink_on_the_local_tmp_clones_or_falls_back),
                T(reflink_refusals_fall_back_to_a_sparse_copy),
                T(reflink_errors_fail_without_a_fallback),
                T(require_without_reflink_is_not_supported),
                T(a_reflink_completes_the_progress),
                T(never_does_not_reflink),
                cmocka_unit_test_setup_teardown(copy_across_filesystems_is_whole, setup_tmpfs, teardown),
                cmocka_unit_test_setup_teardown(reflink_on_tmpfs_falls_back, setup_tmpfs, teardown),
                cmocka_unit_test_setup_teardown(reflink_on_xfs_shares_the_blocks, setup_xfs, teardown),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}
