//! Progress bars of `dead replay --all`, `dead purge --all` and `trim`: drawn on a terminal
//! (a pseudo-terminal from util-linux's `script`) for people, never with `--json`, never when
//! stderr is a pipe; `--json` output stays one JSON document per line.

mod common;

use std::process::Stdio;

use backbone_redis::testing::unique_name;
use backbone_redis::RedisProducerBuilder;
use common::*;
use serde_json::Value;

/// A 3-partition stream with 6 entries, nobody reading it (so all may be trimmed).
async fn partitioned(url: &str) -> String {
    let uri = unique_name("cli-progress-parts");
    let producer = RedisProducerBuilder::new()
        .url(url)
        .uri(&uri)
        .partitions(3)
        .build_orders_producer()
        .await
        .unwrap();
    for order in 0..6 {
        producer.placed(order, "x".into()).await.unwrap();
    }
    uri
}

/// A stream whose group `billing` has dead-lettered `n` events.
async fn with_dead_letters(url: &str, n: u64) -> String {
    let uri = unique_name("cli-progress-dead");
    dead_letters(url, &uri, "billing", n).await;
    uri
}

/// Runs `backbone --url <url> <args>` piped (stdout and stderr not terminals): the JSON
/// documents of stdout, one a line, and stderr, which must be empty.
fn piped_json(url: &str, args: &[&str]) -> Vec<Value> {
    let output = backbone(url).args(args).arg("--json").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "no progress noise on stderr: {stderr:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Runs `backbone --url <url> <args>` on a pseudo-terminal (stdout and stderr both), and
/// returns what it wrote there, carriage returns removed.
fn on_a_terminal(url: &str, args: &[&str]) -> String {
    let bin = assert_cmd::cargo::cargo_bin("backbone");
    let line = std::iter::once(bin.display().to_string())
        .chain(["--url".to_owned(), url.to_owned()])
        .chain(args.iter().map(|a| a.to_string()))
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let output = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER")
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script`, for a pseudo-terminal");
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    assert!(output.status.success(), "{line}: {text}");
    text
}

/// The JSON documents a `--json` run wrote on the terminal: every line one, and not one
/// escape sequence (a progress bar draws and clears with them).
fn terminal_json(text: &str) -> Vec<Value> {
    assert!(!text.contains('\x1b'), "progress noise: {text:?}");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_of_the_long_commands_is_one_document_per_line_without_progress() {
    let url = url().await;
    let uri = with_dead_letters(&url, 4).await;
    let replayed = piped_json(&url, &["dead", "replay", &uri, "billing", "--all", "--yes"]);
    assert_eq!(replayed.len(), 1, "{replayed:?}");
    assert_eq!(replayed[0]["replayed"], 4);
    assert_eq!(replayed[0]["skipped"], 0);
    assert!(piped_json(&url, &["dead", "list", &uri, "billing"]).is_empty());
    // The replayed events are back in the stream: 4 produced, 4 replayed.
    let streams = piped_json(&url, &["streams"]);
    let mine: Vec<&Value> = streams
        .iter()
        .filter(|s| s["uri"] == uri.as_str())
        .collect();
    assert_eq!(mine[0]["length"], 8, "{mine:?}");

    let uri = with_dead_letters(&url, 3).await;
    let purged = piped_json(&url, &["dead", "purge", &uri, "billing", "--all", "--yes"]);
    assert_eq!(purged.len(), 1, "{purged:?}");
    assert_eq!(purged[0]["purged"], 3);

    let uri = partitioned(&url).await;
    let trimmed = piped_json(&url, &["trim", &uri, "--max-len", "0", "--yes"]);
    let partitions: Vec<&Value> = trimmed.iter().map(|t| &t["partition"]).collect();
    assert_eq!(partitions, [0, 1, 2], "{trimmed:?}");
    assert!(trimmed.iter().all(|t| t["length"] == 0), "{trimmed:?}");

    // Not confirmed: nothing drawn, nothing done, exit 5.
    let uri = with_dead_letters(&url, 1).await;
    fails(
        backbone(&url)
            .args(["dead", "replay", &uri, "billing", "--all"])
            .write_stdin("n\n"),
        5,
        "not confirmed",
    );
    assert_eq!(
        piped_json(&url, &["dead", "list", &uri, "billing"]).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bars_are_drawn_on_a_terminal_and_never_with_json() {
    let url = url().await;

    let uri = with_dead_letters(&url, 3).await;
    let drawn = on_a_terminal(&url, &["dead", "replay", &uri, "billing", "--all", "--yes"]);
    assert!(
        drawn.contains("replaying dead letters") && drawn.contains("replayed: 3"),
        "{drawn:?}"
    );
    let uri = with_dead_letters(&url, 3).await;
    let json = on_a_terminal(
        &url,
        &[
            "--json", "dead", "replay", &uri, "billing", "--all", "--yes",
        ],
    );
    assert_eq!(terminal_json(&json).len(), 1, "{json:?}");
    assert_eq!(terminal_json(&json)[0]["replayed"], 3);

    let uri = with_dead_letters(&url, 2).await;
    let drawn = on_a_terminal(&url, &["dead", "purge", &uri, "billing", "--all", "--yes"]);
    assert!(
        drawn.contains("purging dead letters") && drawn.contains("purged: 2"),
        "{drawn:?}"
    );
    let uri = with_dead_letters(&url, 2).await;
    let json = on_a_terminal(
        &url,
        &["--json", "dead", "purge", &uri, "billing", "--all", "--yes"],
    );
    assert_eq!(terminal_json(&json), [serde_json::json!({"purged": 2})]);

    let uri = partitioned(&url).await;
    let drawn = on_a_terminal(&url, &["trim", &uri, "--max-len", "10", "--yes"]);
    assert!(
        drawn.contains("trimming partitions") && drawn.contains("removed_entries"),
        "{drawn:?}"
    );
    let json = on_a_terminal(&url, &["--json", "trim", &uri, "--max-len", "0", "--yes"]);
    let rows = terminal_json(&json);
    assert_eq!(rows.len(), 3, "{json:?}");
    assert!(rows.iter().all(|r| r["length"] == 0), "{rows:?}");
}
