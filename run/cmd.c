/* cmd.c — `gptline run`: options, messages and exit statuses over the
 * pipeline runner (run.h).
 *
 * Exit status: 0 every stage up to date or run; 1 a stage failed (its name,
 * exit status and log are printed, with the log's last lines), or the run
 * could not start; 2 usage; 3 the pipeline file is malformed.
 */
#include "run/run.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(const char *prog)
{
    printf("usage: %s [--dry-run] [--force STAGE]... [--slurm [--slurm-opt OPT]...] PIPELINE\n"
           "       %s --status PIPELINE\n\n"
           "Runs the stages of a pipeline file (INI: ingest, tokenizer, shards, dedup,\n"
           "pretrain, label-export, sft, rm, rl; see docs/run.md) in dependency order,\n"
           "each as its gptline command, logging to WORK/logs/STAGE.log. A stage whose\n"
           "parameters, inputs and outputs are as its last successful run left them is\n"
           "skipped; an interrupted one resumes (training from its last checkpoint).\n\n"
           "  -n, --dry-run         print the plan (run/resume/skip, why, command lines)\n"
           "  -f, --force STAGE     run STAGE again (and everything after it); its Slurm\n"
           "                        jobs still queued or running are cancelled first\n"
           "  -s, --status          where each stage stands: done, stale, interrupted,\n"
           "                        failed, running, queued or never run; when; how long;\n"
           "                        for stages in Slurm, what Slurm says of their jobs\n"
           "      --slurm           submit each stage as a Slurm job (sbatch --parsable),\n"
           "                        chained with --dependency=afterok; ingest as a job\n"
           "                        array (slurm-array = N), training through srun; jobs\n"
           "                        still queued or running are left alone, ended ones\n"
           "                        (cancelled, timed out, failed) are resubmitted\n"
           "      --slurm-opt OPT   extra sbatch option for every job (repeatable)\n\n"
           "Used by the job scripts --slurm writes:\n"
           "      --job-start STAGE [--fresh]      record the start of a stage\n"
           "      --job-end STAGE --exit-status N  record its end\n\n"
           "Exit status: 0 ok, 1 a stage failed, 2 usage error, 3 malformed pipeline file.\n",
           prog, prog);
}

static void log_line(void *ctx, int level, const char *msg)
{
    (void)ctx;
    gl_log((gl_log_level_t)level, "run: %s", msg);
}

/* The last lines of a stage's log, to stderr. */
static void show_log_tail(const char *path, int lines)
{
    char *data;
    size_t len;
    gl_err_t e;
    if (gl_read_file(path, 1u << 26, &data, &len, &e))
        return;
    size_t start = len;
    int n = 0;
    while (start > 0) {
        if (data[start - 1] == '\n' && start != len && ++n >= lines)
            break;
        start--;
    }
    fprintf(stderr, "--- last lines of %s:\n%s%s", path, data + start, len && data[len - 1] != '\n' ? "\n" : "");
    free(data);
}

int run_cmd(int argc, char **argv)
{
    enum { O_SLURM = 256, O_SLURM_OPT, O_JOB_START, O_JOB_END, O_FRESH, O_EXIT_STATUS, O_SBATCH };
    static const struct option opts[] = {
        {"dry-run", no_argument, NULL, 'n'},        {"force", required_argument, NULL, 'f'},
        {"status", no_argument, NULL, 's'},         {"slurm", no_argument, NULL, O_SLURM},
        {"slurm-opt", required_argument, NULL, O_SLURM_OPT},
        {"job-start", required_argument, NULL, O_JOB_START},
        {"job-end", required_argument, NULL, O_JOB_END},
        {"fresh", no_argument, NULL, O_FRESH},      {"exit-status", required_argument, NULL, O_EXIT_STATUS},
        {"sbatch", required_argument, NULL, O_SBATCH},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *prog = argv[0];
    const char **force = NULL;
    size_t nforce = 0;
    int dry = 0, status = 0, slurm = 0, fresh = 0, have_exit = 0;
    long exit_status = 0;
    const char *job_start = NULL, *job_end = NULL, *sbatch = NULL;
    char *slurm_opt = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "nf:sh", opts, NULL)) != -1) {
        switch (c) {
        case 'n': dry = 1; break;
        case 'f':
            force = gl_xrealloc(force, (nforce + 1) * sizeof *force);
            force[nforce++] = optarg;
            break;
        case 's': status = 1; break;
        case O_SLURM: slurm = 1; break;
        case O_SLURM_OPT: {
            size_t n = (slurm_opt ? strlen(slurm_opt) : 0) + strlen(optarg) + 2;
            char *s = gl_xmalloc(n);
            snprintf(s, n, "%s%s%s", slurm_opt ? slurm_opt : "", slurm_opt ? " " : "", optarg);
            free(slurm_opt);
            slurm_opt = s;
            break;
        }
        case O_JOB_START: job_start = optarg; break;
        case O_JOB_END: job_end = optarg; break;
        case O_FRESH: fresh = 1; break;
        case O_EXIT_STATUS: {
            char *end;
            exit_status = strtol(optarg, &end, 10);
            if (*end || end == optarg || exit_status < 0 || exit_status > 255) {
                free(force), free(slurm_opt);
                return gl_usage_error(prog, "--exit-status: a number from 0 to 255");
            }
            have_exit = 1;
            break;
        }
        case O_SBATCH: sbatch = optarg; break;
        case 'h': usage(prog); free(force), free(slurm_opt); return GL_EXIT_OK;
        default: free(force), free(slurm_opt); return gl_usage_error(prog, "bad option");
        }
    }
    int rc = GL_EXIT_OK;
    const char *bad = NULL;
    if (optind != argc - 1)
        bad = optind >= argc ? "name one pipeline file" : "one pipeline file only";
    else if (status + !!job_start + !!job_end > 1)
        bad = "--status, --job-start and --job-end go alone";
    else if ((status || job_start || job_end) && (dry || nforce || slurm))
        bad = "--status, --job-start and --job-end take no --dry-run, --force or --slurm";
    else if (job_end && !have_exit)
        bad = "--job-end needs --exit-status";
    else if (slurm_opt && !slurm)
        bad = "--slurm-opt goes with --slurm";
    if (bad) {
        free(force), free(slurm_opt);
        return gl_usage_error(prog, "%s", bad);
    }

    gl_err_t err = {0};
    run_pipeline_t *p = run_pipeline_load(argv[optind], NULL, 0, &err);
    if (!p) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        free(force), free(slurm_opt);
        return err.code == GL_EPARSE ? GL_EXIT_INVALID : gl_exit_status(err.code);
    }
    if (slurm_opt) {
        run_pipeline_add_slurm_opt(p, slurm_opt);
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "%s: cannot find the gptline binary (/proc/self/exe)\n", prog);
        rc = GL_EXIT_FAIL;
        goto out;
    }
    self[n] = '\0';

    if (status) {
        if (run_pipeline_status(p, stdout, &err))
            rc = gl_cmd_fail(prog, &err);
    } else if (job_start) {
        if (run_job_start(p, job_start, fresh, &err))
            rc = gl_cmd_fail(prog, &err);
    } else if (job_end) {
        if (run_job_end(p, job_end, (int)exit_status, &err))
            rc = gl_cmd_fail(prog, &err);
    } else {
        run_opts_t o = {.self = self, .force = force, .nforce = nforce, .dry_run = dry, .slurm = slurm,
                        .sbatch = sbatch, .out = stdout, .log = log_line};
        int failed = -1;
        if (run_pipeline_exec(p, &o, &failed, &err)) {
            if (err.code == GL_EINVAL) {
                rc = gl_usage_error(prog, "%s", err.msg);
            } else {
                rc = gl_cmd_fail(prog, &err);
                if (rc == GL_EXIT_USAGE)
                    rc = GL_EXIT_FAIL;
                if (failed >= 0 && !slurm) {
                    const char *name = run_pipeline_stage_name(p, (size_t)failed);
                    size_t ln = strlen(run_pipeline_work(p)) + strlen(name) + 16;
                    char *lf = gl_xmalloc(ln);
                    snprintf(lf, ln, "%s/logs/%s.log", run_pipeline_work(p), name);
                    show_log_tail(lf, 10);
                    free(lf);
                }
            }
        }
    }
out:
    run_pipeline_free(&p);
    free(force), free(slurm_opt);
    return rc;
}
