//! Copying an installation's history from one database into another (`testarena migrate
//! --from … --to …`): every queue with all its fields, tasks, cases, commit-status reports,
//! the case history (`case_results`), API tokens and bisects with their steps,
//! with their ids, statuses and times as they are. Workers and their process groups are not
//! copied (they register again). The rows are read in one snapshot of the source through the
//! backend-independent row types and written in one transaction on the target, which must be
//! empty: all or nothing.

pub(crate) mod rows;

pub use rows::CopySummary;
pub(crate) use rows::*;

use crate::{Result, Store};

/// The SQL that SQLite and PostgreSQL both speak for a copy, expanded in each backend module
/// (with its `all`, the pool and `Self::after_copy` in scope).
macro_rules! copy_impl {
    ($backend:ident) => {
        use super::all;
        use crate::backend::{Copying, Fut};
        use crate::copy::{
            copied_case, copied_queue, copied_report, copied_result, not_empty, Cell, Snapshot,
            COPY_CASE_COLUMNS, COPY_QUEUE_COLUMNS, PLAIN_TABLES, REPORT_COLUMNS, RESULT_COLUMNS,
        };
        use crate::rows::{task_row, to_json, TASK_COLUMNS};
        use crate::rows::{token_with_hash, TOKEN_COLUMNS};

        impl Copying for $backend {
            fn snapshot(&self) -> Fut<'_, Snapshot> {
                Box::pin(async move {
                    // One read transaction: every row from one snapshot.
                    let mut tx = self.pool.begin().await?;
                    let rows = sqlx::query(&format!(
                        "SELECT {COPY_QUEUE_COLUMNS} FROM queues ORDER BY id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    let queues = all(&rows, copied_queue)?;
                    let rows = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks ORDER BY id"))
                        .fetch_all(&mut *tx)
                        .await?;
                    let tasks = all(&rows, task_row)?;
                    let rows = sqlx::query(&format!(
                        "SELECT {COPY_CASE_COLUMNS} FROM cases ORDER BY id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    let cases = all(&rows, copied_case)?;
                    let rows = sqlx::query(&format!(
                        "SELECT {REPORT_COLUMNS} FROM status_reports ORDER BY queue_id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    let reports = all(&rows, copied_report)?;
                    let rows = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
                        .fetch_all(&mut *tx)
                        .await?;
                    let tokens = all(&rows, token_with_hash)?;
                    let rows = sqlx::query(&format!(
                        "SELECT {RESULT_COLUMNS} FROM case_results ORDER BY case_id"
                    ))
                    .fetch_all(&mut *tx)
                    .await?;
                    let results = all(&rows, copied_result)?;
                    let mut plain = Vec::new();
                    for t in PLAIN_TABLES {
                        let rows = sqlx::query(&t.select()).fetch_all(&mut *tx).await?;
                        plain.push(all(&rows, |r| t.row(r))?);
                    }
                    let change_seq: i64 =
                        sqlx::query_scalar("SELECT value FROM change_seq WHERE id = 1")
                            .fetch_one(&mut *tx)
                            .await?;
                    tx.commit().await?;
                    Ok(Snapshot {
                        queues,
                        tasks,
                        cases,
                        reports,
                        tokens,
                        change_seq,
                        results,
                        plain,
                    })
                })
            }

            fn restore<'a>(&'a self, s: &'a Snapshot) -> Fut<'a, ()> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let used: i64 = sqlx::query_scalar(
                        "SELECT (SELECT COUNT(*) FROM queues) + (SELECT COUNT(*) FROM deleted_queues)",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    if used > 0 {
                        return Err(not_empty(used));
                    }
                    let queue_sql = format!(
                        "INSERT INTO queues ({COPY_QUEUE_COLUMNS}) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33)"
                    );
                    for c in &s.queues {
                        let q = &c.row;
                        sqlx::query(&queue_sql)
                            .bind(q.id)
                            .bind(&q.name)
                            .bind(&q.repo)
                            .bind(&q.branch)
                            .bind(&q.requested_commit)
                            .bind(&q.commit)
                            .bind(to_json(q.scenarios.as_ref())?)
                            .bind(q.status.as_str())
                            .bind(q.phase.map(|p| p.as_str()))
                            .bind(q.priority)
                            .bind(q.created_at)
                            .bind(q.started_at)
                            .bind(q.finished_at)
                            .bind(&q.error)
                            .bind(i64::from(q.abort_requested))
                            .bind(&q.worker_id)
                            .bind(q.attempts)
                            .bind(to_json(q.case_filter.as_ref())?)
                            .bind(q.rev)
                            .bind(to_json(q.origin.as_ref())?)
                            .bind(to_json(Some(&q.labels).filter(|l| !l.is_empty()))?)
                            .bind(&q.submitted_by)
                            .bind(c.lease_expires_at)
                            .bind(&c.delivery)
                            .bind(&c.idem_caller)
                            .bind(&c.idem_key)
                            .bind(&c.idem_request)
                            .bind(i64::from(q.no_cache))
                            .bind(q.build_cached_from)
                            .bind(i64::from(q.retries))
                            .bind(q.previous_id)
                            .bind(q.regressions)
                            .bind(&c.repo_key)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let task_sql = format!(
                        "INSERT INTO tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    );
                    for t in &s.tasks {
                        sqlx::query(&task_sql)
                            .bind(t.id)
                            .bind(t.queue_id)
                            .bind(t.position)
                            .bind(&t.scenario)
                            .bind(t.status.as_str())
                            .bind(t.started_at)
                            .bind(t.finished_at)
                            .bind(&t.error)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let case_sql = format!(
                        "INSERT INTO cases ({COPY_CASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                    );
                    for c in &s.cases {
                        let r = &c.row;
                        sqlx::query(&case_sql)
                            .bind(r.id)
                            .bind(r.task_id)
                            .bind(c.queue_id)
                            .bind(r.position)
                            .bind(&r.key)
                            .bind(&r.name)
                            .bind(r.status.as_str())
                            .bind(r.duration_ms)
                            .bind(&r.message)
                            .bind(c.started_at)
                            .bind(c.finished_at)
                            .bind(r.log_from)
                            .bind(r.log_to)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let result_sql = format!(
                        "INSERT INTO case_results ({RESULT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    );
                    for r in &s.results {
                        sqlx::query(&result_sql)
                            .bind(r.case_id)
                            .bind(r.row.queue_id)
                            .bind(&r.repo_key)
                            .bind(&r.row.branch)
                            .bind(&r.row.commit)
                            .bind(&r.scenario)
                            .bind(&r.case_key)
                            .bind(r.row.status.as_str())
                            .bind(r.row.duration_ms)
                            .bind(r.row.finished_at)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let report_sql = format!(
                        "INSERT INTO status_reports ({REPORT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                    );
                    for r in &s.reports {
                        sqlx::query(&report_sql)
                            .bind(r.queue_id)
                            .bind(&r.wanted)
                            .bind(&r.posted)
                            .bind(&r.claimed_by)
                            .bind(r.claimed_until)
                            .bind(r.rounds)
                            .execute(&mut *tx)
                            .await?;
                    }
                    let token_sql = format!(
                        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    );
                    for t in &s.tokens {
                        let r = &t.row;
                        sqlx::query(&token_sql)
                            .bind(r.id)
                            .bind(&r.name)
                            .bind(r.scope.as_str())
                            .bind(r.created_at)
                            .bind(r.last_used_at)
                            .bind(r.expires_at)
                            .bind(&t.hash)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for (t, rows) in PLAIN_TABLES.iter().zip(&s.plain) {
                        let sql = t.insert();
                        for row in rows {
                            let mut q = sqlx::query(&sql);
                            for cell in row {
                                q = match cell {
                                    Cell::Int(v) => q.bind(*v),
                                    Cell::Text(v) => q.bind(v.as_deref()),
                                };
                            }
                            q.execute(&mut *tx).await?;
                        }
                    }
                    // The triggers gave every queue a new rev as its rows arrived: put back the
                    // source's (no trigger watches `rev`), and the counter past all of them.
                    for c in &s.queues {
                        sqlx::query("UPDATE queues SET rev = $1 WHERE id = $2")
                            .bind(c.row.rev)
                            .bind(c.row.id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query(
                        "UPDATE change_seq SET value = (SELECT MAX(v) FROM \
                         (SELECT $1 AS v UNION ALL SELECT COALESCE(MAX(rev), 0) FROM queues) AS revs) \
                         WHERE id = 1",
                    )
                    .bind(s.change_seq)
                    .execute(&mut *tx)
                    .await?;
                    Self::after_copy(&mut tx).await?;
                    tx.commit().await?;
                    Ok(())
                })
            }
        }
    };
}
pub(crate) use copy_impl;

impl Store {
    /// Copies this store's history (queues with all their fields, tasks, cases, commit-status
    /// reports, the case history, tokens, bisects) into `target`, keeping ids, statuses and
    /// times, in one transaction on the target: all or nothing; then every queue's files, a piece at a time. Refuses ([`StoreError::Conflict`]) unless `target` is empty (no
    /// queue, and none ever deleted). Queues are copied as they are, running ones too: stop
    /// the workers first. Workers are not copied.
    pub async fn copy_into(&self, target: &Store) -> Result<CopySummary> {
        let snapshot = self.retry(|| self.backend.snapshot()).await?;
        target.retry(|| target.backend.restore(&snapshot)).await?;
        // The files after the rows, a queue at a time: they can be large, and a copy that
        // stops half-way is finished by running it again... on a new target.
        let mut file_bytes = 0;
        for q in &snapshot.queues {
            file_bytes += self.copy_files_into(q.row.id, target).await?;
        }
        Ok(CopySummary {
            queues: snapshot.queues.len(),
            tasks: snapshot.tasks.len(),
            cases: snapshot.cases.len(),
            reports: snapshot.reports.len(),
            tokens: snapshot.tokens.len(),
            bisects: PLAIN_TABLES
                .iter()
                .zip(&snapshot.plain)
                .find(|(t, _)| t.name == "bisects")
                .map_or(0, |(_, rows)| rows.len()),
            file_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testdb::{on_both, Kind, TestDb, TestDbRef};
    use crate::{CaseCaps, CaseResult, Holder, NewCase, StoreError};
    use testarena_core::validate::ValidQueue;
    use testarena_core::{CaseStatus, Phase, QueueStatus};

    fn vq(branch: &str, scenarios: Option<Vec<&str>>) -> ValidQueue {
        ValidQueue {
            repo: "https://example.com/r.git".into(),
            branch: branch.into(),
            scenarios: scenarios.map(|s| s.into_iter().map(String::from).collect()),
            name: branch.into(),
            priority: 3,
            commit: Some("abc".into()),
            case_filter: None,
            labels: vec!["arm".into()],
            origin: None,
            no_cache: false,
            retries: 0,
        }
    }

    /// A SQLite history (finished, running, waiting, aborted and deleted queues, a report)
    /// copied into an empty database of each kind reads back the same; a second copy is refused.
    async fn copies_a_sqlite_history(db: TestDbRef) {
        let src = TestDb::new(Kind::Sqlite).await;
        let s = src.store.clone();
        let done = s
            .create_queue_by(
                &ValidQueue {
                    no_cache: true,
                    retries: 3,
                    ..vq("done", Some(vec!["a.xml", "b.xml"]))
                },
                Some("ci"),
            )
            .await
            .unwrap();
        let token = s
            .create_token("ci", testarena_core::auth::Scope::Submit, None)
            .await
            .unwrap();
        let gone = s.create_queue(&vq("gone", None)).await.unwrap();
        let running = s
            .create_queue(&vq("running", Some(vec!["c.xml"])))
            .await
            .unwrap();
        let (free, _) = s
            .create_queue_once(&vq("free", None), "delivery-1", CaseCaps::ALL)
            .await
            .unwrap();
        let submit_key = crate::SubmitKey {
            caller: "c0ffee".into(),
            key: "key-1".into(),
            request: "digest-1".into(),
        };
        let crate::Keyed::Created(keyed) = s
            .create_queue_keyed(&vq("keyed", None), &submit_key, None, CaseCaps::ALL)
            .await
            .unwrap()
        else {
            panic!("a new key makes a queue")
        };
        let aborted = s.create_queue(&vq("aborted", None)).await.unwrap();
        s.abort_queue(aborted.queue.id, CaseCaps::ALL)
            .await
            .unwrap();
        s.delete_queue(gone.queue.id).await.unwrap();

        let labels = vec!["arm".to_string()];
        let q = s
            .claim_labelled("w1", &labels, 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(q.id, done.queue.id);
        let hd = Holder::new("w1", q.attempts);
        s.set_phase(q.id, &hd, Some(Phase::Testing)).await.unwrap();
        s.set_build_cached_from(q.id, &hd, Some(aborted.queue.id))
            .await
            .unwrap();
        let task = &done.tasks[0].0;
        s.set_task(task.id, &hd, CaseStatus::Running, None)
            .await
            .unwrap();
        let new = [
            NewCase {
                key: "K1".into(),
                name: "one".into(),
            },
            NewCase {
                key: "K2".into(),
                name: "two".into(),
            },
        ];
        let ids = s.create_cases(task.id, &hd, &new).await.unwrap();
        s.start_case(ids[0], &hd).await.unwrap();
        let failed = CaseResult {
            status: CaseStatus::Failed,
            duration_ms: Some(12),
            message: Some("expected 1, got 2".into()),
        };
        s.finish_case(ids[0], &hd, &failed).await.unwrap();
        s.close_unfinished(q.id, &hd, "cut short").await.unwrap();
        s.finish_queue(q.id, &hd, QueueStatus::Failed, Some("1 failed"))
            .await
            .unwrap();
        let r = s
            .claim_labelled("w2", &labels, 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.id, running.queue.id);
        src.exec(&format!(
            "INSERT INTO status_reports (queue_id, wanted, posted, rounds) VALUES ({}, 'failed', 'running', 2)",
            done.queue.id
        ))
        .await;

        let bisect = s
            .create_bisect(&crate::bisects::tests::spec(), Some("ci"))
            .await
            .unwrap()
            .bisect
            .id;
        src.exec(&format!(
            "INSERT INTO bisect_steps (bisect_id, position, commit_index, commit_sha, subject, \
             author, queue_id, verdict, note) \
             VALUES ({bisect}, 0, 3, 'abc123', 'a subject', 'A U Thor', {}, 'bad', 'it broke')",
            done.queue.id
        ))
        .await;

        let summary = s.copy_into(&db.store).await.unwrap();
        assert_eq!(summary.bisects, 1);
        assert_eq!(summary.queues, 5);
        assert_eq!(summary.reports, 1);
        assert_eq!(summary.tokens, 1);
        let before = s.backend.snapshot().await.unwrap();
        let after = db.store.backend.snapshot().await.unwrap();
        assert_eq!(before, after);
        let copied = db.store.queue_row(done.queue.id).await.unwrap();
        assert!(copied.no_cache);
        assert_eq!(copied.retries, 3);
        assert_eq!(copied.build_cached_from, Some(aborted.queue.id));
        for id in [
            done.queue.id,
            running.queue.id,
            free.queue.id,
            keyed.queue.id,
            aborted.queue.id,
        ] {
            assert_eq!(
                s.queue(id).await.unwrap(),
                db.store.queue(id).await.unwrap()
            );
        }
        assert_eq!(
            db.store.current_rev().await.unwrap(),
            s.current_rev().await.unwrap()
        );
        // Ids go on past the copied ones (and the deleted one is not reused by a copy).
        let next = db
            .store
            .create_queue(&vq("next", Some(vec!["d.xml"])))
            .await
            .unwrap();
        assert!(next.queue.id > aborted.queue.id);
        assert!(next.tasks[0].0.id > running.tasks[0].0.id);
        // The bisect came along with its step; a new one gets a new id.
        let copied = db.store.bisect(bisect).await.unwrap().unwrap();
        assert_eq!(copied, s.bisect(bisect).await.unwrap().unwrap());
        assert_eq!(copied.steps.len(), 1);
        let spec = crate::bisects::tests::spec();
        let later = db.store.create_bisect(&spec, None).await.unwrap();
        assert!(later.bisect.id > bisect);
        // Tokens came along and keep working; new ones get new ids.
        let found = db.store.verify_token(&token.text).await.unwrap().unwrap();
        assert_eq!(found.row.name, "ci");
        let other = db
            .store
            .create_token("other", testarena_core::auth::Scope::Read, None)
            .await
            .unwrap();
        assert!(other.row.id > token.row.id);
        // The delivery came along: a replay finds its queue.
        let (again, created) = db
            .store
            .create_queue_once(&vq("free", None), "delivery-1", CaseCaps::ALL)
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again.queue.id, free.queue.id);
        // So did the idempotency key: a client's retry finds its queue.
        let replay = db
            .store
            .create_queue_keyed(&vq("keyed", None), &submit_key, None, CaseCaps::ALL)
            .await
            .unwrap();
        assert!(
            matches!(replay, crate::Keyed::Replayed(ref d) if d.queue.id == keyed.queue.id),
            "{replay:?}"
        );

        // Not empty any more: refused, and nothing changed.
        let err = s.copy_into(&db.store).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains("not empty")),
            "{err}"
        );
        assert_eq!(
            db.store
                .count_by_status()
                .await
                .unwrap()
                .values()
                .sum::<i64>(),
            6
        );
        src.finish().await;
    }

    on_both!(copies_a_sqlite_history);
}
