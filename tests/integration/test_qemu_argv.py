#!/usr/bin/python3
"""Every qemu process cisternd runs, as qemu sees it (SPEC §6): each qemu-img call names the
image format (-f, and -O for a conversion's output; no backing file, hence no -F), reaches images
only as /proc/self/fd/N of fds it inherited (never a pool path, a json: or nbd: pseudo-filename),
and starts with a clean environment (LC_ALL=C, a fixed PATH), /dev/null on stdin, no fd but
0-2 and the images, resource limits, a session of its own and no blocked signals.

The test process, and the daemon the bus activates for it, share a private mount namespace
(harness.py): a recording wrapper is bind-mounted over /usr/bin/qemu-img and
/usr/bin/qemu-storage-daemon, the originals are bind-mounted aside, and the wrapper appends one
JSON line per call (argv, environment, open fds, limits) to a log, then executes the original with
the same argv, environment and fds. The tests drive the operations that run qemu and check every
recorded call; QemuCallCheckerTest shows that the checks fail on bad calls."""

import json
import os
import re
import resource
import signal
import struct
import subprocess
import tempfile
import unittest

import dbus

import harness
from harness import CALL_TIMEOUT, VOLUME, MiB

QEMU_PROGRAMS = ("/usr/bin/qemu-img", "/usr/bin/qemu-storage-daemon")
IMAGE_FORMATS = ("raw", "qcow2")
STANDARD_PATH_DIRS = {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}
FD_PATH = re.compile(r"^/proc/self/fd/([0-9]+)$")
# What qemu-img takes as a size (create, resize), not as a file name.
SIZE_ARG = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?[bBkKmMgGtTpPeE]?$")
# qemu-img options followed by a value; anything else that starts with "-" is a flag.
QEMU_IMG_VALUE_OPTIONS = {"-f", "-O", "-F", "-o", "-T", "-t", "-S", "-B", "-b", "-l", "-s", "-m",
                          "-r", "--object", "--output", "--backing-chain", "--bitmaps"}
QEMU_IMG_SUBCOMMANDS = {"create", "resize", "convert", "check", "info", "map", "measure", "compare"}
# A qemu child may use this much address space at most, and must have a CPU limit.
ADDRESS_SPACE_CEILING = 4 << 30
SIGKILL = int(signal.SIGKILL)

# The wrapper: run as /usr/bin/python3 -I (isolated: it reads no environment variable and no user
# site), it changes nothing qemu would see but SIGPIPE and SIGXFSZ, which Python ignores at start
# and are put back. argv[0] is the path cisternd executed (the kernel puts the script's path
# there); the original argv[0] is lost, and the original program gets the path's last component.
WRAPPER = r'''#!/usr/bin/python3 -I
import ctypes, fcntl, json, os, resource, signal, sys

LOG = %(log)r
REAL = %(real)r


def open_fds():
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:     # the fd listdir() used, closed by now
            pass
    return fds


def environment():
    with open("/proc/self/environ", "rb") as f:
        return [e for e in f.read().split(b"\0") if e]


def signals_blocked():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    return -1


def pdeathsig():
    value = ctypes.c_int(-1)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(value), 0, 0, 0)   # PR_GET_PDEATHSIG
    return value.value


fds = open_fds()
env = environment()
record = {
    "exe": sys.argv[0],
    "args": sys.argv[1:],
    "env": [e.decode("utf-8", "surrogateescape") for e in env],
    "fds": fds,
    "pid": os.getpid(),
    "sid": os.getsid(0),
    "pgid": os.getpgid(0),
    "limits": {name: list(resource.getrlimit(getattr(resource, "RLIMIT_" + name.upper())))
               for name in ("as", "cpu", "core")},
    "pdeathsig": pdeathsig(),
    "sigblk": signals_blocked(),
}
log = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
fcntl.flock(log, fcntl.LOCK_EX)
os.write(log, (json.dumps(record, sort_keys=True) + "\n").encode())
os.close(log)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
os.execve(REAL, [os.path.basename(sys.argv[0])] + sys.argv[1:],
          dict(e.split(b"=", 1) for e in env if b"=" in e))
'''


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def parse_qemu_img(args):
    """qemu-img's arguments → (subcommand, [(option, value or None)], [positional])."""
    if not args:
        return None, [], []
    sub, options, positional = args[0], [], []
    i = 1
    while i < len(args):
        a = args[i]
        if a == "--":
            positional += args[i + 1:]
            break
        if a.startswith("--") and "=" in a:
            options.append(tuple(a.split("=", 1)))
        elif a.startswith("-") and len(a) > 1 and not SIZE_ARG.match(a):
            if a in QEMU_IMG_VALUE_OPTIONS and i + 1 < len(args):
                options.append((a, args[i + 1]))
                i += 1
            else:
                options.append((a, None))
        else:
            positional.append(a)
        i += 1
    return sub, options, positional


def option_values(options, name):
    return [value for option, value in options if option == name]


def fd_of(arg):
    m = FD_PATH.match(arg)
    return int(m.group(1)) if m else None


def path_problems(record, pool_dirs):
    """Arguments that name anything but an inherited fd: pool paths, other absolute paths,
    pseudo-filenames qemu would parse."""
    problems = []
    open_fds = {int(n) for n in record["fds"]}
    for arg in record["args"]:
        for needle in ("json:", "nbd:", "://"):
            if needle in arg:
                problems.append("argument %r holds the pseudo-filename prefix %r" % (arg, needle))
        for d in pool_dirs:
            if d in arg:
                problems.append("argument %r names a path in the pool %s" % (arg, d))
        if arg.startswith("/"):
            n = fd_of(arg)
            if n is None:
                problems.append("argument %r is a path, not /proc/self/fd/N" % arg)
            elif n < 3 or n not in open_fds:
                problems.append("argument %r names fd %d, which qemu did not inherit as an image"
                                % (arg, n))
    return problems


def qemu_img_problems(record):
    """What is wrong with one recorded qemu-img call (beyond paths and process state)."""
    problems = []
    sub, options, positional = parse_qemu_img(record["args"])
    if sub not in QEMU_IMG_SUBCOMMANDS:
        problems.append("unexpected qemu-img subcommand %r" % sub)
    formats = option_values(options, "-f")
    if not formats:
        problems.append("qemu-img %s without -f: qemu would probe the format" % sub)
    for f in formats:
        if f not in IMAGE_FORMATS:
            problems.append("-f %r is no format cistern keeps" % f)
    if sub == "convert":
        outputs = option_values(options, "-O")
        if not outputs:
            problems.append("qemu-img convert without -O")
        for f in outputs:
            if f not in IMAGE_FORMATS:
                problems.append("-O %r is no format cistern keeps" % f)
    creation_options = ",".join(v for v in option_values(options, "-o") if v)
    backing = option_values(options, "-b") + option_values(options, "-B")
    if backing or "backing_file" in creation_options:
        problems.append("qemu-img %s names a backing file (%s)" % (sub, backing or creation_options))
        if not option_values(options, "-F") and "backing_fmt" not in creation_options:
            problems.append("qemu-img %s names a backing file without its format (-F)" % sub)
    if "data_file" in creation_options:
        problems.append("qemu-img %s names an external data file" % sub)
    for option in ("--image-opts", "--target-image-opts"):
        if (option, None) in options:
            problems.append("%s makes qemu parse a file name as options" % option)
    for i, arg in enumerate(positional):
        if sub in ("create", "resize") and i > 0 and SIZE_ARG.match(arg):
            continue
        if fd_of(arg) is None:
            problems.append("image %r is not a /proc/self/fd/N path" % arg)
    images = [a for a in positional if fd_of(a) is not None]
    if sub == "convert" and len(images) < 2:
        problems.append("qemu-img convert without an input and an output fd")
    if sub != "convert" and len(images) != 1:
        problems.append("qemu-img %s on %d images" % (sub, len(images)))
    return problems


def storage_daemon_problems(record):
    """What is wrong with one recorded qemu-storage-daemon call: every block node has an explicit
    driver, the file node opens an inherited fd, a qcow2 node opens no backing file."""
    problems, drivers = [], []
    args = record["args"]
    for i, arg in enumerate(args[:-1]):
        if arg != "--blockdev":
            continue
        try:
            node = json.loads(args[i + 1])
        except ValueError:
            problems.append("--blockdev %r is not JSON: its keys and a format cannot be checked"
                            % args[i + 1])
            continue
        drivers.append(node.get("driver"))
        if node.get("driver") == "file" and fd_of(node.get("filename", "")) is None:
            problems.append("file node %r opens no /proc/self/fd/N" % node)
        if node.get("driver") == "qcow2" and "backing" not in node:
            problems.append("qcow2 node %r may open the backing file its header names" % node)
        if node.get("backing") is not None and "backing" in node:
            problems.append("node %r has a backing node" % node)
        if isinstance(node.get("file"), dict):
            problems.append("node %r defines its file inline" % node)
    if not any(d in IMAGE_FORMATS for d in drivers):
        problems.append("no --blockdev names the image format: qemu would probe it")
    for d in drivers:
        if d not in ("file",) + IMAGE_FORMATS:
            problems.append("unexpected block driver %r" % d)
    return problems


def process_problems(record):
    """The state qemu starts in: environment, fds, limits, session, signals."""
    problems = []
    env = dict(e.split("=", 1) if "=" in e else (e, None) for e in record["env"])
    if set(env) != {"LC_ALL", "PATH"}:
        problems.append("environment is not just LC_ALL and PATH: %s" % sorted(env))
    if env.get("LC_ALL") != "C":
        problems.append("LC_ALL is %r, not C" % env.get("LC_ALL"))
    path = (env.get("PATH") or "").split(":")
    if not path or not set(path) <= STANDARD_PATH_DIRS:
        problems.append("PATH %r is not a fixed list of system directories" % env.get("PATH"))
    fds = {int(n): target for n, target in record["fds"].items()}
    passed = {fd_of(a) for a in record["args"] if fd_of(a) is not None}
    for arg in record["args"]:            # fds named inside qemu-storage-daemon's options
        passed |= {int(n) for n in re.findall(r"/proc/self/fd/([0-9]+)", arg)}
    extra = sorted(set(fds) - {0, 1, 2} - passed)
    if extra:
        problems.append("inherited fds beyond 0-2 and the images: %s"
                        % ", ".join("%d → %s" % (n, fds[n]) for n in extra))
    if fds.get(0) != "/dev/null":
        problems.append("stdin is %r, not /dev/null" % fds.get(0))
    for n in (1, 2):
        if not (fds.get(n) or "").startswith("pipe:"):
            problems.append("fd %d is %r, not a pipe the daemon reads" % (n, fds.get(n)))
    limits = record["limits"]
    soft_as = limits["as"][0]
    if soft_as == resource.RLIM_INFINITY or soft_as > ADDRESS_SPACE_CEILING:
        problems.append("address space limit %r is not set or above %d" % (soft_as, ADDRESS_SPACE_CEILING))
    if limits["core"] != [0, 0]:
        problems.append("core dumps allowed (%r): they would hold guest data" % (limits["core"],))
    if record["exe"].endswith("/qemu-img") and limits["cpu"][0] == resource.RLIM_INFINITY:
        problems.append("qemu-img has no CPU time limit")
    if record["sid"] != record["pid"]:
        problems.append("qemu is not the leader of a session of its own (sid %d, pid %d)"
                        % (record["sid"], record["pid"]))
    if record["pdeathsig"] != SIGKILL:
        problems.append("qemu is not killed when its parent dies (pdeathsig %d)" % record["pdeathsig"])
    if record["sigblk"] != 0:
        problems.append("qemu starts with blocked signals (mask %#x)" % record["sigblk"])
    return problems


def call_problems(record, pool_dirs=()):
    """Every problem of one recorded call; [] when it is as SPEC §6 wants it."""
    if record["exe"] not in QEMU_PROGRAMS:
        return ["qemu run as %r, not by its absolute path" % record["exe"]]
    problems = path_problems(record, pool_dirs) + process_problems(record)
    if record["exe"].endswith("/qemu-img"):
        problems += qemu_img_problems(record)
        for n, target in record["fds"].items():
            if int(n) >= 3 and pool_dirs and not any(target.startswith(d + "/") for d in pool_dirs):
                problems.append("fd %s is %r, no file of a pool" % (n, target))
    else:
        problems += storage_daemon_problems(record)
    return problems


def describe(record):
    return "%s %s" % (record["exe"], " ".join(record["args"]))


def assert_calls_clean(records, pool_dirs=()):
    """Raises AssertionError naming every bad call and what is wrong with it."""
    report = []
    for record in records:
        problems = call_problems(record, pool_dirs)
        if problems:
            report.append("%s\n    %s" % (describe(record), "\n    ".join(problems)))
    if report:
        raise AssertionError("%d of %d qemu calls break the rules:\n%s"
                             % (len(report), len(records), "\n".join(report)))


# ---------------------------------------------------------------------------
# The checks themselves, on samples: a bad call fails them
# ---------------------------------------------------------------------------

POOL_DIR = "/srv/pool"


def sample(args, exe="/usr/bin/qemu-img", fds=None, env=None, **changes):
    """A recorded call as cisternd makes it: fd 3, and fd 4 when args name it, open on pool
    files."""
    record = {
        "exe": exe,
        "args": list(args),
        "env": env if env is not None else ["LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        "fds": fds if fds is not None else dict(
            {"0": "/dev/null", "1": "pipe:[101]", "2": "pipe:[102]",
             "3": POOL_DIR + "/volumes/v/image"},
            **({"4": POOL_DIR + "/volumes/v/.stage-x"} if "/proc/self/fd/4" in args else {})),
        "pid": 4242, "sid": 4242, "pgid": 4242,
        "limits": {"as": [1 << 30, 1 << 30], "cpu": [60, 60], "core": [0, 0]},
        "pdeathsig": SIGKILL,
        "sigblk": 0,
    }
    record.update(changes)
    return record


GOOD_CONVERT = ["convert", "-p", "-f", "raw", "-O", "qcow2", "-T", "writeback", "-t", "writeback",
                "-S", "4k", "-c", "/proc/self/fd/3", "/proc/self/fd/4"]
GOOD_CREATE = ["create", "-q", "-f", "qcow2", "-o", "preallocation=off", "/proc/self/fd/3", "67108864"]
GOOD_RESIZE = ["resize", "-q", "-f", "qcow2", "--shrink", "/proc/self/fd/3", "8388608"]
GOOD_STORAGE_DAEMON = [
    "--daemonize", "--pidfile", "/proc/self/fd/5",
    "--blockdev", '{"driver":"file","node-name":"file","filename":"/proc/self/fd/3"}',
    "--blockdev", '{"driver":"qcow2","node-name":"fmt","file":"file","backing":null}',
    "--export", "type=fuse,id=exp,node-name=fmt,mountpoint=/proc/self/fd/4,writable=off"]


class QemuCallCheckerTest(unittest.TestCase):
    """The assertion helper on samples: what cisternd does passes, each rule broken fails."""

    def assert_bad(self, record, words):
        problems = call_problems(record, [POOL_DIR])
        self.assertTrue(any(words in p for p in problems),
                        "no problem mentions %r: %s" % (words, problems))
        with self.assertRaises(AssertionError):
            assert_calls_clean([sample(GOOD_CREATE), record], [POOL_DIR])

    def test_calls_as_cisternd_makes_them_pass(self):
        fds3 = {"0": "/dev/null", "1": "pipe:[1]", "2": "pipe:[2]", "3": POOL_DIR + "/x",
                "4": "/run/cistern/m", "5": "/run/cistern/pid"}
        assert_calls_clean([sample(GOOD_CONVERT), sample(GOOD_CREATE), sample(GOOD_RESIZE),
                            sample(GOOD_STORAGE_DAEMON, exe="/usr/bin/qemu-storage-daemon",
                                   fds=fds3, limits={"as": [2 << 30] * 2, "cpu": [-1, -1],
                                                     "core": [0, 0]})],
                           [POOL_DIR])

    def test_a_call_without_f_fails(self):
        for args in (GOOD_CREATE, GOOD_RESIZE, GOOD_CONVERT):
            with self.subTest(sub=args[0]):
                i = args.index("-f")
                self.assert_bad(sample(args[:i] + args[i + 2:]), "without -f")

    def test_a_convert_without_O_fails(self):
        i = GOOD_CONVERT.index("-O")
        self.assert_bad(sample(GOOD_CONVERT[:i] + GOOD_CONVERT[i + 2:]), "without -O")

    def test_an_unknown_or_probing_format_fails(self):
        self.assert_bad(sample(["info", "-f", "vmdk", "/proc/self/fd/3"]), "no format cistern keeps")

    def test_a_backing_file_fails_and_more_so_without_F(self):
        args = ["create", "-q", "-f", "qcow2", "-b", "/proc/self/fd/4", "/proc/self/fd/3", "1048576"]
        self.assert_bad(sample(args), "without its format (-F)")
        self.assert_bad(sample(args[:4] + ["-F", "raw"] + args[4:]), "names a backing file")
        self.assertFalse(any("-F" in p for p in call_problems(sample(args[:4] + ["-F", "raw"] + args[4:]))))

    def test_pool_paths_and_pseudo_filenames_fail(self):
        for image, words in ((POOL_DIR + "/volumes/v/image", "names a path in the pool"),
                             ("json:{\"file.filename\":\"/etc/shadow\"}", "pseudo-filename"),
                             ("nbd:localhost:10809", "pseudo-filename"),
                             ("image", "not a /proc/self/fd/N path"),
                             ("/proc/self/fd/7", "did not inherit")):
            with self.subTest(image=image):
                self.assert_bad(sample(GOOD_CONVERT[:-1] + [image]), words)

    def test_an_image_outside_the_pools_fails(self):
        fds = {"0": "/dev/null", "1": "pipe:[1]", "2": "pipe:[2]", "3": "/etc/shadow"}
        self.assert_bad(sample(GOOD_CREATE, fds=fds), "no file of a pool")

    def test_image_opts_fail(self):
        self.assert_bad(sample(["info", "--image-opts", "-f", "raw", "/proc/self/fd/3"]), "--image-opts")

    def test_a_dirty_environment_fails(self):
        for env, words in ((["LC_ALL=C", "PATH=/usr/bin", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/x"], "not just"),
                           (["PATH=/usr/bin"], "not just"),
                           (["LC_ALL=en_US.UTF-8", "PATH=/usr/bin"], "LC_ALL"),
                           (["LC_ALL=C", "PATH=.:/usr/bin"], "PATH"),
                           (["LC_ALL=C", "PATH=/home/u/bin:/usr/bin"], "PATH")):
            with self.subTest(env=env):
                self.assert_bad(sample(GOOD_CREATE, env=env), words)

    def test_inherited_fds_fail(self):
        fds = {"0": "/dev/null", "1": "pipe:[1]", "2": "pipe:[2]", "3": POOL_DIR + "/v",
               "7": "socket:[99]"}
        self.assert_bad(sample(GOOD_CREATE, fds=fds), "7 → socket:[99]")
        fds = {"0": "/dev/pts/0", "1": "/var/log/cisternd.log", "2": "pipe:[2]", "3": POOL_DIR + "/v"}
        self.assert_bad(sample(GOOD_CREATE, fds=fds), "stdin")
        self.assert_bad(sample(GOOD_CREATE, fds=fds), "fd 1")

    def test_missing_limits_session_and_signals_fail(self):
        inf = resource.RLIM_INFINITY
        for changes, words in (({"limits": {"as": [inf, inf], "cpu": [60, 60], "core": [0, 0]}}, "address space"),
                               ({"limits": {"as": [1 << 30] * 2, "cpu": [inf, inf], "core": [0, 0]}}, "CPU"),
                               ({"limits": {"as": [1 << 30] * 2, "cpu": [60, 60], "core": [inf, inf]}}, "core"),
                               ({"sid": 1}, "session"),
                               ({"pdeathsig": 0}, "parent dies"),
                               ({"sigblk": 0xfffffffe7ffbfeff}, "blocked signals"),
                               ({"exe": "qemu-img"}, "absolute path")):
            with self.subTest(changes=changes):
                self.assert_bad(sample(GOOD_CREATE, **changes), words)

    def test_a_storage_daemon_that_may_probe_or_follow_backing_fails(self):
        fds = {"0": "/dev/null", "1": "pipe:[1]", "2": "pipe:[2]", "3": POOL_DIR + "/x",
               "4": "/run/m", "5": "/run/p"}
        no_backing_null = [a.replace(',"backing":null', "") for a in GOOD_STORAGE_DAEMON]
        self.assert_bad(sample(no_backing_null, exe="/usr/bin/qemu-storage-daemon", fds=fds),
                        "backing file its header names")
        no_format = GOOD_STORAGE_DAEMON[:5] + GOOD_STORAGE_DAEMON[7:]
        self.assert_bad(sample(no_format, exe="/usr/bin/qemu-storage-daemon", fds=fds),
                        "names the image format")


# ---------------------------------------------------------------------------
# The daemon's real calls
# ---------------------------------------------------------------------------

class RecordingTestCase(harness.CisternTestCase):
    """cisternd's qemu calls, recorded through wrappers bind-mounted over the programs for the
    whole class; a dir pool p1 per test."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if not os.access(QEMU_PROGRAMS[0], os.X_OK):
            raise unittest.SkipTest("qemu-img is not installed")
        cls.dir = tempfile.mkdtemp(prefix="qemu-argv-", dir=cls.env.tmp)
        cls.log = os.path.join(cls.dir, "calls.jsonl")
        cls.real = {}
        for program in QEMU_PROGRAMS:
            if os.access(program, os.X_OK):
                cls.wrap(program)

    @classmethod
    def wrap(cls, program):
        name = os.path.basename(program)
        real = os.path.join(cls.dir, name + ".real")
        wrapper = os.path.join(cls.dir, name + ".wrapper")
        with open(real, "w"):
            pass
        cls.bind(program, real)
        with open(wrapper, "w") as f:
            f.write(WRAPPER % {"log": cls.log, "real": real})
        os.chmod(wrapper, 0o755)
        cls.bind(wrapper, program)
        cls.real[program] = real

    @classmethod
    def bind(cls, source, target):
        harness.run_checked(["mount", "--bind", source, target])
        cls.addClassCleanup(harness.run_checked, ["umount", "--lazy", target])

    def setUp(self):
        super().setUp()
        with open(self.log, "w"):
            pass
        self.pool = self.make_pool("p1")

    # -- helpers --

    def qemu_img(self, *args):
        """The test's own qemu-img runs: the original, not through the wrapper."""
        return subprocess.run([self.real[QEMU_PROGRAMS[0]]] + list(args), check=True,
                              capture_output=True).stdout

    def guest_bytes(self, path, fmt):
        with tempfile.NamedTemporaryFile(dir=self.dir) as out:
            self.qemu_img("convert", "-f", fmt, "-O", "raw", path, out.name)
            with open(out.name, "rb") as f:
                return f.read()

    def image_format(self, path):
        """What qemu-img finds in the file when it is allowed to probe (the test's own files only)."""
        return json.loads(self.qemu_img("info", "--output=json", path))["format"]

    def file(self, volume, *names):
        return harness.dir_volume_file(self.pool.dir, volume, *(names or ("image",)))

    def write_at(self, volume, offset, data, *names):
        fd = os.open(self.file(volume, *names), os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)

    def calls(self):
        """Every call recorded since the test began, checked."""
        with open(self.log) as f:
            records = [json.loads(line) for line in f]
        assert_calls_clean(records, [self.pool.dir, self.env.dirs["pools"]])
        return records

    def qemu_img_calls(self, sub=None):
        found = []
        for record in self.calls():
            if record["exe"] == QEMU_PROGRAMS[0]:
                parsed = parse_qemu_img(record["args"])
                if sub is None or parsed[0] == sub:
                    found.append(parsed)
        return found

    def convert(self, obj, fmt, **options):
        self.c.call(obj, VOLUME, "Convert", "sa{sv}", fmt,
                    harness.variant_dict({k: bool(v) for k, v in options.items()}), timeout=CALL_TIMEOUT)

    def prop(self, obj, name):
        return self.c.prop(obj, VOLUME, name)



class QemuArgvTest(RecordingTestCase):

    def test_create_and_resize_name_the_format(self):
        q = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        self.make_volume(self.pool, "qp", 8 * MiB, format="qcow2", preallocate=True)
        self.c.resize(q, 32 * MiB)
        self.c.resize(q, 8 * MiB, {"allow_shrink": True})
        self.c.start_volume(q)
        self.c.resize(q, 24 * MiB)        # the working copy, in place
        self.c.stop_volume(q)
        self.assertEqual(self.prop(q, "Size"), 24 * MiB)

        creates = self.qemu_img_calls("create")
        self.assertEqual([option_values(o, "-f") for _, o, _ in creates], [["qcow2"], ["qcow2"]])
        resizes = self.qemu_img_calls("resize")
        self.assertEqual(len(resizes), 3, resizes)
        self.assertEqual([(option_values(o, "-f"), ("--shrink", None) in o) for _, o, _ in resizes],
                         [(["qcow2"], False), (["qcow2"], True), (["qcow2"], False)])
        self.assertEqual([p[-1] for _, _, p in resizes], [str(32 * MiB), str(8 * MiB), str(24 * MiB)])

    def test_start_of_volatile_and_snapshot_volumes(self):
        volatile = self.make_volume(self.pool, "tmp", 16 * MiB, format="qcow2", save_on_stop=False)
        self.c.start_volume(volatile)
        self.assertEqual(self.image_format(self.file("tmp", "work")), "qcow2")
        self.c.stop_volume(volatile)

        src = self.make_volume(self.pool, "src", 4 * MiB)
        self.write_at("src", MiB, b"guest data")
        snap = self.make_volume(self.pool, "snap", 8 * MiB, format="qcow2", snap_on_start=True,
                                source=src)
        self.c.start_volume(snap)
        work = self.guest_bytes(self.file("snap", "work"), "qcow2")
        self.assertEqual((len(work), work[MiB:MiB + 10]), (8 * MiB, b"guest data"))
        self.c.stop_volume(snap)

        # The volatile volume's image at CreateVolume and at Start, the snapshot volume's own.
        self.assertEqual([option_values(o, "-f") for _, o, _ in self.qemu_img_calls("create")],
                         [["qcow2"]] * 3)
        [(_, options, _)] = self.qemu_img_calls("convert")
        self.assertEqual((option_values(options, "-f"), option_values(options, "-O")),
                         (["raw"], ["qcow2"]))
        # Made as large as the volume itself, in the volume's format.
        [(_, options, positional)] = self.qemu_img_calls("resize")
        self.assertEqual((option_values(options, "-f"), positional[-1]), (["qcow2"], str(8 * MiB)))

    def test_convert_both_ways_with_and_without_compression(self):
        v = self.make_volume(self.pool, "v", 8 * MiB)
        self.write_at("v", 0, b"first sector")
        self.write_at("v", 5 * MiB, os.urandom(64 * 1024))
        content = self.guest_bytes(self.file("v"), "raw")
        steps = [("qcow2", False), ("raw", False), ("qcow2", True), ("qcow2", True), ("raw", False)]
        for fmt, compress in steps:
            self.convert(v, fmt, compress=compress)
            self.assertEqual(self.prop(v, "Format"), fmt)
            self.assertTrue(self.guest_bytes(self.file("v"), fmt) == content,
                            "Convert to %s changed the guest's bytes" % fmt)

        converts = self.qemu_img_calls("convert")
        self.assertEqual([(option_values(o, "-f"), option_values(o, "-O"), ("-c", None) in o)
                          for _, o, _ in converts],
                         [(["raw"], ["qcow2"], False), (["qcow2"], ["raw"], False),
                          (["raw"], ["qcow2"], True), (["qcow2"], ["qcow2"], True),
                          (["qcow2"], ["raw"], False)])
        for _, options, positional in converts:
            self.assertEqual(len(positional), 2, positional)
            self.assertNotEqual(positional[0], positional[1])
            self.assertEqual(option_values(options, "-F"), [])

    def test_info_and_properties_run_no_qemu(self):
        q = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        self.convert(q, "qcow2", compress=True)
        r = self.make_volume(self.pool, "r", MiB)
        before = len(self.calls())
        for _ in range(3):
            info = self.c.info(q)
            self.assertEqual((info["format"], info["virtual_size"]), ("qcow2", 16 * MiB))
        self.assertEqual(self.c.info(r)["format"], "raw")
        self.c.refresh_pool(self.pool.obj)
        self.c.managed_objects()
        self.assertEqual(len(self.calls()), before, "Info, Refresh or a property read ran qemu")

    def test_a_raw_volume_that_looks_like_qcow2_goes_to_qemu_as_raw(self):
        canary = os.path.join(self.env.dirs["pools"], "canary")
        with open(canary, "wb") as f:
            f.write(b"host secret" * 100)
        name = canary.encode()
        header = struct.pack(">4sIQIIQIIQQIIQ", b"QFI\xfb", 2, 72, len(name), 16, 64 * MiB,
                             0, 1, 3 * 65536, 65536, 1, 1, 2 * 65536) + name
        r = self.make_volume(self.pool, "r", 4 * MiB)
        self.write_at("r", 0, header)
        snap = self.make_volume(self.pool, "snap", 4 * MiB, format="qcow2", snap_on_start=True,
                                source=r)
        self.c.start_volume(snap)
        self.c.stop_volume(snap)
        self.convert(r, "qcow2")
        self.assertEqual(self.guest_bytes(self.file("r"), "qcow2")[:len(header)], header)

        converts = self.qemu_img_calls("convert")
        self.assertEqual([option_values(o, "-f") for _, o, _ in converts], [["raw"], ["raw"]])
        for record in self.calls():
            for target in record["fds"].values():
                self.assertNotEqual(target, canary, "qemu got the file the header names")

    def test_revert_and_clone_across_formats(self):
        v = self.make_volume(self.pool, "v", 4 * MiB)
        self.write_at("v", 0, b"raw first")
        self.convert(v, "qcow2")
        (rev, _), = self.prop(v, "Revisions")
        c = self.c.clone(v, self.pool.obj, "c", {"revision": rev})
        self.c.revert(v, rev)
        self.assertEqual((self.prop(v, "Format"), self.prop(c, "Format")), ("raw", "raw"))
        self.c.start_volume(v)
        self.c.resize(v, 6 * MiB)
        self.c.stop_volume(v)
        [(_, options, _)] = self.qemu_img_calls("convert")
        self.assertEqual((option_values(options, "-f"), option_values(options, "-O")),
                         (["raw"], ["qcow2"]))
        self.calls()


class StorageDaemonArgvTest(RecordingTestCase):
    """A qcow2 volume's device is served by qemu-storage-daemon: its call is checked too."""

    needs_udev = True

    def setUp(self):
        super().setUp()
        if not os.access(QEMU_PROGRAMS[1], os.X_OK):
            self.skipTest("qemu-storage-daemon is not installed")
        if not os.path.exists("/dev/loop-control") or not os.path.exists("/dev/fuse"):
            self.skipTest("no loop devices or no /dev/fuse")

    def detach(self, obj):
        if self.prop(obj, "Device"):
            self.c.detach(obj)
            self.udev_settle()

    def test_attach_of_a_qcow2_volume(self):
        q = self.make_volume(self.pool, "q", 16 * MiB, format="qcow2")
        try:
            self.c.attach(q, {})
        except dbus.exceptions.DBusException as e:
            if e.get_dbus_name() == harness.Error.NotSupported:
                self.skipTest("this cisternd attaches no qcow2 volume: %s" % e.get_dbus_message())
            raise
        self.addCleanup(self.detach, q)
        daemons = [r for r in self.calls() if r["exe"] == QEMU_PROGRAMS[1]]
        self.assertEqual(len(daemons), 1, "one qemu-storage-daemon per attachment")
        nodes = [json.loads(a) for a in daemons[0]["args"] if a.startswith("{")]
        self.assertIn("qcow2", [n.get("driver") for n in nodes])


if __name__ == "__main__":
    harness.main()
