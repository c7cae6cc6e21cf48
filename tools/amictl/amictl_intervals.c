/*  amictl_intervals.c - gaps and renderings of interval data (see
    amictl_intervals.h). Pure computation and formatting: no sockets. */
#include "amictl_intervals.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "amictl_print.h"

/* ---------------------------------------------------------------------- */
/*  Gaps                                                                   */

static int
s_iv_gap_add (amictl_gaps_t *self, size_t *cap, uint64_t first_s, uint64_t last_s)
{
    uint64_t count = (last_s - first_s) / self->interval_s + 1;
    self->missing += count;
    if (self->gap_count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        amictl_gap_t *grown = realloc (self->gaps, ncap * sizeof *grown);
        if (!grown)
            return -1;
        self->gaps = grown;
        *cap = ncap;
    }
    self->gaps [self->gap_count++] = (amictl_gap_t) { first_s, last_s, count };
    return 0;
}

int
amictl_gaps_find (const ami_interval_t *records, size_t count, uint64_t from_ms,
                  uint64_t to_ms, uint32_t interval_s, amictl_gaps_t *out)
{
    memset (out, 0, sizeof *out);
    out->interval_s = interval_s;
    if (interval_s == 0 || to_ms < from_ms)
        return 0;
    //  An end at e seconds is in range when from_ms <= e*1000 <= to_ms.
    uint64_t from_s = (from_ms + 999) / 1000, to_s = to_ms / 1000;
    uint64_t first = (from_s + interval_s - 1) / interval_s * interval_s;
    uint64_t last = to_s / interval_s * interval_s;
    if (first == 0)
        first = interval_s;         //  an interval ends after it starts: never at 0
    if (first > last)
        return 0;
    out->first_s = first;
    out->last_s = last;
    out->expected = (last - first) / interval_s + 1;
    size_t cap = 0;
    uint64_t cursor = first;        //  the next end we hope to see
    for (size_t i = 0; i < count; i++) {
        uint64_t end = records [i].end_s;
        if (end < first || end > last)
            continue;
        if (end % interval_s) {
            out->off_grid++;
            continue;
        }
        if (end < cursor)
            continue;               //  a repeat: the client never returns one, but be safe
        if (end > cursor && s_iv_gap_add (out, &cap, cursor, end - interval_s)) {
            amictl_gaps_free (out);
            return -1;
        }
        out->present++;
        cursor = end + interval_s;
    }
    if (cursor <= last && s_iv_gap_add (out, &cap, cursor, last)) {
        amictl_gaps_free (out);
        return -1;
    }
    return 0;
}

void
amictl_gaps_free (amictl_gaps_t *self)
{
    free (self->gaps);
    self->gaps = NULL;
    self->gap_count = 0;
}

/* ---------------------------------------------------------------------- */
/*  Text                                                                   */

static const char *
s_iv_quality (uint16_t status, char *buf, size_t cap)
{
    const char *names [8];
    int n = amictl_quality_names (status, names, 8);
    size_t len = 0;
    buf [0] = '\0';
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t) snprintf (buf + len, cap - len, "%s%s", i ? "," : "", names [i]);
    return buf;
}

static const char *
s_iv_bound (uint64_t ms, char out [AMICTL_TEXT])
{
    if (ms == 0)
        snprintf (out, AMICTL_TEXT, "(unbounded)");
    else
        amictl_format_time (ms, ms % 1000 != 0, out);
    return out;
}

void
amictl_print_intervals (FILE *out, const char *meter_id, uint64_t from_ms, uint64_t to_ms,
                        const ami_interval_t *records, size_t count)
{
    char a [AMICTL_TEXT], b [AMICTL_TEXT];
    fprintf (out, "Meter %s, interval ends %s .. %s\n", meter_id, s_iv_bound (from_ms, a),
             s_iv_bound (to_ms, b));
    fprintf (out, "%-21s %16s %16s  %s\n", "End (UTC)", "+A (Wh)", "-A (Wh)", "Status");
    for (size_t i = 0; i < count; i++) {
        char end [AMICTL_TEXT], quality [96];
        fprintf (out, "%-21s %16" PRIu64 " %16" PRIu64 "  %s\n",
                 amictl_format_time ((uint64_t) records [i].end_s * 1000, false, end),
                 records [i].import_wh, records [i].export_wh,
                 s_iv_quality (records [i].status, quality, sizeof quality));
    }
    fprintf (out, "%zu interval(s)\n", count);
}

void
amictl_print_gaps (FILE *out, const char *meter_id, const amictl_gaps_t *gaps)
{
    char a [AMICTL_TEXT], b [AMICTL_TEXT], step [AMICTL_TEXT];
    amictl_format_duration ((uint64_t) gaps->interval_s * 1000, step);
    if (gaps->expected == 0) {
        fprintf (out, "Meter %s: no interval end in the range (every %s): 0 missing\n",
                 meter_id, step);
        return;
    }
    fprintf (out, "Meter %s, interval ends %s .. %s every %s: %" PRIu64 " expected, %" PRIu64
             " present, %" PRIu64 " missing\n", meter_id,
             amictl_format_time (gaps->first_s * 1000, false, a),
             amictl_format_time (gaps->last_s * 1000, false, b), step,
             gaps->expected, gaps->present, gaps->missing);
    if (gaps->gap_count)
        fprintf (out, "%-20s    %-20s %10s\n", "Missing from (UTC)", "to (UTC)", "Intervals");
    for (size_t i = 0; i < gaps->gap_count; i++)
        fprintf (out, "%-20s .. %-20s %10" PRIu64 "\n",
                 amictl_format_time (gaps->gaps [i].first_s * 1000, false, a),
                 amictl_format_time (gaps->gaps [i].last_s * 1000, false, b),
                 gaps->gaps [i].count);
    if (gaps->off_grid)
        fprintf (out, "(%" PRIu64 " stored record(s) in the range end off the %s grid: "
                 "is --interval the meters' interval?)\n", gaps->off_grid, step);
    fprintf (out, "%" PRIu64 " missing\n", gaps->missing);
}

/* ---------------------------------------------------------------------- */
/*  JSON                                                                   */

static void
s_iv_json_time (amictl_json_t *j, const char *key, uint64_t ms)
{
    char text [AMICTL_TEXT];
    if (ms == 0)
        amictl_json_null (j, key);
    else
        amictl_json_str (j, key, amictl_format_time (ms, true, text));
}

static void
s_iv_json_corr (amictl_json_t *j, const uint8_t *corr)
{
    char hex [2 * AMI_REQUEST_ID_SIZE + 1];
    if (corr)
        amictl_json_str (j, "correlationId", ami_request_id_format (corr, hex));
    else
        amictl_json_null (j, "correlationId");
}

/* The smallest positive step between consecutive records, or 0. */
static uint32_t
s_iv_step (const ami_interval_t *records, size_t count)
{
    uint32_t step = 0;
    for (size_t i = 1; i < count; i++)
        if (records [i].end_s > records [i - 1].end_s) {
            uint32_t d = records [i].end_s - records [i - 1].end_s;
            if (step == 0 || d < step)
                step = d;
        }
    return step;
}

static void
s_iv_json_block (amictl_json_t *j, const uint8_t obis [AMI_OBIS_SIZE], bool import,
              uint32_t step, const ami_interval_t *records, size_t count)
{
    static const uint8_t profile [AMI_OBIS_SIZE] = { 1, 0, 99, 1, 0, 255 };
    char code [24];
    amictl_json_object (j, NULL);
    amictl_json_object (j, "ReadingType");
    amictl_json_str (j, "obis", ami_obis_format (obis, code));
    amictl_json_str (j, "name", amictl_obis_name (obis));
    amictl_json_str (j, "unit", "Wh");
    amictl_json_uint (j, "unitCode", 30);       //  DLMS unit code of Wh
    amictl_json_int (j, "powerOfTenMultiplier", 0);
    amictl_json_str (j, "accumulation", "bulkQuantity");   //  register value, not a delta
    if (step)
        amictl_json_uint (j, "intervalLength", step);
    else
        amictl_json_null (j, "intervalLength");
    amictl_json_str (j, "profile", ami_obis_format (profile, code));
    amictl_json_end (j);
    amictl_json_array (j, "IntervalReadings");
    for (size_t i = 0; i < count; i++) {
        const char *names [8];
        int n = amictl_quality_names (records [i].status, names, 8);
        amictl_json_object (j, NULL);
        s_iv_json_time (j, "timeStamp", (uint64_t) records [i].end_s * 1000);
        amictl_json_uint (j, "value", import ? records [i].import_wh : records [i].export_wh);
        amictl_json_array (j, "ReadingQualities");
        for (int q = 0; q < n; q++) {
            amictl_json_object (j, NULL);
            amictl_json_str (j, "ref", names [q]);
            amictl_json_end (j);
        }
        amictl_json_end (j);
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_intervals (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                       const char *meter_id, uint64_t from_ms, uint64_t to_ms,
                       const ami_interval_t *records, size_t count)
{
    static const uint8_t import [AMI_OBIS_SIZE] = { 1, 0, 1, 8, 0, 255 };
    static const uint8_t export [AMI_OBIS_SIZE] = { 1, 0, 2, 8, 0, 255 };
    uint32_t step = s_iv_step (records, count);
    amictl_json_object (j, NULL);
    amictl_json_object (j, "MeterReadings");
    s_iv_json_corr (j, corr);
    amictl_json_array (j, "MeterReading");
    amictl_json_object (j, NULL);
    amictl_json_object (j, "Meter");
    amictl_json_str (j, "mRID", meter_id);
    amictl_json_end (j);
    amictl_json_object (j, "valuesInterval");
    s_iv_json_time (j, "start", from_ms);
    s_iv_json_time (j, "end", to_ms);
    amictl_json_end (j);
    amictl_json_uint (j, "count", count);
    amictl_json_array (j, "IntervalBlocks");
    s_iv_json_block (j, import, true, step, records, count);
    s_iv_json_block (j, export, false, step, records, count);
    amictl_json_end (j);
    amictl_json_end (j);
    amictl_json_end (j);
    amictl_json_end (j);
    amictl_json_end (j);
}

void
amictl_json_gaps (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                  const char *meter_id, const amictl_gaps_t *gaps)
{
    amictl_json_object (j, NULL);
    s_iv_json_corr (j, corr);
    amictl_json_str (j, "mRID", meter_id);
    s_iv_json_time (j, "from", gaps->first_s * 1000);
    s_iv_json_time (j, "to", gaps->last_s * 1000);
    amictl_json_uint (j, "intervalLength", gaps->interval_s);
    amictl_json_uint (j, "expected", gaps->expected);
    amictl_json_uint (j, "present", gaps->present);
    amictl_json_uint (j, "missing", gaps->missing);
    amictl_json_uint (j, "offGrid", gaps->off_grid);
    amictl_json_array (j, "gaps");
    for (size_t i = 0; i < gaps->gap_count; i++) {
        amictl_json_object (j, NULL);
        s_iv_json_time (j, "from", gaps->gaps [i].first_s * 1000);
        s_iv_json_time (j, "to", gaps->gaps [i].last_s * 1000);
        amictl_json_uint (j, "count", gaps->gaps [i].count);
        amictl_json_end (j);
    }
    amictl_json_end (j);
    amictl_json_end (j);
}
