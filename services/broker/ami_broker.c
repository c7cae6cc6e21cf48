/*  ami_broker.c - Majordomo broker (MDP/0.1, ZeroMQ RFC 7; MMI, RFC 8).

    Design. One CZMQ actor owns one ROUTER that clients and workers share.
    Every message is read into a zmsg with bounded frame count and size,
    then dispatched on its protocol header ("MDPC01" client, "MDPW01"
    worker); anything else is dropped with a (rate-limited) warning.

    State, all owned by the actor thread:
    - services: zhashx name -> service_t. A service holds a FIFO zlistx of
      queued requests and a zlistx of its idle workers in least-recently-
      used order (head = idle longest = next to get work). Invariant: at
      most one of the two lists is non-empty. A service with no worker and
      no queued request is deleted at once, so the table only holds what
      is live (and is bounded by max_services besides).
    - workers: zhashx identity (hex) -> worker_t. A worker exists only
      after a valid READY, so it always has a service. It remembers the
      client address of the request it is processing (NULL when idle), so
      a REPLY can only go to that client.
    - by_expiry: zlistx of all workers, each moved to the tail whenever it
      is heard from; since every refresh sets expiry = now + the same
      interval, the list stays sorted by expiry and expiring workers is a
      walk from the head that stops at the first live one.
    Every list handle is kept in the item, so removals are O(1).

    Roles. With CURVE each message's sender role (certificate metadata
    from the allow-list, ami_auth_peer_meta) is checked against the client
    or worker role list before the message is looked at further; the lists
    are kept as ",a,b," strings so a lookup is one strstr of ",role,".

    Refused handshakes (SEC-AUD-2). The ROUTER is watched by an ami_monitor
    (libzmq socket monitor read by a watcher actor, ami_monitor.h): every
    failed CURVE handshake is counted there and warned about here
    (rate-limited, with the peer's ip:port); "STATS" reports the counts.

    Timing. A tick every heartbeat_ms expires silent workers, expires
    queued requests older than request_ttl_ms, and sends HEARTBEAT to every
    worker. Clock: zclock_mono (milliseconds, never jumps).
*/
#include "ami_broker.h"
#include "ami_service.h"
#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_monitor.h"
#include "ami_msg.h"        /* AMI_MAX_FRAME: the bus-wide frame limit */
#include "ami_sort.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*  RFC 7 protocol headers and worker command bytes. */
#define MDP_CLIENT          "MDPC01"
#define MDP_WORKER          "MDPW01"
#define MDPW_READY          0x01
#define MDPW_REQUEST        0x02
#define MDPW_REPLY          0x03
#define MDPW_HEARTBEAT      0x04
#define MDPW_DISCONNECT     0x05

/*  RFC 8: every service in this namespace is the broker's own. */
#define MMI_PREFIX          "mmi."
#define MMI_SERVICE         "mmi.service"
/*  ami-bus's own MMI service (see the header, "MMI"): the broker's stats. */
#define MMI_AMI_STATS       "mmi.ami-stats"
/*  An encoded HEALTH of AMI_MAX_STATS stats is < 3 KiB (64 x (1-byte
    pair + 34-byte name + 9-byte value) + role, id and header: 2883 bytes
    at most); 4 KiB leaves room. */
#define S_HEALTH_MAX        4096

/*  libzmq routing ids are 1..255 bytes (ZMTP identity property). */
#define S_MAX_IDENTITY      255
/*  A key is the identity in hex, plus NUL. */
#define S_KEY_SIZE          (2 * S_MAX_IDENTITY + 1)
/*  A whole message may exceed one frame's limit by its envelope: identity,
    protocol header, command, client address, service name are all short
    (<= 255 bytes each). 4 KiB covers them with room to spare. */
#define S_MAX_MESSAGE       ((size_t) AMI_MAX_FRAME + 4096)
/*  Messages handled per poll wake-up: 64 amortises the poll call under
    load (DESIGN.md section 8: per-message cost matters) and still returns
    to the pipe and the heartbeat tick within a fraction of a millisecond. */
#define S_BATCH             64

typedef struct _service_t service_t;

typedef struct {
    zmsg_t *msg;                /* [client address, "", body...] */
    size_t size;                /* zmsg_content_size, counted in queued_bytes */
    int64_t expires;            /* zclock_mono time of expiry */
} request_t;

typedef struct {
    char key [S_KEY_SIZE];      /* identity in hex: the workers table key */
    zframe_t *address;          /* routing id, to address it on the ROUTER */
    service_t *service;         /* the service it registered; never NULL */
    void *idle_handle;          /* handle in service->idle, NULL when busy */
    void *expiry_handle;        /* handle in broker by_expiry */
    zframe_t *client;           /* client of the request in hand, or NULL */
    int64_t expiry;             /* expired when zclock_mono passes this */
} worker_t;

struct _service_t {
    char *name;
    zlistx_t *requests;         /* request_t *, FIFO, owned */
    zlistx_t *idle;             /* worker_t *, LRU order, borrowed */
    size_t workers;             /* registered workers, idle or busy */
};

typedef struct {
    zsock_t *pipe;              /* actor pipe, borrowed */
    zsock_t *router;            /* the one socket for clients and workers */
    char *endpoint;             /* as bound, with the real port */
    ami_monitor_t *watch;       /* failed handshakes on router (SEC-AUD-2) */
    zhashx_t *services;         /* name -> service_t, owned */
    zhashx_t *workers;          /* hex identity -> worker_t, owned */
    zlistx_t *by_expiry;        /* worker_t *, sorted by expiry, borrowed */
    int heartbeat_ms;
    int liveness;
    int request_ttl_ms;
    size_t max_queue;
    size_t max_queue_bytes;
    size_t max_services;
    size_t max_workers;
    size_t sndhwm;
    size_t rcvhwm;
    size_t queued;              /* requests in all queues */
    size_t queued_bytes;        /* their content bytes */
    int64_t started;            /* zclock_mono at READY */
    ami_id_t node_id;           /* in the mmi.ami-stats HEALTH */
    ami_msg_t *health;          /* mmi.ami-stats answer being encoded */
    /*  Counters (issue 6: every drop and refusal is counted; "STATS" and
        mmi.ami-stats report them, see the header) */
    uint64_t dropped_queue_full;    /* requests refused: service queue at max_queue */
    uint64_t dropped_queue_bytes;   /* requests refused: all queues at max_queue_bytes */
    uint64_t expired;               /* requests that waited request_ttl_ms */
    uint64_t services_refused;      /* new services refused: table at max_services */
    uint64_t workers_refused;       /* READY refused: no room for the worker/service */
    uint64_t requeued;              /* REQUESTs a worker could not be sent, kept queued */
    uint64_t replies_dropped;       /* REPLYs / MMI answers a client could not be sent */
    uint64_t send_gone;             /* sends refused: peer gone (EHOSTUNREACH) */
    uint64_t send_full;             /* sends refused: peer's queue full (EAGAIN) */
    bool verbose;
    bool terminated;
    bool curve;                 /* CURVE server: check each peer's key is still allowed */
    char *client_roles;         /* ",mdms," - roles that may be clients (CURVE) */
    char *worker_roles;         /* ",headend," - roles that may be workers (CURVE) */
    char *worker_prefix;        /* worker service names start with it (CURVE) */
    ami_log_limit_t warn_limit; /* warnings about peers' input (ami_log.h) */
} broker_t;


/* ---------------------------------------------------------------------- */
/*  Logging                                                                 */

/*  Warn about bad input, at most AMI_BROKER_LOG_BURST lines per second. */
static void
s_warn (broker_t *self, const char *format, ...) CHECK_PRINTF (2);

static void
s_warn (broker_t *self, const char *format, ...)
{
    if (!self->warn_limit.burst)
        self->warn_limit.burst = AMI_BROKER_LOG_BURST;
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (&self->warn_limit, "broker", format, args);
    va_end (args);
}

static bool
s_debug_on (broker_t *self)
{
    return self->verbose || ami_log_enabled (AMI_LOG_DEBUG);
}

/*  Is role in list (",a,b," as made by s_role_list)? NULL, empty, or a
    role with a comma (it could match across names) is never listed. */
static bool
s_role_listed (const char *list, const char *role)
{
    if (!list || !role || !*role || strchr (role, ','))
        return false;
    char needle [AMI_CERT_META_MAX + 3];
    int len = snprintf (needle, sizeof needle, ",%s,", role);
    if (len < 0 || (size_t) len >= sizeof needle)
        return false;
    return strstr (list, needle) != NULL;
}

/*  Parse a comma-separated role list (NULL: fallback) into ",a,b,", names
    trimmed of spaces. Returns a fresh string, or NULL for an empty name,
    a name over AMI_CERT_META_MAX bytes or with a non-printable byte, or
    out of memory (logged). "" gives "," (no role matches). */
static char *
s_role_list (const char *text, const char *fallback, const char *what)
{
    if (!text)
        text = fallback;
    size_t size = strlen (text);
    char *list = (char *) malloc (size + 3);
    if (!list)
        return NULL;
    char *out = list;
    *out++ = ',';
    const char *p = text;
    while (*text) {
        const char *end = strchr (p, ',');
        if (!end)
            end = p + strlen (p);
        const char *start = p;
        while (start < end && *start == ' ')
            start++;
        const char *stop = end;
        while (stop > start && stop [-1] == ' ')
            stop--;
        size_t len = (size_t) (stop - start);
        bool valid = len > 0 && len <= AMI_CERT_META_MAX;
        for (size_t i = 0; valid && i < len; i++)
            valid = start [i] >= 0x20 && start [i] <= 0x7e;
        if (!valid) {
            ami_log_error ("broker: %s: invalid or empty role name in '%s'",
                        what, text);
            free (list);
            return NULL;
        }
        memcpy (out, start, len);
        out += len;
        *out++ = ',';
        if (!*end)
            break;
        p = end + 1;
    }
    *out = 0;
    return list;
}

/*  Identity frame as hex into key (S_KEY_SIZE bytes). Returns false for an
    identity libzmq would never produce (empty or > 255 bytes). */
static bool
s_identity_key (zframe_t *identity, char *key)
{
    static const char hex [] = "0123456789abcdef";
    size_t size = zframe_size (identity);
    if (size == 0 || size > S_MAX_IDENTITY)
        return false;
    const byte *data = zframe_data (identity);
    for (size_t i = 0; i < size; i++) {
        key [2 * i] = hex [data [i] >> 4];
        key [2 * i + 1] = hex [data [i] & 15];
    }
    key [2 * size] = 0;
    return true;
}

/*  Service names: 1..AMI_BROKER_MAX_NAME printable ASCII bytes. Copies
    the name, NUL-terminated, into name (AMI_BROKER_MAX_NAME + 1 bytes). */
static bool
s_service_name (zframe_t *frame, char *name)
{
    size_t size = zframe_size (frame);
    if (size == 0 || size > AMI_BROKER_MAX_NAME)
        return false;
    const byte *data = zframe_data (frame);
    for (size_t i = 0; i < size; i++)
        if (data [i] < 0x20 || data [i] > 0x7e)
            return false;
    memcpy (name, data, size);
    name [size] = 0;
    return true;
}


/*  Every statistic, in the order of the header ("STATS"); fills at most
    AMI_MAX_STATS (a HEALTH's limit) and sets *count. */
static void
s_stats (broker_t *self, ami_stat_t *stats, uint32_t *count)
{
    const struct {
        const char *name;
        uint64_t value;
    } rows [] = {
        { "services",            zhashx_size (self->services) },
        { "workers",             zhashx_size (self->workers) },
        { "queued",              self->queued },
        { "queued_bytes",        self->queued_bytes },
        { "handshakes_refused",  ami_monitor_refused (self->watch) },
        { "handshakes_failed",   ami_monitor_failed (self->watch) },
        { "max_queue",           self->max_queue },
        { "max_queue_bytes",     self->max_queue_bytes },
        { "dropped_queue_full",  self->dropped_queue_full },
        { "dropped_queue_bytes", self->dropped_queue_bytes },
        { "expired",             self->expired },
        { "services_refused",    self->services_refused },
        { "workers_refused",     self->workers_refused },
        { "requeued",            self->requeued },
        { "replies_dropped",     self->replies_dropped },
        { "send_gone",           self->send_gone },
        { "send_full",           self->send_full },
        { "max_services",        self->max_services },
        { "max_workers",         self->max_workers },
        { "request_ttl_ms",      (uint64_t) self->request_ttl_ms },
    };
    _Static_assert (sizeof rows / sizeof rows [0] <= AMI_MAX_STATS,
                    "the broker's stats must fit one HEALTH");
    *count = 0;
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++) {
        snprintf (stats [i].name, sizeof stats [i].name, "%s", rows [i].name);
        stats [i].value = rows [i].value;
        (*count)++;
    }
}


/* ---------------------------------------------------------------------- */
/*  Requests, services, workers                                            */

static void
s_request_destroy (request_t **self_p)
{
    if (*self_p) {
        zmsg_destroy (&(*self_p)->msg);
        free (*self_p);
        *self_p = NULL;
    }
}

static void
s_request_destructor (void **item)
{
    s_request_destroy ((request_t **) item);
}

static void
s_service_destructor (void **item)
{
    service_t *self = (service_t *) *item;
    if (self) {
        zlistx_destroy (&self->requests);
        zlistx_destroy (&self->idle);
        free (self->name);
        free (self);
        *item = NULL;
    }
}

static void
s_worker_destructor (void **item)
{
    worker_t *self = (worker_t *) *item;
    if (self) {
        zframe_destroy (&self->address);
        zframe_destroy (&self->client);
        free (self);
        *item = NULL;
    }
}

/*  Find the service, creating it if the table has room. NULL if full or
    out of memory (logged). */
static service_t *
s_service_require (broker_t *self, const char *name)
{
    service_t *service = (service_t *) zhashx_lookup (self->services, name);
    if (service)
        return service;
    if (zhashx_size (self->services) >= self->max_services) {
        self->services_refused++;
        s_warn (self, "service table full (%zu): refused new service '%s'",
                self->max_services, name);
        return NULL;
    }
    service = (service_t *) calloc (1, sizeof *service);
    if (!service)
        return NULL;
    service->name = strdup (name);
    service->requests = zlistx_new ();
    service->idle = zlistx_new ();
    if (!service->name || !service->requests || !service->idle) {
        s_service_destructor ((void **) &service);
        return NULL;
    }
    zlistx_set_destructor (service->requests, s_request_destructor);
    if (zhashx_insert (self->services, name, service)) {
        s_service_destructor ((void **) &service);
        return NULL;
    }
    if (s_debug_on (self))
        ami_log_debug ("broker: new service '%s'", name);
    return service;
}

/*  Delete the service if it has neither workers nor queued requests. */
static void
s_service_collect (broker_t *self, service_t *service)
{
    if (service->workers == 0 && zlistx_size (service->requests) == 0) {
        char name [AMI_BROKER_MAX_NAME + 1];
        snprintf (name, sizeof name, "%s", service->name);
        if (s_debug_on (self))
            ami_log_debug ("broker: service '%s' has gone", name);
        zhashx_delete (self->services, name);
    }
}

/*  Send [address, "", protocol, word, tail...] to a peer on the ROUTER,
    never blocking; tail (may be NULL) is NOT consumed, so a caller can
    keep what could not be delivered. ROUTER_MANDATORY (s_bind) makes
    libzmq refuse, at the first frame, a message it would otherwise drop
    silently: EHOSTUNREACH when the peer has gone, EAGAIN when its queue
    is at the send HWM. Both are counted (send_gone, send_full) and warned
    about (rate-limited) naming the peer and what was lost; the caller
    decides what the failure means for MDP state. Once the first frame is
    accepted libzmq takes the rest of the message (the HWM is checked per
    message), so later frames cannot fail. Returns 0 or the errno. */
static int
s_send (broker_t *self, zframe_t *address, const char *protocol,
        const void *word, size_t word_size, zmsg_t *tail, const char *what,
        const char *service)
{
    void *handle = zsock_resolve (self->router);
    const int more = ZMQ_DONTWAIT | ZMQ_SNDMORE;
    size_t left = tail ? zmsg_size (tail) : 0;
    if (zmq_send (handle, zframe_data (address), zframe_size (address), more) == -1) {
        int error = zmq_errno ();
        bool full = error == EAGAIN;
        if (full)
            self->send_full++;
        else
            self->send_gone++;
        char key [S_KEY_SIZE] = "?";
        s_identity_key (address, key);
        s_warn (self, "%s for '%s' to peer %.20s not sent: %s", what, service,
                key, full ? "its queue is full" : "it has gone");
        return error;
    }
    zmq_send (handle, "", 0, more);
    zmq_send (handle, protocol, strlen (protocol), more);
    zmq_send (handle, word, word_size, left ? more : ZMQ_DONTWAIT);
    for (zframe_t *frame = tail ? zmsg_first (tail) : NULL; frame;
         frame = zmsg_next (tail))
        zframe_send (&frame, self->router, ZFRAME_REUSE | ZFRAME_DONTWAIT
                                         | (--left ? ZFRAME_MORE : 0));
    return 0;
}

/*  Send a worker command with no body (HEARTBEAT, DISCONNECT). A failure
    is counted by s_send and changes nothing else: a worker that cannot be
    reached stops being heard from and expires (liveness). */
static int
s_send_worker (broker_t *self, zframe_t *address, byte command,
               const char *service)
{
    return s_send (self, address, MDP_WORKER, &command, 1, NULL,
                   command == MDPW_HEARTBEAT ? "HEARTBEAT" : "DISCONNECT",
                   service);
}

/*  Remove a registered worker, optionally sending it DISCONNECT first.
    A request it was processing is lost: the client retries (RFC 7). */
static void
s_worker_remove (broker_t *self, worker_t *worker, bool disconnect,
                 const char *why)
{
    service_t *service = worker->service;
    if (disconnect)
        s_send_worker (self, worker->address, MDPW_DISCONNECT, service->name);
    if (worker->client)
        s_warn (self, "worker %.20s (%s) removed with a request in hand: %s",
                worker->key, service->name, why);
    else
    if (s_debug_on (self))
        ami_log_debug ("broker: worker %.20s (%s) removed: %s",
                    worker->key, service->name, why);
    //  Never pass zlistx_delete a NULL handle: it would delete the head
    if (worker->idle_handle)
        zlistx_delete (service->idle, worker->idle_handle);
    zlistx_delete (self->by_expiry, worker->expiry_handle);
    service->workers--;
    char key [S_KEY_SIZE];
    memcpy (key, worker->key, sizeof key);
    zhashx_delete (self->workers, key);        //  frees worker
    s_service_collect (self, service);
}

/*  Give queued requests to idle workers of the service, oldest request to
    the longest-idle worker, until one list is empty.
    A REQUEST that libzmq refuses (the worker has gone, or its queue is
    full: it is not reading) was not delivered: the request stays at the
    head of its queue, with its original expiry, for the next worker
    (counted in requeued), and the worker, which would black-hole every
    request given to it, is removed without DISCONNECT (that could not be
    sent either). If it is alive its next HEARTBEAT is "before READY" and
    earns a DISCONNECT, so it reconnects and registers afresh (RFC 7).
    Each failure removes a worker, so the loop ends. */
static void
s_service_dispatch (broker_t *self, service_t *service)
{
    while (zlistx_size (service->idle) && zlistx_size (service->requests)) {
        worker_t *worker = (worker_t *) zlistx_detach (service->idle, NULL);
        worker->idle_handle = NULL;
        request_t *request = (request_t *) zlistx_first (service->requests);
        //  request->msg is [client, "", body...], exactly REQUEST's tail
        byte command = MDPW_REQUEST;
        int rc = s_send (self, worker->address, MDP_WORKER, &command, 1,
                         request->msg, "REQUEST", service->name);
        if (rc) {
            self->requeued++;
            //  The queue is not empty, so this does not delete the service
            s_worker_remove (self, worker, false, rc == EAGAIN
                             ? "its queue is full (REQUEST kept queued)"
                             : "it has gone (REQUEST kept queued)");
            continue;
        }
        worker->client = zframe_dup (zmsg_first (request->msg));
        request = (request_t *) zlistx_detach (service->requests, NULL);
        self->queued--;
        self->queued_bytes -= request->size;
        s_request_destroy (&request);
        if (s_debug_on (self))
            ami_log_debug ("broker: request for '%s' to worker %.20s",
                        service->name, worker->key);
    }
}

/*  The worker is ready for work: serve a queued request or wait. */
static void
s_worker_ready (broker_t *self, worker_t *worker)
{
    zframe_destroy (&worker->client);
    worker->idle_handle = zlistx_add_end (worker->service->idle, worker);
    s_service_dispatch (self, worker->service);
}

static void
s_worker_refresh (broker_t *self, worker_t *worker)
{
    worker->expiry = zclock_mono ()
                   + (int64_t) self->heartbeat_ms * self->liveness;
    zlistx_move_end (self->by_expiry, worker->expiry_handle);
}

/*  Register a new worker for a service after a valid READY. */
static void
s_worker_register (broker_t *self, zframe_t *sender, const char *key,
                   const char *name)
{
    if (zhashx_size (self->workers) >= self->max_workers) {
        self->workers_refused++;
        s_warn (self, "worker table full (%zu): refused READY for '%s'",
                self->max_workers, name);
        s_send_worker (self, sender, MDPW_DISCONNECT, name);
        return;
    }
    service_t *service = s_service_require (self, name);
    if (!service) {
        self->workers_refused++;        //  service table full (counted there too)
        s_send_worker (self, sender, MDPW_DISCONNECT, name);
        return;
    }
    worker_t *worker = (worker_t *) calloc (1, sizeof *worker);
    if (worker) {
        snprintf (worker->key, sizeof worker->key, "%s", key);
        worker->address = zframe_dup (sender);
        worker->service = service;
    }
    if (!worker || !worker->address
    ||  zhashx_insert (self->workers, key, worker)) {
        s_worker_destructor ((void **) &worker);
        s_send_worker (self, sender, MDPW_DISCONNECT, name);
        s_service_collect (self, service);
        return;
    }
    worker->expiry_handle = zlistx_add_end (self->by_expiry, worker);
    if (!worker->expiry_handle) {               //  out of memory
        zhashx_delete (self->workers, key);     //  frees worker
        s_send_worker (self, sender, MDPW_DISCONNECT, name);
        s_service_collect (self, service);
        return;
    }
    service->workers++;
    s_worker_refresh (self, worker);
    if (s_debug_on (self))
        ami_log_debug ("broker: worker %.20s ready for '%s'", key, name);
    s_worker_ready (self, worker);
}


/* ---------------------------------------------------------------------- */
/*  Client side                                                             */

/*  Reply to a client: [client, "", "MDPC01", service, body...]; consumes
    the client frame and body. A reply the client cannot be sent (it has
    gone, or stopped reading) is dropped, counted in replies_dropped (and
    send_gone / send_full) and warned about: MDP has no way to hold it,
    and the client's own deadline and retry cover it (Lazy Pirate). */
static void
s_client_reply (broker_t *self, zframe_t **client_p, const char *service,
                zmsg_t *body)
{
    if (s_send (self, *client_p, MDP_CLIENT, service, strlen (service), body,
                "REPLY", service))
        self->replies_dropped++;
    zframe_destroy (client_p);
    zmsg_destroy (&body);
}

/*  mmi.ami-stats: one frame, a HEALTH (PROTOCOL.md 4.2) with the stats of
    s_stats. NULL if it cannot be encoded (logged: a programming error). */
static zframe_t *
s_health_frame (broker_t *self)
{
    ami_msg_reset (self->health, AMI_MSG_HEALTH);
    ami_health_t *health = &self->health->health;
    snprintf (health->role, sizeof health->role, "broker");
    snprintf (health->node_id, sizeof health->node_id, "%s", self->node_id);
    health->state = AMI_STATE_READY;
    health->uptime_ms = (uint64_t) (zclock_mono () - self->started);
    s_stats (self, health->stats, &health->stat_count);
    byte buf [S_HEALTH_MAX];
    size_t len = 0;
    int rc = ami_msg_encode (self->health, buf, sizeof buf, &len);
    if (rc) {
        ami_log_error ("broker: cannot encode the mmi.ami-stats HEALTH: %s",
                       ami_strerror (rc));
        return NULL;
    }
    return zframe_new (buf, len);
}

/*  RFC 8. msg is the request body (at least one frame); consumed. */
static void
s_mmi_request (broker_t *self, zframe_t **client_p, const char *service,
               zmsg_t *msg)
{
    const char *code = "501";
    if (streq (service, MMI_AMI_STATS)) {
        zmsg_destroy (&msg);
        zframe_t *frame = s_health_frame (self);
        zmsg_t *reply = frame ? zmsg_new () : NULL;
        if (!reply || zmsg_append (reply, &frame)) {
            zframe_destroy (&frame);
            zmsg_destroy (&reply);
            zframe_destroy (client_p);
            return;
        }
        s_client_reply (self, client_p, service, reply);
        return;
    }
    if (streq (service, MMI_SERVICE)) {
        char name [AMI_BROKER_MAX_NAME + 1];
        service_t *target = NULL;
        if (s_service_name (zmsg_first (msg), name))
            target = (service_t *) zhashx_lookup (self->services, name);
        code = target && target->workers > 0 ? "200" : "404";
    }
    zmsg_destroy (&msg);
    zmsg_t *reply = zmsg_new ();
    if (!reply || zmsg_pushstr (reply, code)) {
        zmsg_destroy (&reply);
        zframe_destroy (client_p);
        return;
    }
    s_client_reply (self, client_p, service, reply);
}

/*  A client REQUEST; msg is [service, body...] and is consumed. */
static void
s_client_message (broker_t *self, zframe_t **sender_p, const char *key,
                  zmsg_t *msg)
{
    char name [AMI_BROKER_MAX_NAME + 1];
    if (zmsg_size (msg) < 2) {
        s_warn (self, "client %.20s: request without %s, dropped", key,
                zmsg_size (msg) ? "body" : "service name");
        goto drop;
    }
    zframe_t *service_frame = zmsg_pop (msg);
    bool valid = s_service_name (service_frame, name);
    zframe_destroy (&service_frame);
    if (!valid) {
        s_warn (self, "client %.20s: invalid service name, dropped", key);
        goto drop;
    }
    if (strncmp (name, MMI_PREFIX, strlen (MMI_PREFIX)) == 0) {
        s_mmi_request (self, sender_p, name, msg);
        return;
    }
    service_t *service = s_service_require (self, name);
    if (!service)
        goto drop;              //  table full, logged
    size_t size = zmsg_content_size (msg);
    if (zlistx_size (service->requests) >= self->max_queue) {
        self->dropped_queue_full++;
        s_warn (self, "service '%s' queue full (%zu): request dropped",
                name, self->max_queue);
        goto drop;
    }
    if (self->queued_bytes + size > self->max_queue_bytes) {
        self->dropped_queue_bytes++;
        s_warn (self, "queues hold %zu bytes (max %zu): request for '%s' "
                "dropped", self->queued_bytes, self->max_queue_bytes, name);
        s_service_collect (self, service);
        goto drop;
    }
    request_t *request = (request_t *) calloc (1, sizeof *request);
    if (!request || zmsg_pushmem (msg, "", 0) || zmsg_prepend (msg, sender_p)) {
        free (request);
        s_service_collect (self, service);
        goto drop;
    }
    request->msg = msg;
    request->size = size;
    request->expires = zclock_mono () + self->request_ttl_ms;
    if (!zlistx_add_end (service->requests, request)) {
        request->msg = NULL;
        s_request_destroy (&request);
        s_service_collect (self, service);
        goto drop;
    }
    self->queued++;
    self->queued_bytes += size;
    if (s_debug_on (self))
        ami_log_debug ("broker: client %.20s request for '%s' (%zu bytes)",
                    key, name, size);
    s_service_dispatch (self, service);
    return;
drop:
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Worker side                                                             */

/*  Refuse a worker message: log why, DISCONNECT the peer (RFC 7: valid but
    unexpected -> DISCONNECT; invalid -> drop and treat the peer as
    invalid), forget it if registered. */
static void
s_worker_reject (broker_t *self, zframe_t *sender, const char *key,
                 worker_t *worker, const char *why)
{
    s_warn (self, "worker %.20s: %s: DISCONNECT", key, why);
    if (worker)
        s_worker_remove (self, worker, true, why);
    else
        s_send_worker (self, sender, MDPW_DISCONNECT, "-");
}

/*  A worker message; msg is [command, ...] and is consumed. */
static void
s_worker_message (broker_t *self, zframe_t *sender, const char *key,
                  zmsg_t *msg)
{
    worker_t *worker = (worker_t *) zhashx_lookup (self->workers, key);
    zframe_t *command_frame = zmsg_pop (msg);
    size_t rest = zmsg_size (msg);
    if (!command_frame || zframe_size (command_frame) != 1) {
        zframe_destroy (&command_frame);
        s_worker_reject (self, sender, key, worker, "invalid command frame");
        goto done;
    }
    byte command = *zframe_data (command_frame);
    zframe_destroy (&command_frame);

    switch (command) {
    case MDPW_READY: {
        char name [AMI_BROKER_MAX_NAME + 1];
        if (worker)
            s_worker_reject (self, sender, key, worker, "second READY");
        else
        if (rest != 1 || !s_service_name (zmsg_first (msg), name))
            s_worker_reject (self, sender, key, NULL,
                             "READY without a valid service name");
        else
        if (strncmp (name, MMI_PREFIX, strlen (MMI_PREFIX)) == 0)
            s_worker_reject (self, sender, key, NULL,
                             "READY for the broker's mmi. namespace");
        else
        if (self->curve
        &&  strncmp (name, self->worker_prefix, strlen (self->worker_prefix)) != 0) {
            char why [AMI_BROKER_MAX_NAME + 64];
            snprintf (why, sizeof why, "READY for '%s', outside '%s'",
                      name, self->worker_prefix);
            s_worker_reject (self, sender, key, NULL, why);
        }
        else
            s_worker_register (self, sender, key, name);
        break;
    }
    case MDPW_REPLY: {
        if (!worker) {
            s_worker_reject (self, sender, key, NULL, "REPLY before READY");
            break;
        }
        zframe_t *client = zmsg_pop (msg);
        zframe_t *empty = zmsg_pop (msg);
        bool valid = rest >= 3
                  && zframe_size (client) > 0
                  && zframe_size (client) <= S_MAX_IDENTITY
                  && zframe_size (empty) == 0;
        zframe_destroy (&empty);
        if (!valid) {
            zframe_destroy (&client);
            s_worker_reject (self, sender, key, worker, "malformed REPLY");
            break;
        }
        if (!worker->client || !zframe_eq (client, worker->client)) {
            zframe_destroy (&client);
            s_worker_reject (self, sender, key, worker,
                             "REPLY for a request it was not given");
            break;
        }
        s_worker_refresh (self, worker);
        if (s_debug_on (self))
            ami_log_debug ("broker: reply from worker %.20s for '%s'",
                        key, worker->service->name);
        s_client_reply (self, &client, worker->service->name, msg);
        msg = NULL;
        s_worker_ready (self, worker);
        break;
    }
    case MDPW_HEARTBEAT:
        if (!worker)
            s_worker_reject (self, sender, key, NULL, "HEARTBEAT before READY");
        else
        if (rest != 0)
            s_worker_reject (self, sender, key, worker, "malformed HEARTBEAT");
        else
            s_worker_refresh (self, worker);
        break;
    case MDPW_DISCONNECT:
        if (rest != 0)
            s_worker_reject (self, sender, key, worker, "malformed DISCONNECT");
        else
        if (worker)
            s_worker_remove (self, worker, false, "it sent DISCONNECT");
        //  else: RFC 7 lets a worker DISCONNECT at any time; nothing to do
        break;
    case MDPW_REQUEST:
        s_worker_reject (self, sender, key, worker, "REQUEST from a worker");
        break;
    default:
        s_worker_reject (self, sender, key, worker, "unknown command");
        break;
    }
done:
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  The socket                                                              */

/*  Receive one message, frame by frame, keeping at most
    AMI_BROKER_MAX_FRAMES frames and S_MAX_MESSAGE bytes: the rest of an
    oversized message is read and discarded. Returns NULL for an oversized
    or unreadable message (logged). */
static zmsg_t *
s_recv (broker_t *self)
{
    zmsg_t *msg = zmsg_new ();
    size_t frames = 0, bytes = 0;
    bool oversized = false, more = true;
    while (more) {
        zframe_t *frame = zframe_recv (self->router);
        if (!frame) {
            zmsg_destroy (&msg);
            return NULL;        //  interrupted; nothing useful to log
        }
        more = zframe_more (frame);
        frames++;
        bytes += zframe_size (frame);
        if (!oversized && msg
        && frames <= AMI_BROKER_MAX_FRAMES && bytes <= S_MAX_MESSAGE)
            zmsg_append (msg, &frame);
        else {
            oversized = true;
            zframe_destroy (&frame);
        }
    }
    if (oversized || !msg) {
        char key [S_KEY_SIZE] = "?";
        if (msg && zmsg_first (msg))
            s_identity_key (zmsg_first (msg), key);
        s_warn (self, "peer %.20s: message of %zu frames, %zu bytes is over "
                "the limit (%d frames, %zu bytes), dropped", key, frames, bytes,
                AMI_BROKER_MAX_FRAMES, S_MAX_MESSAGE);
        zmsg_destroy (&msg);
    }
    return msg;
}

static void
s_handle_router (broker_t *self)
{
    zmsg_t *msg = s_recv (self);
    if (!msg)
        return;
    //  SEC-KEY-3: a revoked or expired key's live session is not acted on
    if (self->curve && !ami_auth_peer_allowed (NULL, zmsg_last (msg))) {
        zmsg_destroy (&msg);
        return;
    }
    //  Roles: decided now, while the content frames (and their metadata)
    //  are still in msg
    bool may_client = true, may_work = true;
    char role [AMI_CERT_META_MAX + 1] = "";
    if (self->curve) {
        const char *meta = ami_auth_peer_meta (zmsg_last (msg), AMI_CERT_META_ROLE);
        snprintf (role, sizeof role, "%s", meta ? meta : "");
        may_client = s_role_listed (self->client_roles, meta);
        may_work = s_role_listed (self->worker_roles, meta);
    }
    zframe_t *sender = zmsg_pop (msg);
    char key [S_KEY_SIZE];
    if (!sender || !s_identity_key (sender, key)) {
        s_warn (self, "message without a usable identity, dropped");
        goto done;
    }
    if (zmsg_size (msg) < 2) {
        s_warn (self, "peer %.20s: %zu frame(s) is too few for MDP, dropped",
                key, zmsg_size (msg));
        goto done;
    }
    zframe_t *empty = zmsg_pop (msg);
    zframe_t *header = zmsg_pop (msg);
    bool empty_ok = zframe_size (empty) == 0;
    bool client = zframe_streq (header, MDP_CLIENT);
    bool worker = zframe_streq (header, MDP_WORKER);
    zframe_destroy (&empty);
    zframe_destroy (&header);
    if (!empty_ok)
        s_warn (self, "peer %.20s: first frame is not empty, dropped", key);
    else
    if (client && !may_client)
        s_warn (self, "peer %.20s: role '%.64s' may not be a client, "
                "request dropped", key, role);
    else
    if (client) {
        s_client_message (self, &sender, key, msg);
        msg = NULL;
    }
    else
    if (worker && !may_work) {
        char why [128];
        snprintf (why, sizeof why, "role '%.64s' may not be a worker", role);
        s_worker_reject (self, sender, key,
                         (worker_t *) zhashx_lookup (self->workers, key), why);
    }
    else
    if (worker) {
        s_worker_message (self, sender, key, msg);
        msg = NULL;
    }
    else
        s_warn (self, "peer %.20s: unknown protocol header, dropped", key);
done:
    zframe_destroy (&sender);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Failed handshakes (SEC-AUD-2)                                           */

/*  A failed handshake on the ROUTER, already counted by the monitor:
    warned about (rate-limited: anyone who can open a TCP connection can
    cause one) with the peer's address. */
static void
s_handshake_failed (const char *name, int kind, uint32_t status, const char *peer,
                    void *arg)
{
    broker_t *self = (broker_t *) arg;
    char line [256];
    s_warn (self, "%s", ami_monitor_describe (name, kind, status, peer, line, sizeof line));
}

static void
s_watch (broker_t *self)
{
    if (self->watch)
        ami_monitor_drain (self->watch, s_handshake_failed, self);
}


/* ---------------------------------------------------------------------- */
/*  Timer                                                                   */

static void
s_tick (broker_t *self)
{
    int64_t now = zclock_mono ();

    //  Expire silent workers: by_expiry is sorted, stop at the first live
    worker_t *worker = (worker_t *) zlistx_first (self->by_expiry);
    while (worker && worker->expiry <= now) {
        s_warn (self, "worker %.20s (%s) silent for %d ms: expired",
                worker->key, worker->service->name,
                self->heartbeat_ms * self->liveness);
        s_worker_remove (self, worker, true, "expired");
        worker = (worker_t *) zlistx_first (self->by_expiry);
    }

    //  Expire old requests; collect emptied services after the walk, as
    //  deleting from a zhashx while iterating it is not allowed
    zlistx_t *emptied = NULL;
    service_t *service = (service_t *) zhashx_first (self->services);
    while (service) {
        size_t expired = 0;
        request_t *request = (request_t *) zlistx_first (service->requests);
        while (request && request->expires <= now) {
            self->queued--;
            self->queued_bytes -= request->size;
            zlistx_delete (service->requests, zlistx_cursor (service->requests));
            expired++;
            request = (request_t *) zlistx_first (service->requests);
        }
        if (expired) {
            self->expired += expired;
            s_warn (self, "service '%s': %zu request(s) waited %d ms for a "
                    "worker, dropped", service->name, expired,
                    self->request_ttl_ms);
            if (service->workers == 0 && zlistx_size (service->requests) == 0) {
                if (!emptied)
                    emptied = zlistx_new ();
                if (emptied)
                    zlistx_add_end (emptied, service);
            }
        }
        service = (service_t *) zhashx_next (self->services);
    }
    if (emptied) {
        service = (service_t *) zlistx_first (emptied);
        while (service) {
            s_service_collect (self, service);
            service = (service_t *) zlistx_next (emptied);
        }
        zlistx_destroy (&emptied);
    }

    //  Heartbeat every worker (RFC 7: both peers MUST heartbeat)
    worker = (worker_t *) zlistx_first (self->by_expiry);
    while (worker) {
        s_send_worker (self, worker->address, MDPW_HEARTBEAT, worker->service->name);
        worker = (worker_t *) zlistx_next (self->by_expiry);
    }
}


/* ---------------------------------------------------------------------- */
/*  Pipe                                                                    */

static void
s_send_status (broker_t *self)
{
    zmsg_t *reply = zmsg_new ();
    zmsg_addstrf (reply, "%zu", zhashx_size (self->services));
    zmsg_addstrf (reply, "%zu", zhashx_size (self->workers));
    zmsg_addstrf (reply, "%zu", self->queued);
    zlistx_t *names = ami_keys_sorted (self->services);
    if (names) {
        const char *name = (const char *) zlistx_first (names);
        while (name) {
            service_t *service = (service_t *) zhashx_lookup (self->services, name);
            zmsg_addstrf (reply, "%s %zu %zu", name, service->workers,
                          zlistx_size (service->requests));
            name = (const char *) zlistx_next (names);
        }
        zlistx_destroy (&names);
    }
    zmsg_send (&reply, self->pipe);
    zmsg_destroy (&reply);
}

/*  One frame "name value" per statistic (see the header). */
static void
s_send_stats (broker_t *self)
{
    s_watch (self);                     //  counts as of now
    zmsg_t *reply = zmsg_new ();
    if (!reply)
        return;
    ami_stat_t stats [AMI_MAX_STATS];
    uint32_t count = 0;
    s_stats (self, stats, &count);
    for (uint32_t i = 0; i < count; i++)
        zmsg_addstrf (reply, "%s %" PRIu64, stats [i].name, stats [i].value);
    zmsg_send (&reply, self->pipe);
}

static void
s_handle_pipe (broker_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        self->terminated = true;        //  interrupted
        return;
    }
    char *command = zmsg_popstr (msg);
    if (!command)
        ami_log_error ("broker: empty pipe command");
    else
    if (streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "ENDPOINT"))
        zstr_send (self->pipe, self->endpoint);
    else
    if (streq (command, "STATUS"))
        s_send_status (self);
    else
    if (streq (command, "STATS"))
        s_send_stats (self);
    else
    if (streq (command, "VERBOSE"))
        self->verbose = true;
    else
        ami_log_error ("broker: unknown pipe command '%s'", command);
    zstr_free (&command);
    zmsg_destroy (&msg);
}


/* ---------------------------------------------------------------------- */
/*  Set-up and the actor                                                    */

/*  Apply defaults; false for an invalid config (logged). */
static bool
s_configure (broker_t *self, const ami_broker_config_t *config)
{
    if (!config || !config->endpoint || !*config->endpoint) {
        ami_log_error ("broker: no endpoint configured");
        return false;
    }
    if (config->heartbeat_ms < 0 || config->liveness < 0
    ||  config->request_ttl_ms < 0) {
        ami_log_error ("broker: negative heartbeat, liveness or request TTL");
        return false;
    }
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms
                                              : AMI_BROKER_HEARTBEAT_MS;
    self->liveness = config->liveness ? config->liveness : AMI_BROKER_LIVENESS;
    self->request_ttl_ms = config->request_ttl_ms ? config->request_ttl_ms
                                                  : AMI_BROKER_REQUEST_TTL_MS;
    self->max_queue = config->max_queue ? config->max_queue
                                        : AMI_BROKER_MAX_QUEUE;
    self->max_queue_bytes = config->max_queue_bytes ? config->max_queue_bytes
                                                    : AMI_BROKER_MAX_QUEUE_BYTES;
    self->max_services = config->max_services ? config->max_services
                                              : AMI_BROKER_MAX_SERVICES;
    self->max_workers = config->max_workers ? config->max_workers
                                            : AMI_BROKER_MAX_WORKERS;
    self->sndhwm = config->sndhwm ? config->sndhwm : AMI_BROKER_SNDHWM;
    if (self->sndhwm > INT_MAX) {
        ami_log_error ("broker: sndhwm %zu is too large", self->sndhwm);
        return false;
    }
    self->rcvhwm = config->rcvhwm ? config->rcvhwm : AMI_BROKER_RCVHWM;
    if (self->rcvhwm > INT_MAX) {
        ami_log_error ("broker: rcvhwm %zu is too large", self->rcvhwm);
        return false;
    }
    const char *node_id = config->node_id ? config->node_id : "broker";
    if (!ami_id_valid (node_id)) {
        ami_log_error ("broker: node id '%s' is not a valid id", node_id);
        return false;
    }
    snprintf (self->node_id, sizeof self->node_id, "%s", node_id);
    self->client_roles = s_role_list (config->client_roles,
                                      AMI_BROKER_CLIENT_ROLES, "client_roles");
    self->worker_roles = s_role_list (config->worker_roles,
                                      AMI_BROKER_WORKER_ROLES, "worker_roles");
    self->worker_prefix = strdup (config->worker_prefix ? config->worker_prefix
                                                        : AMI_BROKER_WORKER_PREFIX);
    if (!self->client_roles || !self->worker_roles || !self->worker_prefix)
        return false;           //  logged, or out of memory
    //  heartbeat * liveness must not overflow an int of milliseconds
    if ((int64_t) self->heartbeat_ms * self->liveness > INT32_MAX) {
        ami_log_error ("broker: heartbeat_ms * liveness is too large");
        return false;
    }
    return true;
}

static bool
s_bind (broker_t *self, const ami_broker_config_t *config)
{
    self->router = zsock_new (ZMQ_ROUTER);
    if (!self->router) {
        ami_log_error ("broker: cannot create ROUTER socket");
        return false;
    }
    zsock_set_linger (self->router, 0);         //  never block shutdown
    zsock_set_maxmsgsize (self->router, AMI_MAX_FRAME);
    //  No silent drops (issue 6): a ROUTER drops a message for a peer that
    //  has gone or is at its HWM and reports success; ROUTER_MANDATORY
    //  makes that send fail instead, so s_send counts it and the caller
    //  acts (REQUEST kept queued, REPLY counted as dropped). Mandatory
    //  sends to a full peer would BLOCK: every send is ZMQ_DONTWAIT and
    //  sndtimeo is 0 as well, so no peer can stall the broker.
    zsock_set_router_mandatory (self->router, 1);
    zsock_set_sndtimeo (self->router, 0);
    //  Per-peer send queue: see AMI_BROKER_SNDHWM for the value's reason
    zsock_set_sndhwm (self->router, (int) self->sndhwm);
    //  Per-peer receive queue: see AMI_BROKER_RCVHWM (a full one pushes
    //  back through TCP; nothing is dropped)
    zsock_set_rcvhwm (self->router, (int) self->rcvhwm);
    //  CURVE server + ZAP domain; refuses when no ZAP handler runs
    self->curve = config->server_cert != NULL;
    if (config->server_cert
    &&  ami_auth_server (self->router, config->server_cert) != AMI_OK) {
        ami_log_error ("broker: cannot make %s a CURVE server (is ami_auth "
                    "running? does the certificate hold its secret key?)",
                    config->endpoint);
        return false;
    }
    if (zsock_bind (self->router, "%s", config->endpoint) == -1) {
        ami_log_error ("broker: cannot bind %s: %s", config->endpoint,
                    zmq_strerror (zmq_errno ()));
        return false;
    }
    self->endpoint = zsock_last_endpoint (self->router);
    if (!self->endpoint)
        self->endpoint = strdup (config->endpoint);
    if (!self->endpoint)
        return false;
    //  SEC-AUD-2: failed handshakes on the one server socket
    zsock_t *servers [] = { self->router };
    const char *names [] = { "router" };
    self->watch = ami_monitor_new (servers, names, 1);
    return self->watch != NULL;         //  logged
}

static void
s_broker_destroy (broker_t *self)
{
    //  Workers first: they point at services
    zlistx_destroy (&self->by_expiry);
    zhashx_destroy (&self->workers);
    zhashx_destroy (&self->services);
    ami_monitor_destroy (&self->watch);         //  before its socket
    zsock_destroy (&self->router);
    zstr_free (&self->endpoint);
    zstr_free (&self->client_roles);
    zstr_free (&self->worker_roles);
    zstr_free (&self->worker_prefix);
    ami_msg_destroy (&self->health);
}

void
ami_broker_actor (zsock_t *pipe, void *args)
{
    const ami_broker_config_t *config = (const ami_broker_config_t *) args;
    zsock_signal (pipe, 0);             //  CZMQ: signal first (ami_service.h)
    broker_t self_data;
    broker_t *self = &self_data;
    memset (self, 0, sizeof *self);
    self->pipe = pipe;
    self->services = zhashx_new ();
    self->workers = zhashx_new ();
    self->by_expiry = zlistx_new ();
    self->health = ami_msg_new ();
    bool ok = self->services && self->workers && self->by_expiry && self->health
           && s_configure (self, config) && s_bind (self, config);
    if (!ok) {
        s_broker_destroy (self);
        ami_actor_failed (pipe);
        return;
    }
    zhashx_set_destructor (self->services, s_service_destructor);
    zhashx_set_destructor (self->workers, s_worker_destructor);
    if (s_debug_on (self))
        ami_log_debug ("broker: bound to %s%s", self->endpoint,
                    config->server_cert ? " (CURVE)" : " (no CURVE)");
    self->started = zclock_mono ();
    //  config is the caller's and may be gone once we report READY
    ami_actor_ready (pipe);

    zpoller_t *poller = zpoller_new (pipe, self->router,
                                     ami_monitor_actor (self->watch), NULL);
    int64_t next_tick = zclock_mono () + self->heartbeat_ms;
    while (poller && !self->terminated) {
        int64_t now = zclock_mono ();
        int timeout = next_tick > now ? (int) (next_tick - now) : 0;
        void *which = zpoller_wait (poller, timeout);
        if (which == pipe)
            s_handle_pipe (self);
        else
        if (which == self->router) {
            //  Drain a bounded batch per wake-up: fewer poll calls under
            //  load, while the pipe and the tick still get their turn
            int batch = S_BATCH;
            do
                s_handle_router (self);
            while (--batch > 0 && (zsock_events (self->router) & ZMQ_POLLIN));
        }
        else
        if (!which && zpoller_terminated (poller))
            break;
        //  Every wake-up, not only when the poller names it: a busy
        //  ROUTER must not hold back the handshake reports
        s_watch (self);
        if (zclock_mono () >= next_tick) {
            s_tick (self);
            next_tick = zclock_mono () + self->heartbeat_ms;
        }
    }
    zpoller_destroy (&poller);
    s_broker_destroy (self);
}

zactor_t *
ami_broker_new (const ami_broker_config_t *config)
{
    return config ? ami_actor_new (ami_broker_actor, (void *) config) : NULL;
}


/* ---------------------------------------------------------------------- */
/*  Configuration keys (the ami-broker service; see "Configuration")        */

/*  Durations are kept in an int of milliseconds: 1 h is far past any
    useful heartbeat or request lifetime (the MDMS gives up on a read in
    seconds), and well inside INT_MAX. */
#define S_MAX_DURATION_MS   3600000
/*  Table and queue bounds up to 1 000 000: 100x the default tables and
    1000x the default queue, past any utility's aggregator count, and a
    table of a million entries still fits a broker's host (~100s of MiB);
    a larger value is a typo. */
#define S_MAX_COUNT         1000000
/*  64 GiB over all queues: 1000x the default, more memory than a broker's
    host should give to requests nobody serves; a larger value is a typo.
    (At least 1 MiB, from ami_config_size: one maximal request fits.) */
#define S_MAX_QUEUE_BYTES   ((uint64_t) 64 << 30)

/*  A duration key in [1 ms, S_MAX_DURATION_MS], into an int. */
static int
s_config_duration (ami_config_t *config, const char *key, int default_ms, int *out)
{
    int64_t value = 0;
    if (ami_config_duration_ms (config, key, default_ms, &value) != AMI_OK)
        return AMI_E_CONFIG;            //  logged
    if (value < 1 || value > S_MAX_DURATION_MS) {
        ami_log_error ("%s: %s must be between 1 ms and 1 h",
                       ami_config_origin (config), key);
        return AMI_E_CONFIG;
    }
    *out = (int) value;
    return AMI_OK;
}

/*  A count key in [1, max], into a size_t. */
static int
s_config_count (ami_config_t *config, const char *key, int64_t default_value,
                int64_t max, size_t *out)
{
    int64_t value = 0;
    if (ami_config_int (config, key, default_value, 1, max, &value) != AMI_OK)
        return AMI_E_CONFIG;            //  logged
    *out = (size_t) value;
    return AMI_OK;
}

int
ami_broker_config_read (ami_config_t *config, ami_broker_config_t *broker)
{
    assert (config);
    assert (broker);
    int64_t liveness = 0;
    size_t queue_bytes = 0;
    if (ami_config_str (config, "broker/endpoint", "tcp://127.0.0.1:7000",
                        &broker->endpoint)
    ||  s_config_duration (config, "broker/heartbeat", AMI_BROKER_HEARTBEAT_MS,
                           &broker->heartbeat_ms)
    ||  ami_config_int (config, "broker/liveness", AMI_BROKER_LIVENESS, 1, 100,
                        &liveness)
    ||  s_config_count (config, "broker/max-queue", AMI_BROKER_MAX_QUEUE,
                        S_MAX_COUNT, &broker->max_queue)
    ||  ami_config_size (config, "broker/max-queue-bytes",
                         AMI_BROKER_MAX_QUEUE_BYTES, &queue_bytes)
    ||  s_config_duration (config, "broker/request-ttl", AMI_BROKER_REQUEST_TTL_MS,
                           &broker->request_ttl_ms)
    ||  s_config_count (config, "broker/max-services", AMI_BROKER_MAX_SERVICES,
                        S_MAX_COUNT, &broker->max_services)
    ||  s_config_count (config, "broker/max-workers", AMI_BROKER_MAX_WORKERS,
                        S_MAX_COUNT, &broker->max_workers))
        return AMI_E_CONFIG;            //  logged
    if ((uint64_t) queue_bytes > S_MAX_QUEUE_BYTES) {
        ami_log_error ("%s: broker/max-queue-bytes must be at most 64G",
                       ami_config_origin (config));
        return AMI_E_CONFIG;
    }
    broker->liveness = (int) liveness;
    broker->max_queue_bytes = queue_bytes;
    return AMI_OK;
}
