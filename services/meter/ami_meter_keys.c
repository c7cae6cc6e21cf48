/*  ami_meter_keys.c - the set of MDMS signing keys a fleet accepts (see
    ami_meter_keys.h for the layout, the bound and the why).

    Design: a value type, rebuilt from the directory by a load that either
    succeeds completely or changes nothing; verification walks the set
    starting with the key that matched last.
*/
#include "ami_meter_keys.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ami_auth.h"
#include "ami_cert.h"
#include "ami_err.h"

/*  Old keys considered before the bound is applied: more than this many
    files in one directory is not a rotation but a mess; the rest are
    counted as ignored. */
#define S_CANDIDATES_MAX    64

typedef struct {
    uint8_t pk [AMI_E2E_SIGN_PK_SIZE];
    int64_t expires;
} candidate_t;

static void
s_problem (char *problem, size_t cap, const char *fmt, ...) CHECK_PRINTF (3);

/*  Record the first problem only. */
static void
s_problem (char *problem, size_t cap, const char *fmt, ...)
{
    if (!problem || cap == 0 || problem [0])
        return;
    va_list args;
    va_start (args, fmt);
    vsnprintf (problem, cap, fmt, args);
    va_end (args);
}

static bool
s_ends_with (const char *text, const char *suffix)
{
    size_t tlen = strlen (text), slen = strlen (suffix);
    return tlen >= slen && strcmp (text + tlen - slen, suffix) == 0;
}

/*  Is name one of the files this class reads? (current or old key) */
static bool
s_key_file (const char *name, bool *old)
{
    if (name [0] == '.' || s_ends_with (name, "_secret"))
        return false;
    *old = false;
    if (strcmp (name, AMI_METER_KEYS_CURRENT) == 0)
        return true;
    size_t n = strlen (AMI_METER_KEYS_OLD_PREFIX);
    if (strncmp (name, AMI_METER_KEYS_OLD_PREFIX, n) == 0 && s_ends_with (name + n, ".cert")
    &&  strlen (name) > n + strlen (".cert")) {
        *old = true;
        return true;
    }
    return false;
}

/*  Load one public ed25519 key file; 0 on success. */
static int
s_load_one (const char *path, candidate_t *out, bool need_expires, int64_t now_s,
            char *problem, size_t cap)
{
    int err = 0;
    ami_cert_t *cert = ami_cert_load_public (path, &err);
    if (!cert) {
        s_problem (problem, cap, "%s: not a readable certificate (%s)", path, ami_strerror (err));
        return AMI_E_KEY;
    }
    int rc = AMI_OK;
    const char *expires = ami_cert_meta (cert, AMI_AUTH_META_EXPIRES);
    out->expires = 0;
    if (strcmp (ami_cert_key_type (cert), AMI_CERT_KEY_ED25519) != 0) {
        s_problem (problem, cap, "%s: key-type '%s', expected '%s'", path,
                   ami_cert_key_type (cert), AMI_CERT_KEY_ED25519);
        rc = AMI_E_KEY;
    }
    else
    if (expires && !ami_auth_parse_expires (expires, &out->expires)) {
        s_problem (problem, cap, "%s: expires '%s' is not Unix seconds: ignored", path, expires);
        rc = AMI_E_KEY;
    }
    else
    if (need_expires && !expires) {
        //  an old key without an end would be accepted for ever
        s_problem (problem, cap, "%s: an old key without expires: ignored", path);
        rc = AMI_E_KEY;
    }
    else
    if (expires && out->expires <= now_s)
        rc = AMI_E_EXPIRED;         //  normal until prune runs: not a problem
    else
        memcpy (out->pk, ami_cert_public_key (cert), AMI_E2E_SIGN_PK_SIZE);
    ami_cert_destroy (&cert);
    return rc;
}

/*  qsort: latest expiry first */
static int
s_by_expiry_desc (const void *a, const void *b)
{
    int64_t x = ((const candidate_t *) a)->expires, y = ((const candidate_t *) b)->expires;
    return x < y ? 1 : x > y ? -1 : 0;
}

void
ami_meter_keys_single (ami_meter_keys_t *keys, const uint8_t pk [AMI_E2E_SIGN_PK_SIZE])
{
    assert (keys && pk);
    memset (keys, 0, sizeof *keys);
    memcpy (keys->pk [0], pk, AMI_E2E_SIGN_PK_SIZE);
    keys->count = 1;
}

int
ami_meter_keys_load (ami_meter_keys_t *keys, const char *dir, int64_t now_s,
                     char *problem, size_t cap)
{
    assert (keys && dir);
    if (problem && cap)
        problem [0] = '\0';
    DIR *d = opendir (dir);
    if (!d) {
        s_problem (problem, cap, "cannot read directory %s: %s", dir, strerror (errno));
        return AMI_E_KEY;
    }
    //  the current key first, so its problem is the one reported
    candidate_t current, old [S_CANDIDATES_MAX];
    char path [4096];
    struct stat st;
    bool have_current = false;
    if (snprintf (path, sizeof path, "%s/%s", dir, AMI_METER_KEYS_CURRENT) >= (int) sizeof path
    ||  lstat (path, &st) != 0)
        s_problem (problem, cap, "%s/%s: missing: no current MDMS signing key", dir,
                   AMI_METER_KEYS_CURRENT);
    else {
        int rc = s_load_one (path, &current, false, 0, problem, cap);
        have_current = rc == AMI_OK;
    }
    if (!have_current) {
        closedir (d);
        return AMI_E_KEY;
    }
    size_t olds = 0, ignored = 0;
    struct dirent *e;
    while ((e = readdir (d))) {
        bool is_old = false;
        if (!s_key_file (e->d_name, &is_old) || !is_old)
            continue;
        if (snprintf (path, sizeof path, "%s/%s", dir, e->d_name) >= (int) sizeof path)
            continue;
        candidate_t c;
        if (s_load_one (path, &c, true, now_s, problem, cap) != AMI_OK)
            continue;
        if (olds < S_CANDIDATES_MAX)
            old [olds++] = c;
        else
            ignored++;
    }
    closedir (d);
    ami_meter_keys_t fresh;
    memset (&fresh, 0, sizeof fresh);
    memcpy (fresh.pk [0], current.pk, AMI_E2E_SIGN_PK_SIZE);
    fresh.expires [0] = current.expires;
    fresh.count = 1;
    qsort (old, olds, sizeof old [0], s_by_expiry_desc);
    for (size_t i = 0; i < olds; i++) {
        bool duplicate = false;
        for (size_t k = 0; k < fresh.count && !duplicate; k++)
            duplicate = memcmp (fresh.pk [k], old [i].pk, AMI_E2E_SIGN_PK_SIZE) == 0;
        if (duplicate)
            continue;           //  e.g. the old copy written before the new key
        if (fresh.count == AMI_METER_KEYS_MAX) {
            ignored++;
            continue;
        }
        memcpy (fresh.pk [fresh.count], old [i].pk, AMI_E2E_SIGN_PK_SIZE);
        fresh.expires [fresh.count] = old [i].expires;
        fresh.count++;
    }
    fresh.ignored = ignored;
    if (ignored)
        s_problem (problem, cap, "%s: %zu old signing key(s) beyond the bound of %d ignored "
                   "(run ami-keygen prune)", dir, ignored, AMI_METER_KEYS_MAX);
    *keys = fresh;
    return AMI_OK;
}

void
ami_meter_keys_stamp (const char *dir, uint8_t stamp [AMI_METER_KEYS_STAMP_SIZE])
{
    assert (dir && stamp);
    crypto_generichash_state state;
    crypto_generichash_init (&state, NULL, 0, AMI_METER_KEYS_STAMP_SIZE);
    DIR *d = opendir (dir);
    struct dirent *e;
    while (d && (e = readdir (d))) {
        bool is_old = false;
        if (!s_key_file (e->d_name, &is_old))
            continue;
        char path [4096];
        struct stat st;
        if (snprintf (path, sizeof path, "%s/%s", dir, e->d_name) >= (int) sizeof path
        ||  lstat (path, &st) != 0)
            continue;
        //  in readdir order: stable while the directory is unchanged (and
        //  if it were not, the cost is one needless reload)
        int64_t fields [] = { (int64_t) st.st_ino, (int64_t) st.st_size,
                              (int64_t) st.st_mtim.tv_sec, (int64_t) st.st_mtim.tv_nsec,
                              (int64_t) st.st_ctim.tv_sec, (int64_t) st.st_ctim.tv_nsec };
        crypto_generichash_update (&state, (const uint8_t *) e->d_name, strlen (e->d_name) + 1);
        crypto_generichash_update (&state, (const uint8_t *) fields, sizeof fields);
    }
    if (d)
        closedir (d);
    crypto_generichash_final (&state, stamp, AMI_METER_KEYS_STAMP_SIZE);
    if (!d)
        memset (stamp, 0, AMI_METER_KEYS_STAMP_SIZE);
}

bool
ami_meter_keys_equal (const ami_meter_keys_t *a, const ami_meter_keys_t *b)
{
    assert (a && b);
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (memcmp (a->pk [i], b->pk [i], AMI_E2E_SIGN_PK_SIZE) != 0
        ||  a->expires [i] != b->expires [i])
            return false;
    return true;
}

int
ami_meter_keys_verify (const ami_meter_keys_t *keys, const uint8_t *frame, size_t size,
                       int64_t now_s, size_t *which)
{
    assert (keys && which);
    size_t start = *which < keys->count ? *which : 0;
    for (size_t n = 0; n < keys->count; n++) {
        size_t i = (start + n) % keys->count;
        if (keys->expires [i] && keys->expires [i] <= now_s)
            continue;
        if (ami_e2e_verify (frame, size, keys->pk [i]) == AMI_OK) {
            *which = i;
            return AMI_OK;
        }
    }
    return AMI_E_BAD_SIGNATURE;
}
