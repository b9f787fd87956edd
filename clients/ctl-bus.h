/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>

#include "ctl-util.h"

#define CISTERN_SERVICE "org.cistern.Cistern1"
#define CISTERN_ROOT_PATH "/org/cistern/Cistern1"
#define CISTERN_MANAGER_IFACE "org.cistern.Cistern1.Manager"
#define CISTERN_POOL_IFACE "org.cistern.Cistern1.Pool"
#define CISTERN_VOLUME_IFACE "org.cistern.Cistern1.Volume"
#define CISTERN_JOB_IFACE "org.cistern.Cistern1.Job"
#define CISTERN_JOB_PATH_PREFIX CISTERN_ROOT_PATH "/job"

#define CISTERN_ERROR_WOULD_SHRINK "org.cistern.Cistern1.Error.WouldShrink"

/* Methods that move data may run for hours, and any call that can ask polkit may wait for a
 * person to type a password; the daemon replies only when the work is done (SPEC §4). */
#define CALL_TIMEOUT_LONG_USEC (UINT64_C(24) * 60 * 60 * USEC_PER_SEC)

/* Prints "cisternctl: <what>: <the daemon's message>" and returns a negative errno. */
int log_bus_error(int r, const sd_bus_error *error, const char *format, ...) _printf_(3, 4);

/* A method call on the Cistern service. With interactive set, polkit may ask the user for a
 * password (through the agent cisternctl spawned) before the daemon answers. */
int bus_new_method_call(sd_bus *bus, const char *path, const char *iface, const char *member,
                        bool interactive, sd_bus_message **ret);

/* Sends m and waits up to CALL_TIMEOUT_LONG_USEC for the reply. */
int bus_call_long(sd_bus *bus, sd_bus_message *m, sd_bus_error *error, sd_bus_message **ret_reply);

/* Manager.GetPool / Manager.GetVolume; print what went wrong themselves. */
int bus_find_pool(sd_bus *bus, const char *pool, char **ret_path);
int bus_find_volume(sd_bus *bus, const char *pool, const char *volume, char **ret_path);

/* Properties.GetAll on one interface; the reply is positioned at its a{sv}. */
int bus_get_all(sd_bus *bus, const char *path, const char *iface, sd_bus_message **ret_reply);

/* Reads the next complete value of any type and converts it to JSON: strings and object paths
 * become strings, integers numbers, arrays arrays, dictionaries with string keys objects,
 * structures arrays, variants their content. */
int bus_message_read_json(sd_bus_message *m, json_object **ret);

/* Reads a dictionary whose keys are strings or object paths (contents "{sv}", "{oa{sv}}"…):
 * calls read_entry with each key, to read the value that follows. */
typedef int (*bus_dict_entry_reader_t)(sd_bus_message *m, const char *key, void *userdata);
int bus_read_dict(sd_bus_message *m, const char *contents, bus_dict_entry_reader_t read_entry,
                  void *userdata);

/* Enters a container (an array, a structure…), reads each of its elements with read_element
 * into one JSON array, and leaves it. */
typedef int (*bus_json_reader_t)(sd_bus_message *m, json_object **ret);
int bus_read_json_array(sd_bus_message *m, char type, const char *contents,
                        bus_json_reader_t read_element, json_object **ret);

/* Reading an a{sv} into a C struct, in the manner of systemd's bus_map_all_properties(): each
 * known name is read by its reader into the struct at offset; unknown names are skipped, so a
 * newer daemon with more properties still works. A known name with another type is an error. */
typedef int (*bus_property_reader_t)(sd_bus_message *m, void *field);

typedef struct BusProperty {
        const char *name;
        const char *signature;
        bus_property_reader_t read;
        size_t offset;
} BusProperty;

int bus_read_properties(sd_bus_message *m, const BusProperty *map, void *userdata);

int bus_read_string(sd_bus_message *m, void *field);    /* s, o → char* */
int bus_read_strv(sd_bus_message *m, void *field);      /* as, ao → char** */
int bus_read_u64(sd_bus_message *m, void *field);       /* t → uint64_t */
int bus_read_u32(sd_bus_message *m, void *field);       /* u → uint32_t */
int bus_read_bool(sd_bus_message *m, void *field);      /* b → bool */
int bus_read_double(sd_bus_message *m, void *field);    /* d → double */
int bus_read_count(sd_bus_message *m, void *field);     /* ao → size_t number of elements */
int bus_read_json(sd_bus_message *m, void *field);      /* anything → json_object* */
