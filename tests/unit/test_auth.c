/*  test_auth.c - cmocka tests for ami_auth (zauth + CURVE socket helpers).

    Everything runs in-process over tcp://127.0.0.1 on an ephemeral port.
    The server is a ROUTER with ami_auth over an allow-list directory that
    holds client A's ("alice") public certificate; client B ("mallory") is
    not listed. Readiness is never a sleep: a client's request is awaited
    with a poll and a deadline, and a refusal is proven by the server
    socket's monitor reporting HANDSHAKE_FAILED_AUTH with ZAP status 400
    (then, as the brief asks, a 500 ms poll on both ends shows that nothing
    got through).

    Each test gets a fresh temporary directory; the teardown closes the
    sockets first, then the ZAP handler (the order the header demands),
    then removes the directory.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_err.h"
#include "ami_test.h"

//  A legitimate handshake and round trip on loopback take milliseconds;
//  5 s leaves room for valgrind and a loaded CI machine.
#define DEADLINE_MS     5000

//  How long "nothing arrives" is watched, per the brief.
#define SILENCE_MS      500

#define MAX_CLIENTS     4

typedef struct {
    char *dir;                  //  the test's private temporary directory
    char *allow;                //  dir/allow: the server's allow-list
    char *alice_pub;            //  allow/alice.cert
    ami_auth_t *auth;
    ami_cert_t *server_cert;
    ami_cert_t *alice;          //  listed
    ami_cert_t *mallory;        //  not listed
    zsock_t *server;            //  ROUTER
    zsock_t *monitor;           //  PAIR receiving the server's events
    zsock_t *clients [MAX_CLIENTS];
    int port;
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    fx->dir = ami_test_tmpdir ("auth");
    if (!fx->dir)
        return -1;
    fx->allow = ami_test_path (fx->dir, "allow");
    fx->alice_pub = ami_test_path (fx->allow, "alice.cert");
    if (!fx->allow || !fx->alice_pub || mkdir (fx->allow, 0750) != 0)
        return -1;
    fx->server_cert = ami_cert_new ("mdms", "MDMS-1", NULL);
    fx->alice = ami_cert_new ("operator", "alice", NULL);
    fx->mallory = ami_cert_new ("operator", "mallory", NULL);
    if (!fx->server_cert || !fx->alice || !fx->mallory)
        return -1;
    if (ami_cert_save_public (fx->alice, fx->alice_pub) != AMI_OK)
        return -1;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    //  Sockets first, then the ZAP handler (see ami_auth.h)
    for (int i = 0; i < MAX_CLIENTS; i++)
        zsock_destroy (&fx->clients [i]);
    zsock_destroy (&fx->monitor);
    zsock_destroy (&fx->server);
    ami_auth_destroy (&fx->auth);
    ami_cert_destroy (&fx->server_cert);
    ami_cert_destroy (&fx->alice);
    ami_cert_destroy (&fx->mallory);
    int rc = fx->dir ? ami_test_rmtree (fx->dir) : 0;
    free (fx->alice_pub);
    free (fx->allow);
    free (fx->dir);
    free (fx);
    return rc == 0 ? 0 : -1;
}

//  Start the ZAP handler and the CURVE ROUTER, monitored, on an ephemeral
//  port; the allow-list must hold expected_count certificates.
static void
s_start_server_count (fixture_t *fx, size_t expected_count)
{
    //  A fresh inproc name per server: the previous test's monitor
    //  endpoint is released asynchronously.
    static int s_monitors = 0;
    int err = -1;
    fx->auth = ami_auth_new (fx->allow, &err);
    assert_non_null (fx->auth);
    assert_int_equal (err, AMI_OK);
    assert_int_equal (ami_auth_count (fx->auth), expected_count);
    assert_true (ami_auth_running ());

    fx->server = zsock_new (ZMQ_ROUTER);
    assert_non_null (fx->server);
    assert_int_equal (ami_auth_server (fx->server, fx->server_cert), AMI_OK);
    assert_int_equal (zsock_mechanism (fx->server), ZMQ_CURVE);

    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "inproc://test-auth-monitor-%d", ++s_monitors);
    assert_int_equal (zmq_socket_monitor (zsock_resolve (fx->server), endpoint,
                                          ZMQ_EVENT_HANDSHAKE_SUCCEEDED
                                          | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
                                          | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
                                          | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL), 0);
    fx->monitor = zsock_new (ZMQ_PAIR);
    assert_non_null (fx->monitor);
    assert_int_equal (zsock_connect (fx->monitor, "%s", endpoint), 0);

    fx->port = zsock_bind (fx->server, "tcp://127.0.0.1:*");
    assert_true (fx->port > 0);
}

static void
s_start_server (fixture_t *fx)
{
    s_start_server_count (fx, 1);
}

//  Connect a new CURVE DEALER with the given certificate into slot.
static zsock_t *
s_client (fixture_t *fx, int slot, ami_cert_t *cert)
{
    assert_true (slot >= 0 && slot < MAX_CLIENTS);
    assert_null (fx->clients [slot]);
    zsock_t *client = zsock_new (ZMQ_DEALER);
    assert_non_null (client);
    assert_int_equal (ami_auth_client (client, cert,
                                       ami_cert_public_txt (fx->server_cert)), AMI_OK);
    //  A refused client's queued message must never block the test
    zsock_set_sndtimeo (client, DEADLINE_MS);
    assert_int_equal (zsock_connect (client, "tcp://127.0.0.1:%d", fx->port), 0);
    fx->clients [slot] = client;
    return client;
}

//  Wait for the next handshake event on the server's monitor; returns the
//  event (0 on timeout) and stores its value (the ZAP status code for
//  HANDSHAKE_FAILED_AUTH).
static int
s_next_event (fixture_t *fx, int timeout_ms, uint32_t *value)
{
    zpoller_t *poller = zpoller_new (fx->monitor, NULL);
    assert_non_null (poller);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    if (which != fx->monitor)
        return 0;
    zmsg_t *msg = zmsg_recv (fx->monitor);
    assert_non_null (msg);
    //  libzmq's v1 event: frame 1 = uint16 event + uint32 value (native order)
    zframe_t *frame = zmsg_first (msg);
    assert_int_equal (zframe_size (frame), 6);
    uint16_t event;
    memcpy (&event, zframe_data (frame), 2);
    memcpy (value, zframe_data (frame) + 2, 4);
    zmsg_destroy (&msg);
    return event;
}

//  Receive one message on sock within timeout_ms, or NULL.
static zmsg_t *
s_recv (zsock_t *sock, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    assert_non_null (poller);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    return which == sock ? zmsg_recv (sock) : NULL;
}

//  One request/reply through the server; checks who the server saw.
static void
s_round_trip (fixture_t *fx, zsock_t *client, ami_cert_t *cert, const char *text)
{
    assert_int_equal (zstr_send (client, text), 0);
    zmsg_t *request = s_recv (fx->server, DEADLINE_MS);
    assert_non_null (request);
    assert_int_equal (zmsg_size (request), 2);
    zframe_t *identity = zmsg_first (request);
    zframe_t *body = zmsg_next (request);
    assert_true (zframe_streq (body, text));

    //  The server knows which key sent this, and the allow-list metadata
    const char *key = ami_auth_peer_key (body);
    assert_non_null (key);
    assert_string_equal (key, ami_cert_public_txt (cert));
    assert_string_equal (ami_auth_peer_meta (body, AMI_CERT_META_NODE_ID),
                         ami_cert_node_id (cert));
    assert_string_equal (ami_auth_peer_meta (body, AMI_CERT_META_ROLE),
                         ami_cert_role (cert));
    //  ...but not on the ROUTER's identity frame (documented)
    assert_null (ami_auth_peer_key (identity));

    //  Reply on the same route: [identity, "pong"]
    zmsg_t *reply = zmsg_new ();
    assert_non_null (reply);
    identity = zmsg_pop (request);          //  the reply takes it over
    assert_int_equal (zmsg_append (reply, &identity), 0);
    assert_int_equal (zmsg_addstr (reply, "pong"), 0);
    zmsg_destroy (&request);
    assert_int_equal (zmsg_send (&reply, fx->server), 0);

    zmsg_t *answer = s_recv (client, DEADLINE_MS);
    assert_non_null (answer);
    char *s = zmsg_popstr (answer);
    assert_string_equal (s, "pong");
    zstr_free (&s);
    zmsg_destroy (&answer);
}

//  A client that ZAP must refuse: the monitor reports 400, and during the
//  silence window neither end receives anything.
static void
s_assert_refused (fixture_t *fx, zsock_t *client)
{
    assert_int_equal (zstr_send (client, "let me in"), 0);
    uint32_t value = 0;
    int event = s_next_event (fx, DEADLINE_MS, &value);
    assert_int_equal (event, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    assert_int_equal (value, 400);
    zmsg_t *msg = s_recv (fx->server, SILENCE_MS);
    assert_null (msg);
    msg = s_recv (client, SILENCE_MS);
    assert_null (msg);
}

static void
s_assert_accepted (fixture_t *fx)
{
    uint32_t value = 0;
    assert_int_equal (s_next_event (fx, DEADLINE_MS, &value), ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
}


//  --------------------------------------------------------------------------

static void
test_listed_client_round_trip (void **state)
{
    fixture_t *fx = *state;
    s_start_server (fx);
    ami_auth_set_verbose (fx->auth, true);
    ami_auth_set_verbose (fx->auth, false);         //  cannot: a warning
    zsock_t *a = s_client (fx, 0, fx->alice);
    s_round_trip (fx, a, fx->alice, "ping");
    s_assert_accepted (fx);
    s_round_trip (fx, a, fx->alice, "again");
}

static void
test_unlisted_client_refused (void **state)
{
    fixture_t *fx = *state;
    s_start_server (fx);
    //  The server works (A is served) ...
    zsock_t *a = s_client (fx, 0, fx->alice);
    s_round_trip (fx, a, fx->alice, "ping");
    s_assert_accepted (fx);
    //  ... and B, not listed, gets nothing, and the server sees nothing
    zsock_t *b = s_client (fx, 1, fx->mallory);
    s_assert_refused (fx, b);
    //  A is still served afterwards
    s_round_trip (fx, a, fx->alice, "still here");
}

static void
test_new_refuses_bad_dirs (void **state)
{
    fixture_t *fx = *state;
    int err = AMI_OK;
    //  missing
    char *missing = ami_test_path (fx->dir, "missing");
    assert_non_null (missing);
    assert_null (ami_auth_new (missing, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    free (missing);
    //  empty
    char *empty = ami_test_path (fx->dir, "empty");
    assert_non_null (empty);
    assert_int_equal (mkdir (empty, 0750), 0);
    err = AMI_OK;
    assert_null (ami_auth_new (empty, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    //  no certificate zauth would read: a stray file, a hidden certificate
    char *readme = ami_test_path (empty, "README");
    char *hidden = ami_test_path (empty, ".alice.cert");
    assert_true (readme && hidden);
    FILE *f = fopen (readme, "w");
    assert_non_null (f);
    fputs ("allowed peers go here\n", f);
    fclose (f);
    assert_int_equal (ami_cert_save_public (fx->alice, hidden), AMI_OK);
    err = AMI_OK;
    assert_null (ami_auth_new (empty, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    //  a file, not a directory
    err = AMI_OK;
    assert_null (ami_auth_new (readme, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    free (readme);
    free (hidden);
    free (empty);
    //  a world-writable allow-list
    assert_int_equal (chmod (fx->allow, 0777), 0);
    err = AMI_OK;
    assert_null (ami_auth_new (fx->allow, &err));
    assert_int_equal (err, AMI_E_KEY_PERMS);
    assert_int_equal (chmod (fx->allow, 0750), 0);
    //  none of these left a handler running
    assert_false (ami_auth_running ());
}

//  Send text from client; the server must receive it (socket level) and
//  return whether ami_auth_peer_allowed accepts the frame.
static bool
s_delivered_allowed (fixture_t *fx, zsock_t *client, ami_auth_t *self, const char *text)
{
    assert_int_equal (zstr_send (client, text), 0);
    zmsg_t *request = s_recv (fx->server, DEADLINE_MS);
    assert_non_null (request);
    assert_int_equal (zmsg_size (request), 2);
    zframe_t *body = zmsg_last (request);
    assert_true (zframe_streq (body, text));
    bool allowed = ami_auth_peer_allowed (self, body);
    //  never on the identity frame: it carries no User-Id
    assert_false (ami_auth_peer_allowed (self, zmsg_first (request)));
    zmsg_destroy (&request);
    return allowed;
}

//  Poll (with a deadline) until the client's frames are refused.
static void
s_until_refused (fixture_t *fx, zsock_t *client, ami_auth_t *self)
{
    int64_t deadline = zclock_mono () + DEADLINE_MS;
    bool allowed = true;
    while (allowed && zclock_mono () < deadline) {
        allowed = s_delivered_allowed (fx, client, self, "still talking");
        if (allowed)
            zclock_sleep (20);      //  pacing of the poll, not a readiness wait
    }
    assert_false (allowed);
}

static void
test_revocation (void **state)
{
    fixture_t *fx = *state;
    s_start_server (fx);
    zsock_t *a = s_client (fx, 0, fx->alice);
    s_round_trip (fx, a, fx->alice, "before");
    s_assert_accepted (fx);
    assert_true (s_delivered_allowed (fx, a, fx->auth, "listed"));
    assert_true (ami_auth_key_allowed (fx->auth, ami_cert_public_txt (fx->alice)));
    uint64_t refused = ami_auth_refused_count ();

    //  Revoke: remove the file, reload
    assert_int_equal (unlink (fx->alice_pub), 0);
    assert_int_equal (ami_auth_reload (fx->auth), AMI_OK);
    assert_int_equal (ami_auth_count (fx->auth), 0);

    //  A NEW connection with A's key is refused
    zsock_t *a2 = s_client (fx, 1, fx->alice);
    s_assert_refused (fx, a2);

    //  The connection established before the revocation stays up at the
    //  socket level (ZAP runs at handshakes only): its frames still
    //  arrive, but ami_auth_peer_allowed refuses them at once (reload made
    //  the view current), so a server acts on nothing it sends (SEC-KEY-3:
    //  live sessions are dropped)
    assert_false (s_delivered_allowed (fx, a, fx->auth, "established"));
    assert_false (s_delivered_allowed (fx, a, NULL, "the process's auth"));
    //  two bodies and two identity frames (s_delivered_allowed checks both)
    assert_int_equal (ami_auth_refused_count (), refused + 4);
    assert_false (ami_auth_key_allowed (fx->auth, ami_cert_public_txt (fx->alice)));

    //  Re-listing (e.g. after rotation) admits new connections again
    assert_int_equal (ami_cert_save_public (fx->alice, fx->alice_pub), AMI_OK);
    assert_int_equal (ami_auth_reload (fx->auth), AMI_OK);
    assert_int_equal (ami_auth_count (fx->auth), 1);
    zsock_t *a3 = s_client (fx, 2, fx->alice);
    s_round_trip (fx, a3, fx->alice, "welcome back");
    s_assert_accepted (fx);
    assert_true (s_delivered_allowed (fx, a3, fx->auth, "relisted"));
    assert_true (s_delivered_allowed (fx, a, fx->auth, "old session too"));
}

//  Without ami_auth_reload: the view notices the removed file by itself
//  within AMI_AUTH_REFRESH_MS, and a live session's frames turn refused.
static void
test_revocation_live_session (void **state)
{
    fixture_t *fx = *state;
    s_start_server (fx);
    zsock_t *a = s_client (fx, 0, fx->alice);
    s_round_trip (fx, a, fx->alice, "before");
    s_assert_accepted (fx);
    assert_true (s_delivered_allowed (fx, a, NULL, "listed"));

    int64_t removed = zclock_mono ();
    assert_int_equal (unlink (fx->alice_pub), 0);
    s_until_refused (fx, a, NULL);
    //  refused within the refresh interval (plus scheduling slack)
    assert_true (zclock_mono () - removed < AMI_AUTH_REFRESH_MS + 2000);
    assert_false (s_delivered_allowed (fx, a, fx->auth, "again"));

    //  A file replaced in place (same name, same size, same second) with a
    //  new key is noticed too: the view signs inode and nanosecond mtime
    assert_int_equal (ami_cert_save_public (fx->alice, fx->alice_pub), AMI_OK);
    int64_t deadline = zclock_mono () + DEADLINE_MS;
    bool allowed = false;
    while (!allowed && zclock_mono () < deadline) {
        allowed = s_delivered_allowed (fx, a, NULL, "back?");
        if (!allowed)
            zclock_sleep (20);
    }
    assert_true (allowed);
    ami_cert_t *other = ami_cert_new ("operator", "alice", NULL);
    assert_non_null (other);
    assert_int_equal (ami_cert_save_public (other, fx->alice_pub), AMI_OK);
    s_until_refused (fx, a, NULL);
    assert_true (ami_auth_key_allowed (NULL, ami_cert_public_txt (other)));
    ami_cert_destroy (&other);
}

//  "expires": refused from that second on, per frame, though the file stays
static void
test_expiry (void **state)
{
    fixture_t *fx = *state;
    //  alice: expires 2 s from now; mallory: expired an hour ago
    char when [32];
    snprintf (when, sizeof when, "%lld", (long long) time (NULL) + 2);
    assert_int_equal (ami_cert_set_meta (fx->alice, AMI_AUTH_META_EXPIRES, when), AMI_OK);
    assert_int_equal (ami_cert_save_public (fx->alice, fx->alice_pub), AMI_OK);
    char *mallory_pub = ami_test_path (fx->allow, "mallory.cert");
    assert_non_null (mallory_pub);
    ami_cert_t *old = ami_cert_new ("operator", "mallory", NULL);
    assert_non_null (old);
    snprintf (when, sizeof when, "%lld", (long long) time (NULL) - 3600);
    assert_int_equal (ami_cert_set_meta (old, AMI_AUTH_META_EXPIRES, when), AMI_OK);
    assert_int_equal (ami_cert_save_public (old, mallory_pub), AMI_OK);
    free (mallory_pub);

    s_start_server_count (fx, 2);
    assert_false (ami_auth_key_allowed (fx->auth, ami_cert_public_txt (old)));
    zsock_t *a = s_client (fx, 0, fx->alice);
    s_round_trip (fx, a, fx->alice, "in the window");
    s_assert_accepted (fx);
    assert_true (s_delivered_allowed (fx, a, fx->auth, "in the window"));
    s_until_refused (fx, a, fx->auth);
    assert_false (ami_auth_key_allowed (NULL, ami_cert_public_txt (fx->alice)));
    ami_cert_destroy (&old);

    //  A bad expires is refused by the directory check (fail closed)
    char *bad = ami_test_path (fx->dir, "bad.cert");
    assert_non_null (bad);
    ami_cert_t *b = ami_cert_new ("operator", "bob", NULL);
    assert_non_null (b);
    assert_int_equal (ami_cert_set_meta (b, AMI_AUTH_META_EXPIRES, "soon"), AMI_OK);
    char *bad_dir = ami_test_path (fx->dir, "bad");
    assert_non_null (bad_dir);
    assert_int_equal (mkdir (bad_dir, 0750), 0);
    free (bad);
    bad = ami_test_path (bad_dir, "bob.cert");
    assert_int_equal (ami_cert_save_public (b, bad), AMI_OK);
    assert_int_equal (ami_auth_check_dir (bad_dir, NULL), AMI_E_CONFIG);
    ami_cert_destroy (&b);
    free (bad);
    free (bad_dir);

    int64_t value = 0;
    assert_true (ami_auth_parse_expires ("1700000000", &value));
    assert_true (value == 1700000000);
    assert_false (ami_auth_parse_expires ("", &value));
    assert_false (ami_auth_parse_expires ("-1", &value));
    assert_false (ami_auth_parse_expires ("12 ", &value));
    assert_false (ami_auth_parse_expires ("9999999999999999999", &value));
}

//  With no ami_auth running, every frame and key is refused (fail closed)
static void
test_allowed_without_auth (void **state)
{
    fixture_t *fx = *state;
    assert_false (ami_auth_running ());
    assert_false (ami_auth_key_allowed (NULL, ami_cert_public_txt (fx->alice)));
    assert_false (ami_auth_key_allowed (NULL, NULL));
    assert_false (ami_auth_key_allowed (NULL, "short"));
    zframe_t *frame = zframe_new ("x", 1);
    assert_non_null (frame);
    assert_false (ami_auth_peer_allowed (NULL, frame));
    zframe_destroy (&frame);
}

static void
test_server_guards (void **state)
{
    fixture_t *fx = *state;
    //  No ZAP handler: ami_auth_server refuses to make an open server
    assert_false (ami_auth_running ());
    zsock_t *sock = zsock_new (ZMQ_ROUTER);
    assert_non_null (sock);
    assert_int_equal (ami_auth_server (sock, fx->server_cert), AMI_E_CONFIG);

    s_start_server (fx);
    //  One handler per process
    int err = AMI_OK;
    assert_null (ami_auth_new (fx->allow, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    assert_true (ami_auth_running ());

    //  Too late once bound
    assert_true (zsock_bind (sock, "tcp://127.0.0.1:*") > 0);
    assert_int_equal (ami_auth_server (sock, fx->server_cert), AMI_E_CONFIG);
    zsock_destroy (&sock);

    //  A public-only certificate cannot serve or connect
    char *pub = ami_test_path (fx->dir, "server.cert");
    assert_non_null (pub);
    assert_int_equal (ami_cert_save_public (fx->server_cert, pub), AMI_OK);
    ami_cert_t *public_only = ami_cert_load_public (pub, &err);
    assert_non_null (public_only);
    sock = zsock_new (ZMQ_DEALER);
    assert_non_null (sock);
    assert_int_equal (ami_auth_server (sock, public_only), AMI_E_KEY);
    assert_int_equal (ami_auth_client (sock, public_only,
                                       ami_cert_public_txt (fx->server_cert)), AMI_E_KEY);
    ami_cert_destroy (&public_only);

    //  Bad server keys
    assert_int_equal (ami_auth_client (sock, fx->alice, "short"), AMI_E_KEY);
    assert_int_equal (ami_auth_client (sock, fx->alice,
                      "~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"), AMI_E_KEY);
    zsock_destroy (&sock);

    //  The server key can be read from its public certificate file
    char key [AMI_CERT_KEY_TXT_LEN + 1] = "";
    assert_int_equal (ami_auth_server_key_from_file (pub, key), AMI_OK);
    assert_string_equal (key, ami_cert_public_txt (fx->server_cert));
    char *nope = ami_test_path (fx->dir, "nope.cert");
    assert_non_null (nope);
    assert_int_equal (ami_auth_server_key_from_file (nope, key), AMI_E_KEY);
    free (nope);
    free (pub);

    //  Destroy is idempotent and frees the process-wide slot
    zsock_destroy (&fx->monitor);
    zsock_destroy (&fx->server);
    ami_auth_destroy (&fx->auth);
    assert_null (fx->auth);
    ami_auth_destroy (&fx->auth);
    assert_false (ami_auth_running ());
    fx->auth = ami_auth_new (fx->allow, &err);
    assert_non_null (fx->auth);
}

static void
test_allow_dir_hazards (void **state)
{
    fixture_t *fx = *state;
    size_t count = 99;
    assert_int_equal (ami_auth_check_dir (fx->allow, &count), AMI_OK);
    assert_int_equal (count, 1);

    //  The same key twice would make zauth abort the process: refused
    char *dup = ami_test_path (fx->allow, "alice-copy.cert");
    assert_non_null (dup);
    assert_int_equal (ami_cert_save_public (fx->alice, dup), AMI_OK);
    int err = AMI_OK;
    assert_null (ami_auth_new (fx->allow, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    assert_int_equal (unlink (dup), 0);
    free (dup);

    //  Metadata that would overflow zauth's 512-byte buffer: refused
    char *big = ami_test_path (fx->allow, "big.cert");
    assert_non_null (big);
    zcert_t *z = zcert_new ();
    assert_non_null (z);
    zcert_set_meta (z, "role", "meter");
    zcert_set_meta (z, "node-id", "BIG-1");
    //  each entry valid on its own (200 < 255 bytes), 3 x 206 bytes in total
    char value [201];
    memset (value, 'x', 200);
    value [200] = 0;
    zcert_set_meta (z, "a", "%s", value);
    zcert_set_meta (z, "b", "%s", value);
    zcert_set_meta (z, "c", "%s", value);
    assert_int_equal (zcert_save_public (z, big), 0);
    zcert_destroy (&z);
    err = AMI_OK;
    assert_null (ami_auth_new (fx->allow, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    assert_int_equal (unlink (big), 0);
    free (big);

    //  A stray file that is not a certificate: refused (and zauth would
    //  leak memory re-reading it)
    char *readme = ami_test_path (fx->allow, "README");
    assert_non_null (readme);
    FILE *f = fopen (readme, "w");
    assert_non_null (f);
    fputs ("allowed peers go here\n", f);
    fclose (f);
    assert_int_equal (ami_auth_check_dir (fx->allow, &count), AMI_E_CONFIG);
    assert_int_equal (unlink (readme), 0);
    free (readme);

    //  A world-writable certificate: refused
    assert_int_equal (chmod (fx->alice_pub, 0666), 0);
    assert_int_equal (ami_auth_check_dir (fx->allow, NULL), AMI_E_KEY_PERMS);
    assert_int_equal (chmod (fx->alice_pub, 0644), 0);

    //  A secret file in the allow-list only warns (zauth skips it), and a
    //  subdirectory is read too
    char *secret = ami_test_path (fx->allow, "oops.cert_secret");
    char *sub = ami_test_path (fx->allow, "ops");
    char *sub_cert = ami_test_path (sub, "mallory.cert");
    assert_true (secret && sub && sub_cert);
    char *keys = ami_test_path (fx->dir, "oops.cert");
    assert_non_null (keys);
    assert_int_equal (ami_cert_save (fx->mallory, keys), AMI_OK);
    char *keys_secret = ami_test_path (fx->dir, "oops.cert_secret");
    assert_non_null (keys_secret);
    assert_int_equal (rename (keys_secret, secret), 0);
    assert_int_equal (mkdir (sub, 0750), 0);
    assert_int_equal (ami_cert_save_public (fx->mallory, sub_cert), AMI_OK);
    assert_int_equal (ami_auth_check_dir (fx->allow, &count), AMI_OK);
    assert_int_equal (count, 2);

    //  ami_auth_reload refuses a bad directory without touching zauth
    s_start_server_count (fx, 2);
    dup = ami_test_path (sub, "alice-again.cert");
    assert_non_null (dup);
    assert_int_equal (ami_cert_save_public (fx->alice, dup), AMI_OK);
    assert_int_equal (ami_auth_reload (fx->auth), AMI_E_CONFIG);
    assert_int_equal (ami_auth_count (fx->auth), 2);
    assert_int_equal (unlink (dup), 0);
    assert_int_equal (ami_auth_reload (fx->auth), AMI_OK);
    //  and the subdirectory's certificate is honoured by zauth
    zsock_t *m = s_client (fx, 0, fx->mallory);
    s_round_trip (fx, m, fx->mallory, "from a subdirectory");
    free (dup);
    free (secret);
    free (sub);
    free (sub_cert);
    free (keys);
    free (keys_secret);
}

/*  SEC-AUTH-2: one operator id, one current key. A second allow-listed
    certificate for operator "alice" with another key is refused (the MDMS,
    like every server, does not start with it, and ami-keygen check flags
    it); the same identity's old key in a rotation window (it carries
    expires) is fine, and so is another operator's key. */
static void
test_sec_auth_2_one_key_per_operator (void **state)
{
    fixture_t *fx = *state;
    size_t count = 0;
    ami_cert_t *alice2 = ami_cert_new ("operator", "alice", NULL);
    assert_non_null (alice2);
    char *twin = ami_test_path (fx->allow, "alice-laptop.cert");
    assert_non_null (twin);
    assert_int_equal (ami_cert_save_public (alice2, twin), AMI_OK);
    assert_int_equal (ami_auth_check_dir (fx->allow, &count), AMI_E_CONFIG);
    int err = AMI_OK;
    assert_null (ami_auth_new (fx->allow, &err));
    assert_int_equal (err, AMI_E_CONFIG);
    assert_int_equal (unlink (twin), 0);

    //  the rotation window's old key: same id, carries expires: accepted
    zcert_t *old = zcert_new ();
    assert_non_null (old);
    zcert_set_meta (old, "role", "operator");
    zcert_set_meta (old, "node-id", "alice");
    zcert_set_meta (old, "expires", "%lld", (long long) (time (NULL) + 3600));
    char *old_path = ami_test_path (fx->allow, "alice.old-1");
    assert_non_null (old_path);
    assert_int_equal (zcert_save_public (old, old_path), 0);
    zcert_destroy (&old);
    assert_int_equal (ami_auth_check_dir (fx->allow, &count), AMI_OK);
    assert_int_equal (count, 2);

    //  another operator: fine; a node with the same id but another role: fine
    assert_int_equal (ami_cert_save_public (fx->mallory, twin), AMI_OK);
    ami_cert_t *node_alice = ami_cert_new ("meter", "alice", NULL);
    assert_non_null (node_alice);
    char *node_path = ami_test_path (fx->allow, "fleet-alice.cert");
    assert_non_null (node_path);
    assert_int_equal (ami_cert_save_public (node_alice, node_path), AMI_OK);
    assert_int_equal (ami_auth_check_dir (fx->allow, &count), AMI_OK);
    assert_int_equal (count, 4);
    assert_int_equal (unlink (twin), 0);
    assert_int_equal (unlink (node_path), 0);
    assert_int_equal (unlink (old_path), 0);
    ami_cert_destroy (&alice2);
    ami_cert_destroy (&node_alice);
    free (twin);
    free (old_path);
    free (node_path);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_listed_client_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unlisted_client_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_new_refuses_bad_dirs, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_revocation, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_revocation_live_session, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_expiry, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_allowed_without_auth, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_server_guards, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_allow_dir_hazards, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sec_auth_2_one_key_per_operator, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
