//! Conversions between the secure-round messages of `veil.v1.Federated`
//! and [`veil_secagg`]'s: every field from a peer is checked (lengths,
//! identities, round ids, list sizes) before the protocol sees it, and a
//! refusal names what was wrong. Identity of the sender is never read from
//! a message: the caller passes the identity from the certificate.

use veil_secagg::{
    KeyAdvertisement, NodeIdentity, RoundId, SecretKind,
    messages::{
        EncryptedShare, MaskedInput, RevealedShare, SHARE_CIPHERTEXT_LEN, ShareDelivery, ShareKeys,
        UnmaskRequest, UnmaskResponse,
    },
    shamir::SHARE_BYTES,
};

use crate as pb;

/// A round id from the wire.
pub fn round_id(s: &str) -> Result<RoundId, String> {
    RoundId::new(s).map_err(|e| format!("round_id: {e}"))
}

fn identity(what: &str, s: &str) -> Result<NodeIdentity, String> {
    NodeIdentity::parse(s).map_err(|e| format!("{what}: {e}"))
}

fn key32(what: &str, b: &[u8]) -> Result<[u8; 32], String> {
    b.try_into()
        .map_err(|_| format!("{what}: expected 32 bytes, got {}", b.len()))
}

fn identities(what: &str, list: &[String], max: usize) -> Result<Vec<NodeIdentity>, String> {
    if list.len() > max {
        return Err(format!("{what}: more than {max} entries"));
    }
    list.iter().map(|s| identity(what, s)).collect()
}

/// Most entries a list from a peer may hold (the protocol's node limit).
const MAX_LIST: usize = veil_secagg::encoding::MAX_NODES as usize;

/// A key advertisement from the wire.
pub fn advert_from(p: pb::KeyAdvertisement) -> Result<KeyAdvertisement, String> {
    Ok(KeyAdvertisement {
        round: round_id(&p.round_id)?,
        node: identity("node", &p.node)?,
        mask_public: key32("mask_public", &p.mask_public)?,
        encryption_public: key32("encryption_public", &p.encryption_public)?,
        certificate: p.certificate,
        signature: p.signature,
    })
}

/// A key advertisement for the wire.
pub fn advert_to(a: &KeyAdvertisement) -> pb::KeyAdvertisement {
    pb::KeyAdvertisement {
        round_id: a.round.to_string(),
        node: a.node.to_string(),
        mask_public: a.mask_public.to_vec(),
        encryption_public: a.encryption_public.to_vec(),
        certificate: a.certificate.clone(),
        signature: a.signature.clone(),
    }
}

fn share_from(p: pb::EncryptedShare) -> Result<EncryptedShare, String> {
    if p.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
        return Err(format!(
            "share ciphertext: expected length {SHARE_CIPHERTEXT_LEN}, got {}",
            p.ciphertext.len()
        ));
    }
    Ok(EncryptedShare {
        from: identity("share from", &p.from)?,
        to: identity("share to", &p.to)?,
        ciphertext: p.ciphertext,
    })
}

fn share_to(s: &EncryptedShare) -> pb::EncryptedShare {
    pb::EncryptedShare {
        from: s.from.to_string(),
        to: s.to.to_string(),
        ciphertext: s.ciphertext.clone(),
    }
}

/// Stage 1 from the wire, sent by `from`.
pub fn shares_from(from: &NodeIdentity, p: pb::SubmitSharesRequest) -> Result<ShareKeys, String> {
    if p.shares.len() > MAX_LIST {
        return Err(format!("shares: more than {MAX_LIST}"));
    }
    Ok(ShareKeys {
        round: round_id(&p.round_id)?,
        from: from.clone(),
        self_seed_commitment: key32("self_seed_commitment", &p.self_seed_commitment)?,
        shares: p
            .shares
            .into_iter()
            .map(share_from)
            .collect::<Result<_, _>>()?,
    })
}

/// Stage 1 for the wire.
pub fn shares_to(k: &ShareKeys) -> pb::SubmitSharesRequest {
    pb::SubmitSharesRequest {
        round_id: k.round.to_string(),
        self_seed_commitment: k.self_seed_commitment.to_vec(),
        shares: k.shares.iter().map(share_to).collect(),
    }
}

/// A share delivery for the wire.
pub fn delivery_to(d: &ShareDelivery) -> pb::ShareDelivery {
    pb::ShareDelivery {
        round_id: d.round.to_string(),
        committed: d.committed.iter().map(ToString::to_string).collect(),
        shares: d.shares.iter().map(share_to).collect(),
    }
}

/// A share delivery from the wire, addressed to `to`.
pub fn delivery_from(to: &NodeIdentity, p: pb::ShareDelivery) -> Result<ShareDelivery, String> {
    if p.shares.len() > MAX_LIST {
        return Err(format!("shares: more than {MAX_LIST}"));
    }
    Ok(ShareDelivery {
        round: round_id(&p.round_id)?,
        to: to.clone(),
        committed: identities("committed", &p.committed, MAX_LIST)?,
        shares: p
            .shares
            .into_iter()
            .map(share_from)
            .collect::<Result<_, _>>()?,
    })
}

/// Stage 2 from the wire: `dimension` little-endian u32 values.
pub fn masked_from(
    from: &NodeIdentity,
    p: pb::SubmitMaskedInputRequest,
    dimension: Option<usize>,
) -> Result<MaskedInput, String> {
    if !p.values.len().is_multiple_of(4) {
        return Err(format!(
            "masked input: {} bytes is not a whole number of u32 values",
            p.values.len()
        ));
    }
    if let Some(d) = dimension
        && p.values.len() != 4 * d
    {
        return Err(format!(
            "masked input: expected length {d} (the model's parameters), got {}",
            p.values.len() / 4
        ));
    }
    Ok(MaskedInput {
        round: round_id(&p.round_id)?,
        from: from.clone(),
        values: p
            .values
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// Stage 2 for the wire.
pub fn masked_to(m: &MaskedInput) -> pb::SubmitMaskedInputRequest {
    pb::SubmitMaskedInputRequest {
        round_id: m.round.to_string(),
        values: m.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// An unmask request for the wire.
pub fn unmask_request_to(r: &UnmaskRequest) -> pb::UnmaskRequest {
    pb::UnmaskRequest {
        round_id: r.round.to_string(),
        survivors: r.survivors.iter().map(ToString::to_string).collect(),
        dropped: r.dropped.iter().map(ToString::to_string).collect(),
    }
}

/// An unmask request from the wire.
pub fn unmask_request_from(p: pb::UnmaskRequest) -> Result<UnmaskRequest, String> {
    Ok(UnmaskRequest {
        round: round_id(&p.round_id)?,
        survivors: identities("survivors", &p.survivors, MAX_LIST)?,
        dropped: identities("dropped", &p.dropped, MAX_LIST)?,
    })
}

/// Stage 3 from the wire, sent by `from`.
pub fn unmask_from(
    from: &NodeIdentity,
    p: pb::SubmitUnmaskSharesRequest,
) -> Result<UnmaskResponse, String> {
    if p.shares.len() > MAX_LIST {
        return Err(format!("shares: more than {MAX_LIST}"));
    }
    let shares = p
        .shares
        .into_iter()
        .map(|s| {
            let kind = match pb::SecretKind::try_from(s.kind) {
                Ok(pb::SecretKind::SelfMaskSeed) => SecretKind::SelfMaskSeed,
                Ok(pb::SecretKind::MaskKey) => SecretKind::MaskKey,
                _ => {
                    return Err(format!(
                        "revealed share kind {} is not SELF_MASK_SEED or MASK_KEY",
                        s.kind
                    ));
                }
            };
            if s.share.len() != SHARE_BYTES {
                return Err(format!(
                    "revealed share: expected length {SHARE_BYTES}, got {}",
                    s.share.len()
                ));
            }
            Ok(RevealedShare {
                owner: identity("share owner", &s.owner)?,
                kind,
                share: s.share,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(UnmaskResponse {
        round: round_id(&p.round_id)?,
        from: from.clone(),
        shares,
    })
}

/// Stage 3 for the wire.
pub fn unmask_to(r: &UnmaskResponse) -> pb::SubmitUnmaskSharesRequest {
    pb::SubmitUnmaskSharesRequest {
        round_id: r.round.to_string(),
        shares: r
            .shares
            .iter()
            .map(|s| pb::RevealedShare {
                owner: s.owner.to_string(),
                kind: match s.kind {
                    SecretKind::SelfMaskSeed => pb::SecretKind::SelfMaskSeed,
                    SecretKind::MaskKey => pb::SecretKind::MaskKey,
                } as i32,
                share: s.share.clone(),
            })
            .collect(),
    }
}
