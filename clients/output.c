/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pwd.h>
#include <time.h>

#include "ctl-util.h"
#include "output.h"

struct Table {
        size_t n_columns;
        uint64_t right_aligned;
        size_t n_cells, allocated;
        char **cells;           /* header row first, then each row, n_columns cells each */
};

Table *table_new(const char *const *headers, uint64_t right_aligned_mask) {
        Table *t;

        t = calloc(1, sizeof(Table));
        if (!t)
                return NULL;
        while (headers[t->n_columns])
                t->n_columns++;
        t->right_aligned = right_aligned_mask;

        if (table_add_row(t, headers) < 0)
                return table_free(t);
        return t;
}

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

int table_add_row(Table *t, const char *const *cells) {
        if (t->n_cells + t->n_columns > t->allocated) {
                size_t n = (t->allocated + t->n_columns) * 2;
                char **c = reallocarray(t->cells, n, sizeof(char *));

                if (!c)
                        return -ENOMEM;
                t->cells = c;
                t->allocated = n;
        }

        for (size_t i = 0; i < t->n_columns; i++) {
                t->cells[t->n_cells] = strdup(strempty(cells[i]));
                if (!t->cells[t->n_cells])
                        return -ENOMEM;
                t->n_cells++;
        }
        return 0;
}

int table_print(Table *t) {
        _cleanup_free_ size_t *width = NULL;

        width = calloc(t->n_columns, sizeof(size_t));
        if (!width)
                return -ENOMEM;

        for (size_t i = 0; i < t->n_cells; i++) {
                size_t l = strlen(t->cells[i]), *w = &width[i % t->n_columns];

                if (l > *w)
                        *w = l;
        }

        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;
                bool last = col == t->n_columns - 1;
                bool right = col < 64 && (t->right_aligned & (UINT64_C(1) << col));

                if (right)
                        printf("%*s", (int) width[col], t->cells[i]);
                else if (last)          /* no trailing blanks */
                        fputs(t->cells[i], stdout);
                else
                        printf("%-*s", (int) width[col], t->cells[i]);
                fputs(last ? "\n" : "  ", stdout);
        }

        return fflush(stdout) == 0 ? 0 : -errno;
}

struct KeyValues {
        size_t n, allocated;
        char **labels, **values;
};

KeyValues *kv_new(void) {
        return calloc(1, sizeof(KeyValues));
}

KeyValues *kv_free(KeyValues *kv) {
        if (!kv)
                return NULL;
        for (size_t i = 0; i < kv->n; i++) {
                free(kv->labels[i]);
                free(kv->values[i]);
        }
        free(kv->labels);
        free(kv->values);
        free(kv);
        return NULL;
}

static int kv_grow(KeyValues *kv) {
        size_t n;
        char **l, **v;

        if (kv->n < kv->allocated)
                return 0;

        n = kv->allocated * 2 + 8;
        l = reallocarray(kv->labels, n, sizeof(char *));
        if (!l)
                return -ENOMEM;
        kv->labels = l;
        v = reallocarray(kv->values, n, sizeof(char *));
        if (!v)
                return -ENOMEM;
        kv->values = v;
        kv->allocated = n;
        return 0;
}

int kv_add(KeyValues *kv, const char *label, const char *format, ...) {
        _cleanup_free_ char *l = NULL, *v = NULL;
        va_list ap;
        int r;

        r = kv_grow(kv);
        if (r < 0)
                return r;

        va_start(ap, format);
        r = vasprintf(&v, format, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;

        l = strdup(label);
        if (!l)
                return -ENOMEM;

        kv->labels[kv->n] = TAKE_PTR(l);
        kv->values[kv->n] = TAKE_PTR(v);
        kv->n++;
        return 0;
}

int kv_print(KeyValues *kv) {
        int width = 0;

        for (size_t i = 0; i < kv->n; i++)
                if ((int) strlen(kv->labels[i]) > width)
                        width = (int) strlen(kv->labels[i]);

        for (size_t i = 0; i < kv->n; i++) {
                const char *line = kv->values[i];

                printf("%*s: ", width, kv->labels[i]);
                for (;;) {
                        size_t n = strcspn(line, "\n");

                        printf("%.*s\n", (int) n, line);
                        if (line[n] == '\0')
                                break;
                        line += n + 1;
                        printf("%*s  ", width, "");
                }
        }

        return fflush(stdout) == 0 ? 0 : -errno;
}

int json_print(json_object *o) {
        const char *s;

        s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                           JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!s)
                return -ENOMEM;
        puts(s);
        return fflush(stdout) == 0 ? 0 : -errno;
}

int json_add(json_object *obj, const char *key, json_object *value) {
        if (json_object_object_add(obj, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

json_object *json_new_string_or_null(const char *s) {
        return s ? json_object_new_string(s) : NULL;
}

int json_append(json_object *array, json_object *element) {
        if (!element || json_object_array_add(array, element) < 0) {
                json_object_put(element);
                return -ENOMEM;
        }
        return 0;
}

const char *json_string_of(json_object *o, const char *key) {
        json_object *v;

        return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

uint64_t json_u64_of(json_object *o, const char *key) {
        json_object *v;

        return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

json_object *json_new_strv(char **l) {
        _cleanup_json_put_ json_object *a = json_object_new_array();

        if (!a)
                return NULL;
        STRV_FOREACH(s, l)
                if (json_object_array_add(a, json_object_new_string(*s)) < 0)
                        return NULL;
        return TAKE_PTR(a);
}

char *format_timestamp(char *buf, size_t len, uint64_t usec) {
        time_t sec = (time_t) (usec / USEC_PER_SEC);
        struct tm tm;

        if (usec == 0 || !localtime_r(&sec, &tm) ||
            strftime(buf, len, "%a %Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                snprintf(buf, len, "n/a");
        return buf;
}

const char *format_owner(char *buf, size_t len, uid_t uid) {
        static uid_t cached_uid = (uid_t) -1;
        static char cached_name[64];
        struct passwd *pw;

        if (uid != cached_uid) {
                pw = getpwuid(uid);
                if (pw && strlen(pw->pw_name) < sizeof(cached_name))
                        strcpy(cached_name, pw->pw_name);
                else
                        snprintf(cached_name, sizeof(cached_name), "%u", (unsigned) uid);
                cached_uid = uid;
        }

        snprintf(buf, len, "%s", cached_name);
        return buf;
}
