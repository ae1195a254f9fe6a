//! `moetune jobs follow`: the job's Server-Sent Events (`events?stream=true`), shown as a progress bar
//! per training stage (step, loss, learning rate, tokens/s, ETA) with messages printed above it and
//! monitor alerts highlighted. Reconnects with `Last-Event-ID` if the stream drops.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moetune_client::{types, Client};
use serde_json::Value;

use crate::Failure;

const ALERT: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// Follows until the stream says `done`; the exit code says how the job ended.
pub async fn follow(client: &Client, base: &str, token: &str, job_id: &str, json: bool) -> Result<u8, Failure> {
    let http = reqwest::Client::new();
    let mut view = View::new(json);
    let mut last_id: Option<String> = None;
    let mut retries = 0;
    loop {
        let mut request = http.get(format!("{base}/v1/fine_tuning/jobs/{job_id}/events?stream=true")).bearer_auth(token);
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = match request.send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                return Err(Failure { code: if status.is_client_error() { 3 } else { 4 }, message: format!("{status}: {text}") });
            }
            Err(e) if retries < 5 => {
                view.say(&format!("connection lost ({e}); reconnecting"));
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1 << retries)).await;
                continue;
            }
            Err(e) => return Err(Failure { code: 4, message: e.to_string() }),
        };
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            retries = 0;
            if event.event == "done" {
                view.finish();
                return outcome(client, job_id, json).await;
            }
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            if let Ok(object) = serde_json::from_str::<Value>(&event.data) {
                view.show(&object);
            }
        }
        // The stream ended without `done`: the connection dropped; continue after the last event.
    }
}

async fn outcome(client: &Client, job_id: &str, json: bool) -> Result<u8, Failure> {
    let job = client.fine_tuning_retrieve().id(job_id).send().await?.into_inner();
    if json {
        println!("{}", serde_json::to_string(&job).expect("serializes"));
    } else {
        let detail = job.error.as_ref().map(|e| format!(": {} ({})", e.message, e.code)).unwrap_or_default();
        println!("{} {}{detail}", job.id, job.status);
        if let Some(model) = &job.fine_tuned_model {
            println!("fine-tuned model: {model}");
        }
    }
    Ok(if matches!(job.status, types::JobStatus::Succeeded) { 0 } else { 1 })
}

/// What the terminal shows: one bar per stage, lines above it.
struct View {
    json: bool,
    bar: Option<ProgressBar>,
    stage: String,
}

impl View {
    fn new(json: bool) -> Self {
        Self { json, bar: None, stage: String::new() }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            // A hidden bar (no terminal) prints nothing, not even println.
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn show(&mut self, event: &Value) {
        if self.json {
            println!("{event}");
            return;
        }
        let data = &event["data"];
        match event["type"].as_str() {
            Some("metrics") => self.step(data),
            Some("monitor") if data["alert"] == true => {
                let action = data["action"].as_str().map(|a| format!(", action: {a}")).unwrap_or_default();
                self.say(&format!(
                    "{ALERT}MONITOR ALERT{RESET} {} step {}: router collapse (top-1 share {:.3}, entropy {:.3}){action}",
                    data["stage"].as_str().unwrap_or("?"),
                    data["step"],
                    data["mean_top1_share"].as_f64().unwrap_or(f64::NAN),
                    data["mean_entropy_norm"].as_f64().unwrap_or(f64::NAN)
                ));
            }
            Some("monitor") => {}
            _ => {
                let level = event["level"].as_str().unwrap_or("info");
                let message = event["message"].as_str().unwrap_or_default();
                if level == "error" { self.say(&format!("{ALERT}{message}{RESET}")) } else { self.say(message) }
            }
        }
    }

    fn step(&mut self, data: &Value) {
        let stage = data["stage"].as_str().unwrap_or("train").to_string();
        if stage != self.stage || self.bar.is_none() {
            self.finish();
            let bar = ProgressBar::with_draw_target(data["total_steps"].as_u64(), ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("{prefix:>4} [{bar:30}] {pos}/{len} {msg} ETA {eta}").expect("valid template").progress_chars("=> "));
            bar.set_prefix(stage.to_uppercase());
            self.bar = Some(bar);
            self.stage = stage;
        }
        let bar = self.bar.as_ref().expect("set above");
        bar.set_position(data["step"].as_u64().unwrap_or(0));
        let mut message = format!("loss {:.4}  lr {:.2e}", data["train_loss"].as_f64().unwrap_or(f64::NAN), data["learning_rate"].as_f64().unwrap_or(f64::NAN));
        if let Some(rate) = data["tokens_per_second"].as_f64() {
            message.push_str(&format!("  {rate:.0} tok/s"));
        }
        if let Some(validation) = data["validation_loss"].as_f64() {
            message.push_str(&format!("  val {validation:.4}"));
        }
        bar.set_message(message);
        // Without a terminal the bar does not draw: print each step as a line instead.
        if bar.is_hidden() {
            eprintln!("{} step {}/{}: {}", self.stage, data["step"], data["total_steps"], bar.message());
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
