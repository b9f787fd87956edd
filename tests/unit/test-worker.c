/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <cmocka.h>

#include "worker.h"

typedef struct Item {
        pthread_t loop_thread;
        bool ran_off_loop;
        int done_calls;
        int result;
        int *remaining;
        sd_event *event;
} Item;

static int work_note_thread(void *userdata) {
        Item *i = userdata;

        i->ran_off_loop = !pthread_equal(pthread_self(), i->loop_thread);
        return 42;
}

static void done_count(int result, void *userdata) {
        Item *i = userdata;

        i->done_calls++;
        i->result = result;
        /* Back on the loop's thread. */
        assert_true(pthread_equal(pthread_self(), i->loop_thread));
        if (--*i->remaining == 0)
                sd_event_exit(i->event, 0);
}

static void work_runs_off_the_loop_and_reports_back_once(void **state) {
        _cleanup_(workers_freep) Workers *w = NULL;
        sd_event *e = NULL;
        Item items[8] = {};
        int remaining = 8;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(workers_new(e, 8, 8, &w), 0);
        for (int k = 0; k < 8; k++) {
                items[k] = (Item) { .loop_thread = pthread_self(), .remaining = &remaining, .event = e };
                assert_int_equal(workers_run(w, work_note_thread, done_count, &items[k]), 0);
        }
        assert_int_equal(workers_running(w), 8);
        assert_int_equal(sd_event_loop(e), 0);
        for (int k = 0; k < 8; k++) {
                assert_true(items[k].ran_off_loop);
                assert_int_equal(items[k].done_calls, 1);
                assert_int_equal(items[k].result, 42);
        }
        assert_int_equal(workers_running(w), 0);
        w = workers_free(w);
        sd_event_unref(e);
}

static void more_than_the_limit_is_refused(void **state) {
        _cleanup_(workers_freep) Workers *w = NULL;
        sd_event *e = NULL;
        Item items[2] = {};
        int remaining = 2;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(workers_new(e, 2, 2, &w), 0);
        for (int k = 0; k < 2; k++) {
                items[k] = (Item) { .loop_thread = pthread_self(), .remaining = &remaining, .event = e };
                assert_int_equal(workers_run(w, work_note_thread, done_count, &items[k]), 0);
        }
        assert_int_equal(workers_run(w, work_note_thread, done_count, &items[0]), -EMFILE);
        /* Freeing waits for both and still reports each once. */
        w = workers_free(w);
        assert_int_equal(items[0].done_calls, 1);
        assert_int_equal(items[1].done_calls, 1);
        sd_event_unref(e);
}

/* Beyond the threads, work waits its turn instead of being refused. */
static void work_beyond_the_threads_waits_for_one(void **state) {
        _cleanup_(workers_freep) Workers *w = NULL;
        sd_event *e = NULL;
        Item items[5] = {};
        int remaining = 5;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(workers_new(e, 1, 5, &w), 0);
        for (int k = 0; k < 5; k++) {
                items[k] = (Item) { .loop_thread = pthread_self(), .remaining = &remaining, .event = e };
                assert_int_equal(workers_run(w, work_note_thread, done_count, &items[k]), 0);
        }
        assert_int_equal(workers_running(w), 5);
        assert_int_equal(sd_event_loop(e), 0);
        for (int k = 0; k < 5; k++) {
                assert_true(items[k].ran_off_loop);
                assert_int_equal(items[k].done_calls, 1);
        }
        assert_int_equal(workers_running(w), 0);
        w = workers_free(w);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(work_runs_off_the_loop_and_reports_back_once),
                cmocka_unit_test(more_than_the_limit_is_refused),
                cmocka_unit_test(work_beyond_the_threads_waits_for_one),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
