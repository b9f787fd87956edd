/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../clients/sizes.h"

#define KiB UINT64_C(1024)
#define MiB (KiB * 1024)
#define GiB (MiB * 1024)
#define TiB (GiB * 1024)
#define PiB (TiB * 1024)
#define EiB (PiB * 1024)

#define N_ELEMENTS(x) (sizeof(x) / sizeof((x)[0]))

static void assert_parses_to(const char *s, uint64_t expected) {
        uint64_t v = 0;
        int r = parse_size(s, &v);

        if (r != 0)
                fail_msg("\"%s\" was refused (%d)", s, r);
        if (v != expected)
                fail_msg("\"%s\" parsed as %llu, expected %llu", s,
                         (unsigned long long) v, (unsigned long long) expected);
}

static void assert_refused(const char *s, int expected_error) {
        uint64_t v = 4711;
        int r = parse_size(s, &v);

        if (r != expected_error)
                fail_msg("\"%s\" returned %d, expected %d", s, r, expected_error);
        assert_int_equal(v, 4711);      /* untouched on failure */
}

static void plain_numbers_are_bytes(void **state) {
        assert_parses_to("0", 0);
        assert_parses_to("1", 1);
        assert_parses_to("512", 512);
        assert_parses_to("000512", 512);
        assert_parses_to("512B", 512);
        assert_parses_to("512b", 512);
        assert_parses_to("18446744073709551615", UINT64_MAX);
}

static void suffixes_are_powers_of_1024(void **state) {
        assert_parses_to("1K", KiB);
        assert_parses_to("1M", MiB);
        assert_parses_to("10G", 10 * GiB);
        assert_parses_to("2T", 2 * TiB);
        assert_parses_to("3P", 3 * PiB);
        assert_parses_to("15E", 15 * EiB);
}

static void suffix_letters_are_case_insensitive(void **state) {
        assert_parses_to("1k", KiB);
        assert_parses_to("1m", MiB);
        assert_parses_to("10g", 10 * GiB);
        assert_parses_to("2t", 2 * TiB);
        assert_parses_to("3p", 3 * PiB);
        assert_parses_to("1e", EiB);
}

static void iec_spellings_are_accepted(void **state) {
        assert_parses_to("1KiB", KiB);
        assert_parses_to("4MiB", 4 * MiB);
        assert_parses_to("10GiB", 10 * GiB);
        assert_parses_to("1TiB", TiB);
        assert_parses_to("1PiB", PiB);
        assert_parses_to("1EiB", EiB);
        assert_parses_to("64kib", 64 * KiB);
        assert_parses_to("1GIB", GiB);
}

static void fractions_that_make_whole_bytes_are_accepted(void **state) {
        assert_parses_to("1.5G", GiB + GiB / 2);
        assert_parses_to("0.5K", 512);
        assert_parses_to("1.50K", 1536);
        assert_parses_to("2.0", 2);
        assert_parses_to("0.25M", MiB / 4);
}

static void garbage_is_refused(void **state) {
        static const char *const bad[] = {
                "", " ", " 1G", "1G ", "1 G", "G", "abc", "1X", "1Q", "10GB", "1KB", "1Ki", "1iB",
                "1KiBB", "1GiB2", "0x10", "1e3", "1,5G", "1..5G", "1.G", ".5G", "1.", "1.5",
                "0.1K", "1.0000000000000000001K", "\t1", "1\n",
        };

        for (size_t i = 0; i < N_ELEMENTS(bad); i++)
                assert_refused(bad[i], -EINVAL);
}

static void signs_are_refused(void **state) {
        assert_refused("-1", -EINVAL);
        assert_refused("-1G", -EINVAL);
        assert_refused("+1G", -EINVAL);
        assert_refused("-0", -EINVAL);
}

static void values_beyond_64_bits_are_refused(void **state) {
        assert_refused("18446744073709551616", -ERANGE);
        assert_refused("99999999999999999999999", -ERANGE);
        assert_refused("16E", -ERANGE);
        assert_refused("16384P", -ERANGE);
        assert_refused("17179869184T", -ERANGE);
        assert_refused("18014398509481984K", -ERANGE);
        assert_refused("15.9999999999E", -EINVAL);      /* not whole bytes, before it overflows */
        assert_parses_to("15.5E", 15 * EiB + EiB / 2);
        assert_parses_to("16383P", 16383 * PiB);
}

static void assert_formats_to(uint64_t bytes, const char *expected) {
        char buf[FORMAT_SIZE_MAX];

        assert_string_equal(format_size(buf, bytes), expected);
}

static void small_sizes_format_as_bytes(void **state) {
        assert_formats_to(0, "0B");
        assert_formats_to(1, "1B");
        assert_formats_to(512, "512B");
        assert_formats_to(1023, "1023B");
}

static void sizes_format_with_one_decimal(void **state) {
        assert_formats_to(KiB, "1.0K");
        assert_formats_to(1536, "1.5K");
        assert_formats_to(10 * GiB, "10.0G");
        assert_formats_to(GiB + GiB / 4, "1.3G");       /* 1.25 rounds to nearest, up */
        assert_formats_to(3 * TiB, "3.0T");
        assert_formats_to(2 * PiB, "2.0P");
        assert_formats_to(EiB, "1.0E");
        assert_formats_to(1023 * MiB, "1023.0M");
}

static void rounding_carries_into_the_next_unit(void **state) {
        assert_formats_to(MiB - 1, "1.0M");
        assert_formats_to(1024 * 1000 - 1, "1000.0K");
        assert_formats_to(GiB - 1, "1.0G");
        assert_formats_to(UINT64_MAX, "16.0E");
}

static void formatted_sizes_parse_back(void **state) {
        static const uint64_t values[] = { 0, 1, 512, KiB, 1536, 10 * GiB, 3 * TiB, 5 * PiB / 2, 15 * EiB };

        for (size_t i = 0; i < N_ELEMENTS(values); i++) {
                char buf[FORMAT_SIZE_MAX];
                uint64_t v;

                assert_int_equal(parse_size(format_size(buf, values[i]), &v), 0);
                assert_int_equal(v, values[i]);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(plain_numbers_are_bytes),
                cmocka_unit_test(suffixes_are_powers_of_1024),
                cmocka_unit_test(suffix_letters_are_case_insensitive),
                cmocka_unit_test(iec_spellings_are_accepted),
                cmocka_unit_test(fractions_that_make_whole_bytes_are_accepted),
                cmocka_unit_test(garbage_is_refused),
                cmocka_unit_test(signs_are_refused),
                cmocka_unit_test(values_beyond_64_bits_are_refused),
                cmocka_unit_test(small_sizes_format_as_bytes),
                cmocka_unit_test(sizes_format_with_one_decimal),
                cmocka_unit_test(rounding_carries_into_the_next_unit),
                cmocka_unit_test(formatted_sizes_parse_back),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
