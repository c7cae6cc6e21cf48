/*  test_client.c - the operator API client shared by amictl and ami-load
    (common/ami_client.c) against a stand-in MDMS, and amictl's interval
    renderings and gap finder (tools/amictl/amictl_intervals.c).

    One ami_auth for the process (its allow-list holds the operator's
    public certificate only); the stand-in is a CURVE ROUTER in an actor
    that answers API_REQs:
      STATUS     S_STATUS_ROWS services with stats (more than two pages):
                 the mdms, fleet-1 (DEGRADED) and node-0002.. (READY),
                 paged by from_ms (rows to skip) and limit; the pipe
                 command "STATUS-MODE n" (answered with a signal) makes
                 it misbehave: S_SHIFT each page starts one row early (a
                 service appeared), S_LOOP the first page again and again
                 with `more`, S_EMPTY `more` on a page with no row
      INTERVALS  pages from a synthetic load profile of meter MTR-000001
                 (S_RECORDS records every 900 s from S_BASE, holes at the
                 indexes in s_holes), <= limit records per page, `more`
                 when truncated; for meter LOOP: `more` with the same
                 record every time (a server that would make a naive client
                 page forever); for meter OTHER: an API_INTERVALS of
                 another meter
      READ       API_READINGS of the meter asked, with its corr (the
                 pipelined test sends many at once)
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_client.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_test.h"

#include "../../tools/amictl/amictl_json.c"
#include "../../tools/amictl/amictl_print.c"
#include "../../tools/amictl/amictl_intervals.c"

/* The synthetic load profile: 5000 records (more than one page of 2976),
   15-minute ends from S_BASE + 900, four holes. */
#define S_BASE      1795651200ULL      /* 2026-11-26T00:00:00Z */
#define S_STEP      900
#define S_RECORDS   5000
static const uint32_t s_holes [] = { 0, 10, 11, 4999 };
/* STATUS rows: more than two pages of AMI_MAX_API_SERVICES. */
#define S_STATUS_ROWS   152
enum { S_PAGED = 0, S_SHIFT, S_LOOP, S_EMPTY };
/* A read of this meter gets an ERROR whose text holds a CSI in both its
   C0 (ESC [) and C1 (U+009B) forms, a BEL and a line feed. */
#define S_HOSTILE       "MTR-HOSTILE"
#define S_HOSTILE_TEXT  "meter gone\x1b[2J\xc2\x9b" "31mRED\x07\nFAKE LINE"

static bool
s_is_hole (uint32_t index)
{
    for (size_t i = 0; i < sizeof s_holes / sizeof s_holes [0]; i++)
        if (s_holes [i] == index)
            return true;
    return false;
}

static uint32_t
s_end (uint32_t index)
{
    return (uint32_t) (S_BASE + (uint64_t) (index + 1) * S_STEP);
}

typedef struct {
    ami_cert_t *cert;           /* the MDMS's (secret) */
    int status_mode;            /* S_PAGED, ...: the actor's own copy */
} stand_in_args_t;

/*  STATUS row i of the stand-in's list. */
static void
s_status_row (ami_service_row_t *row, uint32_t i)
{
    memset (row, 0, sizeof *row);
    if (i == 0) {
        strcpy (row->role, "mdms");
        strcpy (row->node_id, "mdms");
        row->state = AMI_STATE_READY;
        row->stat_count = 2;
        strcpy (row->stats [0].name, "intervals_stored");
        row->stats [0].value = 123456789;
        strcpy (row->stats [1].name, "ingest_lat_p99_us");
        row->stats [1].value = 4321;
    }
    else
    if (i == 1) {
        strcpy (row->role, "meter");
        strcpy (row->node_id, "fleet-1");
        row->state = AMI_STATE_DEGRADED;
        row->stat_count = 20;
        for (int k = 0; k < 20; k++) {
            snprintf (row->stats [k].name, AMI_MAX_ID + 1, "profile_stat_%02d", k);
            row->stats [k].value = (uint64_t) k * 1000003;
        }
    }
    else {
        strcpy (row->role, "meter");
        snprintf (row->node_id, AMI_MAX_ID + 1, "node-%04u", i);
        row->state = AMI_STATE_READY;
        row->stat_count = 1;
        strcpy (row->stats [0].name, "meters");
        row->stats [0].value = i;
    }
}

static void
s_answer (ami_msg_t *in, ami_msg_t *out, int status_mode)
{
    ami_api_req_t req = in->api_req;
    if (req.action == AMI_ACT_STATUS) {
        ami_msg_reset (out, AMI_MSG_API_STATUS);
        ami_api_status_t *status = &out->api_status;
        memcpy (status->corr, req.corr, AMI_REQUEST_ID_SIZE);
        uint32_t limit = req.limit && req.limit < AMI_MAX_API_SERVICES ? req.limit
                                                                       : AMI_MAX_API_SERVICES;
        uint64_t first = status_mode == S_LOOP ? 0 : req.from_ms;
        if (status_mode == S_SHIFT && first > 0)
            first--;                //  a service appeared before the cursor
        if (status_mode == S_EMPTY && first > 0) {
            status->more = true;    //  and no row
            return;
        }
        for (uint64_t i = first; i < S_STATUS_ROWS; i++) {
            if (status->count == limit) {
                status->more = true;
                break;
            }
            s_status_row (&status->services [status->count++], (uint32_t) i);
        }
        if (status_mode == S_LOOP)
            status->more = true;
        return;
    }
    if (req.action == AMI_ACT_INTERVALS) {
        ami_msg_reset (out, AMI_MSG_API_INTERVALS);
        ami_api_intervals_t *page = &out->api_intervals;
        memcpy (page->corr, req.corr, AMI_REQUEST_ID_SIZE);
        snprintf (page->meter_id, sizeof page->meter_id, "%s",
                  strcmp (req.meter_id, "OTHER") == 0 ? "MTR-000002" : req.meter_id);
        uint32_t limit = req.limit && req.limit < AMI_MAX_API_INTERVALS ? req.limit
                                                                        : AMI_MAX_API_INTERVALS;
        if (strcmp (req.meter_id, "LOOP") == 0) {
            page->more = true;
            page->count = 1;
            page->records [0].end_s = s_end (1);
            return;
        }
        for (uint32_t i = 0; i < S_RECORDS; i++) {
            uint64_t end_ms = (uint64_t) s_end (i) * 1000;
            if (s_is_hole (i) || end_ms < req.from_ms || (req.to_ms && end_ms > req.to_ms))
                continue;
            if (page->count == limit) {
                page->more = true;
                break;
            }
            ami_interval_t *r = &page->records [page->count++];
            r->end_s = s_end (i);
            r->import_wh = 1000 + i;
            r->export_wh = 7;
            r->status = i == 5 ? AMI_Q_POWER_FAIL : 0;
        }
        return;
    }
    if (strcmp (req.meter_id, S_HOSTILE) == 0) {
        //  a relay's ERROR whose text tries to drive the operator's terminal
        ami_msg_reset (out, AMI_MSG_ERROR);
        out->error.has_request_id = true;
        memcpy (out->error.request_id, req.corr, AMI_REQUEST_ID_SIZE);
        out->error.code = AMI_E_UNREACHABLE;
        snprintf (out->error.origin, sizeof out->error.origin, "fleet-1");
        snprintf (out->error.text, sizeof out->error.text, "%s", S_HOSTILE_TEXT);
        return;
    }
    ami_msg_reset (out, AMI_MSG_API_READINGS);
    memcpy (out->api_readings.corr, req.corr, AMI_REQUEST_ID_SIZE);
    out->api_readings.count = 1;
    ami_stored_reading_t *row = &out->api_readings.readings [0];
    snprintf (row->reading.meter_id, sizeof row->reading.meter_id, "%s", req.meter_id);
    row->reading.read_ms = 1;
    row->reading.register_count = 1;
    memcpy (row->reading.registers [0].obis, (uint8_t []) { 1, 0, 1, 8, 0, 255 }, 6);
    row->reading.registers [0].unit = 30;
}

static void
s_stand_in (zsock_t *pipe, void *args)
{
    stand_in_args_t *self = (stand_in_args_t *) args;
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    assert (router);
    zsock_set_linger (router, 0);
    zsock_set_maxmsgsize (router, AMI_MAX_FRAME);
    assert (ami_auth_server (router, self->cert) == AMI_OK);
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    assert (port > 0);
    zsock_signal (pipe, 0);
    zstr_sendf (pipe, "tcp://127.0.0.1:%d", port);
    ami_msg_t *in = ami_msg_new (), *out = ami_msg_new ();
    uint8_t *buf = malloc (AMI_MAX_FRAME);
    assert (in && out && buf);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool mode = command && strncmp (command, "STATUS-MODE ", 12) == 0;
            if (mode) {
                self->status_mode = atoi (command + 12);
                zsock_signal (pipe, 0);
            }
            zstr_free (&command);
            if (mode)
                continue;
        }
        if (which != router)
            break;                          //  $TERM or interrupted
        zmsg_t *msg = zmsg_recv (router);
        zframe_t *id = zmsg_pop (msg), *empty = zmsg_pop (msg), *body = zmsg_pop (msg);
        if (body && ami_msg_decode (in, zframe_data (body), zframe_size (body)) == AMI_OK
        &&  in->type == AMI_MSG_API_REQ) {
            s_answer (in, out, self->status_mode);
            size_t len = 0;
            int rc = ami_msg_encode (out, buf, AMI_MAX_FRAME, &len);
            assert (rc == AMI_OK);
            zmsg_t *reply = zmsg_new ();
            zmsg_append (reply, &id);
            zmsg_append (reply, &empty);
            zmsg_addmem (reply, buf, len);
            zmsg_send (&reply, router);
        }
        zframe_destroy (&id);
        zframe_destroy (&empty);
        zframe_destroy (&body);
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    free (buf);
    ami_msg_destroy (&in);
    ami_msg_destroy (&out);
    zsock_destroy (&router);
}

/* ---------------------------------------------------------------------- */
/*  Fixture: one auth, the stand-in, an operator and a stranger            */

typedef struct {
    char *dir;
    ami_auth_t *auth;
    ami_cert_t *mdms, *operator, *stranger;
    stand_in_args_t args;
    zactor_t *stand_in;
    char *endpoint;
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *f = calloc (1, sizeof *f);
    assert_non_null (f);
    int err = 0;
    f->dir = ami_test_tmpdir ("client");
    assert_non_null (f->dir);
    f->mdms = ami_cert_new ("mdms", "mdms", &err);
    f->operator = ami_cert_new ("operator", "op", &err);
    f->stranger = ami_cert_new ("operator", "stranger", &err);
    assert_non_null (f->mdms);
    assert_non_null (f->operator);
    assert_non_null (f->stranger);
    char *path = ami_test_path (f->dir, "op.cert");
    assert_int_equal (ami_cert_save_public (f->operator, path), AMI_OK);
    free (path);
    f->auth = ami_auth_new (f->dir, &err);              //  before any bind
    assert_non_null (f->auth);
    f->args.cert = f->mdms;
    f->stand_in = zactor_new (s_stand_in, &f->args);
    assert_non_null (f->stand_in);
    f->endpoint = zstr_recv (f->stand_in);
    assert_non_null (f->endpoint);
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = *state;
    zactor_destroy (&f->stand_in);
    zstr_free (&f->endpoint);
    ami_auth_destroy (&f->auth);
    ami_cert_destroy (&f->mdms);
    ami_cert_destroy (&f->operator);
    ami_cert_destroy (&f->stranger);
    ami_test_rmtree (f->dir);
    free (f->dir);
    free (f);
    return 0;
}

static ami_client_t *
s_client (fixture_t *f, ami_cert_t *cert, const char *endpoint)
{
    int err = -1;
    ami_client_t *client = ami_client_new (endpoint ? endpoint : f->endpoint, cert,
                                           ami_cert_public_txt (f->mdms), &err);
    assert_non_null (client);
    assert_int_equal (err, AMI_OK);
    return client;
}

/* ---------------------------------------------------------------------- */
/*  Client                                                                 */

static void
test_status_with_stats (void **state)
{
    fixture_t *f = *state;
    ami_client_t *client = s_client (f, f->operator, NULL);
    ami_api_req_t req = { .action = AMI_ACT_STATUS };
    ami_msg_t *reply = NULL;
    assert_int_equal (ami_client_request (client, &req, zclock_mono () + 5000, &reply), AMI_OK);
    assert_int_equal (reply->type, AMI_MSG_API_STATUS);
    assert_memory_equal (reply->api_status.corr, req.corr, AMI_REQUEST_ID_SIZE);
    //  the first page: full, and more follow
    assert_int_equal (reply->api_status.count, AMI_MAX_API_SERVICES);
    assert_true (reply->api_status.more);
    const ami_service_row_t *mdms = &reply->api_status.services [0];
    assert_int_equal (mdms->stat_count, 2);
    assert_string_equal (mdms->stats [0].name, "intervals_stored");
    assert_int_equal (mdms->stats [0].value, 123456789);
    assert_true (ami_client_handshakes (client) >= 0);

    //  amictl status: the stats under each row, wrapped; and in JSON
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    amictl_print_status (out, reply->api_status.services, reply->api_status.count);
    fclose (out);
    assert_non_null (strstr (text, "    intervals_stored=123456789 ingest_lat_p99_us=4321\n"));
    assert_non_null (strstr (text, "profile_stat_19=19000057\n"));
    for (char *line = text, *nl; (nl = strchr (line, '\n')); line = nl + 1)
        assert_true (nl - line <= AMICTL_STATUS_WIDTH);
    free (text);
    amictl_json_t *j = amictl_json_new ();
    amictl_json_status (j, reply->api_status.corr, reply->api_status.services,
                        reply->api_status.count);
    assert_non_null (strstr (amictl_json_text (j),
                             "\"stats\":{\"intervals_stored\":123456789,\"ingest_lat_p99_us\":4321}"));
    amictl_json_destroy (&j);
    ami_client_destroy (&client);
    ami_client_destroy (&client);       //  idempotent
    assert_null (client);
}

static void
test_intervals_paged (void **state)
{
    fixture_t *f = *state;
    ami_client_t *client = s_client (f, f->operator, NULL);
    ami_interval_t *records = NULL;
    size_t count = 0;
    uint8_t corr [AMI_REQUEST_ID_SIZE] = { 0 };
    ami_msg_t *reply = NULL;
    //  Everything: two pages (2976 + the rest), holes absent, ascending.
    assert_int_equal (ami_client_intervals (client, "MTR-000001", 0, 0, 5000, 5000, &records,
                                            &count, corr, &reply), AMI_OK);
    assert_int_equal (count, S_RECORDS - 4);
    for (size_t i = 1; i < count; i++)
        assert_true (records [i].end_s > records [i - 1].end_s);
    assert_int_equal (records [0].end_s, s_end (1));
    assert_int_equal (records [count - 1].end_s, s_end (4998));
    free (records);

    //  A range, inclusive at both ends.
    uint64_t from_ms = (uint64_t) s_end (9) * 1000, to_ms = (uint64_t) s_end (20) * 1000;
    assert_int_equal (ami_client_intervals (client, "MTR-000001", from_ms, to_ms, 5000, 5000,
                                            &records, &count, corr, &reply), AMI_OK);
    assert_int_equal (count, 12 - 2);
    assert_int_equal (records [0].end_s, s_end (9));
    assert_int_equal (records [count - 1].end_s, s_end (20));

    //  amictl gaps over a wider range: the two holes, then the missing tail
    amictl_gaps_t gaps;
    assert_int_equal (amictl_gaps_find (records, count, from_ms, to_ms + 3 * S_STEP * 1000,
                                        S_STEP, &gaps), 0);
    assert_int_equal (gaps.expected, 15);
    assert_int_equal (gaps.present, 10);
    assert_int_equal (gaps.missing, 5);
    assert_int_equal (gaps.gap_count, 2);
    assert_int_equal (gaps.gaps [0].first_s, s_end (10));
    assert_int_equal (gaps.gaps [0].last_s, s_end (11));
    assert_int_equal (gaps.gaps [0].count, 2);
    assert_int_equal (gaps.gaps [1].first_s, s_end (21));
    assert_int_equal (gaps.gaps [1].count, 3);
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    amictl_print_gaps (out, "MTR-000001", &gaps);
    fclose (out);
    assert_non_null (strstr (text, "15 expected, 10 present, 5 missing"));
    assert_non_null (strstr (text, "2026-11-26T02:45:00Z .. 2026-11-26T03:00:00Z"));
    free (text);
    amictl_json_t *j = amictl_json_new ();
    amictl_json_gaps (j, corr, "MTR-000001", &gaps);
    assert_non_null (strstr (amictl_json_text (j), "\"expected\":15,\"present\":10,\"missing\":5,"
                             "\"offGrid\":0,\"gaps\":[{\"from\":\"2026-11-26T02:45:00.000Z\","
                             "\"to\":\"2026-11-26T03:00:00.000Z\",\"count\":2}"));
    amictl_json_destroy (&j);
    amictl_gaps_free (&gaps);

    //  history --from/--to renderings
    out = open_memstream (&text, &size);
    amictl_print_intervals (out, "MTR-000001", from_ms, to_ms, records, count);
    fclose (out);
    assert_non_null (strstr (text, "2026-11-26T02:30:00Z              1009                7  valid\n"));
    assert_non_null (strstr (text, "\n10 interval(s)\n"));
    free (text);
    j = amictl_json_new ();
    amictl_json_intervals (j, corr, "MTR-000001", from_ms, to_ms, records, count);
    const char *json = amictl_json_text (j);
    assert_non_null (strstr (json, "{\"MeterReadings\":{\"correlationId\":\""));
    assert_non_null (strstr (json, "\"Meter\":{\"mRID\":\"MTR-000001\"},\"valuesInterval\":"
                             "{\"start\":\"2026-11-26T02:30:00.000Z\",\"end\":\"2026-11-26T05:15:00.000Z\"},"
                             "\"count\":10,\"IntervalBlocks\":[{\"ReadingType\":{\"obis\":\"1.0.1.8.0.255\""));
    assert_non_null (strstr (json, "\"intervalLength\":900"));
    assert_non_null (strstr (json, "\"obis\":\"1.0.2.8.0.255\""));
    assert_non_null (strstr (json, "{\"timeStamp\":\"2026-11-26T02:30:00.000Z\",\"value\":1009,"
                             "\"ReadingQualities\":[{\"ref\":\"valid\"}]}"));
    amictl_json_destroy (&j);
    free (records);

    //  Nothing in range: AMI_OK, no records.
    assert_int_equal (ami_client_intervals (client, "MTR-000001", 1000, 2000, 5000, 5000,
                                            &records, &count, corr, &reply), AMI_OK);
    assert_int_equal (count, 0);
    assert_null (records);
    ami_client_destroy (&client);
}

static void
test_intervals_misbehaving (void **state)
{
    fixture_t *f = *state;
    ami_client_t *client = s_client (f, f->operator, NULL);
    ami_interval_t *records = NULL;
    size_t count = 0;
    ami_msg_t *reply = NULL;
    //  `more` forever with the same record: one record, then it stops.
    int64_t start = zclock_mono ();
    assert_int_equal (ami_client_intervals (client, "LOOP", 0, 0, 5000, 5000, &records, &count,
                                            NULL, &reply), AMI_OK);
    assert_int_equal (count, 1);
    assert_true (zclock_mono () - start < 5000);
    free (records);
    //  An answer about another meter is refused.
    assert_int_equal (ami_client_intervals (client, "OTHER", 0, 0, 5000, 5000, &records, &count,
                                            NULL, &reply), AMI_E_INTERNAL);
    assert_null (records);
    assert_non_null (strstr (ami_client_why (client), "MTR-000002"));
    ami_client_destroy (&client);
}

static void
test_pipelined (void **state)
{
    fixture_t *f = *state;
    ami_client_t *client = s_client (f, f->operator, NULL);
    enum { N = 50 };
    bool seen [N] = { false };
    for (int i = 0; i < N; i++) {
        ami_api_req_t req = { .action = AMI_ACT_READ };
        memset (req.corr, 0xa5, AMI_REQUEST_ID_SIZE);
        req.corr [15] = (uint8_t) i;
        snprintf (req.meter_id, sizeof req.meter_id, "MTR-%06d", i + 1);
        assert_int_equal (ami_client_send (client, &req), AMI_OK);
    }
    int answered = 0;
    int64_t deadline = zclock_mono () + 5000;
    zmq_pollitem_t item = { ami_client_socket (client), 0, ZMQ_POLLIN, 0 };
    while (answered < N && zclock_mono () < deadline) {
        zmq_poll (&item, 1, 100);
        ami_msg_t *reply = NULL;
        int got;
        while ((got = ami_client_recv (client, &reply)) != 0) {
            assert_int_equal (got, 1);
            uint8_t corr [AMI_REQUEST_ID_SIZE];
            assert_true (ami_client_reply_corr (reply, corr));
            int i = corr [15];
            assert_true (i < N && !seen [i]);
            char meter [AMI_MAX_ID + 1];
            snprintf (meter, sizeof meter, "MTR-%06d", i + 1);
            assert_string_equal (reply->api_readings.readings [0].reading.meter_id, meter);
            seen [i] = true;
            answered++;
        }
    }
    assert_int_equal (answered, N);
    assert_int_equal (ami_client_check (client), 0);
    assert_true (ami_client_handshakes (client) >= 1);
    ami_client_destroy (&client);
}

static void
test_refused_and_absent (void **state)
{
    fixture_t *f = *state;
    //  A key not on the allow-list: DENIED at once, not a timeout.
    ami_client_t *client = s_client (f, f->stranger, NULL);
    ami_api_req_t req = { .action = AMI_ACT_STATUS };
    ami_msg_t *reply = NULL;
    int64_t start = zclock_mono ();
    assert_int_equal (ami_client_request (client, &req, zclock_mono () + 5000, &reply),
                      AMI_E_DENIED);
    assert_true (zclock_mono () - start < 4000);
    assert_non_null (strstr (ami_client_why (client), "allow-list"));
    ami_client_destroy (&client);
    //  Nobody listening: a timeout that says so.
    client = s_client (f, f->operator, "tcp://127.0.0.1:1");
    assert_int_equal (ami_client_request (client, &req, zclock_mono () + 300, &reply),
                      AMI_E_TIMEOUT);
    assert_non_null (strstr (ami_client_why (client), "no connection"));
    ami_client_destroy (&client);
}

/* ---------------------------------------------------------------------- */
/*  Gaps without a server                                                  */

static void
test_gaps_edges (void **state)
{
    (void) state;
    ami_interval_t records [6] = { { 0 } };
    records [0].end_s = 1800;
    records [1].end_s = 2000;           //  off the 900 s grid
    records [2].end_s = 2700;
    records [3].end_s = 2700;           //  a repeat is not counted twice
    records [4].end_s = 4500;
    records [5].end_s = 99000;          //  outside the range
    amictl_gaps_t gaps;
    //  from 0: the first end is 900 (an interval never ends at 0)
    assert_int_equal (amictl_gaps_find (records, 6, 0, 5400 * 1000, 900, &gaps), 0);
    assert_int_equal (gaps.first_s, 900);
    assert_int_equal (gaps.last_s, 5400);
    assert_int_equal (gaps.expected, 6);
    assert_int_equal (gaps.present, 3);
    assert_int_equal (gaps.missing, 3);
    assert_int_equal (gaps.off_grid, 1);
    assert_int_equal (gaps.gap_count, 3);
    assert_int_equal (gaps.gaps [0].first_s, 900);
    assert_int_equal (gaps.gaps [1].first_s, 3600);
    assert_int_equal (gaps.gaps [1].last_s, 3600);
    assert_int_equal (gaps.gaps [2].first_s, 5400);
    amictl_gaps_free (&gaps);
    //  a range that holds no end: nothing expected, nothing missing
    assert_int_equal (amictl_gaps_find (records, 6, 901 * 1000, 1799 * 1000, 900, &gaps), 0);
    assert_int_equal (gaps.expected, 0);
    assert_int_equal (gaps.missing, 0);
    amictl_gaps_free (&gaps);
    //  millisecond bounds: an end exactly at from and to counts
    assert_int_equal (amictl_gaps_find (records, 6, 1800000, 2700000, 900, &gaps), 0);
    assert_int_equal (gaps.expected, 2);
    assert_int_equal (gaps.present, 2);
    assert_int_equal (gaps.missing, 0);
    amictl_gaps_free (&gaps);
    //  nothing stored at all: one run over the whole range
    assert_int_equal (amictl_gaps_find (NULL, 0, 900000, 86400000, 900, &gaps), 0);
    assert_int_equal (gaps.missing, 96);
    assert_int_equal (gaps.gap_count, 1);
    assert_int_equal (gaps.gaps [0].count, 96);
    amictl_gaps_free (&gaps);
}

/*  Occurrences of needle in text. */
static int
s_count (const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr (p, needle)); p += strlen (needle))
        n++;
    return n;
}

/*  Set the stand-in's STATUS behaviour (S_PAGED, ...). */
static void
s_status_mode (fixture_t *f, int mode)
{
    assert_int_equal (zstr_sendf (f->stand_in, "STATUS-MODE %d", mode), 0);
    assert_int_equal (zsock_wait (f->stand_in), 0);
}

/*  Issue 6 (QUEUES.md gap 10): ami_client_status (behind amictl status
    and ami-load ingest) walks every page of API_STATUS: all
    S_STATUS_ROWS rows, each once, in the server's order, over three
    pages; rows a shifting list sends twice are kept once; a server that
    says `more` forever is stopped at AMI_CLIENT_STATUS_MAX_ROWS
    (AMI_E_LIMIT); `more` on an empty page ends the walk with what came;
    the first and last correlation ids are those of the first and last
    pages' requests. */
static void
test_issue6_status_pages (void **state)
{
    fixture_t *f = *state;
    ami_client_t *client = s_client (f, f->operator, NULL);
    ami_client_status_t status = { 0 };
    ami_msg_t *reply = NULL;
    int modes [] = { S_PAGED, S_SHIFT };
    for (size_t m = 0; m < sizeof modes / sizeof modes [0]; m++) {
        s_status_mode (f, modes [m]);
        assert_int_equal (ami_client_status (client, 0, 5000, &status, &reply), AMI_OK);
        assert_int_equal (status.count, S_STATUS_ROWS);
        for (uint32_t i = 0; i < S_STATUS_ROWS; i++) {
            ami_service_row_t want;
            s_status_row (&want, i);
            assert_string_equal (status.rows [i].node_id, want.node_id);
            assert_int_equal (status.rows [i].stat_count, want.stat_count);
            assert_true (status.rows [i].stats [0].value == want.stats [0].value);
        }
        if (modes [m] == S_PAGED) {
            assert_int_equal (status.pages, 3);                 //  64 + 64 + 24
            assert_int_equal (status.received, S_STATUS_ROWS);
        }
        else
            assert_true (status.received > S_STATUS_ROWS);      //  duplicates dropped
        assert_string_equal (ami_client_why (client), "");
        //  the last page answered the last request; the first came before
        assert_int_equal (reply->type, AMI_MSG_API_STATUS);
        assert_memory_equal (reply->api_status.corr, status.last_corr, AMI_REQUEST_ID_SIZE);
        assert_memory_not_equal (status.first_corr, status.last_corr, AMI_REQUEST_ID_SIZE);
    }
    s_status_mode (f, S_LOOP);
    assert_int_equal (ami_client_status (client, 0, 5000, &status, &reply), AMI_E_LIMIT);
    assert_int_equal (status.count, AMI_MAX_API_SERVICES);      //  the same rows, once
    assert_true (status.received <= AMI_CLIENT_STATUS_MAX_ROWS);
    assert_true (status.pages > AMI_CLIENT_STATUS_MAX_ROWS / AMI_MAX_API_SERVICES);
    assert_non_null (strstr (ami_client_why (client), "kept paging"));
    s_status_mode (f, S_EMPTY);
    assert_int_equal (ami_client_status (client, 0, 5000, &status, &reply), AMI_OK);
    assert_int_equal (status.count, AMI_MAX_API_SERVICES);
    assert_int_equal (status.pages, 2);
    //  a walk into a struct that holds one frees the old rows first
    //  (valgrind / ASan would see the leak) and starts from zero
    s_status_mode (f, S_PAGED);
    assert_int_equal (ami_client_status (client, 0, 5000, &status, &reply), AMI_OK);
    assert_int_equal (status.count, S_STATUS_ROWS);
    assert_int_equal (status.pages, 3);
    ami_client_status_free (&status);
    assert_null (status.rows);
    assert_int_equal (status.count, 0);
    ami_client_status_free (&status);   //  idempotent
    ami_client_status_free (NULL);
    ami_client_destroy (&client);
}

/*  Key files and an empty config for running bin/amictl against the
    stand-in. */
typedef struct {
    char *dir, *op, *mdms, *cfg, *out, *err;
} amictl_files_t;

static void
s_amictl_files (fixture_t *f, amictl_files_t *files)
{
    files->dir = ami_test_tmpdir ("client-op");
    assert_non_null (files->dir);
    files->op = ami_test_path (files->dir, "op.cert");
    files->mdms = ami_test_path (files->dir, "mdms.cert");
    files->cfg = ami_test_path (files->dir, "amictl.cfg");
    files->out = ami_test_path (files->dir, "stdout.txt");
    files->err = ami_test_path (files->dir, "stderr.txt");
    FILE *cfg = fopen (files->cfg, "w");        //  empty: the options say it all
    assert_non_null (cfg);
    fclose (cfg);
    assert_int_equal (ami_cert_save (f->operator, files->op), AMI_OK);
    assert_int_equal (ami_cert_save_public (f->mdms, files->mdms), AMI_OK);
    assert_int_equal (access ("bin/amictl", X_OK), 0);
}

static void
s_amictl_files_free (amictl_files_t *files)
{
    ami_test_rmtree (files->dir);
    free (files->dir);
    free (files->op);
    free (files->mdms);
    free (files->cfg);
    free (files->out);
    free (files->err);
}

/*  Run bin/amictl with args against the stand-in; returns its exit code
    and its stdout (heap, caller frees). */
static int
s_amictl (fixture_t *f, amictl_files_t *files, const char *args, char **out)
{
    char command [4096];
    snprintf (command, sizeof command,
              "bin/amictl -c '%s' -e '%s' --cert '%s' --mdms-cert '%s' %s >'%s' 2>'%s'",
              files->cfg, f->endpoint, files->op, files->mdms, args, files->out, files->err);
    int status = system (command);
    assert_true (WIFEXITED (status));
    FILE *file = fopen (files->out, "rb");
    assert_non_null (file);
    static char text [1024 * 1024];
    size_t n = fread (text, 1, sizeof text - 1, file);
    fclose (file);
    text [n] = 0;
    *out = strdup (text);
    assert_non_null (*out);
    return WEXITSTATUS (status);
}

/*  Issue 6 (QUEUES.md gap 10): `amictl status` shows every row of every
    page exactly once - text, JSON, and with --wait (here never ready:
    fleet-1 is DEGRADED, so it prints the last walk and exits 3). */
static void
test_issue6_amictl_status_all_pages (void **state)
{
    fixture_t *f = *state;
    amictl_files_t files;
    s_amictl_files (f, &files);
    const char *runs [] = { "status", "status --json", "status --wait 0" };
    const int exits [] = { 0, 0, 3 };
    for (size_t r = 0; r < sizeof runs / sizeof runs [0]; r++) {
        char *out = NULL;
        assert_int_equal (s_amictl (f, &files, runs [r], &out), exits [r]);
        bool json = strstr (runs [r], "--json") != NULL;
        for (uint32_t i = 0; i < S_STATUS_ROWS; i++) {
            ami_service_row_t row;
            s_status_row (&row, i);
            char needle [64];
            if (json)
                snprintf (needle, sizeof needle, "\"node\":\"%s\"", row.node_id);
            else
                snprintf (needle, sizeof needle, " %s ", row.node_id);
            if (s_count (out, needle) != 1)
                fail_msg ("%s: %s %d times", runs [r], needle, s_count (out, needle));
        }
        //  the last row's stat, from the third page
        assert_non_null (strstr (out, json ? "\"meters\":151" : "meters=151"));
        free (out);
    }
    s_amictl_files_free (&files);
}

/* ---------------------------------------------------------------------- */
/*  amictl (the binary) facing a hostile ERROR text                       */

/*  SEC-VAL-2: a fleet's (or any relay's) ERROR text reaches the operator's
    terminal through amictl's error line. Run bin/amictl against the
    stand-in: the line names the error and its origin, and holds no C0 or
    C1 control, no raw ESC, no line break inside it. Skipped-as-failed if
    bin/amictl is missing: make test builds it first. */
static void
test_sec_val_2_amictl_error_line (void **state)
{
    fixture_t *f = *state;
    char *secret_dir = ami_test_tmpdir ("client-op");
    assert_non_null (secret_dir);
    char *op_path = ami_test_path (secret_dir, "op.cert");
    char *mdms_path = ami_test_path (secret_dir, "mdms.cert");
    char *err_path = ami_test_path (secret_dir, "stderr.txt");
    char *cfg_path = ami_test_path (secret_dir, "amictl.cfg");
    FILE *cfg = fopen (cfg_path, "w");          //  empty: the options say it all
    assert_non_null (cfg);
    fclose (cfg);
    assert_int_equal (ami_cert_save (f->operator, op_path), AMI_OK);
    assert_int_equal (ami_cert_save_public (f->mdms, mdms_path), AMI_OK);
    assert_int_equal (access ("bin/amictl", X_OK), 0);
    char command [2048];
    snprintf (command, sizeof command,
              "bin/amictl -c '%s' -e '%s' --cert '%s' --mdms-cert '%s' read " S_HOSTILE
              " --timeout 5000 2>'%s'", cfg_path, f->endpoint, op_path, mdms_path, err_path);
    int status = system (command);
    assert_true (WIFEXITED (status));
    assert_int_not_equal (WEXITSTATUS (status), 0);
    FILE *file = fopen (err_path, "rb");
    assert_non_null (file);
    char line [4096];
    size_t n = fread (line, 1, sizeof line - 1, file);
    fclose (file);
    line [n] = 0;
    //  one line, ending in the one newline
    assert_true (n > 0);
    assert_int_equal (line [n - 1], '\n');
    assert_null (memchr (line, '\n', n - 1));
    for (size_t i = 0; i < n - 1; i++) {
        unsigned char c = (unsigned char) line [i];
        assert_true (c >= 0x20 && c != 0x7f);
        //  no C1 control as UTF-8 (C2 80..C2 9F)
        if (c == 0xc2 && i + 1 < n)
            assert_false ((unsigned char) line [i + 1] >= 0x80 && (unsigned char) line [i + 1] <= 0x9f);
    }
    //  and it still says what happened, who said so
    assert_non_null (strstr (line, "meter gone"));
    assert_non_null (strstr (line, "FAKE LINE"));
    assert_non_null (strstr (line, "UNREACHABLE"));
    assert_non_null (strstr (line, "fleet-1"));
    ami_test_rmtree (secret_dir);
    free (secret_dir);
    free (op_path);
    free (mdms_path);
    free (err_path);
    free (cfg_path);
}

int
main (void)
{
    ami_log_init ("test_client", NULL, AMI_LOG_WARN);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_status_with_stats),
        cmocka_unit_test (test_issue6_status_pages),
        cmocka_unit_test (test_issue6_amictl_status_all_pages),
        cmocka_unit_test (test_intervals_paged),
        cmocka_unit_test (test_intervals_misbehaving),
        cmocka_unit_test (test_pipelined),
        cmocka_unit_test (test_refused_and_absent),
        cmocka_unit_test (test_gaps_edges),
        cmocka_unit_test (test_sec_val_2_amictl_error_line),
    };
    void *state = NULL;
    s_setup (&state);
    //  One fixture for the group: zauth is process-wide.
    struct CMUnitTest with_state [sizeof tests / sizeof tests [0]];
    for (size_t i = 0; i < sizeof tests / sizeof tests [0]; i++) {
        with_state [i] = tests [i];
        with_state [i].initial_state = state;
    }
    int failed = cmocka_run_group_tests (with_state, NULL, NULL);
    s_teardown (&state);
    return failed;
}
