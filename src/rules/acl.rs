//! ACL matching: one `match` over `Matcher`, against a borrowed view of the
//! parsed request. No allocation; each ACL is evaluated at most once per request.

use std::net::IpAddr;

use crate::config::routing::{Acl, Condition, Matcher, ValueTest, strip_port};

/// What the ACLs may look at, borrowed from the parsed request head.
#[derive(Debug, Clone, Copy)]
pub struct ReqView<'a> {
    pub method: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The authority as received (Host, or the absolute-form target's), port included.
    pub host: Option<&'a str>,
    pub headers: &'a [httparse::Header<'a>],
    pub src: IpAddr,
    pub dst_port: u16,
    /// What the TLS handshake settled (`None`: plain TCP).
    pub tls: Option<&'a crate::net::tls::TlsInfo>,
}

impl ReqView<'_> {
    /// Values of every field named `name`.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// The value of cookie `name` from the Cookie fields, if sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header_values("cookie")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim_matches([' ', '\t']).split_once('=')?;
                (k == name).then(|| v.trim_matches('"'))
            })
    }

    /// The value of query parameter `name` (`Some("")` for `?name` or `?name=`).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

fn test_value(test: &ValueTest, v: &str) -> bool {
    match test {
        ValueTest::Present => true,
        ValueTest::Equals(list) => list.iter().any(|e| e == v),
        ValueTest::Prefix(p) => v.starts_with(p.as_str()),
        ValueTest::Regex(r) => r.is_match(v),
    }
}

fn ends_with_nocase(h: &str, suffix: &str) -> bool {
    h.len() >= suffix.len()
        && h.as_bytes()[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether `m` matches the request.
pub fn matches(m: &Matcher, r: &ReqView<'_>) -> bool {
    match m {
        Matcher::Path(v) => v.any_equal(r.path),
        Matcher::PathPrefix(v) => v.any_prefix(r.path),
        Matcher::PathSuffix(v) => v.any_suffix(r.path),
        Matcher::PathRegex(re) => re.is_match(r.path),
        Matcher::Host(list) => r.host.is_some_and(|h| {
            let h = strip_port(h);
            list.iter().any(|v| h.eq_ignore_ascii_case(v))
        }),
        // `example.com` matches example.com and every name under it, not `badexample.com`.
        Matcher::HostSuffix(list) => r.host.is_some_and(|h| {
            let h = strip_port(h);
            list.iter().any(|v| {
                let v = v.trim_start_matches('.');
                h.eq_ignore_ascii_case(v)
                    || (ends_with_nocase(h, v) && h.as_bytes()[h.len() - v.len() - 1] == b'.')
            })
        }),
        Matcher::HostRegex(re) => r.host.is_some_and(|h| re.is_match(strip_port(h))),
        Matcher::Method(list) => list.iter().any(|m| m == r.method),
        Matcher::Header { name, test } => r
            .header_values(name)
            .any(|v| std::str::from_utf8(v).is_ok_and(|v| test_value(test, v))),
        Matcher::Query { name, test } => r.query_param(name).is_some_and(|v| test_value(test, v)),
        Matcher::Cookie { name, test } => r.cookie(name).is_some_and(|v| test_value(test, v)),
        Matcher::Src(blocks) => blocks.iter().any(|b| b.contains(r.src)),
        Matcher::DstPort(ports) => ports.contains(&r.dst_port),
        Matcher::Sni(names) => r
            .tls
            .and_then(|t| t.sni.as_deref())
            .is_some_and(|s| names.iter().any(|n| n.eq_ignore_ascii_case(s))),
        Matcher::SniSuffix(suffixes) => r.tls.and_then(|t| t.sni.as_deref()).is_some_and(|s| {
            suffixes.iter().any(|v| {
                let v = v.trim_start_matches('.');
                s.eq_ignore_ascii_case(v)
                    || (ends_with_nocase(s, v) && s.as_bytes()[s.len() - v.len() - 1] == b'.')
            })
        }),
        Matcher::Tls(want) => r.tls.is_some() == *want,
        Matcher::TlsClientVerified(want) => r.tls.is_some_and(|t| t.client_verified) == *want,
    }
}

/// Evaluates conditions for one request, remembering each ACL's result.
pub struct Eval<'a> {
    acls: &'a [Acl],
    req: &'a ReqView<'a>,
    /// Bit i set: ACL i was evaluated (first 64 ACLs; the rest are not cached).
    known: u64,
    value: u64,
}

impl<'a> Eval<'a> {
    pub fn new(acls: &'a [Acl], req: &'a ReqView<'a>) -> Self {
        Eval {
            acls,
            req,
            known: 0,
            value: 0,
        }
    }

    fn acl(&mut self, i: usize) -> bool {
        let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
        if self.known & bit != 0 {
            return self.value & bit != 0;
        }
        let v = self
            .acls
            .get(i)
            .is_some_and(|a| matches(&a.matcher, self.req));
        self.known |= bit;
        if v {
            self.value |= bit;
        }
        v
    }

    pub fn condition(&mut self, c: &Condition) -> bool {
        let hit = c
            .any
            .iter()
            .any(|group| group.iter().all(|t| self.acl(t.acl) != t.not));
        hit != c.negate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::{Cidr, PathValues, Term};

    fn view<'a>(headers: &'a [httparse::Header<'a>]) -> ReqView<'a> {
        ReqView {
            method: "GET",
            path: "/api/v1/users.json",
            query: Some("debug&user=bob&x="),
            host: Some("Shop.Example.com:8080"),
            headers,
            src: "10.1.2.3".parse().unwrap(),
            dst_port: 8080,
            tls: None,
        }
    }

    #[test]
    fn every_matcher_positive_and_negative() {
        let headers = [
            httparse::Header {
                name: "X-Beta",
                value: b"yes-please",
            },
            httparse::Header {
                name: "Cookie",
                value: b"a=1; group=beta; z=\"q\"",
            },
        ];
        let r = view(&headers);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let re = |p: &str| regex::Regex::new(p).unwrap();
        let eq = |v: &[&str]| ValueTest::Equals(s(v));
        let cases: Vec<(Matcher, bool)> = vec![
            (Matcher::Path(s(&["/api/v1/users.json"]).into()), true),
            (Matcher::Path(s(&["/api"]).into()), false),
            (Matcher::PathPrefix(s(&["/x", "/api/"]).into()), true),
            (Matcher::PathPrefix(s(&["/apx"]).into()), false),
            (Matcher::PathSuffix(s(&[".json"]).into()), true),
            (Matcher::PathSuffix(s(&[".png"]).into()), false),
            (
                Matcher::PathPrefix(PathValues {
                    list: s(&["/API/"]),
                    nocase: true,
                }),
                true,
            ),
            (Matcher::PathPrefix(s(&["/API/"]).into()), false),
            (
                Matcher::PathSuffix(PathValues {
                    list: s(&["USERS.JSON"]),
                    nocase: true,
                }),
                true,
            ),
            (
                Matcher::Path(PathValues {
                    list: s(&["/API/V1/USERS.JSON"]),
                    nocase: true,
                }),
                true,
            ),
            (Matcher::PathRegex(re("^/api/v[0-9]+/")), true),
            (Matcher::PathRegex(re("^/v[0-9]")), false),
            (Matcher::Host(s(&["shop.example.com"])), true),
            (Matcher::Host(s(&["example.com"])), false),
            (Matcher::HostSuffix(s(&["example.com"])), true),
            (Matcher::HostSuffix(s(&[".example.com"])), true),
            (Matcher::HostSuffix(s(&["ample.com"])), false),
            (
                Matcher::HostRegex(
                    regex::RegexBuilder::new("^SHOP\\.")
                        .case_insensitive(true)
                        .build()
                        .unwrap(),
                ),
                true,
            ),
            (Matcher::HostRegex(re("8080")), false),
            (Matcher::Method(s(&["HEAD", "GET"])), true),
            (Matcher::Method(s(&["get"])), false),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: ValueTest::Present,
                },
                true,
            ),
            (
                Matcher::Header {
                    name: "x-alpha".into(),
                    test: ValueTest::Present,
                },
                false,
            ),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: eq(&["yes-please"]),
                },
                true,
            ),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: eq(&["yes"]),
                },
                false,
            ),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: ValueTest::Prefix("yes".into()),
                },
                true,
            ),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: ValueTest::Prefix("no".into()),
                },
                false,
            ),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: ValueTest::Regex(re("-please$")),
                },
                true,
            ),
            (
                Matcher::Header {
                    name: "x-beta".into(),
                    test: ValueTest::Regex(re("^please")),
                },
                false,
            ),
            (
                Matcher::Query {
                    name: "debug".into(),
                    test: ValueTest::Present,
                },
                true,
            ),
            (
                Matcher::Query {
                    name: "x".into(),
                    test: ValueTest::Present,
                },
                true,
            ),
            (
                Matcher::Query {
                    name: "deb".into(),
                    test: ValueTest::Present,
                },
                false,
            ),
            (
                Matcher::Query {
                    name: "user".into(),
                    test: eq(&["bob"]),
                },
                true,
            ),
            (
                Matcher::Query {
                    name: "user".into(),
                    test: eq(&["bo"]),
                },
                false,
            ),
            (
                Matcher::Cookie {
                    name: "group".into(),
                    test: eq(&["beta"]),
                },
                true,
            ),
            (
                Matcher::Cookie {
                    name: "z".into(),
                    test: eq(&["q"]),
                },
                true,
            ),
            (
                Matcher::Cookie {
                    name: "group".into(),
                    test: eq(&["alpha"]),
                },
                false,
            ),
            (
                Matcher::Cookie {
                    name: "grou".into(),
                    test: ValueTest::Present,
                },
                false,
            ),
            (Matcher::Src(vec![Cidr::parse("10.0.0.0/8").unwrap()]), true),
            (
                Matcher::Src(vec![
                    Cidr::parse("192.168.0.0/16").unwrap(),
                    Cidr::parse("::1").unwrap(),
                ]),
                false,
            ),
            (Matcher::DstPort(vec![80, 8080]), true),
            (Matcher::DstPort(vec![80]), false),
        ];
        for (m, want) in cases {
            assert_eq!(matches(&m, &r), want, "{m:?}");
        }
    }

    #[test]
    fn conditions_combine_and_cache() {
        let headers = [];
        let r = view(&headers);
        let acls = vec![
            Acl {
                name: "yes".into(),
                matcher: Matcher::DstPort(vec![8080]),
            },
            Acl {
                name: "no".into(),
                matcher: Matcher::DstPort(vec![1]),
            },
        ];
        let t = |acl, not| Term { acl, not };
        let c = |any: Vec<Vec<Term>>, negate| Condition { any, negate };
        let mut e = Eval::new(&acls, &r);
        assert!(e.condition(&c(vec![vec![t(0, false)]], false)));
        assert!(!e.condition(&c(vec![vec![t(0, false)]], true)));
        assert!(!e.condition(&c(vec![vec![t(0, false), t(1, false)]], false)));
        assert!(e.condition(&c(vec![vec![t(0, false), t(1, true)]], false)));
        assert!(e.condition(&c(vec![vec![t(1, false)], vec![t(0, false)]], false)));
        assert!(!e.condition(&c(vec![vec![t(1, false)], vec![t(0, true)]], false)));
    }
}
