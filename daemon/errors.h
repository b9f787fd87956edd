/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "util.h"

#define CISTERN_ERROR(n) "org.cistern.Cistern1.Error." n
#define ERR_FAILED          CISTERN_ERROR("Failed")
#define ERR_NOT_AUTHORIZED  CISTERN_ERROR("NotAuthorized")
#define ERR_CANCELLED       CISTERN_ERROR("Cancelled")
#define ERR_NOT_FOUND       CISTERN_ERROR("NotFound")
#define ERR_ALREADY_EXISTS  CISTERN_ERROR("AlreadyExists")
#define ERR_BUSY            CISTERN_ERROR("Busy")
#define ERR_INVALID_ARGUMENT CISTERN_ERROR("InvalidArgument")
#define ERR_INVALID_NAME    CISTERN_ERROR("InvalidName")
#define ERR_NOT_SUPPORTED   CISTERN_ERROR("NotSupported")
#define ERR_NO_SPACE        CISTERN_ERROR("NoSpace")
#define ERR_UNSAFE_IMAGE    CISTERN_ERROR("UnsafeImage")
#define ERR_WOULD_SHRINK    CISTERN_ERROR("WouldShrink")
#define ERR_WRONG_STATE     CISTERN_ERROR("WrongState")
#define ERR_LIMITS_EXCEEDED CISTERN_ERROR("LimitsExceeded")

/* Registers the errno mapping of our error names with sd-bus, so that sd_bus_error_get_errno()
 * and clients that only see an errno get something sensible. */
void errors_register(void);

/* strerror(), except for the errnos that mean more in cistern: ENODATA and EMSGSIZE, data
 * shorter or longer than the size a caller announced. */
const char *errno_describe(int e);

/* Sets a named error with a message for a failure that has an errno (ENOSPC → NoSpace, EEXIST →
 * AlreadyExists, EBUSY → Busy, ENOENT → NotFound, EINVAL, ENODATA, EMSGSIZE → InvalidArgument,
 * anything else → Failed), formatting "what: errno_describe()". Returns the negative errno. */
int bus_error_from_errno(sd_bus_error *error, int r, const char *what);
