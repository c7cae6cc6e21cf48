/*  load_stats.h - latency samples, percentiles and error tallies for ami-load.

    Every latency is kept (no histogram buckets, no sampling), sorted once
    at the end, and the percentiles are read off the sorted array by the
    nearest-rank rule: p-th percentile = the smallest sample such that at
    least p % of the samples are <= it (so p100 is the maximum, and a
    percentile is always a value that was really measured). At 8 bytes a
    sample, a million reads cost 8 MB: cheap next to being exact.

    Error tallies count failures by kind: a name such as "AMI_E_TIMEOUT"
    (ami_errname of the code the MDMS reported) or a client-side kind
    ("NO_REPLY"). The table is small and linear: a run sees a handful of
    distinct kinds.

    Times: load_now_us is CLOCK_MONOTONIC in microseconds; load_now_ns the
    same in nanoseconds (the baseline's one-hop round trips are tens of
    microseconds, where microsecond rounding would show).
*/
#ifndef LOAD_STATS_H_INCLUDED
#define LOAD_STATS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t *values;            /* the samples (any unit; ami-load uses ns or µs) */
    size_t count;
    size_t cap;
    bool sorted;
} load_samples_t;

typedef struct {
    size_t count;
    int64_t min, max, p50, p90, p99;
    double mean;
} load_summary_t;

/*  Most distinct error kinds tallied (the last slot is "OTHER", for any
    kind beyond the first 31). */
#define LOAD_ERROR_KINDS    32

typedef struct {
    char name [48];
    uint64_t count;
} load_error_kind_t;

typedef struct {
    load_error_kind_t kinds [LOAD_ERROR_KINDS];
    size_t kind_count;
    uint64_t total;
} load_errors_t;

/*  Monotonic clock. */
int64_t
    load_now_us (void);
int64_t
    load_now_ns (void);

/*  Start with a zeroed load_samples_t ({0}); load_samples_add grows it.
    Returns 0, or -1 when out of memory (the sample is lost). */
int
    load_samples_add (load_samples_t *self, int64_t value);

/*  Free the samples; the struct is zeroed and may be reused. */
void
    load_samples_free (load_samples_t *self);

/*  Sort the samples (once) and fill *out. An empty set gives all zeros. */
void
    load_samples_summary (load_samples_t *self, load_summary_t *out);

/*  Nearest-rank percentile (0 < p <= 100) of the sorted samples; 0 if
    empty. Sorts first if needed. */
int64_t
    load_samples_percentile (load_samples_t *self, double p);

/*  Count one failure of this kind (name is copied, truncated to 47 bytes). */
void
    load_errors_add (load_errors_t *self, const char *name);

#endif
