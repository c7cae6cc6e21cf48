/*  ami-headend - the head end between the aggregators, the broker and the
    MDMS ingest. A thin main around ami_headend_actor; see ami_headend.h. */
#include "ami_headend.h"
#include "ami_log.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "headend/endpoint", "headend/broker", "headend/broker-cert",
    "headend/broker-heartbeat", "headend/broker-liveness",
    "headend/mdms", "headend/mdms-cert", "headend/workers-per-aggregator",
    "headend/batches-per-aggregator", "headend/max-requests",
    "headend/max-aggregators",
    NULL
};

static const ami_service_info_t s_info = {
    .program = "ami-headend",
    .role = "headend",
    .summary = "Head end: offers each live aggregator to the MDMS as an MDP/0.1 "
               "service through the broker, relays reads, relays interval data "
               "and its acknowledgements, forwards health.",
    .known = s_known,
    .config_help =
        "  headend/endpoint        aggregator-facing ROUTER bind (required)\n"
        "  headend/broker          broker endpoint (required)\n"
        "  headend/broker-cert     broker's public certificate (required)\n"
        "  headend/broker-heartbeat  MDP heartbeat, must equal broker/heartbeat [1s]\n"
        "  headend/broker-liveness   MDP liveness, must equal broker/liveness [3]\n"
        "  headend/mdms            MDMS ingest endpoint (required)\n"
        "  headend/mdms-cert       MDMS's public certificate (required)\n"
        "  headend/workers-per-aggregator  MDP workers (concurrent reads) per\n"
        "                          aggregator, 1..64 [4]\n"
        "  headend/batches-per-aggregator  interval-data batches awaiting the\n"
        "                          MDMS's ack per aggregator; more are answered\n"
        "                          BUSY, 1..4096 [32]\n"
        "  headend/max-requests    reads in flight through this head end at\n"
        "                          most; more are answered BUSY at once [10000]\n"
        "  headend/max-aggregators live aggregators at most; a new one's HELLO\n"
        "                          over it is refused (aggregators_refused),\n"
        "                          1..100000 [1000]\n",
    .server = true
};

static int
s_required (ami_config_t *config, const char *key, const char **out)
{
    ami_config_str (config, key, NULL, out);
    if (!*out) {
        ami_log_error ("%s: %s is required", ami_config_origin (config), key);
        return AMI_E_CONFIG;
    }
    return AMI_OK;
}

int
main (int argc, char **argv)
{
    int rc = 0;
    ami_service_t *svc = ami_service_start (&s_info, argc, argv, &rc);
    if (!svc)
        return rc;
    ami_config_t *config = ami_service_config (svc);
    ami_headend_config_t headend = { 0 };
    char broker_key [AMI_CERT_KEY_TXT_LEN + 1];
    char mdms_key [AMI_CERT_KEY_TXT_LEN + 1];
    int64_t broker_heartbeat = 0, liveness = 0, workers = 0, batches = 0;
    int64_t max_requests = 0, max_aggregators = 0;
    if (s_required (config, "headend/endpoint", &headend.endpoint)
    ||  s_required (config, "headend/broker", &headend.broker)
    ||  s_required (config, "headend/mdms", &headend.mdms)
    ||  ami_service_peer_key (svc, "headend/broker-cert", broker_key)
    ||  ami_service_peer_key (svc, "headend/mdms-cert", mdms_key)
    ||  ami_config_duration_ms (config, "headend/broker-heartbeat",
                                AMI_HEADEND_BROKER_HEARTBEAT_MS, &broker_heartbeat)
    ||  ami_config_int (config, "headend/broker-liveness",
                        AMI_HEADEND_BROKER_LIVENESS, 1, 100, &liveness)
    ||  ami_config_int (config, "headend/workers-per-aggregator",
                        AMI_HEADEND_WORKERS, 1, AMI_HEADEND_MAX_WORKERS, &workers)
    //  4096: far above any credit (4); bounds one aggregator's share
    ||  ami_config_int (config, "headend/batches-per-aggregator",
                        AMI_HEADEND_BATCHES_PER_AGGREGATOR, 1, 4096, &batches)
    //  1..1000000: one honest read per worker is aggregators x K (4000 by
    //  default); a million entries (a few hundred MiB) is past any real
    //  head end
    ||  ami_config_int (config, "headend/max-requests",
                        AMI_HEADEND_MAX_REQUESTS, 1, 1000000, &max_requests)
    //  1..100000: each live aggregator costs K worker sockets (and TCP
    //  connections to the broker), so 100x the default is past what one
    //  head end process can hold; a larger value is a typo
    ||  ami_config_int (config, "headend/max-aggregators",
                        AMI_HEADEND_MAX_AGGREGATORS, 1, 100000, &max_aggregators)) {
        ami_service_destroy (&svc);
        return 1;
    }
    //  Durations are bounded so they fit the actor's int milliseconds
    int64_t heartbeat = ami_service_heartbeat_ms (svc);
    if (broker_heartbeat < 1 || broker_heartbeat > 3600000
    ||  heartbeat < 1 || heartbeat > 3600000) {
        ami_log_error ("%s: heartbeat and headend/broker-heartbeat must be "
                       "between 1 ms and 1 h", ami_config_origin (config));
        ami_service_destroy (&svc);
        return 1;
    }
    headend.node_id = ami_service_node_id (svc);
    headend.cert = ami_service_cert (svc);
    headend.broker_key = broker_key;
    headend.mdms_key = mdms_key;
    headend.heartbeat_ms = (int) heartbeat;
    headend.broker_heartbeat_ms = (int) broker_heartbeat;
    headend.broker_liveness = (int) liveness;
    headend.workers_per_aggregator = (int) workers;
    headend.batches_per_aggregator = (size_t) batches;
    headend.max_requests = (size_t) max_requests;
    headend.max_aggregators = (size_t) max_aggregators;
    zactor_t *actor = ami_headend_new (&headend);
    if (actor) {
        rc = ami_service_run (svc, actor);
        zactor_destroy (&actor);
    }
    else
        rc = 1;
    ami_service_destroy (&svc);
    return rc;
}
