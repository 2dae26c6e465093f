//! Finding the files to tail: include/exclude globs and a bounded directory walk.
//!
//! Discovery only lists paths; it never opens files for reading and never
//! decides identity (that is the tailer's job, by fingerprint). The walk starts
//! at each glob's literal prefix and descends no deeper than the glob can match,
//! so a pattern like `/var/log/containers/*.log` costs one `read_dir`.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::event::ModifyKind;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::TailError;

/// Deepest walk below a root for patterns containing `**`.
const MAX_DEPTH: usize = 16;

/// A directory to walk and how deep its glob can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Root {
    /// Literal prefix directory of the glob.
    pub dir: PathBuf,
    /// Number of path components below `dir` a match can have.
    pub depth: usize,
}

/// Compiled include and exclude patterns.
#[derive(Debug)]
pub(super) struct Globs {
    include: GlobSet,
    exclude: GlobSet,
    roots: Vec<Root>,
}

impl Globs {
    /// Compiles the patterns; an empty include list or a bad pattern is an error.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, TailError> {
        if include.is_empty() {
            return Err(TailError::NoInclude);
        }
        let mut inc = GlobSetBuilder::new();
        let mut roots: Vec<Root> = Vec::new();
        for pattern in include {
            let glob = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| TailError::Glob {
                    key: "include",
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            inc.add(glob);
            let root = root_of(pattern);
            if !roots.contains(&root) {
                roots.push(root);
            }
        }
        let mut exc = GlobSetBuilder::new();
        for pattern in exclude {
            let glob = GlobBuilder::new(pattern)
                .build()
                .map_err(|e| TailError::Glob {
                    key: "exclude",
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            exc.add(glob);
        }
        let build = |b: GlobSetBuilder, key: &'static str| {
            b.build().map_err(|e| TailError::Glob {
                key,
                pattern: String::new(),
                reason: e.kind().to_string(),
            })
        };
        Ok(Globs {
            include: build(inc, "include")?,
            exclude: build(exc, "exclude")?,
            roots,
        })
    }

    /// The directories the walk starts from (and that are worth watching).
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Whether a path is included and not excluded (by full path or file name).
    pub fn matches(&self, path: &Path) -> bool {
        if !self.include.is_match(path) {
            return false;
        }
        let name_excluded = path
            .file_name()
            .is_some_and(|n| self.exclude.is_match(Path::new(n)));
        !(name_excluded || self.exclude.is_match(path))
    }

    /// Every matching regular file (symlinks followed for files, not for
    /// directories, so that link loops cannot trap the walk). Directories that
    /// cannot be read are reported to `on_error` and skipped.
    pub fn walk(&self, on_error: &mut dyn FnMut(&Path, &io::Error)) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        for root in &self.roots {
            self.walk_dir(&root.dir, root.depth, &mut found, on_error);
        }
        found
    }

    fn walk_dir(
        &self,
        dir: &Path,
        depth: usize,
        found: &mut BTreeSet<PathBuf>,
        on_error: &mut dyn FnMut(&Path, &io::Error),
    ) {
        if depth == 0 {
            return;
        }
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            // A root that does not exist yet is normal (no pod has logged).
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                on_error(dir, &e);
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                self.walk_dir(&path, depth - 1, found, on_error);
            } else if (ft.is_file() || ft.is_symlink()) && self.matches(&path) {
                // A symlink counts only if it leads to a regular file.
                if ft.is_symlink() && !fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    continue;
                }
                found.insert(path);
            }
        }
    }
}

/// How filesystem events reach the async loop: a wake-up, and whether the
/// directory listing changed (so a rescan is worth it).
#[derive(Debug, Default)]
pub(super) struct Wake {
    /// Wakes the loop for a read round.
    pub notify: tokio::sync::Notify,
    /// A file was created, removed or renamed under a watched root.
    pub rescan: AtomicBool,
}

/// A `notify` watcher on the glob roots. Events only speed things up: the
/// periodic rescan and poll are the safety net, so a watcher that cannot be
/// created or a root that cannot be watched is logged at debug level and
/// retried on the next scan.
pub(super) struct DirWatch {
    watcher: Option<RecommendedWatcher>,
    unwatched: Vec<Root>,
}

impl DirWatch {
    /// Starts watching what can be watched now.
    pub fn new(roots: &[Root], wake: Arc<Wake>) -> Self {
        let handler = move |res: notify::Result<Event>| {
            let Ok(event) = res else { return };
            if matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_))
            ) {
                wake.rescan.store(true, Ordering::Relaxed);
            }
            wake.notify.notify_one();
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!("tail: no filesystem notifications, polling only: {e}");
                None
            }
        };
        let mut w = DirWatch {
            watcher,
            unwatched: roots.to_vec(),
        };
        w.retry();
        w
    }

    /// Tries again to watch the roots that could not be watched yet.
    pub fn retry(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        self.unwatched.retain(|root| {
            if !root.dir.is_dir() {
                return true;
            }
            let mode = if root.depth > 1 {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match watcher.watch(&root.dir, mode) {
                Ok(()) => false,
                Err(e) => {
                    tracing::debug!(dir = %root.dir.display(), "tail: cannot watch: {e}");
                    true
                }
            }
        });
    }
}

/// The literal directory prefix of a glob and how deep below it matches can be.
fn root_of(pattern: &str) -> Root {
    let path = Path::new(pattern);
    let mut dir = PathBuf::new();
    let mut rest: Vec<String> = Vec::new();
    for comp in path.components() {
        let text = comp.as_os_str().to_string_lossy();
        let literal = !text.contains(['*', '?', '[', '{', '\\']);
        if rest.is_empty() && literal {
            dir.push(comp.as_os_str());
        } else {
            rest.push(text.into_owned());
        }
    }
    if rest.is_empty() {
        // A literal file path: walk its parent, one level.
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        return Root {
            dir: parent,
            depth: 1,
        };
    }
    if dir.as_os_str().is_empty() || dir.components().all(|c| matches!(c, Component::CurDir)) {
        dir = PathBuf::from(".");
    }
    let depth = if rest.iter().any(|c| c.contains("**")) {
        MAX_DEPTH
    } else {
        rest.len()
    };
    Root { dir, depth }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn root_is_the_literal_prefix_with_the_glob_depth() {
        assert_eq!(
            root_of("/var/log/containers/*.log"),
            Root {
                dir: PathBuf::from("/var/log/containers"),
                depth: 1
            }
        );
        assert_eq!(
            root_of("/var/log/pods/*/*/*.log"),
            Root {
                dir: PathBuf::from("/var/log/pods"),
                depth: 3
            }
        );
        assert_eq!(root_of("/a/**/x.log").depth, MAX_DEPTH);
        assert_eq!(
            root_of("/var/log/app.log"),
            Root {
                dir: PathBuf::from("/var/log"),
                depth: 1
            }
        );
    }

    #[test]
    fn exclude_matches_full_path_and_file_name() -> Result<(), TailError> {
        let g = Globs::new(&strings(&["/logs/*"]), &strings(&["*.gz", "/logs/skip-*"]))?;
        assert!(g.matches(Path::new("/logs/a.log")));
        assert!(!g.matches(Path::new("/logs/a.log.gz")));
        assert!(!g.matches(Path::new("/logs/skip-me.log")));
        assert!(
            !g.matches(Path::new("/logs/sub/a.log")),
            "* must not cross /"
        );
        Ok(())
    }

    #[test]
    fn bad_glob_names_the_pattern() {
        let err = Globs::new(&strings(&["/a/[x"]), &[]).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("/a/[x"), "{text}");
    }

    #[test]
    fn walk_finds_nested_matches_and_skips_others() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pods = dir.path().join("pods/ns_pod_uid/app");
        fs::create_dir_all(&pods)?;
        fs::write(pods.join("0.log"), b"x\n")?;
        fs::write(pods.join("0.log.gz"), b"x\n")?;
        fs::write(dir.path().join("pods/top.log"), b"x\n")?;
        let pattern = format!("{}/pods/*/*/*.log", dir.path().display());
        let g = Globs::new(&[pattern], &strings(&["*.gz"]))?;
        let found = g.walk(&mut |_, _| {});
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec![pods.join("0.log")]
        );
        Ok(())
    }
}
