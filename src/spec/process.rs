//! Command line, environment and working directory of the container
//! process, merged from the CRI config and the image config the way
//! containerd's CRI plugin does (which itself follows Docker's rules), so
//! that a pod behaves the same after switching runtimes.

use k8s_cri::v1::ContainerConfig;
use oci_spec::image::Config as ImageConfig;

use super::SpecError;

/// PATH that containerd's default Unix spec sets when neither the image nor
/// the CRI config does.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The argv of the container process.
///
/// Docker's rule (kept by containerd): a CRI `command` replaces the image
/// Entrypoint *and* Cmd; CRI `args` alone replace only the image Cmd.
pub fn process_args(
    container: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, SpecError> {
    let image_entrypoint = image
        .and_then(|i| i.entrypoint().clone())
        .unwrap_or_default();
    let image_cmd = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
    let (command, args) = if !container.command.is_empty() {
        (container.command.clone(), container.args.clone())
    } else if !container.args.is_empty() {
        (image_entrypoint, container.args.clone())
    } else {
        (image_entrypoint, image_cmd)
    };
    let argv: Vec<String> = command.into_iter().chain(args).collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand {
            container: container_name(container),
        });
    }
    Ok(argv)
}

/// The environment of the container process.
///
/// containerd starts from its default spec (PATH), adds HOSTNAME, then the
/// image Env and the CRI envs, each replacing an earlier entry of the same
/// key in place (so the order of first appearance is kept).
pub fn merged_env(
    container: &ContainerConfig,
    image: Option<&ImageConfig>,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<String> = vec![DEFAULT_PATH_ENV.to_string(), format!("HOSTNAME={hostname}")];
    let image_env = image.and_then(|i| i.env().clone()).unwrap_or_default();
    let container_env = container
        .envs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value));
    for entry in image_env.into_iter().chain(container_env) {
        replace_or_append(&mut env, entry);
    }
    env
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn replace_or_append(env: &mut Vec<String>, entry: String) {
    let key = env_key(&entry).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// The working directory: CRI `working_dir`, else the image WorkingDir,
/// else "/" (the OCI spec requires an absolute cwd).
pub fn working_dir(container: &ContainerConfig, image: Option<&ImageConfig>) -> String {
    if !container.working_dir.is_empty() {
        return container.working_dir.clone();
    }
    match image.and_then(|i| i.working_dir().clone()) {
        Some(dir) if !dir.is_empty() => dir,
        _ => "/".to_string(),
    }
}

/// The container's name for messages (metadata is optional on the wire).
pub(crate) fn container_name(container: &ContainerConfig) -> String {
    container
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str], wd: Option<&str>) -> ImageConfig {
        let mut c = ImageConfig::default();
        let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
        c.set_entrypoint(v(entrypoint));
        c.set_cmd(v(cmd));
        c.set_env(v(env));
        c.set_working_dir(wd.map(str::to_string));
        c
    }

    fn ctr(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn args_merge_table() {
        let img = image(&["/ep"], &["cmd1", "cmd2"], &[], None);
        let cases: Vec<(&[&str], &[&str], Option<&ImageConfig>, Vec<&str>)> = vec![
            (
                &["/bin/sh"],
                &["-c", "x"],
                Some(&img),
                vec!["/bin/sh", "-c", "x"],
            ),
            (&["/bin/sh"], &[], Some(&img), vec!["/bin/sh"]),
            (&[], &["a1"], Some(&img), vec!["/ep", "a1"]),
            (&[], &[], Some(&img), vec!["/ep", "cmd1", "cmd2"]),
            (&[], &["a1"], None, vec!["a1"]),
        ];
        for (command, args, image, want) in cases {
            let got = process_args(&ctr(command, args), image).unwrap();
            assert_eq!(got, want, "command={command:?} args={args:?}");
        }
    }

    #[test]
    fn args_empty_is_no_command() {
        let img = image(&[], &[], &[], None);
        let err = process_args(&ctr(&[], &[]), Some(&img)).unwrap_err();
        assert!(matches!(err, SpecError::NoCommand { .. }));
        assert!(process_args(&ctr(&[], &[]), None).is_err());
    }

    #[test]
    fn env_override_and_defaults() {
        let img = image(&[], &[], &["PATH=/img/bin", "A=1", "B=2"], None);
        let mut c = ctr(&["x"], &[]);
        c.envs = vec![
            KeyValue {
                key: "B".into(),
                value: "ctr".into(),
            },
            KeyValue {
                key: "C".into(),
                value: "3".into(),
            },
            KeyValue {
                key: "HOSTNAME".into(),
                value: "mine".into(),
            },
        ];
        let env = merged_env(&c, Some(&img), "pod-host");
        assert_eq!(
            env,
            vec!["PATH=/img/bin", "HOSTNAME=mine", "A=1", "B=ctr", "C=3"]
        );

        let env = merged_env(&ctr(&["x"], &[]), None, "pod-host");
        assert_eq!(
            env,
            vec![
                DEFAULT_PATH_ENV.to_string(),
                "HOSTNAME=pod-host".to_string()
            ]
        );
    }

    #[test]
    fn cwd_precedence() {
        let img = image(&[], &[], &[], Some("/img"));
        let mut c = ctr(&["x"], &[]);
        assert_eq!(working_dir(&c, Some(&img)), "/img");
        assert_eq!(working_dir(&c, None), "/");
        c.working_dir = "/ctr".into();
        assert_eq!(working_dir(&c, Some(&img)), "/ctr");
    }
}
