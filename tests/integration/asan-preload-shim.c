/* SPDX-License-Identifier: MIT */
/* Preloaded next to libasan when nbdkit (not instrumented) loads an ASan
 * build of blockd's nbdkit plugin (test_nbdkit_plugin.py).
 *
 * A preloaded libasan initialises on the first malloc, which happens in
 * libp11-kit's constructor (nbdkit links GnuTLS) inside newlocale(),
 * with glibc's locale lock held.  ASan's start-up looks up the optional
 * symbol swift_demangle and, not finding it, calls dlerror(), which
 * translates the message through gettext and takes the same lock: the
 * lock is left in a state where p11-kit's destructor deadlocks in
 * freelocale() at exit once anything has called gettext (strerror, a
 * json-glib parse error).  Defining the symbol skips that dlerror().
 * ASan calls it only to demangle Swift names; NULL means "not one".
 */
#include <stddef.h>

char *swift_demangle(const char *mangled, size_t len, char *out,
                     size_t *out_len, unsigned flags);

char *swift_demangle(const char *mangled, size_t len, char *out,
                     size_t *out_len, unsigned flags)
{
    return NULL;
}
