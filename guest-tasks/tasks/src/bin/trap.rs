//! Test program: panics with "deliberate panic" (a trap: exitcode 1).
fn main() {
    println!("about to panic");
    panic!("deliberate panic");
}
