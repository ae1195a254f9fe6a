//! Every machine-readable error code moetune gives, in one table: the code sent in API error bodies
//! (`error.code`) and in failed jobs (`error.code`), the HTTP status it answers with, and its error
//! type (`error.type`, OpenAI's names). Adding a code means adding a row here; nothing else can name
//! one, so the list below is the whole contract for clients that branch on codes.

/// The `type` of an error body, OpenAI's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    RateLimit,
    Server,
}

impl ErrorType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RateLimit => "rate_limit_error",
            Self::Server => "server_error",
        }
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:literal, $kind:ident;)*) => {
        /// One machine-readable error code (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),*];

            /// The code as sent on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The HTTP status an API error with this code answers with.
            pub const fn http_status(self) -> u16 {
                match self { $(Self::$variant => $status,)* }
            }

            pub const fn error_type(self) -> ErrorType {
                match self { $(Self::$variant => ErrorType::$kind,)* }
            }
        }
    };
}

error_codes! {
    // Credentials, scopes and limits.
    InvalidApiKey = "invalid_api_key", 401, Authentication;
    InsufficientScope = "insufficient_scope", 403, Permission;
    QuotaExceeded = "quota_exceeded", 429, RateLimit;
    RateLimited = "rate_limited", 429, RateLimit;
    // Lookups.
    NotFound = "not_found", 404, NotFound;
    UnknownRoute = "unknown_route", 404, NotFound;
    FileNotFound = "file_not_found", 400, InvalidRequest;
    ModelNotFound = "model_not_found", 400, InvalidRequest;
    // Request shape.
    InvalidRequestBody = "invalid_request_body", 400, InvalidRequest;
    InvalidQuery = "invalid_query", 400, InvalidRequest;
    InvalidCharacters = "invalid_characters", 400, InvalidRequest;
    MissingParameter = "missing_parameter", 400, InvalidRequest;
    UnknownParameter = "unknown_parameter", 400, InvalidRequest;
    UnexpectedField = "unexpected_field", 400, InvalidRequest;
    ConflictingParameters = "conflicting_parameters", 400, InvalidRequest;
    InvalidCursor = "invalid_cursor", 400, InvalidRequest;
    InvalidLimit = "invalid_limit", 400, InvalidRequest;
    InvalidMetadata = "invalid_metadata", 400, InvalidRequest;
    InvalidIdempotencyKey = "invalid_idempotency_key", 400, InvalidRequest;
    IdempotencyKeyReused = "idempotency_key_reused", 409, InvalidRequest;
    IdempotencyKeyInUse = "idempotency_key_in_use", 409, InvalidRequest;
    // Files and uploads.
    InvalidMultipart = "invalid_multipart", 400, InvalidRequest;
    InvalidPurpose = "invalid_purpose", 400, InvalidRequest;
    InvalidFilePurpose = "invalid_file_purpose", 400, InvalidRequest;
    InvalidFileStatus = "invalid_file_status", 400, InvalidRequest;
    InvalidFilename = "invalid_filename", 400, InvalidRequest;
    InvalidFileFormat = "invalid_file_format", 400, InvalidRequest;
    InvalidMimeType = "invalid_mime_type", 400, InvalidRequest;
    InvalidBytes = "invalid_bytes", 400, InvalidRequest;
    InvalidMd5 = "invalid_md5", 400, InvalidRequest;
    InvalidPartIds = "invalid_part_ids", 400, InvalidRequest;
    FileTooLarge = "file_too_large", 400, InvalidRequest;
    PartTooLarge = "part_too_large", 400, InvalidRequest;
    EmptyPart = "empty_part", 400, InvalidRequest;
    UploadSizeExceeded = "upload_size_exceeded", 400, InvalidRequest;
    UploadSizeMismatch = "upload_size_mismatch", 400, InvalidRequest;
    UploadInterrupted = "upload_interrupted", 400, InvalidRequest;
    UploadNotPending = "upload_not_pending", 409, InvalidRequest;
    FileNotReady = "file_not_ready", 409, InvalidRequest;
    FileInUse = "file_in_use", 409, InvalidRequest;
    // Jobs.
    InvalidMethod = "invalid_method", 400, InvalidRequest;
    InvalidHyperparameter = "invalid_hyperparameter", 400, InvalidRequest;
    InvalidSuffix = "invalid_suffix", 400, InvalidRequest;
    InvalidPriority = "invalid_priority", 400, InvalidRequest;
    InvalidGracePeriod = "invalid_grace_period", 400, InvalidRequest;
    ModelIncompatibleWithFormat = "model_incompatible_with_format", 400, InvalidRequest;
    JobNotCancellable = "job_not_cancellable", 409, InvalidRequest;
    JobNotPausable = "job_not_pausable", 409, InvalidRequest;
    JobNotResumable = "job_not_resumable", 409, InvalidRequest;
    InvalidProfileRequest = "invalid_profile_request", 400, InvalidRequest;
    // Models.
    InvalidModelId = "invalid_model_id", 400, InvalidRequest;
    InvalidModelConfig = "invalid_model_config", 400, InvalidRequest;
    InvalidUri = "invalid_uri", 400, InvalidRequest;
    UnsupportedArchitecture = "unsupported_architecture", 400, InvalidRequest;
    ModelFilesMissing = "model_files_missing", 400, InvalidRequest;
    ModelFilesUnreadable = "model_files_unreadable", 400, InvalidRequest;
    InspectMismatch = "inspect_mismatch", 400, InvalidRequest;
    ModelExists = "model_exists", 409, InvalidRequest;
    // Webhooks.
    InvalidWebhookUrl = "invalid_webhook_url", 400, InvalidRequest;
    InvalidWebhookSecret = "invalid_webhook_secret", 400, InvalidRequest;
    InvalidEventType = "invalid_event_type", 400, InvalidRequest;
    WebhookEndpointDisabled = "webhook_endpoint_disabled", 409, InvalidRequest;
    // Administration.
    InvalidTenantName = "invalid_tenant_name", 400, InvalidRequest;
    InvalidName = "invalid_name", 400, InvalidRequest;
    InvalidScopes = "invalid_scopes", 400, InvalidRequest;
    InvalidQuota = "invalid_quota", 400, InvalidRequest;
    // The server.
    NotReady = "not_ready", 503, Server;
    InternalError = "internal_error", 500, Server;
    // Why a job failed (the job's `error.code`; the status is what the failure would answer over HTTP).
    /// The training file failed validation, or the runner could not train on it.
    InvalidTrainingFile = "invalid_training_file", 400, InvalidRequest;
    /// The validation file failed validation after the job was created.
    InvalidValidationFile = "invalid_validation_file", 400, InvalidRequest;
    /// Training failed on the runner.
    TrainingError = "training_error", 500, Server;
    /// The runner holding the job stopped heartbeating and the job had no attempts left.
    RunnerLost = "runner_lost", 503, Server;
    /// The scheduler could not record the runner's report of the job.
    EventNotRecorded = "event_not_recorded", 500, Server;
}

impl ErrorCode {
    /// The code named `code`, if it is one.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()), "{code}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            let server = code.http_status() >= 500;
            assert_eq!(server, code.error_type() == ErrorType::Server, "{code}: a 5xx is a server error and only it is");
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
