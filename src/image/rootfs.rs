//! The overlay rootfs of a container: the image's layer directories as
//! read-only lowers, the container's own upper and work directories.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::ImageError;
use crate::util::mount::unmount_if_mounted;

/// mount(2) copies the data argument into a single page, NUL included.
const MAX_OPTIONS: usize = 4095;

/// The overlay option string. overlayfs wants lowerdir top-most *first*
/// (kernel Documentation/filesystems/overlayfs.rst "Multiple lower layers"),
/// the reverse of the image's bottom-first layer order.
pub fn overlay_options(
    lower_bottom_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<String, ImageError> {
    if lower_bottom_first.is_empty() {
        return Err(ImageError::Mount {
            target: target.to_path_buf(),
            reason: "the image has no layers; overlayfs needs at least one lower directory".into(),
        });
    }
    let mut parts = Vec::new();
    for p in lower_bottom_first
        .iter()
        .rev()
        .map(PathBuf::as_path)
        .chain([upper, work])
    {
        let s = p.to_str().ok_or_else(|| ImageError::Mount {
            target: target.to_path_buf(),
            reason: format!("path {} is not UTF-8", p.display()),
        })?;
        // ':' separates lowers and ',' options; overlayfs has escapes but capcri's paths never need them.
        if s.contains([':', ',']) || s.is_empty() {
            return Err(ImageError::Mount {
                target: target.to_path_buf(),
                reason: format!(
                    "path {s:?} contains ':' or ',' which the overlay option string cannot hold; use another state directory"
                ),
            });
        }
        parts.push(s.to_string());
    }
    let work_s = parts.pop().unwrap_or_default();
    let upper_s = parts.pop().unwrap_or_default();
    let options = format!(
        "lowerdir={},upperdir={upper_s},workdir={work_s}",
        parts.join(":")
    );
    if options.len() > MAX_OPTIONS {
        return Err(ImageError::Mount {
            target: target.to_path_buf(),
            reason: format!(
                "the overlay options for {} layers are {} bytes, more than the {MAX_OPTIONS} one page allows; move the image root to a shorter path or flatten the image",
                lower_bottom_first.len(),
                options.len()
            ),
        });
    }
    Ok(options)
}

pub fn mount_overlay(
    lower_bottom_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    let options = overlay_options(lower_bottom_first, upper, work, target)?;
    mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options.as_str())).map_err(|e| ImageError::Mount {
        target: target.to_path_buf(),
        reason: format!("mount(overlay, {options}): {e}; check that the layer, upper and work directories exist on one filesystem that supports overlay upper dirs and that capcri runs as root"),
    })
}

/// Idempotent: a target that is not mounted (or does not exist) is fine.
pub fn unmount(target: &Path) -> Result<(), ImageError> {
    match unmount_if_mounted(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(target, MntFlags::MNT_DETACH).map_err(|e| ImageError::Mount {
                target: target.to_path_buf(),
                reason: format!("lazy unmount after EBUSY failed: {e}"),
            })
        }
        Err(e) => Err(ImageError::Mount {
            target: target.to_path_buf(),
            reason: format!("umount: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_top_first() {
        let lowers = vec![
            PathBuf::from("/l/bottom"),
            PathBuf::from("/l/mid"),
            PathBuf::from("/l/top"),
        ];
        let o = overlay_options(
            &lowers,
            Path::new("/c/upper"),
            Path::new("/c/work"),
            Path::new("/c/rootfs"),
        )
        .unwrap();
        assert_eq!(
            o,
            "lowerdir=/l/top:/l/mid:/l/bottom,upperdir=/c/upper,workdir=/c/work"
        );
        let single = overlay_options(
            &lowers[..1],
            Path::new("/u"),
            Path::new("/w"),
            Path::new("/t"),
        )
        .unwrap();
        assert_eq!(single, "lowerdir=/l/bottom,upperdir=/u,workdir=/w");
    }

    #[test]
    fn refuses_what_the_option_string_cannot_hold() {
        let t = Path::new("/t");
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w"), t).is_err());
        assert!(
            overlay_options(
                &[PathBuf::from("/a:b")],
                Path::new("/u"),
                Path::new("/w"),
                t
            )
            .is_err()
        );
        let many: Vec<PathBuf> = (0..100)
            .map(|i| {
                PathBuf::from(format!(
                    "/var/lib/capcri/images/layers/{}{i:02}",
                    "f".repeat(62)
                ))
            })
            .collect();
        let err = overlay_options(&many, Path::new("/u"), Path::new("/w"), t).unwrap_err();
        assert!(err.to_string().contains("one page"), "{err}");
    }
}
