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
*/
#include "ami_aggregator.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_service.h"

/*  libzmq routing ids are 1..255 bytes (ZMTP identity property). */
#define S_MAX_RID           255
#define S_RID_KEY_SIZE      (2 * S_MAX_RID + 1)
#define S_REQ_KEY_SIZE      (2 * AMI_REQUEST_ID_SIZE + 1)
/*  Frames handled per socket per wake-up: 64 amortises the poll call under
    load and still returns to the pipe and the tick within a millisecond. */
#define S_BATCH             64
/*  Encode buffer for our own messages (HELLO, HEALTH, ERROR: < 2 KiB). */
#define S_BUF_SIZE          4096
/*  ZMTP heartbeats on every link: a half-open TCP connection (a head end
    host that vanished) is noticed after 3 intervals and the DEALER
    reconnects. */
#define S_ZMTP_LIVENESS     3

typedef struct {
    char key [S_RID_KEY_SIZE];  /* routing id in hex: the fleets table key */
    uint8_t rid [S_MAX_RID];
    size_t rid_size;
    char node_id [AMI_MAX_ID + 1];  /* from its certificate */
    int64_t expires;            /* zclock_mono: gone after this */
    size_t meters;              /* routes pointing here */
    bool hello;                 /* has sent at least one HELLO */
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
    uint64_t dropped;           /* frames dropped: its queue was full */
    bool dropping;              /* the last send to it was dropped */
} headend_t;

typedef struct {
    zsock_t *pipe;              /* actor pipe, borrowed */
    zsock_t *router;            /* fleet-facing */
    char *endpoint;             /* as bound */
    headend_t *headends;
    size_t headend_count;
    char node_id [AMI_MAX_ID + 1];
    int heartbeat_ms;
    size_t max_pending;
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
    ami_log_info ("aggregator %s: request %s from head end %s: %s (%s)", self->node_id,
                  ami_request_id_format (request_id, rid), self->headends [headend].name,
                  error->text, ami_errname (code));
    size_t len = s_encode (self);
    s_send_headend (self, headend, self->buf, len, "ERROR");
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
    if (zhashx_size (self->fleets) >= AMI_AGGREGATOR_MAX_FLEETS) {
        s_warn (self, "fleet table full (%d): ignored fleet %s", AMI_AGGREGATOR_MAX_FLEETS, node_id);
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
            if (zhashx_size (self->superseded) < AMI_AGGREGATOR_MAX_FLEETS) {
                superseded_t *entry = (superseded_t *) zmalloc (sizeof (superseded_t));
                assert (entry);
                snprintf (entry->node_id, sizeof entry->node_id, "%s", old->node_id);
                entry->expires = zclock_mono () + AMI_AGGREGATOR_LIVENESS * self->heartbeat_ms;
                zhashx_update (self->superseded, old->key, entry);
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
            s_warn (self, "meter %s moved from fleet %s to fleet %s",
                    meter, current->node_id, fleet->node_id);
            current->meters--;
            zhashx_update (self->routes, meter, fleet);
        }
        else {
            if (zhashx_size (self->routes) >= AMI_AGGREGATOR_MAX_METERS) {
                ignored++;
                continue;
            }
            zhashx_insert (self->routes, meter, fleet);
        }
        fleet->meters++;
    }
    if (ignored)
        s_warn (self, "route table full (%d meters): ignored %zu meters of fleet %s",
                AMI_AGGREGATOR_MAX_METERS, ignored, fleet->node_id);
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
                s_send_headend (self, i, data, size, "fleet HEALTH");
            break;
        case AMI_MSG_READ_RESP:
        case AMI_MSG_ERROR:
            s_fleet_answer (self, fleet, data, size);
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
    if (!p && zhashx_size (self->pending) >= self->max_pending) {
        self->busy++;
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
    if (self->in->type == AMI_MSG_HELLO) {
        ami_log_info ("aggregator %s: HELLO from head end %s (%s): re-sending HELLO",
                      self->node_id, headend->name, self->in->hello.node_id);
        size_t len = s_encode_hello (self);
        s_send_headend (self, index, self->buf, len, "HELLO");
    }
    else {
        self->malformed++;
        s_warn (self, "dropped %s from head end %s: not a head end's message",
                ami_msg_type_name (self->in->type), headend->name);
    }
    zmsg_destroy (&msg);
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
    };
    for (size_t i = 0; i < sizeof stats / sizeof stats [0]; i++) {
        snprintf (health->stats [i].name, sizeof health->stats [i].name, "%s", stats [i].name);
        health->stats [i].value = stats [i].value;
    }
    health->stat_count = sizeof stats / sizeof stats [0];
    size_t len = s_encode (self);
    for (size_t i = 0; i < self->headend_count; i++)
        s_send_headend (self, i, self->buf, len, "HEALTH");
}

static void
s_tick (agg_t *self)
{
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
    zsock_destroy (&self->router);
    for (size_t i = 0; self->headends && i < self->headend_count; i++) {
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
    return true;
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
    self->in = ami_msg_new ();
    self->out = ami_msg_new ();
    self->fleets = zhashx_new ();
    self->routes = zhashx_new ();
    self->pending = zhashx_new ();
    self->superseded = zhashx_new ();
    self->headends = (headend_t *) calloc (config->headend_count, sizeof (headend_t));
    if (!self->in || !self->out || !self->fleets || !self->routes || !self->pending
    ||  !self->superseded || !self->headends) {
        ami_log_error ("aggregator %s: out of memory", self->node_id);
        s_self_destroy (&self);
        return NULL;
    }
    self->headend_count = config->headend_count;
    zhashx_set_destructor (self->fleets, s_fleet_destroy);
    zhashx_set_destructor (self->pending, s_pending_destroy);
    zhashx_set_destructor (self->superseded, s_superseded_destroy);

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
    /* introductions, queued until each connection is up */
    size_t len = s_encode_hello (self);
    for (size_t i = 0; i < self->headend_count; i++)
        s_send_headend (self, i, self->buf, len, "HELLO");
    ami_log_info ("aggregator %s: fleets on %s, %zu head ends", self->node_id,
                  self->endpoint, self->headend_count);
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

    zpoller_t *poller = zpoller_new (pipe, self->router, NULL);
    assert (poller);
    for (size_t i = 0; i < self->headend_count; i++)
        zpoller_add (poller, self->headends [i].dealer);
    while (!self->terminated) {
        int64_t wait = self->next_heartbeat - zclock_mono ();
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
        }
        else
        if (zpoller_terminated (poller))
            break;
        if (zclock_mono () >= self->next_heartbeat) {
            s_tick (self);
            self->next_heartbeat += self->heartbeat_ms;
            if (self->next_heartbeat < zclock_mono ())
                self->next_heartbeat = zclock_mono () + self->heartbeat_ms;
        }
    }
    zpoller_destroy (&poller);
    ami_log_info ("aggregator %s: stopped (%" PRIu64 " down, %" PRIu64 " up)",
                  self->node_id, self->relayed_down, self->relayed_up);
    s_self_destroy (&self);
}

zactor_t *
ami_aggregator_new (const ami_aggregator_config_t *config)
{
    assert (config);
    return ami_actor_new (ami_aggregator_actor, (void *) config);
}
