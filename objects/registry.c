/* SPDX-License-Identifier: MIT */
/* The explicit table of user-creatable object types blockd offers,
 * registered at start-up (throttle-group keeps its own registry in
 * formats/; control/cmd-object.c adds it to ObjectOptions). */
#define G_LOG_DOMAIN "blockd-objects"

#include "graph/main-thread.h"
#include "objects/authz.h"
#include "objects/iothread.h"
#include "objects/object.h"
#include "objects/secret.h"
#include "objects/tls-creds.h"

/* Order is the order of registration; the ObjectType enum of the schema
 * lists them sorted by name whatever the order here. */
static const BdObjectType *const bd_objects_table[] = {
    &bd_secret_type,
    &bd_authz_simple_type,
    &bd_authz_list_type,
    &bd_authz_listfile_type,
    &bd_tls_creds_anon_type,
    &bd_tls_creds_psk_type,
    &bd_tls_creds_x509_type,
    &bd_iothread_type,
};

void bd_objects_register_builtin(void)
{
    BD_GLOBAL_STATE_CODE();

    static gboolean done;

    /* Idempotent: the daemon and every test may call it. */
    if (!done) {
        done = TRUE;
        for (gsize i = 0; i < G_N_ELEMENTS(bd_objects_table); i++) {
            bd_object_type_register(bd_objects_table[i]);
        }
    }
}
