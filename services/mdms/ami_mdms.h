/*  ami_mdms.h - the MDMS: the system of record of ami-bus, a CZMQ actor.

    This header is the manual.

    What it does. The MDMS holds the meter registry, every verified
    reading and the encrypted customer records (LMDB, ami_mdms_db.h) and
    the operator audit log (ami_mdms_audit.h), serves operators (amictl)
    on its API socket (role-limited, rate-limited, every request
    audited), sends signed on-demand read commands to meters through the
    Majordomo broker and the head ends, verifies and stores the answers,
    takes in the meters' interval data (BATCH, exactly once per meter and
    interval, ami_mdms_ingest.h), watches the health of every service, and
    publishes an event feed.

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
            BATCH (interval data, PROTOCOL.md 4.9, 8.5): queued whole
            (not decoded yet) for the ingest (ami_mdms_ingest.h, which is
            the manual of what follows); each pass of the actor's loop runs
            one group commit from that queue: every block checked (a
            failing block is rejected for good: counted in
            blocks_rejected, warned, EVENT security - both at most
            AMI_MDMS_LOG_BURST a second - and never stored), the good
            intervals written once per (meter, interval) in ONE durable
            LMDB transaction, and only then one BATCH_ACK per batch sent to
            the routing id it came through: status 0 and the origin's
            credit, or after a storage failure the error code
            (AMI_E_MAP_FULL, AMI_E_STORAGE) and credit 0 with nothing of
            the group stored. A BATCH that does not decode is dropped
            without an ack (ingest_malformed). While the queue is full
            (ingest_queue batches) the ingest socket is not read.
            Every pass also serves every other socket with input, so a
            steady stream of interval data never starves the operators or
            the broker's replies.
    events  XPUB with ZMQ_XPUB_MANUAL, bind, CURVE server: subscribers
            see a PUB (PROTOCOL.md 8.6). Two frames per event:
            [topic "event.<kind>"][EVENT], kind = read_done, read_failed,
            meter_alarm, meter_offline, service_down, service_up, security
            (PROTOCOL.md 7.3). EVENT.seq starts at 1 and grows by 1 per
            event; origin = this node id. SEC-AUTH-3: only role
            "operator" and "monitor" keys may read it. Every subscription
            is a frame the actor receives; it applies it (ZMQ_SUBSCRIBE for
            the subscriber it came from) only if the certificate metadata
            "role" of the sender (ami_auth_peer_meta) is
            AMI_MDMS_EVENTS_ROLE_OPERATOR or AMI_MDMS_EVENTS_ROLE_MONITOR
            and its key is still listed (ami_auth_peer_allowed). Any other
            allow-listed key (a head end, the broker) stays connected but
            subscribed to nothing, so it never receives an event; the
            refusal is counted (events_refused), warned about
            (rate-limited) and published (EVENT security). A subscription
            takes effect when the actor has handled it (one pass of its
            loop). Unsubscriptions are always applied. Limitation: a
            subscriber whose key is revoked AFTER it subscribed keeps
            its subscriptions until it reconnects (XPUB cannot drop one
            peer); its reconnect is then refused by ZAP.
            Loss (issue 6, the documented exception to "never drop
            silently"): events are loss-tolerant NOTIFICATIONS, never
            data - every reading, interval and audit entry they announce
            is stored and can be fetched through the api. A subscriber
            that does not read keeps at most AMI_MDMS_EVENTS_SNDHWM events
            queued; further events to IT are dropped by libzmq (XPUB does
            not block, and ZMQ_XPUB_NODROP would let one slow subscriber
            hold back the feed of all: it is not set). libzmq reports no
            per-subscriber drop, so the MDMS cannot count them; a
            subscriber detects its loss by a gap in EVENT.seq, and the
            last seq published is in the MDMS's stats (events_seq, in
            API_STATUS and pipe STATUS) for a subscriber or an operator to
            compare.
    broker  DEALER, connect, CURVE client of the broker: an MDP/0.1 client
            (RFC 7): sends ["", "MDPC01", service, body], receives
            ["", "MDPC01", service, body].

    Every socket: ZMQ_MAXMSGSIZE AMI_MAX_FRAME, linger 100 ms, never blocks
    on send (a send that cannot go out at once is dropped, counted in
    send_failed and logged), ZMTP heartbeats; ROUTERs are
    ROUTER_MANDATORY, the DEALER is IMMEDIATE.

    Queue bounds (issue 6; ZeroMQ HWMs count messages per peer, so each
    bound is also given in bytes; every frame is at most AMI_MAX_FRAME):
      api     send  max_pending + AMI_MDMS_API_RCVHWM replies per operator
                    connection; receive AMI_MDMS_API_RCVHWM requests
      ingest  send  AMI_MDMS_INGEST_SNDHWM acks/HELLOs per head end;
                    receive ingest_queue + AMI_MDMS_INGEST_RCV_SLACK
                    messages per head end: the batches the MDMS's credit
                    lets in (ingest_queue x < AMI_MAX_FRAME: 32 MiB at the
                    default) plus room for HEALTH and HELLO (< 3 KiB each)
      events  send  AMI_MDMS_EVENTS_SNDHWM events per subscriber;
                    receive AMI_MDMS_EVENTS_RCVHWM subscriptions
      broker  send  max_pending + 65 536 MDP requests (one try of every
                    read in flight plus a full MMI question ring); receive
                    AMI_MDMS_BROKER_RCVHWM replies
    What happens at each bound: a send the socket will not take fails at
    once (send_failed, warned: api reply, ingest ack, broker request; a
    read try so lost times out and is retried); a full receive side stops
    libzmq reading that connection, so the sender is slowed by TCP and
    nothing is lost. The one exception is the event feed: see events.
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
      - action unknown                           -> ERROR AMI_E_BAD_REQUEST
                                                    "unknown action"
      - role does not hold the action            -> ERROR AMI_E_DENIED
        (logged with operator, role, action, meter, corr; EVENT security)

    Audit (SEC-AUD-1, ami_mdms_audit.h). EVERY request that gets a reply -
    all of the refusals above included - is appended to the audit log once
    its outcome is known: operator id and ami-role of the certificate
    (outside the id charset: '_'; over 32 bytes: cut; missing: "unknown" /
    "NONE"), action (0 when the request did not decode), meter id, corr
    (zero when unknown), result = the ERROR code of the reply, or 0. The
    entry of a successful READ is written in the same LMDB transaction as
    the reading; every other entry is its own durable commit, written
    BEFORE the reply is sent. If that write fails, a reply that would have
    carried data is replaced by ERROR AMI_E_STORAGE (nothing is disclosed
    unaudited) and the failure is logged; an ERROR goes out as it was.
    A request with no intact envelope gets no reply and no entry (there is
    no one to answer; it is counted in "malformed").

    Then:
      READ (meter_id, timeout_ms: 0 = config read timeout, capped at
      AMI_MDMS_MAX_READ_TIMEOUT_MS)
        -> API_READINGS (corr, more=false, 1 row: the new reading with
           requested_ms, read_ms, stored_ms) + EVENT read_done
        or ERROR with code, + EVENT read_failed:
           AMI_E_BAD_REQUEST   meter_id empty; corr already in flight
           AMI_E_RATE_LIMITED  SEC-AVAIL-2: the operator's token bucket is
                               empty (checked first, before the registry
                               lookup, so floods of unknown ids are limited
                               too), or the meter's (checked after the
                               lookup: only registered meters get buckets).
                               Answered at once, never queued, nothing is
                               sent towards the meter; logged (rate-limited
                               warnings), counted, audited; no event (a
                               flood must not become an event flood).
                               Limits: config rate_* (ami_mdms_rate.h).
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
                               (SEC-FAIL-1: the group commit, or a put in
                               it, failed; nothing of it is stored - not
                               the reading, not its audit entry, which is
                               then written on its own with this result if
                               it can be - and no API_READINGS follows; the
                               other reads of that group fail the same way)
      RECOVER (SEC-INT-5; meter_id, from_ms, to_ms, timeout_ms) - a READ
      whose READ_REQ also carries a load-profile range, (from_ms / 1000,
      to_ms / 1000] of interval ends in Unix seconds (PROTOCOL.md 4.5):
      the meter answers the read and sends its intervals of that range
      again, later, through ingest (ami_mdms_ingest.h stores each (meter,
      interval) once: what was stored counts in intervals_dup), so the
      reply does not wait for them; INTERVALS and `amictl gaps` show them
      once stored. Same roles (OPERATOR), rate limits, pending bound,
      retries, deadline, events and audit as READ (audited as action 10
      "recover"; the range is logged at info, the audit entry has no
      field for it).
        -> API_READINGS as READ
        or ERROR as READ, and AMI_E_BAD_REQUEST when from_ms or to_ms is
           0, from_ms / 1000 >= to_ms / 1000, or the range is over
           AMI_PROFILE_RECOVER_MAX_S (31 days)
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
           heartbeats. Paged (PROTOCOL.md 4.11 action 4, 4.14): from_ms is
           a row count to skip, limit the rows a page holds (0 or more
           than AMI_MAX_API_SERVICES: AMI_MAX_API_SERVICES), more=true if
           rows follow (next page: from_ms = rows received so far); the
           order is recomputed per page. Every row carries stats: the MDMS's
           own are the ingest statistics (ami_mdms_ingest.h, in that
           order) then reads_ok, reads_failed, reads_pending, rate_limited,
           denied, malformed, audit_failures, bad_responses (answers that
           failed an end-to-end check), handshakes_refused (CURVE
           handshakes on api, ingest, events refused by the allow-list),
           handshakes_failed (peers that are not CURVE clients of ours),
           frames_refused (frames of revoked or expired keys' live
           sessions: ami_auth_refused_count), events_refused
           (subscriptions refused), send_failed (replies, acks, events
           and broker requests a socket would not take: the peer gone or
           full; each dropped and warned about), then one counter per
           refusal at a bound (issue 6): events_seq (the last EVENT.seq
           published: a subscriber compares it with what it received),
           reads_busy (reads refused AMI_E_BUSY because max_pending reads
           were in flight; also counted in reads_failed), services_evicted
           (services forgotten to make room in a full services table,
           AMI_MDMS_MAX_SERVICES: the longest-silent one), peers_refused
           (ingest peers not remembered, the peer table being full: their
           messages are still handled, but they are not told to
           introduce themselves), mmi_refused (MMI questions not asked,
           the question ring being full), health_refused (ingest HEALTH
           refused, SEC-INT-4: a head end's HEALTH must carry its
           certificate's node id, relayed HEALTH must be of role
           aggregator or meter; mdms, broker or any other role is never
           taken from ingest); the ingest statistic
           ingest_throttled counts the BATCH_ACKs that slowed a head end's
           senders (credit 0 or AMI_E_BUSY); the broker's row the
           stats of its last mmi.ami-stats answer; every other row the
           stats of that service's last HEALTH, as sent.
      INTERVALS (meter_id, from_ms, to_ms: interval END times, inclusive,
      0 = open; limit: 0 or over AMI_MAX_API_INTERVALS =
      AMI_MAX_API_INTERVALS) - the meter's stored interval data
        -> API_INTERVALS (meter_id, records oldest first, more=true if
           stored intervals remain in range: next page from_ms = last
           end_s * 1000 + 1, same to_ms)
        or ERROR AMI_E_UNKNOWN_METER / AMI_E_BAD_REQUEST (no meter id;
           from > to) / AMI_E_STORAGE (a stored record is corrupt).
      VERIFY (SEC-NR-1, SEC-INT-1; meter_id, from_ms, to_ms: 0 = open) -
      re-checks every stored reading of the meter with from_ms <= read_ms
      <= to_ms: the stored proof (the signed READ_RESP frame) must verify
      with the meter's registry signing key, decode, and name this meter
      and this reading's request id; its sealed READING must open with the
      MDMS box key; the opened bytes must equal the stored READING bytes.
        -> API_VERIFY (checked = readings examined, failed, failures in
           read_ms order, the first AMI_MAX_API_FAILURES):
             {read_ms, AMI_E_BAD_SIGNATURE}  proof does not verify/decode
             {read_ms, AMI_E_DECRYPT}        sealed READING does not open
             {read_ms, AMI_E_RANGE}          content differs (stored READING
                                             is not what the meter sealed,
                                             or the proof is another read's)
             {read_ms, AMI_E_STORAGE}        the row's layout is broken
        or ERROR AMI_E_BAD_REQUEST (no meter id; from > to) /
           AMI_E_UNKNOWN_METER. Cost: one Ed25519 verify and one box open
           per reading (~0.1 ms): 10 000 readings take about a second, during
           which the MDMS serves nothing else.
      AUDIT (from_ms, to_ms, limit) - PAGING RULE: to_ms, when non-zero, is
      "start after this seq" (it carries a seq, not a time); from_ms keeps
      only entries with time_ms >= from_ms. Oldest first, limit 0 = 100,
      capped at AMI_MAX_API_AUDIT.
        -> API_AUDIT rows (seq, time_ms, operator, role, action, meter_id,
           corr, result, the entry's stored chain hash), more=true if
           further entries match: next page = same from_ms, to_ms = the
           last row's seq. ERROR AMI_E_STORAGE if a stored entry does not
           decode (run AUDIT_VERIFY). Entries of requests that did not
           decode (action 0) are listed with action 0 if the wire codec
           accepts it (checked once at start), else left out of the page
           (logged): they stay in the log and in AUDIT_VERIFY.
      AUDIT_VERIFY - walks the whole chain (rule in ami_mdms_audit.h) and
      checks its tail against the anchor file (config audit_anchor_path)
        -> API_VERIFY (checked = entries examined, failed, failures in seq
           order: {seq, AMI_E_BAD_SIGNATURE} altered / forged / moved,
           {seq, AMI_E_NOTFOUND} removed, {first, AMI_E_TRUNCATED} and
           {last, AMI_E_TRUNCATED} the range of seqs cut from the end of
           the log (one failure if it is one seq); ref 0 = the anchor file
           itself: {0, AMI_E_NOTFOUND} missing, {0, AMI_E_BAD_SIGNATURE}
           not the anchor the MDMS wrote - these findings are reported by
           every later verify too). About 1 s per million entries.
      CUSTOMER (SEC-CONF-2; meter_id) - decrypts the meter's customer
      record (ami_mdms_db.h "customers")
        -> API_CUSTOMER (meter_id, name, address, account)
        or ERROR AMI_E_BAD_REQUEST (no meter id) / AMI_E_UNKNOWN_METER /
           AMI_E_NOTFOUND (no customer record) / AMI_E_DECRYPT (the record
           does not open: logged, EVENT security).

    On-demand read (FUN-READ-1/2; Lazy Pirate, zguide chapter 4, over a
    DEALER so that many reads are in flight at once). The READ_REQ is
    (meter_id, request_id, counter, issued_ms = now, expires_ms = the
    read's deadline), encoded with a zero signature and
    signed in place with the MDMS signing key (ami_e2e_sign), sent as an
    MDP request to service "agg.<aggregator of the meter>". request_id is
    NOT the operator's corr (SEC-INT-3: a client reusing a corr would let a
    relay replay an old signed answer) but 16 fresh random bytes per read
    (randombytes_buf), kept across that read's retries; the MDMS maps
    request_id -> pending read -> corr, the operator's replies carry its
    corr, logs show both (corr=, req=), audit entries the corr. Two reads
    with the same corr in flight at once: the second is refused
    AMI_E_BAD_REQUEST. Counter: one
    MDMS-wide strictly increasing counter, persisted in blocks (see
    ami_mdms_db.h). Each try waits timeout / (retries + 1); when a try times
    out the MDMS asks the broker "mmi.service" for the aggregator's
    service: 404 ends the read with AMI_E_NO_ROUTE, 200 resends it (same
    request_id, NEW counter, issued_ms and signature) while tries remain;
    the deadline ends it with AMI_E_TIMEOUT. A meter-signed READ_RESP with
    status AMI_E_REPLAY (two reads of one meter reached it out of counter
    order) is resent with a new counter while tries remain, within the
    deadline. An ERROR from a relay (head end, aggregator, fleet) is
    unauthenticated: it ends the current try only, like a timed-out one
    (MMI question, then resend through whichever head end the broker
    picks); codes other than AMI_E_NO_ROUTE are taken as
    AMI_E_UNREACHABLE. SEC-AVAIL-3: tries ended by a relay ERROR have a
    budget of their own, AMI_MDMS_RELAY_TRIES per read, on top of the
    retries (which count tries that timed out or that the meter refused
    as a replay), so that a head end lying with ERRORs - whose workers the
    broker, serving its longest-idle worker first, hands most tries to -
    cannot end a read that an honest head end offering the same service
    would serve: the read is resent after each relay ERROR while that
    budget and the deadline last. The resends after relay ERRORs are
    spaced, AMI_MDMS_RELAY_BACKOFF_MS doubling up to
    AMI_MDMS_RELAY_BACKOFF_MAX_MS, so that a relay that lost its link a
    moment ago (a reset connection reconnecting) is asked again after the
    link is back rather than AMI_MDMS_RELAY_TRIES times within a few
    milliseconds. The relay ERROR that spends the budget ends the read
    with it (so an aggregator without the meter's fleet fails within
    about 0.7 s, not at the deadline); with retries AMI_MDMS_NO_RETRIES
    the first one does. A deadline reached with no meter answer is
    AMI_E_TIMEOUT; its text names the last relay error, if any (issue 6:
    on slow, stalling or reset links a read completes or fails with the
    timeout error). Every heartbeat the MDMS also
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
    meter_id and request_id equal the read's, and its read_ms lies within
    [first try's issued_ms - AMI_E2E_SKEW_MS, expires_ms] (SEC-INT-3; a
    READ_RESP does not say which try it answers). (Failures of the last
    three are dropped like a bad signature.) Then it is stored durably
    (reading + the whole signed READ_RESP frame as proof of origin,
    SEC-NR-1) BEFORE the operator gets API_READINGS: group commit, the
    readings verified while one wake-up drains up to 64 broker messages
    are stored with their audit entries in ONE LMDB transaction, committed
    once, and only then answered.

    Pipe commands (zstr strings):
        "$TERM"     stop (reads in flight are answered ERROR AMI_E_BUSY
                    "MDMS stopping")
        "ENDPOINT"  reply 3 frames: the api, ingest and events endpoints as
                    bound (real ports, e.g. "tcp://127.0.0.1:41234")
        "STATUS"    reply one zmsg of "name=value" frames: pending,
                    services, routes, broker (READY|DOWN), counter_reserved,
                    events (last seq), readings, meters, malformed, denied,
                    reads_ok, reads_failed, send_failed, bad_responses,
                    rate_limited, audit_seq (last audit entry), audit_tail (ok|TAMPERED,
                    as checked at start, the anchor included),
                    audit_anchor (the seq the anchor file last written
                    records), audit_failures (entries that
                    could not be written), handshakes_refused,
                    handshakes_failed, frames_refused, events_refused,
                    events_seq (= events), reads_busy, services_evicted,
                    peers_refused, mmi_refused, health_refused (as in
                    API_STATUS), then the
                    ingest statistics (ami_mdms_ingest.h: batches_in ...
                    ingest_throttled)

    Security visibility (SEC-AUD-2). Every failure below is counted,
    warned about (at most AMI_MDMS_LOG_BURST warnings a second) and
    published as EVENT security (topic event.security) naming the meter
    when there is one and the error code's name (AMI_E_...) in its text:
      answer      a READ_RESP that failed a check: bad signature
                  (AMI_E_BAD_SIGNATURE), sealed READING that does not open
                  (AMI_E_DECRYPT), another meter's or another request's
                  READING (AMI_E_REPLAY), a stale reading (AMI_E_EXPIRED),
                  another meter id (AMI_E_WRONG_TARGET)
      denial      an API request of a role that does not hold the action,
                  a non-operator key on the api, a subscription of a key
                  that may not read the feed (AMI_E_DENIED)
      handshake   a CURVE handshake on api, ingest or events refused by
                  the allow-list (ZAP), with the peer's "ip:port"
                  (ami_monitor.h says how it is found, and its limits)
      ingest      an interval block rejected (ami_mdms_ingest.h)
      stored-data VERIFY or AUDIT_VERIFY failures, a customer record that
                  does not decrypt
    Each class has its own budget of AMI_MDMS_LOG_BURST events a second:
    the rest of that second are left out of the feed and announced by one
    event ("N <class> security events left out of the feed ...") when the
    second is over, so a flood of one class neither floods subscribers nor
    hides another class. Not published, only counted and warned about:
    handshakes of peers that are not CURVE clients of ours (any host that
    can open a TCP connection, e.g. a port scanner, makes those), and
    AMI_E_RATE_LIMITED refusals (a flood must not become an event flood).

    Threads. The actor owns its sockets, its database and all state; talk
    to it only through its pipe. One MDMS per database directory.
*/
#ifndef AMI_MDMS_H_INCLUDED
#define AMI_MDMS_H_INCLUDED

#include <czmq.h>
#include <stddef.h>

#include <stdint.h>

#include "ami_cert.h"
#include "ami_e2e.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Defaults, used for every numeric config field left at 0 (except the
    rate limits: see AMI_MDMS_RATE_OPERATOR). */

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
    bound (SEC-AVAIL-2), counted in reads_busy. ami-mdms: config
    mdms/max-pending. */
#define AMI_MDMS_MAX_PENDING        10000
/*  Largest max_pending accepted: 1 000 000 reads (~400 MB of state, and
    as many queued MDP requests at worst on the broker link); a utility's
    operators never legitimately hold that many reads at once. */
#define AMI_MDMS_MAX_PENDING_MAX    1000000
/*  60 s: the longest an operator may ask one read to wait; a pending slot
    must not be held for hours by a typo. */
#define AMI_MDMS_MAX_READ_TIMEOUT_MS 60000
/*  Services (role, node id) remembered from HEALTH: a deployment has tens;
    the bound stops forwarded junk from growing the table (the
    longest-silent entry makes room, counted in services_evicted). */
#define AMI_MDMS_MAX_SERVICES       1024
/*  Socket HWMs (see "Queue bounds" above), in messages per peer.
    API_RCVHWM 100 requests per operator connection: an API_REQ is < 200
    bytes (~20 KB queued), the actor reads 64 a pass, so 100 is more than
    a pass of backlog; a client pipelining further waits in TCP (nothing
    is lost). A client sending maximal junk frames could make it 100 x
    AMI_MAX_FRAME = 100 MiB before they are read and dropped. The api's
    send HWM is max_pending + this: every read the MDMS holds may be one
    operator's and be answered in one burst of deadlines, plus an answer
    per request waiting to be read; a read's answer is < 1 KiB (~10 MB at
    the default), a page (STATUS, HISTORY, INTERVALS) up to ~200 KiB but a
    request/reply client has one in flight. */
#define AMI_MDMS_API_RCVHWM         100
/*  1000 acks per head end: one BATCH_ACK (< 32 bytes) per batch received,
    HELLO < 60 bytes: ~60 KB. Only a head end that stops reading fills it;
    an ack then fails (send_failed) and the aggregator resends its batch
    after AMI_BATCH_ACK_TIMEOUT_MS (stored once: exactly-once). */
#define AMI_MDMS_INGEST_SNDHWM      1000
/*  Ingest receive HWM = ingest_queue + 256 per head end. The queue part
    is what the MDMS's credit lets senders have in flight (each sender's
    credit is a share of ingest_queue; BATCH frames < AMI_BATCH_MAX_BYTES,
    ~150 KB typical: 32 MiB at worst at the default); the 256 are for the
    HEALTH (< 3 KiB) and HELLO frames that arrive while a full queue stops
    the reading: 2.5 s of HEALTH from 100 services behind one head end,
    < 1 MiB. Beyond it the head end is slowed by TCP (its own bounded
    uplink then refuses batches BUSY and drops HEALTH, counted there). */
#define AMI_MDMS_INGEST_RCV_SLACK   256
/*  10 000 events per subscriber: an EVENT frame is < 512 bytes (~5 MB
    queued per subscriber); seconds of a benchmark's read rate, minutes
    of normal traffic (reads are rate-limited, security events are at
    most AMI_MDMS_LOG_BURST a second per class). Beyond it that
    subscriber loses events (the documented exception, "events" above). */
#define AMI_MDMS_EVENTS_SNDHWM      10000
/*  100 subscription frames per subscriber: a subscriber sends one per
    topic (7 kinds); a topic is < 32 bytes (typical ~3 KB). */
#define AMI_MDMS_EVENTS_RCVHWM      100
/*  1000 replies from the broker: the actor reads 64 a pass (a pass is
    milliseconds), so 1000 is many passes of backlog. Replies are small:
    a READ_RESP < 5 KiB (sealed READING < AMI_MAX_SEALED, ~1 KiB typical),
    MMI answers ~20 bytes, mmi.ami-stats < 3 KiB: ~1-5 MB. Beyond it the
    broker is slowed by TCP, then refuses at its own bound
    (AMI_BROKER_SNDHWM, counted replies_dropped there) and the read is
    retried (Lazy Pirate). */
#define AMI_MDMS_BROKER_RCVHWM      1000
/*  At most this many warnings about bad input per second, and at most this
    many EVENT security a second per class of failure (the rest are counted
    and announced by one event when the second is over: "Security
    visibility" above). */
#define AMI_MDMS_LOG_BURST          20
/*  SEC-AVAIL-3: tries of one read that may end in a relay ERROR, on top of
    the retries. The broker gives each request to its longest-idle worker
    and a head end that answers everything with an ERROR at once is always
    idle again first, so its whole pool (AMI_HEADEND_WORKERS = 4 workers
    per aggregator) can take consecutive tries of a read before an honest
    head end's worker gets one; 8 lets a read get past such a pool even
    when a concurrent read holds the honest worker the first time round,
    and still ends a read for a meter that is really unreachable after 8
    round trips spaced by AMI_MDMS_RELAY_BACKOFF_MS (about 0.7 s) instead
    of at its deadline. */
#define AMI_MDMS_RELAY_TRIES        8
/*  The wait before the resend that follows a relay ERROR: 10 ms, doubling
    per relay ERROR of the read, at most 160 ms. The waits of the 7 resends
    the budget allows add up to 630 ms: past ZeroMQ's reconnect interval
    (100 ms) plus a CURVE handshake, so a relay whose connection to the
    aggregator was reset has it back before the budget is spent, and still
    well inside the default read timeout (AMI_MDMS_READ_TIMEOUT_MS). */
#define AMI_MDMS_RELAY_BACKOFF_MS       10
#define AMI_MDMS_RELAY_BACKOFF_MAX_MS   160
/*  SEC-AUTH-3: certificate roles (metadata "role" in the MDMS allow-list)
    whose subscriptions to the event feed are applied. "monitor" is for
    monitoring systems (a SIEM, a dashboard) that read the feed and
    nothing else: a certificate made with that role (ami_cert_new ("monitor",
    id)) and listed in the MDMS allow-list is refused on the api (not an
    operator) and on ingest (not a head end). */
#define AMI_MDMS_EVENTS_ROLE_OPERATOR   "operator"
#define AMI_MDMS_EVENTS_ROLE_MONITOR    "monitor"

/*  On-demand read rate limits (SEC-AVAIL-2) that ami-mdms applies when its
    configuration says nothing (mdms/rate/...). In ami_mdms_config_t a rate
    of 0 means UNLIMITED (benchmarks), not "default".
    10 reads/s per operator, bursts of 20: an operator clicking through
    meters never notices; a script looping reads is held to a rate the
    field network can take (real RF reads take seconds each). */
#define AMI_MDMS_RATE_OPERATOR      10
#define AMI_MDMS_RATE_OPERATOR_BURST 20
/*  2 reads/s per meter, bursts of 4: a meter answers one read at a time
    over a slow mesh; more is a mistake or an attack on that meter's
    battery and radio, whoever sends it (several operators share it). */
#define AMI_MDMS_RATE_METER         2
#define AMI_MDMS_RATE_METER_BURST   4

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
    size_t max_pending;             /* 0 = AMI_MDMS_MAX_PENDING; at most
                                       AMI_MDMS_MAX_PENDING_MAX */
    size_t ingest_queue;            /* interval BATCHes waiting for a group
                                       commit (the credit budget, see
                                       ami_mdms_ingest.h); 0 =
                                       AMI_MDMS_INGEST_QUEUE; at most
                                       AMI_MDMS_INGEST_QUEUE_MAX */
    const char *data_key_path;      /* required: the MDMS data key, an ami_cert
                                       file pair of key-type kdf kept OUTSIDE
                                       the database directory's backups
                                       (loaded with ami_e2e_kdf_load: the
                                       secret file's permissions are checked;
                                       missing or readable by others = the
                                       MDMS does not start, SEC-KEY-1). It
                                       derives the audit key and the customer
                                       key; the actor keeps only those. */
    uint32_t rate_operator;         /* reads/s per operator, 0 = unlimited */
    uint32_t rate_operator_burst;   /* 0 = rate_operator */
    uint32_t rate_meter;            /* reads/s per meter, 0 = unlimited */
    uint32_t rate_meter_burst;      /* 0 = rate_meter */
    uint32_t interval_s;            /* interval data: seconds per interval, must
                                       divide a day and match the meters';
                                       0 = AMI_MDMS_INTERVAL_S (15 min) */
    size_t key_cache;               /* cached meter profile keys, 0 = auto
                                       (ami_mdms_ingest.h) */
    const char *audit_anchor_path;  /* SEC-AUD-1: the audit log's anchor file,
                                       kept outside the database (layout and
                                       checks in ami_mdms_audit.h); its
                                       directory must exist and be writable,
                                       else the MDMS does not start. NULL or
                                       "" = db_dir + ".audit-anchor" (a
                                       sibling of the database directory) */
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
