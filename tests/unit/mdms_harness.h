/*  mdms_harness.h - the in-process MDMS test bench shared by test_mdms.c
    and test_mdms_security.c: a real ami_broker, the MDMS actor, a
    hand-written MDP worker playing head end, aggregator and meter, and
    operator clients, all over CURVE with one process-wide ami_auth.

    The worker and the operator client are written from PROTOCOL.md and
    RFC 7 here, sharing no code with services/mdms/: frames are built by
    hand, the meter's answer is made the way a real meter makes it (meter
    model registers, READING sealed to the MDMS box key, READ_RESP signed
    with the meter's own derived key). Every wait has a deadline; the only
    sleeps are poll intervals of bounded "wait until" loops.

    Use: cmocka_run_group_tests_name (..., mh_group_setup, mh_group_teardown);
    then per test mh_env_start / mh_env_stop. Include after <cmocka.h>'s
    prerequisites (setjmp, stdarg, stddef, stdint) and <cmocka.h>.
*/
#ifndef MDMS_HARNESS_H_INCLUDED
#define MDMS_HARNESS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_mdms.h"
#include "ami_msg.h"

/*  Deadlines: generous for a loaded 2-core VM under valgrind; "nothing
    arrives" waits are short but far above a loopback round trip. */
#define WAIT_MS         5000
#define QUIET_MS        300
#define POLL_MS         10
/*  MDMS heartbeat in these tests: services go DOWN after 3 (300 ms). */
#define HEARTBEAT_MS    100
/*  Meters in the registry: more than one METERS page (256). */
#define METERS          300
/*  Meters above this index are under AGG-NONE, which no worker serves. */
#define AGG_T_METERS    295
/*  Meters with customer columns in the registry (SEC-CONF-2): these. */
#define CUSTOMER_FIRST  21
#define CUSTOMER_LAST   23
#define MDMS_ID         "mdms-1"
#define BROKER_ID       "broker-1"
#define HEADEND_ID      "HE-1"

/*  The customer record of meter CUSTOMER_FIRST (UTF-8, and a '#' that is
    text, not a comment). */
#define CUSTOMER_NAME       "Zo\xc3\xab Quintessa-Hargreaves"
#define CUSTOMER_ADDRESS    "12 Rue de l'\xc3\x89glise, Apt #4, 69001 Lyon"
#define CUSTOMER_ACCOUNT    "ACC-0021-77"

/*  RFC 7 */
#define W_HEADER        "MDPW01"
#define W_READY         0x01
#define W_REQUEST       0x02
#define W_REPLY         0x03
#define W_HEARTBEAT     0x04
#define W_DISCONNECT    0x05

/*  Process-wide fixture: certificates, allow-list, keys, registry. */
typedef struct {
    char *dir;
    char *registry;
    char *data_key;                 /* the MDMS data key file (kdf) */
    ami_auth_t *auth;
    ami_cert_t *broker_cert;
    ami_cert_t *mdms_cert;
    ami_cert_t *headend_cert;
    ami_cert_t *operator_cert;      /* alice, OPERATOR */
    ami_cert_t *operator2_cert;     /* bob, OPERATOR */
    ami_cert_t *viewer_cert;        /* victor, VIEWER */
    ami_cert_t *auditor_cert;       /* audrey, AUDITOR */
    ami_cert_t *secadm_cert;        /* sam, SECADM */
    ami_e2e_mdms_t keys;            /* the MDMS's application keys */
    ami_e2e_mdms_t other_keys;      /* someone else's: wrong sealing key */
    uint8_t fleet_seed [AMI_E2E_SEED_SIZE];
    uint8_t data_seed [AMI_E2E_SEED_SIZE];  /* the data key's secret */
    int db_serial;
} mh_group_t;

extern mh_group_t mh;

/*  Creates the fixture, and sets the process umask to 077 (as on the MDMS
    host): every file a test writes afterwards is private, which the MDMS
    requires of a registry with customer columns (SEC-CONF-2). */
int
    mh_group_setup (void **state);
int
    mh_group_teardown (void **state);

/*  Registry line of meter number i (4 columns). */
void
    mh_registry_line (FILE *file, uint32_t i);

/*  Frames by hand. */
zmsg_t *
    mh_recv (zsock_t *sock, int timeout_ms);
zsock_t *
    mh_curve (int type, const char *endpoint, ami_cert_t *cert, ami_cert_t *server);
size_t
    mh_encode (ami_msg_t *m, uint8_t *buf, size_t cap);

/*  The meter side: an MDP worker for agg.AGG-T (RFC 7, over a DEALER). */
typedef enum {
    W_GOOD,             /* a meter's correct answer */
    W_SILENT,           /* never answers */
    W_REPLAY,           /* the meter refuses: status AMI_E_REPLAY */
    W_BAD_SIG,          /* signature does not verify */
    W_OTHER_SEAL,       /* READING sealed to another key */
    W_WRONG_INNER_ID,   /* READING bound to another request id */
    W_UNREACHABLE,      /* the aggregator says: meter unreachable */
    W_RECORD,           /* as W_GOOD, and the answer's bytes are recorded */
    W_PLAYBACK,         /* a relay replays the recorded (old, signed) answer */
    W_STALE,            /* correct, but read_ms 2 skews before issued_ms */
    W_HOLD,             /* taken, answered later by mh_worker_release */
    W_RELAY_REPLAY      /* a relay's (unauthenticated) ERROR AMI_E_REPLAY */
} mh_wmode_t;

#define MAX_SEEN 64

typedef struct {
    zsock_t *sock;
    mh_wmode_t modes [8];       /* mode of request k; the last one repeats */
    int mode_count;
    int served;                 /* READ_REQs received */
    uint64_t counters [MAX_SEEN];
    uint8_t request_ids [MAX_SEEN][AMI_REQUEST_ID_SIZE];
    ami_reading_t last_good;    /* the last reading answered with W_GOOD */
    uint8_t recorded [AMI_MAX_SEALED + 512];    /* W_RECORD's answer */
    size_t recorded_len;
    zframe_t *held_client;      /* W_HOLD: the request's client address */
    ami_read_req_t held;        /* ... and its READ_REQ */
    ami_msg_t *msg;
} mh_worker_t;

void
    mh_worker_start (mh_worker_t *w, const char *broker_endpoint, const char *service);
void
    mh_worker_modes (mh_worker_t *w, int count, ...);
void
    mh_worker_stop (mh_worker_t *w);
void
    mh_worker_disconnect (mh_worker_t *w);
void
    mh_worker_serve (mh_worker_t *w);
/*  Answer the request held by W_HOLD with mode (asserts one is held). */
void
    mh_worker_release (mh_worker_t *w, mh_wmode_t mode);

/*  Per-test environment: broker + MDMS + worker + operator client. */
typedef struct {
    zactor_t *broker;
    char *broker_endpoint;
    zactor_t *mdms;
    char *api;
    char *ingest;
    char *events;
    char *db;
    zsock_t *client;            /* alice (OPERATOR), DEALER */
    mh_worker_t worker;
    bool has_worker;
    ami_msg_t *reply;
    ami_mdms_config_t config;
} mh_env_t;

/*  Start broker and MDMS on a fresh database; the worker is optional.
    Rate limits are off (0) unless a test sets env->config.rate_* and
    restarts the MDMS (mh_mdms_stop, mh_mdms_start). */
void
    mh_env_start (mh_env_t *env, bool with_worker);
void
    mh_env_stop (mh_env_t *env);
void
    mh_mdms_start (mh_env_t *env);
void
    mh_mdms_stop (mh_env_t *env);

/*  Send an API_REQ as a REQ-compatible DEALER: [""][API_REQ], with a new
    random corr (returned). */
void
    mh_request (zsock_t *client, uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
                const char *meter_id, uint64_t from_ms, uint64_t to_ms, uint32_t limit,
                uint32_t timeout_ms);
/*  The same with the caller's corr (a client reusing a correlation id). */
void
    mh_request_corr (zsock_t *client, const uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
                     const char *meter_id, uint32_t timeout_ms);
/*  Wait for the reply on client, serving the worker meanwhile. Returns the
    decoded reply (env->reply), or NULL on timeout. */
ami_msg_t *
    mh_reply (mh_env_t *env, zsock_t *client, int timeout_ms);
/*  One API call from client; returns the reply, asserting it came. */
ami_msg_t *
    mh_call (mh_env_t *env, zsock_t *client, uint8_t corr [AMI_REQUEST_ID_SIZE], int action,
             const char *meter_id, uint64_t from_ms, uint64_t to_ms, uint32_t limit,
             uint32_t timeout_ms);
/*  Assert reply is ERROR(corr, code) from the MDMS (corr NULL: none). */
void
    mh_assert_error (ami_msg_t *reply, const uint8_t *corr, int code);
/*  METERS row of meter_id: its state (or -1) and last read. */
int
    mh_meter_state (mh_env_t *env, const char *meter_id, uint64_t *last_read_ms);
/*  Wait until METERS shows meter_id in state (the MMI poll has run). */
void
    mh_wait_meter_state (mh_env_t *env, const char *meter_id, int state);
/*  A read by alice that must succeed; returns the READ_REQ counter the
    worker saw for its last try (0 once the worker has served more than
    the requests it records). */
uint64_t
    mh_read_ok (mh_env_t *env, const char *meter_id);
/*  HISTORY of meter_id by client (asserts an API_READINGS). */
ami_msg_t *
    mh_history (mh_env_t *env, zsock_t *client, const char *meter_id, uint32_t limit);
/*  A value from the MDMS's STATUS pipe reply ("name=value"). */
uint64_t
    mh_pipe_stat (mh_env_t *env, const char *name);
/*  The text value of a STATUS pipe field (caller frees). */
char *
    mh_pipe_text (mh_env_t *env, const char *name);

/* ---------------------------------------------------------------------- */
/*  Interval data, as meters, aggregators and head ends make it            */

/*  Interval length the harness MDMS runs with (the default, 15 min). */
#define MH_INTERVAL_S   900

/*  Meter number i's profile key, derived as the meter does
    (ami_e2e_profile_key_meter with its own secret key and the MDMS box
    key). */
void
    mh_profile_key (uint32_t i, uint8_t key [AMI_E2E_PROFILE_KEY_SIZE]);

/*  Fill profile with `count` consecutive intervals of meter_id ending at
    first_end_s, first_end_s + MH_INTERVAL_S, ...: import_wh and export_wh
    derived from the end time and the meter id (so any copy is equal), seq
    = last end_s / MH_INTERVAL_S, made_ms = now. */
void
    mh_profile_fill (ami_profile_t *profile, const char *meter_id, uint32_t first_end_s,
                     uint32_t count);

/*  Seal profile (encoded in scratch) with key as block (header_id,
    header_seq) into box (cap bytes); returns the box length. The header
    may differ from the PROFILE inside (to test the MDMS's checks). */
size_t
    mh_profile_seal (ami_msg_t *scratch, const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE],
                     const char *header_id, uint64_t header_seq, const ami_profile_t *profile,
                     uint8_t *box, size_t cap);

/*  A BATCH being built: blocks point into `boxes` (owned). */
typedef struct {
    ami_msg_t *msg;
    ami_msg_t *scratch;             /* for sealing */
    uint8_t *boxes;
    size_t used;
    size_t cap;
} mh_batch_t;

void
    mh_batch_init (mh_batch_t *b, uint64_t batch_id, const char *origin);
/*  Add block (meter_id, seq, box copied). */
void
    mh_batch_add (mh_batch_t *b, const char *meter_id, uint64_t seq, const uint8_t *box,
                  size_t len);
/*  Add a block made by meter i (registered id MTR-%06u) for its own
    profile: the common case. */
void
    mh_batch_add_meter (mh_batch_t *b, uint32_t i, const uint8_t key [AMI_E2E_PROFILE_KEY_SIZE],
                        uint32_t first_end_s, uint32_t count);
/*  Encode into a new frame. */
zframe_t *
    mh_batch_frame (mh_batch_t *b);
void
    mh_batch_free (mh_batch_t *b);

/*  A head end on the MDMS ingest socket (DEALER, head end certificate),
    introduced with HELLO. */
zsock_t *
    mh_headend_connect (mh_env_t *env);
/*  Wait for the next BATCH_ACK on sock (HELLOs from the MDMS are
    skipped); false on timeout. */
bool
    mh_headend_ack (zsock_t *sock, int timeout_ms, ami_batch_ack_t *ack);
/*  Send frame (copied) and wait for its BATCH_ACK; asserts it came and
    names batch_id. */
ami_batch_ack_t
    mh_headend_send (zsock_t *sock, zframe_t *frame, uint64_t batch_id);

/*  API INTERVALS by client; asserts an API_INTERVALS for meter_id. */
ami_msg_t *
    mh_intervals (mh_env_t *env, zsock_t *client, const char *meter_id, uint64_t from_ms,
                  uint64_t to_ms, uint32_t limit);

#endif
