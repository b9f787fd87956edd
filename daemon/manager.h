/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "loop.h"
#include "namemap.h"
#include "polkit.h"
#include "worker.h"
#include "util.h"

#define CISTERN_BUS_NAME   "org.cistern.Cistern1"
#define CISTERN_ROOT_PATH  "/org/cistern/Cistern1"
#define CISTERN_POOL_PREFIX CISTERN_ROOT_PATH "/pool"
#define CISTERN_JOB_PREFIX CISTERN_ROOT_PATH "/job"
#define MANAGER_INTERFACE  "org.cistern.Cistern1.Manager"
#define POOL_INTERFACE     "org.cistern.Cistern1.Pool"
#define VOLUME_INTERFACE   "org.cistern.Cistern1.Volume"
#define JOB_INTERFACE      "org.cistern.Cistern1.Job"

typedef struct Pool Pool;
typedef struct Volume Volume;
typedef struct Job Job;

/* Every resource a caller can make cisternd create has a bound. */
typedef struct Limits {
        unsigned max_pools;
        unsigned max_volumes_per_pool;
        uint64_t max_volume_size;
        uint32_t max_revisions_to_keep;
        unsigned max_workers;           /* file operations running at once */
        unsigned max_work;              /* file operations running or waiting for a thread */
        unsigned max_sessions;          /* import and export sessions open at once */
        unsigned max_jobs;              /* Job objects at once */
} Limits;

typedef struct ManagerOptions {
        const char *state_dir;
        const char *runtime_dir;
        usec_t idle_timeout;    /* 0: never exit */
        usec_t session_timeout; /* import sessions without a write for this long end; 0: never */
} ManagerOptions;

typedef struct Manager {
        sd_event *event;
        sd_bus *bus;
        Polkit *polkit;
        Workers *workers;

        char *state_dir;
        char *runtime_dir;
        int state_fd;           /* the state directory */
        int registry_fd;        /* <state>/pools: one <name>.json per pool */
        int devices_fd;         /* <runtime>/devices: one record per attached device, for udev's rules */
        struct UdevWatch *udev; /* NULL where udev cannot be watched: nothing can be attached */
        LoopDevice *released;   /* detached, but still held open by another process: their */
        size_t n_released;      /* records go once the kernel lets them go (device_release()) */
        struct libmnt_monitor *mount_monitor;
        sd_event_source *mount_source;

        NameMap pools;
        struct Session *sessions;       /* import and export sessions, newest first */
        unsigned n_sessions;
        NameMap jobs;           /* by decimal id */
        uint64_t next_job_id;

        usec_t idle_timeout;
        sd_event_source *idle_source;
        usec_t session_timeout;

        Limits limits;
} Manager;

int manager_new(const ManagerOptions *options, Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Loads all state, exports the object tree, takes the bus name, and runs until idle or signalled. */
int manager_run(Manager *m);

static inline Pool *manager_get_pool(Manager *m, const char *name) {
        return namemap_get(&m->pools, name);
}

/* Bus glue (manager-dbus.c). */
int manager_dbus_register(Manager *m);
