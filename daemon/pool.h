/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "driver.h"
#include "manager.h"

struct Pool {
        Manager *manager;
        const PoolDriver *driver;
        char *name;
        char *object_path;

        /* Settings kept with the pool (pool.json in its metadata directory). */
        uint32_t revisions_to_keep;

        /* Driver state. */
        void *driver_data;
        int meta_fd;            /* holds pool.json and volumes/ */
        int volumes_fd;         /* one directory per volume */

        /* Cached, refreshed by pool_refresh(). */
        uint64_t size;
        uint64_t available;
        uint64_t usage;         /* bytes in use on the storage */
        bool copy_on_write;

        NameMap volumes;
        NameMap creating;       /* volumes being created: their names are taken, they are not shown yet */
};

int pool_new(Manager *m, const char *name, const PoolDriver *driver, Pool **ret);
Pool *pool_free(Pool *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Pool *, pool_free);

/* Opens the pool's storage (creating its layout when create and it holds no pool yet), reads
 * pool.json when there is one, and loads the volumes. */
int pool_open(Pool *p, bool create, sd_bus_error *error);
/* Writes the pool's settings to pool.json beside its volumes (so that the storage can be adopted
 * again) and to the registry in the state directory (so that cisternd finds it at start). */
int pool_save(Pool *p);
int pool_load(Manager *m, const char *name, Pool **ret);
int pool_forget(Pool *p);

void pool_refresh(Pool *p);
bool pool_is_busy(Pool *p, const char **ret_reason);

static inline Volume *pool_get_volume(Pool *p, const char *name) {
        return namemap_get(&p->volumes, name);
}

/* Bus glue (pool-dbus.c). */
/* The volume of p with object path path (a source, say); a named error otherwise. */
int pool_volume_by_path(Pool *p, const char *path, Volume **ret, sd_bus_error *error);
extern const sd_bus_vtable pool_vtable[];
int pool_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error);
void pool_emit_changed(Pool *p, const char *property, ...) __attribute__((sentinel));
