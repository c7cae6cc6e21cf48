/*  amictl_intervals.h - interval data (load profile) for amictl: the gap
    finder behind `amictl gaps` and the renderings of `amictl history
    --from/--to` and `amictl gaps`.

    An interval record is [end_s, import_wh, export_wh, status] (PROTOCOL.md
    4.8): the +A and -A energy registers at the interval's END, in Wh, and
    the AMI_Q_* flags of the interval. A meter with interval length I has
    one record per end time that is a multiple of I; the MDMS stores each
    (meter, end) once.

    JSON follows IEC 61968-9 MeterReadings with IntervalBlocks, one block
    per register (+A, then -A), each reading at its interval end:

        {"MeterReadings":{"correlationId":"<32 hex>","MeterReading":[
          {"Meter":{"mRID":"MTR-000001"},
           "valuesInterval":{"start":"...Z","end":"...Z"},
           "IntervalBlocks":[
             {"ReadingType":{"obis":"1.0.1.8.0.255","name":"Active energy import (+A)",
                             "unit":"Wh","unitCode":30,"powerOfTenMultiplier":0,
                             "accumulation":"bulkQuantity","intervalLength":900,
                             "profile":"1.0.99.1.0.255"},
              "IntervalReadings":[{"timeStamp":"2026-11-26T00:15:00.000Z","value":12345678,
                                   "ReadingQualities":[{"ref":"valid"}]}, ...]},
             {"ReadingType":{"obis":"1.0.2.8.0.255", ...}, "IntervalReadings":[...]}]}]}}

    valuesInterval is the requested range (null for an unbounded end);
    intervalLength is the smallest step between consecutive records, in
    seconds (null with fewer than two records).
*/
#ifndef AMICTL_INTERVALS_H_INCLUDED
#define AMICTL_INTERVALS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ami_msg.h"
#include "amictl_json.h"

/*  One run of consecutive missing interval ends: first .. last (Unix
    seconds, both multiples of the interval), count of them. */
typedef struct {
    uint64_t first_s;
    uint64_t last_s;
    uint64_t count;
} amictl_gap_t;

typedef struct {
    uint32_t interval_s;        /* as asked */
    uint64_t first_s, last_s;   /* first and last expected end in the range (0, 0: none) */
    uint64_t expected;          /* ends in [first_s, last_s] */
    uint64_t present;           /* of those, with a record */
    uint64_t missing;           /* expected - present */
    uint64_t off_grid;          /* records in the range whose end is not a multiple */
    amictl_gap_t *gaps;         /* heap array, gap_count runs, oldest first */
    size_t gap_count;
} amictl_gaps_t;

/*  Find the missing interval ends of a range: the expected ends are the
    multiples of interval_s (> 0) from from_ms to to_ms (Unix ms,
    inclusive, to_ms >= from_ms); records (ascending by end_s, as
    ami_client_intervals returns them) are what is stored. Records outside
    the range are ignored; records off the grid are counted in off_grid.
    Fills *out (free with amictl_gaps_free). Returns 0, or -1 when out of
    memory (*out then holds no gaps). */
int
    amictl_gaps_find (const ami_interval_t *records, size_t count, uint64_t from_ms,
                      uint64_t to_ms, uint32_t interval_s, amictl_gaps_t *out);

void
    amictl_gaps_free (amictl_gaps_t *self);

/*  history --from/--to: a header line, one line per record (end time UTC,
    +A Wh, -A Wh, quality names), and a count line. from_ms/to_ms are the
    range asked (0 = unbounded). */
void
    amictl_print_intervals (FILE *out, const char *meter_id, uint64_t from_ms, uint64_t to_ms,
                            const ami_interval_t *records, size_t count);
void
    amictl_json_intervals (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                           const char *meter_id, uint64_t from_ms, uint64_t to_ms,
                           const ami_interval_t *records, size_t count);

/*  gaps: a summary line (expected, present, missing), one line per run of
    missing ends, and a note on off-grid records; and its JSON:
    {"correlationId","mRID","from","to","intervalLength","expected",
     "present","missing","offGrid","gaps":[{"from","to","count"}...]}. */
void
    amictl_print_gaps (FILE *out, const char *meter_id, const amictl_gaps_t *gaps);
void
    amictl_json_gaps (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                      const char *meter_id, const amictl_gaps_t *gaps);

#endif
