/* SPDX-License-Identifier: MIT */
/* What every libFuzzer target of tests/fuzz/ shares: the daemon's
 * registries set up once, quiet logging with criticals made fatal (a
 * g_critical is a bug the fuzzer must report), and QMP requests run
 * in-process for the targets' fixtures.
 *
 * Thread model: the fuzzer's thread is the graph's main thread.
 */
#ifndef BD_TESTS_FUZZ_COMMON_H
#define BD_TESTS_FUZZ_COMMON_H

#include <json-glib/json-glib.h>
#include <stddef.h>
#include <stdint.h>

/* Register drivers, objects, exports and commands (once). */
void bd_fuzz_init(void);

/* Run one QMP request (JSON text, printf format) on a negotiated
 * session; returns the reply ({"return"} or {"error"}). */
JsonNode *bd_fuzz_qmp(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* The same, for fixtures: aborts with the reply when it is an error. */
void bd_fuzz_qmp_ok(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* A fresh private directory for the process's sockets and files. */
const char *bd_fuzz_tmpdir(void);

/* Run pending main-loop work (idle sources the graph posted). */
void bd_fuzz_iterate(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
