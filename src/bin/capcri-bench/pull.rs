//! `--pull`: a large generated image pulled cold by each runtime, timed to
//! "image present" (PullImage returned and ImageStatus finds it), with the
//! daemon's peak RSS sampled during the pull.
//!
//! The image: five layers, incompressible (pseudo-random) and compressible
//! (text-like) data, gzip and zstd, pushed to the bench's registry under a
//! tag naming its size. The generator is seeded, so the same size gives
//! the same blobs: a registry that already has the tag is not pushed to
//! again.

use super::daemons::Workspace;
use super::procfs;
use super::workload::Target;
use super::{BenchError, RuntimeKind, Settings, start_runtime};
use k8s_cri::v1 as cri;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The parameters of `--pull`.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Uncompressed size of the image, MiB.
    pub mib: u64,
    pub iterations: usize,
}

/// Data of a layer: how well it compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Data {
    /// Pseudo-random bytes: compression gains nothing (media, binaries).
    Incompressible,
    /// Text-like lines from a small vocabulary (logs, sources, JSON).
    Compressible,
    /// Half each, file by file.
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    fn media_type(self) -> &'static str {
        match self {
            Codec::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Codec::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// One layer of the generated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LayerPlan {
    pub data: Data,
    pub codec: Codec,
    /// Uncompressed file bytes, MiB.
    pub mib: u64,
}

/// Five layers summing to `total_mib` (at least 5): 30% incompressible
/// gzip, 20% compressible gzip, 20% incompressible zstd, 20% compressible
/// zstd, the rest mixed gzip.
pub fn plan(total_mib: u64) -> Vec<LayerPlan> {
    let shares = [
        (Data::Incompressible, Codec::Gzip, 30),
        (Data::Compressible, Codec::Gzip, 20),
        (Data::Incompressible, Codec::Zstd, 20),
        (Data::Compressible, Codec::Zstd, 20),
    ];
    let mut out: Vec<LayerPlan> = shares
        .iter()
        .map(|&(data, codec, pct)| LayerPlan {
            data,
            codec,
            mib: (total_mib * pct / 100).max(1),
        })
        .collect();
    let used: u64 = out.iter().map(|l| l.mib).sum();
    out.push(LayerPlan {
        data: Data::Mixed,
        codec: Codec::Gzip,
        mib: total_mib.saturating_sub(used).max(1),
    });
    out
}

/// The repository and tag of the generated image of `mib` MiB. The tag
/// carries a generator version: a change of the generator must not reuse
/// an older push.
pub fn image_name(mib: u64) -> (&'static str, String) {
    ("capcri-bench/large", format!("{mib}m-g2"))
}

/// splitmix64: a fast seeded generator, enough to defeat deflate and zstd
/// (no cryptographic need: these are test bytes).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const WORDS: [&str; 32] = [
    "container",
    "pod",
    "image",
    "layer",
    "status",
    "running",
    "kubelet",
    "cgroup",
    "memory",
    "cpu",
    "network",
    "volume",
    "mount",
    "secret",
    "config",
    "error",
    "warning",
    "info",
    "debug",
    "request",
    "response",
    "latency",
    "node",
    "cluster",
    "deployment",
    "service",
    "namespace",
    "label",
    "selector",
    "replica",
    "probe",
    "ready",
];

/// `len` bytes of one kind of data, generated as read.
struct DataReader {
    rng: SplitMix,
    data: Data,
    left: u64,
    line: Vec<u8>,
    line_pos: usize,
}

impl DataReader {
    fn new(seed: u64, data: Data, len: u64) -> DataReader {
        DataReader {
            rng: SplitMix(seed),
            data,
            left: len,
            line: Vec::new(),
            line_pos: 0,
        }
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        let buf = &mut buf[..n];
        match self.data {
            Data::Incompressible | Data::Mixed => {
                for chunk in buf.chunks_mut(8) {
                    let v = self.rng.next().to_le_bytes();
                    chunk.copy_from_slice(&v[..chunk.len()]);
                }
            }
            Data::Compressible => {
                let mut i = 0;
                while i < n {
                    if self.line_pos == self.line.len() {
                        self.line.clear();
                        let r = self.rng.next();
                        let _ = writeln!(
                            self.line,
                            "{:08} {} {}={} {} {}",
                            r & 0xffff,
                            WORDS[(r >> 16) as usize % 32],
                            WORDS[(r >> 21) as usize % 32],
                            (r >> 26) & 0x3ff,
                            WORDS[(r >> 36) as usize % 32],
                            WORDS[(r >> 41) as usize % 32],
                        );
                        self.line_pos = 0;
                    }
                    let take = (self.line.len() - self.line_pos).min(n - i);
                    buf[i..i + take]
                        .copy_from_slice(&self.line[self.line_pos..self.line_pos + take]);
                    self.line_pos += take;
                    i += take;
                }
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Passes writes through while hashing them and counting bytes.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(hash: Sha256) -> String {
    format!("sha256:{}", hex::encode(hash.finalize()))
}

/// A generated layer blob on disk.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub plan: LayerPlan,
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

/// Files of a layer: 16 MiB each (the last one shorter).
const FILE_MIB: u64 = 16;

/// Writes layer `index` of `plan` into `dir` as a compressed tar.
pub fn generate_layer(dir: &Path, index: usize, plan: LayerPlan) -> std::io::Result<LayerBlob> {
    let path = dir.join(format!("layer{index}"));
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
    let compressed = HashingWriter {
        inner: file,
        hash: Sha256::new(),
        bytes: 0,
    };
    let total = plan.mib << 20;
    // The tar stream is hashed (the diff id) before the encoder; the
    // encoder's output is hashed again (the blob digest).
    let (diff_id, compressed) = match plan.codec {
        Codec::Gzip => {
            let enc = flate2::write::GzEncoder::new(compressed, flate2::Compression::default());
            let (tar_hash, enc) = write_tar(enc, index, plan.data, total)?;
            (tar_hash, enc.finish()?)
        }
        Codec::Zstd => {
            let enc = zstd::Encoder::new(compressed, 3)?;
            let (tar_hash, enc) = write_tar(enc, index, plan.data, total)?;
            (tar_hash, enc.finish()?)
        }
    };
    let HashingWriter {
        mut inner,
        hash,
        bytes,
    } = compressed;
    inner.flush()?;
    Ok(LayerBlob {
        plan,
        path,
        digest: digest_of(hash),
        size: bytes,
        diff_id,
    })
}

fn write_tar<W: Write>(
    out: W,
    index: usize,
    data: Data,
    total: u64,
) -> std::io::Result<(String, W)> {
    let hashed = HashingWriter {
        inner: out,
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut tar = tar::Builder::new(hashed);
    let mut left = total;
    let mut file = 0u64;
    while left > 0 {
        let len = left.min(FILE_MIB << 20);
        let kind = match data {
            Data::Mixed if file.is_multiple_of(2) => Data::Incompressible,
            Data::Mixed => Data::Compressible,
            d => d,
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        let seed = ((index as u64) << 32) | file;
        tar.append_data(
            &mut h,
            format!("bench/layer{index}/f{file:04}"),
            DataReader::new(seed, kind, len),
        )?;
        left -= len;
        file += 1;
    }
    let hashed = tar.into_inner()?;
    Ok((digest_of(hashed.hash), hashed.inner))
}

/// The image config: the layers' diff ids, a shell as command.
pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": capcri::image::host_arch(),
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap_or_default()
}

/// The OCI manifest of the config and layers.
pub fn manifest_json(config: &[u8], layers: &[LayerBlob]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": l.plan.codec.media_type(),
                "digest": l.digest,
                "size": l.size,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(Sha256::new_with_prefix(config)),
            "size": config.len(),
        },
        "layers": layers,
    }))
    .unwrap_or_default()
}

fn http_err(what: String) -> impl FnOnce(reqwest::Error) -> BenchError {
    move |e| BenchError::Io {
        what,
        source: std::io::Error::other(e),
    }
}

fn status_err(what: String, status: reqwest::StatusCode) -> BenchError {
    BenchError::Io {
        what,
        source: std::io::Error::other(format!("the registry answered {status}")),
    }
}

/// Pushes a blob (monolithic upload) unless the registry has it.
async fn push_blob(
    http: &reqwest::Client,
    registry: &str,
    repo: &str,
    digest: &str,
    body: Vec<u8>,
) -> Result<(), BenchError> {
    let base = format!("http://{registry}/v2/{repo}/blobs");
    let what = format!("push blob {digest} to {registry}/{repo}");
    let head = http
        .head(format!("{base}/{digest}"))
        .send()
        .await
        .map_err(http_err(what.clone()))?;
    if head.status().is_success() {
        return Ok(());
    }
    let start = http
        .post(format!("{base}/uploads/"))
        .send()
        .await
        .map_err(http_err(what.clone()))?;
    if start.status() != reqwest::StatusCode::ACCEPTED {
        return Err(status_err(what, start.status()));
    }
    let location = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{registry}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let put = http
        .put(format!("{url}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(http_err(what.clone()))?;
    if !put.status().is_success() {
        return Err(status_err(what, put.status()));
    }
    Ok(())
}

/// Generates and pushes the image unless the registry already has its
/// tag; returns the reference and the layer plan with compressed sizes.
async fn ensure_image(
    s: &Settings,
    p: &PullSettings,
    dir: &Path,
) -> Result<(String, Vec<LayerSummary>), BenchError> {
    let (repo, tag) = image_name(p.mib);
    let reference = format!("{}/{repo}:{tag}", s.registry);
    let http = reqwest::Client::new();
    let manifest_url = format!("http://{}/v2/{repo}/manifests/{tag}", s.registry);
    let have = http
        .get(&manifest_url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .map_err(http_err(format!("ask {} for {reference}", s.registry)))?;
    if have.status().is_success() {
        let m: serde_json::Value = have
            .json_or_bytes()
            .await
            .map_err(http_err(format!("read the manifest of {reference}")))?;
        let layers = plan(p.mib)
            .into_iter()
            .zip(m["layers"].as_array().cloned().unwrap_or_default())
            .map(|(plan, l)| LayerSummary {
                plan,
                compressed_bytes: l["size"].as_u64().unwrap_or(0),
            })
            .collect();
        return Ok((reference, layers));
    }
    eprintln!(
        "capcri-bench: generating {reference} ({} MiB in 5 layers)",
        p.mib
    );
    let gen_dir = dir.join("pull-image");
    std::fs::create_dir_all(&gen_dir).map_err(|source| BenchError::Io {
        what: format!("create {}", gen_dir.display()),
        source,
    })?;
    let mut tasks = Vec::new();
    for (i, l) in plan(p.mib).into_iter().enumerate() {
        let d = gen_dir.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            generate_layer(&d, i, l)
        }));
    }
    let mut blobs = Vec::new();
    for t in tasks {
        blobs.push(t.await?.map_err(|source| BenchError::Io {
            what: "generate a layer of the pull image".into(),
            source,
        })?);
    }
    for b in &blobs {
        let body = std::fs::read(&b.path).map_err(|source| BenchError::Io {
            what: format!("read {}", b.path.display()),
            source,
        })?;
        push_blob(&http, &s.registry, repo, &b.digest, body).await?;
        let _ = std::fs::remove_file(&b.path);
    }
    let diff_ids: Vec<String> = blobs.iter().map(|b| b.diff_id.clone()).collect();
    let config = config_json(&diff_ids);
    let config_digest = digest_of(Sha256::new_with_prefix(&config));
    push_blob(&http, &s.registry, repo, &config_digest, config.clone()).await?;
    let manifest = manifest_json(&config, &blobs);
    let put = http
        .put(&manifest_url)
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .map_err(http_err(format!("push the manifest of {reference}")))?;
    if !put.status().is_success() {
        return Err(status_err(
            format!("push the manifest of {reference}"),
            put.status(),
        ));
    }
    let _ = std::fs::remove_dir_all(&gen_dir);
    Ok((
        reference,
        blobs
            .iter()
            .map(|b| LayerSummary {
                plan: b.plan,
                compressed_bytes: b.size,
            })
            .collect(),
    ))
}

/// reqwest without its `json` feature: the body as JSON by hand.
trait JsonOrBytes {
    async fn json_or_bytes(self) -> Result<serde_json::Value, reqwest::Error>;
}

impl JsonOrBytes for reqwest::Response {
    async fn json_or_bytes(self) -> Result<serde_json::Value, reqwest::Error> {
        let b = self.bytes().await?;
        Ok(serde_json::from_slice(&b).unwrap_or_default())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub plan: LayerPlan,
    pub compressed_bytes: u64,
}

/// One cold pull.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PullSample {
    pub seconds: f64,
    /// Highest VmRSS of the daemon seen during the pull (10 ms sampling).
    pub peak_daemon_rss_kib: u64,
    /// The same for the daemon plus its children (capcri's helpers, never
    /// the per-pod processes: no pod runs).
    pub peak_tree_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullRuntime {
    pub name: String,
    pub version: String,
    pub idle_rss_kib: u64,
    pub pulls: Vec<PullSample>,
    pub median_seconds: f64,
    pub max_peak_daemon_rss_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub date: String,
    pub host: super::report::Host,
    pub command: Vec<String>,
    pub image: String,
    pub uncompressed_mib: u64,
    pub layers: Vec<LayerSummary>,
    pub runtimes: Vec<PullRuntime>,
    /// containerd's median pull time over capcri's.
    pub containerd_over_capcri: Option<f64>,
    pub notes: Vec<String>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// The pull tables.
pub fn render(r: &PullReport) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "capcri bench --pull, {} on {} CPUs, Linux {}",
        r.date, r.host.cpus, r.host.kernel
    );
    if let Some(n) = r.host.note() {
        let _ = writeln!(o, "{n}");
    }
    let _ = writeln!(o, "command: {}", r.command.join(" "));
    let _ = writeln!(
        o,
        "image {} ({} MiB uncompressed)",
        r.image, r.uncompressed_mib
    );
    for (i, l) in r.layers.iter().enumerate() {
        let _ = writeln!(
            o,
            "  layer {i}: {:>5} MiB {:?} {:?}, {:.1} MiB compressed",
            l.plan.mib,
            l.plan.data,
            l.plan.codec,
            l.compressed_bytes as f64 / 1048576.0
        );
    }
    let _ = writeln!(
        o,
        "\n{:<11} {:>10} {:>12} {:>15} {:>15}  (PullImage to image present)",
        "runtime", "idle RSS", "median s", "peak daemon RSS", "peak tree RSS"
    );
    for rt in &r.runtimes {
        let tree = rt
            .pulls
            .iter()
            .map(|p| p.peak_tree_rss_kib)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            o,
            "{:<11} {:>10.1} {:>12.2} {:>15.1} {:>15.1}",
            rt.name,
            rt.idle_rss_kib as f64 / 1024.0,
            rt.median_seconds,
            rt.max_peak_daemon_rss_kib as f64 / 1024.0,
            tree as f64 / 1024.0
        );
        let each: Vec<String> = rt
            .pulls
            .iter()
            .map(|p| format!("{:.2}", p.seconds))
            .collect();
        let _ = writeln!(o, "{:<11} pulls (s): {}", "", each.join(" "));
    }
    if let Some(x) = r.containerd_over_capcri {
        let _ = writeln!(o, "containerd/capcri (median time): {x:.2}x");
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}

/// The daemon's pid and every descendant's.
fn process_tree(root: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let ppid = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_string();
                    after.split_whitespace().nth(1)?.parse::<i32>().ok()
                });
            if let Some(pp) = ppid {
                parents.push((pid, pp));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// Samples the daemon's and its tree's RSS every 10 ms until `stop`.
fn sample_peaks(
    pid: i32,
    stop: Arc<AtomicBool>,
    peak_daemon: Arc<AtomicU64>,
    peak_tree: Arc<AtomicU64>,
) {
    let mut tree = vec![pid];
    let mut round = 0u32;
    while !stop.load(Ordering::SeqCst) {
        // Walking /proc is the costly part: the tree every 10th round.
        if round.is_multiple_of(10) {
            tree = process_tree(pid);
        }
        round += 1;
        let rss = |p: i32| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|t| procfs::kib_field(&t, "VmRSS"))
                .unwrap_or(0)
        };
        let d = rss(pid);
        let t: u64 = d + tree
            .iter()
            .filter(|&&p| p != pid)
            .map(|&p| rss(p))
            .sum::<u64>();
        peak_daemon.fetch_max(d, Ordering::SeqCst);
        peak_tree.fetch_max(t, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn image_present(t: &Target, image: &str) -> Result<bool, BenchError> {
    let r = t
        .images()
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|status| BenchError::Rpc {
            runtime: t.name,
            op: "ImageStatus",
            object: image.into(),
            status,
        })?;
    Ok(r.into_inner().image.is_some())
}

/// Generates and pushes the image when needed, then `iterations` cold
/// pulls per runtime, interleaved.
pub async fn run(
    ws: &mut Workspace,
    s: &Settings,
    p: &PullSettings,
    targets: &mut Vec<Target>,
) -> Result<PullReport, BenchError> {
    let (image, layers) = ensure_image(s, p, ws.path()).await?;
    let mut runners = Vec::new();
    for &kind in &s.runtimes {
        let r = start_runtime(ws, s, kind).await?;
        targets.push(r.target.clone());
        runners.push(r);
    }
    let mut pulls: Vec<Vec<PullSample>> = vec![Vec::new(); runners.len()];
    for i in 0..p.iterations {
        for (k, r) in runners.iter().enumerate() {
            eprintln!(
                "capcri-bench: cold pull {} of {} by {}",
                i + 1,
                p.iterations,
                r.kind.name()
            );
            r.target.remove_image(&image).await?;
            // Let the removal's garbage collection finish before timing.
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Nothing written before is left dirty for this pull to flush:
            // capcri makes each layer durable with syncfs(2), which writes
            // back every dirty page of the filesystem, so without this it
            // paid for the GiB the other runtime's pull had left in the
            // page cache (capcri alone 1.62-1.84 s a pull, after containerd
            // 2.5-3.9 s; containerd the same either way).
            tokio::task::spawn_blocking(nix::unistd::sync).await?;
            let pid = ws.daemons[r.daemon_index].pid();
            let stop = Arc::new(AtomicBool::new(false));
            let (pd, pt) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let sampler = {
                let (stop, pd, pt) = (stop.clone(), pd.clone(), pt.clone());
                std::thread::spawn(move || sample_peaks(pid, stop, pd, pt))
            };
            let start = Instant::now();
            let pulled = r.target.pull(&image).await;
            let present = match pulled {
                Ok(_) => image_present(&r.target, &image).await,
                Err(e) => Err(e),
            };
            let seconds = start.elapsed().as_secs_f64();
            stop.store(true, Ordering::SeqCst);
            let _ = sampler.join();
            if !present? {
                return Err(BenchError::Usage(format!(
                    "{}: PullImage of {image} returned but ImageStatus does not find it",
                    r.kind.name()
                )));
            }
            pulls[k].push(PullSample {
                seconds,
                peak_daemon_rss_kib: pd.load(Ordering::SeqCst),
                peak_tree_rss_kib: pt.load(Ordering::SeqCst),
            });
            ws.daemons[r.daemon_index].check_alive()?;
        }
    }
    for r in &runners {
        r.target.remove_image(&image).await?;
    }
    let runtimes: Vec<PullRuntime> = runners
        .iter()
        .zip(pulls)
        .map(|(r, pulls)| PullRuntime {
            name: r.kind.name().into(),
            version: r.version.clone(),
            idle_rss_kib: r.memory_at_start.rss_kib,
            median_seconds: median(&pulls.iter().map(|p| p.seconds).collect::<Vec<_>>()),
            max_peak_daemon_rss_kib: pulls
                .iter()
                .map(|p| p.peak_daemon_rss_kib)
                .max()
                .unwrap_or(0),
            pulls,
        })
        .collect();
    let by = |k: RuntimeKind| runtimes.iter().find(|r| r.name == k.name());
    let containerd_over_capcri = match (by(RuntimeKind::Capcri), by(RuntimeKind::Containerd)) {
        (Some(a), Some(b)) if a.median_seconds > 0.0 => Some(b.median_seconds / a.median_seconds),
        _ => None,
    };
    Ok(PullReport {
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        host: super::host(),
        command: std::env::args().collect(),
        image,
        uncompressed_mib: p.mib,
        layers,
        runtimes,
        containerd_over_capcri,
        notes: vec![
            super::daemons::STATE_NOTE.into(),
            "cold pull: RemoveImage, 2 s and sync(2) (untimed) before each, so no pull writes back what an earlier one left dirty; the registry's files are in the page cache after the first pull".into(),
            "time: PullImage sent until it returned and ImageStatus found the image".into(),
            "peak RSS: VmRSS sampled every 10 ms; tree = the daemon and its descendants".into(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sums_to_the_size_with_both_codecs_and_kinds() {
        for total in [5, 10, 64, 1024, 1000] {
            let p = plan(total);
            assert_eq!(p.len(), 5);
            assert_eq!(p.iter().map(|l| l.mib).sum::<u64>(), total, "{total}");
            assert!(p.iter().all(|l| l.mib >= 1));
            for c in [Codec::Gzip, Codec::Zstd] {
                assert!(p.iter().any(|l| l.codec == c), "{total} {c:?}");
            }
            for d in [Data::Incompressible, Data::Compressible, Data::Mixed] {
                assert!(p.iter().any(|l| l.data == d), "{total} {d:?}");
            }
        }
    }

    #[test]
    fn data_compresses_as_planned() {
        let mut rnd = Vec::new();
        DataReader::new(1, Data::Incompressible, 1 << 20)
            .read_to_end(&mut rnd)
            .expect("read");
        let mut txt = Vec::new();
        DataReader::new(1, Data::Compressible, 1 << 20)
            .read_to_end(&mut txt)
            .expect("read");
        assert_eq!((rnd.len(), txt.len()), (1 << 20, 1 << 20));
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b).expect("gzip");
            e.finish().expect("gzip").len()
        };
        assert!(gz(&rnd) > rnd.len() * 99 / 100, "random data compressed");
        assert!(gz(&txt) < txt.len() / 2, "text data did not compress");
        // Seeded: the same bytes every time.
        let mut again = Vec::new();
        DataReader::new(1, Data::Incompressible, 1 << 20)
            .read_to_end(&mut again)
            .expect("read");
        assert_eq!(rnd, again);
    }

    #[test]
    fn generated_layers_decompress_to_their_diff_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, codec) in [Codec::Gzip, Codec::Zstd].into_iter().enumerate() {
            let plan = LayerPlan {
                data: Data::Mixed,
                codec,
                mib: 1,
            };
            let blob = generate_layer(dir.path(), i, plan).expect("layer");
            let bytes = std::fs::read(&blob.path).expect("blob");
            assert_eq!(bytes.len() as u64, blob.size);
            assert_eq!(blob.digest, digest_of(Sha256::new_with_prefix(&bytes)));
            let mut tar_bytes = Vec::new();
            match codec {
                Codec::Gzip => flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_end(&mut tar_bytes)
                    .expect("gunzip"),
                Codec::Zstd => zstd::Decoder::new(&bytes[..])
                    .expect("zstd")
                    .read_to_end(&mut tar_bytes)
                    .expect("unzstd"),
            };
            assert_eq!(blob.diff_id, digest_of(Sha256::new_with_prefix(&tar_bytes)));
            let mut ar = tar::Archive::new(&tar_bytes[..]);
            let sizes: Vec<u64> = ar
                .entries()
                .expect("entries")
                .map(|e| e.expect("entry").header().size().expect("size"))
                .collect();
            assert_eq!(sizes, vec![1 << 20]);
        }
        let blobs = vec![
            generate_layer(
                dir.path(),
                7,
                LayerPlan {
                    data: Data::Compressible,
                    codec: Codec::Zstd,
                    mib: 1,
                },
            )
            .expect("layer"),
        ];
        let config = config_json(&[blobs[0].diff_id.clone()]);
        let m: serde_json::Value =
            serde_json::from_slice(&manifest_json(&config, &blobs)).expect("manifest");
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        assert_eq!(m["layers"][0]["digest"], blobs[0].digest.as_str());
        assert_eq!(m["config"]["size"], config.len());
    }
}
