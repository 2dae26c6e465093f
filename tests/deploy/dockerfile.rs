//! Just enough of the Dockerfile and `.dockerignore` syntax to check
//! `deploy/Dockerfile` without a Docker engine: instructions with their
//! continuation lines joined and comments dropped, grouped into stages, and
//! the exclusion patterns of the build context.

/// One instruction: `COPY --from=build /a /b` is keyword `COPY`, args
/// `--from=build /a /b`.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// 1-based line the instruction starts on.
    pub line: usize,
    /// Upper-cased.
    pub keyword: String,
    pub args: String,
}

/// A `FROM` and the instructions up to the next one.
#[derive(Debug)]
pub struct Stage {
    pub from: Instruction,
    /// The image the stage starts from.
    pub base: String,
    /// `AS <name>`, lower-cased as Docker compares it.
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// A parsed Dockerfile.
#[derive(Debug)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

/// Reads instructions: a line ending in `\` continues on the next; comment
/// lines (also between continued lines) and blank lines are dropped.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (trimmed, false),
        };
        let (line, mut joined) = current.take().unwrap_or((n + 1, String::new()));
        if !joined.is_empty() && !body.is_empty() {
            joined.push(' ');
        }
        joined.push_str(body);
        if continues {
            current = Some((line, joined));
            continue;
        }
        if joined.is_empty() {
            continue;
        }
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        out.push(Instruction {
            line,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    if let Some((line, joined)) = current {
        panic!("Dockerfile:{line}: `{joined}` continues past the end of the file");
    }
    out
}

/// Groups instructions into stages.
pub fn parse(text: &str) -> Dockerfile {
    let mut file = Dockerfile {
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for ins in instructions(text) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let (base, name) = match words.as_slice() {
                [base] => (*base, None),
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (*base, Some(name.to_ascii_lowercase()))
                }
                _ => panic!(
                    "Dockerfile:{}: FROM {}: expected `FROM image [AS name]`",
                    ins.line, ins.args
                ),
            };
            file.stages.push(Stage {
                base: base.to_string(),
                name,
                from: ins,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = file.stages.last_mut() {
            stage.instructions.push(ins);
        } else if ins.keyword == "ARG" {
            file.global_args.push(ins);
        } else {
            panic!(
                "Dockerfile:{}: {} before the first FROM",
                ins.line, ins.keyword
            );
        }
    }
    file
}

/// A `COPY`/`ADD`: its `--flag=value` options, sources and destination.
#[derive(Debug)]
pub struct Copy {
    pub flags: Vec<(String, String)>,
    pub sources: Vec<String>,
    pub dest: String,
}

impl Copy {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the arguments of a `COPY` or `ADD`, in shell or exec (JSON) form.
pub fn copy(ins: &Instruction) -> Copy {
    let mut flags = Vec::new();
    let mut rest = ins.args.as_str();
    while let Some(after) = rest.strip_prefix("--") {
        let (flag, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
        flags.push((k.to_string(), v.to_string()));
        rest = tail.trim_start();
    }
    let mut paths: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest)
            .unwrap_or_else(|e| panic!("Dockerfile:{}: {} {rest}: {e}", ins.line, ins.keyword))
    } else {
        rest.split_whitespace().map(String::from).collect()
    };
    let dest = paths
        .pop()
        .filter(|_| !paths.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "Dockerfile:{}: {} needs a source and a destination",
                ins.line, ins.keyword
            )
        });
    Copy {
        flags,
        sources: paths,
        dest,
    }
}

/// The patterns of a `.dockerignore`, in order (`!` re-includes).
pub fn ignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect()
}

/// Whether `.dockerignore` leaves `path` (relative to the context, `/`
/// separated) out of the build context. The last matching pattern decides;
/// a pattern that matches a directory leaves out everything under it.
pub fn is_ignored(patterns: &[String], path: &str) -> bool {
    let mut ignored = false;
    for p in patterns {
        let (negated, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p.as_str()),
        };
        let parts: Vec<&str> = path.split('/').collect();
        // The path itself or one of its parent directories.
        let hit = (1..=parts.len()).any(|n| glob(p, &parts[..n].join("/")));
        if hit {
            ignored = !negated;
        }
    }
    ignored
}

/// Go's `filepath.Match` with Docker's `**` (any number of directories),
/// without character classes, which `.dockerignore` here does not use.
fn glob(pattern: &str, path: &str) -> bool {
    fn components(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => components(&p[1..], s) || (!s.is_empty() && components(p, &s[1..])),
            (Some(pc), Some(sc)) => {
                component(pc.as_bytes(), sc.as_bytes()) && components(&p[1..], &s[1..])
            }
            _ => false,
        }
    }
    fn component(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => component(&p[1..], s) || (!s.is_empty() && component(p, &s[1..])),
            (Some(b'?'), Some(_)) => component(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && component(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    components(&p, &s)
}

#[test]
fn the_reader_joins_continuations_and_drops_comments() {
    let text = "# syntax=docker/dockerfile:1\nARG V=1\nFROM a:${V} AS Build\nRUN one \\\n  # a comment\n  two\nFROM b\nCOPY --from=build [\"/x\", \"/y\"]\n";
    let file = parse(text);
    assert_eq!(file.global_args.len(), 1);
    assert_eq!(file.stages.len(), 2);
    assert_eq!(file.stages[0].name.as_deref(), Some("build"));
    assert_eq!(file.stages[0].instructions[0].args, "one two");
    assert_eq!(file.stages[0].instructions[0].line, 4);
    let c = copy(&file.stages[1].instructions[0]);
    assert_eq!(c.flag("from"), Some("build"));
    assert_eq!(
        (c.sources.as_slice(), c.dest.as_str()),
        (&["/x".to_string()][..], "/y")
    );
}

#[test]
fn ignore_patterns_match_as_docker_does() {
    let p = ignore_patterns("target\n**/.venv\n/fuzz/\n*.md\n!README.md\n");
    assert!(is_ignored(&p, "target"));
    assert!(is_ignored(&p, "target/release/mecha"));
    assert!(is_ignored(&p, "tests/deploy/.venv/bin/python"));
    assert!(is_ignored(&p, "fuzz/Cargo.toml"));
    assert!(is_ignored(&p, "NOTES.md"));
    assert!(!is_ignored(&p, "README.md"));
    assert!(!is_ignored(&p, "src/main.rs"));
    assert!(!is_ignored(&p, "agent/src/target.rs"));
}
