/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>

#include "loop.h"
#include "partition.h"
#include "pool.h"
#include "worker.h"

typedef enum VolumeState {
        VOLUME_STOPPED,
        VOLUME_STARTED,
} VolumeState;

/* A filesystem of an attached volume, mounted at <runtime>/mounts/<pool>/<volume>/<partition>. */
typedef struct VolumeMount {
        unsigned partition;     /* 0: the whole device */
        char *path;
} VolumeMount;

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

/* An earlier committed image, kept as OBJECT_REVISIONS "/<id>". */
typedef struct Revision {
        uint64_t id;            /* from the volume's counter, never a time */
        usec_t created;
        char format[8];         /* the volume's format when it became a revision */
} Revision;

struct Volume {
        Pool *pool;
        char *name;
        char *object_path;
        VolumeSettings settings;
        VolumeState state;      /* started exactly while OBJECT_WORK exists */
        const char *operation;  /* the method whose file work is running on it, or NULL */
        unsigned readers;       /* exports running or open: it must stay */
        uint64_t next_revision; /* revision ids come from this counter */
        Revision *revisions;    /* oldest first */
        size_t n_revisions;
        uint64_t generation;    /* counts changes of the committed image */
        uint64_t source_generation; /* the source's generation when this volume started */

        /* The loop device exposing the volume while attached; diskseq 0 when not. */
        LoopDevice device;
        bool device_read_only;
        bool device_on_work;    /* it exposes the working copy, and a resize of that reaches it */
        Partition *partitions;  /* the partition devices made for it */
        size_t n_partitions;
        VolumeMount *mounts;    /* its filesystems cisternd mounted */
        size_t n_mounts;

        /* Read by volume_stat() from the image the guest sees: the working copy while started. */
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
/* A new volume whose committed image is a copy of source's object source_object. */
int volume_create_copy(Volume *v, Volume *source, const char *source_object, CopyProgress *progress);
int volume_remove(Volume *v);
int volume_stat(Volume *v);

bool volume_is_busy(Volume *v, const char **ret_reason);
static inline bool volume_is_attached(const Volume *v) {
        return v->device.diskseq != 0;
}
const char *volume_state_to_string(VolumeState s);

/* File work on a volume that runs on a worker thread while its method call waits: the
 * parameters the loop decided, the progress the thread reports. */
typedef struct VolumeWork {
        sd_bus_message *msg;    /* answered when the work is done */
        Volume *volume;
        uint64_t size;          /* CreateVolume, Resize, Start: the size asked for */
        bool preallocate;
        const char *format;     /* Convert: the format wanted; Start of a snapshot: the source's;
                                 * Import, ImportBegin, ImportEnd: the caller's bytes' */
        bool compress;          /* Convert: compressed qcow2 clusters */
        char *error;            /* qemu's own words when it failed, for the reply; Import, ImportEnd:
                                 * also why the inspector refused a qcow2 image */
        Volume *source;         /* Start of a snap_on_start volume, Clone: where the data comes from */
        Volume *target;         /* Clone: the new volume */
        char *source_object;    /* Clone: OBJECT_IMAGE or a revision's object */
        int fd;                 /* Import: the caller's fd; ImportBegin: the fd for the caller */
        char *staging;          /* ImportBegin, ImportEnd: the staging object; discarded unless taken */
        char *path;             /* Mount: where it mounted */
        int staging_fd;         /* ImportBegin: a read-only fd of it for the session */
        json_object *metadata;  /* volume.json as the outcome left it, being written */
        bool read_only;         /* Attach: the device is read-only */
        bool partitions;        /* Attach: with partition devices */
        LoopDevice device;      /* Attach: the device made... */
        Partition *device_partitions;   /* ...and its partitions */
        size_t n_device_partitions;
        struct UdevWait *udev_wait;     /* Attach: for udev to process it */
        WorkDone attached;      /* Attach: what comes next, once it is attached or failed */
        unsigned partition;     /* Mount, Unmount: 0 the whole device, else a partition */
        uint64_t revision;      /* Revert, RemoveRevision: the revision acted on */
        uint64_t new_revision;  /* Stop, CreateSnapshot, Revert: the id the old image gets, 0 none */
        uint64_t *prune;        /* revisions to delete once the change is done */
        size_t n_prune;
        struct Job *job;        /* published when the work copies data */
        WorkDone done;          /* the method's own done callback */
        CopyProgress progress;  /* used when there is no job */
} VolumeWork;

int volume_work_new(Volume *v, sd_bus_message *msg, VolumeWork **ret);
/* Publishes a Job for this work, which will copy about bytes bytes. */
int volume_work_publish_job(VolumeWork *w, uint64_t bytes, sd_bus_error *error);
/* Runs work on a worker thread; done gets w back on the loop, replies and frees it with
 * volume_work_free() (which also finishes its job with the result). While it runs,
 * v->operation names the method. On failure w is freed. */
int volume_work_start(VolumeWork *w, WorkFunc work, WorkDone done, sd_bus_error *error);
CopyProgress *volume_work_progress(VolumeWork *w);
/* From a done callback: runs more work for w; done gets -EMFILE when no worker can take it. */
void volume_work_continue(VolumeWork *w, WorkFunc work, WorkDone done);
/* In a done callback, once the outcome is applied to the volume: writes its metadata on a
 * worker thread (the fsync may wait behind other writes to the filesystem; the loop must not),
 * then calls then(0, w) on the loop, which replies and frees w. A failed write is logged: the
 * objects on disk are the truth, volume.json only adds to them. */
void volume_work_save(VolumeWork *w, WorkDone then);
VolumeWork *volume_work_free(VolumeWork *w, int result);

/* The revision bookkeeping of a change, planned on the loop before the work (new_revision when
 * adds_revision, the oldest revisions beyond RevisionsToKeep into prune, consumed not counted)
 * and applied after it succeeded. */
int volume_plan_revisions(Volume *v, bool adds_revision, uint64_t consumed, VolumeWork *w);
void volume_apply_revisions(Volume *v, const VolumeWork *w, uint64_t consumed);

/* For a change that leaves the committed image in format (Convert, Revert), planned on the loop
 * after volume_plan_revisions(): w->format, and when that is another format than v's,
 * w->metadata, volume.json as it must read while that commits (the new revision in the present
 * format). volume_format_change_record() then adds, on the worker, the inode of the object about
 * to become the image, before it is renamed over it: at load the image has that inode exactly
 * when the change was committed. */
int volume_plan_format(Volume *v, VolumeWork *w, const char *format);
int volume_format_change_record(json_object *o, int vdir_fd, const char *object, const char *format);
const Revision *volume_find_revision(Volume *v, uint64_t id);
uint64_t revision_id_from_string(const char *s);    /* 0 when not a revision id */
char *revision_object(uint64_t id);                  /* OBJECT_REVISIONS "/<id>" */
char *revision_pending_object(uint64_t id);          /* OBJECT_REVISIONS "/" OBJECT_PENDING_PREFIX "<id>" */

/* The work functions of the life cycle (volume-state.c), run on a worker thread. */
int volume_start_work(void *userdata);
int volume_stop_work(void *userdata);
int volume_snapshot_work(void *userdata);
int volume_revert_work(void *userdata);
int volume_prune_work(void *userdata);
int volume_resize_work(void *userdata);
int volume_clone_work(void *userdata);
int volume_convert_work(void *userdata);
int volume_import_work(void *userdata);
int volume_import_begin_work(void *userdata);
int volume_import_end_work(void *userdata);
int volume_import_discard_work(void *userdata);

/* Removes the object name of v on a worker thread (inline when none can take it), forgetting
 * about it: for staging objects that are given up. */
void volume_discard_object(Volume *v, const char *name);

/* Bus glue (volume-dbus.c). */
extern const sd_bus_vtable volume_vtable[];
int volume_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error);
void volume_emit_changed(Volume *v, const char *property, ...) __attribute__((sentinel));
