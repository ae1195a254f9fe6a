//! From training examples to token ids: the model's `tokenizer.json` (tokenizers crate) and, for chat
//! datasets, its chat template (`chat_template.jinja` or `tokenizer_config.json`, rendered with
//! minijinja as transformers renders it with Jinja2). Everything else uses the plain
//! `### System/Instruction/Input/Response` template.

use std::path::Path;

use anyhow::{bail, Context};
use minijinja::{Environment, Error, ErrorKind};
use moetune_types::Example;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::model::tiny;

/// A tokenizer plus what is needed to render prompts.
pub struct TextCodec {
    pub tokenizer: Tokenizer,
    pub tokenizer_json: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    pad_token: Option<String>,
    /// The chat template, compiled once when the tokenizer is loaded.
    chat: Option<Environment<'static>>,
}

/// An example rendered to text: the loss is taken on `response` only.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rendered {
    pub prompt: String,
    pub response: String,
    /// Whether `prompt` starts with the BOS token text itself (chat templates usually add it).
    #[serde(skip)]
    pub has_bos: bool,
}

/// `bos_token` etc. in tokenizer_config.json: a string or an AddedToken object with `content`.
fn token_text(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// An environment holding the template as transformers renders it: Jinja2 with trim_blocks and
/// lstrip_blocks, Python string methods, `raise_exception`.
fn compile_chat_template(template: String) -> anyhow::Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build()?);
    env.add_function("raise_exception", |message: String| -> Result<String, Error> { Err(Error::new(ErrorKind::InvalidOperation, message)) });
    env.add_template_owned("chat", template).context("the chat template does not parse")?;
    Ok(env)
}

impl TextCodec {
    /// The built-in tiny model's tokenizer (`<s>`, `</s>`, `<pad>`), no chat template.
    pub fn tiny() -> anyhow::Result<Self> {
        Ok(Self {
            tokenizer: Tokenizer::from_bytes(tiny::TOKENIZER_JSON).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?,
            tokenizer_json: tiny::TOKENIZER_JSON.to_string(),
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
            pad_token: Some("<pad>".into()),
            chat: None,
        })
    }

    /// Reads `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` from a model directory.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer_json = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let tokenizer = Tokenizer::from_bytes(&tokenizer_json).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = match std::fs::read(&config_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", config_path.display()))?,
            Err(_) => Value::Null,
        };
        let template_file = dir.join("chat_template.jinja");
        let chat_template = if template_file.exists() {
            Some(std::fs::read_to_string(&template_file)?)
        } else {
            match config.get("chat_template") {
                Some(Value::String(t)) => Some(t.clone()),
                // A list of named templates: the one called "default".
                Some(Value::Array(named)) => named
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                _ => None,
            }
        };
        Ok(Self {
            tokenizer,
            tokenizer_json,
            bos_token: token_text(&config, "bos_token"),
            eos_token: token_text(&config, "eos_token"),
            pad_token: token_text(&config, "pad_token"),
            chat: chat_template.map(compile_chat_template).transpose().with_context(|| format!("chat template of {}", dir.display()))?,
        })
    }

    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<i64>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(encoding.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    pub fn decode(&self, ids: &[i64]) -> anyhow::Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.tokenizer.decode(&ids, false).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
    }

    fn token_id(&self, text: &Option<String>) -> Option<i64> {
        text.as_deref().and_then(|t| self.tokenizer.token_to_id(t)).map(i64::from)
    }

    pub fn bos_id(&self) -> Option<i64> {
        self.token_id(&self.bos_token)
    }

    pub fn eos_id(&self) -> Option<i64> {
        self.token_id(&self.eos_token)
    }

    /// Padding id: the pad token, else EOS, else 0 (padded positions never reach the loss).
    pub fn pad_id(&self) -> i64 {
        self.token_id(&self.pad_token).or_else(|| self.eos_id()).unwrap_or(0)
    }

    /// Renders `messages` with the chat template (transformers' `apply_chat_template(tokenize=False)`).
    pub fn apply_chat_template(&self, messages: &[(String, String)], add_generation_prompt: bool) -> anyhow::Result<String> {
        let env = self.chat.as_ref().context("this model has no chat template")?;
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|(role, content)| minijinja::context! { role => role, content => content })
            .collect();
        let context = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
            pad_token => self.pad_token.clone().unwrap_or_default(),
        };
        env.get_template("chat")?.render(context).context("rendering the chat template")
    }

    /// Prompt and response text of one example. Chat examples use the chat template when the model has
    /// one: the prompt is the conversation before the reply with the generation prompt, the response is
    /// what the full conversation adds to it (the reply and its end-of-turn tokens).
    pub fn render(&self, example: &Example) -> anyhow::Result<Rendered> {
        if self.chat.is_some() && !example.messages.is_empty() {
            let context = &example.messages[..example.messages.len() - 1];
            let prompt = self.apply_chat_template(context, true)?;
            let full = self.apply_chat_template(&example.messages, false)?;
            let Some(response) = full.strip_prefix(&prompt) else {
                bail!("the chat template does not render the conversation as prompt + reply; cannot mask the prompt");
            };
            let has_bos = self.bos_token.as_deref().is_some_and(|b| !b.is_empty() && prompt.starts_with(b));
            return Ok(Rendered { prompt, response: response.to_string(), has_bos });
        }
        let eos = self.eos_token.clone().unwrap_or_default();
        Ok(Rendered { prompt: example.render_prompt(None), response: format!("{}{eos}", example.response), has_bos: false })
    }

    /// Token ids of the prompt alone (what generation and the diagnostic prompts start from).
    pub fn encode_prompt(&self, example: &Example) -> anyhow::Result<Vec<i64>> {
        self.prompt_ids(&self.render(example)?)
    }

    /// BOS first when the tokenizer has one and the rendering did not include it, then the prompt.
    fn prompt_ids(&self, rendered: &Rendered) -> anyhow::Result<Vec<i64>> {
        let mut ids: Vec<i64> = match (self.bos_id(), rendered.has_bos) {
            (Some(bos), false) => vec![bos],
            _ => Vec::new(),
        };
        ids.extend(self.encode(&rendered.prompt)?);
        Ok(ids)
    }

    /// Token ids and labels (`ignore` on the prompt) of one example, BOS first when the tokenizer has one
    /// and the rendering did not include it.
    pub fn encode_example(&self, example: &Example, ignore: i64) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
        let rendered = self.render(example)?;
        let mut ids = self.prompt_ids(&rendered)?;
        let prompt_len = ids.len();
        ids.extend(self.encode(&rendered.response)?);
        let mut labels = ids.clone();
        labels[..prompt_len].fill(ignore);
        Ok((ids, labels))
    }
}
