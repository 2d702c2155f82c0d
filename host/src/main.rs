//! The `host` binary: see [`cli`] for the command line. The same binary is
//! the native backend's worker when started as `host __worker`.

mod cli;

fn main() {
    #[cfg(all(feature = "native", target_os = "linux"))]
    if std::env::args_os().nth(1).is_some_and(|arg| arg == host::WORKER_ARG) {
        std::process::exit(host::worker::main());
    }
    std::process::exit(cli::main());
}
