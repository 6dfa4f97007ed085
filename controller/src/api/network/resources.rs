//! The Neutron resources' routes: create/update/delete per resource (list,
//! show and tags are shared, see [`super::handlers`]), router interfaces,
//! quotas, and the internal desired-state paths for nodes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::handlers::{self as h, member, segment, sg_view};
use super::query::NQuery;
use super::{blocking, NJson, NResult, NetCaller};
use crate::api::extract::Path;
use crate::app::AppState;
use crate::network::model::{
    FloatingIp, Network, Port, Record, Router as NRouter, SecurityGroup, SecurityGroupRule, Subnet,
};
use crate::network::{
    desired, ops, ports, quota, routers, secgroups, subnets, Ctx, NetError, NetResult,
};
use crate::store::Store;

const V2: &str = "/network/v2.0";

/// Routes of one resource: collection, member, tags.
fn resource<R: Record>(
    coll: MethodRouter<AppState>,
    memb: MethodRouter<AppState>,
    tagged: bool,
) -> Router<AppState> {
    let base = format!("{V2}/{}", segment::<R>());
    let mut r = Router::new()
        .route(&base, coll.get(h::list::<R>))
        .route(&format!("{base}/{{id}}"), memb.get(h::show::<R>));
    if tagged {
        r = r
            .route(
                &format!("{base}/{{id}}/tags"),
                get(h::tags_get::<R>)
                    .put(h::tags_put::<R>)
                    .delete(h::tags_clear::<R>),
            )
            .route(
                &format!("{base}/{{id}}/tags/{{tag}}"),
                get(h::tag_check::<R>)
                    .put(h::tag_add::<R>)
                    .delete(h::tag_remove::<R>),
            );
    }
    r
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(resource::<Network>(
            axum::routing::post(create::<Network, NetworkBody>),
            put(update::<Network, NetworkPatch>).delete(remove::<Network>),
            true,
        ))
        .merge(resource::<Subnet>(
            axum::routing::post(create::<Subnet, SubnetBody>),
            put(update::<Subnet, SubnetPatch>).delete(remove::<Subnet>),
            true,
        ))
        .merge(resource::<Port>(
            axum::routing::post(create::<Port, PortBody>),
            put(update::<Port, PortPatch>).delete(remove::<Port>),
            true,
        ))
        .merge(resource::<SecurityGroup>(
            axum::routing::post(create_sg),
            put(update_sg).delete(remove::<SecurityGroup>),
            true,
        ))
        .merge(resource::<SecurityGroupRule>(
            axum::routing::post(create::<SecurityGroupRule, RuleBody>),
            axum::routing::delete(remove::<SecurityGroupRule>),
            false,
        ))
        .merge(resource::<NRouter>(
            axum::routing::post(create::<NRouter, RouterBody>),
            put(update::<NRouter, RouterPatch>).delete(remove::<NRouter>),
            true,
        ))
        .merge(resource::<FloatingIp>(
            axum::routing::post(create::<FloatingIp, FipBody>),
            put(update::<FloatingIp, FipPatch>).delete(remove::<FloatingIp>),
            true,
        ))
        .route(
            &format!("{V2}/routers/{{id}}/add_router_interface"),
            put(add_interface),
        )
        .route(
            &format!("{V2}/routers/{{id}}/remove_router_interface"),
            put(remove_interface),
        )
        .route(&format!("{V2}/quotas"), get(quota_list))
        .route(
            &format!("{V2}/quotas/{{project}}"),
            get(quota_show).put(quota_update).delete(quota_reset),
        )
        .route(
            &format!("{V2}/quotas/{{project}}/details"),
            get(quota_details),
        )
        .route(
            &format!("{V2}/quotas/{{project}}/default"),
            get(quota_default),
        )
        .route("/network/kiln/v1/desired", get(node_desired))
        .route("/network/kiln/v1/ports/{id}/status", put(node_port_status))
}

/// A create/update body for resource `R`: `{"<member>": {...}}` with the
/// operation that applies it.
pub trait Op<R>: DeserializeOwned + Send + 'static {
    fn apply(self, store: &dyn Store, ctx: &Ctx, id: Option<&str>) -> NetResult<R>;
}

macro_rules! body {
    ($name:ident, $member:literal, $inner:ty, $rec:ty, |$b:ident, $s:ident, $c:ident, $id:ident| $e:expr) => {
        #[derive(Deserialize)]
        pub struct $name {
            #[serde(rename = $member)]
            inner: $inner,
        }
        impl Op<$rec> for $name {
            fn apply(self, $s: &dyn Store, $c: &Ctx, $id: Option<&str>) -> NetResult<$rec> {
                let $b = self.inner;
                $e
            }
        }
    };
}

fn need(id: Option<&str>) -> NetResult<&str> {
    id.ok_or_else(|| NetError::BadRequest("missing id".into()))
}

body!(
    NetworkBody,
    "network",
    ops::NetworkCreate,
    Network,
    |b, s, c, _id| ops::create_network(s, c, b)
);
body!(
    NetworkPatch,
    "network",
    ops::NetworkUpdate,
    Network,
    |b, s, c, id| ops::update_network(s, c, need(id)?, b)
);
body!(
    SubnetBody,
    "subnet",
    subnets::SubnetCreate,
    Subnet,
    |b, s, c, _id| subnets::create_subnet(s, c, b)
);
body!(
    SubnetPatch,
    "subnet",
    subnets::SubnetUpdate,
    Subnet,
    |b, s, c, id| subnets::update_subnet(s, c, need(id)?, b)
);
body!(PortBody, "port", ports::PortCreate, Port, |b, s, c, _id| {
    ports::create_port(s, c, b)
});
body!(PortPatch, "port", ports::PortUpdate, Port, |b, s, c, id| {
    ports::update_port(s, c, need(id)?, b)
});
body!(
    RuleBody,
    "security_group_rule",
    secgroups::RuleCreate,
    SecurityGroupRule,
    |b, s, c, _id| secgroups::create_rule(s, c, b)
);
body!(
    RouterBody,
    "router",
    routers::RouterCreate,
    NRouter,
    |b, s, c, _id| routers::create_router(s, c, b)
);
body!(
    RouterPatch,
    "router",
    routers::RouterUpdate,
    NRouter,
    |b, s, c, id| routers::update_router(s, c, need(id)?, b)
);
body!(
    FipBody,
    "floatingip",
    routers::FipCreate,
    FloatingIp,
    |b, s, c, _id| routers::create_fip(s, c, b)
);
body!(
    FipPatch,
    "floatingip",
    routers::FipUpdate,
    FloatingIp,
    |b, s, c, id| routers::update_fip(s, c, need(id)?, b)
);

async fn create<R: Record, B: Op<R>>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    NJson(b): NJson<B>,
) -> NResult<(StatusCode, axum::Json<Value>)> {
    let rec = blocking(&state, move |s| b.apply(s, &ctx, None)).await?;
    Ok(member(StatusCode::CREATED, &rec))
}

async fn update<R: Record, B: Op<R>>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    NJson(b): NJson<B>,
) -> NResult<(StatusCode, axum::Json<Value>)> {
    let rec = blocking(&state, move |s| b.apply(s, &ctx, Some(&id))).await?;
    Ok(member(StatusCode::OK, &rec))
}

async fn remove<R: Record>(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
) -> NResult<StatusCode> {
    blocking(&state, move |s| match R::MEMBER {
        "network" => ops::delete_network(s, &ctx, &id),
        "subnet" => subnets::delete_subnet(s, &ctx, &id),
        "port" => ports::delete_port(s, &ctx, &id),
        "security_group" => secgroups::delete_group(s, &ctx, &id),
        "security_group_rule" => secgroups::delete_rule(s, &ctx, &id),
        "router" => routers::delete_router(s, &ctx, &id),
        "floatingip" => routers::delete_fip(s, &ctx, &id),
        other => Err(NetError::NotImplemented(format!(
            "deleting {other} is not implemented"
        ))),
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct SgBody {
    security_group: secgroups::GroupCreate,
}

#[derive(Deserialize)]
struct SgPatch {
    security_group: secgroups::GroupUpdate,
}

async fn create_sg(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    NJson(b): NJson<SgBody>,
) -> NResult<(StatusCode, axum::Json<Value>)> {
    let v = blocking(&state, move |s| {
        let sg = secgroups::create_group(s, &ctx, b.security_group)?;
        sg_view(s, &sg)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"security_group": v})),
    ))
}

async fn update_sg(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    NJson(b): NJson<SgPatch>,
) -> NResult<axum::Json<Value>> {
    let v = blocking(&state, move |s| {
        let sg = secgroups::update_group(s, &ctx, &id, b.security_group)?;
        sg_view(s, &sg)
    })
    .await?;
    Ok(axum::Json(json!({"security_group": v})))
}

async fn add_interface(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    NJson(b): NJson<routers::InterfaceReq>,
) -> NResult<axum::Json<Value>> {
    let v = blocking(&state, move |s| routers::add_interface(s, &ctx, &id, b)).await?;
    Ok(axum::Json(v))
}

async fn remove_interface(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    NJson(b): NJson<routers::InterfaceReq>,
) -> NResult<axum::Json<Value>> {
    let v = blocking(&state, move |s| routers::remove_interface(s, &ctx, &id, b)).await?;
    Ok(axum::Json(v))
}

fn quota_read(ctx: &Ctx, project: &str) -> NetResult<()> {
    if ctx.admin || ctx.project_id == project {
        Ok(())
    } else {
        Err(NetError::Forbidden(
            "rule:get_quota is disallowed by policy".into(),
        ))
    }
}

fn admin(ctx: &Ctx, rule: &str) -> NetResult<()> {
    if ctx.admin {
        Ok(())
    } else {
        Err(NetError::Forbidden(format!(
            "rule:{rule} is disallowed by policy"
        )))
    }
}

async fn quota_list(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
) -> NResult<axum::Json<Value>> {
    admin(&ctx, "get_quota")?;
    let list = blocking(&state, quota::list).await?;
    Ok(axum::Json(json!({"quotas": list})))
}

async fn quota_show(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(project): Path<String>,
) -> NResult<axum::Json<Value>> {
    quota_read(&ctx, &project)?;
    let q = blocking(&state, move |s| quota::show(s, &project)).await?;
    Ok(axum::Json(json!({"quota": q})))
}

async fn quota_default(
    NetCaller(ctx): NetCaller,
    Path(project): Path<String>,
) -> NResult<axum::Json<Value>> {
    quota_read(&ctx, &project)?;
    let m: Map<String, Value> = quota::DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Ok(axum::Json(json!({"quota": m})))
}

async fn quota_details(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(project): Path<String>,
) -> NResult<axum::Json<Value>> {
    quota_read(&ctx, &project)?;
    let q = blocking(&state, move |s| quota::details(s, &project)).await?;
    Ok(axum::Json(json!({"quota": q})))
}

#[derive(Deserialize)]
struct QuotaBody {
    quota: Map<String, Value>,
}

async fn quota_update(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(project): Path<String>,
    NJson(b): NJson<QuotaBody>,
) -> NResult<axum::Json<Value>> {
    admin(&ctx, "update_quota")?;
    let q = blocking(&state, move |s| quota::update(s, &project, &b.quota)).await?;
    Ok(axum::Json(json!({"quota": q})))
}

async fn quota_reset(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(project): Path<String>,
) -> NResult<StatusCode> {
    admin(&ctx, "delete_quota")?;
    blocking(&state, move |s| quota::reset(s, &project)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn node_desired(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    q: NQuery,
) -> NResult<axum::Json<Value>> {
    admin(&ctx, "kiln:get_desired_state")?;
    let host = q.one("host").map(str::to_string);
    let v = blocking(&state, move |s| desired::desired(s, host.as_deref())).await?;
    Ok(axum::Json(v))
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn node_port_status(
    State(state): State<AppState>,
    NetCaller(ctx): NetCaller,
    Path(id): Path<String>,
    NJson(b): NJson<StatusBody>,
) -> NResult<(StatusCode, axum::Json<Value>)> {
    admin(&ctx, "kiln:set_port_status")?;
    let p = blocking(&state, move |s| ports::set_status(s, &id, &b.status)).await?;
    Ok(member(StatusCode::OK, &p))
}
