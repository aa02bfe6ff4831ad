//! Dynamic batching for the gateway: concurrent requests are classified together on one
//! classifier thread. The first request of a batch waits at most `window` for others to join;
//! requests that queued while the previous batch ran join the next one at once.

use super::{Classification, ClassifierError, RouterModel};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How the batcher collects requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    /// Longest a request waits for others to join its batch.
    pub window: Duration,
    /// Most requests in one batch.
    pub max_batch: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            window: Duration::from_micros(500),
            max_batch: 16,
        }
    }
}

struct Job {
    text: String,
    arrived: Instant,
    reply: oneshot::Sender<Result<Classification, String>>,
}

/// A handle to the classifier thread; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the classifier thread.
    pub fn start(model: Arc<dyn RouterModel>, settings: BatchSettings) -> Batcher {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("classifier".into())
            .spawn(move || run(model.as_ref(), &rx, settings));
        if let Err(e) = spawned {
            tracing::error!("cannot start the classifier thread: {e}");
        }
        Batcher { tx }
    }

    /// Classifies one text (waits for its batch).
    pub async fn classify(&self, text: String) -> Result<Classification, ClassifierError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                text,
                arrived: Instant::now(),
                reply,
            })
            .map_err(|_| ClassifierError::Closed)?;
        match rx.await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(ClassifierError::Batch(e)),
            Err(_) => Err(ClassifierError::Closed),
        }
    }
}

fn run(model: &dyn RouterModel, rx: &mpsc::Receiver<Job>, settings: BatchSettings) {
    let max = settings.max_batch.max(1);
    while let Ok(first) = rx.recv() {
        let deadline = first.arrived + settings.window;
        let mut jobs = vec![first];
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        // Requests whose client went away are not classified.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let texts: Vec<&str> = jobs.iter().map(|j| j.text.as_str()).collect();
        match model.classify(&texts) {
            Ok(results) => {
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records batch sizes; scores each text by its length.
    struct Recorder(Mutex<Vec<usize>>);

    impl RouterModel for Recorder {
        fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifierError> {
            self.0.lock().map(|mut v| v.push(texts.len())).ok();
            Ok(texts
                .iter()
                .map(|t| Classification {
                    categories: vec![("other".into(), 1.0)],
                    strong_score: t.len() as f32 / 100.0,
                    tokens: t.len(),
                    truncated: false,
                    strong_by_model: vec![],
                    strong_parts: vec![],
                })
                .collect())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_share_batches_and_get_their_own_answers() {
        let rec = Arc::new(Recorder(Mutex::new(vec![])));
        let b = Batcher::start(
            rec.clone(),
            BatchSettings {
                window: Duration::from_millis(50),
                max_batch: 8,
            },
        );
        let tasks: Vec<_> = (1..=8)
            .map(|n| {
                let b = b.clone();
                tokio::spawn(async move { (n, b.classify("x".repeat(n)).await) })
            })
            .collect();
        for t in tasks {
            let (n, r) = t.await.expect("task");
            assert_eq!(r.expect("classified").tokens, n);
        }
        let sizes = rec.0.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.len() < 8, "some requests were batched: {sizes:?}");
    }
}
