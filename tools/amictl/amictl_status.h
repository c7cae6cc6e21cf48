/*  amictl_status.h - every row of `amictl status`: the MDMS's API_STATUS
    is paged (PROTOCOL.md 4.11 action 4, 4.14) - at most
    AMI_MAX_API_SERVICES (64) rows a reply, `more` while rows follow - and
    a deployment has more services than that (the MDMS tracks up to 1024:
    head ends, aggregators, meter fleets). This walks every page and keeps
    the rows.

    Paging: each next page asks from_ms = the rows received so far (a row
    count, not a time), limit = AMI_MAX_API_SERVICES. The MDMS recomputes
    its order (mdms, broker, then by role and node id) per request, so a
    service heard or forgotten between two pages shifts the later rows by
    one: a row whose (role, node id) is already held is dropped, never
    shown twice. A service that appears during the walk at a position
    already passed is missed until the next `amictl status`.

    Defence against a misbehaving server: a page that says `more` but
    holds no row ends the walk (what was received is kept); more than
    AMICTL_STATUS_MAX_ROWS rows received in all (duplicates included)
    fails with AMI_E_LIMIT rather than asking forever.
*/
#ifndef AMICTL_STATUS_H_INCLUDED
#define AMICTL_STATUS_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "ami_client.h"
#include "ami_msg.h"

/*  Rows received in one walk at most, duplicates included: 8 x the
    MDMS's service table (AMI_MDMS_MAX_SERVICES, 1024) plus its own two
    rows, so no honest walk comes near it even with rows shifting; it
    bounds a server that keeps saying `more`, and amictl's memory (~3 KiB
    a row kept: 25 MiB at worst). */
#define AMICTL_STATUS_MAX_ROWS  8192

typedef struct {
    ami_service_row_t *rows;    /* heap, in the MDMS's order, no (role, node) twice */
    size_t count;
    size_t cap;
    uint8_t first_corr [AMI_REQUEST_ID_SIZE];   /* of the first page's request */
    uint8_t last_corr [AMI_REQUEST_ID_SIZE];    /* of the last request sent */
    size_t pages;               /* replies received */
    size_t received;            /* rows received, duplicates included */
    char why [256];             /* what went wrong on our side, "" if nothing */
} amictl_status_t;

/*  Fetch every page into *status, which must be zeroed or hold an
    earlier walk (its rows are freed first); free the rows with
    amictl_status_free, also after a failure. Each page waits at most
    page_wait_ms; timeout_ms goes into the requests. Returns AMI_OK, or a
    page's failure as ami_client_request returns it (*reply is then the
    ERROR, or NULL; status->last_corr names that request), AMI_E_INTERNAL
    for a reply of another type, AMI_E_LIMIT past AMICTL_STATUS_MAX_ROWS,
    AMI_E_NOMEM (status->why says which). */
int
    amictl_status_fetch (ami_client_t *client, uint32_t timeout_ms, int64_t page_wait_ms,
                         amictl_status_t *status, ami_msg_t **reply);

/*  Free the rows; status can be fetched into again. */
void
    amictl_status_free (amictl_status_t *status);

#endif
