//! The list answers kubelet asks for every second, kept whole while
//! nothing they are made from has changed.
//!
//! kubelet's PLEG asks for every container every second, and on a busy
//! node nothing changed since the last time in most of those seconds.
//! Each answer was put together again from the records (items encoded
//! once and kept, `list_wire`), which at 250 containers cost about 0.14 ms
//! of the daemon's time, mostly cache misses walking 250 records (a
//! `tracing` timer around it, capcri alone). The answer is now kept with
//! the [`ContainerListVersion`] it was made at, and sent again while the
//! node's snapshot is the same: the bytes are shared, not copied.
//! ListPodSandbox, which kubelet sends as often, is kept the same way at
//! the pod table's [`PodListVersion`]: at 250 pods, walking and sorting
//! the records and copying each pod's 300-odd bytes was 0.05-0.15 ms of
//! an answer that was otherwise in after a Version call's round trip.
//!
//! Only the unfiltered answer (no filter, or an empty one: what kubelet's
//! relist sends) is kept, and, for containers, only one made without
//! asking a monitor (a record that is not current may read differently at
//! the next ask with no change of the table, e.g. a monitor that could not
//! be reached). A pod's answer is its record alone.

use crate::node::{ContainerListVersion, PodListVersion};
use crate::util::sync::lock;
use bytes::Bytes;
use k8s_cri::v1 as cri;
use std::sync::Mutex;

/// One list's whole answer and the version of the node it was made at.
pub struct ListCache<V>(Mutex<Option<(V, Bytes)>>);

impl<V> Default for ListCache<V> {
    fn default() -> Self {
        ListCache(Mutex::new(None))
    }
}

pub type ContainerListCache = ListCache<ContainerListVersion>;
pub type PodListCache = ListCache<PodListVersion>;

impl<V: PartialEq + Copy> ListCache<V> {
    /// The answer kept at `version`, if it is the one kept.
    pub fn get(&self, version: V) -> Option<Bytes> {
        match &*lock(&self.0) {
            Some((v, bytes)) if *v == version => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes`, made at `version` (the node's snapshot before the
    /// answer was made, found unchanged after it).
    pub fn put(&self, version: V, bytes: Bytes) {
        *lock(&self.0) = Some((version, bytes));
    }
}

/// Does the filter let every container through (kubelet's relist sends an
/// empty filter, not none)?
pub fn lets_all_through(filter: Option<&cri::ContainerFilter>) -> bool {
    filter.is_none_or(|f| {
        f.id.is_empty()
            && f.state.is_none()
            && f.pod_sandbox_id.is_empty()
            && f.label_selector.is_empty()
    })
}

/// Does the filter let every pod through?
pub fn lets_every_pod_through(filter: Option<&cri::PodSandboxFilter>) -> bool {
    filter.is_none_or(|f| f.id.is_empty() && f.state.is_none() && f.label_selector.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn only_an_empty_filter_or_none_lets_all_through() {
        assert!(lets_all_through(None));
        assert!(lets_all_through(Some(&cri::ContainerFilter::default())));
        let with = |f: fn(&mut cri::ContainerFilter)| {
            let mut filter = cri::ContainerFilter::default();
            f(&mut filter);
            lets_all_through(Some(&filter))
        };
        assert!(!with(|f| f.id = "abc".into()));
        assert!(!with(|f| f.pod_sandbox_id = "p".into()));
        assert!(!with(|f| {
            f.state = Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            })
        }));
        assert!(!with(|f| {
            f.label_selector = HashMap::from([("app".into(), "web".into())])
        }));
    }

    #[test]
    fn only_an_empty_pod_filter_or_none_lets_every_pod_through() {
        assert!(lets_every_pod_through(None));
        assert!(lets_every_pod_through(Some(
            &cri::PodSandboxFilter::default()
        )));
        let with = |f: fn(&mut cri::PodSandboxFilter)| {
            let mut filter = cri::PodSandboxFilter::default();
            f(&mut filter);
            lets_every_pod_through(Some(&filter))
        };
        assert!(!with(|f| f.id = "abc".into()));
        assert!(!with(|f| {
            f.state = Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxNotready as i32,
            })
        }));
        assert!(!with(|f| {
            f.label_selector = HashMap::from([("app".into(), "web".into())])
        }));
    }

    #[test]
    fn a_kept_answer_is_given_at_its_version_only() {
        let cache = ListCache::<u32>::default();
        assert_eq!(cache.get(1), None);
        cache.put(1, Bytes::from_static(b"one"));
        assert_eq!(cache.get(1).as_deref(), Some(&b"one"[..]));
        assert_eq!(cache.get(2), None);
        cache.put(2, Bytes::from_static(b"two"));
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.get(2).as_deref(), Some(&b"two"[..]));
    }
}
