/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands about a volume's block device and its filesystems: attach, detach, mount,
 * unmount. */

#include <inttypes.h>

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

/* PART, the optional argument after POOL/VOL: a partition number as the partition table has
 * it, or 0, the default, for a filesystem on the whole device. Whether the partition exists is
 * for the service to say. */
static int parse_partition_arg(const Context *c, int argc, char *argv[], uint32_t *ret) {
        if (argc < 3) {
                *ret = 0;
                return 0;
        }
        if (parse_uint32(argv[2], ret) < 0)
                return usage_error(c, "Invalid partition '%s': expected its number, or 0 for the whole device.",
                                   argv[2]);
        return 0;
}

/* What a message about a mount names: "volume P/V" or "partition N of volume P/V". */
static int mount_target_name(const char *pool, const char *volume, uint32_t partition, char **ret) {
        char *s;
        int r;

        /* asprintf() leaves s undefined on failure: *ret is set on success only. */
        if (partition == 0)
                r = asprintf(&s, "volume %s/%s", pool, volume);
        else
                r = asprintf(&s, "partition %" PRIu32 " of volume %s/%s", partition, pool, volume);
        if (r < 0)
                return log_oom();
        *ret = s;
        return 0;
}

/* The same object as one element of "mounts" in the output of info. */
static int mount_print_json(const char *mount_point, uint32_t partition) {
        _cleanup_json_put_ json_object *o = json_object_new_object();

        if (!o ||
            json_add(o, "partition", json_object_new_int64(partition)) < 0 ||
            json_add(o, "mount_point", json_object_new_string(mount_point)) < 0)
                return log_oom();
        return json_print(o);
}

/* Parses POOL/VOL [PART] and prepares a call of Mount or Unmount, its options still to come. */
static int mount_call_new(Context *c, int argc, char *argv[], const char *member,
                          char **ret_what, uint32_t *ret_partition, sd_bus_message **ret) {
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL, *what = NULL;
        uint32_t partition;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r >= 0)
                r = parse_partition_arg(c, argc, argv, &partition);
        if (r >= 0)
                r = mount_target_name(pool, volume, partition, &what);
        if (r < 0)
                return r;

        r = volume_method_call(c, pool, volume, member, &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "u", partition);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        *ret_what = TAKE_PTR(what);
        *ret_partition = partition;
        *ret = TAKE_PTR(m);
        return 0;
}

int verb_mount(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *what = NULL;
        const char *mount_point;
        uint32_t partition;
        int r;

        r = mount_call_new(c, argc, argv, "Mount", &what, &partition, &m);
        if (r < 0)
                return r;
        /* Without --read-only the service decides: read-only for a stopped volume or a read-only
         * device, writable otherwise. */
        if (c->read_only)
                r = sd_bus_message_append(m, "a{sv}", 1, "read_only", "b", 1);
        else
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(c->bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to mount %s", what);
        r = sd_bus_message_read(reply, "s", &mount_point);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply: %s", strerror(-r));

        if (c->json)
                return mount_print_json(mount_point, partition);
        puts(mount_point);
        return fflush(stdout) == 0 ? 0 : -errno;
}

int verb_unmount(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *what = NULL;
        uint32_t partition;
        int r;

        r = mount_call_new(c, argc, argv, "Unmount", &what, &partition, &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(c->bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to unmount %s", what);
        return 0;
}
