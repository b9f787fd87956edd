#!/usr/bin/python3
"""org.cistern.Cistern1.Manager: properties, CreatePool/RemovePool/GetPool/GetVolume (SPEC §3, §4.1)."""

import os
import re

import dbus

import harness
from harness import INVALID_NAMES, MANAGER, POOL, VOLUME, ROOT_PATH, Error, MiB, USER_A

VALID_NAMES = ["a", "a" * 64, "1a", "a.b-c_d", "A9"]


def project_version():
    with open(os.path.join(harness.SOURCE_DIR, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


class ManagerPropertiesTest(harness.CisternTestCase):

    def test_properties_have_the_spec_types(self):
        raw = self.c.raw_props(ROOT_PATH, MANAGER)
        expected = {"Version": "s", "Drivers": "as", "Pools": "ao", "Jobs": "ao"}
        self.assertEqual({k: harness.signature_of(raw[k]) for k in expected if k in raw},
                         expected)

    def test_version_is_the_project_version(self):
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Version"), project_version())

    def test_drivers_include_dir(self):
        self.assertIn("dir", self.c.prop(ROOT_PATH, MANAGER, "Drivers"))

    def test_a_fresh_daemon_has_no_pools_and_no_jobs(self):
        props = self.c.props(ROOT_PATH, MANAGER)
        self.assertEqual(props["Pools"], [])
        self.assertEqual(props["Jobs"], [])
        self.assertEqual(self.c.managed_objects(), {})


class CreatePoolTest(harness.CisternTestCase):

    def test_created_pool_is_found_by_name_and_listed(self):
        pool = self.make_pool("p1")
        self.assertEqual(self.c.get_pool("p1"), pool.obj)
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [pool.obj])
        self.assertIn(POOL, self.c.managed_objects()[pool.obj])

    def test_pool_object_path_is_the_escaped_name(self):
        for name in ("p1", "1a", "a.b-c_d"):
            with self.subTest(name=name):
                self.assertEqual(self.make_pool(name).obj, harness.pool_path(name))

    def test_pool_properties_describe_the_pool(self):
        pool = self.make_pool("p1")
        props = self.c.props(pool.obj, POOL)
        self.assertEqual(props["Name"], "p1")
        self.assertEqual(props["Driver"], "dir")
        self.assertEqual(props["Config"]["path"], pool.dir)
        self.assertEqual(props["RevisionsToKeep"], 1)
        self.assertEqual(props["Volumes"], [])

    def test_revisions_to_keep_config_sets_the_pool_property(self):
        pool = self.make_pool("p1", revisions_to_keep=3)
        self.assertEqual(self.c.prop(pool.obj, POOL, "RevisionsToKeep"), 3)

    def test_valid_names_are_accepted(self):
        for name in VALID_NAMES:
            with self.subTest(name=name):
                pool = self.make_pool(name)
                self.assertEqual(self.c.prop(pool.obj, POOL, "Name"), name)

    def test_invalid_names_are_invalid_name(self):
        path = self.pool_dir("target")
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_fails(Error.InvalidName, self.c.create_pool, name, "dir",
                                  {"path": path})

    def test_duplicate_name_is_already_exists(self):
        self.make_pool("p1")
        self.assert_fails(Error.AlreadyExists, self.c.create_pool, "p1", "dir",
                          {"path": self.pool_dir("other")})

    def test_second_pool_on_the_same_path_is_refused(self):
        pool = self.make_pool("p1")
        self.assert_fails({Error.AlreadyExists, Error.Busy}, self.c.create_pool, "p2", "dir",
                          {"path": pool.dir})

    def test_unknown_driver_is_refused(self):
        self.assert_fails({Error.NotSupported, Error.InvalidArgument}, self.c.create_pool,
                          "p1", "nosuchdriver", {"path": self.pool_dir("p1")})


class PoolConfigValidationTest(harness.CisternTestCase):

    def check_config_refused(self, config, expected=Error.InvalidArgument):
        self.assert_fails(expected, self.c.create_pool, "p1", "dir", config)

    def test_missing_path_is_invalid(self):
        self.check_config_refused({})

    def test_relative_path_is_invalid(self):
        self.pool_dir("rel")
        self.check_config_refused({"path": "rel"})
        self.check_config_refused({"path": "pools/rel"})

    def test_missing_directory_is_refused(self):
        self.check_config_refused({"path": os.path.join(self.env.dirs["pools"], "absent")},
                                  {Error.NotFound, Error.InvalidArgument})

    def test_path_to_a_regular_file_is_invalid(self):
        path = os.path.join(self.env.dirs["pools"], "file")
        open(path, "w").close()
        self.check_config_refused({"path": path})

    def test_unknown_config_key_is_invalid(self):
        self.check_config_refused({"path": self.pool_dir("p1"), "bogus": True})

    def test_path_of_wrong_type_is_invalid(self):
        path = self.pool_dir("p1")
        self.check_config_refused({"path": dbus.ByteArray(path.encode())})

    def test_revisions_to_keep_of_wrong_type_is_invalid(self):
        for value in (dbus.Int32(2), dbus.UInt64(2), dbus.String("2")):
            with self.subTest(type=type(value).__name__):
                self.check_config_refused({"path": self.pool_dir("p1"),
                                           "revisions_to_keep": value})

    def test_unknown_reflink_mode_is_invalid(self):
        self.check_config_refused({"path": self.pool_dir("p1"), "reflink": "sometimes"})

    def test_reflink_of_wrong_type_is_invalid(self):
        self.check_config_refused({"path": self.pool_dir("p1"), "reflink": dbus.Boolean(True)})


class ReflinkTest(harness.CisternTestCase):

    def pool_on(self, fstype, reflink):
        fs = self.scratch_fs(fstype)
        return self.make_pool("p1", path=fs.path, reflink=reflink)

    def test_reflink_never_pool_is_not_copy_on_write(self):
        pool = self.make_pool("p1", reflink="never")
        self.assertIs(self.c.prop(pool.obj, POOL, "CopyOnWrite"), False)

    def test_reflink_auto_on_ext4_is_not_copy_on_write(self):
        pool = self.pool_on("ext4", "auto")
        self.assertIs(self.c.prop(pool.obj, POOL, "CopyOnWrite"), False)

    def test_reflink_auto_on_xfs_is_copy_on_write(self):
        pool = self.pool_on("xfs", "auto")
        self.assertIs(self.c.prop(pool.obj, POOL, "CopyOnWrite"), True)

    def test_reflink_require_on_xfs_is_copy_on_write(self):
        pool = self.pool_on("xfs", "require")
        self.assertIs(self.c.prop(pool.obj, POOL, "CopyOnWrite"), True)

    def test_reflink_require_without_reflink_support_is_refused(self):
        fs = self.scratch_fs("ext4")
        self.assert_fails({Error.NotSupported, Error.InvalidArgument}, self.c.create_pool,
                          "p1", "dir", {"path": fs.path, "reflink": "require"},
                          extra_dirs=[fs.path])


class RemovePoolTest(harness.CisternTestCase):

    def test_removed_pool_is_forgotten(self):
        self.make_pool("p1")
        self.c.remove_pool("p1")
        self.assert_fails(Error.NotFound, self.c.get_pool, "p1")
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [])
        self.assertEqual(self.c.managed_objects(), {})

    def test_removed_pool_keeps_its_data_on_disk(self):
        pool = self.make_pool("p1")
        self.make_volume(pool, "v1", 2 * MiB)
        before = harness.tree_listing(pool.dir)
        self.c.remove_pool("p1")
        after = harness.tree_listing(pool.dir)
        self.assertTrue(before)
        self.assertEqual(sorted(set(before) - set(after)), [], "files deleted by RemovePool")

    def test_removing_a_pool_removes_its_volume_objects(self):
        pool = self.make_pool("p1")
        volume = self.make_volume(pool, "v1")
        self.c.remove_pool("p1")
        self.assertNotIn(volume, self.c.managed_objects())
        self.assert_fails(Error.NotFound, self.c.get_volume, "p1", "v1")

    def test_unknown_pool_is_not_found(self):
        self.assert_fails(Error.NotFound, self.c.remove_pool, "nope")

    def test_unknown_option_is_invalid(self):
        self.make_pool("p1")
        self.assert_fails(Error.InvalidArgument, self.c.remove_pool, "p1", {"bogus": True})

    def test_pool_name_is_free_again_after_removal(self):
        self.make_pool("p1")
        self.c.remove_pool("p1")
        self.make_pool("p1", path=self.pool_dir("elsewhere"))


class AdoptionTest(harness.CisternTestCase):

    def populate(self):
        pool = self.make_pool("p1", revisions_to_keep=2)
        v1 = self.make_volume(pool, "v1", 2 * MiB, read_only=True, owner=USER_A.uid,
                              revisions_to_keep=4)
        v2 = self.make_volume(pool, "v2", MiB, preallocate=True, save_on_stop=False)
        v3 = self.make_volume(pool, "v3", MiB, save_on_stop=False, snap_on_start=True,
                              source=v1)
        return pool, [v1, v2, v3]

    def test_create_pool_on_a_removed_pools_path_adopts_its_volumes(self):
        pool, volumes = self.populate()
        before = {v: self.c.props(v, VOLUME) for v in volumes}
        self.c.remove_pool("p1")
        adopted = self.c.create_pool("p1", "dir", {"path": pool.dir})
        self.assertEqual(sorted(self.c.prop(adopted, POOL, "Volumes")), sorted(volumes))
        self.assertEqual({v: self.c.props(v, VOLUME) for v in volumes}, before)

    def test_adopted_volumes_are_found_by_name(self):
        pool, volumes = self.populate()
        self.c.remove_pool("p1")
        self.c.create_pool("p1", "dir", {"path": pool.dir})
        self.assertEqual([self.c.get_volume("p1", n) for n in ("v1", "v2", "v3")], volumes)


class GetTest(harness.CisternTestCase):

    def test_get_unknown_pool_is_not_found(self):
        self.assert_fails(Error.NotFound, self.c.get_pool, "nope")

    def test_get_volume_of_unknown_pool_is_not_found(self):
        self.assert_fails(Error.NotFound, self.c.get_volume, "nope", "v1")

    def test_get_unknown_volume_is_not_found(self):
        self.make_pool("p1")
        self.assert_fails(Error.NotFound, self.c.get_volume, "p1", "nope")

    def test_get_volume_finds_a_volume_by_name(self):
        pool = self.make_pool("p1")
        volume = self.make_volume(pool, "v1")
        self.assertEqual(self.c.get_volume("p1", "v1"), volume)
        self.assertEqual(volume, harness.volume_path("p1", "v1"))

    def test_get_with_an_invalid_name_fails_cleanly(self):
        self.assert_fails({Error.InvalidName, Error.NotFound}, self.c.get_pool, "../x")
        self.assert_fails({Error.InvalidName, Error.NotFound}, self.c.get_volume, "p1", "a/b")


class PoolSignalsTest(harness.CisternTestCase):

    def test_create_pool_emits_interfaces_added(self):
        rec = self.recorder()
        pool = self.make_pool("p1")
        signal = rec.wait_for(harness.interfaces_added(pool.obj, POOL))
        self.assertIsNotNone(signal, "no InterfacesAdded for the new pool")
        self.assertEqual(signal.args[1][POOL]["Name"], "p1")

    def test_create_pool_changes_manager_pools(self):
        self.c.prop(ROOT_PATH, MANAGER, "Pools")   # activate before listening
        rec = self.recorder()
        self.make_pool("p1")
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(ROOT_PATH, MANAGER,
                                                                      "Pools")))

    def test_remove_pool_emits_interfaces_removed_for_pool_and_volumes(self):
        pool = self.make_pool("p1")
        volume = self.make_volume(pool, "v1")
        rec = self.recorder()
        self.c.remove_pool("p1")
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(pool.obj, POOL)))
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(volume, VOLUME)))
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(ROOT_PATH, MANAGER,
                                                                      "Pools")))

    def test_failed_create_pool_emits_nothing(self):
        self.c.prop(ROOT_PATH, MANAGER, "Pools")
        rec = self.recorder()
        with self.assertRaises(dbus.exceptions.DBusException):
            self.c.create_pool("../x", "dir", {"path": self.pool_dir("p1")})
        rec.drain()
        self.assertEqual(rec.signals, [])


if __name__ == "__main__":
    harness.main()
