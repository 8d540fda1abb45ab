//! The rule walk: header rules whose condition holds accumulate; the first
//! routing rule (deny, redirect, use_backend, split) whose condition holds
//! decides; without one, the frontend's default backend.

pub mod acl;

use std::sync::Arc;

use crate::balancers::hash::{hash_bytes, hash_ip};
use crate::config::routing::{Acl, Action, HeaderOp, RedirectTo, Rule, Sticky};
use acl::{Eval, ReqView};

/// Seed for split stickiness hashes (fixed: every instance and version agrees).
const SPLIT_SEED: u64 = 0x5b1f_7c0d_a11e_0001;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'r> {
    Backend(usize),
    Deny {
        status: u16,
        body: Option<&'r Arc<[u8]>>,
    },
    Redirect {
        status: u16,
        location: String,
    },
}

pub use crate::config::routing::MAX_RULES;

/// The header rules that matched, as a set of rule positions: no allocation.
#[derive(Debug, Clone, Copy)]
pub struct Ops<'r> {
    rules: &'r [Rule],
    set: u128,
}

impl<'r> Ops<'r> {
    /// No edits.
    pub const NONE: Ops<'static> = Ops { rules: &[], set: 0 };

    pub fn is_empty(&self) -> bool {
        self.set == 0
    }

    /// The edits, in rule order.
    pub fn iter(&self) -> impl Iterator<Item = &'r HeaderOp> + 'r {
        let set = self.set;
        self.rules
            .iter()
            .take(MAX_RULES)
            .enumerate()
            .filter(move |(i, _)| set & (1u128 << i) != 0)
            .filter_map(|(_, r)| match &r.action {
                Action::RequestHeader(op) | Action::ResponseHeader(op) => Some(op),
                _ => None,
            })
    }
}

/// The outcome of the rule walk for one request.
#[derive(Debug)]
pub struct Decision<'r> {
    pub route: Route<'r>,
    pub request_ops: Ops<'r>,
    pub response_ops: Ops<'r>,
}

/// Walk `rules` for `req`. `rand` is a fresh random draw (non-sticky splits).
pub fn decide<'r>(
    rules: &'r [Rule],
    acls: &[Acl],
    req: &ReqView<'_>,
    default: usize,
    rand: u64,
) -> Decision<'r> {
    let mut d = Decision {
        route: Route::Backend(default),
        request_ops: Ops { rules, set: 0 },
        response_ops: Ops { rules, set: 0 },
    };
    if rules.is_empty() {
        return d;
    }
    let mut eval = Eval::new(acls, req);
    let mut routed = false;
    for (i, rule) in rules.iter().enumerate().take(MAX_RULES) {
        if routed && rule.action.routes() {
            continue;
        }
        if let Some(c) = &rule.cond
            && !eval.condition(c)
        {
            continue;
        }
        match &rule.action {
            Action::RequestHeader(_) => d.request_ops.set |= 1 << i,
            Action::ResponseHeader(_) => d.response_ops.set |= 1 << i,
            Action::UseBackend(b) => {
                d.route = Route::Backend(*b);
                routed = true;
            }
            Action::Split { targets, sticky } => {
                d.route = Route::Backend(split(targets, sticky.as_ref(), req, rand));
                routed = true;
            }
            Action::Deny { status, body } => {
                d.route = Route::Deny {
                    status: *status,
                    body: body.as_ref(),
                };
                routed = true;
            }
            Action::Redirect { status, to } => {
                d.route = Route::Redirect {
                    status: *status,
                    location: location(to, req),
                };
                routed = true;
            }
        }
    }
    d
}

/// Pick a side of a weighted split. With stickiness the point is a hash of the
/// user's key scaled onto the weights, so raising one side's weight only moves
/// users onto it (never between the others), and every instance agrees.
fn split(targets: &[(usize, u32)], sticky: Option<&Sticky>, req: &ReqView<'_>, rand: u64) -> usize {
    let key = match sticky {
        None => rand,
        Some(Sticky::Cookie(name)) => match req.cookie(name) {
            Some(v) if !v.is_empty() => hash_bytes(SPLIT_SEED, v.as_bytes()),
            // No cookie yet: the source address keeps the user on one side meanwhile.
            _ => hash_ip(req.src, false),
        },
        Some(Sticky::Src) => hash_ip(req.src, false),
    };
    let total: u64 = targets.iter().map(|(_, w)| u64::from(*w)).sum();
    // Multiply-shift: the top 32 bits of the key, scaled to 0..total.
    let mut point = ((key >> 32) * total) >> 32;
    for (b, w) in targets {
        let w = u64::from(*w);
        if point < w {
            return *b;
        }
        point -= w;
    }
    targets.last().map_or(0, |(b, _)| *b)
}

fn location(to: &RedirectTo, req: &ReqView<'_>) -> String {
    let tail = |drop_query: bool| {
        let mut t = req.path.to_string();
        if let (false, Some(q)) = (drop_query, req.query) {
            t.push('?');
            t.push_str(q);
        }
        t
    };
    match to {
        RedirectTo::Location(l) => l.clone(),
        RedirectTo::Prefix { prefix, drop_query } => format!("{prefix}{}", tail(*drop_query)),
        RedirectTo::Scheme { scheme, drop_query } => {
            format!("{scheme}://{}{}", req.host.unwrap_or(""), tail(*drop_query))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::{Condition, Matcher, Term};

    fn req(src: &str) -> ReqView<'static> {
        ReqView {
            method: "GET",
            path: "/old/page",
            query: Some("a=1"),
            host: Some("shop.example:8080"),
            headers: &[],
            src: src.parse().unwrap(),
            dst_port: 80,
            tls: None,
        }
    }

    fn rule(cond: Option<(usize, bool)>, action: Action) -> Rule {
        Rule {
            cond: cond.map(|(acl, not)| Condition {
                any: vec![vec![Term { acl, not }]],
                negate: false,
            }),
            action,
        }
    }

    fn acls() -> Vec<Acl> {
        vec![
            Acl {
                name: "yes".into(),
                matcher: Matcher::DstPort(vec![80]),
            },
            Acl {
                name: "no".into(),
                matcher: Matcher::DstPort(vec![81]),
            },
        ]
    }

    #[test]
    fn first_routing_rule_wins_and_header_rules_accumulate() {
        let rules = vec![
            rule(Some((1, false)), Action::UseBackend(5)),
            rule(None, Action::RequestHeader(HeaderOp::Del("x-a".into()))),
            rule(Some((0, false)), Action::UseBackend(2)),
            rule(None, Action::UseBackend(3)),
            rule(
                Some((0, false)),
                Action::ResponseHeader(HeaderOp::Del("x-b".into())),
            ),
            rule(
                Some((1, false)),
                Action::ResponseHeader(HeaderOp::Del("x-c".into())),
            ),
        ];
        let r = req("10.0.0.1");
        let d = decide(&rules, &acls(), &r, 0, 0);
        assert_eq!(d.route, Route::Backend(2));
        assert_eq!(d.request_ops.iter().count(), 1);
        assert_eq!(
            d.response_ops.iter().collect::<Vec<_>>(),
            vec![&HeaderOp::Del("x-b".into())]
        );
        assert_eq!(decide(&[], &acls(), &r, 7, 0).route, Route::Backend(7));
    }

    #[test]
    fn redirect_forms() {
        let r = req("10.0.0.1");
        assert_eq!(
            location(
                &RedirectTo::Scheme {
                    scheme: "https".into(),
                    drop_query: false
                },
                &r
            ),
            "https://shop.example:8080/old/page?a=1"
        );
        assert_eq!(
            location(
                &RedirectTo::Prefix {
                    prefix: "https://new.example".into(),
                    drop_query: true
                },
                &r
            ),
            "https://new.example/old/page"
        );
        assert_eq!(location(&RedirectTo::Location("/x".into()), &r), "/x");
    }

    #[test]
    fn split_weights_and_stickiness() {
        let targets = [(0, 70), (1, 30)];
        let r = req("10.0.0.1");
        let mut count = [0u32; 2];
        let mut x = 1u64;
        for _ in 0..100_000 {
            x = crate::balancers::hash::mix(x);
            count[split(&targets, None, &r, x)] += 1;
        }
        assert!((69_000..71_000).contains(&count[0]), "{count:?}");
        // Sticky by source: one answer per address; raising the canary only
        // moves users onto it.
        let mut moved_back = 0;
        let mut on_canary = [0u32; 2];
        for i in 0..5000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            let r = req(&ip);
            let a = split(&targets, Some(&Sticky::Src), &r, 1);
            assert_eq!(a, split(&targets, Some(&Sticky::Src), &r, 2));
            let b = split(&[(0, 50), (1, 50)], Some(&Sticky::Src), &r, 1);
            if a == 1 && b == 0 {
                moved_back += 1;
            }
            on_canary[0] += u32::from(a == 1);
            on_canary[1] += u32::from(b == 1);
        }
        assert_eq!(moved_back, 0);
        assert!((1300..1700).contains(&on_canary[0]), "{on_canary:?}");
        assert!((2300..2700).contains(&on_canary[1]), "{on_canary:?}");
    }
}
