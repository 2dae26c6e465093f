//! `${VAR}` and `${VAR:-default}` interpolation of config text, so that
//! credentials and node names come from the environment (the Kubernetes downward
//! API, mounted secrets) rather than from the file. `$$` is a literal `$`.

use crate::error::ConfigError;

pub(crate) fn interpolate(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // A comment line may mention ${VAR} in prose; leave it alone.
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    return Err(invalid(file, n + 1, "expected `}` closing `${`"));
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, d)) => (name, Some(d)),
                    None => (expr, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid(
                        file,
                        n + 1,
                        &format!("expected a variable name in `${{{expr}}}`"),
                    ));
                }
                match (env(name), default) {
                    (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
                    (_, Some(d)) => out.push_str(d),
                    (None, None) => {
                        return Err(invalid(
                            file,
                            n + 1,
                            &format!(
                                "environment variable {name} is not set (use ${{{name}:-default}} for a default)"
                            ),
                        ));
                    }
                    (Some(v), None) => out.push_str(&v),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

fn invalid(file: &str, line: usize, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        line,
        key: "${}".to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "NODE" => Some("node-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_escapes_are_expanded() {
        let out = interpolate(
            "c.yaml",
            "a: ${NODE}\nb: ${NOPE:-x}\nc: $$5\nd: ${EMPTY:-y}\n",
            &env,
        );
        assert_eq!(out, Ok("a: node-1\nb: x\nc: $5\nd: y\n".to_string()));
    }

    #[test]
    fn a_missing_variable_names_its_line() {
        let err = interpolate("c.yaml", "a: 1\nb: ${NOPE}\n", &env);
        assert!(
            matches!(err, Err(ConfigError::Invalid { line: 2, .. })),
            "{err:?}"
        );
        let err = interpolate("c.yaml", "b: ${NOPE\n", &env);
        assert!(matches!(err, Err(ConfigError::Invalid { line: 1, .. })));
    }

    #[test]
    fn comments_are_left_alone() {
        assert_eq!(
            interpolate("c.yaml", "# uses ${NOPE}\n", &env),
            Ok("# uses ${NOPE}\n".to_string())
        );
    }
}
