//! Images: registry client, content-addressed blob store, layer unpack,
//! image config and the overlay rootfs of a container.
