/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "qcow2.h"
#include "qemu.h"
#include "volume.h"

/* A volume's objects read as images of a format: "raw" (the object's bytes are the guest's
 * disk) or "qcow2" (qemu's format, handled by qemu-img through qemu.c and read by cistern's own
 * inspector, qcow2.c). The format always comes from the volume's metadata, never from the
 * bytes: a raw image that looks like qcow2 stays raw. These block on I/O and on qemu: worker
 * threads only. Each returns 0 or -errno; where qemu failed (-EIO), *error (when not NULL)
 * receives qemu's own words. */

/* Whether format names a format cistern keeps volumes in. */
bool image_format_is_valid(const char *format);
/* The same name as a static string (NULL when not valid): for work that outlives a volume's
 * settings. */
const char *image_format_static(const char *format);

/* The new object name beneath vdir_fd, an empty image of format holding size bytes. */
int image_create(Volume *v, int vdir_fd, const char *name, const char *format, uint64_t size, bool preallocate,
                 char **error);

/* The guest-visible size of the image in object name (a qcow2 image's as its header states it:
 * one small read, no verdict on the image; -EBADMSG when there is no such header) and the bytes
 * its object allocates. */
int image_stat(Volume *v, int vdir_fd, const char *name, const char *format, uint64_t *ret_size,
               uint64_t *ret_usage);

/* Sets the guest-visible size of the image in object name; smaller only when shrink. A qcow2
 * image passes the inspector first (-EBADMSG). */
int image_resize(Volume *v, int vdir_fd, const char *name, const char *format, uint64_t size, bool shrink,
                 char **error);

/* The image of src_format in src (beneath src_dir_fd) written as the new object dst (beneath
 * dst_dir_fd) of dst_format, by qemu-img convert, a qcow2 source once it passed the inspector
 * (-EBADMSG). progress->done follows qemu's percentage of
 * progress->total (the image's virtual size when 0: a job's is set before it is published);
 * its cancel flag stops qemu (-ECANCELED). On failure dst does not exist. */
int image_convert(Volume *v, int src_dir_fd, const char *src, const char *src_format, int dst_dir_fd,
                  const char *dst, const char *dst_format, const QemuConvertOptions *options,
                  CopyProgress *progress, char **error);

/* Runs the inspector over the qcow2 image open as fd, with the limits of v's manager: 0 when
 * safe (info filled), -EBADMSG when unsafe, -ENOMEDIUM when not qcow2 at all (problem filled). */
int image_inspect_qcow2(Volume *v, int fd, Qcow2Info *info, Qcow2Problem *problem);
