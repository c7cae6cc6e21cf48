/*  ami-faultrelay - a fault-injecting TCP relay for the fault suite.
    The command line and signals around faultrelay.c (faultrelay.h is the
    manual; tools/ami-faultrelay/README.md shows how the suite uses it). */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ami_log.h"
#include "faultrelay.h"

#define EXIT_USAGE 2

//  The relay the signal handlers talk to (set once, before they are installed)
static faultrelay_t *s_relay;

static void
s_usage (FILE *out)
{
    fprintf (out,
"usage: ami-faultrelay --listen HOST:PORT --to HOST:PORT [--delay MS] [--jitter MS]\n"
"                      [--rate BYTES_PER_S] [--control PATH] [--control-port P]\n"
"                      [--max-conns N] [-v]\n"
"       ami-faultrelay ctl (--control PATH | --control-port P) COMMAND [ARG...]\n"
"       ami-faultrelay --help\n"
"\n"
"Relay TCP connections from --listen to --to (one upstream connection per\n"
"accepted one), injecting network faults that can be changed while it runs.\n"
"For tests: this kernel has no tc netem. The bytes are never looked at.\n"
"\n"
"  --listen ADDR       where to accept: HOST:PORT, [IPV6]:PORT, :PORT or PORT\n"
"                      (HOST defaults to %s; PORT 0 = any free port, logged)\n"
"  --to ADDR           where to connect for each accepted connection\n"
"  --delay MS          hold each chunk MS milliseconds, each way [0]\n"
"  --jitter MS         ... plus or minus up to MS (order is kept) [0]\n"
"  --rate B            at most B bytes per second each way, per connection;\n"
"                      0 = unlimited [0]\n"
"  --control PATH      control commands on a UNIX socket at PATH (mode 0600)\n"
"  --control-port P    control commands on 127.0.0.1:P (0 = any free port, logged)\n"
"  --max-conns N       relayed connections at once, 1..%d [%d]; more wait in\n"
"                      the listen backlog\n"
"  -v, --verbose       debug logging (every connection)\n"
"\n"
"Control commands (one per line, one reply line each: OK, ERR ..., or stats):\n"
"  delay MS [JITTER]   jitter MS   rate B   stall   resume   reset   refuse\n"
"  pass   stats   help   quit\n"
"  e.g.  ami-faultrelay ctl --control PATH stall\n"
"\n"
"ctl: send one control command to a running relay and print its reply line\n"
"(for scripts; exit 0 on OK or stats, 1 on ERR or no answer within 5 s).\n"
"\n"
"Signals: SIGUSR1 toggles stall/resume, SIGUSR2 resets every connection,\n"
"SIGTERM/SIGINT stop the relay (open connections are reset).\n"
"Memory: at most %d KiB held per direction of each connection.\n"
"\n"
"exit status: 0 stopped by a signal; 1 could not start (logged); 2 usage error\n",
             FAULTRELAY_DEFAULT_HOST, FAULTRELAY_MAX_CONNS_LIMIT,
             FAULTRELAY_MAX_CONNS_DEFAULT, FAULTRELAY_BUFFER_MAX / 1024);
}

static int
s_usage_error (const char *fmt, const char *arg)
{
    fputs ("ami-faultrelay: ", stderr);
    fprintf (stderr, fmt, arg);
    fputs ("\n(see ami-faultrelay --help)\n", stderr);
    return EXIT_USAGE;
}

//  Why 5 s: a relay answers at once; this only bounds a stuck one
#define CTL_TIMEOUT_MS 5000

//  ami-faultrelay ctl: one command, one reply line on stdout
static int
s_ctl (int argc, char **argv)
{
    const char *path = NULL;
    long long port = -1;
    int i = 0;
    while (i < argc && strncmp (argv [i], "--", 2) == 0) {
        if (i + 1 >= argc)
            return s_usage_error ("%s needs a value", argv [i]);
        if (strcmp (argv [i], "--control") == 0)
            path = argv [i + 1];
        else
        if (strcmp (argv [i], "--control-port") == 0) {
            if (faultrelay_number (argv [i + 1], 65535, &port) || port == 0)
                return s_usage_error ("--control-port: not a port 1..65535: %s", argv [i + 1]);
        }
        else
            return s_usage_error ("ctl: unknown option '%s'", argv [i]);
        i += 2;
    }
    if (!path == (port < 0))
        return s_usage_error ("%s", "ctl: give exactly one of --control PATH, --control-port P");
    if (i >= argc)
        return s_usage_error ("%s", "ctl: no command");
    char line [FAULTRELAY_CONTROL_LINE];
    size_t len = 0;
    for (; i < argc; i++) {
        int n = snprintf (line + len, sizeof line - len, "%s%s", len ? " " : "", argv [i]);
        if (n < 0 || (size_t) n >= sizeof line - len - 1)
            return s_usage_error ("%s", "ctl: command too long");
        len += (size_t) n;
    }
    line [len++] = '\n';

    int fd;
    if (path) {
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        if (strlen (path) >= sizeof addr.sun_path)
            return s_usage_error ("ctl: control socket path too long: %s", path);
        strcpy (addr.sun_path, path);
        fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect (fd, (struct sockaddr *) &addr, sizeof addr)) {
            fprintf (stderr, "ami-faultrelay: ctl: %s: %s\n", path, strerror (errno));
            close (fd);
            return EXIT_FAILURE;
        }
    }
    else {
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                                    .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
        fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect (fd, (struct sockaddr *) &addr, sizeof addr)) {
            fprintf (stderr, "ami-faultrelay: ctl: 127.0.0.1:%lld: %s\n", port, strerror (errno));
            close (fd);
            return EXIT_FAILURE;
        }
    }
    if (fd < 0 || send (fd, line, len, MSG_NOSIGNAL) != (ssize_t) len) {
        fprintf (stderr, "ami-faultrelay: ctl: %s\n", strerror (errno));
        if (fd >= 0)
            close (fd);
        return EXIT_FAILURE;
    }
    char reply [FAULTRELAY_CONTROL_LINE * 2];
    size_t got = 0;
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    long long deadline = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 + CTL_TIMEOUT_MS;
    bool complete = false;
    while (!complete && got < sizeof reply - 1) {
        clock_gettime (CLOCK_MONOTONIC, &ts);
        long long left = deadline - (ts.tv_sec * 1000LL + ts.tv_nsec / 1000000);
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        if (left <= 0 || poll (&pfd, 1, (int) left) != 1)
            break;
        ssize_t rc = recv (fd, reply + got, sizeof reply - 1 - got, 0);
        if (rc <= 0)
            break;
        got += (size_t) rc;
        complete = memchr (reply, '\n', got) != NULL;
    }
    close (fd);
    reply [got] = '\0';
    if (!complete) {
        fprintf (stderr, "ami-faultrelay: ctl: no answer from the relay\n");
        return EXIT_FAILURE;
    }
    *strchr (reply, '\n') = '\0';
    puts (reply);
    return strncmp (reply, "ERR", 3) == 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

static void
s_on_signal (int signum)
{
    if (!s_relay)
        return;
    if (signum == SIGUSR1)
        faultrelay_toggle_stall (s_relay);
    else
    if (signum == SIGUSR2)
        faultrelay_signal_reset (s_relay);
    else
        faultrelay_stop (s_relay);
}

int
main (int argc, char **argv)
{
    faultrelay_config_t config;
    faultrelay_config_default (&config);
    bool verbose = false;
    if (argc > 1 && strcmp (argv [1], "ctl") == 0)
        return s_ctl (argc - 2, argv + 2);

    for (int i = 1; i < argc; i++) {
        const char *arg = argv [i];
        if (strcmp (arg, "-h") == 0 || strcmp (arg, "--help") == 0) {
            s_usage (stdout);
            return EXIT_SUCCESS;
        }
        if (strcmp (arg, "-v") == 0 || strcmp (arg, "--verbose") == 0) {
            verbose = true;
            continue;
        }
        if (strncmp (arg, "--", 2) != 0)
            return s_usage_error ("unexpected argument '%s'", arg);
        if (i + 1 >= argc)
            return s_usage_error ("%s needs a value", arg);
        const char *value = argv [++i];
        long long n = 0;
        if (strcmp (arg, "--listen") == 0)
            config.listen = value;
        else
        if (strcmp (arg, "--to") == 0)
            config.to = value;
        else
        if (strcmp (arg, "--control") == 0)
            config.control_path = value;
        else
        if (strcmp (arg, "--delay") == 0 || strcmp (arg, "--jitter") == 0) {
            if (faultrelay_number (value, FAULTRELAY_DELAY_MAX_MS, &n)) {
                fprintf (stderr, "ami-faultrelay: %s: not a number of milliseconds in "
                                 "0..%d: %s\n", arg, FAULTRELAY_DELAY_MAX_MS, value);
                return s_usage_error ("%s", "bad value");
            }
            if (arg [2] == 'd')
                config.delay_ms = (int) n;
            else
                config.jitter_ms = (int) n;
        }
        else
        if (strcmp (arg, "--rate") == 0) {
            if (faultrelay_number (value, 1000000000000LL, &n))
                return s_usage_error ("--rate: not a number of bytes per second: %s", value);
            config.rate = n;
        }
        else
        if (strcmp (arg, "--control-port") == 0) {
            if (faultrelay_number (value, 65535, &n))
                return s_usage_error ("--control-port: not a port 0..65535: %s", value);
            config.control_port = (int) n;
        }
        else
        if (strcmp (arg, "--max-conns") == 0) {
            if (faultrelay_number (value, FAULTRELAY_MAX_CONNS_LIMIT, &n) || n < 1)
                return s_usage_error ("--max-conns: not a number in 1..4096: %s", value);
            config.max_conns = (int) n;
        }
        else
            return s_usage_error ("unknown option '%s'", arg);
    }
    if (!config.listen)
        return s_usage_error ("%s is required", "--listen");
    if (!config.to)
        return s_usage_error ("%s is required", "--to");
    char host [256];
    int port;
    if (faultrelay_parse_address (config.listen, host, sizeof host, &port))
        return s_usage_error ("--listen: not HOST:PORT: %s", config.listen);
    if (faultrelay_parse_address (config.to, host, sizeof host, &port) || port == 0)
        return s_usage_error ("--to: not HOST:PORT (PORT 1..65535): %s", config.to);

    ami_log_init ("ami-faultrelay", NULL, verbose ? AMI_LOG_DEBUG : AMI_LOG_INFO);
    s_relay = faultrelay_new (&config);
    if (!s_relay)
        return EXIT_FAILURE;

    //  Installed after ami_log_init, which set CZMQ's own SIGINT/SIGTERM
    //  handler: ours replace it (the loop is not a ZeroMQ loop).
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGTERM, &action, NULL);
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGUSR1, &action, NULL);
    sigaction (SIGUSR2, &action, NULL);
    signal (SIGPIPE, SIG_IGN);

    int rc = faultrelay_run (s_relay);
    ami_log_info ("stopping");
    faultrelay_t *relay = s_relay;
    s_relay = NULL;
    faultrelay_destroy (&relay);
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
