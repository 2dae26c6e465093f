//! Per-robot rate limits: a token bucket in front of each chat robot, and a
//! queue that merges waiting messages when the robot is backlogged.
//!
//! Chat robots refuse more than a few messages a minute (WeCom and DingTalk:
//! 20) and a refused message is a lost alert. So each robot gets one worker
//! that sends one message at a time, spending a token per message. A token
//! comes back one period after the response to the message that spent it:
//! the platform received that message before, so no window of one period on
//! its clock ever sees more than the bucket's size, even with network delay
//! (a classic refilling bucket of 20 would let 39 through in a minute). While
//! the worker waits for a token, messages pile up; when one comes back, every
//! waiting message that fits the platform's byte limit is merged into one, so
//! a storm of alerts becomes a few long messages and every alert is still
//! represented. The queue is bounded: when it is full, a submit fails as
//! retryable and the dispatcher tries again later.
//!
//! The bucket belongs to the robot, not to a config entry: every entry (of
//! one receiver or several) posting to the same robot submits to the same
//! [`Limiter`] with its own [`Channel`]. Messages are merged only with
//! messages of the same channel (one entry's encoding, mentions and
//! metrics), and sent in order of arrival.
//!
//! This module knows no platform: a [`Channel`] sends, sizes and merges.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Outgoing;

/// Waiting messages per robot before submits are refused: this many in the
/// queue, and as many again in its worker's hands.
pub const QUEUE_CAPACITY: usize = 1024;

/// Attempts of one message the platform refused for its rate limit.
pub const RATE_LIMITED_ATTEMPTS: u32 = 3;

/// How a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Network error, 5xx, timeout: worth retrying.
    Retryable(String),
    /// The platform refused the message for its rate limit: back off, then
    /// retry.
    RateLimited {
        /// What the platform said.
        reason: String,
        /// How long the platform asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// Bad key, bad signature, malformed message: retrying cannot help.
    Permanent(String),
    /// The TLS handshake failed, mostly a refused server certificate
    /// (unknown CA, wrong host name, expired): permanent like
    /// [`Failure::Permanent`] until the config or the server changes,
    /// counted apart so operators see it is not the platform refusing.
    Tls(String),
}

/// Where a [`Limiter`] delivers: one robot of one platform.
pub trait Channel: Send + Sync + 'static {
    /// Sends one message.
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), Failure>>;
    /// The bytes of `message` the platform holds against its limit.
    fn size(&self, message: &Outgoing) -> usize;
    /// The platform's limit on [`Channel::size`].
    fn limit(&self) -> usize;
    /// Appends `next` to `into` (one message showing both).
    fn merge(&self, into: &mut Outgoing, next: Outgoing);
    /// Told the number of waiting messages whenever it changes.
    fn backlog(&self, _waiting: usize) {}
}

/// A rate: at most `messages` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Messages per period.
    pub messages: usize,
    /// The period.
    pub period: Duration,
}

/// Where the answer for one submitted message goes.
type Waiter = oneshot::Sender<Result<(), Failure>>;

struct Item {
    channel: Arc<dyn Channel>,
    message: Outgoing,
    done: Waiter,
}

/// Whether `a` and `b` are the same channel (not merely equal ones).
fn same(a: &Arc<dyn Channel>, b: &Arc<dyn Channel>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The sending end of one robot's queue, shared by every channel posting
/// to that robot; cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    tx: mpsc::Sender<Item>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("free", &self.tx.capacity())
            .finish()
    }
}

impl Limiter {
    /// Starts the worker of one robot allowing `rate` on the current
    /// runtime.
    pub fn spawn(rate: Rate) -> Limiter {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(rx, rate));
        Limiter { tx }
    }

    /// Queues `message` to be sent through `channel`; the answer comes once
    /// it (merged with others of `channel` or not) was delivered or failed.
    pub fn submit(
        &self,
        channel: Arc<dyn Channel>,
        message: Outgoing,
    ) -> oneshot::Receiver<Result<(), Failure>> {
        let (done, answer) = oneshot::channel();
        let item = Item {
            channel,
            message,
            done,
        };
        if let Err(e) = self.tx.try_send(item) {
            let (reason, item) = match e {
                mpsc::error::TrySendError::Full(item) => ("rate-limit queue full", item),
                mpsc::error::TrySendError::Closed(item) => ("rate-limit queue stopped", item),
            };
            let _ = item.done.send(Err(Failure::Retryable(reason.into())));
        }
        answer
    }
}

async fn run(mut rx: mpsc::Receiver<Item>, rate: Rate) {
    let messages = rate.messages.max(1);
    let mut pending: VecDeque<Item> = VecDeque::new();
    // When each spent token comes back: at most `messages` of them.
    let mut spent: VecDeque<Instant> = VecDeque::with_capacity(messages);
    let mut backlog = Backlog::default();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(item) => pending.push_back(item),
                None => return,
            }
        }
        while spent.len() >= messages {
            if let Some(back) = spent.pop_front() {
                take_queued(&mut rx, &mut pending);
                backlog.report(&pending);
                tokio::time::sleep_until(back).await;
            }
        }
        take_queued(&mut rx, &mut pending);
        let Some((channel, message, waiters)) = take_batch(&mut pending) else {
            continue;
        };
        backlog.report(&pending);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = channel.send(message.clone()).await;
            spent.push_back(Instant::now() + rate.period);
            match result {
                Err(Failure::RateLimited {
                    reason,
                    retry_after,
                }) => {
                    if attempt >= RATE_LIMITED_ATTEMPTS {
                        break Err(Failure::RateLimited {
                            reason,
                            retry_after,
                        });
                    }
                    // Someone else also sends to this robot, or the
                    // platform counts differently: wait until it has
                    // surely forgotten our messages.
                    tracing::warn!(%reason, attempt, "chat robot rate limit hit, backing off");
                    tokio::time::sleep(retry_after.unwrap_or(rate.period)).await;
                    spent.clear();
                }
                other => break other,
            }
        };
        for done in waiters {
            let _ = done.send(result.clone());
        }
    }
}

/// Moves queued messages into the worker's hands, holding at most
/// [`QUEUE_CAPACITY`] there: past it they stay in the bounded queue, which
/// then refuses further submits, so a robot's backlog is bounded however
/// long its rate limit holds it back.
fn take_queued(rx: &mut mpsc::Receiver<Item>, pending: &mut VecDeque<Item>) {
    while pending.len() < QUEUE_CAPACITY {
        match rx.try_recv() {
            Ok(item) => pending.push_back(item),
            Err(_) => break,
        }
    }
}

/// Tells each channel that used the queue how many of its messages wait.
#[derive(Default)]
struct Backlog(Vec<Arc<dyn Channel>>);

impl Backlog {
    fn report(&mut self, pending: &VecDeque<Item>) {
        for item in pending {
            if !self.0.iter().any(|c| same(c, &item.channel)) {
                self.0.push(Arc::clone(&item.channel));
            }
        }
        for c in &self.0 {
            c.backlog(pending.iter().filter(|i| same(&i.channel, c)).count());
        }
    }
}

/// Takes the first waiting message merged with as many of the following
/// messages of its channel as fit the channel's limit, in order; messages
/// of other channels keep their place.
fn take_batch(pending: &mut VecDeque<Item>) -> Option<(Arc<dyn Channel>, Outgoing, Vec<Waiter>)> {
    let first = pending.pop_front()?;
    let channel = first.channel;
    let mut message = first.message;
    let mut waiters = vec![first.done];
    let limit = channel.limit();
    let mut i = 0;
    while let Some(next) = pending.get(i) {
        if !same(&next.channel, &channel) {
            i += 1;
            continue;
        }
        let mut merged = message.clone();
        channel.merge(&mut merged, next.message.clone());
        if channel.size(&merged) > limit {
            break;
        }
        message = merged;
        if let Some(next) = pending.remove(i) {
            waiters.push(next.done);
        }
    }
    Some((channel, message, waiters))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it sent and when; refuses what it is told to.
    struct Recorder {
        sent: Mutex<Vec<(Instant, String)>>,
        limit: usize,
        refuse_first: Mutex<u32>,
    }

    impl Channel for Recorder {
        fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<(), Failure>> {
            let mut refuse = self.refuse_first.lock().unwrap_or_else(|e| e.into_inner());
            if *refuse > 0 {
                *refuse -= 1;
                return Box::pin(async {
                    Err(Failure::RateLimited {
                        reason: "45009".into(),
                        retry_after: None,
                    })
                });
            }
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Instant::now(), message.text));
            Box::pin(async { Ok(()) })
        }
        fn size(&self, message: &Outgoing) -> usize {
            message.text.len()
        }
        fn limit(&self) -> usize {
            self.limit
        }
        fn merge(&self, into: &mut Outgoing, next: Outgoing) {
            into.text.push('\n');
            into.text.push_str(&next.text);
        }
    }

    fn recorder(limit: usize, refuse_first: u32) -> Arc<Recorder> {
        Arc::new(Recorder {
            sent: Mutex::new(Vec::new()),
            limit,
            refuse_first: Mutex::new(refuse_first),
        })
    }

    fn text(s: String) -> Outgoing {
        Outgoing {
            text: s,
            ..Outgoing::default()
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// Submits `alert-000` to `alert-099` over one minute to one robot of
    /// 20 a minute, taking turns among `channels`; every submit succeeds.
    async fn storm(channels: &[Arc<Recorder>]) {
        let limiter = Limiter::spawn(Rate {
            messages: 20,
            period: MINUTE,
        });
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let channel = Arc::clone(&channels[i as usize % channels.len()]);
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_millis(i * 600)).await;
                limiter.submit(channel, text(format!("alert-{i:03}"))).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.ok().and_then(|r| r.ok()), Some(Ok(())));
        }
    }

    /// No minute of `sent` (sorted by time) holds more than 20 messages,
    /// and together they show `alert-000` to `alert-099`.
    fn assert_20_a_minute_and_100_alerts(sent: &[(Instant, String)]) {
        for (i, (at, _)) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().filter(|(t, _)| *t < *at + MINUTE).count();
            assert!(
                in_window <= 20,
                "{in_window} messages in the minute from {i}"
            );
        }
        let all: String = sent.iter().map(|(_, t)| t.as_str()).collect();
        for i in 0..100 {
            assert!(all.contains(&format!("alert-{i:03}")), "alert-{i:03} lost");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_100_alerts_becomes_at_most_20_messages_a_minute_and_loses_none() {
        let rec = recorder(4096, 0);
        storm(std::slice::from_ref(&rec)).await;
        let sent = rec.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_20_a_minute_and_100_alerts(&sent);
        assert!(sent.len() < 100, "nothing merged: {}", sent.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_robot_held_back_for_minutes_keeps_a_bounded_backlog() {
        // One message a minute, none merged (each fills the limit): every
        // minute a burst larger than the queue arrives. Without the bound on
        // what the worker holds, each wake-up would take the whole queue in
        // and the backlog would grow by a queue's worth a minute.
        let rec = recorder(8, 0);
        let limiter = Limiter::spawn(Rate {
            messages: 1,
            period: MINUTE,
        });
        let mut accepted = Vec::new();
        let mut refused = 0;
        for minute in 0..4 {
            for i in 0..QUEUE_CAPACITY + QUEUE_CAPACITY / 2 {
                let mut answer = limiter.submit(rec.clone(), text(format!("{minute}-{i:05}")));
                match answer.try_recv() {
                    Ok(Err(Failure::Retryable(_))) => refused += 1,
                    _ => accepted.push(answer),
                }
            }
            tokio::time::sleep(MINUTE).await;
        }
        // Sent, in its hands and queued: never more than two queues' worth.
        let sent = rec.sent.lock().unwrap_or_else(|e| e.into_inner()).len();
        assert!(
            accepted.len() <= sent + 2 * QUEUE_CAPACITY,
            "{} accepted, {sent} sent",
            accepted.len()
        );
        assert!(refused > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn two_channels_of_one_robot_share_its_bucket_and_are_merged_apart() {
        let (a, b) = (recorder(4096, 0), recorder(4096, 0));
        storm(&[a.clone(), b.clone()]).await;
        let mut sent = a.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let of_b = b.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Each channel got only its own alerts.
        let only = |sent: &[(Instant, String)], digits: [char; 5]| {
            sent.iter()
                .all(|(_, t)| t.lines().all(|l| l.ends_with(digits)))
        };
        assert!(only(&sent, ['0', '2', '4', '6', '8']), "{sent:?}");
        assert!(only(&of_b, ['1', '3', '5', '7', '9']), "{of_b:?}");
        sent.extend(of_b);
        sent.sort();
        assert_20_a_minute_and_100_alerts(&sent);
    }

    #[tokio::test(start_paused = true)]
    async fn merged_messages_stay_within_the_byte_limit() {
        let rec = recorder(100, 0);
        let limiter = Limiter::spawn(Rate {
            messages: 1,
            period: MINUTE,
        });
        let answers: Vec<_> = (0..30)
            .map(|i| limiter.submit(rec.clone(), text(format!("{i:02}-告警告警告警"))))
            .collect();
        for a in answers {
            assert_eq!(a.await.ok(), Some(Ok(())));
        }
        let sent = rec.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(sent.iter().all(|(_, t)| t.len() <= 100), "{sent:?}");
        let lines: usize = sent.iter().map(|(_, t)| t.lines().count()).sum();
        assert_eq!(lines, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_message_is_retried_after_backing_off() {
        let rec = recorder(4096, 1);
        let limiter = Limiter::spawn(Rate {
            messages: 20,
            period: MINUTE,
        });
        let start = Instant::now();
        assert_eq!(
            limiter.submit(rec.clone(), text("x".into())).await.ok(),
            Some(Ok(()))
        );
        let sent = rec.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0 >= start + MINUTE, "retried before backing off");
    }

    #[tokio::test(start_paused = true)]
    async fn a_robot_that_keeps_refusing_fails_as_rate_limited() {
        let rec = recorder(4096, 10);
        let limiter = Limiter::spawn(Rate {
            messages: 20,
            period: MINUTE,
        });
        let answer = limiter.submit(rec.clone(), text("x".into())).await.ok();
        assert!(
            matches!(answer, Some(Err(Failure::RateLimited { .. }))),
            "{answer:?}"
        );
    }
}
