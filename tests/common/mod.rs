//! Helpers shared by the integration tests.
//!
//! Every test runs against the backend this build selects: `native` when the
//! cargo feature `native` is on, `thread` otherwise. The same tests run
//! unchanged on both (`cargo test` and `cargo test --features native`), so
//! nothing here assumes a pid value or a timing: only order and completion.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use host::{BackendKind, Capture, ExitCode, Host, HostBuilder, Process};

/// A safety net only: a run that has not ended after this long is a hang, and
/// the test fails instead of blocking the suite. Never a timing assertion.
pub const HANG: Duration = Duration::from_secs(120);

/// The backend under test, as the CLI spells it.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "native") { "native" } else { "thread" }
}

/// The backend under test.
pub fn backend() -> BackendKind {
    if cfg!(feature = "native") { BackendKind::Native } else { BackendKind::Thread }
}

pub fn is_thread_backend() -> bool {
    backend() == BackendKind::Thread
}

/// `target/guests/<name>.wasm`, built by `host/build.rs`.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("GUESTS_DIR")).join(format!("{name}.wasm"));
    assert!(path.is_file(), "guest program {} is missing (host/build.rs builds it)", path.display());
    path
}

/// A host on the backend under test. The pool is kept small: every test
/// has its own host, and each pool slot reserves address space up front.
/// The native backend re-executes the `host` binary as its workers (a test
/// binary cannot be one).
pub fn host() -> Host {
    builder().build().expect("a host")
}

/// A host that meters fuel.
pub fn fuel_host() -> Host {
    builder().fuel(true).build().expect("a host with fuel")
}

pub fn builder() -> HostBuilder {
    Host::builder()
        .backend(backend())
        .max_processes(64)
        .worker_program(env!("CARGO_BIN_EXE_host"))
        .compile_cache(compile_cache())
}

/// The compile cache of this test run: a directory of its own under the
/// target directory (`target/tmp`), never the user's cache, removed when
/// the test binary exits. [`builder`] and the `host` binaries the helpers
/// run use it; a test that wants another cache says so.
pub fn cache_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("compile-cache-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a compile cache directory for the tests")
            .keep();
        // SAFETY: `remove` is a plain function that stays valid for the
        // whole process; it only reads the set `DIR` and removes files.
        unsafe { libc::atexit(remove) };
        dir
    })
}

/// The `host` binary as a command, its compile cache this run's
/// ([`cache_dir`]): every test that runs the binary starts it here.
pub fn host_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command.env(host::CACHE_DIR_ENV, cache_dir());
    command
}

/// [`cache_dir`] as a host's setting.
pub fn compile_cache() -> host::CompileCache {
    host::CompileCache::Dir(cache_dir().to_path_buf())
}

/// A started process of the `sleep` program sleeping an hour, output discarded:
/// something to terminate, kill, join with a timeout or close.
pub fn sleeper(program: &host::Program) -> Process {
    program.command().arg("3600").stdout(host::Stdio::null()).spawn().expect("a sleeper starts")
}

/// Joins with the hang safety net; the process's exit code.
pub fn join(process: &Process) -> ExitCode {
    process
        .join_timeout(HANG)
        .expect("join of a started process")
        .unwrap_or_else(|| panic!("{} did not end within {HANG:?}", process.name()))
}

/// Waits (polling) until `capture` holds `needle`: that the process got as far
/// as printing it. Order only; bounded by the hang safety net.
pub fn wait_for_output(capture: &Capture, needle: &str) {
    let start = Instant::now();
    while !capture.text().contains(needle) {
        assert!(start.elapsed() < HANG, "`{needle}` never appeared in {:?}", capture.text());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a run of the `host` binary left behind.
#[derive(Debug)]
pub struct Output {
    /// The exit status (`None` if it died of a signal).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// The host's summary lines (`[host] Process-N pid=.. exitcode=.. wall=..`).
    pub fn summaries(&self) -> Vec<Summary> {
        self.stderr.lines().filter_map(Summary::parse).collect()
    }

    /// Stderr without the summary lines: what the processes (and the host's
    /// failure messages) wrote.
    pub fn process_stderr(&self) -> String {
        self.stderr.lines().filter(|l| Summary::parse(l).is_none()).map(|l| format!("{l}\n")).collect()
    }

    /// `key: value` lines of stdout (the `children` program's report), first
    /// occurrence of each key.
    pub fn report(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        for line in self.stdout.lines() {
            if let Some((key, value)) = line.split_once(": ") {
                map.entry(key.to_string()).or_insert_with(|| value.to_string());
            }
        }
        map
    }

    /// Bad input: status 2, nothing on stdout, exactly one non-empty line on
    /// stderr (and so no summary line: no process started).
    pub fn assert_bad_input(&self) {
        assert_eq!(self.status, Some(2), "bad input must exit 2: {self:#?}");
        assert!(self.stdout.is_empty(), "bad input must print nothing on stdout: {self:#?}");
        let lines = self.stderr_lines();
        assert_eq!(lines.len(), 1, "bad input must be exactly one line on stderr: {self:#?}");
        assert!(!lines[0].trim().is_empty(), "the line must say something: {self:#?}");
        assert!(self.summaries().is_empty(), "no process may start on bad input: {self:#?}");
    }

    pub fn assert_status(&self, status: i32) {
        assert_eq!(self.status, Some(status), "unexpected exit status: {self:#?}");
    }
}

/// One summary line of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub name: String,
    pub pid: u32,
    pub exitcode: i32,
}

impl Summary {
    fn parse(line: &str) -> Option<Summary> {
        let rest = line.strip_prefix("[host] ")?;
        let mut name = None;
        let mut pid = None;
        let mut exitcode = None;
        for word in rest.split_whitespace() {
            if let Some(v) = word.strip_prefix("pid=") {
                pid = v.parse().ok();
            } else if let Some(v) = word.strip_prefix("exitcode=") {
                exitcode = v.parse().ok();
            } else if word.starts_with("Process-") {
                name = Some(word.to_string());
            }
        }
        Some(Summary { name: name?, pid: pid?, exitcode: exitcode? })
    }
}

/// Runs `host ARGS...` as given (no backend added).
pub fn host_raw(args: &[&str]) -> Output {
    host_with(args, &[])
}

/// Runs `host run --backend <backend under test> ARGS...`.
pub fn run(args: &[&str]) -> Output {
    let mut full = vec!["run", "--backend", backend_name()];
    full.extend_from_slice(args);
    host_raw(&full)
}

/// Runs `host ARGS...` with extra environment variables in the host's own
/// environment, stdin closed, and a hang safety net.
pub fn host_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    host_measured(args, env).0
}

/// Runs `host run --backend <backend under test> ARGS...`; also returns the
/// host's own peak resident set size in KiB (the kernel's `ru_maxrss` of
/// the host process: not its native workers', which are processes of their
/// own).
pub fn run_with_peak_rss(args: &[&str]) -> (Output, u64) {
    let mut full = vec!["run", "--backend", backend_name()];
    full.extend_from_slice(args);
    host_measured(&full, &[])
}

/// [`host_with`], and the host's peak resident set size in KiB.
// The child is reaped by wait4, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn host_measured(args: &[&str], env: &[(&str, &str)]) -> (Output, u64) {
    let mut command = host_command();
    command.args(args).envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run the host binary");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let start = Instant::now();
    let pid = child.id() as libc::pid_t;
    // wait4 rather than Child::try_wait: it also gives the peak RSS.
    let (status, usage) = loop {
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait for the host: {}", std::io::Error::last_os_error());
        if reaped == pid {
            break (status, usage);
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`host {}` did not end within {HANG:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let output = Output { status: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)), stdout, stderr };
    (output, usage.ru_maxrss as u64)
}

/// The path as a `&str` for an argument list.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A WASI preview 1 core module in the text format: `_start` prints
/// `hello from wat`; entry `partial_spin` writes `partial` (no newline) to
/// stdout, then the whole line `ready` to stderr, then loops forever without
/// a single call.
pub const WAT_HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wat\npartialready\n")
  (func $write (param $fd i32) (param $off i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $off))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start") (call $write (i32.const 1) (i32.const 16) (i32.const 15)))
  (func (export "partial_spin")
    (call $write (i32.const 1) (i32.const 31) (i32.const 7))
    (call $write (i32.const 2) (i32.const 38) (i32.const 6))
    (loop $l (br $l))))
"#;

/// A core module of the wrong world: it imports something no host provides.
pub const WAT_WRONG_WORLD: &str = r#"(module (import "env" "f" (func)))"#;

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

/// The index of the first line satisfying `pred`.
pub fn position(lines: &[&str], pred: impl Fn(&str) -> bool) -> Option<usize> {
    lines.iter().position(|l| pred(l))
}

/// Asserts that a guest's `key: value` report has each expected pair.
pub fn check(report: &HashMap<String, String>, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(report.get(*key).map(String::as_str), Some(*value), "{key} in {report:#?}");
    }
}
