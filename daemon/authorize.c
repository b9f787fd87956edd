/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdio.h>

#include "authorize.h"
#include "errors.h"

int authorize(Manager *m, sd_bus_message *msg, const char *action,
              const char *pool, const char *volume, uid_t owner, sd_bus_error *error) {
        char owner_str[16];
        const char *details[9];
        size_t n = 0;

        snprintf(owner_str, sizeof owner_str, "%u", (unsigned) owner);
        details[n++] = "pool";
        details[n++] = pool;
        if (volume) {
                details[n++] = "volume";
                details[n++] = volume;
                details[n++] = "owner";
                details[n++] = owner_str;
        }
        details[n++] = "operation";
        details[n++] = sd_bus_message_get_member(msg);
        details[n] = NULL;

        return polkit_check(m->polkit, msg, action, details, error);
}

int authorize_own(Manager *m, sd_bus_message *msg, const char *action,
                  const char *pool, const char *volume, uid_t owner, sd_bus_error *error) {
        char own_action[128];
        uid_t uid;
        int r;

        r = bus_message_sender_uid(msg, &uid);
        if (r < 0)
                return sd_bus_error_set(error, ERR_NOT_AUTHORIZED, "Could not identify the caller.");
        if (uid == owner) {
                snprintf(own_action, sizeof own_action, "%s-own", action);
                action = own_action;
        }
        return authorize(m, msg, action, pool, volume, owner, error);
}
