/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>

#include "sizes.h"

/* Suffix letters in order; the n-th one (from 0) means 1024^(n+1). */
static const char units[] = "KMGTPE";

static bool ascii_isdigit(char c) {
        return c >= '0' && c <= '9';
}

static char ascii_toupper(char c) {
        return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

/* Maps "", "B", "K", "KiB", "g", "gib"... to a power of two. "KB" and friends are refused on
 * purpose: whether they mean 1000 or 1024 is a guess we do not want to make for someone. */
static int parse_suffix(const char *s, unsigned *ret_shift) {
        if (s[0] == '\0' || (ascii_toupper(s[0]) == 'B' && s[1] == '\0')) {
                *ret_shift = 0;
                return 0;
        }

        for (unsigned i = 0; units[i]; i++) {
                if (ascii_toupper(s[0]) != units[i])
                        continue;
                if (s[1] != '\0' &&
                    !(ascii_toupper(s[1]) == 'I' && ascii_toupper(s[2]) == 'B' && s[3] == '\0'))
                        return -EINVAL;
                *ret_shift = 10 * (i + 1);
                return 0;
        }
        return -EINVAL;
}

/* Reads the digits at *p into *ret, advancing *p. Returns how many there were, or -ERANGE when
 * the value does not fit in 64 bits. */
static int parse_digits(const char **p, uint64_t *ret) {
        uint64_t v = 0;
        int n = 0;

        for (; ascii_isdigit(**p); (*p)++, n++) {
                unsigned d = **p - '0';

                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }

        *ret = v;
        return n;
}

int parse_size(const char *s, uint64_t *ret) {
        uint64_t whole, frac = 0, frac_scale = 1, v;
        const char *p = s;
        unsigned shift;
        int r;

        if (!s || !ascii_isdigit(*p))   /* no sign, no space, no ".5" */
                return -EINVAL;

        r = parse_digits(&p, &whole);
        if (r < 0)
                return r;

        if (*p == '.') {
                p++;
                r = parse_digits(&p, &frac);
                /* Up to 18 digits keep frac_scale within 64 bits; nobody types more. */
                if (r <= 0 || r > 18)
                        return -EINVAL;
                for (int k = 0; k < r; k++)
                        frac_scale *= 10;
        }

        r = parse_suffix(p, &shift);
        if (r < 0)
                return r;

        if (shift > 0 && whole > (UINT64_MAX >> shift))
                return -ERANGE;
        v = whole << shift;

        if (frac > 0) {
                unsigned __int128 f = (unsigned __int128) frac << shift;
                uint64_t add;

                if (f % frac_scale != 0)        /* "0.1K" would be 102.4 bytes */
                        return -EINVAL;
                add = (uint64_t) (f / frac_scale);
                if (v > UINT64_MAX - add)
                        return -ERANGE;
                v += add;
        }

        *ret = v;
        return 0;
}

char *format_size(char buf[static FORMAT_SIZE_MAX], uint64_t bytes) {
        unsigned i = 0, shift, tenths;
        uint64_t whole, rem;

        if (bytes < 1024) {
                snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 "B", bytes);
                return buf;
        }

        /* The largest unit that is not bigger than the value. */
        while (units[i + 1] && (bytes >> (10 * (i + 2))) != 0)
                i++;

        shift = 10 * (i + 1);
        whole = bytes >> shift;
        rem = bytes & ((UINT64_C(1) << shift) - 1);
        /* rem < 2^60, so rem * 10 + 2^59 stays below 2^64. */
        tenths = (unsigned) ((rem * 10 + (UINT64_C(1) << (shift - 1))) >> shift);
        if (tenths == 10) {
                whole++;
                tenths = 0;
                if (whole == 1024 && units[i + 1]) {    /* 1023.96K reads better as 1.0M */
                        whole = 1;
                        i++;
                }
        }

        snprintf(buf, FORMAT_SIZE_MAX, "%" PRIu64 ".%u%c", whole, tenths, units[i]);
        return buf;
}
