/*  ami_aggregator.h - the pole-top field node (ami-aggregator), a CZMQ actor.

    This header is the manual.

    What it is. An aggregator sits on a utility pole, physically
    unprotected (DESIGN.md section 2): it is an UNTRUSTED RELAY for
    application data. It holds no application keys, never verifies, opens
    or re-encodes anything: it decodes a READ_REQ only to learn which meter
    it is for (and when it expires), and a READ_RESP or ERROR only to learn
    which request it answers, then forwards the frame's BYTES unchanged; it
    decodes a fleet's BATCH only to find its blocks, whose bytes it keeps
    and sends on unchanged inside its own BATCHes (store and forward).
    The MDMS and the meters check each other end to end (ami_e2e.h).

    Sockets (all CurveZMQ, ZMQ_MAXMSGSIZE = AMI_MAX_FRAME, linger 0):
      - one ROUTER bound to config->endpoint, fleet-facing, CURVE server
        (ami_auth_server): an ami_auth must run in the process before the
        actor starts, with an allow-list holding this aggregator's fleets;
      - one DEALER per configured head end, CURVE client, connected to the
        head end's aggregator-facing ROUTER, with ZMQ_IMMEDIATE (nothing is
        queued for a head end that is not connected) and ZMTP heartbeats
        (ZMQ_HEARTBEAT_IVL = heartbeat, ZMQ_HEARTBEAT_TIMEOUT = 3
        heartbeats). DEALERs reconnect by themselves; the aggregator keeps
        serving through whichever head ends are up (SEC-AVAIL-1);
      - one inproc PAIR per head end DEALER, reading its socket monitor
        (zmq_socket_monitor): how the aggregator knows which head ends
        are live (see "Head end liveness");
      - an ami_monitor on the ROUTER (ami_monitor.h: its own watcher
        thread), for failed handshakes of would-be fleets (see "Failed
        handshakes").
    Every message is one frame (ami_msg.h); a DEALER sends and receives
    single frames with no empty delimiter, the ROUTER sees [routing id,
    frame]. Anything else is malformed.

    Fleets (meter side).
      - A fleet introduces itself with HELLO(role "meter", node_id,
        [meter ids]) chunks; the aggregator maps each meter id to that
        fleet's routing id. A meter another live fleet serves is NOT taken
        (counted routes_refused, SEC-INT-4): it moves once its fleet is gone.
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
      - Head end liveness. A head end is LIVE from the moment its CURVE
        handshake succeeds (monitor event ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
        until its connection is lost (ZMQ_EVENT_DISCONNECTED). Head ends
        send nothing periodic down to aggregators, so silence is detected
        at the transport: a head end (or a path to it) that stops
        answering the ZMTP heartbeats for 3 heartbeats is disconnected by
        libzmq, which is the bus-wide "silent for 3 heartbeats = gone"
        rule; a head end process that dies closes its TCP connection and
        is gone at once. A head end that is not live is sent nothing (no
        HEALTH either).
      - On every successful handshake (every (re)connect), and whenever a
        head end sends HELLO, the aggregator sends it HELLO(role
        "aggregator", node_id, meters = []). (The MDMS registry maps
        meters to aggregators; head ends route by aggregator, so the
        aggregator does not list its meters upward.)
      - HEALTH(role "aggregator", node_id, READY, uptime_ms, stats) every
        heartbeat to every live head end. Stats (names as sent):
            fleets, meters        fleets connected, meters routed
            relayed_down          READ_REQs sent to fleets (total)
            relayed_up            answers sent to head ends (total)
            unreachable, busy     ERRORs AMI_E_UNREACHABLE / AMI_E_BUSY made
            dropped               frames dropped: a head end's queue was full
            pending               reads in flight
            malformed             bad frames dropped (any peer)
            duplicates            frames ignored from a superseded connection
            batches_in, blocks_in BATCHes (and their blocks) taken into
                                  custody from fleets (refused ones not counted)
            batches_out           own BATCHes sent for the first time
            batches_acked         own BATCHes acknowledged with status 0
            batches_resent        own BATCHes sent again (ack timeout, head
                                  end gone, non-zero status, credit probe
                                  of a batch already sent)
            buffer_blocks         blocks held in custody now (received, not
                                  yet acknowledged by the MDMS)
            buffer_max            the bound on it (buffer-blocks)
            overflow_batches      fleet BATCHes refused AMI_E_BUSY: no room
            overflow_blocks       the blocks in them
            credit                end-to-end credit (last BATCH_ACK)
            batches_inflight      own BATCHes sent and not yet acknowledged
            acks_refused          BATCH_ACKs with a non-zero status
            acks_unknown          BATCH_ACKs for an unknown batch_id (ignored)
            buffer_bytes          bytes of the blocks held now
            headends_live         head ends live now
            pending_busy          READ_REQs answered AMI_E_BUSY because
                                  max_pending were in flight (also in busy)
            handshakes_refused    CURVE handshakes on the fleet ROUTER whose
                                  key ZAP refused (not in the allow-list,
                                  or revoked)
            handshakes_failed     other failed handshakes there: not a
                                  CURVE client of ours (plaintext, the
                                  wrong server key, garbage)
            headend_handshakes_failed  our own handshakes with head ends
                                  that failed (refused by the head end, or
                                  the peer at its endpoint does not hold
                                  its key); one per connection attempt
            store_refused         fleet BATCHes refused AMI_E_BUSY because
                                  the custody store could not commit them
                                  (map full, disk error: see "Custody
                                  store")
            store_errors          failed custody store transactions (and
                                  damaged records dropped at start)
            routes_refused        HELLO meter ids another live fleet
                                  serves, not taken (SEC-INT-4)
            orphaned              answers from fleets for no pending
                                  request (late, or never asked), dropped
            store_commits         durable custody group commits
            restored_blocks       blocks loaded from the store at start
            tombstones            acknowledged slots whose tombstone is
                                  not committed yet
            acks_failed           BATCH_ACKs to a fleet the ROUTER would
                                  not take (its queue full, or it is gone):
                                  warned; the fleet resends the batch
            fleets_refused        frames from fleets refused because the
                                  fleets table was full (max_fleets)
            routes_refused_full   HELLO meter ids not routed because the
                                  route table was full (max_meters)
            superseded_full       reconnections of a fleet whose older
                                  connection could not be remembered (the
                                  table of superseded connections was full,
                                  max_fleets): warned; should the older
                                  connection still talk, it is taken for
                                  a new one
            buffer_bytes_max      the bound on buffer_bytes (buffer-bytes)
            fleets_max            the bound on fleets (max-fleets)
            meters_max            the bound on meters (max-meters)
      - READ_REQ from a head end: looked up by meter id. No live fleet
        announced the meter, or its fleet's connection is gone ->
        ERROR(request_id, AMI_E_UNREACHABLE, origin = aggregator id, text
        naming the meter) back to that head end. The request table holds
        max_pending entries and the request id is not one of them, or the
        fleet's queue is full -> ERROR(request_id, AMI_E_BUSY, origin =
        aggregator id) at once, nothing forwarded or remembered (refuse,
        don't queue without bound: SEC-AVAIL-2); a refusal by the bound is
        counted in pending_busy and warned about (rate-limited). Once
        answers or expiries bring the table under the bound, requests are
        forwarded again. Otherwise the raw frame goes to the fleet and
        request_id -> (head end, fleet, meter) is remembered.
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

    Interval data (PROTOCOL.md 4.9, 4.10, 8.2, 8.3, 8.5; the zguide's
    credit-based flow control and store-and-forward).
      - Custody. A fleet's BATCH (origin must be the fleet's node id, from
        its certificate) is taken whole or not at all. If its blocks fit
        under both bounds - buffer_blocks blocks and buffer_bytes bytes
        held - their bytes are COPIED into the custody buffer (the
        aggregator holds no keys: it never opens, checks or re-encodes a
        block; what it sends upward is each block's msgpack bytes exactly
        as the fleet sent them), written to the custody store, and once
        that write is DURABLE the fleet gets BATCH_ACK(its batch_id,
        status 0, credit) - the ack is what lets the fleet forget the
        blocks (see "Custody store"). The credit is what free space allows: free
        blocks / (largest BATCH this fleet has sent x fleets connected),
        the same in bytes, the smaller of the two, capped at
        AMI_CREDIT_INITIAL; 0 when full. If they do not fit:
        BATCH_ACK(batch_id, AMI_E_BUSY, credit 0), counted in
        overflow_batches / overflow_blocks and warned about (rate-
        limited): a block is never dropped silently, the fleet keeps it
        and resends it. A BATCH from a fleet that does not decode, or
        whose origin is not the fleet, is dropped (malformed) and not
        acknowledged.
      - Re-batching. Blocks in custody are packed in arrival order into
        the aggregator's own BATCHes: origin = the aggregator's node id,
        batch_id = a random 64-bit start (randombytes) + 1 per batch. A
        batch is closed when it holds batch_blocks blocks or the next block
        would take its encoding past AMI_BATCH_MAX_BYTES; a partial batch
        is closed batch_delay_ms after its first block, but only when it
        can be sent at once (otherwise it keeps filling, so a backlog
        leaves in full batches).
      - End-to-end credit. The aggregator never has more own BATCHes in
        flight (sent, not yet acknowledged) than the last credit a BATCH_ACK
        gave it (starting at AMI_CREDIT_INITIAL; one value for this origin,
        replaced by every BATCH_ACK with a known batch_id from either head
        end), nor more than AMI_AGGREGATOR_MAX_INFLIGHT. With credit 0 and
        nothing in flight it sends one batch every AMI_BATCH_RETRY_MS to
        probe for credit.
      - Choice of head end: the live head end with the fewest of our
        batches in flight (ties: the first configured), preferring, for a
        resend, another head end than the one the batch last went through.
      - Store and forward. Every batch is kept until a BATCH_ACK with
        status 0 names it (whichever head end relays it); then its blocks
        leave the buffer (and the custody store). It is resent with the
        SAME batch_id and bytes:
          * through another live head end when no ack came within
            ack_timeout_ms (the same head end only if it is the only live
            one);
          * through another live head end at once when its head end is
            declared gone (see "Head end liveness");
          * AMI_BATCH_RETRY_MS after a BATCH_ACK with a non-zero status (a
            non-zero ack from another head end than the one the batch was
            last sent through answers an older send: ignored);
          * when no head end is live it waits, first in line.
        An ack whose batch_id is unknown (already acknowledged, or never
        ours) is ignored, counted in acks_unknown.
      - Memory: a custody block costs its bytes (a 4-interval block is
        about 170 bytes) plus, per own batch, one buffer and ~100 bytes of
        bookkeeping; no per-block allocation. buffer_bytes bounds the
        worst case (blocks of up to 4 KiB).

    Custody store (issue 6, fault 4: an aggregator restarted during an
    uplink outage loses nothing). config->state is a directory holding an
    LMDB environment (ami_store.h; created, mode 0700, if missing) with
    one database, "custody": one record per own batch, open or closed -
    key = a slot number (8 bytes, big-endian), value = the batch's blocks
    exactly as received (no header). Contract:
      - Acknowledge only what is stored. The fleet BATCHes drained in one
        wake-up (at most 64 frames) form a group: their blocks are
        appended in memory, then ONE durable write transaction (fsync)
        puts every own batch they touched, whole; only after it commits
        does each of those fleets get status 0. If it fails (map full,
        I/O error) nothing of the group is kept: custody goes back to the
        committed state and each of its fleet BATCHes is answered
        BATCH_ACK(AMI_E_BUSY, credit 0), counted in store_refused (and
        store_errors), logged (an error when a streak of failures starts,
        an info line when the store writes again, each refusal as a
        rate-limited warning). The fleet keeps the blocks and resends
        them (SEC-FAIL-1: never acknowledge what was not stored).
      - Forget only what the MDMS acknowledged. A batch's record leaves
        the store when a BATCH_ACK status 0 names it: its value becomes
        empty (a tombstone: ami_store has no delete inside a batch), in
        the next group's transaction or, without fleet traffic, at the
        next heartbeat. A tombstoned slot is reused by a later batch, so
        the records never outnumber the batches held at once.
      - Restart. At start every non-empty record becomes a closed batch
        again, with a new batch_id, ready to send (the MDMS de-duplicates
        by meter and interval); a record that is not a list of interval
        blocks (a damaged file) is logged, counted in store_errors and
        dropped. What was restored counts against the bounds; if a
        smaller bound no longer holds it, fleets are refused until it
        drains. A store that cannot be opened stops the start (logged).
        Stopping keeps every unacknowledged record for the next start
        (logged with the count).
      - Size. The bounds bound the store: at most buffer_bytes of blocks
        in at most buffer_blocks + 1 records. The LMDB map size (the
        largest the file may grow to) is derived from them: 4 x
        (buffer_bytes + 64 bytes per record) + 1 MiB - x2 for partly
        filled pages, x2 for copy-on-write - i.e. ~1.1 GiB of address
        space for the defaults, of which the file uses what is held
        (~2 x the blocks). A full map (or any other storage failure) is
        refused as above, never silent.
      - Cost: per wake-up with fleet traffic one transaction and one
        fsync, plus one memcpy of the blocks into LMDB's pages (an open
        batch that grows over several wake-ups is rewritten whole each
        time: at most batch-blocks blocks). Acks to fleets wait for that
        fsync (milliseconds).
      - Without config->state (NULL or empty: in-process tests and
        embedding only; ami-aggregator requires aggregator/state) custody
        is in memory only: a stopping aggregator then logs (warning) how
        many unacknowledged blocks it loses, and a crash loses them.

    Failed handshakes (SEC-AUD-2). Each failed handshake on the fleet
    ROUTER is counted (handshakes_refused / handshakes_failed) and warned
    about, rate-limited with the other warnings, naming the peer's address
    ("?" if the connection was gone before it could be asked for):
        aggregator agg-1: fleets: CURVE handshake from 10.9.8.7:50110
            refused: key not in the allow-list (ZAP status 400)
        aggregator agg-1: fleets: handshake from 10.9.8.7:50112 failed:
            not a CURVE client of this server (protocol error 0x...)
    Failed handshakes of our head end DEALERs are counted in
    headend_handshakes_failed and warned about once per streak, naming
    the head end and its endpoint (the peer is the configured one).

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
                    pending, malformed, orphaned, duplicates (frames 0..10),
                    batches_in, blocks_in, batches_out, batches_acked,
                    batches_resent, buffer_blocks, buffer_max,
                    overflow_batches, overflow_blocks, credit,
                    batches_inflight, headends_live, acks_refused,
                    acks_unknown, buffer_bytes (frames 11..25),
                    pending_busy, handshakes_refused, handshakes_failed,
                    headend_handshakes_failed (frames 26..29; failed
                    handshakes counted as of the command),
                    store_refused, store_errors, store_commits (durable
                    group commits), restored_blocks (blocks loaded from
                    the store at start), tombstones (acknowledged slots
                    whose tombstone is not committed yet) (frames 30..34),
                    acks_failed, fleets_refused, routes_refused_full,
                    superseded_full, buffer_bytes_max, routes_refused
                    (frames 35..40); every one of them is also in HEALTH
                    under the same name

    Threads. The actor owns its sockets, tables and custody store (opened
    in the actor thread; another process may open the directory read-only,
    this one must not open it twice). The certificate in the config is
    used only during start-up (while ami_aggregator_new waits): ami_cert
    is not thread-safe.
*/
#ifndef AMI_AGGREGATOR_H_INCLUDED
#define AMI_AGGREGATOR_H_INCLUDED

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_cert.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  1 s: the bus-wide default heartbeat (docs/SERVICES.md). */
#define AMI_AGGREGATOR_HEARTBEAT_MS 1000
/*  A fleet silent for 3 heartbeats is gone (the bus-wide rule): one late
    heartbeat on a loaded node must not cut a neighbourhood off. */
#define AMI_AGGREGATOR_LIVENESS     3
/*  65 536 requests in flight [aggregator/max-pending]: the MDMS rate-limits on-demand reads per
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
/*  [aggregator/max-meters] Meters routed at most: one fleet of
    AMI_METER_MAX_COUNT (1 000 000) fits; a route costs about 100 bytes,
    so the table stays near 100 MiB even if an allowed fleet announces
    garbage ids. Over the bound a HELLO's extra ids are ignored, warned
    and counted (routes_refused_full). */
#define AMI_AGGREGATOR_MAX_METERS   1000000
/*  [aggregator/max-fleets] Fleets (fleet connections) at most: the
    allow-list bounds them in practice; the cap stops one allowed key from
    reconnecting in a loop and growing the table before old entries
    expire (an entry is < 1 KiB: 1024 are < 1 MiB). Over it a new
    fleet's frames are dropped, warned and counted (fleets_refused) until
    an entry expires. The same bound holds the table of superseded
    connections (routing ids a fleet connected from before it reconnected,
    < 600 bytes each): an honest fleet has at most one older connection
    still talking, so there are never more of those than fleets; when it
    is full a reconnection is not remembered, warned and counted
    (superseded_full). */
#define AMI_AGGREGATOR_MAX_FLEETS   1024
/*  Send queue (ZMQ_SNDHWM) of every socket, in frames.
    Per head end DEALER: 1000 frames are several seconds of health and
    answers for a busy node - past that they are stale, and the MDMS has
    already retried elsewhere. Our own BATCHes (< 1 MiB each) are at most
    AMI_AGGREGATOR_MAX_INFLIGHT at a time, so a queue holds ~64 MiB at the
    very worst and a few KiB in normal operation (HEALTH < 3 KiB,
    READ_RESP/ERROR < 5 KiB).
    Per fleet on the ROUTER (ROUTER_MANDATORY: a full queue refuses the
    send at once, nothing is dropped silently): what goes down to a fleet
    is READ_REQs (< 200 bytes), BATCH_ACKs (~20 bytes) and HELLOs (< 100
    bytes), so 1000 frames are < 200 KiB per fleet; a fleet that does not
    read them for that long is stuck. At the bound a READ_REQ is answered
    AMI_E_BUSY upward (busy) and a BATCH_ACK is counted (acks_failed): the
    fleet resends the batch after its ack timeout. */
#define AMI_AGGREGATOR_SNDHWM       1000
/*  Receive queue (ZMQ_RCVHWM) of every socket, in frames per peer. From a
    fleet: its BATCHes (< 1 MiB each, at most the credit this aggregator
    grants, AMI_CREDIT_INITIAL) plus READ_RESPs, ERRORs and HEALTH (< 5 KiB each); from a
    head end: READ_REQs, BATCH_ACKs and HELLOs (< 1 KiB). 256 frames hold
    that with room (~4 MiB from an honest fleet; 256 MiB is the ceiling for
    a peer sending only full frames, against ~1 GiB at libzmq's default of
    1000). At the bound libzmq stops reading that connection, so the
    sender's own queue fills and it counts what it cannot send. */
#define AMI_AGGREGATOR_RCVHWM       256
/*  Warnings about bad input per second; the rest are counted. */
#define AMI_AGGREGATOR_LOG_BURST    20

/*  Interval data defaults (config keys in brackets; measured figures from
    tests/unit/test_aggregator.c's benchmark, AMI_AGG_BENCH=1, on the 2-core
    development VM, CURVE on both hops, fleet and head ends in-process):

    [aggregator/buffer-blocks] 200 000 blocks held in custody. At the
    250 k readings/s ingest target (4 intervals a block: ~62 k blocks/s
    through ALL aggregators) that is 3 s of the whole system's flow; for a
    real pole-top node (a few thousand meters, one block an hour each) it
    is days of backhaul outage. 200 000 blocks of ~170 bytes are ~34 MiB. */
#define AMI_AGGREGATOR_BUFFER_BLOCKS    200000
/*  [aggregator/buffer-bytes] 256 MiB: the same buffer bounded in bytes, so
    fleets sending large blocks (a day of 15-minute intervals is ~2.8 KiB,
    the wire limit 4 KiB) cannot make 200 000 blocks cost 800 MiB on a
    small node. 6 x the ~34 MiB of a full buffer of hourly blocks. */
#define AMI_AGGREGATOR_BUFFER_BYTES     ((size_t) 256 * 1024 * 1024)
/*  [aggregator/batch-blocks] 1024 blocks a batch (AMI_MAX_BATCH_BLOCKS,
    about 170 KiB for hourly blocks). Each BATCH costs a fixed amount at
    every hop - a CURVE frame and a wake-up at the aggregator, head end
    and MDMS and, at the MDMS, its share of a durable LMDB commit - so
    bigger is cheaper per block. Measured (test_benchmark: one fleet
    pushing 1024-block batches of 170-byte blocks, two head ends acking at
    once with credit 4; CPU of the whole test process per block; two runs
    on a shared, noisy VM):
        batch-blocks    blocks/s through     CPU per block
              16         46 k -  99 k         11.5 - 14.8 us
              64        188 k - 311 k          3.9 -  4.2 us
             256        638 k - 1.0 M          1.3 -  1.4 us
            1024        559 k - 1.2 M          1.0 -  1.1 us
    Below ~256 blocks the per-batch cost dominates. And against the real
    MDMS, which acknowledges only after a durable commit (milliseconds),
    one aggregator moves at most credit x batch-blocks per commit round
    trip: 4 x 1024 blocks per ~5 ms is ~800 k blocks/s, where 64-block
    batches would give ~50 k blocks/s - under the ~62 k blocks/s of the
    250 k readings/s target. 1024 keeps that margin.
    With the custody store (one durable commit per wake-up, see "Custody
    store"), measured the same way: 256 -> 511 k blocks/s, 2.05 us a
    block; 1024 -> 328 k blocks/s, 1.9 us a block. The store costs ~0.9 us
    of CPU per block (the copy into LMDB's pages, the tombstone) and an
    fsync per wake-up; one aggregator still carries > 1.3 M readings/s,
    ~5 x what the MDMS commits. */
#define AMI_AGGREGATOR_BATCH_BLOCKS     1024
/*  [aggregator/batch-delay] 20 ms: the longest a partial batch waits for
    more blocks. Under load batches fill long before (62 k blocks/s fill
    1024 blocks in ~16 ms through one aggregator), so the delay only acts
    when traffic is light, where it bounds the latency it adds to 20 ms -
    small next to an MDMS durable commit plus 3 hops of hand-offs
    (DESIGN.md 8: 70-100 us per wake-up, ms per fsync) - while merging the
    blocks of several fleet batches into one uplink batch. */
#define AMI_AGGREGATOR_BATCH_DELAY_MS   20
/*  Own batches in flight at most, whatever credit says: 64 x 1 MiB is the
    most the DEALER queues can hold for us; the MDMS normally grants 4. */
#define AMI_AGGREGATOR_MAX_INFLIGHT     64

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
    size_t max_fleets;          /* 0 = AMI_AGGREGATOR_MAX_FLEETS */
    size_t max_meters;          /* 0 = AMI_AGGREGATOR_MAX_METERS */
    /* interval data (0 = the default named) */
    size_t buffer_blocks;       /* custody bound, blocks: AMI_AGGREGATOR_BUFFER_BLOCKS */
    size_t buffer_bytes;        /* custody bound, bytes: AMI_AGGREGATOR_BUFFER_BYTES */
    uint32_t batch_blocks;      /* 1..AMI_MAX_BATCH_BLOCKS: AMI_AGGREGATOR_BATCH_BLOCKS */
    int batch_delay_ms;         /* >= 1: AMI_AGGREGATOR_BATCH_DELAY_MS */
    int ack_timeout_ms;         /* >= 1: AMI_BATCH_ACK_TIMEOUT_MS (tests shorten it) */
    const char *state;          /* directory of the custody store, an LMDB
                                   environment (created if missing; required) */
    size_t store_map_size;      /* 0 = derived from the bounds (see "Custody
                                   store"); tests set a tiny one to make
                                   commits fail */
} ami_aggregator_config_t;

/*  The aggregator actor (ami-bus actor convention, ami_service.h):
    signals the pipe, validates the config (a value out of range fails),
    opens the custody store and takes back what it holds (fails if it
    cannot be opened or read), binds the ROUTER (fails if no ami_auth
    runs), connects every head end, reports READY; on failure it logs why
    and reports FAILED. */
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
