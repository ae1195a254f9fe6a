//! Training data: one JSON object per line, in one of three formats, checked line by line.
//!
//! There is one reader: bytes are cut into lines by [`LineSplitter`] and checked by
//! [`DatasetValidator`]. The API validates uploads with it as they stream; the runner streams the
//! stored file through the same pair with [`DatasetValidator::collecting`], so a byte-order mark, CRLF
//! line ends, a blank line or an over-long line mean the same on both sides, and what the API accepts
//! is exactly what the runner trains on.

mod line_summary;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Longest line accepted, in bytes. Bounds the memory one line can take while streaming an upload.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Validation stops collecting after this many line errors (the first ones are the useful ones).
pub const MAX_REPORTED_ERRORS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    /// `{"messages": [{"role": "system|user|assistant", "content": "..."}]}` (OpenAI chat).
    Chat,
    /// `{"instruction": "...", "input": "...", "output": "..."}` (alpaca; `input` optional).
    Alpaca,
    /// `{"prompt": "...", "completion": "..."}`.
    PromptCompletion,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Alpaca => "alpaca",
            Self::PromptCompletion => "prompt_completion",
        }
    }
}

/// One training example, reduced to what the model sees before the response and the response itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub system: Option<String>,
    pub instruction: String,
    pub input: String,
    pub response: String,
    /// Chat records: the `(role, content)` turns up to and including the assistant reply trained on,
    /// for rendering with the model's chat template. Empty for the other formats.
    pub messages: Vec<(String, String)>,
}

impl Example {
    /// The characters validation counts for the token estimate: instruction, input and response.
    pub fn text_len(&self) -> u64 {
        (self.instruction.len() + self.input.len() + self.response.len()) as u64
    }

    /// Renders the plain-text prompt (`### System/Instruction/Input/Response`); the loss is taken on `response` only.
    pub fn render_prompt(&self, default_system: Option<&str>) -> String {
        let mut out = String::new();
        if let Some(system) = self.system.as_deref().or(default_system) {
            out.push_str(&format!("### System:\n{system}\n\n"));
        }
        out.push_str(&format!("### Instruction:\n{}\n\n", self.instruction));
        if !self.input.is_empty() {
            out.push_str(&format!("### Input:\n{}\n\n", self.input));
        }
        out.push_str("### Response:\n");
        out
    }
}

/// A problem with one line of a dataset; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// Reads a whole JSONL text into examples, as the API validates and the runner reads a stored file;
/// the first bad line is the error.
pub fn parse_jsonl(text: &str) -> Result<Vec<Example>, LineError> {
    let mut reader = JsonlReader::new();
    reader.feed(text.as_bytes());
    reader.finish().map(|(_, examples)| examples).map_err(|(mut errors, _)| errors.remove(0))
}

/// A JSONL stream read chunk by chunk into examples: the splitter and validator the API uses, keeping
/// the examples. Holds one line of the input at a time.
pub struct JsonlReader {
    splitter: LineSplitter,
    validator: DatasetValidator,
}

impl Default for JsonlReader {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonlReader {
    pub fn new() -> Self {
        Self { splitter: LineSplitter::new(), validator: DatasetValidator::collecting() }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.splitter.feed(chunk, &mut self.validator);
    }

    /// The summary and examples, or the line errors (the first 20) and how many lines had one.
    pub fn finish(mut self) -> Result<(DatasetSummary, Vec<Example>), (Vec<LineError>, u64)> {
        self.splitter.finish(&mut self.validator);
        self.validator.finish_collected()
    }
}

/// Parses one non-empty line, returning its format and the example.
pub fn parse_line(text: &str) -> Result<(DatasetFormat, Example), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("expected a JSON object".into());
    };
    if obj.contains_key("messages") {
        parse_chat(&obj).map(|e| (DatasetFormat::Chat, e))
    } else if obj.contains_key("instruction") || obj.contains_key("output") {
        parse_alpaca(&obj).map(|e| (DatasetFormat::Alpaca, e))
    } else if obj.contains_key("prompt") || obj.contains_key("completion") {
        parse_prompt_completion(&obj).map(|e| (DatasetFormat::PromptCompletion, e))
    } else {
        Err("unrecognised record: expected `messages` (chat), `instruction`/`output` (alpaca) \
             or `prompt`/`completion`"
            .into())
    }
}

fn string_field(obj: &Map<String, Value>, field: &str, required: bool) -> Result<String, String> {
    match obj.get(field) {
        Some(Value::String(s)) if required && s.trim().is_empty() => Err(format!("`{field}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None if !required => Ok(String::new()),
        Some(other) => Err(format!("`{field}` must be a string, found {}", json_type(other))),
        None => Err(format!("missing required field `{field}`")),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_alpaca(obj: &Map<String, Value>) -> Result<Example, String> {
    Ok(Example {
        system: None,
        instruction: string_field(obj, "instruction", true)?,
        input: string_field(obj, "input", false)?,
        response: string_field(obj, "output", true)?,
        messages: Vec::new(),
    })
}

fn parse_prompt_completion(obj: &Map<String, Value>) -> Result<Example, String> {
    Ok(Example {
        system: None,
        instruction: string_field(obj, "prompt", true)?,
        input: String::new(),
        response: string_field(obj, "completion", true)?,
        messages: Vec::new(),
    })
}

/// Chat records train on the last assistant message; earlier turns become the instruction.
fn parse_chat(obj: &Map<String, Value>) -> Result<Example, String> {
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err("`messages` must be an array".into());
    };
    if messages.is_empty() {
        return Err("`messages` is empty".into());
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(m) = message else {
            return Err(format!("messages[{i}] must be an object"));
        };
        if let Some(key) = m.keys().find(|k| !matches!(k.as_str(), "role" | "content" | "name" | "weight")) {
            return Err(format!("messages[{i}]: unrecognised key `{key}` (allowed: role, content, name, weight)"));
        }
        if let Some(weight) = m.get("weight") {
            if !matches!(weight.as_u64(), Some(0 | 1)) {
                return Err(format!("messages[{i}]: `weight` must be 0 or 1"));
            }
        }
        let role = string_field(m, "role", true).map_err(|e| format!("messages[{i}]: {e}"))?;
        if !matches!(role.as_str(), "system" | "user" | "assistant") {
            return Err(format!(
                "messages[{i}]: unknown role `{role}` (expected system, user or assistant)"
            ));
        }
        let content = string_field(m, "content", role == "assistant")
            .map_err(|e| format!("messages[{i}]: {e}"))?;
        turns.push((role, content));
    }
    let last_assistant = turns
        .iter()
        .rposition(|(role, _)| role == "assistant")
        .ok_or("`messages` has no assistant message to train on")?;
    let system = turns.iter().find(|(role, _)| role == "system").map(|(_, c)| c.clone());
    let context: Vec<&(String, String)> =
        turns[..last_assistant].iter().filter(|(role, _)| role != "system").collect();
    let instruction = match context.as_slice() {
        [(_, only)] => only.clone(),
        many => many.iter().map(|(r, c)| format!("{r}: {c}")).collect::<Vec<_>>().join("\n"),
    };
    if instruction.trim().is_empty() {
        return Err("`messages` has no user message before the assistant's reply".into());
    }
    let response = turns[last_assistant].1.clone();
    turns.truncate(last_assistant + 1);
    Ok(Example { system, instruction, input: String::new(), response, messages: turns })
}

/// What validation found in a whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DatasetSummary {
    pub format: DatasetFormat,
    pub examples: u64,
    /// Rough token count (characters / 4), for estimates before the real tokenizer runs.
    pub estimated_tokens: u64,
}

/// Validates a dataset fed to it line by line, keeping only counters and the first errors.
#[derive(Debug, Default)]
pub struct DatasetValidator {
    line: u64,
    format: Option<DatasetFormat>,
    examples: u64,
    chars: u64,
    errors: Vec<LineError>,
    error_count: u64,
    /// The examples, when reading for training rather than only validating.
    collected: Option<Vec<Example>>,
}

impl DatasetValidator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A validator that also keeps every example (see [`JsonlReader`]).
    pub fn collecting() -> Self {
        Self { collected: Some(Vec::new()), ..Self::default() }
    }

    /// Feeds the next line (without its trailing newline; [`LineSplitter`] cuts them).
    pub fn push_line(&mut self, raw: &[u8]) {
        self.line += 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        // Editors on Windows start files with a byte-order mark; it is not part of the JSON.
        let raw = if self.line == 1 { raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw) } else { raw };
        if let Err(message) = self.check_line(raw) {
            self.error(message);
        }
    }

    /// Reports a line longer than [`MAX_LINE_BYTES`] without buffering it.
    pub fn push_oversized_line(&mut self) {
        self.line += 1;
        self.error(format!("line is longer than {MAX_LINE_BYTES} bytes"));
    }

    /// Records a problem. Messages quote the caller's data (a role, a key): control characters are
    /// escaped and the length bounded, so the message can be stored, logged and shown as it is.
    fn error(&mut self, message: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(LineError { line: self.line, message: crate::text::echo(&message, 2 * crate::text::MAX_ECHO_CHARS) });
        }
    }

    fn check_line(&mut self, raw: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(raw).map_err(|_| "line is not valid UTF-8".to_string())?;
        if text.trim().is_empty() {
            return Err("line is empty (remove blank lines)".into());
        }
        // The fast path answers for ordinary valid lines; everything else (and every error message)
        // comes from parse_line, as does every example kept for training.
        let mut example = None;
        let summary = if self.collected.is_some() { None } else { line_summary::summarize(text) };
        let (format, chars) = match summary {
            Some(summary) => summary,
            None => {
                let (format, parsed) = parse_line(text)?;
                let chars = parsed.text_len();
                example = Some(parsed);
                (format, chars)
            }
        };
        match self.format {
            None => self.format = Some(format),
            Some(first) if first != format => {
                return Err(format!(
                    "record is in {} format but the file's first record is in {} format",
                    format.as_str(),
                    first.as_str()
                ))
            }
            Some(_) => {}
        }
        self.examples += 1;
        self.chars += chars;
        if let (Some(collected), Some(example)) = (self.collected.as_mut(), example) {
            collected.push(example);
        }
        Ok(())
    }

    /// Like [`finish`](Self::finish), with the examples of a [`collecting`](Self::collecting) validator.
    pub fn finish_collected(mut self) -> Result<(DatasetSummary, Vec<Example>), (Vec<LineError>, u64)> {
        let examples = self.collected.take().unwrap_or_default();
        self.finish().map(|summary| (summary, examples))
    }

    /// Ends validation: a summary, or every reported problem (first [`MAX_REPORTED_ERRORS`]).
    pub fn finish(self) -> Result<DatasetSummary, (Vec<LineError>, u64)> {
        if !self.errors.is_empty() {
            return Err((self.errors, self.error_count));
        }
        match self.format {
            Some(format) => Ok(DatasetSummary {
                format,
                examples: self.examples,
                estimated_tokens: self.chars / 4,
            }),
            None => Err((vec![LineError { line: 0, message: "file is empty".into() }], 1)),
        }
    }
}

/// Cuts a byte stream into lines for a [`DatasetValidator`] without holding more than one line: a line
/// over [`MAX_LINE_BYTES`] is reported as such and never buffered whole.
#[derive(Debug, Default)]
pub struct LineSplitter {
    carry: Vec<u8>,
    oversized: bool,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, mut chunk: &[u8], validator: &mut DatasetValidator) {
        while let Some(newline) = memchr::memchr(b'\n', chunk) {
            self.take(&chunk[..newline], validator, true);
            chunk = &chunk[newline + 1..];
        }
        self.take(chunk, validator, false);
    }

    fn take(&mut self, piece: &[u8], validator: &mut DatasetValidator, line_ends: bool) {
        if !self.oversized && self.carry.len() + piece.len() > MAX_LINE_BYTES {
            self.oversized = true;
            self.carry.clear();
        }
        if !line_ends {
            if !self.oversized {
                self.carry.extend_from_slice(piece);
            }
            return;
        }
        if self.oversized {
            validator.push_oversized_line();
        } else if self.carry.is_empty() {
            // The whole line is in this chunk: validated where it lies instead of copied.
            validator.push_line(piece);
        } else {
            self.carry.extend_from_slice(piece);
            validator.push_line(&self.carry);
        }
        self.carry.clear();
        self.oversized = false;
    }

    /// The last line may lack a trailing newline.
    pub fn finish(mut self, validator: &mut DatasetValidator) {
        if self.oversized || !self.carry.is_empty() {
            self.take(&[], validator, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(text: &str) -> Result<DatasetSummary, (Vec<LineError>, u64)> {
        let mut v = DatasetValidator::new();
        let body = text.strip_suffix('\n').unwrap_or(text);
        if !body.is_empty() {
            body.split('\n').for_each(|l| v.push_line(l.as_bytes()));
        }
        v.finish()
    }

    #[test]
    fn accepts_each_format() {
        let chat = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}"#;
        assert_eq!(validate(chat).unwrap().format, DatasetFormat::Chat);
        let alpaca = "{\"instruction\":\"i\",\"input\":\"\",\"output\":\"o\"}\n{\"instruction\":\"i\",\"output\":\"o\"}\n";
        let summary = validate(alpaca).unwrap();
        assert_eq!((summary.format, summary.examples), (DatasetFormat::Alpaca, 2));
        assert_eq!(validate(r#"{"prompt":"p","completion":"c"}"#).unwrap().format, DatasetFormat::PromptCompletion);
    }

    #[test]
    fn names_the_bad_line() {
        let text = "{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"prompt\":\"p\"\n{\"prompt\":\"p\",\"completion\":3}\n";
        let (errors, count) = validate(text).unwrap_err();
        assert_eq!(count, 2);
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.starts_with("invalid JSON"), "{}", errors[0].message);
        assert_eq!(errors[1].line, 3);
        assert_eq!(errors[1].message, "`completion` must be a string, found a number");
    }

    /// The reader the runner uses sees the same lines as the API's validator: a byte-order mark, CRLF
    /// and a missing final newline are fine, a blank line is an error on both sides.
    #[test]
    fn the_training_reader_accepts_exactly_what_validation_accepts() {
        let pc = r#"{"prompt":"p","completion":"c"}"#;
        for text in [format!("\u{feff}{pc}\r\n{pc}\r\n"), format!("{pc}\n{pc}"), format!("\u{feff}{pc}\n{pc}\n")] {
            assert!(validate(&text).is_ok(), "{text:?}");
            assert_eq!(parse_jsonl(&text).unwrap().len(), 2, "{text:?}");
        }
        let blank = format!("{pc}\n\n{pc}\n");
        assert_eq!(validate(&blank).unwrap_err().0[0].line, 2);
        assert_eq!(parse_jsonl(&blank).unwrap_err(), LineError { line: 2, message: "line is empty (remove blank lines)".into() });
        // A byte-order mark is only a mark at the very start.
        assert!(parse_jsonl(&format!("{pc}\n\u{feff}{pc}\n")).is_err());
    }

    #[test]
    fn rejects_empty_and_mixed_files() {
        assert_eq!(validate("").unwrap_err().0[0].message, "file is empty");
        let mixed = "{\"prompt\":\"p\",\"completion\":\"c\"}\n{\"instruction\":\"i\",\"output\":\"o\"}";
        let (errors, _) = validate(mixed).unwrap_err();
        assert_eq!(errors[0].line, 2);
        assert!(errors[0].message.contains("first record is in prompt_completion format"));
        let (errors, _) = validate("{\"prompt\":\"p\",\"completion\":\"c\"}\n\n{\"prompt\":\"p\",\"completion\":\"c\"}").unwrap_err();
        assert_eq!(errors[0], LineError { line: 2, message: "line is empty (remove blank lines)".into() });
    }

    #[test]
    fn chat_needs_an_assistant_reply() {
        let (errors, _) = validate(r#"{"messages":[{"role":"user","content":"u"}]}"#).unwrap_err();
        assert_eq!(errors[0].message, "`messages` has no assistant message to train on");
        let (errors, _) = validate(r#"{"messages":[{"role":"tool","content":"u"}]}"#).unwrap_err();
        assert!(errors[0].message.contains("unknown role `tool`"));
    }

    #[test]
    fn renders_the_plain_template() {
        let e = Example { system: Some("S".into()), instruction: "I".into(), input: "".into(), response: "R".into(), messages: vec![] };
        assert_eq!(e.render_prompt(None), "### System:\nS\n\n### Instruction:\nI\n\n### Response:\n");
        let e = Example { input: "X".into(), system: None, ..e };
        assert_eq!(e.render_prompt(None), "### Instruction:\nI\n\n### Input:\nX\n\n### Response:\n");
    }
}
