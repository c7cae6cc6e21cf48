/*  fuzz_msg.c - libFuzzer target for the wire codec (SEC-VAL-1).

    For every input:
    - ami_msg_peek_type and ami_msg_signature_slot must not misbehave on
      raw bytes (ASan/UBSan watch every read);
    - ami_msg_decode either refuses it with a decode error code and leaves
      type 0, or accepts it, and then a differential round-trip oracle
      holds: re-encoding succeeds, is no longer than the input (our encoder
      emits the shortest msgpack form of everything; note that a shortest
      form is not unique - 300 is cd 01 2c or d1 01 2c - so equal length
      does not imply equal bytes), decodes again, and
      re-encodes to the identical bytes; peek_type agrees with the decoded
      type; the signature slot exists exactly for READ_REQ/READ_RESP and
      holds the decoded signature.
    Any violation aborts, which libFuzzer reports as a crash.

    The two messages and buffers are allocated once and reused (as a
    service does); they are never freed, which LeakSanitizer treats as
    reachable, not leaked.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_msg.h"

static ami_msg_t *s_first;
static ami_msg_t *s_second;
static uint8_t *s_enc1;
static uint8_t *s_enc2;

static void
s_fail (const char *what, int a, int b)
{
    fprintf (stderr, "fuzz_msg oracle: %s (%d, %d)\n", what, a, b);
    abort ();
}

static const uint8_t *
s_signature_of (const ami_msg_t *m)
{
    if (m->type == AMI_MSG_READ_REQ)
        return m->read_req.signature;
    if (m->type == AMI_MSG_READ_RESP)
        return m->read_resp.signature;
    return NULL;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (!s_first) {
        s_first = ami_msg_new ();
        s_second = ami_msg_new ();
        s_enc1 = malloc (AMI_MAX_FRAME);
        s_enc2 = malloc (AMI_MAX_FRAME);
        if (!s_first || !s_second || !s_enc1 || !s_enc2)
            abort ();
    }
    int peek = ami_msg_peek_type (data, size);
    size_t signed_len = 0;
    const uint8_t *slot = ami_msg_signature_slot (data, size, &signed_len);
    if (slot && (slot != data + size - AMI_SIGNATURE_SIZE
              || signed_len != size - AMI_SIGNATURE_FIELD))
        s_fail ("slot position", (int) signed_len, (int) size);

    int rc = ami_msg_decode (s_first, data, size);
    if (rc != AMI_OK) {
        if (s_first->type != 0)
            s_fail ("failed decode left a type", rc, s_first->type);
        if (rc < AMI_E_TRUNCATED || rc > AMI_E_NOMEM)
            s_fail ("decode returned a non-decode code", rc, 0);
        return 0;
    }
    if (peek != s_first->type)
        s_fail ("peek_type disagrees with decode", peek, s_first->type);
    const uint8_t *sig = s_signature_of (s_first);
    if ((sig != NULL) != (slot != NULL))
        s_fail ("signature slot presence", s_first->type, slot != NULL);
    if (sig && memcmp (sig, slot, AMI_SIGNATURE_SIZE) != 0)
        s_fail ("slot bytes differ from decoded signature", s_first->type, 0);

    size_t len1 = 0, len2 = 0;
    rc = ami_msg_encode (s_first, s_enc1, AMI_MAX_FRAME, &len1);
    if (rc != AMI_OK)
        s_fail ("decoded message does not re-encode", rc, s_first->type);
    if (len1 > size)
        s_fail ("re-encoding longer than the input", (int) len1, (int) size);
    rc = ami_msg_decode (s_second, s_enc1, len1);
    if (rc != AMI_OK)
        s_fail ("re-encoded message does not decode", rc, s_first->type);
    if (s_second->type != s_first->type)
        s_fail ("type changed", s_first->type, s_second->type);
    rc = ami_msg_encode (s_second, s_enc2, AMI_MAX_FRAME, &len2);
    if (rc != AMI_OK)
        s_fail ("second re-encode failed", rc, s_first->type);
    if (len1 != len2 || memcmp (s_enc1, s_enc2, len1) != 0)
        s_fail ("round trip not stable", (int) len1, (int) len2);
    return 0;
}
