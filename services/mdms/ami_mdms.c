/*  ami_mdms.c - the MDMS actor: operator API, on-demand reads, ingest of
    health and interval data, event feed. Contracts in ami_mdms.h; schema
    in ami_mdms_db.h.

    Design. One CZMQ actor thread owns four sockets and all state, and
    polls them with a timeout that is the earlier of the next heartbeat
    tick and the next read deadline. Patterns (zguide):
    - the broker link is a Majordomo client (RFC 7) over a DEALER used the
      Lazy Pirate way (chapter 4): every read has a deadline, each try a
      shorter timeout, and a timed-out try is resent after asking the
      broker (MMI, RFC 8) whether anyone serves the aggregator at all.
      Unlike the zguide's REQ-based Lazy Pirate, the DEALER never has to be
      reopened and many reads are in flight: a reply is matched by the
      request_id inside its body, so late or duplicate replies to earlier
      tries are recognised (same request_id) and accepted, or dropped when
      the read has ended.
    - MMI replies carry only a status code; the MDMS keeps its MMI
      questions in a FIFO ring and pairs each reply with the oldest
      question (one connection to one broker is ordered; MMI is answered
      at once). Questions older than 3 heartbeats mean the broker lost
      them (restart): the ring is cleared, the next poll starts afresh.
    - the api ROUTER is a REQ-compatible server (chapter 3 envelopes); the
      event feed is loss-tolerant and sequence-numbered (chapter 5 "getting
      an out-of-band snapshot" style gap detection by seq), published on an
      XPUB in manual mode (chapter 5 "last value caching" uses XPUB the
      same way) so that the actor decides, per subscriber, whether a
      subscription is applied (SEC-AUTH-3: operators and monitors only).
    - refused CURVE handshakes (SEC-AUD-2) come from libzmq socket
      monitors, read by a watcher actor of their own (ami_monitor.h)
      that reports each one on a pipe this actor polls; EVENT security is
      published through one budget per class of failure.
    - interval data on the ingest ROUTER is credit-based flow control
      (chapter 7): BATCH frames are queued, one group commit per pass of
      the loop writes them durably, and only then are they acknowledged
      with fresh credit (ami_mdms_ingest.c). Each pass serves every socket
      that has input (not only the first the poller names), so ingest load
      cannot starve operators or broker replies.
    - every operator request passes one gate on the way out, s_api_finish
      (or, for a stored reading, the transaction that stores it), which
      appends it to the hash-chained audit log before the reply leaves:
      nothing reaches an operator unaudited. On-demand reads are metered
      by token buckets per operator and per meter before anything is sent
      (refuse, never queue).

    State:
    - routes: aggregator id -> route_t (from the registry, fixed after
      start), with the last MMI answer and the reads waiting for one;
    - pending: request id (hex) -> pending_t, bounded by max_pending; the
      earliest deadline of all is kept in pending_due so the table is
      walked only when something is due;
    - services: "role/node_id" -> service_t, from HEALTH on ingest;
    - peers: ingest routing id (hex) -> peer_t, to know who has said HELLO.
    Clocks: zclock_mono for every timer, zclock_time (Unix ms) only for
    the timestamps that go on the wire or into the database.
*/
#include "ami_mdms.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_mdms_acl.h"
#include "ami_mdms_audit.h"
#include "ami_mdms_db.h"
#include "ami_mdms_ingest.h"
#include "ami_monitor.h"
#include "ami_mdms_rate.h"
#include "ami_msg.h"
#include "ami_service.h"
#include "ami_sort.h"

/*  RFC 7 / RFC 8 */
#define MDP_CLIENT          "MDPC01"
#define MMI_SERVICE         "mmi.service"
/*  The broker's own stats (ami_broker.h, "MMI"): asked every heartbeat,
    shown in the broker's API_STATUS row. Its answers carry this service
    name, so they never touch the FIFO pairing of mmi.service answers. */
#define MMI_AMI_STATS       "mmi.ami-stats"
/*  Service name of an aggregator: PROTOCOL.md 8.4 */
#define S_AGG_PREFIX        "agg."
/*  Asked by the MMI poll when the registry has no aggregator at all, so
    the broker's liveness is still known; no worker will ever offer it. */
#define S_PING_SERVICE      "mdms.ping"

/*  Linger 100 ms (PROTOCOL.md 8.1, AMI_LINGER_MS): flush a last reply on
    clean shutdown, never hang on a dead peer. */
#define S_LINGER_MS         100
/*  Missed heartbeats before a peer, the broker or a route is stale. */
#define S_LIVENESS          3
/*  Reconnect 100 ms, backing off to 5 s (PROTOCOL.md 8.1). */
#define S_RECONNECT_IVL_MS  100
#define S_RECONNECT_MAX_MS  5000
/*  Frames kept of one received message: an API request through a REQ is
    3 (identity, delimiter, body); proxies add an identity each. More is
    junk; it is read and discarded. */
#define S_MAX_FRAMES        16
/*  A message may exceed one frame's limit by its envelope frames. */
#define S_MAX_MESSAGE       ((size_t) AMI_MAX_FRAME + 4096)
/*  libzmq routing ids are 1..255 bytes. */
#define S_MAX_IDENTITY      255
#define S_KEY_SIZE          (2 * S_MAX_IDENTITY + 1)
/*  MMI questions in flight: one per aggregator per heartbeat for up to 3
    heartbeats, plus one per timed-out try. 65 536 covers 20 000
    aggregators (a very large utility) in 1 MiB of ring. */
#define S_MMI_RING          65536
/*  MMI questions unanswered this long (or 3 heartbeats, if longer) are
    taken as lost: far above a loopback round trip (~0.4 ms), below the
    time an operator waits for a read. */
#define S_MMI_STALE_MS      1000
/*  Ingest peers (head ends) remembered: a deployment has a handful; the
    bound stops reconnect loops from growing the table. */
#define S_MAX_PEERS         1024
/*  Messages handled per socket per wake-up: amortises the poll under
    load, still returns to the pipe and the timers quickly. */
#define S_BATCH             64
/*  HISTORY rows when the request says 0. */
#define S_HISTORY_DEFAULT   10
/*  Warning rate-limit window. */
/*  An encoded READ_REQ: ids, 5 u64, 16 + 66 bytes of binaries < 220. */
#define S_READ_REQ_MAX      256
/*  An encoded EVENT: 3 u64, two ids, 256 bytes of text < 400. */
#define S_EVENT_MAX         512

/*  Sweep refilled rate buckets every 10 heartbeats (10 s by default):
    frees memory of idle keys; the tables are bounded regardless. */
#define S_RATE_SWEEP_TICKS  10
/*  AUDIT rows when the request says 0. */
#define S_AUDIT_DEFAULT     100
/*  An encoded API_CUSTOMER: corr 18, meter 34, name 66, address 259,
    account 34 and headers: under 420 bytes. */
#define S_CUSTOMER_FRAME_MAX 512

#define S_ROLE_OPERATOR     "operator"
#define S_ROLE_HEADEND      "headend"
#define S_ROLE_AGGREGATOR   "aggregator"
#define S_ROLE_METER        "meter"     /* a meter fleet */
/*  One second: the window of the security-event budget. */
#define S_SECURITY_WINDOW_MS 1000
/*  Audit names for a certificate without node-id / ami-role. */
#define S_UNKNOWN_OPERATOR  "unknown"
#define S_NO_ROLE           "NONE"

/*  Who asked for what: everything an audit entry needs about a request,
    in the wire id charset. */
typedef struct {
    ami_id_t operator_id;
    char role [AMI_MAX_ROLE + 1];
    uint8_t action;                     /* 0: the request did not decode */
    ami_id_t meter_id;
    uint8_t corr [AMI_REQUEST_ID_SIZE];  /* zero when unknown */
} caller_t;

enum { ROUTE_UNKNOWN = 0, ROUTE_YES, ROUTE_NO };

typedef struct {
    ami_id_t id;                        /* aggregator id */
    char service [sizeof S_AGG_PREFIX + AMI_MAX_ID];   /* "agg.<id>" */
    int state;                          /* ROUTE_*, as last answered */
    int64_t answered;                   /* mono time of that answer, 0 = never */
    zlistx_t *checking;                 /* pending_t * waiting for an answer, borrowed */
} route_t;

typedef struct {
    char key [2 * AMI_REQUEST_ID_SIZE + 1];     /* request id in hex */
    uint8_t request_id [AMI_REQUEST_ID_SIZE];   /* fresh random, this read's only */
    char corr_key [2 * AMI_REQUEST_ID_SIZE + 1];    /* operator's corr in hex */
    ami_id_t meter_id;
    uint8_t sign_pk [AMI_E2E_SIGN_PK_SIZE];     /* the meter's, from the registry */
    route_t *route;
    zmsg_t *envelope;                   /* operator's routing frames + delimiter */
    caller_t caller;                    /* for the log and the audit entry */
    uint64_t requested_ms;              /* Unix ms of the first try */
    uint64_t expires_ms;                /* Unix ms deadline (READ_REQ.expires_ms) */
    int64_t started;                    /* mono */
    int64_t deadline;                   /* mono */
    int64_t try_deadline;               /* mono */
    int64_t try_ms;                     /* per-try timeout */
    int tries;
    uint64_t counter;                   /* of the last try */
    uint64_t first_issued_ms;           /* READ_REQ.issued_ms of the first try */
    uint64_t profile_from_s;            /* SEC-INT-5 recover: READ_REQ's range, */
    uint64_t profile_to_s;              /* both 0 for a plain read */
    bool checking;                      /* waiting for an MMI answer */
    void *check_handle;                 /* in route->checking */
    int relay_error;                    /* last relay ERROR (mapped), 0 = none */
    int relay_tries;                    /* tries ended by a relay ERROR (SEC-AVAIL-3) */
    bool completing;                    /* reading staged in the group commit */
} pending_t;

/*  A verified reading waiting for the group commit (see s_group_flush). */
typedef struct {
    pending_t *p;                       /* still in self->pending */
    ami_reading_t reading;
    uint64_t stored_ms;
} completed_t;

typedef struct {
    char role [AMI_MAX_ROLE + 1];
    ami_id_t node_id;
    uint8_t state;                      /* as last reported */
    uint64_t uptime_ms;                 /* as last reported */
    int64_t heard;                      /* mono */
    bool down;                          /* DOWN reported (event sent) */
    uint32_t stat_count;                /* the stats of its last HEALTH */
    ami_stat_t stats [AMI_MAX_STATS];
} service_t;

typedef struct {
    ami_id_t node_id;                   /* from its HELLO */
    bool introduced;                    /* HELLO received */
    int64_t heard;                      /* mono */
    int64_t hello_sent;                 /* mono, 0 = never */
} peer_t;

typedef struct {
    route_t *route;                     /* NULL for the ping question */
    int64_t sent;
} mmi_query_t;

/*  Classes of EVENT security, each with a budget of its own (SEC-AUD-2),
    so that a flood of one kind of failure - which anyone who can open a
    connection can cause - never hides another from the feed. */
enum {
    SEC_ANSWER,         /* a READ_RESP failed an end-to-end check */
    SEC_DENIED,         /* a request or a subscription refused for its role */
    SEC_HANDSHAKE,      /* a CURVE handshake refused by the allow-list */
    SEC_INGEST,         /* an interval block rejected */
    SEC_STORED,         /* stored data failed re-verification or decryption */
    SEC_CLASSES
};

static const char *const s_security_class [SEC_CLASSES] = {
    "answer", "denial", "handshake", "ingest", "stored-data"
};

typedef struct {
    int64_t window;                     /* mono start of the current window */
    unsigned published;                 /* events published in it */
    uint64_t left_out;                  /* ... and left out over the budget */
} security_budget_t;

typedef struct {
    zsock_t *pipe;
    zsock_t *api;
    zsock_t *ingest;
    zsock_t *events;                    /* XPUB, manual subscriptions (SEC-AUTH-3) */
    zsock_t *broker;
    ami_monitor_t *watch;          /* refused handshakes (SEC-AUD-2) */
    char *api_endpoint;
    char *ingest_endpoint;
    char *events_endpoint;
    ami_mdms_db_t *db;
    ami_mdms_audit_t *audit;
    ami_mdms_ingest_t *intake;          /* interval data: BATCH queue + group commit */
    ami_mdms_rate_t *rate_operator;
    ami_mdms_rate_t *rate_meter;
    ami_e2e_mdms_t keys;
    ami_id_t node_id;
    ami_id_t broker_id;
    int read_timeout_ms;
    int retries;
    int heartbeat_ms;
    size_t max_pending;
    size_t ingest_queue;                /* BATCHes queued for the group commit at most */

    ami_msg_t *rx;                      /* decoded input */
    ami_msg_t *tx;                      /* replies and commands being built */
    ami_msg_t *scratch;                 /* READINGs opened or read back */
    ami_msg_t *ev;                      /* events */
    uint8_t *buf;                       /* AMI_MAX_FRAME encode buffer */
    uint8_t plain [AMI_MAX_SEALED];     /* opened READING */
    ami_mdms_meter_t page [AMI_MAX_API_METERS];
    ami_audit_row_t audit_rows [AMI_MAX_API_AUDIT];

    zhashx_t *routes;
    zhashx_t *pending;                  /* request id hex -> pending_t */
    zhashx_t *corrs;                    /* operator corr hex -> pending_t, borrowed */
    ami_store_batch_t *group;           /* open group commit, NULL = none */
    completed_t *done;                  /* [S_BATCH] reads staged in group */
    size_t done_count;
    int64_t pending_due;                /* mono: walk pending when reached */
    zhashx_t *services;
    zhashx_t *peers;
    mmi_query_t *mmi;
    size_t mmi_head;
    size_t mmi_count;

    int64_t started;                    /* mono */
    int64_t broker_heard;               /* mono of the last MDP reply, 0 = never */
    int64_t broker_up_since;            /* mono, valid while broker_ready */
    bool broker_ready;
    uint32_t broker_stat_count;         /* from the last mmi.ami-stats answer */
    ami_stat_t broker_stats [AMI_MAX_STATS];
    uint64_t event_seq;

    uint64_t malformed;
    uint64_t denied;
    uint64_t reads_ok;
    uint64_t reads_failed;
    uint64_t send_failed;       /* messages the sockets would not take (dropped) */
    uint64_t bad_responses;
    uint64_t rate_limited;
    uint64_t audit_failures;
    uint64_t events_refused;            /* subscriptions refused (not operator/monitor) */
    //  Refusals at a bound (issue 6), one counter per kind
    uint64_t reads_busy;                /* reads refused: max_pending in flight */
    uint64_t services_evicted;          /* services forgotten: table full */
    uint64_t peers_refused;             /* ingest peers not remembered: table full */
    uint64_t mmi_refused;               /* MMI questions not asked: ring full */
    uint64_t health_refused;            /* ingest HEALTH of a role or node not allowed */
    unsigned ticks;
    bool audit_action0;                 /* the codec lets API_AUDIT carry action 0 */

    bool terminated;
    ami_log_limit_t warn_limit; /* warnings about peers' input (ami_log.h) */
    ami_log_limit_t error_limit;    /* storage failures, once per request (ami_log.h) */
    security_budget_t security [SEC_CLASSES];   /* EVENT security budgets */
} mdms_t;

static const char *const s_event_topics [AMI_EV_MAX + 1] = {
    NULL, "event.read_done", "event.read_failed", "event.meter_alarm",
    "event.meter_offline", "event.service_down", "event.service_up", "event.security"
};


/* ---------------------------------------------------------------------- */
/*  Logging and small helpers                                               */

static void
s_warn (mdms_t *self, const char *format, ...) CHECK_PRINTF (2);

/*  Warn about bad input, at most AMI_MDMS_LOG_BURST lines a second. */
static void
s_warn (mdms_t *self, const char *format, ...)
{
    if (!self->warn_limit.burst)
        self->warn_limit.burst = AMI_MDMS_LOG_BURST;
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (&self->warn_limit, "mdms", format, args);
    va_end (args);
}

static void
s_hex (const uint8_t *data, size_t size, char *out)
{
    static const char digits [] = "0123456789abcdef";
    for (size_t i = 0; i < size; i++) {
        out [2 * i] = digits [data [i] >> 4];
        out [2 * i + 1] = digits [data [i] & 15];
    }
    out [2 * size] = 0;
}

/*  Routing id as hex (S_KEY_SIZE); false for one libzmq never makes. */
static bool
s_identity_key (zframe_t *identity, char *key)
{
    size_t size = zframe_size (identity);
    if (size == 0 || size > S_MAX_IDENTITY)
        return false;
    s_hex (zframe_data (identity), size, key);
    return true;
}

/*  Copy text from a peer for our own text fields and logs: printable
    ASCII only (a peer's UTF-8 cut in the middle would make our frame
    invalid; control characters do not belong in logs). */
static void
s_sanitize (char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (; src && *src && n + 1 < cap; src++)
        dst [n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    dst [n] = 0;
}

static const char *
s_meta_or (zframe_t *frame, const char *name, const char *fallback)
{
    const char *value = frame ? ami_auth_peer_meta (frame, name) : NULL;
    return value ? value : fallback;
}

static bool
s_fresh (mdms_t *self, int64_t heard, int64_t now)
{
    return heard && now - heard <= (int64_t) S_LIVENESS * self->heartbeat_ms;
}

/*  A route's state if its answer is fresh, else unknown. */
static int
s_route_state (mdms_t *self, route_t *route, int64_t now)
{
    return s_fresh (self, route->answered, now) ? route->state : ROUTE_UNKNOWN;
}


/* ---------------------------------------------------------------------- */
/*  Sending                                                                 */

/*  Send msg on sock without blocking; destroys msg either way. */
static bool
s_send (mdms_t *self, zsock_t *sock, zmsg_t **msg_p, const char *what)
{
    if (zmsg_send (msg_p, sock) == 0)
        return true;
    //  ROUTER_MANDATORY and no send timeout (s_options): a peer that is
    //  gone or full fails the send at once instead of a silent drop
    self->send_failed++;
    s_warn (self, "%s: send failed: %s (dropped)", what, zmq_strerror (zmq_errno ()));
    zmsg_destroy (msg_p);
    return false;
}

/*  Publish one event: [topic][EVENT]. Loss-tolerant by design: libzmq
    drops an event for a subscriber whose queue is full
    (AMI_MDMS_EVENTS_SNDHWM) and says nothing, so nothing here can count
    it; the subscriber sees the gap in EVENT.seq, and events_seq (this
    seq) is in the MDMS's stats to compare with. */
static void
s_publish (mdms_t *self, int kind, const char *meter_id, const char *format, ...)
    CHECK_PRINTF (4);

static void
s_publish (mdms_t *self, int kind, const char *meter_id, const char *format, ...)
{
    assert (kind >= 1 && kind <= AMI_EV_MAX);
    ami_msg_t *ev = self->ev;
    ami_msg_reset (ev, AMI_MSG_EVENT);
    ev->event.seq = ++self->event_seq;
    ev->event.time_ms = (uint64_t) zclock_time ();
    ev->event.kind = (uint16_t) kind;
    snprintf (ev->event.meter_id, sizeof ev->event.meter_id, "%s", meter_id ? meter_id : "");
    snprintf (ev->event.origin, sizeof ev->event.origin, "%s", self->node_id);
    va_list args;
    va_start (args, format);
    vsnprintf (ev->event.text, sizeof ev->event.text, format, args);
    va_end (args);
    uint8_t frame [S_EVENT_MAX];
    size_t len = 0;
    int rc = ami_msg_encode (ev, frame, sizeof frame, &len);
    if (rc) {
        ami_log_error ("mdms: cannot encode event: %s", ami_strerror (rc));
        return;
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, s_event_topics [kind]);
    zmsg_addmem (msg, frame, len);
    s_send (self, self->events, &msg, "events");
}

/*  The window of one class's security-event budget: a window opens with
    the first event after the previous one is over (opening = true), so a
    burst always starts with a whole budget; a window that is over and left
    events out is closed by one event saying how many (from s_security, or
    from the heartbeat tick when no further event of the class comes). */
static void
s_security_window (mdms_t *self, int class, int64_t now, bool opening)
{
    security_budget_t *budget = &self->security [class];
    if (now - budget->window < S_SECURITY_WINDOW_MS)
        return;
    if (!opening && !budget->left_out)
        return;
    uint64_t left_out = budget->left_out;
    budget->window = now;
    budget->published = 0;
    budget->left_out = 0;
    if (left_out) {
        budget->published++;
        s_publish (self, AMI_EV_SECURITY, "", "%llu %s security events left out of the feed "
                   "in the last second (more than %d a second; see the log and counters)",
                   (unsigned long long) left_out, s_security_class [class],
                   AMI_MDMS_LOG_BURST);
    }
}

static void
s_security (mdms_t *self, int class, const char *meter_id, const char *format, ...)
    CHECK_PRINTF (4);

/*  SEC-AUD-2: publish EVENT security, at most AMI_MDMS_LOG_BURST a second
    per class (an attacker who can make failures must not turn them into
    an event flood, nor hide other failures behind them); the ones over the
    budget are counted and announced by one event when the second is over.
    The counters and the log are the complete record. */
static void
s_security (mdms_t *self, int class, const char *meter_id, const char *format, ...)
{
    assert (class >= 0 && class < SEC_CLASSES);
    s_security_window (self, class, zclock_mono (), true);
    security_budget_t *budget = &self->security [class];
    if (budget->published >= AMI_MDMS_LOG_BURST) {
        budget->left_out++;
        return;
    }
    budget->published++;
    char text [AMI_MAX_TEXT + 1];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    s_publish (self, AMI_EV_SECURITY, meter_id, "%s", text);
}

/*  Encode self->tx and send it to the operator behind envelope (borrowed). */
static void
s_api_send (mdms_t *self, zmsg_t *envelope)
{
    size_t len = 0;
    int rc = ami_msg_encode (self->tx, self->buf, AMI_MAX_FRAME, &len);
    if (rc) {
        //  Every reply is built from checked data: this is a bug
        ami_log_error ("mdms: cannot encode %s reply: %s", ami_msg_type_name (self->tx->type),
                       ami_strerror (rc));
        ami_msg_reset (self->tx, AMI_MSG_ERROR);
        self->tx->error.code = AMI_E_INTERNAL;
        snprintf (self->tx->error.origin, sizeof self->tx->error.origin, "%s", self->node_id);
        snprintf (self->tx->error.text, sizeof self->tx->error.text, "reply could not be encoded");
        if (ami_msg_encode (self->tx, self->buf, AMI_MAX_FRAME, &len))
            return;
    }
    zmsg_t *msg = zmsg_dup (envelope);
    if (!msg || zmsg_addmem (msg, self->buf, len)) {
        zmsg_destroy (&msg);
        return;
    }
    s_send (self, self->api, &msg, "api reply");
}

/*  Copy text from a certificate into an audit field: id characters kept,
    anything else '_', cut at cap - 1; fallback if nothing is left. */
static void
s_audit_text (char *dst, size_t cap, const char *src, const char *fallback)
{
    size_t n = 0;
    for (; src && *src && n + 1 < cap; src++) {
        char c = *src;
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
               || c == '.' || c == '_' || c == ':' || c == '-';
        dst [n++] = ok ? c : '_';
    }
    dst [n] = 0;
    if (n == 0)
        snprintf (dst, cap, "%s", fallback);
}

/*  Describe a request for the audit log. operator_id and role as the
    certificate says (may be NULL); meter_id and corr may be NULL. */
static void
s_caller_init (caller_t *caller, const char *operator_id, const char *role, int action,
               const char *meter_id, const uint8_t *corr)
{
    memset (caller, 0, sizeof *caller);
    s_audit_text (caller->operator_id, sizeof caller->operator_id, operator_id,
                  S_UNKNOWN_OPERATOR);
    s_audit_text (caller->role, sizeof caller->role, role, S_NO_ROLE);
    caller->action = action >= 1 && action <= AMI_ACT_MAX ? (uint8_t) action : 0;
    if (meter_id && ami_id_valid (meter_id))
        snprintf (caller->meter_id, sizeof caller->meter_id, "%s", meter_id);
    if (corr)
        memcpy (caller->corr, corr, AMI_REQUEST_ID_SIZE);
}

static void
s_audit_entry (const caller_t *caller, int result, ami_audit_row_t *entry)
{
    memset (entry, 0, sizeof *entry);
    memcpy (entry->operator_id, caller->operator_id, sizeof entry->operator_id);
    memcpy (entry->role, caller->role, sizeof entry->role);
    entry->action = caller->action;
    memcpy (entry->meter_id, caller->meter_id, sizeof entry->meter_id);
    memcpy (entry->corr, caller->corr, AMI_REQUEST_ID_SIZE);
    entry->result = (uint16_t) result;
}

static void
    s_group_flush (mdms_t *self);
static uint64_t
    s_handshakes_refused (mdms_t *self);
static uint64_t
    s_handshakes_failed (mdms_t *self);

/*  Append the outcome of caller's request to the audit log, durably.
    Returns AMI_OK or why not (logged: an unaudited request is an
    incident, never a silent loss). */
static int
s_audit (mdms_t *self, const caller_t *caller, int result)
{
    //  One write transaction at a time: commit the open group first
    s_group_flush (self);
    ami_audit_row_t entry;
    s_audit_entry (caller, result, &entry);
    int rc = ami_mdms_audit_append (self->audit, &entry, NULL);
    if (rc) {
        self->audit_failures++;
        char corr_hex [2 * AMI_REQUEST_ID_SIZE + 1];
        ami_request_id_format (caller->corr, corr_hex);
        //  Every failure is counted (audit_failures); while the store
        //  stays full each request fails the same way, so the lines are
        //  limited (the count of those left out follows)
        if (!self->error_limit.burst)
            self->error_limit.burst = AMI_MDMS_LOG_BURST;
        ami_log_error_limited (&self->error_limit, "mdms",
                               "AUDIT LOG WRITE FAILED (%s): operator=%s role=%s action=%s "
                               "meter=%s corr=%s result=%s", ami_strerror (rc),
                               caller->operator_id, caller->role,
                               ami_action_name (caller->action)
                               ? ami_action_name (caller->action) : "none",
                               caller->meter_id, corr_hex, ami_errname (result));
    }
    return rc;
}

/*  The one way an operator reply leaves: audit self->tx's outcome, then
    send it. A reply with data whose audit entry could not be written is
    replaced by ERROR AMI_E_STORAGE (disclose nothing unaudited). One
    exception: API_STATUS, which holds no meter or customer data, only the
    services' health and counters - what an operator needs to see a full
    disk and its back-pressure. It still leaves; the missing entry is
    counted (audit_failures) and logged with operator, action and corr. */
static void
s_api_finish (mdms_t *self, const caller_t *caller, zmsg_t *envelope)
{
    ami_msg_t *tx = self->tx;
    int result = tx->type == AMI_MSG_ERROR ? tx->error.code : AMI_OK;
    if (s_audit (self, caller, result) != AMI_OK && tx->type != AMI_MSG_ERROR
    &&  tx->type != AMI_MSG_API_STATUS) {
        ami_msg_reset (tx, AMI_MSG_ERROR);
        tx->error.has_request_id = true;
        memcpy (tx->error.request_id, caller->corr, AMI_REQUEST_ID_SIZE);
        tx->error.code = AMI_E_STORAGE;
        snprintf (tx->error.origin, sizeof tx->error.origin, "%s", self->node_id);
        snprintf (tx->error.text, sizeof tx->error.text,
                  "the audit log cannot be written: reply withheld");
    }
    s_api_send (self, envelope);
}

static void
s_api_error (mdms_t *self, const caller_t *caller, zmsg_t *envelope, const uint8_t *corr,
             int code, const char *format, ...) CHECK_PRINTF (6);

/*  Reply ERROR(corr, code, origin = this MDMS, text), audited. corr may be
    NULL (no request id in the reply). */
static void
s_api_error (mdms_t *self, const caller_t *caller, zmsg_t *envelope, const uint8_t *corr,
             int code, const char *format, ...)
{
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_ERROR);
    tx->error.has_request_id = corr != NULL;
    if (corr)
        memcpy (tx->error.request_id, corr, AMI_REQUEST_ID_SIZE);
    tx->error.code = (uint16_t) code;
    snprintf (tx->error.origin, sizeof tx->error.origin, "%s", self->node_id);
    va_list args;
    va_start (args, format);
    vsnprintf (tx->error.text, sizeof tx->error.text, format, args);
    va_end (args);
    s_api_finish (self, caller, envelope);
}

/*  MDP client request: "", "MDPC01", service, body. */
static bool
s_mdp_send (mdms_t *self, const char *service, const void *body, size_t size, bool quiet)
{
    zmsg_t *msg = zmsg_new ();
    if (!msg)
        return false;
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, MDP_CLIENT);
    zmsg_addstr (msg, service);
    zmsg_addmem (msg, body, size);
    if (zmsg_send (&msg, self->broker) == 0)
        return true;
    //  IMMEDIATE: not connected to the broker (yet, or any more); the
    //  quiet ones are the heartbeat's route polls, asked again next beat
    if (!quiet) {
        self->send_failed++;
        s_warn (self, "broker: cannot send to '%s': %s", service, zmq_strerror (zmq_errno ()));
    }
    zmsg_destroy (&msg);
    return false;
}


/* ---------------------------------------------------------------------- */
/*  Pending reads                                                           */

static void
s_pending_destructor (void **item)
{
    pending_t *p = (pending_t *) *item;
    if (p) {
        zmsg_destroy (&p->envelope);
        free (p);
        *item = NULL;
    }
}

static void
s_route_destructor (void **item)
{
    route_t *route = (route_t *) *item;
    if (route) {
        zlistx_destroy (&route->checking);
        free (route);
        *item = NULL;
    }
}

static void
s_pending_uncheck (pending_t *p)
{
    if (p->check_handle) {
        zlistx_delete (p->route->checking, p->check_handle);
        p->check_handle = NULL;
    }
    p->checking = false;
}

static void
s_pending_remove (mdms_t *self, pending_t *p)
{
    s_pending_uncheck (p);
    if (zhashx_lookup (self->corrs, p->corr_key) == p)
        zhashx_delete (self->corrs, p->corr_key);
    char key [sizeof p->key];
    memcpy (key, p->key, sizeof key);
    zhashx_delete (self->pending, key);         //  frees p
}

static void
s_due (mdms_t *self, int64_t when)
{
    if (when < self->pending_due)
        self->pending_due = when;
}

/*  A read failed: ERROR to the operator (audited), EVENT read_failed,
    log. envelope borrowed; caller identifies the read; req_hex is its
    READ_REQ request id (NULL when none was chosen yet). */
static void
s_read_failed (mdms_t *self, zmsg_t *envelope, const caller_t *caller, const char *req_hex,
               int code, const char *text)
{
    char corr_hex [2 * AMI_REQUEST_ID_SIZE + 1];
    ami_request_id_format (caller->corr, corr_hex);
    self->reads_failed++;
    ami_log_info ("read %s corr=%s req=%s operator=%s failed: %s (%s)", caller->meter_id,
                  corr_hex, req_hex ? req_hex : "-", caller->operator_id, ami_errname (code),
                  text);
    s_api_error (self, caller, envelope, caller->corr, code, "%s", text);
    s_publish (self, AMI_EV_READ_FAILED, caller->meter_id, "%s: %s", ami_errname (code), text);
}

static void
s_pending_fail (mdms_t *self, pending_t *p, int code, const char *format, ...)
    CHECK_PRINTF (4);

static void
s_pending_fail (mdms_t *self, pending_t *p, int code, const char *format, ...)
{
    char text [AMI_MAX_TEXT + 1];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    s_read_failed (self, p->envelope, &p->caller, p->key, code, text);
    s_pending_remove (self, p);
}

/*  Send (or resend) the read's command: new counter, new signature.
    Returns AMI_OK or why it could not be sent at all. */
static int
s_read_send (mdms_t *self, pending_t *p)
{
    uint64_t now_ms = (uint64_t) zclock_time ();
    if (now_ms >= p->expires_ms)
        return AMI_E_TIMEOUT;
    //  One write transaction at a time: commit the open group first
    s_group_flush (self);
    uint64_t counter = 0;
    int rc = ami_mdms_db_counter_next (self->db, &counter);
    if (rc)
        return rc;                      //  never send an unpersisted counter
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_READ_REQ);
    snprintf (tx->read_req.meter_id, sizeof tx->read_req.meter_id, "%s", p->meter_id);
    memcpy (tx->read_req.request_id, p->request_id, AMI_REQUEST_ID_SIZE);
    tx->read_req.counter = counter;
    tx->read_req.issued_ms = now_ms;
    tx->read_req.expires_ms = p->expires_ms;
    tx->read_req.profile_from_s = p->profile_from_s;
    tx->read_req.profile_to_s = p->profile_to_s;
    //  signature left zero: signed in place after encoding
    uint8_t frame [S_READ_REQ_MAX];
    size_t len = 0;
    rc = ami_msg_encode (tx, frame, sizeof frame, &len);
    if (rc == AMI_OK)
        rc = ami_e2e_sign (frame, len, self->keys.sign_sk);
    if (rc) {
        ami_log_error ("mdms: cannot build READ_REQ for %s: %s", p->meter_id, ami_strerror (rc));
        return AMI_E_INTERNAL;
    }
    if (p->tries == 0)
        p->first_issued_ms = now_ms;
    p->tries++;
    p->counter = counter;
    int64_t now = zclock_mono ();
    p->try_deadline = now + p->try_ms < p->deadline ? now + p->try_ms : p->deadline;
    s_due (self, p->try_deadline);
    ami_log_debug ("read %s corr=%s req=%s try %d counter %llu via %s", p->meter_id,
                   p->corr_key, p->key, p->tries, (unsigned long long) counter, p->route->service);
    //  A send that fails (broker unreachable) is a lost try: the try
    //  timeout and the MMI question handle it like any other loss
    s_mdp_send (self, p->route->service, frame, len, false);
    return AMI_OK;
}

/*  Ask the broker (MMI) about service; route NULL asks the ping service.
    Returns true if the question went out. */
static bool
s_mmi_ask (mdms_t *self, route_t *route)
{
    if (self->mmi_count == S_MMI_RING) {
        self->mmi_refused++;
        s_warn (self, "broker: %d MMI questions unanswered, not asking more", S_MMI_RING);
        return false;
    }
    const char *service = route ? route->service : S_PING_SERVICE;
    //  quiet while the broker is not known to be up: at start-up the
    //  connection may not be there yet
    if (!s_mdp_send (self, MMI_SERVICE, service, strlen (service), !self->broker_ready))
        return false;
    size_t slot = (self->mmi_head + self->mmi_count) % S_MMI_RING;
    self->mmi [slot].route = route;
    self->mmi [slot].sent = zclock_mono ();
    self->mmi_count++;
    return true;
}

/*  May the read be sent once more? Tries that ended in a relay ERROR
    (SEC-AVAIL-3) have a budget of their own (s_read_error), so they do not
    use up the retries of tries that timed out or that the meter refused
    as a replay: the next try may be of either kind. */
static bool
s_tries_left (mdms_t *self, pending_t *p)
{
    return p->tries - p->relay_tries <= self->retries;
}

/*  A try timed out: wait for the broker's word on the route. */
static void
s_pending_check (mdms_t *self, pending_t *p)
{
    p->checking = true;
    p->check_handle = zlistx_add_end (p->route->checking, p);
    //  If the question cannot go out, the read waits for the next periodic
    //  poll's answer, or its deadline
    s_mmi_ask (self, p->route);
    s_due (self, p->deadline);
}

/*  Walk the pending table when something is due: end reads past their
    deadline, question the route of reads whose try timed out. */
static void
s_pending_timers (mdms_t *self)
{
    int64_t now = zclock_mono ();
    if (now < self->pending_due)
        return;
    int64_t due = INT64_MAX;
    zlistx_t *expired = zlistx_new ();
    zlistx_t *timed_out = zlistx_new ();
    assert (expired && timed_out);
    for (pending_t *p = (pending_t *) zhashx_first (self->pending); p;
         p = (pending_t *) zhashx_next (self->pending)) {
        if (now >= p->deadline)
            zlistx_add_end (expired, p);
        else
        if (!p->checking && now >= p->try_deadline)
            zlistx_add_end (timed_out, p);
        else {
            int64_t when = p->checking ? p->deadline : p->try_deadline;
            if (when < due)
                due = when;
        }
    }
    self->pending_due = due;
    for (pending_t *p = (pending_t *) zlistx_first (expired); p;
         p = (pending_t *) zlistx_next (expired)) {
        //  No meter answer by the deadline: the timeout error; the last
        //  relay ERROR, if any, says best why
        if (p->relay_error)
            s_pending_fail (self, p, AMI_E_TIMEOUT, "no valid answer from meter %s within "
                            "%lld ms (%d tries); last relay error: %s", p->meter_id,
                            (long long) (now - p->started), p->tries,
                            ami_errname (p->relay_error));
        else
            s_pending_fail (self, p, AMI_E_TIMEOUT, "no valid answer from meter %s within "
                            "%lld ms (%d tries)", p->meter_id, (long long) (now - p->started),
                            p->tries);
    }
    for (pending_t *p = (pending_t *) zlistx_first (timed_out); p;
         p = (pending_t *) zlistx_next (timed_out))
        s_pending_check (self, p);
    zlistx_destroy (&expired);
    zlistx_destroy (&timed_out);
}


/* ---------------------------------------------------------------------- */
/*  Broker link: MMI answers and read replies                               */

static void
s_broker_heard (mdms_t *self)
{
    int64_t now = zclock_mono ();
    self->broker_heard = now;
    if (!self->broker_ready) {
        self->broker_ready = true;
        self->broker_up_since = now;
        ami_log_info ("broker %s is answering", self->broker_id);
        s_publish (self, AMI_EV_SERVICE_UP, "", "broker %s is answering", self->broker_id);
    }
}

static void
s_mmi_reply (mdms_t *self, zframe_t *body)
{
    if (self->mmi_count == 0) {
        s_warn (self, "broker: MMI answer to no question, dropped");
        return;
    }
    mmi_query_t query = self->mmi [self->mmi_head];
    self->mmi_head = (self->mmi_head + 1) % S_MMI_RING;
    self->mmi_count--;
    int state = ROUTE_UNKNOWN;
    if (zframe_streq (body, "200"))
        state = ROUTE_YES;
    else
    if (zframe_streq (body, "404"))
        state = ROUTE_NO;
    else
        s_warn (self, "broker: MMI answer of %zu bytes is neither 200 nor 404",
                zframe_size (body));
    route_t *route = query.route;
    if (!route)
        return;                         //  the ping: liveness only
    int64_t now = zclock_mono ();
    if (state != ROUTE_UNKNOWN) {
        if (state != route->state || !route->answered)
            ami_log_debug ("route to aggregator %s: %s", route->id,
                           state == ROUTE_YES ? "a head end offers it" : "no head end");
        route->state = state;
        route->answered = now;
    }
    //  Reads whose try timed out were waiting for this answer
    while (zlistx_size (route->checking)) {
        pending_t *p = (pending_t *) zlistx_detach (route->checking, NULL);
        p->check_handle = NULL;
        p->checking = false;
        if (state == ROUTE_NO)
            s_pending_fail (self, p, AMI_E_NO_ROUTE, "no head end reaches aggregator %s "
                            "of meter %s", route->id, p->meter_id);
        else
        if (state == ROUTE_YES && s_tries_left (self, p)) {
            int rc = s_read_send (self, p);
            if (rc)
                s_pending_fail (self, p, rc, "cannot resend the read of meter %s: %s",
                                p->meter_id, ami_strerror (rc));
        }
        else {
            //  no tries left (or no clear answer): wait for the deadline
            p->try_deadline = p->deadline;
            s_due (self, p->deadline);
        }
    }
}

/*  Look up the read a reply answers; NULL (logged) if none. */
static pending_t *
s_reply_pending (mdms_t *self, const uint8_t *request_id, const char *service, const char *what)
{
    char key [2 * AMI_REQUEST_ID_SIZE + 1];
    ami_request_id_format (request_id, key);
    pending_t *p = (pending_t *) zhashx_lookup (self->pending, key);
    if (!p) {
        //  Normal for a late answer to a read that has ended
        ami_log_debug ("%s for request %s on %s: no such read in flight, dropped",
                       what, key, service);
        return NULL;
    }
    if (strcmp (service, p->route->service) != 0) {
        s_warn (self, "%s for request %s came through %s, the read went to %s: dropped",
                what, key, service, p->route->service);
        self->bad_responses++;
        return NULL;
    }
    if (p->completing) {
        //  Its reading is in the group commit: the read has its answer
        ami_log_debug ("%s for request %s: read already answered, dropped", what, key);
        return NULL;
    }
    return p;
}

/*  A READ_RESP failed a check: drop it, count it, tell the security feed.
    The read keeps waiting (a genuine answer may still come). */
static void
s_bad_response (mdms_t *self, pending_t *p, int code, const char *why)
{
    self->bad_responses++;
    s_warn (self, "READ_RESP for meter %s corr %s request %s rejected: %s (%s); not stored",
            p->meter_id, p->corr_key, p->key, why, ami_errname (code));
    s_security (self, SEC_ANSWER, p->meter_id, "READ_RESP rejected: %s (%s)", why,
                ami_errname (code));
}


/* ---------------------------------------------------------------------- */
/*  Group commit of verified readings                                       */
/*
    A durable LMDB commit (one fdatasync, ~0.5 ms) per stored reading was
    half of the actor's CPU under load. Verified readings are therefore
    staged, with their reads' audit entries, in ONE write transaction that
    stays open while one wake-up drains the broker socket (at most S_BATCH
    messages); s_group_flush commits it once and only THEN replies to the
    operators and publishes the events: nothing is disclosed before it is
    durable, nothing is stored unaudited (same transaction).

    LMDB allows one write transaction per environment: every other write
    (s_audit, the counter in s_read_send) calls s_group_flush first, so the
    group is committed early rather than deadlocking. A read whose reading
    is staged is marked completing: further replies for it are dropped, and
    it is taken off its route's MMI wait list, so nothing else ends it
    before the flush does.
*/

/*  Fail every staged read with rc (the batch is already gone). */
static void
s_group_fail (mdms_t *self, size_t count, int rc)
{
    for (size_t i = 0; i < count; i++) {
        pending_t *p = self->done [i].p;
        p->completing = false;
        //  Neither the reading nor its audit entry is stored: the failure
        //  is audited on its own
        s_pending_fail (self, p, rc, "reading of meter %s could not be stored: %s",
                        p->meter_id, ami_strerror (rc));
    }
}

/*  Commit the open group, then answer every read in it. */
static void
s_group_flush (mdms_t *self)
{
    if (!self->group)
        return;
    size_t count = self->done_count;
    self->done_count = 0;
    int rc = ami_store_batch_commit (&self->group);
    self->group = NULL;
    ami_mdms_audit_settle (self->audit, rc == AMI_OK);
    if (rc) {
        if (!self->error_limit.burst)
            self->error_limit.burst = AMI_MDMS_LOG_BURST;
        ami_log_error_limited (&self->error_limit, "mdms", "group commit of %zu readings "
                               "failed: %s", count, ami_strerror (rc));
        s_group_fail (self, count, rc);
        return;
    }
    int64_t now = zclock_mono ();
    for (size_t i = 0; i < count; i++) {
        completed_t *done = &self->done [i];
        pending_t *p = done->p;
        int64_t took = now - p->started;
        ami_msg_t *tx = self->tx;
        ami_msg_reset (tx, AMI_MSG_API_READINGS);
        memcpy (tx->api_readings.corr, p->caller.corr, AMI_REQUEST_ID_SIZE);
        tx->api_readings.more = false;
        tx->api_readings.count = 1;
        tx->api_readings.readings [0].reading = done->reading;
        tx->api_readings.readings [0].requested_ms = p->requested_ms;
        tx->api_readings.readings [0].stored_ms = done->stored_ms;
        s_api_send (self, p->envelope);
        self->reads_ok++;
        ami_log_info ("read %s corr=%s req=%s operator=%s: %u registers stored in %lld ms "
                      "(%d tries, commit of %zu)", p->meter_id, p->corr_key, p->key,
                      p->caller.operator_id, done->reading.register_count, (long long) took,
                      p->tries, count);
        s_publish (self, AMI_EV_READ_DONE, p->meter_id, "read ok in %lld ms", (long long) took);
        s_pending_remove (self, p);
    }
}

/*  Stage a verified reading (self->plain, plain_len; decoded in reading)
    with its proof and the read's audit entry (result 0) in the group
    commit. On a storage error the read fails (audited on its own). */
static void
s_group_add (mdms_t *self, pending_t *p, const ami_reading_t *reading, size_t plain_len,
             const uint8_t *proof, size_t proof_size)
{
    if (self->done_count == S_BATCH)
        s_group_flush (self);           //  never, with S_BATCH messages a wake-up
    int rc = AMI_OK;
    if (!self->group) {
        self->group = ami_store_batch_begin (ami_mdms_db_store (self->db), &rc);
        if (!self->group) {
            s_pending_fail (self, p, rc, "reading of meter %s could not be stored: %s",
                            p->meter_id, ami_strerror (rc));
            return;
        }
    }
    uint64_t stored_ms = (uint64_t) zclock_time ();
    rc = ami_mdms_db_reading_stage (self->db, self->group, p->meter_id, reading->read_ms,
                                    p->request_id, p->requested_ms, stored_ms, self->plain,
                                    plain_len, proof, proof_size);
    if (rc == AMI_E_EXISTS)
        rc = AMI_OK;                    //  this very reading is already stored
    if (rc == AMI_OK) {
        ami_audit_row_t entry;
        s_audit_entry (&p->caller, AMI_OK, &entry);
        rc = ami_mdms_audit_stage (self->audit, self->group, &entry, NULL);
    }
    if (rc) {
        //  A failed put may leave the transaction unusable: drop the whole
        //  group; its reads and this one fail (nothing of them is stored)
        ami_log_error ("mdms: cannot stage the reading of %s: %s; %zu staged readings "
                       "dropped", p->meter_id, ami_strerror (rc), self->done_count);
        ami_store_batch_abort (&self->group);
        self->group = NULL;
        ami_mdms_audit_settle (self->audit, false);
        size_t count = self->done_count;
        self->done_count = 0;
        s_group_fail (self, count, rc);
        s_pending_fail (self, p, rc, "reading of meter %s could not be stored: %s",
                        p->meter_id, ami_strerror (rc));
        return;
    }
    completed_t *done = &self->done [self->done_count++];
    done->p = p;
    done->reading = *reading;
    done->stored_ms = stored_ms;
    p->completing = true;
    s_pending_uncheck (p);              //  no MMI answer may end it now
}

static void
s_read_resp (mdms_t *self, const uint8_t *data, size_t size, const char *service)
{
    ami_read_resp_t *resp = &self->rx->read_resp;
    pending_t *p = s_reply_pending (self, resp->request_id, service, "READ_RESP");
    if (!p)
        return;
    if (strcmp (resp->meter_id, p->meter_id) != 0) {
        s_bad_response (self, p, AMI_E_WRONG_TARGET, "answered by another meter id");
        return;
    }
    if (ami_e2e_verify (data, size, p->sign_pk) != AMI_OK) {
        s_bad_response (self, p, AMI_E_BAD_SIGNATURE, "meter signature does not verify");
        return;
    }
    //  From here on the answer is the meter's own
    p->relay_error = 0;
    if (resp->status == AMI_E_REPLAY && s_tries_left (self, p)) {
        //  Two reads of this meter raced and the later-numbered one reached
        //  it first: the meter refuses the lower counter. Resend with a
        //  new counter (a try; within the deadline)
        ami_log_info ("read %s corr=%s req=%s: meter refused counter %llu as a replay; "
                      "resending (try %d)", p->meter_id, p->corr_key, p->key,
                      (unsigned long long) p->counter, p->tries + 1);
        s_pending_uncheck (p);
        int rc = s_read_send (self, p);
        if (rc)
            s_pending_fail (self, p, rc == AMI_E_TIMEOUT ? AMI_E_REPLAY : rc,
                            "meter %s refused the command (%s) and no time is left to "
                            "resend", p->meter_id, ami_strerror (AMI_E_REPLAY));
        return;
    }
    if (resp->status != AMI_OK) {
        //  The meter's own, signed refusal
        s_pending_fail (self, p, resp->status, "meter %s refused the command: %s",
                        p->meter_id, ami_strerror (resp->status));
        return;
    }
    size_t plain_len = 0;
    int rc = ami_e2e_open_padded (resp->sealed, resp->sealed_size, &self->keys, self->plain,
                                  sizeof self->plain, &plain_len);
    if (rc) {
        s_bad_response (self, p, rc, "sealed reading does not open");
        return;
    }
    ami_msg_t *reading_msg = self->scratch;
    rc = ami_msg_decode (reading_msg, self->plain, plain_len);
    if (rc == AMI_OK && reading_msg->type != AMI_MSG_READING)
        rc = AMI_E_MSGTYPE;
    if (rc) {
        s_bad_response (self, p, rc, "sealed content is not a READING");
        return;
    }
    ami_reading_t *reading = &reading_msg->reading;
    if (strcmp (reading->meter_id, p->meter_id) != 0
    ||  memcmp (reading->request_id, p->request_id, AMI_REQUEST_ID_SIZE) != 0) {
        //  SEC-INT-3: an old reading must not answer a new request
        s_bad_response (self, p, AMI_E_REPLAY, "READING inside is for another meter or request");
        return;
    }
    //  SEC-INT-3: the meter read its registers while the command was valid.
    //  The READ_RESP does not say which try it answers: the window opens at
    //  the first try (the earliest issued_ms), with the meters' clock skew
    if (reading->read_ms + AMI_E2E_SKEW_MS < p->first_issued_ms
    ||  reading->read_ms > p->expires_ms) {
        char why [128];
        snprintf (why, sizeof why, "stale READING: read_ms %llu outside [%llu - %d, %llu]",
                  (unsigned long long) reading->read_ms,
                  (unsigned long long) p->first_issued_ms, AMI_E2E_SKEW_MS,
                  (unsigned long long) p->expires_ms);
        s_bad_response (self, p, AMI_E_EXPIRED, why);
        return;
    }
    s_group_add (self, p, reading, plain_len, data, size);
}

/*  An ERROR from a relay (head end, aggregator, fleet) for a read. It is
    unauthenticated end to end: never taken as the meter's word. It ends
    the current TRY only; the read goes on with its retry logic (the MMI
    question, then a resend through whichever head end the broker picks).
    Codes other than NO_ROUTE are mapped to UNREACHABLE.

    SEC-AVAIL-3: one lying head end must not end a read that another head
    end could serve. The broker hands each request to its longest-idle
    worker, and a head end that answers every request with an ERROR at
    once is always idle again first: its whole pool of workers
    (AMI_HEADEND_WORKERS, 4 by default) can take a read's consecutive
    tries before an honest worker gets one. So tries ended by a relay ERROR
    have their own budget, AMI_MDMS_RELAY_TRIES per read, on top of the
    retries (which count tries that timed out or that the meter refused):
    the read is resent after each relay ERROR, after a growing wait
    (AMI_MDMS_RELAY_BACKOFF_MS: a relay whose link was reset gets time to
    reconnect), while that budget and the deadline last, and only the
    relay ERROR that exhausts the budget ends the read with it (a meter
    whose fleet is really gone still fails within about 0.7 s, not at the
    deadline). Without retries (AMI_MDMS_NO_RETRIES) the first relay ERROR
    ends the read. Otherwise, if no meter answer comes, the deadline ends
    the read with AMI_E_TIMEOUT, naming the last relay error; an MMI 404
    ends the read with AMI_E_NO_ROUTE, as for a silent try. */
static void
s_read_error (mdms_t *self, const char *service)
{
    ami_error_t *error = &self->rx->error;
    char origin [AMI_MAX_ID + 1], text [AMI_MAX_TEXT + 1];
    s_sanitize (origin, sizeof origin, error->origin);
    s_sanitize (text, sizeof text, error->text);
    if (!error->has_request_id) {
        s_warn (self, "ERROR %s from %s on %s without request id: dropped",
                ami_errname (error->code), origin, service);
        return;
    }
    pending_t *p = s_reply_pending (self, error->request_id, service, "ERROR");
    if (!p)
        return;
    int code = error->code == AMI_E_NO_ROUTE ? AMI_E_NO_ROUTE : AMI_E_UNREACHABLE;
    if (code != error->code)
        s_warn (self, "read %s corr=%s req=%s: relay %s claims %s; taken as %s", p->meter_id,
                p->corr_key, p->key, origin, ami_errname (error->code), ami_errname (code));
    ami_log_info ("read %s corr=%s req=%s try %d: relay %s reports %s (%s)", p->meter_id,
                  p->corr_key, p->key, p->tries, origin, ami_errname (error->code), text);
    p->relay_error = code;
    if (p->checking)
        return;         //  this try has already ended (timed out): the MMI answer decides
    p->relay_tries++;
    int budget = self->retries ? AMI_MDMS_RELAY_TRIES : 1;
    if (p->relay_tries >= budget) {
        s_pending_fail (self, p, code, "%d tries ended by relay errors; the last from %s: "
                        "%s (%s)", p->relay_tries, origin, ami_strerror (code), text);
        return;
    }
    //  The next try after a wait (AMI_MDMS_RELAY_BACKOFF_MS, doubling): the
    //  try deadline is reused as the moment to ask the route and resend
    int64_t wait = AMI_MDMS_RELAY_BACKOFF_MS;
    for (int i = 1; i < p->relay_tries && wait < AMI_MDMS_RELAY_BACKOFF_MAX_MS; i++)
        wait *= 2;
    if (wait > AMI_MDMS_RELAY_BACKOFF_MAX_MS)
        wait = AMI_MDMS_RELAY_BACKOFF_MAX_MS;
    int64_t at = zclock_mono () + wait;
    p->try_deadline = at < p->deadline ? at : p->deadline;
    s_due (self, p->try_deadline);
}

static void
s_handle_broker_msg (mdms_t *self, zmsg_t *msg)
{
    if (zmsg_size (msg) != 4) {
        self->malformed++;
        s_warn (self, "broker: %zu frames is not an MDP reply, dropped", zmsg_size (msg));
        return;
    }
    zframe_t *empty = zmsg_first (msg);
    zframe_t *header = zmsg_next (msg);
    zframe_t *service_frame = zmsg_next (msg);
    zframe_t *body = zmsg_next (msg);
    size_t service_len = zframe_size (service_frame);
    if (zframe_size (empty) != 0 || !zframe_streq (header, MDP_CLIENT)
    ||  service_len == 0 || service_len > 255) {
        self->malformed++;
        s_warn (self, "broker: not an MDP/0.1 client reply, dropped");
        return;
    }
    char service [256];
    memcpy (service, zframe_data (service_frame), service_len);
    service [service_len] = 0;
    for (size_t i = 0; i < service_len; i++)
        if (service [i] < 0x20 || service [i] > 0x7e) {
            self->malformed++;
            s_warn (self, "broker: reply with a non-printable service name, dropped");
            return;
        }
    s_broker_heard (self);
    if (streq (service, MMI_SERVICE)) {
        s_mmi_reply (self, body);
        return;
    }
    if (streq (service, MMI_AMI_STATS)) {
        //  One HEALTH frame (ami_broker.h); a broker without it answers
        //  "501": then the row keeps no stats. Nothing to pair: the latest
        //  answer wins.
        int rc = ami_msg_decode (self->rx, zframe_data (body), zframe_size (body));
        if (rc == AMI_OK && self->rx->type == AMI_MSG_HEALTH) {
            self->broker_stat_count = self->rx->health.stat_count;
            memcpy (self->broker_stats, self->rx->health.stats,
                    self->broker_stat_count * sizeof self->broker_stats [0]);
        }
        else
        if (!zframe_streq (body, "501"))
            s_warn (self, "broker: %s answer is not a HEALTH (%s), ignored", service,
                    rc ? ami_strerror (rc) : ami_msg_type_name (self->rx->type));
        return;
    }
    if (strncmp (service, S_AGG_PREFIX, strlen (S_AGG_PREFIX)) != 0) {
        s_warn (self, "broker: reply from unexpected service '%s', dropped", service);
        return;
    }
    const uint8_t *data = zframe_data (body);
    size_t size = zframe_size (body);
    int rc = ami_msg_decode (self->rx, data, size);
    if (rc) {
        self->malformed++;
        s_warn (self, "broker: malformed reply on %s: %s, dropped", service, ami_strerror (rc));
        return;
    }
    if (self->rx->type == AMI_MSG_READ_RESP)
        s_read_resp (self, data, size, service);
    else
    if (self->rx->type == AMI_MSG_ERROR)
        s_read_error (self, service);
    else {
        self->malformed++;
        s_warn (self, "broker: unexpected %s on %s, dropped",
                ami_msg_type_name (self->rx->type), service);
    }
}


/* ---------------------------------------------------------------------- */
/*  Operator API                                                            */

typedef struct {
    zmsg_t *envelope;                   /* owned by the handler */
    const ami_api_req_t *req;
    const char *operator_id;            /* raw certificate values, for logs */
    const char *role;
    caller_t caller;                    /* the same, sanitised: the audit entry */
    char corr_hex [2 * AMI_REQUEST_ID_SIZE + 1];
} api_call_t;

/*  SEC-AVAIL-2: take a token from bucket key of table; on refusal answer
    ERROR AMI_E_RATE_LIMITED at once (audited) and return false. */
static bool
s_rate_take (mdms_t *self, api_call_t *call, ami_mdms_rate_t *table, const char *key,
             const char *what)
{
    if (ami_mdms_rate_take (table, key, zclock_mono ()))
        return true;
    self->rate_limited++;
    self->reads_failed++;
    s_warn (self, "api: RATE_LIMITED operator=%s read of meter %s corr=%s: %s limit",
            call->caller.operator_id, call->caller.meter_id, call->corr_hex, what);
    s_api_error (self, &call->caller, call->envelope, call->req->corr, AMI_E_RATE_LIMITED,
                 "too many reads: %s limit reached; retry later", what);
    return false;
}

/*  SEC-INT-5: a recover's range, from API milliseconds to READ_REQ
    seconds ((from, to] of interval ends, so whole seconds lose nothing:
    end_s * 1000 > from_ms exactly when end_s > from_ms / 1000). Both
    required, from < to, at most AMI_PROFILE_RECOVER_MAX_S. Answers the
    ERROR itself and returns false when not. */
static bool
s_recover_range (mdms_t *self, api_call_t *call, uint64_t *from_s, uint64_t *to_s)
{
    const ami_api_req_t *req = call->req;
    *from_s = req->from_ms / 1000;
    *to_s = req->to_ms / 1000;
    const char *why = NULL;
    if (req->from_ms == 0 || req->to_ms == 0)
        why = "recover needs from_ms and to_ms";
    else
    if (*from_s >= *to_s)
        why = "recover range is empty: from_ms must be before to_ms (whole seconds)";
    else
    if (*to_s - *from_s > AMI_PROFILE_RECOVER_MAX_S)
        why = "recover range is longer than 31 days (AMI_PROFILE_RECOVER_MAX_S)";
    if (!why)
        return true;
    s_read_failed (self, call->envelope, &call->caller, NULL, AMI_E_BAD_REQUEST, why);
    return false;
}

static void
s_api_read (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    bool recover = req->action == AMI_ACT_RECOVER;
    if (!*req->meter_id) {
        s_read_failed (self, call->envelope, &call->caller, NULL, AMI_E_BAD_REQUEST,
                       recover ? "recover needs a meter id" : "read needs a meter id");
        return;
    }
    uint64_t from_s = 0, to_s = 0;
    if (recover && !s_recover_range (self, call, &from_s, &to_s))
        return;
    //  The operator's bucket first: a flood of unknown ids is limited too
    if (!s_rate_take (self, call, self->rate_operator, call->caller.operator_id, "operator"))
        return;
    ami_mdms_meter_t meter;
    int rc = ami_mdms_db_meter_get (self->db, req->meter_id, &meter);
    if (rc) {
        char text [AMI_MAX_TEXT + 1];
        if (rc == AMI_E_NOTFOUND) {
            rc = AMI_E_UNKNOWN_METER;
            snprintf (text, sizeof text, "meter %s is not in the registry", req->meter_id);
        }
        else
            snprintf (text, sizeof text, "registry lookup failed: %s", ami_strerror (rc));
        s_read_failed (self, call->envelope, &call->caller, NULL, rc, text);
        return;
    }
    //  Then the meter's: only registered meters get a bucket
    if (!s_rate_take (self, call, self->rate_meter, meter.meter_id, "meter"))
        return;
    if (zhashx_lookup (self->corrs, call->corr_hex)) {
        s_read_failed (self, call->envelope, &call->caller, NULL, AMI_E_BAD_REQUEST,
                       "correlation id already in flight");
        return;
    }
    if (zhashx_size (self->pending) >= self->max_pending) {
        //  Back-pressure, counted apart (s_read_failed counts reads_failed)
        self->reads_busy++;
        s_read_failed (self, call->envelope, &call->caller, NULL, AMI_E_BUSY,
                       "too many reads in flight; retry later");
        return;
    }
    route_t *route = (route_t *) zhashx_lookup (self->routes, meter.aggregator_id);
    int64_t now = zclock_mono ();
    if (!route || s_route_state (self, route, now) == ROUTE_NO) {
        char text [AMI_MAX_TEXT + 1];
        snprintf (text, sizeof text, "no head end reaches aggregator %s of meter %s",
                  meter.aggregator_id, req->meter_id);
        s_read_failed (self, call->envelope, &call->caller, NULL, AMI_E_NO_ROUTE, text);
        return;
    }
    pending_t *p = (pending_t *) calloc (1, sizeof *p);
    if (!p) {
        s_read_failed (self, call->envelope, &call->caller, NULL, AMI_E_NOMEM, "out of memory");
        return;
    }
    int64_t timeout = req->timeout_ms ? (int64_t) req->timeout_ms : (int64_t) self->read_timeout_ms;
    if (timeout > AMI_MDMS_MAX_READ_TIMEOUT_MS)
        timeout = AMI_MDMS_MAX_READ_TIMEOUT_MS;
    //  SEC-INT-3: the READ_REQ gets a fresh random request id, never the
    //  operator's corr (a client reusing a corr would let a relay answer
    //  with an old, validly signed READ_RESP). Kept across this read's
    //  retries; 128 random bits do not collide, the loop is a guard.
    do {
        randombytes_buf (p->request_id, AMI_REQUEST_ID_SIZE);
        ami_request_id_format (p->request_id, p->key);
    } while (zhashx_lookup (self->pending, p->key));
    memcpy (p->corr_key, call->corr_hex, sizeof p->corr_key);
    snprintf (p->meter_id, sizeof p->meter_id, "%s", req->meter_id);
    memcpy (p->sign_pk, meter.sign_pk, sizeof p->sign_pk);
    p->route = route;
    p->envelope = call->envelope;
    call->envelope = NULL;
    p->caller = call->caller;
    p->requested_ms = (uint64_t) zclock_time ();
    p->expires_ms = p->requested_ms + (uint64_t) timeout;
    p->started = now;
    p->deadline = now + timeout;
    p->try_ms = timeout / (self->retries + 1);
    if (p->try_ms < 1)
        p->try_ms = 1;
    p->profile_from_s = from_s;
    p->profile_to_s = to_s;
    if (zhashx_insert (self->pending, p->key, p)) {
        s_read_failed (self, p->envelope, &p->caller, NULL, AMI_E_NOMEM, "out of memory");
        s_pending_destructor ((void **) &p);
        return;
    }
    if (zhashx_insert (self->corrs, p->corr_key, p)) {
        s_pending_fail (self, p, AMI_E_NOMEM, "out of memory");
        return;
    }
    ami_log_debug ("read %s corr=%s req=%s operator=%s: via %s, timeout %lld ms", p->meter_id,
                   p->corr_key, p->key, p->caller.operator_id, route->service,
                   (long long) timeout);
    if (recover)
        ami_log_info ("recover %s corr=%s req=%s operator=%s: load profile of (%llu, %llu] "
                      "asked for again with the read", p->meter_id, p->corr_key, p->key,
                      p->caller.operator_id, (unsigned long long) from_s,
                      (unsigned long long) to_s);
    rc = s_read_send (self, p);
    if (rc)
        s_pending_fail (self, p, rc, "cannot send the read of meter %s: %s", p->meter_id,
                        ami_strerror (rc));
}

typedef struct {
    mdms_t *self;
    const char *meter_id;
    int rc;
} history_t;

static int
s_history_row (const ami_mdms_reading_t *row, void *arg)
{
    history_t *ctx = (history_t *) arg;
    mdms_t *self = ctx->self;
    ami_msg_t *m = self->scratch;
    int rc = ami_msg_decode (m, row->reading, row->reading_size);
    if (rc == AMI_OK && (m->type != AMI_MSG_READING
                      || strcmp (m->reading.meter_id, ctx->meter_id) != 0
                      || m->reading.read_ms != row->read_ms))
        rc = AMI_E_RANGE;
    if (rc) {
        ami_log_error ("mdms db: stored reading of %s at %llu does not decode: %s",
                       ctx->meter_id, (unsigned long long) row->read_ms, ami_strerror (rc));
        ctx->rc = AMI_E_STORAGE;
        return 1;
    }
    ami_api_readings_t *out = &self->tx->api_readings;
    ami_stored_reading_t *dst = &out->readings [out->count++];
    dst->reading = m->reading;
    dst->requested_ms = row->requested_ms;
    dst->stored_ms = row->stored_ms;
    return 0;
}

/*  Checks shared by the per-meter actions: a meter id that is in the
    registry (into *meter), and from <= to when both are given. Answers
    the ERROR itself and returns false when not. */
static bool
s_meter_arg (mdms_t *self, api_call_t *call, bool range, ami_mdms_meter_t *meter)
{
    const ami_api_req_t *req = call->req;
    const char *action = ami_action_name (req->action);
    if (!*req->meter_id) {
        s_api_error (self, &call->caller, call->envelope, req->corr, AMI_E_BAD_REQUEST,
                     "%s needs a meter id", action);
        return false;
    }
    if (range && req->to_ms && req->from_ms > req->to_ms) {
        s_api_error (self, &call->caller, call->envelope, req->corr, AMI_E_BAD_REQUEST,
                     "from_ms is after to_ms");
        return false;
    }
    int rc = ami_mdms_db_meter_get (self->db, req->meter_id, meter);
    if (rc == AMI_E_NOTFOUND)
        s_api_error (self, &call->caller, call->envelope, req->corr, AMI_E_UNKNOWN_METER,
                     "meter %s is not in the registry", req->meter_id);
    else
    if (rc)
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "registry lookup failed: %s", ami_strerror (rc));
    return rc == AMI_OK;
}

static void
s_api_history (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    ami_mdms_meter_t meter;
    if (!s_meter_arg (self, call, true, &meter))
        return;
    size_t limit = req->limit ? req->limit : S_HISTORY_DEFAULT;
    if (limit > AMI_MAX_API_READINGS)
        limit = AMI_MAX_API_READINGS;
    ami_msg_reset (self->tx, AMI_MSG_API_READINGS);
    memcpy (self->tx->api_readings.corr, req->corr, AMI_REQUEST_ID_SIZE);
    history_t ctx = { self, req->meter_id, AMI_OK };
    bool more = false;
    int rc = ami_mdms_db_history (self->db, req->meter_id, req->from_ms, req->to_ms, limit,
                                  s_history_row, &ctx, &more);
    if (rc == AMI_OK)
        rc = ctx.rc;
    if (rc) {
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "history of %s could not be read: %s", req->meter_id, ami_strerror (rc));
        return;
    }
    self->tx->api_readings.more = more;
    s_api_finish (self, &call->caller, call->envelope);
}

/*  INTERVALS: stored interval data of one meter, oldest first, paged. */
static void
s_api_intervals (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    ami_mdms_meter_t meter;
    if (!s_meter_arg (self, call, true, &meter))
        return;
    size_t limit = req->limit && req->limit < AMI_MAX_API_INTERVALS ? req->limit
                                                                    : AMI_MAX_API_INTERVALS;
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_INTERVALS);
    ami_api_intervals_t *out = &tx->api_intervals;
    memcpy (out->corr, req->corr, AMI_REQUEST_ID_SIZE);
    snprintf (out->meter_id, sizeof out->meter_id, "%s", meter.meter_id);
    size_t count = 0;
    bool more = false;
    int rc = ami_mdms_db_intervals (self->db, meter.meter_id, req->from_ms, req->to_ms, limit,
                                    out->records, &count, &more);
    if (rc) {
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "intervals of %s could not be read: %s", req->meter_id, ami_strerror (rc));
        return;
    }
    out->count = (uint32_t) count;
    out->more = more;
    s_api_finish (self, &call->caller, call->envelope);
}

static void
s_api_meters (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    size_t limit = req->limit ? req->limit : AMI_MAX_API_METERS;
    if (limit > AMI_MAX_API_METERS)
        limit = AMI_MAX_API_METERS;
    size_t count = 0;
    bool more = false;
    int rc = ami_mdms_db_meters_page (self->db, req->meter_id, limit, self->page, &count, &more);
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_METERS);
    memcpy (tx->api_meters.corr, req->corr, AMI_REQUEST_ID_SIZE);
    int64_t now = zclock_mono ();
    for (size_t i = 0; rc == AMI_OK && i < count; i++) {
        ami_meter_row_t *row = &tx->api_meters.meters [i];
        snprintf (row->meter_id, sizeof row->meter_id, "%s", self->page [i].meter_id);
        snprintf (row->aggregator_id, sizeof row->aggregator_id, "%s",
                  self->page [i].aggregator_id);
        rc = ami_mdms_db_last_read (self->db, row->meter_id, &row->last_read_ms);
        route_t *route = (route_t *) zhashx_lookup (self->routes, row->aggregator_id);
        row->state = route && s_route_state (self, route, now) == ROUTE_YES
                   ? AMI_STATE_READY : AMI_STATE_DOWN;
    }
    if (rc) {
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "registry could not be read: %s", ami_strerror (rc));
        return;
    }
    tx->api_meters.count = (uint32_t) count;
    tx->api_meters.more = more;
    s_api_finish (self, &call->caller, call->envelope);
}

static ami_service_row_t *
s_status_row (ami_api_status_t *status, const char *role, const char *node_id,
              uint8_t state, uint64_t uptime_ms, uint64_t age_ms)
{
    ami_service_row_t *row = &status->services [status->count++];
    snprintf (row->role, sizeof row->role, "%s", role);
    snprintf (row->node_id, sizeof row->node_id, "%s", node_id);
    row->state = state;
    row->uptime_ms = uptime_ms;
    row->age_ms = age_ms;
    row->stat_count = 0;
    return row;
}

/*  The MDMS's own statistics: interval ingest first, then on-demand reads. */
static void
s_own_stats (mdms_t *self, ami_stat_t *stats, uint32_t *count)
{
    ami_mdms_ingest_stats (self->intake, stats, AMI_MAX_STATS, count);
    const struct {
        const char *name;
        uint64_t value;
    } rows [] = {
        { "reads_ok",       self->reads_ok },
        { "reads_failed",   self->reads_failed },
        { "reads_pending",  zhashx_size (self->pending) },
        { "rate_limited",   self->rate_limited },
        { "denied",         self->denied },
        { "malformed",      self->malformed },
        { "audit_failures", self->audit_failures },
        { "bad_responses",  self->bad_responses },
        { "handshakes_refused", s_handshakes_refused (self) },
        { "handshakes_failed",  s_handshakes_failed (self) },
        { "frames_refused", ami_auth_refused_count () },
        { "events_refused", self->events_refused },
        { "send_failed",    self->send_failed },
        { "events_seq",     self->event_seq },
        { "reads_busy",     self->reads_busy },
        { "services_evicted", self->services_evicted },
        { "peers_refused",  self->peers_refused },
        { "mmi_refused",    self->mmi_refused },
        { "health_refused", self->health_refused },
    };
    //  Everything must fit one HEALTH/API_STATUS row
    _Static_assert (AMI_MDMS_INGEST_STATS + sizeof rows / sizeof rows [0] <= AMI_MAX_STATS,
                    "the MDMS's own stats do not fit in AMI_MAX_STATS");
    for (size_t i = 0; i < sizeof rows / sizeof rows [0] && *count < AMI_MAX_STATS; i++) {
        snprintf (stats [*count].name, sizeof stats [*count].name, "%s", rows [i].name);
        stats [*count].value = rows [i].value;
        (*count)++;
    }
}

/*  Whether the next row of the whole ordered status list (*index, counted
    up here) goes into the page asked for: skip rows before `skip`; a row
    after a full page only sets *more. */
static bool
s_status_paged (uint64_t *index, uint64_t skip, size_t limit, const ami_api_status_t *status,
                bool *more)
{
    uint64_t at = (*index)++;
    if (at < skip)
        return false;
    if (status->count >= limit) {
        *more = true;
        return false;
    }
    return true;
}

/*  API_STATUS, one page (PROTOCOL.md 4.11, action 4): the rows in a
    stable order - this MDMS, the broker, then every other service sorted
    by "role/node_id" - with from_ms rows skipped and at most limit (0 or
    more than a reply holds: AMI_MAX_API_SERVICES) in the page; `more` when
    rows follow it. */
static void
s_api_status (mdms_t *self, api_call_t *call)
{
    int64_t now = zclock_mono ();
    const ami_api_req_t *req = call->req;
    size_t limit = req->limit && req->limit < AMI_MAX_API_SERVICES ? req->limit
                                                                    : AMI_MAX_API_SERVICES;
    uint64_t skip = req->from_ms;       //  a row count here, not a time
    uint64_t index = 0;
    bool more = false;
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_STATUS);
    ami_api_status_t *status = &tx->api_status;
    memcpy (status->corr, req->corr, AMI_REQUEST_ID_SIZE);
    if (s_status_paged (&index, skip, limit, status, &more)) {
        ami_service_row_t *own = s_status_row (status, "mdms", self->node_id, AMI_STATE_READY,
                                               (uint64_t) (now - self->started), 0);
        s_own_stats (self, own->stats, &own->stat_count);
    }
    if (s_status_paged (&index, skip, limit, status, &more)) {
        bool broker_up = self->broker_ready && s_fresh (self, self->broker_heard, now);
        ami_service_row_t *broker = s_status_row (status, "broker", self->broker_id,
                      broker_up ? AMI_STATE_READY : AMI_STATE_DOWN,
                      broker_up ? (uint64_t) (now - self->broker_up_since) : 0,
                      (uint64_t) (now - (self->broker_heard ? self->broker_heard : self->started)));
        //  The broker's own counters, from its last mmi.ami-stats answer
        broker->stat_count = self->broker_stat_count;
        memcpy (broker->stats, self->broker_stats,
                self->broker_stat_count * sizeof broker->stats [0]);
    }
    //  Keys are "role/node_id": sorting them sorts by role, then node id,
    //  the same order for every page. The table holds at most
    //  AMI_MDMS_MAX_SERVICES (1024) keys.
    zlistx_t *keys = more ? NULL : ami_keys_sorted (self->services);
    if (keys) {
        for (const char *key = (const char *) zlistx_first (keys); key && !more;
             key = (const char *) zlistx_next (keys)) {
            if (!s_status_paged (&index, skip, limit, status, &more))
                continue;
            service_t *s = (service_t *) zhashx_lookup (self->services, key);
            bool alive = s_fresh (self, s->heard, now);
            ami_service_row_t *row = s_status_row (status, s->role, s->node_id,
                                                   alive ? s->state : AMI_STATE_DOWN,
                                                   s->uptime_ms, (uint64_t) (now - s->heard));
            row->stat_count = s->stat_count;
            memcpy (row->stats, s->stats, s->stat_count * sizeof s->stats [0]);
        }
        zlistx_destroy (&keys);
    }
    else
    if (!more && zhashx_size (self->services)) {
        //  Out of memory: the rows so far, and `more` so the client asks again
        s_warn (self, "status: out of memory listing %zu services",
                zhashx_size (self->services));
        more = true;
    }
    status->more = more;
    s_api_finish (self, &call->caller, call->envelope);
}

/*  VERIFY: re-prove every stored reading of a meter in range. */
typedef struct {
    mdms_t *self;
    const ami_mdms_meter_t *meter;
    ami_api_verify_t *out;
} verify_t;

static void
s_verify_failed (verify_t *ctx, uint64_t read_ms, int code)
{
    ami_api_verify_t *out = ctx->out;
    if (out->count < AMI_MAX_API_FAILURES) {
        out->failures [out->count].ref = read_ms;
        out->failures [out->count].code = (uint16_t) code;
        out->count++;
    }
    out->failed++;
    s_warn (ctx->self, "verify: reading of meter %s at %llu FAILS: %s", ctx->meter->meter_id,
            (unsigned long long) read_ms, ami_errname (code));
}

static int
s_verify_reading (int rc, const ami_mdms_reading_t *row, void *arg)
{
    verify_t *ctx = (verify_t *) arg;
    mdms_t *self = ctx->self;
    ctx->out->checked++;
    if (rc) {
        s_verify_failed (ctx, row->read_ms, AMI_E_STORAGE);
        return 0;
    }
    //  1. The proof: the meter's own signature over the READ_RESP frame
    if (ami_e2e_verify (row->proof, row->proof_size, ctx->meter->sign_pk) != AMI_OK) {
        s_verify_failed (ctx, row->read_ms, AMI_E_BAD_SIGNATURE);
        return 0;
    }
    ami_msg_t *m = self->scratch;
    if (ami_msg_decode (m, row->proof, row->proof_size) != AMI_OK
    ||  m->type != AMI_MSG_READ_RESP || m->read_resp.status != AMI_OK) {
        s_verify_failed (ctx, row->read_ms, AMI_E_BAD_SIGNATURE);
        return 0;
    }
    //  2. It answers this very request of this meter (a genuine proof of
    //     another reading does not prove this one)
    if (strcmp (m->read_resp.meter_id, row->meter_id) != 0
    ||  memcmp (m->read_resp.request_id, row->request_id, AMI_REQUEST_ID_SIZE) != 0) {
        s_verify_failed (ctx, row->read_ms, AMI_E_RANGE);
        return 0;
    }
    //  3. Its sealed READING opens with the MDMS box key...
    size_t plain_len = 0;
    if (ami_e2e_open_padded (m->read_resp.sealed, m->read_resp.sealed_size, &self->keys,
                             self->plain, sizeof self->plain, &plain_len) != AMI_OK) {
        s_verify_failed (ctx, row->read_ms, AMI_E_DECRYPT);
        return 0;
    }
    //  4. ... and is, byte for byte, the READING stored
    if (plain_len != row->reading_size || memcmp (self->plain, row->reading, plain_len) != 0)
        s_verify_failed (ctx, row->read_ms, AMI_E_RANGE);
    return 0;
}

static void
s_api_verify (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    ami_mdms_meter_t meter;
    if (!s_meter_arg (self, call, true, &meter))
        return;
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_VERIFY);
    memcpy (tx->api_verify.corr, req->corr, AMI_REQUEST_ID_SIZE);
    verify_t ctx = { self, &meter, &tx->api_verify };
    int64_t started = zclock_mono ();
    int rc = ami_mdms_db_readings_each (self->db, req->meter_id, req->from_ms, req->to_ms,
                                        s_verify_reading, &ctx);
    if (rc) {
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "readings of %s could not be read: %s", req->meter_id, ami_strerror (rc));
        return;
    }
    ami_log_info ("verify %s by %s: %llu readings checked, %llu failed (%lld ms)",
                  req->meter_id, call->caller.operator_id,
                  (unsigned long long) tx->api_verify.checked,
                  (unsigned long long) tx->api_verify.failed,
                  (long long) (zclock_mono () - started));
    if (tx->api_verify.failed)
        s_security (self, SEC_STORED, req->meter_id, "verify: %llu stored reading(s) "
                    "fail re-verification", (unsigned long long) tx->api_verify.failed);
    s_api_finish (self, &call->caller, call->envelope);
}

static void
s_api_audit (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    size_t limit = req->limit ? req->limit : S_AUDIT_DEFAULT;
    if (limit > AMI_MAX_API_AUDIT)
        limit = AMI_MAX_API_AUDIT;
    size_t count = 0;
    bool more = false;
    //  Paging rule (ami_mdms.h): to_ms carries "start after this seq"
    int rc = ami_mdms_audit_page (self->audit, req->from_ms, req->to_ms, limit,
                                  self->audit_rows, &count, &more);
    if (rc) {
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "the audit log could not be read: %s", ami_strerror (rc));
        return;
    }
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_AUDIT);
    memcpy (tx->api_audit.corr, req->corr, AMI_REQUEST_ID_SIZE);
    size_t shown = 0, hidden = 0;
    for (size_t i = 0; i < count; i++) {
        //  An entry of a request that did not decode names no action; a
        //  codec that refuses action 0 on the wire cannot carry it
        if (self->audit_rows [i].action == 0 && !self->audit_action0) {
            hidden++;
            continue;
        }
        tx->api_audit.entries [shown++] = self->audit_rows [i];
    }
    if (hidden)
        s_warn (self, "audit: %zu entries of undecodable requests (action 0) left out of "
                "the page: the wire codec refuses action 0", hidden);
    tx->api_audit.count = (uint32_t) shown;
    tx->api_audit.more = more;
    s_api_finish (self, &call->caller, call->envelope);
}

static void
s_api_audit_verify (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_VERIFY);
    memcpy (tx->api_verify.corr, req->corr, AMI_REQUEST_ID_SIZE);
    int64_t started = zclock_mono ();
    int rc = ami_mdms_audit_verify (self->audit, &tx->api_verify);
    if (rc) {
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "the audit log could not be read: %s", ami_strerror (rc));
        return;
    }
    ami_api_verify_t *v = &tx->api_verify;
    if (v->failed) {
        ami_log_error ("AUDIT LOG TAMPERED: verify by %s: %llu entries checked, %llu fail "
                       "(first at seq %llu: %s)", call->caller.operator_id,
                       (unsigned long long) v->checked, (unsigned long long) v->failed,
                       (unsigned long long) (v->count ? v->failures [0].ref : 0),
                       v->count ? ami_errname (v->failures [0].code) : "?");
        s_security (self, SEC_STORED, "", "audit log: %llu entries fail verification",
                    (unsigned long long) v->failed);
    }
    else
        ami_log_info ("audit verify by %s: %llu entries, chain intact, anchor file at seq "
                      "%llu (%lld ms)", call->caller.operator_id,
                      (unsigned long long) v->checked,
                      (unsigned long long) ami_mdms_audit_anchored (self->audit),
                      (long long) (zclock_mono () - started));
    s_api_finish (self, &call->caller, call->envelope);
}

static void
s_api_customer (mdms_t *self, api_call_t *call)
{
    const ami_api_req_t *req = call->req;
    ami_mdms_meter_t meter;
    if (!s_meter_arg (self, call, false, &meter))
        return;
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_CUSTOMER);
    memcpy (tx->api_customer.corr, req->corr, AMI_REQUEST_ID_SIZE);
    snprintf (tx->api_customer.meter_id, sizeof tx->api_customer.meter_id, "%s", req->meter_id);
    int rc = ami_mdms_db_customer_get (self->db, req->meter_id, &tx->api_customer);
    if (rc)     //  a record that failed half-way leaves nothing behind
        sodium_memzero (&tx->api_customer, sizeof tx->api_customer);
    if (rc == AMI_E_NOTFOUND) {
        s_api_error (self, &call->caller, call->envelope, req->corr, AMI_E_NOTFOUND,
                     "meter %s has no customer record", req->meter_id);
        return;
    }
    if (rc) {
        if (rc == AMI_E_DECRYPT)
            s_security (self, SEC_STORED, req->meter_id, "customer record does not decrypt");
        s_api_error (self, &call->caller, call->envelope, req->corr, rc,
                     "customer record of %s cannot be read: %s", req->meter_id,
                     ami_strerror (rc));
        return;
    }
    ami_log_info ("customer record of %s shown to %s (corr=%s)", req->meter_id,
                  call->caller.operator_id, call->corr_hex);
    s_api_finish (self, &call->caller, call->envelope);
    //  Sent: wipe the plaintext from the message and the encode buffer
    sodium_memzero (&tx->api_customer, sizeof tx->api_customer);
    sodium_memzero (self->buf, S_CUSTOMER_FRAME_MAX);
}

/*  Reply ERROR to an API message refused before or at decoding; tries to
    recover the corr (only to label the reply). */
static const uint8_t *
s_try_corr (mdms_t *self, zframe_t *body)
{
    if (body && ami_msg_decode (self->rx, zframe_data (body), zframe_size (body)) == AMI_OK
    &&  self->rx->type == AMI_MSG_API_REQ)
        return self->rx->api_req.corr;
    return NULL;
}

static void
s_handle_api_msg (mdms_t *self, zmsg_t *msg)
{
    //  Envelope: every frame up to and including the first empty one
    size_t frames = zmsg_size (msg), delimiter = 0;
    bool found = false;
    for (zframe_t *f = zmsg_first (msg); f; f = zmsg_next (msg), delimiter++)
        if (zframe_size (f) == 0) {
            found = true;
            break;
        }
    if (!found || delimiter == 0) {
        self->malformed++;
        s_warn (self, "api: message of %zu frames has no envelope delimiter, dropped", frames);
        return;
    }
    api_call_t call;
    memset (&call, 0, sizeof call);
    call.envelope = zmsg_new ();
    zframe_t *last = NULL;
    for (size_t i = 0; i <= delimiter; i++) {
        last = zmsg_pop (msg);
        zmsg_append (call.envelope, &last);
    }
    last = zmsg_last (call.envelope);           //  the delimiter, as received
    zframe_t *body = zmsg_first (msg);          //  NULL when there is none
    zframe_t *content = body ? body : last;

    //  Only operators on this socket (the ZAP allow-list is process-wide)
    const char *peer_role = s_meta_or (content, AMI_CERT_META_ROLE, "");
    const char *peer_node = s_meta_or (content, AMI_CERT_META_NODE_ID, "?");
    const char *ami_role = s_meta_or (content, AMI_MDMS_META_AMI_ROLE, "");
    //  for the audit entry: no node-id at all is "unknown", not "?"
    const char *node_meta = s_meta_or (content, AMI_CERT_META_NODE_ID, NULL);
    if (strcmp (peer_role, S_ROLE_OPERATOR) != 0) {
        self->denied++;
        char who [AMI_MAX_ID + 1], role [AMI_MAX_ROLE + 1];
        s_sanitize (who, sizeof who, peer_node);
        s_sanitize (role, sizeof role, peer_role);
        s_warn (self, "api: peer %s with role '%s' is not an operator: refused", who, role);
        s_security (self, SEC_DENIED, "", "api: peer %s (role %s) refused (%s)", who, role,
                    ami_errname (AMI_E_DENIED));
        const uint8_t *corr = s_try_corr (self, body);
        s_caller_init (&call.caller, node_meta, ami_role, corr ? self->rx->api_req.action : 0,
                       corr ? self->rx->api_req.meter_id : NULL, corr);
        s_api_error (self, &call.caller, call.envelope, corr, AMI_E_DENIED,
                     "only operators may use this API");
        goto done;
    }
    //  Until the body decodes, the request names no action (audited as 0)
    s_caller_init (&call.caller, node_meta, ami_role, 0, NULL, NULL);
    if (zmsg_size (msg) != 1) {
        self->malformed++;
        s_warn (self, "api: %zu frames after the delimiter, expected 1", zmsg_size (msg));
        s_api_error (self, &call.caller, call.envelope, NULL, AMI_E_BAD_REQUEST,
                     "malformed request: expected exactly one message frame");
        goto done;
    }
    int rc = ami_msg_decode (self->rx, zframe_data (body), zframe_size (body));
    if (rc) {
        self->malformed++;
        s_warn (self, "api: malformed request from %s: %s", call.caller.operator_id,
                ami_strerror (rc));
        s_api_error (self, &call.caller, call.envelope, NULL, AMI_E_BAD_REQUEST,
                     "malformed request: %s", ami_strerror (rc));
        goto done;
    }
    if (self->rx->type != AMI_MSG_API_REQ) {
        self->malformed++;
        s_warn (self, "api: %s from %s is not an API_REQ", ami_msg_type_name (self->rx->type),
                call.caller.operator_id);
        s_api_error (self, &call.caller, call.envelope, NULL, AMI_E_BAD_REQUEST,
                     "malformed request: expected API_REQ, got %s",
                     ami_msg_type_name (self->rx->type));
        goto done;
    }
    ami_api_req_t req = self->rx->api_req;
    call.req = &req;
    call.operator_id = peer_node;
    call.role = ami_role;
    s_caller_init (&call.caller, node_meta, ami_role, req.action, req.meter_id, req.corr);
    ami_request_id_format (req.corr, call.corr_hex);
    const char *action = ami_action_name (req.action);
    const char *why = NULL;
    rc = ami_mdms_acl_check (call.role, req.action, &why);
    if (rc) {
        char role [AMI_MAX_ROLE + 1];
        s_sanitize (role, sizeof role, call.role);
        if (rc == AMI_E_DENIED) {
            self->denied++;
            //  rate-limited like all input-driven warnings; the audit log
            //  is the complete record
            s_warn (self, "api: DENIED operator=%s role=%s action=%s meter=%s corr=%s: %s",
                    call.caller.operator_id, role, action ? action : "?", req.meter_id,
                    call.corr_hex, why);
            s_security (self, SEC_DENIED, req.meter_id, "operator %s (%s) denied %s (%s)",
                        call.caller.operator_id, role, action ? action : "?",
                        ami_errname (AMI_E_DENIED));
        }
        else
            ami_log_info ("api: operator=%s role=%s action=%s meter=%s corr=%s: %s",
                          call.caller.operator_id, role, action ? action : "?", req.meter_id,
                          call.corr_hex, why);
        if (req.action == AMI_ACT_READ || req.action == AMI_ACT_RECOVER)
            s_read_failed (self, call.envelope, &call.caller, NULL, rc, why);
        else
            s_api_error (self, &call.caller, call.envelope, req.corr, rc, "%s: %s",
                         action ? action : "?", why);
        goto done;
    }
    ami_log_debug ("api: operator=%s role=%s action=%s meter=%s corr=%s",
                   call.caller.operator_id, call.caller.role, action, req.meter_id,
                   call.corr_hex);
    switch (req.action) {
        case AMI_ACT_READ:          s_api_read (self, &call); break;
        case AMI_ACT_RECOVER:       s_api_read (self, &call); break;    //  a read with a range
        case AMI_ACT_HISTORY:       s_api_history (self, &call); break;
        case AMI_ACT_INTERVALS:     s_api_intervals (self, &call); break;
        case AMI_ACT_METERS:        s_api_meters (self, &call); break;
        case AMI_ACT_STATUS:        s_api_status (self, &call); break;
        case AMI_ACT_VERIFY:        s_api_verify (self, &call); break;
        case AMI_ACT_AUDIT:         s_api_audit (self, &call); break;
        case AMI_ACT_AUDIT_VERIFY:  s_api_audit_verify (self, &call); break;
        case AMI_ACT_CUSTOMER:      s_api_customer (self, &call); break;
        default:
            //  the ACL table grants only implemented actions
            s_api_error (self, &call.caller, call.envelope, req.corr, AMI_E_INTERNAL,
                         "action not wired");
            break;
    }
done:
    zmsg_destroy (&call.envelope);
}


/* ---------------------------------------------------------------------- */
/*  Ingest: head ends' HELLO and HEALTH                                     */

static void
s_service_destructor (void **item)
{
    free (*item);
    *item = NULL;
}

static void
s_service_heard (mdms_t *self, const ami_health_t *health)
{
    char key [AMI_MAX_ROLE + 1 + AMI_MAX_ID + 1];
    snprintf (key, sizeof key, "%s/%s", health->role, health->node_id);
    int64_t now = zclock_mono ();
    service_t *s = (service_t *) zhashx_lookup (self->services, key);
    if (!s) {
        if (zhashx_size (self->services) >= AMI_MDMS_MAX_SERVICES) {
            //  Make room: forget the longest-silent service
            const char *oldest_key = NULL;
            int64_t oldest = INT64_MAX;
            for (service_t *o = (service_t *) zhashx_first (self->services); o;
                 o = (service_t *) zhashx_next (self->services))
                if (o->heard < oldest) {
                    oldest = o->heard;
                    oldest_key = (const char *) zhashx_cursor (self->services);
                }
            if (oldest_key) {
                char victim [sizeof key];
                snprintf (victim, sizeof victim, "%s", oldest_key);
                s_warn (self, "ingest: service table full, forgetting %s", victim);
                zhashx_delete (self->services, victim);
                self->services_evicted++;
            }
        }
        s = (service_t *) calloc (1, sizeof *s);
        if (!s || zhashx_insert (self->services, key, s)) {
            free (s);
            return;
        }
        snprintf (s->role, sizeof s->role, "%s", health->role);
        snprintf (s->node_id, sizeof s->node_id, "%s", health->node_id);
        ami_log_info ("service %s %s heard (state %u)", s->role, s->node_id, health->state);
    }
    else
    if (s->down) {
        ami_log_info ("service %s %s is back", s->role, s->node_id);
        s_publish (self, AMI_EV_SERVICE_UP, "", "%s %s is back", s->role, s->node_id);
    }
    s->down = false;
    s->state = health->state;
    s->uptime_ms = health->uptime_ms;
    s->heard = now;
    //  the codec bounds stat_count by AMI_MAX_STATS and checks every name
    s->stat_count = health->stat_count;
    memcpy (s->stats, health->stats, health->stat_count * sizeof health->stats [0]);
}

static void
s_send_hello (mdms_t *self, zframe_t *routing)
{
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_HELLO);
    snprintf (tx->hello.role, sizeof tx->hello.role, "mdms");
    snprintf (tx->hello.node_id, sizeof tx->hello.node_id, "%s", self->node_id);
    tx->hello.meter_count = 0;
    uint8_t frame [128];                //  role, id, empty list: < 60 bytes
    size_t len = 0;
    if (ami_msg_encode (tx, frame, sizeof frame, &len))
        return;
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, zframe_data (routing), zframe_size (routing));
    zmsg_addmem (msg, frame, len);
    s_send (self, self->ingest, &msg, "ingest HELLO");
}

/*  Any message from a head end: remember it; if it has not introduced
    itself (e.g. the MDMS restarted), say HELLO so it does. */
static void
s_peer_touch (mdms_t *self, zframe_t *routing, const char *key, const char *node)
{
    int64_t now = zclock_mono ();
    peer_t *peer = (peer_t *) zhashx_lookup (self->peers, key);
    if (!peer) {
        if (zhashx_size (self->peers) >= S_MAX_PEERS) {
            self->peers_refused++;
            s_warn (self, "ingest: peer table full (%d), %s not remembered", S_MAX_PEERS, node);
            return;
        }
        peer = (peer_t *) calloc (1, sizeof *peer);
        if (!peer || zhashx_insert (self->peers, key, peer)) {
            free (peer);
            return;
        }
    }
    peer->heard = now;
    if (!peer->introduced
    &&  (!peer->hello_sent || now - peer->hello_sent >= self->heartbeat_ms)) {
        ami_log_debug ("ingest: %s has not said HELLO: introducing ourselves", node);
        peer->hello_sent = now;
        s_send_hello (self, routing);
    }
}

static void
s_handle_ingest_msg (mdms_t *self, zmsg_t *msg)
{
    if (zmsg_size (msg) != 2) {
        self->malformed++;
        s_warn (self, "ingest: message of %zu frames, expected 2: dropped", zmsg_size (msg));
        return;
    }
    zframe_t *routing = zmsg_first (msg);
    zframe_t *body = zmsg_next (msg);
    char key [S_KEY_SIZE];
    if (!s_identity_key (routing, key)) {
        self->malformed++;
        return;
    }
    const char *peer_role = s_meta_or (body, AMI_CERT_META_ROLE, "");
    const char *peer_node = s_meta_or (body, AMI_CERT_META_NODE_ID, "?");
    if (strcmp (peer_role, S_ROLE_HEADEND) != 0) {
        self->denied++;
        char who [AMI_MAX_ID + 1], role [AMI_MAX_ROLE + 1];
        s_sanitize (who, sizeof who, peer_node);
        s_sanitize (role, sizeof role, peer_role);
        s_warn (self, "ingest: peer %s with role '%s' is not a head end: dropped", who, role);
        return;
    }
    if (ami_msg_peek_type (zframe_data (body), zframe_size (body)) == AMI_MSG_BATCH) {
        //  Interval data: queued whole, decoded and checked by the group
        //  commit (ami_mdms_ingest_run), acknowledged after it
        s_peer_touch (self, routing, key, peer_node);
        routing = zmsg_pop (msg);
        body = zmsg_pop (msg);
        if (!ami_mdms_ingest_push (self->intake, &routing, &body)) {
            //  Only if the actor read past a full queue: refuse, not queue
            uint8_t ack [64];
            size_t len = 0;
            if (ami_mdms_ingest_refuse (self->intake, body, AMI_E_BUSY, ack, sizeof ack, &len)
                == AMI_OK) {
                zmsg_t *reply = zmsg_new ();
                zmsg_append (reply, &routing);
                zmsg_addmem (reply, ack, len);
                s_send (self, self->ingest, &reply, "ingest BATCH_ACK");
            }
            else {
                self->malformed++;
                s_warn (self, "ingest: malformed BATCH from %s, dropped", peer_node);
            }
            zframe_destroy (&routing);
            zframe_destroy (&body);
        }
        return;
    }
    int rc = ami_msg_decode (self->rx, zframe_data (body), zframe_size (body));
    if (rc) {
        self->malformed++;
        s_warn (self, "ingest: malformed message from %s: %s, dropped", peer_node,
                ami_strerror (rc));
        return;
    }
    switch (self->rx->type) {
        case AMI_MSG_HELLO: {
            ami_hello_t *hello = &self->rx->hello;
            if (strcmp (hello->node_id, peer_node) != 0 || strcmp (hello->role, S_ROLE_HEADEND)) {
                s_warn (self, "ingest: HELLO as %s %s from head end %s: dropped",
                        hello->role, hello->node_id, peer_node);
                break;
            }
            peer_t *peer = (peer_t *) zhashx_lookup (self->peers, key);
            if (!peer) {
                s_peer_touch (self, routing, key, peer_node);   //  creates it
                peer = (peer_t *) zhashx_lookup (self->peers, key);
            }
            if (peer) {
                if (!peer->introduced)
                    ami_log_info ("head end %s introduced itself", hello->node_id);
                peer->introduced = true;
                peer->heard = zclock_mono ();
                snprintf (peer->node_id, sizeof peer->node_id, "%s", hello->node_id);
            }
            break;
        }
        case AMI_MSG_HEALTH: {
            s_peer_touch (self, routing, key, peer_node);
            //  SEC-INT-4: a head end speaks for itself (its certificate's
            //  node id) and relays its aggregators' and their fleets'
            //  HEALTH (which it checked); no other role comes this way.
            //  The mdms and broker rows are the MDMS's own.
            const ami_health_t *health = &self->rx->health;
            bool own = strcmp (health->role, S_ROLE_HEADEND) == 0
                    && strcmp (health->node_id, peer_node) == 0;
            bool relayed = strcmp (health->role, S_ROLE_AGGREGATOR) == 0
                        || strcmp (health->role, S_ROLE_METER) == 0;
            if (!own && !relayed) {
                self->health_refused++;
                s_warn (self, "ingest: HEALTH as %s %s from head end %s refused (SEC-INT-4)",
                        health->role, health->node_id, peer_node);
                break;
            }
            s_service_heard (self, health);
            break;
        }
        default:
            s_peer_touch (self, routing, key, peer_node);
            self->malformed++;
            s_warn (self, "ingest: unexpected %s from %s, dropped",
                    ami_msg_type_name (self->rx->type), peer_node);
            break;
    }
}


/* ---------------------------------------------------------------------- */
/*  Ingest: interval data (ami_mdms_ingest.h)                               */

/*  A block failed its checks: warn (rate-limited) and raise a security
    event (class "ingest": at most AMI_MDMS_LOG_BURST a second, so a relay
    altering every block does not become an event flood). */
static void
s_ingest_reject (const char *origin, const char *meter_id, uint64_t seq, int code,
                 const char *why, void *arg)
{
    mdms_t *self = (mdms_t *) arg;
    s_warn (self, "ingest: block %llu of meter %s (batch from %s) REJECTED: %s (%s)",
            (unsigned long long) seq, meter_id, origin, why, ami_errname (code));
    s_security (self, SEC_INGEST, meter_id, "interval block %llu from %s rejected: %s (%s)",
                (unsigned long long) seq, origin, why, ami_errname (code));
}

/*  Send a BATCH_ACK back through the head end the batch came from. */
static void
s_ingest_ack (zframe_t *routing, const uint8_t *ack, size_t len, uint16_t status, void *arg)
{
    mdms_t *self = (mdms_t *) arg;
    (void) status;
    zmsg_t *msg = zmsg_new ();
    if (!msg || zmsg_addmem (msg, zframe_data (routing), zframe_size (routing))
    ||  zmsg_addmem (msg, ack, len)) {
        zmsg_destroy (&msg);
        return;
    }
    //  A head end gone since (EHOSTUNREACH): its aggregator resends the
    //  batch through another one after AMI_BATCH_ACK_TIMEOUT_MS
    s_send (self, self->ingest, &msg, "ingest BATCH_ACK");
}


/* ---------------------------------------------------------------------- */
/*  Event feed subscriptions and refused handshakes                         */

/*  SEC-AUTH-3: one (un)subscription on the event feed. The XPUB is in
    manual mode, so a subscription takes effect only when the actor applies
    it here, for the pipe it came from (ZMQ_SUBSCRIBE right after receiving
    it), and only for a peer whose certificate role may read the feed
    (AMI_MDMS_EVENTS_ROLE_OPERATOR or _MONITOR): every other allow-listed
    key (a head end, the broker...) is connected but subscribed to nothing,
    so it receives no event. Refusals are counted (events_refused), warned
    about (rate-limited) and published. An unsubscription only takes away
    and is always applied; libzmq also hands one over, without any peer
    metadata, for each topic of a subscriber that left. */
static void
s_handle_events_msg (mdms_t *self, zmsg_t *msg)
{
    zframe_t *frame = zmsg_first (msg);
    size_t size = frame ? zframe_size (frame) : 0;
    const uint8_t *data = frame ? zframe_data (frame) : NULL;
    if (zmsg_size (msg) != 1 || size == 0 || (data [0] != 0 && data [0] != 1)) {
        self->malformed++;
        s_warn (self, "events: %zu frames of %zu bytes is not a subscription, dropped",
                zmsg_size (msg), size);
        return;
    }
    void *xpub = zsock_resolve (self->events);
    if (data [0] == 0) {
        zmq_setsockopt (xpub, ZMQ_UNSUBSCRIBE, data + 1, size - 1);
        return;
    }
    const char *peer_role = s_meta_or (frame, AMI_CERT_META_ROLE, "");
    const char *peer_node = s_meta_or (frame, AMI_CERT_META_NODE_ID, "?");
    //  topic: as much of the prefix asked for as a log line needs
    char who [AMI_MAX_ID + 1], role [AMI_MAX_ROLE + 1], topic [64];
    s_sanitize (who, sizeof who, peer_node);
    s_sanitize (role, sizeof role, peer_role);
    //  the topic asked for, printable, for the log only
    size_t shown = size - 1 < sizeof topic - 1 ? size - 1 : sizeof topic - 1;
    for (size_t i = 0; i < shown; i++)
        topic [i] = data [1 + i] >= 0x20 && data [1 + i] < 0x7f ? (char) data [1 + i] : '?';
    topic [shown] = 0;
    bool allowed = ami_auth_peer_allowed (NULL, frame)
                && (streq (peer_role, AMI_MDMS_EVENTS_ROLE_OPERATOR)
                 || streq (peer_role, AMI_MDMS_EVENTS_ROLE_MONITOR));
    if (allowed) {
        if (zmq_setsockopt (xpub, ZMQ_SUBSCRIBE, data + 1, size - 1) != 0)
            s_warn (self, "events: subscription of %s to '%s' not applied: %s", who, topic,
                    zmq_strerror (zmq_errno ()));
        else
            ami_log_debug ("events: %s %s subscribed to '%s'", role, who, topic);
        return;
    }
    self->events_refused++;
    s_warn (self, "events: peer %s with role '%s' may not read the event feed: "
            "subscription to '%s' refused", who, role, topic);
    s_security (self, SEC_DENIED, "", "events: peer %s (role %s) refused a subscription (%s)",
                who, role, ami_errname (AMI_E_DENIED));
}

/*  SEC-AUD-2: a failed handshake on one of our server sockets
    (ami_monitor.h), counted by the monitor. A key refused by the
    allow-list is warned about (rate-limited) with the peer's address and
    published (class "handshake"). A peer that is not a CURVE client of
    this server at all (plaintext, another server key, garbage) is only
    warned about: anyone who can open a TCP connection can cause that, and
    port scanners do, so on the feed it would be noise. */
static void
s_handshake_failed (const char *name, int kind, uint32_t status, const char *peer, void *arg)
{
    mdms_t *self = (mdms_t *) arg;
    char line [256];
    s_warn (self, "%s", ami_monitor_describe (name, kind, status, peer, line, sizeof line));
    if (kind == AMI_MONITOR_HANDSHAKE_REFUSED)
        s_security (self, SEC_HANDSHAKE, "", "%s: CURVE handshake from %s refused: key not "
                    "in the allow-list", name, peer);
}

/*  Take the handshake monitor's reports. */
static void
s_watch (mdms_t *self)
{
    ami_monitor_drain (self->watch, s_handshake_failed, self);
}

static uint64_t
s_handshakes_refused (mdms_t *self)
{
    return ami_monitor_refused (self->watch);
}

static uint64_t
s_handshakes_failed (mdms_t *self)
{
    return ami_monitor_failed (self->watch);
}


/* ---------------------------------------------------------------------- */
/*  Sockets                                                                 */

/*  Receive one message, keeping at most S_MAX_FRAMES frames and
    S_MAX_MESSAGE bytes (the rest is read and discarded). NULL for an
    oversized or unreadable message (logged). */
static zmsg_t *
s_recv (mdms_t *self, zsock_t *sock, const char *name)
{
    zmsg_t *msg = zmsg_new ();
    size_t frames = 0, bytes = 0;
    bool oversized = false, more = true;
    while (more) {
        zframe_t *frame = zframe_recv (sock);
        if (!frame) {
            zmsg_destroy (&msg);
            return NULL;
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
        self->malformed++;
        s_warn (self, "%s: message of %zu frames, %zu bytes is over the limit, dropped",
                name, frames, bytes);
        zmsg_destroy (&msg);
    }
    return msg;
}

static void
s_options (mdms_t *self, zsock_t *sock, int type)
{
    zsock_set_maxmsgsize (sock, AMI_MAX_FRAME);
    zsock_set_linger (sock, S_LINGER_MS);
    zsock_set_sndtimeo (sock, 0);               //  the actor never blocks on a send
    zsock_set_heartbeat_ivl (sock, self->heartbeat_ms);
    zsock_set_heartbeat_timeout (sock, S_LIVENESS * self->heartbeat_ms);
    if (type == ZMQ_ROUTER)
        zsock_set_router_mandatory (sock, 1);
    if (type == ZMQ_DEALER) {
        zsock_set_immediate (sock, 1);
        zsock_set_heartbeat_ttl (sock, S_LIVENESS * self->heartbeat_ms);
        zsock_set_reconnect_ivl (sock, S_RECONNECT_IVL_MS);
        zsock_set_reconnect_ivl_max (sock, S_RECONNECT_MAX_MS);
    }
}

/*  A bound server socket; sndhwm/rcvhwm in messages per peer (the reasons
    are at the call sites, s_connect, and in ami_mdms.h "Queue bounds"),
    set before the bind as libzmq requires. */
static zsock_t *
s_server (mdms_t *self, int type, const char *endpoint, ami_cert_t *cert, char **bound,
          const char *name, int sndhwm, int rcvhwm)
{
    zsock_t *sock = zsock_new (type);
    if (!sock) {
        ami_log_error ("mdms: cannot create the %s socket", name);
        return NULL;
    }
    s_options (self, sock, type);
    zsock_set_sndhwm (sock, sndhwm);
    zsock_set_rcvhwm (sock, rcvhwm);
    if (type == ZMQ_XPUB)
        //  SEC-AUTH-3: subscriptions are decided by the actor, per peer
        zsock_set_xpub_manual (sock, 1);
    if (ami_auth_server (sock, cert) != AMI_OK) {
        ami_log_error ("mdms: cannot make the %s socket a CURVE server (is ami_auth running? "
                       "does the certificate hold its secret key?)", name);
        zsock_destroy (&sock);
        return NULL;
    }
    if (zsock_bind (sock, "%s", endpoint) == -1) {
        ami_log_error ("mdms: cannot bind %s to %s: %s", name, endpoint,
                       zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        return NULL;
    }
    *bound = zsock_last_endpoint (sock);
    if (!*bound)
        *bound = strdup (endpoint);
    return sock;
}


/* ---------------------------------------------------------------------- */
/*  Heartbeat tick                                                          */

static void
s_tick (mdms_t *self)
{
    int64_t now = zclock_mono ();
    int64_t stale = (int64_t) S_LIVENESS * self->heartbeat_ms;

    if (self->broker_ready && !s_fresh (self, self->broker_heard, now)) {
        self->broker_ready = false;
        ami_log_warn ("broker %s silent for %lld ms: DOWN", self->broker_id, (long long) stale);
        s_publish (self, AMI_EV_SERVICE_DOWN, "", "broker %s is not answering", self->broker_id);
    }
    for (service_t *s = (service_t *) zhashx_first (self->services); s;
         s = (service_t *) zhashx_next (self->services))
        if (!s->down && !s_fresh (self, s->heard, now)) {
            s->down = true;
            ami_log_warn ("service %s %s silent for %lld ms: DOWN", s->role, s->node_id,
                          (long long) stale);
            s_publish (self, AMI_EV_SERVICE_DOWN, "", "%s %s is silent", s->role, s->node_id);
        }
    //  Forget head-end connections that went quiet (they HELLO again)
    zlistx_t *gone = NULL;
    for (peer_t *p = (peer_t *) zhashx_first (self->peers); p;
         p = (peer_t *) zhashx_next (self->peers))
        if (!s_fresh (self, p->heard, now)) {
            if (!gone) {
                gone = zlistx_new ();
                zlistx_set_duplicator (gone, (zlistx_duplicator_fn *) strdup);
                zlistx_set_destructor (gone, (zlistx_destructor_fn *) zstr_free);
            }
            zlistx_add_end (gone, (void *) zhashx_cursor (self->peers));
        }
    if (gone) {
        for (const char *key = (const char *) zlistx_first (gone); key;
             key = (const char *) zlistx_next (gone))
            zhashx_delete (self->peers, key);
        zlistx_destroy (&gone);
    }
    //  MMI questions the broker never answered: it lost them (it restarted,
    //  or the connection dropped). Until they are forgotten, answers pair
    //  with older questions; forgetting too early would do the same with
    //  the late answers of a merely slow broker, hence at least 1 s.
    int64_t mmi_stale = stale > S_MMI_STALE_MS ? stale : S_MMI_STALE_MS;
    if (self->mmi_count && now - self->mmi [self->mmi_head].sent > mmi_stale) {
        s_warn (self, "broker: %zu MMI questions unanswered for %lld ms, forgotten",
                self->mmi_count, (long long) mmi_stale);
        self->mmi_count = 0;
    }
    //  The counts of security events the budgets left out
    for (int class = 0; class < SEC_CLASSES; class++)
        s_security_window (self, class, now, false);
    //  Give back the memory of rate buckets that have refilled
    if (++self->ticks % S_RATE_SWEEP_TICKS == 0) {
        ami_mdms_rate_sweep (self->rate_operator, now);
        ami_mdms_rate_sweep (self->rate_meter, now);
    }
    //  The broker's counters for its status row (quiet until it is up)
    s_mdp_send (self, MMI_AMI_STATS, "", 0, !self->broker_ready);
    //  Poll the route of every aggregator (also the broker's liveness)
    if (zhashx_size (self->routes) == 0)
        s_mmi_ask (self, NULL);
    for (route_t *r = (route_t *) zhashx_first (self->routes); r;
         r = (route_t *) zhashx_next (self->routes))
        if (!s_mmi_ask (self, r))
            break;
}


/* ---------------------------------------------------------------------- */
/*  Pipe                                                                    */

static void
s_handle_pipe (mdms_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (msg);
    if (!command)
        ami_log_error ("mdms: empty pipe command");
    else
    if (streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "ENDPOINT"))
        zstr_sendx (self->pipe, self->api_endpoint, self->ingest_endpoint,
                    self->events_endpoint, NULL);
    else
    if (streq (command, "STATUS")) {
        zmsg_t *reply = zmsg_new ();
        bool broker_up = self->broker_ready && s_fresh (self, self->broker_heard, zclock_mono ());
        zmsg_addstrf (reply, "pending=%zu", zhashx_size (self->pending));
        zmsg_addstrf (reply, "services=%zu", zhashx_size (self->services));
        zmsg_addstrf (reply, "routes=%zu", zhashx_size (self->routes));
        zmsg_addstrf (reply, "broker=%s", broker_up ? "READY" : "DOWN");
        zmsg_addstrf (reply, "counter_reserved=%llu",
                      (unsigned long long) ami_mdms_db_counter_reserved (self->db));
        zmsg_addstrf (reply, "events=%llu", (unsigned long long) self->event_seq);
        zmsg_addstrf (reply, "readings=%zu", ami_mdms_db_reading_count (self->db));
        zmsg_addstrf (reply, "meters=%zu", ami_mdms_db_meter_count (self->db));
        zmsg_addstrf (reply, "malformed=%llu", (unsigned long long) self->malformed);
        zmsg_addstrf (reply, "denied=%llu", (unsigned long long) self->denied);
        zmsg_addstrf (reply, "reads_ok=%llu", (unsigned long long) self->reads_ok);
        zmsg_addstrf (reply, "reads_failed=%llu", (unsigned long long) self->reads_failed);
        zmsg_addstrf (reply, "send_failed=%llu", (unsigned long long) self->send_failed);
        zmsg_addstrf (reply, "bad_responses=%llu", (unsigned long long) self->bad_responses);
        zmsg_addstrf (reply, "rate_limited=%llu", (unsigned long long) self->rate_limited);
        zmsg_addstrf (reply, "audit_seq=%llu",
                      (unsigned long long) ami_mdms_audit_last (self->audit, NULL));
        zmsg_addstrf (reply, "audit_tail=%s",
                      ami_mdms_audit_tail_ok (self->audit) ? "ok" : "TAMPERED");
        zmsg_addstrf (reply, "audit_anchor=%llu",
                      (unsigned long long) ami_mdms_audit_anchored (self->audit));
        zmsg_addstrf (reply, "audit_failures=%llu", (unsigned long long) self->audit_failures);
        zmsg_addstrf (reply, "handshakes_refused=%llu",
                      (unsigned long long) s_handshakes_refused (self));
        zmsg_addstrf (reply, "handshakes_failed=%llu",
                      (unsigned long long) s_handshakes_failed (self));
        zmsg_addstrf (reply, "frames_refused=%llu", (unsigned long long) ami_auth_refused_count ());
        zmsg_addstrf (reply, "events_refused=%llu", (unsigned long long) self->events_refused);
        zmsg_addstrf (reply, "events_seq=%llu", (unsigned long long) self->event_seq);
        zmsg_addstrf (reply, "reads_busy=%llu", (unsigned long long) self->reads_busy);
        zmsg_addstrf (reply, "services_evicted=%llu",
                      (unsigned long long) self->services_evicted);
        zmsg_addstrf (reply, "peers_refused=%llu", (unsigned long long) self->peers_refused);
        zmsg_addstrf (reply, "mmi_refused=%llu", (unsigned long long) self->mmi_refused);
        zmsg_addstrf (reply, "health_refused=%llu", (unsigned long long) self->health_refused);
        ami_stat_t stats [AMI_MAX_STATS];
        uint32_t count = 0;
        ami_mdms_ingest_stats (self->intake, stats, AMI_MAX_STATS, &count);
        for (uint32_t i = 0; i < count; i++)
            zmsg_addstrf (reply, "%s=%llu", stats [i].name, (unsigned long long) stats [i].value);
        zmsg_send (&reply, self->pipe);
        zmsg_destroy (&reply);
    }
    else
        ami_log_error ("mdms: unknown pipe command '%s'", command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Set-up and the actor                                                    */

static bool
s_configure (mdms_t *self, const ami_mdms_config_t *config)
{
    const char *missing = !config ? "config"
        : !config->node_id ? "node_id"
        : !config->cert ? "cert"
        : !config->api_endpoint || !*config->api_endpoint ? "api_endpoint"
        : !config->ingest_endpoint || !*config->ingest_endpoint ? "ingest_endpoint"
        : !config->events_endpoint || !*config->events_endpoint ? "events_endpoint"
        : !config->broker_endpoint || !*config->broker_endpoint ? "broker_endpoint"
        : !config->broker_key ? "broker_key"
        : !config->db_dir || !*config->db_dir ? "db_dir"
        : !config->keys ? "keys"
        : !config->registry_path || !*config->registry_path ? "registry_path"
        : !config->data_key_path || !*config->data_key_path ? "data_key_path"
        : NULL;
    if (missing) {
        ami_log_error ("mdms: %s is required", missing);
        return false;
    }
    if (!ami_id_valid (config->node_id)) {
        ami_log_error ("mdms: node id '%s' is not a valid id", config->node_id);
        return false;
    }
    if (config->broker_id && !ami_id_valid (config->broker_id)) {
        ami_log_error ("mdms: broker id '%s' is not a valid id", config->broker_id);
        return false;
    }
    if (strlen (config->broker_key) != AMI_CERT_KEY_TXT_LEN) {
        ami_log_error ("mdms: broker key must be %d characters of Z85", AMI_CERT_KEY_TXT_LEN);
        return false;
    }
    if (!config->keys->has_secret) {
        //  SEC-KEY-1: without the secrets the MDMS can neither sign nor open
        ami_log_error ("mdms: the MDMS application keys lack their secret halves");
        return false;
    }
    if (config->read_timeout_ms < 0 || config->read_timeout_ms > AMI_MDMS_MAX_READ_TIMEOUT_MS
    ||  config->retries < AMI_MDMS_NO_RETRIES || config->retries > 100
    ||  config->heartbeat_ms < 0 || config->heartbeat_ms > 60000) {
        ami_log_error ("mdms: read timeout (0..%d ms), retries (-1..100) or heartbeat "
                       "(0..60000 ms) out of range", AMI_MDMS_MAX_READ_TIMEOUT_MS);
        return false;
    }
    if (config->max_pending > AMI_MDMS_MAX_PENDING_MAX
    ||  config->ingest_queue > AMI_MDMS_INGEST_QUEUE_MAX) {
        ami_log_error ("mdms: max pending (0..%d reads) or ingest queue (0..%d batches) out of "
                       "range", AMI_MDMS_MAX_PENDING_MAX, AMI_MDMS_INGEST_QUEUE_MAX);
        return false;
    }
    if (config->rate_operator > AMI_MDMS_RATE_MAX || config->rate_operator_burst > AMI_MDMS_RATE_MAX
    ||  config->rate_meter > AMI_MDMS_RATE_MAX || config->rate_meter_burst > AMI_MDMS_RATE_MAX) {
        ami_log_error ("mdms: rate limits and bursts must be 0..%d", AMI_MDMS_RATE_MAX);
        return false;
    }
    self->rate_operator = ami_mdms_rate_new (config->rate_operator, config->rate_operator_burst, 0);
    self->rate_meter = ami_mdms_rate_new (config->rate_meter, config->rate_meter_burst, 0);
    if (!self->rate_operator || !self->rate_meter)
        return false;
    snprintf (self->node_id, sizeof self->node_id, "%s", config->node_id);
    snprintf (self->broker_id, sizeof self->broker_id, "%s",
              config->broker_id ? config->broker_id : "broker");
    self->keys = *config->keys;
    self->read_timeout_ms = config->read_timeout_ms ? config->read_timeout_ms
                                                    : AMI_MDMS_READ_TIMEOUT_MS;
    self->retries = config->retries == AMI_MDMS_NO_RETRIES ? 0
                  : config->retries ? config->retries : AMI_MDMS_RETRIES;
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms : AMI_MDMS_HEARTBEAT_MS;
    self->max_pending = config->max_pending ? config->max_pending : AMI_MDMS_MAX_PENDING;
    self->ingest_queue = config->ingest_queue ? config->ingest_queue : AMI_MDMS_INGEST_QUEUE;
    return true;
}

/*  Can an API_AUDIT row carry action 0 (a request that did not decode)?
    Asked of the codec once, so the listing never fails on such a row. */
static bool
s_probe_action0 (mdms_t *self)
{
    ami_msg_t *tx = self->tx;
    ami_msg_reset (tx, AMI_MSG_API_AUDIT);
    tx->api_audit.count = 1;
    ami_audit_row_t *row = &tx->api_audit.entries [0];
    memset (row, 0, sizeof *row);
    row->seq = 1;
    snprintf (row->operator_id, sizeof row->operator_id, "probe");
    snprintf (row->role, sizeof row->role, S_NO_ROLE);
    size_t len = 0;
    return ami_msg_encode (tx, self->buf, AMI_MAX_FRAME, &len) == AMI_OK;
}

static bool
s_load_registry (mdms_t *self, const ami_mdms_config_t *config)
{
    //  SEC-KEY-1 / SEC-CONF-2: the data key, from a permission-checked file
    //  outside the database; only its derived keys are kept
    uint8_t data_key [AMI_E2E_SEED_SIZE];
    int err = ami_e2e_kdf_load (config->data_key_path, data_key);
    if (err) {
        ami_log_error ("mdms: data key %s cannot be loaded (%s): refusing to start",
                       config->data_key_path, ami_strerror (err));
        sodium_memzero (data_key, sizeof data_key);
        return false;
    }
    self->db = ami_mdms_db_new (config->db_dir, config->map_size, 0, &err);
    if (self->db) {
        ami_mdms_db_set_data_key (self->db, data_key);
        //  Before any batch: it opens (creates) its database
        self->audit = ami_mdms_audit_new (ami_mdms_db_store (self->db), data_key, &err);
    }
    sodium_memzero (data_key, sizeof data_key);
    if (!self->db || !self->audit)
        return false;
    //  SEC-AUD-1: the anchor outside the database (truncation shows against it)
    char anchor [4096];                 //  PATH_MAX on Linux
    if (config->audit_anchor_path && *config->audit_anchor_path)
        snprintf (anchor, sizeof anchor, "%s", config->audit_anchor_path);
    else
    if (ami_mdms_audit_anchor_default (config->db_dir, anchor, sizeof anchor)) {
        ami_log_error ("mdms: no default audit anchor path for database %s: set "
                       "mdms/audit-anchor", config->db_dir);
        return false;
    }
    if (ami_mdms_audit_anchor_open (self->audit, anchor))
        return false;                   //  logged with the path
    zlistx_t *aggregators = NULL;
    size_t meters = 0;
    if (ami_mdms_db_registry_import (self->db, config->registry_path, &aggregators, &meters)) {
        ami_log_error ("mdms: registry %s not imported", config->registry_path);
        return false;
    }
    bool ok = true;
    for (const char *id = (const char *) zlistx_first (aggregators); id && ok;
         id = (const char *) zlistx_next (aggregators)) {
        route_t *route = (route_t *) calloc (1, sizeof *route);
        ok = route != NULL;
        if (ok) {
            snprintf (route->id, sizeof route->id, "%s", id);
            snprintf (route->service, sizeof route->service, S_AGG_PREFIX "%s", id);
            route->checking = zlistx_new ();
            ok = route->checking && zhashx_insert (self->routes, id, route) == 0;
        }
        if (!ok)
            s_route_destructor ((void **) &route);
    }
    ami_log_info ("registry %s: %zu meters under %zu aggregators", config->registry_path,
                  meters, zlistx_size (aggregators));
    zlistx_destroy (&aggregators);
    return ok;
}

/*  Interval data: the database's interval length, then the ingest. */
static bool
s_ingest_setup (mdms_t *self, const ami_mdms_config_t *config)
{
    uint32_t interval = config->interval_s ? config->interval_s : AMI_MDMS_INTERVAL_S;
    if (ami_mdms_db_interval_setup (self->db, interval)) {
        ami_log_error ("mdms: interval of %u s cannot be used with database %s", interval,
                       config->db_dir);
        return false;
    }
    ami_mdms_ingest_config_t ingest = { 0 };
    ingest.db = self->db;
    ingest.keys = &self->keys;
    ingest.key_cache = config->key_cache;
    ingest.queue = self->ingest_queue;
    ingest.origin_ttl_ms = (int64_t) S_LIVENESS * self->heartbeat_ms;
    int err = 0;
    self->intake = ami_mdms_ingest_new (&ingest, &err);
    if (!self->intake)
        return false;
    ami_mdms_ingest_set_reject (self->intake, s_ingest_reject, self);
    return true;
}

static bool
s_connect (mdms_t *self, const ami_mdms_config_t *config)
{
    //  Bounds per peer, in messages (issue 6; why each value, and what it
    //  means in bytes: ami_mdms.h, "Queue bounds" and the constants).
    //  api: every read the MDMS holds may be one operator's and answered
    //  in one burst, plus one answer per request waiting to be read
    //  (a full queue fails the send: send_failed)
    self->api = s_server (self, ZMQ_ROUTER, config->api_endpoint, config->cert,
                          &self->api_endpoint, "api",
                          (int) self->max_pending + AMI_MDMS_API_RCVHWM, AMI_MDMS_API_RCVHWM);
    if (!self->api)
        return false;
    //  ingest: receive = the batches our credit lets in (ingest_queue,
    //  each < AMI_MAX_FRAME: 32 MiB at the default) + HEALTH/HELLO slack;
    //  past it the head end is slowed by TCP, nothing is lost. Send: tiny
    //  acks and HELLOs
    self->ingest = s_server (self, ZMQ_ROUTER, config->ingest_endpoint, config->cert,
                             &self->ingest_endpoint, "ingest", AMI_MDMS_INGEST_SNDHWM,
                             (int) self->ingest_queue + AMI_MDMS_INGEST_RCV_SLACK);
    if (!self->ingest)
        return false;
    //  events: loss-tolerant notifications; a subscriber that does not
    //  read loses events past AMI_MDMS_EVENTS_SNDHWM (libzmq drops them
    //  for that subscriber only and reports nothing: it sees the gap in
    //  EVENT.seq; events_seq is in our stats)
    self->events = s_server (self, ZMQ_XPUB, config->events_endpoint, config->cert,
                             &self->events_endpoint, "events", AMI_MDMS_EVENTS_SNDHWM,
                             AMI_MDMS_EVENTS_RCVHWM);
    if (!self->events)
        return false;
    //  SEC-AUD-2: refused handshakes on every server socket
    zsock_t *servers [] = { self->api, self->ingest, self->events };
    const char *names [] = { "api", "ingest", "events" };
    self->watch = ami_monitor_new (servers, names, 3);
    if (!self->watch)
        return false;
    self->broker = zsock_new (ZMQ_DEALER);
    if (!self->broker)
        return false;
    s_options (self, self->broker, ZMQ_DEALER);
    //  Send: one try of every read in flight plus a full MMI question ring
    //  (S_MMI_RING), so only a broker that stops reading fills it (a try
    //  then fails, send_failed, and is retried); all < 512 bytes: ~8 MB at
    //  the default max_pending. Receive: AMI_MDMS_BROKER_RCVHWM replies
    zsock_set_sndhwm (self->broker, (int) self->max_pending + S_MMI_RING);
    zsock_set_rcvhwm (self->broker, AMI_MDMS_BROKER_RCVHWM);
    if (ami_auth_client (self->broker, config->cert, config->broker_key) != AMI_OK)
        return false;
    if (zsock_connect (self->broker, "%s", config->broker_endpoint) == -1) {
        ami_log_error ("mdms: cannot connect to the broker at %s: %s", config->broker_endpoint,
                       zmq_strerror (zmq_errno ()));
        return false;
    }
    return true;
}

static void
s_mdms_destroy (mdms_t *self)
{
    //  Pending reads reference routes: drop them first
    zhashx_destroy (&self->corrs);
    zhashx_destroy (&self->pending);
    zhashx_destroy (&self->routes);
    zhashx_destroy (&self->services);
    zhashx_destroy (&self->peers);
    //  The monitor before its sockets
    ami_monitor_destroy (&self->watch);
    zsock_destroy (&self->api);
    zsock_destroy (&self->ingest);
    zsock_destroy (&self->events);
    zsock_destroy (&self->broker);
    zstr_free (&self->api_endpoint);
    zstr_free (&self->ingest_endpoint);
    zstr_free (&self->events_endpoint);
    ami_mdms_ingest_destroy (&self->intake);
    ami_mdms_audit_destroy (&self->audit);
    ami_mdms_db_destroy (&self->db);
    ami_mdms_rate_destroy (&self->rate_operator);
    ami_mdms_rate_destroy (&self->rate_meter);
    ami_msg_destroy (&self->rx);
    ami_msg_destroy (&self->tx);
    ami_msg_destroy (&self->scratch);
    ami_msg_destroy (&self->ev);
    free (self->buf);
    free (self->mmi);
    free (self->done);
    ami_e2e_mdms_wipe (&self->keys);
}

/*  Handle up to S_BATCH waiting messages of sock, then commit the
    readings they completed (s_group_flush). The ingest socket is not read
    while the interval queue is full: the rest waits in libzmq, bounded by
    the credit granted. */
static void
s_drain (mdms_t *self, zsock_t *sock, const char *name)
{
    for (int batch = S_BATCH; batch > 0; batch--) {
        if (sock == self->ingest && ami_mdms_ingest_full (self->intake))
            break;
        if (!(zsock_events (sock) & ZMQ_POLLIN))
            break;
        zmsg_t *msg = s_recv (self, sock, name);
        //  SEC-KEY-3: on the server sockets, a revoked or expired key's
        //  live session is not acted on (the broker socket is our client
        //  side: its frames carry no peer key; the event feed checks
        //  subscriptions itself, since libzmq also hands it unsubscriptions
        //  of departed subscribers, which carry none)
        if (msg && sock != self->broker && sock != self->events
        &&  !ami_auth_peer_allowed (NULL, zmsg_last (msg))) {
            self->malformed++;
            zmsg_destroy (&msg);
        }
        if (msg) {
            if (sock == self->api)
                s_handle_api_msg (self, msg);
            else
            if (sock == self->ingest)
                s_handle_ingest_msg (self, msg);
            else
            if (sock == self->events)
                s_handle_events_msg (self, msg);
            else
                s_handle_broker_msg (self, msg);
            zmsg_destroy (&msg);
        }
    }
    //  Readings verified during this drain: one durable commit, then
    //  their replies (see s_group_flush)
    s_group_flush (self);
}

void
ami_mdms_actor (zsock_t *pipe, void *args)
{
    const ami_mdms_config_t *config = (const ami_mdms_config_t *) args;
    zsock_signal (pipe, 0);                     //  CZMQ: signal first
    mdms_t *self = (mdms_t *) calloc (1, sizeof (mdms_t));
    if (!self) {
        ami_actor_failed (pipe);
        return;
    }
    self->pipe = pipe;
    self->started = zclock_mono ();
    self->pending_due = INT64_MAX;
    self->rx = ami_msg_new ();
    self->tx = ami_msg_new ();
    self->scratch = ami_msg_new ();
    self->ev = ami_msg_new ();
    self->buf = (uint8_t *) malloc (AMI_MAX_FRAME);
    self->mmi = (mmi_query_t *) calloc (S_MMI_RING, sizeof (mmi_query_t));
    self->routes = zhashx_new ();
    self->pending = zhashx_new ();
    self->corrs = zhashx_new ();
    self->done = (completed_t *) calloc (S_BATCH, sizeof (completed_t));
    self->services = zhashx_new ();
    self->peers = zhashx_new ();
    bool ok = self->rx && self->tx && self->scratch && self->ev && self->buf && self->mmi
           && self->routes && self->pending && self->corrs && self->done && self->services
           && self->peers;
    if (ok) {
        zhashx_set_destructor (self->routes, s_route_destructor);
        zhashx_set_destructor (self->pending, s_pending_destructor);
        zhashx_set_destructor (self->services, s_service_destructor);
        zhashx_set_destructor (self->peers, s_service_destructor);
    }
    ok = ok && s_configure (self, config) && s_load_registry (self, config)
            && s_ingest_setup (self, config) && s_connect (self, config);
    if (ok)
        self->audit_action0 = s_probe_action0 (self);
    if (!ok) {
        ami_log_error ("mdms: not started");
        s_mdms_destroy (self);
        free (self);
        ami_actor_failed (pipe);
        return;
    }
    ami_log_info ("mdms %s: api %s, ingest %s, events %s, broker %s", self->node_id,
                  self->api_endpoint, self->ingest_endpoint, self->events_endpoint,
                  config->broker_endpoint);
    //  config is the caller's and may be gone once we report READY:
    //  not touched from here on
    ami_actor_ready (pipe);

    zpoller_t *poller = zpoller_new (pipe, self->api, self->ingest, self->broker, self->events,
                                     ami_monitor_actor (self->watch), NULL);
    int64_t next_tick = zclock_mono ();          //  first MMI poll at once
    while (poller && !self->terminated) {
        int64_t now = zclock_mono ();
        if (now >= next_tick) {
            s_tick (self);
            next_tick = now + self->heartbeat_ms;
        }
        s_pending_timers (self);
        now = zclock_mono ();
        int64_t wake = next_tick < self->pending_due ? next_tick : self->pending_due;
        int timeout = wake > now ? (int) (wake - now) : 0;
        if (ami_mdms_ingest_backlog (self->intake))
            timeout = 0;                //  batches wait for a group commit
        void *which = zpoller_wait (poller, timeout);
        if (!which && zpoller_terminated (poller))
            break;
        if (which == pipe) {
            s_handle_pipe (self);
            if (self->terminated)
                break;
        }
        //  Every socket with input, not only the one the poller named
        //  first: a steady stream of interval data on ingest must not
        //  starve the operators or the broker's replies
        s_drain (self, self->api, "api");
        s_drain (self, self->ingest, "ingest");
        s_drain (self, self->broker, "broker");
        s_drain (self, self->events, "events");
        s_watch (self);
        //  Interval data: one group commit per wake-up, acks after it
        if (ami_mdms_ingest_backlog (self->intake))
            ami_mdms_ingest_run (self->intake, s_ingest_ack, self);
        //  SEC-AUD-1: the anchor follows the audit commits (at most one
        //  write per AMI_MDMS_AUDIT_ANCHOR_MS, whatever their number)
        ami_mdms_audit_anchor_sync (self->audit);
    }
    //  Reads still in flight get an answer rather than silence
    //  (by key: zhashx_values would hand the list our destructor)
    zlistx_t *left = zhashx_keys (self->pending);
    if (left) {
        for (const char *key = (const char *) zlistx_first (left); key;
             key = (const char *) zlistx_next (left)) {
            pending_t *p = (pending_t *) zhashx_lookup (self->pending, key);
            if (p)
                s_pending_fail (self, p, AMI_E_BUSY, "MDMS stopping; retry");
        }
        zlistx_destroy (&left);
    }
    zpoller_destroy (&poller);
    s_mdms_destroy (self);
    free (self);
}

zactor_t *
ami_mdms_new (const ami_mdms_config_t *config)
{
    return config ? ami_actor_new (ami_mdms_actor, (void *) config) : NULL;
}
