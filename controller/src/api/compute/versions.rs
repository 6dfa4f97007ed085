//! Compute version discovery without a token: `GET /compute/` lists v2.0 and v2.1,
//! `GET /compute/v2.1/` describes v2.1 with the microversion range.

use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::api::extract::BaseUrl;
use crate::app::AppState;
use crate::microversion::{MAX, MIN};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/compute", get(root))
        .route("/compute/", get(root))
        .route("/compute/v2.1", get(v21))
        .route("/compute/v2.1/", get(v21))
}

fn v21_entry(base: &str, full: bool) -> Value {
    let mut v = json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": MAX.to_string(),
        "min_version": MIN.to_string(),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}],
    });
    if full {
        v["links"] = json!([
            {"rel": "self", "href": format!("{base}/compute/v2.1/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        ]);
        v["media-types"] = json!([{
            "base": "application/json",
            "type": "application/vnd.openstack.compute+json;version=2.1"
        }]);
    }
    v
}

async fn root(BaseUrl(base): BaseUrl) -> axum::Json<Value> {
    axum::Json(json!({"versions": [
        {
            "id": "v2.0",
            "status": "SUPPORTED",
            "version": "",
            "min_version": "",
            "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": format!("{base}/compute/v2/")}],
        },
        v21_entry(&base, false)
    ]}))
}

async fn v21(BaseUrl(base): BaseUrl) -> axum::Json<Value> {
    axum::Json(json!({"version": v21_entry(&base, true)}))
}
