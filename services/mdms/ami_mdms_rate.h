/*  ami_mdms_rate.h - token-bucket rate limits for on-demand reads
    (SEC-AVAIL-2), one table per kind of key (operator id, meter id).

    This header is the manual.

    Each key has a bucket of at most `burst` tokens that refills at `rate`
    tokens a second; a request takes one token or is refused at once
    (never queued: the MDMS answers ERROR AMI_E_RATE_LIMITED). A new key
    starts with a full bucket. rate 0 means unlimited: every take succeeds
    and no bucket is kept (benchmarks set the limits to 0).

    Bounded memory. A bucket that has refilled to `burst` is the same as
    no bucket at all, so it can be forgotten without changing any answer.
    The table holds at most max_buckets buckets; when it is full, buckets
    that have refilled are swept out first. If it is still full, every
    bucket in it has been used within the last burst / rate seconds - far
    more traffic than the limits let through for any sane bound - and the
    take is refused (fail closed: a flood of distinct keys must not reset
    other keys' buckets). ami_mdms_rate_sweep can also be called
    periodically to give memory back.

    Clocks: the caller passes a monotonic time in ms (zclock_mono).
    Threads: none; use from one thread.
*/
#ifndef AMI_MDMS_RATE_H_INCLUDED
#define AMI_MDMS_RATE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_mdms_rate_t ami_mdms_rate_t;

/*  65 536 buckets per table (about 100 bytes each: 6.5 MiB at most).
    Operators are bounded by the allow-list (tens to hundreds); meter
    buckets matter only until they refill (2 s at the default 2/s, burst
    4), so the table holds the meters read in the last two seconds: far
    below this bound at the operator limits (10/s each). */
#define AMI_MDMS_RATE_MAX_BUCKETS   65536

/*  Largest rate and burst accepted (a million a second is unlimited in
    all but name; keeps the token arithmetic far from overflow). */
#define AMI_MDMS_RATE_MAX           1000000

/*  Create a table: rate tokens/s (0 = unlimited, max AMI_MDMS_RATE_MAX),
    burst tokens (0 = rate, i.e. one second's worth; at least 1), at most
    max_buckets buckets (0 = AMI_MDMS_RATE_MAX_BUCKETS). Returns NULL on
    out of memory or an out-of-range argument. */
ami_mdms_rate_t *
    ami_mdms_rate_new (uint32_t rate, uint32_t burst, size_t max_buckets);

/*  Destroy; idempotent, nulls *self_p. */
void
    ami_mdms_rate_destroy (ami_mdms_rate_t **self_p);

/*  Take one token of key's bucket at monotonic time now_ms. Returns true
    if the request may go ahead, false if it is refused (bucket empty, or
    the table full of busy buckets, or out of memory). key is any NUL-
    terminated string (copied). */
bool
    ami_mdms_rate_take (ami_mdms_rate_t *self, const char *key, int64_t now_ms);

/*  Forget the buckets that have refilled by now_ms. */
void
    ami_mdms_rate_sweep (ami_mdms_rate_t *self, int64_t now_ms);

/*  Buckets held, and whether the table limits anything (rate != 0). */
size_t
    ami_mdms_rate_size (ami_mdms_rate_t *self);
bool
    ami_mdms_rate_limited (ami_mdms_rate_t *self);

#ifdef __cplusplus
}
#endif

#endif
