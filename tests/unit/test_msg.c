/*  test_msg.c - the wire codec (ami_msg): every message type round-trips
    with realistic values and at its maximum sizes; the encoder refuses what
    the decoder would refuse; buffers; the signature slot; the helpers.

    Malformed input (truncation, wrong types, limits, bombs...) is tested
    table-driven in test_msg_malformed.c. */
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

/* 2026-06-01T00:00:00Z in ms: fixed, so frames are reproducible */
#define T0_MS 1780272000000ULL

/* Payloads the zero-copy fields (sealed, box) point into: big enough for
   1024 blocks of the largest box. */
#define BLOB_SIZE (AMI_MAX_BATCH_BLOCKS * AMI_MAX_SEALED)
static uint8_t *s_blob;
static uint8_t *s_frame;        /* AMI_MAX_FRAME */
static uint8_t *s_frame2;       /* AMI_MAX_FRAME */

/* Deterministic bytes (xorshift32), so failures reproduce. */
static void
s_bytes (uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p [i] = (uint8_t) x;
    }
}

/* An id of exactly `len` id-charset bytes: prefix, then digits of n, then
   padding. */
static void
s_id (char *out, size_t len, const char *prefix, unsigned n)
{
    char tmp [128];
    snprintf (tmp, sizeof tmp, "%s%u.%s", prefix, n, "abcdefghijklmnopqrstuvwxyz0123456789");
    memcpy (out, tmp, len);
    out [len] = 0;
}

static void
s_obis (uint8_t *o, int a, int b, int c, int d, int e, int f)
{
    o [0] = (uint8_t) a; o [1] = (uint8_t) b; o [2] = (uint8_t) c;
    o [3] = (uint8_t) d; o [4] = (uint8_t) e; o [5] = (uint8_t) f;
}

/* The 19 registers of DESIGN.md section 7 with values a real meter shows. */
static void
s_fill_registers (ami_reading_t *r, unsigned seed)
{
    static const struct { int c, d, e; int64_t v; int8_t scaler; uint8_t unit; int a, f; } regs [] = {
        {  1,  0, 0, 1780272000, 0,  7, 0, 255 },   /* clock, Unix s */
        {  1,  8, 0, 12345678,   0, 30, 1, 255 },   /* +A Wh */
        {  1,  8, 1,  8230452,   0, 30, 1, 255 },
        {  1,  8, 2,  4115226,   0, 30, 1, 255 },
        {  2,  8, 0,   734512,   0, 30, 1, 255 },   /* -A Wh */
        {  2,  8, 1,   734512,   0, 30, 1, 255 },
        {  2,  8, 2,        0,   0, 30, 1, 255 },
        {  1,  7, 0,     1840,   0, 27, 1, 255 },   /* +P W */
        {  2,  7, 0,        0,   0, 27, 1, 255 },
        { 32,  7, 0,     2312,  -1, 35, 1, 255 },   /* V L1..L3, 0.1 V */
        { 52,  7, 0,     2298,  -1, 35, 1, 255 },
        { 72,  7, 0,     2305,  -1, 35, 1, 255 },
        { 31,  7, 0,     3421,  -3, 33, 1, 255 },   /* A L1..L3, mA */
        { 51,  7, 0,     2990,  -3, 33, 1, 255 },
        { 71,  7, 0,     2140,  -3, 33, 1, 255 },
        { 13,  7, 0,      957,  -3, 255, 1, 255 },  /* power factor */
        { 14,  7, 0,     5001,  -2, 44, 1, 255 },   /* Hz */
        { 96,  1, 0, 40000042,   0, 255, 0, 255 },  /* serial number */
        { 97, 98, 0,        0,   0, 255, 0, 255 },  /* alarm register */
    };
    r->register_count = sizeof regs / sizeof regs [0];
    for (uint32_t i = 0; i < r->register_count; i++) {
        ami_register_t *g = &r->registers [i];
        s_obis (g->obis, regs [i].a, 0, regs [i].c, regs [i].d, regs [i].e, regs [i].f);
        g->value = regs [i].v + (int64_t) (seed % 7) * (regs [i].unit == 30);
        g->scaler = regs [i].scaler;
        g->unit = regs [i].unit;
        g->quality = AMI_Q_VALID;
    }
}

/* 32 registers at the extremes of every field. */
static void
s_fill_registers_max (ami_reading_t *r)
{
    r->register_count = AMI_MAX_REGISTERS;
    for (uint32_t i = 0; i < AMI_MAX_REGISTERS; i++) {
        ami_register_t *g = &r->registers [i];
        s_obis (g->obis, 255, 255, (int) i, 255, 255, 255);
        g->value = (i % 3 == 0) ? INT64_MIN : (i % 3 == 1) ? INT64_MAX : -1;
        g->scaler = (int8_t) ((i % 2) ? 9 : -9);
        g->unit = 255;
        g->quality = 0xff;
    }
}

static void
s_fill_reading (ami_reading_t *r, unsigned n, bool max)
{
    if (max) {
        s_id (r->meter_id, AMI_MAX_ID, "utility.north:MTR-", n);
        memset (r->request_id, 0xff, AMI_REQUEST_ID_SIZE);
        r->read_ms = UINT64_MAX;
        r->quality = UINT32_MAX;
        s_fill_registers_max (r);
    }
    else {
        snprintf (r->meter_id, sizeof r->meter_id, "MTR-%06u", n);
        s_bytes (r->request_id, AMI_REQUEST_ID_SIZE, n);
        r->read_ms = T0_MS + n * 1000;
        r->quality = AMI_Q_VALID;
        s_fill_registers (r, n);
    }
}

/* 256 bytes of UTF-8: 2-, 3- and 4-byte sequences and ASCII. */
static void
s_text_max (char *out)
{
    const char *piece = "Z\xc3\xa4hler \xe2\x82\xac \xf0\x9f\x94\x8c ";   /* Zähler € 🔌 */
    size_t plen = strlen (piece), n = 0;
    while (n + plen <= AMI_MAX_TEXT) {
        memcpy (out + n, piece, plen);
        n += plen;
    }
    while (n < AMI_MAX_TEXT)
        out [n++] = '.';
    out [n] = 0;
}

/*  Fill msg with a sample of `type`: variant 0 = typical, 1 = every list
    and string at its maximum and integers at their extremes, 2 = the other
    edge (empty optional strings/lists, refusal, no request id). */
static void
s_fill (ami_msg_t *m, int type, int variant)
{
    ami_msg_reset (m, (ami_msg_type_t) type);
    bool max = variant == 1;
    switch (type) {
        case AMI_MSG_HELLO: {
            ami_hello_t *h = &m->hello;
            if (max) {
                strcpy (h->role, "aggregator-relay");   /* 16 */
                s_id (h->node_id, AMI_MAX_ID, "fleet:", 1);
                h->meter_count = AMI_MAX_HELLO_METERS;
                for (unsigned i = 0; i < h->meter_count; i++)
                    s_id (h->meters [i], AMI_MAX_ID, "utility.north:MTR-", 100000 + i);
            }
            else {
                strcpy (h->role, "meter");
                strcpy (h->node_id, "FLEET-NORTH-01");
                h->meter_count = variant == 2 ? 0 : 3;
                for (unsigned i = 0; i < h->meter_count; i++)
                    snprintf (h->meters [i], sizeof h->meters [i], "MTR-%06u", i + 1);
            }
            break;
        }
        case AMI_MSG_HEALTH: {
            ami_health_t *h = &m->health;
            if (max) {
                strcpy (h->role, "ROLE_name.16-:ab");
                s_id (h->node_id, AMI_MAX_ID, "HE-", 1);
                h->state = AMI_STATE_DOWN;
                h->uptime_ms = UINT64_MAX;
                h->stat_count = AMI_MAX_STATS;
                for (unsigned i = 0; i < h->stat_count; i++) {
                    s_id (h->stats [i].name, AMI_MAX_ID, "stat.", i);
                    h->stats [i].value = UINT64_MAX - i;
                }
            }
            else {
                strcpy (h->role, "headend");
                strcpy (h->node_id, "HE-01");
                h->state = AMI_STATE_READY;
                h->uptime_ms = 86400123;
                static const char *names [] = { "aggregators", "batches.in", "reads.ok", "reads.failed" };
                h->stat_count = variant == 2 ? 0 : 4;
                for (unsigned i = 0; i < h->stat_count; i++) {
                    strcpy (h->stats [i].name, names [i]);
                    h->stats [i].value = (uint64_t) (i + 1) * 123457;
                }
            }
            break;
        }
        case AMI_MSG_EVENT: {
            ami_event_t *e = &m->event;
            if (max) {
                e->seq = UINT64_MAX;
                e->time_ms = UINT64_MAX;
                e->kind = AMI_EV_SECURITY;
                s_id (e->meter_id, AMI_MAX_ID, "utility.north:MTR-", 7);
                s_id (e->origin, AMI_MAX_ID, "mdms:", 1);
                s_text_max (e->text);
            }
            else {
                e->seq = 1001;
                e->time_ms = T0_MS + 3217;
                e->kind = variant == 2 ? AMI_EV_SERVICE_DOWN : AMI_EV_READ_DONE;
                strcpy (e->meter_id, variant == 2 ? "" : "MTR-000042");
                strcpy (e->origin, "mdms-1");
                strcpy (e->text, variant == 2 ? "" : "on-demand read completed in 3.2 ms");
            }
            break;
        }
        case AMI_MSG_ERROR: {
            ami_error_t *e = &m->error;
            if (max) {
                e->has_request_id = true;
                memset (e->request_id, 0xa5, AMI_REQUEST_ID_SIZE);
                e->code = UINT16_MAX;
                s_id (e->origin, AMI_MAX_ID, "HE-", 2);
                s_text_max (e->text);
            }
            else
            if (variant == 2) {
                e->has_request_id = false;
                e->code = AMI_E_DENIED;
                strcpy (e->origin, "mdms-1");
                strcpy (e->text, "");
            }
            else {
                e->has_request_id = true;
                s_bytes (e->request_id, AMI_REQUEST_ID_SIZE, 77);
                e->code = AMI_E_UNREACHABLE;
                strcpy (e->origin, "HE-02");
                strcpy (e->text, "meter MTR-000042 did not answer within 2000 ms");
            }
            break;
        }
        case AMI_MSG_READ_REQ: {
            ami_read_req_t *r = &m->read_req;
            if (max) {
                s_id (r->meter_id, AMI_MAX_ID, "utility.north:MTR-", 9);
                memset (r->request_id, 0xff, AMI_REQUEST_ID_SIZE);
                r->counter = UINT64_MAX;
                r->issued_ms = UINT64_MAX - 1;
                r->expires_ms = UINT64_MAX;
                r->profile_to_s = UINT64_MAX;
                r->profile_from_s = UINT64_MAX - AMI_PROFILE_RECOVER_MAX_S;
                memset (r->signature, 0xff, AMI_SIGNATURE_SIZE);
            }
            else {
                strcpy (r->meter_id, "MTR-000042");
                s_bytes (r->request_id, AMI_REQUEST_ID_SIZE, 42);
                r->counter = variant == 2 ? 1 : 17;
                r->issued_ms = T0_MS;
                r->expires_ms = T0_MS + 30000;      /* 30 s validity */
                if (variant == 2) {
                    /* SEC-INT-5: a recover, one day of intervals */
                    r->profile_from_s = T0_MS / 1000 - 86400;
                    r->profile_to_s = T0_MS / 1000;
                }
                s_bytes (r->signature, AMI_SIGNATURE_SIZE, 4242);
            }
            break;
        }
        case AMI_MSG_READ_RESP: {
            ami_read_resp_t *r = &m->read_resp;
            if (max) {
                s_id (r->meter_id, AMI_MAX_ID, "utility.north:MTR-", 9);
                memset (r->request_id, 0, AMI_REQUEST_ID_SIZE);
                r->status = AMI_OK;
                r->sealed = s_blob;
                r->sealed_size = AMI_MAX_SEALED;
                memset (r->signature, 0, AMI_SIGNATURE_SIZE);
            }
            else {
                strcpy (r->meter_id, "MTR-000042");
                s_bytes (r->request_id, AMI_REQUEST_ID_SIZE, 42);
                if (variant == 2) {
                    r->status = AMI_E_REPLAY;       /* meter refused */
                    r->sealed = NULL;
                    r->sealed_size = 0;
                }
                else {
                    r->status = AMI_OK;
                    r->sealed = s_blob + 1000;
                    r->sealed_size = 48 + 390;      /* seal overhead + READING */
                }
                s_bytes (r->signature, AMI_SIGNATURE_SIZE, 4343);
            }
            break;
        }
        case AMI_MSG_READING:
            s_fill_reading (&m->reading, 42, max);
            break;
        case AMI_MSG_PROFILE: {
            ami_profile_t *p = &m->profile;
            if (max) {
                s_id (p->meter_id, AMI_MAX_ID, "utility.north:MTR-", 5);
                p->seq = UINT64_MAX;
                p->made_ms = UINT64_MAX;
                p->record_count = AMI_MAX_PROFILE_RECORDS;
                for (unsigned i = 0; i < p->record_count; i++) {
                    p->records [i].end_s = UINT32_MAX - i;
                    p->records [i].import_wh = UINT64_MAX - i;
                    p->records [i].export_wh = UINT64_MAX;
                    p->records [i].status = UINT16_MAX;
                }
            }
            else {
                strcpy (p->meter_id, "MTR-000042");
                p->seq = 155;
                p->made_ms = T0_MS + 86400000;
                p->record_count = variant == 2 ? 1 : AMI_MAX_PROFILE_RECORDS;
                for (unsigned i = 0; i < p->record_count; i++) {
                    p->records [i].end_s = (uint32_t) (T0_MS / 1000 + (i + 1) * 900);
                    p->records [i].import_wh = 12345678 + i * 97;
                    p->records [i].export_wh = 734512 + (i > 40 && i < 70 ? (i - 40) * 55 : 0);
                    p->records [i].status = i == 50 ? AMI_Q_ESTIMATED : AMI_Q_VALID;
                }
            }
            break;
        }
        case AMI_MSG_BATCH: {
            ami_batch_t *b = &m->batch;
            if (max) {
                /* 1024 blocks of 512 bytes: the designed full batch */
                b->batch_id = UINT64_MAX;
                s_id (b->origin, AMI_MAX_ID, "AGG-", 3);
                b->block_count = AMI_MAX_BATCH_BLOCKS;
                for (unsigned i = 0; i < b->block_count; i++) {
                    s_id (b->blocks [i].meter_id, AMI_MAX_ID, "utility.north:MTR-", 100000 + i);
                    b->blocks [i].seq = UINT64_MAX - i;
                    b->blocks [i].box = s_blob + (size_t) i * 512;
                    b->blocks [i].box_size = 512;
                }
            }
            else {
                b->batch_id = 90210;
                strcpy (b->origin, "AGG-0003");
                b->block_count = variant == 2 ? 1 : 3;
                for (unsigned i = 0; i < b->block_count; i++) {
                    snprintf (b->blocks [i].meter_id, sizeof b->blocks [i].meter_id, "MTR-%06u", i + 1);
                    b->blocks [i].seq = 155 + i;
                    b->blocks [i].box = s_blob + i * 2000;
                    b->blocks [i].box_size = variant == 2 ? 1 : 40 + 96 * 16;
                }
            }
            break;
        }
        case AMI_MSG_BATCH_ACK: {
            ami_batch_ack_t *a = &m->batch_ack;
            a->batch_id = max ? UINT64_MAX : 90210;
            a->status = max ? UINT16_MAX : variant == 2 ? AMI_E_STORAGE : AMI_OK;
            a->credit = max ? UINT32_MAX : 4;
            break;
        }
        case AMI_MSG_API_REQ: {
            ami_api_req_t *a = &m->api_req;
            s_bytes (a->corr, AMI_REQUEST_ID_SIZE, 99);
            if (max) {
                a->action = AMI_ACT_VERIFY;
                s_id (a->meter_id, AMI_MAX_ID, "utility.north:MTR-", 1);
                a->from_ms = UINT64_MAX;
                a->to_ms = UINT64_MAX;
                a->limit = UINT32_MAX;
                a->timeout_ms = UINT32_MAX;
            }
            else
            if (variant == 2) {
                a->action = AMI_ACT_STATUS;     /* no meter, all defaults */
            }
            else {
                a->action = AMI_ACT_READ;
                strcpy (a->meter_id, "MTR-000042");
                a->timeout_ms = 5000;
            }
            break;
        }
        case AMI_MSG_API_READINGS: {
            ami_api_readings_t *a = &m->api_readings;
            s_bytes (a->corr, AMI_REQUEST_ID_SIZE, 100);
            a->more = variant != 2;
            a->count = max ? AMI_MAX_API_READINGS : variant == 2 ? 0 : 2;
            for (unsigned i = 0; i < a->count; i++) {
                ami_stored_reading_t *s = &a->readings [i];
                s_fill_reading (&s->reading, i + 1, max);
                s->requested_ms = max ? UINT64_MAX : T0_MS + i * 60000;
                s->stored_ms = max ? UINT64_MAX : T0_MS + i * 60000 + 4;
            }
            break;
        }
        case AMI_MSG_API_METERS: {
            ami_api_meters_t *a = &m->api_meters;
            s_bytes (a->corr, AMI_REQUEST_ID_SIZE, 101);
            a->more = max;
            a->count = max ? AMI_MAX_API_METERS : variant == 2 ? 0 : 3;
            for (unsigned i = 0; i < a->count; i++) {
                ami_meter_row_t *r = &a->meters [i];
                if (max) {
                    s_id (r->meter_id, AMI_MAX_ID, "utility.north:MTR-", i);
                    s_id (r->aggregator_id, AMI_MAX_ID, "utility.north:AGG-", i / 64);
                    r->last_read_ms = UINT64_MAX;
                    r->state = AMI_STATE_MAX;
                }
                else {
                    snprintf (r->meter_id, sizeof r->meter_id, "MTR-%06u", i + 1);
                    strcpy (r->aggregator_id, "AGG-0001");
                    r->last_read_ms = i == 2 ? 0 : T0_MS - i * 3600000;
                    r->state = i == 2 ? AMI_STATE_DOWN : AMI_STATE_READY;
                }
            }
            break;
        }
        case AMI_MSG_API_STATUS: {
            ami_api_status_t *a = &m->api_status;
            s_bytes (a->corr, AMI_REQUEST_ID_SIZE, 102);
            static const char *roles [] = { "mdms", "broker", "headend", "headend", "aggregator" };
            static const char *nodes [] = { "mdms-1", "broker-1", "HE-01", "HE-02", "AGG-0001" };
            a->count = max ? AMI_MAX_API_SERVICES : variant == 2 ? 0 : 5;
            a->more = max;          /* a full page: more follow */
            for (unsigned i = 0; i < a->count; i++) {
                ami_service_row_t *r = &a->services [i];
                if (max) {
                    strcpy (r->role, "ROLE_name.16-:ab");
                    s_id (r->node_id, AMI_MAX_ID, "node-", i);
                    r->state = (uint8_t) (i % (AMI_STATE_MAX + 1));
                    r->uptime_ms = UINT64_MAX;
                    r->age_ms = UINT64_MAX - i;
                    r->stat_count = AMI_MAX_STATS;
                    for (unsigned k = 0; k < AMI_MAX_STATS; k++) {
                        s_id (r->stats [k].name, AMI_MAX_ID, "stat_name_", k);
                        r->stats [k].value = UINT64_MAX - k;
                    }
                }
                else {
                    strcpy (r->role, roles [i]);
                    strcpy (r->node_id, nodes [i]);
                    r->state = i == 3 ? AMI_STATE_DEGRADED : AMI_STATE_READY;
                    r->uptime_ms = 3600000 + i;
                    r->age_ms = 250 + i * 100;
                    r->stat_count = i == 4 ? 0 : 2;
                    strcpy (r->stats [0].name, "blocks");
                    r->stats [0].value = 1000 + i;
                    strcpy (r->stats [1].name, "dropped");
                    r->stats [1].value = i;
                }
            }
            break;
        }
        case AMI_MSG_API_INTERVALS: {
            ami_api_intervals_t *a = &m->api_intervals;
            s_bytes (a->corr, AMI_REQUEST_ID_SIZE, 103);
            if (max)
                s_id (a->meter_id, AMI_MAX_ID, "utility.north:MTR-", 1);
            else
                strcpy (a->meter_id, "MTR-000042");
            a->more = max;
            a->count = max ? AMI_MAX_API_INTERVALS : variant == 2 ? 0 : 96;
            for (unsigned i = 0; i < a->count; i++) {
                a->records [i].end_s = max ? UINT32_MAX - i : (uint32_t) (T0_MS / 1000 + (i + 1) * 900);
                a->records [i].import_wh = max ? UINT64_MAX : 12345678 + i * 97;
                a->records [i].export_wh = max ? UINT64_MAX - i : 734512;
                a->records [i].status = max ? UINT16_MAX : AMI_Q_VALID;
            }
            break;
        }
        case AMI_MSG_API_AUDIT: {
            ami_api_audit_t *a = &m->api_audit;
            s_bytes (a->corr, AMI_REQUEST_ID_SIZE, 104);
            a->more = false;
            a->count = max ? AMI_MAX_API_AUDIT : variant == 2 ? 0 : 3;
            for (unsigned i = 0; i < a->count; i++) {
                ami_audit_row_t *r = &a->entries [i];
                if (max) {
                    r->seq = UINT64_MAX - i;
                    r->time_ms = UINT64_MAX;
                    s_id (r->operator_id, AMI_MAX_ID, "operator.", i);
                    strcpy (r->role, "ROLE_name.16-:ab");
                    r->action = AMI_ACT_MAX;
                    s_id (r->meter_id, AMI_MAX_ID, "utility.north:MTR-", i);
                    memset (r->corr, 0xff, AMI_REQUEST_ID_SIZE);
                    r->result = UINT16_MAX;
                    memset (r->hash, 0xff, AMI_HASH_SIZE);
                }
                else {
                    r->seq = 1 + i;
                    r->time_ms = T0_MS + i * 1000;
                    strcpy (r->operator_id, i == 1 ? "bob" : "alice");
                    strcpy (r->role, i == 1 ? "VIEWER" : "OPERATOR");
                    r->action = i == 2 ? AMI_ACT_STATUS : AMI_ACT_READ;
                    strcpy (r->meter_id, i == 2 ? "" : "MTR-000042");
                    s_bytes (r->corr, AMI_REQUEST_ID_SIZE, 200 + i);
                    r->result = i == 1 ? AMI_E_DENIED : AMI_OK;
                    s_bytes (r->hash, AMI_HASH_SIZE, 300 + i);
                }
            }
            break;
        }
        case AMI_MSG_API_CUSTOMER: {
            ami_api_customer_t *c = &m->api_customer;
            s_bytes (c->corr, AMI_REQUEST_ID_SIZE, 105);
            if (max) {
                s_id (c->meter_id, AMI_MAX_ID, "utility.north:MTR-", 7);
                /* exactly 64 bytes of multi-byte UTF-8:
                   12 x "Zoë " (5 bytes each) + "Øst" (4) */
                c->name [0] = 0;
                for (int i = 0; i < 12; i++)
                    strcat (c->name, "Zo\xc3\xab ");
                strcat (c->name, "\xc3\x98st");
                assert_int_equal (strlen (c->name), AMI_MAX_CUSTOMER_NAME);
                s_text_max (c->address);
                s_id (c->account, AMI_MAX_ID, "ACC-", 99999999);
            }
            else {
                strcpy (c->meter_id, "MTR-000042");
                strcpy (c->name, variant == 2 ? "X" : "Ren\xc3\xa9" "e Hoffmann");
                strcpy (c->address, variant == 2 ? "" : "Lindenstra\xc3\x9f" "e 12, 80331 M\xc3\xbcnchen");
                strcpy (c->account, variant == 2 ? "A" : "ACC-00000042");
            }
            break;
        }
        case AMI_MSG_API_VERIFY: {
            ami_api_verify_t *v = &m->api_verify;
            s_bytes (v->corr, AMI_REQUEST_ID_SIZE, 106);
            if (max) {
                v->checked = UINT64_MAX;
                v->failed = UINT64_MAX;
                v->count = AMI_MAX_API_FAILURES;
                for (unsigned i = 0; i < v->count; i++) {
                    v->failures [i].ref = UINT64_MAX - i;
                    v->failures [i].code = i % 2 ? UINT16_MAX : AMI_E_BAD_SIGNATURE;
                }
            }
            else
            if (variant == 2) {
                v->checked = 0;         /* nothing stored: nothing failed */
                v->failed = 0;
                v->count = 0;
            }
            else {
                /* 1000 readings, 3 failed and all listed */
                v->checked = 1000;
                v->failed = 3;
                v->count = 3;
                static const uint16_t codes [] = { AMI_E_BAD_SIGNATURE, AMI_E_DECRYPT, AMI_E_RANGE };
                for (unsigned i = 0; i < v->count; i++) {
                    v->failures [i].ref = T0_MS + i * 900000;
                    v->failures [i].code = codes [i];
                }
            }
            break;
        }
        default:
            fail_msg ("no sample for type %d", type);
    }
}

static const int s_all_types [] = {
    AMI_MSG_HELLO, AMI_MSG_HEALTH, AMI_MSG_EVENT, AMI_MSG_ERROR,
    AMI_MSG_READ_REQ, AMI_MSG_READ_RESP, AMI_MSG_READING, AMI_MSG_PROFILE,
    AMI_MSG_BATCH, AMI_MSG_BATCH_ACK, AMI_MSG_API_REQ, AMI_MSG_API_READINGS,
    AMI_MSG_API_METERS, AMI_MSG_API_STATUS, AMI_MSG_API_INTERVALS, AMI_MSG_API_AUDIT,
    AMI_MSG_API_CUSTOMER, AMI_MSG_API_VERIFY
};
#define N_TYPES (sizeof s_all_types / sizeof s_all_types [0])

/* ---------------------------------------------------------------------- */
/*  Field-by-field equality                                                */

static void
s_eq_registers (const ami_reading_t *a, const ami_reading_t *b)
{
    assert_int_equal (a->register_count, b->register_count);
    for (uint32_t i = 0; i < a->register_count; i++) {
        const ami_register_t *x = &a->registers [i], *y = &b->registers [i];
        assert_memory_equal (x->obis, y->obis, AMI_OBIS_SIZE);
        assert_true (x->value == y->value);
        assert_int_equal (x->scaler, y->scaler);
        assert_int_equal (x->unit, y->unit);
        assert_int_equal (x->quality, y->quality);
    }
}

static void
s_eq_reading (const ami_reading_t *a, const ami_reading_t *b)
{
    assert_string_equal (a->meter_id, b->meter_id);
    assert_memory_equal (a->request_id, b->request_id, AMI_REQUEST_ID_SIZE);
    assert_true (a->read_ms == b->read_ms);
    assert_int_equal (a->quality, b->quality);
    s_eq_registers (a, b);
}

static void
s_eq_interval (const ami_interval_t *x, const ami_interval_t *y)
{
    assert_int_equal (x->end_s, y->end_s);
    assert_true (x->import_wh == y->import_wh);
    assert_true (x->export_wh == y->export_wh);
    assert_int_equal (x->status, y->status);
}

static void
s_eq_msg (const ami_msg_t *a, const ami_msg_t *b)
{
    assert_int_equal (a->type, b->type);
    switch (a->type) {
        case AMI_MSG_HELLO:
            assert_string_equal (a->hello.role, b->hello.role);
            assert_string_equal (a->hello.node_id, b->hello.node_id);
            assert_int_equal (a->hello.meter_count, b->hello.meter_count);
            for (uint32_t i = 0; i < a->hello.meter_count; i++)
                assert_string_equal (a->hello.meters [i], b->hello.meters [i]);
            break;
        case AMI_MSG_HEALTH:
            assert_string_equal (a->health.role, b->health.role);
            assert_string_equal (a->health.node_id, b->health.node_id);
            assert_int_equal (a->health.state, b->health.state);
            assert_true (a->health.uptime_ms == b->health.uptime_ms);
            assert_int_equal (a->health.stat_count, b->health.stat_count);
            for (uint32_t i = 0; i < a->health.stat_count; i++) {
                assert_string_equal (a->health.stats [i].name, b->health.stats [i].name);
                assert_true (a->health.stats [i].value == b->health.stats [i].value);
            }
            break;
        case AMI_MSG_EVENT:
            assert_true (a->event.seq == b->event.seq);
            assert_true (a->event.time_ms == b->event.time_ms);
            assert_int_equal (a->event.kind, b->event.kind);
            assert_string_equal (a->event.meter_id, b->event.meter_id);
            assert_string_equal (a->event.origin, b->event.origin);
            assert_string_equal (a->event.text, b->event.text);
            break;
        case AMI_MSG_ERROR:
            assert_int_equal (a->error.has_request_id, b->error.has_request_id);
            if (a->error.has_request_id)
                assert_memory_equal (a->error.request_id, b->error.request_id, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->error.code, b->error.code);
            assert_string_equal (a->error.origin, b->error.origin);
            assert_string_equal (a->error.text, b->error.text);
            break;
        case AMI_MSG_READ_REQ:
            assert_string_equal (a->read_req.meter_id, b->read_req.meter_id);
            assert_memory_equal (a->read_req.request_id, b->read_req.request_id, AMI_REQUEST_ID_SIZE);
            assert_true (a->read_req.counter == b->read_req.counter);
            assert_true (a->read_req.issued_ms == b->read_req.issued_ms);
            assert_true (a->read_req.expires_ms == b->read_req.expires_ms);
            assert_true (a->read_req.profile_from_s == b->read_req.profile_from_s);
            assert_true (a->read_req.profile_to_s == b->read_req.profile_to_s);
            assert_memory_equal (a->read_req.signature, b->read_req.signature, AMI_SIGNATURE_SIZE);
            break;
        case AMI_MSG_READ_RESP:
            assert_string_equal (a->read_resp.meter_id, b->read_resp.meter_id);
            assert_memory_equal (a->read_resp.request_id, b->read_resp.request_id, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->read_resp.status, b->read_resp.status);
            assert_int_equal (a->read_resp.sealed_size, b->read_resp.sealed_size);
            if (a->read_resp.sealed_size)
                assert_memory_equal (a->read_resp.sealed, b->read_resp.sealed, a->read_resp.sealed_size);
            assert_memory_equal (a->read_resp.signature, b->read_resp.signature, AMI_SIGNATURE_SIZE);
            break;
        case AMI_MSG_READING:
            s_eq_reading (&a->reading, &b->reading);
            break;
        case AMI_MSG_PROFILE:
            assert_string_equal (a->profile.meter_id, b->profile.meter_id);
            assert_true (a->profile.seq == b->profile.seq);
            assert_true (a->profile.made_ms == b->profile.made_ms);
            assert_int_equal (a->profile.record_count, b->profile.record_count);
            for (uint32_t i = 0; i < a->profile.record_count; i++)
                s_eq_interval (&a->profile.records [i], &b->profile.records [i]);
            break;
        case AMI_MSG_BATCH:
            assert_true (a->batch.batch_id == b->batch.batch_id);
            assert_string_equal (a->batch.origin, b->batch.origin);
            assert_int_equal (a->batch.block_count, b->batch.block_count);
            for (uint32_t i = 0; i < a->batch.block_count; i++) {
                const ami_block_t *x = &a->batch.blocks [i], *y = &b->batch.blocks [i];
                assert_string_equal (x->meter_id, y->meter_id);
                assert_true (x->seq == y->seq);
                assert_int_equal (x->box_size, y->box_size);
                assert_memory_equal (x->box, y->box, x->box_size);
            }
            break;
        case AMI_MSG_BATCH_ACK:
            assert_true (a->batch_ack.batch_id == b->batch_ack.batch_id);
            assert_int_equal (a->batch_ack.status, b->batch_ack.status);
            assert_int_equal (a->batch_ack.credit, b->batch_ack.credit);
            break;
        case AMI_MSG_API_REQ:
            assert_memory_equal (a->api_req.corr, b->api_req.corr, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->api_req.action, b->api_req.action);
            assert_string_equal (a->api_req.meter_id, b->api_req.meter_id);
            assert_true (a->api_req.from_ms == b->api_req.from_ms);
            assert_true (a->api_req.to_ms == b->api_req.to_ms);
            assert_int_equal (a->api_req.limit, b->api_req.limit);
            assert_int_equal (a->api_req.timeout_ms, b->api_req.timeout_ms);
            break;
        case AMI_MSG_API_READINGS:
            assert_memory_equal (a->api_readings.corr, b->api_readings.corr, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->api_readings.more, b->api_readings.more);
            assert_int_equal (a->api_readings.count, b->api_readings.count);
            for (uint32_t i = 0; i < a->api_readings.count; i++) {
                const ami_stored_reading_t *x = &a->api_readings.readings [i];
                const ami_stored_reading_t *y = &b->api_readings.readings [i];
                s_eq_reading (&x->reading, &y->reading);
                assert_true (x->requested_ms == y->requested_ms);
                assert_true (x->stored_ms == y->stored_ms);
            }
            break;
        case AMI_MSG_API_METERS:
            assert_memory_equal (a->api_meters.corr, b->api_meters.corr, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->api_meters.more, b->api_meters.more);
            assert_int_equal (a->api_meters.count, b->api_meters.count);
            for (uint32_t i = 0; i < a->api_meters.count; i++) {
                const ami_meter_row_t *x = &a->api_meters.meters [i], *y = &b->api_meters.meters [i];
                assert_string_equal (x->meter_id, y->meter_id);
                assert_string_equal (x->aggregator_id, y->aggregator_id);
                assert_true (x->last_read_ms == y->last_read_ms);
                assert_int_equal (x->state, y->state);
            }
            break;
        case AMI_MSG_API_STATUS:
            assert_memory_equal (a->api_status.corr, b->api_status.corr, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->api_status.more, b->api_status.more);
            assert_int_equal (a->api_status.count, b->api_status.count);
            for (uint32_t i = 0; i < a->api_status.count; i++) {
                const ami_service_row_t *x = &a->api_status.services [i], *y = &b->api_status.services [i];
                assert_string_equal (x->role, y->role);
                assert_string_equal (x->node_id, y->node_id);
                assert_int_equal (x->state, y->state);
                assert_true (x->uptime_ms == y->uptime_ms);
                assert_true (x->age_ms == y->age_ms);
                assert_int_equal (x->stat_count, y->stat_count);
                for (uint32_t k = 0; k < x->stat_count; k++) {
                    assert_string_equal (x->stats [k].name, y->stats [k].name);
                    assert_true (x->stats [k].value == y->stats [k].value);
                }
            }
            break;
        case AMI_MSG_API_INTERVALS:
            assert_memory_equal (a->api_intervals.corr, b->api_intervals.corr, AMI_REQUEST_ID_SIZE);
            assert_string_equal (a->api_intervals.meter_id, b->api_intervals.meter_id);
            assert_int_equal (a->api_intervals.more, b->api_intervals.more);
            assert_int_equal (a->api_intervals.count, b->api_intervals.count);
            for (uint32_t i = 0; i < a->api_intervals.count; i++)
                s_eq_interval (&a->api_intervals.records [i], &b->api_intervals.records [i]);
            break;
        case AMI_MSG_API_AUDIT:
            assert_memory_equal (a->api_audit.corr, b->api_audit.corr, AMI_REQUEST_ID_SIZE);
            assert_int_equal (a->api_audit.more, b->api_audit.more);
            assert_int_equal (a->api_audit.count, b->api_audit.count);
            for (uint32_t i = 0; i < a->api_audit.count; i++) {
                const ami_audit_row_t *x = &a->api_audit.entries [i], *y = &b->api_audit.entries [i];
                assert_true (x->seq == y->seq);
                assert_true (x->time_ms == y->time_ms);
                assert_string_equal (x->operator_id, y->operator_id);
                assert_string_equal (x->role, y->role);
                assert_int_equal (x->action, y->action);
                assert_string_equal (x->meter_id, y->meter_id);
                assert_memory_equal (x->corr, y->corr, AMI_REQUEST_ID_SIZE);
                assert_int_equal (x->result, y->result);
                assert_memory_equal (x->hash, y->hash, AMI_HASH_SIZE);
            }
            break;
        case AMI_MSG_API_CUSTOMER:
            assert_memory_equal (a->api_customer.corr, b->api_customer.corr, AMI_REQUEST_ID_SIZE);
            assert_string_equal (a->api_customer.meter_id, b->api_customer.meter_id);
            assert_string_equal (a->api_customer.name, b->api_customer.name);
            assert_string_equal (a->api_customer.address, b->api_customer.address);
            assert_string_equal (a->api_customer.account, b->api_customer.account);
            break;
        case AMI_MSG_API_VERIFY:
            assert_memory_equal (a->api_verify.corr, b->api_verify.corr, AMI_REQUEST_ID_SIZE);
            assert_true (a->api_verify.checked == b->api_verify.checked);
            assert_true (a->api_verify.failed == b->api_verify.failed);
            assert_int_equal (a->api_verify.count, b->api_verify.count);
            for (uint32_t i = 0; i < a->api_verify.count; i++) {
                assert_true (a->api_verify.failures [i].ref == b->api_verify.failures [i].ref);
                assert_int_equal (a->api_verify.failures [i].code, b->api_verify.failures [i].code);
            }
            break;
        default:
            fail_msg ("unexpected type %d", a->type);
    }
}

/* ---------------------------------------------------------------------- */
/*  Fixtures                                                               */

typedef struct {
    ami_msg_t *a;
    ami_msg_t *b;
} fx_t;

static int
s_setup (void **state)
{
    fx_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    fx->a = ami_msg_new ();
    fx->b = ami_msg_new ();
    if (!fx->a || !fx->b)
        return -1;
    *state = fx;
    return 0;
}

static int
s_teardown (void **state)
{
    fx_t *fx = *state;
    ami_msg_destroy (&fx->a);
    ami_msg_destroy (&fx->b);
    free (fx);
    return 0;
}

/* Encode a, decode into b, compare, re-encode b: same bytes. Returns len. */
static size_t
s_roundtrip (fx_t *fx)
{
    size_t len = 0, len2 = 0;
    int rc = ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len);
    assert_int_equal (rc, AMI_OK);
    assert_true (len > 0 && len <= AMI_MAX_FRAME);
    assert_int_equal (ami_msg_peek_type (s_frame, len), fx->a->type);
    rc = ami_msg_decode (fx->b, s_frame, len);
    assert_int_equal (rc, AMI_OK);
    s_eq_msg (fx->a, fx->b);
    rc = ami_msg_encode (fx->b, s_frame2, AMI_MAX_FRAME, &len2);
    assert_int_equal (rc, AMI_OK);
    assert_int_equal (len, len2);
    assert_memory_equal (s_frame, s_frame2, len);
    return len;
}

/* ---------------------------------------------------------------------- */
/*  Round trips                                                            */

static void
test_roundtrip_every_type (void **state)
{
    fx_t *fx = *state;
    for (size_t t = 0; t < N_TYPES; t++)
        for (int variant = 0; variant < 3; variant++) {
            s_fill (fx->a, s_all_types [t], variant);
            size_t len = s_roundtrip (fx);
            /* typical frames stay small; print_message helps size budgets */
            if (variant == 1)
                print_message ("%-14s max frame %zu bytes\n",
                               ami_msg_type_name (s_all_types [t]), len);
        }
}

static void
test_roundtrip_zero_copy (void **state)
{
    fx_t *fx = *state;
    size_t len;
    /* READ_RESP.sealed points into the decoded frame, not into a copy */
    s_fill (fx->a, AMI_MSG_READ_RESP, 0);
    len = s_roundtrip (fx);
    const uint8_t *p = fx->b->read_resp.sealed;
    assert_true (p >= s_frame && p + fx->b->read_resp.sealed_size <= s_frame + len);
    assert_memory_equal (p, s_blob + 1000, fx->b->read_resp.sealed_size);

    /* every BATCH block's box too, and in wire order */
    s_fill (fx->a, AMI_MSG_BATCH, 1);
    len = s_roundtrip (fx);
    const uint8_t *prev = s_frame;
    for (uint32_t i = 0; i < fx->b->batch.block_count; i++) {
        const ami_block_t *b = &fx->b->batch.blocks [i];
        assert_true (b->box > prev && b->box + b->box_size <= s_frame + len);
        prev = b->box;
    }

    /* strings are copies: clobbering the frame leaves them intact */
    s_fill (fx->a, AMI_MSG_HELLO, 0);
    len = s_roundtrip (fx);
    memset (s_frame, 0, len);
    assert_string_equal (fx->b->hello.meters [2], "MTR-000003");
    assert_string_equal (fx->b->hello.node_id, "FLEET-NORTH-01");
}

static void
test_roundtrip_realistic_sizes (void **state)
{
    fx_t *fx = *state;
    size_t len;
    /* a 19-register reading is well under the 1 KiB the header promises */
    s_fill (fx->a, AMI_MSG_READING, 0);
    len = s_roundtrip (fx);
    assert_true (len < 1024);
    s_fill (fx->a, AMI_MSG_READING, 1);
    len = s_roundtrip (fx);
    assert_true (len < 1024);
    /* a full-day PROFILE fits the 3 KiB sealed budget */
    s_fill (fx->a, AMI_MSG_PROFILE, 1);
    len = s_roundtrip (fx);
    assert_true (len < 3 * 1024);
    /* the designed full BATCH (1024 x 512 B) fits a frame "with room" */
    s_fill (fx->a, AMI_MSG_BATCH, 1);
    len = s_roundtrip (fx);
    assert_true (len < AMI_MAX_FRAME * 3 / 4);
}

/* A BATCH of exactly AMI_MAX_FRAME bytes encodes and decodes; one more
   byte of payload is BUFSIZE on encode whatever the caller's cap. */
static void
test_frame_size_boundary (void **state)
{
    fx_t *fx = *state;
    size_t len = 0;
    s_fill (fx->a, AMI_MSG_BATCH, 1);
    ami_batch_t *b = &fx->a->batch;
    for (uint32_t i = 0; i < b->block_count; i++)
        b->blocks [i].box_size = 900;
    assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
    /* grow the last blocks until the frame is exactly AMI_MAX_FRAME; bin16
       headers (3 bytes) are used from 256 to 65535 bytes, so each extra
       payload byte is one frame byte */
    size_t missing = AMI_MAX_FRAME - len;
    for (uint32_t i = b->block_count; missing && i-- > 0; ) {
        size_t add = missing < (size_t) (AMI_MAX_SEALED - 900) ? missing : (size_t) (AMI_MAX_SEALED - 900);
        b->blocks [i].box_size += add;
        missing -= add;
    }
    assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
    assert_int_equal (len, AMI_MAX_FRAME);
    assert_int_equal (ami_msg_decode (fx->b, s_frame, len), AMI_OK);
    s_eq_msg (fx->a, fx->b);

    b->blocks [0].box_size += 1;
    size_t untouched = 12345;
    uint8_t *big = malloc (2 * AMI_MAX_FRAME);
    assert_non_null (big);
    assert_int_equal (ami_msg_encode (fx->a, big, 2 * AMI_MAX_FRAME, &untouched), AMI_E_BUFSIZE);
    assert_int_equal (untouched, 12345);
    free (big);

    /* 1024 maximum boxes (4 MiB) can never fit */
    for (uint32_t i = 0; i < b->block_count; i++)
        b->blocks [i].box_size = AMI_MAX_SEALED;
    assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_E_BUFSIZE);
}

/* ---------------------------------------------------------------------- */
/*  The encoder refuses what the decoder would refuse                      */

typedef struct {
    int type;
    int variant;
    int mutation;
    int expect;
    const char *what;
} refusal_t;

enum {
    M_ROLE_EMPTY = 1, M_ROLE_LONG, M_ROLE_CHARSET, M_NODE_EMPTY, M_NODE_UNTERMINATED,
    M_HELLO_COUNT, M_HELLO_METER_BAD, M_HELLO_METER_EMPTY,
    M_STATE, M_STATS_COUNT, M_STAT_NAME,
    M_KIND_ZERO, M_KIND_HIGH, M_TEXT_UTF8, M_TEXT_OVERLONG, M_TEXT_SURROGATE, M_TEXT_LONG,
    M_EVENT_METER_BAD, M_ORIGIN_EMPTY,
    M_ERROR_CODE_ZERO, M_ERROR_TEXT_CTRL_OK,
    M_COUNTER_ZERO, M_EXPIRES_EQ, M_EXPIRES_LT, M_REQ_METER_LONG,
    M_PROFILE_FROM_ONLY, M_PROFILE_EMPTY, M_PROFILE_REVERSED, M_PROFILE_TOO_LONG,
    M_PROFILE_LONGEST,
    M_SEALED_LONG, M_SEALED_NULL, M_SEALED_WITH_STATUS, M_SEALED_EMPTY_OK,
    M_REGS_ZERO, M_REGS_HIGH, M_SCALER_HIGH, M_SCALER_LOW,
    M_PROFILE_SEQ, M_RECORDS_ZERO, M_RECORDS_HIGH,
    M_BLOCKS_ZERO, M_BLOCKS_HIGH, M_BOX_EMPTY, M_BOX_LONG, M_BLOCK_SEQ, M_BLOCK_METER,
    M_ACTION_ZERO, M_ACTION_HIGH, M_API_METER_BAD,
    M_READINGS_COUNT, M_READINGS_REGS, M_METERS_COUNT, M_METERS_STATE, M_METERS_AGG_EMPTY,
    M_STATUS_COUNT, M_STATUS_ROLE_LONG, M_INTERVALS_COUNT, M_INTERVALS_METER_EMPTY,
    M_AUDIT_COUNT, M_AUDIT_ACTION, M_AUDIT_SEQ, M_AUDIT_OPERATOR,
    M_CUST_METER_EMPTY, M_CUST_NAME_EMPTY, M_CUST_NAME_LONG, M_CUST_NAME_UTF8,
    M_CUST_ADDR_LONG, M_CUST_ADDR_UTF8, M_CUST_ADDR_EMPTY_OK, M_CUST_ACCOUNT_EMPTY,
    M_CUST_ACCOUNT_CHARSET,
    M_VERIFY_COUNT, M_VERIFY_FAILED_LOW, M_VERIFY_CODE_ZERO, M_VERIFY_MORE_FAILED_OK,
    M_TYPE_UNKNOWN, M_TYPE_ZERO
};

static void
s_mutate (ami_msg_t *m, int mutation)
{
    switch (mutation) {
        case M_ROLE_EMPTY:        m->hello.role [0] = 0; break;
        case M_ROLE_LONG:         memset (m->hello.role, 'r', AMI_MAX_ROLE + 1); break;  /* no NUL */
        case M_ROLE_CHARSET:      strcpy (m->hello.role, "me ter"); break;
        case M_NODE_EMPTY:        m->hello.node_id [0] = 0; break;
        case M_NODE_UNTERMINATED: memset (m->hello.node_id, 'n', AMI_MAX_ID + 1); break;
        case M_HELLO_COUNT:       m->hello.meter_count = AMI_MAX_HELLO_METERS + 1; break;
        case M_HELLO_METER_BAD:   strcpy (m->hello.meters [1], "MTR/000002"); break;
        case M_HELLO_METER_EMPTY: m->hello.meters [2][0] = 0; break;
        case M_STATE:             m->health.state = AMI_STATE_MAX + 1; break;
        case M_STATS_COUNT:       m->health.stat_count = AMI_MAX_STATS + 1; break;
        case M_STAT_NAME:         strcpy (m->health.stats [0].name, "reads ok"); break;
        case M_KIND_ZERO:         m->event.kind = 0; break;
        case M_KIND_HIGH:         m->event.kind = AMI_EV_MAX + 1; break;
        case M_TEXT_UTF8:         strcpy (m->event.text, "bad \xff byte"); break;
        case M_TEXT_OVERLONG:     strcpy (m->event.text, "overlong \xc0\xaf slash"); break;
        case M_TEXT_SURROGATE:    strcpy (m->event.text, "surrogate \xed\xa0\x80"); break;
        case M_TEXT_LONG:         memset (m->event.text, 'x', AMI_MAX_TEXT + 1); break;
        case M_EVENT_METER_BAD:   strcpy (m->event.meter_id, "MTR 42"); break;
        case M_ORIGIN_EMPTY:      m->event.origin [0] = 0; break;
        case M_ERROR_CODE_ZERO:   m->error.code = AMI_OK; break;
        case M_ERROR_TEXT_CTRL_OK: strcpy (m->error.text, "tab\tand\nnewline are text"); break;
        case M_COUNTER_ZERO:      m->read_req.counter = 0; break;
        case M_PROFILE_FROM_ONLY: m->read_req.profile_from_s = 1000; m->read_req.profile_to_s = 0; break;
        case M_PROFILE_EMPTY:     m->read_req.profile_from_s = m->read_req.profile_to_s = 1000; break;
        case M_PROFILE_REVERSED:  m->read_req.profile_from_s = 2000; m->read_req.profile_to_s = 1000; break;
        case M_PROFILE_TOO_LONG:  m->read_req.profile_from_s = 1000;
                                  m->read_req.profile_to_s = 1000 + AMI_PROFILE_RECOVER_MAX_S + 1; break;
        case M_PROFILE_LONGEST:   m->read_req.profile_from_s = 1000;
                                  m->read_req.profile_to_s = 1000 + AMI_PROFILE_RECOVER_MAX_S; break;
        case M_EXPIRES_EQ:        m->read_req.expires_ms = m->read_req.issued_ms; break;
        case M_EXPIRES_LT:        m->read_req.expires_ms = m->read_req.issued_ms - 1; break;
        case M_REQ_METER_LONG:    memset (m->read_req.meter_id, 'M', AMI_MAX_ID + 1); break;
        case M_SEALED_LONG:       m->read_resp.sealed_size = AMI_MAX_SEALED + 1; break;
        case M_SEALED_NULL:       m->read_resp.sealed = NULL; break;
        case M_SEALED_WITH_STATUS: m->read_resp.status = AMI_E_REPLAY; break;
        case M_SEALED_EMPTY_OK:   m->read_resp.sealed_size = 0; break;
        case M_REGS_ZERO:         m->reading.register_count = 0; break;
        case M_REGS_HIGH:         m->reading.register_count = AMI_MAX_REGISTERS + 1; break;
        case M_SCALER_HIGH:       m->reading.registers [3].scaler = 10; break;
        case M_SCALER_LOW:        m->reading.registers [3].scaler = -10; break;
        case M_PROFILE_SEQ:       m->profile.seq = 0; break;
        case M_RECORDS_ZERO:      m->profile.record_count = 0; break;
        case M_RECORDS_HIGH:      m->profile.record_count = AMI_MAX_PROFILE_RECORDS + 1; break;
        case M_BLOCKS_ZERO:       m->batch.block_count = 0; break;
        case M_BLOCKS_HIGH:       m->batch.block_count = AMI_MAX_BATCH_BLOCKS + 1; break;
        case M_BOX_EMPTY:         m->batch.blocks [1].box_size = 0; break;
        case M_BOX_LONG:          m->batch.blocks [1].box_size = AMI_MAX_SEALED + 1; break;
        case M_BLOCK_SEQ:         m->batch.blocks [2].seq = 0; break;
        case M_BLOCK_METER:       strcpy (m->batch.blocks [0].meter_id, "MTR\xc3\xa4"); break;
        case M_ACTION_ZERO:       m->api_req.action = 0; break;
        case M_ACTION_HIGH:       m->api_req.action = AMI_ACT_MAX + 1; break;
        case M_API_METER_BAD:     strcpy (m->api_req.meter_id, "MTR*"); break;
        case M_READINGS_COUNT:    m->api_readings.count = AMI_MAX_API_READINGS + 1; break;
        case M_READINGS_REGS:     m->api_readings.readings [1].reading.register_count = 0; break;
        case M_METERS_COUNT:      m->api_meters.count = AMI_MAX_API_METERS + 1; break;
        case M_METERS_STATE:      m->api_meters.meters [0].state = 200; break;
        case M_METERS_AGG_EMPTY:  m->api_meters.meters [1].aggregator_id [0] = 0; break;
        case M_STATUS_COUNT:      m->api_status.count = AMI_MAX_API_SERVICES + 1; break;
        case M_STATUS_ROLE_LONG:  strcpy (m->api_status.services [4].role, "aggregator-relays"); break;
        case M_INTERVALS_COUNT:   m->api_intervals.count = AMI_MAX_API_INTERVALS + 1; break;
        case M_INTERVALS_METER_EMPTY: m->api_intervals.meter_id [0] = 0; break;
        case M_AUDIT_COUNT:       m->api_audit.count = AMI_MAX_API_AUDIT + 1; break;
        case M_AUDIT_ACTION:      m->api_audit.entries [1].action = 0; break;
        case M_AUDIT_SEQ:         m->api_audit.entries [0].seq = 0; break;
        case M_AUDIT_OPERATOR:    m->api_audit.entries [2].operator_id [0] = 0; break;
        case M_CUST_METER_EMPTY:  m->api_customer.meter_id [0] = 0; break;
        case M_CUST_NAME_EMPTY:   m->api_customer.name [0] = 0; break;
        case M_CUST_NAME_LONG:    memset (m->api_customer.name, 'n', AMI_MAX_CUSTOMER_NAME + 1); break;  /* no NUL */
        case M_CUST_NAME_UTF8:    strcpy (m->api_customer.name, "Ren\xe9" "e"); break;  /* Latin-1 */
        case M_CUST_ADDR_LONG:    memset (m->api_customer.address, 'a', AMI_MAX_TEXT + 1); break;
        case M_CUST_ADDR_UTF8:    strcpy (m->api_customer.address, "Stra\xdf" "e 1"); break;
        case M_CUST_ADDR_EMPTY_OK: m->api_customer.address [0] = 0; break;
        case M_CUST_ACCOUNT_EMPTY: m->api_customer.account [0] = 0; break;
        case M_CUST_ACCOUNT_CHARSET: strcpy (m->api_customer.account, "ACC 42"); break;
        case M_VERIFY_COUNT:      m->api_verify.count = AMI_MAX_API_FAILURES + 1; break;
        case M_VERIFY_FAILED_LOW: m->api_verify.failed = m->api_verify.count - 1; break;
        case M_VERIFY_CODE_ZERO:  m->api_verify.failures [1].code = AMI_OK; break;
        case M_VERIFY_MORE_FAILED_OK: m->api_verify.failed = 5000; break;
        case M_TYPE_UNKNOWN:      m->type = 13; break;
        case M_TYPE_ZERO:         m->type = 0; break;
        default:                  fail_msg ("unknown mutation %d", mutation);
    }
}

static const refusal_t s_refusals [] = {
    { AMI_MSG_HELLO, 0, M_ROLE_EMPTY, AMI_E_LIMIT, "empty role" },
    { AMI_MSG_HELLO, 0, M_ROLE_LONG, AMI_E_LIMIT, "role over 16, unterminated" },
    { AMI_MSG_HELLO, 0, M_ROLE_CHARSET, AMI_E_RANGE, "role with a space" },
    { AMI_MSG_HELLO, 0, M_NODE_EMPTY, AMI_E_LIMIT, "empty node id" },
    { AMI_MSG_HELLO, 0, M_NODE_UNTERMINATED, AMI_E_LIMIT, "node id without NUL" },
    { AMI_MSG_HELLO, 1, M_HELLO_COUNT, AMI_E_LIMIT, "1025 meters" },
    { AMI_MSG_HELLO, 0, M_HELLO_METER_BAD, AMI_E_RANGE, "meter id with /" },
    { AMI_MSG_HELLO, 0, M_HELLO_METER_EMPTY, AMI_E_LIMIT, "empty meter id" },
    { AMI_MSG_HEALTH, 0, M_STATE, AMI_E_RANGE, "state 5" },
    { AMI_MSG_HEALTH, 1, M_STATS_COUNT, AMI_E_LIMIT, "33 stats" },
    { AMI_MSG_HEALTH, 0, M_STAT_NAME, AMI_E_RANGE, "stat name with space" },
    { AMI_MSG_EVENT, 0, M_KIND_ZERO, AMI_E_RANGE, "event kind 0" },
    { AMI_MSG_EVENT, 0, M_KIND_HIGH, AMI_E_RANGE, "event kind 8" },
    { AMI_MSG_EVENT, 0, M_TEXT_UTF8, AMI_E_RANGE, "text with 0xff" },
    { AMI_MSG_EVENT, 0, M_TEXT_OVERLONG, AMI_E_RANGE, "text with overlong /" },
    { AMI_MSG_EVENT, 0, M_TEXT_SURROGATE, AMI_E_RANGE, "text with a surrogate" },
    { AMI_MSG_EVENT, 0, M_TEXT_LONG, AMI_E_LIMIT, "text over 256" },
    { AMI_MSG_EVENT, 0, M_EVENT_METER_BAD, AMI_E_RANGE, "event meter id with space" },
    { AMI_MSG_EVENT, 0, M_ORIGIN_EMPTY, AMI_E_LIMIT, "empty origin" },
    { AMI_MSG_ERROR, 0, M_ERROR_CODE_ZERO, AMI_E_RANGE, "ERROR with code 0" },
    { AMI_MSG_ERROR, 0, M_ERROR_TEXT_CTRL_OK, AMI_OK, "control chars are valid text" },
    { AMI_MSG_READ_REQ, 0, M_COUNTER_ZERO, AMI_E_RANGE, "counter 0" },
    { AMI_MSG_READ_REQ, 0, M_PROFILE_FROM_ONLY, AMI_E_RANGE, "profile range without its end" },
    { AMI_MSG_READ_REQ, 0, M_PROFILE_EMPTY, AMI_E_RANGE, "profile range from == to" },
    { AMI_MSG_READ_REQ, 0, M_PROFILE_REVERSED, AMI_E_RANGE, "profile range from > to" },
    { AMI_MSG_READ_REQ, 0, M_PROFILE_TOO_LONG, AMI_E_RANGE, "profile range over 31 days" },
    { AMI_MSG_READ_REQ, 0, M_PROFILE_LONGEST, AMI_OK, "profile range of exactly 31 days" },
    { AMI_MSG_READ_REQ, 0, M_EXPIRES_EQ, AMI_E_RANGE, "expires == issued" },
    { AMI_MSG_READ_REQ, 0, M_EXPIRES_LT, AMI_E_RANGE, "expires < issued" },
    { AMI_MSG_READ_REQ, 0, M_REQ_METER_LONG, AMI_E_LIMIT, "meter id over 32" },
    { AMI_MSG_READ_RESP, 0, M_SEALED_LONG, AMI_E_LIMIT, "sealed over 4096" },
    { AMI_MSG_READ_RESP, 0, M_SEALED_NULL, AMI_E_RANGE, "sealed NULL with a size" },
    { AMI_MSG_READ_RESP, 0, M_SEALED_WITH_STATUS, AMI_E_RANGE, "refusal carrying a reading" },
    { AMI_MSG_READ_RESP, 0, M_SEALED_EMPTY_OK, AMI_E_LIMIT, "success without a reading" },
    { AMI_MSG_READING, 0, M_REGS_ZERO, AMI_E_LIMIT, "no registers" },
    { AMI_MSG_READING, 1, M_REGS_HIGH, AMI_E_LIMIT, "33 registers" },
    { AMI_MSG_READING, 0, M_SCALER_HIGH, AMI_E_RANGE, "scaler 10" },
    { AMI_MSG_READING, 0, M_SCALER_LOW, AMI_E_RANGE, "scaler -10" },
    { AMI_MSG_PROFILE, 0, M_PROFILE_SEQ, AMI_E_RANGE, "profile seq 0" },
    { AMI_MSG_PROFILE, 0, M_RECORDS_ZERO, AMI_E_LIMIT, "no records" },
    { AMI_MSG_PROFILE, 1, M_RECORDS_HIGH, AMI_E_LIMIT, "97 records" },
    { AMI_MSG_BATCH, 0, M_BLOCKS_ZERO, AMI_E_LIMIT, "no blocks" },
    { AMI_MSG_BATCH, 1, M_BLOCKS_HIGH, AMI_E_LIMIT, "1025 blocks" },
    { AMI_MSG_BATCH, 0, M_BOX_EMPTY, AMI_E_LIMIT, "empty box" },
    { AMI_MSG_BATCH, 0, M_BOX_LONG, AMI_E_LIMIT, "box over 4096" },
    { AMI_MSG_BATCH, 0, M_BLOCK_SEQ, AMI_E_RANGE, "block seq 0" },
    { AMI_MSG_BATCH, 0, M_BLOCK_METER, AMI_E_RANGE, "non-ASCII meter id" },
    { AMI_MSG_API_REQ, 0, M_ACTION_ZERO, AMI_E_RANGE, "action 0" },
    { AMI_MSG_API_REQ, 0, M_ACTION_HIGH, AMI_E_RANGE, "action 10" },
    { AMI_MSG_API_REQ, 0, M_API_METER_BAD, AMI_E_RANGE, "meter id with *" },
    { AMI_MSG_API_READINGS, 1, M_READINGS_COUNT, AMI_E_LIMIT, "101 readings" },
    { AMI_MSG_API_READINGS, 0, M_READINGS_REGS, AMI_E_LIMIT, "stored reading without registers" },
    { AMI_MSG_API_METERS, 1, M_METERS_COUNT, AMI_E_LIMIT, "257 meters" },
    { AMI_MSG_API_METERS, 0, M_METERS_STATE, AMI_E_RANGE, "meter state 200" },
    { AMI_MSG_API_METERS, 0, M_METERS_AGG_EMPTY, AMI_E_LIMIT, "empty aggregator id" },
    { AMI_MSG_API_STATUS, 1, M_STATUS_COUNT, AMI_E_LIMIT, "65 services" },
    { AMI_MSG_API_STATUS, 0, M_STATUS_ROLE_LONG, AMI_E_LIMIT, "role of 17" },
    { AMI_MSG_API_INTERVALS, 1, M_INTERVALS_COUNT, AMI_E_LIMIT, "2977 intervals" },
    { AMI_MSG_API_INTERVALS, 0, M_INTERVALS_METER_EMPTY, AMI_E_LIMIT, "intervals without meter" },
    { AMI_MSG_API_AUDIT, 1, M_AUDIT_COUNT, AMI_E_LIMIT, "257 audit rows" },
    { AMI_MSG_API_AUDIT, 0, M_AUDIT_ACTION, AMI_E_RANGE, "audit action 0" },
    { AMI_MSG_API_AUDIT, 0, M_AUDIT_SEQ, AMI_E_RANGE, "audit seq 0" },
    { AMI_MSG_API_AUDIT, 0, M_AUDIT_OPERATOR, AMI_E_LIMIT, "audit without operator" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_METER_EMPTY, AMI_E_LIMIT, "customer without meter" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_NAME_EMPTY, AMI_E_LIMIT, "customer without name" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_NAME_LONG, AMI_E_LIMIT, "name over 64, unterminated" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_NAME_UTF8, AMI_E_RANGE, "name in Latin-1" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_ADDR_LONG, AMI_E_LIMIT, "address over 256" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_ADDR_UTF8, AMI_E_RANGE, "address in Latin-1" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_ADDR_EMPTY_OK, AMI_OK, "empty address is allowed" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_ACCOUNT_EMPTY, AMI_E_LIMIT, "customer without account" },
    { AMI_MSG_API_CUSTOMER, 0, M_CUST_ACCOUNT_CHARSET, AMI_E_RANGE, "account with a space" },
    { AMI_MSG_API_VERIFY, 1, M_VERIFY_COUNT, AMI_E_LIMIT, "257 failures" },
    { AMI_MSG_API_VERIFY, 0, M_VERIFY_FAILED_LOW, AMI_E_RANGE, "failed below the listed count" },
    { AMI_MSG_API_VERIFY, 0, M_VERIFY_CODE_ZERO, AMI_E_RANGE, "failure with code 0" },
    { AMI_MSG_API_VERIFY, 0, M_VERIFY_MORE_FAILED_OK, AMI_OK, "more failed than listed" },
    { AMI_MSG_BATCH_ACK, 0, M_TYPE_UNKNOWN, AMI_E_MSGTYPE, "type 13" },
    { AMI_MSG_BATCH_ACK, 0, M_TYPE_ZERO, AMI_E_MSGTYPE, "type 0 (never reset)" },
};

static void
test_encode_refuses_invalid (void **state)
{
    fx_t *fx = *state;
    for (size_t i = 0; i < sizeof s_refusals / sizeof s_refusals [0]; i++) {
        const refusal_t *r = &s_refusals [i];
        s_fill (fx->a, r->type, r->variant);
        s_mutate (fx->a, r->mutation);
        size_t len = 777;
        int rc = ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len);
        if (rc != r->expect)
            fail_msg ("%s: encode gave %s, expected %s", r->what,
                      ami_errname (rc), ami_errname (r->expect));
        if (rc) {
            assert_int_equal (len, 777);    /* untouched on failure */
            /* validation wins over buffer size: same code with no room */
            assert_int_equal (ami_msg_encode (fx->a, s_frame, 1, &len), r->expect);
        }
        else
            assert_int_equal (ami_msg_decode (fx->b, s_frame, len), AMI_OK);
    }
}

static void
test_encode_bufsize (void **state)
{
    fx_t *fx = *state;
    for (size_t t = 0; t < N_TYPES; t++) {
        s_fill (fx->a, s_all_types [t], 0);
        size_t len = 0, len2 = 4242;
        assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
        /* exactly enough room works; one byte less does not, and never
           writes past cap */
        uint8_t *exact = malloc (len);
        assert_non_null (exact);
        assert_int_equal (ami_msg_encode (fx->a, exact, len, &len2), AMI_OK);
        assert_int_equal (len2, len);
        assert_memory_equal (exact, s_frame, len);
        free (exact);
        uint8_t *small = malloc (len - 1);
        assert_non_null (small);
        len2 = 4242;
        assert_int_equal (ami_msg_encode (fx->a, small, len - 1, &len2), AMI_E_BUFSIZE);
        assert_int_equal (len2, 4242);
        free (small);
        assert_int_equal (ami_msg_encode (fx->a, NULL, 0, &len2), AMI_E_BUFSIZE);
        assert_int_equal (ami_msg_encode (fx->a, s_frame2, 0, &len2), AMI_E_BUFSIZE);
        assert_int_equal (len2, 4242);
    }
}

/* ---------------------------------------------------------------------- */
/*  Signature slot                                                         */

static void
test_bin8_signature_encoding (void **state)
{
    (void) state;
    /* msgpack-c packs a 64-byte bin as bin8 (c4 40), which the signature
       slot relies on */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init (&sb);
    msgpack_packer_init (&pk, &sb, msgpack_sbuffer_write);
    uint8_t sig [AMI_SIGNATURE_SIZE] = { 0 };
    msgpack_pack_bin (&pk, sizeof sig);
    msgpack_pack_bin_body (&pk, sig, sizeof sig);
    assert_int_equal (sb.size, AMI_SIGNATURE_FIELD);
    assert_int_equal ((uint8_t) sb.data [0], 0xc4);
    assert_int_equal ((uint8_t) sb.data [1], 0x40);
    msgpack_sbuffer_destroy (&sb);
}

static void
test_signature_slot (void **state)
{
    fx_t *fx = *state;
    static const int signed_types [] = { AMI_MSG_READ_REQ, AMI_MSG_READ_RESP };
    for (int k = 0; k < 2; k++)
        for (int variant = 0; variant < 3; variant++) {
            s_fill (fx->a, signed_types [k], variant);
            /* sign-after-encode: encode with a zero signature, patch the slot */
            uint8_t *sig = signed_types [k] == AMI_MSG_READ_REQ
                         ? fx->a->read_req.signature : fx->a->read_resp.signature;
            memset (sig, 0, AMI_SIGNATURE_SIZE);
            size_t len = 0, signed_len = 0;
            assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
            const uint8_t *slot = ami_msg_signature_slot (s_frame, len, &signed_len);
            assert_non_null (slot);
            assert_ptr_equal (slot, s_frame + len - AMI_SIGNATURE_SIZE);
            assert_int_equal (signed_len, len - AMI_SIGNATURE_FIELD);
            assert_int_equal (s_frame [signed_len], 0xc4);
            assert_int_equal (s_frame [signed_len + 1], 0x40);

            uint8_t real [AMI_SIGNATURE_SIZE];
            s_bytes (real, sizeof real, 555 + (uint32_t) k);
            memcpy (s_frame + signed_len + 2, real, AMI_SIGNATURE_SIZE);
            assert_int_equal (ami_msg_decode (fx->b, s_frame, len), AMI_OK);
            const uint8_t *got = signed_types [k] == AMI_MSG_READ_REQ
                               ? fx->b->read_req.signature : fx->b->read_resp.signature;
            assert_memory_equal (got, real, AMI_SIGNATURE_SIZE);
            /* the signed part is the same bytes as the zero-signature encoding */
            memcpy (sig, real, AMI_SIGNATURE_SIZE);
            size_t len2 = 0;
            assert_int_equal (ami_msg_encode (fx->a, s_frame2, AMI_MAX_FRAME, &len2), AMI_OK);
            assert_int_equal (len2, len);
            assert_memory_equal (s_frame2, s_frame, len);

            /* NULL signed_len is allowed */
            assert_ptr_equal (ami_msg_signature_slot (s_frame, len, NULL), slot);
            /* not a bin8 64 at the end */
            assert_null (ami_msg_signature_slot (s_frame, len - 1, &signed_len));
            s_frame [signed_len] = 0xc5;
            assert_null (ami_msg_signature_slot (s_frame, len, &signed_len));
        }
    /* unsigned types have no slot even if they happen to end in c4 40 ... */
    for (size_t t = 0; t < N_TYPES; t++) {
        if (s_all_types [t] == AMI_MSG_READ_REQ || s_all_types [t] == AMI_MSG_READ_RESP)
            continue;
        s_fill (fx->a, s_all_types [t], 0);
        size_t len = 0, sl = 99;
        assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
        assert_null (ami_msg_signature_slot (s_frame, len, &sl));
        assert_int_equal (sl, 99);
    }
    /* ... and garbage never yields one */
    uint8_t junk [80];
    memset (junk, 0, sizeof junk);
    junk [80 - 66] = 0xc4;
    junk [80 - 65] = 0x40;
    assert_null (ami_msg_signature_slot (junk, sizeof junk, NULL));
    assert_null (ami_msg_signature_slot (NULL, 0, NULL));
    assert_null (ami_msg_signature_slot (junk, 0, NULL));
}

/* ---------------------------------------------------------------------- */
/*  peek_type                                                              */

static void
test_peek_type (void **state)
{
    fx_t *fx = *state;
    for (size_t t = 0; t < N_TYPES; t++) {
        s_fill (fx->a, s_all_types [t], 0);
        size_t len = 0;
        assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
        assert_int_equal (ami_msg_peek_type (s_frame, len), s_all_types [t]);
        /* peek needs only the first three bytes */
        assert_int_equal (ami_msg_peek_type (s_frame, 3), s_all_types [t]);
        assert_int_equal (ami_msg_peek_type (s_frame, 2), 0);
    }
    /* non-minimal encodings of the same header */
    static const uint8_t a16 [] = { 0xdc, 0x00, 0x05, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 0xd0, 22 };
    assert_int_equal (ami_msg_peek_type (a16, sizeof a16), AMI_MSG_BATCH_ACK);
    static const uint8_t a32 [] = { 0xdd, 0, 0, 0, 8, 0xcc, 1, 0xcd, 0, 10 };
    assert_int_equal (ami_msg_peek_type (a32, sizeof a32), AMI_MSG_READ_REQ);
    /* refusals */
    static const uint8_t v2 [] = { 0x95, 0x02, 0x16 };
    static const uint8_t unknown [] = { 0x95, 0x01, 0x0d };
    static const uint8_t neg [] = { 0x95, 0x01, 0xd0, 0xf6 };
    static const uint8_t one [] = { 0x91, 0x01, 0x16 };
    static const uint8_t map [] = { 0x82, 0x01, 0x16 };
    static const uint8_t str [] = { 0x95, 0xa1, '1', 0x16 };
    static const uint8_t short32 [] = { 0xdd, 0, 0, 0 };
    assert_int_equal (ami_msg_peek_type (v2, sizeof v2), 0);
    assert_int_equal (ami_msg_peek_type (unknown, sizeof unknown), 0);
    assert_int_equal (ami_msg_peek_type (neg, sizeof neg), 0);
    assert_int_equal (ami_msg_peek_type (one, sizeof one), 0);
    assert_int_equal (ami_msg_peek_type (map, sizeof map), 0);
    assert_int_equal (ami_msg_peek_type (str, sizeof str), 0);
    assert_int_equal (ami_msg_peek_type (short32, sizeof short32), 0);
    assert_int_equal (ami_msg_peek_type (NULL, 0), 0);
    assert_int_equal (ami_msg_peek_type (v2, 0), 0);
}

/* ---------------------------------------------------------------------- */
/*  Any valid integer encoding is accepted                                  */

static void
test_nonminimal_integers (void **state)
{
    fx_t *fx = *state;
    /* BATCH_ACK [1, 22, 42, 0, 4] with every integer in a wider form than
       needed and the array header as array16 */
    static const uint8_t ack [] = {
        0xdc, 0x00, 0x05,
        0xcf, 0, 0, 0, 0, 0, 0, 0, 0x01,            /* version as uint64 */
        0xd3, 0, 0, 0, 0, 0, 0, 0, 0x16,            /* type 22 as int64 */
        0xcf, 0, 0, 0, 0, 0, 0, 0, 0x2a,            /* batch_id 42 as uint64 */
        0xd1, 0x00, 0x00,                           /* status 0 as int16 */
        0xce, 0x00, 0x00, 0x00, 0x04,               /* credit 4 as uint32 */
    };
    assert_int_equal (ami_msg_decode (fx->a, ack, sizeof ack), AMI_OK);
    assert_int_equal (fx->a->type, AMI_MSG_BATCH_ACK);
    assert_true (fx->a->batch_ack.batch_id == 42);
    assert_int_equal (fx->a->batch_ack.status, 0);
    assert_int_equal (fx->a->batch_ack.credit, 4);
    /* re-encoding gives msgpack-c's minimal form */
    static const uint8_t minimal [] = { 0x95, 0x01, 0x16, 0x2a, 0x00, 0x04 };
    size_t len = 0;
    assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
    assert_int_equal (len, sizeof minimal);
    assert_memory_equal (s_frame, minimal, sizeof minimal);

    /* READ_REQ with a str8 meter id, a bin16 request id and int8/int32
       integers; the signature must stay bin8 at the very end */
    uint8_t rq [160];
    size_t n = 0;
    rq [n++] = 0xdd; rq [n++] = 0; rq [n++] = 0; rq [n++] = 0; rq [n++] = 10;
    rq [n++] = 0xd0; rq [n++] = 0x01;                   /* version, int8 */
    rq [n++] = 0xcc; rq [n++] = 0x0a;                   /* type 10, uint8 */
    rq [n++] = 0xd9; rq [n++] = 10; memcpy (rq + n, "MTR-000042", 10); n += 10;
    rq [n++] = 0xc5; rq [n++] = 0; rq [n++] = 16;       /* bin16 of 16 */
    for (int i = 0; i < 16; i++) rq [n++] = (uint8_t) i;
    rq [n++] = 0xd2; rq [n++] = 0; rq [n++] = 0; rq [n++] = 0; rq [n++] = 17;  /* counter int32 */
    rq [n++] = 0xcd; rq [n++] = 0x03; rq [n++] = 0xe8;  /* issued 1000 uint16 */
    rq [n++] = 0xce; rq [n++] = 0; rq [n++] = 0; rq [n++] = 0x7d; rq [n++] = 0x00;  /* 32000 */
    rq [n++] = 0xcd; rq [n++] = 0x00; rq [n++] = 0x64;  /* profile_from_s 100 uint16 */
    rq [n++] = 0xd3; for (int i = 0; i < 7; i++) rq [n++] = 0;
    rq [n++] = 0xc8;                                    /* profile_to_s 200 int64 */
    rq [n++] = 0xc4; rq [n++] = 0x40;
    for (int i = 0; i < 64; i++) rq [n++] = (uint8_t) (0xa0 + i % 16);
    assert_int_equal (ami_msg_decode (fx->a, rq, n), AMI_OK);
    assert_string_equal (fx->a->read_req.meter_id, "MTR-000042");
    assert_int_equal (fx->a->read_req.request_id [15], 15);
    assert_true (fx->a->read_req.counter == 17);
    assert_true (fx->a->read_req.issued_ms == 1000);
    assert_true (fx->a->read_req.expires_ms == 32000);
    assert_true (fx->a->read_req.profile_from_s == 100);
    assert_true (fx->a->read_req.profile_to_s == 200);
    assert_int_equal (fx->a->read_req.signature [63], 0xaf);
    size_t sl = 0;
    assert_ptr_equal (ami_msg_signature_slot (rq, n, &sl), rq + n - 64);
    assert_int_equal (sl, n - 66);

    /* READING with one register: negative value and scaler as int64,
       unit as uint16, quality as uint64, reading quality as int32 */
    uint8_t rd [128];
    n = 0;
    rd [n++] = 0x97; rd [n++] = 0x01; rd [n++] = 0x0c;
    rd [n++] = 0xa5; memcpy (rd + n, "MTR-1", 5); n += 5;
    rd [n++] = 0xc4; rd [n++] = 16; memset (rd + n, 0x11, 16); n += 16;
    rd [n++] = 0xcf; memset (rd + n, 0, 8); rd [n + 7] = 0x63; n += 8;      /* read_ms 99 */
    rd [n++] = 0xd2; memset (rd + n, 0, 4); n += 4;                          /* quality 0 */
    rd [n++] = 0x91; rd [n++] = 0x95;
    rd [n++] = 0xc4; rd [n++] = 6;
    static const uint8_t volts [6] = { 1, 0, 32, 7, 0, 255 };
    memcpy (rd + n, volts, 6); n += 6;
    rd [n++] = 0xd3; memset (rd + n, 0xff, 8); rd [n + 7] = 0xfb; n += 8;   /* value -5 */
    rd [n++] = 0xd3; memset (rd + n, 0xff, 8); rd [n + 7] = 0xfd; n += 8;   /* scaler -3 */
    rd [n++] = 0xcd; rd [n++] = 0x00; rd [n++] = 35;                         /* unit V */
    rd [n++] = 0xcf; memset (rd + n, 0, 8); rd [n + 7] = AMI_Q_ESTIMATED; n += 8;
    assert_int_equal (ami_msg_decode (fx->a, rd, n), AMI_OK);
    const ami_register_t *r = &fx->a->reading.registers [0];
    assert_int_equal (fx->a->reading.register_count, 1);
    assert_true (fx->a->reading.read_ms == 99);
    assert_memory_equal (r->obis, volts, 6);
    assert_true (r->value == -5);
    assert_int_equal (r->scaler, -3);
    assert_int_equal (r->unit, 35);
    assert_int_equal (r->quality, AMI_Q_ESTIMATED);
}

/*  SEC-INT-5: READ_REQ's load-profile range round-trips (0/0 = a plain
    read, a real range, the longest one), is inside the signed part, and
    a decoder refuses a range that is not 0/0 nor from < to within
    AMI_PROFILE_RECOVER_MAX_S (the encoder cases are in the refusal
    table). */
static void
test_sec_int_5_read_req_range (void **state)
{
    fx_t *fx = *state;
    static const struct { uint64_t from, to; } good [] = {
        { 0, 0 }, { 0, 1 }, { 1780185600, 1780272000 },
        { 1780272000 - AMI_PROFILE_RECOVER_MAX_S, 1780272000 },
        { UINT64_MAX - AMI_PROFILE_RECOVER_MAX_S, UINT64_MAX }
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        s_fill (fx->a, AMI_MSG_READ_REQ, 0);
        fx->a->read_req.profile_from_s = good [i].from;
        fx->a->read_req.profile_to_s = good [i].to;
        size_t len = s_roundtrip (fx);
        assert_true (fx->b->read_req.profile_from_s == good [i].from);
        assert_true (fx->b->read_req.profile_to_s == good [i].to);
        /* the range precedes the signature: it is signed */
        size_t signed_len = 0;
        assert_non_null (ami_msg_signature_slot (s_frame, len, &signed_len));
        assert_int_equal (signed_len, len - AMI_SIGNATURE_FIELD);
    }
    /* a frame with the range 1..2: both fixints right before the signature */
    s_fill (fx->a, AMI_MSG_READ_REQ, 0);
    fx->a->read_req.profile_from_s = 1;
    fx->a->read_req.profile_to_s = 2;
    size_t len = 0;
    assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
    uint8_t *from = s_frame + len - AMI_SIGNATURE_FIELD - 2;
    assert_int_equal (from [0], 0x01);
    assert_int_equal (from [1], 0x02);
    static const struct { uint8_t from, to; int rc; } patch [] = {
        { 0x02, 0x01, AMI_E_RANGE },        /* reversed */
        { 0x01, 0x01, AMI_E_RANGE },        /* empty */
        { 0x01, 0x00, AMI_E_RANGE },        /* a start without an end */
        { 0x00, 0x01, AMI_OK },
        { 0x00, 0x00, AMI_OK },             /* an ordinary read */
        { 0xc0, 0x01, AMI_E_TYPE },         /* nil is not a number */
        { 0xff, 0x01, AMI_E_TYPE },         /* a negative integer: not a u64 */
    };
    for (size_t i = 0; i < sizeof patch / sizeof patch [0]; i++) {
        from [0] = patch [i].from;
        from [1] = patch [i].to;
        int rc = ami_msg_decode (fx->b, s_frame, len);
        if (rc != patch [i].rc)
            fail_msg ("range %02x..%02x: decode gave %s, expected %s", patch [i].from,
                      patch [i].to, ami_errname (rc), ami_errname (patch [i].rc));
    }
    /* 31 days and one second: refused by the decoder too */
    fx->a->read_req.profile_from_s = 1000;
    fx->a->read_req.profile_to_s = 1000 + AMI_PROFILE_RECOVER_MAX_S;
    assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
    /* to is a uint32 (ce + 4 bytes) right before the signature: add one */
    uint8_t *to = s_frame + len - AMI_SIGNATURE_FIELD - 4;
    assert_int_equal (to [-1], 0xce);
    to [3]++;
    assert_int_equal (ami_msg_decode (fx->b, s_frame, len), AMI_E_RANGE);
    to [3]--;
    assert_int_equal (ami_msg_decode (fx->b, s_frame, len), AMI_OK);
}

/* ---------------------------------------------------------------------- */
/*  Lifecycle, reset, reuse                                                */

static void
test_new_destroy_reset (void **state)
{
    (void) state;
    ami_msg_t *m = ami_msg_new ();
    assert_non_null (m);
    assert_int_equal (m->type, 0);
    assert_non_null (m->priv);

    memset (&m->read_req, 0x5a, sizeof m->read_req);
    ami_msg_reset (m, AMI_MSG_READ_REQ);
    assert_int_equal (m->type, AMI_MSG_READ_REQ);
    assert_string_equal (m->read_req.meter_id, "");
    assert_true (m->read_req.counter == 0);
    assert_int_equal (m->read_req.signature [63], 0);

    memset (&m->batch, 0x5a, sizeof m->batch);
    ami_msg_reset (m, AMI_MSG_BATCH);
    assert_int_equal (m->batch.block_count, 0);
    assert_null (m->batch.blocks [AMI_MAX_BATCH_BLOCKS - 1].box);

    /* large API replies: header and count cleared */
    memset (&m->api_intervals, 0x5a, sizeof m->api_intervals);
    ami_msg_reset (m, AMI_MSG_API_INTERVALS);
    assert_int_equal (m->type, AMI_MSG_API_INTERVALS);
    assert_int_equal (m->api_intervals.count, 0);
    assert_false (m->api_intervals.more);
    assert_string_equal (m->api_intervals.meter_id, "");
    assert_int_equal (m->api_intervals.corr [0], 0);
    ami_msg_reset (m, AMI_MSG_API_AUDIT);
    assert_int_equal (m->api_audit.count, 0);
    ami_msg_reset (m, AMI_MSG_API_READINGS);
    assert_int_equal (m->api_readings.count, 0);
    ami_msg_reset (m, AMI_MSG_API_METERS);
    assert_int_equal (m->api_meters.count, 0);
    ami_msg_reset (m, AMI_MSG_API_STATUS);
    assert_int_equal (m->api_status.count, 0);
    memset (&m->api_verify, 0x5a, sizeof m->api_verify);
    ami_msg_reset (m, AMI_MSG_API_VERIFY);
    assert_int_equal (m->type, AMI_MSG_API_VERIFY);
    assert_int_equal (m->api_verify.count, 0);
    assert_true (m->api_verify.checked == 0 && m->api_verify.failed == 0);
    assert_int_equal (m->api_verify.corr [0], 0);
    memset (&m->api_customer, 0x5a, sizeof m->api_customer);
    ami_msg_reset (m, AMI_MSG_API_CUSTOMER);
    assert_string_equal (m->api_customer.name, "");
    assert_string_equal (m->api_customer.address, "");
    assert_string_equal (m->api_customer.account, "");

    ami_msg_destroy (&m);
    assert_null (m);
    ami_msg_destroy (&m);           /* idempotent */
    ami_msg_destroy (NULL);
}

static void
test_decode_reuse_and_failure_state (void **state)
{
    fx_t *fx = *state;
    /* one message object decodes a long mixed stream, as a service does */
    for (int round = 0; round < 50; round++)
        for (size_t t = 0; t < N_TYPES; t++) {
            s_fill (fx->a, s_all_types [t], (round + (int) t) % 3);
            size_t len = 0;
            assert_int_equal (ami_msg_encode (fx->a, s_frame, AMI_MAX_FRAME, &len), AMI_OK);
            assert_int_equal (ami_msg_decode (fx->b, s_frame, len), AMI_OK);
            assert_int_equal (fx->b->type, s_all_types [t]);
        }
    /* a failed decode leaves type 0, so stale contents cannot be used */
    static const uint8_t bad [] = { 0x95, 0x01, 0x16, 0x2a, 0x00, 0xa1, 'x' };
    assert_int_equal (ami_msg_decode (fx->b, bad, sizeof bad), AMI_E_TYPE);
    assert_int_equal (fx->b->type, 0);
}

/* ---------------------------------------------------------------------- */
/*  Helpers                                                                */

static void
test_obis (void **state)
{
    (void) state;
    static const char *codes [] = {
        "0.0.1.0.0.255", "1.0.1.8.0.255", "1.0.1.8.1.255", "1.0.1.8.2.255",
        "1.0.2.8.0.255", "1.0.1.7.0.255", "1.0.2.7.0.255", "1.0.32.7.0.255",
        "1.0.52.7.0.255", "1.0.72.7.0.255", "1.0.31.7.0.255", "1.0.51.7.0.255",
        "1.0.71.7.0.255", "1.0.13.7.0.255", "1.0.14.7.0.255", "0.0.96.1.0.255",
        "0.0.97.98.0.255", "1.0.99.1.0.255", "255.255.255.255.255.255", "0.0.0.0.0.0",
    };
    char out [24];
    uint8_t obis [AMI_OBIS_SIZE];
    for (size_t i = 0; i < sizeof codes / sizeof codes [0]; i++) {
        assert_int_equal (ami_obis_parse (codes [i], obis), 0);
        assert_string_equal (ami_obis_format (obis, out), codes [i]);
    }
    /* F omitted means 255 */
    assert_int_equal (ami_obis_parse ("1.0.1.8.0", obis), 0);
    static const uint8_t energy [AMI_OBIS_SIZE] = { 1, 0, 1, 8, 0, 255 };
    assert_memory_equal (obis, energy, AMI_OBIS_SIZE);
    assert_int_equal (ami_obis_parse ("1.0.32.7.0.7", obis), 0);
    assert_int_equal (obis [2], 32);
    assert_int_equal (obis [5], 7);
    /* leading zeros are digits, not octal */
    assert_int_equal (ami_obis_parse ("001.0.010.8.0", obis), 0);
    assert_int_equal (obis [2], 10);
    /* widest output fits the 24-byte buffer */
    static const uint8_t wide [AMI_OBIS_SIZE] = { 255, 255, 255, 255, 255, 255 };
    assert_int_equal (strlen (ami_obis_format (wide, out)), 23);

    static const char *bad [] = {
        "", "1", "1.0.1.8", "1.0.1.8.0.255.1", "1.0.1.8.0.256", "1..1.8.0",
        ".1.0.1.8.0", "1.0.1.8.0.", "1.0.1.8.0.255 ", " 1.0.1.8.0", "a.b.c.d.e",
        "1.0.1.8.-1", "1.0.1.8.+1", "1,0,1,8,0", "1.0.1.8.0000", "1.0.1.8.0x1",
    };
    memset (obis, 0x77, sizeof obis);
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        if (ami_obis_parse (bad [i], obis) != -1)
            fail_msg ("OBIS '%s' should be refused", bad [i]);
    assert_int_equal (obis [0], 0x77);          /* untouched on failure */
    assert_int_equal (ami_obis_parse (NULL, obis), -1);
}

static void
test_id_valid (void **state)
{
    (void) state;
    static const struct { const char *id; bool ok; } rows [] = {
        { "MTR-000001", true }, { "a", true }, { "HE-01", true },
        { "utility.north:MTR_0001", true }, { "0123456789abcdefABCDEF.:-_xyzXYZ", true },
        { "", false }, { "MTR 1", false }, { "MTR/1", false }, { "MTR*", false },
        { "m\xc3\xa4", false }, { "tab\t", false }, { "a@b", false }, { "x\"", false },
        { "0123456789abcdefABCDEF.:-_xyzXYZ!", false },             /* 33 */
        { "0123456789abcdefABCDEF.:-_xyzXYZw", false },             /* 33, valid chars */
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows [0]; i++)
        if (ami_id_valid (rows [i].id) != rows [i].ok)
            fail_msg ("ami_id_valid ('%s') should be %d", rows [i].id, rows [i].ok);
    assert_false (ami_id_valid (NULL));
    /* every byte value: exactly the 66 id characters pass */
    int passed = 0;
    for (int c = 1; c < 256; c++) {
        char s [2] = { (char) c, 0 };
        passed += ami_id_valid (s);
    }
    assert_int_equal (passed, 26 + 26 + 10 + 4);
}

static void
test_action_and_type_names (void **state)
{
    (void) state;
    static const char *names [] = { NULL, "read", "history", "meters", "status",
                                    "intervals", "audit", "verify", "customer",
                                    "audit-verify", "recover" };
    assert_int_equal (AMI_ACT_MAX, 10);
    assert_int_equal (AMI_ACT_RECOVER, 10);
    for (int a = 1; a <= AMI_ACT_MAX; a++) {
        assert_string_equal (ami_action_name (a), names [a]);
        assert_int_equal (ami_action_from_name (names [a]), a);
    }
    assert_null (ami_action_name (0));
    assert_null (ami_action_name (AMI_ACT_MAX + 1));
    assert_null (ami_action_name (-1));
    assert_int_equal (ami_action_from_name ("READ"), 0);
    assert_int_equal (ami_action_from_name ("rea"), 0);
    assert_int_equal (ami_action_from_name (""), 0);
    assert_int_equal (ami_action_from_name (NULL), 0);

    assert_string_equal (ami_msg_type_name (AMI_MSG_READ_REQ), "READ_REQ");
    assert_string_equal (ami_msg_type_name (AMI_MSG_BATCH_ACK), "BATCH_ACK");
    assert_string_equal (ami_msg_type_name (AMI_MSG_API_INTERVALS), "API_INTERVALS");
    assert_string_equal (ami_msg_type_name (AMI_MSG_API_CUSTOMER), "API_CUSTOMER");
    assert_string_equal (ami_msg_type_name (AMI_MSG_API_VERIFY), "API_VERIFY");
    assert_string_equal (ami_msg_type_name (48), "UNKNOWN");
    assert_string_equal (ami_msg_type_name (0), "UNKNOWN");
    assert_string_equal (ami_msg_type_name (13), "UNKNOWN");
    assert_string_equal (ami_msg_type_name (-22), "UNKNOWN");
    assert_string_equal (ami_msg_type_name (256 + AMI_MSG_HELLO), "UNKNOWN");
    for (size_t t = 0; t < N_TYPES; t++)
        assert_string_not_equal (ami_msg_type_name (s_all_types [t]), "UNKNOWN");
}

static void
test_request_id_format (void **state)
{
    (void) state;
    static const uint8_t id [AMI_REQUEST_ID_SIZE] = {
        0x00, 0x01, 0x0a, 0x10, 0x7f, 0x80, 0xab, 0xcd,
        0xef, 0xff, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc
    };
    char out [2 * AMI_REQUEST_ID_SIZE + 1];
    memset (out, 'Z', sizeof out);
    assert_ptr_equal (ami_request_id_format (id, out), out);
    assert_string_equal (out, "00010a107f80abcdefff123456789abc");
}

int
main (void)
{
    s_blob = malloc (BLOB_SIZE);
    s_frame = malloc (AMI_MAX_FRAME);
    s_frame2 = malloc (AMI_MAX_FRAME);
    if (!s_blob || !s_frame || !s_frame2)
        return 1;
    s_bytes (s_blob, BLOB_SIZE, 1);

    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_roundtrip_every_type, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_roundtrip_zero_copy, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_roundtrip_realistic_sizes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_frame_size_boundary, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_encode_refuses_invalid, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_encode_bufsize, s_setup, s_teardown),
        cmocka_unit_test (test_bin8_signature_encoding),
        cmocka_unit_test_setup_teardown (test_signature_slot, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_peek_type, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_nonminimal_integers, s_setup, s_teardown),
        cmocka_unit_test (test_new_destroy_reset),
        cmocka_unit_test_setup_teardown (test_decode_reuse_and_failure_state, s_setup, s_teardown),
        cmocka_unit_test (test_obis),
        cmocka_unit_test (test_id_valid),
        cmocka_unit_test (test_action_and_type_names),
        cmocka_unit_test (test_request_id_format),
        cmocka_unit_test_setup_teardown (test_sec_int_5_read_req_range, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    free (s_blob);
    free (s_frame);
    free (s_frame2);
    return rc;
}
