//! How identity records look on the wire (Keystone v3 shapes), with `links`.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::clock::rfc3339_micros;
use crate::identity::assignments::Listed;
use crate::identity::model::{
    Actor, AppCredRef, AppCredential, Domain, Group, Project, Role, RoleRef, Scope, Target,
    TokenRecord, User,
};
use crate::identity::users::password_expires_at;

fn opt_time(t: Option<i64>) -> Value {
    t.map(|t| Value::String(rfc3339_micros(t)))
        .unwrap_or(Value::Null)
}

/// `{key: items, links: {self, previous, next}}`.
pub fn collection(base: &str, path: &str, key: &str, items: Vec<Value>) -> Value {
    json!({
        key: items,
        "links": {"self": format!("{base}{path}"), "previous": null, "next": null}
    })
}

pub fn domain(base: &str, d: &Domain) -> Value {
    json!({
        "id": d.id, "name": d.name, "description": d.description, "enabled": d.enabled,
        "tags": d.tags, "options": {},
        "links": {"self": format!("{base}/v3/domains/{}", d.id)}
    })
}

pub fn project(base: &str, p: &Project) -> Value {
    json!({
        "id": p.id, "name": p.name, "description": p.description, "domain_id": p.domain_id,
        "parent_id": p.parent_id.as_deref().unwrap_or(&p.domain_id),
        "enabled": p.enabled, "is_domain": false, "tags": p.tags, "options": {},
        "links": {"self": format!("{base}/v3/projects/{}", p.id)}
    })
}

pub fn user(base: &str, u: &User) -> Value {
    let mut m: Map<String, Value> = u.extra.clone();
    m.insert("id".into(), json!(u.id));
    m.insert("name".into(), json!(u.name));
    m.insert("domain_id".into(), json!(u.domain_id));
    m.insert("enabled".into(), json!(u.enabled));
    if let Some(p) = &u.default_project_id {
        m.insert("default_project_id".into(), json!(p));
    }
    m.insert(
        "password_expires_at".into(),
        opt_time(password_expires_at(u)),
    );
    m.insert("options".into(), Value::Object(u.options.clone()));
    m.insert(
        "links".into(),
        json!({"self": format!("{base}/v3/users/{}", u.id)}),
    );
    Value::Object(m)
}

pub fn group(base: &str, g: &Group) -> Value {
    json!({
        "id": g.id, "name": g.name, "domain_id": g.domain_id, "description": g.description,
        "links": {"self": format!("{base}/v3/groups/{}", g.id)}
    })
}

pub fn role(base: &str, r: &Role) -> Value {
    json!({
        "id": r.id, "name": r.name, "domain_id": r.domain_id, "description": r.description,
        "options": {},
        "links": {"self": format!("{base}/v3/roles/{}", r.id)}
    })
}

pub fn app_cred(base: &str, a: &AppCredential, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": a.id, "name": a.name, "description": a.description, "user_id": a.user_id,
        "project_id": a.project_id, "expires_at": opt_time(a.expires_at),
        "unrestricted": a.unrestricted, "system": null,
        "roles": a.roles.iter().map(|r| json!({"id": r.id, "name": r.name, "domain_id": null})).collect::<Vec<_>>(),
        "access_rules": [],
        "links": {"self": format!("{base}/v3/users/{}/application_credentials/{}", a.user_id, a.id)}
    });
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    v
}

/// Names for `include_names`, looked up by the caller.
pub trait Names {
    fn role(&self, id: &str) -> Option<String>;
    fn user(&self, id: &str) -> Option<(String, String, String)>;
    fn group(&self, id: &str) -> Option<(String, String, String)>;
    fn project(&self, id: &str) -> Option<(String, String, String)>;
    fn domain(&self, id: &str) -> Option<String>;
}

fn named(id: &str, found: Option<(String, String, String)>) -> Value {
    match found {
        Some((name, did, dname)) => {
            json!({"id": id, "name": name, "domain": {"id": did, "name": dname}})
        }
        None => json!({"id": id}),
    }
}

pub fn assignment(base: &str, l: &Listed, names: Option<&dyn Names>) -> Value {
    let a = &l.assignment;
    let mut role = json!({"id": a.role_id});
    let (actor_key, actor) = match &a.actor {
        Actor::User(id) => (
            "user",
            names.map_or(json!({"id": id}), |n| named(id, n.user(id))),
        ),
        Actor::Group(id) => (
            "group",
            names.map_or(json!({"id": id}), |n| named(id, n.group(id))),
        ),
    };
    let (scope, scope_path) = match &a.target {
        Target::Project(id) => (
            json!({"project": names.map_or(json!({"id": id}), |n| named(id, n.project(id)))}),
            format!("projects/{id}"),
        ),
        Target::Domain(id) => {
            let mut d = json!({"id": id});
            if let Some(name) = names.and_then(|n| n.domain(id)) {
                d["name"] = json!(name);
            }
            (json!({"domain": d}), format!("domains/{id}"))
        }
        Target::System => (json!({"system": {"all": true}}), "system".to_string()),
    };
    if let Some(name) = names.and_then(|n| n.role(&a.role_id)) {
        role["name"] = json!(name);
    }
    let actor_path = match (&a.actor, &l.via_group) {
        (_, Some(g)) => format!("groups/{g}"),
        (Actor::User(id), None) => format!("users/{id}"),
        (Actor::Group(id), None) => format!("groups/{id}"),
    };
    let mut links = json!({
        "assignment": format!("{base}/v3/{scope_path}/{actor_path}/roles/{}", a.role_id)
    });
    if let (Some(g), Actor::User(u)) = (&l.via_group, &a.actor) {
        links["membership"] = json!(format!("{base}/v3/groups/{g}/users/{u}"));
    }
    json!({"role": role, actor_key: actor, "scope": scope, "links": links})
}

#[derive(Serialize)]
struct Named<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct TokenUser<'a> {
    id: &'a str,
    name: &'a str,
    domain: Named<'a>,
    password_expires_at: Option<String>,
}

#[derive(Serialize)]
struct TokenProject<'a> {
    id: &'a str,
    name: &'a str,
    domain: Named<'a>,
}

#[derive(Serialize)]
struct AllSystem {
    all: bool,
}

#[derive(Serialize)]
struct TokenView<'a> {
    methods: &'a [String],
    user: TokenUser<'a>,
    audit_ids: &'a [String],
    expires_at: String,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<TokenProject<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_domain: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<Named<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<AllSystem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [RoleRef]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_credential: Option<&'a AppCredRef>,
}

/// The token body (`{"token": {...}}`), serialized straight from the record (this
/// is the validation hot path: no intermediate JSON tree, no catalog copy).
/// `catalog` is omitted for unscoped tokens and with `?nocatalog`.
#[derive(Serialize)]
pub struct TokenBody<'a> {
    token: TokenView<'a>,
}

pub fn token<'a>(t: &'a TokenRecord, catalog: Option<&'a Value>) -> TokenBody<'a> {
    let mut view = TokenView {
        methods: &t.methods,
        user: TokenUser {
            id: &t.user_id,
            name: &t.user_name,
            domain: Named {
                id: &t.user_domain_id,
                name: &t.user_domain_name,
            },
            password_expires_at: t.password_expires_at.map(rfc3339_micros),
        },
        audit_ids: &t.audit_ids,
        expires_at: rfc3339_micros(t.expires_at),
        issued_at: rfc3339_micros(t.issued_at),
        project: None,
        is_domain: None,
        domain: None,
        system: None,
        roles: None,
        catalog: None,
        application_credential: t.app_cred.as_ref(),
    };
    let scoped = match &t.scope {
        Scope::Unscoped => false,
        Scope::Project {
            id,
            name,
            domain_id,
            domain_name,
        } => {
            view.project = Some(TokenProject {
                id,
                name,
                domain: Named {
                    id: domain_id,
                    name: domain_name,
                },
            });
            view.is_domain = Some(false);
            true
        }
        Scope::Domain { id, name } => {
            view.domain = Some(Named { id, name });
            true
        }
        Scope::System => {
            view.system = Some(AllSystem { all: true });
            true
        }
    };
    if scoped {
        view.roles = Some(&t.roles);
        view.catalog = catalog;
    }
    TokenBody { token: view }
}
