//! Policy files are written by cluster admins, but loading must survive any
//! text (a broken file is an error, not a crashed daemon), and evaluating
//! whatever loaded must not panic and must keep the engine's guarantees.
//!
//! Input: NUL-separated policy files.

#![no_main]

use capcri::capabilities::kernel::{CapSet, Capability, FileCaps};
use capcri::capabilities::policy::{Facts, MemoryRootfs, PolicySet};
use libfuzzer_sys::fuzz_target;

fn facts(non_root: bool, add: &[&str], ambient: &[&str]) -> Facts {
    let mut f = Facts::default();
    f.pod.name = "web-0".into();
    f.pod.namespace = "default".into();
    f.pod.labels.insert("app".into(), "web".into());
    f.container.name = "web".into();
    f.container.command = vec!["/bin/ping".into()];
    f.container.user.uid = if non_root { 101 } else { 0 };
    f.container.user.non_root = non_root;
    f.container.capabilities.add = add.iter().map(|s| s.to_string()).collect();
    f.container.capabilities.add_ambient = ambient.iter().map(|s| s.to_string()).collect();
    f
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let sources: Vec<(String, String)> = text
        .split('\0')
        .enumerate()
        .map(|(i, t)| (format!("fuzz-{i}.yaml"), t.to_string()))
        .collect();
    let (set, _errors) = PolicySet::from_sources(&sources);
    let ping = FileCaps {
        permitted: CapSet::from_iter([Capability::NetRaw]),
        effective: true,
        ..FileCaps::default()
    };
    let rootfs = MemoryRootfs::new().file("/bin/ping", Some(ping));
    for f in [
        facts(true, &["NET_BIND_SERVICE"], &["NET_BIND_SERVICE"]),
        facts(false, &[], &[]),
        facts(true, &["NOT_A_CAP"], &["SYS_ADMIN"]),
    ] {
        let d = set.evaluate(&f, &rootfs);
        assert_eq!(d.allowed, d.deny_message.is_none(), "deny wins: {d:?}");
        let c = &d.caps;
        assert!(
            c.ambient.is_subset(c.bounding),
            "ambient outside bounding: {d:?}"
        );
        assert!(
            c.ambient.is_subset(c.permitted),
            "ambient outside permitted: {d:?}"
        );
        assert!(
            c.ambient.is_subset(c.inheritable),
            "ambient outside inheritable: {d:?}"
        );
        assert!(
            c.permitted.is_subset(c.bounding),
            "permitted outside bounding: {d:?}"
        );
        assert!(
            c.effective.is_subset(c.permitted),
            "effective outside permitted: {d:?}"
        );
    }
});
