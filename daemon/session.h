/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <time.h>

#include "volume.h"

typedef enum SessionKind {
        SESSION_EXPORT,         /* ExportBegin: the caller reads an fd of the committed image */
        SESSION_IMPORT,         /* ImportBegin: the caller writes a staging object */
} SessionKind;

/* A caller holding an fd on a volume's data between ExportBegin and ExportEnd, or ImportBegin
 * and ImportEnd. The session ends with its End call or when the caller leaves the bus; while it
 * lasts the volume cannot be removed and the daemon does not exit. An import session is also
 * the volume's operation, so nothing else changes the volume meanwhile, and it ends when the
 * staging object sees no write for the manager's session timeout. */
typedef struct Session Session;
struct Session {
        Manager *manager;
        Volume *volume;
        SessionKind kind;
        char *sender;           /* the caller's unique bus name */
        sd_bus_slot *watch;     /* NameOwnerChanged of sender */
        sd_bus_slot *lookup;    /* GetNameOwner of sender, while it runs */
        Session *prev, *next;

        /* SESSION_IMPORT */
        char *staging;          /* the object written; discarded with the session unless taken */
        int staging_fd;         /* read-only: to watch it change and see whether it is still open for writing */
        uint64_t size;          /* what ImportBegin promised */
        const char *format;     /* ...and the format of the bytes: a static string */
        sd_event_source *idle;  /* the timeout */
        struct timespec last_change;    /* ctime of staging at the last look */
};

/* -EMFILE beyond the limit of sessions. A caller that has already left the bus is found out
 * asynchronously, and its session ended then. */
int session_new(Volume *v, SessionKind kind, const char *sender, Session **ret);
/* An import session on the new staging object, to hold size bytes of format (a static string),
 * taking staging and staging_fd whatever happens. */
int session_new_import(Volume *v, const char *sender, char *staging, int staging_fd, uint64_t size,
                       const char *format, Session **ret);
Session *session_free(Session *s);
/* The session of kind that sender has on v; for imports, of any sender when sender is NULL. */
Session *session_find(Manager *m, Volume *v, SessionKind kind, const char *sender);
