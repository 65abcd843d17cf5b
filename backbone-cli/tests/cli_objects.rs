//! Parameters in an object store (`storage = "object"`) in `backbone show` and `tail`: shown as
//! the references their fields hold (size and SHA-256), never fetched, a personal one
//! included; and `backbone dead show` decodes an inline dead letter's parameters as `show`
//! decodes an inline entry's (personal ones sealed or, with `--decrypt`, opened).

mod common;

use std::time::Duration;

use backbone_core::objects::ObjectStorage;
use backbone_core::personal::Personal;
use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult, RetryPolicy};
use backbone_redis::testing::unique_name;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use serde_json::json;

#[events_contract(storage = "object")]
pub trait Scans {
    async fn scanned(
        &self,
        #[subject] customer: String,
        #[personal] email: String,
        #[personal] photo: String,
        image: String,
        note: String,
    );
}

const EMAIL: &str = "ada.lovelace.0b1e@example.com";
/// Above it, a parameter goes to the store: the image and the sealed photo, not the sealed
/// email nor the note.
const THRESHOLD: usize = 1000;

/// Sends one `scanned` event to `uri` through `objects`; its message id.
async fn send_scan(url: &str, uri: &str, objects: &ObjectStorage) -> String {
    let producer = RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .object_store(objects.clone())
        .build_scans_producer()
        .await
        .unwrap();
    let id = producer
        .scanned(
            "customer-5".into(),
            EMAIL.into(),
            "p".repeat(3000),
            "x".repeat(70_000),
            "small".into(),
        )
        .await
        .unwrap();
    id.to_string()
}

/// The size and SHA-256 of the reference in `param.<name>` of the first entry of `uri`.
async fn reference(url: &str, uri: &str, name: &str) -> (u64, String) {
    let key = backbone_redis::keys::StreamKeys::new(
        &backbone_core::StreamAddress::new(None, uri).unwrap(),
    )
    .stream()
    .to_owned();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut raw(url).await)
        .await
        .unwrap();
    let field = format!("param.{name}");
    let (_, value) = entries[0].1.iter().find(|(n, _)| *n == field).unwrap();
    let rest = value.strip_prefix("obj.v1.").unwrap();
    let (size, sha256) = rest.split_once('.').unwrap();
    (size.parse().unwrap(), sha256.to_owned())
}

fn stdout(cmd: &mut assert_cmd::Command) -> String {
    let output = cmd.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_tail_print_object_parameters_as_their_references() {
    let url = url().await;
    let uri = unique_name("cli-objects");
    let objects = ObjectStorage::in_memory().threshold(THRESHOLD);
    let id = send_scan(&url, &uri, &objects).await;
    let (size, sha256) = reference(&url, &uri, "image").await;
    assert_eq!(size, 70_002, "the JSON string, quotes included");
    let (photo_size, photo_sha256) = reference(&url, &uri, "photo").await;
    let image = json!({"object": {"size": size, "sha256": sha256}});
    let photo = json!({"object": {"size": photo_size, "sha256": photo_sha256}});

    let shown = json_lines(backbone(&url).args(["show", &uri, &id]));
    let tailed = json_lines(backbone(&url).args(["tail", &uri, "--from-start", "--count", "1"]));
    for doc in [&shown[0], &tailed[0]] {
        let parameters = &doc["parameters"];
        assert_eq!(parameters["image"], image, "{doc}");
        // A personal object is its reference too: the object holds ciphertext.
        assert_eq!(parameters["photo"], photo, "{doc}");
        assert_eq!(
            parameters["email"],
            "(personal: sealed; --decrypt shows it)"
        );
        assert_eq!(parameters["note"], "small");
        assert_eq!(doc["objects"], "photo,image", "{doc}");
    }
    let decrypted = json_lines(backbone(&url).args(["show", "--decrypt", &uri, &id]));
    assert_eq!(decrypted[0]["parameters"]["email"], EMAIL);
    assert_eq!(decrypted[0]["parameters"]["photo"], photo, "never fetched");

    let readable = format!("<object 70002 bytes sha256:{}…>", &sha256[..12]);
    for args in [
        vec!["show", &uri, &id],
        vec!["tail", &uri, "--from-start", "--count", "1"],
    ] {
        let out = stdout(backbone(&url).args(&args));
        assert!(out.contains(&readable), "{out}");
        assert!(
            !out.contains("xxxxxxxx") && !out.contains("obj.v1."),
            "{out}"
        );
    }
}

/// Fails every event (so that it is dead-lettered).
struct Failing;

#[async_trait]
impl ScansConsumer for Failing {
    async fn scanned(
        &self,
        _: &ConsumerContext,
        _: String,
        _: Personal<String>,
        _: Personal<String>,
        _: String,
        _: String,
    ) -> HandlerResult {
        Err("fails on purpose".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_show_decodes_an_inline_dead_letters_parameters() {
    let url = url().await;
    let uri = unique_name("cli-dead-inline");
    let objects = ObjectStorage::in_memory().threshold(THRESHOLD);
    send_scan(&url, &uri, &objects).await;
    let (size, sha256) = reference(&url, &uri, "image").await;
    let consumer = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("billing")
        .object_store(objects)
        .block(Duration::from_millis(100))
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_deliveries: 1,
        })
        .subscribe_scans_consumer(Failing)
        .await
        .unwrap();
    let listed = listed_dead_letters(&url, &uri, "billing", 1).await;
    consumer.shutdown().await.unwrap();
    assert!(listed[0]["reason"]
        .as_str()
        .unwrap()
        .contains("fails on purpose"));
    let letter = listed[0]["id"].as_str().unwrap().to_owned();

    let dead_show = ["dead", "show", &uri, "billing", &letter];
    let shown = json_lines(backbone(&url).args(dead_show));
    let parameters = &shown[0]["parameters"];
    assert_eq!(parameters["note"], "small", "{}", shown[0]);
    assert_eq!(
        parameters["email"],
        "(personal: sealed; --decrypt shows it)"
    );
    assert_eq!(
        parameters["image"],
        json!({"object": {"size": size, "sha256": sha256}})
    );
    assert!(parameters["photo"]["object"]["size"].as_u64().unwrap() > THRESHOLD as u64);
    // The other original fields stay; the `param.*` ones are the parameters now.
    let fields = shown[0]["fields"].as_object().unwrap();
    assert_eq!(fields["operation"], "scanned");
    assert_eq!(fields["subject"], "customer-5");
    assert!(
        !fields.keys().any(|name| name.starts_with("param.")),
        "{fields:?}"
    );
    let decrypted = json_lines(backbone(&url).arg("--decrypt").args(dead_show));
    assert_eq!(decrypted[0]["parameters"]["email"], EMAIL);
    let out = stdout(backbone(&url).args(dead_show));
    assert!(!out.contains(EMAIL) && out.contains("sealed"), "{out}");
    assert!(
        out.contains(&format!("<object 70002 bytes sha256:{}…>", &sha256[..12])),
        "{out}"
    );
}
