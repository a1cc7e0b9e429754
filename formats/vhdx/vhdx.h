/* SPDX-License-Identifier: MIT */
/* The vhdx driver's shared state, on-disk layout (MS-VHDX) and helpers. */
#ifndef BD_FORMATS_VHDX_H
#define BD_FORMATS_VHDX_H

#include "graph/error.h"
#include "graph/io.h"
#include "graph/lock.h"
#include "graph/node.h"

#define KiB_ 1024ull
#define MiB_ (1024ull * 1024)
#define VHDX_HEADER1_OFFSET     (64 * KiB_)
#define VHDX_HEADER2_OFFSET     (128 * KiB_)
#define VHDX_REGION1_OFFSET     (192 * KiB_)
#define VHDX_REGION2_OFFSET     (256 * KiB_)
#define VHDX_HEADER_SIZE        4096u
#define VHDX_REGION_SIZE        (64u * 1024)
#define VHDX_METADATA_TABLE_SIZE (64u * 1024)
#define VHDX_MAX_ENTRIES        2047u
#define VHDX_LOG_SECTOR         4096u
#define VHDX_MIN_BLOCK          (1u * 1024 * 1024)
#define VHDX_MAX_BLOCK          (256u * 1024 * 1024)
#define VHDX_MAX_SIZE           (64ull * 1024 * 1024 * 1024 * 1024)

/* Header fields. */
enum {
    HD_SIG = 0, HD_CSUM = 4, HD_SEQ = 8, HD_FILE_GUID = 16,
    HD_DATA_GUID = 32, HD_LOG_GUID = 48, HD_LOG_VERSION = 64,
    HD_VERSION = 66, HD_LOG_LENGTH = 68, HD_LOG_OFFSET = 72,
};

/* BAT entry states (bits 0-2); the file offset is bits 20-63. */
enum {
    PAYLOAD_NOT_PRESENT = 0, PAYLOAD_UNDEFINED = 1, PAYLOAD_ZERO = 2,
    PAYLOAD_UNMAPPED = 3, PAYLOAD_FULLY_PRESENT = 6,
    PAYLOAD_PARTIALLY_PRESENT = 7,
};
#define BAT_STATE(e)  ((unsigned)((e) & 7))
#define BAT_OFFSET(e) ((e) & ~(uint64_t)(MiB_ - 1))

typedef struct {
    BdNode *node;
    BdChild *file;

    /* Regions and parameters, fixed after open. */
    uint64_t log_offset;
    uint32_t log_length;
    uint64_t bat_offset;
    uint32_t bat_length;
    uint64_t meta_offset;
    uint32_t meta_length;
    uint32_t block_size;
    uint32_t block_bits;
    uint32_t logical_sector;
    uint32_t physical_sector;
    uint64_t size;
    uint64_t chunk_ratio;
    uint64_t data_blocks;
    uint64_t bat_entries;
    gboolean leave_allocated;
    gboolean has_parent;       /* differencing: parent_path names it */
    char *parent_path;         /* '/'-separated, from the locator */
    uint8_t page83[16];
    /* BAT entries in host order, read with atomic loads. */
    uint64_t *bat;

    BdMutex lock;              /* protects the members below */
    uint8_t header[VHDX_HEADER_SIZE];   /* the current header, as on disk */
    int cur_slot;              /* 0: at 64 KiB, 1: at 128 KiB */
    uint64_t file_end;         /* where the next payload block goes */
    uint64_t log_seq;          /* next log entry's sequence number */
    gboolean user_visible_written;  /* new write GUIDs on disk */
} VhdxState;

#define FAIL(...) do { \
        g_set_error(errp, BD_ERROR, BD_ERROR_GENERIC, __VA_ARGS__); \
        return FALSE; \
    } while (0)
#define NODE_FAIL(fmt, ...) FAIL("Node '%s': vhdx: " fmt, \
                                 s->node->node_name, ##__VA_ARGS__)

static inline uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t get_le32(const uint8_t *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static inline uint64_t get_le64(const uint8_t *p)
{
    return get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static inline void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline gboolean guid_is_zero(const uint8_t *g)
{
    for (int i = 0; i < 16; i++) {
        if (g[i]) {
            return FALSE;
        }
    }
    return TRUE;
}

/* BAT index of payload block 'b': a sector bitmap entry follows each
 * chunk_ratio payload entries (that of chunk c at index
 * c * (chunk_ratio + 1) + chunk_ratio). */
static inline uint64_t bat_index(const VhdxState *s, uint64_t b)
{
    return b + b / s->chunk_ratio;
}

static inline uint64_t bat_get(VhdxState *s, uint64_t b)
{
    return __atomic_load_n(&s->bat[bat_index(s, b)], __ATOMIC_ACQUIRE);
}

static inline uint64_t bitmap_get(VhdxState *s, uint64_t chunk)
{
    return __atomic_load_n(&s->bat[chunk * (s->chunk_ratio + 1) +
                                   s->chunk_ratio], __ATOMIC_ACQUIRE);
}

/* crc32c.c: CRC-32C (Castagnoli) of 'len' bytes, the VHDX checksum. */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);
/* The checksum of 'len' bytes with the 4-byte field at 'csum_off'
 * taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off);

/* header.c: file identifier, headers, region table, metadata and BAT
 * (main thread, at open). */
gboolean vhdx_load_headers(VhdxState *s, int64_t file_len, GError **errp);
gboolean vhdx_load_regions(VhdxState *s, int64_t file_len, GError **errp);
gboolean vhdx_load_metadata(VhdxState *s, GError **errp);
gboolean vhdx_load_bat(VhdxState *s, int64_t file_len, GError **errp);
/* Both header copies rewritten with the sequence number advanced and
 * 'log_guid', new write GUIDs with 'new_guids' (lock held). */
int vhdx_update_headers_locked(VhdxState *s, gboolean new_guids,
                               const uint8_t *log_guid);

/* log.c: replay at open; one 4 KiB sector of metadata written through
 * the log (lock held). */
gboolean vhdx_replay_log(VhdxState *s, int64_t file_len, GError **errp);
int vhdx_log_write_sector_locked(VhdxState *s, uint64_t file_offset,
                                 const uint8_t *sector);

/* rw.c: the data path (any thread). */
int vhdx_pread(BdNode *node, uint64_t offset, uint64_t bytes, void *buf,
               int flags);
int vhdx_pwrite(BdNode *node, uint64_t offset, uint64_t bytes,
                const void *buf, int flags);
int vhdx_pwrite_zeroes(BdNode *node, uint64_t offset, uint64_t bytes,
                       int flags);
int vhdx_flush(BdNode *node);
int vhdx_block_status(BdNode *node, uint64_t offset, uint64_t bytes,
                      uint64_t *pnum, uint64_t *map, BdNode **file);

/* create.c: blockdev-create (BlockdevCreateOptionsVhdx), job thread. */
extern const BdSchemaField vhdx_create_options[];
gboolean vhdx_create(GVariant *options, GError **errp);

#endif
