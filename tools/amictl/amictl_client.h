/*  amictl_client.h - the old name of common/ami_client.h.

    amictl's MDMS client moved to common/ (ami_client.h) so that amictl and
    ami-load share one implementation; amictl calls ami_client_* directly.
    These aliases remain only because tests/unit/test_keygen.c includes
    amictl_client.c by path and calls amictl_client_*: remove this file
    and amictl_client.c once that test uses ami_client.h.
*/
#ifndef AMICTL_CLIENT_H_INCLUDED
#define AMICTL_CLIENT_H_INCLUDED

#include "ami_client.h"

typedef ami_client_t amictl_client_t;

static inline amictl_client_t *
amictl_client_new (const char *endpoint, ami_cert_t *cert, const char *server_key, int *err)
{
    return ami_client_new (endpoint, cert, server_key, err);
}

static inline void
amictl_client_destroy (amictl_client_t **self_p)
{
    ami_client_destroy (self_p);
}

static inline int
amictl_client_request (amictl_client_t *self, ami_api_req_t *req, int64_t deadline,
                       ami_msg_t **reply)
{
    return ami_client_request (self, req, deadline, reply);
}

static inline int
amictl_client_audit (amictl_client_t *self, uint64_t from_ms, uint32_t timeout_ms,
                     int64_t page_wait_ms, size_t want, ami_audit_row_t *rows,
                     size_t *count, size_t *total,
                     uint8_t first_corr [AMI_REQUEST_ID_SIZE], ami_msg_t **reply)
{
    return ami_client_audit (self, from_ms, timeout_ms, page_wait_ms, want, rows, count,
                             total, first_corr, reply);
}

static inline const char *
amictl_client_why (amictl_client_t *self)
{
    return ami_client_why (self);
}

#endif
