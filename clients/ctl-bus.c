/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "ctl-bus.h"

int log_bus_error(int r, const sd_bus_error *error, const char *format, ...) {
        const char *why;
        va_list ap;

        if (sd_bus_error_is_set(error))
                why = error->message ?: error->name;
        else
                why = strerror(r < 0 ? -r : r);

        va_start(ap, format);
        log_begin_va(format, ap);
        va_end(ap);
        fprintf(stderr, ": %s\n", why);

        if (r < 0)
                return r;
        return sd_bus_error_is_set(error) ? -sd_bus_error_get_errno(error) : -EIO;
}

int bus_new_method_call(sd_bus *bus, const char *path, const char *iface, const char *member,
                        bool interactive, sd_bus_message **ret) {
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, CISTERN_SERVICE, path, iface, member);
        if (r < 0)
                return r;

        r = sd_bus_message_set_allow_interactive_authorization(m, interactive);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(m);
        return 0;
}

int bus_call_long(sd_bus *bus, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply) {
        return sd_bus_call(bus, m, CALL_TIMEOUT_LONG_USEC, error, ret_reply);
}

static int bus_find(sd_bus *bus, const char *member, const char *pool, const char *volume,
                    char **ret_path) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *reply = NULL;
        const char *path;
        char *p;
        int r;

        if (volume)
                r = sd_bus_call_method(bus, CISTERN_SERVICE, CISTERN_ROOT_PATH, CISTERN_MANAGER_IFACE,
                                       member, &error, &reply, "ss", pool, volume);
        else
                r = sd_bus_call_method(bus, CISTERN_SERVICE, CISTERN_ROOT_PATH, CISTERN_MANAGER_IFACE,
                                       member, &error, &reply, "s", pool);
        if (r >= 0)
                r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return volume ? log_bus_error(r, &error, "Failed to find volume %s/%s", pool, volume)
                              : log_bus_error(r, &error, "Failed to find pool %s", pool);

        p = strdup(path);
        if (!p)
                return log_oom();
        *ret_path = p;
        return 0;
}

int bus_find_pool(sd_bus *bus, const char *pool, char **ret_path) {
        return bus_find(bus, "GetPool", pool, NULL, ret_path);
}

int bus_find_volume(sd_bus *bus, const char *pool, const char *volume, char **ret_path) {
        return bus_find(bus, "GetVolume", pool, volume, ret_path);
}

int bus_get_all(sd_bus *bus, const char *path, const char *iface, sd_bus_message **ret_reply) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(bus, CISTERN_SERVICE, path, "org.freedesktop.DBus.Properties",
                               "GetAll", &error, ret_reply, "s", iface);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to read properties of %s", path);
        return 0;
}

static int read_basic_json(sd_bus_message *m, char type, json_object **ret) {
        union {
                uint8_t y;
                int b;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
                const char *s;
                int h;
        } v;
        json_object *j;
        int r;

        r = sd_bus_message_read_basic(m, type, &v);
        if (r < 0)
                return r;

        switch (type) {
        case 'y': j = json_object_new_int(v.y); break;
        case 'b': j = json_object_new_boolean(v.b); break;
        case 'n': j = json_object_new_int(v.n); break;
        case 'q': j = json_object_new_int(v.q); break;
        case 'i': j = json_object_new_int(v.i); break;
        case 'u': j = json_object_new_int64(v.u); break;
        case 'x': j = json_object_new_int64(v.x); break;
        case 't': j = json_object_new_uint64(v.t); break;
        case 'd': j = json_object_new_double(v.d); break;
        case 'h': j = json_object_new_int(v.h); break;
        default:  j = json_object_new_string(v.s); break;       /* s, o, g */
        }
        if (!j)
                return -ENOMEM;

        *ret = j;
        return 0;
}

int bus_read_dict(sd_bus_message *m, const char *contents, bus_dict_entry_reader_t read_entry,
                  void *userdata) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', contents);
        if (r < 0)
                return r;

        /* Entering with NULL contents at the end of the array is -ENXIO, not 0: ask first. */
        while ((r = sd_bus_message_at_end(m, false)) == 0) {
                const char *key;

                r = sd_bus_message_enter_container(m, 'e', NULL);
                if (r < 0)
                        return r;
                r = sd_bus_message_read_basic(m, contents[1], &key);
                if (r < 0)
                        return r;
                r = read_entry(m, key, userdata);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;

        return sd_bus_message_exit_container(m);
}

static int read_dict_entry_json(sd_bus_message *m, const char *key, void *userdata) {
        json_object *value = NULL;
        int r;

        r = bus_message_read_json(m, &value);
        if (r < 0)
                return r;
        if (json_object_object_add(userdata, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

/* a{s…}, a{o…}, a{g…} → a JSON object. */
static int read_dict_json(sd_bus_message *m, const char *contents, json_object **ret) {
        _cleanup_json_put_ json_object *obj = json_object_new_object();
        int r;

        if (!obj)
                return -ENOMEM;

        r = bus_read_dict(m, contents, read_dict_entry_json, obj);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(obj);
        return 0;
}

int bus_read_json_array(sd_bus_message *m, char type, const char *contents,
                        bus_json_reader_t read_element, json_object **ret) {
        _cleanup_json_put_ json_object *a = NULL;
        int r;

        r = sd_bus_message_enter_container(m, type, contents);
        if (r < 0)
                return r;

        a = json_object_new_array();
        if (!a)
                return -ENOMEM;

        while ((r = sd_bus_message_at_end(m, false)) == 0) {
                json_object *e = NULL;

                r = read_element(m, &e);
                if (r < 0)
                        return r;
                if (json_object_array_add(a, e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
        }
        if (r < 0)
                return r;

        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(a);
        return 0;
}

static int read_variant_json(sd_bus_message *m, const char *contents, json_object **ret) {
        _cleanup_json_put_ json_object *j = NULL;
        int r;

        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
        r = bus_message_read_json(m, &j);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(j);
        return 0;
}

int bus_message_read_json(sd_bus_message *m, json_object **ret) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (r == 0)
                return -EBADMSG;

        if (strchr("ybnqiuxtdsogh", type))
                return read_basic_json(m, type, ret);
        if (type == 'a' && contents[0] == '{' && strchr("sog", contents[1]))
                return read_dict_json(m, contents, ret);
        if (type == 'v')
                return read_variant_json(m, contents, ret);
        /* Arrays, structures and non-string-keyed dict entries → JSON arrays. */
        return bus_read_json_array(m, type, contents, bus_message_read_json, ret);
}

static const BusProperty *bus_property_find(const BusProperty *map, const char *name) {
        for (; map->name; map++)
                if (streq(map->name, name))
                        return map;
        return NULL;
}

typedef struct PropertyTarget {
        const BusProperty *map;
        void *userdata;
} PropertyTarget;

static int bus_read_one_property(sd_bus_message *m, const char *name, void *userdata) {
        const PropertyTarget *t = userdata;
        const BusProperty *p;
        const char *contents;
        int r;

        p = bus_property_find(t->map, name);
        if (!p)
                return sd_bus_message_skip(m, "v");

        r = sd_bus_message_peek_type(m, NULL, &contents);
        if (r < 0)
                return r;
        if (!streq(contents, p->signature))
                return log_error_errno(EBADMSG, "Property %s has type '%s', expected '%s'.",
                                       name, contents, p->signature);

        r = sd_bus_message_enter_container(m, 'v', contents);
        if (r < 0)
                return r;
        r = p->read(m, (uint8_t *) t->userdata + p->offset);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int bus_read_properties(sd_bus_message *m, const BusProperty *map, void *userdata) {
        PropertyTarget t = { map, userdata };

        return bus_read_dict(m, "{sv}", bus_read_one_property, &t);
}

int bus_read_string(sd_bus_message *m, void *field) {
        char **p = field, *copy;
        const char *s;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, NULL);
        if (r < 0)
                return r;
        r = sd_bus_message_read_basic(m, type, &s);
        if (r < 0)
                return r;

        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        free(*p);
        *p = copy;
        return 0;
}

int bus_read_strv(sd_bus_message *m, void *field) {
        char ***p = field, **l = NULL;
        int r;

        r = sd_bus_message_read_strv(m, &l);
        if (r < 0)
                return r;
        strv_free(*p);
        *p = l;
        return 0;
}

int bus_read_u64(sd_bus_message *m, void *field) {
        return sd_bus_message_read_basic(m, 't', field);
}

int bus_read_u32(sd_bus_message *m, void *field) {
        return sd_bus_message_read_basic(m, 'u', field);
}

int bus_read_bool(sd_bus_message *m, void *field) {
        int b, r;

        r = sd_bus_message_read_basic(m, 'b', &b);
        if (r < 0)
                return r;
        *(bool *) field = b;
        return 0;
}

int bus_read_double(sd_bus_message *m, void *field) {
        return sd_bus_message_read_basic(m, 'd', field);
}

int bus_read_count(sd_bus_message *m, void *field) {
        const char *path;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "o");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read_basic(m, 'o', &path)) > 0)
                n++;
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;

        *(size_t *) field = n;
        return 0;
}

int bus_read_json(sd_bus_message *m, void *field) {
        json_object **p = field, *j = NULL;
        int r;

        r = bus_message_read_json(m, &j);
        if (r < 0)
                return r;
        json_object_put(*p);
        *p = j;
        return 0;
}
