/* SPDX-License-Identifier: MIT */
/* Authorization objects (QEMU's QAuthZ): authz-simple, authz-list and
 * authz-listfile.  Each decides whether an identity (a TLS client
 * certificate's distinguished name, or a PSK username) may connect.
 *
 * Thread model: created and deleted on the main thread (object-add/del;
 * authz-listfile reloads its file from the main loop when it changes);
 * bd_authz_is_allowed() may run on any thread at the same time. */
#ifndef BD_OBJECTS_AUTHZ_H
#define BD_OBJECTS_AUTHZ_H

#include "objects/object.h"

/* The kind every authz type implements (BdObjectType.kinds). */
#define BD_AUTHZ_KIND "authz"

extern const BdObjectType bd_authz_simple_type;
extern const BdObjectType bd_authz_list_type;
extern const BdObjectType bd_authz_listfile_type;

/* Any thread.  TRUE when 'authz' (an object of an authz type) allows
 * 'identity'; FALSE when it denies it (errp untouched) or on error
 * (errp set). */
gboolean bd_authz_is_allowed(BdObject *authz, const char *identity,
                             GError **errp);
/* The same by object id, with QEMU's errors for an unknown id or an
 * object of another type. */
gboolean bd_authz_is_allowed_by_id(const char *authz_id,
                                   const char *identity, GError **errp);

/* Main thread: qom-set of an authz-simple's 'identity' or an
 * authz-list's 'policy' or 'rules' ('value' validated against the
 * property's type; the object's stored properties are updated by the
 * caller).  Takes effect for the next check on any thread. */
void bd_authz_simple_set_identity(BdObject *obj, const char *identity);
void bd_authz_list_set(BdObject *obj, int policy, GVariant *rules);

#endif
