/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>

/* A table of text cells printed with aligned columns under a header, like "systemctl
 * list-units". headers is NULL-terminated; every row supplies one cell per column. Bit n of
 * right_aligned_mask aligns column n to the right (numbers, sizes). */
typedef struct Table Table;

#define COLUMN(n) (UINT64_C(1) << (n))

Table *table_new(const char *const *headers, uint64_t right_aligned_mask);
Table *table_free(Table *t);
int table_add_row(Table *t, const char *const *cells);
int table_print(Table *t);

static inline void table_freep(Table **t) {
        if (*t)
                table_free(*t);
}
#define _cleanup_table_free_ __attribute__((cleanup(table_freep)))

/* "Label: value" lines with the labels right-aligned, like hostnamectl. A value may hold
 * several lines; continuation lines are indented under the first. */
typedef struct KeyValues KeyValues;

KeyValues *kv_new(void);
KeyValues *kv_free(KeyValues *kv);
int kv_add(KeyValues *kv, const char *label, const char *format, ...) __attribute__((format(printf, 3, 4)));
int kv_print(KeyValues *kv);

static inline void kv_freep(KeyValues **kv) {
        if (*kv)
                kv_free(*kv);
}
#define _cleanup_kv_free_ __attribute__((cleanup(kv_freep)))

/* Prints one pretty JSON document and a newline on stdout. */
int json_print(json_object *o);

/* Helpers that keep JSON building one line per field. */
int json_add(json_object *obj, const char *key, json_object *value);
json_object *json_new_string_or_null(const char *s);

/* Appends element to array, which takes it; a NULL element (a failed allocation) is -ENOMEM. */
int json_append(json_object *array, json_object *element);

/* The string or unsigned number under key in object o; "" or 0 when it is not there. */
const char *json_string_of(json_object *o, const char *key);
uint64_t json_u64_of(json_object *o, const char *key);

/* A JSON array of the strings in l, or NULL when out of memory. */
json_object *json_new_strv(char **l);

/* "Sat 2025-11-22 02:13:00 UTC" in local time, or "n/a" for 0. */
char *format_timestamp(char *buf, size_t len, uint64_t usec);

/* The user name for uid, or the number when it has none. Cached: list calls it per row. */
const char *format_owner(char *buf, size_t len, uid_t uid);
