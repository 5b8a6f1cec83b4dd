//! PostgreSQL: the tasks and cases of a set of queues, read on one connection.

use super::all;
use crate::rows::{
    assemble, case_row, status_count, task_row, CaseCaps, QueueDetail, QueueRow, CASE_COLUMNS,
    TASK_COLUMNS,
};
use crate::Result;

/// Tasks and cases of `queues`: every case, or with `caps` only the first ones (and the
/// counts of all).
pub(super) async fn details_on(
    conn: &mut sqlx::PgConnection,
    queues: Vec<QueueRow>,
    caps: Option<CaseCaps>,
) -> Result<Vec<QueueDetail>> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    // One statement text whatever the ids (bound as an array), so the prepared statement is
    // reused; one connection for every read.
    let ids: Vec<i64> = queues.iter().map(|q| q.id).collect();
    let tasks = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks \
         WHERE queue_id = ANY($1) ORDER BY queue_id, position"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let (cases, counts) = match caps {
        None => {
            let cases = sqlx::query(&format!(
                "SELECT {CASE_COLUMNS} FROM cases \
                 WHERE queue_id = ANY($1) ORDER BY task_id, position"
            ))
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
            (cases, None)
        }
        Some(caps) => {
            let counts = sqlx::query(
                "SELECT task_id, status, COUNT(*) AS n FROM cases \
                 WHERE queue_id = ANY($1) GROUP BY task_id, status",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
            (
                first_cases(conn, &ids, caps).await?,
                Some(all(&counts, status_count)?),
            )
        }
    };
    Ok(assemble(
        queues,
        all(&tasks, task_row)?,
        all(&cases, case_row)?,
        counts,
    ))
}

/// The first `per_task` cases of each task of the queues `ids`, then the first
/// `per_queue` of those in task order.
async fn first_cases(
    conn: &mut sqlx::PgConnection,
    ids: &[i64],
    caps: CaseCaps,
) -> Result<Vec<sqlx::postgres::PgRow>> {
    Ok(sqlx::query(&format!(
        "SELECT {CASE_COLUMNS} FROM ( \
           SELECT f.*, ROW_NUMBER() OVER (PARTITION BY f.queue_id ORDER BY f.task_position, f.position) AS qn FROM ( \
             SELECT c.id, c.task_id, c.queue_id, c.position, c.case_key, c.name, c.status, c.duration_ms, c.message, c.log_from, c.log_to, \
                    t.position AS task_position, \
                    ROW_NUMBER() OVER (PARTITION BY c.task_id ORDER BY c.position) AS tn \
             FROM cases c JOIN tasks t ON t.id = c.task_id \
             WHERE c.queue_id = ANY($1)) f \
           WHERE f.tn <= $2) g \
         WHERE qn <= $3 ORDER BY task_id, position"
    ))
    .bind(ids)
    .bind(i64::from(caps.per_task))
    .bind(i64::from(caps.per_queue))
    .fetch_all(&mut *conn)
    .await?)
}
