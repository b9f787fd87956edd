/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sys/stat.h>

#include "log.h"
#include "session.h"

static int on_name_owner_changed(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Session *s = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(msg, "sss", &name, &old_owner, &new_owner) < 0 || *new_owner)
                return 0;
        log_debug("%s left the bus; ending its session on %s/%s.", s->sender, s->volume->pool->name, s->volume->name);
        session_free(s);
        return 0;
}

static int on_name_owner(sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Session *s = userdata;

        s->lookup = sd_bus_slot_unref(s->lookup);
        if (sd_bus_message_is_method_error(reply, NULL)) {
                log_debug("%s left the bus before its session on %s/%s began; ending it.",
                          s->sender, s->volume->pool->name, s->volume->name);
                session_free(s);
        }
        return 0;
}

/* Ends the session when its caller leaves the bus. Both calls to the bus driver are
 * asynchronous: the match, and the check that the caller had not already left before it. */
static int session_watch(Session *s) {
        _cleanup_free_ char *match = NULL;
        int r;

        if (asprintf(&match, "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'", s->sender) < 0)
                return -ENOMEM;
        r = sd_bus_add_match_async(s->manager->bus, &s->watch, match, on_name_owner_changed, NULL, s);
        if (r < 0)
                return r;
        return sd_bus_call_method_async(s->manager->bus, &s->lookup, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "GetNameOwner", on_name_owner, s, "s", s->sender);
}

int session_new(Volume *v, SessionKind kind, const char *sender, Session **ret) {
        Manager *m = v->pool->manager;
        Session *s;
        int r;

        if (m->n_sessions >= m->limits.max_sessions)
                return -EMFILE;
        s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->manager = m;
        s->volume = v;
        s->kind = kind;
        s->staging_fd = -EBADF;
        s->sender = strdup(sender);
        if (!s->sender) {
                free(s);
                return -ENOMEM;
        }
        s->next = m->sessions;
        if (m->sessions)
                m->sessions->prev = s;
        m->sessions = s;
        m->n_sessions++;
        if (kind == SESSION_EXPORT)
                v->readers++;
        else
                v->operation = "ImportBegin";
        r = session_watch(s);
        if (r < 0) {
                session_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

/* Whether the staging object changed since the last look (a write changes its ctime). */
static bool staging_changed(Session *s) {
        struct stat st;

        if (fstat(s->staging_fd, &st) < 0 ||
            (st.st_ctim.tv_sec == s->last_change.tv_sec && st.st_ctim.tv_nsec == s->last_change.tv_nsec))
                return false;
        s->last_change = st.st_ctim;
        return true;
}

static int on_idle_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        Session *s = userdata;

        if (staging_changed(s)) {
                (void) sd_event_source_set_time_relative(source, s->manager->session_timeout);
                (void) sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
                return 0;
        }
        log_info("Nothing was written to the import of %s/%s for %llu s; discarding it.", s->volume->pool->name,
                 s->volume->name, (unsigned long long) (s->manager->session_timeout / USEC_PER_SEC));
        session_free(s);
        return 0;
}

int session_new_import(Volume *v, const char *sender, char *staging, int staging_fd, uint64_t size,
                       const char *format, Session **ret) {
        Manager *m = v->pool->manager;
        Session *s;
        int r;

        r = session_new(v, SESSION_IMPORT, sender, &s);
        if (r < 0) {
                volume_discard_object(v, staging);
                free(staging);
                safe_close(staging_fd);
                return r;
        }
        s->staging = staging;
        s->staging_fd = staging_fd;
        s->size = size;
        s->format = format;
        (void) staging_changed(s);
        if (m->session_timeout > 0) {
                r = sd_event_add_time_relative(m->event, &s->idle, CLOCK_MONOTONIC, m->session_timeout,
                                               USEC_PER_SEC, on_idle_timeout, s);
                if (r < 0) {
                        session_free(s);
                        return r;
                }
        }
        *ret = s;
        return 0;
}

Session *session_free(Session *s) {
        if (!s)
                return NULL;
        if (s->prev)
                s->prev->next = s->next;
        else
                s->manager->sessions = s->next;
        if (s->next)
                s->next->prev = s->prev;
        s->manager->n_sessions--;
        if (s->kind == SESSION_EXPORT)
                s->volume->readers--;
        else
                s->volume->operation = NULL;
        if (s->staging)
                volume_discard_object(s->volume, s->staging);
        free(s->staging);
        safe_close(s->staging_fd);
        sd_event_source_disable_unref(s->idle);
        sd_bus_slot_unref(s->watch);
        sd_bus_slot_unref(s->lookup);
        free(s->sender);
        free(s);
        return NULL;
}

Session *session_find(Manager *m, Volume *v, SessionKind kind, const char *sender) {
        for (Session *s = m->sessions; s; s = s->next)
                if (s->volume == v && s->kind == kind && (!sender || streq(s->sender, sender)))
                        return s;
        return NULL;
}
