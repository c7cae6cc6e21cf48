/*  ami_log.h - process logging for every ami-bus service and tool.

    All logging goes through CZMQ's zsys log (zsys_error, zsys_warning,
    zsys_info, zsys_debug), so libzmq/CZMQ messages and ours share one
    format and one stream:

        I: (ami-mdms[MDMS-1]) 26-11-26 07:12:41 read completed meter=...

    CZMQ 4.2 has no level filter, so use the macros below instead of calling
    zsys_* directly: they check a process-wide level first (and do not even
    evaluate their arguments when the level is off).

    Typical start of a service main():

        ami_config_t *config = ami_config_load (path, &err);
        int level;
        if (ami_log_level_from_config (config, verbose, &level))
            return EXIT_FAILURE;            //  bad log/level, already logged
        ami_log_init ("ami-mdms", node_id, level);

    Thread safety: the level is an atomic and may be read and changed from
    any thread (actors log from their own threads). ami_log_init() sets
    process-wide zsys state: call it once, from main(), before starting
    actors.

    Process-wide state: the level and the identity string are the only
    global mutable state here; logging is process-wide by nature (zsys keeps
    the stream and identity process-wide too).
*/
#ifndef AMI_LOG_H_INCLUDED
#define AMI_LOG_H_INCLUDED

#include <czmq.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ami_config_t ami_config_t;

/*  Log levels, lowest (most important) first. A message is emitted when its
    level is <= the process level. */
typedef enum {
    AMI_LOG_ERROR = 0,      /* something failed; the service may go on */
    AMI_LOG_WARN  = 1,      /* suspicious or degraded, worth a look */
    AMI_LOG_INFO  = 2,      /* normal lifecycle events (the default) */
    AMI_LOG_DEBUG = 3       /* per-message detail; what -v turns on */
} ami_log_level_t;

/*  Set the zsys log identity to "SERVICE[NODE_ID]" (or "SERVICE" when
    node_id is NULL or empty), send log lines to stderr (stdout stays free
    for a tool's real output, e.g. amictl's JSON), and set the level.
    service must be non-NULL, e.g. "ami-mdms". The identity is truncated to
    127 bytes.

    The identity is kept in a static buffer (see ami_log_ident) and that
    buffer is what zsys_set_logident receives: CZMQ 4.2.1 copies the string,
    but the static copy keeps the identity valid whatever zsys does with
    the pointer. Calls zsys_init() (creates CZMQ's global context and
    installs its SIGINT/SIGTERM handler) as a side effect. */
void
    ami_log_init (const char *service, const char *node_id, int level);

/*  Set the process-wide level (clamped to AMI_LOG_ERROR..AMI_LOG_DEBUG). */
void
    ami_log_set_level (int level);

/*  Return the process-wide level (AMI_LOG_INFO until set). */
int
    ami_log_level (void);

/*  Return true if a message at this level would be emitted. */
bool
    ami_log_enabled (int level);

/*  Return the identity set by ami_log_init ("" before). Static storage. */
const char *
    ami_log_ident (void);

/*  Parse a level name, case-insensitive: "error", "warn" or "warning",
    "info", "debug". On success stores the level in *level and returns
    AMI_OK; on an unknown name returns AMI_E_CONFIG and leaves *level
    untouched (nothing is logged: the caller knows where the name came
    from). */
int
    ami_log_level_parse (const char *name, int *level);

/*  Return the canonical name of a level ("error", "warn", "info", "debug"),
    or "?" for a value out of range. Static storage. */
const char *
    ami_log_level_name (int level);

/*  Work out the level a service should run at: the config key "log/level"
    (default "info"; config may be NULL), overridden by verbose (-v) which
    means debug. Returns AMI_OK and stores the level, or AMI_E_CONFIG (with
    a log line naming the bad value) if log/level is not a level name. */
int
    ami_log_level_from_config (ami_config_t *config, bool verbose, int *level);

/*  Escape a string for a log line (SEC-VAL-2): text that came from a peer
    (ERROR and EVENT text, ids in a complaint) must not forge log lines or
    drive a terminal. Control characters (C0, DEL) become \n, \r, \t, \e
    or \xNN; C1 controls (U+0080..U+009F) become \u00NN; a byte that is
    not part of valid UTF-8 becomes \xNN; a backslash becomes \\, so the
    escaping is unambiguous. Valid printable UTF-8 is kept as it is. Writes
    at most cap bytes including the NUL (cap >= 1), never splits an escape
    or a character, and returns the length written. */
size_t
    ami_log_escape (char *out, size_t cap, const char *in);

/*  Format, escape (ami_log_escape) and emit one line at level. A line is
    cut at 1 KiB before escaping. Use the macros below. */
void
    ami_log_emit (int level, const char *format, ...) CHECK_PRINTF (2);

/*  The logging macros: printf-style, checked by the compiler through
    ami_log_emit's prototype. Arguments are not evaluated when the level is
    off. Every line is escaped, whatever its arguments hold. */
#define ami_log_error(...) \
    do { if (ami_log_enabled (AMI_LOG_ERROR)) ami_log_emit (AMI_LOG_ERROR, __VA_ARGS__); } while (0)
#define ami_log_warn(...) \
    do { if (ami_log_enabled (AMI_LOG_WARN)) ami_log_emit (AMI_LOG_WARN, __VA_ARGS__); } while (0)
#define ami_log_info(...) \
    do { if (ami_log_enabled (AMI_LOG_INFO)) ami_log_emit (AMI_LOG_INFO, __VA_ARGS__); } while (0)
#define ami_log_debug(...) \
    do { if (ami_log_enabled (AMI_LOG_DEBUG)) ami_log_emit (AMI_LOG_DEBUG, __VA_ARGS__); } while (0)

/*  Warnings caused by peers' input (malformed frames, refused requests)
    go through a limiter, so a flood of junk cannot flood the log: at most
    `burst` lines per window of AMI_LOG_LIMIT_WINDOW_MS; the rest are
    counted, and the count is logged once the next window opens. One
    limiter per actor (not thread-safe); initialise with
    AMI_LOG_LIMIT_INIT (burst). */
#define AMI_LOG_LIMIT_WINDOW_MS 1000
typedef struct {
    int64_t window;             /* start of the current window (zclock_mono) */
    unsigned count;             /* lines logged in it */
    unsigned long suppressed;   /* lines dropped since the last report */
    unsigned burst;             /* lines allowed per window */
} ami_log_limit_t;
#define AMI_LOG_LIMIT_INIT(burst) { 0, 0, 0, (burst) }

/*  Log "PREFIX: message" as a warning through the limiter. The va_list
    form is for an actor's own printf-style wrapper. */
void
    ami_log_warn_limited (ami_log_limit_t *limit, const char *prefix,
                          const char *format, ...) CHECK_PRINTF (3);
void
    ami_log_vwarn_limited (ami_log_limit_t *limit, const char *prefix,
                           const char *format, va_list args);

/*  The same at error level, for failures that repeat once per request
    while a condition lasts (a full disk: every write fails): the first
    `burst` of each window are logged, then counted. Use a limiter of its
    own, so errors do not spend the warnings' budget. */
void
    ami_log_error_limited (ami_log_limit_t *limit, const char *prefix,
                           const char *format, ...) CHECK_PRINTF (3);
void
    ami_log_verror_limited (ami_log_limit_t *limit, const char *prefix,
                            const char *format, va_list args);

#ifdef __cplusplus
}
#endif

#endif
