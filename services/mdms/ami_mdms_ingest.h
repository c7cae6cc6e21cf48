/*  ami_mdms_ingest.h - the MDMS's interval-data ingest: BATCH frames in,
    verified intervals durably in LMDB ("intervals", ami_mdms_db.h) exactly
    once per (meter, interval), BATCH_ACKs out.

    This header is the manual. The class owns no socket: the MDMS actor
    (ami_mdms.c) hands it every BATCH frame that arrives on its ingest
    ROUTER together with the routing id it came through, and sends the
    BATCH_ACK frames it is given back to those routing ids. So the whole
    ingest path can be driven (and measured) without ZeroMQ.

    Flow (PROTOCOL.md 4.8-4.10, 8.5; credit-based flow control, zguide
    chapter 7):

      ami_mdms_ingest_push    queue a BATCH frame (at most `queue` waiting;
                              the MDMS stops reading its ingest socket while
                              the queue is full, so the rest waits in
                              libzmq/TCP, bounded by the credit it granted)
      ami_mdms_ingest_run     one group commit: take batches from the queue
                              head (at most AMI_MDMS_GROUP_BATCHES, and
                              stop once the group holds `group_keys`
                              buckets), check every block, merge the good
                              ones into the group's buckets, write the
                              changed buckets in ONE ami_store batch (one
                              LMDB write transaction, one fsync), and only
                              after that commit is durable hand one
                              BATCH_ACK per batch to the ack callback.

    Per block [meter_id, seq, box], in this order (the first failure
    REJECTS the block for good: it is counted in blocks_rejected, reported
    to the reject callback with the reason, and nothing of it is stored;
    the batch is still acknowledged with status 0, since resending cannot
    fix it):
      1. meter in the registry                     else AMI_E_UNKNOWN_METER
      2. its profile key (ami_e2e_profile_key_mdms from the registered
         signing key and the MDMS box key; cached, see below)
                                                   else AMI_E_KEY
      3. box opens (ami_e2e_profile_open, which binds meter_id and seq)
                                                   else AMI_E_DECRYPT
      4. the plaintext decodes as a PROFILE        else the codec's code
      5. PROFILE meter_id and seq equal the block header's
                                                   else AMI_E_RANGE
      6. every end_s a non-zero multiple of the interval, strictly
         ascending, all within 96 consecutive intervals (a block covers at
         most one bucket's length, so it touches at most 2 buckets), and
         export_wh < 2^48                          else AMI_E_RANGE
      7. the buckets it touches load from the database with the layout of
         ami_mdms_db.h and open (their AEAD tag verifies under the meter
         data key, SEC-CONF-2)                     else AMI_E_STORAGE (the
         stored value is corrupt; logged as an error)
    Then every record goes to its (meter, bucket, slot): a free slot takes
    it (intervals_stored, once committed); a slot already present is left
    as it is (intervals_dup; if the values differ also intervals_conflict,
    warned at most AMI_MDMS_INGEST_LOG_BURST a second). That is the
    exactly-once rule: a resent batch, a batch that came through both head
    ends, or a block made twice is stored once and acknowledged every time.

    Failure of the group commit (AMI_E_MAP_FULL, AMI_E_STORAGE, AMI_E_IO,
    AMI_E_NOMEM, from a load, a put or the commit): the transaction is
    aborted, nothing of the group is stored, every batch of the group is
    acknowledged with that code and credit 0 (the sender keeps it and
    resends after AMI_BATCH_RETRY_MS), and it is logged. The next group
    starts afresh; once the cause is gone (a larger map), resent batches
    are stored.

    Credit (BATCH_ACK.credit, per origin): the queue may hold `queue`
    batches; each active origin (a BATCH from it within origin_ttl_ms) gets
    a fair share, queue / active origins, capped at AMI_CREDIT_INITIAL and
    at least 1; halved (at least 1) while the queue is more than half full
    after the group, and 0 while it is at least 3/4 full (a sender with
    credit 0 and nothing in flight probes with one batch after
    AMI_BATCH_RETRY_MS). So however many aggregators send,
    at most about `queue` batches wait for the MDMS, and they wait in the
    aggregators' custody buffers instead.

    Profile key cache. Deriving a meter's key costs two curve operations
    (~100 us: Ed25519 -> X25519 conversion and crypto_kx), opening a block
    ~1 us: keys are cached per meter in an open-addressing table allocated
    once for key_cache keys (0 = the registry size, at least 1024, at most
    AMI_MDMS_KEY_CACHE_MAX) at 4/3 x 72 bytes each: 9.6 MB for 100 000
    meters, flat whatever the traffic. Only registered meters enter it
    (the registry is imported at start and fixed while the MDMS runs, so a
    cached meter is a registered one); the keys are wiped on destroy.
    While the registry fits, each meter's key is derived exactly once
    (meters arrive in rounds, which would make an LRU-style cache that is
    too small miss every time); beyond that a new meter replaces the one
    at its home entry (key_cache_evictions). The first block of each meter
    pays the derivation: a 100 000-meter fleet costs ~10 s of CPU once.

    Encryption at rest (SEC-CONF-2): interval records are stored sealed
    (ami_mdms_db.h "intervals"); a group opens each bucket it loads once
    and seals each bucket it changed once (a fresh nonce per write), so
    merging costs ~3-4 us of CPU per changed bucket per group. Measured
    (test_mdms_ingest bench, 10 000 meters x 24 h of hourly blocks, the
    worst case since every block rewrites its own bucket; this 2-core VM,
    durable commits): 142-167 k blocks/s without encryption, 84-104 k
    with (CPU per block ~5 us -> ~9 us); the bytes per stored reading do
    not change (21.5 for that fill).

    Memory, all allocated by ami_mdms_ingest_new and never grown: the
    group's bucket table, (group_keys + 2 x AMI_MAX_BATCH_BLOCKS) x ~1.6
    KB (16 MB at the default), the key cache, three ami_msg_t (~100 KB
    each), the latency array of one group (16 384 x 8 bytes); plus the
    queued frames (at most `queue` x AMI_MAX_FRAME, typically ~150 KB
    each) and LMDB's dirty pages of one transaction (~4 KB per changed
    bucket). Nothing is allocated per block.

    Statistics (names as in the MDMS's API_STATUS row, ami_mdms_ingest_stats):
        batches_in          BATCH frames that decoded (duplicates included)
        blocks_in           blocks in them
        blocks_rejected     blocks refused by the checks above
        batches_failed      batches acknowledged with a non-zero status
        intervals_stored    slots newly committed since start
        intervals_dup       records whose slot was already present (committed groups)
        intervals_conflict  ... whose stored values differ from the new ones
        ingest_commits      durable group commits
        ingest_lat_p50_us   end-to-end latency, median, microseconds: durable
        ingest_lat_p99_us   commit time minus PROFILE.made_ms, per block that
        ingest_lat_max_us   stored at least one new interval, since start
                            (log-bucketed histogram: p50/p99 within ~6 %,
                            max exact; a meter clock ahead of the MDMS's
                            counts 0)
        ingest_backlog      batches queued now, waiting for a group commit
        ingest_malformed    queued frames that did not decode as a BATCH (dropped)
        key_cache_evictions profile keys dropped to make room (0 while the
                            registry fits in key_cache)
        ingest_throttled    BATCH_ACKs that slowed their sender: status 0
                            with credit 0 (stored, but the queue is at least
                            3/4 full) and AMI_E_BUSY refusals made by
                            ami_mdms_ingest_refuse (queue full). Back-pressure,
                            not failure: acks of a failed group commit
                            (credit 0 with an error status) are counted in
                            batches_failed only
    batches_in, blocks_in and blocks_rejected count what arrived (a batch
    of a failed group that is resent counts again); the interval counters
    and the latency only what was committed.

    Threads: none; use from one thread (the MDMS actor). The store's single
    write batch is opened and closed inside ami_mdms_ingest_run.
*/
#ifndef AMI_MDMS_INGEST_H_INCLUDED
#define AMI_MDMS_INGEST_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_e2e.h"
#include "ami_mdms_db.h"
#include "ami_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_mdms_ingest_t ami_mdms_ingest_t;

/*  15 minutes: the utility standard for load profiles (DESIGN.md §8). */
#define AMI_MDMS_INTERVAL_S         900
/*  Batches per group commit at most: a group of full batches is 16 384
    blocks, far into the regime where an fsync per transaction is
    amortised (DESIGN.md §8), and still ~0.1 s of work, so the actor gets
    back to operators and health quickly. */
#define AMI_MDMS_GROUP_BATCHES      16
/*  A group stops taking batches once it holds this many buckets (~one
    per block). Measured (test_mdms_ingest bench: 10 000 meters x 1 day,
    hourly blocks, durable commits, this 2-core VM; wall time is noisy
    because fsync is): 1 024 -> ~75 k blocks/s, 4 096 -> 97-160 k,
    8 192 -> 92-166 k, 16 384 -> 157-179 k; CPU per block falls from
    ~5 us to ~4 us. 8 192 keeps well above the 60 k blocks/s the chain
    needs with half the memory of 16 384 (table ~16 MB, LMDB dirty pages
    ~32 MB per transaction). */
#define AMI_MDMS_GROUP_KEYS         8192
/*  Batches waiting for a commit at most (the credit budget): 32 x ~150 KB
    typical frames (at most 32 x AMI_MAX_FRAME = 32 MiB); about 8 groups of
    work, so the actor always has a full group ready under load without
    holding much memory. ami-mdms: config mdms/ingest-queue. The MDMS also
    sizes its ingest socket's receive HWM from it (ami_mdms.h). */
#define AMI_MDMS_INGEST_QUEUE       32
/*  Largest queue accepted: 1024 x AMI_MAX_FRAME = 1 GiB of frames at
    worst (~150 MB typical); more buys nothing, since credit per sender is
    capped at AMI_CREDIT_INITIAL and a group takes at most
    AMI_MDMS_GROUP_BATCHES. */
#define AMI_MDMS_INGEST_QUEUE_MAX   1024
/*  Cap on cached profile keys: 2 M keys (~190 MB); larger registries
    evict. */
#define AMI_MDMS_KEY_CACHE_MAX      (2u << 20)
/*  The number of statistics ami_mdms_ingest_stats reports (the MDMS puts
    them in its own HEALTH/API_STATUS row, bounded by AMI_MAX_STATS). */
#define AMI_MDMS_INGEST_STATS       15
/*  Warnings (interval conflicts) per second at most. */
#define AMI_MDMS_INGEST_LOG_BURST   20

typedef struct {
    ami_mdms_db_t *db;              /* required, borrowed; interval and data key set up */
    const ami_e2e_mdms_t *keys;     /* required, with the box secret; copied */
    size_t key_cache;               /* cached profile keys, 0 = auto (see above) */
    size_t group_keys;              /* 0 = AMI_MDMS_GROUP_KEYS */
    size_t queue;                   /* 0 = AMI_MDMS_INGEST_QUEUE; at most
                                       AMI_MDMS_INGEST_QUEUE_MAX */
    int64_t origin_ttl_ms;          /* an origin is active this long after its
                                       last BATCH; 0 = 3 s (3 heartbeats) */
} ami_mdms_ingest_config_t;

/*  Called for every rejected block: origin of its batch, the block's
    meter id and seq as they came (meter_id is a valid id: the codec
    checked it), the reason code (see above) and a static text. */
typedef void (ami_mdms_ingest_reject_fn) (const char *origin, const char *meter_id,
                                          uint64_t seq, int code, const char *why,
                                          void *arg);

/*  Called once per batch of a group, in arrival order, after the group's
    commit (or its failure): routing is the frame given to push (borrowed:
    valid during the call), ack/len the encoded BATCH_ACK to send to it.
    status and credit are what the ack says. */
typedef void (ami_mdms_ingest_ack_fn) (zframe_t *routing, const uint8_t *ack, size_t len,
                                       uint16_t status, void *arg);

/*  Create the ingest. Allocates everything it will ever use (see
    "Memory"). Returns NULL with *err set (AMI_E_CONFIG: no interval set
    up on db, no data key on db, keys without secret, queue over
    AMI_MDMS_INGEST_QUEUE_MAX; AMI_E_NOMEM),
    logged. */
ami_mdms_ingest_t *
    ami_mdms_ingest_new (const ami_mdms_ingest_config_t *config, int *err);

/*  Destroy: queued frames are dropped unacknowledged (their senders
    resend after AMI_BATCH_ACK_TIMEOUT_MS), keys wiped. Idempotent; nulls
    *self_p. */
void
    ami_mdms_ingest_destroy (ami_mdms_ingest_t **self_p);

/*  Set the reject callback (NULL: none). */
void
    ami_mdms_ingest_set_reject (ami_mdms_ingest_t *self, ami_mdms_ingest_reject_fn *fn,
                                void *arg);

/*  Queue a BATCH frame (body: one frame holding the BATCH message, not
    yet decoded) that came through routing. Takes ownership of both frames
    and nulls the pointers. Returns false, leaving both with the caller,
    when the queue is full (check ami_mdms_ingest_full before reading). */
bool
    ami_mdms_ingest_push (ami_mdms_ingest_t *self, zframe_t **routing_p, zframe_t **body_p);

/*  True when push would refuse. */
bool
    ami_mdms_ingest_full (ami_mdms_ingest_t *self);

/*  Batches queued. */
size_t
    ami_mdms_ingest_backlog (ami_mdms_ingest_t *self);

/*  One group commit from the queue head (see above), calling fn (may be
    NULL) for each batch of the group. Returns the number of batches
    acknowledged (0 when the queue was empty or held only frames that do
    not decode, which are dropped and counted). */
size_t
    ami_mdms_ingest_run (ami_mdms_ingest_t *self, ami_mdms_ingest_ack_fn *fn, void *arg);

/*  Encode BATCH_ACK(batch_id, status, credit 0) for a BATCH frame the
    caller refuses without queueing it (queue full): into buf (cap >= 32),
    *len set. Returns AMI_OK, or the codec's error when body is not a
    BATCH (then no ack: the frame is malformed). */
int
    ami_mdms_ingest_refuse (ami_mdms_ingest_t *self, zframe_t *body, uint16_t status,
                            uint8_t *buf, size_t cap, size_t *len);

/*  The statistics listed above, in that order, into out (cap entries);
    *count set. */
void
    ami_mdms_ingest_stats (ami_mdms_ingest_t *self, ami_stat_t *out, size_t cap,
                           uint32_t *count);

/*  One statistic by name (UINT64_MAX for an unknown name). */
uint64_t
    ami_mdms_ingest_stat (ami_mdms_ingest_t *self, const char *name);

#ifdef __cplusplus
}
#endif

#endif
