//! The content store and image records.
//!
//! Crash safety: config blobs are written to `blobs/tmp/` and renamed into
//! `blobs/sha256/<hex>` after their digest is checked; a layer's body
//! streams from the registry into the unpacker, which fills `layers/tmp-*`,
//! renamed to `layers/<diff-id hex>` after both the body's digest and the
//! diff_id are checked; the record is written last (atomically). So an
//! interrupted pull leaves no visible image, and `open` removes its
//! leftovers.

use crate::util::sync::lock;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::ImageError;
use super::chunk_reader::ChunkReader;
use super::digest::digest_hex;
use super::fsutil::{
    create_dir_all, list_dir, remove_any, sync_dir, temp_name, write_atomic, write_replace,
};
use super::reference::{ParsedReference, parse_reference};
use super::registry::{self, RawDescriptor, RegistriesConfig, RegistryAuth};
use super::unpack::{Compression, LayerChange, LayerUnpacker, UnpackedLayer, merge_file_caps};

/// Layers of one pull fetched and unpacked at once (see `ImageStore::pull`).
const PARALLEL_LAYERS: usize = 3;
/// Chunks of a layer's body queued between the download and the unpacker
/// (hyper hands out chunks of up to about 400 KiB): enough to keep both
/// busy, small enough that three layers in flight stay a few MiB.
const CHUNKS_IN_FLIGHT: usize = 8;

/// Cap on an image config blob. The config is parsed whole in memory
/// (serde_json holds several times its size); real configs are a few KiB,
/// the largest seen (hundreds of history entries) well under 1 MiB, so
/// 8 MiB is generous and bounds the daemon's memory per pull.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// Default of `max_compressed_layer_bytes`: the uncompressed default
/// (`max_layer_bytes`, 8 GiB) is the most a compressed layer can usefully
/// be, so the same figure.
pub const DEFAULT_MAX_COMPRESSED_LAYER_BYTES: u64 = 8 << 30;

/// A size cap and the setting that raises it (named in the error).
#[derive(Clone, Copy)]
struct BlobLimit {
    bytes: u64,
    setting: &'static str,
}

impl BlobLimit {
    /// Refuses a descriptor that declares more than the cap, before any
    /// byte is requested.
    fn check(&self, desc: &RawDescriptor, object: &str) -> Result<(), ImageError> {
        if u64::try_from(desc.size).is_ok_and(|size| size > self.bytes) {
            return Err(ImageError::BlobTooLarge {
                object: object.to_string(),
                digest: desc.digest.clone(),
                media_type: desc.media_type.clone(),
                size: desc.size,
                limit: self.bytes,
                setting: self.setting,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct ImageStoreConfig {
    pub root: PathBuf,
    pub registries: RegistriesConfig,
    /// Uncompressed cap per layer: gzip-bomb guard.
    pub max_layer_bytes: u64,
    /// Cap on one compressed layer blob (declared and received).
    pub max_compressed_layer_bytes: u64,
    /// Cap on one layer entry's xattr bytes (`LayerUnpacker`).
    pub max_entry_xattr_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// "sha256:<hex of the config blob digest>", what containerd reports as image id.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer blob sizes, like containerd.
    pub size: u64,
    pub config: ImageConfiguration,
    pub diff_ids: Vec<String>,
    /// Absolute path in the rootfs -> raw security.capability bytes.
    pub file_caps: BTreeMap<String, Vec<u8>>,
}

impl super::names::KnownNames for ImageRecord {
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

impl ImageRecord {
    /// The image's USER as CRI ImageStatus wants it: a numeric user is a uid,
    /// anything else a name; a group after ':' is not part of either.
    pub fn uid_and_username(&self) -> (Option<i64>, String) {
        split_user(&self.user())
    }

    fn user(&self) -> String {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.user().clone())
            .unwrap_or_default()
    }
}

/// ImageStatus's view of USER, from the same parser CreateContainer uses, so
/// a uid is reported only when the process will run as exactly that uid.
/// A name is reported as a name even when the image's /etc/passwd maps it to
/// a non-zero uid: kubelet then refuses runAsNonRoot unless the pod sets
/// runAsUser, which is containerd's behaviour and never claims non-root for
/// a name that resolves to 0. A USER the parser refuses (only in records
/// pulled before the check existed: pull refuses them) is reported as a
/// name, never a uid, and CreateContainer refuses it.
fn split_user(user: &str) -> (Option<i64>, String) {
    if user.is_empty() {
        return (None, String::new());
    }
    match crate::spec::parse_user_spec(user) {
        Ok(spec) => match spec.user {
            crate::spec::IdPart::Id(uid) => (Some(i64::from(uid)), String::new()),
            crate::spec::IdPart::Name(name) => (None, name),
        },
        Err(_) => (None, user.split(':').next().unwrap_or(user).to_string()),
    }
}

/// Refuses at pull an image whose USER the runtime would refuse to run
/// (CVE-2024-40635 class, issue 12 item 2): such an image never reaches the
/// store, so ImageStatus never reports a uid for it.
fn check_image_user(image: &str, config: &ImageConfiguration) -> Result<(), ImageError> {
    let user = config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    if user.is_empty() {
        return Ok(());
    }
    crate::spec::parse_user_spec(&user)
        .map(|_| ())
        .map_err(|reason| ImageError::InvalidUser {
            image: image.to_string(),
            user,
            reason,
        })
}

#[derive(Clone, Debug)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
    pub timestamp_nanos: i64,
}

/// What is persisted per image: the record plus what GC needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredImage {
    record: ImageRecord,
    layer_blobs: Vec<String>,
}

/// Pins digests while a pull uses them, so a concurrent `remove` does not
/// collect a blob or layer that is not yet referenced by a record.
struct PinGuard<'a> {
    store: &'a ImageStore,
    keys: Vec<String>,
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        let mut pins = lock(&self.store.pins);
        for k in &self.keys {
            if let Some(n) = pins.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(k);
                }
            }
        }
    }
}

pub struct ImageStore {
    cfg: ImageStoreConfig,
    images: Mutex<BTreeMap<String, StoredImage>>,
    pins: Mutex<HashMap<String, usize>>,
    /// Per-digest locks: one download / unpack of a blob or layer at a time.
    digest_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bytes of blobs fetched from registries since the store was opened
    /// (`capcri_image_pull_bytes_total`); blobs already stored add nothing.
    fetched_bytes: AtomicU64,
    /// Layers a live container (its rootfs or an image volume) is mounted
    /// on, by holder (the container id): kept by `collect_garbage` after
    /// RemoveImage drops the image record, as containerd keeps a
    /// container's snapshot. Persisted under `leases/`.
    leases: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// `fs_usage`'s last walk, valid while no pull, remove or collection
    /// has changed the store since (kubelet asks every 10 s; the walk
    /// reads every inode of every layer).
    usage_cache: Mutex<UsageCache>,
    /// The manifest client every pull shares, built at the first pull
    /// (`registry::manifest_http_client`).
    manifest_http: std::sync::OnceLock<reqwest::Client>,
}

#[derive(Default)]
struct UsageCache {
    /// Bumped by every change to the store's content.
    generation: u64,
    /// The figures and the generation they were walked at.
    value: Option<(u64, FsUsage)>,
}

impl ImageStore {
    fn blobs_dir(&self) -> PathBuf {
        self.cfg.root.join("blobs/sha256")
    }
    fn blob_tmp_dir(&self) -> PathBuf {
        self.cfg.root.join("blobs/tmp")
    }
    fn layers_dir(&self) -> PathBuf {
        self.cfg.root.join("layers")
    }
    fn meta_dir(&self) -> PathBuf {
        self.cfg.root.join("layermeta")
    }
    fn images_dir(&self) -> PathBuf {
        self.cfg.root.join("images")
    }
    fn leases_dir(&self) -> PathBuf {
        self.cfg.root.join("leases")
    }

    /// Opens the store: loads records, deletes leftovers of interrupted pulls
    /// and anything no record references.
    pub fn open(cfg: ImageStoreConfig) -> Result<ImageStore, ImageError> {
        let store = ImageStore {
            cfg,
            images: Mutex::new(BTreeMap::new()),
            pins: Mutex::new(HashMap::new()),
            digest_locks: Mutex::new(HashMap::new()),
            fetched_bytes: AtomicU64::new(0),
            leases: Mutex::new(BTreeMap::new()),
            usage_cache: Mutex::new(UsageCache::default()),
            manifest_http: std::sync::OnceLock::new(),
        };
        for d in [
            store.blobs_dir(),
            store.blob_tmp_dir(),
            store.layers_dir(),
            store.meta_dir(),
            store.images_dir(),
            store.leases_dir(),
        ] {
            create_dir_all(&d)?;
        }
        remove_any(&store.blob_tmp_dir())?;
        create_dir_all(&store.blob_tmp_dir())?;
        for dir in [
            store.layers_dir(),
            store.meta_dir(),
            store.images_dir(),
            store.leases_dir(),
        ] {
            for (name, path) in list_dir(&dir)? {
                if name.starts_with("tmp-") {
                    remove_any(&path)?;
                }
            }
        }
        let mut images = BTreeMap::new();
        for (name, path) in list_dir(&store.images_dir())? {
            if !name.ends_with(".json") {
                continue;
            }
            let data =
                fs::read(&path).map_err(|e| ImageError::io("read image record", &path, e))?;
            let stored: StoredImage =
                serde_json::from_slice(&data).map_err(|e| ImageError::Corrupt {
                    path: path.clone(),
                    reason: format!("not a valid image record: {e}"),
                })?;
            images.insert(stored.record.id.clone(), stored);
        }
        *lock(&store.images) = images;
        *lock(&store.leases) = store.load_leases()?;
        store.collect_garbage()?;
        Ok(store)
    }

    fn digest_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.digest_locks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn pin(&self, keys: Vec<String>) -> PinGuard<'_> {
        let mut pins = lock(&self.pins);
        for k in &keys {
            *pins.entry(k.clone()).or_insert(0) += 1;
        }
        PinGuard { store: self, keys }
    }

    /// Pulls `reference` (mirrors first), stores blobs and layers, records the image.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let parsed = parse_reference(reference)?;
        let image = parsed.normalized();
        let http = self
            .manifest_http
            .get_or_init(registry::manifest_http_client);
        let (session, manifest) =
            registry::resolve(&self.cfg.registries, http, &parsed, auth).await?;
        tracing::info!(image = %image, endpoint = %session.endpoint.host, digest = %manifest.top_digest, manifest = %manifest.manifest_digest, "pulling");
        let mut keys = vec![manifest.config.digest.clone()];
        keys.extend(manifest.layers.iter().map(|l| l.digest.clone()));
        let _pins = self.pin(keys);

        let config_path = self
            .ensure_blob(
                &session,
                &manifest.config,
                &format!("config {} of image {image}", manifest.config.digest),
                BlobLimit {
                    bytes: MAX_CONFIG_BYTES,
                    setting: "none (a fixed bound: an image config is a few KiB)",
                },
            )
            .await?;
        let config_bytes = fs::read(&config_path)
            .map_err(|e| ImageError::io("read image config", &config_path, e))?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| ImageError::Unsupported {
                object: format!("config {} of image {image}", manifest.config.digest),
                reason: format!("not an OCI/Docker image config: {e}"),
            })?;
        check_image_user(&image, &config)?;
        let diff_ids: Vec<String> = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Corrupt {
                path: config_path,
                reason: format!(
                    "image {image}: the config lists {} diff_ids but the manifest {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        let _layer_pins = self.pin(diff_ids.clone());
        // Layers are fetched and unpacked PARALLEL_LAYERS at a time, in
        // order: one layer's download overlaps another's decompression
        // and unpack (both CPU and network busy), as containerd's
        // max_concurrent_downloads (3) does. Each layer streams to its blob
        // file and unpacks from it, so the daemon's memory does not grow
        // with the layer count or size.
        let mut fetches = Vec::with_capacity(diff_ids.len());
        for (desc, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            fetches.push(self.ensure_layer(&session, desc, diff_id, &image));
        }
        let layer_changes: Vec<Vec<LayerChange>> = futures_util::stream::iter(fetches)
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;
        let file_caps = merge_file_caps(layer_changes.iter().map(|c| c.as_slice()));
        let size = manifest
            .layers
            .iter()
            .map(|l| u64::try_from(l.size).unwrap_or(0))
            .sum();
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            size,
            config,
            diff_ids,
            file_caps,
        };
        let stored = StoredImage {
            record,
            layer_blobs: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        };
        self.commit(stored, &parsed, &manifest.top_digest)
    }

    /// Adds the record (or merges into the one with the same id) and moves the tag.
    fn commit(
        &self,
        stored: StoredImage,
        parsed: &ParsedReference,
        top_digest: &str,
    ) -> Result<ImageRecord, ImageError> {
        let mut images = lock(&self.images);
        self.invalidate_usage();
        let changed = apply_pull(&mut images, stored.clone(), parsed, top_digest);
        for id in changed {
            if let Some(s) = images.get(&id) {
                self.persist(s)?;
            }
        }
        images
            .get(&stored.record.id)
            .map(|s| s.record.clone())
            .ok_or_else(|| ImageError::Corrupt {
                path: self.images_dir(),
                reason: format!("record {} vanished while being written", stored.record.id),
            })
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        Ok(self
            .images_dir()
            .join(format!("{}.json", digest_hex("image id", id)?)))
    }

    fn persist(&self, stored: &StoredImage) -> Result<(), ImageError> {
        let path = self.record_path(&stored.record.id)?;
        let data = serde_json::to_vec_pretty(stored).map_err(|e| ImageError::Corrupt {
            path: path.clone(),
            reason: format!("cannot serialise: {e}"),
        })?;
        write_atomic(&path, &data)
    }

    /// Fetches a blob into the store unless there. `limit` caps its size
    /// and `setting` names the configuration key that raises it: a
    /// descriptor declaring more is refused before the download, and
    /// `fetch_blob` cuts off a body longer than its descriptor.
    async fn ensure_blob(
        &self,
        session: &registry::Session,
        desc: &RawDescriptor,
        object: &str,
        limit: BlobLimit,
    ) -> Result<PathBuf, ImageError> {
        let hex = digest_hex(object, &desc.digest)?;
        limit.check(desc, object)?;
        let path = self.blobs_dir().join(hex);
        let lock = self.digest_lock(&desc.digest);
        let _held = lock.lock().await;
        if let Ok(m) = fs::metadata(&path)
            && i64::try_from(m.len()).ok() == Some(desc.size)
        {
            return Ok(path);
        }
        let tmp = self.blob_tmp_dir().join(temp_name());
        let result = session.fetch_blob(desc, object, &tmp).await;
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The fetch verified the digest and so the size.
        self.fetched_bytes
            .fetch_add(u64::try_from(desc.size).unwrap_or(0), Ordering::Relaxed);
        fs::rename(&tmp, &path)
            .map_err(|e| ImageError::io("move blob into the store", &path, e))?;
        sync_dir(&self.blobs_dir())?;
        Ok(path)
    }

    async fn ensure_layer(
        &self,
        session: &registry::Session,
        desc: &RawDescriptor,
        diff_id: &str,
        image: &str,
    ) -> Result<Vec<LayerChange>, ImageError> {
        let object = format!("layer {} of image {image}", desc.digest);
        let hex = digest_hex(&object, diff_id)?.to_string();
        let dir = self.layers_dir().join(&hex);
        let meta = self.meta_dir().join(format!("{hex}.json"));
        let lock = self.digest_lock(diff_id);
        let _held = lock.lock().await;
        if dir.is_dir()
            && let Ok(data) = fs::read(&meta)
            && let Ok(unpacked) = serde_json::from_slice::<UnpackedLayer>(&data)
        {
            return Ok(unpacked.changes);
        }
        let compression = Compression::from_media_type(&desc.media_type).ok_or_else(|| {
            ImageError::Unsupported {
                object: object.clone(),
                reason: format!(
                    "layer media type {:?}; supported: OCI/Docker tar, tar+gzip, tar+zstd",
                    desc.media_type
                ),
            }
        })?;
        BlobLimit {
            bytes: self.cfg.max_compressed_layer_bytes,
            setting: "max_compressed_layer_bytes",
        }
        .check(desc, &object)?;
        remove_any(&dir)?;
        let tmp = self.layers_dir().join(temp_name());
        let unpacker = LayerUnpacker {
            layer: desc.digest.clone(),
            max_bytes: self.cfg.max_layer_bytes,
            keep_ownership: nix::unistd::geteuid().is_root(),
            max_entry_xattr_bytes: self.cfg.max_entry_xattr_bytes,
        };
        let expected = diff_id.to_string();
        // The body streams from the registry into the unpacker, never to a
        // blob file: no 2 x the layer's compressed size of writes, fsync
        // and read-back, and the download overlaps the decompression (as
        // CRI-O's storage does). The unpacked tree stays in a temporary
        // directory until both the blob's digest (checked here, at the end
        // of the body) and the diff_id (checked by the unpacker) match.
        let mut body = session.blob_body(desc, &object).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
        let tmp2 = tmp.clone();
        let unpack = tokio::task::spawn_blocking(move || {
            unpacker.unpack(ChunkReader::new(rx), compression, &tmp2, Some(&expected))
        });
        let downloaded = async {
            let mut tx = Some(tx);
            while let Some(chunk) = body.next_chunk().await? {
                // An unpacker that stopped (a bad or oversized layer) takes
                // no more; the rest is still read, within the declared
                // size, so a wrong body is reported as the digest mismatch
                // it is rather than as whatever the unpacker tripped on.
                if let Some(sender) = &tx
                    && sender.send(chunk).await.is_err()
                {
                    tx = None;
                }
            }
            Ok::<(), ImageError>(())
        }
        .await;
        // Every exit waits for the unpacker: its directory is removed only
        // once nothing writes into it any more.
        let unpacked = unpack
            .await
            .map_err(|e| ImageError::io("unpack layer", &tmp, std::io::Error::other(e.to_string())))
            .and_then(|r| r);
        let unpacked = match (downloaded, unpacked) {
            (Ok(()), Ok(unpacked)) => {
                self.fetched_bytes
                    .fetch_add(body.received(), Ordering::Relaxed);
                unpacked
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                let _ = remove_any(&tmp);
                return Err(e);
            }
        };
        let data = serde_json::to_vec(&unpacked).map_err(|e| ImageError::Corrupt {
            path: meta.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&meta, &data)?;
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = remove_any(&tmp);
            return Err(ImageError::io("move layer into the store", &dir, e));
        }
        sync_dir(&self.layers_dir())?;
        Ok(unpacked.changes)
    }

    /// Bytes of blobs fetched from registries since the store was opened.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched_bytes.load(Ordering::Relaxed)
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        lock(&self.images)
            .values()
            .map(|s| s.record.clone())
            .collect()
    }

    pub fn resolve(&self, reference_or_id: &str) -> Option<ImageRecord> {
        let images = lock(&self.images);
        find_image(&images, reference_or_id)
            .and_then(|id| images.get(&id))
            .map(|s| s.record.clone())
    }

    /// Removes the image with all its tags and collects what no image uses any more.
    pub fn remove(&self, reference_or_id: &str) -> Result<bool, ImageError> {
        {
            let mut images = lock(&self.images);
            let Some(id) = find_image(&images, reference_or_id) else {
                return Ok(false);
            };
            let path = self.record_path(&id)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("remove image record", &path, e)),
            }
            sync_dir(&self.images_dir())?;
            images.remove(&id);
        }
        self.collect_garbage()?;
        Ok(true)
    }

    /// Changes of the store's content so far (pulls, removals,
    /// collections): the records, and so the names
    /// [`ImageStore::reported_name`] gives, are the same while it is. A
    /// pull's commit counts it under the records' lock, a removal in the
    /// collection that follows it.
    pub fn generation(&self) -> u64 {
        lock(&self.usage_cache).generation
    }

    /// The name to report for image `image_id` given what the caller asked
    /// for, most specific first (`names::reported_name`): ContainerStatus,
    /// ListContainers and the policy facts' `image.name` all come from here.
    pub fn reported_name(&self, image_id: &str, asked: &[&str]) -> String {
        let images = lock(&self.images);
        match images.get(image_id) {
            Some(s) => super::names::reported_name(&s.record, asked),
            None => super::names::reported_name_without_record(image_id, asked),
        }
    }

    /// Marks the layers of image `image_id` as used by `holder` (a
    /// container id) until `release(holder)`: RemoveImage may drop the
    /// record, but not these layers. Returns the image as it is now;
    /// NotFound when it was removed since the caller resolved it (the
    /// lease is taken under the records' lock, so no collection can come
    /// between).
    pub fn lease(&self, holder: &str, image_id: &str) -> Result<ImageRecord, ImageError> {
        let images = lock(&self.images);
        let record = images
            .get(image_id)
            .map(|s| s.record.clone())
            .ok_or_else(|| ImageError::NotFound {
                image: image_id.to_string(),
                reason: "it was removed while the container was being created; pull it again"
                    .into(),
            })?;
        let mut leases = lock(&self.leases);
        let mut layers = leases.get(holder).cloned().unwrap_or_default();
        for d in &record.diff_ids {
            layers.insert(digest_hex(&format!("image {image_id}"), d)?.to_string());
        }
        self.persist_lease(holder, &layers)?;
        leases.insert(holder.to_string(), layers);
        Ok(record)
    }

    /// Ends `holder`'s lease and collects the layers only it kept.
    /// Idempotent.
    pub fn release(&self, holder: &str) -> Result<(), ImageError> {
        let had = {
            let mut leases = lock(&self.leases);
            let path = self.lease_path(holder)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("remove layer lease", &path, e)),
            }
            leases.remove(holder).is_some()
        };
        if had {
            self.collect_garbage()?;
        }
        Ok(())
    }

    /// The holders with a lease (after a restart: to release those whose
    /// container is gone).
    pub fn lease_holders(&self) -> Vec<String> {
        lock(&self.leases).keys().cloned().collect()
    }

    /// Whether `holder` has a lease.
    pub fn has_lease(&self, holder: &str) -> bool {
        lock(&self.leases).contains_key(holder)
    }

    /// After a restart: releases the leases of containers that are gone
    /// (removed while the daemon was down, or a crash between the lease and
    /// the container record) and leases the images of live containers that
    /// have none (created by a capcri without leases), so a later
    /// RemoveImage keeps their layers. `live`: container id -> the ids or
    /// references of the images it is mounted on.
    pub fn reconcile_leases(&self, live: &BTreeMap<String, Vec<String>>) {
        for holder in self.lease_holders() {
            if !live.contains_key(&holder)
                && let Err(e) = self.release(&holder)
            {
                tracing::warn!(container.id = %holder, error = %e, "cannot release the layer lease of a removed container");
            }
        }
        for (holder, image_ids) in live {
            if self.has_lease(holder) {
                continue;
            }
            for id in image_ids {
                // An image removed before leases existed: nothing to keep.
                if let Some(image) = self.resolve(id)
                    && let Err(e) = self.lease(holder, &image.id)
                {
                    tracing::warn!(container.id = %holder, image = %id, error = %e, "cannot lease the layers of a live container");
                }
            }
        }
    }

    fn lease_path(&self, holder: &str) -> Result<PathBuf, ImageError> {
        // Holders are capcri's own 64-hex container ids; anything else
        // would be a bug, never a path to follow.
        if holder.is_empty()
            || holder.len() > 128
            || !holder
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ImageError::Corrupt {
                path: self.leases_dir(),
                reason: format!("invalid lease holder {holder:?}"),
            });
        }
        Ok(self.leases_dir().join(format!("{holder}.json")))
    }

    /// Without fsync: every lease is rebuilt at start from the container
    /// records, which CreateContainer writes durably before it answers
    /// (`reconcile_leases`), and a lease only matters while the daemon
    /// runs. A crash of capcri leaves the file whole (the page cache
    /// outlives the process); a crash of the machine, after which no
    /// container runs, may leave it empty or cut, and `load_leases` drops
    /// such a file. Its two fsyncs were about 0.4 ms of every
    /// CreateContainer on this machine's disk, more on a busy one.
    fn persist_lease(&self, holder: &str, layers: &BTreeSet<String>) -> Result<(), ImageError> {
        let path = self.lease_path(holder)?;
        let data = serde_json::to_vec(layers).map_err(|e| ImageError::Corrupt {
            path: path.clone(),
            reason: format!("cannot serialise: {e}"),
        })?;
        write_replace(&path, &data)
    }

    fn load_leases(&self) -> Result<BTreeMap<String, BTreeSet<String>>, ImageError> {
        let mut leases = BTreeMap::new();
        for (name, path) in list_dir(&self.leases_dir())? {
            let Some(holder) = name.strip_suffix(".json") else {
                continue;
            };
            let data = fs::read(&path).map_err(|e| ImageError::io("read layer lease", &path, e))?;
            match serde_json::from_slice::<BTreeSet<String>>(&data) {
                Ok(layers) => {
                    leases.insert(holder.to_string(), layers);
                }
                // Written without fsync (`persist_lease`): a machine crash
                // may cut it. The container's record leases its image
                // again in `reconcile_leases`.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping a layer lease a crash cut short; the container's record renews it");
                    remove_any(&path)?;
                }
            }
        }
        Ok(leases)
    }

    /// Deletes blobs, layers and layer metadata no record references, no
    /// pull holds and no live container is mounted on.
    fn collect_garbage(&self) -> Result<(), ImageError> {
        let images = lock(&self.images);
        let pins = lock(&self.pins);
        let leases = lock(&self.leases);
        self.invalidate_usage();
        let mut keep: HashSet<String> = pins
            .keys()
            .filter_map(|d| d.strip_prefix("sha256:").map(str::to_string))
            .collect();
        keep.extend(leases.values().flatten().cloned());
        for s in images.values() {
            for d in std::iter::once(&s.record.id)
                .chain(&s.layer_blobs)
                .chain(&s.record.diff_ids)
            {
                if let Some(hex) = d.strip_prefix("sha256:") {
                    keep.insert(hex.to_string());
                }
            }
        }
        for (name, path) in list_dir(&self.blobs_dir())? {
            if !keep.contains(&name) {
                remove_any(&path)?;
            }
        }
        for (name, path) in list_dir(&self.layers_dir())? {
            if !name.starts_with("tmp-") && !keep.contains(&name) {
                remove_any(&path)?;
            }
        }
        for (name, path) in list_dir(&self.meta_dir())? {
            let hex = name.trim_end_matches(".json");
            if !name.starts_with("tmp-") && !keep.contains(hex) {
                remove_any(&path)?;
            }
        }
        Ok(())
    }

    /// Real figures of the image root: allocated bytes and inodes, hard
    /// links counted once. Walked once per change of the store (pull,
    /// remove, collection), not per call.
    pub fn fs_usage(&self) -> Result<FsUsage, ImageError> {
        let generation = {
            let cache = lock(&self.usage_cache);
            if let Some((g, usage)) = &cache.value
                && *g == cache.generation
            {
                return Ok(FsUsage {
                    timestamp_nanos: now_nanos(),
                    ..usage.clone()
                });
            }
            cache.generation
        };
        let usage = self.walk_usage()?;
        let mut cache = lock(&self.usage_cache);
        // A change during the walk bumped the generation: the figures may
        // miss it, so they are returned but not kept.
        if cache.generation == generation {
            cache.value = Some((generation, usage.clone()));
        }
        Ok(usage)
    }

    fn invalidate_usage(&self) {
        let mut cache = lock(&self.usage_cache);
        cache.generation += 1;
        cache.value = None;
    }

    fn walk_usage(&self) -> Result<FsUsage, ImageError> {
        let mut seen = HashSet::new();
        let mut used_bytes = 0u64;
        let mut inodes_used = 0u64;
        let mut stack = vec![self.cfg.root.clone()];
        while let Some(dir) = stack.pop() {
            for (_, path) in list_dir(&dir)? {
                let m = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ImageError::io("inspect", &path, e)),
                };
                if seen.insert((m.dev(), m.ino())) {
                    used_bytes += m.blocks() * 512;
                    inodes_used += 1;
                }
                if m.is_dir() {
                    stack.push(path);
                }
            }
        }
        Ok(FsUsage {
            mountpoint: self.cfg.root.clone(),
            used_bytes,
            inodes_used,
            timestamp_nanos: now_nanos(),
        })
    }

    /// The layer directories of `image`, bottom-most first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        image
            .diff_ids
            .iter()
            .map(|d| {
                let dir = self
                    .layers_dir()
                    .join(digest_hex(&format!("image {}", image.id), d)?);
                if dir.is_dir() {
                    Ok(dir)
                } else {
                    Err(ImageError::NotFound {
                        image: image.id.clone(),
                        reason: format!(
                            "layer {d} is not in the store at {}; pull the image again",
                            dir.display()
                        ),
                    })
                }
            })
            .collect()
    }

    pub fn root(&self) -> &Path {
        &self.cfg.root
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Merges a freshly pulled image into the records: same id = same record
/// (one more tag), a tag moves away from the image it named before.
/// Returns the ids whose records changed.
fn apply_pull(
    images: &mut BTreeMap<String, StoredImage>,
    stored: StoredImage,
    parsed: &ParsedReference,
    top_digest: &str,
) -> Vec<String> {
    let id = stored.record.id.clone();
    let tag = match (&parsed.tag, &parsed.digest) {
        (Some(t), None) => Some(format!("{}:{t}", parsed.name())),
        _ => None,
    };
    let repo_digest = format!("{}@{top_digest}", parsed.name());
    let mut changed = vec![id.clone()];
    if let Some(tag) = &tag {
        for (other_id, other) in images.iter_mut() {
            if *other_id != id && other.record.repo_tags.contains(tag) {
                other.record.repo_tags.retain(|t| t != tag);
                changed.push(other_id.clone());
            }
        }
    }
    let entry = images.entry(id).or_insert(stored.clone());
    // Fresh layer facts win (e.g. a record written by an older capcri).
    entry.record.file_caps = stored.record.file_caps;
    entry.layer_blobs = stored.layer_blobs;
    if let Some(tag) = tag
        && !entry.record.repo_tags.contains(&tag)
    {
        entry.record.repo_tags.push(tag);
    }
    if !entry.record.repo_digests.contains(&repo_digest) {
        entry.record.repo_digests.push(repo_digest);
    }
    changed
}

/// Finds an image by full id, bare hex id, tag, digest reference, or unique id prefix.
fn find_image(images: &BTreeMap<String, StoredImage>, r: &str) -> Option<String> {
    if images.contains_key(r) {
        return Some(r.to_string());
    }
    let full = format!("sha256:{r}");
    if r.len() == 64 && images.contains_key(&full) {
        return Some(full);
    }
    if let Ok(parsed) = parse_reference(r) {
        let normalized = parsed.normalized();
        let hit = images.values().find(|s| {
            if parsed.digest.is_some() {
                let by_digest = format!(
                    "{}@{}",
                    parsed.name(),
                    parsed.digest.as_deref().unwrap_or_default()
                );
                s.record.repo_digests.contains(&by_digest)
            } else {
                s.record.repo_tags.contains(&normalized)
            }
        });
        if let Some(s) = hit {
            return Some(s.record.id.clone());
        }
    }
    let prefix = r.strip_prefix("sha256:").unwrap_or(r);
    if !prefix.is_empty() && prefix.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        let mut matches = images.keys().filter(|id| {
            id.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(prefix))
        });
        if let (Some(id), None) = (matches.next(), matches.next()) {
            return Some(id.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id_char: char, user: &str) -> StoredImage {
        let id = format!("sha256:{}", id_char.to_string().repeat(64));
        let config: ImageConfiguration = serde_json::from_str(&format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"User":"{user}"}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        ))
        .unwrap();
        StoredImage {
            record: ImageRecord {
                id,
                repo_tags: vec![],
                repo_digests: vec![],
                size: 0,
                config,
                diff_ids: vec![],
                file_caps: BTreeMap::new(),
            },
            layer_blobs: vec![],
        }
    }

    const MD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn tags_merge_and_move() {
        let mut images = BTreeMap::new();
        apply_pull(
            &mut images,
            stored('a', ""),
            &parse_reference("busybox").unwrap(),
            MD,
        );
        apply_pull(
            &mut images,
            stored('a', ""),
            &parse_reference("registry.k8s.io/e2e-test-images/busybox:1.29-2").unwrap(),
            MD,
        );
        assert_eq!(images.len(), 1);
        let a = &images[&format!("sha256:{}", "a".repeat(64))].record;
        assert_eq!(
            a.repo_tags,
            vec![
                "docker.io/library/busybox:latest",
                "registry.k8s.io/e2e-test-images/busybox:1.29-2"
            ]
        );
        assert_eq!(
            a.repo_digests,
            vec![
                format!("docker.io/library/busybox@{MD}"),
                format!("registry.k8s.io/e2e-test-images/busybox@{MD}")
            ]
        );

        // busybox:latest now points to another image: the tag moves.
        let changed = apply_pull(
            &mut images,
            stored('b', ""),
            &parse_reference("docker.io/library/busybox:latest").unwrap(),
            MD,
        );
        assert_eq!(changed.len(), 2);
        let a = &images[&format!("sha256:{}", "a".repeat(64))].record;
        assert_eq!(
            a.repo_tags,
            vec!["registry.k8s.io/e2e-test-images/busybox:1.29-2"]
        );
        let b = &images[&format!("sha256:{}", "b".repeat(64))].record;
        assert_eq!(b.repo_tags, vec!["docker.io/library/busybox:latest"]);
    }

    #[test]
    fn resolve_by_every_form() {
        let mut images = BTreeMap::new();
        apply_pull(
            &mut images,
            stored('a', ""),
            &parse_reference("busybox").unwrap(),
            MD,
        );
        apply_pull(
            &mut images,
            stored('b', ""),
            &parse_reference("registry.k8s.io/pause:3.9").unwrap(),
            MD,
        );
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(find_image(&images, &a), Some(a.clone()));
        assert_eq!(find_image(&images, &"a".repeat(64)), Some(a.clone()));
        assert_eq!(find_image(&images, "aaaa"), Some(a.clone()));
        assert_eq!(find_image(&images, "sha256:bbb"), Some(b.clone()));
        assert_eq!(find_image(&images, "busybox"), Some(a.clone()));
        assert_eq!(
            find_image(&images, "docker.io/library/busybox:latest"),
            Some(a.clone())
        );
        assert_eq!(
            find_image(&images, "registry.k8s.io/pause:3.9"),
            Some(b.clone())
        );
        assert_eq!(
            find_image(&images, &format!("registry.k8s.io/pause@{MD}")),
            Some(b.clone())
        );
        assert_eq!(find_image(&images, "registry.k8s.io/pause:3.10"), None);
        assert_eq!(find_image(&images, "c"), None);
        assert_eq!(find_image(&images, "busybox:1"), None);
    }

    #[test]
    fn user_split_as_cri_wants() {
        assert_eq!(split_user("1002"), (Some(1002), String::new()));
        assert_eq!(split_user("www-data"), (None, "www-data".to_string()));
        assert_eq!(split_user("1003:1004"), (Some(1003), String::new()));
        assert_eq!(split_user("www-data:1004"), (None, "www-data".to_string()));
        assert_eq!(split_user(""), (None, String::new()));
        assert_eq!(
            stored('a', "65535:65535").record.uid_and_username(),
            (Some(65535), String::new())
        );
    }

    /// ImageStatus never reports a uid for a numeric-looking USER that is
    /// not a valid id (the process would not run as it), and pull refuses
    /// such a config before any layer is fetched.
    #[test]
    fn invalid_users_are_never_reported_as_uids() {
        for user in [
            "-1",
            "-1:0",
            "+5",
            "4294967295",
            "4294967296",
            " 1000",
            "1000 ",
            "0x10",
            "1000:-1",
            "1000:",
            ":0",
            "1:2:3",
        ] {
            let (uid, _) = split_user(user);
            assert_eq!(uid, None, "USER {user:?}");
            let config: ImageConfiguration = serde_json::from_str(&format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"User":{}}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
                serde_json::to_string(user).unwrap()
            ))
            .unwrap();
            let err = check_image_user("img", &config).unwrap_err();
            assert!(matches!(err, ImageError::InvalidUser { .. }), "{user:?}");
            assert!(err.to_string().contains("CVE-2024-40635"), "{err}");
        }
        assert_eq!(split_user("0007"), (Some(7), String::new()));
        assert_eq!(split_user("2147483647"), (Some(2147483647), String::new()));
    }

    fn test_config(root: &Path) -> ImageStoreConfig {
        ImageStoreConfig {
            root: root.to_path_buf(),
            registries: RegistriesConfig::default(),
            max_layer_bytes: 1 << 20,
            max_compressed_layer_bytes: 1 << 20,
            max_entry_xattr_bytes: crate::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
        }
    }

    /// An image record with one unpacked layer of `bytes` bytes, written
    /// the way a pull leaves them; returns the layer directory.
    fn seed_image(
        root: &Path,
        id_char: char,
        layer_char: char,
        tag: &str,
        bytes: usize,
    ) -> PathBuf {
        let layer_hex = layer_char.to_string().repeat(64);
        let layer = root.join(format!("layers/{layer_hex}"));
        fs::create_dir_all(layer.join("bin")).unwrap();
        fs::write(layer.join("bin/data"), vec![7u8; bytes]).unwrap();
        fs::write(
            root.join(format!("layermeta/{layer_hex}.json")),
            b"{\"changes\":[]}",
        )
        .unwrap();
        let mut s = stored(id_char, "");
        s.record.repo_tags.push(tag.into());
        s.record.diff_ids = vec![format!("sha256:{layer_hex}")];
        fs::write(
            root.join(format!("images/{}.json", id_char.to_string().repeat(64))),
            serde_json::to_vec(&s).unwrap(),
        )
        .unwrap();
        layer
    }

    /// RemoveImage while a container is mounted on the image: the record
    /// goes (as containerd's does), the layers stay until the container's
    /// lease is released, across a restart too.
    #[test]
    fn leased_layers_outlive_their_image() {
        let root = tempfile::tempdir().unwrap();
        drop(ImageStore::open(test_config(root.path())).unwrap());
        let layer = seed_image(root.path(), 'e', 'c', "docker.io/library/x:latest", 1000);
        let store = ImageStore::open(test_config(root.path())).unwrap();
        let id = format!("sha256:{}", "e".repeat(64));
        let holder = "1".repeat(64);
        let leased = store.lease(&holder, &id).unwrap();
        assert_eq!(store.layer_dirs(&leased).unwrap(), vec![layer.clone()]);
        assert!(store.remove("x").unwrap());
        assert!(store.resolve(&id).is_none(), "the record goes");
        assert!(layer.join("bin/data").exists(), "the leased layer stays");
        // A lease on an image that is gone is refused, naming the fix.
        let err = store.lease("2", &id).unwrap_err().to_string();
        assert!(err.contains("pull it again"), "{err}");
        // After a restart the lease is still there...
        drop(store);
        let store = ImageStore::open(test_config(root.path())).unwrap();
        assert!(layer.exists());
        assert_eq!(store.lease_holders(), vec![holder.clone()]);
        // ...until the container is gone.
        store.reconcile_leases(&BTreeMap::new());
        assert!(!layer.exists());
        assert!(store.lease_holders().is_empty());
        store.release(&holder).unwrap();
        assert!(store.lease(&"../x".repeat(3), &id).is_err());
    }

    /// A lease file a machine crash cut (leases are written without
    /// fsync) does not stop the store from opening: it is dropped, and the
    /// container's record leases the image again at start.
    #[test]
    fn a_cut_lease_is_dropped_and_renewed_from_the_container_record() {
        let root = tempfile::tempdir().unwrap();
        drop(ImageStore::open(test_config(root.path())).unwrap());
        let layer = seed_image(root.path(), 'e', 'c', "docker.io/library/x:latest", 10);
        let store = ImageStore::open(test_config(root.path())).unwrap();
        let id = format!("sha256:{}", "e".repeat(64));
        let holder = "3".repeat(64);
        store.lease(&holder, &id).unwrap();
        let path = store.lease_path(&holder).unwrap();
        let whole = fs::read(&path).unwrap();
        drop(store);
        for cut in [
            Vec::new(),
            whole[..whole.len() / 2].to_vec(),
            b"\0\0\0".to_vec(),
        ] {
            fs::write(&path, &cut).unwrap();
            let store = ImageStore::open(test_config(root.path())).unwrap();
            assert!(store.lease_holders().is_empty(), "cut {cut:?} dropped");
            assert!(!path.exists(), "and removed");
            store.reconcile_leases(&BTreeMap::from([(holder.clone(), vec![id.clone()])]));
            assert_eq!(store.lease_holders(), vec![holder.clone()]);
            // Renewed: RemoveImage keeps the layer for the container.
            assert!(path.exists());
            drop(store);
        }
        let store = ImageStore::open(test_config(root.path())).unwrap();
        assert!(store.remove("x").unwrap());
        assert!(layer.exists(), "the renewed lease keeps the layer");
        store.release(&holder).unwrap();
        assert!(!layer.exists());
    }

    #[test]
    fn release_collects_only_what_no_one_else_holds() {
        let root = tempfile::tempdir().unwrap();
        drop(ImageStore::open(test_config(root.path())).unwrap());
        let layer = seed_image(root.path(), 'e', 'c', "docker.io/library/x:latest", 10);
        let store = ImageStore::open(test_config(root.path())).unwrap();
        let id = format!("sha256:{}", "e".repeat(64));
        store.lease("a", &id).unwrap();
        store.lease("b", &id).unwrap();
        store.remove(&id).unwrap();
        store.release("a").unwrap();
        assert!(layer.exists(), "b still holds it");
        store.release("b").unwrap();
        store.release("b").unwrap();
        assert!(!layer.exists());
        // A live container from before leases existed gets one at start.
        let layer = seed_image(root.path(), 'f', 'd', "docker.io/library/y:latest", 10);
        drop(store);
        let store = ImageStore::open(test_config(root.path())).unwrap();
        let fid = format!("sha256:{}", "f".repeat(64));
        store.reconcile_leases(&BTreeMap::from([("c".to_string(), vec![fid.clone()])]));
        store.remove("y").unwrap();
        assert!(layer.exists());
    }

    /// ImageFsInfo reads the cached figures: the store is walked again
    /// only after it changed, and the figures follow the change.
    #[test]
    fn fs_usage_is_cached_until_the_store_changes() {
        let root = tempfile::tempdir().unwrap();
        drop(ImageStore::open(test_config(root.path())).unwrap());
        seed_image(root.path(), 'e', 'c', "docker.io/library/x:latest", 1 << 20);
        let store = ImageStore::open(test_config(root.path())).unwrap();
        let before = store.fs_usage().unwrap();
        assert!(before.used_bytes >= 1 << 20, "{before:?}");
        // Not the store's doing: not seen until the next change.
        fs::write(root.path().join("stray"), vec![1u8; 1 << 20]).unwrap();
        let cached = store.fs_usage().unwrap();
        assert_eq!(cached.used_bytes, before.used_bytes);
        assert_eq!(cached.inodes_used, before.inodes_used);
        assert!(cached.timestamp_nanos >= before.timestamp_nanos);
        fs::remove_file(root.path().join("stray")).unwrap();
        assert!(store.remove("x").unwrap());
        let after = store.fs_usage().unwrap();
        assert!(
            after.used_bytes + (1 << 20) <= before.used_bytes,
            "{before:?} -> {after:?}"
        );
        assert!(after.inodes_used < before.inodes_used);
    }

    #[test]
    fn open_removes_leftovers_and_unreferenced_content() {
        let root = tempfile::tempdir().unwrap();
        let cfg = ImageStoreConfig {
            root: root.path().to_path_buf(),
            registries: RegistriesConfig::default(),
            max_layer_bytes: 1 << 20,
            max_compressed_layer_bytes: 1 << 20,
            max_entry_xattr_bytes: crate::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
        };
        let store = ImageStore::open(cfg.clone()).unwrap();
        drop(store);
        fs::create_dir_all(root.path().join("layers/tmp-1-2-3/etc")).unwrap();
        fs::create_dir_all(root.path().join(format!("layers/{}", "c".repeat(64)))).unwrap();
        fs::write(root.path().join("blobs/tmp/tmp-x"), b"partial").unwrap();
        fs::write(
            root.path().join(format!("blobs/sha256/{}", "d".repeat(64))),
            b"orphan",
        )
        .unwrap();
        let mut s = stored('e', "");
        s.record.repo_tags.push("docker.io/library/x:latest".into());
        fs::write(
            root.path().join(format!("images/{}.json", "e".repeat(64))),
            serde_json::to_vec(&s).unwrap(),
        )
        .unwrap();
        let store = ImageStore::open(cfg).unwrap();
        assert!(!root.path().join("layers/tmp-1-2-3").exists());
        assert!(
            !root
                .path()
                .join(format!("layers/{}", "c".repeat(64)))
                .exists()
        );
        assert!(!root.path().join("blobs/tmp/tmp-x").exists());
        assert!(
            !root
                .path()
                .join(format!("blobs/sha256/{}", "d".repeat(64)))
                .exists()
        );
        assert_eq!(store.resolve("x").map(|r| r.id), Some(s.record.id.clone()));
        assert!(store.remove("x").unwrap());
        assert!(!store.remove("x").unwrap());
        assert!(store.list().is_empty());
        assert!(
            !root
                .path()
                .join(format!("images/{}.json", "e".repeat(64)))
                .exists()
        );
        let usage = store.fs_usage().unwrap();
        assert!(usage.inodes_used >= 5);
    }
}
