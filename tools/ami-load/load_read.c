/*  load_read.c - the on-demand read load generator (see load_read.h).

    Design. One thread, a fixed table of in-flight slots, one zmq_poll
    over the DEALER(s): the zguide's asynchronous client, pipelined. Each
    turn of the loop (1) refills every free slot while reads may still be
    issued, (2) waits for answers at most S_TICK_MS, (3) drains every
    answer waiting, (4) every S_TICK_MS expires slots past their deadline
    and redraws the progress line. Expiry at tick resolution is fine: the
    deadlines are seconds long and only matter for failures.

    Start-up is judged by the socket monitor: a ZAP refusal ends the run
    at once; no handshake and no answer by the first read's timeout means
    nothing is listening there.
*/
#include "load_read.h"

#include <czmq.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_client.h"

/*  Poll timeout and expiry/progress period: 100 ms keeps the progress
    line lively and costs nothing when answers flow. */
#define S_TICK_MS           100
/*  Redraw the progress line this often. */
#define S_PROGRESS_MS       500
/*  After SIGINT, wait this long for the reads in flight, then give up. */
#define S_INTERRUPT_GRACE_MS 1000
/*  Answers taken off one socket before looking at the others again. */
#define S_DRAIN_MAX         256
/*  Correlation id: 12 random bytes, then the slot index (big-endian u32). */
#define S_CORR_RANDOM       12

typedef struct {
    bool busy;
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    int64_t sent_us;
    int64_t deadline_us;
    uint32_t meter;             /* index into first..last */
} slot_t;

typedef struct {
    const load_read_config_t *config;
    load_read_result_t *result;
    ami_client_t **apis;
    zmq_pollitem_t *items;
    slot_t *slots;
    uint32_t *free_slots;       /* stack of free slot indexes */
    uint32_t free_count;
    bool *meter_busy;
    uint32_t meters;            /* last - first + 1 */
    uint32_t next_meter;
    uint32_t in_flight;
    uint64_t answers;           /* any answer at all (ok or error) */
    int64_t start_us;
    int64_t last_done_us;
} run_t;

static void
s_progress (run_t *run, int64_t now_us, bool final)
{
    load_read_result_t *r = run->result;
    if (final) {
        fprintf (stderr, "\r\033[K");
        return;
    }
    double secs = (double) (now_us - run->start_us) / 1e6;
    fprintf (stderr, "\r\033[Kami-load: %6.1f s  %8" PRIu64 " ok  %6" PRIu64 " failed  "
             "%8.0f reads/s  %5u in flight", secs, r->ok, r->failed,
             secs > 0 ? (double) r->ok / secs : 0.0, run->in_flight);
    fflush (stderr);
}

/* Take a meter with no read in flight, round-robin. Returns false if
   every meter is busy. */
static bool
s_next_meter (run_t *run, uint32_t *meter)
{
    for (uint32_t i = 0; i < run->meters; i++) {
        uint32_t m = (run->next_meter + i) % run->meters;
        if (!run->meter_busy [m]) {
            run->next_meter = (m + 1) % run->meters;
            *meter = m;
            return true;
        }
    }
    return false;
}

static void
s_release (run_t *run, uint32_t index)
{
    slot_t *slot = &run->slots [index];
    slot->busy = false;
    run->meter_busy [slot->meter] = false;
    run->free_slots [run->free_count++] = index;
    run->in_flight--;
}

/* Issue one read into a free slot. Returns false when no slot or meter is
   free, or the send failed. */
static bool
s_issue (run_t *run)
{
    const load_read_config_t *config = run->config;
    uint32_t meter;
    if (run->free_count == 0 || !s_next_meter (run, &meter))
        return false;
    uint32_t index = run->free_slots [--run->free_count];
    slot_t *slot = &run->slots [index];
    randombytes_buf (slot->corr, S_CORR_RANDOM);
    slot->corr [12] = (uint8_t) (index >> 24);
    slot->corr [13] = (uint8_t) (index >> 16);
    slot->corr [14] = (uint8_t) (index >> 8);
    slot->corr [15] = (uint8_t) index;
    slot->meter = meter;
    slot->busy = true;
    run->meter_busy [meter] = true;
    run->in_flight++;
    if (run->in_flight > run->result->max_in_flight)
        run->result->max_in_flight = run->in_flight;
    char meter_id [AMI_MAX_ID + 1];
    snprintf (meter_id, sizeof meter_id, "MTR-%06u", config->first + meter);
    slot->sent_us = load_now_us ();
    slot->deadline_us = slot->sent_us + (int64_t) config->timeout_ms * 1000
                      + LOAD_READ_MARGIN_MS * 1000;
    run->result->sent++;
    ami_api_req_t req = { .action = AMI_ACT_READ, .timeout_ms = config->timeout_ms };
    memcpy (req.corr, slot->corr, AMI_REQUEST_ID_SIZE);
    snprintf (req.meter_id, sizeof req.meter_id, "%s", meter_id);
    if (ami_client_send (run->apis [index % config->sockets], &req) != AMI_OK) {
        load_errors_add (&run->result->errors, "SEND_FAILED");
        run->result->failed++;
        s_release (run, index);
        return false;               //  try again after the next wait, not in a tight loop
    }
    return true;
}

static void
s_answer (run_t *run, const ami_msg_t *reply, int64_t now_us)
{
    load_read_result_t *r = run->result;
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    run->answers++;
    if (!ami_client_reply_corr (reply, corr)) {
        //  An ERROR the MDMS could not tie to a request: the read it
        //  answers will show as NO_REPLY.
        r->late++;
        return;
    }
    uint32_t index = (uint32_t) corr [12] << 24 | (uint32_t) corr [13] << 16
                   | (uint32_t) corr [14] << 8 | corr [15];
    if (index >= run->config->concurrency || !run->slots [index].busy
    ||  memcmp (run->slots [index].corr, corr, AMI_REQUEST_ID_SIZE) != 0) {
        r->late++;
        return;
    }
    slot_t *slot = &run->slots [index];
    char meter_id [AMI_MAX_ID + 1];
    snprintf (meter_id, sizeof meter_id, "MTR-%06u", run->config->first + slot->meter);
    if (reply->type == AMI_MSG_API_READINGS && reply->api_readings.count >= 1
    &&  strcmp (reply->api_readings.readings [0].reading.meter_id, meter_id) == 0) {
        r->ok++;
        if (load_samples_add (&r->latency_us, now_us - slot->sent_us))
            load_errors_add (&r->errors, "NO_MEMORY_FOR_SAMPLE");
    }
    else {
        r->failed++;
        int code = reply->type == AMI_MSG_ERROR && reply->error.code ? reply->error.code
                                                                      : AMI_E_INTERNAL;
        load_errors_add (&r->errors, reply->type == AMI_MSG_ERROR ? ami_errname (code)
                                                                   : "BAD_REPLY");
    }
    run->last_done_us = now_us;
    s_release (run, index);
}

static void
s_expire (run_t *run, int64_t now_us, bool abandon)
{
    for (uint32_t i = 0; i < run->config->concurrency; i++) {
        slot_t *slot = &run->slots [i];
        if (!slot->busy)
            continue;
        if (abandon)
            run->result->abandoned++;
        else
        if (now_us >= slot->deadline_us) {
            run->result->failed++;
            load_errors_add (&run->result->errors, "NO_REPLY");
            run->last_done_us = now_us;
        }
        else
            continue;
        s_release (run, i);
    }
}

/* Start-up checks: returns an outcome other than DONE to stop the run. */
static int
s_startup (run_t *run, int64_t now_us)
{
    const load_read_config_t *config = run->config;
    int handshakes = 0;
    for (uint32_t s = 0; s < config->sockets; s++) {
        int status = ami_client_check (run->apis [s]);
        if (status) {
            snprintf (run->result->why, sizeof run->result->why,
                      "the MDMS at %s refused this operator's key (ZAP status %d): "
                      "it is not on the MDMS's allow-list", config->endpoint, status);
            return LOAD_READ_REFUSED;
        }
        handshakes += ami_client_handshakes (run->apis [s]);
    }
    if (run->answers > 0 || now_us < run->start_us + (int64_t) config->timeout_ms * 1000)
        return LOAD_READ_DONE;
    if (handshakes == 0) {
        snprintf (run->result->why, sizeof run->result->why,
                  "cannot reach the MDMS at %s (is `make demo` running?): no connection "
                  "within %u ms", config->endpoint, config->timeout_ms);
        return LOAD_READ_UNREACHABLE;
    }
    snprintf (run->result->why, sizeof run->result->why,
              "connected to the MDMS at %s, but it answered nothing within %u ms",
              config->endpoint, config->timeout_ms);
    return LOAD_READ_SILENT;
}

static void
s_run_free (run_t *run)
{
    if (run->apis)
        for (uint32_t s = 0; s < run->config->sockets; s++)
            ami_client_destroy (&run->apis [s]);
    free (run->apis);
    free (run->items);
    free (run->slots);
    free (run->free_slots);
    free (run->meter_busy);
}

int
load_read_run (const load_read_config_t *config, load_read_result_t *result)
{
    assert (config->concurrency >= 1 && config->sockets >= 1
            && config->sockets <= config->concurrency);
    assert (config->first >= 1 && config->first <= config->last);
    assert (config->count > 0 || config->duration_ms > 0);
    run_t run_ = { .config = config, .result = result }, *run = &run_;
    run->meters = config->last - config->first + 1;
    run->apis = calloc (config->sockets, sizeof *run->apis);
    run->items = calloc (config->sockets, sizeof *run->items);
    run->slots = calloc (config->concurrency, sizeof *run->slots);
    run->free_slots = calloc (config->concurrency, sizeof *run->free_slots);
    run->meter_busy = calloc (run->meters, sizeof *run->meter_busy);
    if (!run->apis || !run->items || !run->slots || !run->free_slots || !run->meter_busy
    ||  sodium_init () < 0) {
        snprintf (result->why, sizeof result->why, "out of memory");
        s_run_free (run);
        return result->outcome = LOAD_READ_SETUP;
    }
    for (uint32_t s = 0; s < config->sockets; s++) {
        int err = 0;
        run->apis [s] = ami_client_new (config->endpoint, config->cert, config->server_key, &err);
        if (!run->apis [s]) {
            snprintf (result->why, sizeof result->why, "cannot set up a connection to %s: %s",
                      config->endpoint, ami_strerror (err));
            s_run_free (run);
            return result->outcome = LOAD_READ_SETUP;
        }
        run->items [s] = (zmq_pollitem_t) { ami_client_socket (run->apis [s]), 0, ZMQ_POLLIN, 0 };
    }
    //  Slot 0 on top of the stack: a run with concurrency 1 uses slot 0.
    for (uint32_t i = 0; i < config->concurrency; i++)
        run->free_slots [run->free_count++] = config->concurrency - 1 - i;

    run->start_us = run->last_done_us = load_now_us ();
    int64_t end_us = run->start_us + config->duration_ms * 1000;
    int64_t next_tick = run->start_us + S_TICK_MS * 1000;
    int64_t next_progress = run->start_us + S_PROGRESS_MS * 1000;
    int64_t abandon_at = 0;
    bool issuing = true;
    ami_msg_t *reply = NULL;

    while (true) {
        int64_t now = load_now_us ();
        if (issuing && (zsys_interrupted
                        || (config->count > 0 ? result->sent >= config->count : now >= end_us)))
            issuing = false;
        if (zsys_interrupted && !result->interrupted) {
            result->interrupted = true;
            abandon_at = now + S_INTERRUPT_GRACE_MS * 1000;
        }
        while (issuing && run->in_flight < config->concurrency
               && (config->count == 0 || result->sent < config->count))
            if (!s_issue (run))
                break;
        if (!issuing && run->in_flight == 0)
            break;
        if (result->interrupted && now >= abandon_at) {
            s_expire (run, now, true);
            break;
        }
        //  Sleep until an answer, the next tick, or the end of issuing.
        int64_t wake = next_tick;
        if (issuing && config->count == 0 && end_us < wake)
            wake = end_us;
        long timeout_ms = (long) ((wake - now + 999) / 1000);
        if (timeout_ms < 0)
            timeout_ms = 0;
        int rc = zmq_poll (run->items, (int) config->sockets, timeout_ms);
        if (rc < 0 && zmq_errno () != EINTR) {
            snprintf (result->why, sizeof result->why, "zmq_poll: %s", zmq_strerror (zmq_errno ()));
            result->outcome = LOAD_READ_SETUP;
            break;
        }
        for (uint32_t s = 0; rc > 0 && s < config->sockets; s++) {
            if (!(run->items [s].revents & ZMQ_POLLIN))
                continue;
            for (int n = 0; n < S_DRAIN_MAX; n++) {
                int got = ami_client_recv (run->apis [s], &reply);
                if (got == 0)
                    break;
                if (got > 0)
                    s_answer (run, reply, load_now_us ());
            }
        }
        now = load_now_us ();
        if (now >= next_tick) {
            next_tick = now + S_TICK_MS * 1000;
            if (run->answers == 0) {
                int outcome = s_startup (run, now);
                if (outcome != LOAD_READ_DONE) {
                    result->outcome = outcome;
                    break;
                }
            }
            s_expire (run, now, false);
        }
        if (config->progress && now >= next_progress) {
            next_progress = now + S_PROGRESS_MS * 1000;
            s_progress (run, now, false);
        }
    }
    if (config->progress)
        s_progress (run, 0, true);
    result->elapsed_us = run->last_done_us - run->start_us;
    s_run_free (run);
    return result->outcome;
}

void
load_read_result_free (load_read_result_t *result)
{
    load_samples_free (&result->latency_us);
}
