//! The sandbox and the limits: nothing is granted by default, `--env` and
//! `--dir` grant one item each; memory, fuel and stack exhaustion end only the
//! process at fault (exitcode 1, a message naming the cause), and the host and
//! the other processes carry on without losing output.

mod common;

use common::*;
use host::Stdio;

/// Lines of the `env-dir` program that are environment variables.
fn env_lines(out: &Output) -> Vec<&str> {
    out.stdout_lines()
        .into_iter()
        .filter(|l| {
            !l.starts_with("entry: ")
                && !l.starts_with("no access: ")
                && !l.starts_with("file: ")
                && !l.starts_with("no file: ")
        })
        .collect()
}

#[test]
fn no_environment_variables_by_default() {
    // Even a variable in the host's own environment stays outside.
    let out = host_with(&["run", "--backend", backend_name(), s(&guest("env-dir"))], &[("MP_TEST_SECRET", "leaked")]);
    out.assert_status(0);
    assert!(env_lines(&out).is_empty(), "no variable may be visible: {out:#?}");
    assert!(!out.stdout.contains("leaked"));
}

#[test]
fn env_grants_exactly_the_variables_given() {
    let out = host_with(
        &[
            "run",
            "--backend",
            backend_name(),
            "--env",
            "GREETING=hi there",
            "--env",
            "EMPTY=",
            "--env",
            "EQ=a=b",
            s(&guest("env-dir")),
        ],
        &[("MP_TEST_SECRET", "leaked")],
    );
    out.assert_status(0);
    let mut vars = env_lines(&out);
    vars.sort();
    assert_eq!(vars, vec!["EMPTY=", "EQ=a=b", "GREETING=hi there"], "{out:#?}");
}

#[test]
fn no_directories_by_default() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "secret.txt", "top secret");
    let path = dir.path().to_str().unwrap().to_string();
    let file = format!("{path}/secret.txt");
    let out = run(&[s(&guest("env-dir")), "--", &path, &file]);
    out.assert_status(0);
    let lines = out.stdout_lines();
    assert!(lines.iter().any(|l| l.starts_with("no access: ")), "{out:#?}");
    assert!(lines.iter().any(|l| l.starts_with("no file: ")), "{out:#?}");
    assert!(!out.stdout.contains("top secret"));
    assert!(!lines.iter().any(|l| l.starts_with("entry: ")));
}

#[test]
fn dir_grants_a_directory_under_a_guest_path() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "greeting.txt", "hello from the host\n");
    write_file(dir.path(), "other.txt", "x");
    let grant = format!("{}::/data", dir.path().display());
    let out = run(&["--dir", &grant, s(&guest("env-dir")), "--", "/data", "/data/greeting.txt"]);
    out.assert_status(0);
    let lines = out.stdout_lines();
    assert_eq!(lines, vec!["entry: greeting.txt", "entry: other.txt", "file: hello from the host"], "{out:#?}");
}

#[test]
fn dir_grants_a_directory_at_its_own_path() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "a.txt", "A");
    let path = dir.path().to_str().unwrap().to_string();
    let out = run(&["--dir", &path, s(&guest("env-dir")), "--", &path, &format!("{path}/a.txt")]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines(), vec!["entry: a.txt", "file: A"], "{out:#?}");
}

#[test]
fn a_grant_covers_only_its_directory() {
    // parent/b.txt sits right next to the granted parent/granted.
    let parent = tempfile::tempdir().unwrap();
    let granted = parent.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    write_file(parent.path(), "b.txt", "B");
    let grant = format!("{}::/data", granted.display());
    let parent_path = parent.path().to_str().unwrap().to_string();
    let out = run(&["--dir", &grant, s(&guest("env-dir")), "--", &parent_path, "/data/../b.txt"]);
    out.assert_status(0);
    let lines = out.stdout_lines();
    assert!(lines.iter().any(|l| l.starts_with("no access: ")), "{out:#?}");
    assert!(lines.iter().any(|l| l.starts_with("no file: ")), "{out:#?}");
    assert!(!out.stdout.contains("file: B"), "{out:#?}");
}

#[test]
fn out_of_memory_fails_the_process_and_names_the_limit() {
    let out = run(&["--max-memory", "64MiB", s(&guest("oom"))]);
    out.assert_status(1);
    assert!(out.stdout_lines().contains(&"allocated 16 MiB"), "output before the failure is kept: {out:#?}");
    let stderr = out.process_stderr();
    assert!(stderr.contains("64MiB"), "the message names the limit: {out:#?}");
    assert!(stderr.to_lowercase().contains("memory"), "{out:#?}");
    assert_eq!(out.summaries()[0].exitcode, 1);
}

#[test]
fn out_of_memory_in_one_process_spares_the_others() {
    let out = run(&["--count", "2", "--max-memory", "32MiB", s(&guest("oom"))]);
    out.assert_status(1);
    let summaries = out.summaries();
    assert_eq!(summaries.len(), 2);
    assert!(summaries.iter().all(|s| s.exitcode == 1));
    assert_eq!(out.process_stderr().matches("32MiB").count(), 2, "{out:#?}");
}

#[test]
fn a_program_within_its_memory_limit_runs() {
    run(&["--max-memory", "64MiB", s(&guest("hello"))]).assert_status(0);
}

#[test]
fn out_of_fuel_fails_the_process() {
    let out = run(&["--fuel", "1000000", s(&guest("spin"))]);
    out.assert_status(1);
    assert_eq!(out.stdout_lines(), vec!["spinning"], "{out:#?}");
    assert!(out.process_stderr().to_lowercase().contains("fuel"), "{out:#?}");
    assert_eq!(out.summaries()[0].exitcode, 1);
}

#[test]
fn enough_fuel_changes_nothing() {
    run(&["--fuel", "1000000000", s(&guest("hello"))]).assert_status(0);
}

#[test]
fn stack_overflow_fails_the_process() {
    let out = run(&[s(&guest("stack-overflow"))]);
    out.assert_status(1);
    assert_eq!(out.stdout_lines(), vec!["recursing"], "{out:#?}");
    assert!(out.process_stderr().contains("stack overflow"), "{out:#?}");
}

#[test]
fn trap_fails_the_process_with_a_message() {
    let out = run(&[s(&guest("trap"))]);
    out.assert_status(1);
    let stderr = out.process_stderr();
    assert!(stderr.contains("deliberate panic"), "{out:#?}");
    assert!(stderr.contains("error:"), "the host says why the process ended: {out:#?}");
}

/// Library: a process that exceeds its memory fails alone; another process of
/// the same host runs to its end with all its output.
#[test]
fn library_limits_fail_only_the_process_at_fault() {
    let host = host();
    let oom = host.load(guest("oom")).unwrap();
    let lines = host.load(guest("lines")).unwrap();
    let oom_out = host::Capture::new();
    let oom_err = host::Capture::new();
    let good_out = host::Capture::new();
    let bad = oom
        .command()
        .max_memory(64 << 20)
        .stdout(Stdio::capture(&oom_out))
        .stderr(Stdio::capture(&oom_err))
        .spawn()
        .unwrap();
    let good = lines.command().arg("500").stdout(Stdio::capture(&good_out)).stderr(Stdio::null()).spawn().unwrap();
    assert_eq!(join(&bad).code(), 1);
    assert_eq!(join(&good).code(), 0);
    let failure = bad.failure().expect("a failure reason");
    assert!(failure.contains("64MiB"), "{failure}");
    assert!(oom_err.text().contains("64MiB"), "the reason also goes to the process's stderr");
    assert!(oom_out.text().contains("allocated 16 MiB"));
    assert_eq!(good_out.text().lines().count(), 500);
    assert!(good.failure().is_none());
}

#[test]
fn library_fuel_and_stack_overflow() {
    let host = fuel_host();
    let spin = host.load(guest("spin")).unwrap();
    let p = spin.command().fuel(1_000_000).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    assert_eq!(join(&p).code(), 1);
    assert!(p.failure().unwrap().to_lowercase().contains("fuel"));

    let deep = host.load(guest("stack-overflow")).unwrap();
    let p = deep.command().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    assert_eq!(join(&p).code(), 1);
    assert!(p.failure().unwrap().contains("stack overflow"), "{:?}", p.failure());
}

#[test]
fn library_timeout_terminates() {
    let host = host();
    let sleep = host.load(guest("sleep")).unwrap();
    let out = host::Capture::new();
    let p = sleep
        .command()
        .arg("3600")
        .timeout(std::time::Duration::from_millis(200))
        .stdout(Stdio::capture(&out))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(join(&p).code(), -15);
    assert_eq!(out.text(), "sleeping\n");
}

/// No network by default, and none can be granted: a guest can neither
/// connect to a listener on the host's loopback, nor listen, nor resolve.
#[test]
fn no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = run(&[s(&guest("net")), "--", &port]);
    let lines = out.stdout_lines();
    for what in ["connect", "bind", "lookup"] {
        let line = lines.iter().find(|l| l.starts_with(&format!("{what}: "))).unwrap_or_else(|| panic!("{out:#?}"));
        assert_ne!(*line, format!("{what}: ok"), "{out:#?}");
    }
    assert!(listener.accept().is_err(), "the guest reached the host's listener");
}

/// A symbolic link inside a granted directory leads nowhere outside it:
/// neither to a file nor to a directory beside the grant.
#[test]
fn a_symlink_out_of_a_granted_dir_leads_nowhere() {
    let parent = tempfile::tempdir().unwrap();
    let granted = parent.path().join("granted");
    let outside = parent.path().join("outside");
    std::fs::create_dir(&granted).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let secret = write_file(&outside, "secret.txt", "top secret");
    std::os::unix::fs::symlink(&secret, granted.join("file")).unwrap();
    std::os::unix::fs::symlink(&outside, granted.join("dir")).unwrap();
    std::os::unix::fs::symlink("../outside", granted.join("relative")).unwrap();
    let grant = format!("{}::/data", granted.display());
    for (dir, file) in [("/data/dir", "/data/file"), ("/data/relative", "/data/relative/secret.txt")] {
        let out = run(&["--dir", &grant, s(&guest("env-dir")), "--", dir, file]);
        out.assert_status(0);
        let lines = out.stdout_lines();
        assert!(lines.iter().any(|l| l.starts_with("no access: ")), "{out:#?}");
        assert!(lines.iter().any(|l| l.starts_with("no file: ")), "{out:#?}");
        assert!(!out.stdout.contains("top secret") && !out.stdout.contains("secret.txt"), "{out:#?}");
    }
}

/// The host's temp dir granted to a guest that removes all it finds there:
/// nothing of the host's is among it (the native backend serves shared
/// objects on each worker's channel, no file), and shared objects between
/// its processes still work.
#[test]
fn a_granted_temp_dir_holds_nothing_of_the_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let grant = format!("{}::/tmp", tmp.path().display());
    let out = host_with(
        &["run", "--backend", backend_name(), "--dir", &grant, s(&guest("hostile")), "--", "wreck", "/tmp"],
        &[("TMPDIR", s(tmp.path()))],
    );
    out.assert_status(0);
    assert!(!out.stdout.contains("removed"), "the guest reached something of the host's: {out:#?}");
    assert_eq!(out.report().get("got").map(String::as_str), Some("from the child"), "{out:#?}");
}

/// A core module's further memories and its tables count with its first
/// memory against `--max-memory`: two memories each under the cap but
/// together past it fail the process, and so does a table grown past it
/// (a refused growth, -1, exits 3; a trap 1; never a success: it took
/// 16 GiB of the host).
#[test]
fn tables_and_further_memories_count_against_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let memories = write_file(
        dir.path(),
        "memories.wat",
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (memory $second 1)
  (func (export "_start")
    (if (i32.lt_s (memory.grow $second (i32.const 768)) (i32.const 0)) (then (call $exit (i32.const 3))))
    (if (i32.lt_s (memory.grow (i32.const 768)) (i32.const 0)) (then (call $exit (i32.const 3))))
    (call $exit (i32.const 0))))"#,
    );
    // (A layout that allows one memory per module refuses it at load: 2.)
    let out = run(&["--max-memory", "64MiB", s(&memories)]);
    assert!(matches!(out.status, Some(1..=3)), "two memories of 48 MiB each under a 64MiB cap: {out:#?}");
    let table = write_file(
        dir.path(),
        "table.wat",
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "_start")
    (if (i32.lt_s (table.grow $t (ref.null func) (i32.const 0x7fffffff)) (i32.const 0)) (then (call $exit (i32.const 3))))
    (call $exit (i32.const 0))))"#,
    );
    for extra in [&[][..], &["--max-memory", "64MiB"][..]] {
        let mut args = extra.to_vec();
        args.push(s(&table));
        let out = run(&args);
        assert!(matches!(out.status, Some(1) | Some(3)), "a table of 2^31 elements: {out:#?}");
    }
}

/// Children created and never started hold their arguments in the host:
/// dropped, they give the room back (2 GiB of arguments come and go under
/// a 64MiB cap); kept, they are bounded by the creating process's memory
/// cap, which ends it with a message naming the limit. A process name or an
/// entry name past 4096 bytes is refused the same way.
#[test]
fn unstarted_children_are_bounded_and_dropped_ones_freed() {
    let hostile = guest("hostile");
    let mib = (1 << 20).to_string();
    let out = run(&["--max-memory", "64MiB", s(&hostile), "--", "unstarted", "2048", &mib, "drop"]);
    out.assert_status(0);
    assert!(out.stdout_lines().contains(&"created: 2048"), "{out:#?}");

    let out = run(&["--max-memory", "64MiB", s(&hostile), "--", "unstarted", "2048", &mib, "keep"]);
    out.assert_status(1);
    assert!(!out.stdout_lines().contains(&"created: 2048"), "{out:#?}");
    assert!(out.process_stderr().contains("--max-memory"), "{out:#?}");

    let long_name = "n".repeat(5000);
    let out = run(&[s(&hostile), "--", "rename", &long_name]);
    out.assert_status(1);
    assert!(out.process_stderr().contains("4096"), "{out:#?}");
    assert!(!out.stdout.contains("renamed"), "{out:#?}");

    // An entry's name too (it is held with the child until its start).
    let out = run(&[s(&hostile), "--", "long-entry", "100000"]);
    out.assert_status(1);
    assert!(out.process_stderr().contains("an entry name of 100000 bytes"), "{out:#?}");
    let out = run(&[s(&hostile), "--", "long-entry", "40"]);
    out.assert_status(0);
    assert!(out.stdout_lines().contains(&"created: Process-1"), "{out:#?}");
}

/// Pool tasks queued and not yet answered hold their arguments against the
/// submitter's memory cap, their result handles dropped or not: past it
/// `apply_async` traps and `map` returns an error, both naming
/// `--max-memory`; tasks answered no longer count.
#[test]
fn queued_pool_tasks_are_bounded_and_answered_ones_freed() {
    let hostile = guest("hostile");
    let mib = (1 << 20).to_string();
    let out = run(&["--max-memory", "64MiB", s(&hostile), "--", "queued", "200", &mib, "wait"]);
    out.assert_status(0);
    assert!(out.stdout_lines().contains(&"queued: 200"), "{out:#?}");

    let out = run(&["--max-memory", "64MiB", s(&hostile), "--", "queued", "200", &mib, "drop"]);
    out.assert_status(1);
    assert!(out.stdout_lines().contains(&"queued: 60"), "{out:#?}");
    assert!(!out.stdout_lines().contains(&"queued: 70"), "{out:#?}");
    assert!(out.process_stderr().contains("cannot queue the task"), "{out:#?}");
    assert!(out.process_stderr().contains("--max-memory"), "{out:#?}");

    let out = run(&["--max-memory", "64MiB", s(&hostile), "--", "queued", "60", &mib, "map"]);
    out.assert_status(0);
    let refused = out.report().get("map refused").cloned().unwrap_or_else(|| panic!("{out:#?}"));
    assert!(refused.contains("cannot queue the task") && refused.contains("--max-memory"), "{out:#?}");
}

/// The results of a guest's map that came and are not yet taken count
/// against its memory cap with the rest it has the host hold: past it the
/// results fail with an error naming `--max-memory`, which the guest
/// takes; taken, they give their room back.
#[test]
fn untaken_map_results_of_a_guest_are_bounded_and_taken_ones_freed() {
    let mib = (1 << 20).to_string();
    let out = run(&["--max-memory", "64MiB", s(&guest("hostile")), "--", "results", "100", &mib]);
    out.assert_status(0);
    let report = out.report();
    let count = |key: &str| -> usize { report.get(key).unwrap_or_else(|| panic!("{out:#?}")).parse().unwrap() };
    assert!((1..64).contains(&count("taken")), "{out:#?}");
    assert_eq!(count("taken") + count("failed"), 100, "{out:#?}");
    assert!(report["error"].contains("--max-memory"), "{out:#?}");
    assert_eq!(count("then taken"), 10, "{out:#?}");
}

/// The resource handles a guest holds (entries of its table in the host)
/// are bounded by its memory cap: past it the process fails with a message
/// naming `--max-memory`, what it printed before intact; under it, they fit.
#[test]
fn resource_handles_are_bounded_by_the_memory_cap() {
    let hostile = guest("hostile");
    let out = run(&["--max-memory", "16MiB", s(&hostile), "--", "handles", "1000000"]);
    out.assert_status(1);
    assert!(!out.stdout.contains("kept: 100000"), "{out:#?}");
    assert!(out.process_stderr().contains("too many handles"), "{out:#?}");
    assert!(out.process_stderr().contains("--max-memory"), "{out:#?}");
    assert_eq!(out.summaries().len(), 1, "{out:#?}");

    let out = run(&[s(&hostile), "--", "handles", "50000"]);
    out.assert_status(0);
    assert!(out.stdout_lines().contains(&"kept: 50000"), "{out:#?}");
}

/// A handle a guest was never given (a number it made up, or its own
/// lock's used as a queue's) is refused: the process fails alone, with one
/// error line, its earlier output intact, and the host reports it.
#[test]
fn a_forged_resource_handle_is_refused() {
    for handle in ["1000000", "0"] {
        let out = run(&["--count", "2", s(&guest("hostile")), "--", "forge", handle]);
        out.assert_status(1);
        let lines = out.stdout_lines();
        for name in ["Process-1", "Process-2"] {
            assert!(lines.contains(&format!("{name}: forging: {handle}").as_str()), "{out:#?}");
        }
        assert!(!out.stdout.contains("forged qsize"), "{out:#?}");
        assert_eq!(out.summaries().len(), 2, "{out:#?}");
        assert!(out.summaries().iter().all(|summary| summary.exitcode == 1), "{out:#?}");
    }
}

/// `--timeout` ends a process blocked in any host call, even one given the
/// longest timeout a guest can ask for.
#[test]
fn timeout_ends_every_kind_of_blocking_call() {
    let hostile = guest("hostile");
    for call in ["join", "get", "acquire", "wait", "recv", "barrier", "pool-get"] {
        let out = run(&["--timeout", "500ms", s(&hostile), "--", "forever", call]);
        out.assert_status(143);
        assert_eq!(out.stdout_lines(), vec![format!("blocking in: {call}")], "{out:#?}");
    }
}
