//! The fuzz targets' properties on many pseudo-random inputs, on stable Rust (cargo-fuzz needs
//! nightly; `fuzz/` has the targets): decoders never panic on arbitrary bytes, and encoding is a
//! projection (re-encoding decoded values gives the same values; codes may differ only in the sign of
//! a zero, since −0.0 is not negative for the encoder, as for modelopt).

use moetune_fp4::{mxfp4_decode, mxfp4_encode, nvfp4_decode, nvfp4_encode, nvfp4_global_scale, Nvfp4};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Values across many binades, with zeros, subnormals and the odd huge one.
    fn value(&mut self) -> f32 {
        let r = self.next();
        match r % 16 {
            0 => 0.0,
            1 => f32::from_bits((r >> 8) as u32 & 0x007F_FFFF), // subnormal
            _ => ((r >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 2f32.powi((r % 40) as i32 - 20),
        }
    }
}

#[test]
fn decoders_survive_arbitrary_bytes() {
    let mut rng = Rng(0xDEC0DE);
    for _ in 0..2000 {
        let (blocks, scales) = (rng.next() % 80, rng.next() % 6);
        let _ = mxfp4_decode(&rng.bytes(blocks as usize), &rng.bytes(scales as usize));
        let (packed_len, scales_len) = ((rng.next() % 40) as usize, (rng.next() % 5) as usize);
        let encoded = Nvfp4 { packed: rng.bytes(packed_len), block_scales: rng.bytes(scales_len), global_scale: f32::from_bits(rng.next() as u32) };
        let _ = nvfp4_decode(&encoded);
    }
}

#[test]
fn encoding_is_a_projection() {
    let mut rng = Rng(0xC0FFEE);
    for _ in 0..300 {
        let values: Vec<f32> = (0..64).map(|_| rng.value()).collect();
        let (blocks, scales) = mxfp4_encode(&values, 32).unwrap();
        let decoded = mxfp4_decode(&blocks, &scales).unwrap();
        let (b2, s2) = mxfp4_encode(&decoded, 32).unwrap();
        assert_eq!(s2, scales);
        assert_eq!(mxfp4_decode(&b2, &s2).unwrap(), decoded);

        let global = nvfp4_global_scale(&values);
        if global == 0.0 || !global.is_normal() {
            continue;
        }
        let encoded = nvfp4_encode(&values, 32, global).unwrap();
        let decoded = nvfp4_decode(&encoded).unwrap();
        assert!(decoded.iter().all(|v| v.is_finite()));
        let again = nvfp4_encode(&decoded, 32, global).unwrap();
        assert_eq!(again.block_scales, encoded.block_scales);
        assert_eq!(nvfp4_decode(&again).unwrap(), decoded);
    }
}
