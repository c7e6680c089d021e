//! The `veil.v1.Audit` service (compliance role only): exports of the
//! audit log with a fresh signed checkpoint, the latest checkpoint, and the
//! verifier key.

use std::sync::Arc;

use veil_aggregator_core::identity::Role;

use super::{auth::Authorize as _, status::audit_status};
use crate::state::State;

/// The `veil.v1.Audit` service (compliance role only).
#[derive(Debug, Clone)]
pub struct AuditService {
    pub(crate) state: Arc<State>,
}

type ExportStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<veil_proto::ExportChunk, tonic::Status>> + Send>,
>;

/// Entries per export chunk.
const EXPORT_CHUNK: usize = 1000;

#[tonic::async_trait]
impl veil_proto::audit_server::Audit for AuditService {
    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: tonic::Request<veil_proto::ExportRequest>,
    ) -> Result<tonic::Response<Self::ExportStream>, tonic::Status> {
        let st = &self.state;
        st.registry.require_role(&request, &[Role::Compliance])?;
        let r = request.into_inner();
        let range = (r.from_seq != 0 || r.to_seq != 0).then_some((r.from_seq, r.to_seq));
        let export = st
            .audit
            .export(&st.storage, range, st.now_ms())
            .await
            .map_err(|e| audit_status(e, "Audit export"))?;
        let lines: Vec<String> = export.entries_jsonl.lines().map(str::to_owned).collect();
        let proofs = match &export.proofs_json {
            Some(p) => veil_privacy::audit::parse_inclusion_proofs(p)
                .map_err(|_| tonic::Status::internal("audit proofs"))?,
            None => Vec::new(),
        };
        let checkpoint = veil_proto::Checkpoint {
            note: export.checkpoint.clone(),
            size: export.size,
            root: export.root.as_bytes().to_vec(),
        };
        let mut chunks: Vec<Result<veil_proto::ExportChunk, tonic::Status>> = lines
            .chunks(EXPORT_CHUNK)
            .map(|c| {
                Ok(veil_proto::ExportChunk {
                    entries: c.to_vec(),
                    checkpoint: None,
                    proofs: Vec::new(),
                })
            })
            .collect();
        chunks.push(Ok(veil_proto::ExportChunk {
            entries: Vec::new(),
            checkpoint: Some(checkpoint),
            proofs: proofs
                .into_iter()
                .map(|p| veil_proto::InclusionProof {
                    index: p.index,
                    tree_size: p.tree_size,
                    path: p.path.iter().map(|h| h.as_bytes().to_vec()).collect(),
                })
                .collect(),
        }));
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn latest_checkpoint(
        &self,
        request: tonic::Request<veil_proto::LatestCheckpointRequest>,
    ) -> Result<tonic::Response<veil_proto::Checkpoint>, tonic::Status> {
        let st = &self.state;
        st.registry.require_role(&request, &[Role::Compliance])?;
        let (cp, note) = st
            .audit
            .checkpoint(&st.storage, st.now_ms())
            .await
            .map_err(|e| audit_status(e, "Checkpoint"))?;
        Ok(tonic::Response::new(veil_proto::Checkpoint {
            note,
            size: cp.size,
            root: cp.root.as_bytes().to_vec(),
        }))
    }

    async fn verifier_key(
        &self,
        request: tonic::Request<veil_proto::VerifierKeyRequest>,
    ) -> Result<tonic::Response<veil_proto::VerifierKeyResponse>, tonic::Status> {
        self.state
            .registry
            .require_role(&request, &[Role::Compliance])?;
        Ok(tonic::Response::new(veil_proto::VerifierKeyResponse {
            vkey: self.state.audit.verifier_key(),
        }))
    }
}
