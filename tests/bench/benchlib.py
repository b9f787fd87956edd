# Shared pieces of the benchmarks: a private system bus, cisternd from the build tree, and
# scratch filesystems in image files. Everything lives in one work directory and goes away.
import contextlib
import os
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
