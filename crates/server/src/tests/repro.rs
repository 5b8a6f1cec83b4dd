//! `GET /api/v1/queues/{id}/cases/{case}/repro`: a failed case's bundle is made from the files
//! the worker kept under `repro/` and the case's log; a passed case, or a queue without a
//! bundle, is a JSON 404.

use super::*;
use std::io::Read;
use testarena_core::repro::Manifest;
use testarena_core::CaseStatus;
use testarena_store::{CaseResult, Chunk, Holder};

/// The files of a tar.gz, by name.
fn untar(data: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut files = std::collections::BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    files
}

fn manifest(scenarios: &[&str]) -> Manifest {
    Manifest {
        version: 1,
        queue: 1,
        repo: "https://example.com/fw.git".into(),
        branch: "main".into(),
        commit: "0123abcd".into(),
        emulator_command: "qemu -kernel build/fw.elf".into(),
        console: "stdio".into(),
        ready: None,
        boot_timeout_ms: 1000,
        firmware: None,
        elf: Some("build/fw.elf".into()),
        testarena_toml: true,
        images: vec!["build/fw.elf".into()],
        scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
        left_out: Vec::new(),
        cap: 1 << 20,
    }
}

#[tokio::test]
async fn a_failed_case_has_a_bundle_and_a_passed_one_none() {
    let app = app().await;
    let id = app.new_queue(&["a.xml", "b.xml"]).await;
    let store = &app.state.store;
    store.claim("w", 60_000).await.unwrap().unwrap();
    let h = Holder::new("w", 1);
    let tasks: Vec<i64> = store
        .queue(id)
        .await
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.0.id)
        .collect();
    let mut made = Vec::new();
    for (t, key) in tasks.iter().zip(["TC_BAD", "TC_OK"]) {
        let new = [NewCase {
            key: key.into(),
            name: key.into(),
        }];
        made.push(store.create_cases(*t, &h, &new).await.unwrap()[0]);
    }
    let url = |case: &str| format!("/api/v1/queues/{id}/cases/{case}/repro");

    // Before the cases end, and before the worker kept a bundle.
    let a = app.get(&url("TC_BAD")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only a failed or errored case"));

    for (c, status) in made.iter().zip([CaseStatus::Failed, CaseStatus::Passed]) {
        store.start_case(*c, &h).await.unwrap();
        let result = CaseResult {
            status,
            duration_ms: Some(5),
            message: Some("expected /^pang$/".into()),
        };
        store.finish_case(*c, &h, &result).await.unwrap();
    }
    let a = app.get(&url("TC_BAD")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has no repro bundle"),
        "{:?}",
        a.json()
    );

    let files: [(&str, Vec<u8>); 5] = [
        (
            "repro/manifest.json",
            serde_json::to_vec(&manifest(&["a.xml", "b.xml"])).unwrap(),
        ),
        ("repro/files/testarena.toml", b"[emulator]\n".to_vec()),
        ("repro/files/a.xml", b"<scenario a/>".to_vec()),
        ("repro/files/b.xml", b"<scenario b/>".to_vec()),
        ("repro/files/build/fw.elf", b"\x7fELF...".to_vec()),
    ];
    let chunks: Vec<Chunk> = files
        .iter()
        .map(|(name, data)| Chunk {
            name: name.to_string(),
            start: 0,
            data: data.clone(),
        })
        .collect();
    store.put_chunks(id, &h, &chunks).await.unwrap();

    let a = app.get(&url("TC_OK")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("is passed"));
    let a = app.get(&url("TC_NONE")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error_code(), "not_found");

    let a = app
        .get(&format!("{}?task={}", url("TC_BAD"), tasks[0]))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/gzip");
    let got = untar(&a.body);
    let top = format!("repro-{id}-TC_BAD");
    let names: Vec<&str> = got
        .keys()
        .map(|k| k.strip_prefix(&format!("{top}/")).unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "case.json",
            "files/a.xml",
            "files/build/fw.elf",
            "files/testarena.toml",
            "manifest.json",
            "transcript.log",
        ],
        "the other failed scenario's file is not this case's"
    );
    assert!(got[&format!("{top}/files/build/fw.elf")].starts_with(b"\x7fELF"));
    let case: Value = serde_json::from_slice(&got[&format!("{top}/case.json")]).unwrap();
    assert_eq!(case["case"], "TC_BAD");
    assert_eq!(case["scenario"], "a.xml");
    assert_eq!(case["status"], "failed");
    assert_eq!(case["task"], tasks[0]);
}
