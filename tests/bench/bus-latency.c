/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Times D-Bus calls on the system bus as a C client sees them, without the cost of turning the
 * reply into another language's objects.
 *
 *   bus-latency [-i MS] COUNT call DEST PATH INTERFACE METHOD      (a method without arguments)
 *   bus-latency [-i MS] COUNT get  DEST PATH INTERFACE PROPERTY    (Properties.Get)
 *
 * COUNT 0 calls until standard input ends (the caller closes its end of a pipe), for sampling
 * while something else runs. -i waits MS milliseconds between calls (default 0: back to back).
 * Prints "min median p99 max" in milliseconds, then the number of calls. */

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int compare_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return (x > y) - (x < y);
}

static int call_once(sd_bus *bus, char **argv) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        int r;

        if (strcmp(argv[0], "get") == 0)
                r = sd_bus_call_method(bus, argv[1], argv[2], "org.freedesktop.DBus.Properties", "Get",
                                       &error, &reply, "ss", argv[3], argv[4]);
        else
                r = sd_bus_call_method(bus, argv[1], argv[2], argv[3], argv[4], &error, &reply, NULL);
        if (r < 0)
                fprintf(stderr, "bus-latency: %s\n", error.message ?: strerror(-r));
        sd_bus_error_free(&error);
        sd_bus_message_unref(reply);
        return r;
}

/* Waits ms milliseconds, or until standard input ends when until_eof; returns whether it ended. */
static int wait_or_eof(int ms, int until_eof) {
        struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
        char buf[256];

        if (!until_eof) {
                if (ms > 0)
                        poll(NULL, 0, ms);
                return 0;
        }
        if (poll(&p, 1, ms) <= 0)
                return 0;
        /* Readable: data to discard, or the end (0) or an error. */
        return read(STDIN_FILENO, buf, sizeof buf) <= 0;
}

int main(int argc, char *argv[]) {
        sd_bus *bus = NULL;
        double *t = NULL;
        int n, interval = 0, count = 0, size = 0, opt;

        while ((opt = getopt(argc, argv, "+i:")) != -1) {
                if (opt != 'i')
                        goto usage;
                interval = atoi(optarg);
        }
        argc -= optind - 1;
        argv += optind - 1;
        if (argc != 7 || (strcmp(argv[2], "call") != 0 && strcmp(argv[2], "get") != 0))
                goto usage;
        n = atoi(argv[1]);
        if (n < 0 || interval < 0 || sd_bus_open_system(&bus) < 0)
                return 1;
        for (;;) {
                double start;

                if (n > 0 ? count == n : wait_or_eof(count > 0 ? interval : 0, 1))
                        break;
                if (count == size) {
                        size = size ? 2 * size : (n ?: 4096);
                        t = realloc(t, size * sizeof *t);
                        if (!t)
                                return 1;
                }
                start = now_ms();
                if (call_once(bus, argv + 2) < 0)
                        return 1;
                t[count++] = now_ms() - start;
                if (n > 0 && count < n)
                        wait_or_eof(interval, 0);
        }
        if (count == 0)
                return 1;
        qsort(t, count, sizeof *t, compare_double);
        printf("%.3f %.3f %.3f %.3f %d\n", t[0], t[count / 2], t[(count * 99) / 100 < count ? (count * 99) / 100 : count - 1],
               t[count - 1], count);
        sd_bus_flush_close_unref(bus);
        free(t);
        return 0;

usage:
        fprintf(stderr, "usage: bus-latency [-i MS] COUNT call|get DEST PATH INTERFACE METHOD|PROPERTY\n");
        return 2;
}
