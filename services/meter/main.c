/*  ami-meter - a fleet of simulated meters behind one aggregator link.
    A thin main around ami_meter_actor; see ami_meter.h.

    Signals: SIGINT/SIGTERM stop the process (CZMQ's handler, as in every
    service); SIGUSR1 stops load-profile production (the actor's
    PROFILE-STOP: what was made is still delivered), so a load test can
    stop a fleet and then account for what it produced. SIGHUP re-reads
    the MDMS signing keys in meter/mdms-pub now (the actor also notices a
    change within a second on its own; ami_meter_keys.h). SIGUSR1 and
    SIGHUP are blocked in every thread from the start and read from a
    signalfd in the run loop, so they never interrupt anything and are
    never lost. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "ami_e2e.h"
#include "ami_err.h"
#include "ami_log.h"
#include "ami_meter.h"
#include "ami_service.h"

static const char *const s_known [] = {
    "meter/aggregator", "meter/aggregator-cert", "meter/first", "meter/count",
    "meter/seed", "meter/mdms-pub", "meter/state", "meter/max-counter-jump",
    "meter/refusals", "meter/refusals-burst",
    "meter/profile/enabled", "meter/profile/interval", "meter/profile/block",
    "meter/profile/time-scale", "meter/profile/start", "meter/profile/limit",
    "meter/profile/retain", NULL
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
        "  meter/mdms-pub        directory holding mdms-sign.cert and mdms-box.cert (required);\n"
        "                        old signing keys in their rotation window beside them\n"
        "                        (mdms-sign.old-*.cert) are accepted too; re-read on change\n"
        "                        and on SIGHUP\n"
        "  meter/state           directory of the persistent command counters (required)\n"
        "  meter/max-counter-jump  largest step of a command counter above a meter's last\n"
        "                        accepted one; larger: refused (AMI_E_RANGE) [1000000000]\n"
        "  meter/refusals        signed refusals of unverified or stale commands per second;\n"
        "                        beyond it they are dropped unanswered (SEC-AVAIL-3) [20/s]\n"
        "  meter/refusals-burst  such refusals answered at once [50]\n"
        "  meter/profile/enabled     produce load-profile interval data [true]\n"
        "  meter/profile/interval    interval length, must divide a day [15m]\n"
        "  meter/profile/block       intervals per block pushed by each meter, 1..96 [4]\n"
        "  meter/profile/time-scale  simulated seconds per wall second; 0 = flood [1]\n"
        "  meter/profile/start       Unix seconds of the first interval's start; 0 = now [0]\n"
        "  meter/profile/limit       intervals per meter, then stop; 0 = no limit [0]\n"
        "  meter/profile/retain      profile time kept to send intervals again on a recover\n"
        "                            command (SEC-INT-5), whole seconds, at most 8784h [744h]\n"
        "  (SIGUSR1 stops load-profile production; what was made is still delivered;\n"
        "   SIGHUP re-reads the MDMS signing keys)\n",
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

/*  meter/profile: the load-profile settings (ami_meter.h). */
static int
s_profile_config (ami_config_t *config, ami_meter_profile_config_t *profile)
{
    int64_t interval_ms = 0, block = 0, scale = 0, start = 0, limit = 0, retain_ms = 0;
    if (ami_config_bool (config, "meter/profile/enabled", true, &profile->enabled)
    ||  ami_config_duration_ms (config, "meter/profile/interval",
                                AMI_METER_PROFILE_INTERVAL_S * 1000LL, &interval_ms)
    ||  ami_config_int (config, "meter/profile/block", AMI_METER_PROFILE_BLOCK,
                        1, AMI_MAX_PROFILE_RECORDS, &block)
    ||  ami_config_int (config, "meter/profile/time-scale", 1, 0, AMI_METER_MAX_TIME_SCALE, &scale)
    ||  ami_config_int (config, "meter/profile/start", 0, 0, UINT32_MAX, &start)
    ||  ami_config_int (config, "meter/profile/limit", 0, 0, UINT32_MAX, &limit)
    ||  ami_config_duration_ms (config, "meter/profile/retain",
                                AMI_METER_PROFILE_RETAIN_S * 1000LL, &retain_ms))
        return AMI_E_CONFIG;
    if (retain_ms < 1000 || retain_ms % 1000 || retain_ms > AMI_METER_PROFILE_RETAIN_MAX_S * 1000LL) {
        ami_log_error ("%s: meter/profile/retain must be whole seconds, 1s .. %dh (e.g. 744h)",
                       ami_config_origin (config), AMI_METER_PROFILE_RETAIN_MAX_S / 3600);
        return AMI_E_CONFIG;
    }
    profile->retain_s = retain_ms / 1000;
    if (interval_ms < 1000 || interval_ms % 1000 || 86400000 % interval_ms) {
        ami_log_error ("%s: meter/profile/interval must be whole seconds that divide a day "
                       "(e.g. 5m, 15m, 30m, 1h)", ami_config_origin (config));
        return AMI_E_CONFIG;
    }
    profile->interval_s = (uint32_t) (interval_ms / 1000);
    if (start % profile->interval_s) {
        ami_log_error ("%s: meter/profile/start %" PRId64 " is not on an interval boundary "
                       "(a multiple of %u s)", ami_config_origin (config), start,
                       profile->interval_s);
        return AMI_E_CONFIG;
    }
    profile->block = (uint32_t) block;
    profile->time_scale = (uint32_t) scale;
    profile->start_s = start;
    profile->limit = (uint64_t) limit;
    return AMI_OK;
}

/*  ami_service_run, plus SIGUSR1 -> "PROFILE-STOP" and SIGHUP ->
    "RELOAD-KEYS" to the actor. */
static int
s_run (zactor_t *actor, int sigfd)
{
    ami_log_info ("ready");
    zmq_pollitem_t items [] = {
        { zsock_resolve (actor), 0, ZMQ_POLLIN, 0 },
        { NULL, sigfd, ZMQ_POLLIN, 0 }
    };
    while (true) {
        /* wake up once a second to notice a SIGINT/SIGTERM that arrived
           between polls; CZMQ's handler sets zsys_interrupted */
        int rc = zmq_poll (items, 2, 1000);
        if (zsys_interrupted) {
            ami_log_info ("stopping on signal");
            return 0;
        }
        if (rc == -1 && errno != EINTR) {
            ami_log_error ("poll failed: %s", zmq_strerror (errno));
            return 1;
        }
        if (rc > 0 && (items [0].revents & ZMQ_POLLIN)) {
            ami_log_error ("actor stopped on its own; exiting");
            return 1;
        }
        if (rc > 0 && (items [1].revents & ZMQ_POLLIN)) {
            struct signalfd_siginfo info;
            bool usr1 = false, hup = false;
            while (read (sigfd, &info, sizeof info) == (ssize_t) sizeof info) {
                /* several of one signal are one action */
                usr1 = usr1 || info.ssi_signo == SIGUSR1;
                hup = hup || info.ssi_signo == SIGHUP;
            }
            if (usr1) {
                ami_log_info ("SIGUSR1: stopping load-profile production");
                zstr_send (actor, "PROFILE-STOP");
            }
            if (hup) {
                zstr_send (actor, "RELOAD-KEYS");
                /* the actor answers at once; its reply must not be taken
                   for "the actor stopped" by the poll above */
                char *count = zstr_recv (actor);
                ami_log_info ("SIGHUP: MDMS signing keys re-read: %s accepted",
                              count ? count : "?");
                zstr_free (&count);
            }
        }
    }
}

int
main (int argc, char **argv)
{
    /* before any thread exists, so every thread inherits the mask */
    sigset_t usr1;      /* SIGUSR1 and SIGHUP */
    sigemptyset (&usr1);
    sigaddset (&usr1, SIGUSR1);
    sigaddset (&usr1, SIGHUP);
    pthread_sigmask (SIG_BLOCK, &usr1, NULL);
    int rc = 0;
    ami_service_t *svc = ami_service_start (&s_info, argc, argv, &rc);
    if (!svc)
        return rc;
    ami_config_t *config = ami_service_config (svc);
    ami_meter_config_t fleet;
    memset (&fleet, 0, sizeof fleet);
    char aggregator_key [AMI_CERT_KEY_TXT_LEN + 1] = "";
    int64_t first = 0, count = 0, max_jump = 0;
    uint32_t refusal_rate = 0, refusal_burst = 0;
    rc = 1;

    fleet.aggregator = s_required (config, "meter/aggregator", "aggregator endpoint");
    const char *seed_path = s_required (config, "meter/seed", "fleet secret made by ami-keygen");
    const char *mdms_dir = s_required (config, "meter/mdms-pub",
                                       "directory of mdms-sign.cert and mdms-box.cert");
    fleet.state = s_required (config, "meter/state", "directory of the command counters");
    if (!fleet.aggregator || !seed_path || !mdms_dir || !fleet.state)
        goto done;
    if (ami_config_int (config, "meter/first", 1, 1, UINT32_MAX, &first)
    ||  ami_config_int (config, "meter/count", AMI_METER_DEFAULT_COUNT, 1, AMI_METER_MAX_COUNT, &count)
    ||  ami_config_int (config, "meter/max-counter-jump", (int64_t) AMI_METER_MAX_COUNTER_JUMP,
                        1, INT64_MAX, &max_jump))
        goto done;
    if (first - 1 + count > (int64_t) UINT32_MAX) {
        ami_log_error ("%s: meter/first + meter/count goes past meter number %u",
                       ami_config_origin (config), UINT32_MAX);
        goto done;
    }
    if (ami_service_peer_key (svc, "meter/aggregator-cert", aggregator_key) != AMI_OK
    ||  s_profile_config (config, &fleet.profile) != AMI_OK
    ||  ami_config_rate (config, "meter/refusals", AMI_METER_REFUSAL_RATE, 1,
                         AMI_METER_REFUSAL_MAX, &refusal_rate)
    ||  ami_config_rate (config, "meter/refusals-burst", AMI_METER_REFUSAL_BURST, 1,
                         AMI_METER_REFUSAL_MAX, &refusal_burst))
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
    fleet.mdms_pub = mdms_dir;
    fleet.refusal_rate = refusal_rate;
    fleet.refusal_burst = refusal_burst;
    fleet.first = (uint32_t) first;
    fleet.count = (uint32_t) count;
    fleet.max_counter_jump = (uint64_t) max_jump;
    fleet.heartbeat_ms = (int) ami_service_heartbeat_ms (svc);

    int sigfd = signalfd (-1, &usr1, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd == -1) {
        ami_log_error ("cannot create a signalfd for SIGUSR1: %s", strerror (errno));
        goto done;
    }
    zactor_t *actor = ami_meter_new (&fleet);
    sodium_memzero (fleet.seed, sizeof fleet.seed);     /* the actor has its copy */
    if (actor) {
        rc = s_run (actor, sigfd);
        zactor_destroy (&actor);
    }
    close (sigfd);
done:
    sodium_memzero (fleet.seed, sizeof fleet.seed);
    ami_service_destroy (&svc);
    return rc;
}
