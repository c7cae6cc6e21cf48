/*  test_client_bounds.c - the operator API client's queue bound (issue 6,
    gap 9): common/ami_client.c's DEALER holds at most AMI_CLIENT_HWM
    requests, and ami_client_send refuses the next one at once with
    AMI_E_BUSY (it never blocks) instead of queuing without limit; once
    the MDMS takes the queue, sends succeed again.

    The "MDMS" is an IPC endpoint nobody has bound at first (not a closed
    TCP port: libzmq's reconnects to a free loopback port can connect to
    themselves), so every request stays in the client's queue; then a
    CURVE ROUTER binds it and drains the queue. One ami_auth for the
    process, its allow-list holding the operator's public certificate.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_client.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_test.h"

/*  Positive waits are generous (a loaded 2-core VM, sanitizers). */
#define WAIT_MS     10000
#define POLL_MS     5

/*  The client queues AMI_CLIENT_HWM requests while nobody listens, the
    next one is refused AMI_E_BUSY at once with a reason, and nothing more
    is queued; once the MDMS binds, it receives exactly the queued
    requests, and sends succeed again. */
static void
test_issue6_client_send_bound (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("client-bounds");
    char *allow = ami_test_path (dir, "allow");
    assert_non_null (dir);
    assert_non_null (allow);
    assert_int_equal (zsys_dir_create ("%s", allow), 0);
    int err = 0;
    ami_cert_t *operator = ami_cert_new ("operator", "op-1", &err);
    ami_cert_t *mdms = ami_cert_new ("mdms", "mdms", &err);
    assert_non_null (operator);
    assert_non_null (mdms);
    char *public = ami_test_path (allow, "op-1.cert");
    assert_int_equal (ami_cert_save_public (operator, public), AMI_OK);
    ami_auth_t *auth = ami_auth_new (allow, &err);
    assert_non_null (auth);
    char *ipc = ami_test_path (dir, "api.ipc");
    char *endpoint = zsys_sprintf ("ipc://%s", ipc);
    assert_non_null (endpoint);

    ami_client_t *client = ami_client_new (endpoint, operator,
                                           ami_cert_public_txt (mdms), &err);
    assert_non_null (client);
    ami_api_req_t req = { .action = AMI_ACT_STATUS, .timeout_ms = 1000 };
    int64_t started = zclock_mono ();
    for (uint32_t i = 0; i < AMI_CLIENT_HWM; i++) {
        memset (req.corr, 0, sizeof req.corr);
        memcpy (req.corr, &i, sizeof i);
        if (ami_client_send (client, &req) != AMI_OK)
            fail_msg ("request %u of %d refused: %s", i, AMI_CLIENT_HWM,
                      ami_client_why (client));
    }
    //  At the bound: refused at once, never blocking, with the reason
    assert_int_equal (ami_client_send (client, &req), AMI_E_BUSY);
    assert_int_equal (ami_client_send (client, &req), AMI_E_BUSY);
    assert_true (zclock_mono () - started < WAIT_MS);
    assert_non_null (strstr (ami_client_why (client), "requests already queued"));
    assert_non_null (strstr (ami_client_why (client), endpoint));

    //  The MDMS comes up: it gets the queued requests, no more, no fewer
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    assert_non_null (router);
    zsock_set_linger (router, 0);
    zsock_set_rcvtimeo (router, WAIT_MS);
    assert_int_equal (ami_auth_server (router, mdms), AMI_OK);
    assert_int_equal (zsock_bind (router, "%s", endpoint), 0);
    ami_msg_t *msg = ami_msg_new ();
    assert_non_null (msg);
    bool seen_first = false, seen_last = false;
    for (uint32_t n = 0; n < AMI_CLIENT_HWM; n++) {
        zmsg_t *in = zmsg_recv (router);
        if (!in)
            fail_msg ("only %u of %d queued requests arrived", n, AMI_CLIENT_HWM);
        assert_int_equal (zmsg_size (in), 3);          //  routing id, "", API_REQ
        zframe_t *body = zmsg_last (in);
        assert_int_equal (ami_msg_decode (msg, zframe_data (body), zframe_size (body)),
                          AMI_OK);
        assert_int_equal (msg->type, AMI_MSG_API_REQ);
        uint32_t i;
        memcpy (&i, msg->api_req.corr, sizeof i);
        assert_true (i < AMI_CLIENT_HWM);
        seen_first |= i == 0;
        seen_last |= i == AMI_CLIENT_HWM - 1;
        zmsg_destroy (&in);
    }
    assert_true (seen_first && seen_last);
    //  The refused ones were never queued
    zsock_set_rcvtimeo (router, 200);
    zmsg_t *extra = zmsg_recv (router);
    assert_null (extra);

    //  Room again: the next send is taken and arrives
    uint32_t next = AMI_CLIENT_HWM;
    memset (req.corr, 0, sizeof req.corr);
    memcpy (req.corr, &next, sizeof next);
    assert_int_equal (ami_client_send (client, &req), AMI_OK);
    zsock_set_rcvtimeo (router, WAIT_MS);
    zmsg_t *in = zmsg_recv (router);
    assert_non_null (in);
    zframe_t *body = zmsg_last (in);
    assert_int_equal (ami_msg_decode (msg, zframe_data (body), zframe_size (body)), AMI_OK);
    uint32_t i;
    memcpy (&i, msg->api_req.corr, sizeof i);
    assert_int_equal (i, next);
    zmsg_destroy (&in);

    ami_msg_destroy (&msg);
    ami_client_destroy (&client);
    zsock_destroy (&router);
    ami_auth_destroy (&auth);           //  after the last server socket
    ami_cert_destroy (&operator);
    ami_cert_destroy (&mdms);
    zstr_free (&endpoint);
    free (ipc);
    free (public);
    ami_test_rmtree (dir);
    free (allow);
    free (dir);
}

int
main (void)
{
    ami_log_set_level (getenv ("AMI_TEST_VERBOSE") ? AMI_LOG_DEBUG : AMI_LOG_ERROR);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_issue6_client_send_bound),
    };
    return cmocka_run_group_tests_name ("client bounds", tests, NULL, NULL);
}
