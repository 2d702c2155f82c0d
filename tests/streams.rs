//! Streams: what a guest writes reaches the host's stream byte for byte,
//! bounded and in order; the host's stdin reaches the guest; `.wat` text is
//! taken as `wasmtime run` takes it. Every test runs on the backend this
//! build selects (`cargo test`, `cargo test --features native`); none asserts
//! a time: sizes, counts and order only, with a safety net against hangs.

mod common;

use common::*;
use host::{Capture, Stdin, Stdio};
use std::io::{Read, Write};
use std::process::{Child, Stdio as Pipe};
use std::sync::mpsc;

/// What one run of the `host` binary gave, stdout as raw bytes.
struct Raw {
    status: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    /// The host's peak resident set (with its reaped children's), in KiB.
    max_rss_kib: i64,
}

/// `host run --backend <backend under test> ARGS...` with `input` on its
/// stdin (closed at its end), stdout read to the end as bytes.
fn run_raw(args: &[&str], input: Vec<u8>) -> Raw {
    let mut child = spawn_host(args, Pipe::piped(), Pipe::piped());
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // The guest may end without reading it all: a broken pipe is fine.
        let _ = stdin.write_all(&input);
    });
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let (status, max_rss_kib) = wait_measured(&mut child);
    let _ = feeder.join();
    let stdout = stdout.recv_timeout(HANG).expect("the host's stdout ends");
    let stderr = String::from_utf8_lossy(&stderr.recv_timeout(HANG).expect("the host's stderr ends")).into_owned();
    Raw { status, stdout, stderr, max_rss_kib }
}

fn spawn_host(args: &[&str], stdin: Pipe, stdout: Pipe) -> Child {
    host_command()
        .args(["run", "--backend", backend_name()])
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Pipe::piped())
        .spawn()
        .expect("run the host binary")
}

/// Reads `stream` to its end on a thread; the bytes come on the channel.
fn read_all(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    receiver
}

/// Waits for `child` (killing it after the hang safety net) and reaps it
/// with `wait4`, which also tells its peak resident set.
fn wait_measured(child: &mut Child) -> (Option<i32>, i64) {
    let start = std::time::Instant::now();
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            return (code, usage.ru_maxrss);
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            panic!("the host did not end within {HANG:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Bytes that are not text: every value, in a pattern that does not repeat
/// every 256 bytes.
fn binary_input(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

fn every_byte() -> Vec<u8> {
    (0..=255u8).collect()
}

#[test]
fn binary_output_arrives_byte_for_byte() {
    let out = run_raw(&[s(&guest("bytes"))], Vec::new());
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, every_byte(), "exactly the 256 byte values, no newline added");

    // The same through the library: an unlabelled capture is exact too.
    let host = host();
    let program = host.load(guest("bytes")).unwrap();
    let captured = Capture::new();
    let p = program.command().stdout(Stdio::capture(&captured)).spawn().unwrap();
    assert_eq!(join(&p).code(), 0);
    host.wait();
    assert_eq!(captured.bytes(), every_byte());
}

/// A core module in the text format that starts with comments of both
/// kinds and writes the 256 byte values to stdout with `fd_write`.
fn wat_every_byte() -> String {
    let data: String = (0..=255u8).map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#";; every byte value, no newline
(; a block comment (; nested ;) before the module ;)
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{data}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 256))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#
    )
}

#[test]
fn wat_text_with_leading_comments_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wat = write_file(dir.path(), "bytes.wat", &wat_every_byte());
    let out = run_raw(&[s(&wat)], Vec::new());
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, every_byte());

    // Module fields alone are text too, as `wasmtime run` takes them.
    let fields = write_file(dir.path(), "fields.wat", ";; no (module ...) around it\n(func (export \"_start\"))\n");
    run(&[s(&fields)]).assert_status(0);

    // Neither Wasm nor text: the one-line refusal, exit 2.
    for (name, text) in [("notes.wat", ";; only a comment\nhello\n"), ("open.wat", "(; never closed")] {
        let path = write_file(dir.path(), name, text);
        let out = run(&[s(&path)]);
        out.assert_bad_input();
        assert!(out.stderr.contains("not a WebAssembly file"), "{out:#?}");
    }
    // Text that is not valid: still exit 2, naming what is wrong.
    let bad = write_file(dir.path(), "bad.wat", ";; broken\n(module (func (i32.bogus)))\n");
    let out = run(&[s(&bad)]);
    out.assert_bad_input();
    assert!(out.stderr.contains("not valid WebAssembly text"), "{out:#?}");
}

#[test]
fn stdin_round_trip_of_10_mib() {
    let input = binary_input(10 << 20);
    let out = run_raw(&[s(&guest("cat"))], input.clone());
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "the bytes out differ from the bytes in");
    assert!(out.stderr.contains(&format!("copied {} bytes", input.len())), "{}", out.stderr);

    // The library: bytes given to the process, output captured.
    let host = host();
    let program = host.load(guest("cat")).unwrap();
    let input = binary_input(3 << 20);
    let captured = Capture::new();
    let p = program
        .command()
        .stdin(Stdin::bytes(input.clone()))
        .stdout(Stdio::capture(&captured))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(join(&p).code(), 0);
    host.wait();
    assert!(captured.bytes() == input, "the library's stdin bytes round trip");

    // The default stdin is empty.
    let captured = Capture::new();
    let p = program.command().stdout(Stdio::null()).stderr(Stdio::capture(&captured)).spawn().unwrap();
    assert_eq!(join(&p).code(), 0);
    host.wait();
    assert_eq!(captured.text(), "copied 0 bytes\n");
}

#[test]
fn with_several_processes_only_the_named_one_reads_stdin() {
    let cat = guest("cat");
    let out = run_raw(&["--count", "2", s(&cat)], b"hello\n".to_vec());
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "no process reads stdin by default: {:?}", out.stdout);
    for k in 1..=2 {
        assert!(out.stderr.contains(&format!("Process-{k}: copied 0 bytes")), "{}", out.stderr);
    }

    let out = run_raw(&["--count", "2", "--stdin", "2", s(&cat)], b"hello\n".to_vec());
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Process-2: hello\n");
    assert!(out.stderr.contains("Process-1: copied 0 bytes"), "{}", out.stderr);
    assert!(out.stderr.contains("Process-2: copied 6 bytes"), "{}", out.stderr);

    let out = run(&["--count", "2", "--stdin", "3", s(&cat)]);
    out.assert_bad_input();
}

#[test]
fn a_progress_line_shows_before_the_process_ends() {
    let mut child = spawn_host(&[s(&guest("progress"))], Pipe::piped(), Pipe::piped());
    let stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let stderr = read_all(child.stderr.take().unwrap());
    // The guest writes `50%\r`, then waits for its stdin to end: the bytes
    // can only arrive now if the host passed them on without a newline.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = [0u8; 4];
        let read = stdout.read_exact(&mut seen);
        let _ = sender.send((read.map(|_| seen), stdout));
    });
    let (seen, mut stdout) = match receiver.recv_timeout(HANG) {
        Ok(got) => got,
        Err(_) => {
            let _ = child.kill();
            panic!("`50%\\r` did not arrive while the process waited for its stdin");
        }
    };
    assert_eq!(&seen.expect("4 bytes of stdout"), b"50%\r");
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"100%\n");
    let (status, _) = wait_measured(&mut child);
    let _ = stderr.recv_timeout(HANG);
    assert_eq!(status, Some(0));
}

#[test]
fn a_flood_without_newlines_keeps_the_host_small() {
    let flood = guest("flood");
    let small = run_raw(&[s(&flood), "--", "1"], Vec::new());
    assert_eq!(small.status, Some(0), "{}", small.stderr);
    assert_eq!(small.stdout.len(), 1 << 20);

    let big = run_raw(&[s(&flood), "--", "256"], Vec::new());
    assert_eq!(big.status, Some(0), "{}", big.stderr);
    assert_eq!(big.stdout.len(), 256 << 20, "every byte arrives");
    assert!(big.stdout.iter().all(|&b| b == b'x'), "nothing is inserted");
    let extra_mib = (big.max_rss_kib - small.max_rss_kib) / 1024;
    assert!(
        extra_mib < 64,
        "256 MiB without a newline grew the host by {extra_mib} MiB (peak {} KiB vs {} KiB)",
        big.max_rss_kib,
        small.max_rss_kib
    );
}

#[test]
fn a_labelled_long_line_passes_on_in_pieces() {
    let out = run_raw(&["--count", "2", s(&guest("flood")), "--", "1"], Vec::new());
    assert_eq!(out.status, Some(0), "{}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut per_process = [0usize; 2];
    for line in text.lines() {
        let (name, rest) =
            line.split_once(": ").unwrap_or_else(|| panic!("an unlabelled line of {} bytes", line.len()));
        let k: usize = name.strip_prefix("Process-").and_then(|k| k.parse().ok()).expect("a process's label");
        assert!(rest.len() <= 64 << 10, "a piece of {} bytes", rest.len());
        assert!(rest.bytes().all(|b| b == b'x'));
        per_process[k - 1] += rest.len();
    }
    assert_eq!(per_process, [1 << 20; 2], "nothing dropped");
    assert!(text.ends_with('\n'), "a labelled unfinished line is ended");
}

#[test]
fn a_blocked_stdout_does_not_keep_a_timeout_from_ending_the_process() {
    // Stdout is a pipe nobody reads: the guest fills it and the host's queue,
    // then waits; the timeout must still end it, and the host must exit.
    let mut child = spawn_host(&["--timeout", "1s", s(&guest("flood"))], Pipe::null(), Pipe::piped());
    let _unread = child.stdout.take().unwrap();
    let stderr = read_all(child.stderr.take().unwrap());
    let (status, _) = wait_measured(&mut child);
    let stderr = String::from_utf8_lossy(&stderr.recv_timeout(HANG).unwrap()).into_owned();
    assert_eq!(status, Some(143), "{stderr}");
    assert!(stderr.contains("exitcode=-15"), "{stderr}");
}
