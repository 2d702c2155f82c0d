//! Hostile test program: its entry listing (the `list` export the host calls
//! when it loads a program of the mp:host world) allocates without end. The
//! export is written by hand instead of with `mp::entries!`.
use mp::bindings::exports::mp::host::entries::{Batch, BatchResults, Guest};

struct Hostile;

impl Guest for Hostile {
    fn list() -> Vec<String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touched, so that the pages are really there.
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
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
