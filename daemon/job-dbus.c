/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* org.cistern.Cistern1.Job */

#include <stddef.h>
#include <stdio.h>

#include "authorize.h"
#include "bus-util.h"
#include "errors.h"
#include "job.h"
#include "log.h"
#include "options.h"

int job_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        Manager *m = userdata;
        Job *j;
        int r;

        r = sd_bus_path_decode_many(path, CISTERN_JOB_PREFIX "/%", &name);
        if (r <= 0)
                return r;
        j = namemap_get(&m->jobs, name);
        /* Job paths are plain decimal, not label-escaped: only the one spelling is the job. */
        if (!j || !streq(j->object_path, path))
                return 0;
        *found = j;
        return 1;
}

static int property_get_objects(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Job *j = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        STRV_FOREACH(o, j->objects) {
                r = sd_bus_message_append_basic(reply, 'o', *o);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

/* Progress and BytesDone both show the last published sample, so that they always agree with
 * each other and with the PropertiesChanged signals. */
static int property_get_progress(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Job *j = userdata;
        double progress = job_compute_progress(j->published_done, j->progress.total);

        return sd_bus_message_append_basic(reply, 'd', &progress);
}

static int property_get_progress_valid(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Job *j = userdata;
        int valid = j->progress.total > 0;

        return sd_bus_message_append_basic(reply, 'b', &valid);
}

static const OptionSpec no_options[] = { {} };

/* The starter cancels without asking; anyone else needs org.cistern.job.cancel (root always
 * has it). */
static int authorize_cancel(Job *j, sd_bus_message *msg, sd_bus_error *error) {
        char owner[16];
        const char *details[] = { "job", j->name, "owner", owner, "operation", "Cancel", NULL };
        uid_t uid;
        int r;

        r = bus_message_sender_uid(msg, &uid);
        if (r < 0)
                return sd_bus_error_set(error, ERR_NOT_AUTHORIZED, "Could not identify the caller.");
        if (uid == j->started_by)
                return 1;
        snprintf(owner, sizeof owner, "%u", (unsigned) j->started_by);
        return polkit_check(j->manager->polkit, msg, ACTION_JOB_CANCEL, details, error);
}

static int method_cancel(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        Job *j = userdata;
        int r;

        r = options_read(msg, no_options, NULL, NULL, error);
        if (r < 0)
                return r;
        if (!j->cancelable)
                return sd_bus_error_setf(error, ERR_NOT_SUPPORTED, "Job %s (%s) cannot be cancelled at this stage.",
                                         j->name, j->operation);

        r = authorize_cancel(j, msg, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        /* The work stops at its next check and undoes itself; the method that started it
         * replies Cancelled, and the job says Completed, once it has. */
        if (job_cancel(j))
                log_info("Cancelling job %s (%s).", j->name, j->operation);
        return sd_bus_reply_method_return(msg, NULL);
}

const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Operation", "s", NULL, offsetof(Job, operation), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Objects", "ao", property_get_objects, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Progress", "d", property_get_progress, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ProgressValid", "b", property_get_progress_valid, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BytesTotal", "t", NULL, offsetof(Job, progress.total), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BytesDone", "t", NULL, offsetof(Job, published_done), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Rate", "t", NULL, offsetof(Job, rate), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StartTime", "t", NULL, offsetof(Job, start_time), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ExpectedEndTime", "t", NULL, offsetof(Job, expected_end), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StartedByUID", "u", NULL, offsetof(Job, started_by), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Cancelable", "b", bus_property_get_bool, offsetof(Job, cancelable), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Cancel",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_NO_RESULT,
                                method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Completed",
                                SD_BUS_ARGS("b", success, "s", message),
                                0),
        SD_BUS_VTABLE_END
};
