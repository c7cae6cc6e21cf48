/*  amictl_status.c - every page of the MDMS's API_STATUS; see
    amictl_status.h.

    Design: the same request/reply paging as amictl meters and
    ami_client_intervals (a cursor carried from page to page), with the
    cursor a row count. Duplicates are found by a linear scan: at most
    ~1 000 rows, ~0.5 M comparisons for a whole walk, nothing next to one
    CURVE round trip.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <czmq.h>

#include "ami_client.h"
#include "ami_err.h"
#include "ami_msg.h"
#include "amictl_status.h"

static bool
s_held (const amictl_status_t *status, const ami_service_row_t *row)
{
    for (size_t i = 0; i < status->count; i++)
        if (strcmp (status->rows [i].node_id, row->node_id) == 0
        &&  strcmp (status->rows [i].role, row->role) == 0)
            return true;
    return false;
}

int
amictl_status_fetch (ami_client_t *client, uint32_t timeout_ms, int64_t page_wait_ms,
                     amictl_status_t *status, ami_msg_t **reply)
{
    amictl_status_free (status);            //  a previous walk's rows
    memset (status, 0, sizeof *status);
    *reply = NULL;
    ami_api_req_t req = { 0 };
    while (true) {
        req.action = AMI_ACT_STATUS;
        req.from_ms = status->received;         //  rows to skip
        req.limit = AMI_MAX_API_SERVICES;
        req.timeout_ms = timeout_ms;
        int rc = ami_client_request (client, &req, zclock_mono () + page_wait_ms, reply);
        memcpy (status->last_corr, req.corr, AMI_REQUEST_ID_SIZE);
        if (status->pages == 0)
            memcpy (status->first_corr, req.corr, AMI_REQUEST_ID_SIZE);
        if (rc)
            return rc;
        if ((*reply)->type != AMI_MSG_API_STATUS) {
            snprintf (status->why, sizeof status->why, "unexpected %s",
                      ami_msg_type_name ((*reply)->type));
            return AMI_E_INTERNAL;
        }
        const ami_api_status_t *page = &(*reply)->api_status;
        status->pages++;
        if (status->received + page->count > AMICTL_STATUS_MAX_ROWS) {
            snprintf (status->why, sizeof status->why,
                      "the MDMS kept paging past %d rows", AMICTL_STATUS_MAX_ROWS);
            return AMI_E_LIMIT;
        }
        status->received += page->count;
        if (status->count + page->count > status->cap) {
            size_t cap = status->cap ? status->cap * 2 : AMI_MAX_API_SERVICES;
            while (cap < status->count + page->count)
                cap *= 2;
            ami_service_row_t *grown = realloc (status->rows, cap * sizeof *grown);
            if (!grown) {
                snprintf (status->why, sizeof status->why, "out of memory");
                return AMI_E_NOMEM;
            }
            status->rows = grown;
            status->cap = cap;
        }
        for (uint32_t i = 0; i < page->count; i++)
            if (!s_held (status, &page->services [i]))
                status->rows [status->count++] = page->services [i];
        //  A server that says "more" but sends nothing would loop forever.
        if (!page->more || page->count == 0)
            return AMI_OK;
    }
}

void
amictl_status_free (amictl_status_t *status)
{
    free (status->rows);
    status->rows = NULL;
    status->count = status->cap = 0;
}
