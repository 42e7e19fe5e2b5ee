//! The name an image is reported under. Pure.
//!
//! kubelet creates containers with the image *id* (`ImageSpec.image` is
//! what PullImage/ImageStatus returned, "sha256:<config digest>") and puts
//! the pod spec's reference in `ImageSpec.user_specified_image`. Users,
//! `kubectl describe` and policies want the name: containerd reports the
//! image's first repo tag in `ContainerStatus.image`
//! (internal/cri/server/container_status.go), and a policy matching
//! `image.name` must see the same name whichever form kubelet sent. One
//! function decides, for both.

use super::reference::parse_reference;

/// What naming needs of an image: its id, repo tags and repo digests. The
/// store's record implements it (so this module does not depend on the
/// store, which depends on it).
pub trait KnownNames {
    fn id(&self) -> &str;
    fn repo_tags(&self) -> &[String];
    fn repo_digests(&self) -> &[String];
}

/// The name to report for the container image `record`, given what the
/// caller asked for, most specific first (`user_specified_image`, then
/// `ImageSpec.image`): the first of those that is a tag or digest
/// reference naming this image, normalised the way the store keeps names
/// (`busybox` → `docker.io/library/busybox:latest`); else the image's
/// first repo tag, as containerd reports; else its first repo digest; else
/// its id. A reference that names another image (a tag moved since) is
/// never reported for this one.
pub fn reported_name(record: &impl KnownNames, asked: &[&str]) -> String {
    asked
        .iter()
        .find_map(|r| name_of_this_image(record, r))
        .or_else(|| record.repo_tags().first().cloned())
        .or_else(|| record.repo_digests().first().cloned())
        .unwrap_or_else(|| record.id().to_string())
}

/// When the image record is gone (RemoveImage while the container lives):
/// the first asked-for reference that is a name rather than an id,
/// normalised; else `image_id`.
pub fn reported_name_without_record(image_id: &str, asked: &[&str]) -> String {
    asked
        .iter()
        .filter(|r| !looks_like_id(r))
        .find_map(|r| parse_reference(r.trim()).ok())
        .map(|p| match (&p.tag, &p.digest) {
            (Some(t), _) => format!("{}:{t}", p.name()),
            (None, Some(d)) => format!("{}@{d}", p.name()),
            (None, None) => p.name(),
        })
        .unwrap_or_else(|| image_id.to_string())
}

/// Every name the image is known by: its repo tags, then its repo digests.
pub fn all_names(record: &impl KnownNames) -> Vec<String> {
    record
        .repo_tags()
        .iter()
        .chain(record.repo_digests())
        .cloned()
        .collect()
}

/// `sha256:<hex>` or bare hex: an id (or id prefix), not a name. A bare
/// 64-hex string also parses as a repository name, which is why this is
/// checked first (docker's rule: a 64-hex name is refused as ambiguous).
fn looks_like_id(r: &str) -> bool {
    let r = r.trim();
    let hex = r.strip_prefix("sha256:").unwrap_or(r);
    (r.starts_with("sha256:") || hex.len() == 64)
        && !hex.is_empty()
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

fn name_of_this_image(record: &impl KnownNames, r: &str) -> Option<String> {
    let r = r.trim();
    if r.is_empty() || looks_like_id(r) {
        return None;
    }
    let parsed = parse_reference(r).ok()?;
    if let Some(digest) = &parsed.digest {
        let by_digest = format!("{}@{digest}", parsed.name());
        if record.repo_digests().contains(&by_digest) {
            // name:tag@digest names the digest; report the tag form when
            // the image still carries that tag, the digest form otherwise.
            if let Some(tag) = &parsed.tag {
                let tagged = format!("{}:{tag}", parsed.name());
                if record.repo_tags().contains(&tagged) {
                    return Some(tagged);
                }
            }
            return Some(by_digest);
        }
        return None;
    }
    let normalized = parsed.normalized();
    record
        .repo_tags()
        .contains(&normalized)
        .then_some(normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Record {
        id: String,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
    }

    impl KnownNames for Record {
        fn id(&self) -> &str {
            &self.id
        }
        fn repo_tags(&self) -> &[String] {
            &self.repo_tags
        }
        fn repo_digests(&self) -> &[String] {
            &self.repo_digests
        }
    }

    const ID: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const MD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn record(tags: &[&str], digests: &[&str]) -> Record {
        Record {
            id: ID.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Every spelling kubelet, crictl or a user may send, against an image
    /// known by two tags and one digest.
    #[test]
    fn names_as_kubelet_and_crictl_send_them() {
        let busybox_digest = format!("docker.io/library/busybox@{MD}");
        let r = record(
            &[
                "docker.io/library/busybox:latest",
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            ],
            &[&busybox_digest],
        );
        let e2e = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
        let cases: &[(&[&str], &str)] = &[
            // kubelet: the id in image, the pod spec's name beside it.
            (&[e2e, ID], e2e),
            (&["", ID], "docker.io/library/busybox:latest"),
            // kubelet before user_specified_image, or crictl with an id.
            (&[ID], "docker.io/library/busybox:latest"),
            (&[&ID[7..]], "docker.io/library/busybox:latest"),
            (&["sha256:aaaa"], "docker.io/library/busybox:latest"),
            // short names are normalised as the store keeps them.
            (&["busybox"], "docker.io/library/busybox:latest"),
            (&["busybox:latest"], "docker.io/library/busybox:latest"),
            (&["library/busybox"], "docker.io/library/busybox:latest"),
            (&[" busybox "], "docker.io/library/busybox:latest"),
            (&[&format!("busybox@{MD}")], &busybox_digest),
            (
                &[&format!("busybox:latest@{MD}")],
                "docker.io/library/busybox:latest",
            ),
            // a name that is not this image's (a tag that moved, another
            // image) falls through to the next, then to the first tag.
            (&["busybox:1.36", e2e], e2e),
            (&["nginx:latest"], "docker.io/library/busybox:latest"),
            (&["Not A Reference!"], "docker.io/library/busybox:latest"),
        ];
        for (asked, want) in cases {
            assert_eq!(reported_name(&r, asked), *want, "asked {asked:?}");
        }
    }

    #[test]
    fn untagged_images_fall_back_to_digest_then_id() {
        let d = format!("registry.k8s.io/pause@{MD}");
        assert_eq!(reported_name(&record(&[], &[&d]), &[ID]), d);
        assert_eq!(reported_name(&record(&[], &[]), &[ID]), ID);
        assert_eq!(reported_name(&record(&[], &[]), &[]), ID);
    }

    #[test]
    fn removed_images_report_what_was_asked() {
        assert_eq!(
            reported_name_without_record(ID, &["busybox", ID]),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(reported_name_without_record(ID, &["", ID]), ID);
        assert_eq!(reported_name_without_record(ID, &[&ID[7..]]), ID);
        assert_eq!(
            reported_name_without_record(ID, &[&format!("busybox@{MD}")]),
            format!("docker.io/library/busybox@{MD}")
        );
    }

    #[test]
    fn all_names_lists_tags_then_digests() {
        let r = record(&["a/b:1", "a/c:2"], &["a/b@sha256:1"]);
        assert_eq!(all_names(&r), vec!["a/b:1", "a/c:2", "a/b@sha256:1"]);
    }
}
