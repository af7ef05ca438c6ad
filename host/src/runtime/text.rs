//! Text a backend produces (error messages, trap messages, log lines) made safe to pass on:
//! bounded in length and with control characters escaped, so a backend can neither flood
//! the CO's gRPC client (a 50 MB message makes it see RESOURCE_EXHAUSTED instead of the
//! real code) nor forge log lines or terminal escapes.

/// Longest backend text passed on, in bytes (before escaping).
pub const MAX_TEXT: usize = 1024;

/// `text` cut to [`MAX_TEXT`] bytes at a character boundary (saying how much was cut), with
/// control characters escaped.
pub fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 32);
    for c in text[..end].chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if end < text.len() {
        out.push_str(&format!("… ({} more bytes)", text.len() - end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_printable_text_is_unchanged() {
        assert_eq!(bounded("volume vol-1: no space left (größe)"), "volume vol-1: no space left (größe)");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(bounded("a\nb\u{1b}[31mc\0"), "a\\nb\\u{1b}[31mc\\u{0}");
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(50_000_000 / 2);
        let cut = bounded(&long);
        assert!(cut.len() < MAX_TEXT + 64, "{}", cut.len());
        assert!(cut.ends_with(&format!("… ({} more bytes)", long.len() - MAX_TEXT)), "{}", &cut[cut.len() - 40..]);
    }
}
