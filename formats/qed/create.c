/* SPDX-License-Identifier: MIT */
/* blockdev-create for qed (BlockdevCreateOptionsQed): header, backing
 * file name, and an empty L1 table, as QEMU lays them out. */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/create-util.h"
#include "formats/qed/qed.h"

/* --- blockdev-create (BlockdevCreateOptionsQed) --- */

typedef struct {
    GVariant *file;            /* by now the name of the node (jobs/) */
    guint64 size;
    const char *backing_file;
    const char *backing_fmt;
    guint64 cluster_size;
    gint64 table_size;
} QedCreateOptions;

#define C(f) BD_AT(QedCreateOptions, f)
const BdSchemaField qed_create_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, C(file) },
    { "size", &bd_schema_size, FALSE, C(size) },
    { "backing-file", &bd_schema_str, TRUE, C(backing_file) },
    { "backing-fmt", &bd_blockdev_driver_enum, TRUE, C(backing_fmt) },
    { "cluster-size", &bd_schema_size, TRUE, C(cluster_size),
      .def.u = QED_DEFAULT_CLUSTER_SIZE },
    { "table-size", &bd_schema_int, TRUE, C(table_size),
      .def.i = QED_DEFAULT_TABLE_SIZE },
    { NULL } };
#undef C
BD_SCHEMA_DEFINE_AUTO(QedCreateOptions, qed_create_options)

gboolean qed_create(GVariant *options, GError **errp)
{
    g_auto(QedCreateOptions) c = { 0 };
    g_autofree uint8_t *h = NULL;
    uint64_t cs, ts, features = 0;
    size_t blen = 0;
    BdNode *file;
    int ret;

    bd_schema_decode(qed_create_options, options, &c);
    cs = c.cluster_size;
    if (!cluster_size_valid(cs)) {
        FAIL("QED cluster size must be within range [%u, %u] and power of 2",
             QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
    }
    if (c.table_size < 0 || !table_size_valid((uint64_t)c.table_size)) {
        FAIL("QED table size must be within range [%u, %u] and power of 2",
             QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
    }
    ts = (uint64_t)c.table_size;
    if (!image_size_valid(c.size, cs, ts)) {
        FAIL("QED image size must be a non-zero multiple of cluster size "
             "and less than %" PRIu64 " bytes", max_image_size(cs, ts));
    }
    if (c.backing_file) {
        blen = strlen(c.backing_file);
        if (blen > QED_MAX_BACKING_NAME || QED_HEADER_SIZE + blen > cs) {
            FAIL("Backing file name too long for the QED header (%zu "
                 "bytes)", blen);
        }
        features |= QED_F_BACKING_FILE;
        if (c.backing_fmt && strcmp(c.backing_fmt, "raw") == 0) {
            features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
    }
    file = bd_formats_create_file_node(c.file, errp);
    if (!file) {
        return FALSE;
    }
    h = g_malloc0(QED_HEADER_SIZE + blen);
    put_le32(h + H_MAGIC, QED_MAGIC);
    put_le32(h + H_CLUSTER_SIZE, (uint32_t)cs);
    put_le32(h + H_TABLE_SIZE, (uint32_t)ts);
    put_le32(h + H_HEADER_SIZE, 1);
    put_le64(h + H_FEATURES, features);
    put_le64(h + H_L1_OFFSET, cs);
    put_le64(h + H_IMAGE_SIZE, c.size);
    if (blen) {
        put_le32(h + H_BACKING_OFFSET, QED_HEADER_SIZE);
        put_le32(h + H_BACKING_SIZE, (uint32_t)blen);
        memcpy(h + QED_HEADER_SIZE, c.backing_file, blen);
    }
    /* The L1 table is zeroes: a hole up to its end. */
    ret = bd_node_truncate(file, 0);
    if (ret == 0) {
        ret = bd_node_truncate(file, cs + cs * ts);
    }
    if (ret == 0) {
        ret = bd_node_pwrite(file, 0, QED_HEADER_SIZE + blen, h, 0);
    }
    if (ret == 0) {
        ret = bd_node_flush(file);
    }
    if (ret < 0) {
        FAIL("Could not write QED image: %s", g_strerror(-ret));
    }
    return TRUE;
}

