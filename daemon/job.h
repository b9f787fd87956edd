/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "copy.h"
#include "manager.h"

/* org.cistern.Cistern1.Job: work that moves data, visible while it runs at
 * /org/cistern/Cistern1/job/<N>. The work itself runs on a worker thread and reports bytes
 * through the job's CopyProgress; the job turns that into Progress, Rate and ExpectedEndTime,
 * published at most about ten times a second. Cancel sets progress.cancel; the work notices,
 * undoes what it did and finishes with -ECANCELED.
 *
 * A method that moves data, once authorized:
 *
 *   r = job_new(m, "Clone", objects, caller_uid, bytes_total, &w->job);
 *   if (r == -EMFILE) return sd_bus_error_setf(error, ERR_LIMITS_EXCEEDED, ...);
 *   r = workers_run(m->workers, clone_work, clone_done, w);
 *   if (r < 0) { job_finish(w->job, r, NULL); return ...; }
 *
 * clone_work (on the thread) touches only w->job->progress, through a CopyProgress pointer
 * taken before workers_run(). clone_done (on the loop) calls job_finish(w->job, r, NULL)
 * first — Completed, then the object vanishes — and then replies to the method call:
 * Cancelled for -ECANCELED, else the result. */

#define JOB_UPDATE_USEC       (100 * USEC_PER_MSEC)  /* progress is published at most this often */
#define JOB_STALLED_USEC      USEC_PER_SEC           /* ...and at least this often while Rate decays */
#define JOB_RATE_WINDOW_USEC  (2 * USEC_PER_SEC)     /* time constant of the Rate average */

typedef struct Job {
        Manager *manager;
        uint64_t id;
        char *name;             /* id in decimal, the key in manager->jobs */
        char *object_path;
        char *operation;        /* the method, e.g. "Clone" */
        char **objects;         /* object paths it works on, NULL-terminated */
        uid_t started_by;
        usec_t start_time;      /* realtime µs */
        usec_t start_mono;
        CopyProgress progress;
        uint64_t rate;          /* bytes/s */
        usec_t expected_end;    /* realtime µs, 0 unknown */
        uint64_t published_done;/* BytesDone and Progress as last published */
        uint64_t sample_done;   /* progress.done at the last Rate sample... */
        usec_t sample_mono;     /* ...and when it was taken */
        bool cancelable;
        sd_event_source *timer; /* progress updates */
} Job;

/* Creates and exports a job (InterfacesAdded, Manager.Jobs changed), cancelable, with
 * progress.total = bytes_total (0: unknown). objects is copied. -EMFILE when
 * manager->limits.max_jobs run already: the caller reports LimitsExceeded. */
int job_new(Manager *m, const char *operation, const char *const *objects, uid_t started_by,
            uint64_t bytes_total, Job **ret);

/* Publishes the final progress, emits Completed(result >= 0, message), removes the object
 * (InterfacesRemoved, Manager.Jobs changed) and frees the job. message NULL: "" on success,
 * else a description of result. The work must be over: nothing may use progress any more. */
void job_finish(Job *j, int result, const char *message);

/* Frees without a word on the bus (daemon shutdown); unregisters from manager->jobs. A job that
 * was announced ends with job_finish() instead. */
Job *job_free(Job *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(Job *, job_free);

/* Asks the work to stop (progress.cancel); it finishes with -ECANCELED soon after. Returns
 * false when that was asked already. */
bool job_cancel(Job *j);

/* Whether Cancel is accepted from now on, e.g. false once the work reached a step it cannot
 * undo. Emits PropertiesChanged when it changes. */
void job_set_cancelable(Job *j, bool cancelable);

/* Reads progress.done and publishes BytesDone, Progress, Rate and ExpectedEndTime when they
 * changed; the job's timer calls it every JOB_UPDATE_USEC. force: sample even when done has
 * not moved since the last sample. */
void job_update(Job *j, bool force);

/* The arithmetic behind the properties, pure for the tests. */
/* done/total, in 0…1; 0 while total is unknown (0). */
double job_compute_progress(uint64_t done, uint64_t total);
/* Bytes per second for bytes moved in elapsed µs; 0 when no time has passed. */
uint64_t job_compute_rate(uint64_t bytes, usec_t elapsed);
/* Rate after a sample of sample bytes/s taken dt µs after the previous one: an exponentially
 * weighted moving average with time constant window, so a stall lowers it gradually. */
uint64_t job_smooth_rate(uint64_t previous, uint64_t sample, usec_t dt, usec_t window);
/* Realtime µs by which the rest is expected to be done, at rate bytes/s from now; 0 when
 * unknown (no total or no rate). */
usec_t job_compute_expected_end(uint64_t done, uint64_t total, uint64_t rate, usec_t now);

/* Bus glue (job-dbus.c). */
extern const sd_bus_vtable job_vtable[];
int job_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error);
