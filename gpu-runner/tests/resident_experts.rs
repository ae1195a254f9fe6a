//! Frozen experts kept packed in FP4 against the straightforward path: the same model with those
//! experts dequantised into dense weights. Logits and adapter gradients are equal, the dense storage is
//! freed, and a shipped MXFP4 checkpoint loads packed as it is.

use moetune_runner::export;
mod common;

use common::{configs, serial};
use moetune_runner::model::{new_seeded, Adapters, ExpertStorage, ForwardMode, MoeModel, PackedFormat};
use moetune_runner::train::lora;
use moetune_types::{LoraOptions, QatFormat};
use tch::{nn, Device, Kind, Tensor};

fn ids(vocab: i64) -> Tensor {
    Tensor::from_slice(&(0..24).map(|i| (i * 7 + 3) % vocab).collect::<Vec<i64>>()).view([2, 12])
}

/// LoRA on attention and experts with non-zero B, drawn from a fixed seed (equal for equal models).
fn adapters(model: &MoeModel) -> Adapters {
    tch::manual_seed(21);
    let adapters = lora::create(model, &LoraOptions { target_experts: moetune_types::ExpertTargets::All(true), r: 4, ..LoraOptions::default() }, Device::Cpu);
    // In name order: the maps' own order differs between two equal models.
    let mut pairs: Vec<_> = adapters.linear.iter().chain(&adapters.experts).collect();
    pairs.sort_by_key(|(name, _)| name.as_str());
    tch::no_grad(|| {
        for (_, pair) in pairs {
            let _ = pair.b.shallow_clone().copy_(&(Tensor::randn_like(&pair.b) * 0.05));
        }
    });
    adapters
}

/// Logits and the adapters' gradients of a weighted sum of the logits.
fn logits_and_gradients(model: &MoeModel, adapters: &Adapters, ids: &Tensor, transform: Option<&dyn Fn(&Tensor) -> Tensor>) -> (Tensor, Vec<Tensor>) {
    let mode = ForwardMode { adapters: Some(adapters), expert_transform: transform, ..Default::default() };
    let logits = model.forward(ids, mode).logits;
    let vocab = logits.size()[2];
    (&logits * Tensor::linspace(-1.0, 1.0, vocab, (Kind::Float, Device::Cpu))).sum(Kind::Float).backward();
    let grads = lora::trainables(adapters).iter().map(|t| t.tensor.grad().copy()).collect();
    (logits.detach(), grads)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn packed_experts_compute_what_the_dequantised_dense_experts_compute() {
    let _serial = serial();
    for (arch, config) in configs() {
        for format in [PackedFormat::Mxfp4, PackedFormat::Nvfp4] {
            // Both models hold the same values: the reference is packed, then unpacked to dense.
            let (packed_vars, dense_vars) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
            let packed = new_seeded(&packed_vars, config.clone(), 5);
            let dense = new_seeded(&dense_vars, config.clone(), 5);
            packed.pack_experts(format).unwrap();
            dense.pack_experts(format).unwrap();
            dense.unpack_experts(Kind::Float);
            assert!(packed.has_packed_experts() && !dense.has_packed_experts());
            assert_eq!(packed.packed_expert_format(), Some(format));

            // The packed model's dense expert variables hold nothing; the packed bytes are ~4.25–4.5 bits
            // per weight.
            let expert_params: Vec<_> = packed.params.iter().filter(|p| p.name.ends_with("experts.gate_up_proj") || p.name.ends_with("experts.down_proj")).collect();
            let weights: i64 = expert_params.iter().map(|p| p.numel()).sum();
            let variables = packed_vars.variables();
            assert!(expert_params.iter().all(|p| variables[&p.name].numel() == 0), "{arch}: dense experts still allocated");
            let bits = packed.packed_expert_bytes() as f64 * 8.0 / weights as f64;
            assert!((4.2..4.6).contains(&bits), "{arch} {format:?}: {bits} bits per weight");
            let dense_variables = dense_vars.variables();
            assert!(expert_params.iter().all(|p| dense_variables[&p.name].size() == p.shape), "{arch}: unpacked shapes");

            let ids = ids(config.vocab_size);
            let (a, b) = (adapters(&packed), adapters(&dense));
            let (packed_logits, packed_grads) = logits_and_gradients(&packed, &a, &ids, None);
            let (dense_logits, dense_grads) = logits_and_gradients(&dense, &b, &ids, None);
            let scale = dense_logits.abs().max().double_value(&[]);
            let diff = max_diff(&packed_logits, &dense_logits);
            assert!(diff <= 1e-6 * scale, "{arch} {format:?}: logits differ by {diff} (up to {scale})");
            for (g, r) in packed_grads.iter().zip(&dense_grads) {
                assert!(max_diff(g, r) <= 1e-5 * r.abs().max().double_value(&[]).max(1e-9), "{arch} {format:?}: adapter gradients differ");
            }
            // LoRA-QAT's path: a transform over each expert's `W + BA`, packed or dense.
            let fake = |w: &Tensor| moetune_runner::quant::mxfp4::fake_quantize_ste(w, Default::default());
            let (packed_qat, _) = logits_and_gradients(&packed, &a, &ids, Some(&fake));
            let (dense_qat, _) = logits_and_gradients(&dense, &b, &ids, Some(&fake));
            assert!(max_diff(&packed_qat, &dense_qat) <= 1e-6 * scale, "{arch} {format:?}: QAT logits differ");

            // Merging needs dense weights: refused while packed, and equal once unpacked.
            assert!(lora::merge_into(&a, &packed, &packed_vars).is_err());
            packed.unpack_experts(Kind::Float);
            lora::merge_into(&a, &packed, &packed_vars).unwrap();
            let merged = tch::no_grad(|| packed.forward(&ids, ForwardMode::default()).logits);
            assert!(max_diff(&merged, &dense_logits) <= 1e-5 * scale, "{arch} {format:?}: merged logits differ");
        }
    }
}

#[test]
fn a_shipped_mxfp4_checkpoint_stays_packed_as_shipped() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("moetune-resident-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_, config) = configs().pop().unwrap();
    let vars = nn::VarStore::new(Device::Cpu);
    let model = new_seeded(&vars, config.clone(), 9);
    // gpt-oss as released: MXFP4 `*_blocks` / `*_scales` experts, everything else unquantised.
    export::fp4::write(&model, &vars, QatFormat::Mxfp4, Default::default(), None, &dir).unwrap();

    let (_decoded_vars, decoded) = MoeModel::load_dir(&dir, Device::Cpu, Kind::Float).unwrap();
    let (packed_vars, packed) = MoeModel::load_dir_with(&dir, Device::Cpu, Kind::Float, ExpertStorage::AsShipped).unwrap();
    assert_eq!(packed.packed_expert_format(), Some(PackedFormat::Mxfp4));
    let ids = ids(config.vocab_size);
    let logits = |m: &MoeModel| tch::no_grad(|| m.forward(&ids, ForwardMode::default()).logits);
    // Same weights; the packed expert is a transposed view where the decoded one is contiguous, so the
    // matmul may sum in another order: equal to float rounding.
    let (want, got) = (logits(&decoded), logits(&packed));
    let diff = max_diff(&want, &got);
    assert!(diff <= 1e-6 * want.abs().max().double_value(&[]), "shipped MXFP4 kept packed differs from the decoded model by {diff}");
    // The packed bytes are the checkpoint's blocks and scales, byte for byte.
    let expected: i64 = packed.params.iter().filter(|p| p.name.ends_with("_proj") && p.name.contains("experts")).map(|p| p.numel() / 2 + p.numel() / 32).sum();
    assert_eq!(packed.packed_expert_bytes(), expected);
    assert!(packed_vars.variables().values().all(|v| v.kind() == Kind::Float));

    // Asking for NVFP4 re-quantises the decoded values on load; dense storage loads them decoded.
    let (_v, nvfp4) = MoeModel::load_dir_with(&dir, Device::Cpu, Kind::Float, ExpertStorage::Packed(PackedFormat::Nvfp4)).unwrap();
    assert_eq!(nvfp4.packed_expert_format(), Some(PackedFormat::Nvfp4));
    let (_v, dense) = MoeModel::load_dir_with(&dir, Device::Cpu, Kind::Float, ExpertStorage::Dense).unwrap();
    assert!(!dense.has_packed_experts());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The dense routing a packed base is compared with (`eval::dense_base_top_k`: the checkpoint's experts
/// read one layer at a time into the packed model) is exactly the routing of the model loaded dense,
/// and the packed experts are back afterwards.
#[test]
fn the_dense_base_routing_is_read_layer_by_layer_from_the_checkpoint() {
    use moetune_runner::train::data::Sample;
    use moetune_runner::train::eval::{self, Batch};
    let _serial = serial();
    for (arch, config) in configs() {
        let dir = std::env::temp_dir().join(format!("moetune-dense-routing-{arch}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let vars = nn::VarStore::new(Device::Cpu);
        let model = new_seeded(&vars, config.clone(), 13);
        model.save_pretrained(&vars, &dir, Kind::Float, u64::MAX).unwrap();

        let ids = ids(config.vocab_size);
        let rows = Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap();
        let samples: Vec<Sample> = rows.chunks(12).map(|row| Sample { ids: row.to_vec(), labels: row.to_vec(), example_count: 1 }).collect();
        let batches = [Batch::new(&samples.iter().collect::<Vec<_>>(), 0, Device::Cpu)];
        let (_dv, dense) = MoeModel::load_dir_with(&dir, Device::Cpu, Kind::Float, ExpertStorage::Dense).unwrap();
        let (_pv, packed) = MoeModel::load_dir_with(&dir, Device::Cpu, Kind::Float, ExpertStorage::Packed(PackedFormat::Nvfp4)).unwrap();
        let (_, dense_top_k) = eval::score(&dense, ForwardMode::default(), &batches);
        let (_, packed_top_k) = eval::score(&packed, ForwardMode::default(), &batches);
        let reference = eval::dense_base_top_k(&packed, &dir, &batches).unwrap();
        assert_eq!(reference[0].len(), dense_top_k[0].len(), "{arch}: one top-k per MoE layer");
        for (layer, (want, got)) in dense_top_k[0].iter().zip(&reference[0]).enumerate() {
            assert!(want.equal(got), "{arch}: layer {layer} routes otherwise than the dense model");
        }
        assert!(packed.has_packed_experts(), "{arch}: the packed experts are restored");
        let (_, again) = eval::score(&packed, ForwardMode::default(), &batches);
        assert!(again[0].iter().zip(&packed_top_k[0]).all(|(a, b)| a.equal(b)), "{arch}: the packed model is unchanged");
        let agreement = eval::routing_agreement(&reference, &packed_top_k, &batches);
        assert!(agreement.iter().all(|a| (0.0..=1.0).contains(a)), "{arch}: {agreement:?}");
        eprintln!("{arch}: NVFP4-packed base keeps the dense routing of {agreement:?} of tokens per MoE layer");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
