#!/usr/bin/python3
"""Attach and Detach: volumes as loop devices with partitions, through a real udevd (SPEC §4.3,
§5, §6).

What is checked, on real loop devices:
- Attach exposes the working copy of a started volume (read-write unless read_only) and the
  committed image of a stopped one (read-only; read_only=false is WrongState there, and
  InvalidArgument on a ReadOnly volume); a second Attach is Busy (qcow2 volumes:
  test_attach_qcow2.py).
- The call replies once udev has processed the disk and every partition with cistern's rules:
  /dev/cistern/<pool>/<volume> and …-part<N> exist at reply time, udev's database marks every
  device UDISKS_IGNORE=1, and <runtime dir>/devices/<diskseq> names the volume.
- Partition tables (GPT and MBR, with ext4, xfs and vfat partitions made here) are read in
  userspace; partitions appear through BLKPG, never through the kernel's scan (partscan 0);
  hostile tables (overlaps, entries beyond the disk, more than 128 entries, two tables at once)
  are UnsafeImage and leave no device behind (no partition device exists even for a moment).
- Detach is WrongState when not attached and Busy while the device or a partition is mounted;
  it removes partitions, device, record and links.  While attached, Remove, Stop, Revert,
  Import, ImportBegin are Busy; Resize of a started volume attached read-write changes the
  device's size.
- cisternd killed with SIGKILL finds its devices again; records of devices that are not its
  volumes' are detached and removed.
- 50 Attach calls at once, racing another process that takes loop devices, each get their own
  volume's device.
- Only root, or a caller polkit authorizes (attach-own for a volume's owner), attaches.

Needs root, loop devices and systemd-udevd; sfdisk and mkfs.{ext4,xfs,vfat} for the tables.
"""

import contextlib
import errno
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import uuid
import zlib

import dbus

import harness
from harness import (VOLUME, USER_A, USER_B, AsyncCall, Error, KiB, MiB, dir_volume_file,
                     loop_devices_under, poll_until, rule_allowing)

ATTACH = "org.cistern.volume.attach"
ATTACH_OWN = "org.cistern.volume.attach-own"

SECTOR = 512
WAIT = 20.0   # seconds: bound of every wait for udev or the kernel

# Partitioned images: one layout, written as GPT or MBR with sfdisk.
# (number, start, size, filesystem); xfs needs at least 300 MB.
LAYOUT = [
    (1, 1 * MiB, 32 * MiB, "ext4"),
    (2, 33 * MiB, 320 * MiB, "xfs"),
    (3, 353 * MiB, 32 * MiB, "vfat"),
]
LAYOUT_DISK = 400 * MiB
SFDISK_TYPES = {"gpt": {"ext4": "L", "xfs": "L", "vfat": "U"},
                "dos": {"ext4": "83", "xfs": "83", "vfat": "c"}}

MKFS_COMMANDS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "vfat": ["mkfs.vfat"],
}

LINUX_FS_GUID = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")


# ---------------------------------------------------------------------------
# Partition tables, written byte by byte
# ---------------------------------------------------------------------------

def mbr_sector(entries, disk_signature=0x43495354):
    """A DOS MBR: entries are (type, first LBA, sector count), at most 4."""
    mbr = bytearray(SECTOR)
    struct.pack_into("<I", mbr, 440, disk_signature)
    for i, (ptype, lba, count) in enumerate(entries):
        struct.pack_into("<B3sB3sII", mbr, 446 + 16 * i, 0, b"\xfe\xff\xff", ptype,
                         b"\xfe\xff\xff", lba, count)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def write_mbr(path, entries):
    with open(path, "r+b") as f:
        f.write(mbr_sector(entries))
        f.flush()
        os.fsync(f.fileno())


def write_gpt(path, parts, entries=128, entry_size=128):
    """A protective MBR and primary and backup GPT (valid CRCs) listing parts, which are
    (first LBA, last LBA) in slots 0, 1, …; the table has `entries` slots."""
    last_lba = os.path.getsize(path) // SECTOR - 1
    array_sectors = (entries * entry_size + SECTOR - 1) // SECTOR
    first_usable = 2 + array_sectors
    last_usable = last_lba - 1 - array_sectors
    array = bytearray(array_sectors * SECTOR)
    for i, (first, last) in enumerate(parts):
        struct.pack_into("<16s16sQQQ72s", array, i * entry_size, LINUX_FS_GUID.bytes_le,
                         uuid.UUID(int=i + 1).bytes_le, first, last, 0,
                         ("part%d" % (i + 1)).encode("utf-16-le"))
    array_crc = zlib.crc32(bytes(array[:entries * entry_size]))
    disk_guid = uuid.UUID("43495354-4552-4e00-8000-000000000001").bytes_le

    def header(my_lba, alternate_lba, array_lba):
        h = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, 0, 0,
                                  my_lba, alternate_lba, first_usable, last_usable, disk_guid,
                                  array_lba, entries, entry_size, array_crc))
        struct.pack_into("<I", h, 16, zlib.crc32(bytes(h)))
        return bytes(h) + bytes(SECTOR - len(h))

    with open(path, "r+b") as f:
        f.write(mbr_sector([(0xEE, 1, min(last_lba, 0xFFFFFFFF))], disk_signature=0))
        f.seek(SECTOR)
        f.write(header(1, last_lba, 2))
        f.write(array)
        f.seek((last_lba - array_sectors) * SECTOR)
        f.write(array)
        f.seek(last_lba * SECTOR)
        f.write(header(last_lba, 1, last_lba - array_sectors))
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def sysfs_read(device, *names):
    """/sys/block/<loopN>/<names…>, stripped; None when absent."""
    path = os.path.join("/sys/block", os.path.basename(device), *names)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def backing_file(device):
    """The file a loop device is attached to, or None."""
    value = sysfs_read(device, "loop", "backing_file")
    if value is not None and value.endswith(" (deleted)"):
        value = value[:-len(" (deleted)")]
    return value


def loop_partition_numbers(device):
    name = os.path.basename(device)
    try:
        entries = os.listdir("/sys/block/" + name)
    except FileNotFoundError:
        return []
    return sorted(int(e[len(name) + 1:]) for e in entries
                  if e.startswith(name + "p") and e[len(name) + 1:].isdigit())


def copy_sparse(source, target, offset):
    """The data ranges of the file source, written into target at offset."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    dst = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for start, end in harness.data_segments(source):
            position = start
            while position < end:
                block = os.pread(src, min(4 * MiB, end - position), position)
                os.pwrite(dst, block, offset + position)
                position += len(block)
        os.fsync(dst)
    finally:
        os.close(src)
        os.close(dst)


def links_under(directory):
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                found.append(path)
    return sorted(found)


NETLINK_KOBJECT_UEVENT = 15
SO_RCVBUFFORCE = 33


class KernelUevents:
    """The kernel's uevents from the moment of creation (a netlink socket of its own)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * MiB)
        self.sock.bind((0, 1))   # group 1: the kernel's own events
        self.sock.setblocking(False)
        self.events = []

    def drain(self):
        """[(action, devpath, {key: value})] received so far."""
        while True:
            try:
                data = self.sock.recv(64 * KiB)
            except BlockingIOError:
                break
            fields = data.split(b"\0")
            props = dict(f.decode(errors="replace").split("=", 1) for f in fields[1:] if b"=" in f)
            self.events.append((props.get("ACTION"), props.get("DEVPATH", ""), props))
        return self.events

    def close(self):
        self.sock.close()


class UdevEvents:
    """The uevents udevd has processed and broadcast (its netlink group), with the properties its
    rules gave them, for checking what the host made of each one."""

    HEADER = struct.Struct("8sIIII")    # "libudev", magic, header size, properties offset, length

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 * MiB)
        self.sock.bind((0, 2))   # group 2: udevd's own broadcasts
        self.sock.setblocking(False)
        self.events = []

    def drain(self):
        """[{key: value}] of the events received so far."""
        while True:
            try:
                data = self.sock.recv(256 * KiB)
            except BlockingIOError:
                break
            prefix, _, _, offset, length = self.HEADER.unpack_from(data)
            if prefix.rstrip(b"\0") != b"libudev":
                continue
            fields = data[offset:offset + length].split(b"\0")
            self.events.append(dict(f.decode(errors="replace").split("=", 1)
                                    for f in fields if b"=" in f))
        return self.events

    def close(self):
        self.sock.close()


class AttachTestCase(harness.CisternTestCase):
    """A dir pool p1 per test, on the private tmpfs; udevd runs for the whole class."""

    needs_udev = True

    def setUp(self):
        super().setUp()
        for tool in ("losetup", "mount", "umount"):
            if shutil.which(tool) is None:
                self.skipTest("%s is not installed" % tool)
        if not os.path.exists("/dev/loop-control"):
            self.skipTest("no loop devices (/dev/loop-control)")
        self.run_dir = self.env.dirs["run"]
        self.pool = self.make_pool("p1")

    # -- calls ---------------------------------------------------------------

    def attach(self, obj, **options):
        """Attach obj; a cleanup detaches it again if the test did not."""
        device = self.c.attach(obj, options)
        self.addCleanup(self.detach_quietly, obj)
        return device

    def detach_quietly(self, obj):
        with contextlib.suppress(dbus.exceptions.DBusException):
            if self.c.prop(obj, VOLUME, "Device"):
                self.c.detach(obj)
                self.udev_settle()

    def volume(self, name, size=8 * MiB, started=False, **options):
        obj = self.make_volume(self.pool, name, size, **options)
        if started:
            self.c.start_volume(obj)
        return obj

    def image(self, name):
        return dir_volume_file(self.pool.dir, name, "image")

    def work(self, name):
        return dir_volume_file(self.pool.dir, name, "work")

    def records(self):
        """{diskseq: text} of the runtime directory's device records."""
        directory = os.path.join(self.run_dir, "devices")
        result = {}
        if os.path.isdir(directory):
            for name in os.listdir(directory):
                if name.isdigit():
                    with open(os.path.join(directory, name)) as f:
                        result[int(name)] = f.read()
        return result

    def link(self, volume, partition=None, pool="p1"):
        suffix = "" if partition is None else "-part%d" % partition
        return os.path.join("/dev/cistern", pool, volume + suffix)

    # -- filesystems and tables ------------------------------------------------

    def need_tools(self, *tools):
        for tool in tools:
            if shutil.which(tool) is None:
                self.skipTest("%s is not installed" % tool)

    def fs_template(self, fstype, size):
        """A file of `size` bytes holding a new filesystem, made once per process."""
        self.need_tools(MKFS_COMMANDS[fstype][0])
        directory = os.path.join(self.env.dirs["scratch"], "fs-templates")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "%s-%d.img" % (fstype, size))
        if not os.path.exists(path):
            partial = path + ".partial"
            with open(partial, "wb") as f:
                f.truncate(size)
            harness.run_checked(MKFS_COMMANDS[fstype] + [partial])
            os.rename(partial, path)
        return path

    def write_table(self, image, label, layout, extra_lines=()):
        """sfdisk on the (stopped) volume's image, then the filesystems into the partitions."""
        self.need_tools("sfdisk", *(MKFS_COMMANDS[fs][0] for _, _, _, fs in layout))
        lines = ["label: %s" % label, "unit: sectors"]
        for number, start, size, fstype in layout:
            if number <= 4:
                lines.append("start=%d, size=%d, type=%s"
                             % (start // SECTOR, size // SECTOR, SFDISK_TYPES[label][fstype]))
        lines += list(extra_lines)
        result = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image],
                                input="\n".join(lines) + "\n", capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, "sfdisk failed: %s" % result.stderr)
        for _, start, size, fstype in layout:
            copy_sparse(self.fs_template(fstype, size), image, start)

    def partitioned_volume(self, name, label="gpt", started=False):
        obj = self.volume(name, LAYOUT_DISK)
        self.write_table(self.image(name), label, LAYOUT)
        if started:
            self.c.start_volume(obj)
        return obj

    # -- assertions -------------------------------------------------------------

    def assert_attached(self, obj, name, device, backing, read_only, partitions=()):
        """Everything that must hold when Attach has replied `device`: property, kernel
        state, record, udev database and links; partitions is [(number, start, size, fstype)]."""
        self.assertRegex(device, r"^/dev/loop[0-9]+$")
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), device)
        self.assertTrue(os.path.exists(device), "%s does not exist" % device)
        self.assertEqual(backing_file(device), os.path.realpath(backing),
                         "%s is attached to the wrong file" % device)
        self.assertEqual(sysfs_read(device, "ro"), "1" if read_only else "0",
                         "%s: wrong read-only flag" % device)
        self.assertEqual(sysfs_read(device, "loop", "partscan"), "0",
                         "%s: the kernel was allowed to scan the partition table" % device)

        # The record the rules read, under the device's disk sequence number.
        diskseq = int(sysfs_read(device, "diskseq"))
        self.assertEqual(self.records().get(diskseq),
                         "CISTERN_POOL=p1\nCISTERN_VOLUME=%s\n" % name,
                         "record of %s (diskseq %d)" % (device, diskseq))

        # Partitions: the property, the kernel's devices, and nothing else.
        expected = [(number, "%sp%d" % (device, number), start, size, fstype)
                    for number, start, size, fstype in partitions]
        self.assertEqual(self.c.prop(obj, VOLUME, "Partitions"), expected)
        self.assertEqual(loop_partition_numbers(device), [p[0] for p in partitions])
        base = os.path.basename(device)
        for number, start, size, _ in partitions:
            part = "%sp%d" % (base, number)
            self.assertEqual(int(sysfs_read(device, part, "start")) * SECTOR, start)
            self.assertEqual(int(sysfs_read(device, part, "size")) * SECTOR, size)

        # udev has processed the disk and every partition before the reply: links and flags.
        nodes = [(None, device)] + [(p[0], p[1]) for p in expected]
        for number, node in nodes:
            link = self.link(name, number)
            self.assertTrue(os.path.islink(link), "%s is missing at reply time" % link)
            self.assertEqual(os.path.realpath(link), node)
            props = self.env.udev_properties(node)
            self.assertEqual(props.get("UDISKS_IGNORE"), "1", "%s: %s" % (node, props))
            self.assertEqual(props.get("CISTERN_POOL"), "p1")
            self.assertEqual(props.get("CISTERN_VOLUME"), name)
            self.assertNotIn("ID_FS_TYPE", props,
                             "%s: the host probed the guest's data (§6)" % node)
        self.assertEqual(sorted(l for l in links_under("/dev/cistern/p1")
                                if os.path.basename(l).split("-part")[0] == name),
                         sorted(self.link(name, number) for number, _ in nodes))
        return diskseq

    def settle_until(self, predicate, what):
        """udevadm settle, then a bounded wait for predicate (a LOOP_CLR_FD while udev still
        holds the device open completes when udev closes it)."""
        self.udev_settle()
        poll_until(predicate, WAIT, what)
        self.udev_settle()

    def assert_gone(self, obj, name, device=None):
        """No device, partition, record or link is left for the volume `name`."""
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), "")
        self.assertEqual(self.c.prop(obj, VOLUME, "Partitions"), [])
        files = {os.path.realpath(self.image(name)), os.path.realpath(self.work(name))}
        self.settle_until(
            lambda: not any(b in files for _, b in loop_devices_under(self.pool.dir)),
            "the loop devices of %s to go" % name)
        self.assertFalse(any(t == "CISTERN_POOL=p1\nCISTERN_VOLUME=%s\n" % name
                             for t in self.records().values()), self.records())
        poll_until(lambda: not [l for l in links_under("/dev/cistern")
                                if os.path.basename(l).split("-part")[0] == name],
                   WAIT, "the links of %s to go" % name)
        if device is not None and backing_file(device) is None:
            self.assertEqual(loop_partition_numbers(device), [],
                             "partitions of %s outlived it" % device)

    def assert_no_loops_left(self):
        """No loop device on any file of this test environment (scratch filesystems aside)."""
        keep = {fs.image for fs in self.env.scratch}
        self.settle_until(
            lambda: not [d for d in loop_devices_under(self.env.tmp) if d[1] not in keep],
            "every loop device of the test to be detached")


# ---------------------------------------------------------------------------
# Attach and Detach of whole disks
# ---------------------------------------------------------------------------

class AttachBasics(AttachTestCase):

    def test_stopped_volume_attaches_its_committed_image_read_only(self):
        obj = self.volume("v1")
        harness.write_pattern(self.image("v1"), seed=1)
        rec = self.recorder()
        device = self.attach(obj)
        self.assert_attached(obj, "v1", device, self.image("v1"), read_only=True)
        self.assertTrue(rec.wait_for(harness.properties_changed(obj, VOLUME, "Device", device)),
                        "no PropertiesChanged for Device")
        # The guest's bytes, read through the device.
        with open(device, "rb") as dev, open(self.image("v1"), "rb") as img:
            self.assertEqual(dev.read(), img.read())
        # Linux lets a read-only disk be opened for writing, and refuses the write itself.
        with self.assertRaises(OSError) as cm:
            fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, b"x" * SECTOR, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        self.assertIn(cm.exception.errno, (errno.EROFS, errno.EACCES, errno.EPERM))

        self.c.detach(obj)
        self.assert_gone(obj, "v1", device)

        # Attaching again works, with a new disk sequence number.
        again = self.attach(obj, read_only=True)
        self.assert_attached(obj, "v1", again, self.image("v1"), read_only=True)
        self.c.detach(obj)
        self.assert_gone(obj, "v1")

    def test_started_volume_attaches_its_working_copy_read_write(self):
        obj = self.volume("v1", started=True)
        device = self.attach(obj)
        self.assert_attached(obj, "v1", device, self.work("v1"), read_only=False)
        data = harness.pattern_block(7, 0, 64 * KiB)
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, data, MiB)
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(self.work("v1"), "rb") as f:
            f.seek(MiB)
            self.assertEqual(f.read(len(data)), data, "the write did not reach the working copy")
        with open(self.image("v1"), "rb") as f:
            f.seek(MiB)
            self.assertNotEqual(f.read(len(data)), data, "the committed image changed")
        self.c.detach(obj)
        self.assert_gone(obj, "v1", device)
        self.c.stop_volume(obj)
        with open(self.image("v1"), "rb") as f:
            f.seek(MiB)
            self.assertEqual(f.read(len(data)), data, "Stop did not commit what the device got")

    def test_started_volume_attaches_read_only_on_request(self):
        obj = self.volume("v1", started=True)
        device = self.attach(obj, read_only=True)
        self.assert_attached(obj, "v1", device, self.work("v1"), read_only=True)

    def test_stopped_volume_refuses_read_write(self):
        obj = self.volume("v1")
        self.assert_fails(Error.WrongState, self.c.attach, obj, {"read_only": False},
                          extra_dirs=[self.run_dir])
        self.assertEqual(loop_devices_under(self.pool.dir), [])

    def test_read_only_volume_refuses_read_write(self):
        obj = self.volume("v1", read_only=True)
        self.assert_fails(Error.InvalidArgument, self.c.attach, obj, {"read_only": False},
                          extra_dirs=[self.run_dir])
        device = self.attach(obj)
        self.assert_attached(obj, "v1", device, self.image("v1"), read_only=True)

    def test_started_read_only_volume_attaches_read_only(self):
        obj = self.volume("v1", read_only=True, started=True)
        self.assert_fails(Error.InvalidArgument, self.c.attach, obj, {"read_only": False},
                          extra_dirs=[self.run_dir])
        device = self.attach(obj)
        self.assert_attached(obj, "v1", device, self.work("v1"), read_only=True)

    def test_bad_options(self):
        obj = self.volume("v1")
        for options in ({"bogus": dbus.Boolean(True)}, {"read_only": dbus.String("yes")},
                        {"partitions": dbus.UInt32(1)}):
            with self.subTest(options=options):
                self.assert_fails(Error.InvalidArgument, self.c.attach, obj, options,
                                  extra_dirs=[self.run_dir])
        self.assert_fails(Error.InvalidArgument, self.c.detach, obj,
                          {"bogus": dbus.Boolean(True)}, extra_dirs=[self.run_dir])
        self.assertEqual(loop_devices_under(self.pool.dir), [])

    def test_second_attach_is_busy(self):
        obj = self.volume("v1")
        device = self.attach(obj)
        self.assert_fails(Error.Busy, self.c.attach, obj, {}, extra_dirs=[self.run_dir])
        self.assert_attached(obj, "v1", device, self.image("v1"), read_only=True)
        self.assertEqual(len(loop_devices_under(self.pool.dir)), 1)

    def test_detach_when_not_attached_is_wrong_state(self):
        obj = self.volume("v1")
        self.assert_fails(Error.WrongState, self.c.detach, obj, extra_dirs=[self.run_dir])
        device = self.attach(obj)
        self.c.detach(obj)
        self.assert_gone(obj, "v1", device)
        self.assert_fails(Error.WrongState, self.c.detach, obj, extra_dirs=[self.run_dir])


# ---------------------------------------------------------------------------
# Partitions
# ---------------------------------------------------------------------------

class AttachPartitions(AttachTestCase):

    def check_layout(self, label, started=False):
        obj = self.partitioned_volume("disk", label, started=started)
        device = self.attach(obj)
        backing = self.work("disk") if started else self.image("disk")
        self.assert_attached(obj, "disk", device, backing, read_only=not started,
                             partitions=LAYOUT)
        # The partitions' contents are the filesystems written at their offsets.
        for number, start, size, fstype in LAYOUT:
            node = "%sp%d" % (device, number)
            found = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", node],
                                   capture_output=True, text=True).stdout.strip()
            self.assertEqual(found, fstype, "%s holds %r" % (node, found))
        self.c.detach(obj)
        self.assert_gone(obj, "disk", device)

    def test_gpt_with_ext4_xfs_vfat(self):
        self.check_layout("gpt")

    def test_mbr_with_ext4_xfs_vfat(self):
        self.check_layout("dos")

    def test_gpt_on_a_started_volume(self):
        self.check_layout("gpt", started=True)

    def test_mbr_logical_partitions(self):
        """An extended partition is a container: its logical partitions (5…) are exposed."""
        obj = self.volume("disk", 128 * MiB)
        layout = [(1, 1 * MiB, 32 * MiB, "ext4"), (5, 34 * MiB, 32 * MiB, "vfat")]
        self.write_table(self.image("disk"), "dos", layout[:1], extra_lines=[
            "start=%d, size=%d, type=5" % (33 * MiB // SECTOR, 64 * MiB // SECTOR),
            "start=%d, size=%d, type=c" % (34 * MiB // SECTOR, 32 * MiB // SECTOR),
        ])
        copy_sparse(self.fs_template("vfat", 32 * MiB), self.image("disk"), 34 * MiB)
        device = self.attach(obj)
        self.assert_attached(obj, "disk", device, self.image("disk"), read_only=True,
                             partitions=layout)

    def test_partitions_false_attaches_the_whole_disk_only(self):
        obj = self.partitioned_volume("disk", "gpt")
        device = self.attach(obj, partitions=False)
        self.assert_attached(obj, "disk", device, self.image("disk"), read_only=True,
                             partitions=())
        self.assertFalse(os.path.exists(device + "p1"))

    def test_128_partitions_are_accepted(self):
        obj = self.volume("many", 8 * MiB)
        write_gpt(self.image("many"), [(2048 + 8 * i, 2048 + 8 * i + 7) for i in range(128)])
        device = self.attach(obj)
        self.assert_attached(obj, "many", device, self.image("many"), read_only=True,
                             partitions=[(i + 1, (2048 + 8 * i) * SECTOR, 8 * SECTOR, "")
                                         for i in range(128)])
        self.c.detach(obj)
        self.assert_gone(obj, "many", device)

    def test_restart_finds_devices_and_partitions_again(self):
        disk = self.partitioned_volume("disk", "gpt")
        running = self.volume("running", 8 * MiB, started=True)
        disk_device = self.attach(disk)
        running_device = self.attach(running)
        disk_seq = self.assert_attached(disk, "disk", disk_device, self.image("disk"),
                                        read_only=True, partitions=LAYOUT)
        running_seq = self.assert_attached(running, "running", running_device,
                                           self.work("running"), read_only=False)
        partitions = self.c.prop(disk, VOLUME, "Partitions")

        self.assertTrue(self.env.kill_daemon(), "cisternd did not die of SIGKILL")
        # The next call starts cisternd again (bus activation).
        self.assertEqual(self.c.prop(disk, VOLUME, "Device"), disk_device)
        self.assertEqual(self.c.prop(disk, VOLUME, "Partitions"), partitions)
        self.assertEqual(self.c.prop(running, VOLUME, "Device"), running_device)
        self.assertEqual(int(sysfs_read(disk_device, "diskseq")), disk_seq)
        self.assertEqual(int(sysfs_read(running_device, "diskseq")), running_seq)
        self.assert_attached(disk, "disk", disk_device, self.image("disk"), read_only=True,
                             partitions=LAYOUT)
        self.assert_attached(running, "running", running_device, self.work("running"),
                             read_only=False)

        # The restarted daemon knows which device is on a working copy, and which is not.
        self.c.resize(running, 16 * MiB)
        self.assertEqual(int(sysfs_read(running_device, "size")) * SECTOR, 16 * MiB)
        self.assert_fails(Error.Busy, self.c.resize, disk, 2 * LAYOUT_DISK)
        self.assert_fails(Error.Busy, self.c.remove_volume, disk)

        self.c.detach(disk)
        self.assert_gone(disk, "disk", disk_device)
        self.c.detach(running)
        self.assert_gone(running, "running", running_device)


# ---------------------------------------------------------------------------
# Hostile partition tables: UnsafeImage, no device left behind
# ---------------------------------------------------------------------------

class AttachUnsafeTables(AttachTestCase):

    def check_unsafe(self, write, size=8 * MiB):
        obj = self.volume("bad", size)
        write(self.image("bad"))
        before_records = self.records()
        uevents = KernelUevents()
        self.addCleanup(uevents.close)
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            device = self.c.attach(obj)
            self.addCleanup(self.detach_quietly, obj)
            self.fail("Attach succeeded with %s, partitions %s"
                      % (device, self.c.prop(obj, VOLUME, "Partitions")))
        self.assertEqual(cm.exception.get_dbus_name(), Error.UnsafeImage,
                         cm.exception.get_dbus_message())
        self.assert_gone(obj, "bad")
        # The table was judged before any partition device existed, even for a moment.
        events = uevents.drain()
        self.assertTrue(any(a == "add" or a == "change" for a, _, p in events
                            if p.get("DEVTYPE") == "disk"),
                        "no uevent of the loop device was seen: %s" % events)
        self.assertEqual([(a, d) for a, d, p in events if p.get("DEVTYPE") == "partition"], [],
                         "partition devices appeared")
        self.assertEqual(self.records(), before_records)
        self.assertEqual(loop_devices_under(self.pool.dir), [])

        # The whole disk alone is still available.
        device = self.attach(obj, partitions=False)
        self.assert_attached(obj, "bad", device, self.image("bad"), read_only=True)
        self.c.detach(obj)
        self.assert_gone(obj, "bad", device)

    def test_mbr_overlapping_entries(self):
        self.check_unsafe(lambda p: write_mbr(p, [(0x83, 2048, 4096), (0x83, 4096, 2048)]))

    def test_mbr_entry_past_the_end(self):
        # 8 MiB are 16384 sectors; the second entry runs to sector 24576.
        self.check_unsafe(lambda p: write_mbr(p, [(0x83, 2048, 4096), (0x83, 8192, 16384)]))

    def test_mbr_entry_starting_beyond_the_end(self):
        self.check_unsafe(lambda p: write_mbr(p, [(0x83, 2048, 4096), (0x83, 40000, 2048)]))

    def test_gpt_overlapping_entries(self):
        self.check_unsafe(lambda p: write_gpt(p, [(2048, 4095), (4000, 6000)]))

    def test_gpt_entry_beyond_the_end(self):
        self.check_unsafe(lambda p: write_gpt(p, [(2048, 4095), (4096, 100000)]))

    def test_gpt_with_1000_entries(self):
        self.check_unsafe(lambda p: write_gpt(
            p, [(2048 + 8 * i, 2048 + 8 * i + 7) for i in range(1000)], entries=1000))

    def test_mbr_and_gpt_at_once(self):
        """A DOS table (no protective entry) over a complete, valid GPT that lists other
        partitions: which one is meant is ambiguous (wipefs shows both)."""
        def write(path):
            write_gpt(path, [(2048, 4095), (4096, 8191)])
            write_mbr(path, [(0x83, 2048, 8192)])
        self.check_unsafe(write)


# ---------------------------------------------------------------------------
# Mounted devices, and what an attached volume refuses
# ---------------------------------------------------------------------------

class AttachBusy(AttachTestCase):

    def mount(self, node, fstype):
        point = tempfile.mkdtemp(prefix="mnt-", dir=self.env.dirs["scratch"])
        self.addCleanup(os.rmdir, point)
        harness.run_checked(["mount", "-t", fstype, "-o", "ro", node, point])
        self.addCleanup(self.unmount, point)
        return point

    def unmount(self, point):
        if os.path.ismount(point):
            harness.run_checked(["umount", point])

    def test_detach_is_busy_while_a_partition_is_mounted(self):
        obj = self.partitioned_volume("disk", "gpt")
        device = self.attach(obj)
        point = self.mount(device + "p1", "ext4")
        self.assert_fails(Error.Busy, self.c.detach, obj, extra_dirs=[self.run_dir])
        self.assert_attached(obj, "disk", device, self.image("disk"), read_only=True,
                             partitions=LAYOUT)
        self.assertIn("lost+found", os.listdir(point))
        self.unmount(point)
        self.c.detach(obj)
        self.assert_gone(obj, "disk", device)

    def test_detach_is_busy_while_the_device_is_mounted(self):
        self.need_tools("mkfs.ext4")
        obj = self.volume("whole", 32 * MiB)
        harness.run_checked(MKFS_COMMANDS["ext4"] + [self.image("whole")])
        device = self.attach(obj)
        self.assert_attached(obj, "whole", device, self.image("whole"), read_only=True)
        point = self.mount(device, "ext4")
        self.assert_fails(Error.Busy, self.c.detach, obj, extra_dirs=[self.run_dir])
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), device)
        self.assertEqual(backing_file(device), os.path.realpath(self.image("whole")))
        self.unmount(point)
        self.c.detach(obj)
        self.assert_gone(obj, "whole", device)

    def refusals(self, obj, size):
        """(name, fn) of the calls an attached volume refuses with Busy."""
        def import_file():
            fd = os.memfd_create("cistern-import", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
                self.c.import_(obj, fd, {"size": size})
            finally:
                os.close(fd)

        def import_begin():
            fd = self.c.import_begin(obj, {"size": size})
            os.close(fd)
        return [("Remove", lambda: self.c.remove_volume(obj)),
                ("Import", import_file),
                ("ImportBegin", import_begin)]

    def test_stopped_attached_volume_refuses_changes(self):
        obj = self.volume("v1")
        revision = self.c.create_snapshot(obj)
        device = self.attach(obj)
        calls = self.refusals(obj, 8 * MiB) + [
            ("Revert", lambda: self.c.revert(obj, revision)),
            ("Resize", lambda: self.c.resize(obj, 16 * MiB)),
        ]
        for name, fn in calls:
            with self.subTest(method=name):
                self.assert_fails(Error.Busy, fn, extra_dirs=[self.run_dir])
        self.assert_attached(obj, "v1", device, self.image("v1"), read_only=True)
        self.assertEqual(int(sysfs_read(device, "size")) * SECTOR, 8 * MiB)

    def test_started_attached_volume_refuses_changes(self):
        obj = self.volume("v1", started=True)
        revision = self.c.create_snapshot(obj)
        device = self.attach(obj)
        calls = self.refusals(obj, 8 * MiB) + [
            ("Stop", lambda: self.c.stop_volume(obj)),
            ("Revert", lambda: self.c.revert(obj, revision)),
        ]
        for name, fn in calls:
            with self.subTest(method=name):
                self.assert_fails(Error.Busy, fn, extra_dirs=[self.run_dir])
        self.assert_attached(obj, "v1", device, self.work("v1"), read_only=False)
        self.assertEqual(self.c.prop(obj, VOLUME, "State"), "started")

    def test_resize_of_a_started_volume_follows_on_the_device(self):
        obj = self.volume("v1", started=True)
        device = self.attach(obj)
        self.assertEqual(int(sysfs_read(device, "size")) * SECTOR, 8 * MiB)
        self.c.resize(obj, 24 * MiB)
        self.assertEqual(int(sysfs_read(device, "size")) * SECTOR, 24 * MiB)
        self.assertEqual(self.c.prop(obj, VOLUME, "Size"), 24 * MiB)
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.assertEqual(os.lseek(fd, 0, os.SEEK_END), 24 * MiB)
        finally:
            os.close(fd)
        self.assert_attached(obj, "v1", device, self.work("v1"), read_only=False)
        self.c.detach(obj)
        self.assert_gone(obj, "v1", device)


# ---------------------------------------------------------------------------
# Records of devices that are not (or no longer) a volume's
# ---------------------------------------------------------------------------

class AttachStaleRecords(AttachTestCase):

    def hand_made_loop(self, size=MiB):
        path = tempfile.mktemp(prefix="hand-", suffix=".img", dir=self.env.dirs["scratch"])
        with open(path, "wb") as f:
            f.truncate(size)
        self.addCleanup(os.unlink, path)
        device = harness.run_checked(["losetup", "--find", "--show", path]).strip()
        self.addCleanup(self.detach_hand_made, device, path)
        return device, path

    def detach_hand_made(self, device, path):
        if backing_file(device) == os.path.realpath(path):
            harness.detach_loop(device)

    def write_record(self, diskseq, pool, volume):
        directory = os.path.join(self.run_dir, "devices")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(os.path.join(directory, str(diskseq)), "w") as f:
            f.write("CISTERN_POOL=%s\nCISTERN_VOLUME=%s\n" % (pool, volume))

    def test_records_of_foreign_and_vanished_devices_go_on_restart(self):
        obj = self.volume("v1")
        kept = self.attach(obj)
        kept_seq = self.assert_attached(obj, "v1", kept, self.image("v1"), read_only=True)
        self.env.stop_daemon()

        # A device made by hand, recorded for a volume that does not exist.
        ghost, ghost_file = self.hand_made_loop()
        ghost_seq = int(sysfs_read(ghost, "diskseq"))
        self.write_record(ghost_seq, "p1", "ghost")
        # Another, recorded for a volume that exists but whose files it is not on.
        foreign, foreign_file = self.hand_made_loop()
        foreign_seq = int(sysfs_read(foreign, "diskseq"))
        self.write_record(foreign_seq, "p1", "v1")
        # A record whose device is gone: a disk sequence number far beyond every device's.
        gone_seq = max(kept_seq, ghost_seq, foreign_seq) + 1000000
        self.write_record(gone_seq, "p1", "v1")

        # Any call starts the daemon, which has sorted its records out before it is on the bus.
        self.assertEqual(self.c.prop(obj, VOLUME, "Device"), kept)
        self.assertEqual(sorted(self.records()), [kept_seq])
        self.settle_until(lambda: backing_file(ghost) != os.path.realpath(ghost_file)
                          and backing_file(foreign) != os.path.realpath(foreign_file),
                          "the daemon to detach the hand-made devices")
        self.assert_attached(obj, "v1", kept, self.image("v1"), read_only=True)
        self.c.detach(obj)
        self.assert_gone(obj, "v1", kept)
        self.assert_no_loops_left()


# ---------------------------------------------------------------------------
# Many attaches at once, racing another user of loop devices
# ---------------------------------------------------------------------------

class LoopThief(threading.Thread):
    """Takes free loop devices (losetup -f) on a scratch file until stopped, keeping a few
    and giving older ones back, so that free devices keep appearing and vanishing."""

    def __init__(self, path, keep=6, limit=150):
        super().__init__(daemon=True)
        self.path = path
        self.keep = keep
        self.limit = limit
        self.held = []
        self.taken = 0
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        failures = 0
        try:
            while not self.stopping.is_set() and self.taken < self.limit:
                result = subprocess.run(["losetup", "--find", "--show", self.path],
                                        capture_output=True, text=True)
                if result.returncode != 0:
                    # losetup, too, may lose a race for a free device; not over and over.
                    failures += 1
                    if failures >= 10:
                        raise RuntimeError("losetup failed 10 times: " + result.stderr.strip())
                    continue
                failures = 0
                self.held.append(result.stdout.strip())
                self.taken += 1
                if len(self.held) > self.keep:
                    harness.run_checked(["losetup", "--detach", self.held.pop(0)])
        except BaseException as e:   # reported by the test
            self.error = e

    def stop(self):
        self.stopping.set()
        self.join(timeout=60)

    def release(self):
        self.stop()
        while self.held:
            device = self.held.pop()
            if backing_file(device) == os.path.realpath(self.path):
                harness.detach_loop(device)


class AttachHandsOff(AttachTestCase):

    ROUNDS = 30

    def test_udev_never_probes_an_attached_volume(self):
        # The kernel's own "change" of LOOP_CONFIGURE comes before cisternd can write the record
        # it needs the new diskseq for: every event udev processed for the attached device,
        # that one included, must have kept the host's hands off the guest's filesystem.
        obj = self.volume("hands", 16 * MiB)
        harness.run_checked(["mkfs.ext4", "-q", "-F", self.image("hands")])
        events = UdevEvents()
        self.addCleanup(events.close)
        seen = 0
        for _ in range(self.ROUNDS):
            device = self.c.attach(obj)
            diskseq = sysfs_read(device, "diskseq")
            self.udev_settle()
            mine = [e for e in events.drain()
                    if e.get("DEVNAME") == device and e.get("DISKSEQ") == diskseq]
            events.events.clear()
            self.assertTrue(mine, "udev broadcast no event for %s" % device)
            for e in mine:
                self.assertEqual(e.get("UDISKS_IGNORE"), "1", e)
                self.assertNotIn("ID_FS_TYPE", e, "udev probed the guest's data: %s" % e)
            seen += len(mine)
            self.c.detach(obj)
            self.udev_settle()
            events.drain()
            events.events.clear()
        self.assertGreater(seen, self.ROUNDS, "the kernel's own change events were not seen")
        self.assertEqual([n for n in os.listdir(os.path.join(self.run_dir, "devices"))
                          if n.startswith("loop")], [], "claims were left behind")


    def test_record_outlives_a_detach_until_the_device_is_let_go(self):
        # Another process holds the device open: LOOP_CLR_FD only promises to clear it on the
        # last close. Until then the device still shows the guest's data, and udev must still
        # find the record.
        obj = self.volume("held", 16 * MiB)
        harness.run_checked(["mkfs.ext4", "-q", "-F", self.image("held")])
        device = self.attach(obj)
        diskseq = int(sysfs_read(device, "diskseq"))
        holder = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.c.detach(obj)
            self.assertEqual(self.c.prop(obj, VOLUME, "Device"), "")
            self.assertEqual(backing_file(device), os.path.realpath(self.image("held")),
                             "the kernel cleared the device while it was held open")
            self.assertIn(diskseq, self.records())
            self.env.udev_trigger("/sys/block/" + os.path.basename(device))
            self.udev_settle()
            props = self.env.udev_properties(device)
            self.assertEqual(props.get("UDISKS_IGNORE"), "1", props)
            self.assertNotIn("ID_FS_TYPE", props, "udev probed the guest's data: %s" % props)
        finally:
            os.close(holder)
        self.settle_until(lambda: backing_file(device) is None, "the kernel to clear %s" % device)
        poll_until(lambda: diskseq not in self.records(), WAIT, "the record to go")


class AttachConcurrency(AttachTestCase):

    COUNT = 50

    def test_parallel_attaches_racing_another_loop_user(self):
        names = ["c%02d" % i for i in range(self.COUNT)]
        objs = {}
        for i, name in enumerate(names):
            objs[name] = self.volume(name, MiB, started=(i % 2 == 0))
        expected_backing = {name: os.path.realpath(self.work(name) if i % 2 == 0
                                                   else self.image(name))
                            for i, name in enumerate(names)}

        scratch = tempfile.mktemp(prefix="thief-", suffix=".img", dir=self.env.dirs["scratch"])
        with open(scratch, "wb") as f:
            f.truncate(MiB)
        self.addCleanup(os.unlink, scratch)
        thief = LoopThief(scratch)
        self.addCleanup(self.detach_all, objs)   # runs after the thief's release
        self.addCleanup(thief.release)
        thief.start()
        poll_until(lambda: thief.taken > 0 or thief.error is not None, WAIT,
                   "losetup to take its first device")

        calls = {name: AsyncCall(self.env.bus, objs[name], VOLUME, "Attach", "a{sv}",
                                 harness.variant_dict({}))
                 for name in names}
        for name, call in calls.items():
            self.assertTrue(call.wait(), "Attach of %s did not answer" % name)
        thief.stop()
        self.assertIsNone(thief.error, "losetup failed: %r" % thief.error)

        failed = {name: str(call) for name, call in calls.items() if not call.ok}
        self.assertEqual(failed, {}, "some attaches failed")
        devices = {name: call.value for name, call in calls.items()}
        self.assertEqual(len(set(devices.values())), self.COUNT,
                         "two volumes got the same device: %s" % devices)
        stolen = set(thief.held)
        for i, name in enumerate(names):
            device = devices[name]
            self.assertNotIn(device, stolen, "%s got a device another process holds" % name)
            self.assertEqual(backing_file(device), expected_backing[name],
                             "%s's device %s is backed by the wrong file" % (name, device))
            self.assertEqual(self.c.prop(objs[name], VOLUME, "Device"), device)
            self.assertEqual(os.path.realpath(self.link(name)), device)
            self.assertEqual(sysfs_read(device, "ro"), "0" if i % 2 == 0 else "1")
            seq = int(sysfs_read(device, "diskseq"))
            self.assertEqual(self.records().get(seq),
                             "CISTERN_POOL=p1\nCISTERN_VOLUME=%s\n" % name)
        for device in stolen:
            self.assertEqual(backing_file(device), os.path.realpath(scratch))
        self.assertEqual(len(self.records()), self.COUNT)

        # Everything goes again, in parallel too.
        thief.release()
        detaches = {name: AsyncCall(self.env.bus, objs[name], VOLUME, "Detach", "a{sv}",
                                    harness.variant_dict({}))
                    for name in names}
        for name, call in detaches.items():
            self.assertTrue(call.wait(), "Detach of %s did not answer" % name)
            self.assertTrue(call.ok, "Detach of %s: %s" % (name, call))
        for name in names:
            self.assertEqual(self.c.prop(objs[name], VOLUME, "Device"), "")
        self.assertEqual(self.records(), {})
        self.assert_no_loops_left()
        poll_until(lambda: links_under("/dev/cistern/p1") == [], WAIT,
                   "the links of every volume to go")

    def detach_all(self, objs):
        for obj in objs.values():
            self.detach_quietly(obj)


# ---------------------------------------------------------------------------
# Authorization (SPEC §5)
# ---------------------------------------------------------------------------

class AttachAuthorization(AttachTestCase):

    def test_unauthorized_caller_attaches_nothing(self):
        own = self.volume("own", owner=USER_A.uid)
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.attach(own),
                               extra_dirs=[self.run_dir])
        self.assertEqual(self.c.prop(own, VOLUME, "Device"), "")
        self.assertEqual(loop_devices_under(self.pool.dir), [])
        self.assertEqual(self.records(), {})
        # Nor may it detach what root attached.
        device = self.attach(own)
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.detach(own),
                               extra_dirs=[self.run_dir])
        self.assertEqual(self.c.prop(own, VOLUME, "Device"), device)

    def test_attach_own_allows_the_owner_only(self):
        own = self.volume("own", owner=USER_A.uid)
        rootvol = self.volume("rootvol")
        self.env.set_polkit_rules(rule_allowing(ATTACH_OWN, USER_A)
                                  + rule_allowing(ATTACH_OWN, USER_B))
        # USER_B holds attach-own too, but the volume is not B's.
        self.assert_user_fails(Error.NotAuthorized, USER_B, lambda c: c.attach(own),
                               extra_dirs=[self.run_dir])
        self.assert_user_fails(Error.NotAuthorized, USER_A, lambda c: c.attach(rootvol),
                               extra_dirs=[self.run_dir])

        device = self.assert_user_succeeds(USER_A, lambda c: c.attach(own))
        self.addCleanup(self.detach_quietly, own)
        self.assert_attached(own, "own", device, self.image("own"), read_only=True)
        self.assert_user_fails(Error.NotAuthorized, USER_B, lambda c: c.detach(own),
                               extra_dirs=[self.run_dir])
        self.assert_user_succeeds(USER_A, lambda c: c.detach(own))
        self.assert_gone(own, "own", device)

    def test_attach_action_allows_any_volume(self):
        rootvol = self.volume("rootvol")
        self.env.set_polkit_rules(rule_allowing(ATTACH, USER_B))
        device = self.assert_user_succeeds(USER_B, lambda c: c.attach(rootvol))
        self.addCleanup(self.detach_quietly, rootvol)
        self.assert_attached(rootvol, "rootvol", device, self.image("rootvol"), read_only=True)
        self.assert_user_succeeds(USER_B, lambda c: c.detach(rootvol))
        self.assert_gone(rootvol, "rootvol", device)


if __name__ == "__main__":
    harness.main()
