//! The model registry: which base models jobs may fine-tune. `moetune/tiny-mixtral` is built in; an
//! admin registers others — Hugging Face model directories already in S3 — together with the output of
//! `moetune-runner inspect` on them, which the API checks against the stored `config.json`.

use moetune_types::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use moetune_types::{JobRequirements, MemoryModel, S3Location, TrainingSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::unix_time::UnixTime;
use crate::AppState;

/// OpenAI's model object, plus where the weights are and what `inspect` found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    pub created: UnixTime,
    pub owned_by: String,
    /// `builtin` or `s3`.
    pub source: String,
    /// `s3://bucket/prefix/` for registered models.
    pub uri: Option<String>,
    /// `architectures[0]` of the model's config.json, e.g. `MixtralForCausalLM`.
    pub architecture: String,
    /// `moetune-runner inspect` output: layers, experts, parameter counts, memory estimates.
    #[schema(value_type = Option<Object>)]
    pub inspect: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterModelRequest {
    /// `owner/name`: letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// `s3://bucket/prefix` of a directory with config.json, *.safetensors and tokenizer.json.
    pub uri: String,
    /// The output of `moetune-runner inspect DIR` on the same directory.
    #[schema(value_type = Object)]
    pub inspect: Value,
}

/// The MoE architectures the runner implements.
pub const ARCHITECTURES: [&str; 5] = ["MixtralForCausalLM", "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "OlmoeForCausalLM", "GptOssForCausalLM"];

type Row = (String, String, String, Option<String>, Option<String>, String, Option<Value>, chrono::DateTime<chrono::Utc>);
const COLUMNS: &str = "id, owned_by, source, s3_bucket, s3_prefix, architecture, inspect, created_at";

fn object((id, owned_by, source, bucket, prefix, architecture, inspect, created): Row) -> ModelObject {
    let uri = bucket.zip(prefix).map(|(b, p)| format!("s3://{b}/{p}/"));
    ModelObject { id, object: "model", created: created.into(), owned_by, source, uri, architecture, inspect }
}

pub async fn list(state: &AppState) -> Result<Vec<ModelObject>, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM models ORDER BY id")).fetch_all(&state.db).await?;
    Ok(rows.into_iter().map(object).collect())
}

pub async fn get(state: &AppState, id: &str) -> Result<ModelObject, ApiError> {
    let row: Option<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM models WHERE id = $1")).bind(id).fetch_optional(&state.db).await?;
    row.map(object).ok_or_else(|| ApiError::not_found("model", id))
}

/// What a job learns from the registry about its base model.
pub struct RequiredModel {
    /// What the job needs from a runner.
    pub requirements: JobRequirements,
    /// Where a registered model's weights are (none for a built-in one).
    pub location: Option<S3Location>,
    /// `inspect`'s memory model; none for a model registered before it had one.
    pub memory_model: Option<MemoryModel>,
}

/// The registry rows jobs have asked for, parsed, by id. A model row never changes once it exists:
/// registration inserts with `ON CONFLICT DO NOTHING`, and nothing updates or deletes models. So a row
/// read once is kept for the life of the process, and every API instance's copy stays true. Unknown
/// ids are not cached: a model another instance registers is seen at once.
#[derive(Default)]
pub struct ModelCache(RwLock<HashMap<String, Arc<RegistryEntry>>>);

/// What job creation needs of a registry row.
struct RegistryEntry {
    /// `architectures[0]` of the model's config.json.
    architecture: String,
    /// `inspect`'s `hidden_size` and `expert_intermediate_size`, when it recorded them.
    expert_dims: Option<(i64, i64)>,
    /// A model registered before inspect reported its memory model has none.
    memory_model: Option<MemoryModel>,
    location: Option<S3Location>,
}

impl ModelCache {
    async fn entry(&self, db: &sqlx::PgPool, id: &str) -> Result<Option<Arc<RegistryEntry>>, ApiError> {
        if let Some(entry) = self.0.read().expect("model cache lock").get(id) {
            return Ok(Some(entry.clone()));
        }
        let row: Option<(String, Option<Value>, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT architecture, inspect, s3_bucket, s3_prefix FROM models WHERE id = $1").bind(id).fetch_optional(db).await?;
        let Some((architecture, inspect, bucket, prefix)) = row else { return Ok(None) };
        let field = |name: &str| inspect.as_ref().and_then(|i| i.get(name)).and_then(Value::as_i64);
        let entry = Arc::new(RegistryEntry {
            architecture,
            expert_dims: field("hidden_size").zip(field("expert_intermediate_size")),
            memory_model: inspect.as_ref().and_then(|i| i.get("memory_model")).and_then(|m| serde_json::from_value(m.clone()).ok()),
            location: bucket.zip(prefix).map(|(bucket, prefix)| S3Location { bucket, prefix }),
        });
        self.0.write().expect("model cache lock").insert(id.to_string(), entry.clone());
        Ok(Some(entry))
    }
}

/// 400 unless the spec's model is registered and its experts can be packed in the job's QAT format
/// (checked on the model's recorded `inspect` output, so a mismatch is refused now rather than failing
/// at QAT). Fills in the QAT format the model's architecture defaults to when the spec names none.
/// Returns what the job needs from a runner, estimated from the same `inspect` output.
pub async fn require(state: &AppState, spec: &mut TrainingSpec) -> Result<RequiredModel, ApiError> {
    let id = spec.model.as_str();
    let Some(entry) = state.models.entry(&state.db, id).await? else {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM models ORDER BY id").fetch_all(&state.db).await?;
        return Err(ApiError::invalid(ErrorCode::ModelNotFound, "model", format!("Model '{id}' is not available for fine-tuning. Available: {}.", ids.join(", "))));
    };
    spec.moe.resolve_qat_format(&entry.architecture);
    // A routing profile trains nothing: no QAT format to fit.
    if let Some((hidden, intermediate)) = entry.expert_dims.filter(|_| spec.routing_profile.is_none()) {
        spec.moe
            .qat_format()
            .check_expert_dims(id, hidden, intermediate)
            .map_err(|message| ApiError::invalid(ErrorCode::ModelIncompatibleWithFormat, "method.moe_sft_qat.qat.format", message))?;
    }
    if spec.moe.world_size == moetune_types::world_size::AUTO {
        spec.moe.world_size = choose_world_size(state, spec, entry.memory_model.as_ref()).await?;
    }
    // Expert indices are checked against the model's shape now, not when a runner builds the adapters.
    if let Some(m) = &entry.memory_model {
        spec.moe
            .lora
            .validate_for_model(m.num_hidden_layers as usize, m.num_experts as usize)
            .map_err(|e| ApiError::invalid(ErrorCode::InvalidMethod, &e.param, e.message))?;
        let (experts, ranks) = (m.num_experts, i64::from(spec.moe.world_size));
        if spec.moe.expert_parallel && experts % ranks != 0 {
            return Err(ApiError::invalid(
                ErrorCode::InvalidMethod,
                "method.moe_sft_qat.world_size",
                format!("`expert_parallel` splits {id}'s {experts} experts per layer across the ranks: `world_size` must divide {experts} (it is {ranks})."),
            ));
        }
    }
    // A model with no memory model has no estimate: it fits any runner.
    Ok(RequiredModel {
        requirements: entry.memory_model.as_ref().map_or(JobRequirements { device: spec.moe.device, world_size: spec.moe.world_size, ..Default::default() }, |m| m.requirements(spec)),
        location: entry.location.clone(),
        memory_model: entry.memory_model.clone(),
    })
}

/// The ranks for a job that asked for `world_size: "auto"`, from the model's memory model and the
/// registered runners that are not lost; without a memory model, the fewest the options allow.
async fn choose_world_size(state: &AppState, spec: &TrainingSpec, model: Option<&MemoryModel>) -> Result<u32, ApiError> {
    use moetune_types::gang_size;
    let refused = |message: String| ApiError::invalid(ErrorCode::InvalidMethod, "method.moe_sft_qat.world_size", message);
    let Some(model) = model else {
        return gang_size::world_size_candidates(&spec.moe, None).first().copied().ok_or_else(|| refused(gang_size::no_candidate(&spec.moe)));
    };
    let views = state.queue.runners().await?;
    model.choose_world_size(spec, &moetune_domain::registry::live_runners(&views)).map_err(refused)
}

fn parse_uri(uri: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::invalid(ErrorCode::InvalidUri, "uri", format!("`uri` must look like s3://bucket/prefix, got '{uri}'."));
    let rest = uri.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, prefix) = rest.split_once('/').ok_or_else(bad)?;
    let prefix = prefix.trim_end_matches('/');
    if bucket.is_empty() || prefix.is_empty() {
        return Err(bad());
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// Registers a model after checking that its files are in S3 and `inspect` describes that config.
pub async fn register(state: &AppState, request: &RegisterModelRequest) -> Result<ModelObject, ApiError> {
    let valid_id = request.id.split_once('/').is_some_and(|(owner, name)| {
        let ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        ok(owner) && ok(name)
    });
    if !valid_id {
        return Err(ApiError::invalid(ErrorCode::InvalidModelId, "id", "`id` must be `owner/name` (letters, digits, '-', '_', '.'; up to 64 each)."));
    }
    let (bucket, prefix) = parse_uri(&request.uri)?;
    let listed = state.s3.list_objects_v2().bucket(&bucket).prefix(format!("{prefix}/")).send().await.map_err(|e| {
        ApiError::invalid(ErrorCode::ModelFilesUnreadable, "uri", format!("Cannot list {}: {}", request.uri, aws_sdk_s3::error::DisplayErrorContext(e)))
    })?;
    let names: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()?.strip_prefix(&format!("{prefix}/"))).collect();
    let missing: Vec<&str> = ["config.json", "tokenizer.json"].into_iter().filter(|f| !names.contains(f)).collect();
    if !missing.is_empty() || !names.iter().any(|n| n.ends_with(".safetensors")) {
        return Err(ApiError::invalid(
            ErrorCode::ModelFilesMissing,
            "uri",
            format!("{} must hold config.json, tokenizer.json and *.safetensors; found: {}.", request.uri, names.join(", ")),
        ));
    }
    let config = read_config(state, &bucket, &prefix).await?;
    let architecture = config["architectures"][0].as_str().unwrap_or_default().to_string();
    if !ARCHITECTURES.contains(&architecture.as_str()) {
        return Err(ApiError::invalid(ErrorCode::UnsupportedArchitecture, "uri", format!("config.json names architecture '{architecture}'; supported: {}.", ARCHITECTURES.join(", "))));
    }
    check_inspect(&request.inspect, &architecture, &config)?;
    let inserted = sqlx::query("INSERT INTO models (id, owned_by, source, s3_bucket, s3_prefix, architecture, inspect) VALUES ($1, $2, 's3', $3, $4, $5, $6) ON CONFLICT DO NOTHING")
        .bind(&request.id)
        .bind(request.id.split('/').next().unwrap_or_default())
        .bind(&bucket)
        .bind(&prefix)
        .bind(&architecture)
        .bind(&request.inspect)
        .execute(&state.db)
        .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::new(ErrorCode::ModelExists, format!("Model '{}' is already registered.", request.id)));
    }
    get(state, &request.id).await
}

async fn read_config(state: &AppState, bucket: &str, prefix: &str) -> Result<Value, ApiError> {
    let object = state.s3.get_object().bucket(bucket).key(format!("{prefix}/config.json")).send().await.map_err(ApiError::internal)?;
    let bytes = object.body.collect().await.map_err(ApiError::internal)?.into_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(ErrorCode::InvalidModelConfig, "uri", format!("config.json is not valid JSON: {e}")))
}

/// `inspect` must be the runner's report on this very config: same architecture and shape.
fn check_inspect(inspect: &Value, architecture: &str, config: &Value) -> Result<(), ApiError> {
    let mismatch = |what: &str| ApiError::invalid(ErrorCode::InspectMismatch, "inspect", format!("`inspect.{what}` does not match the model's config.json; run `moetune-runner inspect` on this directory and send its output."));
    if inspect["architecture"].as_str() != Some(architecture) {
        return Err(mismatch("architecture"));
    }
    for (field, config_field) in [("num_hidden_layers", "num_hidden_layers"), ("hidden_size", "hidden_size"), ("vocab_size", "vocab_size")] {
        if inspect[field].as_i64().is_none() || inspect[field] != config[config_field] {
            return Err(mismatch(field));
        }
    }
    if !inspect["parameters"]["total"].as_i64().is_some_and(|p| p > 0) {
        return Err(mismatch("parameters.total"));
    }
    Ok(())
}
