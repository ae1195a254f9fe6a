//! One runner's part in a job trained by a gang of runners (`world_size` > 1).
//!
//! The queue picks the whole gang in one step (`queue.lua`, `claim`): the claiming runner is rank 0,
//! the others were waiting for work and take up the job with `join`. Rank 0 serves the gang's c10d
//! rendezvous store on a port the system picks and writes `"{attempt} {host}:{port}"` into the gang's
//! record in Redis; the others wait for that note (of their own attempt) and connect. From there the
//! ranks train as [`crate::train::parallel`] describes; only rank 0 reports events and exports.
//!
//! When the gang breaks, each rank sees a failed collective ([`PeerLost`]). A rank whose own work
//! failed first writes its error into the gang's record (`error:{rank}`), then leaves the group, so
//! rank 0 fails the job with that error; with no such note a rank was lost (its runner died or could
//! not be reached), and rank 0 hands the job back to resume from its latest checkpoint on a new gang.
//! If rank 0 itself is lost, the scheduler's reconciler requeues the job when its heartbeat stops.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use moetune_c10d::{Rendezvous, Store};
use moetune_domain::JobQueue;
use moetune_types::{JobId, RunnerId};
use sha2::Digest;

use crate::train::parallel::{is_peer_lost, DataParallel, PeerLost};

/// This runner's place in a job's gang.
#[derive(Debug, Clone)]
pub struct Seat {
    pub rank: usize,
    /// The gang's runners by rank, rank 0 first.
    pub ranks: Vec<RunnerId>,
    /// Where the others reach this runner (its rendezvous store when rank 0, its Gloo connections).
    pub address: String,
    /// How long to wait for the gang to form, and for each collective.
    pub timeout: Duration,
}

/// The gang-record field where rank `rank` leaves the error it failed with.
pub fn error_field(rank: usize) -> String {
    format!("error:{rank}")
}

/// The newest checkpoint rank 0 reported (stage, step), for the hand-back after a lost rank.
#[derive(Debug, Clone, Default)]
pub struct LatestCheckpoint(Arc<Mutex<Option<(String, u32)>>>);

impl LatestCheckpoint {
    pub fn set(&self, stage: &str, step: u32) {
        *self.0.lock().expect("not poisoned") = Some((stage.to_string(), step));
    }

    pub fn get(&self) -> Option<(String, u32)> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// A rank about to train: joins the gang's process groups, trains, and on failure of its own leaves
/// its error for rank 0 before it leaves the group.
pub struct Member {
    pub seat: Seat,
    pub queue: JobQueue,
    pub job_id: JobId,
    pub attempt: i32,
}

impl Member {
    /// Runs `train` as this rank (on the blocking thread; `handle` reaches Redis).
    pub fn train<T>(self, handle: &tokio::runtime::Handle, device: tch::Device, train: impl FnOnce(&DataParallel) -> anyhow::Result<T>) -> anyhow::Result<T> {
        match self.seat.rank {
            0 => self.wait_for_members(handle)?,
            rank => {
                handle.block_on(self.queue.set_gang_note(&self.job_id, &format!("ready:{rank}"), &self.attempt.to_string()))?;
            }
        }
        let parallel = self.join(handle, device)?;
        let result = train(&parallel);
        if let Err(e) = &result {
            let stopped = e.downcast_ref::<crate::train::Cancelled>().is_some() || e.downcast_ref::<crate::train::Checkpointed>().is_some();
            if self.seat.rank != 0 && !stopped && !is_peer_lost(e) {
                let message = moetune_types::text::for_tenants(&format!("{e:#}"));
                if let Err(note) = handle.block_on(self.queue.set_gang_note(&self.job_id, &error_field(self.seat.rank), &message)) {
                    tracing::warn!(error = %note, "could not leave this rank's error for rank 0");
                }
            }
        }
        // Leaving the group (dropping it) is what tells the other ranks.
        drop(parallel);
        result
    }

    /// Joins the gang: rank 0 serves the rendezvous and publishes where; the others wait for that and
    /// connect. Then the ranks check they are running the same attempt of the same job.
    fn join(&self, handle: &tokio::runtime::Handle, device: tch::Device) -> anyhow::Result<DataParallel> {
        let seat = &self.seat;
        let world = seat.ranks.len();
        let rendezvous = |host: String, port: u16| Rendezvous {
            host,
            port,
            rank: seat.rank,
            world_size: world,
            timeout: seat.timeout,
            prefix: format!("{}/{}", self.job_id, self.attempt),
            gloo_host: Some(seat.address.clone()),
        };
        let parallel = if seat.rank == 0 {
            // A runner that cannot serve (a wrong `address`) hands the job to another gang.
            let store = Store::serve(&seat.address, 0, world, seat.timeout).context(PeerLost).with_context(|| format!("serving the gang's rendezvous at {} (runner setting `address`)", seat.address))?;
            let note = format!("{} {}:{}", self.attempt, seat.address, store.port());
            let published = handle.block_on(self.queue.set_gang_note(&self.job_id, "rendezvous", &note))?;
            if !published {
                return Err(anyhow::Error::new(PeerLost).context("the gang was dissolved before it formed"));
            }
            DataParallel::join_store(&store, &rendezvous(seat.address.clone(), store.port()), device)?
        } else {
            let (host, port) = self.rank_zero_address(handle)?;
            DataParallel::join(&rendezvous(host, port), device)?
        };
        parallel.check_same_job(fingerprint(&self.job_id, self.attempt))?;
        Ok(parallel)
    }

    /// Rank 0, before it serves the rendezvous: waits until every other rank has its data and model
    /// (its `ready:{rank}` note), so that the group's own timeout covers only connecting. Gives up
    /// early when a rank failed or left (its note), when the gang was dissolved, and when the job was
    /// cancelled or paused meanwhile.
    fn wait_for_members(&self, handle: &tokio::runtime::Handle) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.seat.timeout;
        let attempt = self.attempt.to_string();
        let others = 1..self.seat.ranks.len();
        let fields: Vec<String> = others.clone().flat_map(|r| [format!("ready:{r}"), error_field(r), format!("left:{r}")]).collect();
        loop {
            let notes = handle.block_on(self.queue.gang_notes(&self.job_id, &fields))?;
            let Some(notes) = notes else {
                return Err(anyhow::Error::new(PeerLost).context("the gang was dissolved while it formed"));
            };
            let note = |field: String| notes.get(&field).cloned().flatten();
            if let Some(rank) = others.clone().find(|&r| note(error_field(r)).is_some() || note(format!("left:{r}")).is_some()) {
                return Err(anyhow::Error::new(PeerLost).context(format!("rank {rank} could not take up the job")));
            }
            if others.clone().all(|r| note(format!("ready:{r}")).as_deref() == Some(attempt.as_str())) {
                return Ok(());
            }
            let flags = handle.block_on(self.queue.stop_flags(&self.job_id))?;
            if flags.cancelled {
                return Err(crate::train::Cancelled.into());
            }
            if flags.pause_attempt == Some(self.attempt) {
                return Err(crate::train::Checkpointed { request: crate::train::StopRequest::Pause, stage: "sft", step: 0, reason: None }.into());
            }
            if Instant::now() > deadline {
                return Err(anyhow::Error::new(PeerLost).context(format!("the other ranks were not ready within {:?}", self.seat.timeout)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for rank 0's rendezvous note of this attempt; gives up (a lost rank) when the gang is
    /// dissolved or the timeout passes.
    fn rank_zero_address(&self, handle: &tokio::runtime::Handle) -> anyhow::Result<(String, u16)> {
        let deadline = Instant::now() + self.seat.timeout;
        let ours = format!("{} ", self.attempt);
        let fields = ["rendezvous", "closed", "ranks"].map(String::from);
        let me = self.seat.ranks[self.seat.rank].as_str();
        loop {
            // One read: the note, and whether this gang (with this runner in it) still stands.
            let notes = handle.block_on(self.queue.gang_notes(&self.job_id, &fields))?.unwrap_or_default();
            let note = |field: &str| notes.get(field).cloned().flatten();
            if let Some(address) = note("rendezvous").as_deref().and_then(|n| n.strip_prefix(&ours)) {
                let (host, port) = address.rsplit_once(':').context("rank 0's rendezvous note is not HOST:PORT")?;
                return Ok((host.to_string(), port.parse().context("rank 0's rendezvous port")?));
            }
            let member = note("ranks").is_some_and(|ranks| ranks.split_whitespace().any(|r| r == me));
            if note("closed").is_some() || !member {
                return Err(anyhow::Error::new(PeerLost).context("the gang was dissolved before rank 0 served its rendezvous"));
            }
            if Instant::now() > deadline {
                return Err(anyhow::Error::new(PeerLost).context(format!("rank 0 did not serve the gang's rendezvous within {:?}", self.seat.timeout)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What ranks compare before training: the job and the attempt.
fn fingerprint(job_id: &JobId, attempt: i32) -> i64 {
    let digest = sha2::Sha256::digest(format!("{job_id}/{attempt}"));
    i64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) & i64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_tells_jobs_and_attempts_apart() {
        let (a, b) = (JobId::parse("ftjob-aaaa").unwrap(), JobId::parse("ftjob-bbbb").unwrap());
        assert_eq!(fingerprint(&a, 1), fingerprint(&a, 1));
        assert_ne!(fingerprint(&a, 1), fingerprint(&a, 2));
        assert_ne!(fingerprint(&a, 1), fingerprint(&b, 1));
        assert!(fingerprint(&a, 1) >= 0);
    }
}
