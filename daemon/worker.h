/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-event.h>

#include "util.h"

/* Runs blocking work (file creation, preallocation, fsync, deletion, later copies) on a thread
 * of its own, so that the event loop keeps answering. The work function touches no sd-bus
 * object and nothing the loop may change meanwhile; its result comes back to the loop, where
 * the done callback replies and emits signals. */

typedef struct Workers Workers;

typedef int (*WorkFunc)(void *userdata);
typedef void (*WorkDone)(int result, void *userdata);

/* At most max_threads items run at once; more wait in order, up to max in all. */
int workers_new(sd_event *event, unsigned max_threads, unsigned max, Workers **ret);
/* Waits for every running work item and runs its done callback, then frees. */
Workers *workers_free(Workers *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(Workers *, workers_free);

/* Waits, blocking, until every running work item finished and its done callback ran. */
void workers_drain(Workers *w);

/* -EMFILE when max work items run or wait already. done is called exactly once, from the loop, unless
 * this returns an error. */
int workers_run(Workers *w, WorkFunc work, WorkDone done, void *userdata);
unsigned workers_running(Workers *w);
