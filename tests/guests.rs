//! The guest side: the seed programs run by `host run` with the structure of
//! output their seeds show, and the guest lifecycle API through the
//! `children` program's scenarios (one `key: value` line per check).
//!
//! Only order and completion are checked, never how long anything took.

mod common;

use common::*;
use std::collections::HashMap;

// ---- the seeds ----

/// Runs a seed program; it must exit 0 with one summary line.
fn seed(name: &str) -> Output {
    let out = run(&[s(&guest(name))]);
    out.assert_status(0);
    assert_eq!(out.summaries().len(), 1, "{out:#?}");
    out
}

/// The number after `key` in `line` (`pid=12` -> 12).
fn number_after(line: &str, key: &str) -> u32 {
    let rest = line.split(key).nth(1).unwrap_or_else(|| panic!("no {key:?} in {line:?}"));
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {key:?} in {line:?}"))
}

#[test]
fn seed_hello() {
    let out = seed("seed-hello");
    let lines = out.stdout_lines();
    assert_eq!(lines.last(), Some(&"over"), "{out:#?}");
    for expected in ["this is parent process", "waiting for the child...", "this is sub process"] {
        assert!(lines.contains(&expected), "missing {expected:?}: {out:#?}");
    }
    let parent = lines.iter().find(|l| l.starts_with("main process pid=")).unwrap();
    let child = lines.iter().find(|l| l.starts_with("sub process id ")).unwrap();
    let parent_pid = number_after(parent, "pid=");
    let child_pid = number_after(child, "id ");
    assert_ne!(parent_pid, child_pid);
    assert_eq!(parent_pid, out.summaries()[0].pid);
    // The child's lines come in order, before `over`.
    let sub = position(&lines, |l| l == "this is sub process").unwrap();
    let id = position(&lines, |l| l.starts_with("sub process id ")).unwrap();
    assert!(sub < id);
}

#[test]
fn seed_subclass() {
    let out = seed("seed-subclass");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 2, "{out:#?}");
    let child = lines
        .iter()
        .find(|l| l.starts_with("downloading https://example.org/file.bin (1024 bytes) in pid "))
        .unwrap_or_else(|| panic!("{out:#?}"));
    let parent = lines.iter().find(|l| l.starts_with("parent over ")).unwrap();
    assert_ne!(number_after(child, "in pid "), number_after(parent, "over "));
}

#[test]
fn seed_isolation() {
    let out = seed("seed-isolation");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 4, "{out:#?}");
    assert_eq!(lines[0], "child a=200");
    assert_eq!(lines[2], "parent a=257", "the child's change is not the parent's: {out:#?}");
    // The child appended to its own copy of the list: the parent's is the
    // same list without that element.
    let child = lines[1].strip_prefix("child list=[").and_then(|l| l.strip_suffix(']')).unwrap();
    let parent = lines[3].strip_prefix("parent list=[").and_then(|l| l.strip_suffix(']')).unwrap();
    assert!(child.len() > parent.len() && child.starts_with(parent), "{out:#?}");
}

#[test]
fn seed_join_order() {
    let out = seed("seed-join-order");
    let lines = out.stdout_lines();
    assert_eq!(lines.last(), Some(&"over"));
    assert_eq!(lines.iter().filter(|l| **l == "p1 run").count(), 10000);
    assert_eq!(lines.iter().filter(|l| **l == "p2 run").count(), 100);
    assert_eq!(lines.len(), 10101, "nothing else, nothing lost");
}

#[test]
fn seed_join_many() {
    let out = seed("seed-join-many");
    let lines = out.stdout_lines();
    assert_eq!(lines.last(), Some(&"over"));
    assert_eq!(lines.len(), 101);
    for i in 0..10 {
        let expected = format!("{i} run");
        assert_eq!(lines.iter().filter(|l| **l == expected).count(), 10, "{expected}");
    }
}

#[test]
fn seed_terminate() {
    let out = seed("seed-terminate");
    // The child may or may not get to print its first line before the
    // terminate reaches it: only the parent's lines are checked.
    let lines: Vec<&str> = out.stdout_lines().into_iter().filter(|l| !l.starts_with("changxin")).collect();
    assert_eq!(lines[0], "is_alive after start: true", "{out:#?}");
    // Right after terminate the end may or may not be observed yet; if it
    // is, the exitcode says so.
    assert!(["is_alive after terminate: true", "is_alive after terminate: false"].contains(&lines[1]), "{out:#?}");
    assert_eq!(
        &lines[2..],
        ["ended means an exitcode: true", "is_alive after join: false", "exitcode: Some(-15)", "name: Process-1"]
    );
    assert!(!out.stdout.contains("is gone"));
}

#[test]
fn seed_daemon() {
    let out = seed("seed-daemon");
    let lines = out.stdout_lines();
    assert!(lines.contains(&"===main"), "{out:#?}");
    assert!(!out.stdout.contains("is gone"), "the daemon outlived its parent: {out:#?}");
}

#[test]
fn seed_orphan() {
    let out = seed("seed-orphan");
    let lines = out.stdout_lines();
    let parent = lines.iter().find(|l| l.starts_with("parent pid=")).unwrap_or_else(|| panic!("{out:#?}"));
    let parent_pid = number_after(parent, "parent pid=");
    let child_pid = number_after(parent, "child pid=Some(");
    // The host waited for the orphan: its last line is there.
    let orphan = lines
        .iter()
        .find(|l| l.contains("orphan"))
        .unwrap_or_else(|| panic!("the host did not wait for the orphan: {out:#?}"));
    assert_eq!(number_after(orphan, "orphan pid="), child_pid);
    let new_ppid = number_after(orphan, "ppid=");
    assert_ne!(new_ppid, parent_pid, "the orphan was adopted: {out:#?}");
    if is_thread_backend() {
        assert_eq!(new_ppid, 1, "adopted by the thread backend's root: {out:#?}");
    }
    assert_eq!(position(&lines, |l| l.contains("orphan")), Some(lines.len() - 1));
}

#[test]
fn seed_piao() {
    let out = seed("seed-piao");
    let lines = out.stdout_lines();
    let main = position(&lines, |l| l == "main").unwrap_or_else(|| panic!("{out:#?}"));
    let first_end = position(&lines, |l| l.contains("end")).unwrap();
    assert!(main < first_end, "`main` comes before any end: {out:#?}");
    assert_eq!(lines.iter().filter(|l| l.ends_with(" piaoing")).count(), 8);
    assert_eq!(lines.iter().filter(|l| l.ends_with(" piao end")).count(), 8);
    for name in ["egon", "alex", "wupeiqi", "yuanhao", "egon-class", "alex-class", "wupeiqi-class", "yuanhao-class"] {
        let start = position(&lines, |l| l == format!("{name} piaoing")).unwrap();
        let end = position(&lines, |l| l == format!("{name} piao end")).unwrap();
        assert!(start < end, "{name}");
    }
}

#[test]
fn seed_serial() {
    let out = seed("seed-serial");
    let lines = out.stdout_lines();
    assert_eq!(
        &lines[..6],
        [
            "changxin is running",
            "changxin is gone",
            "liye is running",
            "liye is gone",
            "haigou is running",
            "haigou is gone",
        ],
        "one after another: {out:#?}"
    );
    assert!(lines[6].starts_with("serial elapsed: "), "{out:#?}");
    assert_eq!(lines.len(), 7);
}

#[test]
fn seed_concurrent() {
    let out = seed("seed-concurrent");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 7, "{out:#?}");
    for name in ["changxin", "liye", "haigou"] {
        let start = position(&lines, |l| l == format!("{name} is running")).unwrap();
        let end = position(&lines, |l| l == format!("{name} is gone")).unwrap();
        assert!(start < end, "{name}: {out:#?}");
    }
    // The parent's own task runs while the children run: both children are
    // running before the parent's task is done.
    let haigou_gone = position(&lines, |l| l == "haigou is gone").unwrap();
    assert!(position(&lines, |l| l == "changxin is running").unwrap() < haigou_gone);
    assert!(position(&lines, |l| l == "liye is running").unwrap() < haigou_gone);
    assert!(lines[6].starts_with("concurrent elapsed: "), "{out:#?}");
}

#[test]
fn seed_join_timing() {
    let out = seed("seed-join-timing");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 9, "{out:#?}");
    let joined: Vec<usize> =
        (1..=3).map(|i| position(&lines, |l| l.starts_with(&format!("joined {i}: "))).unwrap()).collect();
    assert!(joined[0] < joined[1] && joined[1] < joined[2], "{out:#?}");
    for (i, name) in ["changxin", "liye", "haigou"].iter().enumerate() {
        let running = position(&lines, |l| l == format!("{name} is running")).unwrap();
        let gone = position(&lines, |l| l == format!("{name} is gone")).unwrap();
        assert!(running < gone && gone < joined[i], "{name} ends before join {}: {out:#?}", i + 1);
    }
}

// ---- the guest API: the `children` program ----

/// Runs `children SCENARIO`; it must exit 0 and end with `done: SCENARIO`.
fn scenario(name: &str) -> (Output, HashMap<String, String>) {
    let out = run(&[s(&guest("children")), "--", name]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines().last(), Some(&format!("done: {name}").as_str()), "{out:#?}");
    let report = out.report();
    (out, report)
}

#[test]
fn guest_double_start_is_an_error() {
    let (_, r) = scenario("double-start");
    check(
        &r,
        &[
            ("first-start", "ok"),
            ("double-start", "AlreadyStarted"),
            ("join", "ok"),
            ("start-after-join", "AlreadyStarted"),
            ("exitcode", "Some(0)"),
        ],
    );
}

#[test]
fn guest_operations_before_start() {
    let (_, r) = scenario("join-before-start");
    check(
        &r,
        &[
            ("join-before-start", "NotStarted"),
            ("join-timeout-before-start", "NotStarted"),
            ("terminate-before-start", "NotStarted"),
            ("kill-before-start", "NotStarted"),
            ("is-alive-before-start", "false"),
            ("pid-before-start", "None"),
            ("exitcode-before-start", "None"),
            ("close-before-start", "ok"),
        ],
    );
}

#[test]
fn guest_join_self_is_an_error() {
    let (_, r) = scenario("join-self");
    check(&r, &[("join-self", "JoinSelf"), ("join-self-timeout", "JoinSelf")]);
}

#[test]
fn guest_current_process() {
    let (out, r) = scenario("current");
    check(
        &r,
        &[
            ("current-name", "Process-1"),
            ("current-pid-matches", "true"),
            ("current-is-alive", "true"),
            ("current-exitcode", "None"),
            ("current-daemon", "false"),
        ],
    );
    assert_ne!(r["current-start"], "ok", "the current process is already started");
    assert_eq!(r["getpid"], out.summaries()[0].pid.to_string());
}

#[test]
fn guest_close_while_running_is_an_error() {
    let (_, r) = scenario("close-running");
    check(
        &r,
        &[
            ("close-running", "StillRunning"),
            ("terminate", "ok"),
            ("join", "ok"),
            ("close-ended", "ok"),
            ("start-after-close", "Closed"),
            ("join-after-close", "Closed"),
            ("terminate-after-close", "Closed"),
        ],
    );
}

#[test]
fn guest_daemon_only_before_start() {
    let (_, r) = scenario("set-daemon-after-start");
    check(
        &r,
        &[
            ("set-daemon-before-start", "ok"),
            ("daemon", "true"),
            ("set-daemon-back", "ok"),
            ("daemon-after-start", "false"),
            ("join", "ok"),
        ],
    );
    assert_ne!(r["set-daemon-after-start"], "ok");
}

#[test]
fn guest_daemon_may_not_have_children() {
    let (_, r) = scenario("daemon-spawn");
    check(&r, &[("daemon", "true"), ("start", "ok"), ("child-daemon-spawn", "DaemonChildren"), ("join", "ok")]);
}

#[test]
fn guest_terminate_a_sleeping_child() {
    let (_, r) = scenario("terminate-sleep");
    check(&r, &[("terminate", "ok"), ("join", "ok"), ("is-alive", "false"), ("exitcode", "Some(-15)")]);
}

#[test]
fn guest_kill_a_spinning_child() {
    let (_, r) = scenario("kill-spin");
    check(&r, &[("kill", "ok"), ("join", "ok"), ("is-alive", "false"), ("exitcode", "Some(-9)")]);
}

#[test]
fn guest_terminate_a_spinning_child() {
    let (_, r) = scenario("terminate-spin");
    check(&r, &[("terminate", "ok"), ("join", "ok"), ("exitcode", "Some(-15)")]);
}

/// The child is blocked in `join` of its own (daemon, sleeping) child; a
/// terminate ends it there, and it never prints past the join.
#[test]
fn guest_terminate_during_a_blocking_join() {
    let (out, r) = scenario("terminate-join-blocked");
    check(
        &r,
        &[
            ("child-grandchild-start", "ok"),
            ("is-alive", "true"),
            ("terminate", "ok"),
            ("join", "ok"),
            ("exitcode", "Some(-15)"),
        ],
    );
    assert!(!r.contains_key("child-grandchild-join"), "{out:#?}");
    assert!(!r.contains_key("child-unreachable"), "{out:#?}");
}

#[test]
fn guest_signals_to_an_ended_child_are_harmless() {
    let (_, r) = scenario("terminate-ended");
    check(&r, &[("join", "ok"), ("terminate-ended", "ok"), ("kill-ended", "ok"), ("exitcode", "Some(0)")]);
}

#[test]
fn guest_exitcodes() {
    let (out, r) = scenario("exitcodes");
    check(
        &r,
        &[
            ("return", "Some(0)"),
            ("exit-0", "Some(0)"),
            ("exit-3", "Some(3)"),
            ("exit-255", "Some(255)"),
            ("panic", "Some(1)"),
            ("bad-args", "Some(1)"),
        ],
    );
    // std::process::exit on wasm32-wasip2 only tells failure from success.
    assert_ne!(r["std-exit-3"], "Some(0)");
    assert!(out.process_stderr().contains("deliberate panic"), "{out:#?}");
}

#[test]
fn guest_names() {
    let (_, r) = scenario("names");
    check(
        &r,
        &[
            ("name-1", "Process-1"),
            ("name-2", "Process-2"),
            ("name-3", "Process-3"),
            ("custom-name", "worker"),
            ("name-after-custom", "Process-5"),
            ("child-current-name", "worker"),
            ("set-name-started", "ok"),
            ("renamed", "renamed"),
        ],
    );
}

#[test]
fn guest_pids() {
    let (_, r) = scenario("pids");
    let parent = &r["parent-pid"];
    let child = &r["child-pid"];
    assert_eq!(&r["child-ppid"], parent, "the child's ppid is its parent's pid");
    assert_ne!(child, parent);
    assert_eq!(&r["child-pid-from-parent"], child, "the parent sees the pid the child has");
    assert_eq!(r["pid-after-join"], format!("Some({child})"));
    check(&r, &[("pids-differ", "true")]);
}

#[test]
fn guest_join_timeout_returns_with_the_child_alive() {
    let (_, r) = scenario("join-timeout");
    check(
        &r,
        &[
            ("join-timeout", "ok"),
            ("is-alive", "true"),
            ("exitcode", "None"),
            ("terminate", "ok"),
            ("join", "ok"),
            ("exitcode-after-terminate", "Some(-15)"),
            ("join-timeout-ended", "ok"),
            ("exitcode-ended", "Some(0)"),
        ],
    );
}

#[test]
fn guest_unknown_entry() {
    let (_, r) = scenario("unknown-entry");
    check(&r, &[("unknown-entry", "UnknownEntry"), ("unknown-entry-name", "no-such-entry"), ("is-alive", "false")]);
}

#[test]
fn guest_cpu_count() {
    let (_, r) = scenario("cpu-count");
    assert_eq!(r["cpu-count"], host::cpu_count().to_string());
}

#[test]
fn guest_isolation() {
    let (_, r) = scenario("isolation");
    check(
        &r,
        &[
            ("child-a-before", "257"),
            ("child-a", "200"),
            ("child-list", "[2]"),
            ("parent-a", "257"),
            ("parent-list", "[1]"),
        ],
    );
}

#[test]
fn guest_many_children() {
    let out = run(&[s(&guest("children")), "--", "spawn-many", "50"]);
    out.assert_status(0);
    check(&out.report(), &[("spawned", "50")]);
    let out = run(&[s(&guest("children")), "--", "spawn-serial", "50"]);
    out.assert_status(0);
    check(&out.report(), &[("spawned", "50")]);
}

/// Children's output reaches the host's stdout, labelled with the parent's
/// and the child's names when several processes run.
#[test]
fn guest_children_output_is_labelled() {
    let out = run(&["--count", "2", s(&guest("seed-hello"))]);
    out.assert_status(0);
    for k in 1..=2 {
        let lines = out.stdout_lines();
        assert!(lines.contains(&format!("Process-{k}: over").as_str()), "{out:#?}");
        assert!(lines.contains(&format!("Process-{k}/Process-1: this is sub process").as_str()), "{out:#?}");
    }
}

/// Seed 003, `os.fork()`: on the native backend the child prints its line,
/// then the parent (which joined it) its own; the pid the parent got is the
/// child's, the child's parent is the parent; each side sees only its own
/// change of what both had before the fork. On the thread backend the fork
/// fails cleanly, naming the backend that can.
#[test]
fn seed_fork() {
    let out = run(&[s(&guest("seed-fork"))]);
    if is_thread_backend() {
        out.assert_status(1);
        assert!(out.stdout.is_empty(), "{out:#?}");
        let stderr = out.process_stderr();
        assert!(stderr.contains("fork failed: Unsupported"), "{out:#?}");
        assert!(stderr.contains("--backend native"), "{out:#?}");
        return;
    }
    out.assert_status(0);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 2, "{out:#?}");
    let (child, parent) = (lines[0], lines[1]);
    assert!(child.starts_with("子进程 "), "{out:#?}");
    assert!(parent.starts_with("父进程 "), "{out:#?}");
    let parent_pid = number_after(parent, "pid=");
    assert_eq!(parent_pid, out.summaries()[0].pid);
    assert_eq!(number_after(child, "pid="), number_after(parent, "child="), "{out:#?}");
    assert_eq!(number_after(child, "ppid="), parent_pid, "{out:#?}");
    assert_ne!(number_after(child, "pid="), parent_pid);
    assert!(parent.contains(" exitcode=0 "), "{out:#?}");
    assert!(child.ends_with(r#"count=11 a=200 list=["lili", "duijie"]"#), "{out:#?}");
    assert!(parent.ends_with(r#"count=9 a=257 list=["lili"]"#), "{out:#?}");
}
