/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Text for the progress bar cisternctl draws on a terminal while a long operation runs. Kept
 * free of the bus and the terminal so that tests can link it alone. */

#define PROGRESS_UNKNOWN UINT64_MAX

typedef struct ProgressInfo {
        double fraction;                /* 0…1; negative when not known */
        uint64_t bytes_done;
        uint64_t rate;                  /* bytes/s; 0 when not known */
        uint64_t remaining_usec;        /* PROGRESS_UNKNOWN when not known */
} ProgressInfo;

/* Room for format_iec()'s and format_rate()'s results ("1023 KiB/s"); fits any 64-bit value. */
#define FORMAT_IEC_MAX 32
#define FORMAT_DURATION_MAX 32
#define PROGRESS_LINE_MAX 256

/* "512 B", "1.5 KiB", "120 MiB": one decimal below 10, none above, powers of 1024. */
char *format_iec(char buf[static FORMAT_IEC_MAX], uint64_t bytes);
/* "120 MiB/s". */
char *format_rate(char buf[static FORMAT_IEC_MAX], uint64_t bytes_per_sec);
/* "0:12", "12:34", "1:02:03", rounded up to whole seconds. */
char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec);

/* 0…100, rounded down: 100 only when all is done. Out-of-range values are clamped. */
unsigned progress_percent(double fraction);

/* "[#####     ] 42%  120 MiB/s  ETA 0:12": the parts that are not known are left out; with no
 * fraction, the bar stays empty and the bytes done stand where the percentage would. The line
 * is at most columns - 1 characters, so that it never wraps (80 when columns is 0). The
 * percentage is rounded down: 100% only when all is done. Returns buf. */
char *progress_format(char buf[static PROGRESS_LINE_MAX], unsigned columns, const ProgressInfo *p);
