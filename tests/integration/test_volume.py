#!/usr/bin/python3
"""org.cistern.Cistern1.Volume: properties, Remove, Resize, Configure, Info (SPEC §4.3)."""

import os
import stat

import dbus

import harness
from harness import HUGE_SIZE, POOL, VOLUME, Error, MiB

VOLUME_PROPERTY_TYPES = {
    "Name": "s", "Pool": "o", "Format": "s", "Size": "t", "Usage": "t", "Owner": "u",
    "ReadOnly": "b", "SaveOnStop": "b", "SnapOnStart": "b", "Source": "o",
    "RevisionsToKeep": "u", "State": "s", "Outdated": "b", "Revisions": "a(st)",
    "Created": "t", "Device": "s", "Partitions": "a(ustts)", "Mounts": "a(us)",
}

# An unusual size, so the image file is easy to tell apart from metadata.
ODD_SIZE = 3 * MiB + 3 * 512


def regular_file_sizes(root):
    sizes = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                sizes.append(st.st_size)
    return sizes


class VolumeTestCase(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")
        self.volume = self.make_volume(self.pool, "v1", ODD_SIZE)

    def props(self, volume=None):
        return self.c.props(volume or self.volume, VOLUME)

    def prop(self, name, volume=None):
        return self.c.prop(volume or self.volume, VOLUME, name)


class VolumePropertiesTest(VolumeTestCase):

    def test_properties_have_the_spec_types(self):
        raw = self.c.raw_props(self.volume, VOLUME)
        self.assertEqual({k: harness.signature_of(raw[k]) for k in VOLUME_PROPERTY_TYPES
                          if k in raw}, VOLUME_PROPERTY_TYPES)

    def test_size_is_the_size_of_the_image(self):
        self.assertEqual(self.prop("Size"), ODD_SIZE)
        self.assertIn(ODD_SIZE, regular_file_sizes(self.pool.dir),
                      "no raw image of the volume's size in the pool directory")

    def test_created_is_microseconds_since_the_epoch(self):
        self.assert_near_now_usec(self.prop("Created"))

    def test_a_stopped_volume_has_no_device_revisions_or_mounts(self):
        props = self.props()
        self.assertEqual((props["State"], props["Device"], props["Revisions"],
                          props["Partitions"], props["Mounts"]),
                         ("stopped", "", [], [], []))

    def test_get_all_and_managed_objects_agree(self):
        self.assertEqual(self.c.managed_objects()[self.volume][VOLUME], self.props())


class RemoveTest(VolumeTestCase):

    def test_removed_volume_is_gone(self):
        self.c.remove_volume(self.volume)
        self.assert_fails(Error.NotFound, self.c.get_volume, "p1", "v1")
        self.assertEqual(self.c.prop(self.pool.obj, POOL, "Volumes"), [])
        self.assertNotIn(self.volume, self.c.managed_objects())

    def test_removed_volume_leaves_no_image(self):
        self.c.remove_volume(self.volume)
        self.assertNotIn(ODD_SIZE, regular_file_sizes(self.pool.dir))

    def test_remove_emits_interfaces_removed_and_pool_volumes(self):
        rec = self.recorder()
        self.c.remove_volume(self.volume)
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(self.volume, VOLUME)))
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(self.pool.obj, POOL,
                                                                      "Volumes")))

    def test_name_is_free_again_after_remove(self):
        self.c.remove_volume(self.volume)
        self.assertEqual(self.make_volume(self.pool, "v1", MiB), self.volume)
        self.assertEqual(self.prop("Size"), MiB)

    def test_calls_on_a_removed_volume_fail(self):
        self.c.remove_volume(self.volume)
        self.assert_fails({Error.NotFound, Error.UnknownObject, Error.UnknownMethod},
                          self.c.resize, self.volume, 8 * MiB)

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.remove_volume, self.volume,
                          {"bogus": True})

    def test_removing_one_volume_keeps_the_others(self):
        other = self.make_volume(self.pool, "v2", MiB)
        before = self.props(other)
        self.c.remove_volume(self.volume)
        self.assertEqual(self.props(other), before)


class ResizeTest(VolumeTestCase):

    def test_grow(self):
        self.c.resize(self.volume, 8 * MiB)
        self.assertEqual(self.prop("Size"), 8 * MiB)
        self.assertEqual(self.c.info(self.volume)["virtual_size"], 8 * MiB)

    def test_grow_emits_size_change(self):
        rec = self.recorder()
        self.c.resize(self.volume, 8 * MiB)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.volume, VOLUME, "Size", 8 * MiB)))

    def test_shrink_without_allow_shrink_is_would_shrink(self):
        self.assert_fails(Error.WouldShrink, self.c.resize, self.volume, MiB)
        self.assert_fails(Error.WouldShrink, self.c.resize, self.volume, MiB,
                          {"allow_shrink": False})

    def test_shrink_with_allow_shrink(self):
        self.c.resize(self.volume, MiB, {"allow_shrink": True})
        self.assertEqual(self.prop("Size"), MiB)
        self.assertIn(MiB, regular_file_sizes(self.pool.dir))

    def test_sizes_that_are_not_multiples_of_512_are_invalid(self):
        for size in (8 * MiB + 1, 8 * MiB + 511, 1000):
            with self.subTest(size=size):
                self.assert_fails(Error.InvalidArgument, self.c.resize, self.volume, size,
                                  {"allow_shrink": True})

    def test_size_zero_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.resize, self.volume, 0,
                          {"allow_shrink": True})

    def test_size_beyond_every_limit_is_refused(self):
        self.assert_fails({Error.InvalidArgument, Error.NoSpace}, self.c.resize, self.volume,
                          HUGE_SIZE)

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.resize, self.volume, 8 * MiB,
                          {"bogus": True})

    def test_allow_shrink_of_wrong_type_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.resize, self.volume, MiB,
                          {"allow_shrink": dbus.String("true")})


class ConfigureTest(VolumeTestCase):

    def configure(self, **settings):
        self.c.configure_volume(self.volume, settings)

    def test_read_only_changes_and_is_announced(self):
        rec = self.recorder()
        self.configure(read_only=True)
        self.assertIs(self.prop("ReadOnly"), True)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.volume, VOLUME, "ReadOnly", True)))
        self.configure(read_only=False)
        self.assertIs(self.prop("ReadOnly"), False)

    def test_revisions_to_keep_changes_and_is_announced(self):
        rec = self.recorder()
        self.configure(revisions_to_keep=7)
        self.assertEqual(self.prop("RevisionsToKeep"), 7)
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            self.volume, VOLUME, "RevisionsToKeep", 7)))

    def test_stopped_volume_becomes_snap_on_start(self):
        source = self.make_volume(self.pool, "base")
        self.configure(save_on_stop=False, snap_on_start=True, source=source)
        props = self.props()
        self.assertEqual((props["SaveOnStop"], props["SnapOnStart"], props["Source"]),
                         (False, True, source))

    def test_snap_on_start_volume_becomes_save_on_stop_again(self):
        source = self.make_volume(self.pool, "base")
        self.configure(save_on_stop=False, snap_on_start=True, source=source)
        self.configure(snap_on_start=False, save_on_stop=True, source="/")
        props = self.props()
        self.assertEqual((props["SaveOnStop"], props["SnapOnStart"], props["Source"]),
                         (True, False, "/"))

    def test_volume_becomes_volatile(self):
        self.configure(save_on_stop=False)
        self.assertIs(self.prop("SaveOnStop"), False)

    def test_snap_on_start_without_source_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.configure, save_on_stop=False,
                          snap_on_start=True)

    def test_snap_on_start_while_save_on_stop_is_invalid(self):
        source = self.make_volume(self.pool, "base")
        self.assert_fails(Error.InvalidArgument, self.configure, snap_on_start=True,
                          source=source)

    def test_source_in_another_pool_is_invalid(self):
        other = self.make_pool("p2")
        source = self.c.create_volume(other.obj, "base", MiB, {})
        self.assert_fails(Error.InvalidArgument, self.configure, save_on_stop=False,
                          snap_on_start=True, source=source)

    def test_unknown_setting_is_invalid(self):
        for key, value in {"bogus": True, "owner": dbus.UInt32(0), "format": "raw"}.items():
            with self.subTest(key):
                self.assert_fails(Error.InvalidArgument, self.c.configure_volume, self.volume,
                                  {key: value})

    def test_settings_of_wrong_type_are_invalid(self):
        wrong = {"read_only": dbus.String("yes"), "revisions_to_keep": dbus.Int64(3),
                 "save_on_stop": dbus.UInt32(0), "source": dbus.String("/")}
        for key, value in wrong.items():
            with self.subTest(key):
                self.assert_fails(Error.InvalidArgument, self.c.configure_volume, self.volume,
                                  {key: value})

    def test_a_bad_setting_applies_none_of_the_others(self):
        self.assert_fails(Error.InvalidArgument, self.c.configure_volume, self.volume,
                          {"read_only": dbus.Boolean(True), "bogus": True})


class InfoTest(VolumeTestCase):

    def test_info_reports_format_and_sizes(self):
        info = self.c.info(self.volume)
        self.assertEqual(info["format"], "raw")
        self.assertEqual(info["virtual_size"], ODD_SIZE)
        self.assertLess(info["actual_size"], ODD_SIZE)   # sparse

    def test_info_value_types(self):
        raw = self.c.call(self.volume, VOLUME, "Info", "a{sv}", harness.variant_dict({}))
        self.assertEqual({k: harness.signature_of(raw[k])
                          for k in ("format", "virtual_size", "actual_size")},
                         {"format": "s", "virtual_size": "t", "actual_size": "t"})

    def test_actual_size_of_a_preallocated_volume(self):
        volume = self.make_volume(self.pool, "full", 4 * MiB, preallocate=True)
        self.assertGreaterEqual(self.c.info(volume)["actual_size"], 4 * MiB)

    def test_unknown_option_is_invalid(self):
        self.assert_fails(Error.InvalidArgument, self.c.info, self.volume, {"bogus": True})


if __name__ == "__main__":
    harness.main()
