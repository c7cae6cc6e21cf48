/*  ami_meter.h - the meter FLEET simulator (ami-meter), a CZMQ actor.

    This header is the manual.

    What it is. One process stands in for many physical meters: N meters
    (default 100, tested with 100 000) that share ONE DEALER connection to
    their aggregator, the way the meters of one RF neighbourhood share one
    radio link to the pole-top node. Each meter keeps its own state:

      - its physics, an ami_meter_model_t (ami_meter_model.h);
      - the last command counter it accepted (replay protection, persisted);
      - its own Ed25519 signing key, derived from the fleet secret and the
        meter number with ami_e2e_meter_keypair. Derivation costs about
        28 us per meter on the reference VM (2.8 s for 100 000 meters), so
        keys are derived lazily, the first time a meter signs, and cached
        (64 bytes per meter). One captured meter key reveals no other.

    Memory: about 150 bytes per meter (model 72, counter 8, key cache 64,
    flag), all allocated and touched at start, so the figure holds even
    after every key has been derived. Measured on the reference VM: a
    100 000-meter fleet actor adds 16 MiB RSS to its process (166 bytes per
    meter, tests/unit/test_meter.c test_rss_100k prints it) and starts in
    about 40 ms; the whole ami-meter process with 100 000 meters runs in
    23 MiB RSS (its LMDB map reserves 40 MiB of address space, not memory).

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
            heartbeat; stats: meters, reads, refused, unreachable,
            malformed, dropped (see "Counters");
        READ_RESP and ERROR answering READ_REQs (below).
      aggregator -> fleet
        HELLO: answered by re-sending the fleet's HELLO chunks;
        READ_REQ: answered as below;
        anything else (another message type, a frame that does not
        decode, a multi-frame message) is dropped, counted as malformed
        and logged (at most 20 warnings per second).

    Answering a READ_REQ (DESIGN.md section 5, SEC-AUTHZ-2, SEC-INT-1..3):
      1. meter_id not in this fleet -> ERROR(request_id, AMI_E_UNREACHABLE,
         origin = fleet id, text naming the meter and the fleet).
      2. ami_e2e_verify with the MDMS signing key; then ami_e2e_check_command
         against the meter's id, its last accepted counter and the fleet's
         clock. Any failure -> READ_RESP(meter_id, request_id, status = the
         ami_err code: AMI_E_BAD_SIGNATURE, AMI_E_REPLAY, AMI_E_EXPIRED or
         AMI_E_WRONG_TARGET, sealed empty), signed by that meter's key.
      3. Accepted: the counter is persisted BEFORE the answer leaves (a
         command is never acted on twice, even across a crash). Then the
         registers are sampled (ami_meter_model_sample at the fleet clock),
         encoded as a READING carrying the request_id, sealed to the MDMS
         box key (ami_e2e_seal: aggregators and head ends see ciphertext
         only), wrapped in READ_RESP(meter_id, request_id, 0, sealed) and
         signed with the meter's own key.
      If the state store fails, the command is refused with status
      AMI_E_STORAGE (signed, nothing sealed): never answer what was not
      recorded (SEC-FAIL-1).

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

    Counters (HEALTH stats and STATUS):
        meters       meters in the fleet
        reads        READ_REQs answered with a sealed reading (status 0)
        refused      READ_REQs answered with a refusal status
        unreachable  READ_REQs for a meter not in this fleet (ERROR)
        malformed    frames from the aggregator that did not decode or
                     were not HELLO / READ_REQ
        dropped      outgoing frames dropped because the DEALER's queue
                     was full (aggregator unreachable for a long time)

    Pipe commands (zstr strings):
        "$TERM"    exit (zactor_destroy sends it)
        "STATUS"   reply one zmsg of decimal strings: meters, reads,
                   refused, unreachable, malformed (frames 0..4; readers
                   that want the first three ignore the rest)

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
        false)): sign_pk verifies commands, box_pk seals readings. Secret
        halves, if present, are ignored (a fleet never holds them). */
    ami_e2e_mdms_t mdms;
    /*  Directory of the persistent state (created if missing). Required. */
    const char *state;
    /*  HEALTH interval; 0 = AMI_METER_HEARTBEAT_MS. */
    int heartbeat_ms;
    /*  Added to the wall clock for command checks and readings: lets a
        test run a meter whose clock is off (0 in production). */
    int64_t clock_offset_ms;
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
