/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Job objects: their life on the bus and the progress they publish. Cancel is in job-dbus.c. */

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "errors.h"
#include "job.h"
#include "log.h"

/* Late by at most this much, so that the loop can batch the wake-ups of many jobs. */
#define JOB_UPDATE_ACCURACY_USEC (10 * USEC_PER_MSEC)

double job_compute_progress(uint64_t done, uint64_t total) {
        if (total == 0)
                return 0.0;
        if (done >= total)
                return 1.0;
        return (double) done / (double) total;
}

/* Bytes times µs overflow 64 bits for large images: the arithmetic is done in double, and a
 * result beyond uint64_t is clamped, never wrapped. */
static uint64_t clamp_to_u64(double d) {
        if (!(d > 0.0))
                return 0;
        if (d >= 18446744073709551616.0)        /* 2^64 */
                return UINT64_MAX;
        return (uint64_t) d;
}

uint64_t job_compute_rate(uint64_t bytes, usec_t elapsed) {
        if (elapsed == 0)
                return 0;
        return clamp_to_u64((double) bytes * (double) USEC_PER_SEC / (double) elapsed);
}

uint64_t job_smooth_rate(uint64_t previous, uint64_t sample, usec_t dt, usec_t window) {
        double weight;

        if (dt == 0)
                return previous;
        /* dt/(window+dt) approximates 1 - exp(-dt/window): the weight of a sample grows with the
         * time it covers, so late timer ticks do not skew the average. Truncation lets a stalled
         * job's rate reach 0. */
        weight = (double) dt / ((double) window + (double) dt);
        return clamp_to_u64((double) previous + ((double) sample - (double) previous) * weight);
}

usec_t job_compute_expected_end(uint64_t done, uint64_t total, uint64_t rate, usec_t now) {
        double left;

        if (total == 0)
                return 0;
        if (done >= total)
                return now;     /* all bytes moved; what remains (fsync, rename) is short */
        if (rate == 0)
                return 0;
        left = (double) (total - done) * (double) USEC_PER_SEC / (double) rate;
        if (left >= (double) (UINT64_MAX - now))
                return 0;
        return now + (usec_t) left;
}

static void strv_free(char **l) {
        STRV_FOREACH(s, l)
                free(*s);
        free(l);
}

static char **strv_copy(const char *const *l) {
        size_t n = 0;
        char **copy;

        while (l && l[n])
                n++;
        copy = calloc(n + 1, sizeof(char *));
        if (!copy)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                copy[i] = strdup(l[i]);
                if (!copy[i]) {
                        strv_free(copy);
                        return NULL;
                }
        }
        return copy;
}

static void job_emit_changed(Job *j, char **properties) {
        (void) sd_bus_emit_properties_changed_strv(j->manager->bus, j->object_path, JOB_INTERFACE, properties);
}

static void manager_emit_jobs_changed(Manager *m) {
        char *jobs[] = { (char *) "Jobs", NULL };

        (void) sd_bus_emit_properties_changed_strv(m->bus, CISTERN_ROOT_PATH, MANAGER_INTERFACE, jobs);
}

void job_update(Job *j, bool force) {
        uint64_t done = atomic_load(&j->progress.done), total = j->progress.total, rate;
        usec_t now = now_usec(CLOCK_MONOTONIC), dt, elapsed, end;
        char *changed[5];
        size_t n = 0;

        /* A stalled job is sampled too, less often, so that its Rate falls. */
        dt = now - j->sample_mono;
        if (!force && done == j->sample_done && dt < JOB_STALLED_USEC)
                return;
        elapsed = now - j->start_mono;
        if (elapsed <= JOB_RATE_WINDOW_USEC)
                /* Too early for an average over the window: the mean since the start. */
                rate = job_compute_rate(done, elapsed);
        else
                rate = job_smooth_rate(j->rate, job_compute_rate(done > j->sample_done ? done - j->sample_done : 0, dt),
                                       dt, JOB_RATE_WINDOW_USEC);
        j->sample_done = done;
        j->sample_mono = now;
        end = job_compute_expected_end(done, total, rate, now_usec(CLOCK_REALTIME));

        if (done != j->published_done) {
                j->published_done = done;
                if (total > 0)
                        changed[n++] = (char *) "Progress";
                changed[n++] = (char *) "BytesDone";
        }
        if (rate != j->rate) {
                j->rate = rate;
                changed[n++] = (char *) "Rate";
        }
        if (end != j->expected_end) {
                j->expected_end = end;
                changed[n++] = (char *) "ExpectedEndTime";
        }
        changed[n] = NULL;
        if (n > 0)
                job_emit_changed(j, changed);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        job_update(userdata, false);
        (void) sd_event_source_set_time_relative(s, JOB_UPDATE_USEC);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static int job_alloc(Manager *m, const char *operation, const char *const *objects, Job **ret) {
        _cleanup_(job_freep) Job *j = NULL;

        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->manager = m;
        j->id = ++m->next_job_id;
        if (asprintf(&j->name, "%" PRIu64, j->id) < 0) {
                j->name = NULL;
                return -ENOMEM;
        }
        if (asprintf(&j->object_path, CISTERN_JOB_PREFIX "/%s", j->name) < 0) {
                j->object_path = NULL;
                return -ENOMEM;
        }
        j->operation = strdup(operation);
        j->objects = strv_copy(objects);
        if (!j->operation || !j->objects)
                return -ENOMEM;
        *ret = TAKE_PTR(j);
        return 0;
}

int job_new(Manager *m, const char *operation, const char *const *objects, uid_t started_by,
            uint64_t bytes_total, Job **ret) {
        _cleanup_(job_freep) Job *j = NULL;
        int r;

        if (m->jobs.n >= m->limits.max_jobs)
                return -EMFILE;
        r = job_alloc(m, operation, objects, &j);
        if (r < 0)
                return r;
        j->started_by = started_by;
        j->start_time = now_usec(CLOCK_REALTIME);
        j->start_mono = j->sample_mono = now_usec(CLOCK_MONOTONIC);
        j->progress.total = bytes_total;
        j->cancelable = true;

        r = sd_event_add_time_relative(m->event, &j->timer, CLOCK_MONOTONIC, JOB_UPDATE_USEC,
                                       JOB_UPDATE_ACCURACY_USEC, on_timer, j);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(j->timer, "job-progress");
        r = namemap_put(&m->jobs, j->name, j);
        if (r < 0)
                return r;

        log_debug("Job %s: %s of %" PRIu64 " bytes for uid %u.", j->name, j->operation, bytes_total,
                  (unsigned) started_by);
        (void) sd_bus_emit_object_added(m->bus, j->object_path);
        manager_emit_jobs_changed(m);
        *ret = TAKE_PTR(j);
        return 0;
}

void job_finish(Job *j, int result, const char *message) {
        Manager *m = j->manager;

        job_update(j, true);
        if (!message)
                message = result >= 0 ? "" : result == -ECANCELED ? "Cancelled." : errno_describe(result);
        log_debug("Job %s (%s) %s%s%s", j->name, j->operation, result >= 0 ? "succeeded" : "failed",
                  *message ? ": " : ".", message);
        (void) sd_bus_emit_signal(m->bus, j->object_path, JOB_INTERFACE, "Completed", "bs", (int) (result >= 0), message);
        /* Still registered: InterfacesRemoved lists what the object had. */
        (void) sd_bus_emit_object_removed(m->bus, j->object_path);
        job_free(j);
        manager_emit_jobs_changed(m);
}

Job *job_free(Job *j) {
        if (!j)
                return NULL;
        if (j->name && namemap_get(&j->manager->jobs, j->name) == j)
                namemap_remove(&j->manager->jobs, j->name);
        sd_event_source_disable_unref(j->timer);
        strv_free(j->objects);
        free(j->operation);
        free(j->object_path);
        free(j->name);
        free(j);
        return NULL;
}

bool job_cancel(Job *j) {
        return !atomic_exchange(&j->progress.cancel, true);
}

void job_set_cancelable(Job *j, bool cancelable) {
        char *changed[] = { (char *) "Cancelable", NULL };

        if (j->cancelable == cancelable)
                return;
        j->cancelable = cancelable;
        job_emit_changed(j, changed);
}
