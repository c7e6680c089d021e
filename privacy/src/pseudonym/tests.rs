use super::*;

fn hamming(a: &Pseudonym, b: &Pseudonym) -> u32 {
    a.as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(x, y)| (x ^ y).count_ones())
        .sum()
}

#[test]
fn stable_within_a_day() {
    let p = Pseudonymizer::generate().unwrap();
    let day = EventDay::new(20_000);
    let a = p.pseudonym(day, b"aa:bb:cc:dd:ee:ff").unwrap();
    let b = p.day_key(day).unwrap().pseudonym(b"aa:bb:cc:dd:ee:ff");
    assert_eq!(a, b);
    assert_ne!(a, p.pseudonym(day, b"aa:bb:cc:dd:ee:fe").unwrap());
}

#[test]
fn unlinkable_across_days() {
    let p = Pseudonymizer::generate().unwrap();
    let (d1, d2) = (
        p.day_key(EventDay::new(1)).unwrap(),
        p.day_key(EventDay::new(2)).unwrap(),
    );
    let ids: Vec<Vec<u8>> = (0..500u32)
        .map(|i| format!("device-{i}").into_bytes())
        .collect();
    let day1: Vec<Pseudonym> = ids.iter().map(|id| d1.pseudonym(id)).collect();
    let day2: Vec<Pseudonym> = ids.iter().map(|id| d2.pseudonym(id)).collect();
    // No day-2 pseudonym equals any day-1 pseudonym...
    let set1: std::collections::HashSet<_> = day1.iter().collect();
    assert!(day2.iter().all(|p| !set1.contains(p)));
    // ...and one device's two tags are as far apart as unrelated ones
    // (256 bits, mean 128, sd 8: the mean of 500 is within 128 +- 2).
    let same: f64 = day1
        .iter()
        .zip(&day2)
        .map(|(a, b)| f64::from(hamming(a, b)))
        .sum::<f64>()
        / 500.0;
    assert!((126.0..130.0).contains(&same), "mean distance {same}");
}

#[test]
fn a_new_master_secret_gives_new_pseudonyms() {
    let day = EventDay::new(7);
    let a = Pseudonymizer::generate()
        .unwrap()
        .pseudonym(day, b"subject-1")
        .unwrap();
    let b = Pseudonymizer::generate()
        .unwrap()
        .pseudonym(day, b"subject-1")
        .unwrap();
    assert_ne!(a, b);
}

#[test]
fn secrets_and_pseudonyms_are_redacted_in_debug() {
    let p = Pseudonymizer::generate().unwrap();
    let k = p.day_key(EventDay::new(3)).unwrap();
    let ps = k.pseudonym(b"x");
    assert_eq!(format!("{p:?}"), "Pseudonymizer { master: <redacted> }");
    assert!(format!("{k:?}").contains("<redacted>"));
    assert_eq!(format!("{ps:?}"), "Pseudonym(<redacted>)");
    assert!(!format!("{ps:?}").contains(&format!("{:02x}", ps.as_bytes()[0]).repeat(2)));
}

#[test]
fn event_days_from_unix_time() {
    assert_eq!(EventDay::from_unix_seconds(0, 0).unwrap(), EventDay::new(0));
    assert_eq!(
        EventDay::from_unix_seconds(86_399, 0).unwrap(),
        EventDay::new(0)
    );
    // 23:30 UTC is already the next day at UTC+1.
    assert_eq!(
        EventDay::from_unix_seconds(86_400 - 1800, 3600).unwrap(),
        EventDay::new(1)
    );
    assert!(EventDay::from_unix_seconds(-1, 0).is_err());
}

#[test]
fn pseudonym_sets_count_distinct_pseudonyms() {
    let key = Pseudonymizer::generate()
        .unwrap()
        .day_key(EventDay::new(20_000))
        .unwrap();
    let mut set = PseudonymSet::default();
    let mut map = PseudonymMap::default();
    let mut reference = std::collections::HashSet::new();
    for i in 0..5_000u32 {
        let p = key.pseudonym(format!("device-{}", i % 1_777).as_bytes());
        assert_eq!(set.insert(p), reference.insert(p));
        *map.entry(p).or_insert(0u32) += 1;
    }
    assert_eq!(set.len(), 1_777);
    assert_eq!(map.len(), 1_777);
    assert_eq!(map.values().sum::<u32>(), 5_000);
    assert!(reference.iter().all(|p| set.contains(p)));
}

proptest::proptest! {
    #[test]
    fn pseudonym_tables_agree_with_std_ones(
        tags in proptest::collection::vec(proptest::prelude::any::<[u8; 32]>(), 0..200),
        repeat in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..50),
    ) {
        // Pseudonyms that share their first 8 bytes (the hashed part) too.
        let mut all: Vec<Pseudonym> = tags.iter().map(|t| Pseudonym::dangerous_from_bytes(*t)).collect();
        for (i, t) in tags.iter().enumerate().take(20) {
            let mut near = *t;
            near[31 - i % 24] ^= 1;
            all.push(Pseudonym::dangerous_from_bytes(near));
        }
        if !all.is_empty() {
            let again: Vec<Pseudonym> = repeat.iter().map(|r| all[r.index(all.len())]).collect();
            all.extend(again);
        }
        let mut ours = PseudonymSet::default();
        let mut std_set = std::collections::HashSet::new();
        for p in &all {
            proptest::prop_assert_eq!(ours.insert(*p), std_set.insert(*p));
        }
        proptest::prop_assert_eq!(ours.len(), std_set.len());
        proptest::prop_assert!(std_set.iter().all(|p| ours.contains(p)));
    }
}

/// Pseudonyms are HMAC-SHA256 tags: the same bytes as ring's HMAC (which
/// made them before; stored pseudonyms must stay valid) for keys from both
/// constructors and identifiers of every length around the SHA-256 block,
/// and RFC 4231 test case 2's tag for its key and message.
#[test]
fn tags_are_hmac_sha256_and_match_ring() {
    use ring::hmac as ring_hmac;
    let (key, sealed) = DayKey::generate(EventDay::new(7)).unwrap();
    let ring_key = ring_hmac::Key::new(ring_hmac::HMAC_SHA256, sealed.dangerous_secret_bytes());
    for len in 0..200usize {
        let id: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        let want = ring_hmac::sign(&ring_key, &id);
        assert_eq!(
            key.pseudonym(&id).as_bytes()[..],
            *want.as_ref(),
            "length {len}"
        );
    }
    // Derived day keys too.
    let p = Pseudonymizer::generate().unwrap();
    let a = p.day_key(EventDay::new(3)).unwrap();
    let b = p.day_key(EventDay::new(3)).unwrap();
    assert_eq!(a.pseudonym(b"device-1"), b.pseudonym(b"device-1"));
    assert_ne!(
        a.pseudonym(b"device-1"),
        p.day_key(EventDay::new(4)).unwrap().pseudonym(b"device-1")
    );
    // RFC 4231, test case 2 (a key shorter than 32 bytes goes through the
    // same HMAC; only 32-byte keys are used here, so check the primitive).
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
    mac.update(b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
