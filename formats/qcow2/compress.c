/* SPDX-License-Identifier: MIT */
/* qcow2 compressed clusters: zlib raw deflate (window 4 KiB), as QEMU.
 *
 * Thread model: no shared state; the caller holds no lock while
 * (de)compressing.
 */
#define G_LOG_DOMAIN "blockd-qcow2"

#include <errno.h>
#include <zlib.h>
#include "graph/io.h"
#include "graph/debug-event.h"
#include "formats/qcow2/qcow2.h"

static int inflate_raw(const uint8_t *in, size_t in_len, uint8_t *out,
                       size_t out_len)
{
    z_stream z = { 0 };
    int ret;

    if (inflateInit2(&z, -12) != Z_OK) {
        return -EIO;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = in_len;
    z.next_out = out;
    z.avail_out = out_len;
    ret = inflate(&z, Z_FINISH);
    /* The compressed size is rounded up to sectors: running out of
     * output with input left over is fine, as in QEMU. */
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0) {
        ret = 0;
    } else {
        ret = -EIO;
    }
    inflateEnd(&z);
    return ret;
}

int qcow2_read_compressed(Qcow2State *s, uint64_t l2e, uint8_t *out)
{
    uint64_t coffset = l2e & s->coffset_mask;
    uint64_t nb = ((l2e >> s->csize_shift) & s->csize_mask) + 1;
    uint64_t csize = nb * 512 - (coffset & 511);
    int64_t flen = bd_node_getlength(s->file->node);
    g_autofree uint8_t *in = NULL;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    if (coffset >= (uint64_t)flen) {
        return -EIO;
    }
    csize = MIN(csize, (uint64_t)flen - coffset);
    in = g_try_malloc(csize);
    if (!in) {
        return -ENOMEM;
    }
    bd_debug_event(s->file, BD_DEBUG_EVENT_READ_COMPRESSED);
    ret = bd_child_pread(s->file, coffset, csize, in, 0);
    if (ret < 0) {
        return ret;
    }
    return inflate_raw(in, csize, out, s->cluster_size);
}

ssize_t qcow2_compress_cluster(const uint8_t *in, size_t len, uint8_t *out,
                               size_t out_len)
{
    z_stream z = { 0 };
    ssize_t ret;

    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return -EIO;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = len;
    z.next_out = out;
    z.avail_out = out_len;
    ret = deflate(&z, Z_FINISH);
    if (ret == Z_STREAM_END) {
        ret = out_len - z.avail_out;
    } else {
        ret = ret == Z_OK ? -ENOSPC : -EIO;
    }
    deflateEnd(&z);
    return ret;
}
