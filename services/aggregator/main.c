/*  ami-aggregator - the pole-top relay between meter fleets and head ends.
    A thin main around ami_aggregator_actor; see ami_aggregator.h. */
#include <string.h>

#include "ami_aggregator.h"
#include "ami_auth.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "aggregator/endpoint", "aggregator/headends/*", NULL
};

static const ami_service_info_t s_info = {
    .program = "ami-aggregator",
    .role = "aggregator",
    .summary = "Pole-top aggregator: relays signed reads between meter fleets and every head end.",
    .known = s_known,
    .config_help =
        "  aggregator/endpoint   fleet-facing ROUTER bind, e.g. tcp://127.0.0.1:7301 (required)\n"
        "  aggregator/headends/NAME/endpoint   a head end's aggregator-facing endpoint\n"
        "  aggregator/headends/NAME/cert       that head end's public certificate\n"
        "                        (one NAME section per head end, at least one)\n",
    .server = true
};

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
    agg.node_id = ami_service_node_id (svc);
    agg.cert = ami_service_cert (svc);
    agg.headends = headends;
    agg.headend_count = count;
    agg.heartbeat_ms = (int) ami_service_heartbeat_ms (svc);

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
