/* chat.c — the one layout of conversations every stage shares.
 *
 * A conversation is turns of a role and text. Each turn is the role's
 * special token followed by the text's ordinary tokens; each assistant turn
 * is closed by end-of-text:
 *
 *   <|system|>S <|user|>U1 <|assistant|>A1 <|endoftext|> <|user|>U2 <|assistant|>A2 <|endoftext|>
 *
 * (no spaces: the role tokens sit right against the text). The loss spans
 * of SFT are each assistant text and its end-of-text. A prompt for
 * generation is the conversation so far followed by <|assistant|>: the
 * model writes the reply and ends it with end-of-text. SFT export, RM
 * export (prompt, then each response), the RL stage's prompts and sampling
 * all go through these two functions, so they cannot drift apart. Text is
 * encoded with no special token allowed: a user writing "<|endoftext|>"
 * gets ordinary tokens, never a control token.
 */
#include "tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *role_token(tok_role_t r)
{
    switch (r) {
    case TOK_ROLE_SYSTEM: return "<|system|>";
    case TOK_ROLE_USER: return "<|user|>";
    case TOK_ROLE_ASSISTANT: return "<|assistant|>";
    }
    return NULL;
}

int tok_role_from_name(const char *name)
{
    if (!strcmp(name, "system"))
        return TOK_ROLE_SYSTEM;
    if (!strcmp(name, "user") || !strcmp(name, "human") || !strcmp(name, "Human"))
        return TOK_ROLE_USER;
    if (!strcmp(name, "assistant") || !strcmp(name, "Assistant") || !strcmp(name, "gpt"))
        return TOK_ROLE_ASSISTANT;
    return -1;
}

static int push_special(const tok_vocab_t *v, const char *name, tok_ids_t *out, gl_err_t *err)
{
    int64_t id = tok_special_id(v, name);
    if (id < 0)
        return gl_err_set(err, GL_EINVAL, "vocabulary '%s' has no %s token (load it with chat roles)",
                          tok_vocab_name(v), name);
    if (tok_ids_reserve(out, 1, err))
        return err ? err->code : GL_ENOMEM;
    out->ids[out->n++] = (uint32_t)id;
    return GL_OK;
}

static int push_span(tok_spans_t *spans, uint32_t start, uint32_t end, gl_err_t *err)
{
    if (spans->n == spans->cap) {
        size_t cap = spans->cap ? 2 * spans->cap : 8;
        tok_span_t *p = realloc(spans->s, cap * sizeof *p);
        if (!p)
            return gl_err_set(err, GL_ENOMEM, "out of memory");
        spans->s = p;
        spans->cap = cap;
    }
    spans->s[spans->n++] = (tok_span_t){start, end};
    return GL_OK;
}

int tok_chat_encode(const tok_vocab_t *v, const tok_turn_t *turns, size_t n, tok_ids_t *out, tok_spans_t *spans,
                    gl_err_t *err)
{
    int rc;
    for (size_t i = 0; i < n; i++) {
        const char *rt = role_token(turns[i].role);
        if (!rt)
            return gl_err_set(err, GL_EINVAL, "turn %zu: unknown role %d", i, (int)turns[i].role);
        if ((rc = push_special(v, rt, out, err)))
            return rc;
        size_t start = out->n;
        if ((rc = tok_encode(v, turns[i].text, turns[i].len, TOK_ALLOW_NONE, out, err)))
            return rc;
        if (turns[i].role == TOK_ROLE_ASSISTANT) {
            if ((rc = push_special(v, "<|endoftext|>", out, err)))
                return rc;
            if (spans && (rc = push_span(spans, (uint32_t)start, (uint32_t)out->n, err)))
                return rc;
        }
    }
    return GL_OK;
}

int tok_chat_prompt(const tok_vocab_t *v, const tok_turn_t *turns, size_t n, tok_ids_t *out, gl_err_t *err)
{
    int rc = tok_chat_encode(v, turns, n, out, NULL, err);
    return rc ? rc : push_special(v, "<|assistant|>", out, err);
}

void tok_spans_free(tok_spans_t *s)
{
    free(s->s);
    s->s = NULL;
    s->n = s->cap = 0;
}
