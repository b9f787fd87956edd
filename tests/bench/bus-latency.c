/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Times D-Bus calls on the system bus as a C client sees them, without the cost of turning the
 * reply into another language's objects.
 *
 *   bus-latency COUNT call DEST PATH INTERFACE METHOD      (a method without arguments)
 *   bus-latency COUNT get  DEST PATH INTERFACE PROPERTY    (Properties.Get)
 *
 * Prints "min median p99 max" in milliseconds. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-bus.h>
#include <time.h>

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

int main(int argc, char *argv[]) {
        sd_bus *bus = NULL;
        double *t;
        int n;

        if (argc != 7 || (strcmp(argv[2], "call") != 0 && strcmp(argv[2], "get") != 0)) {
                fprintf(stderr, "usage: bus-latency COUNT call|get DEST PATH INTERFACE METHOD|PROPERTY\n");
                return 2;
        }
        n = atoi(argv[1]);
        if (n <= 0 || sd_bus_open_system(&bus) < 0)
                return 1;
        t = calloc(n, sizeof *t);
        if (!t)
                return 1;
        for (int i = 0; i < n; i++) {
                double start = now_ms();

                if (call_once(bus, argv + 2) < 0)
                        return 1;
                t[i] = now_ms() - start;
        }
        qsort(t, n, sizeof *t, compare_double);
        printf("%.3f %.3f %.3f %.3f\n", t[0], t[n / 2], t[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], t[n - 1]);
        sd_bus_flush_close_unref(bus);
        free(t);
        return 0;
}
