/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* partitions_read() on disk images built here byte by byte in a memfd: libblkid reads them as it
 * reads an attached loop device (512-byte sectors), with nothing mocked. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "partition.h"

#define SECTOR 512U
#define DISK_SECTORS 16384U             /* 8 MiB */
#define SLOTS 128U                      /* of the tables sgdisk and sfdisk write */
#define SLOTS_MAX 512U                  /* of the arrays built here */

typedef struct Range {
        uint64_t first, last;           /* LBAs, inclusive */
} Range;

typedef struct GptHeader {
        uint64_t my_lba, alternate_lba, first_usable, last_usable, array_lba;
        uint32_t slots, entry_size;
} GptHeader;

static int disk = -EBADF;

static int setup(void **state) {
        disk = memfd_create("test-partition", MFD_CLOEXEC);
        assert_true(disk >= 0);
        assert_int_equal(ftruncate(disk, (off_t) DISK_SECTORS * SECTOR), 0);
        return 0;
}

static int teardown(void **state) {
        disk = safe_close(disk);
        return 0;
}

static void put_le32(uint8_t *b, uint32_t v) {
        for (unsigned i = 0; i < 4; i++)
                b[i] = (uint8_t) (v >> 8 * i);
}

static void put_le64(uint8_t *b, uint64_t v) {
        put_le32(b, (uint32_t) v);
        put_le32(b + 4, (uint32_t) (v >> 32));
}

/* An oracle of its own, not partition.c's. */
static uint32_t crc32_reference(const uint8_t *b, size_t n) {
        uint32_t crc = 0xFFFFFFFF;

        while (n-- > 0) {
                crc ^= *b++;
                for (int k = 0; k < 8; k++)
                        crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
}

static void write_at(const void *buf, size_t n, uint64_t offset) {
        assert_int_equal(pwrite(disk, buf, n, (off_t) offset), (ssize_t) n);
}

/* An MBR of up to 4 entries (type, first LBA, sectors). */
static void write_mbr(const uint32_t (*entries)[3], size_t n) {
        uint8_t mbr[SECTOR] = {};

        for (size_t i = 0; i < n; i++) {
                uint8_t *e = mbr + 446 + 16 * i;

                e[4] = (uint8_t) entries[i][0];
                put_le32(e + 8, entries[i][1]);
                put_le32(e + 12, entries[i][2]);
        }
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        write_at(mbr, sizeof mbr, 0);
}

static void write_protective_mbr(void) {
        write_mbr((const uint32_t[][3]) { { 0xEE, 1, DISK_SECTORS - 1 } }, 1);
}

/* An entry array of SLOTS_MAX slots listing parts in slots 0…, of the linux-filesystem type; a
 * part starting at LBA 0 leaves its slot empty. */
static uint8_t *gpt_array(const Range *parts, size_t n) {
        static const uint8_t linux_fs[16] = { 0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47,
                                              0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4 };
        uint8_t *array = calloc(SLOTS_MAX, 128);

        assert_non_null(array);
        for (size_t i = 0; i < n; i++) {
                if (parts[i].first == 0)
                        continue;
                memcpy(array + i * 128, linux_fs, 16);
                array[i * 128 + 16] = (uint8_t) (i + 1);        /* unique GUID */
                put_le64(array + i * 128 + 32, parts[i].first);
                put_le64(array + i * 128 + 40, parts[i].last);
        }
        return array;
}

static GptHeader primary_header_of(uint32_t slots) {
        uint32_t array_sectors = slots * 128 / SECTOR;

        return (GptHeader) {
                .my_lba = 1,
                .alternate_lba = DISK_SECTORS - 1,
                .first_usable = 2 + array_sectors,
                .last_usable = DISK_SECTORS - 2 - array_sectors,
                .array_lba = 2,
                .slots = slots,
                .entry_size = 128,
        };
}

static GptHeader backup_header_of(uint32_t slots) {
        GptHeader h = primary_header_of(slots);

        h.my_lba = DISK_SECTORS - 1;
        h.alternate_lba = 1;
        h.array_lba = DISK_SECTORS - 1 - (h.first_usable - 2);
        return h;
}

static GptHeader primary_header(void) {
        return primary_header_of(SLOTS);
}

static GptHeader backup_header(void) {
        return backup_header_of(SLOTS);
}

/* Header h, and the array at its place when that lies inside the disk (the checksums are always
 * right, over as many slots as the header says, or as the array has). */
static void write_gpt_copy(const GptHeader *h, const uint8_t *array) {
        size_t len = (size_t) (h->slots < SLOTS_MAX ? h->slots : SLOTS_MAX) * 128;
        uint8_t sector[SECTOR] = {};

        memcpy(sector, "EFI PART", 8);
        put_le32(sector + 8, 0x00010000);
        put_le32(sector + 12, 92);
        put_le64(sector + 24, h->my_lba);
        put_le64(sector + 32, h->alternate_lba);
        put_le64(sector + 40, h->first_usable);
        put_le64(sector + 48, h->last_usable);
        put_le64(sector + 72, h->array_lba);
        put_le32(sector + 80, h->slots);
        put_le32(sector + 84, h->entry_size);
        put_le32(sector + 88, crc32_reference(array, len));
        put_le32(sector + 16, crc32_reference(sector, 92));
        write_at(sector, sizeof sector, h->my_lba * SECTOR);
        if (h->array_lba + len / SECTOR <= DISK_SECTORS)
                write_at(array, len, h->array_lba * SECTOR);
}

/* What sgdisk makes: a protective MBR, the primary and the backup GPT. */
static void write_gpt_of(const Range *parts, size_t n, uint32_t slots) {
        _cleanup_free_ uint8_t *array = gpt_array(parts, n);
        GptHeader p = primary_header_of(slots), b = backup_header_of(slots);

        write_protective_mbr();
        write_gpt_copy(&p, array);
        write_gpt_copy(&b, array);
}

static void write_gpt(const Range *parts, size_t n) {
        write_gpt_of(parts, n, SLOTS);
}

static int read_table(Partition **ret, size_t *ret_n) {
        return partitions_read(disk, (uint64_t) DISK_SECTORS * SECTOR, ret, ret_n);
}

static void assert_refused(void) {
        Partition *p = NULL;
        size_t n = 0;

        assert_int_equal(read_table(&p, &n), -EBADMSG);
        assert_null(p);
}

static void assert_no_partitions(void) {
        _cleanup_free_ Partition *p = NULL;
        size_t n = 1;

        assert_int_equal(read_table(&p, &n), 0);
        assert_int_equal(n, 0);
}

static void gpt_is_read(void **state) {
        _cleanup_free_ Partition *p = NULL;
        size_t n = 0;

        write_gpt((const Range[]) { { 4096, 8191 }, { 2048, 4095 } }, 2);
        assert_int_equal(read_table(&p, &n), 0);
        assert_int_equal(n, 2);
        /* In the order of the disk. */
        assert_int_equal(p[0].number, 2);
        assert_int_equal(p[0].start, 2048 * SECTOR);
        assert_int_equal(p[0].size, 2048 * SECTOR);
        assert_int_equal(p[1].number, 1);
        assert_int_equal(p[1].start, 4096 * SECTOR);
        assert_int_equal(p[1].size, 4096 * SECTOR);
}

static void mbr_is_read(void **state) {
        _cleanup_free_ Partition *p = NULL;
        size_t n = 0;

        write_mbr((const uint32_t[][3]) { { 0x83, 2048, 2048 }, { 0x0c, 4096, 4096 } }, 2);
        assert_int_equal(read_table(&p, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(p[1].number, 2);
        assert_int_equal(p[1].start, 4096 * SECTOR);
}

static void no_table_is_no_partitions(void **state) {
        assert_no_partitions();
}

/* A protective MBR whose GPT is gone: nothing to expose, nothing hidden. */
static void protective_mbr_alone_is_no_partitions(void **state) {
        write_protective_mbr();
        assert_no_partitions();
}

/* libblkid drops these entries and reports the others. */
static void gpt_entry_beyond_the_disk_is_refused(void **state) {
        write_gpt((const Range[]) { { 2048, 4095 }, { 4096, 100000 } }, 2);
        assert_refused();
}

static void gpt_entry_beyond_the_usable_area_is_refused(void **state) {
        GptHeader h = primary_header();

        write_gpt((const Range[]) { { 2048, 4095 }, { 4096, h.last_usable + 1 } }, 2);
        assert_refused();
}

static void gpt_entry_ending_before_it_starts_is_refused(void **state) {
        write_gpt((const Range[]) { { 2048, 4095 }, { 8191, 4096 } }, 2);
        assert_refused();
}

/* libblkid reads the primary GPT; the backup, which a firmware falls back to, lists more. */
static void backup_gpt_with_other_entries_is_refused(void **state) {
        const Range parts[] = { { 2048, 4095 }, { 4096, 8191 } };
        _cleanup_free_ uint8_t *one = gpt_array(parts, 1), *two = gpt_array(parts, 2);
        GptHeader p = primary_header(), b = backup_header();

        write_protective_mbr();
        write_gpt_copy(&p, one);
        write_gpt_copy(&b, two);
        assert_refused();
}

/* The primary header is gone: libblkid reads the backup, which is checked just the same. */
static void backup_gpt_alone_is_read_and_checked(void **state) {
        _cleanup_free_ Partition *p = NULL;
        const uint8_t zero[SECTOR] = {};
        size_t n = 0;

        write_gpt((const Range[]) { { 2048, 4095 } }, 1);
        write_at(zero, sizeof zero, SECTOR);
        assert_int_equal(read_table(&p, &n), 0);
        assert_int_equal(n, 1);

        write_gpt((const Range[]) { { 2048, 4095 }, { 4096, 100000 } }, 2);
        write_at(zero, sizeof zero, SECTOR);
        assert_refused();
}

/* Only what libblkid and the kernel read as a GPT header counts as one; a header that is not
 * sound (a table larger than we read, entries of another size, a usable area beyond the disk as
 * after a shrink) is refused, whichever table libblkid then settles for. */
static void unsound_gpt_header_is_refused(void **state) {
        const Range parts[] = { { 2048, 4095 } };
        GptHeader tweaks[4];

        for (size_t i = 0; i < ELEMENTSOF(tweaks); i++)
                tweaks[i] = primary_header();
        tweaks[0].slots = UINT32_MAX;
        tweaks[1].entry_size = 256;
        tweaks[2].last_usable = DISK_SECTORS + 100;
        tweaks[3].array_lba = DISK_SECTORS - 1;
        for (size_t i = 0; i < ELEMENTSOF(tweaks); i++) {
                _cleanup_free_ uint8_t *array = gpt_array(parts, 1);
                GptHeader b = backup_header();

                assert_int_equal(ftruncate(disk, 0), 0);
                assert_int_equal(ftruncate(disk, (off_t) DISK_SECTORS * SECTOR), 0);
                write_protective_mbr();
                write_gpt_copy(&b, array);
                write_gpt_copy(&tweaks[i], array);
                assert_refused();
        }
}

static void gpt_with_a_corrupted_entry_array_is_refused(void **state) {
        const uint8_t garbage[16] = "not a GPT entry";

        write_gpt((const Range[]) { { 2048, 4095 } }, 1);
        write_at(garbage, sizeof garbage, 2 * SECTOR + 128);
        assert_refused();
}

/* A table of 300 slots may use numbers BLKPG refuses. */
static void partition_numbered_beyond_255_is_refused(void **state) {
        _cleanup_free_ Partition *p = NULL;
        Range parts[300] = {};
        size_t n = 0;

        parts[254] = (Range) { 2048, 4095 };
        write_gpt_of(parts, ELEMENTSOF(parts), ELEMENTSOF(parts));
        assert_int_equal(read_table(&p, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(p[0].number, 255);

        parts[299] = (Range) { 4096, 8191 };
        write_gpt_of(parts, ELEMENTSOF(parts), ELEMENTSOF(parts));
        assert_refused();
}

/* An MBR of its own over a GPT: libblkid takes the MBR, wipefs shows both. */
static void mbr_over_gpt_is_refused(void **state) {
        write_gpt((const Range[]) { { 2048, 4095 }, { 4096, 8191 } }, 2);
        write_mbr((const uint32_t[][3]) { { 0x83, 2048, 8192 } }, 1);
        assert_refused();
}

/* Just as ambiguous with the backup GPT alone at the end. */
static void mbr_over_backup_gpt_is_refused(void **state) {
        const uint8_t zero[SECTOR] = {};

        write_gpt((const Range[]) { { 2048, 4095 } }, 1);
        write_at(zero, sizeof zero, SECTOR);
        write_mbr((const uint32_t[][3]) { { 0x83, 2048, 2048 } }, 1);
        assert_refused();
}

/* libblkid reads the GPT of a hybrid MBR and skips the MBR's other entries. */
static void hybrid_mbr_is_refused(void **state) {
        write_gpt((const Range[]) { { 2048, 4095 }, { 4096, 8191 } }, 2);
        write_mbr((const uint32_t[][3]) { { 0xEE, 1, 2047 }, { 0x83, 2048, 2048 } }, 2);
        assert_refused();
}

/* A GPT header with a bad checksum is no GPT to anyone: the MBR is the only table. */
static void mbr_over_a_broken_gpt_header_is_read(void **state) {
        _cleanup_free_ Partition *p = NULL;
        const uint8_t zero[SECTOR] = {}, bad[4] = { 1, 2, 3, 4 };
        size_t n = 0;

        write_gpt((const Range[]) { { 2048, 4095 } }, 1);
        write_at(zero, sizeof zero, (DISK_SECTORS - 1) * SECTOR);
        write_at(bad, sizeof bad, SECTOR + 16);
        write_mbr((const uint32_t[][3]) { { 0x83, 2048, 2048 } }, 1);
        assert_int_equal(read_table(&p, &n), 0);
        assert_int_equal(n, 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(gpt_is_read, setup, teardown),
                cmocka_unit_test_setup_teardown(mbr_is_read, setup, teardown),
                cmocka_unit_test_setup_teardown(no_table_is_no_partitions, setup, teardown),
                cmocka_unit_test_setup_teardown(protective_mbr_alone_is_no_partitions, setup, teardown),
                cmocka_unit_test_setup_teardown(gpt_entry_beyond_the_disk_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(gpt_entry_beyond_the_usable_area_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(gpt_entry_ending_before_it_starts_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(backup_gpt_with_other_entries_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(backup_gpt_alone_is_read_and_checked, setup, teardown),
                cmocka_unit_test_setup_teardown(unsound_gpt_header_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(gpt_with_a_corrupted_entry_array_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(partition_numbered_beyond_255_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(mbr_over_gpt_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(mbr_over_backup_gpt_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(hybrid_mbr_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(mbr_over_a_broken_gpt_header_is_read, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
