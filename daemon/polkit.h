/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "util.h"

/* Asynchronous polkit authorization, the way systemd's bus daemons do it.
 *
 * A method handler calls polkit_check() after parsing and validating its arguments, before any
 * side effect:
 *   r = polkit_check(m->polkit, msg, "org.cistern.volume.modify", details, error);
 *   if (r < 0) return r;       (error is set: NotAuthorized, or Failed)
 *   if (r == 0) return 1;      (a query is under way; do not reply)
 *   ...authorized: act...
 * When polkit answers, the very same message is re-queued on the bus (sd_bus_enqueue_for_read),
 * so the handler runs again from the top: it re-parses, re-validates against the current state
 * and calls polkit_check() again, which now returns the stored answer at once.
 *
 * A handler that needs two actions (Clone: read on the source, create on the destination) simply
 * calls polkit_check() twice, always in the same order; the message is dispatched once more per
 * action and every earlier "yes" is remembered for it. On 0 a handler neither replies nor keeps
 * state (it will run again from the top); it changes nothing before 1. When re-validation fails
 * on the second run it just replies with that error; the unclaimed answer is dropped after a few
 * seconds. */

typedef struct Polkit Polkit;

int polkit_new(sd_bus *bus, Polkit **ret);
Polkit *polkit_free(Polkit *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Polkit *, polkit_free);

/* True while a query is waiting for polkitd or an answer waits for its handler (keeps the
 * daemon from exiting idle). */
bool polkit_busy(Polkit *p);

/* details: NULL-terminated list of key, value, key, value… (e.g. "pool", "p1", "volume", "v1",
 * "owner", "1000", "operation", "Resize").
 * Returns 1 authorized, 0 query started, negative errno with error set on denial or failure.
 * The sender's effective uid 0 is authorized without asking polkit. Interactive authentication
 * is requested only when the message allows it. When polkitd cannot be reached, or the
 * sender's credentials cannot be obtained, the call is denied. */
int polkit_check(Polkit *p, sd_bus_message *m, const char *action, const char *const *details, sd_bus_error *error);

/* The effective uid of the sender of m, as the bus daemon reports it. */
int bus_message_sender_uid(sd_bus_message *m, uid_t *ret);
