/*  ami-broker - the Majordomo (MDP/0.1) broker in front of the head ends.
    A thin main around ami_broker_actor; see ami_broker.h. */
#include "ami_broker.h"
#include "ami_log.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "broker/endpoint", "broker/heartbeat", "broker/liveness", "broker/max-queue", NULL
};

static const ami_service_info_t s_info = {
    .program = "ami-broker",
    .role = "broker",
    .summary = "Majordomo (MDP/0.1, ZeroMQ RFC 7 + MMI RFC 8) broker between the MDMS and the head ends.",
    .known = s_known,
    .config_help =
        "  broker/endpoint       ROUTER bind for clients and workers [tcp://127.0.0.1:7000]\n"
        "  broker/heartbeat      MDP heartbeat interval [1s]\n"
        "  broker/liveness       heartbeats a worker may miss before it expires [3]\n"
        "  broker/max-queue      requests queued per service while no worker is free [1000]\n",
    .server = true
};

int
main (int argc, char **argv)
{
    int rc = 0;
    ami_service_t *svc = ami_service_start (&s_info, argc, argv, &rc);
    if (!svc)
        return rc;
    ami_config_t *config = ami_service_config (svc);
    ami_broker_config_t broker = { 0 };
    int64_t heartbeat = 0, liveness = 0, max_queue = 0;
    if (ami_config_str (config, "broker/endpoint", "tcp://127.0.0.1:7000", &broker.endpoint)
    ||  ami_config_duration_ms (config, "broker/heartbeat", AMI_BROKER_HEARTBEAT_MS, &heartbeat)
    ||  ami_config_int (config, "broker/liveness", AMI_BROKER_LIVENESS, 1, 100, &liveness)
    ||  ami_config_int (config, "broker/max-queue", AMI_BROKER_MAX_QUEUE, 1, 1000000, &max_queue)) {
        ami_service_destroy (&svc);
        return 1;
    }
    broker.server_cert = ami_service_cert (svc);
    broker.node_id = ami_service_node_id (svc);
    broker.heartbeat_ms = (int) heartbeat;
    broker.liveness = (int) liveness;
    broker.max_queue = (size_t) max_queue;
    zactor_t *actor = ami_broker_new (&broker);
    if (actor) {
        rc = ami_service_run (svc, actor);
        zactor_destroy (&actor);
    }
    else
        rc = 1;
    ami_service_destroy (&svc);
    return rc;
}
