//! A layer blob comes from a registry, i.e. from anyone. Unpacking it must
//! never panic and never create, change or link anything outside the layer
//! directory (tar path traversal, symlink and hard-link escapes).
//!
//! Input: first byte selects the compression (tar, gzip, zstd), the rest is
//! the blob.

#![no_main]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
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
    // base/{canary/keep, outer/layer}: `..` from the layer lands in outer,
    // then base; a hard link out would raise keep's link count.
    let base = tempfile::tempdir().expect("harness: create a temp dir");
    let canary = base.path().join("canary");
    let keep = canary.join("keep");
    let outer = base.path().join("outer");
    fs::create_dir(&canary).expect("harness: create canary dir");
    fs::write(&keep, b"canary").expect("harness: write canary");
    fs::create_dir(&outer).expect("harness: create outer dir");
    let dest = outer.join("layer");

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
    assert_eq!(names(&canary), set(&["keep"]));
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
