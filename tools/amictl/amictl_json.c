/*  amictl_json.c - JSON writer and string escaper (see amictl_json.h).

    Design: a growable byte buffer plus a stack of "has this container
    written an element yet" flags, so commas are never the caller's job.
    The escaper decodes UTF-8 itself (no locale dependence) following the
    Unicode "well-formed UTF-8" table (Unicode 15, table 3-7).
*/
#include "amictl_json.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t len, cap;
    bool failed;                /* out of memory: sticky */
} buf_t;

struct amictl_json_t {
    buf_t buf;
    int depth;
    bool is_object [AMICTL_JSON_MAX_DEPTH];
    bool has_items [AMICTL_JSON_MAX_DEPTH];
};

static void
s_put (buf_t *b, const char *bytes, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc (b->data, cap);
        if (!data) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy (b->data + b->len, bytes, n);
    b->len += n;
    b->data [b->len] = '\0';
}

static void
s_puts (buf_t *b, const char *s)
{
    s_put (b, s, strlen (s));
}

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if invalid. */
static size_t
s_utf8_len (const unsigned char *s, size_t n)
{
    unsigned char c = s [0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;     //  bounds of the second byte
    if (c < 0x80)
        return 1;
    else
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else
    if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;                      //  no overlong 3-byte forms
        if (c == 0xED)
            hi = 0x9F;                      //  no UTF-16 surrogates
    }
    else
    if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;                      //  no overlong 4-byte forms
        if (c == 0xF4)
            hi = 0x8F;                      //  nothing above U+10FFFF
    }
    else
        return 0;                           //  C0, C1, F5..FF, continuation
    if (n < len || s [1] < lo || s [1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s [i] < 0x80 || s [i] > 0xBF)
            return 0;
    return len;
}

static void
s_escape_into (buf_t *b, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *) text;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s [i];
        char esc [8];
        if (c == '"' || c == '\\') {
            esc [0] = '\\';
            esc [1] = (char) c;
            s_put (b, esc, 2);
            i++;
        }
        else
        if (c < 0x20) {
            const char *named = c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == '\n' ? "\\n"
                              : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (named)
                s_puts (b, named);
            else {
                snprintf (esc, sizeof esc, "\\u%04x", c);
                s_puts (b, esc);
            }
            i++;
        }
        else {
            size_t n = s_utf8_len (s + i, len - i);
            if (n == 0) {
                s_puts (b, "\\ufffd");      //  one replacement per bad byte
                i++;
            }
            else {
                s_put (b, (const char *) s + i, n);
                i += n;
            }
        }
    }
}

char *
amictl_json_escape (const char *text, size_t len)
{
    buf_t b = { 0 };
    s_put (&b, "", 0);                      //  an empty string is still a string
    s_escape_into (&b, text, len);
    if (b.failed) {
        free (b.data);
        return NULL;
    }
    return b.data;
}

amictl_json_t *
amictl_json_new (void)
{
    return calloc (1, sizeof (amictl_json_t));
}

void
amictl_json_destroy (amictl_json_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->buf.data);
        free (*self_p);
        *self_p = NULL;
    }
}

/* Comma and key before a value, per the container we are in. */
static void
s_prefix (amictl_json_t *self, const char *key)
{
    if (self->depth > 0) {
        int top = self->depth - 1;
        assert (self->is_object [top] == (key != NULL));
        if (self->has_items [top])
            s_puts (&self->buf, ",");
        self->has_items [top] = true;
    }
    else
        assert (key == NULL);
    if (key) {
        s_puts (&self->buf, "\"");
        s_escape_into (&self->buf, key, strlen (key));
        s_puts (&self->buf, "\":");
    }
}

static void
s_open (amictl_json_t *self, const char *key, bool object)
{
    assert (self->depth < AMICTL_JSON_MAX_DEPTH);
    s_prefix (self, key);
    s_puts (&self->buf, object ? "{" : "[");
    self->is_object [self->depth] = object;
    self->has_items [self->depth] = false;
    self->depth++;
}

void
amictl_json_object (amictl_json_t *self, const char *key)
{
    s_open (self, key, true);
}

void
amictl_json_array (amictl_json_t *self, const char *key)
{
    s_open (self, key, false);
}

void
amictl_json_end (amictl_json_t *self)
{
    assert (self->depth > 0);
    self->depth--;
    s_puts (&self->buf, self->is_object [self->depth] ? "}" : "]");
}

void
amictl_json_str (amictl_json_t *self, const char *key, const char *value)
{
    s_prefix (self, key);
    if (!value) {
        s_puts (&self->buf, "null");
        return;
    }
    s_puts (&self->buf, "\"");
    s_escape_into (&self->buf, value, strlen (value));
    s_puts (&self->buf, "\"");
}

void
amictl_json_int (amictl_json_t *self, const char *key, int64_t value)
{
    char text [32];
    snprintf (text, sizeof text, "%" PRId64, value);
    s_prefix (self, key);
    s_puts (&self->buf, text);
}

void
amictl_json_uint (amictl_json_t *self, const char *key, uint64_t value)
{
    char text [32];
    snprintf (text, sizeof text, "%" PRIu64, value);
    s_prefix (self, key);
    s_puts (&self->buf, text);
}

void
amictl_json_bool (amictl_json_t *self, const char *key, bool value)
{
    s_prefix (self, key);
    s_puts (&self->buf, value ? "true" : "false");
}

void
amictl_json_null (amictl_json_t *self, const char *key)
{
    s_prefix (self, key);
    s_puts (&self->buf, "null");
}

const char *
amictl_json_text (amictl_json_t *self)
{
    if (self->buf.failed)
        return NULL;
    return self->buf.data ? self->buf.data : "";
}
