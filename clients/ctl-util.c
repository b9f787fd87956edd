/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "ctl-util.h"

void log_begin_va(const char *format, va_list ap) {
        fprintf(stderr, "%s: ", program_invocation_short_name);
        vfprintf(stderr, format, ap);
}

int log_error_errno(int error, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        log_begin_va(format, ap);
        va_end(ap);
        fputc('\n', stderr);

        return error < 0 ? error : -error;
}

int parse_uint32(const char *s, uint32_t *ret) {
        uint64_t v = 0;

        if (!s || *s == '\0')
                return -EINVAL;

        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (uint64_t) (*p - '0');
                if (v > UINT32_MAX)
                        return -ERANGE;
        }

        *ret = (uint32_t) v;
        return 0;
}
