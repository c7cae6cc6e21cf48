/*  ami_meter_keys.h - the MDMS command-signing keys a meter fleet accepts.

    This header is the manual.

    Why a set and not one key (SEC-KEY-2, the MDMS's signing key rotated
    without stopping anything). A fleet acts only on commands the MDMS
    signed (SEC-AUTHZ-2). When the MDMS gets a new signing key, the fleets
    must accept the new key BEFORE the MDMS starts signing with it, and
    may stop accepting the old one only once the MDMS no longer uses it
    (commands already in flight, an MDMS not yet restarted). So for a
    window both keys are accepted: `ami-keygen rotate DIR mdms-sign`
    writes the new public key as DIR/app/mdms-pub/mdms-sign.cert and keeps
    the old one beside it as mdms-sign.old-<unix>[-N].cert with metadata
    "expires" (Unix seconds, the same window mechanism as the transport
    keys' allow-lists, ami_auth.h "Key rotation window"); `rotate DIR
    mdms-sign --finish` or `prune DIR` removes it.

    The directory (ami-meter's meter/mdms-pub):

        mdms-sign.cert                 the MDMS's current signing key
                                       (required; key-type ed25519)
        mdms-sign.old-<unix>[-N].cert  an old signing key kept during its
                                       window (key-type ed25519, metadata
                                       expires required: an old key
                                       without it is ignored, so no old
                                       key is accepted for ever)
        mdms-box.cert                  the MDMS's sealing key (not read
                                       here; ami_e2e_mdms_load)

    Files starting with '.' (keygen's temporaries) and ending in "_secret"
    are never read. An old key whose "expires" has passed is skipped by
    the load, and every verification compares each key's "expires" with
    the clock, so an expired key is refused on time even before prune
    removes it and before the next load.

    Bound: at most AMI_METER_KEYS_MAX keys. An Ed25519 signature does not
    say which key made it, so a command is verified against each accepted
    key in turn until one matches: a forged command costs one verification
    (~50 us) per key. The bound caps that cost (SEC-AVAIL-3) while leaving
    room for a second rotation inside the first one's window. The current
    key is always kept; beyond the bound, the old keys that expire first
    are left out (counted in `ignored`).

    Re-reading: every AMI_METER_KEYS_REFRESH_MS the fleet takes the
    directory's stamp (ami_meter_keys_stamp: a readdir and an lstat per
    key file, no file read) and reloads the set only when the stamp
    changed; its "RELOAD-KEYS" pipe command (ami-meter: SIGHUP) reloads at
    once. A load that fails (no readable current key) leaves the caller's
    set as it was: a half-written directory never empties the set.

    Thread safety: none needed; a set is a plain value owned by one actor.
*/
#ifndef AMI_METER_KEYS_H_INCLUDED
#define AMI_METER_KEYS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ami_e2e.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  At most 4 accepted signing keys: the current one, the one it replaced
    (one rotation), and room for a second rotation (and its predecessor)
    inside a window; worst case a forged command costs 4 verifications
    (~200 us) instead of 1. */
#define AMI_METER_KEYS_MAX          4
/*  How often a fleet re-reads its mdms-pub directory: 1 s, so a new key
    is accepted, and an old key removed by --finish refused, within about
    a second (keygen's restart advice waits for it), at the cost of a few
    file reads a second. */
#define AMI_METER_KEYS_REFRESH_MS   1000
/*  File names in the mdms-pub directory (see above). */
#define AMI_METER_KEYS_CURRENT      "mdms-sign.cert"
#define AMI_METER_KEYS_OLD_PREFIX   "mdms-sign.old-"
/*  Longest problem text ami_meter_keys_load writes. */
#define AMI_METER_KEYS_PROBLEM_MAX  256

typedef struct {
    uint8_t pk [AMI_METER_KEYS_MAX][AMI_E2E_SIGN_PK_SIZE];
    int64_t expires [AMI_METER_KEYS_MAX];  /* Unix s from which it is refused; 0 = never */
    size_t count;               /* keys in pk; pk [0] is the current key */
    size_t ignored;             /* usable old keys left out by the bound */
} ami_meter_keys_t;

/*  A set of exactly one key that never expires (a fleet configured with
    keys, not a directory: in-process users and tests). */
void
    ami_meter_keys_single (ami_meter_keys_t *keys, const uint8_t pk [AMI_E2E_SIGN_PK_SIZE]);

/*  Read the accepted signing keys from dir (see above) at Unix time
    now_s into *keys. Returns AMI_OK; or AMI_E_KEY when the current key
    is missing, unreadable or not an ed25519 key (then *keys is left
    unchanged). Old keys that are unreadable, of another key type,
    without a valid "expires", or already expired are skipped. Logs
    nothing: the first problem met (also a skipped old key) is written to
    problem (cap bytes, "" if none) for the caller to log when it wants
    (a fleet reloads every second and logs only changes). */
int
    ami_meter_keys_load (ami_meter_keys_t *keys, const char *dir, int64_t now_s,
                         char *problem, size_t cap);

/*  A fingerprint of dir's signing-key files as the file system sees
    them (names, sizes, inodes, modification times to the nanosecond),
    for a cheap "did anything change?" between two loads. Reads no file.
    A missing or unreadable directory has a stamp too (all zero). */
#define AMI_METER_KEYS_STAMP_SIZE   16
void
    ami_meter_keys_stamp (const char *dir, uint8_t stamp [AMI_METER_KEYS_STAMP_SIZE]);

/*  Do a and b accept exactly the same keys with the same expiries? */
bool
    ami_meter_keys_equal (const ami_meter_keys_t *a, const ami_meter_keys_t *b);

/*  Verify a signed frame (ami_e2e_verify) against every key of the set
    not expired at now_s, starting with key *which (the one that verified
    last time: the likely one; any value is fine) and stores in *which the
    index of the key that verified. Returns AMI_OK or AMI_E_BAD_SIGNATURE
    (no key verifies it, or every key has expired). Cost: one Ed25519
    verification per key tried. */
int
    ami_meter_keys_verify (const ami_meter_keys_t *keys, const uint8_t *frame, size_t size,
                           int64_t now_s, size_t *which);

#ifdef __cplusplus
}
#endif

#endif
