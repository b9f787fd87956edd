/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "ctl-util.h"

/* Options that belong to one or a few commands. The bits are in the order of the ARG_ values
 * in cisternctl.c, which maps between the two. */
typedef enum VerbOption {
        OPTION_FORMAT            = 1 << 0,
        OPTION_SNAP_ON_START     = 1 << 1,
        OPTION_SOURCE            = 1 << 2,
        OPTION_NO_SAVE_ON_STOP   = 1 << 3,
        OPTION_READ_ONLY         = 1 << 4,
        OPTION_PREALLOCATE       = 1 << 5,
        OPTION_OWNER             = 1 << 6,
        OPTION_REVISIONS_TO_KEEP = 1 << 7,
        OPTION_ALLOW_SHRINK      = 1 << 8,
        OPTION_REVISION          = 1 << 9,
        OPTION_REMOVE            = 1 << 10,
        OPTION_NO_SPARSE         = 1 << 11,
        OPTION_SIZE              = 1 << 12,
        OPTION_NO_PARTITIONS     = 1 << 13,
        OPTION_COMPRESS          = 1 << 14,
} VerbOption;

/* Options that make a command change something, so that it may need a password. */
#define OPTIONS_AUTHORIZE ((unsigned) OPTION_REMOVE)

typedef enum VerbFlags {
        /* The command calls methods that ask polkit: allow interactive authorization and start
         * a text agent on a terminal. */
        VERB_AUTHORIZE = 1 << 0,
} VerbFlags;

#define VERB_ANY_ARGS (-1)

typedef struct Context Context;

typedef struct Verb {
        const char *name;
        int min_args, max_args;         /* counting the command itself; VERB_ANY_ARGS: no limit */
        unsigned options;               /* VerbOption bits the command accepts */
        VerbFlags flags;
        int (*run)(Context *c, int argc, char *argv[]);
        const char *synopsis;           /* shown after "Usage: cisternctl " on usage errors */
} Verb;

struct Context {
        const Verb *verb;
        sd_bus *bus;

        bool json;
        bool ask_password;
        unsigned options_seen;          /* VerbOption bits given on the command line */

        const char *format;
        const char *source;
        bool snap_on_start;
        bool no_save_on_stop;
        bool read_only;
        bool preallocate;
        uint32_t owner;
        uint32_t revisions_to_keep;
        bool allow_shrink;
        const char *revision;
        const char *remove;
        bool no_sparse;
        uint64_t size;                  /* meaningful when OPTION_SIZE is in options_seen */
        bool no_partitions;
        bool compress;
};

/* Connects to the system bus on first use. Commands parse all their arguments before calling
 * it, so that a usage error never depends on the bus being there. */
int context_acquire_bus(Context *c, sd_bus **ret);

/* Everything the service holds (GetManagedObjects), over the bus context_acquire_bus() gives. */
typedef struct Objects Objects;
int context_get_objects(Context *c, Objects *ret);

/* Whether method calls of this command may ask for a password. */
bool context_interactive(const Context *c);

/* Prints "cisternctl: <message>" and the command's usage line; returns -ERR_USAGE. */
int usage_error(const Context *c, const char *format, ...) _printf_(2, 3);

/* "POOL/VOL" → its two halves, or a usage error. */
int parse_volume_arg(const Context *c, const char *arg, char **ret_pool, char **ret_volume);
int parse_size_arg(const Context *c, const char *arg, uint64_t *ret);

/* Finds POOL/VOL and prepares a call of one of its methods. */
int volume_method_call(Context *c, const char *pool, const char *volume, const char *member,
                       sd_bus_message **ret);

/* Parses POOL/VOL, finds it and prepares a call of a method whose only argument is its options,
 * given empty. */
int volume_call_empty_options(Context *c, const char *arg, const char *member,
                              char **ret_pool, char **ret_volume, sd_bus_message **ret);

/* Parses POOL/VOL and calls a method of it that takes only options, given empty, and returns
 * nothing; what names the action in the error message ("Failed to <what> volume P/V: …"). With
 * follow_job, the progress of the job the call starts is shown as bus_call_with_progress() does. */
int volume_call_simple(Context *c, const char *arg, const char *member, const char *what, bool follow_job);

/* Whether long operations draw a progress bar: on a terminal, and not with --json. */
bool context_show_progress(const Context *c);

/* Reads the object path a Create* method returned; with --json prints {"object": PATH}. */
int print_created_object(const Context *c, sd_bus_message *reply);

int verb_status(Context *c, int argc, char *argv[]);
int verb_pools(Context *c, int argc, char *argv[]);
int verb_pool_create(Context *c, int argc, char *argv[]);
int verb_pool_remove(Context *c, int argc, char *argv[]);
int verb_list(Context *c, int argc, char *argv[]);
int verb_create(Context *c, int argc, char *argv[]);
int verb_remove(Context *c, int argc, char *argv[]);
int verb_resize(Context *c, int argc, char *argv[]);
int verb_convert(Context *c, int argc, char *argv[]);
int verb_info(Context *c, int argc, char *argv[]);
int verb_start(Context *c, int argc, char *argv[]);
int verb_stop(Context *c, int argc, char *argv[]);
int verb_snapshot(Context *c, int argc, char *argv[]);
int verb_revisions(Context *c, int argc, char *argv[]);
int verb_revert(Context *c, int argc, char *argv[]);
int verb_clone(Context *c, int argc, char *argv[]);
int verb_import(Context *c, int argc, char *argv[]);
int verb_export(Context *c, int argc, char *argv[]);
int verb_attach(Context *c, int argc, char *argv[]);
int verb_detach(Context *c, int argc, char *argv[]);
int verb_mount(Context *c, int argc, char *argv[]);
int verb_unmount(Context *c, int argc, char *argv[]);
int verb_jobs(Context *c, int argc, char *argv[]);
int verb_cancel(Context *c, int argc, char *argv[]);
