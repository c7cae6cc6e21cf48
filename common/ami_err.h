/*  ami_err.h - the one error-code space of ami-bus.

    Every libami function that can fail returns an ami_err_t: 0 (AMI_OK) on
    success, one of the codes below otherwise. The same numbers travel on the
    wire in ERROR messages (proto/PROTOCOL.md section "Error codes"), so a code
    means the same thing in a log line, in an amictl exit path and in a frame.
    Numbers are grouped by decade and never reused; new codes are appended.
*/
#ifndef AMI_ERR_H_INCLUDED
#define AMI_ERR_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    AMI_OK = 0,

    /* 1..19: decoding and encoding (the codec, ami_msg) */
    AMI_E_TRUNCATED     = 1,    /* input ends before the message does */
    AMI_E_TYPE          = 2,    /* a field has the wrong msgpack type */
    AMI_E_LIMIT         = 3,    /* a length or count exceeds its limit */
    AMI_E_TRAILING      = 4,    /* bytes follow the end of the message */
    AMI_E_VERSION       = 5,    /* protocol version is not one we speak */
    AMI_E_MSGTYPE       = 6,    /* unknown message type */
    AMI_E_ARITY         = 7,    /* an array has the wrong number of elements */
    AMI_E_RANGE         = 8,    /* a value is outside its allowed range/charset */
    AMI_E_NOMEM         = 9,    /* out of memory */
    AMI_E_BUFSIZE       = 10,   /* encode: output would exceed the frame limit */

    /* 20..39: outcome of an operator or meter request */
    AMI_E_UNKNOWN_METER = 20,   /* meter id not in the MDMS registry */
    AMI_E_UNREACHABLE   = 21,   /* meter did not answer (offline) */
    AMI_E_NO_ROUTE      = 22,   /* no head end reaches the meter's aggregator */
    AMI_E_TIMEOUT       = 23,   /* deadline passed before an answer */
    AMI_E_DENIED        = 24,   /* caller's role does not hold this action */
    AMI_E_RATE_LIMITED  = 25,   /* refused at once by a rate limit */
    AMI_E_BAD_REQUEST   = 26,   /* well-formed but meaningless request */
    AMI_E_BUSY          = 27,   /* service saturated; retry later */

    /* 40..59: security */
    AMI_E_BAD_SIGNATURE = 40,   /* signature or MAC does not verify */
    AMI_E_REPLAY        = 41,   /* counter not above the last one seen */
    AMI_E_EXPIRED       = 42,   /* command or reading outside its validity */
    AMI_E_WRONG_TARGET  = 43,   /* command addressed to another meter */
    AMI_E_DECRYPT       = 44,   /* ciphertext does not open */
    AMI_E_KEY           = 45,   /* key file missing, unreadable or malformed */
    AMI_E_KEY_PERMS     = 46,   /* secret key file readable by other users */

    /* 60..79: system */
    AMI_E_STORAGE       = 60,   /* database error (see log for LMDB's text) */
    AMI_E_MAP_FULL      = 61,   /* LMDB map is full: raise store map size */
    AMI_E_NOTFOUND      = 62,   /* no such record */
    AMI_E_CONFIG        = 63,   /* bad or missing configuration value */
    AMI_E_IO            = 64,   /* file or socket I/O failed */
    AMI_E_INTERNAL      = 65,   /* a bug: please report it */
    AMI_E_EXISTS        = 66    /* record already stored (not overwritten) */
} ami_err_t;

/*  Return a short, stable, human-readable description of an error code
    ("input truncated"). Never NULL; unknown codes give "unknown error". */
const char *
    ami_strerror (int code);

/*  Return the symbolic name of an error code ("AMI_E_TRUNCATED"), as used in
    logs and JSON output. Never NULL; unknown codes give "AMI_E_UNKNOWN". */
const char *
    ami_errname (int code);

#ifdef __cplusplus
}
#endif

#endif
