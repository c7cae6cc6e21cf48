#!/bin/sh
# deploy/demo.sh - start or stop the demo deployment (make demo / make stop).
#
# The services arrive with the on-demand read work (issue 3); until then the
# demo says so plainly instead of pretending.
set -eu
case "${1:-}" in
    start)
        echo "ami-bus: the library, codec and tests are built (see 'make test')."
        echo "ami-bus: the services (meter, aggregator, head end, broker, MDMS) and"
        echo "         amictl come in the next step; 'make demo' will then start the"
        echo "         default topology under supervisord and perform a read."
        ;;
    stop)
        echo "ami-bus: nothing is running."
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
