/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <cmocka.h>

#include "qemu.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)

/* Linked with -Wl,--wrap=execve (see meson.build): the child's execve() lands here. While
 * record_fd is set, the child writes what it was about to run into it (path, argv and envp,
 * each string NUL-terminated, each list ended by an empty string: write() is async-signal-safe)
 * and runs /bin/true instead, so argv tests need no qemu. record_fd is close-on-exec, which is
 * how the spawn code marks every fd it does not pass. */
int __real_execve(const char *path, char *const argv[], char *const envp[]);

static int record_fd = -EBADF;

static void record_string(const char *s) {
        (void) !write(record_fd, s, strlen(s) + 1);
}

int __wrap_execve(const char *path, char *const argv[], char *const envp[]) {
        if (record_fd < 0)
                return __real_execve(path, argv, envp);
        record_string(path);
        for (char *const *a = argv; *a; a++)
                record_string(*a);
        record_string("");
        for (char *const *e = envp; *e; e++)
                record_string(*e);
        record_string("");
        return __real_execve("/bin/true", (char *const[]) { (char *) "true", NULL }, envp);
}

typedef struct Recorded {
        char data[8192];
        const char *path;
        const char *argv[64];
        const char *envp[16];
} Recorded;

static void record_start(void) {
        record_fd = memfd_create("argv", MFD_CLOEXEC);
        assert_true(record_fd >= 0);
}

/* Stops recording and splits what the child wrote. */
static void record_take(Recorded *r) {
        ssize_t n = pread(record_fd, r->data, sizeof r->data - 1, 0);
        size_t i = 0, k;
        char *p;

        record_fd = safe_close(record_fd);
        assert_true(n > 0);
        r->data[n] = '\0';
        p = r->data;
        r->path = p;
        p += strlen(p) + 1;
        for (k = 0; *p; p += strlen(p) + 1)
                r->argv[k++] = p;
        r->argv[k] = NULL;
        for (p++; *p; p += strlen(p) + 1)
                r->envp[i++] = p;
        r->envp[i] = NULL;
}

static int argv_find(const Recorded *r, const char *s) {
        for (int i = 0; r->argv[i]; i++)
                if (streq(r->argv[i], s))
                        return i;
        return -1;
}

static const char *argv_after(const Recorded *r, const char *option) {
        int i = argv_find(r, option);
        return i >= 0 ? r->argv[i + 1] : NULL;
}

/* What every argv cistern builds must look like. */
static void assert_disciplined(const Recorded *r, const char *format) {
        assert_string_equal(r->envp[0], "LC_ALL=C");
        assert_string_equal(r->envp[1], "PATH=/usr/sbin:/usr/bin:/sbin:/bin");
        assert_null(r->envp[2]);
        for (int i = 0; r->argv[i]; i++) {
                /* Files are fds: no name of ours for qemu to resolve, no pseudo-protocol. */
                assert_null(strstr(r->argv[i], "json:"));
                if (r->argv[i][0] == '/')
                        assert_true(strncmp(r->argv[i], "/proc/self/fd/", 14) == 0);
        }
        if (streq(r->path, QEMU_IMG_PATH)) {
                /* The format is always named, and cistern never creates backing chains: no
                 * backing file, so no -F either. */
                assert_string_equal(argv_after(r, "-f"), format);
                for (int i = 0; r->argv[i]; i++)
                        assert_null(strstr(r->argv[i], "backing"));
                assert_int_equal(argv_find(r, "-F"), -1);
                assert_int_equal(argv_find(r, "-b"), -1);
        }
}

typedef struct Fixture {
        char dir[64];
        int dirfd;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        snprintf(f->dir, sizeof f->dir, "/var/tmp/test-qemu-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->dirfd = open(f->dir, O_DIRECTORY | O_CLOEXEC);
        assert_true(f->dirfd >= 0);
        *state = f;
        return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path);
}

static int teardown(void **state) {
        Fixture *f = *state;

        record_fd = safe_close(record_fd);
        safe_close(f->dirfd);
        assert_int_equal(nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
        free(f);
        return 0;
}

static int file_new(Fixture *f, const char *name) {
        int fd = openat(f->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        return fd;
}

static bool have(const char *path) {
        return access(path, X_OK) == 0;
}

/* ---- the names of formats ---- */

static void formats_have_names_and_nothing_else_parses(void **state) {
        assert_string_equal(qemu_format_to_string(QEMU_FORMAT_RAW), "raw");
        assert_string_equal(qemu_format_to_string(QEMU_FORMAT_QCOW2), "qcow2");
        assert_null(qemu_format_to_string(_QEMU_FORMAT_MAX));
        assert_int_equal(qemu_format_from_string("qcow2"), QEMU_FORMAT_QCOW2);
        assert_int_equal(qemu_format_from_string("raw"), QEMU_FORMAT_RAW);
        assert_int_equal(qemu_format_from_string("vmdk"), -EINVAL);
        assert_int_equal(qemu_format_from_string(""), -EINVAL);
        assert_int_equal(qemu_format_from_string(NULL), -EINVAL);
}

/* ---- progress of qemu-img -p ---- */

static void progress_records_parse_to_hundredths(void **state) {
        assert_int_equal(qemu_progress_parse("    (0.00/100%)"), 0);
        assert_int_equal(qemu_progress_parse("    (12.34/100%)"), 1234);
        assert_int_equal(qemu_progress_parse("    (100.00/100%)"), 10000);
        assert_int_equal(qemu_progress_parse("(5.5/100%)"), 550);
        assert_int_equal(qemu_progress_parse("(42/100%)  "), 4200);
        assert_int_equal(qemu_progress_parse("(100.01/100%)"), -EINVAL);
        assert_int_equal(qemu_progress_parse("(1000.00/100%)"), -EINVAL);
        assert_int_equal(qemu_progress_parse("(12.34/100%"), -EINVAL);
        assert_int_equal(qemu_progress_parse("(12.345/100%)"), -EINVAL);
        assert_int_equal(qemu_progress_parse("(/100%)"), -EINVAL);
        assert_int_equal(qemu_progress_parse("(1./100%)"), -EINVAL);
        assert_int_equal(qemu_progress_parse("12.34"), -EINVAL);
        assert_int_equal(qemu_progress_parse(""), -EINVAL);
        assert_int_equal(qemu_progress_parse("qemu-img: Could not open"), -EINVAL);
        assert_int_equal(qemu_progress_parse("(12.34/100%) trailing"), -EINVAL);
}

/* Output as qemu-img 7.2 writes it into a pipe, read in every chunk size from 1 to 16 bytes:
 * records split anywhere still give each value once, in order. */
static void progress_stream_split_anywhere_parses_the_same(void **state) {
        static const char out[] =
                "    (0.00/100%)\r    (1.33/100%)\r    (2.67/100%)\r    (10.67/100%)\r"
                "    (99.99/100%)\r    (100.00/100%)\r\n";
        static const int expected[] = { 0, 133, 267, 1067, 9999, 10000 };

        for (size_t chunk = 1; chunk <= 16; chunk++) {
                QemuProgressParser p = {};
                size_t seen = 0;

                for (size_t at = 0; at < sizeof out - 1; at += chunk) {
                        size_t n = MIN(chunk, sizeof out - 1 - at);
                        /* At most one record ends in a chunk this small, so each value shows. */
                        int h = qemu_progress_feed(&p, out + at, n);
                        if (h >= 0) {
                                assert_true(seen < ELEMENTSOF(expected));
                                assert_int_equal(h, expected[seen++]);
                        }
                }
                assert_int_equal(seen, ELEMENTSOF(expected));
        }
}

static void progress_stream_ignores_noise_and_overlong_records(void **state) {
        QemuProgressParser p = {};
        char big[200];

        memset(big, '(', sizeof big);
        assert_int_equal(qemu_progress_feed(&p, big, sizeof big), -1);
        /* The tail of the overlong record is no record either. */
        assert_int_equal(qemu_progress_feed(&p, "(5.00/100%)\r", 12), -1);
        assert_int_equal(qemu_progress_feed(&p, "warning: x\n(7.00/100%)\r(8.00/100%)", 35), 700);
        assert_int_equal(qemu_progress_feed(&p, "\r", 1), 800);
}

/* ---- the spawn primitive ---- */

static int run(const char *path, const char *const *argv, QemuRun *ret) {
        return qemu_spawn_run(&(QemuSpawn) { .path = path, .argv = argv }, ret);
}

static void spawn_environment_is_clean(void **state) {
        QemuRun r;

        assert_int_equal(setenv("CISTERN_TEST_SECRET", "leak", 1), 0);
        assert_int_equal(run("/usr/bin/env", (const char *[]) { "env", NULL }, &r), 0);
        assert_int_equal(r.status, 0);
        assert_string_equal(r.out, "LC_ALL=C\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n");
        assert_string_equal(r.err, "");
}

/* ls -l /proc/self/fd in the child: 0 /dev/null, 1 and 2 pipes, 3 the one fd passed, and
 * nothing else but the directory ls reads itself — although the test holds inheritable fds. */
static void spawn_inherits_only_stdio_and_the_fds_passed(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int leak = open("/dev/null", O_RDONLY), passed = file_new(f, "passed");
        char *line, *save = NULL, expected[128];
        unsigned others = 0;
        QemuRun r;

        assert_true(leak >= 0);
        assert_true(fcntl(leak, F_GETFD) == 0);         /* not close-on-exec */
        snprintf(expected, sizeof expected, "%s/passed", f->dir);
        assert_int_equal(qemu_spawn_run(&(QemuSpawn) {
                        .path = "/bin/ls",
                        .argv = (const char *[]) { "ls", "-l", "/proc/self/fd/", NULL },
                        .fds = &passed,
                        .n_fds = 1,
                }, &r), 0);
        assert_int_equal(r.status, 0);
        for (line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                const char *arrow = strstr(line, " -> "), *number = arrow;
                unsigned long fd;

                if (!arrow)
                        continue;       /* "total 0" */
                while (number > line && number[-1] != ' ')
                        number--;
                fd = strtoul(number, NULL, 10);
                if (fd == 0)
                        assert_string_equal(arrow + 4, "/dev/null");
                else if (fd == 1 || fd == 2)
                        assert_true(strncmp(arrow + 4, "pipe:", 5) == 0);
                else if (fd == 3)
                        assert_string_equal(arrow + 4, expected);
                else {
                        assert_true(strncmp(arrow + 4, "/proc/", 6) == 0);
                        others++;
                }
        }
        assert_true(others <= 1);
}

static void spawn_applies_the_resource_limits(void **state) {
        QemuRun r;

        assert_int_equal(qemu_spawn_run(&(QemuSpawn) {
                        .path = "/bin/sh",
                        .argv = (const char *[]) { "sh", "-c", "ulimit -v; ulimit -t; ulimit -c", NULL },
                        .as_limit = QEMU_IMG_AS_LIMIT,
                        .cpu_limit = 77,
                }, &r), 0);
        assert_int_equal(r.status, 0);
        assert_string_equal(r.out, "1048576\n77\n0\n");
}

/* Worker threads block every signal; the child must not keep that mask (qemu needs SIGTERM) nor
 * any ignored signal, nor the daemon's session. */
static void spawn_resets_signals_and_starts_a_session(void **state) {
        unsigned pid, sid, pgid;
        sigset_t all, saved;
        QemuRun r;

        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &saved);
        signal(SIGPIPE, SIG_IGN);
        assert_int_equal(run("/bin/grep", (const char *[]) { "grep", "Sig[BI][lg][kn]", "/proc/self/status", NULL }, &r), 0);
        signal(SIGPIPE, SIG_DFL);
        pthread_sigmask(SIG_SETMASK, &saved, NULL);
        assert_int_equal(r.status, 0);
        assert_string_equal(r.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");

        assert_int_equal(run("/bin/sh", (const char *[]) { "sh", "-c",
                             "read pid comm state ppid pgrp sid rest </proc/$$/stat; echo $pid $sid $pgrp", NULL }, &r), 0);
        assert_int_equal(r.status, 0);
        assert_int_equal(sscanf(r.out, "%u %u %u", &pid, &sid, &pgid), 3);
        assert_int_equal(sid, pid);
        assert_int_equal(pgid, pid);
}

static void spawn_reports_exit_status_signal_and_stderr(void **state) {
        QemuRun r;

        assert_int_equal(run("/bin/sh", (const char *[]) { "sh", "-c", "echo out; echo oops >&2; exit 3", NULL }, &r), 0);
        assert_int_equal(r.status, 3);
        assert_int_equal(r.signal, 0);
        assert_string_equal(r.out, "out\n");
        assert_string_equal(r.err, "oops\n");

        assert_int_equal(run("/bin/sh", (const char *[]) { "sh", "-c", "kill -9 $$", NULL }, &r), 0);
        assert_int_equal(r.signal, SIGKILL);
        assert_int_equal(r.status, 128 + SIGKILL);

        /* A program that is not there: the child says so and exits 127. */
        assert_int_equal(run("/nonexistent/qemu-img", (const char *[]) { "qemu-img", NULL }, &r), 0);
        assert_int_equal(r.status, 127);
        assert_non_null(strstr(r.err, "cannot set up or execute"));

        assert_int_equal(run("bin/true", (const char *[]) { "true", NULL }, &r), -EINVAL);
        assert_int_equal(qemu_spawn_run(&(QemuSpawn) {
                        .path = "/bin/true", .argv = (const char *[]) { "true", NULL },
                        .fds = (const int[5]) {}, .n_fds = 5 }, &r), -EINVAL);
}

static void spawn_keeps_only_the_end_of_long_output(void **state) {
        QemuRun r;

        assert_int_equal(run("/bin/sh", (const char *[]) { "sh", "-c",
                             "head -c 100000 /dev/zero | tr '\\0' a; echo end; head -c 5000 /dev/zero | tr '\\0' b >&2", NULL }, &r), 0);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.out_len, QEMU_OUTPUT_MAX);
        assert_true(r.out_truncated);
        assert_int_equal(strlen(r.out), QEMU_OUTPUT_MAX);
        assert_string_equal(r.out + QEMU_OUTPUT_MAX - 5, "aend\n");
        assert_int_equal(r.err_len, QEMU_OUTPUT_MAX);
        assert_true(r.err_truncated);
}

typedef struct Canceller {
        CopyProgress *progress;
        unsigned msec;
} Canceller;

static void *cancel_later(void *userdata) {
        Canceller *c = userdata;

        usleep(c->msec * 1000);
        atomic_store(&c->progress->cancel, true);
        return NULL;
}

static bool process_gone(pid_t pid) {
        char path[64], stat[256] = {};
        FILE *f;

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return true;
        (void) !fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        return strstr(stat, ") Z ") != NULL;      /* a zombie waiting for init */
}

/* The shell and the sleep it left in the background both go, within the polling interval. */
static void cancel_kills_the_whole_group_promptly(void **state) {
        CopyProgress progress = { .total = 100 };
        Canceller c = { .progress = &progress, .msec = 200 };
        pthread_t thread;
        usec_t start;
        QemuRun r;
        int bg;

        assert_int_equal(pthread_create(&thread, NULL, cancel_later, &c), 0);
        start = now_usec(CLOCK_MONOTONIC);
        assert_int_equal(qemu_spawn_run(&(QemuSpawn) {
                        .path = "/bin/sh",
                        .argv = (const char *[]) { "sh", "-c", "sleep 60 & echo $!; sleep 60", NULL },
                        .progress = &progress,
                }, &r), -ECANCELED);
        assert_true(now_usec(CLOCK_MONOTONIC) - start < 2 * USEC_PER_SEC);
        assert_int_equal(pthread_join(thread, NULL), 0);
        assert_int_equal(r.signal, SIGKILL);
        bg = atoi(r.out);
        assert_true(bg > 0);
        for (int i = 0; i < 50 && !process_gone(bg); i++)
                usleep(10000);
        assert_true(process_gone(bg));
}

static void timeout_kills_the_child(void **state) {
        usec_t start = now_usec(CLOCK_MONOTONIC);
        QemuRun r;

        assert_int_equal(qemu_spawn_run(&(QemuSpawn) {
                        .path = "/bin/sleep",
                        .argv = (const char *[]) { "sleep", "60", NULL },
                        .timeout = 200 * USEC_PER_MSEC,
                }, &r), -ETIMEDOUT);
        assert_true(now_usec(CLOCK_MONOTONIC) - start < 2 * USEC_PER_SEC);
        assert_int_equal(r.signal, SIGKILL);
}

/* Progress lines on stdout move progress->done, scaled to progress->total. */
static void spawn_maps_progress_output_onto_total(void **state) {
        CopyProgress progress = { .total = 1000 * MiB };
        QemuRun r;

        assert_int_equal(qemu_spawn_run(&(QemuSpawn) {
                        .path = "/usr/bin/printf",
                        .argv = (const char *[]) { "printf", "    (0.00/100%%)\\r    (25.00/100%%)\\r", NULL },
                        .progress = &progress,
                }, &r), 0);
        assert_int_equal(r.status, 0);
        assert_int_equal(atomic_load(&progress.done), 250 * MiB);
}

/* ---- the argv of every operation, recorded by __wrap_execve() ---- */

static void create_names_the_format(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int fd = file_new(f, "img");
        Recorded r;

        record_start();
        assert_int_equal(qemu_img_create(fd, QEMU_FORMAT_QCOW2, 10 * MiB, false, NULL), 0);
        record_take(&r);
        assert_string_equal(r.path, QEMU_IMG_PATH);
        assert_disciplined(&r, "qcow2");
        assert_string_equal(r.argv[1], "create");
        assert_string_equal(argv_after(&r, "-o"), "preallocation=off");
        assert_string_equal(argv_after(&r, "/proc/self/fd/3"), "10485760");

        record_start();
        assert_int_equal(qemu_img_create(fd, QEMU_FORMAT_RAW, 512, true, NULL), 0);
        record_take(&r);
        assert_disciplined(&r, "raw");
        assert_string_equal(argv_after(&r, "-o"), "preallocation=falloc");

        assert_int_equal(qemu_img_create(fd, (QemuFormat) 7, 512, false, NULL), -EINVAL);
        assert_int_equal(qemu_img_create(fd, QEMU_FORMAT_RAW, 0, false, NULL), -EINVAL);
        assert_int_equal(qemu_img_create(f->dirfd, QEMU_FORMAT_RAW, 512, false, NULL), -EINVAL);
}

static void resize_names_the_format_and_shrinks_only_when_told(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int fd = file_new(f, "img");
        Recorded r;

        record_start();
        assert_int_equal(qemu_img_resize(fd, QEMU_FORMAT_RAW, 4 * MiB, false, NULL), 0);
        record_take(&r);
        assert_disciplined(&r, "raw");
        assert_string_equal(r.argv[1], "resize");
        assert_int_equal(argv_find(&r, "--shrink"), -1);
        assert_string_equal(argv_after(&r, "/proc/self/fd/3"), "4194304");

        record_start();
        assert_int_equal(qemu_img_resize(fd, QEMU_FORMAT_QCOW2, 2 * MiB, true, NULL), 0);
        record_take(&r);
        assert_disciplined(&r, "qcow2");
        assert_true(argv_find(&r, "--shrink") > 0);
        assert_true(argv_find(&r, "--shrink") < argv_find(&r, "/proc/self/fd/3"));
}

static void convert_names_both_formats_and_both_caches(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int src = file_new(f, "src"), dst = file_new(f, "dst");
        CopyProgress progress = { .total = MiB };
        Recorded r;

        record_start();
        assert_int_equal(qemu_img_convert(src, QEMU_FORMAT_RAW, dst, QEMU_FORMAT_QCOW2,
                                          &(QemuConvertOptions) { .compress = true, .sparse = true },
                                          &progress, NULL), 0);
        record_take(&r);
        assert_disciplined(&r, "raw");
        assert_string_equal(r.argv[1], "convert");
        assert_string_equal(argv_after(&r, "-O"), "qcow2");
        assert_true(argv_find(&r, "-p") > 0);
        assert_true(argv_find(&r, "-c") > 0);
        assert_string_equal(argv_after(&r, "-S"), "4k");
        /* Direct I/O exactly where the filesystem takes it. */
        assert_string_equal(argv_after(&r, "-t"), qemu_probe_direct(dst) > 0 ? "none" : "writeback");
        assert_string_equal(argv_after(&r, "-T"), qemu_probe_direct(src) > 0 ? "none" : "writeback");
        assert_string_equal(argv_after(&r, "/proc/self/fd/3"), "/proc/self/fd/4");
        assert_int_equal(atomic_load(&progress.done), MiB);

        record_start();
        assert_int_equal(qemu_img_convert(dst, QEMU_FORMAT_QCOW2, src, QEMU_FORMAT_RAW,
                                          &(QemuConvertOptions) { .sparse = false }, NULL, NULL), 0);
        record_take(&r);
        assert_disciplined(&r, "qcow2");
        assert_string_equal(argv_after(&r, "-O"), "raw");
        assert_int_equal(argv_find(&r, "-p"), -1);
        assert_int_equal(argv_find(&r, "-c"), -1);
        assert_string_equal(argv_after(&r, "-S"), "0");

        /* Compression is a qcow2 thing; a file onto itself is refused before qemu runs. */
        assert_int_equal(qemu_img_convert(src, QEMU_FORMAT_QCOW2, dst, QEMU_FORMAT_RAW,
                                          &(QemuConvertOptions) { .compress = true }, NULL, NULL), -EINVAL);
        assert_int_equal(qemu_img_convert(src, QEMU_FORMAT_RAW, src, QEMU_FORMAT_QCOW2, NULL, NULL, NULL), -EINVAL);
}

static void storage_daemon_opens_no_backing_file_and_no_path(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int img = file_new(f, "img"), mnt = file_new(f, "mnt"), pidfile = file_new(f, "pid");
        _cleanup_free_ char *error = NULL;
        int pidfd = -EBADF;
        Recorded r;
        pid_t pid;

        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "../mnt", pidfile, false, &pid, &pidfd, NULL), -EINVAL);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "", pidfile, false, &pid, &pidfd, NULL), -EINVAL);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "..", pidfile, false, &pid, &pidfd, NULL), -EINVAL);
        assert_int_equal(symlinkat("mnt", f->dirfd, "link"), 0);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "link", pidfile, false, &pid, &pidfd, NULL), -ELOOP);

        /* /bin/true writes no pid: the spawn fails, which does not matter here. */
        record_start();
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "mnt", pidfile, false, &pid, &pidfd, &error), -EBADMSG);
        record_take(&r);
        assert_non_null(error);
        assert_string_equal(r.path, QEMU_STORAGE_DAEMON_PATH);
        assert_disciplined(&r, "qcow2");
        assert_true(argv_find(&r, "--daemonize") > 0);
        assert_string_equal(argv_after(&r, "--pidfile"), "/proc/self/fd/5");
        assert_string_equal(argv_after(&r, "--blockdev"),
                            "{\"driver\":\"file\",\"node-name\":\"file\",\"filename\":\"/proc/self/fd/3\","
                            "\"cache\":{\"direct\":true},\"read-only\":true,\"discard\":\"unmap\"}");
        assert_string_equal(r.argv[argv_find(&r, "--blockdev") + 3],
                            "{\"driver\":\"qcow2\",\"node-name\":\"fmt\",\"file\":\"file\",\"read-only\":true,"
                            "\"discard\":\"unmap\",\"backing\":null}");
        assert_string_equal(argv_after(&r, "--export"),
                            "type=fuse,id=exp,node-name=fmt,mountpoint=/proc/self/fd/4,writable=off,"
                            "growable=off,allow-other=off");
        /* "backing" appears once, to say there is none. */
        for (int i = 0; r.argv[i]; i++)
                if (strstr(r.argv[i], "backing"))
                        assert_non_null(strstr(r.argv[i], "\"backing\":null"));
}

/* ---- real qemu-img ---- */

#define IMG_SIZE (16 * MiB)

/* Data at the start, in the middle (unaligned) and at the end; holes between. */
static void write_pattern(int fd) {
        char buf[64 * KiB];

        assert_int_equal(ftruncate(fd, IMG_SIZE), 0);
        for (size_t i = 0; i < sizeof buf; i++)
                buf[i] = (char) (i * 7 + 3);
        assert_int_equal(pwrite(fd, buf, sizeof buf, 0), (ssize_t) sizeof buf);
        assert_int_equal(pwrite(fd, buf, 1000, 5 * MiB + 17), 1000);
        assert_int_equal(pwrite(fd, buf, sizeof buf, IMG_SIZE - sizeof buf), (ssize_t) sizeof buf);
}

static void assert_same_bytes(int a, int b) {
        static char x[MiB], y[MiB];
        struct stat sa, sb;

        assert_int_equal(fstat(a, &sa), 0);
        assert_int_equal(fstat(b, &sb), 0);
        assert_int_equal(sa.st_size, sb.st_size);
        for (off_t at = 0; at < sa.st_size; at += (off_t) sizeof x) {
                ssize_t n = pread(a, x, sizeof x, at);
                assert_true(n > 0);
                assert_int_equal(pread(b, y, sizeof y, at), n);
                assert_memory_equal(x, y, (size_t) n);
        }
}

/* The virtual size a qcow2 header states (big-endian at offset 24), after its magic. */
static uint64_t qcow2_header_size(int fd) {
        uint8_t h[32];
        uint64_t size = 0;

        assert_int_equal(pread(fd, h, sizeof h, 0), (ssize_t) sizeof h);
        assert_memory_equal(h, "QFI\xfb", 4);
        for (int i = 24; i < 32; i++)
                size = size << 8 | h[i];
        return size;
}

static void real_create_and_resize(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int raw = file_new(f, "raw"), qcow2 = file_new(f, "qcow2");
        _cleanup_free_ char *error = NULL;
        struct stat st;

        if (!have(QEMU_IMG_PATH))
                skip();
        assert_int_equal(qemu_img_create(raw, QEMU_FORMAT_RAW, IMG_SIZE, false, NULL), 0);
        assert_int_equal(fstat(raw, &st), 0);
        assert_int_equal(st.st_size, IMG_SIZE);
        assert_true((uint64_t) st.st_blocks * 512 < IMG_SIZE);          /* sparse */

        assert_int_equal(qemu_img_create(qcow2, QEMU_FORMAT_QCOW2, IMG_SIZE, false, NULL), 0);
        assert_int_equal(qcow2_header_size(qcow2), IMG_SIZE);

        /* Reading raw bytes as qcow2 fails, and qemu says why. */
        assert_int_equal(qemu_img_resize(raw, QEMU_FORMAT_QCOW2, 2 * IMG_SIZE, false, &error), -EIO);
        assert_non_null(error);
        print_message("qemu-img resize of raw bytes as qcow2: %s\n", error);
        assert_non_null(strstr(error, "qcow2"));
        error = mfree(error);

        assert_int_equal(qemu_img_resize(raw, QEMU_FORMAT_RAW, 2 * IMG_SIZE, false, NULL), 0);
        assert_int_equal(fstat(raw, &st), 0);
        assert_int_equal(st.st_size, 2 * IMG_SIZE);
        assert_int_equal(qemu_img_resize(raw, QEMU_FORMAT_RAW, IMG_SIZE, false, &error), -EIO);
        assert_non_null(strstr(error, "--shrink"));
        assert_int_equal(qemu_img_resize(raw, QEMU_FORMAT_RAW, IMG_SIZE, true, NULL), 0);
        assert_int_equal(fstat(raw, &st), 0);
        assert_int_equal(st.st_size, IMG_SIZE);

        assert_int_equal(qemu_img_resize(qcow2, QEMU_FORMAT_QCOW2, 2 * IMG_SIZE, false, NULL), 0);
        assert_int_equal(qcow2_header_size(qcow2), 2 * IMG_SIZE);
}

static void real_convert_round_trip_keeps_the_bytes(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int raw = file_new(f, "raw"), qcow2 = file_new(f, "qcow2"),
                back = open(f->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600),
                zipped = file_new(f, "zipped"), back2 = file_new(f, "back2");
        CopyProgress progress = { .total = IMG_SIZE };
        struct stat st;

        if (!have(QEMU_IMG_PATH))
                skip();
        assert_true(back >= 0);
        write_pattern(raw);

        assert_int_equal(qemu_img_convert(raw, QEMU_FORMAT_RAW, qcow2, QEMU_FORMAT_QCOW2,
                                          &(QemuConvertOptions) { .sparse = true }, &progress, NULL), 0);
        assert_int_equal(atomic_load(&progress.done), IMG_SIZE);
        assert_int_equal(qcow2_header_size(qcow2), IMG_SIZE);
        assert_int_equal(fstat(qcow2, &st), 0);
        assert_true((uint64_t) st.st_size < 2 * MiB);                             /* the holes stayed holes */

        progress = (CopyProgress) { .total = IMG_SIZE };
        assert_int_equal(qemu_img_convert(qcow2, QEMU_FORMAT_QCOW2, back, QEMU_FORMAT_RAW,
                                          &(QemuConvertOptions) { .sparse = true }, &progress, NULL), 0);
        assert_int_equal(atomic_load(&progress.done), IMG_SIZE);
        assert_same_bytes(raw, back);

        assert_int_equal(qemu_img_convert(raw, QEMU_FORMAT_RAW, zipped, QEMU_FORMAT_QCOW2,
                                          &(QemuConvertOptions) { .compress = true, .sparse = true }, NULL, NULL), 0);
        assert_int_equal(qemu_img_convert(zipped, QEMU_FORMAT_QCOW2, back2, QEMU_FORMAT_RAW,
                                          &(QemuConvertOptions) { .sparse = false }, NULL, NULL), 0);
        assert_same_bytes(raw, back2);
        assert_int_equal(fstat(back2, &st), 0);
        assert_true((uint64_t) st.st_blocks * 512 >= IMG_SIZE);        /* -S 0: all written */
}

/* On a filesystem without O_DIRECT the page cache is used: the probe decides, the result is the same. */
static void real_convert_without_direct_io(void **state) {
        Fixture *f = *state;
        char path[] = "/dev/shm/test-qemu-XXXXXX";
        _cleanup_close_ int raw = file_new(f, "raw"), shm = mkostemp(path, O_CLOEXEC);
        _cleanup_close_ int back = file_new(f, "back");
        _cleanup_free_ char *error = NULL;
        int r;

        if (!have(QEMU_IMG_PATH))
                skip();
        assert_true(shm >= 0);
        assert_int_equal(unlink(path), 0);
        print_message("O_DIRECT on /dev/shm: %d\n", qemu_probe_direct(shm));
        write_pattern(raw);
        r = qemu_img_convert(raw, QEMU_FORMAT_RAW, shm, QEMU_FORMAT_QCOW2, NULL, NULL, &error);
        if (r < 0)
                print_message("%s\n", error);
        assert_int_equal(r, 0);
        assert_int_equal(qemu_img_convert(shm, QEMU_FORMAT_QCOW2, back, QEMU_FORMAT_RAW, NULL, NULL, NULL), 0);
        assert_same_bytes(raw, back);
}

/* ---- real qemu-storage-daemon ---- */

static bool can_fuse(void) {
        return have(QEMU_STORAGE_DAEMON_PATH) && geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0;
}

static void real_storage_daemon_exports_qcow2_over_fuse(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int img = file_new(f, "img"), mnt = file_new(f, "mnt"), pidfile = file_new(f, "pid"),
                raw = file_new(f, "raw"), back = file_new(f, "back"), pidfd = -EBADF, pidfd2 = -EBADF,
                mnt2 = file_new(f, "mnt2"), other_pidfile = file_new(f, "pid2");
        static char buf[IMG_SIZE];
        _cleanup_free_ char *error = NULL;
        char path[128];
        pid_t pid, pid2;
        int exported;

        if (!can_fuse() || !have(QEMU_IMG_PATH))
                skip();
        write_pattern(raw);
        assert_int_equal(qemu_img_create(img, QEMU_FORMAT_QCOW2, IMG_SIZE, false, NULL), 0);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "mnt", pidfile, true, &pid, &pidfd, &error), 0);
        assert_true(pid > 0);

        /* Found again from its pidfile, as after a daemon restart. */
        assert_int_equal(qemu_storage_daemon_find(pidfile, &pid2, &pidfd2), 0);
        assert_int_equal(pid2, pid);
        pidfd2 = safe_close(pidfd2);
        /* A second export onto the same mount point, or with the live daemon's pidfile, is
         * refused, and the first one stays. */
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "mnt", other_pidfile, true, &pid2, &pidfd2, NULL), -EBUSY);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "mnt2", pidfile, true, &pid2, &pidfd2, NULL), -EBUSY);
        assert_int_equal(qemu_storage_daemon_find(pidfile, &pid2, &pidfd2), 0);
        pidfd2 = safe_close(pidfd2);

        snprintf(path, sizeof path, "%s/mnt", f->dir);
        exported = open(path, O_RDWR | O_CLOEXEC);
        assert_true(exported >= 0);
        assert_int_equal(lseek(exported, 0, SEEK_END), IMG_SIZE);
        assert_int_equal(pread(raw, buf, IMG_SIZE, 0), IMG_SIZE);
        assert_int_equal(pwrite(exported, buf, IMG_SIZE, 0), IMG_SIZE);
        assert_int_equal(fsync(exported), 0);
        safe_close(exported);

        /* SIGTERM: it unmounts and exits; the pidfd says so. */
        assert_int_equal(syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0), 0);
        assert_int_equal(poll(&(struct pollfd) { .fd = pidfd, .events = POLLIN }, 1, 10000), 1);
        assert_int_equal(qemu_storage_daemon_find(pidfile, &pid2, &pidfd2), -ESRCH);
        {
                struct stat a, b;
                assert_int_equal(fstat(mnt, &a), 0);
                assert_int_equal(stat(path, &b), 0);
                assert_int_equal(a.st_ino, b.st_ino);   /* nothing mounted there any more */
        }

        /* What went through FUSE is in the qcow2 image. */
        assert_int_equal(qcow2_header_size(img), IMG_SIZE);
        assert_int_equal(qemu_img_convert(img, QEMU_FORMAT_QCOW2, back, QEMU_FORMAT_RAW, NULL, NULL, NULL), 0);
        assert_same_bytes(raw, back);
}

static void real_storage_daemon_read_only_export_refuses_writes(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int img = file_new(f, "img"), mnt = file_new(f, "mnt"), pidfile = file_new(f, "pid"),
                pidfd = -EBADF;
        char path[128];
        pid_t pid;
        int fd;

        if (!can_fuse())
                skip();
        assert_int_equal(ftruncate(img, IMG_SIZE), 0);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_RAW, f->dirfd, "mnt", pidfile, false, &pid, &pidfd, NULL), 0);
        snprintf(path, sizeof path, "%s/mnt", f->dir);
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
                assert_int_equal(pwrite(fd, "x", 1, 0), -1);
                safe_close(fd);
        }
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, (char[512]) {}, 512, 0), 512);
        safe_close(fd);
        assert_int_equal(syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0), 0);
        assert_int_equal(poll(&(struct pollfd) { .fd = pidfd, .events = POLLIN }, 1, 10000), 1);
}

/* A qcow2 export of raw bytes fails with qemu's reason, and leaves no mount behind. */
static void real_storage_daemon_failure_leaves_nothing(void **state) {
        Fixture *f = *state;
        _cleanup_close_ int img = file_new(f, "img"), mnt = file_new(f, "mnt"), pidfile = file_new(f, "pid"),
                pidfd = -EBADF;
        _cleanup_free_ char *error = NULL;
        struct stat a, b;
        char path[128];
        pid_t pid;

        if (!can_fuse())
                skip();
        assert_int_equal(ftruncate(img, IMG_SIZE), 0);
        assert_int_equal(qemu_storage_daemon_spawn(img, QEMU_FORMAT_QCOW2, f->dirfd, "mnt", pidfile, true, &pid, &pidfd, &error), -EIO);
        print_message("qemu-storage-daemon on raw bytes as qcow2: %s\n", error);
        assert_non_null(strstr(error, "qcow2"));
        snprintf(path, sizeof path, "%s/mnt", f->dir);
        assert_int_equal(fstat(mnt, &a), 0);
        assert_int_equal(stat(path, &b), 0);
        assert_int_equal(a.st_ino, b.st_ino);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(formats_have_names_and_nothing_else_parses),
                T(progress_records_parse_to_hundredths),
                T(progress_stream_split_anywhere_parses_the_same),
                T(progress_stream_ignores_noise_and_overlong_records),
                T(spawn_environment_is_clean),
                T(spawn_inherits_only_stdio_and_the_fds_passed),
                T(spawn_applies_the_resource_limits),
                T(spawn_resets_signals_and_starts_a_session),
                T(spawn_reports_exit_status_signal_and_stderr),
                T(spawn_keeps_only_the_end_of_long_output),
                T(cancel_kills_the_whole_group_promptly),
                T(timeout_kills_the_child),
                T(spawn_maps_progress_output_onto_total),
                T(create_names_the_format),
                T(resize_names_the_format_and_shrinks_only_when_told),
                T(convert_names_both_formats_and_both_caches),
                T(storage_daemon_opens_no_backing_file_and_no_path),
                T(real_create_and_resize),
                T(real_convert_round_trip_keeps_the_bytes),
                T(real_convert_without_direct_io),
                T(real_storage_daemon_exports_qcow2_over_fuse),
                T(real_storage_daemon_read_only_export_refuses_writes),
                T(real_storage_daemon_failure_leaves_nothing),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}
