/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* cistern's own qcow2 header inspector (SPEC §6). It reads the header and the first cluster of an
 * image nobody vouches for, with bounded reads, and says whether qemu-img may be pointed at it:
 * version 2 or 3, no backing file, no external data file, no encryption, no unknown incompatible
 * feature, sizes and tables that fit the limits and the file. qemu-img itself follows whatever an
 * image names (OpenStack bug 1221190, CVE-2024-32498), so nothing reaches it before this says yes.
 * It also answers Volume.Info for qcow2 volumes without running qemu-img, compressed clusters
 * included. */

/* Why an image was refused, for tests and for the daemon to pick an error name. */
typedef enum Qcow2Reason {
        QCOW2_OK = 0,
        QCOW2_NOT_QCOW2,                /* no QFI\xfb magic: not a qcow2 image at all */
        QCOW2_TRUNCATED,                /* the file ends inside the header or its first cluster */
        QCOW2_BAD_VERSION,              /* not version 2 or 3 */
        QCOW2_BAD_HEADER_LENGTH,
        QCOW2_BACKING_FILE,             /* a backing file, or a backing file format extension */
        QCOW2_EXTERNAL_DATA_FILE,       /* the data-file feature bit or the data file extension */
        QCOW2_ENCRYPTED,                /* crypt_method ≠ 0, or an encryption header extension */
        QCOW2_CORRUPT,                  /* qemu marked the image corrupt */
        QCOW2_UNKNOWN_FEATURE,          /* an incompatible feature bit cistern does not know */
        QCOW2_BAD_COMPRESSION,          /* compression type unknown or at odds with its feature bit */
        QCOW2_BAD_CLUSTER_BITS,
        QCOW2_BAD_VIRTUAL_SIZE,         /* zero or not a whole number of 512-byte sectors */
        QCOW2_TOO_LARGE,                /* virtual size above Qcow2Limits.max_virtual_size */
        QCOW2_BAD_L1_TABLE,
        QCOW2_BAD_REFCOUNT_TABLE,
        QCOW2_BAD_REFCOUNT_ORDER,
        QCOW2_BAD_SNAPSHOT_TABLE,
        QCOW2_BAD_EXTENSION,            /* header extensions overrun, or no end marker */
} Qcow2Reason;

typedef struct Qcow2Problem {
        Qcow2Reason reason;
        /* A phrase that completes "The qcow2 image is unsafe: …", e.g. "it names a backing file". */
        char message[192];
} Qcow2Problem;

typedef struct Qcow2Limits {
        uint64_t max_virtual_size;      /* bytes; 0: QCOW2_VIRTUAL_SIZE_MAX */
} Qcow2Limits;

/* The largest virtual size accepted whatever the limits say: 64 PiB, cisternd's default volume
 * limit and qemu's ceiling on cluster offsets; it keeps every size computation far from overflow. */
#define QCOW2_VIRTUAL_SIZE_MAX (UINT64_C(1) << 56)

/* What Volume.Info reports for a qcow2 volume; filled only for a safe image. */
typedef struct Qcow2Info {
        uint32_t version;               /* 2 or 3 */
        const char *compat;             /* "0.10" (v2) or "1.1" (v3), as qemu-img names them */
        uint64_t virtual_size;          /* bytes */
        uint32_t cluster_bits;
        uint64_t cluster_size;          /* bytes */
        uint32_t refcount_bits;         /* 1…64; always 16 for v2 */
        const char *compression_type;   /* "zlib" or "zstd" */
        uint32_t l1_entries;
        uint64_t l1_table_offset;       /* bytes into the file; cluster-aligned, the table inside the file */
        uint32_t snapshots;             /* internal snapshots (accepted, not inspected further) */
        bool dirty;                     /* refcounts need repair (lazy_refcounts); harmless */
        bool corrupt;                   /* always false: corrupt images are refused */
        bool extended_l2;               /* subclusters: 128-bit L2 entries */
        bool lazy_refcounts;
        bool encrypted;                 /* always false: encrypted images are refused */
} Qcow2Info;

/* The core, with no I/O (the fuzzer's entry point): buf holds the first len bytes of a file of
 * file_size bytes (len > file_size is an error). It needs the first min(file_size, cluster size)
 * bytes; a shorter buf reads as a truncated image.
 *
 * Returns 0 and fills ret when the image is a safe qcow2; -ENOMEDIUM when it is not qcow2 at all;
 * -EBADMSG when it is qcow2 but unsafe; -EINVAL on bad arguments. ret_problem (may be NULL) is
 * filled on -ENOMEDIUM and -EBADMSG. limits may be NULL. */
int qcow2_inspect_buffer(const void *buf, size_t len, uint64_t file_size, const Qcow2Limits *limits,
                         Qcow2Info *ret, Qcow2Problem *ret_problem);

/* The same over the image open as fd (file_size bytes, as fstat() says), read with pread() only:
 * the header, then at most one cluster (≤ 2 MiB) from offset 0. A read error is its -errno. */
int qcow2_inspect(int fd, uint64_t file_size, const Qcow2Limits *limits, Qcow2Info *ret,
                  Qcow2Problem *ret_problem);

/* The number of compressed clusters the image's active L1 table maps, as `qemu-img check` counts
 * them ("compressed-clusters"), for Volume.Info. info is what qcow2_inspect() said of the same fd
 * and file_size. It reads with pread() only: the L1 table 4 KiB at a time, and for each allocated
 * L1 entry its L2 table into a buffer of one cluster (≤ 2 MiB), counting the entries with the
 * compressed flag (bit 62; in the first half of a 16-byte extended L2 entry). Its I/O grows with
 * the allocated L2 tables and never exceeds twice file_size: blocking work for a worker thread.
 * Internal snapshots' tables are not walked.
 *
 * Returns 0 and sets *ret; -EBADMSG when an L1 entry has reserved bits set or names an L2 table
 * that is misaligned or not wholly inside the file, when the L1 table names more L2 tables than the
 * file has clusters (a crafted image sharing one table to multiply the reads), or when the file is
 * shorter than file_size (it shrank since); -EINVAL on bad arguments or an info qcow2_inspect()
 * would not give for a file of file_size bytes. A read error is its -errno. *ret is untouched on
 * failure. */
int qcow2_count_compressed(int fd, uint64_t file_size, const Qcow2Info *info, uint64_t *ret);

/* The virtual size an image's header states, read with one small pread(): for Size, which the
 * event loop reads after every change, not a verdict on the image (qcow2_inspect() is, before
 * anything else reads it). -ENOMEDIUM when fd holds no qcow2 header, -EBADMSG when the size is
 * 0 or above QCOW2_VIRTUAL_SIZE_MAX. */
int qcow2_read_virtual_size(int fd, uint64_t *ret);
