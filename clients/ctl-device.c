/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands about a volume's block device: attach, detach. */

#include "cisternctl.h"
#include "ctl-objects.h"
#include "output.h"

static int attach_options_append(const Context *c, sd_bus_message *m) {
        int r;

        /* Without --read-only the service decides: writable for a started volume, read-only for
         * a stopped one, whose committed image is never written. */
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && c->read_only)
                r = sd_bus_message_append(m, "{sv}", "read_only", "b", 1);
        if (r >= 0 && c->no_partitions)
                r = sd_bus_message_append(m, "{sv}", "partitions", "b", 0);
        if (r < 0)
                return r;

        return sd_bus_message_close_container(m);
}

/* The device, then one line per partition: "NODE FSTYPE", or the node alone when no filesystem
 * is known, so that "while read -r node fstype" reads it. */
static int attach_print_text(const char *device, json_object *partitions) {
        size_t n = partitions ? json_object_array_length(partitions) : 0;

        puts(device);
        for (size_t i = 0; i < n; i++) {
                json_object *p = json_object_array_get_idx(partitions, i);
                const char *fstype = json_string_of(p, "fstype");

                printf("%s%s%s\n", json_string_of(p, "device"), *fstype ? " " : "", fstype);
        }
        return fflush(stdout) == 0 ? 0 : -errno;
}

static int attach_print_json(const char *device, json_object *partitions) {
        _cleanup_json_put_ json_object *o = json_object_new_object();

        if (!o ||
            json_add(o, "device", json_object_new_string(device)) < 0 ||
            json_add(o, "partitions", json_object_get(partitions) ?: json_object_new_array()) < 0)
                return log_oom();
        return json_print(o);
}

int verb_attach(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        _cleanup_(volume_done) Volume v = {};
        const char *device;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r < 0)
                return r;

        r = volume_method_call(c, pool, volume, "Attach", &m);
        if (r < 0)
                return r;
        r = attach_options_append(c, m);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(c->bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to attach volume %s/%s", pool, volume);
        r = sd_bus_message_read(reply, "s", &device);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply: %s", strerror(-r));

        /* The reply carries the device only; its partitions are in the volume's properties,
         * complete by the time the service replies. */
        r = volume_get(c->bus, sd_bus_message_get_path(m), &v);
        if (r < 0)
                return r;

        return c->json ? attach_print_json(device, v.partitions) : attach_print_text(device, v.partitions);
}

int verb_detach(Context *c, int argc, char *argv[]) {
        return volume_call_simple(c, argv[1], "Detach", "detach", false);
}
