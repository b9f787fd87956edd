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
#include "fuse-export.h"
#include "log.h"
#include "store.h"

#define RECORD_MAX 512  /* three names and their keys */
#define CLAIM_NAME_MAX sizeof("loop4294967295")

/* Whom a record or claim names: the volume, and the export its device is attached to, if any. */
typedef struct RecordOwner {
        Volume *volume;
        const char *export;
} RecordOwner;

static void record_name(const LoopDevice *d, char buf[static 21]) {
        snprintf(buf, 21, "%" PRIu64, d->diskseq);
}

static int record_write(const RecordOwner *o, const char *name) {
        _cleanup_free_ char *text = NULL;
        Volume *v = o->volume;

        if (asprintf(&text, "CISTERN_POOL=%s\nCISTERN_VOLUME=%s\n%s%s%s", v->pool->name, v->name,
                     o->export ? "CISTERN_EXPORT=" : "", o->export ?: "", o->export ? "\n" : "") < 0)
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
        const RecordOwner *o = userdata;
        char name[CLAIM_NAME_MAX];

        if (!claimed) {
                claim_remove(o->volume->pool->manager, number);
                return 0;
        }
        claim_name(number, name);
        return record_write(o, name);
}

int device_attach(Volume *v, int backing_fd, bool read_only, const char *export, LoopDevice *ret) {
        RecordOwner o = { .volume = v, .export = export };
        char name[21];
        int r;

        /* No direct I/O on an export: the FUSE export of qemu-storage-daemon 7.2 reads back other
         * bytes than the loop driver's direct I/O wrote; through the export file's page cache, it
         * reads back what was written. */
        r = loop_attach(backing_fd, read_only, !export, claim, &o, ret);
        if (r < 0)
                return r;
        /* The record first, then the claim goes: one of them is there for every uevent. */
        record_name(ret, name);
        r = record_write(&o, name);
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

/* The export named by the record or claim name, into buf: 1, or 0 when it names none. */
static int record_export(int devices_fd, const char *name, char buf[static FUSE_EXPORT_NAME_MAX]) {
        char text[RECORD_MAX];
        int r;

        r = read_small_file(devices_fd, name, text, sizeof text);
        if (r < 0)
                return r;
        return record_get(text, "CISTERN_EXPORT", buf, FUSE_EXPORT_NAME_MAX) && fuse_export_name_is_valid(buf);
}

int device_export(Manager *m, const LoopDevice *d, char buf[static FUSE_EXPORT_NAME_MAX]) {
        char name[21];

        record_name(d, name);
        return record_export(m->devices_fd, name, buf);
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

/* Whether export is one of v's. */
static bool is_export_of(Volume *v, const char *export) {
        size_t pool_len = strlen(v->pool->name), volume_len = strlen(v->name);

        return strncmp(export, v->pool->name, pool_len) == 0 && export[pool_len] == ':' &&
                strncmp(export + pool_len + 1, v->name, volume_len) == 0 && export[pool_len + 1 + volume_len] == ':';
}

/* Whether the file dev:ino, a device's backing file, is v's as its record says: for a qcow2
 * volume the live export the record names, for a raw one its working copy or committed image.
 * Sets v->device_on_work. */
static bool backs_volume(Volume *v, const char *export, dev_t dev, ino_t ino) {
        _cleanup_close_ int vdir_fd = -EBADF;

        if (streq(v->settings.format, "qcow2"))
                return export && is_export_of(v, export) && fuse_export_backs(v->pool->manager, export, dev, ino) > 0;
        if (export || !streq(v->settings.format, "raw"))
                return false;
        vdir_fd = volume_open_dir(v);
        if (vdir_fd < 0)
                return false;
        v->device_on_work = is_object(v, vdir_fd, OBJECT_WORK, dev, ino);
        return v->device_on_work || is_object(v, vdir_fd, OBJECT_IMAGE, dev, ino);
}

/* The exports of the devices found again: the others are ended. */
typedef struct ExportList {
        char (*names)[FUSE_EXPORT_NAME_MAX];
        size_t n;
        bool incomplete;        /* out of memory: no export may be ended */
} ExportList;

static void export_list_add(ExportList *l, const char *name) {
        void *a = reallocarray(l->names, l->n + 1, sizeof *l->names);

        if (!a) {
                log_oom();
                l->incomplete = true;
                return;
        }
        l->names = a;
        strcpy(l->names[l->n++], name);
}

static bool export_list_has(const ExportList *l, const char *name) {
        for (size_t i = 0; i < l->n; i++)
                if (streq(l->names[i], name))
                        return true;
        return false;
}

/* A device no volume has: detached, and its record goes. */
static void detach_stale(Manager *m, LoopDevice *d, const char *why) {
        int r;

        log_info("Detaching /dev/loop%u: %s.", d->number, why);
        r = loop_detach(d);
        if (r < 0 && r != -ESTALE) {
                log_warning_errno(r, "Failed to detach /dev/loop%u, keeping its record: %m", d->number);
                return;
        }
        device_release(m, d);
}

/* The device d is v's again. */
static void adopt(Volume *v, const LoopDevice *d, const char *export, ExportList *adopted) {
        _cleanup_close_ int fd = loop_open(d, O_RDONLY);
        char sysname[LOOP_NODE_MAX];

        snprintf(sysname, sizeof sysname, "loop%u", d->number);
        if (fd >= 0)
                (void) partitions_list(fd, sysname, &v->partitions, &v->n_partitions);
        v->device = *d;
        v->device_read_only = loop_is_read_only(d);
        if (export) {
                v->device_on_work = v->state == VOLUME_STARTED && !v->device_read_only;
                export_list_add(adopted, export);
        }
        log_debug("Volume %s/%s is attached as /dev/loop%u%s%s.", v->pool->name, v->name, d->number,
                  export ? " through export " : "", export ?: "");
}

/* One record: the device is the volume's again, or goes. */
static void rediscover_one(Manager *m, const char *name, ExportList *adopted) {
        char text[RECORD_MAX], pool_name[65], volume_name[65], export[FUSE_EXPORT_NAME_MAX];
        LoopDevice d = { .diskseq = strtoull(name, NULL, 10) };
        bool has_export = false;
        Volume *v = NULL;
        Pool *p;
        dev_t dev;
        ino_t ino;
        int r;

        if (read_small_file(m->devices_fd, name, text, sizeof text) >= 0) {
                has_export = record_get(text, "CISTERN_EXPORT", export, sizeof export);
                if (record_get(text, "CISTERN_POOL", pool_name, sizeof pool_name) &&
                    record_get(text, "CISTERN_VOLUME", volume_name, sizeof volume_name) &&
                    (p = manager_get_pool(m, pool_name)))
                        v = pool_get_volume(p, volume_name);
        }

        r = find_loop_number(d.diskseq, &d.number);
        if (r >= 0)
                r = loop_identify(d.number, &d, &dev, &ino);
        if (r < 0) {
                log_debug("Device of record %s is gone.", name);
                record_remove(m, &d);
                return;
        }
        if (!v)
                detach_stale(m, &d, "the volume it was attached for is gone");
        else if (volume_is_attached(v) || !backs_volume(v, has_export ? export : NULL, dev, ino))
                /* Also a qcow2 volume's device whose qemu-storage-daemon died: it reads nothing. */
                detach_stale(m, &d, "it does not expose its volume's data");
        else
                adopt(v, &d, has_export ? export : NULL, adopted);
}

/* A claim an attach left when the daemon died in the midst of it. A qcow2 volume's device may
 * be configured already on the claim's export: no record names it, so it is no volume's. */
static void rediscover_claim(Manager *m, const char *name, unsigned number, const ExportList *adopted) {
        char export[FUSE_EXPORT_NAME_MAX];
        LoopDevice d;
        dev_t dev;
        ino_t ino;

        if (record_export(m->devices_fd, name, export) > 0 && !export_list_has(adopted, export) &&
            loop_identify(number, &d, &dev, &ino) >= 0 && fuse_export_backs(m, export, dev, ino) > 0)
                detach_stale(m, &d, "an attach that was cut short left it");
        claim_remove(m, number);
}

static bool is_record_name(const char *s) {
        return s[0] >= '1' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s);
}

void device_rediscover(Manager *m) {
        _cleanup_(closedirp) DIR *d = NULL;
        ExportList adopted = {};
        struct dirent *de;
        unsigned number;

        (void) store_remove_staging(m->devices_fd);
        if (opendir_beneath(m->devices_fd, ".", &d) >= 0) {
                /* Records first: a claim's device may have been recorded just before the end. */
                while ((de = readdir(d)))
                        if (is_record_name(de->d_name))
                                rediscover_one(m, de->d_name, &adopted);
                rewinddir(d);
                while ((de = readdir(d)))
                        if (sscanf(de->d_name, "loop%u", &number) == 1)
                                rediscover_claim(m, de->d_name, number, &adopted);
        }
        /* Exports whose device is gone, or was never made, or whose volume is gone. */
        if (!adopted.incomplete)
                fuse_export_sweep(m, (const char (*)[FUSE_EXPORT_NAME_MAX]) adopted.names, adopted.n);
        free(adopted.names);
}
