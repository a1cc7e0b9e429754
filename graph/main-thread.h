/* SPDX-License-Identifier: MIT */
/* Which thread is the main thread, and an assertion for the functions
 * that may run only there (QEMU's GLOBAL_STATE_CODE()).
 *
 * The main thread is the process's initial thread: the one that runs
 * main() and the GLib main loop in the daemon, and GTest's test
 * functions in the unit tests.  It is recorded by a constructor, before
 * main() and before any other thread exists, so the first graph call
 * of a unit test needs no set-up.  --daemonize forks from the main
 * thread before any thread exists; the child's initial thread keeps its
 * pthread_t, so the record stays right.
 *
 * A library host may not give the graph to its initial thread: the
 * nbdkit plugin (nbdkit-plugin/) opens and closes the graph from
 * nbdkit's callbacks and claims the thread they run on with
 * bd_main_thread_claim().
 *
 * Thread model: any thread.  The record is written before any other
 * thread uses the graph (by the constructor, or by a claim made while
 * no other thread calls into the graph), and only read afterwards.
 */
#ifndef BD_GRAPH_MAIN_THREAD_H
#define BD_GRAPH_MAIN_THREAD_H

#include <glib.h>

/* Whether the calling thread is the main thread. */
gboolean bd_in_main_thread(void);

/* Make the calling thread the main thread: for hosts that load the
 * graph as a library (a plugin) and run its control calls on a thread
 * of their choosing.  Call it before the first graph call and while no
 * other thread uses the graph; the graph's data path may run on any
 * thread afterwards. */
void bd_main_thread_claim(void);

/* Reports a call of a main-thread-only function from another thread
 * and aborts. */
G_NORETURN void bd_main_thread_violation(const char *loc, const char *func);

/* At the top of every function documented "main thread only": the
 * graph's shape, job transitions, the control channel.  Compiled out,
 * as g_assert, with G_DISABLE_ASSERT. */
#ifdef G_DISABLE_ASSERT
#define BD_GLOBAL_STATE_CODE() do { } while (0)
#else
#define BD_GLOBAL_STATE_CODE()                                          \
    do {                                                                \
        if (G_UNLIKELY(!bd_in_main_thread())) {                         \
            bd_main_thread_violation(G_STRLOC, G_STRFUNC);              \
        }                                                               \
    } while (0)
#endif

#endif
