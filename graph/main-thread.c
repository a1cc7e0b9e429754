/* SPDX-License-Identifier: MIT */
/* The main thread's identity, recorded before main() (see
 * main-thread.h). */
#define G_LOG_DOMAIN "blockd-graph"

#include <pthread.h>
#include "graph/main-thread.h"

static pthread_t main_thread;

/* Constructors run on the initial thread, before main() and before any
 * thread is created (dynamic libraries' constructors create none). */
__attribute__((constructor)) static void record_main_thread(void)
{
    main_thread = pthread_self();
}

void bd_main_thread_claim(void)
{
    main_thread = pthread_self();
}

gboolean bd_in_main_thread(void)
{
    return pthread_equal(pthread_self(), main_thread);
}

void bd_main_thread_violation(const char *loc, const char *func)
{
    char name[16] = "?";

    pthread_getname_np(pthread_self(), name, sizeof(name));
    g_error("%s: %s() must run on the main thread, called on thread '%s'",
            loc, func, name);
}
