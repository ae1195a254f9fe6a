//! Writing events: in the caller's transaction, so an event exists if and only if the state change it
//! announces committed. One delivery row per enabled endpoint of the tenant that wants the type.

use serde_json::{json, Value};
use moetune_types::JobId;
use sqlx::PgConnection;

use super::EventType;

/// Records an event about `job_id` with OpenAI's payload shape (`{id, object: "event", created_at,
/// type, data: {id, …}}`): `data` is the job id plus the fields of `extra`. Returns the event id.
/// Routing-profile jobs are not fine-tuning jobs: nothing is recorded for them.
pub async fn publish(conn: &mut PgConnection, job_id: &JobId, kind: EventType, extra: Value) -> sqlx::Result<String> {
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let mut data = json!({ "id": job_id });
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    let payload = json!({
        "id": id,
        "object": "event",
        "created_at": chrono::Utc::now().timestamp(),
        "type": kind.as_str(),
        "data": data,
    });
    sqlx::query(
        "WITH event AS (
            INSERT INTO webhook_events (id, tenant_id, type, payload)
            SELECT $1, tenant_id, $2, $3 FROM jobs WHERE id = $4 AND method_type <> 'routing_profile'
            RETURNING tenant_id)
         INSERT INTO webhook_deliveries (event_id, endpoint_id)
         SELECT $1, w.id FROM webhook_endpoints w JOIN event ON w.tenant_id = event.tenant_id
         WHERE NOT w.disabled AND (cardinality(w.event_types) = 0 OR $2 = ANY (w.event_types))",
    )
    .bind(&id)
    .bind(kind.as_str())
    .bind(&payload)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(id)
}
