//! Validation of a frontend's `tls` table: every certificate and key read and
//! checked now (an error names the file, line and column of the key that
//! named the file), so `check` and a reload refuse what a handshake would.

use std::sync::Arc;

use super::file::TlsFile;
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
}
