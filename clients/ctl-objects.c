/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "ctl-objects.h"
#include "output.h"

static const BusProperty manager_map[] = {
        { "Version", "s",  bus_read_string, offsetof(ManagerInfo, version) },
        { "Drivers", "as", bus_read_strv,   offsetof(ManagerInfo, drivers) },
        { "Pools",   "ao", bus_read_count,  offsetof(ManagerInfo, n_pools) },
        { "Jobs",    "ao", bus_read_count,  offsetof(ManagerInfo, n_jobs) },
        {}
};

static const BusProperty pool_map[] = {
        { "Name",            "s",     bus_read_string, offsetof(Pool, name) },
        { "Driver",          "s",     bus_read_string, offsetof(Pool, driver) },
        { "Config",          "a{sv}", bus_read_json,   offsetof(Pool, config) },
        { "Size",            "t",     bus_read_u64,    offsetof(Pool, size) },
        { "Usage",           "t",     bus_read_u64,    offsetof(Pool, usage) },
        { "Available",       "t",     bus_read_u64,    offsetof(Pool, available) },
        { "CopyOnWrite",     "b",     bus_read_bool,   offsetof(Pool, copy_on_write) },
        { "RevisionsToKeep", "u",     bus_read_u32,    offsetof(Pool, revisions_to_keep) },
        { "Volumes",         "ao",    bus_read_count,  offsetof(Pool, n_volumes) },
        {}
};

static int read_revisions(sd_bus_message *m, void *field);
static int read_partitions(sd_bus_message *m, void *field);
static int read_mounts(sd_bus_message *m, void *field);

static const BusProperty volume_map[] = {
        { "Name",            "s",        bus_read_string, offsetof(Volume, name) },
        { "Pool",            "o",        bus_read_string, offsetof(Volume, pool_path) },
        { "Format",          "s",        bus_read_string, offsetof(Volume, format) },
        { "Size",            "t",        bus_read_u64,    offsetof(Volume, size) },
        { "Usage",           "t",        bus_read_u64,    offsetof(Volume, usage) },
        { "Owner",           "u",        bus_read_u32,    offsetof(Volume, owner) },
        { "ReadOnly",        "b",        bus_read_bool,   offsetof(Volume, read_only) },
        { "SaveOnStop",      "b",        bus_read_bool,   offsetof(Volume, save_on_stop) },
        { "SnapOnStart",     "b",        bus_read_bool,   offsetof(Volume, snap_on_start) },
        { "Source",          "o",        bus_read_string, offsetof(Volume, source_path) },
        { "RevisionsToKeep", "u",        bus_read_u32,    offsetof(Volume, revisions_to_keep) },
        { "State",           "s",        bus_read_string, offsetof(Volume, state) },
        { "Outdated",        "b",        bus_read_bool,   offsetof(Volume, outdated) },
        { "Revisions",       "a(st)",    read_revisions,  offsetof(Volume, revisions) },
        { "Created",         "t",        bus_read_u64,    offsetof(Volume, created) },
        { "Device",          "s",        bus_read_string, offsetof(Volume, device) },
        { "Partitions",      "a(ustts)", read_partitions, offsetof(Volume, partitions) },
        { "Mounts",          "a(us)",    read_mounts,     offsetof(Volume, mounts) },
        {}
};

static const BusProperty job_map[] = {
        { "Operation",       "s",  bus_read_string, offsetof(Job, operation) },
        { "Objects",         "ao", bus_read_strv,   offsetof(Job, objects) },
        { "Progress",        "d",  bus_read_double, offsetof(Job, progress) },
        { "ProgressValid",   "b",  bus_read_bool,   offsetof(Job, progress_valid) },
        { "BytesTotal",      "t",  bus_read_u64,    offsetof(Job, bytes_total) },
        { "BytesDone",       "t",  bus_read_u64,    offsetof(Job, bytes_done) },
        { "Rate",            "t",  bus_read_u64,    offsetof(Job, rate) },
        { "StartTime",       "t",  bus_read_u64,    offsetof(Job, start_time) },
        { "ExpectedEndTime", "t",  bus_read_u64,    offsetof(Job, expected_end_time) },
        { "StartedByUID",    "u",  bus_read_u32,    offsetof(Job, started_by) },
        { "Cancelable",      "b",  bus_read_bool,   offsetof(Job, cancelable) },
        {}
};

void manager_info_done(ManagerInfo *m) {
        free(m->version);
        strv_free(m->drivers);
        *m = (ManagerInfo) {};
}

void pool_done(Pool *p) {
        free(p->path);
        free(p->name);
        free(p->driver);
        json_object_put(p->config);
        *p = (Pool) {};
}

void volume_done(Volume *v) {
        free(v->path);
        free(v->name);
        free(v->pool_path);
        free(v->format);
        free(v->source_path);
        free(v->state);
        free(v->device);
        json_object_put(v->revisions);
        json_object_put(v->partitions);
        json_object_put(v->mounts);
        free(v->pool_name);
        free(v->source);
        *v = (Volume) {};
}

void job_done(Job *j) {
        free(j->path);
        free(j->id);
        free(j->operation);
        strv_free(j->objects);
        *j = (Job) {};
}

void objects_done(Objects *o) {
        for (size_t i = 0; i < o->n_pools; i++)
                pool_done(&o->pools[i]);
        for (size_t i = 0; i < o->n_volumes; i++)
                volume_done(&o->volumes[i]);
        for (size_t i = 0; i < o->n_jobs; i++)
                job_done(&o->jobs[i]);
        free(o->pools);
        free(o->volumes);
        free(o->jobs);
        *o = (Objects) {};
}

/* Reads an array of structures with the given signature, handing each element to make_json. */
static int read_struct_array(sd_bus_message *m, const char *contents, bus_json_reader_t make_json,
                             void *field) {
        json_object **p = field, *a = NULL;
        int r;

        r = bus_read_json_array(m, 'a', contents, make_json, &a);
        if (r < 0)
                return r;

        json_object_put(*p);
        *p = a;
        return 0;
}

static int revision_json(sd_bus_message *m, json_object **ret) {
        _cleanup_json_put_ json_object *o = json_object_new_object();
        const char *id;
        uint64_t created;
        int r;

        r = sd_bus_message_read(m, "(st)", &id, &created);
        if (r < 0)
                return r;
        if (!o ||
            json_add(o, "id", json_object_new_string(id)) < 0 ||
            json_add(o, "created", json_object_new_uint64(created)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int partition_json(sd_bus_message *m, json_object **ret) {
        _cleanup_json_put_ json_object *o = json_object_new_object();
        const char *device, *fstype;
        uint64_t start, size;
        uint32_t number;
        int r;

        r = sd_bus_message_read(m, "(ustts)", &number, &device, &start, &size, &fstype);
        if (r < 0)
                return r;
        if (!o ||
            json_add(o, "number", json_object_new_int64(number)) < 0 ||
            json_add(o, "device", json_object_new_string(device)) < 0 ||
            json_add(o, "start", json_object_new_uint64(start)) < 0 ||
            json_add(o, "size", json_object_new_uint64(size)) < 0 ||
            json_add(o, "fstype", json_object_new_string(fstype)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int mount_json(sd_bus_message *m, json_object **ret) {
        _cleanup_json_put_ json_object *o = json_object_new_object();
        const char *where;
        uint32_t partition;
        int r;

        r = sd_bus_message_read(m, "(us)", &partition, &where);
        if (r < 0)
                return r;
        if (!o ||
            json_add(o, "partition", json_object_new_int64(partition)) < 0 ||
            json_add(o, "mount_point", json_object_new_string(where)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

static int read_revisions(sd_bus_message *m, void *field) {
        return read_struct_array(m, "(st)", revision_json, field);
}

static int read_partitions(sd_bus_message *m, void *field) {
        return read_struct_array(m, "(ustts)", partition_json, field);
}

static int read_mounts(sd_bus_message *m, void *field) {
        return read_struct_array(m, "(us)", mount_json, field);
}

int manager_info_get(sd_bus *bus, ManagerInfo *ret) {
        _cleanup_bus_message_unref_ sd_bus_message *reply = NULL;
        ManagerInfo info = {};
        int r;

        r = bus_get_all(bus, CISTERN_ROOT_PATH, CISTERN_MANAGER_IFACE, &reply);
        if (r < 0)
                return r;

        r = bus_read_properties(reply, manager_map, &info);
        if (r < 0) {
                manager_info_done(&info);
                return log_error_errno(r, "Failed to parse the service's properties: %s", strerror(-r));
        }

        *ret = info;
        return 0;
}

int job_read_properties(sd_bus_message *m, Job *j) {
        return bus_read_properties(m, job_map, j);
}

typedef struct ObjectsBuilder {
        Objects objects;
        size_t allocated_pools;
        size_t allocated_volumes;
        size_t allocated_jobs;
} ObjectsBuilder;

static int grow(void **array, size_t *allocated, size_t need, size_t size) {
        size_t n;
        void *p;

        if (need <= *allocated)
                return 0;

        n = need < 16 ? 16 : need * 2;
        p = reallocarray(*array, n, size);
        if (!p)
                return -ENOMEM;
        *array = p;
        *allocated = n;
        return 0;
}

static int builder_add_pool(ObjectsBuilder *b, sd_bus_message *m, const char *path) {
        Objects *o = &b->objects;
        Pool p = {};
        int r;

        r = grow((void **) &o->pools, &b->allocated_pools, o->n_pools + 1, sizeof(Pool));
        if (r < 0)
                return r;

        p.path = strdup(path);
        if (!p.path)
                return -ENOMEM;
        r = bus_read_properties(m, pool_map, &p);
        if (r < 0) {
                pool_done(&p);
                return r;
        }

        o->pools[o->n_pools++] = p;
        return 0;
}

static int builder_add_volume(ObjectsBuilder *b, sd_bus_message *m, const char *path) {
        Objects *o = &b->objects;
        Volume v = {};
        int r;

        r = grow((void **) &o->volumes, &b->allocated_volumes, o->n_volumes + 1, sizeof(Volume));
        if (r < 0)
                return r;

        v.path = strdup(path);
        if (!v.path)
                return -ENOMEM;
        r = bus_read_properties(m, volume_map, &v);
        if (r < 0) {
                volume_done(&v);
                return r;
        }

        o->volumes[o->n_volumes++] = v;
        return 0;
}

int job_id_from_path(const char *path, char **ret) {
        const char *slash;
        int r;

        r = sd_bus_path_decode(path, CISTERN_JOB_PATH_PREFIX, ret);
        if (r != 0)
                return r < 0 ? r : 0;

        slash = strrchr(path, '/');
        *ret = strdup(slash ? slash + 1 : path);
        return *ret ? 0 : -ENOMEM;
}

static int builder_add_job(ObjectsBuilder *b, sd_bus_message *m, const char *path) {
        Objects *o = &b->objects;
        Job j = {};
        int r;

        r = grow((void **) &o->jobs, &b->allocated_jobs, o->n_jobs + 1, sizeof(Job));
        if (r < 0)
                return r;

        j.path = strdup(path);
        if (!j.path)
                return -ENOMEM;
        r = job_id_from_path(path, &j.id);
        if (r >= 0)
                r = job_read_properties(m, &j);
        if (r < 0) {
                job_done(&j);
                return r;
        }

        o->jobs[o->n_jobs++] = j;
        return 0;
}

typedef struct ObjectInterface {
        ObjectsBuilder *builder;
        const char *path;
} ObjectInterface;

/* One interface of an object: keeps pools, volumes and jobs, skips anything newer. */
static int builder_add_interface(sd_bus_message *m, const char *iface, void *userdata) {
        const ObjectInterface *o = userdata;

        if (streq(iface, CISTERN_POOL_IFACE))
                return builder_add_pool(o->builder, m, o->path);
        if (streq(iface, CISTERN_VOLUME_IFACE))
                return builder_add_volume(o->builder, m, o->path);
        if (streq(iface, CISTERN_JOB_IFACE))
                return builder_add_job(o->builder, m, o->path);
        return sd_bus_message_skip(m, "a{sv}");
}

/* One object's a{sa{sv}}. */
static int builder_add_object(sd_bus_message *m, const char *path, void *userdata) {
        ObjectInterface o = { userdata, path };

        return bus_read_dict(m, "{sa{sv}}", builder_add_interface, &o);
}

static int builder_read(ObjectsBuilder *b, sd_bus_message *reply) {
        return bus_read_dict(reply, "{oa{sa{sv}}}", builder_add_object, b);
}

static int pool_cmp_path(const void *a, const void *b) {
        return strcmp(((const Pool *) a)->path, ((const Pool *) b)->path);
}

static int pool_cmp_name(const void *a, const void *b) {
        return strcmp(strempty(((const Pool *) a)->name), strempty(((const Pool *) b)->name));
}

static int volume_cmp_path(const void *a, const void *b) {
        return strcmp(((const Volume *) a)->path, ((const Volume *) b)->path);
}

static int volume_cmp_name(const void *a, const void *b) {
        const Volume *x = a, *y = b;
        int c;

        c = strcmp(strempty(x->pool_name), strempty(y->pool_name));
        return c != 0 ? c : strcmp(strempty(x->name), strempty(y->name));
}

/* Job 9 before job 10. */
static int job_cmp_id(const void *a, const void *b) {
        const Job *x = a, *y = b;
        size_t lx = strspn(x->id, "0123456789"), ly = strspn(y->id, "0123456789");

        if (x->id[lx] == '\0' && y->id[ly] == '\0' && lx != ly)
                return lx < ly ? -1 : 1;
        return strcmp(x->id, y->id);
}

static int pool_key_cmp(const void *key, const void *elem) {
        return strcmp(key, ((const Pool *) elem)->path);
}

static int volume_key_cmp(const void *key, const void *elem) {
        return strcmp(key, ((const Volume *) elem)->path);
}

static int strdup_join(const char *a, const char *b, char **ret) {
        char *s;

        if (asprintf(&s, "%s/%s", a, b) < 0)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

/* Replaces the object paths of each volume's pool and source with names, by binary search:
 * listing 10,000 volumes must not cost 10,000 × 10,000 comparisons. */
static int objects_resolve(Objects *o) {
        qsort_safe(o->pools, o->n_pools, sizeof(Pool), pool_cmp_path);
        qsort_safe(o->volumes, o->n_volumes, sizeof(Volume), volume_cmp_path);

        for (size_t i = 0; i < o->n_volumes; i++) {
                Volume *v = &o->volumes[i];
                const Pool *p = NULL;

                if (v->pool_path)
                        p = bsearch(v->pool_path, o->pools, o->n_pools, sizeof(Pool), pool_key_cmp);
                if (p && p->name && !(v->pool_name = strdup(p->name)))
                        return -ENOMEM;
        }

        for (size_t i = 0; i < o->n_volumes; i++) {
                Volume *v = &o->volumes[i];
                const Volume *s = NULL;

                if (v->source_path && !streq(v->source_path, "/"))
                        s = bsearch(v->source_path, o->volumes, o->n_volumes, sizeof(Volume), volume_key_cmp);
                if (s && s->pool_name && s->name && strdup_join(s->pool_name, s->name, &v->source) < 0)
                        return -ENOMEM;
        }

        qsort_safe(o->pools, o->n_pools, sizeof(Pool), pool_cmp_name);
        qsort_safe(o->volumes, o->n_volumes, sizeof(Volume), volume_cmp_name);
        qsort_safe(o->jobs, o->n_jobs, sizeof(Job), job_cmp_id);
        return 0;
}

int objects_name_of(const Objects *o, const char *path, char **ret) {
        char *s = NULL;

        /* Linear: called for the few objects of the few running jobs. */
        for (size_t i = 0; i < o->n_volumes; i++) {
                const Volume *v = &o->volumes[i];

                if (streq(v->path, path) && v->pool_name && v->name) {
                        if (strdup_join(v->pool_name, v->name, &s) < 0)
                                return -ENOMEM;
                        *ret = s;
                        return 1;
                }
        }

        for (size_t i = 0; i < o->n_pools; i++)
                if (streq(o->pools[i].path, path) && o->pools[i].name) {
                        s = strdup(o->pools[i].name);
                        if (!s)
                                return -ENOMEM;
                        *ret = s;
                        return 1;
                }

        *ret = NULL;
        return 0;
}

int objects_get(sd_bus *bus, Objects *ret) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_bus_message_unref_ sd_bus_message *reply = NULL;
        ObjectsBuilder b = {};
        int r;

        r = sd_bus_call_method(bus, CISTERN_SERVICE, CISTERN_ROOT_PATH,
                               "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                               &error, &reply, NULL);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to list the service's objects");

        r = builder_read(&b, reply);
        if (r >= 0)
                r = objects_resolve(&b.objects);
        if (r < 0) {
                objects_done(&b.objects);
                return log_error_errno(r, "Failed to parse the service's objects: %s", strerror(-r));
        }

        *ret = b.objects;
        return 0;
}

static int get_name(sd_bus *bus, const char *path, const char *iface, char **ret) {
        _cleanup_bus_error_free_ sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_get_property_string(bus, CISTERN_SERVICE, path, iface, "Name", &error, ret);
        if (r < 0)
                return log_bus_error(r, &error, "Failed to read the name of %s", path);
        return 0;
}

/* "POOL/VOL" of the volume at path. Quiet: the caller decides whether a failure matters. */
static int volume_full_name(sd_bus *bus, const char *path, char **ret) {
        _cleanup_bus_message_unref_ sd_bus_message *reply = NULL;
        _cleanup_free_ char *name = NULL, *pool_name = NULL;
        const char *pool_path;
        int r;

        r = sd_bus_get_property_string(bus, CISTERN_SERVICE, path, CISTERN_VOLUME_IFACE, "Name",
                                       NULL, &name);
        if (r < 0)
                return r;
        r = sd_bus_get_property(bus, CISTERN_SERVICE, path, CISTERN_VOLUME_IFACE, "Pool",
                                NULL, &reply, "o");
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &pool_path);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, CISTERN_SERVICE, pool_path, CISTERN_POOL_IFACE, "Name",
                                       NULL, &pool_name);
        if (r < 0)
                return r;

        return strdup_join(pool_name, name, ret);
}

int volume_get(sd_bus *bus, const char *path, Volume *ret) {
        _cleanup_bus_message_unref_ sd_bus_message *reply = NULL;
        Volume v = {};
        int r;

        r = bus_get_all(bus, path, CISTERN_VOLUME_IFACE, &reply);
        if (r < 0)
                return r;

        v.path = strdup(path);
        if (!v.path)
                return log_oom();
        r = bus_read_properties(reply, volume_map, &v);
        if (r < 0) {
                volume_done(&v);
                return log_error_errno(r, "Failed to parse the properties of %s: %s", path, strerror(-r));
        }

        r = v.pool_path ? get_name(bus, v.pool_path, CISTERN_POOL_IFACE, &v.pool_name) : 0;
        /* A source that vanished in the meantime is not worth failing over: it shows as none. */
        if (r >= 0 && v.source_path && !streq(v.source_path, "/"))
                (void) volume_full_name(bus, v.source_path, &v.source);
        if (r < 0) {
                volume_done(&v);
                return r;
        }

        *ret = v;
        return 0;
}
