//! `sh`: source hashing. The client address (after the PROXY protocol, the real
//! client) is hashed with a fixed seed into the weighted Maglev table
//! (`maglev.rs`), so a client keeps its server across reloads, and two fulcrum
//! instances given the same servers send it to the same one without sharing
//! state (several balancers behind DNS or ECMP agree). Removing one of N servers
//! moves about 1/N of the clients. LVS's `sh` table is a plain modulo: there,
//! removing a server reshuffles nearly everyone; here it does not.
//!
//! `prefix = true` hashes the /24 (IPv4) or /64 (IPv6) instead, keeping a client
//! whose address changes inside its network on one server.

use super::hash::hash_ip;
use super::maglev::Maglev;
use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct Sh {
    table: Maglev,
    prefix: bool,
}

impl Sh {
    pub fn new(servers: &[Server], prefix: bool, factor: Option<f64>) -> Sh {
        Sh {
            table: Maglev::new(servers, factor),
            prefix,
        }
    }
}

impl Balance for Sh {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        self.table
            .lookup(servers, hash_ip(ctx.src, self.prefix), ctx.avoid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    fn from(ip: &str) -> PickCtx<'static> {
        let mut c = ctx();
        c.src = ip.parse().unwrap();
        c
    }

    #[test]
    fn same_client_same_server_and_prefix_option() {
        let s = servers(&[1, 1, 1, 1, 1, 1, 1, 1]);
        let sh = Sh::new(&s, false, None);
        let first = sh.pick(&s, &from("198.51.100.7"));
        for _ in 0..10 {
            assert_eq!(sh.pick(&s, &from("198.51.100.7")), first);
        }
        let differs = (1..=254)
            .filter(|i| sh.pick(&s, &from(&format!("198.51.100.{i}"))) != first)
            .count();
        assert!(differs > 150, "addresses spread: {differs}");
        let shp = Sh::new(&s, true, None);
        let p = shp.pick(&s, &from("198.51.100.7"));
        for i in 1..=254 {
            assert_eq!(shp.pick(&s, &from(&format!("198.51.100.{i}"))), p);
        }
    }
}
