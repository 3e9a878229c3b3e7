/* internal.h — private declarations shared by the pipeline runner's files. */
#ifndef GL_RUN_INTERNAL_H
#define GL_RUN_INTERNAL_H

#include <jansson.h>

#include "run/run.h"

/* How an input or output path is fingerprinted (fp.c). */
typedef enum {
    RUN_FP_NONE = 0,  /* a plain value, not a path */
    RUN_FP_FILE,      /* one file's content */
    RUN_FP_TREE,      /* a folder: every file under it, by name and content */
    RUN_FP_DATASET,   /* a shard dataset: its sealed shards' trailers */
    RUN_FP_CKPT,      /* a checkpoint: a file, a ckpt folder, or OUT/latest's folder */
    RUN_FP_AUTO,      /* a file or a folder (TREE), whichever it is */
} run_fp_kind_t;

/* How a stage continues after an interruption. */
typedef enum {
    RUN_RESUME_NONE = 0, /* runs again from scratch */
    RUN_RESUME_TRAIN,    /* --resume when OUT/latest exists */
    RUN_RESUME_RELAUNCH, /* the same command again: it skips what it finished */
} run_resume_t;

/* One key = value of a section; continuation lines and repeated keys of
 * list kind append values. */
typedef struct {
    char *key;
    char *value;   /* continuation lines joined with one space */
    int line;
} run_kv_t;

/* An input of a stage: a path, how to fingerprint it, the stage that
 * makes it (-1: none). */
typedef struct {
    char *key;
    char *path;
    run_fp_kind_t fp;
    int from;
} run_input_t;

typedef struct stage_kind stage_kind_t;

typedef struct {
    char *name;                /* section name: "pretrain", "shards.val" */
    const stage_kind_t *kind;
    const char *kind_name;     /* "pretrain" */
    int line;                  /* of its section header */
    run_kv_t *kv;
    size_t nkv;
    /* resolved by pipeline.c */
    char *out;                 /* absolute output path */
    run_fp_kind_t out_fp;
    int inplace;               /* writes into its input's folder (dedup) */
    int *deps;                 /* stages it depends on (indices) */
    size_t ndeps;
    run_input_t *in;
    size_t nin;
    char ***cmds;              /* argv lists (without the binary), NULL-terminated each */
    size_t ncmds;
    char *list_file;           /* ingest: WORK/state/NAME.inputs to write */
    char *list_text;           /* its content */
    json_t *params;            /* key -> value, as written (defaults applied) */
    run_resume_t resume;
    int train;                 /* a training stage: runs under srun with --slurm */
    long array;                /* ingest: Slurm array size (0: not an array) */
    char *slurm_opt;           /* this stage's extra sbatch options, or NULL */
} run_stage_t;

struct run_pipeline {
    char *path;                /* the pipeline file, absolute */
    char *dir;                 /* its folder: relative paths and the stages' cwd */
    char *work;                /* work folder, absolute */
    char *name;
    char *slurm_opt;           /* sbatch options for every job */
    char *srun;                /* the launcher of training stages under Slurm */
    char *self_for_scripts;    /* the gptline binary job scripts run */
    run_stage_t *st;           /* in execution order */
    size_t n;
};

const char *run_kv_get(const run_stage_t *s, const char *key);

/* Fingerprint of path as kind; cache (a JSON object, may be NULL) keeps the
 * content hashes of large files by (size, mtime, ctime, inode) and is
 * updated. GL_ENOTFOUND when the path (or what it must hold) is missing. */
int run_fingerprint(const char *path, run_fp_kind_t kind, json_t *cache, uint64_t *fp, gl_err_t *err);

/* What Slurm says of a stage's recorded jobs (slurm.c). */
typedef enum {
    RUN_SLURM_NOASK = 0, /* Slurm cannot be asked (no scontrol, no controller): msg says why */
    RUN_SLURM_GONE,      /* Slurm no longer knows a job (and no accounting): it ended, how is lost */
    RUN_SLURM_LIVE,      /* some job is queued, running, completing or suspended */
    RUN_SLURM_DONE,      /* every job COMPLETED */
    RUN_SLURM_DEAD,      /* a job ended FAILED, CANCELLED, TIMEOUT, NODE_FAIL, ..., or can never start */
} run_slurm_kind_t;

typedef struct {
    run_slurm_kind_t kind;
    char job[32];          /* the job the state is about */
    char state[48];        /* Slurm's word for it: RUNNING, PENDING, CANCELLED, ... */
    char reason[64];       /* a PENDING job's reason (Dependency, DependencyNeverSatisfied, ...) */
    int exit_status;       /* FAILED, OUT_OF_MEMORY: the job's exit status; else -1 */
    char queued[3][32];    /* the stage's jobs still in Slurm's queue (to cancel before resubmitting) */
    size_t nqueued;
    char msg[160];         /* NOASK: why */
} run_slurm_t;

/* Asks Slurm (scontrol, then sacct) about jobs[0..n) of one stage; never fails. */
void run_slurm_query(const char *const *jobs, size_t n, run_slurm_t *out);
/* scancel jobs[0..n). */
int run_slurm_cancel(const char *const *jobs, size_t n, gl_err_t *err);
/* One line for messages: "Slurm job 12 CANCELLED", "Slurm job 13 PENDING (Dependency)". */
void run_slurm_describe(const run_slurm_t *s, char *out, size_t cap);
/* Runs argv (argv[0] from the PATH) with stdout and stderr into out
 * (truncated to cap - 1, trailing blanks cut); *status gets its exit status
 * (128 + signal when killed, 127 when it cannot run). */
int run_capture(char *const *argv, char *out, size_t cap, int *status, gl_err_t *err);

#endif
