/*  ami-mdms - the system of record: operator API, on-demand reads through
    the broker, readings in LMDB, health of every service, event feed.
    A thin main around ami_mdms_actor; see ami_mdms.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_mdms.h"
#include "ami_mdms_ingest.h"
#include "ami_mdms_rate.h"
#include "ami_service.h"
#include "ami_store.h"

static const char *const s_known [] = {
    "mdms/api", "mdms/ingest", "mdms/events", "mdms/broker", "mdms/broker-cert",
    "mdms/db", "mdms/map-size", "mdms/keys", "mdms/registry", "mdms/read-timeout",
    "mdms/retries", "mdms/data-key", "mdms/rate/operator", "mdms/rate/operator-burst",
    "mdms/rate/meter", "mdms/rate/meter-burst", "mdms/interval", "mdms/key-cache",
    "mdms/audit-anchor", "mdms/max-pending", "mdms/ingest-queue", NULL
};

static const ami_service_info_t s_info = {
    .program = "ami-mdms",
    .role = "mdms",
    .summary = "MDMS: meter registry, on-demand reads (MDP client), readings in LMDB, operator API\n"
               "(role-limited, rate-limited, every request in a hash-chained audit log).",
    .known = s_known,
    .config_help =
        "  mdms/api              operator API ROUTER bind [tcp://127.0.0.1:7100]\n"
        "  mdms/ingest           head-end uplink ROUTER bind [tcp://127.0.0.1:7101]\n"
        "  mdms/events           event feed bind, for role operator and monitor keys only\n"
        "                        [tcp://127.0.0.1:7102]\n"
        "  mdms/broker           broker endpoint [tcp://127.0.0.1:7000]\n"
        "  mdms/broker-cert      public certificate of the broker (required)\n"
        "  mdms/db               LMDB directory (required)\n"
        "  mdms/map-size         LMDB map size, bytes or with K/M/G/T suffix [1G]\n"
        "  mdms/keys             directory of mdms-sign.cert(_secret), mdms-box.cert(_secret) (required)\n"
        "  mdms/registry         meters.tsv, imported at start (required)\n"
        "  mdms/read-timeout     default on-demand read deadline [3s]\n"
        "  mdms/retries          resends per read after a try times out [3]\n"
        "  mdms/data-key         MDMS data key file (kdf, from ami-keygen: app/mdms-data.cert;\n"
        "                        its _secret must be mode 0600), kept outside mdms/db: it\n"
        "                        keys the audit log chain and encrypts customer data (required)\n"
        "  mdms/rate/operator    on-demand reads per second per operator, 0 = unlimited [10/s]\n"
        "  mdms/rate/operator-burst  reads an operator may send at once [20]\n"
        "  mdms/rate/meter       on-demand reads per second per meter, 0 = unlimited [2/s]\n"
        "  mdms/rate/meter-burst reads of one meter at once [4]\n"
        "  mdms/interval         interval-data period; must divide a day and match the\n"
        "                        meters' meter/profile/interval [15m]\n"
        "  mdms/key-cache        meter profile keys kept in memory (~96 bytes each),\n"
        "                        0 = the registry size [0]\n"
        "  mdms/audit-anchor     file recording the audit log's last seq and hash (MACed),\n"
        "                        outside mdms/db: a cut tail of the log shows against it\n"
        "                        [<mdms/db>.audit-anchor]\n"
        "  mdms/max-pending      on-demand reads in flight at most; more are refused\n"
        "                        AMI_E_BUSY (counted reads_busy), 1..1000000 [10000]\n"
        "  mdms/ingest-queue     interval batches waiting for a commit at most (the credit\n"
        "                        the MDMS grants; each <= 1 MiB), 1..1024 [32]\n",
    .server = true
};

static int
s_required (ami_config_t *config, const char *key, const char **out)
{
    ami_config_str (config, key, NULL, out);
    if (!*out || !**out) {
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
    ami_mdms_config_t mdms = { 0 };
    ami_e2e_mdms_t keys;
    memset (&keys, 0, sizeof keys);
    char broker_key [AMI_CERT_KEY_TXT_LEN + 1] = "";
    char broker_id [AMI_MAX_ID + 1] = "broker";
    const char *broker_cert = NULL, *keys_dir = NULL;
    int64_t read_timeout = 0, retries = 0, interval_ms = 0, key_cache = 0;
    int64_t max_pending = 0, ingest_queue = 0;
    rc = 1;
    if (ami_config_str (config, "mdms/api", "tcp://127.0.0.1:7100", &mdms.api_endpoint)
    ||  ami_config_str (config, "mdms/ingest", "tcp://127.0.0.1:7101", &mdms.ingest_endpoint)
    ||  ami_config_str (config, "mdms/events", "tcp://127.0.0.1:7102", &mdms.events_endpoint)
    ||  ami_config_str (config, "mdms/broker", "tcp://127.0.0.1:7000", &mdms.broker_endpoint)
    ||  s_required (config, "mdms/broker-cert", &broker_cert)
    ||  s_required (config, "mdms/db", &mdms.db_dir)
    ||  ami_config_size (config, "mdms/map-size", AMI_STORE_DEFAULT_MAP_SIZE, &mdms.map_size)
    ||  s_required (config, "mdms/keys", &keys_dir)
    ||  s_required (config, "mdms/registry", &mdms.registry_path)
    ||  ami_config_duration_ms (config, "mdms/read-timeout", AMI_MDMS_READ_TIMEOUT_MS,
                                &read_timeout)
    ||  ami_config_int (config, "mdms/retries", AMI_MDMS_RETRIES, 0, 100, &retries)
    ||  s_required (config, "mdms/data-key", &mdms.data_key_path)
    ||  ami_config_rate (config, "mdms/rate/operator", AMI_MDMS_RATE_OPERATOR, 0,
                         AMI_MDMS_RATE_MAX, &mdms.rate_operator)
    ||  ami_config_rate (config, "mdms/rate/operator-burst", AMI_MDMS_RATE_OPERATOR_BURST, 0,
                         AMI_MDMS_RATE_MAX, &mdms.rate_operator_burst)
    ||  ami_config_rate (config, "mdms/rate/meter", AMI_MDMS_RATE_METER, 0,
                         AMI_MDMS_RATE_MAX, &mdms.rate_meter)
    ||  ami_config_rate (config, "mdms/rate/meter-burst", AMI_MDMS_RATE_METER_BURST, 0,
                         AMI_MDMS_RATE_MAX, &mdms.rate_meter_burst)
    ||  ami_config_duration_ms (config, "mdms/interval", AMI_MDMS_INTERVAL_S * 1000,
                                &interval_ms)
    ||  ami_config_int (config, "mdms/key-cache", 0, 0, AMI_MDMS_KEY_CACHE_MAX, &key_cache)
    ||  ami_config_str (config, "mdms/audit-anchor", NULL, &mdms.audit_anchor_path)
    ||  ami_config_int (config, "mdms/max-pending", AMI_MDMS_MAX_PENDING, 1,
                        AMI_MDMS_MAX_PENDING_MAX, &max_pending)
    ||  ami_config_int (config, "mdms/ingest-queue", AMI_MDMS_INGEST_QUEUE, 1,
                        AMI_MDMS_INGEST_QUEUE_MAX, &ingest_queue))
        goto done;
    if (interval_ms < 1000 || interval_ms % 1000 || interval_ms > 86400000
    ||  86400000 % interval_ms) {
        ami_log_error ("%s: mdms/interval must be whole seconds that divide a day (e.g. 15m, "
                       "5m, 1h)", ami_config_origin (config));
        goto done;
    }
    if (read_timeout < 1 || read_timeout > AMI_MDMS_MAX_READ_TIMEOUT_MS) {
        ami_log_error ("%s: mdms/read-timeout must be between 1ms and %ds",
                       ami_config_origin (config), AMI_MDMS_MAX_READ_TIMEOUT_MS / 1000);
        goto done;
    }
    //  The broker's certificate gives its key and the node id STATUS shows
    int err = 0;
    ami_cert_t *peer = ami_cert_load_public (broker_cert, &err);
    if (!peer)
        goto done;                      //  logged, naming the file
    snprintf (broker_key, sizeof broker_key, "%s", ami_cert_public_txt (peer));
    if (ami_id_valid (ami_cert_node_id (peer)))
        snprintf (broker_id, sizeof broker_id, "%s", ami_cert_node_id (peer));
    ami_cert_destroy (&peer);
    //  SEC-KEY-1: the secret halves are required and permission-checked
    if (ami_e2e_mdms_load (&keys, keys_dir, true)) {
        ami_log_error ("%s: mdms/keys: cannot load the MDMS application keys from %s",
                       ami_config_origin (config), keys_dir);
        goto done;
    }
    mdms.node_id = ami_service_node_id (svc);
    mdms.cert = ami_service_cert (svc);
    mdms.broker_key = broker_key;
    mdms.broker_id = broker_id;
    mdms.keys = &keys;
    mdms.read_timeout_ms = (int) read_timeout;
    mdms.retries = retries ? (int) retries : AMI_MDMS_NO_RETRIES;
    mdms.heartbeat_ms = (int) ami_service_heartbeat_ms (svc);
    mdms.interval_s = (uint32_t) (interval_ms / 1000);
    mdms.key_cache = (size_t) key_cache;
    mdms.max_pending = (size_t) max_pending;
    mdms.ingest_queue = (size_t) ingest_queue;

    zactor_t *actor = ami_mdms_new (&mdms);
    ami_e2e_mdms_wipe (&keys);          //  the actor keeps its own copy
    if (actor) {
        rc = ami_service_run (svc, actor);
        zactor_destroy (&actor);
    }
done:
    ami_e2e_mdms_wipe (&keys);
    ami_service_destroy (&svc);
    return rc;
}
