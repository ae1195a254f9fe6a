//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the
//! bytes of a `whsec_<base64>` secret. While a rotated-out secret is in its grace period the header
//! carries one signature per secret, space-separated, so receivers holding either verify.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;

const PREFIX: &str = "whsec_";
/// Bytes of key a generated secret has; parsed ones may have 24 to 64.
const GENERATED_BYTES: usize = 32;

/// A parsed signing secret: the key bytes behind `whsec_…`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// Never prints the key.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// Parses `whsec_<base64>` of 24 to 64 bytes; the error says what to fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.strip_prefix(PREFIX).ok_or_else(|| "a webhook secret starts with 'whsec_'".to_string())?;
        let key = STANDARD.decode(encoded).map_err(|e| format!("the part after 'whsec_' must be standard base64 ({e})"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("a webhook secret must hold 24 to 64 bytes of key; this one holds {}", key.len()));
        }
        Ok(Self(key))
    }

    /// A new random secret, as text.
    pub fn generate() -> String {
        let mut key = [0u8; GENERATED_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut key);
        format!("{PREFIX}{}", STANDARD.encode(key))
    }

    fn sign(&self, content: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(content);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value for a message signed with every one of `secrets`.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    secrets.iter().map(|secret| secret.sign(&content)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference tests.
    #[test]
    fn matches_the_specification_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let header = signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signs_once_per_secret() {
        let secrets = [Secret::parse(&Secret::generate()).unwrap(), Secret::parse(&Secret::generate()).unwrap()];
        let header = signature_header(&secrets, "evt_1", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err().contains("whsec_"));
        assert!(Secret::parse("whsec_not base64!").unwrap_err().contains("base64"));
        assert!(Secret::parse("whsec_c2hvcnQ=").unwrap_err().contains("24 to 64"));
    }
}
