//! Seed: two children (1 s each) run while the parent does its own 3 s task:
//! about 3 s in all, not 5.
use std::thread::sleep;
use std::time::{Duration, Instant};

use mp::{Process, target};

fn task(name: String) {
    println!("{name} is running");
    sleep(Duration::from_secs(1));
    println!("{name} is gone");
}

fn task2(name: &str) {
    println!("{name} is running");
    sleep(Duration::from_secs(3));
    println!("{name} is gone");
}

mp::entries!(task);

fn main() {
    let p1 = Process::new(target!(task), "changxin".to_string());
    let p2 = Process::new(target!(task), "liye".to_string());
    let start = Instant::now();
    p1.start().expect("start p1");
    p2.start().expect("start p2");
    task2("haigou");
    p1.join().expect("join p1");
    p2.join().expect("join p2");
    println!("concurrent elapsed: {:.3} s", start.elapsed().as_secs_f64());
}
