//! Shared helpers for the API tests: a real identity service over a redb file in a
//! temp dir, driven through `app()` with `oneshot` (no socket).
#![allow(dead_code, clippy::unwrap_used)]

pub mod servers;

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use kiln_controller::identity::catalog::Catalog;
use kiln_controller::identity::compliance::{Preset, SecurityCompliance};
use kiln_controller::identity::password::HashCost;
use kiln_controller::identity::{Identity, IdentitySettings};
use kiln_controller::store::RedbStore;
use kiln_controller::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

pub const ADMIN_PW: &str = "AdminPasswordForTests1";
pub const BASE: &str = "http://kiln.test";

pub struct Cloud {
    pub dir: tempfile::TempDir,
    pub app: Router,
    pub state: AppState,
}

pub fn open_state(dir: &Path, compliance: SecurityCompliance) -> AppState {
    let store = RedbStore::open(&dir.join("state.redb")).unwrap();
    let settings = IdentitySettings {
        compliance,
        hash_cost: HashCost::minimal(),
        token_ttl_secs: 3600,
    };
    let identity = Arc::new(Identity::open(Arc::new(store), settings).unwrap());
    identity.bootstrap(ADMIN_PW).unwrap();
    AppState::new(identity, Catalog::new(BASE), dir).unwrap()
}

impl Cloud {
    pub fn new(preset: Preset) -> Self {
        Self::with(preset.settings())
    }

    pub fn with(compliance: SecurityCompliance) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = open_state(dir.path(), compliance);
        Cloud {
            app: app(state.clone()),
            state,
            dir,
        }
    }

    /// One request; the body is parsed as JSON when there is one (else `Null`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        self.raw(method, path, token, body.map(|b| b.to_string()), &[])
            .await
    }

    /// One JSON request at a service's microversion (`OpenStack-API-Version:
    /// <service> <version>`, e.g. "compute 2.58").
    pub async fn at_version(
        &self,
        version: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self
            .raw(
                method,
                path,
                Some(token),
                body.map(|b| b.to_string()),
                &[("OpenStack-API-Version", version)],
            )
            .await;
        (s, v)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, Some(token), None).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::POST, path, Some(token), Some(body)).await;
        (s, v)
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self
            .call(Method::PATCH, path, Some(token), Some(body))
            .await;
        (s, v)
    }

    pub async fn put(&self, path: &str, token: &str) -> StatusCode {
        self.call(Method::PUT, path, Some(token), None).await.0
    }

    pub async fn delete(&self, path: &str, token: &str) -> StatusCode {
        self.call(Method::DELETE, path, Some(token), None).await.0
    }

    pub async fn head(&self, path: &str, token: &str) -> StatusCode {
        self.call(Method::HEAD, path, Some(token), None).await.0
    }

    /// POST /v3/auth/tokens; returns (status, token, body).
    pub async fn auth(&self, body: Value) -> (StatusCode, Option<String>, Value) {
        let (s, h, v) = self
            .call(Method::POST, "/v3/auth/tokens", None, Some(body))
            .await;
        let token = h
            .get("x-subject-token")
            .map(|t| t.to_str().unwrap().to_string());
        (s, token, v)
    }

    /// A project-scoped (or unscoped if `project` is None) password token, by names
    /// in the Default domain; panics unless 201.
    pub async fn login(&self, user: &str, password: &str, project: Option<&str>) -> String {
        let (s, t, v) = self.auth(password_auth(user, password, project)).await;
        assert_eq!(s, StatusCode::CREATED, "login {user}: {v}");
        t.unwrap()
    }

    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PW, Some("admin")).await
    }

    /// Creates a project; returns its id.
    pub async fn project(&self, admin: &str, name: &str) -> String {
        let (s, v) = self
            .post("/v3/projects", admin, json!({"project": {"name": name}}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["project"]["id"].as_str().unwrap().to_string()
    }

    /// Creates a user; returns its id.
    pub async fn user(&self, admin: &str, name: &str, password: &str) -> String {
        let (s, v) = self
            .post(
                "/v3/users",
                admin,
                json!({"user": {"name": name, "password": password, "domain_id": "default"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["user"]["id"].as_str().unwrap().to_string()
    }

    pub async fn role_id(&self, admin: &str, name: &str) -> String {
        let (s, v) = self.get(&format!("/v3/roles?name={name}"), admin).await;
        assert_eq!(s, StatusCode::OK);
        v["roles"][0]["id"].as_str().unwrap().to_string()
    }

    /// Grants `role` (by name) to `user` on `project`.
    pub async fn grant(&self, admin: &str, project: &str, user: &str, role: &str) {
        let rid = self.role_id(admin, role).await;
        let s = self
            .put(
                &format!("/v3/projects/{project}/users/{user}/roles/{rid}"),
                admin,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
}

pub fn password_auth(user: &str, password: &str, project: Option<&str>) -> Value {
    let mut body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}}}});
    if let Some(p) = project {
        body["auth"]["scope"] = json!({"project": {"name": p, "domain": {"name": "Default"}}});
    }
    body
}

/// Asserts the OpenStack error shape with `code`.
pub fn assert_error(status: StatusCode, body: &Value, code: u16) {
    assert_eq!(status.as_u16(), code, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["title"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}
