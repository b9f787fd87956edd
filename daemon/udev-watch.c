/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <libudev.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "log.h"
#include "udev-watch.h"

struct UdevWait {
        UdevWatch *watch;
        dev_t *devnums;         /* still to be processed; [0] the disk, with diskseq */
        size_t n;
        uint64_t diskseq;
        UdevReadyFunc ready;
        void *userdata;
        sd_event_source *timeout;       /* also the way to answer from the loop when ready at once */
        bool ready_now;
        UdevWait *prev, *next;
};

struct UdevWatch {
        sd_event *event;
        struct udev *udev;
        struct udev_monitor *monitor;
        sd_event_source *source;
        UdevWait *waits;
        UdevEventFunc on_event;
        void *userdata;
};

/* Whether udev has processed device with cistern's rules: a disk with the wait's diskseq, or
 * one of its partitions. Takes the device off the wait's list then; true when none is left. */
static bool device_processed(struct udev_device *device, UdevWait *wait) {
        dev_t devnum = device ? udev_device_get_devnum(device) : 0;
        const char *diskseq;

        if (!device || !udev_device_get_property_value(device, "CISTERN_VOLUME"))
                return false;
        for (size_t i = 0; i < wait->n; i++) {
                if (wait->devnums[i] != devnum)
                        continue;
                if (udev_device_get_devtype(device) && streq(udev_device_get_devtype(device), "disk")) {
                        diskseq = udev_device_get_property_value(device, "DISKSEQ");
                        if (!diskseq || strtoull(diskseq, NULL, 10) != wait->diskseq)
                                return false;
                }
                wait->devnums[i] = wait->devnums[--wait->n];
                return wait->n == 0;
        }
        return false;
}

static void wait_done(UdevWait *wait, int result) {
        UdevReadyFunc ready = wait->ready;
        void *userdata = wait->userdata;

        udev_wait_free(wait);
        ready(result, userdata);
}

static int on_monitor(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        UdevWatch *w = userdata;
        struct udev_device *device;

        while ((device = udev_monitor_receive_device(w->monitor))) {
                const char *action = udev_device_get_action(device);
                dev_t devnum = udev_device_get_devnum(device);

                if (action && (streq(action, "add") || streq(action, "change")))
                        for (UdevWait *wait = w->waits; wait; wait = wait->next)
                                if (device_processed(device, wait)) {
                                        wait_done(wait, 0);
                                        break;  /* ready may have freed other waits */
                                }
                udev_device_unref(device);
                if (w->on_event)
                        w->on_event(devnum, w->userdata);
        }
        return 0;
}

int udev_watch_new(sd_event *event, UdevEventFunc on_event, void *userdata, UdevWatch **ret) {
        _cleanup_(udev_watch_freep) UdevWatch *w = NULL;
        int r;

        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(event);
        w->on_event = on_event;
        w->userdata = userdata;
        w->udev = udev_new();
        if (!w->udev)
                return -ENOMEM;
        w->monitor = udev_monitor_new_from_netlink(w->udev, "udev");
        if (!w->monitor)
                return -errno ?: -EIO;
        r = udev_monitor_filter_add_match_subsystem_devtype(w->monitor, "block", NULL);
        if (r >= 0)
                r = udev_monitor_enable_receiving(w->monitor);
        if (r >= 0)
                r = sd_event_add_io(event, &w->source, udev_monitor_get_fd(w->monitor), EPOLLIN, on_monitor, w);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

UdevWatch *udev_watch_free(UdevWatch *w) {
        if (!w)
                return NULL;
        while (w->waits)
                udev_wait_free(w->waits);
        sd_event_source_disable_unref(w->source);
        udev_monitor_unref(w->monitor);
        udev_unref(w->udev);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        UdevWait *wait = userdata;

        if (wait->ready_now) {
                wait_done(wait, 0);
                return 0;
        }
        log_warning("udev did not process block device %u:%u within %llu s; is systemd-udevd running?",
                    major(wait->devnums[0]), minor(wait->devnums[0]), (unsigned long long) (UDEV_WAIT_USEC / USEC_PER_SEC));
        wait_done(wait, -ETIMEDOUT);
        return 0;
}

int udev_trigger_change(dev_t devnum) {
        _cleanup_close_ int fd = -EBADF;
        char path[64];

        snprintf(path, sizeof path, "/sys/dev/block/%u:%u/uevent", major(devnum), minor(devnum));
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (write(fd, "change", 6) != 6)
                return -errno;
        return 0;
}

int udev_watch_wait(UdevWatch *w, const dev_t *devnums, size_t n, uint64_t diskseq, UdevReadyFunc ready, void *userdata,
                    UdevWait **ret) {
        UdevWait *wait;
        int r;

        wait = calloc(1, sizeof *wait);
        if (!wait)
                return -ENOMEM;
        *wait = (UdevWait) { .watch = w, .diskseq = diskseq, .ready = ready, .userdata = userdata };
        wait->next = w->waits;
        if (w->waits)
                w->waits->prev = wait;
        w->waits = wait;
        wait->devnums = calloc(n, sizeof *devnums);
        if (!wait->devnums) {
                udev_wait_free(wait);
                return -ENOMEM;
        }
        memcpy(wait->devnums, devnums, n * sizeof *devnums);
        wait->n = n;
        r = sd_event_add_time_relative(w->event, &wait->timeout, CLOCK_MONOTONIC, UDEV_WAIT_USEC, USEC_PER_SEC,
                                       on_timeout, wait);
        if (r < 0) {
                udev_wait_free(wait);
                return r;
        }

        /* Registered first, then looked up: an event processed since is in the monitor's queue. */
        for (size_t i = n; i-- > 0 && !wait->ready_now;) {
                struct udev_device *device = udev_device_new_from_devnum(w->udev, 'b', devnums[i]);

                if (device && udev_device_get_is_initialized(device) > 0)
                        wait->ready_now = device_processed(device, wait);
                udev_device_unref(device);
        }
        /* Even when ready now, the answer comes from the loop, like every other. */
        if (wait->ready_now)
                (void) sd_event_source_set_time(wait->timeout, 0);
        *ret = wait;
        return 0;
}

bool udev_watch_busy(UdevWatch *w) {
        return w && w->waits;
}

UdevWait *udev_wait_free(UdevWait *wait) {
        if (!wait)
                return NULL;
        if (wait->prev)
                wait->prev->next = wait->next;
        else
                wait->watch->waits = wait->next;
        if (wait->next)
                wait->next->prev = wait->prev;
        sd_event_source_disable_unref(wait->timeout);
        free(wait->devnums);
        free(wait);
        return NULL;
}
