//! Persistence: the source-address table (address → server, idle expiry, size
//! bound) and the Cookie-header edits cookie persistence needs.
//!
//! The table lives in an `Arc` carried across reloads by backend name; entries
//! name servers by `ServerState::id`, which a reload keeps while the server's
//! name and address stay, so stickiness survives reloads and a removed server's
//! entries are simply re-pointed on their next use.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::balancers::hash::hash_ip;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    server: u64,
    seen: Instant,
}

/// Source address → server id, sharded so request threads rarely meet on a lock
/// (held only for one map operation; no other path takes it).
#[derive(Debug)]
pub struct SourceTable {
    shards: [Mutex<HashMap<IpAddr, Entry>>; SHARDS],
}

impl Default for SourceTable {
    fn default() -> Self {
        SourceTable {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

impl SourceTable {
    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let i = (hash_ip(ip, false) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server remembered for `ip`, unless the entry is older than `expire`.
    pub fn get(&self, ip: IpAddr, expire: Duration, now: Instant) -> Option<u64> {
        let mut m = self.shard(ip);
        match m.get(&ip) {
            Some(e) if now.saturating_duration_since(e.seen) <= expire => Some(e.server),
            Some(_) => {
                m.remove(&ip);
                None
            }
            None => None,
        }
    }

    /// Remember (or refresh) `ip` → `server`. At `size` entries, expired ones are
    /// dropped first, then the least recently seen of the shard.
    pub fn put(&self, ip: IpAddr, server: u64, size: u32, expire: Duration, now: Instant) {
        let per_shard = (size as usize).div_ceil(SHARDS).max(1);
        let mut m = self.shard(ip);
        if !m.contains_key(&ip) && m.len() >= per_shard {
            m.retain(|_, e| now.saturating_duration_since(e.seen) <= expire);
            if m.len() >= per_shard
                && let Some(oldest) = m.iter().min_by_key(|(_, e)| e.seen).map(|(k, _)| *k)
            {
                m.remove(&oldest);
            }
        }
        m.insert(ip, Entry { server, seen: now });
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the persistence cookie is changed before the request goes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieEdit<'a> {
    /// Forward as received.
    Keep,
    /// Remove cookie `name` (insert mode with `indirect`).
    Remove(&'a str),
    /// Remove the `<server>~` prefix from cookie `name`'s value (prefix mode).
    Unprefix(&'a str),
}

/// Rewrite one Cookie field value per `edit`; `None` when nothing is left.
pub fn edit_cookie_field(value: &[u8], edit: CookieEdit<'_>, out: &mut Vec<u8>) -> bool {
    let Ok(v) = std::str::from_utf8(value) else {
        out.extend_from_slice(value);
        return true;
    };
    let start = out.len();
    for pair in v.split(';') {
        let pair = pair.trim_matches([' ', '\t']);
        if pair.is_empty() {
            continue;
        }
        let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
        let piece: Option<(&str, &str)> = match edit {
            CookieEdit::Remove(n) if k == n => None,
            CookieEdit::Unprefix(n) if k == n => {
                Some((k, val.split_once('~').map_or(val, |(_, rest)| rest)))
            }
            _ => Some((k, val)),
        };
        let Some((k, val)) = piece else { continue };
        if out.len() > start {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(k.as_bytes());
        if pair.contains('=') {
            out.push(b'=');
            out.extend_from_slice(val.as_bytes());
        }
    }
    out.len() > start
}

/// For prefix mode: `NAME=value; attrs` from the server becomes
/// `NAME=<server>~value; attrs`. Other Set-Cookie values are left alone.
pub fn prefix_set_cookie(value: &[u8], name: &str, server: &str, out: &mut Vec<u8>) -> bool {
    let Some(rest) = value
        .strip_prefix(name.as_bytes())
        .and_then(|r| r.strip_prefix(b"="))
    else {
        return false;
    };
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(server.as_bytes());
    out.push(b'~');
    out.extend_from_slice(rest);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_table_expires_and_bounds() {
        let t = SourceTable::default();
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let exp = Duration::from_secs(10);
        assert_eq!(t.get(ip, exp, now), None);
        t.put(ip, 7, 100, exp, now);
        assert_eq!(t.get(ip, exp, now + Duration::from_secs(5)), Some(7));
        assert_eq!(t.get(ip, exp, now + Duration::from_secs(11)), None);
        assert!(t.is_empty());
        // Size bound: never more than size (rounded up to the shards) entries.
        for i in 0..1000u32 {
            let ip = IpAddr::V4((0x0a00_0000 + i).into());
            t.put(ip, 1, 32, exp, now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.len() <= 32, "{}", t.len());
    }

    #[test]
    fn cookie_edits() {
        let mut out = Vec::new();
        assert!(edit_cookie_field(
            b"a=1; SRV=s1; b=2",
            CookieEdit::Remove("SRV"),
            &mut out
        ));
        assert_eq!(out, b"a=1; b=2");
        out.clear();
        assert!(!edit_cookie_field(
            b"SRV=s1",
            CookieEdit::Remove("SRV"),
            &mut out
        ));
        out.clear();
        assert!(edit_cookie_field(
            b"JS=s2~abc; x",
            CookieEdit::Unprefix("JS"),
            &mut out
        ));
        assert_eq!(out, b"JS=abc; x");
        out.clear();
        assert!(prefix_set_cookie(b"JS=abc; Path=/", "JS", "s2", &mut out));
        assert_eq!(out, b"JS=s2~abc; Path=/");
        out.clear();
        assert!(!prefix_set_cookie(b"JSX=abc", "JS", "s2", &mut out));
    }
}
