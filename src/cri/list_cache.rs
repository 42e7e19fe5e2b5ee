//! ListContainers' whole answer, kept while nothing it is made from has
//! changed.
//!
//! kubelet's PLEG asks for every container every second, and on a busy
//! node nothing changed since the last time in most of those seconds.
//! Each answer was put together again from the records (items encoded
//! once and kept, `list_wire`), which at 250 containers cost about 0.14 ms
//! of the daemon's time, mostly cache misses walking 250 records (a
//! `tracing` timer around it, capcri alone). The answer is now kept with
//! the [`ContainerListVersion`] it was made at, and sent again while the
//! node's snapshot is the same: the bytes are shared, not copied.
//!
//! Only the unfiltered answer (no filter, or an empty one: what kubelet's
//! relist sends) is kept, and only one made without asking a monitor
//! (a record that is not current may read differently at the next ask
//! with no change of the table, e.g. a monitor that could not be reached).

use crate::node::ContainerListVersion;
use crate::util::sync::lock;
use bytes::Bytes;
use k8s_cri::v1 as cri;
use std::sync::Mutex;

#[derive(Default)]
pub struct ContainerListCache(Mutex<Option<(ContainerListVersion, Bytes)>>);

impl ContainerListCache {
    /// The answer kept at `version`, if it is the one kept.
    pub fn get(&self, version: ContainerListVersion) -> Option<Bytes> {
        match &*lock(&self.0) {
            Some((v, bytes)) if *v == version => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes`, made at `version` (the node's snapshot before the
    /// answer was made, found unchanged after it).
    pub fn put(&self, version: ContainerListVersion, bytes: Bytes) {
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
}
