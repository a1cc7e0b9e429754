/* SPDX-License-Identifier: MIT */
/* A small blocking QMP client: connect to a monitor socket, negotiate
 * capabilities, run commands and collect the events that arrive.
 *
 * Thread model: one client per thread; nothing shared.
 */
#ifndef BD_CTL_QMP_CLIENT_H
#define BD_CTL_QMP_CLIENT_H

#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct BdQmpClient BdQmpClient;

#define BD_QMP_ERROR (bd_qmp_error_quark())
GQuark bd_qmp_error_quark(void);
typedef enum {
    BD_QMP_ERROR_CONNECT,   /* no daemon at the socket */
    BD_QMP_ERROR_PROTOCOL,  /* the peer does not speak QMP */
    BD_QMP_ERROR_COMMAND,   /* the command failed: message is its desc */
} BdQmpErrorCode;

/* Connect to the monitor at 'path' and leave it in command mode
 * (greeting read, qmp_capabilities done). */
BdQmpClient *bd_qmp_client_connect(const char *path, GError **errp);
void bd_qmp_client_free(BdQmpClient *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BdQmpClient, bd_qmp_client_free)

/* The greeting's "QMP" object (borrowed). */
JsonObject *bd_qmp_client_greeting(BdQmpClient *c);

/* Run 'command' with 'args' (an object node, or NULL): its "return"
 * value (new reference), or NULL with BD_QMP_ERROR_COMMAND carrying the
 * daemon's desc (and *error_class, when not NULL, its class).  Events
 * that arrive meanwhile are queued. */
JsonNode *bd_qmp_client_execute(BdQmpClient *c, const char *command,
                                JsonNode *args, char **error_class,
                                GError **errp);

/* The next event (new reference to its object node), waiting at most
 * 'timeout_ms' (-1: forever).  NULL on time-out (no error) or failure. */
JsonNode *bd_qmp_client_next_event(BdQmpClient *c, int timeout_ms,
                                   GError **errp);

#endif
