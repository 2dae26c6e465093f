//! Grouping rules, one test each, and snapshots of the components of events
//! shaped like those `sentry-sdk` (Python), `@sentry/node` and
//! `@sentry/browser` send.

use serde_json::{Map, Value, json};

use super::*;

fn event(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// What a reviewer reads: method, title, culprit and the components.
fn render(g: &Grouping) -> String {
    let mut out = format!(
        "method: {}\ntitle: {}\nculprit: {}\ncomponents:\n",
        g.method.as_str(),
        g.title,
        g.culprit
    );
    for c in &g.components {
        out.push_str("  ");
        out.push_str(c);
        out.push('\n');
    }
    out
}

/// A `KeyError` as `sentry-sdk` 2.x reports `lookup({}, key)` in `main`.
pub(crate) fn python_key_error(key: &str, user: &str) -> Map<String, Value> {
    event(json!({
        "event_id": "9f1c2a7e3b8d4c5fa6e7d8c9b0a1f2e3",
        "level": "error",
        "platform": "python",
        "timestamp": 1_764_000_000.25,
        "server_name": "web-1",
        "release": "shop@1.4.2",
        "environment": "production",
        "sdk": {"name": "sentry.python", "version": "2.19.2"},
        "user": {"id": user},
        "exception": {"values": [{
            "type": "KeyError",
            "value": format!("'{key}'"),
            "module": null,
            "mechanism": {"type": "generic", "handled": true},
            "stacktrace": {"frames": [
                {
                    "filename": "python_app.py",
                    "abs_path": "/srv/app/python_app.py",
                    "function": "main",
                    "module": "__main__",
                    "lineno": 44,
                    "pre_context": ["    for user, key in [(\"u1\", \"apple\")]:", "        sentry_sdk.set_user({\"id\": user})", "        try:"],
                    "context_line": "            lookup({}, key)",
                    "post_context": ["        except KeyError:"],
                    "in_app": true,
                    "vars": {"key": format!("'{key}'"), "user": format!("'{user}'")}
                },
                {
                    "filename": "python_app.py",
                    "abs_path": "/srv/app/python_app.py",
                    "function": "lookup",
                    "module": "__main__",
                    "lineno": 16,
                    "context_line": "    return table[key]",
                    "in_app": true,
                    "vars": {"key": format!("'{key}'"), "table": "{}"}
                }
            ]}
        }]},
        "breadcrumbs": {"values": []},
        "extra": {"sys.argv": ["python_app.py"]},
        "contexts": {"runtime": {"name": "CPython", "version": "3.13.1"}}
    }))
}

/// A `json.JSONDecodeError` raised in the standard library under an in-app
/// `parse_config`, re-raised as a `RuntimeError` (a chain of two).
fn python_chained(text_col: u64) -> Map<String, Value> {
    event(json!({
        "platform": "python",
        "level": "error",
        "exception": {"values": [
            {
                "type": "JSONDecodeError",
                "module": "json.decoder",
                "value": format!("Expecting value: line 1 column {text_col} (char {})", text_col - 1),
                "mechanism": {"type": "chained", "handled": true, "exception_id": 1, "source": "__context__"},
                "stacktrace": {"frames": [
                    {"module": "__main__", "filename": "python_app.py", "function": "parse_config",
                     "lineno": 24, "context_line": "    return json.loads(text)", "in_app": true},
                    {"module": "json", "filename": "json/__init__.py", "function": "loads",
                     "abs_path": "/usr/lib/python3.13/json/__init__.py", "lineno": 346,
                     "context_line": "        return _default_decoder.decode(s)", "in_app": false},
                    {"module": "json.decoder", "filename": "json/decoder.py", "function": "raw_decode",
                     "abs_path": "/usr/lib/python3.13/json/decoder.py", "lineno": 363,
                     "context_line": "            raise JSONDecodeError(\"Expecting value\", s, err.value) from None",
                     "in_app": false}
                ]}
            },
            {
                "type": "RuntimeError",
                "value": "config unreadable",
                "mechanism": {"type": "generic", "handled": true, "exception_id": 0},
                "stacktrace": {"frames": [
                    {"module": "__main__", "filename": "python_app.py", "function": "load",
                     "lineno": 30, "context_line": "        raise RuntimeError(\"config unreadable\")",
                     "in_app": true}
                ]}
            }
        ]}
    }))
}

/// A `TypeError` as `@sentry/node` 8.x reports `readCart(undefined)`.
pub(crate) fn node_type_error(value: &str) -> Map<String, Value> {
    event(json!({
        "platform": "node",
        "level": "error",
        "release": "checkout@2.0.0",
        "environment": "staging",
        "sdk": {"name": "sentry.javascript.node", "version": "8.47.0"},
        "exception": {"values": [{
            "type": "TypeError",
            "value": value,
            "mechanism": {"type": "generic", "handled": true},
            "stacktrace": {"frames": [
                {"filename": "node:internal/modules/run_main", "module": "run_main",
                 "function": "asyncRunEntryPointWithESMLoader", "lineno": 117, "colno": 11, "in_app": false},
                {"filename": "node:internal/modules/esm/module_job", "module": "module_job",
                 "function": "ModuleJob.run", "lineno": 271, "colno": 25, "in_app": false},
                {"filename": "/srv/app/node_app.mjs", "module": "node_app", "function": "?",
                 "lineno": 39, "colno": 5, "in_app": true,
                 "pre_context": ["for (const cart of [undefined, null]) {", "  try {"],
                 "context_line": "    readCart(cart);",
                 "post_context": ["  } catch (e) {"]},
                {"filename": "/srv/app/node_app.mjs", "module": "node_app", "function": "readCart",
                 "lineno": 29, "colno": 15, "in_app": true,
                 "context_line": "  return cart.items.length;"}
            ]}
        }]}
    }))
}

/// An uncaught `TypeError` as `@sentry/browser` 8.x reports it from a
/// minified, content-hashed bundle (`build` names the deploy's hashes).
pub(crate) fn browser_type_error(build: &str, colno: u64) -> Map<String, Value> {
    event(json!({
        "platform": "javascript",
        "level": "error",
        "sdk": {"name": "sentry.javascript.browser", "version": "8.47.0"},
        "request": {
            "url": "https://shop.example.com/cart",
            "headers": {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0"}
        },
        "exception": {"values": [{
            "type": "TypeError",
            "value": "Cannot read properties of null (reading 'price')",
            "mechanism": {"type": "onerror", "handled": false},
            "stacktrace": {"frames": [
                {"filename": format!("https://shop.example.com/static/js/vendor.{build}.js"),
                 "function": "HTMLButtonElement.r", "lineno": 2, "colno": 8812, "in_app": true},
                {"filename": "[native code]", "function": "Array.forEach", "in_app": true},
                {"filename": format!("https://shop.example.com/static/js/main.{build}.js"),
                 "function": "?", "lineno": 1, "colno": colno, "in_app": true},
                {"filename": format!("https://shop.example.com/static/js/main.{build}.js"),
                 "function": "Object.addToCart", "lineno": 1, "colno": colno + 120, "in_app": true}
            ]}
        }]}
    }))
}

/// `captureMessage` as `sentry-sdk` sends it: a plain `message`.
fn python_message(text: &str) -> Map<String, Value> {
    event(json!({"platform": "python", "level": "info", "message": text}))
}

#[test]
fn python_exceptions_with_other_values_and_users_share_a_group() {
    let a = group(&python_key_error("apple", "u1"));
    let b = group(&python_key_error("pear", "u2"));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.hash.len(), 32);
    assert!(a.hash.bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a.title, "KeyError: 'apple'");
    insta::assert_snapshot!("python_key_error", render(&a));
}

#[test]
fn a_chain_contributes_every_exception_and_only_in_app_frames() {
    let a = group(&python_chained(2));
    let b = group(&python_chained(4));
    assert_eq!(a.hash, b.hash, "values differ, stacks do not");
    assert_eq!(a.title, "RuntimeError: config unreadable");
    assert!(!a.components.iter().any(|c| c.contains("raw_decode")));
    insta::assert_snapshot!("python_chained", render(&a));
}

#[test]
fn node_errors_of_one_site_share_a_group_whatever_the_message() {
    let a = group(&node_type_error(
        "Cannot read properties of undefined (reading 'items')",
    ));
    let b = group(&node_type_error(
        "Cannot read properties of null (reading 'items')",
    ));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.culprit, "readCart(node_app)");
    insta::assert_snapshot!("node_type_error", render(&a));
}

#[test]
fn browser_errors_survive_a_redeploy_with_new_bundle_hashes() {
    let a = group(&browser_type_error("3f2a1b9c", 4_123));
    let b = group(&browser_type_error("77e0d4aa", 9_876));
    assert_eq!(a.hash, b.hash);
    assert!(
        !a.components.iter().any(|c| c.contains("forEach")),
        "native frames ignored"
    );
    insta::assert_snapshot!("browser_type_error", render(&a));
}

#[test]
fn another_type_or_another_function_is_another_group() {
    let base = group(&python_key_error("apple", "u1"));
    let mut other_type = python_key_error("apple", "u1");
    other_type["exception"]["values"][0]["type"] = json!("IndexError");
    assert_ne!(group(&other_type).hash, base.hash);
    let mut other_function = python_key_error("apple", "u1");
    other_function["exception"]["values"][0]["stacktrace"]["frames"][1]["function"] =
        json!("fetch");
    assert_ne!(group(&other_function).hash, base.hash);
}

#[test]
fn without_in_app_frames_every_frame_counts() {
    let mut e = python_key_error("apple", "u1");
    let frames = e["exception"]["values"][0]["stacktrace"]["frames"]
        .as_array_mut()
        .unwrap();
    for f in frames.iter_mut() {
        f["in_app"] = json!(false);
    }
    let g = group(&e);
    assert_eq!(
        g.components
            .iter()
            .filter(|c| c.ends_with(".function: main") || c.ends_with(".function: lookup"))
            .count(),
        2,
        "{:?}",
        g.components
    );
    // A non-app frame added under in-app ones changes nothing.
    let mut with_library = python_key_error("apple", "u1");
    let lib = json!({"module": "requests.api", "function": "get", "in_app": false});
    with_library["exception"]["values"][0]["stacktrace"]["frames"]
        .as_array_mut()
        .unwrap()
        .push(lib);
    assert_eq!(
        group(&with_library).hash,
        group(&python_key_error("x", "y")).hash
    );
}

#[test]
fn recursion_frames_collapse() {
    let frame = json!({"module": "tree", "function": "walk", "lineno": 7, "in_app": true});
    let deep = |n: usize| {
        let frames: Vec<Value> = std::iter::repeat_n(frame.clone(), n).collect();
        event(json!({"platform": "python", "exception": {"values": [
            {"type": "RecursionError", "stacktrace": {"frames": frames}}
        ]}}))
    };
    let (a, b) = (group(&deep(3)), group(&deep(997)));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.components.len(), 3, "{:?}", a.components);
}

#[test]
fn the_value_counts_only_without_a_stack_and_loses_its_parameters() {
    let bare = |v: &str| {
        event(json!({"platform": "go", "exception": {"values": [
            {"type": "*errors.errorString", "value": v}
        ]}}))
    };
    let a = group(&bare("dial tcp 10.0.0.7:5432: connect: connection refused"));
    let b = group(&bare("dial tcp 10.0.0.9:5432: connect: connection refused"));
    assert_eq!(a.hash, b.hash);
    assert_eq!(
        a.components,
        [
            "exception[0].type: *errors.errorString",
            "exception[0].value: dial tcp <ip>:<int>: connect: connection refused"
        ]
    );
    assert_ne!(a.hash, group(&bare("permission denied")).hash);
    // With a stack, the value is ignored.
    assert!(
        !group(&python_key_error("k", "u"))
            .components
            .iter()
            .any(|c| c.contains(".value"))
    );
}

#[test]
fn synthetic_exceptions_group_by_stack_not_type() {
    let mut a = python_key_error("k", "u");
    a["exception"]["values"][0]["mechanism"] = json!({"type": "signalhandler", "synthetic": true});
    let mut b = a.clone();
    b["exception"]["values"][0]["type"] = json!("SIGSEGV");
    let (ga, gb) = (group(&a), group(&b));
    assert_eq!(ga.hash, gb.hash);
    assert!(!ga.components.iter().any(|c| c.contains(".type")));
}

#[test]
fn messages_group_by_template_else_by_parameterized_text() {
    let a = group(&python_message(
        "charge 3 failed for order 2c7d3e60-3a4b-4c8e-9f6a-0b1c2d3e4f50",
    ));
    let b = group(&python_message(
        "charge 240 failed for order 0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
    ));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.method, GroupingMethod::Message);
    assert_eq!(
        a.components,
        ["message: charge <int> failed for order <uuid>"]
    );
    assert_eq!(
        a.title,
        "charge 3 failed for order 2c7d3e60-3a4b-4c8e-9f6a-0b1c2d3e4f50"
    );
    let logentry = |user: &str| {
        event(json!({"logentry": {
            "message": "user %s not found",
            "params": [user],
            "formatted": format!("user {user} not found")
        }}))
    };
    let (x, y) = (group(&logentry("ann")), group(&logentry("bob")));
    assert_eq!(x.hash, y.hash);
    assert_eq!(x.components, ["message: user %s not found"]);
    assert_eq!(x.title, "user ann not found");
    assert_ne!(x.hash, group(&python_message("user ann not found")).hash);
}

#[test]
fn a_custom_fingerprint_replaces_the_default() {
    let mut a = python_key_error("k", "u");
    a.insert("fingerprint".into(), json!(["payment-gateway"]));
    let mut b = event(json!({"platform": "python", "exception": {"values": [
        {"type": "TimeoutError", "value": "gateway slow"}
    ]}, "fingerprint": ["payment-gateway"]}));
    let (ga, gb) = (group(&a), group(&b));
    assert_eq!(ga.hash, gb.hash);
    assert_eq!(ga.method, GroupingMethod::Fingerprint);
    assert_eq!(ga.components, ["fingerprint: payment-gateway"]);
    // Titles stay the event's own.
    assert_eq!(gb.title, "TimeoutError: gateway slow");
    b.insert("fingerprint".into(), json!(["{{ default }}"]));
    assert_eq!(group(&b).method, GroupingMethod::Exception);
}

#[test]
fn default_in_a_fingerprint_expands_to_the_default_components() {
    let tenant = |t: &str| {
        let mut e = python_key_error("k", "u");
        e.insert("fingerprint".into(), json!(["{{ default }}", t]));
        group(&e)
    };
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    assert_ne!(a.hash, b.hash);
    let default = group(&python_key_error("k", "u"));
    assert_ne!(a.hash, default.hash);
    assert_eq!(a.components[..default.components.len()], default.components);
    assert_eq!(a.components.last().unwrap(), "fingerprint: tenant-a");
    insta::assert_snapshot!("fingerprint_with_default", render(&a));
}

#[test]
fn fingerprint_variables_take_the_event_values() {
    let mut e = node_type_error("x");
    e.insert("transaction".into(), json!("GET /cart"));
    e.insert("tags".into(), json!([["tenant", "acme"], ["region", "eu"]]));
    e.insert(
        "fingerprint".into(),
        json!([
            "{{ transaction }}",
            "{{ type }}",
            "{{function}}",
            "{{ tags.tenant }}",
            "{{ tags.missing }}",
            "{{ level }}",
            "{{ nonsense }}"
        ]),
    );
    assert_eq!(
        group(&e).components,
        [
            "fingerprint: GET /cart",
            "fingerprint: TypeError",
            "fingerprint: readCart",
            "fingerprint: acme",
            "fingerprint: <no-value-for-tag-missing>",
            "fingerprint: error",
            "fingerprint: {{ nonsense }}"
        ]
    );
}

#[test]
fn a_lone_thread_stack_groups_a_message_event() {
    let e = |text: &str| {
        event(
            json!({"platform": "python", "message": text, "threads": {"values": [
                {"id": 1, "stacktrace": {"frames": [
                    {"module": "__main__", "function": "report", "in_app": true}
                ]}}
            ]}}),
        )
    };
    let (a, b) = (group(&e("first")), group(&e("second")));
    assert_eq!(a.method, GroupingMethod::Stacktrace);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.title, "first");
}

#[test]
fn nothing_usable_falls_back_to_one_group() {
    let (a, b) = (
        group(&event(json!({}))),
        group(&event(json!({"level": "error", "tags": {"a": "b"}}))),
    );
    assert_eq!(a.method, GroupingMethod::Fallback);
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.title, "<unlabeled event>");
}

#[test]
fn culprit_prefers_the_events_own_then_transaction_then_frames_then_url() {
    let mut e = python_key_error("k", "u");
    assert_eq!(group(&e).culprit, "__main__ in lookup");
    e.insert("transaction".into(), json!("/checkout"));
    assert_eq!(group(&e).culprit, "/checkout");
    e.insert("culprit".into(), json!("payments.charge"));
    assert_eq!(group(&e).culprit, "payments.charge");
    let browser = browser_type_error("3f2a1b9c", 10);
    assert_eq!(group(&browser).culprit, "Object.addToCart(main)");
    let bare = event(json!({"message": "m", "request": {"url": "https://a.io/x"}}));
    assert_eq!(group(&bare).culprit, "https://a.io/x");
}

#[test]
fn long_titles_are_cut_and_multiline_values_show_their_first_line() {
    let e = event(json!({"exception": {"values": [
        {"type": "ValueError", "value": format!("{}\nsecond line", "x".repeat(300))}
    ]}}));
    let t = group(&e).title;
    assert!(
        t.starts_with("ValueError: xxx") && t.ends_with("..."),
        "{t}"
    );
    assert_eq!(t.chars().count(), "ValueError: ".len() + 100);
}

#[test]
fn tags_read_as_pairs_or_an_object() {
    let pairs = event(json!({"tags": [["env", "prod"], ["bad"], 3]}));
    assert_eq!(tag(&pairs, "env"), Some("prod"));
    assert_eq!(tag(&pairs, "bad"), None);
    let object = event(json!({"tags": {"env": "prod"}}));
    assert_eq!(tag(&object, "env"), Some("prod"));
}

proptest::proptest! {
    #[test]
    fn grouping_any_json_never_panics(text in "\\PC{0,400}") {
        if let Ok(Value::Object(e)) = serde_json::from_str::<Value>(&text) {
            let g = group(&e);
            proptest::prop_assert_eq!(g.hash.len(), 32);
        }
    }

    #[test]
    fn grouping_odd_shapes_never_panics(
        ty in proptest::option::of("\\PC{0,20}"),
        value in proptest::option::of("\\PC{0,80}"),
        frames in proptest::collection::vec(
            (proptest::option::of("\\PC{0,10}"), proptest::option::of("\\PC{0,30}"), proptest::option::of(proptest::bool::ANY)),
            0..6
        ),
        platform in "(python|node|javascript|java|php|ruby|other)",
    ) {
        let frames: Vec<Value> = frames
            .into_iter()
            .map(|(function, path, in_app)| json!({"function": function, "filename": path, "abs_path": path, "in_app": in_app, "context_line": path}))
            .collect();
        let e = event(json!({"platform": platform, "exception": {"values": [
            {"type": ty, "value": value, "stacktrace": {"frames": frames}}
        ]}}));
        let g = group(&e);
        proptest::prop_assert_eq!(g.hash.len(), 32);
    }
}
