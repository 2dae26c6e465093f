//! What a stack frame contributes to a group, following the frame rules of
//! Sentry's default grouping (newstyle:2023-01-11): the module, else the
//! file's basename; the function, normalised per platform; the context line
//! on platforms whose source lines are stable; recursion and low-quality
//! JavaScript frames ignored. Pure functions of frame JSON; must not decide
//! which frames of a stack count (in-app or not): the caller does.

use serde_json::{Map, Value};

/// Platforms whose frames' context lines contribute (Sentry's
/// `contextline_platforms`).
const CONTEXT_LINE_PLATFORMS: [&str; 5] = ["javascript", "node", "python", "php", "ruby"];

/// Context lines longer than this are ignored (minified code).
const MAX_CONTEXT_LINE_CHARS: usize = 120;

/// Fields that must all be equal for a frame to be a recursive call of the
/// frame before it.
const RECURSION_FIELDS: [&str; 7] = [
    "abs_path", "package", "module", "filename", "function", "lineno", "colno",
];

/// Module name when a JavaScript URL has no usable path.
const UNKNOWN_MODULE: &str = "<unknown module>";

/// The string value of `key`, if any and not empty.
pub fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether `platform` behaves like JavaScript (browser and Node).
pub fn is_javascript(platform: &str) -> bool {
    matches!(platform, "javascript" | "node")
}

/// Whether `frame` repeats `prev` exactly (a recursive call).
pub fn is_recursion(frame: &Map<String, Value>, prev: Option<&Map<String, Value>>) -> bool {
    prev.is_some_and(|p| RECURSION_FIELDS.iter().all(|f| frame.get(*f) == p.get(*f)))
}

/// The contributing values of one frame as `(component, value)`, in Sentry's
/// order (module, filename, function, context line); empty when the frame
/// contributes nothing.
pub fn components(frame: &Map<String, Value>, event_platform: &str) -> Vec<(&'static str, String)> {
    let platform = str_field(frame, "platform").unwrap_or(event_platform);
    let js = is_javascript(platform);
    // Browser SDKs send the script URL as `filename` only; Sentry's
    // JavaScript processing makes it the `abs_path`, and so do we.
    let abs_path =
        str_field(frame, "abs_path").or_else(|| js.then(|| str_field(frame, "filename")).flatten());
    let raw_function = str_field(frame, "raw_function");
    let function = str_field(frame, "function");
    if js {
        let func = raw_function.or(function).map(last_dotted);
        let low_quality_path = matches!(
            abs_path,
            Some("[native code]" | "native code" | "eval code" | "<anonymous>")
        );
        if func == Some("eval") || low_quality_path {
            return Vec::new();
        }
    }
    let mut out = Vec::with_capacity(3);
    match module(frame, platform, abs_path) {
        Some(m) => out.push(("module", m)),
        None => {
            if let Some(f) = filename(frame, abs_path) {
                out.push(("filename", f));
            }
        }
    }
    if let Some(f) = function_name(function.or(raw_function), platform) {
        out.push(("function", f));
    }
    if CONTEXT_LINE_PLATFORMS.contains(&platform)
        && let Some(line) = str_field(frame, "context_line")
    {
        let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
        let minified = js && function.is_none();
        if !collapsed.is_empty() && line.chars().count() <= MAX_CONTEXT_LINE_CHARS && !minified {
            out.push(("context_line", collapsed));
        }
    }
    out
}

/// The module to show for a frame: [`module`] as grouping sees it.
pub fn display_module(frame: &Map<String, Value>, platform: &str) -> Option<String> {
    let abs_path = str_field(frame, "abs_path").or_else(|| str_field(frame, "filename"));
    module(frame, platform, abs_path)
}

/// The frame's module: as sent, or for JavaScript served from a URL, made up
/// from the URL the way Sentry's JavaScript processing does.
fn module(frame: &Map<String, Value>, platform: &str, abs_path: Option<&str>) -> Option<String> {
    let js = is_javascript(platform);
    match str_field(frame, "module") {
        // A "module" that is just the tail of the path says nothing more.
        Some(m) if js && m.contains('/') && abs_path.is_some_and(|p| p.ends_with(m)) => None,
        Some(m) if platform == "java" => Some(clean_java_module(m)),
        Some(m) => Some(m.to_string()),
        None if js => abs_path
            .filter(|p| has_url_origin(p) || p.starts_with("webpack:") || p.starts_with("app:"))
            .map(generate_js_module),
        None => None,
    }
}

/// The lowercased basename of the frame's file, unless the frame comes from a
/// URL or an anonymous or native file.
fn filename(frame: &Map<String, Value>, abs_path: Option<&str>) -> Option<String> {
    let name = str_field(frame, "filename")?;
    let base = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_lowercase();
    if abs_path.is_some_and(has_url_origin) || base == "<anonymous>" || base == "[native code]" {
        return None;
    }
    (!base.is_empty()).then_some(base)
}

/// Whether a path is a URL (or a blob of one), whose host and version say
/// nothing about the code. `file:` paths (Electron, Node ESM) are kept.
fn has_url_origin(path: &str) -> bool {
    ["http:", "https:", "applewebdata:", "blob:"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The function name normalised per platform, or `None` when it must not
/// contribute (anonymous functions, lambdas).
fn function_name(function: Option<&str>, platform: &str) -> Option<String> {
    let f = function?;
    if is_javascript(platform) {
        // `Object.foo` and `Foo.foo` differ across browsers: keep `foo`.
        let f = last_dotted(f);
        let anonymous = matches!(
            f,
            "" | "?" | "<anonymous function>" | "<anonymous>" | "Anonymous function"
        ) || f.ends_with("/<");
        return (!anonymous).then(|| f.to_string());
    }
    match platform {
        "java" if f.starts_with("lambda$") => None,
        "php" if f.starts_with("[Anonymous") || f.starts_with("class@anonymous\u{0}") => None,
        "php" if f.starts_with("class@anonymous") => {
            Some(f.rsplit("::").next().unwrap_or(f).to_string())
        }
        "ruby" if f.starts_with("block ") => Some("block".to_string()),
        _ => Some(f.to_string()),
    }
}

/// The part after the last dot (`HTMLButtonElement.onClick` → `onClick`).
fn last_dotted(f: &str) -> &str {
    f.rsplit('.').next().unwrap_or(f)
}

/// Java class names with generated parts (`$$Lambda$12/0x...`,
/// `$$EnhancerByCGLIB$$1a2b`, `$$FastClassByCGLIB$$...`, `$$_javassist_12`)
/// made stable.
fn clean_java_module(module: &str) -> String {
    let markers = [
        ("$$Lambda$", "$$Lambda$<auto>"),
        ("$$EnhancerByCGLIB$$", "$$EnhancerByCGLIB$$<auto>"),
        ("$$FastClassByCGLIB$$", "$$FastClassByCGLIB$$<auto>"),
        ("$$_javassist_", "$$_javassist_<auto>"),
    ];
    for (marker, replacement) in markers {
        if let Some(at) = module.find(marker) {
            let head = module.get(..at).unwrap_or(module);
            return format!("{head}{replacement}");
        }
    }
    module.to_string()
}

/// A module name made up from a script URL: the path without query,
/// extension, `.min`, leading folders that are build artefacts (`static`,
/// `js`, versions, hashes) and a trailing commit hash, as Sentry does for
/// JavaScript frames (`https://cdn/static/js/main.3f2a1b9c.js` → `main`).
fn generate_js_module(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = match url.split_once("://") {
        // Drop the host.
        Some(_) => after_scheme.find('/').map_or("", |i| &after_scheme[i..]),
        None => url.split_once(':').map_or(url, |(_, rest)| rest),
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    // Extension: only a dot in the last segment counts.
    let last_slash = path.rfind('/').map_or(0, |i| i + 1);
    let mut name = match path[last_slash..].rfind('.') {
        Some(dot) if dot > 0 => &path[..last_slash + dot],
        _ => path,
    };
    if let Some(stripped) = name.strip_suffix(".min") {
        name = stripped;
    }
    let tokens: Vec<&str> = name.split('/').collect();
    // A whole segment that is a hash: everything after it is the module.
    for (i, t) in tokens.iter().enumerate() {
        if is_hex_of_len(t, 32) || is_hex_of_len(t, 40) {
            let rest = tokens.get(i + 1..).unwrap_or_default().join("/");
            return if rest.is_empty() {
                UNKNOWN_MODULE.to_string()
            } else {
                rest
            };
        }
    }
    // Leading folders that are build artefacts, then a trailing commit hash.
    let mut rest: &[&str] = &tokens;
    while let Some((first, tail)) = rest.split_first() {
        if tail.is_empty() || !is_artefact_folder(first) {
            break;
        }
        rest = tail;
    }
    let mut module = rest.join("/");
    if let Some(cut) = trailing_commitish(&module) {
        module.truncate(cut);
    }
    if module.is_empty() {
        UNKNOWN_MODULE.to_string()
    } else {
        module
    }
}

/// Folders that carry no meaning for grouping: empty (leading slash),
/// `js`/`script(s)`/`javascript(s)`/`build`/`static`/`node_modules`/
/// `bower_components`, hidden (`_x`, `.x`, `~x`), versions and hashes.
fn is_artefact_folder(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    let named = matches!(
        lower.as_str(),
        "" | "js"
            | "script"
            | "scripts"
            | "javascript"
            | "javascripts"
            | "build"
            | "static"
            | "node_modules"
            | "bower_components"
    );
    let hidden = t.starts_with(['_', '.', '~']);
    let version = {
        let v = t.strip_prefix('v').unwrap_or(t);
        !v.is_empty()
            && v.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let hash = [7, 8, 32, 40].iter().any(|&n| is_hex_of_len(t, n));
    named || hidden || version || hash
}

/// Where a trailing `-<hex>` or `.<hex>` of at least 7 digits starts.
fn trailing_commitish(module: &str) -> Option<usize> {
    let sep = module.rfind(['-', '.'])?;
    let tail = module.get(sep + 1..)?;
    (tail.len() >= 7 && tail.bytes().all(|b| b.is_ascii_hexdigit())).then_some(sep)
}

fn is_hex_of_len(t: &str, n: usize) -> bool {
    t.len() == n && t.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn frame(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn js_modules_lose_hosts_hashes_versions_and_build_folders() {
        for (url, module) in [
            (
                "https://shop.example.com/static/js/main.3f2a1b9c.js",
                "main",
            ),
            ("http://google.com/js/v1.0/foo/bar/baz.js", "foo/bar/baz"),
            (
                "https://cdn.example.com/assets/app.min.js?v=3",
                "assets/app",
            ),
            (
                "https://x.io/0123456789abcdef0123456789abcdef/vendor/lib.js",
                "vendor/lib",
            ),
            ("https://x.io/app-1a2b3c4d5e.js", "app"),
            ("https://x.io/", UNKNOWN_MODULE),
            ("webpack:///./src/cart.ts", "src/cart"),
        ] {
            assert_eq!(generate_js_module(url), module, "{url}");
        }
    }

    #[test]
    fn module_wins_over_filename_and_urls_do_not_contribute_filenames() {
        let python = frame(json!({
            "module": "shop.cart", "filename": "shop/cart.py", "function": "total",
            "context_line": "    return   sum(items)  "
        }));
        assert_eq!(
            components(&python, "python"),
            [
                ("module", "shop.cart".to_string()),
                ("function", "total".to_string()),
                ("context_line", "return sum(items)".to_string()),
            ]
        );
        let no_module = frame(json!({"filename": "C:\\App\\Cart.CS", "function": "Total"}));
        assert_eq!(
            components(&no_module, "csharp"),
            [
                ("filename", "cart.cs".to_string()),
                ("function", "Total".to_string())
            ]
        );
    }

    #[test]
    fn javascript_functions_are_trimmed_and_anonymous_ones_ignored() {
        let f = |function: &str| {
            components(
                &frame(json!({"abs_path": "https://a.io/app.js", "function": function})),
                "javascript",
            )
        };
        assert_eq!(
            f("HTMLButtonElement.onClick"),
            [
                ("module", "app".to_string()),
                ("function", "onClick".to_string())
            ]
        );
        assert_eq!(f("<anonymous>"), [("module", "app".to_string())]);
        assert_eq!(f("?"), [("module", "app".to_string())]);
        assert!(f("eval").is_empty());
        let native = frame(json!({"abs_path": "[native code]", "function": "forEach"}));
        assert!(components(&native, "javascript").is_empty());
    }

    #[test]
    fn java_lambdas_and_generated_classes_are_stable() {
        let f = frame(json!({
            "module": "com.shop.Cart$$Lambda$123/0x0000000800c0b040",
            "function": "lambda$total$0"
        }));
        assert_eq!(
            components(&f, "java"),
            [("module", "com.shop.Cart$$Lambda$<auto>".to_string())]
        );
    }

    #[test]
    fn long_and_minified_context_lines_are_ignored() {
        let long = frame(json!({"module": "m", "function": "f", "context_line": "x".repeat(121)}));
        assert_eq!(components(&long, "python").len(), 2);
        let minified = frame(json!({"abs_path": "https://a.io/a.js", "context_line": "a()"}));
        assert_eq!(
            components(&minified, "javascript"),
            [("module", "a".to_string())]
        );
    }

    #[test]
    fn equal_neighbours_are_recursion() {
        let a = frame(json!({"module": "m", "function": "f", "lineno": 3}));
        let b = frame(json!({"module": "m", "function": "f", "lineno": 4}));
        assert!(is_recursion(&a, Some(&a.clone())));
        assert!(!is_recursion(&a, Some(&b)));
        assert!(!is_recursion(&a, None));
    }
}
