//! Text that crosses a trust boundary inside a message: what a caller sent, echoed back in an error,
//! and what a runner reports, shown to the tenant. Echoed input has its control characters escaped
//! (Postgres cannot store NUL, and terminals and logs must not interpret the rest) and its length
//! bounded; a runner's messages lose the paths of its local disk.

/// At most this many characters of one echoed value.
pub const MAX_ECHO_CHARS: usize = 200;

/// `value` made safe to quote inside a message: control characters (NUL included) written as
/// `\u{…}`, and cut to `max_chars` characters with a trailing `…`.
pub fn echo(value: &str, max_chars: usize) -> String {
    escaped(value, max_chars, |_| false)
}

/// A whole message made safe to store and show: control characters other than newline and tab
/// escaped, cut to `max_chars`.
pub fn message(value: &str, max_chars: usize) -> String {
    escaped(value, max_chars, |c| c == '\n' || c == '\t')
}

fn escaped(value: &str, max_chars: usize, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(value.len().min(max_chars * 2));
    for (taken, c) in value.chars().enumerate() {
        if taken == max_chars {
            out.push('…');
            break;
        }
        if c.is_control() && !keep(c) {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Free text from a runner as tenants may read it: no local paths, no control characters, at most
/// 4000 characters. The runner applies it before sending, and the scheduler again on receipt (a
/// compromised runner is not trusted to).
pub fn for_tenants(message: &str) -> String {
    self::message(&redact_local_paths(message), 4000)
}

/// `message` with every absolute local path (`/home/…/work/job-1/model.safetensors`) reduced to its
/// last component (`…/model.safetensors`): a runner's directory layout, user names and mount points
/// are nobody's business but the operator's. URLs (`s3://bucket/key`, `http://host/…`) are kept.
pub fn redact_local_paths(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find('/') {
        let before = &rest[..start];
        let starts_token = before.chars().next_back().is_none_or(|c| c.is_whitespace() || "\"'`([{=,;<".contains(c));
        let token_len = rest[start..].find(|c: char| c.is_whitespace() || "\"'`)]}>,;".contains(c)).unwrap_or(rest.len() - start);
        let token = &rest[start..start + token_len];
        out.push_str(before);
        let components = token.split('/').filter(|c| !c.is_empty()).count();
        if starts_token && !token.starts_with("//") && components >= 2 {
            let last = token.trim_end_matches(['/', ':', '.']).rsplit('/').next().unwrap_or_default();
            out.push('…');
            out.push('/');
            out.push_str(last);
            out.push_str(&token[token.trim_end_matches(['/', ':', '.']).len()..]);
        } else {
            out.push_str(token);
        }
        rest = &rest[start + token_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_controls_and_bounds_length() {
        assert_eq!(echo("a\u{0}b\u{1b}[31m", 50), "a\\u{0000}b\\u{001b}[31m");
        assert_eq!(echo("line\nbreak", 50), "line\\u{000a}break");
        assert_eq!(echo(&"x".repeat(300), 10), format!("{}…", "x".repeat(10)));
        assert_eq!(echo("héllo", 3), "hél…");
        assert!(!echo("\u{0}", 10).contains('\u{0}'));
    }

    #[test]
    fn message_keeps_newlines_but_not_nul() {
        assert_eq!(message("a\nb\tc\u{0}d", 100), "a\nb\tc\\u{0000}d");
    }

    #[test]
    fn local_paths_are_reduced_to_their_last_component() {
        assert_eq!(
            redact_local_paths("reading /root/.cache/moetune/state/runner/job-1/attempt-2/model.safetensors: No such file"),
            "reading …/model.safetensors: No such file"
        );
        assert_eq!(redact_local_paths("Resuming from checkpoint /var/lib/moetune/job/resume/"), "Resuming from checkpoint …/resume/");
        assert_eq!(redact_local_paths("(at \"/tmp/x/y\")"), "(at \"…/y\")");
        assert_eq!(redact_local_paths("downloading s3://bucket/files/t/file-1.jsonl"), "downloading s3://bucket/files/t/file-1.jsonl");
        assert_eq!(redact_local_paths("see http://host/a/b and a/b/c"), "see http://host/a/b and a/b/c");
        assert_eq!(redact_local_paths("ratio 3/4 of /x"), "ratio 3/4 of /x");
        assert_eq!(redact_local_paths("no paths here"), "no paths here");
    }
}
