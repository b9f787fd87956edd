/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* options_read() against real a{sv} messages built with sd-bus. A message needs a bus that is
 * started; a client bus on one end of a socketpair is enough (nothing is ever sent, so the
 * other end never has to answer the authentication). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "errors.h"
#include "options.h"

/* Every field has a guard after it: a value written with the wrong width (an int into a bool, a
 * uint64_t into a uint32_t) would change the guard. */
typedef struct Target {
        bool b;
        uint8_t guard_b[3];
        uint32_t u;
        uint32_t guard_u;
        uint64_t t;
        uint64_t guard_t;
        const char *s;
        const char *o;
} Target;

#define GUARD8 0xa5
#define GUARD32 UINT32_C(0xa5a5a5a5)
#define GUARD64 UINT64_C(0xa5a5a5a5a5a5a5a5)

static const OptionSpec spec[] = {
        OPTION("flag", OPTION_BOOL, Target, b),
        OPTION("count", OPTION_UINT32, Target, u),
        OPTION("size", OPTION_UINT64, Target, t),
        OPTION("format", OPTION_STRING, Target, s),
        OPTION("source", OPTION_PATH, Target, o),
        {}
};

struct fixture {
        sd_bus *bus;
        int peer;
        sd_bus_message *m;
        sd_bus_error error;
        Target target;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof *f);
        int sv[2];

        if (!f)
                return -1;
        f->peer = -EBADF;
        f->error = SD_BUS_ERROR_NULL;
        f->target = (Target) {
                .b = true,
                .guard_b = { GUARD8, GUARD8, GUARD8 },
                .u = 77,
                .guard_u = GUARD32,
                .t = 88,
                .guard_t = GUARD64,
                .s = "default-s",
                .o = "/default/o",
        };

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                goto fail;
        f->peer = sv[1];
        if (sd_bus_new(&f->bus) < 0) {
                close(sv[0]);
                goto fail;
        }
        if (sd_bus_set_fd(f->bus, sv[0], sv[0]) < 0) {
                close(sv[0]);
                goto fail;
        }
        if (sd_bus_start(f->bus) < 0)
                goto fail;
        if (sd_bus_message_new_method_call(f->bus, &f->m, "org.cistern.Test", "/org/cistern/Test",
                                           "org.cistern.Test", "Call") < 0)
                goto fail;
        *state = f;
        return 0;
fail:
        sd_bus_close_unref(f->bus);
        safe_close(f->peer);
        free(f);
        return -1;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        sd_bus_error_free(&f->error);
        sd_bus_message_unref(f->m);
        sd_bus_close_unref(f->bus);
        safe_close(f->peer);
        free(f);
        return 0;
}

/* Seals the message as if it had been received and rewinds it for reading. */
static void seal(struct fixture *f) {
        assert_int_equal(sd_bus_message_seal(f->m, 1, 0), 0);
        assert_true(sd_bus_message_rewind(f->m, true) >= 0);
}

static void open_dict(struct fixture *f) {
        assert_true(sd_bus_message_open_container(f->m, 'a', "{sv}") >= 0);
}

static void close_dict(struct fixture *f) {
        assert_true(sd_bus_message_close_container(f->m) >= 0);
}

/* Appends one {sv} entry whose variant holds a single basic value. */
static void add_entry(struct fixture *f, const char *key, char type, const void *value) {
        const char contents[2] = { type, '\0' };

        assert_true(sd_bus_message_open_container(f->m, 'e', "sv") >= 0);
        assert_true(sd_bus_message_append_basic(f->m, 's', key) >= 0);
        assert_true(sd_bus_message_open_container(f->m, 'v', contents) >= 0);
        assert_true(sd_bus_message_append_basic(f->m, type, value) >= 0);
        assert_true(sd_bus_message_close_container(f->m) >= 0);
        assert_true(sd_bus_message_close_container(f->m) >= 0);
}

static void assert_guards_intact(const Target *t) {
        for (size_t i = 0; i < ELEMENTSOF(t->guard_b); i++)
                assert_int_equal(t->guard_b[i], GUARD8);
        assert_true(t->guard_u == GUARD32);
        assert_true(t->guard_t == GUARD64);
}

static void assert_invalid_argument(struct fixture *f, int r, const char *needle) {
        assert_true(r < 0);
        assert_true(sd_bus_error_is_set(&f->error));
        assert_string_equal(f->error.name, ERR_INVALID_ARGUMENT);
        assert_non_null(f->error.message);
        if (needle && !strstr(f->error.message, needle))
                fail_msg("error message \"%s\" does not mention \"%s\"", f->error.message, needle);
}

static void every_type_is_stored_in_its_field(void **state) {
        struct fixture *f = *state;
        int no = 0;
        uint32_t u = UINT32_MAX - 1, seen = 0;
        uint64_t t = UINT64_C(0x123456789abcdef0);

        open_dict(f);
        add_entry(f, "flag", 'b', &no);
        add_entry(f, "count", 'u', &u);
        add_entry(f, "size", 't', &t);
        add_entry(f, "format", 's', "qcow2");
        add_entry(f, "source", 'o', "/org/cistern/Cistern1/pool/p/v");
        close_dict(f);
        seal(f);

        assert_int_equal(options_read(f->m, spec, &f->target, &seen, &f->error), 0);
        assert_false(sd_bus_error_is_set(&f->error));
        assert_false(f->target.b);
        assert_true(f->target.u == UINT32_MAX - 1);
        assert_true(f->target.t == UINT64_C(0x123456789abcdef0));
        assert_string_equal(f->target.s, "qcow2");
        assert_string_equal(f->target.o, "/org/cistern/Cistern1/pool/p/v");
        assert_int_equal(seen, 0x1f);
        assert_guards_intact(&f->target);
}

static void true_bool_is_stored_as_true(void **state) {
        struct fixture *f = *state;
        int yes = 1;

        f->target.b = false;
        open_dict(f);
        add_entry(f, "flag", 'b', &yes);
        close_dict(f);
        seal(f);

        assert_int_equal(options_read(f->m, spec, &f->target, NULL, &f->error), 0);
        assert_true(f->target.b);
        assert_guards_intact(&f->target);
}

static void seen_bits_follow_spec_order_not_message_order(void **state) {
        struct fixture *f = *state;
        uint64_t t = 4096;
        uint32_t seen = 0;

        open_dict(f);
        add_entry(f, "source", 'o', "/x");
        add_entry(f, "size", 't', &t);
        close_dict(f);
        seal(f);

        assert_int_equal(options_read(f->m, spec, &f->target, &seen, &f->error), 0);
        assert_int_equal(seen, (1u << 4) | (1u << 2));
        /* What was not given keeps the caller's default. */
        assert_true(f->target.b);
        assert_int_equal(f->target.u, 77);
        assert_string_equal(f->target.s, "default-s");
        assert_true(f->target.t == 4096);
        assert_string_equal(f->target.o, "/x");
}

static void empty_dict_changes_nothing(void **state) {
        struct fixture *f = *state;
        Target before = f->target;
        uint32_t seen = 0xffffffff;

        open_dict(f);
        close_dict(f);
        seal(f);

        assert_int_equal(options_read(f->m, spec, &f->target, &seen, &f->error), 0);
        assert_false(sd_bus_error_is_set(&f->error));
        assert_int_equal(seen, 0);
        assert_memory_equal(&before, &f->target, sizeof before);
}

static void arguments_after_the_dict_stay_readable(void **state) {
        struct fixture *f = *state;
        const char *tail = NULL;
        uint32_t u = 5;

        open_dict(f);
        add_entry(f, "count", 'u', &u);
        close_dict(f);
        assert_true(sd_bus_message_append(f->m, "s", "after") >= 0);
        seal(f);

        assert_int_equal(options_read(f->m, spec, &f->target, NULL, &f->error), 0);
        assert_int_equal(f->target.u, 5);
        assert_int_equal(sd_bus_message_read(f->m, "s", &tail), 1);
        assert_string_equal(tail, "after");
}

static void unknown_key_is_invalid_argument_naming_it(void **state) {
        struct fixture *f = *state;
        uint32_t u = 1, seen = 0xdead;

        open_dict(f);
        add_entry(f, "count", 'u', &u);
        add_entry(f, "frobnicate", 'u', &u);
        close_dict(f);
        seal(f);

        assert_invalid_argument(f, options_read(f->m, spec, &f->target, &seen, &f->error), "'frobnicate'");
        assert_int_equal(seen, 0xdead);     /* untouched on failure */
}

static void key_matching_is_exact(void **state) {
        struct fixture *f = *state;
        int yes = 1;

        open_dict(f);
        add_entry(f, "Flag", 'b', &yes);
        close_dict(f);
        seal(f);

        assert_invalid_argument(f, options_read(f->m, spec, &f->target, NULL, &f->error), "'Flag'");
}

/* One wrong-typed value per case, in a fresh message each. */
static void wrong_type_is_invalid_argument(void **state) {
        static const struct {
                const char *key;
                char type;
        } cases[] = {
                { "flag", 'u' },        /* a bool given as uint32 */
                { "flag", 'y' },
                { "count", 'i' },       /* signed for unsigned */
                { "count", 't' },       /* 64 for 32 bits */
                { "size", 'u' },        /* 32 for 64 bits */
                { "size", 'x' },
                { "format", 'o' },      /* an object path is not a string */
                { "source", 's' },      /* nor the other way round */
                { "format", 'u' },
        };
        struct fixture *f = *state;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint64_t zero = 0;
                const void *value = strchr("so", cases[i].type) ? (const void *) "/a" : &zero;
                Target before = f->target;

                sd_bus_message_unref(f->m);
                sd_bus_error_free(&f->error);
                assert_int_equal(sd_bus_message_new_method_call(f->bus, &f->m, "org.cistern.Test", "/org/cistern/Test",
                                                                "org.cistern.Test", "Call"), 0);
                open_dict(f);
                add_entry(f, cases[i].key, cases[i].type, value);
                close_dict(f);
                seal(f);

                assert_invalid_argument(f, options_read(f->m, spec, &f->target, NULL, &f->error), cases[i].key);
                assert_memory_equal(&before, &f->target, sizeof before);
        }
}

static void container_value_is_invalid_argument(void **state) {
        struct fixture *f = *state;

        open_dict(f);
        assert_true(sd_bus_message_append(f->m, "{sv}", "format", "as", 1, "raw") >= 0);
        close_dict(f);
        seal(f);

        assert_invalid_argument(f, options_read(f->m, spec, &f->target, NULL, &f->error), "format");
        assert_string_equal(f->target.s, "default-s");
}

static void key_given_twice_is_invalid_argument(void **state) {
        struct fixture *f = *state;
        uint32_t a = 1, b = 2;

        open_dict(f);
        add_entry(f, "count", 'u', &a);
        add_entry(f, "count", 'u', &b);
        close_dict(f);
        seal(f);

        assert_invalid_argument(f, options_read(f->m, spec, &f->target, NULL, &f->error), "'count'");
        /* The second value never replaced the first. */
        assert_int_equal(f->target.u, 1);
}

static void key_given_twice_with_other_type_is_invalid_argument(void **state) {
        struct fixture *f = *state;
        int yes = 1;

        open_dict(f);
        add_entry(f, "flag", 'b', &yes);
        add_entry(f, "flag", 's', "yes");
        close_dict(f);
        seal(f);

        assert_invalid_argument(f, options_read(f->m, spec, &f->target, NULL, &f->error), "'flag'");
}

static void message_without_dict_is_an_error(void **state) {
        struct fixture *f = *state;

        assert_true(sd_bus_message_append(f->m, "s", "not a dict") >= 0);
        seal(f);

        assert_true(options_read(f->m, spec, &f->target, NULL, &f->error) < 0);
        assert_string_equal(f->target.s, "default-s");
}

static void option_seen_reports_given_keys_only(void **state) {
        struct fixture *f = *state;
        int yes = 1;
        uint32_t seen = 0;

        open_dict(f);
        add_entry(f, "flag", 'b', &yes);
        add_entry(f, "format", 's', "raw");
        close_dict(f);
        seal(f);

        assert_int_equal(options_read(f->m, spec, &f->target, &seen, &f->error), 0);
        assert_true(option_seen(seen, spec, "flag"));
        assert_true(option_seen(seen, spec, "format"));
        assert_false(option_seen(seen, spec, "count"));
        assert_false(option_seen(seen, spec, "size"));
        assert_false(option_seen(seen, spec, "source"));
        assert_false(option_seen(seen, spec, "unknown"));
        /* Bits are matched by position in the spec. */
        assert_true(option_seen(UINT32_C(1) << 3, spec, "format"));
        assert_false(option_seen(UINT32_C(1) << 3, spec, "flag"));
        assert_false(option_seen(0, spec, "flag"));
        assert_false(option_seen(0xffffffff, spec, "unknown"));
}

/* The 32nd spec gets bit 31, the most a uint32_t mask can hold. */
static void thirty_two_specs_use_every_bit(void **state) {
        struct fixture *f = *state;
        static char keys[32][8];
        OptionSpec many[33] = {};
        uint32_t values[32] = {}, v31 = 31, v0 = 100, seen = 0;

        for (unsigned i = 0; i < 32; i++) {
                snprintf(keys[i], sizeof keys[i], "k%u", i);
                many[i] = (OptionSpec) { .key = keys[i], .type = OPTION_UINT32, .offset = i * sizeof(uint32_t) };
        }

        open_dict(f);
        add_entry(f, "k31", 'u', &v31);
        add_entry(f, "k0", 'u', &v0);
        close_dict(f);
        seal(f);

        assert_int_equal(options_read(f->m, many, values, &seen, &f->error), 0);
        assert_true(seen == ((UINT32_C(1) << 31) | 1));
        assert_int_equal(values[31], 31);
        assert_int_equal(values[0], 100);
        for (unsigned i = 1; i < 31; i++)
                assert_int_equal(values[i], 0);
        assert_true(option_seen(seen, many, "k31"));
        assert_false(option_seen(seen, many, "k30"));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
        const struct CMUnitTest tests[] = {
                T(every_type_is_stored_in_its_field),
                T(true_bool_is_stored_as_true),
                T(seen_bits_follow_spec_order_not_message_order),
                T(empty_dict_changes_nothing),
                T(arguments_after_the_dict_stay_readable),
                T(unknown_key_is_invalid_argument_naming_it),
                T(key_matching_is_exact),
                T(wrong_type_is_invalid_argument),
                T(container_value_is_invalid_argument),
                T(key_given_twice_is_invalid_argument),
                T(key_given_twice_with_other_type_is_invalid_argument),
                T(message_without_dict_is_an_error),
                T(option_seen_reports_given_keys_only),
                T(thirty_two_specs_use_every_bit),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
