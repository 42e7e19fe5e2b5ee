//! Docker-style image reference normalisation, as the Docker CLI, containerd
//! and kubelet apply it: a missing registry means `docker.io`, a one-component
//! docker.io path gets `library/`, a missing tag means `latest`.

use super::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";

/// A reference split into the parts a registry request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedReference {
    /// Registry host as written by the user after normalisation (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`).
    pub domain: String,
    /// Repository path inside the registry (`library/busybox`, `pause`).
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ParsedReference {
    /// `domain/path`: the name RepoTags and RepoDigests are built from.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The normalised string form.
    pub fn normalized(&self) -> String {
        let mut s = self.name();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }
}

fn invalid(reference: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// Parses and normalises `r`; `latest` is added only when neither tag nor digest is given.
pub fn parse_reference(r: &str) -> Result<ParsedReference, ImageError> {
    if r.is_empty() {
        return Err(invalid(r, "it is empty"));
    }
    if r.len() > 4096 || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(r, "it contains whitespace or is too long"));
    }
    let (rest, digest) = match r.split_once('@') {
        Some((name, d)) => (name, Some(validate_digest(r, d)?)),
        None => (r, None),
    };
    // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        validate_tag(r, tag)?;
    }
    if name.is_empty() {
        return Err(invalid(r, "the repository name is empty"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first.to_string(), remainder.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN.to_string()
    } else {
        domain
    };
    validate_domain(r, &domain)?;
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if domain == DEFAULT_DOMAIN
        && path.len() == 64 + "library/".len()
        && path["library/".len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
    {
        return Err(invalid(
            r,
            "a 64-character hexadecimal string is an image id, not a repository name",
        ));
    }
    validate_path(r, &path)?;
    let tag = match (tag, &digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(_)) => None,
        (None, None) => Some("latest".to_string()),
    };
    Ok(ParsedReference {
        domain,
        path,
        tag,
        digest,
    })
}

/// Normalises a reference the way `docker pull` and containerd do:
/// `busybox` -> `docker.io/library/busybox:latest`.
pub fn normalize_reference(r: &str) -> Result<String, ImageError> {
    parse_reference(r).map(|p| p.normalized())
}

fn validate_digest(r: &str, d: &str) -> Result<String, ImageError> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(invalid(r, format!("digest {d:?} is not sha256:<64 hex>")));
    };
    if hex.len() != 64 || !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(invalid(
            r,
            format!("digest {d:?} is not sha256:<64 lowercase hex>"),
        ));
    }
    Ok(d.to_string())
}

fn validate_tag(r: &str, tag: &str) -> Result<(), ImageError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            r,
            format!("tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"),
        ))
    }
}

fn validate_domain(r: &str, domain: &str) -> Result<(), ImageError> {
    let (host, port) = if let Some(stripped) = domain.strip_prefix('[') {
        match stripped.split_once(']') {
            Some((h, rest)) => (h, rest.strip_prefix(':')),
            None => {
                return Err(invalid(
                    r,
                    format!("registry host {domain:?} has an unclosed '['"),
                ));
            }
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(invalid(
            r,
            format!("registry host {domain:?} is not host[:port]"),
        ))
    }
}

fn validate_path(r: &str, path: &str) -> Result<(), ImageError> {
    for component in path.split('/') {
        let ok = !component.is_empty()
            && component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && component
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && component
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(
                r,
                format!(
                    "repository component {component:?} must be lowercase letters, digits and separators (. _ -) between them"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.29", "docker.io/library/busybox:1.29"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
            ),
            ("foo/bar", "docker.io/foo/bar:latest"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
            (
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
                "registry.k8s.io/e2e-test-images/busybox:1.29-2",
            ),
            (
                "127.0.0.1:5000/cri-lab/filecaps",
                "127.0.0.1:5000/cri-lab/filecaps:latest",
            ),
            ("localhost/foo", "localhost/foo:latest"),
            ("localhost:5000/foo:tag", "localhost:5000/foo:tag"),
            ("[::1]:5000/foo", "[::1]:5000/foo:latest"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_reference(input).unwrap(), *want, "input {input}");
        }
        assert_eq!(
            normalize_reference(&format!("busybox@{D}")).unwrap(),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(
            normalize_reference(&format!("busybox:1@{D}")).unwrap(),
            format!("docker.io/library/busybox:1@{D}")
        );
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a b",
            "foo//bar",
            "foo/-bar",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:-tag",
        ] {
            let err = normalize_reference(bad).unwrap_err();
            assert!(
                matches!(err, ImageError::InvalidReference { .. }),
                "{bad:?} gave {err}"
            );
        }
    }

    #[test]
    fn parts() {
        let p = parse_reference("127.0.0.1:5000/cri-lab/filecaps:latest").unwrap();
        assert_eq!(p.domain, "127.0.0.1:5000");
        assert_eq!(p.path, "cri-lab/filecaps");
        assert_eq!(p.tag.as_deref(), Some("latest"));
        assert_eq!(p.name(), "127.0.0.1:5000/cri-lab/filecaps");
    }
}
