#!/usr/bin/python3
"""Nothing is lost by exiting, crashing or being killed (SPEC §2)."""

import signal

import harness
from harness import MANAGER, POOL, ROOT_PATH, USER_A, MiB


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

    def test_reactivated_daemon_exits_when_idle_again(self):
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.wait_for_idle_exit()
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        self.wait_for_idle_exit()


if __name__ == "__main__":
    harness.main()
