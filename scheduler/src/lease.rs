//! Who may send which runner event: the job's current runner (rank 0 for a gang), storage named only
//! under the attempt's own prefixes, and a gang's runners as rank 0 reports them.

use moetune_types::{RunnerEvent, RunnerEventKind, RunnerId};

/// What the ingester knows about an event's sender beyond Postgres.
pub struct Lease<'a> {
    /// The only bucket stored URIs may name (None: not checked).
    pub bucket: Option<&'a str>,
    /// Whether the sender's claimed list holds the job (Redis); only such a runner may start it.
    pub holds_claim: bool,
    /// Lost runners after which a job fails (`max_attempts`): a gang's rank 0 reporting a lost rank
    /// counts as one.
    pub max_attempts: i32,
}

/// A gang's runners as rank 0 reports them: None on one runner; rank 0 must be the sender, and each
/// entry a runner id.
pub(crate) fn gang_ranks(sender: &RunnerId, ranks: &[String]) -> anyhow::Result<Option<Vec<String>>> {
    if ranks.len() <= 1 {
        return Ok(None);
    }
    anyhow::ensure!(ranks.len() <= 1024 && ranks[0] == sender.as_str(), "a gang's Started must list at most 1024 runners, the sender first");
    for id in ranks {
        RunnerId::parse(id).map_err(|e| anyhow::anyhow!("rank runner id: {e}"))?;
    }
    Ok(Some(ranks.to_vec()))
}

pub(crate) fn check_lease(event: &RunnerEvent, holder: Option<&RunnerId>, lease: &Lease<'_>) -> Result<(), String> {
    let runner = &event.runner_id;
    match (&event.kind, holder) {
        (RunnerEventKind::Started { .. }, _) if !lease.holds_claim => return Err(format!("runner {runner} has not claimed the job")),
        (RunnerEventKind::Started { .. }, Some(other)) if other != runner => return Err(format!("the job is held by runner {other}")),
        (RunnerEventKind::Started { .. }, _) => {}
        (_, Some(held)) if held == runner => {}
        _ => return Err(format!("runner {runner} does not hold the job's current attempt")),
    }
    let (name, uri, kind) = match &event.kind {
        RunnerEventKind::Checkpoint { name, uri, .. } => (name, uri, "checkpoints"),
        RunnerEventKind::Artifact { name, uri, .. } => (name, uri, "artifacts"),
        _ => return Ok(()),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    if name.is_empty() || name.len() > 255 || !name.chars().all(plain) || name.split('/').any(|s| s.is_empty() || s == "..") {
        return Err(format!("the name {:?} is not a plain relative name", moetune_types::text::echo(name, 80)));
    }
    let (bucket, key) = parse_s3_uri(uri).map_err(|e| e.to_string())?;
    let prefix = format!("{kind}/{}/attempt-{}/", event.job_id, event.attempt);
    let inside = key.starts_with(&prefix) && key.len() > prefix.len() && !key.split('/').any(|segment| segment == ".." || segment == "." || segment.is_empty());
    if !inside || lease.bucket.is_some_and(|expected| expected != bucket) {
        return Err(format!("{uri} is not under the attempt's prefix s3://{}/{prefix}", lease.bucket.unwrap_or(bucket)));
    }
    Ok(())
}

pub(crate) fn parse_s3_uri(uri: &str) -> anyhow::Result<(&str, &str)> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| anyhow::anyhow!("artifact uri {uri:?} is not s3://bucket/key"))
}
