/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands that move a volume's bytes between the service and the caller's files: export.
 * The service never opens a path of ours: cisternctl opens the file as the calling user, with
 * that user's rights, and passes the file descriptor. */

#include <fcntl.h>
#include <sys/stat.h>

#include "cisternctl.h"
#include "ctl-wait.h"

typedef struct ExportTarget {
        const char *path;               /* NULL: standard output */
        int fd;
        bool created;                   /* by us: removed again when the export fails */
        struct stat st;
} ExportTarget;

static void export_target_done(ExportTarget *t) {
        if (t->path && t->fd >= 0)
                (void) close(t->fd);
        t->fd = -EBADF;
}

/* Opens FILE for writing, truncated, as cp and dd do, and notes whether it did not exist. An
 * exclusive create first tells for sure; when the name exists (or is a dangling symlink), the
 * second open takes it as it is, and the file is then never removed. */
static int export_target_open(ExportTarget *t, const char *path) {
        int fd, r;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd >= 0)
                t->created = true;
        else if (errno == EEXIST)
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open %s for writing: %s", path, strerror(errno));

        t->path = path;
        t->fd = fd;
        if (fstat(fd, &t->st) < 0) {
                r = log_error_errno(errno, "Failed to stat %s: %s", path, strerror(errno));
                if (t->created)
                        (void) unlink(path);
                t->created = false;
                return r;
        }
        return 0;
}

/* Removes a file we created, unless its name has meanwhile gone to another file. */
static void export_target_remove(ExportTarget *t) {
        struct stat st;

        if (!t->path || !t->created)
                return;
        if (lstat(t->path, &st) < 0 || st.st_dev != t->st.st_dev || st.st_ino != t->st.st_ino)
                return;
        if (unlink(t->path) < 0)
                (void) log_error_errno(errno, "Failed to remove the incomplete %s: %s", t->path, strerror(errno));
}

/* The service writes a regular file from its start, replacing what it held. Standard output
 * redirected with ">>", or already written to, would lose that: refuse it. */
static int export_target_check(const ExportTarget *t) {
        int flags;

        if (t->path || !S_ISREG(t->st.st_mode))
                return 0;
        flags = fcntl(t->fd, F_GETFL);
        if (flags < 0 || (flags & O_APPEND) || lseek(t->fd, 0, SEEK_CUR) != 0) {
                return log_error_errno(EINVAL, "Standard output is a file opened for appending or already "
                                       "written to; name the file instead.");
        }
        return 0;
}

static int export_options_append(const Context *c, sd_bus_message *m, bool sparse) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && c->format)
                r = sd_bus_message_append(m, "{sv}", "format", "s", c->format);
        if (r >= 0 && !sparse)
                r = sd_bus_message_append(m, "{sv}", "sparse", "b", 0);
        if (r >= 0 && c->revision)
                r = sd_bus_message_append(m, "{sv}", "revision", "s", c->revision);
        if (r < 0)
                return r;

        return sd_bus_message_close_container(m);
}

int verb_export(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        _cleanup_(export_target_done) ExportTarget t = { .fd = -EBADF };
        const char *file = argv[2], *where;
        bool sparse;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r < 0)
                return r;
        if (file[0] == '\0')
                return usage_error(c, "The file name must not be empty; use - for standard output.");
        if (streq(file, "-") && isatty(STDOUT_FILENO))
                return usage_error(c, "Refusing to write a disk image to a terminal; "
                                   "name a file, or redirect standard output.");

        /* Finds the volume first, so that a mistyped name leaves the file alone. */
        r = volume_method_call(c, pool, volume, "Export", &m);
        if (r < 0)
                return r;

        if (streq(file, "-")) {
                t.fd = STDOUT_FILENO;
                if (fstat(t.fd, &t.st) < 0)
                        return log_error_errno(errno, "Failed to stat standard output: %s", strerror(errno));
                where = "standard output";
        } else {
                r = export_target_open(&t, file);
                if (r < 0)
                        return r;
                where = file;
        }
        r = export_target_check(&t);
        if (r < 0)
                return r;
        sparse = !c->no_sparse;

        r = sd_bus_message_append(m, "h", t.fd);
        if (r >= 0)
                r = export_options_append(c, m, sparse);
        if (r < 0) {
                export_target_remove(&t);
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));
        }

        r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m), context_show_progress(c),
                                   &error, NULL);
        if (r < 0) {
                export_target_remove(&t);
                return log_bus_error(r, &error, "Failed to export volume %s/%s to %s",
                                     pool, volume, where);
        }

        /* The copy wrote at fixed offsets and left the offset we share with whatever writes to
         * standard output next at the start; move it past the image. */
        if (!t.path && S_ISREG(t.st.st_mode))
                (void) lseek(t.fd, 0, SEEK_END);

        /* A network filesystem may report a failed write only now. */
        if (t.path) {
                r = close(t.fd);
                t.fd = -EBADF;
                if (r < 0) {
                        r = log_error_errno(errno, "Failed to write %s: %s", file, strerror(errno));
                        export_target_remove(&t);
                        return r;
                }
        }
        return 0;
}
