/*  test_broker.c - broker conformance: the Majordomo broker against RFC 7
    (MDP/0.1) and RFC 8 (MMI).

    The MDP client and worker used here are written from the RFC text
    alone: raw DEALER sockets whose frames are built by hand below. They
    share no code with services/broker/, so a misreading of the RFC in the
    broker cannot be mirrored by the tests. Every wait has a deadline; the
    only sleeps are the poll interval of bounded "wait until" loops.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "ami_auth.h"
#include "ami_err.h"
#include "ami_cert.h"
#include "ami_config.h"
#include "ami_test.h"
#include "ami_broker.h"
#include "ami_msg.h"

/*  Deadlines. Positive waits are generous (a loaded 2-core VM, ASan);
    negative waits ("nothing arrives") are short but far above a loopback
    round trip (about 0.4 ms, DESIGN.md section 8). */
#define WAIT_MS         3000
#define QUIET_MS        500
#define POLL_MS         10

/*  RFC 7 constants, spelled out here independently of the broker. */
#define C_HEADER        "MDPC01"
#define W_HEADER        "MDPW01"
#define W_READY         "\001"
#define W_REQUEST       "\002"
#define W_REPLY         "\003"
#define W_HEARTBEAT     "\004"
#define W_DISCONNECT    "\005"


/* ---------------------------------------------------------------------- */
/*  Frames by hand                                                          */

typedef struct {
    const void *data;
    size_t size;
} frame_t;

#define F(s)        { (s), strlen (s) }
#define FB(p, n)    { (p), (n) }
#define SEND(sock, ...) \
    s_send_frames ((sock), (frame_t []) { __VA_ARGS__ }, \
                   sizeof ((frame_t []) { __VA_ARGS__ }) / sizeof (frame_t))

static void
s_send_frames (zsock_t *sock, const frame_t *frames, size_t count)
{
    zmsg_t *msg = zmsg_new ();
    for (size_t i = 0; i < count; i++)
        assert_int_equal (zmsg_addmem (msg, frames [i].data, frames [i].size), 0);
    assert_int_equal (zmsg_send (&msg, sock), 0);
}

static bool
s_frame_is (zframe_t *frame, const void *data, size_t size)
{
    return frame && zframe_size (frame) == size
        && (size == 0 || memcmp (zframe_data (frame), data, size) == 0);
}

static bool
s_frame_str (zframe_t *frame, const char *text)
{
    return s_frame_is (frame, text, strlen (text));
}

/*  Receive one message within timeout_ms, or NULL. */
static zmsg_t *
s_recv (zsock_t *sock, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    zmsg_t *msg = NULL;
    if (zpoller_wait (poller, timeout_ms) == sock)
        msg = zmsg_recv (sock);
    zpoller_destroy (&poller);
    return msg;
}


/* ---------------------------------------------------------------------- */
/*  Broker                                                                  */

typedef struct {
    zactor_t *actor;
    char *endpoint;
} broker_t;

/*  Default broker config for tests whose workers never heartbeat: a long
    liveness (30 x 1 s) so they outlive a slow run (valgrind, ASan). Only
    test_heartbeat_expiry exercises expiry, with its own short settings. */
static ami_broker_config_t
s_config (void)
{
    ami_broker_config_t config = { 0 };
    config.liveness = 30;
    return config;
}

static broker_t
s_broker_start (ami_broker_config_t *config)
{
    broker_t broker = { NULL, NULL };
    if (!config->endpoint)
        config->endpoint = "tcp://127.0.0.1:*";
    broker.actor = ami_broker_new (config);
    assert_non_null (broker.actor);
    //  Pipe replies have a deadline too: a hung actor fails the test
    zsock_set_rcvtimeo (broker.actor, WAIT_MS);
    assert_int_equal (zstr_send (broker.actor, "ENDPOINT"), 0);
    broker.endpoint = zstr_recv (broker.actor);
    assert_non_null (broker.endpoint);
    assert_true (strncmp (broker.endpoint, "tcp://127.0.0.1:", 16) == 0);
    assert_true (atoi (broker.endpoint + 16) > 0);      //  a real port
    return broker;
}

static void
s_broker_stop (broker_t *broker)
{
    zactor_destroy (&broker->actor);
    zstr_free (&broker->endpoint);
}

/*  STATUS: returns the frame for a service ("name workers queued") or the
    totals; out params may be NULL. */
static void
s_status (broker_t *broker, size_t *services, size_t *workers, size_t *queued)
{
    assert_int_equal (zstr_send (broker->actor, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (broker->actor);
    assert_non_null (reply);
    assert_true (zmsg_size (reply) >= 3);
    char *s = zmsg_popstr (reply), *w = zmsg_popstr (reply), *q = zmsg_popstr (reply);
    if (services) *services = (size_t) atol (s);
    if (workers) *workers = (size_t) atol (w);
    if (queued) *queued = (size_t) atol (q);
    //  one frame per service follows, so frames == services
    assert_int_equal (zmsg_size (reply), (size_t) atol (s));
    zstr_free (&s); zstr_free (&w); zstr_free (&q);
    zmsg_destroy (&reply);
}

/*  The service's line in STATUS, e.g. "echo 2 0", or "" if absent. */
static void
s_status_line (broker_t *broker, const char *service, char *line, size_t size)
{
    assert_int_equal (zstr_send (broker->actor, "STATUS"), 0);
    zmsg_t *reply = zmsg_recv (broker->actor);
    assert_non_null (reply);
    line [0] = 0;
    size_t len = strlen (service);
    for (zframe_t *f = zmsg_first (reply); f; f = zmsg_next (reply)) {
        char *text = zframe_strdup (f);
        if (strncmp (text, service, len) == 0 && text [len] == ' ')
            snprintf (line, size, "%s", text);
        zstr_free (&text);
    }
    zmsg_destroy (&reply);
}

/*  Wait until the service's STATUS line equals expected. */
static bool
s_wait_status (broker_t *broker, const char *service, const char *expected)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    char line [300];
    while (zclock_mono () < deadline) {
        s_status_line (broker, service, line, sizeof line);
        if (streq (line, expected))
            return true;
        zclock_sleep (POLL_MS);
    }
    return false;
}


/* ---------------------------------------------------------------------- */
/*  A minimal MDP client (RFC 7, MDP/Client over a DEALER)                  */

static zsock_t *
s_client_new (const char *endpoint, const char *identity)
{
    zsock_t *client = zsock_new (ZMQ_DEALER);
    assert_non_null (client);
    zsock_set_linger (client, 0);
    if (identity)
        zsock_set_identity (client, identity);
    assert_int_equal (zsock_connect (client, "%s", endpoint), 0);
    return client;
}

static void
s_client_request (zsock_t *client, const char *service, const char *body)
{
    SEND (client, F (""), F (C_HEADER), F (service), F (body));
}

/*  Receive a REPLY and check its envelope: "", "MDPC01", service. Returns
    the body (frames after the service), or NULL on timeout. */
static zmsg_t *
s_client_reply (zsock_t *client, const char *service, int timeout_ms)
{
    zmsg_t *msg = s_recv (client, timeout_ms);
    if (!msg)
        return NULL;
    assert_true (zmsg_size (msg) >= 4);             //  RFC 7: 4 or more
    zframe_t *f = zmsg_pop (msg);
    assert_true (s_frame_is (f, "", 0));
    zframe_destroy (&f);
    f = zmsg_pop (msg);
    assert_true (s_frame_str (f, C_HEADER));
    zframe_destroy (&f);
    f = zmsg_pop (msg);
    assert_true (s_frame_str (f, service));
    zframe_destroy (&f);
    return msg;
}

/*  One MMI query; returns the status code ("200", "404", "501") in code. */
static void
s_mmi (zsock_t *client, const char *service, const char *body, char *code)
{
    s_client_request (client, service, body);
    zmsg_t *reply = s_client_reply (client, service, WAIT_MS);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), 1);
    char *text = zmsg_popstr (reply);
    snprintf (code, 4, "%s", text);
    assert_int_equal (strlen (text), 3);
    zstr_free (&text);
    zmsg_destroy (&reply);
}

/*  Ask mmi.service about name until the answer is expected, or deadline. */
static bool
s_wait_mmi (zsock_t *client, const char *name, const char *expected, int ms)
{
    int64_t deadline = zclock_mono () + ms;
    char code [4];
    while (zclock_mono () < deadline) {
        s_mmi (client, "mmi.service", name, code);
        if (streq (code, expected))
            return true;
        zclock_sleep (POLL_MS);
    }
    return false;
}


/* ---------------------------------------------------------------------- */
/*  A minimal MDP worker (RFC 7, MDP/Worker over a DEALER)                  */

static zsock_t *
s_worker_new (const char *endpoint, const char *service)
{
    zsock_t *worker = zsock_new (ZMQ_DEALER);
    assert_non_null (worker);
    zsock_set_linger (worker, 0);
    assert_int_equal (zsock_connect (worker, "%s", endpoint), 0);
    if (service)
        SEND (worker, F (""), F (W_HEADER), FB (W_READY, 1), F (service));
    return worker;
}

static void
s_worker_heartbeat (zsock_t *worker)
{
    SEND (worker, F (""), F (W_HEADER), FB (W_HEARTBEAT, 1));
}

/*  Receive the next broker command other than HEARTBEAT, checking the
    RFC 7 header ("", "MDPW01", one command byte). Returns the message from
    the command frame on (command first), or NULL on timeout. Counts the
    heartbeats skipped in *heartbeats if not NULL. */
static zmsg_t *
s_worker_recv (zsock_t *worker, int timeout_ms, int *heartbeats)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (true) {
        int64_t left = deadline - zclock_mono ();
        zmsg_t *msg = s_recv (worker, left > 0 ? (int) left : 0);
        if (!msg)
            return NULL;
        assert_true (zmsg_size (msg) >= 3);
        zframe_t *f = zmsg_pop (msg);
        assert_true (s_frame_is (f, "", 0));
        zframe_destroy (&f);
        f = zmsg_pop (msg);
        assert_true (s_frame_str (f, W_HEADER));
        zframe_destroy (&f);
        zframe_t *command = zmsg_first (msg);
        assert_int_equal (zframe_size (command), 1);
        if (s_frame_is (command, W_HEARTBEAT, 1)) {
            assert_int_equal (zmsg_size (msg), 1);      //  3 frames exactly
            if (heartbeats)
                (*heartbeats)++;
            zmsg_destroy (&msg);
            continue;
        }
        return msg;
    }
}

/*  Receive a REQUEST and check it: 0x02, client address, "", body...
    Returns the client address; body (from the first body frame on) is
    stored in *body_p if not NULL. NULL on timeout. */
static zframe_t *
s_worker_request (zsock_t *worker, int timeout_ms, zmsg_t **body_p)
{
    zmsg_t *msg = s_worker_recv (worker, timeout_ms, NULL);
    if (!msg)
        return NULL;
    assert_true (zmsg_size (msg) >= 4);             //  RFC 7: 6 or more
    zframe_t *f = zmsg_pop (msg);
    assert_true (s_frame_is (f, W_REQUEST, 1));
    zframe_destroy (&f);
    zframe_t *client = zmsg_pop (msg);
    assert_true (zframe_size (client) > 0);
    f = zmsg_pop (msg);
    assert_true (s_frame_is (f, "", 0));
    zframe_destroy (&f);
    if (body_p)
        *body_p = msg;
    else
        zmsg_destroy (&msg);
    return client;
}

/*  Send REPLY: "", "MDPW01", 0x03, client, "", body. */
static void
s_worker_reply (zsock_t *worker, zframe_t *client, const char *body)
{
    SEND (worker, F (""), F (W_HEADER), FB (W_REPLY, 1),
          FB (zframe_data (client), zframe_size (client)), F (""), F (body));
}

/*  Expect DISCONNECT (exactly 3 frames) within timeout_ms. */
static bool
s_worker_disconnected (zsock_t *worker, int timeout_ms)
{
    zmsg_t *msg = s_worker_recv (worker, timeout_ms, NULL);
    if (!msg)
        return false;
    bool ok = zmsg_size (msg) == 1 && s_frame_is (zmsg_first (msg), W_DISCONNECT, 1);
    zmsg_destroy (&msg);
    return ok;
}

/*  Serve one request as an echo worker: body comes back unchanged. */
static bool
s_worker_echo_one (zsock_t *worker, int timeout_ms)
{
    zmsg_t *body = NULL;
    zframe_t *client = s_worker_request (worker, timeout_ms, &body);
    if (!client)
        return false;
    char *text = zmsg_popstr (body);
    s_worker_reply (worker, client, text);
    zstr_free (&text);
    zmsg_destroy (&body);
    zframe_destroy (&client);
    return true;
}


/* ---------------------------------------------------------------------- */
/*  Tests                                                                   */

/*  (1) READY, REQUEST and REPLY carry exactly the RFC's frames. */
static void
test_echo_round_trip (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *worker = s_worker_new (broker.endpoint, "echo");
    zsock_t *client = s_client_new (broker.endpoint, "C1");

    //  A two-frame body: frames 3+ are all body (RFC 7)
    SEND (client, F (""), F (C_HEADER), F ("echo"), F ("hello"), F ("world"));

    zmsg_t *msg = s_worker_recv (worker, WAIT_MS, NULL);
    assert_non_null (msg);
    //  0x02, client address, "", body (the header was checked on receipt)
    assert_int_equal (zmsg_size (msg), 5);
    assert_true (s_frame_is (zmsg_first (msg), W_REQUEST, 1));
    zframe_t *client_addr = zframe_dup (zmsg_next (msg));
    assert_true (s_frame_str (client_addr, "C1"));      //  the ROUTER identity
    assert_true (s_frame_is (zmsg_next (msg), "", 0));
    assert_true (s_frame_str (zmsg_next (msg), "hello"));
    assert_true (s_frame_str (zmsg_next (msg), "world"));
    zmsg_destroy (&msg);

    SEND (worker, F (""), F (W_HEADER), FB (W_REPLY, 1),
          FB (zframe_data (client_addr), zframe_size (client_addr)), F (""),
          F ("HELLO"), F ("WORLD"));
    zframe_destroy (&client_addr);

    zmsg_t *body = s_client_reply (client, "echo", WAIT_MS);
    assert_non_null (body);
    assert_int_equal (zmsg_size (body), 2);
    assert_true (s_frame_str (zmsg_first (body), "HELLO"));
    assert_true (s_frame_str (zmsg_next (body), "WORLD"));
    zmsg_destroy (&body);

    //  The worker is idle again: a second request reaches it too
    s_client_request (client, "echo", "again");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    body = s_client_reply (client, "echo", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "again"));
    zmsg_destroy (&body);

    zsock_destroy (&client);
    zsock_destroy (&worker);
    s_broker_stop (&broker);
}

/*  A REQ client: the REQ socket adds and strips frame 0 itself. */
static void
test_req_client (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *worker = s_worker_new (broker.endpoint, "echo");
    zsock_t *req = zsock_new (ZMQ_REQ);
    assert_non_null (req);
    zsock_set_linger (req, 0);
    assert_int_equal (zsock_connect (req, "%s", broker.endpoint), 0);
    SEND (req, F (C_HEADER), F ("echo"), F ("via REQ"));
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    zmsg_t *reply = s_recv (req, WAIT_MS);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), 3);
    assert_true (s_frame_str (zmsg_first (reply), C_HEADER));
    assert_true (s_frame_str (zmsg_next (reply), "echo"));
    assert_true (s_frame_str (zmsg_next (reply), "via REQ"));
    zmsg_destroy (&reply);
    zsock_destroy (&req);
    zsock_destroy (&worker);
    s_broker_stop (&broker);
}

/*  (2) Two workers of one service share the load. */
static void
test_two_workers_share (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *w1 = s_worker_new (broker.endpoint, "echo");
    zsock_t *w2 = s_worker_new (broker.endpoint, "echo");
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    assert_true (s_wait_status (&broker, "echo", "echo 2 0"));

    for (int i = 0; i < 10; i++) {
        char body [16];
        snprintf (body, sizeof body, "req-%d", i);
        s_client_request (client, "echo", body);
    }
    int served [2] = { 0, 0 }, replies = 0;
    zpoller_t *poller = zpoller_new (w1, w2, client, NULL);
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (replies < 10 && zclock_mono () < deadline) {
        void *which = zpoller_wait (poller, POLL_MS);
        if (which == w1 || which == w2) {
            assert_true (s_worker_echo_one ((zsock_t *) which, 0));
            served [which == w1 ? 0 : 1]++;
        }
        else
        if (which == client) {
            zmsg_t *body = s_client_reply (client, "echo", 0);
            assert_non_null (body);
            char *text = zmsg_popstr (body);
            assert_true (strncmp (text, "req-", 4) == 0);
            zstr_free (&text);
            zmsg_destroy (&body);
            replies++;
        }
    }
    zpoller_destroy (&poller);
    assert_int_equal (replies, 10);
    assert_int_equal (served [0] + served [1], 10);
    assert_true (served [0] > 0);
    assert_true (served [1] > 0);

    //  One request at a time: least recently used dispatch alternates
    //  between the two idle workers
    zsock_t *last = NULL;
    for (int i = 0; i < 4; i++) {
        s_client_request (client, "echo", "lru");
        poller = zpoller_new (w1, w2, NULL);
        zsock_t *which = (zsock_t *) zpoller_wait (poller, WAIT_MS);
        zpoller_destroy (&poller);
        assert_non_null (which);
        assert_true (which != last);
        assert_true (s_worker_echo_one (which, 0));
        last = which;
        zmsg_t *body = s_client_reply (client, "echo", WAIT_MS);
        assert_non_null (body);
        zmsg_destroy (&body);
    }

    zsock_destroy (&client);
    zsock_destroy (&w1);
    zsock_destroy (&w2);
    s_broker_stop (&broker);
}

/*  (3) Requests sent before any worker exists wait, then are delivered. */
static void
test_queued_until_worker (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    s_client_request (client, "late", "one");
    s_client_request (client, "late", "two");
    s_client_request (client, "late", "three");
    assert_true (s_wait_status (&broker, "late", "late 0 3"));
    size_t services, workers, queued;
    s_status (&broker, &services, &workers, &queued);
    assert_int_equal (services, 1);
    assert_int_equal (workers, 0);
    assert_int_equal (queued, 3);

    zsock_t *worker = s_worker_new (broker.endpoint, "late");
    const char *expected [] = { "one", "two", "three" };
    for (int i = 0; i < 3; i++) {
        zmsg_t *body = NULL;
        zframe_t *addr = s_worker_request (worker, WAIT_MS, &body);
        assert_non_null (addr);
        assert_true (s_frame_str (zmsg_first (body), expected [i]));   //  FIFO
        s_worker_reply (worker, addr, expected [i]);
        zframe_destroy (&addr);
        zmsg_destroy (&body);
        zmsg_t *reply = s_client_reply (client, "late", WAIT_MS);
        assert_non_null (reply);
        assert_true (s_frame_str (zmsg_first (reply), expected [i]));
        zmsg_destroy (&reply);
    }
    s_status (&broker, &services, &workers, &queued);
    assert_int_equal (workers, 1);
    assert_int_equal (queued, 0);

    zsock_destroy (&worker);
    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  (4) MMI: 200 / 404 / 501; MMI never creates services. */
static void
test_mmi (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    char code [4];

    s_mmi (client, "mmi.service", "echo", code);
    assert_string_equal (code, "404");
    zsock_t *worker = s_worker_new (broker.endpoint, "echo");
    assert_true (s_wait_mmi (client, "echo", "200", WAIT_MS));
    s_mmi (client, "mmi.service", "nosuch", code);
    assert_string_equal (code, "404");
    s_mmi (client, "mmi.foo", "echo", code);            //  reply names mmi.foo
    assert_string_equal (code, "501");
    s_mmi (client, "mmi.", "x", code);
    assert_string_equal (code, "501");

    size_t services;
    s_status (&broker, &services, NULL, NULL);
    assert_int_equal (services, 1);                     //  only "echo"

    //  RFC 8: a worker may not register in the mmi. namespace
    zsock_t *intruder = s_worker_new (broker.endpoint, "mmi.service");
    assert_true (s_worker_disconnected (intruder, WAIT_MS));
    s_mmi (client, "mmi.service", "mmi.service", code);
    assert_string_equal (code, "404");

    zsock_destroy (&intruder);
    zsock_destroy (&worker);
    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  (5) A silent worker expires; a heartbeating one stays. */
static void
test_heartbeat_expiry (void **state)
{
    (void) state;
    ami_broker_config_t config = { 0 };
    config.heartbeat_ms = 100;
    config.liveness = 3;
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    zsock_t *silent = s_worker_new (broker.endpoint, "echo");
    zsock_t *alive = s_worker_new (broker.endpoint, "alive");
    assert_true (s_wait_mmi (client, "echo", "200", WAIT_MS));
    assert_true (s_wait_mmi (client, "alive", "200", WAIT_MS));

    //  For 1.5 s (five expiry periods of 300 ms): heartbeat "alive" every
    //  100 ms and watch both services.
    int64_t start = zclock_mono ();
    int64_t silent_gone = -1;
    int heartbeats = 0;
    int64_t next_beat = start;
    while (zclock_mono () - start < 1500) {
        if (zclock_mono () >= next_beat) {
            s_worker_heartbeat (alive);
            next_beat += 100;
        }
        //  drain the broker's heartbeats to "alive" (anything else fails)
        zmsg_t *other = s_worker_recv (alive, 0, &heartbeats);
        assert_null (other);
        char code [4];
        s_mmi (client, "mmi.service", "alive", code);
        assert_string_equal (code, "200");
        if (silent_gone < 0) {
            s_mmi (client, "mmi.service", "echo", code);
            if (streq (code, "404"))
                silent_gone = zclock_mono () - start;
        }
        zclock_sleep (POLL_MS);
    }
    //  the silent worker is gone within the window
    assert_true (silent_gone >= 0);
    assert_true (silent_gone < 1500);
    //  the broker heartbeats its workers: ~15 in 1.5 s, demand a few
    assert_true (heartbeats >= 5);
    //  and it told the silent worker it was dropped
    assert_true (s_worker_disconnected (silent, WAIT_MS));

    zsock_destroy (&silent);
    zsock_destroy (&alive);
    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  (6) Malformed input from clients and workers is survived. */
static void
test_malformed_input (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *worker = s_worker_new (broker.endpoint, "echo");
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    zsock_t *bad_client = s_client_new (broker.endpoint, NULL);
    zsock_t *bad_worker = s_worker_new (broker.endpoint, NULL);
    assert_true (s_wait_mmi (client, "echo", "200", WAIT_MS));

    //  Client garbage: none of it may reach the worker or be answered
    SEND (bad_client, F (""), F ("MDPX01"), F ("echo"), F ("wrong protocol"));
    SEND (bad_client, F (""), F ("MDPC02"), F ("echo"), F ("wrong version"));
    SEND (bad_client, F ("hello"));                     //  single frame
    SEND (bad_client, F (""));                          //  empty message
    SEND (bad_client, F (""), F (C_HEADER));            //  no service
    SEND (bad_client, F (""), F (C_HEADER), F ("echo"));    //  no body
    SEND (bad_client, F ("x"), F (C_HEADER), F ("echo"), F ("frame 0 not empty"));
    SEND (bad_client, F (""), F (C_HEADER), F (""), F ("empty service"));
    SEND (bad_client, F (""), F (C_HEADER), F ("ec\x01ho"), F ("binary service"));
    char long_name [300];
    memset (long_name, 'a', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = 0;
    SEND (bad_client, F (""), F (C_HEADER), F (long_name), F ("long service"));
    {
        zmsg_t *many = zmsg_new ();                     //  too many frames
        zmsg_addstr (many, "");
        zmsg_addstr (many, C_HEADER);
        zmsg_addstr (many, "echo");
        for (int i = 0; i < 40; i++)
            zmsg_addstr (many, "frame");
        assert_int_equal (zmsg_send (&many, bad_client), 0);
    }
    //  The same client then makes a valid request: it is served
    s_client_request (bad_client, "echo", "still here");
    zmsg_t *body = NULL;
    zframe_t *addr = s_worker_request (worker, WAIT_MS, &body);
    assert_non_null (addr);
    assert_true (s_frame_str (zmsg_first (body), "still here"));
    zmsg_destroy (&body);
    s_worker_reply (worker, addr, "still here");
    zframe_destroy (&addr);
    body = s_client_reply (bad_client, "echo", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "still here"));
    zmsg_destroy (&body);

    //  Worker garbage, from an unregistered worker: each earns DISCONNECT
    SEND (bad_worker, F (""), F (W_HEADER), FB ("\011", 1));    //  unknown
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_HEARTBEAT, 1));   //  before READY
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_REPLY, 1), F ("C"), F (""), F ("x"));
    SEND (bad_worker, F (""), F (W_HEADER));                    //  no command
    SEND (bad_worker, F (""), F (W_HEADER), FB ("\001\001", 2));    //  2-byte command
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_READY, 1));   //  no service
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_READY, 1), F (""));
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_READY, 1), F ("a"), F ("b"));
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_REQUEST, 1), F ("C"), F (""), F ("x"));
    for (int i = 0; i < 9; i++)
        assert_true (s_worker_disconnected (bad_worker, WAIT_MS));
    //  and nothing else
    assert_null (s_worker_recv (bad_worker, 100, NULL));
    //  A garbage-first frame from the worker side is dropped silently
    SEND (bad_worker, F ("x"), F (W_HEADER), FB (W_READY, 1), F ("echo"));
    assert_null (s_worker_recv (bad_worker, 100, NULL));

    //  Frames over ZMQ_MAXMSGSIZE (1 MiB) from both: libzmq drops the
    //  connection; the broker carries on
    size_t big_size = 1024 * 1024 + 1;
    byte *big = (byte *) calloc (1, big_size);
    assert_non_null (big);
    SEND (bad_client, F (""), F (C_HEADER), F ("echo"), FB (big, big_size));
    SEND (bad_worker, F (""), F (W_HEADER), FB (W_READY, 1), FB (big, big_size));
    free (big);

    //  None of the bad client's garbage reached the worker
    assert_null (s_worker_recv (worker, 200, NULL));

    //  A frame of exactly 1 MiB is within the limit and goes through
    size_t max_size = 1024 * 1024;
    byte *max = (byte *) calloc (1, max_size);
    assert_non_null (max);
    SEND (client, F (""), F (C_HEADER), F ("echo"), FB (max, max_size));
    free (max);
    addr = s_worker_request (worker, WAIT_MS, &body);
    assert_non_null (addr);
    assert_int_equal (zmsg_size (body), 1);
    assert_int_equal (zframe_size (zmsg_first (body)), max_size);
    zmsg_destroy (&body);
    s_worker_reply (worker, addr, "big ok");
    zframe_destroy (&addr);
    body = s_client_reply (client, "echo", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "big ok"));
    zmsg_destroy (&body);

    //  A normal request still round-trips, and the table is clean
    s_client_request (client, "echo", "after");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    body = s_client_reply (client, "echo", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "after"));
    zmsg_destroy (&body);
    assert_null (s_client_reply (bad_client, "echo", 100));
    size_t services, workers, queued;
    s_status (&broker, &services, &workers, &queued);
    assert_int_equal (services, 1);
    assert_int_equal (workers, 1);
    assert_int_equal (queued, 0);

    zsock_destroy (&bad_worker);
    zsock_destroy (&bad_client);
    zsock_destroy (&client);
    zsock_destroy (&worker);
    s_broker_stop (&broker);
}

/*  (7) DISCONNECT from a worker removes it; protocol violations by a
    registered worker get it DISCONNECTed and removed. */
static void
test_worker_disconnect (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);

    //  DISCONNECT from the worker: removed, and sent nothing more
    zsock_t *worker = s_worker_new (broker.endpoint, "echo");
    assert_true (s_wait_mmi (client, "echo", "200", WAIT_MS));
    SEND (worker, F (""), F (W_HEADER), FB (W_DISCONNECT, 1));
    assert_true (s_wait_mmi (client, "echo", "404", WAIT_MS));
    s_client_request (client, "echo", "nobody");
    assert_true (s_wait_status (&broker, "echo", "echo 0 1"));  //  it waits
    assert_null (s_worker_recv (worker, QUIET_MS, NULL));
    zsock_destroy (&worker);

    //  A second READY: DISCONNECT, removed
    worker = s_worker_new (broker.endpoint, "twice");
    assert_true (s_wait_mmi (client, "twice", "200", WAIT_MS));
    SEND (worker, F (""), F (W_HEADER), FB (W_READY, 1), F ("twice"));
    assert_true (s_worker_disconnected (worker, WAIT_MS));
    assert_true (s_wait_mmi (client, "twice", "404", WAIT_MS));
    zsock_destroy (&worker);

    //  A REPLY addressed to a client it was not given: DISCONNECT, and
    //  the reply goes nowhere
    worker = s_worker_new (broker.endpoint, "spoof");
    zsock_t *victim = s_client_new (broker.endpoint, "VICTIM");
    assert_true (s_wait_mmi (client, "spoof", "200", WAIT_MS));
    zframe_t *victim_addr = zframe_new ("VICTIM", 6);
    s_worker_reply (worker, victim_addr, "forged");
    zframe_destroy (&victim_addr);
    assert_true (s_worker_disconnected (worker, WAIT_MS));
    assert_null (s_recv (victim, QUIET_MS));
    assert_true (s_wait_mmi (client, "spoof", "404", WAIT_MS));
    zsock_destroy (&victim);
    zsock_destroy (&worker);

    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  Queue bound: over max_queue the new request is dropped. */
static void
test_queue_bound (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    config.max_queue = 2;
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    s_client_request (client, "q", "1");
    s_client_request (client, "q", "2");
    s_client_request (client, "q", "3");
    //  One connection is FIFO: once this MMI answer is back, all three
    //  requests have been handled
    char code [4];
    s_mmi (client, "mmi.service", "q", code);
    assert_string_equal (code, "404");
    char line [300];
    s_status_line (&broker, "q", line, sizeof line);
    assert_string_equal (line, "q 0 2");

    zsock_t *worker = s_worker_new (broker.endpoint, "q");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    assert_false (s_worker_echo_one (worker, QUIET_MS));
    for (int i = 1; i <= 2; i++) {
        zmsg_t *body = s_client_reply (client, "q", WAIT_MS);
        assert_non_null (body);
        char expected [2] = { (char) ('0' + i), 0 };
        assert_true (s_frame_str (zmsg_first (body), expected));
        zmsg_destroy (&body);
    }
    zsock_destroy (&worker);
    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  Queued requests expire after request_ttl_ms and the empty service
    entry is forgotten. */
static void
test_request_ttl (void **state)
{
    (void) state;
    ami_broker_config_t config = { 0 };
    config.request_ttl_ms = 200;
    config.heartbeat_ms = 50;
    config.liveness = 100;              //  the test worker won't heartbeat
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    s_client_request (client, "ttl", "stale");
    assert_true (s_wait_status (&broker, "ttl", "ttl 0 1"));
    assert_true (s_wait_status (&broker, "ttl", ""));   //  expired, collected
    size_t services, queued;
    s_status (&broker, &services, NULL, &queued);
    assert_int_equal (services, 0);
    assert_int_equal (queued, 0);
    zsock_t *worker = s_worker_new (broker.endpoint, "ttl");
    assert_true (s_wait_mmi (client, "ttl", "200", WAIT_MS));
    assert_null (s_worker_request (worker, QUIET_MS, NULL));
    zsock_destroy (&worker);
    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  Start-up failures are reported, not hung on. */
static void
test_start_failure (void **state)
{
    (void) state;
    ami_broker_config_t config = { 0 };
    broker_t broker = s_broker_start (&config);

    ami_broker_config_t taken = { 0 };
    taken.endpoint = broker.endpoint;                   //  already bound
    assert_null (ami_broker_new (&taken));
    ami_broker_config_t bad = { 0 };
    bad.endpoint = "tcp://no-such-interface-x:1";
    assert_null (ami_broker_new (&bad));
    ami_broker_config_t none = { 0 };
    assert_null (ami_broker_new (&none));
    ami_broker_config_t negative = { 0 };
    negative.endpoint = "tcp://127.0.0.1:*";
    negative.heartbeat_ms = -1;
    assert_null (ami_broker_new (&negative));

    //  The raw actor reports FAILED after its handshake, and exits on $TERM
    zactor_t *failed = zactor_new (ami_broker_actor, &taken);
    assert_non_null (failed);
    zsock_set_rcvtimeo (failed, WAIT_MS);
    char *status = zstr_recv (failed);
    assert_non_null (status);
    assert_string_equal (status, "FAILED");
    zstr_free (&status);
    zactor_destroy (&failed);

    //  ami_broker_new succeeds on a free endpoint
    ami_broker_config_t good = { 0 };
    good.endpoint = "tcp://127.0.0.1:*";
    zactor_t *actor = ami_broker_new (&good);
    assert_non_null (actor);
    zstr_send (actor, "VERBOSE");
    zactor_destroy (&actor);

    s_broker_stop (&broker);
}

/*  A CURVE DEALER for cert, trusting the broker's key. */
static zsock_t *
s_curve_dealer (const char *endpoint, ami_cert_t *cert, const char *server_key)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    assert_non_null (sock);
    zsock_set_linger (sock, 0);
    assert_int_equal (ami_auth_client (sock, cert, server_key), AMI_OK);
    assert_int_equal (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

/*  (8) CURVE: a listed client key is served, an unlisted one gets nothing. */
static void
test_curve (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("broker-curve");
    assert_non_null (dir);
    int err = 0;
    ami_cert_t *server_cert = ami_cert_new ("broker", "BROKER-1", &err);
    ami_cert_t *client_cert = ami_cert_new ("mdms", "MDMS-1", &err);
    ami_cert_t *worker_cert = ami_cert_new ("headend", "HE-1", &err);
    ami_cert_t *stranger_cert = ami_cert_new ("mdms", "MDMS-X", &err);
    assert_non_null (server_cert);
    assert_non_null (client_cert);
    assert_non_null (worker_cert);
    assert_non_null (stranger_cert);
    char *client_file = ami_test_path (dir, "mdms.cert");
    char *worker_file = ami_test_path (dir, "headend.cert");
    assert_int_equal (ami_cert_save_public (client_cert, client_file), AMI_OK);
    assert_int_equal (ami_cert_save_public (worker_cert, worker_file), AMI_OK);
    const char *server_key = ami_cert_public_txt (server_cert);

    //  Without a ZAP handler a CURVE broker would admit anyone: it must
    //  refuse to start
    ami_broker_config_t config = { 0 };
    config.endpoint = "tcp://127.0.0.1:*";
    config.server_cert = server_cert;
    assert_false (ami_auth_running ());
    assert_null (ami_broker_new (&config));

    //  The ZAP handler runs before the broker binds (DESIGN.md section 5)
    ami_auth_t *auth = ami_auth_new (dir, &err);
    assert_non_null (auth);
    broker_t broker = s_broker_start (&config);

    zsock_t *worker = s_curve_dealer (broker.endpoint, worker_cert, server_key);
    SEND (worker, F (""), F (W_HEADER), FB (W_READY, 1), F ("agg.echo"));
    zsock_t *client = s_curve_dealer (broker.endpoint, client_cert, server_key);

    s_client_request (client, "agg.echo", "secret");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    zmsg_t *body = s_client_reply (client, "agg.echo", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "secret"));
    zmsg_destroy (&body);

    //  An unlisted key: the handshake is refused, nothing comes back and
    //  nothing reaches the worker
    zsock_t *stranger = s_curve_dealer (broker.endpoint, stranger_cert, server_key);
    s_client_request (stranger, "mmi.service", "agg.echo");
    s_client_request (stranger, "agg.echo", "let me in");
    assert_null (s_recv (stranger, QUIET_MS));
    assert_null (s_worker_recv (worker, 100, NULL));

    //  A plaintext peer gets nothing either
    zsock_t *plain = s_client_new (broker.endpoint, NULL);
    s_client_request (plain, "mmi.service", "agg.echo");
    assert_null (s_recv (plain, QUIET_MS));

    //  The listed client is still served, and the stranger left no trace
    char code [4];
    s_mmi (client, "mmi.service", "agg.echo", code);
    assert_string_equal (code, "200");
    size_t services, workers, queued;
    s_status (&broker, &services, &workers, &queued);
    assert_int_equal (services, 1);
    assert_int_equal (workers, 1);
    assert_int_equal (queued, 0);

    zsock_destroy (&plain);
    zsock_destroy (&stranger);
    zsock_destroy (&client);
    zsock_destroy (&worker);
    s_broker_stop (&broker);
    ami_auth_destroy (&auth);               //  after the last server socket
    ami_cert_destroy (&server_cert);
    ami_cert_destroy (&client_cert);
    ami_cert_destroy (&worker_cert);
    ami_cert_destroy (&stranger_cert);
    free (client_file);
    free (worker_file);
    assert_int_equal (ami_test_rmtree (dir), 0);
    free (dir);
}

/*  (9) CURVE roles: only "mdms" may be a client, only "headend" a worker,
    and a worker only for "agg." services (docs/security/README.md). */
static void
test_curve_roles (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("broker-roles");
    assert_non_null (dir);
    int err = 0;
    ami_cert_t *server_cert = ami_cert_new ("broker", "BROKER-1", &err);
    ami_cert_t *mdms_cert = ami_cert_new ("mdms", "MDMS-1", &err);
    ami_cert_t *headend_cert = ami_cert_new ("headend", "HE-1", &err);
    ami_cert_t *rogue_cert = ami_cert_new ("headend", "HE-2", &err);
    ami_cert_t *other_cert = ami_cert_new ("operator", "OP-1", &err);
    assert_non_null (server_cert);
    assert_non_null (mdms_cert);
    assert_non_null (headend_cert);
    assert_non_null (rogue_cert);
    assert_non_null (other_cert);
    ami_cert_t *listed [] = { mdms_cert, headend_cert, rogue_cert, other_cert };
    char *files [4];
    for (size_t i = 0; i < 4; i++) {
        char name [32];
        snprintf (name, sizeof name, "peer-%zu.cert", i);
        files [i] = ami_test_path (dir, name);
        assert_int_equal (ami_cert_save_public (listed [i], files [i]), AMI_OK);
    }
    const char *server_key = ami_cert_public_txt (server_cert);
    ami_auth_t *auth = ami_auth_new (dir, &err);
    assert_non_null (auth);

    //  A malformed role list is a config error: the broker does not start
    ami_broker_config_t bad = { 0 };
    bad.endpoint = "tcp://127.0.0.1:*";
    bad.server_cert = server_cert;
    bad.client_roles = "mdms,,operator";
    assert_null (ami_broker_new (&bad));
    bad.client_roles = NULL;
    bad.worker_roles = "headend,";
    assert_null (ami_broker_new (&bad));

    ami_broker_config_t config = s_config ();
    config.server_cert = server_cert;
    broker_t broker = s_broker_start (&config);

    //  The normal pair: mdms client, headend worker on agg.1, round trip
    zsock_t *worker = s_curve_dealer (broker.endpoint, headend_cert, server_key);
    SEND (worker, F (""), F (W_HEADER), FB (W_READY, 1), F ("agg.1"));
    zsock_t *client = s_curve_dealer (broker.endpoint, mdms_cert, server_key);
    assert_true (s_wait_mmi (client, "agg.1", "200", WAIT_MS));
    s_client_request (client, "agg.1", "read");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    zmsg_t *body = s_client_reply (client, "agg.1", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "read"));
    zmsg_destroy (&body);

    //  A head end posing as a client: no reply (MMI included), and the
    //  request never reaches the worker nor creates a service
    zsock_t *rogue = s_curve_dealer (broker.endpoint, rogue_cert, server_key);
    s_client_request (rogue, "agg.1", "spoofed read");
    s_client_request (rogue, "mmi.service", "agg.1");
    s_client_request (rogue, "agg.new", "grow the table");
    assert_null (s_recv (rogue, QUIET_MS));
    assert_null (s_worker_recv (worker, 100, NULL));

    //  The MDMS posing as a worker: DISCONNECT, and nothing registered
    zsock_t *mdms_worker = s_curve_dealer (broker.endpoint, mdms_cert, server_key);
    SEND (mdms_worker, F (""), F (W_HEADER), FB (W_READY, 1), F ("agg.2"));
    assert_true (s_worker_disconnected (mdms_worker, WAIT_MS));
    char code [4];
    s_mmi (client, "mmi.service", "agg.2", code);
    assert_string_equal (code, "404");

    //  A role on neither list may be neither
    zsock_t *other = s_curve_dealer (broker.endpoint, other_cert, server_key);
    SEND (other, F (""), F (W_HEADER), FB (W_READY, 1), F ("agg.3"));
    assert_true (s_worker_disconnected (other, WAIT_MS));
    s_client_request (other, "mmi.service", "agg.1");
    assert_null (s_recv (other, QUIET_MS));
    s_mmi (client, "mmi.service", "agg.3", code);
    assert_string_equal (code, "404");

    //  A head end registering outside "agg.": DISCONNECT, 404
    SEND (rogue, F (""), F (W_HEADER), FB (W_READY, 1), F ("other.svc"));
    assert_true (s_worker_disconnected (rogue, WAIT_MS));
    s_mmi (client, "mmi.service", "other.svc", code);
    assert_string_equal (code, "404");
    //  ... while the same head end may still register an aggregator
    SEND (rogue, F (""), F (W_HEADER), FB (W_READY, 1), F ("agg.4"));
    assert_true (s_wait_mmi (client, "agg.4", "200", WAIT_MS));

    //  Only agg.1 and agg.4 exist, one worker each, nothing queued
    size_t services, workers, queued;
    s_status (&broker, &services, &workers, &queued);
    assert_int_equal (services, 2);
    assert_int_equal (workers, 2);
    assert_int_equal (queued, 0);

    //  The normal pair still works after all that
    s_client_request (client, "agg.1", "again");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    body = s_client_reply (client, "agg.1", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "again"));
    zmsg_destroy (&body);
    s_broker_stop (&broker);

    //  Configured lists replace the defaults: "operator" as a client,
    //  "mdms" as a worker with any service name (prefix "")
    config = s_config ();
    config.server_cert = server_cert;
    config.client_roles = " operator , headend";
    config.worker_roles = "mdms";
    config.worker_prefix = "";
    broker = s_broker_start (&config);
    zsock_t *w2 = s_curve_dealer (broker.endpoint, mdms_cert, server_key);
    SEND (w2, F (""), F (W_HEADER), FB (W_READY, 1), F ("echo"));
    zsock_t *c2 = s_curve_dealer (broker.endpoint, other_cert, server_key);
    assert_true (s_wait_mmi (c2, "echo", "200", WAIT_MS));
    zsock_t *c3 = s_curve_dealer (broker.endpoint, mdms_cert, server_key);
    s_client_request (c3, "mmi.service", "echo");
    assert_null (s_recv (c3, QUIET_MS));
    zsock_destroy (&c3);
    zsock_destroy (&c2);
    zsock_destroy (&w2);

    zsock_destroy (&other);
    zsock_destroy (&mdms_worker);
    zsock_destroy (&rogue);
    zsock_destroy (&client);
    zsock_destroy (&worker);
    s_broker_stop (&broker);
    ami_auth_destroy (&auth);               //  after the last server socket
    for (size_t i = 0; i < 4; i++)
        free (files [i]);
    ami_cert_destroy (&server_cert);
    ami_cert_destroy (&mdms_cert);
    ami_cert_destroy (&headend_cert);
    ami_cert_destroy (&rogue_cert);
    ami_cert_destroy (&other_cert);
    assert_int_equal (ami_test_rmtree (dir), 0);
    free (dir);
}

/* ---------------------------------------------------------------------- */
/*  SEC-AUD-2: failed handshakes                                            */

/*  One statistic of the broker's STATS, or UINT64_MAX if it has none. */
static uint64_t
s_stat (broker_t *broker, const char *name)
{
    return ami_test_actor_stat (broker->actor, name);
}

/*  Wait until the statistic equals value. */
static bool
s_wait_stat (broker_t *broker, const char *name, uint64_t value)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (zclock_mono () < deadline) {
        if (s_stat (broker, name) == value)
            return true;
        zclock_sleep (POLL_MS);
    }
    return false;
}

/*  Attempts at a report that names the peer (a miss is a connection that
    failed before the monitor could ask for its address, ami_monitor.h);
    few enough that every warning fits the broker's log budget. */
#define NAME_ATTEMPTS   8

/*  SEC-AUD-2: a client whose key is on no allow-list, and a plaintext
    client, each connect to the CURVE broker: each failed handshake is
    counted exactly (STATS handshakes_refused / handshakes_failed) and
    warned about once, naming the peer's address - the client's own
    source ip:port (set here with "tcp://source;destination"), not the
    broker's endpoint. */
static void
test_sec_aud_2_refused_handshakes (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("broker-aud");
    assert_non_null (dir);
    int err = 0;
    ami_cert_t *server_cert = ami_cert_new ("broker", "BROKER-1", &err);
    ami_cert_t *client_cert = ami_cert_new ("mdms", "MDMS-1", &err);
    ami_cert_t *stranger_cert = ami_cert_new ("mdms", "MDMS-X", &err);
    assert_non_null (server_cert);
    assert_non_null (client_cert);
    assert_non_null (stranger_cert);
    char *client_file = ami_test_path (dir, "mdms.cert");
    assert_int_equal (ami_cert_save_public (client_cert, client_file), AMI_OK);
    const char *server_key = ami_cert_public_txt (server_cert);
    ami_auth_t *auth = ami_auth_new (dir, &err);
    assert_non_null (auth);
    char *log_dir = ami_test_tmpdir ("broker-aud-log");   //  not the allow-list
    assert_non_null (log_dir);
    char *log_path = ami_test_path (log_dir, "broker.log");
    FILE *log = fopen (log_path, "w");
    assert_non_null (log);
    zsys_set_logstream (log);

    ami_broker_config_t config = s_config ();
    config.server_cert = server_cert;
    broker_t broker = s_broker_start (&config);
    assert_int_equal (s_stat (&broker, "handshakes_refused"), 0);
    assert_int_equal (s_stat (&broker, "handshakes_failed"), 0);

    //  kind 0: the stranger's key, refused by ZAP; kind 1: plaintext
    const char *stat [2] = { "handshakes_refused", "handshakes_failed" };
    const char *line [2] = { "broker: router: CURVE handshake from ",
                             "broker: router: handshake from " };
    const char *verdict [2] = { "refused: key not in the allow-list (ZAP status 400)",
                                "failed: not a CURVE client of this server" };
    uint64_t count [2] = { 0, 0 };
    for (int kind = 0; kind < 2; kind++) {
        bool named = false;
        for (int attempt = 0; attempt < NAME_ATTEMPTS && !named; attempt++) {
            int port = ami_test_free_port ();
            assert_true (port > 0);
            zsock_t *sock = ami_test_knock (broker.endpoint, port, kind ? NULL : stranger_cert,
                                            server_key);
            assert_non_null (sock);
            count [kind]++;
            assert_true (s_wait_stat (&broker, stat [kind], count [kind]));
            //  Logged before STATS counted it: one line per failure
            assert_int_equal (ami_test_count_in_file (log_path, line [kind]), count [kind]);
            char needle [160];
            snprintf (needle, sizeof needle, "%s127.0.0.1:%d %s", line [kind], port,
                      verdict [kind]);
            named = ami_test_count_in_file (log_path, needle) == 1;
            if (!named) {           //  then the peer is unknown, never another's
                snprintf (needle, sizeof needle, "%s? %s", line [kind], verdict [kind]);
                assert_true (ami_test_count_in_file (log_path, needle) > 0);
            }
            zsock_destroy (&sock);
        }
        if (!named)
            fail_msg ("%s: no warning named the peer in %d attempts", stat [kind],
                      NAME_ATTEMPTS);
    }
    //  Exact: one count per failed handshake, none of one kind in the other
    zclock_sleep (QUIET_MS / 5);        //  (a late extra report would show)
    assert_int_equal (s_stat (&broker, "handshakes_refused"), count [0]);
    assert_int_equal (s_stat (&broker, "handshakes_failed"), count [1]);
    //  A listed client is served all the while
    zsock_t *client = s_curve_dealer (broker.endpoint, client_cert, server_key);
    char code [4];
    s_mmi (client, "mmi.service", "agg.echo", code);
    assert_string_equal (code, "404");
    assert_int_equal (s_stat (&broker, "handshakes_refused"), count [0]);
    assert_int_equal (s_stat (&broker, "handshakes_failed"), count [1]);

    zsock_destroy (&client);
    s_broker_stop (&broker);
    zsys_set_logstream (stderr);
    fclose (log);
    ami_auth_destroy (&auth);               //  after the last server socket
    ami_cert_destroy (&server_cert);
    ami_cert_destroy (&client_cert);
    ami_cert_destroy (&stranger_cert);
    free (client_file);
    free (log_path);
    assert_int_equal (ami_test_rmtree (log_dir), 0);
    free (log_dir);
    assert_int_equal (ami_test_rmtree (dir), 0);
    free (dir);
}


/* ---------------------------------------------------------------------- */
/*  Issue 6: bounded queues, no silent drops, counters                      */

/*  A REPLY body near the frame limit: a few of them fill the kernel's
    socket buffers, so a client that stops reading soon has a full pipe. */
#define BIG_BODY        (900 * 1024)
#define BIG_REPLIES     40

/*  A client that stops reading while replies are due: the broker never
    blocks (another client is served meanwhile), and every reply it could
    not queue is dropped and counted: delivered + dropped == sent. */
static void
test_issue6_slow_client_counted (void **state)
{
    (void) state;
    ami_broker_config_t config = s_config ();
    config.sndhwm = 2;                  //  a full pipe after a few replies
    broker_t broker = s_broker_start (&config);
    zsock_t *slow = zsock_new (ZMQ_DEALER);
    assert_non_null (slow);
    zsock_set_linger (slow, 0);
    zsock_set_rcvhwm (slow, 1);
    zsock_set_rcvbuf (slow, 4096);      //  before connect: a small TCP window
    assert_int_equal (zsock_connect (slow, "%s", broker.endpoint), 0);
    zsock_t *fast = s_client_new (broker.endpoint, NULL);
    zsock_t *worker = s_worker_new (broker.endpoint, "big");
    for (int i = 0; i < BIG_REPLIES; i++)
        s_client_request (slow, "big", "x");
    char *big = (char *) malloc (BIG_BODY + 1);
    assert_non_null (big);
    memset (big, 'b', BIG_BODY);
    big [BIG_BODY] = 0;
    for (int i = 0; i < BIG_REPLIES; i++) {
        zframe_t *client = s_worker_request (worker, WAIT_MS, NULL);
        assert_non_null (client);
        s_worker_reply (worker, client, big);
        zframe_destroy (&client);
    }
    free (big);
    //  One connection is FIFO: once the worker's DISCONNECT has been
    //  handled (the service is gone), so have all its REPLYs
    SEND (worker, F (""), F (W_HEADER), FB (W_DISCONNECT, 1));
    assert_true (s_wait_status (&broker, "big", ""));
    //  The slow client has not read a byte; another client is served
    int64_t asked = zclock_mono ();
    char code [4];
    s_mmi (fast, "mmi.service", "big", code);
    assert_string_equal (code, "404");
    assert_true (zclock_mono () - asked < WAIT_MS);
    uint64_t dropped = s_stat (&broker, "replies_dropped");
    assert_true (dropped >= 1);
    assert_true (dropped < BIG_REPLIES);
    assert_int_equal (s_stat (&broker, "send_full"), dropped);
    assert_int_equal (s_stat (&broker, "send_gone"), 0);
    //  Now read: what was not dropped arrives, nothing more
    uint64_t delivered = 0;
    zmsg_t *body;
    while ((body = s_client_reply (slow, "big", QUIET_MS))) {
        assert_int_equal (zframe_size (zmsg_first (body)), BIG_BODY);
        zmsg_destroy (&body);
        delivered++;
    }
    assert_int_equal (delivered + dropped, BIG_REPLIES);
    zsock_destroy (&worker);
    zsock_destroy (&fast);
    zsock_destroy (&slow);
    s_broker_stop (&broker);
}

/*  Wait until the statistic is at least value. */
static bool
s_wait_stat_min (broker_t *broker, const char *name, uint64_t value)
{
    int64_t deadline = zclock_mono () + WAIT_MS;
    while (zclock_mono () < deadline) {
        uint64_t now = s_stat (broker, name);
        if (now != UINT64_MAX && now >= value)
            return true;
        zclock_sleep (POLL_MS);
    }
    return false;
}

/*  A client that disconnects while its reply is due: the reply is dropped
    and counted once (replies_dropped, send_gone). The client also
    registers as a worker, so that the broker's failing HEARTBEATs to it
    tell the test the broker has seen it go (libzmq gives no other sign). */
static void
test_issue6_gone_client_counted (void **state)
{
    (void) state;
    ami_broker_config_t config = { 0 };
    config.heartbeat_ms = 50;
    config.liveness = 100;              //  5 s: no expiry during the test
    broker_t broker = s_broker_start (&config);
    zsock_t *gone = s_worker_new (broker.endpoint, "probe");
    zsock_t *worker = s_worker_new (broker.endpoint, "svc");
    assert_true (s_wait_status (&broker, "svc", "svc 1 0"));
    s_client_request (gone, "svc", "hello");
    zframe_t *client = s_worker_request (worker, WAIT_MS, NULL);
    assert_non_null (client);
    zsock_destroy (&gone);
    assert_true (s_wait_stat_min (&broker, "send_gone", 1));
    s_worker_reply (worker, client, "too late");
    zframe_destroy (&client);
    assert_true (s_wait_stat (&broker, "replies_dropped", 1));
    assert_int_equal (s_stat (&broker, "send_full"), 0);
    //  The worker is ready again and serves another client
    zsock_t *other = s_client_new (broker.endpoint, NULL);
    s_client_request (other, "svc", "again");
    assert_true (s_worker_echo_one (worker, WAIT_MS));
    zmsg_t *body = s_client_reply (other, "svc", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "again"));
    zmsg_destroy (&body);
    assert_int_equal (s_stat (&broker, "replies_dropped"), 1);
    zsock_destroy (&other);
    zsock_destroy (&worker);
    s_broker_stop (&broker);
}

/*  A REQUEST that cannot be sent to its worker (gone) is not lost and the
    worker is not left busy: it is removed, the request stays queued and
    the next worker gets it (requeued counts it). */
static void
test_issue6_request_requeued (void **state)
{
    (void) state;
    ami_broker_config_t config = { 0 };
    config.heartbeat_ms = 50;
    config.liveness = 100;              //  5 s: no expiry during the test
    broker_t broker = s_broker_start (&config);
    zsock_t *first = s_worker_new (broker.endpoint, "rq");
    assert_true (s_wait_status (&broker, "rq", "rq 1 0"));
    zsock_destroy (&first);
    //  HEARTBEATs to it fail once the broker has seen it go; it stays
    //  registered (liveness decides) and first in line for work
    assert_true (s_wait_stat_min (&broker, "send_gone", 1));
    zsock_t *second = s_worker_new (broker.endpoint, "rq");
    assert_true (s_wait_status (&broker, "rq", "rq 2 0"));
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    s_client_request (client, "rq", "keep me");
    assert_true (s_worker_echo_one (second, WAIT_MS));
    zmsg_t *body = s_client_reply (client, "rq", WAIT_MS);
    assert_non_null (body);
    assert_true (s_frame_str (zmsg_first (body), "keep me"));
    zmsg_destroy (&body);
    assert_int_equal (s_stat (&broker, "requeued"), 1);
    assert_int_equal (s_stat (&broker, "replies_dropped"), 0);
    assert_true (s_wait_status (&broker, "rq", "rq 1 0"));     //  first removed
    zsock_destroy (&client);
    zsock_destroy (&second);
    s_broker_stop (&broker);
}

/*  Every refusal is counted exactly, and mmi.ami-stats answers the same
    statistics as the pipe's STATS, as one HEALTH frame. */
static void
test_issue6_drops_counted_mmi_stats (void **state)
{
    (void) state;
    ami_broker_config_t config = { 0 };
    config.max_queue = 2;
    config.max_queue_bytes = 10;
    config.max_services = 2;
    config.max_workers = 1;
    config.request_ttl_ms = 300;
    config.heartbeat_ms = 50;
    config.liveness = 100;
    config.node_id = "broker-t";
    broker_t broker = s_broker_start (&config);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    s_client_request (client, "q", "1");
    s_client_request (client, "q", "2");
    s_client_request (client, "q", "3");                    //  queue full
    s_client_request (client, "b", "twenty bytes of body");   //  bytes
    s_client_request (client, "r", "x");                    //  2 services
    s_client_request (client, "s", "y");                    //  table full
    char code [4];
    s_mmi (client, "mmi.service", "q", code);               //  FIFO: all handled
    assert_int_equal (s_stat (&broker, "dropped_queue_full"), 1);
    assert_int_equal (s_stat (&broker, "dropped_queue_bytes"), 1);
    assert_int_equal (s_stat (&broker, "services_refused"), 1);
    assert_int_equal (s_stat (&broker, "queued"), 3);
    assert_int_equal (s_stat (&broker, "queued_bytes"), 3);
    assert_true (s_wait_stat (&broker, "expired", 3));
    assert_int_equal (s_stat (&broker, "queued"), 0);
    zsock_t *w1 = s_worker_new (broker.endpoint, "w");
    assert_true (s_wait_status (&broker, "w", "w 1 0"));
    zsock_t *w2 = s_worker_new (broker.endpoint, "w2");       //  table full
    assert_true (s_worker_disconnected (w2, WAIT_MS));
    assert_int_equal (s_stat (&broker, "workers_refused"), 1);

    //  mmi.ami-stats: one frame, a HEALTH with the STATS values
    s_client_request (client, "mmi.ami-stats", "");
    zmsg_t *reply = s_client_reply (client, "mmi.ami-stats", WAIT_MS);
    assert_non_null (reply);
    assert_int_equal (zmsg_size (reply), 1);
    ami_msg_t *msg = ami_msg_new ();
    assert_non_null (msg);
    zframe_t *frame = zmsg_first (reply);
    assert_int_equal (ami_msg_decode (msg, zframe_data (frame), zframe_size (frame)), AMI_OK);
    assert_int_equal (msg->type, AMI_MSG_HEALTH);
    assert_string_equal (msg->health.role, "broker");
    assert_string_equal (msg->health.node_id, "broker-t");
    assert_int_equal (zstr_send (broker.actor, "STATS"), 0);
    zmsg_t *stats = zmsg_recv (broker.actor);
    assert_non_null (stats);
    assert_int_equal (msg->health.stat_count, zmsg_size (stats));
    uint32_t i = 0;
    for (zframe_t *f = zmsg_first (stats); f; f = zmsg_next (stats), i++) {
        char line [80];
        snprintf (line, sizeof line, "%s %llu", msg->health.stats [i].name,
                  (unsigned long long) msg->health.stats [i].value);
        assert_true (s_frame_str (f, line));
    }
    const char *names [] = { "dropped_queue_full", "dropped_queue_bytes",
                             "services_refused", "expired", "workers_refused" };
    const uint64_t values [] = { 1, 1, 1, 3, 1 };
    for (size_t n = 0; n < sizeof names / sizeof names [0]; n++) {
        bool found = false;
        for (i = 0; i < msg->health.stat_count; i++)
            if (streq (msg->health.stats [i].name, names [n])) {
                assert_int_equal (msg->health.stats [i].value, values [n]);
                found = true;
            }
        assert_true (found);
    }
    zmsg_destroy (&stats);
    ami_msg_destroy (&msg);
    zmsg_destroy (&reply);
    zsock_destroy (&w2);
    zsock_destroy (&w1);
    zsock_destroy (&client);
    s_broker_stop (&broker);
}

/*  Gap 7: the broker's bounds are config keys. ami_broker_config_read
    (what ami-broker's main uses) reads each one into the struct, refuses
    junk and out-of-range values naming the key, and the broker started
    from what it read honours them: STATS reports the bounds, a request
    waiting past broker/request-ttl is expired, a third service over
    broker/max-services = 2 is refused, a second worker over
    broker/max-workers = 1 is refused. */
static void
test_issue6_config_keys (void **state)
{
    (void) state;
    //  Nothing set: the defaults
    ami_config_t *config = ami_config_new_empty ();
    assert_non_null (config);
    ami_broker_config_t read = { 0 };
    assert_int_equal (ami_broker_config_read (config, &read), AMI_OK);
    assert_string_equal (read.endpoint, "tcp://127.0.0.1:7000");
    assert_int_equal (read.heartbeat_ms, AMI_BROKER_HEARTBEAT_MS);
    assert_int_equal (read.liveness, AMI_BROKER_LIVENESS);
    assert_int_equal (read.max_queue, AMI_BROKER_MAX_QUEUE);
    assert_int_equal (read.max_queue_bytes, AMI_BROKER_MAX_QUEUE_BYTES);
    assert_int_equal (read.request_ttl_ms, AMI_BROKER_REQUEST_TTL_MS);
    assert_int_equal (read.max_services, AMI_BROKER_MAX_SERVICES);
    assert_int_equal (read.max_workers, AMI_BROKER_MAX_WORKERS);
    ami_config_destroy (&config);

    //  Refused values, each named in the log
    char *dir = ami_test_tmpdir ("broker-keys");
    assert_non_null (dir);
    char *log_path = ami_test_path (dir, "broker.log");
    FILE *log = fopen (log_path, "w");
    assert_non_null (log);
    zsys_set_logstream (log);
    const struct {
        const char *key, *value;
    } bad [] = {
        { "max-queue-bytes", "512K" },      //  under 1 MiB
        { "max-queue-bytes", "65G" },       //  over 64 GiB
        { "max-queue-bytes", "12X" },
        { "request-ttl", "0" },
        { "request-ttl", "2h" },
        { "request-ttl", "-5s" },
        { "max-services", "0" },
        { "max-services", "1000001" },
        { "max-workers", "0" },
        { "max-workers", "many" },
        { "heartbeat", "0" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        char text [128];
        snprintf (text, sizeof text, "broker\n    %s = %s\n", bad [i].key, bad [i].value);
        config = ami_config_load_str (text, "keys.cfg", NULL);
        assert_non_null (config);
        ami_broker_config_t refused = { 0 };
        if (ami_broker_config_read (config, &refused) != AMI_E_CONFIG)
            fail_msg ("broker/%s = %s was accepted", bad [i].key, bad [i].value);
        ami_config_destroy (&config);
        fflush (log);
        char key [64];
        snprintf (key, sizeof key, "broker/%s", bad [i].key);
        if (ami_test_count_in_file (log_path, key) < 1)
            fail_msg ("the refusal of %s = %s does not name the key", key, bad [i].value);
        //  Start afresh so the next case's line is its own
        assert_non_null (freopen (log_path, "w", log));
    }
    zsys_set_logstream (stderr);
    fclose (log);

    //  Set: read into the struct, and honoured by the broker
    config = ami_config_load_str ("broker\n"
                                  "    endpoint = tcp://127.0.0.1:*\n"
                                  "    heartbeat = 50ms\n"
                                  "    liveness = 100\n"
                                  "    max-queue = 5\n"
                                  "    max-queue-bytes = 2M\n"
                                  "    request-ttl = 150ms\n"
                                  "    max-services = 2\n"
                                  "    max-workers = 1\n", "keys.cfg", NULL);
    assert_non_null (config);
    memset (&read, 0, sizeof read);
    assert_int_equal (ami_broker_config_read (config, &read), AMI_OK);
    assert_string_equal (read.endpoint, "tcp://127.0.0.1:*");
    assert_int_equal (read.heartbeat_ms, 50);
    assert_int_equal (read.liveness, 100);
    assert_int_equal (read.max_queue, 5);
    assert_int_equal (read.max_queue_bytes, 2 * 1024 * 1024);
    assert_int_equal (read.request_ttl_ms, 150);
    assert_int_equal (read.max_services, 2);
    assert_int_equal (read.max_workers, 1);
    broker_t broker = s_broker_start (&read);
    ami_config_destroy (&config);           //  the actor copied what it keeps
    assert_int_equal (s_stat (&broker, "max_queue"), 5);
    assert_int_equal (s_stat (&broker, "max_queue_bytes"), 2 * 1024 * 1024);
    assert_int_equal (s_stat (&broker, "request_ttl_ms"), 150);
    assert_int_equal (s_stat (&broker, "max_services"), 2);
    assert_int_equal (s_stat (&broker, "max_workers"), 1);
    zsock_t *client = s_client_new (broker.endpoint, NULL);
    s_client_request (client, "p", "1");
    s_client_request (client, "q", "2");
    s_client_request (client, "r", "3");                    //  a third service
    char code [4];
    s_mmi (client, "mmi.service", "p", code);               //  FIFO: all handled
    assert_int_equal (s_stat (&broker, "services_refused"), 1);
    //  Nobody serves p or q: both expire after 150 ms, well within WAIT_MS
    assert_true (s_wait_stat (&broker, "expired", 2));
    assert_int_equal (s_stat (&broker, "queued"), 0);
    zsock_t *w1 = s_worker_new (broker.endpoint, "p");
    assert_true (s_wait_status (&broker, "p", "p 1 0"));
    zsock_t *w2 = s_worker_new (broker.endpoint, "p");        //  over max-workers
    assert_true (s_worker_disconnected (w2, WAIT_MS));
    assert_int_equal (s_stat (&broker, "workers_refused"), 1);
    zsock_destroy (&w2);
    zsock_destroy (&w1);
    zsock_destroy (&client);
    s_broker_stop (&broker);
    ami_test_rmtree (dir);
    free (log_path);
    free (dir);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_echo_round_trip),
        cmocka_unit_test (test_req_client),
        cmocka_unit_test (test_two_workers_share),
        cmocka_unit_test (test_queued_until_worker),
        cmocka_unit_test (test_mmi),
        cmocka_unit_test (test_heartbeat_expiry),
        cmocka_unit_test (test_malformed_input),
        cmocka_unit_test (test_worker_disconnect),
        cmocka_unit_test (test_queue_bound),
        cmocka_unit_test (test_request_ttl),
        cmocka_unit_test (test_start_failure),
        cmocka_unit_test (test_curve),
        cmocka_unit_test (test_curve_roles),
        cmocka_unit_test (test_sec_aud_2_refused_handshakes),
        cmocka_unit_test (test_issue6_slow_client_counted),
        cmocka_unit_test (test_issue6_gone_client_counted),
        cmocka_unit_test (test_issue6_request_requeued),
        cmocka_unit_test (test_issue6_drops_counted_mmi_stats),
        cmocka_unit_test (test_issue6_config_keys),
    };
    return cmocka_run_group_tests_name ("broker conformance", tests, NULL, NULL);
}
