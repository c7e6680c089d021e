use proptest::prelude::*;

use super::*;

pub(crate) fn sample(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        actor: "spiffe://veil/venue/arena-1/node/gw-3".to_owned(),
        venue: "arena-1".to_owned(),
        action: "release".to_owned(),
        decision: DECISION_ALLOW.to_owned(),
        reason: "within budget".to_owned(),
        policy_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        epsilon: 0.1,
        rho: 0.0,
        release_sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
            .to_owned(),
    }
}

const SAMPLE_LINE: &str = concat!(
    r#"{"action":"release","actor":"spiffe://veil/venue/arena-1/node/gw-3","decision":"allow","#,
    r#""epsilon":0.1,"policy_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
    r#""reason":"within budget","release_sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","#,
    r#""rho":0.0,"seq":7,"time_ms":1700000000007,"venue":"arena-1"}"#
);

#[test]
fn canonical_form_is_exact() {
    let e = sample(7);
    let line = e.to_canonical_json().unwrap();
    assert_eq!(line, SAMPLE_LINE);
    assert_eq!(e.to_string(), SAMPLE_LINE);
    assert_eq!(AuditEntry::parse_canonical(&line).unwrap(), e);
    assert_eq!(e.leaf_hash().unwrap(), merkle::leaf_hash(line.as_bytes()));
}

#[test]
fn fields_constant_is_sorted_and_matches_output() {
    let mut sorted = FIELDS;
    sorted.sort_unstable();
    assert_eq!(sorted, FIELDS);
    let v: serde_json::Value = serde_json::from_str(SAMPLE_LINE).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    assert_eq!(keys_sorted, FIELDS);
}

#[test]
fn floats_and_strings_are_deterministic() {
    let mut e = sample(0);
    for (v, text) in [
        (0.0, "0.0"),
        (1.0, "1.0"),
        (0.5, "0.5"),
        (1e-7, "1e-7"),
        (0.30000000000000004, "0.30000000000000004"),
        (1e21, "1e+21"),
        (123.456, "123.456"),
        (1e-6, "0.000001"),
        (1.5e-7, "1.5e-7"),
        (0.00012, "0.00012"),
        (100000.0, "100000.0"),
        (1e20, "100000000000000000000.0"),
        (1.25e20, "125000000000000000000.0"),
        (123456789.125, "123456789.125"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (2.5e300, "2.5e+300"),
    ] {
        assert_eq!(canonical_f64(v), text);
        e.epsilon = v;
        let line = e.to_canonical_json().unwrap();
        assert!(line.contains(&format!("\"epsilon\":{text},")), "{line}");
        assert_eq!(AuditEntry::parse_canonical(&line).unwrap().epsilon, v);
    }
    e.reason = "quote \" backslash \\ tab \t newline \n nul \u{0} é 😀 /".to_owned();
    let line = e.to_canonical_json().unwrap();
    assert!(
        line.contains(r#""reason":"quote \" backslash \\ tab \t newline \n nul \u0000 é 😀 /""#)
    );
    assert_eq!(AuditEntry::parse_canonical(&line).unwrap(), e);
}

fn replace(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "{from} not in {s}");
    s.replacen(from, to, 1)
}

#[test]
fn non_canonical_encodings_are_rejected() {
    let not_canonical = |line: &str| {
        let err = AuditEntry::parse_canonical(line).unwrap_err();
        assert!(
            matches!(err, EntryError::NotCanonical { .. }),
            "{line}: {err:?}"
        );
    };
    // Whitespace, a trailing newline, a BOM-less trailing space.
    not_canonical(&replace(SAMPLE_LINE, ",", ", "));
    not_canonical(&replace(SAMPLE_LINE, "{", "{ "));
    not_canonical(&format!("{SAMPLE_LINE}\n"));
    not_canonical(&format!("{SAMPLE_LINE} "));
    not_canonical(&format!(" {SAMPLE_LINE}"));
    not_canonical(&format!("{SAMPLE_LINE}\r"));
    // Key order.
    let swapped = replace(
        SAMPLE_LINE,
        r#""action":"release","actor":"spiffe://veil/venue/arena-1/node/gw-3""#,
        r#""actor":"spiffe://veil/venue/arena-1/node/gw-3","action":"release""#,
    );
    not_canonical(&swapped);
    // Number forms.
    not_canonical(&replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":0"));
    not_canonical(&replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":0.00"));
    not_canonical(&replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":1e-1"));
    not_canonical(&replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":0.10"));
    not_canonical(&replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":1E-1"));
    // Escapes: \u escape of a plain letter, escaped slash, escaped key.
    not_canonical(&replace(
        SAMPLE_LINE,
        "within budget",
        "within budg\\u0065t",
    ));
    not_canonical(&replace(SAMPLE_LINE, "spiffe://", "spiffe:\\/\\/"));
    not_canonical(&replace(SAMPLE_LINE, "\"rho\"", "\"rh\\u006f\""));
    not_canonical(&replace(SAMPLE_LINE, "\"epsilon\"", "\"\\u0065psilon\""));
    // Duplicate key (last wins in the map, but the bytes differ).
    not_canonical(&replace(
        SAMPLE_LINE,
        "\"rho\":0.0",
        "\"rho\":0.0,\"rho\":0.0",
    ));
}

#[test]
fn structural_errors_are_named() {
    assert!(matches!(
        AuditEntry::parse_canonical(""),
        Err(EntryError::Json(_))
    ));
    assert!(matches!(
        AuditEntry::parse_canonical("[1]"),
        Err(EntryError::Json(_))
    ));
    assert!(matches!(
        AuditEntry::parse_canonical(&SAMPLE_LINE[..SAMPLE_LINE.len() - 1]),
        Err(EntryError::Json(_))
    ));
    assert!(matches!(
        AuditEntry::parse_canonical(&format!("{SAMPLE_LINE}{{}}")),
        Err(EntryError::Json(_))
    ));
    assert_eq!(
        AuditEntry::parse_canonical(&replace(SAMPLE_LINE, "{", r#"{"subject_id":"x","#)),
        Err(EntryError::UnknownField("subject_id".to_owned()))
    );
    assert_eq!(
        AuditEntry::parse_canonical(&replace(SAMPLE_LINE, r#","venue":"arena-1""#, "")),
        Err(EntryError::MissingField("venue"))
    );
    assert_eq!(
        AuditEntry::parse_canonical(&replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":-7")),
        Err(EntryError::WrongType {
            field: "seq",
            expected: "an unsigned 64-bit integer"
        })
    );
    assert_eq!(
        AuditEntry::parse_canonical(&replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":7.0")),
        Err(EntryError::WrongType {
            field: "seq",
            expected: "an unsigned 64-bit integer"
        })
    );
    assert_eq!(
        AuditEntry::parse_canonical(&replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":\"0\"")),
        Err(EntryError::WrongType {
            field: "rho",
            expected: "a number"
        })
    );
    assert_eq!(
        AuditEntry::parse_canonical(&replace(
            SAMPLE_LINE,
            "\"venue\":\"arena-1\"",
            "\"venue\":null"
        )),
        Err(EntryError::WrongType {
            field: "venue",
            expected: "a string"
        })
    );
}

#[test]
fn invalid_values_are_rejected_both_ways() {
    type Mutation = fn(&mut AuditEntry);
    let cases: Vec<(&str, Mutation)> = vec![
        ("actor", |e| e.actor = "node-3".to_owned()),
        ("actor", |e| e.actor = "spiffe://".to_owned()),
        ("action", |e| e.action = "Release".to_owned()),
        ("action", |e| e.action = String::new()),
        ("decision", |e| e.decision = "maybe".to_owned()),
        ("epsilon", |e| e.epsilon = f64::NAN),
        ("epsilon", |e| e.epsilon = f64::INFINITY),
        ("epsilon", |e| e.epsilon = -0.5),
        ("rho", |e| e.rho = -0.0),
        ("release_sha256", |e| e.release_sha256 = "abc".to_owned()),
        ("release_sha256", |e| {
            e.release_sha256 = e.release_sha256.to_uppercase()
        }),
    ];
    for (field, mutate) in cases {
        let mut e = sample(1);
        mutate(&mut e);
        match e.to_canonical_json() {
            Err(EntryError::InvalidField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
        assert!(e.leaf_hash().is_err());
        assert!(e.to_string().starts_with("<invalid audit entry"));
    }
    // The parser applies the same checks.
    let neg = replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":-0.0");
    assert!(matches!(
        AuditEntry::parse_canonical(&neg),
        Err(EntryError::InvalidField { field: "rho", .. })
    ));
    let deny = replace(SAMPLE_LINE, "\"allow\"", "\"Allow\"");
    assert!(matches!(
        AuditEntry::parse_canonical(&deny),
        Err(EntryError::InvalidField {
            field: "decision",
            ..
        })
    ));
    // Empty release hash and policy hash are fine (deny, fail closed).
    let mut e = sample(2);
    e.decision = DECISION_DENY.to_owned();
    e.release_sha256.clear();
    e.policy_hash.clear();
    e.epsilon = 0.0;
    let line = e.to_canonical_json().unwrap();
    assert_eq!(AuditEntry::parse_canonical(&line).unwrap(), e);
}

#[test]
fn extreme_integers_round_trip() {
    let mut e = sample(u64::MAX);
    e.time_ms = i64::MIN;
    let line = e.to_canonical_json().unwrap();
    assert!(line.contains("\"seq\":18446744073709551615,"));
    assert!(line.contains("\"time_ms\":-9223372036854775808,"));
    assert_eq!(AuditEntry::parse_canonical(&line).unwrap(), e);
}

proptest! {
    #[test]
    fn round_trip_any_valid_entry(
        seq in any::<u64>(),
        time_ms in any::<i64>(),
        actor_tail in "[a-z0-9/._-]{1,40}",
        venue in any::<String>(),
        action in "[a-z0-9_.-]{1,20}",
        allow in any::<bool>(),
        reason in any::<String>(),
        policy_hash in any::<String>(),
        epsilon in 0.0f64..1e6,
        rho_bits in any::<u64>(),
        release in proptest::option::of(any::<[u8; 32]>()),
    ) {
        // Any finite non-negative double, including subnormals and huge values.
        let rho = f64::from_bits(rho_bits & !(1 << 63));
        prop_assume!(rho.is_finite());
        let e = AuditEntry {
            seq,
            time_ms,
            actor: format!("spiffe://{actor_tail}"),
            venue,
            action,
            decision: if allow { DECISION_ALLOW } else { DECISION_DENY }.to_owned(),
            reason,
            policy_hash,
            epsilon,
            rho,
            release_sha256: release.map(hex::encode).unwrap_or_default(),
        };
        let line = e.to_canonical_json().unwrap();
        prop_assert!(!line.contains('\n'));
        let back = AuditEntry::parse_canonical(&line).unwrap();
        prop_assert_eq!(back.to_canonical_json().unwrap(), line);
        prop_assert_eq!(back.epsilon.to_bits(), e.epsilon.to_bits());
        prop_assert_eq!(back.rho.to_bits(), e.rho.to_bits());
        prop_assert_eq!(back, e);
    }

    #[test]
    fn canonical_f64_round_trips(bits in any::<u64>()) {
        let v = f64::from_bits(bits);
        prop_assume!(v.is_finite());
        let text = canonical_f64(v);
        prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), v.to_bits());
        // Valid JSON number that serde_json reads as the same kind of value.
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert!(parsed.is_f64());
    }

    #[test]
    fn arbitrary_lines_never_panic(line in any::<String>()) {
        let _ = AuditEntry::parse_canonical(&line);
    }

    #[test]
    fn any_single_byte_change_is_caught_or_changes_the_entry(pos in any::<prop::sample::Index>(), byte in 0x20u8..0x7f) {
        let i = pos.index(SAMPLE_LINE.len());
        let mut bytes = SAMPLE_LINE.as_bytes().to_vec();
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let line = String::from_utf8(bytes).unwrap();
        // Either rejected, or it parses to a different entry whose canonical
        // form is the mutated line (so its leaf hash differs too).
        if let Ok(e) = AuditEntry::parse_canonical(&line) {
            prop_assert_ne!(&e, &sample(7));
            prop_assert_eq!(e.to_canonical_json().unwrap(), line);
        }
    }
}

/// The fast path and the general parser agree on `line`: same entry or same
/// error, and the fast path never accepts what the general parser rejects.
fn assert_parsers_agree(line: &str) {
    let general = AuditEntry::parse_general(line);
    if let Some(fast) = parse_exact(line).map(AuditEntryRef::into_owned) {
        assert_eq!(Ok(&fast), general.as_ref(), "{line}");
        assert_eq!(fast.to_canonical_json().as_deref(), Ok(line));
    }
    assert_eq!(AuditEntry::parse_canonical(line), general, "{line}");
}

/// Lines the fast path must hand to the general parser, each with the error
/// the general parser names.
#[test]
fn fast_path_refuses_every_non_canonical_form() {
    let cases: Vec<String> = vec![
        // Whitespace anywhere.
        replace(SAMPLE_LINE, ",", ", "),
        replace(SAMPLE_LINE, ":", " :"),
        replace(SAMPLE_LINE, "{", "{ "),
        replace(SAMPLE_LINE, "}", " }"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":\t7"),
        format!("{SAMPLE_LINE}\n"),
        format!("{SAMPLE_LINE} "),
        format!(" {SAMPLE_LINE}"),
        format!("\u{feff}{SAMPLE_LINE}"),
        // Key order.
        replace(
            SAMPLE_LINE,
            r#""action":"release","actor":"spiffe://veil/venue/arena-1/node/gw-3""#,
            r#""actor":"spiffe://veil/venue/arena-1/node/gw-3","action":"release""#,
        ),
        replace(
            SAMPLE_LINE,
            r#""seq":7,"time_ms":1700000000007"#,
            r#""time_ms":1700000000007,"seq":7"#,
        ),
        // Escapes that decode to the same text, in values and keys.
        replace(SAMPLE_LINE, "within budget", "within budg\\u0065t"),
        replace(SAMPLE_LINE, "spiffe://", "spiffe:\\/\\/"),
        replace(SAMPLE_LINE, "\"rho\"", "\"rh\\u006f\""),
        replace(SAMPLE_LINE, "\"allow\"", "\"\\u0061llow\""),
        // Duplicate keys, same and different values.
        replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":0.0,\"rho\":0.0"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":7,\"seq\":8"),
        replace(
            SAMPLE_LINE,
            "\"venue\":\"arena-1\"",
            "\"venue\":\"arena-1\",\"venue\":\"x\"",
        ),
        // Number forms.
        replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":0"),
        replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":0.00"),
        replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":-0.0"),
        replace(SAMPLE_LINE, "\"rho\":0.0", "\"rho\":0e0"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":1e-1"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":0.10"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":1E-1"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":.1"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":+0.1"),
        replace(
            SAMPLE_LINE,
            "\"epsilon\":0.1",
            "\"epsilon\":0.1000000000000000000001",
        ),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":inf"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":NaN"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":1e400"),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":\"0.1\""),
        replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":-0.1"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":07"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":7.0"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":7e0"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":-7"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":+7"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":18446744073709551616"),
        replace(SAMPLE_LINE, "\"seq\":7", "\"seq\":\"7\""),
        replace(SAMPLE_LINE, "\"time_ms\":1700000000007", "\"time_ms\":-0"),
        replace(SAMPLE_LINE, "\"time_ms\":1700000000007", "\"time_ms\":-01"),
        replace(
            SAMPLE_LINE,
            "\"time_ms\":1700000000007",
            "\"time_ms\":9223372036854775808",
        ),
        replace(
            SAMPLE_LINE,
            "\"time_ms\":1700000000007",
            "\"time_ms\":-9223372036854775809",
        ),
        // Invalid values in canonical layout.
        replace(SAMPLE_LINE, "\"allow\"", "\"maybe\""),
        replace(SAMPLE_LINE, "spiffe://veil", "https://veil"),
        replace(SAMPLE_LINE, "\"release\"", "\"Release\""),
        replace(SAMPLE_LINE, "2cf24dba", "2CF24DBA"),
        // Raw control characters and other structure.
        replace(SAMPLE_LINE, "within budget", "within\tbudget"),
        replace(
            SAMPLE_LINE,
            "\"venue\":\"arena-1\"}",
            "\"venue\":\"arena-1\",\"x\":1}",
        ),
        replace(SAMPLE_LINE, ",\"venue\":\"arena-1\"", ""),
        replace(SAMPLE_LINE, "}", "}}"),
        SAMPLE_LINE[..SAMPLE_LINE.len() - 1].to_owned(),
        String::new(),
        "{}".to_owned(),
    ];
    for line in &cases {
        assert!(parse_exact(line).is_none(), "fast path accepted {line}");
        assert!(AuditEntry::parse_canonical(line).is_err(), "{line}");
        assert_parsers_agree(line);
    }
    // The canonical line itself, and escapes that are canonical, take the
    // fast path or agree with the general parser.
    assert_eq!(
        parse_exact(SAMPLE_LINE).map(AuditEntryRef::into_owned),
        Some(sample(7))
    );
    let mut e = sample(1);
    e.reason = "quote \" backslash \\ nul \u{0} é 😀 \u{7f} \u{2028}".to_owned();
    assert_parsers_agree(&e.to_canonical_json().unwrap());
}

/// The `canonical_f64` of the first version of this module, kept to check
/// that the allocation-free writer produces the very same text.
fn reference_canonical_f64(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp = exp.parse::<i32>().unwrap();
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-7 < exp && exp < 21) {
        let plus = if exp > 0 { "+" } else { "" };
        return format!("{sign}{mantissa}e{plus}{exp}");
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
        } else {
            format!("{}.{}", &digits[..int_len], &digits[int_len..])
        }
    } else {
        format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
    };
    format!("{sign}{body}")
}

proptest! {
    #[test]
    fn canonical_f64_matches_reference(bits in any::<u64>(), scale in -30i32..30) {
        // Any finite double, and doubles near each decimal layout boundary.
        for v in [f64::from_bits(bits), 10f64.powi(scale), 1.5 * 10f64.powi(scale)] {
            prop_assume!(v.is_finite());
            let text = canonical_f64(v);
            prop_assert_eq!(&text, &reference_canonical_f64(v));
            prop_assert!(is_canonical_f64(&text, v));
        }
    }

    #[test]
    fn parsers_agree_on_single_byte_changes(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        op in 0u8..3,
    ) {
        let mut bytes = SAMPLE_LINE.as_bytes().to_vec();
        let i = pos.index(bytes.len());
        match op {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => {
                bytes.remove(i);
            }
        }
        if let Ok(line) = String::from_utf8(bytes) {
            assert_parsers_agree(&line);
        }
    }

    #[test]
    fn parsers_agree_on_valid_entries(
        seq in any::<u64>(),
        time_ms in any::<i64>(),
        reason in any::<String>(),
        venue in "[ -~]{0,12}",
        eps_bits in any::<u64>(),
    ) {
        let mut e = sample(seq);
        e.time_ms = time_ms;
        e.reason = reason;
        e.venue = venue;
        e.epsilon = f64::from_bits(eps_bits & !(1 << 63));
        prop_assume!(e.epsilon.is_finite());
        let line = e.to_canonical_json().unwrap();
        assert_parsers_agree(&line);
        prop_assert_eq!(AuditEntry::parse_canonical(&line).unwrap(), e);
    }
}

/// One reader over many lines (it remembers float tokens) reads each line as
/// a fresh parse does, whatever came before it.
#[test]
fn reader_over_many_lines_agrees_with_fresh_parses() {
    let eps = [
        "0.1", "0.10", "0.25", "1e-7", "1e-07", "0.1", "-0.1", "0.1", "1.0", "1", "0.0",
    ];
    let rho = ["0.0", "0.5", "0.50", "0.5", "2e-7", "0.5", "0", "0.5"];
    let mut lines = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        for r in &rho {
            let line = replace(SAMPLE_LINE, "\"epsilon\":0.1", &format!("\"epsilon\":{e}"));
            lines.push(replace(&line, "\"rho\":0.0", &format!("\"rho\":{r}")));
            lines.push(replace(SAMPLE_LINE, "\"seq\":7", &format!("\"seq\":{i}")));
        }
    }
    // Forwards and backwards, so each token follows many others.
    for order in [lines.clone(), lines.iter().rev().cloned().collect()] {
        let mut reader = LineReader::default();
        for line in &order {
            let got = reader.read(line).map(AuditEntryRef::into_owned);
            assert_eq!(got, AuditEntry::parse_general(line), "{line}");
        }
    }
    let mut reader = LineReader::default();
    assert!(reader.read(&lines[0]).is_ok());
    let zero = replace(SAMPLE_LINE, "\"epsilon\":0.1", "\"epsilon\":0.10");
    assert!(matches!(
        reader.read(&zero),
        Err(EntryError::NotCanonical { .. })
    ));
}

#[test]
fn borrowed_entry_matches_the_owned_one() {
    let e = sample(7);
    let r = AuditEntryRef::parse_canonical(SAMPLE_LINE).unwrap();
    // A canonical line without escapes is read without copying its strings.
    assert!(matches!(r.actor, Cow::Borrowed(_)) && matches!(r.reason, Cow::Borrowed(_)));
    assert_eq!(r, e);
    assert_eq!(e, r);
    assert_eq!(r.validate(), Ok(()));
    assert_eq!(AuditEntryRef::from(e.clone()), r);
    assert_eq!(r.clone().into_owned(), e);
    let mut other = sample(7);
    other.venue = "arena-2".to_owned();
    assert_ne!(r, other);
    // Escaped strings are decoded by the general parser.
    let mut escaped = sample(1);
    escaped.reason = "quote \" backslash \\ tab \t".to_owned();
    let line = escaped.to_canonical_json().unwrap();
    let r = AuditEntryRef::parse_canonical(&line).unwrap();
    assert_eq!(r.reason, escaped.reason);
    assert_eq!(r, escaped);
    // Errors are those of the owned parser.
    let bad = replace(SAMPLE_LINE, "\"allow\"", "\"maybe\"");
    assert_eq!(
        AuditEntryRef::parse_canonical(&bad).map(AuditEntryRef::into_owned),
        AuditEntry::parse_canonical(&bad)
    );
}
