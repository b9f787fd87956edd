/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Jobs without a bus: the arithmetic behind Progress, Rate and ExpectedEndTime, and what a job
 * announces, in which order, as it is created, makes progress and finishes. The sd-bus emit
 * calls are wrapped and recorded; the clocks are mocked except where the real timer runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <cmocka.h>

#include "job.h"

#define JOB1 CISTERN_JOB_PREFIX "/1"
#define MiB (UINT64_C(1) << 20)

/* Clocks. */
static bool real_clock;
static usec_t mock_mono, mock_realtime;

usec_t __real_now_usec(int clock);
usec_t __wrap_now_usec(int clock) {
        if (real_clock)
                return __real_now_usec(clock);
        return clock == CLOCK_REALTIME ? mock_realtime : mock_mono;
}

static void advance(usec_t usec) {
        mock_mono += usec;
        mock_realtime += usec;
}

/* What went out on the bus, one line per emission. */
static char emitted[32][256];
static size_t n_emitted;
static Manager *current;

static void record(const char *format, ...) {
        va_list ap;

        assert_true(n_emitted < ELEMENTSOF(emitted));
        va_start(ap, format);
        vsnprintf(emitted[n_emitted++], sizeof emitted[0], format, ap);
        va_end(ap);
}

int __wrap_sd_bus_emit_object_added(sd_bus *bus, const char *path) {
        record("added %s", path);
        return 0;
}

int __wrap_sd_bus_emit_object_removed(sd_bus *bus, const char *path) {
        /* InterfacesRemoved is built from the object's vtables: it must still be findable. */
        const char *name = strrchr(path, '/') + 1;

        assert_non_null(namemap_get(&current->jobs, name));
        record("removed %s", path);
        return 0;
}

int __wrap_sd_bus_emit_properties_changed_strv(sd_bus *bus, const char *path, const char *interface, char **names) {
        char list[200] = "";

        STRV_FOREACH(n, names) {
                if (n != names)
                        strcat(list, ",");
                strcat(list, *n);
        }
        record("changed %s %s %s", path, interface, list);
        return 0;
}

int __wrap_sd_bus_emit_signal(sd_bus *bus, const char *path, const char *interface, const char *member,
                              const char *types, ...) {
        va_list ap;
        int b;
        const char *s;

        assert_string_equal(types, "bs");
        va_start(ap, types);
        b = va_arg(ap, int);
        s = va_arg(ap, const char *);
        va_end(ap);
        record("signal %s %s.%s %s '%s'", path, interface, member, b ? "true" : "false", s);
        return 0;
}

static void assert_emitted(const char *const *expected) {
        size_t n = 0;

        for (; expected[n]; n++) {
                assert_true(n < n_emitted);
                assert_string_equal(emitted[n], expected[n]);
        }
        assert_int_equal(n_emitted, n);
        n_emitted = 0;
}
#define ASSERT_EMITTED(...) assert_emitted((const char *const[]) { __VA_ARGS__, NULL })
#define ASSERT_NOTHING_EMITTED() assert_int_equal(n_emitted, 0)

static int setup(void **state) {
        Manager *m = calloc(1, sizeof *m);

        if (!m || sd_event_new(&m->event) < 0)
                return -1;
        m->limits.max_jobs = 3;
        real_clock = false;
        mock_mono = 1000 * USEC_PER_SEC;
        mock_realtime = UINT64_C(1700000000) * USEC_PER_SEC;
        n_emitted = 0;
        current = m;
        *state = m;
        return 0;
}

static int teardown(void **state) {
        Manager *m = *state;

        while (m->jobs.n > 0)
                job_free(m->jobs.entries[0].value);
        namemap_clear(&m->jobs);
        sd_event_unref(m->event);
        free(m);
        return 0;
}

static Job *new_job(Manager *m, uint64_t total) {
        const char *objects[] = { CISTERN_POOL_PREFIX "/p/v", NULL };
        Job *j = NULL;

        assert_int_equal(job_new(m, "Clone", objects, 1000, total, &j), 0);
        n_emitted = 0;
        return j;
}

static void progress_is_the_done_fraction_and_zero_without_a_total(void **state) {
        assert_true(job_compute_progress(0, 0) == 0.0);
        assert_true(job_compute_progress(123, 0) == 0.0);
        assert_true(job_compute_progress(0, 100) == 0.0);
        assert_true(job_compute_progress(25, 100) == 0.25);
        assert_true(job_compute_progress(100, 100) == 1.0);
        /* A work that moves more than it announced never reports more than 1. */
        assert_true(job_compute_progress(150, 100) == 1.0);
        assert_true(job_compute_progress(UINT64_MAX - 1, UINT64_MAX) <= 1.0);
}

static void rate_is_bytes_per_second_and_never_wraps(void **state) {
        assert_int_equal(job_compute_rate(0, 0), 0);
        assert_int_equal(job_compute_rate(MiB, 0), 0);
        assert_int_equal(job_compute_rate(0, USEC_PER_SEC), 0);
        assert_int_equal(job_compute_rate(MiB, USEC_PER_SEC), MiB);
        assert_int_equal(job_compute_rate(MiB, USEC_PER_SEC / 2), 2 * MiB);
        assert_int_equal(job_compute_rate(100 * MiB, 10 * USEC_PER_SEC), 10 * MiB);
        /* 64 PiB in 10 s: bytes × µs is far beyond 64 bits (and a byte/s more or less is fine). */
        assert_in_range(job_compute_rate(UINT64_C(1) << 56, 10 * USEC_PER_SEC),
                        (UINT64_C(1) << 56) / 10 - 1, (UINT64_C(1) << 56) / 10 + 1);
        assert_int_equal(job_compute_rate(UINT64_MAX, 1), UINT64_MAX);
}

static void smoothed_rate_moves_toward_the_sample_by_the_time_it_covers(void **state) {
        usec_t w = JOB_RATE_WINDOW_USEC;

        assert_int_equal(job_smooth_rate(100, 500, 0, w), 100);
        assert_int_equal(job_smooth_rate(300, 300, w / 20, w), 300);
        /* A sample covering a whole window weighs as much as everything before it. */
        assert_int_equal(job_smooth_rate(100, 300, w, w), 200);
        assert_int_equal(job_smooth_rate(300, 100, w, w), 200);
        /* Longer samples weigh more; a very long one is almost all that counts. */
        assert_true(job_smooth_rate(0, 1000, w / 10, w) < job_smooth_rate(0, 1000, w / 2, w));
        assert_true(job_smooth_rate(0, 1000000, 1000 * w, w) >= 999000);
        assert_int_equal(job_smooth_rate(0, 1000, 1, 0), 1000);
        assert_int_equal(job_smooth_rate(UINT64_MAX, UINT64_MAX, w, w), UINT64_MAX);
}

static void a_stalled_rate_falls_to_zero(void **state) {
        uint64_t rate = 100 * MiB;
        int ticks = 0;

        /* One sample a second, as job_update() takes them while nothing moves. */
        while (rate > 0 && ticks < 1000) {
                uint64_t next = job_smooth_rate(rate, 0, JOB_STALLED_USEC, JOB_RATE_WINDOW_USEC);

                assert_true(next < rate);
                rate = next;
                ticks++;
        }
        assert_int_equal(rate, 0);
        assert_true(ticks > 5);         /* gradually, not at once */
}

static void expected_end_needs_a_total_and_a_rate(void **state) {
        usec_t now = mock_realtime;

        assert_int_equal(job_compute_expected_end(0, 0, MiB, now), 0);
        assert_int_equal(job_compute_expected_end(0, 100 * MiB, 0, now), 0);
        assert_int_equal(job_compute_expected_end(0, 100 * MiB, 10 * MiB, now), now + 10 * USEC_PER_SEC);
        assert_int_equal(job_compute_expected_end(50 * MiB, 100 * MiB, 10 * MiB, now), now + 5 * USEC_PER_SEC);
        assert_int_equal(job_compute_expected_end(100 * MiB, 100 * MiB, 0, now), now);
        assert_int_equal(job_compute_expected_end(200 * MiB, 100 * MiB, MiB, now), now);
        /* Later than time can say: unknown. */
        assert_int_equal(job_compute_expected_end(0, UINT64_MAX, 1, now), 0);
}

static void new_jobs_are_numbered_registered_and_announced(void **state) {
        Manager *m = *state;
        char object[] = CISTERN_POOL_PREFIX "/p/v";
        const char *objects[] = { object, CISTERN_POOL_PREFIX "/q/w", NULL };
        Job *j = NULL, *k = NULL;

        assert_int_equal(job_new(m, "Clone", objects, 1000, 5 * MiB, &j), 0);
        ASSERT_EMITTED("added " JOB1,
                       "changed " CISTERN_ROOT_PATH " " MANAGER_INTERFACE " Jobs");
        object[0] = 'X';        /* the job has its own copy */

        assert_int_equal(j->id, 1);
        assert_string_equal(j->name, "1");
        assert_string_equal(j->object_path, JOB1);
        assert_string_equal(j->operation, "Clone");
        assert_string_equal(j->objects[0], CISTERN_POOL_PREFIX "/p/v");
        assert_string_equal(j->objects[1], CISTERN_POOL_PREFIX "/q/w");
        assert_null(j->objects[2]);
        assert_int_equal(j->started_by, 1000);
        assert_int_equal(j->start_time, mock_realtime);
        assert_int_equal(j->start_mono, mock_mono);
        assert_int_equal(j->progress.total, 5 * MiB);
        assert_int_equal(atomic_load(&j->progress.done), 0);
        assert_false(atomic_load(&j->progress.cancel));
        assert_true(j->cancelable);
        assert_int_equal(j->rate, 0);
        assert_int_equal(j->expected_end, 0);
        assert_non_null(j->timer);
        assert_ptr_equal(namemap_get(&m->jobs, "1"), j);

        assert_int_equal(job_new(m, "Export", NULL, 0, 0, &k), 0);
        assert_string_equal(k->object_path, CISTERN_JOB_PREFIX "/2");
        assert_null(k->objects[0]);
        assert_ptr_equal(namemap_get(&m->jobs, "2"), k);
}

static void jobs_beyond_the_limit_are_refused_silently(void **state) {
        Manager *m = *state;
        Job *j = NULL;

        for (unsigned i = 0; i < m->limits.max_jobs; i++)
                new_job(m, 0);
        assert_int_equal(job_new(m, "Clone", NULL, 0, 0, &j), -EMFILE);
        assert_null(j);
        ASSERT_NOTHING_EMITTED();
        assert_int_equal(m->jobs.n, m->limits.max_jobs);

        /* A finished job makes room, and ids are never reused. */
        job_finish(m->jobs.entries[0].value, 0, NULL);
        assert_int_equal(job_new(m, "Clone", NULL, 0, 0, &j), 0);
        assert_int_equal(j->id, m->limits.max_jobs + 1);
}

static void updates_publish_what_changed_at_most_every_tick(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 100 * MiB);

        /* Nothing moved yet: nothing to say. */
        advance(JOB_UPDATE_USEC);
        job_update(j, false);
        ASSERT_NOTHING_EMITTED();

        /* 10 MiB in the first second: the mean since the start. */
        advance(USEC_PER_SEC - JOB_UPDATE_USEC);
        atomic_store(&j->progress.done, 10 * MiB);
        job_update(j, false);
        ASSERT_EMITTED("changed " JOB1 " " JOB_INTERFACE " Progress,BytesDone,Rate,ExpectedEndTime");
        assert_int_equal(j->published_done, 10 * MiB);
        assert_int_equal(j->rate, 10 * MiB);
        assert_int_equal(j->expected_end, mock_realtime + 9 * USEC_PER_SEC);

        /* Unchanged and recently sampled: quiet. */
        advance(JOB_UPDATE_USEC);
        job_update(j, false);
        ASSERT_NOTHING_EMITTED();
        assert_int_equal(j->published_done, 10 * MiB);
}

static void rate_follows_a_moving_average_after_the_first_window(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 1000 * MiB);
        uint64_t before;

        advance(JOB_RATE_WINDOW_USEC);
        atomic_store(&j->progress.done, 20 * MiB);
        job_update(j, false);
        assert_int_equal(j->rate, 10 * MiB);

        /* Twice as fast for a whole window: halfway there. */
        advance(JOB_RATE_WINDOW_USEC);
        atomic_store(&j->progress.done, 60 * MiB);
        job_update(j, false);
        assert_int_equal(j->rate, 15 * MiB);

        /* A stall is noticed within JOB_STALLED_USEC, and the rate falls. */
        n_emitted = 0;
        before = j->rate;
        advance(JOB_STALLED_USEC - 1);
        job_update(j, false);
        ASSERT_NOTHING_EMITTED();
        advance(1);
        job_update(j, false);
        ASSERT_EMITTED("changed " JOB1 " " JOB_INTERFACE " Rate,ExpectedEndTime");
        assert_true(j->rate < before);
        assert_int_equal(j->published_done, 60 * MiB);
}

static void a_job_without_total_has_no_progress_nor_end(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 0);

        advance(USEC_PER_SEC);
        atomic_store(&j->progress.done, MiB);
        job_update(j, false);
        ASSERT_EMITTED("changed " JOB1 " " JOB_INTERFACE " BytesDone,Rate");
        assert_int_equal(j->rate, MiB);
        assert_int_equal(j->expected_end, 0);
}

static void finish_publishes_completes_then_vanishes(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 4 * MiB);

        advance(USEC_PER_SEC);
        atomic_store(&j->progress.done, 4 * MiB);
        job_finish(j, 0, NULL);
        ASSERT_EMITTED("changed " JOB1 " " JOB_INTERFACE " Progress,BytesDone,Rate,ExpectedEndTime",
                       "signal " JOB1 " " JOB_INTERFACE ".Completed true ''",
                       "removed " JOB1,
                       "changed " CISTERN_ROOT_PATH " " MANAGER_INTERFACE " Jobs");
        assert_int_equal(m->jobs.n, 0);
}

static void failures_complete_with_a_message(void **state) {
        Manager *m = *state;

        /* Without a sample since the last one the final update has nothing new to say. */
        job_finish(new_job(m, 0), -ECANCELED, NULL);
        ASSERT_EMITTED("signal " JOB1 " " JOB_INTERFACE ".Completed false 'Cancelled.'",
                       "removed " JOB1,
                       "changed " CISTERN_ROOT_PATH " " MANAGER_INTERFACE " Jobs");

        job_finish(new_job(m, 0), -ENOSPC, "The pool p is full.");
        ASSERT_EMITTED("signal " CISTERN_JOB_PREFIX "/2 " JOB_INTERFACE ".Completed false 'The pool p is full.'",
                       "removed " CISTERN_JOB_PREFIX "/2",
                       "changed " CISTERN_ROOT_PATH " " MANAGER_INTERFACE " Jobs");

        job_finish(new_job(m, 0), -EIO, NULL);
        assert_string_equal(emitted[0], "signal " CISTERN_JOB_PREFIX "/3 " JOB_INTERFACE ".Completed false '"
                            "Input/output error'");
        assert_int_equal(m->jobs.n, 0);
}

static void cancelable_changes_are_announced_once(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 0);

        job_set_cancelable(j, true);
        ASSERT_NOTHING_EMITTED();
        job_set_cancelable(j, false);
        ASSERT_EMITTED("changed " JOB1 " " JOB_INTERFACE " Cancelable");
        assert_false(j->cancelable);
        job_set_cancelable(j, false);
        ASSERT_NOTHING_EMITTED();
}

static void cancel_asks_the_work_once_and_says_nothing(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 0);

        assert_true(job_cancel(j));
        assert_true(atomic_load(&j->progress.cancel));
        assert_false(job_cancel(j));
        assert_true(atomic_load(&j->progress.cancel));
        /* The job stays until its work has stopped and job_finish() is called. */
        ASSERT_NOTHING_EMITTED();
        assert_ptr_equal(namemap_get(&m->jobs, "1"), j);
}

static void free_unregisters_without_a_word(void **state) {
        Manager *m = *state;
        Job *j = new_job(m, 0), *k = new_job(m, 0);

        job_free(j);
        ASSERT_NOTHING_EMITTED();
        assert_int_equal(m->jobs.n, 1);
        assert_null(namemap_get(&m->jobs, "1"));
        assert_ptr_equal(namemap_get(&m->jobs, "2"), k);
}

static void the_timer_keeps_publishing_while_the_work_runs(void **state) {
        Manager *m = *state;
        usec_t deadline;
        Job *j;
        int published = 0;

        real_clock = true;
        j = new_job(m, 100 * MiB);
        deadline = __real_now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
        /* Two separate moves of the work, each published by a tick of the job's own timer. */
        while (published < 2 && __real_now_usec(CLOCK_MONOTONIC) < deadline) {
                atomic_fetch_add(&j->progress.done, MiB);
                assert_true(sd_event_run(m->event, 2 * JOB_UPDATE_USEC) >= 0);
                for (size_t i = 0; i < n_emitted; i++)
                        if (strstr(emitted[i], "BytesDone"))
                                published++;
                n_emitted = 0;
        }
        assert_int_equal(published, 2);
        assert_int_equal(j->published_done, atomic_load(&j->progress.done));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(progress_is_the_done_fraction_and_zero_without_a_total),
                cmocka_unit_test(rate_is_bytes_per_second_and_never_wraps),
                cmocka_unit_test(smoothed_rate_moves_toward_the_sample_by_the_time_it_covers),
                cmocka_unit_test(a_stalled_rate_falls_to_zero),
                cmocka_unit_test_setup_teardown(expected_end_needs_a_total_and_a_rate, setup, teardown),
                cmocka_unit_test_setup_teardown(new_jobs_are_numbered_registered_and_announced, setup, teardown),
                cmocka_unit_test_setup_teardown(jobs_beyond_the_limit_are_refused_silently, setup, teardown),
                cmocka_unit_test_setup_teardown(updates_publish_what_changed_at_most_every_tick, setup, teardown),
                cmocka_unit_test_setup_teardown(rate_follows_a_moving_average_after_the_first_window, setup, teardown),
                cmocka_unit_test_setup_teardown(a_job_without_total_has_no_progress_nor_end, setup, teardown),
                cmocka_unit_test_setup_teardown(finish_publishes_completes_then_vanishes, setup, teardown),
                cmocka_unit_test_setup_teardown(failures_complete_with_a_message, setup, teardown),
                cmocka_unit_test_setup_teardown(cancelable_changes_are_announced_once, setup, teardown),
                cmocka_unit_test_setup_teardown(cancel_asks_the_work_once_and_says_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(free_unregisters_without_a_word, setup, teardown),
                cmocka_unit_test_setup_teardown(the_timer_keeps_publishing_while_the_work_runs, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
