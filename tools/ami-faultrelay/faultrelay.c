/*  faultrelay.c - the fault-injecting TCP relay (faultrelay.h is the manual).

    Design: ONE thread, ONE poll() loop over every socket: the listener,
    the control sockets, a wake pipe, and both sides of every relayed
    connection pair. Why not a thread per connection or libzmq: faults are
    global state (delay, rate, stall, refuse) changed by commands that must
    take effect at a known moment ("stall" then "stats" must see nothing
    move), and `reset` must cut every pair before its reply is sent. With a
    single loop that is true by construction, with no locks, and the
    timing faults are just deadlines folded into poll's timeout. The load
    is a few test links, far below what one loop moves. It is not a zguide
    pattern: it sits under ZeroMQ, below ZMTP, as a piece of bad network.

    Each pair has two directions (client -> upstream, upstream -> client).
    A direction is a FIFO of chunks, each one recv() worth of bytes stamped
    with the time it may leave (read time + delay +/- jitter, never earlier
    than the chunk before it, so order is kept). Every loop turn pumps each
    direction: while the head chunk is due, forwarding is not stalled, the
    token bucket has bytes and the destination takes them, send. EOF is
    forwarded (shutdown SHUT_WR) once everything before it was delivered;
    a pair whose two directions are both shut is closed. A socket error or
    RST on one side resets the other side too (a relay that turned an RST
    into a clean FIN would hide the very fault being injected).

    Memory: each direction holds at most FAULTRELAY_BUFFER_MAX bytes,
    chunk headers included; when full, its source is no longer polled for
    input, so the kernel buffers fill and TCP flow control stops the
    sender (that is also how `stall` pushes back). Nothing else grows with
    traffic: pairs, control clients and the pollfd array are allocated
    once, at their configured maximum.

    Signals and other threads talk to the loop through a non-blocking pipe
    (one byte per request), the only async-signal-safe way in.
*/
#include "faultrelay.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ami_log.h"

/*  The token bucket holds at most this much time's worth of bytes, so a
    limited link never sends more than rate x (elapsed + 100 ms). Why
    100 ms: small enough that a transfer's time is N / rate within 0.1 s,
    large enough that a 1 kB/s link still moves 100-byte pieces. */
#define FR_BURST_MS         100

/*  A limited direction waits until it may send at least this fraction of
    its burst (or the whole head chunk): why 1/10: at most ~100 wakes a
    second per direction, instead of one per byte at low rates. */
#define FR_MIN_SEND_DIV     10

/*  listen() backlog. Why 64: connections beyond max_conns wait there (the
    listener is not polled while the relay is full); a reconnect storm of
    a few dozen ZeroMQ sockets fits. */
#define FR_BACKLOG          64

//  Requests written to the wake pipe
#define FR_WAKE_STOP        'T'
#define FR_WAKE_STALL       'S'
#define FR_WAKE_RESET       'R'

//  Fixed slots at the start of the pollfd array
#define FR_PFD_WAKE         0
#define FR_PFD_LISTEN       1
#define FR_PFD_CTL_UNIX     2
#define FR_PFD_CTL_TCP      3
#define FR_PFD_CONTROLS     4
#define FR_PFD_PAIRS        (FR_PFD_CONTROLS + FAULTRELAY_CONTROL_MAX)

typedef struct fr_chunk_t {
    struct fr_chunk_t *next;
    int64_t due_us;             //  may be sent from this time on
    size_t size;                //  bytes in data
    size_t sent;                //  bytes already sent
    uint8_t data [];
} fr_chunk_t;

typedef struct {
    fr_chunk_t *head, *tail;
    size_t used;                //  bytes held, headers included
    int64_t last_due_us;        //  due time of the newest chunk (order)
    bool src_eof;               //  source sent FIN
    bool dst_shut;              //  FIN forwarded to the destination
    bool dst_blocked;           //  destination said EAGAIN: wait POLLOUT
    double tokens;              //  token bucket (bytes)
    int64_t refill_us;          //  last refill
} fr_dir_t;

//  side 0 = client (accepted), side 1 = upstream. Direction d reads from
//  fd [d] and writes to fd [1 - d]: dir [0] is client -> upstream.
typedef struct {
    int fd [2];
    bool connecting;            //  upstream connect() in progress
    bool dead;                  //  closed; removed at the next compaction
    fr_dir_t dir [2];
    unsigned id;                //  for logs
} fr_pair_t;

typedef struct {
    int fd;                     //  -1 = free slot
    size_t len;
    char line [FAULTRELAY_CONTROL_LINE];
} fr_control_t;

struct faultrelay_t {
    char *listen_text, *to_text, *control_path;
    int listen_fd, ctl_unix_fd, ctl_tcp_fd;
    int listen_port, control_port;
    struct sockaddr_storage upstream;
    socklen_t upstream_len;
    int wake [2];               //  [0] read end (loop), [1] write end
    fr_pair_t *pairs;           //  [0, npairs) in use
    size_t npairs, max_pairs;
    fr_control_t controls [FAULTRELAY_CONTROL_MAX];
    struct pollfd *pfd;
    size_t npfd;
    //  Faults, changed by commands
    int delay_ms, jitter_ms;
    int64_t rate;
    bool stalled, refusing;
    //  Counters (see the stats line in faultrelay.h)
    uint64_t accepted, closed, resets, aborts, refused, bytes [2];
    uint64_t rng;               //  xorshift64 state for jitter
    //  Aborts and failed connects are logged through a limiter: a ZeroMQ
    //  peer reconnects every 100 ms into a dead upstream
    ami_log_limit_t limit;
    unsigned next_id;
    bool stop;
};

static const char *s_side_name [2] = { "client", "upstream" };

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t
s_random (faultrelay_t *self)
{
    //  xorshift64: jitter needs spread, not secrecy
    uint64_t x = self->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return self->rng = x;
}

static void
s_close_rst (int fd)
{
    if (fd < 0)
        return;
    //  SO_LINGER with a zero timeout: close() sends RST, not FIN
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    setsockopt (fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close (fd);
}

//  --------------------------------------------------------------------------
//  Configuration and addresses

void
faultrelay_config_default (faultrelay_config_t *config)
{
    memset (config, 0, sizeof *config);
    config->control_port = -1;
    config->max_conns = FAULTRELAY_MAX_CONNS_DEFAULT;
}

int
faultrelay_number (const char *text, long long max, long long *out)
{
    if (!text || !*text || strlen (text) > 18)
        return -1;
    long long value = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        value = value * 10 + (*p - '0');
    }
    if (value > max)
        return -1;
    *out = value;
    return 0;
}

int
faultrelay_parse_address (const char *text, char *host, size_t host_cap, int *port)
{
    if (!text || !host || host_cap == 0 || !port)
        return -1;
    const char *port_text;
    const char *host_start = text;
    size_t host_len;
    if (text [0] == '[') {
        const char *close = strchr (text, ']');
        if (!close || close [1] != ':')
            return -1;
        host_start = text + 1;
        host_len = (size_t) (close - host_start);
        port_text = close + 2;
    }
    else {
        const char *colon = strrchr (text, ':');
        if (colon && strchr (text, ':') != colon)
            return -1;          //  bare IPv6 without brackets: ambiguous
        if (colon) {
            host_len = (size_t) (colon - text);
            port_text = colon + 1;
        }
        else {
            host_len = 0;
            port_text = text;
        }
    }
    long long value;
    if (faultrelay_number (port_text, 65535, &value))
        return -1;
    if (host_len == 0) {
        host_start = FAULTRELAY_DEFAULT_HOST;
        host_len = strlen (FAULTRELAY_DEFAULT_HOST);
    }
    if (host_len >= host_cap)
        return -1;
    memcpy (host, host_start, host_len);
    host [host_len] = '\0';
    *port = (int) value;
    return 0;
}

//  Resolve text into one socket address. Returns 0 or -1 (logged).
static int
s_resolve (const char *what, const char *text, bool passive,
           struct sockaddr_storage *addr, socklen_t *addr_len, int *port)
{
    char host [256];
    if (faultrelay_parse_address (text, host, sizeof host, port)) {
        ami_log_error ("%s: not an address HOST:PORT (PORT 0..65535): '%s'", what, text);
        return -1;
    }
    char service [16];
    snprintf (service, sizeof service, "%d", *port);
    struct addrinfo hints = { 0 };
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    struct addrinfo *result = NULL;
    int rc = getaddrinfo (host, service, &hints, &result);
    if (rc != 0 || !result) {
        ami_log_error ("%s: cannot resolve '%s': %s", what, host, gai_strerror (rc));
        if (result)
            freeaddrinfo (result);
        return -1;
    }
    memcpy (addr, result->ai_addr, result->ai_addrlen);
    *addr_len = result->ai_addrlen;
    freeaddrinfo (result);
    return 0;
}

static int
s_bound_port (int fd)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof addr;
    if (getsockname (fd, (struct sockaddr *) &addr, &len))
        return -1;
    if (addr.ss_family == AF_INET)
        return ntohs (((struct sockaddr_in *) &addr)->sin_port);
    if (addr.ss_family == AF_INET6)
        return ntohs (((struct sockaddr_in6 *) &addr)->sin6_port);
    return -1;
}

static int
s_listen_tcp (const char *what, const struct sockaddr *addr, socklen_t len, const char *text)
{
    int fd = socket (addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ami_log_error ("%s %s: socket: %s", what, text, strerror (errno));
        return -1;
    }
    int one = 1;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind (fd, addr, len) || listen (fd, FR_BACKLOG)) {
        ami_log_error ("%s %s: cannot listen: %s", what, text, strerror (errno));
        close (fd);
        return -1;
    }
    return fd;
}

static int
s_listen_unix (const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen (path) >= sizeof addr.sun_path) {
        ami_log_error ("control socket path too long (max %zu bytes): %s",
                       sizeof addr.sun_path - 1, path);
        return -1;
    }
    strcpy (addr.sun_path, path);
    struct stat st;
    if (lstat (path, &st) == 0) {
        if (!S_ISSOCK (st.st_mode)) {
            ami_log_error ("control socket %s: exists and is not a socket", path);
            return -1;
        }
        //  A live relay answers on it: refuse. A stale file is replaced.
        int probe = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            int rc = connect (probe, (struct sockaddr *) &addr, sizeof addr);
            close (probe);
            if (rc == 0) {
                ami_log_error ("control socket %s: in use by another process", path);
                return -1;
            }
        }
        unlink (path);
    }
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ami_log_error ("control socket %s: %s", path, strerror (errno));
        return -1;
    }
    if (bind (fd, (struct sockaddr *) &addr, sizeof addr)) {
        ami_log_error ("control socket %s: cannot bind: %s", path, strerror (errno));
        close (fd);
        return -1;
    }
    //  The control socket can cut every relayed link: owner only
    if (chmod (path, 0600) || listen (fd, FAULTRELAY_CONTROL_MAX)) {
        ami_log_error ("control socket %s: %s", path, strerror (errno));
        close (fd);
        unlink (path);
        return -1;
    }
    return fd;
}

//  --------------------------------------------------------------------------
//  Constructor and destructor

faultrelay_t *
faultrelay_new (const faultrelay_config_t *config)
{
    if (!config || !config->listen || !config->to) {
        ami_log_error ("faultrelay: --listen and --to are required");
        return NULL;
    }
    if (config->delay_ms < 0 || config->delay_ms > FAULTRELAY_DELAY_MAX_MS
    ||  config->jitter_ms < 0 || config->jitter_ms > FAULTRELAY_DELAY_MAX_MS) {
        ami_log_error ("faultrelay: delay and jitter must be 0..%d ms", FAULTRELAY_DELAY_MAX_MS);
        return NULL;
    }
    if (config->rate < 0) {
        ami_log_error ("faultrelay: rate must be >= 0 bytes/s");
        return NULL;
    }
    if (config->max_conns < 1 || config->max_conns > FAULTRELAY_MAX_CONNS_LIMIT) {
        ami_log_error ("faultrelay: max-conns must be 1..%d", FAULTRELAY_MAX_CONNS_LIMIT);
        return NULL;
    }
    if (config->control_port < -1 || config->control_port > 65535) {
        ami_log_error ("faultrelay: control port must be 0..65535");
        return NULL;
    }
    faultrelay_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->listen_fd = self->ctl_unix_fd = self->ctl_tcp_fd = -1;
    self->wake [0] = self->wake [1] = -1;
    self->control_port = -1;
    for (size_t i = 0; i < FAULTRELAY_CONTROL_MAX; i++)
        self->controls [i].fd = -1;
    self->delay_ms = config->delay_ms;
    self->jitter_ms = config->jitter_ms;
    self->rate = config->rate;
    self->max_pairs = (size_t) config->max_conns;
    //  Why 20: a burst that shows what is going on, then a count per second
    self->limit = (ami_log_limit_t) AMI_LOG_LIMIT_INIT (20);
    self->rng = (uint64_t) s_now_us () * 0x9E3779B97F4A7C15ULL | 1;
    self->listen_text = strdup (config->listen);
    self->to_text = strdup (config->to);
    self->pairs = calloc (self->max_pairs, sizeof *self->pairs);
    self->npfd = FR_PFD_PAIRS + 2 * self->max_pairs;
    self->pfd = calloc (self->npfd, sizeof *self->pfd);
    if (!self->listen_text || !self->to_text || !self->pairs || !self->pfd)
        goto failed;

    if (pipe2 (self->wake, O_NONBLOCK | O_CLOEXEC)) {
        ami_log_error ("faultrelay: pipe: %s", strerror (errno));
        goto failed;
    }
    int upstream_port;
    if (s_resolve ("--to", config->to, false, &self->upstream, &self->upstream_len,
                   &upstream_port))
        goto failed;
    if (upstream_port == 0) {
        ami_log_error ("--to: port 0 is not a destination: '%s'", config->to);
        goto failed;
    }
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int port;
    if (s_resolve ("--listen", config->listen, true, &addr, &addr_len, &port))
        goto failed;
    self->listen_fd = s_listen_tcp ("listen", (struct sockaddr *) &addr, addr_len,
                                    config->listen);
    if (self->listen_fd < 0)
        goto failed;
    self->listen_port = s_bound_port (self->listen_fd);

    if (config->control_port >= 0) {
        //  Loopback only: the control port can cut every link
        struct sockaddr_in ctl = { .sin_family = AF_INET,
                                   .sin_port = htons ((uint16_t) config->control_port),
                                   .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
        self->ctl_tcp_fd = s_listen_tcp ("control port", (struct sockaddr *) &ctl,
                                         sizeof ctl, "127.0.0.1");
        if (self->ctl_tcp_fd < 0)
            goto failed;
        self->control_port = s_bound_port (self->ctl_tcp_fd);
    }
    if (config->control_path) {
        self->ctl_unix_fd = s_listen_unix (config->control_path);
        if (self->ctl_unix_fd < 0)
            goto failed;
        self->control_path = strdup (config->control_path);
        if (!self->control_path) {
            close (self->ctl_unix_fd);
            self->ctl_unix_fd = -1;
            unlink (config->control_path);
            goto failed;
        }
    }
    ami_log_info ("relaying %s (port %d) -> %s; delay %d ms, jitter %d ms, rate %" PRId64
                  " B/s (0 = unlimited), at most %d connections",
                  config->listen, self->listen_port, config->to, self->delay_ms,
                  self->jitter_ms, self->rate, config->max_conns);
    if (self->control_port >= 0)
        ami_log_info ("control port 127.0.0.1:%d", self->control_port);
    if (self->control_path)
        ami_log_info ("control socket %s", self->control_path);
    return self;

failed:
    faultrelay_destroy (&self);
    return NULL;
}

static void
s_dir_clear (fr_dir_t *dir)
{
    while (dir->head) {
        fr_chunk_t *next = dir->head->next;
        free (dir->head);
        dir->head = next;
    }
    dir->tail = NULL;
    dir->used = 0;
}

//  End a pair with RST on both sides. counter: which stat counts it.
static void
s_pair_kill (fr_pair_t *pair, uint64_t *counter)
{
    if (pair->dead)
        return;
    s_close_rst (pair->fd [0]);
    s_close_rst (pair->fd [1]);
    pair->fd [0] = pair->fd [1] = -1;
    s_dir_clear (&pair->dir [0]);
    s_dir_clear (&pair->dir [1]);
    pair->dead = true;
    if (counter)
        (*counter)++;
}

static void
s_control_close (fr_control_t *control)
{
    if (control->fd >= 0)
        close (control->fd);
    control->fd = -1;
    control->len = 0;
}

void
faultrelay_destroy (faultrelay_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    faultrelay_t *self = *self_p;
    if (self->pairs)
        for (size_t i = 0; i < self->npairs; i++)
            s_pair_kill (&self->pairs [i], NULL);
    for (size_t i = 0; i < FAULTRELAY_CONTROL_MAX; i++)
        s_control_close (&self->controls [i]);
    if (self->listen_fd >= 0)
        close (self->listen_fd);
    if (self->ctl_tcp_fd >= 0)
        close (self->ctl_tcp_fd);
    if (self->ctl_unix_fd >= 0) {
        close (self->ctl_unix_fd);
        unlink (self->control_path);
    }
    if (self->wake [0] >= 0)
        close (self->wake [0]);
    if (self->wake [1] >= 0)
        close (self->wake [1]);
    free (self->pairs);
    free (self->pfd);
    free (self->listen_text);
    free (self->to_text);
    free (self->control_path);
    free (self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Wake pipe: the async-signal-safe way in

static void
s_wake (faultrelay_t *self, char request)
{
    //  write() is async-signal-safe; a full pipe already holds wake-ups
    int saved = errno;
    ssize_t rc = write (self->wake [1], &request, 1);
    (void) rc;
    errno = saved;
}

void
faultrelay_stop (faultrelay_t *self)
{
    s_wake (self, FR_WAKE_STOP);
}

void
faultrelay_toggle_stall (faultrelay_t *self)
{
    s_wake (self, FR_WAKE_STALL);
}

void
faultrelay_signal_reset (faultrelay_t *self)
{
    s_wake (self, FR_WAKE_RESET);
}

int
faultrelay_port (faultrelay_t *self)
{
    return self->listen_port;
}

int
faultrelay_control_port (faultrelay_t *self)
{
    return self->control_port;
}

//  --------------------------------------------------------------------------
//  Faults

static double
s_burst (faultrelay_t *self)
{
    double burst = (double) self->rate * FR_BURST_MS / 1000.0;
    return burst < 1.0 ? 1.0 : burst;
}

static void
s_set_rate (faultrelay_t *self, int64_t rate)
{
    int64_t was = self->rate;
    self->rate = rate;
    int64_t now = s_now_us ();
    double burst = s_burst (self);
    for (size_t i = 0; i < self->npairs; i++)
        for (int d = 0; d < 2; d++) {
            fr_dir_t *dir = &self->pairs [i].dir [d];
            if (was == 0 || dir->tokens > burst)
                dir->tokens = burst;
            dir->refill_us = now;
        }
}

static void
s_set_stall (faultrelay_t *self, bool stalled)
{
    if (self->stalled != stalled)
        ami_log_info ("fault: %s", stalled ? "stall (forwarding stopped)" : "resume");
    self->stalled = stalled;
}

static void
s_reset_all (faultrelay_t *self)
{
    size_t count = 0;
    for (size_t i = 0; i < self->npairs; i++)
        if (!self->pairs [i].dead) {
            s_pair_kill (&self->pairs [i], &self->resets);
            count++;
        }
    ami_log_info ("fault: reset %zu connection(s)", count);
}

//  --------------------------------------------------------------------------
//  Relaying

static bool
s_dir_can_read (fr_dir_t *dir)
{
    return !dir->src_eof
        && dir->used + sizeof (fr_chunk_t) < FAULTRELAY_BUFFER_MAX;
}

//  Read once from the source of direction d. Returns -1 if the pair died.
static int
s_dir_read (faultrelay_t *self, fr_pair_t *pair, int d, int64_t now)
{
    fr_dir_t *dir = &pair->dir [d];
    if (!s_dir_can_read (dir))
        return 0;
    size_t space = FAULTRELAY_BUFFER_MAX - dir->used - sizeof (fr_chunk_t);
    if (space > FAULTRELAY_READ_CHUNK)
        space = FAULTRELAY_READ_CHUNK;
    uint8_t buffer [FAULTRELAY_READ_CHUNK];
    ssize_t rc = recv (pair->fd [d], buffer, space, MSG_DONTWAIT);
    if (rc < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        ami_log_warn_limited (&self->limit, "relay",
                              "pair %u: %s: %s; resetting the %s", pair->id,
                              s_side_name [d], strerror (errno), s_side_name [1 - d]);
        s_pair_kill (pair, &self->aborts);
        return -1;
    }
    if (rc == 0) {
        ami_log_debug ("pair %u: %s sent EOF", pair->id, s_side_name [d]);
        dir->src_eof = true;
        return 0;
    }
    fr_chunk_t *chunk = malloc (sizeof *chunk + (size_t) rc);
    if (!chunk) {
        ami_log_error ("pair %u: out of memory; resetting it", pair->id);
        s_pair_kill (pair, &self->aborts);
        return -1;
    }
    int64_t hold_ms = self->delay_ms;
    if (self->jitter_ms > 0)
        hold_ms += (int64_t) (s_random (self) % (2 * (uint64_t) self->jitter_ms + 1))
                 - self->jitter_ms;
    int64_t due = now + (hold_ms > 0 ? hold_ms * 1000 : 0);
    if (due < dir->last_due_us)
        due = dir->last_due_us;     //  jitter never reorders
    dir->last_due_us = due;
    chunk->next = NULL;
    chunk->due_us = due;
    chunk->size = (size_t) rc;
    chunk->sent = 0;
    memcpy (chunk->data, buffer, (size_t) rc);
    if (dir->tail)
        dir->tail->next = chunk;
    else
        dir->head = chunk;
    dir->tail = chunk;
    dir->used += sizeof *chunk + (size_t) rc;
    return 0;
}

static void
s_wake_at (int64_t *wake_at, int64_t when)
{
    if (when < *wake_at)
        *wake_at = when;
}

//  Send what is due in direction d. Returns -1 if the pair died.
static int
s_dir_pump (faultrelay_t *self, fr_pair_t *pair, int d, int64_t now, int64_t *wake_at)
{
    fr_dir_t *dir = &pair->dir [d];
    int dst = pair->fd [1 - d];
    if (self->stalled)
        return 0;
    while (dir->head && !dir->dst_blocked) {
        fr_chunk_t *chunk = dir->head;
        if (chunk->due_us > now) {
            s_wake_at (wake_at, chunk->due_us);
            break;
        }
        size_t want = chunk->size - chunk->sent;
        if (self->rate > 0) {
            double burst = s_burst (self);
            dir->tokens += (double) (now - dir->refill_us) * (double) self->rate / 1e6;
            if (dir->tokens > burst)
                dir->tokens = burst;
            dir->refill_us = now;
            double least = burst / FR_MIN_SEND_DIV;
            if (least < 1.0)
                least = 1.0;
            if (least > (double) want)
                least = (double) want;
            if (dir->tokens < least) {
                int64_t wait = (int64_t) ((least - dir->tokens) * 1e6 / (double) self->rate) + 1;
                s_wake_at (wake_at, now + wait);
                break;
            }
            if ((double) want > dir->tokens)
                want = (size_t) dir->tokens;
        }
        ssize_t rc = send (dst, chunk->data + chunk->sent, want, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                dir->dst_blocked = true;
                break;
            }
            ami_log_warn_limited (&self->limit, "relay",
                                  "pair %u: %s: %s; resetting the %s", pair->id,
                                  s_side_name [1 - d], strerror (errno), s_side_name [d]);
            s_pair_kill (pair, &self->aborts);
            return -1;
        }
        chunk->sent += (size_t) rc;
        self->bytes [d] += (uint64_t) rc;
        if (self->rate > 0)
            dir->tokens -= (double) rc;
        if (chunk->sent == chunk->size) {
            dir->head = chunk->next;
            if (!dir->head)
                dir->tail = NULL;
            dir->used -= sizeof *chunk + chunk->size;
            free (chunk);
        }
    }
    if (!dir->head && dir->src_eof && !dir->dst_shut) {
        shutdown (dst, SHUT_WR);
        dir->dst_shut = true;
        ami_log_debug ("pair %u: EOF forwarded to the %s", pair->id, s_side_name [1 - d]);
    }
    return 0;
}

static void
s_pump_all (faultrelay_t *self, int64_t now, int64_t *wake_at)
{
    for (size_t i = 0; i < self->npairs; i++) {
        fr_pair_t *pair = &self->pairs [i];
        if (pair->dead || pair->connecting)
            continue;
        if (s_dir_pump (self, pair, 0, now, wake_at)
        ||  s_dir_pump (self, pair, 1, now, wake_at))
            continue;
        if (pair->dir [0].dst_shut && pair->dir [1].dst_shut) {
            //  Both sides said EOF and got everything: a normal close
            close (pair->fd [0]);
            close (pair->fd [1]);
            pair->fd [0] = pair->fd [1] = -1;
            pair->dead = true;
            self->closed++;
            ami_log_debug ("pair %u: closed", pair->id);
        }
    }
}

//  Drop dead pairs (keeps [0, npairs) dense; order does not matter)
static void
s_compact (faultrelay_t *self)
{
    size_t i = 0;
    while (i < self->npairs) {
        if (self->pairs [i].dead) {
            self->pairs [i] = self->pairs [self->npairs - 1];
            self->npairs--;
        }
        else
            i++;
    }
}

static void
s_set_nodelay (int fd)
{
    //  A relay must not add Nagle's delay to small writes
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void
s_accept (faultrelay_t *self)
{
    //  A few per wake, so one busy listener cannot starve the pairs
    for (int round = 0; round < 16; round++) {
        if (!self->refusing && self->npairs >= self->max_pairs)
            return;
        int fd = accept4 (self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
            &&  errno != ECONNABORTED)
                ami_log_warn ("accept: %s", strerror (errno));
            return;
        }
        if (self->refusing) {
            s_close_rst (fd);
            self->refused++;
            ami_log_debug ("refused a connection");
            continue;
        }
        fr_pair_t *pair = &self->pairs [self->npairs++];
        memset (pair, 0, sizeof *pair);
        pair->id = ++self->next_id;
        pair->fd [0] = fd;
        pair->fd [1] = -1;
        int64_t now = s_now_us ();
        for (int d = 0; d < 2; d++) {
            pair->dir [d].tokens = s_burst (self);
            pair->dir [d].refill_us = now;
        }
        self->accepted++;
        s_set_nodelay (fd);
        int up = socket (self->upstream.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (up < 0) {
            ami_log_warn_limited (&self->limit, "relay",
                                  "pair %u: upstream socket: %s", pair->id,
                                  strerror (errno));
            s_pair_kill (pair, &self->aborts);
            continue;
        }
        pair->fd [1] = up;
        s_set_nodelay (up);
        if (connect (up, (struct sockaddr *) &self->upstream, self->upstream_len) == 0)
            pair->connecting = false;
        else
        if (errno == EINPROGRESS)
            pair->connecting = true;
        else {
            ami_log_warn_limited (&self->limit, "relay",
                                  "pair %u: connect %s: %s", pair->id, self->to_text,
                                  strerror (errno));
            s_pair_kill (pair, &self->aborts);
            continue;
        }
        ami_log_debug ("pair %u: accepted", pair->id);
    }
}

static void
s_connected (faultrelay_t *self, fr_pair_t *pair)
{
    int error = 0;
    socklen_t len = sizeof error;
    if (getsockopt (pair->fd [1], SOL_SOCKET, SO_ERROR, &error, &len))
        error = errno;
    if (error) {
        ami_log_warn_limited (&self->limit, "relay",
                              "pair %u: connect %s: %s", pair->id, self->to_text,
                              strerror (error));
        s_pair_kill (pair, &self->aborts);
    }
    else {
        pair->connecting = false;
        ami_log_debug ("pair %u: upstream connected", pair->id);
    }
}

//  --------------------------------------------------------------------------
//  Control protocol

static void
s_stats_line (faultrelay_t *self, char *out, size_t cap)
{
    size_t active = 0;
    for (size_t i = 0; i < self->npairs; i++)
        if (!self->pairs [i].dead)
            active++;
    snprintf (out, cap,
              "accepted=%" PRIu64 " active=%zu closed=%" PRIu64 " resets=%" PRIu64
              " aborts=%" PRIu64 " refused=%" PRIu64 " bytes_c2u=%" PRIu64
              " bytes_u2c=%" PRIu64 " delay=%d jitter=%d rate=%" PRId64
              " stalled=%d refusing=%d",
              self->accepted, active, self->closed, self->resets, self->aborts,
              self->refused, self->bytes [0], self->bytes [1], self->delay_ms,
              self->jitter_ms, self->rate, self->stalled ? 1 : 0, self->refusing ? 1 : 0);
}

//  Run one command line; write the reply (without newline) into reply.
//  Returns false if the control connection should be closed (quit).
static bool
s_command (faultrelay_t *self, char *line, char *reply, size_t cap)
{
    char *words [4] = { 0 };
    int nwords = 0;
    char *save = NULL;
    for (char *w = strtok_r (line, " \t", &save); w; w = strtok_r (NULL, " \t", &save)) {
        if (nwords == 4) {
            snprintf (reply, cap, "ERR too many words");
            return true;
        }
        words [nwords++] = w;
    }
    snprintf (reply, cap, "OK");
    if (nwords == 0) {
        snprintf (reply, cap, "ERR empty command");
        return true;
    }
    const char *verb = words [0];
    long long a, b;
    if (strcmp (verb, "delay") == 0 && (nwords == 2 || nwords == 3)) {
        if (faultrelay_number (words [1], FAULTRELAY_DELAY_MAX_MS, &a)
        ||  (nwords == 3 && faultrelay_number (words [2], FAULTRELAY_DELAY_MAX_MS, &b))) {
            snprintf (reply, cap, "ERR delay: 0..%d ms", FAULTRELAY_DELAY_MAX_MS);
            return true;
        }
        self->delay_ms = (int) a;
        if (nwords == 3)
            self->jitter_ms = (int) b;
        ami_log_info ("fault: delay %d ms, jitter %d ms", self->delay_ms, self->jitter_ms);
    }
    else
    if (strcmp (verb, "jitter") == 0 && nwords == 2) {
        if (faultrelay_number (words [1], FAULTRELAY_DELAY_MAX_MS, &a)) {
            snprintf (reply, cap, "ERR jitter: 0..%d ms", FAULTRELAY_DELAY_MAX_MS);
            return true;
        }
        self->jitter_ms = (int) a;
        ami_log_info ("fault: delay %d ms, jitter %d ms", self->delay_ms, self->jitter_ms);
    }
    else
    if (strcmp (verb, "rate") == 0 && nwords == 2) {
        //  Why 10^12: a ceiling no link reaches, far from overflow
        if (faultrelay_number (words [1], 1000000000000LL, &a)) {
            snprintf (reply, cap, "ERR rate: bytes per second, 0 (unlimited)..10^12");
            return true;
        }
        s_set_rate (self, (int64_t) a);
        ami_log_info ("fault: rate %" PRId64 " B/s%s", self->rate,
                      self->rate ? "" : " (unlimited)");
    }
    else
    if (strcmp (verb, "stall") == 0 && nwords == 1)
        s_set_stall (self, true);
    else
    if (strcmp (verb, "resume") == 0 && nwords == 1)
        s_set_stall (self, false);
    else
    if (strcmp (verb, "reset") == 0 && nwords == 1)
        s_reset_all (self);
    else
    if (strcmp (verb, "refuse") == 0 && nwords == 1) {
        if (!self->refusing)
            ami_log_info ("fault: refuse new connections");
        self->refusing = true;
    }
    else
    if (strcmp (verb, "pass") == 0 && nwords == 1) {
        if (self->refusing)
            ami_log_info ("fault: pass new connections");
        self->refusing = false;
    }
    else
    if (strcmp (verb, "stats") == 0 && nwords == 1)
        s_stats_line (self, reply, cap);
    else
    if (strcmp (verb, "help") == 0 && nwords == 1)
        snprintf (reply, cap, "OK commands: delay MS [JITTER], jitter MS, rate BPS, "
                              "stall, resume, reset, refuse, pass, stats, quit");
    else
    if (strcmp (verb, "quit") == 0 && nwords == 1)
        return false;
    else
        snprintf (reply, cap, "ERR unknown command or wrong arguments (try help)");
    return true;
}

static void
s_control_reply (fr_control_t *control, const char *reply)
{
    char out [FAULTRELAY_CONTROL_LINE * 2];
    int len = snprintf (out, sizeof out, "%s\n", reply);
    //  Replies are one short line and a control client reads them: a
    //  socket that cannot take one at once is a stuck client, dropped.
    ssize_t rc = send (control->fd, out, (size_t) len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (rc != len)
        s_control_close (control);
}

static void
s_control_read (faultrelay_t *self, fr_control_t *control)
{
    char buffer [FAULTRELAY_CONTROL_LINE];
    ssize_t rc = recv (control->fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (rc <= 0) {
        s_control_close (control);
        return;
    }
    for (ssize_t i = 0; i < rc && control->fd >= 0; i++) {
        char c = buffer [i];
        if (c == '\n') {
            if (control->len > 0 && control->line [control->len - 1] == '\r')
                control->len--;
            control->line [control->len] = '\0';
            control->len = 0;
            char reply [FAULTRELAY_CONTROL_LINE];
            if (s_command (self, control->line, reply, sizeof reply))
                s_control_reply (control, reply);
            else
                s_control_close (control);
        }
        else
        if (control->len + 1 >= sizeof control->line) {
            s_control_reply (control, "ERR line too long");
            s_control_close (control);
        }
        else
            control->line [control->len++] = c;
    }
}

static void
s_control_accept (faultrelay_t *self, int listener)
{
    int fd = accept4 (listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    for (size_t i = 0; i < FAULTRELAY_CONTROL_MAX; i++)
        if (self->controls [i].fd < 0) {
            self->controls [i].fd = fd;
            self->controls [i].len = 0;
            return;
        }
    const char *busy = "ERR too many control connections\n";
    ssize_t rc = send (fd, busy, strlen (busy), MSG_DONTWAIT | MSG_NOSIGNAL);
    (void) rc;
    close (fd);
}

//  --------------------------------------------------------------------------
//  The loop

static void
s_wake_read (faultrelay_t *self)
{
    char requests [64];
    ssize_t rc;
    while ((rc = read (self->wake [0], requests, sizeof requests)) > 0)
        for (ssize_t i = 0; i < rc; i++) {
            if (requests [i] == FR_WAKE_STOP)
                self->stop = true;
            else
            if (requests [i] == FR_WAKE_STALL)
                s_set_stall (self, !self->stalled);
            else
            if (requests [i] == FR_WAKE_RESET)
                s_reset_all (self);
        }
}

//  What to poll for on side s of a pair; -1 fd means "not now"
static void
s_pair_poll (fr_pair_t *pair, int s, struct pollfd *pfd)
{
    pfd->fd = -1;
    pfd->events = 0;
    pfd->revents = 0;
    if (pair->dead)
        return;
    if (s == 1 && pair->connecting) {
        pfd->fd = pair->fd [1];
        pfd->events = POLLOUT;
        return;
    }
    fr_dir_t *from = &pair->dir [s];        //  reads fd [s]
    fr_dir_t *to = &pair->dir [1 - s];      //  writes fd [s]
    if (s_dir_can_read (from))
        pfd->events |= POLLIN;
    if (to->dst_blocked)
        pfd->events |= POLLOUT;
    //  A socket we shut for writing reports POLLHUP for ever once its peer
    //  sent FIN too; when there is nothing to read from it either, leave it
    //  out, or poll would spin.
    if (pfd->events == 0 && to->dst_shut)
        return;
    //  Otherwise keep it in even with no events: POLLERR (an RST) is
    //  always reported, and a reset must reach the other side at once.
    pfd->fd = pair->fd [s];
}

static void
s_pair_events (faultrelay_t *self, fr_pair_t *pair, int s, short revents, int64_t now)
{
    if (pair->dead || revents == 0)
        return;
    if (s == 1 && pair->connecting) {
        s_connected (self, pair);
        return;
    }
    if (revents & POLLOUT)
        pair->dir [1 - s].dst_blocked = false;
    if (revents & (POLLIN | POLLERR | POLLHUP)) {
        if (s_dir_can_read (&pair->dir [s])) {
            s_dir_read (self, pair, s, now);
            return;
        }
        if (revents & (POLLERR | POLLHUP)) {
            //  Not reading it (full or at EOF) and it failed: nothing more
            //  can be delivered to it; the other side gets the reset.
            int error = 0;
            socklen_t len = sizeof error;
            getsockopt (pair->fd [s], SOL_SOCKET, SO_ERROR, &error, &len);
            ami_log_warn_limited (&self->limit, "relay",
                                  "pair %u: %s: %s; resetting the %s", pair->id,
                                  s_side_name [s], error ? strerror (error) : "hung up",
                                  s_side_name [1 - s]);
            s_pair_kill (pair, &self->aborts);
        }
    }
}

int
faultrelay_run (faultrelay_t *self)
{
    self->stop = false;
    while (!self->stop) {
        int64_t now = s_now_us ();
        int64_t wake_at = INT64_MAX;
        s_pump_all (self, now, &wake_at);
        s_compact (self);

        struct pollfd *pfd = self->pfd;
        for (size_t i = 0; i < self->npfd; i++) {
            pfd [i].fd = -1;
            pfd [i].events = POLLIN;
            pfd [i].revents = 0;
        }
        pfd [FR_PFD_WAKE].fd = self->wake [0];
        if (self->refusing || self->npairs < self->max_pairs)
            pfd [FR_PFD_LISTEN].fd = self->listen_fd;
        pfd [FR_PFD_CTL_UNIX].fd = self->ctl_unix_fd;
        pfd [FR_PFD_CTL_TCP].fd = self->ctl_tcp_fd;
        for (size_t i = 0; i < FAULTRELAY_CONTROL_MAX; i++)
            pfd [FR_PFD_CONTROLS + i].fd = self->controls [i].fd;
        for (size_t i = 0; i < self->npairs; i++)
            for (int s = 0; s < 2; s++)
                s_pair_poll (&self->pairs [i], s, &pfd [FR_PFD_PAIRS + 2 * i + (size_t) s]);

        int timeout = -1;
        if (wake_at != INT64_MAX) {
            int64_t wait_us = wake_at - now;
            //  Round up: waking early would only spin until the deadline
            int64_t wait_ms = wait_us <= 0 ? 0 : (wait_us + 999) / 1000;
            timeout = wait_ms > INT_MAX ? INT_MAX : (int) wait_ms;
        }
        size_t npfd = FR_PFD_PAIRS + 2 * self->npairs;
        if (poll (pfd, (nfds_t) npfd, timeout) < 0) {
            if (errno == EINTR)
                continue;
            ami_log_error ("poll: %s", strerror (errno));
            return -1;
        }
        now = s_now_us ();
        if (pfd [FR_PFD_WAKE].revents)
            s_wake_read (self);
        //  Pairs first: their pollfd slots are only valid until the set
        //  changes (commands may reset pairs, accepts add them).
        size_t npairs = self->npairs;
        for (size_t i = 0; i < npairs; i++)
            for (int s = 0; s < 2; s++)
                s_pair_events (self, &self->pairs [i], s,
                               pfd [FR_PFD_PAIRS + 2 * i + (size_t) s].revents, now);
        for (size_t i = 0; i < FAULTRELAY_CONTROL_MAX; i++)
            if (self->controls [i].fd >= 0 && pfd [FR_PFD_CONTROLS + i].revents)
                s_control_read (self, &self->controls [i]);
        if (pfd [FR_PFD_CTL_UNIX].revents)
            s_control_accept (self, self->ctl_unix_fd);
        if (pfd [FR_PFD_CTL_TCP].revents)
            s_control_accept (self, self->ctl_tcp_fd);
        s_compact (self);
        if (pfd [FR_PFD_LISTEN].revents)
            s_accept (self);
    }
    return 0;
}
