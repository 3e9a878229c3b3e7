/* dist.c — data parallelism over MPI, and the single-process case.
 *
 * A training run is one process, or N processes started by mpirun/srun.
 * MPI is initialised only when a launcher's environment is present
 * (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK), so a plain `gptline train`
 * never touches MPI and needs no MPI runtime. Gradients are summed across
 * ranks with MPI_Allreduce in place and divided by the world size, so every
 * rank applies the same update to the same weights; rank 0 writes the
 * checkpoints and logs.
 */
#include "trainer/run.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static int launched_by_mpi(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int train_dist_init(train_dist_t *d, gl_err_t *err)
{
    memset(d, 0, sizeof *d);
    d->world = 1;
    if (!launched_by_mpi())
        return GL_OK;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS)
        return gl_err_set(err, GL_EIO, "MPI_Init failed");
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    return GL_OK;
}

void train_dist_finalize(train_dist_t *d)
{
    if (d->mpi) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (!fin)
            MPI_Finalize();
    }
    d->mpi = 0;
}

static int check(int rc, const char *what, gl_err_t *err)
{
    if (rc == MPI_SUCCESS)
        return GL_OK;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return gl_err_set(err, GL_EIO, "%s: %.*s", what, len, msg);
}

int train_dist_allreduce_mean(train_dist_t *d, float *buf, size_t n, gl_err_t *err)
{
    if (d->world == 1)
        return GL_OK;
    /* MPI counts are int: reduce in slices. */
    const size_t step = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += step) {
        int cnt = (int)(n - off < step ? n - off : step);
        int rc = check(MPI_Allreduce(MPI_IN_PLACE, buf + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                       "MPI_Allreduce of gradients", err);
        if (rc)
            return rc;
    }
    float inv = 1.0f / (float)d->world;
    for (size_t i = 0; i < n; i++)
        buf[i] *= inv;
    return GL_OK;
}

int train_dist_sum(train_dist_t *d, double *vals, int n, gl_err_t *err)
{
    if (d->world == 1)
        return GL_OK;
    return check(MPI_Allreduce(MPI_IN_PLACE, vals, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce", err);
}

int train_dist_any_error(train_dist_t *d, int mine)
{
    if (d->world == 1)
        return mine != 0;
    int any = mine != 0;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return any;
}

void train_dist_barrier(train_dist_t *d)
{
    if (d->world > 1)
        MPI_Barrier(MPI_COMM_WORLD);
}
