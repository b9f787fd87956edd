#!/usr/bin/python3
"""org.cistern.Cistern1.Pool of driver "dir": properties, CreateVolume, Configure, Refresh (SPEC §4.2)."""

import os

import dbus

import harness
from harness import HUGE_SIZE, INVALID_NAMES, POOL, VOLUME, Error, MiB, USER_A

POOL_PROPERTY_TYPES = {
    "Name": "s", "Driver": "s", "Config": "a{sv}", "Size": "t", "Usage": "t",
    "Available": "t", "UsageDetails": "a{sv}", "CopyOnWrite": "b", "RevisionsToKeep": "u",
    "Volumes": "ao",
}

BAD_SIZES = {"zero": 0, "511": 511, "1000 (not a multiple of 512)": 1000}


def write_file(path, size):
    with open(path, "wb") as f:
        f.write(b"\xa5" * size)
        f.flush()
        os.fsync(f.fileno())


class PoolPropertiesTest(harness.CisternTestCase):

    def pool_on_scratch(self):
        fs = self.scratch_fs("ext4", 64 * MiB)
        path = os.path.join(fs.path, "pool")
        os.mkdir(path)
        return fs, self.make_pool("p1", path=path)

    def test_properties_have_the_spec_types(self):
        pool = self.make_pool("p1")
        raw = self.c.raw_props(pool.obj, POOL)
        self.assertEqual({k: harness.signature_of(raw[k]) for k in POOL_PROPERTY_TYPES
                          if k in raw}, POOL_PROPERTY_TYPES)

    def test_sizes_are_nonzero_and_consistent(self):
        props = self.c.props(self.make_pool("p1").obj, POOL)
        self.assertGreater(props["Size"], 0)
        self.assertGreater(props["Usage"], 0)
        self.assertGreater(props["Available"], 0)
        self.assertLessEqual(props["Usage"] + props["Available"], props["Size"])

    def test_sizes_follow_statvfs_of_the_pool_path(self):
        fs, pool = self.pool_on_scratch()
        self.c.refresh_pool(pool.obj)
        props = self.c.props(pool.obj, POOL)
        st = os.statvfs(pool.dir)
        self.assertEqual(props["Size"], st.f_blocks * st.f_frsize)
        self.assertAlmostEqual(props["Available"], st.f_bavail * st.f_frsize, delta=MiB)
        self.assertAlmostEqual(props["Usage"], (st.f_blocks - st.f_bfree) * st.f_frsize,
                               delta=MiB)

    def test_usage_grows_after_a_preallocated_volume(self):
        fs, pool = self.pool_on_scratch()
        before = self.c.props(pool.obj, POOL)
        self.make_volume(pool, "v1", 16 * MiB, preallocate=True)
        after = self.c.props(pool.obj, POOL)
        self.assertGreaterEqual(after["Usage"] - before["Usage"], 16 * MiB)
        self.assertGreaterEqual(before["Available"] - after["Available"], 16 * MiB)

    def test_refresh_rereads_usage_and_emits_the_change(self):
        fs, pool = self.pool_on_scratch()
        before = self.c.prop(pool.obj, POOL, "Usage")
        write_file(os.path.join(fs.path, "outside-the-pool"), 8 * MiB)
        rec = self.recorder()
        self.c.refresh_pool(pool.obj)
        self.assertGreaterEqual(self.c.prop(pool.obj, POOL, "Usage") - before, 8 * MiB)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(pool.obj, POOL, "Usage")))

    def test_refresh_keeps_volumes(self):
        pool = self.make_pool("p1")
        volume = self.make_volume(pool, "v1")
        before = self.snapshot_state()
        self.c.refresh_pool(pool.obj)
        self.assertEqual(self.snapshot_state(), before)
        self.assertEqual(self.c.prop(pool.obj, POOL, "Volumes"), [volume])


class CreateVolumeTest(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")

    def props(self, volume):
        return self.c.props(volume, VOLUME)

    def test_defaults(self):
        volume = self.make_volume(self.pool, "v1", 4 * MiB)
        props = self.props(volume)
        expected = {"Name": "v1", "Pool": self.pool.obj, "Format": "raw", "Size": 4 * MiB,
                    "Owner": 0, "ReadOnly": False, "SaveOnStop": True, "SnapOnStart": False,
                    "Source": "/", "RevisionsToKeep": 1, "State": "stopped",
                    "Outdated": False, "Revisions": [], "Device": "", "Partitions": [],
                    "Mounts": []}
        self.assertEqual({k: props.get(k) for k in expected}, expected)
        self.assert_near_now_usec(props["Created"])

    def test_volume_is_listed_by_its_pool_and_the_object_manager(self):
        volume = self.make_volume(self.pool, "v1")
        self.assertEqual(self.c.prop(self.pool.obj, POOL, "Volumes"), [volume])
        self.assertIn(VOLUME, self.c.managed_objects()[volume])
        self.assertEqual(self.c.get_volume("p1", "v1"), volume)

    def test_volume_object_path_is_below_the_pool(self):
        for name in ("v1", "1v", "v.2-x_y"):
            with self.subTest(name=name):
                self.assertEqual(self.make_volume(self.pool, name),
                                 harness.volume_path("p1", name))

    def test_smallest_volume_is_512_bytes(self):
        self.assertEqual(self.props(self.make_volume(self.pool, "v1", 512))["Size"], 512)

    def test_revisions_to_keep_defaults_to_the_pools(self):
        pool = self.make_pool("p3", revisions_to_keep=3)
        self.assertEqual(self.props(self.make_volume(pool, "v1"))["RevisionsToKeep"], 3)

    def test_revisions_to_keep_option(self):
        volume = self.make_volume(self.pool, "v1", revisions_to_keep=5)
        self.assertEqual(self.props(volume)["RevisionsToKeep"], 5)

    def test_read_only_option(self):
        self.assertIs(self.props(self.make_volume(self.pool, "v1", read_only=True))["ReadOnly"],
                      True)

    def test_format_raw_option(self):
        self.assertEqual(self.props(self.make_volume(self.pool, "v1", format="raw"))["Format"],
                         "raw")

    def test_save_on_stop_false_makes_a_volatile_volume(self):
        props = self.props(self.make_volume(self.pool, "v1", save_on_stop=False))
        self.assertEqual((props["SaveOnStop"], props["SnapOnStart"], props["Source"]),
                         (False, False, "/"))

    def test_snap_on_start_with_a_source_of_the_same_pool(self):
        source = self.make_volume(self.pool, "base")
        props = self.props(self.make_volume(self.pool, "v1", save_on_stop=False,
                                            snap_on_start=True, source=source))
        self.assertEqual((props["SaveOnStop"], props["SnapOnStart"], props["Source"]),
                         (False, True, source))

    def test_owner_option_sets_the_owner(self):
        self.assertEqual(self.props(self.make_volume(self.pool, "v1", owner=USER_A.uid))["Owner"],
                         USER_A.uid)

    def test_preallocate_allocates_every_block(self):
        volume = self.make_volume(self.pool, "v1", 8 * MiB, preallocate=True)
        self.assertGreaterEqual(self.props(volume)["Usage"], 8 * MiB)

    def test_volume_without_preallocate_is_sparse(self):
        volume = self.make_volume(self.pool, "v1", 64 * MiB)
        self.assertLess(self.props(volume)["Usage"], 64 * MiB)

    def test_same_volume_name_in_two_pools(self):
        other = self.make_pool("p2")
        first = self.make_volume(self.pool, "v1")
        second = self.make_volume(other, "v1")
        self.assertNotEqual(first, second)
        self.assertEqual(self.props(second)["Pool"], other.obj)


class CreateVolumeErrorsTest(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")

    def create(self, name="v1", size=MiB, **options):
        return self.c.create_volume(self.pool.obj, name, size, options)

    def test_invalid_names_are_invalid_name(self):
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_fails(Error.InvalidName, self.create, name)

    def test_longest_valid_name_is_accepted(self):
        self.create("v" * 64)

    def test_duplicate_name_is_already_exists(self):
        self.create("v1")
        self.assert_fails(Error.AlreadyExists, self.create, "v1")

    def test_bad_sizes_are_invalid(self):
        for label, size in BAD_SIZES.items():
            with self.subTest(label):
                self.assert_fails(Error.InvalidArgument, self.create, "v1", size)

    def test_size_beyond_every_limit_is_refused(self):
        self.assert_fails({Error.InvalidArgument, Error.NoSpace}, self.create, "v1", HUGE_SIZE)

    def test_preallocation_beyond_free_space_is_no_space(self):
        fs = self.scratch_fs("ext4", 64 * MiB)
        pool = self.make_pool("small", path=fs.path)
        self.assert_fails(Error.NoSpace, self.c.create_volume, pool.obj, "v1", 256 * MiB,
                          {"preallocate": True}, extra_dirs=[fs.path])

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB, bogus=True)

    def test_options_of_wrong_type_are_invalid(self):
        source = self.create("base")
        wrong = {"preallocate": dbus.String("yes"), "read_only": dbus.UInt32(1),
                 "save_on_stop": dbus.String("false"), "revisions_to_keep": dbus.Int32(2),
                 "owner": dbus.String("0"), "format": dbus.Boolean(True),
                 "source": dbus.String(source)}
        for key, value in wrong.items():
            with self.subTest(key):
                self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB, **{key: value})

    def test_unknown_format_is_refused(self):
        self.assert_fails({Error.InvalidArgument, Error.NotSupported}, self.create, "v1", MiB,
                          format="vmdk")

    def test_snap_on_start_without_source_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB,
                          save_on_stop=False, snap_on_start=True)

    def test_source_without_snap_on_start_is_invalid(self):
        source = self.create("base")
        self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB, source=source)
        self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB, save_on_stop=False,
                          source=source)

    def test_snap_on_start_and_save_on_stop_together_are_invalid(self):
        source = self.create("base")
        self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB, save_on_stop=True,
                          snap_on_start=True, source=source)

    def test_source_in_another_pool_is_invalid(self):
        other = self.make_pool("p2")
        source = self.c.create_volume(other.obj, "base", MiB, {})
        self.assert_fails(Error.InvalidArgument, self.create, "v1", MiB, save_on_stop=False,
                          snap_on_start=True, source=source)

    def test_missing_source_is_refused(self):
        self.assert_fails({Error.NotFound, Error.InvalidArgument}, self.create, "v1", MiB,
                          save_on_stop=False, snap_on_start=True,
                          source=harness.volume_path("p1", "absent"))

    def test_source_that_is_not_a_volume_is_refused(self):
        self.assert_fails({Error.NotFound, Error.InvalidArgument}, self.create, "v1", MiB,
                          save_on_stop=False, snap_on_start=True, source=self.pool.obj)


class PoolConfigureTest(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")

    def test_revisions_to_keep_changes_and_is_announced(self):
        rec = self.recorder()
        self.c.configure_pool(self.pool.obj, {"revisions_to_keep": 4})
        self.assertEqual(self.c.prop(self.pool.obj, POOL, "RevisionsToKeep"), 4)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.pool.obj, POOL, "RevisionsToKeep", 4)))

    def test_new_volumes_inherit_the_configured_revisions_to_keep(self):
        self.c.configure_pool(self.pool.obj, {"revisions_to_keep": 4})
        volume = self.make_volume(self.pool, "v1")
        self.assertEqual(self.c.prop(volume, VOLUME, "RevisionsToKeep"), 4)

    def test_unknown_setting_is_invalid(self):
        for key, value in {"bogus": True, "path": "/tmp", "reflink": "never"}.items():
            with self.subTest(key):
                self.assert_fails(Error.InvalidArgument, self.c.configure_pool, self.pool.obj,
                                  {key: value})

    def test_setting_of_wrong_type_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.configure_pool, self.pool.obj,
                          {"revisions_to_keep": dbus.String("4")})

    def test_a_bad_setting_applies_none_of_the_others(self):
        self.assert_fails(Error.InvalidArgument, self.c.configure_pool, self.pool.obj,
                          {"revisions_to_keep": dbus.UInt32(4), "bogus": True})


class VolumeSignalsTest(harness.CisternTestCase):

    def test_create_volume_emits_interfaces_added_and_pool_volumes(self):
        pool = self.make_pool("p1")
        rec = self.recorder()
        volume = self.make_volume(pool, "v1")
        signal = rec.wait_for(harness.interfaces_added(volume, VOLUME))
        self.assertIsNotNone(signal, "no InterfacesAdded for the new volume")
        self.assertEqual(signal.args[1][VOLUME]["Name"], "v1")
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(pool.obj, POOL,
                                                                      "Volumes")))


if __name__ == "__main__":
    harness.main()
