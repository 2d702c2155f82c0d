//! Hostile test program: its entry listing (the `list` export the host calls
//! when it loads a program of the mp:host world) never returns. The export
//! is written by hand instead of with `mp::entries!`, which lists names only.
use mp::bindings::exports::mp::host::entries::{Batch, BatchResults, Guest};

struct Hostile;

impl Guest for Hostile {
    fn list() -> Vec<String> {
        let mut spins = 0u64;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn call(name: String, _args: Vec<u8>) -> Result<Vec<u8>, String> {
        Err(format!("no entry {name}"))
    }

    fn call_many(name: String, args: Batch) -> BatchResults {
        mp::__private::fail_all(&args, format!("no entry {name}"))
    }
}

mp::bindings::export!(Hostile);

fn main() {
    println!("main ran");
}
