//! The OpenAPI contract, generated from the handlers' annotations and checked in as openapi/openapi.json.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "moetune", description = "Fine-tuning as a service for Mixture-of-Experts models: SFT then QAT to FP4."),
    paths(
        crate::routes::files::upload,
        crate::routes::files::retrieve,
        crate::routes::files::list,
        crate::routes::files::delete,
        crate::routes::files::content,
        crate::routes::uploads::create,
        crate::routes::uploads::retrieve,
        crate::routes::uploads::add_part,
        crate::routes::uploads::complete,
        crate::routes::uploads::cancel,
        crate::routes::jobs::create,
        crate::routes::jobs::retrieve,
        crate::routes::jobs::list,
        crate::routes::jobs::cancel,
        crate::routes::jobs::events,
        crate::routes::jobs::list_artifacts,
        crate::routes::jobs::list_checkpoints,
        crate::routes::jobs::download_artifact,
        crate::routes::models::list,
        crate::routes::models::retrieve,
        crate::routes::models::register,
        crate::routes::admin::upsert_tenant,
        crate::routes::admin::get_tenant,
        crate::routes::admin::create_api_key,
        crate::routes::admin::list_api_keys,
        crate::routes::admin::revoke_api_key,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT or mtk- API key").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
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
