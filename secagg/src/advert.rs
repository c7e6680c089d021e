//! Signed key advertisement: per round every node makes two fresh X25519
//! key pairs (one for pairwise masks, one to encrypt Shamir shares to its
//! neighbours) and signs `(round id, its identity, both public keys)` with
//! its mTLS private key. Every peer checks the signature against the
//! signer's certificate, that the certificate chains to the Veil CA for
//! client authentication, and that its only SPIFFE URI SAN is the identity
//! advertised: an aggregator relaying the advertisements cannot substitute
//! a key without a node's private key.
//!
//! Node certificates are rcgen's default, ECDSA P-256 with SHA-256 (see
//! `aggregator/src/pki.rs`); signatures are ASN.1 DER ECDSA made with ring.
//! Ed25519 certificates are accepted by the verifier too. Revocation is
//! left to the mTLS layer (the aggregator refuses revoked peers before they
//! can advertise); a phase-2 integration can pass CRLs to
//! [`TrustedCa::verify`] through webpki's `RevocationOptions`.

use ring::{
    rand::{SecureRandom, SystemRandom},
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair},
};
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{NodeIdentity, RoundId, SecAggError};

/// Domain separation of the signed bytes.
pub const ADVERTISEMENT_CONTEXT: &[u8] = b"veil-secagg/v1/key-advertisement";
/// Largest certificate accepted in an advertisement.
pub const MAX_CERT_LEN: usize = 16 * 1024;
/// Largest signature accepted.
pub const MAX_SIGNATURE_LEN: usize = 128;

/// A node's signed public keys for one round (the wire message of stage 0,
/// relayed by the aggregator to every participant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAdvertisement {
    /// The round.
    pub round: RoundId,
    /// The advertising node.
    pub node: NodeIdentity,
    /// X25519 public key for pairwise masks.
    pub mask_public: [u8; 32],
    /// X25519 public key for share encryption.
    pub encryption_public: [u8; 32],
    /// The node's mTLS certificate (DER).
    pub certificate: Vec<u8>,
    /// Signature over [`KeyAdvertisement::signed_bytes`] with the
    /// certificate's key.
    pub signature: Vec<u8>,
}

impl KeyAdvertisement {
    /// The bytes signed: context, round id and identity (each 4-byte
    /// big-endian length-prefixed), mask public key, encryption public key.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            &self.round,
            &self.node,
            &self.mask_public,
            &self.encryption_public,
        )
    }
}

fn signed_bytes(round: &RoundId, node: &NodeIdentity, mask: &[u8; 32], enc: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ADVERTISEMENT_CONTEXT.len() + 8 + 300 + 64);
    m.extend_from_slice(ADVERTISEMENT_CONTEXT);
    for part in [round.as_str().as_bytes(), node.as_str().as_bytes()] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m.extend_from_slice(mask);
    m.extend_from_slice(enc);
    m
}

/// A node's mTLS identity: its certificate and private key (PKCS#8, ECDSA
/// P-256, as `veil-aggregator pki init` writes them).
pub struct NodeSigner {
    identity: NodeIdentity,
    certificate: Vec<u8>,
    key: EcdsaKeyPair,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// From the node's identity, certificate DER and PKCS#8 private key DER.
    pub fn new(
        identity: NodeIdentity,
        certificate: Vec<u8>,
        pkcs8: &[u8],
    ) -> Result<Self, SecAggError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &SystemRandom::new())
                .map_err(|e| SecAggError::InvalidParameter {
                    name: "node private key",
                    reason: format!("not an ECDSA P-256 PKCS#8 key: {e}"),
                })?;
        Ok(Self {
            identity,
            certificate,
            key,
        })
    }

    /// The node's identity.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }
}

/// The two X25519 secrets of one node for one round. Zeroized on drop.
pub(crate) struct RoundKeys {
    pub(crate) mask: StaticSecret,
    pub(crate) encryption: StaticSecret,
}

pub(crate) fn random_secret(rng: &SystemRandom) -> Result<StaticSecret, SecAggError> {
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill(b.as_mut_slice())
        .map_err(|_| SecAggError::Randomness)?;
    Ok(StaticSecret::from(*b))
}

/// Makes this round's key pairs and the signed advertisement.
pub(crate) fn advertise(
    round: &RoundId,
    signer: &NodeSigner,
) -> Result<(RoundKeys, KeyAdvertisement), SecAggError> {
    let rng = SystemRandom::new();
    let keys = RoundKeys {
        mask: random_secret(&rng)?,
        encryption: random_secret(&rng)?,
    };
    let mask_public = PublicKey::from(&keys.mask).to_bytes();
    let encryption_public = PublicKey::from(&keys.encryption).to_bytes();
    let msg = signed_bytes(round, &signer.identity, &mask_public, &encryption_public);
    let signature = signer
        .key
        .sign(&rng, &msg)
        .map_err(|_| SecAggError::Randomness)?
        .as_ref()
        .to_vec();
    Ok((
        keys,
        KeyAdvertisement {
            round: round.clone(),
            node: signer.identity.clone(),
            mask_public,
            encryption_public,
            certificate: signer.certificate.clone(),
            signature,
        },
    ))
}

/// The CA that issues node certificates (DER), trusted to bind identities.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    der: Vec<u8>,
}

impl TrustedCa {
    /// From the CA certificate's DER; it must parse as a trust anchor.
    pub fn new(der: Vec<u8>) -> Result<Self, SecAggError> {
        anchor_from_trusted_cert(&CertificateDer::from(der.as_slice())).map_err(|e| {
            SecAggError::InvalidParameter {
                name: "CA certificate",
                reason: e.to_string(),
            }
        })?;
        Ok(Self { der })
    }

    /// Verifies `adv` for `round` at time `now`: sizes, certificate chain
    /// to this CA with the client-auth usage, the certificate's SPIFFE URI
    /// SAN equal to `adv.node`, and the signature.
    pub fn verify(
        &self,
        adv: &KeyAdvertisement,
        round: &RoundId,
        now: UnixTime,
    ) -> Result<(), SecAggError> {
        let bad = |reason: String| SecAggError::BadAdvertisement {
            node: adv.node.to_string(),
            reason,
        };
        if &adv.round != round {
            return Err(SecAggError::WrongRound {
                expected: round.clone(),
                got: adv.round.clone(),
            });
        }
        if adv.certificate.len() > MAX_CERT_LEN || adv.signature.len() > MAX_SIGNATURE_LEN {
            return Err(bad("certificate or signature too long".into()));
        }
        let ca = CertificateDer::from(self.der.as_slice());
        let anchor = anchor_from_trusted_cert(&ca).map_err(|e| bad(format!("CA: {e}")))?;
        let cert_der = CertificateDer::from(adv.certificate.as_slice());
        let ee =
            EndEntityCert::try_from(&cert_der).map_err(|e| bad(format!("certificate: {e}")))?;
        let algs = [webpki::ring::ECDSA_P256_SHA256, webpki::ring::ED25519];
        ee.verify_for_usage(
            &algs,
            &[anchor],
            &[],
            now,
            KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| bad(format!("certificate chain: {e}")))?;
        // The identity: exactly one URI SAN, equal to the advertised node.
        let (_, x509) = X509Certificate::from_der(&adv.certificate)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        let san = x509
            .subject_alternative_name()
            .map_err(|e| bad(format!("SAN: {e}")))?
            .ok_or_else(|| bad("certificate has no subject alternative name".into()))?;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        if uris != [adv.node.as_str()] {
            return Err(bad(format!(
                "certificate identity {uris:?} is not the advertised node"
            )));
        }
        let msg = adv.signed_bytes();
        let ok = algs
            .iter()
            .any(|alg| ee.verify_signature(*alg, &msg, &adv.signature).is_ok());
        if !ok {
            return Err(bad("signature does not verify".into()));
        }
        Ok(())
    }
}
