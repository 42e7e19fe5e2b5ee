//! The kernel's transformation of capabilities during execve(), as written in
//! capabilities(7) and implemented by `cap_bprm_creds_from_file` in
//! security/commoncap.c. Default securebits are assumed (no
//! SECBIT_NOROOT, no SECBIT_NO_SETUID_FIXUP), which is what containers get.

use thiserror::Error;

use super::filecaps::FileCaps;
use super::set::{CapSet, ThreadCaps};

/// Who runs the execve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecIdentity {
    /// Real uid of the calling process.
    pub ruid: u32,
    /// Effective uid of the calling process.
    pub euid: u32,
    /// The binary is set-user-ID (mode 04000): its owner's uid.
    pub setuid: Option<u32>,
    /// The binary is set-group-ID (mode 02010) and its group is not the
    /// process's: the effective gid changes.
    pub setgid: bool,
}

impl ExecIdentity {
    /// A process whose real and effective uid are both `uid`.
    pub fn uid(uid: u32) -> ExecIdentity {
        ExecIdentity {
            ruid: uid,
            euid: uid,
            setuid: None,
            setgid: false,
        }
    }
}

/// Why the kernel would fail the execve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecveError {
    /// `bprm_caps_from_vfs_caps`: a file with the effective bit whose
    /// permitted capabilities are not all granted fails with EPERM, so that
    /// a capability-dumb binary never runs without what it needs.
    #[error(
        "execve fails with EPERM: the file capabilities {missing} are not in the bounding set (nor granted through the inheritable set); add them to the container's capabilities or remove them from the file with `setcap -r`"
    )]
    FileCapsNotGranted { missing: CapSet },
    /// The calling thread's sets break the ambient invariant; the kernel
    /// could never have produced them.
    #[error(
        "impossible thread state: ambient capabilities {violations} are not in permitted, inheritable and bounding"
    )]
    AmbientInvariant { violations: CapSet },
}

/// Predicts the thread's capability sets after execve of a binary with
/// `file` capabilities (None: no `security.capability` xattr).
///
/// Follows commoncap.c step by step:
/// 1. `pP' = (X & fP) | (pI & fI)` (zero without file caps); EPERM when fE is
///    set and `fP` is not covered.
/// 2. Root: if the new euid or the real uid is 0, `pP' = X | pI`, and the
///    effective flag is set when the new euid is 0, except for a set-uid-root
///    binary with file caps run by a non-root user.
/// 3. A set-uid execve or a permitted gain under no_new_privs: the euid falls
///    back to the real uid and `pP' &= pP` ("they get no more than they had").
/// 4. File caps or set-uid clear the ambient set; `pP' |= pA'`.
/// 5. `pE' = fE ? pP' : pA'`. Bounding and inheritable are unchanged.
pub fn predict_execve(
    before: &ThreadCaps,
    file: Option<&FileCaps>,
    identity: ExecIdentity,
    no_new_privs: bool,
) -> Result<ThreadCaps, ExecveError> {
    let violations = before.ambient_violations();
    if !violations.is_empty() {
        return Err(ExecveError::AmbientInvariant { violations });
    }
    let bounding = before.bounding;
    let inheritable = before.inheritable;
    let mut permitted = CapSet::empty();
    let mut effective_flag = false;
    if let Some(fc) = file {
        permitted = bounding
            .intersection(fc.permitted)
            .union(inheritable.intersection(fc.inheritable));
        effective_flag = fc.effective;
        let missing = fc.permitted.difference(permitted);
        if fc.effective && !missing.is_empty() {
            return Err(ExecveError::FileCapsNotGranted { missing });
        }
    }

    // bprm_fill_uid: under no_new_privs the set-id bits are ignored
    // altogether (no euid/egid change, so the ambient set survives);
    // otherwise a set-uid binary runs with its owner's euid, a set-gid one
    // with its group's egid.
    let (new_euid, egid_changes) = if no_new_privs {
        (identity.euid, false)
    } else {
        (identity.setuid.unwrap_or(identity.euid), identity.setgid)
    };
    let ruid = identity.ruid;
    let has_fcap = file.is_some();
    let is_suid_root_only = ruid != 0 && new_euid == 0;
    if !(has_fcap && is_suid_root_only) {
        if new_euid == 0 || ruid == 0 {
            permitted = bounding.union(inheritable);
        }
        if new_euid == 0 {
            effective_flag = true;
        }
    }

    // commoncap.c compares the new euid with the old real uid, and the new
    // egid with the old real gid (__is_setuid, __is_setgid).
    let is_setid = new_euid != ruid || egid_changes;
    let gained = !permitted.is_subset(before.permitted);
    if (is_setid || gained) && no_new_privs {
        permitted = permitted.intersection(before.permitted);
    }

    let ambient = if has_fcap || is_setid {
        CapSet::empty()
    } else {
        before.ambient
    };
    let permitted = permitted.union(ambient);
    let effective = if effective_flag { permitted } else { ambient };
    Ok(ThreadCaps {
        bounding,
        effective,
        permitted,
        inheritable,
        ambient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kernel::Capability::*;
    use crate::capabilities::kernel::docker_default_capabilities;

    fn set<const N: usize>(c: [crate::capabilities::kernel::Capability; N]) -> CapSet {
        CapSet::from_iter(c)
    }

    fn fcap(p: CapSet, effective: bool) -> FileCaps {
        FileCaps {
            permitted: p,
            inheritable: CapSet::empty(),
            effective,
            rootid: None,
        }
    }

    struct Case {
        name: &'static str,
        before: ThreadCaps,
        file: Option<FileCaps>,
        id: ExecIdentity,
        nnp: bool,
        want: Result<(CapSet, CapSet, CapSet), ExecveError>, // (P, E, A)
    }

    #[test]
    fn capabilities_7_table() {
        let dflt = docker_default_capabilities();
        let rt = ThreadCaps::runtime_default(dflt);
        let nbs = set([NetBindService]);
        let mut amb = rt;
        amb.inheritable = nbs;
        amb.ambient = nbs;
        let raw = set([NetRaw]);
        let cases = vec![
            Case {
                name: "root keeps bounding as permitted and effective",
                before: rt,
                file: None,
                id: ExecIdentity::uid(0),
                nnp: false,
                want: Ok((dflt, dflt, CapSet::empty())),
            },
            Case {
                name: "non-root without file caps loses everything",
                before: rt,
                file: None,
                id: ExecIdentity::uid(1000),
                nnp: false,
                want: Ok((CapSet::empty(), CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "non-root keeps ambient",
                before: amb,
                file: None,
                id: ExecIdentity::uid(1000),
                nnp: true,
                want: Ok((nbs, nbs, nbs)),
            },
            Case {
                name: "file caps clear ambient",
                before: amb,
                file: Some(fcap(raw, true)),
                id: ExecIdentity::uid(1000),
                nnp: false,
                want: Ok((raw, raw, CapSet::empty())),
            },
            Case {
                name: "file caps without effective bit: permitted only",
                before: rt,
                file: Some(fcap(raw, false)),
                id: ExecIdentity::uid(1000),
                nnp: false,
                want: Ok((raw, CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "file cap outside bounding with effective bit: EPERM",
                before: rt,
                file: Some(fcap(set([NetAdmin, NetRaw]), true)),
                id: ExecIdentity::uid(1000),
                nnp: false,
                want: Err(ExecveError::FileCapsNotGranted {
                    missing: set([NetAdmin]),
                }),
            },
            Case {
                name: "file cap outside bounding without effective bit: silently not granted",
                before: rt,
                file: Some(fcap(set([NetAdmin, NetRaw]), false)),
                id: ExecIdentity::uid(1000),
                nnp: false,
                want: Ok((raw, CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "no_new_privs: file caps limited to the old permitted set",
                before: ThreadCaps {
                    permitted: CapSet::empty(),
                    effective: CapSet::empty(),
                    ..rt
                },
                file: Some(fcap(raw, true)),
                id: ExecIdentity::uid(1000),
                nnp: true,
                want: Ok((CapSet::empty(), CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "no_new_privs first exec after the runtime: file caps still work",
                before: rt,
                file: Some(fcap(raw, true)),
                id: ExecIdentity::uid(1000),
                nnp: true,
                want: Ok((raw, raw, CapSet::empty())),
            },
            Case {
                name: "setuid-root by non-root: full bounding, ambient cleared",
                before: amb,
                file: None,
                id: ExecIdentity {
                    ruid: 1000,
                    euid: 1000,
                    setuid: Some(0),
                    setgid: false,
                },
                nnp: false,
                want: Ok((dflt, dflt, CapSet::empty())),
            },
            Case {
                name: "setuid to a non-root owner: nothing gained, ambient cleared",
                before: amb,
                file: None,
                id: ExecIdentity {
                    ruid: 1000,
                    euid: 1000,
                    setuid: Some(2000),
                    setgid: false,
                },
                nnp: false,
                want: Ok((CapSet::empty(), CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "setgid to another group clears ambient",
                before: amb,
                file: None,
                id: ExecIdentity {
                    ruid: 1000,
                    euid: 1000,
                    setuid: None,
                    setgid: true,
                },
                nnp: false,
                want: Ok((CapSet::empty(), CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "set-id bits are ignored under no_new_privs: ambient kept",
                before: amb,
                file: None,
                id: ExecIdentity {
                    ruid: 1000,
                    euid: 1000,
                    setuid: Some(0),
                    setgid: true,
                },
                nnp: true,
                want: Ok((nbs, nbs, nbs)),
            },
            Case {
                name: "setuid-root under no_new_privs gains nothing",
                before: ThreadCaps {
                    permitted: CapSet::empty(),
                    effective: CapSet::empty(),
                    ..rt
                },
                file: None,
                id: ExecIdentity {
                    ruid: 1000,
                    euid: 1000,
                    setuid: Some(0),
                    setgid: false,
                },
                nnp: true,
                want: Ok((CapSet::empty(), CapSet::empty(), CapSet::empty())),
            },
            Case {
                name: "setuid-root binary with file caps run by non-root: file caps only",
                before: rt,
                file: Some(fcap(raw, true)),
                id: ExecIdentity {
                    ruid: 1000,
                    euid: 1000,
                    setuid: Some(0),
                    setgid: false,
                },
                nnp: false,
                want: Ok((raw, raw, CapSet::empty())),
            },
            Case {
                name: "real uid 0 only: permitted but not effective",
                before: rt,
                file: None,
                id: ExecIdentity {
                    ruid: 0,
                    euid: 1000,
                    setuid: None,
                    setgid: false,
                },
                nnp: false,
                want: Ok((dflt, CapSet::empty(), CapSet::empty())),
            },
        ];
        for case in cases {
            let got = predict_execve(&case.before, case.file.as_ref(), case.id, case.nnp)
                .map(|t| (t.permitted, t.effective, t.ambient));
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn dmz_second_exec_empties_non_root_permitted_under_nnp() {
        // runc's dmz regression: runtime -> trampoline (no file caps) ->
        // coredns (cap_net_bind_service+ep), non-root, no_new_privs.
        let rt = ThreadCaps::runtime_default(docker_default_capabilities());
        let coredns = fcap(set([NetBindService]), true);
        let id = ExecIdentity::uid(65532);
        let direct = predict_execve(&rt, Some(&coredns), id, true);
        assert_eq!(direct.map(|t| t.effective), Ok(set([NetBindService])));
        let after_dmz = predict_execve(&rt, None, id, true);
        let via_dmz = after_dmz.and_then(|t| predict_execve(&t, Some(&coredns), id, true));
        assert_eq!(via_dmz.map(|t| t.effective), Ok(CapSet::empty()));
    }

    #[test]
    fn refuses_impossible_ambient() {
        let mut t = ThreadCaps::runtime_default(set([NetRaw]));
        t.ambient = set([NetRaw]);
        assert!(matches!(
            predict_execve(&t, None, ExecIdentity::uid(1), false),
            Err(ExecveError::AmbientInvariant { .. })
        ));
    }
}
