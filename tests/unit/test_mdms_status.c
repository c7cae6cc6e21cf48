/*  test_mdms_status.c - the MDMS's paged API_STATUS (issue 6, QUEUES.md
    gap 10): more services than one reply holds reach the operator, page
    by page, every row exactly once.

    A test-double head end on the ingest socket (mdms_harness) forwards
    HEALTH from FAKES made-up services - aggregators, head ends and meter
    fleets, each with a full HEALTH of AMI_MAX_STATS stats that name it -
    so the MDMS lists FAKES + 2 rows (itself, the broker; the test head
    end sends no HEALTH of its own). The operator client then pages
    through them: with the server's page (limit 0 = AMI_MAX_API_SERVICES),
    with small pages that end inside the last one and exactly at its end,
    with one row a page, past the end, and with a limit over the wire's.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_err.h"
#include "ami_mdms.h"
#include "ami_msg.h"
#include "ami_test.h"
#include "mdms_harness.h"

/*  Made-up services: more than two full pages of AMI_MAX_API_SERVICES
    (64), and well under the MDMS's table (AMI_MDMS_MAX_SERVICES, 1024). */
#define FAKES       150
#define ROWS        (FAKES + 2)
/*  Pages requested at most in one walk: a server that never ends a walk
    fails the test instead of looping. */
#define MAX_PAGES   (ROWS + 8)

/*  The roles a head end relays (SEC-INT-4: the MDMS takes a head end's
    own HEALTH only under its certificate's node id) */
static const char *s_roles [] = { "aggregator", "meter" };

/*  Fake service i: role and node id. */
static void
s_fake (int i, char role [AMI_MAX_ROLE + 1], char node [AMI_MAX_ID + 1])
{
    snprintf (role, AMI_MAX_ROLE + 1, "%s", s_roles [i % 2]);
    snprintf (node, AMI_MAX_ID + 1, "node-%04d", i);
}

/*  Forward one HEALTH of every fake service through the test head end:
    AMI_MAX_STATS stats, stat k of service i named s<k> with value
    i * 1000 + k, uptime i. */
static void
s_feed (zsock_t *he)
{
    ami_msg_t *m = ami_msg_new ();
    assert_non_null (m);
    static uint8_t buf [8192];          //  a full HEALTH is < 3 KiB
    for (int i = 0; i < FAKES; i++) {
        ami_msg_reset (m, AMI_MSG_HEALTH);
        s_fake (i, m->health.role, m->health.node_id);
        m->health.state = AMI_STATE_READY;
        m->health.uptime_ms = (uint64_t) i;
        m->health.stat_count = AMI_MAX_STATS;
        for (uint32_t k = 0; k < AMI_MAX_STATS; k++) {
            snprintf (m->health.stats [k].name, AMI_MAX_ID + 1, "s%u", k);
            m->health.stats [k].value = (uint64_t) i * 1000 + k;
        }
        size_t len = mh_encode (m, buf, sizeof buf);
        assert_int_equal (zsock_send (he, "b", buf, len), 0);
    }
    ami_msg_destroy (&m);
}

/*  Every row of a walk, in order. */
typedef struct {
    char role [AMI_MAX_ROLE + 1];
    char node [AMI_MAX_ID + 1];
    uint64_t uptime_ms;
    uint32_t stat_count;
    bool stats_ok;                  //  the fake's stats, all of them, intact
} row_t;

typedef struct {
    row_t rows [ROWS + 16];
    size_t count;
    int pages;
    uint32_t page_count [MAX_PAGES];    //  rows in each page
    bool page_more [MAX_PAGES];         //  and its `more`
} walk_t;

/*  Page through STATUS with limit (0 = the server's page), from_ms = the
    rows received so far, until `more` is false. */
static void
s_walk (mh_env_t *env, uint32_t limit, walk_t *walk)
{
    memset (walk, 0, sizeof *walk);
    while (true) {
        assert_true (walk->pages < MAX_PAGES);
        uint8_t corr [AMI_REQUEST_ID_SIZE];
        ami_msg_t *r = mh_call (env, env->client, corr, AMI_ACT_STATUS, "", walk->count, 0,
                                limit, 0);
        assert_int_equal (r->type, AMI_MSG_API_STATUS);
        assert_memory_equal (r->api_status.corr, corr, AMI_REQUEST_ID_SIZE);
        const ami_api_status_t *page = &r->api_status;
        walk->page_count [walk->pages] = page->count;
        walk->page_more [walk->pages] = page->more;
        walk->pages++;
        for (uint32_t i = 0; i < page->count; i++) {
            assert_true (walk->count < sizeof walk->rows / sizeof walk->rows [0]);
            const ami_service_row_t *s = &page->services [i];
            row_t *row = &walk->rows [walk->count++];
            snprintf (row->role, sizeof row->role, "%s", s->role);
            snprintf (row->node, sizeof row->node, "%s", s->node_id);
            row->uptime_ms = s->uptime_ms;
            row->stat_count = s->stat_count;
            int fake = -1;
            if (strncmp (s->node_id, "node-", 5) == 0)
                fake = atoi (s->node_id + 5);
            row->stats_ok = fake >= 0 && s->stat_count == AMI_MAX_STATS;
            for (uint32_t k = 0; row->stats_ok && k < s->stat_count; k++) {
                char name [AMI_MAX_ID + 1];
                snprintf (name, sizeof name, "s%u", k);
                row->stats_ok = streq (s->stats [k].name, name)
                             && s->stats [k].value == (uint64_t) fake * 1000 + k;
            }
        }
        if (!page->more)
            break;
        assert_true (page->count > 0);  //  `more` with an empty page would never end
    }
}

/*  The rows of a complete walk: the MDMS, the broker, then every fake
    exactly once, sorted by role then node id, each with its own stats. */
static void
s_check_rows (const walk_t *walk)
{
    assert_int_equal (walk->count, ROWS);
    assert_string_equal (walk->rows [0].role, "mdms");
    assert_string_equal (walk->rows [0].node, MDMS_ID);
    assert_string_equal (walk->rows [1].role, "broker");
    assert_string_equal (walk->rows [1].node, BROKER_ID);
    bool seen [FAKES] = { false };
    for (size_t i = 2; i < walk->count; i++) {
        const row_t *row = &walk->rows [i];
        assert_true (row->stats_ok);
        int fake = atoi (row->node + 5);
        assert_true (fake >= 0 && fake < FAKES);
        assert_false (seen [fake]);             //  exactly once
        seen [fake] = true;
        char role [AMI_MAX_ROLE + 1], node [AMI_MAX_ID + 1];
        s_fake (fake, role, node);
        assert_string_equal (row->role, role);
        assert_int_equal (row->uptime_ms, fake);
        if (i > 2) {                            //  role, then node id
            const row_t *prev = &walk->rows [i - 1];
            int order = strcmp (prev->role, row->role);
            assert_true (order < 0 || (order == 0 && strcmp (prev->node, row->node) < 0));
        }
    }
    for (int i = 0; i < FAKES; i++)
        assert_true (seen [i]);
}

/*  Pages of the walk: `full` rows each but the last, which holds the rest;
    `more` on every page but the last. */
static void
s_check_pages (const walk_t *walk, uint32_t full)
{
    int want = (ROWS + (int) full - 1) / (int) full;
    assert_int_equal (walk->pages, want);
    for (int p = 0; p < walk->pages; p++) {
        bool last = p == walk->pages - 1;
        assert_int_equal (walk->page_count [p], last ? ROWS - (uint32_t) p * full : full);
        assert_int_equal (walk->page_more [p], !last);
    }
}

/*  Start the bench and make the MDMS list every fake service: waits until
    row ROWS - 1 (the last) exists, so that no walk runs while rows come. */
static zsock_t *
s_start (mh_env_t *env)
{
    mh_env_start (env, false);
    zsock_t *he = mh_headend_connect (env);
    s_feed (he);
    int64_t deadline = zclock_mono () + WAIT_MS;
    bool all = false;
    while (!all && zclock_mono () < deadline) {
        uint8_t corr [AMI_REQUEST_ID_SIZE];
        ami_msg_t *r = mh_call (env, env->client, corr, AMI_ACT_STATUS, "", ROWS - 1, 0, 1, 0);
        assert_int_equal (r->type, AMI_MSG_API_STATUS);
        all = r->api_status.count == 1;
        if (!all)
            zclock_sleep (POLL_MS);
    }
    assert_true (all);
    return he;
}

/*  The server's page: limit 0 means AMI_MAX_API_SERVICES rows a page; so
    does a limit above it. Every row arrives exactly once, in order, with
    its full stats (a page of 64 rows of 64 stats fits in a frame); `more`
    is false on the last page only. */
static void
test_issue6_status_paged_default (void **state)
{
    (void) state;
    mh_env_t env;
    static walk_t walk;
    zsock_t *he = s_start (&env);
    s_walk (&env, 0, &walk);
    s_check_rows (&walk);
    s_check_pages (&walk, AMI_MAX_API_SERVICES);
    //  a limit over what a reply holds is the server's page
    s_walk (&env, 100000, &walk);
    s_check_rows (&walk);
    s_check_pages (&walk, AMI_MAX_API_SERVICES);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

/*  Small pages (the operator's `limit`): ending inside the last page (7),
    exactly at its end (8: 152 = 19 x 8, so no empty page follows), one row
    a page; and a request past the end gets no rows and no `more`. */
static void
test_issue6_status_paged_small (void **state)
{
    (void) state;
    mh_env_t env;
    static walk_t walk;
    zsock_t *he = s_start (&env);
    const uint32_t limits [] = { 7, 8, 1 };
    for (size_t i = 0; i < sizeof limits / sizeof limits [0]; i++) {
        s_walk (&env, limits [i], &walk);
        s_check_rows (&walk);
        s_check_pages (&walk, limits [i]);
    }
    //  the mdms row alone, then the broker row alone
    uint8_t corr [AMI_REQUEST_ID_SIZE];
    ami_msg_t *r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", 1, 0, 1, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    assert_int_equal (r->api_status.count, 1);
    assert_string_equal (r->api_status.services [0].role, "broker");
    assert_true (r->api_status.more);
    //  the last row, and past the end
    r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", ROWS - 1, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    assert_int_equal (r->api_status.count, 1);
    assert_false (r->api_status.more);
    r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", ROWS, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    assert_int_equal (r->api_status.count, 0);
    assert_false (r->api_status.more);
    r = mh_call (&env, env.client, corr, AMI_ACT_STATUS, "", UINT64_MAX, 0, 0, 0);
    assert_int_equal (r->type, AMI_MSG_API_STATUS);
    assert_int_equal (r->api_status.count, 0);
    assert_false (r->api_status.more);
    zsock_destroy (&he);
    mh_env_stop (&env);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_issue6_status_paged_default),
        cmocka_unit_test (test_issue6_status_paged_small),
    };
    return cmocka_run_group_tests_name ("mdms_status", tests, mh_group_setup, mh_group_teardown);
}
