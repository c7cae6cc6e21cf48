/*  test_faultrelay.c - the fault suite's TCP relay (tools/ami-faultrelay):
    bytes pass unchanged, delay, rate limit, stall with back-pressure and
    resume, reset, refuse/pass, exact counters, the control protocol, and
    a CURVE DEALER -> ROUTER link through it that survives a reset.

    The relay is a program (tools/NAME links into bin/NAME), so this test
    compiles faultrelay.c in directly (main.c is not included) and runs
    faultrelay_run in a thread, talking to it over its real control port.
    Upstream is a small poll-based echo server in another thread, on an
    ephemeral 127.0.0.1 port. Timing assertions are lower bounds only
    (never "at most so fast"), measured with CLOCK_MONOTONIC; every wait
    is a poll() with a deadline.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_test.h"

#include "../../tools/ami-faultrelay/faultrelay.c"

//  Generous deadline for anything that should happen promptly: a bound on
//  a hang, never a speed assertion (valgrind runs ~30x slower).
#define DEADLINE_MS     10000

//  ----------------------------------------------------------------------
//  Clock and socket helpers

static int64_t
h_now_ms (void)
{
    return s_now_us () / 1000;
}

static int
h_remaining (int64_t deadline)
{
    int64_t left = deadline - h_now_ms ();
    return left < 0 ? 0 : (int) left;
}

static int
h_connect (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true (fd >= 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                                .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    assert_int_equal (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    return fd;
}

//  Send out and receive exactly in_len bytes, concurrently (an echo
//  needs both at once). Returns bytes received.
static size_t
h_exchange (int fd, const uint8_t *out, size_t out_len, uint8_t *in, size_t in_len, int timeout_ms)
{
    int64_t deadline = h_now_ms () + timeout_ms;
    size_t sent = 0, got = 0;
    while (got < in_len && h_remaining (deadline) > 0) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN | (sent < out_len ? POLLOUT : 0) };
        if (poll (&pfd, 1, h_remaining (deadline)) <= 0)
            break;
        if ((pfd.revents & POLLOUT) && sent < out_len) {
            ssize_t rc = send (fd, out + sent, out_len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (rc > 0)
                sent += (size_t) rc;
        }
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t rc = recv (fd, in + got, in_len - got, MSG_DONTWAIT);
            if (rc > 0)
                got += (size_t) rc;
            else
            if (rc == 0 || (errno != EAGAIN && errno != EINTR))
                break;
        }
    }
    return got;
}

//  Round trip of a small message through relay and echo
static void
h_ping (int fd)
{
    uint8_t in [4];
    assert_int_equal (h_exchange (fd, (const uint8_t *) "ping", 4, in, 4, DEADLINE_MS), 4);
    assert_memory_equal (in, "ping", 4);
}

//  Wait for the peer to end the connection; returns 0 on EOF, the errno
//  of recv on an error (ECONNRESET), -1 if data came or nothing happened.
static int
h_wait_end (int fd, int timeout_ms)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    if (poll (&pfd, 1, timeout_ms) != 1)
        return -1;
    char byte;
    ssize_t rc = recv (fd, &byte, 1, MSG_DONTWAIT);
    if (rc == 0)
        return 0;
    return rc < 0 ? errno : -1;
}

//  ----------------------------------------------------------------------
//  Echo server: one thread, one poll loop, up to ECHO_MAX connections

#define ECHO_MAX    16
#define ECHO_BUF    (64 * 1024)     //  per connection; back-pressure beyond

typedef struct {
    int listen_fd, port, stop [2];
    pthread_t thread;
    int fd [ECHO_MAX];
    size_t len [ECHO_MAX];
    uint8_t *buf [ECHO_MAX];
} echo_t;

static void *
s_echo_run (void *arg)
{
    echo_t *echo = arg;
    while (true) {
        struct pollfd pfd [2 + ECHO_MAX];
        pfd [0] = (struct pollfd) { .fd = echo->stop [0], .events = POLLIN };
        pfd [1] = (struct pollfd) { .fd = echo->listen_fd, .events = POLLIN };
        for (int i = 0; i < ECHO_MAX; i++) {
            short events = 0;
            if (echo->len [i] < ECHO_BUF)
                events |= POLLIN;
            if (echo->len [i] > 0)
                events |= POLLOUT;
            pfd [2 + i] = (struct pollfd) { .fd = echo->fd [i], .events = events };
        }
        if (poll (pfd, 2 + ECHO_MAX, -1) < 0)
            continue;
        if (pfd [0].revents)
            break;
        if (pfd [1].revents) {
            int fd = accept4 (echo->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            for (int i = 0; fd >= 0 && i < ECHO_MAX; i++)
                if (echo->fd [i] < 0) {
                    echo->fd [i] = fd;
                    echo->len [i] = 0;
                    fd = -1;
                }
            if (fd >= 0)
                close (fd);
        }
        for (int i = 0; i < ECHO_MAX; i++) {
            if (echo->fd [i] < 0 || !pfd [2 + i].revents)
                continue;
            bool done = false;
            if ((pfd [2 + i].revents & POLLOUT) && echo->len [i] > 0) {
                ssize_t rc = send (echo->fd [i], echo->buf [i], echo->len [i],
                                   MSG_DONTWAIT | MSG_NOSIGNAL);
                if (rc > 0) {
                    memmove (echo->buf [i], echo->buf [i] + rc, echo->len [i] - (size_t) rc);
                    echo->len [i] -= (size_t) rc;
                }
                else
                if (rc < 0 && errno != EAGAIN)
                    done = true;
            }
            if (!done && (pfd [2 + i].revents & (POLLIN | POLLHUP | POLLERR))
            &&  echo->len [i] < ECHO_BUF) {
                ssize_t rc = recv (echo->fd [i], echo->buf [i] + echo->len [i],
                                   ECHO_BUF - echo->len [i], MSG_DONTWAIT);
                if (rc > 0)
                    echo->len [i] += (size_t) rc;
                else
                if (rc == 0 || errno != EAGAIN)
                    done = true;    //  EOF: everything was echoed already
            }
            if (done) {
                close (echo->fd [i]);
                echo->fd [i] = -1;
                echo->len [i] = 0;
            }
        }
    }
    return NULL;
}

static echo_t *
h_echo_start (void)
{
    echo_t *echo = calloc (1, sizeof *echo);
    assert_non_null (echo);
    for (int i = 0; i < ECHO_MAX; i++) {
        echo->fd [i] = -1;
        echo->buf [i] = malloc (ECHO_BUF);
        assert_non_null (echo->buf [i]);
    }
    assert_int_equal (pipe (echo->stop), 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    echo->listen_fd = s_listen_tcp ("echo", (struct sockaddr *) &addr, sizeof addr, "echo");
    assert_true (echo->listen_fd >= 0);
    echo->port = s_bound_port (echo->listen_fd);
    assert_int_equal (pthread_create (&echo->thread, NULL, s_echo_run, echo), 0);
    return echo;
}

static void
h_echo_stop (echo_t **echo_p)
{
    echo_t *echo = *echo_p;
    if (!echo)
        return;
    assert_int_equal (write (echo->stop [1], "x", 1), 1);
    pthread_join (echo->thread, NULL);
    for (int i = 0; i < ECHO_MAX; i++) {
        if (echo->fd [i] >= 0)
            close (echo->fd [i]);
        free (echo->buf [i]);
    }
    close (echo->listen_fd);
    close (echo->stop [0]);
    close (echo->stop [1]);
    free (echo);
    *echo_p = NULL;
}

//  ----------------------------------------------------------------------
//  Relay fixture: echo server + relay thread + one control connection

typedef struct {
    echo_t *echo;
    faultrelay_t *relay;
    pthread_t thread;
    bool running;
    int control;
    int port;
} fixture_t;

static void *
s_relay_thread (void *arg)
{
    fixture_t *fx = arg;
    faultrelay_run (fx->relay);
    return NULL;
}

static void
h_relay_start (fixture_t *fx, const char *to)
{
    faultrelay_config_t config;
    faultrelay_config_default (&config);
    config.listen = "127.0.0.1:0";
    config.to = to;
    config.control_port = 0;
    fx->relay = faultrelay_new (&config);
    assert_non_null (fx->relay);
    fx->port = faultrelay_port (fx->relay);
    assert_true (fx->port > 0);
    assert_int_equal (pthread_create (&fx->thread, NULL, s_relay_thread, fx), 0);
    fx->running = true;
    fx->control = h_connect (faultrelay_control_port (fx->relay));
}

static int
s_setup (void **state)
{
    fixture_t *fx = calloc (1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    fx->control = -1;
    fx->echo = h_echo_start ();
    char to [32];
    snprintf (to, sizeof to, "127.0.0.1:%d", fx->echo->port);
    h_relay_start (fx, to);
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *fx = *state;
    if (fx->control >= 0)
        close (fx->control);
    if (fx->running) {
        faultrelay_stop (fx->relay);
        pthread_join (fx->thread, NULL);
    }
    faultrelay_destroy (&fx->relay);
    h_echo_stop (&fx->echo);
    free (fx);
    return 0;
}

//  Send one control line, return the reply line (static buffer) or NULL
static const char *
h_ctl (fixture_t *fx, const char *command)
{
    static char reply [512];
    char line [300];
    int len = snprintf (line, sizeof line, "%s\n", command);
    if (send (fx->control, line, (size_t) len, MSG_NOSIGNAL) != len)
        return NULL;
    size_t got = 0;
    int64_t deadline = h_now_ms () + DEADLINE_MS;
    while (got < sizeof reply - 1) {
        struct pollfd pfd = { .fd = fx->control, .events = POLLIN };
        if (poll (&pfd, 1, h_remaining (deadline)) != 1)
            return NULL;
        ssize_t rc = recv (fx->control, reply + got, 1, 0);
        if (rc != 1)
            return NULL;
        if (reply [got] == '\n') {
            reply [got] = '\0';
            return reply;
        }
        got++;
    }
    return NULL;
}

static void
h_ok (fixture_t *fx, const char *command)
{
    const char *reply = h_ctl (fx, command);
    assert_non_null (reply);
    assert_string_equal (reply, "OK");
}

//  One counter from the stats line
static long long
h_stat (fixture_t *fx, const char *name)
{
    const char *line = h_ctl (fx, "stats");
    assert_non_null (line);
    char key [64];
    snprintf (key, sizeof key, "%s=", name);
    for (const char *p = line; (p = strstr (p, key)); p++)
        if (p == line || p [-1] == ' ')
            return atoll (p + strlen (key));
    fail_msg ("no %s in stats line: %s", name, line);
    return -1;
}

//  Wait (deadline) until a counter reaches a value; returns the last value
static long long
h_stat_wait (fixture_t *fx, const char *name, long long want)
{
    int64_t deadline = h_now_ms () + DEADLINE_MS;
    long long value;
    //  Polls the relay's counters (not a readiness sleep: each turn is a
    //  control round trip, and the loop ends at the deadline)
    while ((value = h_stat (fx, name)) != want && h_remaining (deadline) > 0)
        poll (NULL, 0, 5);
    return value;
}

//  ----------------------------------------------------------------------
//  Tests

static void
test_faultrelay_parse_address (void **state)
{
    (void) state;
    char host [64];
    int port = -1;
    assert_int_equal (faultrelay_parse_address ("10.0.0.2:7201", host, sizeof host, &port), 0);
    assert_string_equal (host, "10.0.0.2");
    assert_int_equal (port, 7201);
    assert_int_equal (faultrelay_parse_address (":0", host, sizeof host, &port), 0);
    assert_string_equal (host, FAULTRELAY_DEFAULT_HOST);
    assert_int_equal (port, 0);
    assert_int_equal (faultrelay_parse_address ("7300", host, sizeof host, &port), 0);
    assert_string_equal (host, FAULTRELAY_DEFAULT_HOST);
    assert_int_equal (port, 7300);
    assert_int_equal (faultrelay_parse_address ("[::1]:80", host, sizeof host, &port), 0);
    assert_string_equal (host, "::1");
    assert_int_equal (port, 80);
    assert_int_equal (faultrelay_parse_address ("::1:80", host, sizeof host, &port), -1);
    assert_int_equal (faultrelay_parse_address ("host:65536", host, sizeof host, &port), -1);
    assert_int_equal (faultrelay_parse_address ("host:-1", host, sizeof host, &port), -1);
    assert_int_equal (faultrelay_parse_address ("host:", host, sizeof host, &port), -1);
    assert_int_equal (faultrelay_parse_address ("[::1]80", host, sizeof host, &port), -1);
    assert_int_equal (faultrelay_parse_address ("averyveryverylonghostname:1", host, 8, &port), -1);

    //  The constructor refuses what it cannot serve
    faultrelay_config_t config;
    faultrelay_config_default (&config);
    config.listen = "127.0.0.1:0";
    assert_null (faultrelay_new (&config));             //  no --to
    config.to = "127.0.0.1:0";
    assert_null (faultrelay_new (&config));             //  port 0 upstream
    config.to = "127.0.0.1:9";
    config.max_conns = 0;
    assert_null (faultrelay_new (&config));
    config.max_conns = 1;
    config.delay_ms = FAULTRELAY_DELAY_MAX_MS + 1;
    assert_null (faultrelay_new (&config));
    config.delay_ms = 0;
    config.listen = "no-such-host.invalid:0";
    assert_null (faultrelay_new (&config));
}

//  Random 1 MiB through relay and echo: both directions byte for byte
static void
test_faultrelay_bytes_unchanged (void **state)
{
    fixture_t *fx = *state;
    const size_t size = 1024 * 1024;
    uint8_t *out = malloc (size), *in = malloc (size);
    assert_non_null (out);
    assert_non_null (in);
    randombytes_buf (out, size);
    int fd = h_connect (fx->port);
    assert_int_equal (h_exchange (fd, out, size, in, size, DEADLINE_MS * 3), size);
    assert_memory_equal (in, out, size);
    assert_int_equal (h_stat (fx, "bytes_c2u"), size);
    assert_int_equal (h_stat (fx, "bytes_u2c"), size);
    assert_int_equal (h_stat (fx, "active"), 1);
    close (fd);
    free (out);
    free (in);
}

//  Delay holds each chunk at least delay ms, each way; jitter keeps order
static void
test_faultrelay_delay (void **state)
{
    fixture_t *fx = *state;
    int fd = h_connect (fx->port);
    h_ping (fd);                            //  connected, nothing held

    const int delay = 150;
    h_ok (fx, "delay 150");
    assert_int_equal (h_stat (fx, "delay"), delay);
    int64_t start = s_now_us ();
    h_ping (fd);
    int64_t elapsed_us = s_now_us () - start;
    //  Held once on the way to the echo, once on the way back
    assert_true (elapsed_us >= 2 * delay * 1000);

    //  Jitter: 30 numbered messages, paced so that each is its own chunk,
    //  come back complete and in order although each is held 10..90 ms
    h_ok (fx, "delay 50 40");
    assert_int_equal (h_stat (fx, "jitter"), 40);
    uint8_t out [30 * 4], in [30 * 4];
    for (int i = 0; i < 30; i++) {
        memcpy (out + 4 * i, (uint8_t []) { 'm', (uint8_t) i, (uint8_t) (i * 7), '.' }, 4);
        assert_int_equal (send (fd, out + 4 * i, 4, MSG_NOSIGNAL), 4);
        poll (NULL, 0, 3);                  //  pacing between sends, not readiness
    }
    assert_int_equal (h_exchange (fd, NULL, 0, in, sizeof in, DEADLINE_MS), sizeof in);
    assert_memory_equal (in, out, sizeof in);

    //  Back to no delay: a later ping no longer waits for it
    h_ok (fx, "delay 0 0");
    h_ping (fd);
    close (fd);
}

//  Rate limit: N bytes each way take at least (N - burst) / rate
static void
test_faultrelay_rate (void **state)
{
    fixture_t *fx = *state;
    int fd = h_connect (fx->port);
    h_ping (fd);
    const long long rate = 100000;
    h_ok (fx, "rate 100000");
    assert_int_equal (h_stat (fx, "rate"), rate);
    const size_t size = 100000;
    uint8_t *out = malloc (size), *in = malloc (size);
    assert_non_null (out);
    assert_non_null (in);
    randombytes_buf (out, size);
    int64_t start = s_now_us ();
    assert_int_equal (h_exchange (fd, out, size, in, size, DEADLINE_MS), size);
    int64_t elapsed_us = s_now_us () - start;
    assert_memory_equal (in, out, size);
    //  The bucket starts full (FR_BURST_MS worth of bytes) and refills at
    //  rate: the client->upstream direction alone needs this long
    int64_t burst = rate * FR_BURST_MS / 1000;
    int64_t least_us = ((int64_t) size - burst) * 1000000 / rate;
    assert_true (least_us > 800000);        //  the check means something
    assert_true (elapsed_us >= least_us - 1000);
    h_ok (fx, "rate 0");
    h_ping (fd);
    close (fd);
    free (out);
    free (in);
}

//  Stall: nothing moves, reading stops when the buffer is full (bounded),
//  the connection stays open; after resume everything arrives
static void
test_faultrelay_stall (void **state)
{
    fixture_t *fx = *state;
    int fd = h_connect (fx->port);
    h_ping (fd);
    long long c2u = h_stat (fx, "bytes_c2u");
    h_ok (fx, "stall");
    assert_int_equal (h_stat (fx, "stalled"), 1);

    //  Send a pattern until the socket takes no more for 300 ms: the relay
    //  stopped reading (its buffer is full) and TCP pushed back
    const size_t cap = 64 * 1024 * 1024;    //  far above any kernel buffers
    uint8_t *out = malloc (cap);
    assert_non_null (out);
    for (size_t i = 0; i < cap; i++)
        out [i] = (uint8_t) (i * 31 + (i >> 12));
    size_t sent = 0;
    while (sent < cap) {
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        if (poll (&pfd, 1, 300) != 1)
            break;
        ssize_t rc = send (fd, out + sent, cap - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        assert_true (rc > 0 || errno == EAGAIN);
        if (rc > 0)
            sent += (size_t) rc;
    }
    assert_true (sent > 0);
    assert_true (sent < cap);               //  back-pressure, not an endless buffer

    //  Nothing came back and nothing was forwarded while stalled
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    assert_int_equal (poll (&pfd, 1, 300), 0);
    assert_int_equal (h_stat (fx, "bytes_c2u"), c2u);
    assert_int_equal (h_stat (fx, "active"), 1);

    //  The signal path toggles too (SIGUSR1 in ami-faultrelay)
    faultrelay_toggle_stall (fx->relay);
    uint8_t *in = malloc (sent);
    assert_non_null (in);
    assert_int_equal (h_exchange (fd, NULL, 0, in, sent, DEADLINE_MS * 3), sent);
    assert_memory_equal (in, out, sent);
    assert_int_equal (h_stat (fx, "stalled"), 0);
    assert_int_equal (h_stat (fx, "bytes_c2u"), c2u + (long long) sent);
    close (fd);
    free (out);
    free (in);
}

//  Reset: every client sees ECONNRESET; new connections work afterwards
static void
test_faultrelay_reset (void **state)
{
    fixture_t *fx = *state;
    int a = h_connect (fx->port);
    int b = h_connect (fx->port);
    h_ping (a);
    h_ping (b);
    assert_int_equal (h_stat (fx, "active"), 2);
    h_ok (fx, "reset");                     //  replies after the RSTs went out
    assert_int_equal (h_wait_end (a, DEADLINE_MS), ECONNRESET);
    assert_int_equal (h_wait_end (b, DEADLINE_MS), ECONNRESET);
    assert_int_equal (h_stat (fx, "resets"), 2);
    assert_int_equal (h_stat (fx, "active"), 0);
    close (a);
    close (b);

    int c = h_connect (fx->port);
    h_ping (c);
    //  The signal path (SIGUSR2 in ami-faultrelay) resets as well
    faultrelay_signal_reset (fx->relay);
    assert_int_equal (h_wait_end (c, DEADLINE_MS), ECONNRESET);
    assert_int_equal (h_stat (fx, "resets"), 3);
    close (c);
}

//  Refuse: new connections are accepted and reset; existing ones go on;
//  pass restores relaying
static void
test_faultrelay_refuse (void **state)
{
    fixture_t *fx = *state;
    int old = h_connect (fx->port);
    h_ping (old);
    h_ok (fx, "refuse");
    assert_int_equal (h_stat (fx, "refusing"), 1);
    int refused = h_connect (fx->port);     //  the kernel completes the handshake
    assert_int_equal (h_wait_end (refused, DEADLINE_MS), ECONNRESET);
    close (refused);
    h_ping (old);
    assert_int_equal (h_stat (fx, "refused"), 1);
    assert_int_equal (h_stat (fx, "accepted"), 1);

    h_ok (fx, "pass");
    int fresh = h_connect (fx->port);
    h_ping (fresh);
    assert_int_equal (h_stat (fx, "accepted"), 2);
    assert_int_equal (h_stat (fx, "refused"), 1);
    close (fresh);
    close (old);
}

//  Every counter exact: accepted = active + closed + resets + aborts
static void
test_faultrelay_stats_exact (void **state)
{
    fixture_t *fx = *state;
    int fd [3];
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        fd [i] = h_connect (fx->port);
        size_t size = 1000 * (size_t) (i + 1);
        uint8_t out [3000], in [3000];
        randombytes_buf (out, size);
        assert_int_equal (h_exchange (fd [i], out, size, in, size, DEADLINE_MS), size);
        total += size;
    }
    //  A clean close: FIN from the client, the echo closes, EOF comes back
    assert_int_equal (shutdown (fd [0], SHUT_WR), 0);
    assert_int_equal (h_wait_end (fd [0], DEADLINE_MS), 0);
    close (fd [0]);
    assert_int_equal (h_stat_wait (fx, "closed", 1), 1);

    //  An RST from a client resets the pair: an abort
    s_close_rst (fd [1]);
    assert_int_equal (h_stat_wait (fx, "aborts", 1), 1);

    h_ok (fx, "reset");
    assert_int_equal (h_wait_end (fd [2], DEADLINE_MS), ECONNRESET);
    close (fd [2]);

    const char *line = h_ctl (fx, "stats");
    assert_non_null (line);
    char want [400];
    snprintf (want, sizeof want,
              "accepted=3 active=0 closed=1 resets=1 aborts=1 refused=0 bytes_c2u=%zu "
              "bytes_u2c=%zu delay=0 jitter=0 rate=0 stalled=0 refusing=0", total, total);
    assert_string_equal (line, want);
}

//  Upstream unreachable: the client is reset and it counts as an abort
static void
test_faultrelay_upstream_down (void **state)
{
    fixture_t *fx = *state;
    //  A second relay towards a port nobody listens on (bound, then closed)
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    int probe = s_listen_tcp ("probe", (struct sockaddr *) &addr, sizeof addr, "probe");
    assert_true (probe >= 0);
    int dead_port = s_bound_port (probe);
    close (probe);
    char to [32];
    snprintf (to, sizeof to, "127.0.0.1:%d", dead_port);

    close (fx->control);
    faultrelay_stop (fx->relay);
    pthread_join (fx->thread, NULL);
    fx->running = false;
    faultrelay_destroy (&fx->relay);
    h_relay_start (fx, to);

    int fd = h_connect (fx->port);
    assert_int_equal (h_wait_end (fd, DEADLINE_MS), ECONNRESET);
    close (fd);
    assert_int_equal (h_stat_wait (fx, "aborts", 1), 1);
    assert_int_equal (h_stat (fx, "accepted"), 1);
    assert_int_equal (h_stat (fx, "active"), 0);
}

//  The control protocol refuses what it does not understand
static void
test_faultrelay_control (void **state)
{
    fixture_t *fx = *state;
    const char *bad [] = { "bogus", "delay", "delay x", "delay 600001", "delay 1 2 3",
                           "rate -1", "rate 1e6", "jitter", "stall now", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        const char *reply = h_ctl (fx, bad [i]);
        assert_non_null (reply);
        assert_true (strncmp (reply, "ERR ", 4) == 0);
    }
    //  Nothing changed
    assert_int_equal (h_stat (fx, "delay"), 0);
    assert_int_equal (h_stat (fx, "rate"), 0);
    assert_int_equal (h_stat (fx, "stalled"), 0);
    //  CRLF is accepted
    h_ok (fx, "jitter 5\r");
    assert_int_equal (h_stat (fx, "jitter"), 5);
    const char *help = h_ctl (fx, "help");
    assert_non_null (help);
    assert_non_null (strstr (help, "refuse"));

    //  A line that is too long: one ERR, then the connection is closed
    char line [FAULTRELAY_CONTROL_LINE + 10];
    memset (line, 'a', sizeof line - 1);
    line [sizeof line - 1] = '\0';
    const char *reply = h_ctl (fx, line);
    assert_non_null (reply);
    assert_string_equal (reply, "ERR line too long");
    //  EOF, or RST when the rest of the line was still unread at the close
    int end = h_wait_end (fx->control, DEADLINE_MS);
    assert_true (end == 0 || end == ECONNRESET);
    close (fx->control);

    //  quit closes only that control connection
    fx->control = h_connect (faultrelay_control_port (fx->relay));
    assert_int_equal (send (fx->control, "quit\n", 5, MSG_NOSIGNAL), 5);
    assert_int_equal (h_wait_end (fx->control, DEADLINE_MS), 0);
    close (fx->control);
    fx->control = h_connect (faultrelay_control_port (fx->relay));
    assert_int_equal (h_stat (fx, "jitter"), 5);
}

//  The UNIX control socket: owner-only, refused while in use, removed
static void
test_faultrelay_control_unix (void **state)
{
    (void) state;
    char *dir = ami_test_tmpdir ("faultrelay");
    assert_non_null (dir);
    char *path = ami_test_path (dir, "ctl.sock");
    faultrelay_config_t config;
    faultrelay_config_default (&config);
    config.listen = "127.0.0.1:0";
    config.to = "127.0.0.1:9";
    config.control_path = path;
    faultrelay_t *relay = faultrelay_new (&config);
    assert_non_null (relay);
    struct stat st;
    assert_int_equal (lstat (path, &st), 0);
    assert_true (S_ISSOCK (st.st_mode));
    assert_int_equal (st.st_mode & 0777, 0600);
    //  A second relay on the same live socket is refused
    assert_null (faultrelay_new (&config));
    faultrelay_destroy (&relay);
    assert_int_equal (lstat (path, &st), -1);
    //  A plain file in the way is not removed
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    fclose (file);
    assert_null (faultrelay_new (&config));
    assert_int_equal (lstat (path, &st), 0);
    assert_true (S_ISREG (st.st_mode));
    free (path);
    assert_int_equal (ami_test_rmtree (dir), 0);
    free (dir);
}

//  A CURVE DEALER -> ROUTER pair (the ami-bus transport) through the
//  relay: a message crosses; after `reset` the DEALER reconnects through
//  the relay on its own and messages cross again
static void
test_faultrelay_curve_reconnect (void **state)
{
    fixture_t *fx = *state;
    char *dir = ami_test_tmpdir ("faultrelay");
    assert_non_null (dir);
    char *allow = ami_test_path (dir, "allow");
    assert_int_equal (mkdir (allow, 0750), 0);
    char *client_pub = ami_test_path (allow, "agg-1.cert");
    ami_cert_t *server_cert = ami_cert_new ("headend", "headend-1", NULL);
    ami_cert_t *client_cert = ami_cert_new ("aggregator", "agg-1", NULL);
    assert_non_null (server_cert);
    assert_non_null (client_cert);
    assert_int_equal (ami_cert_save_public (client_cert, client_pub), AMI_OK);
    int err = -1;
    ami_auth_t *auth = ami_auth_new (allow, &err);
    assert_non_null (auth);

    zsock_t *router = zsock_new (ZMQ_ROUTER);
    assert_non_null (router);
    assert_int_equal (ami_auth_server (router, server_cert), AMI_OK);
    int server_port = zsock_bind (router, "tcp://127.0.0.1:*");
    assert_true (server_port > 0);

    //  This test's relay points at the ROUTER
    char to [32];
    snprintf (to, sizeof to, "127.0.0.1:%d", server_port);
    close (fx->control);
    faultrelay_stop (fx->relay);
    pthread_join (fx->thread, NULL);
    fx->running = false;
    faultrelay_destroy (&fx->relay);
    h_relay_start (fx, to);

    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    assert_non_null (dealer);
    assert_int_equal (ami_auth_client (dealer, client_cert, ami_cert_public_txt (server_cert)),
                      AMI_OK);
    zsock_set_linger (dealer, 0);
    zsock_set_linger (router, 0);
    zsock_set_rcvtimeo (router, 200);
    zsock_set_rcvtimeo (dealer, DEADLINE_MS);
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", fx->port);
    assert_int_equal (zsock_connect (dealer, "%s", endpoint), 0);

    for (int round = 0; round < 2; round++) {
        //  Messages sent into a connection that is being cut may be lost:
        //  resend until one crosses (each wait bounded, overall deadline)
        //  (a slow first round may also leave resends of its own queued:
        //  they are skipped, only this round's message counts)
        char text [32];
        snprintf (text, sizeof text, "reading-%d-", round);
        int64_t deadline = h_now_ms () + DEADLINE_MS;
        zmsg_t *got = NULL;
        for (int k = 0; !got && h_remaining (deadline) > 0; k++) {
            assert_int_equal (zstr_sendf (dealer, "%s%d", text, k), 0);
            got = zmsg_recv (router);
            if (got && (zmsg_size (got) != 2 || zframe_size (zmsg_last (got)) <= strlen (text)
                        || memcmp (zframe_data (zmsg_last (got)), text, strlen (text)) != 0))
                zmsg_destroy (&got);
        }
        assert_non_null (got);
        zframe_t *routing_id = zmsg_pop (got);
        zframe_t *body = zmsg_first (got);
        //  Authenticated through the relay: the ROUTER sees the client key
        const char *key = ami_auth_peer_key (body);
        assert_non_null (key);
        assert_string_equal (key, ami_cert_public_txt (client_cert));
        zmsg_destroy (&got);
        assert_int_equal (zframe_send (&routing_id, router, ZFRAME_MORE), 0);
        assert_int_equal (zstr_send (router, "ack"), 0);
        char *ack = zstr_recv (dealer);
        assert_non_null (ack);
        assert_string_equal (ack, "ack");
        zstr_free (&ack);
        if (round == 0)
            h_ok (fx, "reset");
    }
    assert_int_equal (h_stat (fx, "resets"), 1);
    assert_true (h_stat (fx, "accepted") >= 2);    //  the DEALER came back via the relay

    zsock_destroy (&dealer);
    zsock_destroy (&router);
    ami_auth_destroy (&auth);
    ami_cert_destroy (&server_cert);
    ami_cert_destroy (&client_cert);
    free (client_pub);
    free (allow);
    assert_int_equal (ami_test_rmtree (dir), 0);
    free (dir);
}

int
main (void)
{
    //  The relay logs every fault at info; keep the test output short
    ami_log_set_level (AMI_LOG_WARN);
    signal (SIGPIPE, SIG_IGN);
    assert_true (sodium_init () >= 0);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_faultrelay_parse_address),
        cmocka_unit_test_setup_teardown (test_faultrelay_bytes_unchanged, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_delay, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_rate, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_stall, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_reset, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_refuse, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_stats_exact, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_upstream_down, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_faultrelay_control, s_setup, s_teardown),
        cmocka_unit_test (test_faultrelay_control_unix),
        cmocka_unit_test_setup_teardown (test_faultrelay_curve_reconnect, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
