/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the command-line option syntax.  The first byte
 * picks the option (--blockdev, --export, --object, --nbd-server, or
 * bare keyval); the rest is the argument, parsed as keyval or JSON as
 * qemu-storage-daemon's options are, and validated along the option's
 * schema with keyval typing.  Nothing is applied.  The scalar parsers
 * (sizes, integers, booleans) get the raw text too. */
#include <string.h>

#include "control/control.h"
#include "control/input.h"
#include "export/export.h"
#include "formats/registry.h"
#include "tests/fuzz/fuzz-common.h"

typedef struct {
    const char *implied_key;
    const BdSchemaType *(*schema)(void);
} OptionKind;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const OptionKind kinds[] = {
        { "driver", bd_blockdev_options_schema },
        { "type", bd_export_options_schema },
        { "qom-type", bd_cmd_object_options_schema },
        { NULL, bd_cmd_nbd_server_options_schema },
        { NULL, NULL },
    };
    const OptionKind *kind;
    g_autofree char *arg = NULL;
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) json = NULL;
    g_autoptr(GVariant) value = NULL;
    gboolean keyval = FALSE;
    guint64 u;
    gint64 i;
    gboolean b;

    if (size < 1) {
        return 0;
    }
    bd_fuzz_init();
    kind = &kinds[data[0] % G_N_ELEMENTS(kinds)];
    arg = g_strndup((const char *)data + 1, size - 1);

    bd_parse_size(arg, &u);
    bd_parse_uint64(arg, &u);
    bd_parse_int64(arg, &i);
    bd_parse_bool(arg, &b);
    if (!kind->schema) {
        json = bd_keyval_parse(arg, NULL, &err);
        return 0;
    }
    json = bd_option_parse(arg, kind->implied_key, &keyval, &err);
    if (json) {
        value = bd_validate(kind->schema(), json, keyval, &err);
    }
    return 0;
}
