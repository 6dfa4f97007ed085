//! Cinder volumes made from Glance images through `app()`: the image's bytes land
//! at the start of the sparse volume file, the volume is bootable with
//! `volume_image_metadata`, copies keep that metadata, and the refusals (unknown
//! or inactive image, volume smaller than the image or its `min_disk`) are 400s.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::Cloud;
use http_body_util::BodyExt;
use kiln_controller::identity::compliance::Preset;
use serde_json::{json, Value};
use tower::ServiceExt;

const V: &str = "/volume/v3";

async fn upload(cloud: &Cloud, token: &str, id: &str, data: Vec<u8>) -> StatusCode {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/image/v2/images/{id}/file"))
        .header("x-auth-token", token)
        .header("content-type", "application/octet-stream")
        .body(Body::from(data))
        .unwrap();
    let resp = cloud.app.clone().oneshot(req).await.unwrap();
    let s = resp.status();
    let _ = resp.into_body().collect().await;
    s
}

async fn settled(c: &Cloud, t: &str, id: &str) -> Value {
    for _ in 0..200 {
        let (s, v) = c.get(&format!("{V}/volumes/{id}"), t).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["volume"]["status"] != "creating" {
            return v["volume"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("volume {id} never settled");
}

fn bad(s: StatusCode, v: &Value) {
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["badRequest"]["code"], 400, "{v}");
}

#[tokio::test]
async fn volume_from_image_copies_the_bytes() {
    let c = Cloud::new(Preset::Default);
    let admin = c.admin().await;
    let (s, img) = c
        .post(
            "/image/v2/images",
            &admin,
            json!({"name": "cirros", "disk_format": "raw", "container_format": "bare", "os_distro": "cirros"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{img}");
    let image_id = img["id"].as_str().unwrap().to_string();
    // Queued image: not usable yet.
    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"size": 1, "imageRef": image_id}}),
        )
        .await;
    bad(s, &v);
    let mut data = vec![0u8; 3 << 20];
    data[..9].copy_from_slice(b"BOOTBLOCK");
    data[(2 << 20) + 5] = 0xAB;
    assert_eq!(
        upload(&c, &admin, &image_id, data.clone()).await,
        StatusCode::NO_CONTENT
    );

    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"size": 1, "name": "boot", "imageRef": image_id}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["volume"]["status"], "creating");
    assert_eq!(v["volume"]["bootable"], "true");
    let id = v["volume"]["id"].as_str().unwrap().to_string();
    let vol = settled(&c, &admin, &id).await;
    assert_eq!(vol["status"], "available", "{vol}");
    let meta = &vol["volume_image_metadata"];
    assert_eq!(meta["image_id"], image_id.as_str());
    assert_eq!(meta["image_name"], "cirros");
    assert_eq!(meta["disk_format"], "raw");
    assert_eq!(meta["os_distro"], "cirros");
    assert_eq!(meta["size"], (3 << 20).to_string());
    let file = c.dir.path().join("volumes").join(format!("{id}.raw"));
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 1 << 30);
    assert_eq!(&bytes[..data.len()], &data[..]);
    assert!(bytes[data.len()..].iter().all(|b| *b == 0));

    // A clone keeps the image metadata and bootability.
    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"source_volid": id}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let clone = settled(&c, &admin, v["volume"]["id"].as_str().unwrap()).await;
    assert_eq!(clone["bootable"], "true");
    assert_eq!(
        clone["volume_image_metadata"]["image_id"],
        image_id.as_str()
    );
    // A blank volume has no image metadata.
    let (_, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"size": 1}}),
        )
        .await;
    let blank = settled(&c, &admin, v["volume"]["id"].as_str().unwrap()).await;
    assert!(blank.get("volume_image_metadata").is_none(), "{blank}");
    assert_eq!(blank["bootable"], "false");

    // min_disk larger than the asked size; an unknown image; image + snapshot.
    let (s, img2) = c
        .post(
            "/image/v2/images",
            &admin,
            json!({"name": "big", "disk_format": "raw", "container_format": "bare", "min_disk": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let big = img2["id"].as_str().unwrap().to_string();
    assert_eq!(
        upload(&c, &admin, &big, vec![1u8; 10]).await,
        StatusCode::NO_CONTENT
    );
    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"size": 1, "imageRef": big}}),
        )
        .await;
    bad(s, &v);
    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"imageRef": big}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        v["volume"]["size"], 2,
        "the size defaults to the image's needs"
    );
    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &admin,
            json!({"volume": {"size": 1, "imageRef": "00000000-0000-0000-0000-000000000000"}}),
        )
        .await;
    bad(s, &v);
    // A private image of another project is invisible: 400 as for an unknown one.
    let p = c.project(&admin, "other").await;
    let u = c.user(&admin, "other-u", "UserPassword12345").await;
    c.grant(&admin, &p, &u, "member").await;
    let other = c.login("other-u", "UserPassword12345", Some("other")).await;
    let (s, v) = c
        .post(
            &format!("{V}/volumes"),
            &other,
            json!({"volume": {"size": 1, "imageRef": image_id}}),
        )
        .await;
    bad(s, &v);
}
