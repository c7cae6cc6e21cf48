/*  ami_msg.c - the ami-bus wire codec (contract: ami_msg.h; normative
    specification: proto/PROTOCOL.md).

    Design
    ------
    Encoding walks the message struct and packs it with msgpack-c's
    msgpack_packer into the caller's fixed buffer through s_write(), a write
    callback that refuses to go past the buffer (or AMI_MAX_FRAME) and then
    stays "full": the encoder never allocates. Every field is validated
    against exactly the rules the decoder enforces BEFORE it is packed, so
    ami_msg_encode can never emit a frame that ami_msg_decode would refuse
    (the fuzzer's round-trip oracle checks this). A validation error wins
    over a full buffer: the code returned does not depend on `cap`.

    Decoding is two passes over the frame:

    1.  s_prescan(): our own bounded walk over the raw bytes, before msgpack-c
        sees them. It needs no memory (an explicit stack of AMI_MSG_MAX_DEPTH
        counters) and establishes that the input is exactly one complete
        msgpack object made only of the types the protocol uses, no deeper
        than the protocol ever nests, and that every length or count field
        fits in the bytes actually present. This pass exists because
        msgpack-c allocates `n * sizeof (msgpack_object)` (24 bytes) for an
        array header claiming n elements before reading any of them: the
        5-byte input dd ff ff ff ff would ask for ~96 GiB. After the
        pre-scan every element of every array is backed by at least one
        input byte, so msgpack-c's zone never holds more than
        24 * size bytes (24 MiB for the largest frame, ~100 KiB for a full
        1024-block BATCH).

    2.  msgpack_unpack() into the zone kept in self->priv, then a walk of the
        msgpack_object tree with one strict check per field, in wire order.
        (msgpack_unpack_next() would free and re-create its zone on every
        call; the obsolete-but-exported msgpack_unpack() takes our zone, which
        we clear after each decode, so a steady stream of frames decodes with
        no malloc at all.) str and bin objects point into the caller's input:
        strings and fixed-size binaries are copied out, `sealed` and `box`
        stay as zero-copy pointers into the input (ami_msg.h, "Ownership").

    Error precedence (PROTOCOL.md "Decoding rules" is the normative copy):
        1. size: 0 -> TRUNCATED; > AMI_MAX_FRAME -> LIMIT
        2. pre-scan, first problem in byte order: forbidden msgpack type
           (map, float, ext, 0xc1) -> TYPE; container nested deeper than
           AMI_MSG_MAX_DEPTH -> LIMIT; any length, count or value running
           past the end -> TRUNCATED; then bytes after the object -> TRAILING
        3. root not an array -> TYPE; element 0 (version) not an unsigned
           integer -> TYPE, != AMI_PROTO_VERSION -> VERSION; fewer than 2
           elements -> ARITY; element 1 not an unsigned integer -> TYPE,
           unknown -> MSGTYPE; wrong element count for the type -> ARITY
        4. fields in wire order, depth first; per field: msgpack type (TYPE),
           then length / count / fixed size (LIMIT), then value, charset,
           enum or cross-field rule (RANGE). A nested tuple (register,
           interval, block, row...) is checked for its element count (ARITY)
           before its own fields.

    No global mutable state: all tables are const, scratch lives in the
    ami_msg_t. Nothing here asserts on input; the only asserts are on NULL
    arguments that can only come from a programming error.
*/
#include "ami_msg.h"

#include <assert.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest container nesting any message uses: API_READINGS (1) ->
   readings list (2) -> stored reading (3) -> registers list (4) ->
   register (5). Anything deeper is refused before msgpack-c runs (its own
   parser stack is 32 deep; ours must be far below that). */
#define AMI_MSG_MAX_DEPTH   5

/* Initial (and retained) chunk of the per-message msgpack zone. A full
   1024-block BATCH is 4 102 objects of 24 bytes (~98 KiB): 128 KiB lets the
   biggest routine frame decode without a single malloc, and costs nothing
   next to the ~200 KiB ami_msg_t itself. */
#define AMI_MSG_ZONE_CHUNK  (128 * 1024)

/* Root array sizes include version and type. */
#define AMI_MSG_MAX_ARITY   9

#define TRY(expr) do { int rc_ = (expr); if (rc_) return rc_; } while (0)

typedef struct {
    msgpack_zone zone;      /* object tree of the frame being decoded */
} s_priv_t;

/* ---------------------------------------------------------------------- */
/*  Message type table                                                     */

typedef struct {
    uint8_t type;
    uint8_t arity;          /* root array size, version and type included */
    const char *name;
} s_type_info_t;

static const s_type_info_t s_types [] = {
    { AMI_MSG_HELLO,         5, "HELLO" },
    { AMI_MSG_HEALTH,        7, "HEALTH" },
    { AMI_MSG_EVENT,         8, "EVENT" },
    { AMI_MSG_ERROR,         6, "ERROR" },
    { AMI_MSG_READ_REQ,     10, "READ_REQ" },
    { AMI_MSG_READ_RESP,     7, "READ_RESP" },
    { AMI_MSG_READING,       7, "READING" },
    { AMI_MSG_PROFILE,       6, "PROFILE" },
    { AMI_MSG_BATCH,         5, "BATCH" },
    { AMI_MSG_BATCH_ACK,     5, "BATCH_ACK" },
    { AMI_MSG_API_REQ,       9, "API_REQ" },
    { AMI_MSG_API_READINGS,  5, "API_READINGS" },
    { AMI_MSG_API_METERS,    5, "API_METERS" },
    { AMI_MSG_API_STATUS,    5, "API_STATUS" },
    { AMI_MSG_API_INTERVALS, 6, "API_INTERVALS" },
    { AMI_MSG_API_AUDIT,     5, "API_AUDIT" },
    { AMI_MSG_API_CUSTOMER,  7, "API_CUSTOMER" },
    { AMI_MSG_API_VERIFY,    6, "API_VERIFY" },
};

static const s_type_info_t *
s_type_info (uint64_t type)
{
    for (size_t i = 0; i < sizeof s_types / sizeof s_types [0]; i++)
        if (s_types [i].type == type)
            return &s_types [i];
    return NULL;
}

static const char *const s_action_names [AMI_ACT_MAX + 1] = {
    NULL, "read", "history", "meters", "status", "intervals", "audit", "verify",
    "customer", "audit-verify", "recover"
};

/* ---------------------------------------------------------------------- */
/*  Character-level checks shared by encoder and decoder                   */

static bool
s_id_char (uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
}

static bool
s_id_chars (const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!s_id_char ((uint8_t) s [i]))
            return false;
    return true;
}

/*  Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above
    U+10FFFF, and no NUL (our strings are C strings after decoding). */
static bool
s_utf8_valid (const char *str, size_t n)
{
    const uint8_t *s = (const uint8_t *) str;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s [i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0)      { len = 2; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else
            return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s [i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s [i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/*  Pass 1: bounded structural pre-scan of the raw bytes                   */

static uint64_t
s_be (const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | p [i];
    return v;
}

/*  Verify that data[0..size) is exactly one msgpack object built only from
    nil, bool, int, str, bin and array, with containers nested at most
    AMI_MSG_MAX_DEPTH deep and every length and count backed by the bytes
    present. Iterative; O(number of objects); no allocation. */
static int
s_prescan (const uint8_t *p, size_t size)
{
    /* left [d] = elements still to read in the open container at depth d;
       depth 0 is a virtual container holding the single root object. */
    uint32_t left [AMI_MSG_MAX_DEPTH + 1];
    int depth = 0;
    size_t pos = 0;
    left [0] = 1;

    while (true) {
        while (depth > 0 && left [depth] == 0)
            depth--;
        if (depth == 0 && left [0] == 0)
            break;
        left [depth]--;

        if (pos >= size)
            return AMI_E_TRUNCATED;
        uint8_t b = p [pos++];
        size_t avail = size - pos;
        size_t hdr = 0;         /* bytes of length/count/value after b */
        int kind = 0;           /* 0 scalar, 1 str/bin body, 2 array */
        uint64_t n = 0;

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            continue;                           /* fixint, nil, bool */
        else
        if (b >= 0x90 && b <= 0x9f) { kind = 2; n = b & 0x0f; }
        else
        if (b >= 0xa0 && b <= 0xbf) { kind = 1; n = b & 0x1f; }
        else
        switch (b) {
            case 0xcc: case 0xd0: hdr = 1; break;     /* uint8 / int8 */
            case 0xcd: case 0xd1: hdr = 2; break;
            case 0xce: case 0xd2: hdr = 4; break;
            case 0xcf: case 0xd3: hdr = 8; break;
            case 0xc4: case 0xd9: hdr = 1; kind = 1; break;  /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; kind = 1; break;
            case 0xc6: case 0xdb: hdr = 4; kind = 1; break;
            case 0xdc: hdr = 2; kind = 2; break;      /* array16 */
            case 0xdd: hdr = 4; kind = 2; break;      /* array32 */
            default:
                /* 0x80-0x8f/0xde/0xdf maps, 0xca/0xcb floats,
                   0xc7-0xc9/0xd4-0xd8 ext, 0xc1 never used */
                return AMI_E_TYPE;
        }
        if (hdr > avail)
            return AMI_E_TRUNCATED;
        if (kind == 0) {
            pos += hdr;
            continue;
        }
        if (hdr)
            n = s_be (p + pos, hdr);
        pos += hdr;
        avail -= hdr;
        if (kind == 1) {
            if (n > avail)
                return AMI_E_TRUNCATED;
            pos += (size_t) n;
        }
        else {
            if (depth + 1 > AMI_MSG_MAX_DEPTH)
                return AMI_E_LIMIT;
            /* each element takes at least one byte */
            if (n > avail)
                return AMI_E_TRUNCATED;
            left [++depth] = (uint32_t) n;
        }
    }
    return pos == size ? AMI_OK : AMI_E_TRAILING;
}

/* ---------------------------------------------------------------------- */
/*  Pass 2: field decoders over the msgpack_object tree                    */

typedef msgpack_object mobj_t;

static int
s_dec_uint (const mobj_t *o, uint64_t max, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return AMI_E_TYPE;          /* includes negative integers */
    if (o->via.u64 > max)
        return AMI_E_RANGE;
    *out = o->via.u64;
    return AMI_OK;
}

#define DEC_U(o, max, dst) do { uint64_t v_; TRY (s_dec_uint ((o), (max), &v_)); (dst) = v_; } while (0)

static int
s_dec_int (const mobj_t *o, int64_t min, int64_t max, int64_t *out)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t) max)
            return AMI_E_RANGE;
        *out = (int64_t) o->via.u64;
    }
    else
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (o->via.i64 < min)
            return AMI_E_RANGE;
        *out = o->via.i64;
    }
    else
        return AMI_E_TYPE;
    return AMI_OK;
}

static int
s_dec_bool (const mobj_t *o, bool *out)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return AMI_E_TYPE;
    *out = o->via.boolean;
    return AMI_OK;
}

/*  An id-charset string of min..max bytes (min is 0 or 1) into out[max+1]. */
static int
s_dec_id (const mobj_t *o, char *out, size_t min, size_t max)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return AMI_E_TYPE;
    size_t n = o->via.str.size;
    if (n < min || n > max)
        return AMI_E_LIMIT;
    if (!s_id_chars (o->via.str.ptr, n))
        return AMI_E_RANGE;
    if (n)
        memcpy (out, o->via.str.ptr, n);
    out [n] = 0;
    return AMI_OK;
}

/*  UTF-8 text (no NUL) of min..max bytes into out[max+1]: the customer
    name (1..AMI_MAX_CUSTOMER_NAME). */
static int
s_dec_utf8 (const mobj_t *o, char *out, size_t min, size_t max)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return AMI_E_TYPE;
    size_t n = o->via.str.size;
    if (n < min || n > max)
        return AMI_E_LIMIT;
    if (!s_utf8_valid (o->via.str.ptr, n))
        return AMI_E_RANGE;
    if (n)
        memcpy (out, o->via.str.ptr, n);
    out [n] = 0;
    return AMI_OK;
}

/*  Free text: 0..AMI_MAX_TEXT bytes of UTF-8 without NUL. */
static int
s_dec_text (const mobj_t *o, char *out)
{
    return s_dec_utf8 (o, out, 0, AMI_MAX_TEXT);
}

static int
s_dec_fixbin (const mobj_t *o, uint8_t *out, size_t size)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return AMI_E_TYPE;
    if (o->via.bin.size != size)
        return AMI_E_LIMIT;
    memcpy (out, o->via.bin.ptr, size);
    return AMI_OK;
}

/*  Variable binary, zero-copy: *ptr points into the input frame. */
static int
s_dec_varbin (const mobj_t *o, size_t min, size_t max, const uint8_t **ptr, size_t *size)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return AMI_E_TYPE;
    if (o->via.bin.size < min || o->via.bin.size > max)
        return AMI_E_LIMIT;
    *ptr = (const uint8_t *) o->via.bin.ptr;
    *size = o->via.bin.size;
    return AMI_OK;
}

/*  A list field: array of min..max elements. */
static int
s_dec_list (const mobj_t *o, uint32_t min, uint32_t max, const mobj_t **items, uint32_t *count)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return AMI_E_TYPE;
    if (o->via.array.size < min || o->via.array.size > max)
        return AMI_E_LIMIT;
    *items = o->via.array.ptr;
    *count = o->via.array.size;
    return AMI_OK;
}

/*  A tuple (register, interval, block, row...): array of exactly n. */
static int
s_dec_tuple (const mobj_t *o, uint32_t n, const mobj_t **f)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return AMI_E_TYPE;
    if (o->via.array.size != n)
        return AMI_E_ARITY;
    *f = o->via.array.ptr;
    return AMI_OK;
}

static int
s_dec_state (const mobj_t *o, uint8_t *state)
{
    DEC_U (o, AMI_STATE_MAX, *state);
    return AMI_OK;
}

static int
s_dec_action (const mobj_t *o, uint8_t *action)
{
    DEC_U (o, AMI_ACT_MAX, *action);
    if (*action < 1)
        return AMI_E_RANGE;
    return AMI_OK;
}

/* [obis, value, scaler, unit, quality] */
static int
s_dec_register (const mobj_t *o, ami_register_t *r)
{
    const mobj_t *f;
    int64_t v;
    TRY (s_dec_tuple (o, 5, &f));
    TRY (s_dec_fixbin (&f [0], r->obis, AMI_OBIS_SIZE));
    TRY (s_dec_int (&f [1], INT64_MIN, INT64_MAX, &r->value));
    /* scaler -9..9: enough for mWh..GWh, and 10^9 stays exact in int64 math */
    TRY (s_dec_int (&f [2], -9, 9, &v));
    r->scaler = (int8_t) v;
    DEC_U (&f [3], UINT8_MAX, r->unit);
    DEC_U (&f [4], UINT8_MAX, r->quality);
    return AMI_OK;
}

static int
s_dec_registers (const mobj_t *o, ami_reading_t *rd)
{
    const mobj_t *items;
    uint32_t n;
    TRY (s_dec_list (o, 1, AMI_MAX_REGISTERS, &items, &n));
    for (uint32_t i = 0; i < n; i++)
        TRY (s_dec_register (&items [i], &rd->registers [i]));
    rd->register_count = n;
    return AMI_OK;
}

/* [end_s, import_wh, export_wh, status] */
static int
s_dec_interval (const mobj_t *o, ami_interval_t *iv)
{
    const mobj_t *f;
    TRY (s_dec_tuple (o, 4, &f));
    DEC_U (&f [0], UINT32_MAX, iv->end_s);
    DEC_U (&f [1], UINT64_MAX, iv->import_wh);
    DEC_U (&f [2], UINT64_MAX, iv->export_wh);
    DEC_U (&f [3], UINT16_MAX, iv->status);
    return AMI_OK;
}

/* ---- one function per message type; f = root elements, f[0..1] done --- */

static int
s_dec_hello (ami_hello_t *m, const mobj_t *f)
{
    const mobj_t *items;
    uint32_t n;
    TRY (s_dec_id (&f [2], m->role, 1, AMI_MAX_ROLE));
    TRY (s_dec_id (&f [3], m->node_id, 1, AMI_MAX_ID));
    TRY (s_dec_list (&f [4], 0, AMI_MAX_HELLO_METERS, &items, &n));
    for (uint32_t i = 0; i < n; i++)
        TRY (s_dec_id (&items [i], m->meters [i], 1, AMI_MAX_ID));
    m->meter_count = n;
    return AMI_OK;
}

/*  [[name, value]...], 0..AMI_MAX_STATS: HEALTH and API_STATUS rows. */
static int
s_dec_stats (const mobj_t *o, ami_stat_t *stats, uint32_t *count)
{
    const mobj_t *items, *s;
    uint32_t n;
    TRY (s_dec_list (o, 0, AMI_MAX_STATS, &items, &n));
    for (uint32_t i = 0; i < n; i++) {
        TRY (s_dec_tuple (&items [i], 2, &s));
        TRY (s_dec_id (&s [0], stats [i].name, 1, AMI_MAX_ID));
        DEC_U (&s [1], UINT64_MAX, stats [i].value);
    }
    *count = n;
    return AMI_OK;
}

static int
s_dec_health (ami_health_t *m, const mobj_t *f)
{
    TRY (s_dec_id (&f [2], m->role, 1, AMI_MAX_ROLE));
    TRY (s_dec_id (&f [3], m->node_id, 1, AMI_MAX_ID));
    TRY (s_dec_state (&f [4], &m->state));
    DEC_U (&f [5], UINT64_MAX, m->uptime_ms);
    return s_dec_stats (&f [6], m->stats, &m->stat_count);
}

static int
s_dec_event (ami_event_t *m, const mobj_t *f)
{
    DEC_U (&f [2], UINT64_MAX, m->seq);
    DEC_U (&f [3], UINT64_MAX, m->time_ms);
    DEC_U (&f [4], UINT16_MAX, m->kind);
    if (m->kind < 1 || m->kind > AMI_EV_MAX)
        return AMI_E_RANGE;
    TRY (s_dec_id (&f [5], m->meter_id, 0, AMI_MAX_ID));
    TRY (s_dec_id (&f [6], m->origin, 1, AMI_MAX_ID));
    TRY (s_dec_text (&f [7], m->text));
    return AMI_OK;
}

static int
s_dec_error (ami_error_t *m, const mobj_t *f)
{
    const mobj_t *o = &f [2];
    if (o->type != MSGPACK_OBJECT_BIN)
        return AMI_E_TYPE;
    if (o->via.bin.size == 0) {
        m->has_request_id = false;
        memset (m->request_id, 0, AMI_REQUEST_ID_SIZE);
    }
    else {
        TRY (s_dec_fixbin (o, m->request_id, AMI_REQUEST_ID_SIZE));
        m->has_request_id = true;
    }
    DEC_U (&f [3], UINT16_MAX, m->code);
    if (m->code == AMI_OK)
        return AMI_E_RANGE;         /* an ERROR always carries a failure */
    TRY (s_dec_id (&f [4], m->origin, 1, AMI_MAX_ID));
    TRY (s_dec_text (&f [5], m->text));
    return AMI_OK;
}

/*  The signature of READ_REQ/READ_RESP: bin(64), and encoded as bin8 at the
    very end of the frame, so the signed part is exactly data[0..size-66)
    and ami_msg_signature_slot() finds it. A bin16/bin32 encoding of the
    same 64 bytes is refused (TYPE): it would move the signed part. */
static int
s_dec_signature (const mobj_t *o, uint8_t *sig, const uint8_t *data, size_t size)
{
    TRY (s_dec_fixbin (o, sig, AMI_SIGNATURE_SIZE));
    /* Last field and no trailing bytes (pre-scan), so the body ends at
       size; the two bytes before it must be the bin8 header. */
    if ((const uint8_t *) o->via.bin.ptr != data + size - AMI_SIGNATURE_SIZE
    ||  data [size - AMI_SIGNATURE_FIELD] != 0xc4
    ||  data [size - AMI_SIGNATURE_FIELD + 1] != AMI_SIGNATURE_SIZE)
        return AMI_E_TYPE;
    return AMI_OK;
}

/*  SEC-INT-5: READ_REQ's load-profile range is both 0 (an ordinary read),
    or from < to spanning at most AMI_PROFILE_RECOVER_MAX_S. */
static bool
s_profile_range_ok (uint64_t from_s, uint64_t to_s)
{
    if (from_s == 0 && to_s == 0)
        return true;
    return from_s < to_s && to_s - from_s <= AMI_PROFILE_RECOVER_MAX_S;
}

static int
s_dec_read_req (ami_read_req_t *m, const mobj_t *f, const uint8_t *data, size_t size)
{
    TRY (s_dec_id (&f [2], m->meter_id, 1, AMI_MAX_ID));
    TRY (s_dec_fixbin (&f [3], m->request_id, AMI_REQUEST_ID_SIZE));
    DEC_U (&f [4], UINT64_MAX, m->counter);
    if (m->counter < 1)
        return AMI_E_RANGE;         /* 0 is "nothing seen yet" at the meter */
    DEC_U (&f [5], UINT64_MAX, m->issued_ms);
    DEC_U (&f [6], UINT64_MAX, m->expires_ms);
    if (m->expires_ms <= m->issued_ms)
        return AMI_E_RANGE;
    DEC_U (&f [7], UINT64_MAX, m->profile_from_s);
    DEC_U (&f [8], UINT64_MAX, m->profile_to_s);
    if (!s_profile_range_ok (m->profile_from_s, m->profile_to_s))
        return AMI_E_RANGE;
    TRY (s_dec_signature (&f [9], m->signature, data, size));
    return AMI_OK;
}

static int
s_dec_read_resp (ami_read_resp_t *m, const mobj_t *f, const uint8_t *data, size_t size)
{
    TRY (s_dec_id (&f [2], m->meter_id, 1, AMI_MAX_ID));
    TRY (s_dec_fixbin (&f [3], m->request_id, AMI_REQUEST_ID_SIZE));
    DEC_U (&f [4], UINT16_MAX, m->status);
    TRY (s_dec_varbin (&f [5], 0, AMI_MAX_SEALED, &m->sealed, &m->sealed_size));
    /* A success carries the sealed reading; a refusal carries nothing. */
    if (m->status == AMI_OK && m->sealed_size == 0)
        return AMI_E_LIMIT;
    if (m->status != AMI_OK && m->sealed_size != 0)
        return AMI_E_RANGE;
    TRY (s_dec_signature (&f [6], m->signature, data, size));
    return AMI_OK;
}

static int
s_dec_reading (ami_reading_t *m, const mobj_t *f)
{
    TRY (s_dec_id (&f [2], m->meter_id, 1, AMI_MAX_ID));
    TRY (s_dec_fixbin (&f [3], m->request_id, AMI_REQUEST_ID_SIZE));
    DEC_U (&f [4], UINT64_MAX, m->read_ms);
    DEC_U (&f [5], UINT32_MAX, m->quality);
    TRY (s_dec_registers (&f [6], m));
    return AMI_OK;
}

static int
s_dec_profile (ami_profile_t *m, const mobj_t *f)
{
    const mobj_t *items;
    uint32_t n;
    TRY (s_dec_id (&f [2], m->meter_id, 1, AMI_MAX_ID));
    DEC_U (&f [3], UINT64_MAX, m->seq);
    if (m->seq < 1)
        return AMI_E_RANGE;         /* seq is a block id: 0 is reserved */
    DEC_U (&f [4], UINT64_MAX, m->made_ms);
    TRY (s_dec_list (&f [5], 1, AMI_MAX_PROFILE_RECORDS, &items, &n));
    for (uint32_t i = 0; i < n; i++)
        TRY (s_dec_interval (&items [i], &m->records [i]));
    m->record_count = n;
    return AMI_OK;
}

static int
s_dec_batch (ami_batch_t *m, const mobj_t *f)
{
    const mobj_t *items, *b;
    uint32_t n;
    DEC_U (&f [2], UINT64_MAX, m->batch_id);
    TRY (s_dec_id (&f [3], m->origin, 1, AMI_MAX_ID));
    TRY (s_dec_list (&f [4], 1, AMI_MAX_BATCH_BLOCKS, &items, &n));
    for (uint32_t i = 0; i < n; i++) {
        ami_block_t *blk = &m->blocks [i];
        TRY (s_dec_tuple (&items [i], 3, &b));
        TRY (s_dec_id (&b [0], blk->meter_id, 1, AMI_MAX_ID));
        DEC_U (&b [1], UINT64_MAX, blk->seq);
        if (blk->seq < 1)
            return AMI_E_RANGE;
        TRY (s_dec_varbin (&b [2], 1, AMI_MAX_SEALED, &blk->box, &blk->box_size));
    }
    m->block_count = n;
    return AMI_OK;
}

static int
s_dec_batch_ack (ami_batch_ack_t *m, const mobj_t *f)
{
    DEC_U (&f [2], UINT64_MAX, m->batch_id);
    DEC_U (&f [3], UINT16_MAX, m->status);
    DEC_U (&f [4], UINT32_MAX, m->credit);
    return AMI_OK;
}

static int
s_dec_api_req (ami_api_req_t *m, const mobj_t *f)
{
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_action (&f [3], &m->action));
    TRY (s_dec_id (&f [4], m->meter_id, 0, AMI_MAX_ID));
    DEC_U (&f [5], UINT64_MAX, m->from_ms);
    DEC_U (&f [6], UINT64_MAX, m->to_ms);
    DEC_U (&f [7], UINT32_MAX, m->limit);
    DEC_U (&f [8], UINT32_MAX, m->timeout_ms);
    return AMI_OK;
}

static int
s_dec_api_readings (ami_api_readings_t *m, const mobj_t *f)
{
    const mobj_t *items, *r;
    uint32_t n;
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_bool (&f [3], &m->more));
    TRY (s_dec_list (&f [4], 0, AMI_MAX_API_READINGS, &items, &n));
    for (uint32_t i = 0; i < n; i++) {
        ami_stored_reading_t *sr = &m->readings [i];
        TRY (s_dec_tuple (&items [i], 7, &r));
        TRY (s_dec_id (&r [0], sr->reading.meter_id, 1, AMI_MAX_ID));
        TRY (s_dec_fixbin (&r [1], sr->reading.request_id, AMI_REQUEST_ID_SIZE));
        DEC_U (&r [2], UINT64_MAX, sr->requested_ms);
        DEC_U (&r [3], UINT64_MAX, sr->reading.read_ms);
        DEC_U (&r [4], UINT64_MAX, sr->stored_ms);
        DEC_U (&r [5], UINT32_MAX, sr->reading.quality);
        TRY (s_dec_registers (&r [6], &sr->reading));
    }
    m->count = n;
    return AMI_OK;
}

static int
s_dec_api_meters (ami_api_meters_t *m, const mobj_t *f)
{
    const mobj_t *items, *r;
    uint32_t n;
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_bool (&f [3], &m->more));
    TRY (s_dec_list (&f [4], 0, AMI_MAX_API_METERS, &items, &n));
    for (uint32_t i = 0; i < n; i++) {
        ami_meter_row_t *row = &m->meters [i];
        TRY (s_dec_tuple (&items [i], 4, &r));
        TRY (s_dec_id (&r [0], row->meter_id, 1, AMI_MAX_ID));
        TRY (s_dec_id (&r [1], row->aggregator_id, 1, AMI_MAX_ID));
        DEC_U (&r [2], UINT64_MAX, row->last_read_ms);
        TRY (s_dec_state (&r [3], &row->state));
    }
    m->count = n;
    return AMI_OK;
}

static int
s_dec_api_status (ami_api_status_t *m, const mobj_t *f)
{
    const mobj_t *items, *r;
    uint32_t n;
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_bool (&f [3], &m->more));
    TRY (s_dec_list (&f [4], 0, AMI_MAX_API_SERVICES, &items, &n));
    for (uint32_t i = 0; i < n; i++) {
        ami_service_row_t *row = &m->services [i];
        TRY (s_dec_tuple (&items [i], 6, &r));
        TRY (s_dec_id (&r [0], row->role, 1, AMI_MAX_ROLE));
        TRY (s_dec_id (&r [1], row->node_id, 1, AMI_MAX_ID));
        TRY (s_dec_state (&r [2], &row->state));
        DEC_U (&r [3], UINT64_MAX, row->uptime_ms);
        DEC_U (&r [4], UINT64_MAX, row->age_ms);
        TRY (s_dec_stats (&r [5], row->stats, &row->stat_count));
    }
    m->count = n;
    return AMI_OK;
}

static int
s_dec_api_intervals (ami_api_intervals_t *m, const mobj_t *f)
{
    const mobj_t *items;
    uint32_t n;
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_id (&f [3], m->meter_id, 1, AMI_MAX_ID));
    TRY (s_dec_bool (&f [4], &m->more));
    TRY (s_dec_list (&f [5], 0, AMI_MAX_API_INTERVALS, &items, &n));
    for (uint32_t i = 0; i < n; i++)
        TRY (s_dec_interval (&items [i], &m->records [i]));
    m->count = n;
    return AMI_OK;
}

static int
s_dec_api_audit (ami_api_audit_t *m, const mobj_t *f)
{
    const mobj_t *items, *r;
    uint32_t n;
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_bool (&f [3], &m->more));
    TRY (s_dec_list (&f [4], 0, AMI_MAX_API_AUDIT, &items, &n));
    for (uint32_t i = 0; i < n; i++) {
        ami_audit_row_t *row = &m->entries [i];
        TRY (s_dec_tuple (&items [i], 9, &r));
        DEC_U (&r [0], UINT64_MAX, row->seq);
        if (row->seq < 1)
            return AMI_E_RANGE;     /* the chain starts at 1 */
        DEC_U (&r [1], UINT64_MAX, row->time_ms);
        TRY (s_dec_id (&r [2], row->operator_id, 1, AMI_MAX_ID));
        TRY (s_dec_id (&r [3], row->role, 1, AMI_MAX_ROLE));
        TRY (s_dec_action (&r [4], &row->action));
        TRY (s_dec_id (&r [5], row->meter_id, 0, AMI_MAX_ID));
        TRY (s_dec_fixbin (&r [6], row->corr, AMI_REQUEST_ID_SIZE));
        DEC_U (&r [7], UINT16_MAX, row->result);
        TRY (s_dec_fixbin (&r [8], row->hash, AMI_HASH_SIZE));
    }
    m->count = n;
    return AMI_OK;
}

static int
s_dec_api_customer (ami_api_customer_t *m, const mobj_t *f)
{
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    TRY (s_dec_id (&f [3], m->meter_id, 1, AMI_MAX_ID));
    TRY (s_dec_utf8 (&f [4], m->name, 1, AMI_MAX_CUSTOMER_NAME));
    TRY (s_dec_text (&f [5], m->address));
    TRY (s_dec_id (&f [6], m->account, 1, AMI_MAX_ID));
    return AMI_OK;
}

static int
s_dec_api_verify (ami_api_verify_t *m, const mobj_t *f)
{
    const mobj_t *items, *r;
    uint32_t n;
    TRY (s_dec_fixbin (&f [2], m->corr, AMI_REQUEST_ID_SIZE));
    DEC_U (&f [3], UINT64_MAX, m->checked);
    DEC_U (&f [4], UINT64_MAX, m->failed);
    TRY (s_dec_list (&f [5], 0, AMI_MAX_API_FAILURES, &items, &n));
    if (m->failed < n)
        return AMI_E_RANGE;         /* the list holds the first `failed` */
    for (uint32_t i = 0; i < n; i++) {
        ami_failure_t *fl = &m->failures [i];
        TRY (s_dec_tuple (&items [i], 2, &r));
        DEC_U (&r [0], UINT64_MAX, fl->ref);
        DEC_U (&r [1], UINT16_MAX, fl->code);
        if (fl->code == AMI_OK)
            return AMI_E_RANGE;     /* a failure always says why */
    }
    m->count = n;
    return AMI_OK;
}

static int
s_dec_root (ami_msg_t *self, const mobj_t *root, const uint8_t *data, size_t size)
{
    if (root->type != MSGPACK_OBJECT_ARRAY)
        return AMI_E_TYPE;
    const mobj_t *f = root->via.array.ptr;
    uint32_t n = root->via.array.size;
    uint64_t version, type;
    if (n < 1)
        return AMI_E_ARITY;
    TRY (s_dec_uint (&f [0], UINT64_MAX, &version));
    if (version != AMI_PROTO_VERSION)
        return AMI_E_VERSION;
    if (n < 2)
        return AMI_E_ARITY;
    TRY (s_dec_uint (&f [1], UINT64_MAX, &type));
    const s_type_info_t *info = s_type_info (type);
    if (!info)
        return AMI_E_MSGTYPE;
    if (n != info->arity)
        return AMI_E_ARITY;

    int rc;
    switch (info->type) {
        case AMI_MSG_HELLO:         rc = s_dec_hello (&self->hello, f); break;
        case AMI_MSG_HEALTH:        rc = s_dec_health (&self->health, f); break;
        case AMI_MSG_EVENT:         rc = s_dec_event (&self->event, f); break;
        case AMI_MSG_ERROR:         rc = s_dec_error (&self->error, f); break;
        case AMI_MSG_READ_REQ:      rc = s_dec_read_req (&self->read_req, f, data, size); break;
        case AMI_MSG_READ_RESP:     rc = s_dec_read_resp (&self->read_resp, f, data, size); break;
        case AMI_MSG_READING:       rc = s_dec_reading (&self->reading, f); break;
        case AMI_MSG_PROFILE:       rc = s_dec_profile (&self->profile, f); break;
        case AMI_MSG_BATCH:         rc = s_dec_batch (&self->batch, f); break;
        case AMI_MSG_BATCH_ACK:     rc = s_dec_batch_ack (&self->batch_ack, f); break;
        case AMI_MSG_API_REQ:       rc = s_dec_api_req (&self->api_req, f); break;
        case AMI_MSG_API_READINGS:  rc = s_dec_api_readings (&self->api_readings, f); break;
        case AMI_MSG_API_METERS:    rc = s_dec_api_meters (&self->api_meters, f); break;
        case AMI_MSG_API_STATUS:    rc = s_dec_api_status (&self->api_status, f); break;
        case AMI_MSG_API_INTERVALS: rc = s_dec_api_intervals (&self->api_intervals, f); break;
        case AMI_MSG_API_AUDIT:     rc = s_dec_api_audit (&self->api_audit, f); break;
        case AMI_MSG_API_CUSTOMER:  rc = s_dec_api_customer (&self->api_customer, f); break;
        case AMI_MSG_API_VERIFY:    rc = s_dec_api_verify (&self->api_verify, f); break;
        default:                    rc = AMI_E_MSGTYPE; break;  /* not reached */
    }
    if (rc == AMI_OK)
        self->type = info->type;    /* only a fully valid message gets a type */
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  Encoder                                                                */

typedef struct {
    uint8_t *buf;
    size_t cap;             /* min (caller's cap, AMI_MAX_FRAME) */
    size_t len;
    bool full;              /* sticky: once a write failed, all fail */
} s_writer_t;

typedef struct {
    msgpack_packer pk;
    s_writer_t w;
} s_enc_t;

/*  msgpack_packer write callback: append or fail, never overrun. */
static int
s_write (void *data, const char *buf, size_t len)
{
    s_writer_t *w = (s_writer_t *) data;
    if (w->full || len > w->cap - w->len) {
        w->full = true;
        return -1;
    }
    if (len) {
        memcpy (w->buf + w->len, buf, len);
        w->len += len;
    }
    return 0;
}

/*  Pack calls: a failure can only mean "buffer full", which s_write has
    recorded in w.full; validation goes on so that an invalid message is
    reported as such whatever the buffer size. */
#define PK(e, call) do { if (call) (e)->w.full = true; } while (0)

static void
s_enc_uint (s_enc_t *e, uint64_t v)
{
    PK (e, msgpack_pack_uint64 (&e->pk, v));
}

static void
s_enc_int (s_enc_t *e, int64_t v)
{
    PK (e, msgpack_pack_int64 (&e->pk, v));
}

static void
s_enc_bool (s_enc_t *e, bool v)
{
    PK (e, v ? msgpack_pack_true (&e->pk) : msgpack_pack_false (&e->pk));
}

static void
s_enc_array (s_enc_t *e, uint32_t n)
{
    PK (e, msgpack_pack_array (&e->pk, n));
}

static void
s_enc_bin (s_enc_t *e, const void *p, size_t n)
{
    PK (e, msgpack_pack_bin (&e->pk, n));
    if (n)
        PK (e, msgpack_pack_bin_body (&e->pk, p, n));
}

static void
s_enc_str (s_enc_t *e, const char *s, size_t n)
{
    PK (e, msgpack_pack_str (&e->pk, n));
    if (n)
        PK (e, msgpack_pack_str_body (&e->pk, s, n));
}

/*  id string held in char[max+1]: strnlen never reads past the array. */
static int
s_enc_id (s_enc_t *e, const char *s, size_t min, size_t max)
{
    size_t n = strnlen (s, max + 1);
    if (n < min || n > max)
        return AMI_E_LIMIT;
    if (!s_id_chars (s, n))
        return AMI_E_RANGE;
    s_enc_str (e, s, n);
    return AMI_OK;
}

static int
s_enc_text (s_enc_t *e, const char *s)
{
    size_t n = strnlen (s, AMI_MAX_TEXT + 1);
    if (n > AMI_MAX_TEXT)
        return AMI_E_LIMIT;
    if (!s_utf8_valid (s, n))
        return AMI_E_RANGE;
    s_enc_str (e, s, n);
    return AMI_OK;
}

/*  UTF-8 text of min..max bytes held in char[max+1] (the customer name). */
static int
s_enc_utf8 (s_enc_t *e, const char *s, size_t min, size_t max)
{
    size_t n = strnlen (s, max + 1);
    if (n < min || n > max)
        return AMI_E_LIMIT;
    if (!s_utf8_valid (s, n))
        return AMI_E_RANGE;
    s_enc_str (e, s, n);
    return AMI_OK;
}

static int
s_enc_varbin (s_enc_t *e, const uint8_t *p, size_t n, size_t min, size_t max)
{
    if (n < min || n > max)
        return AMI_E_LIMIT;
    if (n && !p)
        return AMI_E_RANGE;
    s_enc_bin (e, p, n);
    return AMI_OK;
}

static int
s_enc_list (s_enc_t *e, uint32_t n, uint32_t min, uint32_t max)
{
    if (n < min || n > max)
        return AMI_E_LIMIT;
    s_enc_array (e, n);
    return AMI_OK;
}

static int
s_enc_state (s_enc_t *e, uint8_t state)
{
    if (state > AMI_STATE_MAX)
        return AMI_E_RANGE;
    s_enc_uint (e, state);
    return AMI_OK;
}

static int
s_enc_action (s_enc_t *e, uint8_t action)
{
    if (action < 1 || action > AMI_ACT_MAX)
        return AMI_E_RANGE;
    s_enc_uint (e, action);
    return AMI_OK;
}

static int
s_enc_registers (s_enc_t *e, const ami_reading_t *rd)
{
    TRY (s_enc_list (e, rd->register_count, 1, AMI_MAX_REGISTERS));
    for (uint32_t i = 0; i < rd->register_count; i++) {
        const ami_register_t *r = &rd->registers [i];
        s_enc_array (e, 5);
        s_enc_bin (e, r->obis, AMI_OBIS_SIZE);
        s_enc_int (e, r->value);
        if (r->scaler < -9 || r->scaler > 9)
            return AMI_E_RANGE;
        s_enc_int (e, r->scaler);
        s_enc_uint (e, r->unit);
        s_enc_uint (e, r->quality);
    }
    return AMI_OK;
}

static void
s_enc_interval (s_enc_t *e, const ami_interval_t *iv)
{
    s_enc_array (e, 4);
    s_enc_uint (e, iv->end_s);
    s_enc_uint (e, iv->import_wh);
    s_enc_uint (e, iv->export_wh);
    s_enc_uint (e, iv->status);
}

static int
s_enc_hello (s_enc_t *e, const ami_hello_t *m)
{
    TRY (s_enc_id (e, m->role, 1, AMI_MAX_ROLE));
    TRY (s_enc_id (e, m->node_id, 1, AMI_MAX_ID));
    TRY (s_enc_list (e, m->meter_count, 0, AMI_MAX_HELLO_METERS));
    for (uint32_t i = 0; i < m->meter_count; i++)
        TRY (s_enc_id (e, m->meters [i], 1, AMI_MAX_ID));
    return AMI_OK;
}

static int
s_enc_stats (s_enc_t *e, const ami_stat_t *stats, uint32_t count)
{
    TRY (s_enc_list (e, count, 0, AMI_MAX_STATS));
    for (uint32_t i = 0; i < count; i++) {
        s_enc_array (e, 2);
        TRY (s_enc_id (e, stats [i].name, 1, AMI_MAX_ID));
        s_enc_uint (e, stats [i].value);
    }
    return AMI_OK;
}

static int
s_enc_health (s_enc_t *e, const ami_health_t *m)
{
    TRY (s_enc_id (e, m->role, 1, AMI_MAX_ROLE));
    TRY (s_enc_id (e, m->node_id, 1, AMI_MAX_ID));
    TRY (s_enc_state (e, m->state));
    s_enc_uint (e, m->uptime_ms);
    return s_enc_stats (e, m->stats, m->stat_count);
}

static int
s_enc_event (s_enc_t *e, const ami_event_t *m)
{
    s_enc_uint (e, m->seq);
    s_enc_uint (e, m->time_ms);
    if (m->kind < 1 || m->kind > AMI_EV_MAX)
        return AMI_E_RANGE;
    s_enc_uint (e, m->kind);
    TRY (s_enc_id (e, m->meter_id, 0, AMI_MAX_ID));
    TRY (s_enc_id (e, m->origin, 1, AMI_MAX_ID));
    TRY (s_enc_text (e, m->text));
    return AMI_OK;
}

static int
s_enc_error (s_enc_t *e, const ami_error_t *m)
{
    s_enc_bin (e, m->request_id, m->has_request_id ? AMI_REQUEST_ID_SIZE : 0);
    if (m->code == AMI_OK)
        return AMI_E_RANGE;
    s_enc_uint (e, m->code);
    TRY (s_enc_id (e, m->origin, 1, AMI_MAX_ID));
    TRY (s_enc_text (e, m->text));
    return AMI_OK;
}

static int
s_enc_read_req (s_enc_t *e, const ami_read_req_t *m)
{
    TRY (s_enc_id (e, m->meter_id, 1, AMI_MAX_ID));
    s_enc_bin (e, m->request_id, AMI_REQUEST_ID_SIZE);
    if (m->counter < 1)
        return AMI_E_RANGE;
    s_enc_uint (e, m->counter);
    s_enc_uint (e, m->issued_ms);
    if (m->expires_ms <= m->issued_ms)
        return AMI_E_RANGE;
    s_enc_uint (e, m->expires_ms);
    if (!s_profile_range_ok (m->profile_from_s, m->profile_to_s))
        return AMI_E_RANGE;
    s_enc_uint (e, m->profile_from_s);
    s_enc_uint (e, m->profile_to_s);
    s_enc_bin (e, m->signature, AMI_SIGNATURE_SIZE);    /* c4 40 + 64 bytes */
    return AMI_OK;
}

static int
s_enc_read_resp (s_enc_t *e, const ami_read_resp_t *m)
{
    TRY (s_enc_id (e, m->meter_id, 1, AMI_MAX_ID));
    s_enc_bin (e, m->request_id, AMI_REQUEST_ID_SIZE);
    s_enc_uint (e, m->status);
    TRY (s_enc_varbin (e, m->sealed, m->sealed_size, 0, AMI_MAX_SEALED));
    if (m->status == AMI_OK && m->sealed_size == 0)
        return AMI_E_LIMIT;
    if (m->status != AMI_OK && m->sealed_size != 0)
        return AMI_E_RANGE;
    s_enc_bin (e, m->signature, AMI_SIGNATURE_SIZE);
    return AMI_OK;
}

static int
s_enc_reading (s_enc_t *e, const ami_reading_t *m)
{
    TRY (s_enc_id (e, m->meter_id, 1, AMI_MAX_ID));
    s_enc_bin (e, m->request_id, AMI_REQUEST_ID_SIZE);
    s_enc_uint (e, m->read_ms);
    s_enc_uint (e, m->quality);
    TRY (s_enc_registers (e, m));
    return AMI_OK;
}

static int
s_enc_profile (s_enc_t *e, const ami_profile_t *m)
{
    TRY (s_enc_id (e, m->meter_id, 1, AMI_MAX_ID));
    if (m->seq < 1)
        return AMI_E_RANGE;
    s_enc_uint (e, m->seq);
    s_enc_uint (e, m->made_ms);
    TRY (s_enc_list (e, m->record_count, 1, AMI_MAX_PROFILE_RECORDS));
    for (uint32_t i = 0; i < m->record_count; i++)
        s_enc_interval (e, &m->records [i]);
    return AMI_OK;
}

static int
s_enc_batch (s_enc_t *e, const ami_batch_t *m)
{
    s_enc_uint (e, m->batch_id);
    TRY (s_enc_id (e, m->origin, 1, AMI_MAX_ID));
    TRY (s_enc_list (e, m->block_count, 1, AMI_MAX_BATCH_BLOCKS));
    for (uint32_t i = 0; i < m->block_count; i++) {
        const ami_block_t *b = &m->blocks [i];
        s_enc_array (e, 3);
        TRY (s_enc_id (e, b->meter_id, 1, AMI_MAX_ID));
        if (b->seq < 1)
            return AMI_E_RANGE;
        s_enc_uint (e, b->seq);
        TRY (s_enc_varbin (e, b->box, b->box_size, 1, AMI_MAX_SEALED));
    }
    return AMI_OK;
}

static int
s_enc_batch_ack (s_enc_t *e, const ami_batch_ack_t *m)
{
    s_enc_uint (e, m->batch_id);
    s_enc_uint (e, m->status);
    s_enc_uint (e, m->credit);
    return AMI_OK;
}

static int
s_enc_api_req (s_enc_t *e, const ami_api_req_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    TRY (s_enc_action (e, m->action));
    TRY (s_enc_id (e, m->meter_id, 0, AMI_MAX_ID));
    s_enc_uint (e, m->from_ms);
    s_enc_uint (e, m->to_ms);
    s_enc_uint (e, m->limit);
    s_enc_uint (e, m->timeout_ms);
    return AMI_OK;
}

static int
s_enc_api_readings (s_enc_t *e, const ami_api_readings_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    s_enc_bool (e, m->more);
    TRY (s_enc_list (e, m->count, 0, AMI_MAX_API_READINGS));
    for (uint32_t i = 0; i < m->count; i++) {
        const ami_stored_reading_t *sr = &m->readings [i];
        s_enc_array (e, 7);
        TRY (s_enc_id (e, sr->reading.meter_id, 1, AMI_MAX_ID));
        s_enc_bin (e, sr->reading.request_id, AMI_REQUEST_ID_SIZE);
        s_enc_uint (e, sr->requested_ms);
        s_enc_uint (e, sr->reading.read_ms);
        s_enc_uint (e, sr->stored_ms);
        s_enc_uint (e, sr->reading.quality);
        TRY (s_enc_registers (e, &sr->reading));
    }
    return AMI_OK;
}

static int
s_enc_api_meters (s_enc_t *e, const ami_api_meters_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    s_enc_bool (e, m->more);
    TRY (s_enc_list (e, m->count, 0, AMI_MAX_API_METERS));
    for (uint32_t i = 0; i < m->count; i++) {
        const ami_meter_row_t *row = &m->meters [i];
        s_enc_array (e, 4);
        TRY (s_enc_id (e, row->meter_id, 1, AMI_MAX_ID));
        TRY (s_enc_id (e, row->aggregator_id, 1, AMI_MAX_ID));
        s_enc_uint (e, row->last_read_ms);
        TRY (s_enc_state (e, row->state));
    }
    return AMI_OK;
}

static int
s_enc_api_status (s_enc_t *e, const ami_api_status_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    s_enc_bool (e, m->more);
    TRY (s_enc_list (e, m->count, 0, AMI_MAX_API_SERVICES));
    for (uint32_t i = 0; i < m->count; i++) {
        const ami_service_row_t *row = &m->services [i];
        s_enc_array (e, 6);
        TRY (s_enc_id (e, row->role, 1, AMI_MAX_ROLE));
        TRY (s_enc_id (e, row->node_id, 1, AMI_MAX_ID));
        TRY (s_enc_state (e, row->state));
        s_enc_uint (e, row->uptime_ms);
        s_enc_uint (e, row->age_ms);
        TRY (s_enc_stats (e, row->stats, row->stat_count));
    }
    return AMI_OK;
}

static int
s_enc_api_intervals (s_enc_t *e, const ami_api_intervals_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    TRY (s_enc_id (e, m->meter_id, 1, AMI_MAX_ID));
    s_enc_bool (e, m->more);
    TRY (s_enc_list (e, m->count, 0, AMI_MAX_API_INTERVALS));
    for (uint32_t i = 0; i < m->count; i++)
        s_enc_interval (e, &m->records [i]);
    return AMI_OK;
}

static int
s_enc_api_audit (s_enc_t *e, const ami_api_audit_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    s_enc_bool (e, m->more);
    TRY (s_enc_list (e, m->count, 0, AMI_MAX_API_AUDIT));
    for (uint32_t i = 0; i < m->count; i++) {
        const ami_audit_row_t *row = &m->entries [i];
        s_enc_array (e, 9);
        if (row->seq < 1)
            return AMI_E_RANGE;
        s_enc_uint (e, row->seq);
        s_enc_uint (e, row->time_ms);
        TRY (s_enc_id (e, row->operator_id, 1, AMI_MAX_ID));
        TRY (s_enc_id (e, row->role, 1, AMI_MAX_ROLE));
        TRY (s_enc_action (e, row->action));
        TRY (s_enc_id (e, row->meter_id, 0, AMI_MAX_ID));
        s_enc_bin (e, row->corr, AMI_REQUEST_ID_SIZE);
        s_enc_uint (e, row->result);
        s_enc_bin (e, row->hash, AMI_HASH_SIZE);
    }
    return AMI_OK;
}

static int
s_enc_api_customer (s_enc_t *e, const ami_api_customer_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    TRY (s_enc_id (e, m->meter_id, 1, AMI_MAX_ID));
    TRY (s_enc_utf8 (e, m->name, 1, AMI_MAX_CUSTOMER_NAME));
    TRY (s_enc_text (e, m->address));
    TRY (s_enc_id (e, m->account, 1, AMI_MAX_ID));
    return AMI_OK;
}

static int
s_enc_api_verify (s_enc_t *e, const ami_api_verify_t *m)
{
    s_enc_bin (e, m->corr, AMI_REQUEST_ID_SIZE);
    s_enc_uint (e, m->checked);
    s_enc_uint (e, m->failed);
    TRY (s_enc_list (e, m->count, 0, AMI_MAX_API_FAILURES));
    if (m->failed < m->count)
        return AMI_E_RANGE;
    for (uint32_t i = 0; i < m->count; i++) {
        const ami_failure_t *fl = &m->failures [i];
        s_enc_array (e, 2);
        s_enc_uint (e, fl->ref);
        if (fl->code == AMI_OK)
            return AMI_E_RANGE;
        s_enc_uint (e, fl->code);
    }
    return AMI_OK;
}

static int
s_enc_body (s_enc_t *e, const ami_msg_t *self)
{
    switch (self->type) {
        case AMI_MSG_HELLO:         return s_enc_hello (e, &self->hello);
        case AMI_MSG_HEALTH:        return s_enc_health (e, &self->health);
        case AMI_MSG_EVENT:         return s_enc_event (e, &self->event);
        case AMI_MSG_ERROR:         return s_enc_error (e, &self->error);
        case AMI_MSG_READ_REQ:      return s_enc_read_req (e, &self->read_req);
        case AMI_MSG_READ_RESP:     return s_enc_read_resp (e, &self->read_resp);
        case AMI_MSG_READING:       return s_enc_reading (e, &self->reading);
        case AMI_MSG_PROFILE:       return s_enc_profile (e, &self->profile);
        case AMI_MSG_BATCH:         return s_enc_batch (e, &self->batch);
        case AMI_MSG_BATCH_ACK:     return s_enc_batch_ack (e, &self->batch_ack);
        case AMI_MSG_API_REQ:       return s_enc_api_req (e, &self->api_req);
        case AMI_MSG_API_READINGS:  return s_enc_api_readings (e, &self->api_readings);
        case AMI_MSG_API_METERS:    return s_enc_api_meters (e, &self->api_meters);
        case AMI_MSG_API_STATUS:    return s_enc_api_status (e, &self->api_status);
        case AMI_MSG_API_INTERVALS: return s_enc_api_intervals (e, &self->api_intervals);
        case AMI_MSG_API_AUDIT:     return s_enc_api_audit (e, &self->api_audit);
        case AMI_MSG_API_CUSTOMER:  return s_enc_api_customer (e, &self->api_customer);
        case AMI_MSG_API_VERIFY:    return s_enc_api_verify (e, &self->api_verify);
        default:                    return AMI_E_MSGTYPE;
    }
}

/* ---------------------------------------------------------------------- */
/*  Public API                                                             */

ami_msg_t *
ami_msg_new (void)
{
    ami_msg_t *self = (ami_msg_t *) calloc (1, sizeof (ami_msg_t));
    s_priv_t *priv = (s_priv_t *) calloc (1, sizeof (s_priv_t));
    if (!self || !priv || !msgpack_zone_init (&priv->zone, AMI_MSG_ZONE_CHUNK)) {
        free (priv);
        free (self);
        return NULL;
    }
    self->priv = priv;
    return self;
}

void
ami_msg_destroy (ami_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ami_msg_t *self = *self_p;
    s_priv_t *priv = (s_priv_t *) self->priv;
    if (priv) {
        msgpack_zone_destroy (&priv->zone);
        free (priv);
    }
    free (self);
    *self_p = NULL;
}

void
ami_msg_reset (ami_msg_t *self, ami_msg_type_t type)
{
    assert (self);
    switch (type) {
        case AMI_MSG_HELLO:     memset (&self->hello, 0, sizeof self->hello); break;
        case AMI_MSG_HEALTH:    memset (&self->health, 0, sizeof self->health); break;
        case AMI_MSG_EVENT:     memset (&self->event, 0, sizeof self->event); break;
        case AMI_MSG_ERROR:     memset (&self->error, 0, sizeof self->error); break;
        case AMI_MSG_READ_REQ:  memset (&self->read_req, 0, sizeof self->read_req); break;
        case AMI_MSG_READ_RESP: memset (&self->read_resp, 0, sizeof self->read_resp); break;
        case AMI_MSG_READING:   memset (&self->reading, 0, sizeof self->reading); break;
        case AMI_MSG_PROFILE:   memset (&self->profile, 0, sizeof self->profile); break;
        case AMI_MSG_BATCH:     memset (&self->batch, 0, sizeof self->batch); break;
        case AMI_MSG_BATCH_ACK: memset (&self->batch_ack, 0, sizeof self->batch_ack); break;
        case AMI_MSG_API_REQ:   memset (&self->api_req, 0, sizeof self->api_req); break;
        /* The API replies are 20-200 KiB of inline rows: clear the header
           and the count; rows past `count` are never read or encoded. */
        case AMI_MSG_API_READINGS:
            memset (self->api_readings.corr, 0, AMI_REQUEST_ID_SIZE);
            self->api_readings.more = false;
            self->api_readings.count = 0;
            break;
        case AMI_MSG_API_METERS:
            memset (self->api_meters.corr, 0, AMI_REQUEST_ID_SIZE);
            self->api_meters.more = false;
            self->api_meters.count = 0;
            break;
        case AMI_MSG_API_STATUS:
            memset (self->api_status.corr, 0, AMI_REQUEST_ID_SIZE);
            self->api_status.more = false;
            self->api_status.count = 0;
            break;
        case AMI_MSG_API_INTERVALS:
            memset (self->api_intervals.corr, 0, AMI_REQUEST_ID_SIZE);
            memset (self->api_intervals.meter_id, 0, sizeof self->api_intervals.meter_id);
            self->api_intervals.more = false;
            self->api_intervals.count = 0;
            break;
        case AMI_MSG_API_AUDIT:
            memset (self->api_audit.corr, 0, AMI_REQUEST_ID_SIZE);
            self->api_audit.more = false;
            self->api_audit.count = 0;
            break;
        case AMI_MSG_API_CUSTOMER:
            memset (&self->api_customer, 0, sizeof self->api_customer);
            break;
        case AMI_MSG_API_VERIFY:
            memset (self->api_verify.corr, 0, AMI_REQUEST_ID_SIZE);
            self->api_verify.checked = 0;
            self->api_verify.failed = 0;
            self->api_verify.count = 0;
            break;
        default:
            break;      /* unknown type: encode will refuse it (MSGTYPE) */
    }
    self->type = (uint8_t) type;
}

int
ami_msg_decode (ami_msg_t *self, const void *data, size_t size)
{
    assert (self && self->priv);
    assert (data || size == 0);
    self->type = 0;
    if (size > AMI_MAX_FRAME)
        return AMI_E_LIMIT;
    if (size == 0)
        return AMI_E_TRUNCATED;

    const uint8_t *p = (const uint8_t *) data;
    TRY (s_prescan (p, size));

    s_priv_t *priv = (s_priv_t *) self->priv;
    msgpack_object root;
    size_t off = 0;
    int rc;
    switch (msgpack_unpack ((const char *) p, size, &off, &priv->zone, &root)) {
        case MSGPACK_UNPACK_SUCCESS:
            rc = s_dec_root (self, &root, p, size);
            break;
        /* The pre-scan has proved the frame complete, well-formed and
           exactly one object, so these can only be an allocation failure
           (msgpack-c reports its callbacks' NULL as a parse error) or a
           disagreement between the two parsers, which we refuse. */
        case MSGPACK_UNPACK_PARSE_ERROR:
        case MSGPACK_UNPACK_NOMEM_ERROR:
            rc = AMI_E_NOMEM;
            break;
        case MSGPACK_UNPACK_EXTRA_BYTES:
            rc = AMI_E_TRAILING;
            break;
        default:
            rc = AMI_E_TRUNCATED;
            break;
    }
    /* Drop the object tree now: a hostile 1 MiB frame may have grown the
       zone to 24 MiB, which must not stay allocated until the next frame. */
    msgpack_zone_clear (&priv->zone);
    return rc;
}

int
ami_msg_encode (const ami_msg_t *self, void *buf, size_t cap, size_t *len)
{
    assert (self && len);
    s_enc_t e;
    e.w.buf = (uint8_t *) buf;
    e.w.cap = buf ? (cap < AMI_MAX_FRAME ? cap : AMI_MAX_FRAME) : 0;
    e.w.len = 0;
    e.w.full = false;
    msgpack_packer_init (&e.pk, &e.w, s_write);

    const s_type_info_t *info = s_type_info (self->type);
    if (!info)
        return AMI_E_MSGTYPE;
    s_enc_array (&e, info->arity);
    s_enc_uint (&e, AMI_PROTO_VERSION);
    s_enc_uint (&e, info->type);
    TRY (s_enc_body (&e, self));
    if (e.w.full)
        return AMI_E_BUFSIZE;
    *len = e.w.len;
    return AMI_OK;
}

/*  Read one msgpack integer at *pos that is >= 0, in any encoding. */
static bool
s_peek_uint (const uint8_t *p, size_t size, size_t *pos, uint64_t *out)
{
    if (*pos >= size)
        return false;
    uint8_t b = p [(*pos)++];
    if (b <= 0x7f) {
        *out = b;
        return true;
    }
    size_t n;
    bool is_signed = false;
    switch (b) {
        case 0xcc: n = 1; break;
        case 0xcd: n = 2; break;
        case 0xce: n = 4; break;
        case 0xcf: n = 8; break;
        case 0xd0: n = 1; is_signed = true; break;
        case 0xd1: n = 2; is_signed = true; break;
        case 0xd2: n = 4; is_signed = true; break;
        case 0xd3: n = 8; is_signed = true; break;
        default: return false;
    }
    if (size - *pos < n)
        return false;
    if (is_signed && (p [*pos] & 0x80))
        return false;           /* negative */
    *out = s_be (p + *pos, n);
    *pos += n;
    return true;
}

int
ami_msg_peek_type (const void *data, size_t size)
{
    const uint8_t *p = (const uint8_t *) data;
    if (!p || size < 3)
        return 0;               /* smallest start: 0x9N, version, type */
    size_t pos = 1;
    uint64_t count, version, type;
    if (p [0] >= 0x90 && p [0] <= 0x9f)
        count = p [0] & 0x0f;
    else
    if (p [0] == 0xdc) {
        count = s_be (p + 1, 2);
        pos = 3;
    }
    else
    if (p [0] == 0xdd && size >= 5) {   /* 4 count bytes must be there */
        count = s_be (p + 1, 4);
        pos = 5;
    }
    else
        return 0;
    if (count < 2
    ||  !s_peek_uint (p, size, &pos, &version) || version != AMI_PROTO_VERSION
    ||  !s_peek_uint (p, size, &pos, &type) || !s_type_info (type))
        return 0;
    return (int) type;
}

const uint8_t *
ami_msg_signature_slot (const void *data, size_t size, size_t *signed_len)
{
    const uint8_t *p = (const uint8_t *) data;
    int type = ami_msg_peek_type (data, size);
    if (type != AMI_MSG_READ_REQ && type != AMI_MSG_READ_RESP)
        return NULL;
    /* the array header, version and type take >= 3 bytes before the slot */
    if (size < AMI_SIGNATURE_FIELD + 3 || size > AMI_MAX_FRAME)
        return NULL;
    if (p [size - AMI_SIGNATURE_FIELD] != 0xc4
    ||  p [size - AMI_SIGNATURE_FIELD + 1] != AMI_SIGNATURE_SIZE)
        return NULL;
    if (signed_len)
        *signed_len = size - AMI_SIGNATURE_FIELD;
    return p + size - AMI_SIGNATURE_SIZE;
}

const char *
ami_msg_type_name (int type)
{
    const s_type_info_t *info = type > 0 ? s_type_info ((uint64_t) type) : NULL;
    return info ? info->name : "UNKNOWN";
}

const char *
ami_action_name (int action)
{
    if (action < 1 || action > AMI_ACT_MAX)
        return NULL;
    return s_action_names [action];
}

int
ami_action_from_name (const char *name)
{
    if (!name)
        return 0;
    for (int a = 1; a <= AMI_ACT_MAX; a++)
        if (strcmp (name, s_action_names [a]) == 0)
            return a;
    return 0;
}

bool
ami_id_valid (const char *id)
{
    if (!id)
        return false;
    size_t n = strnlen (id, AMI_MAX_ID + 1);
    return n >= 1 && n <= AMI_MAX_ID && s_id_chars (id, n);
}

char *
ami_obis_format (const uint8_t obis [AMI_OBIS_SIZE], char out [24])
{
    /* 6 groups of <= 3 digits + 5 dots + NUL = 24 bytes at most */
    snprintf (out, 24, "%u.%u.%u.%u.%u.%u",
              obis [0], obis [1], obis [2], obis [3], obis [4], obis [5]);
    return out;
}

int
ami_obis_parse (const char *text, uint8_t obis [AMI_OBIS_SIZE])
{
    if (!text)
        return -1;
    uint8_t tmp [AMI_OBIS_SIZE];
    int groups = 0;
    const char *s = text;
    while (true) {
        unsigned value = 0;
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (++digits > 3)
                return -1;
            value = value * 10 + (unsigned) (*s++ - '0');
        }
        if (digits == 0 || value > 255 || groups == AMI_OBIS_SIZE)
            return -1;
        tmp [groups++] = (uint8_t) value;
        if (*s == 0)
            break;
        if (*s++ != '.')
            return -1;
    }
    if (groups < AMI_OBIS_SIZE - 1)
        return -1;
    if (groups == AMI_OBIS_SIZE - 1)
        tmp [AMI_OBIS_SIZE - 1] = 255;  /* F omitted: "no billing period" */
    memcpy (obis, tmp, AMI_OBIS_SIZE);
    return 0;
}

char *
ami_request_id_format (const uint8_t id [AMI_REQUEST_ID_SIZE],
                       char out [2 * AMI_REQUEST_ID_SIZE + 1])
{
    static const char hex [] = "0123456789abcdef";
    for (size_t i = 0; i < AMI_REQUEST_ID_SIZE; i++) {
        out [2 * i] = hex [id [i] >> 4];
        out [2 * i + 1] = hex [id [i] & 0x0f];
    }
    out [2 * AMI_REQUEST_ID_SIZE] = 0;
    return out;
}
