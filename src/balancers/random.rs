//! `random`: weighted random. Each pick draws a point in `[0, sum of weights)` and
//! takes the server whose share covers it (binary search over cumulative weights
//! computed at build). An unavailable server causes a fresh draw (up to 8), then a
//! scan from the drawn point. Randomness is the caller's draw (`PickCtx::rand`).

use super::hash::mix;
use super::{Balance, PickCtx};
use crate::server::Server;

#[derive(Debug)]
pub struct Random {
    /// cumulative[i] = weight of servers 0..=i.
    cumulative: Box<[u64]>,
}

impl Random {
    pub fn new(servers: &[Server]) -> Random {
        let mut sum = 0u64;
        let cumulative = servers
            .iter()
            .map(|s| {
                sum += u64::from(s.weight);
                sum
            })
            .collect();
        Random { cumulative }
    }
}

impl Balance for Random {
    fn pick(&self, servers: &[Server], ctx: &PickCtx<'_>) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let mut draw = ctx.rand;
        let mut i = 0;
        for _ in 0..8 {
            let point = draw % total;
            i = self.cumulative.partition_point(|&c| c <= point);
            if servers[i].eligible() && Some(i) != ctx.avoid {
                return Some(i);
            }
            draw = mix(draw.wrapping_add(0x9e37_79b9_7f4a_7c15));
        }
        let n = servers.len();
        let mut fallback = None;
        for k in 0..n {
            let j = (i + k) % n;
            if servers[j].eligible() {
                if Some(j) != ctx.avoid {
                    return Some(j);
                }
                fallback = Some(j);
            }
        }
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancers::hash::mix;
    use crate::balancers::testing::{ctx, histogram, servers};
    use crate::server::Status;

    #[test]
    fn proportional_to_weight() {
        let s = servers(&[1, 3, 0, 6]);
        let r = Random::new(&s);
        let h = histogram(&r, &s, 100_000, |k| {
            let mut c = ctx();
            c.rand = mix(k as u64);
            c
        });
        assert_eq!(h[2], 0);
        for (i, want) in [(0, 0.1), (1, 0.3), (3, 0.6)] {
            let got = h[i] as f64 / 100_000.0;
            assert!((got - want).abs() < 0.01, "{h:?}");
        }
    }

    #[test]
    fn skips_unavailable() {
        let s = servers(&[1, 1, 1]);
        s[0].state.set_status(Status::Maint);
        s[2].state.set_status(Status::Down);
        let r = Random::new(&s);
        for k in 0..100u64 {
            let mut c = ctx();
            c.rand = mix(k);
            assert_eq!(r.pick(&s, &c), Some(1));
        }
    }
}
