//! Seed: two children printing 10000 and 100 lines run concurrently; both are
//! joined, so `over` is the last line.
use mp::{Process, target};

fn task1(name: String) {
    for _ in 0..10000 {
        println!("{name} run");
    }
}

fn task2(name: String) {
    for _ in 0..100 {
        println!("{name} run");
    }
}

mp::entries!(task1, task2);

fn main() {
    let p1 = Process::new(target!(task1), "p1".to_string());
    p1.start().expect("start p1");
    let p2 = Process::new(target!(task2), "p2".to_string());
    p2.start().expect("start p2");
    p2.join().expect("join p2");
    p1.join().expect("join p1");
    println!("over");
}
