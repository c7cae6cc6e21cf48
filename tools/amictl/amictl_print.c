/*  amictl_print.c - text and JSON renderings of MDMS API replies
    (see amictl_print.h). Pure formatting: no sockets, no state. */
#include "amictl_print.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------- */
/*  Catalogues                                                             */

typedef struct {
    uint8_t obis [AMI_OBIS_SIZE];
    const char *name;
} obis_name_t;

/* DESIGN.md section 7 (F = 255 throughout). */
static const obis_name_t s_obis [] = {
    { { 0, 0,  1, 0, 0, 255 }, "Clock" },
    { { 1, 0,  1, 8, 0, 255 }, "Active energy import (+A)" },
    { { 1, 0,  1, 8, 1, 255 }, "Active energy import (+A) T1" },
    { { 1, 0,  1, 8, 2, 255 }, "Active energy import (+A) T2" },
    { { 1, 0,  2, 8, 0, 255 }, "Active energy export (-A)" },
    { { 1, 0,  2, 8, 1, 255 }, "Active energy export (-A) T1" },
    { { 1, 0,  2, 8, 2, 255 }, "Active energy export (-A) T2" },
    { { 1, 0,  1, 7, 0, 255 }, "Active power import (+P)" },
    { { 1, 0,  2, 7, 0, 255 }, "Active power export (-P)" },
    { { 1, 0, 32, 7, 0, 255 }, "Voltage L1" },
    { { 1, 0, 52, 7, 0, 255 }, "Voltage L2" },
    { { 1, 0, 72, 7, 0, 255 }, "Voltage L3" },
    { { 1, 0, 31, 7, 0, 255 }, "Current L1" },
    { { 1, 0, 51, 7, 0, 255 }, "Current L2" },
    { { 1, 0, 71, 7, 0, 255 }, "Current L3" },
    { { 1, 0, 13, 7, 0, 255 }, "Power factor" },
    { { 1, 0, 14, 7, 0, 255 }, "Supply frequency" },
    { { 0, 0, 96, 1, 0, 255 }, "Meter serial number" },
    { { 0, 0, 97, 98, 0, 255 }, "Alarm register" },
    { { 1, 0, 99, 1, 0, 255 }, "Load profile (15 min)" },
};

static const uint8_t s_clock [AMI_OBIS_SIZE] = { 0, 0, 1, 0, 0, 255 };
static const uint8_t s_import [AMI_OBIS_SIZE] = { 1, 0, 1, 8, 0, 255 };
static const uint8_t s_export [AMI_OBIS_SIZE] = { 1, 0, 2, 8, 0, 255 };
static const uint8_t s_power_in [AMI_OBIS_SIZE] = { 1, 0, 1, 7, 0, 255 };
static const uint8_t s_power_out [AMI_OBIS_SIZE] = { 1, 0, 2, 7, 0, 255 };

const char *
amictl_obis_name (const uint8_t obis [AMI_OBIS_SIZE])
{
    for (size_t i = 0; i < sizeof s_obis / sizeof s_obis [0]; i++)
        if (memcmp (s_obis [i].obis, obis, AMI_OBIS_SIZE) == 0)
            return s_obis [i].name;
    return NULL;
}

const char *
amictl_unit_symbol (uint8_t unit)
{
    switch (unit) {
        case 7:   return "s";
        case 27:  return "W";
        case 28:  return "VA";
        case 29:  return "var";
        case 30:  return "Wh";
        case 31:  return "VAh";
        case 32:  return "varh";
        case 33:  return "A";
        case 35:  return "V";
        case 44:  return "Hz";
        case 255: return "none";
        default:  return NULL;
    }
}

const char *
amictl_state_name (int state)
{
    switch (state) {
        case AMI_STATE_STARTING: return "STARTING";
        case AMI_STATE_READY:    return "READY";
        case AMI_STATE_DEGRADED: return "DEGRADED";
        case AMI_STATE_STOPPING: return "STOPPING";
        case AMI_STATE_DOWN:     return "DOWN";
        default:                 return "UNKNOWN";
    }
}

int
amictl_quality_names (uint32_t quality, const char *names [], int max)
{
    static const struct { uint32_t flag; const char *name; } flags [] = {
        { AMI_Q_ESTIMATED, "estimated" }, { AMI_Q_CLOCK_ERR, "clockError" },
        { AMI_Q_OVERFLOW, "overflow" }, { AMI_Q_POWER_FAIL, "powerFail" },
        { AMI_Q_TAMPER, "tamper" }
    };
    int n = 0;
    uint32_t known = 0;
    if (quality == AMI_Q_VALID && max > 0) {
        names [n++] = "valid";
        return n;
    }
    for (size_t i = 0; i < sizeof flags / sizeof flags [0]; i++) {
        known |= flags [i].flag;
        if ((quality & flags [i].flag) && n < max)
            names [n++] = flags [i].name;
    }
    if ((quality & ~known) && n < max)
        names [n++] = "other";
    return n;
}

/* ---------------------------------------------------------------------- */
/*  Values, times, durations                                               */

char *
amictl_format_scaled (int64_t value, int8_t scaler, char out [AMICTL_TEXT])
{
    //  The wire limits the scaler to -9..9; anything wilder is shown
    //  literally rather than as 100 zeros.
    if (scaler < -18 || scaler > 18) {
        snprintf (out, AMICTL_TEXT, "%" PRId64 "e%d", value, scaler);
        return out;
    }
    bool negative = value < 0;
    //  Magnitude through uint64 so INT64_MIN has one too.
    uint64_t magnitude = negative ? (uint64_t) 0 - (uint64_t) value : (uint64_t) value;
    char digits [AMICTL_TEXT];
    snprintf (digits, sizeof digits, "%" PRIu64, magnitude);
    if (scaler >= 0) {
        char zeros [20] = "";
        if (magnitude != 0) {
            memset (zeros, '0', (size_t) scaler);
            zeros [scaler] = '\0';
        }
        snprintf (out, AMICTL_TEXT, "%s%s%s", negative ? "-" : "", digits, zeros);
        return out;
    }
    size_t places = (size_t) -scaler, len = strlen (digits);
    char padded [AMICTL_TEXT];
    //  At least one digit before the point: 5 at scaler -3 is 0.005.
    size_t width = len > places ? len : places + 1;
    memset (padded, '0', width - len);
    memcpy (padded + (width - len), digits, len + 1);
    snprintf (out, AMICTL_TEXT, "%s%.*s.%s", negative ? "-" : "",
              (int) (width - places), padded, padded + (width - places));
    return out;
}

char *
amictl_format_time (uint64_t ms, bool with_ms, char out [AMICTL_TEXT])
{
    time_t seconds = (time_t) (ms / 1000);
    struct tm tm;
    char date [32];
    if ((uint64_t) seconds != ms / 1000 || !gmtime_r (&seconds, &tm)
    ||  strftime (date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        snprintf (out, AMICTL_TEXT, "@%" PRIu64 "ms", ms);
    else
    if (with_ms)
        snprintf (out, AMICTL_TEXT, "%s.%03uZ", date, (unsigned) (ms % 1000));
    else
        snprintf (out, AMICTL_TEXT, "%sZ", date);
    return out;
}

/*  Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    days_from_civil): exact, no time zone, no libc. */
static int64_t
s_days_from_civil (int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned) (y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t) doe - 719468;
}

/*  n decimal digits at *p into *value; advances *p. */
static bool
s_digits (const char **p, int n, unsigned *value)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p) [i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (unsigned) (c - '0');
    }
    *p += n;
    *value = v;
    return true;
}

int
amictl_parse_time (const char *text, uint64_t now_ms, uint64_t *out)
{
    if (!text || !*text)
        return -1;
    //  "Unix seconds" is bounded at the end of year 9999, like ISO 8601
    //  with four year digits: no overflow in ms, no surprise far future.
    const uint64_t max_s = 253402300799ULL;
    if (text [0] == '-') {
        const char *p = text + 1;
        uint64_t value = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 12)
                return -1;
            value = value * 10 + (uint64_t) (*p++ - '0');
        }
        uint64_t unit = *p == 's' ? 1000 : *p == 'm' ? 60000
                      : *p == 'h' ? 3600000 : *p == 'd' ? 86400000 : 0;
        if (digits == 0 || unit == 0 || p [1] != '\0' || value > max_s * 1000 / unit)
            return -1;
        uint64_t delta = value * unit;
        *out = delta < now_ms ? now_ms - delta : 0;
        return 0;
    }
    size_t len = strlen (text), all_digits = strspn (text, "0123456789");
    if (all_digits == len) {
        if (len > 12)
            return -1;
        uint64_t seconds = strtoull (text, NULL, 10);
        if (seconds > max_s)
            return -1;
        *out = seconds * 1000;
        return 0;
    }
    //  YYYY-MM-DDTHH:MM:SS[.mmm]Z
    const char *p = text;
    unsigned year, month, day, hour, minute, second, millis = 0;
    if (!s_digits (&p, 4, &year) || *p++ != '-' || !s_digits (&p, 2, &month) || *p++ != '-'
    ||  !s_digits (&p, 2, &day) || *p++ != 'T' || !s_digits (&p, 2, &hour) || *p++ != ':'
    ||  !s_digits (&p, 2, &minute) || *p++ != ':' || !s_digits (&p, 2, &second))
        return -1;
    if (*p == '.') {
        p++;
        if (!s_digits (&p, 3, &millis))
            return -1;
    }
    if (p [0] != 'Z' || p [1] != '\0')
        return -1;
    static const unsigned mdays [12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (year < 1970 || month < 1 || month > 12 || day < 1 || day > mdays [month - 1]
    ||  (month == 2 && day == 29 && !leap) || hour > 23 || minute > 59 || second > 59)
        return -1;
    int64_t days = s_days_from_civil (year, month, day);
    *out = ((uint64_t) days * 86400 + hour * 3600u + minute * 60u + second) * 1000 + millis;
    return 0;
}

char *
amictl_safe_text (const char *text, char *out, size_t cap)
{
    const uint8_t *s = (const uint8_t *) (text ? text : "");
    size_t n = 0;
    if (cap == 0)
        return out;
    while (*s) {
        uint8_t c = *s;
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4 : 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1fu : len == 3 ? c & 0x0fu : c & 0x07u;
        bool valid = len > 0;
        for (size_t k = 1; valid && k < len; k++) {
            if ((s [k] & 0xc0) != 0x80)
                valid = false;          //  also stops at the NUL
            else
                cp = (cp << 6) | (s [k] & 0x3fu);
        }
        if (valid) {
            static const uint32_t min [5] = { 0, 0, 0x80, 0x800, 0x10000 };
            valid = cp >= min [len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        //  C0 controls, DEL and C1 controls (U+009B is a CSI on some
        //  terminals) are never shown as they are: one '?' per character;
        //  an invalid byte is one '?' and the scan resumes after it
        bool control = valid && (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f));
        if (!valid)
            len = 1;
        size_t shown = valid && !control ? len : 1;
        if (n + shown >= cap)
            break;
        if (valid && !control)
            memcpy (out + n, s, len);
        else
            out [n] = '?';
        n += shown;
        s += len;
    }
    out [n] = '\0';
    return out;
}

const char *
amictl_verify_reason (int code, bool audit)
{
    if (audit)
        switch (code) {
            case AMI_E_BAD_SIGNATURE: return "hash mismatch: entry altered or reordered";
            case AMI_E_NOTFOUND:      return "entry missing: removed";
            case AMI_E_TRUNCATED:     return "cut from the end of the log (the anchor records more)";
            default:                  break;
        }
    else
        switch (code) {
            case AMI_E_BAD_SIGNATURE: return "proof of origin does not verify with the meter's registered key";
            case AMI_E_DECRYPT:       return "sealed reading does not open";
            case AMI_E_RANGE:         return "stored reading differs from the proof's contents";
            default:                  break;
        }
    return ami_strerror (code);
}

const char *
amictl_audit_reason (uint64_t ref, int code)
{
    if (ref == 0)
        switch (code) {
            case AMI_E_NOTFOUND:      return "anchor file missing (deleted): a cut tail cannot be ruled out";
            case AMI_E_BAD_SIGNATURE: return "anchor file forged or replaced: not the one the MDMS wrote";
            case AMI_E_STORAGE:       return "a record in the log that is not an entry (its key is no seq)";
            default:                  break;
        }
    return amictl_verify_reason (code, true);
}

char *
amictl_format_duration (uint64_t ms, char out [AMICTL_TEXT])
{
    uint64_t s = ms / 1000;
    if (ms < 1000)
        snprintf (out, AMICTL_TEXT, "%" PRIu64 "ms", ms);
    else
    if (s < 60)
        snprintf (out, AMICTL_TEXT, "%" PRIu64 ".%" PRIu64 "s", s, (ms % 1000) / 100);
    else
    if (s < 3600)
        snprintf (out, AMICTL_TEXT, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else
    if (s < 86400)
        snprintf (out, AMICTL_TEXT, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, (s % 3600) / 60);
    else
        snprintf (out, AMICTL_TEXT, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, (s % 86400) / 3600);
    return out;
}

/* ---------------------------------------------------------------------- */
/*  Text                                                                   */

static const ami_register_t *
s_find (const ami_reading_t *reading, const uint8_t obis [AMI_OBIS_SIZE])
{
    for (uint32_t i = 0; i < reading->register_count && i < AMI_MAX_REGISTERS; i++)
        if (memcmp (reading->registers [i].obis, obis, AMI_OBIS_SIZE) == 0)
            return &reading->registers [i];
    return NULL;
}

static void
s_quality_text (uint32_t quality, char *out, size_t cap)
{
    const char *names [8];
    int n = amictl_quality_names (quality, names, 8);
    out [0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t len = strlen (out);
        snprintf (out + len, cap - len, "%s%s", i ? "," : "", names [i]);
    }
}

void
amictl_print_reading (FILE *out, const ami_stored_reading_t *row,
                      const uint8_t corr [AMI_REQUEST_ID_SIZE])
{
    const ami_reading_t *reading = &row->reading;
    char hex [2 * AMI_REQUEST_ID_SIZE + 1], t1 [AMICTL_TEXT], t2 [AMICTL_TEXT], t3 [AMICTL_TEXT];
    char quality [64];
    ami_request_id_format (corr, hex);
    fprintf (out, "Meter           %s\n", reading->meter_id);
    fprintf (out, "Meter time      %s\n", amictl_format_time (reading->read_ms, true, t1));
    fprintf (out, "Requested       %s   stored %s\n",
             amictl_format_time (row->requested_ms, true, t2),
             amictl_format_time (row->stored_ms, true, t3));
    s_quality_text (reading->quality, quality, sizeof quality);
    fprintf (out, "Quality         %s\n", quality);
    fprintf (out, "Correlation id  %s\n\n", hex);
    fprintf (out, "%-17s %-30s %16s  %s\n", "OBIS", "Register", "Value", "Unit");
    for (uint32_t i = 0; i < reading->register_count && i < AMI_MAX_REGISTERS; i++) {
        const ami_register_t *r = &reading->registers [i];
        char code [24], value [AMICTL_TEXT], unit_text [16];
        const char *name = amictl_obis_name (r->obis);
        const char *unit = amictl_unit_symbol (r->unit);
        ami_obis_format (r->obis, code);
        if (!unit) {
            snprintf (unit_text, sizeof unit_text, "unit %u", r->unit);
            unit = unit_text;
        }
        else
        if (r->unit == 255)
            unit = "";
        if (memcmp (r->obis, s_clock, AMI_OBIS_SIZE) == 0 && r->unit == 7 && r->scaler == 0
        &&  r->value >= 0) {
            //  The clock register is Unix seconds: show it as a time.
            amictl_format_time ((uint64_t) r->value * 1000, false, value);
            unit = "";
        }
        else
            amictl_format_scaled (r->value, r->scaler, value);
        char line [256];
        s_quality_text (r->quality, quality, sizeof quality);
        snprintf (line, sizeof line, "%-17s %-30s %16s  %-4s  %s", code, name ? name : "?",
                  value, unit, r->quality ? quality : "");
        //  no trailing blanks when there is no unit or quality to show
        size_t len = strlen (line);
        while (len > 0 && line [len - 1] == ' ')
            line [--len] = '\0';
        fprintf (out, "%s\n", line);
    }
}

/* One register's scaled value for a history column, or "-". */
static const char *
s_column (const ami_reading_t *reading, const uint8_t obis [AMI_OBIS_SIZE], char out [AMICTL_TEXT])
{
    const ami_register_t *r = s_find (reading, obis);
    if (!r)
        return "-";
    return amictl_format_scaled (r->value, r->scaler, out);
}

void
amictl_print_history (FILE *out, const char *meter_id,
                      const ami_stored_reading_t *rows, size_t count)
{
    fprintf (out, "Meter %s: %zu stored reading(s), newest first\n\n", meter_id, count);
    if (count == 0)
        return;
    fprintf (out, "%-24s %14s %14s %9s %9s  %-10s %s\n", "Read (UTC)", "+A import Wh",
             "-A export Wh", "+P W", "-P W", "Quality", "Request id");
    for (size_t i = 0; i < count; i++) {
        const ami_reading_t *reading = &rows [i].reading;
        char time [AMICTL_TEXT], a [AMICTL_TEXT], b [AMICTL_TEXT], c [AMICTL_TEXT],
             d [AMICTL_TEXT], quality [64], hex [2 * AMI_REQUEST_ID_SIZE + 1];
        s_quality_text (reading->quality, quality, sizeof quality);
        fprintf (out, "%-24s %14s %14s %9s %9s  %-10s %s\n",
                 amictl_format_time (reading->read_ms, true, time),
                 s_column (reading, s_import, a), s_column (reading, s_export, b),
                 s_column (reading, s_power_in, c), s_column (reading, s_power_out, d),
                 quality, ami_request_id_format (reading->request_id, hex));
    }
}

void
amictl_print_meters (FILE *out, const ami_meter_row_t *rows, size_t count)
{
    fprintf (out, "%-14s %-12s %-26s %s\n", "Meter", "Aggregator", "Last read (UTC)", "State");
    for (size_t i = 0; i < count; i++) {
        char time [AMICTL_TEXT];
        fprintf (out, "%-14s %-12s %-26s %s\n", rows [i].meter_id, rows [i].aggregator_id,
                 rows [i].last_read_ms ? amictl_format_time (rows [i].last_read_ms, true, time)
                                       : "never",
                 amictl_state_name (rows [i].state));
    }
    fprintf (out, "%zu meter(s)\n", count);
}

void
amictl_print_status (FILE *out, const ami_service_row_t *rows, size_t count)
{
    fprintf (out, "%-12s %-14s %-9s %10s %10s\n", "Role", "Node", "State", "Uptime", "Age");
    for (size_t i = 0; i < count; i++) {
        char up [AMICTL_TEXT], age [AMICTL_TEXT];
        fprintf (out, "%-12s %-14s %-9s %10s %10s\n", rows [i].role, rows [i].node_id,
                 amictl_state_name (rows [i].state),
                 amictl_format_duration (rows [i].uptime_ms, up),
                 amictl_format_duration (rows [i].age_ms, age));
        //  The service's own counters (its last HEALTH), name=value,
        //  indented under its row and wrapped to stay readable.
        size_t column = 0;
        uint32_t stats = rows [i].stat_count < AMI_MAX_STATS ? rows [i].stat_count
                                                             : AMI_MAX_STATS;
        for (uint32_t k = 0; k < stats; k++) {
            char item [AMI_MAX_ID + 32];
            int len = snprintf (item, sizeof item, "%s=%" PRIu64, rows [i].stats [k].name,
                                rows [i].stats [k].value);
            if (column > 0 && column + 1 + (size_t) len > AMICTL_STATUS_WIDTH) {
                fputc ('\n', out);
                column = 0;
            }
            column += (size_t) fprintf (out, "%s%s", column ? " " : "    ", item);
        }
        if (column)
            fputc ('\n', out);
    }
}

void
amictl_print_customer (FILE *out, const ami_api_customer_t *customer)
{
    //  name <= 64 and address <= 256 bytes; '?' never grows the text
    char name [AMI_MAX_CUSTOMER_NAME + 1], address [AMI_MAX_TEXT + 1];
    fprintf (out, "Meter            %s\n", customer->meter_id);
    fprintf (out, "Customer         %s\n", amictl_safe_text (customer->name, name, sizeof name));
    fprintf (out, "Service address  %s\n",
             amictl_safe_text (customer->address, address, sizeof address));
    fprintf (out, "Account          %s\n", customer->account);
}

/* "...and N more not listed" when the MDMS listed fewer than failed. */
static void
s_print_unlisted (FILE *out, const ami_api_verify_t *result)
{
    if (result->failed > result->count)
        fprintf (out, "... and %" PRIu64 " more failure(s) not listed (the MDMS lists the first %d)\n",
                 result->failed - result->count, AMI_MAX_API_FAILURES);
}

void
amictl_print_verify (FILE *out, const char *meter_id, const ami_api_verify_t *result)
{
    if (result->failed == 0) {
        fprintf (out, "Meter %s: %" PRIu64 " stored reading(s) checked, every proof of origin verified\n",
                 meter_id, result->checked);
        return;
    }
    fprintf (out, "Meter %s: %" PRIu64 " stored reading(s) checked, %" PRIu64 " FAILED\n\n",
             meter_id, result->checked, result->failed);
    fprintf (out, "%-24s  %-20s %s\n", "Read (UTC)", "Result", "Reason");
    for (uint32_t i = 0; i < result->count && i < AMI_MAX_API_FAILURES; i++) {
        const ami_failure_t *f = &result->failures [i];
        char time [AMICTL_TEXT];
        fprintf (out, "%-24s  %-20s %s\n", amictl_format_time (f->ref, true, time),
                 ami_errname (f->code), amictl_verify_reason (f->code, false));
    }
    s_print_unlisted (out, result);
}

void
amictl_print_audit_verify (FILE *out, const ami_api_verify_t *result)
{
    if (result->failed == 0) {
        fprintf (out, "audit chain intact: %" PRIu64 " entries\n", result->checked);
        return;
    }
    fprintf (out, "audit chain BROKEN: %" PRIu64 " entries checked, %" PRIu64 " failed\n\n",
             result->checked, result->failed);
    fprintf (out, "%-10s %-20s %s\n", "Seq", "Result", "Reason");
    uint32_t count = result->count < AMI_MAX_API_FAILURES ? result->count : AMI_MAX_API_FAILURES;
    uint64_t shown = 0;                 //  failures the rows stand for
    for (uint32_t i = 0; i < count; i++, shown++) {
        const ami_failure_t *f = &result->failures [i];
        char seq [48];
        if (f->ref == 0)
            snprintf (seq, sizeof seq, "anchor");
        else
        if (f->code == AMI_E_TRUNCATED && i + 1 < count
        &&  result->failures [i + 1].code == AMI_E_TRUNCATED) {
            //  A cut range is listed as its two ends: one row
            snprintf (seq, sizeof seq, "%" PRIu64 "-%" PRIu64, f->ref,
                      result->failures [i + 1].ref);
            shown += result->failures [i + 1].ref - f->ref;
            i++;
        }
        else
            snprintf (seq, sizeof seq, "%" PRIu64, f->ref);
        fprintf (out, "%-10s %-20s %s\n", seq, ami_errname (f->code),
                 amictl_audit_reason (f->ref, f->code));
    }
    //  Where: the first failing entry, a cut tail, or only the anchor file
    const ami_failure_t *first = NULL;
    for (uint32_t i = 0; i < count && !first; i++)
        if (result->failures [i].ref)
            first = &result->failures [i];
    if (first && first->code == AMI_E_TRUNCATED)
        fprintf (out, "\nthe log's tail was cut (at or before seq %" PRIu64 "): entries the anchor "
                 "records are gone or replaced\n", first->ref);
    else
    if (first)
        fprintf (out, "\nthe first failure (seq %" PRIu64 ") is where the log was tampered with\n",
                 first->ref);
    else
    if (count > 0)
        fprintf (out, "\nthe anchor file kept outside the database was deleted or forged: a cut "
                 "tail of the log cannot be ruled out\n");
    if (result->failed > shown)
        fprintf (out, "... and %" PRIu64 " more failure(s) not listed (the MDMS lists the first %d)\n",
                 result->failed - shown, AMI_MAX_API_FAILURES);
}

/* Hex digits of the hash shown in the table: 48 bits tell entries apart
   at a glance; --json has all 256. */
#define AUDIT_HASH_SHOWN  6

void
amictl_print_audit (FILE *out, const ami_audit_row_t *rows, size_t count)
{
    fprintf (out, "%-8s %-24s %-16s %-9s %-13s %-14s %-32s %-20s %s\n", "Seq", "Time (UTC)",
             "Operator", "Role", "Action", "Meter", "Correlation id", "Result", "Hash");
    for (size_t i = 0; i < count; i++) {
        const ami_audit_row_t *r = &rows [i];
        char time [AMICTL_TEXT], corr [2 * AMI_REQUEST_ID_SIZE + 1], action [16];
        char hash [2 * AUDIT_HASH_SHOWN + 1];
        const char *name = ami_action_name (r->action);
        if (name)
            snprintf (action, sizeof action, "%s", name);
        else
            snprintf (action, sizeof action, "#%u", r->action);
        for (int k = 0; k < AUDIT_HASH_SHOWN; k++)
            snprintf (hash + 2 * k, 3, "%02x", r->hash [k]);
        fprintf (out, "%-8" PRIu64 " %-24s %-16s %-9s %-13s %-14s %-32s %-20s %s\n", r->seq,
                 amictl_format_time (r->time_ms, true, time), r->operator_id, r->role, action,
                 r->meter_id [0] ? r->meter_id : "-", ami_request_id_format (r->corr, corr),
                 ami_errname (r->result), hash);
    }
    fprintf (out, "%zu entr%s\n", count, count == 1 ? "y" : "ies");
}

/* ---------------------------------------------------------------------- */
/*  JSON                                                                   */

static void
s_json_time (amictl_json_t *j, const char *key, uint64_t ms)
{
    char text [AMICTL_TEXT];
    if (ms == 0)
        amictl_json_null (j, key);
    else
        amictl_json_str (j, key, amictl_format_time (ms, true, text));
}

static void
s_json_corr (amictl_json_t *j, const char *key, const uint8_t *corr)
{
    char hex [2 * AMI_REQUEST_ID_SIZE + 1];
    if (corr)
        amictl_json_str (j, key, ami_request_id_format (corr, hex));
    else
        amictl_json_null (j, key);
}

static void
s_json_qualities (amictl_json_t *j, uint32_t quality)
{
    const char *names [8];
    int n = amictl_quality_names (quality, names, 8);
    amictl_json_array (j, "ReadingQualities");
    for (int i = 0; i < n; i++) {
        amictl_json_object (j, NULL);
        amictl_json_str (j, "ref", names [i]);
        amictl_json_end (j);
    }
    amictl_json_end (j);
}

/*  The "MeterReadings" member, inside an open object. */
static void
s_json_meter_readings (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                       const ami_stored_reading_t *rows, size_t count)
{
    amictl_json_object (j, "MeterReadings");
    s_json_corr (j, "correlationId", corr);
    amictl_json_array (j, "MeterReading");
    for (size_t i = 0; i < count; i++) {
        const ami_reading_t *reading = &rows [i].reading;
        amictl_json_object (j, NULL);
        amictl_json_object (j, "Meter");
        amictl_json_str (j, "mRID", reading->meter_id);
        amictl_json_end (j);
        s_json_corr (j, "requestId", reading->request_id);
        s_json_time (j, "requestedDateTime", rows [i].requested_ms);
        s_json_time (j, "readDateTime", reading->read_ms);
        s_json_time (j, "storedDateTime", rows [i].stored_ms);
        s_json_qualities (j, reading->quality);
        amictl_json_array (j, "Readings");
        for (uint32_t k = 0; k < reading->register_count && k < AMI_MAX_REGISTERS; k++) {
            const ami_register_t *r = &reading->registers [k];
            char code [24];
            amictl_json_object (j, NULL);
            amictl_json_object (j, "ReadingType");
            amictl_json_str (j, "obis", ami_obis_format (r->obis, code));
            amictl_json_str (j, "name", amictl_obis_name (r->obis));
            amictl_json_str (j, "unit", amictl_unit_symbol (r->unit));
            amictl_json_uint (j, "unitCode", r->unit);
            amictl_json_int (j, "powerOfTenMultiplier", r->scaler);
            amictl_json_end (j);
            amictl_json_int (j, "value", r->value);
            s_json_time (j, "timeStamp", reading->read_ms);
            s_json_qualities (j, r->quality | reading->quality);
            amictl_json_end (j);
        }
        amictl_json_end (j);
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_meter_readings (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                            const ami_stored_reading_t *rows, size_t count)
{
    amictl_json_object (j, NULL);
    s_json_meter_readings (j, corr, rows, count);
    amictl_json_end (j);
}

void
amictl_json_recover (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                     const ami_stored_reading_t *row, const char *meter_id,
                     uint64_t from_ms, uint64_t to_ms)
{
    amictl_json_object (j, NULL);
    s_json_meter_readings (j, corr, row, 1);
    amictl_json_object (j, "Recovery");
    amictl_json_str (j, "mRID", meter_id);
    s_json_time (j, "fromDateTime", from_ms);
    s_json_time (j, "toDateTime", to_ms);
    amictl_json_str (j, "intervals", "asked for again: they arrive through ingest");
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_print_recover (FILE *out, const char *meter_id, uint64_t from_ms, uint64_t to_ms)
{
    char from [AMICTL_TEXT], to [AMICTL_TEXT];
    amictl_format_time (from_ms, false, from);
    amictl_format_time (to_ms, false, to);
    fprintf (out, "\nInterval data of %s ending from %s to %s asked for again: the meter\n"
                  "sends it through ingest; `amictl gaps %s --from %s --to %s` shows\n"
                  "what is still missing.\n", meter_id, from, to, meter_id, from, to);
}

void
amictl_json_meters (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                    const ami_meter_row_t *rows, size_t count)
{
    amictl_json_object (j, NULL);
    s_json_corr (j, "correlationId", corr);
    amictl_json_array (j, "meters");
    for (size_t i = 0; i < count; i++) {
        amictl_json_object (j, NULL);
        amictl_json_str (j, "mRID", rows [i].meter_id);
        amictl_json_str (j, "aggregator", rows [i].aggregator_id);
        s_json_time (j, "lastReadDateTime", rows [i].last_read_ms);
        amictl_json_str (j, "state", amictl_state_name (rows [i].state));
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_status (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                    const ami_service_row_t *rows, size_t count)
{
    amictl_json_object (j, NULL);
    s_json_corr (j, "correlationId", corr);
    amictl_json_array (j, "services");
    for (size_t i = 0; i < count; i++) {
        amictl_json_object (j, NULL);
        amictl_json_str (j, "role", rows [i].role);
        amictl_json_str (j, "node", rows [i].node_id);
        amictl_json_str (j, "state", amictl_state_name (rows [i].state));
        amictl_json_uint (j, "uptimeMs", rows [i].uptime_ms);
        amictl_json_uint (j, "ageMs", rows [i].age_ms);
        amictl_json_object (j, "stats");
        for (uint32_t k = 0; k < rows [i].stat_count && k < AMI_MAX_STATS; k++)
            amictl_json_uint (j, rows [i].stats [k].name, rows [i].stats [k].value);
        amictl_json_end (j);
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_error (amictl_json_t *j, int code, const char *message, const char *origin,
                   const uint8_t *corr)
{
    amictl_json_object (j, NULL);
    amictl_json_object (j, "error");
    amictl_json_int (j, "code", code);
    amictl_json_str (j, "name", ami_errname (code));
    amictl_json_str (j, "message", message ? message : ami_strerror (code));
    amictl_json_str (j, "origin", origin);
    s_json_corr (j, "correlationId", corr);
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_customer (amictl_json_t *j, const ami_api_customer_t *customer)
{
    amictl_json_object (j, NULL);
    s_json_corr (j, "correlationId", customer->corr);
    amictl_json_str (j, "mRID", customer->meter_id);
    amictl_json_object (j, "customer");
    amictl_json_str (j, "name", customer->name);
    amictl_json_str (j, "serviceAddress", customer->address);
    amictl_json_str (j, "account", customer->account);
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_verify (amictl_json_t *j, const char *meter_id, const ami_api_verify_t *result)
{
    amictl_json_object (j, NULL);
    s_json_corr (j, "correlationId", result->corr);
    if (meter_id)
        amictl_json_str (j, "mRID", meter_id);
    else
        amictl_json_str (j, "scope", "audit");
    amictl_json_uint (j, "checked", result->checked);
    amictl_json_uint (j, "failed", result->failed);
    amictl_json_bool (j, "intact", result->failed == 0);
    amictl_json_array (j, "failures");
    for (uint32_t i = 0; i < result->count && i < AMI_MAX_API_FAILURES; i++) {
        const ami_failure_t *f = &result->failures [i];
        amictl_json_object (j, NULL);
        if (meter_id) {
            s_json_time (j, "readDateTime", f->ref);
            amictl_json_uint (j, "readMs", f->ref);
        }
        else
            amictl_json_uint (j, "seq", f->ref);
        amictl_json_int (j, "code", f->code);
        amictl_json_str (j, "name", ami_errname (f->code));
        amictl_json_str (j, "reason", meter_id ? amictl_verify_reason (f->code, false)
                                               : amictl_audit_reason (f->ref, f->code));
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_audit (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                   const ami_audit_row_t *rows, size_t count)
{
    amictl_json_object (j, NULL);
    s_json_corr (j, "correlationId", corr);
    amictl_json_array (j, "entries");
    for (size_t i = 0; i < count; i++) {
        const ami_audit_row_t *r = &rows [i];
        char hash [2 * AMI_HASH_SIZE + 1];
        for (int k = 0; k < AMI_HASH_SIZE; k++)
            snprintf (hash + 2 * k, 3, "%02x", r->hash [k]);
        amictl_json_object (j, NULL);
        amictl_json_uint (j, "seq", r->seq);
        s_json_time (j, "dateTime", r->time_ms);
        amictl_json_str (j, "operator", r->operator_id);
        amictl_json_str (j, "role", r->role);
        amictl_json_str (j, "action", ami_action_name (r->action));
        amictl_json_uint (j, "actionCode", r->action);
        if (r->meter_id [0])
            amictl_json_str (j, "mRID", r->meter_id);
        else
            amictl_json_null (j, "mRID");
        s_json_corr (j, "correlationId", r->corr);
        amictl_json_int (j, "result", r->result);
        amictl_json_str (j, "resultName", ami_errname (r->result));
        amictl_json_str (j, "hash", hash);
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}
