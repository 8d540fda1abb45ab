//! Read buffers from per-thread spares: taken when bytes arrive, small for a
//! head, moved into a large one for a body, given back when done. Nothing
//! here blocks or locks: each worker thread has its own spares.

use std::cell::RefCell;

thread_local! {
    /// Spare read buffers of this thread: [small, large].
    static BUFS: RefCell<[Vec<Vec<u8>>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// A request or response head (and a small body) fits in one small buffer.
pub const SMALL: usize = 4 * 1024;
/// Bodies stream through large buffers.
pub const LARGE: usize = 64 * 1024;
/// Spare buffers kept per thread, per size.
const KEEP: [usize; 2] = [256, 64];

fn class(capacity: usize) -> Option<usize> {
    match capacity {
        SMALL => Some(0),
        LARGE => Some(1),
        _ => None,
    }
}

fn spare(class: usize) -> Vec<u8> {
    BUFS.try_with(|b| b.try_borrow_mut().ok().and_then(|mut b| b[class].pop()))
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity([SMALL, LARGE][class]))
}

/// Give a buffer back to this thread's spares (or free it).
pub fn give(mut v: Vec<u8>) {
    let Some(c) = class(v.capacity()) else {
        return;
    };
    v.clear();
    // `try_with`: a buffer dropped while the thread exits is simply freed.
    let _ = BUFS.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut()
            && b[c].len() < KEEP[c]
        {
            b[c].push(v);
        }
    });
}

/// Make room for at least 1 KiB more in `buf`: an empty buffer becomes a small
/// spare, a small one moves into a large spare, a large one grows.
pub fn grow(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = spare(0);
    } else if buf.capacity() < LARGE {
        to_large(buf);
    } else {
        buf.reserve(LARGE);
    }
}

/// Move `buf`'s bytes into a large buffer unless it is one already (a body is
/// about to stream through it).
pub fn to_large(buf: &mut Vec<u8>) {
    if buf.capacity() >= LARGE {
        return;
    }
    let mut big = spare(1);
    big.extend_from_slice(buf);
    give(std::mem::replace(buf, big));
}

/// A read buffer from this thread's spares when there is one, so a request or a
/// response does not cost a fresh allocation (and its page faults). Buffers are
/// taken when bytes arrive and start small (a head); a body moves its bytes
/// into a large one. Dropping it gives it back. An idle connection holds none.
#[derive(Debug, Default)]
pub struct Buf(Vec<u8>);

impl Buf {
    /// A small buffer.
    pub fn take() -> Buf {
        Buf(spare(0))
    }

    pub fn from_vec(v: Vec<u8>) -> Buf {
        Buf(v)
    }
}

impl std::ops::Deref for Buf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_by_class_and_come_back() {
        let mut b = Vec::new();
        grow(&mut b);
        assert_eq!(b.capacity(), SMALL);
        b.extend_from_slice(b"head");
        grow(&mut b);
        assert_eq!((b.capacity(), &b[..]), (LARGE, &b"head"[..]));
        // The small one went back to the spares and is handed out again.
        let again = spare(0);
        assert_eq!((again.capacity(), again.len()), (SMALL, 0));
        give(b);
        assert_eq!(spare(1).capacity(), LARGE);
        // Odd sizes are freed, not kept.
        give(Vec::with_capacity(100));
        assert!(BUFS.with(|b| {
            b.borrow()
                .iter()
                .all(|v| v.iter().all(|x| class(x.capacity()).is_some()))
        }));
    }
}
