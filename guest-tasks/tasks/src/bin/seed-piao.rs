//! Seed: four processes with random sleeps of 1-4 s, in the function form and
//! in the type form. The parent prints `main` right after starting them, long
//! before any child ends; each child prints `... piao end` after its sleep.
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::thread::sleep;
use std::time::Duration;

use mp::{Process, Run, target};
use serde::{Deserialize, Serialize};

/// 1..=4 seconds, random (std's hasher keys come from WASI's random source).
fn random_secs() -> u64 {
    1 + RandomState::new().hash_one(mp::getpid()) % 4
}

fn piao(name: String) {
    println!("{name} piaoing");
    sleep(Duration::from_secs(random_secs()));
    println!("{name} piao end");
}

/// The same body in the type form (Python's `class Piao(Process)`).
#[derive(Serialize, Deserialize)]
struct Piao {
    name: String,
}

impl Run for Piao {
    fn run(&mut self) {
        piao(std::mem::take(&mut self.name));
    }
}

mp::entries!(piao; types: Piao);

fn main() {
    let names = ["egon", "alex", "wupeiqi", "yuanhao"];
    let mut ps: Vec<Process> = names.iter().map(|n| Process::new(target!(piao), n.to_string())).collect();
    ps.extend(names.iter().map(|n| Process::from_type(Piao { name: format!("{n}-class") })));
    for p in &ps {
        p.start().expect("start");
    }
    println!("main");
    for p in &ps {
        p.join().expect("join");
    }
}
