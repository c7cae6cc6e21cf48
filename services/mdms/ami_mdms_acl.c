/*  ami_mdms_acl.c - the operator role table (see ami_mdms_acl.h). */
#include "ami_mdms_acl.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "ami_err.h"
#include "ami_msg.h"

#define S_ALL (AMI_MDMS_ROLE_VIEWER | AMI_MDMS_ROLE_OPERATOR \
             | AMI_MDMS_ROLE_SECADM | AMI_MDMS_ROLE_AUDITOR)

typedef struct {
    int action;
    unsigned roles;             /* mask of roles that hold the action */
    bool implemented;
} s_grant_t;

/*  THE table. Index = ami_action_t. */
static const s_grant_t s_grants [AMI_ACT_MAX + 1] = {
    { 0,                    0,                      false },
    { AMI_ACT_READ,         AMI_MDMS_ROLE_OPERATOR, true  },
    { AMI_ACT_HISTORY,      S_ALL,                  true  },
    { AMI_ACT_METERS,       S_ALL,                  true  },
    { AMI_ACT_STATUS,       S_ALL,                  true  },
    { AMI_ACT_INTERVALS,    S_ALL,                  true  },
    { AMI_ACT_AUDIT,        AMI_MDMS_ROLE_AUDITOR,  true  },
    { AMI_ACT_VERIFY,       AMI_MDMS_ROLE_OPERATOR | AMI_MDMS_ROLE_AUDITOR, true },
    { AMI_ACT_CUSTOMER,     AMI_MDMS_ROLE_OPERATOR, true  },
    { AMI_ACT_AUDIT_VERIFY, AMI_MDMS_ROLE_AUDITOR,  true  },
    //  SEC-INT-5: a read that also asks for interval data again: as READ
    { AMI_ACT_RECOVER,      AMI_MDMS_ROLE_OPERATOR, true  },
};

static const struct {
    const char *name;
    unsigned bit;
} s_roles [] = {
    { "VIEWER",   AMI_MDMS_ROLE_VIEWER },
    { "OPERATOR", AMI_MDMS_ROLE_OPERATOR },
    { "SECADM",   AMI_MDMS_ROLE_SECADM },
    { "AUDITOR",  AMI_MDMS_ROLE_AUDITOR },
};

unsigned
ami_mdms_role_parse (const char *name)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof s_roles / sizeof s_roles [0]; i++)
        if (strcmp (name, s_roles [i].name) == 0)
            return s_roles [i].bit;
    return 0;
}

int
ami_mdms_acl_check (const char *role, int action, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (action < 1 || action > AMI_ACT_MAX) {
        *why = "unknown action";
        return AMI_E_BAD_REQUEST;
    }
    //  a row out of place would grant one action's roles to another
    assert (s_grants [action].action == action);
    if (!s_grants [action].implemented) {
        *why = "not implemented yet";
        return AMI_E_BAD_REQUEST;
    }
    unsigned bit = ami_mdms_role_parse (role);
    if (!bit) {
        *why = "operator certificate has no valid ami-role";
        return AMI_E_DENIED;
    }
    if (!(s_grants [action].roles & bit)) {
        *why = "role does not hold this action";
        return AMI_E_DENIED;
    }
    *why = "allowed";
    return AMI_OK;
}
