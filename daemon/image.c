/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <sys/stat.h>

#include "image.h"
#include "manager.h"

static int format_of(const char *format) {
        int f = qemu_format_from_string(format);

        return f < 0 ? -EMEDIUMTYPE : f;
}

bool image_format_is_valid(const char *format) {
        return format && qemu_format_from_string(format) >= 0;
}

const char *image_format_static(const char *format) {
        int f = format ? qemu_format_from_string(format) : -EINVAL;

        return f < 0 ? NULL : qemu_format_to_string(f);
}

int image_inspect_qcow2(Volume *v, int fd, Qcow2Info *info, Qcow2Problem *problem) {
        Qcow2Limits limits = { .max_virtual_size = v->pool->manager->limits.max_volume_size };
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        return qcow2_inspect(fd, (uint64_t) st.st_size, &limits, info, problem);
}

int image_create(Volume *v, int vdir_fd, const char *name, const char *format, uint64_t size, bool preallocate,
                 char **error) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int fd = -EBADF;
        int f = format_of(format), r;

        if (f < 0)
                return f;
        if (f == QEMU_FORMAT_RAW)
                return d->object_create(v, vdir_fd, name, size, preallocate);

        r = d->object_create(v, vdir_fd, name, 0, false);
        if (r < 0)
                return r;
        fd = d->object_open(vdir_fd, name, O_RDWR);
        r = fd < 0 ? fd : qemu_img_create(fd, f, size, preallocate, error);
        if (r < 0)
                (void) d->object_remove(vdir_fd, name);
        return r;
}

int image_stat(Volume *v, int vdir_fd, const char *name, const char *format, uint64_t *ret_size,
               uint64_t *ret_usage) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int fd = -EBADF;
        uint64_t size, usage;
        int f = format_of(format), r;

        if (f < 0)
                return f;
        r = d->object_stat(vdir_fd, name, &size, &usage);
        if (r < 0)
                return r;
        if (f == QEMU_FORMAT_QCOW2) {
                fd = d->object_open(vdir_fd, name, O_RDONLY);
                if (fd < 0)
                        return fd;
                r = qcow2_read_virtual_size(fd, &size);
                if (r < 0)
                        return r == -ENOMEDIUM ? -EBADMSG : r;
        }
        *ret_size = size;
        *ret_usage = usage;
        return 0;
}

int image_resize(Volume *v, int vdir_fd, const char *name, const char *format, uint64_t size, bool shrink,
                 char **error) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int fd = -EBADF;
        Qcow2Info info;
        int f = format_of(format), r;

        if (f < 0)
                return f;
        if (f == QEMU_FORMAT_RAW)
                return d->object_resize(vdir_fd, name, size);
        fd = d->object_open(vdir_fd, name, O_RDWR);
        if (fd < 0)
                return fd;
        /* A working copy is the VM's to write, header included (Open): checked again. */
        r = image_inspect_qcow2(v, fd, &info, NULL);
        if (r < 0)
                return r == -ENOMEDIUM ? -EBADMSG : r;
        return qemu_img_resize(fd, f, size, shrink, error);
}

int image_convert(Volume *v, int src_dir_fd, const char *src, const char *src_format, int dst_dir_fd,
                  const char *dst, const char *dst_format, const QemuConvertOptions *options,
                  CopyProgress *progress, char **error) {
        const PoolDriver *d = v->pool->driver;
        _cleanup_close_ int in = -EBADF, out = -EBADF;
        int from = format_of(src_format), to = format_of(dst_format), r;
        Qcow2Info info;
        struct stat st;
        uint64_t size;

        if (from < 0 || to < 0)
                return -EMEDIUMTYPE;
        in = d->object_open(src_dir_fd, src, O_RDONLY);
        if (in < 0)
                return in;
        /* What qemu reads is what the inspector passed: the same open file. */
        if (from == QEMU_FORMAT_QCOW2) {
                r = image_inspect_qcow2(v, in, &info, NULL);
                if (r < 0)
                        return r == -ENOMEDIUM ? -EBADMSG : r;
                size = info.virtual_size;
        } else if (fstat(in, &st) < 0)
                return -errno;
        else
                size = (uint64_t) st.st_size;
        if (progress && progress->total == 0)     /* a published job's total is its own */
                progress->total = size;
        r = d->object_create(v, dst_dir_fd, dst, 0, false);
        if (r < 0)
                return r;
        out = d->object_open(dst_dir_fd, dst, O_RDWR);
        r = out < 0 ? out : qemu_img_convert(in, from, out, to, options, progress, error);
        if (r < 0)
                (void) d->object_remove(dst_dir_fd, dst);
        return r;
}
