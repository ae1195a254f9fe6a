//! Pure-Rust FP4 codecs (no libtorch): what checkpoints store, encoded and decoded exactly as the
//! references do.
//!
//! * MXFP4 (OCP microscaling, gpt-oss checkpoints): 32 E2M1 codes share one E8M0 scale. Decoding is
//!   transformers' `convert_moe_packed_tensors`; encoding picks the scale by a [`Mxfp4ScaleRule`]
//!   (the OCP rule `2^(floor(log2 amax) − 2)`, or modelopt's `2^ceil(log2(amax / 6))`) and rounds to
//!   nearest, ties to even, saturating at 6 — the same values QAT trained against (`quant::mxfp4`).
//! * NVFP4 (modelopt): 16 E2M1 codes share one FP8-E4M3 scale, times one FP32 scale per tensor.
//!   Encoding follows modelopt's `NVFP4QTensor.quantize` step by step in f32, so codes and scales are
//!   bit-identical to its export.

/// E2M1 values by 4-bit code (sign in bit 3), the table of transformers' `FP4_VALUES`.
pub const E2M1_VALUES: [f32; 16] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// Elements per MXFP4 block, and bytes per block (two codes per byte, low nibble first).
pub const MXFP4_BLOCK: usize = 32;
pub const MXFP4_BLOCK_BYTES: usize = MXFP4_BLOCK / 2;

/// `2^exponent` in f32, as torch computes `ldexp`'s factor: exact down to subnormals, +inf above 2^127.
fn pow2(exponent: i32) -> f32 {
    2f64.powi(exponent) as f32
}

/// Decodes MXFP4 `blocks` (`[rows, groups, 16]` bytes) and E8M0 `scales` (`[rows, groups]`, biased
/// by 127) into `[rows, groups · 32]` f32, the values of transformers' `convert_moe_packed_tensors`
/// before its final transpose (`lut[code] · 2^(scale − 127)`, computed in f32).
pub fn mxfp4_decode(blocks: &[u8], scales: &[u8]) -> Result<Vec<f32>, String> {
    if blocks.len() != scales.len() * MXFP4_BLOCK_BYTES {
        return Err(format!(
            "MXFP4 blocks hold {} bytes but {} scales need {} (16 bytes per scale)",
            blocks.len(),
            scales.len(),
            scales.len() * MXFP4_BLOCK_BYTES
        ));
    }
    Ok(decode_blocks(blocks, scales, MXFP4_BLOCK, |bytes, scale, out| unpack_block(bytes, pow2(i32::from(scale) - 127), out)))
}

/// E2M1 code of `x` (already divided by its block scale): nearest value, ties to even, saturating at
/// ±6; the sign bit is set for negative inputs, including those that round to zero (as modelopt).
pub fn e2m1_code(x: f32) -> u8 {
    let m = x.abs();
    // Midpoints between neighbouring E2M1 values; at a midpoint the even code (even mantissa) wins,
    // hence `>` at the midpoints below even codes and `>=` below odd ones. Counted without branches:
    // on weights the comparisons are unpredictable. NaN compares false everywhere: it saturates to 7.
    let code = if m.is_nan() {
        7
    } else {
        u8::from(m > 0.25) + u8::from(m >= 0.75) + u8::from(m > 1.25) + u8::from(m >= 1.75) + u8::from(m > 2.5) + u8::from(m >= 3.5) + u8::from(m > 5.0)
    };
    if x < 0.0 { code | 0x8 } else { code }
}

/// Packs the codes of `block` (`code(v)` each) two per byte, low nibble first, into `out`.
fn pack_block(block: &[f32], out: &mut [u8], code: impl Fn(f32) -> u8) {
    for (pair, byte) in block.chunks_exact(2).zip(out) {
        *byte = code(pair[0]) | (code(pair[1]) << 4);
    }
}

/// Runs `encode(block, packed_out) -> scale byte` over every `block`-sized group of `values`, on all
/// cores for large tensors (groups are independent; the output is the same on any number of threads).
fn encode_blocks(values: &[f32], block: usize, encode: impl Fn(&[f32], &mut [u8]) -> u8 + Sync) -> (Vec<u8>, Vec<u8>) {
    let groups = values.len() / block;
    let (mut packed, mut scales) = (vec![0u8; values.len() / 2], vec![0u8; groups]);
    let per_thread = groups.div_ceil(threads(groups)).max(1);
    let encode = &encode;
    std::thread::scope(|s| {
        let chunks = values.chunks(per_thread * block).zip(packed.chunks_mut(per_thread * block / 2)).zip(scales.chunks_mut(per_thread));
        for ((values, packed), scales) in chunks {
            s.spawn(move || {
                for ((group, out), scale) in values.chunks_exact(block).zip(packed.chunks_exact_mut(block / 2)).zip(scales) {
                    *scale = encode(group, out);
                }
            });
        }
    });
    (packed, scales)
}

/// Runs `decode(packed_group, scale, out)` over every group, on all cores for large tensors.
fn decode_blocks(packed: &[u8], scales: &[u8], block: usize, decode: impl Fn(&[u8], u8, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; scales.len() * block];
    let per_thread = scales.len().div_ceil(threads(scales.len())).max(1);
    let decode = &decode;
    std::thread::scope(|s| {
        for ((packed, scales), out) in packed.chunks(per_thread * block / 2).zip(scales.chunks(per_thread)).zip(out.chunks_mut(per_thread * block)) {
            s.spawn(move || {
                for ((bytes, &scale), values) in packed.chunks_exact(block / 2).zip(scales).zip(out.chunks_exact_mut(block)) {
                    decode(bytes, scale, values);
                }
            });
        }
    });
    out
}

/// Threads for `groups` blocks: one below ~1 MiB of values (spawning costs more than it saves).
fn threads(groups: usize) -> usize {
    if groups < 1 << 14 {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `lut[code] · factor` for the two codes of each byte.
fn unpack_block(bytes: &[u8], factor: f32, out: &mut [f32]) {
    for (&byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = E2M1_VALUES[(byte & 0x0F) as usize] * factor;
        pair[1] = E2M1_VALUES[(byte >> 4) as usize] * factor;
    }
}

/// Floor of log2 of a positive finite f32, exact (from the bits), with subnormals counted as 2^-126
/// (the tensor path clamps its amax to `f32::MIN_POSITIVE` first).
fn floor_log2(x: f32) -> i32 {
    if x < f32::MIN_POSITIVE {
        return -126;
    }
    ((x.to_bits() >> 23) & 0xFF) as i32 - 127
}

/// How an MXFP4 block's power-of-two scale follows from its largest magnitude `amax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mxfp4ScaleRule {
    /// The OCP MX specification's rule: `2^(floor(log2 amax) − 2)`, which puts `amax` in E2M1's top
    /// binade [4, 8); magnitudes in (6, 8)·scale saturate to 6.
    #[default]
    Ocp,
    /// `2^ceil(log2(amax / 6))`, the smallest power of two that maps `amax` to at most 6 (modelopt's
    /// `MXFP4QTensor`, triton's round-up scale): nothing saturates, at the cost of a coarser grid for
    /// blocks whose `amax / 6` is just above a power of two.
    Ceil,
}

impl Mxfp4ScaleRule {
    /// The scale's exponent for a block whose largest magnitude is `amax`, within E8M0's [−127, 127].
    pub fn exponent(self, amax: f32) -> i32 {
        let exponent = match self {
            Self::Ocp => floor_log2(amax) - 2,
            Self::Ceil => ceil_log2(f64::from(amax / E2M1_MAX)),
        };
        exponent.clamp(-127, 127)
    }
}

/// Ceiling of log2 of `x`, exact (from the f64 bits, where every f32 is normal); −1023 for zero.
fn ceil_log2(x: f64) -> i32 {
    if x <= 0.0 || !x.is_finite() {
        return if x.is_infinite() { 1024 } else { -1023 };
    }
    let bits = x.to_bits();
    let floor = ((bits >> 52) & 0x7FF) as i32 - 1023;
    let exact_power = bits & ((1u64 << 52) - 1) == 0;
    if exact_power { floor } else { floor + 1 }
}

/// Encodes `values` (`rows × cols`, row-major, cols a multiple of 32) to MXFP4 blocks (`[rows, cols/32, 16]`)
/// and E8M0 scales (`[rows, cols/32]`), with the OCP scale rule.
pub fn mxfp4_encode(values: &[f32], cols: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
    mxfp4_encode_with(values, cols, Mxfp4ScaleRule::Ocp)
}

/// [`mxfp4_encode`] with the scale picked by `rule`.
pub fn mxfp4_encode_with(values: &[f32], cols: usize, rule: Mxfp4ScaleRule) -> Result<(Vec<u8>, Vec<u8>), String> {
    if cols == 0 || cols % MXFP4_BLOCK != 0 || values.len() % cols != 0 {
        return Err(format!("MXFP4 needs rows of a multiple of {MXFP4_BLOCK} values; got {} values in rows of {cols}", values.len()));
    }
    Ok(encode_blocks(values, MXFP4_BLOCK, |block, out| {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let exponent = rule.exponent(amax);
        // The factor is a power of two, so multiplying by its (exact) inverse rounds exactly as
        // dividing by it does.
        let inverse = pow2(-exponent);
        pack_block(block, out, |v| e2m1_code(v * inverse));
        (exponent + 127) as u8
    }))
}

/// Elements per NVFP4 block.
pub const NVFP4_BLOCK: usize = 16;
/// Largest FP8-E4M3 (fn variant) and E2M1 magnitudes: the global scale is `amax / (6 · 448)`.
const E4M3_MAX: f32 = 448.0;
const E2M1_MAX: f32 = 6.0;

/// FP8-E4M3FN byte → f32 (bias 7, no infinities, 0x7F/0xFF NaN), from a table built once.
pub fn e4m3_to_f32(byte: u8) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|b| e4m3_value(b as u8)))[byte as usize]
}

fn e4m3_value(byte: u8) -> f32 {
    let sign = if byte & 0x80 != 0 { -1.0 } else { 1.0 };
    let (exponent, mantissa) = (i32::from((byte >> 3) & 0x0F), f32::from(byte & 0x07));
    let magnitude = match (exponent, byte & 0x7F) {
        (_, 0x7F) => f32::NAN,
        (0, _) => mantissa / 8.0 * pow2(-6),
        _ => (1.0 + mantissa / 8.0) * pow2(exponent - 7),
    };
    sign * magnitude
}

/// f32 → FP8-E4M3FN with round-to-nearest-even, as torch's `.to(torch.float8_e4m3fn)`: magnitudes
/// from 464 (the midpoint above 448) upward become NaN.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let magnitude = x.abs();
    if magnitude.is_nan() || magnitude > 464.0 {
        return sign | 0x7F;
    }
    // Codes 0..=0x7E are increasing in value: binary search the nearest, ties to the even code.
    let (mut low, mut high) = (0u8, 0x7Eu8);
    while high - low > 1 {
        let mid = (low + high) / 2;
        if e4m3_to_f32(mid) <= magnitude { low = mid } else { high = mid }
    }
    let (below, above) = (e4m3_to_f32(low), e4m3_to_f32(high));
    let code = if magnitude - below < above - magnitude || (magnitude - below == above - magnitude && low % 2 == 0) || magnitude < below {
        low
    } else {
        high
    };
    sign | code
}

/// An NVFP4-encoded tensor in modelopt's export layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Nvfp4 {
    /// `[rows, cols/2]`: two codes per byte, low nibble first.
    pub packed: Vec<u8>,
    /// `[rows, cols/16]` FP8-E4M3FN per-block scales.
    pub block_scales: Vec<u8>,
    /// The per-tensor scale `amax / (6 · 448)` (`weight_scale_2`).
    pub global_scale: f32,
}

/// The global scale modelopt derives from a tensor's amax.
pub fn nvfp4_global_scale(values: &[f32]) -> f32 {
    let amax = |values: &[f32]| values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let per_thread = values.len().div_ceil(threads(values.len() / NVFP4_BLOCK)).max(1);
    let partial: Vec<f32> = std::thread::scope(|s| {
        let handles: Vec<_> = values.chunks(per_thread).map(|chunk| s.spawn(move || amax(chunk))).collect();
        handles.into_iter().map(|h| h.join().expect("amax thread")).collect()
    });
    amax(&partial) / (E2M1_MAX * E4M3_MAX)
}

/// Encodes `values` (`rows × cols`, cols a multiple of 16) as modelopt's `NVFP4QTensor.quantize` does:
/// block scale `fp8(max(amax_b / (6 · global), 2^-9))` (1 for all-zero blocks), elements
/// `e2m1(x / (scale · global))`.
pub fn nvfp4_encode(values: &[f32], cols: usize, global_scale: f32) -> Result<Nvfp4, String> {
    if cols == 0 || cols % NVFP4_BLOCK != 0 || values.len() % cols != 0 {
        return Err(format!("NVFP4 needs rows of a multiple of {NVFP4_BLOCK} values; got {} values in rows of {cols}", values.len()));
    }
    let denominator = E2M1_MAX * global_scale;
    let (packed, block_scales) = encode_blocks(values, NVFP4_BLOCK, |block, out| {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut scale = amax / denominator;
        if scale == 0.0 {
            scale = 1.0;
        }
        let code = f32_to_e4m3(scale.max(pow2(-9)));
        // Divided, not multiplied by an inverse: the factor is not a power of two, and modelopt divides.
        let factor = e4m3_to_f32(code) * global_scale;
        pack_block(block, out, |v| e2m1_code(v / factor));
        code
    });
    Ok(Nvfp4 { packed, block_scales, global_scale })
}

/// Decodes as modelopt's `NVFP4QTensor.dequantize`: `lut[code] · (fp8 scale · global)` in f32.
pub fn nvfp4_decode(encoded: &Nvfp4) -> Result<Vec<f32>, String> {
    if encoded.packed.len() != encoded.block_scales.len() * NVFP4_BLOCK / 2 {
        return Err(format!("NVFP4 data holds {} bytes but {} block scales need {}", encoded.packed.len(), encoded.block_scales.len(), encoded.block_scales.len() * 8));
    }
    let global = encoded.global_scale;
    Ok(decode_blocks(&encoded.packed, &encoded.block_scales, NVFP4_BLOCK, |bytes, scale, out| unpack_block(bytes, e4m3_to_f32(scale) * global, out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_low_nibble_first_with_the_block_scale() {
        let mut blocks = vec![0u8; 16];
        blocks[0] = 0x71; // low 0x1 = 0.5, high 0x7 = 6
        blocks[15] = 0xF9; // low 0x9 = -0.5, high 0xF = -6
        let out = mxfp4_decode(&blocks, &[128]).unwrap(); // scale 2^1
        assert_eq!(out.len(), 32);
        assert_eq!((out[0], out[1], out[30], out[31]), (1.0, 12.0, -1.0, -12.0));
        assert!(out[2..30].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn extreme_scales_follow_f32_ldexp() {
        let out = mxfp4_decode(&[0x21; 16], &[0]).unwrap(); // 2^-127: subnormal in f32, still exact
        assert_eq!(out[0], 0.5 * 2f32.powi(-127));
        assert_eq!(out[1], 2f32.powi(-127));
        let out = mxfp4_decode(&[0x10; 16], &[255]).unwrap(); // 2^128 overflows: 0·inf = NaN, as torch
        assert!(out[0].is_nan() && out[1].is_infinite());
    }

    #[test]
    fn refuses_mismatched_lengths() {
        assert!(mxfp4_decode(&[0; 15], &[127]).unwrap_err().contains("16 bytes per scale"));
    }

    #[test]
    fn scale_rules_differ_only_where_the_ocp_rule_saturates() {
        // (amax, OCP exponent, ceil exponent): equal when amax/6 is a power of two or amax sits in [4, 6]·2^k.
        let cases = [(6.0, 0, 0), (4.0, 0, 0), (7.0, 0, 1), (3.0, -1, -1), (0.75, -3, -3), (0.8, -3, -2), (1e-30, -102, -102), (0.0, -127, -127), (3e38, 125, 126)];
        for (amax, ocp, ceil) in cases {
            assert_eq!(Mxfp4ScaleRule::Ocp.exponent(amax), ocp, "OCP, amax {amax}");
            assert_eq!(Mxfp4ScaleRule::Ceil.exponent(amax), ceil, "ceil, amax {amax}");
        }
        // Under the ceil rule the block maximum never saturates: 7 → scale 2, 7/2 = 3.5 → 4 → 8.
        let mut values = vec![0f32; 32];
        values[0] = 7.0;
        let (blocks, scales) = mxfp4_encode_with(&values, 32, Mxfp4ScaleRule::Ceil).unwrap();
        assert_eq!(scales, [128]);
        assert_eq!(mxfp4_decode(&blocks, &scales).unwrap()[0], 8.0);
        let (blocks, scales) = mxfp4_encode(&values, 32).unwrap();
        assert_eq!(mxfp4_decode(&blocks, &scales).unwrap()[0], 6.0);
    }

    #[test]
    fn e2m1_rounds_to_nearest_even_and_saturates() {
        let cases = [(0.25, 0), (0.26, 1), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6), (5.01, 7), (100.0, 7), (-0.1, 8), (-6.0, 15)];
        for (x, code) in cases {
            assert_eq!(e2m1_code(x), code, "{x}");
        }
    }

    #[test]
    fn e4m3_round_trips_every_code_and_rounds_half_even() {
        for code in 0..=0x7Eu8 {
            assert_eq!(f32_to_e4m3(e4m3_to_f32(code)), code);
        }
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f32_to_e4m3(1.0625), f32_to_e4m3(1.0)); // halfway 1.0 | 1.125: even code (1.0)
        assert_eq!(f32_to_e4m3(1.1875), f32_to_e4m3(1.25)); // halfway 1.125 | 1.25: even code (1.25)
        assert_eq!(f32_to_e4m3(464.0), 0x7E);
        assert_eq!(f32_to_e4m3(470.0), 0x7F);
    }

    #[test]
    fn mxfp4_round_trip_keeps_grid_values() {
        let mut values = vec![0f32; 64];
        values[..8].copy_from_slice(&[6.0, -4.0, 3.0, 1.5, 0.5, -0.5, 2.0, 0.0]);
        values[32] = 0.1; // scale 2^-6: 0.1 / 2^-6 = 6.4 saturates to 6
        let (blocks, scales) = mxfp4_encode(&values, 64).unwrap();
        assert_eq!(scales, vec![127, 127 - 6]);
        let decoded = mxfp4_decode(&blocks, &scales).unwrap();
        assert_eq!(&decoded[..8], &values[..8]);
        assert_eq!(decoded[32], 6.0 * 2f32.powi(-6));
    }

    #[test]
    fn nvfp4_round_trip_within_half_a_step() {
        let values: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013).collect();
        let global = nvfp4_global_scale(&values);
        let encoded = nvfp4_encode(&values, 32, global).unwrap();
        assert_eq!((encoded.packed.len(), encoded.block_scales.len()), (32, 4));
        let decoded = nvfp4_decode(&encoded).unwrap();
        for (block, out) in values.chunks(16).zip(decoded.chunks(16)) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in block.iter().zip(out) {
                assert!((x - y).abs() <= amax / 6.0 + 1e-6, "{x} vs {y}");
            }
        }
        assert!(nvfp4_encode(&values, 24, global).is_err());
    }
}
