//! Byte limits of chat messages: where to cut text on UTF-8 boundaries, and
//! how to spread a group's alerts over a few messages that each fit.
//!
//! Platforms measure bytes of UTF-8 (WeCom: 4096 for markdown content, 2048
//! for text), and a Chinese character takes three, so cutting by characters
//! or at arbitrary bytes is wrong both ways. This module must not know any
//! platform: limits are passed in.

use std::ops::Range;

/// What marks text cut short.
pub const ELLIPSIS: &str = "…";

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes, ending with [`ELLIPSIS`] when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    if max < ELLIPSIS.len() {
        return prefix(s, max).to_string();
    }
    let mut out = prefix(s, max - ELLIPSIS.len()).to_string();
    out.push_str(ELLIPSIS);
    out
}

/// One message of a split notification: the alerts it shows, and (on the
/// last message only) how many alerts no message shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Indexes of the alerts this message shows.
    pub alerts: Range<usize>,
    /// Alerts left out of every message, counted in a "+N more" line.
    pub omitted: usize,
}

/// Spreads `n` alerts over at most `max_messages` messages of at most `limit`
/// bytes, in order, as many per message as fit.
///
/// `size(alerts, omitted)` is the byte length of the message showing
/// `alerts` (and a "+`omitted` more" line when `omitted > 0`). A message is
/// assumed to grow with its alerts. When even one alert does not fit, that
/// message shows it anyway and the caller cuts the message to the limit. The
/// last message counts the alerts that fit nowhere: every alert is shown or
/// counted, none is rejected.
pub fn plan<E>(
    n: usize,
    limit: usize,
    max_messages: usize,
    mut size: impl FnMut(Range<usize>, usize) -> Result<usize, E>,
) -> Result<Vec<Part>, E> {
    let max_messages = max_messages.max(1);
    if n == 0 {
        return Ok(vec![Part {
            alerts: 0..0,
            omitted: 0,
        }]);
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let last = parts.len() + 1 == max_messages;
        let remaining = n - start;
        let omitted = |k: usize| if last { remaining - k } else { 0 };
        let mut fits =
            |k: usize| -> Result<bool, E> { Ok(size(start..start + k, omitted(k))? <= limit) };
        let k = if fits(remaining)? {
            remaining
        } else {
            // Largest k that fits: fits(lo) holds (lo = 0 by convention),
            // fits(hi) does not.
            let (mut lo, mut hi) = (0, remaining);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid)? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            lo.max(1)
        };
        parts.push(Part {
            alerts: start..start + k,
            omitted: omitted(k),
        });
        start += k;
        if last {
            break;
        }
    }
    Ok(parts)
}

/// Cuts every line of `text` longer than `max` bytes, so that one huge
/// annotation cannot push the others out of a message.
pub fn cut_lines(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&truncate(line, max));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn prefix_never_splits_a_character() {
        let s = "告警ab";
        assert_eq!(prefix(s, 0), "");
        assert_eq!(prefix(s, 2), "");
        assert_eq!(prefix(s, 3), "告");
        assert_eq!(prefix(s, 5), "告");
        assert_eq!(prefix(s, 6), "告警");
        assert_eq!(prefix(s, 100), s);
    }

    #[test]
    fn truncate_marks_the_cut_and_stays_within_the_limit() {
        assert_eq!(truncate("磁盘已满", 12), "磁盘已满");
        let t = truncate("磁盘已满", 11);
        assert_eq!(t, "磁盘…");
        assert!(t.len() <= 11);
        assert_eq!(truncate("abc", 2), "ab");
    }

    #[test]
    fn all_alerts_in_one_message_when_they_fit() {
        let parts = plan::<()>(5, 100, 3, |r, _| Ok(r.len() * 10)).unwrap_or_default();
        assert_eq!(
            parts,
            vec![Part {
                alerts: 0..5,
                omitted: 0
            }]
        );
    }

    #[test]
    fn overflow_goes_to_the_next_messages_and_the_rest_is_counted() {
        // 10 bytes per alert, 5 for the "+N more" line, 35 per message.
        let size = |r: Range<usize>, omitted: usize| {
            Ok::<_, ()>(r.len() * 10 + if omitted > 0 { 5 } else { 0 })
        };
        let parts = plan(20, 35, 3, size).unwrap_or_default();
        assert_eq!(
            parts,
            vec![
                Part {
                    alerts: 0..3,
                    omitted: 0
                },
                Part {
                    alerts: 3..6,
                    omitted: 0
                },
                Part {
                    alerts: 6..9,
                    omitted: 11
                },
            ]
        );
    }

    #[test]
    fn an_alert_too_big_for_any_message_is_still_shown() {
        let parts = plan::<()>(2, 10, 3, |r, _| Ok(r.len() * 50)).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].alerts, 0..1);
    }

    proptest! {
        #[test]
        fn every_alert_is_shown_or_counted(
            sizes in proptest::collection::vec(1usize..300, 0..200),
            limit in 50usize..2000,
            max_messages in 1usize..6,
        ) {
            let size = |r: Range<usize>, omitted: usize| {
                Ok::<_, ()>(10 + sizes[r].iter().sum::<usize>() + if omitted > 0 { 12 } else { 0 })
            };
            let parts = plan(sizes.len(), limit, max_messages, size).unwrap_or_default();
            prop_assert!(parts.len() <= max_messages);
            let shown: usize = parts.iter().map(|p| p.alerts.len()).sum();
            let omitted = parts.last().map_or(0, |p| p.omitted);
            prop_assert_eq!(shown + omitted, sizes.len());
            let mut next = 0;
            for p in &parts {
                prop_assert_eq!(p.alerts.start, next);
                next = p.alerts.end;
                let bytes = size(p.alerts.clone(), p.omitted).unwrap_or(0);
                prop_assert!(bytes <= limit || p.alerts.len() == 1);
            }
        }

        #[test]
        fn truncated_text_is_valid_and_short_enough(s in "\\PC{0,300}", max in 0usize..400) {
            let t = truncate(&s, max);
            prop_assert!(t.len() <= max);
            prop_assert!(s.starts_with(t.trim_end_matches(ELLIPSIS)));
        }
    }
}
