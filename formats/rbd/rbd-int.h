/* SPDX-License-Identifier: MIT */
/* The rbd driver's parts: the options (QEMU's BlockdevOptionsRbd), the
 * connection to the cluster made off the main thread, and the legacy
 * "rbd:" file names.  Internal to formats/rbd/. */
#ifndef BD_FORMATS_RBD_INT_H
#define BD_FORMATS_RBD_INT_H

#include <glib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "graph/schema.h"

/* Defaults that replace librados' own when neither the conf file nor
 * the legacy file name sets them: librados waits 300 s for a monitor
 * and for ever for an OSD. */
#define RBD_DEFAULT_MOUNT_TIMEOUT 10     /* client_mount_timeout, s */
#define RBD_DEFAULT_MON_OP_TIMEOUT 10    /* rados_mon_op_timeout, s */
#define RBD_DEFAULT_OSD_OP_TIMEOUT 30    /* rados_osd_op_timeout, s */

/* QEMU's internal option for the legacy file name's librados options:
 * not in the schema, so only a file name can set it, never QMP or the
 * command line.  Type "as": key, value, key, value... */
#define RBD_KEYVALUE_PAIRS "=keyvalue-pairs"

/* BlockdevOptionsRbd's members (the schema in rbd.c; also the
 * 'location' of BlockdevCreateOptionsRbd). */
extern const BdSchemaType rbd_options_type;
extern const BdSchemaField rbd_options_fields[];

/* Where and as whom to connect, decoded from the options. */
typedef struct {
    char *pool, *ns, *image, *snapshot;
    char *conf;                  /* conf file, or NULL: librados' search */
    char *user;                  /* NULL: "admin" */
    char *key;                   /* base64 key from key-secret, or NULL */
    char *mon_host;              /* from 'server', or NULL */
    char *auth_client_required;  /* "cephx;none", or NULL */
    char **keyvalue_pairs;       /* key, value, ...: the file name's, or NULL */
    gboolean nocache;            /* cache.direct: librbd's cache off */
} RbdConfig;

void rbd_config_clear(RbdConfig *cfg);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(RbdConfig, rbd_config_clear)

/* Fill 'cfg' from validated BlockdevOptionsRbd (a{sv}); looks up the
 * key-secret object.  Any thread (secrets are looked up under their
 * registry's lock). */
gboolean rbd_config_decode(GVariant *options, RbdConfig *cfg, GError **errp);

/* A string that tells configurations apart (holds the key: keep it
 * in memory only). */
char *rbd_config_fingerprint(const RbdConfig *cfg);

/* What a connection holds. */
typedef struct {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;           /* NULL unless opened */
    double mount_timeout;        /* the effective client_mount_timeout */
} RbdConn;

void rbd_conn_close(RbdConn *c);

/* Connect to the cluster and open the pool (and the image, with its
 * snapshot, when 'open_image').  Blocks: call it where blocking is
 * allowed (a job thread), or through rbd_connect_bounded. */
gboolean rbd_connect(const RbdConfig *cfg, gboolean open_image,
                     RbdConn *out, GError **errp);
/* The same on a thread of its own, waited for at most the effective
 * client_mount_timeout (+ 1 s): a cluster that does not answer cannot
 * hold the caller longer.  A connection that ends after that is closed
 * by its thread.  Main thread (open). */
gboolean rbd_connect_bounded(const RbdConfig *cfg, gboolean open_image,
                             RbdConn *out, GError **errp);

/* Legacy file names: rbd:pool[/namespace]/image[@snap][:key=value...]
 * into the driver's options (in 'd', "driver" excluded).  conf is the
 * conf file, id the user; every other key=value, in order, goes into
 * the member RBD_KEYVALUE_PAIRS (as: key, value, key, value...) for
 * rados_conf_set.  Any thread. */
gboolean rbd_filename_parse(const char *filename, GVariantDict *d,
                            GError **errp);

#endif
