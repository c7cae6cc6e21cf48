/*  ami_headend.c - the head end: aggregators below, MDP workers towards the
    broker, an uplink to the MDMS ingest. See ami_headend.h (the manual).

    Design. One CZMQ actor owns every socket and all state, and runs one
    zmq_poll loop over the pipe, the aggregator ROUTER, the MDMS DEALER
    and every MDP worker DEALER. The poll set is rebuilt only when a
    worker socket opens or closes (self->dirty); every ready socket is
    served in each pass, so a busy ROUTER cannot starve the workers.

    Patterns (zguide): ROUTER with routing ids for the aggregators (the
    "asynchronous server"), Majordomo workers (RFC 7 / mdwrkapi: READY,
    HEARTBEAT, reconnect on silence or DISCONNECT) - K of them per live
    aggregator because an MDP worker holds one request at a time - and a
    DEALER uplink with non-blocking sends. Interval data is a relay in the
    middle of a credit-based flow (zguide ch. 7, "credit-based flow
    control"): the head end holds no batches, it forwards each BATCH frame
    it received (the same zmq_msg, refcounted, not copied) and remembers
    only batch id -> aggregator so the MDMS's BATCH_ACK finds its way back.
    When the uplink cannot take a batch now it answers BUSY itself, so the
    aggregator's store-and-forward keeps it (nothing is queued here beyond
    libzmq's pipe).

    State:
    - aggregators: zhashx node id -> aggregator_t (owned). Each holds its
      current routing id and its K workers (worker_t, owned by it).
    - routes: zhashx routing id (hex) -> aggregator_t (borrowed).
    - pending: zlistx of pending_t (owned), one per command forwarded to
      an aggregator and not yet answered; by_request: zhashx request id
      (hex) -> the oldest pending_t with that id, whose `next` chains the
      younger ones (the MDMS retries with the same request id).
    - unknown: zhashx routing id (hex) -> when we last answered it HELLO,
      so a peer we do not know is re-introduced at most once a heartbeat.
    - batches: zhashx batch id (u64, hashed in place, no key copy) ->
      batch_t, one per batch forwarded to the MDMS and not acknowledged
      yet: O(1) per BATCH and per BATCH_ACK. batch_order: zlistx of the
      same batch_t (owned), oldest expiry first (every entry lives the same
      time, and a refreshed one moves to the end), so expiry pops from the
      head instead of scanning. Bounded: batches_per_aggregator per live
      aggregator, and an aggregator's entries go with it.
    Failed handshakes on the aggregator ROUTER (SEC-AUD-2) come from an
    ami_monitor (a libzmq socket monitor read by a watcher actor of its
    own, ami_monitor.h), polled with the other sockets; it counts them,
    the head end warns (rate-limited) naming the peer's ip:port. The
    connecting sockets (MDP workers, MDMS uplink) are not watched: their
    peer is the configured broker or MDMS, and a failure there shows as
    DEGRADED (broker silent) or HEALTH not delivered, and is counted by
    that server.
    Expiry (pending requests, silent aggregators, a silent broker) is
    checked on a tick every min(heartbeat, broker heartbeat) / 2: tables
    are small (bounded by max_aggregators and max_requests) and a linear
    scan of them is cheaper than keeping them sorted.
    Clock: zclock_mono for timers; zclock_time (wall clock) only to compare
    with a command's expires_ms, which is wall-clock time at the MDMS.
*/
#include "ami_headend.h"
#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_monitor.h"
#include "ami_msg.h"
#include "ami_service.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*  RFC 7 worker protocol header and command bytes. */
#define MDP_WORKER          "MDPW01"
#define MDPW_READY          0x01
#define MDPW_REQUEST        0x02
#define MDPW_REPLY          0x03
#define MDPW_HEARTBEAT      0x04
#define MDPW_DISCONNECT     0x05

/*  Service of an aggregator at the broker: "agg." + its node id. */
#define S_SERVICE_PREFIX    "agg."
#define S_SERVICE_SIZE      (4 + AMI_MAX_ID + 1)
/*  The bus-wide liveness rule: a peer silent for 3 heartbeats is gone. */
#define S_AGG_LIVENESS      3
/*  libzmq routing ids are 1..255 bytes; keys are their hex, plus NUL. */
#define S_MAX_IDENTITY      255
#define S_KEY_SIZE          (2 * S_MAX_IDENTITY + 1)
#define S_RID_SIZE          (2 * AMI_REQUEST_ID_SIZE + 1)
/*  Most frames we keep of one message: a worker REQUEST is "", "MDPW01",
    command, client, "", body = 6 frames; a few more let a multi-frame
    body be recognised and refused (BAD_REQUEST) instead of dropped. */
#define S_MAX_FRAMES        16
/*  One message may exceed one frame's limit by its short envelope. */
#define S_MAX_MESSAGE       ((size_t) AMI_MAX_FRAME + 4096)
/*  Messages read from one socket per poll pass: amortises the poll call
    under load, and still returns to the other sockets within well under a
    millisecond. */
#define S_BATCH             64
/*  Frames this head end encodes itself (HELLO without meters, HEALTH with
    at most AMI_MAX_STATS (64) stats, ERROR with a 256-byte text) all stay
    under 3 KiB (the largest, a HEALTH, 2883 bytes at most); 8 KiB leaves
    a wide margin. */
#define S_OUT_SIZE          8192
/*  Routing ids remembered as "answered HELLO": more than any honest set of
    reconnecting aggregators; when full the table is simply cleared (the
    cost is one extra HELLO per peer). */
#define S_MAX_UNKNOWN       1024
/*  Linger of worker sockets: long enough for a final REPLY and DISCONNECT
    to reach the broker on close (so it forgets the worker now, not after
    liveness * heartbeat), short enough never to hold up shutdown. */
#define S_WORKER_LINGER_MS  100

typedef struct _headend_t headend_t;
typedef struct _aggregator_t aggregator_t;

typedef struct {
    aggregator_t *aggregator;   /* owner */
    unsigned index;             /* 0..K-1, for logs */
    zsock_t *sock;              /* DEALER to the broker, NULL if not open */
    int64_t broker_expiry;      /* reconnect when the broker is silent past this */
    size_t in_flight;           /* pending requests given to this worker */
    bool stale;                 /* a REPLY could not be sent: reconnect */
} worker_t;

struct _aggregator_t {
    ami_id_t node_id;
    char service [S_SERVICE_SIZE];
    char key [S_KEY_SIZE];      /* routing id in hex: the routes key */
    zframe_t *routing_id;
    int64_t expiry;             /* zclock_mono: gone when silent past this */
    worker_t *workers;          /* array of K */
    size_t in_flight;
    size_t batches;             /* its entries in self->batches */
};

/*  A BATCH forwarded to the MDMS, waiting for its BATCH_ACK. */
typedef struct {
    uint64_t batch_id;          /* the self->batches key points here */
    aggregator_t *aggregator;   /* who sent it: where the ack goes */
    int64_t expiry;             /* zclock_mono: forgotten after this */
    uint32_t copies;            /* forwarded, not yet acknowledged (a resend
                                   through this head end adds one) */
    void *handle;               /* in self->batch_order */
} batch_t;

typedef struct _pending_t pending_t;
struct _pending_t {
    char key [S_RID_SIZE];      /* request id in hex: the by_request key */
    uint8_t request_id [AMI_REQUEST_ID_SIZE];
    worker_t *worker;           /* the worker that must REPLY */
    aggregator_t *aggregator;   /* where the command went */
    zframe_t *client;           /* MDP client envelope (address) */
    int64_t expiry;             /* zclock_mono */
    pending_t *next;            /* younger request with the same id */
    void *handle;               /* in self->pending */
};

struct _headend_t {
    zsock_t *pipe;              /* borrowed */
    zsock_t *router;            /* aggregators */
    ami_monitor_t *watch;       /* failed handshakes on router (SEC-AUD-2) */
    zsock_t *mdms;              /* uplink, NULL when not configured */
    ami_cert_t *cert;           /* own copy of the node certificate */
    char node_id [AMI_MAX_ID + 1];
    char *endpoint;             /* bound aggregator endpoint, real port */
    char *broker;
    char broker_key [AMI_CERT_KEY_TXT_LEN + 1];
    int heartbeat_ms;
    int broker_heartbeat_ms;
    int broker_liveness;
    int workers_per_aggregator;
    size_t max_aggregators;
    size_t max_requests;
    int request_margin_ms;
    size_t batches_per_aggregator;
    int batch_expiry_ms;

    zhashx_t *aggregators;      /* node id -> aggregator_t, owned */
    zhashx_t *routes;           /* hex routing id -> aggregator_t, borrowed */
    zlistx_t *pending;          /* pending_t, owned */
    zhashx_t *by_request;       /* hex request id -> oldest pending_t */
    zhashx_t *unknown;          /* hex routing id -> int64_t last HELLO */
    zhashx_t *batches;          /* &batch_id -> batch_t, borrowed */
    zlistx_t *batch_order;      /* batch_t, owned, oldest expiry first */

    ami_msg_t *in;              /* decode scratch */
    ami_msg_t *out;             /* encode scratch */
    uint8_t obuf [S_OUT_SIZE];

    zmq_pollitem_t *items;      /* poll set */
    worker_t **item_workers;    /* worker of items [i], NULL for fixed sockets */
    size_t item_count;
    size_t item_cap;
    bool dirty;                 /* rebuild the poll set */
    bool terminated;

    int64_t started;            /* zclock_mono at start */
    int64_t broker_heard;       /* last command from the broker, any worker */
    size_t workers_open;
    bool mdms_hello_due;        /* our HELLO could not be sent yet */
    bool mdms_blocked;          /* the last send to the MDMS failed */

    uint64_t requests;          /* statistics, see the header */
    uint64_t responses;
    uint64_t errors;
    uint64_t health_fwd;
    uint64_t dropped;
    uint64_t bad_frames;
    uint64_t reconnects;
    uint64_t batches_relayed;
    uint64_t acks_relayed;
    uint64_t acks_orphan;
    uint64_t batches_refused;
    uint64_t batches_busy;
    uint64_t health_refused;
    uint64_t requests_busy;     /* reads refused: max_requests in flight */
    uint64_t aggregators_refused;   /* HELLOs refused: max_aggregators live */
    uint64_t acks_failed;       /* own BUSY acks the ROUTER would not take */

    ami_log_limit_t warn_limit; /* warnings about peers' input (ami_log.h) */
};


/* ---------------------------------------------------------------------- */
/*  Logging and small helpers                                               */

static void
s_warn (headend_t *self, const char *format, ...) CHECK_PRINTF (2);

/*  Warn about bad input, at most AMI_HEADEND_LOG_BURST lines per second. */
static void
s_warn (headend_t *self, const char *format, ...)
{
    if (!self->warn_limit.burst)
        self->warn_limit.burst = AMI_HEADEND_LOG_BURST;
    char prefix [64];
    snprintf (prefix, sizeof prefix, "headend %s", self->node_id);
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (&self->warn_limit, prefix, format, args);
    va_end (args);
}

/*  Hex of data into out (2 * size + 1 bytes). */
static void
s_hex (const byte *data, size_t size, char *out)
{
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out [2 * i] = hex [data [i] >> 4];
        out [2 * i + 1] = hex [data [i] & 15];
    }
    out [2 * size] = 0;
}

/*  Routing id as hex key; false for an id libzmq would never produce. */
static bool
s_identity_key (zframe_t *identity, char *key)
{
    size_t size = identity ? zframe_size (identity) : 0;
    if (size == 0 || size > S_MAX_IDENTITY)
        return false;
    s_hex (zframe_data (identity), size, key);
    return true;
}

typedef struct {
    const void *data;
    size_t size;
} s_part_t;

/*  Send a multipart message without blocking. Returns 0, or the libzmq
    errno (EAGAIN: queue full; EHOSTUNREACH: ROUTER peer gone). Only the
    first part can fail: libzmq checks the high-water mark and the route
    at the start of a message and sends multipart messages atomically. */
static int
s_send_parts (zsock_t *sock, const s_part_t *parts, size_t count)
{
    void *handle = zsock_resolve (sock);
    for (size_t i = 0; i < count; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < count ? ZMQ_SNDMORE : 0);
        if (zmq_send (handle, parts [i].data, parts [i].size, flags) == -1)
            return zmq_errno ();
    }
    return 0;
}

/*  Receive one message frame by frame, keeping at most S_MAX_FRAMES
    frames and S_MAX_MESSAGE bytes (the rest is read and discarded).
    Frames are kept as received, so ZAP metadata stays readable. Returns
    NULL for an oversized or unreadable message (logged and counted). */
static zmsg_t *
s_recv (headend_t *self, zsock_t *sock, const char *peer)
{
    zmsg_t *msg = zmsg_new ();
    size_t frames = 0, bytes = 0;
    bool oversized = false, more = true;
    while (more) {
        zframe_t *frame = zframe_recv (sock);
        if (!frame) {
            zmsg_destroy (&msg);
            return NULL;        //  interrupted; nothing useful to log
        }
        more = zframe_more (frame);
        frames++;
        bytes += zframe_size (frame);
        if (!oversized && msg && frames <= S_MAX_FRAMES && bytes <= S_MAX_MESSAGE)
            zmsg_append (msg, &frame);
        else {
            oversized = true;
            zframe_destroy (&frame);
        }
    }
    if (oversized || !msg) {
        self->bad_frames++;
        s_warn (self, "%s: message of %zu frames, %zu bytes is over the limit, "
                "dropped", peer, frames, bytes);
        zmsg_destroy (&msg);
    }
    return msg;
}


/* ---------------------------------------------------------------------- */
/*  Frames the head end makes                                               */

/*  HELLO(role "headend", node_id, meters []) into self->obuf. */
static int
s_encode_hello (headend_t *self, size_t *len)
{
    ami_msg_reset (self->out, AMI_MSG_HELLO);
    snprintf (self->out->hello.role, sizeof self->out->hello.role, "headend");
    snprintf (self->out->hello.node_id, sizeof self->out->hello.node_id, "%s",
              self->node_id);
    self->out->hello.meter_count = 0;
    return ami_msg_encode (self->out, self->obuf, sizeof self->obuf, len);
}

static int
s_encode_error (headend_t *self, const uint8_t *request_id, int code,
                const char *text, size_t *len)
{
    ami_msg_reset (self->out, AMI_MSG_ERROR);
    ami_error_t *error = &self->out->error;
    error->has_request_id = request_id != NULL;
    if (request_id)
        memcpy (error->request_id, request_id, AMI_REQUEST_ID_SIZE);
    error->code = (uint16_t) code;
    snprintf (error->origin, sizeof error->origin, "%s", self->node_id);
    snprintf (error->text, sizeof error->text, "%s", text);
    return ami_msg_encode (self->out, self->obuf, sizeof self->obuf, len);
}

static void
s_stat (ami_health_t *health, const char *name, uint64_t value)
{
    //  A programming error: s_fill_health sends more than a HEALTH holds
    assert (health->stat_count < AMI_MAX_STATS);
    if (health->stat_count < AMI_MAX_STATS) {
        ami_stat_t *stat = &health->stats [health->stat_count++];
        snprintf (stat->name, sizeof stat->name, "%s", name);
        stat->value = value;
    }
}

/*  Our own HEALTH into self->out (also the STATS pipe reply). */
static void
s_fill_health (headend_t *self)
{
    int64_t now = zclock_mono ();
    ami_msg_reset (self->out, AMI_MSG_HEALTH);
    ami_health_t *health = &self->out->health;
    snprintf (health->role, sizeof health->role, "headend");
    snprintf (health->node_id, sizeof health->node_id, "%s", self->node_id);
    //  Degraded: we have workers and none has heard the broker lately
    bool broker_silent = now - self->broker_heard
                       > (int64_t) self->broker_heartbeat_ms * self->broker_liveness;
    health->state = self->workers_open > 0 && broker_silent
                  ? AMI_STATE_DEGRADED : AMI_STATE_READY;
    health->uptime_ms = (uint64_t) (now - self->started);
    s_stat (health, "aggregators", zhashx_size (self->aggregators));
    s_stat (health, "workers", self->workers_open);
    s_stat (health, "in-flight", zlistx_size (self->pending));
    s_stat (health, "requests", self->requests);
    s_stat (health, "responses", self->responses);
    s_stat (health, "errors", self->errors);
    s_stat (health, "health-fwd", self->health_fwd);
    s_stat (health, "dropped", self->dropped);
    s_stat (health, "bad-frames", self->bad_frames);
    s_stat (health, "reconnects", self->reconnects);
    s_stat (health, "batches_relayed", self->batches_relayed);
    s_stat (health, "acks_relayed", self->acks_relayed);
    s_stat (health, "acks_orphan", self->acks_orphan);
    s_stat (health, "batches_refused", self->batches_refused);
    s_stat (health, "batches_busy", self->batches_busy);
    s_stat (health, "batches_inflight", zlistx_size (self->batch_order));
    s_stat (health, "health_refused", self->health_refused);
    s_stat (health, "requests_busy", self->requests_busy);
    s_stat (health, "handshakes_refused", ami_monitor_refused (self->watch));
    s_stat (health, "handshakes_failed", ami_monitor_failed (self->watch));
    s_stat (health, "aggregators_refused", self->aggregators_refused);
    s_stat (health, "acks_failed", self->acks_failed);
    s_stat (health, "max_aggregators", self->max_aggregators);
}

static int
s_encode_health (headend_t *self, size_t *len)
{
    s_fill_health (self);
    return ami_msg_encode (self->out, self->obuf, sizeof self->obuf, len);
}

/*  BATCH_ACK(batch_id, status, credit) into self->obuf. */
static int
s_encode_batch_ack (headend_t *self, uint64_t batch_id, int status,
                    uint32_t credit, size_t *len)
{
    ami_msg_reset (self->out, AMI_MSG_BATCH_ACK);
    self->out->batch_ack.batch_id = batch_id;
    self->out->batch_ack.status = (uint16_t) status;
    self->out->batch_ack.credit = credit;
    return ami_msg_encode (self->out, self->obuf, sizeof self->obuf, len);
}


/* ---------------------------------------------------------------------- */
/*  The batch table: batch id -> the aggregator its BATCH_ACK goes to       */

/*  Batch ids are consecutive per sender (random start, +1): mix all 64
    bits (MurmurHash3's fmix64 finaliser) so zhashx's buckets spread. */
static size_t
s_batch_hash (const void *key)
{
    uint64_t x = *(const uint64_t *) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return (size_t) x;
}

static int
s_batch_compare (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y ? 1 : 0;
}

static void
s_batch_forget (headend_t *self, batch_t *batch)
{
    zhashx_delete (self->batches, &batch->batch_id);
    batch->aggregator->batches--;
    zlistx_delete (self->batch_order, batch->handle);      //  frees it
}

/*  Remember that agg sent batch_id (or one more copy of it). Returns false
    on out of memory (then its ack will be an orphan; the aggregator
    resends on its ack timeout). */
static bool
s_batch_remember (headend_t *self, aggregator_t *agg, batch_t *batch,
                  uint64_t batch_id)
{
    int64_t expiry = zclock_mono () + self->batch_expiry_ms;
    if (batch) {                        //  a resend through this head end
        if (batch->copies < UINT32_MAX)
            batch->copies++;
        batch->expiry = expiry;
        zlistx_move_end (self->batch_order, batch->handle);
        return true;
    }
    batch = (batch_t *) calloc (1, sizeof *batch);
    if (!batch)
        return false;
    batch->batch_id = batch_id;
    batch->aggregator = agg;
    batch->expiry = expiry;
    batch->copies = 1;
    batch->handle = zlistx_add_end (self->batch_order, batch);
    if (!batch->handle) {
        free (batch);
        return false;
    }
    if (zhashx_insert (self->batches, &batch->batch_id, batch)) {
        zlistx_delete (self->batch_order, batch->handle);
        return false;
    }
    agg->batches++;
    return true;
}

/*  Forget every batch of an aggregator that has gone: its acks become
    orphans (it resends what it holds when it comes back). A linear pass,
    but only when an aggregator goes. */
static void
s_batch_drop_aggregator (headend_t *self, aggregator_t *agg)
{
    if (!self->batch_order || agg->batches == 0)
        return;
    batch_t *batch = (batch_t *) zlistx_first (self->batch_order);
    while (batch && agg->batches > 0) {
        batch_t *next = (batch_t *) zlistx_next (self->batch_order);
        if (batch->aggregator == agg)
            s_batch_forget (self, batch);
        batch = next;
    }
}

/*  Forget batches whose ack did not come in time: the oldest are first. */
static void
s_batch_expire (headend_t *self, int64_t now)
{
    size_t expired = 0;
    batch_t *batch;
    while ((batch = (batch_t *) zlistx_first (self->batch_order))
       &&  now >= batch->expiry) {
        s_batch_forget (self, batch);
        expired++;
    }
    if (expired)
        ami_log_debug ("headend %s: %zu batch(es) not acknowledged in %d ms "
                       "forgotten", self->node_id, expired, self->batch_expiry_ms);
}

static void
s_batch_destructor (void **item)
{
    free (*item);
    *item = NULL;
}

/*  Send [routing id][frame] on the ROUTER without copying the frame's
    bytes (ZFRAME_REUSE: libzmq shares the refcounted message). Returns 0
    or the libzmq errno (EHOSTUNREACH: peer gone; EAGAIN: queue full);
    ROUTER checks both on the first part, so a message goes whole or not. */
static int
s_router_forward (headend_t *self, zframe_t *routing_id, zframe_t *frame)
{
    if (zframe_send (&routing_id, self->router,
                     ZFRAME_REUSE | ZFRAME_MORE | ZFRAME_DONTWAIT))
        return zmq_errno ();
    if (zframe_send (&frame, self->router, ZFRAME_REUSE | ZFRAME_DONTWAIT))
        return zmq_errno ();
    return 0;
}


/* ---------------------------------------------------------------------- */
/*  MDMS uplink                                                             */

/*  Note the outcome of a send to the MDMS. The uplink is ZMQ_IMMEDIATE,
    so EAGAIN means "not connected" as well as "queue full": say so once
    when it starts and once when it ends, not for every frame. */
static void
s_mdms_result (headend_t *self, int rc, const char *what)
{
    if (rc == 0) {
        if (self->mdms_blocked)
            ami_log_info ("headend %s: the MDMS uplink takes frames again",
                          self->node_id);
        self->mdms_blocked = false;
    }
    else {
        if (!self->mdms_blocked)
            ami_log_warn ("headend %s: the MDMS uplink cannot take frames (%s: "
                          "not connected, or its queue is full): HEALTH is "
                          "dropped and BATCHes are answered BUSY until it can",
                          self->node_id, zmq_strerror (rc));
        self->mdms_blocked = true;
        ami_log_debug ("headend %s: %s not sent to the MDMS (%s)",
                       self->node_id, what, zmq_strerror (rc));
    }
}

/*  Send one frame to the MDMS ingest; if it cannot be queued now it is
    dropped and counted. Returns 0 or the libzmq errno. */
static int
s_mdms_send (headend_t *self, const void *data, size_t size, const char *what)
{
    if (!self->mdms)
        return ENOTCONN;
    s_part_t part = { data, size };
    int rc = s_send_parts (self->mdms, &part, 1);
    if (rc)
        self->dropped++;
    s_mdms_result (self, rc, what);
    return rc;
}

/*  Our HELLO to the MDMS; retried every tick until the uplink takes it
    (it is ZMQ_IMMEDIATE: nothing is queued before the connection is up). */
static void
s_mdms_hello (headend_t *self)
{
    size_t len;
    if (s_encode_hello (self, &len) || !self->mdms)
        return;
    s_part_t part = { self->obuf, len };
    int rc = s_send_parts (self->mdms, &part, 1);
    s_mdms_result (self, rc, "HELLO");
    self->mdms_hello_due = rc != 0;
}

static void
s_mdms_health (headend_t *self)
{
    size_t len;
    int rc = s_encode_health (self, &len);
    if (rc == AMI_OK)
        s_mdms_send (self, self->obuf, len, "HEALTH");
    else
        ami_log_error ("headend %s: cannot encode HEALTH: %s", self->node_id,
                       ami_strerror (rc));
}

/*  A BATCH_ACK from the MDMS (decoded in self->in): its bytes go unchanged
    to the aggregator that sent that batch through us. The ack answers one
    copy; the entry goes when every copy is answered. */
static void
s_mdms_batch_ack (headend_t *self, zframe_t *frame)
{
    uint64_t batch_id = self->in->batch_ack.batch_id;
    batch_t *batch = (batch_t *) zhashx_lookup (self->batches, &batch_id);
    if (!batch) {
        self->acks_orphan++;
        ami_log_debug ("headend %s: BATCH_ACK %" PRIu64 " (%s) for no batch "
                       "we forwarded (expired, or its aggregator gone): dropped",
                       self->node_id, batch_id,
                       ami_errname (self->in->batch_ack.status));
        return;
    }
    aggregator_t *agg = batch->aggregator;
    int rc = s_router_forward (self, agg->routing_id, frame);
    if (rc) {
        //  The aggregator resends on its ack timeout: nothing is lost
        self->dropped++;
        s_warn (self, "aggregator %s: BATCH_ACK %" PRIu64 " not relayed (%s)",
                agg->node_id, batch_id, zmq_strerror (rc));
    }
    else {
        self->acks_relayed++;
        ami_log_debug ("headend %s: BATCH_ACK %" PRIu64 " (%s, credit %" PRIu32
                       ") -> aggregator %s", self->node_id, batch_id,
                       ami_errname (self->in->batch_ack.status),
                       self->in->batch_ack.credit, agg->node_id);
    }
    if (--batch->copies == 0)
        s_batch_forget (self, batch);
}

/*  A message from the MDMS ingest: BATCH_ACK is relayed, HELLO answered,
    the rest dropped. */
static void
s_mdms_handle (headend_t *self)
{
    zmsg_t *msg = s_recv (self, self->mdms, "MDMS");
    if (!msg)
        return;
    zframe_t *frame = zmsg_first (msg);
    int rc = zmsg_size (msg) == 1
           ? ami_msg_decode (self->in, zframe_data (frame), zframe_size (frame))
           : AMI_E_ARITY;
    if (rc) {
        self->bad_frames++;
        s_warn (self, "MDMS: malformed message (%zu frames): %s, dropped",
                zmsg_size (msg), ami_strerror (rc));
    }
    else
    if (self->in->type == AMI_MSG_BATCH_ACK)
        s_mdms_batch_ack (self, frame);
    else
    if (self->in->type == AMI_MSG_HELLO) {
        ami_log_debug ("headend %s: MDMS %s said HELLO: introducing ourselves",
                       self->node_id, self->in->hello.node_id);
        s_mdms_hello (self);
    }
    else
        ami_log_debug ("headend %s: MDMS sent %s: not expected, dropped",
                       self->node_id, ami_msg_type_name (self->in->type));
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Workers (MDP/0.1 worker side, RFC 7)                                    */

/*  Send a worker command with an optional client envelope and body. */
static int
s_worker_send (worker_t *worker, byte command, zframe_t *client,
               const void *body, size_t size)
{
    if (!worker->sock)
        return ENOTSOCK;
    s_part_t parts [6] = {
        { "", 0 }, { MDP_WORKER, strlen (MDP_WORKER) }, { &command, 1 }
    };
    size_t count = 3;
    if (client) {
        parts [count++] = (s_part_t) { zframe_data (client), zframe_size (client) };
        parts [count++] = (s_part_t) { "", 0 };
        parts [count++] = (s_part_t) { body, size };
    }
    return s_send_parts (worker->sock, parts, count);
}

/*  Open the worker's DEALER, connect to the broker and send READY. */
static bool
s_worker_open (headend_t *self, worker_t *worker)
{
    aggregator_t *agg = worker->aggregator;
    worker->sock = zsock_new (ZMQ_DEALER);
    if (!worker->sock) {
        s_warn (self, "aggregator %s: cannot open MDP worker %u (socket limit?)",
                agg->node_id, worker->index);
        return false;
    }
    zsock_set_linger (worker->sock, S_WORKER_LINGER_MS);
    zsock_set_maxmsgsize (worker->sock, AMI_MAX_FRAME);
    //  One request at a time each way: see AMI_HEADEND_WORKER_HWM
    zsock_set_sndhwm (worker->sock, AMI_HEADEND_WORKER_HWM);
    zsock_set_rcvhwm (worker->sock, AMI_HEADEND_WORKER_HWM);
    if (ami_auth_client (worker->sock, self->cert, self->broker_key) != AMI_OK
    ||  zsock_connect (worker->sock, "%s", self->broker) == -1) {
        s_warn (self, "aggregator %s: MDP worker %u cannot connect to %s",
                agg->node_id, worker->index, self->broker);
        zsock_destroy (&worker->sock);
        return false;
    }
    self->workers_open++;
    self->dirty = true;
    worker->broker_expiry = zclock_mono ()
                          + (int64_t) self->broker_heartbeat_ms * self->broker_liveness;
    //  Queued until the connection is up
    s_part_t parts [4] = {
        { "", 0 }, { MDP_WORKER, strlen (MDP_WORKER) },
        { (byte []) { MDPW_READY }, 1 }, { agg->service, strlen (agg->service) }
    };
    if (s_send_parts (worker->sock, parts, 4))
        s_warn (self, "aggregator %s: MDP worker %u: READY not sent",
                agg->node_id, worker->index);
    ami_log_debug ("headend %s: MDP worker %u for %s: READY sent to %s",
                   self->node_id, worker->index, agg->service, self->broker);
    return true;
}

/*  Close the worker's socket, sending DISCONNECT first if asked. */
static void
s_worker_close (headend_t *self, worker_t *worker, bool disconnect)
{
    if (!worker->sock)
        return;
    if (disconnect)
        s_worker_send (worker, MDPW_DISCONNECT, NULL, NULL, 0);
    zsock_destroy (&worker->sock);
    self->workers_open--;
    self->dirty = true;
}

/*  Unlink a pending request from the tables and free it. */
static void
s_pending_remove (headend_t *self, pending_t *pending)
{
    pending_t *head = (pending_t *) zhashx_lookup (self->by_request, pending->key);
    if (head == pending) {
        if (pending->next)
            zhashx_update (self->by_request, pending->key, pending->next);
        else
            zhashx_delete (self->by_request, pending->key);
    }
    else {
        while (head && head->next != pending)
            head = head->next;
        if (head)
            head->next = pending->next;
    }
    pending->worker->in_flight--;
    pending->aggregator->in_flight--;
    zlistx_delete (self->pending, pending->handle);     //  frees it
}

static void
s_pending_destructor (void **item)
{
    pending_t *self = (pending_t *) *item;
    if (self) {
        zframe_destroy (&self->client);
        free (self);
        *item = NULL;
    }
}

/*  Answer a request with an ERROR made here, through worker, to client. */
static void
s_reply_error (headend_t *self, worker_t *worker, zframe_t *client,
               const uint8_t *request_id, int code, const char *text)
{
    char rid [S_RID_SIZE] = "-";
    if (request_id)
        ami_request_id_format (request_id, rid);
    size_t len;
    int rc = s_encode_error (self, request_id, code, text, &len);
    if (rc) {
        ami_log_error ("headend %s: cannot encode ERROR: %s", self->node_id,
                       ami_strerror (rc));
        return;
    }
    self->errors++;
    ami_log_info ("headend %s: request %s for %s: ERROR %s (%s)",
                  self->node_id, rid, worker->aggregator->service,
                  ami_errname (code), text);
    rc = s_worker_send (worker, MDPW_REPLY, client, self->obuf, len);
    if (rc) {
        //  The broker would think it busy for ever: start it afresh
        s_warn (self, "request %s: REPLY not sent to the broker (%s)", rid,
                zmq_strerror (rc));
        worker->stale = true;
    }
}

/*  Answer every pending request of worker (or of aggregator, when worker
    is NULL) with ERROR code, and forget it. */
static void
s_pending_fail (headend_t *self, aggregator_t *agg, worker_t *worker,
                int code, const char *text)
{
    pending_t *pending = (pending_t *) zlistx_first (self->pending);
    while (pending) {
        pending_t *next = (pending_t *) zlistx_next (self->pending);
        if ((worker && pending->worker == worker)
        ||  (!worker && pending->aggregator == agg)) {
            s_reply_error (self, pending->worker, pending->client,
                           pending->request_id, code, text);
            s_pending_remove (self, pending);
        }
        pending = next;
    }
}

/*  Forget (without answering) every pending request of this worker: its
    connection to the broker is gone, and the broker forgot the request. */
static void
s_pending_drop_worker (headend_t *self, worker_t *worker)
{
    pending_t *pending = (pending_t *) zlistx_first (self->pending);
    while (pending) {
        pending_t *next = (pending_t *) zlistx_next (self->pending);
        if (pending->worker == worker) {
            char rid [S_RID_SIZE];
            ami_request_id_format (pending->request_id, rid);
            s_warn (self, "request %s for %s lost with its broker connection",
                    rid, worker->aggregator->service);
            s_pending_remove (self, pending);
        }
        pending = next;
    }
}

/*  Start the worker afresh: a new socket (so a new routing id at the
    broker) and READY. Requests it held are lost at the broker. */
static void
s_worker_reconnect (headend_t *self, worker_t *worker, bool disconnect,
                    const char *why)
{
    ami_log_info ("headend %s: MDP worker %u for %s reconnects: %s",
                  self->node_id, worker->index, worker->aggregator->service,
                  why);
    s_pending_drop_worker (self, worker);
    s_worker_close (self, worker, disconnect);
    worker->stale = false;
    self->reconnects++;
    s_worker_open (self, worker);
}

/*  An MDP REQUEST; msg is [client, "", body...]. */
static void
s_worker_request (headend_t *self, worker_t *worker, zmsg_t *msg)
{
    aggregator_t *agg = worker->aggregator;
    zframe_t *client = zmsg_pop (msg);
    zframe_t *empty = zmsg_pop (msg);
    bool valid = client && zframe_size (client) > 0
              && zframe_size (client) <= S_MAX_IDENTITY
              && empty && zframe_size (empty) == 0 && zmsg_size (msg) >= 1;
    zframe_destroy (&empty);
    if (!valid) {
        //  No usable client envelope: there is nobody to answer
        self->bad_frames++;
        s_warn (self, "broker: malformed REQUEST for %s, dropped", agg->service);
        zframe_destroy (&client);
        return;
    }
    zframe_t *body = zmsg_first (msg);
    int rc = ami_msg_decode (self->in, zframe_data (body), zframe_size (body));
    bool is_read = rc == AMI_OK && self->in->type == AMI_MSG_READ_REQ;
    uint8_t request_id [AMI_REQUEST_ID_SIZE];
    if (is_read)
        memcpy (request_id, self->in->read_req.request_id, sizeof request_id);
    if (!is_read || zmsg_size (msg) != 1) {
        char text [AMI_MAX_TEXT + 1];
        if (zmsg_size (msg) != 1)
            snprintf (text, sizeof text, "request body has %zu frames, "
                      "expected one READ_REQ", zmsg_size (msg));
        else
        if (rc)
            snprintf (text, sizeof text, "request body is not an ami message: %s",
                      ami_strerror (rc));
        else
            snprintf (text, sizeof text, "request body is %s, expected READ_REQ",
                      ami_msg_type_name (self->in->type));
        s_reply_error (self, worker, client, is_read ? request_id : NULL,
                       AMI_E_BAD_REQUEST, text);
        zframe_destroy (&client);
        return;
    }
    char rid [S_RID_SIZE];
    ami_request_id_format (request_id, rid);
    char meter [AMI_MAX_ID + 1];
    snprintf (meter, sizeof meter, "%s", self->in->read_req.meter_id);

    //  Remember it until its command expires (plus the margin), capped
    uint64_t now_ms = (uint64_t) zclock_time ();
    uint64_t expires = self->in->read_req.expires_ms;
    uint64_t until = expires > UINT64_MAX - (uint64_t) self->request_margin_ms
                   ? UINT64_MAX : expires + (uint64_t) self->request_margin_ms;
    if (until <= now_ms) {
        s_reply_error (self, worker, client, request_id, AMI_E_EXPIRED,
                       "command expired before it reached the head end");
        zframe_destroy (&client);
        return;
    }
    //  SEC-AVAIL-2: over the bound the read is answered BUSY at once,
    //  neither remembered nor forwarded (the MDMS retries or reports it)
    if (zlistx_size (self->pending) >= self->max_requests) {
        self->requests_busy++;
        s_warn (self, "request %s for %s refused: %zu requests in flight",
                rid, agg->service, self->max_requests);
        s_reply_error (self, worker, client, request_id, AMI_E_BUSY,
                       "head end request table full");
        zframe_destroy (&client);
        return;
    }
    uint64_t ttl = until - now_ms;
    if (ttl > AMI_HEADEND_MAX_PENDING_MS)
        ttl = AMI_HEADEND_MAX_PENDING_MS;

    //  Room to remember it first: a command sent whose answer cannot be
    //  routed would leave the worker busy at the broker for ever
    pending_t *pending = (pending_t *) calloc (1, sizeof *pending);
    if (pending)
        pending->handle = zlistx_add_end (self->pending, pending);
    if (!pending || !pending->handle) {
        free (pending);
        ami_log_error ("headend %s: request %s: out of memory", self->node_id,
                       rid);
        s_reply_error (self, worker, client, request_id, AMI_E_BUSY,
                       "head end out of memory");
        zframe_destroy (&client);
        return;
    }
    //  Forward the frame's bytes unchanged to the aggregator
    s_part_t parts [2] = {
        { zframe_data (agg->routing_id), zframe_size (agg->routing_id) },
        { zframe_data (body), zframe_size (body) }
    };
    rc = s_send_parts (self->router, parts, 2);
    if (rc) {
        zlistx_delete (self->pending, pending->handle);     //  frees it
        s_reply_error (self, worker, client, request_id,
                       rc == EAGAIN ? AMI_E_BUSY : AMI_E_NO_ROUTE,
                       rc == EAGAIN ? "aggregator queue full"
                                    : "aggregator connection gone");
        zframe_destroy (&client);
        return;
    }
    memcpy (pending->key, rid, sizeof pending->key);
    memcpy (pending->request_id, request_id, sizeof request_id);
    pending->worker = worker;
    pending->aggregator = agg;
    pending->client = client;
    pending->expiry = zclock_mono () + (int64_t) ttl;
    pending_t *head = (pending_t *) zhashx_lookup (self->by_request, rid);
    if (head) {
        while (head->next)
            head = head->next;
        head->next = pending;
    }
    else
        zhashx_insert (self->by_request, rid, pending);
    worker->in_flight++;
    agg->in_flight++;
    self->requests++;
    ami_log_debug ("headend %s: request %s meter %s -> aggregator %s "
                   "(worker %u)", self->node_id, rid, meter, agg->node_id,
                   worker->index);
}

/*  A message on a worker's socket, from the broker. */
static void
s_worker_handle (headend_t *self, worker_t *worker)
{
    aggregator_t *agg = worker->aggregator;
    zmsg_t *msg = s_recv (self, worker->sock, "broker");
    if (!msg)
        return;
    zframe_t *empty = zmsg_pop (msg);
    zframe_t *header = zmsg_pop (msg);
    zframe_t *command = zmsg_pop (msg);
    bool valid = empty && zframe_size (empty) == 0
              && header && zframe_streq (header, MDP_WORKER)
              && command && zframe_size (command) == 1;
    byte cmd = valid ? *zframe_data (command) : 0;
    zframe_destroy (&empty);
    zframe_destroy (&header);
    zframe_destroy (&command);
    if (!valid) {
        self->bad_frames++;
        s_warn (self, "broker: malformed MDP message to worker %u of %s, dropped",
                worker->index, agg->service);
        zmsg_destroy (&msg);
        return;
    }
    //  Any valid command but DISCONNECT proves the broker alive (RFC 7)
    if (cmd != MDPW_DISCONNECT) {
        self->broker_heard = zclock_mono ();
        worker->broker_expiry = self->broker_heard
            + (int64_t) self->broker_heartbeat_ms * self->broker_liveness;
    }
    switch (cmd) {
    case MDPW_REQUEST:
        s_worker_request (self, worker, msg);
        break;
    case MDPW_HEARTBEAT:
        if (zmsg_size (msg) != 0) {
            self->bad_frames++;
            s_warn (self, "broker: malformed HEARTBEAT to %s, ignored", agg->service);
        }
        break;
    case MDPW_DISCONNECT:
        s_worker_reconnect (self, worker, false, "the broker sent DISCONNECT");
        break;
    default:
        self->bad_frames++;
        s_warn (self, "broker: unexpected MDP command 0x%02x to %s, dropped",
                cmd, agg->service);
        break;
    }
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Aggregators                                                             */

static void
s_aggregator_destroy (headend_t *self, aggregator_t **agg_p)
{
    aggregator_t *agg = *agg_p;
    if (!agg)
        return;
    if (agg->workers) {
        for (int i = 0; i < self->workers_per_aggregator; i++)
            s_worker_close (self, &agg->workers [i], true);
        free (agg->workers);
    }
    zframe_destroy (&agg->routing_id);
    free (agg);
    *agg_p = NULL;
}

/*  The aggregator has gone (or we stop): answer its requests in flight
    with NO_ROUTE, DISCONNECT its workers, forget it. */
static void
s_aggregator_remove (headend_t *self, aggregator_t *agg, const char *why)
{
    ami_log_info ("headend %s: aggregator %s gone (%s): %zu request(s) in "
                  "flight answered NO_ROUTE, service %s withdrawn",
                  self->node_id, agg->node_id, why, agg->in_flight,
                  agg->service);
    char text [AMI_MAX_TEXT + 1];
    snprintf (text, sizeof text, "aggregator %s: %s", agg->node_id, why);
    s_pending_fail (self, agg, NULL, AMI_E_NO_ROUTE, text);
    s_batch_drop_aggregator (self, agg);
    zhashx_delete (self->routes, agg->key);
    char node_id [AMI_MAX_ID + 1];
    snprintf (node_id, sizeof node_id, "%s", agg->node_id);
    zhashx_delete (self->aggregators, node_id);    //  detaches it only
    s_aggregator_destroy (self, &agg);
}

/*  Create a live aggregator and open its workers. */
static aggregator_t *
s_aggregator_new (headend_t *self, const char *node_id, zframe_t *routing_id,
                  const char *key)
{
    aggregator_t *agg = (aggregator_t *) calloc (1, sizeof *agg);
    if (!agg)
        return NULL;
    snprintf (agg->node_id, sizeof agg->node_id, "%s", node_id);
    snprintf (agg->service, sizeof agg->service, S_SERVICE_PREFIX "%s", node_id);
    snprintf (agg->key, sizeof agg->key, "%s", key);
    agg->routing_id = zframe_dup (routing_id);
    agg->workers = (worker_t *) calloc ((size_t) self->workers_per_aggregator,
                                        sizeof (worker_t));
    if (!agg->routing_id || !agg->workers
    ||  zhashx_insert (self->aggregators, agg->node_id, agg)) {
        s_aggregator_destroy (self, &agg);
        return NULL;
    }
    if (zhashx_insert (self->routes, agg->key, agg)) {
        zhashx_delete (self->aggregators, agg->node_id);
        s_aggregator_destroy (self, &agg);
        return NULL;
    }
    int opened = 0;
    for (int i = 0; i < self->workers_per_aggregator; i++) {
        agg->workers [i].aggregator = agg;
        agg->workers [i].index = (unsigned) i;
        if (s_worker_open (self, &agg->workers [i]))
            opened++;
    }
    ami_log_info ("headend %s: aggregator %s live: service %s offered by %d of "
                  "%d worker(s)", self->node_id, node_id, agg->service, opened,
                  self->workers_per_aggregator);
    return agg;
}

/*  A HELLO on the ROUTER. frame is the content frame as received (its ZAP
    metadata names the certificate the peer connected with). */
static void
s_aggregator_hello (headend_t *self, zframe_t *routing_id, const char *key,
                    zframe_t *frame)
{
    const ami_hello_t *hello = &self->in->hello;
    const char *cert_role = ami_auth_peer_meta (frame, AMI_CERT_META_ROLE);
    const char *cert_node = ami_auth_peer_meta (frame, AMI_CERT_META_NODE_ID);
    if (!streq (hello->role, "aggregator")) {
        self->bad_frames++;
        s_warn (self, "peer %.20s: HELLO from %s with role '%s' refused: only "
                "aggregators connect here", key, hello->node_id, hello->role);
        return;
    }
    if (!cert_role || !streq (cert_role, "aggregator")
    ||  !cert_node || !streq (cert_node, hello->node_id)) {
        self->bad_frames++;
        s_warn (self, "peer %.20s: HELLO as aggregator %s refused: its "
                "certificate is %s %s", key, hello->node_id,
                cert_role ? cert_role : "(no role)",
                cert_node ? cert_node : "(no node-id)");
        return;
    }
    zhashx_delete (self->unknown, key);
    int64_t expiry = zclock_mono () + (int64_t) S_AGG_LIVENESS * self->heartbeat_ms;
    aggregator_t *agg = (aggregator_t *) zhashx_lookup (self->aggregators,
                                                        hello->node_id);
    if (agg) {
        if (!streq (agg->key, key)) {
            //  It reconnected: answers for the old connection may be lost;
            //  its pending requests expire in their own time
            zframe_t *copy = zframe_dup (routing_id);
            if (!copy)
                return;
            ami_log_info ("headend %s: aggregator %s reconnected",
                          self->node_id, agg->node_id);
            zhashx_delete (self->routes, agg->key);
            zframe_destroy (&agg->routing_id);
            agg->routing_id = copy;
            snprintf (agg->key, sizeof agg->key, "%s", key);
            //  A routing id belongs to one certificate, hence one node id
            zhashx_delete (self->routes, key);
            zhashx_insert (self->routes, key, agg);
        }
        agg->expiry = expiry;
        return;
    }
    if (zhashx_size (self->aggregators) >= self->max_aggregators) {
        //  Not live: its next message is answered HELLO like any unknown
        //  peer's, and its HELLO then is refused (and counted) again
        self->aggregators_refused++;
        s_warn (self, "aggregator %s refused: %zu aggregators already live "
                "(headend/max-aggregators)", hello->node_id,
                self->max_aggregators);
        return;
    }
    agg = s_aggregator_new (self, hello->node_id, routing_id, key);
    if (agg)
        agg->expiry = expiry;
    else
        ami_log_error ("headend %s: aggregator %s: out of memory",
                       self->node_id, hello->node_id);
}

/*  Answer a peer we do not know with our HELLO, at most once a heartbeat. */
static void
s_hello_unknown (headend_t *self, zframe_t *routing_id, const char *key)
{
    int64_t now = zclock_mono ();
    int64_t *last = (int64_t *) zhashx_lookup (self->unknown, key);
    if (last && now - *last < self->heartbeat_ms)
        return;
    if (!last) {
        if (zhashx_size (self->unknown) >= S_MAX_UNKNOWN)
            zhashx_purge (self->unknown);
        last = (int64_t *) malloc (sizeof *last);
        if (!last || zhashx_insert (self->unknown, key, last)) {
            free (last);
            return;
        }
    }
    *last = now;
    size_t len;
    if (s_encode_hello (self, &len))
        return;
    s_part_t parts [2] = {
        { zframe_data (routing_id), zframe_size (routing_id) },
        { self->obuf, len }
    };
    int rc = s_send_parts (self->router, parts, 2);
    ami_log_debug ("headend %s: unknown peer %.20s: answered HELLO%s",
                   self->node_id, key, rc ? " (not sent)" : "");
}

/*  A READ_RESP or ERROR with a request id, from aggregator agg: back to
    the broker, bytes unchanged, through the worker that got the request.
    When the MDMS retried (same request id, several attempts in flight
    here), every attempt sent to agg is answered with this frame: the
    aggregator keeps only the latest path per request id, so one answer
    is all that will come, and answering each attempt frees its worker
    now instead of at its expiry (the MDMS drops the duplicates). */
static void
s_aggregator_answer (headend_t *self, aggregator_t *agg,
                     const uint8_t *request_id, zframe_t *frame, int type)
{
    char rid [S_RID_SIZE];
    ami_request_id_format (request_id, rid);
    pending_t *pending = (pending_t *) zhashx_lookup (self->by_request, rid);
    int answered = 0;
    while (pending) {
        pending_t *next = pending->next;
        if (pending->aggregator == agg) {
            int rc = s_worker_send (pending->worker, MDPW_REPLY, pending->client,
                                    zframe_data (frame), zframe_size (frame));
            if (rc) {
                s_warn (self, "request %s: REPLY not sent to the broker (%s)",
                        rid, zmq_strerror (rc));
                pending->worker->stale = true;      //  see s_reply_error
            }
            else
                self->responses++;
            s_pending_remove (self, pending);
            answered++;
        }
        pending = next;
    }
    if (answered)
        ami_log_debug ("headend %s: request %s: %s from aggregator %s relayed "
                       "(%d attempt(s))", self->node_id, rid,
                       ami_msg_type_name (type), agg->node_id, answered);
    else
        ami_log_debug ("headend %s: %s for request %s from aggregator %s: "
                       "unknown or expired request id, dropped", self->node_id,
                       ami_msg_type_name (type), rid, agg->node_id);
}

/*  Answer a BATCH ourselves: BATCH_ACK(batch_id, AMI_E_BUSY, credit 1).
    Credit 1, not 0: the aggregator keeps one batch probing this path and
    resumes as soon as the uplink can take it; the MDMS's next ack gives
    the real credit back. If even this cannot be sent (the aggregator has
    gone, or its queue is full) it is counted (acks_failed) and warned
    about: the aggregator resends on its ack timeout. */
static void
s_batch_busy (headend_t *self, aggregator_t *agg, uint64_t batch_id,
              const char *why)
{
    self->batches_busy++;
    ami_log_debug ("headend %s: BATCH %" PRIu64 " from aggregator %s answered "
                   "BUSY: %s", self->node_id, batch_id, agg->node_id, why);
    size_t len;
    if (s_encode_batch_ack (self, batch_id, AMI_E_BUSY, 1, &len))
        return;
    s_part_t parts [2] = {
        { zframe_data (agg->routing_id), zframe_size (agg->routing_id) },
        { self->obuf, len }
    };
    int rc = s_send_parts (self->router, parts, 2);
    if (rc) {
        self->acks_failed++;
        s_warn (self, "aggregator %s: BUSY BATCH_ACK %" PRIu64 " not sent (%s)",
                agg->node_id, batch_id, zmq_strerror (rc));
    }
}

/*  A BATCH from live aggregator agg (decoded in self->in; frame is the
    frame as received). Its origin must be the aggregator itself - the
    node id its HELLO gave and its CURVE certificate carries - so a
    captured aggregator cannot inject interval data under another's name.
    Then the frame itself goes to the MDMS, and its id is remembered. */
static void
s_aggregator_batch (headend_t *self, aggregator_t *agg, zframe_t *frame)
{
    const ami_batch_t *in = &self->in->batch;
    uint64_t batch_id = in->batch_id;
    if (!streq (in->origin, agg->node_id)) {
        self->batches_refused++;
        s_warn (self, "aggregator %s: BATCH %" PRIu64 " with origin %s refused: "
                "an aggregator sends only its own batches", agg->node_id,
                batch_id, in->origin);
        return;
    }
    uint32_t blocks = in->block_count;
    batch_t *batch = (batch_t *) zhashx_lookup (self->batches, &batch_id);
    if (!self->mdms) {
        s_batch_busy (self, agg, batch_id, "no MDMS uplink configured");
        return;
    }
    if (batch && batch->aggregator != agg) {
        //  Ids start at random 64-bit values: two senders collide only by
        //  accident (or a captured aggregator's guess); its ack could not be
        //  told apart, so the newcomer waits until the first is answered
        s_warn (self, "aggregator %s: BATCH %" PRIu64 " answered BUSY: aggregator "
                "%s has a batch with that id in flight", agg->node_id, batch_id,
                batch->aggregator->node_id);
        s_batch_busy (self, agg, batch_id, "batch id in use");
        return;
    }
    if (!batch && agg->batches >= self->batches_per_aggregator) {
        s_warn (self, "aggregator %s: BATCH %" PRIu64 " answered BUSY: %zu batches "
                "already in flight (its credit should prevent this)",
                agg->node_id, batch_id, agg->batches);
        s_batch_busy (self, agg, batch_id, "too many batches in flight");
        return;
    }
    //  The frame itself, shared with libzmq (no copy of up to 1 MiB)
    int rc = zframe_send (&frame, self->mdms, ZFRAME_REUSE | ZFRAME_DONTWAIT)
           ? zmq_errno () : 0;
    s_mdms_result (self, rc, "BATCH");
    if (rc) {
        s_batch_busy (self, agg, batch_id, "the MDMS uplink cannot take it now");
        return;
    }
    self->batches_relayed++;
    if (!s_batch_remember (self, agg, batch, batch_id))
        ami_log_error ("headend %s: BATCH %" PRIu64 " of aggregator %s: out of "
                       "memory, its ack will not be relayed", self->node_id,
                       batch_id, agg->node_id);
    ami_log_debug ("headend %s: BATCH %" PRIu64 " of aggregator %s (%" PRIu32
                   " blocks, %zu bytes) -> MDMS%s", self->node_id, batch_id,
                   agg->node_id, blocks, zframe_size (frame),
                   batch ? " (resent)" : "");
}

/*  A HEALTH from live aggregator agg (SEC-INT-4): forwarded only when it
    is the aggregator's own (role aggregator, its node id) or a fleet's
    (role meter, forwarded by the aggregator). Anything else would let a
    captured aggregator add or overwrite the MDMS's status rows of other
    services (other aggregators, head ends, the MDMS itself). */
static void
s_aggregator_health (headend_t *self, aggregator_t *agg, zframe_t *frame)
{
    const ami_health_t *health = &self->in->health;
    bool own = streq (health->role, "aggregator")
            && streq (health->node_id, agg->node_id);
    bool fleet = streq (health->role, "meter");
    if (!own && !fleet) {
        self->health_refused++;
        s_warn (self, "aggregator %s: HEALTH of %s %s refused: an aggregator "
                "forwards only its own and its fleets' (role meter)",
                agg->node_id, health->role, health->node_id);
        return;
    }
    if (self->mdms && s_mdms_send (self, zframe_data (frame), zframe_size (frame),
                                   "HEALTH") == 0)
        self->health_fwd++;
}

/*  A message on the aggregator ROUTER. */
static void
s_router_handle (headend_t *self)
{
    zmsg_t *msg = s_recv (self, self->router, "aggregator");
    if (!msg)
        return;
    //  SEC-KEY-3: a revoked or expired key's live session is not acted on
    //  (checked before anything, so it does not even keep the peer live)
    if (!ami_auth_peer_allowed (NULL, zmsg_last (msg))) {
        self->bad_frames++;
        zmsg_destroy (&msg);
        return;
    }
    zframe_t *routing_id = zmsg_pop (msg);
    char key [S_KEY_SIZE];
    if (!s_identity_key (routing_id, key)) {
        self->bad_frames++;
        s_warn (self, "aggregator side: message without a usable routing id");
        goto done;
    }
    aggregator_t *agg = (aggregator_t *) zhashx_lookup (self->routes, key);
    if (agg)        //  anything heard keeps it live
        agg->expiry = zclock_mono () + (int64_t) S_AGG_LIVENESS * self->heartbeat_ms;
    const char *who = agg ? agg->node_id : key;

    zframe_t *frame = zmsg_first (msg);
    int rc = zmsg_size (msg) == 1
           ? ami_msg_decode (self->in, zframe_data (frame), zframe_size (frame))
           : AMI_E_ARITY;
    if (rc) {
        self->bad_frames++;
        s_warn (self, "aggregator %.32s: malformed message (%zu frames): %s, "
                "dropped", who, zmsg_size (msg), ami_strerror (rc));
        if (!agg)
            s_hello_unknown (self, routing_id, key);
        goto done;
    }
    int type = self->in->type;
    if (type == AMI_MSG_HELLO) {
        s_aggregator_hello (self, routing_id, key, frame);
        goto done;
    }
    if (!agg) {
        ami_log_debug ("headend %s: %s from unknown peer %.20s, dropped",
                       self->node_id, ami_msg_type_name (type), key);
        s_hello_unknown (self, routing_id, key);
        goto done;
    }
    switch (type) {
    case AMI_MSG_HEALTH:
        s_aggregator_health (self, agg, frame);
        break;
    case AMI_MSG_READ_RESP: {
        uint8_t request_id [AMI_REQUEST_ID_SIZE];
        memcpy (request_id, self->in->read_resp.request_id, sizeof request_id);
        s_aggregator_answer (self, agg, request_id, frame, type);
        break;
    }
    case AMI_MSG_ERROR:
        if (self->in->error.has_request_id) {
            uint8_t request_id [AMI_REQUEST_ID_SIZE];
            memcpy (request_id, self->in->error.request_id, sizeof request_id);
            s_aggregator_answer (self, agg, request_id, frame, type);
        }
        else
            s_warn (self, "aggregator %s: ERROR %s without request id (%s), "
                    "dropped", who, ami_errname (self->in->error.code),
                    self->in->error.text);
        break;
    case AMI_MSG_BATCH:
        s_aggregator_batch (self, agg, frame);
        break;
    default:
        self->bad_frames++;
        s_warn (self, "aggregator %s: unexpected %s, dropped", who,
                ami_msg_type_name (type));
        break;
    }
done:
    zframe_destroy (&routing_id);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Timers                                                                  */

static void
s_tick (headend_t *self, bool beat)
{
    int64_t now = zclock_mono ();
    s_batch_expire (self, now);
    if (self->mdms_hello_due)
        s_mdms_hello (self);
    //  Requests nobody answered in time: the worker must REPLY to get work
    pending_t *pending = (pending_t *) zlistx_first (self->pending);
    while (pending) {
        pending_t *next = (pending_t *) zlistx_next (self->pending);
        if (now >= pending->expiry) {
            char text [AMI_MAX_TEXT + 1];
            snprintf (text, sizeof text, "aggregator %s did not answer before "
                      "the command expired", pending->aggregator->node_id);
            s_reply_error (self, pending->worker, pending->client,
                           pending->request_id, AMI_E_TIMEOUT, text);
            s_pending_remove (self, pending);
        }
        pending = next;
    }
    //  Silent aggregators (collect first: no deletes while iterating)
    zlistx_t *gone = zlistx_new ();
    for (aggregator_t *agg = (aggregator_t *) zhashx_first (self->aggregators);
         agg && gone; agg = (aggregator_t *) zhashx_next (self->aggregators))
        if (now >= agg->expiry)
            zlistx_add_end (gone, agg);
    for (aggregator_t *agg = gone ? (aggregator_t *) zlistx_first (gone) : NULL;
         agg; agg = (aggregator_t *) zlistx_next (gone))
        s_aggregator_remove (self, agg, "silent for 3 heartbeats");
    zlistx_destroy (&gone);

    //  Workers: reconnect when the broker is silent, else heartbeat
    for (aggregator_t *agg = (aggregator_t *) zhashx_first (self->aggregators);
         agg; agg = (aggregator_t *) zhashx_next (self->aggregators)) {
        for (int i = 0; i < self->workers_per_aggregator; i++) {
            worker_t *worker = &agg->workers [i];
            if (!worker->sock) {
                if (beat)               //  retry a worker that failed to open
                    s_worker_open (self, worker);
            }
            else
            if (now >= worker->broker_expiry)
                s_worker_reconnect (self, worker, true, "the broker is silent");
            else
            if (worker->stale)
                s_worker_reconnect (self, worker, true, "a REPLY was lost");
            else
            if (beat)
                s_worker_send (worker, MDPW_HEARTBEAT, NULL, NULL, 0);
        }
    }
}


/* ---------------------------------------------------------------------- */
/*  Failed handshakes (SEC-AUD-2)                                           */

/*  A failed handshake on the aggregator ROUTER, already counted by the
    monitor: warned about (rate-limited: anyone who can open a TCP
    connection can cause one) with the peer's address. */
static void
s_handshake_failed (const char *name, int kind, uint32_t status, const char *peer,
                    void *arg)
{
    headend_t *self = (headend_t *) arg;
    char line [256];
    s_warn (self, "%s", ami_monitor_describe (name, kind, status, peer, line, sizeof line));
}

static void
s_watch (headend_t *self)
{
    ami_monitor_drain (self->watch, s_handshake_failed, self);
}


/* ---------------------------------------------------------------------- */
/*  Pipe                                                                    */

static int
s_strcmp (const void *a, const void *b)
{
    return strcmp (*(char *const *) a, *(char *const *) b);
}

static void
s_status (headend_t *self)
{
    zmsg_t *reply = zmsg_new ();
    if (!reply)
        return;
    zmsg_addstrf (reply, "%zu", zhashx_size (self->aggregators));
    zmsg_addstrf (reply, "%zu", self->workers_open);
    zmsg_addstrf (reply, "%zu", zlistx_size (self->pending));
    size_t count = zhashx_size (self->aggregators), n = 0;
    char **lines = (char **) calloc (count ? count : 1, sizeof (char *));
    if (lines) {
        for (aggregator_t *agg = (aggregator_t *) zhashx_first (self->aggregators);
             agg && n < count; agg = (aggregator_t *) zhashx_next (self->aggregators)) {
            size_t open = 0;
            for (int i = 0; i < self->workers_per_aggregator; i++)
                open += agg->workers [i].sock != NULL;
            lines [n++] = zsys_sprintf ("%s %zu %zu", agg->node_id, open,
                                        agg->in_flight);
        }
        qsort (lines, n, sizeof (char *), s_strcmp);
        for (size_t i = 0; i < n; i++) {
            if (lines [i])
                zmsg_addstr (reply, lines [i]);
            zstr_free (&lines [i]);
        }
        free (lines);
    }
    zmsg_send (&reply, self->pipe);
}

/*  One frame "name value" per stat of our HEALTH, in HEALTH order. */
static void
s_stats (headend_t *self)
{
    s_watch (self);                     //  counts as of now
    zmsg_t *reply = zmsg_new ();
    if (!reply)
        return;
    s_fill_health (self);
    const ami_health_t *health = &self->out->health;
    for (uint32_t i = 0; i < health->stat_count; i++)
        zmsg_addstrf (reply, "%s %" PRIu64, health->stats [i].name,
                      health->stats [i].value);
    zmsg_send (&reply, self->pipe);
}

static void
s_pipe_handle (headend_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;        //  interrupted
        return;
    }
    char *command = zmsg_popstr (msg);
    if (!command)
        ami_log_error ("headend %s: empty pipe command", self->node_id);
    else
    if (streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "ENDPOINT"))
        zstr_send (self->pipe, self->endpoint);
    else
    if (streq (command, "STATUS"))
        s_status (self);
    else
    if (streq (command, "STATS"))
        s_stats (self);
    else
        ami_log_error ("headend %s: unknown pipe command '%s'", self->node_id,
                       command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Start-up and the loop                                                   */

static bool
s_z85_key (const char *key)
{
    if (!key || strlen (key) != AMI_CERT_KEY_TXT_LEN)
        return false;
    uint8_t bin [32];
    return zmq_z85_decode (bin, key) != NULL;
}

static bool
s_configure (headend_t *self, const ami_headend_config_t *config)
{
    if (!config) {
        ami_log_error ("headend: no configuration");
        return false;
    }
    if (!config->node_id || !ami_id_valid (config->node_id)) {
        ami_log_error ("headend: node id missing or invalid");
        return false;
    }
    snprintf (self->node_id, sizeof self->node_id, "%s", config->node_id);
    if (!config->cert || !ami_cert_has_secret (config->cert)) {
        ami_log_error ("headend %s: no certificate with a secret key",
                       self->node_id);
        return false;
    }
    if (!streq (ami_cert_node_id (config->cert), self->node_id)) {
        ami_log_error ("headend %s: certificate belongs to '%s'", self->node_id,
                       ami_cert_node_id (config->cert));
        return false;
    }
    if (!config->endpoint || !*config->endpoint) {
        ami_log_error ("headend %s: no aggregator endpoint (headend/endpoint)",
                       self->node_id);
        return false;
    }
    if (!config->broker || !*config->broker || !s_z85_key (config->broker_key)) {
        ami_log_error ("headend %s: broker endpoint or broker public key "
                       "missing or invalid (headend/broker, "
                       "headend/broker-cert)", self->node_id);
        return false;
    }
    bool has_mdms = config->mdms && *config->mdms;
    if (has_mdms && !s_z85_key (config->mdms_key)) {
        ami_log_error ("headend %s: MDMS public key missing or invalid "
                       "(headend/mdms-cert)", self->node_id);
        return false;
    }
    if (config->heartbeat_ms < 0 || config->broker_heartbeat_ms < 0
    ||  config->broker_liveness < 0 || config->workers_per_aggregator < 0
    ||  config->request_margin_ms < 0 || config->batch_expiry_ms < 0
    ||  config->workers_per_aggregator > AMI_HEADEND_MAX_WORKERS) {
        ami_log_error ("headend %s: negative interval or count, or more than "
                       "%d workers per aggregator", self->node_id,
                       AMI_HEADEND_MAX_WORKERS);
        return false;
    }
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms
                                              : AMI_HEADEND_HEARTBEAT_MS;
    self->broker_heartbeat_ms = config->broker_heartbeat_ms
        ? config->broker_heartbeat_ms : AMI_HEADEND_BROKER_HEARTBEAT_MS;
    self->broker_liveness = config->broker_liveness ? config->broker_liveness
                                                    : AMI_HEADEND_BROKER_LIVENESS;
    self->workers_per_aggregator = config->workers_per_aggregator
        ? config->workers_per_aggregator : AMI_HEADEND_WORKERS;
    self->max_aggregators = config->max_aggregators ? config->max_aggregators
                                                    : AMI_HEADEND_MAX_AGGREGATORS;
    self->max_requests = config->max_requests ? config->max_requests
                                              : AMI_HEADEND_MAX_REQUESTS;
    self->request_margin_ms = config->request_margin_ms
        ? config->request_margin_ms : AMI_HEADEND_REQUEST_MARGIN_MS;
    self->batches_per_aggregator = config->batches_per_aggregator
        ? config->batches_per_aggregator : AMI_HEADEND_BATCHES_PER_AGGREGATOR;
    self->batch_expiry_ms = config->batch_expiry_ms
        ? config->batch_expiry_ms : AMI_HEADEND_BATCH_EXPIRY_MS;
    //  Liveness windows must fit an int64 of milliseconds comfortably
    if ((int64_t) self->broker_heartbeat_ms * self->broker_liveness > INT32_MAX
    ||  (int64_t) self->heartbeat_ms * S_AGG_LIVENESS > INT32_MAX) {
        ami_log_error ("headend %s: heartbeat * liveness is too large",
                       self->node_id);
        return false;
    }
    snprintf (self->broker_key, sizeof self->broker_key, "%s", config->broker_key);
    self->broker = strdup (config->broker);
    //  Own copy of the certificate: workers open long after start-up
    int err = 0;
    self->cert = ami_cert_new_from_keys (ami_cert_role (config->cert),
                                         ami_cert_node_id (config->cert),
                                         ami_cert_key_type (config->cert),
                                         ami_cert_public_key (config->cert),
                                         ami_cert_secret_key (config->cert), &err);
    if (!self->broker || !self->cert) {
        ami_log_error ("headend %s: cannot copy configuration: %s",
                       self->node_id, ami_strerror (err ? err : AMI_E_NOMEM));
        return false;
    }
    return true;
}

static bool
s_open (headend_t *self, const ami_headend_config_t *config)
{
    self->router = zsock_new (ZMQ_ROUTER);
    if (!self->router) {
        ami_log_error ("headend %s: cannot create ROUTER socket",
                       self->node_id);
        return false;
    }
    zsock_set_linger (self->router, 0);
    zsock_set_maxmsgsize (self->router, AMI_MAX_FRAME);
    //  A send to a gone aggregator fails at once (EHOSTUNREACH) instead
    //  of vanishing: the request is answered NO_ROUTE without waiting
    zsock_set_router_mandatory (self->router, 1);
    //  Per aggregator: small frames down, BATCHes up (the reasons and the
    //  bytes are at the constants)
    zsock_set_sndhwm (self->router, AMI_HEADEND_AGG_SNDHWM);
    zsock_set_rcvhwm (self->router, AMI_HEADEND_AGG_RCVHWM);
    if (ami_auth_server (self->router, self->cert) != AMI_OK) {
        ami_log_error ("headend %s: cannot make %s a CURVE server (is ami_auth "
                       "running?)", self->node_id, config->endpoint);
        return false;
    }
    if (zsock_bind (self->router, "%s", config->endpoint) == -1) {
        ami_log_error ("headend %s: cannot bind %s: %s", self->node_id,
                       config->endpoint, zmq_strerror (zmq_errno ()));
        return false;
    }
    self->endpoint = zsock_last_endpoint (self->router);
    if (!self->endpoint)
        self->endpoint = strdup (config->endpoint);
    if (!self->endpoint)
        return false;
    //  SEC-AUD-2: failed handshakes on the one server socket
    zsock_t *servers [] = { self->router };
    const char *names [] = { "aggregators" };
    self->watch = ami_monitor_new (servers, names, 1);
    if (!self->watch)
        return false;                   //  logged
    if (config->mdms && *config->mdms) {
        self->mdms = zsock_new (ZMQ_DEALER);
        if (!self->mdms) {
            ami_log_error ("headend %s: cannot create MDMS socket",
                           self->node_id);
            return false;
        }
        //  Linger 0: HEALTH is re-sent every heartbeat, and a batch not
        //  acknowledged is resent by its aggregator: nothing to flush
        zsock_set_linger (self->mdms, 0);
        zsock_set_maxmsgsize (self->mdms, AMI_MAX_FRAME);
        //  Immediate (PROTOCOL.md 8.1): queue nothing while the MDMS is not
        //  connected, so a BATCH is answered BUSY at once and stays in the
        //  aggregator's custody (it may go through the other head end)
        zsock_set_immediate (self->mdms, 1);
        //  BATCHes up to 1 MiB each: the bound keeps their bytes at
        //  256 MiB; BATCH_ACKs down (see the constants)
        zsock_set_sndhwm (self->mdms, AMI_HEADEND_MDMS_SNDHWM);
        zsock_set_rcvhwm (self->mdms, AMI_HEADEND_MDMS_RCVHWM);
        if (ami_auth_client (self->mdms, self->cert, config->mdms_key) != AMI_OK
        ||  zsock_connect (self->mdms, "%s", config->mdms) == -1) {
            ami_log_error ("headend %s: cannot connect to the MDMS at %s",
                           self->node_id, config->mdms);
            return false;
        }
        self->mdms_hello_due = true;    //  sent once connected (s_tick)
    }
    else
        ami_log_info ("headend %s: no MDMS uplink configured", self->node_id);
    return true;
}

static void
s_poll_add (headend_t *self, size_t *n, void *sock, worker_t *worker)
{
    self->items [*n] = (zmq_pollitem_t) { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
    self->item_workers [(*n)++] = worker;
}

/*  Rebuild the poll set: pipe, ROUTER, monitor, MDMS, then every open
    worker. */
static bool
s_poll_rebuild (headend_t *self)
{
    size_t need = 4 + self->workers_open;
    if (need > self->item_cap) {
        size_t cap = need * 2;
        zmq_pollitem_t *items = (zmq_pollitem_t *) realloc (self->items,
                                                            cap * sizeof *items);
        if (items)
            self->items = items;
        worker_t **owners = (worker_t **) realloc (self->item_workers,
                                                   cap * sizeof *owners);
        if (owners)
            self->item_workers = owners;
        if (!items || !owners)
            return false;
        self->item_cap = cap;
    }
    size_t n = 0;
    s_poll_add (self, &n, self->pipe, NULL);
    s_poll_add (self, &n, self->router, NULL);
    s_poll_add (self, &n, ami_monitor_actor (self->watch), NULL);
    if (self->mdms)
        s_poll_add (self, &n, self->mdms, NULL);
    for (aggregator_t *agg = (aggregator_t *) zhashx_first (self->aggregators);
         agg; agg = (aggregator_t *) zhashx_next (self->aggregators))
        for (int i = 0; i < self->workers_per_aggregator && n < self->item_cap; i++)
            if (agg->workers [i].sock)
                s_poll_add (self, &n, agg->workers [i].sock, &agg->workers [i]);
    self->item_count = n;
    self->dirty = false;
    return true;
}

static void
s_headend_destroy (headend_t *self)
{
    //  Answer what is in flight, DISCONNECT every worker, then close
    if (self->aggregators) {
        zlistx_t *all = zlistx_new ();
        for (aggregator_t *agg = (aggregator_t *) zhashx_first (self->aggregators);
             agg && all; agg = (aggregator_t *) zhashx_next (self->aggregators))
            zlistx_add_end (all, agg);
        for (aggregator_t *agg = all ? (aggregator_t *) zlistx_first (all) : NULL;
             agg; agg = (aggregator_t *) zlistx_next (all))
            s_aggregator_remove (self, agg, "head end stopping");
        zlistx_destroy (&all);
    }
    zlistx_destroy (&self->pending);
    zhashx_destroy (&self->by_request);
    zhashx_destroy (&self->routes);
    zhashx_destroy (&self->aggregators);
    zhashx_destroy (&self->unknown);
    zhashx_destroy (&self->batches);        //  borrows what batch_order owns
    zlistx_destroy (&self->batch_order);
    zsock_destroy (&self->mdms);
    ami_monitor_destroy (&self->watch);     //  before its socket
    zsock_destroy (&self->router);
    ami_cert_destroy (&self->cert);
    ami_msg_destroy (&self->in);
    ami_msg_destroy (&self->out);
    free (self->items);
    free (self->item_workers);
    zstr_free (&self->endpoint);
    zstr_free (&self->broker);
    free (self);
}

static void
s_free_destructor (void **item)
{
    free (*item);
    *item = NULL;
}

void
ami_headend_actor (zsock_t *pipe, void *args)
{
    const ami_headend_config_t *config = (const ami_headend_config_t *) args;
    zsock_signal (pipe, 0);             //  CZMQ: signal first (ami_service.h)
    headend_t *self = (headend_t *) calloc (1, sizeof *self);
    if (!self) {
        ami_actor_failed (pipe);
        return;
    }
    self->pipe = pipe;
    self->started = self->broker_heard = zclock_mono ();
    self->aggregators = zhashx_new ();
    self->routes = zhashx_new ();
    self->pending = zlistx_new ();
    self->by_request = zhashx_new ();
    self->unknown = zhashx_new ();
    self->batches = zhashx_new ();
    self->batch_order = zlistx_new ();
    self->in = ami_msg_new ();
    self->out = ami_msg_new ();
    bool ok = self->aggregators && self->routes && self->pending
           && self->by_request && self->unknown && self->batches
           && self->batch_order && self->in && self->out;
    if (ok) {
        zlistx_set_destructor (self->pending, s_pending_destructor);
        zhashx_set_destructor (self->unknown, s_free_destructor);
        //  Keys are the entries' own batch_id fields: no copy, no free
        zhashx_set_key_hasher (self->batches, s_batch_hash);
        zhashx_set_key_comparator (self->batches, s_batch_compare);
        zhashx_set_key_duplicator (self->batches, NULL);
        zhashx_set_key_destructor (self->batches, NULL);
        zlistx_set_destructor (self->batch_order, s_batch_destructor);
    }
    ok = ok && s_configure (self, config) && s_open (self, config)
            && s_poll_rebuild (self);
    if (!ok) {
        s_headend_destroy (self);
        ami_actor_failed (pipe);
        return;
    }
    ami_log_info ("headend %s: aggregators on %s, broker %s, MDMS %s, %d "
                  "worker(s) per aggregator", self->node_id, self->endpoint,
                  self->broker, self->mdms ? config->mdms : "(none)",
                  self->workers_per_aggregator);
    //  config is the caller's and may be gone once we report READY
    ami_actor_ready (pipe);

    //  Expiry checks twice per shortest interval: aggregators and workers
    //  are noticed gone within half an interval of their deadline
    int tick_ms = (self->heartbeat_ms < self->broker_heartbeat_ms
                   ? self->heartbeat_ms : self->broker_heartbeat_ms) / 2;
    if (tick_ms < 1)
        tick_ms = 1;
    int64_t now = zclock_mono ();
    int64_t next_tick = now + tick_ms;
    int64_t next_beat = now + self->broker_heartbeat_ms;
    int64_t next_health = now + self->heartbeat_ms;
    while (!self->terminated && !zsys_interrupted) {
        if (self->dirty && !s_poll_rebuild (self)) {
            ami_log_error ("headend %s: out of memory", self->node_id);
            break;
        }
        now = zclock_mono ();
        int64_t wake = next_tick;
        if (next_beat < wake)
            wake = next_beat;
        if (next_health < wake)
            wake = next_health;
        long timeout = wake > now ? (long) (wake - now) : 0;
        int rc = zmq_poll (self->items, (int) self->item_count, timeout);
        if (rc == -1) {
            if (zmq_errno () == EINTR)
                continue;
            ami_log_error ("headend %s: poll failed: %s", self->node_id,
                           zmq_strerror (zmq_errno ()));
            break;
        }
        //  Serve every ready socket. Worker sockets are only closed in
        //  their own handler (reconnect) or in s_tick, so items [i] stays
        //  valid until its own turn.
        size_t count = self->item_count;
        for (size_t i = 0; rc > 0 && i < count && !self->terminated; i++) {
            if (!(self->items [i].revents & ZMQ_POLLIN))
                continue;
            worker_t *worker = self->item_workers [i];
            void *socket = self->items [i].socket;
            if (worker) {
                //  Same socket still? (it may have reconnected meanwhile)
                if (worker->sock && zsock_resolve (worker->sock) == socket)
                    s_worker_handle (self, worker);
            }
            else
            if (socket == zsock_resolve (self->pipe))
                s_pipe_handle (self);
            else
            if (socket == zsock_resolve (ami_monitor_actor (self->watch)))
                s_watch (self);
            else {
                zsock_t *sock = socket == zsock_resolve (self->router)
                              ? self->router : self->mdms;
                int batch = S_BATCH;
                do {
                    if (sock == self->router)
                        s_router_handle (self);
                    else
                        s_mdms_handle (self);
                }
                while (--batch > 0 && (zsock_events (sock) & ZMQ_POLLIN));
            }
        }
        if (self->terminated)
            break;
        now = zclock_mono ();
        bool beat = now >= next_beat;
        if (beat)
            next_beat = now + self->broker_heartbeat_ms;
        if (now >= next_tick || beat) {
            s_tick (self, beat);
            next_tick = now + tick_ms;
        }
        if (now >= next_health) {
            s_mdms_health (self);
            next_health = now + self->heartbeat_ms;
        }
    }
    ami_log_info ("headend %s: stopping", self->node_id);
    s_headend_destroy (self);
}

zactor_t *
ami_headend_new (const ami_headend_config_t *config)
{
    return config ? ami_actor_new (ami_headend_actor, (void *) config) : NULL;
}
