/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "ctl-bus.h"

/* Sends m, a call of a method of the volume at volume_path that may run for long, and waits up
 * to CALL_TIMEOUT_LONG_USEC for its reply. Meanwhile it follows the job the call starts: one
 * whose Objects include volume_path and that our uid started. With show_progress it draws a
 * progress bar of that job on stderr, and clears it before returning.
 *
 * On SIGINT it cancels the job and goes on waiting: the reply is then the service's Cancelled
 * error. A SIGINT while no job runs, or a second one, stops waiting at once; the error then
 * says that the service may still complete the operation.
 *
 * Returns 0 with the reply, or a negative errno with error set (as sd_bus_call() does). */
int bus_call_with_progress(sd_bus *bus, sd_bus_message *m, const char *volume_path,
                           bool show_progress, sd_bus_error *error, sd_bus_message **ret_reply);
