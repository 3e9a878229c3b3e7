/* internal.h — private declarations shared by the shard library's files. */
#ifndef GL_SHARDS_INTERNAL_H
#define GL_SHARDS_INTERNAL_H

#include <lmdb.h>

#include "shards/shards.h"

#define SHARD_DB_META "meta"
#define SHARD_DB_TOKENS "tokens"
#define SHARD_DB_DOCS "docs"
#define SHARD_KEY_MAGIC "magic"
#define SHARD_KEY_MANIFEST "manifest"
#define SHARD_KEY_OFFSETS "offsets"
#define SHARD_MAGIC_LEN 12 /* 8 bytes of magic + u32 version */

/* Formats an LMDB error for path into err. */
int shard_mdb_err(gl_err_t *err, int rc, const char *path, const char *what);



/* Hot-path accessors for dataset.c (reader.c): validated at open. */
const uint8_t *const *shard_doc_ptrs(const shard_reader_t *r);
const uint64_t *shard_offsets(const shard_reader_t *r);
#endif
