//! The agent-visible text of a JSON syntax error.
//!
//! The parser's own `Display` names its internals (`InternalError(TapeError)
//! at character 5`), which means nothing to an agent author. apm-server
//! answers `decode error: data read error: <parser detail>`; the prefix is
//! kept by [`LineError::Decode`] and this module writes the detail in plain
//! words: what was wrong and, where the parser knows it, the byte offset.
//!
//! Invariant: every `simd_json` error maps to a fixed sentence plus at most
//! an offset and the offending character — never the parser's debug text.

use crate::model::LineError;
use simd_json::ErrorType;

/// The decode error for a line the JSON parser refused.
pub(super) fn syntax_error(e: &simd_json::Error) -> LineError {
    let at = e.index();
    let detail = match e.error() {
        ErrorType::Eof => "unexpected EOF".to_string(),
        ErrorType::InvalidUtf8 => "invalid UTF-8 in string".to_string(),
        ErrorType::InvalidEscape
        | ErrorType::InvalidUnicodeEscape
        | ErrorType::InvalidUnicodeCodepoint => "invalid escape sequence in string".to_string(),
        ErrorType::InvalidNumber | ErrorType::InvalidExponent | ErrorType::Overflow => {
            format!("invalid number at offset {at}")
        }
        ErrorType::ExpectedTrue | ErrorType::ExpectedFalse | ErrorType::ExpectedNull => {
            format!("invalid literal at offset {at}")
        }
        ErrorType::ExpectedObjectColon => format!("expected ':' after object key at offset {at}"),
        ErrorType::ExpectedObjectKey
        | ErrorType::ExpectedObjectContent
        | ErrorType::KeyMustBeAString
        | ErrorType::BadKeyType => format!("expected a string object key at offset {at}"),
        ErrorType::TrailingData => format!("unexpected data after the value at offset {at}"),
        ErrorType::InputTooLarge => "input too large".to_string(),
        _ => match e.character() {
            Some(c) if !c.is_control() => format!("invalid character {c:?} at offset {at}"),
            Some(_) => format!("invalid character at offset {at}"),
            None => "unexpected end of JSON input".to_string(),
        },
    };
    LineError::Decode(detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &[u8]) -> String {
        let mut buf = line.to_vec();
        match simd_json::to_tape(&mut buf) {
            Ok(_) => String::from("parsed"),
            Err(e) => syntax_error(&e).to_string(),
        }
    }

    #[test]
    fn syntax_errors_read_as_plain_words_without_parser_internals() {
        let cases: [(&[u8], &str); 8] = [
            (br#"{"a":x}"#, "invalid character 'x' at offset 5"),
            (br#"}"#, "invalid character '}' at offset 0"),
            (br#"{"a":"\q"}"#, "invalid escape sequence in string"),
            (br#"{"a":1.e}"#, "invalid number at offset 7"),
            (br#"{"a":tru}"#, "invalid literal at offset 5"),
            (br#"{"a" 1}"#, "expected ':' after object key at offset 5"),
            (br#"{1:2}"#, "expected a string object key at offset 1"),
            (b"{\"a\":\"\xff\"}", "invalid UTF-8 in string"),
        ];
        for (line, want) in cases {
            assert_eq!(
                text(line),
                format!("decode error: data read error: {want}"),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [&br#"{"a":"#[..], br#"{"a":"abc"#, b"", br#"[1,2"#] {
            let t = text(line);
            assert!(
                !t.contains("Error") && !t.contains("Tape") && !t.contains("Syntax"),
                "{t}"
            );
        }
    }
}
