//! Waiting for the first of several children (Python's
//! `multiprocessing.connection.wait` on their sentinels): three children
//! sleep 3, 1 and 2 seconds; `mp::wait` reports each as it ends, the 1 s
//! child first.
use std::time::Duration;

use mp::{Process, target};

fn nap(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

mp::entries!(nap);

fn main() {
    let naps = [3u64, 1, 2];
    let children: Vec<Process> =
        naps.iter().map(|&secs| Process::new(target!(nap), secs).with_name(format!("sleeper-{secs}s"))).collect();
    for child in &children {
        child.start().expect("start");
    }
    let mut left: Vec<usize> = (0..children.len()).collect();
    while !left.is_empty() {
        let sentinels: Vec<_> = left.iter().map(|&i| children[i].sentinel()).collect();
        let waitables: Vec<&dyn mp::Waitable> = sentinels.iter().map(|s| s as &dyn mp::Waitable).collect();
        let ready = mp::wait(&waitables, None).expect("wait");
        let ended: Vec<usize> = ready.iter().map(|&at| left[at]).collect();
        left.retain(|i| !ended.contains(i));
        for i in ended {
            println!("ended: {} after {} s", children[i].name(), naps[i]);
        }
    }
}
