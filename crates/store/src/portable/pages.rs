//! The portable SQL of the `Pages` side of a backend: the API's answers built by the database
//! (`crate::page`).

/// The `Pages` methods of a backend, written once. `$dialect` is the backend's
/// `crate::dialect::Dialect`; `$ids` turns the queue ids of a request into the value the dialect
/// binds for them (PostgreSQL: an array; SQLite: a JSON array as text).
macro_rules! pages_impl {
    ($backend:ident, $dialect:expr, $ids:path) => {
        use super::all;
        use crate::backend::{Body, Fut, Page, Pages, Stamp, Version};
        use crate::page::{
            body, ids_filter, list_filter, select, stamp, stamp_of, stamps, stamps_of, version,
            version_of,
        };
        use crate::rows::CaseCaps;
        use std::sync::OnceLock;

        /// The statement that builds the JSON of queues by id, written once.
        fn bodies_sql() -> &'static str {
            static SQL: OnceLock<String> = OnceLock::new();
            SQL.get_or_init(|| select($dialect, ids_filter($dialect)))
        }

        /// The stamp of one queue, written once.
        fn one_sql() -> &'static str {
            static SQL: OnceLock<String> = OnceLock::new();
            SQL.get_or_init(|| stamp($dialect))
        }

        /// The stamps of a page of the list, with or without a status, a cursor and the "got
        /// worse" filter, written once each.
        fn list_sql(status: bool, before: bool, worse: bool) -> &'static str {
            static SQL: [OnceLock<String>; 8] = [const { OnceLock::new() }; 8];
            SQL[usize::from(worse) * 4 + usize::from(status) * 2 + usize::from(before)]
                .get_or_init(|| stamps($dialect, &list_filter(status, before, worse)))
        }

        /// The statement that reads the version, written once.
        fn version_sql() -> &'static str {
            static SQL: OnceLock<String> = OnceLock::new();
            SQL.get_or_init(|| version($dialect))
        }

        impl Pages for $backend {
            fn queue_stamp(&self, id: i64, since: i64) -> Fut<'_, Option<Stamp>> {
                Box::pin(async move {
                    let row = self
                        .reads
                        .run(&self.pool, |c| {
                            Box::pin(
                                sqlx::query(one_sql())
                                    .bind(since)
                                    .bind(id)
                                    .fetch_optional(c),
                            )
                        })
                        .await?;
                    row.as_ref().map(stamp_of).transpose()
                })
            }

            fn version(&self, since: i64) -> Fut<'_, Version> {
                Box::pin(async move {
                    let row = self
                        .reads
                        .run(&self.pool, |c| {
                            Box::pin(sqlx::query(version_sql()).bind(since).fetch_one(c))
                        })
                        .await?;
                    version_of(&row)
                })
            }

            fn list_stamps(&self, page: Page) -> Fut<'_, (Vec<Stamp>, Version)> {
                Box::pin(async move {
                    let sql = list_sql(page.status.is_some(), page.before.is_some(), page.worse);
                    let row = self
                        .reads
                        .run(&self.pool, |c| {
                            let mut query = sqlx::query(sql).bind(page.since);
                            if let Some(status) = page.status {
                                query = query.bind(status.as_str());
                            }
                            if let Some(before) = page.before {
                                query = query.bind(before);
                            }
                            Box::pin(query.bind(i64::from(page.limit)).fetch_one(c))
                        })
                        .await?;
                    stamps_of(&row)
                })
            }

            fn bodies<'a>(
                &'a self,
                ids: &'a [i64],
                caps: CaseCaps,
                since: i64,
            ) -> Fut<'a, Vec<(Body, Option<String>)>> {
                Box::pin(async move {
                    let ids = $ids(ids)?;
                    let rows = self
                        .reads
                        .run(&self.pool, |c| {
                            Box::pin(
                                sqlx::query(bodies_sql())
                                    .bind(i64::from(caps.per_task))
                                    .bind(i64::from(caps.per_queue))
                                    .bind(since)
                                    .bind(ids.clone())
                                    .fetch_all(c),
                            )
                        })
                        .await?;
                    all(&rows, body)
                })
            }
        }
    };
}
pub(crate) use pages_impl;
