//! Seed: ten processes, started together, then joined one by one; `over` is
//! the last line.
use mp::{Process, target};

fn task1(name: u32) {
    for _ in 0..10 {
        println!("{name} run");
    }
}

mp::entries!(task1);

fn main() {
    let ps: Vec<Process> = (0..10)
        .map(|i| {
            let p = Process::new(target!(task1), i);
            p.start().expect("start");
            p
        })
        .collect();
    for p in &ps {
        p.join().expect("join");
    }
    println!("over");
}
