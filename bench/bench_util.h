/* bench_util.h — small helpers the benchmarks share. */
#ifndef GL_BENCH_UTIL_H
#define GL_BENCH_UTIL_H

/* qsort comparator for doubles, ascending (medians and percentiles). */
static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
