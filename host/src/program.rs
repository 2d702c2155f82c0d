//! A program: a Wasm file compiled once, instantiated for every process.
//!
//! Three kinds run here, as `wasmtime run` accepts them: a WASI preview 2
//! command component (its `main` only), a component of the `mp:host/program`
//! world (a `main` and named entries, and it can spawn children), and a WASI
//! preview 1 core module (its `_start`, or an exported function taking and
//! returning nothing). Loading checks the kind and the imports up front, so
//! that a wrong file is one clear [`LoadError`] before any process starts.

use crate::cache::{Artifact, Outcome};
use crate::command::Command;
use crate::error::LoadError;
use crate::instance::Ctx;
use crate::runtime::HostInner;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Component, types::ComponentItem};
use wasmtime::{ExternType, Module};

const RUN_EXPORT: &str = "wasi:cli/run@";
const ENTRIES_EXPORT: &str = "mp:host/entries@";
const CORE_MAIN: &str = "_start";

/// A loaded, compiled program. Cheap to clone; every clone shares the code.
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let host = host::Host::new()?;
/// let program = host.load("target/guests/hello.wasm")?;
/// let status = program.command().spawn()?.join()?;
/// assert!(status.success());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Program {
    pub(crate) inner: Arc<ProgramInner>,
}

pub(crate) struct ProgramInner {
    pub(crate) host: Arc<HostInner>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) code: Code,
    pub(crate) entries: Vec<String>,
    pub(crate) has_main: bool,
    pub(crate) kind: ProgramKind,
    /// Whatever a backend keeps per program, made on first use (a backend
    /// that runs processes outside the host: the compiled code it hands
    /// them; a build without one never reads it).
    #[cfg_attr(not(outside_processes), allow(dead_code))]
    pub(crate) backend_data: OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

/// The compiled code, ready to instantiate.
#[derive(Clone)]
pub(crate) enum Code {
    Component(wasmtime::component::InstancePre<Ctx>),
    Core(wasmtime::InstancePre<Ctx>),
}

/// What a program is, as far as running it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// A WASI preview 2 command: it has a `main` and nothing else.
    Command,
    /// A component of the `mp:host/program` world: named entries, children.
    Program,
    /// A WASI preview 1 core module.
    CoreModule,
}

impl Program {
    /// A new, not yet started process of this program, at its `main`.
    pub fn command(&self) -> Command {
        Command::new(self.clone())
    }

    /// The names of the entries a process can start at (besides `main`).
    pub fn entries(&self) -> &[String] {
        &self.inner.entries
    }

    /// True if the program has a `main` (`wasi:cli/run` or `_start`).
    pub fn has_main(&self) -> bool {
        self.inner.has_main
    }

    /// The file it was loaded from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// What the program is: a WASI command, an `mp:host` program or a core module.
    pub fn kind(&self) -> ProgramKind {
        self.inner.kind
    }

    /// What the program imports: a component's interfaces
    /// (`wasi:cli/environment@0.2.6`, `mp:host/process@0.1.0`, ...), a core
    /// module's functions as `module::name` (`wasi_snapshot_preview1::fd_write`).
    pub fn imports(&self) -> Vec<String> {
        let engine = &self.inner.host.engine;
        match &self.inner.code {
            Code::Component(pre) => {
                pre.component().component_type().imports(engine).map(|(name, _)| name.to_string()).collect()
            }
            Code::Core(pre) => pre.module().imports().map(|i| format!("{}::{}", i.module(), i.name())).collect(),
        }
    }

    pub(crate) fn has_entry(&self, name: &str) -> bool {
        self.inner.entries.iter().any(|e| e == name)
    }
}

/// The largest program file read: WebAssembly's own bound on a module
/// (wasmparser's), so that a path such as `/dev/zero` is refused rather
/// than read until the host runs out of memory.
const MAX_PROGRAM_FILE: u64 = 1 << 30;

/// Reads and compiles the program at `path`.
pub(crate) fn load_file(host: &Arc<HostInner>, path: &Path) -> Result<Program, LoadError> {
    let cannot_read = |e: std::io::Error| LoadError::new(format!("cannot read {}: {e}", path.display()));
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PROGRAM_FILE + 1), &mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_PROGRAM_FILE {
        return Err(LoadError::new(format!(
            "{} is larger than {}, the most a WebAssembly program may be",
            path.display(),
            crate::limits::format_size(MAX_PROGRAM_FILE)
        )));
    }
    load(host, &bytes, Some(path.to_path_buf()))
}

/// Compiles `bytes` (binary Wasm, or the text format) into a program.
pub(crate) fn load(host: &Arc<HostInner>, bytes: &[u8], path: Option<PathBuf>) -> Result<Program, LoadError> {
    let name = path.as_ref().map_or_else(|| "the program".to_string(), |p| p.display().to_string());
    let bytes = binary(bytes, &name)?;
    let bytes = &bytes[..];
    let inner = if is_component(bytes) { load_component(host, bytes, &name)? } else { load_core(host, bytes, &name)? };
    Ok(Program { inner: Arc::new(ProgramInner { host: host.clone(), path, ..inner }) })
}

/// The binary of a program's file: itself, or its text format parsed.
fn binary<'a>(bytes: &'a [u8], name: &str) -> Result<std::borrow::Cow<'a, [u8]>, LoadError> {
    if is_component(bytes) || is_core_module(bytes) {
        Ok(bytes.into())
    } else if looks_like_text(bytes) {
        let binary = wat::parse_bytes(bytes).map_err(|e| {
            let why = e.to_string();
            LoadError::new(format!("{name} is not valid WebAssembly text: {}", why.lines().next().unwrap_or_default()))
        })?;
        Ok(binary.into_owned().into())
    } else {
        Err(LoadError::new(format!(
            "{name} is not a WebAssembly file (expected a .wasm component or core module, or .wat text)"
        )))
    }
}

/// Whether the host's compile cache holds the compiled code of `bytes`.
pub(crate) fn is_cached(host: &HostInner, bytes: &[u8]) -> bool {
    let (Some(cache), Ok(bytes)) = (&host.compile_cache, binary(bytes, "")) else { return false };
    if is_component(&bytes) { cache.holds::<Component>(&bytes) } else { cache.holds::<Module>(&bytes) }
}

/// Compiles `bytes` for the host's engine, through its compile cache if it has one.
fn compile<A: Artifact>(host: &HostInner, bytes: &[u8]) -> wasmtime::Result<A> {
    let Some(cache) = &host.compile_cache else { return A::compile(&host.engine, bytes) };
    let (code, outcome) = cache.load::<A>(&host.engine, bytes)?;
    match outcome {
        Outcome::Hit(path) => tracing::info!(entry = %path.display(), "compile cache: hit"),
        Outcome::Stored(path) => tracing::info!(entry = %path.display(), "compile cache: compiled and stored"),
        Outcome::Replaced(path, why) => {
            tracing::warn!(entry = %path.display(), "compile cache: entry unusable ({why}): compiled anew and replaced")
        }
        Outcome::NotStored(why) => tracing::warn!("compile cache: compiled, not stored: {why}"),
    }
    Ok(code)
}

fn load_component(host: &Arc<HostInner>, bytes: &[u8], name: &str) -> Result<ProgramInner, LoadError> {
    let component = compile::<Component>(host, bytes)
        .map_err(|e| LoadError::new(format!("{name} is not a valid WebAssembly component: {}", first_line(&e))))?;
    let has_main = component_exports(&component, &host.engine, RUN_EXPORT);
    let has_entries = component_exports(&component, &host.engine, ENTRIES_EXPORT);
    if !has_main && !has_entries {
        return Err(LoadError::new(format!(
            "{name} is a component of an unsupported world: it exports neither wasi:cli/run \
             (a WASI command) nor mp:host/entries (a program of the mp:host world)"
        )));
    }
    let pre = host.component_linker.instantiate_pre(&component).map_err(|e| unsupported_imports(name, &e))?;
    let entries = if has_entries {
        host.block_on(crate::instance::list_entries(host.clone(), pre.clone()))
            .map_err(|why| LoadError::new(format!("{name}: cannot list its entries: {why}")))?
    } else {
        Vec::new()
    };
    Ok(ProgramInner {
        host: host.clone(),
        path: None,
        code: Code::Component(pre),
        entries,
        has_main,
        kind: if has_entries { ProgramKind::Program } else { ProgramKind::Command },
        backend_data: OnceLock::new(),
    })
}

fn load_core(host: &Arc<HostInner>, bytes: &[u8], name: &str) -> Result<ProgramInner, LoadError> {
    let module = compile::<Module>(host, bytes)
        .map_err(|e| LoadError::new(format!("{name} is not a valid WebAssembly module: {}", first_line(&e))))?;
    let pre = host.core_linker.instantiate_pre(&module).map_err(|e| unsupported_imports(name, &e))?;
    let entries: Vec<String> = module
        .exports()
        .filter(|export| export.name() != CORE_MAIN)
        .filter(|export| match export.ty() {
            ExternType::Func(f) => f.params().len() == 0 && f.results().len() == 0,
            _ => false,
        })
        .map(|export| export.name().to_string())
        .collect();
    let has_main = module.get_export(CORE_MAIN).is_some();
    Ok(ProgramInner {
        host: host.clone(),
        path: None,
        code: Code::Core(pre),
        entries,
        has_main,
        kind: ProgramKind::CoreModule,
        backend_data: OnceLock::new(),
    })
}

fn component_exports(component: &Component, engine: &wasmtime::Engine, prefix: &str) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(export, item)| export.starts_with(prefix) && matches!(item.ty, ComponentItem::ComponentInstance(_)))
}

pub(crate) fn unsupported_imports(name: &str, error: &wasmtime::Error) -> LoadError {
    LoadError::new(format!(
        "{name} needs what this host does not provide ({}); it runs WASI 0.2 commands, \
         WASI preview 1 modules and programs of the mp:host world",
        first_line(error)
    ))
}

fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(b"\0asm") && bytes[6..8] == [1, 0]
}

fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes.starts_with(b"\0asm") && bytes[4..8] == [1, 0, 0, 0]
}

/// The text format, as `wasmtime run` accepts it for a `.wat` file: UTF-8
/// whose first token, after whitespace and comments (`;; ...` to the end of
/// the line, `(; ... ;)` nested), opens a form: `(module`, `(component`, or
/// a module's fields alone (`(func ...`).
fn looks_like_text(bytes: &[u8]) -> bool {
    let Ok(mut text) = std::str::from_utf8(bytes) else { return false };
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix(";;") {
            text = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if text.starts_with("(;") {
            match skip_block_comment(text) {
                Some(rest) => text = rest,
                None => return false,
            }
        } else {
            return text.starts_with('(');
        }
    }
}

/// What follows the (nested) block comment `text` starts with; `None` if
/// it never ends.
fn skip_block_comment(text: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix("(;") {
            depth += 1;
            rest = after;
        } else if let Some(after) = rest.strip_prefix(";)") {
            depth -= 1;
            rest = after;
            if depth == 0 {
                return Some(rest);
            }
        } else {
            let mut chars = rest.chars();
            chars.next()?;
            rest = chars.as_str();
        }
    }
}

pub(crate) fn first_line(error: &wasmtime::Error) -> String {
    format!("{error:#}").lines().next().unwrap_or_default().to_string()
}
