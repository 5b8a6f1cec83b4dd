//! Tests of `validate`.

use super::*;
use std::time::Duration;

fn q(repo: &str, branch: &str) -> NewQueue {
    NewQueue {
        repo: repo.into(),
        branch: branch.into(),
        scenarios: None,
        name: None,
        priority: None,
        commit: None,
        labels: None,
        no_cache: false,
        retries: None,
    }
}

#[test]
fn a_new_queue_is_sent_without_the_fields_left_out() {
    let mut new = NewQueue::new("https://h/r.git", "main");
    assert_eq!(
        serde_json::to_string(&new).unwrap(),
        r#"{"repo":"https://h/r.git","branch":"main"}"#
    );
    new.priority = Some(7);
    new.scenarios = Some(vec!["a.xml".into()]);
    let text = serde_json::to_string(&new).unwrap();
    assert_eq!(serde_json::from_str::<NewQueue>(&text).unwrap(), new);
}

#[test]
fn good_branches_pass() {
    for b in ["main", "feature/x-1", "release/v1.2", "a@b", "user/ünïcode"] {
        assert_eq!(check_branch(b), Ok(()), "{b}");
    }
}

#[test]
fn git_refused_branches_fail() {
    for b in [
        "", "-x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "a@{1}", "@", "a/",
        "/a", "a//b", ".a", "a/.b", "a.lock", "a.", "a\tb",
    ] {
        assert!(check_branch(b).is_err(), "{b:?}");
    }
}

#[test]
fn scenario_paths() {
    assert!(check_scenario_path("scenarios/smoke.xml").is_ok());
    for p in [
        "/etc/x.xml",
        "../x.xml",
        "a/../../x.xml",
        "a\0.xml",
        "a.txt",
        "",
        "a/b",
    ] {
        assert!(check_scenario_path(p).is_err(), "{p:?}");
    }
}

#[test]
fn repos() {
    let roots = vec![PathBuf::from("/srv/git")];
    for r in [
        "https://example.com/a.git",
        "http://h/a",
        "ssh://git@h/a",
        "git://h/a",
        "git@github.com:o/r.git",
    ] {
        assert!(check_repo(r, &roots).is_ok(), "{r}");
    }
    assert_eq!(
        check_repo("file:///srv/git/a", &roots).unwrap(),
        "/srv/git/a"
    );
    assert_eq!(check_repo("/srv/git/a/", &roots).unwrap(), "/srv/git/a");
    for r in [
        "",
        "ftp://h/a",
        "relative/path",
        "/etc/passwd",
        "/srv/git/../etc",
        "file:///tmp/x",
        "-uhttps://x",
        "https://",
        "a b",
    ] {
        assert!(check_repo(r, &roots).is_err(), "{r:?}");
    }
    assert!(check_repo("/srv/git/a", &[])
        .unwrap_err()
        .message
        .contains("--allow-local-repos"));
    // "/srv/gitx" must not pass as being under "/srv/git".
    assert!(check_repo("/srv/gitx/a", &roots).is_err());
    // Link-local and metadata hosts are refused whatever else is allowed.
    for r in [
        "http://169.254.169.254/latest/meta-data",
        "https://user:pw@[fe80::1]/x.git",
        "git@169.254.169.254:x.git",
        "http://metadata.google.internal/x",
    ] {
        let e = check_repo(r, &roots).unwrap_err();
        assert!(e.message.contains("never allowed"), "{r}: {e}");
        assert!(!e.message.contains("pw@"), "{e}");
    }
}

#[test]
fn labels_are_checked_sorted_and_deduplicated() {
    let mut new = q("https://h/r.git", "main");
    new.labels = Some(vec![
        "qemu-system-xtensa".into(),
        "esp32".into(),
        "esp32".into(),
    ]);
    let v = new.validate(&[]).unwrap();
    assert_eq!(v.labels, ["esp32", "qemu-system-xtensa"]);
    assert!(q("https://h/r.git", "main")
        .validate(&[])
        .unwrap()
        .labels
        .is_empty());
    for good in ["a", "0", "esp32.s3", "x_y-z"] {
        assert_eq!(check_label(good), Ok(()), "{good}");
    }
    for bad in ["", "Esp32", "-x", ".x", "a b", "a/b", "é", &"x".repeat(65)] {
        let mut new = q("https://h/r.git", "main");
        new.labels = Some(vec!["ok".into(), bad.to_string()]);
        assert_eq!(new.validate(&[]).unwrap_err().field, "labels[1]", "{bad:?}");
    }
    let mut many = q("https://h/r.git", "main");
    many.labels = Some((0..17).map(|i| format!("l{i}")).collect());
    let e = many.validate(&[]).unwrap_err();
    assert_eq!(e.field, "labels");
    assert!(e.message.contains("at most 16"), "{e}");
}

#[test]
fn whole_queue() {
    let v = q("https://h/r.git", "main").validate(&[]).unwrap();
    assert_eq!((v.priority, v.name.as_str()), (5, "main"));
    let mut bad = q("https://h/r.git", "main");
    bad.scenarios = Some(vec![]);
    assert_eq!(bad.validate(&[]).unwrap_err().field, "scenarios");
    let mut bad = q("https://h/r.git", "main");
    bad.priority = Some(10);
    assert_eq!(bad.validate(&[]).unwrap_err().field, "priority");
    let mut bad = q("https://h/r.git", "main");
    bad.commit = Some("abc".into());
    assert_eq!(bad.validate(&[]).unwrap_err().field, "commit");
    let mut bad = q("https://h/r.git", "main");
    bad.name = Some("x".repeat(201));
    assert_eq!(bad.validate(&[]).unwrap_err().field, "name");
    let mut bad = q("https://h/r.git", "main");
    bad.scenarios = Some(vec!["ok.xml".into(), "../x.xml".into()]);
    assert_eq!(bad.validate(&[]).unwrap_err().field, "scenarios[1]");
}

/// Patterns a console test really uses: accepted, and checked quickly.
const ORDINARY: &[&str] = &[
    r"^ready>",
    r"Guru Meditation|abort\(\)",
    r"value=\d+",
    r"(?i)error",
    r"^esp32> $",
    r"heap: \d+ bytes free",
    r"[A-Fa-f0-9]{64}",
    r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
    r"(?i)(error|fail(ed|ure)?|panic|abort|assert(ion)?)\b.{0,200}",
    r"^\w+@\w+$",
    r"(?-u:\w){1,32}@(?-u:\w){1,32}",
    r".*",
];

#[test]
fn ordinary_patterns_pass_the_budget_quickly() {
    for p in ORDINARY {
        let checked = check_pattern(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(checked.regex.as_str(), *p);
        assert!(checked.line_time < PATTERN_TIME_LIMIT, "{p}: {checked:?}");
        // Generous: a debug build on a busy machine, not the few hundred µs of a release build.
        assert!(
            checked.check_time < Duration::from_secs(1),
            "{p}: {checked:?}"
        );
    }
    // Size classes: literals are small, a Unicode class is bigger.
    assert_eq!(check_pattern("^ready>").unwrap().size, 16 << 10);
    assert_eq!(check_pattern(r"^\w+@\w+$").unwrap().size, 128 << 10);
    assert_eq!(
        check_pattern(r"(?i)(error|fail(ed|ure)?|panic|abort|assert(ion)?)\b.{0,200}")
            .unwrap()
            .size,
        PATTERN_SIZE_LIMIT
    );
}

#[test]
fn slow_patterns_are_refused_with_their_time() {
    // Both fit the size limit; in a release build, on 64 KiB of random `a`/`b` and once
    // their search cache is warm, they take about 200 and 900 ms.
    for p in [r"a.{600}Z", r"(?:.{0,30}){30}Q"] {
        assert!(compile_pattern(p).is_ok(), "{p} should fit the size limit");
        match check_pattern(p) {
            Err(e @ PatternError::TooSlow { took, .. }) => {
                assert!(took > PATTERN_TIME_LIMIT, "{p}: {took:?}");
                let text = e.to_string();
                assert!(
                    text.starts_with("takes ")
                        && text.contains(" ms on a 64 KiB line; the limit is 50 ms"),
                    "{p}: {text}"
                );
            }
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[test]
fn huge_patterns_are_refused_as_too_large() {
    // These two take 14-18 s on a 60 KB line; compiled, they need about 10 MiB.
    for p in [
        r".{0,10000}Z",
        r"(?:.{0,100}){100}Q",
        r"^\w{1,32}@\w{1,32}$",
        r"x{1000}{1000}",
    ] {
        let e = check_pattern(p).unwrap_err();
        assert_eq!(e, PatternError::TooLarge, "{p}");
        assert!(e.to_string().contains("too large"), "{e}");
        assert_eq!(compile_pattern(p).unwrap_err(), PatternError::TooLarge);
    }
}

#[test]
fn syntax_errors_give_the_one_line_cause() {
    let e = check_pattern("(").unwrap_err();
    assert_eq!(e, PatternError::Syntax("unclosed group".into()));
    assert_eq!(
        e.to_string(),
        "is not a valid regular expression: unclosed group"
    );
}

#[test]
fn priority_may_be_written_as_an_integral_float() {
    let parse = |priority: &str| {
        serde_json::from_str::<NewQueue>(&format!(
            r#"{{"repo": "https://h/r", "branch": "main", "priority": {priority}}}"#
        ))
    };
    assert_eq!(parse("6").unwrap().priority, Some(6));
    assert_eq!(parse("6.0").unwrap().priority, Some(6));
    assert_eq!(parse("-1e2").unwrap().priority, Some(-100));
    assert_eq!(parse("null").unwrap().priority, None);
    for bad in ["6.5", "1e300", "18446744073709551615", "\"6\"", "true"] {
        let e = parse(bad).unwrap_err();
        assert!(e.is_data(), "{bad}: {e}");
    }
    // Out of range, but an integer: the range check names it.
    let e = parse("12.0").unwrap().validate(&[]).unwrap_err();
    assert_eq!(e.field, "priority");
}

#[test]
fn retries_are_0_to_5_and_0_when_absent() {
    let v = q("https://h/r.git", "main").validate(&[]).unwrap();
    assert_eq!(v.retries, 0);
    for n in 0..=5 {
        let mut ok = q("https://h/r.git", "main");
        ok.retries = Some(n);
        assert_eq!(i64::from(ok.validate(&[]).unwrap().retries), n);
    }
    for n in [6, -1, 300, i64::MAX] {
        let mut bad = q("https://h/r.git", "main");
        bad.retries = Some(n);
        let e = bad.validate(&[]).unwrap_err();
        assert_eq!(e.field, "retries", "{n}");
        assert!(
            e.to_string()
                .contains(&format!("retries: must be between 0 and 5 (how many times a failed case is tried again), got {n}")),
            "{e}"
        );
    }
    let parsed: NewQueue =
        serde_json::from_str(r#"{"repo": "https://h/r", "branch": "main", "retries": 2.0}"#)
            .unwrap();
    assert_eq!(parsed.retries, Some(2));
}
