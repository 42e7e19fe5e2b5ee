//! `LayerUnpacker`: one OCI layer tar stream into its own directory, keeping
//! everything the image author put there (owners, modes incl. setuid/setgid/
//! sticky, mtimes, hard links, symlinks, device nodes, fifos and every
//! `SCHILY.xattr.*`, above all `security.capability`, whose loss silently
//! breaks file capabilities), translating OCI whiteouts into overlayfs
//! whiteouts, and refusing entries that would escape the layer directory.
//!
//! The `tar` crate only parses here; every filesystem change is made by this
//! file relative to a directory fd resolved with no symlinks allowed
//! (`layerfs`), so a symlink in the layer is never followed, not even by the
//! directory metadata applied after the last entry.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, futimens, makedev, mkdirat, mknodat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;
use super::layerfs;

/// The xattr holding file capabilities (capabilities(7), "File capabilities").
pub const CAPABILITY_XATTR: &str = "security.capability";
/// overlayfs marks an opaque directory with this xattr (kernel Documentation/filesystems/overlayfs.rst).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How the layer blob is compressed (from its media type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// OCI image-spec layer media types and their Docker v2 equivalents.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// What a layer does to the paths below it, in the order needed to build the
/// file-capability index of an image (absolute paths, e.g. `/usr/bin/ping`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerChange {
    /// An entry written by this layer, with its `security.capability` bytes if any.
    Put {
        path: String,
        is_dir: bool,
        caps: Option<Vec<u8>>,
    },
    /// `.wh.name`: the path and everything below it from lower layers is gone.
    Whiteout { path: String },
    /// `.wh..wh..opq`: the directory hides everything of the lower layers.
    Opaque { dir: String },
}

/// Result of unpacking one layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnpackedLayer {
    /// sha256 of the uncompressed tar stream (what the image config lists in rootfs.diff_ids).
    pub diff_id: String,
    pub uncompressed_bytes: u64,
    pub changes: Vec<LayerChange>,
}

/// The file-capability index of an image: the layers' changes applied bottom
/// to top. Whiteouts and opaque directories hide lower entries; a later layer
/// that rewrites a path decides its capabilities (none if it has no xattr).
pub fn merge_file_caps<'a>(
    layers_bottom_first: impl IntoIterator<Item = &'a [LayerChange]>,
) -> BTreeMap<String, Vec<u8>> {
    let mut caps: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let remove_below = |caps: &mut BTreeMap<String, Vec<u8>>, dir: &str| {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        caps.retain(|k, _| !k.starts_with(&prefix));
    };
    for changes in layers_bottom_first {
        // Whiteouts and opaque markers hide the *lower* layers only, wherever they sit in this tar.
        for change in changes {
            match change {
                LayerChange::Whiteout { path } => {
                    caps.remove(path);
                    remove_below(&mut caps, path);
                }
                LayerChange::Opaque { dir } => remove_below(&mut caps, dir),
                LayerChange::Put { .. } => {}
            }
        }
        for change in changes {
            if let LayerChange::Put {
                path,
                is_dir,
                caps: c,
            } = change
            {
                if !is_dir {
                    remove_below(&mut caps, path);
                }
                match c {
                    Some(bytes) if !is_dir => {
                        caps.insert(path.clone(), bytes.clone());
                    }
                    _ => {
                        caps.remove(path);
                    }
                }
            }
        }
    }
    caps
}

/// Unpacks one layer. `layer` (its digest) names the layer in errors.
#[derive(Clone, Debug)]
pub struct LayerUnpacker {
    pub layer: String,
    /// Cap on uncompressed bytes (gzip-bomb guard).
    pub max_bytes: u64,
    /// Apply tar owners (needs CAP_CHOWN; off for unprivileged unit tests).
    pub keep_ownership: bool,
    /// Cap on the sum of xattr name and value bytes of one entry. The kernel
    /// refuses a single value above 64 KiB (XATTR_SIZE_MAX) on its own, but
    /// thousands of small ones would each cost a syscall and inode space.
    pub max_entry_xattr_bytes: u64,
}

/// The kernel's limit on one xattr value (XATTR_SIZE_MAX, linux/limits.h).
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// The kernel's limit on an xattr name (XATTR_NAME_MAX, linux/limits.h).
pub const XATTR_NAME_MAX: usize = 255;
/// Default for [`LayerUnpacker::max_entry_xattr_bytes`]: far above what any
/// real image carries (a few `security.*`/`user.*` values per file).
pub const DEFAULT_MAX_ENTRY_XATTR_BYTES: u64 = 256 * 1024;

/// Counts and hashes the uncompressed stream, enforces the size cap and
/// remembers whether the tar parser hit end-of-file (a tar without its
/// end-of-archive blocks is truncated).
struct CountingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    exceeded: bool,
    eof: bool,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("uncompressed layer size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A directory's mode and mtime, applied after the whole layer is written.
/// `rel` is re-resolved beneath the layer root with no symlinks allowed and
/// must still be the directory recorded (`id`): a later entry may have
/// replaced it, or a parent of it, with a symlink to a host path.
struct DirMeta {
    rel: PathBuf,
    id: (u64, u64),
    mode: u32,
    mtime: i64,
}

/// The parent directory of the previous entry, kept open for the next one:
/// a layer lists a directory's files one after another, and re-resolving
/// the parent for each (an openat2 and a close) was most of the unpack's
/// syscalls for busybox (bin/ holds 400 hard links). Sound because the fd
/// is a directory of this layer, resolved beneath the root without
/// symlinks, and it is dropped before any entry that could remove or
/// replace it or one of its ancestors: anything but a plain file or a hard
/// link, a whiteout, or an entry at the cached path or above it.
#[derive(Default)]
struct ParentCache {
    open: Option<(PathBuf, OwnedFd)>,
}

impl ParentCache {
    fn forget_unless_kept_by(&mut self, kind: tar::EntryType, rel: &Path) {
        let Some((cached, _)) = &self.open else {
            return;
        };
        let plain = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Link
        );
        let whiteout = rel
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()));
        if !plain || whiteout || cached.starts_with(rel) {
            self.open = None;
        }
    }

    /// The directory at `rel`: the one kept open when it is that one,
    /// otherwise `open`'s, which is kept in its place.
    fn get_or_open<E>(
        &mut self,
        rel: &Path,
        open: impl FnOnce() -> Result<OwnedFd, E>,
    ) -> Result<BorrowedFd<'_>, E> {
        let kept = match self.open.take() {
            Some((r, fd)) if r == rel => (r, fd),
            _ => (rel.to_path_buf(), open()?),
        };
        Ok(self.open.insert(kept).1.as_fd())
    }
}

impl LayerUnpacker {
    /// Unpacks `blob` into `dest`, which must not exist yet (a fresh temp
    /// dir the caller renames into place). On any error `dest` is removed, so
    /// nothing half-written stays. `expected_diff_id` (from the image config)
    /// is checked after the whole stream is read.
    pub fn unpack(
        &self,
        blob: impl Read,
        compression: Compression,
        dest: &Path,
        expected_diff_id: Option<&str>,
    ) -> Result<UnpackedLayer, ImageError> {
        fs::create_dir(dest).map_err(|e| {
            ImageError::io(
                format!("create layer directory for {}", self.layer),
                dest,
                e,
            )
        })?;
        let result = layerfs::open_dir_path(dest)
            .map_err(|e| ImageError::io("open layer directory", dest, e.into()))
            .and_then(|root| {
                let root = LayerRoot { fd: root, dest };
                match compression {
                    Compression::None => self.unpack_tar(blob, &root, expected_diff_id),
                    Compression::Gzip => self.unpack_tar(
                        flate2::read::MultiGzDecoder::new(blob),
                        &root,
                        expected_diff_id,
                    ),
                    Compression::Zstd => match zstd::stream::read::Decoder::new(blob) {
                        Ok(decoder) => self.unpack_tar(decoder, &root, expected_diff_id),
                        Err(e) => Err(self.corrupt(format!("cannot start zstd decoding: {e}"))),
                    },
                }
            });
        // The layer's files reach the disk before the caller renames the
        // layer into place and records it: one syncfs(2) of the layer's
        // filesystem here, not an fsync per file, which stalled the
        // decompression on each file's writeback (the page cache writes
        // back behind the unpack instead). containerd 2 offers the same
        // syncfs as `image_pull_with_sync_fs`.
        let result = result.and_then(|unpacked| {
            let dir = fs::File::open(dest)
                .map_err(|e| ImageError::io("open layer directory", dest, e))?;
            // SAFETY: syncfs on a valid fd we own.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(ImageError::io(
                    "sync the layer's filesystem",
                    dest,
                    io::Error::last_os_error(),
                ));
            }
            Ok(unpacked)
        });
        if result.is_err() {
            // std's remove_dir_all does not follow symlinks (CVE-2022-21658 fix).
            let _ = fs::remove_dir_all(dest);
        }
        result
    }

    fn corrupt(&self, reason: String) -> ImageError {
        ImageError::Corrupt {
            path: PathBuf::from(&self.layer),
            reason,
        }
    }

    fn hostile(&self, entry: &str, reason: impl Into<String>) -> ImageError {
        ImageError::HostileLayer {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn unpack_tar<R: Read>(
        &self,
        reader: R,
        root: &LayerRoot<'_>,
        expected_diff_id: Option<&str>,
    ) -> Result<UnpackedLayer, ImageError> {
        let counter = CountingReader {
            inner: reader,
            hasher: Sha256::new(),
            count: 0,
            limit: self.max_bytes,
            exceeded: false,
            eof: false,
        };
        let mut archive = tar::Archive::new(counter);
        let mut changes = Vec::new();
        let mut dirs: Vec<DirMeta> = Vec::new();
        let mut parent_cache = ParentCache::default();
        let mut last_entry = String::from("<start of archive>");
        let iter_result = (|| -> Result<(), ImageError> {
            let entries = archive
                .entries()
                .map_err(|e| self.corrupt(format!("not a tar stream: {e}")))?;
            for entry in entries {
                let mut entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => return Err(self.corrupt(format!("reading the tar header after {last_entry:?} failed: {e}; the blob is truncated or not a valid tar"))),
                };
                let raw_path = entry
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| "<undecodable>".into());
                last_entry = raw_path.clone();
                self.unpack_entry(
                    &mut entry,
                    &raw_path,
                    root,
                    &mut changes,
                    &mut dirs,
                    &mut parent_cache,
                )?;
            }
            Ok(())
        })();
        let mut counter = archive.into_inner();
        if let Err(e) = iter_result {
            if counter.exceeded {
                return Err(ImageError::TooLarge {
                    object: format!("layer {} (uncompressed)", self.layer),
                    limit: self.max_bytes,
                });
            }
            return Err(e);
        }
        // The tar crate reads one zero block at a proper end of archive and stops;
        // reaching end-of-file instead means the end-of-archive blocks are missing.
        if counter.eof {
            return Err(self.corrupt(format!("the tar stream ends after {last_entry:?} without its end-of-archive blocks: the layer is truncated")));
        }
        // The diff_id covers the whole uncompressed stream, padding included.
        io::copy(&mut counter, &mut io::sink()).map_err(|e| {
            if counter.exceeded {
                ImageError::TooLarge {
                    object: format!("layer {} (uncompressed)", self.layer),
                    limit: self.max_bytes,
                }
            } else {
                self.corrupt(format!("reading the end of the stream failed: {e}"))
            }
        })?;
        let diff_id = format!("sha256:{}", hex::encode(counter.hasher.clone().finalize()));
        if let Some(expected) = expected_diff_id
            && expected != diff_id
        {
            return Err(ImageError::DigestMismatch {
                object: format!("uncompressed layer {} (diff_id)", self.layer),
                expected: expected.to_string(),
                actual: diff_id,
            });
        }
        // Directory modes and mtimes last, deepest first: creating children
        // changes a directory's mtime, and a read-only mode would stop them.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.components().count()));
        for d in &dirs {
            // Re-resolved with no symlink allowed: a later entry of the same
            // tar may have replaced the directory or a parent of it by a
            // symlink to a host directory (then this open fails and the
            // metadata is dropped with the directory it belonged to).
            let Ok(fd) = layerfs::open_dir_beneath(root.fd.as_fd(), &d.rel) else {
                continue;
            };
            if layerfs::identity(fd.as_fd()).ok() != Some(d.id) {
                continue;
            }
            let path = root.dest.join(&d.rel);
            nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(d.mode))
                .map_err(|e| ImageError::io("chmod", &path, e.into()))?;
            let ts = TimeSpec::new(d.mtime, 0);
            futimens(fd.as_raw_fd(), &ts, &ts)
                .map_err(|e| ImageError::io("set mtime", &path, e.into()))?;
        }
        Ok(UnpackedLayer {
            diff_id,
            uncompressed_bytes: counter.count,
            changes,
        })
    }

    /// Turns an archive path into a path below the layer root, refusing
    /// absolute paths and `..` (the classic tar path-traversal escape).
    fn relative_path(&self, raw: &str, path: &Path) -> Result<PathBuf, ImageError> {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => out.push(n),
                Component::CurDir => {}
                Component::ParentDir => return Err(self.hostile(raw, "has a '..' component")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.hostile(raw, "is an absolute path"));
                }
            }
        }
        Ok(out)
    }

    /// Opens the parent directory `parent` (relative to the layer root),
    /// creating missing components; a symlink or a non-directory on the way
    /// is refused, because going through it would write outside the layer.
    /// One openat2 when the parent exists (the common case), a walk by
    /// component otherwise (to create, and to name the bad component).
    fn open_parent(
        &self,
        raw: &str,
        root: &LayerRoot<'_>,
        parent: &Path,
    ) -> Result<OwnedFd, ImageError> {
        if let Ok(fd) = layerfs::open_dir_beneath(root.fd.as_fd(), parent) {
            return Ok(fd);
        }
        let mut cur = layerfs::open_dir_beneath(root.fd.as_fd(), Path::new(""))
            .map_err(|e| ImageError::io("open layer directory", root.dest, e.into()))?;
        let mut cur_rel = PathBuf::new();
        for c in parent.components() {
            cur_rel.push(c);
            let name = c.as_os_str();
            let next = match layerfs::open_dir_beneath(cur.as_fd(), Path::new(name)) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    let path = root.dest.join(&cur_rel);
                    mkdirat(Some(cur.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                        .map_err(|e| ImageError::io("create directory", &path, e.into()))?;
                    let fd = layerfs::open_child_dir(cur.as_fd(), name)
                        .map_err(|e| ImageError::io("open directory", &path, e.into()))?;
                    // Explicit: the daemon's umask (077) must not shape the image.
                    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(0o755))
                        .map_err(|e| ImageError::io("chmod", &path, e.into()))?;
                    fd
                }
                // O_NOFOLLOW|O_DIRECTORY on a symlink: ELOOP or ENOTDIR.
                Err(Errno::ELOOP | Errno::ENOTDIR)
                    if layerfs::stat_at(cur.as_fd(), name)
                        .ok()
                        .flatten()
                        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK) =>
                {
                    return Err(self.hostile(
                        raw,
                        format!(
                            "goes through the symlink {:?} of the same layer",
                            cur_rel.to_string_lossy()
                        ),
                    ));
                }
                Err(Errno::ENOTDIR | Errno::ELOOP) => {
                    return Err(self.hostile(
                        raw,
                        format!(
                            "has a parent {:?} that is not a directory",
                            cur_rel.to_string_lossy()
                        ),
                    ));
                }
                Err(e) => return Err(ImageError::io("open", root.dest.join(&cur_rel), e.into())),
            };
            cur = next;
        }
        Ok(cur)
    }

    fn unpack_entry<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &str,
        root: &LayerRoot<'_>,
        changes: &mut Vec<LayerChange>,
        dirs: &mut Vec<DirMeta>,
        parent_cache: &mut ParentCache,
    ) -> Result<(), ImageError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let path = entry
            .path()
            .map_err(|e| self.hostile(raw, format!("has an undecodable path: {e}")))?
            .into_owned();
        let rel = self.relative_path(raw, &path)?;
        parent_cache.forget_unless_kept_by(kind, &rel);
        let abs_name = format!("/{}", rel.to_string_lossy());
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| self.corrupt(format!("entry {raw:?}: bad mode: {e}")))?
            & 0o7777;
        let uid = header
            .uid()
            .map_err(|e| self.corrupt(format!("entry {raw:?}: bad uid: {e}")))?;
        let gid = header
            .gid()
            .map_err(|e| self.corrupt(format!("entry {raw:?}: bad gid: {e}")))?;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let owner = self.owner(raw, uid, gid)?;

        if rel.as_os_str().is_empty() {
            // The layer root itself ("./"): keep its metadata.
            if kind == tar::EntryType::Directory {
                if let Some((u, g)) = owner {
                    fchown(root.fd.as_raw_fd(), Some(u), Some(g))
                        .map_err(|e| ImageError::io("chown", root.dest, e.into()))?;
                }
                dirs.push(DirMeta {
                    rel: PathBuf::new(),
                    id: layerfs::identity(root.fd.as_fd())
                        .map_err(|e| ImageError::io("stat", root.dest, e.into()))?,
                    mode,
                    mtime,
                });
            }
            return Ok(());
        }
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let pfd =
            parent_cache.get_or_open(parent_rel, || self.open_parent(raw, root, parent_rel))?;
        let target = root.dest.join(&rel);
        let Some(name) = rel.file_name() else {
            return Err(self.hostile(raw, "has no file name"));
        };
        let file_name = name.to_string_lossy().into_owned();

        // OCI image-spec "Whiteouts" -> overlayfs whiteouts (char device 0:0) and opaque dirs.
        if file_name == OPAQUE_MARKER {
            layerfs::fset_xattr(pfd, OPAQUE_XATTR, b"y").map_err(|e| {
                ImageError::io(
                    format!("set xattr {OPAQUE_XATTR} (needs root)"),
                    root.dest.join(parent_rel),
                    e,
                )
            })?;
            let dir_name = format!("/{}", parent_rel.to_string_lossy());
            changes.push(LayerChange::Opaque {
                dir: dir_name.trim_end_matches('/').to_string(),
            });
            return Ok(());
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty()
                || hidden == "."
                || hidden == ".."
                || hidden.starts_with(WHITEOUT_PREFIX)
            {
                return Err(self.hostile(raw, "is a malformed whiteout name"));
            }
            let wh = target.with_file_name(hidden);
            let hidden_os = std::ffi::OsStr::new(hidden);
            layerfs::remove_at(pfd, hidden_os)
                .map_err(|e| ImageError::io("replace", &wh, e.into()))?;
            mknodat(
                Some(pfd.as_raw_fd()),
                hidden_os,
                SFlag::S_IFCHR,
                Mode::empty(),
                makedev(0, 0),
            )
            .map_err(|e| {
                ImageError::io(
                    "create overlay whiteout (char device 0:0; needs CAP_MKNOD)",
                    &wh,
                    e.into(),
                )
            })?;
            let parent = abs_name.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            changes.push(LayerChange::Whiteout {
                path: format!("{parent}/{hidden}"),
            });
            return Ok(());
        }

        let xattrs = self.xattrs(entry, raw)?;
        let caps = xattrs
            .iter()
            .find(|(k, _)| k == CAPABILITY_XATTR)
            .map(|(_, v)| v.clone());
        let header = entry.header();
        let ts = TimeSpec::new(mtime, 0);
        match kind {
            tar::EntryType::Directory => {
                let existing = layerfs::stat_at(pfd, name)
                    .map_err(|e| ImageError::io("inspect", &target, e.into()))?;
                match existing {
                    Some(st) if layerfs::is_dir(&st) => {}
                    other => {
                        if other.is_some() {
                            layerfs::remove_at(pfd, name)
                                .map_err(|e| ImageError::io("replace", &target, e.into()))?;
                        }
                        mkdirat(Some(pfd.as_raw_fd()), name, Mode::from_bits_truncate(0o700))
                            .map_err(|e| ImageError::io("create directory", &target, e.into()))?;
                    }
                }
                let dir = layerfs::open_child_dir(pfd, name)
                    .map_err(|e| ImageError::io("open directory", &target, e.into()))?;
                if let Some((u, g)) = owner {
                    fchown(dir.as_raw_fd(), Some(u), Some(g))
                        .map_err(|e| ImageError::io("chown", &target, e.into()))?;
                }
                for (k, v) in &xattrs {
                    layerfs::fset_xattr(dir.as_fd(), k, v)
                        .map_err(|e| xattr_error(k, &target, e))?;
                }
                dirs.push(DirMeta {
                    rel: rel.clone(),
                    id: layerfs::identity(dir.as_fd())
                        .map_err(|e| ImageError::io("stat", &target, e.into()))?,
                    mode,
                    mtime,
                });
                changes.push(LayerChange::Put {
                    path: abs_name,
                    is_dir: true,
                    caps: None,
                });
                return Ok(());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                layerfs::remove_at(pfd, name)
                    .map_err(|e| ImageError::io("replace", &target, e.into()))?;
                let fd = nix::fcntl::openat(
                    Some(pfd.as_raw_fd()),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| ImageError::io("create", &target, e.into()))?;
                // SAFETY: the kernel just returned this fd; the File owns it.
                let mut f = unsafe { fs::File::from_raw_fd(fd) };
                io::copy(entry, &mut f).map_err(|e| {
                    self.corrupt(format!("entry {raw:?}: reading its data failed: {e}; the layer is truncated, corrupt or over the size limit"))
                })?;
                // Order matters: chown clears setuid/setgid and
                // security.capability (kernel: "on chown the file
                // capabilities are cleared"), so owner first, then mode,
                // then xattrs, then mtime. All on the fd just created.
                if let Some((u, g)) = owner {
                    fchown(f.as_raw_fd(), Some(u), Some(g))
                        .map_err(|e| ImageError::io("chown", &target, e.into()))?;
                }
                nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode))
                    .map_err(|e| ImageError::io("chmod", &target, e.into()))?;
                for (k, v) in &xattrs {
                    layerfs::fset_xattr(f.as_fd(), k, v).map_err(|e| xattr_error(k, &target, e))?;
                }
                futimens(f.as_raw_fd(), &ts, &ts)
                    .map_err(|e| ImageError::io("set mtime", &target, e.into()))?;
                changes.push(LayerChange::Put {
                    path: abs_name,
                    is_dir: false,
                    caps,
                });
                return Ok(());
            }
            tar::EntryType::Symlink => {
                let link = header
                    .link_name()
                    .map_err(|e| self.corrupt(format!("entry {raw:?}: bad link name: {e}")))?;
                let Some(link) = link else {
                    return Err(self.corrupt(format!("symlink {raw:?} has no target")));
                };
                layerfs::remove_at(pfd, name)
                    .map_err(|e| ImageError::io("replace", &target, e.into()))?;
                // Symlinks may point anywhere (absolute targets are normal); they are created, never followed.
                symlinkat(link.as_ref(), Some(pfd.as_raw_fd()), name)
                    .map_err(|e| ImageError::io("create symlink", &target, e.into()))?;
            }
            tar::EntryType::Link => {
                let link = header
                    .link_name()
                    .map_err(|e| self.corrupt(format!("entry {raw:?}: bad link name: {e}")))?;
                let Some(link) = link else {
                    return Err(self.corrupt(format!("hard link {raw:?} has no target")));
                };
                let link_raw = link.to_string_lossy().into_owned();
                let link_rel = self.relative_path(raw, &link).map_err(|_| {
                    self.hostile(
                        raw,
                        format!("is a hard link to {link_raw:?}, outside the layer"),
                    )
                })?;
                let Some(src_name) = link_rel.file_name() else {
                    return Err(self.hostile(
                        raw,
                        format!("is a hard link to {link_raw:?}, the layer root"),
                    ));
                };
                // Every component of the source's path must be a real
                // directory of this layer: resolved beneath the root with
                // no symlink allowed.
                let src_parent_rel = link_rel.parent().unwrap_or(Path::new(""));
                // Most links are siblings of their source (busybox's 400
                // names in bin/): the parent already open serves both.
                let src_parent_opened;
                let src_parent = if src_parent_rel == parent_rel {
                    pfd
                } else {
                    src_parent_opened = layerfs::open_dir_beneath(root.fd.as_fd(), src_parent_rel)
                        .map_err(|_| self.hostile(raw, format!("is a hard link to {link_raw:?}, whose path is not a directory of this layer (a symlink or a file on the way)")))?;
                    src_parent_opened.as_fd()
                };
                match layerfs::stat_at(src_parent, src_name) {
                    Ok(Some(st)) if layerfs::is_dir(&st) => {
                        return Err(self.hostile(
                            raw,
                            format!("is a hard link to the directory {link_raw:?}"),
                        ));
                    }
                    Ok(Some(_)) => {}
                    _ => {
                        return Err(self.hostile(
                            raw,
                            format!("is a hard link to {link_raw:?}, absent from this layer"),
                        ));
                    }
                }
                if link_rel == rel {
                    return Ok(());
                }
                layerfs::remove_at(pfd, name)
                    .map_err(|e| ImageError::io("replace", &target, e.into()))?;
                // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never its target.
                linkat(
                    Some(src_parent.as_raw_fd()),
                    src_name,
                    Some(pfd.as_raw_fd()),
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| ImageError::io("create hard link", &target, e.into()))?;
                // The inode's owner, mode and xattrs came with the first name.
                let caps = layerfs::get_xattr_at(pfd, name, CAPABILITY_XATTR);
                changes.push(LayerChange::Put {
                    path: abs_name,
                    is_dir: false,
                    caps,
                });
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                layerfs::remove_at(pfd, name)
                    .map_err(|e| ImageError::io("replace", &target, e.into()))?;
                mknodat(
                    Some(pfd.as_raw_fd()),
                    name,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    makedev(major.into(), minor.into()),
                )
                .map_err(|e| match (kind, e) {
                    // mknod(2): EPERM for a device node without CAP_MKNOD
                    // in the initial user namespace.
                    (tar::EntryType::Char | tar::EntryType::Block, nix::errno::Errno::EPERM) => {
                        ImageError::DeviceNodeNotPermitted {
                            layer: self.layer.clone(),
                            entry: raw.to_string(),
                            kind: if kind == tar::EntryType::Char {
                                "character"
                            } else {
                                "block"
                            },
                            major,
                            minor,
                            cause: e.desc().to_string(),
                        }
                    }
                    _ => ImageError::io("create device node or fifo", &target, e.into()),
                })?;
            }
            other => {
                return Err(ImageError::Unsupported {
                    object: format!("entry {raw:?} of layer {}", self.layer),
                    reason: format!("tar entry type {other:?}"),
                });
            }
        }
        // Symlinks, device nodes and fifos: not opened (a fifo open blocks,
        // a device open reaches a driver), so changed by name in the pinned
        // parent fd, without following the final component. Same order as
        // for regular files.
        let is_symlink = kind == tar::EntryType::Symlink;
        if let Some((u, g)) = owner {
            fchownat(
                Some(pfd.as_raw_fd()),
                name,
                Some(u),
                Some(g),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ImageError::io("chown", &target, e.into()))?;
        }
        if !is_symlink {
            // fchmodat cannot refuse to follow before fchmodat2 (Linux
            // 6.6); the name was created just above as a device node or
            // fifo in a directory no one else writes to, so there is no
            // symlink to follow.
            fchmodat(
                Some(pfd.as_raw_fd()),
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ImageError::io("chmod", &target, e.into()))?;
        }
        for (k, v) in &xattrs {
            layerfs::set_xattr_at(pfd, name, k, v).map_err(|e| xattr_error(k, &target, e))?;
        }
        utimensat(
            Some(pfd.as_raw_fd()),
            name,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| ImageError::io("set mtime", &target, e.into()))?;
        changes.push(LayerChange::Put {
            path: abs_name,
            is_dir: false,
            caps,
        });
        Ok(())
    }

    /// `SCHILY.xattr.<name>` PAX records. `trusted.overlay.*` is refused: an
    /// image must not forge overlayfs metadata (opaque, redirect, metacopy).
    fn xattrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        raw: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
        let mut out = Vec::new();
        let mut total: u64 = 0;
        let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| self.corrupt(format!("entry {raw:?}: bad PAX header: {e}")))?
        else {
            return Ok(out);
        };
        for ext in exts {
            let ext =
                ext.map_err(|e| self.corrupt(format!("entry {raw:?}: bad PAX record: {e}")))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name.starts_with("trusted.overlay.") {
                    return Err(
                        self.hostile(raw, format!("carries the overlayfs-internal xattr {name}"))
                    );
                }
                let value = ext.value_bytes();
                if name.len() > XATTR_NAME_MAX {
                    return Err(self.hostile(
                        raw,
                        format!(
                            "carries an xattr name of {} bytes (the kernel allows {XATTR_NAME_MAX})",
                            name.len()
                        ),
                    ));
                }
                if value.len() > XATTR_VALUE_MAX {
                    return Err(self.hostile(
                        raw,
                        format!(
                            "carries xattr {name} with a {} byte value (the kernel allows {XATTR_VALUE_MAX})",
                            value.len()
                        ),
                    ));
                }
                total += (name.len() + value.len()) as u64;
                if total > self.max_entry_xattr_bytes {
                    return Err(self.hostile(
                        raw,
                        format!(
                            "carries more than {} bytes of xattrs ({} so far, at {name}): the per-entry bound is max_entry_xattr_bytes",
                            self.max_entry_xattr_bytes,
                            out.len() + 1
                        ),
                    ));
                }
                out.push((name.to_string(), value.to_vec()));
            }
        }
        Ok(out)
    }

    /// The tar owner to apply, None when ownership is not kept.
    fn owner(&self, raw: &str, uid: u64, gid: u64) -> Result<Option<(Uid, Gid)>, ImageError> {
        if !self.keep_ownership {
            return Ok(None);
        }
        let uid = u32::try_from(uid)
            .map_err(|_| self.corrupt(format!("entry {raw:?}: uid {uid} out of range")))?;
        let gid = u32::try_from(gid)
            .map_err(|_| self.corrupt(format!("entry {raw:?}: gid {gid} out of range")))?;
        Ok(Some((Uid::from_raw(uid), Gid::from_raw(gid))))
    }
}

/// The layer directory: its fd (every operation starts from it) and its
/// path (for error messages only).
struct LayerRoot<'a> {
    fd: OwnedFd,
    dest: &'a Path,
}

fn xattr_error(name: &str, path: &Path, e: io::Error) -> ImageError {
    ImageError::io(
        format!("set xattr {name} (trusted.* and security.capability need root)"),
        path,
        e,
    )
}

/// lgetxattr of a path (tests and checks of a tree capcri made; image
/// content is read through directory fds, `layerfs::get_xattr_at`); None
/// when absent or unreadable.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let parent = path.parent()?;
    let dir = fs::File::open(parent).ok()?;
    layerfs::get_xattr_at(dir.as_fd(), path.file_name()?, name)
}

/// Inode identity, used by tests and the store's usage figures.
pub fn inode_of(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// Builds tar streams byte by byte, so hostile names the `tar` crate's
    /// builder would refuse can be crafted.
    struct TarBuilder {
        b: tar::Builder<Vec<u8>>,
    }

    struct E<'a> {
        name: &'a str,
        kind: tar::EntryType,
        mode: u32,
        data: &'a [u8],
        link: Option<&'a str>,
        xattrs: &'a [(&'a str, &'a [u8])],
        uid: u64,
        dev: (u32, u32),
    }

    fn e(name: &str, kind: tar::EntryType) -> E<'_> {
        E {
            name,
            kind,
            mode: 0o644,
            data: b"",
            link: None,
            xattrs: &[],
            uid: 0,
            dev: (0, 0),
        }
    }

    impl TarBuilder {
        fn new() -> Self {
            TarBuilder {
                b: tar::Builder::new(Vec::new()),
            }
        }

        fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
            let mut h = tar::Header::new_ustar();
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mtime(1_700_000_000);
            h
        }

        fn add(&mut self, e: E<'_>) -> &mut Self {
            if !e.xattrs.is_empty() {
                let mut pax = Vec::new();
                for (k, v) in e.xattrs {
                    let body_len = format!(" SCHILY.xattr.{k}=").len() + v.len() + 1;
                    let mut total = body_len + 1;
                    while total.to_string().len() + body_len != total {
                        total = total.to_string().len() + body_len;
                    }
                    pax.extend_from_slice(format!("{total} SCHILY.xattr.{k}=").as_bytes());
                    pax.extend_from_slice(v);
                    pax.push(b'\n');
                }
                let mut h =
                    Self::raw_header("PaxHeader", tar::EntryType::XHeader, pax.len() as u64);
                h.set_cksum();
                self.b.append(&h, pax.as_slice()).unwrap();
            }
            let mut h = Self::raw_header(e.name, e.kind, e.data.len() as u64);
            h.set_mode(e.mode);
            h.set_uid(e.uid);
            h.set_gid(e.uid);
            if let Some(l) = e.link {
                h.set_link_name_literal(l).unwrap();
            }
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
            h.set_cksum();
            self.b.append(&h, e.data).unwrap();
            self
        }

        fn finish(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    fn unpacker(max: u64) -> LayerUnpacker {
        LayerUnpacker {
            max_entry_xattr_bytes: DEFAULT_MAX_ENTRY_XATTR_BYTES,
            layer: "sha256:feed".into(),
            max_bytes: max,
            keep_ownership: privileged(),
        }
    }

    // Ownership, device nodes, whiteouts and trusted.*/security.* xattrs need root.
    use crate::util::test_env::privileged;

    fn unpack(
        tar: &[u8],
    ) -> (
        tempfile::TempDir,
        PathBuf,
        Result<UnpackedLayer, ImageError>,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("layer");
        let r = unpacker(1 << 30).unpack(tar, Compression::None, &dest, None);
        (tmp, dest, r)
    }

    fn assert_hostile(tar: Vec<u8>, entry_part: &str) {
        let (tmp, dest, r) = unpack(&tar);
        match r {
            Err(ImageError::HostileLayer {
                layer,
                entry,
                reason,
            }) => {
                assert_eq!(layer, "sha256:feed");
                assert!(
                    entry.contains(entry_part),
                    "entry {entry:?} reason {reason}"
                );
            }
            other => panic!("expected HostileLayer for {entry_part}, got {other:?}"),
        }
        assert!(!dest.exists(), "the half-written layer dir must be gone");
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "nothing written outside the layer: {left:?}"
        );
    }

    #[test]
    fn keeps_files_links_modes_and_mtimes() {
        let mut t = TarBuilder::new();
        t.add(E {
            mode: 0o755,
            ..e("bin/", tar::EntryType::Directory)
        })
        .add(E {
            mode: 0o4755,
            data: b"#!x",
            ..e("bin/su", tar::EntryType::Regular)
        })
        .add(E {
            link: Some("bin/su"),
            ..e("bin/su2", tar::EntryType::Link)
        })
        .add(E {
            link: Some("/etc/passwd"),
            ..e("bin/abs", tar::EntryType::Symlink)
        })
        .add(E {
            link: Some("su"),
            ..e("./bin/rel", tar::EntryType::Symlink)
        })
        .add(E {
            mode: 0o1777,
            ..e("tmp/", tar::EntryType::Directory)
        })
        .add(E {
            mode: 0o600,
            ..e("run/fifo", tar::EntryType::Fifo)
        })
        .add(E {
            xattrs: &[("user.note", b"v\x00\x01")],
            data: b"x",
            ..e("etc/conf", tar::EntryType::Regular)
        });
        let (_tmp, dest, r) = unpack(&t.finish());
        let layer = r.unwrap();
        let su = fs::symlink_metadata(dest.join("bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!(su.mtime(), 1_700_000_000);
        assert_eq!(fs::read(dest.join("bin/su")).unwrap(), b"#!x");
        assert_eq!(
            inode_of(&dest.join("bin/su")),
            inode_of(&dest.join("bin/su2"))
        );
        assert_eq!(
            fs::read_link(dest.join("bin/abs")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
        assert_eq!(
            fs::read_link(dest.join("bin/rel")).unwrap(),
            PathBuf::from("su")
        );
        let tmpdir = fs::symlink_metadata(dest.join("tmp")).unwrap();
        assert_eq!(tmpdir.mode() & 0o7777, 0o1777);
        assert_eq!(
            tmpdir.mtime(),
            1_700_000_000,
            "directory mtimes are set after their children"
        );
        assert!(
            fs::symlink_metadata(dest.join("run/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        // user.* xattrs are allowed on ext4 without privileges.
        assert_eq!(
            get_xattr(&dest.join("etc/conf"), "user.note").as_deref(),
            Some(&b"v\x00\x01"[..])
        );
        assert!(layer.changes.contains(&LayerChange::Put {
            path: "/bin/su".into(),
            is_dir: false,
            caps: None
        }));
        assert_eq!(layer.uncompressed_bytes % 512, 0);
    }

    /// Mode, owner, mtime, link count and xattr names of everything under
    /// `dir` (the dir itself included), so a test can prove a host tree
    /// was not touched at all, not only that nothing appeared in it.
    /// Path, mode, uid, gid, mtime, link count, xattr names.
    type Snapshot = Vec<(String, u32, u32, u32, i64, u64, Vec<String>)>;

    fn snapshot(dir: &Path) -> Snapshot {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            let m = fs::symlink_metadata(&p).unwrap();
            let mut names = Vec::new();
            if !m.file_type().is_symlink() {
                let c =
                    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
                        .unwrap();
                let mut buf = vec![0u8; 4096];
                // SAFETY: valid path and buffer of the given length.
                let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
                if n > 0 {
                    buf.truncate(n as usize);
                    names = buf
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect();
                }
            }
            out.push((
                p.display().to_string(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.nlink(),
                names,
            ));
            if m.is_dir() {
                for e in fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        out.sort();
        out
    }

    /// A host directory `victim` (0750, mtime 1000, a file `keep` inside)
    /// that hostile layers aim at through a swapped symlink.
    fn host_victim() -> (tempfile::TempDir, PathBuf) {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("keep"), b"keep").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o750)).unwrap();
        let old = TimeSpec::new(1000, 0);
        utimensat(
            None,
            &victim.join("keep"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        utimensat(None, &victim, &old, &old, UtimensatFlags::NoFollowSymlink).unwrap();
        let old = TimeSpec::new(2000, 0);
        utimensat(
            None,
            outside.path(),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        (outside, victim)
    }

    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn deferred_directory_metadata_never_follows_a_swapped_parent() {
        // Issue 12 item 1: `x/`, `x/victim/` (0777, mtime 0), then `x`
        // replaced by a symlink to a host directory. The deferred chmod and
        // utimes of `x/victim` must not land on the host's `victim`.
        let (outside, _victim) = host_victim();
        let before = snapshot(outside.path());
        let host = outside.path().to_str().unwrap().to_string();
        // Depth one (`x` -> the host dir holding victim) and depth two (a
        // grandparent swapped: `a` -> the parent of that host dir, so that
        // `a/<its name>/victim` is the host's victim again).
        let base = outside
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let up = outside
            .path()
            .parent()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let deep_a = format!("a/{base}/victim/");
        let cases = [
            (
                "x",
                vec!["x/".to_string()],
                "x/victim/".to_string(),
                host.clone(),
            ),
            (
                "a",
                vec!["a/".to_string(), format!("a/{base}/")],
                deep_a,
                up,
            ),
        ];
        for (swap_name, parents, deep, link) in cases {
            let mut t = TarBuilder::new();
            for p in &parents {
                t.add(e(p, tar::EntryType::Directory));
            }
            t.add(E {
                mode: 0o777,
                ..e(&deep, tar::EntryType::Directory)
            });
            t.add(E {
                link: Some(&link),
                ..e(swap_name, tar::EntryType::Symlink)
            });
            let (_tmp, dest, r) = unpack(&t.finish());
            r.unwrap_or_else(|e| panic!("{swap_name}: {e}"));
            assert!(
                fs::symlink_metadata(dest.join(swap_name))
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(snapshot(outside.path()), before, "host tree changed");
        }
        // The swap of the layer root's own child at depth one, applied to
        // the victim directly: `victim/` then `victim` -> host victim.
        let mut t = TarBuilder::new();
        t.add(E {
            mode: 0o777,
            ..e("victim/", tar::EntryType::Directory)
        })
        .add(E {
            link: Some(&format!("{host}/victim")),
            ..e("victim", tar::EntryType::Symlink)
        });
        let (_tmp, _dest, r) = unpack(&t.finish());
        r.unwrap();
        assert_eq!(snapshot(outside.path()), before, "host tree changed");
    }

    #[test]
    fn no_operation_goes_through_a_swapped_parent() {
        // After `x` becomes a symlink to a host directory, every kind of
        // entry below `x` (file, dir with owner and xattr, symlink, fifo,
        // hard link as source and as destination, whiteout, opaque marker)
        // is refused, and the host tree is untouched.
        let (outside, _victim) = host_victim();
        let before = snapshot(outside.path());
        let host = outside.path().to_str().unwrap().to_string();
        let swap = |t: &mut TarBuilder| {
            t.add(e("x/", tar::EntryType::Directory))
                .add(e("x/victim/", tar::EntryType::Directory))
                .add(e("real", tar::EntryType::Regular))
                .add(E {
                    link: Some(&host),
                    ..e("x", tar::EntryType::Symlink)
                });
        };
        type AddEntry = Box<dyn Fn(&mut TarBuilder)>;
        let cases: Vec<(&str, AddEntry)> = vec![
            (
                "x/victim/f",
                Box::new(|t: &mut TarBuilder| {
                    t.add(E {
                        data: b"pwned",
                        ..e("x/victim/f", tar::EntryType::Regular)
                    });
                }),
            ),
            (
                "x/victim/keep",
                Box::new(|t: &mut TarBuilder| {
                    t.add(E {
                        data: b"pwned",
                        ..e("x/victim/keep", tar::EntryType::Regular)
                    });
                }),
            ),
            (
                "x/victim/",
                Box::new(|t: &mut TarBuilder| {
                    t.add(E {
                        mode: 0o777,
                        uid: 4242,
                        xattrs: &[("user.pwned", b"1")],
                        ..e("x/victim/", tar::EntryType::Directory)
                    });
                }),
            ),
            (
                "x/victim/sl",
                Box::new(|t: &mut TarBuilder| {
                    t.add(E {
                        link: Some("/etc/shadow"),
                        ..e("x/victim/sl", tar::EntryType::Symlink)
                    });
                }),
            ),
            (
                "x/victim/fifo",
                Box::new(|t: &mut TarBuilder| {
                    t.add(e("x/victim/fifo", tar::EntryType::Fifo));
                }),
            ),
            (
                "x/victim/hl",
                Box::new(|t: &mut TarBuilder| {
                    t.add(E {
                        link: Some("real"),
                        ..e("x/victim/hl", tar::EntryType::Link)
                    });
                }),
            ),
            (
                "stolen",
                Box::new(|t: &mut TarBuilder| {
                    t.add(E {
                        link: Some("x/victim/keep"),
                        ..e("stolen", tar::EntryType::Link)
                    });
                }),
            ),
            (
                "x/.wh.victim",
                Box::new(|t: &mut TarBuilder| {
                    t.add(e("x/.wh.victim", tar::EntryType::Regular));
                }),
            ),
            (
                "x/victim/.wh.keep",
                Box::new(|t: &mut TarBuilder| {
                    t.add(e("x/victim/.wh.keep", tar::EntryType::Regular));
                }),
            ),
            (
                "x/victim/.wh..wh..opq",
                Box::new(|t: &mut TarBuilder| {
                    t.add(e("x/victim/.wh..wh..opq", tar::EntryType::Regular));
                }),
            ),
        ];
        for (entry, add) in cases {
            let mut t = TarBuilder::new();
            swap(&mut t);
            add(&mut t);
            assert_hostile(t.finish(), entry);
            assert_eq!(
                snapshot(outside.path()),
                before,
                "host tree changed by {entry}"
            );
        }
    }

    #[test]
    fn later_entry_replaces_earlier_one() {
        let mut t = TarBuilder::new();
        t.add(e("a/", tar::EntryType::Directory))
            .add(E {
                data: b"1",
                ..e("a/f", tar::EntryType::Regular)
            })
            .add(E {
                data: b"file now",
                ..e("a", tar::EntryType::Regular)
            })
            .add(E {
                data: b"old",
                ..e("g", tar::EntryType::Regular)
            })
            .add(E {
                data: b"new",
                ..e("g", tar::EntryType::Regular)
            });
        let (_tmp, dest, r) = unpack(&t.finish());
        r.unwrap();
        assert_eq!(fs::read(dest.join("a")).unwrap(), b"file now");
        assert_eq!(fs::read(dest.join("g")).unwrap(), b"new");
    }

    #[test]
    fn diff_id_is_checked_for_every_compression() {
        let mut t = TarBuilder::new();
        t.add(E {
            data: b"hello",
            ..e("f", tar::EntryType::Regular)
        });
        let tar = t.finish();
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
        for (data, c) in [
            (&tar, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let dest = tmp.path().join("l");
            let got = unpacker(1 << 20)
                .unpack(data.as_slice(), c, &dest, Some(&diff_id))
                .unwrap();
            assert_eq!(got.diff_id, diff_id);
            assert_eq!(fs::read(dest.join("f")).unwrap(), b"hello");
            let dest2 = tmp.path().join("l2");
            let wrong = format!("sha256:{}", "0".repeat(64));
            assert!(matches!(
                unpacker(1 << 20).unpack(data.as_slice(), c, &dest2, Some(&wrong)),
                Err(ImageError::DigestMismatch { .. })
            ));
            assert!(!dest2.exists());
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            ),
            None
        );
    }

    #[test]
    fn refuses_parent_dir_components() {
        let mut t = TarBuilder::new();
        t.add(E {
            data: b"x",
            ..e("../evil", tar::EntryType::Regular)
        });
        assert_hostile(t.finish(), "../evil");
        let mut t = TarBuilder::new();
        t.add(e("a/", tar::EntryType::Directory)).add(E {
            data: b"x",
            ..e("a/../../evil", tar::EntryType::Regular)
        });
        assert_hostile(t.finish(), "a/../../evil");
    }

    #[test]
    fn refuses_absolute_paths() {
        let mut t = TarBuilder::new();
        t.add(e("ok", tar::EntryType::Regular)).add(E {
            data: b"x",
            ..e("/etc/evil", tar::EntryType::Regular)
        });
        assert_hostile(t.finish(), "/etc/evil");
    }

    #[test]
    fn refuses_writing_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let mut t = TarBuilder::new();
        t.add(E {
            link: Some(&target),
            ..e("escape", tar::EntryType::Symlink)
        })
        .add(E {
            data: b"pwned",
            ..e("escape/file", tar::EntryType::Regular)
        });
        assert_hostile(t.finish(), "escape/file");
        assert!(!outside.path().join("file").exists());
        // A relative symlink to a directory of the same layer is refused too: never followed.
        let mut t = TarBuilder::new();
        t.add(e("real/", tar::EntryType::Directory))
            .add(E {
                link: Some("real"),
                ..e("alias", tar::EntryType::Symlink)
            })
            .add(e("alias/f", tar::EntryType::Regular));
        assert_hostile(t.finish(), "alias/f");
    }

    /// The parent kept open between entries (`ParentCache`) never outlives
    /// the directory it was: an entry that replaces the directory, removes
    /// it by whiteout, or swaps an ancestor for a symlink makes the next
    /// entry below it resolve again, and fail as it would have without the
    /// cache, instead of writing into a detached or foreign directory.
    #[test]
    fn a_replaced_parent_is_never_reused() {
        let replaced_by = |tail: E<'static>| {
            let mut t = TarBuilder::new();
            t.add(e("d/", tar::EntryType::Directory))
                .add(e("d/sub/", tar::EntryType::Directory))
                .add(e("d/sub/f1", tar::EntryType::Regular))
                .add(e("d/sub/f2", tar::EntryType::Regular))
                .add(tail)
                .add(e("d/sub/f3", tar::EntryType::Regular));
            t.finish()
        };
        // The directory itself becomes a file.
        assert_hostile(replaced_by(e("d/sub", tar::EntryType::Regular)), "d/sub/f3");
        // ...or a symlink, to a directory of the same layer.
        assert_hostile(
            replaced_by(E {
                link: Some("."),
                ..e("d/sub", tar::EntryType::Symlink)
            }),
            "d/sub/f3",
        );
        // An ancestor becomes a symlink to a host directory.
        let outside = tempfile::tempdir().unwrap();
        let target: &'static str = Box::leak(outside.path().to_str().unwrap().into());
        let mut t = TarBuilder::new();
        t.add(e("d/", tar::EntryType::Directory))
            .add(e("d/sub/", tar::EntryType::Directory))
            .add(e("d/sub/f1", tar::EntryType::Regular))
            .add(E {
                link: Some(target),
                ..e("d", tar::EntryType::Symlink)
            })
            .add(e("d/sub/f2", tar::EntryType::Regular));
        assert_hostile(t.finish(), "d/sub/f2");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        // Siblings and hard links between them, the case the cache is
        // for, still land where they belong.
        let mut t = TarBuilder::new();
        t.add(e("bin/", tar::EntryType::Directory))
            .add(E {
                data: b"busybox",
                ..e("bin/busybox", tar::EntryType::Regular)
            })
            .add(E {
                link: Some("bin/busybox"),
                ..e("bin/sh", tar::EntryType::Link)
            })
            .add(E {
                link: Some("bin/busybox"),
                ..e("bin/ls", tar::EntryType::Link)
            })
            .add(E {
                link: Some("bin/busybox"),
                ..e("sbin/init", tar::EntryType::Link)
            });
        let (_tmp, dest, r) = unpack(&t.finish());
        r.unwrap();
        for name in ["bin/sh", "bin/ls", "sbin/init"] {
            assert_eq!(fs::read(dest.join(name)).unwrap(), b"busybox", "{name}");
            assert_eq!(
                inode_of(&dest.join(name)),
                inode_of(&dest.join("bin/busybox")),
                "{name}"
            );
        }
    }

    #[test]
    fn refuses_hard_links_outside_or_absent() {
        for (link, name) in [
            ("../../etc/passwd", "l1"),
            ("/etc/passwd", "l2"),
            ("not-here", "l3"),
        ] {
            let mut t = TarBuilder::new();
            t.add(E {
                link: Some(link),
                ..e(name, tar::EntryType::Link)
            });
            assert_hostile(t.finish(), name);
        }
        // A hard link through a symlink of the layer.
        let mut t = TarBuilder::new();
        t.add(E {
            link: Some("/etc"),
            ..e("etc", tar::EntryType::Symlink)
        })
        .add(E {
            link: Some("etc/passwd"),
            ..e("pw", tar::EntryType::Link)
        });
        assert_hostile(t.finish(), "pw");
    }

    #[test]
    fn refuses_forged_overlay_xattrs() {
        let mut t = TarBuilder::new();
        t.add(E {
            xattrs: &[("trusted.overlay.redirect", b"/etc")],
            ..e("d/", tar::EntryType::Directory)
        });
        assert_hostile(t.finish(), "d/");
    }

    #[test]
    fn caps_uncompressed_size() {
        let big = vec![0u8; 64 * 1024];
        let mut t = TarBuilder::new();
        t.add(E {
            data: &big,
            ..e("big", tar::EntryType::Regular)
        });
        let tar = t.finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("l");
        let r = unpacker(16 * 1024).unpack(gz.as_slice(), Compression::Gzip, &dest, None);
        assert!(
            matches!(r, Err(ImageError::TooLarge { limit: 16384, .. })),
            "{r:?}"
        );
        assert!(!dest.exists());
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let mut t = TarBuilder::new();
        t.add(E {
            data: &[7u8; 2000],
            ..e("a", tar::EntryType::Regular)
        })
        .add(E {
            data: b"b",
            ..e("b", tar::EntryType::Regular)
        });
        let tar = t.finish();
        // Cut inside the data of "a".
        let (_t1, d1, r) = unpack(&tar[..1024]);
        assert!(matches!(r, Err(ImageError::Corrupt { .. })), "{r:?}");
        assert!(!d1.exists());
        // Cut exactly at a header boundary, end-of-archive blocks missing.
        let (_t2, d2, r) = unpack(&tar[..512 + 2048]);
        assert!(matches!(r, Err(ImageError::Corrupt { .. })), "{r:?}");
        assert!(!d2.exists());
        // Truncated gzip.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let r = unpacker(1 << 20).unpack(
            &gz[..gz.len() - 10],
            Compression::Gzip,
            &tmp.path().join("l"),
            None,
        );
        assert!(r.is_err());
    }

    #[test]
    fn file_caps_merge_follows_layer_order() {
        let put = |p: &str, c: Option<&[u8]>| LayerChange::Put {
            path: p.into(),
            is_dir: false,
            caps: c.map(<[u8]>::to_vec),
        };
        let l1 = vec![
            put("/bin/ping", Some(b"A")),
            put("/opt/x/tool", Some(b"B")),
            put("/usr/bin/keep", Some(b"C")),
            put("/d/sub/f", Some(b"D")),
        ];
        let l2 = vec![
            LayerChange::Whiteout {
                path: "/opt/x".into(),
            },
            put("/bin/ping", None),
            put("/usr/bin/new", Some(b"E")),
            LayerChange::Opaque { dir: "/d".into() },
            put("/d/sub/f2", Some(b"F")),
        ];
        let merged = merge_file_caps([l1.as_slice()]);
        assert_eq!(merged.len(), 4);
        let merged = merge_file_caps([l1.as_slice(), l2.as_slice()]);
        let keys: Vec<_> = merged.keys().cloned().collect();
        assert_eq!(keys, vec!["/d/sub/f2", "/usr/bin/keep", "/usr/bin/new"]);
        let l3 = vec![put("/bin/ping", Some(b"G")), put("/usr", None)];
        let merged = merge_file_caps([l1.as_slice(), l2.as_slice(), l3.as_slice()]);
        assert_eq!(merged.get("/bin/ping").map(Vec::as_slice), Some(&b"G"[..]));
        assert!(
            !merged.contains_key("/usr/bin/keep"),
            "a file replacing /usr hides what was below it"
        );
    }

    /// Unpacks `tar` and expects a refusal whose text names the layer and
    /// `entry` and contains `cause`; nothing may be left in place.
    fn assert_refused_naming(tar: &[u8], entry: &str, cause: &str) -> String {
        let (_tmp, dest, r) = unpack(tar);
        let err = r.expect_err("the layer must be refused").to_string();
        assert!(err.contains("sha256:feed"), "names the layer: {err}");
        assert!(err.contains(entry), "names the entry: {err}");
        assert!(err.contains(cause), "says why: {err}");
        assert!(!dest.exists(), "nothing of a refused layer stays visible");
        err
    }

    #[test]
    fn refuses_an_xattr_value_above_the_kernel_limit() {
        let big = vec![b'x'; XATTR_VALUE_MAX + 1];
        let mut t = TarBuilder::new();
        t.add(E {
            data: b"hi",
            xattrs: &[("user.big", &big)],
            ..e("etc/conf", tar::EntryType::Regular)
        });
        assert_refused_naming(&t.finish(), "etc/conf", "user.big with a 65537 byte value");
    }

    #[test]
    fn refuses_an_xattr_name_above_the_kernel_limit() {
        let name = format!("user.{}", "n".repeat(XATTR_NAME_MAX));
        let mut t = TarBuilder::new();
        t.add(E {
            xattrs: &[(&name, b"v")],
            ..e("etc/conf", tar::EntryType::Regular)
        });
        assert_refused_naming(&t.finish(), "etc/conf", "xattr name of 260 bytes");
    }

    #[test]
    fn refuses_many_xattrs_above_the_configured_bound() {
        let names: Vec<String> = (0..300).map(|i| format!("user.a{i:04}")).collect();
        let value = vec![b'v'; 1000];
        let xattrs: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), value.as_slice()))
            .collect();
        let mut t = TarBuilder::new();
        t.add(E {
            xattrs: &xattrs,
            ..e("bin/many", tar::EntryType::Regular)
        });
        let err = assert_refused_naming(&t.finish(), "bin/many", "max_entry_xattr_bytes");
        assert!(err.contains("more than 262144 bytes of xattrs"), "{err}");
        // Just under the bound is fine: the limit is the bound, not less.
        let few: Vec<(&str, &[u8])> = xattrs[..200].to_vec();
        let mut t = TarBuilder::new();
        t.add(E {
            xattrs: &few,
            ..e("bin/many", tar::EntryType::Regular)
        });
        let (_tmp, _dest, r) = unpack(&t.finish());
        // ext4 keeps about one block of xattrs per inode: a filesystem
        // refusal (ENOSPC/E2BIG) is an I/O error, not a hostile-layer one.
        if let Err(e) = r {
            assert!(matches!(e, ImageError::Io { .. }), "{e}");
        }
    }

    /// Drops CAP_MKNOD from this thread's effective set (capabilities are
    /// per thread on Linux, so the rest of the test process keeps it).
    fn drop_cap_mknod_in_this_thread() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let mut hdr = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data structs, as
        // capget(2) documents; both point to live stack memory.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
                0
            );
            // CAP_MKNOD is 27 (linux/capability.h).
            data[0].effective &= !(1 << 27);
            assert_eq!(libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()), 0);
        }
    }

    #[test]
    fn device_nodes_without_cap_mknod_refuse_the_layer() {
        let mut t = TarBuilder::new();
        t.add(e("etc/", tar::EntryType::Directory)).add(E {
            dev: (1, 3),
            ..e("dev/null", tar::EntryType::Char)
        });
        let tar = t.finish();
        // Root drops CAP_MKNOD in a thread of its own; anyone else never had it.
        let err = std::thread::spawn(move || {
            drop_cap_mknod_in_this_thread();
            assert_refused_naming(&tar, "dev/null", "character device node (1:3)")
        })
        .join()
        .unwrap();
        assert!(err.contains("no CAP_MKNOD"), "{err}");
        assert!(!err.contains("os error"), "not a raw errno: {err}");

        let mut t = TarBuilder::new();
        t.add(E {
            dev: (8, 0),
            ..e("dev/sda", tar::EntryType::Block)
        });
        let tar = t.finish();
        std::thread::spawn(move || {
            drop_cap_mknod_in_this_thread();
            assert_refused_naming(&tar, "dev/sda", "block device node (8:0)")
        })
        .join()
        .unwrap();
    }

    #[test]
    fn privileged_whiteouts_owners_devices_and_caps() {
        if !privileged() {
            eprintln!(
                "skipped: needs root and CAPCRI_PRIVILEGED_TESTS (mknod, chown, trusted.* and security.capability xattrs)"
            );
            return;
        }
        // cap_net_raw+ep, revision 2: magic 0x02000001 | effective, permitted bit 13, inheritable 0.
        let caps: &[u8] = &[
            0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut t = TarBuilder::new();
        t.add(E {
            mode: 0o755,
            uid: 1000,
            xattrs: &[("security.capability", caps)],
            data: b"bin",
            ..e("usr/bin/ping", tar::EntryType::Regular)
        })
        .add(E {
            mode: 0o4711,
            uid: 0,
            data: b"s",
            ..e("usr/bin/suid", tar::EntryType::Regular)
        })
        .add(e("data/.wh.a", tar::EntryType::Regular))
        .add(e("opq/.wh..wh..opq", tar::EntryType::Regular))
        .add(e("opq/y", tar::EntryType::Regular))
        .add(E {
            dev: (1, 3),
            mode: 0o666,
            ..e("dev/null", tar::EntryType::Char)
        })
        .add(E {
            uid: 33,
            ..e("home/www/", tar::EntryType::Directory)
        });
        let (_tmp, dest, r) = unpack(&t.finish());
        let layer = r.unwrap();
        let ping = dest.join("usr/bin/ping");
        assert_eq!(
            get_xattr(&ping, CAPABILITY_XATTR).as_deref(),
            Some(caps),
            "security.capability survives the chown"
        );
        assert_eq!(fs::metadata(&ping).unwrap().uid(), 1000);
        assert_eq!(
            fs::metadata(dest.join("usr/bin/suid")).unwrap().mode() & 0o7777,
            0o4711
        );
        let wh = fs::symlink_metadata(dest.join("data/a")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert_eq!(
            get_xattr(&dest.join("opq"), OPAQUE_XATTR).as_deref(),
            Some(&b"y"[..])
        );
        assert!(dest.join("opq/y").exists());
        assert!(!dest.join("opq/.wh..wh..opq").exists());
        let null = fs::symlink_metadata(dest.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), makedev(1, 3));
        assert_eq!(fs::metadata(dest.join("home/www")).unwrap().uid(), 33);
        assert!(layer.changes.contains(&LayerChange::Whiteout {
            path: "/data/a".into()
        }));
        assert!(
            layer
                .changes
                .contains(&LayerChange::Opaque { dir: "/opq".into() })
        );
        let merged = merge_file_caps([layer.changes.as_slice()]);
        assert_eq!(merged.get("/usr/bin/ping").map(Vec::as_slice), Some(caps));
    }
}
