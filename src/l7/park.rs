//! Idle HTTP client connections parked outside the runtime, per worker thread.
//!
//! A connection waiting for its next request (or a new one for its first) costs,
//! as a task, the task cell, its wait state and tokio's registration of the
//! socket: about 1.5 KiB. Once it has been silent for `global.idle_park_after`
//! it leaves tokio: the socket moves into the thread's own epoll set, with what
//! is needed to carry on (addresses, deadline, the connection's guard) in a slot
//! of about 200 bytes, and its task ends. One task per thread waits on that epoll
//! set (itself registered with tokio). A socket that turns readable gets a new
//! task that goes on where the old one stopped; one that was reset is closed; a
//! deadline that passes closes the connection, with a 408 if no request came yet.
//!
//! Only on current-thread runtimes (the per-core default), where every task of a
//! connection runs on the thread that owns the slot.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::session::{self, Idle};
use crate::net::Conn;

/// Events taken from the park's epoll set per wake-up.
const BATCH: usize = 64;

/// A parked connection: everything `session::run` needs to go on.
pub struct Parked {
    stream: std::net::TcpStream,
    idle: Idle,
    conn: Conn,
}

struct Slot {
    /// Bumped whenever the slot is emptied, so stale timers and events are ignored.
    generation: u32,
    parked: Option<Parked>,
}

struct Lot {
    /// Shared with the task's `AsyncFd`, so it stays open while either holds it.
    epoll: Arc<OwnedFd>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    /// (deadline, slot, generation); entries of resumed connections go stale and
    /// are skipped (or swept once they outnumber the live ones).
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Tells the waiting task that an earlier deadline arrived.
    wake: Arc<Notify>,
    /// The deadline the task sleeps until, if any.
    armed: Option<Instant>,
    task: JoinHandle<()>,
    /// The daemon is force-stopping: nothing more is parked.
    stopped: bool,
}

thread_local! {
    static LOT: RefCell<Option<Lot>> = const { RefCell::new(None) };
}

fn key(slot: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(slot)
}

/// Park `stream`; its task should end. On failure (no epoll set, the daemon is
/// stopping) everything comes back to the caller, which keeps serving.
pub fn park(
    stream: std::net::TcpStream,
    idle: Idle,
    conn: Conn,
) -> Result<(), Box<(std::net::TcpStream, Idle, Conn)>> {
    LOT.with(|cell| {
        let mut lot = cell.borrow_mut();
        if lot
            .as_ref()
            .is_none_or(|l| l.task.is_finished() && !l.stopped)
        {
            // First use on this thread, or the runtime that ran the task is gone
            // (then its parked connections go with it).
            *lot = Lot::start(conn.opts.force_stop.clone(), conn.opts.soft_stop.clone()).ok();
        }
        // After a graceful stop a connection that served a request is not
        // parked: its task sees the stop and closes it.
        let closing = !idle.first && conn.opts.soft_stop.has_changed().unwrap_or(false);
        match lot.as_mut() {
            Some(l) if !l.stopped && !closing => l.insert(stream, idle, conn),
            _ => Err(Box::new((stream, idle, conn))),
        }
    })
}

impl Lot {
    fn start(
        force_stop: watch::Receiver<bool>,
        soft_stop: watch::Receiver<bool>,
    ) -> io::Result<Lot> {
        let epoll = Arc::new(epoll::create(CreateFlags::CLOEXEC)?);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(watch_lot(
            epoll.clone(),
            wake.clone(),
            force_stop,
            soft_stop,
        ));
        Ok(Lot {
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            timers: BinaryHeap::new(),
            wake,
            armed: None,
            task,
            stopped: false,
        })
    }

    fn insert(
        &mut self,
        stream: std::net::TcpStream,
        idle: Idle,
        conn: Conn,
    ) -> Result<(), Box<(std::net::TcpStream, Idle, Conn)>> {
        if self.live == 0 && self.slots.len() > 1024 {
            // Nothing parked after a burst: give the slots' memory back. Every
            // timer is stale now, so they go too (a new slot 0 must not match
            // an old timer's slot and generation).
            self.slots = Vec::new();
            self.free = Vec::new();
            self.timers = BinaryHeap::new();
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let Ok(s) = u32::try_from(self.slots.len()) else {
                    return Err(Box::new((stream, idle, conn)));
                };
                self.slots.push(Slot {
                    generation: 0,
                    parked: None,
                });
                s
            }
        };
        let generation = self.slots[slot as usize].generation;
        let added = epoll::add(
            &*self.epoll,
            &stream,
            EventData::new_u64(key(slot, generation)),
            EventFlags::IN | EventFlags::RDHUP,
        );
        if added.is_err() {
            self.free.push(slot);
            return Err(Box::new((stream, idle, conn)));
        }
        let deadline = idle.deadline;
        let counters = &conn.front().counters;
        counters.http_idle_parked.inc();
        counters.http_idle_parks.inc();
        self.slots[slot as usize].parked = Some(Parked { stream, idle, conn });
        self.live += 1;
        if self.timers.len() > 2 * self.live + 64 {
            let slots = &self.slots;
            self.timers
                .retain(|Reverse((_, s, g))| slots[*s as usize].generation == *g);
        }
        self.timers.push(Reverse((deadline, slot, generation)));
        if self.armed.is_none_or(|a| deadline < a) {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Empty `slot` if it still holds `generation`, taking the socket out of the set.
    fn take(&mut self, slot: u32, generation: u32) -> Option<Parked> {
        let s = self.slots.get_mut(slot as usize)?;
        if s.generation != generation {
            return None;
        }
        let p = s.parked.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        self.live -= 1;
        let _ = epoll::delete(&*self.epoll, &p.stream);
        p.conn.front().counters.http_idle_parked.dec();
        Some(p)
    }

    /// The earliest live deadline (stale timers on top are dropped).
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, s, g))) = self.timers.peek().copied() {
            let live = self
                .slots
                .get(s as usize)
                .is_some_and(|x| x.generation == g && x.parked.is_some());
            if live {
                self.armed = Some(at);
                return Some(at);
            }
            self.timers.pop();
        }
        self.armed = None;
        None
    }

    /// A connection whose deadline is at or before `now`, if any.
    fn pop_expired(&mut self, now: Instant) -> Option<Option<Parked>> {
        let Reverse((at, s, g)) = *self.timers.peek()?;
        if at > now {
            return None;
        }
        self.timers.pop();
        Some(self.take(s, g))
    }

    /// Take out every parked connection `pick` chooses.
    fn take_where(&mut self, pick: impl Fn(&Parked) -> bool) -> Vec<Parked> {
        let mut out = Vec::new();
        for (i, slot) in (0u32..).zip(0..self.slots.len()) {
            let s = &self.slots[slot];
            let g = s.generation;
            if s.parked.as_ref().is_some_and(&pick)
                && let Some(p) = self.take(i, g)
            {
                out.push(p);
            }
        }
        out
    }

    /// The graceful stop: the connections that served a request close; those
    /// still waiting for their first stay.
    fn close_served(&mut self) -> Vec<Parked> {
        self.take_where(|p| !p.idle.first)
    }

    fn stop(&mut self) -> Vec<Parked> {
        self.stopped = true;
        self.timers.clear();
        self.take_where(|_| true)
    }
}

fn with_lot<R>(f: impl FnOnce(&mut Lot) -> R) -> Option<R> {
    LOT.with(|cell| cell.borrow_mut().as_mut().map(f))
}

/// The epoll descriptor as tokio sees it.
struct EpollFd(Arc<OwnedFd>);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The park's one task per thread: resume readable connections, expire the
/// overdue ones, close those that served a request on a graceful stop and all
/// of them on a forced stop.
#[allow(unsafe_code)]
async fn watch_lot(
    epoll: Arc<OwnedFd>,
    wake: Arc<Notify>,
    mut force_stop: watch::Receiver<bool>,
    mut soft_stop: watch::Receiver<bool>,
) {
    // SAFETY: the descriptor is open and stays so while `EpollFd` holds its
    // Arc; nobody closes it behind tokio's back (the only unsafe left: tokio
    // asks its caller to vouch for the descriptor's lifetime).
    let afd =
        unsafe { AsyncFd::register_with_interest(EpollFd(epoll.clone()), Interest::READABLE) };
    let Ok(afd) = afd else {
        let _ = with_lot(Lot::stop);
        return;
    };
    let mut soft_done = false;
    loop {
        let next = with_lot(Lot::next_deadline).flatten();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = afd.readable() => match r {
                Ok(mut guard) => {
                    if !resume_ready(&epoll) {
                        guard.clear_ready();
                    }
                }
                Err(_) => break,
            },
            () = sleep => expire(Instant::now()),
            () = wake.notified() => {}
            () = crate::shutdown::stopped(&mut soft_stop), if !soft_done => {
                soft_done = true;
                // Dropped outside the borrow: each drop closes a socket.
                let served = with_lot(Lot::close_served).unwrap_or_default();
                drop(served);
            }
            true = crate::shutdown::fired(&mut force_stop) => break,
        }
    }
    // Dropped outside the borrow: each drop closes a socket and counts it.
    let all = with_lot(Lot::stop).unwrap_or_default();
    drop(all);
}

/// Take what the epoll set reports and give each connection a task again (or
/// close it if it was reset). True if the batch was full: more may be waiting.
fn resume_ready(epoll: &OwnedFd) -> bool {
    let none = Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    };
    let mut events = [none; BATCH];
    // Timeout 0: never blocks (tokio said the set is readable).
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let n = match epoll::wait(epoll, &mut events, Some(&now)) {
        Ok(n) => n,
        // Interrupted: look again (keeping tokio's readiness, which is
        // edge-triggered and would not report these events a second time).
        Err(e) => return e == rustix::io::Errno::INTR,
    };
    for ev in &events[..n] {
        // Copied out: the kernel's event struct is packed.
        let (k, flags) = (ev.data.u64(), ev.flags);
        let Some(Some(p)) = with_lot(|l| l.take(k as u32, (k >> 32) as u32)) else {
            continue;
        };
        if flags.intersects(EventFlags::ERR | EventFlags::HUP) {
            continue;
        }
        resume(p);
    }
    n == BATCH
}

fn resume(p: Parked) {
    let Parked { stream, idle, conn } = p;
    if let Ok(s) = tokio::net::TcpStream::from_std(stream) {
        tokio::spawn(session::run(s, idle, conn));
    }
}

fn expire(now: Instant) {
    while let Some(next) = with_lot(|l| l.pop_expired(now)).flatten() {
        let Some(p) = next else { continue };
        if p.idle.first {
            // Nothing arrived within http_request: 408, as an unparked wait does.
            // The reply is small and the socket idle, so one non-blocking write
            // suffices; if it does not fit, the client is gone anyway.
            let front = p.conn.front();
            front.counters.http_request_timeouts.inc();
            let _ = (&p.stream).write(&super::reply::timeout_reply(front));
        }
    }
}
