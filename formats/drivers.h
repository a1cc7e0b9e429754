/* SPDX-License-Identifier: MIT */
/* The driver tables defined in formats/ (internal to the registry). */
#ifndef BD_FORMATS_DRIVERS_H
#define BD_FORMATS_DRIVERS_H

#include "graph/node.h"

extern const BdDriver bd_file_driver;
extern const BdDriver bd_host_device_driver;
extern const BdDriver bd_raw_driver;
extern const BdDriver bd_null_co_driver;
extern const BdDriver bd_null_aio_driver;
extern const BdDriver bd_qcow2_driver;
extern const BdDriver bd_vdi_driver;
extern const BdDriver bd_parallels_driver;
extern const BdDriver bd_vhdx_driver;
extern const BdDriver bd_vpc_driver;
extern const BdDriver bd_bochs_driver;
extern const BdDriver bd_cloop_driver;
extern const BdDriver bd_dmg_driver;
extern const BdDriver bd_qed_driver;
extern const BdDriver bd_vmdk_driver;
extern const BdDriver bd_luks_driver;
extern const BdDriver bd_compress_driver;
extern const BdDriver bd_blkdebug_driver;
extern const BdDriver bd_blkverify_driver;
extern const BdDriver bd_quorum_driver;
extern const BdDriver bd_throttle_driver;
extern const BdDriver bd_copy_on_read_driver;
extern const BdDriver bd_cbw_driver;
extern const BdDriver bd_snapshot_access_driver;
extern const BdDriver bd_nbd_driver;
#ifdef BD_HAVE_RBD
extern const BdDriver bd_rbd_driver;
#endif

#endif
