#!/usr/bin/python3
"""cisternctl against the real daemon (SPEC §7): commands, --json, exit codes, IEC sizes."""

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import termios
import threading
import time
import unittest

import dbus

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


def queued_bytes(fd):
    """Bytes written into a pipe and not read yet (FIONREAD works on either end)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def read_terminal(master, until=None, timeout=60):
    """What cisternctl draws on the pseudo-terminal whose master is given: up to the first
    occurrence of until, or everything until the last holder of the terminal closes it."""
    drawn = b""
    deadline = time.monotonic() + timeout
    while until is None or until not in drawn:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([master], [], [], left)[0]:
            raise AssertionError("nothing more on the terminal within %d s: %r" % (timeout, drawn))
        try:
            chunk = os.read(master, 65536)
        except OSError:     # EIO: the last holder of the terminal closed it
            break
        if not chunk:
            break
        drawn += chunk
    return drawn


class CisternctlTestCase(harness.CisternTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.access(harness.CISTERNCTL, os.X_OK):
            raise unittest.SkipTest("cisternctl is not built at %s" % harness.CISTERNCTL)

    def ctl(self, *args, expect=(EXIT_OK,), user=None, stdin=subprocess.DEVNULL):
        """Run cisternctl; its exit code must be in expect."""
        expect = (expect,) if isinstance(expect, int) else expect
        result = harness.run_as(user, [harness.CISTERNCTL, "--no-ask-password"] + list(args),
                                stdin=stdin)
        self.assertIn(result.returncode, expect,
                         "cisternctl %s exited %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), result.returncode, result.stdout, result.stderr))
        return result

    def assert_ctl_fails(self, *args, expect=(EXIT_FAILURE,), user=None, ask_password=False,
                         stdin=subprocess.DEVNULL):
        """cisternctl fails with an exit code in expect and changes nothing."""
        before = self.snapshot_state()
        if ask_password:   # without --no-ask-password (stdin is no terminal: no agent)
            expect = (expect,) if isinstance(expect, int) else expect
            result = harness.run_as(user, [harness.CISTERNCTL] + list(args),
                                    stdin=subprocess.DEVNULL)
            self.assertIn(result.returncode, expect, "cisternctl %s exited %d: %s"
                          % (" ".join(args), result.returncode, result.stderr))
        else:
            result = self.ctl(*args, expect=expect, user=user, stdin=stdin)
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

    def start_ctl(self, *args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, user=None):
        """cisternctl started in the background (as root, or user); killed, if need be, at
        cleanup."""
        proc = subprocess.Popen([harness.CISTERNCTL, "--no-ask-password"] + list(args),
                                stdin=stdin, stdout=subprocess.PIPE,
                                stderr=stderr, text=True,
                                preexec_fn=(lambda: harness.become(user)) if user else None)

        def reap():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.addCleanup(reap)
        return proc

    def finish(self, proc, timeout=120):
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def wait_for_job(self, proc, timeout=60):
        """The path of the first job listed by Manager.Jobs while proc runs."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.c.prop(ROOT_PATH, MANAGER, "Jobs")
            if jobs:
                return jobs[0]
            if proc.poll() is not None:
                self.fail("cisternctl ended (%d) before its job was seen: %s"
                          % (proc.returncode, proc.communicate()))
            if time.monotonic() > deadline:
                self.fail("no job appeared within %d s" % timeout)
            time.sleep(0.005)

    def wait_no_jobs(self, timeout=30):
        harness.poll_until(lambda: not self.c.prop(ROOT_PATH, MANAGER, "Jobs"), timeout,
                           "the job to vanish")


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


# ---------------------------------------------------------------------------
# Life cycle, revisions, copies and jobs (SPEC §4.3, §4.4, §7; cisternctl(1))
# ---------------------------------------------------------------------------

class LifecycleTestCase(CisternctlTestCase):
    """A dir pool p1 with a root-owned 1 MiB volume p1/v1 that keeps up to 8 revisions.

    Set-up goes over D-Bus, so that only the command under test runs through cisternctl."""

    def setUp(self):
        super().setUp()
        self.p1 = self.pool_create("p1")
        self.p1_obj = self.c.get_pool("p1")
        self.v1 = self.c.create_volume(self.p1_obj, "v1", MiB, {"revisions_to_keep": 8})

    def quiet(self, *args, user=None, stdin=subprocess.DEVNULL):
        """Runs a command that must succeed and write nothing to stderr: stderr is a pipe
        here, no terminal, so no progress bar may be drawn on it."""
        result = self.ctl(*args, user=user, stdin=stdin)
        self.assertEqual(result.stderr, "", "cisternctl %s wrote to stderr, which is no terminal"
                         % " ".join(args))
        return result

    def file(self, volume, *names):
        return harness.dir_volume_file(self.p1, volume, *(names or ("image",)))

    def revisions(self, volume="v1"):
        return [tuple(r) for r in self.c.prop(self.c.get_volume("p1", volume), VOLUME,
                                              "Revisions")]

    def revision_ids(self, volume="v1"):
        return [rev_id for rev_id, _ in self.revisions(volume)]

    def state(self, volume="v1"):
        return self.c.prop(self.c.get_volume("p1", volume), VOLUME, "State")

    def commit_pattern(self, volume, seed):
        """Start, write data unique to seed into the working copy, stop: the data becomes the
        committed image (and the image before it a revision).  Returns the image's sha256."""
        obj = self.c.get_volume("p1", volume)
        self.c.start_volume(obj)
        harness.write_pattern(self.file(volume, "work"), seed)
        self.c.stop_volume(obj)
        return harness.file_sha256(self.file(volume))

    def assert_consistent(self):
        self.assertEqual(harness.dir_pool_inconsistencies(self.c, self.p1, self.p1_obj), [])


class LifecycleCommandsTest(LifecycleTestCase):

    def test_start_and_stop_follow_the_volume_state(self):
        self.assertEqual(self.quiet("start", "p1/v1").stdout, "")
        self.assertEqual(self.state(), "started")
        harness.write_pattern(self.file("v1", "work"), 5)
        written = harness.file_sha256(self.file("v1", "work"))
        self.assertEqual(self.quiet("stop", "p1/v1").stdout, "")
        self.assertEqual(self.state(), "stopped")
        self.assertEqual(harness.file_sha256(self.file("v1")), written)
        self.assertEqual(len(self.revision_ids()), 1, "the replaced image is no revision")
        self.quiet("stop", "p1/v1")     # stopping a stopped volume does nothing
        self.assertEqual((self.state(), len(self.revision_ids())), ("stopped", 1))
        self.assert_consistent()

    def test_commands_without_output_print_nothing_with_json(self):
        rev, doomed = self.c.create_snapshot(self.v1), self.c.create_snapshot(self.v1)
        for args in (["start", "p1/v1"], ["stop", "p1/v1"], ["revert", "p1/v1", rev],
                     ["revisions", "p1/v1", "--remove=" + doomed]):
            with self.subTest(args=args):
                self.assertEqual(self.quiet("--json", *args).stdout, "")
        self.assertNotIn(doomed, self.revision_ids())

    def test_snapshot_prints_the_new_revision_id(self):
        first = self.quiet("snapshot", "p1/v1").stdout
        self.assertEqual([first], [rev + "\n" for rev in self.revision_ids()])
        second = self.quiet("snapshot", "p1/v1").stdout
        self.assertTrue(second.endswith("\n") and second.count("\n") == 1, repr(second))
        self.assertEqual(self.revision_ids(), [first.strip(), second.strip()])

    def test_snapshot_json_gives_the_revision(self):
        doc = self.ctl_json("snapshot", "p1/v1")
        self.assertIsInstance(doc, dict)
        self.assertIsInstance(doc.get("revision"), str, doc)
        self.assertEqual(self.revision_ids(), [doc["revision"]])

    def test_snapshot_of_a_started_volume_keeps_its_image(self):
        image = self.commit_pattern("v1", 2)
        self.c.start_volume(self.v1)
        harness.write_pattern(self.file("v1", "work"), 3)
        rev = self.quiet("snapshot", "p1/v1").stdout.strip()
        self.assertIn(rev, self.revision_ids())
        self.assertEqual(harness.file_sha256(self.file("v1", "revisions", rev)), image)
        self.assertEqual(self.state(), "started")

    def test_revisions_lists_oldest_first(self):
        made = [self.c.create_snapshot(self.v1) for _ in range(3)]
        expected = self.revisions()
        self.assertEqual([rev_id for rev_id, _ in expected], made)

        doc = self.ctl_json("revisions", "p1/v1")
        self.assertIsInstance(doc, list)
        self.assertEqual([(entry.get("id"), entry.get("created")) for entry in doc], expected)
        for entry in doc:
            self.assertIsInstance(entry["id"], str)
            self.assertIsInstance(entry["created"], int)
            self.assert_near_now_usec(entry["created"])

        lines = [line for line in self.quiet("revisions", "p1/v1").stdout.splitlines()
                 if line.strip()]
        self.assertEqual(lines[0].split()[0], "ID", lines)
        self.assertEqual([line.split()[0] for line in lines[1:]], made)

    def test_revisions_of_a_volume_without_any(self):
        self.assertEqual(self.ctl_json("revisions", "p1/v1"), [])
        self.quiet("revisions", "p1/v1")

    def test_revisions_remove_deletes_that_revision_only(self):
        a, b, c = [self.c.create_snapshot(self.v1) for _ in range(3)]
        self.assertEqual(self.quiet("revisions", "p1/v1", "--remove=" + b).stdout, "")
        self.assertEqual(self.revision_ids(), [a, c])
        self.assertFalse(os.path.exists(self.file("v1", "revisions", b)))
        self.assert_consistent()

    def test_revert_makes_the_revision_the_image_and_keeps_the_replaced_one(self):
        old = self.commit_pattern("v1", 1)
        rev = self.c.create_snapshot(self.v1)
        new = self.commit_pattern("v1", 2)
        self.assertNotEqual(old, new)
        before = self.revision_ids()
        self.assertEqual(self.quiet("revert", "p1/v1", rev).stdout, "")
        self.assertEqual(harness.file_sha256(self.file("v1")), old)
        added = [r for r in self.revision_ids() if r not in before]
        self.assertEqual(len(added), 1, "the replaced image was not kept as a revision")
        self.assertEqual(harness.file_sha256(self.file("v1", "revisions", added[0])), new)
        self.assertEqual(self.state(), "stopped")
        self.assert_consistent()

    def test_revert_of_a_started_volume_fails_and_changes_nothing(self):
        rev = self.c.create_snapshot(self.v1)
        self.c.start_volume(self.v1)
        result = self.assert_ctl_fails("revert", "p1/v1", rev)
        self.assert_names_problem(result, "started", "stop", "state")

    def test_clone_json_gives_the_new_volume(self):
        content = self.commit_pattern("v1", 4)
        doc = self.ctl_json("clone", "p1/v1", "p1/c1")
        self.assertIsInstance(doc, dict)
        self.assertEqual(doc.get("object"), self.c.get_volume("p1", "c1"))
        self.assertEqual(harness.file_sha256(self.file("c1")), content)
        self.assertEqual(harness.file_sha256(self.file("v1")), content)
        self.assert_consistent()

    def test_clone_without_json_is_quiet(self):
        self.quiet("clone", "p1/v1", "p1/c1")
        self.assertEqual(self.volume_props("p1", "c1")["Size"], MiB)

    def test_clone_of_a_revision(self):
        old = self.commit_pattern("v1", 1)
        rev = self.c.create_snapshot(self.v1)
        new = self.commit_pattern("v1", 2)
        self.quiet("clone", "p1/v1", "p1/old", "--revision=" + rev)
        self.assertEqual(harness.file_sha256(self.file("old")), old)
        self.assertEqual(harness.file_sha256(self.file("v1")), new)
        self.assert_consistent()

    def test_clone_into_another_pool(self):
        content = self.commit_pattern("v1", 6)
        p2 = self.pool_create("p2")
        doc = self.ctl_json("clone", "p1/v1", "p2/c1")
        self.assertEqual(doc.get("object"), self.c.get_volume("p2", "c1"))
        self.assertEqual(harness.file_sha256(harness.dir_volume_file(p2, "c1", "image")), content)
        self.assert_fails(harness.Error.NotFound, self.c.get_volume, "p1", "c1")

    def test_clone_onto_an_existing_name_fails_and_changes_nothing(self):
        self.c.create_volume(self.p1_obj, "c1", 2 * MiB, {})
        result = self.assert_ctl_fails("clone", "p1/v1", "p1/c1")
        self.assert_names_problem(result, "exists")

    def test_jobs_without_jobs(self):
        self.assertEqual(self.ctl_json("jobs"), [])
        self.quiet("jobs")


class LifecycleBadInputTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.rev = self.c.create_snapshot(self.v1)

    def test_missing_or_extra_arguments_are_usage_errors(self):
        for args in (["start"], ["stop"], ["snapshot"], ["revisions"], ["revert"],
                     ["revert", "p1/v1"], ["clone"], ["clone", "p1/v1"], ["cancel"],
                     ["start", "p1/v1", "x"], ["stop", "p1/v1", "x"],
                     ["snapshot", "p1/v1", "x"], ["revisions", "p1/v1", "x"],
                     ["revert", "p1/v1", self.rev, "x"], ["clone", "p1/v1", "p1/c1", "x"],
                     ["jobs", "x"], ["cancel", "1", "2"]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args, expect=EXIT_USAGE)

    def test_malformed_volume_arguments_are_usage_errors(self):
        for args in (["start", "v1"], ["stop", "/v1"], ["snapshot", "p1/"],
                     ["revisions", "p1/v1/x"], ["revert", "v1", self.rev],
                     ["clone", "v1", "p1/c1"], ["clone", "p1/v1", "c1"]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args, expect=EXIT_USAGE)

    def test_options_of_other_commands_are_usage_errors(self):
        for args in (["start", "p1/v1", "--revision=" + self.rev],
                     ["snapshot", "p1/v1", "--allow-shrink"],
                     ["revisions", "p1/v1", "--revision=" + self.rev],
                     ["revert", "p1/v1", self.rev, "--remove=" + self.rev],
                     ["clone", "p1/v1", "p1/c1", "--remove=" + self.rev],
                     ["jobs", "--revision=" + self.rev]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args, expect=EXIT_USAGE)

    def test_empty_revisions_and_jobs_are_usage_errors(self):
        for args in (["revert", "p1/v1", ""], ["clone", "p1/v1", "p1/c1", "--revision="],
                     ["revisions", "p1/v1", "--remove="], ["cancel", ""],
                     ["cancel", "/not//a/path"]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args, expect=EXIT_USAGE)

    def test_unknown_revisions_fail_with_the_services_not_found(self):
        # Revision ids are the service's business: cisternctl passes any text on.
        for rev in ("abc", "999", "0", "-1", "1x", "x" * 300, "0" + self.rev, "+" + self.rev,
                    " " + self.rev, self.rev + " ", "9" * 25):
            self.assertNotIn(rev, self.revision_ids())
            # "--": a revision that looks like an option is still a revision.
            for args in (["revert", "p1/v1", "--", rev],
                         ["clone", "p1/v1", "p1/c1", "--revision=" + rev],
                         ["revisions", "p1/v1", "--remove=" + rev]):
                with self.subTest(args=args):
                    result = self.assert_ctl_fails(*args)
                    self.assertIn(rev, result.stderr)
                    self.assert_names_problem(result, "no revision", "not found")

    def test_unknown_volumes_and_pools_fail_and_change_nothing(self):
        for args in (["start", "p1/nope"], ["stop", "p1/nope"], ["snapshot", "p1/nope"],
                     ["revisions", "p1/nope"], ["revisions", "p1/nope", "--remove=" + self.rev],
                     ["revert", "p1/nope", self.rev], ["clone", "p1/nope", "p1/c1"],
                     ["start", "nope/v1"], ["clone", "p1/v1", "nope/c1"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args)
                self.assert_names_problem(result, "nope")

    def test_unknown_jobs_fail(self):
        for job in ("9999", "abc", "/org/cistern/Cistern1/job/9999"):
            with self.subTest(job=job):
                self.assert_ctl_fails("cancel", job)


class LifecycleAuthorizationTest(LifecycleTestCase):
    """p1/v1 belongs to root, p1/a to USER_A, p1/b to USER_B; each has one revision."""

    def setUp(self):
        super().setUp()
        self.revs = {"v1": self.c.create_snapshot(self.v1)}
        for name, user in (("a", USER_A), ("b", USER_B)):
            obj = self.c.create_volume(self.p1_obj, name, MiB,
                                       {"owner": user.uid, "revisions_to_keep": 8})
            self.revs[name] = self.c.create_snapshot(obj)

    def commands(self, volume):
        vol, rev = "p1/" + volume, self.revs[volume]
        return [["start", vol], ["stop", vol], ["snapshot", vol],
                ["revisions", vol, "--remove=" + rev], ["revert", vol, rev],
                ["clone", vol, "p1/new"], ["clone", vol, "p1/new", "--revision=" + rev]]

    def assert_denied(self, volume, user=USER_A):
        for args in self.commands(volume):
            with self.subTest(volume=volume, args=args):
                result = self.assert_ctl_fails(*args, user=user)
                self.assert_names_problem(result, "authoriz")

    def test_every_command_is_denied_by_default_and_changes_nothing(self):
        for volume in ("v1", "a", "b"):
            self.assert_denied(volume)

    def test_stop_of_a_started_volume_is_denied(self):
        for volume in ("v1", "a"):
            self.c.start_volume(self.c.get_volume("p1", volume))
            with self.subTest(volume=volume):
                result = self.assert_ctl_fails("stop", "p1/" + volume, user=USER_A)
                self.assert_names_problem(result, "authoriz")
                self.assertEqual(self.state(volume), "started")

    def test_listing_needs_no_authorization(self):
        listed = self.ctl("--json", "revisions", "p1/v1", user=USER_A).stdout
        self.assertEqual([entry["id"] for entry in json.loads(listed)], [self.revs["v1"]])
        self.assertEqual(json.loads(self.ctl("--json", "jobs", user=USER_A).stdout), [])

    def test_modify_own_rule_lets_a_user_work_on_their_volume_only(self):
        self.env.set_polkit_rules(rule_allowing(
            ["org.cistern.volume.modify-own", "org.cistern.volume.read-own",
             "org.cistern.volume.create"], USER_A))
        for volume in ("v1", "b"):
            self.assert_denied(volume)

        self.quiet("start", "p1/a", user=USER_A)
        self.assertEqual(self.state("a"), "started")
        self.quiet("stop", "p1/a", user=USER_A)
        self.assertEqual(self.state("a"), "stopped")
        snap = self.quiet("snapshot", "p1/a", user=USER_A).stdout.strip()
        self.assertIn(snap, self.revision_ids("a"))
        self.quiet("revisions", "p1/a", "--remove=" + snap, user=USER_A)
        self.assertNotIn(snap, self.revision_ids("a"))
        before = self.revision_ids("a")
        self.quiet("revert", "p1/a", self.revs["a"], user=USER_A)
        self.assertEqual(len([r for r in self.revision_ids("a") if r not in before]), 1,
                         "the replaced image was not kept as a revision")
        self.quiet("clone", "p1/a", "p1/a2", user=USER_A)
        self.quiet("clone", "p1/a", "p1/a3", "--revision=" + self.revision_ids("a")[0],
                   user=USER_A)
        for name in ("a2", "a3"):
            self.assertEqual(self.volume_props("p1", name)["Owner"], USER_A.uid)
        self.assert_consistent()


# A volume whose copy on ext4 (no reflink) takes a moment: long enough to list and cancel
# its job while it runs.
BIG, BIG_DATA = 2 * GiB, 512 * MiB




class LongCloneTest(CisternctlTestCase):
    """A 2 GiB volume holding 512 MiB of data in a pool on an ext4 scratch filesystem.

    While a test looks at a running clone, it freezes the filesystem (fsfreeze): the copy
    then waits in the kernel and the job stays, however fast the machine, until it thaws."""

    def setUp(self):
        super().setUp()
        if shutil.which("fsfreeze") is None:
            self.skipTest("fsfreeze is not installed")
        self.fs = self.scratch_fs("ext4", size=BIG + 512 * MiB)
        self.ctl("pool-create", "p1", "dir", "path=" + self.fs.path)
        self.pool = self.c.get_pool("p1")
        self.assertIs(self.c.prop(self.pool, POOL, "CopyOnWrite"), False)
        self.v1 = self.c.create_volume(self.pool, "v1", BIG, {})
        harness.write_bulk(harness.dir_volume_file(self.fs.path, "v1", "image"), BIG_DATA, seed=1)
        self.c.refresh_pool(self.pool)   # the data came behind the daemon's back

    def freeze(self):
        harness.run_checked(["fsfreeze", "--freeze", self.fs.path])
        self.addCleanup(self.thaw)

    def thaw(self):
        subprocess.run(["fsfreeze", "--unfreeze", self.fs.path], capture_output=True)

    def test_jobs_lists_the_clone_and_cancel_from_another_process_undoes_it(self):
        before = self.snapshot_state(extra_dirs=[self.fs.path])
        clone = self.start_ctl("clone", "p1/v1", "p1/c1")
        job = self.wait_for_job(clone)
        self.freeze()

        jobs = self.ctl_json("jobs")
        self.assertIsInstance(jobs, list)
        self.assertEqual(len(jobs), 1, jobs)
        entry = jobs[0]
        self.assertEqual(entry.get("path"), job)
        self.assertIsInstance(entry.get("id"), str)
        self.assertTrue(job.endswith("/" + entry["id"]), (job, entry["id"]))
        self.assertEqual(entry.get("operation"), "Clone")
        self.assertIsInstance(entry.get("objects"), list)
        self.assertIn(self.v1, entry["objects"])
        self.assertGreater(entry.get("bytes_total", 0), 0)
        self.assertLessEqual(entry.get("bytes_done"), entry["bytes_total"])
        self.assertEqual(entry.get("started_by"), 0)
        self.assertIs(entry.get("cancelable"), True)
        self.assertTrue(0.0 <= entry.get("progress") <= 1.0, entry)
        self.assert_near_now_usec(entry.get("start_time"))

        text = self.ctl("jobs").stdout
        row = [line for line in text.splitlines() if line.split()[:1] == [entry["id"]]]
        self.assertEqual(len(row), 1, text)
        self.assertIn("Clone", row[0])
        self.assertIn("p1/v1", row[0])

        # Another user may see the job, but not cancel it.
        self.assertEqual([j["id"] for j in
                          json.loads(self.ctl("--json", "jobs", user=USER_A).stdout)],
                         [entry["id"]])
        denied = self.ctl("cancel", entry["id"], user=USER_A, expect=EXIT_FAILURE)
        self.assert_names_problem(denied, "authoriz")
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Jobs"), [job])

        self.assertEqual(self.ctl("cancel", entry["id"]).stdout, "")
        self.thaw()
        code, out, err = self.finish(clone)
        self.assertEqual(code, EXIT_FAILURE, "clone: stdout %r stderr %r" % (out, err))
        self.assertIn("cancel", err.lower())
        self.assertNotIn("\r", err)
        self.assertEqual(out, "")

        self.wait_no_jobs()
        self.assertEqual(self.ctl_json("jobs"), [])
        self.assert_fails(harness.Error.NotFound, self.c.get_volume, "p1", "c1")
        self.assertFalse(os.path.lexists(harness.dir_volume_file(self.fs.path, "c1")))
        self.assertEqual(harness.staging_entries(self.fs.path), [])
        self.assertEqual(self.snapshot_state(extra_dirs=[self.fs.path]), before)

    def test_cancel_takes_the_job_path(self):
        clone = self.start_ctl("--json", "clone", "p1/v1", "p1/c1")
        job = self.wait_for_job(clone)
        self.freeze()
        self.ctl("cancel", job)
        self.thaw()
        code, out, err = self.finish(clone)
        self.assertEqual(code, EXIT_FAILURE, "clone: stdout %r stderr %r" % (out, err))
        self.assertEqual(out, "")
        self.assertIn("cancel", err.lower())
        self.wait_no_jobs()
        self.assert_fails(harness.Error.NotFound, self.c.get_volume, "p1", "c1")

    def test_a_user_cancels_their_own_job(self):
        self.env.set_polkit_rules(rule_allowing(
            ["org.cistern.volume.modify-own", "org.cistern.volume.read-own",
             "org.cistern.volume.create"], USER_A))
        self.c.create_volume(self.pool, "mine", BIG, {"owner": USER_A.uid})
        harness.write_bulk(harness.dir_volume_file(self.fs.path, "mine", "image"), BIG_DATA, seed=2)
        self.c.refresh_pool(self.pool)
        clone = self.start_ctl("clone", "p1/mine", "p1/c1", user=USER_A)
        self.wait_for_job(clone)
        self.freeze()
        jobs = json.loads(self.ctl("--json", "jobs", user=USER_A).stdout)
        self.assertEqual([(j["operation"], j["started_by"]) for j in jobs],
                         [("Clone", USER_A.uid)])
        self.assertIn(self.c.get_volume("p1", "mine"), jobs[0]["objects"])
        self.ctl("cancel", jobs[0]["id"], user=USER_A)
        self.thaw()
        code, out, err = self.finish(clone)
        self.assertEqual(code, EXIT_FAILURE, "clone: stdout %r stderr %r" % (out, err))
        self.assertIn("cancel", err.lower())
        self.wait_no_jobs()
        self.assert_fails(harness.Error.NotFound, self.c.get_volume, "p1", "c1")
        self.assertEqual(harness.staging_entries(self.fs.path), [])

    def test_long_clone_draws_no_progress_when_stderr_is_no_terminal(self):
        clone = self.start_ctl("clone", "p1/v1", "p1/c1")
        self.wait_for_job(clone)
        code, out, err = self.finish(clone)
        self.assertEqual((code, err), (EXIT_OK, ""), "clone: stdout %r" % out)
        self.assertEqual(self.c.prop(self.c.get_volume("p1", "c1"), VOLUME, "Size"), BIG)
        segments = [harness.data_segments(harness.dir_volume_file(self.fs.path, name, "image"))
                    for name in ("c1", "v1")]
        self.assertEqual(segments[0], segments[1])

    def clone_on_a_terminal(self, *args):
        """Runs a long clone with stderr on a pseudo-terminal; returns what it drew there."""
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        try:
            clone = self.start_ctl(*args, stderr=slave)
        finally:
            os.close(slave)
        self.wait_for_job(clone)
        drawn = read_terminal(master, timeout=120)
        code, out, _ = self.finish(clone)
        self.assertEqual(code, EXIT_OK, "clone: stdout %r, terminal %r" % (out, drawn))
        return out, drawn

    def test_long_clone_draws_progress_on_a_terminal(self):
        # The counterpart of the test above: on a terminal the bar exists, and goes at the end.
        _, drawn = self.clone_on_a_terminal("clone", "p1/v1", "p1/c1")
        self.assertIn(b"%", drawn, "no progress bar on the terminal: %r" % drawn)
        self.assertTrue(drawn.endswith(b"\r\x1b[K"), "the bar stayed: %r" % drawn[-200:])

    def test_long_clone_with_json_draws_no_progress_even_on_a_terminal(self):
        out, drawn = self.clone_on_a_terminal("--json", "clone", "p1/v1", "p1/c1")
        self.assertEqual(drawn, b"")
        self.assertEqual(json.loads(out), {"object": self.c.get_volume("p1", "c1")})


# ---------------------------------------------------------------------------
# import (SPEC §4.3 Import, §7; cisternctl(1))
# ---------------------------------------------------------------------------

IMPORT_SIZE = 2 * MiB


class ImportTestCase(LifecycleTestCase):
    """p1/v1 as in LifecycleTestCase, and self.src: a 2 MiB file, data between holes, whose
    bytes are self.data."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="import-", dir=self.env.tmp)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.src = self.source("in.img", IMPORT_SIZE, seed=7)
        with open(self.src, "rb") as f:
            self.data = f.read()

    def source(self, name, size, seed):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.truncate(size)
        harness.write_pattern(path, seed)
        return path

    def fed(self, data, run, *args, **kwargs):
        """run(*args, stdin=R) where R is the read end of a pipe that a thread fills with data,
        then closes."""
        r, w = os.pipe()
        writer = os.fdopen(w, "wb")

        def feed():
            with contextlib.suppress(OSError):     # EPIPE: cisternctl read nothing
                with writer:
                    writer.write(data)
        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        try:
            return run(*args, stdin=r, **kwargs)
        finally:
            os.close(r)
            thread.join(30)

    def assert_image(self, data):
        """The committed image of p1/v1 holds data, and the volume's Size follows."""
        with open(self.file("v1"), "rb") as f:
            self.assertTrue(f.read() == data, "the image is not what was imported")
        self.assertEqual(self.c.prop(self.v1, VOLUME, "Size"), len(data))


class ImportCommandTest(ImportTestCase):

    def test_import_of_a_file_replaces_the_image_and_keeps_the_old_one(self):
        old = harness.file_sha256(self.file("v1"))
        self.assertEqual(self.quiet("import", "p1/v1", self.src).stdout, "")
        self.assert_image(self.data)
        [rev] = self.revision_ids()
        self.assertEqual(harness.file_sha256(self.file("v1", "revisions", rev)), old)
        self.assert_consistent()

    def test_import_prints_nothing_with_json(self):
        self.assertEqual(self.quiet("--json", "import", "p1/v1", self.src).stdout, "")
        self.assert_image(self.data)

    def test_import_of_a_regular_file_on_standard_input_needs_no_size(self):
        with open(self.src, "rb") as f:
            self.quiet("import", "p1/v1", "-", stdin=f)
            # What reads standard input next finds it consumed, as after cat.
            self.assertEqual(os.lseek(f.fileno(), 0, os.SEEK_CUR), IMPORT_SIZE)
        self.assert_image(self.data)

    def test_standard_input_already_read_from_is_refused(self):
        with open(self.src, "rb") as f:
            os.lseek(f.fileno(), 512, os.SEEK_SET)
            result = self.assert_ctl_fails("import", "p1/v1", "-", stdin=f)
        self.assert_names_problem(result, "already read")

    def test_import_from_a_pipe_with_size(self):
        self.fed(self.data, self.quiet, "import", "p1/v1", "-", "--size=2M")
        self.assert_image(self.data)
        self.assert_consistent()

    def test_a_stream_without_size_is_a_usage_error(self):
        for stdin in ("pipe", subprocess.DEVNULL):
            with self.subTest(stdin=stdin):
                if stdin == "pipe":
                    result = self.fed(self.data, self.assert_ctl_fails, "import", "p1/v1", "-",
                                      expect=EXIT_USAGE)
                else:
                    result = self.assert_ctl_fails("import", "p1/v1", "-", expect=EXIT_USAGE,
                                                   stdin=stdin)
                self.assert_names_problem(result, "--size")

    def test_a_short_stream_fails_with_the_services_message(self):
        def over_the_bus(stdin):
            return self.assert_fails(harness.Error.InvalidArgument, self.c.call, self.v1, VOLUME,
                                     "Import", "ha{sv}", dbus.types.UnixFd(stdin),
                                     harness.variant_dict({"size": IMPORT_SIZE}))
        message = self.fed(self.data[:MiB], over_the_bus).get_dbus_message()
        result = self.fed(self.data[:MiB], self.assert_ctl_fails, "import", "p1/v1", "-",
                          "--size=2M")
        self.assertEqual(result.stderr, "cisternctl: Failed to import standard input into volume "
                         "p1/v1: %s\n" % message)
        self.assertEqual(harness.staging_entries(self.p1), [])

    def test_a_long_stream_fails_and_changes_nothing(self):
        result = self.fed(self.data, self.assert_ctl_fails, "import", "p1/v1", "-", "--size=1M")
        self.assertIn("p1/v1", result.stderr)
        self.assertEqual(harness.staging_entries(self.p1), [])

    def test_raw_data_named_qcow2_is_unsafe_and_raw_is_accepted(self):
        result = self.assert_ctl_fails("import", "p1/v1", self.src, "--format=qcow2")
        self.assert_names_problem(result, "unsafe")
        self.assertEqual(harness.staging_entries(self.p1), [])
        self.quiet("import", "p1/v1", self.src, "--format=raw")
        self.assert_image(self.data)

    def test_size_given_with_a_regular_file_must_be_its_size(self):
        self.assert_ctl_fails("import", "p1/v1", self.src, "--size=1M")
        self.quiet("import", "p1/v1", self.src, "--size=2M")
        self.assert_image(self.data)

    def test_round_trip_through_import_and_export_keeps_every_byte(self):
        out = os.path.join(self.dir, "out.img")
        for how in ("file", "pipe"):
            with self.subTest(how=how):
                data = self.data[::-1] if how == "pipe" else self.data
                if how == "pipe":
                    self.fed(data, self.quiet, "import", "p1/v1", "-", "--size=%d" % len(data))
                else:
                    self.quiet("import", "p1/v1", self.src)
                self.quiet("export", "p1/v1", out)
                with open(out, "rb") as f:
                    self.assertTrue(f.read() == data, "export gave other bytes than imported")


class ExportCommandTest(ImportTestCase):
    """export, to the files and streams import reads: what import leaves, export gives back."""

    def setUp(self):
        super().setUp()
        self.quiet("import", "p1/v1", self.src)

    def export_to(self, stdout, *args):
        return subprocess.run([harness.CISTERNCTL, "--no-ask-password", "export", "p1/v1", "-"]
                              + list(args), stdin=subprocess.DEVNULL, stdout=stdout,
                              stderr=subprocess.PIPE, timeout=harness.CALL_TIMEOUT)

    def test_export_to_standard_output(self):
        result = self.export_to(subprocess.PIPE)
        self.assertEqual((result.returncode, result.stderr), (EXIT_OK, b""))
        self.assertTrue(result.stdout == self.data, "a pipe got other bytes than imported")
        out = os.path.join(self.dir, "out.img")
        with open(out, "wb") as f:
            self.assertEqual(self.export_to(f).returncode, EXIT_OK)
            # What writes to standard output next goes after the image.
            self.assertEqual(os.lseek(f.fileno(), 0, os.SEEK_CUR), IMPORT_SIZE)
        self.assertEqual(harness.file_sha256(out), harness.file_sha256(self.src))

    def test_standard_output_opened_for_appending_is_refused(self):
        out = os.path.join(self.dir, "out.img")
        with open(out, "ab") as f:
            result = self.export_to(f)
        self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
        self.assertIn(b"appending", result.stderr)
        self.assertEqual(os.path.getsize(out), 0)

    def test_a_failed_export_removes_the_file_it_created_only(self):
        created, existing = (os.path.join(self.dir, name) for name in ("new.img", "old.img"))
        with open(existing, "wb") as f:
            f.write(b"old")
        for path in (created, existing):
            with self.subTest(path=path):
                self.assert_ctl_fails("export", "p1/v1", path, "--revision=nope")
        self.assertFalse(os.path.lexists(created))
        self.assertTrue(os.path.exists(existing))


class ImportBadInputTest(ImportTestCase):

    def test_usage_errors(self):
        for args in (["import"], ["import", "p1/v1"], ["import", "p1/v1", self.src, "x"],
                     ["import", "v1", self.src], ["import", "p1/v1", ""],
                     ["import", "p1/v1", self.src, "--size=1Q"],
                     ["import", "p1/v1", self.src, "--size="],
                     ["import", "p1/v1", self.src, "--revision=1"],
                     ["import", "p1/v1", self.src, "--no-sparse"],
                     ["export", "p1/v1", os.path.join(self.dir, "out.img"), "--size=1M"]):
            with self.subTest(args=args):
                self.assert_ctl_fails(*args, expect=EXIT_USAGE)
        self.assertFalse(os.path.lexists(os.path.join(self.dir, "out.img")))

    def test_files_that_cannot_be_read_fail_and_name_the_file(self):
        missing = os.path.join(self.dir, "missing.img")
        for path in (missing, self.dir):
            with self.subTest(path=path):
                result = self.assert_ctl_fails("import", "p1/v1", path)
                self.assertIn(path, result.stderr)

    def test_the_file_is_opened_with_the_callers_rights(self):
        os.chmod(self.src, 0o600)
        os.chmod(self.dir, 0o755)
        result = self.assert_ctl_fails("import", "p1/v1", self.src, user=USER_A)
        self.assert_names_problem(result, "permission denied")

    def test_unknown_and_started_volumes_fail_and_change_nothing(self):
        self.assert_names_problem(self.assert_ctl_fails("import", "p1/nope", self.src), "nope")
        self.c.start_volume(self.v1)
        self.assert_names_problem(self.assert_ctl_fails("import", "p1/v1", self.src), "p1/v1")


class ImportTerminalTest(ImportTestCase):
    """cisternctl import from a pipe that the test writes, with standard error on a terminal."""

    def start_import(self):
        """Returns (terminal master, process, writer of its standard input)."""
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        r, w = os.pipe()
        writer = os.fdopen(w, "wb", buffering=0)
        self.addCleanup(writer.close)
        try:
            proc = self.start_ctl("import", "p1/v1", "-", "--size=%d" % len(self.data),
                                  stdin=r, stderr=slave)
        finally:
            os.close(slave)
            os.close(r)
        # Less than a pipe holds, so that it never blocks; the rest makes the job wait.
        writer.write(self.data[:64 * KiB])
        self.wait_for_job(proc)
        # The bar appears once cisternctl follows the job.
        return master, proc, writer, read_terminal(master, until=b"\r")

    def test_import_draws_progress_on_a_terminal_and_clears_it(self):
        master, proc, writer, drawn = self.start_import()

        def feed():
            with contextlib.suppress(OSError), writer:
                writer.write(self.data[64 * KiB:])
        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        drawn += read_terminal(master)
        thread.join(30)
        self.assertEqual(proc.wait(timeout=60), EXIT_OK, "terminal: %r" % drawn)
        self.assertIn(b"[", drawn)
        self.assertTrue(drawn.endswith(b"\r\x1b[K"), "the bar stayed: %r" % drawn[-200:])
        self.assert_image(self.data)

    def test_ctrl_c_cancels_the_import_and_changes_nothing(self):
        before = self.snapshot_state()
        master, proc, writer, drawn = self.start_import()
        # The service has taken what there was and waits for a writer that has stalled.
        harness.poll_until(lambda: queued_bytes(writer.fileno()) == 0, 30,
                           "the service to read the pipe")
        proc.send_signal(signal.SIGINT)
        drawn += read_terminal(master, timeout=30)
        self.assertEqual(proc.wait(timeout=60), EXIT_FAILURE, "terminal: %r" % drawn)
        self.assertIn(b"Cancelling", drawn)
        self.assertIn(b"cancel", drawn.split(b"Cancelling", 1)[1].lower())
        writer.close()
        self.wait_no_jobs()
        self.assertEqual(self.snapshot_state(), before)
        self.assertEqual(harness.staging_entries(self.p1), [])



# ---------------------------------------------------------------------------
# Block devices: attach, detach (SPEC §4.3, §7; cisternctl(1))
# ---------------------------------------------------------------------------

DISK_SIZE, PART_START, PART_SIZE = 32 * MiB, MiB, 16 * MiB
PARTITION_KEYS = {"number": int, "device": str, "start": int, "size": int, "fstype": str}


def partitioned_image(path):
    """A disk image at path: a GPT whose partition 1 holds an ext4 filesystem."""
    with open(path, "wb") as f:
        f.truncate(DISK_SIZE)
    subprocess.run(["sfdisk", "--quiet", path], check=True, capture_output=True, text=True,
                   input="label: gpt\nstart=%d, size=%d\n" % (PART_START // 512, PART_SIZE // 512))
    part = path + ".part"
    with open(part, "wb") as f:
        f.truncate(PART_SIZE)
    try:
        harness.run_checked(["mkfs.ext4", "-q", "-F", part])
        with open(part, "rb") as src, open(path, "r+b") as dst:
            dst.seek(PART_START)
            dst.write(src.read())
    finally:
        os.unlink(part)


def whole_disk_image(path, size):
    """A disk image at path with no partition table: one ext4 filesystem on all of it."""
    with open(path, "wb") as f:
        f.truncate(size)
    harness.run_checked(["mkfs.ext4", "-q", "-F", path])


def mount_options(point):
    """The per-mount options of the last mount on point, from /proc/self/mountinfo (this
    namespace is the daemon's too), or None when nothing is mounted there."""
    options = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == point:
                options = set(fields[5].split(","))
    return options


def device_read_only(device):
    with open("/sys/block/%s/ro" % os.path.basename(device)) as f:
        return f.read().strip() == "1"


class MountUsageTest(CisternctlTestCase):
    """What fails before anything is attached or mounted: no udevd needed."""

    def setUp(self):
        super().setUp()
        self.pool_create("p1")
        self.c.create_volume(self.c.get_pool("p1"), "v1", MiB)

    def test_usage_errors(self):
        for args in (["mount"], ["unmount"], ["mount", "p1/v1", "1", "2"],
                     ["unmount", "p1/v1", "1", "2"], ["mount", "v1"], ["unmount", "p1/"],
                     ["mount", "p1/v1", "--no-partitions"], ["mount", "p1/v1", "--format=raw"],
                     ["mount", "p1/v1", "--read-only=yes"], ["unmount", "p1/v1", "--read-only"],
                     ["mount", "p1/v1", "-1"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args, expect=EXIT_USAGE)
                self.assertIn("Try", result.stderr)

    def test_bad_partitions_are_usage_errors(self):
        # Checked before the service is asked anything: p1/nope too is a usage error.
        for part in ("x", "", "1.5", "+1", " 1", "0x1", "4294967296", "99999999999999999999"):
            for verb in ("mount", "unmount"):
                for volume in ("p1/v1", "p1/nope"):
                    with self.subTest(verb=verb, part=part, volume=volume):
                        result = self.assert_ctl_fails(verb, volume, part, expect=EXIT_USAGE)
                        self.assert_names_problem(result, "partition")
                        self.assertIn("Usage: cisternctl %s POOL/VOL [PART]" % verb,
                                      result.stderr)

    def test_unknown_volumes_fail_and_change_nothing(self):
        for args in (["mount", "p1/nope"], ["mount", "nope/v1", "1"], ["unmount", "p1/nope"],
                     ["unmount", "nope/v1", "2"], ["mount", "p1/nope", "1", "--read-only"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args)
                self.assert_names_problem(result, "nope")

    def test_unmount_of_what_is_not_mounted_fails(self):
        for args in (["unmount", "p1/v1"], ["unmount", "p1/v1", "0"], ["unmount", "p1/v1", "3"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args)
                self.assert_names_problem(result, "not mounted")


class AttachUsageTest(CisternctlTestCase):
    """What fails before any device exists: no udevd needed."""

    def setUp(self):
        super().setUp()
        self.pool_create("p1")
        self.c.create_volume(self.c.get_pool("p1"), "v1", MiB)

    def test_usage_errors(self):
        for args in (["attach"], ["detach"], ["attach", "p1/v1", "x"], ["detach", "p1/v1", "x"],
                     ["attach", "v1"], ["attach", "p1/"], ["detach", "/v1"],
                     ["attach", "p1/v1", "--revision=1"], ["attach", "p1/v1", "--format=raw"],
                     ["attach", "p1/v1", "--no-partitions=no"],
                     ["detach", "p1/v1", "--read-only"], ["detach", "p1/v1", "--no-partitions"],
                     ["create", "p1/v2", "1M", "--no-partitions"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args, expect=EXIT_USAGE)
                self.assertIn("Try", result.stderr)

    def test_unknown_volumes_fail_and_change_nothing(self):
        for args in (["attach", "p1/nope"], ["attach", "nope/v1"], ["detach", "p1/nope"],
                     ["attach", "p1/nope", "--read-only", "--no-partitions"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args)
                self.assert_names_problem(result, "nope")

    def test_detach_of_a_volume_that_is_not_attached_fails(self):
        result = self.assert_ctl_fails("detach", "p1/v1")
        self.assert_names_problem(result, "not attached")

    def test_attach_is_denied_without_authorization(self):
        self.c.create_volume(self.c.get_pool("p1"), "a", MiB, {"owner": USER_A.uid})
        for volume in ("v1", "a"):
            for ask_password in (False, True):
                with self.subTest(volume=volume, ask_password=ask_password):
                    result = self.assert_ctl_fails("attach", "p1/" + volume, user=USER_A,
                                                   ask_password=ask_password)
                    self.assert_names_problem(result, "authoriz")


class DeviceTestCase(CisternctlTestCase):
    """Real loop devices and udevd. p1/v1 holds a GPT disk with an ext4 partition; p1/empty is
    all zeros. Whatever a test mounts or attaches goes again at cleanup, even when it fails."""

    needs_udev = True

    @classmethod
    def setUpClass(cls):
        if not os.path.exists("/dev/loop-control"):
            raise unittest.SkipTest("needs loop devices (/dev/loop-control)")
        for tool in ("sfdisk", "mkfs.ext4", "losetup", "partx"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is not installed" % tool)
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.pool_create("p1")
        self.p1_obj = self.c.get_pool("p1")
        self.v1 = self.c.create_volume(self.p1_obj, "v1", DISK_SIZE)
        self.c.create_volume(self.p1_obj, "empty", MiB)
        image = os.path.join(self.env.dirs["scratch"], "disk.img")
        partitioned_image(image)
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.c.import_(self.v1, fd)
        finally:
            os.close(fd)
            os.unlink(image)
        # Runs before the daemon stops (cleanups run last in, first out).
        self.addCleanup(self.release_everything)

    def release_everything(self):
        """Unmount and detach, through the service, every volume still mounted or attached;
        then, by hand, any mount left below the runtime directory and any loop device left on a
        file of the pools."""
        volumes = {}
        with contextlib.suppress(dbus.exceptions.DBusException):
            volumes = {path: interfaces[VOLUME]
                       for path, interfaces in self.c.managed_objects().items()
                       if VOLUME in interfaces}
        for path, props in volumes.items():
            for partition, _ in props.get("Mounts", []):
                with contextlib.suppress(dbus.exceptions.DBusException):
                    self.c.call(path, VOLUME, "Unmount", "ua{sv}", partition, {})
        for point in harness.mounts_under(os.path.join(self.env.dirs["run"], "mounts")):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True)
        for path, props in volumes.items():
            if props.get("Device"):
                with contextlib.suppress(dbus.exceptions.DBusException):
                    self.c.call(path, VOLUME, "Detach", "a{sv}", {})
        for name, _ in harness.loop_devices_under(self.env.dirs["pools"]):
            harness.detach_loop("/dev/" + name)
        self.udev_settle()

    def attach(self, *args, volume="p1/v1", user=None):
        """cisternctl attach; returns its output lines."""
        lines = self.ctl("attach", volume, *args, user=user).stdout.splitlines()
        self.assertTrue(lines, "attach printed nothing")
        return lines

    def device(self, volume="v1"):
        return self.volume_props("p1", volume)["Device"]

    def assert_block_device(self, path):
        self.assertTrue(stat.S_ISBLK(os.stat(path).st_mode), "%s is no block device" % path)


class AttachTest(DeviceTestCase):

    def test_attach_prints_the_device_and_its_partitions(self):
        lines = self.attach()
        device = self.device()
        self.assertTrue(device.startswith("/dev/loop"), device)
        self.assertEqual(lines, [device, device + "p1 ext4"])
        self.assert_block_device(device)
        self.assert_block_device(device + "p1")
        self.assertEqual(harness.loop_partitions(device), [1])
        # A stopped volume's committed image is attached read-only without being asked.
        self.assertTrue(device_read_only(device))

    def test_a_disk_without_partitions_prints_the_device_alone(self):
        self.assertEqual(self.attach(volume="p1/empty"), [self.device("empty")])
        self.assert_block_device(self.device("empty"))

    def test_attach_json_gives_the_device_and_partitions(self):
        doc = self.ctl_json("attach", "p1/v1")
        props = self.volume_props("p1", "v1")
        self.assertEqual(set(doc), {"device", "partitions"})
        self.assertEqual(doc["device"], props["Device"])
        self.assert_block_device(doc["device"])
        self.assertEqual(len(doc["partitions"]), 1)
        part = doc["partitions"][0]
        self.assertEqual(set(part), set(PARTITION_KEYS))
        for key, kind in PARTITION_KEYS.items():
            self.assertIsInstance(part[key], kind, key)
        self.assertEqual(part, {"number": 1, "device": doc["device"] + "p1",
                                "start": PART_START, "size": PART_SIZE, "fstype": "ext4"})
        self.assertEqual([tuple(part[k] for k in PARTITION_KEYS)],
                         [tuple(p) for p in props["Partitions"]])

    def test_no_partitions_exposes_the_whole_disk_only(self):
        self.assertEqual(self.attach("--no-partitions"), [self.device()])
        self.assertEqual(harness.loop_partitions(self.device()), [])
        self.ctl("detach", "p1/v1")
        doc = self.ctl_json("attach", "p1/v1", "--no-partitions")
        self.assertEqual(doc, {"device": self.device(), "partitions": []})

    def test_read_only_of_a_started_volume(self):
        self.c.start_volume(self.v1)
        device = self.attach("--read-only")[0]
        self.assertTrue(device_read_only(device))
        self.ctl("detach", "p1/v1")
        # Without --read-only the working copy of a started volume is writable.
        device = self.attach()[0]
        self.assertFalse(device_read_only(device))

    def test_read_only_of_a_stopped_volume(self):
        device = self.attach("--read-only")[0]
        self.assertTrue(device_read_only(device))

    def test_detach_takes_the_device_away(self):
        device = self.attach()[0]
        result = self.ctl("--json", "detach", "p1/v1")
        self.assertEqual((result.stdout, result.stderr), ("", ""))
        self.assertEqual(self.device(), "")
        harness.poll_until(lambda: not harness.loop_devices_under(self.env.dirs["pools"]), 10,
                           "%s to let go of the image" % device)
        # Detached, the volume can be attached again, and removed once detached.
        self.attach()
        self.ctl("detach", "p1/v1")
        self.ctl("remove", "p1/v1")

    def test_attach_of_an_attached_volume_fails_and_changes_nothing(self):
        device = self.attach()[0]
        result = self.assert_ctl_fails("attach", "p1/v1")
        self.assert_names_problem(result, device, "attached")

    def test_info_and_list_show_the_device(self):
        before = self.ctl_json("info", "p1/v1")
        self.assertIsNone(before["device"])
        self.assertEqual(before["partitions"], [])
        self.assertIsNone(self.ctl_json("list", "p1")[0]["device"])

        attached = self.ctl_json("attach", "p1/v1")
        info = self.ctl_json("info", "p1/v1")
        self.assertEqual(info["device"], attached["device"])
        self.assertEqual(info["partitions"], attached["partitions"])
        listed = {v["name"]: v["device"] for v in self.ctl_json("list", "p1")}
        self.assertEqual(listed, {"v1": attached["device"], "empty": None})

        text = self.ctl("info", "p1/v1").stdout
        self.assertIn(attached["device"], text)
        self.assertIn(attached["device"] + "p1", text)
        self.assertIn("ext4", text)
        self.assertIn(attached["device"], self.ctl("list").stdout)

    def test_attach_own_rule_lets_a_user_attach_their_volume_only(self):
        self.c.create_volume(self.p1_obj, "a", MiB, {"owner": USER_A.uid})
        self.c.create_volume(self.p1_obj, "b", MiB, {"owner": USER_B.uid})
        self.env.set_polkit_rules(rule_allowing(["org.cistern.volume.attach-own"], USER_A))
        result = self.assert_ctl_fails("attach", "p1/b", user=USER_A)
        self.assert_names_problem(result, "authoriz")
        device = self.attach(volume="p1/a", user=USER_A)[0]
        self.assertEqual(device, self.device("a"))
        self.ctl("detach", "p1/a", user=USER_A)
        self.assertEqual(self.device("a"), "")


class MountTest(DeviceTestCase):
    """cisternctl mount and unmount on real loop devices; p1/whole holds ext4 on the whole
    disk."""

    def setUp(self):
        super().setUp()
        self.whole = self.c.create_volume(self.p1_obj, "whole", 16 * MiB)
        image = os.path.join(self.env.dirs["scratch"], "whole.img")
        whole_disk_image(image, 16 * MiB)
        fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.c.import_(self.whole, fd)
        finally:
            os.close(fd)
            os.unlink(image)

    def mounts(self, volume="v1"):
        return [(int(p), str(point)) for p, point in self.volume_props("p1", volume)["Mounts"]]

    def mount(self, *args, volume="p1/v1", user=None):
        """cisternctl mount; returns the one line it printed, the mount point."""
        lines = self.ctl("mount", volume, *args, user=user).stdout.splitlines()
        self.assertEqual(len(lines), 1, "mount printed %r" % lines)
        return lines[0]

    def assert_hardened_mount(self, point, read_only):
        self.assertTrue(os.path.isabs(point), point)
        self.assertTrue(os.path.ismount(point), "%s is no mount point" % point)
        options = mount_options(point)
        self.assertLessEqual({"nosuid", "nodev", "noexec"}, options, point)
        self.assertIn("ro" if read_only else "rw", options, point)

    def assert_unmounted(self, point, volume="v1"):
        self.assertFalse(os.path.ismount(point), "%s is still a mount point" % point)
        self.assertIsNone(mount_options(point))
        self.assertEqual(self.mounts(volume), [])

    def test_mount_of_a_partition_of_a_started_volume(self):
        self.c.start_volume(self.v1)
        self.assertEqual(self.device(), "")
        point = self.mount("1")
        self.assert_hardened_mount(point, read_only=False)
        self.assertEqual(self.mounts(), [(1, point)])
        self.assertTrue(os.path.isdir(os.path.join(point, "lost+found")))
        # The service attached the volume for the mount, writable since it is started.
        device = self.device()
        self.assertTrue(device.startswith("/dev/loop"), device)
        self.assertFalse(device_read_only(device))

        result = self.ctl("unmount", "p1/v1", "1")
        self.assertEqual((result.stdout, result.stderr), ("", ""))
        self.assert_unmounted(point)
        # The device stays attached until detach.
        self.assertEqual(self.device(), device)
        self.ctl("detach", "p1/v1")
        self.assertEqual(self.device(), "")

    def test_part_defaults_to_the_whole_device(self):
        self.c.start_volume(self.whole)
        point = self.mount(volume="p1/whole")
        self.assert_hardened_mount(point, read_only=False)
        self.assertEqual(self.mounts("whole"), [(0, point)])
        self.ctl("unmount", "p1/whole")
        self.assert_unmounted(point, "whole")
        # 0 names the whole device as well.
        point = self.mount("0", volume="p1/whole")
        self.assertEqual(self.mounts("whole"), [(0, point)])
        self.ctl("unmount", "p1/whole", "0")
        self.assert_unmounted(point, "whole")

    def test_mount_json_gives_the_element_info_lists(self):
        self.c.start_volume(self.v1)
        doc = self.ctl_json("mount", "p1/v1", "1")
        self.assertEqual(set(doc), {"partition", "mount_point"})
        self.assertIsInstance(doc["partition"], int)
        self.assertIsInstance(doc["mount_point"], str)
        self.assertEqual(doc["partition"], 1)
        self.assert_hardened_mount(doc["mount_point"], read_only=False)
        self.assertEqual(self.ctl_json("info", "p1/v1")["mounts"], [doc])
        text = self.ctl("info", "p1/v1").stdout
        self.assertIn("partition 1 on " + doc["mount_point"], text)

        result = self.ctl("--json", "unmount", "p1/v1", "1")
        self.assertEqual((result.stdout, result.stderr), ("", ""))
        self.assert_unmounted(doc["mount_point"])
        self.assertEqual(self.ctl_json("info", "p1/v1")["mounts"], [])

        doc = self.ctl_json("mount", "p1/whole")
        self.assertEqual(doc["partition"], 0)
        self.assertEqual(self.ctl_json("info", "p1/whole")["mounts"], [doc])

    def test_read_only(self):
        self.c.start_volume(self.v1)
        point = self.mount("1", "--read-only")
        self.assert_hardened_mount(point, read_only=True)
        self.ctl("unmount", "p1/v1", "1")
        # A stopped volume's filesystem is read-only without being asked.
        point = self.mount(volume="p1/whole")
        self.assert_hardened_mount(point, read_only=True)
        self.assertTrue(device_read_only(self.device("whole")))

    def test_mount_of_an_attached_volume_uses_its_device(self):
        device = self.attach()[0]
        point = self.mount("1")
        self.assert_hardened_mount(point, read_only=True)
        self.assertEqual(self.device(), device)
        result = self.assert_ctl_fails("detach", "p1/v1")
        self.assert_names_problem(result, "mounted")
        self.ctl("unmount", "p1/v1", "1")
        self.ctl("detach", "p1/v1")

    def test_unknown_partition_fails_and_changes_nothing(self):
        # Not attached: the device attached for the mount goes again.
        for part in ("2", "4294967295"):
            with self.subTest(part=part, attached=False):
                result = self.assert_ctl_fails("mount", "p1/v1", part)
                self.assert_names_problem(result, "partition " + part)
                self.assertEqual(self.device(), "")
        # Attached: it stays so.
        device = self.attach()[0]
        result = self.assert_ctl_fails("mount", "p1/v1", "2")
        self.assert_names_problem(result, "partition 2")
        self.assertEqual(self.device(), device)
        self.assertEqual(self.mounts(), [])

    def test_second_mount_and_unmount_fail(self):
        point = self.mount("1")
        result = self.assert_ctl_fails("mount", "p1/v1", "1")
        self.assert_names_problem(result, point, "already")
        self.ctl("unmount", "p1/v1", "1")
        result = self.assert_ctl_fails("unmount", "p1/v1", "1")
        self.assert_names_problem(result, "not mounted")

    def test_unmount_while_in_use_fails_and_keeps_the_mount(self):
        point = self.mount("1")
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(point)
            result = self.assert_ctl_fails("unmount", "p1/v1", "1")
        finally:
            os.fchdir(cwd)
            os.close(cwd)
        self.assert_names_problem(result, "in use")
        self.assertTrue(os.path.ismount(point))
        self.ctl("unmount", "p1/v1", "1")
        self.assert_unmounted(point)

    def test_whole_device_without_a_filesystem_fails(self):
        # The whole GPT disk holds a partition table, no filesystem.
        result = self.assert_ctl_fails("mount", "p1/v1")
        self.assert_names_problem(result, "filesystem")
        self.assertEqual(self.device(), "")

    def test_mount_is_denied_without_authorization(self):
        self.c.create_volume(self.p1_obj, "a", MiB, {"owner": USER_A.uid})
        for volume in ("p1/whole", "p1/a"):
            for ask_password in (False, True):
                with self.subTest(volume=volume, ask_password=ask_password):
                    result = self.assert_ctl_fails("mount", volume, user=USER_A,
                                                   ask_password=ask_password)
                    self.assert_names_problem(result, "authoriz")
        point = self.mount(volume="p1/whole")
        result = self.assert_ctl_fails("unmount", "p1/whole", user=USER_A)
        self.assert_names_problem(result, "authoriz")
        self.assertTrue(os.path.ismount(point))


# ---------------------------------------------------------------------------
# convert, and info of qcow2 volumes (SPEC §4.3 Convert and Info, §7; cisternctl(1))
# ---------------------------------------------------------------------------

class ConvertCommandTest(LifecycleTestCase):
    """p1/v1 as in LifecycleTestCase, 4 MiB, holding compressible data between holes."""

    QEMU_IMG = "/usr/bin/qemu-img"
    SIZE = 4 * MiB

    def setUp(self):
        super().setUp()
        if not os.access(self.QEMU_IMG, os.X_OK):
            self.skipTest("qemu-img is not installed")
        self.c.resize(self.v1, self.SIZE)
        harness.write_pattern(self.file("v1"), seed=3)
        self.data = self.guest_bytes("v1", "raw")

    def guest_bytes(self, volume, fmt, *names):
        """What a guest sees of the image, read as fmt."""
        with tempfile.NamedTemporaryFile(dir=self.env.tmp) as out:
            subprocess.run([self.QEMU_IMG, "convert", "-f", fmt, "-O", "raw",
                            self.file(volume, *names), out.name], check=True, capture_output=True)
            with open(out.name, "rb") as f:
                return f.read()

    def volume_format(self, volume="v1"):
        return self.c.prop(self.c.get_volume("p1", volume), VOLUME, "Format")

    def info_line(self, text, label):
        """The value printed after "LABEL:" in cisternctl info's text, or None."""
        for line in text.splitlines():
            key, sep, value = line.partition(": ")
            if sep and key.strip() == label:
                return value
        return None

    def test_convert_to_qcow2_and_back_keeps_the_bytes_and_a_revision_each(self):
        self.assertEqual(self.quiet("convert", "p1/v1", "qcow2").stdout, "")
        self.assertEqual(self.volume_format(), "qcow2")
        self.assertTrue(self.guest_bytes("v1", "qcow2") == self.data, "qcow2 image holds other bytes")
        [rev] = self.revision_ids()
        self.assertTrue(self.guest_bytes("v1", "raw", "revisions", rev) == self.data)

        self.assertEqual(self.quiet("--json", "convert", "p1/v1", "raw").stdout, "")
        self.assertEqual(self.volume_format(), "raw")
        with open(self.file("v1"), "rb") as f:
            self.assertTrue(f.read() == self.data, "raw image holds other bytes")
        self.assertEqual(len(self.revision_ids()), 2)
        self.assertEqual(self.c.prop(self.v1, VOLUME, "Size"), self.SIZE)
        self.assert_consistent()

    def test_info_shows_the_qcow2_header_in_text_and_json(self):
        self.quiet("convert", "p1/v1", "qcow2", "--compress")
        expected = self.c.info(self.v1)
        self.assertGreater(expected["compressed_clusters"], 0)

        doc = self.ctl_json("info", "p1/v1")
        self.assertEqual(doc["format"], "qcow2")
        self.assertEqual(doc["info"], expected)
        for key, kind in (("compat", str), ("cluster_size", int), ("compressed_clusters", int),
                          ("compression_type", str), ("refcount_bits", int), ("dirty", bool),
                          ("lazy_refcounts", bool), ("extended_l2", bool), ("snapshots", int),
                          ("l1_entries", int)):
            with self.subTest(key=key):
                self.assertIs(type(doc["info"][key]), kind)

        text = self.ctl("info", "p1/v1").stdout
        # Sizes with an IEC unit, and in bytes.
        cluster = expected["cluster_size"]
        self.assertRegex(self.info_line(text, "Cluster size") or "", r"^[0-9.]+[KM] \(%d bytes\)$" % cluster)
        self.assertRegex(self.info_line(text, "Virtual size") or "", r"^4\.0M \(%d bytes\)$" % self.SIZE)
        self.assertEqual(self.info_line(text, "Compat"), expected["compat"])
        self.assertEqual(self.info_line(text, "Compressed clusters"), str(expected["compressed_clusters"]))
        self.assertEqual(self.info_line(text, "Compression type"), expected["compression_type"])
        self.assertEqual(self.info_line(text, "Refcount bits"), str(expected["refcount_bits"]))
        self.assertEqual(self.info_line(text, "Dirty"), "no")
        self.assertEqual(self.info_line(text, "Lazy refcounts"), "no")
        self.assertEqual(self.info_line(text, "Extended L2"), "no")
        self.assertEqual(self.info_line(text, "Internal snapshots"), "0")
        self.assertEqual(self.info_line(text, "L1 entries"), str(expected["l1_entries"]))

    def test_info_of_a_raw_volume_has_no_qcow2_keys(self):
        doc = self.ctl_json("info", "p1/v1")
        self.assertEqual(set(doc["info"]), {"format", "virtual_size", "actual_size"})
        self.assertIsNone(self.info_line(self.ctl("info", "p1/v1").stdout, "Cluster size"))

    def test_compress_recompresses_a_qcow2_volume(self):
        self.quiet("convert", "p1/v1", "qcow2")
        self.assertEqual(self.c.info(self.v1)["compressed_clusters"], 0)
        self.quiet("convert", "p1/v1", "qcow2", "--compress")
        self.assertGreater(self.c.info(self.v1)["compressed_clusters"], 0)
        self.assertTrue(self.guest_bytes("v1", "qcow2") == self.data)
        self.assertEqual(len(self.revision_ids()), 2)

    def test_usage_errors_change_nothing(self):
        for args in (["convert"], ["convert", "p1/v1"], ["convert", "p1/v1", "qcow2", "x"],
                     ["convert", "v1", "qcow2"], ["convert", "p1/v1", ""],
                     ["convert", "p1/v1", "qcow2", "--compress=yes"],
                     ["convert", "p1/v1", "qcow2", "--format=raw"],
                     ["convert", "p1/v1", "qcow2", "--size=1M"],
                     ["create", "p1/v2", "1M", "--compress"],
                     ["export", "p1/v1", "-", "--compress"]):
            with self.subTest(args=args):
                result = self.assert_ctl_fails(*args, expect=EXIT_USAGE)
                self.assertTrue(result.stderr.startswith("cisternctl: "), result.stderr)

    def test_failures_name_the_problem_and_change_nothing(self):
        self.assert_names_problem(self.assert_ctl_fails("convert", "p1/v1", "vmdk"), "vmdk")
        self.assert_names_problem(self.assert_ctl_fails("convert", "p1/v1", "raw", "--compress"),
                                  "compress")
        self.assert_names_problem(self.assert_ctl_fails("convert", "p1/nope", "qcow2"), "nope")
        self.assert_names_problem(self.assert_ctl_fails("convert", "p9/v1", "qcow2"), "p9")
        self.c.start_volume(self.v1)
        result = self.assert_ctl_fails("convert", "p1/v1", "qcow2")
        self.assertTrue(result.stderr.startswith("cisternctl: Failed to convert volume p1/v1 to qcow2: "),
                        result.stderr)
        self.assert_names_problem(result, "stop")

    def test_converting_to_the_same_format_changes_nothing(self):
        before = self.snapshot_state()
        self.quiet("convert", "p1/v1", "raw")
        self.assertEqual(self.snapshot_state(), before)

    def test_convert_is_denied_without_authorization(self):
        for ask_password in (False, True):
            with self.subTest(ask_password=ask_password):
                result = self.assert_ctl_fails("convert", "p1/v1", "qcow2", user=USER_A,
                                               ask_password=ask_password)
                self.assert_names_problem(result, "authoriz")

    def test_a_user_converts_their_own_volume_with_the_own_rule(self):
        self.env.set_polkit_rules(rule_allowing(["org.cistern.volume.modify-own"], USER_A))
        self.c.create_volume(self.p1_obj, "mine", MiB, {"owner": USER_A.uid})
        self.ctl("convert", "p1/mine", "qcow2", user=USER_A)
        self.assertEqual(self.volume_format("mine"), "qcow2")
        self.assert_names_problem(self.assert_ctl_fails("convert", "p1/v1", "qcow2", user=USER_A),
                                  "authoriz")

    def start_convert_on_a_terminal(self, *args):
        """cisternctl convert with stderr on a pseudo-terminal and its qemu-img stopped
        (SIGSTOP) once the job runs: returns (terminal master, process, qemu-img pids, what is
        drawn up to the first bar)."""
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        try:
            proc = self.start_ctl("convert", "p1/v1", *args, stderr=slave)
        finally:
            os.close(slave)
        self.wait_for_job(proc)
        harness.poll_until(lambda: harness.qemu_img_converts() or proc.poll() is not None, 30,
                           "qemu-img convert to run")
        pids = harness.qemu_img_converts()
        self.assertTrue(pids, "the convert ended before it could be held")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            self.addCleanup(self._resume, pid)
        return master, proc, pids, read_terminal(master, until=b"\r")

    @staticmethod
    def _resume(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)

    def test_convert_draws_progress_on_a_terminal_and_clears_it(self):
        master, proc, pids, drawn = self.start_convert_on_a_terminal("qcow2")
        for pid in pids:
            self._resume(pid)
        drawn += read_terminal(master)
        self.assertEqual(proc.wait(timeout=60), EXIT_OK, "terminal: %r" % drawn)
        self.assertIn(b"[", drawn)
        self.assertTrue(drawn.endswith(b"\r\x1b[K"), "the bar stayed: %r" % drawn[-200:])
        self.assertEqual(self.volume_format(), "qcow2")

    def test_ctrl_c_cancels_the_convert_and_changes_nothing(self):
        before = self.snapshot_state()
        master, proc, pids, drawn = self.start_convert_on_a_terminal("qcow2", "--compress")
        proc.send_signal(signal.SIGINT)
        drawn += read_terminal(master, timeout=30)
        self.assertEqual(proc.wait(timeout=60), EXIT_FAILURE, "terminal: %r" % drawn)
        self.assertIn(b"Cancelling", drawn)
        self.assertIn(b"cancel", drawn.split(b"Cancelling", 1)[1].lower())
        self.wait_no_jobs()
        self.assertEqual(harness.qemu_img_converts(), [], "qemu-img outlived the cancel")
        self.assertEqual(self.snapshot_state(), before)
        self.assertEqual(harness.staging_entries(self.p1), [])


if __name__ == "__main__":
    harness.main()
