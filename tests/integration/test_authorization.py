#!/usr/bin/python3
"""Authorization through the real polkitd (SPEC §5).

The test users have no login session, so polkit judges them by the "any"
defaults: every cistern action needs admin authentication, which fails
without an agent.  Rules written per test grant single actions to single users.
"""

import contextlib
import json
import os
import signal
import subprocess
import unittest
import xml.etree.ElementTree as ET

import dbus

import harness
from harness import (BUS_NAME, MANAGER, POOL, ROOT_PATH, VOLUME, USER_A, USER_B, Error, MiB,
                     rule_allowing)

POOL_MANAGE = "org.cistern.pool.manage"
VOLUME_CREATE = "org.cistern.volume.create"
VOLUME_MODIFY = "org.cistern.volume.modify"
VOLUME_MODIFY_OWN = "org.cistern.volume.modify-own"
VOLUME_READ = "org.cistern.volume.read"
VOLUME_READ_OWN = "org.cistern.volume.read-own"

OK = None   # an expected outcome in method_table: the call succeeds


def with_memfd(size, fn):
    """fn(fd) on a regular file of `size` zero bytes that lives only in memory."""
    fd = os.memfd_create("cistern-test", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        return fn(fd)
    finally:
        os.close(fd)


class AuthorizationTestCase(harness.CisternTestCase):
    """Pool p1 with volumes owned by root (rootvol), USER_A (v1, v2) and USER_B (bvol), each
    with one revision."""

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")
        self.spare_dir = self.pool_dir("spare")
        self.rootvol = self.make_volume(self.pool, "rootvol", MiB)
        self.v1 = self.make_volume(self.pool, "v1", MiB, owner=USER_A.uid)
        self.v2 = self.make_volume(self.pool, "v2", MiB, owner=USER_A.uid)
        self.bvol = self.make_volume(self.pool, "bvol", MiB, owner=USER_B.uid)
        for volume in (self.rootvol, self.v1, self.v2, self.bvol):
            self.c.create_snapshot(volume)   # for RemoveRevision and Revert

    def grant(self, action, user=USER_A, condition="true"):
        self.env.set_polkit_rules(rule_allowing(action, user, condition))

    def check_needs(self, action, fn, user=USER_A):
        """fn is denied to user by default and allowed once a rule grants action."""
        self.assert_user_fails(Error.NotAuthorized, user, fn)
        self.grant(action, user)
        return self.assert_user_succeeds(user, fn)

    def assert_user_outcome(self, expected, user, fn):
        """fn(Cistern) run by user ends as expected (OK or an error) and changes nothing."""
        if expected is not OK:
            return self.assert_user_fails(expected, user, fn)
        before = self.snapshot_state()
        value = self.assert_user_succeeds(user, fn)
        self.assertEqual(before, self.snapshot_state(), "state changed after a call by %s"
                         % user.name)
        return value

    def method_table(self, volume, job=None):
        """Every method of the org.cistern.Cistern1 interfaces, "Interface.Method" →
        (outcome for a caller that no polkit rule authorizes, fn(Cistern)), aimed at pool p1,
        at `volume` and its oldest revision, and at `job` (Job.Cancel only with a job).

        SPEC §5: every method that changes anything or reveals volume content is
        NotAuthorized; the lookups and Pool.Refresh are open; ImportEnd and ExportEnd only
        end the caller's own session, which such a caller cannot have opened: WrongState.
        A method added to an interface needs a case here (EveryMethodTest fails without one).
        """
        pool, spare = self.pool.obj, self.spare_dir
        name = self.c.prop(volume, VOLUME, "Name")
        revision = self.c.prop(volume, VOLUME, "Revisions")[0][0]
        denied = Error.NotAuthorized
        table = {
            "Manager.CreatePool": (denied, lambda c: c.create_pool("p2", "dir", {"path": spare})),
            "Manager.RemovePool": (denied, lambda c: c.remove_pool("p1")),
            "Manager.GetPool": (OK, lambda c: c.get_pool("p1")),
            "Manager.GetVolume": (OK, lambda c: c.get_volume("p1", name)),
            "Pool.CreateVolume": (denied, lambda c: c.create_volume(pool, "new", MiB, {})),
            "Pool.Configure": (denied,
                               lambda c: c.configure_pool(pool, {"revisions_to_keep": 3})),
            "Pool.Refresh": (OK, lambda c: c.refresh_pool(pool)),
            "Volume.Remove": (denied, lambda c: c.remove_volume(volume)),
            "Volume.Resize": (denied, lambda c: c.resize(volume, 2 * MiB)),
            "Volume.Configure": (denied,
                                 lambda c: c.configure_volume(volume, {"read_only": True})),
            "Volume.Info": (denied, lambda c: c.info(volume)),
            "Volume.Start": (denied, lambda c: c.start_volume(volume)),
            "Volume.Stop": (denied, lambda c: c.stop_volume(volume)),
            "Volume.CreateSnapshot": (denied, lambda c: c.create_snapshot(volume)),
            "Volume.RemoveRevision": (denied, lambda c: c.remove_revision(volume, revision)),
            "Volume.Revert": (denied, lambda c: c.revert(volume, revision)),
            "Volume.Clone": (denied, lambda c: c.clone(volume, pool, "clone")),
            "Volume.Convert": (denied, lambda c: c.convert(volume, "qcow2")),
            "Volume.Import": (denied,
                              lambda c: with_memfd(MiB, lambda fd: c.import_(volume, fd))),
            "Volume.ImportBegin": (denied, lambda c: c.import_begin(volume, {"size": MiB})),
            "Volume.ImportEnd": (Error.WrongState, lambda c: c.import_end(volume, True)),
            "Volume.Attach": (denied, lambda c: c.call(volume, VOLUME, "Attach", "a{sv}",
                                                       harness.variant_dict(None))),
            "Volume.Detach": (Error.WrongState, lambda c: c.call(volume, VOLUME, "Detach", "a{sv}",
                                                                 harness.variant_dict(None))),
            "Volume.Open": (denied, lambda c: c.call(volume, VOLUME, "Open", "a{sv}",
                                                     harness.variant_dict(None))),
            "Volume.Mount": (denied, lambda c: c.call(volume, VOLUME, "Mount", "ua{sv}", 0,
                                                      harness.variant_dict(None))),
            "Volume.Unmount": (Error.WrongState, lambda c: c.call(volume, VOLUME, "Unmount", "ua{sv}", 0,
                                                                  harness.variant_dict(None))),
            "Volume.Export": (denied, lambda c: with_memfd(0, lambda fd: c.export(volume, fd))),
            "Volume.ExportBegin": (denied, lambda c: c.export_begin(volume)),
            "Volume.ExportEnd": (Error.WrongState, lambda c: c.export_end(volume)),
        }
        if job is not None:
            table["Job.Cancel"] = (denied, lambda c: c.cancel_job(job))
        return table

    def mutating_calls(self, volume):
        """Every method that asks polkit, as fn(Cistern), aimed at `volume` where it can be."""
        return {method: fn for method, (outcome, fn) in self.method_table(volume).items()
                if outcome == Error.NotAuthorized}


class DefaultPolicyTest(AuthorizationTestCase):
    """Every mutating method: NotAuthorized without a rule, allowed with one."""

    def test_create_pool_needs_pool_manage(self):
        spare = self.spare_dir
        self.check_needs(POOL_MANAGE, lambda c: c.create_pool("p2", "dir", {"path": spare}))
        self.assertEqual(self.c.prop(self.c.get_pool("p2"), POOL, "Name"), "p2")

    def test_remove_pool_needs_pool_manage(self):
        self.check_needs(POOL_MANAGE, lambda c: c.remove_pool("p1"))
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [])

    def test_pool_configure_needs_pool_manage(self):
        pool = self.pool.obj
        self.check_needs(POOL_MANAGE,
                         lambda c: c.configure_pool(pool, {"revisions_to_keep": 3}))
        self.assertEqual(self.c.prop(pool, POOL, "RevisionsToKeep"), 3)

    def test_create_volume_needs_volume_create(self):
        pool = self.pool.obj
        volume = self.check_needs(VOLUME_CREATE,
                                  lambda c: c.create_volume(pool, "new", MiB, {}))
        self.assertEqual(self.c.prop(volume, VOLUME, "Owner"), USER_A.uid)

    def test_remove_of_someone_elses_volume_needs_volume_modify(self):
        volume = self.rootvol
        self.check_needs(VOLUME_MODIFY, lambda c: c.remove_volume(volume))
        self.assertNotIn(volume, self.c.managed_objects())

    def test_resize_of_someone_elses_volume_needs_volume_modify(self):
        volume = self.rootvol
        self.check_needs(VOLUME_MODIFY, lambda c: c.resize(volume, 2 * MiB))
        self.assertEqual(self.c.prop(volume, VOLUME, "Size"), 2 * MiB)

    def test_configure_of_someone_elses_volume_needs_volume_modify(self):
        volume = self.rootvol
        self.check_needs(VOLUME_MODIFY,
                         lambda c: c.configure_volume(volume, {"read_only": True}))
        self.assertIs(self.c.prop(volume, VOLUME, "ReadOnly"), True)

    def test_info_of_someone_elses_volume_needs_volume_read(self):
        volume = self.rootvol
        info = self.check_needs(VOLUME_READ, lambda c: c.info(volume))
        self.assertEqual(info["virtual_size"], MiB)

    def test_stop_of_someone_elses_started_volume_is_denied(self):
        volume = self.rootvol
        self.c.start_volume(volume)
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.stop_volume(volume))
        self.assertEqual(self.c.prop(volume, VOLUME, "State"), "started")

    def test_every_mutating_method_is_denied_to_both_users_on_own_and_foreign_volumes(self):
        for user in (USER_A, USER_B):
            for target in ("v1", "bvol"):   # USER_A's and USER_B's
                for method, fn in self.mutating_calls(getattr(self, target)).items():
                    if target == "bvol" and not method.startswith("Volume."):
                        continue   # the same call as for v1
                    with self.subTest(user=user.name, volume=target, method=method):
                        self.assert_user_fails(Error.NotAuthorized, user, fn)

    def test_a_rule_for_every_action_allows_every_method(self):
        self.grant([POOL_MANAGE, VOLUME_CREATE, VOLUME_MODIFY, VOLUME_READ], USER_B)
        calls = self.mutating_calls(self.v1)
        for method in ("Volume.Info", "Volume.Resize", "Volume.Configure", "Volume.Remove",
                       "Pool.CreateVolume", "Pool.Configure", "Manager.CreatePool",
                       "Manager.RemovePool"):
            with self.subTest(method):
                self.assert_user_succeeds(USER_B, calls[method])
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [harness.pool_path("p2")])


class EveryMethodTest(AuthorizationTestCase):
    """Each method introspection shows is denied, or ends as documented, for a caller that no
    polkit rule authorizes, and changes nothing; a method without a case fails the test."""

    def cistern_methods(self, paths):
        """"Interface.Method" of every method of an org.cistern.Cistern1 interface at paths."""
        methods = set()
        for path in paths:
            for interface in ET.fromstring(self.c.introspect(path)).iter("interface"):
                name = interface.get("name")
                if name.startswith(BUS_NAME + "."):
                    methods.update("%s.%s" % (name[len(BUS_NAME) + 1:], method.get("name"))
                                   for method in interface.iter("method"))
        return methods

    def root_job(self):
        """A Job of root's that runs until the test ends: an Import into volume "busy" of pool
        pj, from a pipe whose write end the test holds open and never writes to."""
        volume = self.make_volume(self.make_pool("pj"), "busy", MiB)
        rec = self.recorder()
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        call = harness.AsyncCall(self.env.bus, volume, VOLUME, "Import", "ha{sv}",
                                 dbus.types.UnixFd(read_fd), harness.variant_dict({"size": MiB}))
        os.close(read_fd)

        def finish():   # EOF: the import fails (shorter than announced) and changes nothing
            os.close(write_fd)
            call.wait()
        self.addCleanup(finish)
        added = rec.wait_for(harness.job_added("Import"), timeout=10)
        self.assertIsNotNone(added, "no Import Job appeared (call: %s)" % call)
        return added.args[0], call

    def test_every_method_is_denied_or_has_its_documented_outcome(self):
        job, call = self.root_job()
        methods = self.cistern_methods((ROOT_PATH, self.pool.obj, self.rootvol, job))
        self.assertLessEqual({"Manager", "Pool", "Volume", "Job"},
                             {method.split(".")[0] for method in methods})
        with self.subTest("every method has a case"):
            self.assertEqual(sorted(methods - self.method_table(self.rootvol, job).keys()), [],
                             "methods with no case in method_table")
        for user, target in ((USER_A, "bvol"), (USER_B, "rootvol")):   # another user's, root's
            for method, (outcome, fn) in self.method_table(getattr(self, target), job).items():
                with self.subTest(user=user.name, volume=target, method=method):
                    self.assert_user_outcome(outcome, user, fn)
        harness.dispatch_pending()
        self.assertFalse(call.finished, "root's Import ended: %s" % call)
        self.assertIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))


class OwnVolumeTest(AuthorizationTestCase):
    """-own actions apply when the caller is the volume's Owner."""

    def test_owner_outside_a_session_needs_a_rule_to_resize(self):
        volume = self.v1
        self.check_needs(VOLUME_MODIFY_OWN, lambda c: c.resize(volume, 2 * MiB))
        self.assertEqual(self.c.prop(volume, VOLUME, "Size"), 2 * MiB)

    def test_owner_outside_a_session_needs_a_rule_to_remove(self):
        volume = self.v1
        self.check_needs(VOLUME_MODIFY_OWN, lambda c: c.remove_volume(volume))

    def test_owner_outside_a_session_needs_a_rule_to_configure(self):
        volume = self.v1
        self.check_needs(VOLUME_MODIFY_OWN,
                         lambda c: c.configure_volume(volume, {"revisions_to_keep": 2}))

    def test_owner_outside_a_session_needs_a_rule_for_info(self):
        volume = self.v1
        self.check_needs(VOLUME_READ_OWN, lambda c: c.info(volume))

    def test_modify_own_does_not_cover_another_users_volume(self):
        self.grant(VOLUME_MODIFY_OWN)
        volume = self.bvol
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(volume, 2 * MiB))

    def test_modify_own_does_not_cover_roots_volume(self):
        self.grant(VOLUME_MODIFY_OWN)
        volume = self.rootvol
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(volume, 2 * MiB))

    def test_read_own_does_not_cover_another_users_volume(self):
        self.grant(VOLUME_READ_OWN)
        volume = self.bvol
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.info(volume))

    def test_modify_own_lets_each_user_change_only_their_own_volumes(self):
        self.env.set_polkit_rules(rule_allowing(VOLUME_MODIFY_OWN, USER_A)
                                  + rule_allowing(VOLUME_MODIFY_OWN, USER_B))
        owners = ((USER_A, self.v1, [self.bvol, self.rootvol]),
                  (USER_B, self.bvol, [self.v1, self.rootvol]))
        for user, own, foreign in owners:
            for volume in foreign:
                with self.subTest(user=user.name, volume=volume):
                    self.assert_user_fails(Error.NotAuthorized, user,
                                           lambda c: c.resize(volume, 2 * MiB))
                    self.assert_user_fails(Error.NotAuthorized, user,
                                           lambda c: c.configure_volume(volume,
                                                                        {"read_only": True}))
                    self.assert_user_fails(Error.NotAuthorized, user,
                                           lambda c: c.remove_volume(volume))
        for user, own, foreign in owners:
            with self.subTest(user=user.name, volume=own):
                self.assert_user_succeeds(user, lambda c: c.resize(own, 2 * MiB))
                self.assert_user_succeeds(user, lambda c: c.configure_volume(
                    own, {"read_only": True}))
                props = self.c.props(own, VOLUME)
                self.assertEqual((props["Size"], props["ReadOnly"]), (2 * MiB, True))
                self.assert_user_succeeds(user, lambda c: c.remove_volume(own))
                self.assertNotIn(own, self.c.managed_objects())

    def test_modify_own_does_not_grant_read_own_nor_the_reverse(self):
        volume = self.v1
        self.grant(VOLUME_MODIFY_OWN)
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.info(volume))
        self.grant(VOLUME_READ_OWN)
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(volume, 2 * MiB))
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.remove_volume(volume))

    def test_modify_own_grants_no_pool_or_create_action(self):
        self.grant(VOLUME_MODIFY_OWN)
        calls = self.mutating_calls(self.v1)
        for method in ("Manager.CreatePool", "Manager.RemovePool", "Pool.Configure",
                       "Pool.CreateVolume"):
            with self.subTest(method):
                self.assert_user_fails(Error.NotAuthorized, USER_A, calls[method])

    def test_the_owner_option_may_name_the_caller_itself(self):
        self.grant(VOLUME_CREATE)
        pool = self.pool.obj
        volume = self.assert_user_succeeds(
            USER_A, lambda c: c.create_volume(pool, "new", MiB, {"owner": USER_A.uid}))
        self.assertEqual(self.c.prop(volume, VOLUME, "Owner"), USER_A.uid)


class RuleScopeTest(AuthorizationTestCase):

    def test_rule_for_one_user_does_not_authorize_another(self):
        self.grant(POOL_MANAGE, USER_A)
        spare = self.spare_dir
        self.assert_user_fails(Error.NotAuthorized, USER_B,
                               lambda c: c.create_pool("p2", "dir", {"path": spare}))

    def test_rule_for_another_action_does_not_authorize(self):
        self.grant(VOLUME_MODIFY, USER_A)
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.remove_pool("p1"))

    def test_volume_create_does_not_allow_choosing_another_owner(self):
        self.grant(VOLUME_CREATE)
        pool = self.pool.obj
        for owner in (USER_B.uid, 0):
            with self.subTest(owner=owner):
                self.assert_user_fails(
                    Error.NotAuthorized, USER_A,
                    lambda c: c.create_volume(pool, "new", MiB, {"owner": owner}))

    def test_polkit_receives_pool_volume_owner_and_operation(self):
        condition = ('action.lookup("pool") == "p1" && action.lookup("operation") == "Resize"'
                     ' && action.lookup("owner") == "%d" && action.lookup("volume") == "v1"'
                     % USER_A.uid)
        self.grant([VOLUME_MODIFY, VOLUME_MODIFY_OWN], USER_A, condition)
        v1, v2 = self.v1, self.v2
        self.assert_user_succeeds(USER_A, lambda c: c.resize(v1, 2 * MiB))
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(v2, 2 * MiB))
        self.assert_user_fails(Error.NotAuthorized, USER_A,
                               lambda c: c.configure_volume(v1, {"read_only": True}))


def rule_checking_details(user, expected):
    """polkit JS: YES for `user` only where the details are exactly as expected.

    expected maps "ACTION OPERATION" to the details that check must carry.
    Every check is logged to polkitd's log, which a failing test prints.
    """
    return """polkit.addRule(function(action, subject) {
    if (subject.user != "%s")
        return;
    var expected = %s;
    var keys = ["pool", "volume", "owner", "operation"];
    var got = {};
    for (var i = 0; i < keys.length; i++)
        got[keys[i]] = action.lookup(keys[i]);
    polkit.log("cistern check " + action.id + " " + JSON.stringify(got));
    var want = expected[action.id + " " + got.operation];
    if (!want)
        return polkit.Result.NO;
    for (var k in want)
        if (got[k] !== want[k])
            return polkit.Result.NO;
    return polkit.Result.YES;
});
""" % (user.name, json.dumps(expected))


class DetailsTest(AuthorizationTestCase):
    """polkit receives pool, volume, owner and operation (SPEC §5) for every method."""

    def test_every_method_passes_its_details(self):
        owner_a = str(USER_A.uid)
        expected = {   # pool methods concern no volume: only pool and operation are checked
            POOL_MANAGE + " CreatePool": {"pool": "p2", "operation": "CreatePool"},
            POOL_MANAGE + " RemovePool": {"pool": "p2", "operation": "RemovePool"},
            POOL_MANAGE + " Configure": {"pool": "p1", "operation": "Configure"},
            VOLUME_CREATE + " CreateVolume": {"pool": "p1", "volume": "new", "owner": owner_a,
                                              "operation": "CreateVolume"},
            VOLUME_MODIFY_OWN + " Resize": {"pool": "p1", "volume": "v1", "owner": owner_a,
                                            "operation": "Resize"},
            VOLUME_MODIFY_OWN + " Configure": {"pool": "p1", "volume": "v1", "owner": owner_a,
                                               "operation": "Configure"},
            VOLUME_MODIFY_OWN + " Remove": {"pool": "p1", "volume": "v2", "owner": owner_a,
                                            "operation": "Remove"},
            VOLUME_READ_OWN + " Info": {"pool": "p1", "volume": "v1", "owner": owner_a,
                                        "operation": "Info"},
            VOLUME_MODIFY + " Resize": {"pool": "p1", "volume": "bvol",
                                        "owner": str(USER_B.uid), "operation": "Resize"},
            VOLUME_READ + " Info": {"pool": "p1", "volume": "rootvol", "owner": "0",
                                    "operation": "Info"},
        }
        self.env.set_polkit_rules(rule_checking_details(USER_A, expected))
        pool, spare, v1, v2, bvol, rootvol = (self.pool.obj, self.spare_dir, self.v1, self.v2,
                                             self.bvol, self.rootvol)
        calls = [
            ("CreatePool", lambda c: c.create_pool("p2", "dir", {"path": spare})),
            ("RemovePool", lambda c: c.remove_pool("p2")),
            ("Pool.Configure", lambda c: c.configure_pool(pool, {"revisions_to_keep": 3})),
            ("CreateVolume", lambda c: c.create_volume(pool, "new", MiB, {})),
            ("Resize own", lambda c: c.resize(v1, 2 * MiB)),
            ("Configure own", lambda c: c.configure_volume(v1, {"read_only": True})),
            ("Info own", lambda c: c.info(v1)),
            ("Remove own", lambda c: c.remove_volume(v2)),
            ("Resize of B's volume", lambda c: c.resize(bvol, 2 * MiB)),
            ("Info of root's volume", lambda c: c.info(rootvol)),
        ]
        for label, fn in calls:
            with self.subTest(label):
                self.assert_user_succeeds(USER_A, fn)

    def test_a_check_with_other_details_is_refused_by_the_same_rule(self):
        """The rule above is strict: the same calls on other objects are refused."""
        expected = {VOLUME_MODIFY_OWN + " Resize": {"pool": "p1", "volume": "v1",
                                                    "owner": str(USER_A.uid),
                                                    "operation": "Resize"}}
        self.env.set_polkit_rules(rule_checking_details(USER_A, expected))
        v1, v2 = self.v1, self.v2
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(v2, 2 * MiB))
        self.assert_user_fails(Error.NotAuthorized, USER_A,
                               lambda c: c.configure_volume(v1, {"read_only": True}))
        self.assert_user_succeeds(USER_A, lambda c: c.resize(v1, 2 * MiB))


class WithoutPolkitdTest(AuthorizationTestCase):

    def setUp(self):
        super().setUp()
        self.grant([POOL_MANAGE, VOLUME_CREATE, VOLUME_MODIFY, VOLUME_MODIFY_OWN, VOLUME_READ,
                    VOLUME_READ_OWN], USER_A)
        self.env.stop_polkitd()
        self.addCleanup(self.env.start_polkitd)

    def test_root_is_authorized_without_asking(self):
        self.c.create_pool("p2", "dir", {"path": self.spare_dir})
        volume = self.c.create_volume(self.pool.obj, "new", MiB, {})
        self.c.resize(volume, 2 * MiB)
        self.c.configure_volume(self.v1, {"read_only": True})
        self.assertEqual(self.c.info(self.bvol)["virtual_size"], MiB)
        self.c.remove_volume(volume)

    def test_root_may_call_every_method(self):
        calls = self.mutating_calls(self.v1)
        for method in ("Volume.Info", "Volume.Resize", "Volume.Configure", "Volume.Remove",
                       "Pool.CreateVolume", "Pool.Configure", "Manager.CreatePool",
                       "Manager.RemovePool"):
            with self.subTest(method):
                calls[method](self.c)
        self.c.refresh_pool(self.c.get_pool("p2"))
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [harness.pool_path("p2")])

    def test_non_root_is_denied(self):
        v1, pool = self.v1, self.pool.obj
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(v1, 2 * MiB))
        self.assert_user_fails(Error.NotAuthorized, USER_A,
                               lambda c: c.create_volume(pool, "new", MiB, {}))

    def test_non_root_is_denied_every_method_even_with_a_rule(self):
        for target in ("v1", "rootvol"):
            for method, fn in self.mutating_calls(getattr(self, target)).items():
                with self.subTest(volume=target, method=method):
                    self.assert_user_fails(Error.NotAuthorized, USER_A, fn)

    def test_reads_and_refresh_still_work_for_non_root(self):
        pool, v1 = self.pool.obj, self.v1
        self.assert_user_succeeds(USER_A, lambda c: c.refresh_pool(pool))
        self.assertEqual(self.assert_user_succeeds(USER_A, lambda c: c.prop(v1, VOLUME, "Size")),
                         MiB)
        self.assertIn(v1, self.assert_user_succeeds(USER_A, lambda c: c.managed_objects()))

    def test_root_works_again_and_non_root_is_asked_again_once_polkitd_returns(self):
        v1 = self.v1
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.resize(v1, 2 * MiB))
        self.env.start_polkitd()
        self.assert_user_succeeds(USER_A, lambda c: c.resize(v1, 2 * MiB))
        self.assertEqual(self.c.prop(v1, VOLUME, "Size"), 2 * MiB)


class InteractiveAuthorizationTest(AuthorizationTestCase):
    """polkit may authenticate interactively only when the call allows it (SPEC §5).

    A rule answers AUTH_ADMIN for USER_A.  The caller runs its own (fake)
    authentication agent, which polkitd asks only for interactive checks and
    which dismisses every request; so every call is denied, and whether the
    agent was asked shows whether cisternd passed the interactive flag.
    """

    HELPER = os.path.join(harness.HERE, "polkit_agent_client.py")

    def setUp(self):
        super().setUp()
        self.env.set_polkit_rules(
            "polkit.addRule(function(action, subject) {\n"
            "    if (action.id.indexOf(\"org.cistern.\") == 0 && subject.user == \"%s\")\n"
            "        return polkit.Result.AUTH_ADMIN;\n"
            "});\n" % USER_A.name)

    def call_with_agent(self, interactive, path, iface, method, signature, args):
        before = self.snapshot_state()
        try:
            result = harness.run_as(USER_A, ["/usr/bin/python3", self.HELPER,
                                             "yes" if interactive else "no", path, iface, method,
                                             signature, json.dumps(args)],
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.fail("%s (interactive=%s) hung" % (method, interactive))
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads(result.stdout)
        self.assertEqual(report["error"], Error.NotAuthorized, report)
        self.assertEqual(self.snapshot_state(), before, "state changed after a denied call")
        return report

    def calls(self):
        return {
            "Resize": (self.v1, VOLUME, "Resize", "ta{sv}", [2 * MiB, {}]),
            "CreateVolume": (self.pool.obj, POOL, "CreateVolume", "sta{sv}", ["new", MiB, {}]),
            "CreatePool": (ROOT_PATH, MANAGER, "CreatePool", "ssa{sv}",
                           ["p2", "dir", {"path": self.spare_dir}]),
        }

    def test_auth_admin_without_the_interactive_flag_is_denied_without_asking_the_agent(self):
        for method, call in self.calls().items():
            with self.subTest(method):
                report = self.call_with_agent(False, *call)
                self.assertEqual(report["agent_asked"], [], "polkitd asked the agent although "
                                 "the call did not allow interactive authorization")

    def test_auth_admin_with_the_interactive_flag_asks_the_callers_agent(self):
        for method, call in self.calls().items():
            with self.subTest(method):
                report = self.call_with_agent(True, *call)
                self.assertEqual(len(report["agent_asked"]), 1, report)


class PendingAuthorizationTest(AuthorizationTestCase):
    """A call waiting for polkit blocks nobody, and is checked again once polkit answers.

    A PolkitGate holds polkitd's answer to USER_A's check until the test
    releases it; meanwhile root (who needs no polkit) changes the state.
    """

    def start_gated(self, action, fn, result="YES"):
        gate = self.polkit_gate()
        self.env.set_polkit_rules(gate.rule(action, USER_A, result))
        pid = self.env.daemon_pid()
        call = self.start_as_user(USER_A, fn)
        gate.wait_entered()
        self.assertFalse(call.done(), "the call returned before polkit answered")
        return gate, call, pid

    def finish(self, gate, call, pid):
        """Release the gate; the call's Outcome, checked to change nothing after an error."""
        before = self.snapshot_state()
        gate.release()
        outcome = call.outcome()
        if not outcome.ok:
            self.assertEqual(self.snapshot_state(), before,
                             "state changed after a failed call (%s)" % outcome)
        self.assertEqual(self.env.daemon_pid(), pid, "cisternd restarted")
        return outcome

    def test_other_calls_are_served_while_a_check_is_pending(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.resize(v1, 2 * MiB))
        self.assertEqual(self.c.prop(v1, VOLUME, "Size"), MiB)
        other = self.c.create_volume(self.pool.obj, "meanwhile", MiB, {})
        self.c.configure_volume(self.v2, {"read_only": True})
        self.assertIn(other, self.c.managed_objects())
        self.assertEqual(self.assert_user_succeeds(USER_B, lambda c: c.prop(v1, VOLUME, "Name")),
                         "v1")
        outcome = self.finish(gate, call, pid)
        self.assertTrue(outcome.ok, outcome)
        self.assertEqual(self.c.prop(v1, VOLUME, "Size"), 2 * MiB)

    def test_a_late_no_from_polkit_changes_nothing(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.remove_volume(v1),
                                           result="NO")
        outcome = self.finish(gate, call, pid)
        self.assertEqual(outcome.error, Error.NotAuthorized, outcome)

    def test_volume_removed_while_its_resize_waits(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.resize(v1, 2 * MiB))
        self.c.remove_volume(v1)
        outcome = self.finish(gate, call, pid)
        self.assertIn(outcome.error, (Error.UnknownObject, Error.NotFound), outcome)
        self.assertNotIn(v1, self.c.managed_objects())

    def test_pool_removed_while_a_volume_removal_waits(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.remove_volume(v1))
        self.c.remove_pool("p1")
        outcome = self.finish(gate, call, pid)
        self.assertIn(outcome.error, (Error.UnknownObject, Error.NotFound), outcome)
        self.c.create_pool("p1", "dir", {"path": self.pool.dir})
        self.assertEqual(self.c.prop(v1, VOLUME, "Size"), MiB, "v1 was removed after all")

    def test_volume_grown_while_a_resize_waits_makes_it_a_shrink(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.resize(v1, 2 * MiB))
        self.c.resize(v1, 4 * MiB)
        outcome = self.finish(gate, call, pid)
        self.assertEqual(outcome.error, Error.WouldShrink, outcome)
        self.assertEqual(self.c.prop(v1, VOLUME, "Size"), 4 * MiB)

    def test_name_taken_while_a_create_volume_waits(self):
        pool = self.pool.obj
        gate, call, pid = self.start_gated(VOLUME_CREATE,
                                           lambda c: c.create_volume(pool, "new", 2 * MiB, {}))
        volume = self.c.create_volume(pool, "new", MiB, {})
        outcome = self.finish(gate, call, pid)
        self.assertEqual(outcome.error, Error.AlreadyExists, outcome)
        self.assertEqual((self.c.prop(volume, VOLUME, "Owner"),
                          self.c.prop(volume, VOLUME, "Size")), (0, MiB))

    def test_name_taken_while_a_create_pool_waits(self):
        spare = self.spare_dir
        gate, call, pid = self.start_gated(POOL_MANAGE,
                                           lambda c: c.create_pool("p2", "dir", {"path": spare}))
        self.c.create_pool("p2", "dir", {"path": self.pool_dir("other")})
        outcome = self.finish(gate, call, pid)
        self.assertEqual(outcome.error, Error.AlreadyExists, outcome)
        self.assertEqual(self.c.props(self.c.get_pool("p2"), POOL)["Config"]["path"],
                         self.pool_dir("other"))

    def test_sigkill_while_a_check_is_pending_changes_nothing(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.remove_volume(v1))
        before = self.snapshot_state()
        self.env.kill_daemon(signal.SIGKILL)
        gate.release()
        outcome = call.outcome()
        self.assertEqual(outcome.error, "org.freedesktop.DBus.Error.NoReply", outcome)
        self.assertEqual(self.snapshot_state(), before)   # restarts the daemon

    def test_polkitd_dying_during_a_check_denies(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.remove_volume(v1))
        before = self.snapshot_state()
        self.env.polkitd.kill()
        self.env.polkitd.wait()
        self.env.polkitd = None
        outcome = call.outcome()
        self.assertEqual(outcome.error, Error.NotAuthorized, outcome)
        self.assertEqual(self.snapshot_state(), before)
        self.assertEqual(self.env.daemon_pid(), pid)

    def test_caller_leaving_during_a_check_leaves_a_consistent_daemon(self):
        v1 = self.v1
        gate, call, pid = self.start_gated(VOLUME_MODIFY_OWN, lambda c: c.resize(v1, 2 * MiB))
        call.kill()
        marks = self.env.log_marks()
        gate.release()
        # Wait until cisternd has polkit's answer (its debug log says so; at worst this
        # waits 5 s); the next call is then dispatched after the re-dispatched resize.
        with contextlib.suppress(TimeoutError):
            harness.poll_until(lambda: "polkit answered" in self.env.logs_since(marks), 5,
                               "cisternd to receive polkit's answer")
        # Whether the resize of a caller that left still happens is not specified.
        self.assertIn(self.c.prop(v1, VOLUME, "Size"), (MiB, 2 * MiB))
        self.assertEqual(self.env.daemon_pid(), pid, "cisternd died")
        objects = self.c.managed_objects()
        for path in (self.v1, self.v2, self.bvol, self.rootvol):
            self.assertEqual(objects[path][VOLUME], self.c.props(path, VOLUME))

    def test_pool_removed_while_its_configure_waits(self):
        pool = self.pool.obj
        gate, call, pid = self.start_gated(
            POOL_MANAGE, lambda c: c.configure_pool(pool, {"revisions_to_keep": 3}))
        self.c.remove_pool("p1")
        outcome = self.finish(gate, call, pid)
        self.assertIn(outcome.error, (Error.UnknownObject, Error.NotFound), outcome)


class OpenAccessTest(AuthorizationTestCase):
    """Reading properties, lookups, introspection and Refresh need no authorization."""

    def test_property_reads_are_open(self):
        for path, iface in ((ROOT_PATH, MANAGER), (self.pool.obj, POOL),
                            (self.rootvol, VOLUME)):
            with self.subTest(iface):
                props = self.assert_user_succeeds(USER_A, lambda c: c.props(path, iface))
                self.assertEqual(harness.stable_pool_props(props),
                                 harness.stable_pool_props(self.c.props(path, iface)))

    def test_managed_objects_are_open(self):
        objects = self.assert_user_succeeds(USER_A, lambda c: c.managed_objects())
        self.assertEqual(harness.stable_objects(objects),
                         harness.stable_objects(self.c.managed_objects()))

    def test_introspection_is_open(self):
        for path in (ROOT_PATH, self.pool.obj, self.rootvol):
            with self.subTest(path):
                xml = self.assert_user_succeeds(USER_A, lambda c: c.introspect(path))
                self.assertIn("<interface", xml)

    def test_lookups_are_open(self):
        self.assertEqual(self.assert_user_succeeds(USER_A, lambda c: c.get_pool("p1")),
                         self.pool.obj)
        self.assertEqual(self.assert_user_succeeds(USER_A, lambda c: c.get_volume("p1", "v1")),
                         self.v1)

    def test_pool_refresh_needs_no_authorization(self):
        pool = self.pool.obj
        self.assert_user_succeeds(USER_A, lambda c: c.refresh_pool(pool))


class PolicyFileTest(unittest.TestCase):
    """polkit/org.cistern.Cistern1.policy declares SPEC §5's actions and defaults."""

    PATH = os.path.join(harness.SOURCE_DIR, "polkit", "org.cistern.Cistern1.policy")

    def test_every_action_has_the_spec_defaults(self):
        self.assertTrue(os.path.exists(self.PATH), "%s is missing" % self.PATH)
        declared = {}
        for action in ET.parse(self.PATH).getroot().iter("action"):
            defaults = action.find("defaults")
            declared[action.get("id")] = tuple(
                defaults.findtext(k).strip()
                for k in ("allow_any", "allow_inactive", "allow_active"))
        expected = {a: tuple(d) for a, *d in harness.FALLBACK_ACTIONS}
        self.assertEqual(declared, expected)


if __name__ == "__main__":
    harness.main()
