/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands about a volume's life cycle and its revisions: start, stop, snapshot,
 * revisions, revert, clone. Those that may move data follow the job they start (ctl-wait.c). */

#include "cisternctl.h"
#include "ctl-wait.h"
#include "output.h"

int verb_start(Context *c, int argc, char *argv[]) {
        return volume_call_simple(c, argv[1], "Start", "start", true);
}

int verb_stop(Context *c, int argc, char *argv[]) {
        return volume_call_simple(c, argv[1], "Stop", "stop", true);
}

int verb_snapshot(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        _cleanup_json_put_ json_object *o = NULL;
        const char *revision;
        int r;

        r = volume_call_empty_options(c, argv[1], "CreateSnapshot", &pool, &volume, &m);
        if (r < 0)
                return r;

        r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m), context_show_progress(c),
                                   &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to snapshot volume %s/%s", pool, volume);

        r = sd_bus_message_read(reply, "s", &revision);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply: %s", strerror(-r));

        /* The bare identifier, so that "rev=$(cisternctl snapshot tank/disk0)" works. */
        if (!c->json) {
                puts(revision);
                return fflush(stdout) == 0 ? 0 : -errno;
        }

        o = json_object_new_object();
        if (!o || json_add(o, "revision", json_object_new_string(revision)) < 0)
                return log_oom();
        return json_print(o);
}

static int revisions_print(const Context *c, sd_bus_message *reply) {
        static const char *const headers[] = { "ID", "CREATED", NULL };
        _cleanup_table_free_ Table *t = table_new(headers, 0);
        _cleanup_json_put_ json_object *a = json_object_new_array();
        const char *id;
        uint64_t created;
        int r;

        if (!t || !a)
                return log_oom();

        r = sd_bus_message_enter_container(reply, 'a', "(st)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(st)", &id, &created)) > 0) {
                _cleanup_json_put_ json_object *o = json_object_new_object();
                char ts[64];
                const char *row[] = { id, format_timestamp(ts, sizeof(ts), created) };

                if (!o ||
                    json_add(o, "id", json_object_new_string(id)) < 0 ||
                    json_add(o, "created", json_object_new_uint64(created)) < 0 ||
                    table_add_row(t, row) < 0 ||
                    json_object_array_add(a, o) < 0)
                        return log_oom();
                o = NULL;       /* a owns it now */
        }
        if (r < 0)
                return log_error_errno(r, "Failed to parse the revisions: %s", strerror(-r));

        return c->json ? json_print(a) : table_print(t);
}

static int revision_remove(Context *c, const char *pool, const char *volume) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        int r;

        r = volume_method_call(c, pool, volume, "RemoveRevision", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "sa{sv}", c->remove, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(c->bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to remove revision %s of volume %s/%s",
                                     c->remove, pool, volume);
        return 0;
}

int verb_revisions(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *reply = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL, *path = NULL;
        sd_bus *bus;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r < 0)
                return r;

        if (c->remove)
                return revision_remove(c, pool, volume);

        r = context_acquire_bus(c, &bus);
        if (r >= 0)
                r = bus_find_volume(bus, pool, volume, &path);
        if (r < 0)
                return r;

        r = sd_bus_get_property(bus, CISTERN_SERVICE, path, CISTERN_VOLUME_IFACE, "Revisions",
                                &error, &reply, "a(st)");
        if (r < 0)
                return log_bus_error(r, &error, "Failed to read the revisions of volume %s/%s", pool, volume);

        return revisions_print(c, reply);
}

int verb_revert(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r < 0)
                return r;
        if (argv[2][0] == '\0')
                return usage_error(c, "The revision must not be empty.");

        r = volume_method_call(c, pool, volume, "Revert", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "sa{sv}", argv[2], 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m), context_show_progress(c),
                                   &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to revert volume %s/%s to revision %s",
                                     pool, volume, argv[2]);
        return 0;
}

int verb_clone(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL, *dest_pool = NULL, *dest_volume = NULL,
                *dest_pool_path = NULL;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r >= 0)
                r = parse_volume_arg(c, argv[2], &dest_pool, &dest_volume);
        if (r < 0)
                return r;

        r = volume_method_call(c, pool, volume, "Clone", &m);
        if (r >= 0)
                r = bus_find_pool(c->bus, dest_pool, &dest_pool_path);
        if (r < 0)
                return r;

        r = sd_bus_message_append(m, "os", dest_pool_path, dest_volume);
        if (r >= 0 && c->revision)
                r = sd_bus_message_append(m, "a{sv}", 1, "revision", "s", c->revision);
        else if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m), context_show_progress(c),
                                   &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to clone volume %s/%s to %s/%s",
                                     pool, volume, dest_pool, dest_volume);

        return print_created_object(c, reply);
}
