/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands about volumes. */

#include <inttypes.h>

#include "cisternctl.h"
#include "ctl-objects.h"
#include "ctl-wait.h"
#include "output.h"
#include "sizes.h"

/* The block device of an attached volume, NULL when it is not attached. */
static const char *volume_device(const Volume *v) {
        return v->device && *v->device ? v->device : NULL;
}

/* The fields "list" shows for each volume; "info" adds more. */
static json_object *volume_to_json(const Volume *v) {
        _cleanup_json_put_ json_object *o = json_object_new_object();

        if (!o ||
            json_add(o, "pool", json_new_string_or_null(v->pool_name)) < 0 ||
            json_add(o, "name", json_object_new_string(strempty(v->name))) < 0 ||
            json_add(o, "format", json_object_new_string(strempty(v->format))) < 0 ||
            json_add(o, "size", json_object_new_uint64(v->size)) < 0 ||
            json_add(o, "usage", json_object_new_uint64(v->usage)) < 0 ||
            json_add(o, "state", json_object_new_string(strempty(v->state))) < 0 ||
            json_add(o, "owner", json_object_new_int64(v->owner)) < 0 ||
            json_add(o, "read_only", json_object_new_boolean(v->read_only)) < 0 ||
            json_add(o, "save_on_stop", json_object_new_boolean(v->save_on_stop)) < 0 ||
            json_add(o, "snap_on_start", json_object_new_boolean(v->snap_on_start)) < 0 ||
            json_add(o, "source", json_new_string_or_null(v->source)) < 0 ||
            json_add(o, "revisions_to_keep", json_object_new_int64(v->revisions_to_keep)) < 0 ||
            json_add(o, "created", json_object_new_uint64(v->created)) < 0 ||
            json_add(o, "outdated", json_object_new_boolean(v->outdated)) < 0 ||
            json_add(o, "device", json_new_string_or_null(volume_device(v))) < 0)
                return NULL;

        return TAKE_PTR(o);
}

static bool volume_selected(const Volume *v, const char *pool_path) {
        return !pool_path || streq_ptr(v->pool_path, pool_path);
}

static int list_json(const Objects *objects, const char *pool_path) {
        _cleanup_json_put_ json_object *a = json_object_new_array();

        if (!a)
                return log_oom();

        for (size_t i = 0; i < objects->n_volumes; i++)
                if (volume_selected(&objects->volumes[i], pool_path) &&
                    json_append(a, volume_to_json(&objects->volumes[i])) < 0)
                        return log_oom();

        return json_print(a);
}

static int list_text(const Objects *objects, const char *pool_path) {
        static const char *const headers[] = { "POOL", "VOLUME", "FORMAT", "SIZE", "USAGE", "STATE", "OWNER", "DEVICE", NULL };
        _cleanup_table_free_ Table *t = table_new(headers, COLUMN(3) | COLUMN(4));

        if (!t)
                return log_oom();

        for (size_t i = 0; i < objects->n_volumes; i++) {
                const Volume *v = &objects->volumes[i];
                char size[FORMAT_SIZE_MAX], usage[FORMAT_SIZE_MAX], owner[64];
                const char *row[] = {
                        v->pool_name, v->name, v->format,
                        format_size(size, v->size), format_size(usage, v->usage),
                        v->state, format_owner(owner, sizeof(owner), v->owner),
                        volume_device(v) ?: "-",
                };

                if (volume_selected(v, pool_path) && table_add_row(t, row) < 0)
                        return log_oom();
        }

        return table_print(t);
}

int verb_list(Context *c, int argc, char *argv[]) {
        _cleanup_(objects_done) Objects objects = {};
        _cleanup_free_ char *pool_path = NULL;
        sd_bus *bus;
        int r;

        r = context_acquire_bus(c, &bus);
        if (r < 0)
                return r;

        /* Asking first makes "list nosuchpool" an error rather than an empty list. */
        if (argc > 1) {
                r = bus_find_pool(bus, argv[1], &pool_path);
                if (r < 0)
                        return r;
        }

        /* One GetManagedObjects for everything: one round trip, however many volumes. */
        r = context_get_objects(c, &objects);
        if (r < 0)
                return r;

        return c->json ? list_json(&objects, pool_path) : list_text(&objects, pool_path);
}

static int create_options_append(const Context *c, sd_bus_message *m, const char *source_path) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && c->format)
                r = sd_bus_message_append(m, "{sv}", "format", "s", c->format);
        /* A snap-on-start volume cannot also save on stop; --snap-on-start implies it. */
        if (r >= 0 && (c->no_save_on_stop || c->snap_on_start))
                r = sd_bus_message_append(m, "{sv}", "save_on_stop", "b", 0);
        if (r >= 0 && c->snap_on_start)
                r = sd_bus_message_append(m, "{sv}{sv}", "snap_on_start", "b", 1, "source", "o", source_path);
        if (r >= 0 && c->read_only)
                r = sd_bus_message_append(m, "{sv}", "read_only", "b", 1);
        if (r >= 0 && c->preallocate)
                r = sd_bus_message_append(m, "{sv}", "preallocate", "b", 1);
        if (r >= 0 && (c->options_seen & OPTION_OWNER))
                r = sd_bus_message_append(m, "{sv}", "owner", "u", c->owner);
        if (r >= 0 && (c->options_seen & OPTION_REVISIONS_TO_KEEP))
                r = sd_bus_message_append(m, "{sv}", "revisions_to_keep", "u", c->revisions_to_keep);
        if (r < 0)
                return r;

        return sd_bus_message_close_container(m);
}

typedef struct CreateArgs {
        char *pool, *volume;
        char *source_pool, *source_volume;
        uint64_t size;
} CreateArgs;

static void create_args_done(CreateArgs *a) {
        free(a->pool);
        free(a->volume);
        free(a->source_pool);
        free(a->source_volume);
}

static int create_args_parse(const Context *c, char *argv[], CreateArgs *a) {
        int r;

        r = parse_volume_arg(c, argv[1], &a->pool, &a->volume);
        if (r < 0)
                return r;
        r = parse_size_arg(c, argv[2], &a->size);
        if (r < 0)
                return r;

        if (c->snap_on_start != !!c->source)
                return usage_error(c, "--snap-on-start and --source= must be given together.");
        if (c->source)
                return parse_volume_arg(c, c->source, &a->source_pool, &a->source_volume);
        return 0;
}

int verb_create(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *pool_path = NULL, *source_path = NULL;
        _cleanup_(create_args_done) CreateArgs a = {};
        sd_bus *bus;
        int r;

        r = create_args_parse(c, argv, &a);
        if (r < 0)
                return r;

        r = context_acquire_bus(c, &bus);
        if (r >= 0)
                r = bus_find_pool(bus, a.pool, &pool_path);
        if (r >= 0 && c->source)
                r = bus_find_volume(bus, a.source_pool, a.source_volume, &source_path);
        if (r < 0)
                return r;

        r = bus_new_method_call(bus, pool_path, CISTERN_POOL_IFACE, "CreateVolume",
                                context_interactive(c), &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "st", a.volume, a.size);
        if (r >= 0)
                r = create_options_append(c, m, source_path);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to create volume %s/%s", a.pool, a.volume);

        return print_created_object(c, reply);
}

int volume_method_call(Context *c, const char *pool, const char *volume, const char *member,
                              sd_bus_message **ret) {
        _cleanup_free_ char *path = NULL;
        sd_bus *bus;
        int r;

        r = context_acquire_bus(c, &bus);
        if (r >= 0)
                r = bus_find_volume(bus, pool, volume, &path);
        if (r < 0)
                return r;

        r = bus_new_method_call(bus, path, CISTERN_VOLUME_IFACE, member, context_interactive(c), ret);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));
        return 0;
}

int volume_call_empty_options(Context *c, const char *arg, const char *member,
                              char **ret_pool, char **ret_volume, sd_bus_message **ret) {
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        int r;

        r = parse_volume_arg(c, arg, &pool, &volume);
        if (r < 0)
                return r;

        r = volume_method_call(c, pool, volume, member, &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        *ret_pool = TAKE_PTR(pool);
        *ret_volume = TAKE_PTR(volume);
        *ret = TAKE_PTR(m);
        return 0;
}

int volume_call_simple(Context *c, const char *arg, const char *member, const char *what, bool follow_job) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        int r;

        r = volume_call_empty_options(c, arg, member, &pool, &volume, &m);
        if (r < 0)
                return r;

        if (follow_job)
                r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m), context_show_progress(c),
                                           &error, NULL);
        else
                r = bus_call_long(c->bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to %s volume %s/%s", what, pool, volume);
        return 0;
}

int verb_remove(Context *c, int argc, char *argv[]) {
        return volume_call_simple(c, argv[1], "Remove", "remove", false);
}

int verb_resize(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        uint64_t size;
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r >= 0)
                r = parse_size_arg(c, argv[2], &size);
        if (r < 0)
                return r;

        r = volume_method_call(c, pool, volume, "Resize", &m);
        if (r < 0)
                return r;
        if (c->allow_shrink)
                r = sd_bus_message_append(m, "ta{sv}", size, 1, "allow_shrink", "b", 1);
        else
                r = sd_bus_message_append(m, "ta{sv}", size, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(c->bus, m, &error, NULL);
        if (r < 0) {
                r = log_bus_error(r, &error, "Failed to resize volume %s/%s", pool, volume);
                if (!c->allow_shrink && sd_bus_error_has_name(&error, CISTERN_ERROR_WOULD_SHRINK))
                        fprintf(stderr, "Add --allow-shrink to shrink it anyway; "
                                "everything beyond the new size is lost.\n");
                return r;
        }
        return 0;
}

/* The service checks the format's name (it knows which it supports) and that the volume is
 * stopped and detached; the image is rewritten as a job, which we follow. */
int verb_convert(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        const char *format = argv[2];
        int r;

        r = parse_volume_arg(c, argv[1], &pool, &volume);
        if (r < 0)
                return r;
        if (format[0] == '\0')
                return usage_error(c, "The format must not be empty: give raw or qcow2.");

        r = volume_method_call(c, pool, volume, "Convert", &m);
        if (r < 0)
                return r;
        if (c->compress)
                r = sd_bus_message_append(m, "sa{sv}", format, 1, "compress", "b", 1);
        else
                r = sd_bus_message_append(m, "sa{sv}", format, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_with_progress(c->bus, m, sd_bus_message_get_path(m), context_show_progress(c),
                                   &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to convert volume %s/%s to %s", pool, volume, format);
        return 0;
}

/* One line per element of a revisions, partitions or mounts array; "none" when empty. */
static char *format_list(json_object *array, void (*line)(FILE *f, json_object *e)) {
        size_t n = array ? json_object_array_length(array) : 0, len = 0;
        char *s = NULL;
        FILE *f;

        if (n == 0)
                return strdup("none");

        f = open_memstream(&s, &len);
        if (!f)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        fputc('\n', f);
                line(f, json_object_array_get_idx(array, i));
        }
        if (fclose(f) != 0) {
                free(s);
                return NULL;
        }
        return s;
}

static void revision_line(FILE *f, json_object *e) {
        char ts[64];

        fprintf(f, "%s (%s)", json_string_of(e, "id"),
                format_timestamp(ts, sizeof(ts), json_u64_of(e, "created")));
}

static void partition_line(FILE *f, json_object *e) {
        char size[FORMAT_SIZE_MAX], start[FORMAT_SIZE_MAX];
        const char *fstype = json_string_of(e, "fstype");

        fprintf(f, "%" PRIu64 ": %s, %s at %s, %s", json_u64_of(e, "number"),
                json_string_of(e, "device"),
                format_size(size, json_u64_of(e, "size")),
                format_size(start, json_u64_of(e, "start")),
                *fstype ? fstype : "no file system");
}

static void mount_line(FILE *f, json_object *e) {
        uint64_t partition = json_u64_of(e, "partition");

        if (partition == 0)
                fprintf(f, "whole device on %s", json_string_of(e, "mount_point"));
        else
                fprintf(f, "partition %" PRIu64 " on %s", partition, json_string_of(e, "mount_point"));
}

static int kv_add_list(KeyValues *kv, const char *label, json_object *array,
                       void (*line)(FILE *f, json_object *e)) {
        _cleanup_free_ char *s = format_list(array, line);

        if (!s)
                return -ENOMEM;
        return kv_add(kv, label, "%s", s);
}

static int kv_add_size(KeyValues *kv, const char *label, uint64_t bytes) {
        char buf[FORMAT_SIZE_MAX];

        return kv_add(kv, label, "%s (%" PRIu64 " bytes)", format_size(buf, bytes), bytes);
}

static int info_text_volume(KeyValues *kv, const Volume *v) {
        char owner[64], created[64];
        const char *source = v->source;

        if (!source)
                source = v->source_path && !streq(v->source_path, "/") ? v->source_path : "-";

        if (kv_add(kv, "Name", "%s", strempty(v->name)) < 0 ||
            kv_add(kv, "Pool", "%s", strempty(v->pool_name)) < 0 ||
            kv_add(kv, "Format", "%s", strempty(v->format)) < 0 ||
            kv_add_size(kv, "Size", v->size) < 0 ||
            kv_add_size(kv, "Usage", v->usage) < 0 ||
            kv_add(kv, "State", "%s", strempty(v->state)) < 0 ||
            kv_add(kv, "Owner", "%s (%" PRIu32 ")", format_owner(owner, sizeof(owner), v->owner), v->owner) < 0 ||
            kv_add(kv, "Read only", "%s", yes_no(v->read_only)) < 0 ||
            kv_add(kv, "Save on stop", "%s", yes_no(v->save_on_stop)) < 0 ||
            kv_add(kv, "Snap on start", "%s", yes_no(v->snap_on_start)) < 0 ||
            kv_add(kv, "Source", "%s", source) < 0 ||
            kv_add(kv, "Outdated", "%s", yes_no(v->outdated)) < 0 ||
            kv_add(kv, "Created", "%s", format_timestamp(created, sizeof(created), v->created)) < 0 ||
            kv_add(kv, "Revisions to keep", "%" PRIu32, v->revisions_to_keep) < 0 ||
            kv_add_list(kv, "Revisions", v->revisions, revision_line) < 0 ||
            kv_add(kv, "Device", "%s", volume_device(v) ?: "-") < 0 ||
            kv_add_list(kv, "Partitions", v->partitions, partition_line) < 0 ||
            kv_add_list(kv, "Mounts", v->mounts, mount_line) < 0 ||
            kv_add(kv, "Object", "%s", v->path) < 0)
                return -ENOMEM;
        return 0;
}

/* Labels of Volume.Info() keys where the plain spelling would mislead or read badly: a qcow2
 * image's internal snapshots are no revisions of the volume. */
static const char *const info_labels[][2] = {
        { "extended_l2",  "Extended L2" },
        { "l1_entries",   "L1 entries" },
        { "snapshots",    "Internal snapshots" },
};

/* Volume.Info() keys as labels: "virtual_size" → "Virtual size", keys the service may add later
 * too. Values are shown by type; a number under a key ending in "_size" is a byte count. */
static int info_text_image_entry(KeyValues *kv, const char *key, json_object *value) {
        _cleanup_free_ char *label = NULL;
        size_t l = strlen(key);

        for (size_t i = 0; i < ELEMENTSOF(info_labels) && !label; i++)
                if (streq(key, info_labels[i][0]))
                        label = strdup(info_labels[i][1]);
        if (!label) {
                label = strdup(key);
                if (!label)
                        return -ENOMEM;
                for (char *p = label; *p; p++)
                        if (*p == '_')
                                *p = ' ';
                if (label[0] >= 'a' && label[0] <= 'z')
                        label[0] -= 'a' - 'A';
        }

        switch (json_object_get_type(value)) {
        case json_type_string:
                return kv_add(kv, label, "%s", json_object_get_string(value));
        case json_type_boolean:
                return kv_add(kv, label, "%s", yes_no(json_object_get_boolean(value)));
        case json_type_int:
                if (l > 5 && streq(key + l - 5, "_size"))
                        return kv_add_size(kv, label, json_object_get_uint64(value));
                _fallthrough_;
        default:
                return kv_add(kv, label, "%s",
                              json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN |
                                                                    JSON_C_TO_STRING_NOSLASHESCAPE));
        }
}

static int info_text(const Volume *v, json_object *info) {
        _cleanup_kv_free_ KeyValues *kv = kv_new(), *image = kv_new();
        int r;

        if (!kv || !image || info_text_volume(kv, v) < 0)
                return log_oom();

        json_object_object_foreach(info, key, value)
                if (info_text_image_entry(image, key, value) < 0)
                        return log_oom();

        r = kv_print(kv);
        if (r < 0)
                return r;

        printf("\nImage, as read from the image itself:\n");
        return kv_print(image);
}

static int info_json(const Volume *v, json_object *info) {
        _cleanup_json_put_ json_object *o = volume_to_json(v);

        if (!o ||
            json_add(o, "revisions", json_object_get(v->revisions) ?: json_object_new_array()) < 0 ||
            json_add(o, "partitions", json_object_get(v->partitions) ?: json_object_new_array()) < 0 ||
            json_add(o, "mounts", json_object_get(v->mounts) ?: json_object_new_array()) < 0 ||
            json_add(o, "info", json_object_get(info)) < 0)
                return log_oom();

        return json_print(o);
}

int verb_info(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        _cleanup_json_put_ json_object *info = NULL;
        _cleanup_(volume_done) Volume v = {};
        const char *path;
        int r;

        r = volume_call_empty_options(c, argv[1], "Info", &pool, &volume, &m);
        if (r < 0)
                return r;

        path = sd_bus_message_get_path(m);
        r = volume_get(c->bus, path, &v);
        if (r < 0)
                return r;

        r = bus_call_long(c->bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to read the image of volume %s/%s", pool, volume);
        r = bus_message_read_json(reply, &info);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the image information: %s", strerror(-r));

        return c->json ? info_json(&v, info) : info_text(&v, info);
}
