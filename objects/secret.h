/* SPDX-License-Identifier: MIT */
/* The 'secret' object type: a password or key given inline ('data') or
 * in a file ('file'), as 'raw' bytes or 'base64' (QEMU's secret). */
#ifndef BD_OBJECTS_SECRET_H
#define BD_OBJECTS_SECRET_H

#include "objects/object.h"

extern const BdObjectType bd_secret_type;

/* Any thread.  The decoded bytes of secret 'id', or NULL with QEMU's
 * errors ("No secret with id '%s'", "Object with id '%s' is not a
 * secret"). */
GBytes *bd_secret_lookup(const char *id, GError **errp);
/* The same as a NUL-terminated string; fails unless valid UTF-8
 * ("Data from secret %s is not valid UTF-8"). */
char *bd_secret_lookup_as_utf8(const char *id, GError **errp);

#endif
