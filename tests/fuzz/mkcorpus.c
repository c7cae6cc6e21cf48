/*  mkcorpus.c - write the fuzzers' seed corpus with the real encoder.

    Usage: mkcorpus DIR

    Writes into DIR one file per message type with realistic values, plus
    the edge cases a decoder most needs to see: the largest lists (a HELLO
    with 1024 meters, a READING with 32 registers, a full-day PROFILE, a
    1024-block BATCH...), the longest strings, empty optional fields and
    lists, a refusal READ_RESP and an ERROR without request id. Because the
    seeds come from ami_msg_encode, they can never drift from the codec.
    For the text-input fuzzers it also writes config-*.zpl (ZPL service
    configurations, fuzz_config), registry-*.tsv (meters.tsv lines with
    real Ed25519 keys, 4 and 7 columns, fuzz_registry) and cert-*.txt (a
    public certificate written by ami_cert_save_public, fuzz_cert). Every
    target reads every seed, so each must tolerate the others' files.
    Exits 0 after writing every file, 1 on any failure.
*/
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "ami_cert.h"
#include "ami_log.h"
#include "ami_msg.h"

/* 2026-06-01T00:00:00Z in ms */
#define T0_MS 1780272000000ULL

static uint8_t s_payload [AMI_MAX_SEALED];

static void
s_bytes (uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        p [i] = (uint8_t) x;
    }
}

/* exactly len id characters */
static void
s_long_id (char *out, size_t len, const char *prefix, unsigned n)
{
    char tmp [128];
    snprintf (tmp, sizeof tmp, "%s%u.%s", prefix, n, "abcdefghijklmnopqrstuvwxyz0123456789");
    memcpy (out, tmp, len);
    out [len] = 0;
}

static void
s_registers (ami_reading_t *r, bool max)
{
    /* DESIGN.md section 7, as the meter model reports them */
    static const struct { uint8_t a, c, d, e; int64_t v; int8_t s; uint8_t u; } regs [] = {
        { 0,  1,  0, 0, 1780272000,  0,   7 }, { 1,  1,  8, 0, 12345678, 0,  30 },
        { 1,  1,  8, 1,  8230452,    0,  30 }, { 1,  1,  8, 2,  4115226, 0,  30 },
        { 1,  2,  8, 0,   734512,    0,  30 }, { 1,  2,  8, 1,   734512, 0,  30 },
        { 1,  2,  8, 2,        0,    0,  30 }, { 1,  1,  7, 0,     1840, 0,  27 },
        { 1,  2,  7, 0,        0,    0,  27 }, { 1, 32,  7, 0,     2312, -1, 35 },
        { 1, 52,  7, 0,     2298,   -1,  35 }, { 1, 72,  7, 0,     2305, -1, 35 },
        { 1, 31,  7, 0,     3421,   -3,  33 }, { 1, 51,  7, 0,     2990, -3, 33 },
        { 1, 71,  7, 0,     2140,   -3,  33 }, { 1, 13,  7, 0,      957, -3, 255 },
        { 1, 14,  7, 0,     5001,   -2,  44 }, { 0, 96,  1, 0, 40000042, 0, 255 },
        { 0, 97, 98, 0,        0,    0, 255 },
    };
    size_t n = sizeof regs / sizeof regs [0];
    r->register_count = max ? AMI_MAX_REGISTERS : (uint32_t) n;
    for (uint32_t i = 0; i < r->register_count; i++) {
        ami_register_t *g = &r->registers [i];
        size_t k = i % n;
        g->obis [0] = regs [k].a; g->obis [1] = 0; g->obis [2] = regs [k].c;
        g->obis [3] = regs [k].d; g->obis [4] = regs [k].e; g->obis [5] = 255;
        g->value = max ? (i % 2 ? INT64_MAX : INT64_MIN) : regs [k].v;
        g->scaler = max ? (int8_t) (i % 2 ? 9 : -9) : regs [k].s;
        g->unit = regs [k].u;
        g->quality = max ? 0xff : AMI_Q_VALID;
    }
}

static void
s_reading (ami_reading_t *r, unsigned n, bool max)
{
    if (max)
        s_long_id (r->meter_id, AMI_MAX_ID, "utility.north:MTR-", n);
    else
        snprintf (r->meter_id, sizeof r->meter_id, "MTR-%06u", n);
    s_bytes (r->request_id, AMI_REQUEST_ID_SIZE, n);
    r->read_ms = T0_MS + n;
    r->quality = max ? UINT32_MAX : AMI_Q_VALID;
    s_registers (r, max);
}

static void
s_text (char *out, bool max)
{
    if (!max) {
        strcpy (out, "on-demand read completed in 3.2 ms");
        return;
    }
    const char *piece = "Z\xc3\xa4hler \xe2\x82\xac \xf0\x9f\x94\x8c ";
    size_t plen = strlen (piece), n = 0;
    while (n + plen <= AMI_MAX_TEXT) {
        memcpy (out + n, piece, plen);
        n += plen;
    }
    while (n < AMI_MAX_TEXT)
        out [n++] = '.';
    out [n] = 0;
}

/*  Fill m with a sample: variant 0 typical, 1 maximum, 2 other edge. */
static void
s_fill (ami_msg_t *m, int type, int variant)
{
    bool max = variant == 1;
    ami_msg_reset (m, (ami_msg_type_t) type);
    switch (type) {
        case AMI_MSG_HELLO:
            strcpy (m->hello.role, max ? "aggregator-relay" : "meter");
            strcpy (m->hello.node_id, "FLEET-NORTH-01");
            m->hello.meter_count = max ? AMI_MAX_HELLO_METERS : variant == 2 ? 0 : 8;
            for (unsigned i = 0; i < m->hello.meter_count; i++)
                snprintf (m->hello.meters [i], AMI_MAX_ID + 1, "MTR-%06u", i + 1);
            break;
        case AMI_MSG_HEALTH:
            strcpy (m->health.role, "headend");
            strcpy (m->health.node_id, "HE-01");
            m->health.state = max ? AMI_STATE_DOWN : AMI_STATE_READY;
            m->health.uptime_ms = max ? UINT64_MAX : 86400123;
            m->health.stat_count = max ? AMI_MAX_STATS : variant == 2 ? 0 : 4;
            for (unsigned i = 0; i < m->health.stat_count; i++) {
                if (max)
                    s_long_id (m->health.stats [i].name, AMI_MAX_ID, "stat.", i);
                else
                    snprintf (m->health.stats [i].name, AMI_MAX_ID + 1, "reads.%u", i);
                m->health.stats [i].value = max ? UINT64_MAX - i : 1000 * (i + 1);
            }
            break;
        case AMI_MSG_EVENT:
            m->event.seq = max ? UINT64_MAX : 1001;
            m->event.time_ms = T0_MS + 3217;
            m->event.kind = max ? AMI_EV_SECURITY : AMI_EV_READ_DONE;
            if (max)
                s_long_id (m->event.meter_id, AMI_MAX_ID, "utility.north:MTR-", 42);
            else
                strcpy (m->event.meter_id, variant == 2 ? "" : "MTR-000042");
            strcpy (m->event.origin, "mdms-1");
            if (variant != 2)
                s_text (m->event.text, max);
            break;
        case AMI_MSG_ERROR:
            m->error.has_request_id = variant != 2;
            s_bytes (m->error.request_id, AMI_REQUEST_ID_SIZE, 77);
            m->error.code = variant == 2 ? AMI_E_DENIED : AMI_E_UNREACHABLE;
            strcpy (m->error.origin, "HE-02");
            if (variant == 0)
                strcpy (m->error.text, "meter MTR-000042 did not answer within 2000 ms");
            else
            if (max)
                s_text (m->error.text, true);
            break;
        case AMI_MSG_READ_REQ:
            if (max)
                s_long_id (m->read_req.meter_id, AMI_MAX_ID, "utility.north:MTR-", 42);
            else
                strcpy (m->read_req.meter_id, "MTR-000042");
            s_bytes (m->read_req.request_id, AMI_REQUEST_ID_SIZE, 42);
            m->read_req.counter = max ? UINT64_MAX : 17;
            m->read_req.issued_ms = max ? UINT64_MAX - 1 : T0_MS;
            m->read_req.expires_ms = max ? UINT64_MAX : T0_MS + 30000;
            if (max) {
                /* SEC-INT-5: the longest load-profile range */
                m->read_req.profile_to_s = UINT64_MAX;
                m->read_req.profile_from_s = UINT64_MAX - AMI_PROFILE_RECOVER_MAX_S;
            }
            else
            if (variant == 2) {
                /* SEC-INT-5: a recover of one day */
                m->read_req.profile_from_s = T0_MS / 1000 - 86400;
                m->read_req.profile_to_s = T0_MS / 1000;
            }
            s_bytes (m->read_req.signature, AMI_SIGNATURE_SIZE, 4242);
            break;
        case AMI_MSG_READ_RESP:
            strcpy (m->read_resp.meter_id, "MTR-000042");
            s_bytes (m->read_resp.request_id, AMI_REQUEST_ID_SIZE, 42);
            m->read_resp.status = variant == 2 ? AMI_E_REPLAY : AMI_OK;
            m->read_resp.sealed = variant == 2 ? NULL : s_payload;
            m->read_resp.sealed_size = variant == 2 ? 0 : max ? AMI_MAX_SEALED : 48 + 390;
            s_bytes (m->read_resp.signature, AMI_SIGNATURE_SIZE, 4343);
            break;
        case AMI_MSG_READING:
            s_reading (&m->reading, 42, max);
            break;
        case AMI_MSG_PROFILE:
            strcpy (m->profile.meter_id, "MTR-000042");
            m->profile.seq = max ? UINT64_MAX : 155;
            m->profile.made_ms = max ? UINT64_MAX : T0_MS + 3600000;
            m->profile.record_count = variant == 2 ? 1 : AMI_MAX_PROFILE_RECORDS;
            for (unsigned i = 0; i < m->profile.record_count; i++) {
                ami_interval_t *iv = &m->profile.records [i];
                iv->end_s = max ? UINT32_MAX - i : (uint32_t) (T0_MS / 1000) + 900 * (i + 1);
                iv->import_wh = max ? UINT64_MAX - i : 12345678 + i * 97;
                iv->export_wh = max ? UINT64_MAX : 734512;
                iv->status = max ? UINT16_MAX : AMI_Q_VALID;
            }
            break;
        case AMI_MSG_BATCH:
            /* the full batch uses small boxes so the seed stays ~30 KB */
            m->batch.batch_id = max ? UINT64_MAX : 90210;
            strcpy (m->batch.origin, "AGG-0003");
            m->batch.block_count = max ? AMI_MAX_BATCH_BLOCKS : variant == 2 ? 1 : 3;
            for (unsigned i = 0; i < m->batch.block_count; i++) {
                ami_block_t *b = &m->batch.blocks [i];
                snprintf (b->meter_id, AMI_MAX_ID + 1, "MTR-%06u", i + 1);
                b->seq = 155 + i;
                b->box = s_payload + (i % 64);
                b->box_size = max ? 8 : variant == 2 ? AMI_MAX_SEALED - 64 : 40 + 96 * 16;
            }
            break;
        case AMI_MSG_BATCH_ACK:
            m->batch_ack.batch_id = max ? UINT64_MAX : 90210;
            m->batch_ack.status = variant == 2 ? AMI_E_STORAGE : AMI_OK;
            m->batch_ack.credit = max ? UINT32_MAX : 4;
            break;
        case AMI_MSG_API_REQ:
            s_bytes (m->api_req.corr, AMI_REQUEST_ID_SIZE, 99);
            m->api_req.action = variant == 2 ? AMI_ACT_STATUS : max ? AMI_ACT_RECOVER : AMI_ACT_READ;
            if (variant != 2)
                strcpy (m->api_req.meter_id, "MTR-000042");
            m->api_req.from_ms = max ? T0_MS - 86400000 : 0;
            m->api_req.to_ms = max ? T0_MS : 0;
            m->api_req.limit = max ? 100 : 0;
            m->api_req.timeout_ms = max ? UINT32_MAX : 5000;
            break;
        case AMI_MSG_API_READINGS:
            s_bytes (m->api_readings.corr, AMI_REQUEST_ID_SIZE, 100);
            m->api_readings.more = max;
            m->api_readings.count = max ? 10 : variant == 2 ? 0 : 2;
            for (unsigned i = 0; i < m->api_readings.count; i++) {
                s_reading (&m->api_readings.readings [i].reading, i + 1, max);
                m->api_readings.readings [i].requested_ms = T0_MS + i * 60000;
                m->api_readings.readings [i].stored_ms = T0_MS + i * 60000 + 4;
            }
            break;
        case AMI_MSG_API_METERS:
            s_bytes (m->api_meters.corr, AMI_REQUEST_ID_SIZE, 101);
            m->api_meters.more = max;
            m->api_meters.count = max ? AMI_MAX_API_METERS : variant == 2 ? 0 : 3;
            for (unsigned i = 0; i < m->api_meters.count; i++) {
                ami_meter_row_t *r = &m->api_meters.meters [i];
                snprintf (r->meter_id, AMI_MAX_ID + 1, "MTR-%06u", i + 1);
                snprintf (r->aggregator_id, AMI_MAX_ID + 1, "AGG-%04u", i / 64 + 1);
                r->last_read_ms = i % 5 == 4 ? 0 : T0_MS - i * 1000;
                r->state = i % 5 == 4 ? AMI_STATE_DOWN : AMI_STATE_READY;
            }
            break;
        case AMI_MSG_API_STATUS:
            s_bytes (m->api_status.corr, AMI_REQUEST_ID_SIZE, 102);
            m->api_status.more = max;     /* a full page: more follow */
            m->api_status.count = max ? AMI_MAX_API_SERVICES : variant == 2 ? 0 : 5;
            for (unsigned i = 0; i < m->api_status.count; i++) {
                ami_service_row_t *r = &m->api_status.services [i];
                strcpy (r->role, i == 0 ? "mdms" : i == 1 ? "broker" : i < 4 ? "headend" : "aggregator");
                snprintf (r->node_id, AMI_MAX_ID + 1, "node-%02u", i + 1);
                r->state = (uint8_t) (i % (AMI_STATE_MAX + 1));
                r->uptime_ms = 3600000 + i;
                r->age_ms = 250 + i;
                /* a full page carries full rows: AMI_MAX_STATS each */
                r->stat_count = max ? AMI_MAX_STATS : i % 3;
                for (unsigned k = 0; k < r->stat_count; k++) {
                    snprintf (r->stats [k].name, AMI_MAX_ID + 1, "stat_%u", k);
                    r->stats [k].value = 1000u * i + k;
                }
            }
            break;
        case AMI_MSG_API_INTERVALS:
            s_bytes (m->api_intervals.corr, AMI_REQUEST_ID_SIZE, 103);
            strcpy (m->api_intervals.meter_id, "MTR-000042");
            m->api_intervals.more = max;
            /* a week, not the full month: keeps the seed ~20 KB */
            m->api_intervals.count = max ? 7 * 96 : variant == 2 ? 0 : 96;
            for (unsigned i = 0; i < m->api_intervals.count; i++) {
                ami_interval_t *iv = &m->api_intervals.records [i];
                iv->end_s = (uint32_t) (T0_MS / 1000) + 900 * (i + 1);
                iv->import_wh = 12345678 + i * 97;
                iv->export_wh = 734512 + (i % 96 > 40 && i % 96 < 70 ? i : 0);
                iv->status = i % 50 == 7 ? AMI_Q_ESTIMATED : AMI_Q_VALID;
            }
            break;
        case AMI_MSG_API_AUDIT:
            s_bytes (m->api_audit.corr, AMI_REQUEST_ID_SIZE, 104);
            m->api_audit.count = max ? 64 : variant == 2 ? 0 : 3;
            for (unsigned i = 0; i < m->api_audit.count; i++) {
                ami_audit_row_t *r = &m->api_audit.entries [i];
                r->seq = 1 + i;
                r->time_ms = T0_MS + i * 1000;
                strcpy (r->operator_id, i % 2 ? "bob" : "alice");
                strcpy (r->role, i % 2 ? "VIEWER" : "OPERATOR");
                r->action = (uint8_t) (1 + i % AMI_ACT_MAX);
                strcpy (r->meter_id, i % 3 == 2 ? "" : "MTR-000042");
                s_bytes (r->corr, AMI_REQUEST_ID_SIZE, 200 + i);
                r->result = i % 2 ? AMI_E_DENIED : AMI_OK;
                s_bytes (r->hash, AMI_HASH_SIZE, 300 + i);
            }
            break;
        case AMI_MSG_API_CUSTOMER:
            s_bytes (m->api_customer.corr, AMI_REQUEST_ID_SIZE, 105);
            strcpy (m->api_customer.meter_id, "MTR-000042");
            if (max) {
                /* 64-byte name and 256-byte address, multi-byte UTF-8 */
                m->api_customer.name [0] = 0;
                for (int i = 0; i < 12; i++)
                    strcat (m->api_customer.name, "Zo\xc3\xab ");
                strcat (m->api_customer.name, "\xc3\x98st");
                s_text (m->api_customer.address, true);
                strcpy (m->api_customer.account, "utility.north:ACC-0000000000042");
            }
            else {
                strcpy (m->api_customer.name, variant == 2 ? "X" : "Ren\xc3\xa9" "e Hoffmann");
                strcpy (m->api_customer.address, variant == 2 ? "" : "Lindenstra\xc3\x9f" "e 12, 80331 M\xc3\xbcnchen");
                strcpy (m->api_customer.account, variant == 2 ? "A" : "ACC-00000042");
            }
            break;
        case AMI_MSG_API_VERIFY:
            s_bytes (m->api_verify.corr, AMI_REQUEST_ID_SIZE, 106);
            m->api_verify.checked = max ? 100000 : variant == 2 ? 0 : 1000;
            m->api_verify.count = max ? AMI_MAX_API_FAILURES : variant == 2 ? 0 : 3;
            m->api_verify.failed = max ? 1000 : m->api_verify.count;
            for (unsigned i = 0; i < m->api_verify.count; i++) {
                static const uint16_t codes [] = { AMI_E_BAD_SIGNATURE, AMI_E_DECRYPT, AMI_E_RANGE, AMI_E_NOTFOUND };
                m->api_verify.failures [i].ref = max ? 1 + i : T0_MS + i * 900000;
                m->api_verify.failures [i].code = codes [i % 4];
            }
            break;
    }
}

static const struct {
    int type;
    const char *name;
} s_types [] = {
    { AMI_MSG_HELLO, "hello" }, { AMI_MSG_HEALTH, "health" },
    { AMI_MSG_EVENT, "event" }, { AMI_MSG_ERROR, "error" },
    { AMI_MSG_READ_REQ, "read_req" }, { AMI_MSG_READ_RESP, "read_resp" },
    { AMI_MSG_READING, "reading" }, { AMI_MSG_PROFILE, "profile" },
    { AMI_MSG_BATCH, "batch" }, { AMI_MSG_BATCH_ACK, "batch_ack" },
    { AMI_MSG_API_REQ, "api_req" }, { AMI_MSG_API_READINGS, "api_readings" },
    { AMI_MSG_API_METERS, "api_meters" }, { AMI_MSG_API_STATUS, "api_status" },
    { AMI_MSG_API_INTERVALS, "api_intervals" }, { AMI_MSG_API_AUDIT, "api_audit" },
    { AMI_MSG_API_CUSTOMER, "api_customer" }, { AMI_MSG_API_VERIFY, "api_verify" },
};

static const char *s_variant_suffix [] = { "", "-max", "-edge" };

/*  Text seeds for fuzz_config, fuzz_registry and fuzz_cert. */

static int
s_write_file (const char *dir, const char *name, const char *text, size_t len)
{
    char path [4096];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen (path, "wb");
    bool ok = f && fwrite (text, 1, len, f) == len;
    if (f && fclose (f) != 0)
        ok = false;
    if (!ok) {
        fprintf (stderr, "mkcorpus: cannot write %s: %s\n", path, strerror (errno));
        return 1;
    }
    return 0;
}

static const char s_config_mdms [] =
    "#   mdms: the MDMS (ami-mdms)\n"
    "node\n"
    "    id = mdms\n"
    "    cert = \"/etc/ami/keys/nodes/mdms.cert\"\n"
    "    allow = \"/etc/ami/keys/allow/mdms\"  # head ends + operators\n"
    "log\n"
    "    level = info\n"
    "heartbeat = 1s\n"
    "mdms\n"
    "    api = tcp://127.0.0.1:7100  # operators (amictl), REQ/ROUTER\n"
    "    ingest = tcp://127.0.0.1:7101\n"
    "    events = tcp://127.0.0.1:7102\n"
    "    broker = tcp://127.0.0.1:7000\n"
    "    db = '/var/lib/ami/mdms'\n"
    "    registry = \"/etc/ami/meters.tsv\"\n"
    "    read-timeout = 3s\n"
    "    retries = 3\n"
    "    rate\n"
    "        operator = 0\n"
    "        operator-burst = 20\n"
    "        meter = 0\n"
    "        meter-burst = 4\n";

static const char s_config_edge [] =
    "# edge cases: empty values, repeated keys (a list), quotes, CRLF\n"
    "node\n"
    "    id =\n"
    "fleet\n"
    "    meters = 8\r\n"
    "    uplink\n"
    "        endpoint = \"tcp://127.0.0.1:7301\"\n"
    "    uplink\n"
    "        endpoint = 'tcp://127.0.0.1:7302'\n"
    "    seed = -9223372036854775808\n"
    "    interval = 250ms\n"
    "    enabled = Yes\n"
    "heartbeat = 1500\n"
    "log\n"
    "    level = \"debug\"   # comment after a quoted value\n"
    "\n"
    "    # indented comment\n";

/*  A registry line for meter n with a real key (seeded, reproducible). */
static void
s_registry_line (char *out, size_t size, unsigned n, bool customer, bool upper)
{
    uint8_t seed [crypto_sign_SEEDBYTES] = { 0 }, pk [crypto_sign_PUBLICKEYBYTES];
    uint8_t sk [crypto_sign_SECRETKEYBYTES];
    seed [0] = (uint8_t) n;
    seed [1] = (uint8_t) (n >> 8);
    crypto_sign_seed_keypair (pk, sk, seed);
    char hex [2 * crypto_sign_PUBLICKEYBYTES + 1];
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    for (char *h = hex; upper && *h; h++)
        if (*h >= 'a' && *h <= 'f')
            *h = (char) (*h - 'a' + 'A');
    if (customer)
        snprintf (out, size, "MTR-%06u\tfleet-%u\tagg-%u\t%s\tZo\xc3\xab Dahlke\t"
                  "Weidenstieg %u, Apt #4, 10002 Birkenhain\tACC-%08u\n",
                  n, 1 + n % 2, 1 + n % 2, hex, n, n);
    else
        snprintf (out, size, "MTR-%06u\tfleet-%u\tagg-%u\t%s\n", n, 1 + n % 2, 1 + n % 2, hex);
}

static int
s_text_seeds (const char *dir, int *written)
{
    int rc = 0;
    rc |= s_write_file (dir, "config-mdms.zpl", s_config_mdms, strlen (s_config_mdms));
    rc |= s_write_file (dir, "config-edge.zpl", s_config_edge, strlen (s_config_edge));

    char line [1100];
    char text [8192];
    size_t n = 0;
    //  4 columns, with a whole-line comment, a trailing comment and CRLF
    n += (size_t) snprintf (text + n, sizeof text - n, "# meter_id\tfleet\taggregator\tsign_pk\n\n");
    for (unsigned i = 1; i <= 4; i++) {
        s_registry_line (line, sizeof line, i, false, i == 3);
        n += (size_t) snprintf (text + n, sizeof text - n, "%s", line);
    }
    s_registry_line (line, sizeof line, 5, false, false);
    line [strlen (line) - 1] = 0;
    n += (size_t) snprintf (text + n, sizeof text - n, "%s  # spare\r\n", line);
    rc |= s_write_file (dir, "registry-4col.tsv", text, n);

    //  7 columns (customer data, '#' as text in the address)
    n = 0;
    for (unsigned i = 10; i <= 14; i++) {
        s_registry_line (line, sizeof line, i, true, false);
        n += (size_t) snprintf (text + n, sizeof text - n, "%s", line);
    }
    rc |= s_write_file (dir, "registry-7col.tsv", text, n);

    //  One 7-column line without a newline, empty address
    s_registry_line (line, sizeof line, 20, false, false);
    line [strlen (line) - 1] = 0;
    n = (size_t) snprintf (text, sizeof text, "%s\tA\t\tACC-1", line);
    rc |= s_write_file (dir, "registry-line7.tsv", text, n);

    //  A public certificate as ami_cert_save_public writes it
    int err = 0;
    ami_cert_t *cert = ami_cert_new ("meter", "FLEET-NORTH-01", &err);
    if (!cert) {
        fprintf (stderr, "mkcorpus: ami_cert_new failed: %s\n", ami_strerror (err));
        return 1;
    }
    char path [4096];
    snprintf (path, sizeof path, "%s/cert-public.txt", dir);
    if (ami_cert_save_public (cert, path) != AMI_OK) {
        fprintf (stderr, "mkcorpus: cannot write %s\n", path);
        rc = 1;
    }
    ami_cert_destroy (&cert);
    if (rc == 0)
        *written += 6;
    return rc;
}

int
main (int argc, char *argv [])
{
    if (argc != 2) {
        fprintf (stderr, "usage: %s DIR\n", argv [0]);
        return 1;
    }
    const char *dir = argv [1];
    if (mkdir (dir, 0755) != 0 && errno != EEXIST) {
        fprintf (stderr, "mkcorpus: cannot create %s: %s\n", dir, strerror (errno));
        return 1;
    }
    s_bytes (s_payload, sizeof s_payload, 1);
    ami_msg_t *msg = ami_msg_new ();
    uint8_t *buf = malloc (AMI_MAX_FRAME);
    if (!msg || !buf) {
        fprintf (stderr, "mkcorpus: out of memory\n");
        return 1;
    }
    int written = 0, rc = 0;
    for (size_t t = 0; t < sizeof s_types / sizeof s_types [0] && rc == 0; t++)
        for (int variant = 0; variant < 3 && rc == 0; variant++) {
            s_fill (msg, s_types [t].type, variant);
            size_t len = 0;
            int err = ami_msg_encode (msg, buf, AMI_MAX_FRAME, &len);
            if (err) {
                fprintf (stderr, "mkcorpus: %s%s does not encode: %s\n", s_types [t].name,
                         s_variant_suffix [variant], ami_strerror (err));
                rc = 1;
                break;
            }
            char path [4096];
            snprintf (path, sizeof path, "%s/%s%s.bin", dir, s_types [t].name, s_variant_suffix [variant]);
            FILE *f = fopen (path, "wb");
            bool ok = f && fwrite (buf, 1, len, f) == len;
            if (f && fclose (f) != 0)
                ok = false;
            if (!ok) {
                fprintf (stderr, "mkcorpus: cannot write %s: %s\n", path, strerror (errno));
                rc = 1;
                break;
            }
            written++;
        }
    ami_msg_destroy (&msg);
    free (buf);
    if (rc == 0) {
        ami_log_set_level (AMI_LOG_WARN);
        if (sodium_init () < 0)
            rc = 1;
        else
            rc = s_text_seeds (dir, &written);
    }
    if (rc == 0)
        printf ("mkcorpus: %d seeds in %s\n", written, dir);
    return rc;
}
