/*  ami-meter - a fleet of simulated meters behind one aggregator link.
    A thin main around ami_meter_actor; see ami_meter.h. */
#include <sodium.h>
#include <string.h>

#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_meter.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "meter/aggregator", "meter/aggregator-cert", "meter/first", "meter/count",
    "meter/seed", "meter/mdms-pub", "meter/state", NULL
};

static const ami_service_info_t s_info = {
    .program = "ami-meter",
    .role = "meter",
    .summary = "A fleet of simulated AMI meters sharing one CurveZMQ link to their aggregator.",
    .known = s_known,
    .config_help =
        "  meter/aggregator      aggregator endpoint to connect to (required)\n"
        "  meter/aggregator-cert public certificate of the aggregator (required)\n"
        "  meter/first           first meter number [1] (meter ids MTR-000001...)\n"
        "  meter/count           meters in this fleet [100]\n"
        "  meter/seed            fleet secret (PATH, secret in PATH_secret, mode 0600; required)\n"
        "  meter/mdms-pub        directory holding mdms-sign.cert and mdms-box.cert (required)\n"
        "  meter/state           directory of the persistent command counters (required)\n",
    .server = false
};

/*  A required string key; logs and returns NULL when it is not set. */
static const char *
s_required (ami_config_t *config, const char *key, const char *what)
{
    const char *value = NULL;
    ami_config_str (config, key, NULL, &value);
    if (!value || !*value)
        ami_log_error ("%s: %s is required (%s)", ami_config_origin (config), key, what);
    return value && *value ? value : NULL;
}

int
main (int argc, char **argv)
{
    int rc = 0;
    ami_service_t *svc = ami_service_start (&s_info, argc, argv, &rc);
    if (!svc)
        return rc;
    ami_config_t *config = ami_service_config (svc);
    ami_meter_config_t fleet;
    memset (&fleet, 0, sizeof fleet);
    char aggregator_key [AMI_CERT_KEY_TXT_LEN + 1] = "";
    int64_t first = 0, count = 0;
    rc = 1;

    fleet.aggregator = s_required (config, "meter/aggregator", "aggregator endpoint");
    const char *seed_path = s_required (config, "meter/seed", "fleet secret made by ami-keygen");
    const char *mdms_dir = s_required (config, "meter/mdms-pub",
                                       "directory of mdms-sign.cert and mdms-box.cert");
    fleet.state = s_required (config, "meter/state", "directory of the command counters");
    if (!fleet.aggregator || !seed_path || !mdms_dir || !fleet.state)
        goto done;
    if (ami_config_int (config, "meter/first", 1, 1, UINT32_MAX, &first)
    ||  ami_config_int (config, "meter/count", AMI_METER_DEFAULT_COUNT, 1, AMI_METER_MAX_COUNT, &count))
        goto done;
    if (first - 1 + count > (int64_t) UINT32_MAX) {
        ami_log_error ("%s: meter/first + meter/count goes past meter number %u",
                       ami_config_origin (config), UINT32_MAX);
        goto done;
    }
    if (ami_service_peer_key (svc, "meter/aggregator-cert", aggregator_key) != AMI_OK)
        goto done;
    if (ami_e2e_kdf_load (seed_path, fleet.seed) != AMI_OK) {
        ami_log_error ("meter/seed: cannot load the fleet secret %s (secret file %s_secret)",
                       seed_path, seed_path);
        goto done;
    }
    if (ami_e2e_mdms_load (&fleet.mdms, mdms_dir, false) != AMI_OK) {
        ami_log_error ("meter/mdms-pub: cannot load the MDMS public keys from %s "
                       "(needs mdms-sign.cert and mdms-box.cert)", mdms_dir);
        goto done;
    }
    fleet.node_id = ami_service_node_id (svc);
    fleet.cert = ami_service_cert (svc);
    fleet.aggregator_key = aggregator_key;
    fleet.first = (uint32_t) first;
    fleet.count = (uint32_t) count;
    fleet.heartbeat_ms = (int) ami_service_heartbeat_ms (svc);

    zactor_t *actor = ami_meter_new (&fleet);
    sodium_memzero (fleet.seed, sizeof fleet.seed);     /* the actor has its copy */
    if (actor) {
        rc = ami_service_run (svc, actor);
        zactor_destroy (&actor);
    }
done:
    sodium_memzero (fleet.seed, sizeof fleet.seed);
    ami_service_destroy (&svc);
    return rc;
}
