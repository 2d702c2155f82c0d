//! Scenarios for the shared objects, one per first argument, each printing
//! `key: value` lines for the tests: the semantics of each object, timeouts,
//! terminating a process blocked on each, a lock whose holder ends, and
//! hostile use.
use std::time::Duration;

use mp::bindings::mp::host::sync as wit;
use mp::{
    Barrier, Condition, Connection, Event, JoinableQueue, Lock, Pipe, Process, Queue, RLock, Semaphore, SyncError,
    Value, target,
};

const SHORT: Duration = Duration::from_millis(20);
const LONG: Duration = Duration::from_secs(60);

fn report(key: &str, value: impl std::fmt::Debug) {
    println!("{key}: {value:?}");
}

fn echo(conn: Connection) {
    let message: String = conn.recv().expect("recv");
    conn.send(&format!("echo {message}")).expect("send");
}

fn hold_end(_conn: Connection) {}

fn worker((q, n): (JoinableQueue<u32>, u32)) {
    for _ in 0..n {
        q.get().expect("get");
        q.task_done().expect("task_done");
    }
}

/// Takes the lock and ends without releasing it, as `how` says.
fn take_lock((lock, taken, how): (Lock, Event, String)) {
    lock.acquire().expect("acquire");
    taken.set().expect("set");
    match how.as_str() {
        "return" => {}
        "panic" => panic!("dying with the lock held"),
        _ => std::thread::sleep(LONG),
    }
}

fn waiter((e, c, done): (Event, Condition, Queue<String>)) {
    e.wait(None).expect("event wait");
    done.put(&"event".to_string()).expect("put");
    let _held = c.lock().expect("condition lock");
    done.put(&"waiting".to_string()).expect("put");
    let notified = c.wait(Some(LONG)).expect("condition wait");
    done.put(&format!("notified {notified}")).expect("put");
}

fn party(b: Barrier) -> u32 {
    let i = b.wait(Some(LONG)).expect("barrier wait");
    mp::exit(i as i32 + 10)
}

/// Signals `ready`, then blocks in `what` for ever.
fn blocker(
    (what, ready, q, conn, lock, e, c, b, jq): (
        String,
        Event,
        Queue<u32>,
        Connection,
        Lock,
        Event,
        Condition,
        Barrier,
        JoinableQueue<u32>,
    ),
) {
    if what == "condition" {
        c.acquire().expect("acquire");
    }
    ready.set().expect("ready");
    match what.as_str() {
        "get" => drop(q.get()),
        "recv" => drop(conn.recv::<u32>()),
        "acquire" => drop(lock.acquire()),
        "event" => drop(e.wait(None)),
        "condition" => drop(c.wait(None)),
        "barrier" => drop(b.wait(None)),
        "join" => drop(jq.join()),
        _ => {}
    }
    println!("{what} returned");
}

/// Opens a token that came in a message, not in the spawn arguments.
fn open_token(tokens: Queue<String>) {
    let token = tokens.get().expect("get");
    report("open of a second-hand token", wit::Queue::open(&token).map(|_| ()).map_err(SyncError::from));
}

mp::entries!(echo, hold_end, worker, take_lock, waiter, party, blocker, open_token);

fn queue() {
    let q: Queue<u32> = Queue::with_maxsize(2);
    report("get_nowait on empty", q.get_nowait());
    report("get_timeout on empty", q.get_timeout(SHORT));
    q.put(&1).unwrap();
    q.put(&2).unwrap();
    report("put_nowait on full", q.put_nowait(&3));
    report("put_timeout on full", q.put_timeout(&3, SHORT));
    report("qsize", q.qsize());
    report("fifo", (q.get().unwrap(), q.get().unwrap()));
    report("empty", q.empty());
    q.close();
    report("put after close", q.put(&1));

    let jq: JoinableQueue<u32> = JoinableQueue::new();
    for i in 0..3 {
        jq.put(&i).unwrap();
    }
    let p = Process::with_handles(target!(worker), (&jq, 3));
    p.start().unwrap();
    report("joinable join", jq.join());
    p.join().unwrap();
    report("task_done too many", jq.task_done().map_err(|e| e.to_string()));
}

fn pipe() {
    let (a, b) = Pipe(true);
    report("poll before send", a.poll(Some(SHORT)));
    let p = Process::with_handles(target!(echo), &b);
    p.start().unwrap();
    drop(b);
    a.send(&"hi").unwrap();
    report("poll after send", a.poll(Some(LONG)));
    report("echo", a.recv::<String>());
    p.join().unwrap();
    report("recv after the child ended", a.recv::<String>());
    report("send after the child ended", a.send(&"x"));

    let (r, w) = Pipe(false);
    report("send on a read-only end", r.send(&1).map_err(|e| e.to_string()));
    w.send(&5u8).unwrap();
    report("one-way recv", r.recv::<u8>());
    w.close();
    report("recv after close", r.recv::<u8>());

    let (x, y) = Pipe(true);
    let p = Process::with_handles(target!(hold_end), &y);
    drop(y);
    p.start().unwrap();
    p.join().unwrap();
    report("recv after a holder's end", x.recv::<u8>());
}

fn lock() {
    let r = RLock::new();
    r.acquire().unwrap();
    report("rlock reacquire", r.try_acquire());
    r.release().unwrap();
    r.release().unwrap();
    report("rlock release unheld", r.release().map_err(|e| e.to_string()));
    let l = Lock::new();
    report("lock release unheld", l.release().map_err(|e| e.to_string()));
    l.acquire().unwrap();
    report("lock try while held", l.try_acquire());
    report("lock timeout while held", l.acquire_timeout(SHORT));
    l.release().unwrap();
    for how in ["return", "panic", "terminate"] {
        let taken = Event::new();
        let p = Process::with_handles(target!(take_lock), (&l, &taken, how));
        p.start().unwrap();
        taken.wait(None).unwrap();
        if how == "terminate" {
            p.terminate().unwrap();
        }
        p.join().unwrap();
        report(&format!("lock after holder {how}"), l.acquire_timeout(LONG));
        l.release().unwrap();
    }
}

fn others() {
    let e = Event::new();
    report("event is_set", e.is_set());
    report("event wait timeout", e.wait(Some(SHORT)));
    let c = Condition::new(None);
    let done: Queue<String> = Queue::new();
    let p = Process::with_handles(target!(waiter), (&e, &c, &done));
    p.start().unwrap();
    e.set().unwrap();
    report("event after set", e.is_set());
    report("waiter", done.get());
    report("waiter", done.get());
    {
        let _held = c.lock().unwrap();
        c.notify_all().unwrap();
    }
    report("waiter", done.get());
    p.join().unwrap();
    report("notify without the lock", c.notify(1).map_err(|e| e.to_string()));

    let s = Semaphore::new(2);
    s.acquire().unwrap();
    report("semaphore value", s.get_value());
    s.acquire().unwrap();
    report("semaphore try when 0", s.try_acquire());
    s.release().unwrap();
    s.release().unwrap();
    s.release().unwrap();
    report("semaphore over release", s.get_value());
    let bs = mp::BoundedSemaphore(1);
    report("bounded over release", bs.release().map_err(|e| e.to_string()));

    let b = Barrier::new(3);
    let parties: Vec<Process> = (0..2).map(|_| Process::with_handles(target!(party), &b)).collect();
    parties.iter().for_each(|p| p.start().unwrap());
    let mine = b.wait(Some(LONG)).unwrap();
    parties.iter().for_each(|p| p.join().unwrap());
    let mut indices: Vec<i32> = parties.iter().map(|p| p.exitcode().unwrap() - 10).collect();
    indices.push(mine as i32);
    indices.sort();
    report("barrier indices", indices);
    report("barrier timeout", b.wait(Some(SHORT)));
    report("barrier broken", b.broken());
    b.reset().unwrap();
    report("barrier after reset", b.broken());

    let v = Value::new(1.5f64);
    v.set(2.5).unwrap();
    report("float value", v.get());
    let a = mp::Array::new(vec![1i64, 2, 3]);
    a.set(1, 20).unwrap();
    report("array", a.to_vec());
    report("array out of range", a.get(3).map_err(|e| e.to_string()));
}

fn blocked() {
    let q: Queue<u32> = Queue::new();
    let (conn, _other) = Pipe(true);
    let lock = Lock::new();
    lock.acquire().unwrap();
    let e = Event::new();
    let c = Condition::new(None);
    let b = Barrier::new(2);
    let jq: JoinableQueue<u32> = JoinableQueue::new();
    jq.put(&1).unwrap();
    for what in ["get", "recv", "acquire", "event", "condition", "barrier", "join"] {
        let ready = Event::new();
        let p = Process::with_handles(target!(blocker), (what, &ready, &q, &conn, &lock, &e, &c, &b, &jq));
        p.start().unwrap();
        ready.wait(None).unwrap();
        std::thread::sleep(SHORT);
        p.terminate().unwrap();
        p.join().unwrap();
        report(&format!("terminated in {what}"), p.exitcode());
    }
    q.put(&7).unwrap();
    report("item after a terminated consumer", q.get_timeout(LONG));
}

fn hostile() {
    report("forged token", wit::Queue::open("mp-sync:queue:1:0123456789abcdef").map(|_| ()).map_err(SyncError::from));
    report("garbage token", wit::Lock::open("nonsense").map(|_| ()).map_err(SyncError::from));
    let q: Queue<String> = Queue::new();
    let inner: Queue<u8> = Queue::new();
    report("handle in a message", q.put(&mp::__serde_json::to_string(&inner).unwrap_or_else(|e| e.to_string())));
    report("handle in a message", q.get());
    let big = vec![0u8; 5 << 20];
    let raw: Queue<Vec<u8>> = Queue::new();
    report("huge message", raw.put(&big).map_err(|e| matches!(e, SyncError::TooLarge { .. })));
    report("queue still works", raw.put(&vec![1]).and_then(|()| raw.get()));
    let held = wit::Queue::new(0, false);
    let tokens: Queue<String> = Queue::new();
    tokens.put(&held.token()).unwrap();
    let p = Process::with_handles(target!(open_token), &tokens);
    p.start().unwrap();
    p.join().unwrap();
    report("child exitcode", p.exitcode());
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("queue") => queue(),
        Some("pipe") => pipe(),
        Some("lock") => lock(),
        Some("others") => others(),
        Some("blocked") => blocked(),
        Some("hostile") => hostile(),
        other => panic!("unknown scenario {other:?}"),
    }
}
