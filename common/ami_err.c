/*  ami_err.c - names and descriptions for ami_err_t codes. */
#include "ami_err.h"

#include <stddef.h>

typedef struct {
    int code;
    const char *name;
    const char *text;
} ami_err_entry_t;

static const ami_err_entry_t s_errors [] = {
    { AMI_OK,              "AMI_OK",              "success" },
    { AMI_E_TRUNCATED,     "AMI_E_TRUNCATED",     "input truncated" },
    { AMI_E_TYPE,          "AMI_E_TYPE",          "field has the wrong type" },
    { AMI_E_LIMIT,         "AMI_E_LIMIT",         "length or count over its limit" },
    { AMI_E_TRAILING,      "AMI_E_TRAILING",      "trailing bytes after message" },
    { AMI_E_VERSION,       "AMI_E_VERSION",       "unsupported protocol version" },
    { AMI_E_MSGTYPE,       "AMI_E_MSGTYPE",       "unknown message type" },
    { AMI_E_ARITY,         "AMI_E_ARITY",         "wrong number of fields" },
    { AMI_E_RANGE,         "AMI_E_RANGE",         "value out of range" },
    { AMI_E_NOMEM,         "AMI_E_NOMEM",         "out of memory" },
    { AMI_E_BUFSIZE,       "AMI_E_BUFSIZE",       "message too large to encode" },
    { AMI_E_UNKNOWN_METER, "AMI_E_UNKNOWN_METER", "unknown meter" },
    { AMI_E_UNREACHABLE,   "AMI_E_UNREACHABLE",   "meter unreachable" },
    { AMI_E_NO_ROUTE,      "AMI_E_NO_ROUTE",      "no head end reaches the meter's aggregator" },
    { AMI_E_TIMEOUT,       "AMI_E_TIMEOUT",       "timed out" },
    { AMI_E_DENIED,        "AMI_E_DENIED",        "denied: role does not allow this action" },
    { AMI_E_RATE_LIMITED,  "AMI_E_RATE_LIMITED",  "refused by rate limit" },
    { AMI_E_BAD_REQUEST,   "AMI_E_BAD_REQUEST",   "bad request" },
    { AMI_E_BUSY,          "AMI_E_BUSY",          "service busy" },
    { AMI_E_BAD_SIGNATURE, "AMI_E_BAD_SIGNATURE", "signature does not verify" },
    { AMI_E_REPLAY,        "AMI_E_REPLAY",        "replayed counter" },
    { AMI_E_EXPIRED,       "AMI_E_EXPIRED",       "expired" },
    { AMI_E_WRONG_TARGET,  "AMI_E_WRONG_TARGET",  "addressed to another meter" },
    { AMI_E_DECRYPT,       "AMI_E_DECRYPT",       "ciphertext does not open" },
    { AMI_E_KEY,           "AMI_E_KEY",           "key missing or malformed" },
    { AMI_E_KEY_PERMS,     "AMI_E_KEY_PERMS",     "secret key file is readable by other users" },
    { AMI_E_STORAGE,       "AMI_E_STORAGE",       "storage error" },
    { AMI_E_MAP_FULL,      "AMI_E_MAP_FULL",      "database map full" },
    { AMI_E_NOTFOUND,      "AMI_E_NOTFOUND",      "not found" },
    { AMI_E_CONFIG,        "AMI_E_CONFIG",        "configuration error" },
    { AMI_E_IO,            "AMI_E_IO",            "I/O error" },
    { AMI_E_INTERNAL,      "AMI_E_INTERNAL",      "internal error" },
    { AMI_E_EXISTS,        "AMI_E_EXISTS",        "record already exists" },
};

static const ami_err_entry_t *
s_lookup (int code)
{
    for (size_t i = 0; i < sizeof s_errors / sizeof s_errors [0]; i++)
        if (s_errors [i].code == code)
            return &s_errors [i];
    return NULL;
}

const char *
ami_strerror (int code)
{
    const ami_err_entry_t *e = s_lookup (code);
    return e ? e->text : "unknown error";
}

const char *
ami_errname (int code)
{
    const ami_err_entry_t *e = s_lookup (code);
    return e ? e->name : "AMI_E_UNKNOWN";
}
