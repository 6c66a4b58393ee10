//! Characters no stored text may hold: control characters (NUL among
//! them), which terminals, logs and some databases treat as commands, and
//! the bidirectional-formatting characters, which make text display in a
//! different order than it is stored (one name could pose as another).

/// Unicode's `Bidi_Control` characters.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Why `text` may not be stored, if it may not.
pub fn refuse_hidden_characters(text: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if text.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional formatting characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_nul_and_bidi_characters_are_refused() {
        assert!(refuse_hidden_characters("Ada Lovelace").is_ok());
        assert!(refuse_hidden_characters("Zoë 李").is_ok());
        for bad in [
            "a\u{0}b",
            "a\nb",
            "a\u{7}b",
            "evil\u{202E}gnp.exe",
            "x\u{2066}y",
        ] {
            assert!(refuse_hidden_characters(bad).is_err(), "{bad:?}");
        }
    }
}
