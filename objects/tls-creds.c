/* SPDX-License-Identifier: MIT */
/* tls-creds-x509, tls-creds-psk, tls-creds-anon: the properties QEMU
 * gives them (qapi/crypto.json), handed to crypto/ to load.
 *
 * Thread model: main thread (object-add, lookups for nbd-server-start);
 * the BdTlsCreds they hold are immutable and shared with connections.
 */
#include "graph/error.h"
#include "graph/main-thread.h"
#include "objects/secret.h"
#include "objects/tls-creds.h"

typedef struct {
    BdObject common;            /* first member */
    BdTlsCreds *creds;
} TlsCredsObject;

/* TlsCreds*Properties, one struct for the three. */
typedef struct {
    gboolean verify_peer;
    const char *dir;
    int endpoint;               /* BdTlsEndpoint */
    const char *priority;
    gboolean sanity_check;      /* x509 */
    const char *passwordid;     /* x509 */
    const char *username;       /* psk */
} TlsCredsProps;

static const BdSchemaType endpoint_enum = {
    .name = "QCryptoTLSCredsEndpoint", .kind = BD_SCHEMA_ENUM,
    .enum_values = bd_tls_endpoint_names };

#define P(f) BD_AT(TlsCredsProps, f)
#define COMMON_FIELDS                                                    \
    { "verify-peer", &bd_schema_bool, TRUE, P(verify_peer), .def.i = TRUE }, \
    { "dir", &bd_schema_str, TRUE, P(dir) },                             \
    { "endpoint", &endpoint_enum, TRUE, P(endpoint),                     \
      .def.i = BD_TLS_ENDPOINT_CLIENT },                                 \
    { "priority", &bd_schema_str, TRUE, P(priority) },                   \
    /* Deprecated in QEMU; the credentials always load at creation. */   \
    { "loaded", &bd_schema_bool, TRUE, .flags = BD_FIELD_IGNORED }

static const BdSchemaField anon_fields[] = { COMMON_FIELDS, { NULL } };
static const BdSchemaField psk_fields[] = {
    COMMON_FIELDS,
    { "username", &bd_schema_str, TRUE, P(username) },
    { NULL } };
static const BdSchemaField x509_fields[] = {
    COMMON_FIELDS,
    { "sanity-check", &bd_schema_bool, TRUE, P(sanity_check),
      .def.i = TRUE },
    { "passwordid", &bd_schema_str, TRUE, P(passwordid) },
    { NULL } };
#undef P

const BdSchemaType bd_tls_creds_anon_props = {
    .name = "TlsCredsAnonProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = anon_fields };
const BdSchemaType bd_tls_creds_psk_props = {
    .name = "TlsCredsPskProperties", .kind = BD_SCHEMA_OBJECT,
    .fields = psk_fields };
const BdSchemaType bd_tls_creds_x509_props = {
    .name = "TlsCredsX509Properties", .kind = BD_SCHEMA_OBJECT,
    .fields = x509_fields };

static BdObject *creds_create(const BdObjectType *type, BdTlsCredsKind kind,
                              const BdSchemaField *fields, const char *id,
                              GVariant *props, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    TlsCredsProps p = { 0 };
    g_autofree char *password = NULL;
    BdTlsCredsConfig cfg = { .kind = kind };
    TlsCredsObject *obj;
    BdTlsCreds *creds;

    bd_schema_decode(fields, props, &p);
    if (p.passwordid) {
        password = bd_secret_lookup_as_utf8(p.passwordid, errp);
        if (!password) {
            return NULL;
        }
    }
    cfg.endpoint = p.endpoint;
    cfg.dir = p.dir;
    cfg.verify_peer = p.verify_peer;
    cfg.priority = p.priority;
    cfg.sanity_check = p.sanity_check;
    cfg.key_password = password;
    cfg.username = p.username;
    creds = bd_tls_creds_new(&cfg, errp);
    if (!creds) {
        return NULL;
    }
    obj = g_new0(TlsCredsObject, 1);
    bd_object_init(&obj->common, type, id);
    obj->creds = creds;
    return &obj->common;
}

static void creds_free(BdObject *o)
{
    TlsCredsObject *obj = (TlsCredsObject *)o;

    bd_tls_creds_unref(obj->creds);
    bd_object_finalize(o);
    g_free(obj);
}

static BdObject *x509_create(const char *id, GVariant *props, GError **errp)
{
    return creds_create(&bd_tls_creds_x509_type, BD_TLS_CREDS_X509,
                        x509_fields, id, props, errp);
}

static BdObject *psk_create(const char *id, GVariant *props, GError **errp)
{
    return creds_create(&bd_tls_creds_psk_type, BD_TLS_CREDS_PSK,
                        psk_fields, id, props, errp);
}

static BdObject *anon_create(const char *id, GVariant *props, GError **errp)
{
    return creds_create(&bd_tls_creds_anon_type, BD_TLS_CREDS_ANON,
                        anon_fields, id, props, errp);
}

static const char *const creds_kinds[] = { BD_TLS_CREDS_KIND, NULL };

const BdObjectType bd_tls_creds_x509_type = {
    .name = "tls-creds-x509", .props = &bd_tls_creds_x509_props, .kinds = creds_kinds,
    .create = x509_create, .free = creds_free };
const BdObjectType bd_tls_creds_psk_type = {
    .name = "tls-creds-psk", .props = &bd_tls_creds_psk_props, .kinds = creds_kinds,
    .create = psk_create, .free = creds_free };
const BdObjectType bd_tls_creds_anon_type = {
    .name = "tls-creds-anon", .props = &bd_tls_creds_anon_props, .kinds = creds_kinds,
    .create = anon_create, .free = creds_free };

BdTlsCreds *bd_tls_creds_lookup(const char *id, BdTlsEndpoint endpoint,
                                BdObject **objp, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    g_autoptr(BdObject) obj = bd_object_find(id);
    TlsCredsObject *tc;

    if (!obj) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "No TLS credentials with id '%s'", id);
        return NULL;
    }
    if (!bd_object_is_kind(obj, BD_TLS_CREDS_KIND)) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Object with id '%s' is not TLS credentials", id);
        return NULL;
    }
    tc = (TlsCredsObject *)obj;
    if (bd_tls_creds_endpoint(tc->creds) != endpoint) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Expected TLS credentials for a %s endpoint",
                    bd_tls_endpoint_names[endpoint]);
        return NULL;
    }
    if (objp) {
        *objp = bd_object_ref(obj);
    }
    return bd_tls_creds_ref(tc->creds);
}
