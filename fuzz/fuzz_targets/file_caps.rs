//! `security.capability` values come from image layers. Parsing never
//! panics, accepts only the sizes of revisions 1-3, and what it accepts
//! round-trips through `to_xattr`.

#![no_main]

use capcri::capabilities::kernel::parse_file_caps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(caps) = parse_file_caps(data) else {
        return;
    };
    assert!(
        matches!(data.len(), 12 | 20 | 24),
        "accepted {} bytes",
        data.len()
    );
    assert_eq!(caps.rootid.is_some(), data.len() == 24);
    let bytes = caps.to_xattr();
    let again = parse_file_caps(&bytes).expect("to_xattr output must parse");
    assert_eq!(again, caps);
    assert_eq!(again.to_xattr(), bytes, "to_xattr is canonical");
});
