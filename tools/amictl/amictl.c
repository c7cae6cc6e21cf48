/*  amictl - the Utility User Interface of ami-bus: an operator's command
    line to the MDMS API (DESIGN.md section 4, "UI <-> MDMS").

    Command line, configuration and exit codes live here; the socket is
    common/ami_client.c (shared with ami-load), the renderings
    amictl_print.c, amictl_intervals.c (and the gap finder) and
    amictl_json.c.
    The usage text below is the manual (also tools/amictl/README.md).
*/
#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_config.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_client.h"
#include "amictl_intervals.h"
#include "amictl_json.h"
#include "amictl_print.h"

/* Exit codes (the contract with scripts: see s_usage). */
#define EXIT_OK         0
#define EXIT_FAILED     1   /* the request failed: unreachable, no route, meter refused, ... */
#define EXIT_USAGE      2
#define EXIT_TIMEOUT    3
#define EXIT_DENIED     4   /* refused by policy: role (DENIED) or rate limit (RATE_LIMITED) */
#define EXIT_UNKNOWN    5   /* no such meter in the MDMS registry */
#define EXIT_SETUP      6   /* amictl's own configuration or keys are missing or unusable */

/* The reply to a request may take the request's own timeout (the MDMS
   answers TIMEOUT by then) plus this margin for the hops back to us. */
#define REPLY_MARGIN_MS     2000
/* Request timeout when neither --timeout nor amictl/timeout says: the
   MDMS's own default (3 s) plus room for its retries to finish. */
#define DEFAULT_TIMEOUT_MS  5000
/* status --wait: each poll waits this long for an answer at most, then
   asks again this often: a service that just became ready is seen within
   a quarter of a second. */
#define POLL_ANSWER_MS      2000
#define POLL_INTERVAL_MS    250
/* history --last default, and a bound so a typo cannot ask for millions
   (also the most audit entries amictl holds: ~17 MB). */
#define DEFAULT_LAST        10
#define MAX_LAST            100000
/* audit without --since or --last: the most recent entries, a screenful. */
#define DEFAULT_AUDIT_LAST  20
/* gaps: the interval length when --interval is not given: the MDMS's and
   the meters' default (15-minute load profile, OBIS 1.0.99.1.0). */
#define DEFAULT_INTERVAL_S  900
/* Most node ids amictl/expect may list: a bound on one config line (256
   names fill ~8 KiB), not on the status rows, which are paged. */
#define MAX_EXPECT          256

static const char *const s_known [] = {
    "amictl/endpoint", "amictl/mdms-cert", "amictl/cert", "amictl/timeout", "amictl/expect",
    "log/level", NULL
};

typedef struct {
    //  command line
    const char *config_path;
    const char *endpoint;
    const char *cert_path;
    const char *mdms_cert_path;
    bool verbose, json;
    const char *command;
    const char *meter;
    int64_t timeout_ms;         /* -1 = not given */
    int64_t last;               /* -1 = not given */
    int64_t wait_s;             /* -1 = not given */
    const char *since;          /* audit --since, as given */
    uint64_t since_ms;
    bool verify;                /* audit --verify */
    const char *from, *to;      /* history/gaps --from/--to, as given */
    uint64_t from_ms, to_ms;    /* ... parsed */
    int64_t interval_s;         /* gaps --interval; -1 = not given */
    //  resolved
    ami_config_t *config;
    char *expect [MAX_EXPECT];
    int expect_count;
    ami_client_t *client;
    ami_cert_t *cert;
} ctx_t;

static void
s_usage (FILE *out)
{
    fprintf (out,
"usage: amictl [-c CONFIG] [-e ENDPOINT] [--cert FILE] [--mdms-cert FILE] [-v]\n"
"              COMMAND [ARGS] [--json]\n"
"\n"
"The Utility User Interface of ami-bus: asks the MDMS, over CurveZMQ with\n"
"your own operator certificate, and prints the answer.\n"
"\n"
"commands:\n"
"  read METER [--timeout MS] [--json]\n"
"        on-demand read of METER's registers through the whole chain (MDMS,\n"
"        broker, head end, aggregator, meter); prints every register (OBIS\n"
"        code, name, value, unit), the meter's time and the correlation id.\n"
"        METER is an id (MTR-000150) or a meter number (150).\n"
"  history METER [--last N] [--json]\n"
"        the N [%d] most recent stored on-demand readings of METER, newest\n"
"        first\n"
"  history METER --from T [--to T] [--json]\n"
"        METER's stored interval data (load profile): every interval whose\n"
"        END time is from --from to --to (inclusive; no --to: up to the\n"
"        newest), oldest first: end time, +A and -A energy registers (Wh),\n"
"        status; paged from the MDMS until complete. --json: IEC 61968-9\n"
"        MeterReadings with IntervalBlocks. T as for audit --since\n"
"        (2026-11-26T00:00:00Z, Unix seconds, or relative: -1d).\n"
"  recover METER --from T --to T [--timeout MS] [--json]\n"
"        an on-demand read of METER (printed as by read) whose signed command\n"
"        also asks the meter to send its load profile again: the intervals\n"
"        whose END time is from --from to --to (both inclusive, --to less than\n"
"        31 days after --from; T as for gaps). They do not come with the\n"
"        answer: the meter sends them through ingest, and the MDMS stores\n"
"        each interval once; then `amictl gaps METER --from T --to T` shows\n"
"        what is still missing.\n"
"        For blocks an aggregator acknowledged and lost (SEC-INT-5). A meter\n"
"        sends again only what it still keeps (by default its last 31 days).\n"
"        Role: OPERATOR.\n"
"  gaps METER --from T [--to T] [--interval D] [--json]\n"
"        the interval ends from --from to --to (inclusive; no --to: now)\n"
"        that have no stored record: each run of missing intervals (first,\n"
"        last, count), then the number missing of the number expected.\n"
"        --interval: the meters' interval length [15m] (900, 900s, 15m, 1h).\n"
"        Exit 0 whether or not intervals are missing.\n"
"  meters [--json]\n"
"        the meter registry: id, aggregator, last read, state\n"
"  status [--wait SECONDS] [--json]\n"
"        every service the MDMS hears from: role, node, state, uptime, age\n"
"        of the last report, and below it the counters of that report\n"
"        (name=value: the MDMS's ingest figures, each fleet's profile_*,\n"
"        each relay's batches_*, queue fills, bounds and refusals); paged\n"
"        from the MDMS until complete. --wait: ask until every service listed\n"
"        is READY and every node of amictl/expect is present, or fail with\n"
"        exit 3.\n"
"  verify METER [--json]\n"
"        re-check every stored reading of METER against the proof of origin\n"
"        kept with it (the meter's signature, the sealed payload); prints how\n"
"        many were checked and each failure (reading time, reason). Exit 1\n"
"        if any failed. Roles: OPERATOR, AUDITOR.\n"
"  audit [--since T] [--last N] [--json]\n"
"        the operator audit log, oldest first: seq, time, operator, role,\n"
"        action, meter, correlation id, result, hash prefix. --since: entries\n"
"        from T on (T = 2026-11-26T08:00:00Z, Unix seconds, or relative:\n"
"        -90s, -30m, -1h, -2d); --last: only the N most recent of them.\n"
"        Neither: the last %d. Role: AUDITOR.\n"
"  audit --verify [--json]\n"
"        re-check the whole hash chain of the audit log and its tail against\n"
"        the anchor file the MDMS keeps outside the database: prints \"audit\n"
"        chain intact: N entries\", or each failing seq and why (altered or\n"
"        reordered, removed, a range cut from the end; \"anchor\": the anchor\n"
"        file deleted or forged); the first failure is where the log was\n"
"        tampered with. Exit 1 on any failure. Role: AUDITOR.\n"
"  customer METER [--json]\n"
"        the customer record of METER (name, service address, account),\n"
"        kept encrypted by the MDMS. Role: OPERATOR.\n"
"\n"
"options:\n"
"  -c, --config FILE     configuration (ZPL). Default: $AMICTL_CONFIG, else\n"
"                        <amictl's dir>/../var/demo/etc/amictl.cfg, else\n"
"                        " AMI_CLIENT_SYSTEM_CONFIG "\n"
"  -e, --endpoint EP     MDMS API endpoint (amictl/endpoint)\n"
"      --cert FILE       your operator certificate (amictl/cert); the secret\n"
"                        is FILE_secret and must not be readable by others\n"
"      --mdms-cert FILE  the MDMS's public certificate (amictl/mdms-cert)\n"
"      --timeout MS      request timeout [amictl/timeout, %d]; amictl waits\n"
"                        %d ms longer than that for the answer\n"
"      --json            print exactly one JSON object on stdout (also for\n"
"                        errors: {\"error\":{\"code\",\"name\",\"message\",\"origin\",\n"
"                        \"correlationId\"}}); shapes in tools/amictl/README.md\n"
"  -v, --verbose         debug logging on stderr\n"
"  -h, --help            this text\n"
"\n"
"configuration keys:\n"
"  amictl/endpoint       e.g. tcp://127.0.0.1:7100\n"
"  amictl/mdms-cert      path of the MDMS's public certificate (its CURVE key)\n"
"  amictl/cert           path of the operator's certificate\n"
"  amictl/timeout        request timeout [5s]\n"
"  amictl/expect         node ids status --wait requires, separated by spaces\n"
"                        or commas (the key may also be repeated)\n"
"  log/level             error | warn | info | debug [warn]\n"
"\n"
"exit status:\n"
"  0  success\n"
"  1  the request failed: meter unreachable (AMI_E_UNREACHABLE), no head end\n"
"     reaches its aggregator (AMI_E_NO_ROUTE), the meter refused the command\n"
"     (AMI_E_BAD_SIGNATURE, _REPLAY, _EXPIRED, _WRONG_TARGET), or any other\n"
"     error the MDMS reported; verify and audit --verify: a record failed\n"
"  2  usage error\n"
"  3  timeout: the MDMS said AMI_E_TIMEOUT, or no answer came in time\n"
"     (status --wait: not everything was ready by the deadline)\n"
"  4  refused by policy: your role may not do this (AMI_E_DENIED), your key\n"
"     is not on the MDMS's allow-list, or a rate limit (AMI_E_RATE_LIMITED:\n"
"     try again later)\n"
"  5  unknown meter (AMI_E_UNKNOWN_METER)\n"
"  6  amictl's own setup: configuration or key file missing, unreadable,\n"
"     invalid, or a secret key readable by others\n",
             DEFAULT_LAST, DEFAULT_AUDIT_LAST, DEFAULT_TIMEOUT_MS, REPLY_MARGIN_MS);
}

static int
s_exit_for (int code)
{
    switch (code) {
        case AMI_OK:              return EXIT_OK;
        case AMI_E_TIMEOUT:       return EXIT_TIMEOUT;
        case AMI_E_DENIED:        return EXIT_DENIED;
        case AMI_E_RATE_LIMITED:  return EXIT_DENIED;
        case AMI_E_UNKNOWN_METER: return EXIT_UNKNOWN;
        default:                  return EXIT_FAILED;
    }
}

/* Print one JSON document on stdout (one line). */
static void
s_emit (amictl_json_t *j)
{
    const char *text = amictl_json_text (j);
    if (text)
        printf ("%s\n", text);
    else
        fprintf (stderr, "amictl: out of memory writing JSON\n");
    fflush (stdout);
}

/* Report a failure (JSON on stdout or text on stderr); returns exit_code. */
static int
s_fail (ctx_t *ctx, int exit_code, int code, const char *origin, const uint8_t *corr,
        const char *fmt, ...)
{
    char message [1024];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_error (j, code, message, origin, corr);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else {
        char hex [2 * AMI_REQUEST_ID_SIZE + 1] = "";
        if (corr)
            ami_request_id_format (corr, hex);
        //  The message may quote a peer's free text: never let it drive the
        //  terminal (C0 and C1 escape sequences, fake lines, bad UTF-8).
        char safe [sizeof message];
        fprintf (stderr, "amictl: %s", amictl_safe_text (message, safe, sizeof safe));
        if (code)
            fprintf (stderr, " [%s]", ami_errname (code));
        if (origin && *origin)
            fprintf (stderr, " (reported by %s)", origin);
        if (corr)
            fprintf (stderr, " correlation id %s", hex);
        fputc ('\n', stderr);
    }
    return exit_code;
}

static int
s_usage_error (ctx_t *ctx, const char *fmt, const char *arg)
{
    char message [512];
    snprintf (message, sizeof message, fmt, arg);
    if (ctx->json)
        s_fail (ctx, EXIT_USAGE, AMI_E_BAD_REQUEST, NULL, NULL, "usage: %s", message);
    else
        fprintf (stderr, "amictl: %s\n(see amictl --help)\n", message);
    return EXIT_USAGE;
}

/* The failure of a request that got an ERROR, a timeout or a refusal. */
static int
s_request_failed (ctx_t *ctx, const char *what, int rc, ami_msg_t *reply,
                  const uint8_t corr [AMI_REQUEST_ID_SIZE])
{
    if (reply && reply->type == AMI_MSG_ERROR) {
        const ami_error_t *e = &reply->error;
        return s_fail (ctx, s_exit_for (rc), rc, e->origin, corr, "%s failed: %s%s%s", what,
                       ami_strerror (rc), e->text [0] ? ": " : "", e->text);
    }
    //  No reply at all: the client knows why (no connection, refused key...)
    return s_fail (ctx, s_exit_for (rc), rc, NULL, corr, "%s failed: %s", what,
                   ami_client_why (ctx->client));
}

/* ---------------------------------------------------------------------- */
/*  Command line                                                           */

static int
s_parse_count (const char *text, int64_t max, int64_t *out)
{
    char *end = NULL;
    if (!text || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || *end || value > max)
        return -1;
    *out = value;
    return 0;
}

/* An interval length: seconds, optionally with s, m, h or d; 1 s .. 1 day. */
static int
s_parse_interval (const char *text, int64_t *out)
{
    char *end = NULL;
    if (!text || *text < '0' || *text > '9')
        return -1;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    int64_t unit = strcmp (end, "") == 0 || strcmp (end, "s") == 0 ? 1
                 : strcmp (end, "m") == 0 ? 60 : strcmp (end, "h") == 0 ? 3600
                 : strcmp (end, "d") == 0 ? 86400 : 0;
    if (errno || unit == 0 || value < 1 || value > 86400 / unit)
        return -1;
    *out = value * unit;
    return 0;
}

/* Returns -1 to go on, or an exit code (0 after --help). */
static int
s_parse (ctx_t *ctx, int argc, char **argv)
{
    const char *positional [3] = { 0 };
    int npos = 0;
    //  --json anywhere decides how even a usage error is reported.
    for (int i = 1; i < argc; i++)
        if (strcmp (argv [i], "--json") == 0)
            ctx->json = true;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        bool has_value = strcmp (arg, "-c") == 0 || strcmp (arg, "--config") == 0
                      || strcmp (arg, "-e") == 0 || strcmp (arg, "--endpoint") == 0
                      || strcmp (arg, "--cert") == 0 || strcmp (arg, "--mdms-cert") == 0
                      || strcmp (arg, "--timeout") == 0 || strcmp (arg, "--last") == 0
                      || strcmp (arg, "--wait") == 0 || strcmp (arg, "--since") == 0
                      || strcmp (arg, "--from") == 0 || strcmp (arg, "--to") == 0
                      || strcmp (arg, "--interval") == 0;
        const char *value = NULL;
        if (has_value) {
            if (i + 1 >= argc)
                return s_usage_error (ctx, "%s needs a value", arg);
            value = argv [++i];
        }
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0 || strcmp (arg, "help") == 0) {
            s_usage (stdout);
            return EXIT_OK;
        }
        else
        if (strcmp (arg, "--json") == 0)
            ;
        else
        if (strcmp (arg, "-v") == 0 || strcmp (arg, "--verbose") == 0)
            ctx->verbose = true;
        else
        if (strcmp (arg, "-c") == 0 || strcmp (arg, "--config") == 0)
            ctx->config_path = value;
        else
        if (strcmp (arg, "-e") == 0 || strcmp (arg, "--endpoint") == 0)
            ctx->endpoint = value;
        else
        if (strcmp (arg, "--cert") == 0)
            ctx->cert_path = value;
        else
        if (strcmp (arg, "--mdms-cert") == 0)
            ctx->mdms_cert_path = value;
        else
        if (strcmp (arg, "--timeout") == 0) {
            //  The wire carries a u32 of milliseconds; a day is plenty.
            if (ami_client_parse_ms (value, 86400000, &ctx->timeout_ms) || ctx->timeout_ms == 0)
                return s_usage_error (ctx, "--timeout wants milliseconds (1..86400000), not '%s'",
                                      value);
        }
        else
        if (strcmp (arg, "--last") == 0) {
            if (s_parse_count (value, MAX_LAST, &ctx->last) || ctx->last == 0)
                return s_usage_error (ctx, "--last wants a count of 1..100000, not '%s'", value);
        }
        else
        if (strcmp (arg, "--wait") == 0) {
            if (s_parse_count (value, 86400, &ctx->wait_s))
                return s_usage_error (ctx, "--wait wants seconds (0..86400), not '%s'", value);
        }
        else
        if (strcmp (arg, "--since") == 0) {
            ctx->since = value;
            if (amictl_parse_time (value, (uint64_t) zclock_time (), &ctx->since_ms))
                return s_usage_error (ctx, "--since wants 2026-11-26T08:00:00Z, Unix seconds "
                                      "or -30m/-1h/-2d, not '%s'", value);
        }
        else
        if (strcmp (arg, "--from") == 0 || strcmp (arg, "--to") == 0) {
            bool from = strcmp (arg, "--from") == 0;
            uint64_t ms = 0;
            if (amictl_parse_time (value, (uint64_t) zclock_time (), &ms))
                return s_usage_error (ctx, from ? "--from wants 2026-11-26T00:00:00Z, Unix "
                                                  "seconds or -30m/-1h/-2d, not '%s'"
                                                : "--to wants 2026-11-26T00:00:00Z, Unix "
                                                  "seconds or -30m/-1h/-2d, not '%s'", value);
            if (from) {
                ctx->from = value;
                ctx->from_ms = ms;
            }
            else {
                ctx->to = value;
                ctx->to_ms = ms;
            }
        }
        else
        if (strcmp (arg, "--interval") == 0) {
            if (s_parse_interval (value, &ctx->interval_s))
                return s_usage_error (ctx, "--interval wants 1s..1d (900, 900s, 15m, 1h), "
                                      "not '%s'", value);
        }
        else
        if (strcmp (arg, "--verify") == 0)
            ctx->verify = true;
        else
        if (arg [0] == '-' && arg [1] != '\0')
            return s_usage_error (ctx, "unknown option %s", arg);
        else
        if (npos < 3)
            positional [npos++] = arg;
        else
            return s_usage_error (ctx, "unexpected argument %s", arg);
    }
    if (npos == 0) {
        if (ctx->json)
            return s_usage_error (ctx, "%s", "no command given");
        s_usage (stderr);
        return EXIT_USAGE;
    }
    ctx->command = positional [0];
    bool is_gaps = strcmp (ctx->command, "gaps") == 0;
    bool is_history = strcmp (ctx->command, "history") == 0;
    bool is_recover = strcmp (ctx->command, "recover") == 0;
    bool needs_meter = strcmp (ctx->command, "read") == 0 || is_history || is_gaps || is_recover
                    || strcmp (ctx->command, "verify") == 0
                    || strcmp (ctx->command, "customer") == 0;
    bool is_audit = strcmp (ctx->command, "audit") == 0;
    bool known = needs_meter || is_audit || strcmp (ctx->command, "meters") == 0
              || strcmp (ctx->command, "status") == 0;
    if (!known)
        return s_usage_error (ctx, "unknown command '%s'", ctx->command);
    if (needs_meter && npos != 2)
        return s_usage_error (ctx, "%s needs exactly one METER", ctx->command);
    if (!needs_meter && npos != 1)
        return s_usage_error (ctx, "%s takes no argument", ctx->command);
    if (ctx->last >= 0 && strcmp (ctx->command, "history") != 0 && !is_audit)
        return s_usage_error (ctx, "--last is for history and audit, not %s", ctx->command);
    if (ctx->since && !is_audit)
        return s_usage_error (ctx, "--since is for audit, not %s", ctx->command);
    if (ctx->verify && !is_audit)
        return s_usage_error (ctx, "--verify is for audit (verify METER checks readings), not %s",
                              ctx->command);
    if (ctx->verify && (ctx->since || ctx->last >= 0))
        return s_usage_error (ctx, "%s", "audit --verify checks the whole chain: "
                              "no --since or --last");
    if (ctx->wait_s >= 0 && strcmp (ctx->command, "status") != 0)
        return s_usage_error (ctx, "--wait is for status, not %s", ctx->command);
    if ((ctx->from || ctx->to) && !is_history && !is_gaps && !is_recover)
        return s_usage_error (ctx, "--from and --to are for history, gaps and recover, not %s",
                              ctx->command);
    if (is_recover && (!ctx->from || !ctx->to))
        return s_usage_error (ctx, "%s", "recover needs --from T and --to T");
    //  (from - 1 ms, to]: the whole seconds from..to, as gaps counts them
    if (is_recover && (ctx->from_ms == 0 || ctx->to_ms <= ctx->from_ms - 1
                   || ctx->to_ms / 1000 - (ctx->from_ms - 1) / 1000 > AMI_PROFILE_RECOVER_MAX_S))
        return s_usage_error (ctx, "%s", "recover: --from must be after 1970-01-01T00:00:00Z "
                              "and --to less than 31 days after it");
    if (is_history && ctx->to && !ctx->from)
        return s_usage_error (ctx, "%s", "history --to needs --from (the interval data "
                              "of a range)");
    if (is_history && ctx->from && ctx->last >= 0)
        return s_usage_error (ctx, "%s", "history: --last is for on-demand readings; "
                              "--from/--to shows every interval of the range");
    if (is_gaps && !ctx->from)
        return s_usage_error (ctx, "%s", "gaps needs --from T (and --to T, default now)");
    if (ctx->interval_s >= 0 && !is_gaps)
        return s_usage_error (ctx, "--interval is for gaps, not %s", ctx->command);
    if (ctx->from && ctx->to && ctx->to_ms < ctx->from_ms)
        return s_usage_error (ctx, "%s", "--to is before --from");
    ctx->meter = needs_meter ? positional [1] : NULL;
    return -1;
}

/* ---------------------------------------------------------------------- */
/*  Configuration and keys                                                 */

static int
s_add_expect (ctx_t *ctx, const char *list)
{
    char *copy = strdup (list);
    if (!copy)
        return -1;
    char *save = NULL;
    for (char *id = strtok_r (copy, " ,\t", &save); id; id = strtok_r (NULL, " ,\t", &save)) {
        if (!ami_id_valid (id) || ctx->expect_count >= MAX_EXPECT) {
            free (copy);
            return -1;
        }
        ctx->expect [ctx->expect_count] = strdup (id);
        if (!ctx->expect [ctx->expect_count]) {
            free (copy);
            return -1;
        }
        ctx->expect_count++;
    }
    free (copy);
    return 0;
}

static int
s_setup (ctx_t *ctx)
{
    //  1. which configuration
    char *found = ami_client_config_path (ctx->config_path);
    const char *path = found;
    int err = 0;
    if (path) {
        ctx->config = ami_config_load (path, &err);
        if (!ctx->config) {
            int rc = s_fail (ctx, EXIT_SETUP, err, NULL, NULL, "cannot load configuration %s: %s",
                             path, ami_strerror (err));
            free (found);
            return rc;
        }
    }
    else
    if (ctx->endpoint && ctx->cert_path && ctx->mdms_cert_path)
        ctx->config = ami_config_new_empty ();
    else {
        return s_fail (ctx, EXIT_SETUP, AMI_E_CONFIG, NULL, NULL,
                       "no configuration: give -c FILE or set AMICTL_CONFIG (no "
                       "var/demo/etc/amictl.cfg next to amictl, no " AMI_CLIENT_SYSTEM_CONFIG ")");
    }
    free (found);
    ami_config_t *config = ctx->config;
    if (!config || ami_config_check_known (config, s_known))
        return s_fail (ctx, EXIT_SETUP, AMI_E_CONFIG, NULL, NULL,
                       "configuration %s has an unknown key (see the log line above)",
                       config ? ami_config_origin (config) : "?");

    int level = AMI_LOG_WARN;
    const char *level_name = NULL;
    ami_config_str (config, "log/level", NULL, &level_name);
    if (ctx->verbose)
        level = AMI_LOG_DEBUG;
    else
    if (level_name && ami_log_level_parse (level_name, &level))
        return s_fail (ctx, EXIT_SETUP, AMI_E_CONFIG, NULL, NULL, "%s: log/level '%s' is not "
                       "error, warn, info or debug", ami_config_origin (config), level_name);
    ami_log_set_level (level);

    //  2. values: the command line wins over the file
    const char *endpoint = ctx->endpoint, *cert_path = ctx->cert_path,
               *mdms_cert = ctx->mdms_cert_path;
    const char *missing = ami_client_settings (config, &endpoint, &cert_path, &mdms_cert);
    if (missing)
        return s_fail (ctx, EXIT_SETUP, AMI_E_CONFIG, NULL, NULL, "%s: %s is not set",
                       ami_config_origin (config), missing);
    if (ctx->timeout_ms < 0) {
        int64_t timeout = 0;
        if (ami_config_duration_ms (config, "amictl/timeout", DEFAULT_TIMEOUT_MS, &timeout)
        ||  timeout <= 0 || timeout > 86400000)
            return s_fail (ctx, EXIT_SETUP, AMI_E_CONFIG, NULL, NULL,
                           "%s: amictl/timeout must be 1ms..24h", ami_config_origin (config));
        ctx->timeout_ms = timeout;
    }
    zconfig_t *section = zconfig_locate (ami_config_zconfig (config), "amictl");
    for (zconfig_t *c = section ? zconfig_child (section) : NULL; c; c = zconfig_next (c))
        if (strcmp (zconfig_name (c), "expect") == 0 && zconfig_value (c)
        &&  s_add_expect (ctx, zconfig_value (c)))
            return s_fail (ctx, EXIT_SETUP, AMI_E_CONFIG, NULL, NULL,
                           "%s: amictl/expect must list at most %d valid node ids",
                           ami_config_origin (config), MAX_EXPECT);

    //  3. keys: our own (secret permission-checked) and the MDMS's public one
    ctx->cert = ami_cert_load (cert_path, &err);
    if (!ctx->cert)
        return s_fail (ctx, EXIT_SETUP, err, NULL, NULL, "cannot use the operator certificate "
                       "%s: %s", cert_path, ami_strerror (err));
    char server_key [AMI_CERT_KEY_TXT_LEN + 1];
    err = ami_auth_server_key_from_file (mdms_cert, server_key);
    if (err)
        return s_fail (ctx, EXIT_SETUP, err, NULL, NULL, "cannot use the MDMS certificate %s: %s",
                       mdms_cert, ami_strerror (err));
    ctx->client = ami_client_new (endpoint, ctx->cert, server_key, &err);
    if (!ctx->client)
        return s_fail (ctx, EXIT_SETUP, err, NULL, NULL, "cannot set up a connection to %s: %s",
                       endpoint, ami_strerror (err));
    ami_log_debug ("operator %s (%s), MDMS %s", ami_cert_node_id (ctx->cert),
                   ami_cert_meta (ctx->cert, "ami-role") ? ami_cert_meta (ctx->cert, "ami-role")
                                                         : "no ami-role", endpoint);
    return -1;
}

static int64_t
s_deadline (ctx_t *ctx)
{
    return zclock_mono () + ctx->timeout_ms + REPLY_MARGIN_MS;
}

/* Normalise METER: a bare number n means MTR-%06u. */
static int
s_meter_id (ctx_t *ctx, char out [AMI_MAX_ID + 1])
{
    const char *m = ctx->meter;
    int64_t number = 0;
    if (s_parse_count (m, UINT32_MAX, &number) == 0 && number > 0)
        snprintf (out, AMI_MAX_ID + 1, "MTR-%06u", (unsigned) number);
    else
    if (ami_id_valid (m))
        snprintf (out, AMI_MAX_ID + 1, "%s", m);
    else
        return s_usage_error (ctx, "'%s' is not a meter id (1..32 characters of "
                              "[A-Za-z0-9._:-], e.g. MTR-000150)", m);
    return -1;
}

/* ---------------------------------------------------------------------- */
/*  Commands                                                               */

/* read, and recover (SEC-INT-5): a read whose command also asks the
   meter for its interval data of [--from, --to] again. */
static int
s_cmd_read (ctx_t *ctx)
{
    ami_api_req_t req = { 0 };
    int rc = s_meter_id (ctx, req.meter_id);
    if (rc >= 0)
        return rc;
    bool recover = strcmp (ctx->command, "recover") == 0;
    req.action = recover ? AMI_ACT_RECOVER : AMI_ACT_READ;
    if (recover) {
        //  The API range is (from_ms, to_ms] of interval ends; --from is
        //  inclusive, as for gaps (checked > 0 by s_parse)
        req.from_ms = ctx->from_ms - 1;
        req.to_ms = ctx->to_ms;
    }
    req.timeout_ms = (uint32_t) ctx->timeout_ms;
    ami_msg_t *reply = NULL;
    char what [64];
    snprintf (what, sizeof what, "%s %s", recover ? "recover" : "read", req.meter_id);
    rc = ami_client_request (ctx->client, &req, s_deadline (ctx), &reply);
    if (rc)
        return s_request_failed (ctx, what, rc, reply, req.corr);
    if (reply->type != AMI_MSG_API_READINGS || reply->api_readings.count < 1)
        return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr,
                       "%s: the MDMS answered %s with no reading", what,
                       ami_msg_type_name (reply->type));
    const ami_stored_reading_t *row = &reply->api_readings.readings [0];
    if (strcmp (row->reading.meter_id, req.meter_id) != 0)
        return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr,
                       "%s: the MDMS answered with a reading of %s", what,
                       row->reading.meter_id);
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (!j)
            return EXIT_FAILED;
        if (recover)
            amictl_json_recover (j, req.corr, row, req.meter_id, ctx->from_ms, ctx->to_ms);
        else
            amictl_json_meter_readings (j, req.corr, row, 1);
        s_emit (j);
        amictl_json_destroy (&j);
    }
    else {
        amictl_print_reading (stdout, row, req.corr);
        if (recover)
            amictl_print_recover (stdout, req.meter_id, ctx->from_ms, ctx->to_ms);
    }
    return EXIT_OK;
}

/* Every interval record of the meter in [from_ms, to_ms], paged. Returns
   -1 with *records (free it) and *count, or an exit code (reported). */
static int
s_fetch_intervals (ctx_t *ctx, const char *meter_id, uint64_t to_ms,
                   ami_interval_t **records, size_t *count, uint8_t corr [AMI_REQUEST_ID_SIZE])
{
    char what [64];
    snprintf (what, sizeof what, "interval data of %s", meter_id);
    ami_msg_t *reply = NULL;
    int rc = ami_client_intervals (ctx->client, meter_id, ctx->from_ms, to_ms,
                                   (uint32_t) ctx->timeout_ms, ctx->timeout_ms + REPLY_MARGIN_MS,
                                   records, count, corr, &reply);
    if (rc == AMI_OK)
        return -1;
    if (reply && reply->type == AMI_MSG_ERROR) {
        //  a later page's ERROR names that page's request
        const uint8_t *page_corr = reply->error.has_request_id ? reply->error.request_id : corr;
        return s_request_failed (ctx, what, rc, reply, page_corr);
    }
    if (rc == AMI_E_TIMEOUT || rc == AMI_E_DENIED)
        return s_request_failed (ctx, what, rc, NULL, corr);
    return s_fail (ctx, EXIT_FAILED, rc, NULL, corr, "%s: %s", what,
                   ami_client_why (ctx->client));
}

/* history --from/--to: stored interval data of a range, oldest first. */
static int
s_cmd_intervals (ctx_t *ctx, const char *meter_id)
{
    ami_interval_t *records = NULL;
    size_t count = 0;
    uint8_t corr [AMI_REQUEST_ID_SIZE] = { 0 };
    uint64_t to_ms = ctx->to ? ctx->to_ms : 0;
    int rc = s_fetch_intervals (ctx, meter_id, to_ms, &records, &count, corr);
    if (rc >= 0)
        return rc;
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_intervals (j, corr, meter_id, ctx->from_ms, to_ms, records, count);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_intervals (stdout, meter_id, ctx->from_ms, to_ms, records, count);
    free (records);
    return EXIT_OK;
}

/* gaps: the interval ends of [from, to] that have no stored record. */
static int
s_cmd_gaps (ctx_t *ctx)
{
    char meter_id [AMI_MAX_ID + 1];
    int rc = s_meter_id (ctx, meter_id);
    if (rc >= 0)
        return rc;
    uint64_t to_ms = ctx->to ? ctx->to_ms : (uint64_t) zclock_time ();
    uint32_t interval_s = (uint32_t) (ctx->interval_s > 0 ? ctx->interval_s : DEFAULT_INTERVAL_S);
    ami_interval_t *records = NULL;
    size_t count = 0;
    uint8_t corr [AMI_REQUEST_ID_SIZE] = { 0 };
    //  to_ms 0 would mean "unbounded" on the wire; --to 0 covers nothing.
    if (to_ms > 0) {
        rc = s_fetch_intervals (ctx, meter_id, to_ms, &records, &count, corr);
        if (rc >= 0)
            return rc;
    }
    amictl_gaps_t gaps;
    rc = amictl_gaps_find (records, count, ctx->from_ms, to_ms, interval_s, &gaps);
    free (records);
    if (rc)
        return s_fail (ctx, EXIT_FAILED, AMI_E_NOMEM, NULL, NULL, "out of memory");
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_gaps (j, corr, meter_id, &gaps);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_gaps (stdout, meter_id, &gaps);
    amictl_gaps_free (&gaps);
    return EXIT_OK;
}

static int
s_cmd_history (ctx_t *ctx)
{
    ami_api_req_t req = { 0 };
    int rc = s_meter_id (ctx, req.meter_id);
    if (rc >= 0)
        return rc;
    if (ctx->from)
        return s_cmd_intervals (ctx, req.meter_id);
    size_t want = (size_t) (ctx->last > 0 ? ctx->last : DEFAULT_LAST), have = 0;
    ami_stored_reading_t *rows = calloc (want, sizeof *rows);
    if (!rows)
        return s_fail (ctx, EXIT_FAILED, AMI_E_NOMEM, NULL, NULL, "out of memory");
    uint8_t first_corr [AMI_REQUEST_ID_SIZE] = { 0 };
    char what [64];
    snprintf (what, sizeof what, "history of %s", req.meter_id);
    uint64_t to_ms = 0;             //  0 = up to now; then below the oldest seen
    while (have < want) {
        ami_msg_t *reply = NULL;
        req.action = AMI_ACT_HISTORY;
        req.from_ms = 0;
        req.to_ms = to_ms;
        req.limit = (uint32_t) (want - have < AMI_MAX_API_READINGS ? want - have
                                                                  : AMI_MAX_API_READINGS);
        req.timeout_ms = (uint32_t) ctx->timeout_ms;
        rc = ami_client_request (ctx->client, &req, s_deadline (ctx), &reply);
        if (have == 0)
            memcpy (first_corr, req.corr, sizeof first_corr);
        if (rc) {
            free (rows);
            return s_request_failed (ctx, what, rc, reply, req.corr);
        }
        if (reply->type != AMI_MSG_API_READINGS) {
            free (rows);
            return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr,
                           "%s: unexpected %s", what, ami_msg_type_name (reply->type));
        }
        const ami_api_readings_t *page = &reply->api_readings;
        for (uint32_t i = 0; i < page->count && have < want; i++)
            rows [have++] = page->readings [i];
        //  Next page: strictly older than the oldest row so far.
        if (!page->more || page->count == 0 || have == 0 || rows [have - 1].reading.read_ms <= 1)
            break;
        to_ms = rows [have - 1].reading.read_ms - 1;
    }
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_meter_readings (j, first_corr, rows, have);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_history (stdout, req.meter_id, rows, have);
    free (rows);
    return EXIT_OK;
}

static int
s_cmd_meters (ctx_t *ctx)
{
    ami_meter_row_t *rows = NULL;
    size_t have = 0, cap = 0;
    uint8_t first_corr [AMI_REQUEST_ID_SIZE] = { 0 };
    ami_api_req_t req = { 0 };
    while (true) {
        ami_msg_t *reply = NULL;
        req.action = AMI_ACT_METERS;
        req.limit = AMI_MAX_API_METERS;
        req.timeout_ms = (uint32_t) ctx->timeout_ms;
        //  req.meter_id: page after this id ("" = from the start)
        int rc = ami_client_request (ctx->client, &req, s_deadline (ctx), &reply);
        if (have == 0)
            memcpy (first_corr, req.corr, sizeof first_corr);
        if (rc) {
            free (rows);
            return s_request_failed (ctx, "meters", rc, reply, req.corr);
        }
        if (reply->type != AMI_MSG_API_METERS) {
            free (rows);
            return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr,
                           "meters: unexpected %s", ami_msg_type_name (reply->type));
        }
        const ami_api_meters_t *page = &reply->api_meters;
        if (have + page->count > cap) {
            size_t ncap = cap ? cap * 2 : 256;
            while (ncap < have + page->count)
                ncap *= 2;
            ami_meter_row_t *grown = realloc (rows, ncap * sizeof *rows);
            if (!grown) {
                free (rows);
                return s_fail (ctx, EXIT_FAILED, AMI_E_NOMEM, NULL, NULL, "out of memory");
            }
            rows = grown;
            cap = ncap;
        }
        memcpy (rows + have, page->meters, page->count * sizeof *rows);
        have += page->count;
        //  A server that says "more" but sends nothing would loop forever.
        if (!page->more || page->count == 0)
            break;
        snprintf (req.meter_id, sizeof req.meter_id, "%s", rows [have - 1].meter_id);
    }
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_meters (j, first_corr, rows, have);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_meters (stdout, rows, have);
    free (rows);
    return EXIT_OK;
}

/* Is everything ready? Writes what is not into why. */
static bool
s_all_ready (ctx_t *ctx, const ami_client_status_t *status, char *why, size_t cap)
{
    why [0] = '\0';
    size_t len = 0;
    bool ready = status->count > 0;
    if (status->count == 0)
        snprintf (why, cap, "the MDMS lists no service yet");
    for (size_t i = 0; i < status->count; i++)
        if (status->rows [i].state != AMI_STATE_READY) {
            ready = false;
            len = strlen (why);
            snprintf (why + len, cap - len, "%s%s is %s", len ? ", " : "",
                      status->rows [i].node_id,
                      amictl_state_name (status->rows [i].state));
        }
    for (int e = 0; e < ctx->expect_count; e++) {
        bool present = false;
        for (size_t i = 0; i < status->count && !present; i++)
            present = strcmp (status->rows [i].node_id, ctx->expect [e]) == 0;
        if (!present) {
            ready = false;
            len = strlen (why);
            snprintf (why + len, cap - len, "%s%s is missing", len ? ", " : "", ctx->expect [e]);
        }
    }
    return ready;
}

static void
s_show_status (ctx_t *ctx, const ami_client_status_t *status)
{
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_status (j, status->first_corr, status->rows, status->count);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_status (stdout, status->rows, status->count);
}

/* A failed status walk: the page's ERROR, no answer, or our side. */
static int
s_status_failed (ctx_t *ctx, int rc, ami_msg_t *reply, const ami_client_status_t *status)
{
    if (reply && reply->type == AMI_MSG_ERROR)
        return s_request_failed (ctx, "status", rc, reply, status->last_corr);
    if (rc == AMI_E_TIMEOUT || rc == AMI_E_DENIED || !ami_client_why (ctx->client) [0])
        return s_request_failed (ctx, "status", rc, NULL, status->last_corr);
    return s_fail (ctx, EXIT_FAILED, rc, NULL, status->last_corr, "status: %s",
                   ami_client_why (ctx->client));
}

/* status: every page of API_STATUS (ami_client_status), then the rows. */
static int
s_cmd_status (ctx_t *ctx)
{
    ami_client_status_t status = { 0 };
    uint32_t timeout_ms = (uint32_t) ctx->timeout_ms;
    if (ctx->wait_s < 0) {
        ami_msg_t *reply = NULL;
        int rc = ami_client_status (ctx->client, timeout_ms, ctx->timeout_ms + REPLY_MARGIN_MS,
                                    &status, &reply);
        int exit_code = EXIT_OK;
        if (rc == AMI_OK)
            s_show_status (ctx, &status);
        else
            exit_code = s_status_failed (ctx, rc, reply, &status);
        ami_client_status_free (&status);
        return exit_code;
    }
    //  --wait: ask again and again until ready or the deadline. `last` is
    //  the last complete walk.
    int64_t deadline = zclock_mono () + ctx->wait_s * 1000;
    ami_client_status_t last = { 0 };
    char why [1024] = "no answer from the MDMS yet";
    bool have_last = false;
    bool first = true;
    while (!zsys_interrupted) {
        int64_t now = zclock_mono ();
        int64_t until = now + POLL_ANSWER_MS < deadline ? now + POLL_ANSWER_MS : deadline;
        //  Ask at least once, with a fair chance of an answer (--wait 0).
        if (first)
            until = now + POLL_ANSWER_MS;
        first = false;
        ami_msg_t *reply = NULL;
        int rc = ami_client_status (ctx->client, timeout_ms, until - now, &status, &reply);
        if (rc == AMI_E_DENIED || rc == AMI_E_RATE_LIMITED) {
            rc = s_status_failed (ctx, rc, reply, &status);
            ami_client_status_free (&status);
            ami_client_status_free (&last);
            return rc;
        }
        if (rc == AMI_OK) {
            ami_client_status_t done = last;    //  keep this walk, drop the older
            last = status;
            status = done;
            have_last = true;
            if (s_all_ready (ctx, &last, why, sizeof why)) {
                s_show_status (ctx, &last);
                ami_client_status_free (&status);
                ami_client_status_free (&last);
                return EXIT_OK;
            }
        }
        else
        if (rc == AMI_E_TIMEOUT)
            snprintf (why, sizeof why, "%s", ami_client_why (ctx->client));
        else
        if (ami_client_why (ctx->client) [0])        //  our side (an ERROR leaves it "")
            snprintf (why, sizeof why, "%s", ami_client_why (ctx->client));
        else
            snprintf (why, sizeof why, "the MDMS answered %s", ami_errname (rc));
        if (zclock_mono () + POLL_INTERVAL_MS >= deadline)
            break;
        zclock_sleep (POLL_INTERVAL_MS);
    }
    if (have_last && !ctx->json)
        amictl_print_status (stdout, last.rows, last.count);
    int rc = s_fail (ctx, EXIT_TIMEOUT, AMI_E_TIMEOUT, NULL, NULL,
                     "status: not ready after %" PRId64 " s: %s", ctx->wait_s, why);
    ami_client_status_free (&status);
    ami_client_status_free (&last);
    return rc;
}

static int
s_cmd_verify (ctx_t *ctx)
{
    ami_api_req_t req = { 0 };
    int rc = s_meter_id (ctx, req.meter_id);
    if (rc >= 0)
        return rc;
    req.action = AMI_ACT_VERIFY;        //  from_ms = to_ms = 0: every stored reading
    req.timeout_ms = (uint32_t) ctx->timeout_ms;
    char what [64];
    snprintf (what, sizeof what, "verify %s", req.meter_id);
    ami_msg_t *reply = NULL;
    rc = ami_client_request (ctx->client, &req, s_deadline (ctx), &reply);
    if (rc)
        return s_request_failed (ctx, what, rc, reply, req.corr);
    if (reply->type != AMI_MSG_API_VERIFY)
        return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr, "%s: unexpected %s",
                       what, ami_msg_type_name (reply->type));
    const ami_api_verify_t *result = &reply->api_verify;
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_verify (j, req.meter_id, result);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_verify (stdout, req.meter_id, result);
    return result->failed ? EXIT_FAILED : EXIT_OK;
}

static int
s_cmd_customer (ctx_t *ctx)
{
    ami_api_req_t req = { 0 };
    int rc = s_meter_id (ctx, req.meter_id);
    if (rc >= 0)
        return rc;
    req.action = AMI_ACT_CUSTOMER;
    req.timeout_ms = (uint32_t) ctx->timeout_ms;
    char what [64];
    snprintf (what, sizeof what, "customer of %s", req.meter_id);
    ami_msg_t *reply = NULL;
    rc = ami_client_request (ctx->client, &req, s_deadline (ctx), &reply);
    if (rc)
        return s_request_failed (ctx, what, rc, reply, req.corr);
    if (reply->type != AMI_MSG_API_CUSTOMER)
        return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr, "%s: unexpected %s",
                       what, ami_msg_type_name (reply->type));
    if (strcmp (reply->api_customer.meter_id, req.meter_id) != 0)
        return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr,
                       "%s: the MDMS answered with the customer of %s", what,
                       reply->api_customer.meter_id);
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_customer (j, &reply->api_customer);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_customer (stdout, &reply->api_customer);
    return EXIT_OK;
}

static int
s_cmd_audit_verify (ctx_t *ctx)
{
    ami_api_req_t req = { 0 };
    req.action = AMI_ACT_AUDIT_VERIFY;
    req.timeout_ms = (uint32_t) ctx->timeout_ms;
    ami_msg_t *reply = NULL;
    int rc = ami_client_request (ctx->client, &req, s_deadline (ctx), &reply);
    if (rc)
        return s_request_failed (ctx, "audit --verify", rc, reply, req.corr);
    if (reply->type != AMI_MSG_API_VERIFY)
        return s_fail (ctx, EXIT_FAILED, AMI_E_INTERNAL, NULL, req.corr,
                       "audit --verify: unexpected %s", ami_msg_type_name (reply->type));
    const ami_api_verify_t *result = &reply->api_verify;
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_verify (j, NULL, result);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_audit_verify (stdout, result);
    return result->failed ? EXIT_FAILED : EXIT_OK;
}

/*  audit: the log from --since on, the most recent `want` entries. */
static int
s_cmd_audit (ctx_t *ctx)
{
    if (ctx->verify)
        return s_cmd_audit_verify (ctx);
    size_t want = ctx->last > 0 ? (size_t) ctx->last
                : ctx->since ? MAX_LAST : DEFAULT_AUDIT_LAST;
    ami_audit_row_t *rows = calloc (want, sizeof *rows);
    if (!rows)
        return s_fail (ctx, EXIT_FAILED, AMI_E_NOMEM, NULL, NULL, "out of memory");
    uint8_t first_corr [AMI_REQUEST_ID_SIZE] = { 0 };
    size_t count = 0, total = 0;
    ami_msg_t *reply = NULL;
    int rc = ami_client_audit (ctx->client, ctx->since ? ctx->since_ms : 0,
                                  (uint32_t) ctx->timeout_ms, ctx->timeout_ms + REPLY_MARGIN_MS,
                                  want, rows, &count, &total, first_corr, &reply);
    if (rc) {
        free (rows);
        if (rc == AMI_E_INTERNAL || rc == AMI_E_NOMEM)
            return s_fail (ctx, EXIT_FAILED, rc, NULL, first_corr, "audit: %s",
                           ami_client_why (ctx->client));
        //  a later page's ERROR names that page's request
        const uint8_t *corr = reply && reply->type == AMI_MSG_ERROR && reply->error.has_request_id
                            ? reply->error.request_id : first_corr;
        return s_request_failed (ctx, "audit", rc, reply, corr);
    }
    if (ctx->since && ctx->last < 0 && total > want)
        fprintf (stderr, "amictl: %zu entries since %s; showing the most recent %zu\n",
                 total, ctx->since, want);
    if (ctx->json) {
        amictl_json_t *j = amictl_json_new ();
        if (j) {
            amictl_json_audit (j, first_corr, rows, count);
            s_emit (j);
            amictl_json_destroy (&j);
        }
    }
    else
        amictl_print_audit (stdout, rows, count);
    free (rows);
    return EXIT_OK;
}

int
main (int argc, char **argv)
{
    ctx_t ctx = { .timeout_ms = -1, .last = -1, .wait_s = -1, .interval_s = -1 };
    int rc = s_parse (&ctx, argc, argv);
    if (rc >= 0)
        return rc;
    //  Library logging goes to stderr (stdout is for the answer), quiet
    //  unless something is wrong or -v.
    ami_log_init ("amictl", NULL, ctx.verbose ? AMI_LOG_DEBUG : AMI_LOG_WARN);
    rc = s_setup (&ctx);
    if (rc < 0) {
        if (strcmp (ctx.command, "read") == 0 || strcmp (ctx.command, "recover") == 0)
            rc = s_cmd_read (&ctx);
        else
        if (strcmp (ctx.command, "history") == 0)
            rc = s_cmd_history (&ctx);
        else
        if (strcmp (ctx.command, "gaps") == 0)
            rc = s_cmd_gaps (&ctx);
        else
        if (strcmp (ctx.command, "meters") == 0)
            rc = s_cmd_meters (&ctx);
        else
        if (strcmp (ctx.command, "verify") == 0)
            rc = s_cmd_verify (&ctx);
        else
        if (strcmp (ctx.command, "customer") == 0)
            rc = s_cmd_customer (&ctx);
        else
        if (strcmp (ctx.command, "audit") == 0)
            rc = s_cmd_audit (&ctx);
        else
            rc = s_cmd_status (&ctx);
    }
    ami_client_destroy (&ctx.client);
    ami_cert_destroy (&ctx.cert);
    ami_config_destroy (&ctx.config);
    for (int i = 0; i < ctx.expect_count; i++)
        free (ctx.expect [i]);
    return rc;
}
