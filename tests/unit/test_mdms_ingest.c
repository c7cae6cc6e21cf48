/*  test_mdms_ingest.c - the MDMS's interval-data ingest (FUN-INT-1,
    SEC-INT-1, SEC-FAIL-1, SEC-VAL-1): BATCH frames from a test-double head
    end on the ingest socket, blocks sealed here the way meters seal them,
    exactly-once storage in LMDB, the API intervals action, STATUS rows
    with stats; and, without sockets, the ingest class itself: credit, the
    key cache, corrupt buckets, and a measured ingest rate with bytes per
    stored reading (printed, never asserted).

    Environment: AMI_BENCH_METERS (default 10000) sizes the benchmark
    (e.g. 200 under valgrind), AMI_BENCH_DAYS (default 1) its length,
    AMI_BENCH_GROUP_KEYS the group size tried (default: the ingest's);
    AMI_TEST_FILTER=test_bench runs one test.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_mdms.h"
#include "ami_mdms_db.h"
#include "ami_mdms_ingest.h"
#include "ami_msg.h"
#include "ami_store.h"
#include "ami_test.h"
#include "mdms_harness.h"

/*  A UTC midnight (2026-06-01): day d's intervals end at T0 + d * 86400 +
    900 .. T0 + (d + 1) * 86400. */
#define T0          1780272000u
#define DAY         86400u
#define HOUR        3600u
/*  Meter ids of the registry (mdms_harness: MTR-000001 .. MTR-000300). */
#define MID(i)      s_mid (i)

static const char *
s_mid (uint32_t i)
{
    static char ids [8][AMI_MAX_ID + 1];
    static int next = 0;
    char *id = ids [next++ % 8];
    snprintf (id, AMI_MAX_ID + 1, "MTR-%06u", i);
    return id;
}

static uint8_t s_keys [METERS + 1][AMI_E2E_PROFILE_KEY_SIZE];

static int
s_setup (void **state)
{
    if (mh_group_setup (state))
        return -1;
    for (uint32_t i = 1; i <= METERS; i++)
        mh_profile_key (i, s_keys [i]);
    return 0;
}

/*  Check one stored record against what mh_profile_fill made for it. */
static void
s_assert_record (const ami_interval_t *r, const char *meter_id, uint32_t end_s)
{
    ami_profile_t expect;
    mh_profile_fill (&expect, meter_id, end_s, 1);
    assert_int_equal (r->end_s, end_s);
    assert_true (r->import_wh == expect.records [0].import_wh);
    assert_true (r->export_wh == expect.records [0].export_wh);
    assert_int_equal (r->status, expect.records [0].status);
}

/*  Stored intervals (presence bits) in a database directory, read through
    a fresh read-only open, the way ami-load counts them. Only while no
    MDMS has the directory open (LMDB: one open per process). */
typedef struct {
    uint64_t readings;
    size_t buckets;
    int bad;
} count_t;

static int
s_count_row (const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    count_t *c = (count_t *) arg;
    ami_id_t meter;
    uint32_t bucket;
    if (ami_mdms_db_interval_key_parse (key, klen, meter, &bucket) || vlen != AMI_MDMS_INTERVAL_VALUE)
        c->bad++;
    else
        c->readings += ami_mdms_db_interval_count ((const uint8_t *) val);
    c->buckets++;
    return 0;
}

static count_t
s_count_readonly (const char *dir)
{
    int err = 0;
    ami_store_t *store = ami_store_new (dir, 0, 0, AMI_STORE_RDONLY, &err);
    assert_non_null (store);
    unsigned dbi = 0;
    assert_int_equal (ami_store_db (store, "intervals", &dbi), AMI_OK);
    count_t c = { 0, 0, 0 };
    assert_int_equal (ami_store_scan (store, dbi, NULL, 0, NULL, 0, false, s_count_row, &c),
                      AMI_OK);
    ami_store_destroy (&store);
    return c;
}

/*  One meter's 24 hourly blocks of a day into b. */
static void
s_add_day (mh_batch_t *b, uint32_t meter, uint32_t day, uint32_t from_hour, uint32_t hours)
{
    for (uint32_t h = from_hour; h < from_hour + hours; h++)
        mh_batch_add_meter (b, meter, s_keys [meter], T0 + day * DAY + h * HOUR + 900, 4);
}

static ami_batch_ack_t
s_send_batch (zsock_t *he, mh_batch_t *b)
{
    zframe_t *frame = mh_batch_frame (b);
    ami_batch_ack_t ack = mh_headend_send (he, frame, b->msg->batch.batch_id);
    zframe_destroy (&frame);
    return ack;
}


/* ---------------------------------------------------------------------- */
/*  Through the MDMS actor                                                  */

/*  FUN-INT-1: blocks arrive, are acknowledged after the commit and are
    then in LMDB: through the API and through a fresh read-only open. */
static void
test_store_and_query (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);

    mh_batch_t a, b;
    mh_batch_init (&a, 1001, "AGG-T");
    mh_batch_init (&b, 1002, "AGG-T");
    for (uint32_t m = 1; m <= 3; m++) {
        s_add_day (&a, m, 0, 0, 12);
        s_add_day (&b, m, 0, 12, 12);
    }
    ami_batch_ack_t ack = s_send_batch (he, &a);
    assert_int_equal (ack.status, AMI_OK);
    assert_true (ack.credit >= 1 && ack.credit <= AMI_CREDIT_INITIAL);
    ack = s_send_batch (he, &b);
    assert_int_equal (ack.status, AMI_OK);
    mh_batch_free (&a);
    mh_batch_free (&b);

    //  A whole day, oldest first, exactly the values sealed
    ami_msg_t *r = mh_intervals (&env, env.client, MID (2), 0, 0, 0);
    assert_int_equal (r->api_intervals.count, 96);
    assert_false (r->api_intervals.more);
    for (uint32_t k = 0; k < 96; k++)
        s_assert_record (&r->api_intervals.records [k], MID (2), T0 + 900 + k * 900);
    //  Inclusive interval END times
    uint64_t from = (uint64_t) (T0 + HOUR) * 1000, to = (uint64_t) (T0 + 2 * HOUR) * 1000;
    r = mh_intervals (&env, env.client, MID (1), from, to, 0);
    assert_int_equal (r->api_intervals.count, 5);
    assert_int_equal (r->api_intervals.records [0].end_s, T0 + HOUR);
    assert_int_equal (r->api_intervals.records [4].end_s, T0 + 2 * HOUR);
    r = mh_intervals (&env, env.client, MID (1), from + 1, to - 1, 0);
    assert_int_equal (r->api_intervals.count, 3);
    assert_int_equal (r->api_intervals.records [0].end_s, T0 + HOUR + 900);
    r = mh_intervals (&env, env.client, MID (1), 0, 0, 10);
    assert_int_equal (r->api_intervals.count, 10);
    assert_true (r->api_intervals.more);
    //  A registered meter with nothing stored; errors
    r = mh_intervals (&env, env.client, MID (4), 0, 0, 0);
    assert_int_equal (r->api_intervals.count, 0);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    r = mh_call (&env, env.client, corr, AMI_ACT_INTERVALS, "MTR-999999", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    r = mh_call (&env, env.client, corr, AMI_ACT_INTERVALS, MID (1), to, from, 0, 0);
    mh_assert_error (r, corr, AMI_E_BAD_REQUEST);
    r = mh_call (&env, env.client, corr, AMI_ACT_INTERVALS, "", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_BAD_REQUEST);

    //  The counters
    assert_int_equal (mh_pipe_stat (&env, "batches_in"), 2);
    assert_int_equal (mh_pipe_stat (&env, "blocks_in"), 72);
    assert_int_equal (mh_pipe_stat (&env, "blocks_rejected"), 0);
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 288);
    assert_int_equal (mh_pipe_stat (&env, "intervals_dup"), 0);
    assert_int_equal (mh_pipe_stat (&env, "ingest_backlog"), 0);
    uint64_t commits = mh_pipe_stat (&env, "ingest_commits");
    assert_true (commits >= 1 && commits <= 2);
    uint64_t p50 = mh_pipe_stat (&env, "ingest_lat_p50_us");
    uint64_t p99 = mh_pipe_stat (&env, "ingest_lat_p99_us");
    uint64_t max = mh_pipe_stat (&env, "ingest_lat_max_us");
    assert_true (max > 0 && p50 <= p99 && p99 <= max);
    assert_true (max < 60u * 1000 * 1000);

    //  In the database: a fresh read-only open sees every reading once
    zsock_destroy (&he);
    mh_mdms_stop (&env);
    count_t c = s_count_readonly (env.db);
    assert_int_equal (c.bad, 0);
    assert_int_equal (c.readings, 288);
    assert_int_equal (c.buckets, 3);
    //  ... and a restarted MDMS serves them
    mh_mdms_start (&env);
    r = mh_intervals (&env, env.client, MID (3), 0, 0, 0);
    assert_int_equal (r->api_intervals.count, 96);
    mh_env_stop (&env);
}

/*  At-least-once delivery, exactly-once storage: the same batch twice
    (through two head ends) is acknowledged twice and stored once; a copy
    with other values is counted as a conflict and does not overwrite. */
static void
test_duplicates (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he1 = mh_headend_connect (&env);
    zsock_t *he2 = mh_headend_connect (&env);

    mh_batch_t b;
    mh_batch_init (&b, 2001, "AGG-T");
    s_add_day (&b, 5, 0, 0, 4);
    zframe_t *frame = mh_batch_frame (&b);
    ami_batch_ack_t ack = mh_headend_send (he1, frame, 2001);
    assert_int_equal (ack.status, AMI_OK);
    ack = mh_headend_send (he2, frame, 2001);
    assert_int_equal (ack.status, AMI_OK);
    ack = mh_headend_send (he1, frame, 2001);
    assert_int_equal (ack.status, AMI_OK);
    zframe_destroy (&frame);
    mh_batch_free (&b);
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 16);
    assert_int_equal (mh_pipe_stat (&env, "intervals_dup"), 32);
    assert_int_equal (mh_pipe_stat (&env, "intervals_conflict"), 0);
    assert_int_equal (mh_pipe_stat (&env, "batches_in"), 3);

    //  A conflicting copy of hour 0 and an overlapping block (hours 3-4)
    mh_batch_init (&b, 2002, "AGG-T");
    ami_profile_t p;
    mh_profile_fill (&p, MID (5), T0 + 900, 4);
    p.records [0].import_wh += 1;
    uint8_t box [AMI_MAX_SEALED];
    size_t len = mh_profile_seal (b.scratch, s_keys [5], MID (5), p.seq, &p, box, sizeof box);
    mh_batch_add (&b, MID (5), p.seq, box, len);
    mh_batch_add_meter (&b, 5, s_keys [5], T0 + 3 * HOUR + 900, 8);
    ack = s_send_batch (he2, &b);
    assert_int_equal (ack.status, AMI_OK);
    mh_batch_free (&b);
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 20);
    assert_int_equal (mh_pipe_stat (&env, "intervals_dup"), 32 + 4 + 4);
    assert_int_equal (mh_pipe_stat (&env, "intervals_conflict"), 1);
    ami_msg_t *r = mh_intervals (&env, env.client, MID (5), 0, 0, 0);
    assert_int_equal (r->api_intervals.count, 20);
    for (uint32_t k = 0; k < 20; k++)         //  the first copy is kept
        s_assert_record (&r->api_intervals.records [k], MID (5), T0 + 900 + k * 900);

    zsock_destroy (&he1);
    zsock_destroy (&he2);
    mh_mdms_stop (&env);
    count_t c = s_count_readonly (env.db);
    assert_int_equal (c.readings, 20);
    mh_mdms_start (&env);
    mh_env_stop (&env);
}

/*  SEC-INT-1 / SEC-FAIL-1: blocks that fail a check are rejected, counted,
    reported on the event feed and never stored; the batch is still
    acknowledged (resending cannot fix it) and its good blocks stored. */
static void
test_rejects (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);
    zsock_t *events = mh_curve (ZMQ_SUB, env.events, mh.operator_cert, mh.mdms_cert);
    zsock_set_subscribe (events, "event.security");

    mh_batch_t b;
    mh_batch_init (&b, 3001, "AGG-T");
    uint8_t box [AMI_MAX_SEALED];
    ami_profile_t p;
    size_t len;
    uint32_t end = T0 + 900;
    //  good
    mh_batch_add_meter (&b, 10, s_keys [10], end, 4);
    //  altered box (one bit of the ciphertext)
    mh_profile_fill (&p, MID (11), end, 4);
    len = mh_profile_seal (b.scratch, s_keys [11], MID (11), p.seq, &p, box, sizeof box);
    box [30] ^= 0x01;
    mh_batch_add (&b, MID (11), p.seq, box, len);
    //  meter 12's block under meter 13's id
    mh_profile_fill (&p, MID (13), end, 4);
    len = mh_profile_seal (b.scratch, s_keys [12], MID (13), p.seq, &p, box, sizeof box);
    mh_batch_add (&b, MID (13), p.seq, box, len);
    //  a meter the registry does not know
    mh_profile_fill (&p, "MTR-999999", end, 4);
    len = mh_profile_seal (b.scratch, s_keys [14], "MTR-999999", p.seq, &p, box, sizeof box);
    mh_batch_add (&b, "MTR-999999", p.seq, box, len);
    //  header seq differs from the PROFILE's (sealed as the header says)
    mh_profile_fill (&p, MID (15), end, 4);
    len = mh_profile_seal (b.scratch, s_keys [15], MID (15), p.seq + 1, &p, box, sizeof box);
    mh_batch_add (&b, MID (15), p.seq + 1, box, len);
    //  misaligned end_s
    mh_profile_fill (&p, MID (16), end, 4);
    p.records [2].end_s += 1;
    len = mh_profile_seal (b.scratch, s_keys [16], MID (16), p.seq, &p, box, sizeof box);
    mh_batch_add (&b, MID (16), p.seq, box, len);
    //  not ascending
    mh_profile_fill (&p, MID (17), end, 4);
    ami_interval_t swap = p.records [0];
    p.records [0] = p.records [1];
    p.records [1] = swap;
    len = mh_profile_seal (b.scratch, s_keys [17], MID (17), p.seq, &p, box, sizeof box);
    mh_batch_add (&b, MID (17), p.seq, box, len);
    //  export_wh over 48 bits
    mh_profile_fill (&p, MID (18), end, 4);
    p.records [3].export_wh = (uint64_t) 1 << 48;
    len = mh_profile_seal (b.scratch, s_keys [18], MID (18), p.seq, &p, box, sizeof box);
    mh_batch_add (&b, MID (18), p.seq, box, len);
    //  two records 96 intervals apart (more than one bucket's length)
    mh_profile_fill (&p, MID (19), end, 2);
    p.records [1].end_s = end + 96 * 900;
    p.seq = p.records [1].end_s / 900;
    len = mh_profile_seal (b.scratch, s_keys [19], MID (19), p.seq, &p, box, sizeof box);
    mh_batch_add (&b, MID (19), p.seq, box, len);
    //  a box that opens but holds no PROFILE
    len = 0;
    assert_int_equal (ami_e2e_profile_seal (s_keys [20], MID (20), 7, (const uint8_t *) "junk",
                                            4, 64, box, sizeof box, &len), AMI_OK);
    mh_batch_add (&b, MID (20), 7, box, len);

    ami_batch_ack_t ack = s_send_batch (he, &b);
    assert_int_equal (ack.status, AMI_OK);
    assert_true (ack.credit >= 1);
    assert_int_equal (mh_pipe_stat (&env, "blocks_in"), 10);
    assert_int_equal (mh_pipe_stat (&env, "blocks_rejected"), 9);
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 4);
    assert_int_equal (mh_intervals (&env, env.client, MID (10), 0, 0, 0)->api_intervals.count, 4);
    for (uint32_t m = 11; m <= 20; m++)
        assert_int_equal (mh_intervals (&env, env.client, MID (m), 0, 0, 0)->api_intervals.count, 0);

    //  The event feed reports them (a SUB joins late: resend one altered
    //  block in a new batch until an event arrives, within the deadline)
    bool seen = false;
    int64_t deadline = zclock_mono () + WAIT_MS;
    uint64_t id = 3002;
    while (!seen && zclock_mono () < deadline) {
        zmsg_t *ev = mh_recv (events, POLL_MS * 5);
        if (ev) {
            assert_int_equal (zmsg_size (ev), 2);
            char *topic = zmsg_popstr (ev);
            assert_string_equal (topic, "event.security");
            zstr_free (&topic);
            zmsg_destroy (&ev);
            seen = true;
            break;
        }
        mh_batch_t again;
        mh_batch_init (&again, id++, "AGG-T");
        mh_profile_fill (&p, MID (11), end, 4);
        len = mh_profile_seal (again.scratch, s_keys [11], MID (11), p.seq, &p, box, sizeof box);
        box [len - 1] ^= 0x80;          //  the tag
        mh_batch_add (&again, MID (11), p.seq, box, len);
        ack = s_send_batch (he, &again);
        assert_int_equal (ack.status, AMI_OK);
        mh_batch_free (&again);
    }
    assert_true (seen);
    mh_batch_free (&b);
    zsock_destroy (&events);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

/*  A storage failure (the map is full): the batch is acknowledged with
    AMI_E_MAP_FULL and credit 0, nothing of it is stored; with a larger
    map the resent batch is stored. */
static void
test_map_full (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    mh_mdms_stop (&env);
    env.config.map_size = 1u << 20;     //  holds the registry, not 1024 buckets
    mh_mdms_start (&env);
    zsock_t *he = mh_headend_connect (&env);

    mh_batch_t small, big;
    mh_batch_init (&small, 4001, "AGG-T");
    s_add_day (&small, 30, 0, 0, 1);
    ami_batch_ack_t ack = s_send_batch (he, &small);
    assert_int_equal (ack.status, AMI_OK);
    mh_batch_free (&small);
    //  1024 blocks, each a bucket of its own (256 meters x 4 days)
    mh_batch_init (&big, 4002, "AGG-T");
    for (uint32_t m = 1; m <= 256; m++)
        for (uint32_t d = 0; d < 4; d++)
            mh_batch_add_meter (&big, m, s_keys [m], T0 + d * DAY + 900, 4);
    zframe_t *frame = mh_batch_frame (&big);
    ack = mh_headend_send (he, frame, 4002);
    assert_int_equal (ack.status, AMI_E_MAP_FULL);
    assert_int_equal (ack.credit, 0);
    assert_int_equal (mh_pipe_stat (&env, "batches_failed"), 1);
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 4);
    //  Nothing half-stored, and the MDMS keeps serving
    assert_int_equal (mh_intervals (&env, env.client, MID (1), 0, 0, 0)->api_intervals.count, 0);
    assert_int_equal (mh_intervals (&env, env.client, MID (30), 0, 0, 0)->api_intervals.count, 4);
    zsock_destroy (&he);
    mh_mdms_stop (&env);
    count_t c = s_count_readonly (env.db);
    assert_int_equal (c.readings, 4);

    //  The operator raises the map; the aggregator resends the same bytes
    env.config.map_size = 64u << 20;
    mh_mdms_start (&env);
    he = mh_headend_connect (&env);
    ack = mh_headend_send (he, frame, 4002);
    assert_int_equal (ack.status, AMI_OK);
    //  meter 30's first hour came in the small batch: a duplicate now
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 4096 - 4);
    assert_int_equal (mh_pipe_stat (&env, "intervals_dup"), 4);
    ami_msg_t *r = mh_intervals (&env, env.client, MID (256), 0, 0, 0);
    assert_int_equal (r->api_intervals.count, 16);
    s_assert_record (&r->api_intervals.records [15], MID (256), T0 + 3 * DAY + 3600);
    zframe_destroy (&frame);
    mh_batch_free (&big);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

/*  API_INTERVALS pages: more than AMI_MAX_API_INTERVALS records. */
static void
test_paging (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);
    const uint32_t days = 32;           //  3072 intervals > 2976
    mh_batch_t b;
    mh_batch_init (&b, 5001, "AGG-T");
    for (uint32_t d = 0; d < days; d++)
        mh_batch_add_meter (&b, 40, s_keys [40], T0 + d * DAY + 900, 96);
    assert_int_equal (s_send_batch (he, &b).status, AMI_OK);
    mh_batch_free (&b);

    //  Default limit: a full page, then the rest
    ami_msg_t *r = mh_intervals (&env, env.client, MID (40), 0, 0, 0);
    assert_int_equal (r->api_intervals.count, AMI_MAX_API_INTERVALS);
    assert_true (r->api_intervals.more);
    uint32_t last = r->api_intervals.records [AMI_MAX_API_INTERVALS - 1].end_s;
    assert_int_equal (last, T0 + 900 * AMI_MAX_API_INTERVALS);
    r = mh_intervals (&env, env.client, MID (40), (uint64_t) last * 1000 + 1, 0, 0);
    assert_int_equal (r->api_intervals.count, days * 96 - AMI_MAX_API_INTERVALS);
    assert_false (r->api_intervals.more);
    assert_int_equal (r->api_intervals.records [0].end_s, last + 900);

    //  Small pages, as amictl pages: every interval once, in order
    uint64_t from = 0;
    uint32_t expect = T0 + 900, pages = 0, total = 0;
    for (;;) {
        r = mh_intervals (&env, env.client, MID (40), from, 0, 1000);
        pages++;
        for (uint32_t k = 0; k < r->api_intervals.count; k++, expect += 900)
            s_assert_record (&r->api_intervals.records [k], MID (40), expect);
        total += r->api_intervals.count;
        if (!r->api_intervals.more)
            break;
        from = (uint64_t) r->api_intervals.records [r->api_intervals.count - 1].end_s * 1000 + 1;
    }
    assert_int_equal (total, days * 96);
    assert_int_equal (pages, 4);
    //  One day, both ends inclusive
    r = mh_intervals (&env, env.client, MID (40), (uint64_t) (T0 + 3 * DAY + 900) * 1000,
                      (uint64_t) (T0 + 4 * DAY) * 1000, 0);
    assert_int_equal (r->api_intervals.count, 96);
    assert_false (r->api_intervals.more);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

static bool
s_has_stat (const ami_service_row_t *row, const char *name, uint64_t *value)
{
    for (uint32_t i = 0; i < row->stat_count; i++)
        if (streq (row->stats [i].name, name)) {
            if (value)
                *value = row->stats [i].value;
            return true;
        }
    return false;
}

/*  API_STATUS rows carry each service's last HEALTH stats, and the MDMS's
    own row its ingest statistics. */
static void
test_status_stats (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);
    mh_batch_t b;
    mh_batch_init (&b, 6001, "AGG-T");
    s_add_day (&b, 50, 0, 0, 2);
    assert_int_equal (s_send_batch (he, &b).status, AMI_OK);
    mh_batch_free (&b);

    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "aggregator");
    strcpy (m->health.node_id, "AGG-T");
    m->health.state = AMI_STATE_READY;
    m->health.uptime_ms = 4242;
    m->health.stat_count = 2;
    strcpy (m->health.stats [0].name, "buffer_blocks");
    m->health.stats [0].value = 123;
    strcpy (m->health.stats [1].name, "batches_out");
    m->health.stats [1].value = 77;
    uint8_t buf [512];
    size_t len = mh_encode (m, buf, sizeof buf);
    ami_msg_destroy (&m);

    const char *own [] = { "batches_in", "blocks_in", "blocks_rejected", "intervals_stored",
                           "intervals_dup", "intervals_conflict", "ingest_commits",
                           "ingest_lat_p50_us", "ingest_lat_p99_us", "ingest_lat_max_us",
                           "ingest_backlog", "batches_failed", "reads_ok" };
    bool seen = false;
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!seen && zclock_mono () < deadline) {
        assert_int_equal (zsock_send (he, "b", buf, len), 0);
        uint8_t corr [AMI_REQUEST_ID_SIZE];
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
        assert_int_equal (r->type, AMI_MSG_API_STATUS);
        ami_service_row_t *rows = r->api_status.services;
        assert_string_equal (rows [0].role, "mdms");
        for (size_t i = 0; i < sizeof own / sizeof own [0]; i++)
            if (!s_has_stat (&rows [0], own [i], NULL))
                fail_msg ("the MDMS row has no %s", own [i]);
        uint64_t v = 0;
        assert_true (s_has_stat (&rows [0], "intervals_stored", &v) && v == 8);
        assert_true (s_has_stat (&rows [0], "batches_in", &v) && v == 1);
        assert_int_equal (rows [1].stat_count, 0);          //  the broker has none
        for (uint32_t i = 2; i < r->api_status.count; i++)
            if (streq (rows [i].node_id, "AGG-T")) {
                assert_int_equal (rows [i].stat_count, 2);
                assert_true (s_has_stat (&rows [i], "buffer_blocks", &v) && v == 123);
                assert_true (s_has_stat (&rows [i], "batches_out", &v) && v == 77);
                assert_true (rows [i].uptime_ms == 4242);
                seen = true;
            }
    }
    assert_true (seen);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

/*  SEC-VAL-1: junk on the ingest socket is dropped and counted, never
    acknowledged, and the MDMS goes on storing good batches; a BATCH from
    a peer that is not a head end is dropped. */
static void
test_malformed (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);
    uint64_t malformed = mh_pipe_stat (&env, "malformed");

    mh_batch_t b;
    mh_batch_init (&b, 7001, "AGG-T");
    s_add_day (&b, 60, 0, 0, 1);
    zframe_t *good = mh_batch_frame (&b);
    mh_batch_free (&b);
    //  not msgpack; a BATCH cut short; two frames; an unexpected type
    assert_int_equal (zsock_send (he, "s", "\xc1\xc1 junk"), 0);
    assert_int_equal (zsock_send (he, "b", zframe_data (good), zframe_size (good) - 9), 0);
    assert_int_equal (zsock_send (he, "bb", zframe_data (good), zframe_size (good), "x", 1), 0);
    uint8_t ackbuf [32] = { 0x95, 0x01, 0x16, 0x01, 0x00, 0x04 };
    assert_int_equal (zsock_send (he, "b", ackbuf, 6), 0);
    //  a valid BATCH from an operator's key on the ingest socket
    zsock_t *intruder = mh_curve (ZMQ_DEALER, env.ingest, mh.operator_cert, mh.mdms_cert);
    zframe_t *copy = zframe_dup (good);
    assert_int_equal (zframe_send (&copy, intruder, 0), 0);
    ami_batch_ack_t ack;
    assert_false (mh_headend_ack (intruder, QUIET_MS, &ack));

    //  The next good batch is the first thing acknowledged
    ack = mh_headend_send (he, good, 7001);
    assert_int_equal (ack.status, AMI_OK);
    assert_int_equal (mh_pipe_stat (&env, "intervals_stored"), 4);
    assert_int_equal (mh_pipe_stat (&env, "batches_in"), 1);
    assert_int_equal (mh_pipe_stat (&env, "ingest_malformed"), 1);
    assert_true (mh_pipe_stat (&env, "malformed") >= malformed + 3);
    assert_true (mh_pipe_stat (&env, "denied") >= 1);
    zframe_destroy (&good);
    zsock_destroy (&intruder);
    zsock_destroy (&he);
    mh_env_stop (&env);
}


/* ---------------------------------------------------------------------- */
/*  The ingest class alone                                                  */

typedef struct {
    int acks;
    uint16_t status [64];
    uint32_t credit [64];
    uint64_t batch_id [64];
} acks_t;

static void
s_on_ack (zframe_t *routing, const uint8_t *ack, size_t len, uint16_t status, void *arg)
{
    acks_t *acks = (acks_t *) arg;
    assert_non_null (routing);
    ami_msg_t *m = ami_msg_new ();
    assert_int_equal (ami_msg_decode (m, ack, len), AMI_OK);
    assert_int_equal (m->type, AMI_MSG_BATCH_ACK);
    assert_int_equal (m->batch_ack.status, status);
    if (acks && acks->acks < 64) {
        acks->status [acks->acks] = status;
        acks->credit [acks->acks] = m->batch_ack.credit;
        acks->batch_id [acks->acks] = m->batch_ack.batch_id;
        acks->acks++;
    }
    ami_msg_destroy (&m);
}

typedef struct {
    int count;
    int codes [16];
} rejects_t;

static void
s_on_reject (const char *origin, const char *meter_id, uint64_t seq, int code, const char *why,
             void *arg)
{
    (void) origin;
    (void) meter_id;
    (void) seq;
    assert_non_null (why);
    rejects_t *r = (rejects_t *) arg;
    if (r->count < 16)
        r->codes [r->count] = code;
    r->count++;
}

static ami_mdms_db_t *
s_db_open (const char *dir, const char *registry, int flags)
{
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (dir, 1u << 30, flags, &err);
    assert_non_null (db);
    ami_mdms_db_set_data_key (db, mh.data_seed);
    assert_int_equal (ami_mdms_db_registry_import (db, registry, NULL, NULL), AMI_OK);
    assert_int_equal (ami_mdms_db_interval_setup (db, MH_INTERVAL_S), AMI_OK);
    return db;
}

static void
s_push (ami_mdms_ingest_t *in, mh_batch_t *b)
{
    zframe_t *routing = zframe_new ("R", 1);
    zframe_t *body = mh_batch_frame (b);
    assert_true (ami_mdms_ingest_push (in, &routing, &body));
    assert_null (routing);
    assert_null (body);
}

/*  Credit follows the queue and the number of senders; a tiny key cache
    evicts and still stores right; a block across midnight fills two
    buckets; a corrupt stored bucket refuses its blocks only. */
static void
test_class (void **state)
{
    (void) state;
    char *dir = ami_test_path (mh.dir, "class-db");
    ami_mdms_db_t *db = s_db_open (dir, mh.registry, AMI_STORE_NOSYNC);
    //  the interval is fixed once intervals are stored (checked below)
    ami_mdms_ingest_config_t config = { 0 };
    config.db = db;
    config.keys = &mh.keys;
    config.key_cache = 8;               //  one set: 20 meters evict each other
    config.queue = 8;
    config.group_keys = 1;              //  one batch per group
    int err = 0;
    ami_mdms_ingest_t *in = ami_mdms_ingest_new (&config, &err);
    assert_non_null (in);
    rejects_t rejects = { 0, { 0 } };
    ami_mdms_ingest_set_reject (in, s_on_reject, &rejects);
    assert_int_equal (ami_mdms_ingest_run (in, s_on_ack, NULL), 0);

    //  8 batches of one origin: the queue is full
    for (uint64_t k = 0; k < 8; k++) {
        mh_batch_t b;
        mh_batch_init (&b, 100 + k, "AGG-A");
        for (uint32_t m = 1; m <= 20; m++)
            mh_batch_add_meter (&b, m, s_keys [m], T0 + (uint32_t) k * HOUR + 900, 4);
        s_push (in, &b);
        mh_batch_free (&b);
    }
    assert_true (ami_mdms_ingest_full (in));
    assert_int_equal (ami_mdms_ingest_backlog (in), 8);
    zframe_t *routing = zframe_new ("R", 1), *body = zframe_new ("x", 1);
    assert_false (ami_mdms_ingest_push (in, &routing, &body));
    assert_non_null (routing);
    zframe_destroy (&routing);
    zframe_destroy (&body);
    //  One batch per run; credit: 4 (fair share of 8 for one sender)
    //  halved while more than half the queue waits, and 0 while 3/4 does
    acks_t acks;
    memset (&acks, 0, sizeof acks);
    size_t runs = 0;
    while (ami_mdms_ingest_backlog (in))
        runs += ami_mdms_ingest_run (in, s_on_ack, &acks);
    assert_int_equal (runs, 8);
    assert_int_equal (acks.acks, 8);
    uint32_t expect [8] = { 0, 0, 2, 4, 4, 4, 4, 4 };     //  backlog 7, 6, 5, 4, 3, ...
    for (int k = 0; k < 8; k++) {
        assert_int_equal (acks.status [k], AMI_OK);
        assert_true (acks.batch_id [k] == 100 + (uint64_t) k);
        assert_int_equal (acks.credit [k], expect [k]);
    }
    assert_int_equal (ami_mdms_ingest_stat (in, "intervals_stored"), 8 * 20 * 4);
    assert_int_equal (ami_mdms_ingest_stat (in, "ingest_commits"), 8);
    assert_int_equal (rejects.count, 0);

    //  Many senders share the queue: 8 / 8 origins = credit 1 each
    memset (&acks, 0, sizeof acks);
    for (uint64_t k = 0; k < 8; k++) {
        char origin [16];
        snprintf (origin, sizeof origin, "AGG-%c", (char) ('B' + k));
        mh_batch_t b;
        mh_batch_init (&b, 200 + k, origin);
        mh_batch_add_meter (&b, 21, s_keys [21], T0 + 10 * HOUR + 900, 4);
        s_push (in, &b);
        mh_batch_free (&b);
    }
    while (ami_mdms_ingest_backlog (in))
        ami_mdms_ingest_run (in, s_on_ack, &acks);
    assert_int_equal (acks.acks, 8);
    assert_int_equal (acks.credit [7], 1);
    assert_int_equal (ami_mdms_ingest_stat (in, "intervals_dup"), 7 * 4);

    //  A block across midnight: two buckets, one query
    mh_batch_t b;
    mh_batch_init (&b, 300, "AGG-A");
    mh_batch_add_meter (&b, 22, s_keys [22], T0 + DAY - HOUR + 900, 8);
    //  a corrupt stored bucket of meter 23 refuses its block only
    uint8_t key [AMI_MDMS_INTERVAL_KEY_MAX];
    size_t klen = ami_mdms_db_interval_key (MID (23), (T0 / 900) / 96, key);
    assert_int_equal (ami_store_put (ami_mdms_db_store (db), ami_mdms_db_intervals_dbi (db), key,
                                     klen, "short", 5, 0), AMI_OK);
    mh_batch_add_meter (&b, 23, s_keys [23], T0 + 900, 4);
    s_push (in, &b);
    mh_batch_free (&b);
    memset (&acks, 0, sizeof acks);
    assert_int_equal (ami_mdms_ingest_run (in, s_on_ack, &acks), 1);
    assert_int_equal (acks.status [0], AMI_OK);
    assert_int_equal (rejects.count, 1);
    assert_int_equal (rejects.codes [0], AMI_E_STORAGE);
    ami_interval_t out [16];
    size_t count = 0;
    bool more = false;
    assert_int_equal (ami_mdms_db_intervals (db, MID (22), 0, 0, 16, out, &count, &more), AMI_OK);
    assert_int_equal (count, 8);
    for (uint32_t k = 0; k < 8; k++)
        s_assert_record (&out [k], MID (22), T0 + DAY - HOUR + 900 + k * 900);
    //  ... and the API refuses to show the corrupt one
    assert_int_equal (ami_mdms_db_intervals (db, MID (23), 0, 0, 16, out, &count, &more),
                      AMI_E_STORAGE);
    uint64_t total = 0;
    size_t buckets = 0;
    assert_int_equal (ami_mdms_db_intervals_total (db, &total, &buckets), AMI_OK);
    assert_int_equal (total, 8 * 20 * 4 + 4 + 8);

    //  Not a BATCH in the queue: dropped and counted, nothing acked
    routing = zframe_new ("R", 1);
    body = zframe_new ("\x92\x01\x15", 3);
    assert_true (ami_mdms_ingest_push (in, &routing, &body));
    assert_int_equal (ami_mdms_ingest_run (in, s_on_ack, &acks), 0);
    assert_int_equal (ami_mdms_ingest_stat (in, "ingest_malformed"), 1);
    assert_int_equal (ami_mdms_ingest_stat (in, "no_such_stat"), UINT64_MAX);

    //  Queued frames are dropped unacknowledged on destroy (no leak)
    mh_batch_init (&b, 400, "AGG-A");
    mh_batch_add_meter (&b, 24, s_keys [24], T0 + 900, 4);
    s_push (in, &b);
    mh_batch_free (&b);
    ami_mdms_ingest_destroy (&in);
    assert_null (in);

    //  The interval is fixed while intervals are stored
    assert_int_equal (ami_mdms_db_interval_setup (db, 300), AMI_E_CONFIG);
    assert_int_equal (ami_mdms_db_interval_setup (db, 7), AMI_E_CONFIG);
    assert_int_equal (ami_mdms_db_interval_setup (db, MH_INTERVAL_S), AMI_OK);
    ami_mdms_db_destroy (&db);
    ami_test_rmtree (dir);
    free (dir);
}


/*  Issue 6 (gap 8): every ack that slows a sender is counted in
    ingest_throttled - the credit-0 acks of a queue at least 3/4 full and
    the BUSY refusals of a full one - and failed groups are not (they are
    batches_failed). */
static void
test_issue6_ingest_throttled (void **state)
{
    (void) state;
    char *dir = ami_test_path (mh.dir, "throttle-db");
    ami_mdms_db_t *db = s_db_open (dir, mh.registry, AMI_STORE_NOSYNC);
    ami_mdms_ingest_config_t config = { 0 };
    config.db = db;
    config.keys = &mh.keys;
    config.queue = 4;
    config.group_keys = 1;              //  one batch per group
    int err = 0;
    //  The queue bound is validated
    config.queue = AMI_MDMS_INGEST_QUEUE_MAX + 1;
    assert_null (ami_mdms_ingest_new (&config, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    config.queue = 4;
    ami_mdms_ingest_t *in = ami_mdms_ingest_new (&config, &err);
    assert_non_null (in);
    assert_int_equal (ami_mdms_ingest_stat (in, "ingest_throttled"), 0);
    //  The queue fills: 4 batches of one origin
    for (uint64_t k = 0; k < 4; k++) {
        mh_batch_t b;
        mh_batch_init (&b, 500 + k, "AGG-A");
        mh_batch_add_meter (&b, 30 + (uint32_t) k, s_keys [30 + k], T0 + 900, 4);
        s_push (in, &b);
        mh_batch_free (&b);
    }
    assert_true (ami_mdms_ingest_full (in));
    //  One more is refused BUSY (credit 0) without being queued
    mh_batch_t b;
    mh_batch_init (&b, 504, "AGG-A");
    mh_batch_add_meter (&b, 34, s_keys [34], T0 + 900, 4);
    zframe_t *routing = zframe_new ("R", 1), *body = mh_batch_frame (&b);
    mh_batch_free (&b);
    assert_false (ami_mdms_ingest_push (in, &routing, &body));
    uint8_t ack [64];
    size_t len = 0;
    assert_int_equal (ami_mdms_ingest_refuse (in, body, AMI_E_BUSY, ack, sizeof ack, &len),
                      AMI_OK);
    zframe_destroy (&routing);
    zframe_destroy (&body);
    assert_int_equal (ami_mdms_ingest_stat (in, "ingest_throttled"), 1);
    //  A frame that is not a BATCH gets no ack, so throttles nothing
    body = zframe_new ("x", 1);
    assert_int_not_equal (ami_mdms_ingest_refuse (in, body, AMI_E_BUSY, ack, sizeof ack, &len),
                          AMI_OK);
    zframe_destroy (&body);
    assert_int_equal (ami_mdms_ingest_stat (in, "ingest_throttled"), 1);
    //  Drain one batch a group: backlog 3 of 4 after the first (credit 0,
    //  throttled), then 2, 1, 0 (credit again)
    acks_t acks;
    memset (&acks, 0, sizeof acks);
    while (ami_mdms_ingest_backlog (in))
        ami_mdms_ingest_run (in, s_on_ack, &acks);
    assert_int_equal (acks.acks, 4);
    uint64_t zero = 0;
    for (int k = 0; k < acks.acks; k++) {
        assert_int_equal (acks.status [k], AMI_OK);
        zero += acks.credit [k] == 0;
    }
    assert_int_equal (zero, 1);
    assert_int_equal (acks.credit [0], 0);
    assert_int_equal (ami_mdms_ingest_stat (in, "ingest_throttled"), 1 + zero);
    assert_int_equal (ami_mdms_ingest_stat (in, "batches_failed"), 0);
    assert_int_equal (ami_mdms_ingest_stat (in, "intervals_stored"), 4 * 4);
    //  The stat list fits the MDMS's row and names the new counter last
    ami_stat_t stats [AMI_MAX_STATS];
    uint32_t count = 0;
    ami_mdms_ingest_stats (in, stats, AMI_MAX_STATS, &count);
    assert_int_equal (count, AMI_MDMS_INGEST_STATS);
    assert_string_equal (stats [count - 1].name, "ingest_throttled");
    ami_mdms_ingest_destroy (&in);
    ami_mdms_db_destroy (&db);
    ami_test_rmtree (dir);
    free (dir);
}

/*  Issue 6 (gap 7): the MDMS's ingest queue is its config (ingest_queue,
    ami-mdms mdms/ingest-queue): with 2 batches the credit one sender gets
    is 2, not AMI_CREDIT_INITIAL; ingest_throttled is in pipe STATUS and
    in the MDMS's API_STATUS row. */
static void
test_issue6_ingest_queue_config (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);
    mh_batch_t b;
    mh_batch_init (&b, 8001, "AGG-Q");
    s_add_day (&b, 70, 0, 0, 1);
    ami_batch_ack_t ack = s_send_batch (he, &b);
    mh_batch_free (&b);
    assert_int_equal (ack.status, AMI_OK);
    assert_int_equal (ack.credit, AMI_CREDIT_INITIAL);
    zsock_destroy (&he);

    mh_mdms_stop (&env);
    env.config.ingest_queue = 2;
    mh_mdms_start (&env);
    he = mh_headend_connect (&env);
    mh_batch_init (&b, 8002, "AGG-Q");
    s_add_day (&b, 71, 0, 0, 1);
    ack = s_send_batch (he, &b);
    mh_batch_free (&b);
    assert_int_equal (ack.status, AMI_OK);
    assert_int_equal (ack.credit, 2);
    assert_int_equal (mh_pipe_stat (&env, "ingest_throttled"), 0);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    uint64_t v = UINT64_MAX;
    assert_true (s_has_stat (&r->api_status.services [0], "ingest_throttled", &v) && v == 0);
    assert_true (s_has_stat (&r->api_status.services [0], "peers_refused", &v) && v == 0);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

/*  Issue 6 (gap 8): a full services table forgets its longest-silent
    entry to make room, and counts it (services_evicted). */
static void
test_issue6_services_evicted (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *he = mh_headend_connect (&env);
    ami_msg_t *m = ami_msg_new ();
    uint8_t buf [512];
    //  AMI_MDMS_MAX_SERVICES fleets fill the table; 3 more evict 3
    for (int i = 0; i < AMI_MDMS_MAX_SERVICES + 3; i++) {
        ami_msg_reset (m, AMI_MSG_HEALTH);
        strcpy (m->health.role, "meter");
        snprintf (m->health.node_id, sizeof m->health.node_id, "FLEET-%05d", i);
        m->health.state = AMI_STATE_READY;
        size_t len = mh_encode (m, buf, sizeof buf);
        assert_int_equal (zsock_send (he, "b", buf, len), 0);
    }
    ami_msg_destroy (&m);
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (mh_pipe_stat (&env, "services_evicted") < 3 && zclock_mono () < deadline)
        zclock_sleep (POLL_MS);         //  polling a counter, with a deadline
    assert_int_equal (mh_pipe_stat (&env, "services_evicted"), 3);
    assert_int_equal (mh_pipe_stat (&env, "services"), AMI_MDMS_MAX_SERVICES);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    uint64_t v = 0;
    assert_true (s_has_stat (&r->api_status.services [0], "services_evicted", &v) && v == 3);
    zsock_destroy (&he);
    mh_env_stop (&env);
}


/* ---------------------------------------------------------------------- */
/*  Benchmark: interleaved fill of N meters x 1 day, durable commits        */

static double
s_cpu_s (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
         + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void
test_bench (void **state)
{
    (void) state;
    const char *env = getenv ("AMI_BENCH_METERS");
    uint32_t meters = env ? (uint32_t) atoi (env) : 10000;
    if (meters < 10)
        meters = 10;
    //  AMI_BENCH_DAYS: a longer fill (default one day)
    uint32_t days = getenv ("AMI_BENCH_DAYS") ? (uint32_t) atoi (getenv ("AMI_BENCH_DAYS")) : 1;
    if (days < 1)
        days = 1;
    const uint32_t hours = 24 * days, per_block = 4;
    char *dir = ami_test_path (mh.dir, "bench-db");
    char *registry = ami_test_path (mh.dir, "bench-meters.tsv");
    FILE *file = fopen (registry, "w");
    assert_non_null (file);
    for (uint32_t i = 1; i <= meters; i++)
        mh_registry_line (file, i);
    fclose (file);
    //  Durable: the production flags
    ami_mdms_db_t *db = s_db_open (dir, registry, 0);

    //  The meters' side, beforehand: keys and every batch frame
    uint8_t (*keys) [AMI_E2E_PROFILE_KEY_SIZE] = calloc (meters + 1, AMI_E2E_PROFILE_KEY_SIZE);
    assert_non_null (keys);
    for (uint32_t i = 1; i <= meters; i++)
        mh_profile_key (i, keys [i]);
    size_t frames_cap = (size_t) hours * (meters / AMI_MAX_BATCH_BLOCKS + 2);
    zframe_t **frames = calloc (frames_cap, sizeof *frames);
    assert_non_null (frames);
    size_t nframes = 0;
    uint64_t bytes = 0;
    mh_batch_t b;
    bool open = false;
    for (uint32_t h = 0; h < hours; h++)
        for (uint32_t i = 1; i <= meters; i++) {
            if (!open) {
                mh_batch_init (&b, 9000 + nframes, "AGG-BENCH");
                open = true;
            }
            mh_batch_add_meter (&b, i, keys [i], T0 + h * HOUR + 900, per_block);
            if (b.msg->batch.block_count == AMI_MAX_BATCH_BLOCKS || i == meters) {
                assert_true (nframes < frames_cap);
                frames [nframes] = mh_batch_frame (&b);
                bytes += zframe_size (frames [nframes]);
                nframes++;
                mh_batch_free (&b);
                open = false;
            }
        }
    sodium_memzero (keys, (meters + 1) * AMI_E2E_PROFILE_KEY_SIZE);
    free (keys);

    ami_mdms_ingest_config_t config = { 0 };
    config.db = db;
    config.keys = &mh.keys;
    //  AMI_BENCH_GROUP_KEYS: try other group sizes (the default's why)
    if (getenv ("AMI_BENCH_GROUP_KEYS"))
        config.group_keys = (size_t) atoi (getenv ("AMI_BENCH_GROUP_KEYS"));
    int err = 0;
    ami_mdms_ingest_t *in = ami_mdms_ingest_new (&config, &err);
    assert_non_null (in);

    //  Warm the key cache as the first hour would (one derivation per
    //  meter), timed apart: it is a one-off cost
    double cpu0 = s_cpu_s ();
    int64_t t0 = zclock_usecs ();
    size_t first = 0, groups = 0;
    for (; first < nframes && first * AMI_MAX_BATCH_BLOCKS < meters; first++) {
        zframe_t *routing = zframe_new ("R", 1);
        assert_true (ami_mdms_ingest_push (in, &routing, &frames [first]));
        while (ami_mdms_ingest_backlog (in))
            groups += ami_mdms_ingest_run (in, NULL, NULL) ? 1 : 0;
    }
    int64_t t1 = zclock_usecs ();
    double cpu1 = s_cpu_s ();
    for (size_t k = first; k < nframes; k++) {
        zframe_t *routing = zframe_new ("R", 1);
        if (ami_mdms_ingest_full (in))
            groups += ami_mdms_ingest_run (in, NULL, NULL) ? 1 : 0;
        assert_true (ami_mdms_ingest_push (in, &routing, &frames [k]));
    }
    while (ami_mdms_ingest_backlog (in))
        groups += ami_mdms_ingest_run (in, NULL, NULL) ? 1 : 0;
    int64_t t2 = zclock_usecs ();
    double cpu2 = s_cpu_s ();
    uint64_t blocks = (uint64_t) hours * meters;
    uint64_t readings = blocks * per_block;
    assert_int_equal (ami_mdms_ingest_stat (in, "intervals_stored"), readings);
    assert_int_equal (ami_mdms_ingest_stat (in, "blocks_rejected"), 0);
    assert_int_equal (ami_mdms_ingest_stat (in, "blocks_in"), blocks);
    uint64_t commits = ami_mdms_ingest_stat (in, "ingest_commits");
    double warm_s = (double) (t1 - t0) / 1e6, run_s = (double) (t2 - t1) / 1e6;
    uint64_t steady_blocks = blocks - (uint64_t) meters;
    printf ("[ bench    ] ingest, %u meters x %u h, blocks of %u, %zu batches (%.0f KB avg), "
            "durable commits:\n", meters, hours, per_block, nframes,
            (double) bytes / (double) nframes / 1024);
    printf ("[ bench    ]   first hour (key derivation per meter): %.2f s, %.0f blocks/s\n",
            warm_s, (double) meters / warm_s);
    printf ("[ bench    ]   steady: %.0f blocks/s = %.0f readings/s (wall %.2f s, CPU %.2f s, "
            "%llu commits, %.0f blocks per commit)\n",
            (double) steady_blocks / run_s, (double) steady_blocks * per_block / run_s, run_s,
            cpu2 - cpu1, (unsigned long long) commits,
            (double) blocks / (double) (commits ? commits : 1));
    (void) cpu0;
    (void) groups;

    ami_mdms_ingest_destroy (&in);
    ami_mdms_db_destroy (&db);
    free (frames);

    //  Bytes per stored reading: pages of the "intervals" tree (mdb_stat)
    //  and the whole file in use, through a fresh read-only open
    MDB_env *menv = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_stat st;
    MDB_envinfo info;
    assert_int_equal (mdb_env_create (&menv), 0);
    assert_int_equal (mdb_env_set_maxdbs (menv, 16), 0);
    assert_int_equal (mdb_env_open (menv, dir, MDB_RDONLY, 0600), 0);
    assert_int_equal (mdb_txn_begin (menv, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal (mdb_dbi_open (txn, "intervals", 0, &dbi), 0);
    assert_int_equal (mdb_stat (txn, dbi, &st), 0);
    assert_int_equal (mdb_env_info (menv, &info), 0);
    //  presence bits, counted directly
    MDB_cursor *cur = NULL;
    assert_int_equal (mdb_cursor_open (txn, dbi, &cur), 0);
    MDB_val k, v;
    uint64_t counted = 0;
    for (int rc = mdb_cursor_get (cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get (cur, &k, &v, MDB_NEXT)) {
        assert_int_equal (v.mv_size, AMI_MDMS_INTERVAL_VALUE);
        counted += ami_mdms_db_interval_count ((const uint8_t *) v.mv_data);
    }
    mdb_cursor_close (cur);
    assert_int_equal (counted, readings);
    size_t tree = (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages) * st.ms_psize;
    size_t used = (info.me_last_pgno + 1) * st.ms_psize;
    printf ("[ bench    ]   storage: %llu readings in %zu buckets; intervals tree %zu pages "
            "(%zu leaf, %zu branch) = %.1f bytes/reading; file in use %.1f bytes/reading "
            "(free pages and the other databases included)\n",
            (unsigned long long) readings, (size_t) st.ms_entries,
            (size_t) (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages),
            (size_t) st.ms_leaf_pages, (size_t) st.ms_branch_pages,
            (double) tree / (double) readings, (double) used / (double) readings);
    mdb_txn_abort (txn);
    mdb_env_close (menv);
    ami_test_rmtree (dir);
    free (dir);
    free (registry);
}

int
main (void)
{
    //  AMI_TEST_FILTER=test_bench runs one test (cmocka's pattern)
    if (getenv ("AMI_TEST_FILTER"))
        cmocka_set_test_filter (getenv ("AMI_TEST_FILTER"));
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_store_and_query),
        cmocka_unit_test (test_duplicates),
        cmocka_unit_test (test_rejects),
        cmocka_unit_test (test_map_full),
        cmocka_unit_test (test_paging),
        cmocka_unit_test (test_status_stats),
        cmocka_unit_test (test_malformed),
        cmocka_unit_test (test_class),
        cmocka_unit_test (test_issue6_ingest_throttled),
        cmocka_unit_test (test_issue6_ingest_queue_config),
        cmocka_unit_test (test_issue6_services_evicted),
        cmocka_unit_test (test_bench),
    };
    return cmocka_run_group_tests_name ("mdms_ingest", tests, s_setup, mh_group_teardown);
}
