//! Images the tests craft themselves, byte by byte, and push to the local
//! test registry (`CAPCRI_TEST_REGISTRY`): hostile layers (symlink swaps,
//! FIFOs, odd users) that no image builder would produce.
//!
//! The registry is plain HTTP on loopback, so a blocking HTTP/1.1 client on
//! a `TcpStream` is all this needs; each request uses its own connection
//! (`Connection: close`) so no response framing beyond Content-Length and
//! headers is needed.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;

/// One entry of a crafted layer, written in order: the order is the attack
/// (an entry can replace an earlier one, as in a real layer).
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
        mtime: u64,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    Fifo {
        path: String,
        mode: u32,
    },
    CharDev {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
    /// `inner` with an owner and `SCHILY.xattr.*` records (written as a PAX
    /// header before it).
    WithMeta {
        inner: Box<Entry>,
        uid: u64,
        gid: u64,
        xattrs: Vec<(String, Vec<u8>)>,
    },
}

impl Entry {
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode,
            mtime: 1_704_067_200,
        }
    }
    pub fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
        Entry::File {
            path: path.into(),
            mode,
            data: data.to_vec(),
        }
    }
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hard_link(path: &str, target: &str) -> Entry {
        Entry::HardLink {
            path: path.into(),
            target: target.into(),
        }
    }
    /// This entry owned by `uid:gid` and carrying `xattrs`.
    pub fn with_meta(self, uid: u64, gid: u64, xattrs: &[(&str, &[u8])]) -> Entry {
        Entry::WithMeta {
            inner: Box::new(self),
            uid,
            gid,
            xattrs: xattrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        }
    }
}

/// A PAX extended header carrying `SCHILY.xattr.<name>` records.
fn append_pax_xattrs(b: &mut tar::Builder<Vec<u8>>, xattrs: &[(String, Vec<u8>)]) {
    let mut pax = Vec::new();
    for (k, v) in xattrs {
        // "<len> SCHILY.xattr.<k>=<v>\n", where <len> counts itself.
        let body = format!(" SCHILY.xattr.{k}=").len() + v.len() + 1;
        let mut total = body + 1;
        while total.to_string().len() + body != total {
            total = total.to_string().len() + body;
        }
        pax.extend_from_slice(format!("{total} SCHILY.xattr.{k}=").as_bytes());
        pax.extend_from_slice(v);
        pax.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(pax.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "PaxHeader", pax.as_slice())
        .expect("pax header");
}

/// An uncompressed tar of `entries`, in order, with GNU headers (long names
/// allowed). Owners are 0:0 unless the entry says otherwise.
pub fn tar_layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        append_entry(&mut b, e, 0, 0);
    }
    b.into_inner().expect("tar")
}

fn append_entry(b: &mut tar::Builder<Vec<u8>>, e: &Entry, uid: u64, gid: u64) {
    let mut h = tar::Header::new_gnu();
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_704_067_200);
    h.set_size(0);
    let (path, data): (&str, &[u8]) = match e {
        Entry::Dir { path, mode, mtime } => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(*mode);
            h.set_mtime(*mtime);
            (path, &[])
        }
        Entry::File { path, mode, data } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_size(data.len() as u64);
            (path, data)
        }
        Entry::Symlink { path, target } | Entry::HardLink { path, target } => {
            h.set_entry_type(if matches!(e, Entry::Symlink { .. }) {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Link
            });
            h.set_mode(0o777);
            h.set_link_name_literal(target.as_bytes())
                .expect("link name");
            (path, &[])
        }
        Entry::Fifo { path, mode } => {
            h.set_entry_type(tar::EntryType::Fifo);
            h.set_mode(*mode);
            (path, &[])
        }
        Entry::WithMeta {
            inner,
            uid,
            gid,
            xattrs,
        } => {
            if !xattrs.is_empty() {
                append_pax_xattrs(b, xattrs);
            }
            append_entry(b, inner, *uid, *gid);
            return;
        }
        Entry::CharDev {
            path,
            mode,
            major,
            minor,
        } => {
            h.set_entry_type(tar::EntryType::Char);
            h.set_mode(*mode);
            h.set_device_major(*major).expect("major");
            h.set_device_minor(*minor).expect("minor");
            (path, &[])
        }
    };
    // The raw name, unnormalised: a hostile layer's names are what the
    // test says, `./`, trailing slashes and all.
    b.append_data(&mut h, path, data).expect("tar entry");
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// What a crafted image is made of: its layers (uncompressed tars, pushed
/// gzipped) and the `config` part of its image config (`User`, `Cmd`, ...).
pub struct CraftedImage {
    pub layers: Vec<Vec<u8>>,
    pub config: serde_json::Value,
}

impl CraftedImage {
    /// The image config blob: diff_ids computed from the layers.
    pub fn config_blob(&self) -> Vec<u8> {
        let diff_ids: Vec<String> = self.layers.iter().map(|l| sha256_digest(l)).collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": capcri::image::host_arch(),
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": self.config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("config json")
    }

    /// Pushes the image as `registry/repo:tag` and returns the reference.
    pub fn push(&self, registry: &str, repo: &str, tag: &str) -> String {
        let config = self.config_blob();
        push_blob(registry, repo, &config);
        let mut layers = Vec::new();
        for l in &self.layers {
            let gz = gzip(l);
            push_blob(registry, repo, &gz);
            layers.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_digest(&gz),
                "size": gz.len(),
            }));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": layers,
        }))
        .expect("manifest json");
        let (status, _, body) = http(
            registry,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &manifest,
        );
        assert!(
            status / 100 == 2,
            "push manifest {repo}:{tag}: {status} {body}"
        );
        format!("{registry}/{repo}:{tag}")
    }
}

/// The layers of the test registry's `cri-lab/busybox:latest`, uncompressed
/// and in order, so a crafted image can have a working shell under its
/// hostile layer.
pub fn busybox_layers(registry: &str) -> Vec<Vec<u8>> {
    let (status, _, manifest) = http(
        registry,
        "GET",
        "/v2/cri-lab/busybox/manifests/latest",
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )],
        &[],
    );
    assert_eq!(status, 200, "busybox manifest: {manifest}");
    let m: serde_json::Value = serde_json::from_str(&manifest).expect("manifest");
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let digest = l["digest"].as_str().expect("digest");
            let gz = get_blob(registry, "cri-lab/busybox", digest);
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut out)
                .expect("gunzip busybox layer");
            out
        })
        .collect()
}

fn get_blob(registry: &str, repo: &str, digest: &str) -> Vec<u8> {
    let (status, _, body) = http_raw(
        registry,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    );
    assert_eq!(status, 200, "get blob {digest}");
    body
}

fn push_blob(registry: &str, repo: &str, blob: &[u8]) {
    let digest = sha256_digest(blob);
    let (status, headers, body) = http(
        registry,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    );
    assert_eq!(status, 202, "start upload: {body}");
    let location = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.clone())
        .expect("upload location");
    // The location may be absolute (http://host/...) or a path.
    let path = match location.find("/v2/") {
        Some(i) => location[i..].to_string(),
        None => location,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = http(
        registry,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        blob,
    );
    assert_eq!(status, 201, "put blob {digest}: {body}");
}

type Headers = Vec<(String, String)>;

fn http(
    registry: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Headers, String) {
    let (status, h, b) = http_raw(registry, method, path, headers, body);
    (status, h, String::from_utf8_lossy(&b).into_owned())
}

fn http_raw(
    registry: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Headers, Vec<u8>) {
    let mut s = TcpStream::connect(registry).unwrap_or_else(|e| panic!("connect {registry}: {e}"));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = resp[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    (status, headers, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if len == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 2 + len + 2..];
    }
}
