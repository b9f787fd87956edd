#!/usr/bin/python3
"""The runtime interfaces match the introspection XML shipped in dbus/ (no drift)."""

import os
import xml.etree.ElementTree as ET

import harness
from harness import MANAGER, POOL, ROOT_PATH, VOLUME, MiB


def xml_file(iface):
    return os.path.join(harness.SOURCE_DIR, "dbus", iface + ".xml")


def describe(interface):
    """Methods, properties and signals of an <interface>, without annotations."""
    def args(element, default_direction):
        return [(a.get("direction", default_direction), a.get("type"), a.get("name"))
                for a in element.findall("arg")]
    return {
        "methods": {m.get("name"): args(m, "in") for m in interface.findall("method")},
        "properties": {p.get("name"): (p.get("type"), p.get("access"))
                       for p in interface.findall("property")},
        "signals": {s.get("name"): [(t, n) for _, t, n in args(s, None)]
                    for s in interface.findall("signal")},
    }


def find_interface(xml_text, name):
    for interface in ET.fromstring(xml_text).iter("interface"):
        if interface.get("name") == name:
            return interface
    return None


class IntrospectionTest(harness.CisternTestCase):

    def setUp(self):
        super().setUp()
        pool = self.make_pool("p1")
        self.objects = {MANAGER: ROOT_PATH, POOL: pool.obj,
                        VOLUME: self.make_volume(pool, "v1", MiB)}

    def check_matches_xml(self, iface):
        path = xml_file(iface)
        self.assertTrue(os.path.exists(path), "%s is missing" % path)
        with open(path) as f:
            shipped = find_interface(f.read(), iface)
        self.assertIsNotNone(shipped, "%s does not declare %s" % (path, iface))
        runtime = find_interface(self.c.introspect(self.objects[iface]), iface)
        self.assertIsNotNone(runtime, "%s does not implement %s" % (self.objects[iface], iface))
        runtime, shipped = describe(runtime), describe(shipped)
        for part in ("methods", "properties", "signals"):
            with self.subTest(part=part):
                self.assertEqual(runtime[part], shipped[part],
                                 "%s %s: runtime (first) differs from %s"
                                 % (iface, part, os.path.basename(path)))

    def test_manager_matches_its_xml(self):
        self.check_matches_xml(MANAGER)

    def test_pool_matches_its_xml(self):
        self.check_matches_xml(POOL)

    def test_volume_matches_its_xml(self):
        self.check_matches_xml(VOLUME)

    def test_root_object_is_an_object_manager(self):
        runtime = self.c.introspect(ROOT_PATH)
        self.assertIsNotNone(find_interface(runtime, harness.OBJECT_MANAGER))


if __name__ == "__main__":
    harness.main()
