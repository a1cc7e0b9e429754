/* SPDX-License-Identifier: MIT */
/* The QMP 'transaction' command: a table of action kinds, each with
 * QEMU's prepare / commit / abort / clean steps, applied all-or-nothing.
 *
 * Thread model: main thread only.
 *
 *   transaction {actions: [A1, A2, ...], properties: {completion-mode}}
 *     prepare A1, prepare A2, ...      (the first error stops here)
 *     ok:     commit A1, commit A2 ... then clean all
 *     error:  abort ... A2, A1 (the failed one included, newest first)
 *             then clean all; the error of the failed prepare is returned
 *
 * Adding an action kind (e.g. 'blockdev-backup' for the backup job):
 *
 *   static gboolean backup_prepare(BdTxnAction *a, GVariant *data,
 *                                  GError **errp);   // create the job,
 *                                  // stash it in a->opaque
 *   static void backup_commit(BdTxnAction *a);      // start it
 *   static void backup_abort(BdTxnAction *a);       // cancel/unref it
 *   static const BdTxnActionOps backup_action = {
 *       .type = "blockdev-backup",
 *       .data = blockdev_backup_args_fn,   // BlockdevBackup's schema
 *       .supports_grouped = TRUE,
 *       .prepare = backup_prepare, .commit = backup_commit,
 *       .abort = backup_abort,
 *   };
 *   bd_txn_register_action(&backup_action);  // at control init, before
 *                                            // the first transaction
 *
 * With completion-mode 'grouped', a->txn->grouped is TRUE; the jobs of
 * one transaction share a->txn->job_txn, which the first action that
 * needs it creates (setting job_txn_unref to release it when the
 * transaction is cleaned up).  Actions that do not support 'grouped'
 * are refused by the framework with QEMU's message ("Action 'X' does not
 * support Transaction property completion-mode = grouped") when their
 * prepare step is reached.
 */
#ifndef BD_CONTROL_TRANSACTION_H
#define BD_CONTROL_TRANSACTION_H

#include "control/qmp-int.h"

typedef struct BdTransaction {
    gboolean grouped;            /* completion-mode = grouped */
    gpointer job_txn;            /* shared by the grouped jobs, or NULL */
    GDestroyNotify job_txn_unref;
} BdTransaction;

typedef struct BdTxnActionOps BdTxnActionOps;

typedef struct BdTxnAction {
    const BdTxnActionOps *ops;
    BdTransaction *txn;
    gpointer opaque;             /* the action's own state */
} BdTxnAction;

struct BdTxnActionOps {
    const char *type;                       /* TransactionActionKind */
    const BdSchemaType *(*data)(void);      /* the 'data' member's type */
    gboolean supports_grouped;
    /* Validate and do what can be undone; FALSE with *errp set.  abort
     * is still called for a failed prepare (it must cope with a partial
     * state, as in QEMU). */
    gboolean (*prepare)(BdTxnAction *a, GVariant *data, GError **errp);
    void (*commit)(BdTxnAction *a);         /* may be NULL */
    void (*abort)(BdTxnAction *a);          /* may be NULL */
    void (*clean)(BdTxnAction *a);          /* may be NULL: frees opaque */
};

/* Add an action kind (the schema of 'transaction' is built from the
 * registered kinds the first time it is needed). */
void bd_txn_register_action(const BdTxnActionOps *ops);

/* Run a transaction from validated arguments (a{sv} of the transaction
 * command: actions, properties). */
gboolean bd_txn_run(GVariant *args, GError **errp);
/* One action as a command of its own (QEMU's blockdev_do_action for
 * blockdev-backup, drive-backup and the snapshot commands): a
 * transaction of one. */
gboolean bd_txn_run_one(const BdTxnActionOps *ops, GVariant *data,
                        GError **errp);
/* QEMU's qmp_transaction starts with bdrv_drain_all(): every block job
 * pauses and resumes (JOB_STATUS_CHANGE paused/running); the exports
 * are not held back. */
void bd_txn_drain_all(void);

#endif
