/* SPDX-License-Identifier: MIT */
/* Internal interfaces of the nbdkit plugin: its parameters (config.c)
 * and the nbdkit callbacks (plugin.c).
 *
 * Thread model: the configuration is written by nbdkit's .config and
 * .config_complete on nbdkit's main thread, before any connection, and
 * only read afterwards.
 */
#ifndef BD_NBDKIT_PLUGIN_H
#define BD_NBDKIT_PLUGIN_H

#include <glib.h>

#define BD_PLUGIN_NAME "blockd"

/* nbdkit's .config: one key=value parameter.  0 or -1 (nbdkit_error
 * called). */
int bd_plugin_config(const char *key, const char *value);
/* nbdkit's .config_complete: build and validate the BlockdevOptions the
 * parameters describe.  0 or -1 (nbdkit_error called). */
int bd_plugin_config_complete(void);
/* The validated BlockdevOptions (a{sv}) of the graph to serve; NULL
 * before .config_complete succeeded.  Borrowed. */
GVariant *bd_plugin_options(void);
/* Free what the configuration holds (.unload). */
void bd_plugin_config_free(void);

#define BD_PLUGIN_CONFIG_HELP                                              \
    "[image=]<FILENAME>   The image to serve (format probed: qcow2 or raw;\n" \
    "                     a qcow2's backing files are opened too).\n"     \
    "format=raw|qcow2|... The format driver of 'image' (default: probed).\n" \
    "blockdev=<OPTIONS>   A whole BlockdevOptions graph, as blockd's\n"   \
    "                     --blockdev takes it: JSON ('{\"driver\": ...}')\n" \
    "                     or keyval (driver=qcow2,file.driver=file,...).\n" \
    "object=throttle-group,id=<ID>,limits.<LIMIT>=<N>,...\n"             \
    "                     A throttle group for 'throttle' nodes in\n"  \
    "                     blockdev, as --object defines it (repeatable).\n" \
    "Give image or blockdev.  nbdkit's -r serves read-only."

#endif
