//! The portable SQL of the `History` side of a backend (`crate::history`).

/// The `History` side of a backend, and how `finish_queue` records a run (with the backend's
/// connection type `$conn` and SQL dialect `$dialect` in scope), written once.
macro_rules! history_impl {
    ($backend:ident, $conn:ty, $dialect:expr) => {
        use crate::history::{
            case_results_sql, outcome_row, record_sql, regressions_sql, result_row, strip_row,
            strips_sql, CaseQuery, ResultRow, Run, StripQuery, StripRow, LATEST_SQL, OUTCOMES_SQL,
            PREVIOUS_SQL,
        };
        use crate::backend::{Fut, History};
        use std::sync::OnceLock;

        impl $backend {
            /// Records a finished queue that is a run (see `crate::history`): its results, the
            /// previous run of its repository and branch, and how many cases got worse since.
            /// Inside the transaction that records its verdict.
            pub(crate) async fn record_run(conn: &mut $conn, run: Run<'_>) -> crate::Result<()> {
                let Some(commit) = run.commit.filter(|_| run.counts()) else {
                    return Ok(());
                };
                static RECORD: OnceLock<String> = OnceLock::new();
                static REGRESSIONS: OnceLock<String> = OnceLock::new();
                let key = testarena_core::history::repo_key(run.repo);
                sqlx::query(RECORD.get_or_init(record_sql))
                    .bind(run.id)
                    .bind(&key)
                    .bind(run.branch)
                    .bind(commit)
                    .bind(run.finished_at)
                    .execute(&mut *conn)
                    .await?;
                let previous: Option<i64> = sqlx::query_scalar(PREVIOUS_SQL)
                    .bind(&key)
                    .bind(run.branch)
                    .bind(run.finished_at)
                    .bind(run.id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let regressions: Option<i64> = match previous {
                    Some(p) => Some(
                        sqlx::query_scalar(REGRESSIONS.get_or_init(regressions_sql))
                            .bind(run.id)
                            .bind(p)
                            .fetch_one(&mut *conn)
                            .await?,
                    ),
                    None => None,
                };
                sqlx::query(
                    "UPDATE queues SET repo_key = $2, previous_id = $3, regressions = $4 WHERE id = $1",
                )
                .bind(run.id)
                .bind(&key)
                .bind(previous)
                .bind(regressions)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }
        }

        impl History for $backend {
            fn case_results<'a>(&'a self, q: CaseQuery<'a>) -> Fut<'a, Vec<ResultRow>> {
                Box::pin(async move {
                    static SQL: [OnceLock<String>; 2] = [const { OnceLock::new() }; 2];
                    let sql = SQL[usize::from(q.branch.is_some())]
                        .get_or_init(|| case_results_sql(q.branch.is_some()));
                    let mut query = sqlx::query(sql)
                        .bind(q.repo_key)
                        .bind(q.scenario)
                        .bind(q.case_key)
                        .bind(i64::from(q.limit));
                    if let Some(branch) = q.branch {
                        query = query.bind(branch);
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    all(&rows, result_row)
                })
            }

            fn strips<'a>(&'a self, q: StripQuery<'a>) -> Fut<'a, Vec<StripRow>> {
                Box::pin(async move {
                    static SQL: OnceLock<String> = OnceLock::new();
                    let rows = sqlx::query(SQL.get_or_init(|| strips_sql($dialect)))
                        .bind(q.repo_key)
                        .bind(q.branch)
                        .bind(q.until.0)
                        .bind(q.until.1)
                        .bind(i64::from(q.limit))
                        .bind(q.queue_id)
                        .bind(i64::from(q.cases))
                        .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
                        .fetch_all(&self.pool)
                        .await?;
                    all(&rows, strip_row)
                })
            }

            fn case_outcomes(&self, queue_id: i64) -> Fut<'_, Vec<testarena_core::history::Compared>> {
                Box::pin(async move {
                    let rows = sqlx::query(OUTCOMES_SQL)
                        .bind(queue_id)
                        .fetch_all(&self.pool)
                        .await?;
                    all(&rows, outcome_row)
                })
            }

            fn previous_run<'a>(
                &'a self,
                repo_key: &'a str,
                branch: &'a str,
                before: Option<(i64, i64)>,
                not: i64,
            ) -> Fut<'a, Option<i64>> {
                Box::pin(async move {
                    let found = match before {
                        Some((at, id)) => {
                            sqlx::query_scalar(PREVIOUS_SQL)
                                .bind(repo_key)
                                .bind(branch)
                                .bind(at)
                                .bind(id)
                                .fetch_optional(&self.pool)
                                .await?
                        }
                        None => {
                            sqlx::query_scalar(LATEST_SQL)
                                .bind(repo_key)
                                .bind(branch)
                                .bind(not)
                                .fetch_optional(&self.pool)
                                .await?
                        }
                    };
                    Ok(found)
                })
            }
        }
    };
}
pub(crate) use history_impl;
