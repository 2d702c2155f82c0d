//! Test program: draws a progress line with `\r` (`50%\r`, no newline), then
//! waits for its stdin to end before it writes `100%\n`: whoever holds its
//! stdin sees whether the progress line arrived while it still runs.
use std::io::{Read, Write};

fn main() {
    let mut out = std::io::stdout().lock();
    out.write_all(b"50%\r").unwrap();
    out.flush().unwrap();
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
    out.write_all(b"100%\n").unwrap();
    out.flush().unwrap();
}
