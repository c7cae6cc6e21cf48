/*  amictl_print.h - how amictl shows readings, meters and services.

    Two renderings of every API reply:
      - text for a person: aligned tables on stdout;
      - JSON for a program: exactly one object, see tools/amictl/README.md
        for the shapes. Readings follow IEC 61968-9 MeterReadings
        (MeterReading / Readings / ReadingType / ReadingQualities):

        {"MeterReadings":{"correlationId":"<32 hex>","MeterReading":[
          {"Meter":{"mRID":"MTR-000150"},
           "correlationId":"<32 hex: the read that produced it>",
           "requestedDateTime":"2025-11-26T07:12:41.120Z",
           "readDateTime":"2025-11-26T07:12:41.123Z",
           "storedDateTime":"2025-11-26T07:12:41.125Z",
           "Readings":[
             {"ReadingType":{"obis":"1.0.1.8.0.255","name":"Active energy import (+A)",
                             "unit":"Wh","unitCode":30,"powerOfTenMultiplier":0},
              "value":12345,"timeStamp":"2025-11-26T07:12:41.123Z",
              "ReadingQualities":[{"ref":"valid"}]}, ...]}]}}

      value is the register's integer exactly as the meter sent it; the
      quantity is value x 10^powerOfTenMultiplier in unit (230.1 V is
      value 2301, multiplier -1): no floating point anywhere, nothing lost.

    Registers are named from the OBIS catalogue of DESIGN.md section 7;
    units from DLMS/COSEM unit codes (IEC 62056-62): 7 s, 27 W, 28 VA,
    29 var, 30 Wh, 31 VAh, 32 varh, 33 A, 35 V, 44 Hz, 255 none.
*/
#ifndef AMICTL_PRINT_H_INCLUDED
#define AMICTL_PRINT_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ami_msg.h"
#include "amictl_json.h"

/* Room for any formatted value / time / duration below. */
#define AMICTL_TEXT 48
/* status: a service's stats wrap at this many columns (a terminal's 100). */
#define AMICTL_STATUS_WIDTH 100

/*  Name of a register by OBIS code ("Active energy import (+A)"), or NULL
    if it is not in the catalogue. */
const char *
    amictl_obis_name (const uint8_t obis [AMI_OBIS_SIZE]);

/*  Unit symbol of a DLMS unit code ("Wh"; "none" for 255), or NULL for a
    code not in the table. */
const char *
    amictl_unit_symbol (uint8_t unit);

/*  value x 10^scaler as exact decimal text ("230.1", "-0.005", "1200").
    Returns out. */
char *
    amictl_format_scaled (int64_t value, int8_t scaler, char out [AMICTL_TEXT]);

/*  Unix milliseconds as ISO 8601 UTC: "2025-11-26T07:12:41.123Z" (with_ms)
    or "2025-11-26T07:12:41Z". Returns out. */
char *
    amictl_format_time (uint64_t ms, bool with_ms, char out [AMICTL_TEXT]);

/*  A duration for people: "850ms", "12.3s", "4m05s", "2h03m", "3d04h".
    Returns out. */
char *
    amictl_format_duration (uint64_t ms, char out [AMICTL_TEXT]);

/*  Parse a point in time for `audit --since` into Unix ms: ISO 8601 UTC
    "2026-11-26T08:00:00Z" (optionally with .mmm before the Z), a Unix
    time in seconds ("1795680000"), or relative to now_ms: "-90s", "-30m",
    "-1h", "-2d". Returns 0, or -1 for anything else (no partial parses,
    no local times, nothing before 1970). */
int
    amictl_parse_time (const char *text, uint64_t now_ms, uint64_t *out);

/*  Copy text into out[cap] for a terminal: C0 and C1 control characters
    and DEL become '?', invalid UTF-8 bytes too, so text from a peer (a
    customer name) can never drive the terminal. Returns out. */
char *
    amictl_safe_text (const char *text, char *out, size_t cap);

/*  Why a record failed re-verification, for people: `audit` false for
    stored readings (verify), true for audit entries (audit --verify).
    Falls back to ami_strerror for other codes. Never NULL. */
const char *
    amictl_verify_reason (int code, bool audit);

/*  Why an audit --verify failure {ref, code} was reported, for people:
    ref 0 is the anchor file itself (missing: AMI_E_NOTFOUND; not the
    anchor the MDMS wrote: AMI_E_BAD_SIGNATURE; a record that is not an
    entry: AMI_E_STORAGE), any other ref an entry's seq (AMI_E_TRUNCATED:
    an end of the range cut from the log's tail). Never NULL. */
const char *
    amictl_audit_reason (uint64_t ref, int code);

/*  "STARTING", "READY", "DEGRADED", "STOPPING", "DOWN", or "UNKNOWN". */
const char *
    amictl_state_name (int state);

/*  Names of the AMI_Q_* flags set in quality ("estimated", "clockError",
    "overflow", "powerFail", "tamper", "other" for unknown bits) into
    names[0..max); "valid" alone when quality is 0. Returns the count. */
int
    amictl_quality_names (uint32_t quality, const char *names [], int max);

/*  Text renderings (stdout). */
void
    amictl_print_reading (FILE *out, const ami_stored_reading_t *row,
                          const uint8_t corr [AMI_REQUEST_ID_SIZE]);
void
    amictl_print_history (FILE *out, const char *meter_id,
                          const ami_stored_reading_t *rows, size_t count);
void
    amictl_print_meters (FILE *out, const ami_meter_row_t *rows, size_t count);
/*  recover (SEC-INT-5): the line after the reading saying that the
    intervals of [from_ms, to_ms] (their END times) were asked for again,
    arrive through ingest, and how to check them (amictl gaps). */
void
    amictl_print_recover (FILE *out, const char *meter_id, uint64_t from_ms, uint64_t to_ms);
/*  status: one row per service (role, node, state, uptime, age of its last
    report), then its stats (name=value, from its last HEALTH) indented on
    the lines below, wrapped at AMICTL_STATUS_WIDTH. JSON: each service
    object has "stats":{"name":value,...}. */
void
    amictl_print_status (FILE *out, const ami_service_row_t *rows, size_t count);
void
    amictl_print_customer (FILE *out, const ami_api_customer_t *customer);
/*  verify: checked/failed summary line, then one line per listed failure
    (reading time, error name, reason). */
void
    amictl_print_verify (FILE *out, const char *meter_id, const ami_api_verify_t *result);
/*  audit --verify: "audit chain intact: N entries", or the failing seqs. */
void
    amictl_print_audit_verify (FILE *out, const ami_api_verify_t *result);
/*  audit: one line per entry (seq, time, operator, role, action, meter,
    correlation id, result name, first 12 hex digits of the hash). */
void
    amictl_print_audit (FILE *out, const ami_audit_row_t *rows, size_t count);

/*  JSON renderings: each writes one complete top-level object into j. */
void
    amictl_json_meter_readings (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                                const ami_stored_reading_t *rows, size_t count);
/*  recover: {"MeterReadings":{...as read...},"Recovery":{"mRID",
    "fromDateTime","toDateTime","intervals":"asked for again: ..."}} */
void
    amictl_json_recover (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                         const ami_stored_reading_t *row, const char *meter_id,
                         uint64_t from_ms, uint64_t to_ms);
void
    amictl_json_meters (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                        const ami_meter_row_t *rows, size_t count);
void
    amictl_json_status (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                        const ami_service_row_t *rows, size_t count);
void
    amictl_json_customer (amictl_json_t *j, const ami_api_customer_t *customer);
/*  meter_id NULL: the audit chain (failures by seq); else stored readings
    of meter_id (failures by reading time). */
void
    amictl_json_verify (amictl_json_t *j, const char *meter_id, const ami_api_verify_t *result);
void
    amictl_json_audit (amictl_json_t *j, const uint8_t corr [AMI_REQUEST_ID_SIZE],
                       const ami_audit_row_t *rows, size_t count);

/*  {"error":{"code":N,"name":"AMI_E_...","message":"...","origin":...,
    "correlationId":...}}: origin and corr may be NULL (written as null). */
void
    amictl_json_error (amictl_json_t *j, int code, const char *message, const char *origin,
                       const uint8_t *corr);

#endif
