//! Turns closed windows into releases: every count goes through a DP
//! mechanism of `veil-privacy`; only metrics the config declares
//! non-personal are released without noise. The output type wraps a
//! [`Privatized`], so nothing un-noised can reach the outbox by mistake.

use veil_privacy::{Epsilon, PrivacyError, Privatized, mechanisms};

use crate::{config::Config, window::ClosedWindow};

/// Metric names released by the node.
pub mod metric {
    /// People in the zone (sum over its cameras of mean count).
    pub const OCCUPANCY: &str = "occupancy";
    /// Gate scans in.
    pub const INGRESS: &str = "ingress";
    /// Gate scans out.
    pub const EGRESS: &str = "egress";
    /// Distinct probing devices.
    pub const UNIQUE_DEVICES: &str = "unique_devices";
    /// Distinct consented app users.
    pub const APP_USERS: &str = "app_users";
    /// Mean sound level, dB (non-personal when declared).
    pub const SOUND_LEVEL_DB: &str = "sound_level_db";
    /// Audio frames that clipped (non-personal when declared).
    pub const CLIPPING_FRAMES: &str = "clipping_frames";
    /// Mean CO2, ppm (non-personal when declared).
    pub const CO2_PPM: &str = "co2_ppm";
    /// Mean temperature, degC (non-personal when declared).
    pub const TEMPERATURE_C: &str = "temperature_c";
}

/// One release ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRelease {
    /// Metric name.
    pub metric: &'static str,
    /// Zone.
    pub zone: String,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window length, s.
    pub window_length_s: u32,
    /// Purpose.
    pub purpose: String,
    /// The DP (or declared non-personal) value.
    pub value: Privatized,
}

/// Releases every metric of every zone of `w`.
///
/// The set of (zone, metric) pairs released depends only on the config
/// (zones, gates, cameras, non-personal list) and on which non-personal
/// sensors reported, never on personal data.
pub fn release_window(cfg: &Config, w: &ClosedWindow) -> Result<Vec<PendingRelease>, PrivacyError> {
    let eps = Epsilon::new(cfg.privacy.epsilon_per_release)?;
    let bound = cfg.privacy.max_events_per_window;
    let non_personal = |m: &str| cfg.privacy.non_personal.iter().any(|n| n == m);
    let mut out = Vec::new();
    for zone in &cfg.zones {
        let Some(agg) = w.zones.get(&zone.name) else {
            continue;
        };
        let mut push = |metric: &'static str, value: Privatized| {
            out.push(PendingRelease {
                metric,
                zone: zone.name.clone(),
                window_start_ms: w.start_ms,
                window_length_s: w.length_s,
                purpose: cfg.privacy.purpose.clone(),
                value,
            });
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if zone.cameras > 0 {
            push(
                metric::OCCUPANCY,
                mechanisms::count_laplace(agg.occupancy_estimate(), zone.cameras, eps)?,
            );
        }
        if zone.gate {
            push(
                metric::INGRESS,
                mechanisms::count_laplace(count(agg.ingress), bound, eps)?,
            );
            push(
                metric::EGRESS,
                mechanisms::count_laplace(count(agg.egress), bound, eps)?,
            );
        }
        push(
            metric::UNIQUE_DEVICES,
            mechanisms::count_laplace(count(agg.devices.len() as u64), 1, eps)?,
        );
        push(
            metric::APP_USERS,
            mechanisms::count_laplace(count(agg.app_users.len() as u64), 1, eps)?,
        );
        let mean = |(sum, n): (f64, u64)| (n > 0).then(|| sum / n as f64);
        for (metric, value) in [
            (metric::SOUND_LEVEL_DB, mean(agg.sound)),
            (metric::CO2_PPM, mean(agg.co2)),
            (metric::TEMPERATURE_C, mean(agg.temperature)),
            (
                metric::CLIPPING_FRAMES,
                (agg.sound.1 > 0).then_some(agg.clipping_frames as f64),
            ),
        ] {
            if let Some(v) = value
                && non_personal(metric)
            {
                push(
                    metric,
                    mechanisms::non_personal(v, &format!("privacy.non_personal.{metric}"))?,
                );
            }
        }
    }
    Ok(out)
}
