/* fuzz_pipeline.c — fuzzes the pipeline file parser of `gptline run`: INI
 * through libinih, keys, references between stages, the dependency order
 * and the command lines built from them. Every input must load or be
 * refused with a message (GL_EPARSE naming a line, or a missing input
 * list), never crash or leak; a loaded pipeline names every stage once.
 */
#include "run/internal.h"
#include "tests/fuzz/fuzz.h"

#include <stdlib.h>
#include <string.h>

static const char *seeds[] = {
    "[pipeline]\nwork = w\nslurm-opt = --partition=cpu\n[tokenizer]\ninput = a b\nvocab-size = 300\n"
    "[ingest]\ninputs = x.jsonl\n  y.jsonl\ntokenizer = @tokenizer\nslurm-array = 4\n[dedup]\n"
    "[shards.val]\ninput = v\n[pretrain]\nval = @shards.val\nsteps = 10\nquiet = true\n"
    "[label-export]\ndb = labels\nkinds = sft rm\n[sft]\n[rm]\n[rl]\nprompts = @import.rl\n"
    "[import.rl]\nkind = rl\ninput = p.jsonl\n",
    "[shards]\ninput = a\n[pretrain]\ndata = @shards/sub\ninit = @sft\n[sft]\ndata = d\ninit = @pretrain\n",
    "; comment\n# comment\n[rm]\ndata = r ; inline\nno-such = @rm\nout = o\n",
};

uint8_t *gl_fuzz_seed(size_t i, size_t *len)
{
    if (i >= sizeof seeds / sizeof *seeds)
        return NULL;
    *len = strlen(seeds[i]);
    uint8_t *b = malloc(*len);
    memcpy(b, seeds[i], *len);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gl_err_t err = {0};
    run_pipeline_t *p = run_pipeline_load("/nonexistent-gl-fuzz/p.ini", (const char *)data, size, &err);
    if (!p) {
        if (!err.msg[0])
            abort(); /* refused without a message */
        return 0;
    }
    for (size_t i = 0; i < run_pipeline_count(p); i++)
        if (run_pipeline_find(p, run_pipeline_stage_name(p, i)) != (int)i)
            abort();
    run_pipeline_free(&p);
    return 0;
}
