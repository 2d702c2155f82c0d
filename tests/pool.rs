//! The pool (Python's `multiprocessing.Pool`) on the backend under test:
//! the library API, the guest SDK, `host map` and the seed example. Order
//! and completeness only, never timing.

mod common;

use common::{guest, host, host_with, run, s};
use host::{Pool, TaskError};
use std::collections::HashSet;
use std::time::Duration;

fn pool_tasks(host: &host::Host) -> host::Program {
    host.load(guest("pool-tasks")).expect("pool-tasks loads")
}

#[test]
fn map_keeps_input_order() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 2).unwrap();
    let squares: Vec<i64> = pool.map("square", 1..=1000).unwrap();
    assert_eq!(squares, (1..=1000).map(|x| x * x).collect::<Vec<i64>>());
    let chunked: Vec<i64> = pool.map_chunked("square", [5, 6, 7], 1).unwrap();
    assert_eq!(chunked, vec![25, 36, 49]);
    let ordered: Vec<i64> = pool.imap("square", 1..=50, 7).unwrap().map(Result::unwrap).collect();
    assert_eq!(ordered, (1..=50).map(|x| x * x).collect::<Vec<i64>>());
    let empty: Vec<i64> = pool.map("square", Vec::<i64>::new()).unwrap();
    assert!(empty.is_empty());
}

/// An argument whose encoding fails when it is negative.
struct NonNegative(i64);

impl serde::Serialize for NonNegative {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            n if n < 0 => Err(serde::ser::Error::custom(format!("{n} is negative"))),
            n => serializer.serialize_i64(n),
        }
    }
}

/// Chunks are queued as they are encoded: an item that cannot be, late in
/// the items, fails the map, and the chunks queued before it leave the pool
/// as it was.
#[test]
fn an_item_that_does_not_encode_fails_the_map_and_the_pool_carries_on() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 2).unwrap();
    let items = || (1..=100).chain([-3]).chain(1..=20).map(NonNegative);
    let failed = pool.map::<_, i64, _>("square", items()).unwrap_err();
    assert!(matches!(&failed, TaskError::Serde(why) if why.contains("-3 is negative")), "{failed}");
    assert!(matches!(pool.imap::<_, i64, _>("square", items(), 7), Err(TaskError::Serde(_))));
    let squares: Vec<i64> = pool.map("square", 1..=30).unwrap();
    assert_eq!(squares, (1..=30).map(|x| x * x).collect::<Vec<i64>>());
}

#[test]
fn imap_unordered_yields_every_result() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 3).unwrap();
    let mut got: Vec<i64> = pool.imap_unordered("square", 1..=200, 3).unwrap().map(Result::unwrap).collect();
    got.sort();
    assert_eq!(got, (1..=200).map(|x| x * x).collect::<Vec<i64>>());
}

#[test]
fn apply_and_async_results() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 2).unwrap();
    assert_eq!(pool.apply::<_, i64>("square", &9).unwrap(), 81);
    let result = pool.apply_async::<_, i64>("square", &12);
    result.wait(None);
    assert!(result.ready());
    assert_eq!(result.successful(), Some(true));
    assert_eq!(result.get(Some(Duration::from_secs(60))).unwrap(), 144);
    let slow = pool.apply_async::<_, u32>("sleep_secs", &30.0);
    assert_eq!(slow.get(Some(Duration::from_millis(1))), Err(TaskError::Timeout));
    assert!(!slow.ready());
    assert_eq!(slow.successful(), None);
    let pairs: Vec<i64> = pool.starmap("square", [2, 3]).unwrap();
    assert_eq!(pairs, vec![4, 9]);
    assert!(matches!(pool.apply::<_, i64>("no_such_entry", &1), Err(TaskError::UnknownEntry(_))));
}

#[test]
fn worker_state_persists_between_tasks() {
    let host = host();
    let pool = Pool::builder(&pool_tasks(&host)).processes(1).initializer("init", &100).build().unwrap();
    let counts: Vec<u32> = (0..3).map(|_| pool.apply("count", &()).unwrap()).collect();
    assert_eq!(counts, vec![101, 102, 103]);
}

#[test]
fn errors_surface_at_get_and_the_pool_carries_on() {
    let host = host();
    let pool = Pool::builder(&pool_tasks(&host))
        .processes(2)
        .max_memory(32 << 20)
        .stderr(host::Stdio::null())
        .build()
        .unwrap();
    // An entry's error (bad arguments): the worker survives.
    match pool.apply::<_, i64>("square", &"not a number") {
        Err(TaskError::Failed(why)) => assert!(why.contains("bad arguments"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // A panic (a trap): the worker is replaced.
    let panicked = pool.apply_async::<_, ()>("fail", &"boom");
    match panicked.get(None) {
        Err(TaskError::Failed(why)) => assert!(why.contains("unreachable"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(panicked.successful(), Some(false));
    // Past the memory limit: the message names it.
    match pool.apply::<_, usize>("grow", &64) {
        Err(TaskError::Failed(why)) => assert!(why.contains("memory limit"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // Later tasks succeed.
    let squares: Vec<i64> = pool.map("square", 1..=20).unwrap();
    assert_eq!(squares.len(), 20);
    assert_eq!(pool.apply::<_, i64>("square", &4).unwrap(), 16);
    // `map` reports the first failing item.
    assert!(matches!(
        pool.map::<_, i64, _>("square", [serde_json::json!(1), serde_json::json!("x")]),
        Err(TaskError::Failed(_))
    ));
}

#[test]
fn maxtasksperchild_recycles_workers() {
    let host = host();
    let pool = Pool::builder(&pool_tasks(&host)).processes(1).maxtasksperchild(2).build().unwrap();
    let pids: Vec<u32> = (0..6).map(|_| pool.apply("whoami", &()).unwrap()).collect();
    assert_eq!(pids[0], pids[1], "{pids:?}");
    assert_ne!(pids[1], pids[2], "{pids:?}");
    assert_eq!(pids[2], pids[3], "{pids:?}");
    assert_ne!(pids[3], pids[4], "{pids:?}");
    assert_eq!(pids.iter().collect::<HashSet<_>>().len(), 3, "{pids:?}");
}

#[test]
fn terminate_ends_busy_workers_and_fails_pending_tasks() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 2).unwrap();
    let results: Vec<_> = (0..5).map(|_| pool.apply_async::<_, u32>("sleep_secs", &600.0)).collect();
    // Both workers busy: wait until the pool has its two pids.
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while pool.pids().len() < 2 {
        assert!(std::time::Instant::now() < give_up, "the pool never had its two workers: {:?}", pool.pids());
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.terminate();
    for result in &results {
        assert!(matches!(result.get(None), Err(TaskError::Failed(_))));
    }
    assert!(matches!(pool.apply::<_, i64>("square", &1), Err(TaskError::NotRunning)));
    pool.join().unwrap();
}

/// Tasks queued behind one that does not end are run by the idle worker
/// (on the native backend, given back by the busy worker they were sent
/// ahead to), as Python's workers take from one shared queue.
#[test]
fn no_task_waits_behind_a_slow_one_while_a_worker_idles() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 2).unwrap();
    let _: Vec<i64> = pool.map("square", 0..10).unwrap();
    let slow = pool.apply_async::<_, u32>("sleep_secs", &600.0);
    let quick: Vec<_> = (0..20i64).map(|i| pool.apply_async::<_, i64>("square", &i)).collect();
    for (i, result) in quick.iter().enumerate() {
        assert_eq!(result.get(Some(common::HANG)), Ok((i * i) as i64));
    }
    assert!(!slow.ready());
    pool.terminate();
    assert!(matches!(slow.get(None), Err(TaskError::Failed(_))));
}

#[test]
fn join_needs_close_or_terminate() {
    let host = host();
    let pool = Pool::new(&pool_tasks(&host), 1).unwrap();
    assert_eq!(pool.join(), Err(TaskError::StillRunning));
    let pending = pool.apply_async::<_, i64>("square", &3);
    pool.close();
    assert!(matches!(pool.apply::<_, i64>("square", &1), Err(TaskError::NotRunning)));
    pool.join().unwrap();
    assert_eq!(pending.get(None).unwrap(), 9);
    assert!(pool.pids().is_empty());
}

#[test]
fn dropping_a_pool_terminates_it() {
    let host = host();
    let pending = {
        let pool = Pool::new(&pool_tasks(&host), 1).unwrap();
        pool.apply_async::<_, u32>("sleep_secs", &600.0)
    };
    assert!(matches!(pending.get(None), Err(TaskError::Failed(_))));
}

#[test]
fn guest_pool_api() {
    let out = run(&[s(&guest("pool-tasks"))]);
    out.assert_status(0);
    let report = out.report();
    assert_eq!(report["map"], "[1, 4, 9, 16, 25, 36, 49, 64, 81, 100]");
    assert_eq!(report["map_chunked"], "[9, 16]");
    assert_eq!(report["apply"], "49");
    assert_eq!(report["apply_async"], "144 ready=true successful=Ok(true)");
    assert_eq!(report["failed"], "Failed successful=Ok(false)");
    assert_eq!(report["after failure"], "25");
    assert_eq!(report["join before close"], "Err(StillRunning)");
    assert_eq!(report["apply after close"], "Err(NotRunning)");
    assert_eq!(report["join"], "Ok(())");
    assert_eq!(report["recycled"], "true");
    assert!(out.stdout_lines().contains(&"done"), "{out:#?}");
}

#[test]
fn seed_pool_three_workers_ten_tasks() {
    let out = run(&[s(&guest("seed-pool"))]);
    out.assert_status(0);
    let tasks: Vec<&str> = out.stdout_lines().into_iter().filter(|l| l.starts_with("----pid=")).collect();
    assert_eq!(tasks.len(), 10, "{out:#?}");
    let pids: HashSet<&str> =
        tasks.iter().map(|l| l.trim_start_matches("----pid=").split(' ').next().unwrap()).collect();
    assert_eq!(pids.len(), 3, "{out:#?}");
    let mut nums: Vec<u32> =
        tasks.iter().map(|l| l.split("num=").nth(1).unwrap().trim_end_matches("---").parse().unwrap()).collect();
    nums.sort();
    assert_eq!(nums, (0..10).collect::<Vec<_>>());
    let submitted = out
        .stdout_lines()
        .iter()
        .filter(|l| l.starts_with("---") && l.ends_with("--") && !l.starts_with("----"))
        .count();
    assert_eq!(submitted, 10, "{out:#?}");
}

/// Runs `host map` of `square` with `input` on its stdin (through a file).
fn host_map(input: &str, extra: &[&str]) -> common::Output {
    host_map_entry("square", input, extra)
}

/// Runs `host map` of a `pool-tasks` entry with `input` (through a file).
fn host_map_entry(entry: &str, input: &str, extra: &[&str]) -> common::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = common::write_file(dir.path(), "input.jsonl", input);
    let program = guest("pool-tasks");
    let mut args = vec!["map", s(&program), "--entry", entry, "--backend", common::backend_name(), "--input", s(&file)];
    args.extend_from_slice(extra);
    host_with(&args, &[])
}

#[test]
fn cli_map_json_lines_in_order() {
    let input: String = (1..=500).map(|i| format!("{i}\n")).collect();
    let out = host_map(&input, &["--workers", "2", "--chunksize", "7"]);
    out.assert_status(0);
    let expected: Vec<String> = (1..=500i64).map(|i| (i * i).to_string()).collect();
    assert_eq!(out.stdout_lines(), expected);
}

#[test]
fn cli_map_malformed_line_and_failed_task() {
    let out = host_map("1\nnot json\n3\n\"x\"\n5\n", &["--workers", "2"]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 5, "{out:#?}");
    assert_eq!(lines[0], "1");
    assert!(lines[1].starts_with("{\"error\":") && lines[1].contains("line 2"), "{out:#?}");
    assert_eq!(lines[2], "9");
    assert!(lines[3].starts_with("{\"error\":") && lines[3].contains("bad arguments"), "{out:#?}");
    assert_eq!(lines[4], "25");
}

#[test]
fn cli_map_unordered_is_complete() {
    let input: String = (1..=300).map(|i| format!("{i}\n")).chain(["oops\n".to_string()]).collect();
    let out = host_map(&input, &["--workers", "3", "--chunksize", "5", "--unordered"]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 301, "{out:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("\"error\"")).count(), 1);
    let mut got: Vec<i64> = lines.iter().filter_map(|l| l.parse().ok()).collect();
    got.sort();
    assert_eq!(got, (1..=300).map(|i| i * i).collect::<Vec<i64>>());
}

#[test]
fn cli_map_memory_limit_fails_one_line_only() {
    let out = host_map_entry("grow", "1\n64\n2\n", &["--workers", "1", "--chunksize", "1", "--max-memory", "32MiB"]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert_eq!(lines[0], "1048576");
    assert!(lines[1].contains("memory limit"), "{out:#?}");
    assert_eq!(lines[2], "2097152");
}

#[test]
fn cli_map_bad_input() {
    host_map("1\n", &["--workers", "0"]).assert_bad_input();
    let out = host_with(&["map", s(&guest("pool-tasks")), "--entry", "nope", "--backend", common::backend_name()], &[]);
    out.assert_bad_input();
    let out = host_with(&["map", "/no/such/file.wasm", "--entry", "square"], &[]);
    out.assert_bad_input();
}

#[test]
fn cli_map_timeout_fails_one_task_and_replaces_its_worker() {
    let out =
        host_map_entry("sleep_secs", "0\n600\n0\n", &["--workers", "1", "--chunksize", "1", "--timeout", "300ms"]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert!(lines[1].contains("timeout"), "{out:#?}");
    assert_ne!(lines[0], lines[2], "a fresh worker (new pid) after the timeout: {out:#?}");
}

/// A result larger than one frame of the native backend's channel (and
/// than its old 16 MiB limit) arrives whole, on both backends; the pool
/// carries on.
#[test]
fn a_huge_result_arrives() {
    let host = host();
    let pool = Pool::new(&host.load(guest("pool-tasks")).unwrap(), 1).unwrap();
    let text = pool.apply::<_, String>("text", &17).unwrap();
    assert_eq!(text.len(), 17 << 20);
    assert_eq!(pool.apply::<_, i64>("square", &4).unwrap(), 16);
}

/// The results of a map that came and are not yet taken (in input order,
/// those that wait for an earlier one; here, none taken until every one
/// came) hold at most the workers' memory cap in the host: those past it
/// fail, naming the limit, and the others arrive whole. Taken, they give
/// their room back.
#[test]
fn untaken_map_results_are_bounded_and_taken_ones_freed() {
    let host = host();
    let program = host.load(guest("pool-tasks")).unwrap();
    let pool = Pool::builder(&program).processes(2).max_memory(32 << 20).build().unwrap();
    let untaken = pool.imap::<u32, String, _>("text", vec![1; 60], 1).unwrap();
    pool.close();
    pool.join().unwrap();
    let (taken, failed): (Vec<_>, Vec<_>) = untaken.partition(Result::is_ok);
    assert!((1..32).contains(&taken.len()), "{} taken", taken.len());
    assert!(taken.iter().all(|text| text.as_ref().unwrap().len() == 1 << 20));
    assert_eq!(taken.len() + failed.len(), 60);
    let TaskError::Failed(why) = failed[0].as_ref().unwrap_err() else { panic!("{:?}", failed[0]) };
    assert!(why.contains("--max-memory") && why.contains("32MiB"), "{why}");

    let pool = Pool::builder(&program).processes(2).max_memory(32 << 20).build().unwrap();
    let taken = pool.imap::<u32, String, _>("text", vec![1; 20], 1).unwrap().filter(Result::is_ok).count();
    assert_eq!(taken, 20);
}

/// Deeply nested JSON, in an input line or in a result a guest returns
/// (nested past what the host decodes, or past the guest's own stack), is
/// one error line each, never a crash of the host; the lines around them
/// are answered.
#[test]
fn cli_map_deeply_nested_json_is_one_error_line_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let deep_line = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let input = format!("{deep_line}\n2\n1025\n100000\n3\n");
    let file = common::write_file(dir.path(), "input.jsonl", &input);
    let program = guest("hostile");
    let args = [
        "map",
        s(&program),
        "--entry",
        "deep",
        "--workers",
        "1",
        "--backend",
        common::backend_name(),
        "--input",
        s(&file),
    ];
    let out = host_with(&args, &[]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 5, "{out:#?}");
    assert!(lines[0].contains("not JSON") && lines[0].contains("recursion limit"), "{out:#?}");
    assert_eq!(lines[1], "[[null]]");
    assert!(lines[2].contains("depth limit exceeded"), "{out:#?}");
    assert!(lines[3].contains("stack overflow"), "{out:#?}");
    assert_eq!(lines[4], "[[[null]]]");
}

#[test]
fn cli_map_line_that_is_not_utf8_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.jsonl");
    std::fs::write(&file, b"1\n\"\xff\xfe\"\n3\n").unwrap();
    let program = guest("pool-tasks");
    let args = ["map", s(&program), "--entry", "square", "--backend", common::backend_name(), "--input", s(&file)];
    let out = host_with(&args, &[]);
    out.assert_status(1);
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert_eq!(lines[0], "1");
    assert!(lines[1].starts_with("{\"error\":") && lines[1].contains("line 2"), "{out:#?}");
    assert_eq!(lines[2], "9");
}

/// A pool of more workers than the run may have is refused at once, with
/// the process-limit message, never sized by the count: from a guest
/// (`Pool(4_000_000_000)`), from `host map --workers` and from the library.
#[test]
fn a_pool_larger_than_the_cap_is_refused_at_once() {
    let out = run(&["--max-processes", "16", s(&guest("hostile")), "--", "pool-huge", "4000000000"]);
    out.assert_status(0);
    let refused = out.report().get("pool refused").cloned().unwrap_or_else(|| panic!("{out:#?}"));
    assert!(refused.contains("a pool of 4000000000 workers") && refused.contains("--max-processes"), "{out:#?}");
    assert!(!refused.contains("already has"), "{out:#?}");

    let out = host_map("1\n", &["--workers", "4000000000"]);
    out.assert_bad_input();
    assert!(out.stderr.contains("--max-processes"), "{out:#?}");

    let host = host();
    let program = pool_tasks(&host);
    let Err(error) = Pool::builder(&program).processes(usize::MAX).build() else {
        panic!("a pool of usize::MAX workers was built");
    };
    assert!(
        error.to_string().contains("workers is more than") && error.to_string().contains("--max-processes"),
        "{error}"
    );
}
