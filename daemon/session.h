/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "volume.h"

/* A caller holding an fd on a volume's data between ExportBegin and ExportEnd. The session ends
 * with ExportEnd or when the caller leaves the bus; while it lasts the volume cannot be removed
 * and the daemon does not exit. */
typedef struct Session Session;
struct Session {
        Manager *manager;
        Volume *volume;
        char *sender;           /* the caller's unique bus name */
        sd_bus_slot *watch;     /* NameOwnerChanged of sender */
        sd_bus_slot *lookup;    /* GetNameOwner of sender, while it runs */
        Session *prev, *next;
};

/* -EMFILE beyond the limit of sessions. A caller that has already left the bus is found out
 * asynchronously, and its session ended then. */
int session_new(Volume *v, const char *sender, Session **ret);
Session *session_free(Session *s);
Session *session_find(Manager *m, Volume *v, const char *sender);
