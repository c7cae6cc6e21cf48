/*  load_stats.c - samples, nearest-rank percentiles, error tallies
    (see load_stats.h).
*/
#include "load_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t
load_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t
load_now_us (void)
{
    return load_now_ns () / 1000;
}

int
load_samples_add (load_samples_t *self, int64_t value)
{
    if (self->count == self->cap) {
        //  Doubling from 4096: a 10-second run at 20 k reads/s reallocates
        //  about 6 times.
        size_t cap = self->cap ? self->cap * 2 : 4096;
        int64_t *grown = realloc (self->values, cap * sizeof *grown);
        if (!grown)
            return -1;
        self->values = grown;
        self->cap = cap;
    }
    self->values [self->count++] = value;
    self->sorted = false;
    return 0;
}

void
load_samples_free (load_samples_t *self)
{
    free (self->values);
    memset (self, 0, sizeof *self);
}

static int
s_compare (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static void
s_sort (load_samples_t *self)
{
    if (!self->sorted && self->count > 1)
        qsort (self->values, self->count, sizeof *self->values, s_compare);
    self->sorted = true;
}

int64_t
load_samples_percentile (load_samples_t *self, double p)
{
    if (self->count == 0)
        return 0;
    s_sort (self);
    //  Nearest rank: the ceil(p/100 * n)-th smallest (1-based).
    double rank = ceil (p / 100.0 * (double) self->count);
    size_t index = rank < 1 ? 0 : (size_t) rank - 1;
    if (index >= self->count)
        index = self->count - 1;
    return self->values [index];
}

void
load_samples_summary (load_samples_t *self, load_summary_t *out)
{
    memset (out, 0, sizeof *out);
    if (self->count == 0)
        return;
    s_sort (self);
    out->count = self->count;
    out->min = self->values [0];
    out->max = self->values [self->count - 1];
    out->p50 = load_samples_percentile (self, 50);
    out->p90 = load_samples_percentile (self, 90);
    out->p99 = load_samples_percentile (self, 99);
    double sum = 0;
    for (size_t i = 0; i < self->count; i++)
        sum += (double) self->values [i];
    out->mean = sum / (double) self->count;
}

void
load_errors_add (load_errors_t *self, const char *name)
{
    self->total++;
    for (size_t i = 0; i < self->kind_count; i++)
        if (strcmp (self->kinds [i].name, name) == 0) {
            self->kinds [i].count++;
            return;
        }
    //  The last slot is kept for "OTHER", so no count is ever lost.
    if (self->kind_count >= LOAD_ERROR_KINDS - 1) {
        name = "OTHER";
        for (size_t i = 0; i < self->kind_count; i++)
            if (strcmp (self->kinds [i].name, name) == 0) {
                self->kinds [i].count++;
                return;
            }
    }
    load_error_kind_t *kind = &self->kinds [self->kind_count++];
    snprintf (kind->name, sizeof kind->name, "%s", name);
    kind->count = 1;
}
