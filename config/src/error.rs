//! The one error type of the config crate.

/// A mistake in a config, naming the file, line and key where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A mistake at a known place.
    #[error("{file}:{line}: {key}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// Dotted path of the key (`agent.sources.containers.include[0]`).
        key: String,
        /// What was expected and what was found.
        reason: String,
    },
}

impl ConfigError {
    /// A mistake at `key` (a dotted path such as
    /// `aggregator.alerting.rules[2].query`) of the config `text` read from
    /// `file`, with the key's line found in the text: for checks made
    /// outside this crate, by the owners of a syntax (queries, templates).
    pub fn at(file: &str, text: &str, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: file.to_string(),
            line: locate_or_parent(text, key),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn from_yaml(
        file: &str,
        text: &str,
        e: &serde_path_to_error::Error<serde_yaml_ng::Error>,
    ) -> Self {
        let inner = e.inner();
        let mut reason = inner.to_string();
        if let Some(i) = reason.rfind(" at line ") {
            reason.truncate(i);
        }
        // serde_yaml_ng prefixes its own (coarser) path: keep only the message.
        if let Some((prefix, rest)) = reason.split_once(": ")
            && !prefix.contains(' ')
        {
            reason = rest.to_string();
        }
        let key = e.path().to_string();
        let line = locate(text, &key)
            .or_else(|| inner.location().map(|l| l.line()))
            .unwrap_or(0);
        ConfigError::Invalid {
            file: file.to_string(),
            line,
            key,
            reason,
        }
    }
}

/// The 1-based line of a dotted key path in block or flow YAML: each segment is
/// searched for as a key after the line of the previous one. `None` if a segment
/// is not found (the parser's own position is used then).
pub(crate) fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = None;
    for seg in path.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if name.is_empty() || name == "?" {
            continue;
        }
        let i = (from..lines.len()).find(|&i| has_key(lines[i], name))?;
        found = Some(i + 1);
        from = i;
        // In a block sequence, go on from the line of the n-th `- ` entry so
        // that the next key is searched for in that entry.
        if let Some(n) = index
            && let Some(entry) = block_entry(&lines, i, n)
        {
            found = Some(entry + 1);
            from = entry;
        }
    }
    found
}

/// The line of `path`, or of its nearest enclosing key that is written (a
/// missing key is reported at the mapping that lacks it); 0 when none is.
pub(crate) fn locate_or_parent(text: &str, path: &str) -> usize {
    let mut path = path;
    loop {
        if let Some(line) = locate(text, path) {
            return line;
        }
        match path.rfind('.') {
            Some(i) => path = &path[..i],
            None => return 0,
        }
    }
}

/// The line of entry `n` of the block sequence under the key on line `key`:
/// the `- ` lines at the indentation of the first one.
fn block_entry(lines: &[&str], key: usize, n: usize) -> Option<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let first = (key + 1..lines.len()).find(|&i| !lines[i].trim().is_empty())?;
    if !lines[first].trim_start().starts_with("- ") {
        return None;
    }
    let depth = indent(lines[first]);
    (first..lines.len())
        .take_while(|&i| lines[i].trim().is_empty() || indent(lines[i]) >= depth)
        .filter(|&i| indent(lines[i]) == depth && lines[i].trim_start().starts_with("- "))
        .nth(n)
}

fn has_key(line: &str, key: &str) -> bool {
    let code = line.split(" #").next().unwrap_or(line);
    let mut rest = code;
    while let Some(i) = rest.find(key) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + key.len()..].trim_start_matches(['"', '\'']);
        let starts = matches!(before, None | Some(' ' | '{' | ',' | '-' | '"' | '\''));
        if starts && after.trim_start().starts_with(':') {
            return true;
        }
        rest = &rest[i + key.len()..];
    }
    false
}
