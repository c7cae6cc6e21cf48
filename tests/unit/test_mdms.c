/*  test_mdms.c - the MDMS, in process, over CURVE: on-demand reads through
    a real ami_broker to a hand-written MDP worker that plays head end,
    aggregator and meter; history, registry, status, roles, events, and
    the database schema (FUN-READ-1, FUN-READ-2, SEC-AUTHZ-1, SEC-INT-1,
    SEC-INT-2, SEC-INT-3, SEC-NR-1, SEC-FAIL-1, SEC-VAL-1, SEC-AVAIL-2).
    The security work (audit log, rate limits, VERIFY, customer data) is
    tested in test_mdms_security.c; the bench is mdms_harness.h.

    One ami_auth serves the whole process (zauth is process-wide); its
    allow-list is the union of what the broker (MDMS, head end) and the
    MDMS (operators, head end) accept.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_auth.h"
#include "ami_broker.h"
#include "ami_cert.h"
#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_mdms.h"
#include "ami_mdms_acl.h"
#include "ami_mdms_db.h"
#include "ami_mdms_ingest.h"
#include "ami_meter_model.h"
#include "ami_msg.h"
#include "ami_store.h"
#include "ami_test.h"
#include "mdms_harness.h"

/* ---------------------------------------------------------------------- */
/*  Tests: on-demand reads                                                  */

/*  FUN-READ-1: a read through the whole chain returns the meter's
    registers, is stored, and shows in HISTORY (newest first, paged). */
static void
test_read_and_history (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000001", AMI_STATE_READY);

    uint64_t c1 = mh_read_ok (&env, "MTR-000001");
    ami_reading_t first = env.worker.last_good;
    ami_msg_t *h = mh_history (&env, env.client, "MTR-000001", 0);
    assert_int_equal (h->api_readings.count, 1);
    assert_false (h->api_readings.more);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, first.read_ms);
    assert_memory_equal (h->api_readings.readings [0].reading.request_id, first.request_id,
                         AMI_REQUEST_ID_SIZE);
    assert_int_equal (h->api_readings.readings [0].reading.register_count, first.register_count);

    //  A second read: a higher counter, and history lists it first
    zclock_sleep (2);                   //  a distinct meter clock (read_ms)
    uint64_t c2 = mh_read_ok (&env, "MTR-000001");
    assert_true (c2 > c1);
    h = mh_history (&env, env.client, "MTR-000001", 0);
    assert_int_equal (h->api_readings.count, 2);
    assert_true (h->api_readings.readings [0].reading.read_ms
               > h->api_readings.readings [1].reading.read_ms);
    assert_memory_equal (h->api_readings.readings [0].reading.request_id,
                         env.worker.last_good.request_id, AMI_REQUEST_ID_SIZE);
    //  Paging: limit 1 says there is more
    h = mh_history (&env, env.client, "MTR-000001", 1);
    assert_int_equal (h->api_readings.count, 1);
    assert_true (h->api_readings.more);
    //  next page: to_ms = last read_ms - 1
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    uint64_t older = h->api_readings.readings [0].reading.read_ms - 1;
    h = mh_call (&env, env.client, corr, AMI_ACT_HISTORY, "MTR-000001", 0, older, 1, 0);
    assert_int_equal (h->type, AMI_MSG_API_READINGS);
    assert_int_equal (h->api_readings.count, 1);
    assert_false (h->api_readings.more);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, first.read_ms);
    //  from > to is a bad request; other meters have no history
    h = mh_call (&env, env.client, corr, AMI_ACT_HISTORY, "MTR-000001", 10, 5, 0, 0);
    mh_assert_error (h, corr, AMI_E_BAD_REQUEST);
    h = mh_history (&env, env.client, "MTR-000002", 0);
    assert_int_equal (h->api_readings.count, 0);

    //  A different meter of the same aggregator, and a meter's last read
    mh_read_ok (&env, "MTR-000295");
    uint64_t last = 0;
    assert_int_equal (mh_meter_state (&env, "MTR-000295", &last), AMI_STATE_READY);
    assert_int_equal (last, env.worker.last_good.read_ms);
    assert_int_equal (mh_pipe_stat (&env, "readings"), 3);
    assert_int_equal (mh_pipe_stat (&env, "reads_ok"), 3);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 0);
    mh_env_stop (&env);
}

/*  SEC-INT-2 / SEC-NR-1: readings and the command counter survive an
    MDMS restart on the same database. */
static void
test_restart_persistence (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    uint64_t c1 = mh_read_ok (&env, "MTR-000007");
    zclock_sleep (2);
    uint64_t c2 = mh_read_ok (&env, "MTR-000007");
    assert_true (c2 > c1);
    uint64_t reserved = mh_pipe_stat (&env, "counter_reserved");
    assert_true (reserved >= c2);

    //  Restart the MDMS only (the broker and the worker stay)
    mh_mdms_stop (&env);
    mh_mdms_start (&env);
    ami_msg_t *h = mh_history (&env, env.client, "MTR-000007", 0);
    assert_int_equal (h->api_readings.count, 2);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, env.worker.last_good.read_ms);
    mh_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    uint64_t c3 = mh_read_ok (&env, "MTR-000007");
    assert_true (c3 > c2);
    assert_true (c3 > reserved);        //  numbering continues above the mark
    h = mh_history (&env, env.client, "MTR-000007", 0);
    assert_int_equal (h->api_readings.count, 3);

    //  And once more: still strictly increasing
    mh_mdms_stop (&env);
    mh_mdms_start (&env);
    mh_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    uint64_t c4 = mh_read_ok (&env, "MTR-000007");
    assert_true (c4 > c3);
    mh_env_stop (&env);
}

/*  FUN-READ-2: unknown meter, no route, timeout, unreachable - distinct. */
static void
test_read_errors (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Unknown meter: at once
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-999999", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    r = mh_call (&env, env.client, corr, AMI_ACT_HISTORY, "MTR-999999", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_BAD_REQUEST);

    //  No worker for AGG-NONE: NO_ROUTE, well before the timeout
    mh_wait_meter_state (&env, "MTR-000296", AMI_STATE_DOWN);
    int64_t start = zclock_mono ();
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000296", 0, 0, 0, 3000);
    mh_assert_error (r, corr, AMI_E_NO_ROUTE);
    assert_true (zclock_mono () - start < 1500);

    //  The aggregator says the meter is unreachable
    mh_wait_meter_state (&env, "MTR-000003", AMI_STATE_READY);
    //  on every try (a relay ERROR ends a try, not the read; SEC-AVAIL-3:
    //  such tries have a budget of their own): the read ends when the
    //  budget is spent, fast, far from the 2 s deadline
    mh_worker_modes (&env.worker, 1, W_UNREACHABLE);
    env.worker.served = 0;
    start = zclock_mono ();
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_UNREACHABLE);
    assert_int_equal (env.worker.served, AMI_MDMS_RELAY_TRIES);
    assert_true (zclock_mono () - start < 1000);

    //  One relay ERROR, then the meter answers: the read succeeds
    mh_worker_modes (&env.worker, 2, W_UNREACHABLE, W_GOOD);
    env.worker.served = 0;
    mh_read_ok (&env, "MTR-000003");
    assert_int_equal (env.worker.served, 2);

    //  A relay claiming the meter's refusal is not believed: mapped to
    //  AMI_E_UNREACHABLE, never reported as AMI_E_REPLAY
    mh_worker_modes (&env.worker, 1, W_RELAY_REPLAY);
    env.worker.served = 0;
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_UNREACHABLE);
    assert_int_equal (env.worker.served, AMI_MDMS_RELAY_TRIES);

    //  The meter refuses (its signed status): AMI_E_REPLAY, after the
    //  resends a replay refusal earns (retries + 1 tries in all)
    mh_worker_modes (&env.worker, 1, W_REPLAY);
    env.worker.served = 0;
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_REPLAY);
    assert_int_equal (env.worker.served, AMI_MDMS_RETRIES + 1);

    //  Nothing of the failures was stored: only the one good read
    ami_msg_t *h = mh_history (&env, env.client, "MTR-000003", 0);
    assert_int_equal (h->api_readings.count, 1);

    //  The worker leaves: the route goes, reads fail fast with NO_ROUTE
    mh_worker_disconnect (&env.worker);
    mh_wait_meter_state (&env, "MTR-000003", AMI_STATE_DOWN);
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_NO_ROUTE);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 0);
    mh_env_stop (&env);
}

/*  Issue 6, fault 5: a relay that lost its aggregator a moment ago (a
    reset link, reconnecting) answers with relay ERRORs. The MDMS spaces
    its resends (AMI_MDMS_RELAY_BACKOFF_MS, doubling), so the read is
    still alive when the link is back; and a read whose deadline comes
    before the relay budget is spent ends with the timeout error, naming
    the relay's, not with the relay's error. */
static void
test_issue6_relay_errors_spaced (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000003", AMI_STATE_READY);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Four relay ERRORs, then the meter: read, after waits of at least
    //  1 + 2 + 4 + 8 backoffs
    mh_worker_modes (&env.worker, 5, W_UNREACHABLE, W_UNREACHABLE, W_UNREACHABLE,
                     W_UNREACHABLE, W_GOOD);
    env.worker.served = 0;
    int64_t start = zclock_mono ();
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 0);
    int64_t took = zclock_mono () - start;
    if (r->type != AMI_MSG_API_READINGS)
        fail_msg ("read: %s %s", ami_msg_type_name (r->type),
                  r->type == AMI_MSG_ERROR ? r->error.text : "");
    assert_int_equal (env.worker.served, 5);
    assert_true (took >= 15 * AMI_MDMS_RELAY_BACKOFF_MS);

    //  Relay ERRORs only, deadline 200 ms: tries at about 0, 10, 30, 70
    //  and 150 ms; the next would be at 310 ms. The deadline ends the
    //  read: AMI_E_TIMEOUT, and the text names the relay's error
    mh_worker_modes (&env.worker, 1, W_UNREACHABLE);
    env.worker.served = 0;
    r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000003", 0, 0, 0, 200);
    mh_assert_error (r, corr, AMI_E_TIMEOUT);
    assert_non_null (strstr (r->error.text, "AMI_E_UNREACHABLE"));
    assert_true (env.worker.served >= 2);
    assert_true (env.worker.served < AMI_MDMS_RELAY_TRIES);
    mh_env_stop (&env);
}

/*  Two reads of one meter in flight reach it out of counter order: the
    meter (played by two workers sharing its last counter) answers the
    higher counter and refuses the lower one with its signed
    AMI_E_REPLAY; the MDMS resends that read with a new counter: both
    reads end OK. */
static void
test_read_race (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_worker_t second;
    mh_worker_start (&second, env.broker_endpoint, "agg.AGG-T");
    mh_wait_meter_state (&env, "MTR-000008", AMI_STATE_READY);
    mh_worker_modes (&env.worker, 2, W_HOLD, W_GOOD);
    mh_worker_modes (&second, 2, W_HOLD, W_GOOD);
    uint8_t corr_a [AMI_REQUEST_ID_SIZE], corr_b [AMI_REQUEST_ID_SIZE];
    mh_request (env.client, corr_a, AMI_ACT_READ, "MTR-000008", 0, 0, 0, 3000);
    mh_request (env.client, corr_b, AMI_ACT_READ, "MTR-000008", 0, 0, 0, 3000);
    //  Each worker takes (holds) one of the two commands
    mh_worker_t *workers [2] = { &env.worker, &second };
    zpoller_t *poller = zpoller_new (env.worker.sock, second.sock, env.client, NULL);
    int64_t deadline = zclock_mono () + WAIT_MS;
    while ((!env.worker.held_client || !second.held_client) && zclock_mono () < deadline) {
        void *which = zpoller_wait (poller, POLL_MS);
        for (int i = 0; i < 2; i++)
            if (which == workers [i]->sock)
                mh_worker_serve (workers [i]);
        assert_true (which != env.client);      //  no answer yet
    }
    assert_non_null (env.worker.held_client);
    assert_non_null (second.held_client);
    //  Deliver in reverse counter order: the higher counter first (the
    //  meter accepts it), then the lower (the meter refuses: replay)
    mh_worker_t *high = env.worker.held.counter > second.held.counter ? &env.worker : &second;
    mh_worker_t *low = high == &env.worker ? &second : &env.worker;
    uint64_t high_counter = high->held.counter;
    mh_worker_release (high, W_GOOD);
    mh_worker_release (low, W_REPLAY);
    //  Both operators get a reading; the resend carries a counter above
    //  the one the meter accepted, so the meter takes it
    bool got_a = false, got_b = false;
    uint64_t resend_counter = 0;
    while ((!got_a || !got_b) && zclock_mono () < deadline) {
        void *which = zpoller_wait (poller, POLL_MS);
        for (int i = 0; i < 2; i++)
            if (which == workers [i]->sock) {
                int before = workers [i]->served;
                mh_worker_serve (workers [i]);
                if (workers [i]->served > before && before < MAX_SEEN)
                    resend_counter = workers [i]->counters [before];
            }
        if (which == env.client) {
            zmsg_t *msg = zmsg_recv (env.client);
            zframe_t *body = zmsg_last (msg);
            assert_int_equal (ami_msg_decode (env.reply, zframe_data (body),
                                              zframe_size (body)), AMI_OK);
            zmsg_destroy (&msg);
            if (env.reply->type != AMI_MSG_API_READINGS)
                fail_msg ("a racing read failed: %s %s", ami_msg_type_name (env.reply->type),
                          env.reply->type == AMI_MSG_ERROR ? env.reply->error.text : "");
            if (!memcmp (env.reply->api_readings.corr, corr_a, AMI_REQUEST_ID_SIZE))
                got_a = true;
            else {
                assert_memory_equal (env.reply->api_readings.corr, corr_b, AMI_REQUEST_ID_SIZE);
                got_b = true;
            }
        }
    }
    zpoller_destroy (&poller);
    assert_true (got_a && got_b);
    assert_true (resend_counter > high_counter);
    assert_int_equal (env.worker.served + second.served, 3);
    ami_msg_t *h = mh_history (&env, env.client, "MTR-000008", 0);
    assert_true (h->api_readings.count >= 1);   //  same-millisecond reads share a key
    assert_int_equal (mh_pipe_stat (&env, "reads_ok"), 2);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 0);
    mh_worker_stop (&second);
    mh_env_stop (&env);
}

/*  A worker that never answers: AMI_E_TIMEOUT within timeout + margin,
    after retries with the same request id and increasing counters. */
static void
test_read_timeout (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000004", AMI_STATE_READY);
    mh_worker_modes (&env.worker, 1, W_SILENT);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int64_t start = zclock_mono ();
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000004", 0, 0, 0, 600);
    int64_t took = zclock_mono () - start;
    mh_assert_error (r, corr, AMI_E_TIMEOUT);
    assert_true (took >= 590);
    assert_true (took < 600 + 1000);
    //  The silent worker holds the first try; the broker queues the others
    assert_int_equal (env.worker.served, 1);
    ami_msg_t *h = mh_history (&env, env.client, "MTR-000004", 0);
    assert_int_equal (h->api_readings.count, 0);
    assert_int_equal (mh_pipe_stat (&env, "reads_failed"), 1);
    mh_env_stop (&env);
}

/*  SEC-INT-1 / SEC-INT-3 / SEC-FAIL-1: a response with a bad signature, or
    sealed to another key, or bound to another request id, is never
    stored; the MDMS keeps retrying and a correct answer then succeeds;
    if none comes, the read times out. */
static void
test_bad_responses (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000005", AMI_STATE_READY);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Always a bad signature: retried, never stored, AMI_E_TIMEOUT
    mh_worker_modes (&env.worker, 1, W_BAD_SIG);
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000005", 0, 0, 0, 800);
    mh_assert_error (r, corr, AMI_E_TIMEOUT);
    assert_true (env.worker.served >= 2);               //  it did retry
    assert_true (env.worker.served <= 4);               //  at most retries + 1 tries
    //  every try: the read's own request id (not the corr), new counter
    assert_memory_not_equal (env.worker.request_ids [0], corr, AMI_REQUEST_ID_SIZE);
    for (int k = 1; k < env.worker.served; k++) {
        assert_true (env.worker.counters [k] > env.worker.counters [k - 1]);
        assert_memory_equal (env.worker.request_ids [k], env.worker.request_ids [0],
                             AMI_REQUEST_ID_SIZE);
    }
    ami_msg_t *h = mh_history (&env, env.client, "MTR-000005", 0);
    assert_int_equal (h->api_readings.count, 0);
    assert_true (mh_pipe_stat (&env, "bad_responses") >= 2);

    //  Sealed to another key, then a correct answer: the correct one wins
    mh_worker_modes (&env.worker, 2, W_OTHER_SEAL, W_GOOD);
    env.worker.served = 0;              //  modes count from this read
    mh_read_ok (&env, "MTR-000005");
    assert_int_equal (env.worker.served, 2);
    assert_true (env.worker.counters [1] > env.worker.counters [0]);
    h = mh_history (&env, env.client, "MTR-000005", 0);
    assert_int_equal (h->api_readings.count, 1);
    assert_int_equal (h->api_readings.readings [0].reading.read_ms, env.worker.last_good.read_ms);

    //  Bound to another request id (an old reading), then correct
    mh_worker_modes (&env.worker, 2, W_WRONG_INNER_ID, W_GOOD);
    env.worker.served = 0;
    zclock_sleep (2);
    mh_read_ok (&env, "MTR-000005");
    assert_int_equal (env.worker.served, 2);
    h = mh_history (&env, env.client, "MTR-000005", 0);
    assert_int_equal (h->api_readings.count, 2);
    //  only the good answers were stored: the newest is the last good one
    assert_memory_equal (h->api_readings.readings [0].reading.request_id,
                         env.worker.last_good.request_id, AMI_REQUEST_ID_SIZE);
    assert_int_equal (mh_pipe_stat (&env, "readings"), 2);
    mh_env_stop (&env);
}


/* ---------------------------------------------------------------------- */
/*  Tests: operator API                                                     */

/*  SEC-AUTHZ-1: roles limit actions; only operator keys on the API. */
static void
test_roles (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000006", AMI_STATE_READY);
    mh_read_ok (&env, "MTR-000006");
    zsock_t *viewer = mh_curve (ZMQ_DEALER, env.api, mh.viewer_cert, mh.mdms_cert);
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  VIEWER may not READ (and the worker never sees a command)
    int served = env.worker.served;
    ami_msg_t *r = mh_call (&env, viewer, corr, AMI_ACT_READ, "MTR-000006", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_DENIED);
    assert_int_equal (env.worker.served, served);
    //  ... but may look at history, meters and status
    r = mh_history (&env, viewer, "MTR-000006", 0);
    assert_int_equal (r->api_readings.count, 1);
    r = mh_call (&env, viewer, corr, AMI_ACT_METERS, "", 0, 0, 5, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    assert_int_equal (r->api_meters.count, 5);
    r = mh_call (&env, viewer, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    //  ... and interval data (none stored yet: an empty page)
    r = mh_call (&env, viewer, corr, AMI_ACT_INTERVALS, "MTR-000006", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_INTERVALS);
    assert_int_equal (r->api_intervals.count, 0);
    assert_false (r->api_intervals.more);
    //  ... and the VIEWER may not verify, see the audit log or customers
    r = mh_call (&env, viewer, corr, AMI_ACT_VERIFY, "MTR-000006", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_DENIED);
    r = mh_call (&env, viewer, corr, AMI_ACT_AUDIT, "", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_DENIED);
    r = mh_call (&env, viewer, corr, AMI_ACT_CUSTOMER, "MTR-000021", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_DENIED);
    assert_true (mh_pipe_stat (&env, "denied") >= 4);

    //  A head end's key passes ZAP (it is on the process-wide allow-list)
    //  but is refused on the API
    zsock_t *intruder = mh_curve (ZMQ_DEALER, env.api, mh.headend_cert, mh.mdms_cert);
    r = mh_call (&env, intruder, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_DENIED);
    served = env.worker.served;
    r = mh_call (&env, intruder, corr, AMI_ACT_READ, "MTR-000006", 0, 0, 0, 0);
    mh_assert_error (r, corr, AMI_E_DENIED);
    assert_int_equal (env.worker.served, served);

    //  An operator's key on ingest gets nothing, and is not recorded
    zsock_t *wrong = mh_curve (ZMQ_DEALER, env.ingest, mh.operator_cert, mh.mdms_cert);
    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "headend");
    strcpy (m->health.node_id, "FAKE-HE");
    m->health.state = AMI_STATE_READY;
    uint8_t buf [256];
    size_t len = mh_encode (m, buf, sizeof buf);
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, wrong);
    assert_null (mh_recv (wrong, QUIET_MS));
    r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    for (uint32_t i = 0; i < r->api_status.count; i++)
        assert_string_not_equal (r->api_status.services [i].node_id, "FAKE-HE");

    //  An unlisted key gets nothing at all (ZAP)
    int err = 0;
    ami_cert_t *stranger = ami_cert_new ("operator", "mallory", &err);
    assert_non_null (stranger);
    ami_cert_set_meta (stranger, AMI_MDMS_META_AMI_ROLE, "OPERATOR");
    zsock_t *outsider = mh_curve (ZMQ_DEALER, env.api, stranger, mh.mdms_cert);
    mh_request (outsider, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_null (mh_recv (outsider, QUIET_MS));

    ami_msg_destroy (&m);
    zsock_destroy (&outsider);
    ami_cert_destroy (&stranger);
    zsock_destroy (&wrong);
    zsock_destroy (&intruder);
    zsock_destroy (&viewer);
    mh_env_stop (&env);
}

/*  METERS pages through the whole registry (300 > one page of 256). */
static void
test_meters_paging (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000001", AMI_STATE_READY);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_METERS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    assert_memory_equal (r->api_meters.corr, corr, AMI_REQUEST_ID_SIZE);
    assert_int_equal (r->api_meters.count, AMI_MAX_API_METERS);
    assert_true (r->api_meters.more);
    int seen = 0;
    char last [AMI_MAX_ID + 1] = "";
    for (uint32_t i = 0; i < r->api_meters.count; i++, seen++) {
        ami_meter_row_t *row = &r->api_meters.meters [i];
        char expected [AMI_MAX_ID + 1];
        snprintf (expected, sizeof expected, "MTR-%06d", seen + 1);
        assert_string_equal (row->meter_id, expected);
        assert_string_equal (row->aggregator_id, "AGG-T");
        assert_int_equal (row->state, AMI_STATE_READY);
        assert_true (row->last_read_ms == 0);
        snprintf (last, sizeof last, "%s", row->meter_id);
    }
    //  Second page, after the last id seen
    r = mh_call (&env, env.client, corr, AMI_ACT_METERS, last, 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_METERS);
    assert_int_equal (r->api_meters.count, METERS - AMI_MAX_API_METERS);
    assert_false (r->api_meters.more);
    for (uint32_t i = 0; i < r->api_meters.count; i++, seen++) {
        ami_meter_row_t *row = &r->api_meters.meters [i];
        char expected [AMI_MAX_ID + 1];
        snprintf (expected, sizeof expected, "MTR-%06d", seen + 1);
        assert_string_equal (row->meter_id, expected);
        bool served = seen + 1 <= AGG_T_METERS;
        assert_string_equal (row->aggregator_id, served ? "AGG-T" : "AGG-NONE");
        assert_int_equal (row->state, served ? AMI_STATE_READY : AMI_STATE_DOWN);
    }
    assert_int_equal (seen, METERS);
    //  A small page, and a page past the end
    r = mh_call (&env, env.client, corr, AMI_ACT_METERS, "MTR-000010", 0, 0, 3, 0);
    assert_int_equal (r->api_meters.count, 3);
    assert_true (r->api_meters.more);
    assert_string_equal (r->api_meters.meters [0].meter_id, "MTR-000011");
    r = mh_call (&env, env.client, corr, AMI_ACT_METERS, "MTR-000300", 0, 0, 0, 0);
    assert_int_equal (r->api_meters.count, 0);
    assert_false (r->api_meters.more);
    assert_int_equal (mh_pipe_stat (&env, "meters"), METERS);
    mh_env_stop (&env);
}

/*  HEALTH from a head end (its own and forwarded) shows in STATUS, with
    the MDMS and the broker; silent services turn DOWN. Unknown peers are
    greeted with HELLO. */
static void
test_status_health (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    zsock_t *headend = mh_curve (ZMQ_DEALER, env.ingest, mh.headend_cert, mh.mdms_cert);
    ami_msg_t *m = ami_msg_new ();
    uint8_t buf [512];

    //  HEALTH before any HELLO: the MDMS introduces itself
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "headend");
    strcpy (m->health.node_id, HEADEND_ID);
    m->health.state = AMI_STATE_READY;
    m->health.uptime_ms = 12345;
    size_t health_len = mh_encode (m, buf, sizeof buf);
    zstr_send (headend, "");            //  an empty frame: dropped, no HELLO
    zmsg_t *msg = mh_recv (headend, QUIET_MS);
    assert_null (msg);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, health_len);
    zmsg_send (&msg, headend);
    msg = mh_recv (headend, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (zmsg_size (msg), 1);
    zframe_t *f = zmsg_first (msg);
    assert_int_equal (ami_msg_decode (m, zframe_data (f), zframe_size (f)), AMI_OK);
    assert_int_equal (m->type, AMI_MSG_HELLO);
    assert_string_equal (m->hello.role, "mdms");
    assert_string_equal (m->hello.node_id, MDMS_ID);
    assert_int_equal (m->hello.meter_count, 0);
    zmsg_destroy (&msg);

    //  It introduces itself; then HEALTH, its own and an aggregator's
    ami_msg_reset (m, AMI_MSG_HELLO);
    strcpy (m->hello.role, "headend");
    strcpy (m->hello.node_id, HEADEND_ID);
    size_t len = mh_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, headend);
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "aggregator");
    strcpy (m->health.node_id, "AGG-T");
    m->health.state = AMI_STATE_DEGRADED;
    m->health.uptime_ms = 777;
    uint8_t agg [256];
    size_t agg_len = mh_encode (m, agg, sizeof agg);

    //  Keep both alive for a while, watching STATUS; no more HELLOs come
    int64_t deadline = zclock_mono () + WAIT_MS;
    bool seen = false;
    while (!seen && zclock_mono () < deadline) {
        msg = zmsg_new ();
        ami_msg_reset (m, AMI_MSG_HEALTH);
        strcpy (m->health.role, "headend");
        strcpy (m->health.node_id, HEADEND_ID);
        m->health.state = AMI_STATE_READY;
        m->health.uptime_ms = 12345;
        len = mh_encode (m, buf, sizeof buf);
        zmsg_addmem (msg, buf, len);
        zmsg_send (&msg, headend);
        msg = zmsg_new ();
        zmsg_addmem (msg, agg, agg_len);
        zmsg_send (&msg, headend);
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
        assert_int_equal (r->type, AMI_MSG_API_STATUS);
        assert_memory_equal (r->api_status.corr, corr, AMI_REQUEST_ID_SIZE);
        assert_true (r->api_status.count >= 2);
        ami_service_row_t *rows = r->api_status.services;
        assert_string_equal (rows [0].role, "mdms");
        assert_string_equal (rows [0].node_id, MDMS_ID);
        assert_int_equal (rows [0].state, AMI_STATE_READY);
        assert_string_equal (rows [1].role, "broker");
        assert_string_equal (rows [1].node_id, BROKER_ID);
        bool broker_ready = rows [1].state == AMI_STATE_READY;
        int he = -1, ag = -1;
        for (uint32_t i = 2; i < r->api_status.count; i++) {
            if (streq (rows [i].node_id, HEADEND_ID)) he = (int) i;
            if (streq (rows [i].node_id, "AGG-T")) ag = (int) i;
        }
        if (broker_ready && he > 0 && ag > 0) {
            //  sorted by role: aggregator before headend
            assert_true (ag < he);
            assert_string_equal (rows [he].role, "headend");
            assert_int_equal (rows [he].state, AMI_STATE_READY);
            assert_true (rows [he].uptime_ms == 12345);
            assert_true (rows [he].age_ms < 1000);
            assert_string_equal (rows [ag].role, "aggregator");
            assert_int_equal (rows [ag].state, AMI_STATE_DEGRADED);
            assert_true (rows [ag].uptime_ms == 777);
            seen = true;
        }
        else
            zclock_sleep (POLL_MS);
    }
    assert_true (seen);
    //  introduced: no further HELLO arrives
    assert_null (mh_recv (headend, QUIET_MS));

    //  Silence: after 3 heartbeats both are DOWN, the broker stays READY
    bool down = false;
    deadline = zclock_mono () + WAIT_MS;
    while (!down && zclock_mono () < deadline) {
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
        ami_service_row_t *rows = r->api_status.services;
        int downs = 0;
        for (uint32_t i = 2; i < r->api_status.count; i++)
            if ((streq (rows [i].node_id, HEADEND_ID) || streq (rows [i].node_id, "AGG-T"))
            &&  rows [i].state == AMI_STATE_DOWN) {
                assert_true (rows [i].age_ms >= 3 * HEARTBEAT_MS);
                downs++;
            }
        if (downs == 2) {
            assert_int_equal (rows [1].state, AMI_STATE_READY);
            down = true;
        }
        else
            zclock_sleep (POLL_MS);
    }
    assert_true (down);

    //  A HELLO claiming another node id is refused (no record of it)
    ami_msg_reset (m, AMI_MSG_HELLO);
    strcpy (m->hello.role, "headend");
    strcpy (m->hello.node_id, "HE-OTHER");
    len = mh_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, headend);
    //  Malformed ingest input is dropped; the MDMS keeps serving
    msg = zmsg_new ();
    zmsg_addstr (msg, "not msgpack");
    zmsg_send (&msg, headend);
    msg = zmsg_new ();
    zmsg_addstr (msg, "two");
    zmsg_addstr (msg, "frames");
    zmsg_send (&msg, headend);
    //  (ingest and api are different sockets: wait, don't assume order)
    int64_t until = zclock_mono () + WAIT_MS;
    while (mh_pipe_stat (&env, "malformed") < 3 && zclock_mono () < until)
        zclock_sleep (POLL_MS);
    assert_int_equal (mh_pipe_stat (&env, "malformed"), 3);
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);

    ami_msg_destroy (&m);
    zsock_destroy (&headend);
    mh_env_stop (&env);
}

/*  SEC-VAL-1: malformed API input gets ERROR AMI_E_BAD_REQUEST when the
    envelope is intact, nothing otherwise; the MDMS keeps serving. A REQ
    socket works as a client too. */
static void
test_malformed_api (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *client = env.client;
    zmsg_t *msg;

    //  Garbage after the delimiter
    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, "\x93\x01\x28garbage");
    zmsg_send (&msg, client);
    ami_msg_t *r = mh_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    mh_assert_error (r, NULL, AMI_E_BAD_REQUEST);
    assert_non_null (strstr (r->error.text, "malformed request"));

    //  Empty body, a body of the wrong type, two body frames
    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, "", 0);
    zmsg_send (&msg, client);
    r = mh_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    mh_assert_error (r, NULL, AMI_E_BAD_REQUEST);

    ami_msg_t *m = ami_msg_new ();
    ami_msg_reset (m, AMI_MSG_HEALTH);
    strcpy (m->health.role, "operator");
    strcpy (m->health.node_id, "alice");
    uint8_t buf [256];
    size_t len = mh_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, client);
    r = mh_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    mh_assert_error (r, NULL, AMI_E_BAD_REQUEST);

    msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, "one");
    zmsg_addstr (msg, "two");
    zmsg_send (&msg, client);
    r = mh_reply (&env, client, WAIT_MS);
    assert_non_null (r);
    mh_assert_error (r, NULL, AMI_E_BAD_REQUEST);

    //  Truncated API_REQ, and every prefix of a valid one: all answered
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_reset (m, AMI_MSG_API_REQ);
    m->api_req.action = AMI_ACT_STATUS;
    len = mh_encode (m, buf, sizeof buf);
    for (size_t cut = 1; cut < len; cut += 3) {
        msg = zmsg_new ();
        zmsg_addmem (msg, "", 0);
        zmsg_addmem (msg, buf, cut);
        zmsg_send (&msg, client);
        r = mh_reply (&env, client, WAIT_MS);
        assert_non_null (r);
        mh_assert_error (r, NULL, AMI_E_BAD_REQUEST);
    }

    //  No envelope delimiter: no intact envelope, no reply
    msg = zmsg_new ();
    zmsg_addstr (msg, "no delimiter");
    zmsg_send (&msg, client);
    assert_null (mh_reply (&env, client, QUIET_MS));

    //  Still serving, on the same connection and over REQ
    r = mh_call (&env, client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    zsock_t *req = mh_curve (ZMQ_REQ, env.api, mh.operator_cert, mh.mdms_cert);
    ami_msg_reset (m, AMI_MSG_API_REQ);
    randombytes_buf (m->api_req.corr, AMI_REQUEST_ID_SIZE);
    m->api_req.action = AMI_ACT_METERS;
    m->api_req.limit = 2;
    len = mh_encode (m, buf, sizeof buf);
    msg = zmsg_new ();
    zmsg_addmem (msg, buf, len);
    zmsg_send (&msg, req);
    msg = mh_recv (req, WAIT_MS);
    assert_non_null (msg);
    assert_int_equal (zmsg_size (msg), 1);
    zframe_t *f = zmsg_first (msg);
    uint8_t sent_corr [AMI_REQUEST_ID_SIZE];
    memcpy (sent_corr, m->api_req.corr, sizeof sent_corr);
    assert_int_equal (ami_msg_decode (m, zframe_data (f), zframe_size (f)), AMI_OK);
    assert_int_equal (m->type, AMI_MSG_API_METERS);
    assert_memory_equal (m->api_meters.corr, sent_corr, AMI_REQUEST_ID_SIZE);
    assert_int_equal (m->api_meters.count, 2);
    zmsg_destroy (&msg);
    assert_true (mh_pipe_stat (&env, "malformed") >= 5);

    zsock_destroy (&req);
    ami_msg_destroy (&m);
    mh_env_stop (&env);
}

/*  The event feed: [topic][EVENT], read_done per stored read, origin the
    MDMS, seq increasing. */
static void
test_events (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    zsock_t *sub = mh_curve (ZMQ_SUB, env.events, mh.operator_cert, mh.mdms_cert);
    zsock_set_subscribe (sub, "event.");
    ami_msg_t *ev = ami_msg_new ();
    uint8_t corr [AMI_REQUEST_ID_SIZE];

    //  Subscriptions take a moment to reach the PUB: provoke read_failed
    //  events (unknown meter) until one arrives
    int64_t deadline = zclock_mono () + WAIT_MS;
    bool joined = false;
    while (!joined && zclock_mono () < deadline) {
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-999999", 0, 0, 0, 0);
        mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
        zmsg_t *msg;
        while ((msg = mh_recv (sub, POLL_MS))) {
            char *topic = zmsg_popstr (msg);
            if (streq (topic, "event.read_failed"))
                joined = true;
            zstr_free (&topic);
            zmsg_destroy (&msg);
        }
    }
    assert_true (joined);

    mh_wait_meter_state (&env, "MTR-000008", AMI_STATE_READY);
    mh_read_ok (&env, "MTR-000008");
    mh_read_ok (&env, "MTR-000009");
    const char *expected [] = { "MTR-000008", "MTR-000009" };
    int done = 0;
    uint64_t last_seq = 0;
    while (done < 2) {
        zmsg_t *msg = mh_recv (sub, WAIT_MS);
        assert_non_null (msg);
        assert_int_equal (zmsg_size (msg), 2);
        char *topic = zmsg_popstr (msg);
        zframe_t *f = zmsg_first (msg);
        assert_int_equal (ami_msg_decode (ev, zframe_data (f), zframe_size (f)), AMI_OK);
        assert_int_equal (ev->type, AMI_MSG_EVENT);
        assert_string_equal (ev->event.origin, MDMS_ID);
        assert_true (ev->event.seq > last_seq);
        if (last_seq)
            assert_true (ev->event.seq == last_seq + 1);    //  nothing lost here
        last_seq = ev->event.seq;
        if (ev->event.kind == AMI_EV_READ_DONE) {
            assert_string_equal (topic, "event.read_done");
            assert_string_equal (ev->event.meter_id, expected [done]);
            done++;
        }
        zstr_free (&topic);
        zmsg_destroy (&msg);
    }
    assert_int_equal (mh_pipe_stat (&env, "events"), last_seq);
    ami_msg_destroy (&ev);
    zsock_destroy (&sub);
    mh_env_stop (&env);
}

/*  SEC-AVAIL-2: reads beyond max_pending are refused at once (BUSY). */
static void
test_pending_bound (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000010", AMI_STATE_READY);
    //  Restart with a bound of 1, worker silent
    mh_mdms_stop (&env);
    env.config.max_pending = 1;
    mh_mdms_start (&env);
    mh_wait_meter_state (&env, "MTR-000010", AMI_STATE_READY);
    mh_worker_modes (&env.worker, 1, W_SILENT);
    uint8_t first [AMI_REQUEST_ID_SIZE], second [AMI_REQUEST_ID_SIZE];
    mh_request (env.client, first, AMI_ACT_READ, "MTR-000010", 0, 0, 0, 500);
    ami_msg_t *r = mh_call (&env, env.client, second, AMI_ACT_READ, "MTR-000011", 0, 0, 0, 500);
    mh_assert_error (r, second, AMI_E_BUSY);
    r = mh_reply (&env, env.client, WAIT_MS);
    assert_non_null (r);
    mh_assert_error (r, first, AMI_E_TIMEOUT);
    mh_env_stop (&env);
}


/* ---------------------------------------------------------------------- */
/*  Tests: start-up and the database schema                                 */

static char *
s_write_registry (const char *name, const char *text)
{
    char *path = ami_test_path (mh.dir, name);
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    fputs (text, file);
    fclose (file);
    return path;
}

/*  SEC-KEY-1 / registry validation: the MDMS refuses to start rather than
    run with a bad configuration. */
static void
test_start_failures (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    ami_mdms_config_t bad = env.config;
    bad.api_endpoint = "tcp://127.0.0.1:*";
    bad.db_dir = NULL;
    assert_null (ami_mdms_new (&bad));
    bad = env.config;
    bad.broker_key = "short";
    assert_null (ami_mdms_new (&bad));
    ami_e2e_mdms_t public_only = mh.keys;
    public_only.has_secret = false;
    bad = env.config;
    bad.keys = &public_only;
    assert_null (ami_mdms_new (&bad));
    assert_null (ami_mdms_new (NULL));
    //  Issue 6: the queue bounds are validated
    bad = env.config;
    bad.max_pending = AMI_MDMS_MAX_PENDING_MAX + 1;
    assert_null (ami_mdms_new (&bad));
    bad = env.config;
    bad.ingest_queue = AMI_MDMS_INGEST_QUEUE_MAX + 1;
    assert_null (ami_mdms_new (&bad));

    char *db = ami_test_path (mh.dir, "db-bad");
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (mh.fleet_seed, 1, pk, NULL);
    char hex [65], line [256];
    sodium_bin2hex (hex, sizeof hex, pk, sizeof pk);
    const char *broken [] = {
        "MTR-1\tF\tA\n",                                           //  3 fields
        "MTR 1\tF\tA\t%s\n",                                       //  bad id
        "MTR-1\tF\tA\t%s\textra\n",                                //  5 fields
        "MTR-1\tF\tA\t0011\n",                                     //  short key
        "MTR-1\tF\tA\tzz%s\n",                                     //  not hex
        "MTR-1\tF\tA\t%s\nMTR-1\tF\tA\t%s\n",                      //  duplicate
        "MTR-1\tF\tA\t0000000000000000000000000000000000000000000000000000000000000000\n",
        "MTR-1\tF\tAGG-with-a-name-far-longer-than-32\t%s\n",
        //  customer columns (SEC-CONF-2): all three or none, each checked
        "MTR-1\tF\tA\t%s\tName\tAddress\n",                       //  6 fields
        "MTR-1\tF\tA\t%s\t\tAddress\tACC-1\n",                   //  empty name
        "MTR-1\tF\tA\t%s\tName\tAddress\tnot an id\n",           //  bad account
        "MTR-1\tF\tA\t%s\tNa\x01me\tAddress\tACC-1\n",          //  control char
        "MTR-1\tF\tA\t%s\tName\tAddr\xff\tACC-1\n",             //  not UTF-8
        "MTR-1\tF\tA\t%s\tName\tAddress\tACC-1\textra\n",       //  8 fields
        "MTR-1\tF\tA\t%s\tA customer name of 65 bytes: one more than the limit allows......\t\tA\n",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken [0]; i++) {
        snprintf (line, sizeof line, broken [i], hex, hex);
        char *path = s_write_registry ("bad.tsv", line);
        bad = env.config;
        bad.db_dir = db;
        bad.registry_path = path;
        zactor_t *mdms = ami_mdms_new (&bad);
        if (mdms)
            fail_msg ("registry line %zu was accepted", i);
        free (path);
    }
    bad = env.config;
    bad.db_dir = db;
    bad.registry_path = "/nonexistent/meters.tsv";
    assert_null (ami_mdms_new (&bad));
    //  The api endpoint already bound
    bad = env.config;
    bad.db_dir = db;
    bad.api_endpoint = env.api;
    assert_null (ami_mdms_new (&bad));
    free (db);
    mh_env_stop (&env);
}

/*  The schema: counters in blocks across reopen, key order, value checks,
    registry replacement. */
static void
test_db_schema (void **state)
{
    (void) state;
    char *dir = ami_test_path (mh.dir, "db-schema");
    int err = 0;
    ami_mdms_db_t *db = ami_mdms_db_new (dir, 0, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);

    //  Counters: 1, 2, ... with one block reserved
    uint64_t c = 0, prev = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal (ami_mdms_db_counter_next (db, &c), AMI_OK);
        assert_true (c > prev);
        prev = c;
    }
    assert_true (c == 5);
    assert_true (ami_mdms_db_counter_reserved (db) == AMI_MDMS_COUNTER_BLOCK);
    ami_mdms_db_destroy (&db);
    db = ami_mdms_db_new (dir, 0, AMI_STORE_NOSYNC, &err);
    assert_non_null (db);
    //  Readings are stored sealed under the data key (SEC-CONF-2)
    ami_mdms_db_set_data_key (db, mh.data_seed);
    assert_int_equal (ami_mdms_db_counter_next (db, &c), AMI_OK);
    assert_true (c == AMI_MDMS_COUNTER_BLOCK + 1);      //  above the old mark
    assert_true (ami_mdms_db_counter_reserved (db) == 2 * AMI_MDMS_COUNTER_BLOCK);

    //  Registry import, then a replacement that drops a meter
    char *reg = s_write_registry ("small.tsv", "");
    FILE *file = fopen (reg, "w");
    mh_registry_line (file, 1);
    mh_registry_line (file, 10);
    fputs ("  # indented comment\n\r\n", file);
    mh_registry_line (file, 2);
    fclose (file);
    zlistx_t *aggs = NULL;
    size_t count = 0;
    assert_int_equal (ami_mdms_db_registry_import (db, reg, &aggs, &count), AMI_OK);
    assert_int_equal (count, 3);
    assert_int_equal (zlistx_size (aggs), 1);
    assert_string_equal ((char *) zlistx_first (aggs), "AGG-T");
    zlistx_destroy (&aggs);
    ami_mdms_meter_t m;
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000010", &m), AMI_OK);
    assert_string_equal (m.fleet_id, "FLEET-1");
    assert_string_equal (m.aggregator_id, "AGG-T");
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    ami_e2e_meter_keypair (mh.fleet_seed, 10, pk, NULL);
    assert_memory_equal (m.sign_pk, pk, sizeof pk);
    file = fopen (reg, "w");
    mh_registry_line (file, 1);
    mh_registry_line (file, 300);
    fclose (file);
    assert_int_equal (ami_mdms_db_registry_import (db, reg, &aggs, &count), AMI_OK);
    assert_int_equal (zlistx_size (aggs), 2);
    zlistx_destroy (&aggs);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000010", &m), AMI_E_NOTFOUND);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000300", &m), AMI_OK);
    assert_string_equal (m.aggregator_id, "AGG-NONE");
    ami_mdms_meter_t rows [4];
    bool more = true;
    assert_int_equal (ami_mdms_db_meters_page (db, "", 4, rows, &count, &more), AMI_OK);
    assert_int_equal (count, 2);
    assert_false (more);
    //  A failed import changes nothing
    char *broken = s_write_registry ("broken.tsv", "MTR-000099\tF\tA\tnot-a-key\n");
    assert_int_equal (ami_mdms_db_registry_import (db, broken, NULL, NULL), AMI_E_CONFIG);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000300", &m), AMI_OK);
    assert_int_equal (ami_mdms_db_meter_get (db, "MTR-000099", &m), AMI_E_NOTFOUND);

    //  Readings: "MTR-1" rows never mix with "MTR-10" rows
    uint8_t rid [AMI_REQUEST_ID_SIZE] = { 1 };
    const uint8_t reading [] = { 0x90 }, proof [] = { 1, 2, 3 };
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 100, rid, 90, 110, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-10", 50, rid, 40, 60, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 200, rid, 190, 210, reading,
                                               sizeof reading, proof, sizeof proof), AMI_OK);
    assert_int_equal (ami_mdms_db_reading_put (db, "MTR-1", 200, rid, 190, 210, reading,
                                               sizeof reading, proof, sizeof proof),
                      AMI_E_EXISTS);
    uint64_t last = 0;
    assert_int_equal (ami_mdms_db_last_read (db, "MTR-1", &last), AMI_OK);
    assert_true (last == 200);
    assert_int_equal (ami_mdms_db_last_read (db, "MTR-10", &last), AMI_OK);
    assert_true (last == 50);
    assert_int_equal (ami_mdms_db_last_read (db, "MTR-2", &last), AMI_OK);
    assert_true (last == 0);
    more = false;
    assert_int_equal (ami_mdms_db_history (db, "MTR-1", 0, 0, 1, NULL, NULL, &more), AMI_OK);
    assert_true (more);
    assert_int_equal (ami_mdms_db_history (db, "MTR-1", 0, 150, 1, NULL, NULL, &more), AMI_OK);
    assert_false (more);
    assert_int_equal (ami_mdms_db_reading_count (db), 3);

    //  Record layout (the opened value): parse a good one, refuse every
    //  truncation
    uint8_t key [AMI_MDMS_READING_KEY_MAX];
    size_t klen = ami_mdms_db_reading_key ("MTR-1", 100, rid, key);
    assert_int_equal (klen, 5 + 1 + 8 + 16);
    uint8_t val [64] = { AMI_MDMS_READING_LAYOUT };
    val [8] = 90;                                   //  requested_ms
    val [16] = 110;                                 //  stored_ms
    val [20] = 1;                                   //  reading length
    val [21] = 0x90;
    val [25] = 3;                                   //  proof length
    memcpy (val + 26, proof, 3);
    ami_mdms_reading_t row;
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_OK);
    assert_true (row.requested_ms == 90 && row.stored_ms == 110 && row.read_ms == 100);
    assert_int_equal (row.reading_size, 1);
    assert_int_equal (row.proof_size, 3);
    assert_string_equal (row.meter_id, "MTR-1");
    for (size_t cut = 0; cut < 29; cut++)
        assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, cut, &row), AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 30, &row), AMI_E_STORAGE);
    val [0] = 9;                                    //  unknown layout
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_E_STORAGE);
    val [0] = AMI_MDMS_READING_LAYOUT;
    val [20] = 0xff;                                //  length past the end
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_E_STORAGE);
    key [5] = 'x';                                  //  separator gone
    assert_int_equal (ami_mdms_db_reading_parse (key, klen, val, 29, &row), AMI_E_STORAGE);
    assert_int_equal (ami_mdms_db_reading_key ("bad id", 1, rid, key), 0);

    ami_mdms_db_destroy (&db);
    free (reg);
    free (broken);
    free (dir);
}

/*  The role table (SEC-AUTHZ-1): every (role, action) pair. */
static void
test_acl (void **state)
{
    (void) state;
    const char *roles [] = { "VIEWER", "OPERATOR", "SECADM", "AUDITOR" };
    //  Expected grants, one row per action, one column per role above
    static const struct {
        int action;
        int expect [4];
    } table [] = {
        { AMI_ACT_READ,         { AMI_E_DENIED, AMI_OK, AMI_E_DENIED, AMI_E_DENIED } },
        { AMI_ACT_HISTORY,      { AMI_OK, AMI_OK, AMI_OK, AMI_OK } },
        { AMI_ACT_METERS,       { AMI_OK, AMI_OK, AMI_OK, AMI_OK } },
        { AMI_ACT_STATUS,       { AMI_OK, AMI_OK, AMI_OK, AMI_OK } },
        { AMI_ACT_INTERVALS,    { AMI_OK, AMI_OK, AMI_OK, AMI_OK } },
        { AMI_ACT_AUDIT,        { AMI_E_DENIED, AMI_E_DENIED, AMI_E_DENIED, AMI_OK } },
        { AMI_ACT_VERIFY,       { AMI_E_DENIED, AMI_OK, AMI_E_DENIED, AMI_OK } },
        { AMI_ACT_CUSTOMER,     { AMI_E_DENIED, AMI_OK, AMI_E_DENIED, AMI_E_DENIED } },
        { AMI_ACT_AUDIT_VERIFY, { AMI_E_DENIED, AMI_E_DENIED, AMI_E_DENIED, AMI_OK } },
        { AMI_ACT_RECOVER,      { AMI_E_DENIED, AMI_OK, AMI_E_DENIED, AMI_E_DENIED } },
    };
    assert_int_equal (sizeof table / sizeof table [0], AMI_ACT_MAX);
    for (size_t a = 0; a < sizeof table / sizeof table [0]; a++)
        for (int i = 0; i < 4; i++)
            if (ami_mdms_acl_check (roles [i], table [a].action, NULL) != table [a].expect [i])
                fail_msg ("%s %s: expected %s", roles [i], ami_action_name (table [a].action),
                          ami_errname (table [a].expect [i]));
    assert_int_equal (ami_mdms_acl_check (NULL, AMI_ACT_STATUS, NULL), AMI_E_DENIED);
    assert_int_equal (ami_mdms_acl_check ("operator", AMI_ACT_STATUS, NULL), AMI_E_DENIED);
    assert_int_equal (ami_mdms_acl_check ("ROOT", AMI_ACT_READ, NULL), AMI_E_DENIED);
    const char *why = NULL;
    assert_int_equal (ami_mdms_acl_check ("OPERATOR", 0, &why), AMI_E_BAD_REQUEST);
    assert_int_equal (ami_mdms_acl_check ("OPERATOR", AMI_ACT_MAX + 1, &why), AMI_E_BAD_REQUEST);
    assert_string_equal (why, "unknown action");
}

/*  Issue 6: the broker's row in STATUS carries the broker's own counters
    (its mmi.ami-stats answer), the same statistics as its STATS. */
static void
test_issue6_broker_row_stats (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    //  The broker's own list, names in order (values move: queued etc.)
    zsock_set_rcvtimeo (env.broker, WAIT_MS);
    assert_int_equal (zstr_send (env.broker, "STATS"), 0);
    zmsg_t *stats = zmsg_recv (env.broker);
    assert_non_null (stats);
    bool seen = false;
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!seen && zclock_mono () < deadline) {
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 0, 0, 0, 0);
        assert_int_equal (r->type, AMI_MSG_API_STATUS);
        assert_true (r->api_status.count >= 2);
        ami_service_row_t *row = &r->api_status.services [1];
        assert_string_equal (row->role, "broker");
        if (row->stat_count == 0) {
            zclock_sleep (POLL_MS);         //  the first mmi.ami-stats poll
            continue;
        }
        assert_int_equal (row->stat_count, zmsg_size (stats));
        uint32_t i = 0;
        for (zframe_t *f = zmsg_first (stats); f; f = zmsg_next (stats), i++) {
            char *text = zframe_strdup (f);
            size_t n = strlen (row->stats [i].name);
            assert_true (strncmp (text, row->stats [i].name, n) == 0 && text [n] == ' ');
            //  The broker's counters since start: nothing has been dropped
            if (strncmp (text, "dropped_", 8) == 0 || streq (row->stats [i].name, "expired"))
                assert_int_equal (row->stats [i].value, 0);
            if (streq (row->stats [i].name, "max_queue"))
                assert_int_equal (row->stats [i].value, strtoull (text + n + 1, NULL, 10));
            zstr_free (&text);
        }
        seen = true;
    }
    assert_true (seen);
    zmsg_destroy (&stats);
    mh_env_stop (&env);
}

/*  Issue 6 (no silent drops): an operator that goes away while its read
    is still pending. The MDMS's reply cannot be delivered (ROUTER_MANDATORY:
    the peer is gone); it is dropped, counted in send_failed (pipe STATUS
    and the MDMS's own API_STATUS row) and warned about - and the MDMS
    goes on serving the others. */
static void
test_issue6_reply_to_gone_client_counted (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000004", AMI_STATE_READY);
    mh_worker_modes (&env.worker, 1, W_SILENT);
    uint64_t before = mh_pipe_stat (&env, "send_failed");
    zsock_t *gone = mh_curve (ZMQ_DEALER, env.api, mh.operator_cert, mh.mdms_cert);
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    mh_request (gone, corr, AMI_ACT_READ, "MTR-000004", 0, 0, 0, 400);
    //  the read is pending at the MDMS (its silent worker holds it)
    int64_t deadline = zclock_mono () + 5000;
    while (mh_pipe_stat (&env, "pending") == 0 && zclock_mono () < deadline)
        mh_worker_serve (&env.worker);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 1);
    zsock_destroy (&gone);
    //  the read times out; its ERROR finds no peer
    while (mh_pipe_stat (&env, "send_failed") == before && zclock_mono () < deadline) {
        mh_worker_serve (&env.worker);
        zclock_sleep (20);              //  polling a counter, with a deadline
    }
    assert_int_equal (mh_pipe_stat (&env, "send_failed"), before + 1);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 0);
    //  still serving, and the count is in the MDMS's own status row
    uint8_t corr2 [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr2, AMI_ACT_STATUS, NULL, 0, 0, 0, 2000);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    bool found = false;
    for (uint32_t i = 0; i < r->api_status.count; i++) {
        ami_service_row_t *row = &r->api_status.services [i];
        if (strcmp (row->role, "mdms") != 0)
            continue;
        for (uint32_t k = 0; k < row->stat_count; k++)
            if (strcmp (row->stats [k].name, "send_failed") == 0) {
                assert_int_equal (row->stats [k].value, before + 1);
                found = true;
            }
    }
    assert_true (found);
    mh_env_stop (&env);
}

/*  One stat of the MDMS's own row of API_STATUS (asserts it is there). */
static uint64_t
s_own_row_stat (mh_env_t *env, const char *name)
{
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (env, env->client, corr, AMI_ACT_STATUS, NULL, 0, 0, 0, 2000);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    assert_true (r->api_status.count >= 1);
    ami_service_row_t *row = &r->api_status.services [0];
    assert_string_equal (row->role, "mdms");
    for (uint32_t k = 0; k < row->stat_count; k++)
        if (streq (row->stats [k].name, name))
            return row->stats [k].value;
    fail_msg ("the MDMS row has no %s", name);
    return 0;
}

/*  Issue 6 (gaps 7, 8): with max_pending 2, further reads are refused
    AMI_E_BUSY at once, counted on their own (reads_busy) and in
    reads_failed, in pipe STATUS and in the MDMS's API_STATUS row; the
    reads that were let in still end normally. */
static void
test_issue6_reads_busy_counted (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_mdms_stop (&env);
    env.config.max_pending = 2;
    mh_mdms_start (&env);
    mh_wait_meter_state (&env, "MTR-000012", AMI_STATE_READY);
    mh_worker_modes (&env.worker, 1, W_SILENT);
    assert_int_equal (mh_pipe_stat (&env, "reads_busy"), 0);
    uint64_t failed = mh_pipe_stat (&env, "reads_failed");
    uint8_t held [2][AMI_REQUEST_ID_SIZE];
    mh_request (env.client, held [0], AMI_ACT_READ, "MTR-000012", 0, 0, 0, 3000);
    mh_request (env.client, held [1], AMI_ACT_READ, "MTR-000013", 0, 0, 0, 3000);
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (mh_pipe_stat (&env, "pending") < 2 && zclock_mono () < deadline)
        mh_worker_serve (&env.worker);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 2);
    //  The bound is reached: refused at once, not queued
    for (int i = 0; i < 3; i++) {
        uint8_t corr [AMI_REQUEST_ID_SIZE];
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-000014", 0, 0, 0,
                                1000);
        mh_assert_error (r, corr, AMI_E_BUSY);
    }
    assert_int_equal (mh_pipe_stat (&env, "reads_busy"), 3);
    assert_int_equal (mh_pipe_stat (&env, "reads_failed"), failed + 3);
    assert_int_equal (mh_pipe_stat (&env, "pending"), 2);
    assert_int_equal (s_own_row_stat (&env, "reads_busy"), 3);
    //  The held reads end with their own error (a timeout), not BUSY
    for (int i = 0; i < 2; i++) {
        ami_msg_t *r = mh_reply (&env, env.client, WAIT_MS);
        assert_non_null (r);
        assert_int_equal (r->type, AMI_MSG_ERROR);
        assert_int_equal (r->error.code, AMI_E_TIMEOUT);
        assert_true (memcmp (r->error.request_id, held [0], AMI_REQUEST_ID_SIZE) == 0
                  || memcmp (r->error.request_id, held [1], AMI_REQUEST_ID_SIZE) == 0);
    }
    assert_int_equal (mh_pipe_stat (&env, "reads_busy"), 3);
    assert_int_equal (mh_pipe_stat (&env, "reads_failed"), failed + 5);
    //  The other refusal counters are in the row, at zero here
    assert_int_equal (s_own_row_stat (&env, "services_evicted"), 0);
    assert_int_equal (s_own_row_stat (&env, "peers_refused"), 0);
    assert_int_equal (s_own_row_stat (&env, "mmi_refused"), 0);
    assert_int_equal (s_own_row_stat (&env, "ingest_throttled"), 0);
    mh_env_stop (&env);
}

/*  Issue 6 (gap 3): the event feed is loss-tolerant, so the MDMS publishes
    the last EVENT.seq it sent (events_seq) in its API_STATUS row and pipe
    STATUS; it grows by one per event, and a subscriber that kept up has
    received exactly that seq last. */
static void
test_issue6_events_seq (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, false);
    zsock_t *sub = mh_curve (ZMQ_SUB, env.events, mh.operator_cert, mh.mdms_cert);
    zsock_set_subscribe (sub, "event.");
    ami_msg_t *ev = ami_msg_new ();
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    //  Join: provoke read_failed events until one arrives
    uint64_t last = 0;
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!last && zclock_mono () < deadline) {
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-999999", 0, 0, 0, 0);
        mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
        zmsg_t *msg;
        while ((msg = mh_recv (sub, POLL_MS))) {
            zframe_t *f = zmsg_last (msg);
            assert_int_equal (ami_msg_decode (ev, zframe_data (f), zframe_size (f)), AMI_OK);
            last = ev->event.seq;
            zmsg_destroy (&msg);
        }
    }
    assert_true (last > 0);
    uint64_t before = mh_pipe_stat (&env, "events_seq");
    assert_true (before >= last);
    assert_int_equal (mh_pipe_stat (&env, "events"), before);
    //  Five more events: the counter follows, one per event
    for (int i = 0; i < 5; i++) {
        ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_READ, "MTR-999998", 0, 0, 0, 0);
        mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    }
    uint64_t after = mh_pipe_stat (&env, "events_seq");
    assert_true (after >= before + 5);
    assert_true (s_own_row_stat (&env, "events_seq") >= after);
    //  The subscriber kept up: its last seq reaches events_seq, no gap
    deadline = zclock_mono () + WAIT_MS;
    while (last < after && zclock_mono () < deadline) {
        zmsg_t *msg = mh_recv (sub, POLL_MS);
        if (!msg)
            continue;
        zframe_t *f = zmsg_last (msg);
        assert_int_equal (ami_msg_decode (ev, zframe_data (f), zframe_size (f)), AMI_OK);
        assert_true (ev->event.seq == last + 1);
        last = ev->event.seq;
        zmsg_destroy (&msg);
    }
    assert_true (last >= after);
    ami_msg_destroy (&ev);
    zsock_destroy (&sub);
    mh_env_stop (&env);
}

/*  SEC-INT-5: action `recover` is an on-demand read whose signed READ_REQ
    carries the load-profile range in seconds ((from_ms / 1000, to_ms /
    1000]); the reply is the reading, as for read. A plain read carries
    no range. Both ends are required and the range is checked (nothing is
    sent to the field for a bad one); the roles are read's; the audit
    entry names action 10. */
static void
test_sec_int_5_recover_mdms (void **state)
{
    (void) state;
    mh_env_t env;
    mh_env_start (&env, true);
    mh_wait_meter_state (&env, "MTR-000007", AMI_STATE_READY);
    mh_worker_modes (&env.worker, 3, W_HOLD, W_HOLD, W_GOOD);
    const uint64_t from_ms = 1780185600500ULL, to_ms = 1780272000999ULL;

    //  recover: the worker (as the meter) holds the READ_REQ it got
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    mh_request (env.client, corr, AMI_ACT_RECOVER, "MTR-000007", from_ms, to_ms, 0, 3000);
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (!env.worker.held_client && zclock_mono () < deadline) {
        zpoller_t *poller = zpoller_new (env.worker.sock, NULL);
        if (zpoller_wait (poller, POLL_MS))
            mh_worker_serve (&env.worker);
        zpoller_destroy (&poller);
    }
    assert_non_null (env.worker.held_client);
    //  (the worker verified the MDMS signature over the frame, range included)
    assert_true (env.worker.held.profile_from_s == 1780185600ULL);
    assert_true (env.worker.held.profile_to_s == 1780272000ULL);
    mh_worker_release (&env.worker, W_GOOD);
    ami_msg_t *r = mh_reply (&env, env.client, WAIT_MS);
    assert_non_null (r);
    assert_int_equal (r->type, AMI_MSG_API_READINGS);
    assert_memory_equal (r->api_readings.corr, corr, AMI_REQUEST_ID_SIZE);
    assert_int_equal (r->api_readings.count, 1);
    assert_string_equal (r->api_readings.readings [0].reading.meter_id, "MTR-000007");
    r = mh_history (&env, env.client, "MTR-000007", 0);
    assert_int_equal (r->api_readings.count, 1);            //  stored, as a read's
    assert_int_equal (mh_pipe_stat (&env, "reads_ok"), 1);

    //  a plain read carries no range
    mh_request (env.client, corr, AMI_ACT_READ, "MTR-000007", 0, 0, 0, 3000);
    deadline = zclock_mono () + WAIT_MS;
    while (!env.worker.held_client && zclock_mono () < deadline) {
        zpoller_t *poller = zpoller_new (env.worker.sock, NULL);
        if (zpoller_wait (poller, POLL_MS))
            mh_worker_serve (&env.worker);
        zpoller_destroy (&poller);
    }
    assert_non_null (env.worker.held_client);
    assert_true (env.worker.held.profile_from_s == 0 && env.worker.held.profile_to_s == 0);
    mh_worker_release (&env.worker, W_GOOD);
    r = mh_reply (&env, env.client, WAIT_MS);
    assert_non_null (r);
    assert_int_equal (r->type, AMI_MSG_API_READINGS);

    //  bad ranges: refused at once, nothing sent towards the meter
    int served = env.worker.served;
    static const struct { uint64_t from, to; } bad [] = {
        { 0, 1780272000000ULL },                        //  no start
        { 1780185600000ULL, 0 },                        //  no end
        { 1780272000000ULL, 1780185600000ULL },         //  reversed
        { 1780272000100ULL, 1780272000900ULL },         //  empty in whole seconds
        { 1780272000000ULL - (AMI_PROFILE_RECOVER_MAX_S + 1) * 1000ULL, 1780272000000ULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        r = mh_call (&env, env.client, corr, AMI_ACT_RECOVER, "MTR-000007", bad [i].from,
                     bad [i].to, 0, 3000);
        mh_assert_error (r, corr, AMI_E_BAD_REQUEST);
    }
    r = mh_call (&env, env.client, corr, AMI_ACT_RECOVER, "", from_ms, to_ms, 0, 3000);
    mh_assert_error (r, corr, AMI_E_BAD_REQUEST);
    r = mh_call (&env, env.client, corr, AMI_ACT_RECOVER, "MTR-999999", from_ms, to_ms, 0, 3000);
    mh_assert_error (r, corr, AMI_E_UNKNOWN_METER);
    //  exactly 31 days is a range
    r = mh_call (&env, env.client, corr, AMI_ACT_RECOVER, "MTR-000007",
                 to_ms - AMI_PROFILE_RECOVER_MAX_S * 1000ULL, to_ms, 0, 3000);
    assert_int_equal (r->type, AMI_MSG_API_READINGS);
    assert_int_equal (env.worker.served, served + 1);

    //  the roles of read: a VIEWER is denied, the worker never sees it
    zsock_t *viewer = mh_curve (ZMQ_DEALER, env.api, mh.viewer_cert, mh.mdms_cert);
    r = mh_call (&env, viewer, corr, AMI_ACT_RECOVER, "MTR-000007", from_ms, to_ms, 0, 3000);
    mh_assert_error (r, corr, AMI_E_DENIED);
    assert_int_equal (env.worker.served, served + 1);
    zsock_destroy (&viewer);

    //  the audit log names the action: recover (10)
    zsock_t *auditor = mh_curve (ZMQ_DEALER, env.api, mh.auditor_cert, mh.mdms_cert);
    r = mh_call (&env, auditor, corr, AMI_ACT_AUDIT, "", 0, 0, AMI_MAX_API_AUDIT, 0);
    assert_int_equal (r->type, AMI_MSG_API_AUDIT);
    int recovers_ok = 0, recovers_bad = 0, recovers_denied = 0;
    for (uint32_t i = 0; i < r->api_audit.count; i++) {
        const ami_audit_row_t *row = &r->api_audit.entries [i];
        if (row->action != AMI_ACT_RECOVER)
            continue;
        recovers_ok += row->result == AMI_OK;
        recovers_bad += row->result == AMI_E_BAD_REQUEST;
        recovers_denied += row->result == AMI_E_DENIED;
    }
    assert_int_equal (recovers_ok, 2);
    assert_int_equal (recovers_bad, 6);
    assert_int_equal (recovers_denied, 1);
    zsock_destroy (&auditor);
    mh_env_stop (&env);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_acl),
        cmocka_unit_test (test_db_schema),
        cmocka_unit_test (test_read_and_history),
        cmocka_unit_test (test_restart_persistence),
        cmocka_unit_test (test_read_errors),
        cmocka_unit_test (test_issue6_relay_errors_spaced),
        cmocka_unit_test (test_read_race),
        cmocka_unit_test (test_read_timeout),
        cmocka_unit_test (test_issue6_reply_to_gone_client_counted),
        cmocka_unit_test (test_bad_responses),
        cmocka_unit_test (test_roles),
        cmocka_unit_test (test_meters_paging),
        cmocka_unit_test (test_status_health),
        cmocka_unit_test (test_issue6_broker_row_stats),
        cmocka_unit_test (test_malformed_api),
        cmocka_unit_test (test_events),
        cmocka_unit_test (test_pending_bound),
        cmocka_unit_test (test_issue6_reads_busy_counted),
        cmocka_unit_test (test_issue6_events_seq),
        cmocka_unit_test (test_sec_int_5_recover_mdms),
        cmocka_unit_test (test_start_failures),
    };
    //  AMI_TEST_FILTER=test_issue6* runs those tests (cmocka's pattern)
    if (getenv ("AMI_TEST_FILTER"))
        cmocka_set_test_filter (getenv ("AMI_TEST_FILTER"));
    return cmocka_run_group_tests_name ("mdms", tests, mh_group_setup, mh_group_teardown);
}
