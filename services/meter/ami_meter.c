/*  ami_meter.c - the meter fleet simulator: many meters, one DEALER.

    Design. One CZMQ actor owns one DEALER (CURVE client) connected to the
    aggregator's ROUTER: the zguide's "asynchronous client" shape, where the
    DEALER may have many requests in flight and answers go out as soon as
    they are ready. Meters live in one flat array indexed by meter number -
    first, so finding a meter is arithmetic, not a lookup.

    Each wake-up drains up to AMI_METER_BATCH frames. READ_REQs that pass
    every check (the cheap ones first: target, counter, time window,
    counter jump; then the signature against the accepted MDMS keys) are
    collected; at the end of the drain their counters and register
    snapshots are written in one durable LMDB transaction (group commit),
    and only then are the readings sampled, padded to one fixed length,
    sealed, signed and sent; a failed commit refuses the whole burst with
    AMI_E_STORAGE. Refusals need no write and go out at once, those of
    unverified commands only while a token bucket (SEC-AVAIL-3) allows.
    See ami_meter.h for the contract.

    Interval data (ami_meter.h "Interval data"): the same loop also runs
    the load-profile producer. Production is pull-driven by credit - the
    zguide's credit-based flow control (chapter 7): a batch is built only
    when it may be sent, one per wake-up, so the fleet never buffers more
    than its credit and reads are served between batches. Every batch
    stays in an outbox (a short list: at most credit entries) with one
    timer each: in flight, its ack deadline; refused, its retry time. The
    poll timeout is the earliest timer that the credit would let act on,
    so a fleet waiting for acks sleeps, and a flooding one never sleeps.
    Nothing is allocated per block: blocks are sealed into one arena, the
    BATCH is encoded once into a scratch frame, and one allocation per
    batch holds it until its ack.

    Load-profile recovery (SEC-INT-5, ami_meter.h "Recovery"): an
    accepted READ_REQ with a range queues a job after its commit; jobs
    rebuild the meter's intervals with a fresh profile model from `start`
    (the physics is deterministic) and feed the same batch builder, ahead
    of new production, within a budget of model steps per wake-up, so a
    long range is produced in slices and reads are served in between.

    Clock: zclock_mono for the heartbeat, batch timers and the profile
    clock's pace, zclock_time (+ the configured offset) for command
    windows, readings and blocks' made_ms.
*/
#include "ami_meter.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_service.h"
#include "ami_store.h"

/*  Warnings about bad input: at most this many per window, the rest are
    counted and summarised, so a hostile peer cannot flood the log. */
#define S_LOG_BURST         20
/*  Outgoing queue to the aggregator. 1000 messages hold several seconds of
    answers and heartbeats while the link is down (they are stale after
    that: the MDMS retries); a full HELLO round is added on top so a large
    fleet's introduction never fills it on its own. */
#define S_SNDHWM_BASE       1000
/*  Incoming queue from the aggregator: READ_REQs (< 300 bytes), BATCH_ACKs
    (~20 bytes) and HELLOs (< 100 bytes): 1000 frames are < 300 KiB, many
    passes of the actor's loop. At the bound libzmq stops reading, and the
    aggregator's own bounded queue to this fleet refuses (busy,
    acks_failed there). */
#define S_RCVHWM            1000
/*  ZMTP heartbeats on the link: a silent half-open TCP connection (a
    pole-top node that lost power) is noticed after 3 intervals and the
    DEALER reconnects. */
#define S_ZMTP_LIVENESS     3
/*  Encode buffer: a full HELLO chunk (1024 ids of <= 33 bytes, about
    35 KiB) is the largest thing the fleet sends; 64 KiB holds it. */
#define S_BUF_SIZE          (64 * 1024)
/*  LMDB map: 16 MiB of base plus 256 bytes per meter. A counter entry is
    4 + 8 bytes and a snapshot 4 + 48 bytes, each with an 8-byte node
    header, on pages that random-order writes leave half full: about 160
    bytes per meter, so 256 leaves headroom. It reserves address space,
    not memory. */
#define S_MAP_BASE          ((size_t) 16 << 20)
#define S_MAP_PER_METER     256
/*  Register snapshot on disk (see ami_meter.h). */
#define S_SNAPSHOT_SIZE     48
/*  Copies of one batch sent while nothing at all was heard from the
    aggregator: the first send and one resend at the ack timeout. While
    the link is down the DEALER queues what is sent (up to its HWM), so
    resending every 10 s into a dead link would pile up hundreds of
    ~1 MiB copies; a live aggregator that lost a batch is heard (acks,
    reads, or its HELLO when the connection is new to it), which allows
    the next resend. */
#define S_QUIET_COPIES      2
/*  Upper bounds of encoded sizes (msgpack), used to keep a BATCH under
    AMI_BATCH_MAX_BYTES while it is built, without encoding it twice:
    BATCH header = array + version + type + u64 batch_id + str8 origin
    (<= 32 bytes) + array16 of blocks; a block around its box = array +
    str8 meter id + u64 seq + bin16 header; a PROFILE at most
    AMI_PROFILE_MAX_ENCODED. */
#define S_BATCH_HEAD        (1 + 1 + 1 + 9 + 2 + AMI_MAX_ID + 3)
/*  SEC-INT-5: model steps (AMI_METER_STEP_S each) that recovery jobs may
    run per wake-up, all jobs together. A step costs ~15-20 ns on the
    reference VM, so 100 000 steps (69 days of one meter's profile time)
    keep a wake-up within ~2 ms: a recovery whose meter started long ago
    is rebuilt over several wake-ups, with reads and acks served between
    them. */
#define S_RECOVER_STEPS     100000
#define S_BLOCK_FRAME(id, box) (1 + 2 + (id) + 9 + 3 + (box))

typedef struct {
    ami_meter_model_t model;    /* the meter's physics, for on-demand reads */
    ami_meter_model_t profile;  /* the same physics on the profile clock */
    uint64_t last_counter;      /* last accepted command counter (persisted) */
    uint8_t sk [AMI_E2E_SIGN_SK_SIZE];  /* derived on first use */
    uint8_t profile_key [AMI_E2E_PROFILE_KEY_SIZE];     /* derived on first use */
    bool has_key;
    bool has_profile_key;
} meter_t;

/*  A BATCH the fleet built and holds until the aggregator takes custody
    (BATCH_ACK status 0). Header and encoded frame in one allocation. */
typedef struct s_batch {
    struct s_batch *next;       /* outbox order: oldest first */
    uint64_t id;                /* batch_id */
    uint64_t readings;          /* intervals it carries */
    int64_t due;                /* zclock_mono: in flight, the ack deadline;
                                   waiting, when it may be sent again */
    uint32_t sends;             /* successful transmissions so far */
    uint32_t quiet;             /* of which since the aggregator was last heard */
    uint64_t heard_at;          /* fleet's `heard` at the last transmission */
    uint64_t recovered;         /* intervals sent again (SEC-INT-5), not in `readings` */
    bool inflight;              /* sent, its ack not yet received */
    size_t size;
    uint8_t data [];            /* the encoded BATCH, resent byte for byte */
} batch_t;

typedef struct {
    uint32_t slot;              /* meter number - first */
    ami_read_req_t req;         /* the accepted command */
} accepted_t;

/*  SEC-INT-5: one meter's intervals to send again, rebuilt by a model of
    its own that runs from the profile start (ami_meter.h "Recovery"). */
typedef struct {
    uint32_t slot;
    ami_meter_model_t model;    /* the meter's profile physics, rebuilt */
    int64_t next_end;           /* next interval end to record */
    int64_t last_end;           /* last one to send (inclusive) */
    uint32_t count;             /* records of the block being gathered */
    ami_interval_t records [AMI_MAX_PROFILE_RECORDS];
} recover_t;

typedef struct {
    zsock_t *pipe;              /* actor pipe, borrowed */
    zsock_t *dealer;            /* link to the aggregator */
    ami_store_t *store;
    unsigned counters_db;
    unsigned registers_db;
    char node_id [AMI_MAX_ID + 1];
    uint32_t first;
    uint32_t count;
    uint8_t seed [AMI_E2E_SEED_SIZE];
    ami_meter_keys_t keys;      /* MDMS signing keys accepted (SEC-KEY-2) */
    size_t key_hint;            /* index of the key that verified last */
    char *mdms_pub;             /* directory of the keys, or NULL (fixed set) */
    uint8_t keys_stamp [AMI_METER_KEYS_STAMP_SIZE];    /* of the last load */
    int64_t next_keys_check;    /* zclock_mono */
    char keys_problem [AMI_METER_KEYS_PROBLEM_MAX];     /* last one logged */
    uint8_t box_pk [AMI_E2E_BOX_KEY_SIZE];
    int heartbeat_ms;
    int64_t clock_offset_ms;
    uint64_t max_counter_jump;  /* SEC-INT-2: largest step above the last counter */
    size_t reading_block;       /* SEC-CONF-3: padded size of every READING */
    bool store_failing;         /* the last commit failed: HEALTH says DEGRADED */
    bool crash_after_commit;    /* test hook "CRASH-AFTER-COMMIT" armed */
    meter_t *meters;            /* count entries */
    ami_msg_t *in;              /* decoded input */
    ami_msg_t *out;             /* message being encoded */
    uint8_t *buf;               /* S_BUF_SIZE bytes: encoded output */
    uint8_t plain [AMI_MAX_SEALED];     /* encoded READING */
    uint8_t sealed [AMI_MAX_SEALED];    /* sealed READING */
    accepted_t batch [AMI_METER_BATCH];
    size_t batch_size;
    int64_t started;            /* zclock_mono at start */
    int64_t next_heartbeat;     /* zclock_mono */
    uint64_t reads, refused, unreachable, malformed, dropped;
    uint64_t store_errors;      /* failed commits of the state store */
    /* SEC-AVAIL-3: token bucket of signed refusals, in thousandths of a
       token (rate tokens/s = rate thousandths/ms, so integer arithmetic) */
    uint32_t refusal_rate;
    uint32_t refusal_burst;
    int64_t refusal_budget;     /* thousandths of a token held */
    int64_t refusal_refilled;   /* zclock_mono of the last refill */
    uint64_t refusals_dropped;
    ami_log_limit_t drop_limit; /* one line a second about drops */
    bool dropping;              /* the last send was dropped */
    ami_log_limit_t warn_limit; /* warnings about peers' input (ami_log.h) */
    bool terminated;

    /* load profile (interval data): see the "Load profile" section */
    bool profile_enabled;
    bool producing;             /* enabled, not stopped, limit not reached */
    uint32_t interval_s;
    uint32_t block;
    uint32_t time_scale;        /* simulated s per wall s; 0 = flood */
    uint64_t limit;             /* intervals per meter; 0 = none */
    int ack_timeout_ms;
    int64_t sim_origin_s;       /* simulated time (Unix s) at mono_origin */
    int64_t mono_origin;        /* zclock_mono when the profile clock started */
    int64_t pclock;             /* P: start of the current round, Unix s */
    uint64_t made_per_meter;    /* intervals per meter of completed rounds */
    uint32_t round_n;           /* intervals in the current round */
    uint32_t cursor;            /* next meter slot of the current round */
    ami_msg_t *pmsg;            /* the PROFILE being encoded */
    ami_msg_t *bmsg;            /* the BATCH being built */
    uint8_t *arena;             /* AMI_BATCH_MAX_BYTES: its blocks' boxes */
    uint8_t *frame;             /* AMI_MAX_FRAME: the BATCH encoded */
    batch_t *outbox;            /* unacknowledged batches, oldest first */
    batch_t *outbox_tail;
    uint32_t unacked;           /* batches in the outbox */
    uint32_t inflight;          /* of which sent and awaiting their ack */
    uint32_t credit;            /* last credit granted (capped) */
    int64_t probe_at;           /* zclock_mono: with credit 0, probe from then */
    uint64_t next_batch_id;
    uint64_t heard;             /* frames received from the aggregator */
    uint64_t profile_blocks, profile_readings, profile_acked;
    uint64_t batches_sent, batches_resent;

    /* load-profile recovery (SEC-INT-5): a ring of jobs, oldest first */
    int64_t pstart;             /* the profile clock's first value: `start` */
    uint64_t model_seed;        /* ami_meter_model_seed of the fleet secret */
    int64_t retain_s;           /* profile time kept for recovery */
    recover_t *jobs;            /* AMI_METER_RECOVER_JOBS entries */
    uint32_t jobs_head;
    uint32_t jobs_count;
    uint64_t profile_recovered; /* intervals put in a batch again */
    uint64_t recover_clipped;   /* intervals asked for, not produced or not kept */
    uint64_t recover_busy;      /* ranges not taken: AMI_METER_RECOVER_JOBS pending */
} fleet_t;


/* ---------------------------------------------------------------------- */
/*  Small helpers                                                           */

static void
s_warn (fleet_t *self, const char *format, ...) CHECK_PRINTF (2);

static void
s_warn (fleet_t *self, const char *format, ...)
{
    if (!self->warn_limit.burst)
        self->warn_limit.burst = S_LOG_BURST;
    char prefix [64];
    snprintf (prefix, sizeof prefix, "fleet %s", self->node_id);
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (&self->warn_limit, prefix, format, args);
    va_end (args);
}

static void
s_put_be32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) (v >> 24); p [1] = (uint8_t) (v >> 16);
    p [2] = (uint8_t) (v >> 8);  p [3] = (uint8_t) v;
}

static void
s_put_be64 (uint8_t *p, uint64_t v)
{
    s_put_be32 (p, (uint32_t) (v >> 32));
    s_put_be32 (p + 4, (uint32_t) v);
}

static uint32_t
s_get_be32 (const uint8_t *p)
{
    return (uint32_t) p [0] << 24 | (uint32_t) p [1] << 16 | (uint32_t) p [2] << 8 | p [3];
}

static uint64_t
s_get_be64 (const uint8_t *p)
{
    return (uint64_t) s_get_be32 (p) << 32 | s_get_be32 (p + 4);
}

static uint64_t
s_now_ms (fleet_t *self)
{
    int64_t now = zclock_time () + self->clock_offset_ms;
    return now > 0 ? (uint64_t) now : 0;
}

uint64_t
ami_meter_model_seed (const uint8_t seed [AMI_E2E_SEED_SIZE])
{
    /* keyed BLAKE2b: the fleet secret is the key, a fixed label the
       message; 16 bytes is the smallest output crypto_generichash allows */
    static const char label [] = "ami-meter-model";
    uint8_t out [crypto_generichash_BYTES_MIN];
    crypto_generichash (out, sizeof out, (const uint8_t *) label, sizeof label - 1,
                        seed, AMI_E2E_SEED_SIZE);
    return s_get_be64 (out);
}

/*  The meter's slot for a meter id, or -1 if the id is not one of ours
    (including non-canonical spellings of one of our numbers). */
static int64_t
s_slot (fleet_t *self, const char *meter_id)
{
    uint32_t index = ami_meter_id_parse (meter_id);
    if (index < self->first || index - self->first >= self->count)
        return -1;
    char canonical [AMI_MAX_ID + 1];
    ami_meter_id_format (index, canonical);
    if (strcmp (canonical, meter_id) != 0)
        return -1;
    return (int64_t) (index - self->first);
}

static const uint8_t *
s_meter_key (fleet_t *self, uint32_t slot)
{
    meter_t *meter = &self->meters [slot];
    if (!meter->has_key) {
        uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
        ami_e2e_meter_keypair (self->seed, self->first + slot, pk, meter->sk);
        meter->has_key = true;
    }
    return meter->sk;
}

/*  Send one encoded frame without blocking; a full queue drops it. */
static void
s_send (fleet_t *self, const uint8_t *data, size_t size, const char *what)
{
    if (zmq_send (zsock_resolve (self->dealer), data, size, ZMQ_DONTWAIT) == -1) {
        /* log the change of state, not every frame: a long outage would
           otherwise log once per heartbeat */
        if (!self->dropping)
            ami_log_warn ("fleet %s: link to the aggregator is full or down (%s): "
                          "dropping frames, starting with a %s", self->node_id,
                          zmq_strerror (zmq_errno ()), what);
        self->dropping = true;
        self->dropped++;
    }
    else
    if (self->dropping) {
        ami_log_info ("fleet %s: link to the aggregator accepts frames again "
                      "(%" PRIu64 " dropped so far)", self->node_id, self->dropped);
        self->dropping = false;
    }
}


/*  1 when production has stopped (limit, PROFILE-STOP, or never enabled)
    and every batch made has been acknowledged with status 0. */
static bool
s_profile_done (const fleet_t *self)
{
    return !self->producing && self->unacked == 0 && self->jobs_count == 0;
}


/* ---------------------------------------------------------------------- */
/*  Outgoing messages                                                       */

static void
s_send_hello (fleet_t *self)
{
    uint32_t sent = 0;
    while (sent < self->count) {
        ami_msg_reset (self->out, AMI_MSG_HELLO);
        ami_hello_t *hello = &self->out->hello;
        snprintf (hello->role, sizeof hello->role, "meter");
        snprintf (hello->node_id, sizeof hello->node_id, "%s", self->node_id);
        uint32_t chunk = self->count - sent;
        if (chunk > AMI_MAX_HELLO_METERS)
            chunk = AMI_MAX_HELLO_METERS;
        for (uint32_t i = 0; i < chunk; i++)
            ami_meter_id_format (self->first + sent + i, hello->meters [i]);
        hello->meter_count = chunk;
        size_t len = 0;
        int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
        assert (rc == AMI_OK);      /* ids are ours and valid: a bug otherwise */
        s_send (self, self->buf, len, "HELLO");
        sent += chunk;
    }
    ami_log_debug ("fleet %s: HELLO sent (%u meters)", self->node_id, self->count);
}

static void
s_send_health (fleet_t *self)
{
    ami_msg_reset (self->out, AMI_MSG_HEALTH);
    ami_health_t *health = &self->out->health;
    snprintf (health->role, sizeof health->role, "meter");
    snprintf (health->node_id, sizeof health->node_id, "%s", self->node_id);
    /* serving, but every command is refused until the store works again */
    health->state = self->store_failing ? AMI_STATE_DEGRADED : AMI_STATE_READY;
    health->uptime_ms = (uint64_t) (zclock_mono () - self->started);
    const struct { const char *name; uint64_t value; } stats [] = {
        { "meters", self->count },
        { "reads", self->reads },
        { "refused", self->refused },
        { "unreachable", self->unreachable },
        { "malformed", self->malformed },
        { "dropped", self->dropped },
        { "profile_blocks", self->profile_blocks },
        { "profile_readings", self->profile_readings },
        { "profile_acked", self->profile_acked },
        { "profile_clock", self->profile_enabled ? (uint64_t) self->pclock : 0 },
        { "batches_sent", self->batches_sent },
        { "batches_resent", self->batches_resent },
        { "batches_inflight", self->unacked },
        { "profile_done", s_profile_done (self) },
        { "store_errors", self->store_errors },
        { "refusals_dropped", self->refusals_dropped },
        { "mdms_keys", self->keys.count },
        { "credit", self->credit },
        { "profile_recovered", self->profile_recovered },
        { "recover_clipped", self->recover_clipped },
        { "recover_busy", self->recover_busy },
        { "recover_pending", self->jobs_count },
    };
    for (size_t i = 0; i < sizeof stats / sizeof stats [0]; i++) {
        snprintf (health->stats [i].name, sizeof health->stats [i].name, "%s", stats [i].name);
        health->stats [i].value = stats [i].value;
    }
    health->stat_count = sizeof stats / sizeof stats [0];
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
    assert (rc == AMI_OK);
    s_send (self, self->buf, len, "HEALTH");
}

/*  READ_RESP from meter `slot`, signed with its key. sealed may be NULL
    (a refusal: status != 0). */
static void
s_send_read_resp (fleet_t *self, uint32_t slot, const ami_read_req_t *req,
                  uint16_t status, const uint8_t *sealed, size_t sealed_size)
{
    ami_msg_reset (self->out, AMI_MSG_READ_RESP);
    ami_read_resp_t *resp = &self->out->read_resp;
    ami_meter_id_format (self->first + slot, resp->meter_id);
    memcpy (resp->request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    resp->status = status;
    resp->sealed = sealed;
    resp->sealed_size = sealed ? sealed_size : 0;
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
    assert (rc == AMI_OK);      /* sizes are bounded by our own buffers */
    rc = ami_e2e_sign (self->buf, len, s_meter_key (self, slot));
    assert (rc == AMI_OK);
    s_send (self, self->buf, len, "READ_RESP");
}

static void
s_refuse (fleet_t *self, uint32_t slot, const ami_read_req_t *req, int code)
{
    char rid [2 * AMI_REQUEST_ID_SIZE + 1];
    self->refused++;
    s_warn (self, "meter %s refused request %s (counter %" PRIu64 "): %s",
            req->meter_id, ami_request_id_format (req->request_id, rid),
            req->counter, ami_strerror (code));
    s_send_read_resp (self, slot, req, (uint16_t) code, NULL, 0);
}

/*  SEC-AVAIL-3: take one token from the refusal budget, refilled at
    refusal_rate a second up to refusal_burst. False: none left. */
static bool
s_budget_take (fleet_t *self)
{
    int64_t now = zclock_mono ();
    int64_t elapsed = now - self->refusal_refilled;
    if (elapsed > 0) {
        int64_t cap = (int64_t) self->refusal_burst * 1000;
        /* capped before the multiplication: a fleet idle for years must
           not overflow */
        int64_t add = elapsed > cap ? cap * (int64_t) self->refusal_rate
                                    : elapsed * (int64_t) self->refusal_rate;
        self->refusal_budget = add >= cap - self->refusal_budget ? cap
                                                                 : self->refusal_budget + add;
        self->refusal_refilled = now;
    }
    if (self->refusal_budget < 1000)
        return false;
    self->refusal_budget -= 1000;
    return true;
}

/*  Refuse a command that was not verified and fresh (ami_meter.h "Refusal
    budget"): a signed refusal while the budget lasts, else nothing at all
    (counted, and logged at most once a second with a count of the rest). */
static void
s_refuse_budgeted (fleet_t *self, uint32_t slot, const ami_read_req_t *req, int code)
{
    if (s_budget_take (self)) {
        s_refuse (self, slot, req, code);
        return;
    }
    self->refusals_dropped++;
    char prefix [64], rid [2 * AMI_REQUEST_ID_SIZE + 1];
    snprintf (prefix, sizeof prefix, "fleet %s", self->node_id);
    ami_log_warn_limited (&self->drop_limit, prefix,
                          "over the refusal budget (%u/s, burst %u): request %s for meter %s "
                          "dropped unanswered (%s); %" PRIu64 " dropped so far",
                          self->refusal_rate, self->refusal_burst,
                          ami_request_id_format (req->request_id, rid), req->meter_id,
                          ami_strerror (code), self->refusals_dropped);
}

static void
s_send_unreachable (fleet_t *self, const ami_read_req_t *req)
{
    char rid [2 * AMI_REQUEST_ID_SIZE + 1];
    self->unreachable++;
    ami_log_info ("fleet %s: request %s for meter %s, which is not in this fleet",
                  self->node_id, ami_request_id_format (req->request_id, rid), req->meter_id);
    ami_msg_reset (self->out, AMI_MSG_ERROR);
    ami_error_t *error = &self->out->error;
    error->has_request_id = true;
    memcpy (error->request_id, req->request_id, AMI_REQUEST_ID_SIZE);
    error->code = AMI_E_UNREACHABLE;
    snprintf (error->origin, sizeof error->origin, "%s", self->node_id);
    snprintf (error->text, sizeof error->text, "meter %s is not in fleet %s",
              req->meter_id, self->node_id);
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, S_BUF_SIZE, &len);
    assert (rc == AMI_OK);
    s_send (self, self->buf, len, "ERROR");
}


/* ---------------------------------------------------------------------- */
/*  Reads                                                                   */

static void
s_snapshot (const ami_meter_model_t *model, uint8_t out [S_SNAPSHOT_SIZE])
{
    s_put_be64 (out, (uint64_t) model->clock_s);
    s_put_be64 (out + 8, model->import_wh [0]);
    s_put_be64 (out + 16, model->import_wh [1]);
    s_put_be64 (out + 24, model->export_wh [0]);
    s_put_be64 (out + 32, model->export_wh [1]);
    s_put_be32 (out + 40, model->residue_mwh_i);
    s_put_be32 (out + 44, model->residue_mwh_e);
}

/*  Answer one accepted command with a sealed reading. The model has
    already been advanced to now_ms (and that state persisted), so the
    sample's energy equals the snapshot on disk. The READING is padded to
    reading_block before sealing (SEC-CONF-3): every sealed reading of this
    fleet has the same length, whatever its registers hold. */
static bool
s_answer (fleet_t *self, const accepted_t *acc, uint64_t now_ms)
{
    meter_t *meter = &self->meters [acc->slot];
    ami_msg_reset (self->out, AMI_MSG_READING);
    ami_reading_t *reading = &self->out->reading;
    ami_meter_model_sample (&meter->model, acc->req.meter_id, now_ms, reading);
    memcpy (reading->request_id, acc->req.request_id, AMI_REQUEST_ID_SIZE);
    size_t plain_len = 0, sealed_len = 0;
    int rc = ami_msg_encode (self->out, self->plain,
                             sizeof self->plain - AMI_E2E_SEAL_OVERHEAD, &plain_len);
    if (rc == AMI_OK)
        rc = ami_e2e_seal_padded (self->plain, plain_len, self->reading_block, self->box_pk,
                                  self->sealed, sizeof self->sealed, &sealed_len);
    sodium_memzero (self->plain, plain_len);
    /* reading_block is the largest READING this register count encodes
       to (s_reading_block): a longer one is a bug, and would leak */
    assert (rc != AMI_OK || sealed_len == self->reading_block + AMI_E2E_SEAL_OVERHEAD);
    if (rc != AMI_OK) {
        /* cannot happen with 19 registers; refuse rather than send less */
        ami_log_error ("fleet %s: cannot seal reading of %s: %s",
                       self->node_id, acc->req.meter_id, ami_strerror (rc));
        s_refuse (self, acc->slot, &acc->req, AMI_E_INTERNAL);
        return false;
    }
    self->reads++;
    if (ami_log_enabled (AMI_LOG_DEBUG)) {
        char rid [2 * AMI_REQUEST_ID_SIZE + 1];
        zsys_debug ("fleet %s: meter %s read for request %s (counter %" PRIu64 ")",
                    self->node_id, acc->req.meter_id,
                    ami_request_id_format (acc->req.request_id, rid), acc->req.counter);
    }
    s_send_read_resp (self, acc->slot, &acc->req, AMI_OK, self->sealed, sealed_len);
    return true;
}

static void
    s_recover_queue (fleet_t *self, const accepted_t *acc);

/*  Persist every accepted command of the batch in one transaction, then
    answer them all (or refuse them all if the write failed). */
static void
s_flush (fleet_t *self)
{
    if (self->batch_size == 0 || self->terminated)
        return;
    uint64_t now_ms = s_now_ms (self);
    int err = 0;
    ami_store_batch_t *batch = ami_store_batch_begin (self->store, &err);
    for (size_t i = 0; batch && i < self->batch_size; i++) {
        accepted_t *acc = &self->batch [i];
        meter_t *meter = &self->meters [acc->slot];
        uint8_t key [4], counter [8], snapshot [S_SNAPSHOT_SIZE];
        s_put_be32 (key, self->first + acc->slot);
        s_put_be64 (counter, acc->req.counter);
        ami_meter_model_advance (&meter->model, (int64_t) (now_ms / 1000));
        s_snapshot (&meter->model, snapshot);
        int rc = ami_store_batch_put (batch, self->counters_db, key, sizeof key,
                                      counter, sizeof counter, 0);
        if (rc == AMI_OK)
            rc = ami_store_batch_put (batch, self->registers_db, key, sizeof key,
                                      snapshot, sizeof snapshot, 0);
        if (rc != AMI_OK) {
            err = rc;
            break;
        }
    }
    if (batch && err == AMI_OK)
        err = ami_store_batch_commit (&batch);
    else
        ami_store_batch_abort (&batch);
    if (err != AMI_OK) {
        /* SEC-FAIL-1: what was not recorded is not answered: each command
           gets a signed AMI_E_STORAGE refusal, nothing sealed. The counters
           stay advanced in memory, which only makes the meter stricter (a
           refused command resent is a replay; the MDMS resends with a new
           counter). One error line when the store starts failing, then
           warnings at most S_LOG_BURST a second: commands from the network
           must not flood the log of a full disk. */
        self->store_errors++;
        if (!self->store_failing)
            ami_log_error ("fleet %s: state store failing: cannot persist %zu command "
                           "counters (%s): %s; refusing commands with %s until it works",
                           self->node_id, self->batch_size, ami_strerror (err),
                           ami_store_last_error (self->store), ami_errname (AMI_E_STORAGE));
        else
            s_warn (self, "state store still failing (%s): %zu commands refused",
                    ami_strerror (err), self->batch_size);
        self->store_failing = true;
        for (size_t i = 0; i < self->batch_size; i++)
            s_refuse (self, self->batch [i].slot, &self->batch [i].req, AMI_E_STORAGE);
    }
    else
    if (self->crash_after_commit) {
        /* test hook (SEC-INT-2): die here, between the durable commit and
           the answers, as a crash would; nothing more is sent or written */
        ami_log_warn ("fleet %s: CRASH-AFTER-COMMIT: stopping after the commit of %zu "
                      "commands, before answering them", self->node_id, self->batch_size);
        self->terminated = true;
    }
    else {
        if (self->store_failing)
            ami_log_info ("fleet %s: state store works again (%" PRIu64 " failed commits)",
                          self->node_id, self->store_errors);
        self->store_failing = false;
        for (size_t i = 0; i < self->batch_size; i++)
            if (s_answer (self, &self->batch [i], now_ms)
            &&  (self->batch [i].req.profile_from_s || self->batch [i].req.profile_to_s))
                s_recover_queue (self, &self->batch [i]);
    }
    self->batch_size = 0;
}

static void
s_handle_read_req (fleet_t *self, const uint8_t *data, size_t size)
{
    const ami_read_req_t *req = &self->in->read_req;
    int64_t slot = s_slot (self, req->meter_id);
    if (slot < 0) {
        s_send_unreachable (self, req);
        return;
    }
    meter_t *meter = &self->meters [slot];
    /* SEC-AVAIL-3: the cheap checks first (the frame's sizes were checked
       by the decoder, the meter is ours); a signature verification only
       for a command that could be acted on */
    int rc = ami_e2e_check_command (req, req->meter_id, meter->last_counter, s_now_ms (self));
    if (rc == AMI_OK && meter->last_counter > 0
    &&  req->counter - meter->last_counter > self->max_counter_jump) {
        /* SEC-INT-2: a counter far above the last one would, accepted,
           leave the meter refusing every genuine command until the MDMS
           counter caught up (with a stolen signing key: counter 2^64-1,
           for ever). Not a replay: a new counter would not help, so the
           MDMS must not resend; AMI_E_RANGE ends the read at once. A meter
           that never accepted a command has no reference to bound. */
        s_warn (self, "meter %s: counter %" PRIu64 " jumps %" PRIu64 " above the last "
                "accepted %" PRIu64 " (max-counter-jump %" PRIu64 ")", req->meter_id,
                req->counter, req->counter - meter->last_counter, meter->last_counter,
                self->max_counter_jump);
        rc = AMI_E_RANGE;
    }
    if (rc == AMI_OK)
        rc = ami_meter_keys_verify (&self->keys, data, size, zclock_time () / 1000,
                                    &self->key_hint);
    if (rc != AMI_OK) {
        s_refuse_budgeted (self, (uint32_t) slot, req, rc);
        return;
    }
    /* accepted: from now on this counter is used, whatever happens next */
    meter->last_counter = req->counter;
    if (self->batch_size == AMI_METER_BATCH)
        s_flush (self);
    if (self->terminated)
        return;                 /* CRASH-AFTER-COMMIT fired in that flush */
    accepted_t *acc = &self->batch [self->batch_size++];
    acc->slot = (uint32_t) slot;
    acc->req = *req;
}

/* ---------------------------------------------------------------------- */
/*  Load profile: production, batches, credit (ami_meter.h "Interval data") */

/*  Intervals per meter in the round starting at the profile clock: a
    full block, or what is left under the limit (0 = nothing left). */
static uint32_t
s_round_size (const fleet_t *self)
{
    uint64_t n = self->block;
    if (self->limit && self->limit - self->made_per_meter < n)
        n = self->limit - self->made_per_meter;
    return (uint32_t) n;
}

/*  zclock_mono time from which the current round may be produced: when
    the simulated clock reaches the end of its last interval. Flood: 0. */
static int64_t
s_round_due (const fleet_t *self)
{
    if (self->time_scale == 0)
        return 0;
    int64_t end = self->pclock + (int64_t) self->round_n * self->interval_s;
    int64_t ahead_s = end - self->sim_origin_s;
    if (ahead_s <= 0)
        return 0;
    /* round up, so the round never starts before its end in sim time */
    return self->mono_origin + (ahead_s * 1000 + self->time_scale - 1) / self->time_scale;
}

static void
s_profile_stop (fleet_t *self, const char *why)
{
    if (!self->producing)
        return;
    self->producing = false;
    ami_log_info ("fleet %s: load-profile production stopped (%s) at %" PRIu64
                  " intervals per meter, %u meters one block further (%" PRIu64
                  " intervals made); delivering what is made",
                  self->node_id, why, self->made_per_meter, self->cursor,
                  self->profile_readings);
}

/*  The current round ended for every meter: advance the profile clock P. */
static void
s_round_done (fleet_t *self)
{
    self->pclock += (int64_t) self->round_n * self->interval_s;
    self->made_per_meter += self->round_n;
    self->cursor = 0;
    self->round_n = s_round_size (self);
    if (self->round_n == 0)
        s_profile_stop (self, "limit reached");
    else
    if (self->pclock + (int64_t) self->round_n * self->interval_s > (int64_t) UINT32_MAX) {
        /* interval ends are u32 Unix seconds on the wire (year 2106) */
        ami_log_error ("fleet %s: the profile clock reached the end of u32 time", self->node_id);
        s_profile_stop (self, "end of time");
    }
}

/*  Meter `slot`'s profile key, derived (about 90 us: Ed25519 key, then
    X25519) the first time and cached. NULL if libsodium refused it. */
static const uint8_t *
s_profile_key (fleet_t *self, uint32_t slot)
{
    meter_t *meter = &self->meters [slot];
    if (!meter->has_profile_key) {
        int rc = ami_e2e_profile_key_meter (s_meter_key (self, slot), self->box_pk,
                                            meter->profile_key);
        if (rc != AMI_OK) {
            char meter_id [AMI_MAX_ID + 1];
            s_warn (self, "meter %s: cannot derive its profile key: %s",
                    ami_meter_id_format (self->first + slot, meter_id), ami_strerror (rc));
            return NULL;
        }
        meter->has_profile_key = true;
    }
    return meter->profile_key;
}

static size_t
    s_seal_block (fleet_t *self, uint32_t slot, uint32_t count, uint64_t made_ms,
                  ami_block_t *block, uint8_t *box, size_t cap);

/*  Make meter `slot`'s block for the current round: advance its profile
    model interval by interval, encode the PROFILE, seal it into `box`
    (cap bytes). Fills `block` and returns the box size, or 0 if the
    meter has no usable key (its intervals are then skipped: a gap). */
static size_t
s_make_block (fleet_t *self, uint32_t slot, uint64_t made_ms, ami_block_t *block,
              uint8_t *box, size_t cap)
{
    meter_t *meter = &self->meters [slot];
    ami_profile_t *profile = &self->pmsg->profile;
    int64_t end = self->pclock;
    for (uint32_t k = 0; k < self->round_n; k++) {
        end += self->interval_s;
        ami_meter_model_advance (&meter->profile, end);
        ami_interval_t *record = &profile->records [k];
        record->end_s = (uint32_t) end;
        record->import_wh = ami_meter_model_import_wh (&meter->profile);
        record->export_wh = ami_meter_model_export_wh (&meter->profile);
        record->status = AMI_Q_VALID;
    }
    size_t box_len = s_seal_block (self, slot, self->round_n, made_ms, block, box, cap);
    if (box_len) {
        self->profile_blocks++;
        self->profile_readings += self->round_n;
    }
    return box_len;
}

/*  Seal the `count` records in pmsg's PROFILE as meter `slot`'s block
    (seq = the last record's end / interval) into `box` (cap bytes);
    fills `block` and returns the box size, or 0 if the meter has no
    usable key. Shared by production and recovery (SEC-INT-5). */
static size_t
s_seal_block (fleet_t *self, uint32_t slot, uint32_t count, uint64_t made_ms,
              ami_block_t *block, uint8_t *box, size_t cap)
{
    ami_profile_t *profile = &self->pmsg->profile;
    const uint8_t *key = s_profile_key (self, slot);
    if (!key)
        return 0;
    ami_meter_id_format (self->first + slot, profile->meter_id);
    profile->seq = (uint64_t) profile->records [count - 1].end_s / self->interval_s;
    profile->made_ms = made_ms;
    profile->record_count = count;
    size_t plain_len = 0, box_len = 0;
    int rc = ami_msg_encode (self->pmsg, self->plain, sizeof self->plain, &plain_len);
    if (rc == AMI_OK)
        rc = ami_e2e_profile_seal (key, profile->meter_id, profile->seq, self->plain, plain_len,
                                   ami_e2e_profile_pad_block (count), box, cap, &box_len);
    sodium_memzero (self->plain, plain_len);
    /* sizes are bounded by construction (AMI_PROFILE_MAX_ENCODED): a bug otherwise */
    assert (rc == AMI_OK);
    memcpy (block->meter_id, profile->meter_id, sizeof block->meter_id);
    block->seq = profile->seq;
    block->box = box;
    block->box_size = box_len;
    return box_len;
}

/* ---------------------------------------------------------------------- */
/*  Load-profile recovery (SEC-INT-5; ami_meter.h "Recovery")              */

/*  Interval ends that are multiples of `interval` in (from, to]. */
static uint64_t
s_ends_in (uint64_t from, uint64_t to, uint64_t interval)
{
    return to > from ? to / interval - from / interval : 0;
}

/*  An accepted, answered command carries a load-profile range: queue a
    job for the intervals of its meter with end in (from, to] that the
    fleet has produced and still keeps; count the rest as clipped. */
static void
s_recover_queue (fleet_t *self, const accepted_t *acc)
{
    const ami_read_req_t *req = &acc->req;
    char rid [2 * AMI_REQUEST_ID_SIZE + 1];
    ami_request_id_format (req->request_id, rid);
    if (!self->profile_enabled) {
        /* no load profile at all: nothing to send again */
        uint64_t asked = s_ends_in (req->profile_from_s, req->profile_to_s,
                                    AMI_METER_PROFILE_INTERVAL_S);
        self->recover_clipped += asked;
        ami_log_info ("fleet %s: meter %s: request %s asks for its load profile of "
                      "(%" PRIu64 ", %" PRIu64 "] again, but this fleet records none",
                      self->node_id, req->meter_id, rid, req->profile_from_s,
                      req->profile_to_s);
        return;
    }
    uint64_t interval = self->interval_s;
    uint64_t asked = s_ends_in (req->profile_from_s, req->profile_to_s, interval);
    /* what this meter has produced: every round before the profile
       clock, and the round in progress if its turn in it has come */
    uint64_t produced = (uint64_t) self->pclock
                      + (acc->slot < self->cursor ? (uint64_t) self->round_n * interval : 0);
    /* what it keeps: ends after max (start, P - retain) */
    int64_t kept_from = self->pclock - self->retain_s;
    uint64_t kept = (uint64_t) (kept_from > self->pstart ? kept_from : self->pstart);
    uint64_t from = req->profile_from_s > kept ? req->profile_from_s : kept;
    uint64_t to = req->profile_to_s < produced ? req->profile_to_s : produced;
    uint64_t queued = s_ends_in (from, to, interval);
    self->recover_clipped += asked - queued;
    if (queued == 0) {
        ami_log_info ("fleet %s: meter %s: request %s asks for its load profile of "
                      "(%" PRIu64 ", %" PRIu64 "] again: nothing of it produced and kept "
                      "(kept: (%" PRIu64 ", %" PRIu64 "]); %" PRIu64 " intervals clipped",
                      self->node_id, req->meter_id, rid, req->profile_from_s,
                      req->profile_to_s, kept, produced, asked);
        return;
    }
    if (self->jobs_count == AMI_METER_RECOVER_JOBS) {
        self->recover_busy++;
        s_warn (self, "meter %s: request %s asks for its load profile of (%" PRIu64 ", %"
                PRIu64 "] again, but %d recoveries are pending: not taken (recover_busy "
                "%" PRIu64 ")", req->meter_id, rid, req->profile_from_s, req->profile_to_s,
                AMI_METER_RECOVER_JOBS, self->recover_busy);
        self->recover_clipped -= asked - queued;    /* counted as busy instead */
        return;
    }
    recover_t *job = &self->jobs [(self->jobs_head + self->jobs_count++) % AMI_METER_RECOVER_JOBS];
    job->slot = acc->slot;
    ami_meter_model_init (&job->model, self->first + acc->slot, self->model_seed, self->pstart);
    job->next_end = (int64_t) ((from / interval + 1) * interval);
    job->last_end = (int64_t) (to / interval * interval);
    job->count = 0;
    ami_log_info ("fleet %s: meter %s: request %s: sending its %" PRIu64 " intervals of "
                  "(%" PRIu64 ", %" PRIu64 "] again (%" PRIu64 " of the %" PRIu64 " asked for "
                  "not produced or not kept)", self->node_id, req->meter_id, rid, queued,
                  from, to, asked - queued, asked);
}

/*  Add recovered blocks to the batch being built (*bytes encoded bound,
    *used arena bytes), within AMI_MAX_BATCH_BLOCKS, AMI_BATCH_MAX_BYTES
    and S_RECOVER_STEPS model steps; a job that is not finished keeps its
    state for the next wake-up. Returns the intervals added. Blocks end
    where the meter's own blocks end (every `block` intervals from the
    start), so a whole block comes out with its original seq. */
static uint64_t
s_recover_fill (fleet_t *self, size_t *bytes, size_t *used, uint64_t made_ms)
{
    ami_batch_t *batch = &self->bmsg->batch;
    uint64_t added = 0;
    int64_t steps = S_RECOVER_STEPS;
    size_t box_bound = ami_e2e_profile_box_size (ami_e2e_profile_pad_block (self->block));
    while (self->jobs_count > 0 && steps > 0 && batch->block_count < AMI_MAX_BATCH_BLOCKS
    &&     *bytes + S_BLOCK_FRAME (AMI_MAX_ID, box_bound) <= AMI_BATCH_MAX_BYTES) {
        recover_t *job = &self->jobs [self->jobs_head];
        bool sealed = false;
        while (!sealed && job->next_end <= job->last_end) {
            int64_t need = (job->next_end - job->model.clock_s) / AMI_METER_STEP_S;
            if (need > steps) {
                /* out of budget: go as far as it allows, on next time */
                ami_meter_model_advance (&job->model,
                                         job->model.clock_s + steps * AMI_METER_STEP_S);
                steps = 0;
                break;
            }
            ami_meter_model_advance (&job->model, job->next_end);
            steps -= need > 0 ? need : 0;
            ami_interval_t *record = &job->records [job->count++];
            record->end_s = (uint32_t) job->next_end;
            record->import_wh = ami_meter_model_import_wh (&job->model);
            record->export_wh = ami_meter_model_export_wh (&job->model);
            record->status = AMI_Q_VALID;
            uint64_t number = (uint64_t) (job->next_end - self->pstart) / self->interval_s;
            bool boundary = number % self->block == 0 || job->next_end == job->last_end;
            job->next_end += self->interval_s;
            if (!boundary)
                continue;
            ami_block_t *block = &batch->blocks [batch->block_count];
            memcpy (self->pmsg->profile.records, job->records,
                    job->count * sizeof (ami_interval_t));
            size_t box = s_seal_block (self, job->slot, job->count, made_ms, block,
                                       self->arena + *used, AMI_BATCH_MAX_BYTES - *used);
            if (box) {
                *used += box;
                *bytes += S_BLOCK_FRAME (strlen (block->meter_id), box);
                batch->block_count++;
                added += job->count;
            }
            else
                self->recover_clipped += job->count;     /* no key: cannot send */
            job->count = 0;
            sealed = true;
        }
        if (job->next_end > job->last_end && job->count == 0) {
            sodium_memzero (job, sizeof *job);
            self->jobs_head = (self->jobs_head + 1) % AMI_METER_RECOVER_JOBS;
            self->jobs_count--;
        }
    }
    self->profile_recovered += added;
    return added;
}

/*  Queue a batch on the DEALER (never blocks). False if the queue is
    full: the caller retries later. */
static bool
s_batch_send (fleet_t *self, batch_t *batch)
{
    if (zmq_send (zsock_resolve (self->dealer), batch->data, batch->size, ZMQ_DONTWAIT) == -1) {
        s_warn (self, "cannot queue batch %016" PRIx64 " to the aggregator (%s): "
                "retrying in %d ms", batch->id, zmq_strerror (zmq_errno ()),
                AMI_BATCH_RETRY_MS);
        return false;
    }
    if (batch->sends++ == 0)
        self->batches_sent++;
    else
        self->batches_resent++;
    batch->quiet = batch->heard_at == self->heard && batch->sends > 1 ? batch->quiet + 1 : 1;
    batch->heard_at = self->heard;
    return true;
}

/*  Send a batch that is not in flight; it is in flight afterwards, or
    waits AMI_BATCH_RETRY_MS if the queue was full. */
static void
s_batch_launch (fleet_t *self, batch_t *batch, int64_t now)
{
    if (s_batch_send (self, batch)) {
        batch->inflight = true;
        batch->due = now + self->ack_timeout_ms;
        self->inflight++;
    }
    else
        batch->due = now + AMI_BATCH_RETRY_MS;
}

/*  Credit rules (PROTOCOL.md 8.5): at most `credit` batches in flight;
    with credit 0 and nothing in flight, one probe from probe_at on. */
static bool
s_may_send (const fleet_t *self, int64_t now)
{
    return self->inflight < self->credit
        || (self->credit == 0 && self->inflight == 0 && now >= self->probe_at);
}

/*  A new batch also needs room in the outbox (waiting batches count), so
    a receiver that refuses everything cannot make the fleet hoard. */
static bool
s_may_produce (const fleet_t *self, int64_t now)
{
    return self->unacked < self->credit
        || (self->credit == 0 && self->unacked == 0 && now >= self->probe_at);
}

/*  Build one BATCH from the due rounds (up to AMI_MAX_BATCH_BLOCKS blocks
    and AMI_BATCH_MAX_BYTES), keep it in the outbox and send it. A batch
    may end inside a round (a big fleet's round spans many batches) and,
    when the next round is due too (flood, catching up), go on into it. */
static void
s_profile_build (fleet_t *self, int64_t now)
{
    ami_batch_t *batch = &self->bmsg->batch;
    batch->block_count = 0;
    size_t bytes = S_BATCH_HEAD;
    size_t used = 0;                /* arena bytes */
    uint64_t readings = 0;
    uint64_t made_ms = s_now_ms (self);
    /* SEC-INT-5: intervals asked for again go first (older data, that an
       operator is waiting for) */
    uint64_t recovered = s_recover_fill (self, &bytes, &used, made_ms);
    while (self->producing && batch->block_count < AMI_MAX_BATCH_BLOCKS) {
        if (self->cursor == 0 && s_round_due (self) > now)
            break;
        size_t box_bound = ami_e2e_profile_box_size (ami_e2e_profile_pad_block (self->round_n));
        if (bytes + S_BLOCK_FRAME (AMI_MAX_ID, box_bound) > AMI_BATCH_MAX_BYTES)
            break;
        ami_block_t *block = &batch->blocks [batch->block_count];
        size_t box = s_make_block (self, self->cursor, made_ms, block, self->arena + used,
                                   AMI_BATCH_MAX_BYTES - used);
        if (box) {
            used += box;
            bytes += S_BLOCK_FRAME (strlen (block->meter_id), box);
            readings += self->round_n;
            batch->block_count++;
        }
        if (++self->cursor == self->count)
            s_round_done (self);
    }
    if (batch->block_count == 0)
        return;
    batch->batch_id = self->next_batch_id++;
    size_t len = 0;
    int rc = ami_msg_encode (self->bmsg, self->frame, AMI_MAX_FRAME, &len);
    assert (rc == AMI_OK && len <= AMI_BATCH_MAX_BYTES);    /* bounded above */
    batch_t *entry = (batch_t *) malloc (sizeof (batch_t) + len);
    if (!entry) {
        /* the blocks are counted as made but can never be delivered */
        ami_log_error ("fleet %s: out of memory for a batch of %u blocks: lost",
                       self->node_id, batch->block_count);
        return;
    }
    memset (entry, 0, sizeof *entry);
    entry->id = batch->batch_id;
    entry->readings = readings;
    entry->recovered = recovered;
    entry->size = len;
    memcpy (entry->data, self->frame, len);
    if (self->outbox_tail)
        self->outbox_tail->next = entry;
    else
        self->outbox = entry;
    self->outbox_tail = entry;
    self->unacked++;
    s_batch_launch (self, entry, now);
}

/*  Timers and production: resend batches whose ack is overdue, resend
    refused ones whose retry time came (within credit), then build at
    most one new batch, so reads and acks are served between batches. */
static void
s_profile_pump (fleet_t *self)
{
    if (!self->profile_enabled)
        return;
    int64_t now = zclock_mono ();
    for (batch_t *batch = self->outbox; batch; batch = batch->next)
        if (batch->inflight && now >= batch->due) {
            if (batch->heard_at == self->heard && batch->quiet >= S_QUIET_COPIES) {
                /* the aggregator has been silent since: the link is down
                   and the last copy still queued (see S_QUIET_COPIES) */
                s_warn (self, "batch %016" PRIx64 " not acknowledged and nothing heard "
                        "from the aggregator: not queueing another copy", batch->id);
                batch->due = now + self->ack_timeout_ms;
                continue;
            }
            s_warn (self, "batch %016" PRIx64 " not acknowledged within %d ms: resending",
                    batch->id, self->ack_timeout_ms);
            batch->due = now + (s_batch_send (self, batch) ? self->ack_timeout_ms
                                                           : AMI_BATCH_RETRY_MS);
        }
    for (batch_t *batch = self->outbox; batch; batch = batch->next)
        if (!batch->inflight && now >= batch->due && s_may_send (self, now))
            s_batch_launch (self, batch, now);
    if (s_may_produce (self, now)
    &&  (self->jobs_count > 0
      || (self->producing && (self->cursor > 0 || s_round_due (self) <= now))))
        s_profile_build (self, now);
}

/*  zclock_mono time of the next thing s_profile_pump would do, or
    INT64_MAX. Only actions the credit allows count, so a fleet waiting
    for acks sleeps instead of spinning. */
static int64_t
s_profile_next (const fleet_t *self, int64_t now)
{
    int64_t next = INT64_MAX;
    if (!self->profile_enabled)
        return next;
    bool can_resend = self->inflight < self->credit
                   || (self->credit == 0 && self->inflight == 0);
    for (const batch_t *batch = self->outbox; batch; batch = batch->next) {
        int64_t at = INT64_MAX;
        if (batch->inflight)
            at = batch->due;
        else
        if (can_resend)
            at = self->credit == 0 && self->probe_at > batch->due ? self->probe_at : batch->due;
        if (at < next)
            next = at;
    }
    if ((self->producing || self->jobs_count > 0)
    && (self->unacked < self->credit || (self->credit == 0 && self->unacked == 0))) {
        int64_t at = self->cursor > 0 || self->jobs_count > 0 ? now : s_round_due (self);
        if (self->credit == 0 && self->probe_at > at)
            at = self->probe_at;
        if (at < next)
            next = at;
    }
    return next;
}

static void
s_handle_batch_ack (fleet_t *self)
{
    const ami_batch_ack_t *ack = &self->in->batch_ack;
    batch_t *prev = NULL, *batch = self->outbox;
    while (batch && batch->id != ack->batch_id) {
        prev = batch;
        batch = batch->next;
    }
    if (!batch) {
        /* a duplicate ack (for a resend), or not ours: ignored, credit too */
        ami_log_debug ("fleet %s: BATCH_ACK for unknown batch %016" PRIx64 " ignored",
                       self->node_id, ack->batch_id);
        return;
    }
    int64_t now = zclock_mono ();
    self->credit = ack->credit < AMI_METER_CREDIT_MAX ? ack->credit : AMI_METER_CREDIT_MAX;
    if (self->credit == 0)
        self->probe_at = now + AMI_BATCH_RETRY_MS;
    if (batch->inflight) {
        batch->inflight = false;
        self->inflight--;
    }
    if (ack->status == AMI_OK) {
        if (prev)
            prev->next = batch->next;
        else
            self->outbox = batch->next;
        if (self->outbox_tail == batch)
            self->outbox_tail = prev;
        self->unacked--;
        self->profile_acked += batch->readings;
        free (batch);
        if (s_profile_done (self))
            ami_log_info ("fleet %s: load profile done: all %" PRIu64 " intervals acknowledged",
                          self->node_id, self->profile_acked);
    }
    else {
        batch->due = now + AMI_BATCH_RETRY_MS;
        s_warn (self, "aggregator did not take batch %016" PRIx64 " (%s, credit %u): "
                "resending in %d ms", batch->id, ami_strerror (ack->status),
                ack->credit, AMI_BATCH_RETRY_MS);
    }
}

/*  The aggregator (re)introduced itself: a new receiver. Credit starts
    again at AMI_CREDIT_INITIAL and every unacknowledged batch is resent
    now (as far as that credit allows; the rest as acks come). */
static void
s_profile_relink (fleet_t *self)
{
    if (!self->profile_enabled)
        return;
    int64_t now = zclock_mono ();
    self->credit = AMI_CREDIT_INITIAL;
    for (batch_t *batch = self->outbox; batch; batch = batch->next) {
        batch->inflight = false;
        batch->due = now;
    }
    self->inflight = 0;
    if (self->unacked)
        ami_log_info ("fleet %s: resending %u unacknowledged batches to the aggregator",
                      self->node_id, self->unacked);
    s_profile_pump (self);
}

static void
s_handle_dealer (fleet_t *self)
{
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return;                 /* interrupted */
    self->heard++;              /* the link carries traffic */
    zframe_t *frame = zmsg_first (msg);
    if (zmsg_size (msg) != 1) {
        self->malformed++;
        s_warn (self, "dropped a %zu-frame message from the aggregator", zmsg_size (msg));
        zmsg_destroy (&msg);
        return;
    }
    const uint8_t *data = zframe_data (frame);
    size_t size = zframe_size (frame);
    int rc = ami_msg_decode (self->in, data, size);
    if (rc != AMI_OK) {
        self->malformed++;
        s_warn (self, "dropped a malformed frame from the aggregator (%zu bytes): %s",
                size, ami_strerror (rc));
    }
    else
    if (self->in->type == AMI_MSG_READ_REQ)
        s_handle_read_req (self, data, size);
    else
    if (self->in->type == AMI_MSG_BATCH_ACK)
        s_handle_batch_ack (self);
    else
    if (self->in->type == AMI_MSG_HELLO) {
        ami_log_info ("fleet %s: HELLO from %s %s: re-sending HELLO",
                      self->node_id, self->in->hello.role, self->in->hello.node_id);
        s_send_hello (self);
        /* it restarted (or reconnected): what it had not acknowledged
           may be lost with it */
        s_profile_relink (self);
    }
    else {
        self->malformed++;
        s_warn (self, "dropped %s from the aggregator: not an aggregator's message",
                ami_msg_type_name (self->in->type));
    }
    zmsg_destroy (&msg);
}

/*  Re-read the MDMS signing keys from mdms_pub if its key files changed
    (or always, with force), and take the new set if it loads (ami_meter.h
    "MDMS signing keys"). Problems are logged when they change, so a
    broken file does not fill the log once a second. Returns AMI_OK or
    the load's error (the set in use is then kept). */
static int
s_keys_refresh (fleet_t *self, bool force)
{
    if (!self->mdms_pub)
        return AMI_OK;
    uint8_t stamp [AMI_METER_KEYS_STAMP_SIZE];
    ami_meter_keys_stamp (self->mdms_pub, stamp);
    if (!force && memcmp (stamp, self->keys_stamp, sizeof stamp) == 0)
        return AMI_OK;
    memcpy (self->keys_stamp, stamp, sizeof stamp);
    ami_meter_keys_t fresh;
    char problem [AMI_METER_KEYS_PROBLEM_MAX];
    int rc = ami_meter_keys_load (&fresh, self->mdms_pub, zclock_time () / 1000,
                                  problem, sizeof problem);
    if (problem [0] && strcmp (problem, self->keys_problem) != 0)
        ami_log_warn ("fleet %s: MDMS signing keys: %s", self->node_id, problem);
    snprintf (self->keys_problem, sizeof self->keys_problem, "%s", problem);
    if (rc != AMI_OK) {
        ami_log_warn ("fleet %s: cannot re-read the MDMS signing keys from %s: keeping "
                      "the %zu accepted so far", self->node_id, self->mdms_pub,
                      self->keys.count);
        return rc;
    }
    if (!ami_meter_keys_equal (&fresh, &self->keys)) {
        char hex [AMI_METER_KEYS_MAX][9];
        for (size_t i = 0; i < AMI_METER_KEYS_MAX; i++) {
            hex [i][0] = '-';
            hex [i][1] = '\0';
            if (i < fresh.count)
                sodium_bin2hex (hex [i], sizeof hex [i], fresh.pk [i], 4);
        }
        ami_log_info ("fleet %s: MDMS signing keys accepted: %zu (current %s..., old: %s %s "
                      "%s)%s", self->node_id, fresh.count, hex [0], hex [1], hex [2], hex [3],
                      fresh.ignored ? "; some old keys ignored (bound)" : "");
        self->keys = fresh;
        self->key_hint = 0;
    }
    return AMI_OK;
}

static void
s_handle_pipe (fleet_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (msg);
    if (!command || streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "STATUS")) {
        zmsg_t *reply = zmsg_new ();
        zmsg_addstrf (reply, "%u", self->count);
        zmsg_addstrf (reply, "%" PRIu64, self->reads);
        zmsg_addstrf (reply, "%" PRIu64, self->refused);
        zmsg_addstrf (reply, "%" PRIu64, self->unreachable);
        zmsg_addstrf (reply, "%" PRIu64, self->malformed);
        zmsg_addstrf (reply, "%" PRIu64, self->profile_blocks);
        zmsg_addstrf (reply, "%" PRIu64, self->profile_readings);
        zmsg_addstrf (reply, "%" PRIu64, self->profile_acked);
        zmsg_addstrf (reply, "%" PRId64, self->profile_enabled ? self->pclock : 0);
        zmsg_addstrf (reply, "%" PRIu64, self->batches_sent);
        zmsg_addstrf (reply, "%" PRIu64, self->batches_resent);
        zmsg_addstrf (reply, "%u", self->unacked);
        zmsg_addstrf (reply, "%d", s_profile_done (self) ? 1 : 0);
        zmsg_addstrf (reply, "%" PRIu64, self->store_errors);
        zmsg_addstrf (reply, "%" PRIu64, self->refusals_dropped);
        zmsg_addstrf (reply, "%zu", self->keys.count);
        zmsg_addstrf (reply, "%" PRIu32, self->credit);
        zmsg_addstrf (reply, "%" PRIu64, self->profile_recovered);
        zmsg_addstrf (reply, "%" PRIu64, self->recover_clipped);
        zmsg_addstrf (reply, "%" PRIu64, self->recover_busy);
        zmsg_addstrf (reply, "%" PRIu32, self->jobs_count);
        zmsg_send (&reply, self->pipe);
    }
    else
    if (streq (command, "RELOAD-KEYS")) {
        s_keys_refresh (self, true);
        self->next_keys_check = zclock_mono () + AMI_METER_KEYS_REFRESH_MS;
        zstr_sendf (self->pipe, "%zu", self->keys.count);
    }
    else
    if (streq (command, "PROFILE-STOP"))
        s_profile_stop (self, "PROFILE-STOP");
    else
    if (streq (command, "CRASH-AFTER-COMMIT"))
        self->crash_after_commit = true;
    else
        ami_log_error ("fleet %s: unknown pipe command '%s'", self->node_id, command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Start-up                                                                */

typedef struct {
    fleet_t *self;
    int rc;
} load_t;

static int
s_load_counter (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    load_t *load = (load_t *) arg;
    fleet_t *self = load->self;
    if (klen != 4 || vlen != 8) {
        ami_log_error ("fleet %s: state store: bad counter entry (%zu/%zu bytes)",
                       self->node_id, klen, vlen);
        load->rc = AMI_E_STORAGE;
        return 1;
    }
    uint32_t index = s_get_be32 ((const uint8_t *) key);
    if (index >= self->first && index - self->first < self->count)
        self->meters [index - self->first].last_counter = s_get_be64 ((const uint8_t *) val);
    return 0;
}

static int
s_load_snapshot (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    load_t *load = (load_t *) arg;
    fleet_t *self = load->self;
    if (klen != 4 || vlen != S_SNAPSHOT_SIZE) {
        ami_log_error ("fleet %s: state store: bad register snapshot (%zu/%zu bytes)",
                       self->node_id, klen, vlen);
        load->rc = AMI_E_STORAGE;
        return 1;
    }
    uint32_t index = s_get_be32 ((const uint8_t *) key);
    if (index < self->first || index - self->first >= self->count)
        return 0;
    const uint8_t *p = (const uint8_t *) val;
    ami_meter_model_t *model = &self->meters [index - self->first].model;
    model->clock_s = (int64_t) s_get_be64 (p);
    model->import_wh [0] = s_get_be64 (p + 8);
    model->import_wh [1] = s_get_be64 (p + 16);
    model->export_wh [0] = s_get_be64 (p + 24);
    model->export_wh [1] = s_get_be64 (p + 32);
    model->residue_mwh_i = s_get_be32 (p + 40);
    model->residue_mwh_e = s_get_be32 (p + 44);
    return 0;
}

/*  SEC-CONF-3: the padded size of every READING this fleet seals. It is
    the block of ami_e2e_seal_padded: the longest encoding a READING of
    AMI_METER_REGISTERS registers can have, plus the padding overhead, so
    every reading pads to exactly one block whatever its values. The
    longest encoding is measured, not computed by hand: a READING with the
    longest meter id and every number at its longest msgpack form (19
    registers: 509 bytes, so the block is 513 and a sealed reading 561
    bytes). It depends on the register count only, not on the fleet. */
static size_t
s_reading_block (ami_msg_t *scratch, uint8_t *buf, size_t cap)
{
    ami_msg_reset (scratch, AMI_MSG_READING);
    ami_reading_t *reading = &scratch->reading;
    memset (reading->meter_id, 'M', AMI_MAX_ID);
    reading->meter_id [AMI_MAX_ID] = 0;
    memset (reading->request_id, 0xff, AMI_REQUEST_ID_SIZE);
    reading->read_ms = UINT64_MAX;
    reading->quality = UINT32_MAX;
    reading->register_count = AMI_METER_REGISTERS;
    for (uint32_t i = 0; i < reading->register_count; i++) {
        ami_register_t *r = &reading->registers [i];
        memset (r->obis, 0xff, AMI_OBIS_SIZE);
        r->value = INT64_MIN;
        r->scaler = -9;             /* the codec's range is -9..9 */
        r->unit = UINT8_MAX;
        r->quality = UINT8_MAX;
    }
    size_t len = 0;
    int rc = ami_msg_encode (scratch, buf, cap, &len);
    assert (rc == AMI_OK);          /* our own values, in the codec's ranges */
    return len + AMI_E2E_PAD_OVERHEAD;
}

static int
s_load_state (fleet_t *self, const char *dir)
{
    int err = 0;
    size_t map_size = S_MAP_BASE + (size_t) self->count * S_MAP_PER_METER;
    self->store = ami_store_new (dir, map_size, 0, 0, &err);
    if (!self->store) {
        ami_log_error ("fleet %s: cannot open state directory %s: %s",
                       self->node_id, dir, ami_strerror (err));
        return err;
    }
    int rc = ami_store_db (self->store, "counters", &self->counters_db);
    if (rc == AMI_OK)
        rc = ami_store_db (self->store, "registers", &self->registers_db);
    if (rc != AMI_OK) {
        ami_log_error ("fleet %s: state directory %s: %s", self->node_id, dir,
                       ami_store_last_error (self->store));
        return rc;
    }
    uint8_t from [4], to [4];
    s_put_be32 (from, self->first);
    s_put_be32 (to, self->first + self->count - 1);
    load_t load = { self, AMI_OK };
    rc = ami_store_scan (self->store, self->counters_db, from, 4, to, 4, false,
                         s_load_counter, &load);
    if (rc == AMI_OK)
        rc = ami_store_scan (self->store, self->registers_db, from, 4, to, 4, false,
                             s_load_snapshot, &load);
    if (rc == AMI_OK)
        rc = load.rc;
    if (rc != AMI_OK)
        ami_log_error ("fleet %s: cannot load state from %s: %s", self->node_id, dir,
                       ami_strerror (rc));
    return rc;
}

static bool
s_config_valid (const ami_meter_config_t *config)
{
    if (!config->node_id || !ami_id_valid (config->node_id)) {
        ami_log_error ("meter fleet: node id '%s' is not a valid id",
                       config->node_id ? config->node_id : "");
        return false;
    }
    const char *id = config->node_id;
    if (!config->cert || !ami_cert_has_secret (config->cert)) {
        ami_log_error ("fleet %s: a certificate with its secret key is required", id);
        return false;
    }
    if (!config->aggregator || !*config->aggregator) {
        ami_log_error ("fleet %s: the aggregator endpoint is required", id);
        return false;
    }
    if (!config->aggregator_key || strlen (config->aggregator_key) != AMI_CERT_KEY_TXT_LEN) {
        ami_log_error ("fleet %s: the aggregator's public key (Z85, %d characters) is required",
                       id, AMI_CERT_KEY_TXT_LEN);
        return false;
    }
    if (config->first == 0 || config->count == 0 || config->count > AMI_METER_MAX_COUNT
    ||  config->first - 1 > UINT32_MAX - config->count) {
        ami_log_error ("fleet %s: meters %u..+%u: first must be >= 1, count 1..%d, "
                       "and the last meter number must fit 32 bits",
                       id, config->first, config->count, AMI_METER_MAX_COUNT);
        return false;
    }
    if (!config->state || !*config->state) {
        ami_log_error ("fleet %s: a state directory is required", id);
        return false;
    }
    if (config->heartbeat_ms < 0) {
        ami_log_error ("fleet %s: heartbeat must not be negative", id);
        return false;
    }
    const ami_meter_profile_config_t *profile = &config->profile;
    if (profile->enabled) {
        uint32_t interval = profile->interval_s ? profile->interval_s : AMI_METER_PROFILE_INTERVAL_S;
        if (interval > 86400 || 86400 % interval != 0) {
            ami_log_error ("fleet %s: profile interval %u s does not divide a day", id, interval);
            return false;
        }
        if (profile->block > AMI_MAX_PROFILE_RECORDS) {
            ami_log_error ("fleet %s: profile block %u: 1..%d intervals", id, profile->block,
                           AMI_MAX_PROFILE_RECORDS);
            return false;
        }
        if (profile->time_scale > AMI_METER_MAX_TIME_SCALE) {
            ami_log_error ("fleet %s: profile time-scale %u: 0 (flood) .. %d", id,
                           profile->time_scale, AMI_METER_MAX_TIME_SCALE);
            return false;
        }
        if (profile->start_s < 0 || profile->start_s >= (int64_t) UINT32_MAX
        ||  profile->start_s % interval != 0) {
            ami_log_error ("fleet %s: profile start %" PRId64 " is not a Unix time that is "
                           "a multiple of the interval (%u s)", id, profile->start_s, interval);
            return false;
        }
        if (profile->retain_s < 0 || profile->retain_s > AMI_METER_PROFILE_RETAIN_MAX_S) {
            ami_log_error ("fleet %s: profile retain %" PRId64 " s: 0 (default) .. %d s", id,
                           profile->retain_s, AMI_METER_PROFILE_RETAIN_MAX_S);
            return false;
        }
        if (profile->ack_timeout_ms < 0) {
            ami_log_error ("fleet %s: profile ack timeout must not be negative", id);
            return false;
        }
    }
    if (config->refusal_rate > AMI_METER_REFUSAL_MAX
    ||  config->refusal_burst > AMI_METER_REFUSAL_MAX) {
        ami_log_error ("fleet %s: refusal rate and burst: 1..%d (0 = default)", id,
                       AMI_METER_REFUSAL_MAX);
        return false;
    }
    if (sodium_is_zero (config->seed, AMI_E2E_SEED_SIZE)
    ||  (!config->mdms_pub && sodium_is_zero (config->mdms.sign_pk, AMI_E2E_SIGN_PK_SIZE))
    ||  sodium_is_zero (config->mdms.box_pk, AMI_E2E_BOX_KEY_SIZE)) {
        ami_log_error ("fleet %s: the fleet secret and the MDMS public keys are required", id);
        return false;
    }
    return true;
}

static void
s_self_destroy (fleet_t **self_p)
{
    fleet_t *self = *self_p;
    if (!self)
        return;
    zsock_destroy (&self->dealer);
    ami_store_destroy (&self->store);
    if (self->meters) {
        sodium_memzero (self->meters, (size_t) self->count * sizeof (meter_t));
        free (self->meters);
    }
    sodium_memzero (self->seed, sizeof self->seed);
    free (self->mdms_pub);
    ami_msg_destroy (&self->in);
    ami_msg_destroy (&self->out);
    free (self->buf);
    while (self->outbox) {
        batch_t *next = self->outbox->next;
        free (self->outbox);
        self->outbox = next;
    }
    if (self->pmsg)
        sodium_memzero (&self->pmsg->profile, sizeof self->pmsg->profile);
    ami_msg_destroy (&self->pmsg);
    ami_msg_destroy (&self->bmsg);
    if (self->jobs) {
        sodium_memzero (self->jobs, AMI_METER_RECOVER_JOBS * sizeof (recover_t));
        free (self->jobs);
    }
    free (self->arena);
    free (self->frame);
    free (self);
    *self_p = NULL;
}

/*  Start the profile clock and allocate the batch builder. The first
    meter's profile key is derived now: a MDMS box key that cannot make
    profile keys fails the start, not every block later. */
static int
s_profile_setup (fleet_t *self, const ami_meter_profile_config_t *config, uint64_t model_seed)
{
    self->profile_enabled = config->enabled;
    if (!config->enabled)
        return AMI_OK;
    self->interval_s = config->interval_s ? config->interval_s : AMI_METER_PROFILE_INTERVAL_S;
    self->block = config->block ? config->block : AMI_METER_PROFILE_BLOCK;
    self->time_scale = config->time_scale;
    self->limit = config->limit;
    self->ack_timeout_ms = config->ack_timeout_ms ? config->ack_timeout_ms
                                                  : AMI_BATCH_ACK_TIMEOUT_MS;
    int64_t now_s = (int64_t) (s_now_ms (self) / 1000);
    self->mono_origin = zclock_mono ();
    self->sim_origin_s = config->start_s ? config->start_s : now_s;
    self->pclock = config->start_s ? config->start_s : now_s - now_s % self->interval_s;
    self->pstart = self->pclock;
    self->model_seed = model_seed;
    self->retain_s = config->retain_s ? config->retain_s : AMI_METER_PROFILE_RETAIN_S;
    self->pmsg = ami_msg_new ();
    self->bmsg = ami_msg_new ();
    self->arena = (uint8_t *) malloc (AMI_BATCH_MAX_BYTES);
    self->frame = (uint8_t *) malloc (AMI_MAX_FRAME);
    self->jobs = (recover_t *) calloc (AMI_METER_RECOVER_JOBS, sizeof (recover_t));
    if (!self->pmsg || !self->bmsg || !self->arena || !self->frame || !self->jobs) {
        ami_log_error ("fleet %s: out of memory for the load-profile builder", self->node_id);
        return AMI_E_NOMEM;
    }
    /* set once: every PROFILE and BATCH overwrites only what varies */
    ami_msg_reset (self->pmsg, AMI_MSG_PROFILE);
    ami_msg_reset (self->bmsg, AMI_MSG_BATCH);
    snprintf (self->bmsg->batch.origin, sizeof self->bmsg->batch.origin, "%s", self->node_id);
    randombytes_buf (&self->next_batch_id, sizeof self->next_batch_id);
    self->credit = AMI_CREDIT_INITIAL;
    for (uint32_t i = 0; i < self->count; i++)
        ami_meter_model_init (&self->meters [i].profile, self->first + i, model_seed,
                              self->pclock);
    if (!s_profile_key (self, 0)) {
        ami_log_error ("fleet %s: the MDMS box key cannot make meters' profile keys",
                       self->node_id);
        return AMI_E_KEY;
    }
    self->round_n = s_round_size (self);
    self->producing = self->round_n > 0;
    ami_log_info ("fleet %s: load profile every %u s, %u intervals per block, "
                  "time-scale %u%s, from %" PRId64 ", limit %" PRIu64 " intervals%s, "
                  "kept %" PRId64 " s for recovery",
                  self->node_id, self->interval_s, self->block, self->time_scale,
                  self->time_scale ? "" : " (flood)", self->pclock, self->limit,
                  self->limit ? "" : " (none)", self->retain_s);
    return AMI_OK;
}

static fleet_t *
s_self_new (zsock_t *pipe, const ami_meter_config_t *config)
{
    if (sodium_init () < 0) {
        ami_log_error ("meter fleet: libsodium failed to initialise");
        return NULL;
    }
    if (!s_config_valid (config))
        return NULL;
    fleet_t *self = (fleet_t *) zmalloc (sizeof (fleet_t));
    assert (self);
    self->pipe = pipe;
    snprintf (self->node_id, sizeof self->node_id, "%s", config->node_id);
    self->first = config->first;
    self->count = config->count;
    memcpy (self->seed, config->seed, sizeof self->seed);
    memcpy (self->box_pk, config->mdms.box_pk, sizeof self->box_pk);
    self->refusal_rate = config->refusal_rate ? config->refusal_rate : AMI_METER_REFUSAL_RATE;
    self->refusal_burst = config->refusal_burst ? config->refusal_burst : AMI_METER_REFUSAL_BURST;
    self->refusal_budget = (int64_t) self->refusal_burst * 1000;       /* start full */
    self->refusal_refilled = zclock_mono ();
    self->drop_limit.burst = 1;     /* one line a second; the limiter counts the rest */
    if (config->mdms_pub) {
        self->mdms_pub = strdup (config->mdms_pub);
        if (!self->mdms_pub || s_keys_refresh (self, true) != AMI_OK) {
            ami_log_error ("fleet %s: no usable MDMS signing key in %s (%s needed)",
                           self->node_id, config->mdms_pub, AMI_METER_KEYS_CURRENT);
            s_self_destroy (&self);
            return NULL;
        }
        self->next_keys_check = zclock_mono () + AMI_METER_KEYS_REFRESH_MS;
    }
    else
        ami_meter_keys_single (&self->keys, config->mdms.sign_pk);
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms : AMI_METER_HEARTBEAT_MS;
    self->clock_offset_ms = config->clock_offset_ms;
    self->max_counter_jump = config->max_counter_jump ? config->max_counter_jump
                                                      : AMI_METER_MAX_COUNTER_JUMP;
    self->in = ami_msg_new ();
    self->out = ami_msg_new ();
    self->buf = (uint8_t *) malloc (S_BUF_SIZE);
    self->meters = (meter_t *) calloc (self->count, sizeof (meter_t));
    if (!self->in || !self->out || !self->buf || !self->meters) {
        ami_log_error ("fleet %s: out of memory for %u meters", self->node_id, self->count);
        s_self_destroy (&self);
        return NULL;
    }
    self->reading_block = s_reading_block (self->out, self->plain, sizeof self->plain);
    /* every model starts now; the snapshots loaded next override the
       energy registers of meters that have reported before */
    uint64_t model_seed = ami_meter_model_seed (self->seed);
    int64_t start_s = (int64_t) (s_now_ms (self) / 1000);
    for (uint32_t i = 0; i < self->count; i++)
        ami_meter_model_init (&self->meters [i].model, self->first + i, model_seed, start_s);
    if (s_load_state (self, config->state) != AMI_OK
    ||  s_profile_setup (self, &config->profile, model_seed) != AMI_OK) {
        s_self_destroy (&self);
        return NULL;
    }

    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer) {
        ami_log_error ("fleet %s: cannot create the DEALER socket", self->node_id);
        s_self_destroy (&self);
        return NULL;
    }
    zsock_set_linger (self->dealer, 0);
    zsock_set_maxmsgsize (self->dealer, AMI_MAX_FRAME);
    int hello_chunks = (int) ((self->count + AMI_MAX_HELLO_METERS - 1) / AMI_MAX_HELLO_METERS);
    zsock_set_sndhwm (self->dealer, S_SNDHWM_BASE + hello_chunks);
    zsock_set_rcvhwm (self->dealer, S_RCVHWM);
    zsock_set_heartbeat_ivl (self->dealer, self->heartbeat_ms);
    zsock_set_heartbeat_timeout (self->dealer, S_ZMTP_LIVENESS * self->heartbeat_ms);
    if (ami_auth_client (self->dealer, config->cert, config->aggregator_key) != AMI_OK) {
        s_self_destroy (&self);
        return NULL;
    }
    if (zsock_connect (self->dealer, "%s", config->aggregator) != 0) {
        ami_log_error ("fleet %s: cannot connect to aggregator %s: %s",
                       self->node_id, config->aggregator, zmq_strerror (zmq_errno ()));
        s_self_destroy (&self);
        return NULL;
    }
    self->started = zclock_mono ();
    self->next_heartbeat = self->started + self->heartbeat_ms;
    /* queued until the connection is up: the introduction goes first */
    s_send_hello (self);
    ami_log_info ("fleet %s: %u meters (MTR numbers %u..%u) connecting to %s; readings "
                  "padded to %zu bytes, max counter jump %" PRIu64,
                  self->node_id, self->count, self->first,
                  self->first + self->count - 1, config->aggregator,
                  self->reading_block, self->max_counter_jump);
    return self;
}

void
ami_meter_actor (zsock_t *pipe, void *args)
{
    zsock_signal (pipe, 0);
    fleet_t *self = s_self_new (pipe, (const ami_meter_config_t *) args);
    if (!self) {
        ami_actor_failed (pipe);
        return;
    }
    ami_actor_ready (pipe);

    zpoller_t *poller = zpoller_new (pipe, self->dealer, NULL);
    assert (poller);
    while (!self->terminated) {
        int64_t now = zclock_mono ();
        int64_t next = s_profile_next (self, now);
        if (next > self->next_heartbeat)
            next = self->next_heartbeat;
        if (self->mdms_pub && next > self->next_keys_check)
            next = self->next_keys_check;
        int64_t wait = next - now;
        void *which = zpoller_wait (poller, wait > 0 ? (int) wait : 0);
        if (which == pipe)
            s_handle_pipe (self);
        else
        if (which == self->dealer) {
            /* drain a burst, then commit the accepted counters once */
            for (int i = 0; i < AMI_METER_BATCH && !self->terminated; i++) {
                s_handle_dealer (self);
                if (!(zsock_events (self->dealer) & ZMQ_POLLIN))
                    break;
            }
            s_flush (self);
            if (self->terminated)
                break;          /* CRASH-AFTER-COMMIT: nothing after it */
        }
        else
        if (zpoller_terminated (poller))
            break;
        s_profile_pump (self);
        if (self->mdms_pub && zclock_mono () >= self->next_keys_check) {
            s_keys_refresh (self, false);
            self->next_keys_check = zclock_mono () + AMI_METER_KEYS_REFRESH_MS;
        }
        if (zclock_mono () >= self->next_heartbeat) {
            s_send_health (self);
            self->next_heartbeat += self->heartbeat_ms;
            /* after a long stall, do not send a burst of catch-up beats */
            if (self->next_heartbeat < zclock_mono ())
                self->next_heartbeat = zclock_mono () + self->heartbeat_ms;
        }
    }
    zpoller_destroy (&poller);
    ami_log_info ("fleet %s: stopped (%" PRIu64 " reads, %" PRIu64 " refused; "
                  "%" PRIu64 " intervals made, %" PRIu64 " acknowledged)",
                  self->node_id, self->reads, self->refused,
                  self->profile_readings, self->profile_acked);
    s_self_destroy (&self);
}

zactor_t *
ami_meter_new (const ami_meter_config_t *config)
{
    assert (config);
    return ami_actor_new (ami_meter_actor, (void *) config);
}
