#!/usr/bin/python3
"""Life cycle, revisions, clones and the commit protocol of dir-pool volumes (SPEC §4.3).

Content is written and read through the dir pool's layout, as a VM runner
would see it: <pool>/volumes/<name>/image is the committed image, .../work the
working copy while started, .../revisions/<id> the revisions.  Each test
writes data unique to it (harness.write_pattern) and compares checksums.
"""

import contextlib
import os
import signal
import unittest

import dbus
from gi.repository import GLib

import harness
from harness import (POOL, VOLUME, USER_A, USER_B, Error, MiB, file_sha256, rule_allowing,
                     write_pattern, zeros_sha256)

SIZE = 4 * MiB

VOLUME_CREATE = "org.cistern.volume.create"
VOLUME_READ = "org.cistern.volume.read"
VOLUME_READ_OWN = "org.cistern.volume.read-own"


class LifecycleTestCase(harness.CisternTestCase):
    """Pool p1 in the harness's pool directory (no reflink: copies are real copies)."""

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")

    def recorder(self):
        # Signals an earlier test's daemon sent and nobody dispatched stay out of this test.
        context = GLib.MainContext.default()
        while context.pending():
            context.iteration(False)
        return super().recorder()

    # -- layout --

    def file(self, name, *parts, pool=None):
        return harness.dir_volume_file((pool or self.pool).dir, name, *parts)

    def image(self, name="v1", pool=None):
        return self.file(name, "image", pool=pool)

    def work(self, name="v1", pool=None):
        return self.file(name, "work", pool=pool)

    def revision_file(self, name, rev, pool=None):
        return self.file(name, "revisions", rev, pool=pool)

    def digest(self, path):
        return file_sha256(path)

    # -- properties --

    def state(self, obj):
        return self.c.prop(obj, VOLUME, "State")

    def revisions(self, obj):
        return [tuple(r) for r in self.c.prop(obj, VOLUME, "Revisions")]

    def revision_ids(self, obj):
        return [rev_id for rev_id, _ in self.revisions(obj)]

    # -- building blocks --

    def commit(self, obj, name, seed, pool=None):
        """Start, write data unique to seed into the working copy, Stop; the committed digest."""
        self.c.start_volume(obj)
        write_pattern(self.work(name, pool), seed)
        digest = self.digest(self.work(name, pool))
        self.c.stop_volume(obj)
        return digest

    def seed_image(self, name, seed, pool=None):
        """Data written straight into a stopped volume's committed image (test setup only)."""
        write_pattern(self.image(name, pool), seed)
        return self.digest(self.image(name, pool))

    def assert_consistent(self, pool=None):
        pool = pool or self.pool
        self.assertEqual(harness.dir_pool_inconsistencies(self.c, pool.dir, pool.obj), [])

    def restart_daemon(self, sig=signal.SIGKILL):
        self.assertTrue(self.env.kill_daemon(sig))
        self.assertIsNone(self.env.daemon_pid())


# ---------------------------------------------------------------------------
# Start / Stop
# ---------------------------------------------------------------------------

class OriginStartStopTest(LifecycleTestCase):
    """save_on_stop (the default): a private working copy, committed by Stop."""

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE)
        self.before = self.seed_image("v1", 1)

    def test_a_new_volume_is_stopped_without_a_working_copy(self):
        self.assertEqual(self.state(self.v), "stopped")
        self.assertFalse(os.path.exists(self.work()))

    def test_start_makes_a_working_copy_of_the_committed_image(self):
        self.c.start_volume(self.v)
        self.assertEqual(self.state(self.v), "started")
        self.assertEqual(self.digest(self.work()), self.before)
        self.assertNotEqual(os.stat(self.work()).st_ino, os.stat(self.image()).st_ino)
        self.assertEqual(self.digest(self.image()), self.before)
        self.assert_consistent()

    def test_start_and_stop_announce_the_state(self):
        rec = self.recorder()
        self.c.start_volume(self.v)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.v, VOLUME, "State", "started")))
        self.c.stop_volume(self.v)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.v, VOLUME, "State", "stopped")))

    def test_writes_to_the_working_copy_leave_the_committed_image_alone(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        self.assertEqual(self.digest(self.image()), self.before)

    def test_stop_commits_the_working_copy(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        written = self.digest(self.work())
        self.c.stop_volume(self.v)
        self.assertEqual(self.state(self.v), "stopped")
        self.assertFalse(os.path.exists(self.work()))
        self.assertEqual(self.digest(self.image()), written)
        self.assert_consistent()

    def test_stop_keeps_the_previous_committed_image_as_a_revision(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        self.c.stop_volume(self.v)
        revisions = self.revisions(self.v)
        self.assertEqual([r for r, _ in revisions], ["1"])
        self.assert_near_now_usec(revisions[0][1])
        self.assertEqual(self.digest(self.revision_file("v1", "1")), self.before)

    def test_stop_writes_a_new_committed_image_instead_of_writing_in_place(self):
        old = os.open(self.image(), os.O_RDONLY)
        self.addCleanup(os.close, old)
        old_inode = os.fstat(old).st_ino
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        written = self.digest(self.work())
        self.c.stop_volume(self.v)
        self.assertEqual(self.digest(self.image()), written)
        self.assertNotEqual(os.stat(self.image()).st_ino, old_inode)
        self.assertEqual(file_sha256(old), self.before,
                         "the old committed image was written in place")

    def test_start_of_a_started_volume_resumes_it(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        written, inode = self.digest(self.work()), os.stat(self.work()).st_ino
        self.c.start_volume(self.v)
        self.assertEqual(self.state(self.v), "started")
        self.assertEqual((self.digest(self.work()), os.stat(self.work()).st_ino),
                         (written, inode))

    def test_stop_of_a_stopped_volume_succeeds_and_changes_nothing(self):
        before = self.snapshot_state()
        self.c.stop_volume(self.v)
        self.assertEqual(self.snapshot_state(), before)

    def test_second_stop_changes_nothing(self):
        self.commit(self.v, "v1", 2)
        before = self.snapshot_state()
        self.c.stop_volume(self.v)
        self.assertEqual(self.snapshot_state(), before)

    def test_stop_without_writes_keeps_the_content(self):
        self.c.start_volume(self.v)
        self.c.stop_volume(self.v)
        self.assertEqual(self.digest(self.image()), self.before)

    def test_next_start_sees_the_last_commit(self):
        written = self.commit(self.v, "v1", 2)
        self.c.start_volume(self.v)
        self.assertEqual(self.digest(self.work()), written)

    def test_unknown_options_are_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.start_volume, self.v, {"bogus": True})
        self.c.start_volume(self.v)
        self.assert_fails(Error.InvalidArgument, self.c.stop_volume, self.v, {"bogus": True})

    def test_remove_of_a_started_volume_is_busy(self):
        self.c.start_volume(self.v)
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)
        self.c.stop_volume(self.v)
        self.c.remove_volume(self.v)
        self.assertFalse(os.path.exists(self.file("v1")))

    def test_remove_pool_with_a_started_volume_is_busy(self):
        self.c.start_volume(self.v)
        self.assert_fails(Error.Busy, self.c.remove_pool, "p1")

    def test_life_cycle_flags_change_only_while_stopped(self):
        source = self.make_volume(self.pool, "base", SIZE)
        self.c.start_volume(self.v)
        for settings in ({"save_on_stop": False},
                         {"save_on_stop": False, "snap_on_start": True, "source": source}):
            with self.subTest(settings=sorted(settings)):
                self.assert_fails(Error.WrongState, self.c.configure_volume, self.v, settings)
        self.c.configure_volume(self.v, {"revisions_to_keep": 3, "read_only": False})
        self.assertEqual(self.c.prop(self.v, VOLUME, "RevisionsToKeep"), 3)

    def test_start_and_stop_survive_a_daemon_restart(self):
        self.c.start_volume(self.v)
        self.restart_daemon(signal.SIGTERM)
        self.assertEqual(self.state(self.v), "started")
        self.c.stop_volume(self.v)
        self.restart_daemon(signal.SIGTERM)
        self.assertEqual(self.state(self.v), "stopped")

    def test_outdated_is_false_for_an_origin(self):
        self.c.start_volume(self.v)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)


class StopWhileAttachedTest(LifecycleTestCase):
    """Stop and the block device of Attach: a stopped volume stays as it is, attached or not
    (Stop is idempotent); a started one must be detached before Stop."""

    needs_udev = True

    @classmethod
    def setUpClass(cls):
        if not os.path.exists("/dev/loop-control"):
            raise unittest.SkipTest("needs loop devices (/dev/loop-control)")
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE)
        self.before = self.seed_image("v1", 1)
        # Runs before the daemon stops (cleanups run last in, first out).
        self.addCleanup(self.detach_all)

    def detach_all(self):
        with contextlib.suppress(dbus.exceptions.DBusException):
            if self.c.prop(self.v, VOLUME, "Device"):
                self.c.detach(self.v)
        for name, _ in harness.loop_devices_under(self.pool.dir):
            harness.detach_loop("/dev/" + name)
        self.udev_settle()

    def test_stop_of_a_stopped_attached_volume_succeeds_and_changes_nothing(self):
        device = self.c.attach(self.v)
        self.assertEqual(self.state(self.v), "stopped")
        before = self.snapshot_state()
        rec = self.recorder()
        self.c.stop_volume(self.v)
        self.assertEqual(self.snapshot_state(), before)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Device"), device)
        rec.drain()
        self.assertEqual(rec.matching(lambda s: s.path == self.v), [])
        # Twice is the same as once, and the device still detaches.
        self.c.stop_volume(self.v)
        self.assertEqual(self.snapshot_state(), before)
        self.c.detach(self.v)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Device"), "")
        self.assertEqual(self.digest(self.image()), self.before)

    def test_stop_of_a_started_attached_volume_is_busy(self):
        self.c.start_volume(self.v)
        self.c.attach(self.v, {"read_only": False})
        self.assert_fails(Error.Busy, self.c.stop_volume, self.v)
        self.assertEqual(self.state(self.v), "started")
        self.c.detach(self.v)
        self.c.stop_volume(self.v)
        self.assertEqual(self.state(self.v), "stopped")


class CrashResumeTest(LifecycleTestCase):
    """A working copy that survives a crash of cisternd is the VM's: resumed, then committed."""

    def start_and_write(self, obj, name, seed):
        self.c.start_volume(obj)
        write_pattern(self.work(name), seed)
        return self.digest(self.work(name))

    def test_origin_comes_back_started_and_start_resumes_it(self):
        v = self.make_volume(self.pool, "v1", SIZE)
        before = self.seed_image("v1", 1)
        written = self.start_and_write(v, "v1", 2)
        self.restart_daemon()
        self.assertEqual(self.state(v), "started")
        self.assertEqual(self.digest(self.work()), written)
        self.assertEqual(self.digest(self.image()), before)
        self.c.start_volume(v)
        self.assertEqual(self.state(v), "started")
        self.assertEqual(self.digest(self.work()), written)
        write_pattern(self.work(), 3)
        resumed = self.digest(self.work())
        self.c.stop_volume(v)
        self.assertEqual(self.digest(self.image()), resumed)
        self.assertEqual(self.digest(self.revision_file("v1", self.revision_ids(v)[-1])), before)
        self.assert_consistent()

    def test_stop_after_a_crash_commits_the_working_copy(self):
        v = self.make_volume(self.pool, "v1", SIZE)
        written = self.start_and_write(v, "v1", 2)
        self.restart_daemon()
        self.c.stop_volume(v)
        self.assertEqual(self.state(v), "stopped")
        self.assertEqual(self.digest(self.image()), written)
        self.assert_consistent()

    def test_volatile_volume_comes_back_started_and_stop_discards(self):
        v = self.make_volume(self.pool, "v1", SIZE, save_on_stop=False)
        self.start_and_write(v, "v1", 2)
        self.restart_daemon()
        self.assertEqual(self.state(v), "started")
        self.c.stop_volume(v)
        self.assertEqual(self.state(v), "stopped")
        self.assertFalse(os.path.exists(self.work()))
        self.assertEqual(self.revisions(v), [])
        self.assert_consistent()

    def test_snapshot_volume_comes_back_started_and_stop_discards(self):
        base = self.make_volume(self.pool, "base", SIZE)
        base_digest = self.seed_image("base", 1)
        v = self.make_volume(self.pool, "v1", SIZE, save_on_stop=False, snap_on_start=True,
                             source=base)
        self.start_and_write(v, "v1", 2)
        self.restart_daemon()
        self.assertEqual(self.state(v), "started")
        self.c.stop_volume(v)
        self.assertFalse(os.path.exists(self.work()))
        self.assertEqual(self.digest(self.image("base")), base_digest)
        self.assert_consistent()

    def test_sigterm_keeps_started_volumes_started(self):
        v = self.make_volume(self.pool, "v1", SIZE)
        written = self.start_and_write(v, "v1", 2)
        self.restart_daemon(signal.SIGTERM)
        self.assertEqual(self.state(v), "started")
        self.assertEqual(self.digest(self.work()), written)


class VolatileTest(LifecycleTestCase):
    """Neither flag: a fresh, zeroed image of Size on every Start, discarded by Stop."""

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE, save_on_stop=False)

    def test_start_gives_a_zeroed_image_of_size(self):
        self.c.start_volume(self.v)
        self.assertEqual(self.state(self.v), "started")
        self.assertEqual(os.path.getsize(self.work()), SIZE)
        self.assertEqual(self.digest(self.work()), zeros_sha256(SIZE))

    def test_stop_discards_and_the_next_start_is_zeroed_again(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        self.c.stop_volume(self.v)
        self.assertEqual(self.state(self.v), "stopped")
        self.assertFalse(os.path.exists(self.work()))
        self.assertEqual(self.revisions(self.v), [])
        self.c.start_volume(self.v)
        self.assertEqual(self.digest(self.work()), zeros_sha256(SIZE))
        self.assert_consistent()

    def test_stop_is_idempotent(self):
        self.c.start_volume(self.v)
        self.c.stop_volume(self.v)
        before = self.snapshot_state()
        self.c.stop_volume(self.v)
        self.assertEqual(self.snapshot_state(), before)

    def test_size_is_kept_while_stopped(self):
        self.c.start_volume(self.v)
        self.c.stop_volume(self.v)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), SIZE)
        self.restart_daemon()
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), SIZE)
        self.c.start_volume(self.v)
        self.assertEqual(os.path.getsize(self.work()), SIZE)


class SnapOnStartTest(LifecycleTestCase):
    """snap_on_start: the working copy is a snapshot of the source's committed image."""

    def setUp(self):
        super().setUp()
        self.base = self.make_volume(self.pool, "base", SIZE)
        self.base_digest = self.seed_image("base", 1)
        self.v = self.make_volume(self.pool, "v1", SIZE, save_on_stop=False,
                                  snap_on_start=True, source=self.base)

    def test_start_copies_the_source_committed_image(self):
        own = self.digest(self.image()) if os.path.exists(self.image()) else None
        self.c.start_volume(self.v)
        self.assertEqual(self.digest(self.work()), self.base_digest)
        if own is not None:
            self.assertEqual(self.digest(self.image()), own)
        self.assertEqual(self.digest(self.image("base")), self.base_digest)

    def test_stop_discards_and_the_source_stays(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        self.c.stop_volume(self.v)
        self.assertFalse(os.path.exists(self.work()))
        self.assertEqual(self.revisions(self.v), [])
        self.assertEqual(self.digest(self.image("base")), self.base_digest)
        self.assertEqual(self.revisions(self.base), [])
        self.assert_consistent()

    def test_start_uses_the_committed_image_not_the_source_working_copy(self):
        self.c.start_volume(self.base)
        write_pattern(self.work("base"), 7)
        self.c.start_volume(self.v)
        self.assertEqual(self.digest(self.work()), self.base_digest)

    def test_outdated_after_the_source_commits(self):
        self.c.start_volume(self.v)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)
        rec = self.recorder()
        new = self.commit(self.base, "base", 3)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), True)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.v, VOLUME, "Outdated", True)))
        self.c.stop_volume(self.v)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)
        self.c.start_volume(self.v)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)
        self.assertEqual(self.digest(self.work()), new)

    def test_not_outdated_while_the_source_only_runs(self):
        self.c.start_volume(self.v)
        self.c.start_volume(self.base)
        write_pattern(self.work("base"), 3)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)

    def test_not_outdated_when_the_source_committed_before_start(self):
        self.commit(self.base, "base", 3)
        self.c.start_volume(self.v)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)

    def test_outdated_survives_a_daemon_restart(self):
        self.c.start_volume(self.v)
        self.commit(self.base, "base", 3)
        self.restart_daemon()
        self.assertEqual(self.state(self.v), "started")
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), True)

    def test_a_stopped_snapshot_volume_is_never_outdated(self):
        self.commit(self.base, "base", 3)
        self.assertIs(self.c.prop(self.v, VOLUME, "Outdated"), False)

    def test_source_in_use_cannot_be_removed_while_the_snapshot_runs(self):
        self.c.start_volume(self.v)
        self.assert_fails(Error.Busy, self.c.remove_volume, self.base)


# ---------------------------------------------------------------------------
# Revisions
# ---------------------------------------------------------------------------

class RevisionsTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE, revisions_to_keep=3)
        self.contents = [self.seed_image("v1", 1)]   # committed digests, oldest first

    def commit_n(self, n, first_seed=10):
        for i in range(n):
            self.contents.append(self.commit(self.v, "v1", first_seed + i))

    def test_ids_come_from_a_counter_oldest_first(self):
        self.commit_n(3)
        revisions = self.revisions(self.v)
        self.assertEqual([r for r, _ in revisions], ["1", "2", "3"])
        times = [t for _, t in revisions]
        self.assertEqual(times, sorted(times))
        for t in times:
            self.assert_near_now_usec(t)
        for rev, content in zip(("1", "2", "3"), self.contents):
            self.assertEqual(self.digest(self.revision_file("v1", rev)), content)
        self.assertEqual(self.digest(self.image()), self.contents[-1])
        self.assert_consistent()

    def test_two_commits_in_the_same_second_get_distinct_ids(self):
        self.commit_n(2)
        ids = self.revision_ids(self.v)
        self.assertEqual(len(set(ids)), 2)

    def test_oldest_are_pruned_after_every_commit(self):
        self.commit_n(5)
        self.assertEqual(self.revision_ids(self.v), ["3", "4", "5"])
        self.assertEqual(harness.revision_files(self.pool.dir, "v1"), ["3", "4", "5"])
        for rev, content in zip(("3", "4", "5"), self.contents[2:5]):
            self.assertEqual(self.digest(self.revision_file("v1", rev)), content)
        self.assert_consistent()

    def test_revisions_to_keep_zero_keeps_none(self):
        self.c.configure_volume(self.v, {"revisions_to_keep": 0})
        self.commit_n(2)
        self.assertEqual(self.revisions(self.v), [])
        self.assertEqual(harness.revision_files(self.pool.dir, "v1"), [])
        self.assertEqual(self.digest(self.image()), self.contents[-1])

    def test_pool_default_is_one_revision(self):
        v = self.make_volume(self.pool, "v2", SIZE)
        self.assertEqual(self.c.prop(v, VOLUME, "RevisionsToKeep"), 1)
        first = self.commit(v, "v2", 20)
        self.commit(v, "v2", 21)
        self.assertEqual(self.revision_ids(v), ["2"])
        self.assertEqual(self.digest(self.revision_file("v2", "2")), first)

    def test_the_pool_setting_is_the_default_of_new_volumes(self):
        pool = self.make_pool("p2", revisions_to_keep=2)
        v = self.c.create_volume(pool.obj, "v", SIZE, {})
        self.assertEqual(self.c.prop(v, VOLUME, "RevisionsToKeep"), 2)
        for seed in range(3):
            self.commit(v, "v", 30 + seed, pool=pool)
        self.assertEqual(self.revision_ids(v), ["2", "3"])
        self.assert_consistent(pool)

    def test_configure_prunes_at_once(self):
        self.commit_n(3)
        rec = self.recorder()
        self.c.configure_volume(self.v, {"revisions_to_keep": 1})
        self.assertEqual(self.revision_ids(self.v), ["3"])
        self.assertEqual(harness.revision_files(self.pool.dir, "v1"), ["3"])
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(self.v, VOLUME,
                                                                     "Revisions")))
        self.assertEqual(self.digest(self.revision_file("v1", "3")), self.contents[2])

    def test_ids_are_never_reused(self):
        self.commit_n(2)
        self.c.remove_revision(self.v, "2")
        self.commit_n(1, first_seed=40)
        self.assertEqual(self.revision_ids(self.v), ["1", "3"])

    def test_revisions_and_the_counter_survive_sigkill(self):
        self.commit_n(2)
        before = self.revisions(self.v)
        self.restart_daemon()
        self.assertEqual(self.revisions(self.v), before)
        self.commit_n(1, first_seed=40)
        self.assertEqual(self.revision_ids(self.v), ["1", "2", "3"])
        self.assert_consistent()

    def test_revisions_are_announced(self):
        rec = self.recorder()
        self.commit_n(1)
        signal_ = rec.wait_for(harness.properties_changed(self.v, VOLUME, "Revisions"))
        self.assertIsNotNone(signal_)


class CreateSnapshotTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE, revisions_to_keep=3)
        self.content = self.seed_image("v1", 1)

    def test_snapshot_of_the_committed_image(self):
        rec = self.recorder()
        rev = self.c.create_snapshot(self.v)
        self.assertEqual(rev, "1")
        revisions = self.revisions(self.v)
        self.assertEqual([r for r, _ in revisions], ["1"])
        self.assert_near_now_usec(revisions[0][1])
        self.assertEqual(self.digest(self.revision_file("v1", "1")), self.content)
        self.assertEqual(self.digest(self.image()), self.content)
        self.assertEqual(self.state(self.v), "stopped")
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(self.v, VOLUME,
                                                                     "Revisions")))
        self.assert_consistent()

    def test_revision_is_not_changed_by_later_commits(self):
        rev = self.c.create_snapshot(self.v)
        self.commit(self.v, "v1", 2)
        self.assertEqual(self.digest(self.revision_file("v1", rev)), self.content)

    def test_snapshot_of_a_started_volume_takes_the_committed_image(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        written = self.digest(self.work())
        rev = self.c.create_snapshot(self.v)
        self.assertEqual(self.digest(self.revision_file("v1", rev)), self.content)
        self.assertEqual(self.state(self.v), "started")
        self.assertEqual(self.digest(self.work()), written)
        self.c.stop_volume(self.v)
        self.assertEqual(self.digest(self.image()), written)
        self.assert_consistent()

    def test_ids_increase(self):
        ids = [self.c.create_snapshot(self.v) for _ in range(3)]
        self.assertEqual(ids, ["1", "2", "3"])
        self.assertEqual(self.revision_ids(self.v), ids)

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.create_snapshot, self.v,
                          {"bogus": True})


class RemoveRevisionTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE, revisions_to_keep=3)
        self.seed_image("v1", 1)
        self.ids = [self.c.create_snapshot(self.v) for _ in range(3)]

    def test_remove_a_middle_revision(self):
        self.c.remove_revision(self.v, self.ids[1])
        self.assertEqual(self.revision_ids(self.v), [self.ids[0], self.ids[2]])
        self.assertFalse(os.path.exists(self.revision_file("v1", self.ids[1])))
        self.assert_consistent()

    def test_unknown_revision_is_not_found(self):
        for rev in ("4", "0", "999999"):
            with self.subTest(rev=rev):
                self.assert_fails(Error.NotFound, self.c.remove_revision, self.v, rev)

    def test_malformed_revision_is_refused(self):
        for rev in ("", "abc", "../image", "1/2", "-1", ".stage-x", "work"):
            with self.subTest(rev=rev):
                self.assert_fails({Error.NotFound, Error.InvalidArgument},
                                  self.c.remove_revision, self.v, rev)

    def test_removed_twice_is_not_found(self):
        self.c.remove_revision(self.v, self.ids[0])
        self.assert_fails(Error.NotFound, self.c.remove_revision, self.v, self.ids[0])

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.remove_revision, self.v, self.ids[0],
                          {"bogus": True})


class RevertTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE, revisions_to_keep=3)
        self.c1 = self.seed_image("v1", 1)
        self.c2 = self.commit(self.v, "v1", 2)      # revision 1 = c1
        self.c3 = self.commit(self.v, "v1", 3)      # revision 2 = c2; image = c3

    def test_revert_makes_the_revision_the_committed_image(self):
        self.assertEqual(self.revision_ids(self.v), ["1", "2"])
        self.c.revert(self.v, "1")
        self.assertEqual(self.digest(self.image()), self.c1)
        self.assertEqual(self.state(self.v), "stopped")

    def test_revert_keeps_the_current_image_as_the_newest_revision(self):
        self.c.revert(self.v, "1")
        ids = self.revision_ids(self.v)
        self.assertEqual(ids, ["2", "3"], "revision 1 consumed, the old image kept as 3")
        self.assertEqual(self.digest(self.revision_file("v1", "2")), self.c2)
        self.assertEqual(self.digest(self.revision_file("v1", "3")), self.c3)
        self.assert_near_now_usec(self.revisions(self.v)[-1][1])
        self.assert_consistent()

    def test_revert_writes_a_new_committed_image(self):
        old = os.open(self.image(), os.O_RDONLY)
        self.addCleanup(os.close, old)
        self.c.revert(self.v, "2")
        self.assertEqual(self.digest(self.image()), self.c2)
        self.assertEqual(file_sha256(old), self.c3, "the committed image was written in place")

    def test_revert_can_be_undone(self):
        self.c.revert(self.v, "1")
        self.c.revert(self.v, "3")
        self.assertEqual(self.digest(self.image()), self.c3)
        self.assertEqual(self.revision_ids(self.v), ["2", "4"])
        self.assertEqual(self.digest(self.revision_file("v1", "4")), self.c1)

    def test_revert_to_a_snapshot_of_the_current_image(self):
        """The revision and the committed image may be one file (a hard link): still consumed."""
        rev = self.c.create_snapshot(self.v)
        self.c.revert(self.v, rev)
        self.assertEqual(self.digest(self.image()), self.c3)
        self.assertNotIn(rev, self.revision_ids(self.v))
        self.assertFalse(os.path.exists(self.revision_file("v1", rev)),
                         "the reverted revision's file stayed behind")
        self.assertEqual(self.digest(self.revision_file("v1", self.revision_ids(self.v)[-1])),
                         self.c3)
        self.assert_consistent()
        before = self.revisions(self.v)
        self.restart_daemon()
        self.assertEqual(self.revisions(self.v), before)

    def test_revert_of_a_started_volume_is_wrong_state(self):
        self.c.start_volume(self.v)
        self.assert_fails(Error.WrongState, self.c.revert, self.v, "1")

    def test_unknown_revision_is_not_found(self):
        self.assert_fails(Error.NotFound, self.c.revert, self.v, "7")
        self.assert_fails({Error.NotFound, Error.InvalidArgument}, self.c.revert, self.v, "x")

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.revert, self.v, "1", {"bogus": True})

    def test_revert_is_announced(self):
        rec = self.recorder()
        self.c.revert(self.v, "1")
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(self.v, VOLUME,
                                                                     "Revisions")))

    def test_revert_survives_sigkill(self):
        self.c.revert(self.v, "1")
        before = self.revisions(self.v)
        self.restart_daemon()
        self.assertEqual(self.revisions(self.v), before)
        self.assertEqual(self.digest(self.image()), self.c1)
        self.assert_consistent()


# ---------------------------------------------------------------------------
# Resize and the commit protocol
# ---------------------------------------------------------------------------

class ResizeLifecycleTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE)
        self.content = self.seed_image("v1", 1)

    def test_resize_of_a_stopped_volume_writes_a_new_committed_image(self):
        old = os.open(self.image(), os.O_RDONLY)
        self.addCleanup(os.close, old)
        expected = harness.content_sha256(self.image(), 2 * SIZE)
        self.c.resize(self.v, 2 * SIZE)
        self.assertEqual(os.path.getsize(self.image()), 2 * SIZE)
        self.assertEqual(self.digest(self.image()), expected)
        self.assertEqual(os.fstat(old).st_size, SIZE, "the committed image was resized in place")
        self.assertEqual(file_sha256(old), self.content)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), 2 * SIZE)

    def test_shrink_of_a_stopped_volume_keeps_the_head(self):
        expected = harness.content_sha256(self.image(), SIZE // 2)
        self.c.resize(self.v, SIZE // 2, {"allow_shrink": True})
        self.assertEqual(self.digest(self.image()), expected)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), SIZE // 2)

    def test_resize_of_a_started_volume_resizes_the_working_copy(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        image_inode = os.stat(self.image()).st_ino
        expected = harness.content_sha256(self.work(), 2 * SIZE)
        rec = self.recorder()
        self.c.resize(self.v, 2 * SIZE)
        self.assertEqual(os.path.getsize(self.work()), 2 * SIZE)
        self.assertEqual(self.digest(self.work()), expected)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), 2 * SIZE)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.v, VOLUME, "Size", 2 * SIZE)))
        self.assertEqual((os.stat(self.image()).st_ino, os.path.getsize(self.image()),
                          self.digest(self.image())), (image_inode, SIZE, self.content))
        self.c.stop_volume(self.v)
        self.assertEqual(self.digest(self.image()), expected)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), 2 * SIZE)
        self.assert_consistent()

    def test_shrinking_a_started_volume_needs_allow_shrink(self):
        self.c.start_volume(self.v)
        self.assert_fails(Error.WouldShrink, self.c.resize, self.v, SIZE // 2)
        self.c.resize(self.v, SIZE // 2, {"allow_shrink": True})
        self.assertEqual(os.path.getsize(self.work()), SIZE // 2)

    def test_started_volume_resize_keeps_the_working_copy_file(self):
        self.c.start_volume(self.v)
        fd = os.open(self.work(), os.O_RDWR)
        self.addCleanup(os.close, fd)
        self.c.resize(self.v, 2 * SIZE)
        self.assertEqual(os.fstat(fd).st_size, 2 * SIZE,
                         "a running VM's open working copy must follow the resize")

    def test_size_follows_the_working_copy_of_a_volatile_volume(self):
        v = self.make_volume(self.pool, "vol", SIZE, save_on_stop=False)
        self.c.start_volume(v)
        self.c.resize(v, 2 * SIZE)
        self.assertEqual(os.path.getsize(self.work("vol")), 2 * SIZE)
        self.assertEqual(self.c.prop(v, VOLUME, "Size"), 2 * SIZE)


# ---------------------------------------------------------------------------
# Clone
# ---------------------------------------------------------------------------

class CloneTest(LifecycleTestCase):

    def setUp(self):
        super().setUp()
        self.v = self.make_volume(self.pool, "v1", SIZE, revisions_to_keep=2)
        self.content = self.seed_image("v1", 1)

    def test_clone_in_the_same_pool(self):
        rec = self.recorder()
        clone = self.c.clone(self.v, self.pool.obj, "c1")
        self.assertEqual(clone, self.c.get_volume("p1", "c1"))
        props = self.c.props(clone, VOLUME)
        self.assertEqual((props["Name"], props["Pool"], props["Size"], props["State"],
                          props["Revisions"], props["Format"], props["Owner"]),
                         ("c1", self.pool.obj, SIZE, "stopped", [], "raw", 0))
        self.assertEqual(self.digest(self.image("c1")), self.content)
        self.assertIn(clone, self.c.prop(self.pool.obj, POOL, "Volumes"))
        self.assertIsNotNone(rec.wait_for(harness.interfaces_added(clone, VOLUME)))
        self.assert_consistent()

    def test_clone_is_independent(self):
        clone = self.c.clone(self.v, self.pool.obj, "c1")
        written = self.commit(clone, "c1", 2)
        self.assertEqual(self.digest(self.image()), self.content)
        self.commit(self.v, "v1", 3)
        self.assertEqual(self.digest(self.image("c1")), written)

    def test_clone_of_a_started_volume_takes_the_committed_image(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        self.c.clone(self.v, self.pool.obj, "c1")
        self.assertEqual(self.digest(self.image("c1")), self.content)
        self.assertEqual(self.state(self.v), "started")

    def test_clone_of_a_revision(self):
        self.commit(self.v, "v1", 2)     # revision 1 = self.content
        clone = self.c.clone(self.v, self.pool.obj, "c1", {"revision": "1"})
        self.assertEqual(self.digest(self.image("c1")), self.content)
        self.assertEqual(self.revision_ids(self.v), ["1"])
        self.assertEqual(self.c.prop(clone, VOLUME, "Revisions"), [])

    def test_clone_into_another_pool(self):
        other = self.make_pool("p2")
        clone = self.c.clone(self.v, other.obj, "c1")
        self.assertEqual(clone, self.c.get_volume("p2", "c1"))
        self.assertEqual(self.digest(self.image("c1", pool=other)), self.content)
        self.assertEqual(self.c.prop(clone, VOLUME, "Pool"), other.obj)
        self.assert_consistent(other)

    def test_clone_survives_sigkill(self):
        clone = self.c.clone(self.v, self.pool.obj, "c1")
        self.restart_daemon()
        self.assertEqual(self.c.get_volume("p1", "c1"), clone)
        self.assertEqual(self.digest(self.image("c1")), self.content)
        self.assert_consistent()

    def test_existing_name_is_already_exists(self):
        self.make_volume(self.pool, "c1", SIZE)
        self.assert_fails(Error.AlreadyExists, self.c.clone, self.v, self.pool.obj, "c1")

    def test_invalid_names_are_refused(self):
        for label, name in harness.INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_fails(Error.InvalidName, self.c.clone, self.v, self.pool.obj, name)

    def test_unknown_revision_is_not_found(self):
        self.assert_fails(Error.NotFound, self.c.clone, self.v, self.pool.obj, "c1",
                          {"revision": "9"})

    def test_destination_that_is_not_a_pool_is_refused(self):
        for target in (harness.pool_path("nope"), self.v, "/"):
            with self.subTest(target=target):
                self.assert_fails({Error.NotFound, Error.InvalidArgument}, self.c.clone,
                                  self.v, dbus.ObjectPath(target), "c1")

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.clone, self.v, self.pool.obj, "c1",
                          {"bogus": True})
        self.assert_fails(Error.InvalidArgument, self.c.clone, self.v, self.pool.obj, "c1",
                          {"revision": dbus.UInt32(1)})


class CloneAuthorizationTest(LifecycleTestCase):
    """Clone needs read (or read-own) on the source and create on the destination."""

    def setUp(self):
        super().setUp()
        self.rootvol = self.make_volume(self.pool, "rootvol", SIZE)
        self.avol = self.make_volume(self.pool, "avol", SIZE, owner=USER_A.uid)
        self.bvol = self.make_volume(self.pool, "bvol", SIZE, owner=USER_B.uid)
        self.content = self.seed_image("avol", 1)

    def grant(self, *actions):
        self.env.set_polkit_rules(rule_allowing(list(actions), USER_A))

    def clone_as_a(self, source, name="c1"):
        pool = self.pool.obj
        return lambda c: c.clone(source, pool, name)

    def test_denied_without_rules(self):
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.clone_as_a(self.avol))

    def test_create_alone_is_not_enough(self):
        self.grant(VOLUME_CREATE)
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.clone_as_a(self.rootvol))
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.clone_as_a(self.avol))

    def test_read_alone_is_not_enough(self):
        self.grant(VOLUME_READ, VOLUME_READ_OWN)
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.clone_as_a(self.rootvol))

    def test_read_own_and_create_clone_an_own_volume(self):
        self.grant(VOLUME_READ_OWN, VOLUME_CREATE)
        clone = self.assert_user_succeeds(USER_A, self.clone_as_a(self.avol))
        self.assertEqual(self.c.prop(clone, VOLUME, "Owner"), USER_A.uid)
        self.assertEqual(self.digest(self.image("c1")), self.content)

    def test_read_own_does_not_cover_another_users_volume(self):
        self.grant(VOLUME_READ_OWN, VOLUME_CREATE)
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.clone_as_a(self.bvol))
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.clone_as_a(self.rootvol))

    def test_read_and_create_clone_someone_elses_volume(self):
        self.grant(VOLUME_READ, VOLUME_CREATE)
        clone = self.assert_user_succeeds(USER_A, self.clone_as_a(self.rootvol))
        self.assertEqual(self.c.prop(clone, VOLUME, "Owner"), USER_A.uid)
        self.assert_consistent()


# ---------------------------------------------------------------------------
# O(1) working copies on CopyOnWrite pools
# ---------------------------------------------------------------------------

class CopyOnWriteLifecycleTest(LifecycleTestCase):
    """On xfs (reflink=1) and btrfs the working copy shares the committed image's blocks."""

    DATA = 16 * MiB

    def cow_pool(self, fstype):
        fs = self.scratch_fs(fstype)
        pool = self.make_pool("cow", path=fs.path)
        self.assertIs(self.c.prop(pool.obj, POOL, "CopyOnWrite"), True)
        return pool

    def check_working_copy_shares_blocks(self, fstype):
        pool = self.cow_pool(fstype)
        v = self.c.create_volume(pool.obj, "v1", 64 * MiB, {})
        write_pattern(self.image("v1", pool), 1, chunks=16, chunk_size=self.DATA // 16)
        content = self.digest(self.image("v1", pool))
        self.c.start_volume(v)
        work = self.work("v1", pool)
        self.assertEqual(self.digest(work), content)
        self.assertGreaterEqual(harness.shared_bytes(work), self.DATA,
                                "the working copy does not share the image's blocks")
        write_pattern(work, 2, chunks=4, chunk_size=64 * 1024)
        written = self.digest(work)
        self.assertEqual(self.digest(self.image("v1", pool)), content)
        self.c.stop_volume(v)
        self.assertEqual(self.digest(self.image("v1", pool)), written)
        rev = self.revision_ids(v)[-1]
        self.assertEqual(self.digest(self.revision_file("v1", rev, pool)), content)
        self.assertGreaterEqual(harness.shared_bytes(self.image("v1", pool)), self.DATA // 2)
        self.assert_consistent(pool)

    def test_xfs(self):
        self.check_working_copy_shares_blocks("xfs")

    def test_btrfs(self):
        self.check_working_copy_shares_blocks("btrfs")

    def test_snapshot_on_start_shares_the_source_blocks_on_xfs(self):
        pool = self.cow_pool("xfs")
        base = self.c.create_volume(pool.obj, "base", 64 * MiB, {})
        write_pattern(self.image("base", pool), 1, chunks=16, chunk_size=self.DATA // 16)
        v = self.c.create_volume(pool.obj, "v1", 64 * MiB,
                                 {"save_on_stop": False, "snap_on_start": True,
                                  "source": base})
        self.c.start_volume(v)
        self.assertEqual(self.digest(self.work("v1", pool)), self.digest(self.image("base", pool)))
        self.assertGreaterEqual(harness.shared_bytes(self.work("v1", pool)), self.DATA)

    def test_create_snapshot_copies_no_data_on_btrfs(self):
        pool = self.cow_pool("btrfs")
        v = self.c.create_volume(pool.obj, "v1", 64 * MiB, {})
        write_pattern(self.image("v1", pool), 1, chunks=16, chunk_size=self.DATA // 16)
        rev = self.c.create_snapshot(v)
        path, image = self.revision_file("v1", rev, pool), self.image("v1", pool)
        self.assertEqual(self.digest(path), self.digest(image))
        # The committed image is immutable, so a hard link is as good as a reflink.
        self.assertTrue(os.path.samefile(path, image)
                        or harness.shared_bytes(path) >= self.DATA,
                        "the revision is a copy of the committed image")


if __name__ == "__main__":
    harness.main()
