//! The simulator's own control API: `GET/PUT /sim/faults` and `GET /sim/ledger`.
//! PUT takes a JSON merge patch (RFC 7386) over the current faults, so one knob can be
//! turned without restating the others; `null` puts a knob back to the reference default.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::faults::Faults;
use crate::state::Sim;

pub(crate) fn router() -> Router<Arc<Sim>> {
    Router::new().route("/sim/faults", get(get_faults).put(put_faults)).route("/sim/ledger", get(ledger))
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Json<Faults> {
    Json(sim.faults())
}

async fn put_faults(
    State(sim): State<Arc<Sim>>,
    patch: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    let Ok(Json(patch)) = patch else {
        return bad("the body must be a JSON object (a merge patch of the faults)".into());
    };
    if !patch.is_object() {
        return bad("the body must be a JSON object (a merge patch of the faults)".into());
    }
    let mut current = serde_json::to_value(sim.faults()).expect("faults serialise");
    merge_patch(&mut current, &patch);
    let faults: Faults = match serde_json::from_value(current) {
        Ok(faults) => faults,
        Err(e) => return bad(e.to_string()),
    };
    match sim.set_faults(faults) {
        Ok(()) => Json(faults).into_response(),
        Err(msg) => bad(msg),
    }
}

async fn ledger(State(sim): State<Arc<Sim>>) -> Response {
    Json(sim.ledger().view()).into_response()
}

fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_changes_only_what_it_names_and_null_removes() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": 4});
        merge_patch(&mut target, &json!({"b": {"c": 9}, "e": null, "f": "new"}));
        assert_eq!(target, json!({"a": 1, "b": {"c": 9, "d": 3}, "f": "new"}));
    }
}
