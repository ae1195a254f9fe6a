//! Placement benchmark (not a test): 1,000 simulated runners against 100,000 queued jobs on a real
//! Redis, through the same queue script the runners use. Prints claim latency p50/p99 for a lone
//! runner and for all runners claiming at once, enqueue throughput, and the reconciler's snapshot time.
//!
//!   cargo run --release -p moetune-scheduler --bin moetune-placement-bench -- [runners] [jobs] [tenants]

use std::sync::Arc;
use std::time::{Duration, Instant};

use moetune_scheduler::JobQueue;
use moetune_types::{DeviceRequest, JobAssignment, JobId, JobRequirements, Placement, RunnerId, TrainingSpec};
use redis::AsyncCommands;

const GIB: i64 = 1 << 30;

/// A small deterministic generator (xorshift), so every run places the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A job of the mix: 60% small jobs any runner fits, 30% CUDA-only jobs of 10-70 GiB, 10% large jobs
/// (100-300 GiB, only big CPU hosts fit). Tenants are skewed: tenant k gets weight 1/(k+1).
fn job(i: usize, rng: &mut Rng, tenants: usize) -> JobAssignment {
    let weights: f64 = (0..tenants).map(|k| 1.0 / (k as f64 + 1.0)).sum();
    let mut pick = (rng.below(1_000_000) as f64 / 1_000_000.0) * weights;
    let mut tenant = 0;
    while tenant + 1 < tenants && pick > 1.0 / (tenant as f64 + 1.0) {
        pick -= 1.0 / (tenant as f64 + 1.0);
        tenant += 1;
    }
    let (device, memory) = match rng.below(10) {
        0..=5 => (DeviceRequest::Auto, (1 + rng.below(20) as i64) * GIB),
        6..=8 => (DeviceRequest::Cuda, (10 + rng.below(60) as i64) * GIB),
        _ => (DeviceRequest::Auto, (100 + rng.below(200) as i64) * GIB),
    };
    JobAssignment {
        job_id: JobId::parse(&format!("ftjob-bench-{i:06}")).expect("a job id"),
        attempt: 1,
        spec: TrainingSpec { model: "bench".into(), n_epochs: 1, batch_size: 8, seed: 0, moe: Default::default(), routing_profile: None },
        bucket: "bench".into(),
        training_file_key: "files/bench".into(),
        validation_file_key: None,
        checkpoint_prefix: String::new(),
        resume_from: None,
        artifact_prefix: String::new(),
        model_location: None,
        placement: Placement {
            tenant: format!("tenant{tenant:03}"),
            priority: rng.below(10) as i16,
            created_at_ms: 1_790_000_000_000 + i as i64,
            requirements: JobRequirements { device, memory_bytes: memory, ..Default::default() },
        },
    }
}

/// The fleet: 60% CPU hosts (64 GiB, some 512 GiB), 40% CUDA (80 GiB, some 24 GiB).
fn runner(i: usize) -> (RunnerId, &'static str, i64) {
    let (name, device, memory) = match i % 10 {
        0..=4 => (format!("cpu-{i:04}"), "cpu", 64 * GIB),
        5 => (format!("cpu-big-{i:04}"), "cpu", 512 * GIB),
        6..=8 => (format!("h100-{i:04}"), "cuda", 80 * GIB),
        _ => (format!("l4-{i:04}"), "cuda", 24 * GIB),
    };
    (RunnerId::parse(&name).expect("runner names are ids"), device, memory)
}

/// The Redis server's CPU time so far (user + system, all its threads), from `INFO cpu`.
async fn redis_cpu_seconds(redis: &mut redis::aio::ConnectionManager) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(redis).await?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = info.lines().find_map(|l| l.strip_prefix(name)).ok_or_else(|| anyhow::anyhow!("INFO cpu has no {name}"))?;
        Ok(line.trim().parse()?)
    };
    Ok(field("used_cpu_user:")? + field("used_cpu_sys:")?)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (p50, p99, max) = (percentile(&samples, 0.5), percentile(&samples, 0.99), *samples.last().unwrap());
    println!("{name:<44} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms", samples.len(), ms(p50), ms(p99), ms(max));
    serde_json::json!({ "name": name, "n": samples.len(), "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max) })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (runners, jobs, tenants) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(100_000), args.get(2).copied().unwrap_or(200));
    let url = std::env::var("MOETUNE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("bench-{}", std::process::id());
    let queue = JobQueue::connect(&url, &prefix).await?;
    println!("placement benchmark: {runners} runners, {jobs} queued jobs, {tenants} tenants, Redis {url} (prefix {prefix})");

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    let workload: Vec<JobAssignment> = (0..jobs).map(|i| job(i, &mut rng, tenants)).collect();
    let mut enqueue = Vec::with_capacity(jobs);
    for assignment in &workload {
        let t = Instant::now();
        queue.enqueue(assignment).await?;
        enqueue.push(t.elapsed());
    }
    let enqueue_secs = start.elapsed().as_secs_f64();
    println!("enqueued {jobs} jobs in {enqueue_secs:.1} s ({:.0} jobs/s, one connection)", jobs as f64 / enqueue_secs);
    let mut results = vec![summary("enqueue", enqueue)];

    // A lone runner of each kind asking with the queue full (claim and let go: the queue stays full).
    let mut lone = Vec::new();
    for i in 0..2000 {
        let (id, device, memory) = runner(i % runners);
        let t = Instant::now();
        let claimed = queue.claim(&id, device, memory, 0).await?;
        lone.push(t.elapsed());
        if let Some(job) = claimed {
            let assignment = &workload[job.trim_start_matches("ftjob-bench-").parse::<usize>()?];
            queue.requeue_from(&id, assignment).await?;
        }
    }
    results.push(summary("claim, one runner at a time (queue full)", lone));

    // The worst claim: a runner that fits nothing looks at every job within the claim's bounds.
    let mut misfit = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let claimed = queue.claim(&RunnerId::parse("misfit")?, "cpu", GIB / 2, 0).await?;
        misfit.push(t.elapsed());
        anyhow::ensure!(claimed.is_none(), "every job needs at least 1 GiB");
    }
    results.push(summary("claim that fits nothing (scans 32 x 8 jobs)", misfit));

    // Every runner claims at once, five rounds, each claimed job finished at once (a claim storm).
    let queue = Arc::new(queue);
    let mut storm = Vec::new();
    let mut empty_handed = 0;
    let redis_cpu_before = redis_cpu_seconds(&mut queue.connection()).await?;
    let storm_start = Instant::now();
    for _round in 0..5 {
        let tasks: Vec<_> = (0..runners)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let (id, device, memory) = runner(i);
                    let t = Instant::now();
                    let claimed = queue.claim(&id, device, memory, 0).await?;
                    let took = t.elapsed();
                    if let Some(job) = &claimed {
                        queue.forget(Some(&id), job).await?;
                    }
                    anyhow::Ok((took, claimed.is_some()))
                })
            })
            .collect();
        for task in tasks {
            let (took, placed) = task.await??;
            storm.push(took);
            empty_handed += usize::from(!placed);
        }
    }
    let storm_secs = storm_start.elapsed().as_secs_f64();
    // How busy the storm kept Redis (its own CPU time over the wall time): near 1 when the server is
    // the limit, well under 1 when the clients are.
    let redis_busy = (redis_cpu_seconds(&mut queue.connection()).await? - redis_cpu_before) / storm_secs;
    let claims = storm.len();
    results.push(summary(&format!("claim, {runners} runners at once (x5 rounds)"), storm));
    println!(
        "  {claims} claims in {storm_secs:.2} s ({:.0} claims/s, Redis busy {:.0} % of the time); {empty_handed} found nothing they fit",
        claims as f64 / storm_secs,
        redis_busy * 100.0
    );

    // The registry the placement pass reads every second: 1,000 runners' entries.
    let mut redis = queue.connection();
    for i in 0..runners {
        let (id, device, memory) = runner(i);
        let info = moetune_types::RunnerInfo {
            runner_id: id.clone(),
            device: device.into(),
            gpu_count: i64::from(device == "cuda"),
            gpu_model: String::new(),
            gpu_memory_bytes: if device == "cuda" { memory } else { 0 },
            host_memory_bytes: if device == "cuda" { 256 * GIB } else { memory },
            labels: Default::default(),
            max_concurrent_jobs: 1,
            methods: vec!["lora".into(), "full".into()],
            qat_formats: vec!["mxfp4".into(), "nvfp4".into()],
            version: "bench".into(),
            started_at: 0,
            address: String::new(),
            last_heartbeat_ms: 0,
        };
        let keys = queue.keys();
        let () = redis::pipe()
            .sadd(keys.runners(), id.as_str())
            .set_ex(keys.runner_alive(&id), "1", 600)
            .set_ex(keys.runner_info(&id), serde_json::to_string(&info)?, 600)
            .query_async(&mut redis)
            .await?;
    }
    let t = Instant::now();
    let largest = moetune_domain::registry::largest_runners(&queue.runners().await?);
    let registry_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!("placement pass: registry of {runners} runners read in {registry_ms:.1} ms ({largest:?})");

    let t = Instant::now();
    let snapshot = queue.snapshot().await?;
    let snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!("reconciler snapshot of {} waiting jobs: {snapshot_ms:.1} ms", snapshot.pending.len());

    // Clean up this run's keys.
    let keys: Vec<String> = redis.keys(format!("{prefix}:*")).await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis.del(chunk).await?;
    }
    // Last line, for deploy/bench.
    println!(
        "{}",
        serde_json::json!({ "bench": "placement", "runners": runners, "jobs": jobs, "tenants": tenants, "results": results,
            "enqueue_per_s": jobs as f64 / enqueue_secs, "claims_per_s": claims as f64 / storm_secs, "storm_redis_busy": redis_busy,
            "registry_ms": registry_ms, "snapshot_ms": snapshot_ms })
    );
    Ok(())
}
