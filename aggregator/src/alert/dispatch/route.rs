//! The routing tree, built from `aggregator.alerting.route` with inherited
//! settings resolved, and the matching of an alert's labels against it
//! (Alertmanager's: the first matching child wins unless it has `continue`;
//! an alert no child matches stays on the parent).
//!
//! This module must not hold alerts or time: it only answers "which routes,
//! and which group within each".

use std::sync::Arc;
use std::time::Duration;

use mecha_config::{
    DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, GroupBy, Matcher,
    RouteConfig, matches_all,
};

use crate::Error;
use crate::alert::model::Labels;

/// One route with every setting resolved.
#[derive(Debug)]
pub struct Route {
    /// Identity in group keys: the matchers on the path from the root,
    /// `{}/{severity="critical"}` (plus `/<index>` where siblings share
    /// matchers).
    pub key: String,
    /// Where its notifications go.
    pub receiver: String,
    /// How its alerts are split into groups.
    pub group_by: GroupBy,
    /// Wait before a new group's first notification.
    pub group_wait: Duration,
    /// Time between flushes of a group.
    pub group_interval: Duration,
    /// An unchanged group is notified again after this.
    pub repeat_interval: Duration,
    /// What an alert must match to take this route.
    pub matchers: Vec<Matcher>,
    /// Whether matching goes on with the following siblings.
    pub continue_matching: bool,
    /// Children, in order.
    pub routes: Vec<Arc<Route>>,
}

impl Route {
    /// Builds the tree from the root route of the config.
    pub fn build(config: &RouteConfig) -> Result<Arc<Route>, Error> {
        let defaults = Route {
            key: String::new(),
            receiver: String::new(),
            group_by: GroupBy::default(),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            matchers: Vec::new(),
            continue_matching: false,
            routes: Vec::new(),
        };
        Self::child(config, &defaults, "{}".to_string())
    }

    fn child(config: &RouteConfig, parent: &Route, key: String) -> Result<Arc<Route>, Error> {
        let matchers = config.all_matchers().map_err(|reason| Error::Invalid {
            what: "route matchers",
            reason,
        })?;
        let mut route = Route {
            key,
            receiver: config
                .receiver
                .clone()
                .unwrap_or_else(|| parent.receiver.clone()),
            group_by: config.group_by().unwrap_or_else(|| parent.group_by.clone()),
            group_wait: config.group_wait.map_or(parent.group_wait, |d| d.0),
            group_interval: config.group_interval.map_or(parent.group_interval, |d| d.0),
            repeat_interval: config
                .repeat_interval
                .map_or(parent.repeat_interval, |d| d.0),
            matchers,
            continue_matching: config.continue_matching,
            routes: Vec::new(),
        };
        let mut keys: Vec<String> = Vec::new();
        for (i, c) in config.routes.iter().enumerate() {
            let shown: Vec<String> = c
                .all_matchers()
                .map_err(|reason| Error::Invalid {
                    what: "route matchers",
                    reason,
                })?
                .iter()
                .map(ToString::to_string)
                .collect();
            let mut key = format!("{}/{{{}}}", route.key, shown.join(","));
            // Siblings with the same matchers still need distinct groups.
            if keys.contains(&key) {
                key = format!("{key}/{i}");
            }
            keys.push(key.clone());
            let child = Self::child(c, &route, key)?;
            route.routes.push(child);
        }
        Ok(Arc::new(route))
    }

    /// The routes an alert with `labels` takes (empty if this route's own
    /// matchers fail).
    pub fn matching(self: &Arc<Route>, labels: &Labels) -> Vec<Arc<Route>> {
        if !matches_all(&self.matchers, labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let found = child.matching(labels);
            let matched = !found.is_empty();
            all.extend(found);
            if matched && !child.continue_matching {
                break;
            }
        }
        if all.is_empty() {
            all.push(Arc::clone(self));
        }
        all
    }

    /// The labels that identify an alert's group on this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        }
    }

    /// The group key: route key and group labels,
    /// `{}/{team="shop"}:{alertname="X"}`.
    pub fn group_key(&self, group_labels: &Labels) -> String {
        let shown: Vec<String> = group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}:{{{}}}", self.key, shown.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(v: serde_json::Value) -> Arc<Route> {
        let cfg: RouteConfig = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        Route::build(&cfg).unwrap_or_else(|e| panic!("{e}"))
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn receivers(root: &Arc<Route>, l: &[(&str, &str)]) -> Vec<String> {
        root.matching(&labels(l))
            .iter()
            .map(|r| r.receiver.clone())
            .collect()
    }

    #[test]
    fn the_first_matching_child_wins_unless_continue() {
        let root = tree(serde_json::json!({
            "receiver": "default",
            "routes": [
                {"matchers": ["severity=\"critical\""], "receiver": "pager", "continue": true},
                {"matchers": ["team=\"shop\""], "receiver": "shop"},
                {"matchers": ["team=~\"shop|bank\""], "receiver": "money"},
                {"match": {"team": "ops"}, "receiver": "ops",
                 "routes": [{"match_re": {"service": "db.*"}, "receiver": "dba"}]},
            ]
        }));
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (&[("team", "shop")], &["shop"]),
            (
                &[("team", "shop"), ("severity", "critical")],
                &["pager", "shop"],
            ),
            (&[("team", "bank")], &["money"]),
            (&[("team", "ops"), ("service", "db-main")], &["dba"]),
            // No grandchild matches: the child itself.
            (&[("team", "ops"), ("service", "web")], &["ops"]),
            (&[("team", "none")], &["default"]),
            (&[("severity", "critical")], &["pager"]),
        ];
        for (l, want) in cases {
            assert_eq!(receivers(&root, l), *want, "{l:?}");
        }
    }

    #[test]
    fn children_inherit_unset_settings() {
        let root = tree(serde_json::json!({
            "receiver": "default",
            "group_by": ["alertname"],
            "group_wait": "10s",
            "routes": [
                {"matchers": ["a=\"1\""], "group_interval": "1m",
                 "routes": [{"matchers": ["b=\"2\""], "receiver": "deep", "group_by": ["..."]}]},
            ]
        }));
        let child = &root.routes[0];
        assert_eq!(child.receiver, "default");
        assert_eq!(child.group_by, GroupBy::Labels(vec!["alertname".into()]));
        assert_eq!(child.group_wait, Duration::from_secs(10));
        assert_eq!(child.group_interval, Duration::from_secs(60));
        assert_eq!(child.repeat_interval, DEFAULT_REPEAT_INTERVAL);
        let deep = &child.routes[0];
        assert_eq!(deep.receiver, "deep");
        assert_eq!(deep.group_by, GroupBy::All);
        assert_eq!(deep.group_wait, Duration::from_secs(10));
        assert_eq!(deep.group_interval, Duration::from_secs(60));
        assert_eq!(deep.key, "{}/{a=\"1\"}/{b=\"2\"}");
        assert_eq!(root.group_wait, Duration::from_secs(10));
        assert_eq!(root.group_interval, DEFAULT_GROUP_INTERVAL);
    }

    #[test]
    fn group_keys_use_group_by_labels_or_all_of_them() {
        let root = tree(serde_json::json!({
            "receiver": "r", "group_by": ["alertname", "missing"],
            "routes": [{"matchers": ["x=\"1\""], "group_by": ["..."]},
                       {"matchers": ["x=\"1\""]}]
        }));
        let l = labels(&[("alertname", "Down"), ("pod", "a"), ("x", "2")]);
        let g = root.group_labels(&l);
        assert_eq!(root.group_key(&g), "{}:{alertname=\"Down\"}");
        let all = &root.routes[0];
        let l1 = labels(&[("alertname", "Down"), ("x", "1")]);
        assert_eq!(
            all.group_key(&all.group_labels(&l1)),
            "{}/{x=\"1\"}:{alertname=\"Down\",x=\"1\"}"
        );
        // Siblings with equal matchers get distinct keys.
        assert_eq!(root.routes[1].key, "{}/{x=\"1\"}/1");
    }
}
