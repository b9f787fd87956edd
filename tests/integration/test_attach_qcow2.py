#!/usr/bin/python3
"""Attach, Detach and Mount of qcow2 volumes (SPEC §4.3, §6), on real loop devices through a real
udevd and a real qemu-storage-daemon.

A qcow2 volume's device is a loop device on a file that qemu-storage-daemon serves over FUSE
under <runtime dir>/exports: the guest's view of the image, raw. What is checked:
- the device holds the guest's bytes (not the qcow2 file's), its GPT partitions appear as for a
  raw volume, and an ext4 partition mounts; data written through a started volume's device
  is in its qcow2 working copy (qemu-img check passes), survives Detach and Attach, and is
  committed by Stop;
- a read-only Attach gets a read-only device and an export that is not writable either;
- Detach leaves no qemu-storage-daemon, no FUSE mount, no file under exports and no record;
  a failed Attach (hostile partition table) leaves none either;
- cisternd killed with SIGKILL, or exiting idle, leaves the device attached and working; at
  its next start it finds it again (Device, Partitions), and Detach then works; Resize of a
  started volume attached writable goes through its export and the device follows, attached
  read-only it is Busy;
- a qemu-storage-daemon killed behind cisternd's back: at the next start the stale loop device
  is detached and the dead mount and files are removed (and Detach does the same while
  cisternd runs); a loop device detached behind its back, or a volume gone: its
  qemu-storage-daemon is ended;
- a raw volume whose bytes are a qcow2 header is attached as raw: the device shows that header,
  and no qemu-storage-daemon is involved.

Needs root, loop devices, systemd-udevd, /dev/fuse, qemu-img and qemu-storage-daemon, sfdisk and
mkfs.ext4.
"""

import contextlib
import errno
import os
import signal
import subprocess

import dbus

import harness
import test_attach
from harness import VOLUME, Error, KiB, MiB, dir_volume_file, loop_devices_under, poll_until

QEMU_IMG = "/usr/bin/qemu-img"
QEMU_STORAGE_DAEMON = "/usr/bin/qemu-storage-daemon"
WAIT = test_attach.WAIT
SECTOR = test_attach.SECTOR

# A GPT disk with one ext4 partition.
DISK = 64 * MiB
LAYOUT = [(1, 1 * MiB, 32 * MiB, "ext4")]


def storage_daemons():
    """{pid: argv} of the live qemu-storage-daemon processes (the test's pid namespace holds only
    its own; zombies, which only wait to be reaped, do not count)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, IndexError):
            continue
        if state != "Z" and argv and os.path.basename(argv[0]) == "qemu-storage-daemon":
            found[int(entry)] = argv
    return found


class AttachQcow2TestCase(test_attach.AttachTestCase):

    def setUp(self):
        super().setUp()
        self.need_tools(QEMU_IMG, QEMU_STORAGE_DAEMON)
        if not os.path.exists("/dev/fuse"):
            self.skipTest("no /dev/fuse")
        self.exports = os.path.join(self.run_dir, "exports")
        self.addCleanup(self.end_leftover_daemons)

    def end_leftover_daemons(self):
        """A failed test may leave a qemu-storage-daemon behind: it goes before the next test."""
        for pid in storage_daemons():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            poll_until(lambda: not storage_daemons(), WAIT, "leftover qemu-storage-daemons to end")

    # -- volumes ----------------------------------------------------------------

    def qcow2_volume(self, name, size=8 * MiB, started=False):
        obj = self.make_volume(self.pool, name, size, format="qcow2")
        if self.c.prop(obj, VOLUME, "Format") != "qcow2":
            self.skipTest("CreateVolume does not make qcow2 volumes")
        if started:
            self.c.start_volume(obj)
        return obj

    def raw_disk(self, write=None):
        """A raw GPT disk image with an ext4 partition, in the scratch directory; write, when
        given, then changes it (a hostile table, say)."""
        path = os.path.join(self.env.dirs["scratch"], "disk-%s.raw" % self.id().rsplit(".", 1)[1])
        with open(path, "wb") as f:
            f.truncate(DISK)
        self.addCleanup(os.unlink, path)
        self.write_table(path, "gpt", LAYOUT)
        if write:
            write(path)
        return path

    def partitioned_qcow2_volume(self, name, started=False, write=None):
        """A qcow2 volume whose guest sees raw_disk(); returns (volume, raw disk). Its image is
        made by qemu-img while cisternd is stopped (the next call starts it again)."""
        raw = self.raw_disk(write)
        obj = self.qcow2_volume(name, DISK)
        self.env.stop_daemon()
        image = self.image(name)
        staged = os.path.join(os.path.dirname(image), "converted")
        harness.run_checked([QEMU_IMG, "convert", "-q", "-f", "raw", "-O", "qcow2", raw, staged])
        os.rename(staged, image)
        self.assertEqual(self.c.prop(obj, VOLUME, "Size"), DISK)
        if started:
            self.c.start_volume(obj)
        return obj, raw

    # -- state ------------------------------------------------------------------

    def export_files(self):
        return sorted(os.listdir(self.exports)) if os.path.isdir(self.exports) else []

    def exports_mounted(self):
        prefix = os.path.realpath(self.exports) + "/"
        return [m for m in harness.mounts_under(self.env.tmp) if m.startswith(prefix)]

    def qcow2_record(self, device):
        """The record of device, which must name an export: (text, export name)."""
        diskseq = int(test_attach.sysfs_read(device, "diskseq"))
        text = self.records().get(diskseq)
        self.assertIsNotNone(text, "no record for %s" % device)
        lines = dict(line.split("=", 1) for line in text.splitlines())
        self.assertIn("CISTERN_EXPORT", lines, text)
        return lines, lines["CISTERN_EXPORT"]

    def assert_qcow2_attached(self, obj, name, device, read_only, partitions=()):
        """The device is a loop device on the volume's live export, with its record, links and
        partitions; returns (export name, pid of its qemu-storage-daemon)."""
        self.assertRegex(device, r"^/dev/loop[0-9]+$")
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), device)
        lines, export = self.qcow2_record(device)
        self.assertEqual((lines["CISTERN_POOL"], lines["CISTERN_VOLUME"]), ("p1", name))
        self.assertTrue(export.startswith("p1:%s:" % name), export)
        path = os.path.join(self.exports, export)
        self.assertEqual(test_attach.backing_file(device), os.path.realpath(path))
        self.assertEqual(test_attach.sysfs_read(device, "ro"), "1" if read_only else "0")
        self.assertEqual(test_attach.sysfs_read(device, "loop", "partscan"), "0")
        self.assertIn(os.path.realpath(path), self.exports_mounted())
        self.assertEqual(oct(os.stat(self.exports).st_mode & 0o777), oct(0o700),
                         "the exports directory must be root's alone")

        # Its qemu-storage-daemon: alive, named by the pidfile, writable as the device is.
        with open(path + ".pid") as f:
            pid = int(f.read())
        daemons = storage_daemons()
        self.assertIn(pid, daemons)
        export_arg = daemons[pid][daemons[pid].index("--export") + 1]
        self.assertIn("writable=%s" % ("off" if read_only else "on"), export_arg)

        expected = [(number, "%sp%d" % (device, number), start, size, fstype)
                    for number, start, size, fstype in partitions]
        self.assertEqual(self.c.prop(obj, VOLUME, "Partitions"), expected)
        self.assertEqual(test_attach.loop_partition_numbers(device), [p[0] for p in partitions])
        for number, node in [(None, device)] + [(p[0], p[1]) for p in expected]:
            link = self.link(name, number)
            self.assertEqual(os.path.realpath(link), node, "%s at reply time" % link)
            props = self.env.udev_properties(node)
            self.assertEqual(props.get("UDISKS_IGNORE"), "1", props)
            self.assertNotIn("ID_FS_TYPE", props)
        return export, pid

    def assert_qcow2_gone(self, obj, name, pid=None):
        """Nothing of the volume's attachment is left: device, partitions, records, links,
        qemu-storage-daemon, FUSE mount, export files."""
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), "")
        self.assertEqual(self.c.prop(obj, VOLUME, "Partitions"), [])
        self.settle_until(lambda: not loop_devices_under(self.env.dirs["run"]),
                          "the loop devices on exports to go")
        poll_until(lambda: not self.export_files() and not self.exports_mounted()
                   and not storage_daemons(), WAIT, "the export of %s to end" % name)
        if pid is not None:
            self.assertFalse(os.path.exists("/proc/%d/cmdline" % pid)
                             and pid in storage_daemons())
        self.assertFalse([t for t in self.records().values()
                          if "CISTERN_VOLUME=%s\n" % name in t], self.records())
        poll_until(lambda: not [l for l in test_attach.links_under("/dev/cistern")
                                if os.path.basename(l).split("-part")[0] == name],
                   WAIT, "the links of %s to go" % name)

    # -- data -------------------------------------------------------------------

    def mount(self, obj, partition, **options):
        """Mount; a cleanup unmounts it again if the test did not (before it detaches)."""
        point = str(self.c.call(obj, VOLUME, "Mount", "ua{sv}", dbus.UInt32(partition),
                                harness.variant_dict(options)))
        self.addCleanup(self.unmount_quietly, obj, partition)
        return point

    def unmount_quietly(self, obj, partition):
        with contextlib.suppress(dbus.exceptions.DBusException):
            if any(p == partition for p, _ in self.c.prop(obj, VOLUME, "Mounts")):
                self.unmount(obj, partition)

    def unmount(self, obj, partition):
        self.c.call(obj, VOLUME, "Unmount", "ua{sv}", dbus.UInt32(partition),
                    harness.variant_dict({}))

    def write_device(self, device, offset, data):
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_device(self, device, offset, length):
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def assert_qcow2_consistent(self, path):
        result = subprocess.run([QEMU_IMG, "check", "-f", "qcow2", path], capture_output=True,
                                text=True)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        with open(path, "rb") as f:
            self.assertEqual(f.read(4), b"QFI\xfb", "%s is not a qcow2 file" % path)


class AttachQcow2(AttachQcow2TestCase):

    def test_stopped_volume_shows_the_guest_view_with_its_partitions(self):
        obj, raw = self.partitioned_qcow2_volume("q")
        device = self.attach(obj)
        export, pid = self.assert_qcow2_attached(obj, "q", device, read_only=True,
                                                 partitions=LAYOUT)
        # The guest's bytes, every one of them, not the qcow2 file's.
        with open(device, "rb") as f:
            f.seek(0, os.SEEK_END)
            self.assertEqual(f.tell(), DISK)
        self.assertEqual(harness.content_sha256(device, DISK), harness.content_sha256(raw, DISK))
        self.assertNotEqual(self.read_device(device, 0, 4), b"QFI\xfb")
        # A read-only device: the write is refused.
        with self.assertRaises(OSError) as cm:
            self.write_device(device, 0, b"x" * SECTOR)
        self.assertIn(cm.exception.errno, (errno.EROFS, errno.EACCES, errno.EPERM))

        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q", pid)

        # Again, with a new export.
        again = self.attach(obj)
        second, _ = self.assert_qcow2_attached(obj, "q", again, read_only=True, partitions=LAYOUT)
        self.assertNotEqual(second, export)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")

    def test_started_volume_mounts_and_keeps_what_was_written(self):
        obj, _ = self.partitioned_qcow2_volume("q", started=True)
        payload = os.urandom(300 * KiB)

        # Mount attaches first, writable since the volume is started.
        point = self.mount(obj, 1)
        device = self.c.prop(obj, VOLUME, "Device")
        self.assert_qcow2_attached(obj, "q", device, read_only=False, partitions=LAYOUT)
        with open(os.path.join(point, "data.bin"), "wb") as f:
            f.write(payload)
        self.unmount(obj, 1)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")
        self.assert_qcow2_consistent(self.work("q"))

        # Attached again: the file is there.
        device = self.attach(obj)
        self.assert_qcow2_attached(obj, "q", device, read_only=False, partitions=LAYOUT)
        point = self.mount(obj, 1)
        with open(os.path.join(point, "data.bin"), "rb") as f:
            self.assertEqual(f.read(), payload)
        self.unmount(obj, 1)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")

        # Stop commits it: the committed image, attached read-only, has it too.
        self.c.stop_volume(obj)
        self.assert_qcow2_consistent(self.image("q"))
        point = self.mount(obj, 1)
        self.assertEqual(self.c.prop(obj, VOLUME, "Mounts"), [(1, point)])
        with open(os.path.join(point, "data.bin"), "rb") as f:
            self.assertEqual(f.read(), payload)
        self.unmount(obj, 1)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")

    def test_whole_device_writes_reach_the_working_copy(self):
        obj = self.qcow2_volume("q", 16 * MiB, started=True)
        device = self.attach(obj)
        self.assert_qcow2_attached(obj, "q", device, read_only=False)
        data = harness.pattern_block(5, 0, 64 * KiB)
        self.write_device(device, 3 * MiB + 4 * KiB, data)
        self.assertEqual(self.read_device(device, 3 * MiB + 4 * KiB, len(data)), data)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")
        # The working copy, read by qemu-img as qcow2, holds the data where the guest wrote it.
        out = os.path.join(self.env.dirs["scratch"], "work.raw")
        self.addCleanup(os.unlink, out)
        harness.run_checked([QEMU_IMG, "convert", "-f", "qcow2", "-O", "raw", self.work("q"), out])
        with open(out, "rb") as f:
            f.seek(3 * MiB + 4 * KiB)
            self.assertEqual(f.read(len(data)), data)

    def test_read_only_attach_of_a_started_volume_refuses_writes(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        device = self.attach(obj, read_only=True)
        export, _ = self.assert_qcow2_attached(obj, "q", device, read_only=True)
        before = harness.file_sha256(self.work("q"))
        with self.assertRaises(OSError) as cm:
            self.write_device(device, 0, b"x" * SECTOR)
        self.assertIn(cm.exception.errno, (errno.EROFS, errno.EACCES, errno.EPERM))
        # Not even root gets around the device through the export itself.
        with self.assertRaises(OSError):
            fd = os.open(os.path.join(self.exports, export), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, b"x" * SECTOR, 0)
            finally:
                os.close(fd)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")
        self.assertEqual(harness.file_sha256(self.work("q")), before)

    def test_resize_of_a_writable_attachment_reaches_the_device(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        device = self.attach(obj)
        self.c.resize(obj, 16 * MiB)
        self.assertEqual(self.c.prop(obj, VOLUME, "Size"), 16 * MiB)
        with open(device, "rb") as f:
            self.assertEqual(f.seek(0, os.SEEK_END), 16 * MiB)
        self.c.detach(obj)
        self.c.stop_volume(obj)
        self.assertEqual(self.c.prop(obj, VOLUME, "Size"), 16 * MiB)

    def test_resize_of_a_read_only_attachment_is_busy(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        self.attach(obj, read_only=True)
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            self.c.resize(obj, 16 * MiB)
        self.assertEqual(cm.exception.get_dbus_name(), Error.Busy)
        self.assertIn("detach", cm.exception.get_dbus_message())
        self.assertEqual(self.c.prop(obj, VOLUME, "Size"), 8 * MiB)
        self.c.detach(obj)
        self.c.resize(obj, 16 * MiB)
        device = self.attach(obj)
        with open(device, "rb") as f:
            self.assertEqual(f.seek(0, os.SEEK_END), 16 * MiB)

    def test_failed_attach_leaves_nothing(self):
        # Two overlapping GPT entries: UnsafeImage, once the export and device were made.
        def overlapping(path):
            test_attach.write_gpt(path, [(2048, 8191), (4096, 12287)])
        obj, _ = self.partitioned_qcow2_volume("bad", write=overlapping)
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            self.attach(obj)
        self.assertEqual(cm.exception.get_dbus_name(), Error.UnsafeImage)
        self.assert_qcow2_gone(obj, "bad")
        device = self.attach(obj, partitions=False)
        self.assert_qcow2_attached(obj, "bad", device, read_only=True)

    def test_raw_volume_holding_a_qcow2_header_attaches_as_raw(self):
        header_file = os.path.join(self.env.dirs["scratch"], "header.qcow2")
        self.addCleanup(os.unlink, header_file)
        harness.run_checked([QEMU_IMG, "create", "-q", "-f", "qcow2", header_file, str(MiB)])
        with open(header_file, "rb") as f:
            header = f.read(SECTOR)
        obj = self.volume("r", 8 * MiB)
        with open(self.image("r"), "r+b") as f:
            f.write(header)
        device = self.attach(obj)
        self.assertEqual(test_attach.backing_file(device), os.path.realpath(self.image("r")))
        self.assertEqual(self.read_device(device, 0, SECTOR), header)
        with open(device, "rb") as f:
            self.assertEqual(f.seek(0, os.SEEK_END), 8 * MiB)
        self.assertEqual(storage_daemons(), {})
        self.assertEqual(self.export_files(), [])
        diskseq = int(test_attach.sysfs_read(device, "diskseq"))
        self.assertEqual(self.records()[diskseq], "CISTERN_POOL=p1\nCISTERN_VOLUME=r\n")


class AttachQcow2Restarts(AttachQcow2TestCase):

    def test_kill_9_then_restart_finds_the_device_again(self):
        obj, raw = self.partitioned_qcow2_volume("q", started=True)
        device = self.attach(obj)
        export, pid = self.assert_qcow2_attached(obj, "q", device, read_only=False,
                                                 partitions=LAYOUT)
        partitions = self.c.prop(obj, VOLUME, "Partitions")

        self.assertTrue(self.env.kill_daemon(), "cisternd did not die of SIGKILL")
        # The device still reads, its daemon untouched.
        self.assertIn(pid, storage_daemons())
        self.assertEqual(self.read_device(device, 0, 64 * KiB), open(raw, "rb").read(64 * KiB))

        # The next call starts cisternd again (bus activation).
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), device)
        self.assertEqual(self.c.prop(obj, VOLUME, "Partitions"), partitions)
        self.assertEqual(self.assert_qcow2_attached(obj, "q", device, read_only=False,
                                                    partitions=LAYOUT), (export, pid))
        self.assert_fails(Error.Busy, self.c.stop_volume, obj)
        self.c.resize(obj, 2 * DISK)       # through the export found again
        with open(device, "rb") as f:
            self.assertEqual(f.seek(0, os.SEEK_END), 2 * DISK)

        point = self.mount(obj, 1)
        with open(os.path.join(point, "after-restart"), "w") as f:
            f.write("kept")
        self.unmount(obj, 1)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q", pid)
        self.assert_qcow2_consistent(self.work("q"))

    def test_idle_exit_keeps_the_device(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        data = harness.pattern_block(9, 0, 32 * KiB)
        self.env.write_activation_file(idle_timeout=1)
        self.env.stop_daemon()
        device = self.attach(obj)
        _, pid = self.assert_qcow2_attached(obj, "q", device, read_only=False)
        poll_until(lambda: not self.env.name_has_owner(harness.BUS_NAME), WAIT,
                   "cisternd to exit idle")
        self.assertIn(pid, storage_daemons())
        self.write_device(device, MiB, data)
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), device)
        self.assertEqual(self.read_device(device, MiB, len(data)), data)
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q", pid)

    def test_dead_storage_daemon_means_a_stale_device_on_restart(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        device = self.attach(obj)
        _, pid = self.assert_qcow2_attached(obj, "q", device, read_only=False)
        self.assertTrue(self.env.kill_daemon(), "cisternd did not die of SIGKILL")
        os.kill(pid, signal.SIGKILL)
        poll_until(lambda: pid not in storage_daemons(), WAIT, "qemu-storage-daemon to die")

        # The restarted daemon detaches the device that reads nothing any more, and removes
        # the dead mount and the files.
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), "")
        self.assert_qcow2_gone(obj, "q")
        # The volume attaches anew.
        device = self.attach(obj)
        self.assert_qcow2_attached(obj, "q", device, read_only=False)

    def test_detach_after_the_storage_daemon_died(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        device = self.attach(obj)
        export, pid = self.assert_qcow2_attached(obj, "q", device, read_only=False)
        os.kill(pid, signal.SIGKILL)
        poll_until(lambda: pid not in storage_daemons(), WAIT, "qemu-storage-daemon to die")
        # The dead mount stays until Detach takes it away with the device.
        self.assertIn(os.path.realpath(os.path.join(self.exports, export)), self.exports_mounted())
        self.c.detach(obj)
        self.assert_qcow2_gone(obj, "q")

    def test_device_detached_behind_its_back_ends_the_storage_daemon(self):
        obj = self.qcow2_volume("q", 8 * MiB, started=True)
        device = self.attach(obj)
        _, pid = self.assert_qcow2_attached(obj, "q", device, read_only=False)
        self.assertTrue(self.env.kill_daemon(), "cisternd did not die of SIGKILL")
        harness.detach_loop(device)
        self.udev_settle()

        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), "")
        self.assert_qcow2_gone(obj, "q", pid)

    def test_removed_volume_ends_its_storage_daemon(self):
        obj = self.qcow2_volume("q", 8 * MiB)
        other = self.qcow2_volume("keep", 8 * MiB)
        device = self.attach(obj)
        kept = self.attach(other)
        _, pid = self.assert_qcow2_attached(obj, "q", device, read_only=True)
        _, kept_pid = self.assert_qcow2_attached(other, "keep", kept, read_only=True)
        self.env.stop_daemon()
        # The volume vanishes while cisternd is away (its pool forgets it).
        volume_dir = dir_volume_file(self.pool.dir, "q")
        os.rename(volume_dir, volume_dir + "-gone")
        self.addCleanup(lambda: os.path.isdir(volume_dir + "-gone")
                        and harness.run_checked(["rm", "-rf", volume_dir + "-gone"]))

        self.assertEqual(self.c.prop(other, VOLUME, "Device"), kept)
        poll_until(lambda: pid not in storage_daemons(), WAIT, "the orphan export to end")
        self.settle_until(lambda: test_attach.backing_file(device) is None,
                          "the orphan device to be detached")
        self.assertIn(kept_pid, storage_daemons())
        self.assertEqual(len([n for n in self.export_files() if not n.endswith(".pid")]), 1)
        self.c.detach(other)
        self.assert_qcow2_gone(other, "keep", kept_pid)


if __name__ == "__main__":
    harness.main()
