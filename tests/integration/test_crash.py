#!/usr/bin/python3
"""SIGKILL of cisternd in the middle of operations that change committed data (SPEC §4.3, §8).

Each round brings a volume into the state an operation needs (with freshly
written, checksummed content), records the state of the pool as files and
properties, sends the operation, and kills cisternd with SIGKILL either after a
random delay (0–5 ms) or right after the daemon's k-th file-system event in the
volume's directories (inotify, k random), so that kills land between its
individual steps.  After the bus restarts the daemon, the test asserts:

- the pool is in exactly the state before the operation or exactly the state
  after it (committed image, working copy, revisions, sizes: byte for byte by
  checksum), and in the state after it whenever the call had replied success;
- no staging entry (".stage-*") is left anywhere in the pool or state dirs;
- the objects agree with the files (harness.dir_pool_inconsistencies);
- the volume is usable: the next round operates on it, and a last round trip
  of Start/write/Stop, CreateSnapshot, Revert and Clone ends the test.

Operations: Stop (commit), Revert, CreateSnapshot, Clone (of the committed
image or of a revision), Resize (stopped: new committed image; started: the
working copy).
"""

import collections
import ctypes
import dataclasses
import os
import random
import select
import signal
import struct
import sys
import time

import harness
from harness import (VOLUME, AsyncCall, Error, KiB, MiB, content_sha256, dir_volume_file,
                     file_sha256, variant_dict, write_pattern)

SIZE = 4 * MiB
KEEP = 3
NEW = "new"     # in an expected revision list: an id the daemon picks, above every earlier one

NO_REPLY = ("org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected")


# ---------------------------------------------------------------------------
# inotify, to kill the daemon right after one of its file-system steps
# ---------------------------------------------------------------------------

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
WATCH_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
              | IN_DELETE)

_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    def __init__(self, paths):
        self.fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for path in paths:
            if os.path.isdir(path):
                _libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)

    def wait_events(self, count, timeout):
        """Block until `count` events arrived or timeout passed; returns how many arrived."""
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                break
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                seen += 1
        return seen

    def close(self):
        os.close(self.fd)


# ---------------------------------------------------------------------------
# What a volume is, as files and properties
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VolumeState:
    exists: bool
    state: str = None
    size: int = None            # of the image the guest sees (Size)
    image: str = None           # sha256 of the committed image
    image_size: int = None
    work: str = None            # sha256 of the working copy, None when there is none
    revisions: tuple = ()       # ((id, sha256), …) oldest first, as the Revisions property says

    def describe(self):
        if not self.exists:
            return "absent"
        return "%s size=%s image=%s/%s work=%s revisions=%s" % (
            self.state, self.size, self.image and self.image[:8], self.image_size,
            self.work and self.work[:8], [(i, d[:8]) for i, d in self.revisions])


ABSENT = VolumeState(exists=False)


class CrashTestCase(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        self.rng_seed = int(os.environ.get("CISTERN_CRASH_SEED", time.time_ns() % 10 ** 9))
        self.rng = random.Random(self.rng_seed)
        self.seed = 1000
        self.max_id = {}          # highest revision id ever seen, per volume
        self.stats = collections.Counter()

    # -- reading the state ----------------------------------------------------

    def read_volume(self, pool, name):
        try:
            obj = self.c.get_volume(pool.name, name)
        except harness.dbus.exceptions.DBusException as e:
            if e.get_dbus_name() != Error.NotFound:
                raise
            self.assertFalse(os.path.exists(dir_volume_file(pool.dir, name)),
                             "volume %s is gone but its directory stayed" % name)
            return ABSENT
        props = self.c.props(obj, VOLUME)
        image = dir_volume_file(pool.dir, name, "image")
        work = dir_volume_file(pool.dir, name, "work")
        revisions = []
        for rev_id, _ in props["Revisions"]:
            path = dir_volume_file(pool.dir, name, "revisions", rev_id)
            self.assertTrue(os.path.isfile(path), "%s: revision %s has no file" % (name, rev_id))
            revisions.append((rev_id, file_sha256(path)))
        return VolumeState(
            exists=True, state=props["State"], size=props["Size"],
            image=file_sha256(image) if os.path.exists(image) else None,
            image_size=os.path.getsize(image) if os.path.exists(image) else None,
            work=file_sha256(work) if os.path.exists(work) else None,
            revisions=tuple(revisions))

    def matches(self, actual, expected, name):
        """actual equals expected, where a NEW revision id must exceed every earlier id."""
        if dataclasses.replace(actual, revisions=()) != dataclasses.replace(expected,
                                                                            revisions=()):
            return False
        if len(actual.revisions) != len(expected.revisions):
            return False
        floor = self.max_id.get(name, 0)
        for (a_id, a_sum), (e_id, e_sum) in zip(actual.revisions, expected.revisions):
            if a_sum != e_sum:
                return False
            if e_id == NEW:
                if not a_id.isdigit() or int(a_id) <= floor:
                    return False
            elif a_id != e_id:
                return False
        return True

    def note_ids(self, name, state):
        for rev_id, _ in state.revisions:
            self.assertTrue(rev_id.isdigit(), "revision id %r is not a counter value" % rev_id)
            self.max_id[name] = max(self.max_id.get(name, 0), int(rev_id))

    def assert_pool_consistent(self, pool):
        problems = harness.dir_pool_inconsistencies(self.c, pool.dir, pool.obj)
        problems += ["staging in the state directory: %s" % s
                     for s in harness.staging_entries(self.env.dirs["state"])]
        self.assertEqual(problems, [])

    # -- one killed operation -------------------------------------------------

    def next_seed(self):
        self.seed += 1
        return self.seed

    def kill_during(self, pool, op, watch, path, method, sig, *args):
        """Sends the call and SIGKILLs cisternd during it; returns the AsyncCall (answered)."""
        pid = self.env.daemon_pid()
        self.assertIsNotNone(pid)
        mode = self.rng.choice(("delay", "delay", "event"))
        watcher = Inotify(watch) if mode == "event" else None
        try:
            call = AsyncCall(self.env.bus, path, VOLUME, method, sig, *args, timeout=30)
            if mode == "delay":
                time.sleep(self.rng.uniform(0, 0.005))
            else:
                watcher.wait_events(self.rng.randint(1, 12), timeout=0.05)
            os.kill(pid, signal.SIGKILL)
        finally:
            if watcher:
                watcher.close()
        self.assertTrue(harness.wait_pid_exit(pid, 10), "cisternd survived SIGKILL")
        harness.poll_until(lambda: not self.env.name_has_owner(harness.BUS_NAME),
                           harness.READY_TIMEOUT, "the bus to drop cisternd's name")
        self.assertTrue(call.wait(30), "no answer to %s after the kill" % method)
        if not call.ok:
            self.assertIn(call.error, NO_REPLY, "%s failed before the kill: %s" % (op, call))
        self.stats[(op, mode, "replied" if call.ok else "killed")] += 1
        return call

    def check_outcome(self, pool, op, name, call, before, after, extra=()):
        """After the restart: name (and extra: [(name, before, after)]) all before or all after."""
        checks = [(name, before, after)] + list(extra)
        for n, b, _ in checks:
            self.note_ids(n, b)
        actual = {n: self.read_volume(pool, n) for n, _, _ in checks}
        is_before = all(self.matches(actual[n], b, n) for n, b, _ in checks)
        is_after = all(self.matches(actual[n], a, n) for n, _, a in checks)
        detail = "\n".join("  %s:\n    actual %s\n    before %s\n    after  %s" % (
            n, actual[n].describe(), b.describe(), a.describe()) for n, b, a in checks)
        if not (is_before or is_after):
            self.fail("%s killed: the pool is neither as before nor as after it%s\n%s"
                      % (op, self.explain(checks, actual), detail))
        if call.ok:
            self.assertTrue(is_after, "%s replied success, but its change is lost\n%s"
                            % (op, detail))
        self.stats[(op, "after" if is_after and not is_before else
                    "before" if is_before and not is_after else "either")] += 1
        self.assert_pool_consistent(pool)
        for n in actual:
            self.note_ids(n, actual[n])
        return actual[name]

    def explain(self, checks, actual):
        """Names the way in which actual misses both outcomes, where a known one fits."""
        def contents(states):
            found = set()
            for state in states:
                found |= {state.image, state.work} | {d for _, d in state.revisions}
            return found - {None}
        reasons = []
        # Content that both outcomes keep but that the pool no longer holds.
        lost = (contents(b for _, b, _ in checks) & contents(a for _, _, a in checks)) \
            - contents(actual.values())
        for n, b, a in checks:
            got = actual[n]
            if not got.exists or got.image != a.image:
                continue
            if any(i == NEW for i, _ in a.revisions) and \
                    not any(int(i) > self.max_id.get(n, 0) for i, _ in got.revisions):
                reasons.append("%s: committed, but the previous image was not kept as a revision"
                               % n)
            after_ids = {i for i, _ in a.revisions}
            extra = [i for i, _ in got.revisions
                     if i in {j for j, _ in b.revisions} and i not in after_ids]
            trimmed = dataclasses.replace(got, revisions=tuple(
                r for r in got.revisions if r[0] not in extra))
            if extra and self.matches(trimmed, a, n):
                reasons.append("%s: done, but revisions it should have removed (pruned or "
                               "consumed) remain: %s" % (n, extra))
        if lost:
            reasons.append("content lost: %s" % sorted(d[:8] for d in lost))
        return "".join("; " + r for r in reasons)

    # -- preparing a volume -----------------------------------------------------

    def ensure_started(self, pool, obj, name, write=True):
        if self.c.prop(obj, VOLUME, "State") != "started":
            self.c.start_volume(obj)
        if write:
            write_pattern(dir_volume_file(pool.dir, name, "work"), self.next_seed())

    def ensure_stopped(self, obj):
        if self.c.prop(obj, VOLUME, "State") != "stopped":
            self.c.stop_volume(obj)

    def watch_dirs(self, pool, name):
        return [os.path.join(pool.dir, "volumes"), dir_volume_file(pool.dir, name),
                dir_volume_file(pool.dir, name, "revisions")]

    # -- the operations ---------------------------------------------------------

    def op_stop_commit(self, pool, obj, name):
        self.ensure_started(pool, obj, name)
        before = self.read_volume(pool, name)
        after = VolumeState(
            exists=True, state="stopped", size=before.size, image=before.work,
            image_size=os.path.getsize(dir_volume_file(pool.dir, name, "work")), work=None,
            revisions=(before.revisions + ((NEW, before.image),))[-KEEP:])
        call = self.kill_during(pool, "Stop", self.watch_dirs(pool, name), obj, "Stop",
                                "a{sv}", variant_dict({}))
        self.check_outcome(pool, "Stop", name, call, before, after)

    def op_revert(self, pool, obj, name):
        self.ensure_stopped(obj)
        if not self.c.prop(obj, VOLUME, "Revisions"):
            self.ensure_started(pool, obj, name)
            self.c.stop_volume(obj)
        before = self.read_volume(pool, name)
        index = self.rng.randrange(len(before.revisions))
        chosen_id, chosen = before.revisions[index]
        rest = before.revisions[:index] + before.revisions[index + 1:]
        chosen_size = os.path.getsize(dir_volume_file(pool.dir, name, "revisions", chosen_id))
        after = dataclasses.replace(before, image=chosen, image_size=chosen_size, size=chosen_size,
                                    revisions=(rest + ((NEW, before.image),))[-KEEP:])
        call = self.kill_during(pool, "Revert", self.watch_dirs(pool, name), obj, "Revert",
                                "sa{sv}", chosen_id, variant_dict({}))
        self.check_outcome(pool, "Revert", name, call, before, after)

    def op_create_snapshot(self, pool, obj, name):
        if self.rng.random() < 0.3:
            self.ensure_started(pool, obj, name)
        revisions = self.c.prop(obj, VOLUME, "Revisions")
        for rev_id, _ in revisions[:max(0, len(revisions) - (KEEP - 1))]:
            self.c.remove_revision(obj, rev_id)    # room for one more without pruning
        before = self.read_volume(pool, name)
        after = dataclasses.replace(before, revisions=before.revisions + ((NEW, before.image),))
        call = self.kill_during(pool, "CreateSnapshot", self.watch_dirs(pool, name), obj,
                                "CreateSnapshot", "a{sv}", variant_dict({}))
        self.check_outcome(pool, "CreateSnapshot", name, call, before, after)

    def op_clone(self, pool, obj, name):
        clone = "c%d" % self.next_seed()
        before = self.read_volume(pool, name)
        options = {}
        content, content_size = before.image, before.image_size
        if before.revisions and self.rng.random() < 0.3:
            rev_id, content = self.rng.choice(before.revisions)
            options["revision"] = rev_id
            content_size = os.path.getsize(dir_volume_file(pool.dir, name, "revisions", rev_id))
        clone_after = VolumeState(exists=True, state="stopped", size=content_size,
                                  image=content, image_size=content_size)
        call = self.kill_during(pool, "Clone", self.watch_dirs(pool, name), obj, "Clone",
                                "osa{sv}", pool.obj, clone, variant_dict(options))
        self.check_outcome(pool, "Clone", name, call, before, before,
                           extra=[(clone, ABSENT, clone_after)])
        if self.read_volume(pool, clone).exists:
            self.c.remove_volume(self.c.get_volume(pool.name, clone))

    def new_size(self, current):
        sizes = [s for s in range(2 * MiB, 8 * MiB + 1, 512 * KiB) if s != current]
        return self.rng.choice(sizes)

    def op_resize(self, pool, obj, name):
        started = self.rng.random() < 0.3
        if started:
            self.ensure_started(pool, obj, name)
        else:
            self.ensure_stopped(obj)
        before = self.read_volume(pool, name)
        size = self.new_size(before.size)
        if started:
            work = dir_volume_file(pool.dir, name, "work")
            after = dataclasses.replace(before, size=size, work=content_sha256(work, size))
        else:
            image = dir_volume_file(pool.dir, name, "image")
            after = dataclasses.replace(before, size=size, image=content_sha256(image, size),
                                        image_size=size)
        call = self.kill_during(pool, "Resize", self.watch_dirs(pool, name), obj, "Resize",
                                "ta{sv}", harness.dbus.UInt64(size),
                                variant_dict({"allow_shrink": True}))
        self.check_outcome(pool, "Resize", name, call, before, after)

    MAX_FAILURES = 8
    OPERATIONS = ("op_stop_commit", "op_revert", "op_create_snapshot", "op_clone", "op_resize")

    # -- the test -----------------------------------------------------------------

    def run_kills(self, pool, kills_per_operation):
        obj = self.c.create_volume(pool.obj, "v", SIZE, {"revisions_to_keep": KEEP})
        write_pattern(dir_volume_file(pool.dir, "v", "image"), self.next_seed())
        self.note_ids("v", self.read_volume(pool, "v"))
        # CISTERN_CRASH_OPS=op_clone,op_resize narrows a run down while debugging.
        operations = os.environ.get("CISTERN_CRASH_OPS", "").split(",") if \
            os.environ.get("CISTERN_CRASH_OPS") else self.OPERATIONS
        schedule = [op for op in operations for _ in range(kills_per_operation)]
        self.rng.shuffle(schedule)
        failures = []
        # Every round reads its "before" from the pool as it is, so the rounds after a failed
        # one still test something: go on, and report every failure at the end.
        for number, op in enumerate(schedule):
            try:
                getattr(self, op)(pool, obj, "v")
            except AssertionError as e:
                failures.append("round %d of %d (%s): %s" % (number + 1, len(schedule), op, e))
                if len(failures) >= self.MAX_FAILURES:
                    break
        try:
            self.final_round_trip(pool, obj, "v")
        except AssertionError as e:
            failures.append("final round trip: %s" % e)
        self.report()
        if failures:
            self.fail("%d failed round(s) with CISTERN_CRASH_SEED=%d:\n\n%s"
                      % (len(failures), self.rng_seed, "\n\n".join(failures)))
        kills = sum(n for key, n in self.stats.items() if len(key) == 3)
        self.assertEqual(kills, len(schedule))

    def final_round_trip(self, pool, obj, name):
        """The volume still works for every operation after all those kills."""
        self.ensure_started(pool, obj, name, write=False)
        write_pattern(dir_volume_file(pool.dir, name, "work"), self.next_seed())
        written = file_sha256(dir_volume_file(pool.dir, name, "work"))
        self.c.stop_volume(obj)
        self.assertEqual(file_sha256(dir_volume_file(pool.dir, name, "image")), written)
        rev = self.c.create_snapshot(obj)
        self.assertEqual(file_sha256(dir_volume_file(pool.dir, name, "revisions", rev)), written)
        clone = self.c.clone(obj, pool.obj, "final")
        self.assertEqual(file_sha256(dir_volume_file(pool.dir, "final", "image")), written)
        self.c.revert(obj, rev)
        self.assertEqual(file_sha256(dir_volume_file(pool.dir, name, "image")), written)
        self.c.remove_volume(clone)
        self.assert_pool_consistent(pool)

    def report(self):
        by_op = collections.defaultdict(collections.Counter)
        for key, n in self.stats.items():
            by_op[key[0]][" ".join(key[1:])] += n
        for op in sorted(by_op):
            print("crash stats %s: %s" % (op, dict(sorted(by_op[op].items()))), file=sys.stderr)


class SigkillPlainPoolTest(CrashTestCase):
    """A pool without reflink: every copy is a real copy (the slow path, with jobs)."""

    def test_sigkill_during_changes_of_committed_data(self):
        self.run_kills(self.make_pool("p1"), kills_per_operation=30)


class SigkillReflinkPoolTest(CrashTestCase):
    """A pool on xfs with reflink=1: working copies, snapshots and clones are reflinks."""

    def test_sigkill_during_changes_of_committed_data(self):
        fs = self.scratch_fs("xfs")
        pool = self.make_pool("p1", path=fs.path)
        self.assertIs(self.c.prop(pool.obj, harness.POOL, "CopyOnWrite"), True)
        self.run_kills(pool, kills_per_operation=20)


if __name__ == "__main__":
    harness.main()
