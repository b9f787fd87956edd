/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands that move a volume's bytes between the service and the caller's files: import
 * and export. The service never opens a path of ours: cisternctl opens the file as the calling
 * user, with that user's rights, and passes the file descriptor. */

#include <fcntl.h>
#include <sys/stat.h>

#include "cisternctl.h"
#include "ctl-wait.h"

typedef struct IoFile {
        const char *path;               /* NULL: standard input or output */
        const char *where;              /* for messages: the path, or "standard input" or "output" */
        int fd;
        bool created;                   /* by us: removed again when the export fails */
        struct stat st;
} IoFile;

static void io_file_done(IoFile *f) {
        if (f->path && f->fd >= 0)
                (void) close(f->fd);
        f->fd = -EBADF;
}

/* FILE, or "-" for standard input or output: never empty, and never a terminal, which has no
 * business holding a disk image. Checked before the bus is used, as usage errors are. */
static int io_file_arg_check(const Context *c, const char *file, bool write) {
        const char *stream = write ? "output" : "input";

        if (file[0] == '\0')
                return usage_error(c, "The file name must not be empty; use - for standard %s.", stream);
        if (streq(file, "-") && isatty(write ? STDOUT_FILENO : STDIN_FILENO))
                return usage_error(c, "Refusing to %s a disk image %s a terminal; name a file, or "
                                   "redirect standard %s.", write ? "write" : "read",
                                   write ? "to" : "from", stream);
        return 0;
}

/* Opens FILE for writing, truncated, as cp and dd do, and notes whether it did not exist. An
 * exclusive create first tells for sure; when the name exists (or is a dangling symlink), the
 * second open takes it as it is, and the file is then never removed. */
static int io_file_create(IoFile *f, const char *path) {
        int fd;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
        if (fd >= 0)
                f->created = true;
        else if (errno == EEXIST)
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0644);
        return fd;
}

/* Removes a file we created, unless its name has meanwhile gone to another file. */
static void io_file_remove(IoFile *f) {
        struct stat st;

        if (!f->path || !f->created)
                return;
        if (lstat(f->path, &st) < 0 || st.st_dev != f->st.st_dev || st.st_ino != f->st.st_ino)
                return;
        if (unlink(f->path) < 0)
                (void) log_error_errno(errno, "Failed to remove the incomplete %s: %s", f->path, strerror(errno));
}

/* The service reads or writes a regular file from its start, whatever the offset of the fd.
 * A standard stream that is a regular file opened for appending (">>"), or already read from or
 * written to, would lose that: refuse it. */
static int io_file_check(const IoFile *f, bool write) {
        off_t offset;
        int flags;

        if (f->path || !S_ISREG(f->st.st_mode))
                return 0;
        offset = lseek(f->fd, 0, SEEK_CUR);
        flags = fcntl(f->fd, F_GETFL);
        if (offset == 0 && flags >= 0 && !(write && (flags & O_APPEND)))
                return 0;
        if (write)
                return log_error_errno(EINVAL, "Standard output is a file opened for appending or already "
                                       "written to; name the file instead.");
        return log_error_errno(EINVAL, "Standard input is a file already read from; name the file instead.");
}

/* Opens FILE for writing (created or emptied) or reading, or takes standard output or input
 * for "-". */
static int io_file_open(IoFile *f, const char *file, bool write) {
        int r;

        if (streq(file, "-")) {
                f->fd = write ? STDOUT_FILENO : STDIN_FILENO;
                f->where = write ? "standard output" : "standard input";
        } else {
                f->fd = write ? io_file_create(f, file) : open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (f->fd < 0)
                        return log_error_errno(errno, "Failed to open %s for %s: %s", file,
                                               write ? "writing" : "reading", strerror(errno));
                f->path = f->where = file;
        }

        if (fstat(f->fd, &f->st) < 0) {
                r = log_error_errno(errno, "Failed to stat %s: %s", f->where, strerror(errno));
                if (f->created)
                        (void) unlink(file);
                f->created = false;
                return r;
        }
        return io_file_check(f, write);
}

/* The options of import and export; the command line allows each command only its own. */
static int io_options_append(const Context *c, sd_bus_message *m) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && c->format)
                r = sd_bus_message_append(m, "{sv}", "format", "s", c->format);
        if (r >= 0 && c->no_sparse)
                r = sd_bus_message_append(m, "{sv}", "sparse", "b", 0);
        if (r >= 0 && c->revision)
                r = sd_bus_message_append(m, "{sv}", "revision", "s", c->revision);
        if (r >= 0 && (c->options_seen & OPTION_SIZE))
                r = sd_bus_message_append(m, "{sv}", "size", "t", c->size);
        if (r < 0)
                return r;

        return sd_bus_message_close_container(m);
}

/* Completes m, a call of Import or Export, with f and the command's options, and waits for it
 * with a progress bar. Returns 0, or a negative errno with error set when the service failed. */
static int io_call(Context *c, sd_bus_message *m, const IoFile *f, sd_bus_error *error) {
        int r;

        r = sd_bus_message_append(m, "h", f->fd);
        if (r >= 0)
                r = io_options_append(c, m);
        if (r >= 0)
                r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m),
                                           context_show_progress(c), error, NULL);
        if (r < 0)
                return r;

        /* The service used fixed offsets and left the offset we share with whatever uses the
         * standard stream next at the start; move it past the image, as cat would. */
        if (!f->path && S_ISREG(f->st.st_mode))
                (void) lseek(f->fd, 0, SEEK_END);
        return 0;
}

int verb_import(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        _cleanup_(io_file_done) IoFile f = { .fd = -EBADF };
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r >= 0)
                r = io_file_arg_check(c, argv[2], false);
        if (r >= 0)
                r = io_file_open(&f, argv[2], false);
        if (r < 0)
                return r;
        if (S_ISDIR(f.st.st_mode))
                return log_error_errno(EISDIR, "Failed to read %s: %s", f.where, strerror(EISDIR));
        /* The service learns the size of a regular file itself; a stream has to announce it. */
        if (!S_ISREG(f.st.st_mode) && !(c->options_seen & OPTION_SIZE))
                return usage_error(c, "The size of %s cannot be known in advance; give it with --size=SIZE.",
                                   f.where);

        r = volume_method_call(c, pool, volume, "Import", &m);
        if (r < 0)
                return r;

        r = io_call(c, m, &f, &error);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to import %s into volume %s/%s",
                                     f.where, pool, volume);
        return 0;
}

int verb_export(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        _cleanup_(io_file_done) IoFile f = { .fd = -EBADF };
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r >= 0)
                r = io_file_arg_check(c, argv[2], true);
        if (r < 0)
                return r;

        /* Finds the volume first, so that a mistyped name leaves the file alone. */
        r = volume_method_call(c, pool, volume, "Export", &m);
        if (r >= 0)
                r = io_file_open(&f, argv[2], true);
        if (r < 0)
                return r;

        r = io_call(c, m, &f, &error);
        if (r < 0) {
                io_file_remove(&f);
                return log_bus_error(r, &error, "Failed to export volume %s/%s to %s", pool, volume, f.where);
        }

        /* A network filesystem may report a failed write only now. */
        if (f.path) {
                r = close(f.fd);
                f.fd = -EBADF;
                if (r < 0) {
                        r = log_error_errno(errno, "Failed to write %s: %s", f.path, strerror(errno));
                        io_file_remove(&f);
                        return r;
                }
        }
        return 0;
}
