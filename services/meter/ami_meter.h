/*  ami_meter.h - the meter FLEET simulator (ami-meter), a CZMQ actor.

    This header is the manual.

    What it is. One process stands in for many physical meters: N meters
    (default 100, tested with 100 000) that share ONE DEALER connection to
    their aggregator, the way the meters of one RF neighbourhood share one
    radio link to the pole-top node. Each meter keeps its own state:

      - its physics, an ami_meter_model_t (ami_meter_model.h), for
        on-demand reads;
      - a SECOND model on the load-profile clock (see "Interval data"), so
        simulated time that runs faster than the wall clock never disturbs
        what an on-demand read shows;
      - the last command counter it accepted (replay protection, persisted);
      - its own Ed25519 signing key, derived from the fleet secret and the
        meter number with ami_e2e_meter_keypair. Derivation costs about
        20-28 us per meter on the reference VM, so keys are derived lazily,
        the first time a meter signs, and cached (64 bytes per meter). One
        captured meter key reveals no other;
      - its interval-data key (ami_e2e_profile_key_meter: its signing key
        with the MDMS box key, about 70 us more), derived lazily the first
        time the meter seals a block, and cached (32 bytes).

    Memory: 256 bytes per meter (two models 2 x 72, counter 8, key caches
    64 + 32, flags), all allocated and touched at start, so the figure
    holds after every key has been derived. Interval data adds about 2 MiB
    of batch building buffers, 150 KiB of recovery jobs ("Recovery") and the unacknowledged batches (at most
    AMI_METER_CREDIT_MAX, in practice the aggregator's credit of 4, each
    < 1 MiB; a 100 000-meter fleet's batches of 1024 hourly blocks are
    ~160 KiB). Measured on the reference VM (2-core AMD EPYC): a
    100 000-meter fleet actor adds 26 MiB RSS to its process (270 bytes per
    meter, tests/unit/test_meter.c test_rss_100k prints it) and starts in
    about 40 ms; the whole ami-meter process with 100 000 meters producing
    interval data in flood mode peaks at 36 MiB RSS (VmHWM) (its LMDB map
    reserves address space, not memory). Target: <= 256 MiB.

    Cost of a read at the fleet (same VM): about 1.1 ms for one read alone
    (the durable commit is 0.45 ms of it), about 4 000 reads/s pipelined
    (Ed25519 verify + sign and the sealing dominate; the commit is shared).

    Meter ids are ami_meter_id_format (index) ("MTR-000001"); the fleet
    holds meters first .. first + count - 1, and only the canonical spelling
    of each id is accepted ("MTR-1" is not MTR-000001).

    Wire (one ZeroMQ frame = one ami message, ami_msg.h; the DEALER sends
    and receives single frames, no empty delimiter):

      fleet -> aggregator
        HELLO(role "meter", node_id, [meter ids]) in chunks of at most
            AMI_MAX_HELLO_METERS ids, covering every meter of the fleet once:
            right after connecting (queued until the connection is up), and
            again whenever the aggregator sends a HELLO (it does so when it
            hears from a routing id it does not know, e.g. after it
            restarted);
        HEALTH(role "meter", node_id, READY, uptime_ms, stats) every
            heartbeat (state DEGRADED instead of READY while the state
            store fails, see below); stats: see "Counters";
        READ_RESP and ERROR answering READ_REQs (below);
        BATCH(batch_id, origin = fleet id, [[meter_id, seq, box]...]):
            interval data, within credit (see "Interval data").
      aggregator -> fleet
        HELLO: answered by re-sending the fleet's HELLO chunks, and by
            resending every unacknowledged BATCH (the aggregator restarted);
        READ_REQ: answered as below;
        BATCH_ACK(batch_id, status, credit): custody of a batch, or not;
        anything else (another message type, a frame that does not
        decode, a multi-frame message) is dropped, counted as malformed
        and logged (at most 20 warnings per second).

    Answering a READ_REQ (DESIGN.md section 5, SEC-AUTHZ-2, SEC-INT-1..3):
      1. meter_id not in this fleet -> ERROR(request_id, AMI_E_UNREACHABLE,
         origin = fleet id, text naming the meter and the fleet).
      2. The cheap checks first, which need no signature work:
         ami_e2e_check_command against the meter's id, its last accepted
         counter and the fleet's clock, then the counter jump (below).
         Only a command that passes them costs a signature verification:
         ami_meter_keys_verify against every MDMS signing key the fleet
         accepts (see "MDMS signing keys"). Any failure ->
         READ_RESP(meter_id, request_id, status = the ami_err code of the
         first check that failed: AMI_E_REPLAY, AMI_E_EXPIRED,
         AMI_E_WRONG_TARGET, AMI_E_RANGE or AMI_E_BAD_SIGNATURE, sealed
         empty), signed by that meter's key, within the refusal budget
         (below); over it, no answer. A refused command changes nothing.
         (So a forged command that is also stale is refused as a replay
         or expired without its signature being checked.)
      3. Accepted: the counter is persisted BEFORE the answer leaves (a
         command is never acted on twice, even across a crash: a command
         whose counter was committed but whose answer was lost is a
         replay when it comes again, after a restart too). Then the
         registers are sampled (ami_meter_model_sample at the fleet clock),
         encoded as a READING carrying the request_id, padded and sealed
         to the MDMS box key (ami_e2e_seal_padded, below: aggregators and
         head ends see ciphertext of one fixed length only), wrapped in
         READ_RESP(meter_id, request_id, 0, sealed) and signed with the
         meter's own key.
      4. A command with a load-profile range (profile_from_s and
         profile_to_s not 0, SEC-INT-5): after its answer, the meter's
         intervals of the range are queued to be sent again (see
         "Interval data", "Recovery"). A refused command queues nothing.
      If the state store fails (disk full, I/O error, map full), every
      command of the failed commit is refused with status AMI_E_STORAGE
      (signed, nothing sealed): never answer what was not recorded
      (SEC-FAIL-1). Their counters stay used in memory (resent, they are
      replays; the MDMS resends with a new counter). The fleet counts the
      failure (store_errors), logs one error when the store starts failing
      and rate-limited warnings while it goes on, reports HEALTH state
      DEGRADED until a commit succeeds again, and keeps serving: the next
      command is tried against the store as usual.

    Counter jump (SEC-INT-2; config max_counter_jump, ami-meter's
    meter/max-counter-jump). A command whose counter is more than
    max-counter-jump above the meter's last accepted counter is refused
    with AMI_E_RANGE (not AMI_E_REPLAY: a new, higher counter would not
    help, so the MDMS does not resend). Accepting it would leave the meter
    refusing every genuine command until the MDMS counter caught up; a
    forged command signed with a stolen MDMS key and counter 2^64 - 1
    would do so for ever. With the bound, one command moves a meter's
    counter at most max-counter-jump ahead, and raising the MDMS counter by
    that much recovers it. A meter that has never accepted a command (last
    counter 0) has no reference, so its first command is not bounded.
    Choosing the bound: the MDMS numbers commands with ONE counter for all
    meters (ami_mdms_db.h "Command counter"), so between two reads of one
    meter its counter rises by every command sent to any meter (and by up
    to 10 000 per MDMS restart). The bound must exceed that, or a meter
    read rarely is locked out (AMI_E_RANGE on every read until its fleet's
    bound is raised). The default AMI_METER_MAX_COUNTER_JUMP (10^9) allows
    115 days between two reads of a meter at 100 commands a second
    system-wide; it still makes exhausting a meter's 64-bit counter with a
    stolen key take over 10^10 forged commands.

    Refusal budget (SEC-AVAIL-3: a flood of badly signed commands costs a
    fleet a bounded number of signatures per second). Every refusal is a
    READ_RESP signed with the meter's key (an Ed25519 signature, and one
    more verification at the MDMS), so without a bound anyone who can put
    frames on the aggregator link buys a fleet signature and the MDMS a
    verification per frame. The refusals of step 2 (commands that are not
    verified AND fresh) draw on one token bucket per fleet: refusal_rate
    tokens a second, at most refusal_burst held (config; ami-meter's
    meter/refusals and meter/refusals-burst). Without a token the command
    is dropped unanswered, counted in refusals_dropped and logged at most
    once a second (with the count of the others). The MDMS then waits for
    its read timeout instead of getting the refusal at once: slower, never
    wrong, and a genuine MDMS rarely causes refusals (a clock off by more
    than the skew, a retry overtaken by a later command). Refusals of
    verified, fresh commands (AMI_E_STORAGE, AMI_E_INTERNAL) are not
    budgeted: each one uses up a counter the MDMS signed, so their rate
    is the MDMS's own. What the budget does not bound: the verification
    of a forged command that passes the cheap checks (one Ed25519
    verification per accepted key, at most AMI_METER_KEYS_MAX): a fleet
    cannot tell a valid command from a forged one without it, and
    skipping it would let the flood deny service to genuine commands.
    Those frames come only through the CURVE-authenticated aggregator.

    MDMS signing keys (SEC-KEY-2; ami_meter_keys.h). The fleet accepts a
    command signed by any key of its set: the current MDMS signing key
    and, during a rotation window, the old one(s) (at most
    AMI_METER_KEYS_MAX). With config mdms_pub (ami-meter: meter/mdms-pub)
    the set is read from that directory at start (no usable
    mdms-sign.cert: the start fails), and again whenever its key files
    change (checked every AMI_METER_KEYS_REFRESH_MS) or on the pipe
    command "RELOAD-KEYS" (ami-meter: SIGHUP): so `ami-keygen rotate DIR
    mdms-sign` and its --finish take effect in a running fleet within
    about a second, no restart needed. A reload that fails keeps the set
    in use (logged). An old key is refused from its "expires" second on,
    checked per command.

    Padding (SEC-CONF-3). A msgpack READING is shorter when its registers
    hold small numbers (a 0 in 1 byte, a large energy in 9), and a sealed
    box is as long as what it seals, so the length of READ_RESP.sealed
    would tell relays something about a meter's consumption. Every READING
    is padded (ami_e2e_seal_padded, format in ami_e2e.h: self-describing,
    ISO/IEC 7816-4 padding) to one block: the longest encoding a READING
    with AMI_METER_REGISTERS registers can have (measured at start with
    the longest meter id and every number at its longest form) plus
    AMI_E2E_PAD_OVERHEAD. For the 19-register model: readings encode to
    321-369 bytes in practice (measured) and to at most 509, the block is
    513 bytes, and every sealed READING is 561 bytes (the block is logged
    at start). The length depends on the register count
    only: every fleet of this model seals readings of the same length. The
    MDMS opens them with ami_e2e_open_padded, which also reads unpadded
    readings (older meters, stored proofs).

    Persistence (group commit). The state directory is an ami_store (LMDB)
    opened DURABLE (fsync at every commit), with two databases:
        "counters"   key be32 meter number -> be64 last accepted counter
        "registers"  key be32 meter number -> 48-byte register snapshot
                     (be64 model clock_s, be64 import T1, T2, export T1,
                     T2, be32 import and export residues in mWh)
    A durable LMDB commit costs about 0.45 ms here (one fsync), so a commit
    per read would cap a fleet near 2 000 reads/s. Instead the actor drains
    up to AMI_METER_BATCH READ_REQs per wake-up, checks them all, writes
    every accepted counter (and the register snapshot the reading will
    show) in ONE transaction, and only after that commit answers them: each
    answer still follows its durable write, and a burst costs one fsync.
    The snapshot makes energy registers rise monotonically across restarts
    (a restarted meter resumes from the last value it reported, advanced
    to now). All state is loaded at start (two range scans).
    Durable rather than AMI_STORE_NOSYNC on purpose: a counter that
    survives a process restart but not an OS crash or power cut would,
    after one, let a captured old command be replayed (SEC-INT-2); group
    commit makes durability affordable.
    One directory per fleet process: LMDB must not be opened twice in one
    process (two fleet actors in one process need two directories).

    Interval data (load profile, OBIS 1.0.99.1.0; PROTOCOL.md 4.8-4.10,
    8.2, 8.5; configuration: ami_meter_profile_config_t below, section
    meter/profile of ami-meter's file).

      Records. Each meter records, every `interval` seconds, [end_s,
      import_wh, export_wh, status]: the interval's end (Unix s, a multiple
      of the interval), its +A and -A energy registers at that end (from
      its profile model, so they never go down), status AMI_Q_VALID.

      The profile clock P (Unix s) is the fleet's: it starts at `start`
      (or the fleet's clock at start rounded down to the interval) and
      advances one block period (`block` intervals) at a time for all
      meters: a ROUND. A round is due when the simulated clock reaches its
      end: simulated time = start (or, when start is 0, the fleet's clock
      at start) + wall time since start x time-scale; with time-scale 0
      (FLOOD) every round is due at once and production runs as fast as
      credit allows. In a round every meter, in meter order, makes one
      BLOCK: its records of the round (`block` of them, fewer in the last
      round under `limit`), encoded as PROFILE(meter_id, seq, made_ms,
      records) with seq = last end_s / interval (so it rises per meter, and
      a block is identified by its meter and last interval) and made_ms =
      the fleet's wall clock when it was sealed (the start of end-to-end
      latency), then sealed with ami_e2e_profile_seal under the meter's
      profile key (to the MDMS: aggregators and head ends see meter ids,
      seqs and sizes only). `limit` intervals per meter made -> production
      stops.

      Batches. Blocks go into BATCHes of at most AMI_MAX_BATCH_BLOCKS
      blocks whose encoding stays under AMI_BATCH_MAX_BYTES (checked with
      an upper bound while building, so each batch is encoded once); a big
      fleet's round spans many batches, and in flood mode (or catching up)
      a batch runs on into the next round. batch_ids start at a random
      64-bit value and increment. A batch is built only when credit allows
      sending it (never ahead), so the fleet holds at most credit batches
      and memory stays flat; one batch is built per wake-up, so reads,
      acks and heartbeats are served between batches (a 1024-block batch
      takes ~3 ms to build).

      Delivery (at-least-once; exactly-once storage is the MDMS's job):
        - every batch is kept, encoded, until a BATCH_ACK with status 0
          (custody taken by the aggregator);
        - credit: never more batches in flight (sent, not answered) than
          the last credit granted (AMI_CREDIT_INITIAL at start and after
          an aggregator HELLO; each BATCH_ACK's credit replaces it; capped
          at AMI_METER_CREDIT_MAX); a new batch also needs the outbox
          (waiting batches included) under the credit. Credit 0 and
          nothing in flight: one batch (a refused one if any, else a new
          one) is sent as a probe AMI_BATCH_RETRY_MS after the ack that
          gave credit 0;
        - no ack within AMI_BATCH_ACK_TIMEOUT_MS: resent (same batch_id,
          same bytes). While nothing at all is heard from the aggregator,
          at most two copies of a batch are queued (the send and one
          resend): on a dead link the DEALER keeps what is sent, and a
          copy every 10 s would pile up; the next frame from the
          aggregator (an ack, a read, or its HELLO, which it sends when a
          reconnected fleet is new to it) lets the resends go on;
        - a non-zero status (AMI_E_BUSY, ...): not taken; resent after
          AMI_BATCH_RETRY_MS, within credit;
        - HELLO from the aggregator: credit starts again at
          AMI_CREDIT_INITIAL and every unacknowledged batch is resent at
          once (as far as that credit goes; the rest as acks come);
        - an ack for a batch_id the fleet does not hold (a duplicate, or
          a stranger's) is ignored, its credit too.

      Recovery (SEC-INT-5: custody of interval data cannot be faked by a
      relay). An aggregator's BATCH_ACK is custody, not storage: a
      captured aggregator can acknowledge blocks and drop them, a
      destroyed one loses what it held. So, as a real meter keeps weeks
      of load profile, the fleet can make any interval it produced again,
      on a signed command: a READ_REQ whose profile_from_s/profile_to_s
      are not 0 (PROTOCOL.md 4.5; the MDMS sends it for the operator
      action `recover`). Such a command is first an ordinary read: every
      check above (target, counter, window, counter jump, signature), the
      durable commit of its counter, the sealed reading. Only once that
      reading is answered does the fleet queue the meter's intervals with
      end in (profile_from_s, profile_to_s], clipped to
        - what it has produced: ends <= the profile clock P (plus the
          round in progress if the meter's block of it is made), and
        - what it keeps: ends > max (start, P - retain), `retain` being
          profile time (config retain_s; ami-meter's meter/profile/retain,
          default AMI_METER_PROFILE_RETAIN_S, 31 days);
      the intervals outside are counted in recover_clipped (a fleet with
      no interval data answers the read and counts the whole range, in
      15-minute intervals). A refused command (bad signature, replayed
      counter, ...) queues nothing.
      The intervals are not stored: the profile physics is deterministic
      (the fleet secret, the meter number and `start`), so a job runs a
      fresh profile model of the meter from `start` to each interval end
      and gets the very records it made the first time. They are grouped
      along the meter's own block boundaries (every `block` intervals from
      `start`; a range that cuts a block gives a shorter block whose seq
      is its last end / interval), so a whole block comes out with its
      original seq and records; each block is sealed anew (new nonce,
      made_ms = now) and goes into ordinary BATCHes, AHEAD of new
      production, under the same credit and outbox bounds and with the
      same delivery rules as any batch. The MDMS stores each (meter,
      interval) once: what it already had counts as intervals_dup there.
      Bounds: at most AMI_METER_RECOVER_JOBS ranges pending per fleet (a
      range over that is not taken: recover_busy, warned); the decoder
      caps a range at AMI_PROFILE_RECOVER_MAX_S; the model steps that jobs
      run per wake-up are bounded (about 2 ms of CPU), so a meter whose
      start lies long ago, or a long range, is rebuilt in slices across
      wake-ups while reads, acks and heartbeats are served. Recovered
      intervals count in profile_recovered (when put in a batch), not in
      profile_readings or profile_acked.
      Limit: the profile clock is not persisted (below): a fleet started
      without a fixed `start` begins its profile at every start, and can
      recover only what it produced since.

      Stopping: the pipe command "PROFILE-STOP" (ami-meter: SIGUSR1) stops
      making blocks, even in the middle of a round; what was made is still
      delivered. profile_done is 1 once production has stopped (limit,
      PROFILE-STOP, or interval data disabled) and every batch made has
      been acknowledged with status 0, so a load test can account for
      every reading: profile_readings made = profile_acked taken.

      Not persisted: the profile clock and the profile models start again
      at every start of the fleet (from `start`, or from now); with a fixed
      `start`, a restarted fleet makes the same blocks again (same
      records: the physics is deterministic), which the MDMS stores once.

      Cost, reference VM, flood, 100 000 meters, block 4 (the ami-meter
      process against an aggregator stub in another process that acks at
      once): 220 000-360 000 blocks/s, i.e. 0.9-1.4 million readings/s,
      on one core (the actor thread; the figure moves with the machine's
      other load), so 250 000 readings/s costs a fleet about a fifth of a
      core. perf, steady state: the profile model ~28 % (60 integration
      steps per hourly block), the AEAD seal ~27 %, the getrandom()
      syscall behind each block's random nonce ~14 %, msgpack encoding
      ~9 %, copies ~4 %. The first round also derives every meter's keys
      (~100 us a meter: ~10 s of one core for 100 000 meters, about
      9 000 blocks/s meanwhile), so a flood benchmark should let the first
      round pass (profile_clock > start + one block period) before it
      measures, or spread the meters over several fleet processes.

    Counters (HEALTH stats and STATUS):
        meters            meters in the fleet
        reads             READ_REQs answered with a sealed reading (status 0)
        refused           READ_REQs answered with a refusal status
        unreachable       READ_REQs for a meter not in this fleet (ERROR)
        malformed         frames from the aggregator that did not decode or
                          were not HELLO / READ_REQ / BATCH_ACK
        dropped           outgoing frames dropped because the DEALER's queue
                          was full (aggregator unreachable for a long time;
                          batches are never dropped: they wait and retry)
        profile_blocks    blocks made
        profile_readings  intervals made (sum of the blocks' records)
        profile_acked     intervals whose batch got BATCH_ACK status 0
        profile_clock     the profile clock P, Unix s: the start of the
                          round in progress (0 when disabled)
        batches_sent      batches sent (first transmission)
        batches_resent    retransmissions (ack timeout, refusal, HELLO)
        batches_inflight  batches held, not yet acknowledged with status 0
                          (in flight or waiting to be resent)
        profile_done      1 when production has stopped, nothing is
                          unacknowledged and no recovery is pending (see
                          "Stopping"), else 0
        store_errors      commits of the state store that failed (their
                          commands were refused with AMI_E_STORAGE)
        refusals_dropped  commands refused without an answer: over the
                          refusal budget (SEC-AVAIL-3)
        mdms_keys         MDMS signing keys accepted now (1, or more
                          during a rotation window)
        credit            batches the aggregator lets this fleet have in
                          flight now: the last BATCH_ACK's credit, capped
                          at AMI_METER_CREDIT_MAX (AMI_CREDIT_INITIAL
                          before the first ack and after the aggregator
                          says HELLO; 0 = it probes once a retry period)
        profile_recovered intervals sent again on a recover command
                          (SEC-INT-5, "Recovery"): put in a batch
        recover_clipped   intervals a recover command asked for that were
                          not produced, no longer kept, or (no key) could
                          not be sealed: not sent
        recover_busy      recover ranges not taken: AMI_METER_RECOVER_JOBS
                          were pending (the read itself was answered)
        recover_pending   recover ranges being produced now

    Pipe commands (zstr strings):
        "$TERM"         exit (zactor_destroy sends it)
        "STATUS"        reply one zmsg of decimal strings: meters, reads,
                        refused, unreachable, malformed (frames 0..4), then
                        profile_blocks, profile_readings, profile_acked,
                        profile_clock, batches_sent, batches_resent,
                        batches_inflight, profile_done (frames 5..12),
                        store_errors (frame 13), refusals_dropped (frame
                        14), mdms_keys (frame 15), credit (frame 16),
                        profile_recovered, recover_clipped, recover_busy,
                        recover_pending (frames 17..20);
                        readers that want the first frames ignore the rest
        "RELOAD-KEYS"   re-read the mdms_pub directory now (whether or not
                        it changed); reply one string: the number of MDMS
                        signing keys accepted afterwards (without mdms_pub:
                        "1", the configured key)
        "PROFILE-STOP"  stop making interval data (see "Stopping"); no
                        reply (send "STATUS" after it to synchronise)
        "CRASH-AFTER-COMMIT"
                        test hook (SEC-INT-2): at the next successful
                        commit of accepted commands, the actor ends at once,
                        before answering any of them and without writing or
                        sending anything else, as a crash between the
                        commit and the answers would; the pipe then gets
                        the actor's exit signal (zsock_wait). No reply.
                        ami-meter never sends it.

    Threads. The actor owns its socket, store and state. The certificate
    in the config is used only during start-up (while ami_meter_new waits),
    never after: ami_cert is not thread-safe.
*/
#ifndef AMI_METER_H_INCLUDED
#define AMI_METER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_meter_keys.h"
#include "ami_meter_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  1 s: the bus-wide default heartbeat (docs/SERVICES.md). */
#define AMI_METER_HEARTBEAT_MS  1000
/*  100 meters per fleet by default: the demo's fleet-1 and fleet-2. */
#define AMI_METER_DEFAULT_COUNT 100
/*  At most 1 000 000 meters per fleet process: about 150 MiB of state,
    enough for a load test; a larger population runs as several fleets
    (the way a utility has many RF neighbourhoods). */
#define AMI_METER_MAX_COUNT     1000000
/*  READ_REQs handled per wake-up and committed in one transaction: 64
    amortises the fsync under load (64 reads per 0.45 ms commit) while a
    batch still answers within a millisecond or two. */
#define AMI_METER_BATCH         64
/*  Default bound on a command counter's step above the meter's last
    accepted counter: 10^9 (see "Counter jump" for why, with one MDMS-wide
    counter, it must be this large, and what it still bounds). */
#define AMI_METER_MAX_COUNTER_JUMP  1000000000ULL

/*  SEC-AVAIL-3 refusal budget defaults (see "Refusal budget"): 20 signed
    refusals a second, 50 at once. A genuine MDMS causes a handful at most
    (clock skew, a reordered retry), and a burst of 50 answers the stale
    commands of a fleet restart at once; under a flood, 20 a second cost
    the fleet ~0.5 ms of signing and the MDMS ~1 ms of verifying per
    second and per fleet, instead of a signature per forged frame. */
#define AMI_METER_REFUSAL_RATE      20
#define AMI_METER_REFUSAL_BURST     50
/*  Largest configurable rate and burst: a million a second is no bound. */
#define AMI_METER_REFUSAL_MAX       1000000

/*  Load-profile (interval data) defaults of the configuration file
    (docs/SERVICES.md, section meter/profile): 15-minute intervals, the
    utility norm for domestic load profiles (OBIS 1.0.99.1.0); 4 intervals
    per block, so each meter pushes once an hour. */
#define AMI_METER_PROFILE_INTERVAL_S    900
#define AMI_METER_PROFILE_BLOCK         4
/*  Largest time-scale: 1 000 000 simulated seconds per wall second (11.6
    days a second). Anything faster is what FLOOD mode (0) is for. */
#define AMI_METER_MAX_TIME_SCALE        1000000
/*  A sender keeps at most this many unacknowledged batches, whatever
    credit a receiver grants: 16 x < 1 MiB bounds the fleet's outbox while
    leaving room above the aggregator's cap (AMI_CREDIT_INITIAL = 4). */
#define AMI_METER_CREDIT_MAX            16
/*  SEC-INT-5 (see "Recovery"): profile time a fleet keeps for recovery by
    default, 31 days: a real meter's load-profile memory holds weeks (at
    15 minutes, 31 days is 2 976 records, a typical capacity), and it
    matches the longest range one command may ask for
    (AMI_PROFILE_RECOVER_MAX_S). At most a year can be configured: more
    is no meter's memory, and a rebuild from far back only costs time. */
#define AMI_METER_PROFILE_RETAIN_S      (31 * 86400)
#define AMI_METER_PROFILE_RETAIN_MAX_S  (366 * 86400)
/*  Recover ranges a fleet works on at once; over it a range is not
    taken (recover_busy). 64 x ~2.4 KiB of state (a model and one block
    of records each) = 150 KiB; the MDMS limits reads to 2 a second per
    meter and 10 per operator, so 64 ranges pending means an operator
    is asking for far more than the link can carry anyway. */
#define AMI_METER_RECOVER_JOBS          64

/*  Load-profile production (see "Interval data" above). A zeroed struct
    means "no interval data", which is what in-process users that only
    need on-demand reads get; ami-meter fills it from meter/profile (where
    enabled defaults to true). */
typedef struct {
    /*  Produce interval data at all. */
    bool enabled;
    /*  Interval length in seconds; 0 = AMI_METER_PROFILE_INTERVAL_S. Must
        divide 86 400 (a day holds whole intervals). */
    uint32_t interval_s;
    /*  Intervals per block (per meter per push), 1..AMI_MAX_PROFILE_RECORDS;
        0 = AMI_METER_PROFILE_BLOCK. */
    uint32_t block;
    /*  Simulated seconds per wall second, 1..AMI_METER_MAX_TIME_SCALE, or
        0 = FLOOD: rounds as fast as credit allows. NOTE: 0 is flood, not
        a default (ami-meter's file default is 1). */
    uint32_t time_scale;
    /*  Unix seconds of the first interval's START, a multiple of the
        interval; 0 = the fleet's clock at start rounded down to the
        interval. */
    int64_t start_s;
    /*  Intervals per meter to produce, then stop; 0 = no limit. */
    uint64_t limit;
    /*  Profile time (seconds) kept for recovery (SEC-INT-5, "Recovery"):
        intervals whose end is more than this before the profile clock
        are no longer sent again. 0 = AMI_METER_PROFILE_RETAIN_S; at most
        AMI_METER_PROFILE_RETAIN_MAX_S. */
    int64_t retain_s;
    /*  How long a batch waits for its BATCH_ACK before it is resent;
        0 = AMI_BATCH_ACK_TIMEOUT_MS. A test hook (tests shorten it);
        ami-meter always uses the protocol's value. */
    int ack_timeout_ms;
} ami_meter_profile_config_t;

/*  The fleet's configuration. The actor copies everything it keeps during
    start-up, so the struct and what it points to need only stay valid
    until ami_meter_new returns. */
typedef struct {
    /*  Fleet id (node id of the fleet's certificate), e.g. "fleet-1".
        Required, a valid id (ami_id_valid). */
    const char *node_id;
    /*  The fleet's CURVE certificate with its secret key, borrowed; used
        during start-up only. Required. */
    ami_cert_t *cert;
    /*  Aggregator endpoint to connect to, e.g. "tcp://127.0.0.1:7301",
        and the aggregator's public CURVE key (Z85, 40 chars). Required. */
    const char *aggregator;
    const char *aggregator_key;
    /*  Meter numbers first .. first + count - 1; first >= 1, count >= 1,
        count <= AMI_METER_MAX_COUNT, and the last number fits uint32. */
    uint32_t first;
    uint32_t count;
    /*  The fleet secret (ami_e2e_kdf_load). Copied; the actor wipes its
        copy when it exits. The caller wipes its own. */
    uint8_t seed [AMI_E2E_SEED_SIZE];
    /*  The MDMS's public application keys (ami_e2e_mdms_load (dir,
        false)): sign_pk verifies commands (unless mdms_pub is set),
        box_pk seals readings. Secret halves, if present, are ignored (a
        fleet never holds them). */
    ami_e2e_mdms_t mdms;
    /*  Directory of the MDMS public keys (ami-meter: meter/mdms-pub), or
        NULL. Set: the command-signing keys accepted are the ones in it
        (see "MDMS signing keys"), and mdms.sign_pk is not used. NULL:
        mdms.sign_pk is the one key accepted. */
    const char *mdms_pub;
    /*  Refusal budget (see "Refusal budget"): signed refusals of commands
        not verified and fresh, per second, and how many at once;
        1..AMI_METER_REFUSAL_MAX, 0 = AMI_METER_REFUSAL_RATE /
        AMI_METER_REFUSAL_BURST. */
    uint32_t refusal_rate;
    uint32_t refusal_burst;
    /*  Directory of the persistent state (created if missing). Required. */
    const char *state;
    /*  HEALTH interval; 0 = AMI_METER_HEARTBEAT_MS. */
    int heartbeat_ms;
    /*  Added to the wall clock for command checks and readings: lets a
        test run a meter whose clock is off (0 in production). */
    int64_t clock_offset_ms;
    /*  Largest step of a command counter above the meter's last accepted
        counter; larger ones are refused with AMI_E_RANGE (see "Counter
        jump"). 0 = AMI_METER_MAX_COUNTER_JUMP. */
    uint64_t max_counter_jump;
    /*  Interval data (load profile); zeroed = none. */
    ami_meter_profile_config_t profile;
} ami_meter_config_t;

/*  The fleet actor (ami-bus actor convention, ami_service.h): signals the
    pipe, validates the config, opens the state store, loads every meter's
    counter and register snapshot, connects, queues its HELLOs, reports
    READY; on any failure it logs why (naming the file, key or value) and
    reports FAILED. */
void
    ami_meter_actor (zsock_t *pipe, void *args);

/*  Start a fleet. Returns the actor, or NULL (logged) if it could not
    start; then nothing is left running. Destroy with zactor_destroy. */
zactor_t *
    ami_meter_new (const ami_meter_config_t *config);

/*  The 64-bit population seed given to ami_meter_model_init for every
    meter of a fleet: BLAKE2b of the fleet secret under a fixed personal
    string, so the physics is deterministic per fleet without exposing the
    secret. Exposed so a test or tool can predict a meter's registers. */
uint64_t
    ami_meter_model_seed (const uint8_t seed [AMI_E2E_SEED_SIZE]);

#ifdef __cplusplus
}
#endif

#endif
