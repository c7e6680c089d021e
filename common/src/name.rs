//! The name grammar of the wire: venues, nodes, principals and zones are
//! 1..=64 bytes of `[a-z0-9_-]`; metrics and purposes 1..=64 bytes of
//! `[a-z0-9_]` (they also name policy keys and SQL-free labels).

/// Longest name, in bytes.
pub const MAX_LEN: usize = 64;

/// Whether `s` is a valid venue, node, principal or zone name:
/// 1..=64 bytes of `[a-z0-9_-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `s` is a valid metric or purpose name: 1..=64 bytes of `[a-z0-9_]`.
pub fn valid_metric(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_may_hold_dashes_metrics_may_not() {
        assert!(valid_name("hall-a_1"));
        assert!(!valid_metric("hall-a"));
        assert!(valid_metric("occupancy_count"));
        for bad in ["", "A", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad) && !valid_metric(bad), "{bad:?}");
        }
    }
}
