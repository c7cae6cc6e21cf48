/*  load_ingest.c - interval-data ingest load (see load_ingest.h).

    Design. One thread drives a private deployment from outside, the way
    an operator would: child processes for provisioning and supervision
    (ami-keygen, deploy/render.sh, supervisord, supervisorctl, each with
    posix_spawn and a deadline), the MDMS operator API for every figure
    the services know (API_STATUS, every page of it through
    ami_client_status: each service's last HEALTH stats, and the MDMS's
    own ingest counters), /proc for what only the kernel knows
    (CPU time and memory of each service process), and the MDMS's LMDB
    file, opened read-only, for the final count. Nothing here trusts the
    services' own accounting for the verdict: the count of what is on disk
    is compared with what the fleets say they produced.

    Polling, not sleeping: every wait is a loop of API_STATUS walks (one
    request in flight, each with its own deadline) until a condition or a
    deadline; the period (S_TICK_MS) is a quarter of the services'
    heartbeat, since the stats the MDMS holds change once per heartbeat.
*/
#include "load_ingest.h"

#include <assert.h>
#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ami_cert.h"
#include "ami_auth.h"
#include "ami_client.h"
#include "ami_err.h"
#include "ami_log.h"
#include "load_stats.h"

extern char **environ;

/*  Status poll period: a quarter of the services' 1 s heartbeat (their
    stats change once per heartbeat; faster polling only loads the MDMS). */
#define S_TICK_MS           250
/*  Progress line refresh. */
#define S_PROGRESS_MS       500
/*  One API_STATUS page may take this long under full ingest load (the
    MDMS answers between its LMDB commits) before the poll gives up on
    the walk and asks again; the walks that open and close the measured
    window are tried this many times before the run gives up on the MDMS. */
#define S_STATUS_WAIT_MS    5000
#define S_STATUS_TRIES      4
/*  ami-keygen for 100 000 meters derives 100 000 Ed25519 keys and writes
    the registry: seconds; a minute per 100 000 meters is generous. */
#define S_KEYGEN_MS_PER_100K  60000
#define S_KEYGEN_MIN_MS     30000
/*  render.sh, supervisord's daemonizing, supervisorctl: seconds at most. */
#define S_TOOL_MS           30000
/*  After supervisorctl shutdown: stopwaitsecs is 10 s per service and
    supervisord stops them by priority group (5 groups). */
#define S_STOP_MS           60000
/*  A leftover process gets SIGTERM, then this long, then SIGKILL. */
#define S_KILL_GRACE_MS     2000
/*  render.sh refuses run directories longer than this (Unix socket path). */
#define S_MAX_DIR           80
/*  Port layout of render.sh: broker BASE, MDMS BASE+100..102, head end h
    BASE+200+h, aggregator a BASE+300+a. Random bases stay in
    10000..31900, below Linux's default ephemeral range (32768..), so an
    outgoing connection cannot take a port between our check and the bind. */
#define S_PORT_LOW          10000
#define S_PORT_STEPS        220
#define S_PORT_TRIES        50

typedef struct {
    const load_ingest_config_t *config;
    load_ingest_result_t *result;
    char *dir;                      /* absolute run directory */
    bool made_dir;                  /* we created it (a temporary one) */
    bool started;                   /* supervisord was started */
    pid_t supervisord;
    char conf [512];                /* DIR/supervisord.conf */
    char log [512];                 /* DIR/ami-load.log: the children's output */
    ami_client_t *client;
    ami_client_status_t status;     /* the last complete walk of API_STATUS */
    ami_client_status_t walk;       /* the walk in progress (swapped in when whole) */
    int64_t status_at;              /* zclock_mono when that walk ended */
    uint32_t expected;              /* nodes the deployment has */
} run_t;

bool
load_ingest_stat (const ami_stat_t *stats, uint32_t count, const char *name, uint64_t *value)
{
    for (uint32_t i = 0; i < count && i < AMI_MAX_STATS; i++)
        if (strcmp (stats [i].name, name) == 0) {
            *value = stats [i].value;
            return true;
        }
    return false;
}

static void
s_say (run_t *run, const char *fmt, ...)
{
    if (!run->config->verbose)
        return;
    va_list ap;
    va_start (ap, fmt);
    fprintf (stderr, "ami-load: ");
    vfprintf (stderr, fmt, ap);
    fputc ('\n', stderr);
    va_end (ap);
}

static int
s_fail (run_t *run, int outcome, const char *fmt, ...)
{
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (run->result->why, sizeof run->result->why, fmt, ap);
    va_end (ap);
    return run->result->outcome = outcome;
}

/* ---------------------------------------------------------------------- */
/*  Child processes                                                        */

/*  environ plus NAME=VALUE overrides (extra, NULL-terminated); heap
    array, free with s_env_free. */
static char **
s_env_new (char *const *extra)
{
    size_t n = 0, k = 0;
    while (environ [n])
        n++;
    while (extra [k])
        k++;
    char **env = calloc (n + k + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr (environ [i], '=');
        size_t len = eq ? (size_t) (eq - environ [i]) + 1 : strlen (environ [i]);
        bool overridden = false;
        for (size_t j = 0; j < k && !overridden; j++)
            overridden = strncmp (environ [i], extra [j], len) == 0;
        if (!overridden)
            env [out++] = environ [i];
    }
    for (size_t j = 0; j < k; j++)
        env [out++] = extra [j];
    return env;
}

/*  Run argv (PATH searched) with environ + extra, stdin /dev/null, stdout
    and stderr appended to log; wait at most timeout_ms (then SIGKILL).
    Returns the exit status, or -1 (why in the result) if it could not
    run, died of a signal, or timed out. */
static int
s_run (run_t *run, char *const *argv, char *const *extra, int64_t timeout_ms)
{
    char *const none [] = { NULL };
    char **env = s_env_new (extra ? extra : none);
    posix_spawn_file_actions_t actions;
    if (!env || posix_spawn_file_actions_init (&actions)) {
        free (env);
        s_fail (run, LOAD_INGEST_SETUP, "out of memory");
        return -1;
    }
    posix_spawn_file_actions_addopen (&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen (&actions, 1, run->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2 (&actions, 1, 2);
    pid_t pid = 0;
    int rc = posix_spawnp (&pid, argv [0], &actions, NULL, argv, env);
    posix_spawn_file_actions_destroy (&actions);
    free (env);
    if (rc) {
        s_fail (run, LOAD_INGEST_SETUP, "cannot run %s: %s", argv [0], strerror (rc));
        return -1;
    }
    int64_t deadline = zclock_mono () + timeout_ms;
    int status = 0;
    while (true) {
        pid_t done = waitpid (pid, &status, WNOHANG);
        if (done == pid)
            break;
        if (done < 0 && errno != EINTR) {
            s_fail (run, LOAD_INGEST_SETUP, "waitpid %s: %s", argv [0], strerror (errno));
            return -1;
        }
        if (zclock_mono () >= deadline) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
            s_fail (run, LOAD_INGEST_SETUP, "%s did not finish within %" PRId64 " s (output: %s)",
                    argv [0], timeout_ms / 1000, run->log);
            return -1;
        }
        zclock_sleep (20);          //  a child's exit, not readiness: nothing to poll
    }
    if (!WIFEXITED (status)) {
        s_fail (run, LOAD_INGEST_SETUP, "%s died of signal %d (output: %s)", argv [0],
                WIFSIGNALED (status) ? WTERMSIG (status) : 0, run->log);
        return -1;
    }
    return WEXITSTATUS (status);
}

/* ---------------------------------------------------------------------- */
/*  /proc                                                                  */

/*  The node a process serves if it is a service of our run directory
    (started as .../ami-ROLE -c DIR/etc/NODE.cfg): fills node and role and
    returns true. */
static bool
s_proc_node (const char *dir, pid_t pid, char node [AMI_MAX_ID + 1], char role [AMI_MAX_ROLE + 1])
{
    char path [64], buf [4096];
    snprintf (path, sizeof path, "/proc/%d/cmdline", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return false;
    size_t len = fread (buf, 1, sizeof buf - 1, file);
    fclose (file);
    buf [len] = '\0';
    //  argv[0], "-c", config path
    const char *argv0 = buf;
    const char *arg1 = argv0 + strlen (argv0) + 1;
    if (arg1 >= buf + len || strcmp (arg1, "-c") != 0)
        return false;
    const char *cfg = arg1 + 3;
    if (cfg >= buf + len)
        return false;
    const char *base = strrchr (argv0, '/');
    base = base ? base + 1 : argv0;
    size_t dlen = strlen (dir);
    if (strncmp (base, "ami-", 4) != 0 || strncmp (cfg, dir, dlen) != 0
    ||  strncmp (cfg + dlen, "/etc/", 5) != 0)
        return false;
    const char *name = cfg + dlen + 5;
    const char *dot = strrchr (name, '.');
    if (!dot || strcmp (dot, ".cfg") != 0 || strchr (name, '/')
    ||  (size_t) (dot - name) > AMI_MAX_ID || strlen (base + 4) > AMI_MAX_ROLE)
        return false;
    snprintf (node, AMI_MAX_ID + 1, "%.*s", (int) (dot - name), name);
    snprintf (role, AMI_MAX_ROLE + 1, "%s", base + 4);
    return true;
}

/*  Every process whose command line mentions "DIR/" (supervisord -c
    DIR/supervisord.conf, the services): pids[cap], returns the count. */
static size_t
s_procs_of (const char *dir, pid_t *pids, size_t cap)
{
    size_t count = 0, dlen = strlen (dir);
    DIR *proc = opendir ("/proc");
    if (!proc)
        return 0;
    struct dirent *entry;
    while ((entry = readdir (proc)) && count < cap) {
        char *end = NULL;
        long pid = strtol (entry->d_name, &end, 10);
        if (*end || pid <= 1 || pid == getpid ())
            continue;
        char path [64], buf [4096];
        snprintf (path, sizeof path, "/proc/%ld/cmdline", pid);
        FILE *file = fopen (path, "r");
        if (!file)
            continue;
        size_t len = fread (buf, 1, sizeof buf - 1, file);
        fclose (file);
        bool ours = false;
        for (size_t i = 0; i + dlen < len && !ours; i++)
            ours = memcmp (buf + i, dir, dlen) == 0 && buf [i + dlen] == '/';
        if (ours)
            pids [count++] = (pid_t) pid;
    }
    closedir (proc);
    return count;
}

/*  utime + stime of pid in seconds; -1 if it is gone. */
static double
s_cpu_seconds (pid_t pid)
{
    char path [64], buf [2048];
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    size_t len = fread (buf, 1, sizeof buf - 1, file);
    fclose (file);
    buf [len] = '\0';
    //  comm may hold spaces and parentheses: fields resume after the last ')'
    char *p = strrchr (buf, ')');
    if (!p)
        return -1;
    unsigned long long utime = 0, stime = 0;
    //  after ")": state(3) ... utime is field 14, stime 15
    if (sscanf (p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                &utime, &stime) != 2)
        return -1;
    return (double) (utime + stime) / (double) sysconf (_SC_CLK_TCK);
}

/*  VmRSS, VmHWM and RssAnon of pid in kB; false if it is gone. */
static bool
s_memory_kb (pid_t pid, uint64_t *rss, uint64_t *hwm, uint64_t *anon)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return false;
    unsigned long long value;
    while (fgets (line, sizeof line, file)) {
        if (sscanf (line, "VmRSS: %llu kB", &value) == 1)
            *rss = value;
        else
        if (sscanf (line, "VmHWM: %llu kB", &value) == 1)
            *hwm = value;
        else
        if (sscanf (line, "RssAnon: %llu kB", &value) == 1)
            *anon = value;
    }
    fclose (file);
    return true;
}

/* ---------------------------------------------------------------------- */
/*  Provisioning                                                           */

static bool
s_port_free (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    bool free_ = bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0;
    close (fd);
    return free_;
}

static bool
s_layout_free (const load_ingest_config_t *config, int base)
{
    static const int fixed [] = { 0, 100, 101, 102 };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed [0]; i++)
        if (!s_port_free (base + fixed [i]))
            return false;
    for (uint32_t h = 1; h <= config->headends; h++)
        if (!s_port_free (base + 200 + (int) h))
            return false;
    for (uint32_t a = 1; a <= config->aggregators; a++)
        if (!s_port_free (base + 300 + (int) a))
            return false;
    return true;
}

static int
s_provision (run_t *run)
{
    const load_ingest_config_t *config = run->config;
    load_ingest_result_t *result = run->result;
    //  1. the run directory
    if (config->dir) {
        if (mkdir (config->dir, 0700) && errno != EEXIST)
            return s_fail (run, LOAD_INGEST_SETUP, "cannot create %s: %s", config->dir,
                           strerror (errno));
        run->dir = realpath (config->dir, NULL);
        if (!run->dir)
            return s_fail (run, LOAD_INGEST_SETUP, "%s: %s", config->dir, strerror (errno));
        char keys [512];
        snprintf (keys, sizeof keys, "%s/keys", run->dir);
        if (access (keys, F_OK) == 0)
            return s_fail (run, LOAD_INGEST_SETUP, "%s already holds a deployment (keys/): "
                           "give an empty or new directory", run->dir);
    }
    else {
        const char *tmp = getenv ("TMPDIR");
        char templ [256];
        snprintf (templ, sizeof templ, "%s/ami-load.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp (templ))
            return s_fail (run, LOAD_INGEST_SETUP, "cannot create %s: %s", templ,
                           strerror (errno));
        run->made_dir = true;
        run->dir = realpath (templ, NULL);
        if (!run->dir)
            return s_fail (run, LOAD_INGEST_SETUP, "%s: %s", templ, strerror (errno));
    }
    snprintf (result->dir, sizeof result->dir, "%s", run->dir);
    if (strlen (run->dir) > S_MAX_DIR)
        return s_fail (run, LOAD_INGEST_SETUP, "run directory %s is longer than %d characters "
                       "(supervisord's socket path): set TMPDIR or --dir shorter", run->dir,
                       S_MAX_DIR);
    snprintf (run->log, sizeof run->log, "%s/ami-load.log", run->dir);
    snprintf (run->conf, sizeof run->conf, "%s/supervisord.conf", run->dir);

    //  2. keys
    char keys [512], headends [16], aggregators [16], fleets [16], per_fleet [16], exe [512];
    snprintf (keys, sizeof keys, "%s/keys", run->dir);
    snprintf (headends, sizeof headends, "%u", config->headends);
    snprintf (aggregators, sizeof aggregators, "%u", config->aggregators);
    snprintf (fleets, sizeof fleets, "%u", config->fleets);
    snprintf (per_fleet, sizeof per_fleet, "%u", config->meters / config->fleets);
    snprintf (exe, sizeof exe, "%s/ami-keygen", config->bin_dir);
    s_say (run, "provisioning keys for %u meters in %u fleet(s) into %s", config->meters,
           config->fleets, keys);
    char *keygen [] = { exe, "init", keys, "--headends", headends, "--aggregators", aggregators,
                        "--fleets", fleets, "--meters-per-fleet", per_fleet, NULL };
    int64_t keygen_ms = S_KEYGEN_MIN_MS + (int64_t) config->meters * S_KEYGEN_MS_PER_100K / 100000;
    int rc = s_run (run, keygen, NULL, keygen_ms);
    if (rc != 0)
        return rc < 0 ? result->outcome
                      : s_fail (run, LOAD_INGEST_SETUP, "ami-keygen init exited %d (see %s)",
                                rc, run->log);

    //  3. ports
    int base = config->port_base;
    if (base == 0) {
        for (int tries = 0; tries < S_PORT_TRIES && base == 0; tries++) {
            int candidate = S_PORT_LOW + (int) randombytes_uniform (S_PORT_STEPS) * 100;
            if (s_layout_free (config, candidate))
                base = candidate;
        }
        if (base == 0)
            return s_fail (run, LOAD_INGEST_SETUP, "no free port base found in %d tries",
                           S_PORT_TRIES);
    }
    else
    if (!s_layout_free (config, base))
        return s_fail (run, LOAD_INGEST_SETUP, "a port of base %d's layout is taken", base);
    result->port_base = base;

    //  4. configuration: FLOOD mode, read limits off
    char script [512], base_text [16], env [12][128];
    snprintf (script, sizeof script, "%s/render.sh", config->deploy_dir);
    snprintf (base_text, sizeof base_text, "%d", base);
    int e = 0;
    snprintf (env [e++], sizeof env [0], "AMI_BIN_DIR=%s", config->bin_dir);
    snprintf (env [e++], sizeof env [0], "AMI_LOG_LEVEL=%s", config->log_level);
    snprintf (env [e++], sizeof env [0], "AMI_RATE_OPERATOR=0");
    snprintf (env [e++], sizeof env [0], "AMI_RATE_METER=0");
    snprintf (env [e++], sizeof env [0], "AMI_PROFILE_ENABLED=true");
    snprintf (env [e++], sizeof env [0], "AMI_PROFILE_TIME_SCALE=0");
    snprintf (env [e++], sizeof env [0], "AMI_PROFILE_INTERVAL=%us", config->interval_s);
    snprintf (env [e++], sizeof env [0], "AMI_PROFILE_BLOCK=%u", config->block);
    snprintf (env [e++], sizeof env [0], "AMI_PROFILE_START=%" PRIu64, config->start_s);
    snprintf (env [e++], sizeof env [0], "AMI_PROFILE_LIMIT=%u", config->limit);
    snprintf (env [e++], sizeof env [0], "AMI_MDMS_MAP_SIZE=%s", config->map_size);
    char *extra [13];
    for (int i = 0; i < e; i++)
        extra [i] = env [i];
    extra [e] = NULL;
    char *render [] = { "sh", script, run->dir, base_text, NULL };
    rc = s_run (run, render, extra, S_TOOL_MS);
    if (rc != 0)
        return rc < 0 ? result->outcome
                      : s_fail (run, LOAD_INGEST_SETUP, "%s exited %d (see %s)", script, rc,
                                run->log);

    //  5. supervisord (it daemonizes: its parent exits once it runs)
    s_say (run, "starting the deployment (port base %d) under supervisord", base);
    char *supervisord [] = { "supervisord", "-c", run->conf, NULL };
    rc = s_run (run, supervisord, NULL, S_TOOL_MS);
    if (rc != 0)
        return rc < 0 ? result->outcome
                      : s_fail (run, LOAD_INGEST_SETUP, "supervisord exited %d (see %s)", rc,
                                run->log);
    run->started = true;
    char pidfile [512];
    snprintf (pidfile, sizeof pidfile, "%s/supervisord.pid", run->dir);
    int64_t deadline = zclock_mono () + S_TOOL_MS;
    while (run->supervisord <= 0 && zclock_mono () < deadline) {
        FILE *file = fopen (pidfile, "r");
        int pid = 0;
        if (file) {
            if (fscanf (file, "%d", &pid) != 1)
                pid = 0;
            fclose (file);
        }
        if (pid > 0 && kill (pid, 0) == 0)
            run->supervisord = pid;
        else
            zclock_sleep (50);      //  a file to appear: nothing to poll
    }
    if (run->supervisord <= 0)
        return s_fail (run, LOAD_INGEST_SETUP, "supervisord is not running (see %s/log)",
                       run->dir);
    return LOAD_INGEST_DONE;
}

/* ---------------------------------------------------------------------- */
/*  The MDMS's view                                                        */

static int
s_connect (run_t *run)
{
    char cert_path [512], mdms_cert [512], endpoint [64];
    snprintf (cert_path, sizeof cert_path, "%s/keys/operators/operator.cert", run->dir);
    snprintf (mdms_cert, sizeof mdms_cert, "%s/keys/nodes/mdms.cert", run->dir);
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", run->result->port_base + 100);
    int err = 0;
    ami_cert_t *cert = ami_cert_load (cert_path, &err);
    if (!cert)
        return s_fail (run, LOAD_INGEST_SETUP, "cannot use %s: %s", cert_path, ami_strerror (err));
    char key [AMI_CERT_KEY_TXT_LEN + 1];
    err = ami_auth_server_key_from_file (mdms_cert, key);
    if (err == AMI_OK)
        run->client = ami_client_new (endpoint, cert, key, &err);
    ami_cert_destroy (&cert);       //  the socket keeps its own copy of the keys
    if (!run->client)
        return s_fail (run, LOAD_INGEST_SETUP, "cannot connect to the MDMS at %s: %s", endpoint,
                       ami_strerror (err));
    return LOAD_INGEST_DONE;
}

/*  Walk every page of API_STATUS once (the deployment's 2 + head ends +
    aggregators + fleets services may fill more than one page); when the
    walk is whole, keep it in run->status and return true. A failed walk
    leaves the last whole one in place. status_at is when the walk ended:
    the MDMS's own row (intervals_stored) comes on the first page, a few
    page round trips earlier at most, alike at both ends of the measured
    window. */
static bool
s_poll_status (run_t *run)
{
    ami_msg_t *reply = NULL;
    int rc = ami_client_status (run->client, 0, S_STATUS_WAIT_MS, &run->walk, &reply);
    if (rc != AMI_OK)
        return false;
    ami_client_status_t whole = run->walk;  //  keep this walk; the next one frees the older
    run->walk = run->status;
    run->status = whole;
    run->status_at = zclock_mono ();
    return true;
}

/*  Ask until an answer (S_STATUS_TRIES at most). */
static bool
s_poll_status_hard (run_t *run)
{
    for (int i = 0; i < S_STATUS_TRIES && !zsys_interrupted; i++)
        if (s_poll_status (run))
            return true;
    return false;
}

static const ami_service_row_t *
s_row (run_t *run, const char *node)
{
    for (size_t i = 0; i < run->status.count; i++)
        if (strcmp (run->status.rows [i].node_id, node) == 0)
            return &run->status.rows [i];
    return NULL;
}

static uint64_t
s_row_stat (const ami_service_row_t *row, const char *name)
{
    uint64_t value = 0;
    if (row)
        load_ingest_stat (row->stats, row->stat_count, name, &value);
    return value;
}

/*  Is every node of the deployment present, and READY (or DEGRADED: a
    relay whose buffer is full under FLOOD load says so, and still works)?
    Writes the first one that is not into why. */
static bool
s_all_up (run_t *run, char *why, size_t cap)
{
    const load_ingest_config_t *config = run->config;
    char node [AMI_MAX_ID + 1];
    uint32_t total = 2 + config->headends + config->aggregators + config->fleets;
    for (uint32_t i = 0; i < total; i++) {
        if (i == 0)
            snprintf (node, sizeof node, "mdms");
        else
        if (i == 1)
            snprintf (node, sizeof node, "broker");
        else
        if (i < 2 + config->headends)
            snprintf (node, sizeof node, "headend-%u", i - 1);
        else
        if (i < 2 + config->headends + config->aggregators)
            snprintf (node, sizeof node, "agg-%u", i - 1 - config->headends);
        else
            snprintf (node, sizeof node, "fleet-%u",
                      i - 1 - config->headends - config->aggregators);
        const ami_service_row_t *row = s_row (run, node);
        if (!row) {
            snprintf (why, cap, "%s is missing", node);
            return false;
        }
        if (row->state != AMI_STATE_READY && row->state != AMI_STATE_DEGRADED) {
            snprintf (why, cap, "%s is not READY (state %u)", node, row->state);
            return false;
        }
    }
    return true;
}

/*  Sum of a stat over every fleet row; *fleets = rows found, *done = how
    many of them report profile_done = 1. */
static uint64_t
s_fleet_sum (run_t *run, const char *name, uint32_t *fleets, uint32_t *done)
{
    uint64_t sum = 0;
    *fleets = *done = 0;
    for (uint32_t f = 1; f <= run->config->fleets; f++) {
        char node [AMI_MAX_ID + 1];
        snprintf (node, sizeof node, "fleet-%u", f);
        const ami_service_row_t *row = s_row (run, node);
        if (!row)
            continue;
        (*fleets)++;
        sum += s_row_stat (row, name);
        if (s_row_stat (row, "profile_done") == 1)
            (*done)++;
    }
    return sum;
}

/* ---------------------------------------------------------------------- */
/*  Processes                                                              */

static void
s_find_procs (run_t *run)
{
    load_ingest_result_t *result = run->result;
    pid_t pids [LOAD_INGEST_MAX_PROCS * 2];
    size_t count = s_procs_of (run->dir, pids, sizeof pids / sizeof pids [0]);
    result->proc_count = 0;
    for (size_t i = 0; i < count && result->proc_count < LOAD_INGEST_MAX_PROCS; i++) {
        load_ingest_proc_t *proc = &result->procs [result->proc_count];
        memset (proc, 0, sizeof *proc);
        if (!s_proc_node (run->dir, pids [i], proc->node, proc->role))
            continue;               //  supervisord itself
        proc->pid = pids [i];
        result->proc_count++;
    }
    //  a stable order: the MDMS first, then by role and node
    for (uint32_t i = 1; i < result->proc_count; i++)
        for (uint32_t j = i; j > 0; j--) {
            load_ingest_proc_t *a = &result->procs [j - 1], *b = &result->procs [j];
            int ra = strcmp (a->role, "mdms") == 0 ? 0 : 1, rb = strcmp (b->role, "mdms") == 0 ? 0 : 1;
            int order = ra != rb ? ra - rb : strcmp (a->role, b->role);
            if (order == 0)
                order = strlen (a->node) != strlen (b->node)
                      ? (int) strlen (a->node) - (int) strlen (b->node) : strcmp (a->node, b->node);
            if (order <= 0)
                break;
            load_ingest_proc_t tmp = *a;
            *a = *b;
            *b = tmp;
        }
}

static void
s_sample_procs (run_t *run, bool start, bool end)
{
    load_ingest_result_t *result = run->result;
    for (uint32_t i = 0; i < result->proc_count; i++) {
        load_ingest_proc_t *proc = &result->procs [i];
        uint64_t rss = 0, hwm = 0, anon = 0;
        if (!s_memory_kb (proc->pid, &rss, &hwm, &anon))
            continue;               //  gone (restarted?): its figures stop here
        if (rss > proc->rss_max_kb)
            proc->rss_max_kb = rss;
        if (anon > proc->anon_max_kb)
            proc->anon_max_kb = anon;
        if (start) {
            proc->rss_start_kb = rss;
            proc->anon_start_kb = anon;
            proc->cpu_start_s = s_cpu_seconds (proc->pid);
        }
        if (end) {
            proc->rss_end_kb = rss;
            proc->anon_end_kb = anon;
            proc->hwm_kb = hwm;
            proc->cpu_end_s = s_cpu_seconds (proc->pid);
        }
    }
}

static void
s_copy_stats (run_t *run)
{
    load_ingest_result_t *result = run->result;
    for (uint32_t i = 0; i < result->proc_count; i++) {
        const ami_service_row_t *row = s_row (run, result->procs [i].node);
        if (!row)
            continue;
        result->procs [i].stat_count = row->stat_count < AMI_MAX_STATS ? row->stat_count
                                                                       : AMI_MAX_STATS;
        memcpy (result->procs [i].stats, row->stats,
                result->procs [i].stat_count * sizeof row->stats [0]);
    }
}

/* ---------------------------------------------------------------------- */
/*  Measuring                                                              */

static void
s_progress (run_t *run, const char *phase, double secs, const char *extra)
{
    if (!run->config->progress)
        return;
    if (!phase) {
        fprintf (stderr, "\r\033[K");
        fflush (stderr);
        return;
    }
    const ami_service_row_t *mdms = s_row (run, "mdms");
    fprintf (stderr, "\r\033[Kami-load ingest: %s %6.1f s  stored %12" PRIu64 "  backlog %6"
             PRIu64 "  p99 %7.1f ms  %s", phase, secs, s_row_stat (mdms, "intervals_stored"),
             s_row_stat (mdms, "ingest_backlog"), s_row_stat (mdms, "ingest_lat_p99_us") / 1e3,
             extra ? extra : "");
    fflush (stderr);
}

static int
s_wait_ready (run_t *run)
{
    const load_ingest_config_t *config = run->config;
    int64_t start = zclock_mono ();
    int64_t deadline = start + config->ready_ms;
    char why [256] = "the MDMS has not answered yet";
    while (!zsys_interrupted) {
        if (s_poll_status (run) && s_all_up (run, why, sizeof why)) {
            run->result->ready_s = (zclock_mono () - start) / 1e3;
            s_say (run, "every service is up after %.1f s", run->result->ready_s);
            return LOAD_INGEST_DONE;
        }
        if (zclock_mono () >= deadline)
            return s_fail (run, LOAD_INGEST_NOT_READY, "not every service was up within %" PRId64
                           " s: %s%s%s (logs in %s/log)", config->ready_ms / 1000, why,
                           ami_client_why (run->client) [0] ? "; " : "",
                           ami_client_why (run->client), run->dir);
        zclock_sleep (S_TICK_MS);   //  the poll period (no event to wait for)
    }
    return s_fail (run, LOAD_INGEST_INTERRUPTED, "interrupted while waiting for the services");
}

static int
s_measure (run_t *run)
{
    const load_ingest_config_t *config = run->config;
    load_ingest_result_t *result = run->result;
    s_find_procs (run);
    //  The window opens at an answer (its intervals_stored is the start).
    if (!s_poll_status_hard (run))
        return zsys_interrupted ? s_fail (run, LOAD_INGEST_INTERRUPTED, "interrupted")
                                : s_fail (run, LOAD_INGEST_SETUP, "the MDMS stopped answering: %s "
                                          "(logs in %s/log)", ami_client_why (run->client),
                                          run->dir);
    s_sample_procs (run, true, false);
    int64_t t0 = run->status_at, t_last = t0;
    uint64_t stored_last = s_row_stat (s_row (run, "mdms"), "intervals_stored");
    result->stored_start = stored_last;
    s_say (run, "measuring for %.1f s", config->duration_ms / 1e3);
    int64_t next_progress = t0;
    double rate_now = 0;
    while (!zsys_interrupted) {
        int64_t now = zclock_mono ();
        if (now - t0 >= config->duration_ms)
            break;
        int64_t left = t0 + config->duration_ms - now;
        zclock_sleep ((int) (left < S_TICK_MS ? left : S_TICK_MS));
        if (!s_poll_status (run))
            continue;
        s_sample_procs (run, false, false);
        uint64_t stored = s_row_stat (s_row (run, "mdms"), "intervals_stored");
        if (run->status_at >= next_progress) {
            if (run->status_at > t_last)
                rate_now = (double) (stored - stored_last) * 1e3 / (double) (run->status_at - t_last);
            stored_last = stored;
            t_last = run->status_at;
            char extra [64];
            snprintf (extra, sizeof extra, "%10.0f readings/s", rate_now);
            s_progress (run, "measuring", (run->status_at - t0) / 1e3, extra);
            next_progress = run->status_at + S_PROGRESS_MS;
        }
    }
    //  The window closes at an answer too.
    bool answered = s_poll_status_hard (run);
    s_sample_procs (run, false, true);
    s_progress (run, NULL, 0, NULL);
    result->window_s = (run->status_at - t0) / 1e3;
    result->stored_end = s_row_stat (s_row (run, "mdms"), "intervals_stored");
    result->readings_per_s = result->window_s > 0
        ? (double) (result->stored_end - result->stored_start) / result->window_s : 0;
    if (zsys_interrupted)
        return s_fail (run, LOAD_INGEST_INTERRUPTED, "interrupted while measuring");
    if (!answered)
        return s_fail (run, LOAD_INGEST_SETUP, "the MDMS stopped answering: %s (logs in %s/log)",
                       ami_client_why (run->client), run->dir);
    return LOAD_INGEST_DONE;
}

/*  SIGUSR1 every fleet, then wait until the chain has delivered all. */
static int
s_drain (run_t *run)
{
    const load_ingest_config_t *config = run->config;
    load_ingest_result_t *result = run->result;
    uint32_t signalled = 0;
    for (uint32_t i = 0; i < result->proc_count; i++)
        if (strcmp (result->procs [i].role, "meter") == 0
        &&  kill (result->procs [i].pid, SIGUSR1) == 0)
            signalled++;
    s_say (run, "stopped production of %u fleet(s) (SIGUSR1); waiting for the chain to drain",
           signalled);
    if (signalled != config->fleets)
        ami_log_warn ("SIGUSR1 reached %u of %u fleets", signalled, config->fleets);
    int64_t start = zclock_mono ();
    int64_t deadline = start + config->drain_ms;
    while (!zsys_interrupted) {
        if (s_poll_status (run)) {
            uint32_t fleets = 0, done = 0;
            uint64_t produced = s_fleet_sum (run, "profile_readings", &fleets, &done);
            uint64_t stored = s_row_stat (s_row (run, "mdms"), "intervals_stored");
            result->produced = produced;
            result->stored = stored;
            char extra [96];
            snprintf (extra, sizeof extra, "of %" PRIu64 " produced, %u/%u fleets done",
                      produced, done, config->fleets);
            s_progress (run, "draining", (zclock_mono () - start) / 1e3, extra);
            if (fleets == config->fleets && done == fleets && stored == produced) {
                result->settled = true;
                break;
            }
        }
        if (zclock_mono () >= deadline)
            break;
        zclock_sleep (S_TICK_MS);   //  the poll period
    }
    s_progress (run, NULL, 0, NULL);
    result->drain_s = (zclock_mono () - start) / 1e3;
    uint32_t fleets = 0, done = 0;
    result->acked = s_fleet_sum (run, "profile_acked", &fleets, &done);
    const ami_service_row_t *mdms = s_row (run, "mdms");
    result->lat_p50_us = s_row_stat (mdms, "ingest_lat_p50_us");
    result->lat_p99_us = s_row_stat (mdms, "ingest_lat_p99_us");
    result->lat_max_us = s_row_stat (mdms, "ingest_lat_max_us");
    result->dup = s_row_stat (mdms, "intervals_dup");
    result->conflict = s_row_stat (mdms, "intervals_conflict");
    result->rejected = s_row_stat (mdms, "blocks_rejected");
    s_copy_stats (run);
    if (!result->settled)
        s_say (run, "the chain did not settle within %.0f s: %u/%u fleets done, %" PRIu64
               " stored of %" PRIu64 " produced", config->drain_ms / 1e3, done, config->fleets,
               result->stored, result->produced);
    if (zsys_interrupted)
        return s_fail (run, LOAD_INGEST_INTERRUPTED, "interrupted while draining");
    return LOAD_INGEST_DONE;
}

/* ---------------------------------------------------------------------- */
/*  The database, read-only                                                */

static int
s_count_db (run_t *run)
{
    load_ingest_result_t *result = run->result;
    char path [512];
    snprintf (path, sizeof path, "%s/db/mdms", run->dir);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *cursor = NULL;
    const char *step = "mdb_env_create";
    int rc = mdb_env_create (&env);
    //  The MDMS opens a handful of named databases; room for them all.
    if (rc == 0) {
        step = "mdb_env_set_maxdbs";
        rc = mdb_env_set_maxdbs (env, 32);
    }
    if (rc == 0) {
        step = "mdb_env_open (MDB_RDONLY)";
        rc = mdb_env_open (env, path, MDB_RDONLY, 0600);
    }
    if (rc == 0) {
        step = "mdb_txn_begin";
        rc = mdb_txn_begin (env, NULL, MDB_RDONLY, &txn);
    }
    MDB_stat env_stat;
    MDB_envinfo info;
    if (rc == 0) {
        step = "mdb_env_stat";
        rc = mdb_env_stat (env, &env_stat);
    }
    if (rc == 0) {
        step = "mdb_env_info";
        rc = mdb_env_info (env, &info);
    }
    if (rc == 0) {
        result->page_size = env_stat.ms_psize;
        result->file_bytes = (uint64_t) (info.me_last_pgno + 1) * env_stat.ms_psize;
    }
    MDB_dbi dbi = 0;
    bool have_db = false;
    if (rc == 0) {
        step = "mdb_dbi_open " LOAD_INGEST_DB_NAME;
        rc = mdb_dbi_open (txn, LOAD_INGEST_DB_NAME, 0, &dbi);
        if (rc == MDB_NOTFOUND)
            rc = 0;                 //  nothing stored at all: a count of 0
        else
        if (rc == 0)
            have_db = true;
    }
    if (rc == 0 && have_db) {
        MDB_stat db_stat;
        step = "mdb_stat";
        rc = mdb_stat (txn, dbi, &db_stat);
        if (rc == 0)
            result->db_bytes = (uint64_t) (db_stat.ms_branch_pages + db_stat.ms_leaf_pages
                                           + db_stat.ms_overflow_pages) * db_stat.ms_psize;
    }
    if (rc == 0 && have_db) {
        step = "mdb_cursor_open";
        rc = mdb_cursor_open (txn, dbi, &cursor);
    }
    if (rc == 0 && have_db) {
        MDB_val key, value;
        char meter [AMI_MAX_ID + 2] = "";
        uint64_t per_meter = 0;
        int op = MDB_FIRST;
        step = "mdb_cursor_get";
        while ((rc = mdb_cursor_get (cursor, &key, &value, op)) == 0) {
            op = MDB_NEXT;
            result->db_records++;
            //  key = meter_id + 0x00 + u32 bucket; value starts with the
            //  12-byte presence bitmap of the bucket's 96 slots.
            const char *k = key.mv_data;
            const char *nul = memchr (k, 0, key.mv_size);
            size_t id_len = nul ? (size_t) (nul - k) : key.mv_size;
            if (id_len > AMI_MAX_ID)
                id_len = AMI_MAX_ID;
            if (strlen (meter) != id_len || memcmp (meter, k, id_len) != 0) {
                if (result->db_meters > 0) {
                    if (per_meter < result->per_meter_min || result->db_meters == 1)
                        result->per_meter_min = per_meter;
                    if (per_meter > result->per_meter_max)
                        result->per_meter_max = per_meter;
                }
                memcpy (meter, k, id_len);
                meter [id_len] = '\0';
                result->db_meters++;
                per_meter = 0;
            }
            const uint8_t *bits = value.mv_data;
            size_t n = value.mv_size < 12 ? value.mv_size : 12;
            for (size_t i = 0; i < n; i++) {
                result->in_db += (uint64_t) __builtin_popcount (bits [i]);
                per_meter += (uint64_t) __builtin_popcount (bits [i]);
            }
        }
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            if (result->db_meters > 0) {
                if (per_meter < result->per_meter_min || result->db_meters == 1)
                    result->per_meter_min = per_meter;
                if (per_meter > result->per_meter_max)
                    result->per_meter_max = per_meter;
            }
        }
    }
    if (cursor)
        mdb_cursor_close (cursor);
    if (txn)
        mdb_txn_abort (txn);
    if (env)
        mdb_env_close (env);
    if (rc) {
        ami_log_error ("cannot count %s: %s: %s", path, step, mdb_strerror (rc));
        snprintf (result->why, sizeof result->why, "cannot count the LMDB at %s: %s: %s", path,
                  step, mdb_strerror (rc));
        return -1;
    }
    result->counted = true;
    if (result->in_db > 0) {
        result->db_bytes_per_reading = (double) result->db_bytes / (double) result->in_db;
        result->file_bytes_per_reading = (double) result->file_bytes / (double) result->in_db;
    }
    if (result->db_records > 0) {
        double slots = (double) result->db_records * LOAD_INGEST_SLOTS;
        result->full_bytes_per_reading = (double) result->db_bytes / slots;
        result->slot_fill = (double) result->in_db / slots;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/*  Stopping                                                               */

static int
s_rm_entry (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    return remove (path);
}

static void
s_stop (run_t *run)
{
    const load_ingest_config_t *config = run->config;
    load_ingest_result_t *result = run->result;
    if (!run->dir)
        return;
    if (run->started && config->keep && result->outcome == LOAD_INGEST_DONE) {
        result->kept = true;
        return;
    }
    if (run->started) {
        s_say (run, "stopping the deployment");
        char *shutdown [] = { "supervisorctl", "-c", run->conf, "shutdown", NULL };
        //  Its exit status does not matter: what matters is supervisord gone.
        s_run (run, shutdown, NULL, S_TOOL_MS);
        int64_t deadline = zclock_mono () + S_STOP_MS;
        while (run->supervisord > 0 && kill (run->supervisord, 0) == 0
               && zclock_mono () < deadline)
            zclock_sleep (100);     //  a process's exit (not our child): nothing to poll
        //  Then whatever is left of this run directory, by pid.
        pid_t pids [LOAD_INGEST_MAX_PROCS * 2];
        size_t count = s_procs_of (run->dir, pids, sizeof pids / sizeof pids [0]);
        if (count) {
            ami_log_warn ("%zu process(es) of %s still run after shutdown: ending them",
                          count, run->dir);
            for (size_t i = 0; i < count; i++)
                kill (pids [i], SIGTERM);
            zclock_sleep (S_KILL_GRACE_MS);
            count = s_procs_of (run->dir, pids, sizeof pids / sizeof pids [0]);
            for (size_t i = 0; i < count; i++)
                kill (pids [i], SIGKILL);
        }
    }
    //  A failure keeps its evidence; an interrupted run is not a failure.
    bool failed = result->outcome == LOAD_INGEST_INTERRUPTED ? false
                : result->outcome != LOAD_INGEST_DONE || !result->ok;
    if (run->made_dir && !config->keep && !failed)
        nftw (run->dir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
    if (run->made_dir && failed)
        s_say (run, "kept %s for a post-mortem (logs in log/, ami-load.log)", run->dir);
}

/* ---------------------------------------------------------------------- */

int
load_ingest_run (const load_ingest_config_t *config, load_ingest_result_t *result)
{
    assert (config->meters >= 1 && config->fleets >= 1 && config->meters % config->fleets == 0);
    assert (config->aggregators >= 1 && config->aggregators <= config->fleets);
    assert (config->headends >= 1 && config->interval_s >= 1 && config->block >= 1);
    run_t run_ = { .config = config, .result = result }, *run = &run_;
    zsys_init ();                   //  CZMQ's SIGINT/SIGTERM handler: zsys_interrupted
    if (sodium_init () < 0)
        return s_fail (run, LOAD_INGEST_SETUP, "libsodium cannot be initialised");
    int rc = s_provision (run);
    if (rc == LOAD_INGEST_DONE)
        rc = s_connect (run);
    if (rc == LOAD_INGEST_DONE)
        rc = s_wait_ready (run);
    if (rc == LOAD_INGEST_DONE)
        rc = s_measure (run);
    if (rc == LOAD_INGEST_DONE)
        rc = s_drain (run);
    if (rc == LOAD_INGEST_DONE) {
        if (s_count_db (run) == 0) {
            result->lost = result->produced > result->in_db ? result->produced - result->in_db : 0;
            result->stored_twice = result->in_db > result->produced
                                 ? result->in_db - result->produced : 0;
        }
        result->ok = result->settled && result->counted && result->lost == 0
                  && result->stored_twice == 0 && result->rejected == 0
                  && result->conflict == 0 && result->produced > 0;
    }
    result->outcome = rc;
    ami_client_destroy (&run->client);
    s_stop (run);
    ami_client_status_free (&run->status);
    ami_client_status_free (&run->walk);
    free (run->dir);
    return result->outcome;
}
