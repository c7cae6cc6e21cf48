/*  test_msg_malformed.c - the decoder against hostile input (SEC-VAL-1).

    Every row asserts the exact ami_err_t. The inputs are made three ways:
    - valid samples of every message type, made with the real encoder;
    - programmatic edits of those samples: the sample is unpacked into a
      msgpack_object tree and re-packed with one node replaced, removed or
      added (s_repack), for EVERY node position of EVERY sample;
    - hand-written raw byte strings (huge length claims, bombs, maps...).

    The error precedence under test is the one documented in ami_msg.c and
    proto/PROTOCOL.md ("Decoding rules"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_msg.h"

#define T0_MS 1780272000000ULL  /* 2026-06-01T00:00:00Z */
#define MAX_DEPTH 5             /* PROTOCOL.md: deepest nesting allowed */

static uint8_t s_payload [AMI_MAX_SEALED];

/* ---------------------------------------------------------------------- */
/*  Valid samples (made with the encoder)                                  */

typedef struct {
    int type;
    int n;                  /* list length used */
    uint8_t *data;
    size_t size;
} sample_t;

#define MAX_SAMPLES 64
static sample_t s_samples [MAX_SAMPLES];
static int s_nsamples;
static ami_msg_t *s_msg;    /* decoder under test */

static void
s_fill_reading (ami_reading_t *r, int nregs, unsigned k)
{
    snprintf (r->meter_id, sizeof r->meter_id, "MTR-%06u", k);
    memset (r->request_id, (int) k, AMI_REQUEST_ID_SIZE);
    r->read_ms = T0_MS + k;
    r->quality = AMI_Q_VALID;
    r->register_count = (uint32_t) nregs;
    for (int i = 0; i < nregs; i++) {
        ami_register_t *g = &r->registers [i];
        static const uint8_t volts [6] = { 1, 0, 32, 7, 0, 255 };
        memcpy (g->obis, volts, 6);
        g->obis [2] = (uint8_t) (32 + i);
        g->value = i % 2 ? 2312 : -42;
        g->scaler = (int8_t) (i % 2 ? -1 : 3);
        g->unit = 35;
        g->quality = AMI_Q_VALID;
    }
}

/*  A valid message of `type` whose lists hold n elements. */
static void
s_build (ami_msg_t *m, int type, int n)
{
    ami_msg_reset (m, (ami_msg_type_t) type);
    switch (type) {
        case AMI_MSG_HELLO:
            strcpy (m->hello.role, "meter");
            strcpy (m->hello.node_id, "FLEET-01");
            m->hello.meter_count = (uint32_t) n;
            for (int i = 0; i < n; i++)
                snprintf (m->hello.meters [i], sizeof m->hello.meters [i], "MTR-%06d", i + 1);
            break;
        case AMI_MSG_HEALTH:
            strcpy (m->health.role, "aggregator");
            strcpy (m->health.node_id, "AGG-0001");
            m->health.state = AMI_STATE_READY;
            m->health.uptime_ms = 3600000;
            m->health.stat_count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                snprintf (m->health.stats [i].name, sizeof m->health.stats [i].name, "stat.%d", i);
                m->health.stats [i].value = 1000u + (unsigned) i;
            }
            break;
        case AMI_MSG_EVENT:
            m->event.seq = 7;
            m->event.time_ms = T0_MS;
            m->event.kind = AMI_EV_READ_DONE;
            strcpy (m->event.meter_id, "MTR-000042");
            strcpy (m->event.origin, "mdms-1");
            strcpy (m->event.text, "read done");
            break;
        case AMI_MSG_ERROR:
            m->error.has_request_id = true;
            memset (m->error.request_id, 0x42, AMI_REQUEST_ID_SIZE);
            m->error.code = AMI_E_UNREACHABLE;
            strcpy (m->error.origin, "HE-01");
            strcpy (m->error.text, "meter did not answer");
            break;
        case AMI_MSG_READ_REQ:
            strcpy (m->read_req.meter_id, "MTR-000042");
            memset (m->read_req.request_id, 0x42, AMI_REQUEST_ID_SIZE);
            m->read_req.counter = 17;
            m->read_req.issued_ms = T0_MS;
            m->read_req.expires_ms = T0_MS + 30000;
            memset (m->read_req.signature, 0x5e, AMI_SIGNATURE_SIZE);
            break;
        case AMI_MSG_READ_RESP:
            strcpy (m->read_resp.meter_id, "MTR-000042");
            memset (m->read_resp.request_id, 0x42, AMI_REQUEST_ID_SIZE);
            m->read_resp.status = AMI_OK;
            m->read_resp.sealed = s_payload;
            m->read_resp.sealed_size = 100;
            memset (m->read_resp.signature, 0x5e, AMI_SIGNATURE_SIZE);
            break;
        case AMI_MSG_READING:
            s_fill_reading (&m->reading, n, 42);
            break;
        case AMI_MSG_PROFILE:
            strcpy (m->profile.meter_id, "MTR-000042");
            m->profile.seq = 9;
            m->profile.made_ms = T0_MS;
            m->profile.record_count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                m->profile.records [i].end_s = (uint32_t) (T0_MS / 1000) + 900u * (unsigned) (i + 1);
                m->profile.records [i].import_wh = 100000u + (unsigned) i;
                m->profile.records [i].export_wh = 500;
                m->profile.records [i].status = AMI_Q_VALID;
            }
            break;
        case AMI_MSG_BATCH:
            m->batch.batch_id = 77;
            strcpy (m->batch.origin, "AGG-0001");
            m->batch.block_count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                snprintf (m->batch.blocks [i].meter_id, sizeof m->batch.blocks [i].meter_id, "MTR-%06d", i + 1);
                m->batch.blocks [i].seq = 1u + (unsigned) i;
                m->batch.blocks [i].box = s_payload + i;
                m->batch.blocks [i].box_size = 24;
            }
            break;
        case AMI_MSG_BATCH_ACK:
            m->batch_ack.batch_id = 77;
            m->batch_ack.status = AMI_OK;
            m->batch_ack.credit = 4;
            break;
        case AMI_MSG_API_REQ:
            memset (m->api_req.corr, 0x11, AMI_REQUEST_ID_SIZE);
            m->api_req.action = AMI_ACT_HISTORY;
            strcpy (m->api_req.meter_id, "MTR-000042");
            m->api_req.from_ms = T0_MS - 86400000;
            m->api_req.to_ms = T0_MS;
            m->api_req.limit = 10;
            m->api_req.timeout_ms = 5000;
            break;
        case AMI_MSG_API_READINGS:
            memset (m->api_readings.corr, 0x11, AMI_REQUEST_ID_SIZE);
            m->api_readings.more = true;
            m->api_readings.count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                s_fill_reading (&m->api_readings.readings [i].reading, 2, (unsigned) i + 1);
                m->api_readings.readings [i].requested_ms = T0_MS;
                m->api_readings.readings [i].stored_ms = T0_MS + 5;
            }
            break;
        case AMI_MSG_API_METERS:
            memset (m->api_meters.corr, 0x11, AMI_REQUEST_ID_SIZE);
            m->api_meters.count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                snprintf (m->api_meters.meters [i].meter_id, AMI_MAX_ID + 1, "MTR-%06d", i + 1);
                strcpy (m->api_meters.meters [i].aggregator_id, "AGG-0001");
                m->api_meters.meters [i].last_read_ms = T0_MS;
                m->api_meters.meters [i].state = AMI_STATE_READY;
            }
            break;
        case AMI_MSG_API_STATUS:
            memset (m->api_status.corr, 0x11, AMI_REQUEST_ID_SIZE);
            m->api_status.more = true;
            m->api_status.count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                strcpy (m->api_status.services [i].role, "headend");
                snprintf (m->api_status.services [i].node_id, AMI_MAX_ID + 1, "HE-%02d", i + 1);
                m->api_status.services [i].state = AMI_STATE_READY;
                m->api_status.services [i].uptime_ms = 3600000;
                m->api_status.services [i].age_ms = 300;
            }
            break;
        case AMI_MSG_API_INTERVALS:
            memset (m->api_intervals.corr, 0x11, AMI_REQUEST_ID_SIZE);
            strcpy (m->api_intervals.meter_id, "MTR-000042");
            m->api_intervals.count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                m->api_intervals.records [i].end_s = (uint32_t) (T0_MS / 1000) + 900u * (unsigned) i;
                m->api_intervals.records [i].import_wh = 100000u + (unsigned) i;
                m->api_intervals.records [i].export_wh = 0;
                m->api_intervals.records [i].status = AMI_Q_VALID;
            }
            break;
        case AMI_MSG_API_AUDIT:
            memset (m->api_audit.corr, 0x11, AMI_REQUEST_ID_SIZE);
            m->api_audit.count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                ami_audit_row_t *r = &m->api_audit.entries [i];
                r->seq = 1u + (unsigned) i;
                r->time_ms = T0_MS;
                strcpy (r->operator_id, "alice");
                strcpy (r->role, "OPERATOR");
                r->action = AMI_ACT_READ;
                strcpy (r->meter_id, "MTR-000042");
                memset (r->corr, 0x22, AMI_REQUEST_ID_SIZE);
                r->result = AMI_OK;
                memset (r->hash, 0x33, AMI_HASH_SIZE);
            }
            break;
        case AMI_MSG_API_CUSTOMER:
            memset (m->api_customer.corr, 0x11, AMI_REQUEST_ID_SIZE);
            strcpy (m->api_customer.meter_id, "MTR-000042");
            strcpy (m->api_customer.name, "J\xc3\xb6rg Weber");
            strcpy (m->api_customer.address, "Am Markt 3, 04109 Leipzig");
            strcpy (m->api_customer.account, "ACC-00000042");
            break;
        case AMI_MSG_API_VERIFY:
            memset (m->api_verify.corr, 0x11, AMI_REQUEST_ID_SIZE);
            m->api_verify.checked = 40;
            m->api_verify.failed = (uint64_t) n + 3;    /* more failed than listed */
            m->api_verify.count = (uint32_t) n;
            for (int i = 0; i < n; i++) {
                m->api_verify.failures [i].ref = T0_MS + 900000u * (unsigned) i;
                m->api_verify.failures [i].code = AMI_E_BAD_SIGNATURE;
            }
            break;
        default:
            fail_msg ("no builder for type %d", type);
    }
}

static void
s_add_sample (int type, int n)
{
    assert_true (s_nsamples < MAX_SAMPLES);
    ami_msg_t *m = ami_msg_new ();
    assert_non_null (m);
    s_build (m, type, n);
    uint8_t *buf = malloc (AMI_MAX_FRAME);
    assert_non_null (buf);
    size_t len = 0;
    int rc = ami_msg_encode (m, buf, AMI_MAX_FRAME, &len);
    if (rc)
        fail_msg ("sample %s/%d does not encode: %s", ami_msg_type_name (type), n, ami_errname (rc));
    sample_t *s = &s_samples [s_nsamples++];
    s->type = type;
    s->n = n;
    s->data = realloc (buf, len);
    s->size = len;
    ami_msg_destroy (&m);
}

/*  The typical sample of a type (lists of 2). */
static const sample_t *
s_sample (int type)
{
    for (int i = 0; i < s_nsamples; i++)
        if (s_samples [i].type == type && s_samples [i].n == 2)
            return &s_samples [i];
    fail_msg ("no sample for %d", type);
    return NULL;
}

static int
s_group_setup (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_payload; i++)
        s_payload [i] = (uint8_t) (i * 7 + 3);
    s_msg = ami_msg_new ();
    if (!s_msg)
        return -1;
    static const int types [] = {
        AMI_MSG_HELLO, AMI_MSG_HEALTH, AMI_MSG_EVENT, AMI_MSG_ERROR,
        AMI_MSG_READ_REQ, AMI_MSG_READ_RESP, AMI_MSG_READING, AMI_MSG_PROFILE,
        AMI_MSG_BATCH, AMI_MSG_BATCH_ACK, AMI_MSG_API_REQ, AMI_MSG_API_READINGS,
        AMI_MSG_API_METERS, AMI_MSG_API_STATUS, AMI_MSG_API_INTERVALS, AMI_MSG_API_AUDIT,
        AMI_MSG_API_CUSTOMER, AMI_MSG_API_VERIFY
    };
    for (size_t i = 0; i < sizeof types / sizeof types [0]; i++)
        s_add_sample (types [i], 2);
    /* the other edges: empty lists where allowed, full lists where the
       frame stays small enough to check every prefix */
    s_add_sample (AMI_MSG_HELLO, 0);
    s_add_sample (AMI_MSG_HELLO, AMI_MAX_HELLO_METERS);
    s_add_sample (AMI_MSG_HEALTH, 0);
    s_add_sample (AMI_MSG_HEALTH, AMI_MAX_STATS);
    s_add_sample (AMI_MSG_READING, 1);
    s_add_sample (AMI_MSG_READING, AMI_MAX_REGISTERS);
    s_add_sample (AMI_MSG_PROFILE, AMI_MAX_PROFILE_RECORDS);
    s_add_sample (AMI_MSG_BATCH, 1);
    s_add_sample (AMI_MSG_BATCH, 128);
    s_add_sample (AMI_MSG_API_READINGS, 0);
    s_add_sample (AMI_MSG_API_METERS, 0);
    s_add_sample (AMI_MSG_API_METERS, AMI_MAX_API_METERS);
    s_add_sample (AMI_MSG_API_STATUS, 0);
    s_add_sample (AMI_MSG_API_STATUS, AMI_MAX_API_SERVICES);
    s_add_sample (AMI_MSG_API_INTERVALS, 0);
    s_add_sample (AMI_MSG_API_AUDIT, 0);
    s_add_sample (AMI_MSG_API_VERIFY, 0);
    s_add_sample (AMI_MSG_API_VERIFY, AMI_MAX_API_FAILURES);
    return 0;
}

static int
s_group_teardown (void **state)
{
    (void) state;
    for (int i = 0; i < s_nsamples; i++)
        free (s_samples [i].data);
    ami_msg_destroy (&s_msg);
    return 0;
}

static int
s_decode (const void *data, size_t size)
{
    return ami_msg_decode (s_msg, data, size);
}

/* ---------------------------------------------------------------------- */
/*  Re-packing a sample with one edit                                      */

enum { OP_REPLACE = 1, OP_DROP_LAST, OP_APPEND };

/* Generated replacement values (for the ones too long to write inline) */
enum { G_NONE = 0, G_STR, G_BIN, G_NILS, G_BIN16_SIG, G_BIN32_SIG };

typedef struct {
    int path [8];
    int plen;
    int op;
    const char *raw;        /* msgpack bytes of the new node, or */
    size_t raw_len;
    int gen;                /* ... a generated one: */
    size_t gen_n;           /* length of the str/bin, count of nils */
} edit_t;

static void
s_emit (msgpack_sbuffer *sb, const edit_t *e)
{
    if (e->gen == G_NONE) {
        msgpack_sbuffer_write (sb, e->raw, e->raw_len);
        return;
    }
    msgpack_packer pk;
    msgpack_packer_init (&pk, sb, msgpack_sbuffer_write);
    size_t cap = e->gen_n > AMI_SIGNATURE_SIZE ? e->gen_n : AMI_SIGNATURE_SIZE;
    char *fill = malloc (cap);
    assert_non_null (fill);
    memset (fill, 'a', cap);
    switch (e->gen) {
        case G_STR:
            msgpack_pack_str (&pk, e->gen_n);
            msgpack_pack_str_body (&pk, fill, e->gen_n);
            break;
        case G_BIN:
            msgpack_pack_bin (&pk, e->gen_n);
            msgpack_pack_bin_body (&pk, fill, e->gen_n);
            break;
        case G_NILS:
            msgpack_pack_array (&pk, e->gen_n);
            for (size_t i = 0; i < e->gen_n; i++)
                msgpack_pack_nil (&pk);
            break;
        case G_BIN16_SIG:   /* a 64-byte signature, not as bin8 */
            msgpack_sbuffer_write (sb, "\xc5\x00\x40", 3);
            msgpack_sbuffer_write (sb, fill, 64);
            break;
        case G_BIN32_SIG:
            msgpack_sbuffer_write (sb, "\xc6\x00\x00\x00\x40", 5);
            msgpack_sbuffer_write (sb, fill, 64);
            break;
    }
    free (fill);
}

static void
s_pack_node (msgpack_sbuffer *sb, msgpack_packer *pk, const msgpack_object *o,
             const edit_t *edits, int nedits, const int *path, int level)
{
    for (int k = 0; k < nedits; k++) {
        const edit_t *e = &edits [k];
        if (e->plen != level || memcmp (e->path, path, sizeof (int) * (size_t) level))
            continue;
        if (e->op == OP_REPLACE) {
            s_emit (sb, e);
            return;
        }
        assert_int_equal (o->type, MSGPACK_OBJECT_ARRAY);
        uint32_t n = o->via.array.size;
        int child [8];
        memcpy (child, path, sizeof (int) * (size_t) level);
        msgpack_pack_array (pk, e->op == OP_DROP_LAST ? n - 1 : n + 1);
        for (uint32_t i = 0; i < (e->op == OP_DROP_LAST ? n - 1 : n); i++) {
            child [level] = (int) i;
            s_pack_node (sb, pk, &o->via.array.ptr [i], edits, nedits, child, level + 1);
        }
        if (e->op == OP_APPEND)
            s_emit (sb, e);
        return;
    }
    if (o->type == MSGPACK_OBJECT_ARRAY) {
        int child [8];
        memcpy (child, path, sizeof (int) * (size_t) level);
        msgpack_pack_array (pk, o->via.array.size);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            child [level] = (int) i;
            s_pack_node (sb, pk, &o->via.array.ptr [i], edits, nedits, child, level + 1);
        }
    }
    else
        msgpack_pack_object (pk, *o);
}

/*  Unpack a sample (with msgpack-c directly, independent of ami_msg) into
    *root using zone. */
static void
s_unpack (const sample_t *s, msgpack_zone *zone, msgpack_object *root)
{
    size_t off = 0;
    int rc = msgpack_unpack ((const char *) s->data, s->size, &off, zone, root);
    assert_int_equal (rc, MSGPACK_UNPACK_SUCCESS);
    assert_int_equal (off, s->size);
}

/*  Re-pack sample s with edits applied and decode it; return the code. */
static int
s_decode_edited (const sample_t *s, const edit_t *edits, int nedits)
{
    msgpack_zone zone;
    msgpack_object root;
    assert_true (msgpack_zone_init (&zone, 8192));
    s_unpack (s, &zone, &root);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init (&sb);
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    int path [8] = { 0 };
    s_pack_node (&sb, &pk, &root, edits, nedits, path, 0);
    int rc = s_decode (sb.data, sb.size);
    msgpack_sbuffer_destroy (&sb);
    msgpack_zone_destroy (&zone);
    return rc;
}

/*  Visit every node below the root: callback gets the path, the node, and
    the depth of the container holding it (root = 1). */
typedef void (visit_fn) (const sample_t *s, const msgpack_object *o,
                         const int *path, int plen, void *arg);

static void
s_walk (const sample_t *s, const msgpack_object *o, int *path, int plen,
        visit_fn *fn, void *arg)
{
    if (plen > 0)
        fn (s, o, path, plen, arg);
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            path [plen] = (int) i;
            s_walk (s, &o->via.array.ptr [i], path, plen + 1, fn, arg);
        }
}

static void
s_walk_sample (const sample_t *s, visit_fn *fn, void *arg)
{
    msgpack_zone zone;
    msgpack_object root;
    assert_true (msgpack_zone_init (&zone, 8192));
    s_unpack (s, &zone, &root);
    int path [8];
    fn (s, &root, path, 0, arg);        /* the root itself, plen 0 */
    s_walk (s, &root, path, 0, fn, arg);
    msgpack_zone_destroy (&zone);
}

static void
s_path_str (const int *path, int plen, char *out, size_t cap)
{
    size_t n = 0;
    out [0] = 0;
    for (int i = 0; i < plen && n < cap; i++)
        n += (size_t) snprintf (out + n, cap - n, "[%d]", path [i]);
}

/* ---------------------------------------------------------------------- */
/*  Sanity: samples decode and the re-packer is faithful                   */

static void
test_samples_valid_and_repack_identity (void **state)
{
    (void) state;
    assert_true (s_nsamples >= 32);
    for (int i = 0; i < s_nsamples; i++) {
        const sample_t *s = &s_samples [i];
        assert_int_equal (s_decode (s->data, s->size), AMI_OK);
        assert_int_equal (s_msg->type, s->type);
        /* re-pack without edits: byte-identical, so an edited frame
           differs from the sample only by the edit */
        msgpack_zone zone;
        msgpack_object root;
        assert_true (msgpack_zone_init (&zone, 8192));
        s_unpack (s, &zone, &root);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init (&sb);
        msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
        int path [8] = { 0 };
        s_pack_node (&sb, &pk, &root, NULL, 0, path, 0);
        assert_int_equal (sb.size, s->size);
        assert_memory_equal (sb.data, s->data, s->size);
        msgpack_sbuffer_destroy (&sb);
        msgpack_zone_destroy (&zone);
    }
}

/* ---------------------------------------------------------------------- */
/*  Truncation and trailing bytes                                          */

static void
test_truncated_every_prefix (void **state)
{
    (void) state;
    size_t checked = 0;
    for (int i = 0; i < s_nsamples; i++) {
        const sample_t *s = &s_samples [i];
        /* copy each prefix into an exact-size heap block, so ASan catches
           any read at or past its end */
        uint8_t *buf = malloc (s->size);
        assert_non_null (buf);
        for (size_t k = 0; k < s->size; k++) {
            /* the prefix sits at the END of an exact-size heap block, so
               ASan reports any read past it */
            uint8_t *prefix = buf + (s->size - k);
            memcpy (prefix, s->data, k);
            int rc = s_decode (prefix, k);
            if (rc != AMI_E_TRUNCATED)
                fail_msg ("%s/%d cut at %zu of %zu: %s", ami_msg_type_name (s->type),
                          s->n, k, s->size, ami_errname (rc));
            checked++;
        }
        free (buf);
    }
    print_message ("%zu prefixes of %d samples checked\n", checked, s_nsamples);
    assert_true (checked > 25000);
}

static void
test_trailing_bytes (void **state)
{
    (void) state;
    static const struct { const char *bytes; size_t len; } tails [] = {
        { "\x00", 1 }, { "\xc0", 1 }, { "\x91\x01", 2 }, { "\xc1", 1 },
        { "\x80", 1 }, { "\xdd\xff\xff\xff\xff", 5 }, { "\x00\x00\x00\x00", 4 },
    };
    for (int i = 0; i < s_nsamples; i++) {
        const sample_t *s = &s_samples [i];
        uint8_t *buf = malloc (2 * s->size + 8);
        assert_non_null (buf);
        memcpy (buf, s->data, s->size);
        for (size_t t = 0; t < sizeof tails / sizeof tails [0]; t++) {
            memcpy (buf + s->size, tails [t].bytes, tails [t].len);
            int rc = s_decode (buf, s->size + tails [t].len);
            if (rc != AMI_E_TRAILING)
                fail_msg ("%s + tail %zu: %s", ami_msg_type_name (s->type), t, ami_errname (rc));
        }
        /* the same message twice in one frame */
        memcpy (buf + s->size, s->data, s->size);
        assert_int_equal (s_decode (buf, 2 * s->size), AMI_E_TRAILING);
        free (buf);
    }
}

/* ---------------------------------------------------------------------- */
/*  Every node replaced by every wrong msgpack type -> TYPE                */

typedef struct {
    const char *raw;
    size_t len;
    msgpack_object_type same;   /* the original type this candidate matches */
    bool container;
} cand_t;

static const cand_t s_cands [] = {
    { "\xc0", 1, MSGPACK_OBJECT_NIL, false },
    { "\xc3", 1, MSGPACK_OBJECT_BOOLEAN, false },
    { "\xc2", 1, MSGPACK_OBJECT_BOOLEAN, false },
    { "\x07", 1, MSGPACK_OBJECT_POSITIVE_INTEGER, false },
    { "\xcf\x00\x00\x00\x00\x00\x00\x00\x07", 9, MSGPACK_OBJECT_POSITIVE_INTEGER, false },
    { "\xf9", 1, MSGPACK_OBJECT_NEGATIVE_INTEGER, false },
    { "\xa1x", 2, MSGPACK_OBJECT_STR, false },
    { "\xa0", 1, MSGPACK_OBJECT_STR, false },
    { "\xc4\x01\x00", 3, MSGPACK_OBJECT_BIN, false },
    { "\x90", 1, MSGPACK_OBJECT_ARRAY, true },
    { "\x91\xc0", 2, MSGPACK_OBJECT_ARRAY, true },
    /* never valid anywhere: */
    { "\xca\x00\x00\x00\x00", 5, MSGPACK_OBJECT_FLOAT32, false },
    { "\xcb\x40\x09\x21\xfb\x54\x44\x2d\x18", 9, MSGPACK_OBJECT_FLOAT64, false },
    { "\x80", 1, MSGPACK_OBJECT_MAP, true },
    { "\x81\x01\x02", 3, MSGPACK_OBJECT_MAP, true },
    { "\xd4\x01\x00", 3, MSGPACK_OBJECT_EXT, false },
    { "\xc7\x01\x05\x00", 4, MSGPACK_OBJECT_EXT, false },
};

static bool
s_is_int (msgpack_object_type t)
{
    return t == MSGPACK_OBJECT_POSITIVE_INTEGER || t == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static void
s_visit_wrong_type (const sample_t *s, const msgpack_object *o,
                    const int *path, int plen, void *arg)
{
    size_t *count = arg;
    if (plen == 0)
        return;                     /* the root: covered by raw tests */
    for (size_t c = 0; c < sizeof s_cands / sizeof s_cands [0]; c++) {
        const cand_t *cd = &s_cands [c];
        /* skip candidates of the node's own kind (any integer counts as
           the same kind: signedness is a range question) */
        if (cd->same == o->type || (s_is_int (cd->same) && s_is_int (o->type)))
            continue;
        edit_t e = { .plen = plen, .op = OP_REPLACE, .raw = cd->raw, .raw_len = cd->len };
        memcpy (e.path, path, sizeof (int) * (size_t) plen);
        /* the node sits in a container at depth plen; an array put there
           is at depth plen + 1, which the pre-scan refuses beyond 5. Maps
           are refused for their type first. */
        int expect = AMI_E_TYPE;
        if (cd->same == MSGPACK_OBJECT_ARRAY && plen + 1 > MAX_DEPTH)
            expect = AMI_E_LIMIT;
        int rc = s_decode_edited (s, &e, 1);
        if (rc != expect) {
            char p [64];
            s_path_str (path, plen, p, sizeof p);
            fail_msg ("%s%s replaced by candidate %zu: %s, expected %s",
                      ami_msg_type_name (s->type), p, c, ami_errname (rc), ami_errname (expect));
        }
        (*count)++;
    }
}

static void
test_wrong_type_every_field (void **state)
{
    (void) state;
    size_t count = 0;
    for (int i = 0; i < s_nsamples; i++)
        if (s_samples [i].n <= 2)
            s_walk_sample (&s_samples [i], s_visit_wrong_type, &count);
    print_message ("%zu wrong-type edits checked\n", count);
    assert_true (count > 2000);
}

/* ---------------------------------------------------------------------- */
/*  One field fewer / one more, in every tuple -> ARITY                    */

static void
s_visit_arity (const sample_t *s, const msgpack_object *o,
               const int *path, int plen, void *arg)
{
    size_t *count = arg;
    /* Tuples are the arrays at odd container depth: the root (1), the
       elements of lists (3: stat, register list holder, interval, block,
       rows) and registers (5). Even depths are lists. */
    if (o->type != MSGPACK_OBJECT_ARRAY || (plen + 1) % 2 == 0)
        return;
    static const struct { int op; const char *raw; size_t len; } edits [] = {
        { OP_DROP_LAST, NULL, 0 }, { OP_APPEND, "\xc0", 1 }, { OP_APPEND, "\x00", 1 },
    };
    for (size_t k = 0; k < 3; k++) {
        edit_t e = { .plen = plen, .op = edits [k].op, .raw = edits [k].raw, .raw_len = edits [k].len };
        memcpy (e.path, path, sizeof (int) * (size_t) plen);
        int rc = s_decode_edited (s, &e, 1);
        if (rc != AMI_E_ARITY) {
            char p [64];
            s_path_str (path, plen, p, sizeof p);
            fail_msg ("%s%s op %zu: %s", ami_msg_type_name (s->type), p, k, ami_errname (rc));
        }
        (*count)++;
    }
}

static void
test_arity_every_tuple (void **state)
{
    (void) state;
    size_t count = 0;
    for (int i = 0; i < s_nsamples; i++)
        if (s_samples [i].n <= 2)
            s_walk_sample (&s_samples [i], s_visit_arity, &count);
    print_message ("%zu arity edits checked\n", count);
    assert_true (count > 100);
}

/* ---------------------------------------------------------------------- */
/*  Every string, binary and list over its limit -> LIMIT                   */

static void
s_visit_limits (const sample_t *s, const msgpack_object *o,
                const int *path, int plen, void *arg)
{
    size_t *count = arg;
    edit_t e = { .plen = plen, .op = OP_REPLACE };
    memcpy (e.path, path, sizeof (int) * (size_t) plen);
    if (plen == 0)
        return;
    if (o->type == MSGPACK_OBJECT_STR) {
        e.gen = G_STR;              /* over every string limit (<= 256) */
        e.gen_n = AMI_MAX_TEXT + 1;
    }
    else
    if (o->type == MSGPACK_OBJECT_BIN) {
        e.gen = G_BIN;              /* over every binary size (<= 4096) */
        e.gen_n = AMI_MAX_SEALED + 1;
    }
    else
    if (o->type == MSGPACK_OBJECT_ARRAY && (plen + 1) % 2 == 0) {
        e.gen = G_NILS;             /* over every list limit (<= 2976) */
        e.gen_n = AMI_MAX_API_INTERVALS + 1;
    }
    else
        return;
    int rc = s_decode_edited (s, &e, 1);
    if (rc != AMI_E_LIMIT) {
        char p [64];
        s_path_str (path, plen, p, sizeof p);
        fail_msg ("%s%s over limit: %s", ami_msg_type_name (s->type), p, ami_errname (rc));
    }
    (*count)++;
}

static void
test_limit_every_string_bin_list (void **state)
{
    (void) state;
    size_t count = 0;
    for (int i = 0; i < s_nsamples; i++)
        if (s_samples [i].n <= 2)
            s_walk_sample (&s_samples [i], s_visit_limits, &count);
    print_message ("%zu over-limit edits checked\n", count);
    assert_true (count > 90);
}

/* ---------------------------------------------------------------------- */
/*  The table: exact boundaries, ranges, charsets, precedence               */

typedef struct {
    int type;               /* which sample (lists of 2) */
    const char *what;
    int expect;
    int nedits;
    edit_t edits [2];
} row_t;

/* edit helpers: path, then the raw msgpack bytes of the new node */
#define PATH(...) .path = { __VA_ARGS__ }, .plen = (int) (sizeof ((int []) { __VA_ARGS__ }) / sizeof (int))
#define SET(raw_, ...) { PATH (__VA_ARGS__), .op = OP_REPLACE, .raw = raw_, .raw_len = sizeof (raw_) - 1 }
#define GEN(g_, n_, ...) { PATH (__VA_ARGS__), .op = OP_REPLACE, .gen = g_, .gen_n = n_ }
#define ROW(type_, what_, expect_, ...) { type_, what_, expect_, \
    (int) (sizeof ((edit_t []) { __VA_ARGS__ }) / sizeof (edit_t)), { __VA_ARGS__ } }

/* 33 id characters, 17 role characters */
#define ID32 "abcdefghijklmnopqrstuvwxyz012345"
#define ID33 ID32 "6"
#define ROLE16 "abcdefghijklmnop"
#define ROLE17 ROLE16 "q"
/* T0_MS and friends as msgpack uint64 */
#define U64_T0    "\xcf\x00\x00\x01\x9e\x80\x7a\xec\x00"
#define U64_T0P1  "\xcf\x00\x00\x01\x9e\x80\x7a\xec\x01"
#define U64_MAX   "\xcf\xff\xff\xff\xff\xff\xff\xff\xff"
#define U32_MAX   "\xce\xff\xff\xff\xff"
#define U32_OVER  "\xcf\x00\x00\x00\x01\x00\x00\x00\x00"
#define U16_MAX   "\xcd\xff\xff"
#define U16_OVER  "\xce\x00\x01\x00\x00"
#define U8_OVER   "\xcd\x01\x00"
#define NEG1      "\xff"
#define BANG33    "!!!!!!!!!!" "!!!!!!!!!!" "!!!!!!!!!!" "!!!"

static const row_t s_rows [] = {
    /* HELLO [1, 1, role, node_id, [meter...]] */
    ROW (AMI_MSG_HELLO, "role empty", AMI_E_LIMIT, SET ("\xa0", 2)),
    ROW (AMI_MSG_HELLO, "role 16", AMI_OK, SET ("\xb0" ROLE16, 2)),
    ROW (AMI_MSG_HELLO, "role 17", AMI_E_LIMIT, SET ("\xb1" ROLE17, 2)),
    ROW (AMI_MSG_HELLO, "role with space", AMI_E_RANGE, SET ("\xa6" "me ter", 2)),
    ROW (AMI_MSG_HELLO, "role non-ASCII", AMI_E_RANGE, SET ("\xa3r\xc3\xa4", 2)),
    ROW (AMI_MSG_HELLO, "role as bin", AMI_E_TYPE, SET ("\xc4\x05meter", 2)),
    ROW (AMI_MSG_HELLO, "node id 32", AMI_OK, SET ("\xd9\x20" ID32, 3)),
    ROW (AMI_MSG_HELLO, "node id 32 as str16", AMI_OK, SET ("\xda\x00\x20" ID32, 3)),
    ROW (AMI_MSG_HELLO, "node id 33", AMI_E_LIMIT, SET ("\xd9\x21" ID33, 3)),
    ROW (AMI_MSG_HELLO, "node id empty", AMI_E_LIMIT, SET ("\xa0", 3)),
    ROW (AMI_MSG_HELLO, "node id with /", AMI_E_RANGE, SET ("\xa3" "a/b", 3)),
    ROW (AMI_MSG_HELLO, "no meters", AMI_OK, SET ("\x90", 4)),
    ROW (AMI_MSG_HELLO, "meters as array32", AMI_OK, SET ("\xdd\x00\x00\x00\x01\xa1m", 4)),
    ROW (AMI_MSG_HELLO, "1024 meters claimed, 1 present", AMI_E_TRUNCATED, SET ("\xdc\x04\x00\xa1m", 4)),
    ROW (AMI_MSG_HELLO, "1025 meters", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_HELLO_METERS + 1, 4)),
    ROW (AMI_MSG_HELLO, "meter id empty", AMI_E_LIMIT, SET ("\xa0", 4, 0)),
    ROW (AMI_MSG_HELLO, "meter id with NUL", AMI_E_RANGE, SET ("\xa4MTR\x00", 4, 0)),
    ROW (AMI_MSG_HELLO, "meter id 33", AMI_E_LIMIT, SET ("\xd9\x21" ID33, 4, 1)),
    ROW (AMI_MSG_HELLO, "meter id as int", AMI_E_TYPE, SET ("\x2a", 4, 1)),

    /* HEALTH [1, 2, role, node_id, state, uptime_ms, [[name, value]...]] */
    ROW (AMI_MSG_HEALTH, "state 4 (DOWN)", AMI_OK, SET ("\x04", 4)),
    ROW (AMI_MSG_HEALTH, "state 5", AMI_E_RANGE, SET ("\x05", 4)),
    ROW (AMI_MSG_HEALTH, "state 256", AMI_E_RANGE, SET (U8_OVER, 4)),
    ROW (AMI_MSG_HEALTH, "state -1", AMI_E_TYPE, SET (NEG1, 4)),
    ROW (AMI_MSG_HEALTH, "uptime u64 max", AMI_OK, SET (U64_MAX, 5)),
    ROW (AMI_MSG_HEALTH, "uptime -1 as int64", AMI_E_TYPE, SET ("\xd3\xff\xff\xff\xff\xff\xff\xff\xff", 5)),
    ROW (AMI_MSG_HEALTH, "no stats", AMI_OK, SET ("\x90", 6)),
    ROW (AMI_MSG_HEALTH, "65 stats", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_STATS + 1, 6)),
    ROW (AMI_MSG_HEALTH, "stat of 1", AMI_E_ARITY, SET ("\x91\xa1x", 6, 0)),
    ROW (AMI_MSG_HEALTH, "stat of 3", AMI_E_ARITY, SET ("\x93\xa1x\x01\x02", 6, 0)),
    ROW (AMI_MSG_HEALTH, "stat name empty", AMI_E_LIMIT, SET ("\xa0", 6, 0, 0)),
    ROW (AMI_MSG_HEALTH, "stat name with space", AMI_E_RANGE, SET ("\xa3" "a b", 6, 1, 0)),
    ROW (AMI_MSG_HEALTH, "stat value -1", AMI_E_TYPE, SET (NEG1, 6, 1, 1)),

    /* EVENT [1, 3, seq, time_ms, kind, meter_id, origin, text] */
    ROW (AMI_MSG_EVENT, "seq 0", AMI_OK, SET ("\x00", 2)),
    ROW (AMI_MSG_EVENT, "kind 0", AMI_E_RANGE, SET ("\x00", 4)),
    ROW (AMI_MSG_EVENT, "kind 7", AMI_OK, SET ("\x07", 4)),
    ROW (AMI_MSG_EVENT, "kind 8", AMI_E_RANGE, SET ("\x08", 4)),
    ROW (AMI_MSG_EVENT, "kind 65535", AMI_E_RANGE, SET (U16_MAX, 4)),
    ROW (AMI_MSG_EVENT, "kind 65537 (u16 + 1)", AMI_E_RANGE, SET ("\xce\x00\x01\x00\x01", 4)),
    ROW (AMI_MSG_EVENT, "meter id empty", AMI_OK, SET ("\xa0", 5)),
    ROW (AMI_MSG_EVENT, "meter id 33", AMI_E_LIMIT, SET ("\xd9\x21" ID33, 5)),
    ROW (AMI_MSG_EVENT, "meter id with space", AMI_E_RANGE, SET ("\xa3" "a b", 5)),
    ROW (AMI_MSG_EVENT, "origin empty", AMI_E_LIMIT, SET ("\xa0", 6)),
    ROW (AMI_MSG_EVENT, "text empty", AMI_OK, SET ("\xa0", 7)),
    ROW (AMI_MSG_EVENT, "text 256", AMI_OK, GEN (G_STR, AMI_MAX_TEXT, 7)),
    ROW (AMI_MSG_EVENT, "text 257", AMI_E_LIMIT, GEN (G_STR, AMI_MAX_TEXT + 1, 7)),
    ROW (AMI_MSG_EVENT, "text with NUL", AMI_E_RANGE, SET ("\xa3" "a\x00" "b", 7)),
    ROW (AMI_MSG_EVENT, "text with 0xff", AMI_E_RANGE, SET ("\xa3" "a\xff" "b", 7)),
    ROW (AMI_MSG_EVENT, "text lone continuation", AMI_E_RANGE, SET ("\xa1\x80", 7)),
    ROW (AMI_MSG_EVENT, "text overlong NUL", AMI_E_RANGE, SET ("\xa2\xc0\x80", 7)),
    ROW (AMI_MSG_EVENT, "text overlong 3-byte", AMI_E_RANGE, SET ("\xa3\xe0\x80\xaf", 7)),
    ROW (AMI_MSG_EVENT, "text surrogate", AMI_E_RANGE, SET ("\xa3\xed\xa0\x80", 7)),
    ROW (AMI_MSG_EVENT, "text above U+10FFFF", AMI_E_RANGE, SET ("\xa4\xf4\x90\x80\x80", 7)),
    ROW (AMI_MSG_EVENT, "text cut sequence", AMI_E_RANGE, SET ("\xa3" "a\xe2\x82", 7)),
    ROW (AMI_MSG_EVENT, "text 4-byte char", AMI_OK, SET ("\xa4\xf0\x9f\x94\x8c", 7)),
    ROW (AMI_MSG_EVENT, "text U+10FFFF", AMI_OK, SET ("\xa4\xf4\x8f\xbf\xbf", 7)),
    ROW (AMI_MSG_EVENT, "text as bin", AMI_E_TYPE, SET ("\xc4\x01x", 7)),

    /* ERROR [1, 4, request_id, code, origin, text] */
    ROW (AMI_MSG_ERROR, "request id absent (bin 0)", AMI_OK, SET ("\xc4\x00", 2)),
    ROW (AMI_MSG_ERROR, "request id bin 1", AMI_E_LIMIT, SET ("\xc4\x01\x00", 2)),
    ROW (AMI_MSG_ERROR, "request id bin 15", AMI_E_LIMIT, GEN (G_BIN, 15, 2)),
    ROW (AMI_MSG_ERROR, "request id bin 17", AMI_E_LIMIT, GEN (G_BIN, 17, 2)),
    ROW (AMI_MSG_ERROR, "request id as str", AMI_E_TYPE, GEN (G_STR, 16, 2)),
    ROW (AMI_MSG_ERROR, "request id nil", AMI_E_TYPE, SET ("\xc0", 2)),
    ROW (AMI_MSG_ERROR, "code 0", AMI_E_RANGE, SET ("\x00", 3)),
    ROW (AMI_MSG_ERROR, "code 65535", AMI_OK, SET (U16_MAX, 3)),
    ROW (AMI_MSG_ERROR, "code 65536", AMI_E_RANGE, SET (U16_OVER, 3)),
    ROW (AMI_MSG_ERROR, "code 65537 (not truncated to 1)", AMI_E_RANGE, SET ("\xce\x00\x01\x00\x01", 3)),
    ROW (AMI_MSG_ERROR, "code -1", AMI_E_TYPE, SET (NEG1, 3)),
    ROW (AMI_MSG_ERROR, "origin empty", AMI_E_LIMIT, SET ("\xa0", 4)),

    /* READ_REQ [1, 10, meter_id, request_id, counter, issued, expires,
       profile_from_s, profile_to_s, sig] */
    ROW (AMI_MSG_READ_REQ, "meter id empty", AMI_E_LIMIT, SET ("\xa0", 2)),
    ROW (AMI_MSG_READ_REQ, "request id 15", AMI_E_LIMIT, GEN (G_BIN, 15, 3)),
    ROW (AMI_MSG_READ_REQ, "request id 17", AMI_E_LIMIT, GEN (G_BIN, 17, 3)),
    ROW (AMI_MSG_READ_REQ, "request id empty", AMI_E_LIMIT, SET ("\xc4\x00", 3)),
    ROW (AMI_MSG_READ_REQ, "counter 0", AMI_E_RANGE, SET ("\x00", 4)),
    ROW (AMI_MSG_READ_REQ, "counter 1", AMI_OK, SET ("\x01", 4)),
    ROW (AMI_MSG_READ_REQ, "counter u64 max", AMI_OK, SET (U64_MAX, 4)),
    ROW (AMI_MSG_READ_REQ, "counter -1", AMI_E_TYPE, SET (NEG1, 4)),
    ROW (AMI_MSG_READ_REQ, "expires == issued", AMI_E_RANGE, SET (U64_T0, 6)),
    ROW (AMI_MSG_READ_REQ, "expires = issued + 1", AMI_OK, SET (U64_T0P1, 6)),
    ROW (AMI_MSG_READ_REQ, "expires 0", AMI_E_RANGE, SET ("\x00", 6)),
    ROW (AMI_MSG_READ_REQ, "issued after expires", AMI_E_RANGE, SET (U64_MAX, 5)),
    /* SEC-INT-5: the load-profile range is 0/0, or from < to within 31 days */
    ROW (AMI_MSG_READ_REQ, "profile from without to", AMI_E_RANGE, SET ("\x01", 7)),
    ROW (AMI_MSG_READ_REQ, "profile to without from: 0..to", AMI_OK, SET ("\x01", 8)),
    ROW (AMI_MSG_READ_REQ, "profile from == to", AMI_E_RANGE, SET ("\x05", 7), SET ("\x05", 8)),
    ROW (AMI_MSG_READ_REQ, "profile from > to", AMI_E_RANGE, SET ("\x06", 7), SET ("\x05", 8)),
    ROW (AMI_MSG_READ_REQ, "profile range 31 days", AMI_OK, SET ("\x01", 7), SET ("\xce\x00\x28\xde\x81", 8)),
    ROW (AMI_MSG_READ_REQ, "profile range 31 days + 1 s", AMI_E_RANGE, SET ("\x01", 7), SET ("\xce\x00\x28\xde\x82", 8)),
    ROW (AMI_MSG_READ_REQ, "profile range at u64 max", AMI_E_RANGE, SET ("\x01", 7), SET (U64_MAX, 8)),
    ROW (AMI_MSG_READ_REQ, "profile from -1", AMI_E_TYPE, SET (NEG1, 7)),
    ROW (AMI_MSG_READ_REQ, "profile to as str", AMI_E_TYPE, SET ("\xa1x", 8)),
    ROW (AMI_MSG_READ_REQ, "profile range before bad signature", AMI_E_RANGE, SET ("\x01", 7), GEN (G_BIN, 3, 9)),
    ROW (AMI_MSG_READ_REQ, "signature 63", AMI_E_LIMIT, GEN (G_BIN, 63, 9)),
    ROW (AMI_MSG_READ_REQ, "signature 65", AMI_E_LIMIT, GEN (G_BIN, 65, 9)),
    ROW (AMI_MSG_READ_REQ, "signature empty", AMI_E_LIMIT, SET ("\xc4\x00", 9)),
    ROW (AMI_MSG_READ_REQ, "signature as bin16", AMI_E_TYPE, GEN (G_BIN16_SIG, 0, 9)),
    ROW (AMI_MSG_READ_REQ, "signature as bin32", AMI_E_TYPE, GEN (G_BIN32_SIG, 0, 9)),
    ROW (AMI_MSG_READ_REQ, "signature as str", AMI_E_TYPE, GEN (G_STR, 64, 9)),
    ROW (AMI_MSG_READ_REQ, "meter id claims 2 GiB", AMI_E_TRUNCATED, SET ("\xdb\x7f\xff\xff\xff", 2)),

    /* READ_RESP [1, 11, meter_id, request_id, status, sealed, signature] */
    ROW (AMI_MSG_READ_RESP, "success without reading", AMI_E_LIMIT, SET ("\xc4\x00", 5)),
    ROW (AMI_MSG_READ_RESP, "refusal with reading", AMI_E_RANGE, SET ("\x29", 4)),
    ROW (AMI_MSG_READ_RESP, "refusal without reading", AMI_OK, SET ("\x29", 4), SET ("\xc4\x00", 5)),
    ROW (AMI_MSG_READ_RESP, "sealed 1", AMI_OK, SET ("\xc4\x01\x00", 5)),
    ROW (AMI_MSG_READ_RESP, "sealed 4096", AMI_OK, GEN (G_BIN, AMI_MAX_SEALED, 5)),
    ROW (AMI_MSG_READ_RESP, "sealed 4097", AMI_E_LIMIT, GEN (G_BIN, AMI_MAX_SEALED + 1, 5)),
    ROW (AMI_MSG_READ_RESP, "sealed as str", AMI_E_TYPE, GEN (G_STR, 100, 5)),
    ROW (AMI_MSG_READ_RESP, "status 65536", AMI_E_RANGE, SET (U16_OVER, 4)),
    ROW (AMI_MSG_READ_RESP, "signature as bin16", AMI_E_TYPE, GEN (G_BIN16_SIG, 0, 6)),
    ROW (AMI_MSG_READ_RESP, "signature 65", AMI_E_LIMIT, GEN (G_BIN, 65, 6)),

    /* READING [1, 12, meter_id, request_id, read_ms, quality, [register...]] */
    ROW (AMI_MSG_READING, "quality u32 max", AMI_OK, SET (U32_MAX, 5)),
    ROW (AMI_MSG_READING, "quality 2^32", AMI_E_RANGE, SET (U32_OVER, 5)),
    ROW (AMI_MSG_READING, "no registers", AMI_E_LIMIT, SET ("\x90", 6)),
    ROW (AMI_MSG_READING, "33 registers", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_REGISTERS + 1, 6)),
    ROW (AMI_MSG_READING, "obis 5 bytes", AMI_E_LIMIT, SET ("\xc4\x05\x01\x00\x01\x08\x00", 6, 0, 0)),
    ROW (AMI_MSG_READING, "obis 7 bytes", AMI_E_LIMIT, SET ("\xc4\x07\x01\x00\x01\x08\x00\xff\xff", 6, 0, 0)),
    ROW (AMI_MSG_READING, "obis as str", AMI_E_TYPE, SET ("\xa6" "1.0.1.", 6, 0, 0)),
    ROW (AMI_MSG_READING, "value int64 min", AMI_OK, SET ("\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 6, 0, 1)),
    ROW (AMI_MSG_READING, "value int64 max", AMI_OK, SET ("\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 6, 0, 1)),
    ROW (AMI_MSG_READING, "value 2^63", AMI_E_RANGE, SET ("\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 6, 0, 1)),
    ROW (AMI_MSG_READING, "scaler 9", AMI_OK, SET ("\x09", 6, 0, 2)),
    ROW (AMI_MSG_READING, "scaler -9", AMI_OK, SET ("\xf7", 6, 1, 2)),
    ROW (AMI_MSG_READING, "scaler -9 as int64", AMI_OK, SET ("\xd3\xff\xff\xff\xff\xff\xff\xff\xf7", 6, 1, 2)),
    ROW (AMI_MSG_READING, "scaler 10", AMI_E_RANGE, SET ("\x0a", 6, 0, 2)),
    ROW (AMI_MSG_READING, "scaler -10", AMI_E_RANGE, SET ("\xf6", 6, 1, 2)),
    ROW (AMI_MSG_READING, "scaler 128", AMI_E_RANGE, SET ("\xcc\x80", 6, 0, 2)),
    ROW (AMI_MSG_READING, "scaler int64 min", AMI_E_RANGE, SET ("\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 6, 0, 2)),
    ROW (AMI_MSG_READING, "unit 255", AMI_OK, SET ("\xcc\xff", 6, 0, 3)),
    ROW (AMI_MSG_READING, "unit 256", AMI_E_RANGE, SET (U8_OVER, 6, 0, 3)),
    ROW (AMI_MSG_READING, "unit -1", AMI_E_TYPE, SET (NEG1, 6, 0, 3)),
    ROW (AMI_MSG_READING, "register quality 256", AMI_E_RANGE, SET (U8_OVER, 6, 1, 4)),
    ROW (AMI_MSG_READING, "register of 4", AMI_E_ARITY, SET ("\x94\xc4\x06\x01\x00\x01\x08\x00\xff\x01\x00\x1e", 6, 0)),

    /* PROFILE [1, 20, meter_id, seq, made_ms, [[end_s, import, export, status]...]] */
    ROW (AMI_MSG_PROFILE, "seq 0", AMI_E_RANGE, SET ("\x00", 3)),
    ROW (AMI_MSG_PROFILE, "made_ms -1", AMI_E_TYPE, SET (NEG1, 4)),
    ROW (AMI_MSG_PROFILE, "no records", AMI_E_LIMIT, SET ("\x90", 5)),
    ROW (AMI_MSG_PROFILE, "97 records", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_PROFILE_RECORDS + 1, 5)),
    ROW (AMI_MSG_PROFILE, "end_s u32 max", AMI_OK, SET (U32_MAX, 5, 0, 0)),
    ROW (AMI_MSG_PROFILE, "end_s 2^32", AMI_E_RANGE, SET (U32_OVER, 5, 0, 0)),
    ROW (AMI_MSG_PROFILE, "import -1", AMI_E_TYPE, SET (NEG1, 5, 1, 1)),
    ROW (AMI_MSG_PROFILE, "status 65536", AMI_E_RANGE, SET (U16_OVER, 5, 1, 3)),

    /* BATCH [1, 21, batch_id, origin, [[meter_id, seq, box]...]] */
    ROW (AMI_MSG_BATCH, "origin empty", AMI_E_LIMIT, SET ("\xa0", 3)),
    ROW (AMI_MSG_BATCH, "no blocks", AMI_E_LIMIT, SET ("\x90", 4)),
    ROW (AMI_MSG_BATCH, "1025 blocks", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_BATCH_BLOCKS + 1, 4)),
    ROW (AMI_MSG_BATCH, "block of 2", AMI_E_ARITY, SET ("\x92\xa1m\x01", 4, 1)),
    ROW (AMI_MSG_BATCH, "block meter empty", AMI_E_LIMIT, SET ("\xa0", 4, 0, 0)),
    ROW (AMI_MSG_BATCH, "block seq 0", AMI_E_RANGE, SET ("\x00", 4, 1, 1)),
    ROW (AMI_MSG_BATCH, "box empty", AMI_E_LIMIT, SET ("\xc4\x00", 4, 0, 2)),
    ROW (AMI_MSG_BATCH, "box 4096", AMI_OK, GEN (G_BIN, AMI_MAX_SEALED, 4, 0, 2)),
    ROW (AMI_MSG_BATCH, "box 4097", AMI_E_LIMIT, GEN (G_BIN, AMI_MAX_SEALED + 1, 4, 0, 2)),
    ROW (AMI_MSG_BATCH, "box as str", AMI_E_TYPE, SET ("\xa1x", 4, 1, 2)),

    /* BATCH_ACK [1, 22, batch_id, status, credit] */
    ROW (AMI_MSG_BATCH_ACK, "batch id u64 max", AMI_OK, SET (U64_MAX, 2)),
    ROW (AMI_MSG_BATCH_ACK, "status 65536", AMI_E_RANGE, SET (U16_OVER, 3)),
    ROW (AMI_MSG_BATCH_ACK, "credit 0", AMI_OK, SET ("\x00", 4)),
    ROW (AMI_MSG_BATCH_ACK, "credit u32 max", AMI_OK, SET (U32_MAX, 4)),
    ROW (AMI_MSG_BATCH_ACK, "credit 2^32", AMI_E_RANGE, SET (U32_OVER, 4)),
    ROW (AMI_MSG_BATCH_ACK, "credit -1", AMI_E_TYPE, SET (NEG1, 4)),

    /* API_REQ [1, 40, corr, action, meter_id, from, to, limit, timeout] */
    ROW (AMI_MSG_API_REQ, "corr empty", AMI_E_LIMIT, SET ("\xc4\x00", 2)),
    ROW (AMI_MSG_API_REQ, "corr 15", AMI_E_LIMIT, GEN (G_BIN, 15, 2)),
    ROW (AMI_MSG_API_REQ, "action 0", AMI_E_RANGE, SET ("\x00", 3)),
    ROW (AMI_MSG_API_REQ, "action 7", AMI_OK, SET ("\x07", 3)),
    ROW (AMI_MSG_API_REQ, "action 8 (customer)", AMI_OK, SET ("\x08", 3)),
    ROW (AMI_MSG_API_REQ, "action 9 (audit-verify)", AMI_OK, SET ("\x09", 3)),
    ROW (AMI_MSG_API_REQ, "action 10 (recover)", AMI_OK, SET ("\x0a", 3)),
    ROW (AMI_MSG_API_REQ, "action 11", AMI_E_RANGE, SET ("\x0b", 3)),
    ROW (AMI_MSG_API_REQ, "action 266 (10 + 256)", AMI_E_RANGE, SET ("\xcd\x01\x0a", 3)),
    ROW (AMI_MSG_API_REQ, "action as str", AMI_E_TYPE, SET ("\xa4read", 3)),
    ROW (AMI_MSG_API_REQ, "meter empty", AMI_OK, SET ("\xa0", 4)),
    ROW (AMI_MSG_API_REQ, "limit 2^32", AMI_E_RANGE, SET (U32_OVER, 7)),
    ROW (AMI_MSG_API_REQ, "timeout 2^32", AMI_E_RANGE, SET (U32_OVER, 8)),

    /* API_READINGS [1, 41, corr, more, [stored_reading...]] */
    ROW (AMI_MSG_API_READINGS, "more false", AMI_OK, SET ("\xc2", 3)),
    ROW (AMI_MSG_API_READINGS, "more as 1", AMI_E_TYPE, SET ("\x01", 3)),
    ROW (AMI_MSG_API_READINGS, "more nil", AMI_E_TYPE, SET ("\xc0", 3)),
    ROW (AMI_MSG_API_READINGS, "101 readings", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_API_READINGS + 1, 4)),
    ROW (AMI_MSG_API_READINGS, "stored reading meter empty", AMI_E_LIMIT, SET ("\xa0", 4, 1, 0)),
    ROW (AMI_MSG_API_READINGS, "stored reading no registers", AMI_E_LIMIT, SET ("\x90", 4, 0, 6)),
    ROW (AMI_MSG_API_READINGS, "stored register scaler 10", AMI_E_RANGE, SET ("\x0a", 4, 1, 6, 1, 2)),
    ROW (AMI_MSG_API_READINGS, "stored register nested deeper", AMI_E_LIMIT, SET ("\x90", 4, 1, 6, 1, 2)),

    /* API_METERS [1, 42, corr, more, [[meter, aggregator, last_read, state]...]] */
    ROW (AMI_MSG_API_METERS, "257 meters", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_API_METERS + 1, 4)),
    ROW (AMI_MSG_API_METERS, "aggregator empty", AMI_E_LIMIT, SET ("\xa0", 4, 1, 1)),
    ROW (AMI_MSG_API_METERS, "state 5", AMI_E_RANGE, SET ("\x05", 4, 0, 3)),
    ROW (AMI_MSG_API_METERS, "last read 0 (never)", AMI_OK, SET ("\x00", 4, 0, 2)),

    /* API_STATUS [1, 43, corr, more, [[role, node, state, uptime, age, [[name, value]...]]...]] */
    ROW (AMI_MSG_API_STATUS, "more false", AMI_OK, SET ("\xc2", 3)),
    ROW (AMI_MSG_API_STATUS, "more as 1", AMI_E_TYPE, SET ("\x01", 3)),
    ROW (AMI_MSG_API_STATUS, "more nil", AMI_E_TYPE, SET ("\xc0", 3)),
    ROW (AMI_MSG_API_STATUS, "more as str", AMI_E_TYPE, SET ("\xa4true", 3)),
    ROW (AMI_MSG_API_STATUS, "services where more goes", AMI_E_TYPE, SET ("\x90", 3)),
    ROW (AMI_MSG_API_STATUS, "no services", AMI_OK, SET ("\x90", 4)),
    ROW (AMI_MSG_API_STATUS, "65 services", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_API_SERVICES + 1, 4)),
    ROW (AMI_MSG_API_STATUS, "role 17", AMI_E_LIMIT, SET ("\xb1" ROLE17, 4, 0, 0)),
    ROW (AMI_MSG_API_STATUS, "state 5", AMI_E_RANGE, SET ("\x05", 4, 1, 2)),
    ROW (AMI_MSG_API_STATUS, "row of 7", AMI_E_ARITY, SET ("\x97\xa1r\xa1n\x01\x01\x01\x90\x01", 4, 0)),
    ROW (AMI_MSG_API_STATUS, "row of 5", AMI_E_ARITY, SET ("\x95\xa1r\xa1n\x01\x01\x01", 4, 0)),
    ROW (AMI_MSG_API_STATUS, "stat value -1", AMI_E_TYPE, SET ("\x96\xa1r\xa1n\x01\x01\x01\x91\x92\xa1s\xff", 4, 0)),
    ROW (AMI_MSG_API_STATUS, "65 stats in a row", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_STATS + 1, 4, 1, 5)),

    /* API_INTERVALS [1, 44, corr, meter_id, more, [interval...]] */
    ROW (AMI_MSG_API_INTERVALS, "meter empty", AMI_E_LIMIT, SET ("\xa0", 3)),
    ROW (AMI_MSG_API_INTERVALS, "more as int", AMI_E_TYPE, SET ("\x00", 4)),
    ROW (AMI_MSG_API_INTERVALS, "2977 intervals", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_API_INTERVALS + 1, 5)),

    /* API_AUDIT [1, 45, corr, more, [[seq, time, operator, role, action, meter, corr, result, hash]...]] */
    ROW (AMI_MSG_API_AUDIT, "257 entries", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_API_AUDIT + 1, 4)),
    ROW (AMI_MSG_API_AUDIT, "seq 0", AMI_E_RANGE, SET ("\x00", 4, 0, 0)),
    ROW (AMI_MSG_API_AUDIT, "operator empty", AMI_E_LIMIT, SET ("\xa0", 4, 0, 2)),
    ROW (AMI_MSG_API_AUDIT, "role 17", AMI_E_LIMIT, SET ("\xb1" ROLE17, 4, 0, 3)),
    ROW (AMI_MSG_API_AUDIT, "action 0", AMI_E_RANGE, SET ("\x00", 4, 1, 4)),
    ROW (AMI_MSG_API_AUDIT, "action 9", AMI_OK, SET ("\x09", 4, 1, 4)),
    ROW (AMI_MSG_API_AUDIT, "action 10 (recover)", AMI_OK, SET ("\x0a", 4, 1, 4)),
    ROW (AMI_MSG_API_AUDIT, "action 11", AMI_E_RANGE, SET ("\x0b", 4, 1, 4)),
    ROW (AMI_MSG_API_AUDIT, "meter empty", AMI_OK, SET ("\xa0", 4, 1, 5)),
    ROW (AMI_MSG_API_AUDIT, "corr empty", AMI_E_LIMIT, SET ("\xc4\x00", 4, 1, 6)),
    ROW (AMI_MSG_API_AUDIT, "result 65536", AMI_E_RANGE, SET (U16_OVER, 4, 1, 7)),
    ROW (AMI_MSG_API_AUDIT, "hash 31", AMI_E_LIMIT, GEN (G_BIN, 31, 4, 1, 8)),
    ROW (AMI_MSG_API_AUDIT, "hash 33", AMI_E_LIMIT, GEN (G_BIN, 33, 4, 1, 8)),

    /* API_CUSTOMER [1, 46, corr, meter_id, name, address, account] */
    ROW (AMI_MSG_API_CUSTOMER, "corr 17", AMI_E_LIMIT, GEN (G_BIN, 17, 2)),
    ROW (AMI_MSG_API_CUSTOMER, "meter empty", AMI_E_LIMIT, SET ("\xa0", 3)),
    ROW (AMI_MSG_API_CUSTOMER, "meter 33", AMI_E_LIMIT, SET ("\xd9\x21" ID33, 3)),
    ROW (AMI_MSG_API_CUSTOMER, "meter with space", AMI_E_RANGE, SET ("\xa5MTR 1", 3)),
    ROW (AMI_MSG_API_CUSTOMER, "name 1", AMI_OK, SET ("\xa1X", 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name empty", AMI_E_LIMIT, SET ("\xa0", 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name 64", AMI_OK, GEN (G_STR, AMI_MAX_CUSTOMER_NAME, 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name 65", AMI_E_LIMIT, GEN (G_STR, AMI_MAX_CUSTOMER_NAME + 1, 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name with NUL", AMI_E_RANGE, SET ("\xa3" "A\x00" "B", 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name Latin-1", AMI_E_RANGE, SET ("\xa4J\xf6rg", 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name with space and umlaut", AMI_OK, SET ("\xa6" "A \xc3\xa4 B", 4)),
    ROW (AMI_MSG_API_CUSTOMER, "name as bin", AMI_E_TYPE, SET ("\xc4\x01X", 4)),
    ROW (AMI_MSG_API_CUSTOMER, "address empty", AMI_OK, SET ("\xa0", 5)),
    ROW (AMI_MSG_API_CUSTOMER, "address 256", AMI_OK, GEN (G_STR, AMI_MAX_TEXT, 5)),
    ROW (AMI_MSG_API_CUSTOMER, "address 257", AMI_E_LIMIT, GEN (G_STR, AMI_MAX_TEXT + 1, 5)),
    ROW (AMI_MSG_API_CUSTOMER, "address surrogate", AMI_E_RANGE, SET ("\xa3\xed\xa0\x80", 5)),
    ROW (AMI_MSG_API_CUSTOMER, "account empty", AMI_E_LIMIT, SET ("\xa0", 6)),
    ROW (AMI_MSG_API_CUSTOMER, "account 32", AMI_OK, SET ("\xd9\x20" ID32, 6)),
    ROW (AMI_MSG_API_CUSTOMER, "account 33", AMI_E_LIMIT, SET ("\xd9\x21" ID33, 6)),
    ROW (AMI_MSG_API_CUSTOMER, "account with /", AMI_E_RANGE, SET ("\xa3" "A/1", 6)),
    ROW (AMI_MSG_API_CUSTOMER, "account as int", AMI_E_TYPE, SET ("\x2a", 6)),
    ROW (AMI_MSG_API_CUSTOMER, "bad name before bad account", AMI_E_LIMIT, SET ("\xa0", 4), SET ("\xa1!", 6)),

    /* API_VERIFY [1, 47, corr, checked, failed, [[ref, code]...]] (sample: 40 checked, 5 failed, 2 listed) */
    ROW (AMI_MSG_API_VERIFY, "corr empty", AMI_E_LIMIT, SET ("\xc4\x00", 2)),
    ROW (AMI_MSG_API_VERIFY, "checked u64 max", AMI_OK, SET (U64_MAX, 3)),
    ROW (AMI_MSG_API_VERIFY, "checked -1", AMI_E_TYPE, SET (NEG1, 3)),
    ROW (AMI_MSG_API_VERIFY, "failed u64 max", AMI_OK, SET (U64_MAX, 4)),
    ROW (AMI_MSG_API_VERIFY, "failed == count", AMI_OK, SET ("\x02", 4)),
    ROW (AMI_MSG_API_VERIFY, "failed < count", AMI_E_RANGE, SET ("\x01", 4)),
    ROW (AMI_MSG_API_VERIFY, "failed 0, none listed", AMI_OK, SET ("\x00", 4), SET ("\x90", 5)),
    ROW (AMI_MSG_API_VERIFY, "failed as bool", AMI_E_TYPE, SET ("\xc3", 4)),
    ROW (AMI_MSG_API_VERIFY, "257 failures", AMI_E_LIMIT, GEN (G_NILS, AMI_MAX_API_FAILURES + 1, 5)),
    ROW (AMI_MSG_API_VERIFY, "257 failures, failed too low: LIMIT first", AMI_E_LIMIT, SET ("\x00", 4), GEN (G_NILS, AMI_MAX_API_FAILURES + 1, 5)),
    ROW (AMI_MSG_API_VERIFY, "failed too low before bad row", AMI_E_RANGE, SET ("\x01", 4), SET ("\xc0", 5, 0)),
    ROW (AMI_MSG_API_VERIFY, "failure of 1", AMI_E_ARITY, SET ("\x91\x01", 5, 0)),
    ROW (AMI_MSG_API_VERIFY, "failure of 3", AMI_E_ARITY, SET ("\x93\x01\x28\x00", 5, 1)),
    ROW (AMI_MSG_API_VERIFY, "ref 0", AMI_OK, SET ("\x00", 5, 0, 0)),
    ROW (AMI_MSG_API_VERIFY, "ref u64 max", AMI_OK, SET (U64_MAX, 5, 0, 0)),
    ROW (AMI_MSG_API_VERIFY, "ref -1", AMI_E_TYPE, SET (NEG1, 5, 0, 0)),
    ROW (AMI_MSG_API_VERIFY, "code 0", AMI_E_RANGE, SET ("\x00", 5, 1, 1)),
    ROW (AMI_MSG_API_VERIFY, "code u16 max", AMI_OK, SET (U16_MAX, 5, 1, 1)),
    ROW (AMI_MSG_API_VERIFY, "code 65536", AMI_E_RANGE, SET (U16_OVER, 5, 1, 1)),
    ROW (AMI_MSG_API_VERIFY, "code as str", AMI_E_TYPE, SET ("\xa2" "40", 5, 0, 1)),

    /* Version and type, any encoding */
    ROW (AMI_MSG_BATCH_ACK, "version 1 as uint64", AMI_OK, SET ("\xcf\x00\x00\x00\x00\x00\x00\x00\x01", 0)),
    ROW (AMI_MSG_BATCH_ACK, "version 1 as int16", AMI_OK, SET ("\xd1\x00\x01", 0)),
    ROW (AMI_MSG_BATCH_ACK, "version 0", AMI_E_VERSION, SET ("\x00", 0)),
    ROW (AMI_MSG_BATCH_ACK, "version 2", AMI_E_VERSION, SET ("\x02", 0)),
    ROW (AMI_MSG_BATCH_ACK, "version 257", AMI_E_VERSION, SET ("\xcd\x01\x01", 0)),
    ROW (AMI_MSG_BATCH_ACK, "version 2^32 + 1", AMI_E_VERSION, SET ("\xcf\x00\x00\x00\x01\x00\x00\x00\x01", 0)),
    ROW (AMI_MSG_BATCH_ACK, "version u64 max", AMI_E_VERSION, SET (U64_MAX, 0)),
    ROW (AMI_MSG_BATCH_ACK, "version -1", AMI_E_TYPE, SET (NEG1, 0)),
    ROW (AMI_MSG_BATCH_ACK, "version as str", AMI_E_TYPE, SET ("\xa1" "1", 0)),
    ROW (AMI_MSG_BATCH_ACK, "type 22 as uint64", AMI_OK, SET ("\xcf\x00\x00\x00\x00\x00\x00\x00\x16", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 0", AMI_E_MSGTYPE, SET ("\x00", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 5", AMI_E_MSGTYPE, SET ("\x05", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 13", AMI_E_MSGTYPE, SET ("\x0d", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 23", AMI_E_MSGTYPE, SET ("\x17", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 39", AMI_E_MSGTYPE, SET ("\x27", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 48", AMI_E_MSGTYPE, SET ("\x30", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 278 (22 + 256)", AMI_E_MSGTYPE, SET ("\xcd\x01\x16", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type 2^32 + 22", AMI_E_MSGTYPE, SET ("\xcf\x00\x00\x00\x01\x00\x00\x00\x16", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type -22", AMI_E_TYPE, SET ("\xea", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type as str", AMI_E_TYPE, SET ("\xa2" "22", 1)),

    /* Precedence: structure (pre-scan) before version before type before
       arity before fields; fields in order; TYPE before LIMIT before RANGE */
    ROW (AMI_MSG_BATCH_ACK, "bad version + map later", AMI_E_TYPE, SET ("\x02", 0), SET ("\x80", 4)),
    ROW (AMI_MSG_BATCH_ACK, "bad version + float later", AMI_E_TYPE, SET ("\x02", 0), SET ("\xca\x00\x00\x00\x00", 4)),
    ROW (AMI_MSG_BATCH_ACK, "bad version + huge claim later", AMI_E_TRUNCATED, SET ("\x02", 0), SET ("\xdd\xff\xff\xff\xff", 4)),
    ROW (AMI_MSG_BATCH_ACK, "bad version + deep nesting", AMI_E_LIMIT, SET ("\x02", 0), SET ("\x91\x91\x91\x91\x91\x00", 4)),
    ROW (AMI_MSG_BATCH_ACK, "bad version + unknown type", AMI_E_VERSION, SET ("\x02", 0), SET ("\x0d", 1)),
    ROW (AMI_MSG_BATCH_ACK, "bad version + type as str", AMI_E_VERSION, SET ("\x02", 0), SET ("\xa1x", 1)),
    ROW (AMI_MSG_READ_REQ, "unknown type (arity fits another)", AMI_E_MSGTYPE, SET ("\x0d", 1)),
    ROW (AMI_MSG_READ_REQ, "type HELLO with READ_REQ fields", AMI_E_ARITY, SET ("\x01", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type READ_REQ, 5 elements", AMI_E_ARITY, SET ("\x0a", 1)),
    ROW (AMI_MSG_BATCH_ACK, "type EVENT, 5 elements", AMI_E_ARITY, SET ("\x03", 1), SET ("\xa1x", 4)),
    ROW (AMI_MSG_EVENT, "two bad fields: first wins (RANGE)", AMI_E_RANGE, SET ("\x00", 4), SET ("\xa0", 6)),
    ROW (AMI_MSG_EVENT, "two bad fields: first wins (LIMIT)", AMI_E_LIMIT, SET ("\xd9\x21" ID33, 5), SET ("\xa1\xff", 7)),
    ROW (AMI_MSG_HELLO, "id over limit with bad chars: LIMIT", AMI_E_LIMIT, SET ("\xd9\x21" BANG33, 3)),
    ROW (AMI_MSG_HELLO, "bin over limit where str expected: TYPE", AMI_E_TYPE, GEN (G_BIN, 5000, 3)),
    ROW (AMI_MSG_READ_REQ, "bad counter before bad signature", AMI_E_RANGE, SET ("\x00", 4), GEN (G_BIN, 3, 9)),
    ROW (AMI_MSG_API_READINGS, "row arity before row fields", AMI_E_ARITY, SET ("\x93\x00\x00\x00", 4, 0)),
};

static void
test_table (void **state)
{
    (void) state;
    size_t rows = sizeof s_rows / sizeof s_rows [0];
    for (size_t i = 0; i < rows; i++) {
        const row_t *r = &s_rows [i];
        int rc = s_decode_edited (s_sample (r->type), r->edits, r->nedits);
        if (rc != r->expect)
            fail_msg ("row %zu %s '%s': got %s, expected %s", i, ami_msg_type_name (r->type),
                      r->what, ami_errname (rc), ami_errname (r->expect));
    }
    print_message ("%zu table rows checked\n", rows);
}

/* ---------------------------------------------------------------------- */
/*  Raw inputs: empty, huge claims, bombs, maps, floats, ext               */

typedef struct {
    const char *what;
    const char *bytes;
    size_t len;
    int expect;
} raw_t;

#define RAW(what_, bytes_, expect_) { what_, bytes_, sizeof (bytes_) - 1, expect_ }

static const raw_t s_raw [] = {
    RAW ("one zero byte", "\x00", AMI_E_TYPE),
    RAW ("nil", "\xc0", AMI_E_TYPE),
    RAW ("a string", "\xa3" "abc", AMI_E_TYPE),
    RAW ("empty array", "\x90", AMI_E_ARITY),
    RAW ("[1]", "\x91\x01", AMI_E_ARITY),
    RAW ("[2]", "\x91\x02", AMI_E_VERSION),
    RAW ("[1, 1]", "\x92\x01\x01", AMI_E_ARITY),
    RAW ("[1, 99]", "\x92\x01\x63", AMI_E_MSGTYPE),
    RAW ("two roots", "\x00\x00", AMI_E_TRAILING),
    RAW ("empty map", "\x80", AMI_E_TYPE),
    RAW ("map16", "\xde\x00\x01\x01\x01", AMI_E_TYPE),
    RAW ("map32 huge", "\xdf\xff\xff\xff\xff", AMI_E_TYPE),
    RAW ("map inside", "\x95\x01\x16\x80\x00\x04", AMI_E_TYPE),
    RAW ("float32", "\xca\x3f\x80\x00\x00", AMI_E_TYPE),
    RAW ("float64", "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", AMI_E_TYPE),
    RAW ("float as version", "\x95\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\x16\x00\x00\x04", AMI_E_TYPE),
    RAW ("float credit", "\x95\x01\x16\x2a\x00\xca\x40\x80\x00\x00", AMI_E_TYPE),
    RAW ("fixext1", "\xd4\x01\x00", AMI_E_TYPE),
    RAW ("fixext16", "\xd8\x01\x00", AMI_E_TYPE),
    RAW ("ext8", "\xc7\x01\x05\x00", AMI_E_TYPE),
    RAW ("ext32 huge", "\xc9\xff\xff\xff\xff\x05", AMI_E_TYPE),
    RAW ("timestamp ext", "\x95\x01\x16\xd6\xff\x00\x00\x00\x00\x00\x04", AMI_E_TYPE),
    RAW ("0xc1", "\xc1", AMI_E_TYPE),
    RAW ("0xc1 inside", "\x95\x01\x16\xc1\x00\x04", AMI_E_TYPE),
    RAW ("array32 4G", "\xdd\xff\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("array32 1M", "\xdd\x00\x10\x00\x00\x01\x16", AMI_E_TRUNCATED),
    RAW ("array16 64K", "\xdc\xff\xff", AMI_E_TRUNCATED),
    RAW ("fixarray 15, 1 byte", "\x9f\x01", AMI_E_TRUNCATED),
    RAW ("array32 header cut", "\xdd\x00\x00\x00", AMI_E_TRUNCATED),
    RAW ("str32 4G", "\xdb\xff\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("str16 64K", "\xda\xff\xff", AMI_E_TRUNCATED),
    RAW ("str8 255", "\xd9\xff", AMI_E_TRUNCATED),
    RAW ("bin32 4G", "\xc6\xff\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("bin16 64K", "\xc5\xff\xff", AMI_E_TRUNCATED),
    RAW ("bin8 255", "\xc4\xff", AMI_E_TRUNCATED),
    RAW ("uint64 cut", "\xcf\x00\x00", AMI_E_TRUNCATED),
    RAW ("int32 cut", "\x95\xd2\x00", AMI_E_TRUNCATED),
    RAW ("huge list in HELLO", "\x95\x01\x01\xa1m\xa1n\xdd\xff\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("huge str in HELLO", "\x95\x01\x01\xdb\xff\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("huge bin in READ_RESP", "\x97\x01\x0b\xa1m\xc6\x7f\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("nested huge arrays", "\x91\xdd\xff\xff\xff\xff", AMI_E_TRUNCATED),
    RAW ("depth 5 ok structurally", "\x91\x91\x91\x91\x91\x01", AMI_E_TYPE),
    RAW ("depth 6", "\x91\x91\x91\x91\x91\x91\x01", AMI_E_LIMIT),
    RAW ("depth 6, empty", "\x91\x91\x91\x91\x91\x90", AMI_E_LIMIT),
    RAW ("depth 6, cut", "\x91\x91\x91\x91\x91\x91", AMI_E_LIMIT),
    RAW ("depth 5, cut", "\x91\x91\x91\x91\x91", AMI_E_TRUNCATED),
    RAW ("array16 bomb", "\xdc\x00\x01\xdc\x00\x01\xdc\x00\x01\xdc\x00\x01\xdc\x00\x01\xdc\x00\x01\x00", AMI_E_LIMIT),
    RAW ("bomb inside HELLO", "\x95\x01\x01\xa1m\xa1n\x91\x91\x91\x91\x90", AMI_E_LIMIT),
    RAW ("bomb after trailing-free valid prefix", "\x95\x01\x16\x00\x00\x91\x91\x91\x91\x91\x00", AMI_E_LIMIT),
};

static void
test_raw_inputs (void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof s_raw / sizeof s_raw [0]; i++) {
        const raw_t *r = &s_raw [i];
        /* exact-size heap copy: ASan sees any over-read */
        uint8_t *buf = malloc (r->len);
        assert_non_null (buf);
        memcpy (buf, r->bytes, r->len);
        int rc = s_decode (buf, r->len);
        free (buf);
        if (rc != r->expect)
            fail_msg ("raw '%s': got %s, expected %s", r->what, ami_errname (rc), ami_errname (r->expect));
    }
    /* empty input, with and without a pointer */
    assert_int_equal (s_decode (NULL, 0), AMI_E_TRUNCATED);
    assert_int_equal (s_decode ("", 0), AMI_E_TRUNCATED);
    assert_int_equal (s_msg->type, 0);
}

/*  A thousand-level bomb and a frame-sized array of arrays: refused quickly
    and without deep recursion or big allocations. */
static void
test_bombs_big (void **state)
{
    (void) state;
    size_t n = 100000;
    uint8_t *buf = malloc (n);
    assert_non_null (buf);
    memset (buf, 0x91, n);
    assert_int_equal (s_decode (buf, n), AMI_E_LIMIT);
    memset (buf, 0xdd, n);                  /* array32 of array32 of ... */
    assert_int_equal (s_decode (buf, n), AMI_E_TRUNCATED);
    memset (buf, 0x9f, n);                  /* fixarray 15 of ... */
    assert_int_equal (s_decode (buf, n), AMI_E_LIMIT);
    free (buf);

    /* 1M-element array of nils, all bytes present: passes the pre-scan,
       msgpack-c builds 24 MB of objects at most, the root arity refuses */
    n = 5 + 1000000;
    buf = malloc (n);
    assert_non_null (buf);
    buf [0] = 0xdd; buf [1] = 0x00; buf [2] = 0x0f; buf [3] = 0x42; buf [4] = 0x40;
    memset (buf + 5, 0xc0, n - 5);
    buf [5] = 0x01;                         /* version */
    buf [6] = AMI_MSG_BATCH_ACK;            /* type */
    assert_int_equal (s_decode (buf, n), AMI_E_ARITY);
    /* and the message object still decodes normally afterwards */
    const sample_t *s = s_sample (AMI_MSG_READ_RESP);
    assert_int_equal (s_decode (s->data, s->size), AMI_OK);
    free (buf);
}

static void
test_frame_size_limit (void **state)
{
    (void) state;
    uint8_t *buf = calloc (1, AMI_MAX_FRAME + 1);
    assert_non_null (buf);
    const sample_t *s = s_sample (AMI_MSG_BATCH_ACK);
    memcpy (buf, s->data, s->size);
    /* over the frame limit: LIMIT before anything is parsed */
    assert_int_equal (s_decode (buf, AMI_MAX_FRAME + 1), AMI_E_LIMIT);
    assert_int_equal (s_decode (buf, SIZE_MAX), AMI_E_LIMIT);
    /* exactly at the limit the frame is parsed (and has trailing zeros) */
    assert_int_equal (s_decode (buf, AMI_MAX_FRAME), AMI_E_TRAILING);
    assert_int_equal (s_decode (buf, s->size), AMI_OK);
    free (buf);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_samples_valid_and_repack_identity),
        cmocka_unit_test (test_truncated_every_prefix),
        cmocka_unit_test (test_trailing_bytes),
        cmocka_unit_test (test_wrong_type_every_field),
        cmocka_unit_test (test_arity_every_tuple),
        cmocka_unit_test (test_limit_every_string_bin_list),
        cmocka_unit_test (test_table),
        cmocka_unit_test (test_raw_inputs),
        cmocka_unit_test (test_bombs_big),
        cmocka_unit_test (test_frame_size_limit),
    };
    return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
