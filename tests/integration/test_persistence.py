#!/usr/bin/python3
"""Nothing is lost by exiting, crashing or being killed (SPEC §2)."""

import os
import random
import signal
import time

from gi.repository import GLib

import harness
from harness import MANAGER, POOL, ROOT_PATH, USER_A, VOLUME, Error, MiB


class PersistenceTestCase(harness.CisternTestCase):

    def populate(self):
        """Two pools with volumes of every kind the foundation supports."""
        p1 = self.make_pool("p1", revisions_to_keep=2)
        p2 = self.make_pool("p2", reflink="never")
        base = self.make_volume(p1, "base", 4 * MiB, owner=USER_A.uid, read_only=True)
        self.make_volume(p1, "snap", 4 * MiB, save_on_stop=False, snap_on_start=True,
                         source=base)
        self.make_volume(p1, "volatile", MiB, save_on_stop=False, revisions_to_keep=0)
        full = self.make_volume(p2, "full", 2 * MiB, preallocate=True)
        self.c.resize(full, 3 * MiB)
        self.c.configure_pool(p2.obj, {"revisions_to_keep": 5})

    def assert_restarts_identical(self, stop):
        """stop() ends the daemon; the next call re-activates it with the same state."""
        self.populate()
        before = self.snapshot_state()
        stop()
        self.assertIsNone(self.env.daemon_pid())
        self.assertEqual(self.snapshot_state(), before)


class KillTest(PersistenceTestCase):

    def test_state_survives_sigkill_of_an_activated_daemon(self):
        self.assert_restarts_identical(lambda: self.env.kill_daemon(signal.SIGKILL))

    def test_state_survives_sigkill_of_a_directly_started_daemon(self):
        self.env.start_daemon()
        self.assert_restarts_identical(lambda: self.env.kill_daemon(signal.SIGKILL))

    def test_state_survives_sigterm(self):
        self.assert_restarts_identical(self.env.stop_daemon)

    def test_restarted_daemon_is_a_new_process(self):
        self.populate()
        first = self.env.daemon_pid()
        self.env.kill_daemon(signal.SIGKILL)
        self.c.get_pool("p1")
        self.assertNotIn(self.env.daemon_pid(), (None, first))

    def test_removals_survive_sigkill(self):
        self.populate()
        self.c.remove_volume(self.c.get_volume("p1", "volatile"))
        self.c.remove_pool("p2")
        before = self.snapshot_state()
        self.env.kill_daemon(signal.SIGKILL)
        self.assertEqual(self.snapshot_state(), before)
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [self.c.get_pool("p1")])


class KillDuringCreateVolumeBurstTest(harness.CisternTestCase):
    """SIGKILL while CreateVolume calls stream in (SPEC §2, §8 reliability).

    Each round sends a burst of asynchronous CreateVolume calls and kills the
    daemon after a random number of replies, i.e. somewhere inside a creation
    most of the time.  The restarted daemon must hold every volume whose
    creation was reported, complete; any other volume it holds must be complete
    too; and the pool's volumes/ directory must hold nothing but those volumes.
    """

    BURST = 80          # below dbus-daemon's limit of pending replies per connection
    MAX_ROUNDS = 40      # rounds stop early once two kills have landed inside a creation
    SIZE = MiB

    def burst(self, pool, names, kill_after):
        """Send CreateVolume for every name; SIGKILL the daemon after kill_after replies.

        Returns the names whose creation was reported (object path by name)."""
        created, failed = {}, {}
        for name in names:
            self.env.bus.call_async(
                harness.BUS_NAME, pool.obj, POOL, "CreateVolume", "sta{sv}",
                (name, self.SIZE, harness.variant_dict({"preallocate": True})),
                lambda path, name=name: created.__setitem__(name, str(path)),
                lambda error, name=name: failed.__setitem__(name, error.get_dbus_name()),
                timeout=harness.CALL_TIMEOUT)
        context = GLib.MainContext.default()
        deadline = time.monotonic() + harness.CALL_TIMEOUT
        while len(created) + len(failed) < kill_after and time.monotonic() < deadline:
            context.iteration(True)
        pid = self.env.daemon_pid()
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(harness.wait_pid_exit(pid, 10))
        while len(created) + len(failed) < len(names) and time.monotonic() < deadline:
            context.iteration(True)
        self.assertEqual(len(created) + len(failed), len(names), "calls left unanswered")
        unexpected = {n: e for n, e in failed.items() if e != "org.freedesktop.DBus.Error.NoReply"}
        self.assertEqual(unexpected, {}, "calls failed before the kill")
        return created

    def staging_entries(self, pool):
        return sorted(e for e in os.listdir(os.path.join(pool.dir, "volumes"))
                      if e.startswith(".stage-"))

    def check_consistent(self, pool, reported):
        volumes = {self.c.prop(v, VOLUME, "Name"): v for v in
                   self.c.prop(pool.obj, POOL, "Volumes")}
        missing = sorted(set(reported) - set(volumes))
        self.assertEqual(missing, [], "volumes reported created are gone after SIGKILL")
        for name, path in reported.items():
            self.assertEqual(volumes[name], path)
        for name, path in volumes.items():
            props = self.c.props(path, VOLUME)
            self.assertEqual((props["Size"], props["State"]), (self.SIZE, "stopped"),
                             "volume %s is incomplete" % name)
            self.assertGreaterEqual(props["Usage"], self.SIZE,
                                    "volume %s lost its preallocation" % name)
            self.assertEqual(self.c.info(path)["virtual_size"], self.SIZE)
        self.assertEqual(self.staging_entries(pool), [], "staging entries left after restart")
        self.assertEqual(sorted(os.listdir(os.path.join(pool.dir, "volumes"))),
                         sorted(volumes), "volumes/ holds entries that are no volume")
        objects = self.c.managed_objects()
        self.assertEqual(sorted(p for p in objects if p != pool.obj), sorted(volumes.values()))
        return volumes

    def test_every_reported_volume_survives_and_nothing_half_made_remains(self):
        pool = self.make_pool("p1")
        rng = random.Random(4711)
        reported, caught_mid_creation = {}, 0
        for round_ in range(self.MAX_ROUNDS):
            names = ["r%d-%d" % (round_, i) for i in range(self.BURST)]
            reported.update(self.burst(pool, names, rng.randint(1, self.BURST // 2)))
            if self.staging_entries(pool):
                caught_mid_creation += 1
            self.c.get_pool("p1")   # re-activates the daemon
            self.check_consistent(pool, reported)
            if caught_mid_creation >= 2 and round_ >= 4:
                break
        self.assertGreater(caught_mid_creation, 0,
                           "no SIGKILL hit a creation in %d rounds: the test proved little"
                           % self.MAX_ROUNDS)
        before = self.snapshot_state()
        self.env.kill_daemon(signal.SIGKILL)
        self.assertEqual(self.snapshot_state(), before, "a second restart changed the state")


class IdleExitTest(PersistenceTestCase):

    def setUp(self):
        super().setUp()
        self.env.write_activation_file(idle_timeout=1)

    def wait_for_idle_exit(self):
        pid = self.env.daemon_pid()
        self.assertIsNotNone(pid, "the daemon is not running")
        self.assertTrue(harness.wait_pid_exit(pid, 15),
                        "cisternd with --idle-timeout=1 still runs after 15 s")
        harness.poll_until(lambda: not self.env.name_has_owner(harness.BUS_NAME),
                           harness.READY_TIMEOUT, "the bus to drop the daemon's name")

    def test_idle_daemon_exits_by_itself(self):
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.wait_for_idle_exit()

    def test_idle_exit_loses_nothing_and_a_call_reactivates(self):
        self.populate()
        pool = self.c.get_pool("p1")
        before = self.snapshot_state()
        self.wait_for_idle_exit()
        self.assertEqual(self.c.prop(pool, POOL, "Name"), "p1")
        self.assertIsNotNone(self.env.daemon_pid())
        self.assertEqual(self.snapshot_state(), before)

    def create_volume_past_a_slow_polkit(self):
        """USER_A creates a volume while polkit takes longer than several idle timeouts."""
        pool = self.make_pool("p1")
        gate = self.polkit_gate()
        self.env.set_polkit_rules(gate.rule("org.cistern.volume.create", USER_A))
        pid = self.env.daemon_pid()
        call = self.start_as_user(USER_A,
                                  lambda c: c.create_volume(pool.obj, "v1", MiB, {}))
        gate.wait_entered()
        # The idle timeout is 1 s (with 1 s accuracy): three of them pass unanswered.
        self.assertFalse(call.done(timeout=3.5), "the call returned before polkit answered")
        self.assertEqual(self.env.daemon_pid(), pid,
                         "cisternd exited while a polkit check was pending")
        gate.release()
        outcome = call.outcome()
        self.assertTrue(outcome.ok, outcome)
        self.assertEqual(self.c.prop(outcome.value, VOLUME, "Owner"), USER_A.uid)
        self.assertEqual(self.env.daemon_pid(), pid)

    def test_no_idle_exit_while_a_polkit_check_is_pending(self):
        self.create_volume_past_a_slow_polkit()

    def test_idle_exit_once_a_slow_polkit_check_is_answered(self):
        self.create_volume_past_a_slow_polkit()
        self.wait_for_idle_exit()
        self.assertEqual(self.c.prop(self.c.get_volume("p1", "v1"), VOLUME, "Owner"),
                         USER_A.uid)

    def test_a_method_call_on_a_volume_reactivates_the_daemon(self):
        pool = self.make_pool("p1")
        volume = self.make_volume(pool, "v1", MiB)
        self.wait_for_idle_exit()
        self.c.resize(volume, 2 * MiB)   # a method call on a volume, not a property read
        self.assertEqual(self.c.prop(volume, VOLUME, "Size"), 2 * MiB)
        self.wait_for_idle_exit()
        self.assert_fails(Error.WouldShrink, self.c.resize, volume, MiB)
        self.assertEqual(self.c.prop(volume, VOLUME, "Size"), 2 * MiB)

    def test_reactivated_daemon_exits_when_idle_again(self):
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.wait_for_idle_exit()
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.wait_for_idle_exit()


if __name__ == "__main__":
    harness.main()
