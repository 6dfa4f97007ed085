//! Image (Glance v2): image records, their data files, members and tags.
//!
//! [`Images`] owns the store handle and the data folder. Record changes run in one
//! write transaction each; data is streamed to disk by [`files`] between the
//! `queued → saving` and `saving → active` transitions.

pub mod files;
pub mod model;
pub mod patch;
pub mod tables;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::clock::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::identity::model::TokenRecord;
use crate::identity::policy::{allowed, is_admin, Action, Resource};
use crate::store::{ReadTxn, Store};
use files::{ImageFiles, Written};
use model::{status, Image, Member, CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES};
use tables::{IMAGES, MEMBERS, SHARED_WITH};

/// The largest image kiln accepts (Glance's `image_size_cap` default, 1 TiB).
pub const IMAGE_SIZE_CAP: u64 = 1 << 40;

/// Attributes a client may never set (Glance answers 403 for them).
pub const READ_ONLY: &[&str] = &[
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "locations",
    "owner",
];

/// Names that are neither settable nor free properties.
const RESERVED: &[&str] = &["deleted", "deleted_at"];

/// Who is asking, as far as images care.
#[derive(Debug, Clone)]
pub struct Who {
    pub project: Option<String>,
    pub admin: bool,
    /// May write its project's images (member role).
    pub writer: bool,
}

impl Who {
    pub fn of(caller: &TokenRecord) -> Self {
        let project = caller.scope.project_id().map(str::to_string);
        let writer = project
            .as_deref()
            .is_some_and(|p| allowed(caller, Action::Write, Resource::Project(p)));
        Who {
            project,
            admin: is_admin(caller),
            writer,
        }
    }

    fn owns(&self, image: &Image) -> bool {
        self.project.is_some() && image.owner == self.project
    }
}

/// List filters and pagination (already parsed from the query string).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub name: Option<Vec<String>>,
    pub id: Option<Vec<String>>,
    pub status: Option<String>,
    pub visibility: Option<String>,
    pub owner: Option<String>,
    pub member_status: Option<String>,
    pub tags: Vec<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub os_hidden: bool,
    pub size_min: Option<u64>,
    pub size_max: Option<u64>,
    pub properties: BTreeMap<String, String>,
    pub sort_key: String,
    pub sort_desc: bool,
    pub limit: Option<usize>,
    pub marker: Option<String>,
}

pub struct Images {
    store: Arc<dyn Store>,
    pub files: ImageFiles,
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("No image found with ID {id}"))
}

impl Images {
    pub fn new(store: Arc<dyn Store>, dir: PathBuf) -> Self {
        Images {
            store,
            files: ImageFiles::new(dir),
        }
    }

    fn can_see(&self, r: &dyn ReadTxn, who: &Who, image: &Image) -> ApiResult<bool> {
        if who.admin
            || who.owns(image)
            || image.visibility == "public"
            || image.visibility == "community"
        {
            return Ok(true);
        }
        if image.visibility == "shared" {
            if let Some(p) = &who.project {
                return Ok(MEMBERS.contains(r, &Member::key(&image.id, p))?);
            }
        }
        Ok(false)
    }

    fn require_write(&self, who: &Who, image: &Image) -> ApiResult<()> {
        if who.admin || (who.writer && who.owns(image)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "You are not permitted to modify image {}.",
                image.id
            )))
        }
    }

    /// The image if the caller may see it, else 404.
    pub fn get(&self, who: &Who, id: &str) -> ApiResult<Image> {
        let r = self.store.read()?;
        let image = IMAGES.get(&*r, id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(&*r, who, &image)? {
            return Err(not_found(id));
        }
        Ok(image)
    }

    pub fn create(&self, who: &Who, body: Map<String, Value>) -> ApiResult<Image> {
        let Some(owner) = who.project.clone() else {
            return Err(ApiError::Forbidden(
                "Images are created in a project: use a project-scoped token.".into(),
            ));
        };
        if !who.writer && !who.admin {
            return Err(ApiError::forbidden("add_image"));
        }
        let now = now_micros();
        let id = match body.get("id") {
            None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
            Some(Value::String(s)) => uuid::Uuid::parse_str(s)
                .map_err(|_| {
                    ApiError::BadRequest(format!("Invalid image id {s:?}: expected a UUID."))
                })?
                .to_string(),
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "Invalid image id: expected a UUID string.".into(),
                ))
            }
        };
        let mut image = Image {
            id,
            name: None,
            status: status::QUEUED.into(),
            visibility: "shared".into(),
            protected: false,
            os_hidden: false,
            owner: Some(owner),
            disk_format: None,
            container_format: None,
            min_disk: 0,
            min_ram: 0,
            size: None,
            virtual_size: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            tags: Vec::new(),
            properties: BTreeMap::new(),
            created_at: now,
            updated_at: now,
        };
        for (k, v) in body {
            if k == "id" {
                continue;
            }
            set_attribute(&mut image, &k, v)?;
        }
        check_publicize(who, &image)?;
        let mut w = self.store.write()?;
        if IMAGES.contains(w.as_read(), &image.id)? {
            return Err(ApiError::Conflict(format!(
                "Image with identifier {} already exists!",
                image.id
            )));
        }
        IMAGES.put(&mut *w, &image.id, &image)?;
        w.commit()?;
        Ok(image)
    }

    /// Every image the caller may list, filtered, sorted and paged.
    pub fn list(&self, who: &Who, q: &ListQuery) -> ApiResult<Vec<Image>> {
        let r = self.store.read()?;
        let mine_shared: Vec<(String, Member)> = match &who.project {
            Some(p) => SHARED_WITH
                .scan(&*r, &format!("{p}|"))?
                .into_iter()
                .filter_map(|(k, _)| k.split_once('|').map(|(_, img)| img.to_string()))
                .filter_map(|img| {
                    MEMBERS
                        .get(&*r, &Member::key(&img, p))
                        .ok()
                        .flatten()
                        .map(|m| (img, m))
                })
                .collect(),
            None => Vec::new(),
        };
        let member_status = |image: &Image| -> Option<&str> {
            mine_shared
                .iter()
                .find(|(id, _)| *id == image.id)
                .map(|(_, m)| m.status.as_str())
        };
        let mut out: Vec<Image> = IMAGES
            .values(&*r)?
            .into_iter()
            .filter(|i| {
                let listed = match q.visibility.as_deref() {
                    Some(v) if v != "all" => {
                        i.visibility == v
                            && (who.admin
                                || match v {
                                    "public" | "community" => true,
                                    "shared" => {
                                        who.owns(i)
                                            || member_status(i).is_some_and(|s| {
                                                s == q
                                                    .member_status
                                                    .as_deref()
                                                    .unwrap_or("accepted")
                                                    || q.member_status.as_deref() == Some("all")
                                            })
                                    }
                                    _ => who.owns(i),
                                })
                    }
                    _ => {
                        who.admin
                            || who.owns(i)
                            || i.visibility == "public"
                            || (i.visibility == "shared"
                                && member_status(i).is_some_and(|s| {
                                    match q.member_status.as_deref() {
                                        None => s == "accepted",
                                        Some("all") => true,
                                        Some(want) => s == want,
                                    }
                                }))
                    }
                };
                listed && (q.os_hidden || !i.os_hidden) && matches(i, q)
            })
            .collect();
        sort_images(&mut out, &q.sort_key, q.sort_desc);
        if let Some(marker) = &q.marker {
            let pos = out.iter().position(|i| &i.id == marker).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "Invalid marker. Image {marker} could not be found."
                ))
            })?;
            out.drain(..=pos);
        }
        if let Some(limit) = q.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Applies a JSON patch (already parsed) in one transaction.
    pub fn update(&self, who: &Who, id: &str, ops: Vec<patch::PatchOp>) -> ApiResult<Image> {
        let mut w = self.store.write()?;
        let mut image = IMAGES.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(w.as_read(), who, &image)? {
            return Err(not_found(id));
        }
        self.require_write(who, &image)?;
        for op in ops {
            patch::apply(&mut image, op)?;
        }
        check_publicize(who, &image)?;
        image.updated_at = now_micros();
        IMAGES.put(&mut *w, id, &image)?;
        w.commit()?;
        Ok(image)
    }

    pub fn delete(&self, who: &Who, id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let image = IMAGES.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(w.as_read(), who, &image)? {
            return Err(not_found(id));
        }
        self.require_write(who, &image)?;
        if image.protected {
            return Err(ApiError::Forbidden(format!(
                "Image {id} is protected and cannot be deleted."
            )));
        }
        IMAGES.delete(&mut *w, id)?;
        for (key, m) in MEMBERS.scan(w.as_read(), &format!("{id}|"))? {
            MEMBERS.delete(&mut *w, &key)?;
            SHARED_WITH.delete(&mut *w, &Member::key(&m.member_id, id))?;
        }
        w.commit()?;
        self.files.remove(id);
        Ok(())
    }

    /// `queued → saving` before an upload; 409 in any other status.
    pub fn begin_upload(&self, who: &Who, id: &str) -> ApiResult<Image> {
        let mut w = self.store.write()?;
        let mut image = IMAGES.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(w.as_read(), who, &image)? {
            return Err(not_found(id));
        }
        self.require_write(who, &image)?;
        if image.status != status::QUEUED {
            return Err(ApiError::Conflict(format!(
                "Image status transition from {} to saving is not allowed",
                image.status
            )));
        }
        if image.disk_format.is_none() || image.container_format.is_none() {
            return Err(ApiError::BadRequest(
                "Properties disk_format, container_format must be set prior to saving data.".into(),
            ));
        }
        image.status = status::SAVING.into();
        image.updated_at = now_micros();
        IMAGES.put(&mut *w, id, &image)?;
        w.commit()?;
        Ok(image)
    }

    /// `saving → active` with what the upload measured; if the image was deleted
    /// meanwhile, the data is dropped.
    pub fn finish_upload(&self, id: &str, written: &Written) -> ApiResult<Image> {
        let mut w = self.store.write()?;
        let Some(mut image) = IMAGES.get(w.as_read(), id)? else {
            self.files.remove(id);
            return Err(ApiError::Conflict(format!(
                "Image {id} was deleted during the upload."
            )));
        };
        image.status = status::ACTIVE.into();
        image.size = Some(written.size);
        image.virtual_size = Some(written.size);
        image.checksum = Some(written.md5.clone());
        image.os_hash_algo = Some("sha512".into());
        image.os_hash_value = Some(written.sha512.clone());
        image.updated_at = now_micros();
        IMAGES.put(&mut *w, id, &image)?;
        w.commit()?;
        Ok(image)
    }

    /// Back to `queued` after a failed upload.
    pub fn abort_upload(&self, id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        if let Some(mut image) = IMAGES.get(w.as_read(), id)? {
            if image.status == status::SAVING {
                image.status = status::QUEUED.into();
                image.updated_at = now_micros();
                IMAGES.put(&mut *w, id, &image)?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Deactivate (`active → deactivated`) or reactivate (the reverse); repeating
    /// either is a no-op, other statuses answer 409.
    pub fn set_active(&self, who: &Who, id: &str, active: bool) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let mut image = IMAGES.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(w.as_read(), who, &image)? {
            return Err(not_found(id));
        }
        self.require_write(who, &image)?;
        let (from, to) = if active {
            (status::DEACTIVATED, status::ACTIVE)
        } else {
            (status::ACTIVE, status::DEACTIVATED)
        };
        if image.status == to {
            return Ok(());
        }
        if image.status != from {
            let verb = if active { "reactivate" } else { "deactivate" };
            return Err(ApiError::Conflict(format!(
                "Not allowed to {verb} image in status '{}'",
                image.status
            )));
        }
        image.status = to.into();
        image.updated_at = now_micros();
        IMAGES.put(&mut *w, id, &image)?;
        w.commit()?;
        Ok(())
    }

    pub fn set_tag(&self, who: &Who, id: &str, tag: &str, present: bool) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let mut image = IMAGES.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(w.as_read(), who, &image)? {
            return Err(not_found(id));
        }
        self.require_write(who, &image)?;
        let has = image.tags.iter().any(|t| t == tag);
        if present && !has {
            check_tag(tag)?;
            image.tags.push(tag.to_string());
        } else if !present {
            if !has {
                return Err(ApiError::NotFound(format!("Tag {tag} not found")));
            }
            image.tags.retain(|t| t != tag);
        } else {
            return Ok(());
        }
        image.updated_at = now_micros();
        IMAGES.put(&mut *w, id, &image)?;
        w.commit()?;
        Ok(())
    }

    /// The members of an image: the owner sees all, a member only itself.
    pub fn members(&self, who: &Who, id: &str) -> ApiResult<Vec<Member>> {
        let image = self.get(who, id)?;
        let r = self.store.read()?;
        if image.visibility != "shared" {
            return Err(ApiError::Forbidden(format!(
                "Only shared images have members. Image {id} is {}.",
                image.visibility
            )));
        }
        let all = MEMBERS.values_prefix(&*r, &format!("{id}|"))?;
        Ok(if who.admin || who.owns(&image) {
            all
        } else {
            all.into_iter()
                .filter(|m| Some(&m.member_id) == who.project.as_ref())
                .collect()
        })
    }

    pub fn member(&self, who: &Who, id: &str, member: &str) -> ApiResult<Member> {
        self.members(who, id)?
            .into_iter()
            .find(|m| m.member_id == member)
            .ok_or_else(|| ApiError::NotFound(format!("{member} is not a member of image {id}")))
    }

    pub fn add_member(&self, who: &Who, id: &str, member: &str) -> ApiResult<Member> {
        let mut w = self.store.write()?;
        let image = IMAGES.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if !self.can_see(w.as_read(), who, &image)? {
            return Err(not_found(id));
        }
        if !(who.admin || (who.writer && who.owns(&image))) {
            return Err(ApiError::Forbidden(
                "Only the image owner may add members.".into(),
            ));
        }
        if image.visibility != "shared" {
            return Err(ApiError::Forbidden(format!(
                "Image members cannot be created for images with visibility {}.",
                image.visibility
            )));
        }
        if member.is_empty() {
            return Err(ApiError::BadRequest(
                "Invalid member: an empty project id.".into(),
            ));
        }
        let key = Member::key(id, member);
        if MEMBERS.contains(w.as_read(), &key)? {
            return Err(ApiError::Conflict(format!(
                "Member {member} already exists for image {id}"
            )));
        }
        let now = now_micros();
        let m = Member {
            image_id: id.to_string(),
            member_id: member.to_string(),
            status: "pending".into(),
            created_at: now,
            updated_at: now,
        };
        MEMBERS.put(&mut *w, &key, &m)?;
        SHARED_WITH.put(&mut *w, &Member::key(member, id), &())?;
        w.commit()?;
        Ok(m)
    }

    /// A member accepts or rejects (only the member itself, or an admin).
    pub fn update_member(
        &self,
        who: &Who,
        id: &str,
        member: &str,
        new_status: &str,
    ) -> ApiResult<Member> {
        if !["pending", "accepted", "rejected"].contains(&new_status) {
            return Err(ApiError::BadRequest(format!(
                "Invalid status {new_status:?}: expected pending, accepted or rejected."
            )));
        }
        let mut m = self.member(who, id, member)?;
        if !(who.admin || who.project.as_deref() == Some(member)) {
            return Err(ApiError::Forbidden(
                "Only the member itself may change its status.".into(),
            ));
        }
        m.status = new_status.to_string();
        m.updated_at = now_micros();
        let mut w = self.store.write()?;
        MEMBERS.put(&mut *w, &Member::key(id, member), &m)?;
        w.commit()?;
        Ok(m)
    }

    pub fn remove_member(&self, who: &Who, id: &str, member: &str) -> ApiResult<()> {
        let image = self.get(who, id)?;
        self.member(who, id, member)?;
        if !(who.admin || (who.writer && who.owns(&image))) {
            return Err(ApiError::Forbidden(
                "Only the image owner may remove members.".into(),
            ));
        }
        let mut w = self.store.write()?;
        MEMBERS.delete(&mut *w, &Member::key(id, member))?;
        SHARED_WITH.delete(&mut *w, &Member::key(member, id))?;
        w.commit()?;
        Ok(())
    }
}

fn check_publicize(who: &Who, image: &Image) -> ApiResult<()> {
    if image.visibility == "public" && !who.admin {
        return Err(ApiError::forbidden("publicize_image"));
    }
    Ok(())
}

fn check_tag(tag: &str) -> ApiResult<()> {
    if tag.is_empty() || tag.chars().count() > 255 {
        return Err(ApiError::BadRequest(format!(
            "Invalid tag {tag:?}: 1 to 255 characters."
        )));
    }
    Ok(())
}

fn bad_type(key: &str, want: &str) -> ApiError {
    ApiError::BadRequest(format!("Invalid value for {key}: expected {want}."))
}

fn want_u64(key: &str, v: &Value) -> ApiResult<u64> {
    v.as_u64()
        .ok_or_else(|| bad_type(key, "a non-negative integer"))
}

fn want_enum(key: &str, v: Value, allowed: &[&str]) -> ApiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        other => Err(ApiError::BadRequest(format!(
            "Invalid value {other} for {key}: expected one of {}.",
            allowed.join(", ")
        ))),
    }
}

/// Sets one attribute from a client (create or patch add/replace).
pub fn set_attribute(image: &mut Image, key: &str, v: Value) -> ApiResult<()> {
    if READ_ONLY.contains(&key) || key == "id" {
        return Err(ApiError::Forbidden(format!(
            "Attribute '{key}' is read-only."
        )));
    }
    if RESERVED.contains(&key) {
        return Err(ApiError::Forbidden(format!(
            "Attribute '{key}' is reserved."
        )));
    }
    match key {
        "name" => match v {
            Value::Null => image.name = None,
            Value::String(s) if s.chars().count() <= 255 => image.name = Some(s),
            _ => return Err(bad_type(key, "a string of at most 255 characters")),
        },
        "visibility" => {
            image.visibility =
                want_enum(key, v, VISIBILITIES)?.ok_or_else(|| bad_type(key, "a visibility"))?
        }
        "protected" => image.protected = v.as_bool().ok_or_else(|| bad_type(key, "a boolean"))?,
        "os_hidden" => image.os_hidden = v.as_bool().ok_or_else(|| bad_type(key, "a boolean"))?,
        "min_disk" => image.min_disk = want_u64(key, &v)?,
        "min_ram" => image.min_ram = want_u64(key, &v)?,
        "disk_format" => image.disk_format = want_enum(key, v, DISK_FORMATS)?,
        "container_format" => image.container_format = want_enum(key, v, CONTAINER_FORMATS)?,
        "tags" => {
            let Value::Array(items) = v else {
                return Err(bad_type(key, "a list of strings"));
            };
            let mut tags = Vec::new();
            for t in items {
                let Value::String(t) = t else {
                    return Err(bad_type(key, "a list of strings"));
                };
                check_tag(&t)?;
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            image.tags = tags;
        }
        _ => {
            if key.is_empty() || key.chars().count() > 255 {
                return Err(ApiError::BadRequest(format!(
                    "Invalid property name {key:?}."
                )));
            }
            match v {
                Value::String(s) => {
                    image.properties.insert(key.to_string(), s);
                }
                Value::Null => {
                    image.properties.remove(key);
                }
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "Invalid value for property {key}: extra properties are strings."
                    )))
                }
            }
        }
    }
    Ok(())
}

fn matches(i: &Image, q: &ListQuery) -> bool {
    let opt_eq =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
    q.name
        .as_ref()
        .is_none_or(|names| i.name.as_ref().is_some_and(|n| names.contains(n)))
        && q.id.as_ref().is_none_or(|ids| ids.contains(&i.id))
        && opt_eq(&q.status, Some(&i.status))
        && opt_eq(&q.owner, i.owner.as_deref())
        && opt_eq(&q.disk_format, i.disk_format.as_deref())
        && opt_eq(&q.container_format, i.container_format.as_deref())
        && q.tags.iter().all(|t| i.tags.contains(t))
        && q.size_min.is_none_or(|m| i.size.is_some_and(|s| s >= m))
        && q.size_max.is_none_or(|m| i.size.is_some_and(|s| s <= m))
        && q.properties
            .iter()
            .all(|(k, v)| i.properties.get(k) == Some(v))
}

fn sort_images(list: &mut [Image], key: &str, desc: bool) {
    list.sort_by(|a, b| {
        let ord = match key {
            "name" => a.name.cmp(&b.name),
            "status" => a.status.cmp(&b.status),
            "size" => a.size.cmp(&b.size),
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "id" => a.id.cmp(&b.id),
            "disk_format" => a.disk_format.cmp(&b.disk_format),
            "container_format" => a.container_format.cmp(&b.container_format),
            _ => a.created_at.cmp(&b.created_at),
        }
        .then_with(|| a.id.cmp(&b.id));
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
}
