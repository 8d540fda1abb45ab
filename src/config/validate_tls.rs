//! Validation of a frontend's `tls` table: every certificate and key read and
//! checked now (an error names the file, line and column of the key that
//! named the file), so `check` and a reload refuse what a handshake would.

use std::sync::Arc;

use super::file::{TlsFile, UpstreamTlsFile};
use super::validate::Validator;
use super::{Mode, defaults};
use crate::tls::{self, FrontendTls, Settings};

impl Validator<'_> {
    pub(super) fn tls(&mut self, ctx: &str, t: &TlsFile, mode: Mode) -> Option<Arc<FrontendTls>> {
        let before = self.errors.len();
        if t.certs.get_ref().is_empty() {
            self.err(&t.certs, format!("{ctx}: tls.certs lists no certificate"));
        }
        let mut certs = Vec::new();
        for c in t.certs.get_ref() {
            let c = c.get_ref();
            let cert = self.relative(c.cert.get_ref());
            let key = self.relative(c.key.get_ref());
            match tls::load_cert(&cert, &key) {
                Ok(loaded) => certs.push(loaded),
                Err(e) => {
                    // The key's own problems point at `key`, the rest at `cert`.
                    let at = if e.starts_with("cannot read key") || e.starts_with("key ") {
                        &c.key
                    } else {
                        &c.cert
                    };
                    self.err(at, format!("{ctx}: tls: {e}"));
                }
            }
        }
        let default = match &t.default_cert {
            None => Some(0),
            Some(d) if d.get_ref() == "none" => None,
            Some(d) => {
                let i = t
                    .certs
                    .get_ref()
                    .iter()
                    .position(|c| c.get_ref().cert.get_ref() == d.get_ref());
                if i.is_none() {
                    self.err(
                        d,
                        format!("{ctx}: tls.default_cert \"{}\" is not one of the certs' cert paths (or \"none\")", d.get_ref()),
                    );
                }
                i
            }
        };
        let tls13_only = match t.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "1.2")) => false,
            Some((_, "1.3")) => true,
            Some((v, other)) => {
                self.err(
                    v,
                    format!("{ctx}: tls.min_version \"{other}\": use \"1.2\" or \"1.3\" (older versions are not offered)"),
                );
                false
            }
        };
        let alpn = match &t.alpn {
            Some(list) => list
                .get_ref()
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            None if mode == Mode::Http => vec![b"http/1.1".to_vec()],
            None => Vec::new(),
        };
        if mode == Mode::Http
            && let Some(list) = &t.alpn
            && let Some(p) = list
                .get_ref()
                .iter()
                .find(|p| *p != "http/1.1" && *p != "http/1.0")
        {
            self.err(
                list,
                format!(
                    "{ctx}: tls.alpn \"{p}\": an http frontend speaks http/1.1 (and http/1.0) only"
                ),
            );
        }
        let client_ca = match (&t.client_ca, &t.client_auth) {
            (None, Some(a)) => {
                self.err(a, format!("{ctx}: tls.client_auth needs client_ca"));
                None
            }
            (None, None) => None,
            (Some(ca), auth) => {
                let required = match auth.as_ref().map(|a| (a, a.get_ref().as_str())) {
                    None | Some((_, "required")) => true,
                    Some((_, "optional")) => false,
                    Some((a, other)) => {
                        self.err(
                            a,
                            format!("{ctx}: tls.client_auth \"{other}\": use \"required\" or \"optional\""),
                        );
                        true
                    }
                };
                Some((self.relative(ca.get_ref()), required, ca))
            }
        };
        if self.errors.len() > before || certs.len() != t.certs.get_ref().len() {
            return None;
        }
        let ca_span = client_ca.as_ref().map(|c| c.2);
        let settings = Settings {
            certs,
            default,
            tls13_only,
            alpn,
            handshake_timeout: t
                .handshake_timeout
                .unwrap_or(defaults::TLS_HANDSHAKE_TIMEOUT),
            client_ca: client_ca.map(|(p, r, _)| (p, r)),
        };
        match tls::build(settings) {
            Ok(ft) => Some(Arc::new(ft)),
            Err(e) => {
                match ca_span {
                    Some(ca) if e.contains("client_ca") => self.err(ca, format!("{ctx}: tls: {e}")),
                    _ => self.err(&t.certs, format!("{ctx}: tls: {e}")),
                }
                None
            }
        }
    }

    /// A backend's `tls` (to its servers).
    pub(super) fn upstream_tls(
        &mut self,
        ctx: &str,
        t: &UpstreamTlsFile,
        name: &toml::Spanned<String>,
    ) -> Option<Arc<tls::UpstreamTls>> {
        let before = self.errors.len();
        let verify = match (t.verify.as_ref().map(|v| (v, v.get_ref().as_str())), &t.ca) {
            (None | Some((_, "ca")), Some(ca)) => tls::Verify::Ca(self.relative(ca.get_ref())),
            (Some((v, "ca")), None) => {
                self.err(v, format!("{ctx}: tls.verify = \"ca\" needs ca = \"FILE\""));
                tls::Verify::System
            }
            (None | Some((_, "system")), None) => tls::Verify::System,
            (Some((v, "none")), _) => {
                self.warn(
                    v,
                    format!("{ctx}: tls.verify = \"none\": any certificate is accepted, so anyone on the path can pose as the servers"),
                );
                tls::Verify::None
            }
            (Some((v, other)), _) => {
                self.err(
                    v,
                    format!("{ctx}: tls.verify \"{other}\": use \"ca\", \"system\" or \"none\""),
                );
                tls::Verify::System
            }
        };
        let client_cert = match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => Some((self.relative(c.get_ref()), self.relative(k.get_ref()))),
            (None, None) => None,
            (Some(c), None) => {
                self.err(c, format!("{ctx}: tls.client_cert needs client_key"));
                None
            }
            (None, Some(k)) => {
                self.err(k, format!("{ctx}: tls.client_key needs client_cert"));
                None
            }
        };
        if self.errors.len() > before {
            return None;
        }
        let settings = tls::UpstreamSettings {
            verify,
            sni: t.sni.as_ref().map(|s| s.get_ref().clone()),
            client_cert,
        };
        match tls::build_upstream(settings) {
            Ok(u) => Some(Arc::new(u)),
            Err(e) => {
                let at = if e.starts_with("sni") {
                    t.sni.as_ref()
                } else if e.contains("ca \"") {
                    t.ca.as_ref()
                } else if e.contains("client_cert")
                    || e.contains("key \"")
                    || e.contains("certificate \"")
                {
                    t.client_cert.as_ref()
                } else {
                    t.verify.as_ref()
                };
                self.err(at.unwrap_or(name), format!("{ctx}: tls: {e}"));
                None
            }
        }
    }

    /// A server's `tls`: `false`, `true` or its own table.
    pub(super) fn server_tls(
        &mut self,
        ctx: &str,
        v: &toml::Spanned<toml::Value>,
        s: &super::file::ServerFile,
        backend: Option<&Arc<tls::UpstreamTls>>,
    ) -> Option<Arc<tls::UpstreamTls>> {
        let ctx = format!("{ctx}: server \"{}\"", s.name.get_ref());
        let at = |x: String| toml::Spanned::new(v.span(), x);
        match v.get_ref() {
            toml::Value::Boolean(false) => None,
            toml::Value::Boolean(true) => backend
                .cloned()
                .or_else(|| self.upstream_tls(&ctx, &UpstreamTlsFile::default(), &s.name)),
            table @ toml::Value::Table(_) => {
                let own: super::file::ServerTlsTable = match table.clone().try_into() {
                    Ok(t) => t,
                    Err(e) => {
                        let msg = super::validate::friendly(e.message(), "", None);
                        self.err(v, format!("{ctx}: tls: {msg}"));
                        return None;
                    }
                };
                let file = UpstreamTlsFile {
                    verify: own.verify.map(at),
                    ca: own.ca.map(at),
                    sni: own.sni.map(at),
                    client_cert: own.client_cert.map(at),
                    client_key: own.client_key.map(at),
                };
                self.upstream_tls(&ctx, &file, &s.name)
            }
            _ => {
                self.err(v, format!("{ctx}: tls must be false, true or a table"));
                None
            }
        }
    }
}
