//! The one configuration schema of mecha, for the agent, the aggregator and
//! standalone mode.
//!
//! A config is a YAML file with `${ENV}` interpolation. Loading it checks
//! everything that can be checked without starting anything (globs, regexes,
//! addresses, sizes, durations, unknown keys) and every mistake names the file,
//! line and key. This crate does not start components: it only describes them,
//! with the defaults documented on each field.

mod alerting;
mod error;
mod interpolate;
mod kubernetes;
mod receivers;
mod route;
mod rules;
mod schema;
mod sentry;
mod values;

pub use alerting::AlertingConfig;
pub use error::ConfigError;
pub use kubernetes::{DEFAULT_POD_LABELS, KubeEnabled, KubernetesConfig};
pub use receivers::{
    BasicAuthConfig, ChatConfig, ChatKind, MentionsConfig, ReceiverConfig, Secret, TemplateText,
    TlsConfig, WebhookConfig, is_mobile, read_secret,
};
pub use route::{
    DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, GroupBy,
    InhibitRuleConfig, MatchOp, Matcher, RouteConfig, matches_all, parse_matchers,
};
pub use rules::{
    DEFAULT_ISSUE_WINDOW, ErrorTrigger, OneOrMany, RatePer, RuleConfig, RuleKind, is_label_name,
    label_for_field,
};
pub use schema::*;
pub use sentry::{
    FiltersConfig, RateLimitConfig, ScrubConfig, SentryConfig, SentryLimits, SentryProject,
    parse_cidr,
};
pub use values::{ByteSize, Duration, GlobPattern, Listen, RegexPattern};

use std::path::Path;

/// Reads, interpolates and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&path.display().to_string(), &text, &|k| {
        std::env::var(k).ok()
    })
}

/// Parses config text; `file` names the source in errors and `env` looks up
/// variables for `${VAR}` interpolation.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let text = interpolate::interpolate(file, text, env)?;
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(&text);
    let config: Config = serde_path_to_error::deserialize(de)
        .map_err(|e| ConfigError::from_yaml(file, &text, &e))?;
    config.check(file, &text)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                if let Err(e) = load(&path) {
                    panic!("{e}");
                }
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "expected the example configs in {}",
            dir.display()
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = load(Path::new("/nonexistent/mecha.yaml"));
        assert!(
            matches!(&err, Err(ConfigError::Read { file, .. }) if file == "/nonexistent/mecha.yaml"),
            "{err:?}"
        );
    }
}
