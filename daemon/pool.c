/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>

#include "errors.h"
#include "log.h"
#include "names.h"
#include "pool.h"
#include "store.h"
#include "volume.h"

#define POOL_JSON "pool.json"
#define POOL_JSON_MAX (64 * 1024)

int pool_new(Manager *m, const char *name, const PoolDriver *driver, Pool **ret) {
        _cleanup_(pool_freep) Pool *p = NULL;
        int r;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->driver = driver;
        p->meta_fd = -EBADF;
        p->volumes_fd = -EBADF;
        p->revisions_to_keep = 1;
        p->name = strdup(name);
        if (!p->name)
                return -ENOMEM;
        r = sd_bus_path_encode(CISTERN_POOL_PREFIX, name, &p->object_path);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

Pool *pool_free(Pool *p) {
        Volume *v;

        if (!p)
                return NULL;
        NAMEMAP_FOREACH(v, &p->volumes)
                volume_free(v);
        namemap_clear(&p->volumes);
        namemap_clear(&p->creating);
        safe_close(p->volumes_fd);
        if (p->driver_data)
                p->driver->close(p);
        free(p->object_path);
        free(p->name);
        free(p);
        return NULL;
}

void pool_refresh(Pool *p) {
        int r;

        r = p->driver->refresh(p);
        if (r < 0)
                log_warning_errno(r, "Failed to read the size of pool %s: %m", p->name);
}

bool pool_is_busy(Pool *p, const char **ret_reason) {
        const char *reason = p->creating.n > 0 ? "is being created" : NULL;
        Volume *v;

        NAMEMAP_FOREACH(v, &p->volumes) {
                const char *volume_reason;

                if (reason)
                        break;
                if (volume_is_busy(v, &volume_reason))
                        reason = volume_reason;
        }
        if (ret_reason)
                *ret_reason = reason;
        return reason;
}

static json_object *pool_to_json(Pool *p) {
        _cleanup_(json_object_putp) json_object *o = NULL, *config = NULL;

        o = json_object_new_object();
        config = json_object_new_object();
        if (!o || !config)
                return NULL;
        if (p->driver->config_save(p, config) < 0)
                return NULL;
        if (json_object_object_add(o, "driver", json_object_new_string(p->driver->name)) < 0 ||
            json_object_object_add(o, "revisions_to_keep", json_object_new_uint64(p->revisions_to_keep)) < 0 ||
            json_object_object_add(o, "config", TAKE_PTR(config)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

int pool_save(Pool *p) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *file = NULL;
        int r;

        o = pool_to_json(p);
        if (!o)
                return -ENOMEM;
        r = store_write_json(p->meta_fd, POOL_JSON, o);
        if (r < 0)
                return r;
        if (asprintf(&file, "%s.json", p->name) < 0)
                return -ENOMEM;
        return store_write_json(p->manager->registry_fd, file, o);
}

int pool_forget(Pool *p) {
        _cleanup_free_ char *file = NULL;

        if (asprintf(&file, "%s.json", p->name) < 0)
                return -ENOMEM;
        if (unlinkat(p->manager->registry_fd, file, 0) < 0 && errno != ENOENT)
                return -errno;
        return fsync_dir(p->manager->registry_fd);
}

static void pool_load_settings(Pool *p) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        int r;

        r = store_read_json(p->meta_fd, POOL_JSON, POOL_JSON_MAX, &o);
        if (r == -ENOENT)
                return;     /* a new pool */
        if (r < 0) {
                log_warning_errno(r, "Failed to read %s of pool %s, keeping its settings: %m", POOL_JSON, p->name);
                return;
        }
        p->revisions_to_keep = (uint32_t) MIN(json_get_u64(o, "revisions_to_keep", p->revisions_to_keep),
                                              p->manager->limits.max_revisions_to_keep);
}

static int pool_load_volumes(Pool *p) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r;

        r = store_remove_staging(p->volumes_fd);
        if (r > 0)
                log_info("Removed %d unfinished staging entries of pool %s.", r, p->name);

        r = opendir_beneath(p->volumes_fd, ".", &d);
        if (r < 0)
                return r;
        while ((de = readdir(d))) {
                Volume *v;

                if (!name_is_valid(de->d_name))
                        continue;   /* not ours: ignored, never deleted */
                r = volume_load(p, de->d_name, &v);
                if (r == -ENOENT)
                        continue;
                if (r < 0) {
                        log_warning_errno(r, "Failed to load volume %s/%s, ignoring it: %m", p->name, de->d_name);
                        continue;
                }
                r = namemap_put(&p->volumes, v->name, v);
                if (r < 0) {
                        volume_free(v);
                        return r;
                }
        }
        return 0;
}

int pool_open(Pool *p, bool create, sd_bus_error *error) {
        int r;

        r = p->driver->open(p, create, error);
        if (r < 0)
                return r;
        r = store_remove_staging(p->meta_fd);
        if (r > 0)
                log_info("Removed %d unfinished staging entries of pool %s.", r, p->name);
        pool_load_settings(p);
        r = pool_load_volumes(p);
        if (r < 0)
                return bus_error_from_errno(error, r, "Failed to load the pool's volumes");
        pool_refresh(p);
        return 0;
}

int pool_load(Manager *m, const char *name, Pool **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(pool_freep) Pool *p = NULL;
        _cleanup_free_ char *file = NULL;
        const PoolDriver *driver;
        json_object *config;
        int r;

        if (asprintf(&file, "%s.json", name) < 0)
                return -ENOMEM;
        r = store_read_json(m->registry_fd, file, POOL_JSON_MAX, &o);
        if (r < 0)
                return r;
        driver = pool_driver_find(json_get_string(o, "driver") ?: "");
        if (!driver || !json_object_object_get_ex(o, "config", &config))
                return -EBADMSG;
        r = pool_new(m, name, driver, &p);
        if (r < 0)
                return r;
        p->revisions_to_keep = (uint32_t) MIN(json_get_u64(o, "revisions_to_keep", 1), m->limits.max_revisions_to_keep);
        r = driver->config_load(p, config);
        if (r < 0)
                return r;
        r = pool_open(p, false, &error);
        if (r < 0)
                return log_warning_errno(r, "Failed to open pool %s: %s", name, error.message ?: strerror(-r));
        *ret = TAKE_PTR(p);
        return 0;
}

const PoolDriver *pool_driver_find(const char *name) {
        static const PoolDriver *const drivers[] = { &pool_driver_dir };

        for (size_t i = 0; i < ELEMENTSOF(drivers); i++)
                if (streq(drivers[i]->name, name))
                        return drivers[i];
        return NULL;
}
