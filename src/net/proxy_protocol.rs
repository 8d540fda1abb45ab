//! PROXY protocol v1 (text) and v2 (binary) headers, as specified by HAProxy's
//! `proxy-protocol.txt`: decode what a load balancer in front of us sends
//! (`accept_proxy = true`), encode what we send to a server (`send_proxy`).
//! Pure byte-level code: no I/O.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature that opens every v2 header.
pub const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest legal v1 line, CRLF included.
pub const V1_MAX: usize = 107;
/// Largest v2 header we accept (16-byte fixed part + address block with TLVs).
pub const V2_MAX: usize = 16 + 512;

/// Addresses carried by a header. `None` = the sender had none to give
/// (`UNKNOWN`, `LOCAL`, `UNSPEC`): use the connection's own addresses.
pub type Addrs = Option<(SocketAddr, SocketAddr)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed to decide.
    Incomplete,
    /// A full header of `len` bytes.
    Header { addrs: Addrs, len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Decode a header at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] == V2_SIG[..n] {
        return if n < V2_SIG.len() {
            Ok(Decoded::Incomplete)
        } else {
            decode_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 {
            Ok(Decoded::Incomplete)
        } else {
            decode_v1(buf)
        };
    }
    Err(ProxyError::Missing)
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.contains(&b'\n') {
            return Err(ProxyError::V1("line ends without CR"));
        }
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1("line longer than 107 bytes"))
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    match window.get(cr + 1) {
        None => return Ok(Decoded::Incomplete),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::V1("CR not followed by LF")),
    }
    let line = std::str::from_utf8(&window[6..cr]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let len = cr + 2;
    let mut parts = line.split(' ');
    let proto = parts.next().unwrap_or("");
    if proto == "UNKNOWN" {
        // The rest of an UNKNOWN line is ignored by definition.
        return Ok(Decoded::Header { addrs: None, len });
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1("expected 4 fields after the protocol"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" | "TCP6" => (
            src.parse()
                .map_err(|_| ProxyError::V1("bad source address"))?,
            dst.parse()
                .map_err(|_| ProxyError::V1("bad destination address"))?,
        ),
        _ => return Err(ProxyError::V1("protocol must be TCP4, TCP6 or UNKNOWN")),
    };
    if (proto == "TCP4") != (src.is_ipv4() && dst.is_ipv4())
        || (proto == "TCP6") != (src.is_ipv6() && dst.is_ipv6())
    {
        return Err(ProxyError::V1("address family does not match the protocol"));
    }
    let port = |p: &str| -> Result<u16, ProxyError> {
        // Decimal, no sign, no leading zeros (as the spec says).
        if p.is_empty()
            || (p.len() > 1 && p.starts_with('0'))
            || !p.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::V1("bad port"));
        }
        p.parse().map_err(|_| ProxyError::V1("bad port"))
    };
    let (sport, dport) = (port(sport)?, port(dport)?);
    Ok(Decoded::Header {
        addrs: Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport))),
        len,
    })
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, ProxyError> {
    if buf.len() < 16 {
        return Ok(Decoded::Incomplete);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let fam = buf[13];
    let addr_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + addr_len;
    if len > V2_MAX {
        return Err(ProxyError::V2("header too long"));
    }
    if buf.len() < len {
        return Ok(Decoded::Incomplete);
    }
    let body = &buf[16..len];
    match ver_cmd & 0x0f {
        // LOCAL: a health check from the balancer itself; no addresses apply.
        0 => return Ok(Decoded::Header { addrs: None, len }),
        1 => {}
        _ => return Err(ProxyError::V2("unknown command")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let addrs = match fam {
        0x00 => None,
        // TCP over IPv4 (UDP, 0x12, is refused: we only proxy streams).
        0x11 => {
            if body.len() < 12 {
                return Err(ProxyError::V2("address block too short for IPv4"));
            }
            let src: [u8; 4] = [body[0], body[1], body[2], body[3]];
            let dst: [u8; 4] = [body[4], body[5], body[6], body[7]];
            Some((
                SocketAddr::new(src.into(), port(&body[8..])),
                SocketAddr::new(dst.into(), port(&body[10..])),
            ))
        }
        0x21 => {
            if body.len() < 36 {
                return Err(ProxyError::V2("address block too short for IPv6"));
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&body[..16]);
            dst.copy_from_slice(&body[16..32]);
            Some((
                SocketAddr::new(src.into(), port(&body[32..])),
                SocketAddr::new(dst.into(), port(&body[34..])),
            ))
        }
        _ => return Err(ProxyError::V2("unsupported address family or transport")),
    };
    Ok(Decoded::Header { addrs, len })
}

/// Append a v1 header for a connection from `src` to `dst` to `out`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    // A v4 client on a v6 socket (or the reverse) cannot be one family: say UNKNOWN.
    let _ = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => write!(
            out,
            "PROXY TCP4 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => write!(
            out,
            "PROXY TCP6 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        _ => write!(out, "PROXY UNKNOWN\r\n"),
    };
}

/// Append a v2 PROXY-command header for `src` → `dst` to `out`.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIG);
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            out.push(0x00);
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        assert_eq!(
            decode(h),
            Ok(Decoded::Header {
                addrs: Some((sa("192.0.2.1:56324"), sa("198.51.100.2:443"))),
                len: 45
            })
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        assert_eq!(
            decode(h),
            Ok(Decoded::Header {
                addrs: Some((sa("[2001:db8::1]:1"), sa("[::1]:65535"))),
                len: h.len()
            })
        );
        assert_eq!(
            decode(b"PROXY UNKNOWN whatever\r\n"),
            Ok(Decoded::Header {
                addrs: None,
                len: 24
            })
        );
    }

    #[test]
    fn v1_incomplete_until_crlf() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for cut in 0..h.len() {
            assert_eq!(decode(&h[..cut]), Ok(Decoded::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn v1_rejects_malformed_lines() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
            b"PROXY TCP4 ::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\rX",
        ];
        for b in bad {
            assert!(
                matches!(decode(b), Err(ProxyError::V1(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 120]].concat();
        assert_eq!(
            decode(&long),
            Err(ProxyError::V1("line longer than 107 bytes"))
        );
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert_eq!(decode(b"PROXI"), Err(ProxyError::Missing));
    }

    #[test]
    fn v2_round_trip_both_families() {
        for (s, d) in [
            (sa("192.0.2.1:56324"), sa("198.51.100.2:443")),
            (sa("[2001:db8::1]:1"), sa("[::1]:65535")),
        ] {
            let mut out = Vec::new();
            encode_v2(s, d, &mut out);
            let len = out.len();
            out.extend_from_slice(b"payload");
            assert_eq!(
                decode(&out),
                Ok(Decoded::Header {
                    addrs: Some((s, d)),
                    len
                })
            );
            for cut in 0..len {
                assert_eq!(decode(&out[..cut]), Ok(Decoded::Incomplete));
            }
        }
    }

    #[test]
    fn v2_exact_bytes_for_ipv4() {
        let mut out = Vec::new();
        encode_v2(sa("1.2.3.4:256"), sa("5.6.7.8:80"), &mut out);
        let mut want = V2_SIG.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 80]);
        assert_eq!(out, want);
    }

    #[test]
    fn v2_local_tlvs_and_errors() {
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            decode(&local),
            Ok(Decoded::Header {
                addrs: None,
                len: 16
            })
        );

        // IPv4 with 3 bytes of TLV after the addresses: the TLVs are skipped.
        let mut tlv = V2_SIG.to_vec();
        tlv.extend_from_slice(&[
            0x21, 0x11, 0, 15, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 4, 0, 0,
        ]);
        assert_eq!(
            decode(&tlv),
            Ok(Decoded::Header {
                addrs: Some((sa("1.2.3.4:1"), sa("5.6.7.8:2"))),
                len: 31
            })
        );

        let mut bad_ver = local.clone();
        bad_ver[12] = 0x11;
        assert_eq!(decode(&bad_ver), Err(ProxyError::V2("version is not 2")));
        let mut bad_cmd = local.clone();
        bad_cmd[12] = 0x22;
        assert_eq!(decode(&bad_cmd), Err(ProxyError::V2("unknown command")));
        let mut short = V2_SIG.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(decode(&short), Err(ProxyError::V2(_))));
        let mut udp = V2_SIG.to_vec();
        udp.extend_from_slice(&[0x21, 0x12, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        assert!(matches!(decode(&udp), Err(ProxyError::V2(_))));
        let mut huge = V2_SIG.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(decode(&huge), Err(ProxyError::V2("header too long")));
    }

    #[test]
    fn v1_encoding() {
        let mut out = Vec::new();
        encode_v1(sa("192.0.2.1:56324"), sa("198.51.100.2:443"), &mut out);
        assert_eq!(out, b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n");
        out.clear();
        encode_v1(sa("[::1]:5"), sa("[::2]:6"), &mut out);
        assert_eq!(out, b"PROXY TCP6 ::1 ::2 5 6\r\n");
        out.clear();
        encode_v1(sa("1.2.3.4:5"), sa("[::2]:6"), &mut out);
        assert_eq!(out, b"PROXY UNKNOWN\r\n");
    }
}
