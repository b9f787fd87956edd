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

/* The kernel numbers a disk's partitions below DISK_MAX_PARTS (256): BLKPG refuses the others,
 * which a GPT of more than 255 slots may use. */
#define PARTITION_NUMBER_MAX 255U

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
                if (p[i].number > PARTITION_NUMBER_MAX) {
                        log_debug("Partition %u is numbered beyond %u.", p[i].number, PARTITION_NUMBER_MAX);
                        return -EBADMSG;
                }
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

/* libblkid reads one table and quietly skips what it finds wrong in it: it drops a GPT entry
 * outside the usable area, ignores a GPT behind an MBR that is not protective, a hybrid MBR's
 * other entries, a GPT header it does not like. The guest, its firmware or another tool may read
 * such a disk differently, so what libblkid hid makes the table unsafe: the disk must hold the
 * table libblkid chose and no other, all of which libblkid reported. That takes a second look
 * below libblkid, at the MBR and at the GPT headers and entries, all bounded by the disk's size
 * and by the limits here, never by sizes the image states. */

#define SECTOR_SIZE_MAX 4096U
#define MBR_TYPE_GPT 0xEE
#define GPT_HEADER_SIZE_MIN 92U
#define GPT_ENTRY_SIZE 128U             /* the only size libblkid and the kernel read */
#define GPT_ENTRIES_MAX 1024U           /* slots of an entry array read at most; tables have 128 */

static uint32_t le32(const uint8_t *b) {
        return (uint32_t) b[0] | (uint32_t) b[1] << 8 | (uint32_t) b[2] << 16 | (uint32_t) b[3] << 24;
}

static uint64_t le64(const uint8_t *b) {
        return (uint64_t) le32(b + 4) << 32 | le32(b);
}

static bool all_zero(const uint8_t *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (b[i] != 0)
                        return false;
        return true;
}

/* The CRC-32 of UEFI (zlib's). Bit by bit: it only ever covers a header and a bounded array. */
static uint32_t gpt_crc32(const uint8_t *b, size_t n) {
        uint32_t crc = UINT32_MAX;

        for (size_t i = 0; i < n; i++) {
                crc ^= b[i];
                for (unsigned k = 0; k < 8; k++)
                        crc = crc >> 1 ^ (UINT32_C(0xEDB88320) & -(crc & 1));
        }
        return ~crc;
}

/* Exactly n bytes at offset of fd: the disk ending first is -EIO. */
static int pread_exact(int fd, void *buf, size_t n, uint64_t offset) {
        ssize_t k = pread_full(fd, buf, n, offset);

        return k < 0 ? (int) k : (size_t) k < n ? -EIO : 0;
}

typedef enum MbrKind {
        MBR_NONE,               /* no boot signature, or no entry in use */
        MBR_PROTECTIVE,         /* exactly one entry in use, of type 0xEE: a GPT's */
        MBR_PARTITIONS,         /* anything else, hybrid MBRs included */
} MbrKind;

/* What the first 512 bytes of fd hold. An entry with a type or a size is in use. */
static int mbr_read(int fd, MbrKind *ret) {
        uint8_t mbr[512];
        unsigned used = 0, protective = 0;
        int r;

        r = pread_exact(fd, mbr, sizeof mbr, 0);
        if (r < 0)
                return r;
        if (mbr[510] != 0x55 || mbr[511] != 0xAA) {
                *ret = MBR_NONE;
                return 0;
        }
        for (unsigned i = 0; i < 4; i++) {
                const uint8_t *e = mbr + 446 + 16 * i;

                if (e[4] == 0 && le32(e + 12) == 0)
                        continue;
                used++;
                protective += e[4] == MBR_TYPE_GPT;
        }
        *ret = used == 0 ? MBR_NONE : used == 1 && protective == 1 ? MBR_PROTECTIVE : MBR_PARTITIONS;
        return 0;
}

typedef struct GptHeader {
        uint64_t lba;           /* where it is, and says it is */
        uint64_t first_usable, last_usable, entries_lba;
        uint32_t n_entries, entry_size, entries_crc;
} GptHeader;

/* 1 and *ret when sector lba (of ssz bytes) holds a GPT header: the signature, a header size
 * that fits, a matching checksum and its own position, as every GPT reader insists. 0 if not. */
static int gpt_header_read(int fd, unsigned ssz, uint64_t lba, GptHeader *ret) {
        uint8_t h[SECTOR_SIZE_MAX];
        uint32_t size, crc;
        int r;

        r = pread_exact(fd, h, ssz, lba * ssz);
        if (r < 0)
                return r;
        size = le32(h + 12);
        if (memcmp(h, "EFI PART", 8) != 0 || size < GPT_HEADER_SIZE_MIN || size > ssz)
                return 0;
        crc = le32(h + 16);
        memset(h + 16, 0, 4);           /* the checksum covers the header with its own field zeroed */
        if (gpt_crc32(h, size) != crc || le64(h + 24) != lba)
                return 0;
        *ret = (GptHeader) {
                .lba = lba,
                .first_usable = le64(h + 40),
                .last_usable = le64(h + 48),
                .entries_lba = le64(h + 72),
                .n_entries = le32(h + 80),
                .entry_size = le32(h + 84),
                .entries_crc = le32(h + 88),
        };
        return 1;
}

/* The header describes a usable area and an entry array libblkid would read, inside the disk of
 * sectors sectors and within our limit. */
static bool gpt_header_sane(const GptHeader *h, unsigned ssz, uint64_t sectors) {
        uint64_t array_sectors = ((uint64_t) h->n_entries * GPT_ENTRY_SIZE + ssz - 1) / ssz;

        return h->entry_size == GPT_ENTRY_SIZE && h->n_entries > 0 && h->n_entries <= GPT_ENTRIES_MAX &&
               h->first_usable <= h->last_usable && h->last_usable < sectors &&
               !(h->first_usable < h->lba && h->lba < h->last_usable) &&
               h->entries_lba < sectors && array_sectors <= sectors - h->entries_lba;
}

static bool partition_listed(const Partition *p, size_t n, unsigned number, uint64_t start, uint64_t size) {
        for (size_t i = 0; i < n; i++)
                if (p[i].number == number)
                        return p[i].start == start && p[i].size == size;
        return false;
}

/* The GPT of header h is sound, and its entries are exactly the partitions p[n] libblkid found. */
static int gpt_check(int fd, unsigned ssz, uint64_t sectors, const GptHeader *h, const Partition *p, size_t n) {
        _cleanup_free_ uint8_t *array = NULL;
        size_t len, used = 0;
        int r;

        if (!gpt_header_sane(h, ssz, sectors)) {
                log_debug("The GPT header at LBA %" PRIu64 " describes a table outside the disk or too large.",
                          h->lba);
                return -EBADMSG;
        }
        len = (size_t) h->n_entries * GPT_ENTRY_SIZE;
        array = malloc(len);
        if (!array)
                return -ENOMEM;
        r = pread_exact(fd, array, len, h->entries_lba * ssz);
        if (r < 0)
                return r;
        if (gpt_crc32(array, len) != h->entries_crc) {
                log_debug("The GPT entries of the header at LBA %" PRIu64 " do not match its checksum.", h->lba);
                return -EBADMSG;
        }
        for (uint32_t i = 0; i < h->n_entries; i++) {
                const uint8_t *e = array + (size_t) i * GPT_ENTRY_SIZE;
                uint64_t first = le64(e + 32), last = le64(e + 40);

                if (all_zero(e, 16))    /* no type: an unused slot */
                        continue;
                if (first < h->first_usable || last > h->last_usable || first > last) {
                        log_debug("GPT entry %" PRIu32 " (LBA %" PRIu64 "…%" PRIu64 ") lies outside the usable "
                                  "LBA %" PRIu64 "…%" PRIu64 ".", i + 1, first, last, h->first_usable, h->last_usable);
                        return -EBADMSG;
                }
                if (!partition_listed(p, n, i + 1, first * ssz, (last - first + 1) * ssz)) {
                        log_debug("GPT entry %" PRIu32 " of the header at LBA %" PRIu64 " is not what libblkid reported.",
                                  i + 1, h->lba);
                        return -EBADMSG;
                }
                used++;
        }
        if (used != n) {
                log_debug("The GPT at LBA %" PRIu64 " lists %zu partitions, libblkid %zu.", h->lba, used, n);
                return -EBADMSG;
        }
        return 0;
}

/* The disk holds the table of type libblkid read (NULL: a protective MBR alone) and no other,
 * with nothing of it left out: an MBR with entries only for dos, a GPT only behind a purely
 * protective MBR, and each of its headers (primary, backup) sound and listing exactly p[n]. */
static int check_sole_table(int fd, unsigned ssz, uint64_t size, const char *type, const Partition *p, size_t n) {
        bool gpt = streq_ptr(type, "gpt"), dos = streq_ptr(type, "dos");
        unsigned headers = 0;
        uint64_t sectors;
        MbrKind mbr;
        int r;

        if (ssz < 512 || ssz > SECTOR_SIZE_MAX || (ssz & (ssz - 1)) != 0)
                return log_debug_errno(EOPNOTSUPP, "Sectors of %u bytes are not supported.", ssz);
        sectors = size / ssz;
        r = mbr_read(fd, &mbr);
        if (r < 0)
                return r;
        if (gpt ? mbr != MBR_PROTECTIVE : !dos && mbr == MBR_PARTITIONS) {
                log_debug("The MBR does not go with the %s table libblkid read: a hybrid, or a second table.",
                          type ?: "PMBR");
                return -EBADMSG;
        }
        /* The primary header and the backup at the end, when the disk has room for a GPT. */
        for (size_t i = 0; sectors >= 3 && i < 2; i++) {
                uint64_t lba = i == 0 ? 1 : sectors - 1;
                GptHeader h;

                r = gpt_header_read(fd, ssz, lba, &h);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (!gpt) {
                        log_debug("Besides the %s table the disk holds a GPT header at LBA %" PRIu64 ".",
                                  type ?: "protective MBR", lba);
                        return -EBADMSG;
                }
                r = gpt_check(fd, ssz, sectors, &h, p, n);
                if (r < 0)
                        return r;
                headers++;
        }
        if (gpt && headers == 0) {
                log_debug("libblkid read a GPT whose headers do not check out.");
                return -EBADMSG;
        }
        return 0;
}

/* The partitions of list (count of them) into p, the extended container of MBR logical partitions
 * left out. */
static int partitions_from_list(blkid_partlist list, int count, Partition *p, size_t *ret_n) {
        size_t n = 0;

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
        *ret_n = n;
        return 0;
}

int partitions_read(int fd, uint64_t size, Partition **ret, size_t *ret_n) {
        _cleanup_(blkid_free_probep) blkid_probe pr = blkid_new_probe();
        _cleanup_free_ Partition *p = NULL;
        blkid_partlist list = NULL;
        size_t n = 0;
        int count = 0, r;

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
        if (r < 0)
                return -EIO;
        if (r == 0) {
                list = blkid_probe_get_partitions(pr);
                count = list ? blkid_partlist_numof_partitions(list) : 0;
        }
        if (count < 0)
                return -EBADMSG;
        if (count > PARTITIONS_MAX) {
                log_debug("The table lists %d partitions, more than %d.", count, PARTITIONS_MAX);
                return -EBADMSG;
        }
        p = calloc(count > 0 ? (size_t) count : 1, sizeof *p);
        if (!p)
                return -ENOMEM;
        r = partitions_from_list(list, count, p, &n);
        if (r < 0)
                return r;
        qsort(p, n, sizeof *p, compare_start);
        r = check_partitions(p, n, size);
        if (r < 0)
                return r;
        /* Without any table libblkid knows there is nothing to expose, nor anything to compare. */
        if (list) {
                blkid_parttable table = blkid_partlist_get_table(list);

                r = check_sole_table(fd, blkid_probe_get_sectorsize(pr), size,
                                     table ? blkid_parttable_get_type(table) : NULL, p, n);
                if (r < 0)
                        return r;
        }
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
