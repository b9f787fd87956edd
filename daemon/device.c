/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "device.h"
#include "driver.h"
#include "log.h"
#include "store.h"

#define RECORD_MAX 256  /* two names of at most 64 characters and their keys */
#define CLAIM_NAME_MAX sizeof("loop4294967295")

static void record_name(const LoopDevice *d, char buf[static 21]) {
        snprintf(buf, 21, "%" PRIu64, d->diskseq);
}

static int record_write(Volume *v, const char *name) {
        _cleanup_free_ char *text = NULL;

        if (asprintf(&text, "CISTERN_POOL=%s\nCISTERN_VOLUME=%s\n", v->pool->name, v->name) < 0)
                return -ENOMEM;
        return store_write_file(v->pool->manager->devices_fd, name, text);
}

static void claim_name(unsigned number, char buf[static CLAIM_NAME_MAX]) {
        snprintf(buf, CLAIM_NAME_MAX, "loop%u", number);
}

static void claim_remove(Manager *m, unsigned number) {
        char name[CLAIM_NAME_MAX];

        claim_name(number, name);
        if (unlinkat(m->devices_fd, name, 0) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove device claim %s: %m", name);
}

static int claim(unsigned number, bool claimed, void *userdata) {
        Volume *v = userdata;
        char name[CLAIM_NAME_MAX];

        if (!claimed) {
                claim_remove(v->pool->manager, number);
                return 0;
        }
        claim_name(number, name);
        return record_write(v, name);
}

int device_attach(Volume *v, int backing_fd, bool read_only, LoopDevice *ret) {
        char name[21];
        int r;

        r = loop_attach(backing_fd, read_only, claim, v, ret);
        if (r < 0)
                return r;
        /* The record first, then the claim goes: one of them is there for every uevent. */
        record_name(ret, name);
        r = record_write(v, name);
        claim_remove(v->pool->manager, ret->number);
        if (r < 0) {
                int k = loop_detach(ret);
                if (k < 0)
                        log_warning_errno(k, "Failed to detach /dev/loop%u again: %m", ret->number);
        }
        return r;
}

static void record_remove(Manager *m, const LoopDevice *d) {
        char name[21];

        record_name(d, name);
        if (unlinkat(m->devices_fd, name, 0) < 0 && errno != ENOENT)
                log_warning_errno(errno, "Failed to remove device record %s: %m", name);
}

void device_release(Manager *m, const LoopDevice *d) {
        LoopDevice *a;

        if (!loop_is_bound(d)) {
                record_remove(m, d);
                return;
        }
        a = reallocarray(m->released, m->n_released + 1, sizeof *a);
        if (!a) {
                /* Better a record that lingers until the next start than one gone too early. */
                log_oom();
                return;
        }
        m->released = a;
        m->released[m->n_released++] = *d;
        log_debug("/dev/loop%u is still open elsewhere; its record goes when it is let go.", d->number);
}

void device_on_uevent(dev_t devnum, void *userdata) {
        Manager *m = userdata;

        for (size_t i = 0; i < m->n_released;) {
                LoopDevice *d = &m->released[i];

                if (d->devnum != devnum || loop_is_bound(d)) {
                        i++;
                        continue;
                }
                record_remove(m, d);
                *d = m->released[--m->n_released];
        }
}

/* The value of key in a record's text, copied into buf. */
static bool record_get(const char *text, const char *key, char *buf, size_t size) {
        size_t klen = strlen(key);

        for (const char *line = text; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
                size_t n;

                if (strncmp(line, key, klen) != 0 || line[klen] != '=')
                        continue;
                n = strcspn(line + klen + 1, "\n");
                if (n >= size)
                        return false;
                memcpy(buf, line + klen + 1, n);
                buf[n] = '\0';
                return true;
        }
        return false;
}

static int read_small_file(int dirfd, const char *name, char *buf, size_t size) {
        _cleanup_close_ int fd = open_beneath(dirfd, name, O_RDONLY, 0);
        ssize_t n;

        if (fd < 0)
                return fd;
        n = read(fd, buf, size - 1);
        if (n < 0)
                return -errno;
        buf[n] = '\0';
        return 0;
}

/* The number of the loop device whose diskseq is diskseq, from sysfs; -ENODEV when none. */
static int find_loop_number(uint64_t diskseq, unsigned *ret) {
        _cleanup_(closedirp) DIR *d = opendir("/sys/block");
        struct dirent *de;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                char path[300], buf[32];
                unsigned number;
                FILE *f;
                bool match;

                if (sscanf(de->d_name, "loop%u", &number) != 1)
                        continue;
                snprintf(path, sizeof path, "/sys/block/%s/diskseq", de->d_name);
                f = fopen(path, "re");
                if (!f)
                        continue;
                match = fgets(buf, sizeof buf, f) && strtoull(buf, NULL, 10) == diskseq;
                fclose(f);
                if (match) {
                        *ret = number;
                        return 0;
                }
        }
        return -ENODEV;
}

static bool loop_is_read_only(const LoopDevice *d) {
        char path[64], c = '0';
        FILE *f;

        snprintf(path, sizeof path, "/sys/block/loop%u/ro", d->number);
        f = fopen(path, "re");
        if (f) {
                c = (char) fgetc(f);
                fclose(f);
        }
        return c == '1';
}

/* Whether the file dev:ino is v's object name. */
static bool is_object(Volume *v, int vdir_fd, const char *name, dev_t dev, ino_t ino) {
        struct stat st;

        return fstatat(vdir_fd, name, &st, AT_SYMLINK_NOFOLLOW) >= 0 && st.st_dev == dev && st.st_ino == ino;
}

/* One record: the device is the volume's again, or goes. */
static void rediscover_one(Manager *m, const char *name) {
        char text[RECORD_MAX], pool_name[65], volume_name[65];
        LoopDevice d = { .diskseq = strtoull(name, NULL, 10) };
        Volume *v = NULL;
        Pool *p;
        dev_t dev;
        ino_t ino;
        int r;

        if (read_small_file(m->devices_fd, name, text, sizeof text) >= 0 &&
            record_get(text, "CISTERN_POOL", pool_name, sizeof pool_name) &&
            record_get(text, "CISTERN_VOLUME", volume_name, sizeof volume_name) &&
            (p = manager_get_pool(m, pool_name)))
                v = pool_get_volume(p, volume_name);

        r = find_loop_number(d.diskseq, &d.number);
        if (r >= 0)
                r = loop_identify(d.number, &d, &dev, &ino);
        if (r < 0) {
                log_debug("Device of record %s is gone.", name);
                record_remove(m, &d);
                return;
        }
        if (v && !volume_is_attached(v)) {
                _cleanup_close_ int vdir_fd = volume_open_dir(v);

                if (vdir_fd >= 0 && is_object(v, vdir_fd, OBJECT_WORK, dev, ino))
                        v->device_on_work = true;
                else if (vdir_fd < 0 || !is_object(v, vdir_fd, OBJECT_IMAGE, dev, ino))
                        v = NULL;
        }
        if (v && !volume_is_attached(v)) {
                _cleanup_close_ int fd = loop_open(&d, O_RDONLY);
                char sysname[LOOP_NODE_MAX];

                snprintf(sysname, sizeof sysname, "loop%u", d.number);
                if (fd >= 0)
                        (void) partitions_list(fd, sysname, &v->partitions, &v->n_partitions);
                v->device = d;
                v->device_read_only = loop_is_read_only(&d);
                log_debug("Volume %s/%s is attached as /dev/loop%u.", v->pool->name, v->name, d.number);
                return;
        }
        log_info("Detaching /dev/loop%u: the volume it was attached for is gone.", d.number);
        r = loop_detach(&d);
        if (r < 0 && r != -ESTALE) {
                log_warning_errno(r, "Failed to detach /dev/loop%u, keeping its record: %m", d.number);
                return;
        }
        device_release(m, &d);
}

void device_rediscover(Manager *m) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;

        unsigned number;

        (void) store_remove_staging(m->devices_fd);
        if (opendir_beneath(m->devices_fd, ".", &d) < 0)
                return;
        while ((de = readdir(d)))
                if (de->d_name[0] >= '1' && de->d_name[0] <= '9' && strspn(de->d_name, "0123456789") == strlen(de->d_name))
                        rediscover_one(m, de->d_name);
                else if (sscanf(de->d_name, "loop%u", &number) == 1)
                        /* A claim an attach left when the daemon died in the midst of it. */
                        claim_remove(m, number);
}
