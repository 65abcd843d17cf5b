//! `backbone show` and `tail` print personal parameters as sealed or forgotten, and in the
//! clear only with `--decrypt`.

mod common;

use backbone_core::events_contract;
use backbone_core::personal::KeyStore;
use backbone_redis::testing::unique_name;
use backbone_redis::{RedisKeyStore, RedisProducerBuilder, RedisSettings};
use common::*;

#[events_contract]
pub trait Members {
    async fn joined(&self, #[subject] member: String, #[personal] email: String, plan: String);
}

const EMAIL: &str = "grace.hopper.c0b0l@example.com";

fn stdout(cmd: &mut assert_cmd::Command) -> String {
    let output = cmd.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_parameters_show_sealed_forgotten_or_decrypted() {
    let url = url().await;
    let uri = unique_name("cli-personal");
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_members_producer()
        .await
        .unwrap();
    let id = producer
        .joined("member-3".into(), EMAIL.into(), "pro".into())
        .await
        .unwrap()
        .to_string();

    let shown = json_lines(backbone(&url).args(["show", &uri, &id]));
    assert_eq!(
        shown[0]["parameters"]["email"],
        "(personal: sealed; --decrypt shows it)"
    );
    assert_eq!(shown[0]["parameters"]["plan"], "pro");
    assert_eq!(shown[0]["subject"], "member-3");
    assert_eq!(shown[0]["personal"], "email");
    let decrypted = json_lines(backbone(&url).args(["show", "--decrypt", &uri, &id]));
    assert_eq!(decrypted[0]["parameters"]["email"], EMAIL);
    for args in [
        vec!["show", &uri, &id],
        vec!["tail", &uri, "--from-start", "--count", "1"],
    ] {
        for json in [true, false] {
            let mut cmd = backbone(&url);
            cmd.args(&args);
            if json {
                cmd.arg("--json");
            }
            let out = stdout(&mut cmd);
            assert!(!out.contains(EMAIL) && out.contains("sealed"), "{out}");
        }
    }

    let connection = RedisSettings::new()
        .url(&url)
        .open_connection("test")
        .await
        .unwrap();
    assert!(RedisKeyStore::new(connection)
        .forget("member-3")
        .await
        .unwrap());
    for decrypt in [false, true] {
        let mut cmd = backbone(&url);
        cmd.args(["show", &uri, &id]);
        if decrypt {
            cmd.arg("--decrypt");
        }
        let shown = json_lines(&mut cmd);
        assert_eq!(shown[0]["parameters"]["email"], "(personal: forgotten)");
        assert_eq!(shown[0]["parameters"]["plan"], "pro");
    }
}
