/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * cisternctl — the command-line client of the Cistern service (org.cistern.Cistern1).
 *
 * JSON OUTPUT (--json)
 *
 * With --json every command prints exactly one JSON document on stdout and nothing else; errors
 * still go to stderr as text and the exit status is the same as without --json. Sizes are
 * bytes, times are microseconds since the epoch (as on the bus), uids are numbers. Commands not
 * listed here print nothing on success. Keys may be added in later versions; existing keys keep
 * their name, type and meaning.
 *
 * status:
 *     { "version": "0.1.0", "drivers": ["dir"], "pools": 2, "jobs": 0 }
 *
 * pools (sorted by name):
 *     [ { "name": "tank", "driver": "dir",
 *         "size": 107374182400, "usage": 1073741824, "available": 106300440576,
 *         "copy_on_write": true, "revisions_to_keep": 1, "volumes": 3,
 *         "config": { "path": "/srv/tank", "reflink": "auto", "revisions_to_keep": 1 } } ]
 *     "config" is the pool's Config property as given at creation, values in their D-Bus types
 *     (strings, numbers, booleans).
 *
 * list [POOL] (sorted by pool, then volume name):
 *     [ { "pool": "tank", "name": "disk0", "format": "raw",
 *         "size": 10737418240, "usage": 0, "state": "stopped", "owner": 1000,
 *         "read_only": false, "save_on_stop": true, "snap_on_start": false,
 *         "source": null, "revisions_to_keep": 1,
 *         "created": 1732241580000000, "outdated": false, "device": null } ]
 *     "source" is "POOL/VOL" of the volume a snap-on-start volume is started from, or null;
 *     "device" is the block device ("/dev/loop3") while the volume is attached, else null.
 *
 * info POOL/VOL:
 *     the object "list" prints for the volume, plus
 *       "revisions":  [ { "id": "…", "created": 1732241580000000 } ]        (oldest first)
 *       "partitions": [ { "number": 1, "device": "/dev/loop3p1",
 *                         "start": 1048576, "size": 10736369664, "fstype": "ext4" } ]
 *                                              (while attached; "fstype" "" when unknown)
 *       "mounts":     [ { "partition": 1, "mount_point": "/run/cistern/…" } ]  (0: whole device)
 *       "info":       { "format": "raw", "virtual_size": 10737418240, "actual_size": 200704 }
 *                                                                        (Volume.Info, as is)
 *     and for a qcow2 image "info" holds besides, in the D-Bus types of Volume.Info:
 *         "compat": "1.1", "cluster_size": 65536, "compressed_clusters": 0,
 *         "compression_type": "zlib", "refcount_bits": 16, "dirty": false,
 *         "lazy_refcounts": false, "extended_l2": false, "snapshots": 0, "l1_entries": 160
 *     ("compressed_clusters" is left out when the service could not count them).
 *
 * pool-create, create, clone:
 *     { "object": "/org/cistern/Cistern1/pool/tank" }
 *     the D-Bus object path of the new pool or volume.
 *
 * attach POOL/VOL:
 *     { "device": "/dev/loop3", "partitions": [ … ] }
 *     "partitions" as in "info", read after the device is ready ([] with --no-partitions).
 *
 * mount POOL/VOL [PART]:
 *     { "partition": 1, "mount_point": "/run/cistern/mounts/tank/disk0/1" }
 *     the same object as an element of "mounts" in "info" (partition 0: the whole device).
 *
 * snapshot POOL/VOL:
 *     { "revision": "…" }
 *
 * revisions POOL/VOL (oldest first; with --remove=ID nothing):
 *     [ { "id": "…", "created": 1732241580000000 } ]
 *
 * jobs (sorted by id):
 *     [ { "id": "7", "path": "/org/cistern/Cistern1/job/7", "operation": "Clone",
 *         "objects": ["/org/cistern/Cistern1/pool/tank/disk0"],
 *         "progress": 0.42, "progress_valid": true,
 *         "bytes_total": 10737418240, "bytes_done": 4509715660, "rate": 125829120,
 *         "start_time": 1732241580000000, "expected_end_time": 1732241630000000,
 *         "started_by": 1000, "cancelable": true } ]
 *     "expected_end_time" is 0 while unknown; "progress" means something only when
 *     "progress_valid" is true.
 */

#include <getopt.h>
#include <pwd.h>

#include "config.h"
#include "cisternctl.h"
#include "ctl-objects.h"
#include "output.h"
#include "polkit-agent.h"
#include "sizes.h"

/* One line per command. A new command is a new line here and its verb_*() function. */
static const Verb verbs[] = {
        { "status",      1, 1,             0, 0,              verb_status,
          "status" },
        { "pools",       1, 1,             0, 0,              verb_pools,
          "pools" },
        { "pool-create", 3, VERB_ANY_ARGS, 0, VERB_AUTHORIZE, verb_pool_create,
          "pool-create NAME DRIVER [KEY=VALUE...]" },
        { "pool-remove", 2, 2,             0, VERB_AUTHORIZE, verb_pool_remove,
          "pool-remove NAME" },
        { "list",        1, 2,             0, 0,              verb_list,
          "list [POOL]" },
        { "create",      3, 3,
          OPTION_FORMAT | OPTION_SNAP_ON_START | OPTION_SOURCE | OPTION_NO_SAVE_ON_STOP |
          OPTION_READ_ONLY | OPTION_PREALLOCATE | OPTION_OWNER | OPTION_REVISIONS_TO_KEEP,
          VERB_AUTHORIZE, verb_create,
          "create POOL/VOL SIZE [--format=FORMAT] [--snap-on-start --source=POOL/VOL]\n"
          "       [--no-save-on-stop] [--read-only] [--preallocate] [--owner=USER]\n"
          "       [--revisions-to-keep=N]" },
        { "remove",      2, 2,             0, VERB_AUTHORIZE, verb_remove,
          "remove POOL/VOL" },
        { "resize",      3, 3,             OPTION_ALLOW_SHRINK, VERB_AUTHORIZE, verb_resize,
          "resize POOL/VOL SIZE [--allow-shrink]" },
        { "info",        2, 2,             0, VERB_AUTHORIZE, verb_info,
          "info POOL/VOL" },
        { "start",       2, 2,             0, VERB_AUTHORIZE, verb_start,
          "start POOL/VOL" },
        { "stop",        2, 2,             0, VERB_AUTHORIZE, verb_stop,
          "stop POOL/VOL" },
        { "snapshot",    2, 2,             0, VERB_AUTHORIZE, verb_snapshot,
          "snapshot POOL/VOL" },
        /* Listing needs no authorization, --remove does: see OPTIONS_AUTHORIZE. */
        { "revisions",   2, 2,             OPTION_REMOVE, 0, verb_revisions,
          "revisions POOL/VOL [--remove=REVISION]" },
        { "revert",      3, 3,             0, VERB_AUTHORIZE, verb_revert,
          "revert POOL/VOL REVISION" },
        { "clone",       3, 3,             OPTION_REVISION, VERB_AUTHORIZE, verb_clone,
          "clone POOL/VOL POOL/NEWVOL [--revision=REVISION]" },
        { "import",      3, 3,             OPTION_FORMAT | OPTION_SIZE, VERB_AUTHORIZE, verb_import,
          "import POOL/VOL FILE|- [--format=FORMAT] [--size=SIZE]" },
        { "export",      3, 3,             OPTION_FORMAT | OPTION_NO_SPARSE | OPTION_REVISION,
          VERB_AUTHORIZE, verb_export,
          "export POOL/VOL FILE|- [--format=FORMAT] [--no-sparse] [--revision=REVISION]" },
        { "convert",     3, 3,             OPTION_COMPRESS, VERB_AUTHORIZE, verb_convert,
          "convert POOL/VOL FORMAT [--compress]" },
        { "attach",      2, 2,             OPTION_READ_ONLY | OPTION_NO_PARTITIONS, VERB_AUTHORIZE,
          verb_attach,
          "attach POOL/VOL [--read-only] [--no-partitions]" },
        { "detach",      2, 2,             0, VERB_AUTHORIZE, verb_detach,
          "detach POOL/VOL" },
        { "mount",       2, 3,             OPTION_READ_ONLY, VERB_AUTHORIZE, verb_mount,
          "mount POOL/VOL [PART] [--read-only]" },
        { "unmount",     2, 3,             0, VERB_AUTHORIZE, verb_unmount,
          "unmount POOL/VOL [PART]" },
        { "jobs",        1, 1,             0, 0,              verb_jobs,
          "jobs" },
        { "cancel",      2, 2,             0, VERB_AUTHORIZE, verb_cancel,
          "cancel JOB" },
};

/* Command options come first and in the order of the VerbOption bits. */
enum {
        ARG_FORMAT = 0x100,
        ARG_SNAP_ON_START,
        ARG_SOURCE,
        ARG_NO_SAVE_ON_STOP,
        ARG_READ_ONLY,
        ARG_PREALLOCATE,
        ARG_OWNER,
        ARG_REVISIONS_TO_KEEP,
        ARG_ALLOW_SHRINK,
        ARG_REVISION,
        ARG_REMOVE,
        ARG_NO_SPARSE,
        ARG_SIZE,
        ARG_NO_PARTITIONS,
        ARG_COMPRESS,
        ARG_VERB_OPTION_END,

        ARG_VERSION,
        ARG_JSON,
        ARG_NO_ASK_PASSWORD,
};

static const struct option options[] = {
        { "help",              no_argument,       NULL, 'h'                   },
        { "version",           no_argument,       NULL, ARG_VERSION           },
        { "json",              no_argument,       NULL, ARG_JSON              },
        { "no-ask-password",   no_argument,       NULL, ARG_NO_ASK_PASSWORD   },
        { "format",            required_argument, NULL, ARG_FORMAT            },
        { "snap-on-start",     no_argument,       NULL, ARG_SNAP_ON_START     },
        { "source",            required_argument, NULL, ARG_SOURCE            },
        { "no-save-on-stop",   no_argument,       NULL, ARG_NO_SAVE_ON_STOP   },
        { "read-only",         no_argument,       NULL, ARG_READ_ONLY         },
        { "preallocate",       no_argument,       NULL, ARG_PREALLOCATE       },
        { "owner",             required_argument, NULL, ARG_OWNER             },
        { "revisions-to-keep", required_argument, NULL, ARG_REVISIONS_TO_KEEP },
        { "allow-shrink",      no_argument,       NULL, ARG_ALLOW_SHRINK      },
        { "revision",          required_argument, NULL, ARG_REVISION          },
        { "remove",            required_argument, NULL, ARG_REMOVE            },
        { "no-sparse",         no_argument,       NULL, ARG_NO_SPARSE         },
        { "size",              required_argument, NULL, ARG_SIZE              },
        { "no-partitions",     no_argument,       NULL, ARG_NO_PARTITIONS     },
        { "compress",          no_argument,       NULL, ARG_COMPRESS          },
        {}
};

static void help(void) {
        printf("%1$s [OPTIONS...] COMMAND ...\n"
               "\n"
               "Manage pools of virtual-machine disk volumes kept by the Cistern service.\n"
               "A pool is a place where volumes live (a directory); a volume is one disk\n"
               "image, named POOL/VOL.\n"
               "\n"
               "Try it:\n"
               "  %1$s pool-create tank dir path=/srv/tank\n"
               "  %1$s create tank/disk0 10G\n"
               "  %1$s list\n"
               "\n"
               "Service and pool commands:\n"
               "  status                     Show the service version, its drivers, and how\n"
               "                             many pools and jobs there are\n"
               "  pools                      List pools with their size and free space\n"
               "  pool-create NAME DRIVER [KEY=VALUE...]\n"
               "                             Create a pool, or adopt the pool already stored\n"
               "                             at the given place, with its volumes\n"
               "  pool-remove NAME           Forget a pool; its data stays where it is\n"
               "\n"
               "Volume commands:\n"
               "  list [POOL]                List the volumes of one pool, or of all pools\n"
               "  create POOL/VOL SIZE       Create a volume of SIZE bytes\n"
               "  remove POOL/VOL            Delete a stopped, unused volume for good\n"
               "  resize POOL/VOL SIZE       Change the size of a volume\n"
               "  info POOL/VOL              Show everything about a volume and its image\n"
               "  start POOL/VOL             Prepare a volume for a VM to use: give it a working\n"
               "                             copy, as its settings say\n"
               "  stop POOL/VOL              Keep or drop what the VM wrote, as the volume's\n"
               "                             settings say; the replaced image becomes a revision\n"
               "\n"
               "Revisions and copies:\n"
               "  snapshot POOL/VOL          Keep the current image as a new revision; prints\n"
               "                             its identifier\n"
               "  revisions POOL/VOL         List the revisions of a volume, oldest first\n"
               "  revert POOL/VOL REVISION   Make a revision the image of a stopped volume; the\n"
               "                             image it replaces becomes a revision too\n"
               "  clone POOL/VOL POOL/NEWVOL Create a new volume with the content of another\n"
               "  import POOL/VOL FILE|-     Replace the volume's image with the content of\n"
               "                             FILE, or of standard input with -\n"
               "  export POOL/VOL FILE|-     Write the volume's image into FILE (created or\n"
               "                             emptied first), or to standard output with -\n"
               "  convert POOL/VOL FORMAT    Rewrite the image of a stopped, detached volume in\n"
               "                             FORMAT (raw or qcow2); the image it replaces\n"
               "                             becomes a revision\n"
               "\n"
               "Block devices and filesystems:\n"
               "  attach POOL/VOL            Expose the volume as a block device; prints the\n"
               "                             device, then each partition's device and its\n"
               "                             filesystem type, one per line\n"
               "  detach POOL/VOL            Take the volume's block device away again\n"
               "  mount POOL/VOL [PART]      Mount the filesystem of partition PART, or of the\n"
               "                             whole device (0, the default), attaching the\n"
               "                             volume first if need be; prints the mount point\n"
               "  unmount POOL/VOL [PART]    Unmount it again; the volume stays attached\n"
               "\n"
               "Jobs (operations that move data, while they run):\n"
               "  jobs                       List the running jobs and their progress\n"
               "  cancel JOB                 Cancel a job: it leaves no trace\n",
               program_invocation_short_name);
        printf("\n"
               "Options:\n"
               "  -h --help                  Show this help and exit\n"
               "     --version               Show the version and exit\n"
               "     --json                  Print results as JSON, for programs\n"
               "     --no-ask-password       Never ask for a password; fail instead when the\n"
               "                             action needs one\n"
               "\n"
               "Options of create:\n"
               "     --format=FORMAT         Image format: raw (the default) or qcow2\n"
               "     --snap-on-start         Start the volume as a fresh snapshot of another\n"
               "                             volume's committed image; changes are dropped at\n"
               "                             stop. Needs --source\n"
               "     --source=POOL/VOL       The volume to snapshot at start (same pool)\n"
               "     --no-save-on-stop       Throw away what the VM wrote when it stops\n"
               "                             (default: keep it, and keep the old image as a\n"
               "                             revision)\n"
               "     --read-only             Never let the volume be written to\n"
               "     --preallocate           Allocate all of the space now\n"
               "     --owner=USER            User (name or uid) who owns the volume; only root\n"
               "                             may give a volume away (default: you)\n"
               "     --revisions-to-keep=N   How many old images to keep (default: the pool's)\n"
               "\n"
               "Options of resize:\n"
               "     --allow-shrink          Allow making the volume smaller, which destroys\n"
               "                             everything beyond the new size\n"
               "\n"
               "Options of revisions:\n"
               "     --remove=REVISION       Delete this revision instead of listing\n"
               "\n"
               "Options of clone:\n"
               "     --revision=REVISION     Copy this revision rather than the current image\n"
               "\n"
               "Options of import:\n"
               "     --format=FORMAT         Format of the data read (default: the volume's own)\n"
               "     --size=SIZE             How many bytes to read; needed when the input is no\n"
               "                             regular file, such as a pipe\n"
               "\n"
               "Options of export:\n"
               "     --format=FORMAT         Format to write (default: the volume's own)\n"
               "     --no-sparse             Write the holes of the image as zeros too (default:\n"
               "                             holes stay holes in a regular file)\n"
               "     --revision=REVISION     Export this revision rather than the current image\n"
               "\n"
               "Options of convert:\n"
               "     --compress              Write compressed clusters (qcow2 only): smaller,\n"
               "                             slower to write and to read\n"
               "\n"
               "Options of attach:\n"
               "     --read-only             Make the device read-only; a stopped volume's always\n"
               "                             is, a started volume's is writable by default\n"
               "     --no-partitions         Expose the whole disk only, without a device for\n"
               "                             each partition\n"
               "\n"
               "Options of mount:\n"
               "     --read-only             Mount read-only; the filesystem of a stopped volume,\n"
               "                             or on a read-only device, always is, that of a\n"
               "                             started volume is writable by default\n");
        printf("\n"
               "Pool configuration (KEY=VALUE), by driver:\n"
               "  dir    path=DIR               Existing directory that holds the pool (required)\n"
               "         reflink=auto|require|never\n"
               "                                Whether copies share blocks (default: auto)\n"
               "         revisions_to_keep=N    Default for the pool's volumes (default: 1)\n"
               "\n"
               "Sizes are a number of bytes, or a number with a suffix K, M, G, T, P or E\n"
               "(also KiB, MiB...; any case), all powers of 1024: 10G is 10 GiB, 1.5T works too.\n"
               "\n"
               "On a terminal, start, stop, snapshot, revert, clone, import, export and\n"
               "convert show the progress of the work they wait for, and Ctrl-C cancels that\n"
               "work. When an action needs a password, a prompt appears. Exit status is 0 on\n"
               "success, 1 when the action failed, 2 when the command line is wrong.\n"
               "See cisternctl(1) for the JSON output and more.\n");
}

static const Verb *verb_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].name, name))
                        return &verbs[i];
        return NULL;
}

static void print_usage_hint(const Verb *verb) {
        if (verb)
                fprintf(stderr, "Usage: %s %s\n", program_invocation_short_name, verb->synopsis);
        fprintf(stderr, "Try '%s --help' for more information.\n", program_invocation_short_name);
}

int usage_error(const Context *c, const char *format, ...) {
        va_list ap;

        va_start(ap, format);
        log_begin_va(format, ap);
        va_end(ap);
        fputc('\n', stderr);

        print_usage_hint(c ? c->verb : NULL);
        return -ERR_USAGE;
}

int parse_volume_arg(const Context *c, const char *arg, char **ret_pool, char **ret_volume) {
        _cleanup_free_ char *pool = NULL, *volume = NULL;
        const char *slash;

        /* Names are checked by the daemon, which owns the rules; only the shape is checked here. */
        slash = strchr(arg, '/');
        if (!slash || slash == arg || slash[1] == '\0' || strchr(slash + 1, '/'))
                return usage_error(c, "Invalid volume '%s': expected POOL/VOL.", arg);

        pool = strndup(arg, slash - arg);
        volume = strdup(slash + 1);
        if (!pool || !volume)
                return log_oom();

        *ret_pool = TAKE_PTR(pool);
        *ret_volume = TAKE_PTR(volume);
        return 0;
}

int parse_size_arg(const Context *c, const char *arg, uint64_t *ret) {
        int r;

        r = parse_size(arg, ret);
        if (r == -ERANGE)
                return usage_error(c, "Size '%s' is too large.", arg);
        if (r < 0)
                return usage_error(c, "Invalid size '%s': expected bytes, or a number with a K, M, G, T, "
                                   "P or E suffix (powers of 1024), like 10G.", arg);
        return 0;
}

static int parse_owner(const char *arg, uint32_t *ret) {
        struct passwd *pw;

        if (parse_uint32(arg, ret) >= 0) {
                if (*ret == UINT32_MAX)         /* (uid_t) -1 means "no change" to the kernel */
                        return usage_error(NULL, "Invalid owner '%s'.", arg);
                return 0;
        }

        errno = 0;
        pw = getpwnam(arg);
        if (!pw)
                return usage_error(NULL, "Unknown user '%s'.", arg);
        *ret = pw->pw_uid;
        return 0;
}

static int parse_verb_option(Context *c, int opt, const char *arg) {
        int r;

        c->options_seen |= 1U << (opt - ARG_FORMAT);

        switch (opt) {
        case ARG_FORMAT:
                if (*arg == '\0')
                        return usage_error(NULL, "--format= needs a format, like raw or qcow2.");
                c->format = arg;
                return 0;
        case ARG_SNAP_ON_START:   c->snap_on_start = true;   return 0;
        case ARG_SOURCE:          c->source = arg;           return 0;
        case ARG_NO_SAVE_ON_STOP: c->no_save_on_stop = true; return 0;
        case ARG_READ_ONLY:       c->read_only = true;       return 0;
        case ARG_PREALLOCATE:     c->preallocate = true;     return 0;
        case ARG_ALLOW_SHRINK:    c->allow_shrink = true;    return 0;
        case ARG_NO_SPARSE:       c->no_sparse = true;       return 0;
        case ARG_NO_PARTITIONS:   c->no_partitions = true;   return 0;
        case ARG_COMPRESS:        c->compress = true;        return 0;
        case ARG_OWNER:
                return parse_owner(arg, &c->owner);
        case ARG_SIZE:
                return parse_size_arg(c, arg, &c->size);
        case ARG_REVISIONS_TO_KEEP:
                r = parse_uint32(arg, &c->revisions_to_keep);
                if (r < 0)
                        return usage_error(NULL, "Invalid number of revisions '%s'.", arg);
                return 0;
        case ARG_REVISION:
                if (*arg == '\0')
                        return usage_error(NULL, "--revision= needs a revision.");
                c->revision = arg;
                return 0;
        case ARG_REMOVE:
                if (*arg == '\0')
                        return usage_error(NULL, "--remove= needs a revision.");
                c->remove = arg;
                return 0;
        }

        return -EINVAL;
}

static const char *option_name(unsigned bit) {
        for (const struct option *o = options; o->name; o++)
                if (o->val >= ARG_FORMAT && o->val < ARG_VERB_OPTION_END &&
                    (1U << (o->val - ARG_FORMAT)) == bit)
                        return o->name;
        return "?";
}

/* Returns 1 to go on with a command, 0 when done (--help, --version), -ERR_USAGE. */
static int parse_argv(Context *c, int argc, char *argv[]) {
        int opt, r;

        opterr = 0;     /* we say it ourselves, with our name rather than argv[0] */
        while ((opt = getopt_long(argc, argv, ":h", options, NULL)) >= 0)
                switch (opt) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("%s %s\n", program_invocation_short_name, CISTERN_VERSION);
                        return 0;
                case ARG_JSON:
                        c->json = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        c->ask_password = false;
                        break;
                case ':':
                        return usage_error(NULL, "Option '%s' needs a value.", argv[optind - 1]);
                case '?':
                        if (optopt >= 0x100)    /* a known long option, given "=VALUE" */
                                return usage_error(NULL, "Option '%s' takes no value.", argv[optind - 1]);
                        if (optopt > 0)
                                return usage_error(NULL, "Unknown option '-%c'.", optopt);
                        return usage_error(NULL, "Unknown option '%s'.", argv[optind - 1]);
                default:
                        r = parse_verb_option(c, opt, optarg);
                        if (r < 0)
                                return r;
                }

        return 1;
}

/* Checks the command's name, number of arguments and options before it runs. */
static int verb_prepare(Context *c, int argc, char *argv[]) {
        unsigned extra;
        int n = argc - optind;

        if (n <= 0)
                return usage_error(NULL, "Missing command.");

        c->verb = verb_find(argv[optind]);
        if (!c->verb)
                return usage_error(NULL, "Unknown command '%s'.", argv[optind]);

        if (n < c->verb->min_args)
                return usage_error(c, "Too few arguments for '%s'.", c->verb->name);
        if (c->verb->max_args != VERB_ANY_ARGS && n > c->verb->max_args)
                return usage_error(c, "Too many arguments for '%s'.", c->verb->name);

        extra = c->options_seen & ~c->verb->options;
        if (extra != 0)
                return usage_error(c, "Option --%s does not apply to '%s'.",
                                   option_name(extra & -extra), c->verb->name);
        return 0;
}

bool context_interactive(const Context *c) {
        return c->ask_password && c->verb &&
                ((c->verb->flags & VERB_AUTHORIZE) || (c->options_seen & OPTIONS_AUTHORIZE));
}

bool context_show_progress(const Context *c) {
        return !c->json && isatty(STDERR_FILENO);
}

int context_acquire_bus(Context *c, sd_bus **ret) {
        int r;

        if (!c->bus) {
                /* Before connecting, so that the agent inherits no fd of ours. A missing agent
                 * only means polkit cannot ask; the daemon's answer then says so. */
                if (context_interactive(c))
                        (void) polkit_agent_open();

                r = sd_bus_open_system(&c->bus);
                if (r < 0)
                        return log_error_errno(r, "Failed to connect to the system bus: %s", strerror(-r));
        }

        *ret = c->bus;
        return 0;
}

int context_get_objects(Context *c, Objects *ret) {
        sd_bus *bus = NULL;
        int r;

        r = context_acquire_bus(c, &bus);
        if (r < 0)
                return r;
        return objects_get(bus, ret);
}

int print_created_object(const Context *c, sd_bus_message *reply) {
        _cleanup_json_put_ json_object *o = NULL;
        const char *path;
        int r;

        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return log_error_errno(r, "Failed to parse the reply: %s", strerror(-r));
        if (!c->json)
                return 0;

        o = json_object_new_object();
        if (!o || json_add(o, "object", json_object_new_string(path)) < 0)
                return log_oom();
        return json_print(o);
}

static int run(Context *c, int argc, char *argv[]) {
        int r;

        r = parse_argv(c, argc, argv);
        if (r <= 0)
                return r;

        r = verb_prepare(c, argc, argv);
        if (r < 0)
                return r;

        return c->verb->run(c, argc - optind, argv + optind);
}

int main(int argc, char *argv[]) {
        Context c = { .ask_password = true };
        int r;

        r = run(&c, argc, argv);

        sd_bus_flush_close_unref(c.bus);
        polkit_agent_close();

        if (r == -ERR_USAGE)
                return 2;
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
