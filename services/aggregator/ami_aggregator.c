/*  ami_aggregator.c - the pole-top relay between meter fleets and head ends.

    Design. One CZMQ actor owns a fleet-facing ROUTER (bind) and one DEALER
    per head end (connect): the zguide's asynchronous "broker-less relay"
    (ROUTER front, DEALERs back), except that routing is by meter id, not
    by load, and the back end is several redundant uplinks. Requests are
    correlated by request id, as in the zguide's Majordomo / Lazy Pirate
    patterns the MDMS and head ends use above us.

    Tables, all owned by the actor thread:
    - fleets:  hex routing id -> fleet_t (node id, liveness, meter count);
    - routes:  meter id -> fleet_t * (borrowed);
    - pending: hex request id -> pending_t (head end index, fleet, meter,
               expiry).
    A fleet's removal walks routes and pending to drop what points to it:
    O(meters) but rare (a fleet disconnecting), and it keeps each route at
    one hash entry (no per-fleet meter list doubling the memory).

    Timing: a tick every heartbeat sends HEALTH to every head end, expires
    silent fleets and expired requests. Clock: zclock_mono (never jumps);
    zclock_time only to turn a command's expires_ms into a local deadline.

    Every send is non-blocking (ZMQ_DONTWAIT); see ami_aggregator.h for
    what is dropped when a queue is full, and why.

    Interval data: store and forward with credit-based flow control (the
    zguide's chapter 7 "credit-based flow control", the same pattern on the
    field link - we grant credit to fleets - and end to end - the MDMS
    grants credit to us). The unit of storage is our own outgoing BATCH:
    a fleet's blocks are copied (one memcpy each, their msgpack bytes as
    received) straight into the open batch's buffer, behind S_HDR_ROOM
    bytes where the BATCH header is written when the batch is closed, so a
    closed batch IS its frame: sending or resending it is one zmq_send of
    bytes that never change. One malloc per batch (not per block); every
    per-block step is O(1). A closed batch sits in exactly one list:
        resend    must go again now (its head end went, or none was live)
        retry     refused (non-zero status), due AMI_BATCH_RETRY_MS later
        ready     closed, never sent, waiting for credit or a head end
        inflight  sent, waiting for its ack, ordered by ack deadline
    (intrusive doubly-linked lists: O(1) moves; retry and inflight are
    ordered because their delays are constant) and in one hash table by
    batch_id (intrusive chaining) for the acks. Timeouts only ever look at
    the heads of retry and inflight. Head end liveness comes from each
    DEALER's socket monitor (ami_aggregator.h, "Head end liveness"); the
    same monitor counts failed handshakes with the head ends.

    Custody store (persisted store and forward). Every batch, open or
    closed, owns a SLOT: a record in the LMDB database "custody" (key = the
    slot number, 8 bytes big-endian; value = the batch's block bytes,
    exactly buf [S_HDR_ROOM .. S_HDR_ROOM + used), no header: restarting
    re-counts the blocks). Group commit, like the MDMS's ingest: the
    fleet BATCHes drained in one wake-up are appended in memory, marking
    each batch they touch DIRTY; then one write transaction puts every
    dirty batch whole (the open batch is rewritten as it grows: once per
    wake-up, not per block) and the wake-up's fleets are acknowledged
    only after it committed durably. A failed commit rolls the memory
    back to the last committed state (batches born in the group are
    freed, the open batch is cut back to its committed length) and those
    fleets are refused AMI_E_BUSY: what a fleet was told is safe is always
    on disk. When the MDMS acknowledges a batch its slot gets a TOMBSTONE
    (the record's value replaced by an empty one in a group commit:
    ami_store has no delete inside a batch), written with the next custody
    group or at the next heartbeat; a slot is reused only after its
    tombstone committed, so the records are bounded by the batches ever
    held at once. At start every non-empty record becomes a closed batch
    again (new batch_id: the MDMS de-duplicates by meter and interval).

    Failed handshakes on the fleet ROUTER (SEC-AUD-2): an ami_monitor (a
    libzmq socket monitor read by a watcher actor of its own,
    ami_monitor.h) counts them; the aggregator warns (rate-limited) naming
    the peer's ip:port.
*/
#include "ami_aggregator.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_monitor.h"
#include "ami_msg.h"
#include "ami_service.h"
#include "ami_store.h"

/*  libzmq routing ids are 1..255 bytes (ZMTP identity property). */
#define S_MAX_RID           255
#define S_RID_KEY_SIZE      (2 * S_MAX_RID + 1)
#define S_REQ_KEY_SIZE      (2 * AMI_REQUEST_ID_SIZE + 1)
/*  Frames handled per socket per wake-up: 64 amortises the poll call under
    load and still returns to the pipe and the tick within a millisecond. */
#define S_BATCH             64
/*  Encode buffer for our own messages (HELLO, ERROR: < 1 KiB; HEALTH of
    at most AMI_MAX_STATS stats: < 3 KiB). */
#define S_BUF_SIZE          4096
/*  ZMTP heartbeats on every link: a half-open TCP connection (a head end
    host that vanished) is noticed after 3 intervals and the DEALER
    reconnects. */
#define S_ZMTP_LIVENESS     3
/*  Room for our BATCH header in front of a batch's blocks: fixarray(5),
    version, type, batch_id (u64: <= 9 bytes), origin (str8 header + 32),
    blocks (array16 header: 3 bytes) = 49 bytes; 64 keeps blocks aligned. */
#define S_HDR_ROOM          64
#define S_HDR_MAX           49
/*  First allocation of a batch buffer: 64 KiB holds ~380 hourly blocks;
    it doubles as blocks arrive, up to S_HDR_ROOM + AMI_BATCH_MAX_BYTES,
    and shrinks to fit when the batch is closed. */
#define S_BATCH_CAP0        (64 * 1024)
/*  A send refused by libzmq (queue full, connection not attached yet) is
    tried again after 50 ms: long enough not to spin, short next to an ack
    timeout. */
#define S_SEND_RETRY_MS     50
/*  Initial buckets of the batch_id table (doubles at load 1). */
#define S_IDS0              256
/*  Custody store key: the slot number, big-endian (sorts numerically). */
#define S_SLOT_KEY          8
/*  Map size of the custody store, from the bounds (see s_store_map_size):
    per record, the key, LMDB's node header and a share of branch pages
    (~8 + 8 + 16 bytes; 64 leaves room), and a fixed part for the meta
    pages, the free-page database and an empty tree. */
#define S_MAP_RECORD        64
#define S_MAP_BASE          ((size_t) 1 << 20)
/*  What happens to a batch's slot when the batch is dropped. */
enum { S_SLOT_TOMB,         /* acknowledged: the record must go (tombstone) */
       S_SLOT_FREE,         /* never committed (rolled back): reuse at once */
       S_SLOT_KEEP };       /* shutting down: the record stays for the next start */

typedef struct {
    char key [S_RID_KEY_SIZE];  /* routing id in hex: the fleets table key */
    uint8_t rid [S_MAX_RID];
    size_t rid_size;
    char node_id [AMI_MAX_ID + 1];  /* from its certificate */
    int64_t expires;            /* zclock_mono: gone after this */
    size_t meters;              /* routes pointing here */
    bool hello;                 /* has sent at least one HELLO */
    uint32_t batch_max;         /* most blocks it has sent in one BATCH */
    size_t batch_bytes_max;     /* most block bytes it has sent in one BATCH */
} fleet_t;

/*  A routing id whose fleet connected again under a new one. */
typedef struct {
    char node_id [AMI_MAX_ID + 1];
    int64_t expires;            /* forgotten after this much silence */
} superseded_t;

typedef struct {
    size_t headend;             /* index of the head end it came from */
    fleet_t *fleet;             /* where it went (entries die with the fleet) */
    ami_id_t meter_id;
    uint8_t request_id [AMI_REQUEST_ID_SIZE];
    int64_t expires;            /* zclock_mono */
} pending_t;

typedef struct {
    char *name;
    char *endpoint;
    zsock_t *dealer;
    zsock_t *monitor;           /* PAIR reading the DEALER's socket monitor */
    uint64_t dropped;           /* frames dropped: its queue was full */
    bool dropping;              /* the last send to it was dropped */
    bool live;                  /* handshake succeeded, not disconnected since */
    bool hello_due;             /* our HELLO could not be sent yet */
    bool refused;               /* the last handshake failed (logged once) */
    size_t inflight;            /* our batches in flight through it */
} headend_t;

/*  Lists a closed batch can be in (see the design comment). */
enum { S_NONE, S_RESEND, S_RETRY, S_READY, S_INFLIGHT, S_LISTS };

/*  One of our own BATCHes: its frame and where it stands. */
typedef struct batch_s batch_t;
struct batch_s {
    uint64_t id;
    batch_t *prev, *next;       /* in lists [list] */
    batch_t *hnext;             /* in the batch_id table's chain */
    int list;                   /* S_NONE while open */
    uint8_t *buf;               /* S_HDR_ROOM, then the blocks */
    size_t cap;                 /* bytes allocated */
    size_t used;                /* block bytes after S_HDR_ROOM */
    size_t head;                /* closed: the frame is buf [head .. S_HDR_ROOM + used) */
    uint32_t blocks;
    int headend;                /* head end it last went through, -1 = none */
    int64_t due;                /* inflight: ack deadline; retry: resend time */
    uint32_t sends;             /* times sent */
    uint64_t slot;              /* its record in the custody store */
    bool dirty;                 /* got blocks in this group (in the dirty list) */
    bool fresh;                 /* born in this group: a rollback frees it */
    batch_t *dnext;             /* in the dirty list */
};

typedef struct {
    batch_t *first, *last;
    size_t size;
} blist_t;

typedef struct {
    zsock_t *pipe;              /* actor pipe, borrowed */
    zsock_t *router;            /* fleet-facing */
    ami_monitor_t *watch;       /* failed handshakes on router (SEC-AUD-2) */
    char *endpoint;             /* as bound */
    headend_t *headends;
    size_t headend_count;
    char node_id [AMI_MAX_ID + 1];
    int heartbeat_ms;
    size_t max_pending;
    size_t max_fleets;          /* bound on fleets, and on superseded */
    size_t max_meters;          /* bound on routes */
    zhashx_t *fleets;           /* key -> fleet_t, owned */
    zhashx_t *routes;           /* meter id -> fleet_t *, borrowed */
    zhashx_t *pending;          /* request key -> pending_t, owned */
    zhashx_t *superseded;       /* routing id key -> superseded_t, owned */
    ami_msg_t *in;              /* decoded input */
    ami_msg_t *out;             /* our own messages being encoded */
    uint8_t buf [S_BUF_SIZE];
    int64_t started;
    int64_t next_heartbeat;
    uint64_t relayed_down, relayed_up, unreachable, busy, dropped;
    uint64_t malformed, orphaned, duplicates;
    ami_log_limit_t warn_limit; /* warnings about peers' input (ami_log.h) */
    bool terminated;

    /* interval data (see the design comment) */
    size_t buffer_max;          /* bound on buffer_blocks */
    size_t buffer_bytes_max;    /* bound on buffer_bytes */
    uint32_t batch_blocks;      /* close a batch at this many blocks */
    int batch_delay_ms;         /* ...or this long after its first block */
    int ack_timeout_ms;         /* resend a batch not acked in this long */
    size_t buffer_blocks;       /* blocks held: open + closed batches */
    size_t buffer_bytes;        /* their bytes */
    batch_t *open;              /* being filled, NULL = none */
    int64_t open_since;         /* when its first block came */
    blist_t lists [S_LISTS];
    batch_t **ids;              /* batch_id table: buckets */
    size_t id_buckets;          /* power of two */
    size_t id_count;
    uint64_t next_batch_id;
    uint32_t credit;            /* end to end, from the last BATCH_ACK */
    int64_t probe_at;           /* credit 0, nothing in flight: probe then */
    int64_t send_retry_at;      /* a send was refused: try again then (0 = no) */
    uint64_t batches_in, blocks_in, batches_out, batches_acked, batches_resent;
    uint64_t overflow_batches, overflow_blocks, acks_refused, acks_unknown;
    uint64_t routes_refused;     /* HELLO claims on another live fleet's meters (SEC-INT-4) */
    uint64_t pending_busy;      /* READ_REQs refused: max_pending in flight (SEC-AVAIL-2) */
    uint64_t headend_handshakes_failed;     /* our handshakes with head ends that failed */
    uint64_t acks_failed;       /* BATCH_ACKs to fleets the ROUTER would not take */
    uint64_t fleets_refused;    /* frames from new fleets: fleets table full */
    uint64_t routes_refused_full;   /* HELLO meter ids: route table full */
    uint64_t superseded_full;   /* reconnections not remembered: table full */

    /* custody store (see the design comment) */
    char *state;                /* its directory */
    ami_store_t *store;
    unsigned custody_db;
    uint64_t next_slot;         /* never used yet from here up */
    uint64_t *free_slots;       /* reusable (their tombstones committed) */
    size_t free_count, free_cap;
    uint64_t *tombs;            /* acknowledged slots whose tombstone is due */
    size_t tomb_count, tomb_cap;
    batch_t *dirty;             /* batches touched by the group being built */
    bool group;                 /* a group is being built */
    batch_t *g_open;            /* the open batch when it began... */
    size_t g_open_used;         /* ...and its length then */
    uint32_t g_open_blocks;
    int64_t g_open_since;
    struct {                    /* fleets to acknowledge after the commit */
        char key [S_RID_KEY_SIZE];
        uint64_t batch_id;
        uint32_t blocks;
        size_t bytes;
    } acks [S_BATCH];
    size_t ack_count;
    bool store_failing;         /* the last commit failed (logged once a streak) */
    uint64_t store_refused;     /* fleet BATCHes refused AMI_E_BUSY: commit failed */
    uint64_t store_errors;      /* failed store transactions */
    uint64_t store_commits;     /* durable group commits */
    uint64_t restored_blocks;   /* blocks loaded from the store at start */
} agg_t;


/* ---------------------------------------------------------------------- */
/*  Helpers                                                                 */

static void
s_warn (agg_t *self, const char *format, ...) CHECK_PRINTF (2);

static void
s_warn (agg_t *self, const char *format, ...)
{
    if (!self->warn_limit.burst)
        self->warn_limit.burst = AMI_AGGREGATOR_LOG_BURST;
    char prefix [64];
    snprintf (prefix, sizeof prefix, "aggregator %s", self->node_id);
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (&self->warn_limit, prefix, format, args);
    va_end (args);
}

static void
s_hex (const uint8_t *data, size_t size, char *out)
{
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out [2 * i] = hex [data [i] >> 4];
        out [2 * i + 1] = hex [data [i] & 15];
    }
    out [2 * size] = 0;
}

static void
s_fleet_destroy (void **item)
{
    free (*item);
    *item = NULL;
}

static void
s_pending_destroy (void **item)
{
    free (*item);
    *item = NULL;
}

static void
s_superseded_destroy (void **item)
{
    free (*item);
    *item = NULL;
}

/*  Send a frame to a head end without blocking. */
static void
s_send_headend (agg_t *self, size_t index, const void *data, size_t size, const char *what)
{
    headend_t *headend = &self->headends [index];
    if (zmq_send (zsock_resolve (headend->dealer), data, size, ZMQ_DONTWAIT) == -1) {
        /* log the change of state, not every frame: a head end down for
           an hour would otherwise log once per heartbeat */
        if (!headend->dropping)
            ami_log_warn ("aggregator %s: head end %s is down or not keeping up (%s): "
                          "dropping its frames, starting with a %s", self->node_id,
                          headend->name, zmq_strerror (zmq_errno ()), what);
        headend->dropping = true;
        headend->dropped++;
        self->dropped++;
    }
    else
    if (headend->dropping) {
        ami_log_info ("aggregator %s: head end %s accepts frames again (%" PRIu64 " dropped)",
                      self->node_id, headend->name, headend->dropped);
        headend->dropping = false;
    }
}

/*  Send a frame to a fleet without blocking. Returns 0 or the errno:
    EHOSTUNREACH (connection gone), EAGAIN (its queue is full). */
static int
s_send_fleet (agg_t *self, fleet_t *fleet, const void *data, size_t size)
{
    void *handle = zsock_resolve (self->router);
    if (zmq_send (handle, fleet->rid, fleet->rid_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) == -1)
        return zmq_errno ();
    /* the ROUTER checks the peer and its queue on the first frame only */
    if (zmq_send (handle, data, size, ZMQ_DONTWAIT) == -1)
        return zmq_errno ();
    return 0;
}

static size_t
s_encode (agg_t *self)
{
    size_t len = 0;
    int rc = ami_msg_encode (self->out, self->buf, sizeof self->buf, &len);
    assert (rc == AMI_OK);      /* our own messages, bounded: a bug otherwise */
    return len;
}

/*  Our HELLO: role aggregator, no meters. */
static size_t
s_encode_hello (agg_t *self)
{
    ami_msg_reset (self->out, AMI_MSG_HELLO);
    snprintf (self->out->hello.role, sizeof self->out->hello.role, "aggregator");
    snprintf (self->out->hello.node_id, sizeof self->out->hello.node_id, "%s", self->node_id);
    return s_encode (self);
}

static void
s_send_error (agg_t *self, size_t headend, const uint8_t request_id [AMI_REQUEST_ID_SIZE],
              int code, const char *format, ...) CHECK_PRINTF (5);

static void
s_send_error (agg_t *self, size_t headend, const uint8_t request_id [AMI_REQUEST_ID_SIZE],
              int code, const char *format, ...)
{
    ami_msg_reset (self->out, AMI_MSG_ERROR);
    ami_error_t *error = &self->out->error;
    error->has_request_id = true;
    memcpy (error->request_id, request_id, AMI_REQUEST_ID_SIZE);
    error->code = (uint16_t) code;
    snprintf (error->origin, sizeof error->origin, "%s", self->node_id);
    va_list args;
    va_start (args, format);
    vsnprintf (error->text, sizeof error->text, format, args);
    va_end (args);
    char rid [S_REQ_KEY_SIZE];
    /* a BUSY refusal (a fleet not keeping up, max-pending) comes in
       floods, one per read a head end sends on while the overload lasts:
       a rate-limited warning, the rest counted (the busy stat has them all) */
    if (code == AMI_E_BUSY)
        s_warn (self, "request %s from head end %s refused: %s (%s)",
                ami_request_id_format (request_id, rid), self->headends [headend].name,
                error->text, ami_errname (code));
    else
        ami_log_info ("aggregator %s: request %s from head end %s: %s (%s)", self->node_id,
                      ami_request_id_format (request_id, rid), self->headends [headend].name,
                      error->text, ami_errname (code));
    size_t len = s_encode (self);
    s_send_headend (self, headend, self->buf, len, "ERROR");
}


/* ---------------------------------------------------------------------- */
/*  Interval data: custody, own batches, store and forward                 */

_Static_assert (AMI_PROTO_VERSION < 128 && AMI_MSG_BATCH < 128,
                "our BATCH header writes version and type as positive fixints");
_Static_assert (S_HDR_MAX <= S_HDR_ROOM, "the BATCH header fits its room");

/*  Move a batch out of its list (no-op if in none). */
static void
s_list_unlink (agg_t *self, batch_t *b)
{
    if (b->list == S_NONE)
        return;
    blist_t *l = &self->lists [b->list];
    if (b->prev)
        b->prev->next = b->next;
    else
        l->first = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else
        l->last = b->prev;
    b->prev = b->next = NULL;
    l->size--;
    if (b->list == S_INFLIGHT) {
        assert (b->headend >= 0 && self->headends [b->headend].inflight > 0);
        self->headends [b->headend].inflight--;
    }
    b->list = S_NONE;
}

/*  Put a batch at the end (or front) of a list, out of any other. */
static void
s_list_put (agg_t *self, batch_t *b, int list, bool front)
{
    s_list_unlink (self, b);
    blist_t *l = &self->lists [list];
    if (front) {
        b->next = l->first;
        if (l->first)
            l->first->prev = b;
        else
            l->last = b;
        l->first = b;
    }
    else {
        b->prev = l->last;
        if (l->last)
            l->last->next = b;
        else
            l->first = b;
        l->last = b;
    }
    l->size++;
    b->list = list;
    if (list == S_INFLIGHT) {
        assert (b->headend >= 0);
        self->headends [b->headend].inflight++;
    }
}

/*  The batch_id table: chained hash on a multiplicative mix of the id
    (ids are consecutive, the mix spreads them over the buckets). */
static size_t
s_id_slot (agg_t *self, uint64_t id)
{
    return (size_t) ((id * UINT64_C (0x9E3779B97F4A7C15)) >> 32) & (self->id_buckets - 1);
}

static batch_t *
s_id_lookup (agg_t *self, uint64_t id)
{
    for (batch_t *b = self->ids [s_id_slot (self, id)]; b; b = b->hnext)
        if (b->id == id)
            return b;
    return NULL;
}

static void
s_id_insert (agg_t *self, batch_t *b)
{
    if (self->id_count >= self->id_buckets) {
        /* double; if that fails the chains just grow longer */
        size_t old_buckets = self->id_buckets;
        batch_t **old = self->ids;
        batch_t **ids = (batch_t **) calloc (2 * old_buckets, sizeof *ids);
        if (ids) {
            self->ids = ids;
            self->id_buckets = 2 * old_buckets;
            for (size_t i = 0; i < old_buckets; i++)
                for (batch_t *c = old [i], *next; c; c = next) {
                    next = c->hnext;
                    size_t slot = s_id_slot (self, c->id);
                    c->hnext = ids [slot];
                    ids [slot] = c;
                }
            free (old);
        }
    }
    size_t slot = s_id_slot (self, b->id);
    b->hnext = self->ids [slot];
    self->ids [slot] = b;
    self->id_count++;
}

static void
s_id_remove (agg_t *self, batch_t *b)
{
    batch_t **link = &self->ids [s_id_slot (self, b->id)];
    while (*link && *link != b)
        link = &(*link)->hnext;
    assert (*link);             /* every closed batch is in the table */
    *link = b->hnext;
    self->id_count--;
}

/*  Push a slot number on a growable array. False when out of memory. */
static bool
s_slots_push (uint64_t **array, size_t *count, size_t *cap, uint64_t slot)
{
    if (*count == *cap) {
        size_t bigger = *cap ? 2 * *cap : 64;
        uint64_t *grown = (uint64_t *) realloc (*array, bigger * sizeof **array);
        if (!grown)
            return false;
        *array = grown;
        *cap = bigger;
    }
    (*array) [(*count)++] = slot;
    return true;
}

static batch_t *
s_batch_alloc (size_t cap)
{
    batch_t *b = (batch_t *) calloc (1, sizeof *b);
    if (!b)
        return NULL;
    b->cap = cap;
    b->buf = (uint8_t *) malloc (b->cap);
    if (!b->buf) {
        free (b);
        return NULL;
    }
    b->headend = -1;
    b->list = S_NONE;
    return b;
}

/*  A new, empty batch with a slot of its own: a reused one (its tombstone
    committed) or a never used one. */
static batch_t *
s_batch_new (agg_t *self, size_t cap)
{
    batch_t *b = s_batch_alloc (cap);
    if (b)
        b->slot = self->free_count ? self->free_slots [--self->free_count] : self->next_slot++;
    return b;
}

/*  Forget a batch: its blocks leave the buffer, and its slot goes as
    `fate` says (S_SLOT_TOMB: acknowledged; S_SLOT_FREE: rolled back;
    S_SLOT_KEEP: shutting down). */
static void
s_batch_drop (agg_t *self, batch_t *b, int fate)
{
    if (b == self->open)
        self->open = NULL;
    else {
        s_list_unlink (self, b);
        s_id_remove (self, b);
    }
    assert (self->buffer_blocks >= b->blocks && self->buffer_bytes >= b->used);
    self->buffer_blocks -= b->blocks;
    self->buffer_bytes -= b->used;
    //  Out of memory for the slot arrays: the slot is simply never reused
    //  (a tombstone not written leaves an acknowledged record, which the
    //  next start sends again: a duplicate the MDMS stores once).
    if (fate == S_SLOT_TOMB) {
        if (!s_slots_push (&self->tombs, &self->tomb_count, &self->tomb_cap, b->slot))
            ami_log_error ("aggregator %s: out of memory: custody record %" PRIu64
                           " stays in the store", self->node_id, b->slot);
    }
    else
    if (fate == S_SLOT_FREE)
        s_slots_push (&self->free_slots, &self->free_count, &self->free_cap, b->slot);
    free (b->buf);
    free (b);
}

/*  msgpack unsigned integer, shortest form. Returns bytes written (<= 9). */
static size_t
s_mp_uint (uint8_t *p, uint64_t value)
{
    if (value < 128) {
        p [0] = (uint8_t) value;
        return 1;
    }
    size_t width = value <= UINT8_MAX ? 1 : value <= UINT16_MAX ? 2 : value <= UINT32_MAX ? 4 : 8;
    p [0] = width == 1 ? 0xcc : width == 2 ? 0xcd : width == 4 ? 0xce : 0xcf;
    for (size_t i = 0; i < width; i++)
        p [1 + i] = (uint8_t) (value >> (8 * (width - 1 - i)));
    return 1 + width;
}

/*  Close the open batch: give it an id, write its BATCH header just in
    front of its blocks, make it ready to send. */
static void
s_batch_close (agg_t *self)
{
    batch_t *b = self->open;
    assert (b && b->blocks > 0);
    self->open = NULL;
    b->id = self->next_batch_id++;
    uint8_t header [S_HDR_MAX];
    size_t n = 0;
    header [n++] = 0x95;                        /* fixarray(5) */
    header [n++] = AMI_PROTO_VERSION;
    header [n++] = AMI_MSG_BATCH;
    n += s_mp_uint (header + n, b->id);
    size_t origin = strlen (self->node_id);     /* 1..AMI_MAX_ID, checked at start */
    if (origin < 32)
        header [n++] = (uint8_t) (0xa0 | origin);
    else {
        header [n++] = 0xd9;
        header [n++] = (uint8_t) origin;
    }
    memcpy (header + n, self->node_id, origin);
    n += origin;
    if (b->blocks < 16)
        header [n++] = (uint8_t) (0x90 | b->blocks);
    else {
        header [n++] = 0xdc;                    /* array16: blocks <= 1024 */
        header [n++] = (uint8_t) (b->blocks >> 8);
        header [n++] = (uint8_t) b->blocks;
    }
    assert (n <= S_HDR_MAX);
    b->head = S_HDR_ROOM - n;
    memcpy (b->buf + b->head, header, n);
    /* give back what a partial batch does not use (4 KiB: not worth a
       realloc below that) */
    size_t need = S_HDR_ROOM + b->used;
    if (b->cap - need > 4096) {
        uint8_t *smaller = (uint8_t *) realloc (b->buf, need);
        if (smaller) {
            b->buf = smaller;
            b->cap = need;
        }
    }
    s_id_insert (self, b);
    s_list_put (self, b, S_READY, false);
}

/*  Copy one block's bytes into the open batch (closing it first if the
    block would not fit, and after if it is full). Returns false when out
    of memory (the buffer is then unchanged for this block). */
static bool
s_custody_append (agg_t *self, const uint8_t *data, size_t size, int64_t now)
{
    if (self->open && S_HDR_MAX + self->open->used + size > AMI_BATCH_MAX_BYTES)
        s_batch_close (self);
    if (!self->open) {
        self->open = s_batch_new (self, S_HDR_ROOM + S_BATCH_CAP0);
        if (!self->open)
            return false;
        self->open_since = now;
        self->open->fresh = true;
    }
    batch_t *b = self->open;
    if (!b->dirty) {
        /* rewritten whole by this group's commit */
        b->dirty = true;
        b->dnext = self->dirty;
        self->dirty = b;
    }
    if (S_HDR_ROOM + b->used + size > b->cap) {
        size_t cap = b->cap;
        while (S_HDR_ROOM + b->used + size > cap)
            cap *= 2;
        if (cap > S_HDR_ROOM + AMI_BATCH_MAX_BYTES)
            cap = S_HDR_ROOM + AMI_BATCH_MAX_BYTES;
        uint8_t *bigger = (uint8_t *) realloc (b->buf, cap);
        if (!bigger)
            return false;
        b->buf = bigger;
        b->cap = cap;
    }
    memcpy (b->buf + S_HDR_ROOM + b->used, data, size);
    b->used += size;
    b->blocks++;
    self->buffer_blocks++;
    self->buffer_bytes += size;
    if (b->blocks >= self->batch_blocks)
        s_batch_close (self);
    return true;
}

/*  Size of the msgpack item at p if it is one a BATCH holds: an integer,
    a str or a bin (header and bytes), or an array header (the header
    only). 0 if it is something else or does not fit in left. */
static size_t
s_mp_skip (const uint8_t *p, size_t left, bool *array)
{
    *array = false;
    if (left == 0)
        return 0;
    uint8_t c = p [0];
    size_t n;
    if (c <= 0x7f || c >= 0xe0)
        n = 1;                                  /* fixint, either sign */
    else
    if (c >= 0x90 && c <= 0x9f) {
        n = 1;
        *array = true;
    }
    else
    if (c >= 0xa0 && c <= 0xbf)
        n = 1 + (size_t) (c & 0x1f);
    else
    switch (c) {
        case 0xcc: case 0xd0: n = 2; break;
        case 0xcd: case 0xd1: n = 3; break;
        case 0xce: case 0xd2: n = 5; break;
        case 0xcf: case 0xd3: n = 9; break;
        case 0xd9: n = left < 2 ? 0 : 2 + (size_t) p [1]; break;
        case 0xda: n = left < 3 ? 0 : 3 + ((size_t) p [1] << 8 | p [2]); break;
        case 0xdb: n = left < 5 ? 0 : 5 + ((size_t) p [1] << 24 | (size_t) p [2] << 16
                                           | (size_t) p [3] << 8 | p [4]); break;
        case 0xc4: n = left < 2 ? 0 : 2 + (size_t) p [1]; break;
        case 0xc5: n = left < 3 ? 0 : 3 + ((size_t) p [1] << 8 | p [2]); break;
        case 0xc6: n = left < 5 ? 0 : 5 + ((size_t) p [1] << 24 | (size_t) p [2] << 16
                                           | (size_t) p [3] << 8 | p [4]); break;
        case 0xdc: n = 3; *array = true; break;
        case 0xdd: n = 5; *array = true; break;
        default:   n = 0;
    }
    return n <= left ? n : 0;
}

/*  Where the blocks of a BATCH frame start: just after its blocks array
    header, the 6th item of [version, type, batch_id, origin, [blocks]]
    counting the outer array header. Block i then ends where its box ends
    (the box is a block's last field), and the next starts there; the last
    must end the frame. The decoder already accepted the frame, so this
    only re-finds positions; it is checked anyway, never asserted. Returns
    false if the frame does not have that shape. */
static bool
s_batch_first_block (const uint8_t *data, size_t size, const ami_batch_t *batch, size_t *first)
{
    size_t offset = 0;
    for (int item = 0; item < 6; item++) {
        bool array = false;
        size_t n = s_mp_skip (data + offset, size - offset, &array);
        if (n == 0 || array != (item == 0 || item == 5))
            return false;
        offset += n;
    }
    size_t start = offset;
    for (uint32_t i = 0; i < batch->block_count; i++) {
        const ami_block_t *block = &batch->blocks [i];
        if (block->box < data + start || block->box_size > size
        ||  (size_t) (block->box - data) > size - block->box_size)
            return false;
        start = (size_t) (block->box - data) + block->box_size;
    }
    *first = offset;
    return start == size;
}

static void
s_fleet_ack (agg_t *self, fleet_t *fleet, uint64_t batch_id, int status, uint32_t credit)
{
    ami_msg_reset (self->out, AMI_MSG_BATCH_ACK);
    self->out->batch_ack.batch_id = batch_id;
    self->out->batch_ack.status = (uint16_t) status;
    self->out->batch_ack.credit = credit;
    size_t len = s_encode (self);
    int err = s_send_fleet (self, fleet, self->buf, len);
    if (err) {
        self->acks_failed++;
        s_warn (self, "could not acknowledge batch %016" PRIx64 " to fleet %s (%s): "
                "it will send it again", batch_id, fleet->node_id, zmq_strerror (err));
    }
}

/*  Room left under the bounds (none when a restart brought back more than
    a smaller bound now allows). */
static size_t
s_room_blocks (agg_t *self)
{
    return self->buffer_blocks < self->buffer_max ? self->buffer_max - self->buffer_blocks : 0;
}

static size_t
s_room_bytes (agg_t *self)
{
    return self->buffer_bytes < self->buffer_bytes_max
         ? self->buffer_bytes_max - self->buffer_bytes : 0;
}

/*  Credit for a fleet: the batches like its largest so far that the free
    space holds, shared among the fleets, at most AMI_CREDIT_INITIAL. */
static uint32_t
s_fleet_credit (agg_t *self, const fleet_t *fleet)
{
    size_t fleets = zhashx_size (self->fleets);
    if (fleets == 0)
        fleets = 1;
    size_t credit = AMI_CREDIT_INITIAL;
    size_t by_blocks = s_room_blocks (self)
                     / ((size_t) (fleet->batch_max ? fleet->batch_max : 1) * fleets);
    size_t by_bytes = s_room_bytes (self)
                    / ((fleet->batch_bytes_max ? fleet->batch_bytes_max : 1) * fleets);
    if (by_blocks < credit)
        credit = by_blocks;
    if (by_bytes < credit)
        credit = by_bytes;
    return (uint32_t) credit;
}

/*  Put a slot number as a custody store key. */
static void
s_slot_key (uint8_t key [S_SLOT_KEY], uint64_t slot)
{
    for (int i = 0; i < S_SLOT_KEY; i++)
        key [i] = (uint8_t) (slot >> (8 * (S_SLOT_KEY - 1 - i)));
}

/*  Remember where custody stood before a group's first block, for a
    rollback. */
static void
s_group_begin (agg_t *self)
{
    if (self->group)
        return;
    self->group = true;
    self->g_open = self->open;
    self->g_open_used = self->open ? self->open->used : 0;
    self->g_open_blocks = self->open ? self->open->blocks : 0;
    self->g_open_since = self->open_since;
}

/*  The group's commit failed: custody goes back to what the store holds.
    Batches born in the group are freed (their slots were never written
    by a commit); the batch that was open when the group began is cut
    back to its committed blocks and reopened (it may have been closed
    since, by a block that did not fit). */
static void
s_group_rollback (agg_t *self)
{
    batch_t *reopen = NULL;
    for (batch_t *b = self->dirty, *next; b; b = next) {
        next = b->dnext;
        b->dirty = false;
        b->dnext = NULL;
        if (b->fresh)
            s_batch_drop (self, b, S_SLOT_FREE);
        else
            reopen = b;
    }
    self->dirty = NULL;
    if (reopen) {
        assert (reopen == self->g_open);
        if (reopen != self->open) {
            assert (!self->open);       /* any other open one was fresh */
            s_list_unlink (self, reopen);
            s_id_remove (self, reopen);
            self->open = reopen;
        }
        self->buffer_blocks -= reopen->blocks - self->g_open_blocks;
        self->buffer_bytes -= reopen->used - self->g_open_used;
        reopen->blocks = self->g_open_blocks;
        reopen->used = self->g_open_used;
        self->open_since = self->g_open_since;
    }
}

/*  One write transaction: every dirty batch put whole, every due
    tombstone. Returns AMI_OK or the store's error (the transaction is
    then aborted: nothing of it is stored). */
static int
s_store_write (agg_t *self)
{
    if (!self->store)
        return AMI_OK;          /* custody in memory only (no state directory) */
    int rc = AMI_OK;
    ami_store_batch_t *txn = ami_store_batch_begin (self->store, &rc);
    if (!txn)
        return rc;
    uint8_t key [S_SLOT_KEY];
    for (size_t i = 0; i < self->tomb_count && rc == AMI_OK; i++) {
        s_slot_key (key, self->tombs [i]);
        rc = ami_store_batch_put (txn, self->custody_db, key, sizeof key, NULL, 0, 0);
    }
    for (batch_t *b = self->dirty; b && rc == AMI_OK; b = b->dnext) {
        s_slot_key (key, b->slot);
        rc = ami_store_batch_put (txn, self->custody_db, key, sizeof key,
                                  b->buf + S_HDR_ROOM, b->used, 0);
    }
    if (rc != AMI_OK) {
        ami_store_batch_abort (&txn);
        return rc;
    }
    return ami_store_batch_commit (&txn);
}

/*  Commit the group: what the wake-up's fleet BATCHes added, and the
    tombstones due; then acknowledge those fleets - status 0 only if the
    commit is durable, else AMI_E_BUSY with credit 0 after a rollback
    (SEC-FAIL-1: never acknowledge what was not stored). Called after
    every drain of the fleet socket, and every heartbeat for tombstones. */
static void
s_custody_commit (agg_t *self)
{
    if (!self->dirty && !self->tomb_count && !self->ack_count) {
        self->group = false;
        return;
    }
    int rc = s_store_write (self);
    if (rc == AMI_OK) {
        self->store_commits++;
        if (self->store_failing)
            ami_log_info ("aggregator %s: custody store %s writes again", self->node_id,
                          self->state);
        self->store_failing = false;
        for (batch_t *b = self->dirty, *next; b; b = next) {
            next = b->dnext;
            b->dirty = b->fresh = false;
            b->dnext = NULL;
        }
        self->dirty = NULL;
        /* the tombstoned slots may be used again */
        for (size_t i = 0; i < self->tomb_count; i++)
            s_slots_push (&self->free_slots, &self->free_count, &self->free_cap,
                          self->tombs [i]);
        self->tomb_count = 0;
    }
    else {
        self->store_errors++;
        if (!self->store_failing)
            ami_log_error ("aggregator %s: custody store %s: commit failed (%s: %s): "
                           "fleet batches are refused (AMI_E_BUSY) until it writes again",
                           self->node_id, self->state, ami_errname (rc),
                           ami_store_last_error (self->store));
        self->store_failing = true;
        s_group_rollback (self);
    }
    self->group = false;
    size_t count = self->ack_count;
    self->ack_count = 0;
    for (size_t i = 0; i < count; i++) {
        fleet_t *fleet = (fleet_t *) zhashx_lookup (self->fleets, self->acks [i].key);
        uint64_t batch_id = self->acks [i].batch_id;
        uint32_t blocks = self->acks [i].blocks;
        if (rc == AMI_OK) {
            self->batches_in++;
            self->blocks_in += blocks;
        }
        else {
            self->store_refused++;
            s_warn (self, "refused BATCH %016" PRIx64 " of %u blocks from fleet %s "
                    "(AMI_E_BUSY): the custody store could not commit it (%s); "
                    "%" PRIu64 " batches refused so far", batch_id, blocks,
                    fleet ? fleet->node_id : "(gone)", ami_errname (rc), self->store_refused);
        }
        if (!fleet)
            continue;           /* gone meanwhile: it resends to whoever it finds */
        if (rc != AMI_OK) {
            s_fleet_ack (self, fleet, batch_id, AMI_E_BUSY, 0);
            continue;
        }
        if (blocks > fleet->batch_max)
            fleet->batch_max = blocks;
        if (self->acks [i].bytes > fleet->batch_bytes_max)
            fleet->batch_bytes_max = self->acks [i].bytes;
        ami_log_debug ("aggregator %s: custody of BATCH %016" PRIx64 " from fleet %s: "
                       "%u blocks (%zu held)", self->node_id, batch_id, fleet->node_id,
                       blocks, self->buffer_blocks);
        s_fleet_ack (self, fleet, batch_id, AMI_OK, s_fleet_credit (self, fleet));
    }
}

/*  A fleet's BATCH (decoded in self->in): custody of all its blocks, or
    none. It is acknowledged by s_custody_commit, after the wake-up's
    group commit. */
static void
s_fleet_batch (agg_t *self, fleet_t *fleet, const uint8_t *data, size_t size)
{
    const ami_batch_t *batch = &self->in->batch;
    if (!streq (batch->origin, fleet->node_id)) {
        self->malformed++;
        s_warn (self, "dropped BATCH %016" PRIx64 " from fleet %s: its origin is %s",
                batch->batch_id, fleet->node_id, batch->origin);
        return;
    }
    size_t first = 0;
    if (!s_batch_first_block (data, size, batch, &first)) {
        self->malformed++;
        s_warn (self, "dropped BATCH %016" PRIx64 " from fleet %s: cannot find its blocks",
                batch->batch_id, fleet->node_id);
        return;
    }
    uint32_t count = batch->block_count;
    size_t bytes = size - first;
    if (count > s_room_blocks (self) || bytes > s_room_bytes (self)) {
        self->overflow_batches++;
        self->overflow_blocks += count;
        s_warn (self, "custody buffer full (%zu of %zu blocks, %zu of %zu bytes held): "
                "refused BATCH %016" PRIx64 " of %u blocks from fleet %s (AMI_E_BUSY); "
                "%" PRIu64 " batches refused so far", self->buffer_blocks, self->buffer_max,
                self->buffer_bytes, self->buffer_bytes_max, batch->batch_id, count,
                fleet->node_id, self->overflow_batches);
        s_fleet_ack (self, fleet, batch->batch_id, AMI_E_BUSY, 0);
        return;
    }
    if (self->ack_count == S_BATCH)
        s_custody_commit (self);        /* a full group (not reached: S_BATCH frames a drain) */
    s_group_begin (self);
    int64_t now = zclock_mono ();
    const uint8_t *start = data + first;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *end = batch->blocks [i].box + batch->blocks [i].box_size;
        if (!s_custody_append (self, start, (size_t) (end - start), now)) {
            /* the blocks copied so far stay in custody and go up; the
               fleet resends the whole batch: duplicates, which the MDMS
               stores once (at-least-once delivery) */
            ami_log_error ("aggregator %s: out of memory taking custody of BATCH %016" PRIx64
                           " from fleet %s: refused (AMI_E_BUSY)", self->node_id,
                           batch->batch_id, fleet->node_id);
            self->overflow_batches++;
            self->overflow_blocks += count - i;
            s_fleet_ack (self, fleet, batch->batch_id, AMI_E_BUSY, 0);
            return;
        }
        start = end;
    }
    memcpy (self->acks [self->ack_count].key, fleet->key, sizeof fleet->key);
    self->acks [self->ack_count].batch_id = batch->batch_id;
    self->acks [self->ack_count].blocks = count;
    self->acks [self->ack_count].bytes = bytes;
    self->ack_count++;
}

static size_t
s_headends_live (agg_t *self)
{
    size_t live = 0;
    for (size_t i = 0; i < self->headend_count; i++)
        live += self->headends [i].live;
    return live;
}

/*  The live head end with the fewest of our batches in flight, other than
    `avoid` if there is another (ties: the first configured). -1 if none
    is live. */
static int
s_headend_choose (agg_t *self, int avoid)
{
    int best = -1;
    for (size_t i = 0; i < self->headend_count; i++) {
        headend_t *headend = &self->headends [i];
        if (!headend->live || (int) i == avoid)
            continue;
        if (best < 0 || headend->inflight < self->headends [best].inflight)
            best = (int) i;
    }
    if (best < 0 && avoid >= 0 && self->headends [avoid].live)
        best = avoid;
    return best;
}

/*  Send (or resend: same bytes) a closed batch through head end index.
    Returns false if libzmq would not take it now (retried shortly). */
static bool
s_batch_send (agg_t *self, batch_t *b, int index, int64_t now)
{
    headend_t *headend = &self->headends [index];
    size_t frame = S_HDR_ROOM + b->used - b->head;
    if (zmq_send (zsock_resolve (headend->dealer), b->buf + b->head, frame, ZMQ_DONTWAIT) == -1) {
        ami_log_debug ("aggregator %s: head end %s did not take batch %016" PRIx64 " (%s): "
                       "trying again in %d ms", self->node_id, headend->name, b->id,
                       zmq_strerror (zmq_errno ()), S_SEND_RETRY_MS);
        self->send_retry_at = now + S_SEND_RETRY_MS;
        return false;
    }
    s_list_unlink (self, b);    /* before headend changes: in-flight counts */
    b->headend = index;
    b->due = now + self->ack_timeout_ms;
    s_list_put (self, b, S_INFLIGHT, false);
    if (b->sends++)
        self->batches_resent++;
    else
        self->batches_out++;
    ami_log_debug ("aggregator %s: batch %016" PRIx64 " (%u blocks, %zu bytes) %s through "
                   "head end %s", self->node_id, b->id, b->blocks, frame,
                   b->sends > 1 ? "resent" : "sent", headend->name);
    return true;
}

/*  Batches in flight at most now: the credit, within our own bound. */
static size_t
s_window (agg_t *self)
{
    return self->credit < AMI_AGGREGATOR_MAX_INFLIGHT ? self->credit : AMI_AGGREGATOR_MAX_INFLIGHT;
}

/*  Send what credit and the live head ends allow: batches to resend
    first, then refused ones whose retry time has come, then new ones, the
    open one if it has waited batch_delay_ms. */
static void
s_pump (agg_t *self, int64_t now)
{
    if (self->send_retry_at) {
        if (now < self->send_retry_at)
            return;
        self->send_retry_at = 0;
    }
    if (s_headends_live (self) == 0)
        return;
    while (true) {
        size_t inflight = self->lists [S_INFLIGHT].size;
        bool probe = false;
        if (inflight >= s_window (self)) {
            /* credit 0 and nothing in flight: one batch asks for credit */
            if (self->credit > 0 || inflight > 0 || now < self->probe_at)
                return;
            probe = true;
        }
        batch_t *b = self->lists [S_RESEND].first;
        if (!b && (b = self->lists [S_RETRY].first) && b->due > now)
            b = NULL;
        if (!b)
            b = self->lists [S_READY].first;
        if (!b && self->open && self->open->blocks
        &&  now - self->open_since >= self->batch_delay_ms) {
            s_batch_close (self);
            b = self->lists [S_READY].first;
        }
        if (!b)
            return;
        if (!s_batch_send (self, b, s_headend_choose (self, b->headend), now))
            return;
        if (probe) {
            self->probe_at = now + AMI_BATCH_RETRY_MS;
            ami_log_debug ("aggregator %s: no credit: batch %016" PRIx64 " probes for more",
                           self->node_id, b->id);
        }
    }
}

/*  Batches whose ack did not come in time go again, through another live
    head end if there is one. */
static void
s_batch_timeouts (agg_t *self, int64_t now)
{
    batch_t *b;
    while ((b = self->lists [S_INFLIGHT].first) && b->due <= now) {
        int old = b->headend;
        int next = s_headend_choose (self, old);
        s_warn (self, "batch %016" PRIx64 " (%u blocks) not acknowledged within %d ms through "
                "head end %s: resending it through %s", b->id, b->blocks, self->ack_timeout_ms,
                self->headends [old].name,
                next >= 0 ? self->headends [next].name : "the next live head end");
        if (next < 0 || !s_batch_send (self, b, next, now))
            s_list_put (self, b, S_RESEND, false);
    }
}

/*  A head end is gone: what was in flight through it goes again through
    another, within the credit it held (s_pump). */
static void
s_headend_gone (agg_t *self, size_t index, const char *why)
{
    headend_t *headend = &self->headends [index];
    headend->live = false;
    size_t moved = 0;
    for (batch_t *b = self->lists [S_INFLIGHT].first, *next; b; b = next) {
        next = b->next;
        if (b->headend == (int) index) {
            s_list_put (self, b, S_RESEND, false);
            moved++;
        }
    }
    if (moved)
        ami_log_warn ("aggregator %s: head end %s gone (%s): %zu batches in flight through it "
                      "go through another head end", self->node_id, headend->name, why, moved);
    else
        ami_log_warn ("aggregator %s: head end %s gone (%s): nothing was in flight through it",
                      self->node_id, headend->name, why);
}

/*  A BATCH_ACK from a head end (decoded in self->in). */
static void
s_headend_ack (agg_t *self, size_t index)
{
    const ami_batch_ack_t *ack = &self->in->batch_ack;
    batch_t *b = s_id_lookup (self, ack->batch_id);
    if (!b) {
        self->acks_unknown++;
        ami_log_debug ("aggregator %s: ignored BATCH_ACK for unknown batch %016" PRIx64
                       " from head end %s", self->node_id, ack->batch_id,
                       self->headends [index].name);
        return;
    }
    int64_t now = zclock_mono ();
    //  The MDMS's credit is end to end. A refusal with credit > 0 may come
    //  from ONE head end whose uplink is down (its own BUSY, credit 1): it
    //  must not throttle what the other head end carries, so only a status
    //  0 ack, or a refusal that stops us (credit 0), replaces the credit.
    if (ack->status == AMI_OK || ack->credit == 0)
        self->credit = ack->credit;
    if (ack->credit == 0)
        self->probe_at = now + AMI_BATCH_RETRY_MS;
    if (ack->status == AMI_OK) {
        self->batches_acked++;
        ami_log_debug ("aggregator %s: batch %016" PRIx64 " (%u blocks) stored, via head end %s "
                       "(credit %u)", self->node_id, b->id, b->blocks,
                       self->headends [index].name, ack->credit);
        s_batch_drop (self, b, S_SLOT_TOMB);
        return;
    }
    self->acks_refused++;
    if (b->list == S_INFLIGHT && b->headend == (int) index) {
        s_warn (self, "batch %016" PRIx64 " (%u blocks) not stored (%s, via head end %s): "
                "resending it in %d ms", b->id, b->blocks, ami_errname (ack->status),
                self->headends [index].name, AMI_BATCH_RETRY_MS);
        b->due = now + AMI_BATCH_RETRY_MS;
        s_list_put (self, b, S_RETRY, false);
    }
    else
        ami_log_debug ("aggregator %s: ignored a stale refusal (%s) of batch %016" PRIx64
                       " from head end %s: it has been sent again since", self->node_id,
                       ami_errname (ack->status), b->id, self->headends [index].name);
}

/*  When the loop must wake for interval data next (at most next_heartbeat).
    Only what can act then counts, so the loop never spins on work that
    is waiting for credit or a head end. */
static int64_t
s_next_wake (agg_t *self)
{
    int64_t wake = self->next_heartbeat;
    batch_t *b = self->lists [S_INFLIGHT].first;
    if (b && b->due < wake)
        wake = b->due;
    if (self->send_retry_at)
        return self->send_retry_at < wake ? self->send_retry_at : wake;
    if (s_headends_live (self) == 0)
        return wake;
    size_t inflight = self->lists [S_INFLIGHT].size;
    if (inflight < s_window (self)) {
        if ((b = self->lists [S_RETRY].first) && b->due < wake)
            wake = b->due;
        if (self->open && self->open->blocks && self->open_since + self->batch_delay_ms < wake)
            wake = self->open_since + self->batch_delay_ms;
    }
    else
    if (self->credit == 0 && inflight == 0 && self->probe_at < wake
    &&  (self->open || self->lists [S_RESEND].size || self->lists [S_RETRY].size
         || self->lists [S_READY].size))
        wake = self->probe_at;
    return wake;
}

/*  Our HELLO to one head end (on each handshake, or asked by its HELLO). */
static void
s_hello_headend (agg_t *self, size_t index)
{
    headend_t *headend = &self->headends [index];
    size_t len = s_encode_hello (self);
    headend->hello_due = zmq_send (zsock_resolve (headend->dealer), self->buf, len,
                                   ZMQ_DONTWAIT) == -1;
}

/*  An event from a head end DEALER's socket monitor. */
static void
s_handle_monitor (agg_t *self, size_t index)
{
    headend_t *headend = &self->headends [index];
    zmsg_t *msg = zmsg_recv (headend->monitor);
    if (!msg)
        return;
    zframe_t *frame = zmsg_first (msg);
    uint16_t event = 0;
    if (frame && zframe_size (frame) >= sizeof event)
        memcpy (&event, zframe_data (frame), sizeof event);     /* native order (libzmq) */
    zmsg_destroy (&msg);
    switch (event) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
            headend->live = true;
            headend->refused = false;
            ami_log_info ("aggregator %s: head end %s connected (%s)", self->node_id,
                          headend->name, headend->endpoint);
            s_hello_headend (self, index);
            break;
        case ZMQ_EVENT_DISCONNECTED:
            if (headend->live)
                s_headend_gone (self, index, "connection lost, or silent for 3 heartbeats");
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            self->headend_handshakes_failed++;
            if (!headend->refused)
                ami_log_warn ("aggregator %s: handshake with head end %s at %s failed "
                              "(is its key right, and are we on its allow-list?)",
                              self->node_id, headend->name, headend->endpoint);
            headend->refused = true;
            break;
        default:
            break;
    }
}

/* ---------------------------------------------------------------------- */
/*  Fleets                                                                  */

/*  Forget a fleet: its routes, and its requests in flight (answered
    AMI_E_UNREACHABLE to their head ends). */
static void
s_fleet_remove (agg_t *self, fleet_t *fleet, const char *why)
{
    ami_log_info ("aggregator %s: fleet %s gone (%s): %zu meters unreachable",
                  self->node_id, fleet->node_id, why, fleet->meters);
    zlistx_t *doomed = zlistx_new ();
    assert (doomed);
    if (fleet->meters) {
        for (fleet_t *f = (fleet_t *) zhashx_first (self->routes); f;
             f = (fleet_t *) zhashx_next (self->routes))
            if (f == fleet)
                zlistx_add_end (doomed, (void *) zhashx_cursor (self->routes));
        for (char *key = (char *) zlistx_first (doomed); key; key = (char *) zlistx_next (doomed))
            zhashx_delete (self->routes, key);
        zlistx_purge (doomed);
    }
    for (pending_t *p = (pending_t *) zhashx_first (self->pending); p;
         p = (pending_t *) zhashx_next (self->pending))
        if (p->fleet == fleet)
            zlistx_add_end (doomed, (void *) zhashx_cursor (self->pending));
    for (char *key = (char *) zlistx_first (doomed); key; key = (char *) zlistx_next (doomed)) {
        pending_t *p = (pending_t *) zhashx_lookup (self->pending, key);
        self->unreachable++;
        s_send_error (self, p->headend, p->request_id, AMI_E_UNREACHABLE,
                      "meter %s is unreachable: fleet %s gone from aggregator %s",
                      p->meter_id, fleet->node_id, self->node_id);
        zhashx_delete (self->pending, key);
    }
    zlistx_destroy (&doomed);
    zhashx_delete (self->fleets, fleet->key);      /* frees fleet */
}

/*  The fleet entry for a routing id, created if new and allowed. Returns
    NULL (logged) when the peer is not an identified meter fleet or the
    table is full. *created tells whether it is new. */
static fleet_t *
s_fleet_for (agg_t *self, zframe_t *rid, zframe_t *body, bool *created)
{
    *created = false;
    char key [S_RID_KEY_SIZE];
    size_t rid_size = zframe_size (rid);
    if (rid_size == 0 || rid_size > S_MAX_RID)
        return NULL;            /* libzmq never produces one: ignore */
    s_hex (zframe_data (rid), rid_size, key);
    fleet_t *fleet = (fleet_t *) zhashx_lookup (self->fleets, key);
    if (fleet)
        return fleet;
    const char *role = ami_auth_peer_meta (body, AMI_CERT_META_ROLE);
    const char *node_id = ami_auth_peer_meta (body, AMI_CERT_META_NODE_ID);
    if (!role || !streq (role, "meter") || !node_id || !ami_id_valid (node_id)) {
        s_warn (self, "refused a peer whose certificate is not a meter fleet's (role %s, node-id %s)",
                role ? role : "none", node_id ? node_id : "none");
        return NULL;
    }
    if (zhashx_size (self->fleets) >= self->max_fleets) {
        self->fleets_refused++;
        s_warn (self, "fleet table full (%zu): ignored fleet %s", self->max_fleets, node_id);
        return NULL;
    }
    fleet = (fleet_t *) zmalloc (sizeof (fleet_t));
    assert (fleet);
    memcpy (fleet->key, key, sizeof key);
    memcpy (fleet->rid, zframe_data (rid), rid_size);
    fleet->rid_size = rid_size;
    snprintf (fleet->node_id, sizeof fleet->node_id, "%s", node_id);
    int rc = zhashx_insert (self->fleets, key, fleet);
    assert (rc == 0);
    *created = true;
    ami_log_info ("aggregator %s: fleet %s connected", self->node_id, node_id);
    return fleet;
}

/*  A fleet's HELLO chunk: point its meters here. */
static void
s_fleet_hello (agg_t *self, fleet_t *fleet, const ami_hello_t *hello)
{
    if (!streq (hello->role, "meter") || !streq (hello->node_id, fleet->node_id)) {
        self->malformed++;
        s_warn (self, "dropped HELLO claiming to be %s %s from fleet %s",
                hello->role, hello->node_id, fleet->node_id);
        return;
    }
    if (!fleet->hello) {
        /* the same fleet under an older routing id: it reconnected */
        fleet_t *old = NULL;
        for (fleet_t *f = (fleet_t *) zhashx_first (self->fleets); f;
             f = (fleet_t *) zhashx_next (self->fleets))
            if (f != fleet && streq (f->node_id, fleet->node_id))
                old = f;
        if (old) {
            /* Remember the old routing id: if it is still talking, the
               same fleet runs twice (a second process with the same
               certificate). Its frames are then ignored - not answered
               with HELLO, which would make the two connections take the
               meters from each other forever. */
            if (zhashx_size (self->superseded) < self->max_fleets) {
                superseded_t *entry = (superseded_t *) zmalloc (sizeof (superseded_t));
                assert (entry);
                snprintf (entry->node_id, sizeof entry->node_id, "%s", old->node_id);
                entry->expires = zclock_mono () + AMI_AGGREGATOR_LIVENESS * self->heartbeat_ms;
                zhashx_update (self->superseded, old->key, entry);
            }
            else {
                self->superseded_full++;
                s_warn (self, "superseded-connection table full (%zu): the older connection "
                        "of fleet %s is not remembered (should it still talk, it is taken "
                        "for a new one)", self->max_fleets, old->node_id);
            }
            s_fleet_remove (self, old, "reconnected");
        }
        fleet->hello = true;
    }
    size_t ignored = 0;
    for (uint32_t i = 0; i < hello->meter_count; i++) {
        const char *meter = hello->meters [i];
        fleet_t *current = (fleet_t *) zhashx_lookup (self->routes, meter);
        if (current == fleet)
            continue;
        if (current) {
            //  SEC-INT-4: a meter served by another LIVE fleet stays with
            //  it. Otherwise one captured fleet key could announce every
            //  meter of the aggregator and take their commands (and make
            //  their reads fail). A meter that really moved is taken by its
            //  new fleet once the old one is gone (its routes go with it)
            //  and the new one says HELLO again.
            self->routes_refused++;
            s_warn (self, "fleet %s announced meter %s, which fleet %s serves: refused "
                    "(a meter moves only when its fleet is gone)",
                    fleet->node_id, meter, current->node_id);
            continue;
        }
        else {
            if (zhashx_size (self->routes) >= self->max_meters) {
                ignored++;
                continue;
            }
            zhashx_insert (self->routes, meter, fleet);
        }
        fleet->meters++;
    }
    if (ignored) {
        self->routes_refused_full += ignored;
        s_warn (self, "route table full (%zu meters): ignored %zu meters of fleet %s",
                self->max_meters, ignored, fleet->node_id);
    }
    ami_log_debug ("aggregator %s: HELLO from fleet %s: %u meters (now %zu)",
                   self->node_id, fleet->node_id, hello->meter_count, fleet->meters);
}

/*  A READ_RESP or ERROR from a fleet: back to the head end that asked. */
static void
s_fleet_answer (agg_t *self, fleet_t *fleet, const uint8_t *data, size_t size)
{
    const uint8_t *request_id;
    const char *meter_id = NULL;
    if (self->in->type == AMI_MSG_READ_RESP) {
        request_id = self->in->read_resp.request_id;
        meter_id = self->in->read_resp.meter_id;
    }
    else {
        if (!self->in->error.has_request_id) {
            ami_log_info ("aggregator %s: ERROR from fleet %s: %s (%s)", self->node_id,
                          fleet->node_id, self->in->error.text, ami_errname (self->in->error.code));
            return;
        }
        request_id = self->in->error.request_id;
    }
    char key [S_REQ_KEY_SIZE];
    ami_request_id_format (request_id, key);
    pending_t *p = (pending_t *) zhashx_lookup (self->pending, key);
    if (!p) {
        self->orphaned++;
        ami_log_debug ("aggregator %s: %s for unknown or expired request %s from fleet %s",
                       self->node_id, ami_msg_type_name (self->in->type), key, fleet->node_id);
        return;
    }
    if (p->fleet != fleet || (meter_id && !streq (meter_id, p->meter_id))) {
        self->malformed++;
        s_warn (self, "dropped an answer to request %s from fleet %s: it was sent to meter %s of fleet %s",
                key, fleet->node_id, p->meter_id, p->fleet->node_id);
        return;
    }
    self->relayed_up++;
    s_send_headend (self, p->headend, data, size, ami_msg_type_name (self->in->type));
    zhashx_delete (self->pending, key);
}

static void
s_handle_router (agg_t *self)
{
    zmsg_t *msg = zmsg_recv (self->router);
    if (!msg)
        return;
    //  SEC-KEY-3: a revoked or expired key's live session is not acted on
    //  (checked before anything, so it does not even keep the fleet live)
    if (!ami_auth_peer_allowed (NULL, zmsg_last (msg))) {
        zmsg_destroy (&msg);
        return;
    }
    if (zmsg_size (msg) != 2) {
        self->malformed++;
        s_warn (self, "dropped a %zu-frame message from a fleet", zmsg_size (msg));
        /* still a sign of life from a known fleet */
        zframe_t *rid = zmsg_first (msg);
        if (rid && zframe_size (rid) > 0 && zframe_size (rid) <= S_MAX_RID) {
            char key [S_RID_KEY_SIZE];
            s_hex (zframe_data (rid), zframe_size (rid), key);
            fleet_t *fleet = (fleet_t *) zhashx_lookup (self->fleets, key);
            if (fleet)
                fleet->expires = zclock_mono () + AMI_AGGREGATOR_LIVENESS * self->heartbeat_ms;
        }
        zmsg_destroy (&msg);
        return;
    }
    zframe_t *rid = zmsg_first (msg);
    zframe_t *body = zmsg_next (msg);
    if (zframe_size (rid) > 0 && zframe_size (rid) <= S_MAX_RID) {
        char key [S_RID_KEY_SIZE];
        s_hex (zframe_data (rid), zframe_size (rid), key);
        superseded_t *old = (superseded_t *) zhashx_lookup (self->superseded, key);
        if (old) {
            old->expires = zclock_mono () + AMI_AGGREGATOR_LIVENESS * self->heartbeat_ms;
            self->duplicates++;
            s_warn (self, "ignored a frame from an older connection of fleet %s, which "
                    "connected again: is it running twice?", old->node_id);
            zmsg_destroy (&msg);
            return;
        }
    }
    bool created = false;
    fleet_t *fleet = s_fleet_for (self, rid, body, &created);
    if (!fleet) {
        zmsg_destroy (&msg);
        return;
    }
    fleet->expires = zclock_mono () + AMI_AGGREGATOR_LIVENESS * self->heartbeat_ms;
    const uint8_t *data = zframe_data (body);
    size_t size = zframe_size (body);
    int rc = ami_msg_decode (self->in, data, size);
    if (rc != AMI_OK) {
        self->malformed++;
        s_warn (self, "dropped a malformed frame from fleet %s (%zu bytes): %s",
                fleet->node_id, size, ami_strerror (rc));
        zmsg_destroy (&msg);
        return;
    }
    int type = self->in->type;
    if (created && type != AMI_MSG_HELLO) {
        /* a fleet we do not know yet (we restarted?): introduce ourselves,
           once, and it re-sends its HELLOs */
        size_t len = s_encode_hello (self);
        if (s_send_fleet (self, fleet, self->buf, len) != 0)
            s_warn (self, "could not send HELLO to fleet %s", fleet->node_id);
    }
    switch (type) {
        case AMI_MSG_HELLO:
            s_fleet_hello (self, fleet, &self->in->hello);
            break;
        case AMI_MSG_HEALTH:
            if (!streq (self->in->health.role, "meter")
            ||  !streq (self->in->health.node_id, fleet->node_id)) {
                self->malformed++;
                s_warn (self, "dropped HEALTH of %s %s from fleet %s", self->in->health.role,
                        self->in->health.node_id, fleet->node_id);
                break;
            }
            for (size_t i = 0; i < self->headend_count; i++)
                if (self->headends [i].live)
                    s_send_headend (self, i, data, size, "fleet HEALTH");
            break;
        case AMI_MSG_READ_RESP:
        case AMI_MSG_ERROR:
            s_fleet_answer (self, fleet, data, size);
            break;
        case AMI_MSG_BATCH:
            s_fleet_batch (self, fleet, data, size);
            break;
        default:
            self->malformed++;
            s_warn (self, "dropped %s from fleet %s: not a fleet's message",
                    ami_msg_type_name (type), fleet->node_id);
    }
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Head ends                                                               */

static void
s_read_req (agg_t *self, size_t headend, const uint8_t *data, size_t size)
{
    /* a copy: removing a fleet below may log and answer other requests */
    ami_read_req_t req = self->in->read_req;
    char key [S_REQ_KEY_SIZE];
    ami_request_id_format (req.request_id, key);
    fleet_t *fleet = (fleet_t *) zhashx_lookup (self->routes, req.meter_id);
    if (!fleet) {
        self->unreachable++;
        s_send_error (self, headend, req.request_id, AMI_E_UNREACHABLE,
                      "meter %s is not reachable via aggregator %s (no live fleet announced it)",
                      req.meter_id, self->node_id);
        return;
    }
    pending_t *p = (pending_t *) zhashx_lookup (self->pending, key);
    /* SEC-AVAIL-2: over the bound a new request is answered BUSY at once,
       neither remembered nor forwarded (a retry of a request id already
       in the table only replaces its entry, so it is not refused) */
    if (!p && zhashx_size (self->pending) >= self->max_pending) {
        self->busy++;
        self->pending_busy++;
        //  s_send_error warns about the BUSY (rate-limited) with this text
        s_send_error (self, headend, req.request_id, AMI_E_BUSY,
                      "aggregator %s has %zu requests in flight; retry later",
                      self->node_id, zhashx_size (self->pending));
        return;
    }
    int err = s_send_fleet (self, fleet, data, size);
    if (err == EHOSTUNREACH) {
        self->unreachable++;
        s_send_error (self, headend, req.request_id, AMI_E_UNREACHABLE,
                      "meter %s is not reachable via aggregator %s (fleet %s disconnected)",
                      req.meter_id, self->node_id, fleet->node_id);
        s_fleet_remove (self, fleet, "disconnected");
        return;
    }
    if (err) {
        self->busy++;
        s_send_error (self, headend, req.request_id, AMI_E_BUSY,
                      "fleet %s of meter %s is not keeping up (%s); retry later",
                      fleet->node_id, req.meter_id, zmq_strerror (err));
        return;
    }
    if (!p) {
        p = (pending_t *) zmalloc (sizeof (pending_t));
        assert (p);
        zhashx_insert (self->pending, key, p);
    }
    p->headend = headend;
    p->fleet = fleet;
    snprintf (p->meter_id, sizeof p->meter_id, "%s", req.meter_id);
    memcpy (p->request_id, req.request_id, AMI_REQUEST_ID_SIZE);
    /* the command's own expiry on our clock, bounded both ways */
    int64_t left = (int64_t) req.expires_ms - zclock_time ();
    if (left < 0)
        left = 0;
    if (left > AMI_AGGREGATOR_MAX_TTL_MS)
        left = AMI_AGGREGATOR_MAX_TTL_MS;
    p->expires = zclock_mono () + left + AMI_AGGREGATOR_MARGIN_MS;
    self->relayed_down++;
    ami_log_debug ("aggregator %s: request %s for meter %s from head end %s to fleet %s",
                   self->node_id, key, req.meter_id, self->headends [headend].name,
                   fleet->node_id);
}

static void
s_handle_headend (agg_t *self, size_t index)
{
    headend_t *headend = &self->headends [index];
    zmsg_t *msg = zmsg_recv (headend->dealer);
    if (!msg)
        return;
    if (zmsg_size (msg) != 1) {
        self->malformed++;
        s_warn (self, "dropped a %zu-frame message from head end %s", zmsg_size (msg), headend->name);
        zmsg_destroy (&msg);
        return;
    }
    zframe_t *frame = zmsg_first (msg);
    const uint8_t *data = zframe_data (frame);
    size_t size = zframe_size (frame);
    int rc = ami_msg_decode (self->in, data, size);
    if (rc != AMI_OK) {
        self->malformed++;
        s_warn (self, "dropped a malformed frame from head end %s (%zu bytes): %s",
                headend->name, size, ami_strerror (rc));
    }
    else
    if (self->in->type == AMI_MSG_READ_REQ)
        s_read_req (self, index, data, size);
    else
    if (self->in->type == AMI_MSG_BATCH_ACK)
        s_headend_ack (self, index);
    else
    if (self->in->type == AMI_MSG_HELLO) {
        ami_log_info ("aggregator %s: HELLO from head end %s (%s): re-sending HELLO",
                      self->node_id, headend->name, self->in->hello.node_id);
        s_hello_headend (self, index);
    }
    else {
        self->malformed++;
        s_warn (self, "dropped %s from head end %s: not a head end's message",
                ami_msg_type_name (self->in->type), headend->name);
    }
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Failed handshakes on the fleet socket (SEC-AUD-2)                       */

/*  A failed handshake on the fleet ROUTER, already counted by the
    monitor: warned about (rate-limited: anyone who can reach the pole's
    port can cause one) with the peer's address. */
static void
s_handshake_failed (const char *name, int kind, uint32_t status, const char *peer, void *arg)
{
    agg_t *self = (agg_t *) arg;
    char line [256];
    s_warn (self, "%s", ami_monitor_describe (name, kind, status, peer, line, sizeof line));
}

static void
s_watch (agg_t *self)
{
    ami_monitor_drain (self->watch, s_handshake_failed, self);
}


/* ---------------------------------------------------------------------- */
/*  Tick                                                                    */

static void
s_send_health (agg_t *self)
{
    ami_msg_reset (self->out, AMI_MSG_HEALTH);
    ami_health_t *health = &self->out->health;
    snprintf (health->role, sizeof health->role, "aggregator");
    snprintf (health->node_id, sizeof health->node_id, "%s", self->node_id);
    health->state = AMI_STATE_READY;
    health->uptime_ms = (uint64_t) (zclock_mono () - self->started);
    const struct { const char *name; uint64_t value; } stats [] = {
        { "fleets", zhashx_size (self->fleets) },
        { "meters", zhashx_size (self->routes) },
        { "relayed_down", self->relayed_down },
        { "relayed_up", self->relayed_up },
        { "unreachable", self->unreachable },
        { "busy", self->busy },
        { "dropped", self->dropped },
        { "pending", zhashx_size (self->pending) },
        { "malformed", self->malformed },
        { "duplicates", self->duplicates },
        { "batches_in", self->batches_in },
        { "blocks_in", self->blocks_in },
        { "batches_out", self->batches_out },
        { "batches_acked", self->batches_acked },
        { "batches_resent", self->batches_resent },
        { "buffer_blocks", self->buffer_blocks },
        { "buffer_max", self->buffer_max },
        { "overflow_batches", self->overflow_batches },
        { "overflow_blocks", self->overflow_blocks },
        { "credit", self->credit },
        { "batches_inflight", self->lists [S_INFLIGHT].size },
        { "acks_refused", self->acks_refused },
        { "acks_unknown", self->acks_unknown },
        { "routes_refused", self->routes_refused },
        { "buffer_bytes", self->buffer_bytes },
        { "headends_live", s_headends_live (self) },
        { "pending_busy", self->pending_busy },
        { "handshakes_refused", ami_monitor_refused (self->watch) },
        { "handshakes_failed", ami_monitor_failed (self->watch) },
        { "headend_handshakes_failed", self->headend_handshakes_failed },
        { "store_refused", self->store_refused },
        { "store_errors", self->store_errors },
        { "orphaned", self->orphaned },
        { "store_commits", self->store_commits },
        { "restored_blocks", self->restored_blocks },
        { "tombstones", self->tomb_count },
        { "acks_failed", self->acks_failed },
        { "fleets_refused", self->fleets_refused },
        { "routes_refused_full", self->routes_refused_full },
        { "superseded_full", self->superseded_full },
        { "buffer_bytes_max", self->buffer_bytes_max },
        { "fleets_max", self->max_fleets },
        { "meters_max", self->max_meters },
    };
    //  43 of AMI_MAX_STATS (64): room for a few more before the wire
    //  limit; the head end adds none to a forwarded HEALTH
    _Static_assert (sizeof stats / sizeof stats [0] <= AMI_MAX_STATS, "HEALTH stats fit");
    for (size_t i = 0; i < sizeof stats / sizeof stats [0]; i++) {
        snprintf (health->stats [i].name, sizeof health->stats [i].name, "%s", stats [i].name);
        health->stats [i].value = stats [i].value;
    }
    health->stat_count = sizeof stats / sizeof stats [0];
    size_t len = s_encode (self);
    for (size_t i = 0; i < self->headend_count; i++)
        if (self->headends [i].live)
            s_send_headend (self, i, self->buf, len, "HEALTH");
}

static void
s_tick (agg_t *self)
{
    /* tombstones not carried by a custody group yet (no fleet traffic) */
    if (self->tomb_count)
        s_custody_commit (self);
    for (size_t i = 0; i < self->headend_count; i++)
        if (self->headends [i].live && self->headends [i].hello_due)
            s_hello_headend (self, i);
    s_send_health (self);
    int64_t now = zclock_mono ();
    /* fleets silent for LIVENESS heartbeats are gone */
    fleet_t *gone;
    do {
        gone = NULL;
        for (fleet_t *f = (fleet_t *) zhashx_first (self->fleets); f && !gone;
             f = (fleet_t *) zhashx_next (self->fleets))
            if (now > f->expires)
                gone = f;
        if (gone)
            s_fleet_remove (self, gone, "silent for 3 heartbeats");
    } while (gone);
    /* requests whose command has expired will not be answered */
    zlistx_t *expired = zlistx_new ();
    assert (expired);
    for (pending_t *p = (pending_t *) zhashx_first (self->pending); p;
         p = (pending_t *) zhashx_next (self->pending))
        if (now > p->expires)
            zlistx_add_end (expired, (void *) zhashx_cursor (self->pending));
    for (char *key = (char *) zlistx_first (expired); key; key = (char *) zlistx_next (expired)) {
        ami_log_debug ("aggregator %s: request %s expired unanswered", self->node_id, key);
        zhashx_delete (self->pending, key);
    }
    zlistx_purge (expired);
    /* superseded connections that fell silent are forgotten */
    for (superseded_t *old = (superseded_t *) zhashx_first (self->superseded); old;
         old = (superseded_t *) zhashx_next (self->superseded))
        if (now > old->expires)
            zlistx_add_end (expired, (void *) zhashx_cursor (self->superseded));
    for (char *key = (char *) zlistx_first (expired); key; key = (char *) zlistx_next (expired))
        zhashx_delete (self->superseded, key);
    zlistx_destroy (&expired);
}

static void
s_handle_pipe (agg_t *self)
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
    if (streq (command, "ENDPOINT"))
        zstr_send (self->pipe, self->endpoint);
    else
    if (streq (command, "STATUS")) {
        zmsg_t *reply = zmsg_new ();
        zmsg_addstrf (reply, "%zu", zhashx_size (self->fleets));
        zmsg_addstrf (reply, "%zu", zhashx_size (self->routes));
        zmsg_addstrf (reply, "%" PRIu64, self->relayed_down);
        zmsg_addstrf (reply, "%" PRIu64, self->relayed_up);
        zmsg_addstrf (reply, "%" PRIu64, self->unreachable);
        zmsg_addstrf (reply, "%" PRIu64, self->busy);
        zmsg_addstrf (reply, "%" PRIu64, self->dropped);
        zmsg_addstrf (reply, "%zu", zhashx_size (self->pending));
        zmsg_addstrf (reply, "%" PRIu64, self->malformed);
        zmsg_addstrf (reply, "%" PRIu64, self->orphaned);
        zmsg_addstrf (reply, "%" PRIu64, self->duplicates);
        zmsg_addstrf (reply, "%" PRIu64, self->batches_in);
        zmsg_addstrf (reply, "%" PRIu64, self->blocks_in);
        zmsg_addstrf (reply, "%" PRIu64, self->batches_out);
        zmsg_addstrf (reply, "%" PRIu64, self->batches_acked);
        zmsg_addstrf (reply, "%" PRIu64, self->batches_resent);
        zmsg_addstrf (reply, "%zu", self->buffer_blocks);
        zmsg_addstrf (reply, "%zu", self->buffer_max);
        zmsg_addstrf (reply, "%" PRIu64, self->overflow_batches);
        zmsg_addstrf (reply, "%" PRIu64, self->overflow_blocks);
        zmsg_addstrf (reply, "%" PRIu32, self->credit);
        zmsg_addstrf (reply, "%zu", self->lists [S_INFLIGHT].size);
        zmsg_addstrf (reply, "%zu", s_headends_live (self));
        zmsg_addstrf (reply, "%" PRIu64, self->acks_refused);
        zmsg_addstrf (reply, "%" PRIu64, self->acks_unknown);
        zmsg_addstrf (reply, "%zu", self->buffer_bytes);
        s_watch (self);                 /* counts as of now */
        zmsg_addstrf (reply, "%" PRIu64, self->pending_busy);
        zmsg_addstrf (reply, "%" PRIu64, ami_monitor_refused (self->watch));
        zmsg_addstrf (reply, "%" PRIu64, ami_monitor_failed (self->watch));
        zmsg_addstrf (reply, "%" PRIu64, self->headend_handshakes_failed);
        zmsg_addstrf (reply, "%" PRIu64, self->store_refused);
        zmsg_addstrf (reply, "%" PRIu64, self->store_errors);
        zmsg_addstrf (reply, "%" PRIu64, self->store_commits);
        zmsg_addstrf (reply, "%" PRIu64, self->restored_blocks);
        zmsg_addstrf (reply, "%zu", self->tomb_count);
        zmsg_addstrf (reply, "%" PRIu64, self->acks_failed);
        zmsg_addstrf (reply, "%" PRIu64, self->fleets_refused);
        zmsg_addstrf (reply, "%" PRIu64, self->routes_refused_full);
        zmsg_addstrf (reply, "%" PRIu64, self->superseded_full);
        zmsg_addstrf (reply, "%zu", self->buffer_bytes_max);
        zmsg_addstrf (reply, "%" PRIu64, self->routes_refused);
        zmsg_send (&reply, self->pipe);
    }
    else
        ami_log_error ("aggregator %s: unknown pipe command '%s'", self->node_id, command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Start-up                                                                */

static void
s_self_destroy (agg_t **self_p)
{
    agg_t *self = *self_p;
    if (!self)
        return;
    ami_monitor_destroy (&self->watch);         /* before its socket */
    zsock_destroy (&self->router);
    /* the records stay in the store: the next start sends them */
    while (self->open)
        s_batch_drop (self, self->open, S_SLOT_KEEP);
    for (int list = 0; list < S_LISTS; list++)
        while (self->lists [list].first)
            s_batch_drop (self, self->lists [list].first, S_SLOT_KEEP);
    free (self->ids);
    ami_store_destroy (&self->store);
    free (self->free_slots);
    free (self->tombs);
    free (self->state);
    for (size_t i = 0; self->headends && i < self->headend_count; i++) {
        if (self->headends [i].monitor) {
            zmq_socket_monitor (zsock_resolve (self->headends [i].dealer), NULL, 0);
            zsock_destroy (&self->headends [i].monitor);
        }
        zsock_destroy (&self->headends [i].dealer);
        free (self->headends [i].name);
        free (self->headends [i].endpoint);
    }
    free (self->headends);
    zhashx_destroy (&self->routes);
    zhashx_destroy (&self->pending);
    zhashx_destroy (&self->superseded);
    zhashx_destroy (&self->fleets);
    ami_msg_destroy (&self->in);
    ami_msg_destroy (&self->out);
    zstr_free (&self->endpoint);
    free (self);
    *self_p = NULL;
}

static void
s_socket_options (agg_t *self, zsock_t *sock)
{
    zsock_set_linger (sock, 0);
    zsock_set_maxmsgsize (sock, AMI_MAX_FRAME);
    zsock_set_sndhwm (sock, AMI_AGGREGATOR_SNDHWM);
    zsock_set_rcvhwm (sock, AMI_AGGREGATOR_RCVHWM);
    zsock_set_heartbeat_ivl (sock, self->heartbeat_ms);
    zsock_set_heartbeat_timeout (sock, S_ZMTP_LIVENESS * self->heartbeat_ms);
}

static bool
s_config_valid (const ami_aggregator_config_t *config)
{
    if (!config->node_id || !ami_id_valid (config->node_id)) {
        ami_log_error ("aggregator: node id '%s' is not a valid id",
                       config->node_id ? config->node_id : "");
        return false;
    }
    const char *id = config->node_id;
    if (!config->cert || !ami_cert_has_secret (config->cert)) {
        ami_log_error ("aggregator %s: a certificate with its secret key is required", id);
        return false;
    }
    if (!config->endpoint || !*config->endpoint) {
        ami_log_error ("aggregator %s: the fleet-facing endpoint is required", id);
        return false;
    }
    if (config->headend_count == 0 || !config->headends) {
        ami_log_error ("aggregator %s: at least one head end is required", id);
        return false;
    }
    for (size_t i = 0; i < config->headend_count; i++) {
        const ami_aggregator_headend_t *h = &config->headends [i];
        if (!h->name || !*h->name || !h->endpoint || !*h->endpoint
        ||  !h->server_key || strlen (h->server_key) != AMI_CERT_KEY_TXT_LEN) {
            ami_log_error ("aggregator %s: head end %zu (%s) needs a name, an endpoint "
                           "and a Z85 public key", id, i, h->name ? h->name : "?");
            return false;
        }
    }
    if (config->heartbeat_ms < 0) {
        ami_log_error ("aggregator %s: heartbeat must not be negative", id);
        return false;
    }
    if (config->batch_blocks > AMI_MAX_BATCH_BLOCKS) {
        ami_log_error ("aggregator %s: batch-blocks %u is over the wire limit %d", id,
                       config->batch_blocks, AMI_MAX_BATCH_BLOCKS);
        return false;
    }
    if (config->batch_delay_ms < 0 || config->ack_timeout_ms < 0) {
        ami_log_error ("aggregator %s: batch-delay and ack-timeout must not be negative", id);
        return false;
    }
    return true;
}

/*  The custody store's map size (its largest file), from the bounds.
    The memory bounds refuse a fleet BATCH before custody holds more than
    buffer_bytes of blocks in more than buffer_blocks + 1 records (a batch
    has at least one block; tombstones reuse slots, so they are bounded
    the same way). LMDB needs more room than the data: (1) pages are not
    full - a record over ~2 KiB takes its own run of overflow pages,
    rounded up to whole 4 KiB pages (at most x2, for the smallest such
    record), and leaf pages of small records may be half empty after
    splits (x2); (2) copy-on-write - a commit writes new copies of what
    it changes while the previous commit's pages stay in use until the
    next one (x2 when everything changes at once, as when a full buffer
    drains). Hence 4 x (bytes + S_MAP_RECORD per record) + S_MAP_BASE:
    ~1.1 GiB of address space for the defaults, of which the file takes
    only what is used (about 2 x the blocks held). Should it still fill,
    the commit fails with MAP_FULL and fleets are refused AMI_E_BUSY,
    counted in store_refused: never silently. */
static size_t
s_store_map_size (agg_t *self)
{
    uint64_t records = (uint64_t) self->buffer_max + 1;
    uint64_t need = (uint64_t) self->buffer_bytes_max + S_MAP_RECORD * records;
    if (need > (UINT64_MAX - S_MAP_BASE) / 4 || 4 * need + S_MAP_BASE > SIZE_MAX / 2)
        return SIZE_MAX / 2;            /* absurd bounds: LMDB says no, logged */
    return (size_t) (4 * need + S_MAP_BASE);
}

/*  Size of one interval block [meter_id, seq, box] at p, 0 if it is not
    one (the full check is ami_msg_decode of the batch afterwards). */
static size_t
s_block_size (const uint8_t *p, size_t left)
{
    size_t n;
    if (left >= 1 && p [0] == 0x93)
        n = 1;
    else
    if (left >= 3 && p [0] == 0xdc && p [1] == 0 && p [2] == 3)
        n = 3;
    else
    if (left >= 5 && p [0] == 0xdd && p [1] == 0 && p [2] == 0 && p [3] == 0 && p [4] == 3)
        n = 5;
    else
        return 0;
    for (int item = 0; item < 3; item++) {
        bool array = false;
        size_t m = s_mp_skip (p + n, left - n, &array);
        if (m == 0 || array)
            return 0;
        n += m;
    }
    return n;
}

typedef struct {
    agg_t *self;
    uint64_t batches, corrupt;
    bool oom;
} restore_t;

/*  One custody record at start: a free slot (tombstone), or a batch to
    send again. A record that is not a list of blocks (a damaged file) is
    logged, counted in store_errors and tombstoned: it cannot be sent. */
static int
s_restore_one (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    restore_t *r = (restore_t *) arg;
    agg_t *self = r->self;
    if (klen != S_SLOT_KEY) {
        self->store_errors++;
        r->corrupt++;
        ami_log_error ("aggregator %s: custody store %s: ignored a key of %zu bytes "
                       "(not a slot)", self->node_id, self->state, klen);
        return 0;
    }
    uint64_t slot = 0;
    for (int i = 0; i < S_SLOT_KEY; i++)
        slot = slot << 8 | ((const uint8_t *) key) [i];
    if (slot >= self->next_slot)
        self->next_slot = slot + 1;
    if (vlen == 0) {
        s_slots_push (&self->free_slots, &self->free_count, &self->free_cap, slot);
        return 0;
    }
    const uint8_t *data = (const uint8_t *) val;
    uint32_t blocks = 0;
    size_t offset = 0;
    while (offset < vlen && blocks <= AMI_MAX_BATCH_BLOCKS) {
        size_t n = s_block_size (data + offset, vlen - offset);
        if (n == 0)
            break;
        offset += n;
        blocks++;
    }
    batch_t *b = NULL;
    bool good = offset == vlen && blocks <= AMI_MAX_BATCH_BLOCKS
             && S_HDR_MAX + vlen <= AMI_BATCH_MAX_BYTES;
    if (good) {
        b = s_batch_alloc (S_HDR_ROOM + vlen);
        if (!b) {
            ami_log_error ("aggregator %s: out of memory restoring custody", self->node_id);
            r->oom = true;
            return 1;           /* stops the scan: start-up fails */
        }
        b->slot = slot;
        memcpy (b->buf + S_HDR_ROOM, data, vlen);
        b->used = vlen;
        b->blocks = blocks;
        self->buffer_blocks += blocks;
        self->buffer_bytes += vlen;
        self->open = b;
        s_batch_close (self);
        /* the whole frame must be one our head ends and the MDMS take */
        size_t frame = S_HDR_ROOM + b->used - b->head;
        good = ami_msg_decode (self->in, b->buf + b->head, frame) == AMI_OK
            && self->in->type == AMI_MSG_BATCH && self->in->batch.block_count == blocks;
        if (!good)
            s_batch_drop (self, b, S_SLOT_TOMB);
    }
    else
        s_slots_push (&self->tombs, &self->tomb_count, &self->tomb_cap, slot);
    if (!good) {
        self->store_errors++;
        r->corrupt++;
        ami_log_error ("aggregator %s: custody store %s: record %" PRIu64 " (%zu bytes) "
                       "is not a list of interval blocks: dropped", self->node_id,
                       self->state, slot, vlen);
        return 0;
    }
    r->batches++;
    self->restored_blocks += blocks;
    return 0;
}

/*  Open the custody store and take back what it holds. */
static int
s_custody_open (agg_t *self, const ami_aggregator_config_t *config)
{
    if (!config->state || !*config->state) {
        ami_log_warn ("aggregator %s: no state directory: custody is held in memory only, "
                      "a crash loses what the fleets were told is safe", self->node_id);
        self->state = strdup ("(memory)");
        return self->state ? AMI_OK : AMI_E_NOMEM;
    }
    self->state = strdup (config->state);
    if (!self->state)
        return AMI_E_NOMEM;
    size_t map_size = config->store_map_size ? config->store_map_size
                                             : s_store_map_size (self);
    int rc = AMI_OK;
    self->store = ami_store_new (self->state, map_size, 0, 0, &rc);
    if (!self->store) {
        ami_log_error ("aggregator %s: cannot open its custody store %s: %s",
                       self->node_id, self->state, ami_strerror (rc));
        return rc;
    }
    restore_t restore = { self, 0, 0, false };
    rc = ami_store_db (self->store, "custody", &self->custody_db);
    if (rc == AMI_OK)
        rc = ami_store_scan (self->store, self->custody_db, NULL, 0, NULL, 0, false,
                             s_restore_one, &restore);
    if (restore.oom)
        return AMI_E_NOMEM;     /* logged */
    if (rc != AMI_OK) {
        ami_log_error ("aggregator %s: custody store %s: %s", self->node_id, self->state,
                       ami_store_last_error (self->store));
        return rc;
    }
    if (restore.batches)
        ami_log_info ("aggregator %s: custody store %s: %zu blocks (%zu bytes) in %" PRIu64
                      " batches not yet acknowledged by the MDMS: sending them again",
                      self->node_id, self->state, self->buffer_blocks, self->buffer_bytes,
                      restore.batches);
    if (self->buffer_blocks > self->buffer_max || self->buffer_bytes > self->buffer_bytes_max)
        ami_log_warn ("aggregator %s: the custody restored (%zu blocks, %zu bytes) is over "
                      "the bounds (%zu blocks, %zu bytes): fleets are refused until it drains",
                      self->node_id, self->buffer_blocks, self->buffer_bytes,
                      self->buffer_max, self->buffer_bytes_max);
    return AMI_OK;
}

static agg_t *
s_self_new (zsock_t *pipe, const ami_aggregator_config_t *config)
{
    if (!s_config_valid (config))
        return NULL;
    agg_t *self = (agg_t *) zmalloc (sizeof (agg_t));
    assert (self);
    self->pipe = pipe;
    snprintf (self->node_id, sizeof self->node_id, "%s", config->node_id);
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms : AMI_AGGREGATOR_HEARTBEAT_MS;
    self->max_pending = config->max_pending ? config->max_pending : AMI_AGGREGATOR_MAX_PENDING;
    self->max_fleets = config->max_fleets ? config->max_fleets : AMI_AGGREGATOR_MAX_FLEETS;
    self->max_meters = config->max_meters ? config->max_meters : AMI_AGGREGATOR_MAX_METERS;
    self->buffer_max = config->buffer_blocks ? config->buffer_blocks : AMI_AGGREGATOR_BUFFER_BLOCKS;
    self->buffer_bytes_max = config->buffer_bytes ? config->buffer_bytes : AMI_AGGREGATOR_BUFFER_BYTES;
    self->batch_blocks = config->batch_blocks ? config->batch_blocks : AMI_AGGREGATOR_BATCH_BLOCKS;
    self->batch_delay_ms = config->batch_delay_ms ? config->batch_delay_ms
                                                  : AMI_AGGREGATOR_BATCH_DELAY_MS;
    self->ack_timeout_ms = config->ack_timeout_ms ? config->ack_timeout_ms
                                                  : AMI_BATCH_ACK_TIMEOUT_MS;
    self->credit = AMI_CREDIT_INITIAL;
    /* batch ids start anywhere: they do not repeat across restarts, and
       two aggregators do not collide in practice (head ends map acks by
       batch_id) */
    if (sodium_init () < 0) {
        ami_log_error ("aggregator %s: libsodium failed to start", self->node_id);
        free (self);
        return NULL;
    }
    randombytes_buf (&self->next_batch_id, sizeof self->next_batch_id);
    self->id_buckets = S_IDS0;
    self->ids = (batch_t **) calloc (self->id_buckets, sizeof (batch_t *));
    self->in = ami_msg_new ();
    self->out = ami_msg_new ();
    self->fleets = zhashx_new ();
    self->routes = zhashx_new ();
    self->pending = zhashx_new ();
    self->superseded = zhashx_new ();
    self->headends = (headend_t *) calloc (config->headend_count, sizeof (headend_t));
    if (!self->in || !self->out || !self->fleets || !self->routes || !self->pending
    ||  !self->superseded || !self->headends || !self->ids) {
        ami_log_error ("aggregator %s: out of memory", self->node_id);
        s_self_destroy (&self);
        return NULL;
    }
    self->headend_count = config->headend_count;
    zhashx_set_destructor (self->fleets, s_fleet_destroy);
    zhashx_set_destructor (self->pending, s_pending_destroy);
    zhashx_set_destructor (self->superseded, s_superseded_destroy);
    if (s_custody_open (self, config) != AMI_OK) {
        s_self_destroy (&self);                 /* logged */
        return NULL;
    }

    self->router = zsock_new (ZMQ_ROUTER);
    if (!self->router) {
        ami_log_error ("aggregator %s: cannot create the ROUTER socket", self->node_id);
        s_self_destroy (&self);
        return NULL;
    }
    s_socket_options (self, self->router);
    /* a send to a fleet that is gone fails (EHOSTUNREACH) instead of
       vanishing, so the head end hears AMI_E_UNREACHABLE at once */
    zsock_set_router_mandatory (self->router, 1);
    if (ami_auth_server (self->router, config->cert) != AMI_OK) {
        ami_log_error ("aggregator %s: cannot make the fleet socket a CURVE server "
                       "(is an ami_auth running?)", self->node_id);
        s_self_destroy (&self);
        return NULL;
    }
    if (zsock_bind (self->router, "%s", config->endpoint) == -1) {
        ami_log_error ("aggregator %s: cannot bind %s: %s", self->node_id,
                       config->endpoint, zmq_strerror (zmq_errno ()));
        s_self_destroy (&self);
        return NULL;
    }
    self->endpoint = zsock_last_endpoint (self->router);
    /* SEC-AUD-2: failed handshakes on the one server socket */
    zsock_t *servers [] = { self->router };
    const char *names [] = { "fleets" };
    self->watch = ami_monitor_new (servers, names, 1);
    if (!self->watch) {
        s_self_destroy (&self);                 /* logged */
        return NULL;
    }

    for (size_t i = 0; i < self->headend_count; i++) {
        const ami_aggregator_headend_t *h = &config->headends [i];
        headend_t *headend = &self->headends [i];
        headend->name = strdup (h->name);
        headend->endpoint = strdup (h->endpoint);
        headend->dealer = zsock_new (ZMQ_DEALER);
        if (!headend->name || !headend->endpoint || !headend->dealer) {
            ami_log_error ("aggregator %s: out of memory", self->node_id);
            s_self_destroy (&self);
            return NULL;
        }
        s_socket_options (self, headend->dealer);
        /* nothing queued for a head end that is not connected: a batch
           waits with us, and can go through another head end at once */
        zsock_set_immediate (headend->dealer, 1);
        /* a name never used before in this process: libzmq unbinds a
           closed monitor's endpoint asynchronously, so an address (say,
           of a freed agg_t) could still be taken */
        static uint64_t s_monitors = 0;
        char monitor [96];
        snprintf (monitor, sizeof monitor, "inproc://ami-aggregator-monitor-%" PRIu64,
                  __atomic_fetch_add (&s_monitors, 1, __ATOMIC_RELAXED));
        if (zmq_socket_monitor (zsock_resolve (headend->dealer), monitor,
                                ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED
                                | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
                                | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0
        ||  !(headend->monitor = zsock_new (ZMQ_PAIR))) {
            ami_log_error ("aggregator %s: cannot monitor the head end %s socket: %s",
                           self->node_id, h->name, zmq_strerror (zmq_errno ()));
            s_self_destroy (&self);
            return NULL;
        }
        zsock_set_linger (headend->monitor, 0);
        if (zsock_connect (headend->monitor, "%s", monitor) != 0) {
            ami_log_error ("aggregator %s: cannot read the monitor of head end %s",
                           self->node_id, h->name);
            s_self_destroy (&self);
            return NULL;
        }
        if (ami_auth_client (headend->dealer, config->cert, h->server_key) != AMI_OK
        ||  zsock_connect (headend->dealer, "%s", h->endpoint) != 0) {
            ami_log_error ("aggregator %s: cannot connect to head end %s at %s",
                           self->node_id, h->name, h->endpoint);
            s_self_destroy (&self);
            return NULL;
        }
    }
    self->started = zclock_mono ();
    self->next_heartbeat = self->started + self->heartbeat_ms;
    /* introductions go on each handshake (s_handle_monitor) */
    ami_log_info ("aggregator %s: fleets on %s, %zu head ends; custody of up to %zu blocks "
                  "(%zu MiB) persisted in %s, batches of %u blocks or %d ms, ack timeout %d ms",
                  self->node_id, self->endpoint, self->headend_count, self->buffer_max,
                  self->buffer_bytes_max >> 20, self->state, self->batch_blocks,
                  self->batch_delay_ms, self->ack_timeout_ms);
    return self;
}

void
ami_aggregator_actor (zsock_t *pipe, void *args)
{
    zsock_signal (pipe, 0);
    agg_t *self = s_self_new (pipe, (const ami_aggregator_config_t *) args);
    if (!self) {
        ami_actor_failed (pipe);
        return;
    }
    ami_actor_ready (pipe);

    zpoller_t *poller = zpoller_new (pipe, self->router, ami_monitor_actor (self->watch),
                                     NULL);
    assert (poller);
    for (size_t i = 0; i < self->headend_count; i++) {
        zpoller_add (poller, self->headends [i].dealer);
        zpoller_add (poller, self->headends [i].monitor);
    }
    while (!self->terminated) {
        int64_t wait = s_next_wake (self) - zclock_mono ();
        void *which = zpoller_wait (poller, wait > 0 ? (int) wait : 0);
        if (which == pipe)
            s_handle_pipe (self);
        else
        if (which == self->router) {
            for (int n = 0; n < S_BATCH; n++) {
                s_handle_router (self);
                if (!(zsock_events (self->router) & ZMQ_POLLIN))
                    break;
            }
            /* the drain's fleet BATCHes: durable, then acknowledged */
            s_custody_commit (self);
        }
        else
        if (which) {
            for (size_t i = 0; i < self->headend_count; i++)
                if (which == self->headends [i].dealer)
                    for (int n = 0; n < S_BATCH; n++) {
                        s_handle_headend (self, i);
                        if (!(zsock_events (self->headends [i].dealer) & ZMQ_POLLIN))
                            break;
                    }
                else
                if (which == self->headends [i].monitor)
                    s_handle_monitor (self, i);
        }
        else
        if (zpoller_terminated (poller))
            break;
        /* every wake-up, not only when the poller names it: busy sockets
           must not hold back the handshake reports */
        s_watch (self);
        int64_t now = zclock_mono ();
        s_batch_timeouts (self, now);
        s_pump (self, now);
        if (zclock_mono () >= self->next_heartbeat) {
            s_tick (self);
            self->next_heartbeat += self->heartbeat_ms;
            if (self->next_heartbeat < zclock_mono ())
                self->next_heartbeat = zclock_mono () + self->heartbeat_ms;
        }
    }
    zpoller_destroy (&poller);
    /* the last tombstones; what the MDMS has not acknowledged stays in
       the store and goes again at the next start */
    s_custody_commit (self);
    if (self->buffer_blocks && !self->store)
        ami_log_warn ("aggregator %s: stopping with %zu blocks in custody not yet "
                      "acknowledged by the MDMS (%zu batches in flight): held in memory "
                      "only, they are lost", self->node_id, self->buffer_blocks,
                      self->lists [S_INFLIGHT].size);
    else
    if (self->buffer_blocks)
        ami_log_info ("aggregator %s: stopping with %zu blocks in custody not yet "
                      "acknowledged by the MDMS (%zu batches in flight): kept in %s, "
                      "sent again at the next start", self->node_id, self->buffer_blocks,
                      self->lists [S_INFLIGHT].size, self->state);
    ami_log_info ("aggregator %s: stopped (%" PRIu64 " down, %" PRIu64 " up, %" PRIu64
                  " blocks taken, %" PRIu64 " batches acknowledged)", self->node_id,
                  self->relayed_down, self->relayed_up, self->blocks_in, self->batches_acked);
    s_self_destroy (&self);
}

zactor_t *
ami_aggregator_new (const ami_aggregator_config_t *config)
{
    assert (config);
    return ami_actor_new (ami_aggregator_actor, (void *) config);
}
