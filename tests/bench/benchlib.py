# Shared pieces of the benchmarks: a private system bus, cisternd from the build tree, scratch
# filesystems in image files, and for benchmarks of devices private mount and pid namespaces
# with a systemd-udevd of their own. Everything lives in one work directory and goes away.
import contextlib
import ctypes
import fcntl
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import dbus

BUS_NAME = 'org.cistern.Cistern1'
ROOT = '/org/cistern/Cistern1'
MANAGER = 'org.cistern.Cistern1.Manager'
POOL = 'org.cistern.Cistern1.Pool'
VOLUME = 'org.cistern.Cistern1.Volume'
BUS_CONFIG = '''<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy user="root"><allow own="*"/></policy>
  <policy context="default"><allow send_destination="*"/><allow receive_sender="*"/></policy>
</busconfig>
'''


def require_root(what):
    if os.geteuid() != 0:
        sys.exit('%s runs as root' % what)


def start_bus(workdir):
    """A private dbus-daemon of type system; DBUS_SYSTEM_BUS_ADDRESS points at it."""
    socket = os.path.join(workdir, 'bus')
    config = os.path.join(workdir, 'bus.conf')
    with open(config, 'w') as f:
        f.write(BUS_CONFIG.format(socket=socket))
    proc = subprocess.Popen(['dbus-daemon', '--config-file=' + config, '--nofork', '--print-address'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    os.environ['DBUS_SYSTEM_BUS_ADDRESS'] = 'unix:path=' + socket
    return proc


def start_daemon(builddir, workdir):
    return subprocess.Popen([os.path.join(builddir, 'daemon', 'cisternd'),
                             '--state-dir=' + os.path.join(workdir, 'state'),
                             '--runtime-dir=' + os.path.join(workdir, 'run'),
                             '--idle-timeout=0', '--log-level=warning'])


def wait_for_name(bus, proc, deadline=60):
    driver = dbus.Interface(bus.get_object('org.freedesktop.DBus', '/org/freedesktop/DBus'),
                            'org.freedesktop.DBus')
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if driver.NameHasOwner(BUS_NAME):
            return
        if proc.poll() is not None:
            sys.exit('cisternd exited before taking its name')
        time.sleep(0.001)
    sys.exit('cisternd did not take its name')


def stop_all(procs):
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            p.wait()


@contextlib.contextmanager
def scratch_fs(workdir, fstype, size, name=None):
    """Makes a filesystem of fstype in an image file of size bytes and mounts it on
    workdir/name (default: fstype)."""
    image = os.path.join(workdir, (name or fstype) + '.img')
    mountpoint = os.path.join(workdir, name or fstype)
    os.mkdir(mountpoint)
    with open(image, 'wb') as f:
        f.truncate(size)
    # ext4 initializes its inode tables and journal now rather than in a kernel thread that
    # would write in the background of the measurements.
    mkfs = {'xfs': ['mkfs.xfs', '-q', '-m', 'reflink=1'],
            'ext4': ['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0'],
            'btrfs': ['mkfs.btrfs', '-q']}[fstype]
    subprocess.run(mkfs + [image], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(['mount', '-o', 'loop', image, mountpoint], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(['umount', mountpoint], check=False)
        os.unlink(image)


def drop_caches():
    """Writes back every dirty page, then empties the page cache (and dentries and inodes), so
    that the next run reads from the disk."""
    subprocess.run(['sync'], check=True)
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def timed(fn, *args, **kwargs):
    """Runs fn and returns (seconds, result)."""
    t = time.monotonic()
    result = fn(*args, **kwargs)
    return time.monotonic() - t, result


# --- private namespaces and a private systemd-udevd, for benchmarks of devices ---------------
# Benchmarks that attach loop devices need a udevd (cisternd's Attach waits for it). It runs as
# in tests/integration/harness.py, whose helpers these reuse: in a private mount namespace, with
# its database, control socket and rules in a private /run layer; /dev stays the host's, and
# what udevd changed there is put back when it stops.

NAMESPACE_ENV = 'CISTERN_BENCH_HOST_MOUNT_NS'
INTEGRATION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration')


def harness():
    """tests/integration/harness.py, for its loop-device, /dev and mount helpers."""
    if INTEGRATION_DIR not in sys.path:
        sys.path.insert(0, INTEGRATION_DIR)
    import harness as h
    return h


def reexec_in_namespace():
    """Re-runs this script (once) in private mount and pid namespaces: its mounts never reach the
    host, and the kernel kills every process it started when it dies, however it dies."""
    host = os.environ.get(NAMESPACE_ENV)
    if host and host != os.readlink('/proc/self/ns/mnt'):
        # PID 1 of the namespace: SIGTERM (unshare --kill-child, a timeout) unwinds the cleanup.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        return
    env = dict(os.environ, **{NAMESPACE_ENV: os.readlink('/proc/self/ns/mnt')})
    argv = ['unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc',
            '--kill-child=SIGTERM', '--', sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:]
    os.execvpe('unshare', argv, env)


def missing_udev_tools():
    """What a private udevd needs and this machine lacks, as a list of words for a person."""
    h = harness()
    missing = []
    if not any(os.access(p, os.X_OK) for p in h.UDEVD_PATHS) or not os.access(h.UDEVADM, os.X_OK):
        missing.append('systemd-udevd and udevadm (Debian package udev)')
    return missing


def mount_checked(*argv):
    harness().run_checked(['mount'] + list(argv))


UDEV_CTRL_MAGIC = 0xdead1dea
UDEV_CTRL_END_MESSAGES = 0
UDEV_CTRL_PING = 7
IN_DELETE = 0x200


def inotify_watch(path, mask):
    """A non-blocking inotify fd watching path for mask."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'inotify_init1')
    if libc.inotify_add_watch(fd, path.encode(), mask) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, 'inotify_add_watch ' + path)
    return fd


def private_overlay(directory, fresh, scratch):
    """Makes directory (in this mount namespace) a tmpfs that shows the host's entries through
    bind mounts, except those named in fresh, which are new empty directories: what programs write
    there stays in the namespace. scratch is an empty-enough directory for a moment's mount."""
    host = os.path.join(scratch, 'host-' + os.path.basename(directory))
    os.mkdir(host)
    mount_checked('--rbind', directory, host)
    overlaid = False
    try:
        mount_checked('-t', 'tmpfs', '-o', 'mode=0755,nosuid,nodev', 'cistern-bench', directory)
        overlaid = True
        for name in sorted(os.listdir(host)):
            if name in fresh:
                continue
            source, target = os.path.join(host, name), os.path.join(directory, name)
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
                continue
            # (mount(8) itself may have made /run/mount, for libmount's utab, meanwhile.)
            if os.path.isdir(source):
                os.makedirs(target, exist_ok=True)
            else:
                open(target, 'a').close()
            mount_checked('--rbind', source, target)
    except BaseException:
        if overlaid:
            drop_overlay(directory)
        raise
    finally:
        subprocess.run(['umount', '-R', host], check=True)
        os.rmdir(host)
    for name in fresh:
        os.makedirs(os.path.join(directory, name), 0o755, exist_ok=True)


def drop_overlay(directory):
    if subprocess.run(['umount', '-R', directory], capture_output=True).returncode != 0:
        subprocess.run(['umount', '-R', '-l', directory], check=True)


class UdevEventLog:
    """The uevents udevd sends out once it has processed them (what libudev monitors and UDisks2
    receive), kept by the kernel in a socket buffer while a measurement runs and read afterwards:
    nothing runs meanwhile. events() returns the property dicts received since the last call."""

    def __init__(self, size=32 << 20):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                                  15)    # NETLINK_KOBJECT_UEVENT
        self.sock.setsockopt(socket.SOL_SOCKET, 33, size)    # SO_RCVBUFFORCE (root)
        self.sock.bind((0, 2))    # the multicast group of udevd's processed events

    def events(self):
        found = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return found
            if not data.startswith(b'libudev\0'):
                continue
            # The header is binary; the properties are NUL-terminated KEY=VALUE strings after it.
            props = {}
            for item in data.split(b'\0'):
                key, eq, value = item.partition(b'=')
                if eq and key.isupper() and key.replace(b'_', b'').isalnum():
                    props[key.decode(errors='replace')] = value.decode(errors='replace')
            found.append(props)

    def close(self):
        self.sock.close()


class PrivateUdev:
    """A systemd-udevd of the bench's own, in the bench's mount namespace (reexec_in_namespace
    first). /run becomes a tmpfs showing the host's entries through bind mounts, except those
    named in `fresh`, which start empty (udev and cistern always: /run/udev gets cistern's rules
    from rules_dir besides the system's in /lib/udev/rules.d, and /run/cistern is cistern_run, the
    daemon's runtime directory, where the rules look for device records). One harness or bench
    udevd on the machine at a time: they share an flock on /dev."""

    def __init__(self, workdir, rules_dir, cistern_run, fresh=()):
        self.workdir = workdir
        self.rules_dir = rules_dir
        self.cistern_run = cistern_run
        self.fresh = {'udev', 'cistern'} | set(fresh)
        self.log = os.path.join(workdir, 'udevd.log')
        self.proc = None
        self.private_run = False
        self.dev_before = None
        self.lock = None
        self.inotify = None
        self.version = b''

    def __enter__(self):
        h = harness()
        udevd = next((p for p in h.UDEVD_PATHS if os.access(p, os.X_OK)), None)
        rules = sorted(n for n in os.listdir(self.rules_dir) if n.endswith('.rules'))
        if h.unix_socket_answers('/run/udev/control'):
            sys.exit('a systemd-udevd already runs on this host; a second one would act on every device too')
        try:
            self._lock_dev()
            self._make_private_run()
            self.inotify = inotify_watch('/run/udev', IN_DELETE)
            self.version = ('udev-' + subprocess.run([h.UDEVADM, '--version'], capture_output=True, text=True,
                                                     check=True).stdout.strip()).encode()
            os.mkdir('/run/udev/rules.d', 0o755)
            for name in rules:
                shutil.copyfile(os.path.join(self.rules_dir, name), os.path.join('/run/udev/rules.d', name))
            self.dev_before = h.dev_snapshot()
            with open(self.log, 'ab') as log:
                self.proc = subprocess.Popen([udevd], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                             env=dict(os.environ, SYSTEMD_LOG_TARGET='console'))
            deadline = time.monotonic() + 20
            while subprocess.run([h.UDEVADM, 'control', '--ping', '--timeout=1'], capture_output=True).returncode != 0:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError('systemd-udevd did not start: ' + self.log_tail())
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, n=3000):
        return harness().file_tail(self.log, 0)[-n:].strip() or 'no output'

    def settle(self, timeout=60):
        """What `udevadm settle` does, in this process: a ping over udevd's control socket (udevd
        handles control messages at idle priority: it answers once it has taken in every pending
        uevent, synthetic ones from its inotify watches included), then a wait until
        /run/udev/queue is gone. Without the exec of udevadm and the teardown of
        its inotify instance at its exit, which take 5 to 20 ms here: a timed settle costs
        little more than what udev still had to do."""
        deadline = time.monotonic() + timeout
        wire = struct.Struct('@16sIi256s')    # systemd's UdevCtrlMessageWire: version, magic, type, value
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(timeout)
            sock.connect('/run/udev/control')
            for kind in (UDEV_CTRL_PING, UDEV_CTRL_END_MESSAGES):
                sock.send(wire.pack(self.version, UDEV_CTRL_MAGIC, kind, b''))
            try:
                # udevd closes the connection once it has handled both, at times with a reset
                # (udevadm waits for the hangup and does not tell the two apart either).
                if sock.recv(wire.size) != b'':
                    raise RuntimeError('systemd-udevd answered its control socket unexpectedly')
            except ConnectionResetError:
                pass
            except socket.timeout:
                raise RuntimeError('systemd-udevd did not answer a ping in %d s: %s' % (timeout, self.log_tail()))
        while os.path.exists('/run/udev/queue'):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError('udev still had events queued after %d s: %s' % (timeout, self.log_tail()))
            select.select([self.inotify], [], [], left)
            with contextlib.suppress(BlockingIOError):
                os.read(self.inotify, 4096)

    def settle_udevadm(self, timeout=60):
        """udevadm settle itself."""
        result = subprocess.run([harness().UDEVADM, 'settle', '--timeout=%d' % timeout], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError('udevadm settle failed: %s; udevd: %s' % (result.stderr.strip(), self.log_tail()))

    def _lock_dev(self, timeout=240):
        fd = os.open('/dev', os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError('another test run kept its systemd-udevd (and /dev) for %d s' % timeout)
                time.sleep(0.2)
        self.lock = fd

    def _make_private_run(self):
        private_overlay('/run', self.fresh, self.workdir)
        self.private_run = True
        mount_checked('-t', 'tmpfs', '-o', 'mode=0755,nosuid,nodev', 'cistern-bench-udev', '/run/udev')
        mount_checked('--bind', self.cistern_run, '/run/cistern')

    def stop(self):
        """Stops udevd (after a settle), puts /dev back and drops the private /run layer."""
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(RuntimeError):
                    self.settle_udevadm(timeout=30)
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.dev_before is not None:
            harness().dev_restore(self.dev_before)
            self.dev_before = None
        if self.private_run:
            drop_overlay('/run')
            self.private_run = False
        if self.inotify is not None:
            os.close(self.inotify)
            self.inotify = None
        if self.lock is not None:
            os.close(self.lock)
            self.lock = None
