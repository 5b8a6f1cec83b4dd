//! Live updates: one poller follows the database's change counter (the worker may be another
//! process, so the database is the only common ground) and fans changes out to SSE clients.

use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::Stream;
use std::convert::Infallible;
use std::time::Duration;
use testarena_core::api;
use testarena_store::Store;
use tokio::sync::{broadcast, Notify};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

/// How often the poller looks at the change counter when nobody pokes it.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A change to send to dashboard clients.
#[derive(Debug, Clone)]
pub enum QueueEvent {
    /// Created or updated.
    Changed(Box<api::Queue>),
    /// Deleted.
    Deleted(i64),
}

/// Follows the change counter until the process ends; `poke` makes it look at once.
pub async fn poll_changes(
    store: Store,
    tx: broadcast::Sender<QueueEvent>,
    poke: std::sync::Arc<Notify>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) {
    let mut rev = store.current_rev().await.unwrap_or(0);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = poke.notified() => {}
        }
        let now = match store.current_rev().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the change counter");
                continue;
            }
        };
        if now == rev {
            rev = now;
            continue;
        }
        match store.changes_since(rev, crate::handlers::DETAIL_CAPS).await {
            Ok((changed, deleted)) => {
                let events = changed
                    .iter()
                    .map(|q| QueueEvent::Changed(Box::new(q.to_api())))
                    .chain(deleted.into_iter().map(QueueEvent::Deleted));
                for ev in events {
                    metrics.observe(&ev);
                    let _ = tx.send(ev);
                }
                // At most 500 queues come at a time: continue from the last one seen.
                rev = if changed.len() >= 500 {
                    changed.iter().map(|q| q.queue.rev).max().unwrap_or(now)
                } else {
                    now
                };
            }
            Err(e) => tracing::warn!(error = %e, "cannot read changes"),
        }
    }
}

/// `GET /api/v1/events`: `queue` events (the queue object) and `deleted` events (`{"id": N}`).
#[utoipa::path(get, path = "/api/v1/events", tag = "system",
    responses((status = 200, description = "SSE: `queue` events (the queue object) and `deleted` events ({\"id\": N})", content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.events.subscribe();
    let updates = futures::StreamExt::take_until(
        BroadcastStream::new(rx),
        s.shutdown.clone().cancelled_owned(),
    );
    let stream = updates.filter_map(|msg| {
        let ev = match msg {
            Ok(QueueEvent::Changed(q)) => Event::default().event("queue").json_data(&*q).ok(),
            Ok(QueueEvent::Deleted(id)) => Event::default()
                .event("deleted")
                .json_data(serde_json::json!({ "id": id }))
                .ok(),
            // A slow client missed some events: tell it to reload its list.
            Err(_) => Some(Event::default().event("resync").data("{}")),
        };
        ev.map(Ok)
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
