/*  ami_aggregator.h - the pole-top field node (ami-aggregator), a CZMQ actor.

    This header is the manual.

    What it is. An aggregator sits on a utility pole, physically
    unprotected (DESIGN.md section 2): it is an UNTRUSTED RELAY for
    application data. It holds no application keys, never verifies, opens
    or re-encodes anything: it decodes a READ_REQ only to learn which meter
    it is for (and when it expires), and a READ_RESP or ERROR only to learn
    which request it answers, then forwards the frame's BYTES unchanged.
    The MDMS and the meters check each other end to end (ami_e2e.h).

    Sockets (all CurveZMQ, ZMQ_MAXMSGSIZE = AMI_MAX_FRAME, linger 0):
      - one ROUTER bound to config->endpoint, fleet-facing, CURVE server
        (ami_auth_server): an ami_auth must run in the process before the
        actor starts, with an allow-list holding this aggregator's fleets;
      - one DEALER per configured head end, CURVE client, connected to the
        head end's aggregator-facing ROUTER. DEALERs reconnect by
        themselves; the aggregator keeps serving through whichever head
        ends are up (SEC-AVAIL-1).
    Every message is one frame (ami_msg.h); a DEALER sends and receives
    single frames with no empty delimiter, the ROUTER sees [routing id,
    frame]. Anything else is malformed.

    Fleets (meter side).
      - A fleet introduces itself with HELLO(role "meter", node_id,
        [meter ids]) chunks; the aggregator maps each meter id to that
        fleet's routing id (a later HELLO wins: a meter that moved).
      - Identity: the HELLO's and HEALTH's node_id must equal the node-id
        of the certificate the fleet connected with (ZAP metadata from the
        allow-list), and the certificate's role must be "meter"; anything
        else is dropped and logged. So an allowed fleet cannot pose as
        another fleet or inject another service's HEALTH.
      - A fleet that reconnects (new routing id, same node id) replaces its
        old entry. Frames that still arrive from the old routing id mean
        the fleet runs twice (two processes with one certificate): they
        are ignored and counted (duplicates) until that connection has
        been silent for AMI_AGGREGATOR_LIVENESS heartbeats, so the newest
        connection keeps the meters instead of the two taking them from
        each other in an endless exchange of HELLOs.
      - The first message from a routing id the aggregator does not know
        that is not a HELLO (e.g. a HEALTH after this aggregator
        restarted) is answered with the aggregator's own HELLO(role
        "aggregator", node_id, meters = []), once, and the fleet re-sends
        its HELLOs.
      - Liveness: any frame from a fleet refreshes it; a fleet silent for
        AMI_AGGREGATOR_LIVENESS heartbeats is gone, and so are its meters'
        routes; requests in flight to it are answered AMI_E_UNREACHABLE.
      - Each fleet's HEALTH frame is forwarded unchanged to every head end.

    Head ends (uplink side).
      - After connecting, and whenever a head end sends HELLO, the
        aggregator sends it HELLO(role "aggregator", node_id, meters = []).
        (The MDMS registry maps meters to aggregators; head ends route by
        aggregator, so the aggregator does not list its meters upward.)
      - HEALTH(role "aggregator", node_id, READY, uptime_ms, stats) every
        heartbeat to every head end. Stats: fleets, meters, relayed_down,
        relayed_up, unreachable, busy, dropped, pending, malformed,
        duplicates.
      - READ_REQ from a head end: looked up by meter id. No live fleet
        announced the meter, or its fleet's connection is gone ->
        ERROR(request_id, AMI_E_UNREACHABLE, origin = aggregator id, text
        naming the meter) back to that head end. The request table is full,
        or the fleet's queue is full -> ERROR(request_id, AMI_E_BUSY, ...)
        (refuse, don't queue without bound: SEC-AVAIL-2). Otherwise the raw
        frame goes to the fleet and request_id -> (head end, fleet, meter)
        is remembered.
      - READ_RESP / ERROR from a fleet: forwarded raw to the head end the
        request came from, and the entry is removed (one answer per
        request). A retry of the same request_id (the MDMS re-sends with a
        new counter, maybe through another head end) replaces the entry,
        so the answer goes to the latest path. A response is accepted only
        from the fleet the request was sent to, for the same meter;
        responses for unknown or expired requests are dropped (counted in
        orphaned, debug log).
      - Entries expire at the command's expires_ms (converted to the local
        monotonic clock, at most AMI_AGGREGATOR_MAX_TTL_MS ahead) plus
        AMI_AGGREGATOR_MARGIN_MS; the table holds at most max_pending
        entries (see AMI_AGGREGATOR_MAX_PENDING for why).
      - Sends are non-blocking. Each head-end DEALER queues at most
        AMI_AGGREGATOR_SNDHWM messages; when a head end's queue is full
        (it is down or slow) the frame for it is DROPPED and counted
        (dropped): a blocked send would stall the whole node, and with it
        the other head end's reads (SEC-AVAIL-1); a response dropped here
        is retried end to end by the MDMS (Lazy Pirate), heartbeats are
        superseded by the next one.

    Malformed input from any peer (undecodable, wrong type for the
    direction, several frames, an identity mismatch) is dropped, counted
    and logged (at most AMI_AGGREGATOR_LOG_BURST warnings per second); the
    aggregator never asserts on network input.

    Pipe commands (zstr strings):
        "$TERM"     exit (zactor_destroy sends it)
        "ENDPOINT"  reply one string: the bound fleet-facing endpoint with
                    the real port, e.g. "tcp://127.0.0.1:45123"
        "STATUS"    reply one zmsg of decimal strings: fleets, meters,
                    relayed_down, relayed_up, unreachable, busy, dropped,
                    pending, malformed, orphaned, duplicates (frames 0..10)

    Threads. The actor owns its sockets and tables. The certificate in the
    config is used only during start-up (while ami_aggregator_new waits):
    ami_cert is not thread-safe.
*/
#ifndef AMI_AGGREGATOR_H_INCLUDED
#define AMI_AGGREGATOR_H_INCLUDED

#include <czmq.h>
#include <stddef.h>

#include "ami_cert.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  1 s: the bus-wide default heartbeat (docs/SERVICES.md). */
#define AMI_AGGREGATOR_HEARTBEAT_MS 1000
/*  A fleet silent for 3 heartbeats is gone (the bus-wide rule): one late
    heartbeat on a loaded node must not cut a neighbourhood off. */
#define AMI_AGGREGATOR_LIVENESS     3
/*  65 536 requests in flight: the MDMS rate-limits on-demand reads per
    operator and per meter and gives up after a few seconds, so an honest
    backlog is far smaller; an entry is about 100 bytes, so the bound
    caps the table near 6.5 MiB on a small pole-top node even if a head end
    (or whoever took it over) floods reads with far-away expiry times. */
#define AMI_AGGREGATOR_MAX_PENDING  65536
/*  An entry outlives its command's expiry by 5 s: an answer produced just
    before expiry still finds its way back through a slow RF hop. */
#define AMI_AGGREGATOR_MARGIN_MS    5000
/*  ...and never lives longer than 60 s, whatever expires_ms says: the
    MDMS's read deadline is seconds, and the aggregator's clock is not
    trusted to agree with the MDMS's to better than that. */
#define AMI_AGGREGATOR_MAX_TTL_MS   60000
/*  Meters routed at most: one fleet of AMI_METER_MAX_COUNT (1 000 000)
    fits; a route costs about 100 bytes, so the table stays near 100 MiB
    even if an allowed fleet announces garbage ids. Over the bound a
    HELLO's extra ids are ignored and logged. */
#define AMI_AGGREGATOR_MAX_METERS   1000000
/*  Fleets (fleet connections) at most: the allow-list bounds them in
    practice; the cap stops one allowed key from reconnecting in a loop
    and growing the table before old entries expire. */
#define AMI_AGGREGATOR_MAX_FLEETS   1024
/*  Per-head-end queue (ZMQ_SNDHWM): 1000 frames are several seconds of
    health and answers for a busy node - past that they are stale, and the
    MDMS has already retried elsewhere. */
#define AMI_AGGREGATOR_SNDHWM       1000
/*  Warnings about bad input per second; the rest are counted. */
#define AMI_AGGREGATOR_LOG_BURST    20

/*  One head end to report to. */
typedef struct {
    const char *name;           /* config name, for logs (e.g. "headend-1") */
    const char *endpoint;       /* its aggregator-facing ROUTER */
    const char *server_key;     /* its public CURVE key, Z85 (40 chars) */
} ami_aggregator_headend_t;

/*  The aggregator's configuration. The actor copies what it keeps during
    start-up: the struct and what it points to need only stay valid until
    ami_aggregator_new returns. */
typedef struct {
    const char *node_id;        /* this aggregator's id, e.g. "agg-1" (required) */
    ami_cert_t *cert;           /* its CURVE cert with secret key, borrowed (required) */
    const char *endpoint;       /* fleet-facing bind, e.g. "tcp://127.0.0.1:*" (required) */
    const ami_aggregator_headend_t *headends;   /* at least one */
    size_t headend_count;
    int heartbeat_ms;           /* 0 = AMI_AGGREGATOR_HEARTBEAT_MS */
    size_t max_pending;         /* 0 = AMI_AGGREGATOR_MAX_PENDING */
} ami_aggregator_config_t;

/*  The aggregator actor (ami-bus actor convention, ami_service.h):
    signals the pipe, validates the config, binds the ROUTER (fails if no
    ami_auth runs), connects every head end, sends its HELLOs, reports
    READY; on failure it logs why and reports FAILED. */
void
    ami_aggregator_actor (zsock_t *pipe, void *args);

/*  Start an aggregator. Returns the actor, or NULL (logged); then nothing
    is left running. Destroy with zactor_destroy. */
zactor_t *
    ami_aggregator_new (const ami_aggregator_config_t *config);

#ifdef __cplusplus
}
#endif

#endif
