/*  ami-broker - the Majordomo (MDP/0.1) broker in front of the head ends.
    A thin main around ami_broker_actor; see ami_broker.h. */
#include "ami_broker.h"
#include "ami_log.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "broker/endpoint", "broker/heartbeat", "broker/liveness", "broker/max-queue",
    "broker/max-queue-bytes", "broker/request-ttl", "broker/max-services",
    "broker/max-workers", NULL
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
        "  broker/max-queue      requests queued per service while no worker is free [1000]\n"
        "  broker/max-queue-bytes  bytes queued over all services at most, K/M/G\n"
        "                        suffix, 1M..64G [64M]\n"
        "  broker/request-ttl    longest wait of a queued request, then it is dropped\n"
        "                        (counted: expired) [10s]\n"
        "  broker/max-services   services known at most; a new name over it is\n"
        "                        refused (services_refused) [10000]\n"
        "  broker/max-workers    workers registered at most; a READY over it is\n"
        "                        refused (workers_refused) [10000]\n",
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
    if (ami_broker_config_read (config, &broker) != AMI_OK) {
        ami_service_destroy (&svc);     //  logged, naming the key
        return 1;
    }
    broker.server_cert = ami_service_cert (svc);
    broker.node_id = ami_service_node_id (svc);
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
