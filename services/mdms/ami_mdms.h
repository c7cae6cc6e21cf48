/*  ami_mdms.h - the MDMS: the system of record of ami-bus, a CZMQ actor.

    This header is the manual.

    What it does. The MDMS holds the meter registry and every verified
    reading (LMDB, ami_mdms_db.h), serves operators (amictl) on its API
    socket, sends signed on-demand read commands to meters through the
    Majordomo broker and the head ends, verifies and stores the answers,
    watches the health of every service, and publishes an event feed.

    Sockets (all CurveZMQ; the process's ami_auth - one zauth ZAP handler
    whose allow-list holds the operators AND the head ends - must run
    before ami_mdms_new and be destroyed after the actor):

    api     ROUTER, bind, CURVE server. Operators only: the certificate
            metadata "role" of the sender (ami_auth_peer_meta on the content
            frame, i.e. the allow-list copy of its certificate) must be
            "operator", anything else is refused (ERROR AMI_E_DENIED) and
            logged. REQ-compatible envelope: the MDMS receives
            [routing id ...][empty][API_REQ] and answers with the same
            envelope and ONE reply frame (REQ, or DEALER sending an empty
            frame first). The reply is the action's API reply or an ERROR.
    ingest  ROUTER, bind, CURVE server. Head ends only (metadata role
            "headend"; anything else is dropped and logged, no answer).
            Frames [routing id][message] (no delimiter). Accepts HELLO
            (the head end introduces itself; its node_id must equal its
            certificate's node-id), HEALTH (its own and those it forwards
            for aggregators and fleets: recorded per (role, node id) for
            STATUS). A message from a routing id that has not sent HELLO
            (e.g. after an MDMS restart) is answered with the MDMS's own
            HELLO (role "mdms", this node id, no meters), at most once per
            heartbeat per peer, so the head end re-introduces itself.
            BATCH (interval data) is not handled yet: dropped and logged.
    events  PUB, bind, CURVE server. Two frames per event:
            [topic "event.<kind>"][EVENT], kind = read_done, read_failed,
            meter_alarm, meter_offline, service_down, service_up, security
            (PROTOCOL.md 7.3). EVENT.seq starts at 1 and grows by 1 per
            event; origin = this node id.
    broker  DEALER, connect, CURVE client of the broker: an MDP/0.1 client
            (RFC 7): sends ["", "MDPC01", service, body], receives
            ["", "MDPC01", service, body].

    Every socket: ZMQ_MAXMSGSIZE AMI_MAX_FRAME, linger 100 ms, never blocks
    on send (a send that cannot go out at once is dropped and logged), ZMTP
    heartbeats; ROUTERs are ROUTER_MANDATORY, the DEALER is IMMEDIATE.
    Malformed input on any socket is dropped and logged (at most
    AMI_MDMS_LOG_BURST warnings a second) and never stops the MDMS.

    Operator API (PROTOCOL.md 4.11-4.14; the operator is identified by the
    certificate of the connection: metadata "node-id" is the operator id,
    "ami-role" the role; grants in ami_mdms_acl.h). Every reply frame
    carries the request's corr (ERROR: as request_id; ERROR.origin is this
    MDMS's node id). Checks, in this order:
      - peer certificate role is not "operator"  -> ERROR AMI_E_DENIED
      - envelope has no body, or more than one frame after the empty
        delimiter; the body does not decode; it is not an API_REQ
                                                 -> ERROR AMI_E_BAD_REQUEST
        (request_id empty if undecodable; text = "malformed request: "
        + ami_strerror of the codec's code). A message with no empty
        delimiter has no intact envelope: dropped, no reply.
      - action unknown or not implemented (intervals, audit, verify)
                                                 -> ERROR AMI_E_BAD_REQUEST
                                                    "not implemented yet"
      - role does not hold the action            -> ERROR AMI_E_DENIED
        (logged with operator, role, action, meter, corr; EVENT security)
    Then:
      READ (meter_id, timeout_ms: 0 = config read timeout, capped at
      AMI_MDMS_MAX_READ_TIMEOUT_MS)
        -> API_READINGS (corr, more=false, 1 row: the new reading with
           requested_ms, read_ms, stored_ms) + EVENT read_done
        or ERROR with code, + EVENT read_failed:
           AMI_E_BAD_REQUEST   meter_id empty; corr already in flight
           AMI_E_UNKNOWN_METER not in the registry
           AMI_E_BUSY          AMI_MDMS_MAX_PENDING reads in flight
           AMI_E_NO_ROUTE      the broker says no head end offers
                               "agg.<aggregator>" (known from the last
                               periodic MMI poll: at once; or asked after a
                               try timed out), or a head end said so
           AMI_E_UNREACHABLE   (and any other code) from a head end,
                               aggregator or fleet ERROR
           AMI_E_REPLAY, AMI_E_EXPIRED, AMI_E_BAD_SIGNATURE,
           AMI_E_WRONG_TARGET  the meter refused the command (status of
                               its signed READ_RESP)
           AMI_E_TIMEOUT       no acceptable answer before the deadline
           AMI_E_STORAGE, AMI_E_MAP_FULL  the reading could not be stored
      HISTORY (meter_id, from_ms, to_ms (0 = open), limit: 0 = 10, capped
      at AMI_MAX_API_READINGS)
        -> API_READINGS newest first, more=true if rows remain (next page:
           to_ms = last row's read_ms - 1)
        or ERROR AMI_E_UNKNOWN_METER / AMI_E_BAD_REQUEST (from > to) /
           AMI_E_STORAGE (a stored row does not parse)
      METERS (meter_id = start after it, "" = from the start; limit: 0 or
      over AMI_MAX_API_METERS = AMI_MAX_API_METERS)
        -> API_METERS in meter id order: aggregator id, last_read_ms (read_ms
           of the newest stored reading, 0 = never), state READY if a head
           end currently offers the aggregator's service (fresh MMI 200),
           DOWN otherwise; more=true if meters remain
      STATUS
        -> API_STATUS rows: this MDMS (role "mdms", READY, its uptime, age
           0); the broker (role "broker", node id config->broker_id, READY
           if an MDP or MMI reply came within 3 heartbeats, else DOWN;
           uptime = time since it became READY; age = since last reply);
           then every (role, node id) whose HEALTH arrived on ingest,
           sorted by role then node id, with its last reported state and
           uptime, age since last heard, and state DOWN once silent for 3
           heartbeats (at most AMI_MAX_API_SERVICES rows in all; the rest
           are left out and logged).

    On-demand read (FUN-READ-1/2; Lazy Pirate, zguide chapter 4, over a
    DEALER so that many reads are in flight at once). The READ_REQ is
    (meter_id, request_id = the operator's corr, counter, issued_ms = now,
    expires_ms = the read's deadline), encoded with a zero signature and
    signed in place with the MDMS signing key (ami_e2e_sign), sent as an
    MDP request to service "agg.<aggregator of the meter>". Counter: one
    MDMS-wide strictly increasing counter, persisted in blocks (see
    ami_mdms_db.h). Each try waits timeout / (retries + 1); when a try times
    out the MDMS asks the broker "mmi.service" for the aggregator's
    service: 404 ends the read with AMI_E_NO_ROUTE, 200 resends it (same
    request_id, NEW counter, issued_ms and signature) while tries remain;
    the deadline ends it with AMI_E_TIMEOUT. Every heartbeat the MDMS also
    polls mmi.service for every aggregator of the registry; that route
    table answers NO_ROUTE at once for an aggregator with no worker (so a
    head end that registered within the last heartbeat may still be
    reported NO_ROUTE once), and gives the METERS state. MDP replies carry no correlation of their own, so a
    reply is matched by the request_id inside its body (MMI replies, which
    carry only "200"/"404", are matched in FIFO order: one broker
    connection is ordered).
    A READ_RESP is accepted only if, in this order: a read with its
    request_id is pending; it came through that read's service; its
    meter_id is the read's meter; its signature verifies with the meter's
    registry key (else AMI_E_BAD_SIGNATURE: dropped, logged, EVENT
    security, NOT stored, the read keeps waiting and retrying); status 0
    (else the read fails with that code: the meter's refusal is signed);
    the sealed READING opens with the MDMS box key and decodes; its
    meter_id and request_id equal the read's (SEC-INT-3). (Failures of the
    last two are dropped like a bad signature.) Then it is stored durably
    (reading + the whole signed READ_RESP frame as proof of origin,
    SEC-NR-1) BEFORE the operator gets API_READINGS.

    Pipe commands (zstr strings):
        "$TERM"     stop (reads in flight are answered ERROR AMI_E_BUSY
                    "MDMS stopping")
        "ENDPOINT"  reply 3 frames: the api, ingest and events endpoints as
                    bound (real ports, e.g. "tcp://127.0.0.1:41234")
        "STATUS"    reply one zmsg of "name=value" frames: pending,
                    services, routes, broker (READY|DOWN), counter_reserved,
                    events (last seq), readings, meters, malformed, denied,
                    reads_ok, reads_failed, bad_responses

    Threads. The actor owns its sockets, its database and all state; talk
    to it only through its pipe. One MDMS per database directory.
*/
#ifndef AMI_MDMS_H_INCLUDED
#define AMI_MDMS_H_INCLUDED

#include <czmq.h>
#include <stddef.h>

#include "ami_cert.h"
#include "ami_e2e.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Defaults, used for every numeric config field left at 0. */

/*  3 s: real RF reads take seconds (DESIGN.md section 8), our loopback
    chain milliseconds; 3 s also matches the head end's own per-read
    deadline, so a read that one head end gave up on still gets a retry. */
#define AMI_MDMS_READ_TIMEOUT_MS    3000
/*  3 retries (4 tries): a lost message, a head end failing over, and one
    more, inside one operator timeout. */
#define AMI_MDMS_RETRIES            3
/*  Pass as retries for "no retry at all" (0 means the default). */
#define AMI_MDMS_NO_RETRIES         (-1)
/*  1 s, the bus-wide heartbeat (PROTOCOL.md 8.1); services silent for 3
    heartbeats are DOWN. */
#define AMI_MDMS_HEARTBEAT_MS       1000
/*  10 000 reads in flight: each costs about 400 bytes (4 MiB in all), far
    more than the rate-limited operators can legitimately have in flight
    (the broker itself queues at most 1000 per aggregator). Over the bound
    a read is refused at once with AMI_E_BUSY instead of queueing without
    bound (SEC-AVAIL-2). */
#define AMI_MDMS_MAX_PENDING        10000
/*  60 s: the longest an operator may ask one read to wait; a pending slot
    must not be held for hours by a typo. */
#define AMI_MDMS_MAX_READ_TIMEOUT_MS 60000
/*  Services (role, node id) remembered from HEALTH: a deployment has tens;
    the bound stops forwarded junk from growing the table (the
    longest-silent entry makes room). */
#define AMI_MDMS_MAX_SERVICES       1024
/*  At most this many warnings about bad input per second. */
#define AMI_MDMS_LOG_BURST          20

/*  The MDMS configuration. Zero-initialise, then set every "required"
    field. The actor copies what it keeps during start-up; the strings,
    cert and keys need only stay valid until ami_mdms_new returns, and the
    cert must not be used by another thread until then. */
typedef struct {
    const char *node_id;            /* required: this MDMS's node id */
    ami_cert_t *cert;               /* required, borrowed: node cert with secret */
    const char *api_endpoint;       /* required: bind, e.g. "tcp://127.0.0.1:*" */
    const char *ingest_endpoint;    /* required: bind */
    const char *events_endpoint;    /* required: bind */
    const char *broker_endpoint;    /* required: connect */
    const char *broker_key;         /* required: broker public key, Z85 (40 chars) */
    const char *broker_id;          /* node id shown in STATUS; NULL = "broker" */
    const char *db_dir;             /* required: LMDB directory */
    size_t map_size;                /* 0 = AMI_STORE_DEFAULT_MAP_SIZE (1 GiB) */
    const ami_e2e_mdms_t *keys;     /* required, with secrets: MDMS application keys */
    const char *registry_path;      /* required: meters.tsv, imported at start */
    int read_timeout_ms;            /* 0 = AMI_MDMS_READ_TIMEOUT_MS */
    int retries;                    /* 0 = AMI_MDMS_RETRIES; AMI_MDMS_NO_RETRIES = none */
    int heartbeat_ms;               /* 0 = AMI_MDMS_HEARTBEAT_MS */
    size_t max_pending;             /* 0 = AMI_MDMS_MAX_PENDING */
} ami_mdms_config_t;

/*  The actor (ami-bus actor convention, ami_service.h): signals the pipe,
    validates the config, opens the database, imports the registry, binds
    and connects, then reports READY; on any failure it logs why, reports
    FAILED and waits for $TERM. */
void
    ami_mdms_actor (zsock_t *pipe, void *args);

/*  Start the MDMS. Returns the actor, or NULL (logged) if it could not
    start; then nothing of it is left running. Destroy with zactor_destroy. */
zactor_t *
    ami_mdms_new (const ami_mdms_config_t *config);

#ifdef __cplusplus
}
#endif

#endif
