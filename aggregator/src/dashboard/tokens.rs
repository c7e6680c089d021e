//! Venue-scoped organizer bearer tokens for the dashboard.
//!
//! `token issue` prints a token once: `veil_<id>_<secret>` where `id` is 8
//! random bytes (hex, public: it names the token in lists, revocations and
//! audit entries) and `secret` 32 random bytes (base64url), both from
//! ring's system RNG. Only SHA-256 of the whole token is stored, with its
//! venue, expiry and revocation time. A token never grants more than one
//! venue's organizer view, and never anything a node did not release.

use base64::Engine as _;
use ring::rand::SecureRandom as _;
use sqlx::{AnyPool, Row};

/// Longest token lifetime `token issue` accepts.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(31 * 86_400);

/// Token errors.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad input (names what).
    #[error("{0}")]
    Invalid(String),
    /// The system RNG failed.
    #[error("the system random number generator failed")]
    Rng,
    /// Database error.
    #[error("token database: {0}")]
    Db(#[from] sqlx::Error),
}

/// An issued token: the secret is shown once and never stored.
#[derive(Debug)]
pub struct Issued {
    /// Public id.
    pub id: String,
    /// The token (secret).
    pub token: String,
    /// Venue.
    pub venue: String,
    /// Expiry, Unix ms.
    pub expires_ms: i64,
}

/// A stored token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Venue.
    pub venue: String,
    /// Free-text label given at issue.
    pub label: String,
    /// Issued, Unix ms.
    pub created_ms: i64,
    /// Expiry, Unix ms.
    pub expires_ms: i64,
    /// Revoked at, Unix ms (0: not revoked).
    pub revoked_ms: i64,
}

/// Why a presented token is refused (shown to the caller: names no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token of this aggregator.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl Refused {
    /// Short reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unknown => "unknown token",
            Refused::Expired => "token expired",
            Refused::Revoked => "token revoked",
        }
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N], TokenError> {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| TokenError::Rng)?;
    Ok(b)
}

/// Whether `s` has the shape of a token (checked before hashing, so junk
/// headers are refused cheaply and never logged).
pub fn well_formed(s: &str) -> bool {
    let mut parts = s.splitn(3, '_');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("veil"), Some(id), Some(secret))
            if id.len() == 16
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && secret.len() == 43
                && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    )
}

/// Issues a token for `venue`, valid for `ttl` from `now_ms`.
pub async fn issue(
    pool: &AnyPool,
    venue: &str,
    label: &str,
    ttl: std::time::Duration,
    now_ms: i64,
) -> Result<Issued, TokenError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(TokenError::Invalid(format!(
            "--ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TTL)
        )));
    }
    if label.len() > 200 || label.chars().any(char::is_control) {
        return Err(TokenError::Invalid(
            "--label must be at most 200 printable characters".into(),
        ));
    }
    let id = hex::encode(random::<8>()?);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?);
    let token = format!("veil_{id}_{secret}");
    let expires_ms = now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(
        "-- issue()\nINSERT INTO dashboard_tokens (token_id, token_sha256, venue, label, created_ms, expires_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(sha256_hex(&token))
    .bind(venue)
    .bind(label)
    .bind(now_ms)
    .bind(expires_ms)
    .execute(pool)
    .await?;
    Ok(Issued {
        id,
        token,
        venue: venue.to_owned(),
        expires_ms,
    })
}

/// Revokes token `id`; returns whether it existed and was not yet revoked.
pub async fn revoke(pool: &AnyPool, id: &str, now_ms: i64) -> Result<bool, TokenError> {
    let r = sqlx::query(
        "-- revoke()\nUPDATE dashboard_tokens SET revoked_ms = $1 WHERE token_id = $2 AND revoked_ms = 0",
    )
    .bind(now_ms)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Every token (optionally of one venue), newest first.
pub async fn list(pool: &AnyPool, venue: Option<&str>) -> Result<Vec<TokenInfo>, TokenError> {
    let rows = sqlx::query(
        "-- list()\nSELECT token_id, venue, label, created_ms, expires_ms, revoked_ms FROM dashboard_tokens \
         WHERE ($1 = '' OR venue = $1) ORDER BY created_ms DESC",
    )
    .bind(venue.unwrap_or(""))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TokenInfo {
                id: r.try_get("token_id")?,
                venue: r.try_get("venue")?,
                label: r.try_get("label")?,
                created_ms: r.try_get("created_ms")?,
                expires_ms: r.try_get("expires_ms")?,
                revoked_ms: r.try_get("revoked_ms")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(TokenError::from)
}

/// The stored record of token `id` if it is valid at `now_ms` (a session
/// re-checks its token on every request).
pub async fn by_id(
    pool: &AnyPool,
    id: &str,
    now_ms: i64,
) -> Result<Result<TokenInfo, Refused>, TokenError> {
    let row = sqlx::query(
        "-- by_id()\nSELECT token_id, venue, label, created_ms, expires_ms, revoked_ms FROM dashboard_tokens \
         WHERE token_id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match row {
        None => Ok(Err(Refused::Unknown)),
        Some(r) => Ok(valid_at(row_to_info(&r)?, now_ms)),
    }
}

fn row_to_info(r: &sqlx::any::AnyRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        id: r.try_get("token_id")?,
        venue: r.try_get("venue")?,
        label: r.try_get("label")?,
        created_ms: r.try_get("created_ms")?,
        expires_ms: r.try_get("expires_ms")?,
        revoked_ms: r.try_get("revoked_ms")?,
    })
}

fn valid_at(info: TokenInfo, now_ms: i64) -> Result<TokenInfo, Refused> {
    if info.revoked_ms != 0 {
        Err(Refused::Revoked)
    } else if info.expires_ms <= now_ms {
        Err(Refused::Expired)
    } else {
        Ok(info)
    }
}

/// Checks a presented token: its stored record if valid at `now_ms`.
pub async fn verify(
    pool: &AnyPool,
    token: &str,
    now_ms: i64,
) -> Result<Result<TokenInfo, Refused>, TokenError> {
    if !well_formed(token) {
        return Ok(Err(Refused::Unknown));
    }
    let row = sqlx::query(
        "-- verify()\nSELECT token_id, venue, label, created_ms, expires_ms, revoked_ms FROM dashboard_tokens \
         WHERE token_sha256 = $1",
    )
    .bind(sha256_hex(token))
    .fetch_optional(pool)
    .await?;
    let Some(r) = row else {
        return Ok(Err(Refused::Unknown));
    };
    Ok(valid_at(row_to_info(&r)?, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, crate::storage::Storage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = crate::storage::Storage::open(&url).await.expect("open");
        (dir, s)
    }

    #[tokio::test]
    async fn issue_verify_expire_revoke() {
        let (_d, s) = db().await;
        let ttl = std::time::Duration::from_secs(3600);
        let t = issue(s.unaudited_tables(), "arena", "ops desk", ttl, 1_000)
            .await
            .expect("issue");
        assert!(well_formed(&t.token), "{}", t.token);
        let ok = verify(s.reads(), &t.token, 2_000)
            .await
            .expect("db")
            .expect("valid");
        assert_eq!(
            (ok.venue.as_str(), ok.id.as_str()),
            ("arena", t.id.as_str())
        );
        // Only the hash is stored.
        let stored: String = sqlx::query_scalar("SELECT token_sha256 FROM dashboard_tokens")
            .fetch_one(s.reads())
            .await
            .expect("row");
        assert_ne!(stored, t.token);
        assert!(!stored.contains(&t.token[22..]));
        assert_eq!(
            verify(s.reads(), &t.token, t.expires_ms).await.expect("db"),
            Err(Refused::Expired)
        );
        let mut forged = t.token.clone();
        forged.pop();
        forged.push(if t.token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            verify(s.reads(), &forged, 2_000).await.expect("db"),
            Err(Refused::Unknown)
        );
        assert_eq!(
            verify(s.reads(), "junk", 2_000).await.expect("db"),
            Err(Refused::Unknown)
        );
        assert!(
            revoke(s.unaudited_tables(), &t.id, 3_000)
                .await
                .expect("revoke")
        );
        assert!(
            !revoke(s.unaudited_tables(), &t.id, 3_000)
                .await
                .expect("revoke twice")
        );
        assert_eq!(
            verify(s.reads(), &t.token, 4_000).await.expect("db"),
            Err(Refused::Revoked)
        );
        let l = list(s.reads(), Some("arena")).await.expect("list");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].revoked_ms, 3_000);
        assert!(
            list(s.reads(), Some("other"))
                .await
                .expect("list")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn ttl_and_label_are_checked() {
        let (_d, s) = db().await;
        assert!(
            issue(
                s.unaudited_tables(),
                "arena",
                "",
                std::time::Duration::ZERO,
                0
            )
            .await
            .is_err()
        );
        assert!(
            issue(s.unaudited_tables(), "arena", "", MAX_TTL * 2, 0)
                .await
                .is_err()
        );
        assert!(
            issue(
                s.reads(),
                "arena",
                "a\nb",
                std::time::Duration::from_secs(1),
                0
            )
            .await
            .is_err()
        );
    }
}
