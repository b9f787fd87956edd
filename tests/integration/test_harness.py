#!/usr/bin/python3
"""The harness itself: private bus, real polkitd and rules, test users, scratch filesystems.

Needs no cisternd, so it tells a broken environment apart from a broken daemon.
"""

import os

import dbus
import dbus.bus

import harness
from harness import USER_A, USER_B, as_user

CISTERN_ACTIONS = [action for action, *_ in harness.FALLBACK_ACTIONS]


def polkit_answer(env, action_id):
    """fn for as_user: the caller asks polkit about itself."""
    return lambda c: env.check_authorization(c.bus, action_id)


class HarnessTest(harness.HarnessTestCase):

    def test_runs_in_a_private_mount_namespace(self):
        self.assertTrue(harness.in_private_namespace())

    def test_system_paths_are_bind_mounted_not_written(self):
        for path in ("/etc/passwd", "/etc/group", "/usr/share/polkit-1/actions",
                     "/etc/polkit-1/rules.d"):
            self.assertIn(path, harness.mounts_under(path), path)

    def test_private_bus_answers(self):
        self.assertEqual(os.environ["DBUS_SYSTEM_BUS_ADDRESS"], self.env.address)
        self.assertTrue(self.env.bus_driver("GetId"))

    def test_test_users_resolve_by_name(self):
        import pwd
        self.assertEqual(pwd.getpwuid(USER_A.uid).pw_name, USER_A.name)
        self.assertEqual(pwd.getpwnam(USER_B.name).pw_uid, USER_B.uid)

    def test_as_user_connects_with_the_users_uid(self):
        def own_uid(c):
            return c.bus.call_blocking("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "GetConnectionUnixUser", "s",
                                       (c.bus.get_unique_name(),))
        self.assertEqual(as_user(USER_A, own_uid).value, USER_A.uid)
        self.assertEqual(as_user(USER_B, own_uid).value, USER_B.uid)

    def test_as_user_reports_dbus_errors_by_name(self):
        outcome = as_user(USER_A, lambda c: c.bus.call_blocking(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "GetNameOwner", "s", ("org.example.Nobody",)))
        self.assertEqual(outcome.error, "org.freedesktop.DBus.Error.NameHasNoOwner")

    def test_polkitd_owns_its_name(self):
        pid = self.env.name_pid(harness.POLKIT_NAME)
        self.assertEqual(pid, self.env.polkitd.pid)

    def test_polkitd_knows_every_cistern_action(self):
        actions = self.env.bus.call_blocking(
            harness.POLKIT_NAME, harness.POLKIT_PATH, harness.POLKIT_IFACE,
            "EnumerateActions", "s", ("",))
        ids = {str(a[0]) for a in actions}
        for action in CISTERN_ACTIONS:
            self.assertIn(action, ids)

    def test_polkit_denies_a_user_without_rules(self):
        authorized, challenge, _ = as_user(
            USER_A, polkit_answer(self.env, "org.cistern.pool.manage")).value
        self.assertFalse(authorized)

    def test_polkit_rule_grants_the_named_user_only(self):
        self.env.set_polkit_rules(harness.rule_allowing("org.cistern.pool.manage", USER_A))
        answer_a = as_user(USER_A, polkit_answer(self.env, "org.cistern.pool.manage")).value
        answer_b = as_user(USER_B, polkit_answer(self.env, "org.cistern.pool.manage")).value
        self.assertTrue(answer_a[0])
        self.assertFalse(answer_b[0])

    def test_rules_are_reset_between_tests(self):
        self.assertEqual(self.env.rules, "")
        answer = as_user(USER_A, polkit_answer(self.env, "org.cistern.pool.manage")).value
        self.assertFalse(answer[0])

    def test_activation_file_starts_the_build_tree_daemon(self):
        path = os.path.join(self.env.dirs["services"], harness.BUS_NAME + ".service")
        with open(path) as f:
            text = f.read()
        self.assertIn("Name=org.cistern.Cistern1", text)
        self.assertIn(harness.CISTERND + " --state-dir=" + self.env.dirs["state"], text)
        self.assertIn("User=root", text)

    def test_signal_recorder_sees_signals_under_the_root_path(self):
        rec = self.recorder()
        other = dbus.bus.BusConnection(self.env.address)
        self.addCleanup(other.close)
        msg = dbus.lowlevel.SignalMessage(harness.ROOT_PATH, harness.OBJECT_MANAGER,
                                          "InterfacesRemoved")
        msg.append(dbus.ObjectPath(harness.ROOT_PATH + "/pool/x"),
                   dbus.Array([harness.POOL], signature="s"), signature="oas")
        other.send_message(msg)
        other.flush()
        self.assertIsNotNone(rec.wait_for(
            harness.interfaces_removed(harness.ROOT_PATH + "/pool/x", harness.POOL)))

    def test_scratch_fs_is_mounted_on_a_loop_device_and_torn_down(self):
        fs = self.env.make_scratch_fs("ext4")
        try:
            self.assertEqual(harness.mounts_under(fs.path), [fs.path])
            self.assertTrue(fs.device.startswith("/dev/loop"))
            device = fs.device
        finally:
            self.env.drop_scratch_fs(fs)
        self.assertEqual(harness.mounts_under(fs.path), [])
        self.assertFalse(os.path.exists(fs.image))
        harness.poll_until(lambda: not os.path.exists("/sys/block/%s/loop/backing_file"
                                                      % os.path.basename(device)),
                           5, "the kernel to free " + device)

    def test_snapshot_listing_sees_modes_sizes_and_contents(self):
        root = self.env.dirs["pools"]
        path = os.path.join(root, "f")
        with open(path, "w") as f:
            f.write("one")
        before = harness.tree_listing(root)
        with open(path, "w") as f:
            f.write("two")
        self.assertNotEqual(before, harness.tree_listing(root))


if __name__ == "__main__":
    harness.main()
