/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for daemon/polkit.c without a bus daemon or polkitd: the sender's credentials,
 * sd_bus_call_async(), sd_bus_enqueue_for_read(), sd_bus_slot_unref() and the clock are
 * replaced with -Wl,--wrap; messages are real sd-bus messages on an unconnected socketpair bus,
 * and polkitd's answers are built by hand and fed to the reply callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>
#include <systemd/sd-bus.h>

#include "errors.h"
#include "polkit.h"

#define ACTION_MODIFY "org.cistern.volume.modify"
#define ACTION_READ   "org.cistern.volume.read"
#define ACTION_CREATE "org.cistern.volume.create"
#define SENDER        ":1.42"
#define FAKE_CREDS    ((sd_bus_creds *) 0x1)
#define FAKE_SLOT     ((sd_bus_slot *) 0x2)

/* ---- mocks ---- */

static struct {
        unsigned n_calls;
        sd_bus_message *call;            /* last CheckAuthorization, sealed, ref'd */
        sd_bus_message_handler_t callback;
        void *userdata;
        uint64_t timeout;
        unsigned n_slot_unrefs;
        unsigned n_enqueued;
        sd_bus_message *enqueued;
        int enqueue_result;
        int call_result;
        uint64_t creds_mask;
        usec_t now;
} mock;

int __wrap_sd_bus_query_sender_creds(sd_bus_message *m, uint64_t mask, sd_bus_creds **ret);
int __wrap_sd_bus_query_sender_creds(sd_bus_message *m, uint64_t mask, sd_bus_creds **ret) {
        int r = mock_type(int);

        assert_non_null(m);
        mock.creds_mask = mask;
        if (r >= 0)
                *ret = FAKE_CREDS;
        return r;
}

int __wrap_sd_bus_creds_get_euid(sd_bus_creds *c, uid_t *ret);
int __wrap_sd_bus_creds_get_euid(sd_bus_creds *c, uid_t *ret) {
        int r = mock_type(int);

        assert_ptr_equal(c, FAKE_CREDS);
        if (r >= 0)
                *ret = mock_type(uid_t);
        return r;
}

int __wrap_sd_bus_creds_get_uid(sd_bus_creds *c, uid_t *ret);
int __wrap_sd_bus_creds_get_uid(sd_bus_creds *c, uid_t *ret) {
        int r = mock_type(int);

        assert_ptr_equal(c, FAKE_CREDS);
        if (r >= 0)
                *ret = mock_type(uid_t);
        return r;
}

sd_bus_creds *__wrap_sd_bus_creds_unref(sd_bus_creds *c);
sd_bus_creds *__wrap_sd_bus_creds_unref(sd_bus_creds *c) {
        assert_true(!c || c == FAKE_CREDS);
        return NULL;
}

int __wrap_sd_bus_call_async(sd_bus *bus, sd_bus_slot **slot, sd_bus_message *m,
                             sd_bus_message_handler_t callback, void *userdata, uint64_t usec);
int __wrap_sd_bus_call_async(sd_bus *bus, sd_bus_slot **slot, sd_bus_message *m,
                             sd_bus_message_handler_t callback, void *userdata, uint64_t usec) {
        assert_ptr_equal(bus, sd_bus_message_get_bus(m));
        mock.n_calls++;
        if (mock.call_result < 0)
                return mock.call_result;

        assert_non_null(slot);
        assert_int_equal(sd_bus_message_seal(m, 100 + mock.n_calls, usec), 0);
        sd_bus_message_unref(mock.call);
        mock.call = sd_bus_message_ref(m);
        mock.callback = callback;
        mock.userdata = userdata;
        mock.timeout = usec;
        *slot = FAKE_SLOT;
        return 1;
}

sd_bus_slot *__wrap_sd_bus_slot_unref(sd_bus_slot *s);
sd_bus_slot *__wrap_sd_bus_slot_unref(sd_bus_slot *s) {
        if (s) {
                assert_ptr_equal(s, FAKE_SLOT);
                mock.n_slot_unrefs++;
        }
        return NULL;
}

int __wrap_sd_bus_enqueue_for_read(sd_bus *bus, sd_bus_message *m);
int __wrap_sd_bus_enqueue_for_read(sd_bus *bus, sd_bus_message *m) {
        assert_ptr_equal(bus, sd_bus_message_get_bus(m));
        mock.n_enqueued++;
        mock.enqueued = m;
        return mock.enqueue_result;
}

usec_t __wrap_now_usec(int clock);
usec_t __wrap_now_usec(int clock) {
        assert_int_equal(clock, CLOCK_MONOTONIC);
        return mock.now;
}

/* ---- fixtures and helpers ---- */

typedef struct Fixture {
        int fds[2];
        sd_bus *bus;
        Polkit *polkit;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(Fixture));

        assert_non_null(f);
        memset(&mock, 0, sizeof(mock));
        mock.now = 1000 * USEC_PER_SEC;
        errors_register();

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, 0, f->fds), 0);
        assert_int_equal(sd_bus_new(&f->bus), 0);
        assert_int_equal(sd_bus_set_fd(f->bus, f->fds[0], f->fds[0]), 0);
        assert_true(sd_bus_start(f->bus) >= 0);
        assert_int_equal(polkit_new(f->bus, &f->polkit), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        polkit_free(f->polkit);
        mock.call = sd_bus_message_unref(mock.call);
        sd_bus_close_unref(f->bus);     /* closes fds[0] */
        safe_close(f->fds[1]);
        free(f);
        return 0;
}

/* A method call as cisternd would receive it from SENDER. */
static sd_bus_message *new_request(Fixture *f, bool interactive) {
        sd_bus_message *m = NULL;

        assert_int_equal(sd_bus_message_new_method_call(f->bus, &m, "org.cistern.Cistern1",
                                                         "/org/cistern/Cistern1/pool/p1/v1",
                                                         "org.cistern.Cistern1.Volume", "Resize"), 0);
        assert_true(sd_bus_message_append(m, "ta{sv}", UINT64_C(1) << 30, 0) >= 0);
        assert_int_equal(sd_bus_message_set_sender(m, SENDER), 0);
        assert_int_equal(sd_bus_message_set_allow_interactive_authorization(m, interactive), 0);
        assert_int_equal(sd_bus_message_seal(m, 7, 0), 0);
        return m;
}

static void will_be_uid(uid_t uid) {
        will_return(__wrap_sd_bus_query_sender_creds, 0);
        will_return(__wrap_sd_bus_creds_get_euid, 0);
        will_return(__wrap_sd_bus_creds_get_euid, uid);
}

/* Feeds polkitd's answer for the last CheckAuthorization to the reply callback. */
static void answer(bool authorized, bool challenge) {
        sd_bus_message *reply = NULL;

        assert_non_null(mock.call);
        assert_int_equal(sd_bus_message_new_method_return(mock.call, &reply), 0);
        assert_true(sd_bus_message_append(reply, "(bba{ss})", authorized, challenge, 0) >= 0);
        assert_int_equal(sd_bus_message_seal(reply, 500, 0), 0);
        assert_int_equal(sd_bus_message_rewind(reply, true), 1);
        assert_int_equal(mock.callback(reply, mock.userdata, NULL), 0);
        sd_bus_message_unref(reply);
}

static void answer_error(const char *name, const char *message) {
        sd_bus_error e = SD_BUS_ERROR_MAKE_CONST(name, message);
        sd_bus_message *reply = NULL;

        assert_int_equal(sd_bus_message_new_method_error(mock.call, &reply, &e), 0);
        assert_int_equal(sd_bus_message_seal(reply, 501, 0), 0);
        assert_int_equal(mock.callback(reply, mock.userdata, NULL), 0);
        sd_bus_message_unref(reply);
}

static const char *const resize_details[] = {
        "pool", "p1", "volume", "v1", "owner", "1000", "operation", "Resize", NULL,
};

/* Asks as uid 1000 and checks that a query was started. */
static void ask(Fixture *f, sd_bus_message *m, const char *action) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        unsigned n = mock.n_calls;

        will_be_uid(1000);
        assert_int_equal(polkit_check(f->polkit, m, action, resize_details, &error), 0);
        assert_false(sd_bus_error_is_set(&error));
        assert_int_equal(mock.n_calls, n + 1);
}

/* ---- tests ---- */

static void test_root_is_authorized_without_polkit(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        uid_t uid = 4711;

        will_be_uid(0);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, NULL), 1);
        assert_int_equal(mock.n_calls, 0);
        assert_false(polkit_busy(f->polkit));

        will_be_uid(0);
        assert_int_equal(bus_message_sender_uid(m, &uid), 0);
        assert_int_equal(uid, 0);
        sd_bus_message_unref(m);
}

static void test_credentials_never_augmented_from_proc(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);

        will_be_uid(0);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, NULL), 1);
        assert_true(mock.creds_mask & SD_BUS_CREDS_EUID);
        assert_false(mock.creds_mask & SD_BUS_CREDS_AUGMENT);
        sd_bus_message_unref(m);
}

static void test_uid_used_when_euid_unavailable(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        uid_t uid = 0;

        will_return(__wrap_sd_bus_query_sender_creds, 0);
        will_return(__wrap_sd_bus_creds_get_euid, -ENODATA);
        will_return(__wrap_sd_bus_creds_get_uid, 0);
        will_return(__wrap_sd_bus_creds_get_uid, 1000);
        assert_int_equal(bus_message_sender_uid(m, &uid), 0);
        assert_int_equal(uid, 1000);

        will_return(__wrap_sd_bus_query_sender_creds, 0);
        will_return(__wrap_sd_bus_creds_get_euid, -ENODATA);
        will_return(__wrap_sd_bus_creds_get_uid, 0);
        will_return(__wrap_sd_bus_creds_get_uid, 0);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, NULL), 1);
        assert_int_equal(mock.n_calls, 0);
        sd_bus_message_unref(m);
}

static void test_unknown_credentials_are_denied(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;
        uid_t uid = 4711;

        will_return(__wrap_sd_bus_query_sender_creds, -ENXIO);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        assert_non_null(strstr(error.message, ACTION_MODIFY));
        assert_int_equal(mock.n_calls, 0);
        sd_bus_error_free(&error);

        will_return(__wrap_sd_bus_query_sender_creds, 0);
        will_return(__wrap_sd_bus_creds_get_euid, -ENODATA);
        will_return(__wrap_sd_bus_creds_get_uid, -ENODATA);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        sd_bus_error_free(&error);

        will_return(__wrap_sd_bus_query_sender_creds, -ENXIO);
        assert_int_equal(bus_message_sender_uid(m, &uid), -ENXIO);
        assert_int_equal(uid, 4711);
        assert_false(polkit_busy(f->polkit));
        sd_bus_message_unref(m);
}

static void test_check_authorization_is_marshalled(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        const char *kind, *key, *name, *action, *cancel, *k, *v;
        unsigned n = 0;
        uint32_t flags;

        ask(f, m, ACTION_MODIFY);
        assert_true(polkit_busy(f->polkit));
        assert_string_equal(sd_bus_message_get_destination(mock.call), "org.freedesktop.PolicyKit1");
        assert_string_equal(sd_bus_message_get_path(mock.call), "/org/freedesktop/PolicyKit1/Authority");
        assert_string_equal(sd_bus_message_get_interface(mock.call), "org.freedesktop.PolicyKit1.Authority");
        assert_string_equal(sd_bus_message_get_member(mock.call), "CheckAuthorization");
        assert_string_equal(sd_bus_message_get_signature(mock.call, true), "(sa{sv})sa{ss}us");
        assert_int_equal(mock.timeout, 25 * USEC_PER_SEC);

        assert_int_equal(sd_bus_message_rewind(mock.call, true), 1);
        assert_true(sd_bus_message_read(mock.call, "(sa{sv})", &kind, 1, &key, "s", &name) > 0);
        assert_string_equal(kind, "system-bus-name");
        assert_string_equal(key, "name");
        assert_string_equal(name, SENDER);
        assert_true(sd_bus_message_read(mock.call, "s", &action) > 0);
        assert_string_equal(action, ACTION_MODIFY);

        assert_true(sd_bus_message_enter_container(mock.call, 'a', "{ss}") > 0);
        while (sd_bus_message_read(mock.call, "{ss}", &k, &v) > 0) {
                assert_true(n < 4);
                assert_string_equal(k, resize_details[2 * n]);
                assert_string_equal(v, resize_details[2 * n + 1]);
                n++;
        }
        assert_int_equal(n, 4);
        assert_true(sd_bus_message_exit_container(mock.call) > 0);

        assert_true(sd_bus_message_read(mock.call, "us", &flags, &cancel) > 0);
        assert_int_equal(flags, 0);
        assert_string_equal(cancel, "");
        sd_bus_message_unref(m);
}

static void test_interactive_only_when_message_allows_it(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, true);
        uint32_t flags;
        const char *cancel;

        ask(f, m, ACTION_MODIFY);
        assert_int_equal(sd_bus_message_rewind(mock.call, true), 1);
        assert_true(sd_bus_message_skip(mock.call, "(sa{sv})sa{ss}") > 0);
        assert_true(sd_bus_message_read(mock.call, "us", &flags, &cancel) > 0);
        assert_int_equal(flags, 1);
        assert_true(mock.timeout >= 60 * USEC_PER_SEC);
        sd_bus_message_unref(m);
}

static void test_authorized_answer_redispatches_the_call(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;

        ask(f, m, ACTION_MODIFY);
        /* The handler runs again before the answer: still waiting, no second query. */
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), 0);
        assert_int_equal(mock.n_calls, 1);
        assert_int_equal(mock.n_enqueued, 0);

        answer(true, false);
        assert_int_equal(mock.n_enqueued, 1);
        assert_ptr_equal(mock.enqueued, m);
        assert_int_equal(mock.n_slot_unrefs, 1);
        assert_true(polkit_busy(f->polkit));

        /* The re-dispatched handler gets the stored verdict, without asking for creds again. */
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), 1);
        assert_false(sd_bus_error_is_set(&error));
        assert_int_equal(mock.n_calls, 1);
        assert_false(polkit_busy(f->polkit));

        /* Consumed and collected: a new dispatch of a message asks polkit afresh. */
        ask(f, m, ACTION_MODIFY);
        sd_bus_message_unref(m);
}

static void test_denial_names_the_action(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;

        ask(f, m, ACTION_MODIFY);
        answer(false, false);
        assert_int_equal(mock.n_enqueued, 1);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        assert_string_equal(error.message, "Not authorized to perform " ACTION_MODIFY ".");
        assert_false(polkit_busy(f->polkit));
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
}

static void test_challenge_says_authentication_is_required(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;

        ask(f, m, ACTION_MODIFY);
        answer(false, true);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        assert_non_null(strstr(error.message, "authentication is required"));
        assert_non_null(strstr(error.message, ACTION_MODIFY));
        assert_non_null(strstr(error.message, "interactive"));
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
}

static void test_missing_polkitd_denies(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;

        ask(f, m, ACTION_MODIFY);
        answer_error(SD_BUS_ERROR_SERVICE_UNKNOWN, "The name org.freedesktop.PolicyKit1 was not provided");
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        assert_non_null(strstr(error.message, ACTION_MODIFY));
        assert_non_null(strstr(error.message, "polkit is not available"));
        sd_bus_error_free(&error);

        ask(f, m, ACTION_MODIFY);
        answer_error(SD_BUS_ERROR_NAME_HAS_NO_OWNER, "no owner");
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        sd_bus_error_free(&error);
        assert_false(polkit_busy(f->polkit));
        sd_bus_message_unref(m);
}

static void test_failure_to_send_denies(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;

        mock.call_result = -ENOTCONN;
        will_be_uid(1000);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_true(sd_bus_error_has_name(&error, ERR_NOT_AUTHORIZED));
        assert_false(polkit_busy(f->polkit));
        sd_bus_error_free(&error);
        sd_bus_message_unref(m);
}

static void test_unclaimed_answer_expires(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);

        ask(f, m, ACTION_MODIFY);
        answer(true, false);
        mock.now += 3 * USEC_PER_SEC;
        assert_true(polkit_busy(f->polkit));
        mock.now += 60 * USEC_PER_SEC;
        assert_false(polkit_busy(f->polkit));
        /* The stale "yes" is gone: the same message must be asked about again. */
        ask(f, m, ACTION_MODIFY);
        sd_bus_message_unref(m);
}

static void test_two_actions_for_one_call(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);

        /* Clone: read on the source, then create on the destination. */
        ask(f, m, ACTION_READ);
        answer(true, false);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_READ, resize_details, NULL), 1);
        ask(f, m, ACTION_CREATE);
        assert_true(polkit_busy(f->polkit));
        answer(true, false);
        assert_int_equal(mock.n_enqueued, 2);

        /* Third dispatch: both verdicts known, no new query. */
        assert_int_equal(polkit_check(f->polkit, m, ACTION_READ, resize_details, NULL), 1);
        assert_int_equal(polkit_check(f->polkit, m, ACTION_CREATE, resize_details, NULL), 1);
        assert_int_equal(mock.n_calls, 2);
        assert_false(polkit_busy(f->polkit));
        sd_bus_message_unref(m);
}

static void test_queries_are_per_message(void **state) {
        Fixture *f = *state;
        sd_bus_message *a = new_request(f, false), *b = new_request(f, false);
        sd_bus_error error = SD_BUS_ERROR_NULL;

        ask(f, a, ACTION_MODIFY);
        answer(true, false);
        /* Another caller's message gets no share of that "yes". */
        ask(f, b, ACTION_MODIFY);
        answer(false, false);
        assert_int_equal(polkit_check(f->polkit, b, ACTION_MODIFY, resize_details, &error), -EACCES);
        assert_int_equal(polkit_check(f->polkit, a, ACTION_MODIFY, resize_details, NULL), 1);
        sd_bus_error_free(&error);
        sd_bus_message_unref(a);
        sd_bus_message_unref(b);
}

static void test_requeue_failure_replies_and_forgets(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);

        ask(f, m, ACTION_MODIFY);
        mock.enqueue_result = -ENOMEM;
        answer(true, false);
        assert_false(polkit_busy(f->polkit));
        sd_bus_message_unref(m);
}

static void test_free_cancels_pending_queries(void **state) {
        Fixture *f = *state;
        sd_bus_message *m = new_request(f, false);

        ask(f, m, ACTION_MODIFY);
        ask(f, m, ACTION_READ);
        f->polkit = polkit_free(f->polkit);
        assert_int_equal(mock.n_slot_unrefs, 2);
        sd_bus_message_unref(m);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_root_is_authorized_without_polkit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_credentials_never_augmented_from_proc, setup, teardown),
                cmocka_unit_test_setup_teardown(test_uid_used_when_euid_unavailable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unknown_credentials_are_denied, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_authorization_is_marshalled, setup, teardown),
                cmocka_unit_test_setup_teardown(test_interactive_only_when_message_allows_it, setup, teardown),
                cmocka_unit_test_setup_teardown(test_authorized_answer_redispatches_the_call, setup, teardown),
                cmocka_unit_test_setup_teardown(test_denial_names_the_action, setup, teardown),
                cmocka_unit_test_setup_teardown(test_challenge_says_authentication_is_required, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing_polkitd_denies, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failure_to_send_denies, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unclaimed_answer_expires, setup, teardown),
                cmocka_unit_test_setup_teardown(test_two_actions_for_one_call, setup, teardown),
                cmocka_unit_test_setup_teardown(test_queries_are_per_message, setup, teardown),
                cmocka_unit_test_setup_teardown(test_requeue_failure_replies_and_forgets, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_cancels_pending_queries, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
