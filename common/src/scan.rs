//! Byte scans shared by the strict JSON-line readers: the node's event
//! reader (`veil_node::event`) and the audit-log reader (`veil_audit`).

/// Index of the first byte of `b` that is one of `stops` or a control
/// character (below 0x20), or `None`.
///
/// Reads eight bytes at a time, as most strings in a line are longer than
/// that: for each byte `x`, `(x - k) & !x` has its top bit set if `x < k`
/// (for `k <= 0x80`), and `x ^ c` is zero exactly where `x == c`. A borrow
/// can only set a flag in a byte *above* a byte that is itself flagged, so
/// the lowest flag is always exact.
pub fn find_stop<const N: usize>(b: &[u8], stops: [u8; N]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let hits = stops.iter().fold(below(v, 0x20), |h, &s| {
            h | below(v ^ (ONES * u64::from(s)), 1)
        });
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&c| c < 0x20 || stops.contains(&c))
        .map(|i| at + i)
}

#[cfg(test)]
mod tests;
