/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "util.h"

typedef struct Pool Pool;
typedef struct Volume Volume;

/* A pool driver moves bytes and blocks; everything else (names, metadata, the volume state
 * machine, authorization, the bus) is shared. Volume operations get vdir_fd, the volume's own
 * directory beneath the pool's metadata directory, where a driver may keep its files. */
typedef struct PoolDriver {
        const char *name;

        /* CreatePool's a{sv} config, into the driver's private config. */
        int (*config_parse)(Pool *p, sd_bus_message *m, bool *ret_revisions_given, sd_bus_error *error);
        /* The config as recorded in the registry and as read back from it. */
        int (*config_save)(Pool *p, json_object *o);
        int (*config_load)(Pool *p, json_object *o);
        /* Appends the Config property's a{sv} contents (without the container). */
        int (*config_append)(Pool *p, sd_bus_message *reply);

        /* Opens the pool's storage (probing features) and sets p->meta_fd. Creates its layout
         * when create is true and the storage holds no pool yet. */
        int (*open)(Pool *p, bool create, sd_bus_error *error);
        void (*close)(Pool *p);
        /* Re-reads Size, Usage, Available and CopyOnWrite of the storage. */
        int (*refresh)(Pool *p);

        int (*volume_create)(Volume *v, int vdir_fd, uint64_t size, bool preallocate);
        int (*volume_remove)(Volume *v, int vdir_fd);
        int (*volume_resize)(Volume *v, int vdir_fd, uint64_t size);
        /* Reads the size and allocation of the committed image from the image itself. */
        int (*volume_stat)(Volume *v, int vdir_fd, uint64_t *ret_size, uint64_t *ret_usage);
} PoolDriver;

extern const PoolDriver pool_driver_dir;

const PoolDriver *pool_driver_find(const char *name);
