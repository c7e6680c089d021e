//! The `veil.v1.Query` gRPC service: organizer role only, scoped to the
//! venues the organizer's principal lists. Refusals are audited through
//! [`crate::auth::Registry`]. Streams come from the [`crate::alerts::AlertHub`]:
//! a client that stops reading skips items (counted as lag) and never slows
//! ingest down.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use veil_privacy::policy::Reader;
use veil_proto::{
    AcknowledgeAlertRequest, Alert, LatestPointsRequest, ListAlertsRequest, ListAlertsResponse,
    ListZonesRequest, ListZonesResponse, QuerySeriesRequest, QuerySeriesResponse,
    WatchAlertsRequest, WatchSeriesRequest, query_server,
};

use super::auth::Authorize as _;
use crate::query::{self, SeriesQuery};
use crate::{alerts::AlertError, identity::Role, state::State};

/// The `veil.v1.Query` service.
#[derive(Debug, Clone)]
pub struct QueryService {
    pub(crate) state: Arc<State>,
}

impl QueryService {
    /// A service over the shared state.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// Organizer of `venue`, or refused (audited). Returns the caller's
    /// SPIFFE id and the venue's policy.
    fn organizer<T>(
        &self,
        req: &Request<T>,
        venue: &str,
    ) -> Result<(String, Arc<veil_privacy::policy::LoadedPolicy>), Status> {
        let id = self.state.registry.require_role(req, &[Role::Organizer])?;
        if !crate::identity::valid_name(venue) {
            return Err(Status::invalid_argument(
                "venue must be 1..=64 bytes of [a-z0-9_-]",
            ));
        }
        self.state.registry.require_venue(&id, venue)?;
        let policy = self.state.policies.get(venue).cloned().ok_or_else(|| {
            Status::not_found(format!("venue {venue:?} has no policy in force here"))
        })?;
        Ok((id.spiffe(), policy))
    }
}

fn query_status(e: query::Error) -> Status {
    match e {
        query::Error::InvalidArgument(m) => Status::invalid_argument(m),
        query::Error::NotReadable(m) => Status::permission_denied(m),
        query::Error::Db(e) => {
            tracing::error!(error = %e, "Query failed.");
            Status::internal("query failed")
        }
    }
}

fn alert_status(e: AlertError) -> Status {
    match e {
        AlertError::InvalidArgument(m) => Status::invalid_argument(m),
        AlertError::NotFound(m) => Status::not_found(format!("no alert {m} in this venue")),
        other => {
            tracing::error!(error = %other, "Alert operation failed.");
            Status::internal("alert operation failed")
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl query_server::Query for QueryService {
    async fn query_series(
        &self,
        request: Request<QuerySeriesRequest>,
    ) -> Result<Response<QuerySeriesResponse>, Status> {
        let (_, policy) = self.organizer(&request, &request.get_ref().venue)?;
        let r = request.into_inner();
        let q = SeriesQuery {
            venue: r.venue,
            zone: (!r.zone.is_empty()).then_some(r.zone),
            metric: r.metric,
            from_ms: r.from_ms,
            to_ms: r.to_ms,
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let page = crate::query::series(&self.state.storage, &policy, Reader::Organizer, &q)
            .await
            .map_err(query_status)?;
        Ok(Response::new(QuerySeriesResponse {
            points: page
                .points
                .iter()
                .map(crate::query::SeriesPoint::to_proto)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchSeriesStream = Boxed<veil_proto::SeriesPoint>;

    async fn watch_series(
        &self,
        request: Request<WatchSeriesRequest>,
    ) -> Result<Response<Self::WatchSeriesStream>, Status> {
        let (_, policy) = self.organizer(&request, &request.get_ref().venue)?;
        let r = request.into_inner();
        if !r.metric.is_empty() {
            crate::query::readable(&policy, Reader::Organizer, &r.metric).map_err(query_status)?;
        }
        let venue = r.venue;
        let metric = r.metric;
        // The alert task only publishes organizer-readable metrics.
        let stream = self
            .state
            .alerts
            .series_stream()
            .filter(move |p| p.venue == venue && (metric.is_empty() || p.metric == metric))
            .map(|p| Ok(p.to_proto()));
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchAlertsStream = Boxed<Alert>;

    async fn watch_alerts(
        &self,
        request: Request<WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let (_, _) = self.organizer(&request, &request.get_ref().venue)?;
        let venue = request.into_inner().venue;
        let stream = self
            .state
            .alerts
            .alert_stream()
            .filter(move |e| e.alert.venue == venue)
            .map(|e| Ok(e.alert.to_proto(Some(e.kind))));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertsRequest>,
    ) -> Result<Response<ListAlertsResponse>, Status> {
        let (_, _) = self.organizer(&request, &request.get_ref().venue)?;
        let r = request.into_inner();
        let alerts =
            crate::alerts::list(&self.state.storage, &r.venue, r.from_ms, r.to_ms, r.limit)
                .await
                .map_err(alert_status)?;
        Ok(Response::new(ListAlertsResponse {
            alerts: alerts.iter().map(|a| a.to_proto(None)).collect(),
        }))
    }

    async fn acknowledge_alert(
        &self,
        request: Request<AcknowledgeAlertRequest>,
    ) -> Result<Response<Alert>, Status> {
        let (who, _) = self.organizer(&request, &request.get_ref().venue)?;
        let r = request.into_inner();
        let a = crate::alerts::acknowledge(
            &self.state.core,
            &self.state.alerts,
            &r.venue,
            &r.alert_id,
            &who,
        )
        .await
        .map_err(alert_status)?;
        Ok(Response::new(a.to_proto(None)))
    }

    async fn list_zones(
        &self,
        request: Request<ListZonesRequest>,
    ) -> Result<Response<ListZonesResponse>, Status> {
        let (_, policy) = self.organizer(&request, &request.get_ref().venue)?;
        let venue = request.into_inner().venue;
        let zones = crate::query::zones(&self.state.storage, &policy, Reader::Organizer, &venue)
            .await
            .map_err(query_status)?;
        Ok(Response::new(ListZonesResponse { zones }))
    }

    async fn latest_points(
        &self,
        request: Request<LatestPointsRequest>,
    ) -> Result<Response<QuerySeriesResponse>, Status> {
        let (_, policy) = self.organizer(&request, &request.get_ref().venue)?;
        let r = request.into_inner();
        let points = crate::query::latest(
            &self.state.storage,
            &policy,
            Reader::Organizer,
            &r.venue,
            &r.metric,
        )
        .await
        .map_err(query_status)?;
        Ok(Response::new(QuerySeriesResponse {
            points: points
                .iter()
                .map(crate::query::SeriesPoint::to_proto)
                .collect(),
            next_page_token: String::new(),
        }))
    }
}
