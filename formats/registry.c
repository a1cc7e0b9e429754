/* SPDX-License-Identifier: MIT */
/* The explicit table of block drivers blockd offers, registered at start-up. */
#define G_LOG_DOMAIN "blockd-formats"

#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <unistd.h>
#include "graph/node.h"
#include "graph/main-thread.h"
#include "formats/drivers.h"
#include "formats/registry.h"

/* Order is the order of registration (and of the BlockdevDriver enum
 * in the schema): protocols first, then formats. */
static const BdDriver *const bd_formats_table[] = {
    &bd_file_driver,
    &bd_host_device_driver,
    &bd_null_aio_driver,
    &bd_null_co_driver,
    &bd_nbd_driver,
#ifdef BD_HAVE_RBD
    &bd_rbd_driver,
#endif
    &bd_raw_driver,
    &bd_qcow2_driver,
    &bd_vdi_driver,
    &bd_parallels_driver,
    &bd_vhdx_driver,
    &bd_vpc_driver,
    &bd_bochs_driver,
    &bd_cloop_driver,
    &bd_qed_driver,
    &bd_vmdk_driver,
    &bd_dmg_driver,
    &bd_luks_driver,
    &bd_compress_driver,
    &bd_blkdebug_driver,
    &bd_blkverify_driver,
    &bd_quorum_driver,
    &bd_throttle_driver,
    &bd_cbw_driver,
    &bd_copy_on_read_driver,
    &bd_snapshot_access_driver,
};

void bd_formats_register_all(void)
{
    BD_GLOBAL_STATE_CODE();

    static gsize done;

    /* Idempotent: the daemon and every test may call it. */
    if (g_once_init_enter(&done)) {
        for (gsize i = 0; i < G_N_ELEMENTS(bd_formats_table); i++) {
            bd_driver_register(bd_formats_table[i]);
        }
        g_once_init_leave(&done, 1);
    }
}

/* A vmdk descriptor file as QEMU's probe sees one: comment lines and
 * blank lines, then "version=1", 2 or 3 on a line of its own. */
static gboolean vmdk_probe_descriptor(const uint8_t *buf, size_t len)
{
    const char *p = (const char *)buf;
    const char *end = p + len;

    while (p < end) {
        if (*p == '#') {
            while (p < end && *p != '\n') {
                p++;
            }
            p++;
            continue;
        }
        if (*p == ' ') {
            while (p < end && *p == ' ') {
                p++;
            }
            if (p < end && *p == '\r') {
                p++;
            }
            if (p == end || *p != '\n') {
                return FALSE;
            }
            p++;
            continue;
        }
        for (char v = '1'; v <= '3'; v++) {
            char lf[] = "version=X\n", crlf[] = "version=X\r\n";

            lf[8] = crlf[8] = v;
            if ((size_t)(end - p) >= strlen(lf) &&
                strncmp(p, lf, strlen(lf)) == 0) {
                return TRUE;
            }
            if ((size_t)(end - p) >= strlen(crlf) &&
                strncmp(p, crlf, strlen(crlf)) == 0) {
                return TRUE;
            }
        }
        return FALSE;
    }
    return FALSE;
}

/* Bochs: the magic, type and subtype strings (each with its NUL, as
 * QEMU's strcmp) and version 2.0 or 1.0.  QEMU asks for a whole
 * sector, but probes a file shorter than that zero-padded: the fields
 * it compares are what counts. */
static gboolean bochs_probe(const uint8_t *buf, size_t len)
{
    uint32_t version;

    if (len < 68) {
        return FALSE;
    }
    version = buf[64] | (uint32_t)buf[65] << 8 | (uint32_t)buf[66] << 16 |
              (uint32_t)buf[67] << 24;
    return memcmp(buf, "Bochs Virtual HD Image", 23) == 0 &&
           memcmp(buf + 32, "Redolog", 8) == 0 &&
           memcmp(buf + 48, "Growing", 8) == 0 &&
           (version == 0x00020000 || version == 0x00010000);
}

/* cloop V2.0: the first three lines of its shell-script preamble. */
#define CLOOP_MAGIC "#!/bin/sh\n#V2.0 Format\n" \
    "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"

/* QEMU's probes, by the first sector: qcow2's magic, vdi's signature at
 * 0x40 (a whole header needed), a dynamic VHD's footer copy, qed's
 * magic (a whole header needed), LUKS's magic, vhdx's file identifier,
 * parallels' magic with version 2, vmdk's "KDMV" or "COWD" or a
 * descriptor's text, bochs's header strings, cloop's preamble.  A
 * fixed VHD has its footer only at the end: QEMU probes it as raw, and
 * so do we.
 * Anything else is raw. */
const char *bd_formats_probe_buf(const uint8_t *buf, size_t len)
{
    if (len >= 4 && memcmp(buf, "QFI\xfb", 4) == 0) {
        return "qcow2";
    }
    if (len >= 512 && memcmp(buf + 0x40, "\x7f\x10\xda\xbe", 4) == 0) {
        return "vdi";
    }
    if (len >= 8 && memcmp(buf, "vhdxfile", 8) == 0) {
        return "vhdx";
    }
    if (len >= 8 && memcmp(buf, "conectix", 8) == 0) {
        return "vpc";
    }
    /* QEMU wants the whole 64-byte header. */
    if (len >= 64 && memcmp(buf, "QED\0", 4) == 0) {
        return "qed";
    }
    if (len >= 6 && memcmp(buf, "LUKS\xba\xbe", 6) == 0) {
        return "luks";
    }
    /* QEMU wants the whole 64-byte header, and version 2. */
    if (len >= 64 && (memcmp(buf, "WithoutFreeSpace", 16) == 0 ||
                      memcmp(buf, "WithouFreSpacExt", 16) == 0) &&
        buf[16] == 2 && buf[17] == 0 && buf[18] == 0 && buf[19] == 0) {
        return "parallels";
    }
    if ((len >= 4 && (memcmp(buf, "KDMV", 4) == 0 ||
                      memcmp(buf, "COWD", 4) == 0)) ||
        vmdk_probe_descriptor(buf, len)) {
        return "vmdk";
    }
    if (bochs_probe(buf, len)) {
        return "bochs";
    }
    if (len >= strlen(CLOOP_MAGIC) &&
        memcmp(buf, CLOOP_MAGIC, strlen(CLOOP_MAGIC)) == 0) {
        return "cloop";
    }
    return "raw";
}

/* The magic of every format QEMU probes, whether or not blockd opens
 * it: a raw image showing one would open as that format next time. */
static const struct {
    size_t offset;
    const char *magic;
    size_t len;
} qemu_magics[] = {
#define M(off, s) { off, s, sizeof(s) - 1 }
    M(0, "QFI\xfb"),                        /* qcow, qcow2 */
    M(0, "QED\0"),                          /* qed */
    M(0, "KDMV"), M(0, "COWD"),             /* vmdk */
    M(0, "# Disk DescriptorFile"),          /* vmdk descriptor */
    M(0, "vhdxfile"),                       /* vhdx */
    M(0, "conectix"),                       /* vpc */
    M(0x40, "\x7f\x10\xda\xbe"),            /* vdi */
    M(0, "LUKS\xba\xbe"),                   /* luks */
    M(0, "WithoutFreeSpace"), M(0, "WithouFreSpacExt"),  /* parallels */
    M(0, "Bochs Virtual HD Image"),         /* bochs */
    M(0, "#!/bin/sh\n#V2.0 Format\n"),      /* cloop */
#undef M
};

gboolean bd_formats_buf_has_image_magic(const uint8_t *buf, size_t len)
{
    for (gsize i = 0; i < G_N_ELEMENTS(qemu_magics); i++) {
        if (len >= qemu_magics[i].offset + qemu_magics[i].len &&
            memcmp(buf + qemu_magics[i].offset, qemu_magics[i].magic,
                   qemu_magics[i].len) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

/* QEMU's dmg probe goes by the name alone (".dmg", with something
 * before it) and scores below every magic: a file named *.dmg that
 * shows another format's magic is that format; raw never becomes dmg
 * otherwise. */
static gboolean dmg_probe_name(const char *filename)
{
    size_t len = strlen(filename);

    return len > 4 && strcmp(filename + len - 4, ".dmg") == 0;
}

const char *bd_formats_probe_file(const char *filename)
{
    uint8_t buf[512] = { 0 };
    ssize_t n = 0;
    int fd = open(filename, O_RDONLY | O_CLOEXEC);
    const char *fmt;

    if (fd >= 0) {
        n = pread(fd, buf, sizeof(buf), 0);
        close(fd);
    }
    fmt = bd_formats_probe_buf(buf, n > 0 ? (size_t)n : 0);
    if (strcmp(fmt, "raw") == 0 && dmg_probe_name(filename)) {
        return "dmg";
    }
    return fmt;
}
