//! Test program: prints `hello from pid=<pid>` and, on a second line, its
//! arguments (`args: a b c`). Targets the `program` world (for `getpid`)
//! but has no entries.
fn main() {
    println!("hello from pid={}", mp::getpid());
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args: {}", args.join(" "));
}

mp::entries!();
