//! An I/O thread: waits for socket readiness with `mio`, drives its connections, accepts new
//! ones (the loop that owns the listener), hands complete requests to the worker pool and writes
//! the responses the workers send back. Idle and slow connections cost a table slot and their
//! buffers here, never a thread.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::connection::{Connection, Context, Step};
use crate::deadlines::{Deadline, DeadlineQueue, DeadlineTable, SlotId};
use crate::error::HttpError;
use crate::request::Request;
use crate::response::{Response, http_date};
use crate::server::Shared;
use crate::workers::{Job, run_handler};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// How long the accepting loop waits before it tries again after `accept` failed (out of
/// descriptors or memory).
const ACCEPT_RETRY: Duration = Duration::from_millis(5);

/// How long a loop waits for its connections to finish once the server shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A response from a worker for the connection in `slot`.
pub(crate) struct Completion {
    pub(crate) slot: SlotId,
    pub(crate) response: Response,
}

#[derive(Default)]
struct Inbox {
    streams: Vec<TcpStream>,
    completions: Vec<Completion>,
}

/// What other threads use to reach a loop: its inbox and its waker.
pub(crate) struct LoopHandle {
    inbox: Mutex<Inbox>,
    waker: Waker,
}

impl LoopHandle {
    fn push(&self, add: impl FnOnce(&mut Inbox)) {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = inbox.streams.is_empty() && inbox.completions.is_empty();
        add(&mut inbox);
        drop(inbox);
        if was_empty {
            self.wake();
        }
    }

    /// Hands a worker's response to the loop.
    pub(crate) fn complete(&self, completion: Completion) {
        self.push(|inbox| inbox.completions.push(completion));
    }

    /// Gives the loop a connection accepted by another loop.
    fn adopt(&self, stream: TcpStream) {
        self.push(|inbox| inbox.streams.push(stream));
    }

    /// Whether something waits in the inbox.
    fn has_pending(&self) -> bool {
        let inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        !inbox.streams.is_empty() || !inbox.completions.is_empty()
    }

    /// Makes the loop look at its inbox and the shutdown flag.
    pub(crate) fn wake(&self) {
        if let Err(error) = self.waker.wake() {
            log::warn!("http: cannot wake an event loop: {error}");
        }
    }
}

/// A loop's poller, created before the handles that reach it.
pub(crate) struct LoopPoll {
    poll: Poll,
}

impl LoopPoll {
    pub(crate) fn new() -> io::Result<(LoopPoll, LoopHandle)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let handle = LoopHandle {
            inbox: Mutex::new(Inbox::default()),
            waker,
        };
        Ok((LoopPoll { poll }, handle))
    }
}

struct Slot {
    generation: u32,
    conn: Option<Connection>,
    /// Whether the connection counts against `max_connections` (refused ones do not).
    counted: bool,
}

/// The connections of one loop, indexed by slot.
#[derive(Default)]
struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Slots {
    fn insert(&mut self, conn: Connection, counted: bool) -> SlotId {
        self.live += 1;
        if let Some(index) = self.free.pop()
            && let Some(slot) = self.slots.get_mut(index as usize)
        {
            slot.conn = Some(conn);
            slot.counted = counted;
            return SlotId {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            generation: 0,
            conn: Some(conn),
            counted,
        });
        SlotId {
            index,
            generation: 0,
        }
    }

    fn get_mut(&mut self, id: SlotId) -> Option<&mut Connection> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_mut()
    }

    /// Removes the connection; returns it and whether it was counted.
    fn remove(&mut self, id: SlotId) -> Option<(Connection, bool)> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let conn = slot.conn.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.live -= 1;
        Some((conn, slot.counted))
    }

    fn ids(&self) -> Vec<SlotId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.conn.is_some())
            .map(|(index, slot)| SlotId {
                index: index as u32,
                generation: slot.generation,
            })
            .collect()
    }
}

impl DeadlineTable for Slots {
    fn deadline_mut(&mut self, slot: SlotId) -> Option<&mut Deadline> {
        self.get_mut(slot).map(|conn| &mut conn.deadline)
    }
}

fn token_of(id: SlotId) -> Token {
    Token((id.generation as usize) << 32 | id.index as usize)
}

fn slot_of(token: Token) -> SlotId {
    SlotId {
        index: (token.0 & 0xffff_ffff) as u32,
        generation: (token.0 >> 32) as u32,
    }
}

/// The `Date` header value, formatted once per second.
#[derive(Default)]
struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    fn get(&mut self) -> &str {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = http_date(second);
        }
        &self.text
    }
}

/// One I/O thread's state.
pub(crate) struct EventLoop {
    id: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    slots: Slots,
    deadlines: DeadlineQueue,
    shared: Arc<Shared>,
    next_owner: usize,
    scratch: Vec<u8>,
    date: DateCache,
    /// When to call `accept` again after it failed.
    accept_retry: Option<Instant>,
    /// `accept` failed last time (its failures are logged once until one succeeds).
    accept_failing: bool,
}

impl EventLoop {
    pub(crate) fn new(
        id: usize,
        poll: LoopPoll,
        mut listener: Option<TcpListener>,
        shared: Arc<Shared>,
    ) -> io::Result<EventLoop> {
        let poll = poll.poll;
        if let Some(listener) = &mut listener {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        Ok(EventLoop {
            id,
            poll,
            listener,
            slots: Slots::default(),
            deadlines: DeadlineQueue::default(),
            shared,
            next_owner: id,
            scratch: vec![0; 16 * 1024],
            date: DateCache::default(),
            accept_retry: None,
            accept_failing: false,
        })
    }

    /// Runs until the server shuts down and this loop's connections are done.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut shutdown_started: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut timeout = self
                .deadlines
                .next_wake()
                .into_iter()
                .chain(self.accept_retry)
                .min()
                .map(|at| at.saturating_duration_since(now));
            if shutdown_started.is_some() {
                timeout = Some(timeout.map_or(Duration::from_millis(100), |t| {
                    t.min(Duration::from_millis(100))
                }));
            }
            // mio's poll(2) backend (hermit) interrupts its own wait on every (re)registration by
            // writing and then draining the eventfd its `Waker` uses, which can swallow a wake
            // from a worker that came just before. So look at the inbox right before sleeping,
            // after the last registration: what is there now is handled at once, and a wake that
            // comes later reaches the poll.
            if self
                .shared
                .loops
                .get(self.id)
                .is_some_and(LoopHandle::has_pending)
            {
                timeout = Some(Duration::ZERO);
            }
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    log::error!("http: poll failed: {error}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    token => {
                        let slot = slot_of(token);
                        if let Some(conn) = self.slots.get_mut(slot) {
                            let hung_up = event.is_error()
                                || event.is_read_closed()
                                || event.is_write_closed();
                            if event.is_error()
                                || (event.is_read_closed() && event.is_write_closed())
                            {
                                conn.client_gone();
                            }
                            conn.readable |= event.is_readable() || hung_up;
                            conn.writable |= event.is_writable() || hung_up;
                            self.drive(slot);
                        }
                    }
                }
            }
            if self.accept_retry.is_some_and(|at| at <= Instant::now()) {
                self.accept_retry = None;
                self.accept_all();
            }
            self.take_inbox();
            self.expire_deadlines();
            if self.shared.shutdown.load(Ordering::SeqCst) {
                let started = *shutdown_started.get_or_insert_with(|| {
                    self.begin_shutdown();
                    Instant::now()
                });
                if self.slots.live == 0 || started.elapsed() > SHUTDOWN_GRACE {
                    break;
                }
            }
        }
        for id in self.slots.ids() {
            self.close(id);
        }
    }

    fn context(&mut self) -> (Context<'_>, &mut Slots) {
        let config = &self.shared.config;
        let date = config.send_date.then(|| self.date.get());
        (
            Context {
                config,
                now: Instant::now(),
                date,
                scratch: &mut self.scratch,
                shutting_down: self.shared.shutdown.load(Ordering::Relaxed),
                stats: &self.shared.stats,
                budget: &self.shared.stats.buffers,
            },
            &mut self.slots,
        )
    }

    /// Drives the connection in `slot` until it waits, answering inline requests and handing
    /// the others to the workers.
    fn drive(&mut self, slot: SlotId) {
        let step = {
            let (mut cx, slots) = self.context();
            match slots.get_mut(slot) {
                Some(conn) => conn.drive(&mut cx),
                None => return,
            }
        };
        self.after(slot, step);
    }

    /// Acts on what a connection's drive ended with.
    fn after(&mut self, slot: SlotId, mut step: Step) {
        loop {
            match step {
                Step::Wait => break,
                Step::Close => {
                    self.close(slot);
                    return;
                }
                Step::Abort => {
                    if let Some(conn) = self.slots.get_mut(slot) {
                        conn.discard_unsent();
                    }
                    self.close(slot);
                    return;
                }
                Step::Dispatch(request) => match self.dispatch(slot, request) {
                    Some(response) => step = self.respond(slot, &response),
                    None => break,
                },
            }
        }
        self.rearm(slot);
    }

    /// Answers `request` here when the handler says it is cheap; else queues it for a worker.
    /// Returns the response if there already is one.
    fn dispatch(&mut self, slot: SlotId, request: Request) -> Option<Response> {
        let stats = &self.shared.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let handler = &self.shared.handler;
        if handler.runs_inline(&request) {
            return Some(run_handler(handler.as_ref(), &request));
        }
        // The connection is gone: nothing to answer.
        let cancelled = self.slots.get_mut(slot).map(Connection::cancel_flag)?;
        let job = Job {
            owner: self.id,
            slot,
            request,
            queued: Instant::now(),
            cancelled,
        };
        if self.shared.pool.submit(job) {
            return None;
        }
        stats.queue_full.fetch_add(1, Ordering::Relaxed);
        Some(HttpError::ServiceUnavailable.to_response())
    }

    fn respond(&mut self, slot: SlotId, response: &Response) -> Step {
        let (mut cx, slots) = self.context();
        match slots.get_mut(slot) {
            Some(conn) => {
                conn.respond(response, &cx);
                conn.drive(&mut cx)
            }
            None => Step::Wait,
        }
    }

    /// Re-arms the connection's deadline for the phase it is in now.
    fn rearm(&mut self, slot: SlotId) {
        let config = &self.shared.config;
        let Some(conn) = self.slots.get_mut(slot) else {
            return;
        };
        let due = conn.due(config);
        self.deadlines.set(slot, &mut conn.deadline, due);
    }

    fn close(&mut self, slot: SlotId) {
        if let Some((mut conn, counted)) = self.slots.remove(slot) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            conn.release_buffers(&self.shared.stats.buffers);
            if counted {
                self.shared.open.fetch_sub(1, Ordering::SeqCst);
            } else {
                self.shared.refusing.fetch_sub(1, Ordering::SeqCst);
            }
            drop(conn);
        }
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    self.accept_failing = false;
                    self.admit(stream);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of descriptors or memory: try again shortly (the listener may not
                    // signal again for connections already waiting), serving the others
                    // meanwhile.
                    if !std::mem::replace(&mut self.accept_failing, true) {
                        log::warn!("http: accept failed: {error}");
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Serves a new connection here or on another loop, or refuses it when the server is full.
    fn admit(&mut self, stream: TcpStream) {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        if config.nodelay {
            let _ = stream.set_nodelay(true);
        }
        if shared.open.fetch_add(1, Ordering::SeqCst) >= config.max_connections {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            shared
                .stats
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            // Refused connections linger briefly to deliver their 503; they are bounded too.
            if shared.refusing.fetch_add(1, Ordering::SeqCst) >= config.max_connections / 4 + 16 {
                shared.refusing.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let date = config.send_date.then(|| self.date.get().to_string());
            let conn = Connection::refuse(
                stream,
                &HttpError::ServiceUnavailable,
                config,
                Instant::now(),
                date.as_deref(),
            );
            self.register(conn, false);
            return;
        }
        shared
            .stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let owner = self.next_owner % shared.loops.len().max(1);
        self.next_owner = self.next_owner.wrapping_add(1);
        match shared.loops.get(owner) {
            Some(handle) if owner != self.id => handle.adopt(stream),
            _ => {
                let conn = Connection::new(stream, config, Instant::now());
                self.register(conn, true);
            }
        }
    }

    fn register(&mut self, conn: Connection, counted: bool) {
        let slot = self.slots.insert(conn, counted);
        let registered = match self.slots.get_mut(slot) {
            Some(conn) => self.poll.registry().register(
                &mut conn.stream,
                token_of(slot),
                Interest::READABLE | Interest::WRITABLE,
            ),
            None => return,
        };
        match registered {
            Ok(()) => self.drive(slot),
            Err(error) => {
                log::warn!("http: cannot watch a connection: {error}");
                self.close(slot);
            }
        }
    }

    fn take_inbox(&mut self) {
        let Some(handle) = self.shared.loops.get(self.id) else {
            return;
        };
        let inbox = {
            let mut inbox = handle.inbox.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *inbox)
        };
        for stream in inbox.streams {
            let conn = Connection::new(stream, &self.shared.config, Instant::now());
            self.register(conn, true);
        }
        for Completion { slot, response } in inbox.completions {
            let step = self.respond(slot, &response);
            self.after(slot, step);
        }
    }

    fn expire_deadlines(&mut self) {
        let now = Instant::now();
        for slot in self.deadlines.expired(now, &mut self.slots) {
            let step = {
                let (mut cx, slots) = self.context();
                match slots.get_mut(slot) {
                    Some(conn) => conn.expire(&mut cx),
                    None => continue,
                }
            };
            self.after(slot, step);
        }
    }

    /// Stops accepting and closes the connections that wait for a request.
    fn begin_shutdown(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for id in self.slots.ids() {
            if self.slots.get_mut(id).is_some_and(|conn| conn.is_waiting()) {
                self.close(id);
            }
        }
    }
}
