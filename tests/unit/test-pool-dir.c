/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The dir driver with pool.c and volume.c on a real temporary directory, without a bus: the
 * Manager is built by hand and only the functions that never talk to sd-bus are called.
 *
 * Layout of a fixture: <base>/state/pools is the registry, <base>/pool the pool's directory,
 * <base>/outside what must survive whatever the pool does. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "errors.h"
#include "log.h"
#include "pool.h"
#include "store.h"
#include "volume.h"

#define MiB (UINT64_C(1) << 20)

struct fixture {
        char base[64];
        char pool_path[96];
        int base_fd;
        Manager *m;
        Pool *p;
        sd_bus_error error;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof *f);

        if (!f)
                return -1;
        f->base_fd = -EBADF;
        f->error = SD_BUS_ERROR_NULL;
        f->m = calloc(1, sizeof *f->m);
        if (!f->m)
                goto fail;
        f->m->state_fd = -EBADF;
        f->m->registry_fd = -EBADF;
        f->m->limits = (Limits) {
                .max_pools = 16,
                .max_volumes_per_pool = 64,
                .max_volume_size = UINT64_C(1) << 40,
                .max_revisions_to_keep = 100,
        };

        strcpy(f->base, "/tmp/cistern-test-pool-dir.XXXXXX");
        if (!mkdtemp(f->base))
                goto fail;
        snprintf(f->pool_path, sizeof f->pool_path, "%s/pool", f->base);
        f->base_fd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (f->base_fd < 0)
                goto fail;
        if (mkdirat(f->base_fd, "state", 0700) < 0 || mkdirat(f->base_fd, "state/pools", 0700) < 0 ||
            mkdirat(f->base_fd, "pool", 0755) < 0 || mkdirat(f->base_fd, "outside", 0755) < 0)
                goto fail;
        f->m->state_fd = openat(f->base_fd, "state", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        f->m->registry_fd = openat(f->base_fd, "state/pools", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (f->m->state_fd < 0 || f->m->registry_fd < 0)
                goto fail;
        *state = f;
        return 0;
fail:
        /* The directory, if made, is left for inspection: setup failing is unexpected. */
        if (f->m) {
                safe_close(f->m->state_fd);
                safe_close(f->m->registry_fd);
        }
        safe_close(f->base_fd);
        free(f->m);
        free(f);
        return -1;
}

static int nftw_remove(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        return remove(path) < 0 ? -1 : 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        int r;

        pool_free(f->p);
        sd_bus_error_free(&f->error);
        safe_close(f->m->registry_fd);
        safe_close(f->m->state_fd);
        free(f->m);
        safe_close(f->base_fd);
        /* Not remove_tree_beneath(): cleanup must not depend on the code under test. */
        r = nftw(f->base, nftw_remove, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        free(f);
        return r;
}

/* A Pool "p" of the dir driver on <base>/pool, opened; returns pool_open()'s error. */
static int pool_make(struct fixture *f, bool create, Pool **ret) {
        _cleanup_(json_object_putp) json_object *config = json_object_new_object();
        _cleanup_(pool_freep) Pool *p = NULL;
        int r;

        assert_non_null(config);
        assert_int_equal(json_object_object_add(config, "path", json_object_new_string(f->pool_path)), 0);
        assert_int_equal(pool_new(f->m, "p", &pool_driver_dir, &p), 0);
        assert_int_equal(pool_driver_dir.config_load(p, config), 0);

        sd_bus_error_free(&f->error);
        r = pool_open(p, create, &f->error);
        if (r < 0) {
                assert_true(sd_bus_error_is_set(&f->error));
                return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

static void pool_reopen(struct fixture *f) {
        f->p = pool_free(f->p);
        assert_int_equal(pool_make(f, false, &f->p), 0);
}

static int setup_pool(void **state) {
        struct fixture *f;

        if (setup(state) < 0)
                return -1;
        f = *state;
        if (pool_make(f, true, &f->p) < 0 || pool_save(f->p) < 0) {
                teardown(state);
                return -1;
        }
        return 0;
}

/* A volume created in f->p and added to it (the pool owns it). */
static Volume *volume_make_format(struct fixture *f, const char *name, uint64_t size, bool preallocate,
                                  const char *format) {
        Volume *v = NULL;

        assert_int_equal(volume_new(f->p, name, &v), 0);
        strcpy(v->settings.format, format);
        v->settings.created = 1700000000000000;
        assert_int_equal(volume_create(v, size, preallocate), 0);
        assert_int_equal(namemap_put(&f->p->volumes, v->name, v), 0);
        return v;
}

static Volume *volume_make(struct fixture *f, const char *name, uint64_t size, bool preallocate) {
        return volume_make_format(f, name, size, preallocate, "raw");
}

static bool exists(struct fixture *f, const char *path) {
        struct stat st;

        return fstatat(f->base_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static struct stat stat_of(struct fixture *f, const char *path) {
        struct stat st;

        if (fstatat(f->base_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
                fail_msg("stat %s: %s", path, strerror(errno));
        return st;
}

static void assert_mode(struct fixture *f, const char *path, mode_t type, mode_t mode) {
        struct stat st = stat_of(f, path);

        if ((st.st_mode & S_IFMT) != type || (st.st_mode & 07777) != mode)
                fail_msg("%s has mode %o, expected %o", path, (unsigned) st.st_mode, (unsigned) (type | mode));
}

/* Entries of a directory (relative to base) whose names start with prefix; "" counts all. */
static unsigned count_entries(struct fixture *f, const char *dir, const char *prefix) {
        int fd = openat(f->base_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct dirent *de;
        unsigned n = 0;
        DIR *d;

        assert_true(fd >= 0);
        d = fdopendir(fd);
        assert_non_null(d);
        while ((de = readdir(d)))
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") &&
                    strncmp(de->d_name, prefix, strlen(prefix)) == 0)
                        n++;
        closedir(d);
        return n;
}

static void write_file(struct fixture *f, const char *path, const char *content) {
        int fd = openat(f->base_fd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, content, strlen(content)), (ssize_t) strlen(content));
        close(fd);
}

/* ---- pools ---- */

static void create_makes_private_layout_and_records_the_pool(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *config;

        /* setup_pool() created and saved it. */
        assert_mode(f, "pool/volumes", S_IFDIR, 0700);
        assert_mode(f, "pool/pool.json", S_IFREG, 0600);
        assert_mode(f, "state/pools/p.json", S_IFREG, 0600);
        assert_int_equal(count_entries(f, "pool", STORE_STAGING_PREFIX), 0);
        assert_int_equal(count_entries(f, "state/pools", STORE_STAGING_PREFIX), 0);

        assert_int_equal(store_read_json(f->m->registry_fd, "p.json", 65536, &o), 0);
        assert_string_equal(json_get_string(o, "driver"), "dir");
        assert_true(json_object_object_get_ex(o, "config", &config));
        assert_string_equal(json_get_string(config, "path"), f->pool_path);
        assert_string_equal(json_get_string(config, "reflink"), "auto");

        assert_int_equal(f->p->volumes.n, 0);
        assert_true(f->p->size > 0);
        assert_true(f->p->available <= f->p->size);
        assert_true(f->p->usage > 0 && f->p->usage <= f->p->size);
}

static void open_without_create_refuses_an_empty_directory(void **state) {
        struct fixture *f = *state;
        Pool *p = NULL;

        assert_true(pool_make(f, false, &p) < 0);
        assert_string_equal(f->error.name, ERR_NOT_FOUND);
        assert_null(p);
        assert_false(exists(f, "pool/volumes"));
        assert_false(exists(f, "pool/pool.json"));
}

static void open_refuses_a_missing_directory(void **state) {
        struct fixture *f = *state;
        Pool *p = NULL;

        assert_int_equal(unlinkat(f->base_fd, "pool", AT_REMOVEDIR), 0);
        assert_true(pool_make(f, true, &p) < 0);
        assert_string_equal(f->error.name, ERR_NOT_FOUND);
        assert_false(exists(f, "pool"));
}

static void create_refuses_a_foreign_volumes_directory(void **state) {
        struct fixture *f = *state;
        Pool *p = NULL;

        assert_int_equal(mkdirat(f->base_fd, "pool/volumes", 0755), 0);
        write_file(f, "pool/volumes/precious", "data");

        assert_true(pool_make(f, true, &p) < 0);
        assert_string_equal(f->error.name, ERR_ALREADY_EXISTS);
        assert_true(exists(f, "pool/volumes/precious"));
        assert_false(exists(f, "pool/pool.json"));
}

/* An empty volumes/ without pool.json is what a crash in the middle of CreatePool leaves. */
static void create_reuses_an_empty_volumes_directory(void **state) {
        struct fixture *f = *state;
        Pool *p = NULL;

        assert_int_equal(mkdirat(f->base_fd, "pool/volumes", 0700), 0);

        assert_int_equal(pool_make(f, true, &p), 0);
        assert_non_null(p);
        pool_free(p);
}

static const char *saved_reflink_mode(Pool *p, json_object *holder) {
        assert_int_equal(pool_driver_dir.config_save(p, holder), 0);
        return json_get_string(holder, "reflink");
}

/* CreatePool on a pool's directory without a reflink setting keeps the one the pool has. */
static void adoption_keeps_the_recorded_reflink_mode(void **state) {
        _cleanup_(json_object_putp) json_object *config = json_object_new_object(), *saved = json_object_new_object();
        struct fixture *f = *state;
        Pool *p = NULL;

        assert_int_equal(json_object_object_add(config, "path", json_object_new_string(f->pool_path)), 0);
        assert_int_equal(json_object_object_add(config, "reflink", json_object_new_string("never")), 0);
        assert_int_equal(pool_new(f->m, "q", &pool_driver_dir, &p), 0);
        assert_int_equal(pool_driver_dir.config_load(p, config), 0);
        assert_int_equal(pool_open(p, true, &f->error), 0);
        assert_int_equal(pool_save(p), 0);
        p = pool_free(p);

        assert_int_equal(pool_make(f, true, &p), 0);
        assert_string_equal(saved_reflink_mode(p, saved), "never");
        assert_false(p->copy_on_write);
        pool_free(p);
}

/* A crash between writing a staging file and renaming it over pool.json leaves it behind. */
static void staging_files_beside_pool_json_are_swept(void **state) {
        struct fixture *f = *state;

        write_file(f, "pool/.stage-abcdef123456", "{}");
        write_file(f, "pool/notes", "kept");
        pool_reopen(f);
        assert_false(exists(f, "pool/.stage-abcdef123456"));
        assert_true(exists(f, "pool/notes"));
}

static void pool_settings_survive_reopening(void **state) {
        struct fixture *f = *state;

        f->p->revisions_to_keep = 5;
        assert_int_equal(pool_save(f->p), 0);
        pool_reopen(f);
        assert_int_equal(f->p->revisions_to_keep, 5);
}

static void saved_pool_loads_from_the_registry_with_its_volumes(void **state) {
        struct fixture *f = *state;
        Pool *p = NULL;
        Volume *v;

        f->p->revisions_to_keep = 3;
        volume_make(f, "root", 2 * MiB, false);
        v = volume_make(f, "private", 1 * MiB, false);
        v->settings.owner = 1000;
        assert_int_equal(volume_save(v), 0);
        assert_int_equal(pool_save(f->p), 0);
        f->p = pool_free(f->p);

        assert_int_equal(pool_load(f->m, "p", &p), 0);
        f->p = p;
        assert_string_equal(p->name, "p");
        assert_ptr_equal(p->driver, &pool_driver_dir);
        assert_int_equal(p->revisions_to_keep, 3);
        assert_int_equal(p->volumes.n, 2);
        v = pool_get_volume(p, "root");
        assert_non_null(v);
        assert_int_equal(v->size, 2 * MiB);
        assert_ptr_equal(v->pool, p);
        v = pool_get_volume(p, "private");
        assert_non_null(v);
        assert_int_equal(v->size, 1 * MiB);
        assert_int_equal(v->settings.owner, 1000);
}

static void create_on_an_existing_pool_adopts_it(void **state) {
        struct fixture *f = *state;

        volume_make(f, "a", 1 * MiB, false);
        volume_make(f, "b", 1 * MiB, false);
        f->p = pool_free(f->p);

        assert_int_equal(pool_make(f, true, &f->p), 0);
        assert_int_equal(f->p->volumes.n, 2);
        assert_non_null(pool_get_volume(f->p, "a"));
        assert_non_null(pool_get_volume(f->p, "b"));
}

static void forget_drops_the_registry_entry_and_keeps_the_data(void **state) {
        struct fixture *f = *state;

        volume_make(f, "keep", 1 * MiB, false);
        assert_int_equal(pool_forget(f->p), 0);
        assert_false(exists(f, "state/pools/p.json"));
        assert_true(exists(f, "pool/pool.json"));
        assert_true(exists(f, "pool/volumes/keep/image"));
        /* Forgetting twice is fine. */
        assert_int_equal(pool_forget(f->p), 0);

        pool_reopen(f);
        assert_non_null(pool_get_volume(f->p, "keep"));
}

static void load_of_an_unknown_pool_fails(void **state) {
        struct fixture *f = *state;
        Pool *p = NULL;

        assert_int_equal(pool_load(f->m, "nope", &p), -ENOENT);
        assert_null(p);
}

static void staging_leftovers_are_swept_at_open(void **state) {
        struct fixture *f = *state;

        volume_make(f, "v", 1 * MiB, false);
        f->p = pool_free(f->p);
        /* What a crash leaves: a half-built volume, a half-removed one, a stray staging file,
         * and a staging file inside a volume's own directory. */
        assert_int_equal(mkdirat(f->base_fd, "pool/volumes/.stage-abcdefabcdef", 0700), 0);
        write_file(f, "pool/volumes/.stage-abcdefabcdef/image", "half");
        assert_int_equal(mkdirat(f->base_fd, "pool/volumes/.stage-000000000000", 0700), 0);
        write_file(f, "pool/volumes/.stage-file", "x");
        write_file(f, "pool/volumes/v/.stage-json", "{");

        assert_int_equal(pool_make(f, false, &f->p), 0);
        assert_int_equal(count_entries(f, "pool/volumes", STORE_STAGING_PREFIX), 0);
        assert_int_equal(count_entries(f, "pool/volumes/v", STORE_STAGING_PREFIX), 0);
        assert_int_equal(f->p->volumes.n, 1);
        assert_non_null(pool_get_volume(f->p, "v"));
        assert_true(exists(f, "pool/volumes/v/image"));
        assert_true(exists(f, "pool/volumes/v/volume.json"));
}

static void unknown_entries_are_ignored_and_kept(void **state) {
        struct fixture *f = *state;

        volume_make(f, "real", 1 * MiB, false);
        f->p = pool_free(f->p);
        write_file(f, "pool/volumes/notes.txt", "mine");
        assert_int_equal(mkdirat(f->base_fd, "pool/volumes/empty", 0755), 0);
        write_file(f, "pool/volumes/empty/image", "not a volume");
        assert_int_equal(mkdirat(f->base_fd, "pool/volumes/broken", 0700), 0);
        write_file(f, "pool/volumes/broken/volume.json", "{ not json");
        write_file(f, "pool/volumes/broken/image", "");
        assert_int_equal(mkdirat(f->base_fd, "pool/volumes/bad name", 0700), 0);
        write_file(f, "pool/volumes/bad name/volume.json", "{ \"format\": \"raw\" }");
        write_file(f, "pool/volumes/bad name/image", "");
        write_file(f, "pool/volumes/.hidden", "dot");

        assert_int_equal(pool_make(f, false, &f->p), 0);
        assert_int_equal(f->p->volumes.n, 1);
        assert_non_null(pool_get_volume(f->p, "real"));
        assert_null(pool_get_volume(f->p, "notes.txt"));
        assert_null(pool_get_volume(f->p, "empty"));
        assert_null(pool_get_volume(f->p, "broken"));
        assert_null(pool_get_volume(f->p, "bad name"));

        assert_true(exists(f, "pool/volumes/notes.txt"));
        assert_true(exists(f, "pool/volumes/empty/image"));
        assert_true(exists(f, "pool/volumes/broken/volume.json"));
        assert_true(exists(f, "pool/volumes/broken/image"));
        assert_true(exists(f, "pool/volumes/bad name/volume.json"));
        assert_true(exists(f, "pool/volumes/.hidden"));
}

static void symlinked_volume_is_not_followed(void **state) {
        struct fixture *f = *state;
        char target[160];
        Volume *v = NULL;

        /* A complete volume outside the pool, and a link to it named like a volume. */
        volume_make(f, "model", 1 * MiB, false);
        assert_int_equal(renameat(f->base_fd, "pool/volumes/model", f->base_fd, "outside/evil"), 0);
        snprintf(target, sizeof target, "%s/outside/evil", f->base);
        assert_int_equal(symlinkat(target, f->base_fd, "pool/volumes/evil"), 0);
        assert_int_equal(symlinkat("../../outside/evil", f->base_fd, "pool/volumes/evil2"), 0);
        assert_int_equal(mkdirat(f->base_fd, "outside/evil/.stage-keepmeplease", 0700), 0);
        f->p = pool_free(f->p);

        assert_int_equal(pool_make(f, false, &f->p), 0);
        assert_int_equal(f->p->volumes.n, 0);
        assert_null(pool_get_volume(f->p, "evil"));
        assert_null(pool_get_volume(f->p, "evil2"));
        assert_int_equal(volume_load(f->p, "evil", &v), -ELOOP);
        assert_null(v);

        /* Nothing outside was touched, not even its staging-looking entry; the links stay. */
        assert_true(exists(f, "outside/evil/volume.json"));
        assert_true(exists(f, "outside/evil/image"));
        assert_true(exists(f, "outside/evil/.stage-keepmeplease"));
        assert_true(S_ISLNK(stat_of(f, "pool/volumes/evil").st_mode));
        assert_true(S_ISLNK(stat_of(f, "pool/volumes/evil2").st_mode));
}

static void busy_pool_names_the_reason(void **state) {
        struct fixture *f = *state;
        const char *reason = "unset";
        Volume *v;

        volume_make(f, "a", 1 * MiB, false);
        v = volume_make(f, "b", 1 * MiB, false);
        assert_false(pool_is_busy(f->p, &reason));
        assert_null(reason);

        v->state = VOLUME_STARTED;
        assert_true(volume_is_busy(v, NULL));
        assert_true(pool_is_busy(f->p, &reason));
        assert_non_null(reason);
        assert_string_equal(volume_state_to_string(v->state), "started");
}

/* Usage is the filesystem's, as statvfs tells it: a preallocated volume adds to it. Other
 * processes write to the same filesystem meanwhile, so the growth is looked for a few times. */
static void refresh_reads_usage_from_the_filesystem(void **state) {
        struct fixture *f = *state;
        bool grew = false;

        for (int attempt = 0; attempt < 5 && !grew; attempt++) {
                char name[16];
                uint64_t before;

                pool_refresh(f->p);
                before = f->p->usage;
                snprintf(name, sizeof name, "a%d", attempt);
                volume_make(f, name, 8 * MiB, true);
                pool_refresh(f->p);
                grew = f->p->usage >= before + 8 * MiB;
        }
        assert_true(grew);
        assert_true(f->p->usage <= f->p->size);
        assert_true(f->p->available <= f->p->size);
}

/* ---- volumes ---- */

/* Resize as the Resize method's worker does it. */
static int resize(Volume *v, uint64_t size) {
        VolumeWork w = { .volume = v, .size = size };

        return volume_resize_work(&w);
}

static void create_builds_a_private_volume_in_place(void **state) {
        struct fixture *f = *state;
        _cleanup_(json_object_putp) json_object *o = NULL;
        int vdir;
        Volume *v;

        v = volume_make(f, "vm-1.root", 3 * MiB, false);
        assert_int_equal(v->size, 3 * MiB);
        assert_true(v->usage < 3 * MiB);    /* sparse unless asked */
        assert_string_equal(v->object_path, "/org/cistern/Cistern1/pool/p/vm_2d1_2eroot");

        assert_mode(f, "pool/volumes/vm-1.root", S_IFDIR, 0700);
        assert_mode(f, "pool/volumes/vm-1.root/image", S_IFREG, 0600);
        assert_mode(f, "pool/volumes/vm-1.root/volume.json", S_IFREG, 0600);
        assert_int_equal(stat_of(f, "pool/volumes/vm-1.root/image").st_size, 3 * MiB);
        assert_int_equal(count_entries(f, "pool/volumes", ""), 1);
        assert_int_equal(count_entries(f, "pool/volumes/vm-1.root", STORE_STAGING_PREFIX), 0);

        vdir = volume_open_dir(v);
        assert_true(vdir >= 0);
        assert_int_equal(store_read_json(vdir, "volume.json", 65536, &o), 0);
        close(vdir);
        assert_string_equal(json_get_string(o, "format"), "raw");
        assert_true(json_get_bool(o, "save_on_stop", false));
}

static void preallocate_allocates_every_block(void **state) {
        struct fixture *f = *state;
        Volume *v;

        v = volume_make(f, "full", 4 * MiB, true);
        assert_int_equal(v->size, 4 * MiB);
        assert_true(v->usage >= 4 * MiB);
        assert_true((uint64_t) stat_of(f, "pool/volumes/full/image").st_blocks * 512 >= 4 * MiB);
}

static void create_refuses_an_existing_name_and_leaves_it_alone(void **state) {
        struct fixture *f = *state;
        Volume *dup = NULL;

        volume_make(f, "v", 1 * MiB, false);
        assert_int_equal(volume_new(f->p, "v", &dup), 0);
        assert_int_equal(volume_create(dup, 2 * MiB, false), -EEXIST);
        volume_free(dup);

        assert_int_equal(stat_of(f, "pool/volumes/v/image").st_size, 1 * MiB);
        assert_int_equal(count_entries(f, "pool/volumes", ""), 1);
        assert_int_equal(count_entries(f, "pool/volumes/v", ""), 3);   /* image, volume.json, revisions/ */
}

static void pool_refuses_two_volumes_of_one_name(void **state) {
        struct fixture *f = *state;
        Volume *other = NULL;

        volume_make(f, "v", 1 * MiB, false);
        assert_int_equal(volume_new(f->p, "v", &other), 0);
        assert_int_equal(namemap_put(&f->p->volumes, other->name, other), -EEXIST);
        assert_int_equal(f->p->volumes.n, 1);
        volume_free(other);
}

static void settings_round_trip_through_volume_json(void **state) {
        struct fixture *f = *state;
        Volume *v, *loaded = NULL;

        v = volume_make_format(f, "snap", 1 * MiB, false, "qcow2");      /* a real image, by qemu-img */
        v->settings.owner = 4242;
        v->settings.read_only = true;
        v->settings.save_on_stop = false;
        v->settings.snap_on_start = true;
        v->settings.source = strdup("base");
        assert_non_null(v->settings.source);
        v->settings.revisions_to_keep = 7;
        v->settings.created = UINT64_C(1712345678901234);
        v->next_revision = (UINT64_C(1) << 63) + 5;
        assert_int_equal(volume_save(v), 0);
        assert_int_equal(count_entries(f, "pool/volumes/snap", STORE_STAGING_PREFIX), 0);

        assert_int_equal(volume_load(f->p, "snap", &loaded), 0);
        assert_string_equal(loaded->name, "snap");
        assert_ptr_equal(loaded->pool, f->p);
        assert_string_equal(loaded->settings.format, "qcow2");
        assert_int_equal(loaded->settings.owner, 4242);
        assert_true(loaded->settings.read_only);
        assert_false(loaded->settings.save_on_stop);
        assert_true(loaded->settings.snap_on_start);
        assert_non_null(loaded->settings.source);
        assert_string_equal(loaded->settings.source, "base");
        assert_int_equal(loaded->settings.revisions_to_keep, 7);
        assert_true(loaded->settings.created == UINT64_C(1712345678901234));
        assert_true(loaded->next_revision == (UINT64_C(1) << 63) + 5);
        assert_int_equal(loaded->state, VOLUME_STOPPED);
        assert_int_equal(loaded->size, 1 * MiB);
        volume_free(loaded);
}

static void opposite_settings_round_trip_too(void **state) {
        struct fixture *f = *state;
        Volume *v, *loaded = NULL;

        /* The flags flipped the other way, and no source: nothing may be a constant. */
        f->p->revisions_to_keep = 9;
        v = volume_make(f, "origin", 1 * MiB, false);
        assert_int_equal(v->settings.revisions_to_keep, 9);
        v->settings.owner = 0;
        v->settings.read_only = false;
        v->settings.save_on_stop = true;
        v->settings.snap_on_start = false;
        v->settings.revisions_to_keep = 0;
        v->settings.created = 1;
        v->next_revision = 2;
        assert_int_equal(volume_save(v), 0);

        assert_int_equal(volume_load(f->p, "origin", &loaded), 0);
        assert_string_equal(loaded->settings.format, "raw");
        assert_int_equal(loaded->settings.owner, 0);
        assert_false(loaded->settings.read_only);
        assert_true(loaded->settings.save_on_stop);
        assert_false(loaded->settings.snap_on_start);
        assert_null(loaded->settings.source);
        assert_int_equal(loaded->settings.revisions_to_keep, 0);
        assert_int_equal(loaded->settings.created, 1);
        assert_int_equal(loaded->next_revision, 2);
        volume_free(loaded);
}

static void load_refuses_an_unknown_format(void **state) {
        struct fixture *f = *state;
        Volume *loaded = NULL;

        volume_make(f, "v", 1 * MiB, false);
        write_file(f, "pool/volumes/v/volume.json", "{ \"format\": \"vmdk\" }");
        assert_int_equal(volume_load(f->p, "v", &loaded), -EBADMSG);
        assert_null(loaded);
        write_file(f, "pool/volumes/v/volume.json", "{ \"format\": \"qcow2qcow2\" }");
        assert_int_equal(volume_load(f->p, "v", &loaded), -EBADMSG);
        write_file(f, "pool/volumes/v/volume.json", "{ }");
        assert_int_equal(volume_load(f->p, "v", &loaded), -EBADMSG);
        assert_true(exists(f, "pool/volumes/v/image"));
}

static void load_of_a_missing_volume_is_enoent(void **state) {
        struct fixture *f = *state;
        Volume *loaded = NULL;

        assert_int_equal(volume_load(f->p, "ghost", &loaded), -ENOENT);
        write_file(f, "pool/volumes/file", "x");
        assert_int_equal(volume_load(f->p, "file", &loaded), -ENOENT);
        assert_null(loaded);
}

static void stat_reads_the_size_from_the_image(void **state) {
        struct fixture *f = *state;
        int fd;
        Volume *v;

        v = volume_make(f, "v", 1 * MiB, false);
        /* The image changed behind cisternd's back: its size is what counts. */
        fd = openat(f->base_fd, "pool/volumes/v/image", O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 5 * MiB), 0);
        close(fd);

        assert_int_equal(volume_stat(v), 0);
        assert_int_equal(v->size, 5 * MiB);

        /* And when reloaded, from the image, not from anything remembered. */
        pool_reopen(f);
        assert_int_equal(pool_get_volume(f->p, "v")->size, 5 * MiB);
}

static void resize_grows_and_shrinks_the_image_keeping_data(void **state) {
        struct fixture *f = *state;
        char buf[6] = {};
        int fd;
        Volume *v;

        v = volume_make(f, "v", 1 * MiB, false);
        fd = openat(f->base_fd, "pool/volumes/v/image", O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "hello", 5, 4096), 5);
        close(fd);

        assert_int_equal(resize(v, 64 * MiB), 0);
        assert_int_equal(volume_stat(v), 0);
        assert_int_equal(v->size, 64 * MiB);
        assert_int_equal(stat_of(f, "pool/volumes/v/image").st_size, 64 * MiB);

        assert_int_equal(resize(v, 512 * 1024), 0);
        assert_int_equal(volume_stat(v), 0);
        assert_int_equal(v->size, 512 * 1024);
        assert_int_equal(stat_of(f, "pool/volumes/v/image").st_size, 512 * 1024);

        fd = openat(f->base_fd, "pool/volumes/v/image", O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pread(fd, buf, 5, 4096), 5);
        close(fd);
        assert_string_equal(buf, "hello");

        assert_int_equal(count_entries(f, "pool/volumes/v", STORE_STAGING_PREFIX), 0);
        pool_reopen(f);
        assert_int_equal(pool_get_volume(f->p, "v")->size, 512 * 1024);
}

static void image_symlinked_outside_is_never_touched(void **state) {
        struct fixture *f = *state;
        char target[160];
        Volume *v, *loaded = NULL;

        v = volume_make(f, "v", 1 * MiB, false);
        write_file(f, "outside/victim", "precious");
        snprintf(target, sizeof target, "%s/outside/victim", f->base);
        assert_int_equal(unlinkat(f->base_fd, "pool/volumes/v/image", 0), 0);
        assert_int_equal(symlinkat(target, f->base_fd, "pool/volumes/v/image"), 0);

        assert_true(resize(v, 2 * MiB) < 0);
        assert_true(volume_stat(v) < 0);
        assert_true(volume_load(f->p, "v", &loaded) < 0);
        assert_null(loaded);
        assert_int_equal(stat_of(f, "outside/victim").st_size, strlen("precious"));

        /* Removing the volume removes the link, not its target. */
        assert_int_equal(volume_remove(v), 0);
        namemap_remove(&f->p->volumes, v->name);
        volume_free(v);
        assert_int_equal(stat_of(f, "outside/victim").st_size, strlen("precious"));
}

static void remove_deletes_the_volume_and_nothing_else(void **state) {
        struct fixture *f = *state;
        Volume *v;

        volume_make(f, "stay", 1 * MiB, false);
        v = volume_make(f, "go", 2 * MiB, true);
        write_file(f, "pool/volumes/go/extra", "driver file");

        assert_int_equal(volume_remove(v), 0);
        namemap_remove(&f->p->volumes, v->name);
        volume_free(v);

        assert_false(exists(f, "pool/volumes/go"));
        assert_int_equal(count_entries(f, "pool/volumes", STORE_STAGING_PREFIX), 0);
        assert_int_equal(count_entries(f, "pool/volumes", ""), 1);
        assert_true(exists(f, "pool/volumes/stay/image"));
        assert_int_equal(f->p->volumes.n, 1);
        assert_null(pool_get_volume(f->p, "go"));

        pool_reopen(f);
        assert_int_equal(f->p->volumes.n, 1);
        assert_non_null(pool_get_volume(f->p, "stay"));
}

static void remove_of_a_vanished_volume_fails_cleanly(void **state) {
        struct fixture *f = *state;
        Volume *v;

        v = volume_make(f, "v", 1 * MiB, false);
        assert_int_equal(renameat(f->base_fd, "pool/volumes/v", f->base_fd, "outside/v"), 0);
        assert_int_equal(volume_remove(v), -ENOENT);
        assert_int_equal(count_entries(f, "pool/volumes", ""), 0);
        assert_true(exists(f, "outside/v/image"));
}

static void foreach_visits_every_volume_in_name_order(void **state) {
        static const char *const names[] = { "c", "a", "b", "a0" };
        static const char *const sorted[] = { "a", "a0", "b", "c" };
        struct fixture *f = *state;
        size_t n = 0;
        Volume *v;

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                volume_make(f, names[i], 512, false);
        NAMEMAP_FOREACH(v, &f->p->volumes) {
                assert_true(n < ELEMENTSOF(sorted));
                assert_string_equal(v->name, sorted[n++]);
        }
        assert_int_equal(n, ELEMENTSOF(sorted));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
#define TP(f) cmocka_unit_test_setup_teardown(f, setup_pool, teardown)

int main(void) {
        const struct CMUnitTest tests[] = {
                TP(create_makes_private_layout_and_records_the_pool),
                T(open_without_create_refuses_an_empty_directory),
                T(open_refuses_a_missing_directory),
                T(create_refuses_a_foreign_volumes_directory),
                T(create_reuses_an_empty_volumes_directory),
                T(adoption_keeps_the_recorded_reflink_mode),
                TP(staging_files_beside_pool_json_are_swept),
                TP(pool_settings_survive_reopening),
                TP(saved_pool_loads_from_the_registry_with_its_volumes),
                TP(create_on_an_existing_pool_adopts_it),
                TP(forget_drops_the_registry_entry_and_keeps_the_data),
                T(load_of_an_unknown_pool_fails),
                TP(staging_leftovers_are_swept_at_open),
                TP(unknown_entries_are_ignored_and_kept),
                TP(symlinked_volume_is_not_followed),
                TP(busy_pool_names_the_reason),
                TP(refresh_reads_usage_from_the_filesystem),
                TP(create_builds_a_private_volume_in_place),
                TP(preallocate_allocates_every_block),
                TP(create_refuses_an_existing_name_and_leaves_it_alone),
                TP(pool_refuses_two_volumes_of_one_name),
                TP(settings_round_trip_through_volume_json),
                TP(opposite_settings_round_trip_too),
                TP(load_refuses_an_unknown_format),
                TP(load_of_a_missing_volume_is_enoent),
                TP(stat_reads_the_size_from_the_image),
                TP(resize_grows_and_shrinks_the_image_keeping_data),
                TP(image_symlinked_outside_is_never_touched),
                TP(remove_deletes_the_volume_and_nothing_else),
                TP(remove_of_a_vanished_volume_fails_cleanly),
                TP(foreach_visits_every_volume_in_name_order),
        };

        /* The daemon's warnings about the junk these tests plant are expected. */
        log_set_max_level(LOG_ERR);
        umask(022);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
