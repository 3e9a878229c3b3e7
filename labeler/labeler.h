/* labeler.h — the labeling service: store, server, client and export.
 *
 * Contractors write demonstrations (prompt -> ideal response) and rank K
 * candidate responses; the service hands out tasks under leases, stores
 * every label durably in one LMDB environment and exports them to SFT and
 * RM shards (and JSONL). Clients talk to the server over ZeroMQ with CURVE
 * encryption; the server admits only registered public keys. The wire
 * protocol and the stored records are protobuf messages in
 * proto/label.proto. See docs/labeler.md.
 *
 * Errors: functions return 0 (GL_OK) or a gl_code_t and fill *err with a
 * message naming the file, contractor or task at fault; they never print or
 * exit.
 */
#ifndef GL_LABELER_H
#define GL_LABELER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "label.pb-c.h"

#define LABEL_PROTOCOL_VERSION 1u
#define LABEL_STORE_MAGIC "GLLABEL"   /* 7 chars + NUL, then u32 version */
#define LABEL_STORE_VERSION 2u      /* 2: idem_age, the stored replies by age */

/* Limits on every request (the server sets ZMQ_MAXMSGSIZE to the first). */
#define LABEL_MAX_MESSAGE (256u * 1024u)
#define LABEL_MAX_PROMPT (32u * 1024u)
#define LABEL_MAX_RESPONSE (64u * 1024u)
#define LABEL_MAX_REASON 1024u
#define LABEL_MAX_CLIENT_NAME 128u
#define LABEL_MIN_CANDIDATES 2u
#define LABEL_MAX_CANDIDATES 9u
#define LABEL_MAX_LEASE_COUNT 64u
#define LABEL_MAX_ID 64u              /* contractor id: [A-Za-z0-9_.-]{1,64} */

/* Stored replies (what answers a retried request) are kept this long. */
#define LABEL_REPLY_RETENTION_DEFAULT (7u * 24 * 3600)
#define LABEL_PRUNE_BATCH_DEFAULT 256u

/* ---- wire ------------------------------------------------------------- */

/* Decodes and validates one request frame: protobuf well-formed, version,
 * a body present, every string within its limit and valid UTF-8. On
 * success *out is the request (caller frees with
 * gptline__label__request__free_unpacked(*out, NULL)). On failure returns
 * GL_EPARSE (status BAD_REQUEST) or GL_EVERSION (status BAD_VERSION), sets
 * *request_id to what could be read (0 otherwise) and *out to NULL. */
int label_wire_decode(const void *data, size_t len, Gptline__Label__Request **out,
                      uint64_t *request_id, gl_err_t *err);

/* Checks a ranking of k candidates: rank has k entries forming a dense
 * ranking with ties (values 0..m-1, each used); flags empty or k entries of
 * known Flag bits; rating 1..7. Returns GL_OK or GL_EINVAL with the reason. */
int label_check_ranking(size_t k, const uint32_t *rank, size_t nrank, const uint32_t *flags,
                        size_t nflags, uint32_t rating, gl_err_t *err);

/* 1 if s is valid UTF-8 of at most max bytes without NUL. */
int label_text_ok(const char *s, size_t max);
/* 1 if id is a valid contractor id. */
int label_id_ok(const char *id);

/* Packs a reply into a malloc'd buffer (caller frees); sets *len. */
uint8_t *label_reply_pack(const Gptline__Label__Reply *rep, size_t *len);
/* An error reply for request_id, packed (caller frees). */
uint8_t *label_error_pack(uint64_t request_id, Gptline__Label__Status st, const char *msg,
                          size_t *len);
/* Static name of a status, e.g. "rejected". */
const char *label_status_name(Gptline__Label__Status st);

/* ---- keys ------------------------------------------------------------- */

/* A CURVE key pair in Z85 (40 characters + NUL each). */
typedef struct {
    char public_z85[41];
    char secret_z85[41];
} label_keypair_t;

/* Makes a fresh key pair (libsodium through libzmq). */
int label_keygen(label_keypair_t *kp, gl_err_t *err);
/* Writes NAME.key (both keys, mode 0600) and NAME.pub (public key), each
 * atomically. */
int label_key_write(const char *name, const label_keypair_t *kp, gl_err_t *err);
/* Reads a .key file (both keys) or a .pub file (public only: secret_z85
 * left empty). Validates the Z85. */
int label_key_read(const char *path, label_keypair_t *kp, gl_err_t *err);

/* ---- store ------------------------------------------------------------ */

typedef struct label_store label_store_t;

typedef struct {
    uint32_t lease_seconds;            /* default 1800 */
    uint32_t prompt_overlap;           /* overlap of contractor-written prompts; default 1 */
    const char *demo_guidelines;       /* borrowed; NULL: built-in text */
    const char *rank_guidelines;
    size_t map_size;                   /* initial LMDB map size; default 256 MiB; grows */
    uint32_t reply_retention_seconds;  /* how long a stored reply answers a retry of
                                          its request; default 7 days */
    uint32_t prune_batch;              /* most expired replies deleted in one write
                                          transaction; default 256 */
} label_store_opts_t;

/* Opens (creating) the service's LMDB environment in folder dir. Checks
 * the magic and version; a version 1 store is upgraded in place (its
 * stored replies are indexed by age, dated now). Caller owns the store; close it with
 * label_store_close(). opts may be NULL (defaults); its strings must
 * outlive the store. */
label_store_t *label_store_open(const char *dir, const label_store_opts_t *opts, gl_err_t *err);
/* NULL-safe; nulls *s. */
void label_store_close(label_store_t **s);

/* Registers contractor id with a Z85 public key and role (CONTRACTOR or
 * ADMIN). GL_EEXIST if the id or key is already registered (a revoked id
 * is re-activated with the new key). */
int label_store_add_contractor(label_store_t *s, const char *id, const char *public_z85,
                               Gptline__Label__Role role, gl_err_t *err);
/* Revokes id: its key is refused at the next handshake and its open
 * connections get STATUS_REVOKED. GL_ENOTFOUND if unknown. */
int label_store_revoke(label_store_t *s, const char *id, gl_err_t *err);
/* The registry as JSON lines, one a contractor in id order:
 * {"id","role","revoked","public_key","created_unix_ms"}. Caller owns *text
 * (free()). */
int label_store_list_contractors(label_store_t *s, char **text, gl_err_t *err);
/* Looks up a 32-byte CURVE public key. On success copies the contractor id
 * into id (cap >= LABEL_MAX_ID + 1) and sets *role (may be NULL).
 * GL_ENOTFOUND if unknown, GL_EINVAL if revoked. Safe to call from any
 * thread while the server runs. */
int label_store_lookup_key(label_store_t *s, const uint8_t key[32], char *id, size_t cap,
                           Gptline__Label__Role *role, gl_err_t *err);

/* Imports JSONL prompts ({"prompt": "...", "id": "...", "overlap": N}) as
 * demonstration tasks. Lines that fail validation are counted in *bad and
 * named in *err's message only if nothing could be imported. */
int label_store_import_prompts(label_store_t *s, const char *path, uint32_t overlap,
                               uint64_t *added, uint64_t *bad, gl_err_t *err);
/* Imports JSONL ranking tasks: {"prompt": "...", "candidates": ["..", ..]
 * or [{"text": "..", "author": "id"}, ..], "overlap": N} with 2..9
 * candidates. */
int label_store_import_candidates(label_store_t *s, const char *path, uint32_t overlap,
                                  uint64_t *added, uint64_t *bad, gl_err_t *err);

/* One request of a batch handed to label_store_apply(). */
typedef struct {
    const char *contractor;            /* authenticated id (borrowed) */
    const uint8_t *data;               /* request frame (borrowed) */
    size_t len;
    uint8_t *reply;                    /* out: packed reply, caller frees */
    size_t reply_len;
} label_work_t;

/* Applies a batch of requests in one write transaction, committed and
 * synced before returning (group commit): only then may the replies be
 * sent. Retried requests (same contractor and request id) get their stored
 * reply, while it is younger than the retention; the same transaction
 * deletes up to prune_batch replies older than that. Grows the map when it
 * fills. now_ms is the wall clock in ms. */
int label_store_apply(label_store_t *s, label_work_t *work, size_t n, int64_t now_ms,
                      gl_err_t *err);

/* Deletes, in one write transaction, up to prune_batch stored replies older
 * than the retention at now_ms, oldest first; *pruned gets how many (fewer
 * than prune_batch: none older is left). Nothing to delete commits
 * nothing. */
int label_store_prune_replies(label_store_t *s, int64_t now_ms, size_t *pruned, gl_err_t *err);

/* Consistent hot copy of the environment into folder dir (created; must
 * not hold a data.mdb), compacted. Safe while the server runs. */
int label_store_backup(label_store_t *s, const char *dir, gl_err_t *err);

/* Statistics as a JSON text: per contractor (demonstrations, rankings,
 * skips, median seconds per task, pairwise agreement and Kendall's tau with
 * others on shared ranking tasks), per queue (pending, leased, done) and
 * "replies" (stored, pruned since the store was created). Caller owns
 * *json (free()). */
int label_store_stats(label_store_t *s, int64_t now_ms, char **json, gl_err_t *err);

/* Number of submissions stored (all kinds). */
uint64_t label_store_submissions(label_store_t *s);
/* Number of stored replies (requests a retry would be answered for). */
uint64_t label_store_replies(label_store_t *s);
/* Stored replies this store handle has pruned since it was opened (the
 * store's total since its creation is in label_store_stats). */
uint64_t label_store_replies_pruned(const label_store_t *s);
/* Map growths so far (for tests). */
unsigned label_store_map_growths(const label_store_t *s);

/* ---- export ----------------------------------------------------------- */

typedef enum { LABEL_EXPORT_SFT = 1, LABEL_EXPORT_RM = 2 } label_export_kind_t;
typedef enum {
    LABEL_JSONL_NONE = 0,
    LABEL_JSONL_PROMPT_RESPONSE, /* {"prompt","response"} (sft) */
    LABEL_JSONL_HH,              /* {"chosen","rejected"} per strict pair (rm) */
    LABEL_JSONL_RANKED,          /* {"prompt","responses" best first,"rank"} (rm) */
} label_jsonl_t;

typedef struct {
    label_export_kind_t kind;
    const char *out_dir;          /* shards folder (NULL: no shards) */
    const char *tokenizer;        /* "bytes" (NULL too), or a BPE vocabulary file
                                     (tok_vocab_load; chat roles added) */
    uint64_t shard_records;       /* records per shard; default 1,000,000 */
    const char *jsonl_path;       /* NULL: no JSONL; "-": stdout */
    label_jsonl_t jsonl;
    gl_progress_t *progress;      /* may be NULL */
} label_export_opts_t;

typedef struct {
    uint64_t records;             /* shard records (submissions) */
    uint64_t comparisons;         /* strict pairs in the RM records */
    uint64_t jsonl_lines;
    uint64_t tokens;
    uint64_t shards;
} label_export_stats_t;

/* Exports every submission of a kind, in submission order, to sealed
 * shards (record kind SFT or RM) and/or JSONL. Reads a snapshot: safe while
 * the server runs. */
int label_export(label_store_t *s, const label_export_opts_t *o, label_export_stats_t *st,
                 gl_err_t *err);

/* ---- server ----------------------------------------------------------- */

typedef struct {
    const char *db_dir;           /* the store's folder */
    const char *endpoint;         /* e.g. "tcp://127.0.0.1:5555" */
    label_keypair_t key;          /* the server's key pair */
    label_store_opts_t store;
    size_t max_batch;             /* requests per group commit; default 512 */
    int heartbeat_ms;             /* default 5000 */
    const char *metrics_file;     /* Prometheus textfile (gl_metrics_t), or NULL */
    double metrics_interval;      /* seconds between its rewrites; default 5 */
} label_server_opts_t;

typedef struct {
    uint64_t requests, replies, bad_requests, commits, refused_handshakes;
    uint64_t submissions;         /* stored in the store at the last commit */
    uint64_t replies_pruned;      /* stored replies pruned past the retention */
    uint64_t metrics_errors;      /* failed rewrites of the metrics file */
    char endpoint[256];           /* the bound endpoint (a port of 0 or * resolved) */
} label_server_stats_t;

/* Runs the service until *stop becomes non-zero (set it from a signal
 * handler or another thread; checked every 100 ms). Binds the ZAP handler
 * before the server socket, so no client gets in unauthenticated. Returns
 * after a clean shutdown (threads joined, sockets closed); stats may be
 * NULL; when given, stats->endpoint is filled in before *bound (may be
 * NULL) is set to 1, once the socket is bound. With o->metrics_file the
 * counters are written there (gptline_label_*) before the socket is bound
 * (a path that cannot be written fails the start), every
 * o->metrics_interval seconds and at shutdown; a later failed rewrite is
 * only counted. */
int label_server_run(const label_server_opts_t *o, volatile sig_atomic_t *stop,
                     volatile sig_atomic_t *bound, label_server_stats_t *stats, gl_err_t *err);

/* ---- client ----------------------------------------------------------- */

typedef struct label_client label_client_t;

typedef struct {
    const char *endpoint;
    char server_public_z85[41];
    label_keypair_t key;          /* this contractor's key pair */
    int timeout_ms;               /* per try; default 2500 */
    int retries;                  /* tries before giving up; default 3 */
    const char *journal_dir;      /* unsent submissions; NULL: none */
    int heartbeat_ms;             /* default 5000 */
    void *zmq_context;            /* borrowed ZeroMQ context to share among
                                     clients of one process; NULL: its own */
} label_client_opts_t;

/* Connects (lazily; ZeroMQ reconnects by itself). Caller owns the client;
 * close with label_client_close(). The journal folder is created. */
label_client_t *label_client_open(const label_client_opts_t *o, gl_err_t *err);
/* NULL-safe; nulls *c. */
void label_client_close(label_client_t **c);

/* Sends req and waits for its reply (Lazy Pirate: on timeout the socket is
 * closed, reopened and the same bytes resent, up to `retries` tries).
 * Fills req->version and, when 0, req->request_id. With journal set, the
 * request is written to the journal before it is sent and removed once a
 * reply came. A key the server refuses fails at once with GL_EINVAL.
 * Caller owns *rep (gptline__label__reply__free_unpacked(*rep, NULL)). */
int label_client_call(label_client_t *c, Gptline__Label__Request *req, int journal,
                      Gptline__Label__Reply **rep, gl_err_t *err);

/* Resends every journaled request (in the order written) and hands each
 * reply to fn (may be NULL); an entry is removed once answered. *n gets the
 * number replayed. */
int label_client_replay(label_client_t *c,
                        void (*fn)(void *ctx, const Gptline__Label__Request *req,
                                   const Gptline__Label__Reply *rep),
                        void *ctx, size_t *n, gl_err_t *err);

/* ---- command ---------------------------------------------------------- */

/* `gptline label ...` */
int label_cmd(int argc, char **argv);

#endif
