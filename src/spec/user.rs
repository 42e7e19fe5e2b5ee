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

/// The highest uid or gid capcri runs a process as: 2^31-1, like containerd
/// (`maxUserID = math.MaxInt32` since CVE-2024-40635) and the Kubernetes API
/// (runAsUser is an int32). Above it, 32-bit tools wrap to negatives and
/// 4294967295 is the kernel's "leave unchanged" value for setresuid(2): a
/// process asked to become that uid stays root.
pub const MAX_ID: u32 = i32::MAX as u32;

/// One side of "user[:group]" (image USER, CRI run_as_username).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPart {
    Id(u32),
    Name(String),
}

/// A user string parsed once, by the rules every reader shares: ImageStatus
/// reports what this says, and CreateContainer runs what this says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: IdPart,
    pub group: Option<IdPart>,
}

/// Parses one part strictly. A part made of decimal digits is an id in
/// 0..=MAX_ID; a part that looks numeric but is not such an id ("-1", "+5",
/// " 7", "7 ", "0x10", "1e3", "99999999999") is refused rather than taken
/// for a name: CVE-2024-40635 and this project's issue 12 (USER -1 with a
/// passwd line "-1:x:0:0" was reported as uid -1, non-root, and ran as 0).
/// Names start with a letter, '_' or '.', and hold no blank, control
/// character, ':' or '/'.
pub fn parse_id_part(part: &str, what: &str) -> Result<IdPart, String> {
    if part.is_empty() {
        return Err(format!(
            "the {what} part is empty; name a {what} or give an id"
        ));
    }
    if part.bytes().all(|b| b.is_ascii_digit()) {
        return match part.parse::<u64>() {
            Ok(v) if v <= u64::from(MAX_ID) => Ok(IdPart::Id(v as u32)),
            _ => Err(format!(
                "{what} id {part:?} is out of range; use an id in 0..={MAX_ID}"
            )),
        };
    }
    let first = part.chars().next().unwrap_or(' ');
    if first.is_numeric() || first == '-' || first == '+' {
        return Err(format!(
            "{what} {part:?} looks like a number but is not a decimal id in 0..={MAX_ID}; \
             write the id as plain digits or use a name that starts with a letter"
        ));
    }
    if part
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == ':')
    {
        return Err(format!(
            "{what} {part:?} holds a blank, control character or '/'; \
             write a plain name or a decimal id in 0..={MAX_ID}"
        ));
    }
    Ok(IdPart::Name(part.to_string()))
}

/// Parses "user", "user:group" (each side a name or an id). Refuses empty
/// sides, more than one ':' and numeric-looking non-ids (see `parse_id_part`).
pub fn parse_user_spec(spec: &str) -> Result<UserSpec, String> {
    let mut parts = spec.split(':');
    let user = parse_id_part(parts.next().unwrap_or(""), "user")?;
    let group = parts
        .next()
        .map(|g| parse_id_part(g, "group"))
        .transpose()?;
    if parts.next().is_some() {
        return Err(format!(
            "{spec:?} has more than one ':'; write user or user:group"
        ));
    }
    Ok(UserSpec { user, group })
}

/// An id field of /etc/passwd or /etc/group: plain digits in 0..=MAX_ID, or
/// the line is ignored (Rust's `parse::<u32>` would take "+0").
fn passwd_id(field: &str) -> Option<u32> {
    match parse_id_part(field, "id") {
        Ok(IdPart::Id(id)) => Some(id),
        _ => None,
    }
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    data_lines(passwd).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: passwd_id(f[2])?,
            gid: passwd_id(f[3])?,
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
            gid: passwd_id(f[2])?,
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
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= MAX_ID)
        .ok_or_else(|| {
            SpecError::invalid(
                field,
                format!("{value} is not a valid id; set an id in 0..={MAX_ID}"),
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
    let mut user_part: Option<IdPart> = None;
    let mut group_part: Option<IdPart> = None;
    let mut source = "security_context.run_as_user";
    if let Some(sc) = sc {
        if !sc.run_as_username.is_empty() {
            source = "security_context.run_as_username";
            user_part = Some(
                parse_id_part(&sc.run_as_username, "user")
                    .map_err(|reason| SpecError::invalid(source, reason))?,
            );
        } else if let Some(uid) = &sc.run_as_user {
            user_part = Some(IdPart::Id(id_from_i64(
                uid.value,
                "security_context.run_as_user",
            )?));
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
            group_part = Some(IdPart::Id(id_from_i64(
                gid.value,
                "security_context.run_as_group",
            )?));
        }
    }
    if user_part.is_none()
        && let Some(image_user) = image
            .and_then(|i| i.user().clone())
            .filter(|u| !u.is_empty())
    {
        source = "image config USER";
        let spec = parse_user_spec(&image_user).map_err(|reason| {
            SpecError::invalid(
                source,
                format!(
                    "USER {image_user:?} is refused: {reason}; rebuild the image or set run_as_user"
                ),
            )
        })?;
        user_part = Some(spec.user);
        group_part = spec.group;
    }
    let user_part = user_part.unwrap_or(IdPart::Id(0));

    let passwd = users.passwd.unwrap_or("");
    let (uid, passwd_gid, username) = match user_part {
        IdPart::Id(uid) => match passwd_entries(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name.to_string())),
            // A uid without a passwd entry is legal; its group is root's.
            None => (uid, 0, None),
        },
        IdPart::Name(name) => match passwd_entries(passwd).find(|e| e.name == name) {
            Some(e) => (e.uid, e.gid, Some(e.name.to_string())),
            None => {
                return Err(SpecError::UnknownUser {
                    user: name,
                    source_field: source.to_string(),
                    detail: absent_detail(users.passwd),
                });
            }
        },
    };

    let group_text = users.group.unwrap_or("");
    let gid = match group_part {
        None => passwd_gid,
        Some(IdPart::Id(gid)) => gid,
        Some(IdPart::Name(g)) => match group_entries(group_text).find(|e| e.name == g) {
            Some(e) => e.gid,
            None => {
                return Err(SpecError::UnknownGroup {
                    group: g,
                    source_field: source.to_string(),
                    detail: absent_detail(users.group),
                });
            }
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

    /// Every spelling of a numeric-looking USER that is not a valid id is
    /// refused (CVE-2024-40635 class), for the image USER and for
    /// run_as_username alike; valid ids and names still resolve.
    #[test]
    fn numeric_looking_users_are_refused() {
        let hostile = PASSWD.to_string() + "-1:x:0:0::/:/bin/sh\n+5:x:0:0::/:/bin/sh\n";
        let users = ImageUserDb {
            passwd: Some(&hostile),
            group: Some(GROUP),
        };
        let refused = [
            "-1",
            "-0",
            "+5",
            "+0",
            "4294967295",
            "4294967296",
            "2147483648",
            "99999999999999999999",
            " 1000",
            "1000 ",
            " ",
            "\t0",
            "0x10",
            "0X10",
            "1e3",
            "1_000",
            "１０００",
            "1000:-1",
            "1000:+5",
            "1000:0x10",
            "1000: 7",
            "1000:4294967295",
            "-1:0",
            "alice:-1",
            ":",
            ":0",
            "1000:",
            "alice:",
            "1:2:3",
            "al ice",
            "alice\n",
            "../root",
        ];
        for user in refused {
            let err = resolve_user(&ctr(None), Some(&img_user(user)), &users)
                .expect_err(&format!("USER {user:?} must be refused"));
            assert!(
                matches!(&err, SpecError::InvalidConfig { field, .. } if field == "image config USER"),
                "USER {user:?}: {err}"
            );
            if !user.contains(':') {
                let sc = LinuxContainerSecurityContext {
                    run_as_username: user.to_string(),
                    ..Default::default()
                };
                let err = resolve_user(&ctr(Some(sc)), None, &users)
                    .expect_err(&format!("run_as_username {user:?} must be refused"));
                assert!(
                    matches!(&err, SpecError::InvalidConfig { field, .. } if field == "security_context.run_as_username"),
                    "run_as_username {user:?}: {err}"
                );
            }
        }
        // Valid spellings: plain digits (leading zeros too) in range, names.
        let accepted: Vec<(&str, u32, u32)> = vec![
            ("2147483647", 2147483647, 0),
            ("0007", 7, 0),
            ("0:0", 0, 0),
            ("alice", 1000, 1000),
            ("_apt", 42, 65534),
            ("www-data:0", 33, 0),
        ];
        let named =
            PASSWD.to_string() + "_apt:x:42:65534::/:/bin/false\nwww-data:x:33:33::/:/bin/false\n";
        let users = ImageUserDb {
            passwd: Some(&named),
            group: Some(GROUP),
        };
        for (user, uid, gid) in accepted {
            let r = resolve_user(&ctr(None), Some(&img_user(user)), &users).unwrap();
            assert_eq!((r.uid, r.gid), (uid, gid), "USER {user:?}");
        }
        for v in [-1i64, 2147483648, 4294967295, i64::MAX] {
            let sc = LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: v }),
                ..Default::default()
            };
            assert!(resolve_user(&ctr(Some(sc)), None, &db()).is_err(), "{v}");
        }
    }

    /// passwd lines whose id fields are not plain in-range digits are
    /// ignored, so a name never resolves through "+0" or "-0" to root.
    #[test]
    fn passwd_lines_with_bad_ids_are_ignored() {
        let passwd = "mallory:x:+0:0::/:/bin/sh\neve:x:0x0:0::/:/bin/sh\n";
        let users = ImageUserDb {
            passwd: Some(passwd),
            group: None,
        };
        for name in ["mallory", "eve"] {
            let err = resolve_user(&ctr(None), Some(&img_user(name)), &users).unwrap_err();
            assert!(matches!(err, SpecError::UnknownUser { .. }), "{name}");
        }
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
