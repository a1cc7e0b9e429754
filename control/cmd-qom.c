/* SPDX-License-Identifier: MIT */
/* QOM introspection over blockd's objects: qom-list, qom-get, qom-set,
 * qom-list-types, qom-list-properties; and x-blockdev-set-iothread.
 *
 * blockd has no object model of its own: the tree QEMU shows is built
 * here from the registries.
 *
 *   /            type, objects (child<container>), chardevs (child<..>)
 *   /objects     type, ID (child<qom-type>) per object
 *   /objects/ID  type and the properties of its class, in QSD 7.2's order
 *   /chardevs/ID type (child<chardev-socket>)
 *
 * Values are read from what the object keeps: a throttle group's live
 * configuration, an iothread's values, otherwise the properties it was
 * created with and QEMU's defaults.  qom-set changes a throttle group's
 * 'limits' live and an iothread's values; others are refused.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "objects/authz-int.h"   /* first: it sets G_LOG_DOMAIN */
#include "control/input.h"
#include "control/qmp-int.h"
#include "formats/throttle-group.h"
#include "graph/error.h"
#include "graph/main-thread.h"
#include "export/export.h"
#include "objects/iothread.h"
#include "objects/object.h"
#include "objects/tls-creds.h"

/* --- the classes --- */

typedef struct {
    const char *name;
    const char *type;        /* QOM property type */
    const char *def;         /* default as JSON text, or NULL */
} QomProp;

typedef struct {
    const char *name;
    const char *parent;      /* NULL: the root 'object' */
    gboolean abstract;
    const QomProp *props;    /* {NULL}-terminated, after "type" */
} QomClass;

#define TG_PROP(n) { "x-" n, "int", "0" }
static const QomProp tg_props[] = {
    TG_PROP("bps-write-max-length"), TG_PROP("iops-total-max-length"),
    TG_PROP("iops-size"), { "limits", "ThrottleLimits", NULL },
    TG_PROP("bps-total"), TG_PROP("iops-read-max-length"),
    TG_PROP("bps-write"), TG_PROP("iops-write-max-length"),
    TG_PROP("bps-read-max"), TG_PROP("iops-read-max"),
    TG_PROP("bps-total-max"), TG_PROP("bps-read-max-length"),
    TG_PROP("iops-read"), TG_PROP("bps-read"), TG_PROP("bps-write-max"),
    TG_PROP("iops-total-max"), TG_PROP("iops-total"), TG_PROP("iops-write"),
    TG_PROP("bps-total-max-length"), TG_PROP("iops-write-max"),
    { NULL } };
static const QomProp iothread_props[] = {
    { "thread-pool-min", "int", NULL }, { "aio-max-batch", "int", NULL },
    { "thread-pool-max", "int", NULL }, { "poll-max-ns", "int", NULL },
    { "poll-grow", "int", NULL }, { "poll-shrink", "int", NULL },
    { NULL } };
static const QomProp secret_props[] = {
    { "iv", "string", "\"\"" }, { "keyid", "string", "\"\"" },
    { "loaded", "bool", "true" },
    { "format", "QCryptoSecretFormat", "\"raw\"" },
    { "file", "string", "\"\"" }, { "data", "string", "\"\"" },
    { NULL } };
static const QomProp authz_simple_props[] = {
    { "identity", "string", "\"\"" }, { NULL } };
static const QomProp authz_list_props[] = {
    { "policy", "QAuthZListPolicy", "\"deny\"" },
    { "rules", "QAuthZListRule", "[]" }, { NULL } };
static const QomProp authz_listfile_props[] = {
    { "filename", "string", "\"\"" }, { "refresh", "bool", "true" },
    { NULL } };
#define TLS_HEAD \
    { "endpoint", "QCryptoTLSCredsEndpoint", "\"client\"" }, \
    { "dir", "string", "\"\"" }, { "verify-peer", "bool", "true" }, \
    { "priority", "string", "\"\"" }
static const QomProp tls_anon_props[] = {
    TLS_HEAD, { "loaded", "bool", "true" }, { NULL } };
static const QomProp tls_psk_props[] = {
    TLS_HEAD, { "username", "string", "\"\"" },
    { "loaded", "bool", "true" }, { NULL } };
static const QomProp tls_x509_props[] = {
    TLS_HEAD, { "sanity-check", "bool", "true" },
    { "passwordid", "string", "\"\"" }, { "loaded", "bool", "true" },
    { NULL } };
static const QomProp chardev_socket_props[] = {
    { "connected", "bool", NULL }, { "addr", "SocketAddress", NULL },
    { NULL } };
static const QomProp no_props[] = { { NULL } };

static const QomClass classes[] = {
    { "container", NULL, FALSE, no_props },
    { "throttle-group", NULL, FALSE, tg_props },
    { "event-loop-base", NULL, TRUE, no_props },
    { "iothread", "event-loop-base", FALSE, iothread_props },
    { "secret_common", NULL, TRUE, no_props },
    { "secret", "secret_common", FALSE, secret_props },
    { "authz", NULL, TRUE, no_props },
    { "authz-simple", "authz", FALSE, authz_simple_props },
    { "authz-list", "authz", FALSE, authz_list_props },
    { "authz-list-file", "authz", FALSE, authz_listfile_props },
    { "tls-creds", NULL, TRUE, no_props },
    { "tls-creds-anon", "tls-creds", FALSE, tls_anon_props },
    { "tls-creds-psk", "tls-creds", FALSE, tls_psk_props },
    { "tls-creds-x509", "tls-creds", FALSE, tls_x509_props },
    { "chardev", NULL, TRUE, no_props },
    { "chardev-socket", "chardev", FALSE, chardev_socket_props },
    { "chardev-ringbuf", "chardev", FALSE, no_props },
    { NULL } };

static const QomClass *class_find(const char *name)
{
    /* blockd's object type 'authz-listfile' is QEMU's class
     * 'authz-list-file'. */
    if (strcmp(name, "authz-listfile") == 0) {
        name = "authz-list-file";
    }
    for (const QomClass *c = classes; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

static gboolean class_implements(const QomClass *c, const char *name)
{
    while (c) {
        if (strcmp(c->name, name) == 0) {
            return TRUE;
        }
        if (!c->parent) {
            return strcmp(name, "object") == 0;
        }
        c = class_find(c->parent);
    }
    return FALSE;
}

/* --- the tree --- */

typedef enum { PATH_ROOT, PATH_OBJECTS, PATH_CHARDEVS, PATH_OBJECT,
               PATH_THROTTLE_GROUP, PATH_CHARDEV } PathKind;

typedef struct {
    PathKind kind;
    char *id;                 /* PATH_OBJECT, _THROTTLE_GROUP, _CHARDEV */
    BdObject *obj;            /* PATH_OBJECT: a reference */
    const QomClass *cls;
} QomPath;

static void qom_path_clear(QomPath *p)
{
    g_clear_pointer(&p->id, g_free);
    g_clear_pointer(&p->obj, bd_object_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(QomPath, qom_path_clear)

static gboolean chardev_exists(const char *id)
{
    g_autoptr(GPtrArray) ids = bd_chardev_ids();

    for (guint i = 0; i < ids->len; i++) {
        if (strcmp(ids->pdata[i], id) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean resolve_object(const char *id, QomPath *p)
{
    if (bd_throttle_group_exists(id)) {
        p->kind = PATH_THROTTLE_GROUP;
        p->cls = class_find("throttle-group");
    } else if ((p->obj = bd_object_find(id))) {
        p->kind = PATH_OBJECT;
        p->cls = class_find(p->obj->type->name);
        g_assert(p->cls);
    } else {
        return FALSE;
    }
    p->id = g_strdup(id);
    return TRUE;
}

static gboolean ringbuf_exists(const char *id)
{
    g_autoptr(GPtrArray) ids = bd_ringbuf_ids();

    for (guint i = 0; i < ids->len; i++) {
        if (strcmp(ids->pdata[i], id) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean resolve_chardev(const char *id, QomPath *p)
{
    gboolean ring = ringbuf_exists(id);

    if (!ring && !chardev_exists(id)) {
        return FALSE;
    }
    p->kind = PATH_CHARDEV;
    p->cls = class_find(ring ? "chardev-ringbuf" : "chardev-socket");
    p->id = g_strdup(id);
    return TRUE;
}

/* QEMU's object_resolve_path: absolute paths component by component
 * (empty components skipped), or a partial path matched at the end of
 * exactly one path (here: an object or chardev id).  A partial path
 * matching several is "ambiguous" for qom-list ('tell_ambiguous'),
 * not found for the others, as QEMU. */
static gboolean resolve_path(const char *path, QomPath *p,
                             gboolean tell_ambiguous, GError **errp)
{
    g_auto(GStrv) parts = NULL;
    GPtrArray *comps = g_ptr_array_new();
    gboolean ok = FALSE, ambiguous = FALSE;

    *p = (QomPath){ .kind = PATH_ROOT, .cls = class_find("container") };
    if (path[0] != '/') {
        gboolean obj = !strchr(path, '/') && bd_throttle_group_exists(path);
        g_autoptr(BdObject) o = strchr(path, '/') ? NULL
                                                  : bd_object_find(path);
        gboolean chr = !strchr(path, '/') &&
                       (chardev_exists(path) || ringbuf_exists(path));

        if ((obj || o) && !chr) {
            ok = resolve_object(path, p);
        } else if (chr && !obj && !o) {
            ok = resolve_chardev(path, p);
        } else if (strcmp(path, "objects") == 0 ||
                   strcmp(path, "chardevs") == 0) {
            p->kind = path[0] == 'o' ? PATH_OBJECTS : PATH_CHARDEVS;
            ok = TRUE;
        } else {
            /* An empty partial path matches everything; an id both an
             * object's and a chardev's matches two. */
            ambiguous = !path[0] || ((obj || o) && chr);
        }
        goto out;
    }
    parts = g_strsplit(path, "/", -1);
    for (char **s = parts; *s; s++) {
        if (**s) {
            g_ptr_array_add(comps, *s);
        }
    }
    if (comps->len == 0) {
        ok = TRUE;
    } else if (strcmp(comps->pdata[0], "objects") == 0 ||
               strcmp(comps->pdata[0], "chardevs") == 0) {
        gboolean objects = strcmp(comps->pdata[0], "objects") == 0;

        if (comps->len == 1) {
            p->kind = objects ? PATH_OBJECTS : PATH_CHARDEVS;
            ok = TRUE;
        } else if (comps->len == 2) {
            ok = objects ? resolve_object(comps->pdata[1], p)
                         : resolve_chardev(comps->pdata[1], p);
        }
    }
out:
    g_ptr_array_unref(comps);
    if (!ok && ambiguous && tell_ambiguous) {
        qom_path_clear(p);
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Path '%s' is ambiguous", path);
    } else if (!ok) {
        qom_path_clear(p);
        g_set_error(errp, BD_ERROR, BD_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", path);
    }
    return ok;
}

/* The children of a container, as (name, class name) pairs. */
static GPtrArray *container_children(PathKind kind)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);

    if (kind == PATH_ROOT) {
        g_ptr_array_add(out, g_strdup("objects"));
        g_ptr_array_add(out, g_strdup("container"));
        g_ptr_array_add(out, g_strdup("chardevs"));
        g_ptr_array_add(out, g_strdup("container"));
    } else if (kind == PATH_OBJECTS) {
        g_autoptr(GPtrArray) ids = bd_cmd_object_ids();

        for (guint i = 0; i < ids->len; i++) {
            g_autoptr(BdObject) o = bd_object_find(ids->pdata[i]);
            const char *cls = "throttle-group";

            if (o) {
                cls = class_find(o->type->name)->name;
            }
            g_ptr_array_add(out, g_strdup(ids->pdata[i]));
            g_ptr_array_add(out, g_strdup(cls));
        }
    } else if (kind == PATH_CHARDEVS) {
        g_autoptr(GPtrArray) ids = bd_chardev_ids();

        g_autoptr(GPtrArray) rings = bd_ringbuf_ids();

        for (guint i = 0; i < rings->len; i++) {
            g_ptr_array_add(out, g_strdup(rings->pdata[i]));
            g_ptr_array_add(out, g_strdup("chardev-ringbuf"));
        }
        for (guint i = 0; i < ids->len; i++) {
            g_ptr_array_add(out, g_strdup(ids->pdata[i]));
            g_ptr_array_add(out, g_strdup("chardev-socket"));
        }
    }
    return out;
}

static JsonNode *prop_info(const char *name, const char *type)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_object_set_string_member(o, "name", name);
    json_object_set_string_member(o, "type", type);
    json_node_take_object(n, o);
    return n;
}

static JsonNode *class_props(const QomClass *cls, GPtrArray *children)
{
    JsonArray *arr = json_array_new();
    JsonNode *n = json_node_new(JSON_NODE_ARRAY);

    json_array_add_element(arr, prop_info("type", "string"));
    for (const QomProp *p = cls->props; p->name; p++) {
        json_array_add_element(arr, prop_info(p->name, p->type));
    }
    for (guint i = 0; children && i + 1 < children->len; i += 2) {
        g_autofree char *t = g_strdup_printf("child<%s>",
                                             (char *)children->pdata[i + 1]);
        json_array_add_element(arr, prop_info(children->pdata[i], t));
    }
    json_node_take_array(n, arr);
    return n;
}

/* --- qom-list, qom-get, qom-set --- */

typedef struct {
    const char *path;
    const char *property;
    GVariant *value;
    const char *typename;
    const char *implements;
    gboolean abstract;
} QomArgs;

static const BdSchemaField list_fields[] = {
    BD_FIELD("path", &bd_schema_str, BD_AT(QomArgs, path), .def.s = ""),
    { NULL } };
static const BdSchemaType list_args = {
    .name = "q_obj_qom-list-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = list_fields };
static const BdSchemaField get_fields[] = {
    BD_FIELD("path", &bd_schema_str, BD_AT(QomArgs, path), .def.s = ""),
    BD_FIELD("property", &bd_schema_str, BD_AT(QomArgs, property),
             .def.s = ""),
    { NULL } };
static const BdSchemaType get_args = {
    .name = "q_obj_qom-get-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = get_fields };
static const BdSchemaField set_fields[] = {
    BD_FIELD("path", &bd_schema_str, BD_AT(QomArgs, path), .def.s = ""),
    BD_FIELD("property", &bd_schema_str, BD_AT(QomArgs, property),
             .def.s = ""),
    BD_FIELD("value", &bd_schema_any, BD_AT(QomArgs, value)),
    { NULL } };
static const BdSchemaType set_args = {
    .name = "q_obj_qom-set-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = set_fields };
static const BdSchemaField types_fields[] = {
    BD_OPT("implements", &bd_schema_str, BD_AT(QomArgs, implements)),
    BD_OPT("abstract", &bd_schema_bool, BD_AT(QomArgs, abstract)),
    { NULL } };
static const BdSchemaType types_args = {
    .name = "q_obj_qom-list-types-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = types_fields };
static const BdSchemaField props_fields[] = {
    BD_FIELD("typename", &bd_schema_str, BD_AT(QomArgs, typename),
             .def.s = ""),
    { NULL } };
static const BdSchemaType props_args = {
    .name = "q_obj_qom-list-properties-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = props_fields };

static gboolean qom_list(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    QomArgs a = { 0 };
    g_auto(QomPath) p = { 0 };
    g_autoptr(GPtrArray) children = NULL;

    bd_schema_decode(list_fields, args, &a);
    if (!resolve_path(a.path, &p, TRUE, errp)) {
        return FALSE;
    }
    children = container_children(p.kind);
    *ret = class_props(p.cls, children);
    return TRUE;
}

static const QomProp *prop_find(const QomClass *cls, const char *name)
{
    for (const QomProp *p = cls->props; p->name; p++) {
        if (strcmp(p->name, name) == 0) {
            return p;
        }
    }
    return NULL;
}

/* ThrottleLimits as QSD 7.2 prints it (its QDict's order). */
static const char *const limits_order[] = {
    "bps-read-max-length", "iops-read-max-length", "bps-read-max",
    "bps-total", "iops-total-max-length", "iops-total", "iops-write-max",
    "bps-write", "bps-total-max", "bps-write-max", "iops-size", "iops-read",
    "iops-write-max-length", "iops-write", "bps-total-max-length",
    "iops-read-max", "bps-read", "bps-write-max-length", "iops-total-max",
    NULL };

static gint64 limit_value(const gint64 *v, const char *name)
{
    for (gsize i = 0; i < BD_THROTTLE_N_LIMITS; i++) {
        if (strcmp(bd_throttle_limit_name(i), name) == 0) {
            return v[i];
        }
    }
    g_assert_not_reached();
}

static JsonNode *throttle_group_get(const char *id, const char *prop)
{
    BdThrottleConfig cfg;
    gint64 v[BD_THROTTLE_N_LIMITS];
    JsonNode *n;

    bd_throttle_group_get_config(id, &cfg);
    bd_throttle_config_to_limits(&cfg, v);
    if (strcmp(prop, "limits") == 0) {
        JsonObject *o = json_object_new();

        for (const char *const *k = limits_order; *k; k++) {
            json_object_set_int_member(o, *k, limit_value(v, *k));
        }
        n = json_node_new(JSON_NODE_OBJECT);
        json_node_take_object(n, o);
        return n;
    }
    n = json_node_new(JSON_NODE_VALUE);
    json_node_set_int(n, limit_value(v, prop + strlen("x-")));
    return n;
}

static JsonNode *object_prop_get(BdObject *obj, const QomProp *prop,
                                 GError **errp)
{
    g_autoptr(GVariant) v = NULL;
    const char *name = prop->name;

    if (bd_object_is_kind(obj, BD_IOTHREAD_KIND)) {
        JsonNode *n = json_node_new(JSON_NODE_VALUE);

        json_node_set_int(n, ((BdIothread *)obj)->v[
                                 bd_iothread_prop_find(name)]);
        return n;
    }
    if (obj->props) {
        v = g_variant_lookup_value(obj->props, name, NULL);
    }
    if (v) {
        return bd_variant_to_json(v);
    }
    g_assert(prop->def);
    return bd_json_parse(prop->def, -1, errp);
}

static gboolean qom_get(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    QomArgs a = { 0 };
    g_auto(QomPath) p = { 0 };
    const QomProp *prop;

    bd_schema_decode(get_fields, args, &a);
    if (!resolve_path(a.path, &p, FALSE, errp)) {
        return FALSE;
    }
    if (strcmp(a.property, "type") == 0) {
        *ret = json_node_new(JSON_NODE_VALUE);
        json_node_set_string(*ret, p.cls->name);
        return TRUE;
    }
    prop = prop_find(p.cls, a.property);
    if (!prop) {
        g_autoptr(GPtrArray) ch = container_children(p.kind);

        for (guint i = 0; i + 1 < ch->len; i += 2) {
            if (strcmp(ch->pdata[i], a.property) == 0) {
                g_autofree char *full = g_strdup_printf(
                    "%s/%s", p.kind == PATH_ROOT ? "" :
                    p.kind == PATH_OBJECTS ? "/objects" : "/chardevs",
                    a.property);
                *ret = json_node_new(JSON_NODE_VALUE);
                json_node_set_string(*ret, full);
                return TRUE;
            }
        }
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property '%s.%s' not found", p.cls->name, a.property);
        return FALSE;
    }
    switch (p.kind) {
    case PATH_THROTTLE_GROUP:
        *ret = throttle_group_get(p.id, prop->name);
        return TRUE;
    case PATH_OBJECT:
        *ret = object_prop_get(p.obj, prop, errp);
        return *ret != NULL;
    case PATH_CHARDEV:
        /* chardev-socket's 'connected' and 'addr'. */
        *ret = bd_chardev_qom_get(p.id, prop->name);
        if (*ret) {
            return TRUE;
        }
        /* fall through */
    default:
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property '%s.%s' cannot be read in blockd",
                    p.cls->name, a.property);
        return FALSE;
    }
}

/* Validate a qom-set value as the member 'name' of a one-member object,
 * so that messages name it as QEMU's do ('limits.bogus'). */
static GVariant *validate_member(const char *name, const BdSchemaType *t,
                                 GVariant *value, GError **errp)
{
    BdSchemaField fields[] = { { name, t, FALSE }, { NULL } };
    BdSchemaType wrap = { .name = "qom-set", .kind = BD_SCHEMA_OBJECT,
                          .fields = fields };
    g_autoptr(JsonObject) o = json_object_new();
    g_autoptr(JsonNode) n = json_node_new(JSON_NODE_OBJECT);
    g_autoptr(GVariant) v = NULL;

    json_object_set_member(o, name, bd_variant_to_json(value));
    json_node_set_object(n, o);
    v = bd_validate(&wrap, n, FALSE, errp);
    if (!v) {
        return NULL;
    }
    return g_variant_lookup_value(v, name, NULL);
}

static gboolean throttle_group_set(const char *id, const char *prop,
                                   GVariant *value, GError **errp)
{
    g_autoptr(GVariant) limits = NULL;
    BdThrottleConfig cfg;

    if (strcmp(prop, "limits") != 0) {
        /* QEMU's legacy x-* setters work only before completion. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property cannot be set after initialization");
        return FALSE;
    }
    limits = validate_member("limits", bd_throttle_limits_type(), value,
                             errp);
    if (!limits) {
        return FALSE;
    }
    /* QEMU starts from the current configuration. */
    bd_throttle_group_get_config(id, &cfg);
    if (!bd_throttle_config_from_limits(&cfg, limits, errp)) {
        return FALSE;
    }
    bd_throttle_group_set_config(id, &cfg);
    return TRUE;
}

static gboolean iothread_set(BdIothread *io, const char *prop,
                             GVariant *value, GError **errp)
{
    g_autoptr(GVariant) v = validate_member(prop, &bd_schema_int, value,
                                            errp);

    if (!v) {
        return FALSE;
    }
    return bd_iothread_set(io, bd_iothread_prop_find(prop),
                           g_variant_get_int64(v), errp);
}

/* Secrets and TLS credentials read their properties once, when they
 * are created (QEMU's 'complete'): QEMU's setters still store a new
 * value, which qom-get shows and nothing uses.  The same here. */
static gboolean stored_prop_set(BdObject *obj, const char *name,
                                GVariant *value, GError **errp)
{
    const BdSchemaField *f = obj->type->props->fields;
    g_autoptr(GVariant) v = NULL;
    g_auto(GVariantBuilder) b = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    GVariantIter it;
    const char *key;
    GVariant *old;

    while (f->name && strcmp(f->name, name) != 0) {
        f++;
    }
    g_assert(f->name);
    v = validate_member(name, f->type, value, errp);
    if (!v) {
        return FALSE;
    }
    if (obj->props) {
        g_variant_iter_init(&it, obj->props);
        while (g_variant_iter_next(&it, "{&sv}", &key, &old)) {
            if (strcmp(key, name) != 0) {
                g_variant_builder_add(&b, "{sv}", key, old);
            }
            g_variant_unref(old);
        }
    }
    g_variant_builder_add(&b, "{sv}", name, v);
    g_clear_pointer(&obj->props, g_variant_unref);
    obj->props = g_variant_ref_sink(g_variant_builder_end(&b));
    return TRUE;
}

/* authz-simple's identity and authz-list's policy and rules change
 * live, as QEMU's: stored for qom-get, then given to the object. */
static gboolean authz_prop_set(BdObject *obj, const char *name,
                               GVariant *value, GError **errp)
{
    g_autoptr(GVariant) policy = NULL;
    g_autoptr(GVariant) rules = NULL;
    g_autoptr(GVariant) identity = NULL;

    if (!stored_prop_set(obj, name, value, errp)) {
        return FALSE;
    }
    if (obj->type == &bd_authz_simple_type) {
        identity = g_variant_lookup_value(obj->props, "identity", NULL);
        bd_authz_simple_set_identity(obj, g_variant_get_string(identity,
                                                               NULL));
        return TRUE;
    }
    policy = g_variant_lookup_value(obj->props, "policy", NULL);
    rules = g_variant_lookup_value(obj->props, "rules", NULL);
    bd_authz_list_set(obj, policy ? bd_schema_enum_index(
                                        &bd_authz_policy_type,
                                        g_variant_get_string(policy, NULL))
                                  : 0,
                      rules);
    return TRUE;
}

static gboolean qom_set(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    QomArgs a = { 0 };
    g_auto(QomPath) p = { 0 };
    const QomProp *prop;

    bd_schema_decode(set_fields, args, &a);
    if (!resolve_path(a.path, &p, FALSE, errp)) {
        g_clear_pointer(&a.value, g_variant_unref);
        return FALSE;
    }
    g_autoptr(GVariant) value = a.value;
    prop = prop_find(p.cls, a.property);
    if (!prop && strcmp(a.property, "type") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property '%s.%s' not found", p.cls->name, a.property);
        return FALSE;
    }
    if (!prop || strcmp(prop->name, "loaded") == 0 ||
        (p.kind != PATH_THROTTLE_GROUP && p.kind != PATH_OBJECT)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Property '%s.%s' is not writable", p.cls->name,
                    a.property);
        return FALSE;
    }
    if (p.kind == PATH_THROTTLE_GROUP) {
        return throttle_group_set(p.id, prop->name, value, errp);
    }
    if (bd_object_is_kind(p.obj, BD_IOTHREAD_KIND)) {
        return iothread_set((BdIothread *)p.obj, prop->name, value, errp);
    }
    if (strcmp(p.obj->type->name, "secret") == 0 ||
        bd_object_is_kind(p.obj, BD_TLS_CREDS_KIND)) {
        return stored_prop_set(p.obj, prop->name, value, errp);
    }
    if (p.obj->type == &bd_authz_simple_type ||
        p.obj->type == &bd_authz_list_type) {
        return authz_prop_set(p.obj, prop->name, value, errp);
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Property '%s.%s' cannot be changed in blockd after the "
                "object is created", p.cls->name, a.property);
    return FALSE;
}

/* --- qom-list-types, qom-list-properties --- */

static gboolean qom_list_types(GVariant *args, JsonNode **ret,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    QomArgs a = { 0 };
    JsonArray *arr = json_array_new();

    bd_schema_decode(types_fields, args, &a);
    for (const QomClass *c = classes; c->name; c++) {
        JsonObject *o;

        if ((c->abstract && !a.abstract) ||
            (a.implements && !class_implements(c, a.implements))) {
            continue;
        }
        o = json_object_new();
        if (c->abstract) {
            json_object_set_boolean_member(o, "abstract", TRUE);
        }
        json_object_set_string_member(o, "name", c->name);
        json_object_set_string_member(o, "parent",
                                      c->parent ? c->parent : "object");
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

static gboolean qom_list_properties(GVariant *args, JsonNode **ret,
                                    GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    QomArgs a = { 0 };
    const QomClass *c;

    bd_schema_decode(props_fields, args, &a);
    c = class_find(a.typename);
    if (!c) {
        g_set_error(errp, BD_ERROR, BD_ERROR_DEVICE_NOT_FOUND,
                    "Class '%s' not found", a.typename);
        return FALSE;
    }
    *ret = class_props(c, NULL);
    return TRUE;
}

/* --- x-blockdev-set-iothread --- */

typedef struct {
    const char *node_name;
    GVariant *iothread;          /* StrOrNull */
    gboolean force;
} SetIothreadArgs;

static const BdSchemaType *const str_or_null_alts[] = {
    &bd_schema_str, NULL };
static const BdSchemaType str_or_null = {
    .name = "StrOrNull", .kind = BD_SCHEMA_ALTERNATE,
    .alternatives = str_or_null_alts, .alt_null = TRUE };
static const BdSchemaField set_iothread_fields[] = {
    BD_FIELD("node-name", &bd_schema_str,
             BD_AT(SetIothreadArgs, node_name), .def.s = ""),
    BD_FIELD("iothread", &str_or_null, BD_AT(SetIothreadArgs, iothread)),
    BD_OPT("force", &bd_schema_bool, BD_AT(SetIothreadArgs, force)),
    { NULL } };
static const BdSchemaType set_iothread_args = {
    .name = "q_obj_x-blockdev-set-iothread-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = set_iothread_fields };

/* QEMU's bdrv_has_blk(): an entry handle (export, job) uses the node
 * directly. */
static gboolean node_has_entry_parent(BdNode *node)
{
    for (GList *l = node->parents; l; l = l->next) {
        BdChild *c = l->data;
        if (!c->parent) {
            return TRUE;
        }
    }
    return FALSE;
}

/* The node's graph moves to the iothread's worker pool with the exports
 * on it, which QEMU refuses when one of them is fixed to another
 * (export/iothread.c). */
static gboolean x_blockdev_set_iothread(GVariant *args, JsonNode **ret,
                                        GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    SetIothreadArgs a = { 0 };
    g_autoptr(GVariant) io = NULL;
    g_autoptr(BdObject) obj = NULL;
    BdNode *node;

    bd_schema_decode(set_iothread_fields, args, &a);
    io = a.iothread;
    node = bd_node_find(a.node_name);
    if (!node) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to find node with node-name='%s'", a.node_name);
        return FALSE;
    }
    if (!a.force && node_has_entry_parent(node)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Node %s is associated with a BlockBackend and could "
                    "be in use (use force=true to override this check)",
                    a.node_name);
        return FALSE;
    }
    if (io && !bd_variant_is_null(io)) {
        const char *id = g_variant_get_string(io, NULL);

        obj = bd_object_find_kind(id, BD_IOTHREAD_KIND);
        if (!obj) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Cannot find iothread %s", id);
            return FALSE;
        }
    }
    return bd_export_node_set_pool(node, obj ? ((BdIothread *)obj)->pool
                                             : NULL, errp);
}

/* --- return types, for query-qmp-schema --- */

static const BdSchemaField prop_info_fields[] = {
    BD_FIELD("name", &bd_schema_str), BD_FIELD("type", &bd_schema_str),
    { NULL } };
static const BdSchemaType prop_info_type = {
    .name = "ObjectPropertyInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = prop_info_fields };
static const BdSchemaType prop_info_list = {
    .name = "[ObjectPropertyInfo]", .kind = BD_SCHEMA_LIST,
    .element = &prop_info_type };
static const BdSchemaField type_info_fields[] = {
    BD_FIELD("name", &bd_schema_str),
    BD_OPT("abstract", &bd_schema_bool),
    BD_OPT("parent", &bd_schema_str),
    { NULL } };
static const BdSchemaType type_info_type = {
    .name = "ObjectTypeInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = type_info_fields };
static const BdSchemaType type_info_list = {
    .name = "[ObjectTypeInfo]", .kind = BD_SCHEMA_LIST,
    .element = &type_info_type };

static const BdSchemaType *list_args_fn(void) { return &list_args; }
static const BdSchemaType *get_args_fn(void) { return &get_args; }
static const BdSchemaType *set_args_fn(void) { return &set_args; }
static const BdSchemaType *types_args_fn(void) { return &types_args; }
static const BdSchemaType *props_args_fn(void) { return &props_args; }
static const BdSchemaType *set_iothread_fn(void)
{
    return &set_iothread_args;
}
static const BdSchemaType *prop_list_fn(void) { return &prop_info_list; }
static const BdSchemaType *type_list_fn(void) { return &type_info_list; }
static const BdSchemaType *any_fn(void) { return &bd_schema_any; }

static const BdQmpCommand qom_commands[] = {
    { "qom-list", list_args_fn, FALSE, prop_list_fn, qom_list },
    { "qom-get", get_args_fn, FALSE, any_fn, qom_get },
    { "qom-set", set_args_fn, FALSE, NULL, qom_set },
    { "qom-list-types", types_args_fn, FALSE, type_list_fn,
      qom_list_types },
    { "qom-list-properties", props_args_fn, FALSE, prop_list_fn,
      qom_list_properties },
    { "x-blockdev-set-iothread", set_iothread_fn, FALSE, NULL,
      x_blockdev_set_iothread },
    { NULL } };

void bd_cmd_qom_register(void)
{
    BD_GLOBAL_STATE_CODE();

    bd_qmp_register(qom_commands);
}
