//! Images: registry client, content-addressed blob store, layer unpack,
//! image config and the overlay rootfs of a container.
//!
//! Layout under the image root (see `store.rs`):
//! `blobs/sha256/<hex>` verified config blobs (layer bodies stream into the
//! unpacker and are not kept), `layers/<diff-id hex>/` one unpacked
//! layer shared by every image, `layermeta/<diff-id hex>.json` what the layer
//! changes (for the file-capability index), `images/<id hex>.json` records,
//! `leases/<container id>.json` the layers a live container is mounted on.

mod chunk_reader;
mod digest;
mod error;
mod fsutil;
mod layerfs;
pub mod names;
mod reference;
mod registry;
pub mod rootfs;
mod store;
pub mod unpack;

pub use digest::BlobVerifier;
pub use error::ImageError;
pub use reference::{ParsedReference, normalize_reference, parse_reference};
pub use registry::{RegistriesConfig, RegistryAuth, host_arch};
pub use store::{
    DEFAULT_MAX_COMPRESSED_LAYER_BYTES, FsUsage, ImageRecord, ImageStore, ImageStoreConfig,
    MAX_CONFIG_BYTES,
};
pub use unpack::{Compression, LayerChange, LayerUnpacker, UnpackedLayer, merge_file_caps};
