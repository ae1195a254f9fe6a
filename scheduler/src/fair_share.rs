//! Fair share across tenants. Runners take the next job from the right end of the pending list; the
//! dispatcher keeps that list in fair order, so one tenant's thousand jobs cannot starve another's one.
//!
//! The order: repeatedly give the next slot to the tenant with the fewest jobs running or already
//! ahead of it in the list (ties: the tenant whose next job is oldest), and take that tenant's next
//! job: its highest priority, oldest first. A priority orders a tenant's own jobs only. The rewrite is a compare-and-set in Lua: it only happens if the list
//! is still exactly what the order was computed from, so no id is ever lost or duplicated.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use redis::Script;
use sqlx::PgPool;
use uuid::Uuid;

use crate::JobQueue;

/// A waiting job: its tenant and its place in its tenant's line (priority, higher first; then
/// creation time; then id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waiting {
    pub priority: std::cmp::Reverse<i16>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub id: String,
    pub tenant: Uuid,
}

/// Job ids in the order runners should take them, first to be taken first.
pub fn fair_order(mut waiting: Vec<Waiting>, running: &HashMap<Uuid, i64>) -> Vec<String> {
    waiting.sort();
    let mut queues: BTreeMap<Uuid, VecDeque<Waiting>> = BTreeMap::new();
    // Per tenant, its remaining jobs by age: a tie between tenants goes to the longest waiting one,
    // whatever order its own priorities put its jobs in.
    let mut ages: HashMap<Uuid, BTreeSet<(chrono::DateTime<chrono::Utc>, String)>> = HashMap::new();
    for job in waiting {
        ages.entry(job.tenant).or_default().insert((job.created_at, job.id.clone()));
        queues.entry(job.tenant).or_default().push_back(job);
    }
    let mut load: HashMap<Uuid, i64> = queues.keys().map(|t| (*t, running.get(t).copied().unwrap_or(0))).collect();
    let mut order = Vec::new();
    while let Some(tenant) = queues
        .iter()
        .filter(|(_, queue)| !queue.is_empty())
        .map(|(tenant, _)| (load[tenant], ages[tenant].first().cloned(), *tenant))
        .min()
        .map(|(_, _, tenant)| tenant)
    {
        let job = queues.get_mut(&tenant).and_then(VecDeque::pop_front).expect("non-empty queue");
        ages.get_mut(&tenant).expect("known tenant").remove(&(job.created_at, job.id.clone()));
        *load.get_mut(&tenant).expect("known tenant") += 1;
        order.push(job.id);
    }
    order
}

/// KEYS[1] = pending list; ARGV = n, the n ids read (left to right), then the new contents.
/// Rewrites only if the list is still exactly what was read.
const COMPARE_AND_SET: &str = r#"
local n = tonumber(ARGV[1])
local current = redis.call('LRANGE', KEYS[1], 0, -1)
if #current ~= n then return 0 end
for i = 1, n do
  if current[i] ~= ARGV[i + 1] then return 0 end
end
redis.call('DEL', KEYS[1])
for i = n + 2, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
return 1
"#;

/// One pass: reads the pending list, computes the fair order from Postgres, and rewrites the list if
/// the order differs and nothing changed meanwhile. Returns whether it reordered.
pub async fn reorder_pending(queue: &JobQueue, pool: &PgPool) -> anyhow::Result<bool> {
    let mut redis = queue.connection();
    let key = queue.keys().pending();
    let current: Vec<String> = redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query_async(&mut redis).await?;
    if current.len() < 2 {
        return Ok(false);
    }
    let waiting: Vec<(String, Uuid, chrono::DateTime<chrono::Utc>, i16)> =
        sqlx::query_as("SELECT id, tenant_id, created_at, priority FROM jobs WHERE id = ANY($1) AND status = 'queued'").bind(&current).fetch_all(pool).await?;
    if waiting.len() != current.len() {
        return Ok(false); // unknown or duplicate ids: leave the list to the reconciler
    }
    let running: HashMap<Uuid, i64> =
        sqlx::query_as("SELECT tenant_id, count(*) FROM jobs WHERE status IN ('running', 'pausing') GROUP BY tenant_id").fetch_all(pool).await?.into_iter().collect();
    let waiting = waiting.into_iter().map(|(id, tenant, created_at, priority)| Waiting { priority: std::cmp::Reverse(priority), created_at, id, tenant }).collect();
    // Runners pop from the right: the first to be taken goes last.
    let mut desired = fair_order(waiting, &running);
    desired.reverse();
    if desired == current {
        return Ok(false);
    }
    let swapped: i32 = Script::new(COMPARE_AND_SET).key(&key).arg(current.len()).arg(&current).arg(&desired).invoke_async(&mut redis).await?;
    Ok(swapped == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(tenant: u128, seconds: i64, id: &str) -> Waiting {
        Waiting { priority: std::cmp::Reverse(0), created_at: chrono::DateTime::from_timestamp(seconds, 0).unwrap(), id: id.into(), tenant: Uuid::from_u128(tenant) }
    }

    #[test]
    fn priority_reorders_a_tenants_own_jobs_but_not_the_turns() {
        let mut urgent = waiting(1, 5, "a-urgent");
        urgent.priority = std::cmp::Reverse(9);
        let jobs = vec![waiting(1, 0, "a0"), waiting(1, 1, "a1"), urgent, waiting(2, 2, "b0")];
        // Tenant 1's turn comes first (its next job is older than b0's creation); its urgent job takes it.
        assert_eq!(fair_order(jobs, &HashMap::new()), ["a-urgent", "b0", "a0", "a1"]);
    }

    #[test]
    fn a_small_tenant_goes_ahead_of_a_big_backlog() {
        let mut jobs: Vec<Waiting> = (0..50).map(|i| waiting(1, i, &format!("a{i:02}"))).collect();
        jobs.push(waiting(2, 100, "b00"));
        // Tenant 1 already has a job running.
        let order = fair_order(jobs, &HashMap::from([(Uuid::from_u128(1), 1)]));
        assert_eq!(&order[..4], ["b00", "a00", "a01", "a02"]);
        assert_eq!(order.len(), 51);
    }

    #[test]
    fn equal_tenants_alternate_oldest_first() {
        let jobs = vec![waiting(1, 0, "a0"), waiting(1, 1, "a1"), waiting(2, 2, "b0"), waiting(2, 3, "b1"), waiting(3, 9, "c0")];
        assert_eq!(fair_order(jobs, &HashMap::new()), ["a0", "b0", "c0", "a1", "b1"]);
    }
}
