/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The Manager owns everything: event loop, bus, polkit, pools; it loads the state, exports the
 * object tree, takes the bus name and exits when idle. */

#include <dirent.h>
#include <fcntl.h>
#include <libmount.h>
#include <signal.h>
#include <sys/stat.h>

#include "device.h"
#include "errors.h"
#include "job.h"
#include "log.h"
#include "manager.h"
#include "mount.h"
#include "names.h"
#include "pool.h"
#include "session.h"
#include "store.h"
#include "udev-watch.h"

#define REGISTRY_DIR "pools"

static const Limits default_limits = {
        .max_pools = 256,
        .max_volumes_per_pool = 65536,
        .max_volume_size = UINT64_C(1) << 56,  /* 64 PiB */
        .max_revisions_to_keep = 1024,
        .max_workers = 64,
        .max_work = 1024,
        .max_sessions = 256,
        .max_jobs = 64,
};

static int open_state_dirs(Manager *m) {
        int r;

        if (mkdir(m->state_dir, 0700) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to create state directory %s: %m", m->state_dir);
        m->state_fd = open(m->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m->state_fd < 0)
                return log_error_errno(errno, "Failed to open state directory %s: %m", m->state_dir);
        r = open_or_create_dir_beneath(m->state_fd, REGISTRY_DIR, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to open %s/%s: %m", m->state_dir, REGISTRY_DIR);
        m->registry_fd = r;
        (void) store_remove_staging(m->registry_fd);
        return 0;
}

int manager_new(const ManagerOptions *options, Manager **ret) {
        _cleanup_(manager_freep) Manager *m = NULL;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->state_fd = -EBADF;
        m->registry_fd = -EBADF;
        m->devices_fd = -EBADF;
        m->limits = default_limits;
        m->idle_timeout = options->idle_timeout;
        m->session_timeout = options->session_timeout;
        m->state_dir = strdup(options->state_dir);
        m->runtime_dir = strdup(options->runtime_dir);
        if (!m->state_dir || !m->runtime_dir)
                return -ENOMEM;
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        Pool *p;
        Job *j;

        if (!m)
                return NULL;
        /* Sessions end first, an import's staging object going to a worker. Running work
         * finishes then: its done callbacks still use the pools and the bus, and finish their
         * jobs; a long copy is told to stop rather than waited for. Whatever job is left refers
         * to pools: it goes before them. */
        while (m->sessions)
                session_free(m->sessions);
        NAMEMAP_FOREACH(j, &m->jobs)
                (void) job_cancel(j);
        workers_free(m->workers);
        while (m->jobs.n > 0)
                job_free(m->jobs.entries[0].value);
        namemap_clear(&m->jobs);
        NAMEMAP_FOREACH(p, &m->pools)
                pool_free(p);
        namemap_clear(&m->pools);
        polkit_free(m->polkit);
        udev_watch_free(m->udev);
        free(m->released);
        sd_event_source_disable_unref(m->mount_source);
        mnt_unref_monitor(m->mount_monitor);
        sd_event_source_unref(m->idle_source);
        sd_bus_flush_close_unref(m->bus);
        sd_event_unref(m->event);
        safe_close(m->registry_fd);
        safe_close(m->devices_fd);
        safe_close(m->state_fd);
        free(m->state_dir);
        free(m->runtime_dir);
        free(m);
        return NULL;
}

static int load_pools(Manager *m) {
        _cleanup_(closedirp) DIR *d = NULL;
        struct dirent *de;
        int r;

        r = opendir_beneath(m->registry_fd, ".", &d);
        if (r < 0)
                return r;
        while ((de = readdir(d))) {
                _cleanup_free_ char *name = NULL;
                char *dot = strrchr(de->d_name, '.');
                Pool *p;

                if (!dot || !streq(dot, ".json"))
                        continue;
                name = strndup(de->d_name, dot - de->d_name);
                if (!name)
                        return -ENOMEM;
                if (!name_is_valid(name))
                        continue;
                if (pool_load(m, name, &p) < 0)
                        continue;   /* logged; the registry entry stays for when the storage returns */
                if (namemap_put(&m->pools, p->name, p) < 0)
                        pool_free(p);
                else
                        log_debug("Loaded pool %s with %zu volumes.", p->name, p->volumes.n);
        }
        return 0;
}

/* Arms the one-shot idle timer for a full timeout from now. */
static void idle_timer_restart(Manager *m) {
        if (!m->idle_source)
                return;
        (void) sd_event_source_set_time_relative(m->idle_source, m->idle_timeout);
        (void) sd_event_source_set_enabled(m->idle_source, SD_EVENT_ONESHOT);
}

/* What keeps the daemon from exiting, or NULL when nothing does. */
static const char *manager_busy_reason(Manager *m) {
        uint64_t queued;

        if (sd_bus_get_n_queued_read(m->bus, &queued) < 0 || queued > 0)
                return "calls are queued";
        if (polkit_busy(m->polkit))
                return "authorization checks are pending";
        if (m->jobs.n > 0)
                return "jobs are running";
        if (m->n_sessions > 0)
                return "import or export sessions are open";
        if (workers_running(m->workers) > 0)
                return "file operations are running";
        if (udev_watch_busy(m->udev))
                return "devices are being set up";
        return NULL;
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        const char *reason = manager_busy_reason(m);

        if (!reason) {
                log_debug("Idle for %llu s, exiting.", (unsigned long long) (m->idle_timeout / USEC_PER_SEC));
                (void) sd_bus_release_name(m->bus, CISTERN_BUS_NAME);
                return sd_event_exit(sd_event_source_get_event(s), 0);
        }
        log_debug("Not exiting while idle: %s.", reason);
        idle_timer_restart(m);
        return 0;
}

/* Every incoming message postpones the idle exit by a full timeout. */
static int on_bus_message(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        idle_timer_restart(userdata);
        return 0;
}

static int setup_bus(Manager *m) {
        int r;

        r = sd_bus_default_system(&m->bus);
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        r = polkit_new(m->bus, &m->polkit);
        if (r < 0)
                return log_error_errno(r, "Failed to set up polkit: %m");
        r = sd_bus_add_filter(m->bus, NULL, on_bus_message, m);
        if (r < 0)
                return log_error_errno(r, "Failed to add the bus filter: %m");
        return manager_dbus_register(m);
}

/* Long copies are cancelled and every running call answered (Cancelled, or done) while the bus
 * is still open: sd-bus closes it as soon as the loop exits. */
static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        Job *j;

        log_info("Exiting on signal %u.", si->ssi_signo);
        NAMEMAP_FOREACH(j, &m->jobs)
                (void) job_cancel(j);
        workers_drain(m->workers);
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int setup_event(Manager *m) {
        sigset_t mask;
        int r;

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);
        r = udev_watch_new(m->event, device_on_uevent, m, &m->udev);
        if (r < 0)
                log_warning_errno(r, "Cannot watch udev, volumes cannot be attached: %m");
        r = workers_new(m->event, m->limits.max_workers, m->limits.max_work, &m->workers);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the worker threads: %m");
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGTERM: %m");
        r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch SIGINT: %m");
        if (m->idle_timeout > 0) {
                r = sd_event_add_time_relative(m->event, &m->idle_source, CLOCK_MONOTONIC, m->idle_timeout, USEC_PER_SEC,
                                               on_idle_timer, m);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the idle timer: %m");
        }
        return 0;
}

static int open_runtime_dirs(Manager *m) {
        _cleanup_close_ int fd = -EBADF;

        fd = open(m->runtime_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "Failed to open runtime directory %s: %m", m->runtime_dir);
        m->devices_fd = open_or_create_dir_beneath(fd, "devices", 0700);
        if (m->devices_fd < 0)
                return log_error_errno(m->devices_fd, "Failed to open %s/devices: %m", m->runtime_dir);
        return 0;
}

int manager_run(Manager *m) {
        int r;

        errors_register();
        /* Searchable by all: mount points below it must be reachable by their volume's owner. */
        if (mkdir(m->runtime_dir, 0711) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Failed to create runtime directory %s: %m", m->runtime_dir);
        r = open_runtime_dirs(m);
        if (r < 0)
                return r;
        r = open_state_dirs(m);
        if (r < 0)
                return r;
        r = setup_event(m);
        if (r < 0)
                return r;
        r = load_pools(m);
        if (r < 0)
                return log_error_errno(r, "Failed to load pools: %m");
        device_rediscover(m);
        mount_rediscover(m);
        r = mount_watch(m);
        if (r < 0)
                log_warning_errno(r, "Cannot follow the mount table: %m");
        r = setup_bus(m);
        if (r < 0)
                return r;

        /* The whole tree is exported above; only now may clients find us. */
        r = sd_bus_request_name(m->bus, CISTERN_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire the bus name %s: %m", CISTERN_BUS_NAME);
        log_info("Ready with %zu pools.", m->pools.n);

        return sd_event_loop(m->event);
}
