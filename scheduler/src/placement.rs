//! Placement. Runners take work themselves with the queue script's `claim` (see `queue.lua`): tenants
//! in fair-share order (fewest jobs held by runners first, ties to the tenant served least recently),
//! and in each tenant the first job by priority, then age, that the runner fits (device kind
//! and training memory, `moetune_types::placement`).
//!
//! What this module adds is the view from the other side: a queued job that no registered runner could
//! ever take (it needs CUDA and there is none; it needs more memory than the largest runner has) gets
//! a `status_details` saying so, cleared when a runner that fits registers. A job on a gang of runners
//! that outnumbers the registered runners it fits is told the same.


use moetune_types::gang_size::gang_reason;
use moetune_types::placement::unplaceable_reason;
use moetune_types::JobRequirements;
use sqlx::PgPool;

use moetune_domain::registry::{largest_runners, live_runners, RunnerView};

/// One pass over the registry as read (`runners`): for each distinct requirement among queued jobs,
/// sets or clears the reason they wait. Returns how many jobs' details changed.
pub async fn explain_waiting(runners: &[RunnerView], pool: &PgPool) -> anyhow::Result<u64> {
    let largest = largest_runners(runners);
    let registered = live_runners(runners);
    let wanted: Vec<serde_json::Value> = sqlx::query_scalar("SELECT DISTINCT requirements FROM jobs WHERE status = 'queued'").fetch_all(pool).await?;
    let mut changed = 0;
    for raw in wanted {
        let Ok(needs) = serde_json::from_value::<JobRequirements>(raw.clone()) else { continue };
        let reason = unplaceable_reason(&needs, &largest).or_else(|| gang_reason(&needs, &registered));
        changed += sqlx::query("UPDATE jobs SET status_details = $2 WHERE status = 'queued' AND requirements = $1 AND status_details IS DISTINCT FROM $2")
            .bind(&raw)
            .bind(&reason)
            .execute(pool)
            .await?
            .rows_affected();
    }
    Ok(changed)
}
