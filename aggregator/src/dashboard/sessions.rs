//! Dashboard sign-in sessions. Signing in with a token opens a session whose
//! id (32 random bytes from ring's system RNG, base64url) is what the
//! cookie holds: never the token itself. The aggregator keeps, in memory,
//! the SHA-256 of each open session id with its token id and expiry
//! (at most the token's). Signing out closes the session on the server, so
//! a copied cookie stops working at once; revoking or expiring the token
//! ends its sessions too (every request re-checks the token). Sessions do
//! not survive a restart of the aggregator: the organizer signs in again.

use std::collections::HashMap;

use ring::rand::SecureRandom as _;

use super::tokens::TokenError;

/// Most sessions kept at once; past it, the ones closest to expiry go
/// first (only holders of a valid token can open one).
pub const MAX_SESSIONS: usize = 10_000;

/// Prefix of a session id, so it is never mistaken for a token.
const PREFIX: &str = "s_";

/// Open sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    open: std::sync::Mutex<HashMap<String, Open>>,
}

#[derive(Debug, Clone)]
struct Open {
    token_id: String,
    expires_ms: i64,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

/// Whether `s` has the shape of a session id.
pub fn well_formed(s: &str) -> bool {
    s.strip_prefix(PREFIX).is_some_and(|r| {
        r.len() == 43
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        // A poisoned lock only means a panic elsewhere mid-update of a map
        // whose entries are independent: keep using it.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for token `token_id` until `expires_ms`; returns
    /// the session id for the cookie.
    pub fn open(&self, token_id: &str, expires_ms: i64, now_ms: i64) -> Result<String, TokenError> {
        let mut b = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| TokenError::Rng)?;
        use base64::Engine as _;
        let id = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        );
        let mut open = self.lock();
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, s| s.expires_ms > now_ms);
        }
        while open.len() >= MAX_SESSIONS {
            let Some(first) = open
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            open.remove(&first);
        }
        open.insert(
            sha256_hex(&id),
            Open {
                token_id: token_id.to_owned(),
                expires_ms,
            },
        );
        Ok(id)
    }

    /// The token id of open session `id` at `now_ms`, if any.
    pub fn token_of(&self, id: &str, now_ms: i64) -> Option<String> {
        if !well_formed(id) {
            return None;
        }
        let key = sha256_hex(id);
        let mut open = self.lock();
        match open.get(&key) {
            Some(s) if s.expires_ms > now_ms => Some(s.token_id.clone()),
            Some(_) => {
                open.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Closes session `id`; returns whether it was open.
    pub fn close(&self, id: &str) -> bool {
        well_formed(id) && self.lock().remove(&sha256_hex(id)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_not_the_token_and_closing_it_ends_it() {
        let s = Sessions::default();
        let id = s.open("00112233aabbccdd", 10_000, 0).expect("open");
        assert!(well_formed(&id), "{id}");
        assert!(!super::super::tokens::well_formed(&id));
        assert_eq!(s.token_of(&id, 1).as_deref(), Some("00112233aabbccdd"));
        assert_eq!(s.token_of(&id, 10_000), None, "expired");
        let id = s.open("00112233aabbccdd", 10_000, 0).expect("open");
        assert!(s.close(&id));
        assert!(!s.close(&id));
        assert_eq!(s.token_of(&id, 1), None, "closed");
        assert_eq!(s.token_of("veil_x", 1), None);
    }
}
