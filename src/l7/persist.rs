//! Cookie persistence: the edits the Cookie and Set-Cookie fields need (the
//! source-address table is `crate::table::Sticky`, shared with tcp mode).

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
        // A quoted value keeps its quotes around what is left of it.
        let (quoted, inner) = match val.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => (true, inner),
            None => (false, val),
        };
        let piece: Option<&str> = match edit {
            CookieEdit::Remove(n) if k == n => None,
            CookieEdit::Unprefix(n) if k == n => {
                Some(inner.split_once('~').map_or(inner, |(_, rest)| rest))
            }
            _ => Some(inner),
        };
        let Some(inner) = piece else { continue };
        if out.len() > start {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(k.as_bytes());
        if pair.contains('=') {
            out.push(b'=');
            if quoted {
                out.push(b'"');
            }
            out.extend_from_slice(inner.as_bytes());
            if quoted {
                out.push(b'"');
            }
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
    // A quoted value gets the prefix inside its quotes: "abc" -> "s1~abc".
    let (quote, rest) = match rest.strip_prefix(b"\"") {
        Some(r) => (&b"\""[..], r),
        None => (&b""[..], rest),
    };
    out.extend_from_slice(quote);
    out.extend_from_slice(server.as_bytes());
    out.push(b'~');
    out.extend_from_slice(rest);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_keep_their_quotes() {
        let mut out = Vec::new();
        assert!(edit_cookie_field(
            b"a=1; JSESSIONID=\"s1~abc\"; b=\"q\"",
            CookieEdit::Unprefix("JSESSIONID"),
            &mut out
        ));
        assert_eq!(out, b"a=1; JSESSIONID=\"abc\"; b=\"q\"");
        out.clear();
        assert!(prefix_set_cookie(
            b"JSESSIONID=\"abc\"; Path=/",
            "JSESSIONID",
            "s1",
            &mut out
        ));
        assert_eq!(out, b"JSESSIONID=\"s1~abc\"; Path=/");
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
