//! Test program for output handling: prints argv[1] (default 1000) numbered
//! lines of about 100 characters, `line I of N xxxx...`, on stdout and
//! `stderr line I` on stderr for the first, middle and last line; with
//! argv[2] == `partial`, ends with `partial-tail` and no newline. Exit 0.
use std::io::Write;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let partial = std::env::args().nth(2).as_deref() == Some("partial");
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 1..=n {
        let head = format!("line {i} of {n} ");
        let pad = "x".repeat(100usize.saturating_sub(head.len()));
        writeln!(out, "{head}{pad}").unwrap();
        if i == 1 || i == n / 2 || i == n {
            eprintln!("stderr line {i}");
        }
    }
    if partial {
        write!(out, "partial-tail").unwrap();
    }
    out.flush().unwrap();
}
