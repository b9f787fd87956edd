/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stddef.h>

#include "errors.h"
#include "options.h"

static const char *const option_signatures[] = {
        [OPTION_BOOL] = "b",
        [OPTION_UINT32] = "u",
        [OPTION_UINT64] = "t",
        [OPTION_STRING] = "s",
        [OPTION_PATH] = "o",
};

static int option_read_value(sd_bus_message *m, const OptionSpec *spec, void *target) {
        uint8_t *field = (uint8_t *) target + spec->offset;
        int r, b;

        switch (spec->type) {
        case OPTION_BOOL:
                r = sd_bus_message_read_basic(m, 'b', &b);
                if (r >= 0)
                        *(bool *) field = b;
                return r;
        case OPTION_UINT32:
                return sd_bus_message_read_basic(m, 'u', field);
        case OPTION_UINT64:
                return sd_bus_message_read_basic(m, 't', field);
        case OPTION_STRING:
                return sd_bus_message_read_basic(m, 's', field);
        case OPTION_PATH:
                return sd_bus_message_read_basic(m, 'o', field);
        }
        return -EINVAL;
}

static int option_read_one(sd_bus_message *m, const OptionSpec *specs, void *target, uint32_t *seen, sd_bus_error *error) {
        const char *key, *contents;
        unsigned i;
        int r;

        r = sd_bus_message_read_basic(m, 's', &key);
        if (r < 0)
                return r;
        for (i = 0; specs[i].key; i++)
                if (streq(specs[i].key, key))
                        break;
        if (!specs[i].key)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Unknown option '%s'.", key);
        if (*seen & (UINT32_C(1) << i))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Option '%s' given twice.", key);

        r = sd_bus_message_peek_type(m, NULL, &contents);
        if (r < 0)
                return r;
        if (!streq(contents, option_signatures[specs[i].type]))
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Option '%s' must be of type '%s', not '%s'.",
                                         key, option_signatures[specs[i].type], contents);

        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
        r = option_read_value(m, &specs[i], target);
        if (r < 0)
                return r;
        *seen |= UINT32_C(1) << i;
        return sd_bus_message_exit_container(m);
}

int options_read(sd_bus_message *m, const OptionSpec *specs, void *target, uint32_t *ret_seen, sd_bus_error *error) {
        uint32_t seen = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = option_read_one(m, specs, target, &seen, error);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (ret_seen)
                *ret_seen = seen;
        return 0;
}
