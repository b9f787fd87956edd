#!/usr/bin/python3
"""cistern's udev rules (udev/*.rules) under a real systemd-udevd (SPEC §4.3 Attach, §6).

The tests do by hand what cisternd does at Attach: attach an image file to a loop device
(LOOP_CONFIGURE through losetup, no partition scan), write the record
<runtime dir>/devices/<diskseq> naming a pool and a volume, ask for a "change" uevent,
add partitions with BLKPG (partx). The harness's udevd runs the host's rules and ours,
copied from the source tree, and sees the runtime directory at /run/cistern.

The images hold an ext4 filesystem with a label, or a GPT whose first partition does: what
udev would normally turn into ID_FS_* properties and /dev/disk/by-* links, so its absence
shows the guest's data was not probed.  UUIDs and labels are fresh for every image, and a
device's links are read from our udevd's database: /dev is the host's, and may hold links
that another udevd left for an earlier user of the same loop device.
"""

import os
import re
import shutil
import subprocess
import unittest
import uuid

import harness
from harness import MiB

POOL = "tank.a-1"
VOLUME = "vm_0.disk"
PART_OFFSET = MiB
PART_SIZE = 16 * MiB


class Filesystem:
    """What mkfs wrote into an image: fresh names nobody else can have made links for."""

    def __init__(self):
        self.uuid = str(uuid.uuid4())
        self.label = "guest-" + uuid.uuid4().hex[:8]

    def links(self):
        return ["/dev/disk/by-uuid/" + self.uuid, "/dev/disk/by-label/" + self.label]


class UdevRulesTest(harness.HarnessTestCase):

    needs_udev = True

    @classmethod
    def setUpClass(cls):
        if not os.path.exists("/dev/loop-control"):
            raise unittest.SkipTest("needs loop devices (/dev/loop-control)")
        for tool in ("losetup", "partx", "mkfs.ext4"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is not installed" % tool)
        super().setUpClass()

    # -- building blocks --

    def image(self, name, size=32 * MiB):
        path = os.path.join(self.env.dirs["scratch"], name)
        with open(path, "wb") as f:
            f.truncate(size)
        self.addCleanup(os.unlink, path)
        return path

    def ext4_image(self, name):
        """An image that is one ext4 filesystem; returns (path, Filesystem)."""
        path = self.image(name)
        fs = Filesystem()
        harness.run_checked(["mkfs.ext4", "-q", "-F", "-U", fs.uuid, "-L", fs.label, path])
        return path, fs

    def gpt_image(self, name):
        """An image with a GPT whose partition 1 holds an ext4 filesystem; (path, Filesystem)."""
        if shutil.which("sfdisk") is None:
            self.skipTest("sfdisk is not installed (Debian package fdisk)")
        path = self.image(name)
        subprocess.run(["sfdisk", "--quiet", path], check=True, capture_output=True, text=True,
                       input="label: gpt\nstart=%d, size=%d, name=guest\n"
                       % (PART_OFFSET // 512, PART_SIZE // 512))
        part, fs = self.ext4_image(name + ".part")
        with open(part, "rb") as src, open(path, "r+b") as dst:
            dst.seek(PART_OFFSET)
            dst.write(src.read(PART_SIZE))
        return path, fs

    def attach(self, image):
        """losetup as cisternd attaches (LOOP_CONFIGURE, no partscan); detached at cleanup."""
        device = harness.run_checked(["losetup", "--find", "--show", image]).strip()
        self.addCleanup(self.detach, device)
        with open("/sys/block/%s/loop/partscan" % os.path.basename(device)) as f:
            self.assertEqual(f.read().strip(), "0", "losetup turned partscan on")
        return device

    def detach(self, device):
        harness.detach_loop(device)
        self.udev_settle()

    def diskseq(self, device):
        with open("/sys/block/%s/diskseq" % os.path.basename(device)) as f:
            return int(f.read())

    def write_record(self, diskseq, pool=POOL, volume=VOLUME):
        """The record cisternd writes for an attached volume, named by its diskseq (or its claim,
        named "loopN", when diskseq is that name); returns its path as udev sees it."""
        directory = os.path.join(self.env.dirs["run"], "devices")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(os.path.join(directory, str(diskseq)), "w") as f:
            f.write("CISTERN_POOL=%s\nCISTERN_VOLUME=%s\n" % (pool, volume))
        seen = os.path.join(harness.CISTERN_RUN, "devices", str(diskseq))
        self.assertTrue(os.path.exists(seen), "the runtime dir is not visible at /run/cistern")
        return seen

    def change(self, device):
        self.env.udev_trigger("/sys/block/" + os.path.basename(device))

    def add_partitions(self, device):
        harness.run_checked(["partx", "--add", device])
        self.udev_settle()
        return device + "p1"

    def cistern_link(self, pool=POOL, volume=VOLUME, part=None):
        name = volume if part is None else "%s-part%d" % (volume, part)
        return os.path.join("/dev/cistern", pool, name)

    def devlinks(self, device):
        """The links our udevd made for device."""
        return sorted(self.env.udev_properties(device).get("DEVLINKS", "").split())

    def assert_named(self, link, device):
        self.assertTrue(os.path.islink(link), "%s is missing" % link)
        self.assertEqual(os.readlink(link), "../../" + os.path.basename(device))
        self.assertEqual(os.path.realpath(link), device)

    def assert_only_link(self, device, link):
        """device is named by link alone: none of /dev/disk/by-* (nor by-diskseq either)."""
        self.assert_named(link, device)
        self.assertEqual(self.devlinks(device), [link])

    def assert_not_probed(self, device, fs):
        props = self.env.udev_properties(device)
        self.assertEqual(props.get("UDISKS_IGNORE"), "1", props)
        # What bcache-tools', lvm2's and udisks2's rules take as "leave this device alone".
        self.assertEqual(props.get("DM_UDEV_DISABLE_OTHER_RULES_FLAG"), "1", props)
        for key in props:
            self.assertFalse(key.startswith(("ID_FS_", "ID_PART_")),
                             "guest data was probed: %s=%s" % (key, props[key]))
        for link in fs.links():
            self.assertFalse(os.path.lexists(link), "%s exists" % link)
        return props

    def assert_processed_as_usual(self, device, fs):
        props = self.env.udev_properties(device)
        self.assertEqual(props.get("ID_FS_TYPE"), "ext4", props)
        self.assertNotIn("UDISKS_IGNORE", props)
        self.assertNotIn("CISTERN_VOLUME", props)
        for link in fs.links():
            self.assertIn(link, self.devlinks(device))
            self.assertEqual(os.path.realpath(link), device)
        self.assertEqual([link for link in self.devlinks(device) if "cistern" in link], [])

    # -- tests --

    def test_rules_load_without_complaint(self):
        log = harness.file_tail(self.env.logs["udevd"], 0)
        # What udevd cannot use while loading, it reports as "<file>:<line> <complaint>" (in
        # debug mode, lines about events start with the device's name instead).
        complaints = [line for line in log.splitlines()
                      if re.match(r"\S*/59-cistern\.rules:\d+ ", line)]
        self.assertEqual(complaints, [])
        self.assertTrue(os.path.exists("/run/udev/rules.d/59-cistern.rules"))

    def test_recorded_disk_is_named_and_left_unprobed(self):
        image, fs = self.ext4_image("disk.img")
        device = self.attach(image)
        self.write_record(self.diskseq(device))
        self.change(device)

        self.assert_only_link(device, self.cistern_link())
        props = self.assert_not_probed(device, fs)
        self.assertEqual((props.get("CISTERN_POOL"), props.get("CISTERN_VOLUME")),
                         (POOL, VOLUME))

    def test_partition_of_recorded_disk_is_named_and_left_unprobed(self):
        image, fs = self.gpt_image("gpt.img")
        device = self.attach(image)
        self.write_record(self.diskseq(device))
        self.change(device)
        partition = self.add_partitions(device)

        self.assert_only_link(device, self.cistern_link())
        self.assert_only_link(partition, self.cistern_link(part=1))
        props = self.assert_not_probed(partition, fs)
        self.assertEqual((props.get("CISTERN_POOL"), props.get("CISTERN_VOLUME")),
                         (POOL, VOLUME))
        self.assertEqual(sorted(os.listdir(os.path.join("/dev/cistern", POOL))),
                         [VOLUME, VOLUME + "-part1"])

    def test_claimed_disk_is_left_unprobed_but_unnamed(self):
        # Between LOOP_CONFIGURE and its record, cisternd's claim on the device's name covers
        # the kernel's own "change": hands off the content, but no names from a mere claim.
        image, fs = self.ext4_image("claimed.img")
        device = self.attach(image)
        self.write_record(os.path.basename(device))
        self.change(device)

        props = self.assert_not_probed(device, fs)
        self.assertNotIn("CISTERN_VOLUME", props)
        self.assertEqual(self.devlinks(device), [])
        self.assertFalse(os.path.lexists(self.cistern_link()))

    def test_claim_of_a_free_device_does_not_stick(self):
        image, fs = self.ext4_image("unclaimed.img")
        device = self.attach(image)
        self.write_record(os.path.basename(device))
        self.change(device)
        os.unlink(os.path.join(self.env.dirs["run"], "devices", os.path.basename(device)))
        self.change(device)

        self.assert_processed_as_usual(device, fs)

    def test_loop_without_record_is_processed_as_usual(self):
        image, fs = self.ext4_image("plain.img")
        device = self.attach(image)
        self.change(device)

        self.assert_processed_as_usual(device, fs)

    def test_stale_record_is_ignored(self):
        image, fs = self.ext4_image("stale.img")
        device = self.attach(image)
        old_seq = self.diskseq(device)
        # cisternd died without removing its record, and the device was detached.
        record = self.write_record(old_seq)
        self.detach(device)
        device = self.attach(image)
        self.assertNotEqual(self.diskseq(device), old_seq)
        self.change(device)

        self.assertTrue(os.path.exists(record))
        self.assertFalse(os.path.lexists(self.cistern_link()))
        self.assert_processed_as_usual(device, fs)

    def test_links_go_with_the_device(self):
        image, _ = self.gpt_image("gone.img")
        device = self.attach(image)
        self.write_record(self.diskseq(device))
        self.change(device)
        self.add_partitions(device)
        self.assertTrue(os.path.islink(self.cistern_link(part=1)))

        # The worst order: the record outlives the detach (as after a crash of cisternd).
        self.detach(device)

        self.assertFalse(os.path.lexists(self.cistern_link()))
        self.assertFalse(os.path.lexists(self.cistern_link(part=1)))
        self.assertFalse(os.path.lexists(os.path.join("/dev/cistern", POOL)))
        self.assertNotIn("CISTERN_VOLUME", self.env.udev_properties(device))

    def test_two_volumes_get_their_own_links(self):
        first, _ = self.ext4_image("one.img")
        second, _ = self.ext4_image("two.img")
        devices = [self.attach(first), self.attach(second)]
        for device, volume in zip(devices, ("one", "two")):
            self.write_record(self.diskseq(device), volume=volume)
            self.change(device)

        self.assert_named(self.cistern_link(volume="one"), devices[0])
        self.assert_named(self.cistern_link(volume="two"), devices[1])


if __name__ == "__main__":
    harness.main()
