//! TLS termination settings: certificates read from PEM files and checked
//! (the key belongs to the certificate, it has not expired), the names each
//! one serves read from the certificate itself, SNI selection, and the
//! rustls `ServerConfig` a frontend hands to every handshake. Built when the
//! configuration is loaded, so `check` reports a bad certificate and a reload
//! serves new ones to the next handshake.
//!
//! The crypto provider is ring (see docs/tls.md for why).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One certificate chain and its key, loaded.
#[derive(Debug, Clone)]
pub struct Cert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The DNS names it serves (subjectAltName, else the subject's CN);
    /// `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// Its validity's end, Unix seconds.
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

/// Read `cert` (a PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or
/// SEC1) and check they belong together and the leaf is valid now.
pub fn load_cert(cert: &Path, key: &Path) -> Result<Cert, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate \"{}\": {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate \"{}\": {e}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "certificate \"{}\": no PEM CERTIFICATE block in it",
            cert.display()
        ));
    };
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read key \"{}\": {e}", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("key \"{}\": {e}", key.display()))?;
    let (names, not_before, not_after) =
        leaf_facts(leaf).map_err(|e| format!("certificate \"{}\": {e}", cert.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().map_err(|_| {
        format!(
            "key \"{}\" is not the key of certificate \"{}\"",
            key.display(),
            cert.display()
        )
    })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if not_after < now {
        return Err(format!(
            "certificate \"{}\" expired {} day(s) ago",
            cert.display(),
            (now - not_after) / 86_400 + 1
        ));
    }
    if not_before > now {
        return Err(format!(
            "certificate \"{}\" is not valid yet",
            cert.display()
        ));
    }
    Ok(Cert {
        cert_path: cert.to_path_buf(),
        key_path: key.to_path_buf(),
        names,
        not_after,
        key: Arc::new(certified),
    })
}

/// The leaf's DNS names (lower-case) and validity (Unix seconds).
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not a readable X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            x.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|cn| cn.to_ascii_lowercase()),
        );
    }
    let v = x.validity();
    Ok((names, v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Certificates by name: exact names, then one-label wildcards, then the
/// default (none: the handshake is refused).
#[derive(Debug, Default)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// The first certificate naming a name wins it.
    pub fn new(certs: &[Cert], default: Option<usize>) -> SniResolver {
        let mut r = SniResolver {
            default: default.and_then(|i| certs.get(i)).map(|c| c.key.clone()),
            ..SniResolver::default()
        };
        for c in certs {
            for n in &c.names {
                let table = match n.strip_prefix("*.") {
                    Some(parent) => r.wildcard.entry(parent.to_string()),
                    None => r.exact.entry(n.clone()),
                };
                table.or_insert_with(|| c.key.clone());
            }
        }
        r
    }

    /// The certificate for `sni` (lower-case), or the default.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k.clone());
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls hands the name over lower-cased already.
        self.pick(hello.server_name())
    }
}

/// What a frontend's handshakes use, and the settings it was built from (to
/// build it again from the same files).
pub struct FrontendTls {
    pub config: Arc<rustls::ServerConfig>,
    pub settings: Settings,
}

impl FrontendTls {
    pub fn handshake_timeout(&self) -> Duration {
        self.settings.handshake_timeout
    }

    /// The same settings with every certificate and key file read again
    /// (`reload tls`).
    pub fn reread(&self) -> Result<FrontendTls, String> {
        let certs = self
            .settings
            .certs
            .iter()
            .map(|c| load_cert(&c.cert_path, &c.key_path))
            .collect::<Result<Vec<_>, _>>()?;
        build(Settings {
            certs,
            ..self.settings.clone()
        })
    }
}

impl std::fmt::Debug for FrontendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontendTls")
            .field("handshake_timeout", &self.settings.handshake_timeout)
            .field(
                "certs",
                &self
                    .settings
                    .certs
                    .iter()
                    .map(|c| &c.cert_path)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The settings a `tls = { ... }` table resolves to.
#[derive(Debug, Clone)]
pub struct Settings {
    pub certs: Vec<Cert>,
    pub default: Option<usize>,
    /// TLS 1.3 only (`min_version = "1.3"`), else 1.2 and 1.3.
    pub tls13_only: bool,
    pub alpn: Vec<Vec<u8>>,
    pub handshake_timeout: Duration,
    /// Client certificates: the CA file and whether one is required.
    pub client_ca: Option<(PathBuf, bool)>,
}

/// Session tickets, one key set for the process: a reload keeps resumption.
fn ticketer() -> Option<Arc<dyn rustls::server::ProducesTickets>> {
    static T: OnceLock<Option<Arc<dyn rustls::server::ProducesTickets>>> = OnceLock::new();
    T.get_or_init(|| rustls::crypto::ring::Ticketer::new().ok())
        .clone()
}

/// The server-side session cache (TLS 1.2 without tickets), one for the process.
fn session_cache() -> Arc<dyn rustls::server::StoresServerSessions> {
    static C: OnceLock<Arc<rustls::server::ServerSessionMemoryCache>> = OnceLock::new();
    C.get_or_init(|| rustls::server::ServerSessionMemoryCache::new(20_000))
        .clone()
}

/// Build a frontend's `ServerConfig`.
pub fn build(s: Settings) -> Result<FrontendTls, String> {
    // ring has no post-quantum key exchange, hence rustls's deprecation
    // note; it is the provider chosen here (docs/tls.md says why).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if s.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let resolver = Arc::new(SniResolver::new(&s.certs, s.default));
    let mut config = match &s.client_ca {
        None => builder.with_no_client_auth().with_cert_resolver(resolver),
        Some((ca, required)) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read client_ca \"{}\": {e}", ca.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("client_ca \"{}\": {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("client_ca \"{}\": {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "client_ca \"{}\": no PEM CERTIFICATE block in it",
                    ca.display()
                ));
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let v = if *required {
                v
            } else {
                v.allow_unauthenticated()
            };
            let v = v.build().map_err(|e| format!("client_ca: {e}"))?;
            builder
                .with_client_cert_verifier(v)
                .with_cert_resolver(resolver)
        }
    };
    config.alpn_protocols = s.alpn.clone();
    config.session_storage = session_cache();
    if let Some(t) = ticketer() {
        config.ticketer = t;
    }
    Ok(FrontendTls {
        config: Arc::new(config),
        settings: s,
    })
}

/// How fulcrum checks a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Against the CA certificates in this PEM file.
    Ca(PathBuf),
    /// Against the system's trusted roots.
    System,
    /// Not at all (a test or a trusted network only; `check` warns).
    None,
}

/// What `tls = { ... }` on a backend resolves to.
#[derive(Debug)]
pub struct UpstreamSettings {
    pub verify: Verify,
    /// The name sent as SNI and checked in the certificate (default: the
    /// server's IP address, checked against the certificate's IP names).
    pub sni: Option<String>,
    /// A client certificate and key for servers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// TLS to a backend's servers.
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: Option<rustls::pki_types::ServerName<'static>>,
    pub verify: Verify,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("verify", &self.verify)
            .field("sni", &self.sni)
            .finish()
    }
}

impl UpstreamTls {
    /// The name to ask server `addr` for.
    pub fn name_for(&self, addr: std::net::SocketAddr) -> rustls::pki_types::ServerName<'static> {
        self.sni
            .clone()
            .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()))
    }
}

/// A verifier that accepts any certificate (`verify = "none"`); signatures
/// are still checked, so the session is sound, only the peer is unknown.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Build the client side for a backend.
pub fn build_upstream(s: UpstreamSettings) -> Result<UpstreamTls, String> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sni = match &s.sni {
        None => None,
        Some(n) => Some(
            rustls::pki_types::ServerName::try_from(n.clone())
                .map_err(|_| format!("sni \"{n}\" is not a DNS name or an IP address"))?,
        ),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &s.verify {
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
        Verify::Ca(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca \"{}\": {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("ca \"{}\": {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("ca \"{}\": {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "ca \"{}\": no PEM CERTIFICATE block in it",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots)
        }
        Verify::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("verify = \"system\": no trusted root certificate found on this system (install ca-certificates, or name a ca file)".into());
            }
            builder.with_root_certificates(roots)
        }
    };
    let config = match &s.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let c = load_cert(cert, key)?;
            builder
                .with_client_auth_cert(c.key.cert.clone(), {
                    PrivateKeyDer::from_pem_file(key)
                        .map_err(|e| format!("cannot read key \"{}\": {e}", key.display()))?
                })
                .map_err(|e| format!("client_cert: {e}"))?
        }
    };
    Ok(UpstreamTls {
        config: Arc::new(config),
        sni,
        verify: s.verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> Cert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let der = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        let leaf = ck.cert.der().clone();
        let (names, _, not_after) = leaf_facts(&leaf).unwrap();
        Cert {
            cert_path: PathBuf::from(names[0].clone()),
            key_path: PathBuf::new(),
            names,
            not_after,
            key: Arc::new(CertifiedKey::new(vec![leaf], signer)),
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_default() {
        let certs = [
            cert(&["a.example"]),
            cert(&["*.b.example", "b.example"]),
            cert(&["other.example"]),
        ];
        let r = SniResolver::new(&certs, Some(2));
        let is = |got: Option<Arc<CertifiedKey>>, i: usize| {
            got.is_some_and(|k| Arc::ptr_eq(&k, &certs[i].key))
        };
        assert!(is(r.pick(Some("a.example")), 0));
        assert!(is(r.pick(Some("x.b.example")), 1));
        assert!(is(r.pick(Some("b.example")), 1));
        // A wildcard covers one label only.
        assert!(is(r.pick(Some("y.x.b.example")), 2));
        assert!(is(r.pick(Some("unknown.example")), 2));
        assert!(is(r.pick(None), 2));
        let strict = SniResolver::new(&certs, None);
        assert!(strict.pick(Some("unknown.example")).is_none());
        assert!(strict.pick(None).is_none());
    }
}
