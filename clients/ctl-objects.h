/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "ctl-bus.h"

/* Client-side copies of the properties of the service's objects (SPEC §4.1–4.3). */

typedef struct ManagerInfo {
        char *version;
        char **drivers;
        size_t n_pools;
        size_t n_jobs;
} ManagerInfo;

typedef struct Pool {
        char *path;
        char *name;
        char *driver;
        json_object *config;
        uint64_t size;
        uint64_t usage;
        uint64_t available;
        bool copy_on_write;
        uint32_t revisions_to_keep;
        size_t n_volumes;
} Pool;

typedef struct Volume {
        char *path;
        char *name;
        char *pool_path;
        char *format;
        uint64_t size;
        uint64_t usage;
        uint32_t owner;
        bool read_only;
        bool save_on_stop;
        bool snap_on_start;
        char *source_path;              /* "/" when there is none */
        uint32_t revisions_to_keep;
        char *state;
        bool outdated;
        uint64_t created;
        char *device;
        json_object *revisions;         /* [{"id": s, "created": t}] */
        json_object *partitions;        /* [{"number", "device", "start", "size", "type"}] */
        json_object *mounts;            /* [{"partition", "mount_point"}] */

        /* Resolved from the paths above by the caller. */
        char *pool_name;
        char *source;                   /* "POOL/VOL", NULL when there is no source */
} Volume;

/* Everything the ObjectManager at the root reports, fetched in one call. Pools are sorted by
 * name, volumes by pool name then volume name; pool names and sources are resolved. */
typedef struct Objects {
        Pool *pools;
        size_t n_pools;
        Volume *volumes;
        size_t n_volumes;
} Objects;

void manager_info_done(ManagerInfo *m);
void pool_done(Pool *p);
void volume_done(Volume *v);
void objects_done(Objects *o);

int manager_info_get(sd_bus *bus, ManagerInfo *ret);
int objects_get(sd_bus *bus, Objects *ret);

/* One volume by path, with its pool name and source resolved by further property reads. */
int volume_get(sd_bus *bus, const char *path, Volume *ret);
