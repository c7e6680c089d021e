//! `GET /api/stream`: Server-Sent Events from the [`crate::alerts::AlertHub`]
//! for one venue: `point` (a combined series point as releases commit) and
//! `alert` (raised, resolved, acknowledged).
//!
//! Bounded on both sides: the hub's broadcast buffers never wait for a
//! browser (ingest is never held up), and a browser that falls behind gets
//! a `lagged` event (`{"skipped": n}`, counted in `/metrics`) and should
//! reload from the API. At shutdown every stream ends.

use std::convert::Infallible;

use axum::{
    extract::{Query, State as AxState},
    response::sse::{Event, KeepAlive, Sse},
};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use veil_privacy::policy::Reader;

use super::{ApiError, Credential, Ctx, api::VenueParam};

/// Events buffered per browser between the hub and the socket.
const PER_CLIENT_BUFFER: usize = 64;

fn event<T: serde::Serialize>(name: &'static str, v: &T) -> Option<Event> {
    serde_json::to_string(v)
        .ok()
        .map(|d| Event::default().event(name).data(d))
}

/// The SSE handler.
pub async fn stream(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    Query(p): Query<VenueParam>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let policy = ctx
        .state
        .policies
        .get(&venue)
        .cloned()
        .ok_or_else(|| ApiError::not_found("the venue has no policy in force"))?;
    let hub = ctx.state.alerts.clone();
    let mut alerts = hub.subscribe_alerts();
    let mut series = hub.subscribe_series();
    let mut shutdown = ctx.shutdown.clone();
    let (tx, rx) = mpsc::channel::<Event>(PER_CLIENT_BUFFER);
    ctx.state.metrics.dashboard_request("ok");
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.changed() => break,
                () = tx.closed() => break,
                r = alerts.recv() => match r {
                    Ok(ev) if ev.alert.venue == venue => {
                        let mut v = serde_json::to_value(&ev.alert).unwrap_or_default();
                        if let Some(o) = v.as_object_mut() {
                            o.insert("event".into(), ev.kind.as_str().into());
                        }
                        event("alert", &v)
                    }
                    Ok(_) => None,
                    Err(RecvError::Lagged(n)) => lagged(&hub, n),
                    Err(RecvError::Closed) => break,
                },
                r = series.recv() => match r {
                    Ok(p) if p.venue == venue
                        && crate::query::readable(&policy, Reader::Organizer, &p.metric).is_ok() =>
                    {
                        event("point", &p)
                    }
                    Ok(_) => None,
                    Err(RecvError::Lagged(n)) => lagged(&hub, n),
                    Err(RecvError::Closed) => break,
                },
            };
            let Some(ev) = next else { continue };
            // Waiting here only holds this browser's receivers back: the hub
            // drops what they miss and they report it as lag.
            tokio::select! {
                _ = shutdown.changed() => break,
                r = tx.send(ev) => if r.is_err() { break },
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx).map(Ok)).keep_alive(KeepAlive::default()))
}

fn lagged(hub: &crate::alerts::AlertHub, n: u64) -> Option<Event> {
    hub.record_lag(n);
    tracing::debug!(skipped = n, "A dashboard stream fell behind.");
    event("lagged", &serde_json::json!({ "skipped": n }))
}
