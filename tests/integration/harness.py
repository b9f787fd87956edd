#!/usr/bin/python3
"""Integration-test harness: the real cisternd on a private system bus.

Every test process runs as root inside its own mount and pid namespaces.  Inside it the
harness bind-mounts test copies over /etc/passwd, /etc/group, the polkit
actions directory and /etc/polkit-1/rules.d (the host's files are never
written), starts a private dbus-daemon of type "system" and the real polkitd
against it, and lets the bus activate cisternd from a service file.

Test classes with `needs_udev = True` also get a real systemd-udevd (see
Environment.start_udevd): a private /run layer holds its database and control
socket, the rules from the source tree's udev/ and, at /run/cistern, the
daemon's runtime directory.  udevd still writes its links into the host's /dev,
so the harness puts back what it changed there when udevd stops.

Test modules subclass CisternTestCase and end with `harness.main()`.  Run one
file (as root) with, for example:

    CISTERN_BUILD_DIR=build /usr/bin/python3 tests/integration/test_volume.py -k Resize

Exit code 77 means "skipped" (not root, tools missing, cisternd not built).
"""

import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import pwd
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import unittest

import dbus
import dbus.bus
import dbus.mainloop.glib
import dbus.types
from gi.repository import GLib

SKIP_EXIT_CODE = 77
# Set by the re-exec: the mount namespace the harness was started in.
HOST_NAMESPACE_ENV = "CISTERN_IT_HOST_MOUNT_NS"

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CISTERN_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.environ.get("CISTERN_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
CISTERND = os.path.join(BUILD_DIR, "daemon", "cisternd")
CISTERNCTL = os.path.join(BUILD_DIR, "clients", "cisternctl")

DBUS_DAEMON = "/usr/bin/dbus-daemon"
UDEVD_PATHS = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
UDEVADM = "/bin/udevadm"
UDEV_RULES_SOURCE = os.path.join(SOURCE_DIR, "udev")
CISTERN_RUN = "/run/cistern"   # where the rules look for device records (SPEC §2 default)
POLKITD = "/usr/lib/polkit-1/polkitd"
POLKIT_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"

BUS_NAME = "org.cistern.Cistern1"
ROOT_PATH = "/org/cistern/Cistern1"
MANAGER = BUS_NAME + ".Manager"
POOL = BUS_NAME + ".Pool"
VOLUME = BUS_NAME + ".Volume"
JOB = BUS_NAME + ".Job"
PROPERTIES = "org.freedesktop.DBus.Properties"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"

CALL_TIMEOUT = 120.0   # seconds; long enough for preallocation of test-sized volumes
READY_TIMEOUT = 20.0   # seconds for a process to take or drop its bus name

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


class Error:
    """Fully qualified D-Bus error names (SPEC §4.5)."""
    PREFIX = "org.cistern.Cistern1.Error."
    Failed = PREFIX + "Failed"
    NotAuthorized = PREFIX + "NotAuthorized"
    Cancelled = PREFIX + "Cancelled"
    NotFound = PREFIX + "NotFound"
    AlreadyExists = PREFIX + "AlreadyExists"
    Busy = PREFIX + "Busy"
    InvalidArgument = PREFIX + "InvalidArgument"
    InvalidName = PREFIX + "InvalidName"
    NotSupported = PREFIX + "NotSupported"
    NoSpace = PREFIX + "NoSpace"
    UnsafeImage = PREFIX + "UnsafeImage"
    WouldShrink = PREFIX + "WouldShrink"
    WrongState = PREFIX + "WrongState"
    LimitsExceeded = PREFIX + "LimitsExceeded"
    # What the bus (sd-bus) answers for an object path that does not exist.
    UnknownObject = "org.freedesktop.DBus.Error.UnknownObject"
    UnknownMethod = "org.freedesktop.DBus.Error.UnknownMethod"


@dataclasses.dataclass(frozen=True)
class TestUser:
    name: str
    uid: int
    gid: int


USER_A = TestUser("cistest-a", 61001, 61001)
USER_B = TestUser("cistest-b", 61002, 61002)
TEST_USERS = (USER_A, USER_B)


# Names that SPEC §3 rejects (InvalidName), and a size beyond every limit.
INVALID_NAMES = {
    "empty": "",
    "parent dir": "../x",
    "slash": "a/b",
    "65 chars": "a" * 65,
    "leading dot": ".x",
    "leading dash": "-x",
    "leading underscore": "_x",
    "space": "a b",
    "non-ascii": "caf\u00e9",
    "newline": "a\nb",
}

HUGE_SIZE = 2 ** 64 - 512


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

def unwrap(value):
    """dbus-python values → plain Python values (recursively)."""
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32,
                          dbus.Int64, dbus.UInt64)):
        return int(value)
    if isinstance(value, dbus.Double):
        return float(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath, dbus.Signature)):
        return str(value)
    if isinstance(value, (dbus.ByteArray, bytes)):
        return bytes(value)
    if isinstance(value, dict):
        return {unwrap(k): unwrap(v) for k, v in value.items()}
    if isinstance(value, dbus.Struct) or isinstance(value, tuple):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


_SIGNATURE_OF_TYPE = [
    (dbus.Boolean, "b"), (dbus.Byte, "y"), (dbus.Int16, "n"), (dbus.UInt16, "q"),
    (dbus.Int32, "i"), (dbus.UInt32, "u"), (dbus.Int64, "x"), (dbus.UInt64, "t"),
    (dbus.Double, "d"), (dbus.ObjectPath, "o"), (dbus.Signature, "g"), (dbus.String, "s"),
    (dbus.types.UnixFd, "h"),
]


def signature_of(value):
    """D-Bus signature of a value as received by dbus-python."""
    for cls, sig in _SIGNATURE_OF_TYPE:
        if isinstance(value, cls):
            return sig
    if isinstance(value, dbus.Dictionary):
        return "a{%s}" % value.signature
    if isinstance(value, dbus.Array):
        return "a" + value.signature
    if isinstance(value, dbus.ByteArray):
        return "ay"
    if isinstance(value, dbus.Struct):
        return value.signature and "(%s)" % value.signature or \
            "(" + "".join(signature_of(v) for v in value) + ")"
    raise TypeError("not a dbus-python value: %r" % (value,))


# Known option keys and their D-Bus types (SPEC §4), so tests can write plain
# Python values.  A value that already is a dbus-python type is sent unchanged,
# which is how tests send deliberately wrong types.
OPTION_TYPES = {
    "path": dbus.String, "reflink": dbus.String, "revisions_to_keep": dbus.UInt32,
    "data_device": dbus.String, "metadata_device": dbus.String, "block_size": dbus.UInt64,
    "format": dbus.String, "save_on_stop": dbus.Boolean, "snap_on_start": dbus.Boolean,
    "source": dbus.ObjectPath, "read_only": dbus.Boolean, "preallocate": dbus.Boolean,
    "owner": dbus.UInt32, "allow_shrink": dbus.Boolean, "size": dbus.UInt64,
    "revision": dbus.String, "sparse": dbus.Boolean,
}

_DBUS_TYPES = tuple(cls for cls, _ in _SIGNATURE_OF_TYPE) + (dbus.Array, dbus.Dictionary,
                                                            dbus.Struct, dbus.ByteArray)


def variant_dict(options):
    """A Python dict → a{sv}, typing known keys as SPEC says."""
    result = dbus.Dictionary({}, signature="sv")
    for key, value in (options or {}).items():
        if not isinstance(value, _DBUS_TYPES) and key in OPTION_TYPES:
            value = OPTION_TYPES[key](value)
        result[key] = value
    return result


def path_encode(prefix, name):
    """Object path of `name` below `prefix`, escaped like sd_bus_path_encode()."""
    if not name:
        return prefix + "/_"
    label = "".join(ch if ch.isascii() and (ch.isalpha() or (i > 0 and ch.isdigit()))
                    else "".join("_%02x" % b for b in ch.encode())
                    for i, ch in enumerate(name))
    return prefix + "/" + label


def pool_path(pool):
    return path_encode(ROOT_PATH + "/pool", pool)


def volume_path(pool, volume):
    return path_encode(pool_path(pool), volume)


# ---------------------------------------------------------------------------
# A client of the Cistern API over one bus connection
# ---------------------------------------------------------------------------

class Cistern:
    """Thin wrapper: one method per D-Bus method, explicit signatures.

    Calls go to the well-known name every time (no cached proxies), so they
    follow the daemon across restarts and bus activation.
    """

    def __init__(self, bus):
        self.bus = bus

    def call(self, path, iface, method, sig, *args, timeout=CALL_TIMEOUT):
        return self.bus.call_blocking(BUS_NAME, path, iface, method, sig, args,
                                      timeout=timeout)

    # Manager
    def create_pool(self, name, driver="dir", config=None):
        return str(self.call(ROOT_PATH, MANAGER, "CreatePool", "ssa{sv}",
                             name, driver, variant_dict(config)))

    def remove_pool(self, name, options=None):
        self.call(ROOT_PATH, MANAGER, "RemovePool", "sa{sv}", name, variant_dict(options))

    def get_pool(self, name):
        return str(self.call(ROOT_PATH, MANAGER, "GetPool", "s", name))

    def get_volume(self, pool, volume):
        return str(self.call(ROOT_PATH, MANAGER, "GetVolume", "ss", pool, volume))

    # Pool
    def create_volume(self, pool_obj, name, size, options=None):
        return str(self.call(pool_obj, POOL, "CreateVolume", "sta{sv}",
                             name, size, variant_dict(options)))

    def configure_pool(self, pool_obj, settings):
        self.call(pool_obj, POOL, "Configure", "a{sv}", variant_dict(settings))

    def refresh_pool(self, pool_obj):
        self.call(pool_obj, POOL, "Refresh", "")

    # Volume
    def remove_volume(self, volume_obj, options=None):
        self.call(volume_obj, VOLUME, "Remove", "a{sv}", variant_dict(options))

    def resize(self, volume_obj, size, options=None):
        self.call(volume_obj, VOLUME, "Resize", "ta{sv}", size, variant_dict(options))

    def configure_volume(self, volume_obj, settings):
        self.call(volume_obj, VOLUME, "Configure", "a{sv}", variant_dict(settings))

    def info(self, volume_obj, options=None):
        return unwrap(self.call(volume_obj, VOLUME, "Info", "a{sv}", variant_dict(options)))

    # Standard interfaces
    def raw_props(self, path, iface):
        return self.call(path, PROPERTIES, "GetAll", "s", iface)

    def props(self, path, iface):
        return unwrap(self.raw_props(path, iface))

    def prop(self, path, iface, name):
        return unwrap(self.call(path, PROPERTIES, "Get", "ss", iface, name))

    def managed_objects(self):
        return unwrap(self.call(ROOT_PATH, OBJECT_MANAGER, "GetManagedObjects", ""))

    def introspect(self, path):
        return str(self.call(path, INTROSPECTABLE, "Introspect", ""))

    # Life cycle, revisions and copies (SPEC §4.3), jobs (§4.4)
    def start_volume(self, volume_obj, options=None):
        self.call(volume_obj, VOLUME, "Start", "a{sv}", variant_dict(options))

    def stop_volume(self, volume_obj, options=None):
        self.call(volume_obj, VOLUME, "Stop", "a{sv}", variant_dict(options))

    def create_snapshot(self, volume_obj, options=None):
        return str(self.call(volume_obj, VOLUME, "CreateSnapshot", "a{sv}",
                             variant_dict(options)))

    def remove_revision(self, volume_obj, revision, options=None):
        self.call(volume_obj, VOLUME, "RemoveRevision", "sa{sv}", revision,
                  variant_dict(options))

    def revert(self, volume_obj, revision, options=None):
        self.call(volume_obj, VOLUME, "Revert", "sa{sv}", revision, variant_dict(options))

    def convert(self, volume_obj, fmt, options=None):
        self.call(volume_obj, VOLUME, "Convert", "sa{sv}", fmt, variant_dict(options))

    def clone(self, volume_obj, pool_obj, name, options=None):
        return str(self.call(volume_obj, VOLUME, "Clone", "osa{sv}", pool_obj, name,
                             variant_dict(options)))

    def cancel_job(self, job_obj, options=None):
        self.call(job_obj, JOB, "Cancel", "a{sv}", variant_dict(options))

    # Export over file descriptors (SPEC §4.3)
    def export(self, volume_obj, fd, options=None, timeout=CALL_TIMEOUT):
        """Export into fd (an int; the caller keeps it and closes it)."""
        self.call(volume_obj, VOLUME, "Export", "ha{sv}", dbus.types.UnixFd(fd),
                  variant_dict(options), timeout=timeout)

    def export_begin(self, volume_obj, options=None):
        """ExportBegin; the returned fd (an int) is the caller's to close."""
        return self.call(volume_obj, VOLUME, "ExportBegin", "a{sv}",
                         variant_dict(options)).take()

    def export_end(self, volume_obj, options=None):
        self.call(volume_obj, VOLUME, "ExportEnd", "a{sv}", variant_dict(options))

    # Import over file descriptors (SPEC §4.3)
    def import_(self, volume_obj, fd, options=None, timeout=CALL_TIMEOUT):
        """Import from fd (an int; the caller keeps it and closes it)."""
        self.call(volume_obj, VOLUME, "Import", "ha{sv}", dbus.types.UnixFd(fd),
                  variant_dict(options), timeout=timeout)

    def import_begin(self, volume_obj, options=None):
        """ImportBegin; the returned fd (an int) is the caller's to close."""
        return self.call(volume_obj, VOLUME, "ImportBegin", "a{sv}",
                         variant_dict(options)).take()

    def import_end(self, volume_obj, commit, options=None):
        self.call(volume_obj, VOLUME, "ImportEnd", "ba{sv}", commit, variant_dict(options))

    # Block devices (SPEC §4.3)
    def attach(self, volume_obj, options=None):
        """Attach; returns the device node ("/dev/loopN")."""
        return str(self.call(volume_obj, VOLUME, "Attach", "a{sv}", variant_dict(options)))

    def detach(self, volume_obj, options=None):
        self.call(volume_obj, VOLUME, "Detach", "a{sv}", variant_dict(options))


@dataclasses.dataclass
class Outcome:
    """What a call made as another user produced: a value or a D-Bus error."""
    value: object = None
    error: str = None
    message: str = None

    @property
    def ok(self):
        return self.error is None

    def __str__(self):
        return "ok: %r" % (self.value,) if self.ok else "%s: %s" % (self.error, self.message)


def dbus_outcome(fn, *args):
    try:
        return Outcome(value=unwrap(fn(*args)))
    except dbus.exceptions.DBusException as e:
        return Outcome(error=e.get_dbus_name(), message=e.get_dbus_message())


# ---------------------------------------------------------------------------
# Processes with another identity
# ---------------------------------------------------------------------------

def _leave_login_session():
    """Move this process out of a logind session scope.

    polkit treats a subject inside an active local session as "active"; the
    test users must be judged by the "any" defaults whatever session the
    harness itself was started from.
    """
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "/session-" not in path:
            continue
        root = "/sys/fs/cgroup" if controllers == "" else "/sys/fs/cgroup/systemd"
        with contextlib.suppress(OSError):
            with open(os.path.join(root, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))


def become(user):
    """Drop every privilege to `user` (use in a forked child only)."""
    _leave_login_session()
    os.setgroups([])
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)


def as_user(user, fn):
    """Run fn(Cistern) in a child with user's uid on its own bus connection.

    Returns an Outcome: the (unwrapped) result or the D-Bus error name and
    message.  Any other exception in the child is re-raised here.
    """
    return as_user_async(user, fn).outcome()


class UserCall:
    """A call running in a child process as another user (see as_user_async)."""

    def __init__(self, user, fn):
        self.user = user
        read_fd, write_fd = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(read_fd)
            _child_run(user, fn, write_fd)
        os.close(write_fd)
        self._pipe = os.fdopen(read_fd, "rb")
        self._outcome = None

    def done(self, timeout=0):
        """True once the child has answered (waits up to timeout seconds)."""
        if self._pipe is None:
            return True
        ready, _, _ = select.select([self._pipe], [], [], timeout)
        return bool(ready)

    def outcome(self, timeout=CALL_TIMEOUT + 10):
        """The child's Outcome; waits for it (a child that hangs is killed)."""
        if self._pipe is None:
            return self._outcome
        if not self.done(timeout):
            os.kill(self.pid, signal.SIGKILL)
        data = self._pipe.read()
        self._pipe.close()
        self._pipe = None
        os.waitpid(self.pid, 0)
        if not data:
            raise RuntimeError("child running as %s died without an answer" % self.user.name)
        kind, payload = pickle.loads(data)
        if kind == "crash":
            raise RuntimeError("child running as %s failed:\n%s" % (self.user.name, payload))
        self._outcome = payload
        return payload


    def kill(self):
        """SIGKILL the child (its bus connection goes with it) and reap it."""
        if self._pipe is None:
            return
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self._pipe.close()
        self._pipe = None


def as_user_async(user, fn):
    """Start fn(Cistern) in a child as `user`; returns a UserCall to collect its Outcome."""
    return UserCall(user, fn)


def _child_run(user, fn, write_fd):
    try:
        become(user)
        bus = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
        answer = ("outcome", dbus_outcome(fn, Cistern(bus)))
    except BaseException:
        answer = ("crash", traceback.format_exc())
    try:
        with os.fdopen(write_fd, "wb") as f:
            f.write(pickle.dumps(answer))
    finally:
        os._exit(0)


def run_as(user, argv, **kwargs):
    """subprocess.run(argv) as `user` (root when user is None), text output."""
    preexec = (lambda: become(user)) if user else None
    return subprocess.run(argv, preexec_fn=preexec, capture_output=True, text=True,
                          timeout=CALL_TIMEOUT, **kwargs)


# ---------------------------------------------------------------------------
# Small process helpers
# ---------------------------------------------------------------------------

def wait_pid_exit(pid, timeout):
    """Wait until pid (any process, child or not) has exited.  True if it did."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def poll_until(predicate, timeout, what):
    """Poll a cheap readiness predicate (bus name ownership) with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


def retry_while_busy(fn, *args, timeout=10.0):
    """fn(*args), called again while it fails with Busy (the daemon learns some things, such as
    a caller leaving the bus, by a signal), up to timeout seconds.  Returns fn's value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn(*args)
        except dbus.exceptions.DBusException as e:
            if e.get_dbus_name() != Error.Busy or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def run_checked(argv):
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv), result.returncode,
                                                  result.stderr.strip()))
    return result.stdout


def mounts_under(directory):
    """Mount points at or below directory, deepest first."""
    directory = os.path.realpath(directory)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == directory or point.startswith(directory + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def file_tail(path, offset):
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def file_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


# ---------------------------------------------------------------------------
# Loop devices and udev
# ---------------------------------------------------------------------------

class UdevUnavailable(Exception):
    """systemd-udevd cannot run here; the message says why (tests that need it skip)."""


def unix_socket_answers(path):
    """Whether something listens on the unix seqpacket socket at path (udevd's control)."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def loop_devices_under(directory):
    """[(name, backing file)] of the loop devices whose backing file lies below directory."""
    found = []
    prefix = os.path.realpath(directory) + "/"
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith("loop"):
            continue
        try:
            with open("/sys/block/%s/loop/backing_file" % name) as f:
                backing = f.read().strip()
        except OSError:
            continue   # no file attached
        if backing.endswith(" (deleted)"):
            backing = backing[:-len(" (deleted)")]
        if backing.startswith(prefix):
            found.append((name, backing))
    return found


def loop_partitions(device):
    """Partition numbers of a loop device (/dev/loopN), from sysfs."""
    name = os.path.basename(device)
    numbers = []
    for entry in os.listdir("/sys/block/" + name):
        if entry.startswith(name + "p") and entry[len(name) + 1:].isdigit():
            numbers.append(int(entry[len(name) + 1:]))
    return sorted(numbers)


def detach_loop(device, timeout=10):
    """Delete a loop device's partitions, then detach it; waits until its file is gone.

    Partitions added with BLKPG outlive LOOP_CLR_FD on a device without partscan, so they
    go first.  A detach while another process (udevd's blkid, say) holds the device open is
    deferred by the kernel to the last close: hence the wait."""
    name = os.path.basename(device)
    if loop_partitions(device):
        subprocess.run(["partx", "--delete", device], capture_output=True)
    if not os.path.exists("/sys/block/%s/loop/backing_file" % name):
        return
    run_checked(["losetup", "--detach", device])
    poll_until(lambda: not os.path.exists("/sys/block/%s/loop/backing_file" % name), timeout,
               "%s to be detached" % device)


def dev_snapshot():
    """{path: (type, mode, uid, gid, rdev, atime, mtime)} of everything in /dev, without
    other mounts."""
    entries = {}
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                entries[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                 st.st_uid, st.st_gid, st.st_rdev, st.st_atime_ns,
                                 st.st_mtime_ns)
    return entries


def dev_restore(before):
    """Undo in /dev what a udevd did since dev_snapshot() returned `before`.

    /dev is the host's devtmpfs, shared with every namespace: links and directories that
    appeared go, device nodes get back the owner and mode they had (or, for nodes the kernel
    made since, the devtmpfs default: root, 0600), and what was there its times."""
    after = dev_snapshot()
    for path in sorted(set(after) - set(before), key=lambda p: p.count("/"), reverse=True):
        kind = after[path][0]
        with contextlib.suppress(OSError):
            if kind == stat.S_IFLNK:
                os.unlink(path)
            elif kind == stat.S_IFDIR:
                os.rmdir(path)
    for path, (kind, mode, uid, gid, rdev, _, _) in after.items():
        if kind not in (stat.S_IFBLK, stat.S_IFCHR):
            continue
        old = before.get(path)
        want = old[1:4] if old and old[0] == kind and old[4] == rdev else (0o600, 0, 0)
        if (mode, uid, gid) != want:
            with contextlib.suppress(OSError):
                os.chown(path, want[1], want[2])
                os.chmod(path, want[0])
    for path, old in before.items():
        if old[0] != stat.S_IFLNK and path in after:
            with contextlib.suppress(OSError):
                os.utime(path, ns=old[5:7], follow_symlinks=False)


# ---------------------------------------------------------------------------
# Scratch filesystems in image files
# ---------------------------------------------------------------------------

MKFS = {
    "ext4": (["mkfs.ext4", "-q", "-F"], 64 * MiB),
    "xfs": (["mkfs.xfs", "-q", "-f", "-m", "reflink=1"], 320 * MiB),
    "btrfs": (["mkfs.btrfs", "-q", "-f"], 128 * MiB),
}


class ScratchFs:
    """An image file, formatted, loop-attached and mounted; teardown is idempotent.

    The loop device is detached right after mounting: the kernel then frees it
    by itself (autoclear) when the mount goes, even if this process is killed
    and the namespace holding the mount simply disappears.
    """

    def __init__(self, workdir, fstype, size):
        self.fstype = fstype
        self.image = tempfile.mktemp(prefix="scratch-%s-" % fstype, suffix=".img", dir=workdir)
        self.path = self.image[:-len(".img")]
        self.device = None
        self.attached = False
        self.mounted = False
        mkfs, minimum = MKFS[fstype]
        with open(self.image, "wb") as f:
            f.truncate(max(size or minimum, minimum))
        try:
            run_checked(mkfs + [self.image])
            self.device = run_checked(["losetup", "--find", "--show", self.image]).strip()
            self.attached = True
            os.mkdir(self.path)
            run_checked(["mount", "-t", fstype, self.device, self.path])
            self.mounted = True
            self._detach()
            os.chmod(self.path, 0o755)
        except BaseException:
            self.teardown()
            raise

    def _detach(self):
        if self.attached:
            run_checked(["losetup", "-d", self.device])
            self.attached = False

    def teardown(self):
        if self.mounted:
            run_checked(["umount", self.path])
            self.mounted = False
        self._detach()
        with contextlib.suppress(OSError):
            os.rmdir(self.path)
        with contextlib.suppress(OSError):
            os.unlink(self.image)


# ---------------------------------------------------------------------------
# The environment: namespace, bus, polkitd, cisternd
# ---------------------------------------------------------------------------

FALLBACK_BUS_POLICY = """
  <!-- dbus/org.cistern.Cistern1.conf is missing from the source tree -->
  <policy user="root">
    <allow own="org.cistern.Cistern1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.cistern.Cistern1"/>
  </policy>
"""

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{servicedir}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"
          send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
{cistern_policy}
</busconfig>
"""

# The actions of SPEC §5, used only while polkit/org.cistern.Cistern1.policy
# does not exist yet (test_authorization checks the real file separately).
FALLBACK_ACTIONS = [
    ("org.cistern.pool.manage", "auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    ("org.cistern.volume.create", "auth_admin", "auth_admin", "auth_admin_keep"),
    ("org.cistern.volume.modify", "auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    ("org.cistern.volume.modify-own", "auth_admin", "auth_admin", "yes"),
    ("org.cistern.volume.read", "auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    ("org.cistern.volume.read-own", "auth_admin", "auth_admin", "yes"),
    ("org.cistern.volume.attach", "auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    ("org.cistern.volume.attach-own", "auth_admin", "auth_admin", "auth_admin_keep"),
    ("org.cistern.volume.mount", "auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
    ("org.cistern.volume.mount-own", "auth_admin", "auth_admin", "auth_admin_keep"),
    ("org.cistern.job.cancel", "auth_admin_keep", "auth_admin_keep", "auth_admin_keep"),
]


def fallback_policy_xml():
    actions = "".join(
        '  <action id="%s">\n    <description>%s</description>\n    <message>%s</message>\n'
        '    <defaults><allow_any>%s</allow_any><allow_inactive>%s</allow_inactive>'
        '<allow_active>%s</allow_active></defaults>\n  </action>\n'
        % (action, action, action, any_, inactive, active)
        for action, any_, inactive, active in FALLBACK_ACTIONS)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">\n'
            '<policyconfig>\n%s</policyconfig>\n' % actions)


def rule_allowing(action_ids, user, condition="true"):
    """polkit JS: YES for `user` on any of `action_ids` when `condition` holds."""
    ids = ", ".join('"%s"' % a for a in ([action_ids] if isinstance(action_ids, str)
                                           else action_ids))
    return ("polkit.addRule(function(action, subject) {\n"
            "    if ([%s].indexOf(action.id) >= 0 && subject.user == \"%s\" && (%s))\n"
            "        return polkit.Result.YES;\n"
            "});\n" % (ids, user.name, condition))


class PolkitGate:
    """Holds polkitd's answers to matching checks until the test releases them.

    rule() returns a polkit rule that, for the given actions and user, runs a
    shell (polkit.spawn, as the polkitd user) which marks that the check has
    begun and then waits for the release file, before returning `result`.  So
    a test knows when a call is waiting for polkit, and decides when polkit
    answers.  The wait is bounded (about 8 s, below polkit.spawn's limit).
    """

    def __init__(self, directory):
        self.dir = directory
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.mkdir(directory)
        os.chmod(directory, 0o1777)
        self.entered = os.path.join(directory, "entered")
        self.release_file = os.path.join(directory, "release")

    def rule(self, action_ids, user, result="YES"):
        script = ('touch %s; i=0; while [ ! -e %s ] && [ $i -lt 160 ]; '
                  'do sleep 0.05; i=$((i+1)); done' % (self.entered, self.release_file))
        ids = ", ".join('"%s"' % a for a in ([action_ids] if isinstance(action_ids, str)
                                               else action_ids))
        return ("polkit.addRule(function(action, subject) {\n"
                "    if ([%s].indexOf(action.id) >= 0 && subject.user == \"%s\") {\n"
                "        polkit.spawn([\"/bin/sh\", \"-c\", %s]);\n"
                "        return polkit.Result.%s;\n"
                "    }\n"
                "});\n" % (ids, user.name, _js_string(script), result))

    def wait_entered(self, timeout=10):
        poll_until(lambda: os.path.exists(self.entered), timeout,
                   "polkitd to start evaluating the gated rule")

    def release(self):
        with open(self.release_file, "w"):
            pass


def _js_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Environment:
    """Private bus + polkitd (+ cisternd on demand) in a temp dir; one per process."""

    def __init__(self):
        # A tmpfs private to the namespace: if the test process is killed, the
        # host keeps at most this empty directory.
        self.tmp = tempfile.mkdtemp(prefix="cistern-it-")
        run_checked(["mount", "-t", "tmpfs", "-o", "mode=0755", "cistern-it", self.tmp])
        self.dirs = {}
        for name in ("logs", "services", "state", "run", "pools", "scratch", "bin",
                     "etc", "polkit-actions", "polkit-rules"):
            self.dirs[name] = os.path.join(self.tmp, name)
            os.mkdir(self.dirs[name], 0o755)
        self.socket = os.path.join(self.tmp, "bus")
        self.address = "unix:path=" + self.socket
        self.logs = {name: os.path.join(self.dirs["logs"], name + ".log")
                     for name in ("cisternd", "dbus-daemon", "polkitd", "udevd")}
        self.bind_mounts = []
        self.scratch = []
        self.dbus_daemon = None
        self.polkitd = None
        self.direct_daemon = None
        self.bus = None
        self.client = None
        self.rules = ""
        self.activation_args = None
        self.udevd = None
        self.private_run = False
        self.dev_before_udevd = None
        self.dev_lock = None

    # -- start / stop -------------------------------------------------------

    def start(self):
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        self._install_users()
        self._install_polkit_actions()
        self._install_polkit_rules_dir()
        self._start_dbus_daemon()
        self.bus = dbus.bus.BusConnection(self.address,
                                          mainloop=dbus.mainloop.glib.DBusGMainLoop())
        self.client = Cistern(self.bus)
        self.start_polkitd()
        self.write_activation_file()

    def stop(self):
        """Kill everything started, undo every mount, remove the temp dir."""
        steps = [self._stop_any_daemon, self._teardown_scratch, self.detach_leftover_loops,
                 self.stop_udevd, self.stop_polkitd, self._stop_dbus_daemon,
                 self._undo_bind_mounts, self._remove_tmp]
        for step in steps:
            try:
                step()
            except Exception:
                traceback.print_exc()

    def _stop_any_daemon(self):
        if self.bus is not None:
            self.stop_daemon(check=False)

    def _teardown_scratch(self):
        while self.scratch:
            self.scratch.pop().teardown()

    def _undo_bind_mounts(self):
        while self.bind_mounts:
            run_checked(["umount", self.bind_mounts.pop()])

    def _remove_tmp(self):
        leftovers = [m for m in mounts_under(self.tmp) if m != self.tmp]
        if leftovers:
            raise RuntimeError("not removing %s: still mounted: %s" % (self.tmp, leftovers))
        run_checked(["umount", self.tmp])
        os.rmdir(self.tmp)

    # -- system files through bind mounts -----------------------------------

    def _bind(self, source, target):
        run_checked(["mount", "--bind", source, target])
        self.bind_mounts.append(target)

    def _install_users(self):
        passwd = os.path.join(self.dirs["etc"], "passwd")
        group = os.path.join(self.dirs["etc"], "group")
        shutil.copyfile("/etc/passwd", passwd)
        shutil.copyfile("/etc/group", group)
        for user in TEST_USERS:
            with open(passwd, "a") as f:
                f.write("%s:x:%d:%d:Cistern test user:/nonexistent:/usr/sbin/nologin\n"
                        % (user.name, user.uid, user.gid))
            with open(group, "a") as f:
                f.write("%s:x:%d:\n" % (user.name, user.gid))
        os.chmod(passwd, 0o644)
        os.chmod(group, 0o644)
        self._bind(passwd, "/etc/passwd")
        self._bind(group, "/etc/group")

    def _install_polkit_actions(self):
        actions = self.dirs["polkit-actions"]
        for name in os.listdir("/usr/share/polkit-1/actions"):
            shutil.copy(os.path.join("/usr/share/polkit-1/actions", name), actions)
        target = os.path.join(actions, "org.cistern.Cistern1.policy")
        ours = os.path.join(SOURCE_DIR, "polkit", "org.cistern.Cistern1.policy")
        if os.path.exists(ours):
            shutil.copyfile(ours, target)
        else:
            print("harness: %s missing, using SPEC §5 fallback actions" % ours, file=sys.stderr)
            with open(target, "w") as f:
                f.write(fallback_policy_xml())
        for name in os.listdir(actions):
            os.chmod(os.path.join(actions, name), 0o644)
        self._bind(actions, "/usr/share/polkit-1/actions")

    def _install_polkit_rules_dir(self):
        rules = self.dirs["polkit-rules"]
        polkitd_user = pwd.getpwnam("polkitd")
        os.chown(rules, polkitd_user.pw_uid, 0)
        os.chmod(rules, 0o700)
        self._bind(rules, "/etc/polkit-1/rules.d")

    # -- dbus-daemon ----------------------------------------------------------

    def bus_config(self):
        ours = os.path.join(SOURCE_DIR, "dbus", "org.cistern.Cistern1.conf")
        policy = ("  <include>%s</include>" % ours) if os.path.exists(ours) \
            else FALLBACK_BUS_POLICY
        return BUS_CONFIG.format(socket=self.socket, servicedir=self.dirs["services"],
                                 cistern_policy=policy)

    def _start_dbus_daemon(self):
        config = os.path.join(self.tmp, "bus.conf")
        with open(config, "w") as f:
            f.write(self.bus_config())
        log = open(self.logs["dbus-daemon"], "ab")
        self.dbus_daemon = subprocess.Popen(
            [DBUS_DAEMON, "--config-file=" + config, "--nofork", "--nopidfile",
             "--print-address"], stdout=subprocess.PIPE, stderr=log)
        log.close()
        address = self.dbus_daemon.stdout.readline().decode().strip()
        if not address:
            raise RuntimeError("dbus-daemon did not start:\n" +
                               file_tail(self.logs["dbus-daemon"], 0))

    def _stop_dbus_daemon(self):
        if self.dbus_daemon:
            if self.bus is not None:
                self.bus.close()
                self.bus = None
            self.dbus_daemon.terminate()
            self.dbus_daemon.wait(timeout=10)
            self.dbus_daemon.stdout.close()
            self.dbus_daemon = None

    def bus_driver(self, method, sig="", *args):
        return self.bus.call_blocking("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                      "org.freedesktop.DBus", method, sig, args)

    def name_has_owner(self, name):
        return bool(self.bus_driver("NameHasOwner", "s", name))

    def name_pid(self, name):
        """pid of the owner of name, or None (never activates anything)."""
        try:
            return int(self.bus_driver("GetConnectionUnixProcessID", "s", name))
        except dbus.exceptions.DBusException as e:
            if e.get_dbus_name() == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return None
            raise

    def reload_bus_config(self):
        self.bus_driver("ReloadConfig")

    # -- polkitd --------------------------------------------------------------

    def start_polkitd(self):
        if self.polkitd is not None:
            return
        with open(self.logs["polkitd"], "ab") as log:
            self.polkitd = subprocess.Popen([POLKITD, "--no-debug"], stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL)

        def ready():
            if self.polkitd.poll() is not None:
                raise RuntimeError("polkitd exited (%d):\n%s" % (
                    self.polkitd.returncode, file_tail(self.logs["polkitd"], 0)))
            return self.name_has_owner(POLKIT_NAME)
        poll_until(ready, READY_TIMEOUT, "polkitd to own " + POLKIT_NAME)

    def stop_polkitd(self):
        if self.polkitd is None:
            return
        self.polkitd.terminate()
        self.polkitd.wait(timeout=10)
        self.polkitd = None
        if self.bus is not None:
            poll_until(lambda: not self.name_has_owner(POLKIT_NAME), READY_TIMEOUT,
                       "polkitd to release its name")

    def set_polkit_rules(self, js_text):
        """Replace the test rules and restart polkitd so they are in force."""
        path = os.path.join(self.dirs["polkit-rules"], "50-cistern-test.rules")
        with open(path, "w") as f:
            f.write(js_text)
        os.chmod(path, 0o644)
        self.rules = js_text
        self.stop_polkitd()
        self.start_polkitd()

    def polkit_gate(self):
        """A fresh PolkitGate in the environment's directory (see PolkitGate)."""
        return PolkitGate(os.path.join(self.tmp, "polkit-gate"))

    def check_authorization(self, bus, action_id, details=None):
        """CheckAuthorization for the caller's own connection (system-bus-name)."""
        subject = dbus.Struct((dbus.String("system-bus-name"),
                               dbus.Dictionary({"name": dbus.String(bus.get_unique_name())},
                                               signature="sv")))
        result = bus.call_blocking(POLKIT_NAME, POLKIT_PATH, POLKIT_IFACE, "CheckAuthorization",
                                   "(sa{sv})sa{ss}us",
                                   (subject, action_id, dbus.Dictionary(details or {},
                                                                        signature="ss"),
                                    dbus.UInt32(0), ""))
        return unwrap(result)

    # -- cisternd ------------------------------------------------------------

    def daemon_args(self, idle_timeout=0, extra_args=()):
        return [CISTERND, "--state-dir=" + self.dirs["state"],
                "--runtime-dir=" + self.dirs["run"], "--idle-timeout=%d" % idle_timeout,
                "--log-level=debug"] + list(extra_args)

    def write_activation_file(self, idle_timeout=0, extra_args=()):
        """(Re)write the bus activation file; the bus reloads it before returning."""
        wrapper = os.path.join(self.dirs["bin"], "cisternd-logged")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\n# keeps the activated daemon\'s output in the test log\n'
                    'exec "$@" >>"%s" 2>&1\n' % self.logs["cisternd"])
        os.chmod(wrapper, 0o755)
        args = self.daemon_args(idle_timeout, extra_args)
        service = os.path.join(self.dirs["services"], BUS_NAME + ".service")
        with open(service, "w") as f:
            f.write("[D-BUS Service]\nName=%s\nExec=%s %s\nUser=root\n"
                    % (BUS_NAME, wrapper, " ".join(args)))
        self.activation_args = args
        if self.bus is not None:
            self.reload_bus_config()

    def daemon_pid(self):
        return self.name_pid(BUS_NAME)

    def start_daemon(self, idle_timeout=0, extra_args=()):
        """Start cisternd directly (not through activation) and wait for its name."""
        with open(self.logs["cisternd"], "ab") as log:
            self.direct_daemon = subprocess.Popen(self.daemon_args(idle_timeout, extra_args),
                                                  stdout=log, stderr=log,
                                                  stdin=subprocess.DEVNULL)

        def ready():
            if self.direct_daemon.poll() is not None:
                raise RuntimeError("cisternd exited with %d before taking its name"
                                   % self.direct_daemon.returncode)
            return self.name_has_owner(BUS_NAME)
        poll_until(ready, READY_TIMEOUT, "cisternd to own " + BUS_NAME)
        return self.direct_daemon.pid

    def kill_daemon(self, sig=signal.SIGKILL, timeout=10):
        """Send sig to the running cisternd and wait until it and its name are gone.

        Returns True if it exited within timeout."""
        pid = self.daemon_pid()
        if pid is None:
            return True
        os.kill(pid, sig)
        exited = wait_pid_exit(pid, timeout)
        if exited:
            self._reap_direct_daemon()
            poll_until(lambda: not self.name_has_owner(BUS_NAME), READY_TIMEOUT,
                       "the bus to drop " + BUS_NAME)
        return exited

    def _reap_direct_daemon(self):
        if self.direct_daemon is not None and self.direct_daemon.poll() is not None:
            self.direct_daemon = None

    def stop_daemon(self, check=True):
        """SIGTERM the daemon; SIGKILL it if it ignores that (an error when check)."""
        if self.kill_daemon(signal.SIGTERM, timeout=10):
            return
        self.kill_daemon(signal.SIGKILL)
        if check:
            raise AssertionError("cisternd did not exit within 10 s of SIGTERM")

    # -- systemd-udevd --------------------------------------------------------

    def start_udevd(self):
        """Start a real systemd-udevd in this namespace (once; later calls check it runs).

        Its database and control socket live in a private /run layer (the host's /run stays
        as it is), with cistern's rules copied from the source tree into /run/udev/rules.d and
        the daemon's runtime directory bind-mounted on /run/cistern, where the rules look for
        device records.  Raises UdevUnavailable when udevd cannot run here."""
        if self.udevd is not None:
            if self.udevd.poll() is not None:
                raise RuntimeError("systemd-udevd exited (%d):\n%s" % (
                    self.udevd.returncode, file_tail(self.logs["udevd"], 0)[-3000:]))
            return
        udevd = next((p for p in UDEVD_PATHS if os.access(p, os.X_OK)), None)
        if udevd is None or not os.access(UDEVADM, os.X_OK):
            raise UdevUnavailable("systemd-udevd is not installed (Debian package udev)")
        rules = sorted(n for n in os.listdir(UDEV_RULES_SOURCE) if n.endswith(".rules")) \
            if os.path.isdir(UDEV_RULES_SOURCE) else []
        if not rules:
            raise UdevUnavailable("no udev rules in %s" % UDEV_RULES_SOURCE)
        if unix_socket_answers("/run/udev/control"):
            raise UdevUnavailable("a systemd-udevd already runs on this host; two would both "
                                  "act on every device")
        try:
            self._lock_dev()
            self._make_private_run()
            os.mkdir("/run/udev/rules.d", 0o755)
            for name in rules:
                shutil.copyfile(os.path.join(UDEV_RULES_SOURCE, name),
                                os.path.join("/run/udev/rules.d", name))
            self.dev_before_udevd = dev_snapshot()
            self._spawn_udevd(udevd)
        except BaseException:
            self.stop_udevd()
            raise

    def _lock_dev(self, timeout=240):
        """One harness udevd on the machine at a time: every udevd acts on every uevent and
        writes into the one /dev.  The lock is a flock on /dev itself (nothing is created);
        the kernel drops it when this process dies."""
        import fcntl
        fd = os.open("/dev", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise UdevUnavailable("another test run's systemd-udevd kept /dev for "
                                          "%d s" % timeout)
                time.sleep(0.2)
        self.dev_lock = fd

    def _make_private_run(self):
        """A tmpfs on /run that shows the host's /run entries through bind mounts, plus our
        own /run/udev (a tmpfs) and /run/cistern (the runtime directory)."""
        host_run = os.path.join(self.tmp, "host-run")
        os.mkdir(host_run)
        run_checked(["mount", "--rbind", "/run", host_run])
        try:
            run_checked(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev",
                         "cistern-it-run", "/run"])
            self.private_run = True
            for name in sorted(os.listdir(host_run)):
                if name in ("udev", "cistern"):
                    continue
                source, target = os.path.join(host_run, name), os.path.join("/run", name)
                if os.path.islink(source):
                    os.symlink(os.readlink(source), target)
                    continue
                # mount(8) itself may have made /run/mount (libmount's utab) meanwhile.
                if os.path.isdir(source):
                    os.makedirs(target, exist_ok=True)
                else:
                    open(target, "a").close()
                run_checked(["mount", "--rbind", source, target])
        finally:
            run_checked(["umount", "-R", host_run])
            os.rmdir(host_run)
        os.mkdir("/run/udev", 0o755)
        run_checked(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev",
                     "cistern-it-udev", "/run/udev"])
        os.mkdir(CISTERN_RUN, 0o755)
        run_checked(["mount", "--bind", self.dirs["run"], CISTERN_RUN])

    def _spawn_udevd(self, udevd):
        argv = [udevd]
        if os.environ.get("CISTERN_IT_UDEV_DEBUG"):
            argv.append("--debug")
        # Logs to our file, never to the host's kernel log or journal.
        env = dict(os.environ, SYSTEMD_LOG_TARGET="console")
        with open(self.logs["udevd"], "ab") as log:
            self.udevd = subprocess.Popen(argv, stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.udevd.poll() is not None:
                raise UdevUnavailable("systemd-udevd exited at start (%d): %s" % (
                    self.udevd.returncode,
                    file_tail(self.logs["udevd"], 0).strip()[-2000:] or "no output"))
            ping = subprocess.run([UDEVADM, "control", "--ping", "--timeout=1"],
                                  capture_output=True, text=True)
            if ping.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise UdevUnavailable("systemd-udevd does not answer on /run/udev/control: "
                                      + ping.stderr.strip())
            time.sleep(0.05)

    def udev_running(self):
        return self.udevd is not None and self.udevd.poll() is None

    def udev_settle(self, timeout=60):
        """Wait until our udevd has handled every uevent sent so far (udevadm settle, which
        talks to /run/udev/control of this namespace)."""
        if not self.udev_running():
            raise RuntimeError("systemd-udevd is not running:\n"
                               + file_tail(self.logs["udevd"], 0)[-3000:])
        result = subprocess.run([UDEVADM, "settle", "--timeout=%d" % timeout],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError("udevadm settle failed (%d): %s"
                               % (result.returncode, result.stderr.strip()))

    def udev_trigger(self, syspath, action="change"):
        """A synthetic uevent for one device; returns once udevd has handled it."""
        run_checked([UDEVADM, "trigger", "--action=" + action, "--settle", syspath])
        self.udev_settle()

    def udev_properties(self, devnode):
        """The device's properties in our udevd's database."""
        out = run_checked([UDEVADM, "info", "--query=property", "--name=" + devnode])
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop_udevd(self):
        """Stop udevd, put back what it changed in /dev and drop the private /run layer.

        Tests detach their loop devices and settle first, so that udevd itself removes the
        links it made."""
        if self.udevd is not None:
            if self.udevd.poll() is None:
                with contextlib.suppress(RuntimeError):
                    self.udev_settle(timeout=30)
                self.udevd.terminate()
                try:
                    self.udevd.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.udevd.kill()
                    self.udevd.wait()
            self.udevd = None
        if self.dev_before_udevd is not None:
            dev_restore(self.dev_before_udevd)
            self.dev_before_udevd = None
        if self.private_run:
            result = subprocess.run(["umount", "-R", "/run"], capture_output=True, text=True)
            if result.returncode != 0:
                run_checked(["umount", "-R", "-l", "/run"])
            self.private_run = False
        if self.dev_lock is not None:
            os.close(self.dev_lock)
            self.dev_lock = None

    def detach_leftover_loops(self):
        """Detach loop devices on files of this environment that a test left behind (its
        partitions first), except those of live scratch filesystems."""
        keep = {fs.image for fs in self.scratch}
        detached = False
        for name, backing in loop_devices_under(self.tmp):
            if backing in keep:
                continue
            print("harness: detaching leftover /dev/%s (%s)" % (name, backing), file=sys.stderr)
            detach_loop("/dev/" + name)
            detached = True
        if detached and self.udev_running():
            self.udev_settle()

    # -- per-test reset -------------------------------------------------------

    def reset(self):
        """A stopped daemon, empty state, default activation and rules, polkitd up."""
        self.stop_daemon(check=False)
        self.detach_leftover_loops()
        if self.rules:
            self.set_polkit_rules("")
        self.start_polkitd()
        if self.activation_args != self.daemon_args():
            self.write_activation_file()
        for name in ("state", "run", "pools"):
            self._empty_dir(self.dirs[name])

    def _empty_dir(self, directory):
        """Empties directory, keeping the directory itself (it may be bind-mounted elsewhere,
        as the runtime directory is on /run/cistern)."""
        for point in mounts_under(directory):
            print("harness: unmounting leftover mount %s" % point, file=sys.stderr)
            run_checked(["umount", "-l", point])
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o755)

    def make_scratch_fs(self, fstype="ext4", size=None):
        fs = ScratchFs(self.dirs["scratch"], fstype, size)
        self.scratch.append(fs)
        return fs

    def drop_scratch_fs(self, fs):
        self.stop_daemon(check=False)   # it may hold the pool directory open
        fs.teardown()
        if fs in self.scratch:
            self.scratch.remove(fs)

    # -- logs -----------------------------------------------------------------

    def log_marks(self):
        return {name: file_size(path) for name, path in self.logs.items()}

    def logs_since(self, marks):
        parts = []
        for name, path in self.logs.items():
            text = file_tail(path, marks.get(name, 0))
            if text.strip():
                parts.append("----- %s log -----\n%s" % (name, text.rstrip()))
        return "\n".join(parts)


_environment = None


def environment():
    """The process-wide Environment, started on first use."""
    global _environment
    if _environment is None:
        env = Environment()
        atexit.register(env.stop)
        try:
            env.start()
        except BaseException:
            env.stop()
            atexit.unregister(env.stop)
            raise
        _environment = env
    return _environment


# ---------------------------------------------------------------------------
# State snapshots
# ---------------------------------------------------------------------------

# Filesystem-wide figures of a pool change with unrelated activity on the host.
VOLATILE_POOL_PROPERTIES = ("Size", "Usage", "Available", "UsageDetails")


def _is_path_list(value):
    return isinstance(value, list) and all(isinstance(v, str) and v.startswith("/")
                                           for v in value)


def stable_pool_props(props):
    return {k: v for k, v in props.items() if k not in VOLATILE_POOL_PROPERTIES}


def stable_objects(objects):
    """GetManagedObjects without volatile pool figures; `ao` lists sorted."""
    result = {}
    for path, interfaces in objects.items():
        result[path] = {}
        for iface, props in interfaces.items():
            if iface == POOL:
                props = stable_pool_props(props)
            result[path][iface] = {k: sorted(v) if _is_path_list(v) else v
                                   for k, v in props.items()}
    return result


def tree_listing(root):
    """{relative path: (type, mode, uid, gid, size, sha256 of small files)}."""
    listing = {}
    if not os.path.lexists(root):
        return listing
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            listing[os.path.relpath(path, root)] = _describe(path)
    return listing


def _describe(path):
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    size = st.st_size if stat.S_ISREG(st.st_mode) else None
    digest = None
    if stat.S_ISREG(st.st_mode) and st.st_size <= MiB:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        digest = os.readlink(path)
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, digest)


# ---------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Signal:
    interface: str
    member: str
    path: str
    args: tuple


class SignalRecorder:
    """Records every signal the daemon emits under ROOT_PATH, in order."""

    def __init__(self, bus):
        self.signals = []
        self._match = bus.add_signal_receiver(
            self._record, interface_keyword="interface", member_keyword="member",
            path_keyword="path")

    def _record(self, *args, interface, member, path):
        if path == ROOT_PATH or path.startswith(ROOT_PATH + "/"):
            self.signals.append(Signal(interface, member, path, unwrap(args)))

    def close(self):
        self._match.remove()

    def matching(self, predicate):
        return [s for s in self.signals if predicate(s)]

    def wait_for(self, predicate, timeout=5.0):
        """Dispatch the main loop until a recorded signal satisfies predicate."""
        context = GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        wakeup = GLib.timeout_add(20, lambda: True)
        try:
            while True:
                while context.pending():
                    context.iteration(False)
                found = self.matching(predicate)
                if found or time.monotonic() > deadline:
                    return found[0] if found else None
                context.iteration(True)
        finally:
            GLib.source_remove(wakeup)

    def drain(self, seconds=0.3):
        """Dispatch for a short while so late signals get recorded."""
        self.wait_for(lambda s: False, timeout=seconds)


def dispatch_pending():
    """Dispatch what the main loop has queued (replies, signals) without waiting."""
    context = GLib.MainContext.default()
    while context.pending():
        context.iteration(False)


def interfaces_added(path, interface):
    return lambda s: (s.interface == OBJECT_MANAGER and s.member == "InterfacesAdded"
                      and s.args[0] == path and interface in s.args[1])


def interfaces_removed(path, interface):
    return lambda s: (s.interface == OBJECT_MANAGER and s.member == "InterfacesRemoved"
                      and s.args[0] == path and interface in s.args[1])


def properties_changed(path, interface, prop, value=None):
    """PropertiesChanged for prop on path (with value when given, or invalidated)."""
    def match(s):
        if s.interface != PROPERTIES or s.member != "PropertiesChanged" or s.path != path:
            return False
        iface, changed, invalidated = s.args
        if iface != interface:
            return False
        if prop in invalidated:
            return True
        return prop in changed and (value is None or changed[prop] == value)
    return match


def job_completed(path):
    return lambda s: s.interface == JOB and s.member == "Completed" and s.path == path


def job_added(operation=None):
    """InterfacesAdded of a Job (of `operation` when given)."""
    def match(s):
        if s.interface != OBJECT_MANAGER or s.member != "InterfacesAdded":
            return False
        props = s.args[1].get(JOB)
        return props is not None and (operation is None or props.get("Operation") == operation)
    return match


# ---------------------------------------------------------------------------
# Calls that run while the test keeps dispatching signals
# ---------------------------------------------------------------------------

class AsyncCall:
    """One method call sent without waiting; wait() dispatches the main loop meanwhile.

    Signals recorded by a SignalRecorder keep arriving while a test waits here.
    """

    def __init__(self, bus, path, iface, method, sig, *args, timeout=CALL_TIMEOUT):
        self.finished = False
        self.value = None
        self.error = None
        self.message = None
        self.finished_at = None
        bus.call_async(BUS_NAME, path, iface, method, sig, args, self._reply, self._error,
                       timeout=timeout)
        bus.flush()

    def _reply(self, *value):
        self.value = unwrap(value[0]) if len(value) == 1 else unwrap(value)
        self.finished, self.finished_at = True, time.monotonic()

    def _error(self, e):
        self.error, self.message = e.get_dbus_name(), e.get_dbus_message()
        self.finished, self.finished_at = True, time.monotonic()

    @property
    def ok(self):
        return self.finished and self.error is None

    def wait(self, timeout=CALL_TIMEOUT):
        """Dispatch until the reply (or error) arrived; True if it did within timeout."""
        context = GLib.MainContext.default()
        deadline = time.monotonic() + timeout
        wakeup = GLib.timeout_add(20, lambda: True)
        try:
            while not self.finished and time.monotonic() < deadline:
                context.iteration(True)
        finally:
            GLib.source_remove(wakeup)
        return self.finished

    def __str__(self):
        if not self.finished:
            return "no answer yet"
        return "ok: %r" % (self.value,) if self.ok else "%s: %s" % (self.error, self.message)


# ---------------------------------------------------------------------------
# Image content, as the tests write and read it through a dir pool's layout
# ---------------------------------------------------------------------------

QEMU_IMG = "/usr/bin/qemu-img"


def qemu_img(*args):
    """Runs qemu-img (the tests' own calls, on images they trust); its stdout."""
    return subprocess.run([QEMU_IMG] + list(args), check=True, capture_output=True).stdout


def qemu_image_info(path, fmt):
    """qemu-img info of an image this test trusts (never one of a hostile corpus)."""
    return json.loads(qemu_img("info", "--output=json", "-f", fmt, path))


def guest_bytes(path, fmt):
    """What a guest sees of the image in path, read as fmt."""
    with tempfile.NamedTemporaryFile() as out:
        qemu_img("convert", "-f", fmt, "-O", "raw", path, out.name)
        with open(out.name, "rb") as f:
            return f.read()


def qemu_img_converts():
    """Pids of the qemu-img convert processes running (a test's pid namespace holds only its
    own)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
                if os.path.basename(argv[0]) == b"qemu-img" and argv[1:2] == [b"convert"]:
                    pids.append(int(entry))
    return pids


def dir_volume_file(pool_dir, volume, *names):
    """<pool dir>/volumes/<volume>/<names…>: 'image', 'work', 'revisions', '<id>'."""
    return os.path.join(pool_dir, "volumes", volume, *names)


def write_pattern(path, seed, chunks=8, chunk_size=64 * KiB, span=None):
    """pwrite `chunks` blocks of data unique to `seed` at offsets spread over the file.

    The file keeps its size (the blocks lie inside it, or inside `span` bytes);
    the untouched ranges stay what they were (holes stay holes).  Returns the
    offsets written."""
    size = span if span is not None else os.path.getsize(path)
    if size < chunk_size:
        raise ValueError("file %s too small for the pattern" % path)
    slots = max(1, size // chunk_size)
    step = max(1, slots // chunks)
    offsets = sorted({min(slots - 1, i * step + (seed % step if step > 1 else 0)) * chunk_size
                      for i in range(chunks)})
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for offset in offsets:
            os.pwrite(fd, pattern_block(seed, offset, chunk_size), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return offsets


def pattern_block(seed, offset, length):
    """Deterministic bytes, different for every (seed, offset), never all zero."""
    head = ("cistern seed=%d offset=%d;" % (seed, offset)).encode()
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(head + counter.to_bytes(8, "little")).digest() * 32
        counter += 1
    return bytes(out[:length])


def file_sha256(path_or_fd):
    """sha256 of a whole file (a path, or an fd read with pread from 0)."""
    h = hashlib.sha256()
    fd = os.open(path_or_fd, os.O_RDONLY | os.O_CLOEXEC) \
        if isinstance(path_or_fd, str) else path_or_fd
    try:
        offset = 0
        while True:
            block = os.pread(fd, 4 * MiB, offset)
            if not block:
                break
            h.update(block)
            offset += len(block)
    finally:
        if isinstance(path_or_fd, str):
            os.close(fd)
    return h.hexdigest()


def content_sha256(path, size=None):
    """sha256 the file would have after truncation or extension to `size` (zeros beyond)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = size if size is not None else os.fstat(f.fileno()).st_size
        while remaining > 0:
            block = f.read(min(4 * MiB, remaining))
            if not block:
                break
            h.update(block)
            remaining -= len(block)
    while remaining > 0:
        n = min(4 * MiB, remaining)
        h.update(bytes(n))
        remaining -= n
    return h.hexdigest()


def zeros_sha256(size):
    """sha256 of `size` zero bytes."""
    h = hashlib.sha256()
    block = bytes(4 * MiB)
    while size > 0:
        h.update(block[:min(size, len(block))])
        size -= min(size, len(block))
    return h.hexdigest()


def data_segments(path):
    """[(start, end)] of the data ranges of a file, found with SEEK_DATA/SEEK_HOLE."""
    segments = []
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == 6:   # ENXIO: no data beyond offset
                    break
                raise
            end = os.lseek(fd, start, os.SEEK_HOLE)
            segments.append((start, end))
            offset = end
    finally:
        os.close(fd)
    return segments


FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_SHARED = 0x2000


def fiemap(path):
    """[(logical, physical, length, flags)] of a file's extents (FS_IOC_FIEMAP)."""
    import fcntl
    import struct
    extents = []
    batch = 128
    start = 0
    with open(path, "rb") as f:
        while True:
            header = struct.pack("=QQIIII", start, 2 ** 64 - 1 - start, FIEMAP_FLAG_SYNC, 0,
                                 batch, 0)
            buf = bytearray(header + bytes(56 * batch))
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            mapped = struct.unpack_from("=I", buf, 20)[0]
            if mapped == 0:
                break
            last = False
            for i in range(mapped):
                logical, physical, length, _, _, flags = struct.unpack_from(
                    "=QQQQQI", buf, 32 + 56 * i)
                extents.append((logical, physical, length, flags))
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if last:
                break
            start = extents[-1][0] + extents[-1][2]
    return extents


def shared_bytes(path):
    """Bytes of a file in extents the filesystem reports as shared (reflinked)."""
    return sum(length for _, _, length, flags in fiemap(path) if flags & FIEMAP_EXTENT_SHARED)


def staging_entries(root):
    """Every entry below root named like a staging file (".stage-*"), relative paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith(".stage-"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def revision_files(pool_dir, volume):
    """Revision ids present as files in a dir-pool volume's revisions/ (no staging), by id."""
    directory = dir_volume_file(pool_dir, volume, "revisions")
    if not os.path.isdir(directory):
        return []
    names = [n for n in os.listdir(directory) if not n.startswith(".stage-")]
    return sorted(names, key=lambda n: (len(n), n))


def dir_pool_inconsistencies(client, pool_dir, pool_obj):
    """What disagrees between a dir pool's objects and its files (empty list: nothing).

    Checks: no staging entry anywhere; one volume directory per Volume object;
    each volume's Revisions ids are exactly its revision files; State is
    "started" exactly when a working copy exists; Size is the size of the
    image the guest sees (the working copy while started)."""
    problems = []
    staging = staging_entries(pool_dir)
    if staging:
        problems.append("staging entries left: %s" % staging)
    volumes = {}
    for obj in client.prop(pool_obj, POOL, "Volumes"):
        volumes[client.prop(obj, VOLUME, "Name")] = obj
    volumes_dir = os.path.join(pool_dir, "volumes")
    dirs = sorted(n for n in os.listdir(volumes_dir) if not n.startswith(".stage-"))
    if dirs != sorted(volumes):
        problems.append("volume directories %s but Volumes %s" % (dirs, sorted(volumes)))
    for name, obj in sorted(volumes.items()):
        props = client.props(obj, VOLUME)
        ids = [rev_id for rev_id, _ in props["Revisions"]]
        files = revision_files(pool_dir, name)
        if sorted(ids, key=lambda n: (len(n), n)) != files:
            problems.append("%s: Revisions %s but revision files %s" % (name, ids, files))
        work = dir_volume_file(pool_dir, name, "work")
        image = dir_volume_file(pool_dir, name, "image")
        state = "started" if os.path.exists(work) else "stopped"
        if props["State"] != state:
            problems.append("%s: State %s but the working copy %s" % (
                name, props["State"], "exists" if state == "started" else "is absent"))
        seen = work if state == "started" else image
        if os.path.exists(seen) and props["Size"] != os.path.getsize(seen):
            problems.append("%s: Size %d but %s has %d bytes" % (
                name, props["Size"], os.path.basename(seen), os.path.getsize(seen)))
        if state == "stopped" and props["SaveOnStop"] and not os.path.exists(image):
            problems.append("%s: no committed image" % name)
    return problems


# ---------------------------------------------------------------------------
# Test base classes
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class PoolRef:
    name: str
    dir: str   # filesystem path of the pool
    obj: str   # D-Bus object path


class HarnessTestCase(unittest.TestCase):
    """Bus + polkitd; no cisternd needed.  needs_udev: a real systemd-udevd too."""

    needs_daemon = False
    needs_udev = False

    @classmethod
    def setUpClass(cls):
        if cls.needs_daemon and not os.access(CISTERND, os.X_OK):
            raise unittest.SkipTest("cisternd is not built at %s" % CISTERND)
        cls.env = environment()
        if cls.needs_udev:
            try:
                cls.env.start_udevd()
            except UdevUnavailable as e:
                raise unittest.SkipTest("needs systemd-udevd: %s" % e)

    def udev_settle(self):
        self.env.udev_settle()

    # What AddressSanitizer and UndefinedBehaviorSanitizer print, when cisternd is built
    # with them (e.g. CISTERN_BUILD_DIR=build-asan), however the test itself fared.
    SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:")

    def setUp(self):
        self.env.reset()
        self.log_marks = self.env.log_marks()
        self.c = self.env.client
        self.addCleanup(self._check_sanitizer_reports)   # runs after the daemon stopped
        self.addCleanup(self.env.stop_daemon)

    def _check_sanitizer_reports(self):
        text = file_tail(self.env.logs["cisternd"], self.log_marks.get("cisternd", 0))
        for marker in self.SANITIZER_MARKERS:
            at = text.find(marker)
            if at >= 0:
                self.fail("cisternd reported a sanitizer error:\n"
                          + text[max(0, at - 200):at + 3000])

    def recorder(self):
        dispatch_pending()   # signals of an earlier test (or daemon) stay out of this recorder
        rec = SignalRecorder(self.env.bus)
        self.addCleanup(rec.close)
        return rec

    def scratch_fs(self, fstype="ext4", size=None):
        if shutil.which(MKFS[fstype][0][0]) is None:
            self.skipTest("%s is not installed" % MKFS[fstype][0][0])
        fs = self.env.make_scratch_fs(fstype, size)
        self.addCleanup(self.env.drop_scratch_fs, fs)
        return fs


class CisternTestCase(HarnessTestCase):
    """Each test starts with no daemon running and empty state/pool directories."""

    needs_daemon = True

    # -- building blocks --

    def pool_dir(self, name):
        path = os.path.join(self.env.dirs["pools"], name)
        os.makedirs(path, exist_ok=True)
        return path

    def make_pool(self, name="p1", path=None, **config):
        path = path or self.pool_dir(name)
        config.setdefault("path", path)
        return PoolRef(name, path, self.c.create_pool(name, "dir", config))

    def make_volume(self, pool, name="v1", size=MiB, **options):
        return self.c.create_volume(pool.obj, name, size, options)

    # -- state --

    def snapshot_state(self, extra_dirs=()):
        roots = [self.env.dirs["state"], self.env.dirs["pools"]] + list(extra_dirs)
        return {"objects": stable_objects(self.c.managed_objects()),
                "files": {root: tree_listing(root) for root in roots}}

    def assert_fails(self, expected, fn, *args, extra_dirs=(), **kwargs):
        """fn(*args, **kwargs) fails with one of the expected D-Bus errors, changing nothing."""
        expected = {expected} if isinstance(expected, str) else set(expected)
        before = self.snapshot_state(extra_dirs)
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            fn(*args, **kwargs)
        name = cm.exception.get_dbus_name()
        self.assertIn(name, expected, "wrong error: %s: %s"
                      % (name, cm.exception.get_dbus_message()))
        self.assertEqual(before, self.snapshot_state(extra_dirs),
                         "state changed after a failed call (%s)" % name)
        return cm.exception

    def assert_user_fails(self, expected, user, fn, extra_dirs=()):
        """Like assert_fails, for a call made by `user` through as_user."""
        expected = {expected} if isinstance(expected, str) else set(expected)
        before = self.snapshot_state(extra_dirs)
        outcome = as_user(user, fn)
        self.assertIn(outcome.error, expected, "as %s: %s" % (user.name, outcome))
        self.assertEqual(before, self.snapshot_state(extra_dirs),
                         "state changed after a failed call by %s" % user.name)
        return outcome

    def track_fd(self, fd):
        """fd is closed when the test ends, unless close_fd() closed it before."""
        if not hasattr(self, "_tracked_fds"):
            self._tracked_fds = set()
            self.addCleanup(self._close_tracked_fds)
        self._tracked_fds.add(fd)
        return fd

    def _close_tracked_fds(self):
        for fd in self._tracked_fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close_fd(self, fd):
        self._tracked_fds.discard(fd)
        os.close(fd)

    def polkit_gate(self):
        """A PolkitGate that is released, at the latest, when the test ends."""
        gate = self.env.polkit_gate()
        self._gates = getattr(self, "_gates", []) + [gate]
        self.addCleanup(gate.release)
        return gate

    def start_as_user(self, user, fn):
        """as_user_async, with the child reaped when the test ends."""
        call = as_user_async(user, fn)
        self.addCleanup(self._finish_user_call, call)
        return call

    def _finish_user_call(self, call):
        for gate in getattr(self, "_gates", []):
            gate.release()   # a call held at a gate would wait for its bound
        call.outcome(timeout=30)

    def assert_user_succeeds(self, user, fn):
        outcome = as_user(user, fn)
        self.assertTrue(outcome.ok, "as %s: %s" % (user.name, outcome))
        return outcome.value

    def assert_near_now_usec(self, usec, slack=120):
        self.assertLess(abs(usec - time.time() * 1e6), slack * 1e6,
                        "%d µs is not near the current time" % usec)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

class _LogDumpingResult(unittest.TextTestResult):
    """Prints the daemon/bus/polkit logs of a test that failed or errored."""

    def _dump(self, test):
        marks = getattr(test, "log_marks", None)
        if marks is not None and _environment is not None:
            text = _environment.logs_since(marks)
            if text:
                self.stream.write("\n===== logs of %s =====\n%s\n" % (test.id(), text))
                self.stream.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)


def _skip(reason):
    print("SKIP: " + reason, file=sys.stderr)
    sys.exit(SKIP_EXIT_CODE)


def _check_host():
    if os.geteuid() != 0:
        _skip("integration tests need root (private mount namespace, polkitd, loop devices)")
    for tool in (DBUS_DAEMON, POLKITD, "/usr/bin/unshare"):
        if not os.access(tool, os.X_OK):
            _skip("%s is not installed" % tool)
    for user in TEST_USERS:
        with contextlib.suppress(KeyError):
            existing = pwd.getpwuid(user.uid)
            _skip("uid %d is taken by %s on this host" % (user.uid, existing.pw_name))


def in_private_namespace():
    host = os.environ.get(HOST_NAMESPACE_ENV)
    return bool(host) and host != os.readlink("/proc/self/ns/mnt")


def _reexec_in_namespace():
    """Re-run this script in private mount and pid namespaces.

    The mount namespace keeps every bind mount and scratch mount away from the
    host; the pid namespace makes the kernel kill every process the tests
    started (polkitd, dbus-daemon, cisternd) when the test process dies, however
    it dies.
    """
    env = dict(os.environ, **{HOST_NAMESPACE_ENV: os.readlink("/proc/self/ns/mnt")})
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--mount-proc", "--kill-child=SIGTERM", "--",
            sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:]
    os.execvpe("unshare", argv, env)


def main():
    """Entry point of every test module."""
    _check_host()
    if not in_private_namespace():
        _reexec_in_namespace()
    # meson's timeout sends SIGTERM: unwind so that atexit tears everything down.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    runner = unittest.TextTestRunner(resultclass=_LogDumpingResult, verbosity=2,
                                     stream=sys.stdout)
    program = unittest.main(module="__main__", testRunner=runner, exit=False)
    result = program.result
    if _environment is not None:
        _environment.stop()
        atexit.unregister(_environment.stop)
    if result.wasSuccessful() and result.skipped and len(result.skipped) >= result.testsRun:
        _skip("every test was skipped")
    sys.exit(0 if result.wasSuccessful() else 1)


def write_bulk(path, data, seed, block=MiB, stride=2 * MiB):
    """`data` bytes of distinct blocks, one every `stride` (holes between), flushed to disk and
    dropped from the page cache so that a copy reads them back from the filesystem."""
    base = bytearray(os.urandom(block))
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for i in range(data // block):
            header = ("seed %d block %d|" % (seed, i)).encode()
            base[:len(header)] = header
            os.pwrite(fd, base, i * stride)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
