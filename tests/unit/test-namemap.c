/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "namemap.h"

static void put_get_and_remove(void **state) {
        NameMap m = {};
        int a = 1, b = 2;

        assert_int_equal(namemap_put(&m, "b", &b), 0);
        assert_int_equal(namemap_put(&m, "a", &a), 0);
        assert_ptr_equal(namemap_get(&m, "a"), &a);
        assert_ptr_equal(namemap_get(&m, "b"), &b);
        assert_null(namemap_get(&m, "c"));
        assert_null(namemap_get(&m, ""));

        assert_ptr_equal(namemap_remove(&m, "a"), &a);
        assert_null(namemap_get(&m, "a"));
        assert_null(namemap_remove(&m, "a"));
        assert_int_equal(m.n, 1);
        namemap_clear(&m);
        assert_int_equal(m.n, 0);
        assert_null(m.entries);
}

static void a_taken_name_is_refused_and_keeps_its_value(void **state) {
        NameMap m = {};
        int a = 1, other = 2;

        assert_int_equal(namemap_put(&m, "x", &a), 0);
        assert_int_equal(namemap_put(&m, "x", &other), -EEXIST);
        assert_ptr_equal(namemap_get(&m, "x"), &a);
        assert_int_equal(m.n, 1);
        namemap_clear(&m);
}

/* Many names in a scrambled order come out sorted, with every one findable, through growth
 * and removals from the middle. */
static void iteration_is_in_name_order(void **state) {
        enum { N = 5000 };
        static char names[N][16];
        NameMap m = {};
        const char *prev = NULL;
        size_t seen = 0;
        char *value;

        for (unsigned i = 0; i < N; i++) {
                snprintf(names[i], sizeof names[i], "vol-%05u", (i * 7919u) % N);
                assert_int_equal(namemap_put(&m, names[i], names[i]), 0);
        }
        for (unsigned i = 0; i < N; i += 3)
                assert_ptr_equal(namemap_remove(&m, names[i]), names[i]);
        NAMEMAP_FOREACH(value, &m) {
                if (prev)
                        assert_true(strcmp(prev, value) < 0);
                assert_ptr_equal(namemap_get(&m, value), value);
                prev = value;
                seen++;
        }
        assert_int_equal(seen, N - (N + 2) / 3);
        assert_int_equal(m.n, seen);
        namemap_clear(&m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(put_get_and_remove),
                cmocka_unit_test(a_taken_name_is_refused_and_keeps_its_value),
                cmocka_unit_test(iteration_is_in_name_order),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
