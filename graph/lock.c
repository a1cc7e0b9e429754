/* SPDX-License-Identifier: MIT */
/* The per-thread tag that identifies a lock's owner (see lock.h). */
#include "graph/lock.h"

_Thread_local char bd_thread_tag;
