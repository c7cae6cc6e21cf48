/*  ami_mdms_monitor.h - refused CURVE handshakes on server sockets
    (SEC-AUD-2), seen through libzmq socket monitors.

    This header is the manual.

    Why. zauth (the process's ZAP handler, ami_auth.h) refuses unlisted and
    revoked keys silently: the client just never gets a session, and
    nothing on the server says so. libzmq reports every handshake outcome
    to a socket monitor, so the MDMS watches each of its CURVE server
    sockets (api, ingest, events) with this class, and counts, logs and
    publishes every failure it reports.

    What is reported, per socket:
      AMI_MDMS_HANDSHAKE_REFUSED  ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: ZAP said
                no (status 400: the client's key is not in the allow-list,
                or it was revoked; 500: the ZAP handler failed)
      AMI_MDMS_HANDSHAKE_FAILED   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL and
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
        held up by the MDMS's work) reads the monitors; on ACCEPTED(fd) it
        asks getpeername (fd) at once and remembers fd -> "ip:port";
      - a failed handshake is attributed to the connection whose
        DISCONNECTED(fd) comes next on that socket (libzmq closes a failed
        connection right after the failure event, from the same I/O
        thread; several failures waiting at once are matched with the
        DISCONNECTEDs in order) and reported with its address;
      - a failure whose DISCONNECTED has not come within
        AMI_MDMS_MONITOR_ATTRIBUTE_MS is reported with peer "?".
    Limits, by construction: a connection that fails within microseconds
    (a plaintext peer: no crypto, no ZAP) may be closed before the watcher
    handles its ACCEPTED: then its address is "?", or, if its descriptor
    was already reused by a newer connection, that one's. At most
    AMI_MDMS_MONITOR_CONNS connections per socket are remembered (the
    oldest are forgotten: "?"). A flood from one address is named right.

    Threads. The owner calls every function from the thread that owns the
    server sockets (zmq_socket_monitor is called on them there); the
    watcher thread touches only its own monitor sockets. Destroy the
    monitor BEFORE the server sockets.
*/
#ifndef AMI_MDMS_MONITOR_H_INCLUDED
#define AMI_MDMS_MONITOR_H_INCLUDED

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _ami_mdms_monitor_t ami_mdms_monitor_t;

/*  Server sockets one monitor watches at most (the MDMS has three). */
#define AMI_MDMS_MONITOR_SOCKETS        4
/*  Connections remembered per socket (address by descriptor): operators,
    head ends and subscribers of one MDMS are tens; each entry is ~80
    bytes. */
#define AMI_MDMS_MONITOR_CONNS          256
/*  How long a failed handshake waits for its connection's DISCONNECTED:
    libzmq sends it microseconds later; 100 ms covers a busy I/O thread
    without holding a report back noticeably. */
#define AMI_MDMS_MONITOR_ATTRIBUTE_MS   100

/*  Kinds of failure reported. */
#define AMI_MDMS_HANDSHAKE_REFUSED      1   /* ZAP refused the key */
#define AMI_MDMS_HANDSHAKE_FAILED       2   /* not a CURVE client of ours */

/*  Called once per failed handshake: the socket's name as given to
    ami_mdms_monitor_new, kind (above), status (the ZAP status code for
    REFUSED, libzmq's ZMQ_PROTOCOL_ERROR_* for FAILED), the peer's address
    ("ip:port", or "?" when unknown). */
typedef void (ami_mdms_monitor_fn) (const char *name, int kind, uint32_t status,
                                    const char *peer, void *arg);

/*  Start watching count (1..AMI_MDMS_MONITOR_SOCKETS) server sockets of
    this thread, servers [i] labelled names [i] (at most 15 characters
    kept). Call after the binds. Returns the monitor, or NULL (logged) if
    libzmq refuses or the watcher cannot start. */
ami_mdms_monitor_t *
    ami_mdms_monitor_new (zsock_t **servers, const char **names, size_t count);

/*  Stop watching and free; nulls *self_p. Call before destroying the
    server sockets. */
void
    ami_mdms_monitor_destroy (ami_mdms_monitor_t **self_p);

/*  The socket to poll for reports (the watcher actor; belongs to the
    monitor). */
zactor_t *
    ami_mdms_monitor_actor (ami_mdms_monitor_t *self);

/*  Take every report waiting (never blocks), count it, and call fn (if not
    NULL) for it. */
void
    ami_mdms_monitor_drain (ami_mdms_monitor_t *self, ami_mdms_monitor_fn *fn, void *arg);

/*  Failed handshakes reported since start, all sockets together: refused
    by ZAP, failed otherwise. */
uint64_t
    ami_mdms_monitor_refused (ami_mdms_monitor_t *self);
uint64_t
    ami_mdms_monitor_failed (ami_mdms_monitor_t *self);

#ifdef __cplusplus
}
#endif

#endif
