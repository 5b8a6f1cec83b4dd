//! Every queue route parses its `{id}` (and `{task}`) the same way: one JSON 404 for anything
//! that is not a positive decimal number, before the database is asked.

use super::*;

#[tokio::test]
async fn every_queue_route_answers_a_bad_id_with_the_same_json_404() {
    let app = app().await;
    let id = app.new_queue(&["a.xml"]).await;
    let routes: [(Method, &str); 12] = [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::POST, "/abort"),
        (Method::POST, "/rerun"),
        (Method::GET, "/tasks/1/cases"),
        (Method::GET, "/log"),
        (Method::GET, "/log/stream"),
        (Method::GET, "/cases/TC_A/log"),
        (Method::GET, "/cases/TC_A/log.html"),
        (Method::GET, "/cases/TC_A/repro"),
        (Method::GET, "/junit.xml"),
        (Method::GET, "/archive"),
    ];
    let before = app.state.store.operations();
    for (method, rest) in &routes {
        for bad in ["abc", "0", "01", "-1", "1e3", "99999999999999999999"] {
            let uri = format!("/api/v1/queues/{bad}{rest}");
            let a = app.send(method.clone(), &uri, None, vec![]).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert_eq!(a.error_code(), "not_found", "{method} {uri}");
            assert_eq!(
                a.json()["error"]["message"],
                format!("queue '{bad}' not found (ids are positive numbers)"),
                "{method} {uri}"
            );
        }
    }
    assert_eq!(
        app.state.store.operations(),
        before,
        "no bad id reached the database"
    );
    // A task id is checked the same way, naming the queue.
    let a = app
        .get(&format!("/api/v1/queues/{id}/tasks/x1/cases"))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    assert_eq!(
        a.json()["error"]["message"],
        format!("queue {id} has no task 'x1'")
    );
    // A path that is not UTF-8 is a 400 naming the parameter.
    for (uri, param) in [
        ("/api/v1/queues/%FF".to_string(), "id"),
        (format!("/api/v1/queues/{id}/cases/%C3%28/log"), "case"),
    ] {
        let a = app.get(&uri).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(a.error_code(), "bad_request");
        assert_eq!(
            a.json()["error"]["message"],
            format!("Invalid URL: Invalid UTF-8 in `{param}`")
        );
    }
    // A good id of a queue that does not exist is the store's 404.
    let a = app.get("/api/v1/queues/424242").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["message"], "queue 424242 not found");
}
