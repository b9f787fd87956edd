#!/usr/bin/python3
"""Import, ImportBegin/ImportEnd and Export across formats (SPEC §4.3, §6).

The bytes a caller imports may be raw or qcow2 whatever the volume keeps: they are staged as
they come, a qcow2 image passes cistern's inspector, and bytes of the other format are converted.
Export writes the image's own bytes, or converts them through a staging object of the pool,
never letting qemu open the caller's descriptor.

The hostile corpus is made here with qemu-img and byte patching: qcow2 images naming a backing
file (a canary whose atime must stay 1), an external data file, json: and nbd: backing names,
an unknown incompatible feature, version 1, a virtual size of 2^62 and an L1 table past the end
of the file.  Each one, through a file, a pipe and an import session, into a qcow2 and a raw
volume, is UnsafeImage and changes nothing (assert_fails snapshots the state)."""

import os
import shutil
import struct
import tempfile
import threading

import dbus

import harness
from harness import (JOB, QEMU_IMG, VOLUME, AsyncCall, Error, KiB, MiB, dir_volume_file, file_sha256,
                     guest_bytes, job_added, job_completed, properties_changed, qemu_image_info,
                     qemu_img, staging_entries, write_pattern)
QCOW2_MAGIC = b"QFI\xfb"
SIZE = 16 * MiB         # every volume before an import
NEW_SIZE = 24 * MiB     # the guest-visible size of what is imported: Size must follow
HOWS = ("file", "pipe", "session")


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def patch(path, offset, fmt, value):
    """Overwrites the big-endian header field at offset."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.pwrite(fd, struct.pack(fmt, value), offset)
    finally:
        os.close(fd)


class Writer(threading.Thread):
    """Writes a file into the write end of a pipe, then closes it; with hold_after, stops after
    that many bytes, holding the pipe open until release()."""

    def __init__(self, fd, path, hold_after=None):
        super().__init__(daemon=True)
        self.fd, self.path, self.hold_after = fd, path, hold_after
        self.held = threading.Event()
        self._go = threading.Event()
        self.start()

    def run(self):
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            if self.hold_after is not None:
                self._write(data[:self.hold_after])
                self.held.set()
                self._go.wait()
                data = data[self.hold_after:]
            self._write(data)
        except OSError:
            pass            # the daemon closed its end
        finally:
            os.close(self.fd)

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view[:256 * KiB]):]

    def release(self):
        self._go.set()


class Qcow2IoTestCase(harness.CisternTestCase):
    """Pool p1; in self.dir (not in the pools or state directories) the source images: raw_src,
    NEW_SIZE bytes of data between holes (self.content), and qcow2_src, the same disk as qcow2."""

    def setUp(self):
        super().setUp()
        if not os.access(QEMU_IMG, os.X_OK):
            self.skipTest("qemu-img is not installed")
        self.pool = self.make_pool("p1")
        self.dir = tempfile.mkdtemp(prefix="qcow2-io-", dir=self.env.tmp)
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.raw_src = self.path("data.raw")
        with open(self.raw_src, "wb") as f:
            f.truncate(NEW_SIZE)
        write_pattern(self.raw_src, 7)
        self.content = read_file(self.raw_src)
        self.qcow2_src = self.path("data.qcow2")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", self.raw_src, self.qcow2_src)

    def path(self, name):
        return os.path.join(self.dir, name)

    def image(self, name, *rest):
        return dir_volume_file(self.pool.dir, name, *(rest or ("image",)))

    def prop(self, obj, name):
        return self.c.prop(obj, VOLUME, name)

    def volume(self, name, fmt, seed=None):
        """A volume of SIZE in format fmt; a raw one holds data of seed when given."""
        obj = self.make_volume(self.pool, name, SIZE, format=fmt)
        if seed is not None:
            write_pattern(self.image(name), seed)
            self.c.refresh_pool(self.pool.obj)
        return obj

    def guest(self, name, *rest):
        """The guest's view of a committed image (or revision) of volume name, read in the
        format the volume's Format says for the image."""
        fmt = self.prop(harness.volume_path("p1", name), "Format")
        return guest_bytes(self.image(name, *rest), fmt)

    def assert_clean(self):
        self.assertEqual(staging_entries(self.pool.dir), [], "a staging object stayed")

    # -- the three ways in --

    def import_file(self, obj, source, options=None):
        fd = self.track_fd(os.open(source, os.O_RDONLY | os.O_CLOEXEC))
        try:
            self.c.import_(obj, fd, options)
        finally:
            self.close_fd(fd)

    def import_pipe(self, obj, source, options=None):
        r, w = os.pipe2(os.O_CLOEXEC)
        self.track_fd(r)
        writer = Writer(w, source)
        try:
            self.c.import_(obj, r, dict(options or {}, size=os.path.getsize(source)))
        finally:
            self.close_fd(r)
            writer.join(10)

    def import_session(self, obj, source, options=None):
        fd = self.track_fd(self.c.import_begin(obj, dict(options or {},
                                                         size=os.path.getsize(source))))
        try:
            os.pwrite(fd, read_file(source), 0)
        finally:
            self.close_fd(fd)
        self.c.import_end(obj, True)

    def import_by(self, how, obj, source, options=None):
        return getattr(self, "import_" + how)(obj, source, options)

    # -- the way out --

    def export_file(self, obj, name, options=None):
        out = self.path(name)
        fd = self.track_fd(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                   0o644))
        try:
            self.c.export(obj, fd, options)
        finally:
            self.close_fd(fd)
        return out

    def export_pipe(self, obj, options=None):
        """The bytes an Export into a pipe gave, read while the call runs."""
        r, w = os.pipe2(os.O_CLOEXEC)
        self.track_fd(r)
        call = AsyncCall(self.env.bus, obj, VOLUME, "Export", "ha{sv}", dbus.types.UnixFd(w),
                         harness.variant_dict(options or {}))
        os.close(w)
        chunks = []
        while True:
            harness.dispatch_pending()
            data = os.read(r, MiB)
            if not data:
                break
            chunks.append(data)
        self.close_fd(r)
        self.assertTrue(call.wait(), "Export never answered")
        self.assertTrue(call.ok, str(call))
        return b"".join(chunks)


# ---------------------------------------------------------------------------
# Import of either format into either kind of volume
# ---------------------------------------------------------------------------

class ImportAcrossFormatsTest(Qcow2IoTestCase):

    def test_raw_data_into_a_qcow2_volume_is_converted(self):
        for how in HOWS:
            with self.subTest(how=how):
                name = "q-" + how
                obj = self.volume(name, "qcow2")
                empty = self.guest(name)
                self.import_by(how, obj, self.raw_src, {"format": "raw"})
                self.assertEqual(self.prop(obj, "Format"), "qcow2")
                self.assertEqual(self.prop(obj, "Size"), NEW_SIZE)
                self.assertEqual(read_file(self.image(name))[:4], QCOW2_MAGIC)
                info = qemu_image_info(self.image(name), "qcow2")
                self.assertNotIn("backing-filename", info)
                self.assertTrue(self.guest(name) == self.content, "the image is not the import")
                (rev, _), = self.prop(obj, "Revisions")
                self.assertTrue(self.guest(name, "revisions", rev) == empty,
                                "the revision is not the previous image")
                self.assert_clean()

    def test_qcow2_data_into_a_raw_volume_is_converted(self):
        for how in HOWS:
            with self.subTest(how=how):
                name = "r-" + how
                obj = self.volume(name, "raw", seed=3)
                old = file_sha256(self.image(name))
                self.import_by(how, obj, self.qcow2_src, {"format": "qcow2"})
                self.assertEqual(self.prop(obj, "Format"), "raw")
                self.assertEqual(self.prop(obj, "Size"), NEW_SIZE)
                self.assertTrue(read_file(self.image(name)) == self.content,
                                "the raw image is not the qcow2 image's disk")
                (rev, _), = self.prop(obj, "Revisions")
                self.assertEqual(file_sha256(self.image(name, "revisions", rev)), old)
                self.assert_clean()

    def test_qcow2_data_into_a_qcow2_volume_is_committed_as_it_is(self):
        """format defaults to the volume's own."""
        for how in HOWS:
            with self.subTest(how=how):
                name = "q-" + how
                obj = self.volume(name, "qcow2")
                self.import_by(how, obj, self.qcow2_src)
                self.assertEqual(file_sha256(self.image(name)), file_sha256(self.qcow2_src))
                self.assertEqual(self.prop(obj, "Size"), NEW_SIZE)
                self.assertTrue(self.export_pipe(obj, {"format": "raw"}) == self.content)
                self.assert_clean()

    def test_raw_data_into_a_raw_volume_is_unchanged_behaviour(self):
        obj = self.volume("r", "raw", seed=3)
        self.import_file(obj, self.raw_src)
        self.assertEqual(file_sha256(self.image("r")), file_sha256(self.raw_src))
        self.assert_clean()

    def test_qcow2_data_is_not_held_to_multiples_of_512(self):
        empty = self.path("empty.qcow2")
        qemu_img("create", "-q", "-f", "qcow2", empty, str(NEW_SIZE))
        self.assertNotEqual(os.path.getsize(empty) % 512, 0, "qemu-img made whole sectors")
        obj = self.volume("r", "raw", seed=3)
        self.import_pipe(obj, empty, {"format": "qcow2"})
        self.assertEqual(self.prop(obj, "Size"), NEW_SIZE)
        self.assertTrue(read_file(self.image("r")) == bytes(NEW_SIZE))

    def test_a_converting_session_commits_through_a_job(self):
        obj = self.volume("q", "qcow2")
        rec = self.recorder()
        self.import_session(obj, self.raw_src, {"format": "raw"})
        added = rec.wait_for(job_added("ImportEnd"))
        self.assertIsNotNone(added, "no job converted the session's image")
        self.assertIsNotNone(rec.wait_for(job_completed(added.args[0])))
        self.assertTrue(self.guest("q") == self.content)

    def test_raw_sizes_stay_whole_sectors(self):
        odd = self.path("odd.raw")
        with open(odd, "wb") as f:
            f.truncate(NEW_SIZE + 100)
        obj = self.volume("q", "qcow2")
        self.assert_fails(Error.InvalidArgument, self.import_file, obj, odd, {"format": "raw"})
        self.assert_fails(Error.InvalidArgument, self.c.import_begin, obj,
                          {"size": NEW_SIZE + 100, "format": "raw"})


class ImportJobAcrossFormatsTest(Qcow2IoTestCase):

    def test_progress_covers_both_steps_and_never_goes_back(self):
        """Staging is the first half of the job, the conversion the second."""
        obj = self.volume("q", "qcow2")
        rec = self.recorder()
        r, w = os.pipe2(os.O_CLOEXEC)
        self.track_fd(r)
        writer = Writer(w, self.raw_src, hold_after=NEW_SIZE // 2)
        call = AsyncCall(self.env.bus, obj, VOLUME, "Import", "ha{sv}", dbus.types.UnixFd(r),
                         harness.variant_dict({"format": "raw", "size": NEW_SIZE}))
        self.close_fd(r)
        added = rec.wait_for(job_added("Import"), timeout=10)
        self.assertIsNotNone(added, "no Import job")
        job = added.args[0]
        self.assertEqual(added.args[1][JOB]["BytesTotal"], 2 * NEW_SIZE)
        self.assertTrue(writer.held.wait(30), "the daemon did not read the first half")
        halfway = rec.wait_for(lambda s: properties_changed(job, JOB, "Progress")(s)
                               and 0.2 <= s.args[1].get("Progress", 0) <= 0.3, timeout=10)
        self.assertIsNotNone(halfway, "half the data staged is not a quarter of the job: %s"
                             % self.progress_values(rec, job))
        writer.release()
        self.assertTrue(call.wait(), "Import never answered")
        self.assertTrue(call.ok, str(call))
        writer.join(10)
        completed = rec.wait_for(job_completed(job))
        self.assertEqual(completed.args[0], True)
        values = self.progress_values(rec, job)
        self.assertEqual(values, sorted(values), "progress went back: %s" % values)
        self.assertLessEqual(max(values), 1.0)
        self.assertAlmostEqual(values[-1], 1.0)
        self.assertTrue(self.guest("q") == self.content)

    @staticmethod
    def progress_values(rec, job):
        return [s.args[1]["Progress"] for s in rec.matching(properties_changed(job, JOB, "Progress"))
                if "Progress" in s.args[1]]

    def test_cancel_while_staging_leaves_no_trace(self):
        obj = self.volume("q", "qcow2")
        before = self.snapshot_state()
        rec = self.recorder()
        r, w = os.pipe2(os.O_CLOEXEC)
        self.track_fd(r)
        writer = Writer(w, self.raw_src, hold_after=MiB)
        call = AsyncCall(self.env.bus, obj, VOLUME, "Import", "ha{sv}", dbus.types.UnixFd(r),
                         harness.variant_dict({"format": "raw", "size": NEW_SIZE}))
        self.close_fd(r)
        added = rec.wait_for(job_added("Import"), timeout=10)
        self.assertIsNotNone(added, "no Import job")
        self.assertTrue(writer.held.wait(30), "the daemon did not read the first MiB")
        self.c.cancel_job(added.args[0])
        self.assertTrue(call.wait(15), "Import did not answer after Cancel")
        writer.release()
        writer.join(10)
        self.assertEqual(call.error, Error.Cancelled, str(call))
        self.assertIsNotNone(rec.wait_for(job_completed(added.args[0])))
        self.assertEqual(self.snapshot_state(), before)


# ---------------------------------------------------------------------------
# Export in either format
# ---------------------------------------------------------------------------

class ExportAcrossFormatsTest(Qcow2IoTestCase):

    def raw_volume_with_content(self):
        obj = self.volume("r", "raw")
        self.import_file(obj, self.raw_src)
        return obj

    def qcow2_volume_with_content(self):
        obj = self.volume("q", "qcow2")
        self.import_file(obj, self.qcow2_src)
        return obj

    def test_qcow2_of_a_raw_volume_into_a_file(self):
        obj = self.raw_volume_with_content()
        for sparse in (True, False):
            with self.subTest(sparse=sparse):
                out = self.export_file(obj, "out-%s.qcow2" % sparse,
                                       {"format": "qcow2", "sparse": sparse})
                info = qemu_image_info(out, "qcow2")
                self.assertEqual((info["format"], info["virtual-size"]), ("qcow2", NEW_SIZE))
                self.assertNotIn("backing-filename", info)
                self.assertNotIn("data-file", info.get("format-specific", {}).get("data", {}))
                self.assertTrue(guest_bytes(out, "qcow2") == self.content)
                self.assert_clean()
        self.assertEqual(self.prop(obj, "Format"), "raw")

    def test_qcow2_of_a_raw_volume_into_a_pipe_is_refused(self):
        obj = self.raw_volume_with_content()
        r, w = os.pipe2(os.O_CLOEXEC)
        self.track_fd(r)
        self.track_fd(w)
        error = self.assert_fails(Error.InvalidArgument, self.c.export, obj, w,
                                  {"format": "qcow2"})
        self.assertIn("regular file", error.get_dbus_message())
        os.set_blocking(r, False)
        with self.assertRaises(BlockingIOError, msg="bytes were written into the pipe"):
            os.read(r, 1)

    def test_raw_of_a_qcow2_volume_into_a_pipe(self):
        obj = self.qcow2_volume_with_content()
        self.assertTrue(self.export_pipe(obj, {"format": "raw"}) == self.content)
        self.assertTrue(self.export_pipe(obj) == self.content, "raw is the default")
        self.assert_clean()

    def test_raw_of_a_qcow2_volume_into_a_file_keeps_holes(self):
        obj = self.qcow2_volume_with_content()
        out = self.export_file(obj, "out.raw", {"format": "raw"})
        self.assertTrue(read_file(out) == self.content)
        self.assertLess(os.stat(out).st_blocks * 512, NEW_SIZE // 2, "the holes were written")
        self.assert_clean()

    def test_qcow2_of_a_qcow2_volume_is_its_image(self):
        obj = self.qcow2_volume_with_content()
        self.assertEqual(file_sha256(self.export_file(obj, "out.qcow2", {"format": "qcow2"})),
                         file_sha256(self.image("q")))
        self.assertTrue(self.export_pipe(obj, {"format": "qcow2"}) == read_file(self.image("q")))

    def test_a_revision_of_the_old_format_after_a_convert(self):
        obj = self.raw_volume_with_content()
        self.c.call(obj, VOLUME, "Convert", "sa{sv}", "qcow2", harness.variant_dict({}),
                    timeout=harness.CALL_TIMEOUT)
        self.assertEqual(self.prop(obj, "Format"), "qcow2")
        (rev, _), = self.prop(obj, "Revisions")
        # The revision is raw: as it is, or converted to qcow2.
        self.assertTrue(read_file(self.export_file(obj, "rev.raw", {"revision": rev})) == self.content)
        self.assertTrue(self.export_pipe(obj, {"revision": rev, "format": "raw"}) == self.content)
        out = self.export_file(obj, "rev.qcow2", {"revision": rev, "format": "qcow2"})
        self.assertEqual(qemu_image_info(out, "qcow2")["format"], "qcow2")
        self.assertTrue(guest_bytes(out, "qcow2") == self.content)
        # The image is qcow2 now: its bytes, or converted to raw.
        self.assertEqual(file_sha256(self.export_file(obj, "now.qcow2", {"format": "qcow2"})),
                         file_sha256(self.image("r")))
        self.assertTrue(read_file(self.export_file(obj, "now.raw")) == self.content)
        self.assert_clean()

    def test_export_runs_as_one_job(self):
        obj = self.raw_volume_with_content()
        rec = self.recorder()
        self.export_file(obj, "out.qcow2", {"format": "qcow2"})
        self.assertIsNotNone(rec.wait_for(job_added("Export")), "no Export job")
        rec.drain()
        added = rec.matching(job_added())
        self.assertEqual(len(added), 1, "not one job: %s" % added)
        completed = rec.wait_for(job_completed(added[0].args[0]))
        self.assertEqual(completed.args[0], True)


# ---------------------------------------------------------------------------
# The hostile corpus
# ---------------------------------------------------------------------------

class HostileImportTest(Qcow2IoTestCase):
    """Every image of the corpus, every way in, into a qcow2 volume (format by default) and a raw
    one (format=qcow2): UnsafeImage naming the reason, nothing changed, no file read."""

    def setUp(self):
        super().setUp()
        # Outside the pools and state directories: snapshot_state() reads small files there.
        self.canary = self.path("canary")
        with open(self.canary, "wb") as f:
            f.write(b"host secret\n" * 100)
        self.data_file = self.path("external.raw")
        self.corpus = self.make_corpus()
        for path in (self.canary, self.data_file):
            os.utime(path, (1, 1))

    def evil(self, name, *create_args):
        path = self.path(name + ".qcow2")
        qemu_img("create", "-q", "-f", "qcow2", *create_args, path, str(NEW_SIZE))
        return path

    def patched(self, name, offset, fmt, value):
        path = self.evil(name)
        patch(path, offset, fmt, value)
        return path

    def make_corpus(self):
        """{name: (path, a word the refusal names)}. qemu-img -u writes backing names without
        opening them."""
        return {
            "backing file": (self.evil("backing", "-u", "-F", "raw", "-b", self.canary),
                             "backing file"),
            "external data file": (self.evil("data-file", "-o", "data_file=" + self.data_file),
                                   "data file"),
            "json: backing": (self.evil("json", "-u", "-F", "raw", "-b",
                                        'json:{"driver":"file","filename":"%s"}' % self.canary),
                              "backing file"),
            "nbd: backing": (self.evil("nbd", "-u", "-F", "raw", "-b", "nbd:localhost:10809"),
                             "backing file"),
            "unknown incompatible feature": (self.patched("feature", 72, ">Q", 1 << 40),
                                             "incompatible feature"),
            "version 1": (self.patched("v1", 4, ">I", 1), "version"),
            "virtual size 2^62": (self.patched("huge", 24, ">Q", 1 << 62), "unsafe"),
            "L1 table past the end": (self.patched("l1", 40, ">Q", 1 << 40), "L1 table"),
        }

    def assert_files_unread(self):
        for path in (self.canary, self.data_file):
            self.assertEqual(os.stat(path).st_atime, 1, "%s was read" % path)

    def test_the_corpus_is_what_it_claims(self):
        """The qemu-made images carry what they should (read from their bytes, not by qemu)."""
        self.assertIn(self.canary.encode(), read_file(self.corpus["backing file"][0]))
        self.assertIn(b"json:{", read_file(self.corpus["json: backing"][0]))
        self.assertIn(b"nbd:localhost", read_file(self.corpus["nbd: backing"][0]))
        self.assertIn(self.data_file.encode(), read_file(self.corpus["external data file"][0]))
        self.assert_files_unread()

    def check(self, target_format, options):
        obj = self.volume("v-" + target_format, target_format,
                          seed=3 if target_format == "raw" else None)
        for what, (path, word) in self.corpus.items():
            for how in HOWS:
                with self.subTest(image=what, how=how):
                    error = self.assert_fails(Error.UnsafeImage, self.import_by, how, obj, path,
                                              options)
                    message = error.get_dbus_message()
                    self.assertTrue(message.startswith("The qcow2 image is unsafe: "), message)
                    self.assertIn(word.lower(), message.lower())
                    self.assertEqual(staging_entries(self.pool.dir), [])
        self.assert_files_unread()
        self.assertEqual(self.prop(obj, "Revisions"), [])

    def test_into_a_qcow2_volume(self):
        self.check("qcow2", None)

    def test_an_image_made_unsafe_behind_the_daemons_back_is_not_converted_on_export(self):
        """As a VM runner with a writable descriptor of the working copy could leave it: the
        export as raw goes through qemu, so the inspector refuses it; as qcow2 it is bytes."""
        obj = self.volume("q", "qcow2")
        shutil.copyfile(self.corpus["backing file"][0], self.image("q"))
        out = self.path("out.raw")
        fd = self.track_fd(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        error = self.assert_fails(Error.UnsafeImage, self.c.export, obj, fd, {"format": "raw"})
        self.assertIn("backing file", error.get_dbus_message())
        self.assertEqual(os.path.getsize(out), 0)
        self.assert_files_unread()
        self.assertEqual(self.export_pipe(obj, {"format": "qcow2"}),
                         read_file(self.corpus["backing file"][0]))

    def test_into_a_raw_volume_as_qcow2(self):
        self.check("raw", {"format": "qcow2"})


if __name__ == "__main__":
    harness.main()
