//! The issue store across restarts, replays, regressions and retention.

use serde_json::json;

use super::*;
use crate::issues::grouping::group;
use crate::test_support::tempdir;

const T: i64 = 1_764_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

/// An event of project 1 whose message decides its issue.
fn ev(id: &str, message: &str, ts: i64) -> NewEvent {
    let event = json!({"message": message, "level": "error"});
    let map = event.as_object().cloned().unwrap();
    NewEvent {
        project: 1,
        event_id: format!("{id:0>32}"),
        timestamp_ns: ts,
        level: "error".into(),
        grouping: group(&map),
        user: None,
        release: None,
        environment: None,
        json: event.to_string(),
    }
}

fn with(mut e: NewEvent, user: &str, release: &str, env: &str) -> NewEvent {
    e.user = Some(user.into());
    e.release = Some(release.into());
    e.environment = Some(env.into());
    e
}

fn open(dir: &Path) -> IssueStore {
    IssueStore::open(dir, 3).unwrap()
}

#[test]
fn issues_keep_their_ids_and_counts_across_a_reopen() {
    let dir = tempdir();
    {
        let s = open(dir.path());
        let r = s
            .record(vec![
                ev("a1", "disk full", T),
                ev("a2", "disk full", T + SEC),
                ev("b1", "no route", T + 2 * SEC),
            ])
            .unwrap();
        assert_eq!(
            r.iter()
                .map(|r| (r.issue.id, r.created))
                .collect::<Vec<_>>(),
            [(1, true), (1, false), (2, true)]
        );
    }
    let s = open(dir.path());
    let disk = s.get(1).unwrap().unwrap();
    assert_eq!((disk.count, disk.title.as_str()), (2, "disk full"));
    assert_eq!((disk.first_seen_ns, disk.last_seen_ns), (T, T + SEC));
    assert_eq!(disk.latest_event_id, format!("{:0>32}", "a2"));
    // Ids continue after the reopen; they are never reused.
    let r = s.record(vec![ev("c1", "timeout", T)]).unwrap();
    assert_eq!(r[0].issue.id, 3);
    assert!(s.get(99).unwrap().is_none());
}

#[test]
fn a_replayed_event_id_is_not_counted_twice_even_after_a_restart() {
    let dir = tempdir();
    {
        let s = open(dir.path());
        let r = s
            .record(vec![ev("a1", "disk full", T), ev("a1", "disk full", T)])
            .unwrap();
        assert_eq!((r[0].duplicate, r[1].duplicate), (false, true));
        assert_eq!(r[1].issue.count, 1);
    }
    let s = open(dir.path());
    let r = s.record(vec![ev("a1", "disk full", T)]).unwrap();
    assert!(r[0].duplicate);
    assert_eq!(s.get(1).unwrap().unwrap().count, 1);
    // The same id in another project is another event.
    let mut other = ev("a1", "disk full", T);
    other.project = 2;
    let r = s.record(vec![other]).unwrap();
    assert!(!r[0].duplicate && r[0].created);
    assert_eq!(r[0].issue.project, 2);
}

#[test]
fn events_stay_unindexed_until_marked_so_a_crash_in_between_is_repaired() {
    let dir = tempdir();
    {
        let s = open(dir.path());
        let r = s.record(vec![ev("a1", "disk full", T)]).unwrap();
        assert!(r[0].needs_index);
        // Crash here: stored, never indexed.
    }
    let s = open(dir.path());
    let r = s.record(vec![ev("a1", "disk full", T)]).unwrap();
    assert!(r[0].duplicate && r[0].needs_index, "{r:?}");
    s.mark_indexed(&[(1, format!("{:0>32}", "a1"))]).unwrap();
    let r = s.record(vec![ev("a1", "disk full", T)]).unwrap();
    assert!(r[0].duplicate && !r[0].needs_index);
    assert_eq!(s.get(1).unwrap().unwrap().count, 1);
}

#[test]
fn a_resolved_issue_reopens_as_regressed_on_a_newer_event_only() {
    let dir = tempdir();
    let s = open(dir.path());
    s.record(vec![ev("a1", "disk full", T)]).unwrap();
    let resolved = s
        .set_status(1, Status::Resolved, T + 10 * SEC)
        .unwrap()
        .unwrap();
    assert_eq!(resolved.status, Status::Resolved);
    // A late event from before the fix does not reopen it.
    let r = s.record(vec![ev("a2", "disk full", T + 5 * SEC)]).unwrap();
    assert!(!r[0].regressed);
    assert_eq!(r[0].issue.status, Status::Resolved);
    let r = s.record(vec![ev("a3", "disk full", T + 20 * SEC)]).unwrap();
    assert!(r[0].regressed);
    assert_eq!(
        (r[0].issue.status, r[0].issue.regressed),
        (Status::Unresolved, true)
    );
    // Survives a reopen of the store.
    drop(s);
    let s = open(dir.path());
    let issue = s.get(1).unwrap().unwrap();
    assert_eq!(
        (issue.status, issue.regressed, issue.count),
        (Status::Unresolved, true, 3)
    );
    // Reopening by hand clears the flag; ignored issues stay ignored.
    let reopened = s.set_status(1, Status::Unresolved, T).unwrap().unwrap();
    assert!(!reopened.regressed);
    s.set_status(1, Status::Ignored, T).unwrap();
    let r = s.record(vec![ev("a4", "disk full", T + 30 * SEC)]).unwrap();
    assert_eq!(
        (r[0].issue.status, r[0].regressed),
        (Status::Ignored, false)
    );
    assert!(s.set_status(7, Status::Resolved, T).unwrap().is_none());
}

#[test]
fn users_are_counted_once_and_release_sets_are_bounded() {
    let dir = tempdir();
    let s = open(dir.path());
    s.record(vec![
        with(ev("a1", "m", T), "u1", "1.0", "production"),
        with(ev("a2", "m", T), "u2", "1.0", "staging"),
        with(ev("a3", "m", T), "u1", "1.1", "production"),
    ])
    .unwrap();
    drop(s);
    let s = open(dir.path());
    s.record(vec![with(ev("a4", "m", T), "u2", "1.1", "production")])
        .unwrap();
    let issue = s.get(1).unwrap().unwrap();
    assert_eq!((issue.count, issue.users), (4, 2));
    assert_eq!(issue.releases, ["1.0", "1.1"]);
    assert_eq!(issue.environments, ["production", "staging"]);
    let many: Vec<NewEvent> = (0..MAX_SET_VALUES + 20)
        .map(|i| with(ev(&format!("r{i}"), "m", T), "u", &format!("v{i}"), "e"))
        .collect();
    s.record(many).unwrap();
    assert_eq!(s.get(1).unwrap().unwrap().releases.len(), MAX_SET_VALUES);
}

#[test]
fn events_are_kept_per_issue_up_to_the_bound_newest_first_in_pages() {
    let dir = tempdir();
    let s = open(dir.path());
    let events: Vec<NewEvent> = (0..5)
        .map(|i| ev(&format!("e{i}"), "m", T + i * SEC))
        .collect();
    s.record(events).unwrap();
    let issue = s.get(1).unwrap().unwrap();
    assert_eq!((issue.count, issue.stored_events), (5, 3));
    let page = s.events(1, 2, None).unwrap();
    let ids = |p: &EventPage| {
        p.events
            .iter()
            .map(|e| e.event_id.trim_start_matches('0').to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&page), ["e4", "e3"]);
    let next = s.events(1, 2, page.next.clone()).unwrap();
    assert_eq!(ids(&next), ["e2"]);
    assert_eq!(next.next, None);
    assert_eq!(
        s.latest_event(1).unwrap().unwrap().event["message"],
        json!("m")
    );
    assert!(s.events(42, 10, None).unwrap().events.is_empty());
}

#[test]
fn lists_filter_sort_and_page() {
    let dir = tempdir();
    let s = open(dir.path());
    let mut batch = vec![
        ev("a1", "disk full on /var", T),
        ev("b1", "payment declined", T + SEC),
        ev("b2", "payment declined", T + 2 * SEC),
        ev("b3", "payment declined", T + 3 * SEC),
        ev("c1", "cache miss storm", T + 5 * SEC),
    ];
    let mut other_project = ev("d1", "disk full on /var", T + 9 * SEC);
    other_project.project = 2;
    batch.push(other_project);
    s.record(batch).unwrap();
    s.set_status(3, Status::Resolved, T).unwrap();
    let titles = |q: ListQuery| {
        s.list(&ListQuery { limit: 10, ..q })
            .unwrap()
            .issues
            .into_iter()
            .map(|i| i.title)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        titles(ListQuery {
            project: Some(1),
            status: Some(Status::Unresolved),
            ..ListQuery::default()
        }),
        ["payment declined", "disk full on /var"]
    );
    assert_eq!(
        titles(ListQuery {
            sort: Sort::Count,
            ..ListQuery::default()
        })[0],
        "payment declined"
    );
    assert_eq!(
        titles(ListQuery {
            text: Some("DISK".into()),
            ..ListQuery::default()
        })
        .len(),
        2
    );
    assert_eq!(
        titles(ListQuery {
            status: Some(Status::Resolved),
            ..ListQuery::default()
        }),
        ["cache miss storm"]
    );
    // Pages of one: every issue exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list(&ListQuery {
                limit: 1,
                cursor,
                ..ListQuery::default()
            })
            .unwrap();
        seen.extend(page.issues.iter().map(|i| i.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [4, 3, 2, 1]);
}

#[test]
fn retention_forgets_old_events_ids_and_issues() {
    let dir = tempdir();
    let s = open(dir.path());
    s.record(vec![
        ev("a1", "old only", T),
        ev("b1", "old and new", T),
        ev("b2", "old and new", T + 100 * SEC),
    ])
    .unwrap();
    assert_eq!(s.prune(T + 50 * SEC).unwrap(), 2);
    assert!(
        s.get(1).unwrap().is_none(),
        "an issue with only old events goes"
    );
    let kept = s.get(2).unwrap().unwrap();
    assert_eq!((kept.count, kept.stored_events), (2, 1));
    assert_eq!(s.seen_count().unwrap(), 1);
    // The old issue's hash is free again: the same message is a new issue.
    let r = s.record(vec![ev("a9", "old only", T + 200 * SEC)]).unwrap();
    assert!(r[0].created && r[0].issue.id == 3);
}
