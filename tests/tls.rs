//! TLS termination through real sockets: certificates made at test time
//! (rcgen, a test CA), a rustls client and real ones (curl, openssl
//! s_client), the daemon in front of the test origins.

use fulcrum_testkit as support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::*;

/// A test CA and what it signs, as PEM files in `dir`.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(dir: &Path) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fulcrum test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names`, written as `{file}.pem` and `{file}.key`;
    /// `days` of validity from now (negative: expired).
    fn leaf(&self, dir: &Path, file: &str, names: &[&str], days: i64) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        if days < 0 {
            params.not_before = now - time::Duration::days(30);
        }
        params.not_after = now + time::Duration::days(days);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }
}

/// How a test client connects.
#[derive(Clone)]
struct Client {
    roots: Arc<rustls::RootCertStore>,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    /// A client certificate (PEM cert, PEM key).
    identity: Option<(String, String)>,
}

impl Client {
    fn new(ca: &Ca) -> Client {
        Client {
            roots: Arc::new(ca.roots()),
            versions: rustls::ALL_VERSIONS,
            identity: None,
        }
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(self.versions)
            .unwrap()
            .with_root_certificates(self.roots.clone());
        let mut c = match &self.identity {
            None => b.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect();
                let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
        };
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }

    /// Connect with `sni`, send `requests` (GETs on one connection) and read
    /// until the server closes. Err: the handshake or the exchange failed.
    fn get(&self, addr: SocketAddr, sni: &str, paths: &[&str]) -> Result<Got, String> {
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(self.config(), name).map_err(|e| e.to_string())?;
        let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut req = String::new();
        for (i, p) in paths.iter().enumerate() {
            let close = if i + 1 == paths.len() {
                "Connection: close\r\n"
            } else {
                ""
            };
            req.push_str(&format!("GET {p} HTTP/1.1\r\nHost: {sni}\r\n{close}\r\n"));
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        match s.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if out.is_empty() => return Err(e.to_string()),
            Err(_) => {}
        }
        let leaf = s
            .conn
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no server certificate")?;
        Ok(Got {
            text: String::from_utf8_lossy(&out).into_owned(),
            names: names_of(&leaf),
            version: s.conn.protocol_version(),
        })
    }
}

#[derive(Debug)]
struct Got {
    text: String,
    /// The DNS names of the certificate the server presented.
    names: Vec<String>,
    version: Option<rustls::ProtocolVersion>,
}

fn names_of(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// A TLS session with `addr` as `sni` on `config` (reads give up after 5 s).
fn open(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One line to the daemon's admin socket, and its answer.
async fn admin(d: &fulcrum::daemon::Running, line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&d.admin_paths()[0])
        .await
        .unwrap();
    s.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Run a blocking client off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Frontend `https` (http over TLS, its `tls` table's keys as given) to one
/// server.
fn conf(origin: SocketAddr, tls: &str) -> String {
    Conf::new()
        .frontend(
            Frontend::http("https")
                .to("app")
                .set("tls", value(&format!("{{ {tls} }}"))),
        )
        .backend(Backend::app(origin))
        .text()
}

/// Start the daemon on `text` as `dir/fulcrum.toml` (so relative paths are
/// the test directory's).
fn start_in(dir: &TempDir, text: &str) -> fulcrum::daemon::Running {
    start_as(dir, "fulcrum.toml", text)
}

/// The same, as `dir/name`.
fn start_as(dir: &TempDir, name: &str, text: &str) -> fulcrum::daemon::Running {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    start_named(file.to_str().unwrap(), text)
}

#[tokio::test]
async fn a_request_over_tls_reaches_the_origin_marked_https_and_is_counted() {
    bounded(30, async {
        let o = Origin::http("a", "").await;
        let dir = TempDir::new("tls-basic");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        let d = start_in(
            &dir,
            &conf(
                o.addr,
                r#"certs = [{ cert = "site.pem", key = "site.key" }]"#,
            ),
        );
        let addr = d.addr("https").unwrap();
        let c = Client::new(&ca);
        let got = blocking(move || c.get(addr, "site.test", &["/one", "/two"]))
            .await
            .unwrap();
        assert_eq!(
            got.text.matches("HTTP/1.1 200 OK").count(),
            2,
            "{}",
            got.text
        );
        assert!(got.text.ends_with("a\n"), "{}", got.text);
        assert_eq!(got.version, Some(rustls::ProtocolVersion::TLSv1_3));
        let head = o.last();
        assert!(head.starts_with("GET /two HTTP/1.1"), "{head}");
        assert!(head.contains("x-forwarded-proto: https"), "{head}");
        let f = d.stats().frontend("https").unwrap().clone();
        assert_eq!(f.tls_handshakes, 1);
        assert_eq!(f.http_requests, 2);
        // Not TLS at all: the handshake fails, counted.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut sink).await;
        assert!(!String::from_utf8_lossy(&sink).contains("200 OK"));
        eventually(5, "the failed handshake counted", || {
            d.stats().frontend("https").unwrap().tls_handshake_errors == 1
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn sni_chooses_the_certificate_wildcards_included_and_unknown_names_get_the_default_or_nothing()
 {
    bounded(30, async {
        let o = Origin::http("a", "").await;
        let dir = TempDir::new("tls-sni");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "one", &["one.test"], 30);
        ca.leaf(&dir.0, "wild", &["*.wild.test"], 30);
        ca.leaf(&dir.0, "fallback", &["fallback.test"], 30);
        let certs = r#"certs = [{ cert = "one.pem", key = "one.key" }, { cert = "wild.pem", key = "wild.key" }, { cert = "fallback.pem", key = "fallback.key" }]"#;
        let d = start_in(
            &dir,
            &conf(o.addr, &format!("{certs}, default_cert = \"fallback.pem\"")),
        );
        let addr = d.addr("https").unwrap();
        let c = Client::new(&ca);
        let names = |sni: &'static str| {
            let c = c.clone();
            async move { blocking(move || c.get(addr, sni, &["/"]).map(|g| g.names)).await }
        };
        assert_eq!(names("one.test").await.unwrap(), ["one.test"]);
        assert_eq!(names("x.wild.test").await.unwrap(), ["*.wild.test"]);
        // Unknown: the default certificate (the client then refuses the name).
        let e = names("nobody.test").await.unwrap_err();
        assert!(e.contains("not valid for name"), "{e}");
        // A strict listener refuses the handshake instead.
        let d2 = start_as(
            &dir,
            "strict.toml",
            &conf(o.addr, &format!("{certs}, default_cert = \"none\"")),
        );
        let a2 = d2.addr("https").unwrap();
        let c2 = c.clone();
        let e = blocking(move || c2.get(a2, "nobody.test", &["/"]).map(|g| g.names))
            .await
            .unwrap_err();
        assert!(e.contains("HandshakeFailure") || e.contains("alert"), "{e}");
        let c3 = c.clone();
        assert!(blocking(move || c3.get(a2, "one.test", &["/"])).await.is_ok());
        eventually(5, "refused handshake counted", || {
            d2.stats().frontend("https").unwrap().tls_handshake_errors == 1
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn tls_1_2_and_1_3_and_min_version_1_3_refuses_1_2() {
    bounded(30, async {
        let o = Origin::http("a", "").await;
        let dir = TempDir::new("tls-versions");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        let certs = r#"certs = [{ cert = "site.pem", key = "site.key" }]"#;
        let d = start_in(&dir, &conf(o.addr, certs));
        let addr = d.addr("https").unwrap();
        let mut c12 = Client::new(&ca);
        static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        c12.versions = &TLS12;
        let c = c12.clone();
        let got = blocking(move || c.get(addr, "site.test", &["/"]))
            .await
            .unwrap();
        assert_eq!(got.version, Some(rustls::ProtocolVersion::TLSv1_2));
        assert!(got.text.starts_with("HTTP/1.1 200 OK"));

        let d13 = start_as(
            &dir,
            "v13.toml",
            &conf(o.addr, &format!("{certs}, min_version = \"1.3\"")),
        );
        let a13 = d13.addr("https").unwrap();
        let c = c12.clone();
        assert!(
            blocking(move || c.get(a13, "site.test", &["/"]))
                .await
                .is_err()
        );
        let c = Client::new(&ca);
        let got = blocking(move || c.get(a13, "site.test", &["/"]))
            .await
            .unwrap();
        assert_eq!(got.version, Some(rustls::ProtocolVersion::TLSv1_3));
    })
    .await;
}

#[tokio::test]
async fn client_certificates_required_refused_without_and_optional_routes_by_verification() {
    bounded(30, async {
        let open = Origin::http("open", "").await;
        let vip = Origin::http("vip", "").await;
        let dir = TempDir::new("tls-mtls");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        ca.leaf(&dir.0, "client", &["client.test"], 30);
        let certs = r#"certs = [{ cert = "site.pem", key = "site.key" }], client_ca = "ca.pem""#;
        let d = start_in(&dir, &conf(open.addr, certs));
        let addr = d.addr("https").unwrap();
        let anon = Client::new(&ca);
        let mut known = Client::new(&ca);
        known.identity = Some((
            std::fs::read_to_string(dir.join("client.pem")).unwrap(),
            std::fs::read_to_string(dir.join("client.key")).unwrap(),
        ));
        let c = anon.clone();
        let e = blocking(move || c.get(addr, "site.test", &["/"])).await.unwrap_err();
        assert!(!e.is_empty());
        let c = known.clone();
        let got = blocking(move || c.get(addr, "site.test", &["/"])).await.unwrap();
        assert!(got.text.starts_with("HTTP/1.1 200 OK"), "{}", got.text);
        // A certificate from another CA is refused too.
        let other = TempDir::new("tls-mtls-other");
        let stranger_ca = Ca::new(&other.0);
        stranger_ca.leaf(&other.0, "client", &["client.test"], 30);
        let mut stranger = Client::new(&ca);
        stranger.identity = Some((
            std::fs::read_to_string(other.join("client.pem")).unwrap(),
            std::fs::read_to_string(other.join("client.key")).unwrap(),
        ));
        let c = stranger.clone();
        assert!(blocking(move || c.get(addr, "site.test", &["/"])).await.is_err());

        // Optional: both get in, the rules tell them apart.
        let text = Conf::new()
            .frontend(
                Frontend::http("https")
                    .to("open")
                    .set(
                        "tls",
                        value(
                            r#"{ certs = [{ cert = "site.pem", key = "site.key" }], client_ca = "ca.pem", client_auth = "optional" }"#,
                        ),
                    )
                    .set("acl", value("{ verified = { tls_client_verified = true } }"))
                    .set("rules", value(r#"[{ use_backend = "vip", if = "verified" }]"#)),
            )
            .backend(Backend::new("open").server("o", open.addr))
            .backend(Backend::new("vip").server("v", vip.addr))
            .text();
        let d = start_as(&dir, "optional.toml", &text);
        let addr = d.addr("https").unwrap();
        let c = anon.clone();
        let got = blocking(move || c.get(addr, "site.test", &["/"])).await.unwrap();
        assert!(got.text.ends_with("open\n"), "{}", got.text);
        let c = known.clone();
        let got = blocking(move || c.get(addr, "site.test", &["/"])).await.unwrap();
        assert!(got.text.ends_with("vip\n"), "{}", got.text);
    })
    .await;
}

#[tokio::test]
async fn sni_acls_route_and_a_plain_redirect_sends_http_to_https() {
    bounded(30, async {
        let a = Origin::http("a", "").await;
        let b = Origin::http("b", "").await;
        let dir = TempDir::new("tls-route");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["a.test", "b.test"], 30);
        let text = Conf::new()
            .frontend(
                Frontend::http("http")
                    .to("a")
                    .set("acl", value("{ plain = { tls = false } }"))
                    .set(
                        "rules",
                        value(r#"[{ redirect = { scheme = "https", status = 301 }, if = "plain" }]"#),
                    ),
            )
            .frontend(
                Frontend::http("https")
                    .to("a")
                    .set("tls", value(r#"{ certs = [{ cert = "site.pem", key = "site.key" }] }"#))
                    .set("acl", value(r#"{ b = { sni = "b.test" } }"#))
                    .set(
                        "rules",
                        value(
                            r#"[{ use_backend = "b", if = "b" },
                                { set_response_header = "strict-transport-security: max-age=31536000" }]"#,
                        ),
                    ),
            )
            .backend(Backend::new("a").server("a", a.addr))
            .backend(Backend::new("b").server("b", b.addr))
            .text();
        let d = start_in(&dir, &text);
        let r = get(d.addr("http").unwrap(), "/x?y=1", "").await;
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location").unwrap(), "https://test.example/x?y=1");
        let addr = d.addr("https").unwrap();
        let c = Client::new(&ca);
        let c2 = c.clone();
        let got = blocking(move || c2.get(addr, "a.test", &["/"]))
            .await
            .unwrap();
        assert!(got.text.ends_with("a\n"), "{}", got.text);
        assert!(
            got.text
                .contains("strict-transport-security: max-age=31536000"),
            "{}",
            got.text
        );
        let got = blocking(move || c.get(addr, "b.test", &["/"]))
            .await
            .unwrap();
        assert!(got.text.ends_with("b\n"), "{}", got.text);
    })
    .await;
}

#[tokio::test]
async fn tls_offload_in_tcp_mode_pumps_plaintext() {
    bounded(30, async {
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let dir = TempDir::new("tls-tcp");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        let text = Conf::new()
            .frontend(Frontend::tcp("tls").to("echo").set(
                "tls",
                value(r#"{ certs = [{ cert = "site.pem", key = "site.key" }] }"#),
            ))
            .backend(Backend::new("echo").server("e", echo.addr))
            .text();
        let d = start_in(&dir, &text);
        let addr = d.addr("tls").unwrap();
        let c = Client::new(&ca);
        let echoed = blocking(move || {
            let mut s = open(c.config(), addr, "site.test");
            let msg = vec![b'z'; 100_000];
            s.write_all(&msg).unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).unwrap();
            back == msg
        })
        .await;
        assert!(echoed);
        let f = d.stats().frontend("tls").unwrap().clone();
        assert_eq!(f.tls_handshakes, 1);
        assert!(f.bytes_in >= 100_000);
    })
    .await;
}

#[tokio::test]
async fn a_certificate_replaced_by_a_reload_is_served_to_the_next_handshake_while_an_open_connection_goes_on()
 {
    bounded(30, async {
        let echo = Origin::start("echo", Behaviour::Echo).await;
        let dir = TempDir::new("tls-reload");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["old.test", "site.test"], 30);
        let text = Conf::new()
            .section("admin", "socket", "admin.sock")
            .frontend(Frontend::tcp("tls").to("echo").set(
                "tls",
                value(r#"{ certs = [{ cert = "site.pem", key = "site.key" }] }"#),
            ))
            .backend(Backend::new("echo").server("e", echo.addr))
            .text();
        let d = start_in(&dir, &text);
        let addr = d.addr("tls").unwrap();
        let c = Client::new(&ca);
        // An open session, echoing.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let c1 = c.clone();
        let mut ready_tx = Some(ready_tx);
        std::thread::spawn(move || {
            let mut s = open(c1.config(), addr, "site.test");
            let mut ok = true;
            for i in 0..2 {
                let msg = format!("before {i}\n");
                s.write_all(msg.as_bytes()).unwrap();
                let mut back = vec![0u8; msg.len()];
                ok &= s.read_exact(&mut back).is_ok() && back == msg.as_bytes();
                if i == 0 {
                    // Established and echoing: now the reload.
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                    let _ = rx.recv();
                }
            }
            let _ = done_tx.send(ok);
        });
        ready_rx.await.unwrap();
        ca.leaf(&dir.0, "site", &["new.test", "site.test"], 30);
        let r = d.reload().unwrap();
        assert!(r.starts_with("reloaded: generation 2"), "{r}");
        let _ = tx.send(());
        assert!(done_rx.await.unwrap(), "the open session went on");
        let names = blocking(move || {
            let mut s = open(c.config(), addr, "site.test");
            s.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            names_of(&s.conn.peer_certificates().unwrap()[0])
        })
        .await;
        assert_eq!(names, ["new.test", "site.test"]);

        // `reload tls` on the admin socket: the files alone, read again.
        ca.leaf(&dir.0, "site", &["third.test", "site.test"], 30);
        let r = admin(&d, "reload tls").await;
        assert!(
            r.starts_with("tls reloaded: the certificates of 1 frontend(s) read again"),
            "{r}"
        );
        let served = |c: Client| {
            blocking(move || {
                let mut s = open(c.config(), addr, "site.test");
                s.write_all(b"x").unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                names_of(&s.conn.peer_certificates().unwrap()[0])
            })
        };
        assert_eq!(served(Client::new(&ca)).await, ["third.test", "site.test"]);
        // A broken key file: refused, the running certificate stays.
        std::fs::write(dir.join("site.key"), "not a key").unwrap();
        let r = admin(&d, "reload tls").await;
        assert!(
            r.contains("reload tls refused, the running certificates stay"),
            "{r}"
        );
        assert_eq!(served(Client::new(&ca)).await, ["third.test", "site.test"]);
    })
    .await;
}

#[test]
fn bad_certificates_are_config_errors_at_the_key_that_names_them() {
    let dir = TempDir::new("tls-check");
    let ca = Ca::new(&dir.0);
    ca.leaf(&dir.0, "good", &["good.test"], 30);
    ca.leaf(&dir.0, "other", &["other.test"], 30);
    ca.leaf(&dir.0, "old", &["old.test"], -1);
    let check = |tls: &str| {
        let text = format!(
            "[[frontend]]\nname = \"f\"\nlisten = [\"127.0.0.1:0\"]\nmode = \"http\"\ndefault_backend = \"b\"\ntls = {{ {tls} }}\n\n[[backend]]\nname = \"b\"\nservers = [{{ name = \"s\", address = \"127.0.0.1:9\" }}]\n"
        );
        let file = dir.join("f.toml");
        fulcrum::config::parse(file.to_str().unwrap(), &text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = check(r#"certs = [{ cert = "missing.pem", key = "good.key" }]"#);
    assert!(
        e.contains("f.toml:6:27: frontend \"f\": tls: cannot read certificate"),
        "{e}"
    );
    let e = check(r#"certs = [{ cert = "good.pem", key = "other.key" }]"#);
    assert!(e.contains("f.toml:6:45: frontend \"f\": tls: key"), "{e}");
    assert!(e.contains("is not the key of certificate"), "{e}");
    let e = check(r#"certs = [{ cert = "old.pem", key = "old.key" }]"#);
    assert!(e.contains("f.toml:6:27:") && e.contains("expired"), "{e}");
    let e = check(r#"certs = [{ cert = "good.pem", key = "good.key" }], min_version = "1.1""#);
    assert!(e.contains("tls.min_version \"1.1\""), "{e}");
    let e = check(r#"certs = [{ cert = "good.pem", key = "good.key" }], default_cert = "x.pem""#);
    assert!(e.contains("tls.default_cert \"x.pem\""), "{e}");
    assert_eq!(
        check(r#"certs = [{ cert = "good.pem", key = "good.key" }]"#),
        ""
    );
}

#[tokio::test]
async fn curl_and_openssl_s_client_as_real_clients() {
    bounded(30, async {
        let o = Origin::http("a", "").await;
        let dir = TempDir::new("tls-real");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        let d = start_in(
            &dir,
            &conf(
                o.addr,
                r#"certs = [{ cert = "site.pem", key = "site.key" }]"#,
            ),
        );
        let addr = d.addr("https").unwrap();
        let ca_file = dir.join("ca.pem");
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("site.test:{}:127.0.0.1", addr.port()))
            .arg(format!("https://site.test:{}/curl", addr.port()))
            .output()
            .await
            .expect("curl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a\n");
        let mut child = tokio::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "site.test",
                "-CAfile",
            ])
            .arg(&ca_file)
            .args(["-verify_return_error", "-quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("openssl runs");
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stdin,
            b"GET /openssl HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .expect("s_client ends")
            .unwrap();
        drop(stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("HTTP/1.1 200 OK"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(o.heads().iter().any(|h| h.starts_with("GET /openssl ")));
    })
    .await;
}

#[tokio::test]
async fn the_tls_example_redirects_routes_by_sni_requires_client_certificates_and_offloads_tcp() {
    bounded(30, async {
        let www = Origin::http("www", "").await;
        let admin = Origin::http("admin", "").await;
        let redis = Origin::start("redis", Behaviour::Echo).await;
        let dir = TempDir::new("tls-example");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let certs = dir.join("certs");
        let ca = Ca::new(&certs);
        ca.leaf(&certs, "www", &["www.example.com", "example.com"], 30);
        ca.leaf(&certs, "wildcard", &["*.example.com"], 30);
        ca.leaf(&certs, "client", &["ops.example.com"], 30);
        std::fs::copy(certs.join("ca.pem"), certs.join("clients-ca.pem")).unwrap();
        std::fs::copy(certs.join("ca.pem"), certs.join("internal-ca.pem")).unwrap();
        ca.leaf(&certs, "api", &["api.internal"], 30);
        let (api, _) = https_origin(&certs, "api", "api");
        // The example with its listeners on port 0 and its servers here.
        let text = std::fs::read_to_string(format!(
            "{}/config/examples/tls.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut doc: toml::Table = text.parse().unwrap();
        for f in doc["frontend"].as_array_mut().unwrap() {
            f["listen"] = toml::Value::Array(vec!["127.0.0.1:0".into()]);
        }
        let addrs = [www.addr, api, admin.addr, redis.addr];
        for (b, addr) in doc["backend"].as_array_mut().unwrap().iter_mut().zip(addrs) {
            b["servers"][0]["address"] = addr.to_string().into();
        }
        let text = toml::to_string(&doc).unwrap();
        let d = start_as(&dir, "tls.toml", &text);

        let r = get(d.addr("http").unwrap(), "/login", "").await;
        assert_eq!(r.status, 301);
        assert_eq!(r.header("location").unwrap(), "https://test.example/login");

        let https = d.addr("https").unwrap();
        let c = Client::new(&ca);
        let c1 = c.clone();
        let got = blocking(move || c1.get(https, "www.example.com", &["/"]))
            .await
            .unwrap();
        assert!(got.text.ends_with("www\n"), "{}", got.text);
        assert!(
            got.text
                .contains("strict-transport-security: max-age=63072000")
        );
        assert_eq!(got.names, ["www.example.com", "example.com"]);
        let c1 = c.clone();
        let got = blocking(move || c1.get(https, "api.example.com", &["/v1"]))
            .await
            .unwrap();
        assert!(got.text.ends_with("api\n"), "{}", got.text);
        assert_eq!(got.names, ["*.example.com"]);

        let adm = d.addr("admin").unwrap();
        let c1 = c.clone();
        assert!(
            blocking(move || c1.get(adm, "www.example.com", &["/"]))
                .await
                .is_err()
        );
        let mut ops = c.clone();
        ops.identity = Some((
            std::fs::read_to_string(certs.join("client.pem")).unwrap(),
            std::fs::read_to_string(certs.join("client.key")).unwrap(),
        ));
        let got = blocking(move || ops.get(adm, "www.example.com", &["/"]))
            .await
            .unwrap();
        assert!(got.text.ends_with("admin\n"), "{}", got.text);

        let rd = d.addr("redis-tls").unwrap();
        let echoed = blocking(move || {
            let mut s = open(c.config(), rd, "cache.example.com");
            s.write_all(b"PING\r\n").unwrap();
            let mut back = [0u8; 6];
            s.read_exact(&mut back).unwrap();
            back
        })
        .await;
        assert_eq!(&echoed, b"PING\r\n");
    })
    .await;
}

/// A TLS server's config with the certificate `file` (`.pem`, `.key`) in `dir`.
fn server_config(dir: &Path, file: &str) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{file}.pem")))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{file}.key"))).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// A TLS origin of its own (a blocking thread): it terminates TLS with the
/// certificate `file` in `dir`, reads a line, and answers `NAME sni=SNI`.
fn tls_origin(dir: &Path, file: &str, name: &'static str) -> SocketAddr {
    let config = server_config(dir, file);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in l.incoming().map_while(Result::ok) {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut line = [0u8; 5];
                if s.read_exact(&mut line).is_err() {
                    return;
                }
                let sni = s.conn.server_name().unwrap_or("-").to_string();
                let _ = s.write_all(format!("{name} sni={sni}\n").as_bytes());
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    addr
}

#[tokio::test]
async fn sni_passthrough_routes_two_names_to_two_backends_without_decrypting() {
    bounded(30, async {
        let dir = TempDir::new("tls-passthrough");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "a", &["a.test"], 30);
        ca.leaf(&dir.0, "b", &["b.test"], 30);
        let a = tls_origin(&dir.0, "a", "origin-a");
        let b = tls_origin(&dir.0, "b", "origin-b");
        let plain = Origin::start("plain", Behaviour::Echo).await;
        let text = Conf::new()
            .frontend(
                Frontend::tcp("sni")
                    .to("other")
                    .set(
                        "acl",
                        value(r#"{ a = { sni = "a.test" }, b = { sni_suffix = "b.test" } }"#),
                    )
                    .set(
                        "rules",
                        value(
                            r#"[{ use_backend = "a", if = "a" }, { use_backend = "b", if = "b" }]"#,
                        ),
                    ),
            )
            .backend(Backend::new("a").server("a", a))
            .backend(Backend::new("b").server("b", b))
            .backend(Backend::new("other").server("p", plain.addr))
            .text();
        let d = start_in(&dir, &text);
        let addr = d.addr("sni").unwrap();
        let ask = |sni: &'static str| {
            let c = Client::new(&ca);
            blocking(move || {
                let mut s = open(c.config(), addr, sni);
                s.write_all(b"hello").unwrap();
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                // The certificate is the origin's: fulcrum did not terminate.
                let names = names_of(&s.conn.peer_certificates().unwrap()[0]);
                (out, names)
            })
        };
        let (out, names) = ask("a.test").await;
        assert_eq!(out, "origin-a sni=a.test\n");
        assert_eq!(names, ["a.test"]);
        let (out, names) = ask("b.test").await;
        assert_eq!(out, "origin-b sni=b.test\n");
        assert_eq!(names, ["b.test"]);
        // Not TLS: no name, the default backend, counted.
        assert_eq!(exchange(addr, b"plain bytes").await, b"plain bytes");
        let f = d.stats().frontend("sni").unwrap().clone();
        assert_eq!(f.tls_sni_missing, 1);
        assert_eq!(f.tls_handshakes, 0);
        let st = d.stats();
        assert_eq!(st.backend("a").unwrap().conn_total, 1);
        assert_eq!(st.backend("b").unwrap().conn_total, 1);
    })
    .await;
}

/// An HTTPS origin (blocking threads) with the certificate `file` in `dir`:
/// keep-alive, each request answered `200` with the body `NAME\n`. Counts
/// the TLS connections it accepted.
fn https_origin(
    dir: &Path,
    file: &str,
    name: &'static str,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    https_origin_with(server_config(dir, file), name)
}

/// The same on a given server config (one that asks for client certificates).
fn https_origin_with(
    config: Arc<rustls::ServerConfig>,
    name: &'static str,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    std::thread::spawn(move || {
        for tcp in l.incoming().map_while(Result::ok) {
            let config = config.clone();
            let counted = counted.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut handshaken = false;
                loop {
                    let n = match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if !handshaken {
                        handshaken = true;
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let body = format!("{name}\n");
                        let out = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(out.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn tls_to_servers_verifies_them_reuses_pooled_sessions_and_checks_health_over_tls() {
    bounded(30, async {
        let dir = TempDir::new("tls-upstream");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "app", &["app.internal"], 30);
        let (good, conns) = https_origin(&dir.0, "app", "secure");
        // A server whose certificate the CA did not sign.
        let other = TempDir::new("tls-upstream-other");
        let rogue_ca = Ca::new(&other.0);
        rogue_ca.leaf(&other.0, "app", &["app.internal"], 30);
        let (rogue, _) = https_origin(&other.0, "app", "rogue");
        // The secure backend trusts `ca` (a reload swaps it below).
        let conf = |ca: &str| {
            Conf::new()
            .frontend(
                Frontend::web()
                    .to("secure")
                    .set(
                        "acl",
                        value(r#"{ rogue = { path_prefix = "/rogue" }, any = { path_prefix = "/any" } }"#),
                    )
                    .set(
                        "rules",
                        value(r#"[{ use_backend = "rogue", if = "rogue" }, { use_backend = "any", if = "any" }]"#),
                    ),
            )
            .backend(
                Backend::new("secure")
                    .set(
                            "tls",
                            value(&format!(r#"{{ verify = "ca", ca = "{ca}", sni = "app.internal" }}"#)),
                        )
                    .set(
                        "health",
                        value(r#"{ check = "http", path = "/health", interval = "100ms", rise = 1, fall = 1 }"#),
                    )
                    .server("s", good),
            )
            .backend(
                Backend::new("rogue")
                    .set("retries", 0)
                    .set("tls", value(r#"{ ca = "ca.pem", sni = "app.internal" }"#))
                    .server("r", rogue),
            )
            .backend(
                Backend::new("any")
                    .set("tls", value(r#"{ verify = "none" }"#))
                    .server("r", rogue),
            )
            .text()
        };
        let text = conf("ca.pem");
        let d = start_in(&dir, &text);
        let web = d.addr("web").unwrap();
        eventually(5, "checked up over TLS", || {
            d.stats()
                .backend("secure")
                .unwrap()
                .server("s")
                .unwrap()
                .last_check
                == "ok"
        })
        .await;
        let before = conns.load(std::sync::atomic::Ordering::SeqCst);
        for i in 0..3 {
            let r = get(web, &format!("/{i}"), "").await;
            assert_eq!((r.status, r.text()), (200, "secure\n".to_string()));
        }
        // One TLS session to the server for the three requests (pooled).
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), before + 1);

        // A certificate from another CA: refused, 502, counted.
        let r = get(web, "/rogue", "").await;
        assert_eq!(r.status, 502);
        let st = d.stats();
        let b = st.backend("rogue").unwrap();
        assert_eq!((b.tls_errors, b.server("r").unwrap().tls_errors), (1, 1));
        // verify = "none" takes it.
        let r = get(web, "/any", "").await;
        assert_eq!((r.status, r.text()), (200, "rogue\n".to_string()));

        // A reload that trusts another CA: the checker restarts with it and
        // takes the server out.
        std::fs::copy(other.join("ca.pem"), dir.join("other-ca.pem")).unwrap();
        let swapped = conf("other-ca.pem");
        assert_ne!(swapped, text);
        std::fs::write(dir.join("fulcrum.toml"), &swapped).unwrap();
        d.reload().unwrap();
        eventually(5, "down: its certificate is no longer trusted", || {
            let st = d.stats();
            let s = st.backend("secure").unwrap().server("s").unwrap().clone();
            s.health == "down" && s.last_check.contains("certificate")
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_server_overrides_its_backends_tls_or_turns_it_off() {
    bounded(30, async {
        let dir = TempDir::new("tls-per-server");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "app", &["app.internal"], 30);
        ca.leaf(&dir.0, "other", &["other.internal"], 30);
        let (secure, _) = https_origin(&dir.0, "app", "secure");
        let (other, _) = https_origin(&dir.0, "other", "other");
        let plain = Origin::http("plain", "").await;
        let text = Conf::new()
            .frontend(Frontend::web().to("mixed"))
            .backend(
                Backend::new("mixed")
                    .set("balance", "rr")
                    .set("tls", value(r#"{ ca = "ca.pem", sni = "app.internal" }"#))
                    .server("s", secure)
                    .server_with(
                        "o",
                        other,
                        table([("tls", value(r#"{ ca = "ca.pem", sni = "other.internal" }"#))]),
                    )
                    .server_with("p", plain.addr, table([("tls", false)])),
            )
            .text();
        let d = start_in(&dir, &text);
        let web = d.addr("web").unwrap();
        let mut seen = Vec::new();
        for i in 0..6 {
            let r = get(web, &format!("/{i}"), "").await;
            assert_eq!(r.status, 200, "{}", r.text());
            seen.push(r.text());
        }
        for want in ["secure\n", "other\n", "plain\n"] {
            assert_eq!(seen.iter().filter(|t| *t == want).count(), 2, "{seen:?}");
        }
        assert_eq!(d.stats().backend("mixed").unwrap().tls_errors, 0);
    })
    .await;
}

#[tokio::test]
async fn a_client_resumes_its_session_on_the_next_connection_tls_1_3_and_1_2() {
    bounded(30, async {
        let o = Origin::http("a", "").await;
        let dir = TempDir::new("tls-resume");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        let d = start_in(
            &dir,
            &conf(
                o.addr,
                r#"certs = [{ cert = "site.pem", key = "site.key" }]"#,
            ),
        );
        let addr = d.addr("https").unwrap();
        static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        for versions in [rustls::DEFAULT_VERSIONS, &TLS12[..]] {
            let mut c = Client::new(&ca);
            c.versions = versions;
            // One config, so one client session store, for both connections.
            let config = c.config();
            let kinds = blocking(move || {
                let mut kinds = Vec::new();
                for _ in 0..2 {
                    let mut s = open(config.clone(), addr, "site.test");
                    s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
                        .unwrap();
                    let mut out = Vec::new();
                    let _ = s.read_to_end(&mut out);
                    assert!(out.starts_with(b"HTTP/1.1 200 OK"));
                    kinds.push(s.conn.handshake_kind());
                }
                kinds
            })
            .await;
            assert_eq!(
                kinds,
                [
                    Some(rustls::HandshakeKind::Full),
                    Some(rustls::HandshakeKind::Resumed)
                ],
                "{versions:?}"
            );
        }
        let f = d.stats().frontend("https").unwrap().clone();
        assert_eq!((f.tls_handshakes, f.tls_resumed), (4, 2));
    })
    .await;
}

#[tokio::test]
async fn fulcrum_presents_its_client_certificate_to_servers_that_require_one() {
    bounded(30, async {
        let dir = TempDir::new("tls-upstream-mtls");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "app", &["app.internal"], 30);
        ca.leaf(&dir.0, "lb", &["lb.internal"], 30);
        // The origin accepts only clients with a certificate from the CA.
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("app.pem"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("app.key")).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(ca.roots()),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let (origin, _) = https_origin_with(Arc::new(config), "mtls");
        let text = Conf::new()
            .frontend(
                Frontend::web()
                    .to("with")
                    .set("acl", value(r#"{ without = { path_prefix = "/without" } }"#))
                    .set("rules", value(r#"[{ use_backend = "without", if = "without" }]"#)),
            )
            .backend(
                Backend::new("with")
                    .set(
                        "tls",
                        value(
                            r#"{ ca = "ca.pem", sni = "app.internal", client_cert = "lb.pem", client_key = "lb.key" }"#,
                        ),
                    )
                    .server("s", origin),
            )
            .backend(
                Backend::new("without")
                    .set("retries", 0)
                    .set("tls", value(r#"{ ca = "ca.pem", sni = "app.internal" }"#))
                    .server("s", origin),
            )
            .text();
        let d = start_in(&dir, &text);
        let web = d.addr("web").unwrap();
        let r = get(web, "/", "").await;
        assert_eq!((r.status, r.text()), (200, "mtls\n".to_string()));
        let r = get(web, "/without", "").await;
        assert_eq!(r.status, 502);
        // TLS 1.3: the server refuses the missing certificate after the
        // handshake, so fulcrum sees a failed response, not a failed handshake.
        let b = d.stats().backend("without").unwrap().clone();
        assert_eq!((b.http_bad_responses, b.tls_errors), (1, 0));
    })
    .await;
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_handshake_is_cut_at_handshake_timeout() {
    bounded(30, async {
        let o = Origin::http("a", "").await;
        let dir = TempDir::new("tls-slow");
        let ca = Ca::new(&dir.0);
        ca.leaf(&dir.0, "site", &["site.test"], 30);
        let d = start_in(
            &dir,
            &conf(
                o.addr,
                r#"certs = [{ cert = "site.pem", key = "site.key" }], handshake_timeout = "300ms""#,
            ),
        );
        let mut slow = tokio::net::TcpStream::connect(d.addr("https").unwrap())
            .await
            .unwrap();
        // Connected, silent: closed by the daemon well before the 10 s bound.
        let mut sink = Vec::new();
        let started = std::time::Instant::now();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut sink),
        )
        .await
        .expect("closed by the daemon");
        assert!(started.elapsed() < Duration::from_secs(5));
        eventually(5, "counted", || {
            d.stats().frontend("https").unwrap().tls_handshake_timeouts == 1
        })
        .await;
    })
    .await;
}
