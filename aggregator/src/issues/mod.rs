//! Issues: Sentry events grouped by fingerprint ([`grouping`]), kept with
//! their counts, users, releases and status ([`store`]), on their way
//! through the writer ([`route`]), and announced as [`IssueEvent`]s.
//!
//! This module must not index logs or answer HTTP by itself.

pub mod grouping;
pub mod route;
pub mod store;

pub use store::{Issue, IssueStore, Status};

/// Capacity of the [`IssueEvent`] channel: a subscriber further behind than
/// this many announcements misses the oldest (`RecvError::Lagged`).
pub const HOOK_CAPACITY: usize = 4096;

/// What happened to an issue, announced once the event that caused it is
/// durable in both the issue store and the log search. Subscribe with
/// [`crate::Aggregator::subscribe_issues`]; replays of known events announce
/// nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum IssueEvent {
    /// A new issue, created by its first event (followed by its
    /// [`IssueEvent::Event`]).
    Created {
        /// The issue as of that event.
        issue: Issue,
        /// The event that created it.
        event_id: String,
    },
    /// A resolved issue received a newer event and is unresolved again,
    /// marked regressed.
    Regressed {
        /// The issue as of that event.
        issue: Issue,
        /// The event that reopened it.
        event_id: String,
    },
    /// An event was counted into an issue.
    Event {
        /// The issue as of that event.
        issue: Issue,
        /// The event.
        event_id: String,
    },
}
