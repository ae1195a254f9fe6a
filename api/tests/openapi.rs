//! The checked-in contract must match what the code serves. Regenerate with deploy/openapi.

#[test]
fn checked_in_openapi_json_is_current() {
    let checked_in = include_str!("../../openapi/openapi.json");
    let generated = moetune_api::openapi::ApiDoc::json();
    assert!(
        checked_in == generated,
        "openapi/openapi.json is stale: run deploy/openapi and commit the result"
    );
}
