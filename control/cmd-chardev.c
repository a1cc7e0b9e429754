/* SPDX-License-Identifier: MIT */
/* Chardev commands: chardev-add/remove/change, query-chardev,
 * query-chardev-backends, chardev-send-break, ringbuf-read/write.
 *
 * blockd's chardevs are sockets (chardev.c: from --chardev, where
 * monitors attach, and from chardev-add) and the 'ringbuf' chardevs
 * kept here: a ring of bytes in memory that ringbuf-write fills (the
 * oldest bytes go when it is full) and ringbuf-read drains, as QEMU's
 * char-ringbuf.c.  Nothing else reads or writes a ringbuf in blockd (no
 * monitor can be attached at runtime: QMP has no monitor-add).  Both
 * kinds share one namespace of ids; chardev-change swaps one for
 * another under the same id unless a monitor uses it.
 *
 * Thread model: main thread only.
 */
#include <string.h>
#include "control/input.h"
#include "control/qmp-int.h"
#include "graph/error.h"
#include "graph/main-thread.h"

typedef struct {
    char *id;
    guint8 *buf;
    gsize size;              /* a power of two */
    guint64 prod, cons;      /* bytes written, read (prod - cons <= size) */
} Ringbuf;

static GPtrArray *ringbufs;

static void ringbuf_free(gpointer p)
{
    Ringbuf *r = p;

    g_free(r->id);
    g_free(r->buf);
    g_free(r);
}

static Ringbuf *ringbuf_find(const char *id)
{
    for (guint i = 0; ringbufs && i < ringbufs->len; i++) {
        Ringbuf *r = ringbufs->pdata[i];
        if (strcmp(r->id, id) == 0) {
            return r;
        }
    }
    return NULL;
}

GPtrArray *bd_ringbuf_ids(void)
{
    GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; ringbufs && i < ringbufs->len; i++) {
        g_ptr_array_add(ids, g_strdup(((Ringbuf *)ringbufs->pdata[i])->id));
    }
    return ids;
}

static gboolean socket_chardev_exists(const char *id)
{
    g_autoptr(GPtrArray) ids = bd_chardev_ids();

    for (guint i = 0; i < ids->len; i++) {
        if (strcmp(ids->pdata[i], id) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

/* --- schemas (qapi/char.json) --- */

typedef struct {
    const char *id;
    const char *type;
    GVariant *data;
    const char *device;
    gint64 size;
    const char *format;
    const char *str;
} CharArgs;

/* ChardevBackendKind, in QAPI order. */
static const char *const backend_kinds[] = {
    "file", "serial", "parallel", "pipe", "socket", "udp", "pty", "null",
    "mux", "msmouse", "wctablet", "braille", "testdev", "stdio",
    "console", "spicevmc", "spiceport", "qemu-vdagent", "dbus", "vc",
    "ringbuf", "memory", NULL };
static const BdSchemaType backend_kind = {
    .name = "ChardevBackendKind", .kind = BD_SCHEMA_ENUM,
    .enum_values = backend_kinds };

static const BdSchemaField ringbuf_fields[] = {
    /* Read from the variant by chardev_add. */
    { "logfile", &bd_schema_str, TRUE, .flags = BD_FIELD_GENERIC },
    { "logappend", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "size", &bd_schema_int, TRUE, .flags = BD_FIELD_GENERIC },
    { NULL } };
static const BdSchemaType ringbuf_type = {
    .name = "ChardevRingbuf", .kind = BD_SCHEMA_OBJECT,
    .fields = ringbuf_fields };
static const BdSchemaField ringbuf_wrapper_fields[] = {
    BD_FIELD("data", &ringbuf_type, BD_AT(CharArgs, data)),
    { NULL } };
static const BdSchemaType ringbuf_wrapper = {
    .name = "ChardevRingbufWrapper", .kind = BD_SCHEMA_OBJECT,
    .fields = ringbuf_wrapper_fields };
/* ChardevSocket (with ChardevCommon's logfile/logappend): read from the
 * variant by chardev.c. */
static const BdSchemaField socket_fields[] = {
    { "logfile", &bd_schema_str, TRUE, .flags = BD_FIELD_GENERIC },
    { "logappend", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED },
    { "addr", &bd_qmp_socket_address_legacy, FALSE,
      .flags = BD_FIELD_GENERIC },
    { "tls-creds", &bd_schema_str, TRUE, .flags = BD_FIELD_GENERIC },
    { "tls-authz", &bd_schema_str, TRUE, .flags = BD_FIELD_GENERIC },
    { "server", &bd_schema_bool, TRUE, .flags = BD_FIELD_GENERIC },
    { "wait", &bd_schema_bool, TRUE, .flags = BD_FIELD_GENERIC },
    { "nodelay", &bd_schema_bool, TRUE, .flags = BD_FIELD_GENERIC },
    { "telnet", &bd_schema_bool, TRUE, .flags = BD_FIELD_GENERIC },
    { "tn3270", &bd_schema_bool, TRUE, .flags = BD_FIELD_GENERIC },
    { "websocket", &bd_schema_bool, TRUE, .flags = BD_FIELD_GENERIC },
    { "reconnect", &bd_schema_int, TRUE, .flags = BD_FIELD_GENERIC },
    { NULL } };
static const BdSchemaType socket_type = {
    .name = "ChardevSocket", .kind = BD_SCHEMA_OBJECT,
    .fields = socket_fields };
static const BdSchemaField socket_wrapper_fields[] = {
    BD_FIELD("data", &socket_type, BD_AT(CharArgs, data)),
    { NULL } };
static const BdSchemaType socket_wrapper = {
    .name = "ChardevSocketWrapper", .kind = BD_SCHEMA_OBJECT,
    .fields = socket_wrapper_fields };
/* The other backends: blockd refuses them by name after validation. */
static const BdSchemaField other_wrapper_fields[] = {
    BD_FIELD("data", &bd_schema_any, BD_AT(CharArgs, data)),
    { NULL } };
static const BdSchemaType other_wrapper = {
    .name = "ChardevOtherWrapper", .kind = BD_SCHEMA_OBJECT,
    .fields = other_wrapper_fields };

static BdSchemaVariant backend_variants[G_N_ELEMENTS(backend_kinds)];
static const BdSchemaField backend_base[] = {
    BD_FIELD("type", &backend_kind, BD_AT(CharArgs, type), .def.s = ""),
    { NULL } };
static const BdSchemaType backend_type = {
    .name = "ChardevBackend", .kind = BD_SCHEMA_UNION,
    .fields = backend_base, .discriminator = "type",
    .variants = backend_variants };

static const BdSchemaField add_fields[] = {
    BD_FIELD("id", &bd_schema_str, BD_AT(CharArgs, id), .def.s = ""),
    BD_FIELD("backend", &backend_type, .flags = BD_FIELD_GENERIC),
    { NULL } };
static const BdSchemaType add_args = {
    .name = "q_obj_chardev-add-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = add_fields };
static const BdSchemaType change_args = {
    .name = "q_obj_chardev-change-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = add_fields };
static const BdSchemaField id_fields[] = {
    BD_FIELD("id", &bd_schema_str, BD_AT(CharArgs, id), .def.s = ""),
    { NULL } };
static const BdSchemaType remove_args = {
    .name = "q_obj_chardev-remove-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = id_fields };
static const BdSchemaType break_args = {
    .name = "q_obj_chardev-send-break-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = id_fields };

static const char *const data_formats[] = { "utf8", "base64", NULL };
static const BdSchemaType data_format = {
    .name = "DataFormat", .kind = BD_SCHEMA_ENUM,
    .enum_values = data_formats };
static const BdSchemaField write_fields[] = {
    BD_FIELD("device", &bd_schema_str, BD_AT(CharArgs, device), .def.s = ""),
    BD_FIELD("data", &bd_schema_str, BD_AT(CharArgs, str), .def.s = ""),
    BD_OPT("format", &data_format, BD_AT(CharArgs, format), .def.s = "utf8"),
    { NULL } };
static const BdSchemaType write_args = {
    .name = "q_obj_ringbuf-write-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = write_fields };
static const BdSchemaField read_fields[] = {
    BD_FIELD("device", &bd_schema_str, BD_AT(CharArgs, device), .def.s = ""),
    BD_FIELD("size", &bd_schema_int, BD_AT(CharArgs, size)),
    BD_OPT("format", &data_format, BD_AT(CharArgs, format), .def.s = "utf8"),
    { NULL } };
static const BdSchemaType read_args = {
    .name = "q_obj_ringbuf-read-arg", .kind = BD_SCHEMA_OBJECT,
    .fields = read_fields };

static const BdSchemaType *add_args_fn(void)
{
    for (gsize i = 0; backend_kinds[i]; i++) {
        backend_variants[i] = (BdSchemaVariant){
            backend_kinds[i], strcmp(backend_kinds[i], "ringbuf") == 0
                              ? &ringbuf_wrapper
                              : strcmp(backend_kinds[i], "socket") == 0
                              ? &socket_wrapper : &other_wrapper };
    }
    return &add_args;
}
static const BdSchemaType *change_args_fn(void)
{
    add_args_fn();
    return &change_args;
}
static const BdSchemaType *remove_args_fn(void) { return &remove_args; }
static const BdSchemaType *break_args_fn(void) { return &break_args; }
static const BdSchemaType *write_args_fn(void) { return &write_args; }
static const BdSchemaType *read_args_fn(void) { return &read_args; }

/* --- commands --- */

/* A new ringbuf from ChardevRingbuf 'data' (may be NULL), not listed. */
static Ringbuf *ringbuf_new(const char *id, GVariant *data, GError **errp)
{
    gint64 size = 65536;
    Ringbuf *r;

    if (data && g_variant_lookup(data, "logfile", "&s", NULL)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to add chardev '%s': 'logfile' is not "
                    "supported by blockd", id);
        return NULL;
    }
    if (data) {
        g_variant_lookup(data, "size", "x", &size);
    }
    /* QEMU's check: a power of two (zero and negatives are not). */
    if (size <= 0 || (size & (size - 1)) != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to add chardev '%s': size of ringbuf chardev "
                    "must be power of two", id);
        return NULL;
    }
    if (size > (1 << 30)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to add chardev '%s': ringbuf size %" G_GINT64_FORMAT
                    " is too big for blockd (at most 1 GiB)", id, size);
        return NULL;
    }
    r = g_new0(Ringbuf, 1);
    r->id = g_strdup(id);
    r->size = (gsize)size;
    r->buf = g_malloc0(r->size);
    return r;
}

/* The new backend of chardev-add/change: a ringbuf or a socket, not yet
 * listed (exactly one of *ring, *sock set on success). */
static gboolean backend_new(const char *id, GVariant *args, Ringbuf **ring,
                            BdChardev **sock, GError **errp)
{
    g_autoptr(GVariant) backend = g_variant_lookup_value(args, "backend",
                                                         NULL);
    g_autoptr(GVariant) data = g_variant_lookup_value(backend, "data", NULL);
    g_autoptr(GError) err = NULL;
    CharArgs a = { 0 };

    bd_schema_decode(backend_base, backend, &a);
    *ring = NULL;
    *sock = NULL;
    if (strcmp(a.type, "ringbuf") == 0) {
        *ring = ringbuf_new(id, data, errp);
        return *ring != NULL;
    }
    if (strcmp(a.type, "socket") != 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to add chardev '%s': chardev backend '%s' is "
                    "not supported by blockd (only 'ringbuf' and 'socket')",
                    id, a.type);
        return FALSE;
    }
    *sock = bd_chardev_socket_new(id, data, &err);
    if (!*sock) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Failed to add chardev '%s': %s", id, err->message);
        return FALSE;
    }
    return TRUE;
}

static void backend_insert(Ringbuf *ring, BdChardev *sock)
{
    if (ring) {
        if (!ringbufs) {
            ringbufs = g_ptr_array_new_with_free_func(ringbuf_free);
        }
        g_ptr_array_add(ringbufs, ring);
    } else {
        bd_chardev_socket_insert(sock);
    }
}

static gboolean chardev_add(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CharArgs a = { 0 };
    Ringbuf *ring;
    BdChardev *sock;

    bd_schema_decode(add_fields, args, &a);
    if (ringbuf_find(a.id) || socket_chardev_exists(a.id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Chardev with id '%s' already exists", a.id);
        return FALSE;
    }
    if (!backend_new(a.id, args, &ring, &sock, errp)) {
        return FALSE;
    }
    backend_insert(ring, sock);
    return TRUE;
}

static gboolean chardev_remove(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CharArgs a = { 0 };
    Ringbuf *r;

    bd_schema_decode(id_fields, args, &a);
    r = ringbuf_find(a.id);
    if (r) {
        g_ptr_array_remove(ringbufs, r);
        return TRUE;
    }
    if (bd_chardev_is_claimed(a.id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Chardev '%s' is busy", a.id);
        return FALSE;
    }
    if (socket_chardev_exists(a.id)) {
        bd_chardev_socket_free(bd_chardev_socket_steal(a.id));
        return TRUE;
    }
    g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                "Chardev '%s' not found", a.id);
    return FALSE;
}

/* The new backend is made first, so that a failure leaves the old one
 * in place (QEMU 7.2 loses the chardev then). */
static gboolean chardev_change(GVariant *args, JsonNode **ret,
                               GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CharArgs a = { 0 };
    Ringbuf *old_ring, *ring;
    BdChardev *sock;

    bd_schema_decode(add_fields, args, &a);
    old_ring = ringbuf_find(a.id);
    if (!old_ring && !socket_chardev_exists(a.id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Chardev '%s' does not exist", a.id);
        return FALSE;
    }
    if (bd_chardev_is_claimed(a.id)) {
        /* QEMU refuses to change a chardev a monitor uses. */
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Chardev user does not support chardev hotswap");
        return FALSE;
    }
    if (!backend_new(a.id, args, &ring, &sock, errp)) {
        return FALSE;
    }
    if (old_ring) {
        g_ptr_array_remove(ringbufs, old_ring);
    } else {
        bd_chardev_socket_free(bd_chardev_socket_steal(a.id));
    }
    backend_insert(ring, sock);
    return TRUE;
}

static gboolean chardev_send_break(GVariant *args, JsonNode **ret,
                                   GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CharArgs a = { 0 };

    bd_schema_decode(id_fields, args, &a);
    if (!ringbuf_find(a.id) && !socket_chardev_exists(a.id)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Chardev '%s' not found", a.id);
        return FALSE;
    }
    /* A break means nothing to a socket or a ring: QEMU ignores it. */
    return TRUE;
}

static Ringbuf *ringbuf_lookup(const char *device, GError **errp)
{
    Ringbuf *r = ringbuf_find(device);

    if (!r && socket_chardev_exists(device)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "%s is not a ringbuf device", device);
    } else if (!r) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Device '%s' not found", device);
    }
    return r;
}

/* QEMU's qbase64_decode: the alphabet, '=' padding and newlines. */
static gboolean base64_valid(const char *s)
{
    for (; *s; s++) {
        if (!g_ascii_isalnum(*s) && !strchr("+/=\n", *s)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean ringbuf_write(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CharArgs a = { 0 };
    g_autofree guint8 *decoded = NULL;
    const guint8 *bytes;
    gsize len;
    Ringbuf *r;

    bd_schema_decode(write_fields, args, &a);
    r = ringbuf_lookup(a.device, errp);
    if (!r) {
        return FALSE;
    }
    if (strcmp(a.format, "base64") == 0) {
        if (!base64_valid(a.str)) {
            g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                        "Base64 data contains invalid characters");
            return FALSE;
        }
        decoded = g_base64_decode(a.str, &len);
        bytes = decoded;
    } else {
        bytes = (const guint8 *)a.str;
        len = strlen(a.str);
    }
    for (gsize i = 0; i < len; i++) {
        r->buf[r->prod++ & (r->size - 1)] = bytes[i];
        if (r->prod - r->cons > r->size) {
            r->cons = r->prod - r->size;
        }
    }
    return TRUE;
}

static gboolean ringbuf_read(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    CharArgs a = { 0 };
    g_autofree guint8 *out = NULL;
    gsize n = 0;
    Ringbuf *r;

    bd_schema_decode(read_fields, args, &a);
    if (a.size <= 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "size must be greater than zero");
        return FALSE;
    }
    r = ringbuf_lookup(a.device, errp);
    if (!r) {
        return FALSE;
    }
    out = g_malloc(MIN((guint64)a.size, r->prod - r->cons) + 1);
    while (n < (guint64)a.size && r->cons < r->prod) {
        out[n++] = r->buf[r->cons++ & (r->size - 1)];
    }
    out[n] = 0;
    *ret = json_node_new(JSON_NODE_VALUE);
    if (strcmp(a.format, "base64") == 0) {
        g_autofree char *b64 = g_base64_encode(out, n);
        json_node_set_string(*ret, b64);
    } else {
        /* QEMU sends the bytes as a string; invalid UTF-8 becomes
         * U+FFFD in JSON. */
        g_autofree char *valid = g_utf8_make_valid((const char *)out, n);
        json_node_set_string(*ret, valid);
    }
    return TRUE;
}

static JsonNode *chardev_info(const char *label, const char *filename,
                              gboolean open)
{
    JsonObject *o = json_object_new();
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_object_set_boolean_member(o, "frontend-open", open);
    json_object_set_string_member(o, "filename", filename);
    json_object_set_string_member(o, "label", label);
    json_node_take_object(n, o);
    return n;
}

static gboolean query_chardev(GVariant *args, JsonNode **ret, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    JsonArray *arr = json_array_new();
    g_autoptr(GPtrArray) ids = bd_chardev_ids();

    for (guint i = 0; ringbufs && i < ringbufs->len; i++) {
        Ringbuf *r = ringbufs->pdata[i];
        json_array_add_element(arr, chardev_info(r->id, "ringbuf", FALSE));
    }
    for (guint i = 0; i < ids->len; i++) {
        g_autofree char *fn = bd_chardev_filename(ids->pdata[i]);
        /* QEMU's frontend-open: a monitor is attached. */
        json_array_add_element(arr, chardev_info(
            ids->pdata[i], fn, bd_chardev_is_claimed(ids->pdata[i])));
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

static gboolean query_chardev_backends(GVariant *args, JsonNode **ret,
                                       GError **errp)
{
    static const char *const names[] = { "ringbuf", "socket", NULL };
    JsonArray *arr = json_array_new();

    for (const char *const *n = names; *n; n++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", *n);
        json_array_add_object_element(arr, o);
    }
    *ret = json_node_new(JSON_NODE_ARRAY);
    json_node_take_array(*ret, arr);
    return TRUE;
}

/* --- return types --- */

static const BdSchemaField info_fields[] = {
    BD_FIELD("label", &bd_schema_str), BD_FIELD("filename", &bd_schema_str),
    BD_FIELD("frontend-open", &bd_schema_bool), { NULL } };
static const BdSchemaType info_type = {
    .name = "ChardevInfo", .kind = BD_SCHEMA_OBJECT, .fields = info_fields };
static const BdSchemaType info_list = {
    .name = "[ChardevInfo]", .kind = BD_SCHEMA_LIST, .element = &info_type };
static const BdSchemaField bk_fields[] = {
    BD_FIELD("name", &bd_schema_str), { NULL } };
static const BdSchemaType bk_type = {
    .name = "ChardevBackendInfo", .kind = BD_SCHEMA_OBJECT,
    .fields = bk_fields };
static const BdSchemaType bk_list = {
    .name = "[ChardevBackendInfo]", .kind = BD_SCHEMA_LIST,
    .element = &bk_type };
static const BdSchemaField ret_fields[] = {
    BD_OPT("pty", &bd_schema_str), { NULL } };
static const BdSchemaType ret_type = {
    .name = "ChardevReturn", .kind = BD_SCHEMA_OBJECT,
    .fields = ret_fields };

static const BdSchemaType *info_list_fn(void) { return &info_list; }
static const BdSchemaType *bk_list_fn(void) { return &bk_list; }
static const BdSchemaType *ret_fn(void) { return &ret_type; }
static const BdSchemaType *str_fn(void) { return &bd_schema_str; }

static const BdQmpCommand chardev_commands[] = {
    { "chardev-add", add_args_fn, FALSE, ret_fn, chardev_add },
    { "chardev-change", change_args_fn, FALSE, ret_fn, chardev_change },
    { "chardev-remove", remove_args_fn, FALSE, NULL, chardev_remove },
    { "chardev-send-break", break_args_fn, FALSE, NULL, chardev_send_break },
    { "query-chardev", NULL, FALSE, info_list_fn, query_chardev },
    { "query-chardev-backends", NULL, FALSE, bk_list_fn,
      query_chardev_backends },
    { "ringbuf-write", write_args_fn, FALSE, NULL, ringbuf_write },
    { "ringbuf-read", read_args_fn, FALSE, str_fn, ringbuf_read },
    { NULL } };

void bd_cmd_chardev_register(void)
{
    BD_GLOBAL_STATE_CODE();

    add_args_fn();
    bd_qmp_register(chardev_commands);
}

void bd_cmd_chardev_cleanup(void)
{
    g_clear_pointer(&ringbufs, g_ptr_array_unref);
}
