//! Deployment files: `tools/edgellm.service` (checked by `systemd-analyze verify` and for the
//! keys the service depends on), `tools/install.sh` and `tools/cross-build.sh` (`bash -n`), and
//! a staged `install.sh --destdir` whose files must land where the unit looks for them. The last
//! test runs the unit's own ExecStart= line, expanded from the installed /etc/default/edgellm as
//! systemd would, and waits for the READY=1 notification `Type=notify` needs.
//!
//! `cross-build.sh` itself is not run here (minutes of cross-compiling); the README tells how.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::serve::Serve;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unit_path() -> PathBuf {
    tools_dir().join("edgellm.service")
}

fn install_sh() -> PathBuf {
    tools_dir().join("install.sh")
}

/// A systemd unit file: section -> key -> every value assigned (in order).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line without '=': {line:?}"));
        assert!(!value.ends_with('\\'), "continuation lines are not used");
        unit.entry(section.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    unit
}

/// The one value of `key` in `section`; panics if it is missing or set twice.
fn one<'u>(unit: &'u Unit, section: &str, key: &str) -> &'u str {
    let values = unit
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("edgellm.service: [{section}] {key}= missing"));
    assert_eq!(
        values.len(),
        1,
        "edgellm.service: [{section}] {key}= set more than once"
    );
    &values[0]
}

fn read_unit() -> Unit {
    parse_unit(&std::fs::read_to_string(unit_path()).expect("reading tools/edgellm.service"))
}

/// `KEY=VALUE` lines of an EnvironmentFile (comments and blank lines skipped).
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("environment line without '=': {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// ExecStart= expanded as systemd does: a word `$VAR` becomes the value split at whitespace
/// (zero or more words), `${VAR}` inside a word is replaced by the value (one word).
fn expand_exec_start(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let value = |name: &str| -> String {
        env.get(name)
            .unwrap_or_else(|| panic!("ExecStart= uses ${name}, which the environment file lacks"))
            .clone()
    };
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            argv.extend(value(name).split_whitespace().map(str::to_string));
            continue;
        }
        let mut out = String::new();
        let mut rest = word;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("unclosed ${ in ExecStart=") + start;
            out.push_str(&value(&rest[start + 2..end]));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        argv.push(out);
    }
    argv
}

/// A path of the board, inside a staged install.
fn staged(destdir: &Path, path: &str) -> PathBuf {
    assert!(path.starts_with('/'), "{path:?} is not absolute");
    destdir.join(path.trim_start_matches('/'))
}

fn run_install(args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(install_sh())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running install.sh");
    eprintln!(
        "install.sh {args:?} -> {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A staged install of the built binary and `board`, with `model`, into a fresh directory.
fn staged_install(dir: &Path, board: &str, model: &Path) -> PathBuf {
    let destdir = dir.join("root");
    let out = run_install(&[
        "--destdir",
        destdir.to_str().unwrap(),
        "--no-start",
        "--binary",
        Serve::edgellm().to_str().unwrap(),
        "--board",
        board,
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "staged install failed");
    destdir
}

/// A file that starts like a GGUF file: install.sh only checks the magic, and the static tests
/// need not copy the 100 MB model.
fn small_gguf(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, b"GGUF\x03\0\0\0not a real model").unwrap();
    path
}

fn bash_syntax_ok(script: &Path) {
    let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scripts_parse_and_are_executable() {
    for name in ["install.sh", "cross-build.sh"] {
        let script = tools_dir().join(name);
        bash_syntax_ok(&script);
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, "{name} is not executable");
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(
            text.contains("set -euo pipefail"),
            "{name} lacks set -euo pipefail"
        );
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let have = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap();
    if !have.status.success() {
        eprintln!("note: systemd-analyze not installed; skipping `systemd-analyze verify`");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the built one, in a copy.
    let dir = Serve::fresh_dir();
    let text = std::fs::read_to_string(unit_path()).unwrap();
    let exec = one(&read_unit(), "Service", "ExecStart")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let copy = dir.join("edgellm.service");
    std::fs::write(
        &copy,
        text.replace(&exec, Serve::edgellm().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): any line about our file fails.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("edgellm.service"))
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn unit_has_the_keys_the_service_depends_on() {
    let unit = read_unit();
    let s = "Service";
    assert_eq!(one(&unit, s, "Type"), "notify");
    assert_eq!(one(&unit, s, "NotifyAccess"), "main");
    assert_eq!(one(&unit, s, "Restart"), "on-failure");
    assert_eq!(one(&unit, s, "User"), "edgellm");
    assert_eq!(one(&unit, s, "Group"), "edgellm");
    assert_eq!(one(&unit, s, "RuntimeDirectory"), "edgellm");
    assert_eq!(one(&unit, s, "KillSignal"), "SIGTERM");
    assert_eq!(one(&unit, s, "EnvironmentFile"), "/etc/default/edgellm");
    assert!(one(&unit, s, "SupplementaryGroups")
        .split_whitespace()
        .any(|g| g == "dialout"));
    assert_eq!(one(&unit, s, "NoNewPrivileges"), "yes");
    assert_eq!(one(&unit, s, "ProtectSystem"), "strict");
    assert_eq!(one(&unit, s, "ProtectHome"), "yes");
    assert_eq!(one(&unit, s, "PrivateTmp"), "yes");
    assert_eq!(one(&unit, "Install", "WantedBy"), "multi-user.target");
    // A Pi Zero 2 W needs minutes to load a larger model from an SD card.
    let start_timeout: u64 = one(&unit, s, "TimeoutStartSec")
        .parse()
        .expect("TimeoutStartSec in plain seconds");
    assert!(start_timeout >= 300, "TimeoutStartSec={start_timeout}");

    let exec: Vec<&str> = one(&unit, s, "ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], "/usr/local/bin/edgellm");
    assert_eq!(exec[1], "serve");
    // The socket must lie in the runtime directory systemd creates for the service user.
    let socket = exec
        .iter()
        .position(|a| *a == "--socket")
        .map(|i| exec[i + 1])
        .expect("ExecStart= names the socket");
    assert_eq!(
        Path::new(socket).parent().unwrap(),
        Path::new("/run").join(one(&unit, s, "RuntimeDirectory"))
    );
    // Every flag the unit passes must be one `edgellm serve` knows.
    let help = Command::new(Serve::edgellm())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.iter().filter(|a| a.starts_with('-')) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag},")),
            "edgellm serve --help does not list {flag}:\n{help}"
        );
    }
    // The model folder install.sh fills is read-only to the service.
    assert!(
        unit[s]["ReadOnlyPaths"]
            .iter()
            .any(|p| p.trim_start_matches('-') == "/var/lib/edgellm/models"),
        "ReadOnlyPaths= lacks /var/lib/edgellm/models"
    );
}

#[test]
fn staged_install_puts_files_where_the_unit_looks() {
    let dir = Serve::fresh_dir();
    let model = small_gguf(&dir);
    let destdir = staged_install(&dir, "rpi5", &model);
    let unit = read_unit();

    // The unit itself, unchanged.
    assert_eq!(
        std::fs::read(staged(&destdir, "/etc/systemd/system/edgellm.service")).unwrap(),
        std::fs::read(unit_path()).unwrap()
    );
    // The binary at ExecStart's path, executable, the same bytes as the one given.
    let exec = one(&unit, "Service", "ExecStart");
    let bin = staged(&destdir, exec.split_whitespace().next().unwrap());
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(Serve::edgellm()).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // The environment file the unit reads, with every variable ExecStart= uses.
    let env_file = staged(&destdir, one(&unit, "Service", "EnvironmentFile"));
    let env = parse_env_file(&std::fs::read_to_string(&env_file).unwrap());
    assert_eq!(env["EDGELLM_BOARD"], "rpi5");
    assert_eq!(
        env["EDGELLM_MODEL"], "/var/lib/edgellm/models/tiny.gguf",
        "{env:?}"
    );
    let argv = expand_exec_start(exec, &env);
    let board_at = argv.iter().position(|a| a == "--board").unwrap();
    assert_eq!(argv[board_at + 1], "rpi5");
    // The board config where edgellm looks a board name up.
    let board_file = staged(
        &destdir,
        &format!("{}/rpi5.toml", edgellm_hal::board::SYSTEM_BOARD_DIR),
    );
    assert_eq!(
        std::fs::read(&board_file).unwrap(),
        std::fs::read(tools_dir().join("../board-configs/rpi5.toml")).unwrap()
    );
    // The model where EDGELLM_MODEL says, inside the folder the unit makes read-only.
    assert_eq!(
        std::fs::read(staged(&destdir, &env["EDGELLM_MODEL"])).unwrap(),
        std::fs::read(&model).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn install_is_idempotent_and_keeps_local_edits() {
    let dir = Serve::fresh_dir();
    let model = small_gguf(&dir);
    let destdir = staged_install(&dir, "rpi4", &model);
    let env_file = staged(&destdir, "/etc/default/edgellm");
    let board_file = staged(&destdir, "/etc/edgellm/boards/rpi4.toml");

    // A second run with the same files changes nothing.
    let again = run_install(&[
        "--destdir",
        destdir.to_str().unwrap(),
        "--no-start",
        "--binary",
        Serve::edgellm().to_str().unwrap(),
        "--board",
        "rpi4",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(again.status.success());
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        !log.contains("installed "),
        "second run copied again:\n{log}"
    );
    assert!(!log.contains("wrote "), "second run rewrote a file:\n{log}");

    // Settings and a hand-edited board config survive a reinstall (with another model).
    let edited_env = std::fs::read_to_string(&env_file)
        .unwrap()
        .replace("EDGELLM_ARGS=\n", "EDGELLM_ARGS=--no-serial -t 2\n");
    std::fs::write(&env_file, &edited_env).unwrap();
    let edited_board = std::fs::read_to_string(&board_file)
        .unwrap()
        .replace("threads = 4", "threads = 3");
    std::fs::write(&board_file, &edited_board).unwrap();
    let other_model = dir.join("other.gguf");
    std::fs::copy(&model, &other_model).unwrap();
    let third = run_install(&[
        "--destdir",
        destdir.to_str().unwrap(),
        "--no-start",
        "--binary",
        Serve::edgellm().to_str().unwrap(),
        "--board",
        "rpi4",
        "--model",
        other_model.to_str().unwrap(),
    ]);
    assert!(third.status.success());
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), edited_env);
    assert_eq!(std::fs::read_to_string(&board_file).unwrap(), edited_board);
    let log = String::from_utf8_lossy(&third.stderr);
    assert!(
        log.contains("EDGELLM_MODEL=/var/lib/edgellm/models/other.gguf"),
        "no hint that /etc/default/edgellm names another model:\n{log}"
    );
    assert!(staged(&destdir, "/var/lib/edgellm/models/other.gguf").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn install_refuses_clearly() {
    let dir = Serve::fresh_dir();
    let model = small_gguf(&dir);
    let destdir = dir.join("root");
    let d = destdir.to_str().unwrap();
    let bin = Serve::edgellm();
    let bin = bin.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--destdir", d, "--binary", bin, "--board", "rpi5"],
            "first install: give --model",
        ),
        (
            vec![
                "--destdir",
                d,
                "--binary",
                bin,
                "--model",
                model.to_str().unwrap(),
            ],
            "first install: give --board",
        ),
        (
            vec![
                "--destdir",
                d,
                "--binary",
                bin,
                "--board",
                "rpi5",
                "--model",
                "/nonexistent.gguf",
            ],
            "no such file",
        ),
        (
            vec![
                "--destdir",
                d,
                "--binary",
                bin,
                "--board",
                "rpi5",
                "--model",
                bin,
            ],
            "not a GGUF file",
        ),
        (
            vec![
                "--destdir",
                d,
                "--binary",
                bin,
                "--board",
                "Bad Name",
                "--model",
                model.to_str().unwrap(),
            ],
            "not a board name",
        ),
        (vec!["--frobnicate"], "unknown argument"),
    ];
    for (args, message) in cases {
        let out = run_install(&args);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "install.sh {args:?} succeeded");
        assert!(log.contains(message), "install.sh {args:?}: {log}");
    }
    // A board file whose name key does not match its file name would not load by name.
    let wrong = dir.join("myboard.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(tools_dir().join("../board-configs/rpi5.toml")).unwrap(),
    )
    .unwrap();
    let out = run_install(&[
        "--destdir",
        d,
        "--binary",
        bin,
        "--board",
        wrong.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name key must be \"myboard\""));

    // Without --destdir it installs into /, which needs root: as an unprivileged user it must
    // refuse before touching anything. (When the test runs as root, drop to nobody for it.)
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    let mut cmd = if String::from_utf8_lossy(&uid).trim() == "0" {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
        c
    } else {
        Command::new("bash")
    };
    let out = cmd
        .arg(install_sh())
        .args(["--board", "rpi5", "--model", model.to_str().unwrap()])
        .output()
        .expect("running install.sh unprivileged");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "install.sh as non-root succeeded");
    assert!(log.contains("must run as root"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `GET /health` over the Unix socket: the whole response, status line first.
fn health(socket: &Path) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The installed unit's command line, with the installed settings, starts a server that tells
/// systemd READY=1 once its socket accepts connections, and stops cleanly on SIGTERM.
#[test]
fn installed_command_line_serves_and_notifies_systemd() {
    let dir = Serve::fresh_dir();
    let destdir = staged_install(&dir, "generic-x86_64", &Serve::model_path());
    let unit = read_unit();
    let env_file = staged(&destdir, one(&unit, "Service", "EnvironmentFile"));
    // One thread and a short context keep this test light; the flags go where a user puts them.
    let env_text = std::fs::read_to_string(&env_file)
        .unwrap()
        .replace("EDGELLM_ARGS=\n", "EDGELLM_ARGS=-t 1 --ctx 512\n");
    std::fs::write(&env_file, env_text).unwrap();
    let env = parse_env_file(&std::fs::read_to_string(&env_file).unwrap());
    let argv = expand_exec_start(one(&unit, "Service", "ExecStart"), &env);

    // What systemd provides, mapped into the test directory: the runtime directory, the
    // board directory edgellm searches, and the notification socket.
    let runtime_dir = Path::new("/run").join(one(&unit, "Service", "RuntimeDirectory"));
    let test_runtime_dir = dir.join("run");
    std::fs::create_dir(&test_runtime_dir).unwrap();
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| match Path::new(&a).strip_prefix(&runtime_dir) {
            Ok(rest) => test_runtime_dir.join(rest).display().to_string(),
            Err(_) if a.starts_with('/') && staged(&destdir, &a).exists() => {
                staged(&destdir, &a).display().to_string()
            }
            Err(_) => a,
        })
        .collect();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let socket = test_runtime_dir.join("edgellm.sock");

    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("NOTIFY_SOCKET", &notify_path)
        .env(
            edgellm_hal::board::BOARD_DIR_ENV,
            staged(&destdir, edgellm_hal::board::SYSTEM_BOARD_DIR),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    eprintln!("running {argv:?}");
    let mut child = cmd.spawn().expect("starting the installed edgellm");
    let stderr = child.stderr.take().unwrap();
    let log_reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stderr }, &mut text).unwrap();
        text
    });

    let mut buf = [0u8; 4096];
    let ready = notify
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let ready_ok = matches!(&ready, Ok(m) if m.lines().any(|l| l == "READY=1"));
    let health = health(&socket);
    let mode = std::fs::metadata(&socket).map(|m| m.permissions().mode() & 0o777);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("edgellm still running 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopping = notify
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    let log = log_reader.join().unwrap();
    eprintln!("[serve] {log}");

    assert!(ready_ok, "no READY=1 notification: {ready:?}");
    let health = health.unwrap_or_else(|e| panic!("READY=1 sent but GET /health failed: {e}"));
    assert!(health.starts_with("HTTP/1.1 200"), "GET /health: {health}");
    // The server runs with the board the environment file names.
    assert!(
        health.contains("\"generic-x86_64\""),
        "GET /health: {health}"
    );
    assert_eq!(mode.unwrap(), 0o660, "socket mode");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(!socket.exists(), "socket left behind after SIGTERM");
    assert!(
        matches!(&stopping, Ok(m) if m.contains("STOPPING=1")),
        "no STOPPING=1 notification: {stopping:?}"
    );
    // The board file install.sh put in place is the one edgellm loaded.
    assert!(
        log.contains(&format!(
            "{}/generic-x86_64.toml",
            staged(&destdir, edgellm_hal::board::SYSTEM_BOARD_DIR).display()
        )),
        "edgellm did not load the installed board config:\n{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
