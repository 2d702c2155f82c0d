//! Test program for the guest lifecycle API (the `program` world). argv[1]
//! names a scenario; each check prints one `key: value` line, where an
//! operation's result is `ok` or the error's kind (`AlreadyStarted`, ...), an
//! `Option` is printed as `Some(x)`/`None`. Lines printed by a child say so in
//! their key (`child-...`). The last line is `done: SCENARIO`; an unknown
//! scenario prints the list and exits 2. `children list` prints the list.
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mp::{Error, Process, Target, current_process, getpid, getppid, target};

// ---- entries (child bodies) ----

fn noop() {}

fn sleep_secs(secs: f64) {
    sleep(Duration::from_secs_f64(secs));
}

fn sleep_forever() {
    loop {
        sleep(Duration::from_secs(3600));
    }
}

fn spin() {
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn exit_with(code: i32) {
    mp::exit(code);
}

fn std_exit(code: i32) {
    std::process::exit(code);
}

fn panics() {
    panic!("deliberate panic");
}

fn takes_u32(n: u32) -> u32 {
    n
}

/// A daemon's attempt at a child: refused with `DaemonChildren`.
fn spawn_grandchild() {
    let p = Process::new(target!(noop), ());
    println!("child-daemon-spawn: {}", show(p.start()));
}

/// Starts a grandchild that sleeps forever and joins it (blocked until the
/// parent terminates us). The grandchild is a daemon, so it ends with us.
fn join_grandchild() {
    let p = Process::new(target!(sleep_forever), ()).with_daemon(true);
    println!("child-grandchild-start: {}", show(p.start()));
    println!("child-grandchild-join: {}", show(p.join()));
    println!("child-unreachable: joined a sleeper");
}

/// Starts a non-daemon grandchild that sleeps 2 s, then sleeps forever
/// itself (until the parent terminates us): the grandchild is orphaned.
fn orphan_a_sleeper() {
    let p = Process::new(target!(sleep_secs), 2.0);
    println!("child-grandchild-start: {}", show(p.start()));
    sleep_forever();
}

fn report_pids() {
    println!("child-pid: {}", getpid());
    println!("child-ppid: {}", getppid());
}

fn report_name() {
    println!("child-current-name: {}", current_process().name());
}

static A: AtomicI32 = AtomicI32::new(257);
static LIST: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn mutate() {
    println!("child-a-before: {}", A.load(Ordering::SeqCst));
    A.store(200, Ordering::SeqCst);
    println!("child-a: {}", A.load(Ordering::SeqCst));
    let mut list = LIST.lock().unwrap();
    list.push(2);
    println!("child-list: {:?}", *list);
}

mp::entries!(
    noop,
    sleep_secs,
    sleep_forever,
    spin,
    exit_with,
    std_exit,
    panics,
    takes_u32,
    spawn_grandchild,
    join_grandchild,
    orphan_a_sleeper,
    report_pids,
    report_name,
    mutate,
);

// ---- helpers ----

/// `ok` or the error's kind.
fn show(r: Result<(), Error>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.kind().to_string(),
    }
}

fn started<A: serde::Serialize, R>(t: Target<A, R>, args: A) -> Process {
    let p = Process::new(t, args);
    p.start().expect("start");
    p
}

/// The `N` of argv[2], or `default`.
fn count(default: usize) -> usize {
    std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(default)
}

// ---- scenarios ----

const SCENARIOS: &[(&str, fn())] = &[
    ("double-start", double_start),
    ("join-before-start", join_before_start),
    ("join-self", join_self),
    ("current", current),
    ("close-running", close_running),
    ("set-daemon-after-start", set_daemon_after_start),
    ("daemon-spawn", daemon_spawn),
    ("terminate-sleep", terminate_sleep),
    ("kill-spin", kill_spin),
    ("terminate-spin", terminate_spin),
    ("terminate-join-blocked", terminate_join_blocked),
    ("terminate-ended", terminate_ended),
    ("exitcodes", exitcodes),
    ("names", names),
    ("pids", pids),
    ("join-timeout", join_timeout),
    ("unknown-entry", unknown_entry),
    ("cpu-count", cpu_count),
    ("isolation", isolation),
    ("spawn-serial", spawn_serial),
    ("spawn-many", spawn_many),
    ("sleepers", sleepers),
];

fn double_start() {
    let p = Process::new(target!(noop), ());
    println!("first-start: {}", show(p.start()));
    println!("double-start: {}", show(p.start()));
    println!("join: {}", show(p.join()));
    println!("start-after-join: {}", show(p.start()));
    println!("exitcode: {:?}", p.exitcode());
}

fn join_before_start() {
    let p = Process::new(target!(noop), ());
    println!("join-before-start: {}", show(p.join()));
    println!("join-timeout-before-start: {}", show(p.join_timeout(Duration::from_millis(10))));
    println!("terminate-before-start: {}", show(p.terminate()));
    println!("kill-before-start: {}", show(p.kill()));
    println!("is-alive-before-start: {}", p.is_alive());
    println!("pid-before-start: {:?}", p.pid());
    println!("exitcode-before-start: {:?}", p.exitcode());
    println!("close-before-start: {}", show(p.close()));
}

fn join_self() {
    println!("join-self: {}", show(current_process().join()));
    println!("join-self-timeout: {}", show(current_process().join_timeout(Duration::from_millis(10))));
}

fn current() {
    let me = current_process();
    println!("current-name: {}", me.name());
    println!("current-pid: {:?}", me.pid());
    println!("getpid: {}", getpid());
    println!("current-pid-matches: {}", me.pid() == Some(getpid()));
    println!("current-is-alive: {}", me.is_alive());
    println!("current-exitcode: {:?}", me.exitcode());
    println!("current-daemon: {}", me.daemon());
    println!("current-start: {}", show(me.start()));
}

fn close_running() {
    let p = started(target!(sleep_forever), ());
    println!("close-running: {}", show(p.close()));
    println!("terminate: {}", show(p.terminate()));
    println!("join: {}", show(p.join()));
    println!("close-ended: {}", show(p.close()));
    println!("start-after-close: {}", show(p.start()));
    println!("join-after-close: {}", show(p.join()));
    println!("terminate-after-close: {}", show(p.terminate()));
    println!("set-name-after-close: {}", show(p.set_name("x")));
}

fn set_daemon_after_start() {
    let p = Process::new(target!(noop), ());
    println!("set-daemon-before-start: {}", show(p.set_daemon(true)));
    println!("daemon: {}", p.daemon());
    println!("set-daemon-back: {}", show(p.set_daemon(false)));
    p.start().expect("start");
    println!("set-daemon-after-start: {}", show(p.set_daemon(true)));
    println!("daemon-after-start: {}", p.daemon());
    println!("join: {}", show(p.join()));
}

fn daemon_spawn() {
    let p = Process::new(target!(spawn_grandchild), ()).with_daemon(true);
    println!("daemon: {}", p.daemon());
    println!("start: {}", show(p.start()));
    println!("join: {}", show(p.join()));
    println!("exitcode: {:?}", p.exitcode());
}

fn terminate_sleep() {
    let p = started(target!(sleep_forever), ());
    let t = Instant::now();
    println!("terminate: {}", show(p.terminate()));
    println!("join: {}", show(p.join()));
    println!("is-alive: {}", p.is_alive());
    println!("exitcode: {:?}", p.exitcode());
    println!("terminate-to-join-us: {}", t.elapsed().as_micros());
}

fn kill_spin() {
    let p = started(target!(spin), ());
    sleep(Duration::from_millis(50));
    let t = Instant::now();
    println!("kill: {}", show(p.kill()));
    println!("join: {}", show(p.join()));
    println!("is-alive: {}", p.is_alive());
    println!("exitcode: {:?}", p.exitcode());
    println!("kill-to-join-us: {}", t.elapsed().as_micros());
}

fn terminate_spin() {
    let p = started(target!(spin), ());
    sleep(Duration::from_millis(50));
    println!("terminate: {}", show(p.terminate()));
    println!("join: {}", show(p.join()));
    println!("exitcode: {:?}", p.exitcode());
}

fn terminate_join_blocked() {
    let p = started(target!(join_grandchild), ());
    // Give the child time to start its grandchild and block in join.
    sleep(Duration::from_millis(300));
    println!("is-alive: {}", p.is_alive());
    println!("terminate: {}", show(p.terminate()));
    println!("join: {}", show(p.join()));
    println!("exitcode: {:?}", p.exitcode());
}

fn terminate_ended() {
    let p = started(target!(noop), ());
    println!("join: {}", show(p.join()));
    println!("terminate-ended: {}", show(p.terminate()));
    println!("kill-ended: {}", show(p.kill()));
    println!("exitcode: {:?}", p.exitcode());
}

fn exitcodes() {
    let cases = [
        ("return", started(target!(noop), ())),
        ("exit-0", started(target!(exit_with), 0)),
        ("exit-3", started(target!(exit_with), 3)),
        ("exit-255", started(target!(exit_with), 255)),
        ("std-exit-3", started(target!(std_exit), 3)),
        ("panic", started(target!(panics), ())),
        // Arguments of the wrong type: the entry fails before it runs.
        ("bad-args", started(Target::<&str, u32>::new("takes_u32", |_| 0), "not a number")),
    ];
    for (key, p) in &cases {
        p.join().expect("join");
        println!("{key}: {:?}", p.exitcode());
    }
}

fn names() {
    let ps: Vec<Process> = (0..3).map(|_| Process::new(target!(noop), ())).collect();
    for (i, p) in ps.iter().enumerate() {
        println!("name-{}: {}", i + 1, p.name());
    }
    let custom = Process::new(target!(report_name), ()).with_name("worker");
    println!("custom-name: {}", custom.name());
    println!("name-after-custom: {}", Process::new(target!(noop), ()).name());
    custom.start().expect("start");
    custom.join().expect("join");
    println!("set-name-started: {}", show(custom.set_name("renamed")));
    println!("renamed: {}", custom.name());
}

fn pids() {
    println!("parent-pid: {}", getpid());
    let p = Process::new(target!(report_pids), ());
    p.start().expect("start");
    let pid = p.pid();
    p.join().expect("join");
    println!("child-pid-from-parent: {}", pid.map_or("None".to_string(), |p| p.to_string()));
    println!("pid-after-join: {:?}", p.pid());
    let q = started(target!(noop), ());
    println!("pids-differ: {}", q.pid() != pid || q.pid().is_none());
    q.join().expect("join");
}

fn join_timeout() {
    let p = started(target!(sleep_secs), 3600.0);
    let t = Instant::now();
    println!("join-timeout: {}", show(p.join_timeout(Duration::from_millis(100))));
    println!("join-timeout-ms: {}", t.elapsed().as_millis());
    println!("is-alive: {}", p.is_alive());
    println!("exitcode: {:?}", p.exitcode());
    println!("terminate: {}", show(p.terminate()));
    println!("join: {}", show(p.join()));
    println!("exitcode-after-terminate: {:?}", p.exitcode());
    let q = started(target!(noop), ());
    println!("join-timeout-ended: {}", show(q.join_timeout(Duration::from_secs(10))));
    println!("exitcode-ended: {:?}", q.exitcode());
}

fn unknown_entry() {
    let p = Process::new(Target::new("no-such-entry", noop_unit), ());
    match p.start() {
        Err(Error::UnknownEntry(name)) => {
            println!("unknown-entry: UnknownEntry");
            println!("unknown-entry-name: {name}");
        }
        r => println!("unknown-entry: {}", show(r)),
    }
    println!("is-alive: {}", p.is_alive());
}

fn noop_unit(_: ()) {}

fn cpu_count() {
    println!("cpu-count: {}", mp::cpu_count());
}

fn isolation() {
    LIST.lock().unwrap().push(1);
    let p = started(target!(mutate), ());
    p.join().expect("join");
    println!("parent-a: {}", A.load(Ordering::SeqCst));
    println!("parent-list: {:?}", *LIST.lock().unwrap());
}

/// `children spawn-serial N`: start+join N trivial children, one after another.
fn spawn_serial() {
    let n = count(100);
    let t = Instant::now();
    for _ in 0..n {
        let p = started(target!(noop), ());
        p.join().expect("join");
    }
    println!("spawned: {n}");
    println!("us-per-process: {}", t.elapsed().as_micros() / n.max(1) as u128);
}

/// `children spawn-many N`: start N trivial children, then join them all.
fn spawn_many() {
    let n = count(100);
    let t = Instant::now();
    let ps: Vec<Process> = (0..n).map(|_| started(target!(noop), ())).collect();
    for p in &ps {
        p.join().expect("join");
    }
    println!("spawned: {n}");
    println!("us-per-process: {}", t.elapsed().as_micros() / n.max(1) as u128);
}

/// `children sleepers N`: N children that each sleep 1 s, concurrently.
fn sleepers() {
    let n = count(100);
    let t = Instant::now();
    let ps: Vec<Process> = (0..n).map(|_| started(target!(sleep_secs), 1.0)).collect();
    for p in &ps {
        p.join().expect("join");
    }
    println!("sleepers: {n}");
    println!("wall-ms: {}", t.elapsed().as_millis());
}

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    if scenario == "list" {
        for (name, _) in SCENARIOS {
            println!("{name}");
        }
        return;
    }
    match SCENARIOS.iter().find(|(name, _)| *name == scenario) {
        Some((name, run)) => {
            run();
            println!("done: {name}");
        }
        None => {
            eprintln!("unknown scenario {scenario:?}; one of:");
            for (name, _) in SCENARIOS {
                eprintln!("  {name}");
            }
            mp::exit(2);
        }
    }
}
