/*  ami_monitor.c - failed CURVE handshakes on server sockets (see
    ami_monitor.h).

    Design: libzmq socket monitors (zmq_socket_monitor, version 1 event
    format: frame 1 = u16 event + u32 value in host order, frame 2 = the
    endpoint), read over inproc PAIRs by a watcher actor (CZMQ actor
    pattern: the owner talks to it only through its pipe) so that the
    peer's address is asked for the moment a connection is accepted,
    whatever the owner is busy with. Per socket, a table of live
    connections (descriptor -> peer address) and a FIFO of failed
    handshakes waiting for their connection's DISCONNECTED attribute each
    failure to an address; each attributed failure goes up the pipe as one
    report: [name][kind][status][peer].
*/
#include "ami_monitor.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "ami_log.h"

/*  Failed handshakes waiting for a DISCONNECTED at once, per socket: a
    burst of concurrent failures; beyond it the oldest is reported without
    an address. */
#define S_WAITING       32
/*  "[ipv6]:port" */
#define S_ADDR_MAX      64
#define S_ENDPOINT_MAX  80

typedef struct {
    int fd;                             /* -1: free */
    uint64_t order;                     /* accept order, for eviction */
    char addr [S_ADDR_MAX];
} conn_t;

typedef struct {
    int kind;
    uint32_t status;
    int64_t since;                      /* mono */
} waiting_t;

/*  One watched socket, as the watcher thread sees it. */
typedef struct {
    zsock_t *pipe;                      /* PAIR fed by the monitor */
    char name [AMI_MONITOR_NAME_MAX];
    conn_t conns [AMI_MONITOR_CONNS];
    uint64_t accepted;                  /* order counter */
    waiting_t waiting [S_WAITING];      /* FIFO */
    size_t wait_head;
    size_t wait_count;
} watched_t;

/*  What the watcher is started with (copied by it before it signals). */
typedef struct {
    size_t count;
    char names [AMI_MONITOR_SOCKETS][AMI_MONITOR_NAME_MAX];
    char endpoints [AMI_MONITOR_SOCKETS][S_ENDPOINT_MAX];
} watch_args_t;

struct _ami_monitor_t {
    void *servers [AMI_MONITOR_SOCKETS];   /* libzmq handles, borrowed */
    size_t count;
    zactor_t *watcher;
    uint64_t refused;
    uint64_t failed;
};


/* ---------------------------------------------------------------------- */
/*  The watcher thread                                                      */

static conn_t *
s_conn_find (watched_t *w, int fd)
{
    for (size_t i = 0; i < AMI_MONITOR_CONNS; i++)
        if (w->conns [i].fd == fd)
            return &w->conns [i];
    return NULL;
}

/*  A new connection: its peer's address, now, while the descriptor is
    (most likely) still the connection's. */
static void
s_accepted (watched_t *w, int fd)
{
    conn_t *slot = s_conn_find (w, fd);            //  a reused descriptor
    if (!slot)
        slot = s_conn_find (w, -1);
    if (!slot) {
        //  Full: forget the oldest connection
        slot = &w->conns [0];
        for (size_t i = 1; i < AMI_MONITOR_CONNS; i++)
            if (w->conns [i].order < slot->order)
                slot = &w->conns [i];
    }
    slot->fd = fd;
    slot->order = ++w->accepted;
    snprintf (slot->addr, sizeof slot->addr, "?");
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getpeername (fd, (struct sockaddr *) &sa, &len) != 0)
        return;
    char ip [INET6_ADDRSTRLEN];
    if (sa.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *) &sa;
        if (inet_ntop (AF_INET, &in->sin_addr, ip, sizeof ip))
            snprintf (slot->addr, sizeof slot->addr, "%s:%u", ip, ntohs (in->sin_port));
    }
    else
    if (sa.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &sa;
        if (inet_ntop (AF_INET6, &in6->sin6_addr, ip, sizeof ip))
            snprintf (slot->addr, sizeof slot->addr, "[%s]:%u", ip, ntohs (in6->sin6_port));
    }
}

/*  Send the oldest waiting failure up the pipe, with peer. */
static void
s_report_oldest (watched_t *w, zsock_t *pipe, const char *peer)
{
    waiting_t f = w->waiting [w->wait_head];
    w->wait_head = (w->wait_head + 1) % S_WAITING;
    w->wait_count--;
    zmsg_t *report = zmsg_new ();
    zmsg_addstr (report, w->name);
    zmsg_addstrf (report, "%d", f.kind);
    zmsg_addstrf (report, "%u", f.status);
    zmsg_addstr (report, peer);
    zmsg_send (&report, pipe);
}

static void
s_failed (watched_t *w, zsock_t *pipe, int kind, uint32_t status)
{
    if (w->wait_count == S_WAITING)
        s_report_oldest (w, pipe, "?");
    waiting_t *f = &w->waiting [(w->wait_head + w->wait_count) % S_WAITING];
    f->kind = kind;
    f->status = status;
    f->since = zclock_mono ();
    w->wait_count++;
}

static void
s_disconnected (watched_t *w, zsock_t *pipe, int fd)
{
    conn_t *conn = s_conn_find (w, fd);
    if (w->wait_count)
        s_report_oldest (w, pipe, conn ? conn->addr : "?");
    if (conn)
        conn->fd = -1;
}

/*  Every event waiting on one monitor. */
static void
s_events (watched_t *w, zsock_t *pipe)
{
    while (zsock_events (w->pipe) & ZMQ_POLLIN) {
        zmsg_t *event = zmsg_recv (w->pipe);
        if (!event)
            break;
        zframe_t *head = zmsg_first (event);
        if (head && zframe_size (head) == 6) {
            uint16_t id;
            uint32_t value;
            memcpy (&id, zframe_data (head), sizeof id);
            memcpy (&value, zframe_data (head) + 2, sizeof value);
            switch (id) {
                case ZMQ_EVENT_ACCEPTED:
                    s_accepted (w, (int) value);
                    break;
                case ZMQ_EVENT_DISCONNECTED:
                    s_disconnected (w, pipe, (int) value);
                    break;
                case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
                    s_failed (w, pipe, AMI_MONITOR_HANDSHAKE_REFUSED, value);
                    break;
                case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
                case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                    s_failed (w, pipe, AMI_MONITOR_HANDSHAKE_FAILED, value);
                    break;
                default:
                    break;
            }
        }
        zmsg_destroy (&event);
    }
}

static void
s_watcher (zsock_t *pipe, void *args)
{
    const watch_args_t *a = (const watch_args_t *) args;
    size_t count = a->count;
    watched_t *watched = (watched_t *) calloc (count, sizeof *watched);
    zpoller_t *poller = zpoller_new (pipe, NULL);
    bool ok = watched && poller;
    for (size_t i = 0; ok && i < count; i++) {
        watched_t *w = &watched [i];
        snprintf (w->name, sizeof w->name, "%s", a->names [i]);
        for (size_t k = 0; k < AMI_MONITOR_CONNS; k++)
            w->conns [k].fd = -1;
        w->pipe = zsock_new (ZMQ_PAIR);
        ok = w->pipe && zsock_connect (w->pipe, "%s", a->endpoints [i]) == 0
          && zpoller_add (poller, w->pipe) == 0;
        if (w->pipe)
            zsock_set_linger (w->pipe, 0);
    }
    //  CZMQ's start-up handshake (zactor_new waits for it), then whether
    //  the monitors are connected
    zsock_signal (pipe, 0);
    zstr_send (pipe, ok ? "OK" : "FAILED");
    while (ok) {
        bool waiting = false;
        for (size_t i = 0; i < count; i++)
            waiting |= watched [i].wait_count > 0;
        void *which = zpoller_wait (poller, waiting ? AMI_MONITOR_ATTRIBUTE_MS / 2 : -1);
        if (which == pipe) {
            zmsg_t *msg = zmsg_recv (pipe);
            char *command = msg ? zmsg_popstr (msg) : NULL;
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            zmsg_destroy (&msg);
            if (term)
                break;
        }
        else
        if (!which && zpoller_terminated (poller))
            break;
        int64_t now = zclock_mono ();
        for (size_t i = 0; i < count; i++) {
            watched_t *w = &watched [i];
            s_events (w, pipe);
            //  Failures whose connection never reported its end
            while (w->wait_count
               &&  now - w->waiting [w->wait_head].since >= AMI_MONITOR_ATTRIBUTE_MS)
                s_report_oldest (w, pipe, "?");
        }
    }
    for (size_t i = 0; watched && i < count; i++)
        zsock_destroy (&watched [i].pipe);
    free (watched);
    zpoller_destroy (&poller);
}


/* ---------------------------------------------------------------------- */
/*  The owner's side                                                        */

/*  Monitor endpoints made so far, process-wide (see ami_monitor_new). */
static uint64_t s_endpoints = 0;

ami_monitor_t *
ami_monitor_new (zsock_t **servers, const char **names, size_t count)
{
    assert (servers && names);
    assert (count >= 1 && count <= AMI_MONITOR_SOCKETS);
    ami_monitor_t *self = (ami_monitor_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    watch_args_t args;
    memset (&args, 0, sizeof args);
    args.count = count;
    int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED
               | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
               | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;
    for (size_t i = 0; i < count; i++) {
        snprintf (args.names [i], sizeof args.names [i], "%s", names [i]);
        //  One inproc endpoint per socket, never used before in this
        //  process: libzmq unbinds a stopped monitor's endpoint
        //  asynchronously, so a name made from an address (of a monitor
        //  freed a moment ago) could still be taken
        snprintf (args.endpoints [i], sizeof args.endpoints [i],
                  "inproc://ami-monitor-%" PRIu64,
                  __atomic_fetch_add (&s_endpoints, 1, __ATOMIC_RELAXED));
        void *server = zsock_resolve (servers [i]);
        if (zmq_socket_monitor (server, args.endpoints [i], events) != 0) {
            ami_log_error ("monitor: cannot monitor the %s socket: %s", args.names [i],
                           zmq_strerror (zmq_errno ()));
            ami_monitor_destroy (&self);
            return NULL;
        }
        self->servers [self->count++] = server;
    }
    self->watcher = zactor_new (s_watcher, &args);
    char *started = self->watcher ? zstr_recv (self->watcher) : NULL;
    bool ok = started && streq (started, "OK");
    zstr_free (&started);
    if (!ok) {
        ami_log_error ("monitor: the handshake watcher did not start");
        ami_monitor_destroy (&self);
        return NULL;
    }
    return self;
}

void
ami_monitor_destroy (ami_monitor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ami_monitor_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        zmq_socket_monitor (self->servers [i], NULL, 0);
    zactor_destroy (&self->watcher);
    free (self);
    *self_p = NULL;
}

zactor_t *
ami_monitor_actor (ami_monitor_t *self)
{
    assert (self);
    return self->watcher;
}

void
ami_monitor_drain (ami_monitor_t *self, ami_monitor_fn *fn, void *arg)
{
    assert (self);
    while (zsock_events (self->watcher) & ZMQ_POLLIN) {
        zmsg_t *report = zmsg_recv (self->watcher);
        if (!report)
            break;
        char *name = zmsg_popstr (report);
        char *kind = zmsg_popstr (report);
        char *status = zmsg_popstr (report);
        char *peer = zmsg_popstr (report);
        if (name && kind && status && peer) {
            int k = atoi (kind);
            if (k == AMI_MONITOR_HANDSHAKE_REFUSED)
                self->refused++;
            else
                self->failed++;
            if (fn)
                fn (name, k, (uint32_t) strtoul (status, NULL, 10), peer, arg);
        }
        zstr_free (&name);
        zstr_free (&kind);
        zstr_free (&status);
        zstr_free (&peer);
        zmsg_destroy (&report);
    }
}

uint64_t
ami_monitor_refused (ami_monitor_t *self)
{
    assert (self);
    return self->refused;
}

uint64_t
ami_monitor_failed (ami_monitor_t *self)
{
    assert (self);
    return self->failed;
}

char *
ami_monitor_describe (const char *name, int kind, uint32_t status, const char *peer,
                      char *out, size_t cap)
{
    if (kind == AMI_MONITOR_HANDSHAKE_REFUSED)
        snprintf (out, cap, "%s: CURVE handshake from %s refused: key not in the allow-list "
                  "(ZAP status %u)", name, peer, status);
    else
        snprintf (out, cap, "%s: handshake from %s failed: not a CURVE client of this server "
                  "(protocol error 0x%x)", name, peer, status);
    return out;
}
