//! A `Manager` dict shared by four processes: each adds 1 to one entry
//! 1,000 times, each addition its own atomic `update` (no lock needed, none
//! lost); prints 4000.
use mp::{Dict, Manager, Process, target};

const PROCESSES: usize = 4;
const ADDS: u64 = 1_000;

fn adder(counts: Dict<String, u64>) {
    for _ in 0..ADDS {
        counts.update("count".to_string(), |n| n.unwrap_or(0) + 1).expect("update");
    }
}

mp::entries!(adder);

fn main() {
    let manager = Manager::new().expect("manager");
    let counts = manager.dict::<String, u64>().expect("dict");
    counts.set("count".to_string(), &0).expect("set");
    let processes: Vec<Process> = (0..PROCESSES).map(|_| Process::with_handles(target!(adder), &counts)).collect();
    for p in &processes {
        p.start().expect("start");
    }
    for p in &processes {
        p.join().expect("join");
    }
    println!("{}", counts.get(&"count".to_string()).expect("get").unwrap_or(0));
}
