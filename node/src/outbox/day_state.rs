//! The node's durable day state, in the outbox database (file mode 0600):
//! sealed pseudonym keys per event day, contribution-bound state per unit,
//! continual-release streams, stream leases and the last released window.
//!
//! A window's releases, the unit states it changed, its streams' states and
//! the released-window mark are written in ONE transaction
//! ([`Outbox::commit_window`]): after a crash either all of a window is
//! durable (and a restart skips it) or none of it is (and a restart redoes it
//! from the same exact data; no noise was sent).

use sqlx::Row;
use veil_privacy::{
    mechanisms::{StreamState, StreamStep},
    pseudonym::{DayKey, EventDay, SealedDayKey},
};

use super::{Outbox, OutboxError};
use crate::{
    release::PendingRelease,
    units::{Family, UnitRecord},
};

/// What one released window changes besides the outbox.
#[derive(Debug, Default)]
pub struct WindowCommit<'a> {
    /// Window start, Unix ms.
    pub start_ms: i64,
    /// Window length, s.
    pub length_s: u32,
    /// Event day of the unit updates and streams.
    pub day: Option<u32>,
    /// Day keys first used by this window (stored before anything keyed by them).
    pub new_keys: &'a [(EventDay, &'a SealedDayKey)],
    /// Units whose bound state changed.
    pub units: &'a [UnitRecord],
    /// Streams stepped.
    pub streams: &'a [StreamWrite<'a>],
}

/// A stream stepped by a window: its header, stored once (when the stream
/// has no row yet), and the steps the window released, appended.
#[derive(Debug)]
pub struct StreamWrite<'a> {
    /// Metric.
    pub metric: &'a str,
    /// Zone.
    pub zone: &'a str,
    /// JSON of the stream's [`StreamState::header`].
    pub header: String,
    /// The number of the first step in `steps`.
    pub first: u32,
    /// The steps released, in order.
    pub steps: Vec<StreamStep>,
}

impl Outbox {
    /// Writes a window's releases and day state durably in one transaction.
    /// Returns how many releases were new.
    pub async fn commit_window(
        &self,
        releases: &[PendingRelease],
        policy_hash: &str,
        now_ms: i64,
        commit: &WindowCommit<'_>,
    ) -> Result<u64, OutboxError> {
        let mut tx = self.pool.begin().await?;
        let added = self
            .insert_releases(&mut tx, releases, policy_hash, now_ms)
            .await?;
        for (day, key) in commit.new_keys {
            sqlx::query("-- Outbox::commit_window()\nINSERT OR IGNORE INTO day_keys (day, key) VALUES (?, ?)")
                .bind(i64::from(day.days_since_epoch()))
                .bind(&key.dangerous_secret_bytes()[..])
                .execute(&mut *tx)
                .await?;
        }
        if let Some(day) = commit.day {
            for (family, unit, state) in commit.units {
                sqlx::query("-- Outbox::commit_window()\nINSERT INTO unit_bounds (day, family, unit, state) VALUES (?, ?, ?, ?) ON CONFLICT(day, family, unit) DO UPDATE SET state = excluded.state")
                    .bind(i64::from(day))
                    .bind(i64::from(family.code()))
                    .bind(&unit[..])
                    .bind(&state[..])
                    .execute(&mut *tx)
                    .await?;
            }
            for w in commit.streams {
                sqlx::query("-- Outbox::commit_window()\nINSERT INTO streams (day, metric, zone, state) VALUES (?, ?, ?, ?) ON CONFLICT(day, metric, zone) DO NOTHING")
                    .bind(i64::from(day))
                    .bind(w.metric)
                    .bind(w.zone)
                    .bind(&w.header)
                    .execute(&mut *tx)
                    .await?;
                // A step stored twice is an error (the primary key): the
                // window's transaction fails rather than keep two noises.
                for (t, step) in (w.first..).zip(&w.steps) {
                    sqlx::query("-- Outbox::commit_window()\nINSERT INTO stream_steps (day, metric, zone, step, increment, noisy, released) VALUES (?, ?, ?, ?, ?, ?, ?)")
                        .bind(i64::from(day))
                        .bind(w.metric)
                        .bind(w.zone)
                        .bind(i64::from(t))
                        .bind(step.increment)
                        .bind(step.noisy)
                        .bind(step.released)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let end = commit.start_ms + i64::from(commit.length_s) * 1000;
        sqlx::query("-- Outbox::commit_window()\nINSERT INTO released_windows (length_s, released_end) VALUES (?, ?) ON CONFLICT(length_s) DO UPDATE SET released_end = MAX(released_end, excluded.released_end)")
            .bind(i64::from(commit.length_s))
            .bind(end)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(added)
    }

    /// The end of the last window released with windows of `length_s`.
    pub async fn released_end(&self, length_s: u32) -> Result<Option<i64>, OutboxError> {
        Ok(sqlx::query_scalar(
            "-- Outbox::released_end()\nSELECT released_end FROM released_windows WHERE length_s = ?",
        )
        .bind(i64::from(length_s))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes the day state of event days before `keep_from` (their keys
    /// first: old pseudonyms can no longer be recomputed).
    pub async fn forget_days_before(&self, keep_from: u32) -> Result<(), OutboxError> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "-- Outbox::forget_days_before()\nDELETE FROM day_keys WHERE day < ?",
            "-- Outbox::forget_days_before()\nDELETE FROM unit_bounds WHERE day < ?",
            "-- Outbox::forget_days_before()\nDELETE FROM streams WHERE day < ?",
            "-- Outbox::forget_days_before()\nDELETE FROM stream_steps WHERE day < ?",
        ] {
            sqlx::query(sql)
                .bind(i64::from(keep_from))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stored day keys.
    pub async fn day_keys(&self) -> Result<Vec<DayKey>, OutboxError> {
        let rows = sqlx::query("-- Outbox::day_keys()\nSELECT day, key FROM day_keys")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let day: i64 = row.try_get("day")?;
            let key: Vec<u8> = row.try_get("key")?;
            let Ok(day) = u32::try_from(day) else {
                continue;
            };
            match SealedDayKey::from_stored(&key) {
                Ok(sealed) => out.push(DayKey::unseal(EventDay::new(day), &sealed)),
                Err(e) => {
                    tracing::error!(day, error = %e, "Stored day key unreadable; that day's pseudonyms start afresh.")
                }
            }
        }
        Ok(out)
    }

    /// Stored unit-bound states of `day`: (family, unit, state).
    pub async fn unit_bounds(
        &self,
        day: u32,
    ) -> Result<Vec<(Family, [u8; 32], Vec<u8>)>, OutboxError> {
        let rows = sqlx::query(
            "-- Outbox::unit_bounds()\nSELECT family, unit, state FROM unit_bounds WHERE day = ?",
        )
        .bind(i64::from(day))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let family: i64 = row.try_get("family")?;
            let unit: Vec<u8> = row.try_get("unit")?;
            let state: Vec<u8> = row.try_get("state")?;
            let (Some(family), Ok(unit)) = (
                u8::try_from(family).ok().and_then(Family::from_code),
                <[u8; 32]>::try_from(unit.as_slice()),
            ) else {
                continue;
            };
            out.push((family, unit, state));
        }
        Ok(out)
    }

    /// Days that have stored unit-bound state.
    pub async fn bound_days(&self) -> Result<Vec<u32>, OutboxError> {
        let days: Vec<i64> =
            sqlx::query_scalar("-- Outbox::bound_days()\nSELECT DISTINCT day FROM unit_bounds")
                .fetch_all(&self.pool)
                .await?;
        Ok(days
            .into_iter()
            .filter_map(|d| u32::try_from(d).ok())
            .collect())
    }

    /// A stream's stored state (its header, then its steps in order), if it
    /// was ever stepped. Steps must follow the header without a gap; the
    /// caller's [`veil_privacy::mechanisms::ContinualStream::restore`] then
    /// checks the rest.
    pub async fn stream_state(
        &self,
        day: u32,
        metric: &str,
        zone: &str,
    ) -> Result<Option<StreamState>, OutboxError> {
        let bad = |reason: String| OutboxError::Stream {
            stream: format!("{metric}/{zone}"),
            reason,
        };
        let header: Option<String> = sqlx::query_scalar(
            "-- Outbox::stream_state()\nSELECT state FROM streams WHERE day = ? AND metric = ? AND zone = ?",
        )
        .bind(i64::from(day))
        .bind(metric)
        .bind(zone)
        .fetch_optional(&self.pool)
        .await?;
        let Some(header) = header else {
            return Ok(None);
        };
        let mut state: StreamState =
            serde_json::from_str(&header).map_err(|e| bad(format!("header: {e}")))?;
        let rows = sqlx::query(
            "-- Outbox::stream_state()\nSELECT step, increment, noisy, released FROM stream_steps WHERE day = ? AND metric = ? AND zone = ? ORDER BY step",
        )
        .bind(i64::from(day))
        .bind(metric)
        .bind(zone)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            let step: i64 = row.try_get("step")?;
            if step != i64::from(state.next_step()) {
                return Err(bad(format!(
                    "step {step} stored where step {} was due",
                    state.next_step()
                )));
            }
            state.push_step(StreamStep {
                increment: row.try_get("increment")?,
                noisy: row.try_get("noisy")?,
                released: row.try_get("released")?,
            });
        }
        Ok(Some(state))
    }

    /// The stream lease held for (day, metric, purpose), if any.
    pub async fn stream_lease(
        &self,
        day: &str,
        metric: &str,
        purpose: &str,
    ) -> Result<Option<String>, OutboxError> {
        Ok(sqlx::query_scalar(
            "-- Outbox::stream_lease()\nSELECT lease_id FROM stream_leases WHERE day = ? AND metric = ? AND purpose = ?",
        )
        .bind(day)
        .bind(metric)
        .bind(purpose)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a granted stream lease (right after the ledger charged it).
    pub async fn set_stream_lease(
        &self,
        day: &str,
        metric: &str,
        purpose: &str,
        lease_id: &str,
    ) -> Result<(), OutboxError> {
        sqlx::query("-- Outbox::set_stream_lease()\nINSERT INTO stream_leases (day, metric, purpose, lease_id) VALUES (?, ?, ?, ?) ON CONFLICT(day, metric, purpose) DO UPDATE SET lease_id = excluded.lease_id")
            .bind(day)
            .bind(metric)
            .bind(purpose)
            .bind(lease_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use veil_privacy::pseudonym::{DayKey, EventDay, Pseudonym};

    use super::*;
    use crate::units::{DayBounds, Outcome, UnitLimits};

    const LIMITS: UnitLimits = UnitLimits {
        max_zone_visits: 2,
        max_visits_per_zone: 2,
        max_gate_passes: 1,
    };

    /// A node restarted within the event day pseudonymises the same
    /// identifier the same way and keeps enforcing the same bounds; the
    /// database file is owner-only.
    #[tokio::test]
    async fn bounds_and_day_keys_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let day = EventDay::new(20_500);
        let (key, sealed) = DayKey::generate(day).unwrap();
        let unit = key.pseudonym(b"track-7");
        let mut bounds = DayBounds::new(LIMITS);
        assert_eq!(bounds.enter(Family::Tracks, unit, 0, 1), Outcome::Counted);
        assert_eq!(bounds.exit(Family::Tracks, unit, 0), Outcome::Counted);
        assert_eq!(bounds.enter(Family::Tracks, unit, 1, 2), Outcome::Counted);
        {
            let outbox = Outbox::open(&path, "v", "n", 100).await.unwrap();
            let commit = WindowCommit {
                start_ms: 60_000,
                length_s: 60,
                day: Some(day.days_since_epoch()),
                new_keys: &[(day, &sealed)],
                units: &bounds.take_dirty(),
                streams: &[],
            };
            outbox.commit_window(&[], "hash", 0, &commit).await.unwrap();
            outbox.close().await;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "outbox file mode {mode:o}");
        }
        // Restart: a new process has only the file.
        let outbox = Outbox::open(&path, "v", "n", 100).await.unwrap();
        assert_eq!(outbox.released_end(60).await.unwrap(), Some(120_000));
        let keys = outbox.day_keys().await.unwrap();
        assert_eq!(keys.len(), 1);
        let again = keys[0].pseudonym(b"track-7");
        assert_eq!(again, unit, "same pseudonym after the restart");
        let mut restored = DayBounds::new(LIMITS);
        for (family, bytes, state) in outbox.unit_bounds(day.days_since_epoch()).await.unwrap() {
            restored
                .restore_unit(family, Pseudonym::from_stored(bytes), &state)
                .unwrap();
        }
        // V = 2 was spent before the restart: a third visit is dropped, and
        // the exit of the zone it is still in counts.
        assert_eq!(
            restored.enter(Family::Tracks, again, 2, 3),
            Outcome::Bounded
        );
        assert_eq!(restored.exit(Family::Tracks, again, 1), Outcome::Counted);
        // Old days are forgotten with their keys.
        outbox
            .forget_days_before(day.days_since_epoch() + 1)
            .await
            .unwrap();
        assert!(outbox.day_keys().await.unwrap().is_empty());
        assert!(
            outbox
                .unit_bounds(day.days_since_epoch())
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// A stream is stored as its header once and one row per step: read
    /// back, header + steps rebuild the state the node held; a step stored
    /// twice fails the window's transaction; old days' steps are forgotten.
    #[tokio::test]
    async fn stream_steps_are_appended_and_read_back_in_order() {
        use veil_privacy::mechanisms::{ContinualStream, StreamMechanism, StreamParams};
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.db"), "v", "n", 100)
            .await
            .unwrap();
        let params = StreamParams::new(
            StreamMechanism::SqrtFactorization,
            60,
            veil_privacy::mechanisms::Contribution::Alternating { events: 4 },
            veil_privacy::Rho::new(0.05).unwrap(),
        )
        .unwrap();
        let mut s = ContinualStream::new(params).unwrap();
        let day = 20_500;
        let window = |s: &ContinualStream, first: u32, start_ms: i64| {
            let state = s.state();
            let write = StreamWrite {
                metric: "occupancy",
                zone: "floor",
                header: serde_json::to_string(&state.header()).unwrap(),
                first,
                steps: (first..state.next_step())
                    .filter_map(|t| state.step(t))
                    .collect(),
            };
            (write, start_ms)
        };
        s.release(1, 2).unwrap();
        let (w1, t1) = window(&s, 0, 60_000);
        s.release(2, -1).unwrap();
        let (w2, t2) = window(&s, 2, 120_000);
        for (w, t) in [(&w1, t1), (&w2, t2)] {
            let commit = WindowCommit {
                start_ms: t,
                length_s: 60,
                day: Some(day),
                streams: std::slice::from_ref(w),
                ..WindowCommit::default()
            };
            outbox.commit_window(&[], "hash", 0, &commit).await.unwrap();
        }
        let stored = outbox
            .stream_state(day, "occupancy", "floor")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&stored, s.state());
        let restored = ContinualStream::restore(params, stored).unwrap();
        assert_eq!(restored.next_step(), 3);
        // The same step again: refused, nothing of that window kept.
        let commit = WindowCommit {
            start_ms: 180_000,
            length_s: 60,
            day: Some(day),
            streams: std::slice::from_ref(&w2),
            ..WindowCommit::default()
        };
        assert!(outbox.commit_window(&[], "hash", 0, &commit).await.is_err());
        assert_eq!(outbox.released_end(60).await.unwrap(), Some(180_000));
        outbox.forget_days_before(day + 1).await.unwrap();
        assert!(
            outbox
                .stream_state(day, "occupancy", "floor")
                .await
                .unwrap()
                .is_none()
        );
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stream_steps")
            .fetch_one(&outbox.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
