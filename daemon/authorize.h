/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "manager.h"

#define ACTION_POOL_MANAGE   "org.cistern.pool.manage"
#define ACTION_VOLUME_CREATE "org.cistern.volume.create"
#define ACTION_VOLUME_MODIFY "org.cistern.volume.modify"
#define ACTION_VOLUME_READ   "org.cistern.volume.read"
#define ACTION_VOLUME_ATTACH "org.cistern.volume.attach"
#define ACTION_VOLUME_MOUNT  "org.cistern.volume.mount"
#define ACTION_JOB_CANCEL    "org.cistern.job.cancel"

/* Asks polkit whether the sender of msg may perform action on a pool (volume NULL) or a volume
 * of it; details carry pool, volume, owner and the method name as operation. Same return
 * convention as polkit_check(): 1 yes, 0 asked (the handler returns 1 and runs again later),
 * negative with error set when denied. */
int authorize(Manager *m, sd_bus_message *msg, const char *action,
              const char *pool, const char *volume, uid_t owner, sd_bus_error *error);

/* The same for an action with an "-own" variant: that variant is asked for when the sender is
 * the volume's owner. */
int authorize_own(Manager *m, sd_bus_message *msg, const char *action,
                  const char *pool, const char *volume, uid_t owner, sd_bus_error *error);
