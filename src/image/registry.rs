//! Registry side of a pull, on top of `oci-client`: endpoint choice (mirrors
//! first, like containerd's hosts.toml, then the upstream), HTTP vs HTTPS,
//! credentials, manifest and index resolution. Everything fetched is checked
//! against its digest here, not trusted from the client.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth as ClientAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use super::ImageError;
use super::digest::{BlobVerifier, sha256_digest};
use super::reference::ParsedReference;

/// The `[registries]` table of the daemon's config: every key optional
/// (empty by default), unknown keys refused.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a table with the optional keys `mirrors` and `insecure`"
)]
pub struct RegistriesConfig {
    /// upstream host (e.g. "registry.k8s.io", "docker.io") -> mirror endpoints tried in order
    /// before the upstream, like containerd's hosts.toml. Endpoints are "host:port" or
    /// "http://host:port" / "https://host:port".
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// hosts ("host:port") spoken to over plain HTTP. Loopback hosts (127.0.0.0/8, localhost, [::1])
    /// are always plain HTTP, as Docker does, without being listed.
    pub insecure: Vec<String>,
}

/// From CRI AuthConfig; empty strings = unset.
#[derive(Clone, Debug, Default)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// containerd's bound on a manifest or index (4 MiB): real ones are a few
/// KiB, and the whole body is held in memory.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// One place to try: a mirror or the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// "host[:port]" to put in the URL.
    pub host: String,
    pub plain_http: bool,
    pub is_mirror: bool,
}

/// Loopback registries are spoken to over plain HTTP, as Docker does.
pub fn is_loopback_host(host_port: &str) -> bool {
    if host_port.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return true;
    }
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        host_port
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(host_port)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Mirrors of `domain` in order, then the upstream (`docker.io` is served by
/// `registry-1.docker.io`).
pub fn endpoints(cfg: &RegistriesConfig, domain: &str) -> Vec<Endpoint> {
    let insecure = |host: &str| is_loopback_host(host) || cfg.insecure.iter().any(|h| h == host);
    let mut out = Vec::new();
    for m in cfg
        .mirrors
        .get(domain)
        .map(|v| v.as_slice())
        .unwrap_or_default()
    {
        let m = m.trim_end_matches('/');
        let (host, plain_http) = if let Some(h) = m.strip_prefix("http://") {
            (h.to_string(), true)
        } else if let Some(h) = m.strip_prefix("https://") {
            (h.to_string(), false)
        } else {
            (m.to_string(), insecure(m))
        };
        out.push(Endpoint {
            host,
            plain_http,
            is_mirror: true,
        });
    }
    let upstream = if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    };
    out.push(Endpoint {
        host: upstream.to_string(),
        plain_http: insecure(upstream) || insecure(domain),
        is_mirror: false,
    });
    out
}

/// CRI AuthConfig -> client credentials. An identity token (an OAuth refresh
/// token) needs the token exchange oci-client does not implement.
pub fn client_auth(image: &str, auth: Option<&RegistryAuth>) -> Result<ClientAuth, ImageError> {
    let Some(a) = auth else {
        return Ok(ClientAuth::Anonymous);
    };
    if !a.registry_token.is_empty() {
        return Ok(ClientAuth::Bearer(a.registry_token.clone()));
    }
    if !a.username.is_empty() {
        return Ok(ClientAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        return match decoded {
            Some((u, p)) => Ok(ClientAuth::Basic(u, p)),
            None => Err(ImageError::Unauthorized {
                image: image.to_string(),
                registry: "-".into(),
                reason: "AuthConfig.auth is not base64 of \"user:password\"".into(),
            }),
        };
    }
    if !a.identity_token.is_empty() {
        return Err(ImageError::Unsupported {
            object: format!("credentials for {image}"),
            reason: "identity tokens (OAuth refresh tokens) are not supported; pass username/password or a registry token".into(),
        });
    }
    Ok(ClientAuth::Anonymous)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<RawPlatform>,
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: i64,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// The image manifest of the host platform.
#[derive(Clone, Debug)]
pub struct ResolvedManifest {
    /// Digest of what the tag (or digest) points to: the index if there is one.
    pub top_digest: String,
    pub manifest_digest: String,
    pub config: RawDescriptor,
    pub layers: Vec<RawDescriptor>,
}

/// The registry architecture name of this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Picks the linux/<host arch> entry of an index; attestation manifests
/// (buildx: platform unknown/unknown) are never images.
pub fn pick_platform<'a>(manifests: &'a [RawDescriptor], arch: &str) -> Option<&'a RawDescriptor> {
    manifests.iter().find(|m| {
        let attestation = m.annotations.as_ref().is_some_and(|a| {
            a.get("vnd.docker.reference.type")
                .is_some_and(|t| t == "attestation-manifest")
        });
        let p = m.platform.as_ref();
        !attestation && p.is_some_and(|p| p.os == "linux" && p.architecture == arch)
    })
}

/// A registry endpoint that served the manifest; blobs come from it too.
pub struct Session {
    client: Client,
    /// For manifests only: see `manifest_body`.
    http: reqwest::Client,
    /// The Authorization header value for this registry, learned once.
    authorization: tokio::sync::OnceCell<Option<String>>,
    reference: Reference,
    auth: ClientAuth,
    pub endpoint: Endpoint,
    image: String,
}

fn map_error(image: &str, registry: &str, what: &str, e: OciDistributionError) -> ImageError {
    let debug = format!("{e:?}");
    let text = e.to_string();
    let reason = format!("{what}: {text}");
    let not_found = debug.contains("ManifestUnknown")
        || debug.contains("NameUnknown")
        || debug.contains("BlobUnknown")
        || matches!(e, OciDistributionError::ImageManifestNotFoundError(_))
        || matches!(e, OciDistributionError::ServerError { code: 404, .. });
    let unauthorized = matches!(
        e,
        OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. }
    ) || matches!(
        e,
        OciDistributionError::ServerError {
            code: 401 | 403,
            ..
        }
    ) || debug.contains("Unauthorized")
        || debug.contains("Denied");
    if not_found {
        ImageError::NotFound {
            image: image.to_string(),
            reason: format!("registry {registry}: {reason}"),
        }
    } else if unauthorized {
        ImageError::Unauthorized {
            image: image.to_string(),
            registry: registry.to_string(),
            reason,
        }
    } else {
        ImageError::Registry {
            image: image.to_string(),
            registry: registry.to_string(),
            reason,
        }
    }
}

/// A client for manifests. The image store builds one and keeps it
/// (`ImageStore::pull`): building one loads and parses the system's root
/// certificates (~140 files on Debian), a few milliseconds a pull when each
/// session built its own. It holds no credentials (the Authorization
/// header is set per request from the session's own token) and no cookies,
/// so sharing it shares nothing between pulls but connections. Not a
/// process-wide static: its pooled connections belong to the tokio runtime
/// that opened them, and a second runtime (tests run one per test) reusing
/// one fails with "error sending request". Same timeouts as the blob
/// client; reqwest's rustls (enabled through oci-client) and its default
/// roots, as oci-client's client has. The blob client stays per session:
/// oci-client caches bearer tokens in it, and one pull's credentials must
/// not serve another's.
pub fn manifest_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(120))
        .user_agent(concat!("capcri/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

impl Session {
    fn new(
        endpoint: Endpoint,
        http: &reqwest::Client,
        parsed: &ParsedReference,
        auth: ClientAuth,
        image: &str,
    ) -> Session {
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            ..Default::default()
        };
        let reference = match (&parsed.digest, &parsed.tag) {
            (Some(d), _) => {
                Reference::with_digest(endpoint.host.clone(), parsed.path.clone(), d.clone())
            }
            (None, Some(t)) => {
                Reference::with_tag(endpoint.host.clone(), parsed.path.clone(), t.clone())
            }
            (None, None) => {
                Reference::with_tag(endpoint.host.clone(), parsed.path.clone(), "latest".into())
            }
        };
        Session {
            client: Client::new(config),
            http: http.clone(),
            authorization: tokio::sync::OnceCell::new(),
            reference,
            auth,
            endpoint,
            image: image.to_string(),
        }
    }

    async fn manifest(
        &self,
        reference: &Reference,
        expected: Option<&str>,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let bytes = self.manifest_body(reference, expected).await?;
        let digest = sha256_digest(&bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(ImageError::DigestMismatch {
                object: format!("manifest of {} from {}", self.image, self.endpoint.host),
                expected: expected.to_string(),
                actual: digest,
            });
        }
        Ok((bytes, digest))
    }

    /// The Authorization header for this registry: a bearer token from its
    /// token service (oci-client's `auth` does the challenge dance), the
    /// configured basic credentials, a configured token, or none.
    async fn authorization(&self) -> Result<Option<String>, ImageError> {
        self.authorization
            .get_or_try_init(|| async {
                let token = self
                    .client
                    .auth(&self.reference, &self.auth, RegistryOperation::Pull)
                    .await
                    .map_err(|e| {
                        map_error(&self.image, &self.endpoint.host, "authenticating", e)
                    })?;
                Ok(match (token.as_ref(), &self.auth) {
                    (Some(t), _) | (None, ClientAuth::Bearer(t)) => Some(format!("Bearer {t}")),
                    (None, ClientAuth::Basic(user, password)) => Some(format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{user}:{password}"))
                    )),
                    (None, ClientAuth::Anonymous) => None,
                })
            })
            .await
            .cloned()
    }

    /// GETs a manifest, reading its body chunk by chunk and refusing it past
    /// `MAX_MANIFEST_BYTES`. This is not left to oci-client: its
    /// `pull_manifest_raw` reads the whole body before anyone can look at
    /// its size, so a registry that streams an endless manifest would grow
    /// the daemon's memory until the OOM killer came.
    async fn manifest_body(
        &self,
        reference: &Reference,
        expected: Option<&str>,
    ) -> Result<Vec<u8>, ImageError> {
        let what = format!("fetching manifest {reference}");
        let registry_error = |reason: String| ImageError::Registry {
            image: self.image.clone(),
            registry: self.endpoint.host.clone(),
            reason: format!("{what}: {reason}"),
        };
        let too_large = |size: u64, how| ImageError::ManifestTooLarge {
            image: self.image.clone(),
            reference: expected
                .unwrap_or(reference.tag().unwrap_or("latest"))
                .to_string(),
            size,
            how,
            limit: MAX_MANIFEST_BYTES as u64,
        };
        let url = format!(
            "{scheme}://{registry}/v2/{repository}/manifests/{tag_or_digest}",
            scheme = if self.endpoint.plain_http {
                "http"
            } else {
                "https"
            },
            registry = reference.resolve_registry(),
            repository = reference.repository(),
            tag_or_digest = reference
                .digest()
                .unwrap_or(reference.tag().unwrap_or("latest")),
        );
        let mut request = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", "),
        );
        if let Some(authorization) = self.authorization().await? {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| registry_error(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            // Only the start of an error body: it goes into a message.
            let mut body = Vec::new();
            while body.len() < 4096 {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            body.truncate(4096);
            let reason = format!(
                "{what}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
            return Err(match status.as_u16() {
                404 => ImageError::NotFound {
                    image: self.image.clone(),
                    reason: format!("registry {}: {reason}", self.endpoint.host),
                },
                401 | 403 => ImageError::Unauthorized {
                    image: self.image.clone(),
                    registry: self.endpoint.host.clone(),
                    reason,
                },
                _ => registry_error(format!("HTTP {status}")),
            });
        }
        if let Some(declared) = response.content_length()
            && declared > MAX_MANIFEST_BYTES as u64
        {
            return Err(too_large(declared, "declared"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| registry_error(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(too_large(
                    (body.len() + chunk.len()) as u64,
                    "received so far",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Resolves tag/digest -> (index ->) image manifest of the host platform.
    pub async fn resolve(&self) -> Result<ResolvedManifest, ImageError> {
        let (bytes, top_digest) = self
            .manifest(&self.reference, self.reference.digest())
            .await?;
        let raw = parse_manifest(&self.image, &bytes)?;
        if let Some(list) = raw.manifests {
            let Some(entry) = pick_platform(&list, host_arch()) else {
                let found: Vec<String> = list
                    .iter()
                    .filter_map(|m| {
                        m.platform
                            .as_ref()
                            .map(|p| format!("{}/{}", p.os, p.architecture))
                    })
                    .collect();
                return Err(ImageError::Unsupported {
                    object: format!("image {}", self.image),
                    reason: format!(
                        "no linux/{} manifest in its index (platforms: {}); pull an image built for this host",
                        host_arch(),
                        found.join(", ")
                    ),
                });
            };
            // The index says how big the manifest is: refuse before fetching.
            if entry.size > MAX_MANIFEST_BYTES as i64 {
                return Err(ImageError::ManifestTooLarge {
                    image: self.image.clone(),
                    reference: entry.digest.clone(),
                    size: entry.size as u64,
                    how: "declared by its index",
                    limit: MAX_MANIFEST_BYTES as u64,
                });
            }
            let by_digest = self.reference.clone_with_digest(entry.digest.clone());
            let (bytes, manifest_digest) = self.manifest(&by_digest, Some(&entry.digest)).await?;
            let inner = parse_manifest(&self.image, &bytes)?;
            if inner.manifests.is_some() {
                return Err(ImageError::Unsupported {
                    object: format!("image {}", self.image),
                    reason: "an index nested in an index".into(),
                });
            }
            return image_manifest(&self.image, inner, top_digest, manifest_digest);
        }
        let digest = top_digest.clone();
        image_manifest(&self.image, raw, top_digest, digest)
    }

    /// Opens a blob's body: its bytes as they arrive, each checked against
    /// the descriptor (see [`BlobBody::next_chunk`]).
    ///
    /// The GET asks for `bytes=0-`: a registry that serves ranges answers
    /// 206, which oci-client passes through unverified, so the body is
    /// hashed once, by capcri's own check (which also enforces the size as
    /// it streams). One that ignores the range answers 200 and oci-client
    /// hashes it a second time: the same bytes, checked twice. A 206 that
    /// does not start at byte 0 fails the digest like any other wrong body.
    pub async fn blob_body(
        &self,
        desc: &RawDescriptor,
        object: &str,
    ) -> Result<BlobBody, ImageError> {
        let size = u64::try_from(desc.size).map_err(|_| ImageError::Corrupt {
            path: object.into(),
            reason: format!("{object}: negative size in descriptor"),
        })?;
        let verifier = BlobVerifier::new(object, &desc.digest, Some(size))?;
        let descriptor = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            ..Default::default()
        };
        let response = self
            .client
            .pull_blob_stream_partial(&self.reference, &descriptor, 0, None)
            .await
            .map_err(|e| {
                map_error(
                    &self.image,
                    &self.endpoint.host,
                    &format!("fetching {object}"),
                    e,
                )
            })?;
        let stream = match response {
            oci_client::client::BlobResponse::Full(s)
            | oci_client::client::BlobResponse::Partial(s) => s.stream,
        };
        Ok(BlobBody {
            stream,
            verifier,
            image: self.image.clone(),
            registry: self.endpoint.host.clone(),
            done: false,
        })
    }

    /// Streams a blob into `dest` (fsynced), verifying size and sha256 on
    /// the way.
    pub async fn fetch_blob(
        &self,
        desc: &RawDescriptor,
        object: &str,
        dest: &Path,
    ) -> Result<(), ImageError> {
        let mut body = self.blob_body(desc, object).await?;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| ImageError::io("create", dest, e))?;
        while let Some(bytes) = body.next_chunk().await? {
            file.write_all(&bytes)
                .await
                .map_err(|e| ImageError::io("write", dest, e))?;
        }
        file.flush()
            .await
            .map_err(|e| ImageError::io("write", dest, e))?;
        file.sync_all()
            .await
            .map_err(|e| ImageError::io("fsync", dest, e))
    }
}

/// A blob's body from a registry, checked as it streams: no chunk is handed
/// out past the descriptor's size, and the end of the body is reported only
/// once its sha256 matched.
pub struct BlobBody {
    stream: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
    verifier: BlobVerifier,
    image: String,
    registry: String,
    done: bool,
}

impl BlobBody {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.verifier.received()
    }

    /// The next chunk; `Ok(None)` at the end of a body whose size and digest
    /// matched the descriptor. A body longer than declared, a wrong digest
    /// or a broken download is an error (and so is any call after one).
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, ImageError> {
        if self.done {
            return Ok(None);
        }
        match self.stream.next().await {
            Some(Ok(bytes)) => {
                self.verifier.update(&bytes)?;
                Ok(Some(bytes))
            }
            None => {
                self.done = true;
                self.verifier.finish().map(|()| None)
            }
            Some(Err(e)) => {
                self.done = true;
                // oci-client's own check (a 200 answer) fails at the end of
                // a tampered blob: report it with capcri's expected/actual
                // digests.
                let (received, size) = (self.verifier.received(), self.verifier.expected_size());
                if Some(received) == size {
                    self.verifier.finish()?;
                }
                Err(ImageError::Registry {
                    image: self.image.clone(),
                    registry: self.registry.clone(),
                    reason: format!(
                        "download of {} broke after {received} of {} bytes: {e}",
                        self.verifier.object(),
                        size.unwrap_or_default()
                    ),
                })
            }
        }
    }
}

fn parse_manifest(image: &str, bytes: &[u8]) -> Result<RawManifest, ImageError> {
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| ImageError::Unsupported {
        object: format!("manifest of {image}"),
        reason: format!("not an OCI/Docker v2 manifest: {e}"),
    })?;
    if raw.schema_version != 2 {
        return Err(ImageError::Unsupported {
            object: format!("manifest of {image}"),
            reason: format!(
                "schemaVersion {} (Docker schema 1 is deprecated); re-push the image",
                raw.schema_version
            ),
        });
    }
    if let Some(mt) = &raw.media_type
        && ![OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].contains(&mt.as_str())
    {
        return Err(ImageError::Unsupported {
            object: format!("manifest of {image}"),
            reason: format!("media type {mt}"),
        });
    }
    Ok(raw)
}

fn image_manifest(
    image: &str,
    raw: RawManifest,
    top_digest: String,
    manifest_digest: String,
) -> Result<ResolvedManifest, ImageError> {
    let (Some(config), Some(layers)) = (raw.config, raw.layers) else {
        return Err(ImageError::Unsupported {
            object: format!("manifest of {image}"),
            reason: "it has no config or no layers: not a container image".into(),
        });
    };
    Ok(ResolvedManifest {
        top_digest,
        manifest_digest,
        config,
        layers,
    })
}

/// Tries each endpoint in order; returns the first that serves the manifest.
/// Credentials go to the upstream only: a mirror is another party.
pub async fn resolve(
    cfg: &RegistriesConfig,
    http: &reqwest::Client,
    parsed: &ParsedReference,
    auth: Option<&RegistryAuth>,
) -> Result<(Session, ResolvedManifest), ImageError> {
    let image = parsed.normalized();
    let client_auth = client_auth(&image, auth)?;
    let mut failures = Vec::new();
    let mut all_not_found = true;
    let mut last_err = None;
    for endpoint in endpoints(cfg, &parsed.domain) {
        let auth = if endpoint.is_mirror {
            ClientAuth::Anonymous
        } else {
            client_auth.clone()
        };
        let session = Session::new(endpoint.clone(), http, parsed, auth, &image);
        match session.resolve().await {
            Ok(m) => return Ok((session, m)),
            Err(e) => {
                tracing::debug!(image = %image, endpoint = %endpoint.host, error = %e, "endpoint failed");
                all_not_found &= matches!(e, ImageError::NotFound { .. });
                failures.push(format!(
                    "{}{}: {e}",
                    endpoint.host,
                    if endpoint.is_mirror { " (mirror)" } else { "" }
                ));
                last_err = Some(e);
            }
        }
    }
    match last_err {
        Some(e) if failures.len() == 1 => Err(e),
        Some(ImageError::DigestMismatch {
            object,
            expected,
            actual,
        }) => Err(ImageError::DigestMismatch {
            object,
            expected,
            actual,
        }),
        Some(ImageError::Unsupported { object, reason }) => {
            Err(ImageError::Unsupported { object, reason })
        }
        _ if all_not_found => Err(ImageError::NotFound {
            image: image.clone(),
            reason: format!("no endpoint has it: {}", failures.join("; ")),
        }),
        _ => Err(ImageError::Registry {
            image: image.clone(),
            registry: parsed.domain.clone(),
            reason: format!("every endpoint failed: {}", failures.join("; ")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "localhost:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["registry.k8s.io", "10.0.0.1:5000", "docker.io"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn mirrors_first_then_upstream() {
        let mut cfg = RegistriesConfig::default();
        cfg.mirrors.insert(
            "registry.k8s.io".into(),
            vec![
                "127.0.0.1:5000".into(),
                "https://mirror.example:443".into(),
                "http://m2:80".into(),
            ],
        );
        cfg.mirrors
            .insert("docker.io".into(), vec!["mirror.internal:5000".into()]);
        cfg.insecure.push("mirror.internal:5000".into());
        let e = endpoints(&cfg, "registry.k8s.io");
        assert_eq!(
            e,
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    plain_http: true,
                    is_mirror: true
                },
                Endpoint {
                    host: "mirror.example:443".into(),
                    plain_http: false,
                    is_mirror: true
                },
                Endpoint {
                    host: "m2:80".into(),
                    plain_http: true,
                    is_mirror: true
                },
                Endpoint {
                    host: "registry.k8s.io".into(),
                    plain_http: false,
                    is_mirror: false
                },
            ]
        );
        let d = endpoints(&cfg, "docker.io");
        assert_eq!(
            d[0],
            Endpoint {
                host: "mirror.internal:5000".into(),
                plain_http: true,
                is_mirror: true
            }
        );
        assert_eq!(d[1].host, "registry-1.docker.io");
        assert!(!d[1].plain_http);
    }

    #[test]
    fn auth_mapping() {
        let basic = RegistryAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:x"),
            ..Default::default()
        };
        assert!(
            matches!(client_auth("i", Some(&basic)).unwrap(), ClientAuth::Basic(u, p) if u == "u" && p == "p:x")
        );
        let token = RegistryAuth {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert!(
            matches!(client_auth("i", Some(&token)).unwrap(), ClientAuth::Bearer(t) if t == "t")
        );
        assert!(matches!(
            client_auth("i", None).unwrap(),
            ClientAuth::Anonymous
        ));
        let bad = RegistryAuth {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(matches!(
            client_auth("i", Some(&bad)),
            Err(ImageError::Unauthorized { .. })
        ));
    }

    #[test]
    fn platform_choice_skips_attestations() {
        let list: Vec<RawDescriptor> = serde_json::from_str(
            r#"[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"architecture":"arm64","os":"linux"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:att","size":1,"platform":{"architecture":"unknown","os":"unknown"},
             "annotations":{"vnd.docker.reference.type":"attestation-manifest"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"architecture":"amd64","os":"linux"}}
            ]"#,
        )
        .unwrap();
        assert_eq!(pick_platform(&list, "amd64").unwrap().digest, "sha256:b");
        assert_eq!(pick_platform(&list, "arm64").unwrap().digest, "sha256:a");
        assert!(pick_platform(&list, "s390x").is_none());
    }
}
