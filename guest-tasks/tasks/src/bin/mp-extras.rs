//! Scenarios for the rest of Python's `multiprocessing` (issue 12), one per
//! first argument, each printing `key: value` lines for the tests: the
//! manager's containers, waiting on many, the pool's iterators and
//! callbacks, and the small ones.
use std::time::Duration;

use mp::{Dict, Event, List, Manager, Namespace, Process, target};

const LONG: Duration = Duration::from_secs(60);

fn report(key: &str, value: impl std::fmt::Debug) {
    println!("{key}: {value:?}");
}

/// Fills the list and the namespace it was given, adds to the dict.
fn fill((list, ns, dict): (List<String>, Namespace, Dict<String, i64>)) {
    list.push(&"from child".to_string()).expect("push");
    list.set(0, &"replaced".to_string()).expect("set");
    ns.set("child", &vec![1, 2, 3]).expect("set");
    dict.update("n".to_string(), |n| n.unwrap_or(0) + 10).expect("update");
}

/// Begins an update and never finishes it: it signals `inside`, then sleeps.
fn stuck((dict, inside): (Dict<String, i64>, Event)) {
    dict.update("n".to_string(), |n| {
        inside.set().expect("set");
        std::thread::sleep(LONG);
        n.unwrap_or(0) + 1000
    })
    .expect("update");
}

mp::entries!(fill, stuck);

fn manager() {
    let manager = Manager::new().expect("manager");
    let dict = manager.dict::<String, i64>().expect("dict");
    dict.set("b".to_string(), &2).expect("set");
    dict.set("a".to_string(), &1).expect("set");
    dict.set("c".to_string(), &3).expect("set");
    dict.set("b".to_string(), &20).expect("set");
    report("keys", dict.keys());
    report("items", dict.items());
    report("get a", dict.get(&"a".to_string()));
    report("get missing", dict.get(&"zz".to_string()));
    report("contains c", dict.contains_key(&"c".to_string()));
    report("remove c", dict.remove(&"c".to_string()));
    report("remove c again", dict.remove(&"c".to_string()));
    report("len", dict.len());
    report("update new", dict.update("n".to_string(), |n| n.unwrap_or(0) + 5));

    let list = manager.list::<String>().expect("list");
    list.push(&"first".to_string()).expect("push");
    report("list get 5", list.get(5));
    let ns = manager.namespace().expect("namespace");
    ns.set("x", &42u32).expect("set");
    ns.set("name", "text").expect("set");

    let child = Process::with_handles(target!(fill), (&list, &ns, &dict));
    child.start().expect("start");
    child.join().expect("join");
    report("child exitcode", child.exitcode());
    report("list", list.to_vec());
    report("list len", list.len());
    report("ns x", ns.get::<u32>("x"));
    report("ns name", ns.get::<String>("name"));
    report("ns child", ns.get::<Vec<u32>>("child"));
    report("ns missing", ns.get::<u32>("missing"));
    report("ns names", ns.names());
    report("dict n", dict.get(&"n".to_string()));

    // A process that ends in the middle of its update: the dict is left as
    // it was and the others go on.
    let inside = Event::new();
    let child = Process::with_handles(target!(stuck), (&dict, &inside));
    child.start().expect("start");
    inside.wait(Some(LONG)).expect("wait");
    child.terminate().expect("terminate");
    child.join().expect("join");
    report("after stuck updater", dict.get(&"n".to_string()));
    report("update after", dict.update("n".to_string(), |n| n.unwrap_or(0) + 1));
}

/// Under a small `--max-shared`: a value past the budget is refused, and
/// replacing a value gives its charge back.
fn manager_budget() {
    let dict = Manager::new().expect("manager").dict::<u32, String>().expect("dict");
    let big = "x".repeat(60_000);
    report("first big", dict.set(1, &big));
    report("second big", dict.set(2, &big).map_err(|e| e.to_string().contains("quota")));
    report("replace big", dict.set(1, &big));
    report("remove", dict.remove(&1).map(|v| v.map(|v| v.len())));
    report("after remove", dict.set(2, &big));
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("manager") => manager(),
        Some("manager-budget") => manager_budget(),
        other => panic!("unknown scenario {other:?}"),
    }
}
