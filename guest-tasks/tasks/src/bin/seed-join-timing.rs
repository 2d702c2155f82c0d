//! Seed: children sleeping 1, 2 and 3 s start together; the parent prints the
//! elapsed time after each join: about 1, 2 and 3 s.
use std::thread::sleep;
use std::time::{Duration, Instant};

use mp::{Process, target};

fn task(name: String, secs: u64) {
    println!("{name} is running");
    sleep(Duration::from_secs(secs));
    println!("{name} is gone");
}

mp::entries!(task);

fn main() {
    let start = Instant::now();
    let ps: Vec<Process> = [("changxin", 1), ("liye", 2), ("haigou", 3)]
        .into_iter()
        .map(|(name, secs)| {
            let p = Process::new(target!(task), (name.to_string(), secs));
            p.start().expect("start");
            p
        })
        .collect();
    for (i, p) in ps.iter().enumerate() {
        p.join().expect("join");
        println!("joined {}: {:.3} s", i + 1, start.elapsed().as_secs_f64());
    }
}
