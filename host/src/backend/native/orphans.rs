//! Orphans: workers whose parent ended before them, adopted by the root.
//!
//! The root host is a `PR_SET_CHILD_SUBREAPER`, so every worker whose parent
//! worker ends re-parents to it, not to init; the root then waits for each
//! (`Host::wait` does not return before they end) and reaps it. A parent
//! that ends normally announces its running non-daemon children on its
//! channel (`channel.rs`). One ended by a signal (terminate, kill, a crash)
//! announces nothing: the root then looks for *strays*, its children that
//! are workers and that nobody waits for, and adopts them too. Daemons need
//! none of this: they die with their parent.
//!
//! Being a subreaper is a property of the whole process: an embedder's own
//! grandchildren whose parent ends re-parent to it as well. The root adopts
//! only workers (processes running the host binary in worker mode, and a
//! killed worker's zygote, known by its name even as a zombie) and leaves
//! the embedder's to the embedder.

use super::slots::Slots;
use super::{Status, WORKER_ARG, wait_pid};
use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Children of this process that somebody already waits for (workers,
/// orphans, the zygote): never adopted twice.
pub(super) static KNOWN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Held by a starter from before a worker's birth until it is in [`KNOWN`],
/// and by a search for strays (before `KNOWN`): no search takes a worker
/// being born for an orphan. A lock of its own, so that a supervisor that
/// forgets a reaped worker (in `KNOWN`, briefly) never waits for a start
/// under way (a zygote's round trip, an exec).
pub(super) static BIRTHS: Mutex<()> = Mutex::new(());

/// The run's process table: whoever reaps a process gives back its slot,
/// and for orphans that is the root.
static SLOTS: OnceLock<Arc<Slots>> = OnceLock::new();

/// How many adopted orphans are still running.
static LIVE: Mutex<usize> = Mutex::new(0);
static IDLE: Condvar = Condvar::new();

/// Makes the root the adopter of the run's orphans, which gives back their
/// slots in `slots` as it reaps them.
pub(super) fn become_adopter(slots: Arc<Slots>) {
    let _ = SLOTS.set(slots);
}

/// Adopts `pid`, which a worker announced as it ended.
pub(super) fn adopt_announced(pid: u32) {
    if KNOWN.lock().unwrap().insert(pid) {
        adopt(pid);
    }
}

/// Adopts every stray: a child of ours running in worker mode that nobody
/// waits for. Only the root host adopts; how many it found.
pub(super) fn adopt_strays() -> usize {
    if !adopts() {
        return 0;
    }
    let _births = BIRTHS.lock().unwrap();
    let mut known = KNOWN.lock().unwrap();
    let strays: Vec<u32> =
        own_children().into_iter().filter(|pid| !known.contains(pid) && mode(*pid).is_some()).collect();
    for &pid in &strays {
        known.insert(pid);
        adopt(pid);
    }
    strays.len()
}

/// Children of ours forked by the zygote that nobody knows: after the
/// zygote fell silent, the worker it forked before it stopped answering.
pub(super) fn unknown_zygote_forks(known: &BTreeSet<u32>) -> Vec<u32> {
    own_children()
        .into_iter()
        .filter(|pid| !known.contains(pid) && mode(*pid).is_some_and(|mode| mode == Mode::ZygoteFork))
        .collect()
}

/// Whether this process adopts orphans: only the root host is a subreaper.
pub(super) fn adopts() -> bool {
    super::INHERITED.get().is_none()
}

/// Waits for `pid` on a thread of its own, then reaps it and gives back its
/// process slot; a stray's own children, if it ended by a signal, are
/// adopted in turn.
fn adopt(pid: u32) {
    *LIVE.lock().unwrap() += 1;
    let waiter = move || {
        let status = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(wait_pid(pid)));
        if !matches!(status, Ok(Status::Lost(_)) | Err(_))
            && let Some(slots) = SLOTS.get()
        {
            slots.release_pid(pid);
        }
        KNOWN.lock().unwrap().remove(&pid);
        if matches!(status, Ok(Status::Signalled(_))) {
            adopt_strays();
        }
        let mut live = LIVE.lock().unwrap();
        *live -= 1;
        IDLE.notify_all();
    };
    if std::thread::Builder::new().name("host-orphan".into()).spawn(waiter).is_err() {
        // No thread to wait with: let the next search find it again.
        KNOWN.lock().unwrap().remove(&pid);
        *LIVE.lock().unwrap() -= 1;
    }
}

/// Blocks until every adopted orphan has ended, strays found meanwhile
/// (children of workers ended by signals, deeper in the tree) included.
pub(super) fn wait_all() {
    loop {
        let mut live = LIVE.lock().unwrap();
        while *live > 0 {
            live = IDLE.wait(live).unwrap();
        }
        drop(live);
        if adopt_strays() == 0 {
            return;
        }
    }
}

/// Our own children, ended ones not yet reaped included: as each of our
/// threads lists its own in `/proc` (a few reads, where reading every
/// process's parent costs a host's wait milliseconds on a busy machine);
/// the long way on a kernel without those lists.
fn own_children() -> Vec<u32> {
    if !std::path::Path::new("/proc/thread-self/children").exists() {
        return children_of(std::process::id());
    }
    let Ok(threads) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    threads
        // A thread that ended meanwhile left its children to another.
        .filter_map(|thread| std::fs::read_to_string(thread.ok()?.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|pid| pid.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// The pids whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

/// The parent of `pid`, if it has one still: see [`parent_in_stat`].
pub(super) fn parent_of(pid: u32) -> Option<u32> {
    parent_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent in a `/proc/PID/stat` line: the field after the state, read
/// after the command name's closing parenthesis (which may itself hold
/// spaces and parentheses). The kernel writes 0 there for a process being
/// reaped (its parent gone from it): no parent, not a parent of pid 0.
fn parent_in_stat(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok().filter(|&parent| parent != 0)
}

/// The command name of `pid` (`comm`), between the parentheses of
/// `/proc/PID/stat`.
fn command_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.find('(')? + 1..stat.rfind(')')?].to_string())
}

/// How a host binary runs in worker mode.
#[derive(PartialEq, Eq)]
enum Mode {
    /// A zygote, known by its name even once it has ended (a zombie has no
    /// command line): a worker's, left to us when that worker ended.
    Zygote,
    /// Exec'd as a worker.
    Worker,
    /// The zygote, or a worker it forked (they share its command line).
    ZygoteFork,
}

/// How `pid` runs the host binary in worker mode; `None` if it does not.
fn mode(pid: u32) -> Option<Mode> {
    if command_name(pid).is_some_and(|name| name.as_bytes() == super::zygote::ZYGOTE_NAME.to_bytes()) {
        return Some(Mode::Zygote);
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|&b| b == 0).skip(1);
    if args.next()? != WORKER_ARG.as_bytes() {
        return None;
    }
    Some(match args.next() {
        Some(arg) if arg == super::zygote::ZYGOTE_ARG.as_bytes() => Mode::ZygoteFork,
        _ => Mode::Worker,
    })
}

#[cfg(test)]
mod tests {
    use super::parent_in_stat;

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(parent_in_stat("42 (a) b (c)) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_in_stat("42 (host) Z 7 0 0"), Some(7));
    }

    #[test]
    fn a_process_being_reaped_has_no_parent() {
        // Its parent reaps it while another reads its stat: a race the
        // root met as it checked a worker's new child (which ended at once).
        assert_eq!(parent_in_stat("42 (host) X 0 0 0 0 -1"), None);
        assert_eq!(parent_in_stat("garbage"), None);
    }
}
