//! Development PKI: a CA, a server certificate for localhost/127.0.0.1, node
//! certificates and role certificates, all with SPIFFE-style URI SANs.
//!
//! For production, issue certificates from your own CA with the same SAN
//! layout; the aggregator only needs the CA certificate and its own pair.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Errors making the PKI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad argument.
    #[error("{0}")]
    Invalid(String),
}

/// What `pki init` wrote.
#[derive(Debug, Clone)]
pub struct PkiLayout {
    /// Output directory.
    pub dir: PathBuf,
    /// Venue name.
    pub venue: String,
    /// Node ids, `node-1` ... `node-N`.
    pub nodes: Vec<String>,
}

impl PkiLayout {
    /// CA certificate path.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// Certificate path of `name` (server, node-1, compliance, ...).
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    /// Key path of `name`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// Role certificate names written by `pki init`: file stem and SPIFFE id.
pub fn role_principals() -> [(&'static str, &'static str); 3] {
    [
        ("compliance", "spiffe://veil/role/compliance/officer"),
        ("ml", "spiffe://veil/role/ml/ml-team"),
        ("organizer", "spiffe://veil/role/organizer/organizer"),
    ]
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    #[cfg(unix)]
    if secret {
        // The file may have existed with wider permissions.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

fn leaf_params(cn: &str, sans: Vec<SanType>, eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "Veil dev PKI");
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![eku];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(365);
    p
}

fn uri(s: &str) -> Result<SanType, Error> {
    Ok(SanType::URI(s.try_into()?))
}

/// Writes a complete dev PKI for `venue` with `nodes` nodes into `out`.
pub fn init(out: &Path, venue: &str, nodes: u32) -> Result<PkiLayout, Error> {
    if !crate::identity::valid_name(venue) {
        return Err(Error::Invalid(format!(
            "venue {venue:?} must be 1..=64 bytes of [a-z0-9_-]"
        )));
    }
    if nodes == 0 || nodes > 10_000 {
        return Err(Error::Invalid("--nodes must be in 1..=10000".into()));
    }
    fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Veil dev CA ({venue})"));
    dn.push(DnType::OrganizationName, "Veil dev PKI");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(5 * 365);
    let ca_cert = ca.self_signed(&ca_key)?;
    let layout = PkiLayout {
        dir: out.to_owned(),
        venue: venue.to_owned(),
        nodes: (1..=nodes).map(|i| format!("node-{i}")).collect(),
    };
    write_file(&layout.ca(), &ca_cert.pem(), false)?;
    write_file(&layout.key("ca"), &ca_key.serialize_pem(), true)?;
    let issuer = Issuer::new(ca, ca_key);
    write_crl(&layout.dir.join(CRL_FILE), &issuer, 1, Vec::new())?;

    let issue = |name: &str, params: CertificateParams| -> Result<(), Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&layout.cert(name), &cert.pem(), false)?;
        write_file(&layout.key(name), &key.serialize_pem(), true)?;
        Ok(())
    };

    issue(
        "server",
        leaf_params(
            "veil-aggregator",
            vec![
                SanType::DnsName("localhost".try_into()?),
                SanType::IpAddress([127, 0, 0, 1].into()),
                uri("spiffe://veil/aggregator")?,
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
    )?;
    for node in &layout.nodes {
        let id = format!("spiffe://veil/venue/{venue}/node/{node}");
        issue(
            node,
            leaf_params(node, vec![uri(&id)?], ExtendedKeyUsagePurpose::ClientAuth),
        )?;
    }
    for (file, id) in role_principals() {
        issue(
            file,
            leaf_params(file, vec![uri(id)?], ExtendedKeyUsagePurpose::ClientAuth),
        )?;
    }
    audit_keygen(
        &layout.dir.join("audit.key"),
        &layout.dir.join("audit.vkey"),
        AUDIT_KEY_NAME,
    )?;
    Ok(layout)
}

/// The certificate revocation list `pki init` writes (empty) and
/// `pki revoke` extends; `tls.crls` in the aggregator's config names it.
pub const CRL_FILE: &str = "crl.pem";

fn write_crl(
    path: &Path,
    issuer: &Issuer<'_, KeyPair>,
    number: u64,
    revoked: Vec<rcgen::RevokedCertParams>,
) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(365),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(issuer)?;
    // Written beside, then renamed: a serving aggregator re-reading the
    // file never sees half of it.
    let tmp = path.with_extension("pem.tmp");
    write_file(&tmp, &crl.pem()?, false)?;
    fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The CA of the dev PKI in `dir`: its certificate (PEM) and the issuer
/// made of it and `ca.key`.
fn load_ca(dir: &Path) -> Result<(String, Issuer<'static, KeyPair>), Error> {
    let read = |p: PathBuf| fs::read_to_string(&p).map_err(|source| Error::Io { path: p, source });
    let ca_pem = read(dir.join("ca.pem"))?;
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    Ok((ca_pem, issuer))
}

/// Revokes the certificate in the PEM file `cert` by adding its serial
/// number to `DIR/crl.pem` (signed by the CA in `dir`; the entries already
/// there are kept and the CRL number goes up by one). Returns the serial
/// (hex) and how many certificates the CRL now lists. An aggregator with
/// `tls.crls` naming the file refuses the certificate from its next
/// handshake, without a restart.
pub fn revoke(dir: &Path, cert: &Path) -> Result<(String, usize), Error> {
    use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, pem::PemObject as _};
    use x509_parser::prelude::FromDer as _;
    let read = |p: &Path| {
        fs::read(p).map_err(|source| Error::Io {
            path: p.to_owned(),
            source,
        })
    };
    let bad = |p: &Path, what: &str, e: &dyn std::fmt::Display| {
        Error::Invalid(format!("{}: not {what}: {e}", p.display()))
    };
    let leaf = CertificateDer::from_pem_slice(&read(cert)?)
        .map_err(|e| bad(cert, "a PEM certificate", &e))?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&leaf)
        .map_err(|e| bad(cert, "a certificate", &e))?;
    let serial = parsed.raw_serial().to_vec();
    let (ca_pem, issuer) = load_ca(dir)?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| bad(&dir.join("ca.pem"), "a PEM certificate", &e))?;
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&ca_der)
        .map_err(|e| bad(&dir.join("ca.pem"), "a certificate", &e))?;
    if parsed.issuer().as_raw() != ca.subject().as_raw() {
        return Err(Error::Invalid(format!(
            "{} was not issued by the CA in {}",
            cert.display(),
            dir.display()
        )));
    }
    let crl_path = dir.join(CRL_FILE);
    let (mut number, mut revoked) = (1u64, Vec::new());
    if crl_path.exists() {
        let der = CertificateRevocationListDer::from_pem_slice(&read(&crl_path)?)
            .map_err(|e| bad(&crl_path, "a PEM CRL", &e))?;
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
            .map_err(|e| bad(&crl_path, "a CRL", &e))?;
        number = crl
            .crl_number()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
            .saturating_add(1);
        for r in crl.iter_revoked_certificates() {
            if r.raw_serial() == serial.as_slice() {
                return Err(Error::Invalid(format!(
                    "{} (serial {}) is already revoked",
                    cert.display(),
                    hex::encode(&serial)
                )));
            }
            revoked.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(r.raw_serial()),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                    .map_err(|e| Error::Invalid(format!("{}: {e}", crl_path.display())))?,
                reason_code: None,
                invalidity_date: None,
            });
        }
    }
    revoked.push(rcgen::RevokedCertParams {
        serial_number: rcgen::SerialNumber::from_slice(&serial),
        revocation_time: OffsetDateTime::now_utc(),
        reason_code: None,
        invalidity_date: None,
    });
    let n = revoked.len();
    write_crl(&crl_path, &issuer, number, revoked)?;
    Ok((hex::encode(&serial), n))
}

/// Name (and log origin) of the audit key `pki init` writes.
pub const AUDIT_KEY_NAME: &str = "veil-audit";

/// Writes a new Ed25519 checkpoint signing key (signed-note private key
/// format, 0600) and its verifier key (the public half compliance officers
/// pin).
pub fn audit_keygen(key: &Path, vkey: &Path, name: &str) -> Result<(), Error> {
    let signer = veil_privacy::audit::CheckpointSigner::generate(name)
        .map_err(|e| Error::Invalid(format!("audit key: {e}")))?;
    write_file(key, &format!("{}\n", signer.private_key_str()), true)?;
    write_file(vkey, &format!("{}\n", signer.verifier_key_str()), false)?;
    Ok(())
}

/// Issues client certificates for `spiffe_ids`, signed by the CA in `dir`,
/// and returns each one's (certificate PEM, PKCS#8 key PEM) without
/// writing them (the demo's simulated partner venues).
pub fn issue_clients_in_memory(
    dir: &Path,
    spiffe_ids: &[String],
) -> Result<Vec<(String, String)>, Error> {
    let (_, issuer) = load_ca(dir)?;
    spiffe_ids
        .iter()
        .map(|id| {
            let key = KeyPair::generate()?;
            let cert = leaf_params(id, vec![uri(id)?], ExtendedKeyUsagePurpose::ClientAuth)
                .signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        })
        .collect()
}

/// Issues one extra client certificate with an arbitrary SPIFFE id, signed by
/// the CA in `dir` (for operators adding a node, and for tests).
pub fn issue_client(dir: &Path, file_stem: &str, spiffe_id: &str) -> Result<(), Error> {
    let (_, issuer) = load_ca(dir)?;
    let key = KeyPair::generate()?;
    let cert = leaf_params(
        file_stem,
        vec![uri(spiffe_id)?],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
    .signed_by(&key, &issuer)?;
    write_file(&dir.join(format!("{file_stem}.pem")), &cert.pem(), false)?;
    write_file(
        &dir.join(format!("{file_stem}.key")),
        &key.serialize_pem(),
        true,
    )?;
    Ok(())
}
