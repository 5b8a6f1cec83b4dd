//! `GET /api/v1/events`: queue changes as server-sent events, from the change poller's fan-out.

use crate::changes::QueueEvent;
use crate::state::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

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
