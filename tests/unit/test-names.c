/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "names.h"

/* A string of n copies of c, in a buffer the fixture owns. */
static const char *repeat(void **state, char c, size_t n) {
        char *s = realloc(*state, n + 1);

        assert_non_null(s);
        memset(s, c, n);
        s[n] = '\0';
        *state = s;
        return s;
}

static int teardown(void **state) {
        free(*state);
        *state = NULL;
        return 0;
}

static void valid_names_are_accepted(void **state) {
        static const char *const valid[] = {
                "a", "A0", "0", "vm-1.root_x", "a..b", "a-", "a.", "Z_9-x.y",
        };

        for (size_t i = 0; i < ELEMENTSOF(valid); i++)
                if (!name_is_valid(valid[i]))
                        fail_msg("\"%s\" was refused", valid[i]);
}

static void names_of_exactly_the_maximum_length_are_accepted(void **state) {
        assert_true(name_is_valid(repeat(state, 'a', NAME_MAX_LENGTH)));
        assert_int_equal(NAME_MAX_LENGTH, 64);
}

static void names_longer_than_the_maximum_are_refused(void **state) {
        assert_false(name_is_valid(repeat(state, 'a', NAME_MAX_LENGTH + 1)));
        assert_false(name_is_valid(repeat(state, 'a', 4096)));
}

static void names_that_could_become_paths_are_refused(void **state) {
        static const char *const invalid[] = {
                "", ".", "..", "../x", "a/b", "/a", "a/", ".a", "-a", "_a", ".stage-abc",
        };

        for (size_t i = 0; i < ELEMENTSOF(invalid); i++)
                if (name_is_valid(invalid[i]))
                        fail_msg("\"%s\" was accepted", invalid[i]);
}

static void names_with_other_characters_are_refused(void **state) {
        static const char *const invalid[] = {
                "é", "aé", "a b", " a", "a\n", "a\t", "a:b", "a*", "a\\b", "a\x7f", "\xff",
        };

        for (size_t i = 0; i < ELEMENTSOF(invalid); i++)
                if (name_is_valid(invalid[i]))
                        fail_msg("invalid name #%zu was accepted", i);
}

static void null_is_refused(void **state) {
        assert_false(name_is_valid(NULL));
}

#define T(f) cmocka_unit_test_teardown(f, teardown)

int main(void) {
        const struct CMUnitTest tests[] = {
                T(valid_names_are_accepted),
                T(names_of_exactly_the_maximum_length_are_accepted),
                T(names_longer_than_the_maximum_are_refused),
                T(names_that_could_become_paths_are_refused),
                T(names_with_other_characters_are_refused),
                T(null_is_refused),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
