/* SPDX-License-Identifier: MIT */
/* The tls-creds-x509, tls-creds-psk and tls-creds-anon object types:
 * QEMU's properties, loaded into crypto/'s BdTlsCreds at object-add. */
#ifndef BD_OBJECTS_TLS_CREDS_H
#define BD_OBJECTS_TLS_CREDS_H

#include "crypto/tls.h"
#include "objects/object.h"

#define BD_TLS_CREDS_KIND "tls-creds"

extern const BdObjectType bd_tls_creds_x509_type;
extern const BdObjectType bd_tls_creds_psk_type;
extern const BdObjectType bd_tls_creds_anon_type;
/* Their properties (TlsCreds*Properties). */
extern const BdSchemaType bd_tls_creds_x509_props;
extern const BdSchemaType bd_tls_creds_psk_props;
extern const BdSchemaType bd_tls_creds_anon_props;

/* Main thread.  The credentials of object 'id' for 'endpoint', with a
 * new reference, and the object itself with a reference in *obj (for
 * bd_object_use while a server holds them).  QEMU's errors: "No TLS
 * credentials with id '%s'", "Object with id '%s' is not TLS
 * credentials", "Expected TLS credentials for a server endpoint". */
BdTlsCreds *bd_tls_creds_lookup(const char *id, BdTlsEndpoint endpoint,
                                BdObject **obj, GError **errp);

#endif
