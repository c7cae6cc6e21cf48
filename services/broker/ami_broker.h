/*  ami_broker.h - the ami-bus Majordomo broker (MDP/0.1 + MMI), a CZMQ actor.

    This header is the manual.

    Pattern. Majordomo, as published in ZeroMQ RFC 7 (MDP/0.1,
    rfc.zeromq.org/spec:7) with the Majordomo Management Interface of RFC 8
    (MMI, rfc.zeromq.org/spec:8). In ami-bus the MDMS is the MDP client and
    the head ends are the MDP workers: a head end registers one service per
    aggregator it currently reaches, so a read for a meter lands on a live
    head end that can reach that meter's aggregator (DESIGN.md section 4).
    Any conforming MDP/0.1 client or worker interoperates: the broker speaks
    the RFC's frames and nothing else.

    Sockets. One ROUTER, bound to config->endpoint, serves clients and
    workers alike (RFC 7 allows a single socket). With a server certificate
    it is a CURVE server set up by ami_auth_server (ZAP domain
    AMI_AUTH_ZAP_DOMAIN): create the process's ami_auth (the zauth ZAP
    handler with the broker's allow-list: the MDMS and the head ends) BEFORE
    starting the broker and destroy it after - libzmq admits every CURVE
    client when no ZAP handler is running (DESIGN.md section 5), so the
    broker refuses to start (bind fails) when no ami_auth is running.
    ZMQ_MAXMSGSIZE is AMI_MAX_FRAME (1 MiB): libzmq
    drops the connection of a peer that sends a larger frame, before the
    broker sees a byte of it.

    Wire (frames after the ROUTER's identity frame; RFC 7):

        client -> broker  REQUEST  "", "MDPC01", service, body...   (>= 1 body)
        broker -> client  REPLY    "", "MDPC01", service, body...
        worker -> broker  READY      "", "MDPW01", 0x01, service
                          REPLY      "", "MDPW01", 0x03, client, "", body...
                          HEARTBEAT  "", "MDPW01", 0x04
                          DISCONNECT "", "MDPW01", 0x05
        broker -> worker  REQUEST    "", "MDPW01", 0x02, client, "", body...
                          HEARTBEAT, DISCONNECT as above

    Behaviour.
    - Dispatch: a request goes to the service's worker that has been idle
      longest (least recently used); while no worker of the service is idle,
      requests wait in the service's FIFO queue.
    - Requests for a service nobody offers yet create the service entry and
      wait (RFC 7: the broker SHOULD queue them) for at most
      request_ttl_ms, then are dropped (RFC 7: SHOULD expire them).
    - Bounds (refuse, don't queue without bound: SEC-AVAIL-2). A request is
      DROPPED AND LOGGED, with no reply, when its service already has
      max_queue requests waiting, when all queues together hold
      max_queue_bytes, or when it names a new service while max_services
      services exist. MDP/0.1 has no error reply (any reply body would be
      taken for the worker's answer), so the client's own deadline and
      retry (Lazy Pirate) are how it learns; the MDMS reports AMI_E_TIMEOUT.
      Each such drop is counted (dropped_queue_full, dropped_queue_bytes,
      services_refused; expired for the TTL; workers_refused for a READY
      refused for want of room), see "STATS".
    - Sends never block and never drop silently (issue 6). The ROUTER has
      ZMQ_ROUTER_MANDATORY, sndtimeo 0, every send ZMQ_DONTWAIT, and a send
      HWM of config->sndhwm messages per peer (AMI_BROKER_SNDHWM). A send
      libzmq refuses is counted by why - send_gone (the peer has gone,
      EHOSTUNREACH) or send_full (its queue is at the HWM: it stopped
      reading, EAGAIN) - and warned about (rate-limited, as below) naming
      what was lost, the service and the peer's identity in hex. Then:
      a REQUEST a worker could not be sent stays at the head of its
      service's queue with its original expiry (counted in requeued) and
      that worker is removed without DISCONNECT, so it is never left busy
      with a request it does not have; the next idle worker gets it (or it
      expires). A REPLY or MMI answer a client could not be sent is dropped
      and counted in replies_dropped (the client retries). A HEARTBEAT or
      DISCONNECT that could not be sent is only counted: liveness expires
      a worker that cannot be reached. Limit: a message libzmq has accepted
      for a peer whose connection then closes is lost inside libzmq, before
      the broker could know; MDP's retries cover it.
    - Receives are bounded too: the ROUTER holds at most config->rcvhwm
      messages (AMI_BROKER_RCVHWM) per peer that the broker has not read
      yet. At that bound libzmq stops reading that peer's connection (TCP
      back-pressure): nothing is dropped here, the peer's own send queue
      fills and the peer counts what it cannot send (the MDMS:
      send_failed; a head end's worker: a REPLY not queued, it reconnects).
    - Heartbeats: every heartbeat_ms the broker sends HEARTBEAT to every
      registered worker, idle or busy. Any command from a worker except
      DISCONNECT counts as its heartbeat; a worker silent for
      liveness * heartbeat_ms is expired: removed, sent DISCONNECT, and its
      service forgets it. A worker must therefore keep heartbeating while it
      processes a slow request (e.g. a meter read over RF taking seconds).
      If a busy worker expires, its request is lost, not re-sent: the client
      retries (requests are idempotent, RFC 7) and the MDMS de-duplicates.
    - DISCONNECT is sent (RFC 7: "valid but unexpected command") to a peer
      that sends HEARTBEAT or REPLY before READY, READY a second time, READY
      for an "mmi." service (RFC 8), a REPLY for a client it was not given,
      REQUEST, or a worker message that is invalid (unknown command byte,
      wrong number of frames, bad service name). A registered worker that
      does so is removed. A worker's DISCONNECT removes it silently.
    - Any other malformed input (too few frames, frame 1 not empty, unknown
      protocol header, client request without service or body, more than
      AMI_BROKER_MAX_FRAMES frames or AMI_MAX_FRAME + 4 KiB bytes in one
      message) is dropped and logged with zsys_warning (at most
      AMI_BROKER_LOG_BURST warnings per second; the rest are counted and the
      count is logged). The broker never asserts on network input.
    - MMI (RFC 8): "mmi.service" with body = a service name answers "200" if
      that service has at least one registered worker, "404" otherwise;
      "mmi.ami-stats" (any body; ami-bus's own MMI service) answers one
      frame: an ami HEALTH message (PROTOCOL.md 4.2; role "broker",
      node_id config->node_id, state READY, uptime since start) whose stats
      are exactly those of "STATS", in the same order - so the MDMS shows
      them in the broker's row of API_STATUS. Every other "mmi.*" service
      answers "501". Replies carry the service frame of the request
      ("mmi.service", "mmi.ami-stats", "mmi.foo"): a client matching MMI
      answers can tell them apart. MMI requests never create a service
      entry.
    - A REPLY is forwarded only to the client whose request that worker was
      given: a worker cannot answer (or spoof an answer to) another client.
    - Roles (CURVE only; DESIGN.md section 5, docs/security/README.md).
      Being on the allow-list only admits a peer; what it may DO depends on
      the "role" metadata of its certificate as listed in the allow-list
      (ami_auth_peer_meta (frame, AMI_CERT_META_ROLE), which the peer
      cannot choose). A peer may send client messages ("MDPC01", MMI
      included) only if its role is in config->client_roles (default
      AMI_BROKER_CLIENT_ROLES, "mdms"), and worker messages ("MDPW01", any
      command) only if its role is in config->worker_roles (default
      AMI_BROKER_WORKER_ROLES, "headend"). A worker may register (READY)
      only for a service whose name starts with config->worker_prefix
      (default AMI_BROKER_WORKER_PREFIX, "agg."; the mmi. namespace stays
      refused by RFC 8 whatever the prefix). Refusals: a client message is
      dropped with no reply and logged (rate-limited, as above); a worker
      message is answered with DISCONNECT (RFC 7, as for any invalid
      worker command), logged, and registers nothing. So one compromised
      head end cannot pose as the MDMS, and cannot register for names
      outside the aggregator namespace; the MDMS cannot register as a
      worker and black-hole reads. Without CURVE (server_cert NULL, tests
      only) no role or prefix is checked: there are no certificates.

    - Failed handshakes (SEC-AUD-2). The ROUTER is watched by an
      ami_monitor (ami_monitor.h). A CURVE client whose key ZAP refuses
      (not in the allow-list, or revoked) is counted in handshakes_refused;
      a peer that is not a CURVE client of this broker at all (plaintext,
      the wrong server key, garbage) in handshakes_failed. Each is warned
      about, rate-limited as above, naming the peer's address:
          broker: router: CURVE handshake from 10.0.0.7:51234 refused: key
              not in the allow-list (ZAP status 400)
          broker: router: handshake from 10.0.0.7:51240 failed: not a CURVE
              client of this server (protocol error 0x...)
      The address is "?" when the connection was gone before it could be
      asked for (ami_monitor.h, "Limits"). The broker starts only if the
      monitor does.

    Configuration (the ami-broker service, section "broker" of its config
    file; ami_broker_config_read parses and validates it, each key with
    the default of the struct field it sets):
        broker/endpoint         ROUTER bind [tcp://127.0.0.1:7000]
        broker/heartbeat        heartbeat_ms, 1 ms..1 h [1s]
        broker/liveness         liveness, 1..100 [3]
        broker/max-queue        max_queue, 1..1000000 [1000]
        broker/max-queue-bytes  max_queue_bytes, 1M..64G, K/M/G suffix [64M]
        broker/request-ttl      request_ttl_ms, 1 ms..1 h [10s]
        broker/max-services     max_services, 1..1000000 [10000]
        broker/max-workers      max_workers, 1..1000000 [10000]
    A value out of range, or junk, is an error naming the key: the service
    does not start. The send and receive HWMs have no key (their reasons
    are at AMI_BROKER_SNDHWM and AMI_BROKER_RCVHWM).

    Pipe commands (zstr strings; send with zstr_send or zstr_sendx):

        "$TERM"     exit (zactor_destroy sends it)
        "ENDPOINT"  reply one string: the bound endpoint with the real port,
                    e.g. "tcp://127.0.0.1:45123" ("" if the bind failed)
        "STATUS"    reply one zmsg, every frame a decimal or text string:
                    frame 0 number of services, frame 1 number of workers,
                    frame 2 number of queued requests, then one frame per
                    service, sorted by name: "<name> <workers> <queued>"
                    (a name may contain spaces: parse the two numbers from
                    the right)
        "STATS"     reply one zmsg, one string frame per statistic,
                    "<name> <decimal value>", in this order:
                      services            services known now
                      workers             workers registered now
                      queued              requests queued now
                      queued_bytes        their content bytes
                      handshakes_refused  CURVE keys refused by ZAP (total)
                      handshakes_failed   other failed handshakes (total)
                      max_queue           the bound per service queue
                      max_queue_bytes     the bound of all queues, bytes
                      dropped_queue_full  requests dropped: service queue
                                          at max_queue (total)
                      dropped_queue_bytes requests dropped: all queues at
                                          max_queue_bytes (total)
                      expired             requests dropped after waiting
                                          request_ttl_ms (total)
                      services_refused    new services refused: table at
                                          max_services (total; the request
                                          or READY that named it is dropped)
                      workers_refused     READYs refused: worker table at
                                          max_workers, or no room for its
                                          service (total)
                      requeued            REQUESTs a worker could not be
                                          sent, kept queued (total)
                      replies_dropped     REPLYs and MMI answers a client
                                          could not be sent (total)
                      send_gone           sends refused, peer gone (total)
                      send_full           sends refused, peer's queue full
                                          (total)
                      max_services        the bound of the service table
                      max_workers         the bound of the worker table
                      request_ttl_ms      how long a request may wait
                    (counts are taken as of the command; "totals" since
                    start; at most AMI_MAX_STATS statistics)
        "VERBOSE"   log every message handled (zsys_debug)

    Threads. The actor owns its socket and all its state; talk to it only
    through its pipe. Several brokers may run in one process.
*/
#ifndef AMI_BROKER_H_INCLUDED
#define AMI_BROKER_H_INCLUDED

#include <czmq.h>
#include <stddef.h>

#include "ami_cert.h"
#include "ami_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Defaults, used for every config field left at 0. */

/*  1 s: the RFC's customary interval. A dead head end is noticed within
    liveness * heartbeat (3 s), well inside an operator's patience for an
    on-demand read, while heartbeats cost one tiny message per worker per
    second. Workers must use the same interval (RFC 7 "Known Weaknesses"). */
#define AMI_BROKER_HEARTBEAT_MS     1000
/*  3 missed heartbeats: RFC 7 suggests 3-5. One lost or late heartbeat
    (a GC pause, a busy core on this 2-core VM) must not expire a worker;
    three in a row means it is gone. */
#define AMI_BROKER_LIVENESS         3
/*  1000 queued requests per service: one service is one aggregator, and
    the MDMS rate-limits on-demand reads per operator and per meter, so a
    legitimate backlog is a few dozen; 1000 absorbs a burst (a head end
    reconnecting) without letting one aggregator's outage hold unbounded
    memory. Over the bound the NEW request is dropped and logged.
    [broker/max-queue] */
#define AMI_BROKER_MAX_QUEUE        1000
/*  10000 services: a service is an aggregator reachable through some head
    end; a large utility has thousands of aggregators, not tens of
    thousands. Requests to unknown names create entries, so without a bound
    a client could grow the table without limit (SEC-AVAIL-2).
    [broker/max-services] */
#define AMI_BROKER_MAX_SERVICES     10000
/*  10000 workers: ami-bus runs a handful of head ends, each registering one
    worker per aggregator it reaches; the bound stops a peer that reconnects
    in a loop from growing the table. [broker/max-workers] */
#define AMI_BROKER_MAX_WORKERS      10000
/*  64 MiB over all queues: 64 maximal (1 MiB) frames, or about 300 000
    typical read requests of ~200 bytes - far beyond any honest backlog,
    small for the broker's host. [broker/max-queue-bytes] */
#define AMI_BROKER_MAX_QUEUE_BYTES  (64u * 1024 * 1024)
/*  10 s: longer than a head end needs to reconnect and re-register after a
    failover (liveness * heartbeat = 3 s to notice, plus reconnect), and
    about the MDMS's read deadline, so a request is not delivered long
    after its client has given up and retried. [broker/request-ttl] */
#define AMI_BROKER_REQUEST_TTL_MS   10000
/*  20000 messages queued per peer on the ROUTER before a send to it fails
    (send_full). A worker has at most one REQUEST plus a HEARTBEAT per
    heartbeat in flight, so it meets the bound only when it has stopped
    reading. The client (the MDMS) gets, each heartbeat, one MMI answer per
    aggregator it polls (at most AMI_BROKER_MAX_SERVICES = 10000) plus the
    replies to its reads in flight (the MDMS bounds those at 10000): an
    honest client that reads at all never meets it. The memory is bounded
    by what the peer itself asked for; typical answers are < 1 KiB, so a
    full pipe holds ~20 MiB. libzmq's default (1000) would drop answers
    to a large MDMS's MMI poll. */
#define AMI_BROKER_SNDHWM           20000
/*  256 messages received per peer and not read yet before libzmq stops
    reading that peer's connection (TCP back-pressure; nothing dropped).
    The broker reads every message as it comes (microseconds each), so the
    queue only fills while a peer sends faster than the broker works: an
    MDP worker sends one REPLY per request plus a HEARTBEAT per heartbeat;
    the MDMS bursts one mmi.service per aggregator each heartbeat plus its
    reads. Those frames are small (REQUEST and MMI < 1 KiB, a REPLY with a
    READ_RESP < 6 KiB), so a full queue holds < 1.5 MiB, and a burst beyond
    it waits in the kernel's socket buffers, not lost. In bytes the bound
    is at most 256 x AMI_MAX_FRAME = 256 MiB per peer, reached only by an
    allow-listed peer sending maximal frames while the broker cannot keep
    up - where libzmq's default (1000) would let it be 1 GiB. */
#define AMI_BROKER_RCVHWM           256

/*  Largest service name accepted (bytes): fits a ZMTP short frame and
    bounds the memory of a table key; ami service names are "agg." plus an
    id of at most AMI_MAX_ID (32) bytes. Names are printable ASCII
    (0x20..0x7e), non-empty. */
#define AMI_BROKER_MAX_NAME         255
/*  Most frames in one received message: a worker REPLY has 5 protocol
    frames plus the identity; 16 body frames is more than any ami message
    uses (ami bodies are one frame). */
#define AMI_BROKER_MAX_FRAMES       (6 + 16)
/*  At most this many warnings about bad input per second; more are counted
    and summarised, so a hostile peer cannot flood the log. */
#define AMI_BROKER_LOG_BURST        20

/*  Default role lists and worker service prefix (see "Roles" above).
    "mdms": only the MDMS asks for reads (DESIGN.md section 4); "headend":
    only head ends serve them; "agg.": a head end registers one service
    "agg.<aggregator id>" per aggregator it reaches, nothing else. */
#define AMI_BROKER_CLIENT_ROLES     "mdms"
#define AMI_BROKER_WORKER_ROLES     "headend"
#define AMI_BROKER_WORKER_PREFIX    "agg."

/*  The broker's configuration. Zero-initialise it, then set endpoint and
    (in production) server_cert; every numeric field left at 0 takes the
    default above. Negative values are invalid. The actor copies what it
    keeps during its start-up, so the struct, the strings and the
    certificate it points to need only stay valid until zactor_new (or
    ami_broker_new) has returned. */
typedef struct {
    /*  Endpoint to bind, e.g. "tcp://0.0.0.0:5555" or "tcp://127.0.0.1:*" (an
        ephemeral port; ask "ENDPOINT" for the real one). Required. */
    const char *endpoint;
    /*  This broker's certificate (with its secret key), borrowed.
        Non-NULL: the ROUTER is a CURVE server (ami_auth_server), and an
        ami_auth must be running or the start fails. NULL: plain TCP, no
        authentication - for tests only; the ami-broker service always
        passes one. */
    ami_cert_t *server_cert;
    int heartbeat_ms;           /* 0 = AMI_BROKER_HEARTBEAT_MS */
    int liveness;               /* 0 = AMI_BROKER_LIVENESS */
    int request_ttl_ms;         /* 0 = AMI_BROKER_REQUEST_TTL_MS */
    size_t max_queue;           /* 0 = AMI_BROKER_MAX_QUEUE, per service */
    size_t max_queue_bytes;     /* 0 = AMI_BROKER_MAX_QUEUE_BYTES, total */
    size_t max_services;        /* 0 = AMI_BROKER_MAX_SERVICES */
    size_t max_workers;         /* 0 = AMI_BROKER_MAX_WORKERS */
    /*  Roles allowed to act as MDP clients / workers, with CURVE: a
        comma-separated list of certificate roles, e.g. "mdms,operator"
        (spaces around names are ignored; each name is 1..AMI_CERT_META_MAX
        printable bytes without a comma). NULL = the default above; ""
        = nobody. An empty name (",," or a trailing comma) makes the
        config invalid. Ignored without CURVE. */
    const char *client_roles;   /* NULL = AMI_BROKER_CLIENT_ROLES */
    const char *worker_roles;   /* NULL = AMI_BROKER_WORKER_ROLES */
    /*  Prefix every worker service name must start with, with CURVE.
        NULL = AMI_BROKER_WORKER_PREFIX; "" = any name (except mmi.*).
        Ignored without CURVE. */
    const char *worker_prefix;
    /*  Messages queued per peer before a send fails (see "Sends" above);
        0 = AMI_BROKER_SNDHWM; at most INT_MAX. */
    size_t sndhwm;
    /*  Messages received per peer and not read yet before libzmq stops
        reading it (see "Receives" above); 0 = AMI_BROKER_RCVHWM; at most
        INT_MAX. */
    size_t rcvhwm;
    /*  This broker's node id, in its mmi.ami-stats HEALTH; NULL =
        "broker". Must be a valid ami id (ami_id_valid). */
    const char *node_id;
} ami_broker_config_t;

/*  The broker actor, following the ami-bus actor convention
    (ami_service.h): it signals the pipe, validates the config, creates and
    binds the ROUTER, then reports READY - or, if the config is invalid
    (including a malformed role list),
    CURVE cannot be set up (no ami_auth running, no secret key) or the bind
    fails, logs why and reports FAILED and waits for "$TERM". Start it with
    ami_broker_new (or ami_actor_new). The actor also exits when the
    process is interrupted (zsys_interrupted). */
void
    ami_broker_actor (zsock_t *pipe, void *args);

/*  Start the broker. Returns the actor, or NULL (after logging why) if
    config is invalid or the bind failed; then nothing is left running.
    Destroy with zactor_destroy(). */
zactor_t *
    ami_broker_new (const ami_broker_config_t *config);

/*  Read the keys of "Configuration" above from config into *broker: the
    endpoint and every numeric field they set (the other fields are left
    as they are). Each key not set takes its default. Returns AMI_OK, or
    AMI_E_CONFIG (logged, naming the file, the key and the bound) for
    junk or a value out of range; *broker may then be half filled. The
    endpoint string is borrowed from config. */
int
    ami_broker_config_read (ami_config_t *config, ami_broker_config_t *broker);

#ifdef __cplusplus
}
#endif

#endif
