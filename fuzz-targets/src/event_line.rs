//! `event_line`: the node's event line parser, [`veil_node::event::parse_line`].
//!
//! Invariants: no input panics; the fast path and the general parsers
//! (`serde_json`, `time`) give the same result, accepted or refused with the
//! same error; an accepted event, written back as JSON, parses to the same
//! event.

use veil_node::event::{parse_line, parse_line_general};

/// Runs one line (the whole input) through both parsers.
pub fn event_line(data: &[u8]) {
    // The node reads UTF-8 lines: other bytes never reach the parser.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_line(line);
    let general = parse_line_general(line);
    assert_eq!(
        parsed, general,
        "fast and general paths disagree on {line:?}"
    );
    if let Ok(valid) = parsed {
        let again = serde_json::to_string(&valid.event).expect("an event serialises");
        let reparsed = parse_line(&again).expect("an accepted event re-validates");
        assert_eq!(reparsed, valid, "{line:?} re-serialised as {again:?}");
    }
}
