/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-c/json.h>
#include <sys/types.h>

#include "util.h"

/* Everything cisternd keeps on disk is reached beneath a directory fd, never following a
 * symlink, and written atomically. Staging entries carry STORE_STAGING_PREFIX; names given by
 * users never start with '.', so they cannot collide, and store_remove_staging() may sweep them
 * after a crash.
 *
 * Paths are relative to dirfd and may have several components ("a/b"); an absolute path or one
 * that climbs out with ".." is -EXDEV, a symlink anywhere on the way is -ELOOP. Functions that
 * create, rename or remove an entry resolve its parent beneath dirfd and then act on the last
 * component only, which must be a plain name (not "", "." or ".."; else -EINVAL).
 * Errors are returned, not logged, except at debug level. */

#define STORE_STAGING_PREFIX ".stage-"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

/* openat2() with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS; O_CLOEXEC is
 * always added. Returns an fd or -errno. There is no fallback for kernels without openat2()
 * (-ENOSYS, also under valgrind < 3.20). */
int open_beneath(int dirfd, const char *path, int flags, mode_t mode);

/* Opens path beneath dirfd as a directory stream of its own (with its own offset: dirfd may be
 * iterated elsewhere, or be O_PATH). */
int opendir_beneath(int dirfd, const char *path, DIR **ret);

/* Opens (creating with mode when missing) the directory name beneath dirfd. Returns fd or -errno;
 * -ENOTDIR when name is something else, -ELOOP when it is a symlink. */
int open_or_create_dir_beneath(int dirfd, const char *name, mode_t mode);

/* Also accepts an O_PATH fd. */
int fsync_dir(int dirfd);

/* A fresh random staging name (STORE_STAGING_PREFIX + random characters), for objects that
 * are then created exclusively (O_EXCL) under it. */
int staging_name_new(char **ret);

/* Creates a new staging file (O_CREAT|O_EXCL, random name with STORE_STAGING_PREFIX) beneath
 * dirfd, opened O_RDWR. Returns the fd and the name in ret_name. */
int staging_file_create(int dirfd, mode_t mode, char **ret_name);

/* Creates a new staging directory (random name with STORE_STAGING_PREFIX) beneath dirfd.
 * Returns 0 (not an fd) and the name in ret_name. */
int staging_dir_create(int dirfd, mode_t mode, char **ret_name);

/* Writes text to name beneath dirfd as store_write_json() writes JSON. */
int store_write_file(int dirfd, const char *name, const char *text);

/* Writes obj as JSON to name beneath dirfd: exclusive staging file (mode 0600) next to name,
 * fsync, rename over name, fsync of the directory. On failure nothing changed and no staging
 * file remains, with one exception: if only the final directory fsync fails, the new content is
 * already in place but may not survive a crash, and the error is still returned. */
int store_write_json(int dirfd, const char *name, json_object *obj);

/* Reads and parses name beneath dirfd (at most max_size bytes, capped at INT_MAX; larger is
 * -EFBIG). Not a regular file, not strict JSON, trailing data or not an object: -EBADMSG. */
int store_read_json(int dirfd, const char *name, size_t max_size, json_object **ret);

/* Renames src to dst beneath dirfd with RENAME_NOREPLACE (dst existing is -EEXIST) or, when
 * replace is true, over dst (a directory only over an empty one); then fsyncs the directories. */
int rename_beneath(int dirfd, const char *src, const char *dst, bool replace);

/* Removes name beneath dirfd and, if it is a directory, everything below it; symlinks are
 * removed, never followed; never crosses into another mount, bind mounts included. -ENOENT when
 * absent. Removes what it can and returns the first error: -EBUSY for a mount point left in
 * place, -ELOOP for a tree more than 16 levels deep. */
int remove_tree_beneath(int dirfd, const char *name);

/* Removes every entry of dirfd whose name starts with STORE_STAGING_PREFIX (a leftover of a
 * crash), recursively; entries further down are not looked at. Returns the number removed, or
 * the first error after trying them all. */
int store_remove_staging(int dirfd);

/* Whether anyone has the file open as fd (read-only, ours) open for writing or mapped
 * writable: 1 yes, 0 no. A read lease is refused exactly then. */
int file_open_for_writing(int fd);

/* Tiny typed accessors for metadata documents: missing keys and values of another type give
 * the default (for json_get_u64(), so do negative integers and doubles). */
uint64_t json_get_u64(json_object *o, const char *key, uint64_t def);
bool json_get_bool(json_object *o, const char *key, bool def);
const char *json_get_string(json_object *o, const char *key); /* NULL when missing or not a string */
