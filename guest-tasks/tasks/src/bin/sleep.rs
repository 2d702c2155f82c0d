//! Test program: prints `sleeping`, sleeps argv[1] seconds (default 3600,
//! fractions allowed), prints `woke`.
use std::time::Duration;

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3600.0);
    println!("sleeping");
    std::thread::sleep(Duration::from_secs_f64(secs));
    println!("woke");
}
