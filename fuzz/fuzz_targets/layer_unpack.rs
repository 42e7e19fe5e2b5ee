//! A layer blob comes from a registry, i.e. from anyone. Unpacking it must
//! never panic and never create, change or link anything outside the layer
//! directory (tar path traversal, symlink and hard-link escapes, and a parent
//! swapped for a symlink before the deferred directory chmod/utimes): the
//! mode, owner, mtime and link count of everything outside stay as they were.
//!
//! Input: first byte selects the compression (tar, gzip, zstd), the rest is
//! the blob.

#![no_main]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use capcri::image::{Compression, LayerChange, LayerUnpacker};
use libfuzzer_sys::fuzz_target;

/// Small, so a gzip/zstd bomb is cut quickly; the cap itself is under test.
const MAX_BYTES: u64 = 4 << 20;

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Path, mode, owner, mtime and link count of `dir` and everything in it.
type Fingerprint = Vec<(String, u32, u32, u32, i64, i64, u64)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        out.push((
            p.display().to_string(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
            m.nlink(),
        ));
        if m.is_dir()
            && let Ok(rd) = fs::read_dir(&p)
        {
            stack.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    out.sort();
    out
}

/// Mode and owner of a directory whose mtime legitimately changes.
fn mode_owner(dir: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(dir).expect("harness: stat");
    (m.mode(), m.uid(), m.gid())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, blob)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    // base/{canary/{keep, sub/}, outer/layer}: `..` from the layer lands in
    // outer, then base; a hard link out would raise keep's link count; a
    // layer symlink `x -> ../../canary` swapped in after `x/sub/` aims the
    // deferred chmod/utimes at canary/sub.
    let base = tempfile::tempdir().expect("harness: create a temp dir");
    let canary = base.path().join("canary");
    let keep = canary.join("keep");
    let sub = canary.join("sub");
    let outer = base.path().join("outer");
    fs::create_dir(&canary).expect("harness: create canary dir");
    fs::write(&keep, b"canary").expect("harness: write canary");
    fs::create_dir(&sub).expect("harness: create canary/sub");
    fs::create_dir(&outer).expect("harness: create outer dir");
    for (p, mode, secs) in [
        (&sub, 0o750, 1000),
        (&canary, 0o750, 2000),
        (&keep, 0o640, 3000),
    ] {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("harness: chmod");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        fs::File::open(p)
            .and_then(|f| f.set_modified(t))
            .expect("harness: set mtime");
    }
    let dest = outer.join("layer");
    let canary_before = fingerprint(&canary);
    let base_before = mode_owner(base.path());
    let outer_before = mode_owner(&outer);

    let unpacker = LayerUnpacker {
        layer: "sha256:fuzz".into(),
        max_bytes: MAX_BYTES,
        keep_ownership: false,
        max_entry_xattr_bytes: capcri::image::unpack::DEFAULT_MAX_ENTRY_XATTR_BYTES,
    };
    let result = unpacker.unpack(blob, compression, &dest, None);

    assert_eq!(names(base.path()), set(&["canary", "outer"]));
    assert_eq!(
        names(&outer),
        if result.is_ok() {
            set(&["layer"])
        } else {
            set(&[])
        },
        "the layer directory stays only on success"
    );
    assert_eq!(names(&canary), set(&["keep", "sub"]));
    assert_eq!(
        fingerprint(&canary),
        canary_before,
        "mode, owner, mtime or link count changed outside the layer"
    );
    assert_eq!(mode_owner(base.path()), base_before);
    assert_eq!(mode_owner(&outer), outer_before);
    let meta = fs::symlink_metadata(&keep).expect("canary file still there");
    assert!(
        meta.is_file() && meta.nlink() == 1,
        "canary replaced or hard-linked"
    );
    assert_eq!(fs::read(&keep).expect("read canary"), b"canary");
    assert!(fs::symlink_metadata(&canary).is_ok_and(|m| m.is_dir()));

    if let Ok(layer) = result {
        assert!(layer.uncompressed_bytes <= MAX_BYTES);
        for change in &layer.changes {
            let path = match change {
                LayerChange::Put { path, .. } => path,
                LayerChange::Whiteout { path } => path,
                LayerChange::Opaque { dir } => dir,
            };
            // An opaque marker at the layer root has the empty dir name.
            assert!(
                path.is_empty() || path.starts_with('/'),
                "change path {path:?} is not absolute"
            );
            assert!(
                !Path::new(path)
                    .components()
                    .any(|c| matches!(c, Component::ParentDir)),
                "change path {path:?} has a '..'"
            );
        }
    }
});
