/* SPDX-License-Identifier: MIT */
/* The 'vmdk' format driver's shared declarations.
 *
 * A vmdk node is a list of extents laid end to end in the guest's
 * address space.  A monolithic sparse or streamOptimized image is one
 * SPARSE extent, the image file itself (header "KDMV", descriptor
 * embedded), or a VMware 3 ("COWD") sparse file.  A descriptor file
 * (text, "# Disk DescriptorFile") names its extents, FLAT, SPARSE
 * (either header), VMFSSPARSE or ZERO, in files next to it.
 *
 * Files: descriptor.c parses descriptor text; sparse.c reads a hosted
 * sparse extent (header, grain directories, grain tables, compressed
 * grains) and allocates grains; vmdk.c is the driver (open, data path
 * across extents, backing); create.c is blockdev-create.
 *
 * Thread model: open/close/query on the main thread, create on the
 * create job's thread, data callbacks on any thread.  Each sparse
 * extent has one mutex for its grain tables: lookups copy an entry out
 * under it, data I/O on allocated grains runs outside it, allocation
 * (new grain written, then the grain table and its redundant copy) runs
 * under it so that two writers never take the same place.
 */
#ifndef BD_FORMATS_VMDK_H
#define BD_FORMATS_VMDK_H

#include <glib.h>
#include <stdint.h>
#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"

#define VMDK_SECTOR         512
#define VMDK4_MAGIC         "KDMV"
#define VMDK3_MAGIC         "COWD"      /* VMware 3 / vmfsSparse */
#define VMDK_DESC_MAX       (1u << 20)  /* descriptor text bound */
#define VMDK_GD_AT_END      0xffffffffffffffffull

/* Header flags. */
#define VMDK4_FLAG_NL_DETECT  (1u << 0)
#define VMDK4_FLAG_RGD        (1u << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK4_FLAG_COMPRESS   (1u << 16)
#define VMDK4_FLAG_MARKER     (1u << 17)
#define VMDK4_COMPRESS_DEFLATE 1

/* Grain table entries with a meaning other than an offset. */
#define VMDK_GTE_ZEROED     1u

/* Marker types (streamOptimized). */
#define VMDK_MARKER_EOS     0
#define VMDK_MARKER_GT      1
#define VMDK_MARKER_GD      2
#define VMDK_MARKER_FOOTER  3

/* Hosted sparse extent header field offsets (little endian). */
enum {
    VH_MAGIC = 0, VH_VERSION = 4, VH_FLAGS = 8, VH_CAPACITY = 12,
    VH_GRANULARITY = 20, VH_DESC_OFFSET = 28, VH_DESC_SIZE = 36,
    VH_NUM_GTES = 44, VH_RGD_OFFSET = 48, VH_GD_OFFSET = 56,
    VH_GRAIN_OFFSET = 64, VH_FILLER = 72, VH_CHECK_BYTES = 73,
    VH_COMPRESS = 77, VH_SIZE = 79,
};

/* VMware 3 ("COWD") sparse extent header field offsets (little endian,
 * 32-bit): the header of the vmfsSparse subformat's extents. */
enum {
    VH3_VERSION = 4, VH3_FLAGS = 8, VH3_DISK_SECTORS = 12,
    VH3_GRANULARITY = 16, VH3_L1DIR_OFFSET = 20, VH3_L1DIR_SIZE = 24,
    VH3_FILE_SECTORS = 28, VH3_SIZE = 44,
};
#define VMDK3_GT_ENTRIES    4096u       /* fixed, grain table entries */
#define VMDK3_HEADER_BYTES  2048u       /* the whole COWD header */

typedef enum {
    VMDK_EXTENT_FLAT,
    VMDK_EXTENT_SPARSE,
    VMDK_EXTENT_ZERO,
} VmdkExtentType;

/* One extent line of a descriptor. */
typedef struct {
    char *access;              /* RW, RDONLY, NOACCESS */
    uint64_t sectors;
    VmdkExtentType type;
    char *type_name;           /* as written */
    char *filename;            /* NULL for ZERO */
    uint64_t offset;           /* FLAT: sectors into the file */
} VmdkExtentDesc;

typedef struct {
    char *create_type;
    uint32_t cid, parent_cid;
    gboolean has_cid, has_parent_cid;
    char *parent_hint;         /* parentFileNameHint, or NULL */
    GPtrArray *extents;        /* of VmdkExtentDesc */
} VmdkDesc;

typedef struct {
    BdChild *file;
    VmdkExtentType type;
    uint64_t start, length;    /* guest bytes */
    uint64_t flat_offset;      /* FLAT: bytes into the file */
    gboolean read_only;        /* RDONLY access */

    /* SPARSE */
    gboolean cowd;             /* a VMware 3 ("COWD") extent */
    uint32_t version, flags;
    gboolean compressed, markers, zero_grain;
    uint64_t grain_size;       /* bytes */
    uint32_t gt_entries;       /* entries per grain table */
    uint32_t gd_entries;
    uint64_t gd_offset, rgd_offset;    /* bytes; rgd 0: none */
    uint64_t grain_offset;     /* bytes: first grain may start here */
    BdMutex lock;              /* protects everything below */
    uint32_t *gd, *rgd;        /* host order, sectors */
    uint32_t **gt;             /* cached grain tables, per gd entry */
    uint64_t gt_cached;        /* bytes held in gt[] */
    uint64_t next_sector;      /* where the next grain goes */
    gboolean lock_init;
    uint64_t desc_offset, desc_size;   /* embedded descriptor, bytes */
} VmdkExtent;

typedef struct {
    BdNode *node;
    BdChild *file;             /* image or descriptor file */
    VmdkDesc *desc;            /* parsed descriptor (embedded or file) */
    char *desc_text;
    GPtrArray *extents;        /* of VmdkExtent * */
    uint64_t size;
    char *parent_hint;
    gboolean backing_from_header;
    /* Where desc_text lives in 'file' (0 for a descriptor file). */
    uint64_t desc_offset;
    uint64_t desc_capacity;    /* bytes the text may take there */
    /* The CID is renewed on the first write (as QEMU does), so that
     * delta disks made from this image see that it changed. */
    BdMutex cid_lock;
    gboolean cid_updated;      /* atomic */
} VmdkState;

/* Little endian helpers. */
static inline uint32_t vmdk_le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline uint64_t vmdk_le64(const uint8_t *p)
{
    return vmdk_le32(p) | (uint64_t)vmdk_le32(p + 4) << 32;
}
static inline void vmdk_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}
static inline void vmdk_put_le64(uint8_t *p, uint64_t v)
{
    vmdk_put_le32(p, (uint32_t)v);
    vmdk_put_le32(p + 4, (uint32_t)(v >> 32));
}

/* descriptor.c */
VmdkDesc *vmdk_desc_parse(const char *text, const char *node_name,
                          GError **errp);
void vmdk_desc_free(VmdkDesc *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmdkDesc, vmdk_desc_free)

/* sparse.c */
/* Read the header of the sparse extent in e->file and its grain
 * directories; check that they lie in the file.  'desc_text' gets the
 * embedded descriptor (NUL-terminated) when there is one. */
gboolean vmdk_sparse_open(BdNode *node, VmdkExtent *e, gboolean read_only,
                          char **desc_text, GError **errp);
void vmdk_extent_free(VmdkExtent *e);
/* The grain table entry for extent byte 'off' (sectors; 0 not
 * allocated, VMDK_GTE_ZEROED a zero grain), or -errno. */
int64_t vmdk_sparse_lookup(BdNode *node, VmdkExtent *e, uint64_t off);
/* Read 'n' bytes at extent offset 'off' (inside one grain) whose entry
 * is 'gte' (> 1). */
int vmdk_sparse_read_grain(VmdkExtent *e, uint64_t gte, uint64_t off,
                           uint64_t n, uint8_t *buf);
/* Write [off, off+n) (inside one grain) of an unallocated grain:
 * 'fill' gives the grain's other bytes (NULL: zeroes; otherwise a whole
 * grain to take them from).  Writes in place if the grain was
 * allocated meanwhile.  -EIO for an allocated compressed grain. */
int vmdk_sparse_write(BdNode *node, VmdkExtent *e, uint64_t off,
                      uint64_t n, const uint8_t *buf,
                      int (*fill)(void *opaque, uint64_t grain_off,
                                  uint8_t *grain),
                      void *fill_opaque);

#define VMDK_FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)

#endif
