//! Scenarios for the rest of Python's `multiprocessing` (issue 12), one per
//! first argument, each printing `key: value` lines for the tests: the
//! manager's containers, waiting on many, the pool's iterators and
//! callbacks, and the small ones.
use std::time::Duration;

use std::cell::RefCell;

use mp::{
    Barrier, Condition, Connection, Dict, Event, List, Manager, Namespace, Pipe, Pool, Process, Queue, Semaphore,
    SimpleQueue, Value, Waitable, target,
};

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

/// What a pool worker's initializer is given.
type Given = (Queue<String>, Namespace, Dict<u32, u32>);

thread_local! {
    /// What a pool worker's initializer was given.
    static GIVEN: RefCell<Option<Given>> = const { RefCell::new(None) };
}

fn init(given: Given) {
    GIVEN.with(|g| *g.borrow_mut() = Some(given));
}

/// Reports through the objects the initializer was given.
fn task(x: u32) -> String {
    GIVEN.with(|g| {
        let g = g.borrow();
        let (queue, ns, dict) = g.as_ref().expect("the initializer ran");
        let greeting: String = ns.get("greeting").expect("get").expect("set by the parent");
        dict.update(0, |n| n.unwrap_or(0) + x).expect("update");
        queue.put(&format!("{greeting} {x}")).expect("put");
        greeting
    })
}

fn use_queue(q: Queue<String>) {
    q.put(&"never".to_string()).expect("put");
}

fn nap(millis: u64) {
    std::thread::sleep(Duration::from_millis(millis));
}

/// Signals `ready`, then waits on a connection nobody writes to, for ever.
fn wait_forever((conn, ready): (Connection, Event)) {
    ready.set().expect("set");
    let _ = mp::wait(&[&conn], None);
}

/// Sends one message after `millis`.
fn send_later((conn, millis): (Connection, u64)) {
    std::thread::sleep(Duration::from_millis(millis));
    conn.send(&"late").expect("send");
}

/// `x * x` after `millis`.
fn slow_square((x, millis): (i64, u64)) -> i64 {
    std::thread::sleep(Duration::from_millis(millis));
    x * x
}

fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn fail_on_3(x: i64) -> i64 {
    assert!(x != 3, "three is refused");
    x
}

fn simple_put(q: SimpleQueue<String>) {
    q.put(&"from the child".to_string()).expect("put");
}

fn set_and_notify((cond, value): (Condition, Value<i64>)) {
    let _held = cond.lock().expect("lock");
    value.set(1).expect("set");
    cond.notify_all().expect("notify");
}

fn party((barrier, log): (Barrier, List<String>)) {
    barrier.wait_with_action(Some(LONG), || log.push(&"action".to_string()).expect("push")).expect("wait");
    log.push(&"after".to_string()).expect("push");
}

mp::entries!(
    fill,
    stuck,
    init,
    task,
    use_queue,
    nap,
    wait_forever,
    send_later,
    slow_square,
    add,
    fail_on_3,
    simple_put,
    set_and_notify,
    party,
    look_at_parent,
    middle,
    outlive_parent,
    parent_name
);

/// What a child sees of its parent, put on `q` as `key: value` lines.
fn look_at_parent(q: Queue<String>) {
    let parent = mp::parent_process().expect("a child has a parent");
    let lines = [
        format!("child parent pid is getppid: {:?}", parent.pid() == Some(mp::getppid())),
        format!("child parent name: {:?}", parent.name()),
        format!("child parent alive: {:?}", parent.is_alive()),
        format!("child parent exitcode: {:?}", parent.exitcode()),
        format!("child parent join 0: {:?}", parent.join_timeout(Duration::ZERO)),
        format!("child parent sentinel ready: {:?}", mp::wait(&[&parent.sentinel()], Some(Duration::ZERO))),
        format!("child parent terminate: {:?}", parent.terminate()),
        format!("child parent kill: {:?}", parent.kill()),
        format!("child parent close: {:?}", parent.close()),
        format!("child parent still alive: {:?}", parent.is_alive()),
    ];
    for line in lines {
        q.put(&line).expect("put");
    }
}

/// Starts a grandchild (not a daemon) that takes a handle to this process,
/// waits until it has, and returns: the grandchild outlives it.
fn middle((q, got): (Queue<String>, Event)) {
    let grandchild = Process::with_handles(target!(outlive_parent), (&q, &got));
    grandchild.start().expect("start");
    got.wait(Some(LONG)).expect("wait");
}

/// Takes a handle to its parent, tells it so, and waits for its end.
fn outlive_parent((q, got): (Queue<String>, Event)) {
    let parent = mp::parent_process().expect("the parent waits for us");
    let alive_before = parent.is_alive();
    got.set().expect("set");
    let joined = parent.join();
    let lines = [
        format!("orphan parent alive before: {alive_before:?}"),
        format!("orphan join: {joined:?}"),
        format!("orphan parent alive after: {:?}", parent.is_alive()),
        format!("orphan sentinel ready: {:?}", mp::wait(&[&parent.sentinel()], Some(Duration::ZERO))),
        format!("orphan parent_process after: {:?}", mp::parent_process().map(|p| p.pid())),
        format!("orphan terminate after: {:?}", parent.terminate()),
    ];
    for line in lines {
        q.put(&line).expect("put");
    }
}

/// A pool worker's parent's name.
fn parent_name(_: u32) -> Option<String> {
    mp::parent_process().map(|p| p.name())
}

/// Python's `parent_process()`: none for the top-level process; a child's
/// parent (its pid, name, liveness, refused control); a grandchild that
/// outlives its parent sees it end; a pool worker's parent.
fn parent() {
    report("main parent", mp::parent_process().map(|p| p.pid()));
    mp::current_process().set_name("Boss").expect("rename");
    let q = Queue::<String>::new();
    let child = Process::with_handles(target!(look_at_parent), &q);
    child.start().expect("start");
    child.join().expect("join");
    report("child exitcode", child.exitcode());
    for _ in 0..10 {
        println!("{}", q.get_timeout(LONG).expect("get"));
    }

    let got = Event::new();
    let mid = Process::with_handles(target!(middle), (&q, &got));
    mid.start().expect("start");
    mid.join().expect("join");
    report("middle exitcode", mid.exitcode());
    for _ in 0..6 {
        println!("{}", q.get_timeout(LONG).expect("get"));
    }

    // A forked child's parent is the process that forked it (native only).
    match mp::fork() {
        Ok(mp::Fork::Child) => {
            let parent = mp::parent_process();
            report("forked parent name", parent.as_ref().map(|p| p.name()));
            report("forked parent pid is getppid", parent.and_then(|p| p.pid()) == Some(mp::getppid()));
            mp::exit(0);
        }
        Ok(mp::Fork::Parent(child)) => {
            child.join().expect("join");
            report("fork", child.exitcode());
        }
        Err(error) => report("fork", error.kind()),
    }

    let pool = Pool::new(1);
    report("pool worker parent", pool.map(target!(parent_name), [1u32]));
}

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

/// Shared objects for pool workers: in the initializer's arguments they
/// reach every worker (replaced after each task), and the pool keeps them
/// alive though the parent dropped its own handle; in a task's arguments a
/// handle is refused.
fn pool_init() {
    let queue = Queue::<String>::new();
    let manager = Manager::new().expect("manager");
    let dict = manager.dict::<u32, u32>().expect("dict");
    let pool = {
        let ns = manager.namespace().expect("namespace");
        ns.set("greeting", "hello").expect("set");
        Pool::builder()
            .processes(2)
            .maxtasksperchild(1)
            .initializer_with_handles(target!(init), (&queue, &ns, &dict))
            .build()
            .expect("pool")
    };
    let greetings: Vec<String> = pool.map(target!(task), 1..=6).expect("map");
    report("greetings", greetings);
    let mut put: Vec<String> = (0..6).map(|_| queue.get().expect("get")).collect();
    put.sort();
    report("put", put);
    report("sum", dict.get(&0));
    let refused = pool.apply(target!(use_queue), Queue::new()).map_err(|e| e.to_string());
    report("handle in a task", refused);
    pool.close();
    pool.join().expect("join");
}

fn wait() {
    let (reader, writer) = Pipe(false);
    let (other_reader, other_writer) = Pipe(false);
    report("nothing, at the timeout", mp::wait(&[&reader, &other_reader], Some(Duration::from_millis(20))));
    report("nothing, no wait", mp::wait(&[&reader], Some(Duration::ZERO)));
    other_writer.send(&1).expect("send");
    report("one with data", mp::wait(&[&reader, &other_reader], None));
    writer.send(&2).expect("send");
    report("both", mp::wait(&[&reader, &other_reader], None));
    reader.recv::<i32>().expect("recv");
    drop(other_writer);
    other_reader.recv::<i32>().expect("recv");
    report("at end of file", mp::wait(&[&reader, &other_reader], None));

    let not_started = Process::new(target!(nap), 0);
    report("not started", mp::wait(&[&not_started.sentinel()], None).is_err());
    // A process and a connection: whichever is ready first.
    let slow = Process::new(target!(nap), 60_000);
    slow.start().expect("start");
    let quick = Process::new(target!(nap), 10);
    quick.start().expect("start");
    let (late_reader, late_writer) = Pipe(false);
    let sender = Process::with_handles(target!(send_later), (&late_writer, 1000u64));
    sender.start().expect("start");
    let all: [&dyn Waitable; 3] = [&slow.sentinel(), &late_reader, &quick.sentinel()];
    report("first of three", mp::wait(&all, None));
    report("then the connection", mp::wait(&all[..2], None));
    report("slow at the timeout", mp::wait(&[&slow], Some(Duration::from_millis(20))));
    slow.terminate().expect("terminate");
    report("slow after terminate", mp::wait(&[&slow], None));
    sender.join().expect("join");

    // Terminating a process blocked in wait ends it at once.
    let ready = Event::new();
    let (blocked_on, _keep) = Pipe(false);
    let blocked = Process::with_handles(target!(wait_forever), (&blocked_on, &ready));
    blocked.start().expect("start");
    ready.wait(Some(LONG)).expect("wait");
    std::thread::sleep(Duration::from_millis(50));
    blocked.terminate().expect("terminate");
    blocked.join().expect("join");
    report("blocked in wait, terminated", blocked.exitcode());
}

thread_local! {
    static CALLED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn called() -> Vec<String> {
    CALLED.with(|c| c.borrow().clone())
}

fn pool_more() {
    let pool = Pool::new(3);
    // The first items take longest: imap still gives them in order.
    let items: Vec<(i64, u64)> = (1..=5).map(|x| (x, (5 - x as u64) * 30)).collect();
    let ordered: Vec<_> = pool.imap(target!(slow_square), items.clone()).collect();
    report("imap", ordered);
    let unordered: Vec<_> = pool.imap_unordered(target!(slow_square), vec![(1, 1500), (2, 0)]).collect();
    report("imap_unordered", unordered);
    let mut sorted: Vec<i64> = pool.imap_unordered(target!(slow_square), items).map(Result::unwrap).collect();
    sorted.sort();
    report("imap_unordered all", sorted);
    let with_failure: Vec<_> =
        pool.imap(target!(fail_on_3), 1..=4).map(|r| r.map_err(|e| matches!(e, mp::TaskError::Failed(_)))).collect();
    report("imap with a failure", with_failure);

    let squares = pool.map_async(target!(slow_square), (1..=4).map(|x| (x, 0)));
    report("map_async", squares.get());
    report("map_async ready", squares.ready());
    report("map_async successful", squares.successful());
    let sums = pool.starmap_async(target!(add), vec![(1, 2), (3, 4)]);
    report("starmap_async", sums.get());
    let failing = pool.map_async(target!(fail_on_3), 1..=4);
    report("map_async failing", failing.get().map_err(|e| matches!(e, mp::TaskError::Failed(_))));
    report("map_async failing successful", failing.successful());

    // Callbacks run on this thread at its next call into the pool.
    let ok = pool.apply_async_with_callbacks(
        target!(slow_square),
        (7, 0),
        |r| CALLED.with(|c| c.borrow_mut().push(format!("callback {r}"))),
        |e| CALLED.with(|c| c.borrow_mut().push(format!("error {e}"))),
    );
    ok.wait();
    report("before the next call", called());
    let failed = pool.apply_async_with_callbacks(
        target!(fail_on_3),
        3,
        |r| CALLED.with(|c| c.borrow_mut().push(format!("callback {r}"))),
        |e| CALLED.with(|c| c.borrow_mut().push(format!("error {}", matches!(e, mp::TaskError::Failed(_))))),
    );
    report("after the next call", called());
    report("failed get", failed.get().is_err());
    report("after get", called());
    pool.close();
    let refused: Vec<_> = pool.imap(target!(fail_on_3), 1..=2).collect();
    report("imap after close", refused);
    pool.join().expect("join");
}

fn small() {
    let q = SimpleQueue::<String>::new();
    report("simple empty", q.empty());
    let child = Process::with_handles(target!(simple_put), &q);
    child.start().expect("start");
    report("simple get", q.get());
    child.join().expect("join");
    report("simple empty after", q.empty());

    let bounded = Queue::<u32>::with_maxsize(1);
    report("full before", bounded.full());
    bounded.put(&1).expect("put");
    report("full after", bounded.full());
    report("unbounded full", Queue::<u32>::new().full());

    let cond = Condition::new(None);
    let value = Value::new(0i64);
    {
        let _held = cond.lock().expect("lock");
        report("wait_for true at once", cond.wait_for(|| true, None));
        report("wait_for timeout", cond.wait_for(|| false, Some(Duration::from_millis(20))));
        let child = Process::with_handles(target!(set_and_notify), (&cond, &value));
        child.start().expect("start");
        report("wait_for notified", cond.wait_for(|| value.get().expect("get") == 1, Some(LONG)));
        drop(_held);
        child.join().expect("join");
    }

    let manager = Manager::new().expect("manager");
    let log = manager.list::<String>().expect("list");
    let barrier = Barrier::new(3);
    let parties: Vec<Process> = (0..2).map(|_| Process::with_handles(target!(party), (&barrier, &log))).collect();
    for p in &parties {
        p.start().expect("start");
    }
    barrier.wait_with_action(Some(LONG), || log.push(&"action".to_string()).expect("push")).expect("wait");
    log.push(&"after".to_string()).expect("push");
    for p in &parties {
        p.join().expect("join");
    }
    let log = log.to_vec().expect("to_vec");
    report("barrier action first", log.first().cloned());
    report("barrier log", log.len());

    let s = Semaphore::new(1);
    {
        let _unit = s.guard().expect("guard");
        report("semaphore inside", s.get_value());
    }
    report("semaphore after", s.get_value());

    report("children before", mp::active_children().len());
    let sleepers: Vec<Process> =
        (0..2).map(|i| Process::new(target!(nap), 60_000).with_name(format!("sleeper-{i}"))).collect();
    for p in &sleepers {
        p.start().expect("start");
    }
    let mut names: Vec<String> = mp::active_children().iter().map(Process::name).collect();
    names.sort();
    report("children running", names);
    for p in &sleepers {
        p.terminate().expect("terminate");
        p.join().expect("join");
    }
    report("children after", mp::active_children().len());

    let (a, b) = Pipe(true);
    a.send_bytes(&[0, 255, 1]).expect("send_bytes");
    report("recv_bytes", b.recv_bytes());
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("manager") => manager(),
        Some("manager-budget") => manager_budget(),
        Some("pool-init") => pool_init(),
        Some("wait") => wait(),
        Some("pool-more") => pool_more(),
        Some("small") => small(),
        Some("parent") => parent(),
        other => panic!("unknown scenario {other:?}"),
    }
}
