/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <time.h>

#include "errors.h"
#include "log.h"
#include "polkit.h"

#define POLKIT_SERVICE   "org.freedesktop.PolicyKit1"
#define POLKIT_PATH      "/org/freedesktop/PolicyKit1/Authority"
#define POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"
#define POLKIT_ERROR_PREFIX "org.freedesktop.PolicyKit1.Error."
#define POLKIT_CHECK_ALLOW_USER_INTERACTION 1U

/* A person may need a while to type a password; without a prompt polkitd answers at once. */
#define POLKIT_TIMEOUT_USEC             (25 * USEC_PER_SEC)
#define POLKIT_INTERACTIVE_TIMEOUT_USEC (5 * 60 * USEC_PER_SEC)
/* A re-queued message is dispatched on the next loop iteration; an answer still unclaimed after
 * this long belongs to a handler that gave up before asking again (e.g. failed re-validation). */
#define POLKIT_ANSWER_MAX_AGE_USEC      (10 * USEC_PER_SEC)

typedef enum QueryState {
        QUERY_PENDING,   /* CheckAuthorization is on its way */
        QUERY_ANSWERED,  /* verdict stored, message re-queued, waiting for its handler */
        QUERY_CONSUMED,  /* handler was told "authorized"; kept in case the same message needs a
                          * second action (Clone: read, then create) and is dispatched again */
} QueryState;

typedef struct Query Query;
struct Query {
        Polkit *polkit;
        sd_bus_message *request;
        char *action;
        sd_bus_slot *slot;
        QueryState state;
        bool interactive;
        bool authorized;
        sd_bus_error error;      /* why not, when !authorized */
        usec_t answered_usec;
        Query *prev, *next;
};

struct Polkit {
        sd_bus *bus;
        Query *queries;
};

static Query *query_free(Query *q) {
        if (!q)
                return NULL;
        if (q->polkit) {
                if (q->prev)
                        q->prev->next = q->next;
                else
                        q->polkit->queries = q->next;
                if (q->next)
                        q->next->prev = q->prev;
        }
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        sd_bus_error_free(&q->error);
        free(q->action);
        free(q);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Query *, query_free);

static void query_link(Polkit *p, Query *q) {
        q->polkit = p;
        q->next = p->queries;
        if (p->queries)
                p->queries->prev = q;
        p->queries = q;
}

static Query *query_find(Polkit *p, sd_bus_message *m, const char *action) {
        for (Query *q = p->queries; q; q = q->next)
                if (q->request == m && streq(q->action, action))
                        return q;
        return NULL;
}

static bool message_is_waiting(Polkit *p, sd_bus_message *m) {
        for (Query *q = p->queries; q; q = q->next)
                if (q->request == m && q->state != QUERY_CONSUMED)
                        return true;
        return false;
}

/* Drops answers nobody came back for, then "authorized" records of messages that wait for
 * nothing more. The message being dispatched right now is left alone: its handler may still be
 * on its way to the next polkit_check(). */
static void polkit_gc(Polkit *p, sd_bus_message *current) {
        usec_t now = now_usec(CLOCK_MONOTONIC);
        Query *next;

        for (Query *q = p->queries; q; q = next) {
                next = q->next;
                if (q->request != current && q->state == QUERY_ANSWERED &&
                    now - q->answered_usec > POLKIT_ANSWER_MAX_AGE_USEC) {
                        log_debug("Dropping unclaimed polkit answer for %s.", q->action);
                        query_free(q);
                }
        }
        for (Query *q = p->queries; q; q = next) {
                next = q->next;
                if (q->request != current && q->state == QUERY_CONSUMED &&
                    !message_is_waiting(p, q->request))
                        query_free(q);
        }
}

int bus_message_sender_uid(sd_bus_message *m, uid_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        assert(m);
        assert(ret);

        /* No SD_BUS_CREDS_AUGMENT: augmented fields are read from /proc/<pid> after the fact and
         * race with pid reuse and setuid exec. The EUID comes from the bus daemon (SO_PEERCRED). */
        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID|SD_BUS_CREDS_UID, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r == -ENODATA)
                r = sd_bus_creds_get_uid(creds, &uid);
        if (r < 0)
                return r;

        *ret = uid;
        return 0;
}

static int append_details(sd_bus_message *c, const char *const *details) {
        int r;

        r = sd_bus_message_open_container(c, 'a', "{ss}");
        if (r < 0)
                return r;
        for (const char *const *d = details; d && d[0]; d += 2) {
                if (!d[1])
                        return -EINVAL;
                r = sd_bus_message_append(c, "{ss}", d[0], d[1]);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(c);
}

static int new_check_call(
                sd_bus *bus,
                sd_bus_message *m,
                const char *action,
                const char *const *details,
                bool interactive,
                sd_bus_message **ret) {

        _cleanup_(sd_bus_message_unrefp) sd_bus_message *c = NULL;
        const char *sender;
        int r;

        /* Only the bus name is a stable subject; a pid could be recycled (CVE-2013-4288). */
        sender = sd_bus_message_get_sender(m);
        if (!sender)
                return -EBADMSG;

        r = sd_bus_message_new_method_call(bus, &c, POLKIT_SERVICE, POLKIT_PATH, POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(c, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, action);
        if (r < 0)
                return r;
        r = append_details(c, details);
        if (r < 0)
                return r;
        r = sd_bus_message_append(c, "us", interactive ? POLKIT_CHECK_ALLOW_USER_INTERACTION : 0, "");
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

static const char *error_reason(const sd_bus_error *e) {
        if (sd_bus_error_has_names(e, SD_BUS_ERROR_TIMEOUT, SD_BUS_ERROR_NO_REPLY))
                return "polkit did not answer in time";
        if (e->name && strncmp(e->name, POLKIT_ERROR_PREFIX, strlen(POLKIT_ERROR_PREFIX)) == 0)
                return "polkit refused the request";
        return "polkit is not available";
}

static void query_set_verdict(Query *q, sd_bus_message *reply) {
        const sd_bus_error *e;
        int authorized, challenge, r;

        e = sd_bus_message_get_error(reply);
        if (e) {
                log_warning("Cannot check authorization for %s: %s: %s", q->action, e->name, e->message);
                sd_bus_error_setf(&q->error, ERR_NOT_AUTHORIZED,
                                  "Not authorized to perform %s: authorization could not be obtained because %s.",
                                  q->action, error_reason(e));
                return;
        }

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                log_warning_errno(r, "Failed to parse polkit's answer for %s: %m", q->action);
                sd_bus_error_setf(&q->error, ERR_NOT_AUTHORIZED,
                                  "Not authorized to perform %s: polkit sent an invalid answer.", q->action);
                return;
        }

        if (authorized)
                q->authorized = true;
        else if (challenge)
                sd_bus_error_setf(&q->error, ERR_NOT_AUTHORIZED,
                                  "Not authorized to perform %s: authentication is required, %s.", q->action,
                                  q->interactive ? "but no authentication agent was available"
                                                 : "but the caller did not allow interactive authentication");
        else
                sd_bus_error_setf(&q->error, ERR_NOT_AUTHORIZED, "Not authorized to perform %s.", q->action);
}

static int query_reply(sd_bus_message *reply, void *userdata, _unused_ sd_bus_error *ret_error) {
        Query *q = userdata;
        int r;

        q->slot = sd_bus_slot_unref(q->slot);
        query_set_verdict(q, reply);
        q->state = QUERY_ANSWERED;
        q->answered_usec = now_usec(CLOCK_MONOTONIC);
        log_debug("polkit answered %s: %s.", q->action, q->authorized ? "yes" : "no");

        /* Dispatch the call again from the top; its handler re-validates and picks up the answer. */
        r = sd_bus_message_rewind(q->request, true);
        if (r >= 0)
                r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r < 0) {
                log_error_errno(r, "Failed to re-queue call after authorization: %m");
                (void) sd_bus_reply_method_errorf(q->request, ERR_FAILED,
                                                  "The authorization check could not be completed.");
                query_free(q);
        }
        return 0;
}

static int query_start(Polkit *p, sd_bus_message *m, const char *action, const char *const *details) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        _cleanup_(query_freep) Query *q = NULL;
        int r;

        q = calloc(1, sizeof(Query));
        if (!q)
                return -ENOMEM;
        q->action = strdup(action);
        if (!q->action)
                return -ENOMEM;
        q->interactive = sd_bus_message_get_allow_interactive_authorization(m) > 0;

        r = new_check_call(p->bus, m, action, details, q->interactive, &call);
        if (r < 0)
                return r;
        r = sd_bus_call_async(p->bus, &q->slot, call, query_reply, q,
                              q->interactive ? POLKIT_INTERACTIVE_TIMEOUT_USEC : POLKIT_TIMEOUT_USEC);
        if (r < 0)
                return r;

        q->request = sd_bus_message_ref(m);
        query_link(p, TAKE_PTR(q));
        log_debug("Asking polkit about %s.", action);
        return 0;
}

/* Hands the stored verdict to the handler that runs again for the answered message. */
static int query_consume(Query *q, sd_bus_error *error) {
        if (q->state == QUERY_PENDING)
                return 0;
        if (q->authorized) {
                q->state = QUERY_CONSUMED;
                return 1;
        }
        if (error)
                (void) sd_bus_error_move(error, &q->error);
        query_free(q);
        return -EACCES;
}

int polkit_check(Polkit *p, sd_bus_message *m, const char *action, const char *const *details, sd_bus_error *error) {
        Query *q;
        uid_t uid;
        int r;

        assert(p);
        assert(m);
        assert(action);

        polkit_gc(p, m);

        q = query_find(p, m, action);
        if (q)
                return query_consume(q, error);

        /* CVE-2021-3560: a caller we cannot identify is never treated as root. */
        r = bus_message_sender_uid(m, &uid);
        if (r < 0) {
                log_debug_errno(r, "Failed to get the caller's credentials: %m");
                sd_bus_error_setf(error, ERR_NOT_AUTHORIZED,
                                  "Not authorized to perform %s: the caller's credentials could not be obtained.",
                                  action);
                return -EACCES;
        }
        if (uid == 0)
                return 1;

        r = query_start(p, m, action, details);
        if (r < 0) {
                log_warning_errno(r, "Failed to ask polkit about %s: %m", action);
                sd_bus_error_setf(error, ERR_NOT_AUTHORIZED,
                                  "Not authorized to perform %s: authorization could not be obtained from polkit.",
                                  action);
                return -EACCES;
        }
        return 0;
}

int polkit_new(sd_bus *bus, Polkit **ret) {
        Polkit *p;

        assert(bus);
        assert(ret);

        p = calloc(1, sizeof(Polkit));
        if (!p)
                return -ENOMEM;
        p->bus = sd_bus_ref(bus);

        *ret = p;
        return 0;
}

Polkit *polkit_free(Polkit *p) {
        if (!p)
                return NULL;
        while (p->queries)
                query_free(p->queries);
        sd_bus_unref(p->bus);
        free(p);
        return NULL;
}

bool polkit_busy(Polkit *p) {
        if (!p)
                return false;

        polkit_gc(p, sd_bus_get_current_message(p->bus));
        for (Query *q = p->queries; q; q = q->next)
                if (q->state != QUERY_CONSUMED)
                        return true;
        return false;
}
