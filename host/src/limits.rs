//! Resource limits of one process, and the human forms they are written in.
//!
//! A limit is enforced where it is cheapest: memory by a
//! [`wasmtime::ResourceLimiter`] on the process's store, instructions by
//! wasmtime's fuel, wall time by a deadline raced against the guest where
//! it runs (`instance::run_until_deadline`), which ends it as a terminate does. Sizes (`64MiB`) and
//! durations (`1s`, `500ms`) parse here so that the CLI and embedders agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Limits on one process. The default is no limit beyond the host's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory the process may grow to, in all its memories.
    pub max_memory: Option<u64>,
    /// Instruction budget (wasmtime fuel). Needs a host built with fuel metering.
    pub fuel: Option<u64>,
    /// Wall time after which the process is terminated (exitcode -15).
    pub timeout: Option<Duration>,
}

/// Bytes a process has the host hold for it outside its own memory: the
/// arguments of its children not yet started and of its pool tasks not yet
/// answered (running ones included), and the results of its maps that came
/// and are not yet taken. They count against its memory cap (`--max-memory`),
/// all of them together, so a guest cannot park unbounded bytes in the host
/// by creating children it never starts, queueing tasks it never waits for
/// or leaving results untaken. A clone counts on the same total.
#[derive(Default, Clone)]
pub(crate) struct Holds(Arc<AtomicU64>);

impl Holds {
    /// Holds `bytes` more until the [`Held`] is dropped, unless that takes
    /// the total past `limit`; the error says how far and names
    /// `--max-memory`.
    pub(crate) fn hold(&self, bytes: u64, limit: u64) -> Result<Held, String> {
        self.hold_or(bytes, limit, |total| {
            format!(
                "the arguments of its children not yet started and of its pool tasks not yet answered would hold {total} bytes in the host, past this process's limit of {} (--max-memory)",
                format_size(limit)
            )
        })
    }

    /// [`hold`](Self::hold), the error made by `refused` from the total
    /// that was refused.
    pub(crate) fn hold_or(&self, bytes: u64, limit: u64, refused: impl FnOnce(u64) -> String) -> Result<Held, String> {
        let add = |held: u64| held.checked_add(bytes).filter(|&total| total <= limit);
        match self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, add) {
            Ok(_) => Ok(Held { bytes, total: self.0.clone() }),
            Err(held) => Err(refused(held.saturating_add(bytes))),
        }
    }

    /// Holds `bytes` more, counted but not bounded: for holders that are
    /// not a guest's choice (the embedder's children, a pool's workers,
    /// which start at once).
    pub(crate) fn hold_unbounded(&self, bytes: u64) -> Held {
        self.0.fetch_add(bytes, Ordering::Relaxed);
        Held { bytes, total: self.0.clone() }
    }
}

/// Bytes counted on a process's [`Holds`] while this lives.
pub(crate) struct Held {
    bytes: u64,
    total: Arc<AtomicU64>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Parses a size such as `4096`, `64KiB`, `64MiB`, `2GiB`, `10MB` or `1g`.
///
/// ```
/// assert_eq!(host::parse_size("64MiB"), Ok(64 << 20));
/// assert_eq!(host::parse_size("10kb"), Ok(10_000));
/// assert!(host::parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text);
    let number: f64 =
        number.parse().map_err(|_| format!("invalid size `{text}`: expected a number with a unit, such as 64MiB"))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("invalid size `{text}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    if number < 0.0 || !number.is_finite() {
        return Err(format!("invalid size `{text}`: must be a positive number"));
    }
    let bytes = number * scale as f64;
    // 2^64: the first value a u64 cannot hold (a float cast would saturate).
    if bytes >= 18_446_744_073_709_551_616.0 {
        return Err(format!("invalid size `{text}`: too large (at most 16 EiB)"));
    }
    Ok(bytes as u64)
}

/// The longest timeout the CLI accepts: 100 years. Longer ones are refused
/// as a typo rather than read as "never" (leave the flag out for that).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// [`parse_duration`] for a timeout: at most [`MAX_TIMEOUT`].
///
/// ```
/// assert!(host::parse_timeout("10000000000000000000s").is_err());
/// assert!(host::parse_timeout("1s").is_ok());
/// ```
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = parse_duration(text)?;
    if timeout > MAX_TIMEOUT {
        return Err(format!("invalid timeout `{text}`: too long (at most 100 years; leave --timeout out for none)"));
    }
    Ok(timeout)
}

/// Parses a duration such as `1s`, `500ms`, `2m`, `1.5s`, `100us` or `1h`;
/// a bare number is seconds.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(host::parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(host::parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert!(host::parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: expected a number with a unit, such as 1s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration `{text}`: unknown unit `{unit}` (use ns, us, ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(number * seconds)
        .map_err(|_| format!("invalid duration `{text}`: too long (a duration is at most about 584 billion years)"))
}

/// Formats a byte count the way [`parse_size`] reads it back.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    (&text[..end], text[end..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("1000000000000000000000000000000GiB").unwrap_err().contains("too large"));
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("1000000000000000000000000s").unwrap_err().contains("too long"));
        assert!(parse_timeout("10000000000000000000s").unwrap_err().contains("too long"));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
    }
}
