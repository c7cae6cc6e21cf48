/*  ami_headend.h - the ami-bus head end (utility data centre), a CZMQ actor.

    This header is the manual.

    Role. The head end is the trusted router between the field and the
    data centre (DESIGN.md sections 2 and 4). Aggregators connect to it;
    it offers each live aggregator to the MDMS as a Majordomo service
    through the broker, relays on-demand read commands down and their
    answers up, relays interval data (BATCH) up to the MDMS ingest and its
    acknowledgements (BATCH_ACK) down, and forwards health upward. It holds
    no application keys: it never opens a reading or a block nor checks a
    signature, it forwards frames' bytes unchanged (SEC-CONF-1).

    Patterns (zguide).
    - Aggregators: a ROUTER (bind, CURVE server) addressed by routing id;
      children introduce themselves with HELLO and heartbeat with HEALTH
      (the ami-bus liveness rule: silent for 3 heartbeats = gone).
    - Broker: Majordomo workers, MDP/0.1 as in ZeroMQ RFC 7 (the zguide's
      mdwrkapi): one DEALER per worker, READY for service
      "agg.<aggregator node id>", HEARTBEAT every broker heartbeat, a fresh
      socket and READY again on DISCONNECT or when the broker has been
      silent for liveness * heartbeat, REPLY with the client envelope.
      Every worker heartbeats on the broker's interval whether idle or
      busy (the broker expires silent busy workers). A worker whose REPLY
      could not be queued starts afresh (DISCONNECT, new socket, READY):
      the broker would otherwise keep it busy for ever. Requests a worker
      held when it reconnects are forgotten (the broker dropped them too;
      the MDMS retries).
    - MDMS ingest: a DEALER uplink (CURVE client), ZMQ_IMMEDIATE, non-
      blocking sends: a frame the uplink cannot take now (not connected,
      or queue full) is not queued - HEALTH is dropped and counted (it is
      re-sent every heartbeat anyway), a BATCH is answered BUSY.
    - Interval data: a relay inside credit-based flow control (zguide ch.
      7; PROTOCOL.md 8.3, 8.5). The head end keeps no batches, only a
      batch id -> aggregator table so that acks find their way back.

    Sockets (every one: ZMQ_MAXMSGSIZE = AMI_MAX_FRAME, CURVE with
    config->cert, non-blocking sends, explicit send and receive HWMs whose
    reasons are at the constants named):
        aggregators   ROUTER  bind config->endpoint      CURVE server
                              (ROUTER_MANDATORY: a gone aggregator is an
                              immediate error, not a silent drop)
                              HWM per aggregator: send
                              AMI_HEADEND_AGG_SNDHWM, receive
                              AMI_HEADEND_AGG_RCVHWM
        broker        DEALER  connect config->broker      CURVE client,
                              K per live aggregator (see below)
                              HWM AMI_HEADEND_WORKER_HWM each way
        MDMS ingest   DEALER  connect config->mdms        CURVE client,
                              ZMQ_IMMEDIATE
                              HWM: send AMI_HEADEND_MDMS_SNDHWM, receive
                              AMI_HEADEND_MDMS_RCVHWM
    At a send HWM nothing blocks and nothing vanishes silently: the send
    fails and the frame is answered or counted as described below (a read
    answered ERROR AMI_E_BUSY, a BATCH answered BUSY, HEALTH and relayed
    acks counted in dropped, the head end's own BUSY acks in acks_failed,
    a REPLY not queued restarts its worker). At a receive HWM libzmq stops
    reading that connection (TCP back-pressure): the sender's queue fills
    and the sender counts what it cannot send.
    The CURVE server needs the process's ami_auth (ZAP handler, allow-list
    = the aggregators' public certificates) running BEFORE the actor
    starts; without one the start fails (libzmq would admit any client).

    Aggregators. An aggregator becomes LIVE with a valid HELLO whose role
    is "aggregator" and whose node id equals the node-id of the CURVE
    certificate it connected with (ZAP metadata from the allow-list: an
    aggregator cannot claim another's service). It stays live while the
    head end hears anything from it within 3 * heartbeat_ms; then it
    EXPIRES. A HELLO from a new routing id for a live node id moves the
    aggregator to that connection (it reconnected). A message other than
    HELLO from a routing id the head end does not know (e.g. after the
    head end restarted) is dropped and answered with the head end's own
    HELLO(role "headend", node_id, meters []), at most once per heartbeat
    per routing id, so the aggregator re-introduces itself. At most
    max_aggregators (AMI_HEADEND_MAX_AGGREGATORS; config
    headend/max-aggregators) are live at once: a HELLO from a new node id
    beyond that is refused - the aggregator does not become live, is
    offered to nobody, and its messages are answered HELLO like any
    unknown peer's - counted in aggregators_refused (each refused HELLO:
    the aggregator retries on the head end's HELLO) and warned about
    (rate-limited). It can use its other head ends meanwhile.

    Workers and concurrency. An MDP/0.1 worker holds ONE request at a time:
    the broker gives it the next only after its REPLY. The head end opens
    K = workers_per_aggregator workers per live aggregator (default
    AMI_HEADEND_WORKERS, 4), so up to K reads per aggregator are in flight
    through one head end (and K per head end when several head ends reach
    the same aggregator). K = 1 is valid and simply serialises that
    aggregator's reads. Each worker is one socket and one TCP connection:
    a head end needs 3 + K * aggregators sockets, and CZMQ's default
    process limit is 1024 sockets (zsys_set_max_sockets before any socket
    exists raises it); a worker that cannot be opened is logged and the
    aggregator is served by the others. When an aggregator expires, every
    request in flight to it is answered with ERROR AMI_E_NO_ROUTE, then
    each of its workers sends DISCONNECT and is closed (the broker answers
    mmi.service "404" once no other head end offers it).

    On-demand reads. An MDP REQUEST to worker "agg.X":
    - body must be exactly one frame that decodes as READ_REQ, else the
      worker replies ERROR(request id if one was readable,
      AMI_E_BAD_REQUEST, origin = this head end);
    - a command already past expires_ms + request_margin_ms (head end
      wall clock) is answered ERROR AMI_E_EXPIRED without being forwarded;
    - otherwise the frame's bytes go unchanged to aggregator X, and the
      head end remembers request id -> (worker, client address, X) until
      expires_ms + request_margin_ms (at most AMI_HEADEND_MAX_PENDING_MS
      from now). If the aggregator's queue is full or it has gone: ERROR
      AMI_E_BUSY / AMI_E_NO_ROUTE at once. If max_requests are already
      remembered (SEC-AVAIL-2): ERROR(request id, AMI_E_BUSY, origin =
      this head end) at once, the command neither remembered nor
      forwarded, counted in requests_busy and warned about (rate-limited);
      the worker is free again at once, and once answers or expiries bring
      the table under the bound reads are forwarded again (see
      AMI_HEADEND_MAX_REQUESTS; config headend/max-requests).
    - a READ_RESP or ERROR from X with that request id is sent back as the
      REPLY body, bytes unchanged, through the worker that got the
      request. If several commands with that request id are in flight
      here (the MDMS retried with a new counter), each is answered with
      that same frame: the aggregator keeps one path per request id, so
      one answer is all that comes, and each worker is freed at once (the
      MDMS must drop replies for request ids it has completed). An answer
      with an unknown or expired request id, or from an aggregator the
      request was not sent to, is dropped and logged (debug).
    - a request nobody answered by its expiry is answered ERROR
      AMI_E_TIMEOUT (the worker must REPLY to get more work); the MDMS
      has given up on that attempt by then.
    - ERROR frames made by the head end: [request_id or bin(0), code,
      origin = config->node_id, text].

    Interval data (PROTOCOL.md 4.9, 4.10, 8.3, 8.5). A BATCH from a live
    aggregator A:
    - whose origin is not A's node id (the id of its HELLO, which is the
      node-id of the CURVE certificate it connected with) is dropped,
      counted (batches_refused) and logged (rate-limited): a captured
      aggregator cannot inject interval data under another's name;
    - is otherwise forwarded to the MDMS ingest as the very frame received
      (bytes unchanged, the zmq message shared, not copied), and the head
      end remembers batch id -> A: O(1) (hash on the 64-bit id), at most
      batches_per_aggregator entries per aggregator, each forgotten
      batch_expiry_ms (20 s) after its last forward, or when A expires.
      The same id from A again (a resend through this head end) is
      forwarded again and the entry counts one more copy.
    - is answered by the head end itself with BATCH_ACK(batch_id,
      AMI_E_BUSY, credit 1) and not forwarded (batches_busy) when: the
      uplink cannot take it now (no MDMS connection, or its queue is at
      AMI_HEADEND_MDMS_SNDHWM; no uplink configured), A already has
      batches_per_aggregator batches awaiting acks, or another aggregator
      has a batch with that id in flight here (its ack could not be told
      apart; ids start at random 64-bit values, so this is an accident or
      an attack). The aggregator keeps the batch and resends it
      (PROTOCOL.md 8.5); credit 1 lets it probe and resume as soon as the
      path can take it.
    - malformed (does not decode, wrong frame count) is dropped and
      counted in bad-frames; a BATCH from a routing id that has not said
      HELLO is dropped and answered HELLO, like any other message.
    A BATCH_ACK from the MDMS is relayed, bytes unchanged, to the
    aggregator that sent that batch id through this head end (its current
    connection), and answers one copy of it (the entry goes when every
    copy is answered). An ack for a batch id the head end does not hold
    (never forwarded, already answered, expired, or its aggregator gone)
    is dropped and counted (acks_orphan); the aggregator ignores unknown
    acks anyway and resends what it still holds. If the ack cannot be
    queued to the aggregator (gone, queue full) it is dropped and counted
    in dropped: the aggregator resends on its ack timeout.

    MDMS uplink. Once the uplink is connected (the HELLO is retried every
    tick until the uplink takes it), and whenever the MDMS sends HELLO,
    the head end sends HELLO(role "headend", node_id, meters []). Every
    heartbeat_ms it sends HEALTH(role "headend", node_id, state, uptime,
    stats). It forwards, unchanged, a valid HEALTH frame from a live
    aggregator only if it is the aggregator's own - role "aggregator" and
    node id = that aggregator's authenticated node id - or a fleet's -
    role "meter", forwarded by the aggregator (SEC-INT-4: a captured
    aggregator cannot add or overwrite the MDMS's status rows of other
    aggregators, head ends, the broker or the MDMS); any other HEALTH is
    dropped, counted (health_refused) and logged (rate-limited). State is
    READY, or DEGRADED while it has workers but none has heard from the
    broker for liveness * broker heartbeat. Stats (names as sent):
        aggregators   live aggregators
        workers       MDP worker sockets open
        in-flight     requests awaiting an aggregator's answer
        requests      commands forwarded to aggregators (total)
        responses     answers relayed to the broker (total)
        errors        ERROR replies made by the head end (total)
        health-fwd    HEALTH frames forwarded (total)
        dropped       frames not queued: HEALTH to the MDMS, BATCH_ACK to
                      an aggregator (total)
        bad-frames    malformed or unexpected frames dropped (total)
        reconnects    worker reconnections to the broker (total)
        batches_relayed   BATCH frames forwarded to the MDMS (total)
        acks_relayed      BATCH_ACKs relayed to aggregators (total)
        acks_orphan       BATCH_ACKs for no batch held here (total)
        batches_refused   BATCHes with another origin dropped (total)
        batches_busy      BATCHes answered BUSY by the head end (total)
        batches_inflight  batch ids awaiting their ack, now
        health_refused    aggregators' HEALTH of other services dropped
                          (total)
        requests_busy     reads answered ERROR AMI_E_BUSY because
                          max_requests were in flight (total)
        handshakes_refused  CURVE handshakes on the aggregator ROUTER whose
                          key ZAP refused: not in the allow-list, or
                          revoked (total)
        handshakes_failed   other failed handshakes there: the peer is not
                          a CURVE client of this head end (plaintext, the
                          wrong server key, garbage) (total)
        aggregators_refused HELLOs of new aggregators refused because
                          max_aggregators were live (total)
        acks_failed       BUSY BATCH_ACKs made by this head end that the
                          aggregator ROUTER would not take (the aggregator
                          gone, or its queue at AMI_HEADEND_AGG_SNDHWM); the
                          aggregator resends on its ack timeout (total)
        max_aggregators   the bound of live aggregators
    Failed handshakes (SEC-AUD-2). The aggregator ROUTER is watched by an
    ami_monitor (ami_monitor.h); each failed handshake is counted (above)
    and warned about, rate-limited with the other warnings, naming the
    peer's address ("?" if the connection was gone before it could be
    asked for):
        headend HE-1: aggregators: CURVE handshake from 10.1.2.3:40112
            refused: key not in the allow-list (ZAP status 400)
        headend HE-1: aggregators: handshake from 10.1.2.3:40118 failed:
            not a CURVE client of this server (protocol error 0x...)
    The connecting sockets (MDP workers, MDMS uplink) are not watched:
    their peers are the configured broker and MDMS, which count failures
    on their side; a broker that never answers shows as DEGRADED here.
    From the MDMS, BATCH_ACK is relayed and HELLO answered; anything else
    is dropped (logged at debug).

    Malformed input from any peer (aggregator, broker, MDMS): wrong frame
    count, undecodable frame, unexpected type or MDP command - is dropped
    and logged (at most AMI_HEADEND_LOG_BURST warnings a second, the rest
    counted) and the head end keeps serving. Nothing is asserted on
    network input.

    Pipe commands (zstr strings):
        "$TERM"     stop: requests in flight are answered ERROR
                    AMI_E_NO_ROUTE ("head end stopping"), every worker
                    sends DISCONNECT, sockets close
        "ENDPOINT"  reply one string: the bound aggregator endpoint with
                    the real port, e.g. "tcp://127.0.0.1:45123"
        "STATUS"    reply one zmsg of decimal/text strings: frame 0 live
                    aggregators, frame 1 worker sockets, frame 2 requests
                    in flight, then one frame per live aggregator sorted by
                    node id: "<node id> <workers> <in flight>"
        "STATS"     reply one zmsg, one string frame per HEALTH stat, in
                    HEALTH order: "<name> <decimal value>", e.g.
                    "batches_relayed 42" (what the next HEALTH would say;
                    failed handshakes counted as of the command)

    Threads. The actor owns its sockets and state; talk to it only through
    its pipe. Several head ends may run in one process (tests) - they share
    the process's one ami_auth.
*/
#ifndef AMI_HEADEND_H_INCLUDED
#define AMI_HEADEND_H_INCLUDED

#include <czmq.h>
#include <stddef.h>

#include "ami_cert.h"
#include "ami_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Defaults, used for every numeric config field left at 0. */

/*  1 s: the bus-wide HEALTH interval (SERVICES.md `heartbeat`); an
    aggregator silent for 3 of them (3 s) has gone. */
#define AMI_HEADEND_HEARTBEAT_MS        1000
/*  The MDP heartbeat and liveness MUST equal the broker's (RFC 7 "Known
    Weaknesses": both sides use one interval); these are the broker's
    defaults (AMI_BROKER_HEARTBEAT_MS, AMI_BROKER_LIVENESS). */
#define AMI_HEADEND_BROKER_HEARTBEAT_MS 1000
#define AMI_HEADEND_BROKER_LIVENESS     3
/*  4 workers per aggregator: an MDP worker carries one request at a time,
    and a pole-top aggregator's RF mesh serves a few meters at once; 4
    keeps a handful of operators' reads behind one aggregator from queuing
    behind a slow meter, at 4 sockets per aggregator. 1 serialises. */
#define AMI_HEADEND_WORKERS             4
#define AMI_HEADEND_MAX_WORKERS         64      /* per aggregator */
/*  1000 aggregators per head end [headend/max-aggregators]: a large
    utility runs thousands in all, spread over its head ends; bounds the
    tables against a peer that churns node ids (each costs K sockets too).
    Over it a new aggregator's HELLO is refused (aggregators_refused). */
#define AMI_HEADEND_MAX_AGGREGATORS     1000
/*  10000 remembered requests [headend/max-requests]: an honest broker
    gives each worker one request at a time, so the honest peak is
    aggregators * K (4000 by default); the bound only stops a misbehaving
    broker or client (every entry lives until its command expires) from
    growing memory without limit (an entry, with its client frame and
    table slots, is a few hundred bytes: a few MiB). Over
    it the request is answered ERROR AMI_E_BUSY at once (SEC-AVAIL-2). */
#define AMI_HEADEND_MAX_REQUESTS        10000
/*  2 s after a command's expires_ms the head end forgets it: data-centre
    clocks (MDMS, head end) agree to well under a second under NTP, and a
    meter's refusal issued right at expiry (AMI_E_EXPIRED) still has time
    to travel back through the aggregator. */
#define AMI_HEADEND_REQUEST_MARGIN_MS   2000
/*  No request is remembered longer than 60 s, whatever its expires_ms
    says: the MDMS's own read deadline is seconds (mdms/read-timeout 3 s x
    retries), and a command valid for longer would pin a worker. */
#define AMI_HEADEND_MAX_PENDING_MS      60000
/*  Warnings about bad input per second; the rest are counted. */
#define AMI_HEADEND_LOG_BURST           20
/*  32 batches awaiting their BATCH_ACK per aggregator: an honest one has
    at most its end-to-end credit in flight (AMI_CREDIT_INITIAL, 4, over
    all head ends), plus, here, batches whose ack was lost and that it
    resent elsewhere, which linger until they expire (about credit per ack
    timeout: 2 x 4 in AMI_HEADEND_BATCH_EXPIRY_MS) - 12 at worst; 32 leaves
    room and bounds what one captured aggregator ignoring credit can push
    towards the MDMS through this head end (32 x 1 MiB). Over it the
    batch is answered BUSY. */
#define AMI_HEADEND_BATCHES_PER_AGGREGATOR  32
/*  A batch id is remembered for 2 x AMI_BATCH_ACK_TIMEOUT_MS (20 s): the
    aggregator resends after one timeout, so an ack later than two is for a
    batch it has long sent again; a later ack is an orphan (acks_orphan). */
#define AMI_HEADEND_BATCH_EXPIRY_MS     (2 * AMI_BATCH_ACK_TIMEOUT_MS)

/*  Socket queues (issue 6). libzmq counts messages, not bytes, so each
    bound below says what it means in bytes: a frame is at most
    AMI_MAX_FRAME (1 MiB), and only BATCH frames come near that (typically
    ~150 KiB, at most AMI_BATCH_MAX_BYTES); every other frame is small. */

/*  1000 frames queued to one aggregator (aggregator ROUTER, send). The
    head end sends an aggregator READ_REQs (one per MDP worker in flight:
    K <= AMI_HEADEND_MAX_WORKERS = 64), BATCH_ACKs (one per batch in
    flight, batches_per_aggregator, 32 by default) and a HELLO now and
    then: ~100 at the honest peak, so an aggregator meets the bound only
    when it has stopped reading. All those frames are < 1 KiB (a signed
    READ_REQ ~300 bytes, a BATCH_ACK < 64), so a full queue is < 1 MiB
    per aggregator. At the bound the send fails at once (ROUTER_MANDATORY,
    DONTWAIT): a read is answered ERROR AMI_E_BUSY, a relayed ack counted
    in dropped, the head end's own BUSY ack in acks_failed. */
#define AMI_HEADEND_AGG_SNDHWM          1000
/*  64 frames received from one aggregator and not read yet (aggregator
    ROUTER, receive). Its BATCH frames are the large ones: an aggregator
    never has more than 64 of its own batches in flight (its window,
    AMI_AGGREGATOR_MAX_INFLIGHT; the MDMS's credit keeps it nearer
    AMI_CREDIT_INITIAL, 4), so an honest window fits, and the bound keeps
    what one aggregator - even a captured one ignoring credit - can make
    the head end hold to 64 x 1 MiB = 64 MiB (~10 MiB of typical batches;
    its other frames are smaller: a HELLO listing AMI_MAX_HELLO_METERS
    meters ~40 KiB, HEALTH, READ_RESP and ERROR < 8 KiB). The head end
    reads 64 messages a pass, so an honest aggregator is not slowed; over
    it libzmq stops reading that connection (TCP back-pressure) and the
    aggregator's own queue and counters take over. libzmq's default
    (1000) would allow ~1 GiB. */
#define AMI_HEADEND_AGG_RCVHWM          64
/*  256 frames queued towards the MDMS ingest (uplink, send). BATCH frames
    are the large ones: the MDMS's credit keeps about its ingest queue (32
    batches) waiting over all senders, so 256 is 8x what honest interval
    data needs while the MDMS reads, and bounds the bytes to 256 x 1 MiB =
    256 MiB (~40 MiB of typical ~150 KiB batches) - one aggregator's whole
    custody buffer by default - where libzmq's default (1000) would allow
    ~1 GiB. HEALTH frames (own and forwarded, < 3 KiB) and HELLO are
    small. At the bound (as when the MDMS is not connected: the uplink is
    ZMQ_IMMEDIATE) a BATCH is answered BUSY (batches_busy; the aggregator
    keeps it in custody) and a HEALTH is dropped and counted (dropped; it
    is sent again next heartbeat). */
#define AMI_HEADEND_MDMS_SNDHWM         256
/*  1000 frames received from the MDMS and not read yet (uplink, receive):
    the MDMS sends only BATCH_ACKs (< 64 bytes, one per batch relayed)
    and HELLO, which the head end reads at once, so a full queue is
    < 64 KiB (1 GiB only if the MDMS sent maximal frames, which it never
    does). Over it the MDMS's sends fail and it counts them (send_failed);
    the aggregators resend the batches whose ack was lost. */
#define AMI_HEADEND_MDMS_RCVHWM         1000
/*  128 frames each way on one MDP worker's DEALER. MDP gives a worker one
    request at a time, so what a worker queues honestly is its READY, one
    REPLY and a HEARTBEAT per broker heartbeat until the broker reads
    them; a broker silent for liveness heartbeats (at most 100,
    headend/broker-liveness) makes the worker start afresh, so 128 is
    never met while the broker is alive, and a REPLY is refused (the
    worker restarts: reconnects) only when the broker stopped reading.
    In bytes: a REPLY carries a READ_RESP or ERROR < 8 KiB, a REQUEST a
    signed READ_REQ < 1 KiB, HEARTBEATs a few bytes: < 1 MiB per worker
    either way (128 MiB only if the broker sent maximal frames). */
#define AMI_HEADEND_WORKER_HWM          128

/*  Configuration. Zero-initialise, then set the strings and cert; numeric
    fields left at 0 take the defaults above (negative is invalid). The
    actor copies what it keeps during start-up: the struct, its strings
    and the certificate need only stay valid until ami_headend_new has
    returned. */
typedef struct {
    const char *node_id;            /* this head end's id, e.g. "headend-1";
                                       must equal the cert's node-id. Required */
    ami_cert_t *cert;               /* own certificate with secret key, borrowed.
                                       Required */
    const char *endpoint;           /* aggregator-facing ROUTER bind, e.g.
                                       "tcp://127.0.0.1:7201" or ":*". Required */
    const char *broker;             /* broker endpoint. Required */
    const char *broker_key;         /* broker's CURVE public key, Z85 (40). Required */
    const char *mdms;               /* MDMS ingest endpoint; NULL or "" = no
                                       uplink (tests of other roles only) */
    const char *mdms_key;           /* MDMS's CURVE public key, Z85; required
                                       when mdms is set */
    int heartbeat_ms;               /* HEALTH interval; aggregators expire
                                       after 3 of them. 0 = 1000 */
    int broker_heartbeat_ms;        /* MDP heartbeat, = the broker's. 0 = 1000 */
    int broker_liveness;            /* MDP liveness, = the broker's. 0 = 3 */
    int workers_per_aggregator;     /* K, 1..AMI_HEADEND_MAX_WORKERS. 0 = 4 */
    size_t max_aggregators;         /* live aggregators at most
                                       [headend/max-aggregators];
                                       0 = AMI_HEADEND_MAX_AGGREGATORS */
    size_t max_requests;            /* [headend/max-requests];
                                       0 = AMI_HEADEND_MAX_REQUESTS */
    int request_margin_ms;          /* 0 = AMI_HEADEND_REQUEST_MARGIN_MS; tests
                                       shorten it to see AMI_E_TIMEOUT quickly */
    size_t batches_per_aggregator;  /* batches awaiting an ack per aggregator;
                                       0 = AMI_HEADEND_BATCHES_PER_AGGREGATOR */
    int batch_expiry_ms;            /* how long a batch id is remembered;
                                       0 = AMI_HEADEND_BATCH_EXPIRY_MS (tests
                                       shorten it) */
} ami_headend_config_t;

/*  The head end actor, following the ami-bus actor convention
    (ami_service.h): it signals the pipe, validates the config, binds the
    ROUTER (CURVE server) and connects the MDMS uplink, then reports READY;
    on an invalid config (logged, naming the field), no ami_auth running,
    a certificate without its secret key or a failed bind it reports
    FAILED and waits for "$TERM". */
void
    ami_headend_actor (zsock_t *pipe, void *args);

/*  Start a head end. Returns the actor, or NULL (after logging why); then
    nothing is left running. Destroy with zactor_destroy (). */
zactor_t *
    ami_headend_new (const ami_headend_config_t *config);

#ifdef __cplusplus
}
#endif

#endif
