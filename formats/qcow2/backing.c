/* SPDX-License-Identifier: MIT */
/* The backing file name and format of a qcow2 image, rewritten in the
 * header cluster (docs/interop/qcow2.txt: the name follows the header
 * extensions; the format is the 0xe2792aca extension).
 *
 * Thread model: main thread; takes Qcow2State.lock around the rewrite.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <string.h>
#include "formats/drivers.h"
#include "formats/qcow2/backing.h"
#include "formats/qcow2/qcow2.h"
#include "graph/error.h"
#include "graph/io.h"
#include "graph/main-thread.h"

static uint32_t rd_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

static void wr_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void wr_be64(uint8_t *p, uint64_t v)
{
    wr_be32(p, v >> 32);
    wr_be32(p + 4, (uint32_t)v);
}

static uint64_t align8(uint64_t n) { return (n + 7) & ~7ull; }

/* Build the new header cluster in 'buf' from 'old': extensions other
 * than the backing format kept, the new one and the name appended. */
static int build(Qcow2State *s, const uint8_t *old, uint8_t *buf,
                 const char *file, const char *fmt, uint64_t *name_off)
{
    uint64_t cs = s->cluster_size;
    uint64_t end = s->h.backing_file_offset && s->h.backing_file_offset < cs
                   ? s->h.backing_file_offset : cs;
    uint64_t in = s->h.header_length, out = s->h.header_length;
    size_t flen = file ? strlen(file) : 0, fmtlen = fmt ? strlen(fmt) : 0;

    memcpy(buf, old, s->h.header_length);
    while (in + 8 <= end) {
        uint32_t type = rd_be32(old + in), len = rd_be32(old + in + 4);
        uint64_t step = 8 + align8(len);
        if (type == QCOW2_EXT_END || len > end - in - 8) {
            break;
        }
        if (type != QCOW2_EXT_BACKING_FORMAT) {
            if (out + step > cs) {
                return -ENOSPC;
            }
            memcpy(buf + out, old + in, 8 + len);
            out += step;
        }
        in += step;
    }
    if (file && fmt) {
        if (out + 8 + align8(fmtlen) > cs) {
            return -ENOSPC;
        }
        wr_be32(buf + out, QCOW2_EXT_BACKING_FORMAT);
        wr_be32(buf + out + 4, (uint32_t)fmtlen);
        memcpy(buf + out + 8, fmt, fmtlen);
        out += 8 + align8(fmtlen);
    }
    out += 8;   /* end of extensions: zeroes */
    *name_off = file ? out : 0;
    if (file) {
        if (out + flen > cs) {
            return -ENOSPC;
        }
        memcpy(buf + out, file, flen);
    }
    wr_be64(buf + 8, *name_off);
    wr_be32(buf + 16, (uint32_t)flen);
    return 0;
}

gboolean bd_qcow2_change_backing_file(BdNode *node, const char *file,
                                      const char *fmt, GError **errp)
{
    BD_GLOBAL_STATE_CODE();

    Qcow2State *s;
    g_autofree uint8_t *old = NULL, *buf = NULL;
    uint64_t name_off = 0;
    int ret;

    if (node->drv != &bd_qcow2_driver) {
        return TRUE;
    }
    s = node->opaque;
    if (file && strlen(file) > QCOW2_MAX_BACKING_NAME) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Backing file name too long");
        return FALSE;
    }
    old = g_malloc0(s->cluster_size);
    buf = g_malloc0(s->cluster_size);
    g_mutex_lock(&s->lock);
    ret = bd_child_pread(s->file, 0, s->cluster_size, old, 0);
    if (ret >= 0) {
        ret = build(s, old, buf, file, fmt, &name_off);
    }
    if (ret >= 0) {
        ret = bd_child_pwrite(s->file, 0, s->cluster_size, buf, 0);
    }
    if (ret >= 0) {
        ret = bd_child_flush(s->file);
    }
    if (ret >= 0) {
        g_free(s->h.backing_file);
        g_free(s->h.backing_format);
        s->h.backing_file = g_strdup(file);
        g_free(s->auto_backing_file);
        s->auto_backing_file = g_strdup(file);
        s->h.backing_format = file ? g_strdup(fmt) : NULL;
        s->h.backing_file_offset = name_off;
        s->h.backing_file_size = file ? (uint32_t)strlen(file) : 0;
    }
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC,
                    "Could not update backing file link: %s",
                    g_strerror(-ret));
        return FALSE;
    }
    return TRUE;
}
