//! Capability lists as a pod spec or a policy writes them, normalised once,
//! and containerd's add/drop algorithm: the only place either is written.
//! The CRI spec builder, the policy facts and the policy engine all use it,
//! so CEL sees exactly the names the kernel gets (issue 12 item 5).

use super::names::{CapName, CapParseError, Capability};
use super::set::CapSet;

/// One list (`add`, `drop`, ambient, a policy action) after normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapList {
    /// The list held `ALL` (in any spelling).
    pub all: bool,
    /// The named capabilities, without the `ALL` expansion.
    pub named: CapSet,
}

impl CapList {
    /// Parses every name; the first unknown one is the error.
    pub fn parse<I, S>(names: I) -> Result<CapList, CapParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = CapList::default();
        for name in names {
            match name.as_ref().parse::<CapName>()? {
                CapName::All => list.all = true,
                CapName::One(c) => {
                    list.named.insert(c);
                }
            }
        }
        Ok(list)
    }

    /// What the list stands for: every capability if it held `ALL`.
    pub fn expanded(self) -> CapSet {
        if self.all { CapSet::all() } else { self.named }
    }
}

/// Canonical names (`SYS_ADMIN`, no prefix, kernel bit order): the form CEL
/// sees, so a rule compares against one spelling only.
pub fn canonical_names(set: CapSet) -> Vec<String> {
    set.iter().map(|c| c.short_name().to_string()).collect()
}

/// Docker's (and containerd's CRI plugin's) default capability set. It keeps
/// `CAP_AUDIT_WRITE` so that `su`/`login` can write their audit record:
/// without it PAM fails with "System error" (DESIGN.md, failure 5).
pub fn docker_default_capabilities() -> CapSet {
    use Capability::*;
    CapSet::from_iter([
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ])
}

/// Every capability this model knows (0..=CAP_LAST_CAP); what `privileged`
/// and `ALL` mean.
pub fn all_capabilities() -> CapSet {
    CapSet::all()
}

/// containerd's computation of a container's bounding set from its CRI
/// lists: privileged means every capability; otherwise Docker's 14, then
/// `ALL` in add, then `ALL` in drop (so drop ALL wins over add ALL), then
/// each named add, then each named drop.
pub fn container_bounding(privileged: bool, add: CapList, drop: CapList) -> CapSet {
    if privileged {
        return all_capabilities();
    }
    let mut set = docker_default_capabilities();
    if add.all {
        set = all_capabilities();
    }
    if drop.all {
        set = CapSet::empty();
    }
    set.union(add.named).difference(drop.named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> CapList {
        CapList::parse(names).unwrap()
    }

    #[test]
    fn docker_default_has_fourteen_including_audit_write() {
        let set = docker_default_capabilities();
        assert_eq!(set.len(), 14);
        assert!(set.contains(Capability::AuditWrite));
        assert!(!set.contains(Capability::SysAdmin));
        assert_eq!(all_capabilities().len(), 41);
    }

    /// Every spelling of one capability and of ALL normalises to the same
    /// thing; anything else is the one error naming the name.
    #[test]
    fn every_spelling_normalises_once() {
        for s in [
            "SYS_ADMIN",
            "sys_admin",
            " SYS_ADMIN",
            "SYS_ADMIN ",
            "\tsys_admin\n",
            "CAP_SYS_ADMIN",
            "cap_sys_admin",
            "Cap_Sys_Admin",
            " cap_SYS_admin ",
        ] {
            assert_eq!(
                list(&[s]).named,
                CapSet::from_iter([Capability::SysAdmin]),
                "{s:?}"
            );
            assert!(!list(&[s]).all, "{s:?}");
        }
        for s in ["ALL", "all", " All ", "CAP_ALL", "cap_all"] {
            assert!(list(&[s]).all, "{s:?}");
            assert_eq!(list(&[s]).expanded(), CapSet::all(), "{s:?}");
        }
        for s in [
            "",
            " ",
            "SYS ADMIN",
            "SYSADMIN",
            "CAP_",
            "CAP_CAP_SYS_ADMIN",
            "sys_admin,",
            "ALL_CAPS",
            "CAP_SYS_ADMIN\0",
        ] {
            let err = CapList::parse([s]).unwrap_err();
            assert_eq!(err.name, s);
            let text = err.to_string();
            assert!(
                text.contains(&format!("{s:?}"))
                    && text.contains("SYS_ADMIN")
                    && text.contains("CAP_ prefix"),
                "{text}"
            );
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn add_drop_table() {
        use Capability::*;
        // (add, drop, privileged, size, must contain, must lack)
        let cases: Vec<(
            &[&str],
            &[&str],
            bool,
            usize,
            Vec<Capability>,
            Vec<Capability>,
        )> = vec![
            (&[], &[], false, 14, vec![Chown], vec![SysAdmin]),
            (&["NET_ADMIN"], &[], false, 15, vec![NetAdmin], vec![]),
            (
                &["CAP_SYS_TIME"],
                &["KILL"],
                false,
                14,
                vec![SysTime],
                vec![Kill],
            ),
            (&[], &["ALL"], false, 0, vec![], vec![Chown]),
            (
                &["NET_BIND_SERVICE"],
                &["ALL"],
                false,
                1,
                vec![NetBindService],
                vec![],
            ),
            (&["sys_admin"], &["all"], false, 1, vec![SysAdmin], vec![]),
            (&["ALL"], &[], false, 41, vec![SysAdmin], vec![]),
            (&[" all "], &[], false, 41, vec![SysAdmin], vec![]),
            (
                &["ALL"],
                &["SYS_ADMIN"],
                false,
                40,
                vec![Bpf],
                vec![SysAdmin],
            ),
            (&["ALL"], &["ALL"], false, 0, vec![], vec![Chown]),
            (
                &["SYS_ADMIN"],
                &["cap_sys_admin"],
                false,
                14,
                vec![],
                vec![SysAdmin],
            ),
            (&[], &["ALL"], true, 41, vec![CheckpointRestore], vec![]),
        ];
        for (add, drop, privileged, size, has, lacks) in cases {
            let set = container_bounding(privileged, list(add), list(drop));
            assert_eq!(
                set.len(),
                size,
                "add={add:?} drop={drop:?} privileged={privileged}"
            );
            for c in has {
                assert!(
                    set.contains(c),
                    "{c:?} missing for add={add:?} drop={drop:?}"
                );
            }
            for c in lacks {
                assert!(
                    !set.contains(c),
                    "{c:?} present for add={add:?} drop={drop:?}"
                );
            }
        }
    }

    #[test]
    fn canonical_names_have_no_prefix() {
        let set = CapSet::from_iter([Capability::SysAdmin, Capability::Chown]);
        assert_eq!(canonical_names(set), vec!["CHOWN", "SYS_ADMIN"]);
    }
}
