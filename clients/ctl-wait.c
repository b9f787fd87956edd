/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <signal.h>
#include <sys/ioctl.h>
#include <time.h>

#include <systemd/sd-event.h>

#include "ctl-objects.h"
#include "ctl-wait.h"
#include "progress.h"

#define OBJECT_MANAGER_IFACE "org.freedesktop.DBus.ObjectManager"
#define PROPERTIES_IFACE "org.freedesktop.DBus.Properties"

/* At most ten redraws a second: a terminal is slower than a bus full of PropertiesChanged. */
#define REDRAW_INTERVAL_USEC (USEC_PER_SEC / 10)

typedef struct Wait {
        sd_bus *bus;
        sd_event *event;
        char *volume_path;
        uid_t uid;
        bool show_progress;

        sd_bus_slot *call_slot;
        sd_bus_message *reply;
        int result;                     /* < 0 when waiting stopped without a reply */

        sd_bus_slot *added_slot, *removed_slot;
        Job job;                        /* job.path is NULL while no job is known */
        sd_bus_slot *job_changed_slot;
        sd_bus_slot *cancel_slot;
        unsigned interrupts;

        sd_event_source *sigint_source;
        sigset_t saved_mask;
        bool mask_saved;
        sd_event_source *redraw_source;
        uint64_t last_draw;             /* CLOCK_MONOTONIC µs */
        bool drawn;
} Wait;

static void wait_forget_job(Wait *w) {
        w->job_changed_slot = sd_bus_slot_unref(w->job_changed_slot);
        job_done(&w->job);
}

static void wait_done(Wait *w) {
        wait_forget_job(w);
        free(w->volume_path);
        sd_bus_slot_unref(w->cancel_slot);
        sd_bus_slot_unref(w->added_slot);
        sd_bus_slot_unref(w->removed_slot);
        sd_bus_slot_unref(w->call_slot);
        sd_bus_message_unref(w->reply);
        sd_event_source_unref(w->sigint_source);
        sd_event_source_unref(w->redraw_source);
        if (w->event) {
                (void) sd_bus_detach_event(w->bus);
                sd_event_unref(w->event);
        }
}

static unsigned terminal_columns(void) {
        struct winsize ws = {};

        if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) < 0)
                return 0;
        return ws.ws_col;
}

static void progress_clear(Wait *w) {
        if (!w->drawn)
                return;
        fputs("\r\033[K", stderr);
        fflush(stderr);
        w->drawn = false;
}

static void progress_draw(Wait *w) {
        char line[PROGRESS_LINE_MAX];
        ProgressInfo p = {
                .fraction = w->job.progress_valid ? w->job.progress : -1,
                .bytes_done = w->job.bytes_done,
                .rate = w->job.rate,
                .remaining_usec = PROGRESS_UNKNOWN,
        };
        uint64_t now;

        if (w->job.expected_end_time > 0 && sd_event_now(w->event, CLOCK_REALTIME, &now) >= 0)
                p.remaining_usec = w->job.expected_end_time > now ? w->job.expected_end_time - now : 0;

        fprintf(stderr, "\r%s\033[K", progress_format(line, terminal_columns(), &p));
        fflush(stderr);
        w->drawn = true;
        (void) sd_event_now(w->event, CLOCK_MONOTONIC, &w->last_draw);
}

static int on_redraw(sd_event_source *s, uint64_t usec, void *userdata) {
        Wait *w = userdata;

        if (w->job.path)
                progress_draw(w);
        return 0;
}

/* Draws now, or arms a timer for when the rate limit allows it. */
static void progress_schedule(Wait *w) {
        uint64_t now, next;

        if (!w->show_progress || sd_event_now(w->event, CLOCK_MONOTONIC, &now) < 0)
                return;

        next = w->last_draw + REDRAW_INTERVAL_USEC;
        if (w->last_draw == 0 || now >= next) {
                progress_draw(w);
                return;
        }

        if (!w->redraw_source) {
                if (sd_event_add_time(w->event, &w->redraw_source, CLOCK_MONOTONIC, next, 0, on_redraw, w) < 0)
                        return;         /* the next change draws it */
        } else if (sd_event_source_get_enabled(w->redraw_source, NULL) == 0) {
                (void) sd_event_source_set_time(w->redraw_source, next);
                (void) sd_event_source_set_enabled(w->redraw_source, SD_EVENT_ONESHOT);
        }
}

static int on_job_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;
        const char *iface;

        if (sd_bus_message_read(m, "s", &iface) < 0 || !streq(iface, CISTERN_JOB_IFACE))
                return 0;
        /* A malformed update only costs an update of the bar. */
        if (job_read_properties(m, &w->job) >= 0)
                progress_schedule(w);
        return 0;
}

static bool job_is_ours(const Wait *w, const Job *j) {
        if (j->started_by != w->uid)
                return false;
        STRV_FOREACH(o, j->objects)
                if (streq(*o, w->volume_path))
                        return true;
        return false;
}

/* Takes j over when it is the job our call started. */
static int wait_adopt_job(Wait *w, const char *path, Job *j) {
        int r;

        if (!job_is_ours(w, j))
                return 0;

        j->path = strdup(path);
        if (!j->path)
                return -ENOMEM;
        r = job_id_from_path(path, &j->id);
        if (r < 0)
                return r;
        /* Updates sent before this match is in place are lost; the next one brings all news. */
        r = sd_bus_match_signal_async(w->bus, &w->job_changed_slot, CISTERN_SERVICE, path,
                                      PROPERTIES_IFACE, "PropertiesChanged", on_job_changed, NULL, w);
        if (r < 0)
                return r;

        w->job = *j;
        *j = (Job) {};
        progress_schedule(w);
        return 1;
}

static int on_interfaces_added(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;
        const char *path, *iface;
        int r;

        if (w->job.path)
                return 0;

        r = sd_bus_message_read(m, "o", &path);
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "{sa{sv}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sa{sv}")) > 0) {
                r = sd_bus_message_read(m, "s", &iface);
                if (r >= 0 && streq(iface, CISTERN_JOB_IFACE)) {
                        Job j = {};

                        r = job_read_properties(m, &j);
                        if (r >= 0)
                                r = wait_adopt_job(w, path, &j);
                        job_done(&j);
                        return 0;
                }
                if (r >= 0)
                        r = sd_bus_message_skip(m, "a{sv}");
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        return 0;
}

static int on_interfaces_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;
        const char *path;

        /* The job is done; the call may still have work left, and perhaps another job. */
        if (w->job.path && sd_bus_message_read(m, "o", &path) >= 0 && streq(path, w->job.path))
                wait_forget_job(w);
        return 0;
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;

        w->reply = sd_bus_message_ref(m);
        return sd_event_exit(w->event, 0);
}

static int on_cancel_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Wait *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        w->cancel_slot = sd_bus_slot_unref(w->cancel_slot);
        if (e && !w->reply) {
                progress_clear(w);
                (void) log_bus_error(0, e, "Failed to cancel the operation");
        }
        return 0;
}

static int wait_cancel_job(Wait *w) {
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        int r;

        /* Cancelling one's own job needs no authorization. */
        r = bus_new_method_call(w->bus, w->job.path, CISTERN_JOB_IFACE, "Cancel", false, &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r >= 0)
                r = sd_bus_call_async(w->bus, &w->cancel_slot, m, on_cancel_reply, w, 0);
        return r;
}

static int on_sigint(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Wait *w = userdata;

        progress_clear(w);
        if (++w->interrupts == 1 && w->job.path && wait_cancel_job(w) >= 0) {
                fprintf(stderr, "%s: Cancelling...\n", program_invocation_short_name);
                return 0;
        }

        w->result = -EINTR;
        return sd_event_exit(w->event, 0);
}

static int wait_setup(Wait *w, sd_bus_message *m) {
        sigset_t mask;
        int r;

        r = sd_event_default(&w->event);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(w->bus, w->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                w->event = sd_event_unref(w->event);
                return r;
        }

        /* Asked for before the call goes out: the bus handles our messages in order, so no job
         * can appear before we listen. */
        r = sd_bus_match_signal_async(w->bus, &w->added_slot, CISTERN_SERVICE, CISTERN_ROOT_PATH,
                                      OBJECT_MANAGER_IFACE, "InterfacesAdded", on_interfaces_added, NULL, w);
        if (r >= 0)
                r = sd_bus_match_signal_async(w->bus, &w->removed_slot, CISTERN_SERVICE, CISTERN_ROOT_PATH,
                                              OBJECT_MANAGER_IFACE, "InterfacesRemoved", on_interfaces_removed,
                                              NULL, w);
        if (r < 0)
                return r;

        /* sd-event reads signals from a signalfd, which sees only blocked signals. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, &w->saved_mask) < 0)
                return -errno;
        w->mask_saved = true;
        r = sd_event_add_signal(w->event, &w->sigint_source, SIGINT, on_sigint, w);
        if (r < 0)
                return r;

        return sd_bus_call_async(w->bus, &w->call_slot, m, on_reply, w, CALL_TIMEOUT_LONG_USEC);
}

int bus_call_with_progress(sd_bus *bus, sd_bus_message *m, const char *volume_path,
                           bool show_progress, sd_bus_error *error, sd_bus_message **ret_reply) {
        _cleanup_(wait_done) Wait w = {
                .bus = bus,
                .uid = geteuid(),
                .show_progress = show_progress,
        };
        int r;

        /* A copy: volume_path may point into m, which sending changes. */
        w.volume_path = strdup(volume_path);
        r = w.volume_path ? wait_setup(&w, m) : -ENOMEM;
        if (r >= 0)
                r = sd_event_loop(w.event);
        progress_clear(&w);

        /* A Ctrl-C from now on ends cisternctl again, as it does everywhere else. */
        w.sigint_source = sd_event_source_unref(w.sigint_source);
        if (w.mask_saved)
                (void) sigprocmask(SIG_SETMASK, &w.saved_mask, NULL);

        if (r >= 0 && w.result < 0) {
                r = w.result;
                sd_bus_error_set_errnof(error, -r, "Interrupted; the service may still complete the operation.");
        }
        if (r < 0)
                return r;

        if (sd_bus_message_is_method_error(w.reply, NULL)) {
                r = sd_bus_error_copy(error, sd_bus_message_get_error(w.reply));
                return r < 0 ? r : -EIO;
        }

        if (ret_reply)
                *ret_reply = TAKE_PTR(w.reply);
        return 0;
}
