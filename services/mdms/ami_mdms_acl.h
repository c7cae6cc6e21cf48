/*  ami_mdms_acl.h - which operator role may do which MDMS API action.

    The one place that grants operator actions (SEC-AUTHZ-1). Operator
    roles follow IEC 62351-8: each operator certificate carries metadata
    "ami-role" = VIEWER | OPERATOR | SECADM | AUDITOR (ami-keygen writes it;
    the MDMS reads it from the allow-list copy of the certificate through
    ami_auth_peer_meta, so an operator cannot choose it). The table lives
    in ami_mdms_acl.c; the security work extends it there (and flips
    "implemented" as actions are built).

    Current grants:
        read            OPERATOR
        history         VIEWER OPERATOR SECADM AUDITOR
        intervals       VIEWER OPERATOR SECADM AUDITOR  (stored interval data,
                                               like history)
        meters          VIEWER OPERATOR SECADM AUDITOR
        status          VIEWER OPERATOR SECADM AUDITOR
        verify          OPERATOR AUDITOR       (re-verify stored readings)
        audit           AUDITOR                (list the audit log)
        audit-verify    AUDITOR                (re-verify the audit chain)
        customer        OPERATOR               (decrypted customer record)
        recover         OPERATOR               (a read that also asks the meter
                                               to send interval data again,
                                               SEC-INT-5: as read)
    SECADM holds no action of its own yet: key provisioning, rotation and
    revocation are done with ami-keygen on the key host, not over the API.
    Every refusal is answered ERROR AMI_E_DENIED, logged and appended to
    the audit log by the MDMS (SEC-AUTHZ-1, SEC-AUD-1).
*/
#ifndef AMI_MDMS_ACL_H_INCLUDED
#define AMI_MDMS_ACL_H_INCLUDED

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/*  Metadata name of the operator role in an operator certificate. */
#define AMI_MDMS_META_AMI_ROLE  "ami-role"

/*  Operator roles as bits, so a grant is a mask. */
#define AMI_MDMS_ROLE_VIEWER    0x01
#define AMI_MDMS_ROLE_OPERATOR  0x02
#define AMI_MDMS_ROLE_SECADM    0x04
#define AMI_MDMS_ROLE_AUDITOR   0x08

/*  Role bit of a role name (exact, upper case), or 0 for NULL or unknown. */
unsigned
    ami_mdms_role_parse (const char *name);

/*  May an operator with role name `role` (metadata "ami-role", may be NULL)
    perform API action `action` (ami_action_t)? Returns:
      AMI_OK             yes;
      AMI_E_DENIED       the role does not hold the action, or the role is
                         missing or unknown;
      AMI_E_BAD_REQUEST  the action is not a valid action, or not
                         implemented yet (*why, if not NULL, says which). */
int
    ami_mdms_acl_check (const char *role, int action, const char **why);

#ifdef __cplusplus
}
#endif

#endif
