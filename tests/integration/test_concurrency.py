#!/usr/bin/python3
"""Calls that overlap file work still in progress (SPEC §2, §4.1 RemovePool, §4.3 Remove).

File work (creating, preallocating, removing, resizing) runs while the daemon
keeps answering, so a second call can arrive while the first one's work runs.
Each test sends its calls back to back on one connection, so the daemon reads
the second while the first one's (preallocated, hence slower) work is still in
flight, and records the order of the replies: a reply to the second call that
comes before the first call's reply proves the two overlapped.
"""

import time

import dbus
from gi.repository import GLib

import harness
from harness import MANAGER, POOL, ROOT_PATH, VOLUME, Error, MiB

BIG = 128 * MiB     # preallocated: long enough for the next call to arrive meanwhile
ATTEMPTS = 5        # a round in which the calls did not overlap proves nothing: retry


class Burst:
    """Asynchronous calls sent back to back; replies recorded in arrival order."""

    def __init__(self, bus):
        self.bus = bus
        self.replies = []   # (label, value or None, error name or None), in order of arrival
        self.sent = 0

    def call(self, label, path, iface, method, sig, *args):
        self.sent += 1
        self.bus.call_async(harness.BUS_NAME, path, iface, method, sig, args,
                            lambda *value: self.replies.append((label, value, None)),
                            lambda e: self.replies.append((label, None, e.get_dbus_name())),
                            timeout=harness.CALL_TIMEOUT)

    def wait(self):
        context = GLib.MainContext.default()
        deadline = time.monotonic() + harness.CALL_TIMEOUT
        while len(self.replies) < self.sent and time.monotonic() < deadline:
            context.iteration(True)
        return self.replies

    def error_of(self, label):
        return next(e for l, _, e in self.replies if l == label)

    def before(self, first, second):
        labels = [l for l, _, _ in self.replies]
        return labels.index(first) < labels.index(second)


class ConcurrencyTestCase(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")
        self.pid = self.env.daemon_pid()

    def burst(self):
        return Burst(self.env.bus)

    def create_call(self, burst, label, name, **options):
        burst.call(label, self.pool.obj, POOL, "CreateVolume", "sta{sv}", name, dbus.UInt64(BIG),
                   harness.variant_dict(dict({"preallocate": True}, **options)))

    def assert_daemon_alive_and_consistent(self):
        self.assertEqual(self.env.daemon_pid(), self.pid, "cisternd died or restarted")
        objects = self.c.managed_objects()
        for path, interfaces in objects.items():
            if VOLUME in interfaces:
                self.assertEqual(interfaces[VOLUME], self.c.props(path, VOLUME))
        return objects


class OverlappingCreateVolumeTest(ConcurrencyTestCase):

    def test_the_same_name_created_twice_at_once_is_created_once(self):
        burst = self.burst()
        for i in range(4):
            self.create_call(burst, "create-%d" % i, "v1")
        replies = burst.wait()
        errors = sorted(str(e) for _, _, e in replies)
        self.assertEqual(errors, ["None"] + [Error.AlreadyExists] * 3, replies)
        self.assertEqual(self.c.prop(self.pool.obj, POOL, "Volumes"),
                         [harness.volume_path("p1", "v1")])
        self.assert_daemon_alive_and_consistent()

    def test_a_volume_being_created_is_not_visible_until_complete(self):
        burst = self.burst()
        self.create_call(burst, "create", "v1")
        burst.call("get", ROOT_PATH, MANAGER, "GetVolume", "ss", "p1", "v1")
        burst.wait()
        if burst.before("get", "create"):
            self.assertEqual(burst.error_of("get"), Error.NotFound)
        self.assertIsNone(burst.error_of("create"))
        self.assertEqual(self.c.prop(self.c.get_volume("p1", "v1"), VOLUME, "Size"), BIG)

    def test_remove_pool_while_a_volume_is_being_created_is_busy(self):
        """RemovePool is Busy while a volume of the pool has work in progress (SPEC §4.1)."""
        self.make_volume(self.pool, "existing", MiB)
        for attempt in range(ATTEMPTS):
            burst = self.burst()
            self.create_call(burst, "create", "new-%d" % attempt)
            burst.call("remove-pool", ROOT_PATH, MANAGER, "RemovePool", "sa{sv}", "p1",
                       harness.variant_dict({}))
            burst.wait()
            self.assertEqual(self.env.daemon_pid(), self.pid, "cisternd died: %s"
                             % burst.replies)
            if burst.before("remove-pool", "create"):
                self.assertEqual(burst.error_of("remove-pool"), Error.Busy,
                                 "RemovePool answered while a volume of the pool was being "
                                 "created: %s" % burst.replies)
                self.assertIsNone(burst.error_of("create"), burst.replies)
                self.assertIn(harness.volume_path("p1", "new-%d" % attempt),
                              self.c.prop(self.pool.obj, POOL, "Volumes"))
                self.assert_daemon_alive_and_consistent()
                return
            if burst.error_of("remove-pool") is None:   # after the creation: legitimate
                self.make_pool("p1", path=self.pool.dir)
        self.skipTest("the calls never overlapped in %d attempts" % ATTEMPTS)

    def test_the_source_of_a_volume_being_created_cannot_be_removed(self):
        """Remove is Busy for the source of a snap_on_start volume, also one still being made."""
        for attempt in range(ATTEMPTS):
            base = self.make_volume(self.pool, "base-%d" % attempt, MiB)
            burst = self.burst()
            self.create_call(burst, "create", "snap-%d" % attempt, save_on_stop=False,
                             snap_on_start=True, source=base)
            burst.call("remove-source", base, VOLUME, "Remove", "a{sv}",
                       harness.variant_dict({}))
            burst.wait()
            self.assertEqual(self.env.daemon_pid(), self.pid)
            if burst.before("remove-source", "create"):
                self.assertIsNone(burst.error_of("create"), burst.replies)
                self.assertEqual(burst.error_of("remove-source"), Error.Busy,
                                 "the source of a volume being created was removed: %s"
                                 % burst.replies)
                snap = self.c.get_volume("p1", "snap-%d" % attempt)
                self.assertEqual(self.c.prop(snap, VOLUME, "Source"), base)
                self.assert_daemon_alive_and_consistent()
                return
        self.skipTest("the calls never overlapped in %d attempts" % ATTEMPTS)

    def check_source_being_removed_is_refused(self, send_call):
        """send_call(burst, label, source, attempt) names a source whose Remove is under way."""
        for attempt in range(ATTEMPTS):
            base = self.make_volume(self.pool, "base-%d" % attempt, BIG, preallocate=True)
            burst = self.burst()
            burst.call("remove-source", base, VOLUME, "Remove", "a{sv}",
                       harness.variant_dict({}))
            send_call(burst, "use-source", base, attempt)
            burst.wait()
            self.assertEqual(self.env.daemon_pid(), self.pid)
            self.assertIsNone(burst.error_of("remove-source"), burst.replies)
            if burst.before("use-source", "remove-source"):
                self.assertIsNotNone(burst.error_of("use-source"),
                                     "a volume being removed became a source: %s"
                                     % burst.replies)
                self.assert_daemon_alive_and_consistent()
                return
        self.skipTest("the calls never overlapped in %d attempts" % ATTEMPTS)

    def test_a_volume_being_removed_cannot_become_the_source_of_a_new_volume(self):
        def create(burst, label, source, attempt):
            burst.call(label, self.pool.obj, POOL, "CreateVolume", "sta{sv}",
                       "snap-%d" % attempt, dbus.UInt64(MiB), harness.variant_dict(
                           {"save_on_stop": False, "snap_on_start": True, "source": source}))
        self.check_source_being_removed_is_refused(create)

    def test_a_volume_being_removed_cannot_become_a_source_by_configure(self):
        volume = self.make_volume(self.pool, "v1", MiB)

        def configure(burst, label, source, attempt):
            burst.call(label, volume, VOLUME, "Configure", "a{sv}", harness.variant_dict(
                {"save_on_stop": False, "snap_on_start": True, "source": source}))
        self.check_source_being_removed_is_refused(configure)


class OverlappingVolumeWorkTest(ConcurrencyTestCase):

    def setUp(self):
        super().setUp()
        self.volume = self.make_volume(self.pool, "v1", MiB)

    def test_changes_to_a_volume_with_work_in_progress_are_busy_or_wait(self):
        """A second change arriving during a resize never runs on the half-changed volume."""
        burst = self.burst()
        burst.call("grow", self.volume, VOLUME, "Resize", "ta{sv}", dbus.UInt64(BIG),
                   harness.variant_dict({}))
        burst.call("configure", self.volume, VOLUME, "Configure", "a{sv}",
                   harness.variant_dict({"read_only": True}))
        burst.call("remove", self.volume, VOLUME, "Remove", "a{sv}", harness.variant_dict({}))
        burst.wait()
        self.assertIsNone(burst.error_of("grow"), burst.replies)
        for label in ("configure", "remove"):
            if burst.before(label, "grow"):
                self.assertEqual(burst.error_of(label), Error.Busy, burst.replies)
        objects = self.assert_daemon_alive_and_consistent()
        if burst.error_of("remove") is not None:
            self.assertEqual(objects[self.volume][VOLUME]["Size"], BIG)

    def test_property_reads_are_answered_while_work_runs(self):
        burst = self.burst()
        burst.call("grow", self.volume, VOLUME, "Resize", "ta{sv}", dbus.UInt64(BIG),
                   harness.variant_dict({}))
        burst.call("read", self.volume, harness.PROPERTIES, "Get", "ss", VOLUME, "Name")
        burst.wait()
        self.assertIsNone(burst.error_of("read"))
        self.assertIsNone(burst.error_of("grow"))

    def test_remove_pool_during_a_volume_removal_is_busy(self):
        self.make_volume(self.pool, "big", BIG, preallocate=True)
        big = self.c.get_volume("p1", "big")
        burst = self.burst()
        burst.call("remove", big, VOLUME, "Remove", "a{sv}", harness.variant_dict({}))
        burst.call("remove-pool", ROOT_PATH, MANAGER, "RemovePool", "sa{sv}", "p1",
                   harness.variant_dict({}))
        burst.wait()
        self.assertIsNone(burst.error_of("remove"), burst.replies)
        if burst.before("remove-pool", "remove"):
            self.assertEqual(burst.error_of("remove-pool"), Error.Busy, burst.replies)
        self.assertEqual(self.env.daemon_pid(), self.pid, "cisternd died")


if __name__ == "__main__":
    harness.main()
