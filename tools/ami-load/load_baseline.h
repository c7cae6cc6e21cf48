/*  load_baseline.h - the raw ceiling of one CurveZMQ hop on this machine
    (ami-load baseline).

    Measures, between two PROCESSES over tcp loopback, with CURVE on the
    connection and a real ZAP allow-list (a zauth actor in the receiver
    whose certificate store holds exactly the sender's public key):

    -   PUSH -> PULL throughput at 100 and 1000 bytes: the sender pushes
        as fast as it can for `seconds_ms`, then an empty frame; the
        receiver counts the messages and times the first and the last, and
        the rate is (count - 1) / (last - first), measured where the
        messages arrive. The high-water marks (1000 each side) make it
        flow-controlled: the sender cannot run ahead of the receiver.
    -   DEALER -> ROUTER echo, LOAD_BASELINE_ECHO_BYTES bytes, one in
        flight, for `seconds_ms`: every round trip's latency, the "one
        hop" latency that a read through the whole chain is compared to.

    Keys are throwaway: generated in memory (zcert_new) for this run and
    handed to the receiver over its stdin pipe, never written to disk.

    The receiver is this same executable started again (fork + exec of
    the file /proc/self/exe links to, with the hidden command
    LOAD_BASELINE_RECEIVER_CMD),
    so it starts with a fresh process image: forking a process that has a
    ZeroMQ context is unsafe, and CZMQ makes its context early. It talks
    to the parent through two pipes (text lines, see load_baseline.c),
    asks the kernel for SIGTERM if the parent dies (PR_SET_PDEATHSIG), and
    exits when its stdin closes.
*/
#ifndef LOAD_BASELINE_H_INCLUDED
#define LOAD_BASELINE_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "load_stats.h"

#define LOAD_BASELINE_RECEIVER_CMD  "__baseline-receiver"
/*  The two PUSH->PULL message sizes (DESIGN.md section 8's figures). */
#define LOAD_BASELINE_SIZES         2
/*  Echo payload: about an API_REQ plus envelope, and the size DESIGN.md
    section 8's relay figure used. */
#define LOAD_BASELINE_ECHO_BYTES    200

typedef struct {
    size_t bytes;
    uint64_t messages;          /* received in the measured interval */
    double seconds;             /* first .. last arrival */
    double per_second;
} load_push_pull_t;

typedef struct {
    double seconds_each;        /* as configured */
    load_push_pull_t push_pull [LOAD_BASELINE_SIZES];
    size_t echo_bytes;
    uint64_t round_trips;
    double echo_seconds;
    load_samples_t echo_ns;     /* every round trip, nanoseconds */
    char why [512];             /* when load_baseline_run fails */
} load_baseline_result_t;

/*  Run the three measurements, seconds_ms each. Returns 0, or -1 with
    result->why set (the receiver could not start, died, or a hop did not
    work). Free the result with load_baseline_result_free. */
int
    load_baseline_run (int64_t seconds_ms, load_baseline_result_t *result);

void
    load_baseline_result_free (load_baseline_result_t *result);

/*  The receiver's main (argv[1] == LOAD_BASELINE_RECEIVER_CMD). Returns
    the process exit code. */
int
    load_baseline_receiver_main (void);

#endif
