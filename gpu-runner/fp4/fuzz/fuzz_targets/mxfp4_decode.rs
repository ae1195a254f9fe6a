#![no_main]
//! Arbitrary blocks/scales split: decoding returns values or an error, never panics; a successful
//! decode re-encodes to codes that decode to the same values (up to the sign of zero).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let cut = (split as usize).min(rest.len());
    let (blocks, scales) = rest.split_at(cut);
    if let Ok(values) = moetune_fp4::mxfp4_decode(blocks, scales) {
        if !values.is_empty() && values.iter().all(|v| v.is_finite()) {
            let (b, s) = moetune_fp4::mxfp4_encode(&values, 32).expect("decoded rows re-encode");
            assert_eq!(moetune_fp4::mxfp4_decode(&b, &s).expect("round trip"), values);
        }
    }
});
