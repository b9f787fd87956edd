/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "pool.h"

typedef enum VolumeState {
        VOLUME_STOPPED,
        VOLUME_STARTED,
} VolumeState;

/* What a volume is, as kept in volume.json. */
typedef struct VolumeSettings {
        char format[8];         /* "raw" | "qcow2"; recorded at creation, never re-derived */
        uid_t owner;
        bool read_only;
        bool save_on_stop;
        bool snap_on_start;
        char *source;           /* name of a volume of the same pool, or NULL */
        uint32_t revisions_to_keep;
        usec_t created;
} VolumeSettings;

struct Volume {
        Pool *pool;
        char *name;
        char *object_path;
        VolumeSettings settings;
        VolumeState state;
        const char *operation;  /* the method whose file work is running on it, or NULL */
        uint64_t next_revision; /* revision ids come from this counter */

        /* Read from the image itself by volume_stat(). */
        uint64_t size;
        uint64_t usage;
};

int volume_new(Pool *p, const char *name, Volume **ret);
Volume *volume_free(Volume *v);
DEFINE_TRIVIAL_CLEANUP_FUNC(Volume *, volume_free);

/* Opens the volume's directory beneath the pool. */
int volume_open_dir(Volume *v);

int volume_load(Pool *p, const char *name, Volume **ret);
int volume_save(Volume *v);
int volume_create(Volume *v, uint64_t size, bool preallocate);
int volume_remove(Volume *v);
/* Changes the image's size; volume_stat() reads it back. */
int volume_resize(Volume *v, uint64_t size);
int volume_stat(Volume *v);

bool volume_is_busy(Volume *v, const char **ret_reason);
const char *volume_state_to_string(VolumeState s);

/* File work on a volume that runs on a worker thread while its method call waits. */
typedef struct VolumeWork {
        sd_bus_message *msg;    /* answered when the work is done */
        Volume *volume;
        uint64_t size;
        bool preallocate;
} VolumeWork;

/* Runs work on a worker thread for the call msg; done gets the VolumeWork, replies and frees it
 * with volume_work_free(). While it runs, v->operation names the method. */
int volume_work_start(Volume *v, sd_bus_message *msg, uint64_t size, bool preallocate,
                      WorkFunc work, WorkDone done, sd_bus_error *error);
VolumeWork *volume_work_free(VolumeWork *w);

/* Bus glue (volume-dbus.c). */
extern const sd_bus_vtable volume_vtable[];
int volume_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error);
void volume_emit_changed(Volume *v, const char *property, ...) __attribute__((sentinel));
