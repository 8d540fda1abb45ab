//! Request-path normalisation, so that what the ACLs match, what the `uri`
//! balancer hashes and what the origin resolves are one path.
//!
//! Without it, `acl.admin = { path_prefix = "/admin" }` is walked around by
//! `/%61dmin`, `//admin`, `/./admin` or `/x/../admin`, which every common
//! framework serves as `/admin`. The steps, on the path only (the query is left
//! as it is):
//!
//! 1. Percent-escapes: an escaped unreserved character (`A-Z a-z 0-9 - . _ ~`,
//!    RFC 3986 §2.3) is decoded; every other escape stays escaped with upper-case
//!    hex (§6.2.2.1), `%25` included, so nothing is decoded twice. An escaped
//!    slash (`%2F`), backslash (`%5C`) or control (`%00`–`%1F`, `%7F`), an
//!    invalid escape (`%` without two hex digits), a raw backslash and a `;`
//!    path parameter are each handled by the frontend's [`PathOptions`]:
//!    rejected (400, class `bad_path`) by default.
//! 2. Dot segments are removed (§5.2.4), `..` never climbing above the root.
//! 3. Repeated slashes are merged (on by default, as nginx's `merge_slashes`).
//!
//! Pure, and allocation-free for a path that needs none of it (the common case:
//! one scan).

use std::borrow::Cow;

pub use crate::config::routing::{PathMode, PathOptions, Treat};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("encoded slash in the path")]
    EncodedSlash,
    #[error("backslash in the path")]
    Backslash,
    #[error("encoded control character in the path")]
    EncodedControl,
    #[error("invalid percent-escape in the path")]
    InvalidEscape,
    #[error("path parameter (;) in the path")]
    PathParams,
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Whether `path` (without its query) is already in normal form, in one scan:
/// no `%`, `\` or `;`, no `//`, no `.` or `..` segment.
fn is_normal(path: &[u8], o: &PathOptions) -> bool {
    let mut prev = 0u8;
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' => return false,
            b'/' if prev == b'/' && o.merge_slashes => return false,
            b'.' if prev == b'/' => {
                // "/." followed by "/", end, or ".(/|end)" is a dot segment.
                let rest = &path[i + 1..];
                if rest.is_empty()
                    || rest[0] == b'/'
                    || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
                {
                    return false;
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

/// Normalise the path of `target` (origin form, `/p?q`, or `*`). Borrowed when
/// nothing changes.
pub fn normalize<'a>(target: &'a str, o: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    if o.mode == PathMode::Off || !target.starts_with('/') {
        return Ok(Cow::Borrowed(target));
    }
    let (path, query) = match target.find('?') {
        Some(q) => target.split_at(q),
        None => (target, ""),
    };
    if is_normal(path.as_bytes(), o) {
        return Ok(Cow::Borrowed(target));
    }
    let decoded = decode(path.as_bytes(), o)?;
    let mut out = remove_dots(&decoded, o.merge_slashes);
    out.push_str(query);
    if out == target {
        return Ok(Cow::Borrowed(target));
    }
    Ok(Cow::Owned(out))
}

/// Step 1: escapes, backslashes and parameters. Escapes that stay escaped are
/// kept as `%XX` in the output, so they can never form a `/` or a dot segment.
fn decode(path: &[u8], o: &PathOptions) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let pair = path
                    .get(i + 1)
                    .and_then(|&h| hex(h))
                    .zip(path.get(i + 2).and_then(|&l| hex(l)));
                let Some((h, l)) = pair else {
                    if o.invalid_escape == Treat::Reject {
                        return Err(PathError::InvalidEscape);
                    }
                    out.push(b'%');
                    i += 1;
                    continue;
                };
                let c = h << 4 | l;
                i += 3;
                let keep = |out: &mut Vec<u8>| {
                    out.push(b'%');
                    out.push(b"0123456789ABCDEF"[usize::from(h)]);
                    out.push(b"0123456789ABCDEF"[usize::from(l)]);
                };
                match c {
                    _ if unreserved(c) => out.push(c),
                    b'/' => match o.encoded_slash {
                        Treat::Reject => return Err(PathError::EncodedSlash),
                        Treat::Keep => keep(&mut out),
                        Treat::Slash => out.push(b'/'),
                    },
                    b'\\' => match o.backslash {
                        Treat::Reject => return Err(PathError::Backslash),
                        Treat::Keep => keep(&mut out),
                        Treat::Slash => out.push(b'/'),
                    },
                    0..=0x1f | 0x7f => match o.encoded_control {
                        Treat::Reject => return Err(PathError::EncodedControl),
                        _ => keep(&mut out),
                    },
                    _ => keep(&mut out),
                }
            }
            b'\\' => {
                match o.backslash {
                    Treat::Reject => return Err(PathError::Backslash),
                    Treat::Keep => out.push(b'\\'),
                    Treat::Slash => out.push(b'/'),
                }
                i += 1;
            }
            b';' => {
                if o.path_params == Treat::Reject {
                    return Err(PathError::PathParams);
                }
                out.push(b';');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Steps 2 and 3 on a path that starts with `/`: RFC 3986 §5.2.4 over segments,
/// empty segments dropped when merging (a trailing slash is kept).
fn remove_dots(path: &[u8], merge: bool) -> String {
    // The input came from a `&str` and only ASCII was decoded into it.
    let path = String::from_utf8_lossy(path);
    let mut segs: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    // Whether the output ends with "/" (a "." or ".." last segment, or an empty one).
    let mut trailing = false;
    for (i, seg) in parts.iter().enumerate() {
        let at_end = i == last;
        match *seg {
            "." => trailing = at_end,
            ".." => {
                segs.pop();
                trailing = at_end;
            }
            "" if merge => trailing = at_end && !segs.is_empty(),
            s => {
                segs.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segs.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
