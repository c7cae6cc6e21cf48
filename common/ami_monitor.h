/*  ami_monitor.h - failed CURVE handshakes on server (bound) sockets
    (SEC-AUD-2), seen through libzmq socket monitors.

    This header is the manual.

    Why. zauth (the process's ZAP handler, ami_auth.h) refuses unlisted and
    revoked keys silently: the client just never gets a session, and
    nothing on the server says so. libzmq reports every handshake outcome
    to a socket monitor, so a service watches each of its CURVE server
    sockets with one ami_monitor, and counts and logs every failure it
    reports (the MDMS also publishes them; each service decides in its
    callback).

    What is reported, per socket:
      AMI_MONITOR_HANDSHAKE_REFUSED  ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: ZAP
                said no (status 400: the client's key is not in the
                allow-list, or it was revoked; 500: the ZAP handler failed)
      AMI_MONITOR_HANDSHAKE_FAILED   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL and
                _NO_DETAIL: the peer is not a CurveZMQ client of this
                server (plaintext NULL mechanism, the wrong server key,
                garbage)

    The peer's address. libzmq 4.3.4's monitor (event format version 1, the
    only one in Debian's build: zmq_socket_monitor_versioned is a draft
    API) gives the LISTENING endpoint with a handshake event on a bound
    socket, not the peer's, and no file descriptor. Two events carry the
    connection's descriptor: ZMQ_EVENT_ACCEPTED (a new connection) and
    ZMQ_EVENT_DISCONNECTED (it is gone). So:
      - a watcher thread of its own (a CZMQ actor, so that it is never
        held up by the owner's work) reads the monitors; on ACCEPTED(fd) it
        asks getpeername (fd) at once and remembers fd -> "ip:port";
      - a failed handshake is attributed to the connection whose
        DISCONNECTED(fd) comes next on that socket (libzmq closes a failed
        connection right after the failure event, from the same I/O
        thread; several failures waiting at once are matched with the
        DISCONNECTEDs in order) and reported with its address;
      - a failure whose DISCONNECTED has not come within
        AMI_MONITOR_ATTRIBUTE_MS is reported with peer "?".
    Limits, by construction: a connection that fails within microseconds
    (a plaintext peer: no crypto, no ZAP) may be closed before the watcher
    handles its ACCEPTED: then its address is "?", or, if its descriptor
    was already reused by a newer connection, that one's. At most
    AMI_MONITOR_CONNS connections per socket are remembered (the oldest
    are forgotten: "?"). A flood from one address is named right. Only
    bound sockets are meant: a connecting socket has no ACCEPTED, so every
    failure on it would be reported with peer "?" (its peer is the
    endpoint it connected to, which the owner knows anyway).

    Use (the owner is one actor thread that owns the server sockets):

        zsock_t *servers [] = { self->api, self->ingest };
        const char *names [] = { "api", "ingest" };
        self->watch = ami_monitor_new (servers, names, 2);  //  after binds
        ...poll ami_monitor_actor (self->watch) with the other sockets;
        on input (or on every wake-up) call
        ami_monitor_drain (self->watch, s_handshake_failed, self);
        ...stats: ami_monitor_refused (self->watch), ami_monitor_failed
        ami_monitor_destroy (&self->watch);                 //  before the sockets

    Counting is the monitor's: every report drained is counted, whether or
    not a callback is given; the callback only logs (rate-limit it: anyone
    who can open a TCP connection can cause a failure).

    Threads. The owner calls every function from the thread that owns the
    server sockets (zmq_socket_monitor is called on them there); the
    watcher thread touches only its own monitor sockets. Destroy the
    monitor BEFORE the server sockets. Several monitors may run in one
    process (each uses inproc endpoints no other monitor ever had).
*/
#ifndef AMI_MONITOR_H_INCLUDED
#define AMI_MONITOR_H_INCLUDED

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_monitor_t ami_monitor_t;

/*  Server sockets one monitor watches at most (the MDMS has three, the
    relays one). */
#define AMI_MONITOR_SOCKETS         4
/*  Connections remembered per socket (address by descriptor): the
    clients of one bound socket that are being accepted or are live at
    once - operators, head ends, aggregators, fleets - are tens to
    hundreds; each entry is ~80 bytes. */
#define AMI_MONITOR_CONNS           256
/*  How long a failed handshake waits for its connection's DISCONNECTED:
    libzmq sends it microseconds later; 100 ms covers a busy I/O thread
    without holding a report back noticeably. */
#define AMI_MONITOR_ATTRIBUTE_MS    100
/*  Socket names are kept to this many bytes, NUL included (so 15
    characters: "api", "fleets", "aggregators"). */
#define AMI_MONITOR_NAME_MAX        16

/*  Kinds of failure reported. */
#define AMI_MONITOR_HANDSHAKE_REFUSED   1   /* ZAP refused the key */
#define AMI_MONITOR_HANDSHAKE_FAILED    2   /* not a CURVE client of ours */

/*  Called once per failed handshake, from ami_monitor_drain (so in the
    owner's thread): the socket's name as given to ami_monitor_new, kind
    (above), status (the ZAP status code for REFUSED, libzmq's
    ZMQ_PROTOCOL_ERROR_* for FAILED), the peer's address ("ip:port" or
    "[ipv6]:port", or "?" when unknown), and the caller's arg. The strings
    are valid only during the call. */
typedef void (ami_monitor_fn) (const char *name, int kind, uint32_t status,
                               const char *peer, void *arg);

/*  Start watching count (1..AMI_MONITOR_SOCKETS) server sockets of this
    thread, servers [i] labelled names [i] (at most AMI_MONITOR_NAME_MAX -
    1 characters kept). Call after the binds. A socket may have only one
    monitor (libzmq): do not watch a socket the owner monitors itself.
    Returns the monitor, or NULL (logged) if libzmq refuses or the watcher
    cannot start; then no socket is left monitored. */
ami_monitor_t *
    ami_monitor_new (zsock_t **servers, const char **names, size_t count);

/*  Stop watching and free; nulls *self_p; NULL or *self_p NULL is a
    no-op. Call before destroying the server sockets. */
void
    ami_monitor_destroy (ami_monitor_t **self_p);

/*  The socket to poll for reports (the watcher actor; belongs to the
    monitor: do not destroy it, do not read it other than through
    ami_monitor_drain). */
zactor_t *
    ami_monitor_actor (ami_monitor_t *self);

/*  The one wording of a failed handshake for a service's log, into
    out[cap] (always terminated): "NAME: CURVE handshake from PEER
    refused: key not in the allow-list (ZAP status N)" or "NAME:
    handshake from PEER failed: not a CURVE client of this server
    (protocol error 0xN)". Returns out. */
char *
    ami_monitor_describe (const char *name, int kind, uint32_t status, const char *peer,
                          char *out, size_t cap);

/*  Take every report waiting (never blocks), count it, and call fn (if not
    NULL) for it. */
void
    ami_monitor_drain (ami_monitor_t *self, ami_monitor_fn *fn, void *arg);

/*  Failed handshakes drained since start, all sockets together: refused
    by ZAP, failed otherwise. */
uint64_t
    ami_monitor_refused (ami_monitor_t *self);
uint64_t
    ami_monitor_failed (ami_monitor_t *self);

#ifdef __cplusplus
}
#endif

#endif
