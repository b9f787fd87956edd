/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "util.h"

/* Objects by name, kept sorted: lookups are binary searches and iteration goes in name order,
 * which is the order clients see in Pools, Volumes and GetManagedObjects. */

typedef struct NameMapEntry {
        const char *name;       /* owned by the value, which outlives its entry */
        void *value;
} NameMapEntry;

typedef struct NameMap {
        NameMapEntry *entries;
        size_t n;
        size_t allocated;
} NameMap;

void *namemap_get(const NameMap *m, const char *name);
/* -EEXIST when the name is taken. */
int namemap_put(NameMap *m, const char *name, void *value);
/* Returns the removed value, NULL when absent. */
void *namemap_remove(NameMap *m, const char *name);
/* Frees the map itself, not the values. */
void namemap_clear(NameMap *m);

/* Iterates in name order; the map must not change inside the loop. */
#define NAMEMAP_FOREACH(item, map) NAMEMAP_FOREACH_INDEX(item, map, CONCATENATE(namemap_i_, __COUNTER__))
#define NAMEMAP_FOREACH_INDEX(item, map, i) \
        for (size_t i = 0; i < (map)->n && (((item) = (map)->entries[i].value), true); i++)
