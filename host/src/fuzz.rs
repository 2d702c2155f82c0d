//! A cheap, deterministic fuzzer for the unit tests of the wire decoders.
//!
//! Every decoder of bytes from a peer (the native backend's frames, the
//! shared-object messages' encoding) must survive anything a peer sends;
//! their tests feed every decoder the same stream of mutants: valid frames
//! with bytes overwritten and cut short, and runs of zeros.

/// 20,000 mutants of `frames`, the same for the same `seed`.
pub(crate) fn mutants(frames: &[Vec<u8>], mut seed: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut next = move || {
        // xorshift64
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    (0..20_000).map(move |_| {
        let pick = (next() as usize) % (frames.len() + 1);
        let mut bytes = match frames.get(pick) {
            Some(frame) => frame.clone(),
            None => vec![0; (next() % 64) as usize],
        };
        for _ in 0..(next() % 8) {
            if bytes.is_empty() {
                break;
            }
            let i = (next() as usize) % bytes.len();
            bytes[i] = next() as u8;
        }
        if next() % 3 == 0 {
            bytes.truncate((next() as usize) % (bytes.len() + 1));
        }
        bytes
    })
}
