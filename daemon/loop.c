/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <linux/loop.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "partition.h"

char *loop_node(const LoopDevice *d, char buf[static LOOP_NODE_MAX]) {
        snprintf(buf, LOOP_NODE_MAX, "/dev/loop%u", d->number);
        return buf;
}

/* Fills d from the open loop device fd. */
static int loop_read_identity(int fd, unsigned number, LoopDevice *d) {
        struct stat st;
        uint64_t diskseq;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        if (ioctl(fd, BLKGETDISKSEQ, &diskseq) < 0)
                return -errno;
        *d = (LoopDevice) { .number = number, .devnum = st.st_rdev, .diskseq = diskseq };
        return 0;
}

static int open_number(unsigned number, int flags) {
        char node[LOOP_NODE_MAX];
        int fd;

        fd = open(loop_node(&(LoopDevice) { .number = number }, node), flags | O_CLOEXEC | O_NOCTTY);
        return fd < 0 ? -errno : fd;
}

/* One try: a free device, claimed, then configured with backing_fd. -EBUSY when another process
 * took it first. */
static int attach_once(int control_fd, const struct loop_config *config, LoopClaimFunc claim, void *userdata,
                       LoopDevice *ret) {
        _cleanup_close_ int fd = -EBADF;
        struct loop_config c = *config;
        int number, r;

        number = ioctl(control_fd, LOOP_CTL_GET_FREE);
        if (number < 0)
                return -errno;
        fd = open_number((unsigned) number, (c.info.lo_flags & LO_FLAGS_READ_ONLY ? O_RDONLY : O_RDWR));
        if (fd < 0)
                return fd;
        r = claim(number, true, userdata);
        if (r < 0)
                return r;
        r = ioctl(fd, LOOP_CONFIGURE, &c) < 0 ? -errno : 0;
        if (r == -EINVAL && (c.info.lo_flags & LO_FLAGS_DIRECT_IO)) {
                /* The backing filesystem cannot do direct I/O (tmpfs): buffered, then. */
                c.info.lo_flags &= ~LO_FLAGS_DIRECT_IO;
                r = ioctl(fd, LOOP_CONFIGURE, &c) < 0 ? -errno : 0;
        }
        if (r >= 0) {
                r = loop_read_identity(fd, (unsigned) number, ret);
                if (r < 0)
                        (void) ioctl(fd, LOOP_CLR_FD);
        }
        if (r < 0)
                (void) claim(number, false, userdata);
        return r;
}

int loop_attach(int backing_fd, bool read_only, bool direct_io, LoopClaimFunc claim, void *userdata,
                LoopDevice *ret) {
        /* Two threads may be handed the same free number; only one of them may claim it. */
        static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;
        _cleanup_close_ int control_fd = -EBADF;
        struct loop_config config = {
                .fd = (uint32_t) backing_fd,
                .info.lo_flags = (direct_io ? LO_FLAGS_DIRECT_IO : 0) | (read_only ? LO_FLAGS_READ_ONLY : 0),
        };
        int r = -EBUSY;

        control_fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (control_fd < 0)
                return -errno;
        pthread_mutex_lock(&attach_lock);
        for (unsigned i = 0; i < LOOP_ATTACH_TRIES && r == -EBUSY; i++)
                r = attach_once(control_fd, &config, claim, userdata, ret);
        pthread_mutex_unlock(&attach_lock);
        if (r == -EBUSY)
                log_debug("Another process took each of %u free loop devices first.", LOOP_ATTACH_TRIES);
        return r;
}

int loop_open(const LoopDevice *d, int flags) {
        _cleanup_close_ int fd = -EBADF;
        LoopDevice now;
        int r;

        fd = open_number(d->number, flags);
        if (fd < 0)
                return fd == -ENOENT || fd == -ENXIO ? -ESTALE : fd;
        r = loop_read_identity(fd, d->number, &now);
        if (r < 0)
                return r;
        if (now.diskseq != d->diskseq || now.devnum != d->devnum)
                return -ESTALE;
        return TAKE_FD(fd);
}

int loop_detach(const LoopDevice *d) {
        _cleanup_close_ int fd = -EBADF;

        char sysname[LOOP_NODE_MAX];
        int r;

        /* O_EXCL fails with EBUSY while a filesystem is mounted on the device. */
        fd = loop_open(d, O_RDONLY | O_EXCL);
        if (fd < 0)
                return fd;
        /* Partitions added with BLKPG outlive LOOP_CLR_FD without partscan: they go first. */
        snprintf(sysname, sizeof sysname, "loop%u", d->number);
        r = partitions_remove_all(fd, sysname);
        if (r < 0)
                return r;
        if (ioctl(fd, LOOP_CLR_FD) < 0)
                return errno == ENXIO ? -ESTALE : -errno;
        return 0;
}

bool loop_is_bound(const LoopDevice *d) {
        _cleanup_close_ int fd = loop_open(d, O_RDONLY);
        struct loop_info64 info;

        return fd >= 0 && ioctl(fd, LOOP_GET_STATUS64, &info) >= 0;
}

int loop_set_capacity(const LoopDevice *d) {
        _cleanup_close_ int fd = loop_open(d, O_RDONLY);

        if (fd < 0)
                return fd;
        return ioctl(fd, LOOP_SET_CAPACITY, 0) < 0 ? -errno : 0;
}

int loop_identify(unsigned number, LoopDevice *ret, dev_t *ret_backing_dev, ino_t *ret_backing_ino) {
        _cleanup_close_ int fd = -EBADF;
        struct loop_info64 info;
        int r;

        fd = open_number(number, O_RDONLY);
        if (fd < 0)
                return fd == -ENOENT ? -ENXIO : fd;
        if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
                return -errno;  /* ENXIO: not configured */
        r = loop_read_identity(fd, number, ret);
        if (r < 0)
                return r;
        *ret_backing_dev = (dev_t) info.lo_device;
        *ret_backing_ino = (ino_t) info.lo_inode;
        return 0;
}
