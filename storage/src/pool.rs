//! A bounded pool of I/O threads (nginx's `aio threads`): blocking disk work (reading
//! a cold range into the page cache) runs here, never on a worker of the event loop.
//! One pool per disk, so a slow disk queues only its own reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads taking jobs from a bounded queue.
pub struct IoPool {
    tx: Mutex<Option<SyncSender<Job>>>,
    submitted: Arc<AtomicU64>,
}

impl std::fmt::Debug for IoPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoPool")
            .field("submitted", &self.submitted.load(Ordering::Relaxed))
            .finish()
    }
}

impl IoPool {
    /// Starts `threads` threads named `name` with a queue of `queue` jobs.
    pub fn new(name: &str, threads: usize, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            submitted: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `job`; gives it back when the queue is full (the caller waits and
    /// retries, or gives up).
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        let guard = match self.tx.lock() {
            Ok(g) => g,
            Err(_) => return Err(job),
        };
        let Some(tx) = guard.as_ref() else {
            return Err(job);
        };
        match tx.try_send(job) {
            Ok(()) => {
                self.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// Jobs accepted so far.
    pub fn submitted(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed)
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        // Dropping the sender ends the threads once the queue is drained.
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_jobs_and_refuses_when_full() {
        let pool = IoPool::new("t", 1, 1).unwrap();
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<u32>();
        // The first job occupies the thread, the second fills the queue.
        let d = done_tx.clone();
        pool.try_submit(Box::new(move || {
            block_rx.recv().unwrap();
            d.send(1).unwrap();
        }))
        .ok()
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let d = done_tx.clone();
        pool.try_submit(Box::new(move || d.send(2).unwrap()))
            .ok()
            .unwrap();
        assert!(pool.try_submit(Box::new(|| {})).is_err());
        block_tx.send(()).unwrap();
        assert_eq!(done_rx.recv().unwrap(), 1);
        assert_eq!(done_rx.recv().unwrap(), 2);
        assert_eq!(pool.submitted(), 2);
    }
}
