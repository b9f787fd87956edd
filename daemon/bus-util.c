/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>

#include "bus-util.h"
#include "errors.h"

int bus_property_get_bool(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        int b = *(bool *) userdata;

        return sd_bus_message_append_basic(reply, 'b', &b);
}

void bus_emit_changed_va(sd_bus *bus, const char *path, const char *interface, const char *first, va_list ap) {
        char *names[16];
        size_t n = 0;

        for (const char *s = first; s && n < ELEMENTSOF(names) - 1; s = va_arg(ap, const char *))
                names[n++] = (char *) s;
        names[n] = NULL;
        (void) sd_bus_emit_properties_changed_strv(bus, path, interface, names);
}

int validate_volume_size(Manager *m, uint64_t size, sd_bus_error *error) {
        if (size == 0 || size % 512 != 0)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Size %" PRIu64 " is not a positive multiple of 512 bytes.", size);
        if (size > m->limits.max_volume_size)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Size %" PRIu64 " exceeds the largest volume size, %" PRIu64 " bytes.",
                                         size, m->limits.max_volume_size);
        return 0;
}

int validate_life_cycle(bool save_on_stop, bool snap_on_start, bool has_source, sd_bus_error *error) {
        if (save_on_stop && snap_on_start)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "A volume cannot both snap_on_start and save_on_stop.");
        if (snap_on_start && !has_source)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "A snap_on_start volume needs a source.");
        if (!snap_on_start && has_source)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "Only a snap_on_start volume has a source.");
        return 0;
}

int validate_revisions_to_keep(Manager *m, uint32_t n, sd_bus_error *error) {
        if (n > m->limits.max_revisions_to_keep)
                return sd_bus_error_setf(error, ERR_LIMITS_EXCEEDED, "revisions_to_keep may be at most %u.",
                                         m->limits.max_revisions_to_keep);
        return 0;
}
