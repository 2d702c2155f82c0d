//! The `host` binary: see [`cli`] for the command line. The same binary is
//! the native backend's worker when started as `host __worker`.

mod cli;

fn main() {
    #[cfg(all(feature = "native", target_os = "linux"))]
    if std::env::args_os().nth(1).is_some_and(|arg| arg == host::WORKER_ARG) {
        std::process::exit(host::worker::main());
    }
    tune_malloc();
    no_error_backtraces_unless_asked();
    std::process::exit(cli::main());
}

/// Errors capture no backtrace unless `RUST_LIB_BACKTRACE` asks for them
/// (panics still follow `RUST_BACKTRACE`). The CLI prints none, and with
/// `RUST_BACKTRACE=1` set every process ended by a terminate or a timeout
/// captured one as its fiber unwound: a third of the time taken to end
/// 100,000 of them.
fn no_error_backtraces_unless_asked() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet to read the environment meanwhile.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

/// The main malloc arena grows 64 MiB of address space at a time instead
/// of the default 128 KiB: a run of 100,000 processes (each about 20 KiB of
/// host heap) otherwise grows it by a system call every few processes.
/// Untouched pad costs no memory. The other threads keep arenas of their
/// own: one shared arena was tried, and on an idle machine its lock's waits
/// and wake-ups cost more than the others' page-at-a-time growth (in
/// alternating runs of 100,000 sleepers, the good runs had all started in
/// 3.9-4.3 s with their own arenas, in 4.9 s with one).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called before the CLI starts any thread; `mallopt` only sets
    // glibc's allocator parameters (a refused one leaves the default).
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
