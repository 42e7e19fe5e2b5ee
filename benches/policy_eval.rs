//! A decision for a typical pod with 10 loaded policies must take at most
//! 50 µs (the CreateContainer budget of the issue); the recommended set is
//! timed beside it. `cargo bench --bench policy_eval` measures;
//! `cargo test --bench policy_eval` (CI) runs each once, so a policy the
//! checker refuses fails the build instead of the next measurement.

use std::hint::black_box;

use capcri::capabilities::kernel::{CapSet, Capability, FileCaps};
use capcri::capabilities::policy::{Facts, MemoryRootfs, PolicySet};
use criterion::{Criterion, criterion_group, criterion_main};

fn ten_policies() -> PolicySet {
    let mut sources = Vec::new();
    for i in 0..10 {
        let yaml = format!(
            r#"
apiVersion: capcri.dev/v1alpha1
kind: CapabilityPolicy
metadata: {{name: p{i:02}}}
spec:
  match: "pod.namespace == 'default' && container.user.nonRoot"
  rules:
    - when: "has(pod.labels.app) && pod.labels.app == 'web'"
      ambientExpression: "container.capabilities.add.filter(c, c != 'SYS_ADMIN')"
    - deny:
        condition: "container.capabilities.add.exists(c, c == 'SYS_ADMIN')"
        message: "no SYS_ADMIN"
    - execPath: auto
      preflight: enforce
"#
        );
        sources.push((format!("p{i}.yaml"), yaml));
    }
    let (set, errors) = PolicySet::from_sources(&sources);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

/// The recommended set this repository ships (policy/, the chart's
/// default), as a node would run it.
fn recommended_policies() -> PolicySet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policy");
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("policy/") {
        let path = entry.expect("policy/ entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with("_test.yaml") {
            sources.push((name, std::fs::read_to_string(&path).expect("policy file")));
        }
    }
    let (set, errors) = PolicySet::from_sources(&sources);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

fn bench(c: &mut Criterion) {
    let set = ten_policies();
    let recommended = recommended_policies();
    let mut facts = Facts::default();
    facts.pod.name = "web-0".into();
    facts.pod.namespace = "default".into();
    facts.pod.labels.insert("app".into(), "web".into());
    facts.container.name = "nginx".into();
    facts.container.command = vec!["nginx".into()];
    facts.container.user.uid = 101;
    facts.container.user.non_root = true;
    facts.container.capabilities.add = vec!["NET_BIND_SERVICE".into()];
    let ping = FileCaps {
        permitted: CapSet::from_iter([Capability::NetRaw]),
        effective: true,
        ..FileCaps::default()
    };
    let rootfs = MemoryRootfs::new()
        .file("/usr/sbin/nginx", None)
        .file("/bin/ping", Some(ping));
    c.bench_function("evaluate typical pod, 10 policies", |b| {
        b.iter(|| set.evaluate(black_box(&facts), black_box(&rootfs)))
    });
    c.bench_function("evaluate typical pod, recommended policies", |b| {
        b.iter(|| recommended.evaluate(black_box(&facts), black_box(&rootfs)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
