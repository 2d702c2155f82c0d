//! The rest of Python's `multiprocessing` (issue 12), on the backend this
//! build selects: the manager's dict, list and namespace (atomic updates,
//! a holder that ends midway, the budget, the embedder's mirror), shared
//! objects for pool workers, waiting on many, the pool's iterators and
//! callbacks, and the small ones.
//!
//! The scenarios run in the `mp-extras` program and print `key: value`
//! lines. Only outcomes and order are checked, never how long anything took.

mod common;

use common::*;
use std::collections::HashMap;

/// Runs a scenario with extra host options before the program; it must exit 0.
fn scenario_with(options: &[&str], name: &str) -> HashMap<String, String> {
    let program = guest("mp-extras");
    let mut args: Vec<&str> = options.to_vec();
    args.extend([s(&program), "--", name]);
    let out = run(&args);
    out.assert_status(0);
    out.report()
}

fn scenario(name: &str) -> HashMap<String, String> {
    scenario_with(&[], name)
}

#[test]
fn manager_counter_example() {
    let out = run(&[s(&guest("manager-counter"))]);
    out.assert_status(0);
    assert_eq!(out.stdout_lines(), ["4000"], "{out:#?}");
}

#[test]
fn manager_dict_list_namespace() {
    check(
        &scenario("manager"),
        &[
            ("keys", r#"Ok(["b", "a", "c"])"#),
            ("items", r#"Ok([("b", 20), ("a", 1), ("c", 3)])"#),
            ("get a", "Ok(Some(1))"),
            ("get missing", "Ok(None)"),
            ("contains c", "Ok(true)"),
            ("remove c", "Ok(Some(3))"),
            ("remove c again", "Ok(None)"),
            ("len", "Ok(2)"),
            ("update new", "Ok(5)"),
            ("list get 5", r#"Err(Invalid("list index 5 out of range"))"#),
            ("child exitcode", "Some(0)"),
            ("list", r#"Ok(["replaced", "from child"])"#),
            ("list len", "Ok(2)"),
            ("ns x", "Ok(Some(42))"),
            ("ns name", r#"Ok(Some("text"))"#),
            ("ns child", "Ok(Some([1, 2, 3]))"),
            ("ns missing", "Ok(None)"),
            ("ns names", r#"Ok(["x", "name", "child"])"#),
            ("dict n", "Ok(Some(15))"),
            // Terminated inside its update: nothing stored, nobody blocked.
            ("after stuck updater", "Ok(Some(15))"),
            ("update after", "Ok(16)"),
        ],
    );
}

/// What a container stores is charged to the process's budget; replacing
/// or removing a value gives its charge back.
#[test]
fn manager_values_are_bounded_by_the_budget() {
    check(
        &scenario_with(&["--max-shared", "100000"], "manager-budget"),
        &[
            ("first big", "Ok(())"),
            ("second big", "Err(true)"),
            ("replace big", "Ok(())"),
            ("remove", "Ok(Some(60000))"),
            ("after remove", "Ok(())"),
        ],
    );
}

/// The embedder's manager: a dict handed to four processes of the
/// `manager-counter` program, each adding 1,000 under atomic updates, while
/// the embedder adds its own; a list and a namespace used from the library.
#[test]
fn embedder_manager() {
    let host = host();
    let program = host.load(guest("manager-counter")).unwrap();
    let manager = host::sync::Manager::new(&host).unwrap();
    let counts = manager.dict::<String, u64>().unwrap();
    let children: Vec<_> = (0..4).map(|_| program.command().entry("adder").input(&counts).spawn().unwrap()).collect();
    for _ in 0..500 {
        counts.update("count".to_string(), |n| n.unwrap_or(0) + 1).unwrap();
    }
    for child in &children {
        assert_eq!(join(child).code(), 0);
    }
    assert_eq!(counts.get(&"count".to_string()).unwrap(), Some(4500));
    assert_eq!(counts.keys().unwrap(), ["count"]);
    assert!(counts.contains_key(&"count".to_string()).unwrap());
    assert_eq!(counts.remove(&"count".to_string()).unwrap(), Some(4500));
    assert!(counts.is_empty().unwrap());

    let list = manager.list::<u32>().unwrap();
    list.push(&1).unwrap();
    list.push(&2).unwrap();
    list.set(0, &7).unwrap();
    assert_eq!(list.to_vec().unwrap(), [7, 2]);
    assert_eq!(list.get(1).unwrap(), 2);
    assert!(list.get(2).is_err());
    let ns = manager.namespace().unwrap();
    ns.set("x", &[1, 2]).unwrap();
    assert_eq!(ns.get::<Vec<u32>>("x").unwrap(), Some(vec![1, 2]));
    assert_eq!(ns.get::<u32>("y").unwrap(), None);
    assert_eq!(ns.names().unwrap(), ["x"]);
    // A panic inside an update leaves the dict as it was, and usable.
    counts.set("k".to_string(), &1).unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        counts.update("k".to_string(), |_| panic!("inside the update"))
    }));
    assert!(panicked.is_err());
    assert_eq!(counts.update("k".to_string(), |n| n.unwrap_or(0) + 1).unwrap(), 2);
}

/// Shared objects in a pool's initializer arguments reach every worker,
/// replacements included, and the pool keeps them alive though the parent
/// dropped its handle; in a task's arguments a handle stays refused.
#[test]
fn shared_objects_for_pool_workers() {
    check(
        &scenario("pool-init"),
        &[
            ("greetings", r#"["hello", "hello", "hello", "hello", "hello", "hello"]"#),
            ("put", r#"["hello 1", "hello 2", "hello 3", "hello 4", "hello 5", "hello 6"]"#),
            ("sum", "Ok(Some(21))"),
            (
                "handle in a task",
                r#"Err("cannot serialize a task's argument: Queue objects should only be shared between processes through inheritance")"#,
            ),
        ],
    );
}

/// The same from the host library: the embedder's queue, namespace and
/// dict in the initializer's arguments of its pool.
#[test]
fn embedder_pool_initializer_with_shared_objects() {
    let host = host();
    let program = host.load(guest("mp-extras")).unwrap();
    let queue = host::sync::Queue::new(&host, 0).unwrap();
    let manager = host::sync::Manager::new(&host).unwrap();
    let dict = manager.dict::<u32, u32>().unwrap();
    let pool = {
        let ns = manager.namespace().unwrap();
        ns.set("greeting", "hi").unwrap();
        host::Pool::builder(&program)
            .processes(2)
            .maxtasksperchild(1)
            .initializer("init", &(&queue, &ns, &dict))
            .build()
            .unwrap()
    };
    let greetings: Vec<String> = pool.map("task", 1..=5u32).unwrap();
    assert_eq!(greetings, ["hi"; 5]);
    let mut put: Vec<String> = (0..5).map(|_| queue.get().unwrap()).collect();
    put.sort();
    assert_eq!(put, ["hi 1", "hi 2", "hi 3", "hi 4", "hi 5"]);
    assert_eq!(dict.get(&0).unwrap(), Some(15));
    pool.close();
    pool.join().unwrap();
}

/// Three children sleeping 3, 1 and 2 s: `mp::wait` on their sentinels
/// reports each as it ends, the 1 s child first.
#[test]
fn wait_first_example() {
    let out = run(&[s(&guest("wait-first"))]);
    out.assert_status(0);
    assert_eq!(
        out.stdout_lines(),
        ["ended: sleeper-1s after 1 s", "ended: sleeper-2s after 2 s", "ended: sleeper-3s after 3 s"],
        "{out:#?}"
    );
}

/// `mp::wait` over connections and processes: none at the timeout, the
/// ready ones (data or end-of-file, an ended process) as soon as one is,
/// a process not started refused, and a process blocked in it terminated.
#[test]
fn wait_on_processes_and_connections() {
    check(
        &scenario("wait"),
        &[
            ("nothing, at the timeout", "Ok([])"),
            ("nothing, no wait", "Ok([])"),
            ("one with data", "Ok([1])"),
            ("both", "Ok([0, 1])"),
            ("at end of file", "Ok([1])"),
            ("not started", "true"),
            ("first of three", "Ok([2])"),
            ("then the connection", "Ok([1])"),
            ("slow at the timeout", "Ok([])"),
            ("slow after terminate", "Ok([0])"),
            ("blocked in wait, terminated", "Some(-15)"),
        ],
    );
}

/// The SDK pool's `imap` (in order though the first items take longest),
/// `imap_unordered` (as they arrive), `map_async`, `starmap_async`, and
/// `apply_async`'s callbacks, run at the guest's next call into the pool.
#[test]
fn pool_iterators_async_maps_and_callbacks() {
    check(
        &scenario("pool-more"),
        &[
            ("imap", "[Ok(1), Ok(4), Ok(9), Ok(16), Ok(25)]"),
            ("imap_unordered", "[Ok(4), Ok(1)]"),
            ("imap_unordered all", "[1, 4, 9, 16, 25]"),
            ("imap with a failure", "[Ok(1), Ok(2), Err(true), Ok(4)]"),
            ("map_async", "Ok([1, 4, 9, 16])"),
            ("map_async ready", "true"),
            ("map_async successful", "Ok(true)"),
            ("starmap_async", "Ok([3, 7])"),
            ("map_async failing", "Err(true)"),
            ("map_async failing successful", "Ok(false)"),
            ("before the next call", "[]"),
            ("after the next call", r#"["callback 49"]"#),
            ("failed get", "true"),
            ("after get", r#"["callback 49", "error true"]"#),
            ("imap after close", "[Err(NotRunning)]"),
        ],
    );
}

/// The host library's `apply_async` callbacks: the result to `callback`,
/// a failure or a refusal to `error_callback`, each before `get` returns.
#[test]
fn embedder_apply_async_callbacks() {
    let host = host();
    let program = host.load(guest("mp-extras")).unwrap();
    let pool = host::Pool::new(&program, 2).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let (ok, failed) = (sender.clone(), sender.clone());
    let result = pool.apply_async_with_callbacks::<_, i64>(
        "slow_square",
        &(6, 0),
        move |r| ok.send(format!("callback {r}")).unwrap(),
        move |e| failed.send(format!("error {e}")).unwrap(),
    );
    assert_eq!(result.get(None).unwrap(), 36);
    assert_eq!(receiver.try_recv().unwrap(), "callback 36");
    let (ok, failed) = (sender.clone(), sender.clone());
    let result = pool.apply_async_with_callbacks::<_, i64>(
        "fail_on_3",
        &3,
        move |r| ok.send(format!("callback {r}")).unwrap(),
        move |e| failed.send(format!("error {}", matches!(e, host::TaskError::Failed(_)))).unwrap(),
    );
    assert!(result.get(None).is_err());
    assert_eq!(receiver.try_recv().unwrap(), "error true");
    pool.close();
    let (ok, failed) = (sender.clone(), sender);
    let result = pool.apply_async_with_callbacks::<_, i64>(
        "slow_square",
        &(1, 0),
        move |r| ok.send(format!("callback {r}")).unwrap(),
        move |e| failed.send(format!("error {e:?}")).unwrap(),
    );
    assert_eq!(result.get(None), Err(host::TaskError::NotRunning));
    assert_eq!(receiver.try_recv().unwrap(), "error NotRunning");
    pool.join().unwrap();
}

/// The small ones: `SimpleQueue` between processes, `Queue::full`,
/// `Condition::wait_for`, a `Barrier` action run before anyone goes on, a
/// `Semaphore` guard, `active_children`, raw `send_bytes`/`recv_bytes`.
#[test]
fn the_small_ones() {
    check(
        &scenario("small"),
        &[
            ("simple empty", "Ok(true)"),
            ("simple get", r#"Ok("from the child")"#),
            ("simple empty after", "Ok(true)"),
            ("full before", "Ok(false)"),
            ("full after", "Ok(true)"),
            ("unbounded full", "Ok(false)"),
            ("wait_for true at once", "Ok(true)"),
            ("wait_for timeout", "Ok(false)"),
            ("wait_for notified", "Ok(true)"),
            ("barrier action first", r#"Some("action")"#),
            ("barrier log", "4"),
            ("semaphore inside", "Ok(0)"),
            ("semaphore after", "Ok(1)"),
            ("children before", "0"),
            ("children running", r#"["sleeper-0", "sleeper-1"]"#),
            ("children after", "0"),
            ("recv_bytes", "Ok([0, 255, 1])"),
        ],
    );
}

/// Python's `parent_process()`: none in the top-level process; a child sees
/// its parent's pid (its `getppid`), its name (set before the child started),
/// that it runs, and may not control it; a grandchild that outlives its
/// parent sees it end (its join returns, its sentinel is ready) and has no
/// parent any more; a pool worker's parent is the pool's maker, a forked
/// child's (native backend) the process that forked it.
#[test]
fn parent_process() {
    let report = scenario("parent");
    check(
        &report,
        &[
            ("main parent", "None"),
            ("child exitcode", "Some(0)"),
            ("child parent pid is getppid", "true"),
            ("child parent name", r#""Boss""#),
            ("child parent alive", "true"),
            ("child parent exitcode", "None"),
            ("child parent join 0", "Ok(())"),
            ("child parent sentinel ready", "Ok([])"),
            ("child parent terminate", "Err(NotChild)"),
            ("child parent kill", "Err(NotChild)"),
            ("child parent close", "Err(NotChild)"),
            ("child parent still alive", "true"),
            ("middle exitcode", "Some(0)"),
            ("orphan parent alive before", "true"),
            ("orphan join", "Ok(())"),
            ("orphan parent alive after", "false"),
            ("orphan sentinel ready", "Ok([0])"),
            ("orphan parent_process after", "None"),
            ("orphan terminate after", "Err(NotChild)"),
            ("pool worker parent", r#"Ok([Some("Boss")])"#),
        ],
    );
    if cfg!(feature = "native") {
        check(
            &report,
            &[("fork", "Some(0)"), ("forked parent name", r#"Some("Boss")"#), ("forked parent pid is getppid", "true")],
        );
    } else {
        check(&report, &[("fork", r#""Unsupported""#)]);
    }
}
