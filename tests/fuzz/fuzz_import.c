/* fuzz_import.c — fuzzes `gptline shards import`, the parser of JSONL from
 * outside: the first byte picks the record kind, the rest is the input
 * file. Every input must end in records written or lines refused, never a
 * crash; a bad line must not lose the good ones (checked by the tests).
 */
#include "shards/internal.h"
#include "tests/fuzz/fuzz.h"

#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[256], vocab[300], input[300], out[300];

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static void cleanup(void)
{
    if (dir[0])
        nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

/* A vocabulary of the 256 bytes and a few merges, with the chat roles. */
static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gl-fuzz-import-%ld", (long)getpid());
    mkdir(dir, 0755);
    atexit(cleanup);
    snprintf(vocab, sizeof vocab, "%s/v.gltok", dir);
    snprintf(input, sizeof input, "%s/in.jsonl", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    static uint8_t bytes[260][2];
    const uint8_t *tok[260];
    uint32_t len[260];
    for (int i = 0; i < 256; i++) {
        bytes[i][0] = (uint8_t)i;
        tok[i] = bytes[i];
        len[i] = 1;
    }
    const char *merges[4] = {"th", "he", "in", "er"};
    for (int i = 0; i < 4; i++) {
        tok[256 + i] = (const uint8_t *)merges[i];
        len[256 + i] = 2;
    }
    gl_err_t err;
    tok_vocab_t *v = tok_vocab_from_tokens("fuzz", TOK_PRETOK_CL100K, tok, len, 260, &err);
    if (!v || tok_vocab_add_chat_roles(v, &err) || tok_vocab_save(v, vocab, TOK_FMT_GLTOK, &err)) {
        fprintf(stderr, "fuzz_import setup: %s\n", err.msg);
        abort();
    }
    tok_vocab_free(&v);
    gl_log_set_level(GL_LOG_ERROR);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0])
        setup();
    if (size < 1)
        return 0;
    static const char *kinds[3] = {"sft", "rm", "rl"};
    FILE *f = fopen(input, "wb");
    if (!f)
        return 0;
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    char *argv[] = {"import", "--kind", (char *)kinds[data[0] % 3], "-t", vocab, "-o", out, input, NULL};
    optind = 0; /* glibc: start getopt afresh */
    /* the command names each bad line on stderr: silence it for the call
     * only, so that the fuzzer's own reports still show */
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    if (saved >= 0 && null >= 0)
        dup2(null, 2);
    shards_import_cmd(8, argv);
    fflush(stderr);
    if (saved >= 0 && null >= 0)
        dup2(saved, 2);
    if (saved >= 0)
        close(saved);
    if (null >= 0)
        close(null);
    nftw(out, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

uint8_t *gl_fuzz_seed(size_t i, size_t *len)
{
    static const char *seeds[] = {
        "\x00{\"prompt\": \"Say hi\", \"response\": \"Hi there!\"}\n"
        "{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n",
        "\x01{\"chosen\": \"\\n\\nHuman: Hi?\\n\\nAssistant: Hello.\", \"rejected\": \"\\n\\nHuman: Hi?\\n\\nAssistant: Go.\"}\n"
        "{\"prompt\": \"Pick\", \"responses\": [\"a\", \"b\", \"c\"], \"ranks\": [0, 1, 1]}\n",
        "\x02{\"prompt\": \"Write a poem\"}\n{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}, "
        "{\"role\": \"user\", \"content\": \"y\"}]}\n",
    };
    if (i >= sizeof seeds / sizeof *seeds)
        return NULL;
    size_t n = strlen(seeds[i] + 1) + 1;
    uint8_t *b = malloc(n);
    memcpy(b, seeds[i], n);
    *len = n;
    return b;
}
