//! Builds the guest programs (`guest-tasks/`, a workspace of its own) for
//! `wasm32-wasip2` and copies each one to `target/guests/<name>.wasm`, as
//! wasmtime's test-programs artifacts crate does. Tests and benchmarks find
//! them through the `GUESTS_DIR` environment variable set at compile time
//! (`env!("GUESTS_DIR")`).
//!
//! - The `wasm32-wasip2` target is installed with rustup when missing.
//! - The nested cargo runs with an environment cleaned of the outer build's
//!   variables (target dir, flags, profile, jobserver, ...), so the guests are
//!   built the same way whatever builds the host.
//! - It reruns when anything under `guest-tasks/` (but its `target/`) or
//!   `wit/` changes.
//! - `MP_SKIP_GUEST_BUILD=1` skips it all (a warning says so).

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-wasip2";

fn main() {
    if let Err(msg) = run() {
        eprintln!("\nerror: building the guest programs failed\n\n{msg}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let root = manifest_dir.parent().ok_or("the host crate has no parent directory")?.to_path_buf();
    let guest_ws = root.join("guest-tasks");
    let build_dir = root.join("target").join("guest-build");
    let guests_dir = root.join("target").join("guests");

    println!("cargo:rustc-env=GUESTS_DIR={}", guests_dir.display());
    outside_processes_cfg();
    // `host --version` names the wasmtime it runs on: the locked version.
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let wasmtime = fs::read_to_string(&lock)
        .ok()
        .and_then(|text| locked_version(&text, "wasmtime"))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WASMTIME_VERSION={wasmtime}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MP_SKIP_GUEST_BUILD");
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", guest_ws.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", guest_ws.join("Cargo.lock").display());
    // Every member's directory but never guest-tasks/target (a build there
    // would make this script rerun each time).
    for entry in fs::read_dir(&guest_ws).map_err(|e| format!("cannot read {}: {e}", guest_ws.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() && path.join("Cargo.toml").is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }

    if env::var_os("MP_SKIP_GUEST_BUILD").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo:warning=MP_SKIP_GUEST_BUILD is set: the guest programs were not built");
        return Ok(());
    }

    ensure_target()?;
    build_guests(&guest_ws, &build_dir)?;
    copy_guests(&build_dir.join(TARGET).join("release"), &guests_dir)
}

/// Sets the cfg `outside_processes` when the build has a backend whose
/// processes run outside the host (the native backend: feature `native`, on
/// Linux, the condition under which `backend/mod.rs` builds it). What only
/// such a backend uses (forking, serving shared objects to other hosts) is
/// then built and checked for use; a build without one leaves it out, or
/// leaves it unused without a warning.
fn outside_processes_cfg() {
    println!("cargo::rustc-check-cfg=cfg(outside_processes)");
    let native = env::var_os("CARGO_FEATURE_NATIVE").is_some();
    if native && env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux") {
        println!("cargo::rustc-cfg=outside_processes");
    }
}

/// The version of package `name` in a `Cargo.lock`.
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let header = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&header)? + header.len();
    let end = start + lock[start..].find('"')?;
    Some(lock[start..end].to_string())
}

/// Installs the `wasm32-wasip2` standard library if the toolchain lacks it.
fn ensure_target() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&rustc).display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --print sysroot` failed:\n{}",
            Path::new(&rustc).display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib").join("rustlib").join(TARGET).is_dir() {
        return Ok(());
    }

    println!("cargo:warning=installing the {TARGET} target with rustup (needed to build the guest programs)");
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Some(toolchain) = env::var_os("RUSTUP_TOOLCHAIN") {
        cmd.arg("--toolchain").arg(toolchain);
    }
    let out = cmd.output().map_err(|e| {
        format!(
            "the {TARGET} target is not installed in {} and rustup could not be run ({e}).\n\
             Install it by hand: rustup target add {TARGET}",
            sysroot.display()
        )
    })?;
    if !out.status.success() || !sysroot.join("lib").join("rustlib").join(TARGET).is_dir() {
        return Err(format!(
            "the {TARGET} target is not installed in {} and `rustup target add {TARGET}` failed:\n{}\n\
             Install it by hand: rustup target add {TARGET}",
            sysroot.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether an inherited variable belongs to the outer build and must not
/// reach the nested cargo.
fn leaks(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTDOC",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_INCREMENTAL",
        "TARGET",
        "HOST",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
        "OUT_DIR",
        "NUM_JOBS",
        "LLVM_PROFILE_FILE",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_BUILD_",
        "CARGO_PROFILE_",
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_LLVM_COV",
        "RUSTC", // RUSTC, RUSTC_WRAPPER, RUSTC_WORKSPACE_WRAPPER, RUSTC_LINKER, ...
        "DEP_",
        "__CARGO",
    ];
    EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// `cargo build --release --target wasm32-wasip2` in `guest-tasks/`.
fn build_guests(guest_ws: &Path, build_dir: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .args(["--target", TARGET])
        .arg("--manifest-path")
        .arg(guest_ws.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(build_dir)
        .current_dir(guest_ws)
        .stdin(Stdio::null());
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(leaks) {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} build --release --target {TARGET} --manifest-path {}` failed ({}):\n\n{}",
            Path::new(&cargo).display(),
            guest_ws.join("Cargo.toml").display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    Ok(())
}

/// Copies every built `*.wasm` to `guests_dir/<name>.wasm` (write to a
/// temporary file, then rename: a reader never sees half a file).
fn copy_guests(release_dir: &Path, guests_dir: &Path) -> Result<(), String> {
    fs::create_dir_all(guests_dir).map_err(|e| format!("cannot create {}: {e}", guests_dir.display()))?;
    let entries = fs::read_dir(release_dir).map_err(|e| format!("cannot read {}: {e}", release_dir.display()))?;
    let mut copied = 0;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path.is_file() || path.extension() != Some(OsStr::new("wasm")) {
            continue;
        }
        let name = path.file_name().expect("a file has a name");
        let dest = guests_dir.join(name);
        let tmp = guests_dir.join(format!(".{}.tmp", name.to_string_lossy()));
        fs::copy(&path, &tmp).map_err(|e| format!("cannot copy {} to {}: {e}", path.display(), tmp.display()))?;
        fs::rename(&tmp, &dest).map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), dest.display()))?;
        copied += 1;
    }
    if copied == 0 {
        return Err(format!("the guest build produced no .wasm file in {}", release_dir.display()));
    }
    Ok(())
}
