/* internal.h — what the labeler's files share: the store's LMDB handles
 * and key layouts. Not installed; the public API is labeler.h. */
#ifndef GL_LABELER_INTERNAL_H
#define GL_LABELER_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>

#include "labeler/labeler.h"

struct label_store {
    MDB_env *env;
    MDB_dbi meta, contractors, keys, tasks, open_demo, open_rank, subs, idem, counts, touched, cursors, state,
        idem_age;
    char *dir;
    label_store_opts_t opts;
    /* Readers outside the writer (the ZAP thread) hold it shared around
     * their read transactions; growing the map takes it exclusively, as
     * LMDB requires no live transaction in the process while it resizes. */
    pthread_rwlock_t resize_lock;
    unsigned growths;
    uint64_t pruned; /* replies pruned by this handle (committed) */
};

static inline void label_be64(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static inline uint64_t label_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Begins a read-only transaction (handles MDB_MAP_RESIZED). */
int label_store_read_txn(label_store_t *s, MDB_txn **txn, gl_err_t *err);
/* Task id -> unpacked task (caller frees with
 * gptline__label__task__free_unpacked). GL_ENOTFOUND if absent. */
int label_store_get_task(label_store_t *s, MDB_txn *txn, uint64_t id, Gptline__Label__Task **out,
                         gl_err_t *err);

#endif
