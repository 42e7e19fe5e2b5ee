//! capcri: a Kubernetes CRI runtime with policy-driven Linux capabilities.

pub mod admin;
pub mod capabilities;
pub mod config;
pub mod container;
pub mod crash_point;
pub mod cri;
mod error;
pub mod events;
pub mod host;
pub mod image;
pub mod malloc_tuning;
pub mod metrics;
pub mod monitor;
pub mod monitor_api;
pub mod network;
pub mod node;
pub mod pod;
pub mod server;
pub mod spec;
pub mod state;
pub mod store;
pub mod stream;
pub mod util;
