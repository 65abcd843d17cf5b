//! The wire format of sealed personal parameters (`docs/wire-format.md`, "Personal data"):
//! a value a Rust producer sealed opens with `aes-gcm` and the key record alone, following the
//! spec, without backbone's own code.

mod common;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use backbone_core::events_contract;
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::RedisProducerBuilder;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

#[events_contract]
pub trait Signups {
    async fn signed_up(&self, #[subject] account: String, #[personal] email: String);
}

#[tokio::test]
async fn a_sealed_value_opens_as_the_spec_says() {
    let redis = shared().await.unwrap();
    let uri = unique_name("wire-personal");
    let account = unique_name("account");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_signups_producer()
        .await
        .unwrap();
    let id = producer
        .signed_up(account.clone(), "ada@example.com".into())
        .await
        .unwrap()
        .to_string();
    let mut conn = common::raw(redis.url()).await;
    // The entry names the subject and the sealed parameter.
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("bb:{{{uri}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields = &entries[0].1;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("subject"), Some(account.clone()));
    assert_eq!(field("personal").as_deref(), Some("email"));
    let payload = field("payload").unwrap();
    let sealed: String = redis::cmd("HGET")
        .arg(&payload)
        .arg("email")
        .query_async(&mut conn)
        .await
        .unwrap();
    // v1.<class>.<key id>.<base64(nonce ‖ ciphertext ‖ tag)>
    let parts: Vec<&str> = sealed.splitn(4, '.').collect();
    assert_eq!(parts[..2], ["v1", "s"], "{sealed}");
    let record: Vec<u8> = redis::cmd("GET")
        .arg(format!("bbkeys:{{{account}}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(record.len(), 40);
    let key_id: String = record[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(parts[2], key_id);
    let bytes = STANDARD_NO_PAD.decode(parts[3]).unwrap();
    let (nonce, body) = bytes.split_at(12);
    let aad = format!("backbone.personal.v1\0{id}\0email");
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&record[8..]));
    let plain = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    assert_eq!(plain, br#""ada@example.com""#);
}
