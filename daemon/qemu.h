/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "copy.h"
#include "util.h"

/* Every qemu-img and qemu-storage-daemon process of cisternd starts here, and only here.
 *
 * Images reach qemu as fds, never as paths: the caller opens them beneath the pool's directory
 * fd (open_beneath(), no symlinks), and qemu sees "/proc/self/fd/3", the same inode whatever
 * happens to the names meanwhile. qemu resolves no path of ours, parses no "json:" or "nbd:"
 * pseudo-filename, and every call names the format (-f, -O): qemu never probes one. Probing
 * guest-written data is how a guest got qemu to read host files (OpenStack bug 1221190,
 * CVE-2026-24708 when resize lacked -f); the format is a QemuFormat with no "auto" member.
 * Cistern never creates backing chains, and a qcow2 header naming a backing file is refused by
 * its inspector before any image gets here.
 *
 * The child has a clean environment (LC_ALL=C and a fixed PATH), stdin /dev/null, stdout and
 * stderr on pipes read by the parent, the fds passed and no other, limits on address space,
 * CPU time and core dumps, a session of its own, and SIGKILL when the thread that started it
 * dies. These functions block until qemu is done: call them from a worker thread. */

#define QEMU_IMG_PATH             "/usr/bin/qemu-img"
#define QEMU_STORAGE_DAEMON_PATH  "/usr/bin/qemu-storage-daemon"

/* RLIMIT_AS: a crafted image must not make qemu eat the host's memory (Nova runs qemu-img under
 * 1 GiB). The storage daemon serves a VM for long and runs up to 64 I/O threads: more room. */
#define QEMU_IMG_AS_LIMIT             (UINT64_C(1) << 30)
#define QEMU_STORAGE_DAEMON_AS_LIMIT  (UINT64_C(2) << 30)

#define QEMU_SPAWN_FDS_MAX  4U
#define QEMU_OUTPUT_MAX     4096U   /* bytes of stdout and of stderr kept, the last ones */

typedef enum QemuFormat {
        QEMU_FORMAT_RAW,
        QEMU_FORMAT_QCOW2,
        _QEMU_FORMAT_MAX,
} QemuFormat;

const char *qemu_format_to_string(QemuFormat f);   /* NULL when out of range */
int qemu_format_from_string(const char *s);         /* QemuFormat or -EINVAL */

/* Each call below takes fds of regular files (-EINVAL for anything else) and returns 0 or
 * -errno: -EIO when qemu failed, and then, when error is not NULL, *error receives qemu's own
 * words (the end of its stderr, printable ASCII) for the caller's message. The output file is
 * fsync()ed before success is returned. */

/* An image of size bytes in the empty file fd (qemu truncates it first). preallocate: every
 * block allocated now (preallocation=falloc), else a sparse image (preallocation=off). */
int qemu_img_create(int fd, QemuFormat format, uint64_t size, bool preallocate, char **error);

/* Sets the virtual size of the image in fd. A smaller size fails unless shrink is true: an
 * "extend" computed from a stale size must not cut a disk short (Qubes issue #4821). */
int qemu_img_resize(int fd, QemuFormat format, uint64_t size, bool shrink, char **error);

typedef struct QemuConvertOptions {
        bool compress;          /* -c: compressed clusters (qcow2 output only) */
        bool sparse;            /* -S 4k: runs of zeros become holes; false: -S 0, all written */
} QemuConvertOptions;

/* Writes the image in src_fd, read as src_format, into dst_fd as dst_format (dst_fd's content
 * is replaced). Direct I/O (-T none / -t none) on each side whose filesystem takes O_DIRECT,
 * else the page cache (writeback), the output fsync()ed either way. progress may be NULL; else
 * progress->total must be set (the virtual size): qemu's percentage is mapped onto it into
 * progress->done, and progress->cancel kills qemu (-ECANCELED). The CPU limit is one hour plus
 * two minutes per GiB of progress->total. A failed convert leaves dst_fd for the caller to
 * discard; src_fd and dst_fd must not be the same file (-EINVAL). */
int qemu_img_convert(int src_fd, QemuFormat src_format, int dst_fd, QemuFormat dst_format,
                     const QemuConvertOptions *options, CopyProgress *progress, char **error);


/* Exports the image in image_fd over FUSE on the regular file mount_name in the directory
 * mount_dirfd (one component: no '/', no symlink), through a daemonized qemu-storage-daemon
 * (qcow2 with no backing file whatever its header says; direct I/O where the filesystem takes
 * it; guest discards punch holes; only root may open the mount). pidfile_fd is an empty regular
 * file with a real name (say beneath the runtime directory; qemu removes it when it exits):
 * qemu writes its pid there and holds a lock on it while alive, which is how
 * qemu_storage_daemon_find() finds it again after a restart. -EBUSY when something is mounted
 * on mount_name already or a live daemon holds the pidfile.
 * Returns once the export is ready, with the daemon's pid and a pidfd (POLLIN when it exits;
 * it is not our child: watch it with sd_event_add_io, never waitid). It outlives cisternd:
 * an attached volume stays attached when the daemon exits idle. SIGTERM unmounts and ends it.
 * On failure no daemon and no mount are left behind. */
int qemu_storage_daemon_spawn(int image_fd, QemuFormat format, int mount_dirfd, const char *mount_name,
                              int pidfile_fd, bool writable, pid_t *ret_pid, int *ret_pidfd, char **error);

/* The live qemu-storage-daemon behind pidfile_fd: its pid and a pidfd. -ESRCH when no process
 * holds the pidfile's lock any more, -EBADMSG when the file holds no pid. */
int qemu_storage_daemon_find(int pidfile_fd, pid_t *ret_pid, int *ret_pidfd);

/* Whether fd's file can be opened with O_DIRECT: 1 yes, 0 no (tmpfs on older kernels, some
 * FUSE and network filesystems), -errno when it cannot be reopened at all. */
int qemu_probe_direct(int fd);

/* qemu-img -p writes "    (12.34/100%)\r" records; a read may end anywhere inside one. */
typedef struct QemuProgressParser {
        char record[32];
        size_t len;             /* > sizeof record: too long, ignored up to the next record */
} QemuProgressParser;

/* One record, without its separator: hundredths of a percent (0…10000), or -EINVAL. */
int qemu_progress_parse(const char *record);
/* Feeds size bytes of output; returns the value of the last complete record among them, or -1
 * when none completed (or none parsed). */
int qemu_progress_feed(QemuProgressParser *p, const char *data, size_t size);

/* The spawn primitive itself, used by the functions above and by the tests. */
typedef struct QemuSpawn {
        const char *path;               /* absolute; no PATH lookup */
        const char *const *argv;
        const int *fds;                 /* become fds 3, 4, … of the child, in this order */
        size_t n_fds;                   /* at most QEMU_SPAWN_FDS_MAX */
        uint64_t as_limit;              /* RLIMIT_AS in bytes; 0: unlimited */
        uint64_t cpu_limit;             /* RLIMIT_CPU in seconds; 0: unlimited */
        usec_t timeout;                 /* killed after this long (-ETIMEDOUT); 0: never */
        CopyProgress *progress;         /* may be NULL; see qemu_img_convert() */
} QemuSpawn;

typedef struct QemuRun {
        int status;                     /* exit status, or 128 + the signal that killed it */
        int signal;                     /* that signal, 0 when it exited */
        size_t out_len, err_len;
        bool out_truncated, err_truncated;      /* earlier output was dropped */
        char out[QEMU_OUTPUT_MAX + 1];  /* the end of its stdout, NUL-terminated */
        char err[QEMU_OUTPUT_MAX + 1];  /* the end of its stderr */
} QemuRun;

/* Runs s->path and waits for it, its stdout and stderr kept in ret. 0 when it ended by itself
 * (ret->status says how), -ECANCELED or -ETIMEDOUT when it was killed for that (its whole
 * process group), other -errno when it could not be started. ret is filled in every case. */
int qemu_spawn_run(const QemuSpawn *s, QemuRun *ret);
