//! Running another CNI plugin: found in `CNI_PATH`, given the CNI environment
//! and a config on stdin, bounded by a timeout.

use crate::env::{CniEnv, Command};
use crate::error::{CniError, CniResult, ErrorCode, WireError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a delegate may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One invocation of a delegate plugin.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// Plugin binary name (a `type`).
    pub plugin: &'a str,
    /// Verb to run.
    pub command: Command,
    /// The CNI environment to pass (container, netns, ifname, args, path).
    pub env: &'a CniEnv,
    /// Config to send on stdin.
    pub stdin: &'a [u8],
    /// Kill the delegate after this long.
    pub timeout: Duration,
}

/// Finds `plugin` in the `CNI_PATH` directories.
pub fn find_in_path(plugin: &str, path: &[PathBuf]) -> CniResult<PathBuf> {
    crate::config::validate_plugin_type("delegate", plugin)?;
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::Delegate,
                format!(
                    "plugin {plugin:?} not found in CNI_PATH ({})",
                    path.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ),
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What a delegate printed and how it exited.
struct Finished {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> CniResult<Finished> {
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    // stdout reaches EOF when the child exits (or closes it); then reap it.
    match rx.recv_timeout(timeout) {
        Ok(stdout) => {
            let status = child.wait()?;
            let stderr = err_reader.join().unwrap_or_default();
            Ok(Finished {
                success: status.success(),
                stdout,
                stderr,
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(CniError::new(
                ErrorCode::Delegate,
                format!("timed out after {} s", timeout.as_secs_f32()),
            ))
        }
    }
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    let start = s.len().saturating_sub(2000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// Spawns `cmd`, retrying briefly while the binary is busy (ETXTBSY): it is
/// still open for writing somewhere, e.g. an installer replacing it, or a
/// process forked while it was being written and not yet exec'd.
fn spawn_retrying_busy(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && attempt < ATTEMPTS =>
            {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs a delegate and returns its parsed stdout (`None` when it printed nothing,
/// as DEL, CHECK, GC and STATUS do). A delegate's CNI error is relayed with its
/// own code, its message prefixed with the plugin name.
pub fn exec(inv: &Invocation) -> CniResult<Option<serde_json::Value>> {
    exec_with_env(inv, &[])
}

/// [`exec`] with variables added to the delegate's environment (beyond CNI's).
pub fn exec_with_env(
    inv: &Invocation,
    extra_env: &[(&str, String)],
) -> CniResult<Option<serde_json::Value>> {
    let bin = find_in_path(inv.plugin, &inv.env.path)?;
    let ctx = format!("{} {}", inv.plugin, inv.command.as_str());
    tracing::debug!(
        plugin = inv.plugin,
        command = inv.command.as_str(),
        "exec delegate"
    );
    let netns = inv
        .env
        .netns
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path =
        std::env::join_paths(&inv.env.path).map_err(|e| CniError::env(format!("CNI_PATH: {e}")))?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", &inv.env.container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", &inv.env.ifname)
        .env("CNI_ARGS", inv.env.args.render())
        .env("CNI_PATH", path)
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retrying_busy(&mut cmd)
        .map_err(|e| CniError::new(ErrorCode::Delegate, format!("start {}: {e}", bin.display())))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A delegate that exits without reading stdin closes the pipe: not our error.
    let _ = stdin.write_all(inv.stdin);
    drop(stdin);
    let done = wait_with_timeout(child, inv.timeout).map_err(|e| e.context(&ctx))?;
    if !done.stderr.is_empty() {
        tracing::debug!(plugin = inv.plugin, stderr = %tail(&done.stderr), "delegate stderr");
    }
    decode_output(&ctx, done.success, &done.stdout, &done.stderr)
}

/// What a plugin printed, as [`exec`] returns it: its result (None if it
/// printed nothing), or its CNI error with its own code, the message
/// prefixed with `ctx`; anything else is an error quoting the output.
pub fn decode_output(
    ctx: &str,
    success: bool,
    stdout: &[u8],
    stderr: &[u8],
) -> CniResult<Option<serde_json::Value>> {
    let stdout = std::str::from_utf8(stdout).unwrap_or("").trim();
    if !success {
        return Err(match serde_json::from_str::<WireError>(stdout) {
            Ok(w) => CniError::from(w).context(ctx),
            Err(_) => CniError::new(ErrorCode::Delegate, format!("{ctx}: failed")).with_details(
                tail(if stdout.is_empty() {
                    stderr
                } else {
                    stdout.as_bytes()
                }),
            ),
        });
    }
    if stdout.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(stdout).map(Some).map_err(|e| {
        CniError::new(
            ErrorCode::Delegate,
            format!("{ctx}: output is not JSON: {e}"),
        )
        .with_details(tail(stdout.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::CniArgs;

    fn env_with_path(dir: &Path) -> CniEnv {
        CniEnv {
            command: Command::Add,
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            args: CniArgs::default(),
            path: vec![dir.to_path_buf()],
        }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mf-deleg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn inv<'a>(plugin: &'a str, env: &'a CniEnv, timeout: Duration) -> Invocation<'a> {
        Invocation {
            plugin,
            command: Command::Add,
            env,
            stdin: b"{}",
            timeout,
        }
    }

    #[test]
    fn relays_delegate_error_code() {
        let d = tempdir("err");
        script(
            &d,
            "failer",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"busy"}'; exit 1"#,
        );
        let env = env_with_path(&d);
        let e = exec(&inv("failer", &env, DEFAULT_TIMEOUT)).unwrap_err();
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        assert_eq!(e.msg, "failer ADD: busy");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn passes_env_and_parses_result() {
        let d = tempdir("ok");
        script(
            &d,
            "echoer",
            r#"cat >/dev/null; printf '{"cmd":"%s","if":"%s"}' "$CNI_COMMAND" "$CNI_IFNAME""#,
        );
        let env = env_with_path(&d);
        let v = exec(&inv("echoer", &env, DEFAULT_TIMEOUT))
            .unwrap()
            .unwrap();
        assert_eq!(v, serde_json::json!({"cmd":"ADD","if":"eth0"}));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn hung_delegate_is_killed_at_timeout() {
        let d = tempdir("hang");
        script(&d, "hanger", "exec sleep 30");
        let env = env_with_path(&d);
        let t = std::time::Instant::now();
        let e = exec(&inv("hanger", &env, Duration::from_millis(300))).unwrap_err();
        assert!(e.msg.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn extra_env_reaches_the_delegate() {
        let d = tempdir("extra");
        script(
            &d,
            "envecho",
            r#"cat >/dev/null; printf '{"g":"%s"}' "$MANIFOLD_TEST_EXTRA""#,
        );
        let env = env_with_path(&d);
        let extra = [("MANIFOLD_TEST_EXTRA", "42".to_string())];
        let v = exec_with_env(&inv("envecho", &env, DEFAULT_TIMEOUT), &extra)
            .unwrap()
            .unwrap();
        assert_eq!(v, serde_json::json!({"g": "42"}));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn missing_plugin_names_the_path() {
        let env = env_with_path(Path::new("/nonexistent-dir"));
        let e = exec(&inv("nope", &env, DEFAULT_TIMEOUT)).unwrap_err();
        assert!(e.msg.contains("/nonexistent-dir"), "{e}");
    }
}
