/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdarg.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>

#include "manager.h"

/* Property getter for a C bool field (sd-bus' default getter for "b" reads an int). */
int bus_property_get_bool(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error);

/* Emits PropertiesChanged for the NULL-terminated property names in ap. */
void bus_emit_changed_va(sd_bus *bus, const char *path, const char *interface, const char *first, va_list ap);

/* Replies to msg with the error for a failure r of what (see bus_error_from_errno()). */
int bus_reply_errno(sd_bus_message *msg, int r, const char *what);

/* Validation shared by the Pool and Volume methods; each sets a named error. */
int validate_volume_size(Manager *m, uint64_t size, sd_bus_error *error);
int validate_life_cycle(bool save_on_stop, bool snap_on_start, bool has_source, sd_bus_error *error);
int validate_revisions_to_keep(Manager *m, uint32_t n, sd_bus_error *error);

/* Checks an fd a caller passed, for reading from it or writing into it: a regular file, pipe or
 * stream socket open for that (no O_PATH; no O_APPEND file to write into). InvalidArgument otherwise.
 * Never a path: the kernel already checked the caller's access. Fills *ret_st. */
int bus_validate_caller_fd(int fd, bool for_writing, struct stat *ret_st, sd_bus_error *error);

/* Appends one {sa{sv}} entry — interface name and all its properties, read through the getters
 * of vtable for object — as ObjectManager.GetManagedObjects and InterfacesAdded carry them. */
int bus_append_interface(sd_bus_message *reply, const char *path, const char *interface,
                         const sd_bus_vtable *vtable, void *object);
