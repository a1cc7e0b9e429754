/* SPDX-License-Identifier: MIT */
/* The 'vmdk' format driver: VMware disk images, read-write.
 *
 * An image is either a hosted sparse extent ("KDMV" header: the
 * monolithicSparse and streamOptimized subformats, descriptor
 * embedded), a VMware 3 sparse extent ("COWD", no descriptor) or a
 * descriptor file naming extents (monolithicFlat, twoGbMaxExtentSparse/
 * Flat, vmfs, vmfsSparse), each opened from a file next to the
 * descriptor as the child "extents.N", as QEMU does.  A delta disk
 * names its parent with parentFileNameHint: opened as the backing
 * file, the format probed, unless 'backing' is given.
 *
 * See vmdk.h for the files and the thread model.
 */
#define G_LOG_DOMAIN "blockd-formats"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "formats/filename.h"
#include "formats/registry.h"
#include "formats/vmdk/vmdk.h"

typedef struct {
    GVariant *file;
    GVariant *backing;
    gboolean has_backing;
} VmdkOptions;

/* QAPI BlockdevOptionsGenericCOWFormat. */
static const BdSchemaField vmdk_options[] = {
    { "file", &bd_schema_blockdev_ref, FALSE, BD_AT(VmdkOptions, file) },
    { "backing", &bd_schema_blockdev_ref_or_null, TRUE,
      BD_AT(VmdkOptions, backing), BD_HAS(VmdkOptions, backing) },
    { NULL },
};
BD_SCHEMA_DEFINE_AUTO(VmdkOptions, vmdk_options)

#define FAIL VMDK_FAIL

extern const BdDriver bd_vmdk_driver;

/* --- data path --- */

/* The extent holding guest byte 'off' (off < size). */
static VmdkExtent *find_extent(VmdkState *s, uint64_t off)
{
    guint lo = 0, hi = s->extents->len;

    while (hi - lo > 1) {
        guint mid = (lo + hi) / 2;
        VmdkExtent *e = g_ptr_array_index(s->extents, mid);

        if (e->start <= off) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return g_ptr_array_index(s->extents, lo);
}

static int read_backing(VmdkState *s, uint64_t off, uint64_t bytes,
                        uint8_t *buf)
{
    BdNode *b = bd_node_backing(s->node);
    uint64_t n = 0;

    if (b) {
        int64_t bsize = bd_node_getlength(b);

        if (bsize < 0) {
            return (int)bsize;
        }
        if (off < (uint64_t)bsize) {
            int ret;

            n = MIN(bytes, (uint64_t)bsize - off);
            ret = bd_node_pread(b, off, n, buf, 0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    memset(buf + n, 0, bytes - n);
    return 0;
}

typedef struct {
    VmdkState *s;
    VmdkExtent *e;
} FillCtx;

/* A new grain's bytes before the write: the backing file's. */
static int fill_from_backing(void *opaque, uint64_t grain_off,
                             uint8_t *grain)
{
    FillCtx *f = opaque;

    return read_backing(f->s, f->e->start + grain_off, f->e->grain_size,
                        grain);
}

static int vmdk_pread(BdNode *node, uint64_t offset, uint64_t bytes,
                      void *buf, int flags)
{
    VmdkState *s = node->opaque;
    uint8_t *p = buf;

    while (bytes) {
        VmdkExtent *e = find_extent(s, offset);
        uint64_t rel = offset - e->start;
        uint64_t n = MIN(bytes, e->length - rel);
        int ret = 0;

        switch (e->type) {
        case VMDK_EXTENT_ZERO:
            memset(p, 0, n);
            break;
        case VMDK_EXTENT_FLAT:
            ret = bd_child_pread(e->file, e->flat_offset + rel, n, p, 0);
            break;
        case VMDK_EXTENT_SPARSE: {
            int64_t gte;

            n = MIN(n, e->grain_size - rel % e->grain_size);
            gte = vmdk_sparse_lookup(node, e, rel);
            if (gte < 0) {
                ret = (int)gte;
            } else if (gte == 0) {
                ret = read_backing(s, offset, n, p);
            } else if (gte == VMDK_GTE_ZEROED && e->zero_grain) {
                memset(p, 0, n);
            } else {
                ret = vmdk_sparse_read_grain(e, (uint64_t)gte, rel, n, p);
            }
            break;
        }
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    return 0;
}

static int vmdk_flush(BdNode *node)
{
    VmdkState *s = node->opaque;
    BdChild *last = NULL;

    for (guint i = 0; i < s->extents->len; i++) {
        VmdkExtent *e = g_ptr_array_index(s->extents, i);

        if (e->file && e->file != last) {
            int ret = bd_child_flush(e->file);
            if (ret < 0) {
                return ret;
            }
            last = e->file;
        }
    }
    return 0;
}

/* Write 'cid' into the descriptor's CID line as 8 hex digits.  Writers
 * differ in how they print it (QEMU without leading zeroes), so the text
 * after the line may move by a few bytes: it is written again from the
 * CID on.  The text must still fit where it lives: the embedded
 * descriptor's area, or the descriptor file's node (its size is rounded
 * up to a sector, and writing there grows the file). */
static int write_cid(VmdkState *s, uint32_t cid)
{
    char *text = s->desc_text;
    const char *line, *end;
    g_autofree char *updated = NULL;
    size_t prefix, len;
    int ret;

    if (!text) {
        return 0;
    }
    line = g_str_has_prefix(text, "CID=") ? text : strstr(text, "\nCID=");
    if (!line) {
        return 0;
    }
    line += line == text ? 4 : 5;
    end = line;
    while (g_ascii_isxdigit(*end)) {
        end++;
    }
    if (end == line || end - line > 8) {
        return 0;
    }
    prefix = (size_t)(line - text);
    updated = g_strdup_printf("%.*s%08" PRIx32 "%s", (int)prefix, text, cid,
                              end);
    len = strlen(updated);
    if (len > s->desc_capacity) {
        return 0;
    }
    ret = bd_child_pwrite(s->file, s->desc_offset + prefix, len - prefix,
                          updated + prefix, 0);
    if (ret < 0) {
        return ret;
    }
    g_free(s->desc_text);
    s->desc_text = g_steal_pointer(&updated);
    if (s->desc) {
        __atomic_store_n(&s->desc->cid, cid, __ATOMIC_RELAXED);
    }
    return 0;
}

/* Before the first write: a new CID, as QEMU does, so that a delta disk
 * of this image no longer matches it (its parentCID is the old one). */
static int update_cid(VmdkState *s)
{
    int ret = 0;

    if (__atomic_load_n(&s->cid_updated, __ATOMIC_ACQUIRE)) {
        return 0;
    }
    bd_mutex_lock(&s->cid_lock);
    if (!s->cid_updated) {
        ret = write_cid(s, g_random_int());
        if (ret == 0) {
            __atomic_store_n(&s->cid_updated, TRUE, __ATOMIC_RELEASE);
        }
    }
    bd_mutex_unlock(&s->cid_lock);
    return ret;
}

static int vmdk_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                       const void *buf, int flags)
{
    VmdkState *s = node->opaque;
    const uint8_t *p = buf;
    int cret = update_cid(s);

    if (cret < 0) {
        return cret;
    }

    while (bytes) {
        VmdkExtent *e = find_extent(s, offset);
        uint64_t rel = offset - e->start;
        uint64_t n = MIN(bytes, e->length - rel);
        int ret = 0;

        if (e->read_only) {
            return -EACCES;
        }
        switch (e->type) {
        case VMDK_EXTENT_ZERO:
            ret = -EIO;
            break;
        case VMDK_EXTENT_FLAT:
            ret = bd_child_pwrite(e->file, e->flat_offset + rel, n, p, 0);
            break;
        case VMDK_EXTENT_SPARSE: {
            FillCtx f = { s, e };

            n = MIN(n, e->grain_size - rel % e->grain_size);
            ret = vmdk_sparse_write(node, e, rel, n, p, fill_from_backing,
                                    &f);
            break;
        }
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    if (flags & BD_REQ_FUA) {
        return vmdk_flush(node);
    }
    return 0;
}

/* Ranges that read as zeroes already are left alone; flat extents are
 * zeroed in the file; the rest is written as zeroes. */
static int vmdk_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                              int flags)
{
    VmdkState *s = node->opaque;
    gboolean backing = bd_node_backing(node) != NULL;
    g_autofree uint8_t *zeroes = NULL;
    int cret = update_cid(s);

    if (cret < 0) {
        return cret;
    }

    while (bytes) {
        VmdkExtent *e = find_extent(s, offset);
        uint64_t rel = offset - e->start;
        uint64_t n = MIN(bytes, e->length - rel);
        int ret = 0;

        if (e->type == VMDK_EXTENT_FLAT && !e->read_only) {
            ret = bd_child_pwrite_zeroes(e->file, e->flat_offset + rel, n,
                                         flags & ~BD_REQ_MAY_UNMAP);
        } else if (e->type == VMDK_EXTENT_SPARSE) {
            int64_t gte;

            n = MIN(n, e->grain_size - rel % e->grain_size);
            gte = vmdk_sparse_lookup(node, e, rel);
            if (gte < 0) {
                ret = (int)gte;
            } else if ((gte == 0 && !backing) ||
                       (gte == VMDK_GTE_ZEROED && e->zero_grain)) {
                ret = 0;
            } else {
                if (!zeroes) {
                    zeroes = g_try_malloc0(e->grain_size);
                    if (!zeroes) {
                        return -ENOMEM;
                    }
                }
                ret = vmdk_pwrite(node, offset, n, zeroes, 0);
            }
        } else if (e->type == VMDK_EXTENT_FLAT) {
            ret = -EACCES;
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    if (flags & BD_REQ_FUA) {
        return vmdk_flush(node);
    }
    return 0;
}

static int vmdk_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                             uint64_t *pnum, uint64_t *map, BdNode **file)
{
    VmdkState *s = node->opaque;
    VmdkExtent *e = find_extent(s, offset);
    uint64_t rel = offset - e->start;
    uint64_t n = MIN(bytes, e->length - rel);
    gboolean backing = bd_node_backing(node) != NULL;
    int64_t gte;
    int state;

    switch (e->type) {
    case VMDK_EXTENT_ZERO:
        *pnum = n;
        return BD_BLOCK_ZERO;
    case VMDK_EXTENT_FLAT:
        *pnum = n;
        *map = e->flat_offset + rel;
        *file = e->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    case VMDK_EXTENT_SPARSE:
        break;
    }
    gte = vmdk_sparse_lookup(node, e, rel);
    if (gte < 0) {
        return (int)gte;
    }
    if (gte == 0) {
        state = backing ? 0 : BD_BLOCK_ZERO;
    } else if (gte == VMDK_GTE_ZEROED && e->zero_grain) {
        state = BD_BLOCK_ZERO;
    } else if (e->compressed) {
        state = BD_BLOCK_DATA;
    } else {
        uint64_t in = rel % e->grain_size;

        *pnum = MIN(n, e->grain_size - in);
        *map = (uint64_t)gte * VMDK_SECTOR + in;
        *file = e->file->node;
        return BD_BLOCK_DATA | BD_BLOCK_OFFSET_VALID;
    }
    /* A run of grains in the same state. */
    {
        uint64_t done = MIN(n, e->grain_size - rel % e->grain_size);

        while (done < n) {
            int64_t g = vmdk_sparse_lookup(node, e, rel + done);

            if (g != gte) {
                break;
            }
            done = MIN(n, done + e->grain_size);
        }
        *pnum = done;
    }
    return state;
}

/* --- open --- */

static void vmdk_close(BdNode *node)
{
    VmdkState *s = node->opaque;

    if (!s) {
        return;
    }
    if (s->extents) {
        g_ptr_array_unref(s->extents);
    }
    vmdk_desc_free(s->desc);
    g_free(s->desc_text);
    bd_mutex_destroy(&s->cid_lock);
    g_free(s);
    node->opaque = NULL;
}

static gboolean open_extents(BdNode *node, VmdkState *s, gboolean read_only,
                             GError **errp)
{
    const char *name = node->node_name;
    const char *desc_name = s->file->node->filename;
    g_autofree char *dir = desc_name ? g_path_get_dirname(desc_name) : NULL;
    uint64_t start = 0;

    if (s->desc->extents->len == 0) {
        FAIL("Node '%s': vmdk: the descriptor names no extents", name);
    }
    for (guint i = 0; i < s->desc->extents->len; i++) {
        VmdkExtentDesc *x = g_ptr_array_index(s->desc->extents, i);
        VmdkExtent *e;
        g_autofree char *path = NULL, *child = NULL;
        g_autoptr(GVariant) ref = NULL;

        if (x->sectors == 0) {
            /* Holds nothing; the data path never meets it. */
            continue;
        }
        e = g_new0(VmdkExtent, 1);
        g_ptr_array_add(s->extents, e);
        e->type = x->type;
        e->start = start;
        if (x->sectors > (UINT64_MAX / VMDK_SECTOR - start / VMDK_SECTOR) ||
            start + x->sectors * VMDK_SECTOR > (uint64_t)INT64_MAX) {
            FAIL("Node '%s': vmdk: the extents add up to more than the "
                 "largest size", name);
        }
        e->length = x->sectors * VMDK_SECTOR;
        e->read_only = strcmp(x->access, "RW") != 0;
        start += e->length;
        if (e->type == VMDK_EXTENT_ZERO) {
            continue;
        }
        if (g_path_is_absolute(x->filename)) {
            path = g_strdup(x->filename);
        } else if (dir) {
            path = g_build_filename(dir, x->filename, NULL);
        } else {
            FAIL("Cannot use relative extent paths with VMDK descriptor "
                 "file '%s'", desc_name ? desc_name : name);
        }
        ref = bd_formats_protocol_options(path, errp);
        if (!ref) {
            return FALSE;
        }
        g_variant_ref_sink(ref);
        child = g_strdup_printf("extents.%u", i);
        e->file = bd_node_open_child(node, ref, child, BD_CHILD_DATA |
                                     BD_CHILD_METADATA, FALSE, errp);
        if (!e->file) {
            g_prefix_error(errp, "Could not open extent file '%s': ", path);
            return FALSE;
        }
        if (e->type == VMDK_EXTENT_FLAT) {
            if (x->offset > (uint64_t)INT64_MAX / VMDK_SECTOR) {
                FAIL("Node '%s': vmdk: extent %u's offset is out of range",
                     name, i);
            }
            e->flat_offset = x->offset * VMDK_SECTOR;
        } else if (!vmdk_sparse_open(node, e, read_only || e->read_only,
                                     NULL, errp)) {
            return FALSE;
        }
    }
    if (s->extents->len == 0) {
        FAIL("Node '%s': vmdk: the descriptor's extents are all empty", name);
    }
    s->size = start;
    return TRUE;
}

/* Parents opened from parentFileNameHint are opened inside the open of
 * their child (nested, on one thread): the depth of that nesting bounds
 * a chain that loops (a delta disk naming itself or an ancestor). */
#define VMDK_CHAIN_MAX 64
static __thread int open_depth;

static gboolean open_backing(BdNode *node, VmdkState *s, const VmdkOptions *o,
                             GError **errp)
{
    g_autofree char *dir = NULL;
    g_autoptr(GVariant) ref = NULL;
    BdChild *backing;

    if (o->has_backing) {
        return bd_node_open_child(node, o->backing, "backing", BD_CHILD_COW,
                                  TRUE, errp) != NULL || !errp || !*errp;
    }
    if (!s->parent_hint) {
        return TRUE;
    }
    s->backing_from_header = TRUE;
    if (open_depth >= VMDK_CHAIN_MAX) {
        FAIL("Node '%s': vmdk: more than %d parents (parentFileNameHint) "
             "in a row: the chain of delta disks loops or is too long",
             node->node_name, VMDK_CHAIN_MAX);
    }
    if (s->file->node->filename) {
        dir = g_path_get_dirname(s->file->node->filename);
    }
    ref = bd_formats_image_options(s->parent_hint, NULL, dir, errp);
    if (!ref) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    open_depth++;
    backing = bd_node_open_child(node, ref, "backing", BD_CHILD_COW, FALSE,
                                 errp);
    open_depth--;
    if (!backing) {
        bd_prefix_backing_error(errp);
        return FALSE;
    }
    if (!bd_formats_filename_is_remote(s->parent_hint)) {
        bd_formats_raw_set_probed(backing->node);
    }
    return TRUE;
}

/* A delta disk's parentCID must be its vmdk parent's CID: otherwise
 * the parent was written after the delta disk was made, and reading
 * through to it would mix two states.  QEMU fails such reads with
 * EINVAL; blockd refuses the image at open with the reason. */
static gboolean check_parent_cid(BdNode *node, VmdkState *s, GError **errp)
{
    BdNode *b = bd_node_backing(node);
    VmdkState *ps;
    uint32_t cid;

    if (!b || b->drv != &bd_vmdk_driver || !s->desc ||
        !s->desc->has_parent_cid) {
        return TRUE;
    }
    ps = b->opaque;
    if (!ps || !ps->desc || !ps->desc->has_cid) {
        return TRUE;
    }
    cid = __atomic_load_n(&ps->desc->cid, __ATOMIC_RELAXED);
    if (cid == s->desc->parent_cid) {
        return TRUE;
    }
    FAIL("Node '%s': vmdk: the parent '%s' has CID %08" PRIx32 " but this "
         "delta disk was made from CID %08" PRIx32 " (parentCID): the parent "
         "changed since", node->node_name,
         b->filename ? b->filename : b->node_name, cid, s->desc->parent_cid);
}

static gboolean vmdk_load(BdNode *node, VmdkState *s, GError **errp)
{
    const char *name = node->node_name;
    int64_t flen = bd_node_getlength(s->file->node);
    uint8_t magic[4] = { 0 };
    int ret;

    if (flen < 0) {
        FAIL("Could not get image size: %s", g_strerror((int)-flen));
    }
    if (flen >= 4) {
        ret = bd_child_pread(s->file, 0, 4, magic, 0);
        if (ret < 0) {
            FAIL("Could not read the VMDK header: %s", g_strerror(-ret));
        }
    }
    if (memcmp(magic, VMDK4_MAGIC, 4) == 0 ||
        memcmp(magic, VMDK3_MAGIC, 4) == 0) {
        VmdkExtent *e = g_new0(VmdkExtent, 1);

        g_ptr_array_add(s->extents, e);
        e->type = VMDK_EXTENT_SPARSE;
        e->file = s->file;
        if (!vmdk_sparse_open(node, e, node->read_only, &s->desc_text,
                              errp)) {
            return FALSE;
        }
        s->size = e->length;
        s->desc_offset = e->desc_offset;
        s->desc_capacity = e->desc_size;
        if (s->desc_text) {
            s->desc = vmdk_desc_parse(s->desc_text, name, errp);
            if (!s->desc) {
                return FALSE;
            }
        }
        return TRUE;
    }
    /* A descriptor file. */
    if (flen > VMDK_DESC_MAX) {
        FAIL("Node '%s': vmdk: the file is neither a sparse extent nor a "
             "descriptor (%" PRId64 " bytes, more than a descriptor's %u)",
             name, flen, VMDK_DESC_MAX);
    }
    s->desc_text = g_malloc0(flen + 1);
    s->desc_capacity = (uint64_t)flen;
    ret = bd_child_pread(s->file, 0, flen, s->desc_text, 0);
    if (ret < 0) {
        FAIL("Could not read the VMDK descriptor: %s", g_strerror(-ret));
    }
    /* The text ends at the first NUL (the file node may show its size
     * rounded up to a sector). */
    if (!strstr(s->desc_text, "createType")) {
        FAIL("invalid VMDK image descriptor");
    }
    s->desc = vmdk_desc_parse(s->desc_text, name, errp);
    if (!s->desc) {
        return FALSE;
    }
    if (!s->desc->create_type) {
        FAIL("invalid VMDK image descriptor");
    }
    if (strcmp(s->desc->create_type, "seSparse") == 0) {
        FAIL("Unsupported image type '%s'", s->desc->create_type);
    }
    return open_extents(node, s, node->read_only, errp);
}

static gboolean vmdk_open(BdNode *node, GVariant *options, GError **errp)
{
    g_auto(VmdkOptions) o = { 0 };
    VmdkState *s = g_new0(VmdkState, 1);

    bd_schema_decode(vmdk_options, options, &o);
    s->node = node;
    bd_mutex_init(&s->cid_lock);
    s->extents = g_ptr_array_new_with_free_func(
        (GDestroyNotify)vmdk_extent_free);
    node->opaque = s;
    s->file = bd_node_open_child(node, o.file, "file",
                                 BD_CHILD_DATA | BD_CHILD_METADATA |
                                 BD_CHILD_PRIMARY, FALSE, errp);
    if (!s->file || !vmdk_load(node, s, errp)) {
        vmdk_close(node);
        return FALSE;
    }
    if (s->desc && s->desc->parent_hint && *s->desc->parent_hint &&
        !(s->desc->has_parent_cid && s->desc->parent_cid == 0xffffffffu)) {
        s->parent_hint = s->desc->parent_hint;
    }
    if (!open_backing(node, s, &o, errp) ||
        !check_parent_cid(node, s, errp)) {
        vmdk_close(node);
        return FALSE;
    }
    bd_node_set_size(node, s->size);
    return TRUE;
}

static gboolean vmdk_has_default_backing(BdNode *node)
{
    VmdkState *s = node->opaque;

    return s->parent_hint != NULL;
}

static void vmdk_query_image_info(BdNode *node, GVariantDict *image)
{
    VmdkState *s = node->opaque;

    for (guint i = 0; i < s->extents->len; i++) {
        VmdkExtent *e = g_ptr_array_index(s->extents, i);

        if (e->type == VMDK_EXTENT_SPARSE) {
            g_variant_dict_insert(image, "cluster-size", "x",
                                  (gint64)e->grain_size);
            break;
        }
    }
    g_variant_dict_insert(image, "dirty-flag", "b", FALSE);
    if (s->parent_hint && bd_node_backing(node) && s->backing_from_header) {
        g_variant_dict_insert_value(image, "backing-filename",
            g_variant_new_take_string(bd_query_string(s->parent_hint)));
        g_variant_dict_insert_value(image, "full-backing-filename",
            g_variant_new_take_string(
                bd_query_string(bd_node_backing(node)->filename)));
    }
}


extern const BdSchemaField vmdk_create_options[];
gboolean vmdk_create(GVariant *options, GError **errp);

const BdDriver bd_vmdk_driver = {
    .name = "vmdk",
    .options = vmdk_options,
    .is_format = TRUE,
    .open = vmdk_open,
    .close = vmdk_close,
    .reopen_prepare = bd_reopen_prepare_fixed,
    .has_default_backing = vmdk_has_default_backing,
    .pread = vmdk_pread,
    .pwrite = vmdk_pwrite,
    .pwrite_zeroes = vmdk_pwrite_zeroes,
    .flush = vmdk_flush,
    .block_status = vmdk_block_status,
    .query_image_info = vmdk_query_image_info,
    .create_options = vmdk_create_options,
    .create = vmdk_create,
};
