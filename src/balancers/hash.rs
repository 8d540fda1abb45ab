//! Fixed-seed hashing and the keys hash balancers use.
//!
//! Never `RandomState`: two fulcrum instances, and one instance across reloads, must
//! map every key to the same server. FNV-1a over the bytes, then a splitmix64
//! finaliser so that short, similar keys (addresses, paths) spread evenly.

use std::net::IpAddr;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// splitmix64's finaliser: full avalanche of a 64-bit value.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash bytes with a seed (different seeds give independent hashes).
#[inline]
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET ^ mix(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

/// Hash an IP address; with `prefix`, only its /24 (IPv4) or /64 (IPv6).
#[inline]
pub fn hash_ip(ip: IpAddr, prefix: bool) -> u64 {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            if prefix {
                o[3] = 0;
            }
            hash_bytes(4, &o)
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let n = if prefix { 8 } else { 16 };
            hash_bytes(6, &o[..n])
        }
    }
}

pub use crate::config::UriKey;

/// The slice of `path` (and `query` with `whole`) that `uri` hashes, as a hash.
pub fn hash_uri(key: UriKey, path: &str, query: Option<&str>) -> u64 {
    let mut p = path;
    if let Some(depth) = key.depth {
        let mut seen = 0u16;
        for (i, c) in path.char_indices() {
            if c == '/' {
                if seen == depth {
                    p = &path[..i];
                    break;
                }
                seen += 1;
            }
        }
    }
    if let Some(len) = key.len {
        let end = p
            .char_indices()
            .nth(usize::from(len))
            .map_or(p.len(), |(i, _)| i);
        p = &p[..end];
    }
    let mut h = hash_bytes(0x75, p.as_bytes());
    if key.whole
        && let Some(q) = query
    {
        // Chain the query as if it followed a '?', without building a string.
        h = hash_bytes(h, q.as_bytes());
    }
    h
}

/// The value of query parameter `name` (first occurrence), if present and non-empty.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_across_builds() {
        // Golden values: a change here breaks agreement between versions
        // (and instances) on every hashed key.
        assert_eq!(hash_bytes(0, b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash_bytes(0, b"a"), 0x02c0_bdbf_4814_20f8);
        assert_eq!(hash_bytes(0x75, b"/a/b/c"), 0xd7e6_8079_7b05_eb96);
        assert_eq!(
            hash_ip("10.1.2.3".parse().unwrap(), false),
            0x7635_42a6_73ca_5911
        );
        assert_eq!(
            hash_ip("10.1.2.3".parse().unwrap(), true),
            0xf9b7_83c2_340f_9aea
        );
        assert_eq!(
            hash_ip("2001:db8::5".parse().unwrap(), false),
            0xceac_5eb5_668d_ac86
        );
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(1, b"a"));
        assert_eq!(
            hash_ip("10.1.2.3".parse().unwrap(), true),
            hash_ip("10.1.2.99".parse().unwrap(), true)
        );
        assert_ne!(
            hash_ip("10.1.2.3".parse().unwrap(), false),
            hash_ip("10.1.2.99".parse().unwrap(), false)
        );
        assert_eq!(
            hash_ip("2001:db8:0:1::5".parse().unwrap(), true),
            hash_ip("2001:db8:0:1:ffff::9".parse().unwrap(), true)
        );
    }

    #[test]
    fn uri_key_options() {
        let k = |whole, depth, len| UriKey { whole, depth, len };
        let h = |s: &str| hash_bytes(0x75, s.as_bytes());
        assert_eq!(
            hash_uri(k(false, None, None), "/a/b/c", Some("x=1")),
            h("/a/b/c")
        );
        assert_eq!(hash_uri(k(false, Some(2), None), "/a/b/c", None), h("/a/b"));
        assert_eq!(
            hash_uri(k(false, Some(5), None), "/a/b/c", None),
            h("/a/b/c")
        );
        assert_eq!(hash_uri(k(false, None, Some(3)), "/a/b/c", None), h("/a/"));
        assert_eq!(
            hash_uri(k(false, Some(2), Some(2)), "/a/b/c", None),
            h("/a")
        );
        assert_ne!(
            hash_uri(k(true, None, None), "/a", Some("x=1")),
            hash_uri(k(true, None, None), "/a", Some("x=2"))
        );
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("a=1&user=bob&x", "user"), Some("bob"));
        assert_eq!(query_param("user=&a=1", "user"), None);
        assert_eq!(query_param("username=bob", "user"), None);
        assert_eq!(query_param("", "user"), None);
    }
}
