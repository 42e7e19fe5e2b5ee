//! The leaf of the crate: the small mechanisms every layer needs, each
//! written once. Nothing here imports anything from the crate
//! (`cargo test --test layering` checks it with the rest of the graph), so
//! any module, in the daemon or in a pod monitor, may use it.

pub mod background;
pub mod cgroup_paths;
pub mod cgroupfs;
pub mod fast_map;
pub mod fs;
pub mod json_file;
pub mod loader_pages;
pub mod memo;
pub mod mount;
pub mod sync;
pub mod task;
#[cfg(test)]
pub mod test_env;
pub mod time;
