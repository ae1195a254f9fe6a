//! Frozen routed experts kept packed in FP4 on the device and dequantised one expert at a time inside
//! the forward pass.
//!
//! When experts are frozen (LoRA SFT, LoRA-QAT) their weights are read, never written, so they need
//! not exist in bf16: gpt-oss ships its experts in MXFP4 and they stay exactly as shipped; the other
//! architectures can be quantised to MXFP4 or NVFP4 on load (the job option `base_expert_format`).
//! Router, attention, embeddings, norms and LM head stay in the training precision: routing is where
//! quantisation noise hurts MoE models, so the router never sees packed weights.
//!
//! Storage is 4.25 bits per weight (MXFP4: 4-bit codes plus one E8M0 byte per 32) or 4.5 (NVFP4: one
//! E4M3 byte per 16, plus one f32 per expert), against 16 for bf16. A dequantised expert lives only
//! while its tokens are multiplied. Without activation checkpointing autograd keeps it for the input
//! gradient until the backward; with it, the recomputed layer backpropagates its frozen experts one at
//! a time (`DeferredExperts`), so one expert is dense at a time.

use anyhow::{bail, ensure};

use crate::quant::fp4;
use tch::{Device, Kind, Tensor};

/// A packed FP4 format experts can be kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedFormat {
    /// OCP MXFP4: 32 E2M1 codes share one power-of-two (E8M0) scale.
    Mxfp4,
    /// NVFP4: 16 E2M1 codes share one FP8-E4M3 scale, times one f32 scale per expert.
    Nvfp4,
}

impl PackedFormat {
    fn block(self) -> i64 {
        match self {
            PackedFormat::Mxfp4 => fp4::MXFP4_BLOCK as i64,
            PackedFormat::Nvfp4 => fp4::NVFP4_BLOCK as i64,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PackedFormat::Mxfp4 => "mxfp4",
            PackedFormat::Nvfp4 => "nvfp4",
        }
    }
}

/// One fused expert weight (`[experts, out, in]`, the `linear` orientation whatever the architecture
/// stores) in a packed FP4 format.
pub struct PackedExperts {
    pub format: PackedFormat,
    /// `[experts, out, in/2]` u8: two E2M1 codes per byte, low nibble first.
    codes: Tensor,
    /// `[experts, out, in/block]` u8: E8M0 exponents (MXFP4) or E4M3 bytes (NVFP4).
    scales: Tensor,
    /// NVFP4: `[experts]` f32 per-expert scales (`weight_scale_2`).
    global: Option<Tensor>,
    /// Decoding tables on the device: E2M1 values by code, and E4M3 values by byte (NVFP4).
    e2m1: Tensor,
    e4m3: Option<Tensor>,
    /// `[experts, out, in]`.
    pub shape: [i64; 3],
}

impl PackedExperts {
    /// MXFP4 as checkpoints ship it: `blocks` `[experts, out, in/32, 16]` and E8M0 `scales`
    /// `[experts, out, in/32]` (gpt-oss's `*_blocks` / `*_scales`), copied as they are.
    pub fn from_mxfp4(blocks: &[u8], scales: &[u8], shape: [i64; 3], device: Device) -> anyhow::Result<Self> {
        let [e, out, input] = shape;
        ensure!(input % 32 == 0, "MXFP4 needs an input dimension that is a multiple of 32, got {input}");
        ensure!(blocks.len() as i64 == e * out * input / 2, "MXFP4 blocks hold {} bytes, expected {}", blocks.len(), e * out * input / 2);
        ensure!(scales.len() as i64 == e * out * input / 32, "MXFP4 scales hold {} bytes, expected {}", scales.len(), e * out * input / 32);
        let codes = Tensor::from_slice(blocks).view([e, out, input / 2]).to_device(device);
        let scales = Tensor::from_slice(scales).view([e, out, input / 32]).to_device(device);
        Ok(Self::assemble(PackedFormat::Mxfp4, codes, scales, None, shape))
    }

    /// Quantises dense experts `[experts, out, in]` (any float kind; read on the host, one expert at
    /// a time) with the codecs the FP4 export uses, so the values are the ones QAT trains against.
    pub fn quantize(dense: &Tensor, format: PackedFormat, device: Device) -> anyhow::Result<Self> {
        let shape: [i64; 3] = dense.size().try_into().map_err(|_| anyhow::anyhow!("experts must be [experts, out, in], got {:?}", dense.size()))?;
        let [e, out, input] = shape;
        if input % format.block() != 0 {
            bail!("{} needs an input dimension that is a multiple of {}, got {input}", format.as_str(), format.block());
        }
        let (mut codes, mut scales, mut globals) = (Vec::new(), Vec::new(), Vec::new());
        for expert in 0..e {
            let values = Vec::<f32>::try_from(dense.get(expert).to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
            match format {
                PackedFormat::Mxfp4 => {
                    let (blocks, block_scales) = fp4::mxfp4_encode(&values, input as usize).map_err(anyhow::Error::msg)?;
                    codes.extend(blocks);
                    scales.extend(block_scales);
                }
                PackedFormat::Nvfp4 => {
                    let global = fp4::nvfp4_global_scale(&values);
                    let encoded = fp4::nvfp4_encode(&values, input as usize, global).map_err(anyhow::Error::msg)?;
                    codes.extend(encoded.packed);
                    scales.extend(encoded.block_scales);
                    globals.push(global);
                }
            }
        }
        let codes = Tensor::from_slice(&codes).view([e, out, input / 2]).to_device(device);
        let scales = Tensor::from_slice(&scales).view([e, out, input / format.block()]).to_device(device);
        let global = (format == PackedFormat::Nvfp4).then(|| Tensor::from_slice(&globals).to_device(device));
        Ok(Self::assemble(format, codes, scales, global, shape))
    }

    /// Packed experts of random codes and plausible scales, for benchmarks that measure memory and
    /// speed (neither depends on the values) on shapes too large to quantise from dense weights.
    pub fn random(shape: [i64; 3], format: PackedFormat, device: Device) -> Self {
        let [e, out, input] = shape;
        let bytes = |size: [i64; 3], low: i64, high: i64| Tensor::randint_low(low, high, size, (Kind::Uint8, device));
        let codes = bytes([e, out, input / 2], 0, 256);
        let global = (format == PackedFormat::Nvfp4).then(|| Tensor::full([e], 1e-3, (Kind::Float, device)));
        // MXFP4: exponents 2^-7 … 2^-4; NVFP4: E4M3 bytes 0x30 … 0x3F (0.5 … 0.94).
        let scales = match format {
            PackedFormat::Mxfp4 => bytes([e, out, input / 32], 120, 124),
            PackedFormat::Nvfp4 => bytes([e, out, input / 16], 0x30, 0x40),
        };
        Self::assemble(format, codes, scales, global, shape)
    }

    fn assemble(format: PackedFormat, codes: Tensor, scales: Tensor, global: Option<Tensor>, shape: [i64; 3]) -> Self {
        let device = codes.device();
        let e2m1 = Tensor::from_slice(&fp4::E2M1_VALUES).to_device(device);
        let e4m3 = (format == PackedFormat::Nvfp4).then(|| {
            let table: Vec<f32> = (0..=255u8).map(fp4::e4m3_to_f32).collect();
            Tensor::from_slice(&table).to_device(device)
        });
        Self { format, codes, scales, global, e2m1, e4m3, shape }
    }

    /// Moves the packed tensors (and the decoding tables) to `device`.
    pub fn to_device(&mut self, device: Device) {
        for t in [&mut self.codes, &mut self.scales, &mut self.e2m1] {
            *t = t.to_device(device);
        }
        for t in [&mut self.global, &mut self.e4m3].into_iter().flatten() {
            *t = t.to_device(device);
        }
    }

    pub fn num_experts(&self) -> i64 {
        self.shape[0]
    }

    /// Bytes held on the device (codes, scales and per-expert scales).
    pub fn bytes(&self) -> i64 {
        let global = self.global.as_ref().map_or(0, |g| g.numel() as i64 * 4);
        (self.codes.numel() + self.scales.numel()) as i64 + global
    }

    /// Expert `e` dequantised to `[out, in]` in `kind`: `e2m1[code] · scale`, computed in f32 in the
    /// order the FP4 codecs use, so the values equal `fp4::*_decode`'s bit for bit.
    pub fn expert(&self, e: i64, kind: Kind) -> Tensor {
        let [_, out, input] = self.shape;
        let block = self.format.block();
        let codes = self.codes.get(e).to_kind(Kind::Int64);
        let low = codes.bitwise_and(15);
        let high = codes.bitwise_right_shift_tensor_scalar(4);
        let values = self.e2m1.take(&Tensor::stack(&[low, high], -1)).view([out, input / block, block]);
        let scales = self.scales.get(e);
        let factor = match self.format {
            // 2^(s − 127), exactly: E8M0 is a biased exponent.
            PackedFormat::Mxfp4 => (scales.to_kind(Kind::Float) - 127.0).exp2(),
            PackedFormat::Nvfp4 => {
                let table = self.e4m3.as_ref().expect("NVFP4 table");
                table.take(&scales.to_kind(Kind::Int64)) * self.global.as_ref().expect("NVFP4 scales").get(e)
            }
        };
        (values * factor.unsqueeze(-1)).view([out, input]).to_kind(kind)
    }

    /// Every expert dequantised, `[experts, out, in]` (to hand the weights back to dense storage).
    pub fn dequantize_all(&self, kind: Kind) -> Tensor {
        Tensor::stack(&(0..self.num_experts()).map(|e| self.expert(e, kind)).collect::<Vec<_>>(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(e: i64, out: i64, input: i64) -> Tensor {
        tch::manual_seed(3);
        Tensor::randn([e, out, input], (Kind::Float, Device::Cpu)) * 0.05
    }

    #[test]
    fn quantised_experts_decode_as_the_codecs_do() {
        let w = dense(3, 8, 64);
        for format in [PackedFormat::Mxfp4, PackedFormat::Nvfp4] {
            let packed = PackedExperts::quantize(&w, format, Device::Cpu).unwrap();
            for e in 0..3 {
                let values = Vec::<f32>::try_from(w.get(e).flatten(0, -1)).unwrap();
                let expected = match format {
                    PackedFormat::Mxfp4 => {
                        let (blocks, scales) = fp4::mxfp4_encode(&values, 64).unwrap();
                        fp4::mxfp4_decode(&blocks, &scales).unwrap()
                    }
                    PackedFormat::Nvfp4 => fp4::nvfp4_decode(&fp4::nvfp4_encode(&values, 64, fp4::nvfp4_global_scale(&values)).unwrap()).unwrap(),
                };
                let got = Vec::<f32>::try_from(packed.expert(e, Kind::Float).flatten(0, -1)).unwrap();
                assert_eq!(got, expected, "{format:?} expert {e}");
            }
        }
    }

    #[test]
    fn mxfp4_resident_equals_the_fake_quantiser() {
        let w = dense(2, 4, 96);
        let packed = PackedExperts::quantize(&w, PackedFormat::Mxfp4, Device::Cpu).unwrap();
        let fake = crate::quant::mxfp4::quantize_dequantize(&w, Default::default());
        assert!(packed.dequantize_all(Kind::Float).equal(&fake));
        // 4 bits per weight plus one scale byte per 32.
        assert_eq!(packed.bytes(), 2 * 4 * 96 / 2 + 2 * 4 * 96 / 32);
    }

    #[test]
    fn shipped_blocks_are_kept_as_they_are() {
        let w = dense(2, 4, 64);
        let values = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        let (blocks, scales) = fp4::mxfp4_encode(&values, 64).unwrap();
        let packed = PackedExperts::from_mxfp4(&blocks, &scales, [2, 4, 64], Device::Cpu).unwrap();
        let expected = fp4::mxfp4_decode(&blocks, &scales).unwrap();
        assert_eq!(Vec::<f32>::try_from(packed.dequantize_all(Kind::Float).flatten(0, -1)).unwrap(), expected);
        assert!(PackedExperts::from_mxfp4(&blocks[1..], &scales, [2, 4, 64], Device::Cpu).is_err());
    }
}
