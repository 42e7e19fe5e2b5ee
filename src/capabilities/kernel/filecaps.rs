//! The `security.capability` extended attribute (struct vfs_cap_data /
//! vfs_ns_cap_data in include/uapi/linux/capability.h). These bytes come
//! from image layers, i.e. from anyone: the parser never panics.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::set::CapSet;

const REVISION_MASK: u32 = 0xFF00_0000;
const FLAGS_EFFECTIVE: u32 = 0x0000_0001;
const REVISION_1: u32 = 0x0100_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;
/// magic_etc + one (permitted, inheritable) pair of 32-bit words.
const SIZE_1: usize = 4 + 8;
/// magic_etc + two pairs (64 capability bits).
const SIZE_2: usize = 4 + 2 * 8;
/// revision 2 + the namespace root uid.
const SIZE_3: usize = SIZE_2 + 4;

/// File capabilities of one binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileCaps {
    pub permitted: CapSet,
    pub inheritable: CapSet,
    /// The single "effective" bit: when set, the permitted set becomes
    /// effective on execve (and missing permitted bits make execve fail).
    pub effective: bool,
    /// Revision 3 only: the root uid of the user namespace the caps belong to.
    pub rootid: Option<u32>,
}

/// Why an xattr value is not a usable `security.capability`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FileCapsError {
    #[error(
        "security.capability xattr is {len} bytes, too short for its revision {revision:#x} (needs {need}); the image layer is corrupt: rebuild it with `setcap`"
    )]
    Short {
        len: usize,
        revision: u32,
        need: usize,
    },
    #[error(
        "security.capability xattr has unknown revision {revision:#x} (known: 1, 2, 3); re-set it with a current `setcap`"
    )]
    UnknownRevision { revision: u32 },
    #[error(
        "security.capability xattr of revision {revision:#x} is {len} bytes, expected {need}; the image layer is corrupt: rebuild it with `setcap`"
    )]
    WrongSize {
        len: usize,
        revision: u32,
        need: usize,
    },
}

fn le32(data: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(bytes) = data.get(at..at + 4) {
        word.copy_from_slice(bytes);
    }
    u32::from_le_bytes(word)
}

/// Parses the raw value of a `security.capability` xattr. Like the kernel's
/// `get_vfs_caps_from_disk`, sizes must match the revision exactly and bits
/// beyond the last capability are ignored.
pub fn parse_file_caps(data: &[u8]) -> Result<FileCaps, FileCapsError> {
    if data.len() < 4 {
        return Err(FileCapsError::Short {
            len: data.len(),
            revision: 0,
            need: 4,
        });
    }
    let magic = le32(data, 0);
    let revision = magic & REVISION_MASK;
    let need = match revision {
        REVISION_1 => SIZE_1,
        REVISION_2 => SIZE_2,
        REVISION_3 => SIZE_3,
        _ => return Err(FileCapsError::UnknownRevision { revision }),
    };
    if data.len() < need {
        return Err(FileCapsError::Short {
            len: data.len(),
            revision,
            need,
        });
    }
    if data.len() != need {
        return Err(FileCapsError::WrongSize {
            len: data.len(),
            revision,
            need,
        });
    }
    let mut permitted = u64::from(le32(data, 4));
    let mut inheritable = u64::from(le32(data, 8));
    if revision != REVISION_1 {
        permitted |= u64::from(le32(data, 12)) << 32;
        inheritable |= u64::from(le32(data, 16)) << 32;
    }
    Ok(FileCaps {
        permitted: CapSet::from_bits_truncate(permitted),
        inheritable: CapSet::from_bits_truncate(inheritable),
        effective: magic & FLAGS_EFFECTIVE != 0,
        rootid: (revision == REVISION_3).then(|| le32(data, 20)),
    })
}

impl FileCaps {
    /// Serializes as revision 2 (or 3 with a rootid), for tests and tools.
    pub fn to_xattr(&self) -> Vec<u8> {
        let revision = if self.rootid.is_some() {
            REVISION_3
        } else {
            REVISION_2
        };
        let magic = revision | if self.effective { FLAGS_EFFECTIVE } else { 0 };
        let p = self.permitted.bits();
        let i = self.inheritable.bits();
        let mut out = Vec::with_capacity(SIZE_3);
        for word in [
            magic,
            p as u32,
            i as u32,
            (p >> 32) as u32,
            (i >> 32) as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        if let Some(root) = self.rootid {
            out.extend_from_slice(&root.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kernel::Capability::*;

    #[test]
    fn parses_setcap_cap_net_raw_ep_v2() {
        // `setcap cap_net_raw+ep` writes revision 2 with bit 13 permitted.
        let mut raw = Vec::new();
        for w in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        let caps = parse_file_caps(&raw).unwrap_or_default();
        assert_eq!(caps.permitted, CapSet::from_iter([NetRaw]));
        assert!(caps.effective);
        assert_eq!(caps.rootid, None);
    }

    #[test]
    fn parses_v1_and_v3_and_roundtrips() {
        let mut v1 = Vec::new();
        for w in [0x0100_0000u32, 1 << 10, 1 << 10] {
            v1.extend_from_slice(&w.to_le_bytes());
        }
        let caps = parse_file_caps(&v1).unwrap_or_default();
        assert_eq!(caps.inheritable, CapSet::from_iter([NetBindService]));
        assert!(!caps.effective);

        let v3 = FileCaps {
            permitted: CapSet::from_iter([Bpf, NetAdmin]),
            inheritable: CapSet::empty(),
            effective: true,
            rootid: Some(100000),
        };
        assert_eq!(parse_file_caps(&v3.to_xattr()), Ok(v3));
    }

    #[test]
    fn rejects_bad_data_without_panicking() {
        assert!(matches!(
            parse_file_caps(&[]),
            Err(FileCapsError::Short { .. })
        ));
        assert!(matches!(
            parse_file_caps(&[0, 0, 0, 0x02, 1]),
            Err(FileCapsError::Short { .. })
        ));
        assert!(matches!(
            parse_file_caps(&[0, 0, 0, 0x09, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FileCapsError::UnknownRevision { .. })
        ));
        let mut long = FileCaps::default().to_xattr();
        long.push(0);
        assert!(matches!(
            parse_file_caps(&long),
            Err(FileCapsError::WrongSize { .. })
        ));
        // Every prefix and a byte pattern sweep: never a panic.
        let full = FileCaps {
            rootid: Some(1),
            ..FileCaps::default()
        }
        .to_xattr();
        for n in 0..=full.len() {
            let _ = parse_file_caps(&full[..n]);
        }
        for b in 0..=255u8 {
            let _ = parse_file_caps(&[b; 24]);
            let _ = parse_file_caps(&[b; 7]);
        }
    }
}
