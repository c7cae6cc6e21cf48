/*  ami-aggregator - the pole-top relay between meter fleets and head ends.
    A thin main around ami_aggregator_actor; see ami_aggregator.h. */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ami_aggregator.h"
#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_msg.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "aggregator/endpoint", "aggregator/headends/*", "aggregator/state", "aggregator/buffer-blocks",
    "aggregator/buffer-bytes", "aggregator/batch-blocks", "aggregator/batch-delay",
    "aggregator/ack-timeout", "aggregator/max-pending", "aggregator/max-fleets",
    "aggregator/max-meters", NULL
};

static const ami_service_info_t s_info = {
    .program = "ami-aggregator",
    .role = "aggregator",
    .summary = "Pole-top aggregator: relays signed reads between meter fleets and every head end,\n"
               "and stores and forwards the fleets' interval data to the head ends.",
    .known = s_known,
    .config_help =
        "  aggregator/endpoint   fleet-facing ROUTER bind, e.g. tcp://127.0.0.1:7301 (required)\n"
        "  aggregator/headends/NAME/endpoint   a head end's aggregator-facing endpoint\n"
        "  aggregator/headends/NAME/cert       that head end's public certificate\n"
        "                        (one NAME section per head end, at least one)\n"
        "  aggregator/state      directory of the custody store (LMDB): interval\n"
        "                        blocks held until the MDMS acknowledges them (required)\n"
        "  aggregator/buffer-blocks  interval blocks held in custody at most [200000]\n"
        "  aggregator/buffer-bytes   ...and their bytes at most, K/M/G suffix [256M]\n"
        "  aggregator/batch-blocks   blocks per uplink BATCH, 1..1024 [1024]\n"
        "  aggregator/batch-delay    longest wait of a partial BATCH [20ms]\n"
        "  aggregator/ack-timeout    resend an unacknowledged BATCH through another\n"
        "                        head end after this long [10s]\n"
        "  aggregator/max-pending    reads in flight at most; more are answered\n"
        "                        BUSY at once [65536]\n"
        "  aggregator/max-fleets     fleet connections at most; a further fleet is\n"
        "                        refused (fleets_refused) [1024]\n"
        "  aggregator/max-meters     meters routed at most; further HELLO ids are\n"
        "                        ignored (routes_refused_full) [1000000]\n",
    .server = true
};

/*  A duration in [min_ms, max_ms] (ami_config_duration_ms). */
static int
s_duration (ami_config_t *config, const char *key, int64_t default_ms, int64_t min_ms,
            int64_t max_ms, int *out)
{
    int64_t value = 0;
    if (ami_config_duration_ms (config, key, default_ms, &value) != AMI_OK)
        return AMI_E_CONFIG;
    if (value < min_ms || value > max_ms) {
        ami_log_error ("%s: %s must be between %" PRId64 " ms and %" PRId64 " ms",
                       ami_config_origin (config), key, min_ms, max_ms);
        return AMI_E_CONFIG;
    }
    *out = (int) value;
    return AMI_OK;
}

/*  One head end read from the configuration, with storage for its key. */
typedef struct {
    char key [AMI_CERT_KEY_TXT_LEN + 1];
} headend_key_t;

int
main (int argc, char **argv)
{
    int rc = 0;
    ami_service_t *svc = ami_service_start (&s_info, argc, argv, &rc);
    if (!svc)
        return rc;
    ami_config_t *config = ami_service_config (svc);
    const char *origin = ami_config_origin (config);
    ami_aggregator_config_t agg;
    memset (&agg, 0, sizeof agg);
    ami_aggregator_headend_t *headends = NULL;
    headend_key_t *keys = NULL;
    size_t count = 0;
    rc = 1;

    ami_config_str (config, "aggregator/endpoint", NULL, &agg.endpoint);
    if (!agg.endpoint || !*agg.endpoint) {
        ami_log_error ("%s: aggregator/endpoint is required (fleet-facing bind)", origin);
        goto done;
    }
    zconfig_t *section = zconfig_locate (ami_config_zconfig (config), "aggregator/headends");
    for (zconfig_t *h = section ? zconfig_child (section) : NULL; h; h = zconfig_next (h))
        count++;
    if (count == 0) {
        ami_log_error ("%s: at least one head end is required "
                       "(aggregator/headends/NAME/endpoint and .../cert)", origin);
        goto done;
    }
    headends = (ami_aggregator_headend_t *) calloc (count, sizeof *headends);
    keys = (headend_key_t *) calloc (count, sizeof *keys);
    assert (headends && keys);
    size_t i = 0;
    for (zconfig_t *h = zconfig_child (section); h; h = zconfig_next (h), i++) {
        const char *name = zconfig_name (h);
        const char *endpoint = zconfig_get (h, "endpoint", NULL);
        const char *cert = zconfig_get (h, "cert", NULL);
        if (!endpoint || !*endpoint || !cert || !*cert) {
            ami_log_error ("%s: aggregator/headends/%s needs both endpoint and cert "
                           "(the head end's public certificate)", origin, name);
            goto done;
        }
        if (ami_auth_server_key_from_file (cert, keys [i].key) != AMI_OK) {
            ami_log_error ("%s: aggregator/headends/%s/cert: cannot load %s", origin, name, cert);
            goto done;
        }
        headends [i].name = name;
        headends [i].endpoint = endpoint;
        headends [i].server_key = keys [i].key;
    }
    ami_config_str (config, "aggregator/state", NULL, &agg.state);
    if (!agg.state || !*agg.state) {
        ami_log_error ("%s: aggregator/state is required (directory of the custody store)",
                       origin);
        goto done;
    }
    agg.node_id = ami_service_node_id (svc);
    agg.cert = ami_service_cert (svc);
    agg.headends = headends;
    agg.headend_count = count;
    agg.heartbeat_ms = (int) ami_service_heartbeat_ms (svc);
    /* interval data; bounds: a buffer of fewer blocks than one full BATCH
       could never take one; 10 minutes of ack timeout is far past any
       commit, and batch-delay past 10 s would only hide data */
    int64_t buffer_blocks = 0, batch_blocks = 0, max_pending = 0, max_fleets = 0, max_meters = 0;
    if (ami_config_int (config, "aggregator/buffer-blocks", AMI_AGGREGATOR_BUFFER_BLOCKS,
                        AMI_MAX_BATCH_BLOCKS, 1000000000, &buffer_blocks)
    ||  ami_config_size (config, "aggregator/buffer-bytes", AMI_AGGREGATOR_BUFFER_BYTES, &agg.buffer_bytes)
    ||  ami_config_int (config, "aggregator/batch-blocks", AMI_AGGREGATOR_BATCH_BLOCKS,
                        1, AMI_MAX_BATCH_BLOCKS, &batch_blocks)
    ||  s_duration (config, "aggregator/batch-delay", AMI_AGGREGATOR_BATCH_DELAY_MS,
                    1, 10000, &agg.batch_delay_ms)
    ||  s_duration (config, "aggregator/ack-timeout", AMI_BATCH_ACK_TIMEOUT_MS,
                    100, 600000, &agg.ack_timeout_ms)
    /* 1..10 000 000: ~100 bytes an entry, so the top is ~1 GiB, more than
       any pole-top node has; 1 lets one read through at a time */
    ||  ami_config_int (config, "aggregator/max-pending", AMI_AGGREGATOR_MAX_PENDING,
                        1, 10000000, &max_pending)
    /* fleets: 1..65 536, < 1 KiB an entry (< 64 MiB at the top), far
       more connections than one pole-top node serves; meters: 1..10 000 000,
       ~100 bytes a route (~1 GiB at the top) */
    ||  ami_config_int (config, "aggregator/max-fleets", AMI_AGGREGATOR_MAX_FLEETS,
                        1, 65536, &max_fleets)
    ||  ami_config_int (config, "aggregator/max-meters", AMI_AGGREGATOR_MAX_METERS,
                        1, 10000000, &max_meters))
        goto done;
    agg.max_pending = (size_t) max_pending;
    agg.max_fleets = (size_t) max_fleets;
    agg.max_meters = (size_t) max_meters;
    agg.buffer_blocks = (size_t) buffer_blocks;
    agg.batch_blocks = (uint32_t) batch_blocks;

    zactor_t *actor = ami_aggregator_new (&agg);
    if (actor) {
        rc = ami_service_run (svc, actor);
        zactor_destroy (&actor);
    }
done:
    free (headends);
    free (keys);
    ami_service_destroy (&svc);
    return rc;
}
