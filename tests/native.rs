//! Native-backend-only tests: what only real OS processes can show.
//!
//! Pids are real and visible in `/proc`, ended children are reaped (no
//! zombies), orphans are adopted by the root host, daemons die with a parent
//! killed by `SIGKILL`, nothing outlives a killed host, and a worker that
//! breaks the control protocol is killed and reported without harming the
//! host. Bounded by the hang safety net only; no timing assertions.
#![cfg(all(feature = "native", target_os = "linux"))]

mod common;

use common::{HANG, guest, host, host_command, join};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

/// `/proc/<pid>/status` field `key`, if the process exists.
fn status_field(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(&format!("{key}:"))).map(|value| value.trim().to_string())
}

/// True while `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    status_field(pid, "State").is_some_and(|state| !state.starts_with('Z'))
}

/// True while `pid` exists at all (a zombie counts).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG, "{what} never happened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| status_field(p, "PPid").as_deref() == Some(&pid.to_string()))
        .collect()
}

#[test]
fn pids_are_real_processes_of_the_host() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let process = program.command().arg("3600").spawn().unwrap();
    let pid = process.pid().unwrap();
    assert!(running(pid), "/proc/{pid} shows a running process");
    assert_eq!(status_field(pid, "PPid"), Some(std::process::id().to_string()));
    assert_eq!(host.pid(), std::process::id());
    process.terminate().unwrap();
    assert_eq!(join(&process).code(), -15);
    assert!(!exists(pid), "the ended worker {pid} was reaped");
}

#[test]
fn unjoined_children_leave_no_zombies() {
    let host = host();
    let program = host.load(guest("children")).unwrap();
    let processes: Vec<_> = (0..5).map(|_| program.command().entry("noop").spawn().unwrap()).collect();
    for process in &processes {
        // Never joined: poll only what the host observed.
        wait_until("the end of a noop process", || process.exitcode().is_some());
        let pid = process.pid().unwrap();
        assert!(!exists(pid), "worker {pid} ended and was reaped, not left a zombie");
    }
}

#[test]
fn a_killed_worker_reports_minus_nine_and_is_reaped() {
    let host = host();
    let program = host.load(guest("spin")).unwrap();
    let process = program.command().spawn().unwrap();
    let pid = process.pid().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(join(&process).code(), -9);
    assert!(!exists(pid));
}

/// A pool worker killed with tasks sent ahead to it: the task it was
/// running fails, those it had not started run on its replacement.
#[test]
fn a_killed_pool_worker_fails_only_its_running_task() {
    let host = host();
    let pool = host::Pool::new(&host.load(guest("pool-tasks")).unwrap(), 1).unwrap();
    let first: u32 = pool.apply("whoami", &()).unwrap();
    let running = pool.apply_async::<_, u32>("sleep_secs", &600.0);
    let behind: Vec<_> = (0..10i64).map(|i| pool.apply_async::<_, i64>("square", &i)).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    assert!(matches!(running.get(Some(HANG)), Err(host::TaskError::Failed(_))));
    for (i, result) in behind.iter().enumerate() {
        assert_eq!(result.get(Some(HANG)), Ok((i * i) as i64));
    }
    assert_ne!(pool.apply::<_, u32>("whoami", &()).unwrap(), first);
}

#[test]
fn another_signal_reports_minus_its_number() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let process = program.command().arg("3600").spawn().unwrap();
    unsafe { libc::kill(process.pid().unwrap() as i32, libc::SIGINT) };
    assert_eq!(join(&process).code(), -2);
}

#[test]
fn orphans_are_adopted_by_the_root_host() {
    let child = host_command()
        .args(["run", "--backend", "native"])
        .arg(guest("seed-orphan"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let host_pid = child.id();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parent = stdout
        .lines()
        .find_map(|l| l.strip_prefix("parent pid="))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the parent's line");
    let orphan = stdout.lines().find(|l| l.starts_with("orphan")).expect("the orphan's line, waited for");
    assert!(orphan.ends_with(&format!("ppid={host_pid}")), "adopted by the host {host_pid}: {orphan}");
    assert!(!orphan.ends_with(&format!("ppid={parent}")));
}

#[test]
fn a_daemon_dies_when_its_parent_is_killed() {
    let host = host();
    let program = host.load(guest("children")).unwrap();
    let parent = program.command().entry("join_grandchild").spawn().unwrap();
    let parent_pid = parent.pid().unwrap();
    wait_until("the daemon grandchild's start", || !children_of(parent_pid).is_empty());
    let daemon = children_of(parent_pid)[0];
    unsafe { libc::kill(parent_pid as i32, libc::SIGKILL) };
    assert_eq!(join(&parent).code(), -9);
    wait_until("the daemon's death with its parent", || !running(daemon));
}

#[test]
fn nothing_outlives_a_killed_host() {
    let mut child = host_command()
        .args(["run", "--backend", "native", "--count", "2", "--entry", "join_grandchild"])
        .arg(guest("children"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = child.id();
    // Two workers, each with a daemon grandchild.
    let mut tree = Vec::new();
    wait_until("the process tree's start", || {
        let workers = children_of(host_pid);
        let grandchildren: Vec<u32> = workers.iter().flat_map(|&w| children_of(w)).collect();
        tree = workers.into_iter().chain(grandchildren.iter().copied()).collect();
        grandchildren.len() == 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in tree {
        wait_until("a worker's death with the host", || !running(pid));
    }
}

/// A stand-in worker that writes `bytes` (printf escapes) on its channel,
/// then runs `then`.
fn hostile_worker(dir: &Path, bytes: &str, then: &str) -> std::path::PathBuf {
    let script = dir.join("worker.sh");
    std::fs::write(
        &script,
        format!("#!/bin/bash\nfd=${{HOST_WORKER_FDS%%,*}}\neval \"printf '{bytes}' >&$fd\"\n{then}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_worker_that_breaks_the_protocol_is_killed_and_reported() {
    // A worker that goes on running is killed as soon as what it sent is
    // wrong; a truncated frame shows when the worker ends.
    // Each case names the decoder's own words for it, so that a frame
    // refused for another reason (a stale magic, say) fails the test.
    let cases = [
        ("garbage!", "exec sleep 3600", "bad magic"),
        ("MPH5\\377\\377\\377\\377", "exec sleep 3600", "exceeds the limit"),
        ("MPH5\\000\\000\\000\\200", "exec sleep 3600", "an empty frame"),
        ("MPH5\\002\\000\\000\\200[1", "exit 0", "truncated frame header"),
        ("MPH5\\005\\000\\000\\000[1,2]", "exec sleep 3600", "shorter than its head"),
        // A report (kind 16) whose body is not one.
        (
            "MPH5\\016\\000\\000\\000[1,2]\\000\\000\\000\\000\\000\\000\\000\\000\\020",
            "exec sleep 3600",
            "malformed message",
        ),
        ("MPH5\\100\\000\\000\\000{", "exit 0", "truncated frame body"),
        ("MPH", "exit 0", "truncated frame header"),
    ];
    for (bytes, then, case) in cases {
        let dir = tempfile::tempdir().unwrap();
        let worker = hostile_worker(dir.path(), bytes, then);
        let host = common::builder().worker_program(worker).build().unwrap();
        let program = host.load(guest("hello")).unwrap();
        let capture = host::Capture::new();
        let process = program.command().stderr(host::Stdio::capture(&capture)).spawn().unwrap();
        let pid = process.pid().unwrap();
        let code = join(&process);
        assert_eq!(code.code(), 1, "{case}");
        let failure = process.failure().expect("a reason");
        assert!(failure.contains("broke the control protocol"), "{case}: {failure}");
        assert!(failure.contains(case), "refused for the wrong reason: expected `{case}` in: {failure}");
        assert!(!exists(pid), "{case}: the hostile worker was killed and reaped");
        // The host carries on.
        let good = common::host();
        let program = good.load(guest("hello")).unwrap();
        assert!(join(&program.command().stdout(host::Stdio::null()).spawn().unwrap()).success());
    }
}

/// The distinct sockets `pid` has open (one may be open under two numbers).
fn sockets_of(pid: u32) -> std::collections::BTreeSet<String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    let links = dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).map(|p| p.display().to_string());
    links.filter(|link| link.starts_with("socket:")).collect()
}

#[test]
fn a_worker_has_one_socket_its_channel_to_the_root() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let out = host::Capture::new();
    let process = program.command().arg("3600").stdout(host::Stdio::capture(&out)).spawn().unwrap();
    let pid = process.pid().unwrap();
    // Once it runs its guest: until then a forked worker may still hold the
    // zygote's socket it is about to close.
    common::wait_for_output(&out, "sleeping");
    assert_eq!(sockets_of(pid).len(), 1, "{:?}", sockets_of(pid));
    process.kill().unwrap();
    assert_eq!(join(&process).code(), -9);
}

#[test]
fn workers_fork_from_the_zygote_and_are_the_hosts_children() {
    let host = host();
    let program = host.load(guest("sleep")).unwrap();
    let process = program.command().arg("3600").stdout(host::Stdio::null()).spawn().unwrap();
    let pid = process.pid().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("__worker zygote"), "forked from the zygote, not exec'd: {cmdline}");
    assert_eq!(status_field(pid, "PPid"), Some(std::process::id().to_string()));
    process.kill().unwrap();
    assert_eq!(join(&process).code(), -9);
}

#[test]
fn compiled_code_is_out_of_reach_of_a_granted_temp_dir() {
    // The host's temp dir granted to a guest that overwrites every file it
    // finds there; its own worker and its child's run on, and the host
    // leaves nothing in the temp dir for a later guest to reach.
    let tmp = tempfile::tempdir().unwrap();
    let grant = format!("{}::/tmp", tmp.path().display());
    let out = common::host_with(
        &["run", "--backend", "native", "--dir", &grant, common::s(&guest("overwrite-all")), "--", "/tmp"],
        &[("TMPDIR", common::s(tmp.path()))],
    );
    out.assert_status(0);
    let overwritten: Vec<&str> = out.stdout_lines().into_iter().filter(|l| l.starts_with("overwrote")).collect();
    assert!(overwritten.iter().all(|l| !l.ends_with(".cwasm")), "{out:#?}");
    assert!(out.stdout.contains("child ran"), "{out:#?}");
    assert!(out.stdout.contains("child exitcode: Some(0)"), "{out:#?}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().filter_map(Result::ok).map(|e| e.path()).collect();
    assert!(left.is_empty(), "the host left {left:?} in its temp dir");
}

#[test]
fn a_silent_zygote_never_runs_a_process_twice() {
    // A zygote that takes the request and never answers is stopped; as it
    // forked nothing, the process starts by exec, once; later starts too.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("worker.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\nif [ \"$2\" = zygote ]; then exec sleep 3600; fi\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_host")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = common::builder().worker_program(&script).build().unwrap();
    let program = host.load(guest("hello")).unwrap();
    for _ in 0..2 {
        let out = host::Capture::new();
        let process = program.command().stdout(host::Stdio::capture(&out)).spawn().unwrap();
        assert!(join(&process).success());
        assert_eq!(out.text().matches("hello from pid=").count(), 1, "{}", out.text());
    }
}

#[test]
fn children_of_a_terminated_worker_are_adopted_and_reaped() {
    // A worker ended by a signal announces nothing: its non-daemon child,
    // now the root's (its subreaper), is found, waited for by `Host::wait`,
    // and reaped.
    let host = host();
    let program = host.load(guest("children")).unwrap();
    let parent = program.command().entry("orphan_a_sleeper").stdout(host::Stdio::null()).spawn().unwrap();
    let parent_pid = parent.pid().unwrap();
    wait_until("the grandchild's start", || !children_of(parent_pid).is_empty());
    let grandchild = children_of(parent_pid)[0];
    parent.terminate().unwrap();
    assert_eq!(join(&parent).code(), -15);
    host.wait();
    assert!(!exists(grandchild), "Host::wait returned before the orphan {grandchild} ended and was reaped");
}

/// Every live process below `root` in the OS process tree (zombies, which
/// have ended, left out).
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = std::collections::HashMap::new();
    let mut ended = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        // The state, then the parent pid, after the command's last ')'.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(end) = stat.rfind(')') else { continue };
        let mut fields = stat[end + 1..].split_whitespace();
        let (Some(state), Some(Ok(ppid))) = (fields.next(), fields.next().map(str::parse::<u32>)) else { continue };
        parents.insert(pid, ppid);
        if state == "Z" {
            ended.insert(pid);
        }
    }
    let below = |mut pid: u32| {
        while let Some(&parent) = parents.get(&pid) {
            if parent == root {
                return true;
            }
            pid = parent;
        }
        false
    };
    // A zombie has ended: its slot may already serve another process.
    parents.keys().copied().filter(|&pid| below(pid) && !ended.contains(&pid)).collect()
}

#[test]
fn the_process_cap_holds_for_the_whole_os_process_tree_whoever_spawns() {
    // Workers start their own children, so only a cap the root keeps for
    // every worker can hold the tree to 30 (the zygote is one more).
    let mut child = host_command()
        .args(["run", "--backend", "native", "--max-processes", "30"])
        .arg(guest("fork-bomb"))
        .args(["--", "12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the host");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let host_pid = child.id();
    let began = Instant::now();
    let mut most = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(began.elapsed() < HANG, "the fork bomb did not end");
        most = most.max(descendants(host_pid).len());
    };
    let stdout = reader.join().unwrap();
    eprintln!("at most {most} processes below the host at once");
    assert!(status.success(), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("refused: 30: ")), "the cap was reached: {stdout}");
    assert!(most <= 31, "at most 30 processes and the zygote at any time: saw {most}");
    assert!(most > 1, "the tree was sampled while it ran: saw {most}");
}

/// What crosses a worker's channel to the root arrives whole and in
/// order: queue items of the largest size a message may have (more than
/// one frame of the channel), and small items a producer puts on an
/// unbounded queue without waiting for each answer (it ends only once they
/// are all in the queue: a consumer started after its end finds them all).
#[test]
fn queue_items_large_and_sent_ahead_all_arrive() {
    let host = host();
    let program = host.load(guest("ipc-queue-throughput")).unwrap();
    let big = host::sync::Queue::new(&host, 2).unwrap();
    // The largest a serialized item may be, less its own header.
    let args = (&big, 3u64, host::sync::MAX_MESSAGE as u64 - 8);
    let out = host::Capture::new();
    let consumer =
        program.command().entry("consume_bytes").input(&args).stdout(host::Stdio::capture(&out)).spawn().unwrap();
    let producer = program.command().entry("produce_bytes").input(&args).spawn().unwrap();
    assert!(join(&producer).success() && join(&consumer).success(), "{}", out.text());
    assert!(out.text().contains("consumed: 3"), "{}", out.text());

    let unbounded = host::sync::Queue::new(&host, 0).unwrap();
    let args = (&unbounded, 5_000u64);
    let producer = program.command().entry("produce").input(&args).spawn().unwrap();
    assert!(join(&producer).success());
    assert_eq!(unbounded.qsize().unwrap(), 5_000);
    let out = host::Capture::new();
    let consumer = program.command().entry("consume").input(&args).stdout(host::Stdio::capture(&out)).spawn().unwrap();
    assert!(join(&consumer).success(), "{}", out.text());
    assert!(out.text().contains("consumed: 5000"), "{}", out.text());
}
