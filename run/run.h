/* run.h — `gptline run`: declarative pipelines of gptline stages, run
 * make-like, locally or as chained Slurm jobs.
 *
 * A pipeline is an INI file (parsed with libinih) with one section per
 * stage: [ingest], [tokenizer], [shards], [dedup], [pretrain],
 * [label-export], [sft], [rm], [rl], and named instances [KIND.NAME] (for
 * example [shards.val]). Each stage is one gptline subcommand; its keys
 * become that command's options, and a value "@STAGE" (or "@STAGE/sub")
 * names another stage's output, which makes the stages a graph run in
 * dependency order. See docs/run.md for every key.
 *
 * The runner keeps, in WORK/state/, one JSON record per stage: its
 * parameters, the fingerprints of its inputs and of its outputs, its
 * command line, its status and times. A stage is up to date when it
 * finished, its parameters and inputs are those recorded, its outputs are
 * those it left and no stage it depends on runs again; otherwise it runs
 * (fresh, or resumed when it was interrupted with unchanged settings).
 *
 * Errors: functions return 0 or a gl_code_t and fill *err; a malformed
 * pipeline file is GL_EPARSE with "FILE:LINE: ..." in the message. Nothing
 * here prints except to the streams and log callbacks the caller passes.
 */
#ifndef GL_RUN_H
#define GL_RUN_H

#include <stdint.h>
#include <stdio.h>

#include "common/common.h"

typedef struct run_pipeline run_pipeline_t;

/* Parses the pipeline file at path (text may be NULL: the file is read;
 * else text[0..len) is parsed as if it were that file). Relative paths in
 * it are taken from the file's folder. Validates the stages, keys,
 * references and the dependency graph (no cycles). Caller owns the result:
 * free with run_pipeline_free. */
run_pipeline_t *run_pipeline_load(const char *path, const char *text, size_t len, gl_err_t *err);
/* NULL-safe; nulls *p. */
void run_pipeline_free(run_pipeline_t **p);

/* Stages in execution order (dependencies first). Strings are owned by p. */
size_t run_pipeline_count(const run_pipeline_t *p);
const char *run_pipeline_stage_name(const run_pipeline_t *p, size_t i);
/* The work folder (state/, logs/, out/, slurm/). */
const char *run_pipeline_work(const run_pipeline_t *p);
/* Index of a stage by name, or -1. */
int run_pipeline_find(const run_pipeline_t *p, const char *name);

/* Appends sbatch options given on the command line to those of the
 * file's [pipeline] slurm-opt (so they take precedence). */
void run_pipeline_add_slurm_opt(run_pipeline_t *p, const char *opt);

/* Log lines of a run (level is a gl_log_level_t). */
typedef void (*run_log_fn)(void *ctx, int level, const char *msg);

typedef struct {
    const char *self;      /* the gptline binary the stages run (absolute path) */
    const char **force;    /* stages to run regardless (their dependents follow) */
    size_t nforce;
    int dry_run;           /* print the plan (and Slurm scripts) to out, run nothing */
    int slurm;             /* submit with sbatch instead of running */
    const char *sbatch;    /* the sbatch program (default "sbatch") */
    FILE *out;             /* the plan and results (stdout) */
    run_log_fn log;        /* progress lines; may be NULL */
    void *log_ctx;
} run_opts_t;

/* Plans and runs (or submits) the stages that are not up to date, in
 * order, stopping at the first failure: then err names the stage, its exit
 * status and its log file, and *failed (may be NULL) gets the stage's
 * index. */
int run_pipeline_exec(run_pipeline_t *p, const run_opts_t *o, int *failed, gl_err_t *err);

/* Prints a table of every stage: done / stale (why) / interrupted /
 * failed / running / queued / never run, when, and how long it took. */
int run_pipeline_status(run_pipeline_t *p, FILE *out, gl_err_t *err);

/* The two halves of a stage run inside a Slurm job (see docs/run.md):
 * start records the inputs and "running" (cleaning the output first when
 * fresh is set), end records the outputs and "done", or "failed" with
 * exit_status when it is not 0. */
int run_job_start(run_pipeline_t *p, const char *stage, int fresh, gl_err_t *err);
int run_job_end(run_pipeline_t *p, const char *stage, int exit_status, gl_err_t *err);

/* `gptline run ...` */
int run_cmd(int argc, char **argv);

#endif
