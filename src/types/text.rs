//! Upstream text on its way to a log line, the database or `status`: [`shown`], the one
//! helper. Upstream is untrusted: a 50 MB string must not become a 50 MB log line or
//! `last_error`, and a newline in a `faultString` or a tag name must not forge a log line.

/// At most this many characters of any one piece of text are shown.
pub const SHOWN_CHARS: usize = 1000;

/// `text` made safe to show: control characters (newlines, carriage returns, escapes)
/// escaped as `\n`, `\u{1b}`…, and cut after [`SHOWN_CHARS`] characters with a note of how
/// much was left out.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(SHOWN_CHARS + 32));
    for (shown, (at, c)) in text.char_indices().enumerate() {
        if shown == SHOWN_CHARS {
            out.push_str(&format!("… ({} more bytes)", text.len() - at));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_cuts_long_text() {
        assert_eq!(shown("plain"), "plain");
        assert_eq!(
            shown("a\nERROR forged\r\x1b[2J"),
            "a\\nERROR forged\\r\\u{1b}[2J"
        );
        let long = "A".repeat(50 << 20);
        let s = shown(&long);
        assert!(s.len() < SHOWN_CHARS + 40, "{}", s.len());
        assert!(s.ends_with(&format!("… ({} more bytes)", (50 << 20) - SHOWN_CHARS)));
        assert_eq!(
            shown(&"é".repeat(1200))
                .chars()
                .filter(|&c| c == 'é')
                .count(),
            SHOWN_CHARS
        );
    }
}
