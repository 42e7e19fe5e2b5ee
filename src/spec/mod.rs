//! Pure translation: CRI config + image config + decision -> OCI runtime
//! spec. No I/O, so it is unit-tested without root.
