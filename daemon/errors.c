/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "errors.h"

static const sd_bus_error_map cistern_errors[] = {
        SD_BUS_ERROR_MAP(ERR_FAILED, EIO),
        SD_BUS_ERROR_MAP(ERR_NOT_AUTHORIZED, EACCES),
        SD_BUS_ERROR_MAP(ERR_CANCELLED, ECANCELED),
        SD_BUS_ERROR_MAP(ERR_NOT_FOUND, ENOENT),
        SD_BUS_ERROR_MAP(ERR_ALREADY_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(ERR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(ERR_INVALID_ARGUMENT, EINVAL),
        SD_BUS_ERROR_MAP(ERR_INVALID_NAME, EINVAL),
        SD_BUS_ERROR_MAP(ERR_NOT_SUPPORTED, EOPNOTSUPP),
        SD_BUS_ERROR_MAP(ERR_NO_SPACE, ENOSPC),
        SD_BUS_ERROR_MAP(ERR_UNSAFE_IMAGE, EPERM),
        SD_BUS_ERROR_MAP(ERR_WOULD_SHRINK, ERANGE),
        SD_BUS_ERROR_MAP(ERR_WRONG_STATE, EBADFD),
        SD_BUS_ERROR_MAP(ERR_LIMITS_EXCEEDED, EMFILE),
        SD_BUS_ERROR_MAP_END
};

void errors_register(void) {
        (void) sd_bus_error_add_map(cistern_errors);
}

const char *errno_describe(int e) {
        switch (e < 0 ? -e : e) {
        case ENODATA:
                return "The data ended before the size announced";
        case EMSGSIZE:
                return "The data is longer than the size announced";
        default:
                return strerror(e < 0 ? -e : e);
        }
}

int bus_error_from_errno(sd_bus_error *error, int r, const char *what) {
        const char *name;
        int e = r < 0 ? -r : r;

        switch (e) {
        case ENOSPC:
        case EDQUOT:
                name = ERR_NO_SPACE;
                break;
        case EEXIST:
                name = ERR_ALREADY_EXISTS;
                break;
        case EBUSY:
                name = ERR_BUSY;
                break;
        case ENOENT:
                name = ERR_NOT_FOUND;
                break;
        case EINVAL:
                name = ERR_INVALID_ARGUMENT;
                break;
        case EOPNOTSUPP:
                name = ERR_NOT_SUPPORTED;
                break;
        case EFBIG:
        case ENODATA:
        case EMSGSIZE:
                name = ERR_INVALID_ARGUMENT;
                break;
        case ECANCELED:
                name = ERR_CANCELLED;
                break;
        default:
                name = ERR_FAILED;
        }
        sd_bus_error_setf(error, name, "%s: %s", what, errno_describe(e));
        return -e;
}
