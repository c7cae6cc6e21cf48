/*  faultrelay.h - a fault-injecting TCP relay for the fault suite (issue 6).

    This kernel has no `tc netem`, so the fault suite puts this relay
    between two ami-bus nodes instead: it accepts TCP connections on one
    address, opens one upstream connection per accepted one, and copies the
    bytes both ways, applying faults that can be changed while it runs:

        delay MS [JITTER]   hold each chunk delay +/- jitter ms (order kept)
        jitter MS           change only the jitter
        rate BYTES_PER_S    token bucket per direction (0 = unlimited)
        stall / resume      stop / restart forwarding in both directions;
                            connections stay open, reading stops when the
                            per-direction buffer is full (TCP back-pressure)
        reset               close every connection pair with RST (both sides)
        refuse / pass       accept new connections and reset them at once /
                            relay them again
        stats               one line of counters (below)

    It is a byte relay: it never looks at what it carries (ZeroMQ frames,
    CURVE handshakes, anything), so it cannot break a signature or a
    framing; it can only delay, slow, stop or cut the stream, which is what
    a bad network does.

        faultrelay_config_t config;
        faultrelay_config_default (&config);
        config.listen = "127.0.0.1:0";          //  ephemeral port
        config.to = "127.0.0.1:7201";
        config.control_port = 0;                //  ephemeral loopback port
        faultrelay_t *relay = faultrelay_new (&config);
        if (!relay) exit (1);                   //  already logged
        ... faultrelay_port (relay), faultrelay_control_port (relay) ...
        faultrelay_run (relay);                 //  until faultrelay_stop
        faultrelay_destroy (&relay);

    Control protocol (UNIX stream socket at control_path, or TCP on
    127.0.0.1:control_port; both may be given). One command per line
    ("\n", optional "\r"), at most FAULTRELAY_CONTROL_LINE bytes; one reply
    line per command: "OK", "ERR <reason>", or for `stats`:

        accepted=A active=N closed=C resets=R aborts=X refused=F
        bytes_c2u=B bytes_u2c=B delay=MS jitter=MS rate=BPS stalled=0|1
        refusing=0|1

    (one line, fields separated by one space). accepted counts accepted
    connections that became relayed pairs; each of them ends exactly once
    as closed (both sides sent FIN and everything was delivered), resets
    (ended by the `reset` command or faultrelay_signal_reset) or aborts (a
    side failed: RST from a peer, a socket error, upstream unreachable; the
    relay then resets the other side too), so accepted = active + closed +
    resets + aborts. refused counts connections reset by `refuse` mode
    (not in accepted). bytes_c2u / bytes_u2c count bytes written to the
    upstream / to the client (delivered by the relay, not merely read).
    A command takes effect before its reply is sent; `reset` replies after
    every RST has been sent. `delay` and `rate` apply to bytes read from
    then on (bytes already held keep their due time). A control client that
    sends a line that is too long gets "ERR line too long" and is closed.
    Also: `help` (one line listing the commands), `quit` (closes this
    control connection, the relay goes on).

    Threads: faultrelay_run runs the whole relay in the calling thread (one
    poll loop, see faultrelay.c). faultrelay_stop, faultrelay_toggle_stall
    and faultrelay_signal_reset may be called from any thread and from a
    signal handler (they write one byte to a pipe); everything else belongs
    to the thread that runs the loop, or is called before/after it.
*/
#ifndef FAULTRELAY_H_INCLUDED
#define FAULTRELAY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct faultrelay_t faultrelay_t;

/*  Bytes held per direction of one connection pair, chunk bookkeeping
    included (the stated memory bound). Why 256 KiB: it is several TCP
    windows of loopback traffic, so a relay that only delays still keeps
    a stream moving at up to 256 KiB / delay (1.3 MB/s at 200 ms, far more
    than any ami-bus link carries), while the worst case of a full relay,
    2 x 256 KiB x max_conns, stays at 32 MiB with the default 64 pairs.
    When a direction is full the relay stops reading its source, and TCP's
    own flow control pushes back on the sender. */
#define FAULTRELAY_BUFFER_MAX       (256 * 1024)

/*  Largest single read from a socket. Why 16 KiB: one read per poll wake
    moves a useful amount of loopback data, and a held chunk never pins
    much more memory than the bytes it holds. */
#define FAULTRELAY_READ_CHUNK       (16 * 1024)

/*  Default and ceiling of --max-conns. Why 64: the fault suite relays a
    handful of ZeroMQ links (each one TCP connection); 64 leaves room for
    reconnect storms while bounding memory (see FAULTRELAY_BUFFER_MAX). The
    ceiling keeps the worst case at 2 GiB, and under the poll() set size
    any system allows. */
#define FAULTRELAY_MAX_CONNS_DEFAULT 64
#define FAULTRELAY_MAX_CONNS_LIMIT  4096

/*  Control connections at once, and the longest command line. Why 8 and
    256: control clients are a test script and a human; commands are a
    word and a number. */
#define FAULTRELAY_CONTROL_MAX      8
#define FAULTRELAY_CONTROL_LINE     256

/*  Largest delay or jitter (ms). Why 10 minutes: longer is a stall. */
#define FAULTRELAY_DELAY_MAX_MS     600000

/*  Default host when an address is given as ":PORT" or "PORT". */
#define FAULTRELAY_DEFAULT_HOST     "127.0.0.1"

typedef struct {
    const char *listen;         //  "HOST:PORT", "[V6]:PORT", ":PORT", "PORT"; port 0 = ephemeral
    const char *to;             //  upstream, same forms (port must not be 0)
    int delay_ms;               //  initial delay, 0..FAULTRELAY_DELAY_MAX_MS
    int jitter_ms;              //  initial jitter, 0..FAULTRELAY_DELAY_MAX_MS
    int64_t rate;               //  bytes/s per direction, 0 = unlimited
    const char *control_path;   //  UNIX socket path, or NULL
    int control_port;           //  loopback TCP control port, 0 = ephemeral, -1 = none
    int max_conns;              //  1..FAULTRELAY_MAX_CONNS_LIMIT
} faultrelay_config_t;

/*  Fill config with the defaults: listen/to NULL (both required), no
    delay, jitter or rate limit, no control socket (path NULL, port -1),
    max_conns FAULTRELAY_MAX_CONNS_DEFAULT. */
void
    faultrelay_config_default (faultrelay_config_t *config);

/*  Split an address "HOST:PORT", "[IPV6]:PORT", ":PORT" or "PORT" into
    host (FAULTRELAY_DEFAULT_HOST when absent; at most host_cap - 1 bytes)
    and port (0..65535). Returns 0, or -1 if the text is malformed. */
int
    faultrelay_parse_address (const char *text, char *host, size_t host_cap, int *port);

/*  Create a relay: check the configuration, resolve both addresses,
    bind and listen on config->listen and on the control socket(s).
    Nothing is relayed until faultrelay_run. An existing UNIX socket at
    control_path is replaced if nothing answers on it (a stale file), and
    refused if a process is listening there. Returns NULL on any error,
    logged with the reason (bad address, bind failed, ...). config's
    strings are copied. */
faultrelay_t *
    faultrelay_new (const faultrelay_config_t *config);

/*  Close every socket (open pairs with RST), remove the UNIX control
    socket file, free everything. Idempotent; nulls *self_p. Do not call
    while faultrelay_run is running. */
void
    faultrelay_destroy (faultrelay_t **self_p);

/*  Run the relay in the calling thread until faultrelay_stop. Returns 0
    after a stop, -1 if poll() itself failed (logged). Open pairs are left
    as they are (faultrelay_destroy resets them). */
int
    faultrelay_run (faultrelay_t *self);

/*  Ask faultrelay_run to return. Async-signal-safe, any thread. */
void
    faultrelay_stop (faultrelay_t *self);

/*  Toggle stall/resume, as the control commands do. Async-signal-safe,
    any thread (the SIGUSR1 action of ami-faultrelay). */
void
    faultrelay_toggle_stall (faultrelay_t *self);

/*  Reset every pair, as the `reset` command does. Async-signal-safe, any
    thread (the SIGUSR2 action of ami-faultrelay). */
void
    faultrelay_signal_reset (faultrelay_t *self);

/*  The bound listening port, and the bound TCP control port (-1 if
    none). Useful after an ephemeral bind. */
int
    faultrelay_port (faultrelay_t *self);
int
    faultrelay_control_port (faultrelay_t *self);

/*  A strict decimal for options and control commands: digits only (no
    sign, no spaces, at most 18 of them), within [0, max]. Returns 0 with
    *out set, or -1. */
int
    faultrelay_number (const char *text, long long max, long long *out);

#ifdef __cplusplus
}
#endif

#endif
