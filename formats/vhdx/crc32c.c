/* SPDX-License-Identifier: MIT */
/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of every VHDX header, region table and log entry.  No library on the
 * system provides it (zlib's crc32 is the other polynomial), so a
 * small table-driven one lives here. */
#include <glib.h>
#include <stdint.h>
#include "formats/vhdx/vhdx.h"

static uint32_t table[256];

static gpointer make_table(gpointer unused)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        table[i] = c;
    }
    return NULL;
}

/* 'crc' is the running value (0 to start); returns the finished CRC. */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
    static GOnce once = G_ONCE_INIT;
    const uint8_t *p = buf;

    g_once(&once, make_table, NULL);
    crc = ~crc;
    while (len--) {
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
    static const uint8_t zero[4];
    uint32_t crc = vhdx_crc32c(0, buf, csum_off);

    crc = vhdx_crc32c(crc, zero, 4);
    return vhdx_crc32c(crc, buf + csum_off + 4, len - csum_off - 4);
}
