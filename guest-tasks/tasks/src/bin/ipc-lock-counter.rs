//! Seed 004 (Lock): four processes each add 1 to a shared `Value` 10,000
//! times, each addition a read and a write under a `Lock`; none is lost.
use mp::{Lock, Process, Value, target};

const PROCESSES: usize = 4;
const ADDS: i64 = 10_000;

fn adder((counter, lock): (Value<i64>, Lock)) {
    for _ in 0..ADDS {
        let _held = lock.lock().expect("lock");
        let v = counter.get().expect("get");
        counter.set(v + 1).expect("set");
    }
}

mp::entries!(adder);

fn main() {
    let counter = Value::new(0i64);
    let lock = Lock::new();
    let processes: Vec<Process> =
        (0..PROCESSES).map(|_| Process::with_handles(target!(adder), (&counter, &lock))).collect();
    for p in &processes {
        p.start().expect("start");
    }
    for p in &processes {
        p.join().expect("join");
    }
    println!("counter: {}", counter.get().expect("get"));
}
