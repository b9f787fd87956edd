/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small helpers shared by cisternctl's files. The client deliberately does not include the
 * daemon's headers: it is built and reviewed as a consumer of the public bus API only. */

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _fallthrough_ __attribute__((__fallthrough__))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define STRV_FOREACH(s, l) for (char **s = (l); s && *s; s++)

#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })

/* Not an errno: a command line mistake. Verbs return -ERR_USAGE after printing what was wrong,
 * and main() turns it into exit status 2. */
#define ERR_USAGE 4096

#define USEC_PER_SEC UINT64_C(1000000)

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void strv_free(char **l) {
        STRV_FOREACH(s, l)
                free(*s);
        free(l);
}

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return streq(a, b);
}

static inline const char *strempty(const char *s) {
        return s ?: "";
}

static inline const char *yes_no(bool b) {
        return b ? "yes" : "no";
}

/* qsort() that accepts an empty array given as NULL, which qsort() itself does not. */
static inline void qsort_safe(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
        if (n > 1)
                qsort(base, n, size, cmp);
}

/* Defines "funcp()", a cleanup helper that calls func(*p) when *p is not NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                 \
        static inline void func##p(type *p) {                   \
                if (*p)                                         \
                        func(*p);                               \
        }

/* sd-bus.h brings sd_bus_message_unrefp() and friends itself. */
DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

#define _cleanup_bus_message_unref_ _cleanup_(sd_bus_message_unrefp)
#define _cleanup_json_put_ _cleanup_(json_object_putp)
#define _cleanup_bus_error_free_ _cleanup_(sd_bus_error_free)

/* Messages go to stderr prefixed with the program name, the way coreutils and systemctl do it.
 * Returns -abs(error), so that "return log_error_errno(r, ...)" reads naturally. There is no
 * "%m": callers pass strerror() or the daemon's message explicitly. */
int log_error_errno(int error, const char *format, ...) _printf_(2, 3);

/* Prints "cisternctl: <message>" on stderr without ending the line, for the log functions. */
void log_begin_va(const char *format, va_list ap) _printf_(1, 0);
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

/* Decimal digits only, no sign, within 32 bits. Returns 0, -EINVAL or -ERANGE. */
int parse_uint32(const char *s, uint32_t *ret);
