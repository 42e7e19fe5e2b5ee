//! Capability sets as the kernel stores them: one bit per capability.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::names::{CapParseError, Capability};

/// A set of capabilities; a `u64` bitset indexed by kernel bit number, so set
/// algebra is as cheap as the kernel's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapSet(u64);

impl CapSet {
    const VALID: u64 = (1u64 << (Capability::LAST as u32 + 1)) - 1;

    pub const fn empty() -> CapSet {
        CapSet(0)
    }

    pub const fn all() -> CapSet {
        CapSet(Self::VALID)
    }

    /// Builds a set from raw kernel bits; bits beyond the last known
    /// capability are dropped, as the kernel does with `CAP_VALID_MASK`.
    pub const fn from_bits_truncate(bits: u64) -> CapSet {
        CapSet(bits & Self::VALID)
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    pub fn contains(self, cap: Capability) -> bool {
        self.0 & (1 << cap.bit()) != 0
    }

    pub fn insert(&mut self, cap: Capability) -> bool {
        let had = self.contains(cap);
        self.0 |= 1 << cap.bit();
        !had
    }

    pub fn remove(&mut self, cap: Capability) -> bool {
        let had = self.contains(cap);
        self.0 &= !(1 << cap.bit());
        had
    }

    pub const fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    pub const fn intersection(self, other: CapSet) -> CapSet {
        CapSet(self.0 & other.0)
    }

    pub const fn difference(self, other: CapSet) -> CapSet {
        CapSet(self.0 & !other.0)
    }

    pub const fn is_subset(self, other: CapSet) -> bool {
        self.0 & !other.0 == 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Members in kernel bit order, so output is stable.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .iter()
            .copied()
            .filter(move |c| self.contains(*c))
    }

    /// Parses names in any spelling [`Capability`] accepts.
    pub fn parse_names<I, S>(names: I) -> Result<CapSet, CapParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = CapSet::empty();
        for name in names {
            set.insert(name.as_ref().parse()?);
        }
        Ok(set)
    }

    /// `CAP_X` names in bit order.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|c| c.to_string()).collect()
    }
}

impl FromIterator<Capability> for CapSet {
    fn from_iter<T: IntoIterator<Item = Capability>>(iter: T) -> Self {
        let mut set = CapSet::empty();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        let names = self.names();
        f.write_str(&names.join(","))
    }
}

impl Serialize for CapSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(|c| c.to_string()))
    }
}

impl<'de> Deserialize<'de> for CapSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        CapSet::parse_names(&names).map_err(D::Error::custom)
    }
}

/// The five capability sets of a thread (capabilities(7) "Thread capability
/// sets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ThreadCaps {
    pub bounding: CapSet,
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
    pub ambient: CapSet,
}

impl ThreadCaps {
    /// The kernel refuses `PR_CAP_AMBIENT_RAISE` unless the capability is in
    /// both the permitted and inheritable sets, and drops ambient members
    /// that leave either (capabilities(7) "Ambient"); a bounding-set drop
    /// also makes a later raise impossible. Returns the offending members.
    pub fn ambient_violations(&self) -> CapSet {
        self.ambient.difference(
            self.permitted
                .intersection(self.inheritable)
                .intersection(self.bounding),
        )
    }

    /// The sets a runtime would give the container's first process: all of
    /// `set` in bounding, effective and permitted, nothing inheritable or
    /// ambient (what containerd does since CVE-2022-24769).
    pub fn runtime_default(set: CapSet) -> ThreadCaps {
        ThreadCaps {
            bounding: set,
            effective: set,
            permitted: set,
            inheritable: CapSet::empty(),
            ambient: CapSet::empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    #[test]
    fn set_algebra_and_order() {
        let a = CapSet::from_iter([NetRaw, Chown, Kill]);
        let b = CapSet::from_iter([Kill, SysAdmin]);
        assert_eq!(a.union(b).len(), 4);
        assert_eq!(a.intersection(b), CapSet::from_iter([Kill]));
        assert_eq!(a.difference(b), CapSet::from_iter([Chown, NetRaw]));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![Chown, Kill, NetRaw]);
        assert!(CapSet::from_iter([Kill]).is_subset(a));
        assert_eq!(CapSet::from_bits_truncate(u64::MAX), CapSet::all());
    }

    #[test]
    fn serde_as_names() {
        let a = CapSet::from_iter([NetRaw, Chown]);
        let json = serde_json::to_string(&a).unwrap_or_default();
        assert_eq!(json, r#"["CAP_CHOWN","CAP_NET_RAW"]"#);
        let back: CapSet = serde_json::from_str(r#"["net_raw","CAP_CHOWN"]"#).unwrap_or_default();
        assert_eq!(back, a);
        assert!(serde_json::from_str::<CapSet>(r#"["NOPE"]"#).is_err());
    }

    #[test]
    fn ambient_invariant() {
        let mut t = ThreadCaps::runtime_default(CapSet::from_iter([NetBindService]));
        t.ambient = CapSet::from_iter([NetBindService]);
        assert_eq!(t.ambient_violations(), t.ambient);
        t.inheritable = t.ambient;
        assert!(t.ambient_violations().is_empty());
    }
}
