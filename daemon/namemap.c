/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "namemap.h"

/* Index of name, or of where it would go, in *ret; returns whether it is there. */
static bool namemap_find(const NameMap *m, const char *name, size_t *ret) {
        size_t lo = 0, hi = m->n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(name, m->entries[mid].name);

                if (c == 0) {
                        *ret = mid;
                        return true;
                }
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        *ret = lo;
        return false;
}

void *namemap_get(const NameMap *m, const char *name) {
        size_t i;

        return namemap_find(m, name, &i) ? m->entries[i].value : NULL;
}

int namemap_put(NameMap *m, const char *name, void *value) {
        size_t i;

        if (namemap_find(m, name, &i))
                return -EEXIST;
        if (m->n == m->allocated) {
                size_t a = m->allocated ? m->allocated * 2 : 16;
                NameMapEntry *e = reallocarray(m->entries, a, sizeof *e);

                if (!e)
                        return -ENOMEM;
                m->entries = e;
                m->allocated = a;
        }
        memmove(m->entries + i + 1, m->entries + i, (m->n - i) * sizeof *m->entries);
        m->entries[i] = (NameMapEntry) { .name = name, .value = value };
        m->n++;
        return 0;
}

void *namemap_remove(NameMap *m, const char *name) {
        void *value;
        size_t i;

        if (!namemap_find(m, name, &i))
                return NULL;
        value = m->entries[i].value;
        memmove(m->entries + i, m->entries + i + 1, (m->n - i - 1) * sizeof *m->entries);
        m->n--;
        return value;
}

void namemap_clear(NameMap *m) {
        free(m->entries);
        *m = (NameMap) {};
}
