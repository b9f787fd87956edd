/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mkdtemp(), memfd_create(). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "qcow2.h"
#include "util.h"

/* The inspector against real images that qemu-img makes at test time (so a qemu-img that starts
 * writing something new shows up here as a false refusal), and against byte-patched copies of
 * them, one hostile field at a time. Every refusal is checked for its reason, through both the
 * fd entry point (on a memfd) and the buffer core, which must agree. */

#define QEMU_IMG "/usr/bin/qemu-img"

typedef struct Bytes {
        uint8_t *data;
        size_t size;
} Bytes;

enum {
        IMG_V3,                 /* 1 GiB, 64 KiB clusters: header_length 112, feature table */
        IMG_V2,                 /* compat=0.10 */
        IMG_ZSTD,
        IMG_EXTENDED_L2,        /* 16 KiB clusters with subclusters */
        IMG_SMALL_CLUSTERS,     /* 512-byte clusters: no room for the feature table */
        IMG_BIG_CLUSTERS,       /* 2 MiB clusters, 100 GiB */
        IMG_REFCOUNT64,         /* refcount_bits=64, lazy_refcounts */
        IMG_SNAPSHOT,           /* one internal snapshot */
        IMG_BITMAP,             /* a persistent dirty bitmap: the bitmaps extension */
        IMG_BACKING,            /* backing file /etc/shadow, format raw */
        IMG_DATA_FILE,          /* external data file */
        IMG_AES,                /* legacy AES encryption */
        /* `qemu-img convert` of guest.raw (see write_raw()), with and without -c. */
        IMG_PLAIN,              /* 512-byte clusters, no compression: 128 L2 tables */
        IMG_COMPRESSED,         /* 64 KiB clusters: one L2 table */
        IMG_COMPRESSED_SMALL,   /* 512-byte clusters: 128 L2 tables of 64 entries */
        IMG_COMPRESSED_EL2,     /* 16 KiB clusters with subclusters: 16-byte L2 entries */
        IMG_COMPRESSED_V2,
        IMG_COMPRESSED_ZSTD,
        _IMG_MAX,
};

static char tmpdir[] = "/tmp/cistern-test-qcow2.XXXXXX";
static Bytes images[_IMG_MAX];
/* What `qemu-img check` says of each compressed image: the count to agree with. */
static uint64_t check_counts[_IMG_MAX];

/* argv in tmpdir, with an empty environment, its stdout in the file out, its stderr in /dev/null. */
static int run_to(char *const argv[], const char *out) {
        char *const envp[] = { NULL };
        int status;
        pid_t pid = fork();

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC), fd;

                if (null < 0 || chdir(tmpdir) < 0)
                        _exit(127);
                fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(null, STDERR_FILENO) < 0)
                        _exit(127);
                execve(argv[0], argv, envp);
                _exit(127);
        }
        if (waitpid(pid, &status, 0) < 0)
                return -errno;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int run(char *const argv[]) {
        return run_to(argv, "/dev/null");
}

static int load(const char *name, Bytes *ret) {
        char path[128];
        struct stat st;
        ssize_t n = -1;
        int fd;

        snprintf(path, sizeof path, "%s/%s", tmpdir, name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) == 0) {
                ret->size = (size_t) st.st_size;
                ret->data = malloc(ret->size + 1);
                if (ret->data)
                        n = read(fd, ret->data, ret->size);
        }
        close(fd);
        return n == (ssize_t) ret->size ? 0 : -EIO;
}

/* qemu-img create -f qcow2 [-o options] name size, then the extra command if any, then load. */
static int make(int id, const char *name, const char *options, const char *size, char *const *extra) {
        char *argv[10] = { QEMU_IMG, "create", "-q", "-f", "qcow2" };
        size_t n = 5;

        if (options) {
                argv[n++] = "-o";
                argv[n++] = (char *) options;
        }
        argv[n++] = (char *) name;
        argv[n++] = (char *) size;
        if (run(argv) < 0 || (extra && run(extra) < 0))
                return -EIO;
        return load(name, &images[id]);
}

/* 8 MiB of guest data that compresses in parts: text at 0 (1 MiB) and at 7 MiB (64 KiB), which
 * qemu-img stores compressed, and 2 MiB of noise at 1 MiB, which it stores as is because it does
 * not shrink; the rest zeros, left unallocated. So 17 compressed clusters of 64 KiB, 68 of 16 KiB
 * and 2176 of 512 bytes; qemu-img check is asked too, and must agree. */
static int write_raw(const char *name) {
        static const char text[] = "All work and no play makes Jack a dull boy. ";
        _cleanup_free_ uint8_t *data = malloc(8 << 20);
        uint64_t x = UINT64_C(0x9e3779b97f4a7c15);
        char path[128];
        ssize_t n;
        int fd;

        if (!data)
                return -ENOMEM;
        memset(data, 0, 8 << 20);
        for (size_t i = 0; i < (1 << 20); i++)
                data[i] = (uint8_t) text[i % (sizeof text - 1)];
        for (size_t i = 1 << 20; i < (3 << 20); i += 8) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                memcpy(data + i, &x, 8);
        }
        memcpy(data + (7 << 20), data, 64 << 10);

        snprintf(path, sizeof path, "%s/%s", tmpdir, name);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        n = write(fd, data, 8 << 20);
        close(fd);
        return n == (8 << 20) ? 0 : -EIO;
}

/* qemu-img convert [-c] -O qcow2 -o options guest.raw name, then `qemu-img check` for its count. */
static int convert(int id, bool compress, const char *options, const char *name) {
        static const char key[] = "\"compressed-clusters\": ";
        char *argv[12] = { QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2", "-o", (char *) options };
        size_t n = 8;
        Bytes check = {};
        char out[128];
        const char *p;
        int r;

        if (compress)
                argv[n++] = "-c";
        argv[n++] = "guest.raw";
        argv[n++] = (char *) name;
        if (run(argv) < 0 || load(name, &images[id]) < 0)
                return -EIO;

        snprintf(out, sizeof out, "%s.check", name);
        if (run_to((char *[]) { QEMU_IMG, "check", "-f", "qcow2", "--output=json", (char *) name, NULL }, out) < 0)
                return -EIO;
        r = load(out, &check);
        if (r < 0)
                return r;
        check.data[check.size] = '\0';
        p = strstr((char *) check.data, key);
        /* qemu-img leaves the field out when there are none. */
        check_counts[id] = p ? strtoull(p + strlen(key), NULL, 10) : 0;
        free(check.data);
        return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int group_teardown(void **state) {
        for (size_t i = 0; i < _IMG_MAX; i++)
                images[i].data = mfree(images[i].data);
        return nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int group_setup(void **state) {
        if (!mkdtemp(tmpdir))
                return -1;
        if (make(IMG_V3, "v3.qcow2", NULL, "1G", NULL) < 0 ||
            make(IMG_V2, "v2.qcow2", "compat=0.10", "1G", NULL) < 0 ||
            make(IMG_ZSTD, "zstd.qcow2", "compression_type=zstd", "1G", NULL) < 0 ||
            make(IMG_EXTENDED_L2, "el2.qcow2", "extended_l2=on,cluster_size=16k", "1G", NULL) < 0 ||
            make(IMG_SMALL_CLUSTERS, "small.qcow2", "cluster_size=512", "1M", NULL) < 0 ||
            make(IMG_BIG_CLUSTERS, "big.qcow2", "cluster_size=2M", "100G", NULL) < 0 ||
            make(IMG_REFCOUNT64, "rc64.qcow2", "refcount_bits=64,lazy_refcounts=on", "10G", NULL) < 0 ||
            make(IMG_SNAPSHOT, "snap.qcow2", NULL, "1G",
                 (char *[]) { QEMU_IMG, "snapshot", "-c", "s1", "snap.qcow2", NULL }) < 0 ||
            make(IMG_BITMAP, "bitmap.qcow2", NULL, "1G",
                 (char *[]) { QEMU_IMG, "bitmap", "--add", "bitmap.qcow2", "b0", NULL }) < 0 ||
            /* Hostile ones qemu-img makes by itself. */
            run((char *[]) { QEMU_IMG, "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw",
                             "backing.qcow2", "1G", NULL }) < 0 || load("backing.qcow2", &images[IMG_BACKING]) < 0 ||
            make(IMG_DATA_FILE, "datafile.qcow2", "data_file=data.raw", "1M", NULL) < 0 ||
            run((char *[]) { QEMU_IMG, "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=x",
                             "-o", "encrypt.format=aes,encrypt.key-secret=s0", "aes.qcow2", "16M", NULL }) < 0 ||
            load("aes.qcow2", &images[IMG_AES]) < 0 ||
            write_raw("guest.raw") < 0 ||
            convert(IMG_PLAIN, false, "cluster_size=512", "plain.qcow2") < 0 ||
            convert(IMG_COMPRESSED, true, "cluster_size=64k", "compressed.qcow2") < 0 ||
            convert(IMG_COMPRESSED_SMALL, true, "cluster_size=512", "compressed-small.qcow2") < 0 ||
            convert(IMG_COMPRESSED_EL2, true, "extended_l2=on,cluster_size=16k", "compressed-el2.qcow2") < 0 ||
            convert(IMG_COMPRESSED_V2, true, "compat=0.10", "compressed-v2.qcow2") < 0 ||
            convert(IMG_COMPRESSED_ZSTD, true, "compression_type=zstd", "compressed-zstd.qcow2") < 0) {
                fprintf(stderr, "Failed to make the test images with %s.\n", QEMU_IMG);
                (void) group_teardown(state);
                return -1;
        }
        return 0;
}

/* A private copy of a generated image, freed by the test's teardown. */
static Bytes *copy(void **state, int id) {
        Bytes *b = malloc(sizeof *b);

        assert_non_null(b);
        assert_non_null(images[id].data);
        b->size = images[id].size;
        b->data = malloc(b->size + 1);
        assert_non_null(b->data);
        memcpy(b->data, images[id].data, b->size);
        *state = b;
        return b;
}

static int teardown(void **state) {
        Bytes *b = *state;

        if (b)
                free(b->data);
        free(b);
        *state = NULL;
        return 0;
}

static void put32(Bytes *b, size_t offset, uint32_t v) {
        for (int i = 0; i < 4; i++)
                b->data[offset + i] = (uint8_t) (v >> (24 - 8 * i));
}

static void put64(Bytes *b, size_t offset, uint64_t v) {
        put32(b, offset, (uint32_t) (v >> 32));
        put32(b, offset + 4, (uint32_t) v);
}

static uint32_t get32(const Bytes *b, size_t offset) {
        const uint8_t *p = b->data + offset;

        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t get64(const Bytes *b, size_t offset) {
        return (uint64_t) get32(b, offset) << 32 | get32(b, offset + 4);
}

/* Header field offsets, from qemu's docs/interop/qcow2.txt. */
#define H_VERSION        4
#define H_BACKING_OFFSET 8
#define H_CLUSTER_BITS   20
#define H_SIZE           24
#define H_CRYPT          32
#define H_L1_SIZE        36
#define H_L1_OFFSET      40
#define H_RT_OFFSET      48
#define H_RT_CLUSTERS    56
#define H_NB_SNAPSHOTS   60
#define H_SNAPSHOTS      64
#define H_INCOMPAT       72
#define H_REFCOUNT_ORDER 96
#define H_HEADER_LENGTH  100
#define H_COMPRESSION    104

static void set_incompat(Bytes *b, uint64_t bits) {
        put64(b, H_INCOMPAT, get64(b, H_INCOMPAT) | bits);
}

/* Inserts a header extension right after the header, moving the others along in the first cluster. */
static void insert_extension(Bytes *b, uint32_t type, const char *data) {
        size_t at = get32(b, H_VERSION) == 2 ? 72 : get32(b, H_HEADER_LENGTH);
        size_t len = strlen(data), record = 8 + ((len + 7) & ~(size_t) 7);
        size_t cluster = (size_t) 1 << get32(b, H_CLUSTER_BITS);

        memmove(b->data + at + record, b->data + at, cluster - at - record);
        memset(b->data + at, 0, record);
        put32(b, at, type);
        put32(b, at + 4, (uint32_t) len);
        memcpy(b->data + at + 8, data, len);
}

/* Both entry points on the same bytes: they must agree on the verdict and its reason. */
static int inspect_limited(const Bytes *b, uint64_t max_size, Qcow2Info *info, Qcow2Problem *problem) {
        Qcow2Limits limits = { .max_virtual_size = max_size };
        Qcow2Problem buffer_problem = {};
        Qcow2Info buffer_info = {};
        int fd, r, k;

        *problem = (Qcow2Problem) {};
        fd = memfd_create("qcow2", MFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, b->data, b->size), (ssize_t) b->size);
        r = qcow2_inspect(fd, b->size, &limits, info, problem);
        close(fd);

        k = qcow2_inspect_buffer(b->data, b->size, b->size, &limits, &buffer_info, &buffer_problem);
        assert_int_equal(k, r);
        assert_int_equal(buffer_problem.reason, problem->reason);
        assert_string_equal(buffer_problem.message, problem->message);
        return r;
}

static int inspect(const Bytes *b, Qcow2Info *info, Qcow2Problem *problem) {
        return inspect_limited(b, 0, info, problem);
}

static void assert_accepted(const Bytes *b, Qcow2Info *info) {
        Qcow2Problem problem;
        int r = inspect(b, info, &problem);

        if (r != 0)
                fail_msg("refused (%d, reason %d): %s", r, problem.reason, problem.message);
        assert_int_equal(problem.reason, QCOW2_OK);
}

static void assert_refused(const Bytes *b, Qcow2Reason reason, const char *words) {
        Qcow2Problem problem;
        Qcow2Info info = { .version = 99 };
        int r = inspect(b, &info, &problem);

        assert_int_equal(r, reason == QCOW2_NOT_QCOW2 ? -ENOMEDIUM : -EBADMSG);
        if (problem.reason != reason)
                fail_msg("refused for reason %d, not %d: %s", problem.reason, reason, problem.message);
        if (words && !strstr(problem.message, words))
                fail_msg("\"%s\" does not say \"%s\"", problem.message, words);
        assert_int_equal(info.version, 99);     /* untouched on failure */
}

/* --- what qemu-img makes is accepted, and described as qemu-img info would --- */

static void v3_image_is_accepted_and_described(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_V3), &info);
        assert_int_equal(info.version, 3);
        assert_string_equal(info.compat, "1.1");
        assert_int_equal(info.virtual_size, UINT64_C(1) << 30);
        assert_int_equal(info.cluster_size, 65536);
        assert_int_equal(info.cluster_bits, 16);
        assert_int_equal(info.refcount_bits, 16);
        assert_string_equal(info.compression_type, "zlib");
        assert_int_equal(info.l1_entries, 2);
        assert_int_equal(info.snapshots, 0);
        assert_false(info.dirty);
        assert_false(info.corrupt);
        assert_false(info.encrypted);
        assert_false(info.extended_l2);
        assert_false(info.lazy_refcounts);
}

static void v2_image_is_accepted_as_compat_0_10(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_V2), &info);
        assert_int_equal(info.version, 2);
        assert_string_equal(info.compat, "0.10");
        assert_int_equal(info.refcount_bits, 16);
        assert_int_equal(info.virtual_size, UINT64_C(1) << 30);
}

static void zstd_image_is_accepted(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_ZSTD), &info);
        assert_string_equal(info.compression_type, "zstd");
}

static void extended_l2_image_is_accepted(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_EXTENDED_L2), &info);
        assert_true(info.extended_l2);
        assert_int_equal(info.cluster_size, 16384);
        /* 1 GiB / (16 KiB × 1024 sixteen-byte L2 entries per cluster) */
        assert_int_equal(info.l1_entries, 64);
}

static void smallest_and_largest_clusters_are_accepted(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_SMALL_CLUSTERS), &info);
        assert_int_equal(info.cluster_size, 512);
        teardown(state);
        assert_accepted(copy(state, IMG_BIG_CLUSTERS), &info);
        assert_int_equal(info.cluster_size, 2 << 20);
        assert_int_equal(info.virtual_size, UINT64_C(100) << 30);
}

static void refcount_bits_and_lazy_refcounts_are_reported(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_REFCOUNT64), &info);
        assert_int_equal(info.refcount_bits, 64);
        assert_true(info.lazy_refcounts);
}

static void internal_snapshots_are_accepted_and_counted(void **state) {
        Qcow2Info info;

        assert_accepted(copy(state, IMG_SNAPSHOT), &info);
        assert_int_equal(info.snapshots, 1);
}

static void bitmaps_extension_is_tolerated(void **state) {
        Bytes *b = copy(state, IMG_BITMAP);
        Qcow2Info info;

        assert_non_null(memmem(b->data, 65536, "\x23\x85\x28\x75", 4));    /* the bitmaps extension */
        assert_accepted(b, &info);
}

static void unknown_extensions_and_compatible_bits_are_tolerated(void **state) {
        Bytes *b = copy(state, IMG_V3);
        Qcow2Info info;

        insert_extension(b, 0x12345678, "whatever comes next");
        put64(b, 80, UINT64_C(0xfffffffffffffffe));     /* unknown compatible features */
        put64(b, 88, UINT64_MAX);                       /* autoclear features */
        assert_accepted(b, &info);
}

static void dirty_image_is_accepted_and_reported(void **state) {
        Bytes *b = copy(state, IMG_V3);
        Qcow2Info info;

        set_incompat(b, 1 << 0);
        assert_accepted(b, &info);
        assert_true(info.dirty);
}

static void limit_at_exactly_the_virtual_size_is_accepted(void **state) {
        Qcow2Problem problem;
        Qcow2Info info;

        assert_int_equal(inspect_limited(copy(state, IMG_V3), UINT64_C(1) << 30, &info, &problem), 0);
}

/* --- images that name other files (bug 1221190, CVE-2024-32498) --- */

static void backing_file_made_by_qemu_img_is_refused(void **state) {
        assert_refused(copy(state, IMG_BACKING), QCOW2_BACKING_FILE, "backing file");
}

static void backing_file_offset_alone_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put64(b, H_BACKING_OFFSET, 0x300);
        assert_refused(b, QCOW2_BACKING_FILE, "backing file");
        put64(b, H_BACKING_OFFSET, 0);
        put32(b, 16, 11);                               /* backing_file_size alone */
        assert_refused(b, QCOW2_BACKING_FILE, "backing file");
}

static void backing_format_extension_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        insert_extension(b, 0xe2792aca, "raw");
        assert_refused(b, QCOW2_BACKING_FILE, "backing file format");
}

static void backing_format_extension_in_v2_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V2);

        insert_extension(b, 0xe2792aca, "qcow2");
        assert_refused(b, QCOW2_BACKING_FILE, "backing file format");
}

static void data_file_made_by_qemu_img_is_refused(void **state) {
        assert_refused(copy(state, IMG_DATA_FILE), QCOW2_EXTERNAL_DATA_FILE, "external data file");
}

static void data_file_bit_alone_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        set_incompat(b, 1 << 2);
        assert_refused(b, QCOW2_EXTERNAL_DATA_FILE, "external data file");
}

static void data_file_extension_alone_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        insert_extension(b, 0x44415441, "/dev/sda");
        assert_refused(b, QCOW2_EXTERNAL_DATA_FILE, "external data file");
}

/* --- features and versions cistern does not read --- */

static void unknown_incompatible_bits_are_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        set_incompat(b, 1 << 5);
        assert_refused(b, QCOW2_UNKNOWN_FEATURE, "0x20");
        put64(b, H_INCOMPAT, UINT64_C(1) << 63);
        assert_refused(b, QCOW2_UNKNOWN_FEATURE, "0x8000000000000000");
}

static void corrupt_image_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        set_incompat(b, 1 << 1);
        assert_refused(b, QCOW2_CORRUPT, "corrupt");
}

static void versions_1_and_4_are_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put32(b, H_VERSION, 1);
        assert_refused(b, QCOW2_BAD_VERSION, "version 1");
        put32(b, H_VERSION, 4);
        assert_refused(b, QCOW2_BAD_VERSION, "version 4");
}

static void encrypted_images_are_refused(void **state) {
        Bytes *b;

        assert_refused(copy(state, IMG_AES), QCOW2_ENCRYPTED, "encrypted");
        teardown(state);
        b = copy(state, IMG_V3);
        put32(b, H_CRYPT, 2);                           /* LUKS */
        assert_refused(b, QCOW2_ENCRYPTED, "encrypted");
        put32(b, H_CRYPT, 0);
        insert_extension(b, 0x0537be77, "0123456789abcdef");
        assert_refused(b, QCOW2_ENCRYPTED, "encryption header");
}

static void compression_type_must_match_its_feature_bit(void **state) {
        Bytes *b = copy(state, IMG_V3);

        set_incompat(b, 1 << 3);                        /* bit without a type */
        assert_refused(b, QCOW2_BAD_COMPRESSION, NULL);
        teardown(state);

        b = copy(state, IMG_ZSTD);
        b->data[H_COMPRESSION] = 2;                     /* no such type */
        assert_refused(b, QCOW2_BAD_COMPRESSION, NULL);
        b->data[H_COMPRESSION] = 1;
        put64(b, H_INCOMPAT, 0);                        /* zstd without its bit */
        assert_refused(b, QCOW2_BAD_COMPRESSION, NULL);
}

static void compression_type_needs_a_header_long_enough_for_it(void **state) {
        Bytes *b = copy(state, IMG_ZSTD);

        /* With header_length 104 the type byte is not part of the header: zlib, at odds with the
         * bit. The extensions move up to start at 104. */
        memmove(b->data + 104, b->data + 112, 4096);
        put32(b, H_HEADER_LENGTH, 104);
        assert_refused(b, QCOW2_BAD_COMPRESSION, NULL);
}

static void header_length_must_be_sane(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put32(b, H_HEADER_LENGTH, 100);
        assert_refused(b, QCOW2_BAD_HEADER_LENGTH, NULL);
        put32(b, H_HEADER_LENGTH, 108);
        assert_refused(b, QCOW2_BAD_HEADER_LENGTH, NULL);
        put32(b, H_HEADER_LENGTH, 65536 + 8);
        assert_refused(b, QCOW2_BAD_HEADER_LENGTH, NULL);
}

static void refcount_order_above_6_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put32(b, H_REFCOUNT_ORDER, 7);
        assert_refused(b, QCOW2_BAD_REFCOUNT_ORDER, NULL);
}

/* --- sizes and tables --- */

static void cluster_bits_8_and_22_are_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put32(b, H_CLUSTER_BITS, 8);
        assert_refused(b, QCOW2_BAD_CLUSTER_BITS, "8");
        put32(b, H_CLUSTER_BITS, 22);
        assert_refused(b, QCOW2_BAD_CLUSTER_BITS, "22");
        put32(b, H_CLUSTER_BITS, UINT32_MAX);
        assert_refused(b, QCOW2_BAD_CLUSTER_BITS, NULL);
}

static void extended_l2_needs_16k_clusters(void **state) {
        Bytes *b = copy(state, IMG_SMALL_CLUSTERS);

        set_incompat(b, 1 << 4);
        assert_refused(b, QCOW2_BAD_CLUSTER_BITS, "extended L2");
}

static void virtual_size_2_to_the_62_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put64(b, H_SIZE, UINT64_C(1) << 62);
        assert_refused(b, QCOW2_TOO_LARGE, NULL);
        put64(b, H_SIZE, UINT64_MAX & ~UINT64_C(511));
        assert_refused(b, QCOW2_TOO_LARGE, NULL);
}

static void virtual_size_above_the_callers_limit_is_refused(void **state) {
        Qcow2Problem problem;
        Qcow2Info info;

        assert_int_equal(inspect_limited(copy(state, IMG_V3), UINT64_C(512) << 20, &info, &problem), -EBADMSG);
        assert_int_equal(problem.reason, QCOW2_TOO_LARGE);
}

static void virtual_size_zero_or_off_sectors_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put64(b, H_SIZE, 0);
        assert_refused(b, QCOW2_BAD_VIRTUAL_SIZE, NULL);
        put64(b, H_SIZE, (UINT64_C(1) << 30) - 1);
        assert_refused(b, QCOW2_BAD_VIRTUAL_SIZE, NULL);
}

/* qcow2_read_virtual_size() over a memfd holding b. */
static int read_virtual_size(const Bytes *b, uint64_t *ret) {
        int fd, r;

        fd = memfd_create("qcow2", MFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, b->data, b->size), (ssize_t) b->size);
        r = qcow2_read_virtual_size(fd, ret);
        close(fd);
        return r;
}

static void header_size_is_read_alone(void **state) {
        Bytes *b = copy(state, IMG_V3);
        uint64_t size = 0;

        assert_int_equal(read_virtual_size(b, &size), 0);
        assert_int_equal(size, UINT64_C(1) << 30);
        put64(b, H_SIZE, 0);
        assert_int_equal(read_virtual_size(b, &size), -EBADMSG);
        put64(b, H_SIZE, UINT64_C(1) << 62);
        assert_int_equal(read_virtual_size(b, &size), -EBADMSG);
        put32(b, 0, 0);                 /* no magic: not qcow2 */
        assert_int_equal(read_virtual_size(b, &size), -ENOMEDIUM);
        b->size = 16;                   /* shorter than the size field */
        assert_int_equal(read_virtual_size(b, &size), -ENOMEDIUM);
        assert_int_equal(size, UINT64_C(1) << 30);
}

static void l1_table_beyond_eof_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put64(b, H_L1_OFFSET, (b->size + 65535) & ~(size_t) 65535);
        assert_refused(b, QCOW2_BAD_L1_TABLE, "outside the file");
        put64(b, H_L1_OFFSET, UINT64_MAX & ~UINT64_C(65535));
        assert_refused(b, QCOW2_BAD_L1_TABLE, "outside the file");
}

static void l1_table_partly_beyond_eof_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        /* The table (2 entries, 16 bytes) ends exactly at EOF in a fresh image: one byte less. */
        assert_int_equal(get64(b, H_L1_OFFSET) + 16, b->size);
        b->size--;
        assert_refused(b, QCOW2_BAD_L1_TABLE, "outside the file");
}

static void l1_table_misplaced_or_misfit_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);
        uint64_t l1 = get64(b, H_L1_OFFSET);

        put64(b, H_L1_OFFSET, l1 + 8);                  /* not on a cluster */
        assert_refused(b, QCOW2_BAD_L1_TABLE, "misaligned");
        put64(b, H_L1_OFFSET, 0);                       /* over the header */
        assert_refused(b, QCOW2_BAD_L1_TABLE, NULL);
        put64(b, H_L1_OFFSET, get64(b, H_RT_OFFSET));   /* over the refcount table */
        assert_refused(b, QCOW2_BAD_L1_TABLE, "overlaps");
        put64(b, H_L1_OFFSET, l1);
        put32(b, H_L1_SIZE, 1);                         /* too few entries for 1 GiB */
        assert_refused(b, QCOW2_BAD_L1_TABLE, "entries");
        put32(b, H_L1_SIZE, (32 << 20) / 8 + 1);        /* above qemu's 32 MiB */
        assert_refused(b, QCOW2_BAD_L1_TABLE, "entries");
}

static void refcount_table_beyond_eof_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put64(b, H_RT_OFFSET, (b->size + 65535) & ~(size_t) 65535);
        assert_refused(b, QCOW2_BAD_REFCOUNT_TABLE, NULL);
        put64(b, H_RT_OFFSET, 0x10000);
        put32(b, H_RT_CLUSTERS, 3);                     /* runs past the end */
        assert_refused(b, QCOW2_BAD_REFCOUNT_TABLE, NULL);
}

static void refcount_table_misfit_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put32(b, H_RT_CLUSTERS, 0);
        assert_refused(b, QCOW2_BAD_REFCOUNT_TABLE, NULL);
        put32(b, H_RT_CLUSTERS, UINT32_MAX);
        assert_refused(b, QCOW2_BAD_REFCOUNT_TABLE, NULL);
        put32(b, H_RT_CLUSTERS, 1);
        put64(b, H_RT_OFFSET, 0x10200);
        assert_refused(b, QCOW2_BAD_REFCOUNT_TABLE, NULL);
}

static void snapshot_table_misfit_is_refused(void **state) {
        Bytes *b = copy(state, IMG_SNAPSHOT);
        uint64_t offset = get64(b, H_SNAPSHOTS);

        put64(b, H_SNAPSHOTS, 0);
        assert_refused(b, QCOW2_BAD_SNAPSHOT_TABLE, NULL);
        put64(b, H_SNAPSHOTS, offset + 8);
        assert_refused(b, QCOW2_BAD_SNAPSHOT_TABLE, NULL);
        put64(b, H_SNAPSHOTS, offset);
        put32(b, H_NB_SNAPSHOTS, 65537);
        assert_refused(b, QCOW2_BAD_SNAPSHOT_TABLE, NULL);
        put32(b, H_NB_SNAPSHOTS, 10000);                /* 400000 bytes: past the end */
        assert_refused(b, QCOW2_BAD_SNAPSHOT_TABLE, NULL);
}

/* --- header extensions --- */

static void extension_running_past_the_first_cluster_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        put32(b, 112 + 4, 65536);                       /* the feature table's length */
        assert_refused(b, QCOW2_BAD_EXTENSION, NULL);
        put32(b, 112 + 4, UINT32_MAX);
        assert_refused(b, QCOW2_BAD_EXTENSION, NULL);
}

static void missing_end_marker_is_refused(void **state) {
        Bytes *b = copy(state, IMG_SMALL_CLUSTERS);
        Qcow2Info info;

        /* 512-byte clusters: fill everything after the header with empty unknown extensions. */
        for (size_t at = 112; at < 512; at += 8) {
                put32(b, at, 0x0badf00d);
                put32(b, at + 4, 0);
        }
        assert_refused(b, QCOW2_BAD_EXTENSION, NULL);
        put32(b, 504, 0);                               /* an end marker in the last 8 bytes */
        assert_accepted(b, &info);
}

/* --- short files and files that are not qcow2 --- */

static void truncated_headers_are_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);
        size_t lengths[] = { 4, 50, 71, 72, 100, 111 };

        for (size_t i = 0; i < ELEMENTSOF(lengths); i++) {
                b->size = lengths[i];
                assert_refused(b, QCOW2_TRUNCATED, NULL);
        }
        teardown(state);
        b = copy(state, IMG_V2);
        b->size = 71;
        assert_refused(b, QCOW2_TRUNCATED, NULL);
}

static void image_cut_after_its_first_cluster_is_refused(void **state) {
        Bytes *b = copy(state, IMG_V3);

        b->size = 65536;
        assert_refused(b, QCOW2_BAD_L1_TABLE, "outside the file");
}

static void short_buffer_of_a_longer_file_reads_as_truncated(void **state) {
        Bytes *b = copy(state, IMG_V3);
        Qcow2Problem problem;
        Qcow2Info info;

        /* What qcow2_inspect() passes on when the file shrinks between fstat() and pread(). */
        assert_int_equal(qcow2_inspect_buffer(b->data, 4096, b->size, NULL, &info, &problem), -EBADMSG);
        assert_int_equal(problem.reason, QCOW2_TRUNCATED);
        assert_int_equal(qcow2_inspect_buffer(b->data, 65536, b->size, NULL, &info, &problem), 0);
        assert_int_equal(qcow2_inspect_buffer(b->data, 10, 5, NULL, &info, &problem), -EINVAL);
}

static void raw_and_empty_files_are_not_qcow2(void **state) {
        Bytes *b = copy(state, IMG_V3);

        memset(b->data, 0, b->size);                    /* a raw disk of zeros */
        assert_refused(b, QCOW2_NOT_QCOW2, NULL);
        memcpy(b->data, "\x7f" "ELF", 4);
        assert_refused(b, QCOW2_NOT_QCOW2, NULL);
        memcpy(b->data, "QFI\xfb", 4);
        b->size = 3;                                    /* the magic, cut short */
        assert_refused(b, QCOW2_NOT_QCOW2, NULL);
        b->size = 0;
        assert_refused(b, QCOW2_NOT_QCOW2, NULL);
}

static void read_errors_are_errors_not_verdicts(void **state) {
        Qcow2Problem problem = { .reason = QCOW2_OK };
        Qcow2Info info;
        int fds[2];

        assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        assert_int_equal(qcow2_inspect(fds[0], 65536, NULL, &info, &problem), -ESPIPE);
        assert_int_equal(problem.reason, QCOW2_OK);
        close(fds[0]);
        close(fds[1]);
        assert_int_equal(qcow2_inspect(-1, 65536, NULL, &info, &problem), -EINVAL);
}

/* --- compressed clusters, for Volume.Info --- */

/* Inspects a memfd holding b (which must be accepted), cuts it to keep bytes (a file that shrank
 * since), then counts with the file size it had. */
static int count_compressed_cut(const Bytes *b, size_t keep, uint64_t *ret) {
        Qcow2Info info;
        int fd, r;

        fd = memfd_create("qcow2", MFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, b->data, b->size), (ssize_t) b->size);
        assert_int_equal(qcow2_inspect(fd, b->size, NULL, &info, NULL), 0);
        assert_int_equal(ftruncate(fd, (off_t) keep), 0);
        r = qcow2_count_compressed(fd, b->size, &info, ret);
        close(fd);
        return r;
}

static int count_compressed(const Bytes *b, uint64_t *ret) {
        return count_compressed_cut(b, b->size, ret);
}

static void assert_count_refused(const Bytes *b) {
        uint64_t count = 4242;

        assert_int_equal(count_compressed(b, &count), -EBADMSG);
        assert_int_equal(count, 4242);                  /* untouched on failure */
}

/* Where the L1 table's entry i lives in b. */
static size_t l1_entry(const Bytes *b, size_t i) {
        return (size_t) get64(b, H_L1_OFFSET) + 8 * i;
}

static void compressed_clusters_are_counted_as_qemu_img_check_counts(void **state) {
        static const struct {
                int id;
                const char *name;
                uint64_t count;
        } cases[] = {
                { IMG_COMPRESSED, "64 KiB clusters", 17 },
                { IMG_COMPRESSED_SMALL, "512-byte clusters", 2176 },
                { IMG_COMPRESSED_EL2, "extended L2", 68 },
                { IMG_COMPRESSED_V2, "compat=0.10", 17 },
                { IMG_COMPRESSED_ZSTD, "zstd", 17 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t count = UINT64_MAX;

                assert_int_equal(count_compressed(copy(state, cases[i].id), &count), 0);
                if (count != cases[i].count || count != check_counts[cases[i].id])
                        fail_msg("%s: counted %" PRIu64 ", expected %" PRIu64 ", qemu-img check says %" PRIu64,
                                 cases[i].name, count, cases[i].count, check_counts[cases[i].id]);
                teardown(state);
        }
}

static void uncompressed_images_have_no_compressed_clusters(void **state) {
        uint64_t count = UINT64_MAX;

        /* 128 L2 tables, every entry a plain cluster or unallocated. */
        assert_int_equal(count_compressed(copy(state, IMG_PLAIN), &count), 0);
        assert_int_equal(count, 0);
        assert_int_equal(check_counts[IMG_PLAIN], 0);
        teardown(state);
        /* No L2 table at all. */
        count = UINT64_MAX;
        assert_int_equal(count_compressed(copy(state, IMG_V3), &count), 0);
        assert_int_equal(count, 0);
}

static void extended_l2_bitmaps_are_not_read_as_descriptors(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED_EL2);
        size_t l2 = (size_t) (get64(b, l1_entry(b, 0)) & UINT64_C(0x00fffffffffffe00)), patched = 0;
        uint64_t count = UINT64_MAX;

        /* Every unallocated entry's subclusters marked "reads as zeros": bits 32-63 of the second
         * half, bit 62 among them. Read 8 bytes apart, each would count as compressed. */
        for (size_t at = l2; at < l2 + 16384; at += 16)
                if (get64(b, at) == 0) {
                        put64(b, at + 8, UINT64_C(0xffffffff00000000));
                        patched++;
                }
        assert_true(patched > 0);
        assert_int_equal(count_compressed(b, &count), 0);
        assert_int_equal(count, 68);
}

static void l2_table_beyond_eof_is_refused(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED);
        size_t at = l1_entry(b, 0);
        uint64_t past = ((uint64_t) b->size + 65535) & ~UINT64_C(65535);

        put64(b, at, UINT64_C(1) << 63 | past);
        assert_count_refused(b);
        put64(b, at, UINT64_C(1) << 63 | (UINT64_C(0x00ffffffffffffff) & ~UINT64_C(65535)));
        assert_count_refused(b);
}

static void l2_table_partly_beyond_eof_is_refused(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED);

        /* The last cluster, cut short: compressed data leaves the file off a cluster boundary. */
        if (b->size % 65536 == 0)
                b->size -= 8;
        put64(b, l1_entry(b, 0), UINT64_C(1) << 63 | (b->size & ~(size_t) 65535));
        assert_count_refused(b);
}

static void misaligned_l2_table_is_refused(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED);
        size_t at = l1_entry(b, 0);

        put64(b, at, get64(b, at) + 512);               /* on a sector, not on a cluster */
        assert_count_refused(b);
}

static void l1_entry_with_reserved_bits_is_refused(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED);
        size_t at = l1_entry(b, 0);
        uint64_t entry = get64(b, at), count = UINT64_MAX;

        put64(b, at, entry | 1);
        assert_count_refused(b);
        put64(b, at, entry | UINT64_C(1) << 56);
        assert_count_refused(b);
        put64(b, at, UINT64_C(1) << 63);                /* "copied" without an offset: unallocated */
        assert_int_equal(count_compressed(b, &count), 0);
        assert_int_equal(count, 0);
}

static void l2_tables_shared_past_the_files_clusters_are_refused(void **state) {
        Bytes *b = copy(state, IMG_SMALL_CLUSTERS);
        uint64_t table = get64(b, H_RT_OFFSET), count = UINT64_MAX;
        size_t clusters = b->size / 512;

        /* 1 MiB in 512-byte clusters: 32 L1 entries in a file of a few clusters. As many entries
         * naming one table as the file has clusters pass; one more is a crafted image. */
        assert_true(get32(b, H_L1_SIZE) > clusters);
        for (size_t i = 0; i < clusters; i++)
                put64(b, l1_entry(b, i), table);
        assert_int_equal(count_compressed(b, &count), 0);
        assert_int_equal(count, 0);
        put64(b, l1_entry(b, clusters), table);
        assert_count_refused(b);
}

static void file_shrunk_under_the_walk_is_refused(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED_SMALL);
        uint64_t count = 4242;
        size_t last_l2 = 0;

        for (size_t i = 0; i < get32(b, H_L1_SIZE); i++) {
                size_t l2 = (size_t) (get64(b, l1_entry(b, i)) & UINT64_C(0x00fffffffffffe00));

                if (l2 > last_l2)
                        last_l2 = l2;
        }
        assert_true(last_l2 > l1_entry(b, get32(b, H_L1_SIZE)));
        assert_int_equal(count_compressed_cut(b, last_l2 + 100, &count), -EBADMSG);
        assert_int_equal(count_compressed_cut(b, l1_entry(b, 3), &count), -EBADMSG);
        assert_int_equal(count, 4242);
}

static void counting_needs_a_sane_info_and_a_readable_fd(void **state) {
        Bytes *b = copy(state, IMG_COMPRESSED);
        uint64_t count = 4242;
        Qcow2Info info, bad;
        int fd, fds[2];

        fd = memfd_create("qcow2", MFD_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, b->data, b->size), (ssize_t) b->size);
        assert_int_equal(qcow2_inspect(fd, b->size, NULL, &info, NULL), 0);

        assert_int_equal(qcow2_count_compressed(-1, b->size, &info, &count), -EINVAL);
        assert_int_equal(qcow2_count_compressed(fd, b->size, NULL, &count), -EINVAL);
        assert_int_equal(qcow2_count_compressed(fd, b->size, &info, NULL), -EINVAL);
        /* An L1 table past the file size given: not what qcow2_inspect() said of this file. */
        assert_int_equal(qcow2_count_compressed(fd, info.l1_table_offset + 4, &info, &count), -EINVAL);
        bad = info;
        bad.cluster_bits = 22;
        bad.cluster_size = 4 << 20;
        assert_int_equal(qcow2_count_compressed(fd, b->size, &bad, &count), -EINVAL);
        bad = info;
        bad.cluster_size = 512;                         /* at odds with cluster_bits */
        assert_int_equal(qcow2_count_compressed(fd, b->size, &bad, &count), -EINVAL);
        bad = info;
        bad.l1_entries = 0;
        assert_int_equal(qcow2_count_compressed(fd, b->size, &bad, &count), -EINVAL);
        bad = info;
        bad.l1_entries = UINT32_MAX;
        assert_int_equal(qcow2_count_compressed(fd, UINT64_MAX, &bad, &count), -EINVAL);
        bad = info;
        bad.l1_table_offset += 8;
        assert_int_equal(qcow2_count_compressed(fd, b->size, &bad, &count), -EINVAL);
        close(fd);

        assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
        assert_int_equal(qcow2_count_compressed(fds[0], b->size, &info, &count), -ESPIPE);
        close(fds[0]);
        close(fds[1]);
        assert_int_equal(count, 4242);
}

#define T(f) cmocka_unit_test_teardown(f, teardown)

int main(void) {
        if (access(QEMU_IMG, X_OK) < 0) {
                printf("# SKIP: %s is missing (package qemu-utils)\n", QEMU_IMG);
                return 77;
        }

        const struct CMUnitTest tests[] = {
                T(v3_image_is_accepted_and_described),
                T(v2_image_is_accepted_as_compat_0_10),
                T(zstd_image_is_accepted),
                T(extended_l2_image_is_accepted),
                T(smallest_and_largest_clusters_are_accepted),
                T(refcount_bits_and_lazy_refcounts_are_reported),
                T(internal_snapshots_are_accepted_and_counted),
                T(bitmaps_extension_is_tolerated),
                T(unknown_extensions_and_compatible_bits_are_tolerated),
                T(dirty_image_is_accepted_and_reported),
                T(limit_at_exactly_the_virtual_size_is_accepted),
                T(backing_file_made_by_qemu_img_is_refused),
                T(backing_file_offset_alone_is_refused),
                T(backing_format_extension_is_refused),
                T(backing_format_extension_in_v2_is_refused),
                T(data_file_made_by_qemu_img_is_refused),
                T(data_file_bit_alone_is_refused),
                T(data_file_extension_alone_is_refused),
                T(unknown_incompatible_bits_are_refused),
                T(corrupt_image_is_refused),
                T(versions_1_and_4_are_refused),
                T(encrypted_images_are_refused),
                T(compression_type_must_match_its_feature_bit),
                T(compression_type_needs_a_header_long_enough_for_it),
                T(header_length_must_be_sane),
                T(refcount_order_above_6_is_refused),
                T(cluster_bits_8_and_22_are_refused),
                T(extended_l2_needs_16k_clusters),
                T(virtual_size_2_to_the_62_is_refused),
                T(virtual_size_above_the_callers_limit_is_refused),
                T(virtual_size_zero_or_off_sectors_is_refused),
                T(header_size_is_read_alone),
                T(l1_table_beyond_eof_is_refused),
                T(l1_table_partly_beyond_eof_is_refused),
                T(l1_table_misplaced_or_misfit_is_refused),
                T(refcount_table_beyond_eof_is_refused),
                T(refcount_table_misfit_is_refused),
                T(snapshot_table_misfit_is_refused),
                T(extension_running_past_the_first_cluster_is_refused),
                T(missing_end_marker_is_refused),
                T(truncated_headers_are_refused),
                T(image_cut_after_its_first_cluster_is_refused),
                T(short_buffer_of_a_longer_file_reads_as_truncated),
                T(raw_and_empty_files_are_not_qcow2),
                T(read_errors_are_errors_not_verdicts),
                T(compressed_clusters_are_counted_as_qemu_img_check_counts),
                T(uncompressed_images_have_no_compressed_clusters),
                T(extended_l2_bitmaps_are_not_read_as_descriptors),
                T(l2_table_beyond_eof_is_refused),
                T(l2_table_partly_beyond_eof_is_refused),
                T(misaligned_l2_table_is_refused),
                T(l1_entry_with_reserved_bits_is_refused),
                T(l2_tables_shared_past_the_files_clusters_are_refused),
                T(file_shrunk_under_the_walk_is_refused),
                T(counting_needs_a_sane_info_and_a_readable_fd),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
