/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../clients/progress.h"

#define KiB UINT64_C(1024)
#define MiB (KiB * 1024)
#define GiB (MiB * 1024)
#define USEC_PER_SEC UINT64_C(1000000)

static const ProgressInfo unknown = {
        .fraction = -1,
        .remaining_usec = PROGRESS_UNKNOWN,
};

static void byte_counts_read_as_iec_units(void **state) {
        char buf[FORMAT_IEC_MAX];

        assert_string_equal(format_iec(buf, 0), "0 B");
        assert_string_equal(format_iec(buf, 1023), "1023 B");
        assert_string_equal(format_iec(buf, KiB), "1.0 KiB");
        assert_string_equal(format_iec(buf, 1536), "1.5 KiB");
        assert_string_equal(format_iec(buf, 120 * MiB), "120 MiB");
        assert_string_equal(format_iec(buf, 10 * GiB), "10 GiB");
        assert_string_equal(format_iec(buf, UINT64_MAX), "16 EiB");
}

static void rounding_never_shows_1024_of_a_unit(void **state) {
        char buf[FORMAT_IEC_MAX];

        assert_string_equal(format_iec(buf, MiB - 1), "1.0 MiB");
        assert_string_equal(format_iec(buf, 10 * KiB - 1), "10 KiB");
}

static void rates_are_per_second(void **state) {
        char buf[FORMAT_IEC_MAX];

        assert_string_equal(format_rate(buf, 120 * MiB), "120 MiB/s");
        assert_string_equal(format_rate(buf, 512), "512 B/s");
}

static void durations_read_as_clock_times(void **state) {
        char buf[FORMAT_DURATION_MAX];

        assert_string_equal(format_duration(buf, 0), "0:00");
        assert_string_equal(format_duration(buf, 12 * USEC_PER_SEC), "0:12");
        assert_string_equal(format_duration(buf, 754 * USEC_PER_SEC), "12:34");
        assert_string_equal(format_duration(buf, 3723 * USEC_PER_SEC), "1:02:03");
        /* Half a second left is not "0:00" yet. */
        assert_string_equal(format_duration(buf, USEC_PER_SEC / 2), "0:01");
}

static void percentages_round_down_and_stay_in_range(void **state) {
        assert_int_equal(progress_percent(0), 0);
        assert_int_equal(progress_percent(0.29), 29);
        assert_int_equal(progress_percent(0.999), 99);
        assert_int_equal(progress_percent(1), 100);
        assert_int_equal(progress_percent(7), 100);
        assert_int_equal(progress_percent(-3), 0);
        assert_int_equal(progress_percent(__builtin_nan("")), 0);
}

static void a_line_shows_bar_percentage_rate_and_eta(void **state) {
        char buf[PROGRESS_LINE_MAX];
        ProgressInfo p = {
                .fraction = 0.42,
                .rate = 120 * MiB,
                .remaining_usec = 12 * USEC_PER_SEC,
        };

        /* 38 columns: 37 characters, 10 of them for the bar. */
        assert_string_equal(progress_format(buf, 38, &p), "[####      ] 42%  120 MiB/s  ETA 0:12");
}

static void unknown_parts_are_left_out(void **state) {
        char buf[PROGRESS_LINE_MAX];
        ProgressInfo p = unknown;

        p.fraction = 0.5;
        assert_string_equal(progress_format(buf, 17, &p), "[#####     ] 50%");
}

static void without_a_fraction_the_bytes_done_show(void **state) {
        char buf[PROGRESS_LINE_MAX];
        ProgressInfo p = unknown;

        p.bytes_done = 3 * GiB / 2;
        assert_string_equal(progress_format(buf, 21, &p), "[          ] 1.5 GiB");
}

static void the_bar_is_full_only_when_done(void **state) {
        char buf[PROGRESS_LINE_MAX];
        ProgressInfo p = unknown;

        p.fraction = 0.999;
        assert_string_equal(progress_format(buf, 17, &p), "[######### ] 99%");
        p.fraction = 1.5;
        assert_string_equal(progress_format(buf, 18, &p), "[##########] 100%");
}

static void the_bar_grows_with_the_terminal_up_to_a_limit(void **state) {
        char buf[PROGRESS_LINE_MAX];
        ProgressInfo p = unknown;

        p.fraction = 0.5;
        progress_format(buf, 200, &p);
        assert_int_equal(strlen(buf), 1 + 40 + 1 + 4);
        assert_int_equal(strspn(buf + 1, "#"), 20);
}

static void a_line_never_wraps(void **state) {
        ProgressInfo p = {
                .fraction = 0.42,
                .rate = 120 * MiB,
                .remaining_usec = 12 * USEC_PER_SEC,
        };

        for (unsigned columns = 1; columns < 100; columns++) {
                char buf[PROGRESS_LINE_MAX];

                progress_format(buf, columns, &p);
                if (strlen(buf) > columns - 1)
                        fail_msg("%u columns: \"%s\" is too long", columns, buf);
        }
}

static void an_unknown_width_means_80_columns(void **state) {
        char a[PROGRESS_LINE_MAX], b[PROGRESS_LINE_MAX];
        ProgressInfo p = unknown;

        p.fraction = 0.3;
        assert_string_equal(progress_format(a, 0, &p), progress_format(b, 80, &p));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(byte_counts_read_as_iec_units),
                cmocka_unit_test(rounding_never_shows_1024_of_a_unit),
                cmocka_unit_test(rates_are_per_second),
                cmocka_unit_test(durations_read_as_clock_times),
                cmocka_unit_test(percentages_round_down_and_stay_in_range),
                cmocka_unit_test(a_line_shows_bar_percentage_rate_and_eta),
                cmocka_unit_test(unknown_parts_are_left_out),
                cmocka_unit_test(without_a_fraction_the_bytes_done_show),
                cmocka_unit_test(the_bar_is_full_only_when_done),
                cmocka_unit_test(the_bar_grows_with_the_terminal_up_to_a_limit),
                cmocka_unit_test(a_line_never_wraps),
                cmocka_unit_test(an_unknown_width_means_80_columns),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
