//! Test program: prints `sleeping`, sleeps argv[1] seconds (default 3600,
//! fractions allowed), prints `woke`.
//!
//! The argument is read as Rust reads an `f64` (a sign, digits with a point,
//! an exponent; `inf`, `nan`), and an argument it would refuse means the
//! default, but by hand: `f64`'s parser brings about 10 KiB of tables into
//! the program's data, which every one of a hundred thousand sleepers (the
//! scale test) would copy into its memory. A value `Duration::from_secs_f64`
//! refuses (negative, infinite, not a number, too large) panics as it does.
use std::time::Duration;

fn main() {
    let secs = std::env::args().nth(1).and_then(|a| Seconds::parse(&a)).unwrap_or(Seconds::whole(3600));
    println!("sleeping");
    std::thread::sleep(secs.duration());
    println!("woke");
}

/// A number of seconds as written: `±digits × 10^exponent`, or not finite.
enum Seconds {
    Finite { negative: bool, digits: u128, exponent: i64 },
    NotFinite,
}

/// Significant digits kept: more than a `Duration` (20 digits of seconds,
/// 9 of nanoseconds) can tell apart, fewer than overflow a `u128`.
const KEPT_DIGITS: u32 = 36;

impl Seconds {
    fn whole(secs: u128) -> Seconds {
        Seconds::Finite { negative: false, digits: secs, exponent: 0 }
    }

    /// What `str::parse::<f64>` accepts, `None` for what it refuses.
    fn parse(text: &str) -> Option<Seconds> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        if ["inf", "infinity", "nan"].iter().any(|word| rest.eq_ignore_ascii_case(word)) {
            return Some(Seconds::NotFinite);
        }
        let (number, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..])?),
            None => (rest, 0),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let (mut digits, mut kept, mut exponent) = (0u128, 0, exponent);
        for (i, digit) in whole.bytes().chain(fraction.bytes()).enumerate() {
            let digit = char::from(digit).to_digit(10)?;
            let in_fraction = i >= whole.len();
            if kept < KEPT_DIGITS {
                digits = digits * 10 + u128::from(digit);
                kept += u32::from(digits != 0);
                exponent -= i64::from(in_fraction);
            } else if !in_fraction {
                exponent += 1;
            }
        }
        Some(Seconds::Finite { negative, digits, exponent })
    }

    /// The time, or the panic `Duration::from_secs_f64` gives.
    fn duration(&self) -> Duration {
        const REFUSED: &str = "cannot convert float seconds to Duration: value is either too big or NaN";
        let &Seconds::Finite { negative, digits, exponent } = self else { panic!("{REFUSED}") };
        if digits == 0 {
            return Duration::ZERO;
        }
        if negative {
            panic!("cannot convert float seconds to Duration: value is negative");
        }
        let nanos = match exponent + 9 {
            scale if scale >= 0 => {
                u32::try_from(scale).ok().and_then(|s| 10u128.checked_pow(s)).and_then(|p| digits.checked_mul(p))
            }
            scale => {
                Some(u32::try_from(-scale).ok().and_then(|s| 10u128.checked_pow(s)).map_or(0, |p| (digits + p / 2) / p))
            }
        };
        let nanos = nanos.unwrap_or_else(|| panic!("{REFUSED}"));
        let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or_else(|_| panic!("{REFUSED}"));
        Duration::new(secs, (nanos % 1_000_000_000) as u32)
    }
}

/// An exponent's digits, with an optional sign; a huge one saturates, as
/// it ends in infinity or zero anyway.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for digit in digits.bytes() {
        value = value.saturating_mul(10).saturating_add(i64::from(char::from(digit).to_digit(10)?));
    }
    Some(if negative { -value } else { value }.clamp(-(1 << 40), 1 << 40))
}
