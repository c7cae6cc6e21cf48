/*  amictl_json.h - the small JSON writer behind `amictl --json`.

    amictl prints exactly one JSON object per run on stdout, so a script can
    pipe it to a JSON parser. This writer builds that object in memory with
    commas and nesting handled for the caller, and escapes every string
    (RFC 8259): '"' and '\\' are backslash-escaped, control characters
    become \b \f \n \r \t or \u00XX, valid UTF-8 passes through unchanged,
    and every byte that is not part of a valid UTF-8 sequence (stray
    continuation bytes, overlong forms, UTF-16 surrogates, code points above
    U+10FFFF, truncated sequences) becomes \ufffd, so the output is always
    valid JSON and valid UTF-8 whatever bytes a peer sent.

        amictl_json_t *j = amictl_json_new ();
        amictl_json_object (j, NULL);                 //  {
        amictl_json_str (j, "mRID", "MTR-000001");    //  "mRID":"MTR-000001"
        amictl_json_array (j, "Readings");            //  ,"Readings":[
        amictl_json_int (j, NULL, 42);                //  42
        amictl_json_end (j);                          //  ]
        amictl_json_end (j);                          //  }
        puts (amictl_json_text (j));

    Keys are given inside objects and must be NULL inside arrays and at top
    level (asserted: a programming error). Out of memory is sticky:
    amictl_json_text returns NULL afterwards.
*/
#ifndef AMICTL_JSON_H_INCLUDED
#define AMICTL_JSON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct amictl_json_t amictl_json_t;

/* Nesting depth the writer supports; amictl's deepest document (history
   --from/--to: MeterReadings .. IntervalReadings .. ReadingQualities) is 10. */
#define AMICTL_JSON_MAX_DEPTH 16

/*  Create / destroy a writer (destroy is idempotent, nulls *self_p). */
amictl_json_t *
    amictl_json_new (void);
void
    amictl_json_destroy (amictl_json_t **self_p);

/*  Open an object or array (as the value of key inside an object). */
void
    amictl_json_object (amictl_json_t *self, const char *key);
void
    amictl_json_array (amictl_json_t *self, const char *key);

/*  Close the innermost open object or array. */
void
    amictl_json_end (amictl_json_t *self);

/*  Values. amictl_json_str with value NULL writes null. */
void
    amictl_json_str (amictl_json_t *self, const char *key, const char *value);
void
    amictl_json_int (amictl_json_t *self, const char *key, int64_t value);
void
    amictl_json_uint (amictl_json_t *self, const char *key, uint64_t value);
void
    amictl_json_bool (amictl_json_t *self, const char *key, bool value);
void
    amictl_json_null (amictl_json_t *self, const char *key);

/*  The document so far (NUL-terminated, belongs to the writer), or NULL
    after an out-of-memory failure. Complete once every object/array
    opened has been ended. */
const char *
    amictl_json_text (amictl_json_t *self);

/*  Escape len bytes of text as the contents of a JSON string (without the
    surrounding quotes), as described above. Returns a heap string the
    caller frees, or NULL when out of memory. */
char *
    amictl_json_escape (const char *text, size_t len);

#endif
