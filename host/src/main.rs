//! The `host` binary: see [`cli`] for the command line.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
