//! Data-parallel training through `moetune-runner train --world-size N` on this CPU-only machine:
//! N runner processes join over loopback (c10d's TCPStore and Gloo) and train one job. The losses
//! equal the single-process run with the same global batch, and a checkpoint written by one world
//! size resumes in another with the losses of the uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use moetune_e2e::{free_port, run_ok, scratch_dir, train_losses, workspace_binary};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl");
/// Relative difference allowed between the losses of different world sizes: the gradients are the
/// same sums taken in another order.
const TOLERANCE: f64 = 1e-5;

fn scratch(name: &str) -> PathBuf {
    scratch_dir("distributed", name)
}


fn train_command(options: &str, out: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(workspace_binary("moetune-runner"));
    command.args(["train", "--data", DATA, "--batch-size", "2", "--options", options]).arg("--out").arg(out).args(args);
    // Two cores here: one intra-op thread per rank keeps four ranks from fighting over them.
    command.env("MOETUNE_THREADS", "1").env("MOETUNE_DEVICE", "cpu");
    command
}

/// Runs `train` on `world` processes of one job; their outputs by rank.
fn run_ranks(world: usize, options: &str, out: &Path, args: &[&str]) -> Vec<std::process::Output> {
    let rendezvous = format!("127.0.0.1:{}", free_port());
    let children: Vec<_> = (0..world)
        .map(|rank| {
            let dist = ["--world-size", &world.to_string(), "--rank", &rank.to_string(), "--rendezvous", &rendezvous, "--bind", "127.0.0.1", "--timeout-seconds", "120"].map(String::from);
            let mut command = train_command(options, out, args);
            command.args(&dist).stdout(Stdio::piped()).stderr(Stdio::piped());
            command.spawn().expect("runner starts")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

/// Trains on `world` processes and returns rank 0's JSON-line events.
fn train(world: usize, options: &str, out: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let stdout = if world == 1 {
        run_ok(&mut train_command(options, out, args))
    } else {
        let outputs = run_ranks(world, options, out, args);
        for (rank, output) in outputs.iter().enumerate() {
            assert!(output.status.success(), "rank {rank} of {world} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        for output in &outputs[1..] {
            assert!(output.stdout.is_empty(), "a rank other than 0 printed events");
        }
        String::from_utf8(outputs[0].stdout.clone()).unwrap()
    };
    stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}


fn assert_close(actual: &BTreeMap<(String, u64), f64>, expected: &BTreeMap<(String, u64), f64>, what: &str) {
    assert_eq!(actual.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>(), "{what}: steps differ");
    for (key, &want) in expected {
        let got = actual[key];
        assert!((got - want).abs() <= TOLERANCE * want.abs().max(1.0), "{what}: {key:?} loss {got} vs {want}");
    }
}

fn summary(events: &[serde_json::Value]) -> &serde_json::Value {
    &events.iter().find(|e| e["type"] == "summary").expect("a summary")["summary"]
}

/// `events` of a run on several ranks against the single process's: the same losses, every evaluation
/// (base, SFT, PTQ, QAT) scoring alike, and a job log line starting `told`.
fn assert_trains_like(events: &[serde_json::Value], single: &[serde_json::Value], told: &str, what: &str) {
    assert_close(&train_losses(events), &train_losses(single), what);
    for (row, want) in summary(events)["eval"].as_array().unwrap().iter().zip(summary(single)["eval"].as_array().unwrap()) {
        let (got, want) = (row["validation_loss"].as_f64().unwrap(), want["validation_loss"].as_f64().unwrap());
        assert!((got - want).abs() <= TOLERANCE * want.abs().max(1.0), "{what}: {} validation loss {got} vs {want}", row["model"]);
    }
    let logged = events.iter().any(|e| e["type"] == "message" && e["message"].as_str().is_some_and(|m| m.starts_with(told)));
    assert!(logged, "{what}: the job log does not say \"{told}…\"");
}

/// LoRA SFT with a trained router (adapters and router weights, some experts idle in a micro-batch)
/// then LoRA-QAT, and full SFT → full QAT: 2 and 4 ranks give the single process's losses.
#[test]
fn two_and_four_ranks_train_with_the_single_process_losses() {
    let dir = scratch("equal");
    let jobs = [
        (
            "lora",
            r#"{"learning_rate": 3e-3, "max_steps": 4, "gradient_accumulation_steps": 4, "lora": {"target_experts": true},
                "router": {"mode": "train", "jitter": 0.01}, "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 0}"#,
        ),
        ("full", r#"{"sft_method": "full", "learning_rate": 1e-3, "max_steps": 3, "gradient_accumulation_steps": 4, "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 0}"#),
    ];
    for (name, options) in jobs {
        let single = train(1, options, &dir.join(format!("{name}-1")), &[]);
        let expected = train_losses(&single);
        assert!(expected.len() >= 5, "{name}: {expected:?}");
        for world in [2, 4] {
            let events = train(world, options, &dir.join(format!("{name}-{world}")), &[]);
            assert_trains_like(&events, &single, &format!("Data parallel over {world} ranks"), &format!("{name} on {world} ranks"));
        }
    }
}

/// Each rank stores its share of the optimiser state; the checkpoint resumes in one process and in
/// four, with the losses of the uninterrupted run; a checkpoint missing a shard is refused.
#[test]
fn a_checkpoint_of_two_ranks_resumes_in_another_world_size() {
    let dir = scratch("resume");
    let options = r#"{"learning_rate": 3e-3, "max_steps": 6, "gradient_accumulation_steps": 2, "lora": {"dropout": 0.1},
                      "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 3}"#;
    let checkpoints = dir.join("checkpoints");
    let full = train_losses(&train(2, options, &dir.join("full"), &["--checkpoints", checkpoints.to_str().unwrap()]));
    let at = checkpoints.join("sft-step-000003");
    assert!(at.join("optimizer.safetensors").exists() && at.join("optimizer.rank1-of-2.safetensors").exists(), "the optimiser state is not in two shards");
    assert_eq!(std::fs::read_to_string(checkpoints.join("latest")).unwrap(), "qat-final");
    let later: BTreeMap<_, _> = full.iter().filter(|((stage, step), _)| stage == "qat" || *step > 3).map(|(k, v)| (k.clone(), *v)).collect();
    for world in [1, 4] {
        let resumed = train_losses(&train(world, options, &dir.join(format!("resumed-{world}")), &["--resume", at.to_str().unwrap()]));
        assert_close(&resumed, &later, &format!("resumed on {world} ranks"));
    }
    std::fs::remove_file(at.join("optimizer.rank1-of-2.safetensors")).unwrap();
    let output = train_command(options, &dir.join("broken"), &["--resume", at.to_str().unwrap()]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("optimiser state has 2 shards") && stderr.contains("optimizer.rank1-of-2.safetensors is missing"), "{stderr}");
    std::fs::remove_file(at.join("optimizer.safetensors")).unwrap();
    let output = train_command(options, &dir.join("broken"), &["--resume", at.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("at sft step 3 but has no optimizer.safetensors"), "{stderr}");
}

/// `options` with the experts split across `world` ranks.
fn expert_parallel(options: &str, world: usize) -> String {
    split(options, world, "expert_parallel")
}

/// `options` with the model split across `world` ranks as `how` (`expert_parallel`, `fully_sharded`) says.
fn split(options: &str, world: usize, how: &str) -> String {
    let mut value: serde_json::Value = serde_json::from_str(options).unwrap();
    value["world_size"] = world.into();
    value[how] = true.into();
    value.to_string()
}

/// Expert parallelism (each rank holds its share of the experts; tokens cross ranks by all-to-all):
/// full SFT → full QAT on 2 and 4 ranks, and LoRA on attention with a trained router on 2, give the
/// single process's losses and evaluations, and rank 0 writes the whole model (its outputs are
/// checked by reading them back).
#[test]
fn expert_parallel_ranks_train_with_the_single_process_losses() {
    let dir = scratch("experts");
    let jobs = [
        ("full", r#"{"sft_method": "full", "learning_rate": 1e-3, "max_steps": 3, "gradient_accumulation_steps": 4, "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 0}"#, &[2, 4][..]),
        (
            "lora",
            r#"{"learning_rate": 3e-3, "max_steps": 3, "gradient_accumulation_steps": 2, "router": {"mode": "train", "jitter": 0.01, "capacity_factor": 1.0},
                "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 0}"#,
            &[2][..],
        ),
    ];
    for (name, options, worlds) in jobs {
        let single = train(1, options, &dir.join(format!("{name}-1")), &[]);
        for &world in worlds {
            let out = dir.join(format!("{name}-{world}"));
            let events = train(world, &expert_parallel(options, world), &out, &[]);
            assert_trains_like(&events, &single, &format!("Expert parallel over {world} ranks"), &format!("{name}, experts split across {world} ranks"));
        }
    }
}

/// Fully sharded weights (each rank holds 1/N of every weight, gradient and optimiser state; a
/// layer's weights are gathered whole while it runs): full SFT → full QAT on 2 and 4 ranks, and on 2
/// with the shards offloaded to host memory, gives the single process's losses and evaluations, and
/// rank 0 writes the whole model.
#[test]
fn fully_sharded_ranks_train_with_the_single_process_losses() {
    let dir = scratch("sharded");
    let options = r#"{"sft_method": "full", "learning_rate": 1e-3, "max_steps": 3, "gradient_accumulation_steps": 4, "router": {"mode": "train"}, "qat": {"steps": 2, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 0}"#;
    let single = train(1, options, &dir.join("single"), &[]);
    assert!(train_losses(&single).len() >= 5, "SFT and QAT steps");
    for (world, offload) in [(2, false), (4, false), (2, true)] {
        let mut sharded = split(options, world, "fully_sharded");
        if offload {
            sharded = split(&sharded, world, "cpu_offload");
        }
        let events = train(world, &sharded, &dir.join(format!("ranks-{world}-{offload}")), &[]);
        let what = format!("fully sharded over {world} ranks{}", if offload { ", offloaded" } else { "" });
        assert_trains_like(&events, &single, &format!("Fully sharded over {world} ranks"), &what);
        let told = events.iter().any(|e| e["message"].as_str().is_some_and(|m| m.contains("in host memory in fp32, stepped on the CPU")));
        assert_eq!(told, offload, "{what}: whether the log says the shards are in host memory");
    }
}

/// Each rank of a split model (its experts, or its shard of every weight) stores its share in a file
/// of its own; the checkpoint resumes on as many ranks and on twice as many, with the losses of the
/// uninterrupted run, and is refused, saying why, by a job that holds the model whole.
#[test]
fn a_split_checkpoint_resumes_on_as_many_ranks_and_on_more() {
    let whole = r#"{"sft_method": "full", "learning_rate": 1e-3, "max_steps": 4, "gradient_accumulation_steps": 4, "qat": {"steps": 1, "learning_rate": 1e-4}, "checkpoint_every_n_steps": 2}"#;
    for how in ["expert_parallel", "fully_sharded"] {
        let dir = scratch(&format!("{how}-resume"));
        let checkpoints = dir.join("checkpoints");
        let full = train_losses(&train(2, &split(whole, 2, how), &dir.join("full"), &["--checkpoints", checkpoints.to_str().unwrap()]));
        let at = checkpoints.join("sft-step-000002");
        for file in ["split.rank0-of-2.safetensors", "split.rank1-of-2.safetensors", "optimizer.rank1-of-2.safetensors"] {
            assert!(at.join(file).exists(), "{how}: {file} is not in the checkpoint");
        }
        let later: BTreeMap<_, _> = full.iter().filter(|((stage, step), _)| stage == "qat" || *step > 2).map(|(k, v)| (k.clone(), *v)).collect();
        for world in [2, 4] {
            let resumed = train_losses(&train(world, &split(whole, world, how), &dir.join(format!("resumed-{world}")), &["--resume", at.to_str().unwrap()]));
            assert_close(&resumed, &later, &format!("{how}: resumed on {world} ranks"));
        }
        let output = train_command(whole, &dir.join("refused"), &["--resume", at.to_str().unwrap()]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("holds the model split across 2 ranks, and this job holds it whole"), "{how}: {stderr}");
        // Split the other way on as many ranks: the pieces are of another kind, refused by name.
        let other = if how == "expert_parallel" { "fully_sharded" } else { "expert_parallel" };
        let outputs = run_ranks(2, &split(whole, 2, other), &dir.join("other"), &["--resume", at.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&outputs[0].stderr);
        assert!(!outputs[0].status.success() && stderr.contains(&format!("({how}), and this job splits")), "{how} resumed as {other}: {stderr}");
    }
}

/// Ranks started for different jobs (here: another seed on rank 1) refuse to train.
#[test]
fn ranks_started_for_different_jobs_refuse_to_train() {
    let dir = scratch("different");
    let rendezvous = format!("127.0.0.1:{}", free_port());
    let children: Vec<_> = ["1", "2"]
        .iter()
        .enumerate()
        .map(|(rank, seed)| {
            let args = ["--seed", seed, "--world-size", "2", "--rank", &rank.to_string(), "--rendezvous", &rendezvous, "--bind", "127.0.0.1", "--timeout-seconds", "60"].map(String::from);
            train_command(r#"{"max_steps": 1}"#, &dir.join("out"), &[]).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("not started for the same job"), "{stderr}");
    }
}

/// A rank that never comes is an error on the others after the timeout, naming what it waited for.
#[test]
fn a_missing_rank_fails_the_job_with_a_clear_error() {
    let dir = scratch("missing");
    let rendezvous = format!("127.0.0.1:{}", free_port());
    let output = train_command(r#"{"max_steps": 1}"#, &dir.join("out"), &["--world-size", "2", "--rank", "0", "--rendezvous", &rendezvous, "--bind", "127.0.0.1", "--timeout-seconds", "3"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rank 0 of 2 joining"), "{stderr}");
    for (args, error) in [
        (&["--world-size", "2", "--rank", "2"][..], "--rank 2 must be below --world-size 2"),
        (&["--rendezvous", "127.0.0.1:29500"][..], "--rendezvous is for a data-parallel run: give --world-size"),
        (&["--world-size", "2", "--rendezvous", ":29500"][..], "--rendezvous must name a host"),
        (&["--world-size", "2", "--rendezvous", "127.0.0.1:29500", "--timeout-seconds", "0"][..], "--timeout-seconds"),
    ] {
        let bad = train_command("{}", &dir.join("out"), args).output().unwrap();
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success() && stderr.contains(error), "{args:?}: {stderr}");
    }
}

/// The routing-drift guardrail is rank 0's decision: every rank stops at the same step after the
/// checkpoint they store together, with the same reason.
#[test]
fn the_drift_guardrail_stops_every_rank_at_one_checkpoint() {
    let dir = scratch("drift");
    let options = r#"{"learning_rate": 1e-4, "max_steps": 20, "qat": {"steps": 0}, "monitor": {"every_n_steps": 5, "max_routing_drift": 0.04}}"#;
    let checkpoints = dir.join("checkpoints");
    let outputs = run_ranks(2, options, &dir.join("out"), &["--checkpoints", checkpoints.to_str().unwrap()]);
    let reasons: Vec<String> = outputs
        .iter()
        .map(|o| {
            assert!(!o.status.success(), "a rank trained on past the guardrail");
            let stderr = String::from_utf8_lossy(&o.stderr);
            stderr.lines().find(|l| l.contains("exceeds monitor.max_routing_drift")).unwrap_or_else(|| panic!("{stderr}")).to_string()
        })
        .collect();
    assert_eq!(reasons[0], reasons[1]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&outputs[0].stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let crossed = events.iter().find(|e| e["type"] == "monitor" && e["drift_exceeded"] == true).expect("a check over the guardrail");
    let name = format!("sft-step-{:06}", crossed["step"].as_u64().unwrap());
    assert!(reasons[0].contains(&format!("at sft step {}", crossed["step"])), "{}", reasons[0]);
    assert_eq!(std::fs::read_to_string(checkpoints.join("latest")).unwrap(), name);
    assert!(checkpoints.join(&name).join("optimizer.rank1-of-2.safetensors").exists(), "both ranks stored the pause checkpoint");
}
