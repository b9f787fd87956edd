/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "qemu.h"

#define GiB (UINT64_C(1) << 30)

/* Against an image crafted to keep qemu busy forever, not against honest work: convert gets
 * time in proportion to the bytes (zlib compression runs at about 20 MB/s of CPU). */
#define QEMU_IMG_CPU_SEC              60U           /* create, resize */
#define QEMU_IMG_CONVERT_CPU_SEC      3600U
#define QEMU_IMG_CONVERT_CPU_SEC_GIB  120U
#define QEMU_STARTUP_TIMEOUT_USEC     (30 * USEC_PER_SEC)
#define QEMU_POLL_MSEC                100           /* how soon a cancel is noticed */

static const char *const qemu_format_table[_QEMU_FORMAT_MAX] = {
        [QEMU_FORMAT_RAW] = "raw",
        [QEMU_FORMAT_QCOW2] = "qcow2",
};

const char *qemu_format_to_string(QemuFormat f) {
        return f >= 0 && f < _QEMU_FORMAT_MAX ? qemu_format_table[f] : NULL;
}

int qemu_format_from_string(const char *s) {
        for (QemuFormat f = 0; f < _QEMU_FORMAT_MAX; f++)
                if (streq_ptr(s, qemu_format_table[f]))
                        return f;
        return -EINVAL;
}

static int fd_check_regular(int fd) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        return S_ISREG(st.st_mode) ? 0 : -EINVAL;
}

int qemu_probe_direct(int fd) {
        char path[32];
        int probe;

        /* Reopening through /proc asks the filesystem of this very file, as the loop code asks
         * LOOP_CONFIGURE for direct I/O. */
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        probe = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY);
        if (probe >= 0) {
                safe_close(probe);
                return 1;
        }
        return errno == EINVAL ? 0 : -errno;
}

int qemu_progress_parse(const char *s) {
        unsigned whole = 0, hundredths = 0, digits = 0;

        s += strspn(s, " ");
        if (*s++ != '(')
                return -EINVAL;
        for (; *s >= '0' && *s <= '9' && digits < 3; s++, digits++)
                whole = whole * 10 + (unsigned) (*s - '0');
        if (digits == 0)
                return -EINVAL;
        if (*s == '.') {
                s++;
                for (digits = 0; *s >= '0' && *s <= '9' && digits < 2; s++, digits++)
                        hundredths = hundredths * 10 + (unsigned) (*s - '0');
                if (digits == 0)
                        return -EINVAL;
                if (digits == 1)
                        hundredths *= 10;
        }
        if (strncmp(s, "/100%)", 6) != 0)
                return -EINVAL;
        s += 6;
        if (s[strspn(s, " ")] != '\0' || whole * 100 + hundredths > 10000)
                return -EINVAL;
        return (int) (whole * 100 + hundredths);
}

int qemu_progress_feed(QemuProgressParser *p, const char *data, size_t size) {
        int last = -1;

        for (size_t i = 0; i < size; i++) {
                if (data[i] == '\r' || data[i] == '\n') {
                        if (p->len < sizeof p->record) {
                                p->record[p->len] = '\0';
                                int r = qemu_progress_parse(p->record);
                                if (r >= 0)
                                        last = r;
                        }
                        p->len = 0;
                } else if (p->len < sizeof p->record - 1)
                        p->record[p->len++] = data[i];
                else
                        p->len = sizeof p->record;      /* too long: no progress record */
        }
        return last;
}

/* Keeps the last QEMU_OUTPUT_MAX bytes of a stream. */
static void tail_append(char *buf, size_t *len, bool *truncated, const char *data, size_t n) {
        if (n > QEMU_OUTPUT_MAX) {
                data += n - QEMU_OUTPUT_MAX;
                n = QEMU_OUTPUT_MAX;
                *truncated = true;
        }
        if (*len + n > QEMU_OUTPUT_MAX) {
                size_t drop = *len + n - QEMU_OUTPUT_MAX;
                memmove(buf, buf + drop, *len - drop);
                *len -= drop;
                *truncated = true;
        }
        memcpy(buf + *len, data, n);
        *len += n;
        buf[*len] = '\0';
}

static void progress_raise_hundredths(CopyProgress *p, int hundredths) {
        uint64_t h = (uint64_t) hundredths;

        /* total * h / 10000 without overflowing for any total. */
        progress_raise(p, p->total / 10000 * h + p->total % 10000 * h / 10000);
}

/* The child between fork() and execve(). The daemon has other threads, whose locks (malloc's
 * among them) were copied in whatever state they were in: only async-signal-safe calls here. */
_Noreturn static void child_exec(const QemuSpawn *s, const int *stdio, pid_t parent) {
        static const char *const env[] = { "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
        static const char msg[] = "cisternd: cannot set up or execute the child\n";
        int n = 3 + (int) s->n_fds, moved[3 + QEMU_SPAWN_FDS_MAX];
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        sigset_t none;

        /* Worker threads block every signal, and the mask survives execve(). */
        for (int sig = 1; sig < NSIG; sig++)
                (void) sigaction(sig, &dfl, NULL);
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);

        /* A group of its own, which a cancel kills whole; no controlling terminal. */
        if (setsid() < 0)
                goto fail;
        /* Fires when the thread that forked dies: these calls wait for their child, so it is
         * the daemon itself going away. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                goto fail;
        if (s->as_limit > 0 && setrlimit(RLIMIT_AS, &(struct rlimit) { s->as_limit, s->as_limit }) < 0)
                goto fail;
        /* soft = hard: the kernel sends SIGKILL, which no mask or handler can delay. */
        if (s->cpu_limit > 0 && setrlimit(RLIMIT_CPU, &(struct rlimit) { s->cpu_limit, s->cpu_limit }) < 0)
                goto fail;
        /* A core dump would hold guest data. */
        if (setrlimit(RLIMIT_CORE, &(struct rlimit) { 0, 0 }) < 0)
                goto fail;

        /* Every source moves above the target range first, so no dup2() clobbers a source that
         * happens to sit on a target number; the moved copies are close-on-exec. */
        for (int i = 0; i < n; i++) {
                moved[i] = fcntl(i < 3 ? stdio[i] : s->fds[i - 3], F_DUPFD_CLOEXEC, n);
                if (moved[i] < 0)
                        goto fail;
        }
        for (int i = 0; i < n; i++)
                if (dup2(moved[i], i) < 0)      /* the copy at i is inheritable */
                        goto fail;
        if (close_range((unsigned) n, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
                goto fail;

        execve(s->path, (char *const *) s->argv, (char *const *) env);
fail:
        (void) !write(STDERR_FILENO, msg, sizeof msg - 1);
        _exit(127);
}

/* Reads what is there; false at end of file (or on an error: nothing more will come). */
static bool drain(int fd, QemuRun *ret, bool is_out, QemuProgressParser *parser, CopyProgress *progress) {
        char buf[4096];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return errno == EAGAIN;
                if (n == 0)
                        return false;
                if (is_out) {
                        tail_append(ret->out, &ret->out_len, &ret->out_truncated, buf, (size_t) n);
                        int h = progress ? qemu_progress_feed(parser, buf, (size_t) n) : -1;
                        if (h >= 0)
                                progress_raise_hundredths(progress, h);
                } else
                        tail_append(ret->err, &ret->err_len, &ret->err_truncated, buf, (size_t) n);
        }
}

static void log_spawn(const QemuSpawn *s) {
        char line[2048];
        size_t len = 0;

        line[0] = '\0';
        for (const char *const *a = s->argv; *a && len < sizeof line - 1; a++)
                len += (size_t) snprintf(line + len, sizeof line - len, "%s%s", len > 0 ? " " : "", *a);
        log_debug("Running %s: %s", s->path, line);
}

/* Waits for the child, reading its output, until it exits or has to be killed. */
static int wait_child(const QemuSpawn *s, pid_t pid, int pidfd, int out, int err, QemuRun *ret) {
        QemuProgressParser parser = {};
        usec_t deadline = s->timeout > 0 ? now_usec(CLOCK_MONOTONIC) + s->timeout : 0;
        bool out_open = true, err_open = true;
        siginfo_t si = {};
        int r = 0;

        for (;;) {
                struct pollfd p[] = {
                        { .fd = pidfd, .events = POLLIN },
                        { .fd = out_open ? out : -1, .events = POLLIN },
                        { .fd = err_open ? err : -1, .events = POLLIN },
                };
                if (poll(p, ELEMENTSOF(p), QEMU_POLL_MSEC) < 0 && errno != EINTR) {
                        r = -errno;
                        break;
                }
                if (out_open)
                        out_open = drain(out, ret, true, &parser, s->progress);
                if (err_open)
                        err_open = drain(err, ret, false, NULL, NULL);
                if (p[0].revents & POLLIN)
                        break;
                if (progress_cancelled(s->progress)) {
                        r = -ECANCELED;
                        break;
                }
                if (deadline > 0 && now_usec(CLOCK_MONOTONIC) >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
        }

        /* The group goes with its leader, which is not reaped yet: its pid cannot name another
         * group. After an exit this only catches stragglers. */
        (void) kill(-pid, SIGKILL);
        while (waitid(P_PIDFD, (id_t) pidfd, &si, WEXITED) < 0)
                if (errno != EINTR)
                        return r < 0 ? r : -errno;
        ret->signal = si.si_code == CLD_EXITED ? 0 : si.si_status;
        ret->status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
        return r;
}

int qemu_spawn_run(const QemuSpawn *s, QemuRun *ret) {
        _cleanup_close_ int null = -EBADF, out_r = -EBADF, out_w = -EBADF, err_r = -EBADF,
                err_w = -EBADF, pidfd = -EBADF;
        int p[2];
        pid_t parent = getpid(), pid;

        *ret = (QemuRun) {};
        if (!s->path || s->path[0] != '/' || !s->argv || !s->argv[0] || s->n_fds > QEMU_SPAWN_FDS_MAX)
                return -EINVAL;

        null = open("/dev/null", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (null < 0)
                return -errno;
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        out_r = p[0], out_w = p[1];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        err_r = p[0], err_w = p[1];
        if (fcntl(out_r, F_SETFL, O_NONBLOCK) < 0 || fcntl(err_r, F_SETFL, O_NONBLOCK) < 0)
                return -errno;

        log_spawn(s);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0)
                child_exec(s, (const int[]) { null, out_w, err_w }, parent);

        out_w = safe_close(out_w);
        err_w = safe_close(err_w);
        /* Our unreaped child: its pid cannot have been reused. */
        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
                int r = -errno;
                (void) kill(-pid, SIGKILL);
                (void) kill(pid, SIGKILL);
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                return r;
        }
        return wait_child(s, pid, pidfd, out_r, err_r, ret);
}

/* qemu's words for the caller: the last complete lines of stderr, printable ASCII only (they
 * end up in a D-Bus error and the journal). */
static char *run_message(const char *program, const QemuRun *run) {
        const char *s = run->err;
        char *m;
        size_t len;

        if (run->err_truncated && strchr(s, '\n'))
                s = strchr(s, '\n') + 1;
        s += strspn(s, " \t\r\n");
        len = strlen(s);
        while (len > 0 && strchr(" \t\r\n", s[len - 1]))
                len--;
        if (len == 0) {
                if (run->signal > 0)
                        return asprintf(&m, "%s was killed by signal %s.", program,
                                        sigabbrev_np(run->signal) ?: "?") < 0 ? NULL : m;
                return asprintf(&m, "%s failed with exit status %d.", program, run->status) < 0 ? NULL : m;
        }
        m = strndup(s, len);
        if (!m)
                return NULL;
        for (char *c = m; *c; c++)
                if ((*c < ' ' && *c != '\n') || *c > '~')
                        *c = '?';
        return m;
}

/* Runs qemu-img: its exit status, or -errno when it did not end by itself (-EIO when killed by
 * a signal, the CPU limit among them). A message is kept for any failure but cancel. */
static int qemu_img_run(const char *const *argv, const int *fds, size_t n_fds, uint64_t cpu_limit,
                        CopyProgress *progress, char **error) {
        QemuRun run;
        int r;

        r = qemu_spawn_run(&(QemuSpawn) {
                        .path = QEMU_IMG_PATH,
                        .argv = argv,
                        .fds = fds,
                        .n_fds = n_fds,
                        .as_limit = QEMU_IMG_AS_LIMIT,
                        .cpu_limit = cpu_limit,
                        .progress = progress,
                }, &run);
        if (r == 0 && run.signal > 0)
                r = -EIO;
        if (r == 0 && run.status != 0)
                log_debug("qemu-img %s exited with status %d: %s", argv[1], run.status, run.err);
        if ((r < 0 && r != -ECANCELED) || (r == 0 && run.status != 0)) {
                if (error)
                        *error = run_message("qemu-img", &run);
        }
        return r < 0 ? r : run.status;
}

static int fsync_result(int r, int fd) {
        if (r > 0)
                return -EIO;
        if (r == 0 && fsync(fd) < 0)
                return -errno;
        return r;
}

/* What a call that gives the image in fd a size checks, and that size as qemu reads it. */
static int check_sized_call(int fd, QemuFormat format, uint64_t size, char size_arg[static 32]) {
        if (!qemu_format_to_string(format) || size == 0 || size > INT64_MAX)
                return -EINVAL;
        snprintf(size_arg, 32, "%" PRIu64, size);
        return fd_check_regular(fd);
}

int qemu_img_create(int fd, QemuFormat format, uint64_t size, bool preallocate, char **error) {
        char size_arg[32];
        int r;

        r = check_sized_call(fd, format, size, size_arg);
        if (r < 0)
                return r;
        const char *argv[] = {
                "qemu-img", "create", "-q", "-f", qemu_format_to_string(format),
                "-o", preallocate ? "preallocation=falloc" : "preallocation=off",
                "/proc/self/fd/3", size_arg, NULL,
        };
        return fsync_result(qemu_img_run(argv, &fd, 1, QEMU_IMG_CPU_SEC, NULL, error), fd);
}

int qemu_img_resize(int fd, QemuFormat format, uint64_t size, bool shrink, char **error) {
        const char *argv[10];
        char size_arg[32];
        size_t n = 0;
        int r;

        r = check_sized_call(fd, format, size, size_arg);
        if (r < 0)
                return r;
        argv[n++] = "qemu-img";
        argv[n++] = "resize";
        argv[n++] = "-q";
        argv[n++] = "-f";
        argv[n++] = qemu_format_to_string(format);
        if (shrink)
                argv[n++] = "--shrink";         /* without it qemu-img refuses a smaller size */
        argv[n++] = "/proc/self/fd/3";
        argv[n++] = size_arg;
        argv[n] = NULL;
        return fsync_result(qemu_img_run(argv, &fd, 1, QEMU_IMG_CPU_SEC, NULL, error), fd);
}

static int same_file(int a, int b) {
        struct stat sa, sb;

        if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
                return -errno;
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int qemu_img_convert(int src_fd, QemuFormat src_format, int dst_fd, QemuFormat dst_format,
                     const QemuConvertOptions *options, CopyProgress *progress, char **error) {
        const char *argv[24];
        size_t n = 0;
        uint64_t gib = progress ? progress->total / GiB : 0;
        int r, src_direct, dst_direct;

        if (!qemu_format_to_string(src_format) || !qemu_format_to_string(dst_format))
                return -EINVAL;
        if (options && options->compress && dst_format != QEMU_FORMAT_QCOW2)
                return -EINVAL;
        if ((r = fd_check_regular(src_fd)) < 0 || (r = fd_check_regular(dst_fd)) < 0)
                return r;
        r = same_file(src_fd, dst_fd);
        if (r != 0)
                return r < 0 ? r : -EINVAL;
        src_direct = qemu_probe_direct(src_fd);
        if (src_direct < 0)
                return src_direct;
        dst_direct = qemu_probe_direct(dst_fd);
        if (dst_direct < 0)
                return dst_direct;

        argv[n++] = "qemu-img";
        argv[n++] = "convert";
        argv[n++] = progress ? "-p" : "-q";
        argv[n++] = "-f";
        argv[n++] = qemu_format_to_string(src_format);
        argv[n++] = "-O";
        argv[n++] = qemu_format_to_string(dst_format);
        /* convert's own default for the target is "unsafe", which never flushes: always say. */
        argv[n++] = "-T";
        argv[n++] = src_direct ? "none" : "writeback";
        argv[n++] = "-t";
        argv[n++] = dst_direct ? "none" : "writeback";
        argv[n++] = "-S";
        argv[n++] = !options || options->sparse ? "4k" : "0";
        if (options && options->compress)
                argv[n++] = "-c";
        argv[n++] = "/proc/self/fd/3";
        argv[n++] = "/proc/self/fd/4";
        argv[n] = NULL;

        r = qemu_img_run(argv, (const int[]) { src_fd, dst_fd }, 2,
                         QEMU_IMG_CONVERT_CPU_SEC + QEMU_IMG_CONVERT_CPU_SEC_GIB * gib, progress, error);
        r = fsync_result(r, dst_fd);
        if (r == 0 && progress)
                progress_raise(progress, progress->total);
        return r;
}

/* Whether something is mounted on name (a dead FUSE mount included): 1 yes, 0 no. The name,
 * not an fd: an fd opened before the mount keeps naming the file beneath it. */
static int mounted_on(int dirfd, const char *name) {
        struct statx stx;

        if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0)
                return errno == ENOTCONN ? 1 : -errno;
        if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
                return -EOPNOTSUPP;     /* Linux < 5.8 */
        return !!(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

static bool pidfile_locked(int pidfile_fd) {
        struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

        return fcntl(pidfile_fd, F_GETLK, &lock) < 0 || lock.l_type != F_UNLCK;
}

int qemu_storage_daemon_find(int pidfile_fd, pid_t *ret_pid, int *ret_pidfd) {
        _cleanup_close_ int pidfd = -EBADF;
        struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        char buf[32], *end;
        unsigned long pid;
        ssize_t n;

        n = pread(pidfile_fd, buf, sizeof buf - 1, 0);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        errno = 0;
        pid = strtoul(buf, &end, 10);
        if (errno != 0 || end == buf || *end != '\n' || pid == 0 || pid > INT32_MAX)
                return -EBADMSG;
        pidfd = (int) syscall(SYS_pidfd_open, (pid_t) pid, 0);
        if (pidfd < 0)
                return errno == ESRCH ? -ESRCH : -errno;
        /* The daemon holds a lock on its pidfile while it lives. Held by that pid now, after the
         * pidfd was taken: the pidfd is the daemon's, not a recycled pid's. */
        if (fcntl(pidfile_fd, F_GETLK, &lock) < 0)
                return -errno;
        if (lock.l_type == F_UNLCK || lock.l_pid != (pid_t) pid)
                return -ESRCH;
        *ret_pid = (pid_t) pid;
        *ret_pidfd = TAKE_FD(pidfd);
        return 0;
}

/* After a failed start: a daemon that got as far as its pidfile goes (the pidfile was free
 * before, so that is ours), and so does a mount a dead daemon left behind (every access to it
 * would fail with ENOTCONN). */
static void storage_daemon_undo(int mount_dirfd, const char *mount_name, int pidfile_fd) {
        _cleanup_close_ int pidfd = -EBADF;
        char path[PATH_MAX];
        pid_t pid;

        if (qemu_storage_daemon_find(pidfile_fd, &pid, &pidfd) == 0)
                (void) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        if (mounted_on(mount_dirfd, mount_name) > 0) {
                snprintf(path, sizeof path, "/proc/self/fd/%d/%s", mount_dirfd, mount_name);
                if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
                        log_warning_errno(errno, "Failed to unmount the FUSE export of a failed qemu-storage-daemon: %m");
        }
}

static int storage_daemon_check(int image_fd, int mount_dirfd, const char *mount_name, int pidfile_fd) {
        int r;

        if (!mount_name || !*mount_name || strchr(mount_name, '/') || streq(mount_name, ".") ||
            streq(mount_name, "..") || strlen(mount_name) > NAME_MAX)
                return -EINVAL;
        if ((r = fd_check_regular(image_fd)) < 0 || (r = fd_check_regular(pidfile_fd)) < 0)
                return r;
        r = mounted_on(mount_dirfd, mount_name);
        if (r != 0)
                return r < 0 ? r : -EBUSY;
        return pidfile_locked(pidfile_fd) ? -EBUSY : 0;
}

int qemu_storage_daemon_spawn(int image_fd, QemuFormat format, int mount_dirfd, const char *mount_name,
                              int pidfile_fd, bool writable, pid_t *ret_pid, int *ret_pidfd, char **error) {
        const char *ro = writable ? "false" : "true";
        char file_node[256], format_node[192], export[192];
        _cleanup_close_ int mount_fd = -EBADF;
        QemuRun run;
        int r, direct;

        if (!qemu_format_to_string(format))
                return -EINVAL;
        r = storage_daemon_check(image_fd, mount_dirfd, mount_name, pidfile_fd);
        if (r < 0)
                return r;
        /* qemu mounts on the fd: the file we checked, whatever happens to the name. */
        mount_fd = openat(mount_dirfd, mount_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (mount_fd < 0)
                return -errno;
        if ((r = fd_check_regular(mount_fd)) < 0)
                return r;
        direct = qemu_probe_direct(image_fd);
        if (direct < 0)
                return direct;

        /* JSON, because only JSON can say "backing": null: whatever a qcow2 header names, the
         * daemon opens no other file. */
        snprintf(file_node, sizeof file_node,
                 "{\"driver\":\"file\",\"node-name\":\"file\",\"filename\":\"/proc/self/fd/3\","
                 "\"cache\":{\"direct\":%s},\"read-only\":%s,\"discard\":\"unmap\"}",
                 direct ? "true" : "false", ro);
        snprintf(format_node, sizeof format_node,
                 "{\"driver\":\"%s\",\"node-name\":\"fmt\",\"file\":\"file\",\"read-only\":%s,"
                 "\"discard\":\"unmap\"%s}",
                 qemu_format_to_string(format), ro, format == QEMU_FORMAT_QCOW2 ? ",\"backing\":null" : "");
        snprintf(export, sizeof export,
                 "type=fuse,id=exp,node-name=fmt,mountpoint=/proc/self/fd/4,writable=%s,"
                 "growable=off,allow-other=off", writable ? "on" : "off");
        /* --daemonize: the process we start exits once the export is up (or failed), and the
         * daemon it leaves is nobody's child, free to outlive cisternd. */
        const char *argv[] = {
                "qemu-storage-daemon", "--daemonize", "--pidfile", "/proc/self/fd/5",
                "--blockdev", file_node, "--blockdev", format_node, "--export", export, NULL,
        };
        r = qemu_spawn_run(&(QemuSpawn) {
                        .path = QEMU_STORAGE_DAEMON_PATH,
                        .argv = argv,
                        .fds = (const int[]) { image_fd, mount_fd, pidfile_fd },
                        .n_fds = 3,
                        .as_limit = QEMU_STORAGE_DAEMON_AS_LIMIT,
                        .timeout = QEMU_STARTUP_TIMEOUT_USEC,
                }, &run);
        if (r == 0 && run.status != 0)
                r = -EIO;
        if (r == 0) {
                r = qemu_storage_daemon_find(pidfile_fd, ret_pid, ret_pidfd);
                if (r < 0 && error)
                        *error = strdup("qemu-storage-daemon exited right after starting.");
        } else if (error)
                *error = run_message("qemu-storage-daemon", &run);
        if (r < 0)
                storage_daemon_undo(mount_dirfd, mount_name, pidfile_fd);
        return r;
}
