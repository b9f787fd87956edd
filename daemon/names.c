/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "names.h"

static bool char_is_alnum(char c) {
        /* Not isalnum(): its answer depends on the locale. */
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool name_is_valid(const char *s) {
        size_t n;

        if (!s || !char_is_alnum(s[0]))
                return false;
        for (n = 1; s[n]; n++) {
                if (n >= NAME_MAX_LENGTH)
                        return false;
                if (!char_is_alnum(s[n]) && !strchr("_.-", s[n]))
                        return false;
        }
        return true;
}
