/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* org.cistern.Cistern1.Manager, and the registration of the whole object tree. */

#include "config.h"

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "job.h"
#include "log.h"
#include "names.h"
#include "options.h"
#include "pool.h"
#include "volume.h"

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", CISTERN_VERSION);
}

static int property_get_drivers(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "as", 1, pool_driver_dir.name);
}

static int property_get_pools(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        Pool *p;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        NAMEMAP_FOREACH(p, &m->pools) {
                r = sd_bus_message_append_basic(reply, 'o', p->object_path);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_jobs(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        Job *j;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        NAMEMAP_FOREACH(j, &m->jobs) {
                r = sd_bus_message_append_basic(reply, 'o', j->object_path);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int validate_new_pool(Manager *m, const char *name, const char *driver_name,
                             const PoolDriver **ret_driver, sd_bus_error *error) {
        const PoolDriver *driver;

        if (!name_is_valid(name))
                return sd_bus_error_setf(error, ERR_INVALID_NAME, "Invalid pool name '%s'.", name);
        driver = pool_driver_find(driver_name);
        if (!driver)
                return sd_bus_error_setf(error, ERR_NOT_SUPPORTED, "Pool driver '%s' is not available on this host.", driver_name);
        if (manager_get_pool(m, name))
                return sd_bus_error_setf(error, ERR_ALREADY_EXISTS, "Pool %s already exists.", name);
        if (m->pools.n >= m->limits.max_pools)
                return sd_bus_error_setf(error, ERR_LIMITS_EXCEEDED, "There may be at most %u pools.", m->limits.max_pools);
        *ret_driver = driver;
        return 0;
}

static int method_create_pool(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(pool_freep) Pool *p = NULL;
        Manager *m = userdata;
        const char *name, *driver_name;
        const PoolDriver *driver = NULL;
        Pool *added;
        Volume *v;
        uint32_t revisions_to_keep;
        bool revisions_given;
        int r;

        r = sd_bus_message_read(msg, "ss", &name, &driver_name);
        if (r < 0)
                return r;
        r = validate_new_pool(m, name, driver_name, &driver, error);
        if (r < 0)
                return r;
        r = pool_new(m, name, driver, &p);
        if (r < 0)
                return r;
        r = driver->config_parse(p, msg, &revisions_given, error);
        if (r < 0)
                return r;
        revisions_to_keep = p->revisions_to_keep;

        r = authorize(m, msg, ACTION_POOL_MANAGE, name, NULL, 0, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = pool_open(p, true, error);
        if (r < 0)
                return r;
        if (revisions_given)
                p->revisions_to_keep = revisions_to_keep;  /* given settings win over adopted ones */
        r = pool_save(p);
        if (r < 0)
                return bus_error_from_errno(error, r, "Failed to record the pool");
        r = namemap_put(&m->pools, p->name, p);
        if (r < 0)
                return r;
        added = TAKE_PTR(p);

        log_info("Created pool %s (%zu volumes adopted).", added->name, added->volumes.n);
        (void) sd_bus_emit_object_added(m->bus, added->object_path);
        NAMEMAP_FOREACH(v, &added->volumes)
                (void) sd_bus_emit_object_added(m->bus, v->object_path);
        (void) sd_bus_emit_properties_changed(m->bus, CISTERN_ROOT_PATH, MANAGER_INTERFACE, "Pools", NULL);
        return sd_bus_reply_method_return(msg, "o", added->object_path);
}

static const OptionSpec no_options[] = { {} };

static int method_remove_pool(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name, *reason;
        Volume *v;
        Pool *p;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = options_read(msg, no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        p = manager_get_pool(m, name);
        if (!p)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "No pool named '%s'.", name);
        if (pool_is_busy(p, &reason))
                return sd_bus_error_setf(error, ERR_BUSY, "Pool %s is in use: a volume of it %s.", name, reason);

        r = authorize(m, msg, ACTION_POOL_MANAGE, name, NULL, 0, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = pool_forget(p);
        if (r < 0)
                return bus_error_from_errno(error, r, "Failed to remove the pool from the registry");
        NAMEMAP_FOREACH(v, &p->volumes)
                (void) sd_bus_emit_object_removed(m->bus, v->object_path);
        (void) sd_bus_emit_object_removed(m->bus, p->object_path);
        namemap_remove(&m->pools, p->name);
        log_info("Removed pool %s; its data stays on disk.", p->name);
        pool_free(p);
        (void) sd_bus_emit_properties_changed(m->bus, CISTERN_ROOT_PATH, MANAGER_INTERFACE, "Pools", NULL);
        return sd_bus_reply_method_return(msg, NULL);
}

static int method_get_pool(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *name;
        Pool *p;
        int r;

        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        p = manager_get_pool(m, name);
        if (!p)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "No pool named '%s'.", name);
        return sd_bus_reply_method_return(msg, "o", p->object_path);
}

static int method_get_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Manager *m = userdata;
        const char *pool, *name;
        Volume *v;
        Pool *p;
        int r;

        r = sd_bus_message_read(msg, "ss", &pool, &name);
        if (r < 0)
                return r;
        p = manager_get_pool(m, pool);
        if (!p)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "No pool named '%s'.", pool);
        v = pool_get_volume(p, name);
        if (!v)
                return sd_bus_error_setf(error, ERR_NOT_FOUND, "Pool %s has no volume named '%s'.", pool, name);
        return sd_bus_reply_method_return(msg, "o", v->object_path);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Drivers", "as", property_get_drivers, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Pools", "ao", property_get_pools, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Jobs", "ao", property_get_jobs, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("CreatePool",
                                SD_BUS_ARGS("s", name, "s", driver, "a{sv}", config),
                                SD_BUS_RESULT("o", pool),
                                method_create_pool, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("RemovePool",
                                SD_BUS_ARGS("s", name, "a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_remove_pool, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetPool",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_RESULT("o", pool),
                                method_get_pool, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetVolume",
                                SD_BUS_ARGS("s", pool, "s", volume),
                                SD_BUS_RESULT("o", volume),
                                method_get_volume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

static void nodes_free(char **nodes) {
        for (char **p = nodes; *p; p++)
                free(*p);
        free(nodes);
}

/* Adds a copy of path to nodes, which was allocated large enough and zeroed. */
static int nodes_add(char **nodes, size_t *n, const char *path) {
        nodes[*n] = strdup(path);
        if (!nodes[*n])
                return -ENOMEM;
        (*n)++;
        return 0;
}

static int enumerate_nodes(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes, sd_bus_error *error) {
        Manager *m = userdata;
        size_t n = 0, total = m->pools.n;
        char **nodes;
        Volume *v;
        Pool *p;
        int r = 0;

        NAMEMAP_FOREACH(p, &m->pools)
                total += p->volumes.n;
        nodes = calloc(total + 1, sizeof(char *));
        if (!nodes)
                return -ENOMEM;
        NAMEMAP_FOREACH(p, &m->pools) {
                r = r < 0 ? r : nodes_add(nodes, &n, p->object_path);
                NAMEMAP_FOREACH(v, &p->volumes)
                        r = r < 0 ? r : nodes_add(nodes, &n, v->object_path);
        }
        if (r < 0) {
                nodes_free(nodes);
                return r;
        }
        *ret_nodes = nodes;
        return 0;
}

static int enumerate_jobs(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes, sd_bus_error *error) {
        Manager *m = userdata;
        char **nodes;
        size_t n = 0;
        int r = 0;
        Job *j;

        nodes = calloc(m->jobs.n + 1, sizeof(char *));
        if (!nodes)
                return -ENOMEM;
        NAMEMAP_FOREACH(j, &m->jobs)
                r = r < 0 ? r : nodes_add(nodes, &n, j->object_path);
        if (r < 0) {
                nodes_free(nodes);
                return r;
        }
        *ret_nodes = nodes;
        return 0;
}

static int append_object(sd_bus_message *reply, const char *path, const char *interface,
                         const sd_bus_vtable *vtable, void *object) {
        int r;

        r = sd_bus_message_open_container(reply, 'e', "oa{sa{sv}}");
        if (r < 0)
                return r;
        r = sd_bus_message_append_basic(reply, 'o', path);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{sa{sv}}");
        if (r < 0)
                return r;
        r = bus_append_interface(reply, path, interface, vtable, object);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int append_managed_objects(sd_bus_message *reply, Manager *m) {
        Volume *v;
        Job *j;
        Pool *p;
        int r;

        NAMEMAP_FOREACH(p, &m->pools) {
                r = append_object(reply, p->object_path, POOL_INTERFACE, pool_vtable, p);
                if (r < 0)
                        return r;
                NAMEMAP_FOREACH(v, &p->volumes) {
                        r = append_object(reply, v->object_path, VOLUME_INTERFACE, volume_vtable, v);
                        if (r < 0)
                                return r;
                }
        }
        NAMEMAP_FOREACH(j, &m->jobs) {
                r = append_object(reply, j->object_path, JOB_INTERFACE, job_vtable, j);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ObjectManager.GetManagedObjects, answered before sd-bus' generic implementation sees it: that
 * one looks every object up again through the fallback vtables and formats each property from
 * its signature string, which is too slow for pools of ten thousand volumes. */
static int on_root_message(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        if (!sd_bus_message_is_method_call(msg, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects") ||
            !streq_ptr(sd_bus_message_get_signature(msg, true), ""))
                return 0;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                return r;
        r = append_managed_objects(reply, userdata);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int manager_dbus_register(Manager *m) {
        int r;

        r = sd_bus_add_object_vtable(m->bus, NULL, CISTERN_ROOT_PATH, MANAGER_INTERFACE, manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Manager: %m");
        r = sd_bus_add_fallback_vtable(m->bus, NULL, CISTERN_POOL_PREFIX, POOL_INTERFACE, pool_vtable, pool_object_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register pools: %m");
        r = sd_bus_add_fallback_vtable(m->bus, NULL, CISTERN_POOL_PREFIX, VOLUME_INTERFACE, volume_vtable, volume_object_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register volumes: %m");
        r = sd_bus_add_node_enumerator(m->bus, NULL, CISTERN_POOL_PREFIX, enumerate_nodes, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the node enumerator: %m");
        r = sd_bus_add_fallback_vtable(m->bus, NULL, CISTERN_JOB_PREFIX, JOB_INTERFACE, job_vtable, job_object_find, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register jobs: %m");
        r = sd_bus_add_node_enumerator(m->bus, NULL, CISTERN_JOB_PREFIX, enumerate_jobs, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the job enumerator: %m");
        r = sd_bus_add_object(m->bus, NULL, CISTERN_ROOT_PATH, on_root_message, m);
        if (r < 0)
                return log_error_errno(r, "Failed to register the object manager: %m");
        r = sd_bus_add_object_manager(m->bus, NULL, CISTERN_ROOT_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to register the object manager: %m");
        return 0;
}
