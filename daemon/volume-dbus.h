/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "options.h"
#include "volume.h"

/* Shared by the Volume method handlers in volume-dbus.c and volume-life-dbus.c. */

extern const OptionSpec volume_no_options[];

/* polkit for action, or its "-own" variant when the caller owns v. */
int volume_authorize(Volume *v, sd_bus_message *msg, const char *action, sd_bus_error *error);

/* Busy when file work on v is in progress. */
int volume_check_idle(Volume *v, sd_bus_error *error);
/* Attaches w's volume as w->read_only and w->partitions say, then calls then(r, w) on the loop:
 * r 0 once udev has processed the devices, else the failure, with nothing left attached. */
int volume_work_attach(VolumeWork *w, WorkDone then, sd_bus_error *error);
/* Answers a failure of volume_work_attach(). */
void volume_attach_reply_error(VolumeWork *w, int r);
/* Detaches what volume_work_attach() attached for w. */
void volume_work_undo_attach(VolumeWork *w);
/* Forgets v's device and partitions and says so on the bus. */
void volume_set_detached(Volume *v);
/* Busy while v is attached: for what would change the image under its device. */
int volume_check_detached(Volume *v, sd_bus_error *error);

/* Replies to the call of w with the error r (ECANCELED is Cancelled) about what. */
void volume_work_reply_error(VolumeWork *w, int r, const char *what);

/* After the committed image of v changed: count it, and tell volumes started from it that they
 * are outdated now. Saving is the caller's (volume_work_save()). */
void volume_committed(Volume *v);

/* After file work on v: re-reads its size and usage and the pool's, and announces them with
 * the life-cycle properties. */
void volume_restat_and_emit(Volume *v);

/* The last step of a change that ran as work: announces it (volume_restat_and_emit()), replies
 * to the call without a value and frees w. */
void volume_work_reply_changed(VolumeWork *w);

/* Deletes the revisions planned in w, then saves and replies. */
int volume_start_pruning(VolumeWork *w, sd_bus_error *error);

int method_info(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_convert(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_start(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_stop(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_create_snapshot(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_remove_revision(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_revert(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_clone(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_export(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_export_begin(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_export_end(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import_begin(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import_end(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_attach(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_detach(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_mount(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_open(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_unmount(sd_bus_message *msg, void *userdata, sd_bus_error *error);
