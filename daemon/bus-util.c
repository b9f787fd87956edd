/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>

#include "bus-util.h"
#include "copy.h"
#include "errors.h"

int bus_property_get_bool(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        int b = *(bool *) userdata;

        return sd_bus_message_append_basic(reply, 'b', &b);
}

void bus_emit_changed_va(sd_bus *bus, const char *path, const char *interface, const char *first, va_list ap) {
        char *names[16];
        size_t n = 0;

        for (const char *s = first; s && n < ELEMENTSOF(names) - 1; s = va_arg(ap, const char *))
                names[n++] = (char *) s;
        names[n] = NULL;
        (void) sd_bus_emit_properties_changed_strv(bus, path, interface, names);
}

int bus_reply_errno(sd_bus_message *msg, int r, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

        (void) bus_error_from_errno(&error, r, what);
        return sd_bus_reply_method_error(msg, &error);
}

int validate_volume_size(Manager *m, uint64_t size, sd_bus_error *error) {
        if (size == 0 || size % 512 != 0)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Size %" PRIu64 " is not a positive multiple of 512 bytes.", size);
        if (size > m->limits.max_volume_size)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT,
                                         "Size %" PRIu64 " exceeds the largest volume size, %" PRIu64 " bytes.",
                                         size, m->limits.max_volume_size);
        return 0;
}

int validate_life_cycle(bool save_on_stop, bool snap_on_start, bool has_source, sd_bus_error *error) {
        if (save_on_stop && snap_on_start)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "A volume cannot both snap_on_start and save_on_stop.");
        if (snap_on_start && !has_source)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "A snap_on_start volume needs a source.");
        if (!snap_on_start && has_source)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "Only a snap_on_start volume has a source.");
        return 0;
}

int validate_revisions_to_keep(Manager *m, uint32_t n, sd_bus_error *error) {
        if (n > m->limits.max_revisions_to_keep)
                return sd_bus_error_setf(error, ERR_LIMITS_EXCEEDED, "revisions_to_keep may be at most %u.",
                                         m->limits.max_revisions_to_keep);
        return 0;
}

/* What sd-bus' built-in getter does for a property without one of its own. */
static int append_field(sd_bus_message *reply, const char *signature, const void *field) {
        const char *s;

        switch (signature[0]) {
        case 's':
        case 'o':
        case 'g':
                s = *(const char *const *) field;
                return sd_bus_message_append_basic(reply, signature[0], s ?: (signature[0] == 'o' ? "/" : ""));
        default:
                return sd_bus_message_append_basic(reply, signature[0], field);
        }
}

static int append_property(sd_bus_message *reply, const char *path, const char *interface,
                           const sd_bus_vtable *p, void *object) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        void *field = (uint8_t *) object + p->x.property.offset;
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append_basic(reply, 's', p->x.property.member);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'v', p->x.property.signature);
        if (r < 0)
                return r;
        if (p->x.property.get)
                r = p->x.property.get(sd_bus_message_get_bus(reply), path, interface, p->x.property.member,
                                      reply, field, &error);
        else
                r = append_field(reply, p->x.property.signature, field);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

int bus_append_interface(sd_bus_message *reply, const char *path, const char *interface,
                         const sd_bus_vtable *vtable, void *object) {
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sa{sv}");
        if (r < 0)
                return r;
        r = sd_bus_message_append_basic(reply, 's', interface);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        for (const sd_bus_vtable *p = vtable; p->type != _SD_BUS_VTABLE_END; p++) {
                if (p->type != _SD_BUS_VTABLE_PROPERTY && p->type != _SD_BUS_VTABLE_WRITABLE_PROPERTY)
                        continue;
                r = append_property(reply, path, interface, p, object);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

int bus_validate_caller_fd(int fd, bool for_writing, struct stat *ret_st, sd_bus_error *error) {
        int flags, mode;

        flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "The file descriptor is not usable: %s", strerror(errno));
        if (flags & O_PATH)
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "The file descriptor was opened with O_PATH.");
        if (fstat(fd, ret_st) < 0)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "Cannot stat the file descriptor: %s", strerror(errno));
        if (S_ISDIR(ret_st->st_mode))
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "The file descriptor is a directory.");
        if (!S_ISREG(ret_st->st_mode) && !S_ISFIFO(ret_st->st_mode) && !S_ISSOCK(ret_st->st_mode))
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT,
                                        "The file descriptor must be a regular file, a pipe or a socket.");
        if (S_ISSOCK(ret_st->st_mode) && !socket_is_stream(fd))
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT, "The socket must be a stream socket (SOCK_STREAM).");
        if (for_writing && S_ISREG(ret_st->st_mode) && (flags & O_APPEND))
                return sd_bus_error_set(error, ERR_INVALID_ARGUMENT,
                                        "The file was opened for appending; the image is written from the file's start.");
        mode = flags & O_ACCMODE;
        if (for_writing ? mode == O_RDONLY : mode == O_WRONLY)
                return sd_bus_error_setf(error, ERR_INVALID_ARGUMENT, "The file descriptor is not open for %s.",
                                         for_writing ? "writing" : "reading");
        return 0;
}
