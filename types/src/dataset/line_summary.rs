//! The upload validator's fast path: the format and character count of a valid dataset line, read
//! straight from the JSON text without building a `serde_json::Value` or an `Example`.
//!
//! Validating a 1 GiB upload line by line through `parse_line` spent most of its time allocating a map
//! and strings per line. [`summarize`] answers only for lines it is sure `parse_line` accepts, and
//! with what `parse_line` would give; for anything unusual (a type error, a duplicate key, an unknown
//! key, a key written with escapes, a blank required field, a line that is not an object) it returns
//! `None` and the caller asks `parse_line`, which also writes the error message. Values of keys it does
//! not read are still parsed as `Value`, so JSON that `parse_line` rejects (a lone surrogate, say) is
//! not let through. The tests at the end hold the two together.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::DatasetFormat;

/// `(format, Example::text_len)` for a line `parse_line` accepts; `None` when the caller must ask
/// `parse_line`.
pub(crate) fn summarize(text: &str) -> Option<(DatasetFormat, u64)> {
    let line: Line = serde_json::from_str(text).ok()?;
    if let Some(messages) = line.messages {
        return chat(&messages).map(|chars| (DatasetFormat::Chat, chars));
    }
    let (instruction, input, output) = (&line.instruction, &line.input, &line.output);
    if instruction.is_some() || output.is_some() {
        let chars = required(instruction)? + optional(input)? + required(output)?;
        return Some((DatasetFormat::Alpaca, chars));
    }
    if line.prompt.is_some() || line.completion.is_some() {
        return Some((DatasetFormat::PromptCompletion, required(&line.prompt)? + required(&line.completion)?));
    }
    None
}

/// A string field: absent (`None`), `null`, or a string (borrowed from the line when unescaped).
type Field<'a> = Option<Text<'a>>;

enum Text<'a> {
    Null,
    Str(Cow<'a, str>),
}

fn required(field: &Field) -> Option<u64> {
    match field {
        Some(Text::Str(s)) if !s.trim().is_empty() => Some(s.len() as u64),
        _ => None,
    }
}

fn optional(field: &Field) -> Option<u64> {
    match field {
        None | Some(Text::Null) => Some(0),
        Some(Text::Str(s)) => Some(s.len() as u64),
    }
}

/// What `parse_chat` counts: the last assistant reply, plus the turns before it that are not system
/// turns (one turn as is; several as `role: content` lines).
fn chat(messages: &[Message]) -> Option<u64> {
    let mut turns = Vec::with_capacity(messages.len());
    for m in messages {
        if m.weight.is_some_and(|w| w > 1) {
            return None;
        }
        let role = match &m.role {
            Some(Text::Str(role)) if matches!(role.as_ref(), "system" | "user" | "assistant") => role.as_ref(),
            _ => return None,
        };
        let content = if role == "assistant" { required(&m.content)? } else { optional(&m.content)? };
        turns.push((role, content, &m.content));
    }
    let last = turns.iter().rposition(|(role, ..)| *role == "assistant")?;
    let context: Vec<_> = turns[..last].iter().filter(|(role, ..)| *role != "system").collect();
    let instruction = match context.as_slice() {
        [] => return None,
        [(_, _, content)] => match content {
            Some(Text::Str(s)) if !s.trim().is_empty() => s.len() as u64,
            _ => return None,
        },
        many => many.iter().map(|(role, chars, _)| role.len() as u64 + 2 + chars).sum::<u64>() + many.len() as u64 - 1,
    };
    Some(instruction + turns[last].1)
}

/// The top-level keys the formats use; others are ignored, as `parse_line` ignores them.
#[derive(Default)]
struct Line<'a> {
    messages: Option<Vec<Message<'a>>>,
    instruction: Field<'a>,
    input: Field<'a>,
    output: Field<'a>,
    prompt: Field<'a>,
    completion: Field<'a>,
}

#[derive(Default)]
struct Message<'a> {
    role: Field<'a>,
    content: Field<'a>,
    weight: Option<u64>,
}

/// Sets a field once: a duplicate key (where `serde_json::Value` keeps the last) is left to `parse_line`.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(slot: &mut Option<T>, map: &mut A) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom("duplicate key"));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for Line<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LineVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for LineVisitor<'a> {
            type Value = Line<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line<'a>, A::Error> {
                let mut line = Line::default();
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "messages" => once(&mut line.messages, &mut map)?,
                        "instruction" => once(&mut line.instruction, &mut map)?,
                        "input" => once(&mut line.input, &mut map)?,
                        "output" => once(&mut line.output, &mut map)?,
                        "prompt" => once(&mut line.prompt, &mut map)?,
                        "completion" => once(&mut line.completion, &mut map)?,
                        _ => {
                            map.next_value::<Value>()?;
                        }
                    }
                }
                Ok(line)
            }
        }
        deserializer.deserialize_map(LineVisitor(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MessageVisitor<'a> {
            type Value = Message<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'a>, A::Error> {
                let mut m = Message::default();
                let mut name = None::<Value>;
                while let Some(key) = map.next_key::<&'de str>()? {
                    match key {
                        "role" => once(&mut m.role, &mut map)?,
                        "content" => once(&mut m.content, &mut map)?,
                        "name" => once(&mut name, &mut map)?,
                        // A number other than a non-negative integer fails here and goes to parse_line.
                        "weight" => once(&mut m.weight, &mut map)?,
                        _ => return Err(de::Error::custom("unknown message key")),
                    }
                }
                Ok(m)
            }
        }
        deserializer.deserialize_map(MessageVisitor(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'a>, E> {
                Ok(Text::Str(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Text<'a>, E> {
                Ok(Text::Null)
            }
        }
        deserializer.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::parse_line;

    /// `summarize` answers only where `parse_line` accepts, and with its format and count.
    fn agrees(line: &str) -> bool {
        let fast = summarize(line);
        let slow = parse_line(line).map(|(format, e)| (format, e.text_len()));
        match (fast, slow) {
            (Some(fast), Ok(slow)) => assert_eq!(fast, slow, "{line}"),
            (Some(fast), Err(e)) => panic!("fast path accepted {line} as {fast:?}; parse_line: {e}"),
            (None, _) => {}
        }
        fast.is_some()
    }

    const ORDINARY: [&str; 8] = [
        r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#,
        r#"{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a\nb \"q\" é"}, {"role": "assistant", "content": "ok", "weight": 1}]}"#,
        r#"{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1", "weight": 0}, {"role": "user", "content": null, "name": "x"}, {"role": "assistant", "content": "a2"}, {"role": "user", "content": "after"}]}"#,
        r#"{"instruction": "Sum", "input": "1 2", "output": "3"}"#,
        r#"{"instruction": "Sum", "output": "3", "input": null, "id": [1, {"x": null}]}"#,
        r#"{"output": "3", "instruction": "\u00e9"}"#,
        r#"{"prompt": "p", "completion": "c"}"#,
        r#"  {"prompt": "p", "completion": "c", "extra": 1e300}  "#,
    ];

    #[test]
    fn answers_for_ordinary_lines() {
        for line in ORDINARY {
            assert!(agrees(line), "no fast answer for {line}");
        }
    }

    /// Every one-character edit of the ordinary lines (a deletion, or one of a few JSON-significant
    /// characters put in its place): wherever the fast path still answers, parse_line agrees.
    #[test]
    fn agrees_with_parse_line_on_every_one_character_edit() {
        for line in ORDINARY {
            for (i, _) in line.char_indices() {
                let next = line[i..].chars().next().map_or(i, |c| i + c.len_utf8());
                for replacement in ["", "\"", "{", "}", "[", ",", ":", "1", "n", "\\", " "] {
                    agrees(&format!("{}{replacement}{}", &line[..i], &line[next..]));
                }
            }
        }
    }

    #[test]
    fn leaves_everything_unusual_to_parse_line() {
        for line in [
            r#"[{"prompt": "p", "completion": "c"}]"#,
            r#"{"messages": [["user", "hi"], ["assistant", "yo"]]}"#,
            r#"{"messages": []}"#,
            r#"{"messages": null}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            r#"{"messages": [{"role": "assistant", "content": "only"}]}"#,
            r#"{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 2}]}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1.0}]}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": null}]}"#,
            r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "extra": 1}]}"#,
            r#"{"messages": [{"role": "user", "content": "q", "content": "r"}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "tool", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"role": "user", "content": "q", "name": "\ud800"}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"messages": [{"rol\u0065": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
            r#"{"instruction": "", "output": "3"}"#,
            r#"{"instruction": "x", "output": null}"#,
            r#"{"instruction": "x"}"#,
            r#"{"instruction": "x", "output": "y", "input": 3}"#,
            r#"{"instruction": "x", "output": "y", "instruction": "z"}"#,
            r#"{"prompt": "p"}"#,
            r#"{"prompt": "p", "completion": "c", "meta": "\ud800"}"#,
            r#"{"text": "no format"}"#,
            r#"{"prompt": "p", "completion": "c", "extra": 1e400}"#,
            r#"{"prompt": "p", "completion": "c"} trailing"#,
            r#"{"prompt": "p", "completion": "c""#,
            "\"just a string\"",
        ] {
            assert!(!agrees(line), "fast path answered for {line}");
        }
    }
}
