//! Pure-Rust FP4 codecs (no libtorch): what checkpoints store, decoded exactly as the references do.

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
    let mut out = Vec::with_capacity(scales.len() * MXFP4_BLOCK);
    for (block, &scale) in blocks.chunks_exact(MXFP4_BLOCK_BYTES).zip(scales) {
        let factor = pow2(i32::from(scale) - 127);
        for &byte in block {
            out.push(E2M1_VALUES[(byte & 0x0F) as usize] * factor);
            out.push(E2M1_VALUES[(byte >> 4) as usize] * factor);
        }
    }
    Ok(out)
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
}
