/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The "dir" driver: a pool is a directory, a volume's image a file in the volume's directory. */

#include <fcntl.h>
#include <linux/fs.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "bus-util.h"
#include "errors.h"
#include "log.h"
#include "options.h"
#include "pool.h"
#include "store.h"
#include "volume.h"

#define POOL_JSON "pool.json"
#define VOLUMES_DIR "volumes"

typedef struct DirPool {
        char *path;
        ReflinkMode reflink;
        bool reflink_given;     /* by CreatePool: otherwise an adopted pool keeps its own */
        int dir_fd;
        dev_t dev;              /* of the directory, to refuse a second pool on it */
        ino_t ino;
        bool reflink_works;
} DirPool;

static DirPool *dir_pool(Pool *p) {
        return p->driver_data;
}

static int dir_ensure_data(Pool *p) {
        DirPool *d;

        if (p->driver_data)
                return 0;
        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->dir_fd = -EBADF;
        p->driver_data = d;
        return 0;
}

typedef struct DirConfig {
        const char *path;
        const char *reflink;
        uint32_t revisions_to_keep;
} DirConfig;

static const OptionSpec dir_config_spec[] = {
        OPTION("path", OPTION_STRING, DirConfig, path),
        OPTION("reflink", OPTION_STRING, DirConfig, reflink),
        OPTION("revisions_to_keep", OPTION_UINT32, DirConfig, revisions_to_keep),
        {}
};

static int dir_config_parse(Pool *p, sd_bus_message *m, bool *ret_revisions_given, sd_bus_error *error) {
        DirConfig c = { .reflink = reflink_mode_to_string(REFLINK_AUTO) };
        uint32_t seen;
        int r, mode;

        r = options_read(m, dir_config_spec, &c, &seen, error);
        if (r < 0)
                return r;
        if (!c.path)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "A dir pool needs 'path', the directory that holds it.");
        if (c.path[0] != '/')
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Pool path '%s' is not absolute.", c.path);
        if (strlen(c.path) >= 4096)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "Pool path is too long.");
        mode = reflink_mode_from_string(c.reflink);
        if (mode < 0)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Invalid reflink mode '%s': use auto, require or never.", c.reflink);
        if (option_seen(seen, dir_config_spec, "revisions_to_keep")) {
                r = validate_revisions_to_keep(p->manager, c.revisions_to_keep, error);
                if (r < 0)
                        return r;
                p->revisions_to_keep = c.revisions_to_keep;
        }

        r = dir_ensure_data(p);
        if (r < 0)
                return r;
        free(dir_pool(p)->path);
        dir_pool(p)->path = strdup(c.path);
        if (!dir_pool(p)->path)
                return -ENOMEM;
        dir_pool(p)->reflink = mode;
        dir_pool(p)->reflink_given = option_seen(seen, dir_config_spec, "reflink");
        *ret_revisions_given = option_seen(seen, dir_config_spec, "revisions_to_keep");
        return 0;
}

static int dir_config_save(Pool *p, json_object *o) {
        DirPool *d = dir_pool(p);

        if (json_object_object_add(o, "path", json_object_new_string(d->path)) < 0 ||
            json_object_object_add(o, "reflink", json_object_new_string(reflink_mode_to_string(d->reflink))) < 0)
                return -ENOMEM;
        return 0;
}

static int dir_config_load(Pool *p, json_object *o) {
        const char *path = json_get_string(o, "path"), *reflink = json_get_string(o, "reflink");
        int r, mode;

        if (!path || path[0] != '/')
                return -EBADMSG;
        mode = reflink ? reflink_mode_from_string(reflink) : REFLINK_AUTO;
        if (mode < 0)
                return -EBADMSG;
        r = dir_ensure_data(p);
        if (r < 0)
                return r;
        free(dir_pool(p)->path);
        dir_pool(p)->path = strdup(path);
        if (!dir_pool(p)->path)
                return -ENOMEM;
        dir_pool(p)->reflink = mode;
        return 0;
}

static int dir_config_append(Pool *p, sd_bus_message *reply) {
        DirPool *d = dir_pool(p);

        return sd_bus_message_append(reply, "{sv}{sv}{sv}",
                                     "path", "s", d->path,
                                     "reflink", "s", reflink_mode_to_string(d->reflink),
                                     "revisions_to_keep", "u", p->revisions_to_keep);
}

/* An adopted pool keeps the reflink mode recorded in its pool.json unless CreatePool gave one. */
static void dir_adopt_reflink_mode(DirPool *d) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *config;
        const char *mode;
        int r;

        if (d->reflink_given)
                return;
        r = store_read_json(d->dir_fd, POOL_JSON, 64 * 1024, &o);
        if (r < 0 || !json_object_object_get_ex(o, "config", &config))
                return;
        mode = json_get_string(config, "reflink");
        r = mode ? reflink_mode_from_string(mode) : -EINVAL;
        if (r >= 0)
                d->reflink = r;
}

/* Whether FICLONE works in this directory: two unnamed files, cloned, gone on close. */
static bool dir_probe_reflink(int dir_fd) {
        _cleanup_close_ int a = -EBADF, b = -EBADF;

        a = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        b = openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (a < 0 || b < 0)
                return false;
        return ioctl(b, FICLONE, a) >= 0;
}

static bool dir_is_empty(int fd) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        if (opendir_beneath(fd, ".", &d) < 0)
                return false;
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, ".."))
                        return false;
        return true;
}

static int dir_open_layout(Pool *p, bool create, sd_bus_error *error) {
        DirPool *d = dir_pool(p);
        int r;

        r = open_beneath(d->dir_fd, POOL_JSON, O_RDONLY, 0);
        if (r >= 0) {
                safe_close(r);
                r = open_beneath(d->dir_fd, VOLUMES_DIR, O_RDONLY | O_DIRECTORY, 0);
                if (r < 0)
                        return sd_bus_error_setf(error, ERR_FAILED, "Pool directory %s lacks its '%s' directory: %s",
                                                 d->path, VOLUMES_DIR, strerror(-r));
                p->volumes_fd = r;
                return 0;
        }
        if (r != -ENOENT)
                return bus_error_from_errno(error, r, "Failed to read the pool's " POOL_JSON);
        if (!create)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "%s holds no pool.", d->path);

        /* An empty volumes/ without pool.json is what a crash during CreatePool leaves: reuse it. */
        if (mkdirat(d->dir_fd, VOLUMES_DIR, 0700) < 0 && errno != EEXIST)
                return bus_error_from_errno(error, -errno, "Failed to create the pool's volume directory");
        r = open_beneath(d->dir_fd, VOLUMES_DIR, O_RDONLY | O_DIRECTORY, 0);
        if (r < 0)
                return bus_error_from_errno(error, r, "Failed to open the pool's volume directory");
        p->volumes_fd = r;
        if (!dir_is_empty(p->volumes_fd))
                return sd_bus_error_setf(error, ERR_ALREADY_EXISTS,
                                         "%s already holds a '%s' directory that is not part of a pool.", d->path, VOLUMES_DIR);
        return 0;
}

/* The pool, other than p, that lives in the same directory, if any. */
static Pool *dir_find_same(Pool *p) {
        const DirPool *d = dir_pool(p);
        Pool *other;

        NAMEMAP_FOREACH(other, &p->manager->pools) {
                const DirPool *o;

                if (other == p || other->driver != &pool_driver_dir)
                        continue;
                o = dir_pool(other);
                if (o->dev == d->dev && o->ino == d->ino)
                        return other;
        }
        return NULL;
}

static int dir_open(Pool *p, bool create, sd_bus_error *error) {
        DirPool *d = dir_pool(p);
        struct stat st;
        int fd;

        fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "Pool directory %s does not exist.", d->path);
        if (fd < 0 && errno == ENOTDIR)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Pool path %s is not a directory.", d->path);
        if (fd < 0)
                return bus_error_from_errno(error, -errno, "Failed to open the pool directory");
        if (fstat(fd, &st) < 0) {
                safe_close(fd);
                return bus_error_from_errno(error, -errno, "Failed to stat the pool directory");
        }
        d->dir_fd = fd;
        d->dev = st.st_dev;
        d->ino = st.st_ino;
        if (create) {
                Pool *same = dir_find_same(p);

                if (same)
                        return sd_bus_error_setf(error, ERR_ALREADY_EXISTS, "%s already holds pool %s.", d->path, same->name);
        }
        dir_adopt_reflink_mode(d);
        d->reflink_works = d->reflink != REFLINK_NEVER && dir_probe_reflink(fd);
        if (d->reflink == REFLINK_REQUIRE && !d->reflink_works)
                return sd_bus_error_setf(error, ERR_NOT_SUPPORTED,
                                         "The filesystem of %s cannot reflink files, and the pool requires it.", d->path);
        p->meta_fd = fd;
        return dir_open_layout(p, create, error);
}

static void dir_close(Pool *p) {
        DirPool *d = dir_pool(p);

        if (!d)
                return;
        safe_close(d->dir_fd);
        free(d->path);
        free(d);
        p->driver_data = NULL;
        p->meta_fd = -EBADF;
}

static int dir_refresh(Pool *p) {
        DirPool *d = dir_pool(p);
        struct statvfs sv;

        if (fstatvfs(d->dir_fd, &sv) < 0)
                return -errno;
        p->size = (uint64_t) sv.f_blocks * sv.f_frsize;
        p->available = (uint64_t) sv.f_bavail * sv.f_frsize;
        p->usage = (uint64_t) (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
        p->copy_on_write = d->reflink_works;
        return 0;
}

static int dir_object_create(Volume *v, int vdir_fd, const char *name, uint64_t size, bool preallocate) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = open_beneath(vdir_fd, name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0)
                return fd;
        if (ftruncate(fd, (off_t) size) < 0 ||
            (preallocate && fallocate(fd, 0, 0, (off_t) size) < 0) ||
            fsync(fd) < 0) {
                r = -errno;
                (void) unlinkat(vdir_fd, name, 0);
                return r;
        }
        return 0;
}

static int dir_object_copy(Pool *p, int src_dir_fd, const char *src, int dst_dir_fd, const char *dst,
                           CopyProgress *progress) {
        _cleanup_close_ int in = -EBADF, out = -EBADF;
        int r, copied;

        in = open_beneath(src_dir_fd, src, O_RDONLY | O_NOFOLLOW, 0);
        if (in < 0)
                return in;
        out = open_beneath(dst_dir_fd, dst, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
        if (out < 0)
                return out;
        copied = copy_file(in, out, dir_pool(p)->reflink, progress);
        r = copied < 0 ? copied : fsync(out) < 0 ? -errno : 0;
        if (r < 0) {
                (void) unlinkat(dst_dir_fd, dst, 0);
                return r;
        }
        return copied;
}

static int dir_object_import(Pool *p, int src_fd, uint64_t size, int vdir_fd, const char *dst,
                             CopyProgress *progress) {
        _cleanup_close_ int out = -EBADF;
        int r, copied;

        out = open_beneath(vdir_fd, dst, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
        if (out < 0)
                return out;
        copied = copy_in(src_fd, out, size, dir_pool(p)->reflink, progress);
        r = copied < 0 ? copied : fsync(out) < 0 ? -errno : 0;
        if (r < 0) {
                (void) unlinkat(vdir_fd, dst, 0);
                return r;
        }
        return copied;
}

static int dir_object_open(int vdir_fd, const char *name, int flags) {
        return open_beneath(vdir_fd, name, flags | O_NOFOLLOW, 0);
}

static int dir_object_link(int vdir_fd, const char *src, const char *dst) {
        _cleanup_close_ int parent = -EBADF;
        const char *slash = strrchr(dst, '/');

        /* Both names lie beneath vdir_fd and contain no symlinks (no AT_SYMLINK_FOLLOW). */
        if (linkat(vdir_fd, src, vdir_fd, dst, 0) < 0)
                return -errno;
        if (slash) {
                _cleanup_free_ char *dir = strndup(dst, slash - dst);

                if (!dir)
                        return -ENOMEM;
                parent = open_beneath(vdir_fd, dir, O_RDONLY | O_DIRECTORY, 0);
                if (parent < 0)
                        return parent;
                return fsync_dir(parent);
        }
        return fsync_dir(vdir_fd);
}

static int dir_object_rename(int vdir_fd, const char *src, const char *dst, bool replace) {
        return rename_beneath(vdir_fd, src, dst, replace);
}

static int dir_object_remove(int vdir_fd, const char *name) {
        if (unlinkat(vdir_fd, name, 0) < 0)
                return -errno;
        return 0;
}

static int dir_object_resize(int vdir_fd, const char *name, uint64_t size) {
        _cleanup_close_ int fd = -EBADF;

        fd = open_beneath(vdir_fd, name, O_RDWR | O_NOFOLLOW, 0);
        if (fd < 0)
                return fd;
        if (ftruncate(fd, (off_t) size) < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

static int dir_object_sync(int vdir_fd, const char *name) {
        _cleanup_close_ int fd = -EBADF;

        fd = open_beneath(vdir_fd, name, O_RDONLY | O_NOFOLLOW, 0);
        if (fd < 0)
                return fd;
        return fsync(fd) < 0 ? -errno : 0;
}

static int dir_object_is_same(int vdir_fd, const char *a, const char *b) {
        struct stat sa, sb;

        if (fstatat(vdir_fd, a, &sa, AT_SYMLINK_NOFOLLOW) < 0 || fstatat(vdir_fd, b, &sb, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int dir_object_stat(int vdir_fd, const char *name, uint64_t *ret_size, uint64_t *ret_usage) {
        struct stat st;

        if (fstatat(vdir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADF;
        *ret_size = (uint64_t) st.st_size;
        *ret_usage = (uint64_t) st.st_blocks * 512;
        return 0;
}

static bool dir_copy_is_instant(Pool *src, Pool *dst) {
        return src->driver == dst->driver && dir_pool(src)->reflink_works && dir_pool(dst)->reflink_works &&
               dir_pool(src)->dev == dir_pool(dst)->dev;
}

const PoolDriver pool_driver_dir = {
        .name = "dir",
        .config_parse = dir_config_parse,
        .config_save = dir_config_save,
        .config_load = dir_config_load,
        .config_append = dir_config_append,
        .open = dir_open,
        .close = dir_close,
        .refresh = dir_refresh,
        .object_create = dir_object_create,
        .object_copy = dir_object_copy,
        .object_import = dir_object_import,
        .object_open = dir_object_open,
        .object_link = dir_object_link,
        .object_rename = dir_object_rename,
        .object_remove = dir_object_remove,
        .object_resize = dir_object_resize,
        .object_sync = dir_object_sync,
        .object_is_same = dir_object_is_same,
        .object_stat = dir_object_stat,
        .copy_is_instant = dir_copy_is_instant,
};
