#!/usr/bin/python3
"""Mount, Unmount and Open: a volume's filesystems and data through cisternd (SPEC §4.3, §5, §6;
org.cistern.Cistern1(5) Mount, Unmount, Open, Attach).

What is checked, on real loop devices with a real udevd:
- Mount of partition 1 of a GPT disk and of a whole-device filesystem (ext4, xfs, vfat) returns
  <runtime>/mounts/<pool>/<volume>/<partition>; the kernel's mount table shows the right device
  and type, always nosuid,nodev,noexec; Mounts lists (partition, path); the <volume> directory
  belongs to the volume's Owner with mode 0700, so the owner reaches the files and another user
  does not.
- An image built like CVE-2025-6019's (a setuid-root binary and device nodes inside) stays inert
  once cisternd mounted it: the binary cannot be executed, the nodes cannot be opened.
- Only allow-listed filesystem types mount (swap, minix: NotSupported); a filesystem the kernel
  refuses is Failed (the arguments were fine); a Mount that fails detaches again the device it
  attached for itself, and leaves neither mount point nor the volume's directory.
- A stopped volume is attached and mounted read-only; read_only does so for a started one.
- Mount attaches first; Unmount leaves the device attached; Detach while mounted is Busy;
  Unmount of an unmounted partition is WrongState, of a busy one Busy; a missing partition is
  NotFound; a second Mount of a partition is Busy.
- An umount by someone else empties Mounts; cisternd's own Unmount changes Mounts once and is
  not logged as someone else's; messages call partition 0 the whole device; cisternd killed
  with SIGKILL finds device, partitions and mounts again and can unmount and detach them.
- Authorization: without a rule a user mounts and opens nothing; mount-own lets the owner
  mount their own volume only.
- Open: read-only by default, the committed image while stopped; a writable fd needs a started
  volume and writes the working copy; while it is open Stop is Busy, after it Stop commits.

Every mount and loop device a test makes is removed in its cleanup, even when it fails.
Needs root, loop devices and systemd-udevd; sfdisk, mkfs.ext4 (and mkfs.xfs, mkfs.vfat,
mkswap, mkfs.minix for their tests).
"""

import contextlib
import dataclasses
import errno
import os
import shutil
import stat
import subprocess
import time
import unittest

import dbus

import harness
from harness import (VOLUME, USER_A, USER_B, Error, MiB, dir_volume_file, loop_devices_under,
                     poll_until, rule_allowing, variant_dict)

MOUNT = "org.cistern.volume.mount"
MOUNT_OWN = "org.cistern.volume.mount-own"

SECTOR = 512
WAIT = 20.0                 # seconds: bound of every wait for udev, the kernel or the daemon
DISK_SIZE = 32 * MiB        # a GPT disk ...
PART_START = 1 * MiB        # ... whose partition 1 holds ext4
PART_SIZE = 16 * MiB
XFS_SIZE = 320 * MiB        # mkfs.xfs wants at least 300 MB

HARDENING = {"nosuid", "nodev", "noexec"}


# ---------------------------------------------------------------------------
# The kernel's view
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class MountEntry:
    devno: int
    options: set        # per-mount options (ro/rw, nosuid, nodev, noexec, ...)
    fstype: str
    source: str
    super_options: set


def _unescape(field):
    return field.encode().decode("unicode_escape")


def mountinfo():
    """{mount point: MountEntry} of this namespace (the last mount on a point wins)."""
    table = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            major, minor = (int(n) for n in fields[2].split(":"))
            table[_unescape(fields[4])] = MountEntry(
                os.makedev(major, minor), set(fields[5].split(",")), fields[sep + 1],
                _unescape(fields[sep + 2]), set(fields[sep + 3].split(",")))
    return table


def sysfs_read(device, *names):
    path = os.path.join("/sys/block", os.path.basename(device), *names)
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def kernel_has_filesystem(fstype):
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

class MountTestCase(harness.CisternTestCase):
    """A dir pool p1 per test, on the private tmpfs; udevd runs for the whole class."""

    needs_udev = True

    @classmethod
    def setUpClass(cls):
        if not os.path.exists("/dev/loop-control"):
            raise unittest.SkipTest("needs loop devices (/dev/loop-control)")
        for tool in ("losetup", "partx", "sfdisk", "mkfs.ext4", "umount"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is not installed" % tool)
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.run_dir = self.env.dirs["run"]
        self.mounts_dir = os.path.join(self.run_dir, "mounts")
        self.pool = self.make_pool("p1")
        # Runs before the daemon stops (cleanups run last in, first out).
        self.addCleanup(self.clean_up)

    def clean_up(self):
        """Unmount and detach, through the daemon, whatever a test left; then by hand whatever
        is still mounted below the runtime directory or attached to a file of the pool."""
        volumes = {}
        with contextlib.suppress(dbus.exceptions.DBusException):
            volumes = {path: ifaces[VOLUME] for path, ifaces in self.c.managed_objects().items()
                       if VOLUME in ifaces}
        for path, props in volumes.items():
            for partition, _ in props.get("Mounts", []):
                with contextlib.suppress(dbus.exceptions.DBusException):
                    self.unmount(path, partition)
        for point in harness.mounts_under(self.mounts_dir):
            print("test_mount: unmounting leftover %s" % point)
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        for path, props in volumes.items():
            if props.get("Device"):
                with contextlib.suppress(dbus.exceptions.DBusException):
                    self.detach(path)
        for name, _ in loop_devices_under(self.pool.dir):
            harness.detach_loop("/dev/" + name)
        self.udev_settle()

    # -- calls ---------------------------------------------------------------

    def mount(self, obj, partition, **options):
        return str(self.c.call(obj, VOLUME, "Mount", "ua{sv}", partition, variant_dict(options)))

    def unmount(self, obj, partition):
        self.c.call(obj, VOLUME, "Unmount", "ua{sv}", partition, variant_dict({}))

    def attach(self, obj, **options):
        return str(self.c.call(obj, VOLUME, "Attach", "a{sv}", variant_dict(options)))

    def detach(self, obj):
        self.c.call(obj, VOLUME, "Detach", "a{sv}", variant_dict({}))

    def open(self, obj, **options):
        """Open; the fd (an int) is closed at the end of the test unless closed before."""
        fd = self.c.call(obj, VOLUME, "Open", "a{sv}", variant_dict(options)).take()
        return self.track_fd(fd)

    def prop(self, obj, name):
        return self.c.prop(obj, VOLUME, name)

    # -- volumes and images ----------------------------------------------------

    def image(self, name):
        return dir_volume_file(self.pool.dir, name, "image")

    def work(self, name):
        return dir_volume_file(self.pool.dir, name, "work")

    def need_tools(self, *tools):
        for tool in tools:
            if shutil.which(tool) is None:
                self.skipTest("%s is not installed" % tool)

    def fs_root(self, setuid=False, nodes=False):
        """A directory for mkfs -d: a file `hello`, and, as asked, a setuid-root copy of
        /usr/bin/id (`suid-id`) and device nodes (`null`, char 1:3; `disk`, block 7:0)."""
        root = os.path.join(self.env.dirs["scratch"], "fs-root-%s" % self.id().split(".")[-1])
        if os.path.exists(root):
            shutil.rmtree(root)
        os.mkdir(root)
        self.addCleanup(shutil.rmtree, root, True)
        os.chmod(root, 0o755)
        with open(os.path.join(root, "hello"), "w") as f:
            f.write("hello from the guest\n")
        os.chmod(os.path.join(root, "hello"), 0o644)
        if setuid:
            target = os.path.join(root, "suid-id")
            shutil.copyfile("/usr/bin/id", target)
            os.chown(target, 0, 0)
            os.chmod(target, 0o4755)
        if nodes:
            os.mknod(os.path.join(root, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            os.mknod(os.path.join(root, "disk"), 0o666 | stat.S_IFBLK, os.makedev(7, 0))
        return root

    def gpt_volume(self, name="v1", root=None, started=False, **options):
        """A DISK_SIZE volume with a GPT whose partition 1 holds ext4 (from root, if given),
        written into the image while it is stopped."""
        obj = self.make_volume(self.pool, name, DISK_SIZE, **options)
        image = self.image(name)
        result = subprocess.run(
            ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image],
            input="label: gpt\nunit: sectors\nstart=%d, size=%d, type=L\n"
            % (PART_START // SECTOR, PART_SIZE // SECTOR), capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, "sfdisk failed: %s" % result.stderr)
        harness.run_checked(["mkfs.ext4", "-q", "-F", "-E", "offset=%d" % PART_START]
                            + (["-d", root] if root else [])
                            + [image, "%dK" % (PART_SIZE // 1024)])
        self.assertEqual(os.path.getsize(image), DISK_SIZE, "mkfs changed the image's size")
        if started:
            self.c.start_volume(obj)
        return obj

    def bare_volume(self, name, mkfs, size=16 * MiB, started=False, **options):
        """A volume whose image is one filesystem (or swap area) made by the command mkfs."""
        self.need_tools(mkfs[0])
        obj = self.make_volume(self.pool, name, size, **options)
        harness.run_checked(mkfs + [self.image(name)])
        self.assertEqual(os.path.getsize(self.image(name)), size, "mkfs changed the size")
        if started:
            self.c.start_volume(obj)
        return obj

    # -- assertions -------------------------------------------------------------

    def expected_point(self, name, partition, pool="p1"):
        return os.path.join(self.run_dir, "mounts", pool, name, str(partition))

    def assert_mounted(self, obj, name, partition, point, fstype, read_only, owner=0):
        """Everything that holds while partition of volume `name` is mounted on point."""
        self.assertEqual(point, self.expected_point(name, partition))
        device = self.prop(obj, "Device")
        self.assertRegex(device, r"^/dev/loop[0-9]+$")
        node = device if partition == 0 else "%sp%d" % (device, partition)
        entry = mountinfo().get(point)
        self.assertIsNotNone(entry, "%s is not in the mount table" % point)
        self.assertEqual(entry.fstype, fstype)
        self.assertEqual(entry.devno, os.stat(node).st_rdev, "%s: mounted from another device"
                         % point)
        self.assertEqual(os.stat(point).st_dev, os.stat(node).st_rdev)
        self.assertTrue(HARDENING <= entry.options,
                        "%s is mounted without %s: %s" % (point, HARDENING - entry.options,
                                                          sorted(entry.options)))
        flags = os.statvfs(point).f_flag
        for flag in (os.ST_NOSUID, os.ST_NODEV, os.ST_NOEXEC):
            self.assertTrue(flags & flag, "statvfs(%s) lacks flag %#x" % (point, flag))
        self.assertIn("ro" if read_only else "rw", entry.options, sorted(entry.options))
        self.assertEqual(bool(flags & os.ST_RDONLY), read_only)
        self.assertIn((partition, point), self.prop(obj, "Mounts"))
        # The <volume> directory: the owner's, 0700.
        st = os.stat(os.path.dirname(point))
        self.assertEqual((st.st_uid, stat.S_IMODE(st.st_mode)), (owner, 0o700),
                         "%s: owner %d, mode %o" % (os.path.dirname(point), st.st_uid,
                                                    stat.S_IMODE(st.st_mode)))
        return device

    def assert_not_mounted(self, obj):
        self.assertEqual(self.prop(obj, "Mounts"), [])
        self.assertEqual(harness.mounts_under(self.mounts_dir), [])

    def assert_detached(self, obj):
        """No device for obj, and, once udev is done, no loop device on a file of it."""
        self.assertEqual(self.prop(obj, "Device"), "")
        self.assertEqual(self.prop(obj, "Partitions"), [])
        name = self.prop(obj, "Name")
        files = {os.path.realpath(self.image(name)), os.path.realpath(self.work(name))}
        self.udev_settle()
        poll_until(lambda: not [b for _, b in loop_devices_under(self.pool.dir) if b in files],
                   WAIT, "the loop devices of %s to go" % name)

    def records(self):
        directory = os.path.join(self.run_dir, "devices")
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []

    def wait_prop(self, obj, name, predicate, what):
        """Polls a property (short sleeps, bounded) until predicate(value) holds."""
        deadline = time.monotonic() + WAIT
        while True:
            value = self.prop(obj, name)
            if predicate(value):
                return value
            if time.monotonic() > deadline:
                self.fail("%s: %s is still %r after %.0f s" % (what, name, value, WAIT))
            time.sleep(0.05)


# ---------------------------------------------------------------------------
# Mounting partitions and whole devices
# ---------------------------------------------------------------------------

class MountBasics(MountTestCase):

    def test_partition_of_a_started_volume(self):
        obj = self.gpt_volume("v1", root=self.fs_root(), started=True)
        self.assertEqual(self.prop(obj, "Mounts"), [])
        rec = self.recorder()
        point = self.mount(obj, 1)
        device = self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=False)
        self.assertEqual(self.prop(obj, "Mounts"), [(1, point)])
        self.assertTrue(rec.wait_for(harness.properties_changed(obj, VOLUME, "Mounts")),
                        "no PropertiesChanged for Mounts")
        # Mount attached the working copy, writable, with its partition.
        self.assertEqual(sysfs_read(device, "ro"), "0")
        self.assertEqual(self.prop(obj, "Partitions"),
                         [(1, device + "p1", PART_START, PART_SIZE, "ext4")])
        self.assertEqual(mountinfo()[point].source, device + "p1")
        with open(os.path.join(point, "hello")) as f:
            self.assertEqual(f.read(), "hello from the guest\n")
        with open(os.path.join(point, "written"), "w") as f:
            f.write("written while mounted\n")

        # Unmount removes mount and mount point; the device stays attached.
        self.unmount(obj, 1)
        self.assert_not_mounted(obj)
        self.assertFalse(os.path.exists(point), "the mount point outlived Unmount")
        self.assertEqual(self.prop(obj, "Device"), device)
        self.detach(obj)
        self.assert_detached(obj)

        # Stop commits what was written; the stopped volume mounts read-only.
        self.c.stop_volume(obj)
        point = self.mount(obj, 1)
        device = self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)
        self.assertEqual(sysfs_read(device, "ro"), "1")
        with open(os.path.join(point, "written")) as f:
            self.assertEqual(f.read(), "written while mounted\n")
        with self.assertRaises(OSError) as cm:
            open(os.path.join(point, "new"), "w").close()
        self.assertEqual(cm.exception.errno, errno.EROFS)

    def test_owner_reaches_the_mount_point_another_user_does_not(self):
        obj = self.gpt_volume("v1", root=self.fs_root(), owner=USER_A.uid)
        point = self.mount(obj, 1)
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True, owner=USER_A.uid)
        # The directories above the volume's are traversable, not listable by others.
        for directory in (self.mounts_dir, os.path.join(self.mounts_dir, "p1")):
            st = os.stat(directory)
            self.assertEqual(st.st_uid, 0, directory)
            self.assertFalse(stat.S_IMODE(st.st_mode) & 0o022, "%s: mode %o"
                             % (directory, stat.S_IMODE(st.st_mode)))

        owner = harness.run_as(USER_A, ["ls", "-a", point])
        self.assertEqual(owner.returncode, 0, owner.stderr)
        self.assertIn("hello", owner.stdout.split())
        owner = harness.run_as(USER_A, ["cat", os.path.join(point, "hello")])
        self.assertEqual((owner.returncode, owner.stdout), (0, "hello from the guest\n"),
                         owner.stderr)

        for argv in (["ls", "-a", point], ["cat", os.path.join(point, "hello")],
                     ["stat", point], ["ls", os.path.dirname(point)]):
            other = harness.run_as(USER_B, argv)
            self.assertNotEqual(other.returncode, 0, "%s as %s: %s"
                                % (argv, USER_B.name, other.stdout))
            self.assertIn("Permission denied", other.stderr)

    def check_whole_device(self, fstype, mkfs, size, started):
        obj = self.bare_volume("whole", mkfs, size, started=started)
        self.assertEqual(self.prop(obj, "Device"), "")
        point = self.mount(obj, 0)
        device = self.assert_mounted(obj, "whole", 0, point, fstype, read_only=not started)
        self.assertEqual(self.prop(obj, "Mounts"), [(0, point)])
        self.assertEqual(self.prop(obj, "Partitions"), [])
        self.assertEqual(mountinfo()[point].source, device)
        self.assertEqual(sysfs_read(device, "ro"), "0" if started else "1")
        if started:
            with open(os.path.join(point, "note.txt"), "w") as f:
                f.write("on %s\n" % fstype)
            with open(os.path.join(point, "note.txt")) as f:
                self.assertEqual(f.read(), "on %s\n" % fstype)
        # Partition 1 of a disk without partitions does not exist.
        self.assert_fails(Error.NotFound, self.mount, obj, 1, extra_dirs=[self.mounts_dir])
        self.unmount(obj, 0)
        self.assert_not_mounted(obj)
        self.detach(obj)
        self.assert_detached(obj)

    def test_whole_device_ext4_of_a_stopped_volume(self):
        self.check_whole_device("ext4", ["mkfs.ext4", "-q", "-F"], 16 * MiB, started=False)

    def test_whole_device_xfs_of_a_started_volume(self):
        if not kernel_has_filesystem("xfs"):
            self.skipTest("this kernel has no xfs")
        self.check_whole_device("xfs", ["mkfs.xfs", "-q", "-f"], XFS_SIZE, started=True)

    def test_whole_device_vfat_of_a_stopped_volume(self):
        if not kernel_has_filesystem("vfat"):
            self.skipTest("this kernel has no vfat (CONFIG_VFAT_FS)")
        self.check_whole_device("vfat", ["mkfs.vfat"], 16 * MiB, started=False)

    def test_read_only_option_on_a_started_volume(self):
        obj = self.gpt_volume("v1", started=True)
        point = self.mount(obj, 1, read_only=True)
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)
        with self.assertRaises(OSError) as cm:
            open(os.path.join(point, "new"), "w").close()
        self.assertEqual(cm.exception.errno, errno.EROFS)

    def test_bad_options(self):
        obj = self.gpt_volume("v1")
        for options in ({"read_only": dbus.String("yes")}, {"bogus": dbus.Boolean(True)}):
            with self.subTest(options=options):
                self.assert_fails(Error.InvalidArgument, self.mount, obj, 1, **options,
                                  extra_dirs=[self.run_dir])
        self.assertEqual(self.prop(obj, "Device"), "")


# ---------------------------------------------------------------------------
# CVE-2025-6019: a user's image with a setuid-root binary must stay inert
# ---------------------------------------------------------------------------

class MountHardening(MountTestCase):

    def test_setuid_binary_and_device_nodes_are_inert(self):
        # The attacker owns the volume and has it started: a read-write mount.
        obj = self.gpt_volume("evil", root=self.fs_root(setuid=True, nodes=True),
                              owner=USER_A.uid, started=True)
        point = self.mount(obj, 1)
        self.assert_mounted(obj, "evil", 1, point, "ext4", read_only=False, owner=USER_A.uid)
        binary = os.path.join(point, "suid-id")

        # The file is there, setuid and root's, exactly the binary copied in...
        st = os.stat(binary)
        self.assertTrue(st.st_mode & stat.S_ISUID, "mode %o" % st.st_mode)
        self.assertEqual(st.st_uid, 0)
        self.assertEqual(harness.file_sha256(binary), harness.file_sha256("/usr/bin/id"))
        # ... but the mount makes the bit meaningless and nothing on it runs.
        self.assertIn("nosuid", mountinfo()[point].options)
        for user in (USER_A, None):
            with self.subTest(user=user.name if user else "root"):
                with self.assertRaises(PermissionError):
                    harness.run_as(user, [binary])
        shell = harness.run_as(USER_A, ["/bin/sh", "-c", "exec %s" % binary])
        self.assertEqual(shell.returncode, 126, "%s ran: %s" % (binary, shell.stdout))
        self.assertIn("Permission denied", shell.stderr)

        # Device nodes on it are nodes of nothing, even for root.
        for name, kind in (("null", stat.S_ISCHR), ("disk", stat.S_ISBLK)):
            path = os.path.join(point, name)
            self.assertTrue(kind(os.lstat(path).st_mode), "%s is no device node" % path)
            with self.subTest(node=name):
                with self.assertRaises(PermissionError):
                    os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))


# ---------------------------------------------------------------------------
# The allow-list, and failed mounts
# ---------------------------------------------------------------------------

class MountAllowList(MountTestCase):

    def check_not_supported(self, mkfs):
        obj = self.bare_volume("odd", mkfs, 16 * MiB)
        records = self.records()
        self.assert_fails(Error.NotSupported, self.mount, obj, 0, extra_dirs=[self.mounts_dir])
        self.assert_not_mounted(obj)
        # The device Mount attached for itself is gone again.
        self.assert_detached(obj)
        self.assertEqual(self.records(), records)

        # Attached beforehand, it stays attached.
        device = self.attach(obj)
        self.assert_fails(Error.NotSupported, self.mount, obj, 0, extra_dirs=[self.mounts_dir])
        self.assertEqual(self.prop(obj, "Device"), device)
        self.assert_not_mounted(obj)
        self.detach(obj)
        self.assert_detached(obj)

    def test_swap_is_not_supported(self):
        self.check_not_supported(["mkswap"])

    def test_minix_is_not_supported(self):
        self.check_not_supported(["mkfs.minix"])

    def test_no_filesystem_is_not_supported(self):
        obj = self.make_volume(self.pool, "zeros", 4 * MiB)
        e = self.assert_fails(Error.NotSupported, self.mount, obj, 0,
                              extra_dirs=[self.mounts_dir])
        # Partition 0 is no partition: the message names the whole device.
        self.assertNotIn("artition 0", e.get_dbus_message())
        self.assertIn("whole device of volume p1/zeros", e.get_dbus_message())
        self.assert_not_mounted(obj)
        self.assert_detached(obj)

    def test_filesystem_the_kernel_refuses_detaches_again(self):
        """blkid finds ext4, the kernel refuses it (it claims more blocks than the disk has):
        the call fails with Failed (the caller's arguments were fine; the filesystem is not)
        and leaves neither mount nor device nor the directories it made."""
        obj = self.make_volume(self.pool, "broken", 8 * MiB)
        image = self.image("broken")
        harness.run_checked(["mkfs.ext4", "-q", "-F", image, "16M"])
        os.truncate(image, 8 * MiB)
        records = self.records()
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            self.mount(obj, 0)
        self.assertEqual(cm.exception.get_dbus_name(), Error.Failed,
                         cm.exception.get_dbus_message())
        self.assertIn("could not be mounted", cm.exception.get_dbus_message())
        self.assert_not_mounted(obj)
        self.assert_detached(obj)
        self.assertEqual(self.records(), records)
        self.assertFalse(os.path.exists(self.expected_point("broken", 0)),
                         "the failed mount left its mount point")
        self.assertFalse(os.path.exists(os.path.dirname(self.expected_point("broken", 0))),
                         "the failed mount left the volume's directory of mount points")

    def test_failed_mount_of_an_attached_volume_leaves_no_directories(self):
        """The same on a device attached beforehand: it stays, the directories go."""
        obj = self.make_volume(self.pool, "broken", 8 * MiB)
        image = self.image("broken")
        harness.run_checked(["mkfs.ext4", "-q", "-F", image, "16M"])
        os.truncate(image, 8 * MiB)
        device = self.attach(obj)
        self.assert_fails(Error.Failed, self.mount, obj, 0)
        self.assertEqual(self.prop(obj, "Device"), device)
        self.assert_not_mounted(obj)
        self.assertFalse(os.path.exists(os.path.dirname(self.expected_point("broken", 0))),
                         "the failed mount left the volume's directory of mount points")


# ---------------------------------------------------------------------------
# Mount, Unmount and the device's state
# ---------------------------------------------------------------------------

class MountStates(MountTestCase):

    def test_mount_attaches_first_and_unmount_leaves_it_attached(self):
        obj = self.gpt_volume("v1")
        self.assertEqual(self.prop(obj, "Device"), "")
        point = self.mount(obj, 1)
        device = self.prop(obj, "Device")
        self.assertRegex(device, r"^/dev/loop[0-9]+$")
        self.assertEqual(self.prop(obj, "Partitions"),
                         [(1, device + "p1", PART_START, PART_SIZE, "ext4")])
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)
        # Attached as Attach would: the committed image, read-only, udev done with it.
        self.assertEqual(sysfs_read(device, "ro"), "1")
        self.assertEqual(sysfs_read(device, "loop", "backing_file"),
                         os.path.realpath(self.image("v1")))
        self.assertTrue(os.path.islink("/dev/cistern/p1/v1-part1"))

        self.unmount(obj, 1)
        self.assert_not_mounted(obj)
        self.assertEqual(self.prop(obj, "Device"), device)
        self.assertEqual(self.prop(obj, "Partitions"),
                         [(1, device + "p1", PART_START, PART_SIZE, "ext4")])
        # Mounting again uses the device that is there.
        point = self.mount(obj, 1)
        self.assertEqual(self.prop(obj, "Device"), device)
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)

    def test_detach_while_mounted_is_busy(self):
        obj = self.gpt_volume("v1")
        point = self.mount(obj, 1)
        device = self.prop(obj, "Device")
        self.assert_fails(Error.Busy, self.detach, obj, extra_dirs=[self.mounts_dir])
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)
        self.assertEqual(self.prop(obj, "Device"), device)
        self.unmount(obj, 1)
        self.detach(obj)
        self.assert_detached(obj)

    def test_unmount_of_an_unmounted_partition_is_wrong_state(self):
        obj = self.gpt_volume("v1")
        self.assert_fails(Error.WrongState, self.unmount, obj, 1, extra_dirs=[self.run_dir])
        self.attach(obj)
        self.assert_fails(Error.WrongState, self.unmount, obj, 1, extra_dirs=[self.run_dir])
        point = self.mount(obj, 1)
        self.assert_fails(Error.WrongState, self.unmount, obj, 0, extra_dirs=[self.mounts_dir])
        self.unmount(obj, 1)
        self.assert_fails(Error.WrongState, self.unmount, obj, 1, extra_dirs=[self.mounts_dir])
        self.assertFalse(os.path.exists(point))

    def test_missing_partition_is_not_found(self):
        obj = self.gpt_volume("v1")
        records = self.records()
        # Not attached: Mount attaches, finds no partition 2, and detaches again.
        self.assert_fails(Error.NotFound, self.mount, obj, 2, extra_dirs=[self.mounts_dir])
        self.assert_not_mounted(obj)
        self.assert_detached(obj)
        self.assertEqual(self.records(), records)
        # Attached: it stays so.
        device = self.attach(obj)
        for partition in (2, 128, 2 ** 32 - 1):
            self.assert_fails(Error.NotFound, self.mount, obj, partition,
                              extra_dirs=[self.mounts_dir])
        self.assertEqual(self.prop(obj, "Device"), device)
        self.assert_not_mounted(obj)

    def test_second_mount_of_a_partition_is_busy(self):
        obj = self.gpt_volume("v1")
        point = self.mount(obj, 1)
        for options in ({}, {"read_only": True}):
            self.assert_fails(Error.Busy, self.mount, obj, 1, **options,
                              extra_dirs=[self.mounts_dir])
        self.assertEqual(self.prop(obj, "Mounts"), [(1, point)])
        self.assertEqual(list(mountinfo()).count(point), 1)
        self.assertEqual(harness.mounts_under(self.mounts_dir), [point])

    def test_unmount_while_in_use_is_busy(self):
        obj = self.gpt_volume("v1", root=self.fs_root())
        point = self.mount(obj, 1)
        fd = os.open(os.path.join(point, "hello"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.assert_fails(Error.Busy, self.unmount, obj, 1)
            self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)
        finally:
            os.close(fd)
        self.unmount(obj, 1)
        self.assert_not_mounted(obj)

    def test_own_unmount_is_not_taken_for_someone_elses(self):
        """cisternd's Unmount changes Mounts once, when it is done, and its mount monitor does
        not report it as an umount by someone else."""
        obj = self.gpt_volume("v1")
        point = self.mount(obj, 1)
        marks = self.env.log_marks()
        rec = self.recorder()
        self.unmount(obj, 1)
        rec.drain(1.0)
        changes = rec.matching(harness.properties_changed(obj, VOLUME, "Mounts"))
        self.assertEqual(len(changes), 1, "Mounts changed %d times: %s" % (len(changes), changes))
        self.assert_not_mounted(obj)
        log = harness.file_tail(self.env.logs["cisternd"], marks.get("cisternd", 0))
        self.assertNotIn("unmounted by someone else", log)
        self.assertIn("Unmounted partition 1 of volume p1/v1", log)
        self.assertFalse(os.path.exists(point))

    def test_messages_name_the_whole_device(self):
        obj = self.bare_volume("whole", ["mkfs.ext4", "-q", "-F"], 16 * MiB)
        e = self.assert_fails(Error.WrongState, self.unmount, obj, 0)
        self.assertIn("The whole device of volume p1/whole is not mounted",
                      e.get_dbus_message())
        point = self.mount(obj, 0)
        e = self.assert_fails(Error.Busy, self.mount, obj, 0, extra_dirs=[self.mounts_dir])
        self.assertIn("The whole device of volume p1/whole is mounted on %s already" % point,
                      e.get_dbus_message())
        marks = self.env.log_marks()
        self.unmount(obj, 0)
        log = harness.file_tail(self.env.logs["cisternd"], marks.get("cisternd", 0))
        self.assertIn("Unmounted the whole device of volume p1/whole", log)
        self.assertNotIn("artition 0", log)

    def test_external_umount_empties_mounts(self):
        obj = self.gpt_volume("v1")
        point = self.mount(obj, 1)
        device = self.prop(obj, "Device")
        harness.run_checked(["umount", point])
        self.wait_prop(obj, "Mounts", lambda v: v == [], "after umount(8) of %s" % point)
        self.assertEqual(self.prop(obj, "Device"), device)
        # The daemon knows: Unmount is WrongState, Detach works, Mount works again.
        self.assert_fails(Error.WrongState, self.unmount, obj, 1)
        point = self.mount(obj, 1)
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=True)
        harness.run_checked(["umount", point])
        self.wait_prop(obj, "Mounts", lambda v: v == [], "after umount(8) of %s" % point)
        self.detach(obj)
        self.assert_detached(obj)

    def test_changes_while_mounted_are_busy(self):
        obj = self.gpt_volume("v1", started=True)
        point = self.mount(obj, 1)
        for name, fn, args in (("Stop", self.c.stop_volume, (obj,)),
                               ("Remove", self.c.remove_volume, (obj,)),
                               ("RemovePool", self.c.remove_pool, ("p1",))):
            with self.subTest(call=name):
                self.assert_fails(Error.Busy, fn, *args, extra_dirs=[self.mounts_dir])
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=False)
        self.assertEqual(self.prop(obj, "State"), "started")

    def test_mount_point_planted_by_the_owner_is_not_followed(self):
        """The owner may write in <runtime>/mounts/<pool>/<volume>: a symlink planted there as
        the partition's mount point must not take the mount elsewhere."""
        obj = self.gpt_volume("v1", owner=USER_A.uid)
        point = self.mount(obj, 1)
        self.unmount(obj, 1)
        self.detach(obj)
        self.assertFalse(os.path.lexists(point))
        decoy = os.path.join(self.env.dirs["scratch"], "decoy")
        os.mkdir(decoy)
        self.addCleanup(os.rmdir, decoy)
        os.chmod(decoy, 0o777)
        for partition in (1, 0):
            link = self.expected_point("v1", partition)
            planted = harness.run_as(USER_A, ["ln", "-s", decoy, link])
            self.assertEqual(planted.returncode, 0, planted.stderr)
            self.addCleanup(lambda link=link: os.path.islink(link) and os.unlink(link))
        with self.subTest(partition=1):
            try:
                got = self.mount(obj, 1)
            except dbus.exceptions.DBusException as e:
                self.assertTrue(e.get_dbus_name().startswith(Error.PREFIX), e.get_dbus_name())
                self.assertEqual(self.prop(obj, "Mounts"), [])
                self.assert_detached(obj)
            else:
                self.assertFalse(os.path.islink(got), "mounted through the planted symlink")
                self.assertEqual(os.path.realpath(got), got)
                self.unmount(obj, 1)
            self.assertNotIn(decoy, mountinfo(), "the mount followed the owner's symlink")
            self.assertEqual(os.listdir(decoy), [])
        with self.subTest(partition=0):
            # The whole disk holds a GPT, no filesystem: refused before any mount point.
            self.assert_fails(Error.NotSupported, self.mount, obj, 0)
            self.assertNotIn(decoy, mountinfo())

    def test_sigkill_while_mounted(self):
        obj = self.gpt_volume("v1", started=True)
        whole = self.bare_volume("whole", ["mkfs.ext4", "-q", "-F"], 16 * MiB)
        point = self.mount(obj, 1)
        whole_point = self.mount(whole, 0)
        before = {o: {name: self.prop(o, name) for name in ("Device", "Partitions", "Mounts")}
                  for o in (obj, whole)}

        self.assertTrue(self.env.kill_daemon(), "cisternd did not die of SIGKILL")
        self.assertIsNone(self.env.daemon_pid())
        # The next call starts cisternd again (bus activation).
        for o in (obj, whole):
            self.assertEqual({name: self.prop(o, name) for name in before[o]}, before[o])
        self.assertEqual(self.prop(obj, "State"), "started")
        self.assert_mounted(obj, "v1", 1, point, "ext4", read_only=False)
        self.assert_mounted(whole, "whole", 0, whole_point, "ext4", read_only=True)

        # The restarted daemon still guards and can undo what it found.
        self.assert_fails(Error.Busy, self.detach, obj, extra_dirs=[self.mounts_dir])
        self.assert_fails(Error.Busy, self.mount, obj, 1, extra_dirs=[self.mounts_dir])
        for o in (obj, whole):
            partition = self.prop(o, "Mounts")[0][0]
            self.unmount(o, partition)
            self.assertEqual(self.prop(o, "Mounts"), [])
            self.detach(o)
            self.assert_detached(o)
        self.assertEqual(harness.mounts_under(self.mounts_dir), [])
        self.c.stop_volume(obj)


# ---------------------------------------------------------------------------
# Authorization (SPEC §5)
# ---------------------------------------------------------------------------

def _mount_call(obj, partition=1, **options):
    return lambda c: c.call(obj, VOLUME, "Mount", "ua{sv}", partition, variant_dict(options))


def _unmount_call(obj, partition=1):
    return lambda c: c.call(obj, VOLUME, "Unmount", "ua{sv}", partition, variant_dict({}))


def _open_call(obj, **options):
    def call(c):
        fd = c.call(obj, VOLUME, "Open", "a{sv}", variant_dict(options)).take()
        os.close(fd)
        return "opened"
    return call


class MountAuthorization(MountTestCase):

    def test_unauthorized_user_mounts_and_opens_nothing(self):
        own = self.gpt_volume("own", owner=USER_A.uid)
        started = self.gpt_volume("started", owner=USER_A.uid, started=True)
        for user in (USER_A, USER_B):
            for obj in (own, started):
                with self.subTest(user=user.name, volume=obj):
                    self.assert_user_fails(Error.NotAuthorized, user, _mount_call(obj),
                                           extra_dirs=[self.run_dir])
                    self.assert_user_fails(Error.NotAuthorized, user, _mount_call(obj, 0),
                                           extra_dirs=[self.run_dir])
                    self.assert_user_fails(Error.NotAuthorized, user, _open_call(obj),
                                           extra_dirs=[self.run_dir])
            self.assert_user_fails(Error.NotAuthorized, user,
                                   _open_call(started, read_only=False),
                                   extra_dirs=[self.run_dir])
        for obj in (own, started):
            self.assertEqual(self.prop(obj, "Device"), "")
            self.assert_not_mounted(obj)
        self.assertEqual(loop_devices_under(self.pool.dir), [])

        # Nor may they unmount what root mounted.
        point = self.mount(own, 1)
        for user in (USER_A, USER_B):
            self.assert_user_fails(Error.NotAuthorized, user, _unmount_call(own),
                                   extra_dirs=[self.mounts_dir])
        self.assertEqual(self.prop(own, "Mounts"), [(1, point)])

    def test_mount_own_lets_the_owner_mount_their_own_volume_only(self):
        own = self.gpt_volume("own", root=self.fs_root(), owner=USER_A.uid)
        rootvol = self.gpt_volume("rootvol")
        self.env.set_polkit_rules(rule_allowing(MOUNT_OWN, USER_A)
                                  + rule_allowing(MOUNT_OWN, USER_B))
        # USER_B holds mount-own too, but the volume is not B's; root's volume is nobody's.
        self.assert_user_fails(Error.NotAuthorized, USER_B, _mount_call(own),
                               extra_dirs=[self.run_dir])
        self.assert_user_fails(Error.NotAuthorized, USER_A, _mount_call(rootvol),
                               extra_dirs=[self.run_dir])
        self.assertEqual(self.prop(own, "Device"), "")
        self.assertEqual(self.prop(rootvol, "Device"), "")

        point = self.assert_user_succeeds(USER_A, _mount_call(own))
        self.assert_mounted(own, "own", 1, point, "ext4", read_only=True, owner=USER_A.uid)
        listing = harness.run_as(USER_A, ["ls", point])
        self.assertEqual(listing.returncode, 0, listing.stderr)
        self.assertIn("hello", listing.stdout.split())
        # mount-own is no licence to read another volume's data (Open needs read-own).
        self.assert_user_fails(Error.NotAuthorized, USER_A, _open_call(own),
                               extra_dirs=[self.mounts_dir])

        self.assert_user_fails(Error.NotAuthorized, USER_B, _unmount_call(own),
                               extra_dirs=[self.mounts_dir])
        self.assert_user_succeeds(USER_A, _unmount_call(own))
        self.assert_not_mounted(own)
        self.assertFalse(os.path.exists(point))


    def test_open_own_gives_the_owner_fds_of_their_volumes_only(self):
        own = self.make_volume(self.pool, "own", 4 * MiB, owner=USER_A.uid)
        rootvol = self.make_volume(self.pool, "rootvol", 4 * MiB)
        harness.write_pattern(self.image("own"), seed=5)
        committed = harness.file_sha256(self.image("own"))
        self.c.start_volume(own)
        self.c.start_volume(rootvol)
        self.env.set_polkit_rules(rule_allowing(["org.cistern.volume.read-own",
                                                 "org.cistern.volume.modify-own"], USER_A))
        for obj, options in ((rootvol, {}), (rootvol, {"read_only": False})):
            self.assert_user_fails(Error.NotAuthorized, USER_A, _open_call(obj, **options))
        self.assert_user_fails(Error.NotAuthorized, USER_B, _open_call(own))

        def read_only(c):
            fd = c.call(own, VOLUME, "Open", "a{sv}", variant_dict({})).take()
            try:
                digest = harness.file_sha256(fd)
                outcomes = []
                for attempt in (lambda: os.pwrite(fd, b"x", 0),
                                lambda: os.close(os.open("/proc/self/fd/%d" % fd, os.O_RDWR))):
                    try:
                        attempt()
                        outcomes.append("written")
                    except OSError as e:
                        outcomes.append(errno.errorcode[e.errno])
                return digest, outcomes
            finally:
                os.close(fd)
        digest, outcomes = self.assert_user_succeeds(USER_A, read_only)
        self.assertEqual(digest, committed)
        # Neither the fd nor a reopening of it through /proc writes the volume.
        self.assertEqual(outcomes, ["EBADF", "EACCES"])

        data = harness.pattern_block(13, 2 * MiB, 4096)

        def writable(c):
            fd = c.call(own, VOLUME, "Open", "a{sv}", variant_dict({"read_only": False})).take()
            try:
                return os.pwrite(fd, data, 2 * MiB)
            finally:
                os.close(fd)
        self.assertEqual(self.assert_user_succeeds(USER_A, writable), len(data))
        with open(self.work("own"), "rb") as f:
            f.seek(2 * MiB)
            self.assertEqual(f.read(len(data)), data)
        self.assertEqual(harness.file_sha256(self.image("own")), committed)


# ---------------------------------------------------------------------------
# Open
# ---------------------------------------------------------------------------

class OpenTest(MountTestCase):

    def test_read_only_fd_of_the_committed_image_by_default(self):
        obj = self.make_volume(self.pool, "v1", 4 * MiB)
        harness.write_pattern(self.image("v1"), seed=7)
        fd = self.open(obj)
        self.assertEqual(os.fstat(fd).st_size, 4 * MiB)
        self.assertEqual(harness.file_sha256(fd), harness.file_sha256(self.image("v1")))
        with self.assertRaises(OSError) as cm:
            os.pwrite(fd, b"x", 0)
        self.assertEqual(cm.exception.errno, errno.EBADF)
        with self.assertRaises(OSError) as cm:
            os.write(fd, b"x")
        self.assertEqual(cm.exception.errno, errno.EBADF)
        # read_only=true explicitly is the same; the fd does not change the committed image.
        fd2 = self.open(obj, read_only=True)
        self.assertEqual(harness.file_sha256(fd2), harness.file_sha256(self.image("v1")))
        self.close_fd(fd2)
        self.close_fd(fd)
        # A stopped volume with an fd open is still an ordinary stopped volume.
        self.c.start_volume(obj)
        self.c.stop_volume(obj)

    def test_writable_fd_needs_a_started_volume(self):
        obj = self.make_volume(self.pool, "v1", 4 * MiB)
        self.assert_fails(Error.WrongState, self.open, obj, read_only=False)
        ro = self.make_volume(self.pool, "ro", 4 * MiB, read_only=True)
        self.c.start_volume(ro)
        self.assert_fails(Error.InvalidArgument, self.open, ro, read_only=False)
        self.assert_fails(Error.InvalidArgument, self.open, obj, bogus=dbus.Boolean(True))
        self.assert_fails(Error.InvalidArgument, self.open, obj, read_only=dbus.UInt32(0))

    def test_writable_fd_writes_the_working_copy_and_blocks_stop(self):
        obj = self.make_volume(self.pool, "v1", 4 * MiB)
        harness.write_pattern(self.image("v1"), seed=3)
        committed = harness.file_sha256(self.image("v1"))
        self.c.start_volume(obj)
        fd = self.open(obj, read_only=False)
        self.assertEqual(harness.file_sha256(fd), committed)
        data = harness.pattern_block(11, MiB, 64 * 1024)
        self.assertEqual(os.pwrite(fd, data, MiB), len(data))
        os.fsync(fd)
        with open(self.work("v1"), "rb") as f:
            f.seek(MiB)
            self.assertEqual(f.read(len(data)), data, "the fd does not write the working copy")
        self.assertEqual(harness.file_sha256(self.image("v1")), committed,
                         "the fd wrote into the committed image")
        # A read-only fd of a started volume reads the working copy too.
        ro = self.open(obj)
        self.assertEqual(os.pread(ro, len(data), MiB), data)
        self.close_fd(ro)

        # While the writable fd is open, Stop is Busy and changes nothing.
        self.assert_fails(Error.Busy, self.c.stop_volume, obj)
        self.assertEqual(self.prop(obj, "State"), "started")
        self.close_fd(fd)
        self.c.stop_volume(obj)
        self.assertEqual(self.prop(obj, "State"), "stopped")
        with open(self.image("v1"), "rb") as f:
            f.seek(MiB)
            self.assertEqual(f.read(len(data)), data, "Stop did not commit what the fd wrote")
        self.assertNotEqual(harness.file_sha256(self.image("v1")), committed)


if __name__ == "__main__":
    harness.main()
