/* SPDX-License-Identifier: MIT */
/* The dmg driver's chunk table, shared by the parser (parse.c) and the
 * data path (dmg.c). */
#ifndef BD_FORMATS_DMG_H
#define BD_FORMATS_DMG_H

#include <glib.h>
#include <stdint.h>
#include "graph/node.h"

#define DMG_SECTOR          512u
/* QEMU's limits on one chunk: what must fit in memory when it is
 * decompressed (64 MiB of output, 64 MiB of input). */
#define DMG_LENGTHS_MAX     (64u * 1024 * 1024)
#define DMG_SECTORCOUNTS_MAX (DMG_LENGTHS_MAX / DMG_SECTOR)

/* Chunk types of a mish block (UDIF's BLKXChunkEntry.EntryType). */
enum {
    DMG_ZERO      = 0x00000000u,  /* UDZE: zeroes */
    DMG_RAW       = 0x00000001u,  /* UDRW: the bytes as they are */
    DMG_IGNORE    = 0x00000002u,  /* UDIG: free space, reads as zeroes */
    DMG_ADC       = 0x80000004u,  /* UDCO: unsupported, as in QEMU */
    DMG_ZLIB      = 0x80000005u,  /* UDZO */
    DMG_BZIP2     = 0x80000006u,  /* UDBZ */
    DMG_LZFSE     = 0x80000007u,  /* ULFO */
    DMG_COMMENT   = 0x7ffffffeu,  /* UDCM: skipped */
    DMG_LAST      = 0xffffffffu,  /* UDLE: terminator, skipped */
};

/* One run of guest sectors and where its bytes come from. */
typedef struct {
    uint64_t sector;    /* first guest sector */
    uint64_t count;     /* sectors (> 0) */
    uint64_t offset;    /* data in the file (not for zero chunks) */
    uint64_t length;    /* bytes of data in the file */
    uint32_t type;      /* DMG_* */
    uint32_t index;     /* QEMU's chunk number, for messages */
} DmgChunk;

typedef struct {
    DmgChunk *chunks;   /* sorted by sector, no overlaps */
    uint32_t n_chunks;
    uint64_t total_sectors;   /* the trailer's SectorCount */
} DmgTable;

/* Whether a chunk of this type reads as zeroes without any data. */
static inline gboolean dmg_type_is_zero(uint32_t type)
{
    return type == DMG_ZERO || type == DMG_IGNORE;
}

/* A short name of a chunk type for messages ("zlib", "raw", ...). */
const char *dmg_type_name(uint32_t type);

/* Find the UDIF trailer of 'file', read the block tables it points to
 * (resource fork or XML property list) and fill 'table'.  Main thread,
 * at open.  Errors name the node and the problem. */
gboolean dmg_table_load(BdNode *node, BdChild *file, DmgTable *table,
                        GError **errp);
void dmg_table_clear(DmgTable *table);

#endif
