#!/usr/bin/python3
"""Import, ImportBegin and ImportEnd (SPEC §4.3), their Job (§4.4), authorization (§5), the
checks of the file descriptors callers pass, and SIGKILL in the middle (§8).

Every test starts with volume v1 whose committed image holds known data (written into the
image behind the daemon's back, then Pool.Refresh) and imports a source file the test made:
as a regular file, or fed into a pipe or a socket by a Feeder thread.  A Feeder can stop
after a given number of bytes and hold its end open until the test resumes it: that is how a
Cancel or a SIGKILL lands in the middle of an import without depending on timing.  After a
success the image is compared with the source (checksum and data/hole map), and Size and
Revisions (with the new revision's content) are checked; after a failure, the whole state
(assert_fails' snapshot), the image's checksum and the absence of staging files (".stage-*").
"""

import errno
import fcntl
import os
import shutil
import socket
import stat
import tempfile
import threading
import time

import dbus

import harness
from harness import (JOB, MANAGER, ROOT_PATH, VOLUME, USER_A, USER_B, AsyncCall, Error, KiB,
                     MiB, TestUser, data_segments, dbus_outcome, dir_volume_file, file_sha256,
                     job_added, job_completed, rule_allowing, shared_bytes, staging_entries,
                     write_pattern)

SIZE = 16 * MiB         # v1 before any import
NEW_SIZE = 24 * MiB     # what is imported: Size must follow
KEEP = 3                # the pool's revisions_to_keep
STREAMS = ("pipe", "socket")
ROOT = TestUser("root", 0, 0)   # for another bus connection of root's
VOLUME_MODIFY_OWN = "org.cistern.volume.modify-own"


def make_source(path, size, seed, chunks=8, allocated=False):
    """A file of `size` bytes: `chunks` 64 KiB blocks of data unique to seed, zeros elsewhere
    (holes, or zeros written to disk when `allocated`)."""
    with open(path, "wb") as f:
        if allocated:
            for offset in range(0, size, 4 * MiB):
                f.write(bytes(min(4 * MiB, size - offset)))
        f.truncate(size)
    if size >= 64 * KiB:
        write_pattern(path, seed, chunks=chunks)
    os.chmod(path, 0o644)
    return path


def copy_data(source, fd):
    """pwrite the data ranges of source into fd, at the same offsets."""
    with open(source, "rb") as f:
        for start, end in data_segments(source):
            os.pwrite(fd, os.pread(f.fileno(), end - start, start), start)


def allocated(path):
    return os.stat(path).st_blocks * 512


class Feeder(threading.Thread):
    """Writes a file into fd (the write end of a pipe or a socket), then closes fd: the EOF.

    With pause_at it stops after that many bytes and holds fd open (the daemon waits for
    more) until resume(); from then on it sleeps `delay` seconds after each chunk.  When the
    daemon closes its end, a write fails (EPIPE) and the feeder ends too."""

    CHUNK = 256 * KiB

    def __init__(self, fd, source, pause_at=None, delay=0.0):
        super().__init__(daemon=True)
        self.fd, self.source, self.pause_at, self.delay = fd, source, pause_at, delay
        self.written = 0
        self.paused = threading.Event()
        self._go = threading.Event()
        self.start()

    def run(self):
        try:
            with open(self.source, "rb") as f:
                if self.pause_at is not None:
                    self._write(f, self.pause_at)
                    self.paused.set()
                    self._go.wait()
                self._write(f, None, self.delay)
        except OSError:
            pass
        finally:
            os.close(self.fd)

    def _write(self, f, count, delay=0.0):
        while count is None or count > 0:
            data = f.read(self.CHUNK if count is None else min(self.CHUNK, count))
            if not data:
                return
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.written += n
            if count is not None:
                count -= len(data)
            time.sleep(delay)

    def resume(self):
        self._go.set()

    def finish(self, timeout=10):
        self.resume()
        self.join(timeout)


class ImportTestCase(harness.CisternTestCase):
    """Pool p1 (revisions_to_keep KEEP) in the harness's pool directory, or in a directory of
    a POOL_FS scratch filesystem; v1 (SIZE) holds data of seed 1 (digest self.old); source
    files live in src_dir, on the harness's tmpfs, open to the test users."""

    POOL_FS = None

    def setUp(self):
        super().setUp()
        path = None
        if self.POOL_FS:
            self.fs = self.scratch_fs(self.POOL_FS)
            path = os.path.join(self.fs.path, "pool")
            os.mkdir(path)
        self.pool = self.make_pool("p1", path=path, revisions_to_keep=KEEP)
        self.v = self.volume_with_data("v1", seed=1)
        self.old = file_sha256(self.image())
        self.src_dir = tempfile.mkdtemp(prefix="import-src-", dir=self.env.tmp)
        os.chmod(self.src_dir, 0o755)
        self.addCleanup(shutil.rmtree, self.src_dir, True)
        self.src = self.source("new.img", NEW_SIZE, seed=2)

    # -- volumes and sources --

    def image(self, name="v1", *rest):
        return dir_volume_file(self.pool.dir, name, *(rest or ("image",)))

    def volume_with_data(self, name, seed, **options):
        obj = self.make_volume(self.pool, name, SIZE, **options)
        write_pattern(self.image(name), seed)
        self.c.refresh_pool(self.pool.obj)   # the data came behind the daemon's back
        return obj

    def source(self, name, size, seed=2, directory=None, **kwargs):
        return make_source(os.path.join(directory or self.src_dir, name), size, seed, **kwargs)

    def revision_ids(self, obj=None):
        return [rev for rev, _ in self.c.prop(obj or self.v, VOLUME, "Revisions")]

    # -- importing --

    def source_fd(self, kind, source, **feeder_args):
        """(fd, Feeder or None): an fd of kind "file", "pipe" or "socket" that reads source."""
        if kind == "file":
            return self.track_fd(os.open(source, os.O_RDONLY | os.O_CLOEXEC)), None
        if kind == "pipe":
            r, w = os.pipe2(os.O_CLOEXEC)
        else:
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            r, w = a.detach(), b.detach()
        self.track_fd(r)
        feeder = Feeder(w, source, **feeder_args)

        def finish():
            if r in self._tracked_fds:   # our read end would keep a stuck feeder waiting
                self.close_fd(r)
            feeder.finish()
        self.addCleanup(finish)
        return r, feeder

    @staticmethod
    def options_for(kind, source, options):
        """options, with the source's size for streams unless they say otherwise."""
        options = dict(options or {})
        if kind in STREAMS:
            options.setdefault("size", os.path.getsize(source))
        return options

    def do_import(self, obj, kind, source, options=None):
        """Import source into obj through an fd of kind; returns when the daemon replied."""
        fd, _ = self.source_fd(kind, source)
        try:
            self.c.import_(obj, fd, self.options_for(kind, source, options))
        finally:
            self.close_fd(fd)

    def import_async(self, obj, kind, source, options=None, **feeder_args):
        """(AsyncCall, Feeder) of an Import; the daemon holds the only read end once sent."""
        fd, feeder = self.source_fd(kind, source, **feeder_args)
        call = AsyncCall(self.env.bus, obj, VOLUME, "Import", "ha{sv}", dbus.types.UnixFd(fd),
                         harness.variant_dict(self.options_for(kind, source, options)))
        self.close_fd(fd)
        return call, feeder

    def begin(self, obj=None, size=NEW_SIZE):
        return self.track_fd(self.c.import_begin(obj or self.v, {"size": size}))

    # -- checks --

    def assert_imported(self, source, before, old, name="v1", segments=None):
        """name's image holds source's bytes (zero blocks as holes: `segments`, by default
        source's data map), Size follows, and the previous image (digest old) is the newest
        revision after the ids `before` (the oldest pruned beyond KEEP)."""
        obj = harness.volume_path("p1", name)
        image = self.image(name)
        self.assertEqual(file_sha256(image), file_sha256(source), "the image is not the import")
        self.assertEqual(data_segments(image),
                         data_segments(source) if segments is None else segments,
                         "the image's data/hole map is not the imported data's")
        self.assertEqual(self.c.prop(obj, VOLUME, "Size"), os.path.getsize(source))
        ids = self.revision_ids(obj)
        self.assertEqual(ids[:-1], before[max(0, len(before) + 1 - KEEP):],
                         "Revisions %s after an import, before %s" % (ids, before))
        self.assertNotIn(ids[-1], before, "no new revision: %s" % ids)
        self.assertEqual(file_sha256(self.image(name, "revisions", ids[-1])), old,
                         "the new revision is not the previous image")

    def assert_untouched(self):
        self.assertEqual(staging_entries(self.pool.dir), [])
        self.assertEqual(file_sha256(self.image()), self.old)

    def assert_unchanged(self, before):
        """The state is `before` (a snapshot_state), the image the original, no staging."""
        self.assert_untouched()
        self.assertEqual(self.snapshot_state(), before)

    def assert_import_fails(self, expected, kind, source, options=None):
        error = self.assert_fails(expected, self.do_import, self.v, kind, source, options,
                                  extra_dirs=[self.src_dir])
        self.assert_untouched()
        return error

    def wait_staging_gone(self, timeout=10):
        """Sessions the daemon ends by itself (a caller gone, a timeout) have no reply to wait
        for: their staging file goes in the background."""
        harness.poll_until(lambda: not staging_entries(self.pool.dir), timeout,
                           "the staging file of the ended session to go")

    def assert_error(self, expected, fn, *args):
        """fn(*args) fails with expected (for calls that may legitimately change state)."""
        outcome = dbus_outcome(fn, *args)
        self.assertEqual(outcome.error, expected, str(outcome))

    def assert_consistent(self):
        self.assertEqual(harness.dir_pool_inconsistencies(self.c, self.pool.dir,
                                                          self.pool.obj), [])

    def import_job(self, rec, call):
        added = rec.wait_for(job_added("Import"), timeout=10)
        self.assertIsNotNone(added, "no Import Job appeared (call: %s)" % call)
        return added.args[0], added.args[1][JOB]


# ---------------------------------------------------------------------------
# Every kind of fd, with the pool on xfs (reflink=1)
# ---------------------------------------------------------------------------

class ImportFdKindsTest(ImportTestCase):
    POOL_FS = "xfs"

    def check(self, kind, source):
        self.do_import(self.v, kind, source)
        self.assert_imported(source, [], self.old)
        self.assert_consistent()

    def test_from_a_file_on_the_pools_filesystem_is_reflinked(self):
        source = self.source("new.img", NEW_SIZE, directory=self.fs.path)
        self.assertEqual(os.stat(source).st_dev, os.stat(self.pool.dir).st_dev)
        self.check("file", source)
        data = sum(end - start for start, end in data_segments(source))
        self.assertGreaterEqual(shared_bytes(self.image()), data, "the import was not reflinked")

    def test_from_a_file_on_another_filesystem(self):
        self.assertNotEqual(os.stat(self.src).st_dev, os.stat(self.pool.dir).st_dev)
        self.check("file", self.src)

    def test_from_a_pipe(self):
        self.check("pipe", self.src)

    def test_from_a_socket(self):
        self.check("socket", self.src)


# ---------------------------------------------------------------------------
# Content, holes, revisions
# ---------------------------------------------------------------------------

class ImportContentTest(ImportTestCase):

    def test_zero_blocks_become_holes(self):
        """64 MiB with 1 MiB of data, the zeros written out: from a pipe, and copied from a
        file on a filesystem without reflink."""
        sparse = self.source("sparse.img", 64 * MiB, seed=3, chunks=16)
        full = self.source("full.img", 64 * MiB, seed=3, chunks=16, allocated=True)
        self.assertEqual(file_sha256(sparse), file_sha256(full))
        old = self.old
        for kind in ("pipe", "file"):
            with self.subTest(kind=kind):
                before = self.revision_ids()
                self.do_import(self.v, kind, full)
                self.assert_imported(full, before, old, segments=data_segments(sparse))
                self.assertLess(allocated(self.image()), 2 * MiB,
                                "the zeros of the import were written out")
                old = file_sha256(full)

    def test_each_import_keeps_the_previous_image_as_a_revision(self):
        """Four imports; RevisionsToKeep (3) prunes the oldest revision."""
        old = self.old
        for i, kind in enumerate(("file", "pipe", "socket", "file")):
            source = self.source("gen%d.img" % i, NEW_SIZE - i * MiB, seed=10 + i)
            before = self.revision_ids()
            self.do_import(self.v, kind, source)
            self.assert_imported(source, before, old)
            old = file_sha256(source)
        self.assertEqual(len(self.revision_ids()), KEEP)
        self.assert_consistent()

    def test_a_regular_file_is_read_from_its_start(self):
        fd, _ = self.source_fd("file", self.src)
        os.lseek(fd, 5 * MiB, os.SEEK_SET)
        self.c.import_(self.v, fd)
        self.assert_imported(self.src, [], self.old)

    def test_from_a_nonblocking_pipe(self):
        fd, _ = self.source_fd("pipe", self.src)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.c.import_(self.v, fd, {"size": NEW_SIZE})
        self.close_fd(fd)
        self.assert_imported(self.src, [], self.old)

    def test_explicit_raw_format(self):
        self.do_import(self.v, "file", self.src, {"format": "raw"})
        self.assert_imported(self.src, [], self.old)


# ---------------------------------------------------------------------------
# Bad streams, sizes, fds, formats, options, states
# ---------------------------------------------------------------------------

class ImportArgumentsTest(ImportTestCase):

    def check_streams(self, deliveries, word):
        for delivered in deliveries:
            source = self.source("stream-%d.img" % delivered, delivered, seed=4)
            for kind in STREAMS:
                with self.subTest(kind=kind, delivered=delivered):
                    error = self.assert_import_fails(Error.InvalidArgument, kind, source,
                                                     {"size": NEW_SIZE})
                    # "The data is shorter|longer than the N bytes announced…"
                    self.assertRegex(error.get_dbus_message(), r"%s\b.*\b%d\b" % (word, NEW_SIZE))

    def test_a_short_stream_is_invalid_and_changes_nothing(self):
        self.check_streams((0, NEW_SIZE - 4 * KiB, NEW_SIZE - 1), "shorter")

    def test_a_long_stream_is_invalid_and_changes_nothing(self):
        self.check_streams((NEW_SIZE + 1, NEW_SIZE + 4 * MiB), "longer")

    def test_streams_need_a_size(self):
        for kind in STREAMS:
            with self.subTest(kind=kind):
                fd, _ = self.source_fd(kind, self.src)
                self.assert_fails(Error.InvalidArgument, self.c.import_, self.v, fd, {},
                                  extra_dirs=[self.src_dir])
                self.close_fd(fd)
        self.assert_fails(Error.InvalidArgument, self.c.import_begin, self.v, {})
        self.assert_untouched()

    def test_a_size_other_than_the_files_is_invalid(self):
        for size in (NEW_SIZE - 512, NEW_SIZE + 512):
            with self.subTest(size=size):
                self.assert_import_fails(Error.InvalidArgument, "file", self.src, {"size": size})

    def test_sizes_must_be_positive_multiples_of_512_within_the_limit(self):
        odd = self.source("odd.img", NEW_SIZE + 100)
        empty = self.source("empty.img", 0)
        huge = {"size": harness.HUGE_SIZE}
        for kind in ("file",) + STREAMS:
            for source, options in ((odd, {}), (empty, {}), (self.src, huge)):
                with self.subTest(kind=kind, source=os.path.basename(source), options=options):
                    self.assert_import_fails(Error.InvalidArgument, kind, source, options)
        for size in (0, 100, NEW_SIZE + 100, harness.HUGE_SIZE):
            with self.subTest(begin=size):
                self.assert_fails(Error.InvalidArgument, self.c.import_begin, self.v,
                                  {"size": size})

    def test_unreadable_fds_are_invalid(self):
        r, w = os.pipe2(os.O_CLOEXEC)
        self.track_fd(r)
        bad = {
            "write-only file": os.open(self.src, os.O_WRONLY | os.O_CLOEXEC),
            "write end of a pipe": w,
            "O_PATH file": os.open(self.src, os.O_PATH | os.O_CLOEXEC),
            "directory": os.open(self.src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
            "O_PATH directory": os.open(self.src_dir, os.O_PATH | os.O_CLOEXEC),
            "/dev/zero": os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC),
            "/dev/null": os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC),
        }
        for what, fd in bad.items():
            self.track_fd(fd)
            with self.subTest(fd=what):
                self.assert_fails(Error.InvalidArgument, self.c.import_, self.v, fd,
                                  {"size": NEW_SIZE}, extra_dirs=[self.src_dir])
        self.assert_untouched()

    def test_formats(self):
        """qcow2 data goes into a raw volume converted, but only once the inspector has read
        it: this raw source, named qcow2, fails through Import and ImportEnd alike."""
        before = self.snapshot_state()
        error = self.assert_import_fails(Error.UnsafeImage, "file", self.src, {"format": "qcow2"})
        self.assertIn("not a qcow2 image", error.get_dbus_message())
        fd = self.track_fd(self.c.import_begin(self.v, {"size": NEW_SIZE, "format": "qcow2"}))
        copy_data(self.src, fd)
        self.close_fd(fd)
        self.assert_error(Error.UnsafeImage, self.c.import_end, self.v, True)
        self.assert_unchanged(before)
        for fmt in ("vmdk", "", "RAW"):
            with self.subTest(format=fmt):
                self.assert_import_fails(Error.InvalidArgument, "pipe", self.src,
                                         {"format": fmt})
                self.assert_fails(Error.InvalidArgument, self.c.import_begin, self.v,
                                  {"size": NEW_SIZE, "format": fmt})

    def test_unknown_options_and_wrong_types_are_invalid(self):
        for options in ({"bogus": True}, {"sparse": True}, {"size": dbus.String("25165824")},
                        {"size": dbus.UInt32(NEW_SIZE)}, {"format": dbus.UInt32(1)}):
            with self.subTest(options=options):
                self.assert_import_fails(Error.InvalidArgument, "file", self.src, options)
                self.assert_fails(Error.InvalidArgument, self.c.import_begin, self.v,
                                  dict({"size": NEW_SIZE}, **options))
        fd = self.begin()
        self.close_fd(fd)
        self.assert_fails(Error.InvalidArgument, self.c.import_end, self.v, True,
                          {"bogus": True})
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)   # the session stays
        self.c.import_end(self.v, False)
        self.assert_untouched()

    def test_a_started_volume_is_wrong_state(self):
        self.c.start_volume(self.v)
        for kind in ("file", "pipe"):
            with self.subTest(kind=kind):
                self.assert_import_fails(Error.WrongState, kind, self.src)
        self.assert_fails(Error.WrongState, self.c.import_begin, self.v, {"size": NEW_SIZE})
        self.c.stop_volume(self.v)


# ---------------------------------------------------------------------------
# The Job: progress, Busy while it runs, Cancel
# ---------------------------------------------------------------------------

class ImportJobTest(ImportTestCase):

    def start_import(self, kind="pipe", **feeder_args):
        """An Import of src from a stream whose writer pauses after 1 MiB, the Job out already."""
        rec = self.recorder()
        call, feeder = self.import_async(self.v, kind, self.src, pause_at=MiB, **feeder_args)
        job, props = self.import_job(rec, call)
        self.assertTrue(feeder.paused.wait(30), "the daemon did not read the first MiB")
        return call, job, props, feeder, rec

    def assert_cancelled(self, call, job, rec, before):
        self.assertTrue(call.wait(15), "Import did not answer within 15 s of Cancel")
        self.assertEqual(call.error, Error.Cancelled, str(call))
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertIs(completed.args[0], False)
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(job, JOB)))
        self.assert_unchanged(before)
        self.do_import(self.v, "file", self.src)   # nothing holds the volume any more
        self.assert_imported(self.src, [], self.old)

    def test_import_runs_as_a_job(self):
        call, job, props, feeder, rec = self.start_import()
        self.assertEqual(props["Operation"], "Import")
        self.assertEqual(props["Objects"], [self.v])
        self.assertEqual(props["StartedByUID"], 0)
        self.assertIs(props["Cancelable"], True)
        self.assert_near_now_usec(props["StartTime"])
        live = self.c.props(job, JOB)
        self.assertEqual((live["Operation"], live["Objects"]), ("Import", [self.v]))
        self.assertLessEqual(live["BytesDone"], live["BytesTotal"])
        self.assertIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))
        for what, fn, args in (("Import", self.do_import, (self.v, "file", self.src)),
                               ("ImportBegin", self.c.import_begin, (self.v, {"size": SIZE})),
                               ("Remove", self.c.remove_volume, (self.v,)),
                               ("RemovePool", self.c.remove_pool, ("p1",)),
                               ("Start", self.c.start_volume, (self.v,))):
            with self.subTest(while_running=what):
                self.assert_error(Error.Busy, fn, *args)
        feeder.resume()
        self.assertTrue(call.wait(), "Import never answered")
        self.assertTrue(call.ok, str(call))
        completed = rec.wait_for(job_completed(job))
        self.assertIsNotNone(completed, "no Completed signal")
        self.assertEqual(completed.args, (True, ""))
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(job, JOB)))
        self.assertNotIn(job, self.c.prop(ROOT_PATH, MANAGER, "Jobs"))
        self.assert_imported(self.src, [], self.old)

    def test_cancel_mid_copy_from_a_slow_writer(self):
        before = self.snapshot_state()
        call, job, _, feeder, rec = self.start_import(delay=0.02)
        self.c.cancel_job(job)
        feeder.resume()   # the rest comes slowly: well after the Cancel
        self.assert_cancelled(call, job, rec, before)
        self.assertLess(feeder.written, NEW_SIZE, "the writer could deliver everything")

    def cancel_while_the_writer_stalls(self, kind):
        before = self.snapshot_state()
        call, job, _, _, rec = self.start_import(kind)   # not resumed before the answer
        self.c.cancel_job(job)
        self.assert_cancelled(call, job, rec, before)

    def test_cancel_while_a_pipe_writer_stalls(self):
        self.cancel_while_the_writer_stalls("pipe")

    def test_cancel_while_a_socket_writer_stalls(self):
        self.cancel_while_the_writer_stalls("socket")


# ---------------------------------------------------------------------------
# ImportBegin / ImportEnd
# ---------------------------------------------------------------------------

class ImportSessionTest(ImportTestCase):

    def test_write_close_and_end_commits(self):
        fd = self.begin()
        st = os.fstat(fd)
        self.assertEqual(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE, os.O_WRONLY)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(st.st_size, NEW_SIZE)
        self.assertLess(st.st_blocks * 512, MiB, "the staging file is not sparse")
        copy_data(self.src, fd)
        self.close_fd(fd)
        self.c.import_end(self.v, True)
        self.assert_imported(self.src, [], self.old)
        out = os.path.join(self.src_dir, "revision.img")
        out_fd = self.track_fd(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        self.c.export(self.v, out_fd, {"revision": self.revision_ids()[-1]})
        self.close_fd(out_fd)
        self.assertEqual(file_sha256(out), self.old, "Export of the revision is not the old image")
        self.assert_fails(Error.WrongState, self.c.import_end, self.v, True)   # it is over
        self.assert_consistent()

    def test_the_fd_is_write_only(self):
        fd = self.begin()
        with self.assertRaises(OSError) as cm:
            os.pread(fd, 512, 0)
        self.assertEqual(cm.exception.errno, errno.EBADF)
        self.close_fd(fd)
        self.c.import_end(self.v, False)

    def test_end_while_the_fd_is_open_is_busy_and_keeps_the_session(self):
        fd = self.begin()
        copy_data(self.src, fd)
        dup = self.track_fd(os.dup(fd))
        self.assert_fails(Error.Busy, self.c.import_end, self.v, True)
        self.close_fd(fd)
        self.assert_fails(Error.Busy, self.c.import_end, self.v, True)   # the dup is open
        self.close_fd(dup)
        self.c.import_end(self.v, True)
        self.assert_imported(self.src, [], self.old)

    def test_a_staging_file_of_another_size_is_invalid_and_discarded(self):
        before = self.snapshot_state()
        for size in (NEW_SIZE // 2, NEW_SIZE + 512):
            with self.subTest(truncated_to=size):
                fd = self.begin()
                copy_data(self.src, fd)
                os.ftruncate(fd, size)
                self.close_fd(fd)
                self.assert_error(Error.InvalidArgument, self.c.import_end, self.v, True)
                self.assert_unchanged(before)
                self.assert_fails(Error.WrongState, self.c.import_end, self.v, True)

    def test_end_false_discards(self):
        before = self.snapshot_state()
        for close_first in (True, False):
            with self.subTest(fd="closed" if close_first else "open"):
                fd = self.begin()
                copy_data(self.src, fd)
                if close_first:
                    self.close_fd(fd)
                self.c.import_end(self.v, False)
                if not close_first:
                    self.close_fd(fd)
                self.assert_unchanged(before)
                self.assert_fails(Error.WrongState, self.c.import_end, self.v, False)

    def test_end_without_a_session_is_wrong_state(self):
        for commit in (True, False):
            self.assert_fails(Error.WrongState, self.c.import_end, self.v, commit)

    def test_a_second_begin_is_busy(self):
        self.begin()
        self.assert_fails(Error.Busy, self.c.import_begin, self.v, {"size": NEW_SIZE})
        v = self.v
        self.assert_user_fails(Error.Busy, ROOT, lambda c: c.import_begin(v, {"size": NEW_SIZE}))
        other = self.volume_with_data("v2", seed=3)
        self.begin(other)                    # one session per volume, not per caller
        self.c.import_end(other, False)
        self.c.import_end(self.v, False)
        self.assert_untouched()

    def test_end_from_another_connection_is_wrong_state(self):
        fd = self.begin()
        copy_data(self.src, fd)
        self.close_fd(fd)
        v = self.v
        for user in (ROOT, USER_B):
            with self.subTest(user=user.name):
                self.assert_user_fails(Error.WrongState, user, lambda c: c.import_end(v, True))
        self.assert_fails(Error.Busy, self.c.remove_volume, self.v)   # the session stays
        self.c.import_end(self.v, True)
        self.assert_imported(self.src, [], self.old)

    def test_the_callers_disconnection_discards_the_session(self):
        before = self.snapshot_state()
        v, src = self.v, self.src

        def write_and_leave(c):
            fd = c.import_begin(v, {"size": NEW_SIZE})
            copy_data(src, fd)
            os.close(fd)
        outcome = harness.as_user(ROOT, write_and_leave)
        self.assertTrue(outcome.ok, str(outcome))
        fd = self.track_fd(harness.retry_while_busy(self.c.import_begin, self.v,
                                                    {"size": NEW_SIZE}))
        self.close_fd(fd)
        self.c.import_end(self.v, False)
        self.wait_staging_gone()
        self.assert_unchanged(before)

    def test_an_idle_session_times_out(self):
        self.env.stop_daemon()
        self.env.start_daemon(extra_args=["--session-timeout=1"])
        before = self.snapshot_state()
        fd = self.begin()
        copy_data(self.src, fd)   # the last write; the fd stays open
        again = self.track_fd(harness.retry_while_busy(self.c.import_begin, self.v,
                                                       {"size": NEW_SIZE}, timeout=15))
        self.close_fd(again)
        self.c.import_end(self.v, False)
        self.close_fd(fd)
        self.wait_staging_gone()
        self.assert_unchanged(before)

    def test_a_session_makes_the_volume_busy(self):
        self.begin()
        for what, fn, args in (("Remove", self.c.remove_volume, (self.v,)),
                               ("RemovePool", self.c.remove_pool, ("p1",)),
                               ("Start", self.c.start_volume, (self.v,)),
                               ("Resize", self.c.resize, (self.v, 2 * SIZE)),
                               ("Import", self.do_import, (self.v, "file", self.src))):
            with self.subTest(method=what):
                self.assert_fails(Error.Busy, fn, *args, extra_dirs=[self.src_dir])
        self.c.import_end(self.v, False)
        self.c.remove_volume(self.v)


# ---------------------------------------------------------------------------
# SIGKILL in the middle
# ---------------------------------------------------------------------------

class ImportCrashTest(ImportTestCase):

    def setUp(self):
        super().setUp()
        self.files = harness.tree_listing(dir_volume_file(self.pool.dir, "v1"))
        self.revisions = self.c.prop(self.v, VOLUME, "Revisions")

    def assert_unchanged_after_restart(self):
        self.assertEqual(self.c.prop(self.v, VOLUME, "Revisions"), self.revisions)   # restarts
        self.assertEqual(self.c.prop(self.v, VOLUME, "Size"), SIZE)
        self.assert_untouched()
        self.assertEqual(staging_entries(self.env.dirs["state"]), [])
        self.assertEqual(harness.tree_listing(dir_volume_file(self.pool.dir, "v1")), self.files)
        self.assert_consistent()
        self.do_import(self.v, "file", self.src)   # nothing holds the volume
        self.assert_imported(self.src, [], self.old)

    def kill(self):
        self.assertTrue(self.env.kill_daemon(), "cisternd survived SIGKILL")

    def test_kill_mid_import_from_a_pipe(self):
        rec = self.recorder()
        call, feeder = self.import_async(self.v, "pipe", self.src, pause_at=4 * MiB)
        self.import_job(rec, call)
        self.assertTrue(feeder.paused.wait(30), "the daemon did not read the first 4 MiB")
        self.kill()
        self.assertTrue(call.wait(30), "no answer after the daemon died")
        self.assertFalse(call.ok, "Import succeeded with a quarter of the bytes")
        feeder.finish()
        self.assert_unchanged_after_restart()

    def kill_in_session(self, close_first):
        fd = self.begin()
        copy_data(self.src, fd)
        if close_first:
            self.close_fd(fd)
        self.kill()
        if not close_first:
            self.close_fd(fd)
        self.assert_unchanged_after_restart()

    def test_kill_in_a_session_with_the_fd_open(self):
        self.kill_in_session(close_first=False)

    def test_kill_in_a_session_with_the_fd_closed(self):
        self.kill_in_session(close_first=True)


# ---------------------------------------------------------------------------
# Authorization
# ---------------------------------------------------------------------------

class ImportAuthorizationTest(ImportTestCase):
    """modify / modify-own (SPEC §5): avol is USER_A's, bvol USER_B's, v1 root's."""

    def setUp(self):
        super().setUp()
        self.avol = self.volume_with_data("avol", seed=5, owner=USER_A.uid)
        self.bvol = self.volume_with_data("bvol", seed=6, owner=USER_B.uid)
        self.digests = {name: file_sha256(self.image(name)) for name in ("v1", "avol", "bvol")}

    @staticmethod
    def import_as(obj, source):
        """fn for as_user: open source and Import it into obj."""
        def fn(c):
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                c.import_(obj, fd)
            finally:
                os.close(fd)
        return fn

    @staticmethod
    def begin_as(obj, source):
        """fn for as_user: ImportBegin, write source, close, ImportEnd(true)."""
        def fn(c):
            fd = c.import_begin(obj, {"size": os.path.getsize(source)})
            copy_data(source, fd)
            os.close(fd)
            c.import_end(obj, True)
        return fn

    def assert_denied(self, name):
        obj = harness.volume_path("p1", name)
        rec = self.recorder()
        for how in (self.import_as, self.begin_as):
            with self.subTest(volume=name, method=how.__name__):
                self.assert_user_fails(Error.NotAuthorized, USER_A, how(obj, self.src),
                                       extra_dirs=[self.src_dir])
        rec.drain()
        self.assertEqual(rec.matching(job_added("Import")), [], "a denied import ran a Job")
        self.assertEqual(file_sha256(self.image(name)), self.digests[name])
        self.assertEqual(staging_entries(self.pool.dir), [])
        self.c.remove_volume(obj)   # no session was left behind

    def test_denied_without_rules(self):
        self.assert_denied("v1")
        self.assert_denied("avol")

    def test_modify_own_imports_only_own_volumes(self):
        self.env.set_polkit_rules(rule_allowing(VOLUME_MODIFY_OWN, USER_A))
        rec = self.recorder()
        self.assert_user_succeeds(USER_A, self.import_as(self.avol, self.src))
        added = rec.wait_for(job_added("Import"))
        self.assertIsNotNone(added, "no Import Job appeared")
        self.assertEqual(added.args[1][JOB]["StartedByUID"], USER_A.uid)
        self.assert_imported(self.src, [], self.digests["avol"], name="avol")
        second = self.source("second.img", NEW_SIZE - MiB, seed=7)
        before = self.revision_ids(self.avol)
        self.assert_user_succeeds(USER_A, self.begin_as(self.avol, second))
        self.assert_imported(second, before, file_sha256(self.src), name="avol")
        self.assert_denied("bvol")
        self.assert_denied("v1")


if __name__ == "__main__":
    harness.main()
