//! Persistent metadata of pods, containers and images, written atomically
//! before an RPC is acknowledged.
