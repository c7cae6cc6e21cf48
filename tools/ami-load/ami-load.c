/*  ami-load - the load-testing tool of ami-bus (DESIGN.md section 8).

    Three commands:
      ingest    interval-data ingest through the real services: a private
                deployment in FLOOD mode, readings committed per second,
                latency, CPU and memory of every service, then an exact
                account of every reading produced against the MDMS's LMDB
                (load_ingest.c);
      read      on-demand reads against a running deployment, through its
                MDMS operator API and the whole chain, with C in flight:
                reads/s, latency percentiles from every sample, errors by
                kind (load_read.c);
      baseline  the raw ceiling of one CurveZMQ hop between two processes
                on this machine, measured in the same run, so that the
                read figures can be judged against the machine rather
                than against numbers from elsewhere (load_baseline.c).

    This file is the command line, the configuration (found the way amictl
    finds its own, and with the same keys: ami-load acts as an operator)
    and the two renderings (a text report, or exactly one JSON object on
    stdout with --json). The usage texts below are the manual; the README
    next to this file adds the JSON shapes and measured figures.

*/
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_client.h"
#include "ami_config.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_mdms.h"
#include "ami_msg.h"
#include "load_baseline.h"
#include "load_ingest.h"
#include "load_read.h"
#include "load_seccost.h"
#include "load_stats.h"

/* Exit codes (the contract with scripts; see s_usage). */
#define EXIT_OK           0
#define EXIT_FAILED       1     /* a read failed, none completed, the baseline failed, or
                                   ingest lost, duplicated or could not account a reading */
#define EXIT_USAGE        2
#define EXIT_UNREACHABLE  3     /* no connection to the MDMS, or no answer at all;
                                   ingest: the deployment did not come up */
#define EXIT_DENIED       4     /* the MDMS's ZAP handler refused the operator's key */
#define EXIT_SETUP        6     /* configuration or key files missing or unusable */
#define EXIT_INTERRUPTED  130   /* SIGINT/SIGTERM: the partial figures are still printed */

/* Defaults. */
#define DEFAULT_DURATION_MS     10000
#define DEFAULT_FIRST           1
#define DEFAULT_LAST            200     /* the demo's two fleets of 100 */
#define DEFAULT_TIMEOUT_MS      5000    /* amictl's default */
#define DEFAULT_BASELINE_MS     2000    /* per measurement */
/* `read --baseline` measures for this long per measurement (3 in all). */
#define READ_BASELINE_MS        1000
/* Most sockets: each is one more CURVE connection and MDMS peer; a
   handful shows whether one socket is the bottleneck. */
#define MAX_SOCKETS             64
/* Meter numbers are printed as MTR-%06u. */
#define MAX_METER               999999
#define MAX_COUNT               100000000
#define MAX_SECONDS             86400
/* ingest defaults: the first standard scenario (10 000 meters),
   two fleets, aggregators and head ends (the demo's shape: redundancy on
   every relay), hourly blocks of 15-minute intervals (the meters'
   default), warn-level logs (a log line per batch would cost more than
   the batch). */
#define INGEST_METERS           10000
#define INGEST_HEADENDS         2
#define INGEST_INTERVAL_S       900
#define INGEST_BLOCK            4
#define INGEST_LOG_LEVEL        "warn"
/* The MDMS's map: sparse, so generous costs nothing; 16 GiB holds ~700 M
   readings at the ~21 bytes each of the storage layout. */
#define INGEST_MAP_SIZE         "16G"
/* Deadlines: keys for 100 000 meters and the MDMS's registry import take
   seconds; after the stop, the chain holds at most what its buffers and
   credits allow (seconds at the measured rates). Both x10 for a slow VM. */
#define INGEST_READY_MS         120000
#define INGEST_DRAIN_MS         120000
/* ingest measures the baseline for this long per measurement (3 in all),
   before starting the deployment. */
#define INGEST_BASELINE_MS      1000
/* Most meters: keygen's total bound (tools/ami-keygen/keygen.h). */
#define INGEST_MAX_METERS       10000000

typedef struct {
    const char *command;
    bool json, verbose, with_baseline;
    //  read
    const char *config_path, *endpoint, *cert_path, *mdms_cert_path;
    uint32_t concurrency, sockets, first, last;
    uint64_t count;
    int64_t duration_ms;        /* -1 = not given */
    int64_t timeout_ms;         /* -1 = not given */
    //  baseline
    int64_t seconds_ms;
    //  ingest
    uint64_t meters, fleets, aggregators, headends, block, limit, start_s, port_base;
    int64_t interval_s;             /* 0 = not given */
    bool have_start, keep, no_baseline;
    const char *dir, *deploy_dir, *log_level, *map_size;
    int64_t ready_ms, drain_ms, baseline_ms;
} args_t;

/* ---------------------------------------------------------------------- */
/*  Usage                                                                  */

static void
s_usage (FILE *out)
{
    fprintf (out,
"usage: ami-load COMMAND [OPTIONS]      (ami-load COMMAND --help for each)\n"
"\n"
"Load-tests ami-bus on this machine.\n"
"\n"
"commands:\n"
"  ingest     interval data through the whole chain: a private deployment of\n"
"             N meters pushing their load profile as fast as the chain takes\n"
"             it; readings committed/s, latency, CPU and memory per service,\n"
"             and an exact account of every reading in the MDMS's database\n"
"  read       on-demand reads against a running deployment (`make demo`),\n"
"             through the MDMS API and the whole chain: reads/s, latency\n"
"             p50/p90/p99/max, errors by kind\n"
"  baseline   the raw ceiling of one CurveZMQ hop between two processes on\n"
"             this machine: PUSH->PULL messages/s at 100 and 1000 bytes, and\n"
"             the round trip of a DEALER->ROUTER echo\n""  security-cost  the CPU cost of the end-to-end application security per\n"
"             on-demand read and per interval block (signatures, seals,\n"
"             AEAD), timed here with the real code [--seconds S] [--json]\n"
"\n"
"exit status: 0 success; 1 a read failed, none completed, the baseline\n"
"failed, or ingest lost or duplicated a reading; 2 usage; 3 the MDMS cannot\n"
"be reached or answers nothing (ingest: the deployment did not come up);\n"
"4 the MDMS refused the operator's key; 6 configuration, keys or the\n"
"private deployment unusable; 130 interrupted (the figures so far are\n"
"still printed)\n");
}

static void
s_usage_ingest (FILE *out)
{
    fprintf (out,
"usage: ami-load ingest [--meters N] [--duration S] [--fleets F]\n"
"                       [--aggregators A] [--headends H] [--block B]\n"
"                       [--interval D] [--start UNIX_S] [--limit L]\n"
"                       [--dir DIR] [--keep] [--port-base P]\n"
"                       [--no-baseline] [--json] [-v]\n"
"\n"
"Runs a PRIVATE deployment of the real services (keys by ami-keygen,\n"
"configuration by deploy/render.sh, processes under supervisord, its own\n"
"directory and loopback ports) with N meters in F fleets pushing their\n"
"load profile in FLOOD mode (meter/profile/time-scale 0: as fast as the\n"
"chain's credit allows), waits until every service is up, then:\n"
"  - measures for S seconds: readings committed per second (the MDMS's\n"
"    intervals_stored, from its API_STATUS, at both ends of the window),\n"
"    the end-to-end latency from a meter sealing a block to the block\n"
"    durable in LMDB (p50/p99/max, the MDMS's histogram), and each\n"
"    service's CPU time, RSS and peak RSS (/proc);\n"
"  - stops production (SIGUSR1 to every fleet) and waits until every\n"
"    fleet reports profile_done and the MDMS has stored as many readings\n"
"    as the fleets produced;\n"
"  - counts the readings in the MDMS's LMDB itself (read-only): lost =\n"
"    produced - counted, stored twice = counted - produced; and the bytes\n"
"    per stored reading;\n"
"  - stops everything and removes the directory (kept on failure).\n"
"Before the deployment starts it measures `ami-load baseline` (%d s per\n"
"measurement) and gives the figures also as ratios to it. A live progress\n"
"line goes to stderr when it is a terminal.\n"
"\n"
"options:\n"
"  --meters N          meters in all [%d]; a multiple of F\n"
"  --duration S        the measured window [%d] (decimals allowed, or NNNms)\n"
"  --fleets F          meter fleets (ami-meter processes) [2; 1 for 1 meter]\n"
"  --aggregators A     aggregators, 1..F [2, or F if less]\n"
"  --headends H        head ends, 1..16 [%d]\n"
"  --block B           intervals per pushed block, 1..96 [%d]\n"
"  --interval D        the load profile's interval, divides a day [15m]\n"
"                      (900, 900s, 15m, 1h)\n"
"  --start UNIX_S      the first interval's start, a multiple of D [today\n"
"                      00:00 UTC]\n"
"  --limit L           each meter makes L intervals, then stops [0: until\n"
"                      the window ends]\n"
"  --dir DIR           render the deployment into DIR (new or empty; not\n"
"                      removed afterwards) instead of a temporary directory\n"
"  --keep              leave the deployment running when the run succeeds\n"
"                      (stop it: supervisorctl -c DIR/supervisord.conf\n"
"                      shutdown); amictl -c DIR/etc/amictl.cfg talks to it\n"
"  --port-base P       its ports (render.sh's layout from P) [a free base]\n"
"  --log-level L       the services' log/level [%s]\n"
"  --map-size SIZE     the MDMS's LMDB map size [%s]\n"
"  --deploy DIR        render.sh and the templates [$AMI_DEPLOY_DIR, else\n"
"                      <ami-load's dir>/../deploy, else\n"
"                      <ami-load's dir>/../share/ami-bus/deploy]\n"
"  --ready-timeout S   every service up within S [%d]\n"
"  --drain-timeout S   accounting settled within S after the stop [%d]\n"
"  --no-baseline       skip the baseline (and the ratios)\n"
"  --json              exactly one JSON object on stdout\n"
"  -v, --verbose       what it is doing, on stderr\n"
"\n"
"exit status: 0 every reading produced is in the database exactly once;\n"
"1 a reading was lost, stored twice, rejected or conflicting, or the chain\n"
"did not settle before --drain-timeout, or the database could not be\n"
"counted; 2 usage; 3 the deployment did not come up by --ready-timeout;\n"
"6 it could not be provisioned or started (see the message); 130\n"
"interrupted\n",
             INGEST_BASELINE_MS / 1000, INGEST_METERS, DEFAULT_DURATION_MS / 1000,
             INGEST_HEADENDS, INGEST_BLOCK, INGEST_LOG_LEVEL, INGEST_MAP_SIZE,
             INGEST_READY_MS / 1000, INGEST_DRAIN_MS / 1000);
}

static void
s_usage_read (FILE *out)
{
    fprintf (out,
"usage: ami-load read [--concurrency C] [--duration S | --count N]\n"
"                     [--meters FIRST-LAST] [--timeout MS] [--sockets K]\n"
"                     [--baseline] [-c CONFIG] [-e ENDPOINT] [--cert FILE]\n"
"                     [--mdms-cert FILE] [--json] [-v]\n"
"\n"
"Drives on-demand reads (API_REQ READ, as `amictl read`) against a RUNNING\n"
"deployment, keeping C reads in flight, meters taken round-robin from the\n"
"range (never two reads in flight to one meter: so at most as many in\n"
"flight as there are meters). Reports reads/s (successful reads over the\n"
"time from the first request to the last answer), latency percentiles\n"
"computed from every successful read, and failures by kind: the MDMS's\n"
"error (AMI_E_TIMEOUT, AMI_E_NO_ROUTE, AMI_E_BUSY, ...), NO_REPLY (no\n"
"answer by the timeout + %d ms), BAD_REPLY (not a reading of that meter).\n"
"A live progress line goes to stderr when it is a terminal.\n"
"\n"
"options:\n"
"  --concurrency C     reads in flight [1]; at most %d (the MDMS's limit)\n"
"  --duration S        issue reads for S seconds [%d], then wait for the\n"
"                      answers still out (decimals allowed, or 500ms)\n"
"  --count N           issue exactly N reads instead\n"
"  --meters A-B        meter numbers MTR-A .. MTR-B [%d-%d]\n"
"  --timeout MS        each read's timeout, sent to the MDMS [amictl/timeout,\n"
"                      %d]; also how long to wait for a first connection\n"
"  --sockets K         spread the reads over K DEALER connections [1]\n"
"                      (--concurrency is then at least K)\n"
"  --baseline          first measure `ami-load baseline` for %d s per\n"
"                      measurement, and print the figures as ratios to it\n"
"  -c, --config FILE   amictl's configuration, found as amictl does:\n"
"                      $AMICTL_CONFIG, else <ami-load's dir>/../var/demo/etc/\n"
"                      amictl.cfg, else " AMI_CLIENT_SYSTEM_CONFIG "\n"
"  -e, --endpoint EP   MDMS API endpoint (amictl/endpoint)\n"
"      --cert FILE     operator certificate (amictl/cert); its role must hold\n"
"                      reads (OPERATOR): a VIEWER's are all AMI_E_DENIED\n"
"      --mdms-cert FILE  the MDMS's public certificate (amictl/mdms-cert)\n"
"  --json              exactly one JSON object on stdout (also on failure:\n"
"                      {\"command\",\"error\":{\"name\",\"code\",\"message\"}})\n"
"  -v, --verbose       debug logging on stderr\n"
"\n"
"exit status: 0 every read succeeded; 1 a read failed or none completed;\n"
"2 usage; 3 cannot reach the MDMS, or it answered nothing within the\n"
"timeout; 4 the MDMS refused the operator's key; 6 configuration or keys\n"
"unusable; 130 interrupted\n",
             LOAD_READ_MARGIN_MS, AMI_MDMS_MAX_PENDING, DEFAULT_DURATION_MS / 1000,
             DEFAULT_FIRST, DEFAULT_LAST, DEFAULT_TIMEOUT_MS, READ_BASELINE_MS / 1000);
}

static void
s_usage_baseline (FILE *out)
{
    fprintf (out,
"usage: ami-load baseline [--seconds S] [--json]\n"
"\n"
"Measures this machine's raw ceiling for ONE CurveZMQ hop over tcp loopback\n"
"between two processes (ami-load and a child it starts), with a real ZAP\n"
"allow-list holding only the sender's key; the keys are throwaway, made in\n"
"memory for the run:\n"
"  - PUSH->PULL messages/s at 100 and at 1000 bytes (counted at the\n"
"    receiver, first to last message);\n"
"  - DEALER->ROUTER echo of %d bytes, one in flight: round-trip latency\n"
"    p50/p90/p99/max, the \"one hop\" a read through the chain compares to.\n"
"\n"
"options:\n"
"  --seconds S   seconds per measurement [%d] (decimals allowed)\n"
"  --json        exactly one JSON object on stdout\n"
"  -v            debug logging on stderr\n"
"\n"
"exit status: 0 measured; 1 a measurement failed; 2 usage\n",
             LOAD_BASELINE_ECHO_BYTES, DEFAULT_BASELINE_MS / 1000);
}

/* ---------------------------------------------------------------------- */
/*  Rendering helpers                                                      */

static void
s_json_string (FILE *out, const char *text)
{
    fputc ('"', out);
    for (const unsigned char *p = (const unsigned char *) text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else
        if (*p < 0x20 || *p == 0x7f)
            fprintf (out, "\\u%04x", *p);
        else
        if (*p >= 0x80)
            fputs ("\\ufffd", out);     //  our strings are ASCII; never emit broken UTF-8
        else
            fputc (*p, out);
    }
    fputc ('"', out);
}

/* A duration in µs for people: "850 µs", "1.23 ms", "2.500 s". */
static const char *
s_human_us (double us, char *buf, size_t cap)
{
    if (us < 1000)
        snprintf (buf, cap, "%.0f µs", us);
    else
    if (us < 1000000)
        snprintf (buf, cap, "%.2f ms", us / 1000);
    else
        snprintf (buf, cap, "%.3f s", us / 1000000);
    return buf;
}

/* Safe ratio for the report (0 when the divisor is 0). */
static double
s_ratio (double a, double b)
{
    return b > 0 ? a / b : 0;
}

/* ---------------------------------------------------------------------- */
/*  Failures                                                               */

static int
s_fail (args_t *args, int exit_code, int code, const char *fmt, ...)
{
    char message [1024];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (message, sizeof message, fmt, ap);
    va_end (ap);
    if (args->json) {
        printf ("{\"command\":");
        s_json_string (stdout, args->command ? args->command : "");
        printf (",\"error\":{\"name\":");
        s_json_string (stdout, ami_errname (code));
        printf (",\"code\":%d,\"message\":", code);
        s_json_string (stdout, message);
        printf ("}}\n");
        fflush (stdout);
    }
    else
        fprintf (stderr, "ami-load: %s\n", message);
    return exit_code;
}

static int
s_usage_error (args_t *args, const char *fmt, const char *arg)
{
    char message [512];
    snprintf (message, sizeof message, fmt, arg);
    if (args->json)
        return s_fail (args, EXIT_USAGE, AMI_E_BAD_REQUEST, "usage: %s", message);
    fprintf (stderr, "ami-load: %s\n(see ami-load %s%s--help)\n", message,
             args->command ? args->command : "", args->command ? " " : "");
    return EXIT_USAGE;
}

/* ---------------------------------------------------------------------- */
/*  Parsing                                                                */

static int
s_parse_uint (const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    if (!text || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    unsigned long long value = strtoull (text, &end, 10);
    if (errno || *end || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

/* Seconds (decimals allowed, optional "s") or "NNNms" -> milliseconds in
   [1, MAX_SECONDS s]. */
static int
s_parse_seconds (const char *text, int64_t *out_ms)
{
    char *end = NULL;
    if (!text || ((*text < '0' || *text > '9') && *text != '.'))
        return -1;
    errno = 0;
    double value = strtod (text, &end);
    if (errno || end == text || isnan (value))
        return -1;
    double ms;
    if (strcmp (end, "ms") == 0)
        ms = value;
    else
    if (*end == '\0' || strcmp (end, "s") == 0)
        ms = value * 1000;
    else
        return -1;
    if (ms < 1 || ms > MAX_SECONDS * 1000.0)
        return -1;
    *out_ms = (int64_t) llround (ms);
    return 0;
}

static int
s_parse_range (const char *text, uint32_t *first, uint32_t *last)
{
    char copy [64];
    if (!text || strlen (text) >= sizeof copy)
        return -1;
    snprintf (copy, sizeof copy, "%s", text);
    char *dash = strchr (copy, '-');
    uint64_t a, b;
    if (dash)
        *dash = '\0';
    if (s_parse_uint (copy, 1, MAX_METER, &a))
        return -1;
    b = a;
    if (dash && s_parse_uint (dash + 1, 1, MAX_METER, &b))
        return -1;
    if (b < a)
        return -1;
    *first = (uint32_t) a;
    *last = (uint32_t) b;
    return 0;
}

/* An interval length: seconds, optionally with s, m or h; must divide a
   day (the MDMS's storage buckets and the meters' clocks assume it). */
static int
s_parse_interval (const char *text, int64_t *out)
{
    char *end = NULL;
    if (!text || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    int64_t unit = strcmp (end, "") == 0 || strcmp (end, "s") == 0 ? 1
                 : strcmp (end, "m") == 0 ? 60 : strcmp (end, "h") == 0 ? 3600 : 0;
    if (errno || unit == 0 || value < 1 || value > 86400 / unit || 86400 % (value * unit))
        return -1;
    *out = value * unit;
    return 0;
}

/* ingest's command line. Returns -1 to go on, or an exit code. */
static int
s_parse_ingest (args_t *args, int argc, char **argv)
{
    for (int i = 2; i < argc; i++) {
        const char *arg = argv [i];
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0) {
            s_usage_ingest (stdout);
            return EXIT_OK;
        }
        if (strcmp (arg, "--json") == 0)
            continue;
        if (strcmp (arg, "-v") == 0 || strcmp (arg, "--verbose") == 0) {
            args->verbose = true;
            continue;
        }
        if (strcmp (arg, "--keep") == 0) {
            args->keep = true;
            continue;
        }
        if (strcmp (arg, "--no-baseline") == 0) {
            args->no_baseline = true;
            continue;
        }
        static const char *const valued [] = {
            "--meters", "--duration", "--fleets", "--aggregators", "--headends", "--block",
            "--interval", "--start", "--limit", "--dir", "--port-base", "--log-level",
            "--map-size", "--deploy", "--ready-timeout", "--drain-timeout", NULL
        };
        bool known = false;
        for (int k = 0; valued [k] && !known; k++)
            known = strcmp (arg, valued [k]) == 0;
        if (!known)
            return s_usage_error (args, arg [0] == '-' ? "unknown option %s"
                                                       : "unexpected argument %s", arg);
        if (i + 1 >= argc)
            return s_usage_error (args, "%s needs a value", arg);
        const char *value = argv [++i];
        if (strcmp (arg, "--meters") == 0) {
            if (s_parse_uint (value, 1, INGEST_MAX_METERS, &args->meters))
                return s_usage_error (args, "--meters wants 1..10000000, not '%s'", value);
        }
        else
        if (strcmp (arg, "--duration") == 0) {
            if (s_parse_seconds (value, &args->duration_ms))
                return s_usage_error (args, "--duration wants seconds (0.001..86400, or NNNms), "
                                      "not '%s'", value);
        }
        else
        if (strcmp (arg, "--fleets") == 0) {
            if (s_parse_uint (value, 1, 1024, &args->fleets))
                return s_usage_error (args, "--fleets wants 1..1024, not '%s'", value);
        }
        else
        if (strcmp (arg, "--aggregators") == 0) {
            if (s_parse_uint (value, 1, 256, &args->aggregators))
                return s_usage_error (args, "--aggregators wants 1..256, not '%s'", value);
        }
        else
        if (strcmp (arg, "--headends") == 0) {
            if (s_parse_uint (value, 1, 16, &args->headends))
                return s_usage_error (args, "--headends wants 1..16, not '%s'", value);
        }
        else
        if (strcmp (arg, "--block") == 0) {
            if (s_parse_uint (value, 1, AMI_MAX_PROFILE_RECORDS, &args->block))
                return s_usage_error (args, "--block wants 1..96, not '%s'", value);
        }
        else
        if (strcmp (arg, "--interval") == 0) {
            if (s_parse_interval (value, &args->interval_s))
                return s_usage_error (args, "--interval wants a length that divides a day "
                                      "(900, 900s, 15m, 1h), not '%s'", value);
        }
        else
        if (strcmp (arg, "--start") == 0) {
            if (s_parse_uint (value, 0, UINT32_MAX, &args->start_s))
                return s_usage_error (args, "--start wants Unix seconds, not '%s'", value);
            args->have_start = true;
        }
        else
        if (strcmp (arg, "--limit") == 0) {
            if (s_parse_uint (value, 0, UINT32_MAX, &args->limit))
                return s_usage_error (args, "--limit wants 0..4294967295 intervals, not '%s'",
                                      value);
        }
        else
        if (strcmp (arg, "--port-base") == 0) {
            //  render.sh's bounds: its highest port is BASE + 300 + aggregators
            if (s_parse_uint (value, 1024, 65000, &args->port_base))
                return s_usage_error (args, "--port-base wants 1024..65000, not '%s'", value);
        }
        else
        if (strcmp (arg, "--ready-timeout") == 0 || strcmp (arg, "--drain-timeout") == 0) {
            int64_t ms = 0;
            if (s_parse_seconds (value, &ms))
                return s_usage_error (args, "timeouts want seconds (0.001..86400), not '%s'",
                                      value);
            if (strcmp (arg, "--ready-timeout") == 0)
                args->ready_ms = ms;
            else
                args->drain_ms = ms;
        }
        else
        if (strcmp (arg, "--log-level") == 0) {
            if (strcmp (value, "error") && strcmp (value, "warn") && strcmp (value, "info")
            &&  strcmp (value, "debug"))
                return s_usage_error (args, "--log-level wants error, warn, info or debug, "
                                      "not '%s'", value);
            args->log_level = value;
        }
        else
        if (strcmp (arg, "--map-size") == 0) {
            //  what render.sh passes on to mdms/map-size: digits and a unit
            size_t digits = strspn (value, "0123456789");
            if (digits == 0 || digits > 12 || strspn (value + digits, "KMGT") != strlen (value + digits)
            ||  strlen (value + digits) > 1)
                return s_usage_error (args, "--map-size wants a size such as 16G or 512M, "
                                      "not '%s'", value);
            args->map_size = value;
        }
        else
        if (strcmp (arg, "--dir") == 0)
            args->dir = value;
        else
            args->deploy_dir = value;
    }
    if (args->duration_ms < 0)
        args->duration_ms = DEFAULT_DURATION_MS;
    if (args->meters == 0)
        args->meters = INGEST_METERS;
    if (args->fleets == 0)
        args->fleets = args->meters >= 2 ? 2 : 1;
    if (args->aggregators == 0)
        args->aggregators = args->fleets < 2 ? args->fleets : 2;
    if (args->headends == 0)
        args->headends = INGEST_HEADENDS;
    if (args->block == 0)
        args->block = INGEST_BLOCK;
    if (args->interval_s <= 0)
        args->interval_s = INGEST_INTERVAL_S;
    if (args->meters % args->fleets)
        return s_usage_error (args, "%s", "--meters must be a multiple of --fleets (every "
                              "fleet carries as many meters)");
    if (args->meters / args->fleets > 1000000)
        return s_usage_error (args, "%s", "at most 1000000 meters per fleet: give more --fleets");
    if (args->aggregators > args->fleets)
        return s_usage_error (args, "%s", "--aggregators cannot exceed --fleets (each "
                              "aggregator has at least one fleet)");
    if (args->port_base && args->port_base + 300 + args->aggregators > 65535)
        return s_usage_error (args, "%s", "--port-base leaves no room for the aggregators' ports");
    if (!args->have_start) {
        //  today, 00:00 UTC: interval ends line up with days in amictl
        uint64_t now_s = (uint64_t) zclock_time () / 1000;
        args->start_s = now_s / 86400 * 86400;
    }
    if (args->start_s % (uint64_t) args->interval_s)
        return s_usage_error (args, "%s", "--start must be a multiple of --interval");
    if (!args->log_level)
        args->log_level = INGEST_LOG_LEVEL;
    if (!args->map_size)
        args->map_size = INGEST_MAP_SIZE;
    if (args->ready_ms <= 0)
        args->ready_ms = INGEST_READY_MS;
    if (args->drain_ms <= 0)
        args->drain_ms = INGEST_DRAIN_MS;
    return -1;
}

/* Returns -1 to go on, or an exit code (EXIT_OK after --help). */
static int
s_parse (args_t *args, int argc, char **argv)
{
    const char *command = argv [1];
    bool is_read = strcmp (command, "read") == 0;
    bool is_baseline = strcmp (command, "baseline") == 0;
    bool is_ingest = strcmp (command, "ingest") == 0;
    bool is_seccost = strcmp (command, "security-cost") == 0;
    if (strcmp (command, "-h") == 0 || strcmp (command, "--help") == 0
    ||  strcmp (command, "help") == 0) {
        s_usage (stdout);
        return EXIT_OK;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp (argv [i], "--json") == 0)
            args->json = true;
    if (is_seccost) {
        args->command = command;
        for (int i = 2; i < argc; i++) {
            if (strcmp (argv [i], "-h") == 0 || strcmp (argv [i], "--help") == 0) {
                s_usage (stdout);
                return EXIT_OK;
            }
            if (strcmp (argv [i], "--json") == 0)
                continue;
            if (strcmp (argv [i], "--seconds") == 0 && i + 1 < argc) {
                char *end = NULL;
                double v = strtod (argv [++i], &end);
                if (!end || *end || !(v > 0 && v <= 60))
                    return s_usage_error (args, "--seconds: want 0 < S <= 60, got '%s'", argv [i]);
                args->seconds_ms = (int64_t) (v * 1000);
                continue;
            }
            return s_usage_error (args, "security-cost: unknown option '%s'", argv [i]);
        }
        return -1;
    }
    if (!is_read && !is_baseline && !is_ingest) {
        if (args->json)
            return s_usage_error (args, "unknown command '%s'", command);
        fprintf (stderr, "ami-load: unknown command '%s'\n\n", command);
        s_usage (stderr);
        return EXIT_USAGE;
    }
    args->command = command;
    if (is_ingest)
        return s_parse_ingest (args, argc, argv);
    bool have_concurrency = false;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv [i];
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0) {
            if (is_read)
                s_usage_read (stdout);
            else
                s_usage_baseline (stdout);
            return EXIT_OK;
        }
        if (strcmp (arg, "--json") == 0)
            continue;
        if (strcmp (arg, "-v") == 0 || strcmp (arg, "--verbose") == 0) {
            args->verbose = true;
            continue;
        }
        static const char *const read_valued [] = {
            "--concurrency", "--duration", "--count", "--meters", "--timeout", "--sockets",
            "-c", "--config", "-e", "--endpoint", "--cert", "--mdms-cert", NULL
        };
        static const char *const baseline_valued [] = { "--seconds", NULL };
        const char *const *valued = is_read ? read_valued : baseline_valued;
        bool known = false;
        for (int k = 0; valued [k] && !known; k++)
            known = strcmp (arg, valued [k]) == 0;
        if (!known) {
            if (is_read && strcmp (arg, "--baseline") == 0) {
                args->with_baseline = true;
                continue;
            }
            return s_usage_error (args, arg [0] == '-' ? "unknown option %s"
                                                       : "unexpected argument %s", arg);
        }
        if (i + 1 >= argc)
            return s_usage_error (args, "%s needs a value", arg);
        const char *value = argv [++i];
        uint64_t n = 0;
        if (strcmp (arg, "--concurrency") == 0) {
            if (s_parse_uint (value, 1, AMI_MDMS_MAX_PENDING, &n))
                return s_usage_error (args, "--concurrency wants 1..10000 (the MDMS's limit "
                                      "of reads in flight), not '%s'", value);
            args->concurrency = (uint32_t) n;
            have_concurrency = true;
        }
        else
        if (strcmp (arg, "--sockets") == 0) {
            if (s_parse_uint (value, 1, MAX_SOCKETS, &n))
                return s_usage_error (args, "--sockets wants 1..64, not '%s'", value);
            args->sockets = (uint32_t) n;
        }
        else
        if (strcmp (arg, "--duration") == 0) {
            if (s_parse_seconds (value, &args->duration_ms))
                return s_usage_error (args, "--duration wants seconds (0.001..86400, or NNNms), "
                                      "not '%s'", value);
        }
        else
        if (strcmp (arg, "--count") == 0) {
            if (s_parse_uint (value, 1, MAX_COUNT, &n))
                return s_usage_error (args, "--count wants 1..100000000, not '%s'", value);
            args->count = n;
        }
        else
        if (strcmp (arg, "--meters") == 0) {
            if (s_parse_range (value, &args->first, &args->last))
                return s_usage_error (args, "--meters wants FIRST-LAST meter numbers "
                                      "(1..999999, FIRST <= LAST), not '%s'", value);
        }
        else
        if (strcmp (arg, "--timeout") == 0) {
            if (ami_client_parse_ms (value, AMI_MDMS_MAX_READ_TIMEOUT_MS, &args->timeout_ms) || args->timeout_ms < 1)
                return s_usage_error (args, "--timeout wants milliseconds (1..60000, the "
                                      "MDMS's limit), not '%s'", value);
        }
        else
        if (strcmp (arg, "--seconds") == 0) {
            if (s_parse_seconds (value, &args->seconds_ms))
                return s_usage_error (args, "--seconds wants seconds (0.001..86400), not '%s'",
                                      value);
        }
        else
        if (strcmp (arg, "-c") == 0 || strcmp (arg, "--config") == 0)
            args->config_path = value;
        else
        if (strcmp (arg, "-e") == 0 || strcmp (arg, "--endpoint") == 0)
            args->endpoint = value;
        else
        if (strcmp (arg, "--cert") == 0)
            args->cert_path = value;
        else
            args->mdms_cert_path = value;
    }
    if (args->count > 0 && args->duration_ms > 0)
        return s_usage_error (args, "%s", "give --duration or --count, not both");
    if (args->duration_ms < 0 && args->count == 0)
        args->duration_ms = DEFAULT_DURATION_MS;
    if (args->sockets > args->concurrency) {
        if (have_concurrency)
            return s_usage_error (args, "%s", "--sockets cannot exceed --concurrency");
        args->concurrency = args->sockets;
    }
    return -1;
}

/* ---------------------------------------------------------------------- */
/*  Configuration: amictl's file and keys                                  */

typedef struct {
    ami_config_t *config;
    ami_cert_t *cert;
    char endpoint [256];
    char server_key [AMI_CERT_KEY_TXT_LEN + 1];
} setup_t;

static void
s_setup_free (setup_t *setup)
{
    ami_cert_destroy (&setup->cert);
    ami_config_destroy (&setup->config);
}

static int
s_setup (args_t *args, setup_t *setup)
{
    char *found = ami_client_config_path (args->config_path);
    const char *path = found;
    int err = 0;
    if (path) {
        setup->config = ami_config_load (path, &err);
        if (!setup->config) {
            int rc = s_fail (args, EXIT_SETUP, err, "cannot load configuration %s: %s", path,
                             ami_strerror (err));
            zstr_free (&found);
            return rc;
        }
    }
    else
    if (args->endpoint && args->cert_path && args->mdms_cert_path)
        setup->config = ami_config_new_empty ();
    else
        return s_fail (args, EXIT_SETUP, AMI_E_CONFIG,
                       "no configuration: give -c FILE (amictl's) or set AMICTL_CONFIG (no "
                       "var/demo/etc/amictl.cfg next to ami-load: is `make demo` running?)");
    zstr_free (&found);
    ami_config_t *config = setup->config;
    if (!config)
        return s_fail (args, EXIT_SETUP, AMI_E_NOMEM, "out of memory");

    const char *endpoint = args->endpoint, *cert_path = args->cert_path,
               *mdms_cert = args->mdms_cert_path;
    const char *missing = ami_client_settings (config, &endpoint, &cert_path, &mdms_cert);
    if (missing)
        return s_fail (args, EXIT_SETUP, AMI_E_CONFIG, "%s: %s is not set",
                       ami_config_origin (config), missing);
    if (strlen (endpoint) >= sizeof setup->endpoint)
        return s_fail (args, EXIT_SETUP, AMI_E_CONFIG, "endpoint '%s' is too long", endpoint);
    snprintf (setup->endpoint, sizeof setup->endpoint, "%s", endpoint);
    if (args->timeout_ms < 0) {
        int64_t timeout = 0;
        if (ami_config_duration_ms (config, "amictl/timeout", DEFAULT_TIMEOUT_MS, &timeout)
        ||  timeout <= 0)
            return s_fail (args, EXIT_SETUP, AMI_E_CONFIG, "%s: amictl/timeout must be > 0",
                           ami_config_origin (config));
        //  The MDMS caps a read's timeout at its own limit anyway.
        args->timeout_ms = timeout < AMI_MDMS_MAX_READ_TIMEOUT_MS ? timeout
                                                                  : AMI_MDMS_MAX_READ_TIMEOUT_MS;
    }
    setup->cert = ami_cert_load (cert_path, &err);
    if (!setup->cert)
        return s_fail (args, EXIT_SETUP, err, "cannot use the operator certificate %s: %s",
                       cert_path, ami_strerror (err));
    err = ami_auth_server_key_from_file (mdms_cert, setup->server_key);
    if (err)
        return s_fail (args, EXIT_SETUP, err, "cannot use the MDMS certificate %s: %s",
                       mdms_cert, ami_strerror (err));
    return -1;
}

/* ---------------------------------------------------------------------- */
/*  baseline                                                               */

static void
s_baseline_json (FILE *out, load_baseline_result_t *b)
{
    load_summary_t echo;
    load_samples_summary (&b->echo_ns, &echo);
    fprintf (out, "{\"secondsEach\":%.3f,\"pushPull\":[", b->seconds_each);
    for (int i = 0; i < LOAD_BASELINE_SIZES; i++) {
        load_push_pull_t *p = &b->push_pull [i];
        fprintf (out, "%s{\"bytes\":%zu,\"messages\":%" PRIu64 ",\"seconds\":%.6f,"
                 "\"messagesPerSecond\":%.1f}", i ? "," : "", p->bytes, p->messages,
                 p->seconds, p->per_second);
    }
    fprintf (out, "],\"echo\":{\"bytes\":%zu,\"inFlight\":1,\"roundTrips\":%" PRIu64 ","
             "\"seconds\":%.6f,\"roundTripsPerSecond\":%.1f,\"latencyUs\":{\"min\":%.1f,"
             "\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"max\":%.1f}}}",
             b->echo_bytes, b->round_trips, b->echo_seconds,
             s_ratio ((double) b->round_trips, b->echo_seconds), echo.min / 1e3,
             echo.mean / 1e3, echo.p50 / 1e3, echo.p90 / 1e3, echo.p99 / 1e3, echo.max / 1e3);
}

static void
s_baseline_text (FILE *out, load_baseline_result_t *b, const char *indent)
{
    load_summary_t echo;
    load_samples_summary (&b->echo_ns, &echo);
    char t1 [32], t2 [32], t3 [32], t4 [32];
    for (int i = 0; i < LOAD_BASELINE_SIZES; i++) {
        load_push_pull_t *p = &b->push_pull [i];
        fprintf (out, "%sPUSH->PULL %4zu B       %10.0f msg/s   (%" PRIu64 " messages in %.2f s)\n",
                 indent, p->bytes, p->per_second, p->messages, p->seconds);
    }
    fprintf (out, "%sDEALER->ROUTER echo %zu B, one in flight: p50 %s  p90 %s  p99 %s  max %s\n"
             "%s    (%" PRIu64 " round trips, %.0f/s)\n", indent, b->echo_bytes,
             s_human_us (echo.p50 / 1e3, t1, sizeof t1), s_human_us (echo.p90 / 1e3, t2, sizeof t2),
             s_human_us (echo.p99 / 1e3, t3, sizeof t3), s_human_us (echo.max / 1e3, t4, sizeof t4),
             indent, b->round_trips, s_ratio ((double) b->round_trips, b->echo_seconds));
}

static int
s_cmd_baseline (args_t *args)
{
    if (args->seconds_ms <= 0)
        args->seconds_ms = DEFAULT_BASELINE_MS;
    load_baseline_result_t b = { 0 };
    if (!args->json)
        fprintf (stderr, "ami-load: measuring one CurveZMQ hop (%.1f s per measurement, "
                 "3 measurements)...\n", args->seconds_ms / 1000.0);
    if (load_baseline_run (args->seconds_ms, &b)) {
        int rc = s_fail (args, zsys_interrupted ? EXIT_INTERRUPTED : EXIT_FAILED,
                         AMI_E_INTERNAL, "baseline failed: %s", b.why);
        load_baseline_result_free (&b);
        return rc;
    }
    if (args->json) {
        printf ("{\"command\":\"baseline\",\"baseline\":");
        s_baseline_json (stdout, &b);
        printf ("}\n");
    }
    else {
        printf ("ami-load baseline: one CurveZMQ hop, tcp loopback, two processes, "
                "ZAP allow-list (%.1f s each)\n", b.seconds_each);
        s_baseline_text (stdout, &b, "  ");
    }
    fflush (stdout);
    load_baseline_result_free (&b);
    return EXIT_OK;
}

/* ---------------------------------------------------------------------- */
/*  security-cost                                                          */

static int
s_cmd_seccost (args_t *args)
{
    //  5 rounds of 200 ms per operation by default: ~8 s in all
    int64_t round_ms = args->seconds_ms > 0 ? args->seconds_ms / 5 : 200;
    if (round_ms < 10)
        round_ms = 10;
    load_seccost_result_t r;
    if (load_seccost_run (round_ms, &r) != AMI_OK)
        return s_fail (args, EXIT_FAILED, AMI_E_INTERNAL, "security-cost: an operation failed");
    if (args->json) {
        printf ("{\"command\":\"security-cost\",\"unit\":\"us\","
                "\"read\":{\"mdmsSignCommand\":%.2f,\"meterVerifyCommand\":%.2f,"
                "\"meterAnswer\":%.2f,\"mdmsCheckAnswer\":%.2f,\"criticalPath\":%.2f},"
                "\"block\":{\"intervals\":%d,\"meterSeal\":%.2f,\"mdmsOpen\":%.2f,"
                "\"total\":%.2f,\"perReading\":%.3f},"
                "\"perMeterOnce\":{\"meterProfileKey\":%.2f,\"mdmsProfileKey\":%.2f}}\n",
                r.mdms_sign_command_us, r.meter_verify_command_us, r.meter_answer_us,
                r.mdms_check_answer_us, r.read_path_us, LOAD_SECCOST_BLOCK,
                r.meter_seal_block_us, r.mdms_open_block_us, r.block_path_us,
                r.per_reading_us, r.meter_profile_key_us, r.mdms_profile_key_us);
    }
    else {
        printf ("ami-load security-cost: application-layer CPU per operation, this machine "
                "(median of 5 rounds of %" PRId64 " ms)\n", round_ms);
        printf ("  on-demand read (critical path, in order):\n"
                "    MDMS  encode + sign READ_REQ             %8.1f us\n"
                "    meter verify command                     %8.1f us\n"
                "    meter encode, seal, sign READ_RESP       %8.1f us\n"
                "    MDMS  verify, open, decode               %8.1f us\n"
                "    total                                    %8.1f us\n",
                r.mdms_sign_command_us, r.meter_verify_command_us, r.meter_answer_us,
                r.mdms_check_answer_us, r.read_path_us);
        printf ("  interval block of %d intervals:\n"
                "    meter encode + AEAD seal                 %8.2f us\n"
                "    MDMS  AEAD open + decode                 %8.2f us\n"
                "    per reading                              %8.3f us (%.0f readings/s per core)\n",
                LOAD_SECCOST_BLOCK, r.meter_seal_block_us, r.mdms_open_block_us,
                r.per_reading_us, r.per_reading_us > 0 ? 1e6 / r.per_reading_us : 0.0);
        printf ("  once per meter (cached): profile key meter side %.1f us, MDMS side %.1f us\n",
                r.meter_profile_key_us, r.mdms_profile_key_us);
    }
    return EXIT_OK;
}

/* ---------------------------------------------------------------------- */
/*  read                                                                   */

static void
s_read_json (args_t *args, setup_t *setup, load_read_result_t *r, load_baseline_result_t *b)
{
    load_summary_t lat;
    load_samples_summary (&r->latency_us, &lat);
    double secs = r->elapsed_us / 1e6;
    double rate = s_ratio ((double) r->ok, secs);
    FILE *out = stdout;
    fprintf (out, "{\"command\":\"read\",\"endpoint\":");
    s_json_string (out, setup->endpoint);
    fprintf (out, ",\"concurrency\":%u,\"sockets\":%u,\"meters\":{\"first\":%u,\"last\":%u},"
             "\"timeoutMs\":%" PRId64 ",", args->concurrency, args->sockets, args->first,
             args->last, args->timeout_ms);
    if (args->count)
        fprintf (out, "\"count\":%" PRIu64 ",\"durationS\":null,", args->count);
    else
        fprintf (out, "\"count\":null,\"durationS\":%.3f,", args->duration_ms / 1000.0);
    fprintf (out, "\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ","
             "\"abandoned\":%" PRIu64 ",\"late\":%" PRIu64 ",\"interrupted\":%s,"
             "\"maxInFlight\":%u,\"elapsedS\":%.6f,\"readsPerSecond\":%.1f,"
             "\"latencyUs\":{\"count\":%zu,\"min\":%" PRId64 ",\"mean\":%.1f,\"p50\":%" PRId64
             ",\"p90\":%" PRId64 ",\"p99\":%" PRId64 ",\"max\":%" PRId64 "},\"errors\":{",
             r->sent, r->ok, r->failed, r->abandoned, r->late,
             r->interrupted ? "true" : "false", r->max_in_flight, secs, rate,
             lat.count, lat.min, lat.mean, lat.p50, lat.p90, lat.p99, lat.max);
    for (size_t i = 0; i < r->errors.kind_count; i++) {
        fprintf (out, "%s", i ? "," : "");
        s_json_string (out, r->errors.kinds [i].name);
        fprintf (out, ":%" PRIu64, r->errors.kinds [i].count);
    }
    fprintf (out, "}");
    if (b) {
        load_summary_t echo;
        load_samples_summary (&b->echo_ns, &echo);
        fprintf (out, ",\"baseline\":");
        s_baseline_json (out, b);
        //  messagesPerRead*: one-hop PUSH->PULL messages/s over reads/s
        fprintf (out, ",\"ratios\":{\"messagesPerRead100\":%.1f,"
                 "\"messagesPerRead1000\":%.1f,\"p50OverEchoP50\":%.3f,"
                 "\"p99OverEchoP99\":%.3f}",
                 s_ratio (b->push_pull [0].per_second, rate),
                 s_ratio (b->push_pull [1].per_second, rate),
                 s_ratio (lat.p50 * 1e3, (double) echo.p50),
                 s_ratio (lat.p99 * 1e3, (double) echo.p99));
    }
    fprintf (out, "}\n");
}

static void
s_read_text (args_t *args, setup_t *setup, load_read_result_t *r, load_baseline_result_t *b)
{
    load_summary_t lat;
    load_samples_summary (&r->latency_us, &lat);
    double secs = r->elapsed_us / 1e6;
    double rate = s_ratio ((double) r->ok, secs);
    char what [64], t [6][32];
    if (args->count)
        snprintf (what, sizeof what, "%" PRIu64 " reads", args->count);
    else
        snprintf (what, sizeof what, "%.1f s", args->duration_ms / 1000.0);
    printf ("ami-load read: %s against %s, concurrency %u (%u socket%s), meters "
            "MTR-%06u..MTR-%06u, timeout %" PRId64 " ms%s\n", what, setup->endpoint,
            args->concurrency, args->sockets, args->sockets == 1 ? "" : "s", args->first,
            args->last, args->timeout_ms, r->interrupted ? "  [INTERRUPTED]" : "");
    printf ("  reads        %" PRIu64 " ok, %" PRIu64 " failed, of %" PRIu64 " sent",
            r->ok, r->failed, r->sent);
    if (r->abandoned)
        printf (" (%" PRIu64 " abandoned)", r->abandoned);
    if (r->late)
        printf (" (%" PRIu64 " late answers)", r->late);
    printf ("\n  throughput   %.1f reads/s  (%.3f s from first request to last answer, "
            "at most %u in flight)\n", rate, secs, r->max_in_flight);
    if (lat.count)
        printf ("  latency      p50 %s  p90 %s  p99 %s  max %s\n"
                "               (min %s, mean %s, %zu samples)\n",
                s_human_us ((double) lat.p50, t [0], 32), s_human_us ((double) lat.p90, t [1], 32),
                s_human_us ((double) lat.p99, t [2], 32), s_human_us ((double) lat.max, t [3], 32),
                s_human_us ((double) lat.min, t [4], 32), s_human_us (lat.mean, t [5], 32),
                lat.count);
    printf ("  errors       ");
    if (r->errors.kind_count == 0)
        printf ("none");
    for (size_t i = 0; i < r->errors.kind_count; i++)
        printf ("%s%s %" PRIu64, i ? ", " : "", r->errors.kinds [i].name,
                r->errors.kinds [i].count);
    printf ("\n");
    for (size_t i = 0; i < r->errors.kind_count; i++)
        if (strcmp (r->errors.kinds [i].name, ami_errname (AMI_E_RATE_LIMITED)) == 0)
            printf ("               (the MDMS's read rate limits refused reads, as they "
                    "should: to measure\n"
                    "               throughput, render the deployment with "
                    "AMI_RATE_OPERATOR=0 AMI_RATE_METER=0)\n");
    if (b) {
        load_summary_t echo;
        load_samples_summary (&b->echo_ns, &echo);
        printf ("  baseline     (this machine, this run)\n");
        s_baseline_text (stdout, b, "    ");
        //  Said as "one read is worth N one-hop messages": the small
        //  fractions reads/s / messages/s are hard to read.
        printf ("  ratios       one read takes the time of %.0f one-hop messages of 100 B "
                "(%.0f of 1000 B)\n",
                s_ratio (b->push_pull [0].per_second, rate),
                s_ratio (b->push_pull [1].per_second, rate));
        printf ("               read p50 = %.1f x one-hop round trip p50; "
                "read p99 = %.1f x its p99\n",
                s_ratio (lat.p50 * 1e3, (double) echo.p50),
                s_ratio (lat.p99 * 1e3, (double) echo.p99));
    }
}

static int
s_cmd_read (args_t *args)
{
    if (args->concurrency == 0)
        args->concurrency = 1;
    if (args->sockets == 0)
        args->sockets = 1;
    if (args->first == 0) {
        args->first = DEFAULT_FIRST;
        args->last = DEFAULT_LAST;
    }
    setup_t setup = { 0 };
    int rc = s_setup (args, &setup);
    if (rc >= 0) {
        s_setup_free (&setup);
        return rc;
    }
    uint32_t meters = args->last - args->first + 1;
    if (args->concurrency > meters)
        fprintf (stderr, "ami-load: --concurrency %u > %u meters: at most %u reads in flight "
                 "(never two to one meter)\n", args->concurrency, meters, meters);

    load_baseline_result_t baseline = { 0 };
    bool have_baseline = false;
    if (args->with_baseline) {
        if (!args->json)
            fprintf (stderr, "ami-load: measuring the one-hop baseline first (%d s per "
                     "measurement)...\n", READ_BASELINE_MS / 1000);
        if (load_baseline_run (READ_BASELINE_MS, &baseline)) {
            rc = s_fail (args, zsys_interrupted ? EXIT_INTERRUPTED : EXIT_FAILED,
                         AMI_E_INTERNAL, "baseline failed: %s", baseline.why);
            load_baseline_result_free (&baseline);
            s_setup_free (&setup);
            return rc;
        }
        have_baseline = true;
    }

    load_read_config_t config = {
        .endpoint = setup.endpoint,
        .cert = setup.cert,
        .server_key = setup.server_key,
        .concurrency = args->concurrency,
        .sockets = args->sockets,
        .count = args->count,
        .duration_ms = args->count ? 0 : args->duration_ms,
        .first = args->first,
        .last = args->last,
        .timeout_ms = (uint32_t) args->timeout_ms,
        .progress = isatty (STDERR_FILENO) && !args->verbose
    };
    load_read_result_t result = { 0 };
    int outcome = load_read_run (&config, &result);
    switch (outcome) {
        case LOAD_READ_DONE:
            if (args->json)
                s_read_json (args, &setup, &result, have_baseline ? &baseline : NULL);
            else
                s_read_text (args, &setup, &result, have_baseline ? &baseline : NULL);
            fflush (stdout);
            if (result.interrupted)
                rc = EXIT_INTERRUPTED;
            else
            if (result.failed > 0 || result.ok == 0)
                rc = EXIT_FAILED;
            else
                rc = EXIT_OK;
            break;
        case LOAD_READ_UNREACHABLE:
        case LOAD_READ_SILENT:
            rc = s_fail (args, EXIT_UNREACHABLE, AMI_E_TIMEOUT, "%s", result.why);
            break;
        case LOAD_READ_REFUSED:
            rc = s_fail (args, EXIT_DENIED, AMI_E_DENIED, "%s", result.why);
            break;
        default:
            rc = s_fail (args, EXIT_SETUP, AMI_E_INTERNAL, "%s", result.why);
            break;
    }
    load_read_result_free (&result);
    load_baseline_result_free (&baseline);
    s_setup_free (&setup);
    return rc;
}

/* ---------------------------------------------------------------------- */
/*  ingest                                                                 */

static double
s_cpu_percent (const load_ingest_proc_t *p, double window_s)
{
    return window_s > 0 && p->cpu_end_s >= p->cpu_start_s
         ? 100.0 * (p->cpu_end_s - p->cpu_start_s) / window_s : 0;
}

static void
s_ingest_json (args_t *args, load_ingest_result_t *r, load_baseline_result_t *b)
{
    FILE *out = stdout;
    fprintf (out, "{\"command\":\"ingest\",\"ok\":%s,\"meters\":%" PRIu64 ",\"fleets\":%"
             PRIu64 ",\"aggregators\":%" PRIu64 ",\"headends\":%" PRIu64 ","
             "\"profile\":{\"intervalS\":%" PRId64 ",\"block\":%" PRIu64 ",\"start\":%" PRIu64
             ",\"limit\":%" PRIu64 ",\"timeScale\":0},\"durationS\":%.3f,\"readyS\":%.3f,",
             r->ok ? "true" : "false", args->meters, args->fleets, args->aggregators,
             args->headends, args->interval_s, args->block, args->start_s, args->limit,
             args->duration_ms / 1000.0, r->ready_s);
    fprintf (out, "\"window\":{\"seconds\":%.3f,\"storedStart\":%" PRIu64 ",\"storedEnd\":%"
             PRIu64 ",\"readingsPerSecond\":%.1f},"
             "\"latencyUs\":{\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64 "},",
             r->window_s, r->stored_start, r->stored_end, r->readings_per_s,
             r->lat_p50_us, r->lat_p99_us, r->lat_max_us);
    fprintf (out, "\"accounting\":{\"settled\":%s,\"drainS\":%.3f,\"produced\":%" PRIu64
             ",\"acked\":%" PRIu64 ",\"stored\":%" PRIu64 ",\"counted\":%s,\"inDatabase\":%"
             PRIu64 ",\"lost\":%" PRIu64 ",\"storedTwice\":%" PRIu64 ",\"duplicatesDropped\":%"
             PRIu64 ",\"conflicts\":%" PRIu64 ",\"blocksRejected\":%" PRIu64 ",\"meters\":%"
             PRIu64 ",\"perMeterMin\":%" PRIu64 ",\"perMeterMax\":%" PRIu64 "},",
             r->settled ? "true" : "false", r->drain_s, r->produced, r->acked, r->stored,
             r->counted ? "true" : "false", r->in_db, r->lost, r->stored_twice, r->dup,
             r->conflict, r->rejected, r->db_meters, r->per_meter_min, r->per_meter_max);
    fprintf (out, "\"storage\":{\"pageSize\":%" PRIu64 ",\"records\":%" PRIu64
             ",\"intervalsBytes\":%" PRIu64 ",\"bytesPerReading\":%.2f,\"slotFill\":%.4f,"
             "\"bytesPerReadingFull\":%.2f,\"fileBytes\":%" PRIu64
             ",\"fileBytesPerReading\":%.2f},\"services\":[",
             r->page_size, r->db_records, r->db_bytes, r->db_bytes_per_reading, r->slot_fill,
             r->full_bytes_per_reading, r->file_bytes, r->file_bytes_per_reading);
    for (uint32_t i = 0; i < r->proc_count; i++) {
        load_ingest_proc_t *p = &r->procs [i];
        fprintf (out, "%s{\"node\":", i ? "," : "");
        s_json_string (out, p->node);
        fprintf (out, ",\"role\":");
        s_json_string (out, p->role);
        fprintf (out, ",\"pid\":%d,\"cpuSeconds\":%.2f,\"cpuPercent\":%.1f,\"rssStartKiB\":%"
                 PRIu64 ",\"rssEndKiB\":%" PRIu64 ",\"rssMaxKiB\":%" PRIu64 ",\"peakRssKiB\":%"
                 PRIu64 ",\"anonStartKiB\":%" PRIu64 ",\"anonEndKiB\":%" PRIu64
                 ",\"anonMaxKiB\":%" PRIu64 ",\"stats\":{", (int) p->pid,
                 p->cpu_end_s >= p->cpu_start_s ? p->cpu_end_s - p->cpu_start_s : 0,
                 s_cpu_percent (p, r->window_s), p->rss_start_kb, p->rss_end_kb, p->rss_max_kb,
                 p->hwm_kb, p->anon_start_kb, p->anon_end_kb, p->anon_max_kb);
        for (uint32_t k = 0; k < p->stat_count; k++) {
            fprintf (out, "%s", k ? "," : "");
            s_json_string (out, p->stats [k].name);
            fprintf (out, ":%" PRIu64, p->stats [k].value);
        }
        fprintf (out, "}}");
    }
    fprintf (out, "],\"deployment\":{\"dir\":");
    s_json_string (out, r->dir);
    fprintf (out, ",\"kept\":%s,\"portBase\":%d}", r->kept ? "true" : "false", r->port_base);
    if (b) {
        load_summary_t echo;
        load_samples_summary (&b->echo_ns, &echo);
        fprintf (out, ",\"baseline\":");
        s_baseline_json (out, b);
        //  readings per one-hop message: > 1 means batching carries more
        //  readings end to end than one CURVE hop carries bare messages
        fprintf (out, ",\"ratios\":{\"readingsPerHopMessage100\":%.3f,"
                 "\"readingsPerHopMessage1000\":%.3f,\"latencyP50OverEchoP50\":%.1f,"
                 "\"latencyP99OverEchoP99\":%.1f}",
                 s_ratio (r->readings_per_s, b->push_pull [0].per_second),
                 s_ratio (r->readings_per_s, b->push_pull [1].per_second),
                 s_ratio ((double) r->lat_p50_us * 1e3, (double) echo.p50),
                 s_ratio ((double) r->lat_p99_us * 1e3, (double) echo.p99));
    }
    fprintf (out, "}\n");
}

static void
s_ingest_text (args_t *args, load_ingest_result_t *r, load_baseline_result_t *b)
{
    char t [3][32];
    printf ("ami-load ingest: %" PRIu64 " meters in %" PRIu64 " fleet(s), %" PRIu64
            " aggregator(s), %" PRIu64 " head end(s); blocks of %" PRIu64 " x %" PRId64
            " s intervals, FLOOD\n", args->meters, args->fleets, args->aggregators,
            args->headends, args->block, args->interval_s);
    printf ("  committed    %.0f readings/s  (%" PRIu64 " readings in %.2f s, the MDMS's "
            "intervals_stored; up after %.1f s)\n", r->readings_per_s,
            r->stored_end - r->stored_start, r->window_s, r->ready_s);
    printf ("  latency      meter seals a block -> durable in LMDB: p50 %s  p99 %s  max %s\n",
            s_human_us ((double) r->lat_p50_us, t [0], 32),
            s_human_us ((double) r->lat_p99_us, t [1], 32),
            s_human_us ((double) r->lat_max_us, t [2], 32));
    printf ("  accounting   produced %" PRIu64 ", stored %" PRIu64 " (MDMS), in LMDB %" PRIu64
            ": lost %" PRIu64 ", stored twice %" PRIu64 "  %s\n", r->produced, r->stored,
            r->in_db, r->lost, r->stored_twice, r->ok ? "[OK]" : "[FAILED]");
    printf ("               %s in %.1f s after the stop; %" PRIu64 " meters with data, %" PRIu64
            "..%" PRIu64 " readings each; %" PRIu64 " duplicate(s) dropped, %" PRIu64
            " conflict(s), %" PRIu64 " block(s) rejected\n",
            r->settled ? "settled" : "NOT settled", r->drain_s, r->db_meters, r->per_meter_min,
            r->per_meter_max, r->dup, r->conflict, r->rejected);
    if (!r->counted)
        printf ("               the database could not be counted: %s\n", r->why);
    printf ("  storage      %.1f bytes/reading in LMDB \"%s\" (%.1f MiB); %.1f bytes/reading for "
            "the whole file (%.1f MiB)\n", r->db_bytes_per_reading, LOAD_INGEST_DB_NAME,
            r->db_bytes / 1048576.0, r->file_bytes_per_reading, r->file_bytes / 1048576.0);
    printf ("               %.0f %% of the records' slots filled; %.1f bytes/reading once every "
            "record is full\n", 100 * r->slot_fill, r->full_bytes_per_reading);
    //  anon: the process's own memory; RSS adds the file pages it maps
    //  (for the MDMS: its LMDB file, which grows with every reading)
    printf ("  %-12s %7s %8s %11s %11s %11s %11s %11s\n", "service", "cpu %", "cpu s",
            "RSS start", "RSS end", "peak RSS", "anon start", "anon end");
    for (uint32_t i = 0; i < r->proc_count; i++) {
        load_ingest_proc_t *p = &r->procs [i];
        printf ("  %-12s %7.1f %8.2f %7.1f MiB %7.1f MiB %7.1f MiB %7.1f MiB %7.1f MiB\n",
                p->node, s_cpu_percent (p, r->window_s),
                p->cpu_end_s >= p->cpu_start_s ? p->cpu_end_s - p->cpu_start_s : 0,
                p->rss_start_kb / 1024.0, p->rss_end_kb / 1024.0, p->hwm_kb / 1024.0,
                p->anon_start_kb / 1024.0, p->anon_end_kb / 1024.0);
    }
    if (b) {
        load_summary_t echo;
        load_samples_summary (&b->echo_ns, &echo);
        printf ("  baseline     (this machine, this run, before the deployment started)\n");
        s_baseline_text (stdout, b, "    ");
        printf ("  ratios       %.2f readings committed per one-hop 100 B message (%.2f per "
                "1000 B message)\n",
                s_ratio (r->readings_per_s, b->push_pull [0].per_second),
                s_ratio (r->readings_per_s, b->push_pull [1].per_second));
        printf ("               latency p50 = %.0f x one-hop round trip p50; p99 = %.0f x its "
                "p99\n", s_ratio ((double) r->lat_p50_us * 1e3, (double) echo.p50),
                s_ratio ((double) r->lat_p99_us * 1e3, (double) echo.p99));
    }
    if (r->kept)
        printf ("  deployment   kept running in %s (port base %d): amictl -c %s/etc/amictl.cfg; "
                "stop: supervisorctl -c %s/supervisord.conf shutdown\n", r->dir, r->port_base,
                r->dir, r->dir);
}

/* The directory holding render.sh: --deploy, $AMI_DEPLOY_DIR, beside the
   binary (a source tree), or an installed share/ami-bus/deploy. */
static char *
s_deploy_dir (args_t *args)
{
    const char *given = args->deploy_dir ? args->deploy_dir : getenv ("AMI_DEPLOY_DIR");
    if (given && *given) {
        char script [512];
        snprintf (script, sizeof script, "%s/render.sh", given);
        return access (script, R_OK) == 0 ? realpath (given, NULL) : NULL;
    }
    static const char *const candidates [] = {
        "../deploy/render.sh", "../share/ami-bus/deploy/render.sh", NULL
    };
    for (int i = 0; candidates [i]; i++) {
        char *found = ami_config_beside_exe (candidates [i]);
        if (found) {
            char *slash = strrchr (found, '/');
            *slash = '\0';
            char *dir = realpath (found, NULL);
            zstr_free (&found);
            return dir;
        }
    }
    return NULL;
}

static int
s_cmd_ingest (args_t *args)
{
    char exe [512];
    ssize_t len = readlink ("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return s_fail (args, EXIT_SETUP, AMI_E_INTERNAL, "cannot find my own executable");
    exe [len] = '\0';
    *strrchr (exe, '/') = '\0';
    char *deploy = s_deploy_dir (args);
    if (!deploy)
        return s_fail (args, EXIT_SETUP, AMI_E_CONFIG, "cannot find deploy/render.sh (give "
                       "--deploy DIR or set AMI_DEPLOY_DIR)");
    load_baseline_result_t baseline = { 0 };
    bool have_baseline = false;
    if (!args->no_baseline) {
        if (!args->json)
            fprintf (stderr, "ami-load: measuring the one-hop baseline first (%d s per "
                     "measurement)...\n", INGEST_BASELINE_MS / 1000);
        if (load_baseline_run (INGEST_BASELINE_MS, &baseline)) {
            int rc = s_fail (args, zsys_interrupted ? EXIT_INTERRUPTED : EXIT_FAILED,
                             AMI_E_INTERNAL, "baseline failed: %s", baseline.why);
            load_baseline_result_free (&baseline);
            free (deploy);
            return rc;
        }
        have_baseline = true;
    }
    load_ingest_config_t config = {
        .bin_dir = exe,
        .deploy_dir = deploy,
        .dir = args->dir,
        .keep = args->keep,
        .meters = (uint32_t) args->meters,
        .fleets = (uint32_t) args->fleets,
        .aggregators = (uint32_t) args->aggregators,
        .headends = (uint32_t) args->headends,
        .interval_s = (uint32_t) args->interval_s,
        .block = (uint32_t) args->block,
        .start_s = args->start_s,
        .limit = (uint32_t) args->limit,
        .port_base = (int) args->port_base,
        .log_level = args->log_level,
        .map_size = args->map_size,
        .duration_ms = args->duration_ms,
        .ready_ms = args->ready_ms,
        .drain_ms = args->drain_ms,
        .progress = isatty (STDERR_FILENO) && !args->verbose,
        .verbose = args->verbose || !args->json
    };
    load_ingest_result_t *result = calloc (1, sizeof *result);
    if (!result) {
        load_baseline_result_free (&baseline);
        free (deploy);
        return s_fail (args, EXIT_FAILED, AMI_E_NOMEM, "out of memory");
    }
    int rc;
    switch (load_ingest_run (&config, result)) {
        case LOAD_INGEST_DONE:
            if (args->json)
                s_ingest_json (args, result, have_baseline ? &baseline : NULL);
            else
                s_ingest_text (args, result, have_baseline ? &baseline : NULL);
            fflush (stdout);
            rc = result->ok ? EXIT_OK : EXIT_FAILED;
            break;
        case LOAD_INGEST_NOT_READY:
            rc = s_fail (args, EXIT_UNREACHABLE, AMI_E_TIMEOUT, "%s", result->why);
            break;
        case LOAD_INGEST_INTERRUPTED:
            rc = s_fail (args, EXIT_INTERRUPTED, AMI_E_INTERNAL, "%s", result->why);
            break;
        default:
            rc = s_fail (args, EXIT_SETUP, AMI_E_INTERNAL, "%s", result->why);
            break;
    }
    free (result);
    load_baseline_result_free (&baseline);
    free (deploy);
    return rc;
}

int
main (int argc, char **argv)
{
    if (argc >= 2 && strcmp (argv [1], LOAD_BASELINE_RECEIVER_CMD) == 0) {
        ami_log_init ("ami-load-receiver", NULL, AMI_LOG_WARN);
        return load_baseline_receiver_main ();
    }
    if (argc < 2) {
        s_usage (stderr);
        return EXIT_USAGE;
    }
    args_t args = { .duration_ms = -1, .timeout_ms = -1 };
    int rc = s_parse (&args, argc, argv);
    if (rc >= 0)
        return rc;
    //  Library logging goes to stderr (stdout is for the report).
    ami_log_init ("ami-load", NULL, args.verbose ? AMI_LOG_DEBUG : AMI_LOG_WARN);
    if (strcmp (args.command, "read") == 0)
        return s_cmd_read (&args);
    if (strcmp (args.command, "ingest") == 0)
        return s_cmd_ingest (&args);
    if (strcmp (args.command, "security-cost") == 0)
        return s_cmd_seccost (&args);
    return s_cmd_baseline (&args);
}
