//! `GET /v1/fine_tuning/jobs/{id}/events?stream=true`: the job's events as Server-Sent Events, oldest
//! first, as they are recorded. Each event carries `id: ftevent-N`, so a client that reconnects with
//! `Last-Event-ID` continues where it left off. The stream ends after the job's last event once the
//! job has finished.
//!
//! Events are read from Postgres (the source of truth): a reconnecting or late client sees exactly
//! what polling `GET …/events` shows, and no event can be delivered that is not stored. A stream reads
//! when its job has something new: a trigger on `job_events` sends `NOTIFY moetune_job_events` with the
//! job id, one `LISTEN` connection per API instance ([`Notifier`]) passes it on to the streams, and an
//! idle stream reads only once every `IDLE_WAKE` (and sends a keep-alive), so a lost notification delays
//! an event, never loses it; while the LISTEN connection is down, streams read every `NO_LISTENER_POLL`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use moetune_types::{JobId, JobStatus};
use serde_json::Value;
use sqlx::PgPool;

use crate::error::ApiError;
use crate::jobs::JobEvent;

/// The longest a stream waits without reading: also the keep-alive period for proxies.
const IDLE_WAKE: Duration = Duration::from_secs(15);
/// How long a stream waits between reads while no LISTEN connection is up.
const NO_LISTENER_POLL: Duration = Duration::from_millis(500);
const BATCH: i64 = 200;
const CHANNEL: &str = "moetune_job_events";

/// What wakes streams.
#[derive(Debug, Clone)]
enum Wake {
    /// This job has a new event.
    Job(std::sync::Arc<str>),
    /// The LISTEN connection was (re)established: notifications may have been missed.
    All,
}

/// One LISTEN connection per API instance, fanning notifications out to the open streams. While it
/// is down, streams poll every `NO_LISTENER_POLL` instead of waiting for a wake-up.
#[derive(Clone)]
pub struct Notifier {
    wakes: tokio::sync::broadcast::Sender<Wake>,
    listening: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Notifier {
    /// Starts listening (reconnecting for as long as the process runs).
    pub fn start(db: PgPool) -> Self {
        let (wakes, _) = tokio::sync::broadcast::channel(1024);
        let notifier = Self { wakes, listening: Default::default() };
        let (sender, listening) = (notifier.wakes.clone(), notifier.listening.clone());
        tokio::spawn(async move {
            loop {
                match listen(&db, &sender, &listening).await {
                    Ok(()) => tracing::warn!("event notifications interrupted; listening again"),
                    Err(e) => {
                        tracing::warn!(error = %e, "event notifications down; streams poll until they are back");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        notifier
    }

    fn listening(&self) -> bool {
        self.listening.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Listens until the connection is lost (Ok) or cannot be made (Err). Streams are woken to read once
/// LISTEN is in place, since anything sent before it was missed.
async fn listen(db: &PgPool, wakes: &tokio::sync::broadcast::Sender<Wake>, listening: &std::sync::atomic::AtomicBool) -> Result<(), sqlx::Error> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut listener = sqlx::postgres::PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    listening.store(true, SeqCst);
    let _ = wakes.send(Wake::All);
    let outcome = loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                let _ = wakes.send(Wake::Job(notification.payload().into()));
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    listening.store(false, SeqCst);
    outcome
}

struct Cursor {
    /// Held for as long as the stream is open (the tenant's cap on open streams).
    _slot: crate::rate_limit::StreamSlot,
    db: PgPool,
    wakes: tokio::sync::broadcast::Receiver<Wake>,
    notifier: Notifier,
    /// Counts the stream's reads of Postgres (exported as a metric).
    reads: prometheus::IntCounter,
    job_id: JobId,
    last_seq: i64,
    /// When the stream last sent something: after `IDLE_WAKE` of silence it sends a keep-alive.
    quiet_since: tokio::time::Instant,
    finished: bool,
}

type Row = (i64, chrono::DateTime<chrono::Utc>, String, String, String, Option<Value>);

impl Cursor {
    async fn next_batch(&self) -> Result<Vec<Row>, sqlx::Error> {
        self.reads.inc();
        sqlx::query_as("SELECT seq, created_at, level, message, type, data FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(&self.job_id)
            .bind(self.last_seq)
            .bind(BATCH)
            .fetch_all(&self.db)
            .await
    }

    async fn job_finished(&self) -> Result<bool, sqlx::Error> {
        self.reads.inc();
        let status: JobStatus = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1").bind(&self.job_id).fetch_one(&self.db).await?;
        Ok(status.is_terminal())
    }

    /// The next chunk to send: a batch of events, a keep-alive, or None when the stream is over.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, actix_web::Error>> {
        loop {
            if self.finished {
                return None;
            }
            // Read the status before the events: a job seen finished has no events after this read.
            let finished = match self.job_finished().await {
                Ok(finished) => finished,
                Err(e) => return Some(Err(ApiError::internal(e).into())),
            };
            let rows = match self.next_batch().await {
                Ok(rows) => rows,
                Err(e) => return Some(Err(ApiError::internal(e).into())),
            };
            if !rows.is_empty() {
                self.quiet_since = tokio::time::Instant::now();
                return Some(Ok(self.render(rows)));
            }
            if finished {
                self.finished = true;
                return Some(Ok(Bytes::from_static(b"event: done\ndata: {}\n\n")));
            }
            if self.quiet_since.elapsed() >= IDLE_WAKE {
                self.quiet_since = tokio::time::Instant::now();
                return Some(Ok(Bytes::from_static(b": keep-alive\n\n")));
            }
            self.wait().await;
        }
    }

    /// Until this job has news, the notifications were interrupted, or it is time to read anyway
    /// (`IDLE_WAKE`, or `NO_LISTENER_POLL` while no LISTEN connection is up).
    async fn wait(&mut self) {
        let limit = if self.notifier.listening() { IDLE_WAKE.saturating_sub(self.quiet_since.elapsed()) } else { NO_LISTENER_POLL };
        let idle = tokio::time::sleep(limit);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                wake = self.wakes.recv() => match wake {
                    Ok(Wake::Job(job)) if *job == *self.job_id.as_str() => return,
                    Ok(Wake::Job(_)) => continue,
                    Ok(Wake::All) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep(NO_LISTENER_POLL).await;
                        return;
                    }
                },
                () = &mut idle => return,
            }
        }
    }

    fn render(&mut self, rows: Vec<Row>) -> Bytes {
        let mut out = String::new();
        for (seq, created_at, level, message, kind, data) in rows {
            self.last_seq = seq;
            let event = JobEvent { id: format!("ftevent-{seq}"), object: "fine_tuning.job.event", created_at: created_at.into(), level, message, kind, data };
            let json = serde_json::to_string(&event).expect("event serializes");
            out.push_str(&format!("id: ftevent-{seq}\nevent: {}\ndata: {json}\n\n", event.kind));
        }
        Bytes::from(out)
    }
}

/// The SSE body for a job the caller owns, continuing after `last_seq` (0 = from the first event).
pub fn stream(
    db: PgPool,
    notifier: &Notifier,
    reads: prometheus::IntCounter,
    job_id: JobId,
    last_seq: i64,
    slot: crate::rate_limit::StreamSlot,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let cursor = Cursor {
        _slot: slot,
        db,
        wakes: notifier.wakes.subscribe(),
        notifier: notifier.clone(),
        reads,
        job_id,
        last_seq,
        quiet_since: tokio::time::Instant::now(),
        finished: false,
    };
    futures_util::stream::unfold(cursor, |mut cursor| async move { cursor.next_chunk().await.map(|chunk| (chunk, cursor)) })
}
