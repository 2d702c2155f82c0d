//! `host new NAME`: a new guest program with the `mp` SDK, ready to build.
//!
//! The crate it writes is a workspace of its own (so it can live anywhere,
//! in this repository or outside it) that depends on the SDK by path: the
//! `guest-tasks/mp` this host was built from, or `--sdk PATH`. It pins the
//! repository's toolchain (which brings the `wasm32-wasip2` target) and
//! builds small guests as `guest-tasks/` does. `cargo build --target
//! wasm32-wasip2 --release` in it makes `target/wasm32-wasip2/release/NAME.wasm`,
//! which `host run` and `host map` take as they are.

use clap::Args;
use std::path::{Path, PathBuf};

/// The SDK next to this host's sources, where a build from a clone finds it.
const SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-tasks/mp");

/// The repository's toolchain file: the guests' compiler and target.
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

#[derive(Args, Debug)]
pub(super) struct NewArgs {
    /// The program's name: a new directory of that name is made, and the
    /// program builds to NAME.wasm.
    name: String,

    /// Where to make it (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    dir: PathBuf,

    /// The `mp` SDK crate to depend on (default: the one this host was built from).
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

/// Writes the new crate; `Err` (bad input) for a bad name, an existing
/// directory or an SDK that is not there.
pub(super) fn new(args: NewArgs) -> Result<i32, String> {
    check_name(&args.name)?;
    let sdk = args.sdk.clone().unwrap_or_else(|| PathBuf::from(SDK));
    if !sdk.join("Cargo.toml").is_file() {
        return Err(format!("no mp SDK at {}: name it with --sdk PATH (guest-tasks/mp of a clone)", sdk.display()));
    }
    let sdk = sdk.canonicalize().map_err(|e| format!("--sdk {}: {e}", sdk.display()))?;
    let root = args.dir.join(&args.name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    write_crate(&root, &args.name, &sdk).map_err(|e| format!("cannot write {}: {e}", root.display()))?;
    println!("created {}: a guest program with the mp SDK", root.display());
    println!("  cd {} && cargo build --target wasm32-wasip2 --release", root.display());
    println!("  host run target/wasm32-wasip2/release/{}.wasm", args.name);
    println!("  seq 1 5 | host map target/wasm32-wasip2/release/{}.wasm --entry square", args.name);
    Ok(0)
}

/// A package name cargo accepts and a file name a shell needs no quotes for.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("invalid program name `{name}`: use letters, digits, - and _, starting with a letter"))
    }
}

fn write_crate(root: &Path, name: &str, sdk: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("src"))?;
    // A TOML basic string: backslashes and quotes escaped.
    let sdk = sdk.display().to_string().replace('\\', "\\\\").replace('"', "\\\"");
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[dependencies]
mp = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}

# A workspace of its own: the crate builds wherever it lives.
[workspace]

# Fast guests that build quickly, as guest-tasks/ builds them.
[profile.release]
opt-level = 3
debug = false
strip = "debuginfo"
codegen-units = 16
incremental = false
"#
    );
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::write(root.join("rust-toolchain.toml"), TOOLCHAIN)?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    std::fs::write(root.join("src/main.rs"), MAIN.replace("NAME", name))?;
    Ok(())
}

/// The new program: a `main` that starts children, and an entry for `host map`.
const MAIN: &str = r#"//! NAME: a guest program for the mp host (Python's multiprocessing for Wasm).
//!
//! Build: `cargo build --target wasm32-wasip2 --release`
//! Run:   `host run target/wasm32-wasip2/release/NAME.wasm`
//! Map:   `seq 1 5 | host map target/wasm32-wasip2/release/NAME.wasm --entry square`

use mp::{Process, getpid, target};

/// A child's body: it runs in a fresh instance of this program, never `main`.
fn greet(n: u32) {
    println!("child {n}: pid {} (parent {})", getpid(), mp::getppid());
}

/// An entry for `host map`: one JSON argument in, one JSON result out.
fn square(x: i64) -> i64 {
    x * x
}

// The entries a child (or `host map`) can start at; once per program.
mp::entries!(greet, square);

fn main() {
    let children: Vec<Process> = (1..=3).map(|n| Process::new(target!(greet), n)).collect();
    for child in &children {
        child.start().expect("start");
    }
    for child in &children {
        child.join().expect("join");
        println!("{} ended with {:?}", child.name(), child.exitcode());
    }
    println!("NAME: done in pid {}", getpid());
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-task_2").is_ok());
        assert!(check_name("2task").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("").is_err());
    }
}
