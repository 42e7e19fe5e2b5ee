//! Hash maps keyed by what capcri itself names (container and pod ids,
//! the cgroup paths, layer directories and namespace pins made from them),
//! looked up once per pod or container in every list call. SipHash, the
//! standard map's, was a tenth of ListContainers' and of the list stats
//! calls' CPU at 250 pods (`perf record -p <daemon>`). foldhash is seeded
//! per map at random; no request picks these keys, so its weaker
//! collision resistance is not an opening.

use std::collections::{HashMap, HashSet};

/// The hasher of [`FastMap`] and [`FastSet`].
pub type FastState = foldhash::fast::RandomState;

pub type FastMap<K, V> = HashMap<K, V, FastState>;

pub type FastSet<K> = HashSet<K, FastState>;
