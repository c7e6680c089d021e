use proptest::prelude::*;

use super::find_stop;

proptest! {
    #[test]
    fn string_scan_finds_the_first_special_byte(
        bytes in proptest::collection::vec(
            prop_oneof![
                4 => 0x20u8..0x7f,
                1 => Just(b'"'),
                1 => Just(b'\\'),
                1 => 0u8..0x20,
                1 => 0x7fu8..=0xff,
            ],
            0..40,
        ),
        offset in 0usize..8,
    ) {
        // At every alignment of the slice in memory, and every length.
        let mut padded = vec![b'x'; offset];
        padded.extend_from_slice(&bytes);
        let b = &padded[offset..];
        for end in 0..=b.len() {
            let want = b[..end]
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            prop_assert_eq!(find_stop(&b[..end], [b'"', b'\\']), want);
        }
    }
}

#[test]
fn string_scan_checks_every_byte_value_at_every_position() {
    for c in 0..=255u8 {
        let special = c == b'"' || c == b'\\' || c < 0x20;
        for len in 1..=20 {
            for at in 0..len {
                let mut b = vec![b'a'; len];
                b[at] = c;
                let want = special.then_some(at);
                assert_eq!(find_stop(&b, [b'"', b'\\']), want, "{c:#x} at {at}/{len}");
            }
        }
    }
}

proptest! {
    #[test]
    fn other_stop_sets_find_the_first_stop_or_control_byte(
        bytes in proptest::collection::vec(
            prop_oneof![
                any::<u8>(),
                proptest::sample::select(b"\"\\[]{}\x00\x1f\x20\x21\x7f\x80\xffa".to_vec()),
            ],
            0..40,
        ),
        start in 0usize..8,
    ) {
        let b = &bytes[start.min(bytes.len())..];
        let naive = |stops: &[u8]| b.iter().position(|&c| c < 0x20 || stops.contains(&c));
        prop_assert_eq!(find_stop(b, [b']', b'[', b'{', b'\\']), naive(b"][{\\"));
        prop_assert_eq!(find_stop(b, []), naive(b""));
    }
}
