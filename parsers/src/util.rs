//! Small byte and text helpers shared by the hand-written codecs.
//!
//! Only bounds-checked primitives live here: nothing in this module may slice
//! without checking, allocate more than its input, or know about any format.

/// A short, escaped excerpt of `bytes` for error messages (at most 40 bytes of
/// input are shown, invalid UTF-8 is replaced).
pub(crate) fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 40;
    let cut = bytes.get(..MAX).unwrap_or(bytes);
    let text = String::from_utf8_lossy(cut);
    if bytes.len() > MAX {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

/// [`preview`] for text.
pub(crate) fn preview_str(text: &str) -> String {
    preview(text.as_bytes())
}

/// The largest length `<= limit` that does not cut a UTF-8 sequence of `bytes`
/// in two. Bytes that are not UTF-8 are cut anywhere.
pub(crate) fn utf8_floor(bytes: &[u8], limit: usize) -> usize {
    if limit >= bytes.len() {
        return bytes.len();
    }
    let mut end = limit;
    // Back up over at most three continuation bytes to the start of the
    // sequence that straddles the limit.
    while end > 0 && limit - end < 4 && bytes.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
        end -= 1;
    }
    if limit - end >= 4 { limit } else { end }
}

/// Cuts `text` to at most `limit` bytes at a char boundary.
pub(crate) fn truncate_str(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let mut end = limit;
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// Splits at the first ASCII space: `(before, after)`, or `None` without a space.
pub(crate) fn split_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b' ', bytes)?;
    Some((bytes.get(..i)?, bytes.get(i + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_floor_never_cuts_a_multibyte_char() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(utf8_floor(s, 2), 1);
        assert_eq!(utf8_floor(s, 3), 3);
        assert_eq!(utf8_floor(s, 5), 3);
        assert_eq!(utf8_floor(s, 7), 6);
        assert_eq!(utf8_floor(s, 100), s.len());
        assert_eq!(utf8_floor(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80], 5), 5);
    }

    #[test]
    fn truncate_str_stops_at_char_boundary() {
        let mut s = String::from("añb");
        truncate_str(&mut s, 2);
        assert_eq!(s, "a");
    }

    #[test]
    fn preview_marks_cut_input() {
        assert_eq!(preview(b"abc"), "\"abc\"");
        assert!(preview(&[b'x'; 100]).ends_with('…'));
    }
}
