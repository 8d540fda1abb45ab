//! How a message says where its body ends, in one place: the framing fields
//! (`Content-Length`, `Transfer-Encoding`) as parsed, and as fulcrum writes them.
//!
//! The invariant (issue 18): a message fulcrum forwards is framed exactly as
//! fulcrum parsed it. The serialisers (`rewrite.rs`) never copy a framing field
//! from the input: they drop every one and write the fields of the [`Declared`]
//! value the parser decided, in canonical form. So no header edit, no
//! `Connection` nomination and no duplicate can make the head say something the
//! body relay does not do. A `Connection` header that names a framing or routing
//! field is refused outright (400 for a request, 502 for a response): RFC 9110
//! §7.6.1 would have the field removed, which is exactly how such a message is
//! smuggled past a proxy that still frames the body by it.
//!
//! Pure: no I/O.

use std::io::Write as _;

/// Fields a `Connection` header may not name: removing them would change how
/// the message is framed (`content-length`, `transfer-encoding`) or where it is
/// routed (`host`). Matched case-insensitively.
pub const NOT_NOMINABLE: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Whether the `Connection` token `t` names a field that may not be removed.
pub fn forbidden_nomination(t: &str) -> bool {
    NOT_NOMINABLE.iter().any(|n| t.eq_ignore_ascii_case(n))
}

/// Read one `Connection` field value: `close` and (HTTP/1.0) `keep-alive`
/// update `close`; a token naming a framing or routing field is an error
/// (removing it as hop-by-hop would reframe or reroute the message: refused,
/// never repaired).
pub fn connection_field(value: &str, minor: u8, close: &mut bool) -> Result<(), NominatedFraming> {
    for t in value.split(',') {
        let t = t.trim_matches([' ', '\t']);
        if t.eq_ignore_ascii_case("close") {
            *close = true;
        } else if t.eq_ignore_ascii_case("keep-alive") && minor == 0 {
            *close = false;
        } else if forbidden_nomination(t) {
            return Err(NominatedFraming);
        }
    }
    Ok(())
}

/// A `Connection` field named a framing or routing field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NominatedFraming;

/// The two fields that frame a body; the serialisers never copy them.
pub fn is_framing_field(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// A transfer coding fulcrum knows (RFC 9112 §7; `chunked` is kept apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    XGzip,
    Deflate,
    Compress,
    XCompress,
}

impl Coding {
    const ALL: [(Coding, &'static str); 5] = [
        (Coding::Gzip, "gzip"),
        (Coding::XGzip, "x-gzip"),
        (Coding::Deflate, "deflate"),
        (Coding::Compress, "compress"),
        (Coding::XCompress, "x-compress"),
    ];

    pub fn parse(token: &str) -> Option<Coding> {
        Coding::ALL
            .iter()
            .find(|(_, n)| token.eq_ignore_ascii_case(n))
            .map(|(c, _)| *c)
    }

    pub fn name(self) -> &'static str {
        Coding::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("", |(_, n)| n)
    }
}

/// Most codings applied under `chunked` (more is refused: nobody stacks them).
pub const MAX_CODINGS: usize = 4;

/// The transfer codings of a message, in order, without `chunked`. Inline: no
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codings {
    list: [Option<Coding>; MAX_CODINGS],
    len: u8,
}

impl Codings {
    /// Append `c`; `false` when the list is full.
    pub fn push(&mut self, c: Coding) -> bool {
        match self.list.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = Some(c);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Coding> + '_ {
        self.list[..usize::from(self.len)].iter().flatten().copied()
    }
}

/// Why a `Transfer-Encoding` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeError {
    /// Empty element, a parameter, `chunked` not last or twice, too many codings.
    Malformed,
    /// A well-formed coding fulcrum does not know.
    Unknown,
}

/// Where a `Transfer-Encoding` list stands while its fields are read (a message
/// may carry several `Transfer-Encoding` lines; they form one list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TeList {
    pub codings: Codings,
    /// `chunked` came, last so far.
    pub chunked: bool,
}

impl TeList {
    /// Add the elements of one `Transfer-Encoding` field value.
    pub fn add(&mut self, value: &str) -> Result<(), TeError> {
        for element in value.split(',') {
            let c = element.trim_matches([' ', '\t']);
            if c.is_empty() || !c.bytes().all(super::chunked::is_tchar) {
                return Err(TeError::Malformed);
            }
            if self.chunked {
                // Something after chunked: chunked must be the final coding.
                return Err(TeError::Malformed);
            }
            if c.eq_ignore_ascii_case("chunked") {
                self.chunked = true;
            } else {
                let coding = Coding::parse(c).ok_or(TeError::Unknown)?;
                if !self.codings.push(coding) {
                    return Err(TeError::Malformed);
                }
            }
        }
        Ok(())
    }
}

/// What a message's framing fields declared, as parsed and validated. This is
/// what the serialisers write, and the only thing they write about framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Declared {
    /// Neither field.
    #[default]
    Nothing,
    /// `Content-Length: n` (identical duplicates collapsed).
    Length(u64),
    /// `Transfer-Encoding`: these codings, then `chunked` when `chunked`.
    Codings(TeList),
}

impl Declared {
    /// Append the canonical framing fields (lower-case names, CRLF).
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Declared::Nothing => {}
            Declared::Length(n) => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
            Declared::Codings(te) => {
                out.extend_from_slice(b"transfer-encoding: ");
                let mut first = true;
                let names = te
                    .codings
                    .iter()
                    .map(Coding::name)
                    .chain(te.chunked.then_some("chunked"));
                for name in names {
                    if !first {
                        out.extend_from_slice(b", ");
                    }
                    first = false;
                    out.extend_from_slice(name.as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(values: &[&str]) -> Result<TeList, TeError> {
        let mut l = TeList::default();
        for v in values {
            l.add(v)?;
        }
        Ok(l)
    }

    fn written(d: Declared) -> String {
        let mut out = Vec::new();
        d.write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn transfer_encoding_lists() {
        let l = te(&["GZip ,\tchunked"]).unwrap();
        assert!(l.chunked);
        assert_eq!(l.codings.iter().collect::<Vec<_>>(), [Coding::Gzip]);
        assert!(te(&["gzip", "chunked"]).unwrap().chunked);
        assert_eq!(te(&["chunked", "gzip"]), Err(TeError::Malformed));
        assert_eq!(te(&["chunked", "chunked"]), Err(TeError::Malformed));
        assert_eq!(te(&["chunked;q=1"]), Err(TeError::Malformed));
        assert_eq!(te(&[",chunked"]), Err(TeError::Malformed));
        assert_eq!(te(&["br, chunked"]), Err(TeError::Unknown));
        assert_eq!(
            te(&["gzip, gzip, gzip, gzip, gzip, chunked"]),
            Err(TeError::Malformed)
        );
        assert!(!te(&["gzip"]).unwrap().chunked);
    }

    #[test]
    fn canonical_fields() {
        assert_eq!(written(Declared::Nothing), "");
        assert_eq!(written(Declared::Length(0)), "content-length: 0\r\n");
        assert_eq!(written(Declared::Length(35)), "content-length: 35\r\n");
        let l = te(&["x-GZIP", "deflate , CHUNKED"]).unwrap();
        assert_eq!(
            written(Declared::Codings(l)),
            "transfer-encoding: x-gzip, deflate, chunked\r\n"
        );
        assert_eq!(
            written(Declared::Codings(te(&["gzip"]).unwrap())),
            "transfer-encoding: gzip\r\n"
        );
    }

    #[test]
    fn nominations() {
        for t in ["Content-Length", "transfer-encoding", "HOST"] {
            assert!(forbidden_nomination(t), "{t}");
        }
        for t in ["close", "keep-alive", "upgrade", "x-foo", "te", "cookie"] {
            assert!(!forbidden_nomination(t), "{t}");
        }
    }
}
