//! The uid, gid and supplementary groups of the container process.
//!
//! containerd builds a "user[:group]" string from the CRI security context
//! (or, failing that, the image USER) and resolves names against the
//! image's own /etc/passwd and /etc/group, never the host's: a name means
//! what the image says it means. The caller reads those two files; this
//! module only parses them.

use k8s_cri::v1::{ContainerConfig, SupplementalGroupsPolicy};
use oci_spec::image::Config as ImageConfig;

use super::{SpecError, security_context};

/// Contents of the image rootfs /etc/passwd and /etc/group (None: absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageUserDb<'a> {
    pub passwd: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// The identity the container process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, without duplicates, and holding the primary gid: containerd
    /// since 1.6.18 adds it since CVE-2023-25173 (a process whose primary group
    /// was missing from its supplementary list could bypass group-deny
    /// permissions after a setgid).
    pub additional_gids: Vec<u32>,
    /// The passwd name of the user, when the image has one.
    pub username: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    data_lines(passwd).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    data_lines(group).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members,
        })
    })
}

fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn id_from_i64(value: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| {
        SpecError::invalid(
            field,
            format!("{value} is not a valid Linux id (0..=4294967295); set a non-negative id"),
        )
    })
}

fn absent_detail(file: Option<&str>) -> String {
    if file.is_none() {
        " (the image has no such file)".to_string()
    } else {
        String::new()
    }
}

/// Resolves the user of the container process like containerd's
/// `WithUser` + `WithAdditionalGIDs` + `WithSupplementalGroups`.
pub fn resolve_user(
    container: &ContainerConfig,
    image: Option<&ImageConfig>,
    users: &ImageUserDb,
) -> Result<ResolvedUser, SpecError> {
    let sc = security_context(container);
    let mut user_part: Option<String> = None;
    let mut group_part: Option<String> = None;
    let mut source = "security_context.run_as_user";
    if let Some(sc) = sc {
        if !sc.run_as_username.is_empty() {
            user_part = Some(sc.run_as_username.clone());
            source = "security_context.run_as_username";
        } else if let Some(uid) = &sc.run_as_user {
            user_part = Some(id_from_i64(uid.value, "security_context.run_as_user")?.to_string());
        }
        if let Some(gid) = &sc.run_as_group {
            if user_part.is_none() {
                // kubelet never sends this; containerd rejects it and critest
                // checks the rejection ("run_as_group without run_as_user").
                return Err(SpecError::invalid(
                    "security_context.run_as_group",
                    "a group is set without a user; set run_as_user or run_as_username too",
                ));
            }
            group_part = Some(id_from_i64(gid.value, "security_context.run_as_group")?.to_string());
        }
    }
    if user_part.is_none()
        && let Some(image_user) = image
            .and_then(|i| i.user().clone())
            .filter(|u| !u.is_empty())
    {
        source = "image config USER";
        match image_user.split_once(':') {
            Some((u, g)) => {
                user_part = Some(u.to_string());
                group_part = Some(g.to_string());
            }
            None => user_part = Some(image_user),
        }
    }
    let user_part = user_part.unwrap_or_else(|| "0".to_string());
    if user_part.is_empty() {
        return Err(SpecError::invalid(
            source,
            "the user part of \"user:group\" is empty; name a user",
        ));
    }

    let passwd = users.passwd.unwrap_or("");
    let (uid, passwd_gid, username) = match user_part.parse::<u32>() {
        Ok(uid) => match passwd_entries(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.to_string())),
            // A uid without a passwd entry is legal; its group is root's.
            None => (uid, 0, None),
        },
        Err(_) => match passwd_entries(passwd).find(|e| e.name == user_part) {
            Some(e) => (e.uid, e.gid, Some(e.name.to_string())),
            None => {
                return Err(SpecError::UnknownUser {
                    user: user_part,
                    source_field: source.to_string(),
                    detail: absent_detail(users.passwd),
                });
            }
        },
    };

    let group_text = users.group.unwrap_or("");
    let gid = match group_part {
        None => passwd_gid,
        Some(g) if g.is_empty() => {
            return Err(SpecError::invalid(
                source,
                "the group part of \"user:group\" is empty; name a group or drop the colon",
            ));
        }
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match group_entries(group_text).find(|e| e.name == g) {
                Some(e) => e.gid,
                None => {
                    return Err(SpecError::UnknownGroup {
                        group: g,
                        source_field: source.to_string(),
                        detail: absent_detail(users.group),
                    });
                }
            },
        },
    };

    let mut additional = vec![gid];
    let strict =
        sc.is_some_and(|sc| sc.supplemental_groups_policy() == SupplementalGroupsPolicy::Strict);
    if !strict && let Some(name) = &username {
        // Merge policy: the groups that list the user in the image's
        // /etc/group (a group named like the user is its primary one).
        additional.extend(
            group_entries(group_text)
                .filter(|e| e.name != name && e.members.iter().any(|m| m == name))
                .map(|e| e.gid),
        );
    }
    if let Some(sc) = sc {
        for g in &sc.supplemental_groups {
            additional.push(id_from_i64(*g, "security_context.supplemental_groups")?);
        }
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
        username,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{Int64Value, LinuxContainerConfig, LinuxContainerSecurityContext};

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nnginx:x:101:101::/:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nnginx:x:101:\nalice:x:1000:alice\nwheel:x:10:root,alice\naudio:x:29:alice, nginx\n";

    fn db() -> ImageUserDb<'static> {
        ImageUserDb {
            passwd: Some(PASSWD),
            group: Some(GROUP),
        }
    }

    fn ctr(sc: Option<LinuxContainerSecurityContext>) -> ContainerConfig {
        ContainerConfig {
            linux: sc.map(|sc| LinuxContainerConfig {
                resources: None,
                security_context: Some(sc),
            }),
            ..Default::default()
        }
    }

    fn img_user(u: &str) -> ImageConfig {
        let mut c = ImageConfig::default();
        c.set_user(Some(u.to_string()));
        c
    }

    #[test]
    fn image_user_table() {
        // (image USER, uid, gid, additional)
        let cases: Vec<(&str, u32, u32, Vec<u32>)> = vec![
            ("", 0, 0, vec![0, 10]),
            ("0", 0, 0, vec![0, 10]),
            ("1000", 1000, 1000, vec![10, 29, 1000]),
            ("alice", 1000, 1000, vec![10, 29, 1000]),
            ("nginx", 101, 101, vec![29, 101]),
            ("alice:wheel", 1000, 10, vec![10, 29]),
            ("1000:500", 1000, 500, vec![10, 29, 500]),
            ("4242", 4242, 0, vec![0]),
            ("4242:7", 4242, 7, vec![7]),
        ];
        for (user, uid, gid, extra) in cases {
            let r = resolve_user(&ctr(None), Some(&img_user(user)), &db()).unwrap();
            assert_eq!(
                (r.uid, r.gid, r.additional_gids.clone()),
                (uid, gid, extra),
                "USER {user:?}"
            );
        }
    }

    #[test]
    fn unknown_names_fail_with_the_name() {
        let err = resolve_user(&ctr(None), Some(&img_user("bob")), &db()).unwrap_err();
        assert!(matches!(&err, SpecError::UnknownUser { user, .. } if user == "bob"));
        assert!(err.to_string().contains("/etc/passwd"));
        let err = resolve_user(&ctr(None), Some(&img_user("alice:nogroup")), &db()).unwrap_err();
        assert!(matches!(&err, SpecError::UnknownGroup { group, .. } if group == "nogroup"));
        let none = ImageUserDb::default();
        let err = resolve_user(&ctr(None), Some(&img_user("alice")), &none).unwrap_err();
        assert!(err.to_string().contains("has no such file"));
    }

    #[test]
    fn security_context_overrides_image() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 101 }),
            ..Default::default()
        };
        let r = resolve_user(&ctr(Some(sc)), Some(&img_user("alice")), &db()).unwrap();
        assert_eq!(
            (r.uid, r.gid, r.username.as_deref()),
            (101, 101, Some("nginx"))
        );

        let sc = LinuxContainerSecurityContext {
            run_as_username: "alice".into(),
            run_as_group: Some(Int64Value { value: 29 }),
            ..Default::default()
        };
        let r = resolve_user(&ctr(Some(sc)), None, &db()).unwrap();
        assert_eq!((r.uid, r.gid), (1000, 29));
    }

    #[test]
    fn run_as_group_without_user_is_rejected() {
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 5 }),
            ..Default::default()
        };
        let err = resolve_user(&ctr(Some(sc)), Some(&img_user("alice")), &db()).unwrap_err();
        assert!(
            matches!(err, SpecError::InvalidConfig { ref field, .. } if field == "security_context.run_as_group")
        );
    }

    #[test]
    fn negative_ids_are_rejected() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: -1 }),
            ..Default::default()
        };
        assert!(resolve_user(&ctr(Some(sc)), None, &db()).is_err());
    }

    #[test]
    fn supplemental_groups_merge_and_strict() {
        let mut sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![5000, 10],
            ..Default::default()
        };
        let r = resolve_user(&ctr(Some(sc.clone())), None, &db()).unwrap();
        assert_eq!(r.additional_gids, vec![10, 29, 1000, 5000]);
        sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        let r = resolve_user(&ctr(Some(sc)), None, &db()).unwrap();
        assert_eq!(r.additional_gids, vec![10, 1000, 5000]);
    }
}
