/*  amictl_print.c - text and JSON renderings of MDMS API replies
    (see amictl_print.h). Pure formatting: no sockets, no state. */
#include "amictl_print.h"

#include <inttypes.h>
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
             "-A export Wh", "+P W", "-P W", "Quality", "Correlation id");
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
    }
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

void
amictl_json_meter_readings (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                            const ami_stored_reading_t *rows, size_t count)
{
    amictl_json_object (j, NULL);
    amictl_json_object (j, "MeterReadings");
    s_json_corr (j, "correlationId", corr);
    amictl_json_array (j, "MeterReading");
    for (size_t i = 0; i < count; i++) {
        const ami_reading_t *reading = &rows [i].reading;
        amictl_json_object (j, NULL);
        amictl_json_object (j, "Meter");
        amictl_json_str (j, "mRID", reading->meter_id);
        amictl_json_end (j);
        s_json_corr (j, "correlationId", reading->request_id);
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
    amictl_json_end (j);
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
