/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The commands about jobs: the operations that move data, while they run. */

#include <time.h>

#include "cisternctl.h"
#include "ctl-objects.h"
#include "output.h"
#include "progress.h"

static json_object *job_to_json(const Job *j) {
        _cleanup_json_put_ json_object *o = json_object_new_object(), *objects = json_new_strv(j->objects);

        if (!o || !objects ||
            json_add(o, "id", json_object_new_string(j->id)) < 0 ||
            json_add(o, "path", json_object_new_string(j->path)) < 0 ||
            json_add(o, "operation", json_object_new_string(strempty(j->operation))) < 0 ||
            json_add(o, "objects", TAKE_PTR(objects)) < 0 ||
            json_add(o, "progress", json_object_new_double(j->progress)) < 0 ||
            json_add(o, "progress_valid", json_object_new_boolean(j->progress_valid)) < 0 ||
            json_add(o, "bytes_total", json_object_new_uint64(j->bytes_total)) < 0 ||
            json_add(o, "bytes_done", json_object_new_uint64(j->bytes_done)) < 0 ||
            json_add(o, "rate", json_object_new_uint64(j->rate)) < 0 ||
            json_add(o, "start_time", json_object_new_uint64(j->start_time)) < 0 ||
            json_add(o, "expected_end_time", json_object_new_uint64(j->expected_end_time)) < 0 ||
            json_add(o, "started_by", json_object_new_int64(j->started_by)) < 0 ||
            json_add(o, "cancelable", json_object_new_boolean(j->cancelable)) < 0)
                return NULL;

        return TAKE_PTR(o);
}

static int jobs_json(const Objects *objects) {
        _cleanup_json_put_ json_object *a = json_object_new_array();

        if (!a)
                return log_oom();

        for (size_t i = 0; i < objects->n_jobs; i++)
                if (json_append(a, job_to_json(&objects->jobs[i])) < 0)
                        return log_oom();

        return json_print(a);
}

/* "tank/disk0, tank/disk1": names where the objects are pools or volumes, else paths. */
static char *job_objects_text(const Objects *objects, const Job *j) {
        size_t len = 0;
        char *s = NULL;
        FILE *f;

        f = open_memstream(&s, &len);
        if (!f)
                return NULL;
        STRV_FOREACH(p, j->objects) {
                _cleanup_free_ char *name = NULL;

                if (objects_name_of(objects, *p, &name) < 0)
                        break;
                fprintf(f, "%s%s", p == j->objects ? "" : ", ", name ?: *p);
        }
        if (fclose(f) != 0) {
                free(s);
                return NULL;
        }
        return s;
}

static int jobs_text(const Objects *objects) {
        static const char *const headers[] = {
                "ID", "OPERATION", "PROGRESS", "RATE", "ETA", "STARTED-BY", "OBJECTS", NULL
        };
        _cleanup_table_free_ Table *t = table_new(headers, COLUMN(2) | COLUMN(3) | COLUMN(4));
        struct timespec ts;
        uint64_t now;

        if (!t)
                return log_oom();

        clock_gettime(CLOCK_REALTIME, &ts);
        now = (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;

        for (size_t i = 0; i < objects->n_jobs; i++) {
                const Job *j = &objects->jobs[i];
                char progress[16] = "-", rate[FORMAT_IEC_MAX] = "-", eta[FORMAT_DURATION_MAX] = "-", owner[64];
                _cleanup_free_ char *names = job_objects_text(objects, j);
                const char *row[] = {
                        j->id, j->operation, progress, rate, eta,
                        format_owner(owner, sizeof(owner), j->started_by), names,
                };

                if (!names)
                        return log_oom();
                if (j->progress_valid)
                        snprintf(progress, sizeof(progress), "%u%%", progress_percent(j->progress));
                if (j->rate > 0)
                        format_rate(rate, j->rate);
                if (j->expected_end_time > 0)
                        format_duration(eta, j->expected_end_time > now ? j->expected_end_time - now : 0);
                if (table_add_row(t, row) < 0)
                        return log_oom();
        }

        return table_print(t);
}

int verb_jobs(Context *c, int argc, char *argv[]) {
        _cleanup_(objects_done) Objects objects = {};
        int r;

        /* Pools and volumes come along, for names in place of the paths in OBJECTS. */
        r = context_get_objects(c, &objects);
        if (r < 0)
                return r;

        return c->json ? jobs_json(&objects) : jobs_text(&objects);
}

/* The path of the running job whose id is id, from Manager.Jobs. */
static int job_find(sd_bus *bus, const char *id, char **ret_path) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        char **paths = NULL;
        int r;

        r = sd_bus_get_property_strv(bus, CISTERN_SERVICE, CISTERN_ROOT_PATH, CISTERN_MANAGER_IFACE,
                                     "Jobs", &error, &paths);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to list the jobs");

        r = -ENOENT;
        STRV_FOREACH(p, paths) {
                _cleanup_free_ char *job_id = NULL;

                if (job_id_from_path(*p, &job_id) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (streq(job_id, id)) {
                        *ret_path = strdup(*p);
                        r = *ret_path ? 0 : -ENOMEM;
                        break;
                }
        }
        strv_free(paths);

        if (r == -ENOENT)
                return log_error_errno(r, "Failed to cancel job %s: No such job is running.", id);
        if (r < 0)
                return log_oom();
        return 0;
}

int verb_cancel(Context *c, int argc, char *argv[]) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *m = NULL;
        _cleanup_free_ char *found = NULL;
        const char *job = argv[1], *path = job;
        sd_bus *bus;
        int r;

        if (*job == '\0' || (*job == '/' && !sd_bus_object_path_is_valid(job)))
                return usage_error(c, "Invalid job '%s': expected its number or its object path.", job);

        r = context_acquire_bus(c, &bus);
        if (r >= 0 && *job != '/')
                r = job_find(bus, job, &found);
        if (r < 0)
                return r;
        if (found)
                path = found;

        r = bus_new_method_call(bus, path, CISTERN_JOB_IFACE, "Cancel", context_interactive(c), &m);
        if (r >= 0)
                r = sd_bus_message_append(m, "a{sv}", 0);
        if (r < 0)
                return log_error_errno(r, "Failed to build the call: %s", strerror(-r));

        r = bus_call_long(bus, m, &error, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to cancel job %s", job);
        return 0;
}
