/* SPDX-License-Identifier: MIT */
/* Pulling data over NBD with libnbd: the extents worth copying (block
 * status of base:allocation or of a dirty-bitmap context), then many
 * reads in flight on several connections, written through an entry
 * handle of blockd's graph.
 *
 * Thread model: the caller's thread plans and reports progress; each
 * worker thread owns one libnbd connection and takes chunks from a
 * shared atomic index; the entry handle is thread-safe.
 */
#include <errno.h>
#include <libnbd.h>
#include <string.h>

#include "ctl/backup.h"
#include "ctl/qmp-client.h"

#define CHUNK (4u << 20)          /* the largest read of one request */
#define NBD_STATE_HOLE 1u
#define NBD_STATE_ZERO 2u

static struct nbd_handle *open_export(const char *uri, const char *context,
                                      GError **errp)
{
    struct nbd_handle *h = nbd_create();

    if (!h || (context && nbd_add_meta_context(h, context) < 0) ||
        nbd_connect_uri(h, uri) < 0) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "cannot read the backup export %s: %s", uri,
                    nbd_get_error());
        if (h) {
            nbd_close(h);
        }
        return NULL;
    }
    return h;
}

typedef struct {
    GArray *extents;
    const char *context;
    gboolean dirty_mode;
    uint64_t reached;       /* the end of the last extent reported */
} ExtentCollector;

static int collect(void *opaque, const char *context, uint64_t offset,
                   uint32_t *entries, size_t n, int *error)
{
    ExtentCollector *ec = opaque;

    if (strcmp(context, ec->context)) {
        return 0;
    }
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint32_t len = entries[i], flags = entries[i + 1];
        gboolean copy = ec->dirty_mode ? (flags & 1) != 0
                                       : !(flags & NBD_STATE_ZERO);
        if (copy) {
            BdCtlExtent *last = ec->extents->len
                ? &g_array_index(ec->extents, BdCtlExtent,
                                 ec->extents->len - 1) : NULL;
            if (last && last->offset + last->length == offset) {
                last->length += len;
            } else {
                BdCtlExtent e = { offset, len };
                g_array_append_val(ec->extents, e);
            }
        }
        offset += len;
    }
    ec->reached = offset;
    return 0;
}

GArray *bd_ctl_pull_extents(const char *uri, const char *bitmap_context,
                            uint64_t *size, GError **errp)
{
    const char *context = bitmap_context ? bitmap_context
                                         : LIBNBD_CONTEXT_BASE_ALLOCATION;
    struct nbd_handle *h = open_export(uri, context, errp);
    g_autoptr(GArray) extents = g_array_new(FALSE, FALSE,
                                            sizeof(BdCtlExtent));
    ExtentCollector ec = { extents, context, bitmap_context != NULL };
    int64_t len;

    if (!h) {
        return NULL;
    }
    len = nbd_get_size(h);
    if (len < 0 || nbd_can_meta_context(h, context) != 1) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                    "the backup export offers no %s", context);
        nbd_close(h);
        return NULL;
    }
    *size = (uint64_t)len;
    for (uint64_t off = 0; off < (uint64_t)len;) {
        uint64_t count = MIN((uint64_t)len - off, 1ull << 30);
        nbd_extent_callback cb = { .callback = collect, .user_data = &ec };

        ec.reached = off;
        if (nbd_block_status(h, count, off, cb, 0) < 0) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "block status of the backup export: %s",
                        nbd_get_error());
            nbd_close(h);
            return NULL;
        }
        /* The server may answer less than asked: go on from where its
         * answer ended. */
        if (ec.reached <= off) {
            g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL,
                        "the backup export reported no extent at %"
                        G_GUINT64_FORMAT, off);
            nbd_close(h);
            return NULL;
        }
        off = MIN(ec.reached, (uint64_t)len);
    }
    nbd_close(h);
    /* An answer may reach past the end: keep the extents inside. */
    for (guint i = extents->len; i-- > 0;) {
        BdCtlExtent *e = &g_array_index(extents, BdCtlExtent, i);
        if (e->offset >= (uint64_t)len) {
            g_array_remove_index(extents, i);
        } else if (e->offset + e->length > (uint64_t)len) {
            e->length = (uint64_t)len - e->offset;
        }
    }
    return g_steal_pointer(&extents);
}

typedef struct {
    const char *uri;
    GArray *chunks;          /* BdCtlExtent, each at most CHUNK */
    BdEntry *entry;
    gboolean compress;
    gint next;               /* atomic: the next chunk to take */
    gint64 done;             /* atomic: bytes copied */
    gint failed;             /* atomic */
    GMutex lock;
    char *error;             /* the first failure, under lock */
} Pull;

static void pull_fail(Pull *p, char *msg)
{
    g_mutex_lock(&p->lock);
    if (!p->error) {
        p->error = msg;
        msg = NULL;
    }
    g_mutex_unlock(&p->lock);
    g_free(msg);
    g_atomic_int_set(&p->failed, 1);
}

/* Whole clusters go compressed, one request per cluster (the qcow2
 * driver compresses a cluster at a time; image.c creates images with
 * qcow2's default 64 KiB clusters); a partial cluster at either end is
 * written plainly. */
static int write_compressed(BdEntry *entry, const BdCtlExtent *c,
                            const char *buf)
{
    const uint64_t cl = 64 * 1024;
    uint64_t off = c->offset, end = c->offset + c->length;

    while (off < end) {
        uint64_t next = MIN((off / cl + 1) * cl, end);
        int flags = off % cl == 0 && next - off == cl
                    ? BD_REQ_WRITE_COMPRESSED : 0;
        int ret = bd_entry_pwrite(entry, off, next - off,
                                  buf + (off - c->offset), flags);

        if (ret == -ENOTSUP && flags) {
            ret = bd_entry_pwrite(entry, off, next - off,
                                  buf + (off - c->offset), 0);
        }
        if (ret < 0) {
            return ret;
        }
        off = next;
    }
    return 0;
}

static gpointer pull_worker(gpointer opaque)
{
    Pull *p = opaque;
    g_autoptr(GError) err = NULL;
    struct nbd_handle *h = open_export(p->uri, NULL, &err);
    g_autofree void *buf = g_malloc(CHUNK);

    if (!h) {
        pull_fail(p, g_strdup(err->message));
        return NULL;
    }
    while (!g_atomic_int_get(&p->failed)) {
        guint i = (guint)g_atomic_int_add(&p->next, 1);
        BdCtlExtent *c;
        int ret;

        if (i >= p->chunks->len) {
            break;
        }
        c = &g_array_index(p->chunks, BdCtlExtent, i);
        if (nbd_pread(h, buf, c->length, c->offset, 0) < 0) {
            pull_fail(p, g_strdup_printf("reading %" G_GUINT64_FORMAT
                                         "+%" G_GUINT64_FORMAT ": %s",
                                         c->offset, c->length,
                                         nbd_get_error()));
            break;
        }
        ret = p->compress ? write_compressed(p->entry, c, buf)
                          : bd_entry_pwrite(p->entry, c->offset, c->length,
                                            buf, 0);
        if (ret < 0) {
            pull_fail(p, g_strdup_printf("writing the backup image: %s",
                                         g_strerror(-ret)));
            break;
        }
        g_atomic_pointer_add(&p->done, (gssize)c->length);
    }
    nbd_shutdown(h, 0);
    nbd_close(h);
    return NULL;
}

gboolean bd_ctl_pull(const char *uri, GArray *extents, BdEntry *entry,
                     int workers, gboolean compress,
                     BdCtlProgressFn progress, gpointer opaque,
                     GError **errp)
{
    Pull p = { .uri = uri, .entry = entry, .compress = compress };
    g_autoptr(GPtrArray) threads = g_ptr_array_new();
    uint64_t total = 0;

    p.chunks = g_array_new(FALSE, FALSE, sizeof(BdCtlExtent));
    g_mutex_init(&p.lock);
    for (guint i = 0; i < extents->len; i++) {
        BdCtlExtent e = g_array_index(extents, BdCtlExtent, i);
        total += e.length;
        while (e.length) {
            BdCtlExtent c = { e.offset, MIN(e.length, CHUNK) };
            g_array_append_val(p.chunks, c);
            e.offset += c.length;
            e.length -= c.length;
        }
    }
    workers = CLAMP(workers, 1, 64);
    for (int i = 0; i < workers && (guint)i < MAX(p.chunks->len, 1u); i++) {
        g_ptr_array_add(threads, g_thread_new("pull", pull_worker, &p));
    }
    /* Progress while the workers run. */
    for (;;) {
        gboolean all_done = g_atomic_int_get(&p.next) >= (gint)p.chunks->len
                            || g_atomic_int_get(&p.failed);
        if (progress) {
            progress((uint64_t)g_atomic_pointer_get(&p.done), total, opaque);
        }
        if (all_done) {
            break;
        }
        g_usleep(250 * 1000);
    }
    for (guint i = 0; i < threads->len; i++) {
        g_thread_join(threads->pdata[i]);
    }
    if (progress) {
        progress((uint64_t)g_atomic_pointer_get(&p.done), total, opaque);
    }
    g_array_unref(p.chunks);
    g_mutex_clear(&p.lock);
    if (p.error) {
        g_set_error(errp, BD_QMP_ERROR, BD_QMP_ERROR_PROTOCOL, "%s", p.error);
        g_free(p.error);
        return FALSE;
    }
    return TRUE;
}
