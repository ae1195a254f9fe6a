//! A refused job option, and the one way options are checked.

/// A refused option: the parameter path under `method.moe_sft_qat` and what to fix.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidOption {
    pub param: String,
    pub message: String,
}

/// `Ok` when `ok`, else the refusal of `param` (a path under `method.moe_sft_qat`) with `message`.
pub(crate) fn check(ok: bool, param: &str, message: &str) -> Result<(), InvalidOption> {
    if ok {
        Ok(())
    } else {
        Err(InvalidOption { param: format!("method.moe_sft_qat.{param}"), message: message.to_string() })
    }
}
