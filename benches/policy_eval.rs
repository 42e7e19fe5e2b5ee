//! A decision for a typical pod with 10 loaded policies must take at most
//! 50 µs (the CreateContainer budget of the issue).

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
      ambientExpression: "container.capabilities.add.filter(c, c != 'ALL')"
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

fn bench(c: &mut Criterion) {
    let set = ten_policies();
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
