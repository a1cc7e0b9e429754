/* SPDX-License-Identifier: MIT */
/* The error domain of blockd's GErrors; control/ maps the codes to QMP
 * error classes. */
#ifndef BD_GRAPH_ERROR_H
#define BD_GRAPH_ERROR_H

#include <glib.h>

#define BD_ERROR (bd_error_quark())
GQuark bd_error_quark(void);

typedef enum {
    BD_ERROR_GENERIC,            /* QMP "GenericError" */
    BD_ERROR_DEVICE_NOT_FOUND,   /* QMP "DeviceNotFound" */
    BD_ERROR_COMMAND_NOT_FOUND,  /* QMP "CommandNotFound" */
    BD_ERROR_DEVICE_NOT_ACTIVE,  /* QMP "DeviceNotActive" */
    /* QMP "GenericError": a chain of images opened one inside another
     * that loops.  Set once, at the bound; the levels it unwinds through
     * leave it unprefixed (bd_prefix_backing_error). */
    BD_ERROR_CHAIN_LOOP,
} BdErrorCode;

/* "Could not open backing file: " before *errp, as QEMU says it at each
 * level of a chain, except for BD_ERROR_CHAIN_LOOP. */
void bd_prefix_backing_error(GError **errp);

#endif
