/* SPDX-License-Identifier: LGPL-2.1-or-later */
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

int session_new(Volume *v, const char *sender, Session **ret) {
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
        v->readers++;
        r = session_watch(s);
        if (r < 0) {
                session_free(s);
                return r;
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
        s->volume->readers--;
        sd_bus_slot_unref(s->watch);
        sd_bus_slot_unref(s->lookup);
        free(s->sender);
        free(s);
        return NULL;
}

Session *session_find(Manager *m, Volume *v, const char *sender) {
        for (Session *s = m->sessions; s; s = s->next)
                if (s->volume == v && streq(s->sender, sender))
                        return s;
        return NULL;
}
