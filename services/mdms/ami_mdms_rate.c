/*  ami_mdms_rate.c - token buckets (see ami_mdms_rate.h).

    Design. The classic token bucket, kept lazily: a bucket stores its
    tokens at the time it was last touched and is refilled on the next
    take from the time elapsed, so idle keys cost no work. Tokens are
    counted in thousandths so integer arithmetic is exact at any rate:
    rate tokens/s = rate milli-tokens/ms.
*/
#include "ami_mdms_rate.h"

#include <czmq.h>
#include <stdlib.h>

/*  Milli-tokens per token. */
#define S_UNIT  1000

typedef struct {
    int64_t tokens;                 /* milli-tokens at `touched` */
    int64_t touched;                /* mono ms */
} s_bucket_t;

struct _ami_mdms_rate_t {
    int64_t rate;                   /* tokens per second = milli-tokens per ms */
    int64_t cap;                    /* burst in milli-tokens */
    size_t max_buckets;
    zhashx_t *buckets;              /* key -> s_bucket_t */
};

static void
s_bucket_free (void **item)
{
    free (*item);
    *item = NULL;
}

ami_mdms_rate_t *
ami_mdms_rate_new (uint32_t rate, uint32_t burst, size_t max_buckets)
{
    if (rate > AMI_MDMS_RATE_MAX || burst > AMI_MDMS_RATE_MAX)
        return NULL;
    ami_mdms_rate_t *self = (ami_mdms_rate_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->rate = rate;
    self->cap = (int64_t) (burst ? burst : (rate ? rate : 1)) * S_UNIT;
    self->max_buckets = max_buckets ? max_buckets : AMI_MDMS_RATE_MAX_BUCKETS;
    self->buckets = zhashx_new ();
    if (!self->buckets) {
        free (self);
        return NULL;
    }
    zhashx_set_destructor (self->buckets, s_bucket_free);
    return self;
}

void
ami_mdms_rate_destroy (ami_mdms_rate_t **self_p)
{
    assert (self_p);
    ami_mdms_rate_t *self = *self_p;
    if (self) {
        zhashx_destroy (&self->buckets);
        free (self);
        *self_p = NULL;
    }
}

/*  Tokens of b at now, refilled and capped. */
static int64_t
s_level (ami_mdms_rate_t *self, s_bucket_t *b, int64_t now)
{
    int64_t elapsed = now - b->touched;
    if (elapsed <= 0)
        return b->tokens;
    //  Past the time to refill completely the product could only overflow
    if (elapsed >= self->cap / self->rate + 1)
        return self->cap;
    int64_t level = b->tokens + elapsed * self->rate;
    return level < self->cap ? level : self->cap;
}

void
ami_mdms_rate_sweep (ami_mdms_rate_t *self, int64_t now_ms)
{
    assert (self);
    if (!self->rate)
        return;
    zlistx_t *full = NULL;
    for (s_bucket_t *b = (s_bucket_t *) zhashx_first (self->buckets); b;
         b = (s_bucket_t *) zhashx_next (self->buckets))
        if (s_level (self, b, now_ms) == self->cap) {
            if (!full) {
                full = zlistx_new ();
                if (!full)
                    return;
                zlistx_set_duplicator (full, (zlistx_duplicator_fn *) strdup);
                zlistx_set_destructor (full, (zlistx_destructor_fn *) zstr_free);
            }
            zlistx_add_end (full, (void *) zhashx_cursor (self->buckets));
        }
    if (full) {
        for (const char *key = (const char *) zlistx_first (full); key;
             key = (const char *) zlistx_next (full))
            zhashx_delete (self->buckets, key);
        zlistx_destroy (&full);
    }
}

bool
ami_mdms_rate_take (ami_mdms_rate_t *self, const char *key, int64_t now_ms)
{
    assert (self && key);
    if (!self->rate)
        return true;
    s_bucket_t *b = (s_bucket_t *) zhashx_lookup (self->buckets, key);
    if (!b) {
        if (zhashx_size (self->buckets) >= self->max_buckets) {
            ami_mdms_rate_sweep (self, now_ms);
            if (zhashx_size (self->buckets) >= self->max_buckets)
                return false;           //  fail closed (see the header)
        }
        b = (s_bucket_t *) calloc (1, sizeof *b);
        if (!b || zhashx_insert (self->buckets, key, b)) {
            free (b);
            return false;
        }
        b->tokens = self->cap;
        b->touched = now_ms;
    }
    int64_t level = s_level (self, b, now_ms);
    if (now_ms > b->touched)
        b->touched = now_ms;
    if (level < S_UNIT) {
        b->tokens = level;
        return false;
    }
    b->tokens = level - S_UNIT;
    return true;
}

size_t
ami_mdms_rate_size (ami_mdms_rate_t *self)
{
    assert (self);
    return zhashx_size (self->buckets);
}

bool
ami_mdms_rate_limited (ami_mdms_rate_t *self)
{
    assert (self);
    return self->rate != 0;
}
