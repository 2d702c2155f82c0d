//! A program: a Wasm file compiled once, instantiated for every process.
//!
//! Three kinds run here, as `wasmtime run` accepts them: a WASI preview 2
//! command component (its `main` only), a component of the `mp:host/program`
//! world (a `main` and named entries, and it can spawn children), and a WASI
//! preview 1 core module (its `_start`, or an exported function taking and
//! returning nothing). Loading checks the kind and the imports up front, so
//! that a wrong file is one clear [`LoadError`] before any process starts.

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
    /// The compiled code, serialized for native workers (made on first use).
    pub(crate) artifact: OnceLock<PathBuf>,
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
            Code::Component(pre) => pre.component().component_type().imports(engine).map(|(name, _)| name.to_string()).collect(),
            Code::Core(pre) => pre.module().imports().map(|i| format!("{}::{}", i.module(), i.name())).collect(),
        }
    }

    /// The compiled code as a file a native worker maps instead of compiling.
    #[cfg_attr(not(all(feature = "native", target_os = "linux")), allow(dead_code))]
    pub(crate) fn artifact(&self) -> std::io::Result<PathBuf> {
        if let Some(path) = self.inner.artifact.get() {
            return Ok(path.clone());
        }
        let host = &self.inner.host;
        let dir = match host.artifacts.get() {
            Some(dir) => dir,
            None => {
                let dir = tempfile::Builder::new().prefix("host-artifacts-").tempdir()?;
                host.artifacts.get_or_init(|| dir)
            }
        };
        let bytes = match &self.inner.code {
            Code::Component(pre) => pre.component().serialize(),
            Code::Core(pre) => pre.module().serialize(),
        }
        .map_err(std::io::Error::other)?;
        let path = dir.path().join(format!("{:p}.cwasm", Arc::as_ptr(&self.inner)));
        std::fs::write(&path, bytes)?;
        Ok(self.inner.artifact.get_or_init(|| path).clone())
    }

    pub(crate) fn has_entry(&self, name: &str) -> bool {
        self.inner.entries.iter().any(|e| e == name)
    }
}

/// Reads and compiles the program at `path`.
pub(crate) fn load_file(host: &Arc<HostInner>, path: &Path) -> Result<Program, LoadError> {
    let bytes = std::fs::read(path)
        .map_err(|e| LoadError::new(format!("cannot read {}: {e}", path.display())))?;
    load(host, &bytes, Some(path.to_path_buf()))
}

/// Compiles `bytes` (binary Wasm, or the text format) into a program.
pub(crate) fn load(host: &Arc<HostInner>, bytes: &[u8], path: Option<PathBuf>) -> Result<Program, LoadError> {
    let name = path
        .as_ref()
        .map_or_else(|| "the program".to_string(), |p| p.display().to_string());
    let inner = if is_component(bytes) {
        load_component(host, bytes, &name)?
    } else if is_core_module(bytes) || looks_like_text(bytes) {
        load_core(host, bytes, &name)?
    } else {
        return Err(LoadError::new(format!(
            "{name} is not a WebAssembly file (expected a .wasm component or core module)"
        )));
    };
    Ok(Program {
        inner: Arc::new(ProgramInner { host: host.clone(), path, ..inner }),
    })
}

fn load_component(host: &Arc<HostInner>, bytes: &[u8], name: &str) -> Result<ProgramInner, LoadError> {
    let component = Component::new(&host.engine, bytes)
        .map_err(|e| LoadError::new(format!("{name} is not a valid WebAssembly component: {}", first_line(&e))))?;
    let has_main = component_exports(&component, &host.engine, RUN_EXPORT);
    let has_entries = component_exports(&component, &host.engine, ENTRIES_EXPORT);
    if !has_main && !has_entries {
        return Err(LoadError::new(format!(
            "{name} is a component of an unsupported world: it exports neither wasi:cli/run \
             (a WASI command) nor mp:host/entries (a program of the mp:host world)"
        )));
    }
    let pre = host
        .component_linker
        .instantiate_pre(&component)
        .map_err(|e| unsupported_imports(name, &e))?;
    let entries = if has_entries {
        host.block_on(crate::instance::list_entries(host.clone(), pre.clone()))
            .map_err(|e| LoadError::new(format!("{name}: cannot list its entries: {}", first_line(&e))))?
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
        artifact: OnceLock::new(),
    })
}

fn load_core(host: &Arc<HostInner>, bytes: &[u8], name: &str) -> Result<ProgramInner, LoadError> {
    let module = Module::new(&host.engine, bytes)
        .map_err(|e| LoadError::new(format!("{name} is not a valid WebAssembly module: {}", first_line(&e))))?;
    let pre = host
        .core_linker
        .instantiate_pre(&module)
        .map_err(|e| unsupported_imports(name, &e))?;
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
        artifact: OnceLock::new(),
    })
}

fn component_exports(component: &Component, engine: &wasmtime::Engine, prefix: &str) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(export, item)| export.starts_with(prefix) && matches!(item.ty, ComponentItem::ComponentInstance(_)))
}

fn unsupported_imports(name: &str, error: &wasmtime::Error) -> LoadError {
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

/// The text format: what `wasmtime run` also accepts for a `.wat` file.
fn looks_like_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| text.trim_start().starts_with("(module"))
}

pub(crate) fn first_line(error: &wasmtime::Error) -> String {
    format!("{error:#}").lines().next().unwrap_or_default().to_string()
}

/// The compiled code of a native worker's program: the host's artifact,
/// mapped, linked against `engines`.
#[cfg(all(feature = "native", target_os = "linux"))]
pub(crate) fn compiled_code(
    engines: &crate::runtime::Engines,
    start: &crate::backend::native::protocol::Start,
) -> Result<Code, LoadError> {
    let name = start.artifact.display().to_string();
    let unreadable = |e: wasmtime::Error| LoadError::new(format!("cannot load compiled code {name}: {}", first_line(&e)));
    let unlinkable = |e: wasmtime::Error| unsupported_imports(&name, &e);
    // SAFETY: the artifact was serialized by our own host, for this engine
    // configuration, and nobody else writes to its private directory.
    Ok(if start.core {
        let module = unsafe { Module::deserialize_file(&engines.engine, &start.artifact) }.map_err(unreadable)?;
        Code::Core(engines.core_linker.instantiate_pre(&module).map_err(unlinkable)?)
    } else {
        let component =
            unsafe { Component::deserialize_file(&engines.engine, &start.artifact) }.map_err(unreadable)?;
        Code::Component(engines.component_linker.instantiate_pre(&component).map_err(unlinkable)?)
    })
}

/// The program a native worker runs, from its compiled code.
#[cfg(all(feature = "native", target_os = "linux"))]
pub(crate) fn from_code(host: &Arc<HostInner>, start: &crate::backend::native::protocol::Start, code: Code) -> Program {
    let kind = match (&code, start.entries.is_empty() && start.has_main) {
        (Code::Core(_), _) => ProgramKind::CoreModule,
        (Code::Component(_), true) => ProgramKind::Command,
        (Code::Component(_), false) => ProgramKind::Program,
    };
    Program {
        inner: Arc::new(ProgramInner {
            host: host.clone(),
            path: start.source.clone(),
            code,
            entries: start.entries.clone(),
            has_main: start.has_main,
            kind,
            artifact: OnceLock::from(start.artifact.clone()),
        }),
    }
}
