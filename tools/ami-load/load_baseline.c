/*  load_baseline.c - one CurveZMQ hop between two processes, measured
    (see load_baseline.h).

    Patterns: PUSH/PULL pipeline (zguide chapter 1, "divide and conquer")
    for throughput, DEALER/ROUTER echo (chapter 3) with one request in
    flight for latency. The receiver is a child process; it and the parent
    speak one-line text messages over pipes:

        parent -> child stdin:   SERVER <public z85> <secret z85>
                                 CLIENT <public z85>
                                 (then nothing; closing stdin ends the child)
        child stdout -> parent:  READY <pull port> <router port>
                                 PHASE <count> <first ns> <last ns>
                                 (one per empty frame received on the PULL)

    Every wait has a deadline, so a receiver that dies or hangs makes the
    baseline fail with a message instead of hanging ami-load.
*/
#include "load_baseline.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/*  The child's start-up (exec, zauth, two binds) takes milliseconds; 10 s
    is for a machine under heavy load. */
#define S_READY_TIMEOUT_MS      10000
/*  A blocked send or receive this long means the other side is gone. */
#define S_IO_TIMEOUT_MS         5000
/*  After the sender stops, the receiver still drains the queues (two
    high-water marks and the socket buffers: under a second here). */
#define S_DRAIN_TIMEOUT_MS      30000
/*  Looking at the clock costs more than a send: look every 256 sends. */
#define S_CLOCK_EVERY           256
/*  The child exits as soon as its stdin closes; wait this long, then kill. */
#define S_EXIT_TIMEOUT_MS       5000
#define S_ZAP_DOMAIN            "ami-load-baseline"
/*  Messages taken off the PULL per wake-up, so the parent checks below
    still run while a stream flows. */
#define S_DRAIN_MAX             4096
/*  The receiver looks for its parent's end this often. */
#define S_PARENT_CHECK_MS       100

static const size_t s_sizes [LOAD_BASELINE_SIZES] = { 100, 1000 };

/* Read one '\n'-terminated line from fd within timeout_ms (bytes one at
   a time: the lines are few and short). Returns 0, or -1 on EOF, error
   or timeout. */
static int
s_read_line (int fd, char *line, size_t cap, int timeout_ms)
{
    int64_t deadline = load_now_us () + (int64_t) timeout_ms * 1000;
    size_t len = 0;
    while (len + 1 < cap) {
        int64_t left = (deadline - load_now_us ()) / 1000;
        if (left < 0)
            return -1;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int rc = poll (&pfd, 1, (int) left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        char c;
        ssize_t n = read (fd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        if (c == '\n') {
            line [len] = '\0';
            return 0;
        }
        line [len++] = c;
    }
    return -1;
}

static int
s_write_all (int fd, const char *text)
{
    size_t len = strlen (text), done = 0;
    while (done < len) {
        ssize_t n = write (fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t) n;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/*  The receiver (child process)                                           */

static int
s_z85_key (const char *text, uint8_t key [32])
{
    return text && strlen (text) == 40 && zmq_z85_decode (key, text) ? 0 : -1;
}

static zsock_t *
s_server_socket (int type, zcert_t *cert, int *port)
{
    zsock_t *sock = zsock_new (type);
    if (!sock)
        return NULL;
    zsock_set_linger (sock, 0);
    zcert_apply (cert, sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, S_ZAP_DOMAIN);
    *port = zsock_bind (sock, "tcp://127.0.0.1:*");
    if (*port <= 0)
        zsock_destroy (&sock);
    return sock;
}

int
load_baseline_receiver_main (void)
{
    char line [256], what [16], pub [64], sec [64];
    uint8_t server_pk [32], server_sk [32], client_pk [32], none [32] = { 0 };
    if (s_read_line (STDIN_FILENO, line, sizeof line, S_READY_TIMEOUT_MS)
    ||  sscanf (line, "%15s %63s %63s", what, pub, sec) != 3 || strcmp (what, "SERVER")
    ||  s_z85_key (pub, server_pk) || s_z85_key (sec, server_sk)
    ||  s_read_line (STDIN_FILENO, line, sizeof line, S_READY_TIMEOUT_MS)
    ||  sscanf (line, "%15s %63s", what, pub) != 2 || strcmp (what, "CLIENT")
    ||  s_z85_key (pub, client_pk)) {
        fprintf (stderr, "ami-load: %s is internal to `ami-load baseline`\n",
                 LOAD_BASELINE_RECEIVER_CMD);
        return 2;
    }
    zcert_t *server = zcert_new_from (server_pk, server_sk);
    sodium_memzero (server_sk, sizeof server_sk);
    //  The allow-list: exactly the sender's public key (the secret half of
    //  a store entry is never used; the sender's stays with the sender).
    zcertstore_t *store = zcertstore_new (NULL);
    zcert_t *allowed = zcert_new_from (client_pk, none);
    if (!server || !store || !allowed) {
        zcert_destroy (&server);
        zcert_destroy (&allowed);
        zcertstore_destroy (&store);
        return 1;
    }
    zcertstore_insert (store, &allowed);
    //  zauth takes the store (and destroys it). Started before any bind:
    //  libzmq consults ZAP only if a handler is bound when a client comes.
    zactor_t *auth = zactor_new (zauth, store);
    int pull_port = 0, router_port = 0;
    zsock_t *pull = auth ? s_server_socket (ZMQ_PULL, server, &pull_port) : NULL;
    zsock_t *router = pull ? s_server_socket (ZMQ_ROUTER, server, &router_port) : NULL;
    int rc = 1;
    if (!router) {
        if (!auth)
            zcertstore_destroy (&store);
        goto done;
    }
    snprintf (line, sizeof line, "READY %d %d\n", pull_port, router_port);
    if (s_write_all (STDOUT_FILENO, line))
        goto done;

    static uint8_t buf [2048];
    uint64_t count = 0;
    int64_t first = 0, last = 0;
    zmq_pollitem_t items [] = {
        { zsock_resolve (pull), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (router), 0, ZMQ_POLLIN, 0 }
    };
    //  The parent's end: its stdin pipe closing, or the parent being gone
    //  (then PR_SET_PDEATHSIG's SIGTERM may have landed on a libzmq
    //  thread, so zsys_interrupted is checked on a timer too). Not polled
    //  with the sockets: libzmq's zmq_poll does not report a raw fd's
    //  POLLHUP, and spins on it.
    pid_t parent = getppid ();
    int64_t next_check = 0;
    while (!zsys_interrupted) {
        int64_t now = load_now_us ();
        if (now >= next_check) {
            next_check = now + S_PARENT_CHECK_MS * 1000;
            struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
            if (getppid () != parent || (poll (&pfd, 1, 0) > 0 && pfd.revents)) {
                rc = 0;
                break;
            }
        }
        if (zmq_poll (items, 2, S_PARENT_CHECK_MS) < 0) {
            if (zmq_errno () == EINTR)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN) {
            int n, taken = 0;
            while (taken++ < S_DRAIN_MAX
               && (n = zmq_recv (items [0].socket, buf, sizeof buf, ZMQ_DONTWAIT)) >= 0) {
                if (n == 0) {
                    snprintf (line, sizeof line, "PHASE %" PRIu64 " %" PRId64 " %" PRId64 "\n",
                              count, first, last);
                    if (s_write_all (STDOUT_FILENO, line))
                        goto done;
                    count = 0;
                    first = last = 0;
                    continue;
                }
                last = load_now_ns ();
                if (count++ == 0)
                    first = last;
            }
        }
        if (items [1].revents & ZMQ_POLLIN) {
            //  [routing id][body] back as it came
            zmq_msg_t id, body;
            zmq_msg_init (&id);
            zmq_msg_init (&body);
            if (zmq_msg_recv (&id, items [1].socket, ZMQ_DONTWAIT) >= 0
            &&  zmq_msg_more (&id) && zmq_msg_recv (&body, items [1].socket, 0) >= 0
            &&  !zmq_msg_more (&body)) {
                zmq_msg_send (&id, items [1].socket, ZMQ_SNDMORE);
                zmq_msg_send (&body, items [1].socket, 0);
            }
            zmq_msg_close (&id);
            zmq_msg_close (&body);
        }
    }
done:
    zsock_destroy (&router);
    zsock_destroy (&pull);
    zactor_destroy (&auth);
    zcert_destroy (&server);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  The sender (parent)                                                    */

typedef struct {
    pid_t pid;
    int to_child;               /* its stdin */
    int from_child;             /* its stdout */
} child_t;

static int
s_child_start (child_t *child, zcert_t *server, zcert_t *client, int *pull_port,
               int *router_port, char *why, size_t why_size)
{
    //  Our own executable, resolved now (valgrind, for one, serves its own
    //  binary as /proc/self/exe to exec but the program's to readlink).
    char exe [PATH_MAX];
    ssize_t exe_len = readlink ("/proc/self/exe", exe, sizeof exe - 1);
    if (exe_len <= 0)
        goto failed;
    exe [exe_len] = '\0';
    int in [2], out [2];
    if (pipe2 (in, O_CLOEXEC))
        goto failed;
    if (pipe2 (out, O_CLOEXEC)) {
        close (in [0]);
        close (in [1]);
        goto failed;
    }
    child->pid = fork ();
    if (child->pid < 0) {
        close (in [0]); close (in [1]); close (out [0]); close (out [1]);
        goto failed;
    }
    if (child->pid == 0) {
        //  Only async-signal-safe calls until exec. dup2 clears CLOEXEC on
        //  the copies; the originals close at exec.
        if (dup2 (in [0], STDIN_FILENO) < 0 || dup2 (out [1], STDOUT_FILENO) < 0)
            _exit (127);
        prctl (PR_SET_PDEATHSIG, SIGTERM);
        execl (exe, exe, LOAD_BASELINE_RECEIVER_CMD, (char *) NULL);
        _exit (127);
    }
    close (in [0]);
    close (out [1]);
    child->to_child = in [1];
    child->from_child = out [0];
    char *keys = zsys_sprintf ("SERVER %s %s\nCLIENT %s\n", zcert_public_txt (server),
                               zcert_secret_txt (server), zcert_public_txt (client));
    int rc = keys ? s_write_all (child->to_child, keys) : -1;
    if (keys) {
        sodium_memzero (keys, strlen (keys));
        zstr_free (&keys);
    }
    char line [128];
    if (rc || s_read_line (child->from_child, line, sizeof line, S_READY_TIMEOUT_MS)
    ||  sscanf (line, "READY %d %d", pull_port, router_port) != 2) {
        snprintf (why, why_size, "the baseline receiver (a child ami-load) did not start");
        return -1;
    }
    return 0;
failed:
    snprintf (why, why_size, "cannot start the baseline receiver: %s", strerror (errno));
    return -1;
}

static void
s_child_stop (child_t *child)
{
    if (child->to_child >= 0)
        close (child->to_child);
    if (child->from_child >= 0)
        close (child->from_child);
    child->to_child = child->from_child = -1;
    if (child->pid <= 0)
        return;
    int64_t deadline = load_now_us () + S_EXIT_TIMEOUT_MS * 1000;
    while (waitpid (child->pid, NULL, WNOHANG) == 0) {
        if (load_now_us () >= deadline) {
            kill (child->pid, SIGKILL);
            waitpid (child->pid, NULL, 0);
            break;
        }
        //  Polling a child's exit: there is nothing else to wait on.
        zclock_sleep (10);
    }
    child->pid = 0;
}

static zsock_t *
s_client_socket (int type, zcert_t *client, zcert_t *server, int port)
{
    zsock_t *sock = zsock_new (type);
    if (!sock)
        return NULL;
    zsock_set_linger (sock, 0);
    zsock_set_sndtimeo (sock, S_IO_TIMEOUT_MS);
    zsock_set_rcvtimeo (sock, S_IO_TIMEOUT_MS);
    zcert_apply (client, sock);
    zsock_set_curve_serverkey (sock, zcert_public_txt (server));
    if (zsock_connect (sock, "tcp://127.0.0.1:%d", port) != 0)
        zsock_destroy (&sock);
    return sock;
}

static int
s_push_pull (zsock_t *push, child_t *child, size_t size, int64_t seconds_ms,
             load_push_pull_t *out, char *why, size_t why_size)
{
    uint8_t buf [1024];
    assert (size <= sizeof buf);
    memset (buf, 'x', size);
    void *sock = zsock_resolve (push);
    int64_t end = load_now_us () + seconds_ms * 1000;
    for (uint64_t sent = 1; ; sent++) {
        if (zmq_send (sock, buf, size, 0) != (int) size) {
            snprintf (why, why_size, "PUSH %zu bytes: %s", size,
                      zmq_errno () == EAGAIN ? "the receiver stopped taking messages"
                                             : zmq_strerror (zmq_errno ()));
            return -1;
        }
        if (sent % S_CLOCK_EVERY == 0 && (load_now_us () >= end || zsys_interrupted))
            break;
    }
    char line [128];
    uint64_t count = 0;
    int64_t first = 0, last = 0;
    if (zmq_send (sock, "", 0, 0) != 0
    ||  s_read_line (child->from_child, line, sizeof line, S_DRAIN_TIMEOUT_MS)
    ||  sscanf (line, "PHASE %" SCNu64 " %" SCNd64 " %" SCNd64, &count, &first, &last) != 3
    ||  count < 2 || last <= first) {
        snprintf (why, why_size, "PUSH->PULL %zu bytes: the receiver reported no result", size);
        return -1;
    }
    out->bytes = size;
    out->messages = count;
    out->seconds = (double) (last - first) / 1e9;
    out->per_second = (double) (count - 1) / out->seconds;
    return 0;
}

static int
s_echo (zsock_t *dealer, int64_t seconds_ms, load_baseline_result_t *r,
        char *why, size_t why_size)
{
    uint8_t buf [LOAD_BASELINE_ECHO_BYTES], back [LOAD_BASELINE_ECHO_BYTES + 1];
    memset (buf, 'e', sizeof buf);
    void *sock = zsock_resolve (dealer);
    //  The first round trip includes the CURVE handshake and ZAP: not counted.
    if (zmq_send (sock, buf, sizeof buf, 0) != (int) sizeof buf
    ||  zmq_recv (sock, back, sizeof back, 0) != (int) sizeof buf) {
        snprintf (why, why_size, "DEALER->ROUTER echo: no answer (%s)", zmq_strerror (zmq_errno ()));
        return -1;
    }
    int64_t start = load_now_ns ();
    int64_t end = start + seconds_ms * 1000000;
    int64_t now = start;
    while (now < end && !zsys_interrupted) {
        int64_t t0 = now;
        if (zmq_send (sock, buf, sizeof buf, 0) != (int) sizeof buf
        ||  zmq_recv (sock, back, sizeof back, 0) != (int) sizeof buf) {
            snprintf (why, why_size, "DEALER->ROUTER echo: %s", zmq_strerror (zmq_errno ()));
            return -1;
        }
        now = load_now_ns ();
        if (load_samples_add (&r->echo_ns, now - t0)) {
            snprintf (why, why_size, "out of memory");
            return -1;
        }
    }
    r->echo_bytes = sizeof buf;
    r->round_trips = r->echo_ns.count;
    r->echo_seconds = (double) (now - start) / 1e9;
    return 0;
}

int
load_baseline_run (int64_t seconds_ms, load_baseline_result_t *r)
{
    r->seconds_each = (double) seconds_ms / 1000.0;
    //  A receiver that dies must not kill us with SIGPIPE on its stdin.
    signal (SIGPIPE, SIG_IGN);
    zcert_t *server = zcert_new ();
    zcert_t *client = zcert_new ();
    child_t child = { .pid = 0, .to_child = -1, .from_child = -1 };
    zsock_t *push = NULL, *dealer = NULL;
    int pull_port = 0, router_port = 0, rc = -1;
    if (!server || !client) {
        snprintf (r->why, sizeof r->why, "cannot generate CURVE keys");
        goto done;
    }
    if (s_child_start (&child, server, client, &pull_port, &router_port, r->why, sizeof r->why))
        goto done;
    push = s_client_socket (ZMQ_PUSH, client, server, pull_port);
    dealer = s_client_socket (ZMQ_DEALER, client, server, router_port);
    if (!push || !dealer) {
        snprintf (r->why, sizeof r->why, "cannot connect to the baseline receiver");
        goto done;
    }
    for (int i = 0; i < LOAD_BASELINE_SIZES; i++)
        if (s_push_pull (push, &child, s_sizes [i], seconds_ms, &r->push_pull [i],
                         r->why, sizeof r->why))
            goto done;
    if (s_echo (dealer, seconds_ms, r, r->why, sizeof r->why))
        goto done;
    rc = 0;
done:
    if (rc && zsys_interrupted)
        snprintf (r->why, sizeof r->why, "interrupted");
    zsock_destroy (&push);
    zsock_destroy (&dealer);
    s_child_stop (&child);
    zcert_destroy (&server);
    zcert_destroy (&client);
    return rc;
}

void
load_baseline_result_free (load_baseline_result_t *result)
{
    load_samples_free (&result->echo_ns);
}
