/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* renameat2(), RENAME_NOREPLACE, O_TMPFILE. Guarded in case the build defines it for everyone. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "log.h"
#include "store.h"

/* Each level of remove_tree_beneath() holds one directory fd; pools are shallow, so anything
 * deeper than this is not ours and is left alone. */
#define REMOVE_TREE_MAX_DEPTH 16U

#define STAGING_RANDOM_CHARS 12U
#define STAGING_CREATE_ATTEMPTS 16U
#define OPENAT2_EAGAIN_ATTEMPTS 8U

DEFINE_TRIVIAL_CLEANUP_FUNC(json_tokener *, json_tokener_free);

#define RESOLVE_STORE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

static int openat2_retry(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve) {
        struct open_how how = {
                .flags = (uint64_t) (unsigned) (flags | O_CLOEXEC),
                .resolve = resolve,
        };

        if (!path)
                return -EINVAL;

        /* openat2() rejects a mode unless the call may create a file. */
        if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
                how.mode = mode;

        /* RESOLVE_BENEATH answers EAGAIN when a rename or mount raced with the lookup; the
         * lookup itself is fine to repeat. No fallback to openat() on ENOSYS: without the
         * resolve flags the lookup would not be safe. */
        for (unsigned i = 0;; i++) {
                int fd = (int) syscall(SYS_openat2, dirfd, path, &how, sizeof how);
                if (fd >= 0)
                        return fd;
                if (errno != EAGAIN || i + 1 >= OPENAT2_EAGAIN_ATTEMPTS)
                        return -errno;
        }
}

int open_beneath(int dirfd, const char *path, int flags, mode_t mode) {
        return openat2_retry(dirfd, path, flags, mode, RESOLVE_STORE);
}

/* Splits path into the directory that holds its last component, opened beneath dirfd, and the
 * last component itself, so that the *at() calls that modify entries (mkdirat, unlinkat,
 * renameat2) only ever see a plain name and never resolve anything themselves. ret_base points
 * into path. */
static int open_parent_beneath(int dirfd, const char *path, int *ret_fd, const char **ret_base) {
        _cleanup_free_ char *dir = NULL;
        const char *slash, *base;
        int fd;

        if (!path || !*path)
                return -EINVAL;

        slash = strrchr(path, '/');
        base = slash ? slash + 1 : path;
        if (!*base || streq(base, ".") || streq(base, ".."))
                return -EINVAL;

        if (slash) {
                /* "/x" keeps its leading slash so that RESOLVE_BENEATH refuses it. */
                dir = strndup(path, slash == path ? 1 : (size_t) (slash - path));
                if (!dir)
                        return -ENOMEM;
        }

        fd = open_beneath(dirfd, dir ?: ".", O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return fd;

        *ret_fd = fd;
        *ret_base = base;
        return 0;
}

int fsync_dir(int dirfd) {
        _cleanup_close_ int fd = -EBADF;

        if (fsync(dirfd) >= 0)
                return 0;
        if (errno != EBADF)
                return -errno;

        /* An O_PATH fd cannot be synced; a real one to the same directory can. */
        fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int open_or_create_dir_beneath(int dirfd, const char *name, mode_t mode) {
        _cleanup_close_ int parent = -EBADF;
        const char *base;
        bool created = true;
        int r, fd;

        r = open_parent_beneath(dirfd, name, &parent, &base);
        if (r < 0)
                return r;

        if (mkdirat(parent, base, mode) < 0) {
                if (errno != EEXIST)
                        return -errno;
                created = false;
        }

        /* Whatever was there already must be a real directory, not a symlink to one: no
         * O_NOFOLLOW, so that RESOLVE_NO_SYMLINKS says ELOOP rather than O_DIRECTORY ENOTDIR. */
        fd = open_beneath(parent, base, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return fd;

        if (created) {
                r = fsync_dir(parent);
                if (r < 0) {
                        safe_close(fd);
                        return log_debug_errno(r, "Failed to sync directory holding %s: %m", name);
                }
        }
        return fd;
}

int staging_name_new(char **ret) {
        static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        uint8_t bytes[STAGING_RANDOM_CHARS];
        size_t prefix_len = strlen(STORE_STAGING_PREFIX), n = 0;
        char *name;

        while (n < sizeof bytes) {
                ssize_t k = getrandom(bytes + n, sizeof bytes - n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                n += (size_t) k;
        }

        name = malloc(prefix_len + STAGING_RANDOM_CHARS + 1);
        if (!name)
                return -ENOMEM;

        memcpy(name, STORE_STAGING_PREFIX, prefix_len);
        /* The modulo bias does not matter: the name only has to be hard to guess, and
         * O_EXCL settles any collision. */
        for (size_t i = 0; i < STAGING_RANDOM_CHARS; i++)
                name[prefix_len + i] = alphabet[bytes[i] % (sizeof alphabet - 1)];
        name[prefix_len + STAGING_RANDOM_CHARS] = '\0';

        *ret = name;
        return 0;
}

int staging_file_create(int dirfd, mode_t mode, char **ret_name) {
        for (unsigned i = 0; i < STAGING_CREATE_ATTEMPTS; i++) {
                _cleanup_free_ char *name = NULL;
                int r, fd;

                r = staging_name_new(&name);
                if (r < 0)
                        return r;

                fd = open_beneath(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
                if (fd == -EEXIST)
                        continue;
                if (fd < 0)
                        return fd;

                *ret_name = TAKE_PTR(name);
                return fd;
        }
        return -EEXIST;
}

int staging_dir_create(int dirfd, mode_t mode, char **ret_name) {
        for (unsigned i = 0; i < STAGING_CREATE_ATTEMPTS; i++) {
                _cleanup_free_ char *name = NULL;
                int r;

                r = staging_name_new(&name);
                if (r < 0)
                        return r;

                /* name has no '/', so mkdirat() resolves nothing but dirfd itself, and it never
                 * follows a symlink in the last component. */
                if (mkdirat(dirfd, name, mode) < 0) {
                        if (errno == EEXIST)
                                continue;
                        return -errno;
                }

                *ret_name = TAKE_PTR(name);
                return 0;
        }
        return -EEXIST;
}

static int loop_write(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                buf += n;
                len -= (size_t) n;
        }
        return 0;
}

int store_write_file(int dirfd, const char *name, const char *text) {
        _cleanup_close_ int parent = -EBADF, fd = -EBADF;
        _cleanup_free_ char *staging = NULL;
        const char *base;
        int r;

        r = open_parent_beneath(dirfd, name, &parent, &base);
        if (r < 0)
                return r;

        /* The staging file lives next to the target: rename() is atomic only within one
         * directory of one file system. */
        fd = staging_file_create(parent, 0600, &staging);
        if (fd < 0)
                return log_debug_errno(fd, "Failed to create staging file for %s: %m", name);

        r = loop_write(fd, text, strlen(text));
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0) {
                log_debug_errno(r, "Failed to write %s: %m", name);
                goto fail;
        }

        if (renameat(parent, staging, parent, base) < 0) {
                r = log_debug_errno(errno, "Failed to rename staging file over %s: %m", name);
                goto fail;
        }

        /* The new content is in place now; a failure here only means it may not survive a
         * crash, which the caller still needs to hear about. */
        r = fsync_dir(parent);
        if (r < 0)
                return log_debug_errno(r, "Failed to sync directory holding %s: %m", name);
        return 0;

fail:
        if (unlinkat(parent, staging, 0) < 0)
                log_debug_errno(errno, "Failed to remove staging file %s: %m", staging);
        return r;
}

int store_write_json(int dirfd, const char *name, json_object *obj) {
        _cleanup_free_ char *text = NULL;
        const char *s;

        if (!obj)
                return -EINVAL;
        s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        /* A final newline, for the humans who cat these files. */
        if (!s || asprintf(&text, "%s\n", s) < 0)
                return -ENOMEM;
        return store_write_file(dirfd, name, text);
}

/* Reads at most max_size bytes; the file may grow after fstat(), so the size is checked again
 * while reading. */
static int read_bounded(int fd, size_t size_hint, size_t max_size, char **ret, size_t *ret_len) {
        _cleanup_free_ char *buf = NULL;
        size_t cap = (size_hint < max_size ? size_hint : max_size) + 1, n = 0;

        buf = malloc(cap + 1);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t k;

                if (n == cap) {
                        char *p;

                        if (cap > max_size)
                                return -EFBIG;
                        cap = cap > max_size / 2 ? max_size + 1 : cap * 2;
                        p = realloc(buf, cap + 1);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                }

                k = read(fd, buf + n, cap - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }

        buf[n] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = n;
        return 0;
}

static int parse_json_object(const char *buf, size_t len, json_object **ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_(json_object_putp) json_object *obj = NULL;

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        /* Strict: our own writer never produces anything else, so leniency would only hide
         * corruption. Trailing garbage and embedded NULs fail the parse_end check. */
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

        obj = json_tokener_parse_ex(tok, buf, (int) len);
        if (!obj || json_tokener_get_error(tok) != json_tokener_success)
                return log_debug_errno(EBADMSG, "Invalid JSON: %s",
                                       json_tokener_error_desc(json_tokener_get_error(tok)));
        if (json_tokener_get_parse_end(tok) != len)
                return log_debug_errno(EBADMSG, "Trailing data after JSON document.");
        if (!json_object_is_type(obj, json_type_object))
                return log_debug_errno(EBADMSG, "JSON document is not an object.");

        *ret = TAKE_PTR(obj);
        return 0;
}

int store_read_json(int dirfd, const char *name, size_t max_size, json_object **ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        int r;

        /* json_tokener_parse_ex() takes an int length. */
        if (max_size > INT_MAX)
                max_size = INT_MAX;

        /* O_NONBLOCK: a FIFO planted under a metadata name must not hang the daemon. */
        fd = open_beneath(dirfd, name, O_RDONLY | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK, 0);
        if (fd < 0)
                return fd;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return log_debug_errno(EBADMSG, "%s is not a regular file.", name);
        if ((uint64_t) st.st_size > max_size)
                return log_debug_errno(EFBIG, "%s is larger than %zu bytes.", name, max_size);

        r = read_bounded(fd, (size_t) st.st_size, max_size, &buf, &len);
        if (r < 0)
                return log_debug_errno(r, "Failed to read %s: %m", name);

        r = parse_json_object(buf, len, ret);
        if (r < 0)
                return log_debug_errno(r, "Failed to parse %s: %m", name);
        return 0;
}

int rename_beneath(int dirfd, const char *src, const char *dst, bool replace) {
        _cleanup_close_ int src_parent = -EBADF, dst_parent = -EBADF;
        const char *src_base, *dst_base;
        int r;

        r = open_parent_beneath(dirfd, src, &src_parent, &src_base);
        if (r < 0)
                return r;
        r = open_parent_beneath(dirfd, dst, &dst_parent, &dst_base);
        if (r < 0)
                return r;

        if (renameat2(src_parent, src_base, dst_parent, dst_base, replace ? 0 : RENAME_NOREPLACE) < 0)
                return -errno;

        r = fsync_dir(dst_parent);
        if (r < 0)
                return r;
        /* Usually the same directory; syncing it again is cheap. */
        return fsync_dir(src_parent);
}

static int remove_entry(int dirfd, const char *name, unsigned depth);

static int remove_dir_contents(DIR *d, unsigned depth) {
        int ret = 0;

        for (;;) {
                struct dirent *de;
                int r;

                errno = 0;
                de = readdir(d);
                if (!de)
                        return errno > 0 ? -errno : ret;

                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;

                r = remove_entry(dirfd(d), de->d_name, depth);
                if (r < 0 && r != -ENOENT && ret == 0)
                        ret = r;
        }
}

/* Removes what it can and returns the first error: an entry that could not be removed must not
 * keep its siblings alive. */
static int remove_entry(int dirfd, const char *name, unsigned depth) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct stat st;
        int r, fd;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return -errno;

        if (!S_ISDIR(st.st_mode)) {
                /* Symlinks included: the link goes, its target stays. */
                if (unlinkat(dirfd, name, 0) < 0)
                        return -errno;
                return 0;
        }

        if (depth >= REMOVE_TREE_MAX_DEPTH)
                return log_debug_errno(ELOOP, "Not descending into %s: tree too deep.", name);

        /* RESOLVE_NO_XDEV refuses a mount point, bind mounts of the same file system included,
         * which an st_dev comparison would miss. A directory swapped for a symlink since the
         * fstatat() fails with ELOOP. */
        fd = openat2_retry(dirfd, name, O_RDONLY | O_DIRECTORY, 0,
                           RESOLVE_STORE | RESOLVE_NO_XDEV);
        if (fd == -EXDEV)
                return log_debug_errno(EBUSY, "Not descending into mount point %s.", name);
        if (fd < 0)
                return fd;

        d = fdopendir(fd);
        if (!d) {
                r = -errno;
                safe_close(fd);
                return r;
        }

        r = remove_dir_contents(d, depth + 1);
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && r == 0)
                r = -errno;
        return r;
}

int remove_tree_beneath(int dirfd, const char *name) {
        _cleanup_close_ int parent = -EBADF;
        const char *base;
        int r;

        r = open_parent_beneath(dirfd, name, &parent, &base);
        if (r < 0)
                return r;

        return remove_entry(parent, base, 0);
}

int opendir_beneath(int dirfd, const char *path, DIR **ret) {
        DIR *d;
        int fd;

        fd = open_beneath(dirfd, path, O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0)
                return fd;
        d = fdopendir(fd);
        if (!d) {
                int r = -errno;

                safe_close(fd);
                return r;
        }
        *ret = d;   /* owns fd from now on */
        return 0;
}

int store_remove_staging(int dirfd) {
        _cleanup_(closedirp) DIR *d = NULL;
        int r, ret = 0, n = 0;

        r = opendir_beneath(dirfd, ".", &d);
        if (r < 0)
                return r;

        for (;;) {
                struct dirent *de;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno > 0)
                                return -errno;
                        break;
                }

                if (strncmp(de->d_name, STORE_STAGING_PREFIX, strlen(STORE_STAGING_PREFIX)) != 0)
                        continue;

                r = remove_entry(dirfd, de->d_name, 0);
                if (r >= 0)
                        n++;
                else if (r != -ENOENT && ret == 0)
                        ret = log_debug_errno(r, "Failed to remove staging entry %s: %m", de->d_name);
        }

        return ret < 0 ? ret : n;
}

static json_object *json_get(json_object *o, const char *key) {
        json_object *v;

        if (!o || !key || !json_object_is_type(o, json_type_object))
                return NULL;
        if (!json_object_object_get_ex(o, key, &v))
                return NULL;
        return v;
}

uint64_t json_get_u64(json_object *o, const char *key, uint64_t def) {
        json_object *v = json_get(o, key);

        if (!json_object_is_type(v, json_type_int))
                return def;
        /* json-c keeps integers as int64 or uint64; get_uint64() would turn a negative one
         * into 0 rather than tell us. */
        if (json_object_get_int64(v) < 0)
                return def;
        return json_object_get_uint64(v);
}

bool json_get_bool(json_object *o, const char *key, bool def) {
        json_object *v = json_get(o, key);

        if (!json_object_is_type(v, json_type_boolean))
                return def;
        return json_object_get_boolean(v);
}

const char *json_get_string(json_object *o, const char *key) {
        json_object *v = json_get(o, key);

        if (!json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

int file_open_for_writing(int fd) {
        if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
                return errno == EAGAIN ? 1 : -errno;
        (void) fcntl(fd, F_SETLEASE, F_UNLCK);
        return 0;
}
