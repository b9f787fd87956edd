/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands about the service itself and its pools. */

#include "cisternctl.h"
#include "ctl-objects.h"
#include "output.h"
#include "sizes.h"

static int status_json(const ManagerInfo *info) {
        _cleanup_json_put_ json_object *o = json_object_new_object(), *drivers = json_new_strv(info->drivers);

        if (!o || !drivers ||
            json_add(o, "version", json_object_new_string(strempty(info->version))) < 0 ||
            json_add(o, "drivers", TAKE_PTR(drivers)) < 0 ||
            json_add(o, "pools", json_object_new_uint64(info->n_pools)) < 0 ||
            json_add(o, "jobs", json_object_new_uint64(info->n_jobs)) < 0)
                return log_oom();

        return json_print(o);
}

static int status_text(const ManagerInfo *info) {
        _cleanup_kv_free_ KeyValues *kv = kv_new();
        _cleanup_free_ char *drivers = NULL;
        size_t len = 0;
        FILE *f;

        if (!kv)
                return log_oom();

        f = open_memstream(&drivers, &len);
        if (!f)
                return log_oom();
        STRV_FOREACH(d, info->drivers)
                fprintf(f, "%s%s", d == info->drivers ? "" : " ", *d);
        if (fclose(f) != 0)
                return log_oom();

        if (kv_add(kv, "Version", "%s", strempty(info->version)) < 0 ||
            kv_add(kv, "Drivers", "%s", drivers) < 0 ||
            kv_add(kv, "Pools", "%zu", info->n_pools) < 0 ||
            kv_add(kv, "Jobs", "%zu", info->n_jobs) < 0)
                return log_oom();

        return kv_print(kv);
}

int verb_status(Context *c, int argc, char *argv[]) {
        _cleanup_(manager_info_done) ManagerInfo info = {};
        sd_bus *bus;
        int r;

        r = context_acquire_bus(c, &bus);
        if (r < 0)
                return r;

        r = manager_info_get(bus, &info);
        if (r < 0)
                return r;

        return c->json ? status_json(&info) : status_text(&info);
}

static json_object *pool_to_json(const Pool *p) {
        _cleanup_json_put_ json_object *o = json_object_new_object();

        if (!o ||
            json_add(o, "name", json_object_new_string(strempty(p->name))) < 0 ||
            json_add(o, "driver", json_object_new_string(strempty(p->driver))) < 0 ||
            json_add(o, "size", json_object_new_uint64(p->size)) < 0 ||
            json_add(o, "usage", json_object_new_uint64(p->usage)) < 0 ||
            json_add(o, "available", json_object_new_uint64(p->available)) < 0 ||
            json_add(o, "copy_on_write", json_object_new_boolean(p->copy_on_write)) < 0 ||
            json_add(o, "revisions_to_keep", json_object_new_int64(p->revisions_to_keep)) < 0 ||
            json_add(o, "volumes", json_object_new_uint64(p->n_volumes)) < 0 ||
            json_add(o, "config", p->config ? json_object_get(p->config) : json_object_new_object()) < 0)
                return NULL;

        return TAKE_PTR(o);
}

static int pools_json(const Objects *objects) {
        _cleanup_json_put_ json_object *a = json_object_new_array();

        if (!a)
                return log_oom();

        for (size_t i = 0; i < objects->n_pools; i++)
                if (json_append(a, pool_to_json(&objects->pools[i])) < 0)
                        return log_oom();

        return json_print(a);
}

static int pools_text(const Objects *objects) {
        static const char *const headers[] = { "NAME", "DRIVER", "SIZE", "USED", "AVAIL", "VOLUMES", NULL };
        _cleanup_table_free_ Table *t = table_new(headers, COLUMN(2) | COLUMN(3) | COLUMN(4) | COLUMN(5));

        if (!t)
                return log_oom();

        for (size_t i = 0; i < objects->n_pools; i++) {
                const Pool *p = &objects->pools[i];
                char size[FORMAT_SIZE_MAX], used[FORMAT_SIZE_MAX], avail[FORMAT_SIZE_MAX], n[32];
                const char *row[] = {
                        p->name, p->driver,
                        format_size(size, p->size), format_size(used, p->usage),
                        format_size(avail, p->available), n,
                };

                snprintf(n, sizeof(n), "%zu", p->n_volumes);
                if (table_add_row(t, row) < 0)
                        return log_oom();
        }

        return table_print(t);
}

int verb_pools(Context *c, int argc, char *argv[]) {
        _cleanup_(objects_done) Objects objects = {};
        int r;

        r = context_get_objects(c, &objects);
        if (r < 0)
                return r;

        return c->json ? pools_json(&objects) : pools_text(&objects);
}

typedef struct ConfigItem {
        char *key;
        char type;              /* 's', 'u' or 't', as on the bus */
        const char *string;
        uint64_t number;
} ConfigItem;

/* Keys whose value is not a string (SPEC §4.1). They mean the same in every driver that has
 * them, so one list serves all. Unknown keys go out as strings: the daemon knows which keys a
 * driver takes, and its InvalidArgument tells the user. */
static const struct {
        const char *key;
        char type;
} config_types[] = {
        { "revisions_to_keep", 'u' },
        { "block_size",        't' },   /* a size: "64K" works */
};

typedef struct Config {
        ConfigItem *items;
        size_t n;
} Config;

static void config_done(Config *config) {
        for (size_t i = 0; i < config->n; i++)
                free(config->items[i].key);
        free(config->items);
        *config = (Config) {};
}

static int config_item_parse(const Context *c, const char *arg, ConfigItem *ret) {
        _cleanup_free_ char *key = NULL;
        const char *eq = strchr(arg, '='), *value;
        uint64_t number = 0;
        uint32_t u;
        char type = 's';

        if (!eq || eq == arg)
                return usage_error(c, "Invalid pool setting '%s': expected KEY=VALUE.", arg);

        key = strndup(arg, eq - arg);
        if (!key)
                return log_oom();
        value = eq + 1;

        for (size_t i = 0; i < ELEMENTSOF(config_types); i++)
                if (streq(config_types[i].key, key))
                        type = config_types[i].type;

        if ((type == 'u' && parse_uint32(value, &u) < 0) ||
            (type == 't' && parse_size(value, &number) < 0))
                return usage_error(c, "Invalid value for pool setting '%s'.", arg);
        if (type == 'u')
                number = u;

        *ret = (ConfigItem) { .key = TAKE_PTR(key), .type = type, .string = value, .number = number };
        return 0;
}

/* Checks every KEY=VALUE before anything is sent, so that a typo is a usage error. */
static int config_parse(const Context *c, char **args, size_t n, Config *ret) {
        _cleanup_(config_done) Config config = {};
        int r;

        config.items = calloc(n ?: 1, sizeof(ConfigItem));
        if (!config.items)
                return log_oom();

        for (size_t i = 0; i < n; i++) {
                r = config_item_parse(c, args[i], &config.items[i]);
                if (r < 0)
                        return r;
                config.n++;

                for (size_t j = 0; j < i; j++)
                        if (streq(config.items[j].key, config.items[i].key))
                                return usage_error(c, "Pool setting '%s' given twice.", config.items[i].key);
        }

        *ret = config;
        config = (Config) {};
        return 0;
}

static int config_append(sd_bus_message *m, const Config *config) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        for (size_t i = 0; r >= 0 && i < config->n; i++) {
                const ConfigItem *item = &config->items[i];

                switch (item->type) {
                case 'u':
                        r = sd_bus_message_append(m, "{sv}", item->key, "u", (uint32_t) item->number);
                        break;
                case 't':
                        r = sd_bus_message_append(m, "{sv}", item->key, "t", item->number);
                        break;
                default:
                        r = sd_bus_message_append(m, "{sv}", item->key, "s", item->string);
                }
        }
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

int verb_pool_create(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(config_done) Config config = {};
        sd_bus *bus;
        int r;

        r = config_parse(c, argv + 3, argc - 3, &config);
        if (r < 0)
                return r;

        r = context_acquire_bus(c, &bus);
        if (r < 0)
                return r;

        r = bus_new_method_call(bus, CISTERN_ROOT_PATH, CISTERN_MANAGER_IFACE, "CreatePool",
                                context_interactive(c), &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", argv[1], argv[2]);
        if (r >= 0)
                r = config_append(m, &config);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(bus, m, &error, &reply);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to create pool %s", argv[1]);

        return print_created_object(c, reply);
}

int verb_pool_remove(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        sd_bus *bus;
        int r;

        r = context_acquire_bus(c, &bus);
        if (r < 0)
                return r;

        r = bus_new_method_call(bus, CISTERN_ROOT_PATH, CISTERN_MANAGER_IFACE, "RemovePool",
                                context_interactive(c), &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{sv}", argv[1], 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to remove pool %s", argv[1]);
        return 0;
}
