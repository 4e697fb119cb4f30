//! Structure schemas of model versions (admin keys write them).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::auth::Auth;
use super::problem::Problem;
use super::{AppState, valid_key};
use crate::schema::Schema;

#[utoipa::path(put, path = "/v1/models/{model}/versions/{version}/structures", tag = "models",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$")),
    request_body(content = Object, description = "{\"structures\": [{\"label\": 1, \"code\": \"SCT:10200004\", \"name\": \"liver\", \"tolerance_mm\": 2, \"failure_threshold\": 0.5}], \"unknown_labels\": \"reject\"}"),
    responses((status = 201, description = "created"), (status = 200, description = "replaced"), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
pub async fn put_structures(
    State(app): State<AppState>,
    auth: Auth,
    Path((model, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Schema>), Problem> {
    auth.admin()?;
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    let invalid =
        |detail: String| Problem::bad_request("invalid-schema", "Invalid structure schema", detail);
    let schema: Schema = super::problem::json_object(&body).map_err(invalid)?;
    schema.validate().map_err(|e| invalid(e.to_string()))?;
    let created = app.store.put_schema(&model, &version, &schema).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(schema),
    ))
}

#[utoipa::path(get, path = "/v1/models/{model}/versions/{version}/structures", tag = "models",
    params(("model" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$"), ("version" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*$")),
    responses((status = 200, description = "the schema"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
pub async fn get_structures(
    State(app): State<AppState>,
    _auth: Auth,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<Schema>, Problem> {
    valid_key("model", &model)?;
    valid_key("model_version", &version)?;
    app.store
        .schema(&model, &version)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no structure schema for {model} {version}")))
}
