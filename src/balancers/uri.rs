//! `uri`: hash of the request path (HAProxy's `balance uri`), so a cache tier sees
//! each object on one server. Options: `whole` includes the query string, `depth N`
//! keeps only the first N path segments, `len N` only the first N characters.
//! Consistent (Maglev), optionally with bounded loads. http mode only.

use super::hash::{UriKey, hash_uri};
use super::maglev::Maglev;
use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct Uri {
    table: Maglev,
    key: UriKey,
}

impl Uri {
    pub fn new(servers: &[Server], key: UriKey, factor: Option<f64>) -> Uri {
        Uri {
            table: Maglev::new(servers, factor),
            key,
        }
    }
}

impl Balance for Uri {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let h = hash_uri(self.key, ctx.path.unwrap_or("/"), ctx.query);
        self.table.lookup(servers, h, ctx.avoid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    fn req(path: &'static str, query: Option<&'static str>) -> PickCtx<'static> {
        let mut c = ctx();
        c.path = Some(path);
        c.query = query;
        c
    }

    #[test]
    fn depth_groups_paths() {
        let s = servers(&[1; 8]);
        let u = Uri::new(
            &s,
            UriKey {
                depth: Some(2),
                ..UriKey::default()
            },
            None,
        );
        let a = u.pick(&s, &req("/img/cats/1.png", None));
        assert_eq!(u.pick(&s, &req("/img/cats/2.png", Some("v=1"))), a);
        let spread: std::collections::HashSet<_> = (0..40)
            .map(|i| {
                u.pick(
                    &s,
                    &req(Box::leak(format!("/img/{i}/x").into_boxed_str()), None),
                )
            })
            .collect();
        assert!(spread.len() >= 5);
        let whole = Uri::new(
            &s,
            UriKey {
                whole: true,
                ..UriKey::default()
            },
            None,
        );
        let qs: std::collections::HashSet<_> = (0..40)
            .map(|i| {
                whole.pick(
                    &s,
                    &req("/a", Some(Box::leak(format!("v={i}").into_boxed_str()))),
                )
            })
            .collect();
        assert!(qs.len() >= 5, "whole includes the query");
    }
}
