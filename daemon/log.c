/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "log.h"

static int max_level = LOG_INFO;

static const char *const level_names[] = {
        [LOG_ERR] = "err",
        [LOG_WARNING] = "warning",
        [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",
        [LOG_DEBUG] = "debug",
};

int log_parse_level(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
                if (level_names[i] && streq(level_names[i], s))
                        return (int) i;
        return -EINVAL;
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_internal(int level, int error, const char *file, int line, const char *format, ...) {
        int e = error < 0 ? -error : error;

        if (level <= max_level) {
                char buf[2048];
                va_list ap;

                /* Let "%m" print the error we were given rather than whatever errno holds. */
                errno = e;
                va_start(ap, format);
                vsnprintf(buf, sizeof buf, format, ap);
                va_end(ap);
                /* Under systemd stderr goes to the journal, which reads the priority prefix. */
                if (getenv("JOURNAL_STREAM"))
                        fprintf(stderr, "<%d>%s\n", level, buf);
                else
                        fprintf(stderr, "cisternd: %s\n", buf);
        }
        return -e;
}

usec_t now_usec(int clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}
