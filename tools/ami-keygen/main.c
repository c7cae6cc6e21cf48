/*  ami-keygen - provision the keys of an ami-bus deployment.
    The command line around keygen.c; the layout it writes is in keygen.h
    and docs/SERVICES.md "Keys". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ami_log.h"
#include "keygen.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
"usage: ami-keygen init DIR [--headends N] [--aggregators N] [--fleets N]\n"
"                           [--meters-per-fleet N] [--operators LIST] [--force]\n"
"       ami-keygen check DIR [-q]\n"
"       ami-keygen operator DIR ID ROLE [--force]\n"
"       ami-keygen rotate DIR ID [--window SECONDS] | rotate DIR ID --finish\n"
"       ami-keygen rotate DIR mdms-sign [--window SECONDS] | rotate DIR mdms-sign --finish\n"
"       ami-keygen prune DIR\n"
"       ami-keygen revoke DIR ID [--force]\n"
"       ami-keygen --help\n"
"\n"
"Provision the keys of an ami-bus deployment into DIR (never into the\n"
"repository: ami-bus has no default keys).\n"
"\n"
"  init      generate every key of the topology:\n"
"              DIR/nodes/<node>.cert(+_secret)   mdms, broker, headend-1..N,\n"
"                                                agg-1..N, fleet-1..N\n"
"              DIR/operators/<op>.cert(+_secret) role=operator, ami-role=ROLE\n"
"              DIR/allow/<server>/               each server's allow-list:\n"
"                 broker <- mdms, head ends; headend-N <- aggregators;\n"
"                 agg-N <- its fleets; mdms <- head ends, operators\n"
"              DIR/app/mdms-{sign,box}.cert(+_secret), DIR/app/mdms-pub/,\n"
"              DIR/app/mdms-data.cert(+_secret)  the MDMS data key (kdf): its\n"
"                 audit-chain key and the keys that encrypt customer records,\n"
"                 readings and interval data at rest derive from it; kept out\n"
"                 of the MDMS database (config mdms/data-key); without it the\n"
"                 stored data cannot be read: back it up, apart from the data\n"
"              DIR/app/fleet-N.cert(+_secret), DIR/app/meters.tsv\n"
"                 (meter_id TAB fleet_id TAB aggregator_id TAB sign_pk_hex\n"
"                  TAB customer_name TAB service_address TAB account;\n"
"                  the customers are synthetic, derived from the meter number;\n"
"                  mode 0600 like a secret: the MDMS refuses customer columns\n"
"                  in a file group or others can read)\n"
"              DIR/topology.cfg                  what was provisioned\n"
"            fleet i reports to aggregator ((i-1) mod A)+1 and carries meters\n"
"            (i-1)*M+1 .. i*M, named MTR-%%06u.\n"
"    --headends N           head ends [2] (1..%d)\n"
"    --aggregators N        aggregators [2] (1..%d)\n"
"    --fleets N             meter fleets [2] (aggregators..%d)\n"
"    --meters-per-fleet N   meters in each fleet [100] (1..%d)\n"
"    --operators LIST       id:ROLE,... with ROLE one of VIEWER, OPERATOR,\n"
"                           SECADM, AUDITOR\n"
"                           [%s]\n"
"    --force                replace an existing provisioning (every key changes;\n"
"                           with a new data key an existing MDMS audit log no\n"
"                           longer verifies, and its stored readings and\n"
"                           interval data no longer open)\n"
"  check     verify DIR: every file present, secrets mode 0600 and matching\n"
"            their public files (the MDMS data key included), allow-lists\n"
"            valid and complete, registry derived from the fleet secrets and\n"
"            the meter numbers and not readable by group or others (it holds\n"
"            customer data). -q: no summary line on success.\n"
"  operator  add operator ID with ROLE and install its public certificate\n"
"            into DIR/allow/mdms (a running MDMS admits it at its next\n"
"            handshake). --force replaces an existing operator's key.\n"
"  rotate    give node or operator ID a new transport keypair without stopping\n"
"            anything: every allow-list holding its key gets the new key and\n"
"            keeps the old one as ID.old-<time>.cert with metadata expires =\n"
"            now + window (--window SECONDS, default %d, at most %d); then\n"
"            DIR/nodes|operators/ID.cert(+_secret) is replaced. Restart the\n"
"            node within the window (supervisorctl restart ...). A server\n"
"            (mdms, broker, headend-N, agg-N) has ONE key: restart it, then\n"
"            its clients. --finish: remove ID's old keys now.\n"
"            rotate DIR mdms-sign: a new MDMS command-signing key. Fleets accept\n"
"            the old one (app/mdms-pub/mdms-sign.old-<time>.cert, expires = now +\n"
"            window) and the new one; they re-read app/mdms-pub within a second.\n"
"            Then restart the MDMS (it signs with app/mdms-sign.cert from its\n"
"            start); --finish (or prune after the window) removes the old key,\n"
"            and fleets refuse commands signed with it from then on.\n"
"  prune     remove every certificate whose expires has passed from every\n"
"            allow-list (zauth does not know expires: run it after each\n"
"            window, e.g. from a timer), and expired old MDMS signing keys\n"
"            from app/mdms-pub.\n"
"  revoke    remove every key of ID from every allow-list and record them in\n"
"            DIR/revoked.txt: refused from its next connection on, its live\n"
"            sessions' frames dropped within 250 ms. Refuses the last SECADM\n"
"            operator unless --force.\n"
"\n"
"  -v, --verbose            debug logging\n"
"\n"
"exit status:\n"
"  0  done; check: the deployment is complete and valid\n"
"  1  failure (I/O, crypto); check: DIR is invalid or incomplete\n"
"  2  usage error\n"
"  3  init: DIR/nodes exists / operator: ID exists (use --force)\n"
"  4  check, operator: DIR is not provisioned at all (run init)\n"
"  5  revoke: ID is the last SECADM operator (use --force)\n",
             KEYGEN_MAX_HEADENDS, KEYGEN_MAX_AGGREGATORS, KEYGEN_MAX_FLEETS,
             KEYGEN_MAX_METERS_PER, KEYGEN_DEFAULT_OPERATORS,
             KEYGEN_DEFAULT_WINDOW, KEYGEN_MAX_WINDOW);
}

static int
s_usage_error (const char *fmt, const char *arg)
{
    fputs ("ami-keygen: ", stderr);
    fprintf (stderr, fmt, arg);
    fputs ("\n(see ami-keygen --help)\n", stderr);
    return KEYGEN_USAGE;
}

/* Strict decimal: digits only, no sign, no junk, within [0, max]. */
static int
s_number (const char *text, long max, long *out)
{
    if (!text || !*text)
        return -1;
    for (const char *p = text; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    long value = strtol (text, NULL, 10);
    if (errno || value > max)
        return -1;
    *out = value;
    return 0;
}

int
main (int argc, char **argv)
{
    const char *positional [4] = { 0 };
    int npos = 0;
    bool force = false, quiet = false, verbose = false, finish = false;
    long window = KEYGEN_DEFAULT_WINDOW;
    keygen_topology_t topo;
    keygen_topology_default (&topo);

    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0) {
            s_usage (stdout);
            return KEYGEN_OK;
        }
        else
        if (strcmp (arg, "--force") == 0)
            force = true;
        else
        if (strcmp (arg, "--finish") == 0)
            finish = true;
        else
        if (strcmp (arg, "--window") == 0) {
            if (i + 1 >= argc)
                return s_usage_error ("%s needs a value", arg);
            if (s_number (argv [++i], KEYGEN_MAX_WINDOW, &window) || window < 1)
                return s_usage_error ("--window: not a number of seconds in 1..604800: %s",
                                      argv [i]);
        }
        else
        if (strcmp (arg, "-q") == 0 || strcmp (arg, "--quiet") == 0)
            quiet = true;
        else
        if (strcmp (arg, "-v") == 0 || strcmp (arg, "--verbose") == 0)
            verbose = true;
        else
        if (strcmp (arg, "--headends") == 0 || strcmp (arg, "--aggregators") == 0
        ||  strcmp (arg, "--fleets") == 0 || strcmp (arg, "--meters-per-fleet") == 0
        ||  strcmp (arg, "--operators") == 0 || strcmp (arg, "--topology") == 0) {
            if (i + 1 >= argc)
                return s_usage_error ("%s needs a value", arg);
            const char *value = argv [++i];
            long n = 0;
            if (strcmp (arg, "--operators") == 0)
                topo.operators = value;
            else
            if (strcmp (arg, "--topology") == 0) {
                //  docs/SERVICES.md spells it out; only one topology exists.
                if (strcmp (value, "default") != 0)
                    return s_usage_error ("unknown topology '%s' (only 'default')", value);
            }
            else
            if (s_number (value, 100000000L, &n))
                return s_usage_error ("not a number: %s", value);
            else
            if (strcmp (arg, "--headends") == 0)
                topo.headends = (int) n;
            else
            if (strcmp (arg, "--aggregators") == 0)
                topo.aggregators = (int) n;
            else
            if (strcmp (arg, "--fleets") == 0)
                topo.fleets = (int) n;
            else
                topo.meters_per_fleet = (uint32_t) n;
        }
        else
        if (arg [0] == '-' && arg [1] != '\0')
            return s_usage_error ("unknown option %s", arg);
        else
        if (npos < 4)
            positional [npos++] = arg;
        else
            return s_usage_error ("unexpected argument %s", arg);
    }
    if (npos == 0) {
        s_usage (stderr);
        return KEYGEN_USAGE;
    }
    //  Library diagnostics (ami_log) go to stderr; warnings and up unless -v.
    ami_log_init ("ami-keygen", NULL, verbose ? AMI_LOG_DEBUG : AMI_LOG_WARN);

    const char *command = positional [0];
    if (strcmp (command, "init") == 0) {
        if (npos != 2)
            return s_usage_error ("%s: expects exactly one DIR", command);
        return keygen_init (positional [1], &topo, force);
    }
    if (strcmp (command, "check") == 0) {
        if (npos != 2)
            return s_usage_error ("%s: expects exactly one DIR", command);
        return keygen_check (positional [1], quiet);
    }
    if (strcmp (command, "operator") == 0) {
        if (npos != 4)
            return s_usage_error ("%s: expects DIR ID ROLE", command);
        if (!keygen_operator_id_valid (positional [2]))
            return s_usage_error ("operator id '%s' is not valid ([A-Za-z0-9][A-Za-z0-9._-], "
                                  "at most 32 characters)", positional [2]);
        return keygen_operator (positional [1], positional [2], positional [3], force);
    }
    if (strcmp (command, "rotate") == 0) {
        if (npos != 3)
            return s_usage_error ("%s: expects DIR ID", command);
        return finish ? keygen_prune (positional [1], positional [2])
                      : keygen_rotate (positional [1], positional [2], window);
    }
    if (strcmp (command, "prune") == 0) {
        if (npos != 2)
            return s_usage_error ("%s: expects exactly one DIR", command);
        return keygen_prune (positional [1], NULL);
    }
    if (strcmp (command, "revoke") == 0) {
        if (npos != 3)
            return s_usage_error ("%s: expects DIR ID", command);
        return keygen_revoke (positional [1], positional [2], force);
    }
    return s_usage_error ("unknown command '%s'", command);
}
