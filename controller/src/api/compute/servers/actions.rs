//! `POST /servers/{id}/action`: one key names the action; lifecycle actions go to
//! [`Compute::act`](crate::compute::Compute::act) and their node calls are sent
//! after the commit; console output is fetched from the node.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::api::extract::{BaseUrl, Caller, Json, Path};
use crate::app::AppState;
use crate::compute::servers::lifecycle::Verb;
use crate::compute::servers::link::deliver_later;
use crate::compute::Who;
use crate::error::{ApiError, ApiResult};
use crate::microversion::Microversion;
use crate::services::blocking;

use super::views::{self, Call};

fn verb(name: &str, arg: &Value, mv: Microversion) -> ApiResult<Option<Verb>> {
    let field = |k: &str| arg.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Some(match name {
        "os-stop" => Verb::Stop,
        "os-start" => Verb::Start,
        "reboot" => match field("type").map(|t| t.to_ascii_uppercase()).as_deref() {
            Some("SOFT") => Verb::Reboot { hard: false },
            Some("HARD") => Verb::Reboot { hard: true },
            _ => return Err(ApiError::BadRequest(
                "Invalid input for field/attribute type. Value: reboot type must be SOFT or HARD"
                    .into(),
            )),
        },
        "pause" => Verb::Pause,
        "unpause" => Verb::Unpause,
        "suspend" => Verb::Suspend,
        "resume" => Verb::Resume,
        "lock" => Verb::Lock {
            reason: super::rules::lock(arg, mv)?,
        },
        "unlock" => Verb::Unlock,
        "resize" => {
            let Some(f) = arg.get("flavorRef").and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }) else {
                return Err(ApiError::BadRequest(
                    "Invalid input for field/attribute resize. Value: 'flavorRef' is a required property".into(),
                ));
            };
            Verb::Resize { flavor_ref: f }
        }
        "confirmResize" => Verb::ConfirmResize,
        "revertResize" => Verb::RevertResize,
        "shelve" => Verb::Shelve,
        "shelveOffload" => Verb::ShelveOffload,
        "unshelve" => Verb::Unshelve(super::rules::unshelve(arg, mv)?),
        "changePassword" => {
            if field("adminPass").is_none() {
                return Err(ApiError::BadRequest(
                    "Invalid input for field/attribute changePassword. Value: 'adminPass' is a required property".into(),
                ));
            }
            Verb::ChangePassword
        }
        "forceDelete" => Verb::ForceDelete,
        "restore" => Verb::Restore,
        "os-resetState" => {
            match field("state").as_deref() {
                Some("active") => Verb::ResetState { active: true },
                Some("error") => Verb::ResetState { active: false },
                _ => return Err(ApiError::BadRequest(
                    "Invalid input for field/attribute state. Value: must be 'active' or 'error'"
                        .into(),
                )),
            }
        }
        _ => return Ok(None),
    }))
}

pub async fn action(
    State(state): State<AppState>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    mv: Microversion,
    Path(id): Path<String>,
    Json(body): Json<Map<String, Value>>,
) -> ApiResult<Response> {
    let mut keys = body.iter();
    let (Some((name, arg)), None) = (keys.next(), keys.next()) else {
        return Err(ApiError::BadRequest(
            "There is no such action: the body must name exactly one action".into(),
        ));
    };
    let who = Who::of(&caller);
    if name == "os-getConsoleOutput" {
        return console(state, who, id, arg).await;
    }
    if name == "createImage" || name == "rebuild" {
        let on = On {
            state,
            who,
            id,
            mv,
            base,
        };
        return if name == "rebuild" {
            rebuild(on, arg).await
        } else {
            create_image(on, arg).await
        };
    }
    let Some(verb) = verb(name, arg, mv)? else {
        return Err(ApiError::BadRequest(format!(
            "There is no such action: {name}"
        )));
    };
    let compute = state.services.compute.clone();
    let (_, calls) = blocking(move || compute.act(&who, &id, verb)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn console(state: AppState, who: Who, id: String, arg: &Value) -> ApiResult<Response> {
    let lines = match arg.get("length") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Invalid input for field/attribute length. Value: {v}. {v} is not of type 'integer', 'string'"
                    ))
                })?;
            if n < -1 {
                return Err(ApiError::BadRequest(format!(
                    "Invalid input for field/attribute length. Value: {n}. {n} is less than the minimum of -1"
                )));
            }
            u64::try_from(n).ok()
        }
    };
    let s = state.services.compute.server(&who, &id)?;
    let url = match &s.node {
        Some(node) => state.services.compute.node_url(node)?,
        None => None,
    };
    let Some(url) = url else {
        return Err(ApiError::Conflict(format!("Instance {id} is not ready")));
    };
    let link = state.nodes.clone();
    let output = tokio::task::spawn_blocking(move || link.console(&url, &id, lines))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Conflict(format!("Console output is not available: {e}")))?;
    Ok(axum::Json(json!({"output": output})).into_response())
}

/// The server an action with a versioned answer acts on, and the request's
/// version and base URL.
struct On {
    state: AppState,
    who: Who,
    id: String,
    mv: Microversion,
    base: String,
}

/// `createImage`: 202 with the image's Location; from 2.45 the body
/// `{"image_id"}` and no Location.
async fn create_image(on: On, arg: &Value) -> ApiResult<Response> {
    let On {
        state,
        who,
        id,
        mv,
        base,
    } = on;
    let Some(name) = arg.get("name").and_then(Value::as_str).map(str::to_string) else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute createImage. Value: 'name' is a required property"
                .into(),
        ));
    };
    let metadata = super::parse::metadata(arg.get("metadata"))?;
    let compute = state.services.compute.clone();
    let (image_id, calls) = blocking(move || compute.snapshot(&who, &id, &name, metadata)).await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    if mv.at_least(45) {
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"image_id": image_id})),
        )
            .into_response());
    }
    let mut resp = StatusCode::ACCEPTED.into_response();
    with_location(&mut resp, &format!("{base}/image/v2/images/{image_id}"));
    Ok(resp)
}

fn with_location(resp: &mut Response, href: &str) {
    if let Ok(v) = axum::http::HeaderValue::from_str(href) {
        resp.headers_mut().insert(axum::http::header::LOCATION, v);
    }
}

/// `rebuild`: 202 with the server as Nova's rebuild view shows it (trimmed
/// below 2.75, `key_name` from 2.54, `user_data` from 2.57), `adminPass`, and
/// the server's Location. Description (2.19), key pair (2.54, the caller's;
/// null removes it), user data (2.57, null clears it), trusted certificates
/// (2.63, null clears them; not for volume-backed servers), hostname (2.90)
/// and metadata are applied.
async fn rebuild(on: On, arg: &Value) -> ApiResult<Response> {
    let On {
        state,
        who,
        id,
        mv,
        base,
    } = on;
    let Value::Object(o) = arg else {
        return Err(ApiError::BadRequest(format!(
            "Invalid input for field/attribute rebuild. Value: {arg}. {arg} is not of type 'object'"
        )));
    };
    let Some(image) = o.get("imageRef").and_then(Value::as_str) else {
        return Err(ApiError::BadRequest(
            "Invalid input for field/attribute rebuild. Value: 'imageRef' is a required property"
                .into(),
        ));
    };
    let extra = super::rules::rebuild(o, mv)?;
    let current = state.services.compute.server(&who, &id)?;
    if matches!(extra.trusted_certs, Some(Some(_))) && current.image_ref.is_empty() {
        return Err(ApiError::BadRequest(
            super::rules::TRUSTED_CERTS_VOLUME.into(),
        ));
    }
    // The key pair is the caller's (users own key pairs, projects own servers).
    let key = match &extra.key_name {
        Some(Some(k)) => Some(Some(
            state
                .services
                .compute
                .keypair(&who, k, None)
                .map_err(|_| ApiError::BadRequest("Invalid key_name provided.".into()))?,
        )),
        Some(None) => Some(None),
        None => None,
    };
    let verb = Verb::Rebuild {
        image_ref: Some(image.rsplit('/').next().unwrap_or_default().to_string()),
        name: extra.name.clone(),
    };
    let admin_pass = extra
        .admin_pass
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    let compute = state.services.compute.clone();
    let w2 = who.clone();
    let id2 = id.clone();
    let (s, calls) = blocking(move || {
        let (_, calls) = compute.act(&w2, &id2, verb)?;
        let (s, ()) = compute.modify_server(&w2, &id2, |s| {
            if let Some(d) = extra.description {
                s.description = d;
            }
            if let Some(h) = extra.hostname {
                s.hostname = Some(h);
            }
            if let Some(m) = extra.metadata {
                s.metadata = m;
            }
            if let Some(k) = key {
                s.key_name = k.as_ref().map(|k| k.name.clone());
                s.key_data = k.map(|k| k.public_key);
            }
            if let Some(u) = extra.user_data {
                s.user_data = u;
            }
            if let Some(c) = extra.trusted_certs {
                s.trusted_certs = c;
            }
            Ok(())
        })?;
        Ok((s, calls))
    })
    .await?;
    deliver_later(state.services.compute.clone(), state.nodes.clone(), calls);
    let mut view = views::full(&base, &s, &who, mv, Call::Rebuild);
    if let Value::Object(m) = &mut view {
        m.insert("adminPass".into(), json!(admin_pass));
        if mv.at_least(57) {
            m.insert("user_data".into(), json!(s.user_data));
        }
    }
    let mut resp = (StatusCode::ACCEPTED, axum::Json(json!({"server": view}))).into_response();
    with_location(&mut resp, &format!("{base}/compute/v2.1/servers/{}", s.id));
    Ok(resp)
}
