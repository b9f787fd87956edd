#!/usr/bin/python3
"""Export, ExportBegin and ExportEnd (SPEC §4.3), their Job (§4.4), authorization (§5) and
the checks of the file descriptors callers pass (§6).

Content goes in through a dir pool's layout, as a VM would write it: the test starts a
volume, writes distinct data into <pool>/volumes/<name>/work at several offsets (holes
between them) and stops it, which commits.  What comes out of an export is compared with
the committed image (or revision) by checksum and, for sparse exports into a regular file,
by its data/hole map.  Exports into pipes and sockets are read by the test itself, so it
decides when the daemon's copy may go on: that is how a Stop lands in the middle of an
export, and a Cancel too, without depending on timing.
"""

import errno
import fcntl
import hashlib
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import termios
import time

import dbus
from gi.repository import GLib

import harness
from harness import (JOB, MANAGER, ROOT_PATH, VOLUME, USER_A, USER_B, AsyncCall, Error, GiB,
                     KiB, MiB, TestUser, data_segments, dir_volume_file, file_sha256,
                     job_added, job_completed, rule_allowing, write_pattern)

SIZE = 16 * MiB
ROOT = TestUser("root", 0, 0)

VOLUME_READ = "org.cistern.volume.read"
VOLUME_READ_OWN = "org.cistern.volume.read-own"

# On ext4 (no reflink) a copy of this much data takes long enough that a Stop or a Cancel
# sent when the Job appears arrives while it runs.
BIG = 1 * GiB
BIG_DATA = 384 * MiB
EXT4_BIG_FS = 2 * GiB


def close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass




def drop_cache(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def same_bytes(a, b):
    """True when files a and b hold the same bytes (holes read as zeros)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(8 * MiB), fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True


def queued_bytes(fd):
    """Bytes waiting in a pipe (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def allocated(path):
    return os.stat(path).st_blocks * 512


class Stream:
    """The test's end of a pipe or socket the daemon exports into.

    Reads while the main loop keeps dispatching (method replies, signals), so a test
    decides how much the daemon may write before it stalls on a full pipe."""

    def __init__(self, fd):
        self.fd = fd
        self.sha = hashlib.sha256()
        self.length = 0
        self.eof = False

    def read(self, until=None, timeout=60):
        """Read to EOF, or until `until` bytes came in all.  False on timeout."""
        context = GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        while not self.eof and (until is None or self.length < until):
            while context.pending():
                context.iteration(False)
            if time.monotonic() > deadline:
                return False
            ready, _, _ = select.select([self.fd], [], [], 0.02)
            if ready:
                want = MiB if until is None else min(MiB, until - self.length)
                data = os.read(self.fd, want)
                if not data:
                    self.eof = True
                self.sha.update(data)
                self.length += len(data)
        harness.dispatch_pending()
        return True

    def hexdigest(self):
        return self.sha.hexdigest()


class ExportTestCase(harness.CisternTestCase):
    """Pool p1 in the harness's pool directory (tmpfs); v1 holds committed data (seed 1)."""

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")
        self.v = self.make_volume(self.pool, "v1", SIZE)
        self.committed = self.commit(self.v, "v1", 1)
        # Output files of root's tests, on the pool's filesystem; open to the test users.
        self.out_dir = tempfile.mkdtemp(prefix="export-out-", dir=self.env.tmp)
        os.chmod(self.out_dir, 0o1777)
        self.addCleanup(shutil.rmtree, self.out_dir, True)

    # -- layout --

    def image(self, name="v1", *rest, pool=None):
        return dir_volume_file((pool or self.pool).dir, name, *(rest or ("image",)))

    def work(self, name="v1", pool=None):
        return self.image(name, "work", pool=pool)

    def commit(self, obj, name, seed, pool=None):
        """Start, write data unique to seed into the working copy, Stop: the committed digest."""
        self.c.start_volume(obj)
        write_pattern(self.work(name, pool), seed)
        digest = file_sha256(self.work(name, pool))
        self.c.stop_volume(obj)
        self.assertEqual(file_sha256(self.image(name, pool=pool)), digest)
        return digest

    # -- fds --

    def track(self, fd):
        """fd is closed when the test ends, unless close() closed it before."""
        if not hasattr(self, "_fds"):
            self._fds = set()
            self.addCleanup(lambda: [close_quietly(fd) for fd in self._fds])
        self._fds.add(fd)
        return fd

    def close(self, fd):
        self._fds.discard(fd)
        os.close(fd)

    def out_path(self, name="out.img", directory=None):
        return os.path.join(directory or self.out_dir, name)

    def open_out(self, path, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
        return self.track(os.open(path, flags | os.O_CLOEXEC, 0o644))

    def pipe(self):
        r, w = os.pipe2(os.O_CLOEXEC)
        return self.track(r), self.track(w)

    def export_to_file(self, obj, path, options=None):
        fd = self.open_out(path)
        self.c.export(obj, fd, options)
        self.close(fd)

    def export_async(self, obj, fd, options=None, close=True):
        """Export into fd without waiting; our copy of fd is closed once the call is sent,
        so that the reader sees EOF when the daemon closes its copy."""
        call = AsyncCall(self.env.bus, obj, VOLUME, "Export", "ha{sv}",
                         dbus.types.UnixFd(fd), harness.variant_dict(options))
        if close:
            self.close(fd)
        return call

    def export_stream(self, obj, options=None, kind="pipe"):
        """(call, Stream) of an Export into a pipe or a socket pair, nothing read yet."""
        if kind == "pipe":
            r, w = self.pipe()
        else:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            r, w = self.track(a.detach()), self.track(b.detach())
        return self.export_async(obj, w, options), Stream(r)

    def finish(self, call, stream):
        self.assertTrue(stream.read(), "the export stream never ended (read %d bytes)"
                        % stream.length)
        self.assertTrue(call.wait(), "Export never answered")

    def export_job(self, rec, timeout=30):
        added = rec.wait_for(job_added("Export"), timeout=timeout)
        self.assertIsNotNone(added, "no Export Job appeared")
        return added.args[0], added.args[1][JOB]

    def assert_same_file(self, path, reference):
        self.assertEqual(os.path.getsize(path), os.path.getsize(reference))
        self.assertEqual(file_sha256(path), file_sha256(reference))

    def assert_consistent(self, pool=None):
        pool = pool or self.pool
        self.assertEqual(harness.dir_pool_inconsistencies(self.c, pool.dir, pool.obj), [])


# ---------------------------------------------------------------------------
# Every kind of fd
# ---------------------------------------------------------------------------

class ExportFdKindsTest(ExportTestCase):

    def test_into_a_regular_file_on_the_pools_filesystem(self):
        out = self.out_path()
        self.assertEqual(os.stat(self.out_dir).st_dev, os.stat(self.pool.dir).st_dev)
        self.export_to_file(self.v, out)
        self.assert_same_file(out, self.image())
        self.assertEqual(data_segments(out), data_segments(self.image()))
        self.assertEqual(file_sha256(self.image()), self.committed)
        self.assert_consistent()

    def test_into_a_regular_file_on_another_filesystem(self):
        fs = self.scratch_fs("ext4")
        self.assertNotEqual(os.stat(fs.path).st_dev, os.stat(self.pool.dir).st_dev)
        out = os.path.join(fs.path, "out.img")
        self.export_to_file(self.v, out)
        self.assert_same_file(out, self.image())
        self.assertEqual(data_segments(out), data_segments(self.image()))

    def test_into_a_pipe(self):
        call, stream = self.export_stream(self.v)
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.length, SIZE)
        self.assertEqual(stream.hexdigest(), self.committed)

    def test_into_a_socket(self):
        call, stream = self.export_stream(self.v, kind="socket")
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.length, SIZE)
        self.assertEqual(stream.hexdigest(), self.committed)

    def test_into_a_nonblocking_pipe(self):
        r, w = self.pipe()
        fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
        call, stream = self.export_async(self.v, w), Stream(r)
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual((stream.length, stream.hexdigest()), (SIZE, self.committed))

    def test_into_a_file_that_held_more_data(self):
        """The file ends up holding the image, whatever it held before (both sparse modes)."""
        for sparse in (True, False):
            with self.subTest(sparse=sparse):
                out = self.out_path("old-%s.img" % sparse)
                with open(out, "wb") as f:
                    f.write(b"\xa5" * (2 * SIZE))
                fd = self.open_out(out, os.O_WRONLY)   # no O_TRUNC: the caller's choice
                self.c.export(self.v, fd, {"sparse": sparse})
                self.close(fd)
                self.assertEqual(os.path.getsize(out), SIZE,
                                 "the export left the file's old tail (sparse=%s)" % sparse)
                self.assertEqual(file_sha256(out), self.committed)

    def test_into_an_append_only_file_is_the_image_or_refused(self):
        out = self.out_path()
        fd = self.open_out(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            self.c.export(self.v, fd)
        except dbus.exceptions.DBusException as e:
            self.assertEqual(e.get_dbus_name(), Error.InvalidArgument,
                             "an O_APPEND fd got %s: %s" % (e.get_dbus_name(),
                                                            e.get_dbus_message()))
            return
        self.assertEqual(os.path.getsize(out), SIZE)
        self.assertEqual(file_sha256(out), self.committed)

    def test_of_a_started_volume_is_the_committed_image(self):
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        self.assertNotEqual(file_sha256(self.work()), self.committed)
        out = self.out_path()
        self.export_to_file(self.v, out)
        self.assertEqual(file_sha256(out), self.committed)
        call, stream = self.export_stream(self.v)
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.hexdigest(), self.committed)
        self.assertEqual(self.c.prop(self.v, VOLUME, "State"), "started")

    def test_a_full_filesystem_is_no_space(self):
        fs = self.scratch_fs("ext4")      # 64 MiB, less than a full copy of big
        big = self.make_volume(self.pool, "big", 128 * MiB)
        write_pattern(self.image("big"), 4)
        fd = self.open_out(os.path.join(fs.path, "out.img"))
        self.assert_fails(Error.NoSpace, self.c.export, big, fd, {"sparse": False})
        self.close(fd)
        self.c.remove_volume(big)

    def test_explicit_raw_format(self):
        out = self.out_path()
        self.export_to_file(self.v, out, {"format": "raw"})
        self.assertEqual(file_sha256(out), self.committed)

    def test_reader_leaving_early_fails_the_export_and_nothing_sticks(self):
        call, stream = self.export_stream(self.v)
        self.assertTrue(stream.read(until=64 * KiB))
        self.close(stream.fd)
        self.assertTrue(call.wait(60), "Export never answered after its reader left")
        self.assertFalse(call.ok, "an export whose reader left half-way succeeded")
        self.assertNotEqual(call.error, Error.Cancelled, str(call))
        self.assertEqual(self.c.prop(self.v, VOLUME, "Name"), "v1")   # the daemon lives
        self.c.remove_volume(self.v)   # nothing holds the volume any more


# ---------------------------------------------------------------------------
# Sparse
# ---------------------------------------------------------------------------

class ExportSparseTest(ExportTestCase):

    def setUp(self):
        super().setUp()
        self.big = self.make_volume(self.pool, "big", 64 * MiB)
        self.big_committed = self.commit(self.big, "big", 3)
        self.data = data_segments(self.image("big"))
        self.assertLess(sum(e - s for s, e in self.data), 2 * MiB, "test image is not sparse")

    def test_sparse_by_default_keeps_the_holes(self):
        out = self.out_path()
        self.export_to_file(self.big, out)
        self.assertEqual(file_sha256(out), self.big_committed)
        self.assertEqual(data_segments(out), self.data)
        self.assertLessEqual(allocated(out), allocated(self.image("big")) + 256 * KiB)

    def test_sparse_true_keeps_the_holes_on_another_filesystem(self):
        fs = self.scratch_fs("ext4", 128 * MiB)
        out = os.path.join(fs.path, "out.img")
        self.export_to_file(self.big, out, {"sparse": True})
        self.assertEqual(file_sha256(out), self.big_committed)
        self.assertEqual(data_segments(out), self.data)
        self.assertLess(allocated(out), 4 * MiB)

    def test_sparse_false_writes_the_zeros(self):
        out = self.out_path()
        self.export_to_file(self.big, out, {"sparse": False})
        self.assertEqual(os.path.getsize(out), 64 * MiB)
        self.assertEqual(file_sha256(out), self.big_committed)
        self.assertEqual(data_segments(out), [(0, 64 * MiB)])
        self.assertGreaterEqual(allocated(out), 64 * MiB)


# ---------------------------------------------------------------------------
# Revisions, and content as of the call
# ---------------------------------------------------------------------------

class ExportContentTest(ExportTestCase):

    def test_export_of_a_revision(self):
        newer = self.commit(self.v, "v1", 2)
        revisions = [r for r, _ in self.c.prop(self.v, VOLUME, "Revisions")]
        self.assertEqual(len(revisions), 1)
        rev = revisions[0]
        self.assertEqual(file_sha256(self.image("v1", "revisions", rev)), self.committed)
        out = self.out_path()
        self.export_to_file(self.v, out, {"revision": rev})
        self.assertEqual(file_sha256(out), self.committed)
        self.assertEqual(data_segments(out),
                         data_segments(self.image("v1", "revisions", rev)))
        call, stream = self.export_stream(self.v, {"revision": rev})
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.hexdigest(), self.committed)
        self.export_to_file(self.v, out)
        self.assertEqual(file_sha256(out), newer)

    def test_unknown_revision_is_not_found_and_writes_nothing(self):
        self.commit(self.v, "v1", 2)
        out = self.out_path()
        fd = self.open_out(out)
        for rev in ("7", "0"):
            with self.subTest(rev=rev):
                self.assert_fails(Error.NotFound, self.c.export, self.v, fd, {"revision": rev},
                                  extra_dirs=[self.out_dir])
        self.assert_fails({Error.NotFound, Error.InvalidArgument}, self.c.export, self.v, fd,
                          {"revision": "../image"}, extra_dirs=[self.out_dir])
        self.assertEqual(os.path.getsize(out), 0)

    def test_a_commit_during_a_pipe_export_does_not_change_what_is_exported(self):
        """The daemon stalls on the full pipe; Stop commits; then the rest is read."""
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        newer = file_sha256(self.work())
        call, stream = self.export_stream(self.v)
        self.assertTrue(stream.read(until=64 * KiB))
        self.c.stop_volume(self.v)
        self.assertEqual(file_sha256(self.image()), newer, "Stop did not commit")
        self.assertFalse(call.finished, "the export ended before the test read it all")
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.length, SIZE)
        self.assertEqual(stream.hexdigest(), self.committed,
                         "the export mixed in the content committed after the call")
        self.assert_consistent()

    def test_a_commit_right_after_the_call_does_not_change_what_is_exported(self):
        """Stop is sent right behind Export, before a single byte was read."""
        self.c.start_volume(self.v)
        write_pattern(self.work(), 2)
        call, stream = self.export_stream(self.v)
        self.c.stop_volume(self.v)
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.hexdigest(), self.committed)


class ExportBigTest(ExportTestCase):
    """A 1 GiB volume with 384 MiB of data on ext4, where an export takes a moment."""

    def setUp(self):
        super().setUp()
        fs = self.scratch_fs("ext4", EXT4_BIG_FS)
        self.bpool = self.make_pool("big", path=fs.path)
        self.bpool.fs = fs
        self.bv = self.c.create_volume(self.bpool.obj, "bv", BIG, {})
        self.c.start_volume(self.bv)
        harness.write_bulk(self.work("bv", self.bpool), BIG_DATA, 1)
        self.c.stop_volume(self.bv)
        self.bimage = self.image("bv", pool=self.bpool)

    def test_a_commit_while_a_file_export_runs_does_not_change_what_is_exported(self):
        self.c.start_volume(self.bv)
        write_pattern(self.work("bv", self.bpool), 7, chunks=64, chunk_size=MiB)
        drop_cache(self.bimage)
        out = self.out_path()
        rec = self.recorder()
        call = self.export_async(self.bv, self.open_out(out))
        job, _ = self.export_job(rec)
        self.c.stop_volume(self.bv)
        still_running = JOB in self.c.managed_objects().get(job, {})
        self.assertTrue(call.wait(), "Export never answered")
        self.assertTrue(call.ok, str(call))
        self.assertTrue(still_running, "the export ended before Stop committed; the test "
                        "proves nothing on a machine this fast")
        revisions = [r for r, _ in self.c.prop(self.bv, VOLUME, "Revisions")]
        self.assertEqual(len(revisions), 1)
        # The image committed when Export was called is now the revision Stop kept.
        old = self.image("bv", "revisions", revisions[0], pool=self.bpool)
        self.assertFalse(same_bytes(self.bimage, old), "Stop did not commit a new image")
        self.assertTrue(same_bytes(out, old),
                        "the export is not the image committed when it was called")
        self.assertEqual(data_segments(out), data_segments(old))
        self.assert_consistent(self.bpool)

    def test_cancel_of_a_file_export(self):
        before = self.snapshot_state(extra_dirs=[self.bpool.fs.path])
        drop_cache(self.bimage)
        rec = self.recorder()
        call = self.export_async(self.bv, self.open_out(self.out_path()))
        job, _ = self.export_job(rec)
        self.c.cancel_job(job)
        self.assertTrue(call.wait(), "no reply after Cancel")
        self.assertEqual(call.error, Error.Cancelled, str(call))
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertIs(completed.args[0], False)
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(job, JOB)))
        self.assertEqual(self.snapshot_state(extra_dirs=[self.bpool.fs.path]), before)
        self.c.remove_volume(self.bv)


# ---------------------------------------------------------------------------
# The Job
# ---------------------------------------------------------------------------

class ExportJobTest(ExportTestCase):

    def test_export_runs_as_a_job_and_completes(self):
        rec = self.recorder()
        call, stream = self.export_stream(self.v)
        job, props = self.export_job(rec)
        self.assertTrue(stream.read(until=256 * KiB))
        self.assertEqual(props["Operation"], "Export")
        self.assertEqual(props["Objects"], [self.v])
        self.assertEqual(props["StartedByUID"], 0)
        self.assertIs(props["Cancelable"], True)
        self.assert_near_now_usec(props["StartTime"])
        live = self.c.props(job, JOB)
        self.assertEqual(live["Operation"], "Export")
        self.assertLessEqual(live["BytesDone"], live["BytesTotal"])
        self.assertIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertEqual(completed.args, (True, ""))
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(job, JOB)),
                             "the Job did not vanish")
        self.assertNotIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))

    def test_cancel_mid_export(self):
        rec = self.recorder()
        call, stream = self.export_stream(self.v)
        job, _ = self.export_job(rec)
        self.assertTrue(stream.read(until=256 * KiB))
        self.c.cancel_job(job)
        self.finish(call, stream)
        self.assertEqual(call.error, Error.Cancelled, str(call))
        self.assertLess(stream.length, SIZE, "everything was exported despite the Cancel")
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertIs(completed.args[0], False)
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(job, JOB)))
        self.assertEqual(file_sha256(self.image()), self.committed)
        self.c.remove_volume(self.v)   # the export let go of the volume

    def test_cancel_while_the_reader_stalls(self):
        """Nobody reads the pipe: Cancel still ends the export (and frees its worker)."""
        rec = self.recorder()
        call, stream = self.export_stream(self.v)
        job, _ = self.export_job(rec)
        # The read end closes when the test ends, which lets a stuck writer go.
        capacity = fcntl.fcntl(stream.fd, fcntl.F_GETPIPE_SZ)
        deadline = time.monotonic() + 10
        while queued_bytes(stream.fd) < capacity:   # until the daemon waits on a full pipe
            self.assertLess(time.monotonic(), deadline, "the daemon never filled the pipe")
            time.sleep(0.02)
        self.c.cancel_job(job)
        answered = call.wait(10)
        self.assertTrue(answered, "Export did not end within 10 s of Cancel while its "
                        "reader was not reading")
        self.assertEqual(call.error, Error.Cancelled, str(call))

    def test_remove_and_remove_pool_are_busy_while_an_export_runs(self):
        call, stream = self.export_stream(self.v)
        self.assertTrue(stream.read(until=64 * KiB))
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)
        self.assert_fails(Error.Busy, self.c.remove_pool, "p1")
        self.c.start_volume(self.v)
        self.c.stop_volume(self.v)
        self.finish(call, stream)
        self.assertTrue(call.ok, str(call))
        self.assertEqual(stream.hexdigest(), self.committed)
        self.c.remove_volume(self.v)
        self.c.remove_pool("p1")


# ---------------------------------------------------------------------------
# ExportBegin / ExportEnd
# ---------------------------------------------------------------------------

class ExportSessionTest(ExportTestCase):

    def begin(self, obj=None, options=None):
        return self.track(self.c.export_begin(obj or self.v, options))

    def hold_session(self, user, obj):
        """A child as `user` that holds an ExportBegin session on obj until released.

        Returns release(): lets the child end (its connection goes, and with it the
        session) and returns the child's Outcome (the digest it read)."""
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()

        def hold(c):
            os.close(ready_r)
            os.close(go_w)
            fd = c.export_begin(obj)
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            return file_sha256(fd)
        child = self.start_as_user(user, hold)
        os.close(ready_w)
        os.close(go_r)
        self.track(go_w)
        # Before the child is reaped (cleanups run last first), so that it is not left waiting.
        self.addCleanup(lambda: go_w in self._fds and self.close(go_w))
        ready = select.select([ready_r], [], [], 30)[0] and os.read(ready_r, 1)
        os.close(ready_r)
        if not ready:
            self.fail("the child did not open a session: %s" % child.outcome())

        def release():
            self.close(go_w)
            return child.outcome()
        return release

    def assert_removable_soon(self, obj, timeout=5):
        """Remove succeeds within timeout (the daemon learns of a disconnect by a signal)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.c.remove_volume(obj)
                return
            except dbus.exceptions.DBusException as e:
                if e.get_dbus_name() != Error.Busy or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def test_the_fd_reads_the_committed_image(self):
        fd = self.begin()
        self.assertEqual(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE, os.O_RDONLY)
        self.assertTrue(stat.S_ISREG(os.fstat(fd).st_mode))
        self.assertEqual(os.fstat(fd).st_size, SIZE)
        self.assertEqual(file_sha256(fd), self.committed)
        self.c.export_end(self.v)

    def test_the_fd_is_read_only(self):
        fd = self.begin()
        with self.assertRaises(OSError) as cm:
            os.pwrite(fd, b"scribble", 0)
        self.assertEqual(cm.exception.errno, errno.EBADF)
        with self.assertRaises(OSError):
            os.ftruncate(fd, 0)
        self.assertEqual(file_sha256(self.image()), self.committed)

    def test_the_fd_is_unchanged_by_later_commits(self):
        fd = self.begin()
        newer = self.commit(self.v, "v1", 2)
        self.assertNotEqual(newer, self.committed)
        self.assertEqual(file_sha256(fd), self.committed)
        self.c.start_volume(self.v)
        write_pattern(self.work(), 3)
        self.assertEqual(file_sha256(fd), self.committed)
        self.c.stop_volume(self.v)
        rev = self.c.prop(self.v, VOLUME, "Revisions")[0][0]
        self.c.revert(self.v, rev)
        self.c.resize(self.v, 2 * SIZE)
        self.assertEqual(os.fstat(fd).st_size, SIZE)
        self.assertEqual(file_sha256(fd), self.committed)
        self.c.export_end(self.v)

    def test_of_a_revision(self):
        newer = self.commit(self.v, "v1", 2)
        rev = self.c.prop(self.v, VOLUME, "Revisions")[0][0]
        fd = self.begin(options={"revision": rev})
        self.assertEqual(file_sha256(fd), self.committed)
        self.c.export_end(self.v)
        fd = self.begin()
        self.assertEqual(file_sha256(fd), newer)
        self.c.export_end(self.v)
        self.assert_fails(Error.NotFound, self.c.export_begin, self.v, {"revision": "99"})
        self.c.remove_volume(self.v)   # the failed begin left no session

    def test_second_begin_by_the_same_caller_is_busy(self):
        fd = self.begin()
        self.assert_fails(Error.Busy, self.c.export_begin, self.v)
        other = self.make_volume(self.pool, "v2", SIZE)
        self.begin(other)                    # one session per volume, not per caller
        release = self.hold_session(ROOT, self.v)   # another connection of root's
        self.assertEqual(file_sha256(fd), self.committed)
        outcome = release()
        self.assertTrue(outcome.ok, str(outcome))
        self.assertEqual(outcome.value, self.committed)

    def test_export_end_releases_the_volume(self):
        self.begin()
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)
        self.assert_fails(Error.Busy, self.c.remove_pool, "p1")
        self.c.start_volume(self.v)           # the life cycle goes on
        self.c.stop_volume(self.v)
        self.c.export_end(self.v)
        self.assert_fails(Error.WrongState, self.c.export_end, self.v)
        self.begin()                          # a new session may start
        self.c.export_end(self.v)
        self.c.remove_volume(self.v)
        self.c.remove_pool("p1")

    def test_export_end_without_a_session_is_wrong_state(self):
        self.assert_fails(Error.WrongState, self.c.export_end, self.v)

    def test_disconnect_ends_the_session(self):
        release = self.hold_session(ROOT, self.v)
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)
        outcome = release()
        self.assertTrue(outcome.ok, str(outcome))
        self.assertEqual(outcome.value, self.committed)
        self.assert_removable_soon(self.v)

    def test_another_caller_cannot_end_my_session(self):
        self.begin()
        outcome = self.assert_user_fails(Error.WrongState, USER_B,
                                         lambda c: c.export_end(self.v))
        self.assertIn("export", outcome.message.lower())
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)
        self.c.export_end(self.v)

    def test_an_open_session_keeps_the_idle_daemon_running(self):
        self.env.stop_daemon()
        self.env.write_activation_file(idle_timeout=1)
        self.begin()
        pid = self.env.daemon_pid()
        self.assertIsNotNone(pid)
        time.sleep(2.5)
        self.assertEqual(self.env.daemon_pid(), pid, "the daemon exited with a session open")
        self.c.export_end(self.v)
        self.assertTrue(harness.wait_pid_exit(pid, 10),
                        "the daemon did not exit when idle after ExportEnd")


# ---------------------------------------------------------------------------
# Options and bad fds
# ---------------------------------------------------------------------------

class ExportArgumentsTest(ExportTestCase):

    def test_unknown_options_are_invalid(self):
        out = self.out_path()
        fd = self.open_out(out)
        extra = [self.out_dir]
        for options in ({"bogus": True}, {"sparse": dbus.String("yes")},
                        {"revision": dbus.UInt32(1)},
                        {"format": dbus.Boolean(True)}):
            with self.subTest(options=options):
                self.assert_fails(Error.InvalidArgument, self.c.export, self.v, fd, options,
                                  extra_dirs=extra)
        for options in ({"bogus": True}, {"sparse": True}, {"revision": dbus.UInt32(1)}):
            with self.subTest(begin=options):
                self.assert_fails(Error.InvalidArgument, self.c.export_begin, self.v, options,
                                  extra_dirs=extra)
        self.track(self.c.export_begin(self.v))
        self.assert_fails(Error.InvalidArgument, self.c.export_end, self.v, {"bogus": True},
                          extra_dirs=extra)
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)   # still open
        self.c.export_end(self.v)
        self.assertEqual(os.path.getsize(out), 0)

    def test_other_formats(self):
        """qcow2 of this raw volume goes into a regular file, converted; a pipe cannot take it
        and unknown formats are invalid, all before a byte is written."""
        out = self.out_path()
        fd = self.open_out(out)
        _, w = self.pipe()
        self.assert_fails(Error.InvalidArgument, self.c.export, self.v, w, {"format": "qcow2"},
                          extra_dirs=[self.out_dir])
        for fmt in ("vmdk", "", "RAW"):
            with self.subTest(format=fmt):
                self.assert_fails(Error.InvalidArgument, self.c.export, self.v, fd,
                                  {"format": fmt}, extra_dirs=[self.out_dir])
        self.assertEqual(os.path.getsize(out), 0)
        self.c.export(self.v, fd, {"format": "qcow2"})
        self.close(fd)
        with open(out, "rb") as f:
            self.assertEqual(f.read(4), b"QFI\xfb", "the export is not a qcow2 image")
        raw = self.out_path("raw.img")
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", out, raw], check=True)
        self.assertEqual(file_sha256(raw), self.committed)
        self.assertEqual(harness.staging_entries(self.pool.dir), [])

    def test_bad_fds_are_invalid(self):
        target = self.out_path("target.img")
        with open(target, "wb"):
            pass
        r, w = self.pipe()
        bad = {
            "O_PATH file": os.open(target, os.O_PATH | os.O_CLOEXEC),
            "directory": os.open(self.out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
            "O_PATH directory": os.open(self.out_dir, os.O_PATH | os.O_CLOEXEC),
            "/dev/null": os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC),
            "/dev/zero": os.open("/dev/zero", os.O_RDWR | os.O_CLOEXEC),
            "read-only file": os.open(target, os.O_RDONLY | os.O_CLOEXEC),
            "read end of a pipe": r,
        }
        for what, fd in bad.items():
            self.track(fd)
            with self.subTest(fd=what):
                self.assert_fails(Error.InvalidArgument, self.c.export, self.v, fd,
                                  extra_dirs=[self.out_dir])
        self.assertEqual(os.path.getsize(target), 0)


# ---------------------------------------------------------------------------
# Authorization
# ---------------------------------------------------------------------------

class ExportAuthorizationTest(ExportTestCase):
    """read / read-own (SPEC §5); a test user exports into a file it opened itself."""

    def setUp(self):
        super().setUp()
        self.avol = self.make_volume(self.pool, "avol", SIZE, owner=USER_A.uid)
        self.a_committed = self.commit(self.avol, "avol", 5)
        self.bvol = self.make_volume(self.pool, "bvol", SIZE, owner=USER_B.uid)

    def grant(self, *actions):
        self.env.set_polkit_rules(rule_allowing(list(actions), USER_A))

    def export_as(self, obj, name="out.img"):
        """fn for as_user: open a new file of one's own, Export obj into it."""
        out = self.out_path(name)

        def fn(c):
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                c.export(obj, fd)
            finally:
                os.close(fd)
        return fn, out

    def begin_as(self, obj):
        """fn for as_user: ExportBegin obj; returns the digest read and what writing did."""
        def fn(c):
            fd = c.export_begin(obj)
            digest = file_sha256(fd)
            try:
                os.pwrite(fd, b"x", 0)
                wrote = "wrote"
            except OSError as e:
                wrote = errno.errorcode[e.errno]
            try:
                reopened = os.open("/proc/self/fd/%d" % fd, os.O_RDWR)
                os.close(reopened)
                reopen = "reopened"
            except OSError as e:
                reopen = errno.errorcode[e.errno]
            c.export_end(obj)
            return digest, wrote, reopen
        return fn

    def assert_denied(self, obj, name="out.img"):
        rec = self.recorder()
        fn, out = self.export_as(obj, name)
        self.assert_user_fails(Error.NotAuthorized, USER_A, fn)
        self.assertEqual(os.path.getsize(out), 0, "a denied export wrote into the file")
        self.assert_user_fails(Error.NotAuthorized, USER_A, self.begin_as(obj))
        rec.drain()
        self.assertEqual(rec.matching(job_added("Export")), [], "a denied export ran a Job")
        self.c.remove_volume(obj)    # no session or export was left behind

    def test_denied_without_rules(self):
        self.assert_denied(self.v, "root.img")
        self.assert_denied(self.avol, "own.img")

    def test_read_own_exports_an_own_volume(self):
        self.grant(VOLUME_READ_OWN)
        fn, out = self.export_as(self.avol)
        self.assert_user_succeeds(USER_A, fn)
        self.assertEqual(os.stat(out).st_uid, USER_A.uid)
        self.assertEqual(file_sha256(out), self.a_committed)
        self.assertEqual(data_segments(out), data_segments(self.image("avol")))
        digest, wrote, reopen = self.assert_user_succeeds(USER_A, self.begin_as(self.avol))
        self.assertEqual(digest, self.a_committed)
        self.assertEqual(wrote, "EBADF", "the ExportBegin fd is writable")
        self.assertEqual(reopen, "EACCES", "the ExportBegin fd reopens for writing")
        self.assertEqual(file_sha256(self.image("avol")), self.a_committed)
        self.c.remove_volume(self.avol)

    def test_read_own_does_not_cover_other_volumes(self):
        self.grant(VOLUME_READ_OWN)
        self.assert_denied(self.v, "root.img")
        self.assert_denied(self.bvol, "b.img")

    def test_read_exports_someone_elses_volume(self):
        self.grant(VOLUME_READ)
        fn, out = self.export_as(self.v)
        self.assert_user_succeeds(USER_A, fn)
        self.assertEqual(file_sha256(out), self.committed)
        digest, wrote, _ = self.assert_user_succeeds(USER_A, self.begin_as(self.v))
        self.assertEqual((digest, wrote), (self.committed, "EBADF"))

    def test_a_caller_gone_while_polkit_decides_leaves_no_session(self):
        gate = self.polkit_gate()
        self.env.set_polkit_rules(gate.rule(VOLUME_READ_OWN, USER_A))
        avol = self.avol
        child = self.start_as_user(USER_A, lambda c: c.export_begin(avol))
        gate.wait_entered()
        child.kill()
        gate.release()
        deadline = time.monotonic() + 10
        while "polkit answered %s" % VOLUME_READ_OWN not in harness.file_tail(
                self.env.logs["cisternd"], self.log_marks["cisternd"]):
            self.assertLess(time.monotonic(), deadline, "polkit never answered")
            time.sleep(0.05)
        self.assertEqual(self.c.prop(self.avol, VOLUME, "Name"), "avol")   # dispatched after
        self.c.remove_volume(self.avol)

    def test_job_of_a_users_export_names_the_user(self):
        self.grant(VOLUME_READ_OWN)
        rec = self.recorder()
        fn, out = self.export_as(self.avol)
        self.assert_user_succeeds(USER_A, fn)
        added = rec.wait_for(job_added("Export"))
        self.assertIsNotNone(added, "no Export Job appeared")
        self.assertEqual(added.args[1][JOB]["StartedByUID"], USER_A.uid)


if __name__ == "__main__":
    harness.main()
