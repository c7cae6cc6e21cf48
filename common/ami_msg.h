/*  ami_msg.h - the ami-bus wire codec (implements proto/PROTOCOL.md).

    Every ami-bus message is ONE ZeroMQ frame holding ONE msgpack array:

        [ version, type, field1, field2, ... ]

    version is AMI_PROTO_VERSION; type is one of ami_msg_type_t; the fields
    and their order, msgpack types and limits are fixed per type (see the
    field comments below, and proto/PROTOCOL.md which is normative). There
    are no maps, floats or ext types anywhere on the wire.

    Decoding is strict: any deviation - wrong msgpack type, missing or extra
    field, string or array over its limit, wrong size of a fixed-size binary,
    bytes after the array, unknown version or type - returns an ami_err_t
    code and leaves the message in an unspecified but safe state. The decoder
    never reads past the input and never allocates in proportion to a length
    field it has not checked against the bytes actually present.

    Usage (one ami_msg_t per thread, reused for every message):

        ami_msg_t *msg = ami_msg_new ();
        int rc = ami_msg_decode (msg, data, size);
        if (rc) { log ami_strerror (rc); drop the frame; }
        else switch (msg->type) { case AMI_MSG_READ_REQ: use msg->read_req ... }

        ami_msg_reset (msg, AMI_MSG_READ_REQ);
        fill msg->read_req;
        rc = ami_msg_encode (msg, buf, sizeof buf, &len);

    Ownership: strings and fixed-size binaries are copied into the message.
    Variable-size binaries (the `sealed` and `box` fields) are NOT copied:
    after decode they point into the caller's input buffer and stay valid
    only as long as that buffer; before encode the caller points them at its
    own bytes. This keeps interval-data batches zero-copy.

    Signed messages (READ_REQ, READ_RESP) end with a 64-byte signature field,
    always encoded as msgpack bin8 (0xc4 0x40 + 64 bytes, 66 bytes). The
    signed part of such a frame is therefore exactly its first (size - 66)
    bytes; ami_msg_signature_slot() returns it. Relays forward the frame's
    bytes unchanged, so no canonical re-encoding is ever needed.
*/
#ifndef AMI_MSG_H_INCLUDED
#define AMI_MSG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------- */
/*  Protocol constants and limits (PROTOCOL.md, "Limits")                  */

#define AMI_PROTO_VERSION       1

/* Largest frame any ami-bus socket accepts (also set as ZMQ_MAXMSGSIZE):
   a full BATCH (1024 blocks of <= 512 bytes) fits with room to spare. */
#define AMI_MAX_FRAME           (1024 * 1024)
/* Meter, node and service ids: short printable names such as MTR-000001.
   Charset [A-Za-z0-9._:-]; 32 bytes leaves room for utility naming schemes. */
#define AMI_MAX_ID              32
/* Role names: meter, aggregator, headend, broker, mdms, operator, ... */
#define AMI_MAX_ROLE            16
/* Free-form human text (error messages, event text): valid UTF-8, no NUL. */
#define AMI_MAX_TEXT            256
/* Registers in one reading: DESIGN.md section 7 lists 17; 32 leaves room. */
#define AMI_MAX_REGISTERS       32
/* Meter ids in one HELLO; a larger fleet announces itself in chunks. */
#define AMI_MAX_HELLO_METERS    1024
/* Interval records in one PROFILE block: one day at 15-minute intervals. */
#define AMI_MAX_PROFILE_RECORDS 96
/* Per-meter blocks in one BATCH. */
#define AMI_MAX_BATCH_BLOCKS    1024
/* Interval-data flow control (PROTOCOL.md 8.3, 8.5): batches a sender may
   have in flight before its first BATCH_ACK (4 x ~1 MiB bounds what one
   sender can make a receiver buffer); how long a sender with no credit, or
   with a refused batch, waits before it tries again (one heartbeat); how
   long an unacknowledged batch waits before it is resent through another
   head end (10 heartbeats: longer than any durable commit, shorter than an
   operator's patience). */
#define AMI_CREDIT_INITIAL        4
#define AMI_BATCH_RETRY_MS        1000
#define AMI_BATCH_ACK_TIMEOUT_MS  10000
/* A batch builder stops adding blocks before the encoded BATCH would pass
   this size, so it always fits in AMI_MAX_FRAME (64 KiB of headroom for
   the envelope and the msgpack headers). */
#define AMI_BATCH_MAX_BYTES       (AMI_MAX_FRAME - 64 * 1024)
/* Encrypted payload of a READ_RESP or of one BATCH block. A full reading
   (32 registers) encodes to < 1 KiB; a full PROFILE block to < 3 KiB. */
#define AMI_MAX_SEALED          4096
/* Name/value statistics in one HEALTH (and in one API_STATUS row). 64:
   an aggregator reports 40-odd counters (every queue's fill, bound and
   refusals); an encoded HEALTH of 64 stats stays < 3 KiB (64 x 44 bytes +
   the header), an API_STATUS page of 64 such rows < 190 KiB. */
#define AMI_MAX_STATS           64
/* Rows in one operator API reply; larger results are paged (`more`). */
#define AMI_MAX_API_READINGS    100
#define AMI_MAX_API_METERS      256
#define AMI_MAX_API_SERVICES    64
#define AMI_MAX_API_INTERVALS   2976    /* 31 days at 15 minutes */
#define AMI_MAX_API_AUDIT       256
/* Failures listed in one API_VERIFY (the total is always given). */
#define AMI_MAX_API_FAILURES    256
/* Customer name on the registry (SEC-CONF-2 data): UTF-8, no NUL. */
#define AMI_MAX_CUSTOMER_NAME   64
/* Longest load-profile range one READ_REQ may ask a meter to send again
   (SEC-INT-5, READ_REQ.profile_from_s/profile_to_s): 31 days, what one
   `amictl gaps`/`intervals` page shows (AMI_MAX_API_INTERVALS at 15
   minutes) and what a meter keeps by default; it bounds the work and the
   interval data one signed command can make a fleet produce. */
#define AMI_PROFILE_RECOVER_MAX_S  (31 * 86400)

#define AMI_REQUEST_ID_SIZE     16      /* correlation / request id, random */
#define AMI_SIGNATURE_SIZE      64      /* Ed25519 detached signature */
#define AMI_OBIS_SIZE           6       /* OBIS code A.B.C.D.E.F, one byte each */
#define AMI_HASH_SIZE           32      /* BLAKE2b-256 audit chain hash */
/* Bytes the signature field takes at the end of a signed frame:
   bin8 marker 0xc4, length 0x40, then 64 signature bytes. */
#define AMI_SIGNATURE_FIELD     (2 + AMI_SIGNATURE_SIZE)

/* ---------------------------------------------------------------------- */
/*  Message types                                                          */

typedef enum {
    AMI_MSG_HELLO          = 1,  /* node introduces itself (+ meters it carries) */
    AMI_MSG_HEALTH         = 2,  /* liveness and counters, sent every heartbeat */
    AMI_MSG_EVENT          = 3,  /* MDMS event feed (PUB), sequence-numbered */
    AMI_MSG_ERROR          = 4,  /* a request failed: code + text */

    AMI_MSG_READ_REQ       = 10, /* MDMS -> meter: signed on-demand read command */
    AMI_MSG_READ_RESP      = 11, /* meter -> MDMS: sealed, signed reading */
    AMI_MSG_READING        = 12, /* plaintext inside READ_RESP.sealed */

    AMI_MSG_PROFILE        = 20, /* plaintext inside a BATCH block: load profile */
    AMI_MSG_BATCH          = 21, /* interval data blocks, many meters */
    AMI_MSG_BATCH_ACK      = 22, /* custody acknowledgement + flow-control credit */

    AMI_MSG_API_REQ        = 40, /* operator -> MDMS request */
    AMI_MSG_API_READINGS   = 41, /* reply: on-demand reading(s) or history */
    AMI_MSG_API_METERS     = 42, /* reply: meter registry page */
    AMI_MSG_API_STATUS     = 43, /* reply: health of every service */
    AMI_MSG_API_INTERVALS  = 44, /* reply: interval data for a range */
    AMI_MSG_API_AUDIT      = 45, /* reply: audit log entries */
    AMI_MSG_API_CUSTOMER   = 46, /* reply: a meter's customer record */
    AMI_MSG_API_VERIFY     = 47  /* reply: result of re-verifying stored records */
} ami_msg_type_t;

/* Operator API actions (API_REQ.action) */
typedef enum {
    AMI_ACT_READ      = 1,  /* on-demand read of meter_id (timeout_ms) */
    AMI_ACT_HISTORY   = 2,  /* stored readings of meter_id in [from_ms,to_ms], newest first, limit */
    AMI_ACT_METERS    = 3,  /* registry page after meter_id ("" = from start), limit */
    AMI_ACT_STATUS    = 4,  /* health of every service: rows after from_ms rows, limit */
    AMI_ACT_INTERVALS = 5,  /* interval records of meter_id in [from_ms,to_ms] */
    AMI_ACT_AUDIT     = 6,  /* audit entries with time >= from_ms, limit */
    AMI_ACT_VERIFY    = 7,  /* re-verify stored readings of meter_id -> API_VERIFY */
    AMI_ACT_CUSTOMER  = 8,  /* customer record of meter_id -> API_CUSTOMER */
    AMI_ACT_AUDIT_VERIFY = 9, /* re-verify the whole audit chain -> API_VERIFY */
    AMI_ACT_RECOVER   = 10  /* on-demand read of meter_id asking it to send its interval
                               data with end in (from_ms, to_ms] again (timeout_ms) */
} ami_action_t;

#define AMI_ACT_MAX 10

/* Service states in HEALTH */
typedef enum {
    AMI_STATE_STARTING = 0,
    AMI_STATE_READY    = 1,
    AMI_STATE_DEGRADED = 2,  /* serving, but a dependency is down */
    AMI_STATE_STOPPING = 3,
    AMI_STATE_DOWN     = 4   /* reported by an observer: not heard from */
} ami_state_t;

#define AMI_STATE_MAX 4

/* Quality flags (register, reading and interval status), IEC 61968-9 spirit */
#define AMI_Q_VALID       0x00
#define AMI_Q_ESTIMATED   0x01  /* value estimated, not measured */
#define AMI_Q_CLOCK_ERR   0x02  /* meter clock not trusted */
#define AMI_Q_OVERFLOW    0x04  /* register wrapped or saturated */
#define AMI_Q_POWER_FAIL  0x08  /* power failure during the period */
#define AMI_Q_TAMPER      0x10  /* tamper alarm active */

/* Event kinds (EVENT.kind) */
typedef enum {
    AMI_EV_READ_DONE     = 1,
    AMI_EV_READ_FAILED   = 2,
    AMI_EV_METER_ALARM   = 3,
    AMI_EV_METER_OFFLINE = 4,
    AMI_EV_SERVICE_DOWN  = 5,
    AMI_EV_SERVICE_UP    = 6,
    AMI_EV_SECURITY      = 7   /* refused request, bad signature, replay... */
} ami_event_kind_t;

#define AMI_EV_MAX 7

/* ---------------------------------------------------------------------- */
/*  Field structures. Strings are NUL-terminated copies. Wire types:
    str = msgpack str; bin = msgpack bin; uN = msgpack non-negative integer
    that fits N bits; i64/i8 = msgpack integer (either sign) in range.    */

typedef char ami_id_t [AMI_MAX_ID + 1];

typedef struct {
    uint8_t  obis [AMI_OBIS_SIZE];  /* bin(6) OBIS A..F */
    int64_t  value;                 /* i64: value = value * 10^scaler, in unit */
    int8_t   scaler;                /* i8: power-of-ten multiplier, -9..9 */
    uint8_t  unit;                  /* u8: DLMS/COSEM unit code (27 W, 30 Wh, 33 A, 35 V, 44 Hz, 255 none) */
    uint8_t  quality;               /* u8: AMI_Q_* flags */
} ami_register_t;                   /* wire: [obis, value, scaler, unit, quality] */

typedef struct {                    /* wire: [end_s, import_wh, export_wh, status] */
    uint32_t end_s;                 /* u32: interval end, Unix seconds UTC */
    uint64_t import_wh;             /* u64: +A energy register at end, Wh */
    uint64_t export_wh;             /* u64: -A energy register at end, Wh */
    uint16_t status;                /* u16: AMI_Q_* flags for the interval */
} ami_interval_t;

typedef struct {                    /* [1, 1, role, node_id, [meter_id...]] */
    char     role [AMI_MAX_ROLE + 1];          /* str, 1..16, id charset */
    ami_id_t node_id;                          /* str, 1..32, id charset */
    uint32_t meter_count;                      /* array 0..AMI_MAX_HELLO_METERS */
    ami_id_t meters [AMI_MAX_HELLO_METERS];    /* str, 1..32 each */
} ami_hello_t;

typedef struct {
    ami_id_t name;                  /* str, 1..32, id charset */
    uint64_t value;                 /* u64 */
} ami_stat_t;                       /* wire: [name, value] */

typedef struct {                    /* [1, 2, role, node_id, state, uptime_ms, [[name, value]...]] */
    char     role [AMI_MAX_ROLE + 1];
    ami_id_t node_id;
    uint8_t  state;                 /* u8 ami_state_t, <= AMI_STATE_MAX */
    uint64_t uptime_ms;             /* u64 */
    uint32_t stat_count;            /* array <= AMI_MAX_STATS */
    ami_stat_t stats [AMI_MAX_STATS];
} ami_health_t;

typedef struct {                    /* [1, 3, seq, time_ms, kind, meter_id, origin, text] */
    uint64_t seq;                   /* u64, per publisher, +1 per event: gaps show loss */
    uint64_t time_ms;               /* u64 Unix ms UTC */
    uint16_t kind;                  /* u16 ami_event_kind_t, 1..AMI_EV_MAX */
    ami_id_t meter_id;              /* str 0..32 ("" when not about one meter) */
    ami_id_t origin;                /* str 1..32: node id of the publisher */
    char     text [AMI_MAX_TEXT + 1];  /* str 0..256 UTF-8 */
} ami_event_t;

typedef struct {                    /* [1, 4, request_id, code, origin, text] */
    bool     has_request_id;        /* request_id is bin(16), or bin(0) when none */
    uint8_t  request_id [AMI_REQUEST_ID_SIZE];
    uint16_t code;                  /* u16 ami_err_t, non-zero */
    ami_id_t origin;                /* str 1..32: node id that detected the error */
    char     text [AMI_MAX_TEXT + 1];  /* str 0..256 UTF-8 */
} ami_error_t;

typedef struct {                    /* [1, 10, meter_id, request_id, counter, issued_ms, expires_ms,
                                        profile_from_s, profile_to_s, signature] */
    ami_id_t meter_id;              /* str 1..32: target meter */
    uint8_t  request_id [AMI_REQUEST_ID_SIZE];  /* bin(16) */
    uint64_t counter;               /* u64, per meter, strictly increasing, >= 1 */
    uint64_t issued_ms;             /* u64 Unix ms UTC at the MDMS */
    uint64_t expires_ms;            /* u64, > issued_ms */
    uint64_t profile_from_s;        /* u64 Unix s: with profile_to_s, both 0 = an ordinary
                                       read; else the meter also sends again its load-profile
                                       intervals with end in (from, to] (SEC-INT-5): */
    uint64_t profile_to_s;          /* u64, from < to, to - from <= AMI_PROFILE_RECOVER_MAX_S */
    uint8_t  signature [AMI_SIGNATURE_SIZE];    /* bin(64), MDMS Ed25519 over signed part */
} ami_read_req_t;

typedef struct {                    /* [1, 11, meter_id, request_id, status, sealed, signature] */
    ami_id_t meter_id;              /* str 1..32: responding meter */
    uint8_t  request_id [AMI_REQUEST_ID_SIZE];  /* bin(16), copied from READ_REQ */
    uint16_t status;                /* u16: AMI_OK, or the meter's refusal (ami_err_t) */
    const uint8_t *sealed;          /* bin 0..AMI_MAX_SEALED: sealed READING (empty if status) */
    size_t   sealed_size;
    uint8_t  signature [AMI_SIGNATURE_SIZE];    /* bin(64), meter Ed25519 over signed part */
} ami_read_resp_t;

typedef struct {                    /* [1, 12, meter_id, request_id, read_ms, quality, [register...]] */
    ami_id_t meter_id;
    uint8_t  request_id [AMI_REQUEST_ID_SIZE];
    uint64_t read_ms;               /* u64 meter clock at the read, Unix ms UTC */
    uint32_t quality;               /* u32 AMI_Q_* for the whole reading */
    uint32_t register_count;        /* array 1..AMI_MAX_REGISTERS */
    ami_register_t registers [AMI_MAX_REGISTERS];
} ami_reading_t;

typedef struct {                    /* [1, 20, meter_id, seq, made_ms, [interval...]] */
    ami_id_t meter_id;
    uint64_t seq;                   /* u64 per-meter block id, >= 1, increasing (see PROTOCOL 4.8) */
    uint64_t made_ms;               /* u64 Unix ms (wall clock) when the meter sealed the block:
                                       end-to-end ingest latency is measured from it */
    uint32_t record_count;          /* array 1..AMI_MAX_PROFILE_RECORDS */
    ami_interval_t records [AMI_MAX_PROFILE_RECORDS];
} ami_profile_t;

/*  The largest encoding of a PROFILE with n records: array + version +
    type + str8 meter id (<= AMI_MAX_ID) + u64 seq + u64 made_ms + array16,
    and per record array + u32 end_s + u64 + u64 + u16. Buffers sized with
    it never overflow, and the meter pads every block to it (SEC-CONF-3). */
#define AMI_PROFILE_MAX_ENCODED(n) \
    (1 + 1 + 1 + 2 + AMI_MAX_ID + 9 + 9 + 3 + 27 * (size_t) (n))

typedef struct {                    /* [meter_id, seq, box] */
    ami_id_t meter_id;              /* str 1..32 */
    uint64_t seq;                   /* u64 >= 1, equals the sealed PROFILE's seq */
    const uint8_t *box;             /* bin 1..AMI_MAX_SEALED: encrypted PROFILE */
    size_t   box_size;
} ami_block_t;

typedef struct {                    /* [1, 21, batch_id, origin, [block...]] */
    uint64_t batch_id;              /* u64, unique per origin; echoed in BATCH_ACK */
    ami_id_t origin;                /* str 1..32: node that built the batch */
    uint32_t block_count;           /* array 1..AMI_MAX_BATCH_BLOCKS */
    ami_block_t blocks [AMI_MAX_BATCH_BLOCKS];
} ami_batch_t;

typedef struct {                    /* [1, 22, batch_id, status, credit] */
    uint64_t batch_id;
    uint16_t status;                /* u16: AMI_OK = durable; else ami_err_t, resend */
    uint32_t credit;                /* u32: further batches the sender may have in flight */
} ami_batch_ack_t;

typedef struct {                    /* [1, 40, corr, action, meter_id, from_ms, to_ms, limit, timeout_ms] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];  /* bin(16): correlation id chosen by the client */
    uint8_t  action;                /* u8 ami_action_t, 1..AMI_ACT_MAX */
    ami_id_t meter_id;              /* str 0..32 */
    uint64_t from_ms;               /* u64, 0 = unbounded */
    uint64_t to_ms;                 /* u64, 0 = unbounded */
    uint32_t limit;                 /* u32, 0 = server default */
    uint32_t timeout_ms;            /* u32, 0 = server default */
} ami_api_req_t;

typedef struct {                    /* [meter_id, request_id, requested_ms, read_ms, stored_ms, quality, [register...]] */
    ami_reading_t reading;          /* meter_id, request_id, read_ms, quality, registers */
    uint64_t requested_ms;          /* u64: when the MDMS issued the read */
    uint64_t stored_ms;             /* u64: when the reading was durable in LMDB */
} ami_stored_reading_t;

typedef struct {                    /* [1, 41, corr, more, [stored_reading...]] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    bool     more;                  /* bool: more rows exist beyond this page */
    uint32_t count;                 /* array 0..AMI_MAX_API_READINGS */
    ami_stored_reading_t readings [AMI_MAX_API_READINGS];
} ami_api_readings_t;

typedef struct {                    /* [meter_id, aggregator_id, last_read_ms, state] */
    ami_id_t meter_id;
    ami_id_t aggregator_id;         /* str 1..32 */
    uint64_t last_read_ms;          /* u64, 0 = never */
    uint8_t  state;                 /* u8 ami_state_t */
} ami_meter_row_t;

typedef struct {                    /* [1, 42, corr, more, [meter_row...]] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    bool     more;
    uint32_t count;                 /* array 0..AMI_MAX_API_METERS */
    ami_meter_row_t meters [AMI_MAX_API_METERS];
} ami_api_meters_t;

typedef struct {                    /* [role, node_id, state, uptime_ms, age_ms, [[name, value]...]] */
    char     role [AMI_MAX_ROLE + 1];
    ami_id_t node_id;
    uint8_t  state;                 /* u8 ami_state_t */
    uint64_t uptime_ms;             /* u64 as last reported */
    uint64_t age_ms;                /* u64: since the observer last heard it */
    uint32_t stat_count;            /* array <= AMI_MAX_STATS: the stats of its last HEALTH */
    ami_stat_t stats [AMI_MAX_STATS];
} ami_service_row_t;

typedef struct {                    /* [1, 43, corr, more, [service_row...]] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    bool     more;                  /* bool: more rows exist beyond this page */
    uint32_t count;                 /* array 0..AMI_MAX_API_SERVICES */
    ami_service_row_t services [AMI_MAX_API_SERVICES];
} ami_api_status_t;

typedef struct {                    /* [1, 44, corr, meter_id, more, [interval...]] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    ami_id_t meter_id;              /* str 1..32 */
    bool     more;
    uint32_t count;                 /* array 0..AMI_MAX_API_INTERVALS */
    ami_interval_t records [AMI_MAX_API_INTERVALS];
} ami_api_intervals_t;

typedef struct {                    /* [seq, time_ms, operator, role, action, meter_id, corr, result, hash] */
    uint64_t seq;                   /* u64, 1.. contiguous */
    uint64_t time_ms;               /* u64 */
    ami_id_t operator_id;           /* str 1..32 (from the operator's certificate) */
    char     role [AMI_MAX_ROLE + 1];  /* str 1..16 */
    uint8_t  action;                /* u8 ami_action_t */
    ami_id_t meter_id;              /* str 0..32 */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];  /* bin(16) */
    uint16_t result;                /* u16 ami_err_t */
    uint8_t  hash [AMI_HASH_SIZE];  /* bin(32): chain hash of this entry */
} ami_audit_row_t;

typedef struct {                    /* [1, 45, corr, more, [audit_row...]] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    bool     more;
    uint32_t count;                 /* array 0..AMI_MAX_API_AUDIT */
    ami_audit_row_t entries [AMI_MAX_API_AUDIT];
} ami_api_audit_t;

typedef struct {                    /* [1, 46, corr, meter_id, name, address, account] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    ami_id_t meter_id;              /* str 1..32 */
    char     name [AMI_MAX_CUSTOMER_NAME + 1];  /* str 1..64 UTF-8 */
    char     address [AMI_MAX_TEXT + 1];        /* str 0..256 UTF-8: service address */
    ami_id_t account;               /* str 1..32, id charset */
} ami_api_customer_t;

typedef struct {                    /* [ref, code] */
    uint64_t ref;                   /* u64: read_ms of a reading, or seq of an audit entry */
    uint16_t code;                  /* u16 ami_err_t, non-zero: why it failed */
} ami_failure_t;

typedef struct {                    /* [1, 47, corr, checked, failed, [failure...]] */
    uint8_t  corr [AMI_REQUEST_ID_SIZE];
    uint64_t checked;               /* u64: records examined */
    uint64_t failed;                /* u64: records that failed (>= count) */
    uint32_t count;                 /* array 0..AMI_MAX_API_FAILURES, the first failures in order */
    ami_failure_t failures [AMI_MAX_API_FAILURES];
} ami_api_verify_t;

/*  A decoded (or to-be-encoded) message. Large (about 200 KiB: every array
    is inline at its maximum size; API_STATUS, 64 rows of 64 stats, is the
    largest member), so allocate one with ami_msg_new and
    reuse it; never put one on the stack. */
typedef struct {
    uint8_t type;                   /* ami_msg_type_t */
    union {
        ami_hello_t         hello;
        ami_health_t        health;
        ami_event_t         event;
        ami_error_t         error;
        ami_read_req_t      read_req;
        ami_read_resp_t     read_resp;
        ami_reading_t       reading;
        ami_profile_t       profile;
        ami_batch_t         batch;
        ami_batch_ack_t     batch_ack;
        ami_api_req_t       api_req;
        ami_api_readings_t  api_readings;
        ami_api_meters_t    api_meters;
        ami_api_status_t    api_status;
        ami_api_intervals_t api_intervals;
        ami_api_audit_t     api_audit;
        ami_api_customer_t  api_customer;
        ami_api_verify_t    api_verify;
    };
    void *priv;                     /* codec scratch (msgpack zone); do not touch */
} ami_msg_t;

/* ---------------------------------------------------------------------- */
/*  Functions                                                              */

/*  Allocate a message (zeroed, type 0). Returns NULL on out of memory. */
ami_msg_t *
    ami_msg_new (void);

/*  Free a message and its scratch space; sets *self_p to NULL. Safe on
    NULL and on *self_p == NULL. */
void
    ami_msg_destroy (ami_msg_t **self_p);

/*  Zero the message's fields and set its type, ready to be filled for
    encoding. Cheap for every type except the large API replies, which clear
    only their header fields and counts. */
void
    ami_msg_reset (ami_msg_t *self, ami_msg_type_t type);

/*  Decode exactly one message from data[0..size). On success returns AMI_OK
    and fills self (self->type tells which union member is valid; variable
    binaries point into data). On failure returns one of AMI_E_TRUNCATED,
    AMI_E_TYPE, AMI_E_LIMIT, AMI_E_TRAILING, AMI_E_VERSION, AMI_E_MSGTYPE,
    AMI_E_ARITY, AMI_E_RANGE, AMI_E_NOMEM; self's contents are then
    unspecified. Never reads outside data[0..size). size > AMI_MAX_FRAME
    gives AMI_E_LIMIT. data may be NULL only when size is 0. */
int
    ami_msg_decode (ami_msg_t *self, const void *data, size_t size);

/*  Encode self into buf[0..cap) and set *len to the bytes written. Checks
    the same limits the decoder checks, so it never emits a frame that
    ami_msg_decode would refuse: AMI_E_LIMIT, AMI_E_RANGE, AMI_E_MSGTYPE on
    a bad message, AMI_E_BUFSIZE when cap (or AMI_MAX_FRAME) is too small.
    *len is untouched on failure. */
int
    ami_msg_encode (const ami_msg_t *self, void *buf, size_t cap, size_t *len);

/*  For a frame holding a signed message (READ_REQ, READ_RESP) that has
    already decoded successfully: set *signed_len to the length of the
    signed prefix (size - AMI_SIGNATURE_FIELD) and return a pointer to the
    64 signature bytes inside data. Returns NULL if the frame does not end
    with a bin8 64-byte field. Used to sign (patch the signature in place
    after encoding with a zero signature) and to verify. */
const uint8_t *
    ami_msg_signature_slot (const void *data, size_t size, size_t *signed_len);

/*  Peek at the type of an encoded message without decoding it: returns the
    type, or 0 if data does not start with [AMI_PROTO_VERSION, type, ...].
    For routing decisions only; always decode before trusting contents. */
int
    ami_msg_peek_type (const void *data, size_t size);

/*  Name of a message type ("READ_REQ"), or "UNKNOWN". Never NULL. */
const char *
    ami_msg_type_name (int type);

/*  Name of an API action ("read"), or NULL if not a valid action. And the
    reverse: action number for a name, or 0. */
const char *
    ami_action_name (int action);
int
    ami_action_from_name (const char *name);

/*  Validate an id string as the wire does (1..AMI_MAX_ID bytes of
    [A-Za-z0-9._:-]). Returns true if valid. */
bool
    ami_id_valid (const char *id);

/*  Format an OBIS code as "1.0.1.8.0.255"; out must hold 24 bytes.
    Returns out. Parse the same text (5 or 6 groups; a missing F is 255);
    returns 0 on success, -1 on bad text. */
char *
    ami_obis_format (const uint8_t obis [AMI_OBIS_SIZE], char out [24]);
int
    ami_obis_parse (const char *text, uint8_t obis [AMI_OBIS_SIZE]);

/*  Hex-encode a request/correlation id (32 lowercase chars + NUL). */
char *
    ami_request_id_format (const uint8_t id [AMI_REQUEST_ID_SIZE], char out [2 * AMI_REQUEST_ID_SIZE + 1]);

#ifdef __cplusplus
}
#endif

#endif
