/*  ami_log.c - level filter and identity on top of zsys logging.

    zsys does the formatting and the output; this file only adds what CZMQ
    4.2 lacks: a level below which messages are dropped, and an identity
    string built from the service name and node id. The level is a C11
    atomic because actors log from their own threads; relaxed ordering is
    enough, a level change only has to become visible eventually.
*/
#include "ami_log.h"
#include "ami_config.h"
#include "ami_err.h"

#include <stdatomic.h>
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

//  Process-wide by nature (see the header): the level every macro checks,
//  and the identity handed to zsys.
static atomic_int s_level = AMI_LOG_INFO;
static char s_ident [128];

static const char *s_names [] = { "error", "warn", "info", "debug" };

void
ami_log_init (const char *service, const char *node_id, int level)
{
    assert (service);
    if (node_id && *node_id)
        snprintf (s_ident, sizeof s_ident, "%s[%s]", service, node_id);
    else
        snprintf (s_ident, sizeof s_ident, "%s", service);
    zsys_set_logident (s_ident);
    zsys_set_logstream (stderr);
    ami_log_set_level (level);
}

void
ami_log_set_level (int level)
{
    if (level < AMI_LOG_ERROR)
        level = AMI_LOG_ERROR;
    if (level > AMI_LOG_DEBUG)
        level = AMI_LOG_DEBUG;
    atomic_store_explicit (&s_level, level, memory_order_relaxed);
}

int
ami_log_level (void)
{
    return atomic_load_explicit (&s_level, memory_order_relaxed);
}

bool
ami_log_enabled (int level)
{
    return level <= atomic_load_explicit (&s_level, memory_order_relaxed);
}

const char *
ami_log_ident (void)
{
    return s_ident;
}

int
ami_log_level_parse (const char *name, int *level)
{
    assert (level);
    if (!name)
        return AMI_E_CONFIG;
    for (int i = AMI_LOG_ERROR; i <= AMI_LOG_DEBUG; i++)
        if (strcasecmp (name, s_names [i]) == 0) {
            *level = i;
            return AMI_OK;
        }
    if (strcasecmp (name, "warning") == 0) {
        *level = AMI_LOG_WARN;
        return AMI_OK;
    }
    return AMI_E_CONFIG;
}

const char *
ami_log_level_name (int level)
{
    if (level < AMI_LOG_ERROR || level > AMI_LOG_DEBUG)
        return "?";
    return s_names [level];
}

int
ami_log_level_from_config (ami_config_t *config, bool verbose, int *level)
{
    assert (level);
    const char *name = "info";
    if (config) {
        int rc = ami_config_str (config, "log/level", "info", &name);
        if (rc)
            return rc;
    }
    int parsed;
    if (ami_log_level_parse (name, &parsed)) {
        ami_log_error ("config %s: log/level = '%.64s': not a level "
                       "(error, warn, info, debug)",
                       config ? ami_config_origin (config) : "-", name);
        return AMI_E_CONFIG;
    }
    *level = verbose ? AMI_LOG_DEBUG : parsed;
    return AMI_OK;
}

/*  One limiter for both levels: the line at `level` (AMI_LOG_WARN or
    AMI_LOG_ERROR) while the window's burst lasts, then counted. */
static void
s_vlimited (ami_log_limit_t *limit, int level, const char *prefix,
            const char *format, va_list args)
{
    assert (limit && prefix && format);
    if (!ami_log_enabled (level))
        return;
    const char *what = level == AMI_LOG_ERROR ? "errors" : "warnings";
    int64_t now = zclock_mono ();
    if (now - limit->window >= AMI_LOG_LIMIT_WINDOW_MS) {
        if (limit->suppressed) {
            if (level == AMI_LOG_ERROR)
                zsys_error ("%s: %lu more %s suppressed", prefix, limit->suppressed, what);
            else
                zsys_warning ("%s: %lu more %s suppressed", prefix, limit->suppressed, what);
        }
        limit->window = now;
        limit->count = 0;
        limit->suppressed = 0;
    }
    if (limit->count >= limit->burst) {
        limit->suppressed++;
        return;
    }
    limit->count++;
    char line [512], safe [4 * sizeof line];
    vsnprintf (line, sizeof line, format, args);
    ami_log_escape (safe, sizeof safe, line);
    if (level == AMI_LOG_ERROR)
        zsys_error ("%s: %s", prefix, safe);
    else
        zsys_warning ("%s: %s", prefix, safe);
}

void
ami_log_vwarn_limited (ami_log_limit_t *limit, const char *prefix,
                       const char *format, va_list args)
{
    s_vlimited (limit, AMI_LOG_WARN, prefix, format, args);
}

void
ami_log_verror_limited (ami_log_limit_t *limit, const char *prefix,
                        const char *format, va_list args)
{
    s_vlimited (limit, AMI_LOG_ERROR, prefix, format, args);
}

/*  Length of the valid UTF-8 sequence at s (1..4), or 0 if s does not
    start one (a stray continuation, an overlong or surrogate form, a lead
    byte past U+10FFFF, or a sequence cut short). */
static size_t
s_utf8_len (const unsigned char *s)
{
    unsigned c = s [0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    else if (c >= 0xc2 && c <= 0xdf) { n = 2; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { n = 3; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 4; min = 0x10000; }
    else
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s [i] & 0xc0) != 0x80)
            return 0;               //  also stops at the NUL
        cp = (cp << 6) | (s [i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

size_t
ami_log_escape (char *out, size_t cap, const char *in)
{
    assert (out && cap >= 1 && in);
    const unsigned char *s = (const unsigned char *) in;
    size_t o = 0;
    while (*s) {
        char esc [8];
        const char *piece = esc;
        size_t len, take;
        unsigned c = *s;
        if (c == '\\')                    { piece = "\\\\"; len = 2; take = 1; }
        else if (c == '\n')               { piece = "\\n"; len = 2; take = 1; }
        else if (c == '\r')               { piece = "\\r"; len = 2; take = 1; }
        else if (c == '\t')               { piece = "\\t"; len = 2; take = 1; }
        else if (c == 0x1b)               { piece = "\\e"; len = 2; take = 1; }
        else if (c < 0x20 || c == 0x7f) {
            len = (size_t) snprintf (esc, sizeof esc, "\\x%02x", c);
            take = 1;
        }
        else if (c < 0x80)                { piece = (const char *) s; len = 1; take = 1; }
        else if ((take = s_utf8_len (s)) == 0) {
            len = (size_t) snprintf (esc, sizeof esc, "\\x%02x", c);
            take = 1;
        }
        else if (take == 2 && c == 0xc2 && s [1] < 0xa0) {     //  C1 control
            len = (size_t) snprintf (esc, sizeof esc, "\\u%04x", (unsigned) s [1]);
        }
        else {
            piece = (const char *) s;
            len = take;
        }
        if (o + len + 1 > cap)
            break;
        memcpy (out + o, piece, len);
        o += len;
        s += take;
    }
    out [o] = 0;
    return o;
}

void
ami_log_emit (int level, const char *format, ...)
{
    //  1 KiB of formatted text, up to 4x that escaped (\xNN per byte)
    char line [1024], safe [4 * sizeof line];
    va_list args;
    va_start (args, format);
    vsnprintf (line, sizeof line, format, args);
    va_end (args);
    ami_log_escape (safe, sizeof safe, line);
    switch (level) {
        case AMI_LOG_ERROR: zsys_error ("%s", safe); break;
        case AMI_LOG_WARN:  zsys_warning ("%s", safe); break;
        case AMI_LOG_INFO:  zsys_info ("%s", safe); break;
        default:            zsys_debug ("%s", safe); break;
    }
}

void
ami_log_warn_limited (ami_log_limit_t *limit, const char *prefix, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    ami_log_vwarn_limited (limit, prefix, format, args);
    va_end (args);
}

void
ami_log_error_limited (ami_log_limit_t *limit, const char *prefix, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    ami_log_verror_limited (limit, prefix, format, args);
    va_end (args);
}
