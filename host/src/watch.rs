//! Watching for something another thread is about to do, for a moment,
//! before sleeping until it is done.
//!
//! A thread that sleeps costs a wake-up when it is needed again, and on a
//! virtual machine that is dear: an idle cpu halts at once, and waking it
//! takes tens to hundreds of microseconds. A waiter that expects what it
//! waits for within microseconds (a trivial process's end, a producer's next
//! put) looks for it first, for at most [`WATCH`]. Between rounds of looks
//! it offers its cpu to any other thread that wants it: the thread it waits
//! for may share that cpu (the scheduler packs threads onto few cpus), and a
//! watcher that only spun would hold it off for the whole watch. On a cpu of
//! its own the offer is a system call that returns at once.

use std::time::{Duration, Instant};

/// How long a waiter watches before it sleeps: far over the time between
/// two steps of a thread that runs, well under a time slice.
pub(crate) const WATCH: Duration = Duration::from_micros(50);

/// Looks at `found` this many times between offers of the cpu: a few
/// microseconds of looking, against a system call to offer it.
const LOOKS: u32 = 32;

/// What `found` gives, looked for until it gives something or `until`
/// passes; `None` then.
pub(crate) fn watch<T>(until: Instant, mut found: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        for _ in 0..LOOKS {
            if let Some(value) = found() {
                return Some(value);
            }
            std::hint::spin_loop();
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn it_sees_what_another_thread_does() {
        let done = Arc::new(AtomicBool::new(false));
        let setter = {
            let done = done.clone();
            std::thread::spawn(move || done.store(true, Ordering::Release))
        };
        // Long enough that only a lost look could make it give up.
        let until = Instant::now() + Duration::from_secs(60);
        assert_eq!(watch(until, || done.load(Ordering::Acquire).then_some(7)), Some(7));
        setter.join().unwrap();
    }

    #[test]
    fn it_gives_up_when_time_is_out() {
        assert_eq!(watch(Instant::now(), || None::<()>), None);
    }
}
