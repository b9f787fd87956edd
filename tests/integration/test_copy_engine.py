#!/usr/bin/python3
"""The dir driver's copy engine on real filesystems (SPEC §4.2 CopyOnWrite, §4.3, §4.4, §8).

Scratch filesystems are made in image files and loop-mounted per test: xfs
with reflink=1 and btrfs share blocks (FICLONE; CopyOnWrite true), ext4 cannot
(sparse copy with copy_file_range and SEEK_DATA/SEEK_HOLE; CopyOnWrite false),
and a copy that is not O(1) runs as a Job that reports progress and can be
cancelled.  Content is checked through the pool's layout: distinct data
written into an image, checksums and the data/hole map compared.
"""

import os

import dbus

import harness
from harness import (JOB, MANAGER, POOL, ROOT_PATH, VOLUME, USER_A, AsyncCall, Error, GiB,
                     MiB, data_segments, dir_volume_file, file_sha256, job_added,
                     job_completed, rule_allowing, shared_bytes, write_pattern)

SMALL = 64 * MiB            # volumes where a copy's cost does not matter
SMALL_DATA = 16 * MiB

# Big enough on ext4 that a copy takes a moment (hundreds of ms): long enough to see the
# Job's progress and to cancel it, small enough to keep the test quick.
BIG = 2 * GiB
BIG_DATA = 512 * MiB
EXT4_BIG_FS = 2 * GiB + 512 * MiB

JOB_PROPERTY_TYPES = {
    "Operation": "s", "Objects": "ao", "Progress": "d", "ProgressValid": "b",
    "BytesTotal": "t", "BytesDone": "t", "Rate": "t", "StartTime": "t",
    "ExpectedEndTime": "t", "StartedByUID": "u", "Cancelable": "b",
}

JOB_CANCEL = "org.cistern.job.cancel"


class CopyEngineTestCase(harness.CisternTestCase):

    def fs_pool(self, fstype, name="p1", size=None, subdir=None, **config):
        fs = self.scratch_fs(fstype, size)
        path = fs.path
        if subdir:
            path = os.path.join(fs.path, subdir)
            os.mkdir(path)
        pool = self.make_pool(name, path=path, **config)
        pool.fs = fs
        return pool

    def image(self, pool, name, *rest):
        return dir_volume_file(pool.dir, name, *(rest or ("image",)))

    def volume_with_data(self, pool, name="v1", size=SMALL, data=SMALL_DATA, seed=1):
        obj = self.c.create_volume(pool.obj, name, size, {})
        if data >= 8 * MiB:
            harness.write_bulk(self.image(pool, name), data, seed)
        else:
            write_pattern(self.image(pool, name), seed)
        self.c.refresh_pool(pool.obj)   # the data came behind the daemon's back
        return obj

    def cow(self, pool):
        return self.c.prop(pool.obj, POOL, "CopyOnWrite")

    def assert_consistent(self, pool):
        self.assertEqual(harness.dir_pool_inconsistencies(self.c, pool.dir, pool.obj), [])

    def assert_same_content(self, a, b):
        self.assertEqual(os.path.getsize(a), os.path.getsize(b))
        self.assertEqual(file_sha256(a), file_sha256(b))


# ---------------------------------------------------------------------------
# reflink=auto|require|never and CopyOnWrite
# ---------------------------------------------------------------------------

class CopyOnWritePropertyTest(CopyEngineTestCase):

    def check(self, fstype, reflink, expected):
        pool = self.fs_pool(fstype, reflink=reflink)
        self.assertIs(self.cow(pool), expected)
        self.assertEqual(self.c.prop(pool.obj, POOL, "Config")["reflink"], reflink)
        return pool

    def test_xfs_auto(self):
        self.check("xfs", "auto", True)

    def test_xfs_require(self):
        self.check("xfs", "require", True)

    def test_xfs_never(self):
        self.check("xfs", "never", False)

    def test_btrfs_auto(self):
        self.check("btrfs", "auto", True)

    def test_btrfs_require(self):
        self.check("btrfs", "require", True)

    def test_ext4_auto(self):
        self.check("ext4", "auto", False)

    def test_ext4_never(self):
        self.check("ext4", "never", False)

    def test_require_on_ext4_is_refused_at_creation(self):
        fs = self.scratch_fs("ext4")
        self.assert_fails(Error.NotSupported, self.c.create_pool, "p1", "dir",
                          {"path": fs.path, "reflink": "require"}, extra_dirs=[fs.path])

    def test_reflink_mode_and_copy_on_write_survive_a_restart(self):
        pool = self.check("btrfs", "never", False)
        self.env.stop_daemon()
        self.assertIs(self.cow(pool), False)
        self.assertEqual(self.c.prop(pool.obj, POOL, "Config")["reflink"], "never")


# ---------------------------------------------------------------------------
# Reflink: O(1) copies that share blocks
# ---------------------------------------------------------------------------

class ReflinkTestMixin:
    FSTYPE = None

    def setUp(self):
        super().setUp()
        self.pool = self.fs_pool(self.FSTYPE)
        self.assertIs(self.cow(self.pool), True)
        self.v = self.volume_with_data(self.pool)

    def assert_shares(self, path, at_least=SMALL_DATA):
        self.assertGreaterEqual(shared_bytes(path), at_least,
                                "%s shares no blocks: not a reflink" % path)

    def test_clone_shares_the_blocks(self):
        self.c.clone(self.v, self.pool.obj, "c1")
        clone = self.image(self.pool, "c1")
        self.assert_same_content(clone, self.image(self.pool, "v1"))
        self.assert_shares(clone)
        self.assert_consistent(self.pool)

    def test_clone_of_a_revision_shares_the_blocks(self):
        rev = self.c.create_snapshot(self.v)
        write_pattern(self.image(self.pool, "v1"), 5)   # the committed image moves on
        self.c.clone(self.v, self.pool.obj, "c1", {"revision": rev})
        clone = self.image(self.pool, "c1")
        self.assert_same_content(clone, self.image(self.pool, "v1", "revisions", rev))
        self.assert_shares(clone)

    def test_clone_into_another_pool_on_the_same_filesystem_shares_the_blocks(self):
        other_dir = os.path.join(self.pool.fs.path, "other")
        os.mkdir(other_dir)
        other = self.make_pool("p2", path=other_dir)
        self.c.clone(self.v, other.obj, "c1")
        clone = self.image(other, "c1")
        self.assert_same_content(clone, self.image(self.pool, "v1"))
        self.assert_shares(clone)
        self.assert_consistent(other)

    def test_clone_then_write_leaves_the_source_alone(self):
        source = file_sha256(self.image(self.pool, "v1"))
        clone = self.c.clone(self.v, self.pool.obj, "c1")
        self.c.start_volume(clone)
        write_pattern(self.image(self.pool, "c1", "work"), 9)
        self.c.stop_volume(clone)
        self.assertEqual(file_sha256(self.image(self.pool, "v1")), source)
        self.assertNotEqual(file_sha256(self.image(self.pool, "c1")), source)


class XfsReflinkTest(ReflinkTestMixin, CopyEngineTestCase):
    FSTYPE = "xfs"


class BtrfsReflinkTest(ReflinkTestMixin, CopyEngineTestCase):
    FSTYPE = "btrfs"


class ReflinkNeverTest(CopyEngineTestCase):
    """reflink=never on a filesystem that could: every copy is a real, sparse copy."""

    def test_clone_on_xfs_never_copies(self):
        pool = self.fs_pool("xfs", reflink="never")
        v = self.volume_with_data(pool)
        rec = self.recorder()
        self.c.clone(v, pool.obj, "c1")
        clone, source = self.image(pool, "c1"), self.image(pool, "v1")
        self.assert_same_content(clone, source)
        self.assertEqual(shared_bytes(clone), 0, "reflink=never, yet the clone shares blocks")
        self.assertEqual(data_segments(clone), data_segments(source))
        self.assertIsNotNone(rec.wait_for(job_added("Clone")),
                             "a real copy was not published as a Job")

    def test_working_copy_on_btrfs_never_copies(self):
        pool = self.fs_pool("btrfs", reflink="never")
        v = self.volume_with_data(pool)
        self.c.start_volume(v)
        work = self.image(pool, "v1", "work")
        self.assert_same_content(work, self.image(pool, "v1"))
        self.assertEqual(shared_bytes(work), 0)


# ---------------------------------------------------------------------------
# Sparse copy: ext4, and across filesystems
# ---------------------------------------------------------------------------

class SparseCopyTest(CopyEngineTestCase):

    def test_clone_on_ext4_keeps_holes(self):
        pool = self.fs_pool("ext4", size=256 * MiB)
        self.assertIs(self.cow(pool), False)
        v = self.volume_with_data(pool, size=1 * GiB, data=SMALL_DATA)
        self.c.clone(v, pool.obj, "c1")
        clone, source = self.image(pool, "c1"), self.image(pool, "v1")
        self.assert_same_content(clone, source)
        self.assertEqual(data_segments(clone), data_segments(source))
        self.assertLess(os.stat(clone).st_blocks * 512, SMALL_DATA + 4 * MiB,
                        "the holes of the source were filled in the copy")
        self.assert_consistent(pool)

    def test_working_copy_and_snapshot_on_ext4_keep_holes(self):
        pool = self.fs_pool("ext4", size=256 * MiB)
        v = self.volume_with_data(pool, size=1 * GiB, data=SMALL_DATA)
        source = self.image(pool, "v1")
        self.c.start_volume(v)
        work = self.image(pool, "v1", "work")
        self.assert_same_content(work, source)
        self.assertEqual(data_segments(work), data_segments(source))
        rev = self.c.create_snapshot(v)
        revision = self.image(pool, "v1", "revisions", rev)
        self.assert_same_content(revision, source)
        self.assertEqual(data_segments(revision), data_segments(source))

    def test_clone_across_filesystems(self):
        xfs = self.fs_pool("xfs", name="px")
        ext4 = self.fs_pool("ext4", name="pe", size=256 * MiB)
        v = self.volume_with_data(xfs)
        rec = self.recorder()
        self.c.clone(v, ext4.obj, "c1")
        self.assertIsNotNone(rec.wait_for(job_added("Clone")),
                             "a copy to another filesystem was not published as a Job")
        clone, source = self.image(ext4, "c1"), self.image(xfs, "v1")
        self.assert_same_content(clone, source)
        self.assertEqual(data_segments(clone), data_segments(source))
        back = self.c.clone(self.c.get_volume("pe", "c1"), xfs.obj, "c2")
        self.assert_same_content(self.image(xfs, "c2"), source)
        self.assertEqual(self.c.prop(back, VOLUME, "Pool"), xfs.obj)
        self.assert_consistent(xfs)
        self.assert_consistent(ext4)

    def test_clone_across_reflink_filesystems_of_different_kinds(self):
        xfs = self.fs_pool("xfs", name="px")
        btrfs = self.fs_pool("btrfs", name="pb")
        v = self.volume_with_data(btrfs)
        self.c.clone(v, xfs.obj, "c1")
        self.assert_same_content(self.image(xfs, "c1"), self.image(btrfs, "v1"))

    def test_no_space_fails_and_leaves_nothing(self):
        pool = self.fs_pool("ext4", size=96 * MiB)
        avail = os.statvfs(pool.dir).f_bavail * os.statvfs(pool.dir).f_frsize
        data = (avail * 2 // 3) // MiB * MiB
        v = self.c.create_volume(pool.obj, "v1", 2 * data, {})
        harness.write_bulk(self.image(pool, "v1"), data, 1)
        before = file_sha256(self.image(pool, "v1"))
        self.assert_fails(Error.NoSpace, self.c.clone, v, pool.obj, "c1",
                          extra_dirs=[pool.fs.path])
        self.assertEqual(harness.staging_entries(pool.fs.path), [])
        self.assertEqual(file_sha256(self.image(pool, "v1")), before)
        free_after = os.statvfs(pool.dir).f_bavail * os.statvfs(pool.dir).f_frsize
        self.assertGreater(free_after, avail - data - 4 * MiB,
                           "space of the failed copy was not given back")
        self.assert_fails(Error.NoSpace, self.c.start_volume, v, extra_dirs=[pool.fs.path])
        self.assertEqual(self.c.prop(v, VOLUME, "State"), "stopped")


# ---------------------------------------------------------------------------
# Jobs: progress, completion, cancel
# ---------------------------------------------------------------------------

class JobTestCase(CopyEngineTestCase):
    """ext4 pool with a 2 GiB sparse volume holding 512 MiB of data."""

    def setUp(self):
        super().setUp()
        self.pool = self.fs_pool("ext4", size=EXT4_BIG_FS)
        self.v = self.volume_with_data(self.pool, size=BIG, data=BIG_DATA)
        self.assertIs(self.cow(self.pool), False)

    def job_history(self, rec, job):
        """Every value each property of job took, in order, from the recorded signals."""
        history = {}
        for s in rec.signals:
            if s.interface == harness.OBJECT_MANAGER and s.member == "InterfacesAdded" \
                    and s.args[0] == job and JOB in s.args[1]:
                for k, v in s.args[1][JOB].items():
                    history.setdefault(k, []).append(v)
            elif s.interface == harness.PROPERTIES and s.member == "PropertiesChanged" \
                    and s.path == job and s.args[0] == JOB:
                for k, v in s.args[1].items():
                    history.setdefault(k, []).append(v)
        return history

    def run_with_job(self, operation, method, sig, *args, path=None):
        """Calls method on path (default: the volume); returns (call, job path, recorder)."""
        rec = self.recorder()
        call = AsyncCall(self.env.bus, path or self.v, VOLUME, method, sig, *args)
        added = rec.wait_for(job_added(operation), timeout=60)
        self.assertIsNotNone(added, "no %s Job appeared (call: %s)" % (operation, call))
        return call, added.args[0], rec

    def check_completed_job(self, call, job, rec, operation):
        self.assertTrue(call.wait(), "no reply")
        self.assertTrue(call.ok, str(call))
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertEqual(completed.args, (True, ""))
        removed = rec.wait_for(harness.interfaces_removed(job, JOB))
        self.assertIsNotNone(removed, "the job object did not vanish")
        self.assertLess(rec.signals.index(completed), rec.signals.index(removed))
        self.assert_fails({Error.UnknownObject, Error.UnknownMethod, Error.NotFound},
                          self.c.props, job, JOB)
        self.assertNotIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))

        history = self.job_history(rec, job)
        self.assertEqual(history["Operation"], [operation])
        self.assertIn(self.v, history["Objects"][0])
        self.assertEqual(history["StartedByUID"], [0])
        self.assertEqual(history["Cancelable"][0], True)
        self.assert_near_now_usec(history["StartTime"][0])
        totals = history["BytesTotal"]
        self.assertGreaterEqual(max(totals), BIG_DATA)
        done = history["BytesDone"]
        self.assertEqual(done, sorted(done), "BytesDone went backwards")
        self.assertTrue(any(0 < d for d in done),
                        "BytesDone never grew while the job ran: %s" % done)
        self.assertLessEqual(max(done), max(totals))
        self.assertTrue(all(0.0 <= p <= 1.0 for p in history["Progress"]))
        self.assertEqual(history["Progress"], sorted(history["Progress"]))
        self.assertTrue(any(p > 0 for p in history["Progress"]), history["Progress"])
        self.assertTrue(any(r > 0 for r in history.get("Rate", [])),
                        "Rate was never reported: %s" % history.get("Rate"))
        self.assertTrue(any(h > 0 for h in history.get("ProgressValid", [])))
        jobs_changes = [s.args[1]["Jobs"] for s in rec.signals
                        if s.interface == harness.PROPERTIES and s.path == ROOT_PATH
                        and s.member == "PropertiesChanged" and "Jobs" in s.args[1]]
        self.assertTrue(any(job in jobs for jobs in jobs_changes),
                        "Manager.Jobs never listed the job")
        return history

    def cancel_and_check(self, call, job, rec, extra_check=None):
        self.c.cancel_job(job)
        self.assertTrue(call.wait(), "no reply after Cancel")
        self.assertEqual(call.error, Error.Cancelled, str(call))
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertIs(completed.args[0], False)
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(job, JOB)))
        self.assertEqual(harness.staging_entries(self.pool.fs.path), [])
        self.assert_consistent(self.pool)


class JobProgressTest(JobTestCase):

    def test_clone_job(self):
        source = file_sha256(self.image(self.pool, "v1"))
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        raw = self.c.raw_props(job, JOB)
        self.assertEqual({k: harness.signature_of(raw[k]) for k in JOB_PROPERTY_TYPES
                          if k in raw}, JOB_PROPERTY_TYPES)
        self.assertIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))
        self.assertIn(JOB, self.c.managed_objects()[job])
        self.check_completed_job(call, job, rec, "Clone")
        self.assertEqual(call.value, self.c.get_volume("p1", "c1"))
        self.assertEqual(file_sha256(self.image(self.pool, "c1")), source)
        self.assertEqual(data_segments(self.image(self.pool, "c1")),
                         data_segments(self.image(self.pool, "v1")))
        self.assert_consistent(self.pool)

    def test_start_job(self):
        call, job, rec = self.run_with_job("Start", "Start", "a{sv}", harness.variant_dict({}))
        self.check_completed_job(call, job, rec, "Start")
        self.assertEqual(self.c.prop(self.v, VOLUME, "State"), "started")
        self.assert_same_content(self.image(self.pool, "v1", "work"),
                                 self.image(self.pool, "v1"))

    def test_resize_of_a_stopped_volume_job(self):
        call, job, rec = self.run_with_job("Resize", "Resize", "ta{sv}",
                                           dbus.UInt64(BIG + 64 * MiB),
                                           harness.variant_dict({}))
        self.check_completed_job(call, job, rec, "Resize")
        self.assertEqual(os.path.getsize(self.image(self.pool, "v1")), BIG + 64 * MiB)

    def test_the_event_loop_answers_while_the_copy_runs(self):
        other = self.c.create_volume(self.pool.obj, "other", MiB, {})
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        self.assertEqual(self.c.prop(other, VOLUME, "Name"), "other")
        self.assertEqual(self.c.prop(self.v, VOLUME, "State"), "stopped")
        self.assertFalse(call.finished or rec.matching(job_completed(job)),
                         "the property read waited for the copy")
        call.wait()
        self.assertTrue(call.ok, str(call))

    def test_a_volume_with_a_job_is_busy(self):
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        try:
            with self.assertRaises(dbus.exceptions.DBusException) as cm:
                self.c.remove_volume(self.v)
            self.assertEqual(cm.exception.get_dbus_name(), Error.Busy)
            with self.assertRaises(dbus.exceptions.DBusException) as cm:
                self.c.remove_pool("p1")
            self.assertEqual(cm.exception.get_dbus_name(), Error.Busy)
        finally:
            call.wait()
        self.assertTrue(call.ok, str(call))


class JobCancelTest(JobTestCase):

    def test_cancel_clone(self):
        before = self.snapshot_state(extra_dirs=[self.pool.fs.path])
        source = file_sha256(self.image(self.pool, "v1"))
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        self.cancel_and_check(call, job, rec)
        self.assert_fails(Error.NotFound, self.c.get_volume, "p1", "c1")
        self.assertFalse(os.path.exists(dir_volume_file(self.pool.dir, "c1")))
        self.assertEqual(self.snapshot_state(extra_dirs=[self.pool.fs.path]), before)
        self.assertEqual(file_sha256(self.image(self.pool, "v1")), source)
        self.c.clone(self.v, self.pool.obj, "c1")      # the name is free, nothing is stuck
        self.assertEqual(file_sha256(self.image(self.pool, "c1")), source)

    def test_cancel_start(self):
        before = self.snapshot_state(extra_dirs=[self.pool.fs.path])
        call, job, rec = self.run_with_job("Start", "Start", "a{sv}", harness.variant_dict({}))
        self.cancel_and_check(call, job, rec)
        self.assertEqual(self.c.prop(self.v, VOLUME, "State"), "stopped")
        self.assertFalse(os.path.exists(self.image(self.pool, "v1", "work")))
        self.assertEqual(self.snapshot_state(extra_dirs=[self.pool.fs.path]), before)

    def test_cancel_resize(self):
        before = self.snapshot_state(extra_dirs=[self.pool.fs.path])
        call, job, rec = self.run_with_job("Resize", "Resize", "ta{sv}",
                                           dbus.UInt64(BIG + 64 * MiB),
                                           harness.variant_dict({}))
        self.cancel_and_check(call, job, rec)
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), BIG)
        self.assertEqual(self.snapshot_state(extra_dirs=[self.pool.fs.path]), before)

    def canceller(self, user):
        """A child running as user, connected already, that cancels the job it is sent."""
        read_fd, write_fd = os.pipe()

        def cancel(c):
            os.close(write_fd)
            with os.fdopen(read_fd) as f:
                job = f.readline().strip()
            return c.cancel_job(job)
        child = self.start_as_user(user, cancel)
        os.close(read_fd)
        pipe = os.fdopen(write_fd, "w")
        self.addCleanup(pipe.close)

        def send(job):
            pipe.write(job + "\n")
            pipe.flush()
            return child.outcome()
        return send

    def test_another_user_cannot_cancel(self):
        cancel = self.canceller(USER_A)
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        outcome = cancel(job)
        self.assertEqual(outcome.error, Error.NotAuthorized, str(outcome))
        self.assertTrue(call.wait())
        self.assertTrue(call.ok, "the job did not survive a refused Cancel: %s" % call)
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed)
        self.assertEqual(completed.args, (True, ""))

    def test_another_user_with_job_cancel_can_cancel(self):
        self.env.set_polkit_rules(rule_allowing(JOB_CANCEL, USER_A))
        cancel = self.canceller(USER_A)
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        outcome = cancel(job)
        self.assertTrue(outcome.ok, str(outcome))
        self.assertTrue(call.wait())
        self.assertEqual(call.error, Error.Cancelled, str(call))
        self.assertEqual(harness.staging_entries(self.pool.fs.path), [])

    def test_cancel_unknown_option_is_invalid(self):
        call, job, rec = self.run_with_job("Clone", "Clone", "osa{sv}", self.pool.obj, "c1",
                                           harness.variant_dict({}))
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            self.c.cancel_job(job, {"bogus": True})
        self.assertEqual(cm.exception.get_dbus_name(), Error.InvalidArgument)
        self.assertTrue(call.wait())
        self.assertTrue(call.ok, str(call))

    def test_disconnect_of_the_caller_does_not_leave_a_stuck_job(self):
        """The starter goes away mid-copy: the job ends (either way) and leaves no staging."""
        pool, v = self.pool.obj, self.v
        rec = self.recorder()
        child = self.start_as_user(harness.TestUser("root", 0, 0),
                                   lambda c: c.clone(v, pool, "c1"))
        added = rec.wait_for(job_added("Clone"), timeout=60)
        self.assertIsNotNone(added)
        child.kill()
        completed = rec.wait_for(job_completed(added.args[0]), timeout=60)
        self.assertIsNotNone(completed)
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(added.args[0], JOB)))
        self.assertEqual(harness.staging_entries(self.pool.fs.path), [],
                         "Completed%r was emitted while the copy still ran" % (completed.args,))
        if completed.args[0]:
            self.assertEqual(self.c.get_volume("p1", "c1"), harness.volume_path("p1", "c1"))
        self.assert_consistent(self.pool)


if __name__ == "__main__":
    harness.main()
