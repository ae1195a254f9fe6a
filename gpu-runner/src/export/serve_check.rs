//! The serve check: before a job may succeed, every artifact it exported is loaded back the way a
//! consumer loads it (the merged checkpoint from its directory, the base model plus the PEFT adapter,
//! the FP4 checkpoint decoded from its packed tensors) and run on a probe batch of validation data next
//! to the model the job trained. Logits and routing must agree and be finite; an export that loads but
//! computes something else (a wrong layout, a lost scale, a NaN) fails the job instead of shipping.

use std::path::Path;

use moetune_types::results::{ArtifactCheck, ServeCheck};
use moetune_types::TrainingSpec;
use tch::{Device, Kind, Tensor};

use crate::model::{ExpertInput, ExpertStorage, ForwardMode, ForwardOutput, MoeModel};
use crate::train::eval::Batch;
use crate::train::quantizer::Quantizer;
use crate::train::{lora, TrainOutput};

/// Largest logit difference allowed, relative to the largest reference logit (at least 1). The
/// exports hold exactly the values trained (FP4 codes included), so only the order of floating-point
/// operations differs; a broken export is off by the size of the logits themselves.
const RELATIVE_TOLERANCE: f64 = 1e-2;
/// Fewest probe tokens (mean over MoE layers) routed to the same top-k experts.
const MIN_ROUTING_AGREEMENT: f64 = 0.99;

/// Runs the check on the outputs `write_job_outputs` wrote into `dir`. `spec.model` is where the base
/// model is (the adapter is applied to it). Everything runs on the host, where the model is after export.
pub fn run(output: &TrainOutput, spec: &TrainingSpec, dir: &Path, probe: &Batch) -> anyhow::Result<ServeCheck> {
    let kind = super::weight_kind(&output.vars);
    let run = |model: &MoeModel, mode: ForwardMode| tch::no_grad(|| model.forward(&probe.ids, mode));
    let mut artifacts = Vec::new();

    // One model loaded back at a time (its weights live in its VarStore, freed at the end of each
    // block), so the host holds at most two: the trained one and one export.
    let trained = run(&output.model, ForwardMode::default());
    {
        let (_vars, merged) = MoeModel::load_dir(&dir.join("merged"), Device::Cpu, kind)?;
        artifacts.push(compare("merged", "the trained model", &trained, &run(&merged, ForwardMode::default()), &probe.valid));
    }
    if let Some(adapters) = &output.adapters {
        // The SFT adapters on the base, as PEFT applies them: from memory, and as exported.
        let (_vars, base, _) = crate::train::base_model(&spec.model, Device::Cpu, kind, ExpertStorage::Dense)?;
        let exported = lora::load_peft(&dir.join("adapter"), Device::Cpu)?;
        let reference = run(&base, ForwardMode { adapters: Some(adapters), ..Default::default() });
        let loaded = run(&base, ForwardMode { adapters: Some(&exported), ..Default::default() });
        artifacts.push(compare("adapter", "the base model with the SFT adapters", &reference, &loaded, &probe.valid));
    }

    // The trained model with its experts fake-quantized (what QAT trained and the job evaluated), next
    // to the FP4 checkpoint decoded; activations quantized alike when the job quantized them.
    let quantizer = Quantizer {
        format: output.qat_format,
        mxfp4_rule: crate::quant::mxfp4_scale_rule(spec.moe.qat.mxfp4_scale_rule),
        activations: output.activation_amax.clone(),
    };
    let weights = |w: &Tensor| quantizer.weights(w);
    let activations = |layer: usize, which: ExpertInput, x: &Tensor| quantizer.activation(layer, which, x);
    let inputs = output.activation_amax.is_some().then_some(&activations as &dyn Fn(usize, ExpertInput, &Tensor) -> Tensor);
    let reference = run(&output.model, ForwardMode { expert_transform: Some(&weights), expert_inputs: inputs, ..Default::default() });
    let format = output.qat_format.as_str();
    {
        let (_vars, fp4) = MoeModel::load_dir(&dir.join(format), Device::Cpu, kind)?;
        let loaded = run(&fp4, ForwardMode { expert_inputs: inputs, ..Default::default() });
        artifacts.push(compare(format, "the trained model with FP4 experts", &reference, &loaded, &probe.valid));
    }

    let passed = artifacts.iter().all(|a| a.passed);
    Ok(ServeCheck { probe_tokens: probe.tokens(), artifacts, passed })
}

/// One artifact's outputs next to the reference's, over the real (non-padding) probe tokens.
fn compare(artifact: &str, reference_name: &str, reference: &ForwardOutput, loaded: &ForwardOutput, valid: &Tensor) -> ArtifactCheck {
    let rows = valid.nonzero().squeeze_dim(1);
    let flat = |t: &Tensor| t.to_kind(Kind::Double).flatten(0, 1).index_select(0, &rows);
    let (expected, actual) = (flat(&reference.logits), flat(&loaded.logits));
    let finite = actual.isfinite().all().int64_value(&[]) != 0;
    let max_logit_diff = if finite { (&expected - &actual).abs().max().double_value(&[]) } else { f64::INFINITY };
    let tolerance = RELATIVE_TOLERANCE * expected.abs().max().double_value(&[]).max(1.0);
    let layers: Vec<f64> = reference
        .router_top_k
        .iter()
        .zip(&loaded.router_top_k)
        .map(|((_, a), (_, b))| {
            let (a, b) = (a.sort(-1, false).0.index_select(0, &rows), b.sort(-1, false).0.index_select(0, &rows));
            a.eq_tensor(&b).all_dim(-1, false).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
        })
        .collect();
    let routing_agreement = if layers.is_empty() { 1.0 } else { layers.iter().sum::<f64>() / layers.len() as f64 };
    let passed = finite && max_logit_diff <= tolerance && routing_agreement >= MIN_ROUTING_AGREEMENT;
    ArtifactCheck { artifact: artifact.into(), reference: reference_name.into(), max_logit_diff, tolerance, routing_agreement, finite, passed }
}

/// Why a check failed, for the job's error: every artifact that did not pass.
pub fn failure(check: &ServeCheck) -> String {
    let failed: Vec<String> = check
        .artifacts
        .iter()
        .filter(|a| !a.passed)
        .map(|a| {
            let what = if !a.finite { "produced NaN or Inf logits".to_string() } else { format!("max logit difference {:.3e} (limit {:.3e}), routing agreement {:.3}", a.max_logit_diff, a.tolerance, a.routing_agreement) };
            format!("{} does not reproduce {} on the probe batch: {what}", a.artifact, a.reference)
        })
        .collect();
    format!("the exported artifacts failed the serve check, so none was published: {}", failed.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny;
    use crate::train::{JobData, Reporter};

    struct Quiet;

    impl Reporter for Quiet {
        fn event(&mut self, _: moetune_types::RunnerEventKind) {}
        fn checkpoint(&mut self, _: &str, _: &str, _: u32, _: &Path) -> anyhow::Result<()> {
            Ok(())
        }
    }

    /// Replaces one tensor of the exported merged checkpoint with `change(tensor)`.
    fn tamper(dir: &Path, name: &str, change: impl Fn(&Tensor) -> Tensor) {
        let file = dir.join("merged/model.safetensors");
        let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&file).unwrap().into_iter().map(|(n, t)| if n == name { (n, change(&t)) } else { (n, t) }).collect();
        Tensor::write_safetensors(&tensors, &file).unwrap();
    }

    #[test]
    fn exports_of_a_job_pass_and_a_tampered_or_nan_export_fails() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo/finance-alpaca-mini.jsonl")).unwrap();
        let examples = moetune_types::dataset::parse_jsonl(&text).unwrap().into_iter().take(24).collect();
        let moe = serde_json::from_value(serde_json::json!({"max_steps": 2, "qat": {"steps": 1}, "monitor": {"enabled": false}})).unwrap();
        let spec = TrainingSpec { model: tiny::NAME.into(), n_epochs: 1, batch_size: 4, seed: 3, moe, routing_profile: None };
        let output = crate::train::run(&spec, JobData { train: examples, validation: vec![] }, Device::Cpu, None, &mut Quiet).unwrap();
        let dir = std::env::temp_dir().join(format!("moetune-serve-check-{}", std::process::id()));
        let mut summary = output.summary.clone();
        super::super::write_checked_outputs(&output, &spec, tiny::NAME, &dir, &mut summary).unwrap();
        let check: ServeCheck = serde_json::from_value(summary["serve_check"].clone()).unwrap();
        let names: Vec<&str> = check.artifacts.iter().map(|a| a.artifact.as_str()).collect();
        assert_eq!(names, ["merged", "adapter", output.qat_format.as_str()]);
        for artifact in &check.artifacts {
            assert!(artifact.passed && artifact.finite && artifact.routing_agreement == 1.0, "{artifact:?}");
            assert!(artifact.max_logit_diff <= 1e-4, "{artifact:?}");
        }
        assert!(check.passed && check.probe_tokens > 0);

        // A lost scale factor in the merged weights: loads fine, computes something else.
        tamper(&dir, "lm_head.weight", |w| w * 1.5);
        let check = run(&output, &spec, &dir, &output.probe).unwrap();
        assert!(!check.passed && !check.artifacts[0].passed && check.artifacts[1..].iter().all(|a| a.passed), "{check:?}");
        let message = failure(&check);
        assert!(message.starts_with("the exported artifacts failed the serve check") && message.contains("merged does not reproduce the trained model"), "{message}");

        tamper(&dir, "model.embed_tokens.weight", |w| w.ones_like() * f64::NAN);
        let check = run(&output, &spec, &dir, &output.probe).unwrap();
        assert!(!check.artifacts[0].finite && failure(&check).contains("NaN or Inf"), "{check:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
