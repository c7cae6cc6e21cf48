/*  amictl_client.c - see amictl_client.h: the aliases of ami_client_*
    that tests/unit/test_keygen.c still includes by path. Nothing here is
    used by amictl itself. */
#include "amictl_client.h"
