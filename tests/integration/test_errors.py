#!/usr/bin/python3
"""Every method × every kind of bad input: a typed error, and nothing changed (SPEC §4, §8).

Method by method tests live in test_manager/test_pool/test_volume; this file
walks one table of all methods so that none is forgotten: unknown option keys,
option values of the wrong type, duplicate keys, missing objects, invalid
names and sizes.  assert_fails compares the whole state (GetManagedObjects and
the files of the state and pool directories) before and after each call.
"""

import dbus
from gi.repository import Gio, GLib

import harness
from harness import (HUGE_SIZE, INVALID_NAMES, MANAGER, POOL, ROOT_PATH, VOLUME, Error, MiB,
                     pool_path, volume_path)

# The known keys of every method's a{sv} (SPEC §4) and their D-Bus types.
KNOWN_KEYS = {
    "CreatePool": {"path": "s", "reflink": "s", "revisions_to_keep": "u"},
    "RemovePool": {},
    "CreateVolume": {"format": "s", "save_on_stop": "b", "snap_on_start": "b", "source": "o",
                     "revisions_to_keep": "u", "read_only": "b", "preallocate": "b",
                     "owner": "u"},
    "Pool.Configure": {"revisions_to_keep": "u"},
    "Remove": {},
    "Resize": {"allow_shrink": "b"},
    "Volume.Configure": {"read_only": "b", "revisions_to_keep": "u", "save_on_stop": "b",
                         "snap_on_start": "b", "source": "o"},
    "Info": {},
}

# For each D-Bus type, values of other types that must be refused for it; the last one
# is of the right type but wrapped in a second variant ("v" inside the "v").
WRONG_VALUES = {
    "s": [dbus.UInt32(1), dbus.ObjectPath("/x"), dbus.Array(["x"], signature="s"),
          dbus.String("raw", variant_level=2)],
    "u": [dbus.String("1"), dbus.Int32(1), dbus.UInt64(1), dbus.Boolean(True),
          dbus.UInt32(1, variant_level=2)],
    "b": [dbus.String("true"), dbus.UInt32(1), dbus.Int32(0),
          dbus.Boolean(True, variant_level=2)],
    "o": [dbus.String("/"), dbus.Array([dbus.ObjectPath("/")], signature="o"),
          dbus.ObjectPath("/", variant_level=2)],
}


class EveryMethodTestCase(harness.CisternTestCase):
    """Pool p1 with volumes v1 (the target of volume methods) and base."""

    def setUp(self):
        super().setUp()
        self.pool = self.make_pool("p1")
        self.spare = self.pool_dir("spare")
        self.base = self.make_volume(self.pool, "base", MiB)
        self.v1 = self.make_volume(self.pool, "v1", 2 * MiB)

    def calls(self):
        """Method → fn(options): a call that succeeds with options = {}."""
        c, pool, v1, spare = self.c, self.pool.obj, self.v1, self.spare
        return {
            "CreatePool": lambda o: c.create_pool("p2", "dir", dict({"path": spare}, **o)),
            "RemovePool": lambda o: c.remove_pool("p1", o),
            "CreateVolume": lambda o: c.create_volume(pool, "new", MiB, o),
            "Pool.Configure": lambda o: c.configure_pool(pool, dict({"revisions_to_keep": 3},
                                                                      **o)),
            "Remove": lambda o: c.remove_volume(v1, o),
            "Resize": lambda o: c.resize(v1, 4 * MiB, o),
            "Volume.Configure": lambda o: c.configure_volume(v1, dict({"read_only": True}, **o)),
            "Info": lambda o: c.info(v1, o),
        }


class OptionErrorsTest(EveryMethodTestCase):

    def test_unknown_option_keys_are_invalid_argument(self):
        for method, call in self.calls().items():
            # "bogus", a key of another method, and a known key in the wrong case.
            foreign = "preallocate" if method != "CreateVolume" else "allow_shrink"
            for key in ("bogus", foreign, "Read_Only", ""):
                with self.subTest(method=method, key=key):
                    self.assert_fails(Error.InvalidArgument, call, {key: dbus.Boolean(True)})

    def test_option_values_of_the_wrong_type_are_invalid_argument(self):
        for method, call in self.calls().items():
            for key, sig in KNOWN_KEYS[method].items():
                for value in WRONG_VALUES[sig]:
                    with self.subTest(method=method, key=key, value=value):
                        self.assert_fails(Error.InvalidArgument, call, {key: value})

    def test_duplicate_option_keys_are_invalid_argument(self):
        """a{sv} may carry a key twice on the wire; that is refused, not "last wins"."""
        conn = Gio.DBusConnection.new_for_address_sync(
            self.env.address, Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
        self.addCleanup(conn.close_sync, None)

        def options(*pairs):
            builder = GLib.VariantBuilder.new(GLib.VariantType.new("a{sv}"))
            for key, value in pairs:
                builder.add_value(GLib.Variant.new_dict_entry(GLib.Variant("s", key),
                                                              GLib.Variant("v", value)))
            return builder.end()

        def call(path, iface, method, *args):
            try:
                conn.call_sync(harness.BUS_NAME, path, iface, method, GLib.Variant.new_tuple(*args),
                               None, Gio.DBusCallFlags.NONE, 30000, None)
            except GLib.Error as e:
                raise dbus.exceptions.DBusException(e.message,
                                                    name=Gio.DBusError.get_remote_error(e))

        cases = {
            "Volume.Configure": (self.v1, VOLUME, "Configure", options(
                ("read_only", GLib.Variant("b", True)), ("read_only", GLib.Variant("b", False)))),
            "Pool.Configure": (self.pool.obj, POOL, "Configure", options(
                ("revisions_to_keep", GLib.Variant("u", 3)),
                ("revisions_to_keep", GLib.Variant("u", 4)))),
            "CreateVolume": (self.pool.obj, POOL, "CreateVolume", GLib.Variant("s", "new"),
                             GLib.Variant("t", MiB), options(
                                 ("read_only", GLib.Variant("b", True)),
                                 ("read_only", GLib.Variant("b", True)))),
            "Resize": (self.v1, VOLUME, "Resize", GLib.Variant("t", 4 * MiB), options(
                ("allow_shrink", GLib.Variant("b", True)),
                ("allow_shrink", GLib.Variant("b", True)))),
            "CreatePool": (ROOT_PATH, MANAGER, "CreatePool", GLib.Variant("s", "p2"),
                           GLib.Variant("s", "dir"), options(
                               ("path", GLib.Variant("s", self.spare)),
                               ("path", GLib.Variant("s", self.spare)))),
        }
        for method, (path, iface, member, *args) in cases.items():
            with self.subTest(method):
                self.assert_fails(Error.InvalidArgument, call, path, iface, member, *args)

    def test_every_method_still_succeeds_after_the_errors(self):
        """The refused calls above differ from these only in their options."""
        for method, call in self.calls().items():
            with self.subTest(method):
                self.assert_fails(Error.InvalidArgument, call, {"bogus": dbus.Boolean(True)})
        calls = self.calls()
        for method in ("Info", "Resize", "Volume.Configure", "Pool.Configure", "CreateVolume",
                       "Remove", "CreatePool", "RemovePool"):
            with self.subTest(method):
                calls[method]({})
        self.assertEqual(self.c.prop(ROOT_PATH, MANAGER, "Pools"), [pool_path("p2")])


class MissingObjectTest(EveryMethodTestCase):
    """Lookups answer NotFound; calls on objects that do not exist, UnknownObject."""

    def test_lookups_and_remove_pool_of_missing_objects_are_not_found(self):
        c = self.c
        cases = {
            "GetPool": lambda: c.get_pool("nope"),
            "GetVolume of a missing volume": lambda: c.get_volume("p1", "nope"),
            "GetVolume in a missing pool": lambda: c.get_volume("nope", "v1"),
            "RemovePool": lambda: c.remove_pool("nope"),
        }
        for label, fn in cases.items():
            with self.subTest(label):
                self.assert_fails(Error.NotFound, fn)

    def missing_pool_calls(self, pool):
        c = self.c
        return {
            "CreateVolume": lambda: c.create_volume(pool, "new", MiB, {}),
            "Pool.Configure": lambda: c.configure_pool(pool, {"revisions_to_keep": 3}),
            "Refresh": lambda: c.refresh_pool(pool),
        }

    def missing_volume_calls(self, volume):
        c = self.c
        return {
            "Remove": lambda: c.remove_volume(volume),
            "Resize": lambda: c.resize(volume, 4 * MiB),
            "Volume.Configure": lambda: c.configure_volume(volume, {"read_only": True}),
            "Info": lambda: c.info(volume),
        }

    def check_unknown_object(self, calls):
        for method, fn in calls.items():
            with self.subTest(method):
                self.assert_fails(Error.UnknownObject, fn)

    def test_pool_methods_on_a_pool_that_never_existed(self):
        self.check_unknown_object(self.missing_pool_calls(pool_path("nope")))

    def test_pool_methods_on_a_removed_pool(self):
        self.c.remove_pool("p1")
        self.check_unknown_object(self.missing_pool_calls(self.pool.obj))

    def test_volume_methods_on_a_volume_that_never_existed(self):
        self.check_unknown_object(self.missing_volume_calls(volume_path("p1", "nope")))

    def test_volume_methods_on_a_volume_of_a_missing_pool(self):
        self.check_unknown_object(self.missing_volume_calls(volume_path("nope", "v1")))

    def test_volume_methods_on_a_removed_volume(self):
        self.c.remove_volume(self.v1)
        self.check_unknown_object(self.missing_volume_calls(self.v1))

    def test_volume_methods_on_a_volume_of_a_removed_pool(self):
        self.c.remove_pool("p1")
        self.check_unknown_object(self.missing_volume_calls(self.v1))


class NameAndSizeErrorsTest(EveryMethodTestCase):

    def test_lookups_and_remove_pool_with_invalid_names_change_nothing(self):
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_fails({Error.InvalidName, Error.NotFound}, self.c.get_pool, name)
                self.assert_fails({Error.InvalidName, Error.NotFound}, self.c.get_volume,
                                  "p1", name)
                self.assert_fails({Error.InvalidName, Error.NotFound}, self.c.get_volume,
                                  name, "v1")
                self.assert_fails({Error.InvalidName, Error.NotFound}, self.c.remove_pool, name)

    def test_invalid_pool_names_are_refused_even_with_a_valid_config(self):
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_fails(Error.InvalidName, self.c.create_pool, name, "dir",
                                  {"path": self.spare, "revisions_to_keep": 2})

    def test_invalid_volume_names_are_refused_with_every_option(self):
        for label, name in INVALID_NAMES.items():
            with self.subTest(label):
                self.assert_fails(Error.InvalidName, self.c.create_volume, self.pool.obj, name,
                                  MiB, {"preallocate": True, "read_only": True,
                                        "revisions_to_keep": 2})

    def test_bad_sizes_are_refused_by_create_volume_and_resize(self):
        sizes = {"0": 0, "511": 511, "1000": 1000, "2^64-512": HUGE_SIZE}
        for label, size in sizes.items():
            expected = {Error.InvalidArgument, Error.NoSpace} if size == HUGE_SIZE \
                else Error.InvalidArgument
            with self.subTest("CreateVolume", size=label):
                self.assert_fails(expected, self.c.create_volume, self.pool.obj, "new", size, {})
            with self.subTest("CreateVolume preallocated", size=label):
                self.assert_fails(expected, self.c.create_volume, self.pool.obj, "new", size,
                                  {"preallocate": True})
            for allow_shrink in (False, True):
                with self.subTest("Resize", size=label, allow_shrink=allow_shrink):
                    self.assert_fails(expected, self.c.resize, self.v1, size,
                                      {"allow_shrink": allow_shrink})

    def test_revisions_to_keep_beyond_the_limit_is_refused_everywhere(self):
        too_many = dbus.UInt32(2 ** 32 - 1)
        expected = {Error.LimitsExceeded, Error.InvalidArgument}
        cases = {
            "CreatePool": lambda: self.c.create_pool("p2", "dir", {
                "path": self.spare, "revisions_to_keep": too_many}),
            "CreateVolume": lambda: self.c.create_volume(self.pool.obj, "new", MiB, {
                "revisions_to_keep": too_many}),
            "Pool.Configure": lambda: self.c.configure_pool(self.pool.obj, {
                "revisions_to_keep": too_many}),
            "Volume.Configure": lambda: self.c.configure_volume(self.v1, {
                "revisions_to_keep": too_many}),
        }
        for method, fn in cases.items():
            with self.subTest(method):
                self.assert_fails(expected, fn)


if __name__ == "__main__":
    harness.main()
