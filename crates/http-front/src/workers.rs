//! The worker pool: threads that run the handler on complete requests and hand the responses
//! back to the event loop that owns the connection.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::HttpError;
use crate::event_loop::{Completion, LoopHandle};
use crate::request::Request;
use crate::response::Response;
use crate::server::{Handler, ServerStats};

/// A complete request waiting for a worker.
pub(crate) struct Job {
    /// The event loop that owns the connection.
    pub(crate) owner: usize,
    /// The connection, as the loop knows it.
    pub(crate) slot: crate::deadlines::SlotId,
    /// The request.
    pub(crate) request: Request,
    /// When it was queued.
    pub(crate) queued: Instant,
    /// Set by the loop when the client went away (reset or closed both ways): the request is
    /// then not run.
    pub(crate) cancelled: Arc<AtomicBool>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// The shared job queue and the threads serving it.
pub(crate) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
}

impl Pool {
    pub(crate) fn new(capacity: usize) -> Arc<Pool> {
        Arc::new(Pool {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            capacity,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`; `false` when the queue is full (or closed).
    pub(crate) fn submit(&self, job: Job) -> bool {
        let mut queue = self.lock();
        if queue.closed || queue.jobs.len() >= self.capacity {
            return false;
        }
        queue.jobs.push_back(job);
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// Lets the workers finish the queued jobs and then end.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn next(&self) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return Some(job);
            }
            if queue.closed {
                return None;
            }
            queue = self
                .ready
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Starts `count` workers running `handler`; each response goes to the loop in `loops`
    /// that owns the connection.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        self: &Arc<Self>,
        count: usize,
        stack_size: Option<usize>,
        queue_timeout: Duration,
        handler: Arc<dyn Handler>,
        loops: Arc<Vec<LoopHandle>>,
        stats: Arc<ServerStats>,
    ) -> std::io::Result<Vec<JoinHandle<()>>> {
        (0..count.max(1))
            .map(|index| {
                let mut builder = thread::Builder::new().name(format!("http-worker-{index}"));
                if let Some(size) = stack_size {
                    builder = builder.stack_size(size);
                }
                let pool = Arc::clone(self);
                let handler = Arc::clone(&handler);
                let loops = Arc::clone(&loops);
                let stats = Arc::clone(&stats);
                builder.spawn(move || {
                    while let Some(job) = pool.next() {
                        let response = if job.cancelled.load(Ordering::Acquire) {
                            stats.cancelled.fetch_add(1, Ordering::Relaxed);
                            HttpError::ServiceUnavailable.to_response()
                        } else if job.queued.elapsed() > queue_timeout {
                            stats.queue_expired.fetch_add(1, Ordering::Relaxed);
                            HttpError::ServiceUnavailable.to_response()
                        } else {
                            stats.busy_workers.fetch_add(1, Ordering::Relaxed);
                            let response = run_handler(handler.as_ref(), &job.request);
                            stats.busy_workers.fetch_sub(1, Ordering::Relaxed);
                            response
                        };
                        if let Some(owner) = loops.get(job.owner) {
                            owner.complete(Completion {
                                slot: job.slot,
                                response,
                            });
                        }
                    }
                })
            })
            .collect()
    }
}

/// Runs the handler; a panic becomes a 500 for this request where the platform can unwind
/// (natively). Builds that abort on panic (hermit) end the process instead: code reachable from
/// requests must not panic there.
pub(crate) fn run_handler(handler: &dyn Handler, request: &Request) -> Response {
    match catch_unwind(AssertUnwindSafe(|| handler.handle(request))) {
        Ok(response) => response,
        Err(_) => {
            log::error!(
                "http: handler panicked on {} {}",
                request.method,
                request.path
            );
            HttpError::Internal("handler panicked".to_string())
                .to_response()
                .with_header("Connection", "close")
        }
    }
}
