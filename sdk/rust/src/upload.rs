//! The multipart operations progenitor does not generate, on the generated client's HTTP client:
//! `POST /v1/files`. (Large files: the Uploads API, `uploads_create` / `add_part` / `complete`, whose
//! parts are multipart too: `upload_part` here.)

use progenitor_client::ClientInfo;

use crate::{types, Client};

/// Why an upload failed.
#[derive(Debug)]
pub enum UploadError {
    /// No answer (connection, TLS, timeout).
    Transport(reqwest::Error),
    /// The API refused it; `body.error` says why (for a dataset: the bad lines).
    Api { status: reqwest::StatusCode, body: types::ErrorBody },
    /// An answer that is neither the object nor an API error.
    Unexpected { status: reqwest::StatusCode, text: String },
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "upload failed: {e}"),
            Self::Api { status, body } => write!(f, "{status}: {} ({})", body.error.message, body.error.code),
            Self::Unexpected { status, text } => write!(f, "unexpected answer {status}: {text}"),
        }
    }
}

impl std::error::Error for UploadError {}

impl Client {
    /// A client that sends `Authorization: Bearer <token>` (a JWT or an `mtk-` API key) on every request.
    pub fn with_token(base_url: &str, token: &str) -> Result<Self, reqwest::Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is header-safe ASCII");
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder().default_headers(headers).build()?;
        Ok(Self::new_with_client(base_url, http))
    }

    /// `POST /v1/files`: uploads a JSONL dataset (`purpose` `fine-tune`), validated as it streams.
    /// `body` may be a stream (`reqwest::Body::wrap_stream`) of `length` bytes, e.g. to show progress.
    pub async fn upload_file(&self, purpose: &str, filename: &str, body: reqwest::Body, length: u64) -> Result<types::FileObject, UploadError> {
        let part = reqwest::multipart::Part::stream_with_length(body, length).file_name(filename.to_string()).mime_str("application/jsonl").expect("a valid mime type");
        let form = reqwest::multipart::Form::new().text("purpose", purpose.to_string()).part("file", part);
        self.send_form(&format!("{}/v1/files", self.baseurl()), form).await
    }

    /// `POST /v1/uploads/{id}/parts`: one part (≤ 64 MiB) of an upload created with `uploads_create`.
    pub async fn upload_part(&self, upload_id: &str, data: Vec<u8>) -> Result<types::UploadPart, UploadError> {
        let form = reqwest::multipart::Form::new().part("data", reqwest::multipart::Part::bytes(data).file_name("part"));
        self.send_form(&format!("{}/v1/uploads/{upload_id}/parts", self.baseurl()), form).await
    }

    async fn send_form<T: serde::de::DeserializeOwned>(&self, url: &str, form: reqwest::multipart::Form) -> Result<T, UploadError> {
        let response = self.client().post(url).multipart(form).send().await.map_err(UploadError::Transport)?;
        let status = response.status();
        let text = response.text().await.map_err(UploadError::Transport)?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|_| UploadError::Unexpected { status, text });
        }
        match serde_json::from_str::<types::ErrorBody>(&text) {
            Ok(body) => Err(UploadError::Api { status, body }),
            Err(_) => Err(UploadError::Unexpected { status, text }),
        }
    }
}
