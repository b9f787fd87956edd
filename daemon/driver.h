/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-c/json.h>
#include <systemd/sd-bus.h>

#include "copy.h"
#include "util.h"

#define OBJECT_IMAGE "image"
#define OBJECT_WORK "work"
#define OBJECT_REVISIONS "revisions"
/* The old image of a commit in progress, to become revision <id>: OBJECT_PENDING_PREFIX "<id>"
 * beneath OBJECT_REVISIONS. */
#define OBJECT_PENDING_PREFIX ".pending-"

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

        /* A volume's data lives in named objects beneath its directory: OBJECT_IMAGE (the
         * committed image), OBJECT_WORK (the working copy while started) and revisions
         * (OBJECT_REVISIONS "/<id>"). A committed object is never written once complete, so it
         * may be shared (object_link) between the image and its revisions. Names starting with
         * STORE_STAGING_PREFIX are staging objects, swept after a crash. */
        int (*object_create)(Volume *v, int vdir_fd, const char *name, uint64_t size, bool preallocate);
        /* Copies src (beneath src_dir_fd) into the new object dst (beneath dst_dir_fd).
         * Returns 1 when it shared blocks in O(1), 0 when it copied the data. */
        int (*object_copy)(Pool *p, int src_dir_fd, const char *src, int dst_dir_fd, const char *dst,
                           CopyProgress *progress);
        /* Creates the new object dst holding exactly size bytes read from src, a caller's
         * regular file, pipe or socket (see copy_in()). Returns 1 when it shared blocks with
         * src, 0 when it copied. */
        int (*object_import)(Pool *p, int src_fd, uint64_t size, int vdir_fd, const char *dst,
                             CopyProgress *progress);
        /* An fd on an object's data, opened with flags (O_RDONLY, O_WRONLY or O_RDWR). */
        int (*object_open)(int vdir_fd, const char *name, int flags);
        int (*object_link)(int vdir_fd, const char *src, const char *dst);
        int (*object_rename)(int vdir_fd, const char *src, const char *dst, bool replace);
        int (*object_remove)(int vdir_fd, const char *name);
        int (*object_resize)(int vdir_fd, const char *name, uint64_t size);
        int (*object_sync)(int vdir_fd, const char *name);
        /* 1 when a and b are the same object (linked), 0 when not. */
        int (*object_is_same)(int vdir_fd, const char *a, const char *b);
        /* Size and allocation of an object, read from the object itself. */
        int (*object_stat)(int vdir_fd, const char *name, uint64_t *ret_size, uint64_t *ret_usage);
        /* Whether object_copy from a volume of src to one of dst shares blocks in O(1). */
        bool (*copy_is_instant)(Pool *src, Pool *dst);
} PoolDriver;

extern const PoolDriver pool_driver_dir;

const PoolDriver *pool_driver_find(const char *name);
