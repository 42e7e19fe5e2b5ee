//! Capability names as the kernel numbers them (include/uapi/linux/capability.h).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A name that is not a Linux capability. The one error for an unknown
/// name on every path (CRI add/drop/ambient, policy actions, `policy
/// check`, `policy eval`), so it names the name and lists the valid form.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown capability {name:?}: write ALL or a Linux capability name (capabilities(7)), in any case, with or without the CAP_ prefix, one of {}",
    valid_names()
)]
pub struct CapParseError {
    pub name: String,
}

fn valid_names() -> String {
    Capability::ALL
        .iter()
        .map(|c| c.short_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of a capability list: `ALL` or a single capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapName {
    All,
    One(Capability),
}

impl FromStr for CapName {
    type Err = CapParseError;

    /// The one normalisation of a capability name: trim, upper-case, drop
    /// the `CAP_` prefix; `ALL` (same rules, so " all" too) is the whole set.
    /// Issue 12 item 5: a policy that compared raw strings missed
    /// "sys_admin", " SYS_ADMIN" and "ALL", which the kernel still got.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let short = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if short == "ALL" {
            return Ok(CapName::All);
        }
        Capability::ALL
            .iter()
            .copied()
            .find(|c| c.short_name() == short)
            .map(CapName::One)
            .ok_or_else(|| CapParseError {
                name: s.to_string(),
            })
    }
}

macro_rules! capabilities {
    ($($variant:ident = $bit:literal => $name:literal,)*) => {
        /// One Linux capability; the discriminant is the kernel's bit number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Capability {
            $($variant = $bit,)*
        }

        impl Capability {
            /// All capabilities in bit order.
            pub const ALL: &'static [Capability] = &[$(Capability::$variant,)*];

            /// The name without the `CAP_` prefix, as the CRI writes it.
            pub fn short_name(self) -> &'static str {
                match self {
                    $(Capability::$variant => $name,)*
                }
            }
        }
    };
}

capabilities! {
    Chown = 0 => "CHOWN",
    DacOverride = 1 => "DAC_OVERRIDE",
    DacReadSearch = 2 => "DAC_READ_SEARCH",
    Fowner = 3 => "FOWNER",
    Fsetid = 4 => "FSETID",
    Kill = 5 => "KILL",
    Setgid = 6 => "SETGID",
    Setuid = 7 => "SETUID",
    Setpcap = 8 => "SETPCAP",
    LinuxImmutable = 9 => "LINUX_IMMUTABLE",
    NetBindService = 10 => "NET_BIND_SERVICE",
    NetBroadcast = 11 => "NET_BROADCAST",
    NetAdmin = 12 => "NET_ADMIN",
    NetRaw = 13 => "NET_RAW",
    IpcLock = 14 => "IPC_LOCK",
    IpcOwner = 15 => "IPC_OWNER",
    SysModule = 16 => "SYS_MODULE",
    SysRawio = 17 => "SYS_RAWIO",
    SysChroot = 18 => "SYS_CHROOT",
    SysPtrace = 19 => "SYS_PTRACE",
    SysPacct = 20 => "SYS_PACCT",
    SysAdmin = 21 => "SYS_ADMIN",
    SysBoot = 22 => "SYS_BOOT",
    SysNice = 23 => "SYS_NICE",
    SysResource = 24 => "SYS_RESOURCE",
    SysTime = 25 => "SYS_TIME",
    SysTtyConfig = 26 => "SYS_TTY_CONFIG",
    Mknod = 27 => "MKNOD",
    Lease = 28 => "LEASE",
    AuditWrite = 29 => "AUDIT_WRITE",
    AuditControl = 30 => "AUDIT_CONTROL",
    Setfcap = 31 => "SETFCAP",
    MacOverride = 32 => "MAC_OVERRIDE",
    MacAdmin = 33 => "MAC_ADMIN",
    Syslog = 34 => "SYSLOG",
    WakeAlarm = 35 => "WAKE_ALARM",
    BlockSuspend = 36 => "BLOCK_SUSPEND",
    AuditRead = 37 => "AUDIT_READ",
    Perfmon = 38 => "PERFMON",
    Bpf = 39 => "BPF",
    CheckpointRestore = 40 => "CHECKPOINT_RESTORE",
}

impl Capability {
    /// The kernel's highest capability number known to this model.
    pub const LAST: u8 = 40;

    /// The kernel bit number.
    pub fn bit(self) -> u8 {
        self as u8
    }

    /// The capability with kernel bit number `bit`, if known.
    pub fn from_bit(bit: u8) -> Option<Capability> {
        Capability::ALL.get(usize::from(bit)).copied()
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CAP_{}", self.short_name())
    }
}

impl FromStr for Capability {
    type Err = CapParseError;

    /// Accepts the CRI form (`NET_RAW`), the kernel form (`CAP_NET_RAW`) and
    /// libcap's lower case (`cap_net_raw`), since all three appear in pod
    /// specs and image tooling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<CapName>()? {
            CapName::One(c) => Ok(c),
            CapName::All => Err(CapParseError {
                name: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_kernel_numbers() {
        for (i, c) in Capability::ALL.iter().enumerate() {
            assert_eq!(usize::from(c.bit()), i);
        }
        assert_eq!(Capability::ALL.len(), usize::from(Capability::LAST) + 1);
        assert_eq!(Capability::NetRaw.bit(), 13);
        assert_eq!(Capability::CheckpointRestore.bit(), 40);
    }

    #[test]
    fn parses_all_spellings() {
        for s in ["NET_RAW", "CAP_NET_RAW", "cap_net_raw", " net_raw "] {
            assert_eq!(s.parse::<Capability>(), Ok(Capability::NetRaw), "{s}");
        }
        assert!("NET_RAWW".parse::<Capability>().is_err());
        assert!("".parse::<Capability>().is_err());
        assert!("ALL".parse::<Capability>().is_err());
        assert_eq!(Capability::NetRaw.to_string(), "CAP_NET_RAW");
        assert_eq!(Capability::from_bit(41), None);
    }
}
