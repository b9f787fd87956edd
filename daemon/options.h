/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "util.h"

/* Table-driven reading of the a{sv} options every method takes. Each known key has a D-Bus
 * type and a place to store the value; an unknown key, a value of another type or a key given
 * twice is InvalidArgument. Strings and object paths point into the message. */

typedef enum OptionType {
        OPTION_BOOL,    /* "b" → bool */
        OPTION_UINT32,  /* "u" → uint32_t */
        OPTION_UINT64,  /* "t" → uint64_t */
        OPTION_STRING,  /* "s" → const char * */
        OPTION_PATH,    /* "o" → const char * */
} OptionType;

typedef struct OptionSpec {
        const char *key;
        OptionType type;
        size_t offset;  /* of the field in the caller's struct */
} OptionSpec;

#define OPTION(k, t, s, field) { .key = (k), .type = (t), .offset = offsetof(s, field) }

/* Reads an a{sv} from m into target. Bit i of *ret_seen is set when specs[i] was given (at most
 * 32 specs); specs ends with a {} entry. */
int options_read(sd_bus_message *m, const OptionSpec *specs, void *target, uint32_t *ret_seen, sd_bus_error *error);

static inline bool option_seen(uint32_t seen, const OptionSpec *specs, const char *key) {
        for (unsigned i = 0; specs[i].key; i++)
                if (streq(specs[i].key, key))
                        return seen & (UINT32_C(1) << i);
        return false;
}
