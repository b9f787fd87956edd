/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fuse-export.h"
#include "log.h"
#include "qemu.h"
#include "store.h"

#define EXPORTS_DIR "exports"
#define PIDFILE_SUFFIX ".pid"
#define PIDFILE_NAME_MAX (FUSE_EXPORT_NAME_MAX + sizeof PIDFILE_SUFFIX - 1)
#define KILL_TIMEOUT_SEC 10

bool fuse_export_name_is_valid(const char *name) {
        const char *colon = strchr(name, ':'), *random = colon ? strchr(colon + 1, ':') : NULL;
        char pool[NAME_MAX_LENGTH + 1], volume[NAME_MAX_LENGTH + 1];

        if (!random || (size_t) (colon - name) > NAME_MAX_LENGTH || (size_t) (random - colon - 1) > NAME_MAX_LENGTH)
                return false;
        memcpy(pool, name, colon - name);
        pool[colon - name] = '\0';
        memcpy(volume, colon + 1, random - colon - 1);
        volume[random - colon - 1] = '\0';
        return name_is_valid(pool) && name_is_valid(volume) && strlen(random + 1) == 16 &&
                strspn(random + 1, "0123456789abcdef") == 16;
}

static void pidfile_name(const char *name, char buf[static PIDFILE_NAME_MAX]) {
        snprintf(buf, PIDFILE_NAME_MAX, "%s" PIDFILE_SUFFIX, name);
}

/* <runtime>/exports, made when missing if create (-ENOENT else). Opened for each use: worker
 * threads share no fd. */
static int exports_open(Manager *m, bool create) {
        _cleanup_close_ int runtime_fd = open(m->runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (runtime_fd < 0)
                return -errno;
        if (!create)
                return open_beneath(runtime_fd, EXPORTS_DIR, O_RDONLY | O_DIRECTORY, 0);
        return open_or_create_dir_beneath(runtime_fd, EXPORTS_DIR, 0700);
}

static int pidfd_signal(int pidfd, int sig) {
        return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 && errno != ESRCH ? -errno : 0;
}

int fuse_export_resize(Manager *m, const char *name, uint64_t size) {
        _cleanup_close_ int dir_fd = -EBADF, fd = -EBADF;

        if (!fuse_export_name_is_valid(name))
                return -EINVAL;
        dir_fd = exports_open(m, false);
        if (dir_fd < 0)
                return dir_fd;
        fd = open_beneath(dir_fd, name, O_RDWR | O_NOCTTY, 0);
        if (fd < 0)
                return fd;
        if (ftruncate(fd, (off_t) size) < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

/* The live daemon of export name: 0 and its pidfd, or -ESRCH when there is none. */
static int find_daemon(int dirfd, const char *name, int *ret_pidfd) {
        _cleanup_close_ int pidfile_fd = -EBADF;
        char pidfile[PIDFILE_NAME_MAX];
        pid_t pid;
        int r;

        pidfile_name(name, pidfile);
        pidfile_fd = open_beneath(dirfd, pidfile, O_RDONLY | O_NOCTTY, 0);
        if (pidfile_fd == -ENOENT)
                return -ESRCH;
        if (pidfile_fd < 0)
                return pidfile_fd;
        r = qemu_storage_daemon_find(pidfile_fd, &pid, ret_pidfd);
        /* No pid written: the daemon died before it got that far. */
        return r == -EBADMSG ? -ESRCH : r;
}

/* Waits until the process of pidfd has exited: 0, or -ETIMEDOUT. */
static int wait_exit(int pidfd, unsigned timeout_sec) {
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        int n;

        do
                n = poll(&p, 1, (int) timeout_sec * 1000);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        return n > 0 ? 0 : -ETIMEDOUT;
}

static int stop_daemon(int dirfd, const char *name) {
        _cleanup_close_ int pidfd = -EBADF;
        int r;

        r = find_daemon(dirfd, name, &pidfd);
        if (r == -ESRCH)
                return 0;
        if (r < 0)
                return r;
        r = pidfd_signal(pidfd, SIGTERM);
        if (r >= 0)
                r = wait_exit(pidfd, FUSE_EXPORT_STOP_TIMEOUT_SEC);
        if (r == -ETIMEDOUT) {
                log_warning("qemu-storage-daemon of export %s did not exit within %u s of SIGTERM; killing it.",
                            name, FUSE_EXPORT_STOP_TIMEOUT_SEC);
                r = pidfd_signal(pidfd, SIGKILL);
                if (r >= 0)
                        r = wait_exit(pidfd, KILL_TIMEOUT_SEC);
        }
        return r;
}

/* What a daemon that died without unmounting left: every access to it fails with ENOTCONN. The
 * name, not an fd: an fd opened before the mount names the file beneath it. */
static int unmount_dead(int dirfd, const char *name) {
        char path[sizeof "/proc/self/fd//" + 12 + FUSE_EXPORT_NAME_MAX];
        struct statx stx;

        if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0) {
                if (errno == ENOENT)
                        return 0;
                if (errno != ENOTCONN)
                        return -errno;
        } else if (!(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
                return 0;
        snprintf(path, sizeof path, "/proc/self/fd/%d/%s", dirfd, name);
        if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL)
                return -errno;
        return 0;
}

static int unlink_if_present(int dirfd, const char *name) {
        return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
}

static int stop_at(int dirfd, const char *name) {
        char pidfile[PIDFILE_NAME_MAX];
        int r;

        r = stop_daemon(dirfd, name);
        if (r < 0)
                return r;       /* it may still serve the file: leave it be */
        r = unmount_dead(dirfd, name);
        if (r < 0)
                return r;
        pidfile_name(name, pidfile);
        r = unlink_if_present(dirfd, name);
        return unlink_if_present(dirfd, pidfile) ?: r;
}

int fuse_export_stop(Manager *m, const char *name) {
        _cleanup_close_ int dirfd = -EBADF;

        if (!fuse_export_name_is_valid(name))
                return -EINVAL;
        dirfd = exports_open(m, false);
        if (dirfd == -ENOENT)
                return 0;       /* nothing of it is left */
        if (dirfd < 0)
                return dirfd;
        return stop_at(dirfd, name);
}

/* The mount point and the pidfile of a new export of v, both new files; the pidfile open. */
static int create_files(Volume *v, int dirfd, char name[static FUSE_EXPORT_NAME_MAX], int *ret_pidfile_fd) {
        char pidfile[PIDFILE_NAME_MAX];
        uint64_t random;
        int fd;

        if (getrandom(&random, sizeof random, 0) != sizeof random)
                return -errno;
        snprintf(name, FUSE_EXPORT_NAME_MAX, "%s:%s:%016" PRIx64, v->pool->name, v->name, random);
        pidfile_name(name, pidfile);
        /* Exclusive: a name that exists already is not ours to use. */
        fd = open_beneath(dirfd, name, O_CREAT | O_EXCL | O_RDONLY | O_NOCTTY, 0600);
        if (fd < 0)
                return fd;
        safe_close(fd);
        fd = open_beneath(dirfd, pidfile, O_CREAT | O_EXCL | O_RDWR | O_NOCTTY, 0600);
        if (fd < 0) {
                (void) unlinkat(dirfd, name, 0);
                return fd;
        }
        *ret_pidfile_fd = fd;
        return 0;
}

/* The served file, open: on the FUSE mount, not the empty file beneath it. */
static int open_served(int dirfd, const char *name, bool writable) {
        _cleanup_close_ int fd = -EBADF;
        struct stat dir_st, st;

        fd = open_beneath(dirfd, name, (writable ? O_RDWR : O_RDONLY) | O_NOCTTY, 0);
        if (fd < 0)
                return fd;
        if (fstat(fd, &st) < 0 || fstat(dirfd, &dir_st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_dev == dir_st.st_dev)
                return -EIO;
        return TAKE_FD(fd);
}

int fuse_export_start(Volume *v, int image_fd, bool writable, char ret_name[static FUSE_EXPORT_NAME_MAX],
                      int *ret_fd, char **error) {
        _cleanup_close_ int dirfd = -EBADF, pidfile_fd = -EBADF, pidfd = -EBADF, fd = -EBADF;
        char name[FUSE_EXPORT_NAME_MAX];
        pid_t pid;
        int r;

        dirfd = exports_open(v->pool->manager, true);
        if (dirfd < 0)
                return dirfd;
        r = create_files(v, dirfd, name, &pidfile_fd);
        if (r < 0)
                return r;
        r = qemu_storage_daemon_spawn(image_fd, QEMU_FORMAT_QCOW2, dirfd, name, pidfile_fd, writable, &pid, &pidfd,
                                      error);
        if (r < 0 && error && *error)
                r = -EIO;       /* however it failed, qemu said why */
        if (r >= 0) {
                fd = open_served(dirfd, name, writable);
                r = fd < 0 ? fd : 0;
        }
        if (r < 0) {
                int k = stop_at(dirfd, name);

                if (k < 0)
                        log_warning_errno(k, "Failed to end export %s again, the next start retries: %m", name);
                return r;
        }
        log_debug("qemu-storage-daemon %d serves volume %s/%s on export %s%s.", (int) pid, v->pool->name, v->name,
                  name, writable ? "" : ", read-only");
        strcpy(ret_name, name);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

typedef struct StopAsync {
        Manager *manager;
        char name[FUSE_EXPORT_NAME_MAX];
} StopAsync;

static int stop_async_work(void *userdata) {
        StopAsync *s = userdata;

        return fuse_export_stop(s->manager, s->name);
}

static void stop_async_done(int r, void *userdata) {
        StopAsync *s = userdata;

        if (r < 0)
                log_warning_errno(r, "Failed to end export %s, the next start retries: %m", s->name);
        else
                log_debug("Ended export %s.", s->name);
        free(s);
}

/* When no worker can take the stop: SIGTERM at least, which does not wait. The daemon's exit
 * unmounts; the next start removes the files. */
static void stop_without_waiting(Manager *m, const char *name) {
        _cleanup_close_ int dirfd = exports_open(m, false), pidfd = -EBADF;
        int r;

        r = dirfd < 0 ? dirfd : find_daemon(dirfd, name, &pidfd);
        if (r >= 0)
                r = pidfd_signal(pidfd, SIGTERM);
        if (r < 0 && r != -ESRCH)
                log_warning_errno(r, "Failed to end export %s, the next start retries: %m", name);
}

void fuse_export_stop_async(Manager *m, const char *name) {
        StopAsync *s;

        if (!fuse_export_name_is_valid(name))
                return;
        s = calloc(1, sizeof *s);
        if (s) {
                s->manager = m;
                strcpy(s->name, name);
                if (workers_run(m->workers, stop_async_work, stop_async_done, s) >= 0)
                        return;
                free(s);
        }
        stop_without_waiting(m, name);
}

int fuse_export_backs(Manager *m, const char *name, dev_t dev, ino_t ino) {
        _cleanup_close_ int dirfd = -EBADF, pidfd = -EBADF;
        struct stat st;

        if (!fuse_export_name_is_valid(name))
                return 0;
        dirfd = exports_open(m, false);
        if (dirfd < 0 || find_daemon(dirfd, name, &pidfd) < 0)
                return 0;
        return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) >= 0 && st.st_dev == dev && st.st_ino == ino;
}

static bool name_in(const char *name, const char (*list)[FUSE_EXPORT_NAME_MAX], size_t n) {
        for (size_t i = 0; i < n; i++)
                if (streq(name, list[i]))
                        return true;
        return false;
}

/* The export a directory entry belongs to (its own name, or its pidfile's), into buf. */
static bool entry_export(const char *entry, char buf[static FUSE_EXPORT_NAME_MAX]) {
        size_t len = strlen(entry), suffix = strlen(PIDFILE_SUFFIX);

        if (len > suffix && streq(entry + len - suffix, PIDFILE_SUFFIX))
                len -= suffix;
        if (len >= FUSE_EXPORT_NAME_MAX)
                return false;
        memcpy(buf, entry, len);
        buf[len] = '\0';
        return fuse_export_name_is_valid(buf);
}

void fuse_export_sweep(Manager *m, const char (*keep)[FUSE_EXPORT_NAME_MAX], size_t n_keep) {
        _cleanup_close_ int dirfd = exports_open(m, false);
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ char (*found)[FUSE_EXPORT_NAME_MAX] = NULL;
        size_t n_found = 0;
        struct dirent *de;

        if (dirfd < 0 || opendir_beneath(dirfd, ".", &d) < 0)
                return;
        /* All names first: an export has two entries, and each export is stopped once. */
        while ((de = readdir(d))) {
                char name[FUSE_EXPORT_NAME_MAX];
                void *a;

                if (!entry_export(de->d_name, name) || name_in(name, keep, n_keep))
                        continue;
                a = reallocarray(found, n_found + 1, sizeof *found);
                if (!a) {
                        log_oom();
                        break;
                }
                found = a;
                strcpy(found[n_found++], name);
        }
        for (size_t i = 0; i < n_found; i++) {
                bool seen = false;

                for (size_t j = 0; j < i && !seen; j++)
                        seen = streq(found[i], found[j]);
                if (seen)
                        continue;
                log_info("Ending export %s: no device of a volume is attached to it.", found[i]);
                fuse_export_stop_async(m, found[i]);
        }
}
