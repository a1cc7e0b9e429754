/* SPDX-License-Identifier: MIT */
/* The table of block drivers blockd offers. */
#ifndef BD_FORMATS_REGISTRY_H
#define BD_FORMATS_REGISTRY_H

/* Register every driver of formats/ with the graph (once, at start-up). */
void bd_formats_register_all(void);

#endif
