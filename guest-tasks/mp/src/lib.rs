//! `mp`: Python's `multiprocessing`, for Rust programs compiled to
//! `wasm32-wasip2` and run by the `host` of this project.
//!
//! # The model
//!
//! A *program* is one Wasm component; a *process* is one instance of it, with
//! its own memory and its own pid. A program that uses this crate targets the
//! `program` world of `wit/mp.wit`: it imports the host's `process` interface
//! and exports *entries*, named functions (and types) at which the host can
//! start a child. Creating a [`Process`] names an entry of **this same
//! program**; starting it makes the host create a fresh instance of the
//! program and call that entry with the serialized arguments. This is Python's
//! `spawn` start method:
//!
//! - **Children never run `main`.** A child enters at its named entry, so
//!   `fn main` plays the part of Python's `if __name__ == '__main__':` guard.
//!   The re-entry guard is structural: there is nothing to forget.
//! - **Module state starts fresh in every child.** A `static` in a child holds
//!   its initial value, whatever the parent did to its own copy, and nothing
//!   the child does is visible to the parent: processes share no memory.
//! - **Arguments and results travel as MessagePack** (`rmp-serde`, one
//!   place: the `codec` module), so an entry's argument type must implement
//!   [`serde::Deserialize`] and the value passed to [`Process::new`]
//!   [`serde::Serialize`]. A `Vec<u8>` travels as raw bytes. The format
//!   describes itself, so the host can show values as JSON (`host map`).
//!
//! # Example
//!
//! ```no_run
//! use mp::{Process, getpid, target};
//!
//! fn worker(n: u32) {
//!     println!("child {n} pid={}", getpid());
//! }
//!
//! // The entries this program can be started at; exactly once per program.
//! mp::entries!(worker);
//!
//! fn main() {
//!     let p = Process::new(target!(worker), 5).with_name("w");
//!     p.start().unwrap();
//!     p.join().unwrap();
//!     println!("{:?} {:?} {}", p.exitcode(), p.pid(), p.is_alive());
//! }
//! ```
//!
//! The type form (Python's "subclass `Process` and override `run`") is the
//! [`Run`] trait with [`Process::from_type`], registered with
//! `mp::entries!(...; types: MyType)`.
//!
//! # Entry functions
//!
//! An entry is a plain `fn` taking zero, one or several arguments and
//! returning anything serializable (`()` included). With several arguments
//! the value passed to [`Process::new`] is a tuple, as Python's `args=(..)`:
//!
//! ```no_run
//! # use mp::{Process, target};
//! fn hello() { println!("hello"); }
//! fn square(x: i64) -> i64 { x * x }
//! fn add(a: i32, b: i32) -> i32 { a + b }
//! mp::entries!(hello, square, add);
//! # fn main() {
//! Process::new(target!(hello), ()).start().unwrap();
//! Process::new(target!(square), 7).start().unwrap();
//! Process::new(target!(add), (1, 2)).start().unwrap();
//! # }
//! ```
//!
//! # Pools
//!
//! [`Pool`] is Python's `multiprocessing.Pool`: worker processes (children
//! of this one, daemonic) that run entries of this program as tasks:
//!
//! ```no_run
//! fn square(x: i64) -> i64 { x * x }
//! mp::entries!(square);
//! fn main() {
//!     let pool = mp::Pool::new(2);
//!     let squares: Vec<i64> = pool.map(mp::target!(square), 1..=10).unwrap();
//!     let nine = pool.apply_async(mp::target!(square), 3);
//!     println!("{squares:?} {}", nine.get().unwrap());
//!     pool.close();
//!     pool.join().unwrap();
//! }
//! ```
//!
//! An entry that panics ends its process with exitcode 1; one that calls
//! [`exit`]`(n)` ends it with exitcode `n` (`std::process::exit` on wasip2
//! can only say success or failure: any `n != 0` becomes 1).

use std::fmt;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod codec;
pub mod sync;
/// Why an operation on a shared object failed (see [`sync::Error`]).
pub use sync::Error as SyncError;
pub use sync::{
    Array, Barrier, BoundedSemaphore, Condition, Connection, Event, JoinableQueue, Lock, LockGuard, Pipe, Queue, RLock,
    Semaphore, SemaphoreGuard, SimpleQueue, Value,
};

/// The bindings generated from `wit/` by `wit-bindgen` (world `program`).
///
/// Used by [`entries!`]; programs normally need nothing from here.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "program",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "::mp::bindings",
    });
}

/// `wasi:cli/exit@0.2.12`, for [`exit`].
mod wasi_exit {
    wit_bindgen::generate!({
        inline: "package mp:sdk; world exit { import wasi:cli/exit@0.2.12; }",
        path: "wit/wasi-cli-exit.wit",
        generate_all,
    });
}

use bindings::mp::host::process as wit;

mod process;
pub use process::{
    Fork, Process, active_children, cpu_count, current_process, exit, fork, getpid, getppid, parent_process,
};

mod pool;
pub use pool::{AsyncResult, Imap, MapResult, Pool, PoolBuilder, TaskError};

pub mod manager;
pub use manager::{Dict, List, Manager, Namespace};

mod wait;
pub use wait::{Sentinel, WaitTarget, Waitable, wait};

#[doc(hidden)]
pub use serde_json as __serde_json;

/// Why an operation on a [`Process`] was refused: the error Python raises for
/// the same misuse (mirrors the WIT `error` variant).
///
/// ```no_run
/// # fn f(n: u32) {}
/// # mp::entries!(f);
/// # fn main() {
/// let p = mp::Process::new(mp::target!(f), 1);
/// assert_eq!(p.join(), Err(mp::Error::NotStarted));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Error {
    /// `start` on a process that was already started.
    AlreadyStarted,
    /// `join`, `terminate` or `kill` on a process never started.
    NotStarted,
    /// `join` on the calling process itself.
    JoinSelf,
    /// `close` on a running process, or `set_daemon` on a started one.
    StillRunning,
    /// Any operation on a process after `close`.
    Closed,
    /// A daemon tried to create a child ("daemonic processes are not allowed
    /// to have children").
    DaemonChildren,
    /// The program has no entry of this name.
    UnknownEntry(String),
    /// The process could not be started (the message says why).
    SpawnFailed(String),
    /// The run already has as many live processes as it may (the number,
    /// the host's `--max-processes`): Python's `OSError` with `EAGAIN`.
    /// Starting works again once some processes have ended.
    ProcessLimit(u32),
    /// This backend cannot do it: [`fork`] on the thread backend (the
    /// message names the backend that can), as Python's `os.fork` does not
    /// exist on Windows.
    Unsupported(String),
    /// Controlling a process that is not a child of the caller: `start`,
    /// `terminate`, `kill`, `close`, `set_name` or `set_daemon` on the
    /// handle from [`parent_process`] (a process controls only its own
    /// children).
    NotChild,
}

impl Error {
    /// The variant's name without its payload, e.g. `"UnknownEntry"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::AlreadyStarted => "AlreadyStarted",
            Error::NotStarted => "NotStarted",
            Error::JoinSelf => "JoinSelf",
            Error::StillRunning => "StillRunning",
            Error::Closed => "Closed",
            Error::DaemonChildren => "DaemonChildren",
            Error::UnknownEntry(_) => "UnknownEntry",
            Error::SpawnFailed(_) => "SpawnFailed",
            Error::ProcessLimit(_) => "ProcessLimit",
            Error::Unsupported(_) => "Unsupported",
            Error::NotChild => "NotChild",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyStarted => f.write_str("processes can only be started once"),
            Error::NotStarted => f.write_str("can only use a started process"),
            Error::JoinSelf => f.write_str("can only join a child process"),
            Error::StillRunning => f.write_str("process is still running"),
            Error::Closed => f.write_str("process object is closed"),
            Error::DaemonChildren => f.write_str("daemonic processes are not allowed to have children"),
            Error::UnknownEntry(name) => write!(f, "the program has no entry named {name:?}"),
            Error::SpawnFailed(msg) => write!(f, "could not start the process: {msg}"),
            Error::ProcessLimit(limit) => write!(
                f,
                "[Errno 11] Resource temporarily unavailable: the run already has {limit} live processes, \
                 its limit (--max-processes)"
            ),
            Error::Unsupported(why) => f.write_str(why),
            Error::NotChild => f.write_str("a process can only control its own children"),
        }
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::AlreadyStarted => Error::AlreadyStarted,
            wit::Error::NotStarted => Error::NotStarted,
            wit::Error::JoinSelf => Error::JoinSelf,
            wit::Error::StillRunning => Error::StillRunning,
            wit::Error::Closed => Error::Closed,
            wit::Error::DaemonChildren => Error::DaemonChildren,
            wit::Error::UnknownEntry(name) => Error::UnknownEntry(name),
            wit::Error::SpawnFailed(msg) => Error::SpawnFailed(msg),
            wit::Error::ProcessLimit(limit) => Error::ProcessLimit(limit),
            wit::Error::Unsupported(why) => Error::Unsupported(why),
            wit::Error::NotChild => Error::NotChild,
        }
    }
}

/// A typed, named entry of this program: what a child runs (Python's
/// `target=`). Made by [`target!`], which takes the entry's name from the
/// function's name.
///
/// `A` is the argument type (a tuple for several arguments, `()` for none)
/// and `R` the result type. The function itself runs only in the child,
/// through [`entries!`]; the parent uses the name and the types.
///
/// ```no_run
/// fn task(name: String) { println!("{name} is running"); }
/// mp::entries!(task);
/// # fn main() {
/// let t: mp::Target<String, ()> = mp::target!(task);
/// assert_eq!(t.name(), "task");
/// // The same, by hand:
/// let t = mp::Target::new("task", task);
/// # }
/// ```
pub struct Target<A, R> {
    /// The entry's name, as registered with [`entries!`].
    pub name: &'static str,
    /// The entry's body.
    pub f: fn(A) -> R,
}

impl<A, R> Target<A, R> {
    /// A target for entry `name`, whose body is `f`.
    pub const fn new(name: &'static str, f: fn(A) -> R) -> Self {
        Target { name, f }
    }

    /// The entry's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, R> Clone for Target<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Target<A, R> {}

impl<A, R> fmt::Debug for Target<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}

/// The type form of a process body (Python's "subclass `Process`, override
/// `run`"). The value is serialized in the parent, deserialized in the child,
/// and `run` is called on it there.
///
/// ```no_run
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Downloader { url: String }
///
/// impl mp::Run for Downloader {
///     fn run(&mut self) { println!("downloading {} in {}", self.url, mp::getpid()); }
/// }
///
/// mp::entries!(; types: Downloader);
///
/// fn main() {
///     let p = mp::Process::from_type(Downloader { url: "x".into() });
///     p.start().unwrap();
///     p.join().unwrap();
/// }
/// ```
pub trait Run {
    /// The process body, run in the child.
    fn run(&mut self);
}

/// Makes a [`Target`] from an entry function, named after it:
/// `target!(f)` is `Target::new("f", ..)`. The function may take zero, one or
/// several arguments (then the target's argument type is `()`, the argument's
/// type, or a tuple of them).
///
/// ```no_run
/// fn task1(name: String) {}
/// mp::entries!(task1);
/// # fn main() {
/// let p = mp::Process::new(mp::target!(task1), "p1".to_string());
/// # }
/// ```
#[macro_export]
macro_rules! target {
    ($f:ident) => {
        $crate::Target::new(::core::stringify!($f), |args| $crate::__private::Invoke::invoke(&$f, args))
    };
}

/// Declares the entries of this program, at which the host may start a child
/// process, and exports them (the `entries` interface of the `program`
/// world). Use it exactly once per program, at module level.
///
/// - `mp::entries!(f, g)`: functions, named after themselves (as
///   [`target!`] names them);
/// - `mp::entries!(f, g; types: T, U)`: also [`Run`] types, named
///   `std::any::type_name::<T>()` (as [`Process::from_type`] names them);
/// - `mp::entries!(; types: T)`: types only;
/// - `mp::entries!()`: none (the program spawns nothing but targets the
///   `program` world all the same).
///
/// A child's arguments that do not deserialize end it with exitcode 1 and
/// `bad arguments for entry NAME: ...` on its stderr.
///
/// ```no_run
/// fn worker(n: u32) {}
/// mp::entries!(worker);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! entries {
    ($($f:ident),* $(,)? $(; types: $($t:ty),* $(,)?)?) => {
        #[doc(hidden)]
        struct __MpEntries;

        impl $crate::bindings::exports::mp::host::entries::Guest for __MpEntries {
            fn list() -> ::std::vec::Vec<::std::string::String> {
                let mut names: ::std::vec::Vec<::std::string::String> = ::std::vec::Vec::new();
                $( names.push(::std::string::String::from(::core::stringify!($f))); )*
                $($( names.push(::std::string::String::from(::std::any::type_name::<$t>())); )*)?
                names
            }

            fn call(
                name: ::std::string::String,
                args: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $(
                    if name == ::core::stringify!($f) {
                        return $crate::__private::call_fn(&name, &args, |a| {
                            $crate::__private::Invoke::invoke(&$f, a)
                        });
                    }
                )*
                $($(
                    if name == ::std::any::type_name::<$t>() {
                        return $crate::__private::call_type::<$t>(&name, &args);
                    }
                )*)?
                let _ = &args;
                ::core::result::Result::Err(::std::format!("unknown entry {name}"))
            }

            fn call_many(
                name: ::std::string::String,
                args: $crate::__private::Batch,
            ) -> $crate::__private::BatchResults {
                $(
                    if name == ::core::stringify!($f) {
                        return $crate::__private::call_many_fn(&name, &args, |a| {
                            $crate::__private::Invoke::invoke(&$f, a)
                        });
                    }
                )*
                $($(
                    if name == ::std::any::type_name::<$t>() {
                        return $crate::__private::call_many_type::<$t>(&name, &args);
                    }
                )*)?
                $crate::__private::fail_all(&args, ::std::format!("unknown entry {name}"))
            }
        }

        $crate::bindings::export!(__MpEntries);
    };
}

/// Support for the macros; not a public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Calls an entry function with its arguments, whatever its arity:
    /// `M` is a marker that tells the impls apart (as axum's handlers).
    pub trait Invoke<A, R, M> {
        fn invoke(&self, args: A) -> R;
    }

    /// Marker: no argument.
    pub struct Zero;
    /// Marker: one argument.
    pub struct One;
    /// Marker: a tuple of `N` arguments.
    pub struct Many<T>(PhantomData<T>);

    impl<F: Fn() -> R, R> Invoke<(), R, Zero> for F {
        fn invoke(&self, (): ()) -> R {
            self()
        }
    }

    impl<F: Fn(A) -> R, A, R> Invoke<A, R, One> for F {
        fn invoke(&self, a: A) -> R {
            self(a)
        }
    }

    macro_rules! invoke_tuple {
        ($($a:ident),+) => {
            impl<F: Fn($($a),+) -> R, $($a,)+ R> Invoke<($($a,)+), R, Many<($($a,)+)>> for F {
                #[allow(non_snake_case)]
                fn invoke(&self, ($($a,)+): ($($a,)+)) -> R {
                    self($($a),+)
                }
            }
        };
    }
    invoke_tuple!(A1, A2);
    invoke_tuple!(A1, A2, A3);
    invoke_tuple!(A1, A2, A3, A4);
    invoke_tuple!(A1, A2, A3, A4, A5);
    invoke_tuple!(A1, A2, A3, A4, A5, A6);

    pub use crate::bindings::exports::mp::host::entries::{Batch, BatchResults};

    /// Runs a function entry on one encoded argument, appending its
    /// encoded result to `out`.
    fn run_fn<A: DeserializeOwned, R: Serialize>(
        name: &str,
        args: &[u8],
        f: fn(A) -> R,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let a: A = codec::decode(args).map_err(|e| format!("bad arguments for entry {name}: {e}"))?;
        let r = f(a);
        codec::encode_into(out, &r).map_err(|e| format!("cannot serialize the result of entry {name}: {e}"))
    }

    /// Runs a type entry on one encoded object: deserialize it, call `run`.
    fn run_type<T: Run + DeserializeOwned>(name: &str, args: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut obj: T = codec::decode(args).map_err(|e| format!("bad arguments for entry {name}: {e}"))?;
        obj.run();
        out.extend_from_slice(codec::UNIT);
        Ok(())
    }

    /// Runs a function entry: MessagePack in, MessagePack out.
    pub fn call_fn<A: DeserializeOwned, R: Serialize>(
        name: &str,
        args: &[u8],
        f: fn(A) -> R,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let result = run_fn(name, args, f, &mut out);
        flush();
        result.map(|()| out)
    }

    /// Runs a type entry: deserialize the object, call `run`.
    pub fn call_type<T: Run + DeserializeOwned>(name: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let result = run_type::<T>(name, args, &mut out);
        flush();
        result.map(|()| out)
    }

    /// Runs `run` on each item of `args`, the results back to back in one
    /// buffer (no allocation per item beyond the entry's own).
    fn each(args: &Batch, mut run: impl FnMut(&[u8], &mut Vec<u8>) -> Result<(), String>) -> BatchResults {
        let mut data = Vec::with_capacity(args.data.len() + args.ends.len() * 4);
        let mut ends = Vec::with_capacity(args.ends.len());
        let mut failed = Vec::new();
        let mut start = 0usize;
        for (index, &end) in args.ends.iter().enumerate() {
            let end = end as usize;
            let outcome = match args.data.get(start..end) {
                Some(item) => {
                    let mark = data.len();
                    let outcome = run(item, &mut data);
                    if outcome.is_err() {
                        data.truncate(mark);
                    }
                    outcome
                }
                None => Err(format!("item {index} lies outside the batch")),
            };
            start = end;
            if let Err(why) = outcome {
                failed.push((index as u32, why));
            }
            ends.push(data.len() as u32);
        }
        flush();
        BatchResults { results: Batch { data, ends }, failed }
    }

    /// [`call_fn`] on every item of a pool's chunk.
    pub fn call_many_fn<A: DeserializeOwned, R: Serialize>(name: &str, args: &Batch, f: fn(A) -> R) -> BatchResults {
        each(args, |item, out| run_fn(name, item, f, out))
    }

    /// [`call_type`] on every item of a pool's chunk.
    pub fn call_many_type<T: Run + DeserializeOwned>(name: &str, args: &Batch) -> BatchResults {
        each(args, |item, out| run_type::<T>(name, item, out))
    }

    /// Every item of `args` fails with `why`.
    pub fn fail_all(args: &Batch, why: String) -> BatchResults {
        each(args, |_, _| Err(why.clone()))
    }

    /// Writes out what the entry left in `print!`'s buffer: a child ends
    /// when its entry returns, without the cleanup that follows `main`.
    fn flush() {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
}
