//! `dh`: destination hashing. The key is what the client asked for: in http mode
//! the request's Host authority, in tcp mode the local address and port the client
//! connected to (one frontend listening on several addresses maps each to its own
//! server). Hashed into the consistent Maglev table like `sh`.

use super::hash::{hash_bytes, hash_ip};
use super::maglev::Maglev;
use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct Dh {
    table: Maglev,
}

impl Dh {
    pub fn new(servers: &[Server], factor: Option<f64>) -> Dh {
        Dh {
            table: Maglev::new(servers, factor),
        }
    }
}

/// The destination key shared by `dh`, `lblc` and `lblcr`.
#[inline]
pub(crate) fn destination_key(ctx: &PickCtx<'_>) -> u64 {
    match ctx.host {
        Some(h) => hash_bytes(0x68, h.as_bytes()),
        None => hash_ip(ctx.dst.ip(), false) ^ hash_bytes(0x70, &ctx.dst.port().to_be_bytes()),
    }
}

impl Balance for Dh {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        self.table.lookup(servers, destination_key(ctx), ctx.avoid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::testing::{ctx, servers};

    #[test]
    fn keyed_by_host_or_local_address() {
        let s = servers(&[1, 1, 1, 1, 1, 1]);
        let dh = Dh::new(&s, None);
        let mut c = ctx();
        let hosts: Vec<_> = (0..50)
            .map(|i| {
                let h = format!("site{i}.example");
                let mut c = ctx();
                c.host = Some(Box::leak(h.into_boxed_str()));
                c.src = [10, 0, 0, i as u8].into();
                dh.pick(&s, &c).unwrap()
            })
            .collect();
        assert!(hosts.iter().collect::<std::collections::HashSet<_>>().len() >= 4);
        c.dst = "127.0.0.2:443".parse().unwrap();
        let a = dh.pick(&s, &c);
        c.src = [192, 0, 2, 1].into();
        assert_eq!(dh.pick(&s, &c), a, "the source does not matter");
    }
}
