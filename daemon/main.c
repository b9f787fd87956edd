/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "config.h"

#include "log.h"
#include "manager.h"

static void help(void) {
        printf("Usage: cisternd [OPTIONS]\n\n"
               "Keeps pools of virtual machine disk volumes and offers them on the system bus\n"
               "as org.cistern.Cistern1.\n\n"
               "  -h --help                 Show this help and exit\n"
               "     --version              Show the version and exit\n"
               "     --state-dir=DIR        Where pools are recorded (default %s)\n"
               "     --runtime-dir=DIR      Where runtime state and mount points live (default %s)\n"
               "     --idle-timeout=SECONDS Exit after this long without work, 0 = never (default 30)\n"
               "     --session-timeout=SECONDS\n"
               "                            Discard an import session after this long without a\n"
               "                            write, 0 = never (default 600)\n"
               "     --log-level=LEVEL      err, warning, notice, info or debug (default info)\n",
               CISTERN_STATE_DIR, CISTERN_RUNTIME_DIR);
}

static int parse_seconds(const char *s, usec_t *ret) {
        char *end;
        uint64_t n;

        errno = 0;
        if (!*s || *s == '-')
                return -EINVAL;
        n = strtoull(s, &end, 10);
        if (errno != 0 || *end || n > UINT64_MAX / USEC_PER_SEC)
                return -EINVAL;
        *ret = n * USEC_PER_SEC;
        return 0;
}

/* Returns 1 to run, 0 to exit successfully, negative on a usage error. */
static int parse_argv(int argc, char *argv[], ManagerOptions *o) {
        enum { ARG_VERSION = 0x100, ARG_STATE_DIR, ARG_RUNTIME_DIR, ARG_IDLE_TIMEOUT, ARG_SESSION_TIMEOUT, ARG_LOG_LEVEL };
        static const struct option options[] = {
                { "help",         no_argument,       NULL, 'h' },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "state-dir",    required_argument, NULL, ARG_STATE_DIR },
                { "runtime-dir",  required_argument, NULL, ARG_RUNTIME_DIR },
                { "idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT },
                { "session-timeout", required_argument, NULL, ARG_SESSION_TIMEOUT },
                { "log-level",    required_argument, NULL, ARG_LOG_LEVEL },
                {}
        };
        int c, level;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("cisternd %s\n", CISTERN_VERSION);
                        return 0;
                case ARG_STATE_DIR:
                case ARG_RUNTIME_DIR:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "%s must be an absolute path: %s",
                                                       c == ARG_STATE_DIR ? "--state-dir" : "--runtime-dir", optarg);
                        if (c == ARG_STATE_DIR)
                                o->state_dir = optarg;
                        else
                                o->runtime_dir = optarg;
                        break;
                case ARG_IDLE_TIMEOUT:
                        if (parse_seconds(optarg, &o->idle_timeout) < 0)
                                return log_error_errno(EINVAL, "Invalid --idle-timeout: %s", optarg);
                        break;
                case ARG_SESSION_TIMEOUT:
                        if (parse_seconds(optarg, &o->session_timeout) < 0)
                                return log_error_errno(EINVAL, "Invalid --session-timeout: %s", optarg);
                        break;
                case ARG_LOG_LEVEL:
                        level = log_parse_level(optarg);
                        if (level < 0)
                                return log_error_errno(EINVAL, "Invalid --log-level: %s (use err, warning, notice, info or debug)", optarg);
                        log_set_max_level(level);
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument: %s", argv[optind]);
        return 1;
}

int main(int argc, char *argv[]) {
        _cleanup_(manager_freep) Manager *m = NULL;
        ManagerOptions o = {
                .state_dir = CISTERN_STATE_DIR,
                .runtime_dir = CISTERN_RUNTIME_DIR,
                .idle_timeout = 30 * USEC_PER_SEC,
                .session_timeout = 600 * USEC_PER_SEC,
        };
        int r;

        r = parse_argv(argc, argv, &o);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        r = manager_new(&o, &m);
        if (r < 0) {
                log_oom();
                return 1;
        }
        r = manager_run(m);
        return r < 0 ? 1 : 0;
}
