//! The job report page: one self-contained HTML document (no script or style from anywhere else)
//! with the loss and learning-rate curves, the per-layer expert-usage heatmap over time, the monitor's
//! alerts, and the base / SFT / PTQ / SFT+QAT table. Charts are SVG drawn here, so the page needs no
//! JavaScript to show them; the template escapes every value it prints.

use moetune_types::{EvalReport, EvalRow, JobId, LayerUsage, RoutingProfile, RunnerEventKind, TenantId};
use minijinja::Environment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::jobs;
use crate::AppState;

const TEMPLATE: &str = include_str!("../templates/report.html");
const CHART_WIDTH: f64 = 720.0;
const CHART_HEIGHT: f64 = 220.0;
const MARGIN: f64 = 48.0;

/// One plotted series: SVG points in chart coordinates.
#[derive(Debug, Serialize)]
struct Series {
    name: String,
    color: &'static str,
    points: String,
    count: usize,
}

#[derive(Debug, Serialize)]
struct LineChart {
    title: &'static str,
    series: Vec<Series>,
    /// Axis labels: (position, text).
    x_ticks: Vec<(f64, String)>,
    y_ticks: Vec<(f64, String)>,
    width: f64,
    height: f64,
}

#[derive(Debug, Serialize)]
struct Cell {
    x: f64,
    y: f64,
    fill: String,
    title: String,
}

#[derive(Debug, Serialize)]
struct Heatmap {
    cells: Vec<Cell>,
    rows: Vec<(f64, String)>,
    columns: Vec<(f64, String)>,
    cell_width: f64,
    cell_height: f64,
    width: f64,
    height: f64,
}

/// One monitor check as the report draws it (the `monitor` event's fields).
#[derive(Debug, Clone, Serialize)]
struct Check {
    stage: String,
    step: u32,
    layers: Vec<LayerUsage>,
    mean_top1_share: f64,
    mean_entropy_norm: f64,
    alert: bool,
    action: Option<String>,
    routing_drift: Option<f64>,
    drift_exceeded: bool,
}

/// A step of training as the metrics events report it, on one axis across stages.
struct Step {
    stage: String,
    x: f64,
    loss: f64,
    learning_rate: f64,
    validation_loss: Option<f64>,
}

/// Events are read a page at a time; past these many points a series is thinned (every other point
/// dropped, the curve keeps its shape), so a job of any length renders in bounded memory.
const PAGE: i64 = 2000;
const MAX_POINTS: usize = 4000;
const MAX_CHECKS: usize = 400;

pub async fn render(state: &AppState, tenant: TenantId, job_id: &JobId) -> Result<String, ApiError> {
    let job = jobs::get(state, tenant, job_id).await?;
    let (mut steps, mut checks, mut evaluation, mut after) = (Vec::new(), Vec::new(), None, 0i64);
    loop {
        let rows: Vec<(i64, Option<Value>)> = sqlx::query_as(
            "SELECT seq, data FROM job_events WHERE job_id = $1 AND seq > $2 AND type IN ('metrics', 'monitor', 'evaluation') ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after)
        .bind(PAGE)
        .fetch_all(&state.db)
        .await?;
        let full_page = rows.len() as i64 == PAGE;
        for (seq, data) in rows {
            after = seq;
            // The event's data is the runner's event as the scheduler recorded it.
            match data.map(serde_json::from_value::<RunnerEventKind>) {
                Some(Ok(RunnerEventKind::Metrics { stage, step, train_loss, learning_rate, validation_loss, .. })) => {
                    steps.push(Step { stage, x: f64::from(step), loss: train_loss, learning_rate, validation_loss });
                }
                Some(Ok(RunnerEventKind::Monitor { stage, step, layers, mean_top1_share, mean_entropy_norm, alert, action, routing_drift, drift_exceeded, .. })) => {
                    checks.push(Check { stage, step, layers, mean_top1_share, mean_entropy_norm, alert, action, routing_drift, drift_exceeded });
                }
                Some(Ok(RunnerEventKind::Evaluation { report })) => evaluation = serde_json::from_value::<EvalReport>(report).ok(),
                _ => {}
            }
            thin(&mut steps, MAX_POINTS);
            thin(&mut checks, MAX_CHECKS);
        }
        if !full_page {
            break;
        }
    }
    let steps = on_one_axis(steps);
    // A job that logged no evaluation event still has the table in its result (`JobResult::eval`, read
    // alone: results of every runner version have it or nothing).
    #[derive(Deserialize)]
    struct ResultEval {
        eval: Vec<EvalRow>,
    }
    let result_table = || job.result.as_ref().and_then(|r| ResultEval::deserialize(r).ok()).map(|r| r.eval);
    let evaluation_table = evaluation.as_ref().map(|r| r.table.clone()).or_else(result_table);
    // The training data's routing: measured by the job itself (`from_profile`), else the newest
    // routing profile of its training file under its model.
    #[derive(Deserialize)]
    struct ResultProfile {
        training_routing_profile: RoutingProfile,
    }
    let profile = match job.result.as_ref().and_then(|r| ResultProfile::deserialize(r).ok()) {
        Some(r) => Some(r.training_routing_profile),
        None => crate::routing_profiles::succeeded(state, tenant, &job.training_file, &job.model).await?,
    };
    let context = serde_json::json!({
        "job": serde_json::to_value(&job).map_err(ApiError::internal)?,
        "loss": loss_chart(&steps),
        "learning_rate": lr_chart(&steps),
        "heatmap": heatmap(&checks),
        "experts": expert_shares(checks.last(), collapse_threshold(&job)),
        "profile": profile.as_ref().and_then(profile_shares),
        "profile_dead": profile.as_ref().map(|p| p.layers.iter().map(|l| l.dead_experts.len()).sum::<usize>()),
        "alerts": checks.iter().filter(|c| c.alert || c.drift_exceeded).collect::<Vec<_>>(),
        "drift": checks.iter().rev().find_map(|c| c.routing_drift.map(|d| serde_json::json!({"stage": c.stage, "step": c.step, "percent": 100.0 * d}))),
        "checks": checks.len(),
        "table": evaluation_table,
        "routing": evaluation.as_ref().map(|r| &r.routing_agreement),
        "format": evaluation.as_ref().map(|r| r.format),
    });
    let mut env = Environment::new();
    env.add_template("report.html", TEMPLATE).map_err(ApiError::internal)?;
    env.get_template("report.html").and_then(|t| t.render(minijinja::value::Serde(&context))).map_err(ApiError::internal)
}

/// Drops every other element once there are more than `max`.
fn thin<T>(items: &mut Vec<T>, max: usize) {
    if items.len() > max {
        let mut index = 0;
        items.retain(|_| {
            index += 1;
            index % 2 == 1
        });
    }
}

/// SFT steps, then QAT steps after them, on one x axis.
fn on_one_axis(mut steps: Vec<Step>) -> Vec<Step> {
    let sft_steps = steps.iter().filter(|s| s.stage == "sft").map(|s| s.x).fold(0.0, f64::max);
    for step in steps.iter_mut().filter(|s| s.stage == "qat") {
        step.x += sft_steps;
    }
    steps
}

fn loss_chart(steps: &[Step]) -> LineChart {
    let pick = |stage: &str| steps.iter().filter(|s| s.stage == stage).map(|s| (s.x, s.loss)).collect::<Vec<_>>();
    let validation: Vec<(f64, f64)> = steps.iter().filter_map(|s| Some((s.x, s.validation_loss?))).collect();
    line_chart("Training loss", vec![("SFT training loss", "#1f77b4", pick("sft")), ("QAT training loss", "#d62728", pick("qat")), ("validation loss", "#2ca02c", validation)])
}

fn lr_chart(steps: &[Step]) -> LineChart {
    line_chart("Learning rate", vec![("learning rate", "#9467bd", steps.iter().map(|s| (s.x, s.learning_rate)).collect())])
}

fn line_chart(title: &'static str, data: Vec<(&str, &'static str, Vec<(f64, f64)>)>) -> LineChart {
    let all: Vec<(f64, f64)> = data.iter().flat_map(|(_, _, points)| points.iter().copied()).collect();
    let (x_min, x_max) = bounds(all.iter().map(|p| p.0));
    let (y_min, y_max) = bounds(all.iter().map(|p| p.1));
    let (plot_w, plot_h) = (CHART_WIDTH - 2.0 * MARGIN, CHART_HEIGHT - 2.0 * MARGIN);
    let x = |v: f64| MARGIN + (v - x_min) / (x_max - x_min) * plot_w;
    let y = |v: f64| CHART_HEIGHT - MARGIN - (v - y_min) / (y_max - y_min) * plot_h;
    let series = data
        .into_iter()
        .filter(|(_, _, points)| !points.is_empty())
        .map(|(name, color, points)| Series {
            name: name.into(),
            color,
            points: points.iter().map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py))).collect::<Vec<_>>().join(" "),
            count: points.len(),
        })
        .collect();
    let ticks = |min: f64, max: f64, to: &dyn Fn(f64) -> f64, label: &dyn Fn(f64) -> String| -> Vec<(f64, String)> {
        (0..=4).map(|i| min + (max - min) * i as f64 / 4.0).map(|v| (to(v), label(v))).collect()
    };
    // Steps are whole numbers.
    let x_ticks = ticks(x_min, x_max, &x, &|v| format!("{:.0}", v.round()));
    LineChart { title, series, x_ticks, y_ticks: ticks(y_min, y_max, &y, &short), width: CHART_WIDTH, height: CHART_HEIGHT }
}

/// Min and max, widened when equal (a flat line still gets a scale).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !min.is_finite() {
        return (0.0, 1.0);
    }
    if max - min < f64::EPSILON * max.abs().max(1.0) { (min - 0.5 * min.abs().max(1e-9), max + 0.5 * max.abs().max(1e-9)) } else { (min, max) }
}

fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) { format!("{v:.1e}") } else { format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string() }
}

/// Rows: MoE layers; columns: monitor checks in time order; colour: the busiest expert's share of the
/// layer's routed tokens (white = even use, dark red = one expert takes everything).
fn heatmap(checks: &[Check]) -> Heatmap {
    let layers: Vec<usize> = {
        let mut layers: Vec<usize> = checks.iter().flat_map(|c| c.layers.iter().map(|l| l.layer)).collect();
        layers.sort_unstable();
        layers.dedup();
        layers
    };
    let (label_w, label_h) = (70.0, 40.0);
    let cell_width = ((CHART_WIDTH - label_w) / checks.len().max(1) as f64).clamp(6.0, 60.0);
    let cell_height = 22.0;
    let mut cells = Vec::new();
    for (column, check) in checks.iter().enumerate() {
        for usage in &check.layers {
            let (layer, share) = (usage.layer, usage.top1_share);
            let row = layers.iter().position(|&l| l == layer).unwrap_or(0);
            let entropy = usage.entropy_norm;
            cells.push(Cell {
                x: label_w + column as f64 * cell_width,
                y: label_h + row as f64 * cell_height,
                fill: share_colour(share),
                title: format!("{} step {}, layer {layer}: top-1 share {share:.3}, entropy {entropy:.3}", check.stage, check.step),
            });
        }
    }
    let rows = layers.iter().enumerate().map(|(i, l)| (label_h + (i as f64 + 0.7) * cell_height, format!("layer {l}"))).collect();
    let every = (checks.len() / 8).max(1);
    let columns = checks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, c)| (label_w + (i as f64 + 0.5) * cell_width, format!("{} {}", c.stage, c.step)))
        .collect();
    let width = label_w + checks.len() as f64 * cell_width + 10.0;
    let height = label_h + layers.len() as f64 * cell_height + 10.0;
    Heatmap { cells, rows, columns, cell_width, cell_height, width, height }
}

/// The monitor's top-1 share threshold the job runs with (its alert fires at or above it).
fn collapse_threshold(job: &jobs::JobObject) -> f64 {
    serde_json::to_value(job)
        .ok()
        .and_then(|j| j["method"]["moe_sft_qat"]["monitor"]["top1_share_threshold"].as_f64())
        .unwrap_or(moetune_types::MonitorOptions::default().top1_share_threshold)
}

/// Every expert's share of its layer's routed tokens at the latest monitor check: rows are MoE
/// layers, columns experts. A cell at or above the collapse threshold is outlined.
#[derive(Debug, Serialize)]
struct ExpertShares {
    cells: Vec<ShareCell>,
    rows: Vec<(f64, String)>,
    columns: Vec<(f64, String)>,
    cell_width: f64,
    cell_height: f64,
    width: f64,
    height: f64,
    threshold: f64,
    /// The threshold's position on the colour scale legend.
    threshold_x: f64,
    /// The colour scale, share 0 → 1: (x, fill) of each segment.
    scale: Vec<(f64, String)>,
    scale_y: f64,
    title: String,
    /// The legend's labels: the marker's and the scale's right end.
    marker_label: String,
    end_label: String,
}

#[derive(Debug, Serialize)]
struct ShareCell {
    x: f64,
    y: f64,
    fill: String,
    title: String,
    over: bool,
}

const SCALE_WIDTH: f64 = 200.0;

fn expert_shares(check: Option<&Check>, threshold: f64) -> Option<ExpertShares> {
    let check = check?;
    let rows: Vec<(usize, Vec<f64>)> = check
        .layers
        .iter()
        .filter(|l| !l.counts.is_empty())
        .map(|l| {
            let total = l.counts.iter().sum::<u64>().max(1) as f64;
            (l.layer, l.counts.iter().map(|&c| c as f64 / total).collect())
        })
        .collect();
    let grid = ShareGrid { colour_at: 1.0, marker: threshold, outline: &|share| share >= threshold, what: "of the routed tokens" };
    let mut shares = grid.draw(&rows, format!("{} step {}", check.stage, check.step))?;
    (shares.marker_label, shares.end_label) = (format!("collapse threshold {threshold:.2}"), "1".into());
    Some(shares)
}

/// The routing profile of the job's training data under the base model: each expert's share of its
/// layer's top-k choices, coloured against twice the uniform share; dead experts outlined.
fn profile_shares(profile: &RoutingProfile) -> Option<ExpertShares> {
    let experts = profile.layers.iter().map(|l| l.topk_share.len()).max()?.max(1) as f64;
    let rows: Vec<(usize, Vec<f64>)> = profile.layers.iter().map(|l| (l.layer, l.topk_share.clone())).collect();
    let dead = profile.dead_share;
    let grid = ShareGrid { colour_at: 2.0 / experts, marker: 1.0 / experts, outline: &|share| share < dead, what: "of the layer's top-k choices" };
    let mut shares = grid.draw(&rows, format!("{} tokens of {} examples", profile.tokens, profile.examples))?;
    (shares.marker_label, shares.end_label) = (format!("uniform 1/{experts}"), "2× uniform".into());
    Some(shares)
}

/// Draws rows of per-expert shares: `colour_at` is the share drawn darkest, `marker` the share marked
/// on the scale, `outline` the cells outlined.
struct ShareGrid<'a> {
    colour_at: f64,
    marker: f64,
    outline: &'a dyn Fn(f64) -> bool,
    what: &'a str,
}

impl ShareGrid<'_> {
    fn draw(&self, layers: &[(usize, Vec<f64>)], title: String) -> Option<ExpertShares> {
        let experts = layers.iter().map(|l| l.1.len()).max().filter(|&e| e > 0)?;
        let (label_w, label_h) = (70.0, 40.0);
        let cell_width = ((CHART_WIDTH - label_w) / experts as f64).clamp(4.0, 40.0);
        let cell_height = 18.0;
        let mut cells = Vec::new();
        for (row, (layer, shares)) in layers.iter().enumerate() {
            for (expert, &share) in shares.iter().enumerate() {
                cells.push(ShareCell {
                    x: label_w + expert as f64 * cell_width,
                    y: label_h + row as f64 * cell_height,
                    fill: share_colour(share / self.colour_at),
                    title: format!("layer {layer}, expert {expert}: {share:.3} {}", self.what),
                    over: (self.outline)(share),
                });
            }
        }
        let rows = layers.iter().enumerate().map(|(i, l)| (label_h + (i as f64 + 0.7) * cell_height, format!("layer {}", l.0))).collect();
        let every = experts.div_ceil(16).max(1);
        let columns = (0..experts).filter(|e| e % every == 0).map(|e| (label_w + (e as f64 + 0.5) * cell_width, e.to_string())).collect();
        let width = (label_w + experts as f64 * cell_width + 10.0).max(SCALE_WIDTH + 80.0);
        let height = label_h + layers.len() as f64 * cell_height + 50.0;
        let scale = (0..20).map(|i| (10.0 + f64::from(i) * SCALE_WIDTH / 20.0, share_colour((f64::from(i) + 0.5) / 20.0))).collect();
        let threshold_x = 10.0 + (self.marker / self.colour_at).clamp(0.0, 1.0) * SCALE_WIDTH;
        let scale_y = height - 34.0;
        let (marker_label, end_label) = (String::new(), String::new());
        Some(ExpertShares { cells, rows, columns, cell_width, cell_height, width, height, threshold: self.marker, threshold_x, scale, scale_y, title, marker_label, end_label })
    }
}

fn share_colour(share: f64) -> String {
    let t = share.clamp(0.0, 1.0);
    let channel = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", channel(255.0, 165.0), channel(255.0, 15.0), channel(255.0, 21.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(layer: usize, top1_share: f64, counts: Vec<u64>) -> LayerUsage {
        LayerUsage { layer, top1_share, entropy_norm: 0.9, kl_to_uniform: 0.0, avg_token_entropy: 0.0, counts, base_agreement: None }
    }

    fn check(step: u32, layers: Vec<LayerUsage>) -> Check {
        Check { stage: "sft".into(), step, layers, mean_top1_share: 0.0, mean_entropy_norm: 0.0, alert: false, action: None, routing_drift: None, drift_exceeded: false }
    }

    #[test]
    fn charts_put_every_point_inside_the_plot() {
        let steps: Vec<Step> = (1..=20)
            .map(|i| Step { stage: if i <= 15 { "sft" } else { "qat" }.into(), x: if i <= 15 { i } else { i - 15 } as f64, loss: 3.0 / i as f64, learning_rate: 1e-4, validation_loss: None })
            .collect();
        let chart = loss_chart(&on_one_axis(steps));
        assert_eq!(chart.series.iter().map(|s| s.count).collect::<Vec<_>>(), [15, 5]);
        for point in chart.series.iter().flat_map(|s| s.points.split(' ')) {
            let (x, y) = point.split_once(',').unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            assert!((MARGIN..=CHART_WIDTH - MARGIN).contains(&x) && (MARGIN..=CHART_HEIGHT - MARGIN).contains(&y), "{point}");
        }
        // QAT continues the SFT axis: its first point is right of SFT's last.
        let last_sft: f64 = chart.series[0].points.split(' ').last().unwrap().split(',').next().unwrap().parse().unwrap();
        let first_qat: f64 = chart.series[1].points.split(' ').next().unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(first_qat > last_sft);
        // A constant learning rate still gets a drawable scale.
        let flat: Vec<Step> = (1..=5).map(|i| Step { stage: "sft".into(), x: i as f64, loss: 1.0, learning_rate: 1e-4, validation_loss: None }).collect();
        assert!(!lr_chart(&on_one_axis(flat)).series[0].points.contains("NaN"));
    }

    /// However many steps a job ran, the charts hold a bounded number of points spread over all of it.
    #[test]
    fn thinning_bounds_the_points_and_keeps_the_whole_run() {
        let mut steps = Vec::new();
        for i in 1..=100_000 {
            steps.push(i);
            thin(&mut steps, MAX_POINTS);
        }
        assert!(steps.len() <= MAX_POINTS && steps.len() > MAX_POINTS / 2, "{}", steps.len());
        assert_eq!(steps[0], 1);
        assert!(*steps.last().unwrap() > 99_000);
    }

    #[test]
    fn heatmap_has_a_cell_per_layer_and_check() {
        let at = |step: u32, share: f64| check(step, vec![usage(0, share, vec![]), usage(1, 0.2, vec![])]);
        let map = heatmap(&[at(10, 0.2), at(20, 0.9)]);
        assert_eq!(map.cells.len(), 4);
        assert_eq!(map.rows.len(), 2);
        assert_ne!(map.cells[0].fill, map.cells[2].fill, "a collapsing layer darkens");
        assert_eq!(share_colour(0.0), "#ffffff");
    }

    #[test]
    fn expert_shares_show_every_expert_and_outline_those_past_the_threshold() {
        let latest = check(30, vec![usage(0, 0.8, vec![80, 10, 5, 5]), usage(1, 0.25, vec![25, 25, 25, 25])]);
        let shares = expert_shares(Some(&latest), 0.7).unwrap();
        assert_eq!(shares.cells.len(), 8);
        assert_eq!(shares.cells.iter().filter(|c| c.over).count(), 1);
        assert!(shares.cells[0].title.contains("expert 0: 0.800"), "{}", shares.cells[0].title);
        assert_eq!(shares.rows.len(), 2);
        assert!(expert_shares(None, 0.7).is_none());
        assert_eq!(shares.marker_label, "collapse threshold 0.70");
    }

    #[test]
    fn a_routing_profile_outlines_dead_experts_and_darkens_at_twice_uniform() {
        let layer = |layer, topk: &[u64]| moetune_types::LayerProfile::from_counts(layer, topk, topk, 0.001);
        let profile = RoutingProfile { examples: 3, tokens: 100, top_k: 2, dead_share: 0.001, layers: vec![layer(0, &[100, 100, 0, 0]), layer(1, &[50, 50, 50, 50])] };
        let shares = profile_shares(&profile).unwrap();
        assert_eq!(shares.cells.len(), 8);
        assert_eq!(shares.cells.iter().filter(|c| c.over).count(), 2, "experts 2 and 3 of layer 0 are dead");
        assert_eq!(shares.cells[0].fill, share_colour(1.0), "half the choices on four experts is twice uniform");
        assert_eq!(shares.cells[4].fill, share_colour(0.5));
        assert_eq!((shares.marker_label.as_str(), shares.threshold_x), ("uniform 1/4", 10.0 + SCALE_WIDTH / 2.0));
    }
}
