//! Cursor pagination shared by the list endpoints: `after` is the id of the last item of the previous
//! page, and pages are ordered by `(created_at, id)`.

use moetune_types::TenantId;
use moetune_types::ErrorCode;
use sqlx::{PgPool, Postgres, QueryBuilder};

use crate::error::ApiError;

/// The `(created_at, id)` position of the `after` id.
pub type Cursor = (chrono::DateTime<chrono::Utc>, String);

/// Resolves `after` among the tenant's rows of `table` (`files` or `jobs`); an id that is not one of
/// them is a 400 naming `after`.
pub async fn cursor(db: &PgPool, table: &'static str, tenant: TenantId, after: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    let Some(id) = after else { return Ok(None) };
    let found: Option<Cursor> = sqlx::query_as(&format!("SELECT created_at, id FROM {table} WHERE id = $1 AND tenant_id = $2"))
        .bind(id)
        .bind(tenant)
        .fetch_optional(db)
        .await?;
    found
        .map(Some)
        .ok_or_else(|| ApiError::invalid(ErrorCode::InvalidCursor, "after", format!("`after` must be the id of one of your {table}; '{id}' is not.")))
}

/// A page from rows fetched with `LIMIT limit + 1`: the first `limit`, and whether there were more.
pub fn page<T>(mut rows: Vec<T>, limit: i64) -> (Vec<T>, bool) {
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    (rows, has_more)
}

/// Ends a list query: the cursor condition when there is one, then the order and `LIMIT limit + 1`.
/// Conditions are written only when they apply: an `$n IS NULL OR …` predicate would make the generic
/// plan Postgres switches to after a statement's fifth run read and sort every row of the tenant,
/// where `WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT n` reads n rows off the index.
/// The limit is written into the text, not bound: with `LIMIT $n` the generic plan's cost estimate
/// (a guessed row count) stays above the custom plans', so Postgres planned the statement afresh on
/// every run; with the number in the text it keeps the generic plan. That is one statement text per
/// limit a client asks for; `limit` is an integer the routes bound, so only digits are written.
pub fn finish_page(query: &mut QueryBuilder<'_, Postgres>, cursor: Option<Cursor>, descending: bool, limit: i64) {
    let (comparison, direction) = if descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some((created_at, id)) = cursor {
        query.push(format!(" AND (created_at, id) {comparison} (")).push_bind(created_at).push(", ").push_bind(id).push(")");
    }
    query.push(format!(" ORDER BY created_at {direction}, id {direction} LIMIT {}", limit + 1));
}
