//! Typed ids. An id is parsed once, where it enters from outside (a request path, a runner's config, a
//! queue entry, a runner event), and crosses every boundary as its own type from then on, so a job id
//! cannot be passed where a runner id belongs. Ids read back from Postgres rows are trusted as they
//! are: only parsed ids are ever written there.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string that is not an id of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a valid {} id", crate::text::echo(&self.value, crate::text::MAX_ECHO_CHARS), self.kind)
    }
}

impl std::error::Error for InvalidId {}

/// Longest id body after the prefix: room for a runner named `{hostname}-{pid}` (host names are at
/// most 64 characters).
const MAX_ID_CHARS: usize = 128;

fn valid_body(body: &str, extra: &str) -> bool {
    !body.is_empty() && body.len() <= MAX_ID_CHARS && body.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c) || extra.contains(c))
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, kind = $kind:literal, prefix = $prefix:literal, extra = $extra:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        pub struct $name(String);

        impl $name {
            /// What every id of this kind starts with (empty: nothing).
            pub const PREFIX: &'static str = $prefix;

            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                match value.strip_prefix($prefix) {
                    Some(body) if valid_body(body, $extra) => Ok(Self(value.to_string())),
                    _ => Err(InvalidId { kind: $kind, value: value.to_string() }),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, InvalidId> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// `ftjob-…`: a fine-tuning job.
    JobId, kind = "fine-tuning job", prefix = "ftjob-", extra = ""
);
string_id!(
    /// `file-…`: an uploaded file.
    FileId, kind = "file", prefix = "file-", extra = ""
);
string_id!(
    /// `upload_…`: a multi-part upload in progress.
    UploadId, kind = "upload", prefix = "upload_", extra = ""
);
string_id!(
    /// A runner, named by its operator: letters, digits, `-`, `_` and `.`. It names the runner's
    /// Redis user and keys, so nothing else may appear in it.
    RunnerId, kind = "runner", prefix = "", extra = "."
);

/// A tenant: the uuid of its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct TenantId(pub uuid::Uuid);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidId;
    fn from_str(value: &str) -> Result<Self, InvalidId> {
        uuid::Uuid::parse_str(value).map(Self).map_err(|_| InvalidId { kind: "tenant", value: value.to_string() })
    }
}

/// Ids the service makes itself: the kind's prefix and a random uuid.
macro_rules! generated_ids {
    ($($name:ident),*) => {$(
        impl $name {
            /// A fresh id of this kind.
            pub fn generate() -> Self {
                Self(format!("{}{}", Self::PREFIX, uuid::Uuid::new_v4().simple()))
            }
        }
    )*};
}

generated_ids!(JobId, FileId, UploadId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_their_own_kind_only() {
        let job = JobId::generate();
        assert_eq!(JobId::parse(job.as_str()), Ok(job.clone()));
        assert!(JobId::parse("file-abc").is_err());
        assert!(JobId::parse("ftjob-").is_err());
        assert!(JobId::parse("ftjob-a:b").is_err(), "a colon would reach into another Redis key");
        assert!(JobId::parse(&format!("ftjob-{}", "a".repeat(129))).is_err());
        assert!(RunnerId::parse(&format!("{}-4194304", "h".repeat(64))).is_ok(), "a 64-character host name and a pid");
        assert!(FileId::parse("file-x_1").is_ok() && UploadId::parse("upload_1").is_ok());
        assert!(RunnerId::parse("gpu-node.3").is_ok());
        for bad in ["", "a b", "a/b", "a\nb", "ä"] {
            assert!(RunnerId::parse(bad).is_err(), "{bad:?}");
        }
        let message = JobId::parse("ftjob-\u{1b}[31m").unwrap_err().to_string();
        assert!(!message.contains('\u{1b}'), "echoed ids are escaped: {message}");
    }

    #[test]
    fn ids_are_strings_on_the_wire_and_parsed_when_read() {
        let job = JobId::parse("ftjob-abc").unwrap();
        assert_eq!(serde_json::to_string(&job).unwrap(), "\"ftjob-abc\"");
        assert_eq!(serde_json::from_str::<JobId>("\"ftjob-abc\"").unwrap(), job);
        assert!(serde_json::from_str::<JobId>("\"ftjob-a b\"").is_err());
        let tenant = TenantId(uuid::Uuid::nil());
        assert_eq!(serde_json::to_string(&tenant).unwrap(), "\"00000000-0000-0000-0000-000000000000\"");
    }
}
