#!/usr/bin/python3
"""org.freedesktop.DBus.ObjectManager and the signals of SPEC §3.

GetManagedObjects must hold every pool and volume with its interface's full
property set (the same as GetAll on the object), and a client that starts from
GetManagedObjects and then follows InterfacesAdded, InterfacesRemoved and
PropertiesChanged must always see what GetManagedObjects says.
"""

import signal

import dbus

import harness
from harness import (MANAGER, OBJECT_MANAGER, POOL, PROPERTIES, ROOT_PATH, USER_A, VOLUME,
                     Error, MiB, stable_pool_props)

CISTERN_INTERFACES = (POOL, VOLUME)


def cistern_view(objects):
    """{path: {interface: stable properties}} for the Pool and Volume interfaces only."""
    view = {}
    for path, interfaces in objects.items():
        for iface, props in interfaces.items():
            if iface in CISTERN_INTERFACES:
                view.setdefault(path, {})[iface] = \
                    stable_pool_props(props) if iface == POOL else dict(props)
    return harness.stable_objects(view)


class Mirror:
    """A client-side copy of the object tree, kept up to date by signals only."""

    def __init__(self, test):
        self.test = test
        self.c = test.c
        self.rec = test.recorder()
        self.objects = {p: {i: dict(v) for i, v in ifaces.items() if i in CISTERN_INTERFACES}
                        for p, ifaces in self.c.managed_objects().items()}
        self.seen = 0

    def apply(self):
        """Apply the signals recorded since the last call; returns them."""
        self.rec.drain()
        new = self.rec.signals[self.seen:]
        self.seen = len(self.rec.signals)
        for s in new:
            if s.interface == OBJECT_MANAGER and s.member == "InterfacesAdded":
                path, interfaces = s.args
                for iface, props in interfaces.items():
                    if iface in CISTERN_INTERFACES:
                        self.objects.setdefault(path, {})[iface] = dict(props)
            elif s.interface == OBJECT_MANAGER and s.member == "InterfacesRemoved":
                path, interfaces = s.args
                for iface in interfaces:
                    self.objects.get(path, {}).pop(iface, None)
                if path in self.objects and not self.objects[path]:
                    del self.objects[path]
            elif s.interface == PROPERTIES and s.member == "PropertiesChanged":
                iface, changed, invalidated = s.args
                if iface not in CISTERN_INTERFACES:
                    continue
                self.test.assertIn(s.path, self.objects,
                                   "PropertiesChanged for an object never announced")
                self.objects[s.path][iface].update(changed)
                for prop in invalidated:
                    self.objects[s.path][iface][prop] = self.c.prop(s.path, iface, prop)
        return new

    def check(self, what):
        self.apply()
        self.test.assertEqual(cistern_view(self.objects), cistern_view(self.c.managed_objects()),
                              "after %s, the signals tell another story than "
                              "GetManagedObjects" % what)


class ObjectManagerTestCase(harness.CisternTestCase):

    def populate(self):
        """Four pools, one empty, one with a name that needs escaping, volumes of every kind."""
        p1 = self.make_pool("p1", revisions_to_keep=2)
        p2 = self.make_pool("p2", reflink="never")
        self.make_pool("empty")
        odd = self.make_pool("9.odd-name_x")
        self.make_volume(odd, "0.v-x_y", MiB)
        base = self.make_volume(p1, "base", 2 * MiB, owner=USER_A.uid, read_only=True)
        self.make_volume(p1, "snap", MiB, save_on_stop=False, snap_on_start=True, source=base)
        self.make_volume(p1, "volatile", MiB, save_on_stop=False, revisions_to_keep=0)
        self.make_volume(p2, "full", MiB, preallocate=True)
        self.make_volume(p2, "x" * 64, 512)

    def assert_managed_objects_match_get_all(self):
        objects = self.c.managed_objects()
        pools = self.c.prop(ROOT_PATH, MANAGER, "Pools")
        volumes = [v for p in pools for v in self.c.prop(p, POOL, "Volumes")]
        self.assertEqual(sorted(objects), sorted(pools + volumes),
                         "GetManagedObjects does not hold exactly the pools and volumes")
        for path in pools:
            with self.subTest(pool=path):
                get_all = self.c.props(path, POOL)
                self.assertEqual(sorted(objects[path][POOL]), sorted(get_all),
                                 "GetManagedObjects and GetAll list other properties")
                self.assertEqual(stable_pool_props(objects[path][POOL]),
                                 stable_pool_props(get_all))
        for path in volumes:
            with self.subTest(volume=path):
                self.assertEqual(objects[path][VOLUME], self.c.props(path, VOLUME))
        raw = self.c.call(ROOT_PATH, OBJECT_MANAGER, "GetManagedObjects", "")
        for path in pools + volumes:
            iface = POOL if path in pools else VOLUME
            with self.subTest(types=path):
                get_all = self.c.raw_props(path, iface)
                self.assertEqual({k: harness.signature_of(v) for k, v in raw[path][iface].items()},
                                 {k: harness.signature_of(v) for k, v in get_all.items()})
        return objects


class GetManagedObjectsTest(ObjectManagerTestCase):

    def test_every_pool_and_volume_with_its_full_property_set(self):
        self.populate()
        objects = self.assert_managed_objects_match_get_all()
        self.assertEqual(len(objects), 4 + 6)

    def test_after_a_restart_from_disk(self):
        self.populate()
        self.env.kill_daemon(signal.SIGKILL)
        self.assert_managed_objects_match_get_all()

    def test_after_removals_and_adoption(self):
        self.populate()
        self.c.remove_volume(self.c.get_volume("p1", "volatile"))
        self.c.remove_pool("p2")
        self.assert_managed_objects_match_get_all()
        self.c.create_pool("p2", "dir", {"path": self.pool_dir("p2")})
        self.assert_managed_objects_match_get_all()


class ObjectSignalsTest(ObjectManagerTestCase):

    def test_interfaces_added_for_a_volume_carries_all_its_properties(self):
        pool = self.make_pool("p1")
        base = self.make_volume(pool, "base")
        rec = self.recorder()
        volume = self.make_volume(pool, "v1", 3 * MiB, owner=USER_A.uid, read_only=True,
                                  save_on_stop=False, snap_on_start=True, source=base,
                                  revisions_to_keep=3)
        signal_ = rec.wait_for(harness.interfaces_added(volume, VOLUME))
        self.assertIsNotNone(signal_, "no InterfacesAdded for the new volume")
        self.assertEqual(signal_.args[1][VOLUME], self.c.props(volume, VOLUME))

    def test_interfaces_added_for_a_pool_carries_all_its_properties(self):
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        rec = self.recorder()
        pool = self.make_pool("p1", revisions_to_keep=4)
        signal_ = rec.wait_for(harness.interfaces_added(pool.obj, POOL))
        self.assertIsNotNone(signal_, "no InterfacesAdded for the new pool")
        announced, get_all = signal_.args[1][POOL], self.c.props(pool.obj, POOL)
        self.assertEqual(sorted(announced), sorted(get_all))
        self.assertEqual(stable_pool_props(announced), stable_pool_props(get_all))

    def test_adopting_a_pool_announces_each_of_its_volumes(self):
        pool = self.make_pool("p1")
        volumes = [self.make_volume(pool, n, MiB) for n in ("a", "b", "c")]
        self.c.remove_pool("p1")
        rec = self.recorder()
        self.c.create_pool("p1", "dir", {"path": pool.dir})
        for volume in volumes:
            with self.subTest(volume):
                signal_ = rec.wait_for(harness.interfaces_added(volume, VOLUME))
                self.assertIsNotNone(signal_, "no InterfacesAdded for an adopted volume")
                self.assertEqual(signal_.args[1][VOLUME], self.c.props(volume, VOLUME))

    def test_remove_pool_announces_the_removal_of_each_volume(self):
        pool = self.make_pool("p1")
        volumes = [self.make_volume(pool, n, MiB) for n in ("a", "b", "c")]
        rec = self.recorder()
        self.c.remove_pool("p1")
        for volume in volumes:
            with self.subTest(volume):
                self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(volume, VOLUME)))
        self.assertIsNotNone(rec.wait_for(harness.interfaces_removed(pool.obj, POOL)))

    def test_shrink_announces_the_new_size(self):
        volume = self.make_volume(self.make_pool("p1"), "v1", 4 * MiB)
        rec = self.recorder()
        self.c.resize(volume, MiB, {"allow_shrink": True})
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(volume, VOLUME, "Size",
                                                                      MiB)))

    def test_configure_announces_life_cycle_changes(self):
        pool = self.make_pool("p1")
        base = self.make_volume(pool, "base")
        volume = self.make_volume(pool, "v1")
        rec = self.recorder()
        self.c.configure_volume(volume, {"save_on_stop": False, "snap_on_start": True,
                                         "source": base})
        for prop, value in (("SaveOnStop", False), ("SnapOnStart", True), ("Source", base)):
            with self.subTest(prop):
                self.assertIsNotNone(rec.wait_for(harness.properties_changed(
                    volume, VOLUME, prop, value)), "no PropertiesChanged for %s" % prop)

    def test_pool_configure_announces_revisions_to_keep_and_config(self):
        pool = self.make_pool("p1")
        rec = self.recorder()
        self.c.configure_pool(pool.obj, {"revisions_to_keep": 6})
        self.assertIsNotNone(rec.wait_for(harness.properties_changed(
            pool.obj, POOL, "RevisionsToKeep", 6)))
        changed = rec.wait_for(harness.properties_changed(pool.obj, POOL, "Config"))
        self.assertIsNotNone(changed, "Config holds revisions_to_keep but was not announced")
        config = changed.args[1].get("Config") or self.c.prop(pool.obj, POOL, "Config")
        self.assertEqual(config["revisions_to_keep"], 6)

    def test_failed_and_denied_calls_emit_nothing(self):
        pool = self.make_pool("p1")
        volume = self.make_volume(pool, "v1", 2 * MiB)
        rec = self.recorder()
        c = self.c
        failing = [
            lambda: c.create_volume(pool.obj, "v1", MiB, {}),
            lambda: c.create_volume(pool.obj, "../x", MiB, {}),
            lambda: c.create_volume(pool.obj, "v2", 511, {}),
            lambda: c.resize(volume, MiB),
            lambda: c.resize(volume, 8 * MiB, {"bogus": True}),
            lambda: c.configure_volume(volume, {"read_only": True, "bogus": True}),
            lambda: c.configure_volume(volume, {"revisions_to_keep": dbus.Int32(3)}),
            lambda: c.configure_pool(pool.obj, {"revisions_to_keep": dbus.String("3")}),
            lambda: c.remove_volume(volume, {"bogus": True}),
            lambda: c.remove_pool("p1", {"bogus": True}),
            lambda: c.create_pool("p1", "dir", {"path": self.pool_dir("other")}),
        ]
        for fn in failing:
            with self.assertRaises(dbus.exceptions.DBusException):
                fn()
        for fn in (lambda c: c.resize(volume, 8 * MiB), lambda c: c.remove_volume(volume),
                   lambda c: c.configure_pool(pool.obj, {"revisions_to_keep": 3})):
            self.assertEqual(harness.as_user(USER_A, fn).error, Error.NotAuthorized)
        rec.drain()
        self.assertEqual([s for s in rec.signals if s.interface != "org.freedesktop.DBus"], [])


class SignalMirrorTest(ObjectManagerTestCase):
    """A client that follows the signals always agrees with GetManagedObjects."""

    def test_a_mirror_built_from_signals_stays_exact(self):
        self.c.prop(ROOT_PATH, MANAGER, "Version")
        mirror = Mirror(self)
        p1 = self.make_pool("p1")
        mirror.check("CreatePool")
        base = self.make_volume(p1, "base", MiB)
        volume = self.make_volume(p1, "v1", 2 * MiB, read_only=True)
        mirror.check("CreateVolume")
        self.c.resize(volume, 4 * MiB)
        mirror.check("Resize")
        self.c.resize(volume, MiB, {"allow_shrink": True})
        mirror.check("Resize with allow_shrink")
        self.c.configure_volume(volume, {"read_only": False, "revisions_to_keep": 5})
        mirror.check("Configure")
        self.c.configure_volume(volume, {"save_on_stop": False, "snap_on_start": True,
                                         "source": base})
        mirror.check("Configure of the life cycle")
        self.c.configure_pool(p1.obj, {"revisions_to_keep": 7})
        mirror.check("Pool.Configure")
        self.c.refresh_pool(p1.obj)
        mirror.check("Refresh")
        self.c.remove_volume(volume)
        mirror.check("Remove")
        self.c.remove_pool("p1")
        mirror.check("RemovePool")
        self.c.create_pool("p1", "dir", {"path": p1.dir})
        mirror.check("CreatePool adopting a pool")


if __name__ == "__main__":
    harness.main()
