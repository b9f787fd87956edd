/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "progress.h"

#define USEC_PER_SEC UINT64_C(1000000)
#define BAR_MIN 10
#define BAR_MAX 40

static const char units[] = "KMGTPE";

char *format_iec(char buf[static FORMAT_IEC_MAX], uint64_t bytes) {
        unsigned i = 0;
        double v;

        if (bytes < 1024) {
                snprintf(buf, FORMAT_IEC_MAX, "%" PRIu64 " B", bytes);
                return buf;
        }

        v = (double) bytes / 1024;
        while (units[i + 1] && v >= 1024) {
                v /= 1024;
                i++;
        }

        /* Rounding must not print "1024 KiB" or "10.0 MiB". */
        if (v >= 1023.5 && units[i + 1]) {
                v /= 1024;
                i++;
        }
        if (v < 9.95)
                snprintf(buf, FORMAT_IEC_MAX, "%.1f %ciB", v, units[i]);
        else
                snprintf(buf, FORMAT_IEC_MAX, "%.0f %ciB", v, units[i]);
        return buf;
}

char *format_rate(char buf[static FORMAT_IEC_MAX], uint64_t bytes_per_sec) {
        char s[FORMAT_IEC_MAX];

        snprintf(buf, FORMAT_IEC_MAX, "%s/s", format_iec(s, bytes_per_sec));
        return buf;
}

char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec) {
        uint64_t s = usec / USEC_PER_SEC + (usec % USEC_PER_SEC != 0);

        if (s < 3600)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
        else
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
                         s / 3600, s / 60 % 60, s % 60);
        return buf;
}

unsigned progress_percent(double fraction) {
        if (!(fraction > 0))            /* also NaN */
                return 0;
        if (fraction >= 1)
                return 100;
        /* 0.29 * 100 is 28.999…: a hair more, so that it reads 29. */
        return (unsigned) (fraction * 100 + 1e-9);
}

/* What stands right of the bar: " 42%  120 MiB/s  ETA 0:12". */
static void format_tail(char *buf, size_t len, const ProgressInfo *p) {
        char what[FORMAT_IEC_MAX], rate[FORMAT_IEC_MAX], eta[FORMAT_DURATION_MAX];
        size_t n;

        if (p->fraction >= 0)
                snprintf(what, sizeof(what), "%u%%", progress_percent(p->fraction));
        else
                format_iec(what, p->bytes_done);
        n = (size_t) snprintf(buf, len, " %s", what);

        if (p->rate > 0 && n < len)
                n += (size_t) snprintf(buf + n, len - n, "  %s", format_rate(rate, p->rate));
        if (p->remaining_usec != PROGRESS_UNKNOWN && n < len)
                snprintf(buf + n, len - n, "  ETA %s", format_duration(eta, p->remaining_usec));
}

char *progress_format(char buf[static PROGRESS_LINE_MAX], unsigned columns, const ProgressInfo *p) {
        ProgressInfo q = *p;
        char tail[PROGRESS_LINE_MAX], bar[BAR_MAX + 1], line[BAR_MAX + 2 + PROGRESS_LINE_MAX];
        size_t width, filled = 0, max, n;

        if (q.fraction > 1)
                q.fraction = 1;
        format_tail(tail, sizeof(tail), &q);

        if (columns == 0)
                columns = 80;
        max = columns - 1 < PROGRESS_LINE_MAX - 1 ? columns - 1 : PROGRESS_LINE_MAX - 1;

        /* The bar takes what the text leaves, within limits; a narrow terminal cuts the text. */
        width = max > strlen(tail) + 2 + BAR_MIN ? max - strlen(tail) - 2 : BAR_MIN;
        if (width > BAR_MAX)
                width = BAR_MAX;
        if (q.fraction >= 0)
                filled = (size_t) (q.fraction * (double) width);

        memset(bar, '#', filled);
        memset(bar + filled, ' ', width - filled);
        bar[width] = '\0';

        snprintf(line, sizeof(line), "[%s]%s", bar, tail);
        n = strlen(line);
        if (n > max)
                n = max;
        memcpy(buf, line, n);
        buf[n] = '\0';
        return buf;
}
