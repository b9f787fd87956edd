/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mkdtemp(), nftw(), unshare(), O_PATH. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "store.h"

/* Linked with -Wl,--wrap=fsync,--wrap=write (see meson.build): store.c's calls land here, and
 * each test decides how they misbehave. setup() resets everything to "behave normally". */
int __real_fsync(int fd);
ssize_t __real_write(int fd, const void *buf, size_t count);

static unsigned fsync_calls, fsync_fail_at;   /* fail the fsync_fail_at-th call (1-based); 0: never */
static int write_fail_errno;                  /* every write fails with this errno; 0: never */
static size_t write_chunk;                    /* write at most this many bytes per call; 0: all */
static bool write_eintr_once;

int __wrap_fsync(int fd) {
        if (fsync_fail_at > 0 && ++fsync_calls == fsync_fail_at) {
                errno = EIO;
                return -1;
        }
        return __real_fsync(fd);
}

ssize_t __wrap_write(int fd, const void *buf, size_t count) {
        if (write_eintr_once) {
                write_eintr_once = false;
                errno = EINTR;
                return -1;
        }
        if (write_fail_errno != 0) {
                errno = write_fail_errno;
                return -1;
        }
        if (write_chunk > 0 && count > write_chunk)
                count = write_chunk;
        return __real_write(fd, buf, count);
}

/* <tmp>/pool is the directory under test; <tmp>/outside is what must survive. */
struct fixture {
        char base[64];
        int pool;
        int outside;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof *f);
        int base_fd;

        if (!f)
                return -1;
        fsync_calls = fsync_fail_at = 0;
        write_fail_errno = 0;
        write_chunk = 0;
        write_eintr_once = false;

        strcpy(f->base, "/tmp/cistern-test-store.XXXXXX");
        if (!mkdtemp(f->base))
                goto fail;
        base_fd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (base_fd < 0)
                goto fail;
        if (mkdirat(base_fd, "pool", 0755) < 0 || mkdirat(base_fd, "outside", 0755) < 0) {
                close(base_fd);
                goto fail;
        }
        f->pool = openat(base_fd, "pool", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        f->outside = openat(base_fd, "outside", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(base_fd);
        if (f->pool < 0 || f->outside < 0)
                goto fail;

        *state = f;
        return 0;
fail:
        free(f);
        return -1;
}

static int nftw_remove(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        int r;

        safe_close(f->pool);
        safe_close(f->outside);
        /* Deliberately not remove_tree_beneath(): cleanup must not depend on the code under test. */
        r = nftw(f->base, nftw_remove, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        free(f);
        return r;
}

static void write_file(int dirfd, const char *name, const char *content, size_t len) {
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(__real_write(fd, content, len), (ssize_t) len);
        close(fd);
}

static bool exists(int dirfd, const char *name) {
        struct stat st;

        return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static unsigned count_entries(int dirfd, const char *prefix) {
        int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fdopendir(fd);
        struct dirent *de;
        unsigned n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") &&
                    strncmp(de->d_name, prefix, strlen(prefix)) == 0)
                        n++;
        closedir(d);
        return n;
}

static json_object *doc(const char *name, uint64_t size) {
        json_object *o = json_object_new_object();

        assert_non_null(o);
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "size", json_object_new_uint64(size));
        return o;
}

static uint64_t read_size(int dirfd, const char *name) {
        _cleanup_(json_object_putp) json_object *o = NULL;

        assert_int_equal(store_read_json(dirfd, name, 4096, &o), 0);
        return json_get_u64(o, "size", UINT64_MAX);
}

static void write_json_is_readable_private_and_leaves_no_staging(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *in = doc("a/b", 42), *out = NULL;
        char buf[256] = {};
        struct stat st;
        int fd;

        assert_int_equal(store_write_json(f->pool, "meta.json", in), 0);

        assert_int_equal(store_read_json(f->pool, "meta.json", 4096, &out), 0);
        assert_string_equal(json_get_string(out, "name"), "a/b");
        assert_int_equal(json_get_u64(out, "size", 0), 42);

        assert_int_equal(fstatat(f->pool, "meta.json", &st, AT_SYMLINK_NOFOLLOW), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0600);

        /* Slashes are not escaped; the file ends with a newline. */
        fd = openat(f->pool, "meta.json", O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_true(read(fd, buf, sizeof buf - 1) > 0);
        close(fd);
        assert_non_null(strstr(buf, "\"a/b\""));
        assert_int_equal(buf[strlen(buf) - 1], '\n');

        assert_int_equal(count_entries(f->pool, STORE_STAGING_PREFIX), 0);
        assert_int_equal(count_entries(f->pool, ""), 1);
}

static void write_json_replaces_existing_document(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *a = doc("a", 1), *b = doc("b", 2);

        assert_int_equal(store_write_json(f->pool, "meta.json", a), 0);
        assert_int_equal(store_write_json(f->pool, "meta.json", b), 0);
        assert_int_equal(read_size(f->pool, "meta.json"), 2);
        assert_int_equal(count_entries(f->pool, ""), 1);
}

static void write_json_survives_short_writes_and_eintr(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *o = doc("a-rather-long-name-to-need-many-chunks", 7);

        write_chunk = 3;
        write_eintr_once = true;
        assert_int_equal(store_write_json(f->pool, "meta.json", o), 0);
        assert_false(write_eintr_once);
        assert_int_equal(read_size(f->pool, "meta.json"), 7);
}

static void write_json_fsync_failure_keeps_old_content(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *old = doc("old", 1), *new = doc("new", 2);

        assert_int_equal(store_write_json(f->pool, "meta.json", old), 0);

        fsync_calls = 0;
        fsync_fail_at = 1;      /* the staging file's fsync, before the rename */
        assert_int_equal(store_write_json(f->pool, "meta.json", new), -EIO);
        fsync_fail_at = 0;

        assert_int_equal(read_size(f->pool, "meta.json"), 1);
        assert_int_equal(count_entries(f->pool, STORE_STAGING_PREFIX), 0);
}

static void write_json_write_failure_keeps_old_content(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *old = doc("old", 1), *new = doc("new", 2);

        assert_int_equal(store_write_json(f->pool, "meta.json", old), 0);

        write_fail_errno = ENOSPC;
        assert_int_equal(store_write_json(f->pool, "meta.json", new), -ENOSPC);
        write_fail_errno = 0;

        assert_int_equal(read_size(f->pool, "meta.json"), 1);
        assert_int_equal(count_entries(f->pool, STORE_STAGING_PREFIX), 0);
}

static void write_json_refuses_names_outside_or_invalid(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *o = doc("x", 1);
        char abs[128];

        snprintf(abs, sizeof abs, "%s/outside/x.json", f->base);
        assert_int_equal(store_write_json(f->pool, "../outside/x.json", o), -EXDEV);
        assert_int_equal(store_write_json(f->pool, abs, o), -EXDEV);
        assert_int_equal(store_write_json(f->pool, "/x.json", o), -EXDEV);
        assert_int_equal(store_write_json(f->pool, "", o), -EINVAL);
        assert_int_equal(store_write_json(f->pool, "..", o), -EINVAL);
        assert_int_equal(store_write_json(f->pool, "dir/", o), -EINVAL);
        assert_int_equal(store_write_json(f->pool, "x.json", NULL), -EINVAL);

        assert_int_equal(count_entries(f->outside, ""), 0);
        assert_int_equal(count_entries(f->pool, ""), 0);
}

static void read_json_refuses_oversized(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *s = "{\"size\": 1234567890}\n";

        write_file(f->pool, "big.json", s, strlen(s));
        assert_int_equal(store_read_json(f->pool, "big.json", strlen(s) - 1, &o), -EFBIG);
        assert_null(o);
        assert_int_equal(store_read_json(f->pool, "big.json", strlen(s), &o), 0);
        assert_int_equal(json_get_u64(o, "size", 0), 1234567890);
}

static void read_json_refuses_garbage(void **state) {
        static const struct {
                const char *data;
                size_t len;
        } cases[] = {
                { "", 0 },
                { "{", 1 },
                { "not json", 8 },
                { "{} trailing", 11 },
                { "{}{}", 4 },
                { "{}\0{\"x\":1}", 10 },
                { "{\"a\":1,}", 8 },
                { "{\"a\":\"\xff\"}", 9 },
        };
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = NULL;

                write_file(f->pool, "bad.json", cases[i].data, cases[i].len);
                if (store_read_json(f->pool, "bad.json", 4096, &o) != -EBADMSG)
                        fail_msg("case %zu was not refused with EBADMSG", i);
                assert_null(o);
        }
}

static void read_json_refuses_non_objects(void **state) {
        static const char *const cases[] = { "[1, 2]\n", "42\n", "\"s\"\n", "null\n", "true\n" };
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                json_object *o = NULL;

                write_file(f->pool, "bad.json", cases[i], strlen(cases[i]));
                assert_int_equal(store_read_json(f->pool, "bad.json", 4096, &o), -EBADMSG);
                assert_null(o);
        }
}

static void read_json_refuses_non_regular_files_without_blocking(void **state) {
        struct fixture *f = *state;
        json_object *o = NULL;

        assert_int_equal(mkfifoat(f->pool, "fifo", 0600), 0);
        assert_int_equal(store_read_json(f->pool, "fifo", 4096, &o), -EBADMSG);
        assert_int_equal(mkdirat(f->pool, "dir", 0700), 0);
        assert_int_equal(store_read_json(f->pool, "dir", 4096, &o), -EBADMSG);
        assert_int_equal(store_read_json(f->pool, "missing", 4096, &o), -ENOENT);
        assert_null(o);
}

static void open_beneath_opens_nested_paths_with_cloexec(void **state) {
        struct fixture *f = *state;
        int fd;

        assert_int_equal(mkdirat(f->pool, "sub", 0700), 0);
        write_file(f->pool, "sub/file", "x", 1);

        fd = open_beneath(f->pool, "sub/file", O_RDONLY, 0);
        assert_true(fd >= 0);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        close(fd);

        /* ".." is fine as long as it stays inside. */
        fd = open_beneath(f->pool, "sub/../sub/file", O_RDONLY, 0);
        assert_true(fd >= 0);
        close(fd);
}

static void open_beneath_refuses_parent_escape(void **state) {
        struct fixture *f = *state;

        write_file(f->outside, "x", "x", 1);
        assert_int_equal(open_beneath(f->pool, "../outside/x", O_RDONLY, 0), -EXDEV);
        assert_int_equal(open_beneath(f->pool, "..", O_RDONLY, 0), -EXDEV);
        assert_int_equal(mkdirat(f->pool, "sub", 0700), 0);
        assert_int_equal(open_beneath(f->pool, "sub/../../outside/x", O_RDONLY, 0), -EXDEV);
        /* Creation is refused the same way and creates nothing. */
        assert_int_equal(open_beneath(f->pool, "../outside/new", O_WRONLY | O_CREAT | O_EXCL, 0600), -EXDEV);
        assert_false(exists(f->outside, "new"));
}

static void open_beneath_refuses_absolute_paths(void **state) {
        struct fixture *f = *state;
        char abs[128];

        write_file(f->pool, "x", "x", 1);
        snprintf(abs, sizeof abs, "%s/pool/x", f->base);
        /* Even an absolute path that names a file inside the pool. */
        assert_int_equal(open_beneath(f->pool, abs, O_RDONLY, 0), -EXDEV);
        assert_int_equal(open_beneath(f->pool, "/", O_RDONLY, 0), -EXDEV);
}

static void open_beneath_refuses_symlinks(void **state) {
        struct fixture *f = *state;

        write_file(f->pool, "target", "x", 1);
        assert_int_equal(mkdirat(f->pool, "dir", 0700), 0);
        write_file(f->pool, "dir/file", "x", 1);
        assert_int_equal(symlinkat("target", f->pool, "inside-link"), 0);
        assert_int_equal(symlinkat("dir", f->pool, "dir-link"), 0);
        assert_int_equal(symlinkat("/etc/passwd", f->pool, "abs-link"), 0);
        assert_int_equal(symlinkat("../outside", f->pool, "out-link"), 0);

        /* Every symlink, harmless or not, as the last component or in the middle. */
        assert_int_equal(open_beneath(f->pool, "inside-link", O_RDONLY, 0), -ELOOP);
        assert_int_equal(open_beneath(f->pool, "dir-link/file", O_RDONLY, 0), -ELOOP);
        assert_int_equal(open_beneath(f->pool, "abs-link", O_RDONLY, 0), -ELOOP);
        assert_int_equal(open_beneath(f->pool, "out-link/x", O_RDONLY | O_CREAT, 0600), -ELOOP);
        assert_int_equal(open_beneath(f->pool, "inside-link", O_RDONLY | O_NOFOLLOW, 0), -ELOOP);
        assert_int_equal(open_beneath(f->pool, "inside-link", O_PATH, 0), -ELOOP);
        assert_int_equal(count_entries(f->outside, ""), 0);

        /* Magic links in /proc would otherwise jump anywhere. */
        int proc = open("/proc/self", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(proc >= 0);
        assert_int_equal(open_beneath(proc, "root/etc/passwd", O_RDONLY, 0), -ELOOP);
        assert_int_equal(open_beneath(proc, "cwd", O_RDONLY, 0), -ELOOP);
        close(proc);
}

static void open_or_create_dir_beneath_creates_reuses_and_refuses_symlinks(void **state) {
        struct fixture *f = *state;
        struct stat st;
        int fd;

        fd = open_or_create_dir_beneath(f->pool, "d", 0700);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        close(fd);

        fd = open_or_create_dir_beneath(f->pool, "d", 0700);
        assert_true(fd >= 0);
        close(fd);

        fd = open_or_create_dir_beneath(f->pool, "d/e", 0700);
        assert_true(fd >= 0);
        close(fd);

        assert_int_equal(symlinkat("../outside", f->pool, "link"), 0);
        assert_int_equal(open_or_create_dir_beneath(f->pool, "link", 0700), -ELOOP);
        assert_int_equal(open_or_create_dir_beneath(f->pool, "link/x", 0700), -ELOOP);
        write_file(f->pool, "file", "x", 1);
        assert_int_equal(open_or_create_dir_beneath(f->pool, "file", 0700), -ENOTDIR);
        assert_int_equal(open_or_create_dir_beneath(f->pool, "../outside/x", 0700), -EXDEV);
        assert_int_equal(count_entries(f->outside, ""), 0);
}

static void fsync_dir_accepts_o_path_fds(void **state) {
        struct fixture *f = *state;
        int fd = openat(f->pool, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(fsync_dir(fd), 0);
        assert_int_equal(fsync_dir(f->pool), 0);
        close(fd);
}

static bool is_staging_name(const char *name) {
        size_t p = strlen(STORE_STAGING_PREFIX);

        if (strncmp(name, STORE_STAGING_PREFIX, p) != 0 || strlen(name) != p + 12)
                return false;
        return strspn(name + p, "abcdefghijklmnopqrstuvwxyz0123456789") == 12;
}

static void staging_entries_get_distinct_random_names(void **state) {
        struct fixture *f = *state;
        _cleanup_free_ char *a = NULL, *b = NULL, *d = NULL;
        struct stat st;
        int fa, fb;

        fa = staging_file_create(f->pool, 0600, &a);
        fb = staging_file_create(f->pool, 0600, &b);
        assert_true(fa >= 0 && fb >= 0);
        assert_int_equal(staging_dir_create(f->pool, 0700, &d), 0);
        assert_true(is_staging_name(a) && is_staging_name(b) && is_staging_name(d));
        assert_string_not_equal(a, b);

        /* The file is opened for writing, close-on-exec. */
        assert_int_equal(__real_write(fa, "x", 1), 1);
        assert_true(fcntl(fa, F_GETFD) & FD_CLOEXEC);
        assert_int_equal(fstatat(f->pool, a, &st, AT_SYMLINK_NOFOLLOW), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_size, 1);
        assert_int_equal(fstatat(f->pool, d, &st, AT_SYMLINK_NOFOLLOW), 0);
        assert_true(S_ISDIR(st.st_mode));

        close(fa);
        close(fb);
}

static void rename_beneath_noreplace_keeps_existing_target(void **state) {
        struct fixture *f = *state;

        write_file(f->pool, "src", "{\"size\": 1}", 11);
        write_file(f->pool, "dst", "{\"size\": 2}", 11);

        assert_int_equal(rename_beneath(f->pool, "src", "dst", false), -EEXIST);
        assert_int_equal(read_size(f->pool, "src"), 1);
        assert_int_equal(read_size(f->pool, "dst"), 2);

        assert_int_equal(rename_beneath(f->pool, "src", "dst", true), 0);
        assert_false(exists(f->pool, "src"));
        assert_int_equal(read_size(f->pool, "dst"), 1);

        assert_int_equal(rename_beneath(f->pool, "dst", "new", false), 0);
        assert_int_equal(read_size(f->pool, "new"), 1);

        assert_int_equal(rename_beneath(f->pool, "missing", "other", false), -ENOENT);
        assert_int_equal(rename_beneath(f->pool, "new", "../outside/new", false), -EXDEV);
        assert_int_equal(rename_beneath(f->pool, "../outside", "stolen", false), -EXDEV);
        assert_true(exists(f->pool, "new"));
}

static void remove_tree_beneath_removes_links_not_their_targets(void **state) {
        struct fixture *f = *state;
        char abs[128];

        write_file(f->outside, "keep", "x", 1);
        assert_int_equal(mkdirat(f->outside, "keepdir", 0700), 0);
        write_file(f->outside, "keepdir/file", "x", 1);

        assert_int_equal(mkdirat(f->pool, "tree", 0700), 0);
        assert_int_equal(mkdirat(f->pool, "tree/a", 0700), 0);
        assert_int_equal(mkdirat(f->pool, "tree/a/b", 0700), 0);
        assert_int_equal(mkdirat(f->pool, "tree/a/b/c", 0700), 0);
        write_file(f->pool, "tree/a/b/c/file", "x", 1);
        write_file(f->pool, "tree/a/file", "x", 1);
        assert_int_equal(mkfifoat(f->pool, "tree/a/fifo", 0600), 0);
        assert_int_equal(symlinkat("../../../outside/keepdir", f->pool, "tree/a/b/rel-dir-link"), 0);
        snprintf(abs, sizeof abs, "%s/outside/keep", f->base);
        assert_int_equal(symlinkat(abs, f->pool, "tree/abs-file-link"), 0);

        assert_int_equal(remove_tree_beneath(f->pool, "tree"), 0);
        assert_false(exists(f->pool, "tree"));
        assert_true(exists(f->outside, "keep"));
        assert_true(exists(f->outside, "keepdir/file"));

        assert_int_equal(remove_tree_beneath(f->pool, "tree"), -ENOENT);

        /* The top-level entry itself being a symlink to a directory. */
        assert_int_equal(symlinkat("../outside/keepdir", f->pool, "top-link"), 0);
        assert_int_equal(remove_tree_beneath(f->pool, "top-link"), 0);
        assert_false(exists(f->pool, "top-link"));
        assert_true(exists(f->outside, "keepdir/file"));

        assert_int_equal(remove_tree_beneath(f->pool, "../outside"), -EXDEV);
        assert_int_equal(remove_tree_beneath(f->pool, "../outside/keep"), -EXDEV);
        assert_true(exists(f->outside, "keep"));
}

static void remove_tree_beneath_stops_at_depth_limit(void **state) {
        struct fixture *f = *state;
        char path[256] = "deep";

        assert_int_equal(mkdirat(f->pool, path, 0700), 0);
        for (int i = 0; i < 20; i++) {
                strcat(path, "/d");
                assert_int_equal(mkdirat(f->pool, path, 0700), 0);
        }
        /* What lies beyond the limit stays, and so does everything above it. */
        assert_int_equal(remove_tree_beneath(f->pool, "deep"), -ELOOP);
        assert_true(exists(f->pool, path));
}

/* No cmocka assertions here: a failing one would longjmp back into the test runner inside the
 * child. */
static bool create_file(const char *path) {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

        if (fd < 0)
                return false;
        close(fd);
        return true;
}

/* Runs in a child in its own mount namespace. Returns 0 when the mounts inside the tree
 * survived, 77 when mounting is not possible here, other values for a failure. */
static int mount_child(struct fixture *f) {
        char path[160], src[160];

        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return 77;

        /* fds opened before unshare() still walk the old namespace's mounts. */
        snprintf(path, sizeof path, "%s/pool", f->base);
        f->pool = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(path, sizeof path, "%s/outside", f->base);
        f->outside = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (f->pool < 0 || f->outside < 0)
                return 1;

        if (mkdirat(f->pool, "tree", 0700) < 0 || mkdirat(f->pool, "tree/tmpfs", 0700) < 0 ||
            mkdirat(f->pool, "tree/bind", 0700) < 0)
                return 1;
        snprintf(path, sizeof path, "%s/pool/tree/file", f->base);
        if (!create_file(path))
                return 1;
        snprintf(path, sizeof path, "%s/outside/keep", f->base);
        if (!create_file(path))
                return 1;

        snprintf(path, sizeof path, "%s/pool/tree/tmpfs", f->base);
        if (mount("cistern-test", path, "tmpfs", 0, NULL) < 0)
                return 77;
        snprintf(path, sizeof path, "%s/pool/tree/tmpfs/keep", f->base);
        if (!create_file(path))
                return 2;

        /* A bind mount from the same file system has the same st_dev as its parent. */
        snprintf(src, sizeof src, "%s/outside", f->base);
        snprintf(path, sizeof path, "%s/pool/tree/bind", f->base);
        if (mount(src, path, NULL, MS_BIND, NULL) < 0)
                return 77;

        if (remove_tree_beneath(f->pool, "tree") != -EBUSY)
                return 3;
        if (!exists(f->pool, "tree/tmpfs/keep") || !exists(f->outside, "keep"))
                return 4;
        if (exists(f->pool, "tree/file"))
                return 5;
        return 0;
}

static void remove_tree_beneath_does_not_cross_mounts(void **state) {
        struct fixture *f = *state;
        int status;
        pid_t pid;

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                _exit(mount_child(f));

        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
                skip();
        assert_int_equal(WEXITSTATUS(status), 0);
        /* The child's mounts died with its namespace; the emptied directories remain. */
        assert_true(exists(f->outside, "keep"));
}

static void remove_staging_sweeps_only_prefixed_entries(void **state) {
        struct fixture *f = *state;
        _cleanup_free_ char *name = NULL;
        int fd;

        fd = staging_file_create(f->pool, 0600, &name);
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(mkdirat(f->pool, STORE_STAGING_PREFIX "dir", 0700), 0);
        write_file(f->pool, STORE_STAGING_PREFIX "dir/file", "x", 1);
        assert_int_equal(symlinkat("../outside", f->pool, STORE_STAGING_PREFIX "link"), 0);
        write_file(f->outside, "keep", "x", 1);

        write_file(f->pool, "volume", "x", 1);
        write_file(f->pool, ".stagex", "x", 1);
        write_file(f->pool, "stage-x", "x", 1);
        assert_int_equal(mkdirat(f->pool, "sub", 0700), 0);
        write_file(f->pool, "sub/" STORE_STAGING_PREFIX "nested", "x", 1);

        assert_int_equal(store_remove_staging(f->pool), 3);
        assert_int_equal(count_entries(f->pool, STORE_STAGING_PREFIX), 0);
        assert_true(exists(f->pool, "volume"));
        assert_true(exists(f->pool, ".stagex"));
        assert_true(exists(f->pool, "stage-x"));
        assert_true(exists(f->pool, "sub/" STORE_STAGING_PREFIX "nested"));
        assert_true(exists(f->outside, "keep"));

        assert_int_equal(store_remove_staging(f->pool), 0);
}

static void json_accessors_check_types(void **state) {
        _cleanup_(json_object_putp) json_object *o =
                json_tokener_parse("{ \"n\": 5, \"neg\": -1, \"big\": 18446744073709551615,"
                                   "  \"dbl\": 1.5, \"str\": \"5\", \"t\": true, \"f\": false }");

        assert_non_null(o);
        assert_int_equal(json_get_u64(o, "n", 9), 5);
        assert_int_equal(json_get_u64(o, "neg", 9), 9);
        assert_true(json_get_u64(o, "big", 9) == UINT64_MAX);
        assert_int_equal(json_get_u64(o, "dbl", 9), 9);
        assert_int_equal(json_get_u64(o, "str", 9), 9);
        assert_int_equal(json_get_u64(o, "missing", 9), 9);
        assert_int_equal(json_get_u64(NULL, "n", 9), 9);

        assert_true(json_get_bool(o, "t", false));
        assert_false(json_get_bool(o, "f", true));
        assert_true(json_get_bool(o, "n", true));
        assert_false(json_get_bool(o, "missing", false));

        assert_string_equal(json_get_string(o, "str"), "5");
        assert_null(json_get_string(o, "n"));
        assert_null(json_get_string(o, "missing"));
        assert_null(json_get_string(NULL, "str"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
        const struct CMUnitTest tests[] = {
                T(write_json_is_readable_private_and_leaves_no_staging),
                T(write_json_replaces_existing_document),
                T(write_json_survives_short_writes_and_eintr),
                T(write_json_fsync_failure_keeps_old_content),
                T(write_json_write_failure_keeps_old_content),
                T(write_json_refuses_names_outside_or_invalid),
                T(read_json_refuses_oversized),
                T(read_json_refuses_garbage),
                T(read_json_refuses_non_objects),
                T(read_json_refuses_non_regular_files_without_blocking),
                T(open_beneath_opens_nested_paths_with_cloexec),
                T(open_beneath_refuses_parent_escape),
                T(open_beneath_refuses_absolute_paths),
                T(open_beneath_refuses_symlinks),
                T(open_or_create_dir_beneath_creates_reuses_and_refuses_symlinks),
                T(fsync_dir_accepts_o_path_fds),
                T(staging_entries_get_distinct_random_names),
                T(rename_beneath_noreplace_keeps_existing_target),
                T(remove_tree_beneath_removes_links_not_their_targets),
                T(remove_tree_beneath_stops_at_depth_limit),
                T(remove_tree_beneath_does_not_cross_mounts),
                T(remove_staging_sweeps_only_prefixed_entries),
                T(json_accessors_check_types),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
