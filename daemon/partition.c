/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <blkid.h>
#include <dirent.h>
#include <inttypes.h>
#include <linux/blkpg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>

#include "log.h"
#include "partition.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(blkid_probe, blkid_free_probe);

void probe_filesystem(int fd, uint64_t offset, uint64_t size, char *fstype, size_t len) {
        _cleanup_(blkid_free_probep) blkid_probe pr = blkid_new_probe();
        const char *type = NULL;

        fstype[0] = '\0';
        if (!pr || blkid_probe_set_device(pr, fd, (blkid_loff_t) offset, (blkid_loff_t) size) < 0)
                return;
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
        blkid_probe_enable_partitions(pr, 0);
        /* Exactly one known signature, as mount(8) would insist: anything ambiguous is "". */
        if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "TYPE", &type, NULL) == 0)
                snprintf(fstype, len, "%s", type);
}

static int compare_start(const void *a, const void *b) {
        const Partition *x = a, *y = b;

        return x->start < y->start ? -1 : x->start > y->start;
}

/* The rules of partitions_read() on a list sorted by start. */
static int check_partitions(const Partition *p, size_t n, uint64_t size) {
        for (size_t i = 0; i < n; i++) {
                if (p[i].size == 0 || p[i].start % 512 != 0 || p[i].size % 512 != 0 || p[i].start < 512 ||
                    p[i].start > size || p[i].size > size - p[i].start) {
                        log_debug("Partition %u (%" PRIu64 "+%" PRIu64 ") lies outside the disk or off sectors.",
                                  p[i].number, p[i].start, p[i].size);
                        return -EBADMSG;
                }
                if (i > 0 && p[i - 1].start + p[i - 1].size > p[i].start) {
                        log_debug("Partitions %u and %u overlap.", p[i - 1].number, p[i].number);
                        return -EBADMSG;
                }
        }
        return 0;
}

int partitions_read(int fd, uint64_t size, Partition **ret, size_t *ret_n) {
        _cleanup_(blkid_free_probep) blkid_probe pr = blkid_new_probe();
        _cleanup_free_ Partition *p = NULL;
        blkid_partlist list;
        size_t n = 0;
        int count, r;

        if (!pr)
                return -ENOMEM;
        if (blkid_probe_set_device(pr, fd, 0, (blkid_loff_t) size) < 0)
                return -EIO;
        blkid_probe_enable_superblocks(pr, 0);
        blkid_probe_enable_partitions(pr, 1);
        blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS);
        r = blkid_do_safeprobe(pr);
        if (r == -2)
                return -EBADMSG;        /* more than one table: ambiguous */
        list = r == 0 ? blkid_probe_get_partitions(pr) : NULL;
        count = list ? blkid_partlist_numof_partitions(list) : 0;
        if (count < 0)
                return -EBADMSG;
        if (count > PARTITIONS_MAX) {
                log_debug("The table lists %d partitions, more than %d.", count, PARTITIONS_MAX);
                return -EBADMSG;
        }
        p = calloc(count > 0 ? (size_t) count : 1, sizeof *p);
        if (!p)
                return -ENOMEM;
        for (int i = 0; i < count; i++) {
                blkid_partition par = blkid_partlist_get_partition(list, i);
                blkid_loff_t start = blkid_partition_get_start(par), len = blkid_partition_get_size(par);
                int number = blkid_partition_get_partno(par);

                if (blkid_partition_is_extended(par))
                        continue;
                if (start < 0 || len <= 0 || number <= 0)
                        return -EBADMSG;
                /* libblkid counts in 512-byte sectors whatever the table's sector size. */
                p[n++] = (Partition) { .number = (unsigned) number, .start = (uint64_t) start * 512, .size = (uint64_t) len * 512 };
        }
        qsort(p, n, sizeof *p, compare_start);
        r = check_partitions(p, n, size);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                probe_filesystem(fd, p[i].start, p[i].size, p[i].fstype, sizeof p[i].fstype);
        *ret = TAKE_PTR(p);
        *ret_n = n;
        return 0;
}

static int blkpg(int fd, int op, unsigned number, uint64_t start, uint64_t size) {
        struct blkpg_partition part = { .start = (long long) start, .length = (long long) size, .pno = (int) number };
        struct blkpg_ioctl_arg arg = { .op = op, .datalen = sizeof part, .data = &part };

        return ioctl(fd, BLKPG, &arg) < 0 ? -errno : 0;
}

/* The device number of partition number of the disk sysname, from sysfs. */
static int partition_devnum(const char *sysname, unsigned number, dev_t *ret) {
        char path[128], buf[32];
        unsigned maj, min;
        FILE *f;
        bool ok;

        snprintf(path, sizeof path, "/sys/block/%s/%sp%u/dev", sysname, sysname, number);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        ok = fgets(buf, sizeof buf, f) && sscanf(buf, "%u:%u", &maj, &min) == 2;
        fclose(f);
        if (!ok)
                return -EIO;
        *ret = makedev(maj, min);
        return 0;
}

int partitions_add(int fd, const char *sysname, Partition *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                int r = blkpg(fd, BLKPG_ADD_PARTITION, p[i].number, p[i].start, p[i].size);

                if (r >= 0)
                        r = partition_devnum(sysname, p[i].number, &p[i].devnum);
                if (r < 0) {
                        i++;
                        while (i-- > 0)
                                (void) blkpg(fd, BLKPG_DEL_PARTITION, p[i].number, 0, 0);
                        return r;
                }
        }
        return 0;
}

/* A number from the sysfs file path, or 0. */
static uint64_t read_sysfs_u64(const char *path) {
        char buf[32];
        FILE *f = fopen(path, "re");
        uint64_t v = 0;

        if (f) {
                if (fgets(buf, sizeof buf, f))
                        v = strtoull(buf, NULL, 10);
                fclose(f);
        }
        return v;
}

int partitions_list(int fd, const char *sysname, Partition **ret, size_t *ret_n) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ Partition *p = NULL;
        struct dirent *de;
        size_t len = strlen(sysname), n = 0;
        char path[300];

        snprintf(path, sizeof path, "/sys/block/%s", sysname);
        d = opendir(path);
        if (!d)
                return -errno;
        p = calloc(PARTITIONS_MAX, sizeof *p);
        if (!p)
                return -ENOMEM;
        while ((de = readdir(d)) && n < PARTITIONS_MAX) {
                unsigned number;

                /* loopNpK */
                if (strncmp(de->d_name, sysname, len) != 0 || de->d_name[len] != 'p' ||
                    sscanf(de->d_name + len + 1, "%u", &number) != 1)
                        continue;
                p[n].number = number;
                (void) partition_devnum(sysname, number, &p[n].devnum);
                snprintf(path, sizeof path, "/sys/block/%s/%s/start", sysname, de->d_name);
                p[n].start = read_sysfs_u64(path) * 512;
                snprintf(path, sizeof path, "/sys/block/%s/%s/size", sysname, de->d_name);
                p[n].size = read_sysfs_u64(path) * 512;
                probe_filesystem(fd, p[n].start, p[n].size, p[n].fstype, sizeof p[n].fstype);
                n++;
        }
        qsort(p, n, sizeof *p, compare_start);
        *ret = TAKE_PTR(p);
        *ret_n = n;
        return 0;
}

int partitions_remove_all(int fd, const char *sysname) {
        _cleanup_free_ Partition *p = NULL;
        size_t n = 0;
        int r, ret = 0;

        r = partitions_list(fd, sysname, &p, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = blkpg(fd, BLKPG_DEL_PARTITION, p[i].number, 0, 0);
                if (r < 0 && r != -ENXIO && ret == 0)
                        ret = r;
        }
        return ret;
}
