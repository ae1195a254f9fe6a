//! Gangs: how many ranks a job whose `world_size` is `"auto"` gets (the fewest whose one rank fits
//! the registered runners, by the memory model of [`crate::placement`]), and whether enough
//! registered runners fit a job to form its gang.

use std::collections::BTreeMap;

use crate::placement::{gib, TrainingDevice};
use crate::{JobRequirements, MemoryModel, MoeSftQatOptions, RunnerInfo, TrainingSpec};

impl MemoryModel {
    /// The number of ranks for a job whose `world_size` is `"auto"`: the fewest whose one rank fits as
    /// many of `runners` (those not lost) of one device kind as there are ranks (a gang forms from
    /// runners of one kind); else the fewest whose rank fits one (the job then waits for more such
    /// runners, saying so). Under `cpu_offload` a CUDA runner must also hold the rank's offloaded
    /// shards in its host memory. Candidates divide `gradient_accumulation_steps`, and the experts
    /// under expert parallelism, and are 2 or more when the model is split. Err: why none fits, and
    /// what to change.
    pub fn choose_world_size(&self, spec: &TrainingSpec, runners: &[&RunnerInfo]) -> Result<u32, String> {
        let candidates = world_size_candidates(&spec.moe, Some(self.num_experts));
        let Some(&most) = candidates.last() else { return Err(no_candidate(&spec.moe)) };
        if runners.is_empty() {
            return Err("`world_size: \"auto\"` sizes the job against the registered runners, and none is registered: give `world_size` as a number.".into());
        }
        // One copy of the spec, without what the estimate never reads (the prompts may be large).
        let mut trial = spec.clone();
        trial.moe.eval_prompts.clear();
        let mut needs = |ranks: u32| {
            trial.moe.world_size = ranks;
            (self.requirements(&trial), self.job_memory(&trial, TrainingDevice::Cuda).offloaded_bytes)
        };
        let mut first_fitting_one = None;
        for &n in &candidates {
            let (requirements, offloaded) = needs(n);
            let holds = |r: &&&RunnerInfo| r.fits(&requirements) && (r.device != "cuda" || offloaded <= r.host_memory_bytes);
            let fitting: Vec<&RunnerInfo> = runners.iter().filter(holds).copied().collect();
            if most_of_one_kind(&fitting) >= n as usize {
                return Ok(n);
            }
            if !fitting.is_empty() {
                first_fitting_one.get_or_insert(n);
            }
        }
        if let Some(n) = first_fitting_one {
            return Ok(n);
        }
        let (needed, offloaded) = needs(most);
        let largest = runners.iter().filter(|r| needed.device.allows(&r.device)).max_by_key(|r| r.training_memory_bytes());
        Err(match largest {
            None => format!("`world_size: \"auto\"`: no registered runner is of the device the job asks for ({}).", needed.device.as_str()),
            Some(r) => format!(
                "No world size fits the registered runners: on {most} ranks (the most that divide gradient_accumulation_steps {}) one rank needs {} on a {} runner{}, and the largest has {}. Raise gradient_accumulation_steps, set fully_sharded (and cpu_offload), or add larger runners.",
                spec.moe.gradient_accumulation_steps,
                gib(needed.memory_on(&r.device)),
                r.device,
                if offloaded > 0 && r.device == "cuda" { format!(" and {} of host memory", gib(offloaded)) } else { String::new() },
                gib(r.training_memory_bytes())
            ),
        })
    }
}

/// The most of `runners` that are of one device kind: the largest gang they can form.
fn most_of_one_kind(runners: &[&RunnerInfo]) -> usize {
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runners {
        *per_kind.entry(r.device.as_str()).or_default() += 1;
    }
    per_kind.into_values().max().unwrap_or(0)
}

/// Why a job on several runners waits when fewer registered runners (`runners`, those not lost) of
/// one device kind fit it than its world size (each rank takes a runner of its own, and a gang forms
/// from runners of one kind); None when enough do.
pub fn gang_reason(needs: &JobRequirements, runners: &[&RunnerInfo]) -> Option<String> {
    let world = needs.world_size as usize;
    if world <= 1 {
        return None;
    }
    let fitting: Vec<&RunnerInfo> = runners.iter().filter(|r| r.fits(needs)).copied().collect();
    let gang = most_of_one_kind(&fitting);
    (gang < world).then(|| format!("Waiting for {world} runners that fit the job (one rank each, of one device kind): {gang} registered runner(s) fit it. Lower world_size, or add runners."))
}

/// The world sizes a job may take, fewest first: dividing `gradient_accumulation_steps` (and
/// `experts` under expert parallelism, when known), 2 or more when the model is split.
pub fn world_size_candidates(o: &MoeSftQatOptions, experts: Option<i64>) -> Vec<u32> {
    let least = if o.expert_parallel || o.fully_sharded { 2 } else { 1 };
    (least..=crate::world_size::MAX)
        .filter(|n| o.gradient_accumulation_steps % n == 0)
        .filter(|&n| !o.expert_parallel || experts.is_none_or(|e| e % i64::from(n) == 0))
        .collect()
}

/// Why no world size can be chosen at all.
pub fn no_candidate(o: &MoeSftQatOptions) -> String {
    format!(
        "`world_size: \"auto\"` needs a world size of 2 or more that divides gradient_accumulation_steps ({}) to split the model: raise gradient_accumulation_steps (e.g. to 8).",
        o.gradient_accumulation_steps
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirements::DeviceRequest;
    use crate::SftMethod;

    fn runner(gib: i64) -> RunnerInfo {
        RunnerInfo::for_tests("cuda", gib)
    }

    #[test]
    fn the_fewest_ranks_that_fit_as_many_runners() {
        let model: MemoryModel = serde_json::from_value(serde_json::json!({
            "total_params": 1_000_000_000i64, "router_params": 1_000_000, "expert_params": 900_000_000, "vocab_size": 32_000, "hidden_size": 1024,
            "num_hidden_layers": 8, "moe_layers": 8, "num_experts": 8, "expert_intermediate_size": 1024, "q_dim": 1024, "kv_dim": 256,
            "activation_elements_per_token": 100_000, "activation_elements_per_token_per_seq": 8
        }))
        .unwrap();
        let mut spec = TrainingSpec { model: "m".into(), n_epochs: 1, batch_size: 1, seed: 0, moe: MoeSftQatOptions { sft_method: SftMethod::Full, fully_sharded: true, gradient_accumulation_steps: 8, device: DeviceRequest::Cuda, ..Default::default() }, routing_profile: None };
        let per_rank = |spec: &TrainingSpec, n: u32| {
            let mut s = spec.clone();
            s.moe.world_size = n;
            model.requirements(&s).memory_bytes
        };
        assert_eq!(world_size_candidates(&spec.moe, Some(8)), [2, 4, 8]);
        // Runners between what 4 and 2 ranks need: 4 ranks, once 4 of them are registered.
        let between = runner(0);
        let between = RunnerInfo { gpu_memory_bytes: (per_rank(&spec, 2) + per_rank(&spec, 4)) / 2, ..between };
        assert_eq!(model.choose_world_size(&spec, &[&between; 4]), Ok(4));
        // Fewer runners than that: still the fewest ranks that fit one (the job waits for the rest).
        assert_eq!(model.choose_world_size(&spec, &[&between; 2]), Ok(4));
        // Too small for 8 ranks: refused, saying what one rank needs.
        let small = RunnerInfo { gpu_memory_bytes: per_rank(&spec, 8) - 1, ..between.clone() };
        assert!(model.choose_world_size(&spec, &[&small]).unwrap_err().contains("on 8 ranks"));
        assert!(model.choose_world_size(&spec, &[]).unwrap_err().contains("none is registered"));
        spec.moe.gradient_accumulation_steps = 1;
        assert!(model.choose_world_size(&spec, &[&between]).unwrap_err().contains("raise gradient_accumulation_steps"));
        // Offloaded shards must fit a CUDA runner's host memory too.
        spec.moe.gradient_accumulation_steps = 8;
        spec.moe.cpu_offload = true;
        assert_eq!(model.choose_world_size(&spec, &[&between; 2]), Ok(2), "the GPU holds one layer at any world size");
        let no_host = RunnerInfo { host_memory_bytes: 1 << 30, ..between.clone() };
        assert!(model.choose_world_size(&spec, &[&no_host; 8]).unwrap_err().contains("of host memory"));
        spec.moe.gradient_accumulation_steps = 1;
        // A whole model that fits one runner: one rank.
        let whole = TrainingSpec { moe: MoeSftQatOptions { sft_method: SftMethod::Lora, ..Default::default() }, ..spec };
        assert_eq!(model.choose_world_size(&whole, &[&runner(80)]), Ok(1));
    }

    #[test]
    fn a_gang_forms_from_runners_of_one_device_kind() {
        let needs = JobRequirements { world_size: 3, ..Default::default() };
        let (cpu, gpu) = (RunnerInfo::for_tests("cpu", 64), runner(80));
        assert!(gang_reason(&needs, &[&gpu, &gpu, &cpu]).unwrap().contains("2 registered runner(s) fit it"));
        assert_eq!(gang_reason(&needs, &[&gpu, &gpu, &gpu, &cpu]), None);
        assert_eq!(gang_reason(&JobRequirements::default(), &[]), None);
    }
}
