//! Turns closed windows into releases under the venue's policy: the policy
//! names which metrics may be released, for which purpose, with which
//! mechanism and cost. Planning happens first (no noise); noise is drawn
//! only once a lease has charged the cost. The output wraps a
//! [`Privatized`], so nothing un-noised can reach the outbox by mistake.

use veil_privacy::{
    Cost, Epsilon, PrivacyError, Privatized, Rho,
    mechanisms::{self, ContinualStream, Contribution, StreamMechanism, StreamParams},
    policy::{LoadedPolicy, PolicyMechanism, StreamShape},
};

use crate::{config::Config, window::ClosedWindow};

pub use crate::metric;

/// What a planned release will be computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// A count with its sensitivity (made true by contribution bounds).
    Count {
        /// Exact count (never leaves the node).
        value: i64,
        /// Sensitivity.
        sensitivity: u32,
    },
    /// A non-personal measurement.
    Measurement(f64),
    /// One step of a continual-release stream (zone x metric x event day):
    /// the exact net change of the running total in this window.
    Stream {
        /// Exact increment (never leaves the node).
        increment: i64,
        /// Window index since the event day's start.
        step: u32,
        /// Windows per event day.
        horizon: u32,
        /// Event day number (days since epoch in the policy's calendar).
        day: u32,
        /// Which factorization.
        mechanism: PolicyMechanism,
    },
}

/// A release the policy allows, before any noise is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Metric name.
    pub metric: &'static str,
    /// Zone.
    pub zone: String,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window length, s.
    pub window_length_s: u32,
    /// Purpose (the policy's first purpose for the metric).
    pub purpose: String,
    /// The per-release cost the policy sets (`Cost::Free` for non-personal).
    pub cost: Cost,
    /// What it is computed from.
    pub input: Input,
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
    /// Lease the cost was charged to ("" for non-personal).
    pub lease_id: String,
    /// The DP (or declared non-personal) value.
    pub value: Privatized,
    /// For a stream release: (step, horizon).
    pub stream: Option<(u32, u32)>,
}

fn cost_of(
    policy: &LoadedPolicy,
    metric: &str,
) -> Result<Option<(Cost, String, PolicyMechanism)>, PrivacyError> {
    let Some(m) = policy.metric(metric) else {
        return Ok(None);
    };
    let cost = match m.mechanism {
        PolicyMechanism::DiscreteLaplace => Cost::Pure(Epsilon::new(m.epsilon.unwrap_or(0.0))?),
        PolicyMechanism::DiscreteGaussian
        | PolicyMechanism::ContinualSqrt
        | PolicyMechanism::ContinualTree => Cost::Zcdp(Rho::new(m.rho.unwrap_or(0.0))?),
        PolicyMechanism::NonPersonal => Cost::Free,
    };
    let purpose = m.purposes.first().cloned().unwrap_or_default();
    Ok(Some((cost, purpose, m.mechanism)))
}

/// Plans every release of `w` the policy allows. The set of (zone, metric)
/// pairs depends only on the config, the policy and which non-personal
/// sensors reported, never on personal data. Metrics the policy does not
/// name are not released at all (fail closed).
pub fn plan_window(
    cfg: &Config,
    policy: &LoadedPolicy,
    w: &ClosedWindow,
) -> Result<Vec<Planned>, PrivacyError> {
    let bound = cfg.privacy.max_events_per_window;
    let mut out = Vec::new();
    for zone in &cfg.zones {
        let Some(agg) = w.zones.get(&zone.name) else {
            continue;
        };
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mean = |(sum, n): (f64, u64)| (n > 0).then(|| sum / n as f64);
        let mut candidates: Vec<(&'static str, Option<Input>)> = Vec::new();
        if let Some(sd) = w.day {
            // Attendee-day policy: personal metrics are continual streams of
            // running totals; which streams exist depends only on the config.
            let stream = |name: &str, increment: i64| {
                let m = policy.metric(name)?;
                m.mechanism.is_continual().then_some(Input::Stream {
                    increment,
                    step: sd.step,
                    horizon: sd.horizon,
                    day: sd.day.days_since_epoch(),
                    mechanism: m.mechanism,
                })
            };
            if zone.cameras > 0 {
                candidates.push((
                    metric::OCCUPANCY,
                    stream(metric::OCCUPANCY, agg.tracked.net()),
                ));
            }
            if zone.gate {
                candidates.push((metric::INGRESS, stream(metric::INGRESS, count(agg.ingress))));
                candidates.push((metric::EGRESS, stream(metric::EGRESS, count(agg.egress))));
            }
            candidates.push((
                metric::UNIQUE_DEVICES,
                stream(metric::UNIQUE_DEVICES, agg.devices_present.net()),
            ));
            candidates.push((
                metric::APP_USERS,
                stream(metric::APP_USERS, agg.app_present.net()),
            ));
        } else if zone.cameras > 0 {
            candidates.push((
                metric::OCCUPANCY,
                Some(Input::Count {
                    value: agg.occupancy_estimate(),
                    sensitivity: zone.cameras,
                }),
            ));
        }
        if zone.gate && w.day.is_none() {
            candidates.push((
                metric::INGRESS,
                Some(Input::Count {
                    value: count(agg.ingress),
                    sensitivity: bound,
                }),
            ));
            candidates.push((
                metric::EGRESS,
                Some(Input::Count {
                    value: count(agg.egress),
                    sensitivity: bound,
                }),
            ));
        }
        if w.day.is_none() {
            candidates.push((
                metric::UNIQUE_DEVICES,
                Some(Input::Count {
                    value: count(agg.devices.len() as u64),
                    sensitivity: 1,
                }),
            ));
            candidates.push((
                metric::APP_USERS,
                Some(Input::Count {
                    value: count(agg.app_users.len() as u64),
                    sensitivity: 1,
                }),
            ));
        }
        candidates.push((
            metric::SOUND_LEVEL_DB,
            mean(agg.sound).map(Input::Measurement),
        ));
        candidates.push((
            metric::CLIPPING_FRAMES,
            (agg.sound.1 > 0).then_some(Input::Measurement(agg.clipping_frames as f64)),
        ));
        candidates.push((metric::CO2_PPM, mean(agg.co2).map(Input::Measurement)));
        candidates.push((
            metric::TEMPERATURE_C,
            mean(agg.temperature).map(Input::Measurement),
        ));
        for (name, input) in candidates {
            let Some(input) = input else { continue };
            if let Some(p) = admit(policy, name, input, &zone.name, w.start_ms, w.length_s)? {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Plans non-personal measurements of one zone and window that were
/// derived on the node after the window closed (the on-device audio
/// classifier's per-class frame counts). Only metrics the policy declares
/// `non_personal` are planned; anything else is dropped (fail closed).
pub fn plan_measurements(
    policy: &LoadedPolicy,
    zone: &str,
    window_start_ms: i64,
    window_length_s: u32,
    values: &[(&'static str, f64)],
) -> Result<Vec<Planned>, PrivacyError> {
    let mut out = Vec::new();
    for &(name, v) in values {
        let input = Input::Measurement(v);
        if let Some(p) = admit(policy, name, input, zone, window_start_ms, window_length_s)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// The planned release of `name` from `input`, if the policy names the
/// metric with a mechanism that fits the input: a measurement only where it
/// is declared non-personal, a count only under a DP mechanism.
fn admit(
    policy: &LoadedPolicy,
    name: &'static str,
    input: Input,
    zone: &str,
    window_start_ms: i64,
    window_length_s: u32,
) -> Result<Option<Planned>, PrivacyError> {
    let Some((cost, purpose, mechanism)) = cost_of(policy, name)? else {
        return Ok(None);
    };
    let allowed = matches!(
        (mechanism, input),
        (PolicyMechanism::NonPersonal, Input::Measurement(_))
            | (
                PolicyMechanism::DiscreteLaplace | PolicyMechanism::DiscreteGaussian,
                Input::Count { .. }
            )
            | (
                PolicyMechanism::ContinualSqrt | PolicyMechanism::ContinualTree,
                Input::Stream { .. }
            )
    );
    Ok(allowed.then(|| Planned {
        metric: name,
        zone: zone.to_owned(),
        window_start_ms,
        window_length_s,
        purpose,
        cost,
        input,
    }))
}

/// Draws the noise of one planned release whose cost `lease_id` charged.
pub fn privatize(p: &Planned, lease_id: &str) -> Result<PendingRelease, PrivacyError> {
    let value = match (p.input, p.cost) {
        (Input::Count { value, sensitivity }, Cost::Pure(eps)) => {
            mechanisms::count_laplace(value, sensitivity, eps)?
        }
        (Input::Count { value, sensitivity }, Cost::Zcdp(rho)) => {
            mechanisms::count_gaussian(value, sensitivity, rho)?
        }
        (Input::Measurement(v), Cost::Free) => {
            mechanisms::non_personal(v, &format!("policy.metric.{}.non_personal", p.metric))?
        }
        _ => {
            return Err(PrivacyError::InvalidParameter {
                name: "mechanism",
                reason: format!(
                    "metric {} has no mechanism for its input under the policy",
                    p.metric
                ),
            });
        }
    };
    Ok(PendingRelease {
        metric: p.metric,
        zone: p.zone.clone(),
        window_start_ms: p.window_start_ms,
        window_length_s: p.window_length_s,
        purpose: p.purpose.clone(),
        lease_id: lease_id.to_owned(),
        value,
        stream: None,
    })
}

/// The stream parameters a continual metric is released under at this node:
/// its factorization, the day's horizon, the contribution shape the policy's
/// bounds give it (joint over the node's zones of the metric) and the
/// policy's rho per attendee-day.
pub fn stream_params(
    policy: &LoadedPolicy,
    metric: &str,
    horizon: u32,
) -> Result<StreamParams, PrivacyError> {
    let invalid = |reason: String| PrivacyError::InvalidParameter {
        name: "policy",
        reason,
    };
    let m = policy
        .metric(metric)
        .ok_or_else(|| invalid(format!("metric {metric} is not in the policy")))?;
    let unit = policy
        .privacy_unit()
        .ok_or_else(|| invalid("continual metrics need a [privacy_unit]".into()))?;
    let shape = unit
        .shape(metric)
        .ok_or_else(|| invalid(format!("no continual stream for metric {metric}")))?;
    let mechanism = match m.mechanism {
        PolicyMechanism::ContinualSqrt => StreamMechanism::SqrtFactorization,
        PolicyMechanism::ContinualTree => StreamMechanism::Tree,
        other => {
            return Err(invalid(format!(
                "metric {metric} is released by {}, not as a stream",
                other.as_str()
            )));
        }
    };
    StreamParams::new(
        mechanism,
        horizon,
        contribution(shape),
        Rho::new(m.rho.unwrap_or(0.0))?,
    )
}

/// The mechanism crate's contribution shape for a policy shape.
pub fn contribution(shape: StreamShape) -> Contribution {
    match shape {
        StreamShape::Presence { events } => Contribution::Alternating { events },
        StreamShape::Cumulative { events } => Contribution::Monotone { events },
    }
}

/// Draws one step of a stream whose whole-day cost `lease_id` charged.
pub fn privatize_stream(
    p: &Planned,
    stream: &mut ContinualStream,
    lease_id: &str,
) -> Result<PendingRelease, PrivacyError> {
    let Input::Stream {
        increment,
        step,
        horizon,
        ..
    } = p.input
    else {
        return Err(PrivacyError::InvalidParameter {
            name: "input",
            reason: format!("metric {} is not a stream release", p.metric),
        });
    };
    let value = stream.release(step, increment)?;
    Ok(PendingRelease {
        metric: p.metric,
        zone: p.zone.clone(),
        window_start_ms: p.window_start_ms,
        window_length_s: p.window_length_s,
        purpose: p.purpose.clone(),
        lease_id: lease_id.to_owned(),
        value,
        stream: Some((step, horizon)),
    })
}

/// What `veil-node privacy stream-sample` prints: `runs` independent
/// releases of a whole occupancy stream whose exact per-step net changes are
/// `increments` (T = its length), each run a fresh [`ContinualStream`] with
/// the calibration the node uses for a presence metric under `max_visits`
/// zone visits per attendee-day (E = 2V, joint over a node's zones), so the
/// whole-stream guarantee can be tested empirically from outside.
///
/// # Privacy
/// Every run is a full release of the stream at `rho`; use synthetic input.
pub fn stream_sample(
    mechanism: StreamMechanism,
    rho: Rho,
    max_visits: u32,
    increments: &[i64],
    runs: usize,
) -> Result<Vec<Vec<f64>>, PrivacyError> {
    let horizon = u32::try_from(increments.len()).map_err(|_| PrivacyError::InvalidParameter {
        name: "steps",
        reason: "too many steps".into(),
    })?;
    let params = StreamParams::new(
        mechanism,
        horizon,
        contribution(StreamShape::Presence {
            events: max_visits.saturating_mul(2),
        }),
        rho,
    )?;
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut stream = ContinualStream::new(params)?;
        let mut run = Vec::with_capacity(increments.len());
        for (t, d) in (0u32..).zip(increments) {
            run.push(stream.release(t, *d)?.value());
        }
        out.push(run);
    }
    Ok(out)
}
