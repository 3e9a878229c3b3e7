/* wire.c — decoding and validating the labeling protocol's frames, and
 * the contractors' CURVE key files.
 *
 * Every byte that reaches the server from the network passes
 * label_wire_decode() first: protobuf-c checks the encoding, then every
 * string is held to its limit and to valid UTF-8, repeated fields to their
 * counts, and the version to the one this build speaks. The checks are
 * pure functions (no store, no socket), so the fuzz target
 * (tests/fuzz/fuzz_label_msg.c) drives exactly what the server runs.
 * Requests are small (a prompt, a response, a ranking); the server decodes
 * tens of thousands a second, so nothing here allocates beyond the
 * unpacked message.
 */
#include "labeler/labeler.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

int label_text_ok(const char *s, size_t max)
{
    if (!s)
        return 1;
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (p[n]) {
        if (n >= max)
            return 0;
        unsigned c = p[n];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            n++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (size_t k = 1; k <= extra; k++) {
            if ((p[n + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[n + k] & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        n += extra + 1;
    }
    return n <= max;
}

int label_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > LABEL_MAX_ID)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* protobuf-c accepts a string field with a NUL inside by truncating it at
 * the NUL on use; the raw length is not kept, so NULs cannot smuggle data
 * past the checks below. */
static int check_body(const Gptline__Label__Request *r, gl_err_t *err)
{
    switch (r->body_case) {
    case GPTLINE__LABEL__REQUEST__BODY_HELLO:
        if (!label_text_ok(r->hello->client, LABEL_MAX_CLIENT_NAME))
            return gl_err_set(err, GL_EPARSE, "hello: client name too long or not UTF-8");
        return GL_OK;
    case GPTLINE__LABEL__REQUEST__BODY_LEASE:
        if (r->lease->count > LABEL_MAX_LEASE_COUNT)
            return gl_err_set(err, GL_EPARSE, "lease: count %u over the limit %u", r->lease->count,
                              LABEL_MAX_LEASE_COUNT);
        if ((int)r->lease->kind < 0 || r->lease->kind > GPTLINE__LABEL__TASK_KIND__RANKING)
            return gl_err_set(err, GL_EPARSE, "lease: unknown task kind %d", (int)r->lease->kind);
        return GL_OK;
    case GPTLINE__LABEL__REQUEST__BODY_DEMONSTRATION:
        if (!label_text_ok(r->demonstration->response, LABEL_MAX_RESPONSE))
            return gl_err_set(err, GL_EPARSE, "demonstration: response over %u bytes or not UTF-8",
                              LABEL_MAX_RESPONSE);
        return GL_OK;
    case GPTLINE__LABEL__REQUEST__BODY_RANKING:
        if (r->ranking->n_rank > LABEL_MAX_CANDIDATES || r->ranking->n_flags > LABEL_MAX_CANDIDATES)
            return gl_err_set(err, GL_EPARSE, "ranking: more than %u entries", LABEL_MAX_CANDIDATES);
        return GL_OK;
    case GPTLINE__LABEL__REQUEST__BODY_SKIP:
        if (!label_text_ok(r->skip->reason, LABEL_MAX_REASON))
            return gl_err_set(err, GL_EPARSE, "skip: reason over %u bytes or not UTF-8", LABEL_MAX_REASON);
        return GL_OK;
    case GPTLINE__LABEL__REQUEST__BODY_PROMPT:
        if (!label_text_ok(r->prompt->prompt, LABEL_MAX_PROMPT))
            return gl_err_set(err, GL_EPARSE, "prompt: over %u bytes or not UTF-8", LABEL_MAX_PROMPT);
        return GL_OK;
    case GPTLINE__LABEL__REQUEST__BODY_PROGRESS:
    case GPTLINE__LABEL__REQUEST__BODY_PING:
        return GL_OK;
    default:
        return gl_err_set(err, GL_EPARSE, "request without a body");
    }
}

int label_wire_decode(const void *data, size_t len, Gptline__Label__Request **out,
                      uint64_t *request_id, gl_err_t *err)
{
    *out = NULL;
    *request_id = 0;
    if (len > LABEL_MAX_MESSAGE)
        return gl_err_set(err, GL_EPARSE, "message of %zu bytes over the limit %u", len, LABEL_MAX_MESSAGE);
    Gptline__Label__Request *r = gptline__label__request__unpack(NULL, len, data);
    if (!r)
        return gl_err_set(err, GL_EPARSE, "malformed or truncated request (%zu bytes)", len);
    *request_id = r->request_id;
    int rc = GL_OK;
    if (r->version != LABEL_PROTOCOL_VERSION) {
        rc = gl_err_set(err, GL_EVERSION, "protocol version %u, this server speaks %u", r->version,
                        LABEL_PROTOCOL_VERSION);
        goto out;
    }
    if (r->request_id == 0) {
        rc = gl_err_set(err, GL_EPARSE, "request id 0 (ids start at 1)");
        goto out;
    }
    rc = check_body(r, err);
out:
    if (rc)
        gptline__label__request__free_unpacked(r, NULL);
    else
        *out = r;
    return rc;
}

int label_check_ranking(size_t k, const uint32_t *rank, size_t nrank, const uint32_t *flags,
                        size_t nflags, uint32_t rating, gl_err_t *err)
{
    if (k < LABEL_MIN_CANDIDATES || k > LABEL_MAX_CANDIDATES)
        return gl_err_set(err, GL_EINVAL, "task has %zu candidates", k);
    if (nrank != k)
        return gl_err_set(err, GL_EINVAL, "ranking has %zu entries for %zu candidates", nrank, k);
    int used[LABEL_MAX_CANDIDATES] = {0};
    uint32_t max = 0;
    for (size_t i = 0; i < k; i++) {
        if (rank[i] >= k)
            return gl_err_set(err, GL_EINVAL, "rank %u of candidate %zu out of range 0..%zu", rank[i], i + 1,
                              k - 1);
        used[rank[i]] = 1;
        if (rank[i] > max)
            max = rank[i];
    }
    for (uint32_t r = 0; r <= max; r++)
        if (!used[r])
            return gl_err_set(err, GL_EINVAL, "ranking skips position %u (ranks must be 0..m-1, ties equal)", r);
    if (max == 0)
        return gl_err_set(err, GL_EINVAL, "ranking ties every candidate: nothing was compared");
    if (nflags && nflags != k)
        return gl_err_set(err, GL_EINVAL, "flags has %zu entries for %zu candidates", nflags, k);
    for (size_t i = 0; i < nflags; i++)
        if (flags[i] & ~7u)
            return gl_err_set(err, GL_EINVAL, "unknown flag bits %#x on candidate %zu", flags[i], i + 1);
    if (rating < 1 || rating > 7)
        return gl_err_set(err, GL_EINVAL, "rating %u outside 1..7", rating);
    return GL_OK;
}

uint8_t *label_reply_pack(const Gptline__Label__Reply *rep, size_t *len)
{
    size_t n = gptline__label__reply__get_packed_size(rep);
    uint8_t *b = gl_xmalloc(n ? n : 1);
    *len = gptline__label__reply__pack(rep, b);
    return b;
}

uint8_t *label_error_pack(uint64_t request_id, Gptline__Label__Status st, const char *msg, size_t *len)
{
    Gptline__Label__Reply rep = GPTLINE__LABEL__REPLY__INIT;
    rep.version = LABEL_PROTOCOL_VERSION;
    rep.request_id = request_id;
    rep.status = st;
    rep.error = (char *)(msg ? msg : "");
    return label_reply_pack(&rep, len);
}

const char *label_status_name(Gptline__Label__Status st)
{
    switch (st) {
    case GPTLINE__LABEL__STATUS__STATUS_OK: return "ok";
    case GPTLINE__LABEL__STATUS__STATUS_BAD_REQUEST: return "bad request";
    case GPTLINE__LABEL__STATUS__STATUS_BAD_VERSION: return "bad version";
    case GPTLINE__LABEL__STATUS__STATUS_REJECTED: return "rejected";
    case GPTLINE__LABEL__STATUS__STATUS_NOT_LEASED: return "not leased";
    case GPTLINE__LABEL__STATUS__STATUS_NO_TASK: return "no task";
    case GPTLINE__LABEL__STATUS__STATUS_REVOKED: return "revoked";
    case GPTLINE__LABEL__STATUS__STATUS_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}

/* ---- keys --------------------------------------------------------------- */

int label_keygen(label_keypair_t *kp, gl_err_t *err)
{
    if (!zmq_has("curve"))
        return gl_err_set(err, GL_EUNSUPPORTED, "this libzmq was built without CURVE");
    if (zmq_curve_keypair(kp->public_z85, kp->secret_z85) != 0)
        return gl_err_set(err, GL_EIO, "zmq_curve_keypair: %s", zmq_strerror(errno));
    return GL_OK;
}

int label_key_write(const char *name, const label_keypair_t *kp, gl_err_t *err)
{
    char *path = NULL, buf[256];
    int rc;
    size_t l = strlen(name);
    path = gl_xmalloc(l + 5);
    snprintf(path, l + 5, "%s.key", name);
    int n = snprintf(buf, sizeof buf,
                     "# gptline label key pair: keep this file secret\npublic = %s\nsecret = %s\n",
                     kp->public_z85, kp->secret_z85);
    if ((rc = gl_write_file_atomic(path, buf, (size_t)n, err)))
        goto out;
    if (chmod(path, 0600) < 0) {
        rc = gl_err_set(err, GL_EIO, "%s: %s", path, strerror(errno));
        goto out;
    }
    snprintf(path, l + 5, "%s.pub", name);
    n = snprintf(buf, sizeof buf, "%s\n", kp->public_z85);
    rc = gl_write_file_atomic(path, buf, (size_t)n, err);
out:
    free(path);
    return rc;
}

static int z85_ok(const char *s)
{
    uint8_t raw[32];
    return strlen(s) == 40 && zmq_z85_decode(raw, s) != NULL;
}

int label_key_read(const char *path, label_keypair_t *kp, gl_err_t *err)
{
    char *data = NULL;
    size_t len;
    int rc = gl_read_file(path, 4096, &data, &len, err);
    if (rc)
        return rc;
    memset(kp, 0, sizeof *kp);
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '#' || !*line)
            continue;
        char *v = line;
        char *dst = kp->public_z85;
        if (!strncmp(line, "public", 6) || !strncmp(line, "secret", 6)) {
            dst = line[0] == 's' ? kp->secret_z85 : kp->public_z85;
            v = strchr(line, '=');
            if (!v) {
                rc = gl_err_set(err, GL_EPARSE, "%s: expected 'public = KEY' / 'secret = KEY'", path);
                goto out;
            }
            v++;
            while (*v == ' ')
                v++;
        }
        size_t n = strcspn(v, " \t\r");
        v[n] = 0;
        if (!z85_ok(v)) {
            rc = gl_err_set(err, GL_EPARSE, "%s: not a 40-character Z85 CURVE key", path);
            goto out;
        }
        memcpy(dst, v, 41);
    }
    if (!kp->public_z85[0]) {
        if (kp->secret_z85[0]) {
            if (zmq_curve_public(kp->public_z85, kp->secret_z85) != 0) {
                rc = gl_err_set(err, GL_EPARSE, "%s: bad secret key", path);
                goto out;
            }
        } else {
            rc = gl_err_set(err, GL_EPARSE, "%s: no key in the file", path);
            goto out;
        }
    }
out:
    free(data);
    return rc;
}
