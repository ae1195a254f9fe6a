#![no_main]
//! Arbitrary packed codes, block scales and global scale: decoding never panics.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let global_scale = f32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let cut = (data[4] as usize).min(data.len() - 5);
    let (block_scales, packed) = data[5..].split_at(cut);
    let _ = moetune_fp4::nvfp4_decode(&moetune_fp4::Nvfp4 { packed: packed.to_vec(), block_scales: block_scales.to_vec(), global_scale });
});
