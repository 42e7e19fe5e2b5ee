//! The command line a node operator uses, without root.

fn capcri(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_capcri"))
        .args(args)
        .output()
        .expect("run capcri")
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_capcri()"),
        ("zsh", "#compdef capcri"),
        ("fish", "complete -c capcri"),
    ] {
        let out = capcri(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(marker),
            "{shell}: {}",
            &text[..text.len().min(200)]
        );
        assert!(
            text.contains("serve") && text.contains("explain"),
            "{shell} completes subcommands"
        );
    }
}

#[test]
fn serve_help_lists_every_setting() {
    let out = capcri(&["serve", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--socket",
        "--admin-socket",
        "--state-dir",
        "--data-dir",
        "--log-format",
        "--policy-dir",
        "--cni-conf-dir",
        "--registry-mirror",
        "--insecure-registry",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
}

#[test]
fn bad_config_is_refused_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    // (file contents, the error the operator must see after "capcri: ")
    let cases = [
        (
            "sockett = \"/x\"\n",
            ":1:1: key `sockett`: unknown key `sockett`, expected one of `socket`",
        ),
        (
            "# a node's config\n[registries]\ninsecure = \"reg.lan:5000\"\n",
            ":3:12: key `registries.insecure`: invalid type: string \"reg.lan:5000\", expected a sequence",
        ),
        (
            "socket = \"capcri.sock\"\n",
            ":1:10: key `socket`: \"capcri.sock\" is not an absolute path; expected an absolute path",
        ),
        (
            "[registries.mirrors]\n\"docker.io\" = [\"127.0.0.1:5000\"]\nstate_dir = 3\n",
            ":3:13: key `registries.mirrors.state_dir`: invalid type: integer `3`, expected a sequence",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&cfg, text).unwrap();
        let out = capcri(&["serve", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("capcri: {}{want}", cfg.display());
        assert!(err.starts_with(&want), "{text:?}:\n{err}\nwanted {want}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // A missing file names itself and the flag.
    let out = capcri(&["serve", "--config", "/nonexistent/capcri.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/capcri.toml") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn the_recommended_policies_pass_policy_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/policy");
    let out = capcri(&["policy", "check", dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_systemd_unit_keeps_containers_across_restarts() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/systemd/capcri.service"
    ))
    .unwrap();
    assert!(
        unit.contains("KillMode=process"),
        "monitors must survive a daemon restart"
    );
    assert!(unit.contains("Delegate=yes"));
    assert!(unit.contains("ExecStart=/usr/local/bin/capcri serve"));
}
