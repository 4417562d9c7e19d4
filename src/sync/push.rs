//! Push: the follower subscribes to its upstream's event stream (`/api/v1/events?thin=1`) and
//! starts a round as soon as the upstream announces a block, a reorg or a resync. The round
//! fetches and validates the blocks exactly as a polled one does, and a reorg goes through the
//! usual fork resolution, so the stream only decides *when* to sync, never *what* is stored.
//! While subscribed the follower still polls every `synchronization.push_fallback_poll_seconds`
//! as a safety net; an upstream without the route is polled every `poll_interval_seconds`.

use super::follower::Rounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest a subscribed stream may stay silent (the upstream sends a keep-alive every 15 s by
/// default) before it is dropped and opened again.
const IDLE: Duration = Duration::from_secs(60);

/// Whether the follower is subscribed now; read by the loop to pick its poll interval.
#[derive(Clone, Debug, Default)]
pub struct Subscribed(Arc<AtomicBool>);

impl Subscribed {
    /// True while an upstream stream is open.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}

/// The subscription task's settings and handles.
pub struct Push {
    /// `{upstream}/api/v1/events?thin=1`, with the upstream URL's own query.
    pub url: String,
    /// The upstream API key, sent as `X-API-Key`.
    pub api_key: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Longest line accepted from the stream: one block plus slack.
    pub max_line_bytes: usize,
    /// Wait before subscribing again after a failure or without the route.
    pub retry: Duration,
    /// Where rounds are started.
    pub rounds: Arc<Rounds>,
    /// Set while subscribed.
    pub subscribed: Subscribed,
    /// Where the subscription is shown (`block_manager_sync_push_subscribed`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The event stream URL of an upstream URL (its path prefix and query kept).
pub fn events_url(upstream: &str) -> Option<String> {
    let mut url = reqwest::Url::parse(upstream.trim()).ok()?;
    let query = url.query().filter(|q| !q.is_empty()).map(str::to_owned);
    let path = format!("{}/api/v1/events", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(Some(&match query {
        Some(q) => format!("thin=1&{q}"),
        None => "thin=1".to_string(),
    }));
    url.set_fragment(None);
    Some(url.to_string())
}

impl Push {
    /// Subscribes until `shutdown`, again after each failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            // Never follow a redirect: the key must not reach another origin.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!(
                "block-manager/",
                env!("CARGO_PKG_VERSION"),
                " follower"
            ))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build the event stream client; polling only");
                return;
            }
        };
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => break,
                outcome = self.listen(&client) => outcome,
            };
            self.set_subscribed(false);
            if let Err(why) = outcome {
                tracing::debug!(reason = %why, "upstream event stream unavailable; polling");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.retry) => {}
            }
        }
        self.set_subscribed(false);
    }

    fn set_subscribed(&self, on: bool) {
        self.subscribed.set(on);
        self.metrics.sync_push_subscribed.set(i64::from(on));
    }

    /// One subscription: returns when the stream ends or fails.
    async fn listen(&self, client: &reqwest::Client) -> Result<(), String> {
        let mut req = client.get(&self.url).header("accept", "text/event-stream");
        if let Some(key) = &self.api_key {
            req = req.header("x-api-key", key);
        }
        let mut res = req.send().await.map_err(|e| e.to_string())?;
        let event_stream = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if !res.status().is_success() || !event_stream {
            return Err(format!(
                "upstream answered {} without a stream",
                res.status()
            ));
        }
        self.set_subscribed(true);
        // Whatever happened before the subscription is caught up by a round now.
        self.rounds.wake.notify_one();
        let mut line = Vec::new();
        let mut announced = false;
        loop {
            let chunk = tokio::time::timeout(IDLE, res.chunk())
                .await
                .map_err(|_| "the stream went silent".to_string())?
                .map_err(|e| e.to_string())?;
            let Some(chunk) = chunk else {
                return Ok(());
            };
            for &b in chunk.iter() {
                if b != b'\n' {
                    // An endless line is cut: the stream is dropped (SYNC_003) and polled.
                    if line.len() >= self.max_line_bytes {
                        return Err("SYNC_003: an event line is larger than a block".into());
                    }
                    line.push(b);
                    continue;
                }
                let text = line.strip_suffix(b"\r").unwrap_or(&line);
                if text.is_empty() {
                    if announced {
                        self.rounds.wake.notify_one();
                    }
                    announced = false;
                } else if let Some(kind) = text.strip_prefix(b"event:") {
                    let kind = kind.trim_ascii();
                    announced = matches!(kind, b"block" | b"reorg" | b"resync");
                }
                line.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_url_keeps_the_upstreams_prefix_and_query() {
        assert_eq!(
            events_url("http://up:8086").as_deref(),
            Some("http://up:8086/api/v1/events?thin=1")
        );
        assert_eq!(
            events_url("http://up:8086/bm/?k=v").as_deref(),
            Some("http://up:8086/bm/api/v1/events?thin=1&k=v")
        );
        assert_eq!(events_url("not a url"), None);
    }
}
