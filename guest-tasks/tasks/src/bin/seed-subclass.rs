//! Seed: the type form, Python's "subclass `Process` and override `run`"
//! (the `Downloader` example). The object travels to the child as JSON.
use mp::{Process, Run, getpid};
use serde::{Deserialize, Serialize};

/// A process body with state of its own, as Python's `Process` subclass.
#[derive(Serialize, Deserialize)]
struct Downloader {
    url: String,
    size: u64,
}

impl Run for Downloader {
    fn run(&mut self) {
        println!("downloading {} ({} bytes) in pid {}", self.url, self.size, getpid());
    }
}

mp::entries!(; types: Downloader);

fn main() {
    let m = Process::from_type(Downloader { url: "https://example.org/file.bin".into(), size: 1024 });
    m.start().expect("start");
    println!("parent over {}", getpid());
    m.join().expect("join");
}
