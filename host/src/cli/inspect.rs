//! `host inspect FILE`: what a file is, as this host sees it.
//!
//! One `key: value` line each: the file, its size, its kind (a WASI preview 2
//! command, a program of the `mp:host` world, a WASI preview 1 core module),
//! whether it has a `main`, its named entries, its imports, and whether its
//! compiled code is cached. A file that is not WebAssembly (or that this
//! host cannot run) is one line on stderr and exit status 2, as for `run`.

use clap::Args;
use host::{Host, ProgramKind};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct InspectArgs {
    /// The file to look at (.wasm, or .wat text).
    file: PathBuf,

    #[command(flatten)]
    cache: super::cache::CacheArgs,
}

/// Prints what the file is; `Err` (bad input) if it is not a program.
pub(super) fn inspect(args: InspectArgs) -> Result<i32, String> {
    let file = &args.file;
    let size = std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?.len();
    let host = Host::builder().compile_cache(args.cache.setting(&[])).build().map_err(|e| format!("{e:#}"))?;
    let cached = std::fs::read(file).is_ok_and(|bytes| host.is_cached(&bytes));
    let program = host.load(file).map_err(|e| e.to_string())?;
    let imports = program.imports();
    let kind = match program.kind() {
        ProgramKind::Command => "WASI p2 command (a component exporting wasi:cli/run)",
        ProgramKind::Program => "mp program (a component of the mp:host world: named entries, children)",
        ProgramKind::CoreModule if imports.iter().any(|i| i.starts_with("wasi_snapshot_preview1::")) => {
            "WASI p1 module (a core module importing wasi_snapshot_preview1)"
        }
        ProgramKind::CoreModule => "core module (no WASI imports)",
    };
    let list = |items: &[String]| if items.is_empty() { "(none)".to_string() } else { items.join(", ") };
    println!("file: {}", file.display());
    println!("size: {size} bytes");
    println!("kind: {kind}");
    println!("main: {}", if program.has_main() { "yes" } else { "no" });
    println!("entries: {}", list(program.entries()));
    println!("imports: {}", list(&imports));
    match host.compile_cache_dir() {
        None => println!("compiled code: not cached (the compile cache is off)"),
        Some(dir) if cached => println!("compiled code: cached in {}", dir.display()),
        Some(dir) => println!("compiled code: not cached before this load (now kept in {})", dir.display()),
    }
    Ok(0)
}
