/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "qcow2.h"
#include "util.h"

/* The format is qemu's docs/interop/qcow2.txt; every field is big-endian. The limits below are
 * qemu's own (block/qcow2.h): an image past them would not open in qemu either, so refusing it
 * costs no user anything, while accepting it would let a few header bytes make cistern or qemu-img
 * allocate, seek or loop without bound. */
#define QCOW2_MAGIC             UINT32_C(0x514649fb)    /* "QFI\xfb" */
#define HEADER_V2_LENGTH        72
#define HEADER_V3_LENGTH        104                     /* the least a v3 header_length may say */
#define MIN_CLUSTER_BITS        9                       /* 512 bytes */
#define MAX_CLUSTER_BITS        21                      /* 2 MiB: the most qcow2_inspect() reads */
#define MAX_L1_BYTES            (UINT64_C(32) << 20)
#define MAX_REFTABLE_BYTES      (UINT64_C(8) << 20)
#define MAX_SNAPSHOTS           65536
#define SNAPSHOT_HEADER_BYTES   40                      /* the fixed part of a snapshot table entry */

/* L1 entries: bits 9-55 the L2 table's offset, bit 63 "copied"; the rest reserved, and zero in
 * anything qemu writes. L2 entries (or the first half of extended ones): bit 62 "compressed". */
#define L1_OFFSET_MASK          UINT64_C(0x00fffffffffffe00)
#define L1_COPIED               (UINT64_C(1) << 63)
#define L1_RESERVED             (~(L1_OFFSET_MASK | L1_COPIED))
#define L2_COMPRESSED           (UINT64_C(1) << 62)
#define L1_CHUNK_BYTES          4096                    /* how much of the L1 table one read takes */

#define INCOMPAT_DIRTY          (UINT64_C(1) << 0)
#define INCOMPAT_CORRUPT        (UINT64_C(1) << 1)
#define INCOMPAT_DATA_FILE      (UINT64_C(1) << 2)
#define INCOMPAT_COMPRESSION    (UINT64_C(1) << 3)
#define INCOMPAT_EXTENDED_L2    (UINT64_C(1) << 4)
#define INCOMPAT_KNOWN          (UINT64_C(0x1f))
#define COMPAT_LAZY_REFCOUNTS   (UINT64_C(1) << 0)

#define EXT_END                 UINT32_C(0x00000000)
#define EXT_BACKING_FORMAT      UINT32_C(0xe2792aca)
#define EXT_FEATURE_TABLE       UINT32_C(0x6803f857)
#define EXT_BITMAPS             UINT32_C(0x23852875)
#define EXT_ENCRYPTION          UINT32_C(0x0537be77)
#define EXT_DATA_FILE           UINT32_C(0x44415441)

typedef struct Header {
        uint32_t version;
        uint64_t backing_file_offset;
        uint32_t backing_file_size;
        uint32_t cluster_bits;
        uint64_t size;
        uint32_t crypt_method;
        uint32_t l1_size;
        uint64_t l1_table_offset;
        uint64_t refcount_table_offset;
        uint32_t refcount_table_clusters;
        uint32_t nb_snapshots;
        uint64_t snapshots_offset;
        /* Version 3; a v2 header gets the values v2 implies. */
        uint64_t incompatible_features;
        uint64_t compatible_features;
        uint32_t refcount_order;
        uint32_t header_length;
        uint8_t compression_type;
} Header;

/* The image under inspection: the first len bytes of a file of file_size bytes. */
typedef struct Image {
        const uint8_t *buf;
        size_t len;
        uint64_t file_size;
        uint64_t cluster_size;
        Header h;
        Qcow2Problem *problem;
} Image;

static uint32_t be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) {
        return (uint64_t) be32(p) << 32 | be32(p + 4);
}

static int refuse(Image *img, Qcow2Reason reason, const char *format, ...) _printf_(3, 4);
static int refuse(Image *img, Qcow2Reason reason, const char *format, ...) {
        if (img->problem) {
                va_list ap;

                img->problem->reason = reason;
                va_start(ap, format);
                vsnprintf(img->problem->message, sizeof img->problem->message, format, ap);
                va_end(ap);
        }
        return reason == QCOW2_NOT_QCOW2 ? -ENOMEDIUM : -EBADMSG;
}

/* Everything up to and including header_length, with the defaults v2 implies. */
static int parse_header(Image *img) {
        const uint8_t *b = img->buf;
        Header *h = &img->h;

        /* A file too short for the magic is not qcow2 (an empty volume is raw), one too short for
         * the rest of the header is a broken qcow2. */
        if (img->len < 4 || be32(b) != QCOW2_MAGIC)
                return refuse(img, QCOW2_NOT_QCOW2, "it is not a qcow2 image");
        if (img->len < HEADER_V2_LENGTH)
                return refuse(img, QCOW2_TRUNCATED, "the file ends inside the qcow2 header");

        /* Version 1 is another format with other rules; versions above 3 do not exist yet, and
         * would carry rules cistern cannot know. */
        h->version = be32(b + 4);
        if (h->version != 2 && h->version != 3)
                return refuse(img, QCOW2_BAD_VERSION, "qcow2 version %" PRIu32 " is not 2 or 3", h->version);

        h->backing_file_offset = be64(b + 8);
        h->backing_file_size = be32(b + 16);
        h->cluster_bits = be32(b + 20);
        h->size = be64(b + 24);
        h->crypt_method = be32(b + 32);
        h->l1_size = be32(b + 36);
        h->l1_table_offset = be64(b + 40);
        h->refcount_table_offset = be64(b + 48);
        h->refcount_table_clusters = be32(b + 56);
        h->nb_snapshots = be32(b + 60);
        h->snapshots_offset = be64(b + 64);
        /* 512 bytes to 2 MiB, as qemu allows: the cluster size bounds every read that follows. */
        if (h->cluster_bits < MIN_CLUSTER_BITS || h->cluster_bits > MAX_CLUSTER_BITS)
                return refuse(img, QCOW2_BAD_CLUSTER_BITS, "its cluster size 2^%" PRIu32 " is outside 512 bytes to 2 MiB",
                              h->cluster_bits);
        img->cluster_size = UINT64_C(1) << h->cluster_bits;
        if (h->version == 2) {
                h->refcount_order = 4;
                h->header_length = HEADER_V2_LENGTH;
                return 0;
        }

        if (img->len < HEADER_V3_LENGTH)
                return refuse(img, QCOW2_TRUNCATED, "the file ends inside the qcow2 header");
        h->incompatible_features = be64(b + 72);
        h->compatible_features = be64(b + 80);
        h->refcount_order = be32(b + 96);
        h->header_length = be32(b + 100);
        /* Header extensions start at header_length, which must stay inside the first cluster (as
         * qemu insists) and, per the spec, be a multiple of 8. */
        if (h->header_length < HEADER_V3_LENGTH || h->header_length % 8 != 0 || h->header_length > img->cluster_size)
                return refuse(img, QCOW2_BAD_HEADER_LENGTH, "the header length %" PRIu32 " is not a multiple of 8 "
                              "between 104 and the cluster size", h->header_length);
        if (h->header_length > img->len)
                return refuse(img, QCOW2_TRUNCATED, "the file ends inside the qcow2 header");
        /* The compression type byte exists only in headers longer than 104 bytes; zlib otherwise. */
        h->compression_type = h->header_length > HEADER_V3_LENGTH ? b[HEADER_V3_LENGTH] : 0;
        return 0;
}

/* The rules that keep qemu-img inside the one file cistern hands it, and the features it must
 * understand to read the image right. */
static int check_features(Image *img) {
        const Header *h = &img->h;
        uint64_t unknown = h->incompatible_features & ~INCOMPAT_KNOWN;
        bool compression_bit = h->incompatible_features & INCOMPAT_COMPRESSION;

        /* The heart of bug 1221190 and CVE-2024-32498: a backing file or an external data file is
         * a host path of the image's choosing, which qemu-img would open and read into the guest's
         * disk (or write into). Neither is ever accepted, whatever its name says. */
        if (h->backing_file_offset != 0 || h->backing_file_size != 0)
                return refuse(img, QCOW2_BACKING_FILE, "it names a backing file");
        if (h->incompatible_features & INCOMPAT_DATA_FILE)
                return refuse(img, QCOW2_EXTERNAL_DATA_FILE, "it keeps its data in an external data file");
        /* Encrypted images need a secret cistern does not hold, and AES (method 1) is broken. */
        if (h->crypt_method != 0)
                return refuse(img, QCOW2_ENCRYPTED, "it is encrypted (method %" PRIu32 ")", h->crypt_method);
        /* A bit cistern does not know changes how the image must be read: refuse rather than
         * guess, as the spec asks of every reader. */
        if (unknown != 0)
                return refuse(img, QCOW2_UNKNOWN_FEATURE, "it uses unknown incompatible features 0x%" PRIx64, unknown);
        /* qemu found inconsistent metadata and stopped writing: its tables are not to be trusted. */
        if (h->incompatible_features & INCOMPAT_CORRUPT)
                return refuse(img, QCOW2_CORRUPT, "qemu marked it corrupt");
        /* zstd is fine, as long as the type field and its feature bit agree, as qemu checks. */
        if (h->compression_type > 1 || compression_bit != (h->compression_type == 1))
                return refuse(img, QCOW2_BAD_COMPRESSION, "its compression type %u does not match its feature bits",
                              h->compression_type);
        /* Extended L2 entries (subclusters) are accepted: qemu-img reads them, and the L1 rule
         * below accounts for their 16-byte entries. qemu allows them only from 16 KiB clusters. */
        if ((h->incompatible_features & INCOMPAT_EXTENDED_L2) && h->cluster_bits < 14)
                return refuse(img, QCOW2_BAD_CLUSTER_BITS, "it uses extended L2 entries with clusters under 16 KiB");
        /* Refcounts of 1…64 bits; v2 always has 16. */
        if (h->refcount_order > 6)
                return refuse(img, QCOW2_BAD_REFCOUNT_ORDER, "its refcount order %" PRIu32 " is above 6", h->refcount_order);
        return 0;
}

/* The guest-visible size, in whole sectors and under the caller's limit. */
static int check_size(Image *img, uint64_t max_virtual_size) {
        const Header *h = &img->h;

        if (h->size == 0 || h->size % 512 != 0)
                return refuse(img, QCOW2_BAD_VIRTUAL_SIZE, "its virtual size %" PRIu64 " is not a positive multiple of 512",
                              h->size);
        if (h->size > max_virtual_size)
                return refuse(img, QCOW2_TOO_LARGE, "its virtual size %" PRIu64 " is above the limit of %" PRIu64,
                              h->size, max_virtual_size);
        return 0;
}

/* A table of bytes at offset: it starts on a cluster boundary past the header's cluster and lies
 * entirely inside the file. Only bounded sizes reach here, so nothing overflows. */
static bool fits(uint64_t offset, uint64_t bytes, uint64_t cluster_size, uint64_t file_size) {
        return offset % cluster_size == 0 && offset >= cluster_size &&
                offset <= file_size && bytes <= file_size - offset;
}

static bool table_fits(const Image *img, uint64_t offset, uint64_t bytes) {
        return fits(offset, bytes, img->cluster_size, img->file_size);
}

static int check_tables(Image *img) {
        const Header *h = &img->h;
        uint64_t l2_entries, per_l1, needed, l1_bytes, rt_bytes;

        /* The L1 table must map the whole virtual size (one entry per L2 table of cluster_size /
         * entry size entries, each mapping a cluster) and stay under qemu's 32 MiB. */
        l2_entries = img->cluster_size / (h->incompatible_features & INCOMPAT_EXTENDED_L2 ? 16 : 8);
        per_l1 = img->cluster_size * l2_entries;
        needed = h->size / per_l1 + (h->size % per_l1 != 0);
        l1_bytes = (uint64_t) h->l1_size * 8;
        if (h->l1_size < needed || l1_bytes > MAX_L1_BYTES)
                return refuse(img, QCOW2_BAD_L1_TABLE, "its L1 table has %" PRIu32 " entries, not between the %" PRIu64
                              " its size needs and %" PRIu64, h->l1_size, needed, MAX_L1_BYTES / 8);
        if (!table_fits(img, h->l1_table_offset, l1_bytes))
                return refuse(img, QCOW2_BAD_L1_TABLE, "its L1 table at %" PRIu64 " is misaligned or outside the file",
                              h->l1_table_offset);

        rt_bytes = (uint64_t) h->refcount_table_clusters * img->cluster_size;
        if (h->refcount_table_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES ||
            !table_fits(img, h->refcount_table_offset, rt_bytes))
                return refuse(img, QCOW2_BAD_REFCOUNT_TABLE, "its refcount table (%" PRIu32 " clusters at %" PRIu64 ") is "
                              "empty, too large, misaligned or outside the file",
                              h->refcount_table_clusters, h->refcount_table_offset);
        /* Two tables in the same bytes are a crafted image: qemu would write one over the other. */
        if (h->l1_table_offset < h->refcount_table_offset + rt_bytes &&
            h->refcount_table_offset < h->l1_table_offset + l1_bytes)
                return refuse(img, QCOW2_BAD_L1_TABLE, "its L1 table overlaps its refcount table");

        /* Internal snapshots are allowed (Info counts them); their table must be bounded and in
         * the file. With none, qemu ignores the offset, and so does cistern. */
        if (h->nb_snapshots > MAX_SNAPSHOTS ||
            (h->nb_snapshots > 0 &&
             !table_fits(img, h->snapshots_offset, (uint64_t) h->nb_snapshots * SNAPSHOT_HEADER_BYTES)))
                return refuse(img, QCOW2_BAD_SNAPSHOT_TABLE, "its table of %" PRIu32 " snapshots at %" PRIu64 " is too "
                              "large, misaligned or outside the file", h->nb_snapshots, h->snapshots_offset);
        return 0;
}

/* Header extensions: (type, length, data padded to 8 bytes) records from the end of the header to
 * an end marker that must lie in the first cluster. The ones that name other files or keys are
 * refused; the feature name table, bitmaps and unknown ones are skipped, within bounds. */
static int check_extensions(Image *img) {
        uint64_t end = img->cluster_size, offset = img->h.header_length;

        /* The whole first cluster, or the whole file when it is shorter (a file that then fails
         * the table rules above). */
        if (img->len < MIN(img->cluster_size, img->file_size))
                return refuse(img, QCOW2_TRUNCATED, "the file ends inside its first cluster");
        end = MIN(end, (uint64_t) img->len);

        for (;;) {
                uint32_t type, length;
                uint64_t padded;

                if (end - offset < 8)
                        break;
                type = be32(img->buf + offset);
                length = be32(img->buf + offset + 4);
                offset += 8;
                if (type == EXT_END)
                        return 0;
                padded = ((uint64_t) length + 7) & ~UINT64_C(7);
                if (padded > end - offset)
                        break;
                switch (type) {
                case EXT_BACKING_FORMAT:
                        return refuse(img, QCOW2_BACKING_FILE, "it names a backing file format");
                case EXT_DATA_FILE:
                        return refuse(img, QCOW2_EXTERNAL_DATA_FILE, "it names an external data file");
                case EXT_ENCRYPTION:
                        return refuse(img, QCOW2_ENCRYPTED, "it carries an encryption header");
                case EXT_FEATURE_TABLE:
                case EXT_BITMAPS:
                default:
                        break;
                }
                offset += padded;
        }
        return refuse(img, QCOW2_BAD_EXTENSION, "its header extensions run past the first cluster");
}

int qcow2_inspect_buffer(const void *buf, size_t len, uint64_t file_size, const Qcow2Limits *limits,
                         Qcow2Info *ret, Qcow2Problem *ret_problem) {
        uint64_t max_size = QCOW2_VIRTUAL_SIZE_MAX;
        Image img = { .buf = buf, .len = len, .file_size = file_size, .problem = ret_problem };
        const Header *h = &img.h;
        int r;

        if ((!buf && len > 0) || len > file_size || !ret)
                return -EINVAL;
        if (limits && limits->max_virtual_size > 0)
                max_size = MIN(limits->max_virtual_size, max_size);

        r = parse_header(&img);
        if (r < 0)
                return r;
        r = check_features(&img);
        if (r < 0)
                return r;
        r = check_size(&img, max_size);
        if (r < 0)
                return r;
        r = check_tables(&img);
        if (r < 0)
                return r;
        r = check_extensions(&img);
        if (r < 0)
                return r;

        *ret = (Qcow2Info) {
                .version = h->version,
                .compat = h->version == 2 ? "0.10" : "1.1",
                .virtual_size = h->size,
                .cluster_bits = h->cluster_bits,
                .cluster_size = img.cluster_size,
                .refcount_bits = UINT32_C(1) << h->refcount_order,
                .compression_type = h->compression_type == 1 ? "zstd" : "zlib",
                .l1_entries = h->l1_size,
                .l1_table_offset = h->l1_table_offset,
                .snapshots = h->nb_snapshots,
                .dirty = h->incompatible_features & INCOMPAT_DIRTY,
                .extended_l2 = h->incompatible_features & INCOMPAT_EXTENDED_L2,
                .lazy_refcounts = h->compatible_features & COMPAT_LAZY_REFCOUNTS,
        };
        if (ret_problem)
                *ret_problem = (Qcow2Problem) { .reason = QCOW2_OK };
        return 0;
}

int qcow2_inspect(int fd, uint64_t file_size, const Qcow2Limits *limits, Qcow2Info *ret,
                  Qcow2Problem *ret_problem) {
        _cleanup_free_ uint8_t *buf = NULL;
        uint8_t header[HEADER_V2_LENGTH];
        size_t want;
        ssize_t n;

        if (fd < 0 || !ret)
                return -EINVAL;

        /* First the fixed header, for the cluster size; then the whole first cluster, where the
         * header extensions live. cluster_bits is checked before it sizes a read; anything else
         * gets the header only, which the core refuses with the right reason. */
        n = pread_full(fd, header, MIN(file_size, sizeof header), 0);
        if (n < 0)
                return (int) n;
        want = (size_t) n;
        if (n >= 24 && be32(header) == QCOW2_MAGIC) {
                uint32_t bits = be32(header + 20);

                if (bits >= MIN_CLUSTER_BITS && bits <= MAX_CLUSTER_BITS)
                        want = (size_t) MIN(file_size, UINT64_C(1) << bits);
        }
        buf = malloc(want > 0 ? want : 1);
        if (!buf)
                return -ENOMEM;
        n = pread_full(fd, buf, want, 0);
        if (n < 0)
                return (int) n;
        /* A file that shrank since its size was taken reads as truncated. */
        return qcow2_inspect_buffer(buf, (size_t) n, file_size, limits, ret, ret_problem);
}

/* Counts the compressed entries of the L2 table at offset, read into buf (one cluster). */
static int count_l2_table(int fd, uint64_t offset, const Qcow2Info *info, uint8_t *buf, uint64_t *count) {
        size_t entry_size = info->extended_l2 ? 16 : 8;
        ssize_t n;

        n = pread_full(fd, buf, info->cluster_size, offset);
        if (n < 0)
                return (int) n;
        if ((uint64_t) n != info->cluster_size)
                return -EBADMSG;                /* the file shrank under us */
        for (size_t i = 0; i < info->cluster_size; i += entry_size)
                if (be64(buf + i) & L2_COMPRESSED)
                        (*count)++;
        return 0;
}

int qcow2_count_compressed(int fd, uint64_t file_size, const Qcow2Info *info, uint64_t *ret) {
        _cleanup_free_ uint8_t *l2 = NULL;
        uint8_t l1[L1_CHUNK_BYTES];
        uint64_t l1_bytes, tables = 0, max_tables, count = 0;
        int r;

        if (fd < 0 || !info || !ret)
                return -EINVAL;
        /* Only what qcow2_inspect() accepts of a file this size: every bound below rests on it. */
        l1_bytes = (uint64_t) info->l1_entries * 8;
        if (info->cluster_bits < MIN_CLUSTER_BITS || info->cluster_bits > MAX_CLUSTER_BITS ||
            info->cluster_size != UINT64_C(1) << info->cluster_bits ||
            l1_bytes == 0 || l1_bytes > MAX_L1_BYTES ||
            !fits(info->l1_table_offset, l1_bytes, info->cluster_size, file_size))
                return -EINVAL;

        /* An image qemu wrote has each L2 table in a cluster of its own, so a file has no more
         * tables than clusters. Past that, entries share a table, and each would cost another
         * cluster read: refusing keeps a small crafted file from costing terabytes of reads. */
        max_tables = file_size / info->cluster_size;
        l2 = malloc(info->cluster_size);
        if (!l2)
                return -ENOMEM;

        for (uint64_t done = 0; done < l1_bytes;) {
                size_t chunk = (size_t) MIN(l1_bytes - done, (uint64_t) sizeof l1);
                ssize_t n = pread_full(fd, l1, chunk, info->l1_table_offset + done);

                if (n < 0)
                        return (int) n;
                if ((size_t) n != chunk)
                        return -EBADMSG;
                for (size_t i = 0; i < chunk; i += 8) {
                        uint64_t entry = be64(l1 + i), offset = entry & L1_OFFSET_MASK;

                        if (entry & L1_RESERVED)
                                return -EBADMSG;
                        if (offset == 0)
                                continue;       /* unallocated: reads as zeros */
                        if (!fits(offset, info->cluster_size, info->cluster_size, file_size) ||
                            ++tables > max_tables)
                                return -EBADMSG;
                        r = count_l2_table(fd, offset, info, l2, &count);
                        if (r < 0)
                                return r;
                }
                done += chunk;
        }

        *ret = count;
        return 0;
}

int qcow2_read_virtual_size(int fd, uint64_t *ret) {
        uint8_t b[32];
        ssize_t n;
        uint64_t size;

        n = pread_full(fd, b, sizeof b, 0);
        if (n < 0)
                return (int) n;
        if ((size_t) n < sizeof b || be32(b) != QCOW2_MAGIC)
                return -ENOMEDIUM;
        size = be64(b + 24);
        if (size == 0 || size > QCOW2_VIRTUAL_SIZE_MAX)
                return -EBADMSG;
        *ret = size;
        return 0;
}
