//! Live logs: many viewers of one running queue's log share one watch of the file and hear of
//! the queue's end from the one change poller, so they cost the database nothing per viewer.

use super::*;
use futures::StreamExt;

/// One open SSE answer, read event by event.
struct Sse {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, uri: &str) -> Sse {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let resp = app.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Sse {
            body: resp.into_body().into_data_stream(),
            buf: String::new(),
        }
    }

    /// The next event (its text), or `None` once the stream ended.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if event.starts_with(':') {
                    continue; // keep-alive comment
                }
                return Some(event);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("no event within 10 s")?
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn live_log_viewers_cost_the_database_nothing_per_viewer() {
    const VIEWERS: usize = 50;
    let app = app().await;
    let background = spawn_background(&app.state);
    let id = app.new_queue(&["a.xml"]).await;
    let store = &app.state.store;
    let holder = store
        .claim("w", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    put_log(store, id, &holder, 0, "first\n").await;
    let mut at = 6;
    let uri = format!("/api/v1/queues/{id}/log/stream");
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let mut v = Sse::open(&app, &uri).await;
        let first = v.next().await.unwrap();
        assert!(
            first.contains("event: log") && first.contains("data: first"),
            "{first}"
        );
        viewers.push(v);
    }
    assert_eq!(
        app.state.follows.counts(),
        (1, VIEWERS),
        "one watch for all"
    );
    let before = store.operations();
    let started = std::time::Instant::now();
    for n in 0..5 {
        let line = format!("line {n}\n");
        put_log(store, id, &holder, at, &line).await;
        at += line.len() as i64;
        for v in &mut viewers {
            let ev = v.next().await.unwrap();
            assert!(ev.contains(&format!("data: line {n}")), "{ev}");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = store.operations() - before;
    let secs = started.elapsed().as_secs_f64();
    // Whatever the number of viewers: the change poller reads the counter 4 times a second,
    // the watcher looks at the log's length 10 times a second (SQLite) and reads each write
    // once, and the 5 writes count too. Reading per viewer would be at least 50 × 5.
    assert!(
        (used as f64) < 4.0 * secs + 10.0 * secs + 2.0 * 5.0 + 10.0,
        "{used} database operations in {secs:.1} s with {VIEWERS} viewers"
    );
    store
        .finish_queue(id, &holder, testarena_core::QueueStatus::Passed, None)
        .await
        .unwrap();
    for v in &mut viewers {
        let ev = v.next().await.unwrap();
        assert!(ev.contains("event: end"), "{ev}");
        assert_eq!(v.next().await, None, "the stream ends after `end`");
    }
    for t in background {
        t.abort();
    }
}

#[tokio::test]
async fn a_finished_queue_streams_its_log_then_ends_without_the_poller() {
    let app = app().await;
    let id = app.new_queue(&["a.xml"]).await;
    let store = &app.state.store;
    let holder = store
        .claim("w", 60_000)
        .await
        .unwrap()
        .unwrap()
        .holder()
        .unwrap();
    put_log(store, id, &holder, 0, "one\ntwo\npartial").await;
    store
        .finish_queue(id, &holder, testarena_core::QueueStatus::Aborted, None)
        .await
        .unwrap();
    let mut v = Sse::open(&app, &format!("/api/v1/queues/{id}/log/stream?offset=4")).await;
    let ev = v.next().await.unwrap();
    assert!(ev.contains("id: 8") && ev.contains("data: two"), "{ev}");
    let ev = v.next().await.unwrap();
    assert!(ev.contains("event: end") && ev.contains("id: 8"), "{ev}");
    assert_eq!(v.next().await, None);
}
