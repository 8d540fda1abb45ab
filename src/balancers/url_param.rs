//! `url_param`: hash of one query parameter's value (HAProxy's `balance
//! url_param`), e.g. a user or session id, so one user stays on one server.
//! Consistent (Maglev), optionally bounded. A request without the parameter (or
//! with it empty) falls back to `wrr`. http mode only.

use super::hash::{hash_bytes, query_param};
use super::maglev::Maglev;
use super::wrr::Wrr;
use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct UrlParam {
    table: Maglev,
    param: Box<str>,
    fallback: Wrr,
}

impl UrlParam {
    pub fn new(servers: &[Server], param: &str, factor: Option<f64>) -> UrlParam {
        UrlParam {
            table: Maglev::new(servers, factor),
            param: param.into(),
            fallback: Wrr::new(servers),
        }
    }
}

impl Balance for UrlParam {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        match ctx.query.and_then(|q| query_param(q, &self.param)) {
            Some(v) => self
                .table
                .lookup(servers, hash_bytes(0x71, v.as_bytes()), ctx.avoid),
            None => self.fallback.pick(servers, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    #[test]
    fn same_value_same_server_else_wrr() {
        let s = servers(&[1, 1, 1, 1]);
        let u = UrlParam::new(&s, "user", None);
        let mut c = ctx();
        c.query = Some("x=1&user=alice");
        let a = u.pick(&s, &c);
        c.query = Some("user=alice&y=2");
        assert_eq!(u.pick(&s, &c), a);
        c.query = Some("other=1");
        let rotating: Vec<_> = (0..4).map(|_| u.pick(&s, &c).unwrap()).collect();
        assert_eq!(rotating, [0, 1, 2, 3]);
    }
}
