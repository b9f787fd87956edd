#!/usr/bin/python3
"""qcow2 volumes (SPEC §4.3, §6): CreateVolume format=qcow2, Size and Info read from the image's
own header by cistern's inspector, Resize, Start/Stop, revisions and Clone for qcow2 files,
Convert raw <-> qcow2 as a Job, and a raw volume whose bytes look like qcow2 staying raw."""

import json
import os
import signal
import struct

import harness
from harness import (QEMU_IMG, USER_A, VOLUME, AsyncCall, Error, MiB, SignalRecorder, dir_volume_file,
                     guest_bytes, job_added, job_completed, qemu_image_info, qemu_img)
QCOW2_MAGIC = b"QFI\xfb"


def write_at(path, offset, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def evil_qcow2_header(backing):
    """A qcow2 v2 header naming `backing` as its backing file, as a guest could write into the first
    sector of its raw disk (OpenStack bug 1221190)."""
    name = backing.encode()
    header = struct.pack(">4sIQIIQIIQQIIQ", QCOW2_MAGIC, 2, 72, len(name), 16, 64 * MiB,
                         0, 1, 3 * 65536, 65536, 1, 1, 2 * 65536)
    return header + name


class Qcow2TestCase(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        if not os.access(QEMU_IMG, os.X_OK):
            self.skipTest("qemu-img is not installed")
        self.pool = self.make_pool("p1")

    def file(self, name, *names):
        return dir_volume_file(self.pool.dir, name, *(names or ("image",)))

    def prop(self, obj, name):
        return self.c.prop(obj, VOLUME, name)

    def make_canary(self):
        """A host file an image could name, read at 1 s past the epoch: reading it shows."""
        canary = os.path.join(self.env.tmp, "canary")   # outside what snapshot_state() reads
        with open(canary, "wb") as f:
            f.write(b"host secret" * 100)
        os.utime(canary, (1, 1))
        return canary

    def assert_canary_untouched(self):
        self.assertEqual(os.stat(self.canary).st_atime, 1, "the canary file was read")

    def restart_daemon(self):
        """SIGKILL: whatever it had not written is lost; the next call activates it again."""
        self.env.kill_daemon()


class CreateTest(Qcow2TestCase):

    def test_a_qcow2_volume_is_a_qcow2_file_of_the_virtual_size(self):
        v = self.make_volume(self.pool, "q", 64 * MiB, format="qcow2")
        self.assertEqual(self.prop(v, "Format"), "qcow2")
        self.assertEqual(self.prop(v, "Size"), 64 * MiB)
        with open(self.file("q"), "rb") as f:
            self.assertEqual(f.read(4), QCOW2_MAGIC)
        self.assertLess(os.path.getsize(self.file("q")), MiB, "a new qcow2 image holds no data")
        info = qemu_image_info(self.file("q"), "qcow2")
        self.assertEqual(info["virtual-size"], 64 * MiB)
        self.assertNotIn("backing-filename", info)

    def test_info_reports_the_header(self):
        v = self.make_volume(self.pool, "q", 64 * MiB, format="qcow2")
        info = self.c.info(v)
        expected = qemu_image_info(self.file("q"), "qcow2")
        self.assertEqual(info["format"], "qcow2")
        self.assertEqual(info["virtual_size"], 64 * MiB)
        self.assertEqual(info["cluster_size"], expected["cluster-size"])
        self.assertEqual(info["compat"], expected["format-specific"]["data"]["compat"])
        self.assertEqual(info["compressed_clusters"], 0)
        self.assertFalse(info["dirty"])
        self.assertGreater(info["actual_size"], 0)

    def test_raw_info_has_no_qcow2_details(self):
        v = self.make_volume(self.pool, "r", MiB)
        self.assertEqual(set(self.c.info(v)), {"format", "virtual_size", "actual_size"})

    def test_an_unknown_format_is_refused(self):
        self.assert_fails(Error.InvalidArgument, self.make_volume, self.pool, "x", MiB, format="vmdk")

    def test_preallocated_qcow2_allocates_its_blocks(self):
        v = self.make_volume(self.pool, "q", 8 * MiB, format="qcow2", preallocate=True)
        self.assertGreaterEqual(self.prop(v, "Usage"), 8 * MiB)


class ResizeTest(Qcow2TestCase):

    def test_grow_and_shrink_change_the_virtual_size(self):
        v = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        self.c.resize(v, 32 * MiB)
        self.assertEqual(self.prop(v, "Size"), 32 * MiB)
        self.assertEqual(qemu_image_info(self.file("q"), "qcow2")["virtual-size"], 32 * MiB)
        self.assert_fails(Error.WouldShrink, self.c.resize, v, 8 * MiB)
        self.c.resize(v, 8 * MiB, {"allow_shrink": True})
        self.assertEqual(qemu_image_info(self.file("q"), "qcow2")["virtual-size"], 8 * MiB)

    def test_a_started_volume_resizes_its_working_copy(self):
        v = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        self.c.start_volume(v)
        self.c.resize(v, 24 * MiB)
        self.assertEqual(qemu_image_info(self.file("q", "work"), "qcow2")["virtual-size"], 24 * MiB)
        self.c.stop_volume(v)
        self.assertEqual(self.prop(v, "Size"), 24 * MiB)


class LifeCycleTest(Qcow2TestCase):

    def test_stop_commits_the_working_copy_and_keeps_a_revision(self):
        v = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        self.c.start_volume(v)
        work = self.file("q", "work")
        qemu_img("resize", "-f", "qcow2", work, str(20 * MiB))   # the "VM" changes it
        self.c.stop_volume(v)
        self.assertEqual(self.prop(v, "Size"), 20 * MiB)
        self.assertEqual(len(self.prop(v, "Revisions")), 1)
        self.assertEqual(self.prop(v, "Format"), "qcow2")

    def test_a_volatile_volume_starts_on_an_empty_qcow2_image(self):
        v = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2", save_on_stop=False)
        self.c.start_volume(v)
        info = qemu_image_info(self.file("q", "work"), "qcow2")
        self.assertEqual((info["format"], info["virtual-size"]), ("qcow2", 16 * MiB))
        self.c.stop_volume(v)
        self.assertFalse(os.path.exists(self.file("q", "work")))

    def test_a_snapshot_of_a_raw_source_is_converted_to_the_volumes_format(self):
        src = self.make_volume(self.pool, "src", 4 * MiB)
        write_at(self.file("src"), MiB, b"guest data")
        snap = self.make_volume(self.pool, "snap", 4 * MiB, format="qcow2", snap_on_start=True,
                                source=src)
        self.c.start_volume(snap)
        work = self.file("snap", "work")
        self.assertEqual(qemu_image_info(work, "qcow2")["format"], "qcow2")
        self.assertEqual(guest_bytes(work, "qcow2")[MiB:MiB + 10], b"guest data")

    def test_a_snapshot_that_converts_runs_as_a_job_even_where_copies_are_instant(self):
        fs = self.scratch_fs("xfs")
        pool = self.make_pool("reflink", path=fs.path)
        self.assertIs(self.c.prop(pool.obj, harness.POOL, "CopyOnWrite"), True)
        src = self.make_volume(pool, "src", 4 * MiB)
        snap = self.make_volume(pool, "snap", 4 * MiB, format="qcow2", snap_on_start=True, source=src)
        rec = SignalRecorder(self.env.bus)
        self.c.start_volume(snap)
        self.assertIsNotNone(rec.wait_for(job_added("Start")), "a converting Start published no job")

    def test_clone_keeps_the_format(self):
        v = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        c = self.c.clone(v, self.pool.obj, "c")
        self.assertEqual((self.prop(c, "Format"), self.prop(c, "Size")), ("qcow2", 16 * MiB))


class ConvertTest(Qcow2TestCase):

    def convert(self, obj, fmt, options=None):
        self.c.convert(obj, fmt, options)

    def raw_volume_with_data(self, name="v", size=8 * MiB):
        v = self.make_volume(self.pool, name, size)
        write_at(self.file(name), 0, b"first sector")
        write_at(self.file(name), 5 * MiB, os.urandom(64 * 1024))
        return v, guest_bytes(self.file(name), "raw")

    def test_raw_to_qcow2_keeps_the_content_and_the_old_image_as_a_revision(self):
        v, content = self.raw_volume_with_data()
        self.convert(v, "qcow2")
        self.assertEqual(self.prop(v, "Format"), "qcow2")
        self.assertEqual(self.prop(v, "Size"), 8 * MiB)
        self.assertEqual(guest_bytes(self.file("v"), "qcow2"), content)
        (rev, _), = self.prop(v, "Revisions")
        self.assertEqual(guest_bytes(self.file("v", "revisions", rev), "raw"), content)
        self.assertEqual(self.c.info(v)["format"], "qcow2")

    def assert_raw_across_a_restart(self, v, content):
        """v is a raw volume holding content, and still is after a SIGKILL; its object now."""
        def check(v):
            self.assertEqual(self.prop(v, "Format"), "raw")
            with open(self.file("v"), "rb") as f:
                self.assertEqual(f.read(), content)
        check(v)
        self.restart_daemon()
        v = self.c.get_volume("p1", "v")
        check(v)
        return v

    def test_qcow2_to_raw_and_back_after_a_restart(self):
        v, content = self.raw_volume_with_data()
        self.convert(v, "qcow2", {"compress": True})
        self.assertGreater(self.c.info(v)["compressed_clusters"], 0)
        self.convert(v, "raw")
        v = self.assert_raw_across_a_restart(v, content)

    def test_revert_to_a_revision_of_the_other_format_restores_that_format(self):
        v, content = self.raw_volume_with_data()
        self.convert(v, "qcow2")
        (rev, _), = self.prop(v, "Revisions")
        self.c.revert(v, rev)
        v = self.assert_raw_across_a_restart(v, content)
        revs = self.prop(v, "Revisions")
        self.assertEqual(len(revs), 1)
        self.assertEqual(qemu_image_info(self.file("v", "revisions", revs[0][0]), "qcow2")["format"], "qcow2")

    def crash_between_commit_and_record(self, committed):
        """volume.json as a Convert to qcow2 leaves it when cisternd dies after its record and
        (committed) or before (not committed) the rename of the new image over the old."""
        v, content = self.raw_volume_with_data()
        self.env.stop_daemon()
        staging = self.file("v", ".stage-crashtest")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", self.file("v"), staging)
        meta_path = self.file("v", "volume.json")
        with open(meta_path) as f:
            meta = json.load(f)
        meta["format_change"] = {"ino": os.stat(staging).st_ino, "format": "qcow2"}
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        if committed:
            os.rename(staging, self.file("v"))
        v = self.c.get_volume("p1", "v")
        return v, content

    def test_a_committed_change_of_format_is_found_after_a_crash(self):
        v, content = self.crash_between_commit_and_record(True)
        self.assertEqual(self.prop(v, "Format"), "qcow2")
        self.assertEqual(self.prop(v, "Size"), 8 * MiB)
        self.assertEqual(guest_bytes(self.file("v"), "qcow2"), content)

    def test_an_uncommitted_change_of_format_is_not(self):
        v, content = self.crash_between_commit_and_record(False)
        self.assertEqual(self.prop(v, "Format"), "raw")
        with open(self.file("v"), "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertEqual([n for n in os.listdir(self.file("v", "")) if n.startswith(".stage-")], [])

    def test_clone_of_a_revision_takes_the_revisions_format(self):
        v, content = self.raw_volume_with_data()
        self.convert(v, "qcow2")
        (rev, _), = self.prop(v, "Revisions")
        c = self.c.clone(v, self.pool.obj, "c", {"revision": rev})
        self.assertEqual(self.prop(c, "Format"), "raw")
        self.assertEqual(guest_bytes(self.file("c"), "raw"), content)

    def test_convert_runs_as_a_job(self):
        v, _ = self.raw_volume_with_data()
        rec = SignalRecorder(self.env.bus)
        call = AsyncCall(self.env.bus, v, VOLUME, "Convert", "sa{sv}", "qcow2", {})
        self.assertTrue(call.wait(), "Convert never answered")
        self.assertTrue(call.ok, str(call))
        added = rec.wait_for(job_added("Convert"))
        self.assertIsNotNone(added, "no Convert job")
        self.assertIsNotNone(rec.wait_for(job_completed(added.args[0])))

    def test_cancel_leaves_no_trace(self):
        v = self.make_volume(self.pool, "big", 256 * MiB)
        with open(self.file("big"), "r+b") as f:
            for _ in range(16):
                f.write(os.urandom(4 * MiB))
        before = self.snapshot_state()
        rec = SignalRecorder(self.env.bus)
        call = AsyncCall(self.env.bus, v, VOLUME, "Convert", "sa{sv}", "qcow2", {})
        added = rec.wait_for(job_added("Convert"), timeout=30)
        self.assertIsNotNone(added, "no Convert job")
        harness.poll_until(lambda: harness.qemu_img_converts() or call.finished, 30, "qemu-img convert to run")
        pids = harness.qemu_img_converts()
        self.assertTrue(pids, "the convert ended before it could be held")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)       # held mid-way; the cancel kills it all the same
        self.c.cancel_job(added.args[0])
        self.assertTrue(call.wait(), "Convert never answered")
        self.assertEqual(call.error, Error.Cancelled, str(call))
        self.assertIsNotNone(rec.wait_for(job_completed(added.args[0])))
        harness.poll_until(lambda: not harness.qemu_img_converts(), 10, "qemu-img to be gone")
        self.assertEqual(before, self.snapshot_state())

    def test_bad_requests_change_nothing(self):
        v, _ = self.raw_volume_with_data()
        self.assert_fails(Error.InvalidArgument, self.convert, v, "vmdk")
        self.assert_fails(Error.InvalidArgument, self.convert, v, "raw", {"compress": True})
        self.assert_fails(Error.InvalidArgument, self.convert, v, "qcow2", {"bogus": True})
        self.c.start_volume(v)
        self.assert_fails(Error.WrongState, self.convert, v, "qcow2")

    def test_same_format_changes_nothing(self):
        v, _ = self.raw_volume_with_data()
        before = self.snapshot_state()
        self.convert(v, "raw")
        self.assertEqual(before, self.snapshot_state())

    def test_unprivileged_caller_is_denied(self):
        v, _ = self.raw_volume_with_data()
        self.assert_user_fails(Error.NotAuthorized, USER_A,
                               lambda c: c.convert(v, "qcow2"))


class RawStaysRawTest(Qcow2TestCase):
    """A raw volume whose guest wrote a qcow2 header naming a host file: cistern never reads it as
    qcow2, so qemu never opens the canary."""

    def setUp(self):
        super().setUp()
        self.canary = self.make_canary()
        self.v = self.make_volume(self.pool, "r", 4 * MiB)
        write_at(self.file("r"), 0, evil_qcow2_header(self.canary))
        self.bytes = guest_bytes(self.file("r"), "raw")


    def test_info_and_size_are_raw(self):
        info = self.c.info(self.v)
        self.assertEqual((info["format"], info["virtual_size"]), ("raw", 4 * MiB))
        self.assertEqual(self.prop(self.v, "Size"), 4 * MiB)
        self.assert_canary_untouched()

    def test_resize_and_convert_treat_the_bytes_as_raw(self):
        self.c.resize(self.v, 6 * MiB)
        self.assertEqual(os.path.getsize(self.file("r")), 6 * MiB)
        self.c.convert(self.v, "qcow2")
        converted = guest_bytes(self.file("r"), "qcow2")
        self.assertEqual(converted[:len(self.bytes)], self.bytes)
        self.assertNotIn("backing-filename", qemu_image_info(self.file("r"), "qcow2"))
        self.assert_canary_untouched()

    def test_a_restart_does_not_rederive_the_format(self):
        self.restart_daemon()
        v = self.c.get_volume("p1", "r")
        self.assertEqual((self.prop(v, "Format"), self.prop(v, "Size")), ("raw", 4 * MiB))
        self.assert_canary_untouched()


class RewrittenWorkingCopyTest(Qcow2TestCase):
    """A VM runner may write a started qcow2 volume's working copy whole, header included (Open):
    a header naming a backing file then never reaches qemu, whatever asks."""

    def setUp(self):
        super().setUp()
        self.canary = self.make_canary()
        self.v = self.make_volume(self.pool, "q", 4 * MiB, format="qcow2")
        self.c.start_volume(self.v)
        evil = os.path.join(self.env.tmp, "evil.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", "-b", self.canary, "-F", "raw", evil, str(4 * MiB))
        os.utime(self.canary, (1, 1))
        with open(evil, "rb") as src, open(self.file("q", "work"), "r+b") as dst:
            dst.write(src.read())
            dst.truncate()

    def tearDown(self):
        self.assert_canary_untouched()
        super().tearDown()

    def test_resize_and_info_refuse_it(self):
        self.assert_fails(Error.UnsafeImage, self.c.resize, self.v, 8 * MiB)
        self.assert_fails(Error.UnsafeImage, self.c.info, self.v)

    def test_attach_refuses_it(self):
        self.assert_fails(Error.UnsafeImage, self.c.attach, self.v)
        self.assertEqual(self.prop(self.v, "Device"), "")

    def test_once_committed_the_volume_stays_and_refuses_it(self):
        self.c.stop_volume(self.v)
        self.restart_daemon()
        v = self.c.get_volume("p1", "q")
        self.assertEqual(self.prop(v, "Format"), "qcow2")
        self.assert_fails(Error.UnsafeImage, self.c.convert, v, "raw")
        self.assert_fails(Error.UnsafeImage, self.c.info, v)
        (rev, _), = self.prop(v, "Revisions")
        self.c.revert(v, rev)           # the way back to the image before
        self.assertEqual(self.prop(v, "Size"), 4 * MiB)


if __name__ == "__main__":
    harness.main()
