/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "ctl-bus.h"

/* Client-side copies of the properties of the service's objects (SPEC §4.1–4.4). */

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
        json_object *partitions;        /* [{"number", "device", "start", "size", "fstype"}] */
        json_object *mounts;            /* [{"partition", "mount_point"}] */

        /* Resolved from the paths above by the caller. */
        char *pool_name;
        char *source;                   /* "POOL/VOL", NULL when there is no source */
} Volume;

typedef struct Job {
        char *path;
        char *id;                       /* the last component of the path, unescaped */
        char *operation;
        char **objects;                 /* object paths */
        double progress;                /* 0…1, meaningful when progress_valid */
        bool progress_valid;
        uint64_t bytes_total;
        uint64_t bytes_done;
        uint64_t rate;                  /* bytes/s */
        uint64_t start_time;
        uint64_t expected_end_time;     /* 0: unknown */
        uint32_t started_by;
        bool cancelable;
} Job;

/* Everything the ObjectManager at the root reports, fetched in one call. Pools are sorted by
 * name, volumes by pool name then volume name; pool names and sources are resolved. */
typedef struct Objects {
        Pool *pools;
        size_t n_pools;
        Volume *volumes;
        size_t n_volumes;
        Job *jobs;                      /* sorted by id, numerically where ids are numbers */
        size_t n_jobs;
} Objects;

void manager_info_done(ManagerInfo *m);
void pool_done(Pool *p);
void volume_done(Volume *v);
void job_done(Job *j);
void objects_done(Objects *o);

int manager_info_get(sd_bus *bus, ManagerInfo *ret);
int objects_get(sd_bus *bus, Objects *ret);

/* Reads a job's a{sv} (from GetAll, InterfacesAdded or PropertiesChanged) into j; properties
 * that are not in it keep their value. */
int job_read_properties(sd_bus_message *m, Job *j);

/* The job's number as the user types it, from its object path: the last component, unescaped
 * where it was escaped as sd_bus_path_encode() does ("_31" for "1"). */
int job_id_from_path(const char *path, char **ret);

/* "POOL/VOL" for a volume's path, "POOL" for a pool's: returns 1, or 0 with *ret NULL when o
 * holds neither. */
int objects_name_of(const Objects *o, const char *path, char **ret);

/* One volume by path, with its pool name and source resolved by further property reads. */
int volume_get(sd_bus *bus, const char *path, Volume *ret);
