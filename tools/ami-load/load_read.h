/*  load_read.h - on-demand read load against a running MDMS (ami-load read).

    Keeps `concurrency` READ requests in flight against the MDMS operator
    API, over `sockets` DEALER connections (one is the default and, as
    measured, as fast: see the README), until `count` reads were issued or
    `duration_ms` has passed, then waits for the answers still out. Meters
    are taken round-robin from first..last, skipping a meter that already
    has a read in flight: two concurrent commands to one meter can reach it
    out of counter order (two head ends, several MDP workers) and the
    second would be refused as a replay, which is the meter doing its job,
    not a load result. So at most (last - first + 1) reads are in flight.

    Every read's latency is the time from handing the request to libzmq to
    taking its answer off the socket, kept for every successful read (see
    load_stats.h). A read fails when the MDMS answers ERROR (tallied under
    ami_errname of the code), answers something that is not a reading of
    the requested meter ("BAD_REPLY"), or does not answer by the read's
    timeout plus LOAD_READ_MARGIN_MS ("NO_REPLY"; a later answer to it is
    counted as late and otherwise ignored).

    Correlation ids are 12 random bytes followed by the big-endian index
    of the in-flight slot, so an answer finds its slot in O(1) and is then
    checked against all 16 bytes.
*/
#ifndef LOAD_READ_H_INCLUDED
#define LOAD_READ_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "ami_cert.h"
#include "load_stats.h"

/*  How long after a read's own timeout the answer may still come (the
    MDMS answers AMI_E_TIMEOUT at the timeout; this covers the hop back):
    amictl's margin. */
#define LOAD_READ_MARGIN_MS     2000

typedef struct {
    const char *endpoint;       /* MDMS api endpoint */
    ami_cert_t *cert;           /* the operator's certificate (with secret) */
    const char *server_key;     /* the MDMS's public key, Z85 */
    uint32_t concurrency;       /* reads in flight, >= 1 */
    uint32_t sockets;           /* DEALER connections, 1..concurrency */
    uint64_t count;             /* > 0: issue exactly this many reads ... */
    int64_t duration_ms;        /* ... else issue reads for this long (> 0) */
    uint32_t first, last;       /* meter numbers (MTR-%06u), first <= last */
    uint32_t timeout_ms;        /* per read, sent to the MDMS */
    bool progress;              /* a live one-line progress on stderr */
} load_read_config_t;

typedef enum {
    LOAD_READ_DONE = 0,         /* the run completed (reads may have failed) */
    LOAD_READ_UNREACHABLE,      /* no connection was ever made by the timeout */
    LOAD_READ_SILENT,           /* connected, but no answer at all by the timeout */
    LOAD_READ_REFUSED,          /* the MDMS's ZAP handler refused our key */
    LOAD_READ_SETUP             /* could not start (sockets, memory) */
} load_read_outcome_t;

typedef struct {
    int outcome;                /* load_read_outcome_t */
    char why [512];             /* for every outcome but DONE */
    uint64_t sent;              /* reads issued */
    uint64_t ok;                /* readings received */
    uint64_t failed;            /* = errors.total */
    uint64_t abandoned;         /* still in flight when interrupted */
    uint64_t late;              /* answers after NO_REPLY, or not ours */
    bool interrupted;           /* SIGINT/SIGTERM ended the run early */
    int64_t elapsed_us;         /* first request .. last answer */
    uint32_t max_in_flight;     /* the most reads in flight at once */
    load_samples_t latency_us;  /* one per successful read */
    load_errors_t errors;
} load_read_result_t;

/*  Run the load. Fills *result (zero it first; free with
    load_read_result_free). Returns result->outcome. */
int
    load_read_run (const load_read_config_t *config, load_read_result_t *result);

void
    load_read_result_free (load_read_result_t *result);

#endif
