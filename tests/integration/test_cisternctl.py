#!/usr/bin/python3
"""cisternctl against the real daemon (SPEC §7): commands, --json, exit codes, IEC sizes."""

import json
import os
import subprocess
import unittest

import harness
from harness import (INVALID_NAMES, MANAGER, POOL, ROOT_PATH, VOLUME, USER_A, USER_B, MiB, GiB,
                     KiB, rule_allowing)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def json_scalars(doc):
    """Every scalar value anywhere in a parsed JSON document."""
    if isinstance(doc, dict):
        for value in doc.values():
            yield from json_scalars(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from json_scalars(value)
    else:
        yield doc


class CisternctlTestCase(harness.CisternTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.access(harness.CISTERNCTL, os.X_OK):
            raise unittest.SkipTest("cisternctl is not built at %s" % harness.CISTERNCTL)

    def ctl(self, *args, expect=(EXIT_OK,), user=None):
        """Run cisternctl; its exit code must be in expect."""
        expect = (expect,) if isinstance(expect, int) else expect
        result = harness.run_as(user, [harness.CISTERNCTL, "--no-ask-password"] + list(args),
                                stdin=subprocess.DEVNULL)
        self.assertIn(result.returncode, expect,
                         "cisternctl %s exited %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), result.returncode, result.stdout, result.stderr))
        return result

    def assert_ctl_fails(self, *args, expect=(EXIT_FAILURE,), user=None, ask_password=False):
        """cisternctl fails with an exit code in expect and changes nothing."""
        before = self.snapshot_state()
        if ask_password:   # without --no-ask-password (stdin is no terminal: no agent)
            expect = (expect,) if isinstance(expect, int) else expect
            result = harness.run_as(user, [harness.CISTERNCTL] + list(args),
                                    stdin=subprocess.DEVNULL)
            self.assertIn(result.returncode, expect, "cisternctl %s exited %d: %s"
                          % (" ".join(args), result.returncode, result.stderr))
        else:
            result = self.ctl(*args, expect=expect, user=user)
        self.assertEqual(before, self.snapshot_state(),
                         "state changed after cisternctl %s failed" % " ".join(args))
        return result

    def ctl_json(self, *args):
        out = self.ctl("--json", *args).stdout
        try:
            return json.loads(out)
        except ValueError as e:
            self.fail("cisternctl --json %s printed invalid JSON (%s): %r"
                      % (" ".join(args), e, out))

    def assert_names_problem(self, result, *words):
        """A failure message on stderr that mentions one of words (case-insensitive)."""
        self.assertTrue(result.stderr.strip(), "no error message on stderr")
        text = result.stderr.lower()
        self.assertTrue(any(w.lower() in text for w in words),
                        "stderr names none of %s: %r" % (words, result.stderr))

    def pool_create(self, name="p1", *extra):
        path = self.pool_dir(name)
        self.ctl("pool-create", name, "dir", "path=" + path, *extra)
        return path

    def volume_props(self, pool, volume):
        return self.c.props(self.c.get_volume(pool, volume), VOLUME)


class UsageTest(CisternctlTestCase):

    def test_no_command_is_a_usage_error(self):
        self.ctl(expect=EXIT_USAGE)

    def test_unknown_command_is_a_usage_error(self):
        self.ctl("frobnicate", expect=EXIT_USAGE)

    def test_unknown_option_is_a_usage_error(self):
        self.ctl("--bogus", "status", expect=EXIT_USAGE)

    def test_missing_arguments_are_usage_errors(self):
        for args in (["create", "p1/v1"], ["create"], ["resize", "p1/v1"], ["pool-create"],
                     ["pool-create", "p1"], ["remove"], ["info"]):
            with self.subTest(args=args):
                self.ctl(*args, expect=EXIT_USAGE)

    def test_malformed_sizes_are_usage_errors(self):
        self.pool_create()
        for size in ("10Q", "abc", "-1M", "", "1.5.5G"):
            with self.subTest(size=size):
                self.ctl("create", "p1/v1", size, expect=EXIT_USAGE)
        self.assertEqual(self.c.prop(self.c.get_pool("p1"), POOL, "Volumes"), [])

    def test_volume_without_pool_is_a_usage_error(self):
        self.pool_create()
        self.ctl("create", "v1", "10M", expect=EXIT_USAGE)


class StatusTest(CisternctlTestCase):

    def test_status_shows_the_version(self):
        version = self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.assertIn(version, self.ctl("status").stdout)

    def test_status_json_carries_the_version(self):
        version = self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.assertIn(version, list(json_scalars(self.ctl_json("status"))))


class PoolCommandsTest(CisternctlTestCase):

    def test_pool_create_creates_a_dir_pool(self):
        path = self.pool_create("p1")
        props = self.c.props(self.c.get_pool("p1"), POOL)
        self.assertEqual((props["Driver"], props["Config"]["path"]), ("dir", path))

    def test_pool_create_passes_typed_config(self):
        self.pool_create("p1", "revisions_to_keep=3", "reflink=never")
        props = self.c.props(self.c.get_pool("p1"), POOL)
        self.assertEqual(props["RevisionsToKeep"], 3)
        self.assertIs(props["CopyOnWrite"], False)

    def test_pools_lists_pools(self):
        self.pool_create("p1")
        self.pool_create("p2")
        out = self.ctl("pools").stdout
        self.assertIn("p1", out)
        self.assertIn("p2", out)

    def test_pools_json_lists_pools(self):
        self.pool_create("p1")
        self.assertIn("p1", list(json_scalars(self.ctl_json("pools"))))

    def test_pool_create_failure_exits_1_and_names_the_problem(self):
        missing = os.path.join(self.env.dirs["pools"], "absent")
        result = self.ctl("pool-create", "p1", "dir", "path=" + missing, expect=EXIT_FAILURE)
        self.assert_names_problem(result, missing, "not found", "no such", "does not exist")

    def test_pool_create_duplicate_exits_1(self):
        self.pool_create("p1")
        result = self.ctl("pool-create", "p1", "dir", "path=" + self.pool_dir("other"),
                          expect=EXIT_FAILURE)
        self.assert_names_problem(result, "p1", "exists")

    def test_pool_remove_forgets_the_pool(self):
        self.pool_create("p1")
        self.ctl("pool-remove", "p1")
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [])

    def test_pool_remove_of_unknown_pool_exits_1(self):
        result = self.ctl("pool-remove", "nope", expect=EXIT_FAILURE)
        self.assert_names_problem(result, "nope", "not found")


class VolumeCommandsTest(CisternctlTestCase):

    def setUp(self):
        super().setUp()
        self.pool_create("p1")

    def test_create_takes_iec_sizes(self):
        sizes = {"10M": 10 * MiB, "512K": 512 * KiB, "1G": GiB, "1048576": MiB}
        for i, (text, size) in enumerate(sizes.items()):
            with self.subTest(size=text):
                self.ctl("create", "p1/v%d" % i, text)
                self.assertEqual(self.volume_props("p1", "v%d" % i)["Size"], size)

    def test_create_options(self):
        self.ctl("create", "p1/base", "10M", "--format=raw")
        self.ctl("create", "p1/volatile", "10M", "--no-save-on-stop")
        self.ctl("create", "p1/snap", "10M", "--snap-on-start", "--source=p1/base",
                 "--no-save-on-stop")
        self.assertEqual(self.volume_props("p1", "base")["Format"], "raw")
        self.assertIs(self.volume_props("p1", "volatile")["SaveOnStop"], False)
        snap = self.volume_props("p1", "snap")
        self.assertEqual((snap["SnapOnStart"], snap["Source"]),
                         (True, self.c.get_volume("p1", "base")))

    def test_create_duplicate_exits_1(self):
        self.ctl("create", "p1/v1", "10M")
        result = self.ctl("create", "p1/v1", "10M", expect=EXIT_FAILURE)
        self.assert_names_problem(result, "v1", "exists")

    def test_create_invalid_name_exits_1_or_2(self):
        result = self.ctl("create", "p1/.hidden", "10M", expect=(EXIT_FAILURE, EXIT_USAGE))
        self.assert_names_problem(result, ".hidden", "name")

    def test_list_shows_volumes(self):
        self.ctl("create", "p1/v1", "10M")
        self.assertIn("v1", self.ctl("list", "p1").stdout)
        self.assertIn("v1", self.ctl("list").stdout)

    def test_list_json_shows_volumes_and_sizes(self):
        self.ctl("create", "p1/v1", "10M")
        values = list(json_scalars(self.ctl_json("list", "p1")))
        self.assertIn("v1", values)
        self.assertIn(10 * MiB, values)

    def test_list_of_unknown_pool_exits_1(self):
        self.assert_names_problem(self.ctl("list", "nope", expect=EXIT_FAILURE),
                                  "nope", "not found")

    def test_remove_deletes_the_volume(self):
        self.ctl("create", "p1/v1", "10M")
        self.ctl("remove", "p1/v1")
        self.assertEqual(self.c.prop(self.c.get_pool("p1"), POOL, "Volumes"), [])

    def test_remove_of_unknown_volume_exits_1_and_names_it(self):
        result = self.ctl("remove", "p1/nope", expect=EXIT_FAILURE)
        self.assert_names_problem(result, "nope", "not found")

    def test_resize_grows(self):
        self.ctl("create", "p1/v1", "10M")
        self.ctl("resize", "p1/v1", "20M")
        self.assertEqual(self.volume_props("p1", "v1")["Size"], 20 * MiB)

    def test_resize_refuses_to_shrink_without_allow_shrink(self):
        self.ctl("create", "p1/v1", "10M")
        result = self.ctl("resize", "p1/v1", "5M", expect=EXIT_FAILURE)
        self.assert_names_problem(result, "shrink")
        self.assertEqual(self.volume_props("p1", "v1")["Size"], 10 * MiB)

    def test_resize_shrinks_with_allow_shrink(self):
        self.ctl("create", "p1/v1", "10M")
        self.ctl("resize", "p1/v1", "5M", "--allow-shrink")
        self.assertEqual(self.volume_props("p1", "v1")["Size"], 5 * MiB)

    def test_info_shows_format_and_size(self):
        self.ctl("create", "p1/v1", "10M")
        out = self.ctl("info", "p1/v1").stdout
        self.assertIn("raw", out)
        self.assertTrue(str(10 * MiB) in out or "10M" in out or "10.0M" in out, out)

    def test_info_json_has_the_info_values(self):
        self.ctl("create", "p1/v1", "10M")
        values = list(json_scalars(self.ctl_json("info", "p1/v1")))
        self.assertIn("raw", values)
        self.assertIn(10 * MiB, values)


class BadInputTest(CisternctlTestCase):

    def setUp(self):
        super().setUp()
        self.pool_create("p1")
        self.ctl("create", "p1/v1", "1M")

    def test_invalid_pool_names_fail_and_change_nothing(self):
        path = self.pool_dir("spare")
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_ctl_fails("pool-create", name, "dir", "path=" + path,
                                      expect=(EXIT_FAILURE, EXIT_USAGE))

    def test_invalid_volume_names_fail_and_change_nothing(self):
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_ctl_fails("create", "p1/" + name, "1M",
                                      expect=(EXIT_FAILURE, EXIT_USAGE))

    def test_bad_sizes_fail_and_change_nothing(self):
        for size in ("0", "511", "1000", str(harness.HUGE_SIZE)):
            with self.subTest(size=size):
                self.assert_ctl_fails("create", "p1/v2", size, expect=(EXIT_FAILURE, EXIT_USAGE))
                self.assert_ctl_fails("resize", "p1/v1", size, "--allow-shrink",
                                      expect=(EXIT_FAILURE, EXIT_USAGE))

    def test_commands_on_missing_objects_fail_and_change_nothing(self):
        for args in (["pool-remove", "nope"], ["create", "nope/v1", "1M"],
                     ["remove", "p1/nope"], ["resize", "p1/nope", "2M"], ["info", "p1/nope"],
                     ["remove", "nope/v1"]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args)


class UnprivilegedTest(CisternctlTestCase):

    MUTATING = [["pool-create", "p2", "dir", "path={spare}"], ["pool-remove", "p1"],
                ["create", "p1/new", "1M"], ["remove", "p1/{vol}"], ["resize", "p1/{vol}", "2M"],
                ["info", "p1/{vol}"]]

    def populate(self):
        self.pool_create("p1")
        self.spare = self.pool_dir("spare")
        self.c.create_volume(self.c.get_pool("p1"), "a", MiB, {"owner": USER_A.uid})
        self.c.create_volume(self.c.get_pool("p1"), "b", MiB, {"owner": USER_B.uid})

    def commands(self, volume):
        return [[arg.format(spare=self.spare, vol=volume) for arg in args]
                for args in self.MUTATING]

    def test_every_mutating_command_is_denied_by_default_and_changes_nothing(self):
        self.populate()
        for volume in ("a", "b"):
            for args in self.commands(volume):
                for ask_password in (False, True):
                    with self.subTest(args=args, ask_password=ask_password):
                        result = self.assert_ctl_fails(*args, user=USER_A,
                                                       ask_password=ask_password)
                        self.assert_names_problem(result, "authoriz")

    def test_own_rules_let_a_user_manage_their_volume_but_not_anothers(self):
        self.populate()
        self.env.set_polkit_rules(rule_allowing(["org.cistern.volume.modify-own",
                                                 "org.cistern.volume.read-own"], USER_A))
        for args in (["resize", "p1/b", "2M"], ["info", "p1/b"], ["remove", "p1/b"]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args, user=USER_A)
        self.ctl("resize", "p1/a", "2M", user=USER_A)
        self.assertEqual(self.volume_props("p1", "a")["Size"], 2 * MiB)
        self.assertIn("raw", self.ctl("info", "p1/a", user=USER_A).stdout)
        self.ctl("remove", "p1/a", user=USER_A)
        self.assertEqual(self.c.prop(self.c.get_pool("p1"), POOL, "Volumes"),
                         [self.c.get_volume("p1", "b")])

    def test_denied_call_exits_1_and_says_not_authorized(self):
        self.pool_create("p1")
        result = self.ctl("create", "p1/v1", "10M", user=USER_A, expect=EXIT_FAILURE)
        self.assert_names_problem(result, "authoriz", "permission", "denied")
        self.assertEqual(self.c.prop(self.c.get_pool("p1"), POOL, "Volumes"), [])

    def test_reading_works_without_authorization(self):
        self.pool_create("p1")
        self.assertIn("p1", self.ctl("pools", user=USER_A).stdout)


if __name__ == "__main__":
    harness.main()
