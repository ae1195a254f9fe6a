//! The OpenAPI contract, generated from the route table and the handlers' annotations and checked in as
//! openapi/openapi.json.

use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "moetune", description = "Fine-tuning as a service for Mixture-of-Experts models: SFT then QAT to FP4."),
    components(schemas(crate::files::Order)),
    modifiers(&RouteTable, &BearerAuth, &CommonResponses, &NoObjectDefaults, &UniqueOperationIds)
)]
pub struct ApiDoc;

/// The operations: those of the route table that registers the handlers (`super::V1Paths`), so the
/// spec documents exactly what is served. First among the modifiers, which act on these operations.
struct RouteTable;

impl Modify for RouteTable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.merge(super::V1Paths::openapi());
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT or mtk- API key").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Responses every route of a kind can give, added in one place so no annotation can miss them:
/// 401/403/429 on authenticated routes; on every POST the `Idempotency-Key` header with its 409s, and 400 for a
/// malformed header or body; 400 for a PATCH's body and wherever a query string is parsed.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (method, operation) in operations(item) {
                add_common(operation, method);
            }
        }
    }
}

/// The operations of a path, with their method (the API uses no other methods).
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [(Method::Get, &mut item.get), (Method::Post, &mut item.post), (Method::Patch, &mut item.patch), (Method::Delete, &mut item.delete)]
        .into_iter()
        .filter_map(|(method, operation)| Some((method, operation.as_mut()?)))
}

#[derive(PartialEq)]
enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

fn add_common(operation: &mut Operation, method: Method) {
    let is_post = method == Method::Post;
    let mut add = |status: &str, description: &str| {
        let error = Content::new(Some(Ref::from_schema_name("ErrorBody")));
        let response: Response = ResponseBuilder::new().description(description).content("application/json", error).build();
        operation.responses.responses.entry(status.to_string()).or_insert(RefOr::T(response));
    };
    if operation.security.is_some() {
        add("401", "Missing, malformed, expired or revoked credential (`invalid_api_key`)");
        add("403", "The credential lacks the scope this route needs (`insufficient_scope`)");
        add("429", "Too many requests from the tenant (`rate_limited`, with `Retry-After` in seconds), or a quota reached (`quota_exceeded`)");
    }
    let has_query = operation.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Query);
    if is_post || method == Method::Patch || has_query {
        add("400", "Invalid request: the error names the parameter and what to fix");
    }
    if is_post {
        add("409", "Conflict; with `Idempotency-Key`: the key was used for a different request (`idempotency_key_reused`) or that request is still running (`idempotency_key_in_use`)");
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some("1–255 visible ASCII characters; a retry with the same key and request gets the stored response (`idempotent-replayed: true`)"))
            .schema(Some(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String).min_length(Some(1)).max_length(Some(255))))
            .build();
        operation.parameters.get_or_insert_with(Vec::new).push(header);
    }
}

/// Drops the `default` of properties whose schema is another object (`lora`, `qat`, `monitor`, … of
/// `MoeSftQatOptions`): each field of that object documents its own default, and client generators
/// (openapi-python-client among them) cannot represent an object-valued default.
struct NoObjectDefaults;

impl Modify for NoObjectDefaults {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::Schema;
        let Some(components) = openapi.components.as_mut() else { return };
        for schema in components.schemas.values_mut() {
            let RefOr::T(Schema::Object(object)) = schema else { continue };
            for property in object.properties.values_mut() {
                match property {
                    RefOr::T(Schema::OneOf(one_of)) => one_of.default = None,
                    RefOr::T(Schema::AllOf(all_of)) => all_of.default = None,
                    _ => {}
                }
            }
        }
    }
}

/// Operation ids must be unique across the spec (generated clients name their methods after them),
/// while handlers are named per module (`files::list`, `jobs::list`): prefix each with its tag.
struct UniqueOperationIds;

impl Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for (_, operation) in operations(item) {
                let tag = operation.tags.iter().flatten().next().cloned().unwrap_or_default();
                if let Some(id) = operation.operation_id.as_mut() {
                    if !id.starts_with(&tag) {
                        *id = format!("{tag}_{id}");
                    }
                }
            }
        }
    }
}

impl ApiDoc {
    /// The spec as pretty JSON with a trailing newline, exactly as checked in.
    pub fn json() -> String {
        let mut json = ApiDoc::openapi().to_pretty_json().expect("spec serializes");
        json.push('\n');
        json
    }
}
