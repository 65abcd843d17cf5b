//! The trim script's re-checks over real Redis: a plan that no longer holds writes nothing.

use backbone_core::StreamAddress;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::*;
use crate::entry::PAYLOAD;
use crate::testing::{shared, unique_name};

/// A step as `StreamAdmin::run` would plan it.
#[derive(Clone)]
struct Plan<'a> {
    last: &'a str,
    minid: &'a str,
    planned: u64,
    keep: u64,
    groups: &'a [&'a str],
    /// The planned entries' payloads: (message id, hash).
    payloads: Vec<(String, String)>,
}

async fn invoke(
    conn: &mut MultiplexedConnection,
    keys: &StreamKeys,
    plan: &Plan<'_>,
) -> (i64, u64, u64, String) {
    let mut invocation = TRIM.key(keys.stream());
    invocation.key(keys.holds());
    invocation
        .arg(plan.minid)
        .arg(plan.last)
        .arg(plan.planned)
        .arg(plan.keep);
    invocation.arg(plan.groups.len()).arg(plan.groups);
    invocation.arg(plan.payloads.len());
    for (k, (message_id, hash)) in plan.payloads.iter().enumerate() {
        invocation
            .key(hash)
            .arg(message_id)
            .arg(k + 1)
            .arg(0)
            .arg(0);
    }
    let (done, entries, payloads, reason, released): (i64, u64, u64, String, Vec<String>) =
        invocation.invoke_async(conn).await.unwrap();
    assert!(released.is_empty(), "no objects here");
    (done, entries, payloads, reason)
}

#[tokio::test]
async fn the_script_writes_nothing_when_the_plan_no_longer_holds() {
    let redis = shared().await.unwrap();
    let keys = StreamKeys::new(&StreamAddress::new(None, &unique_name("trim-script")).unwrap());
    let stream = keys.stream().to_owned();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Ids of different lengths: the script compares them as numbers, not as text.
    let ids = ["9-0", "10-0", "10-5", "100-0", "100-1"];
    let hash = |i: usize| format!("{}{i}", keys.payload_prefix());
    let payload = |i: usize| (format!("m{i}"), hash(i));
    for (i, id) in ids.iter().enumerate() {
        let _: () = conn.hset(hash(i), "n", i).await.unwrap();
        let _: String = conn
            .xadd(&stream, *id, &[(PAYLOAD, hash(i))])
            .await
            .unwrap();
    }
    let _: () = conn.xgroup_create(&stream, "g", "0").await.unwrap();
    let read = |conn: &mut MultiplexedConnection| {
        let options = redis::streams::StreamReadOptions::default().group("g", "c");
        let stream = stream.clone();
        let mut conn = conn.clone();
        async move {
            let _: redis::streams::StreamReadReply = conn
                .xread_options(&[&stream], &[">"], &options)
                .await
                .unwrap();
            let _: i64 = conn.xack(&stream, "g", &ids).await.unwrap();
        }
    };
    read(&mut conn).await;
    let plan = Plan {
        last: "10-0",
        minid: "10-1",
        planned: 2,
        keep: 0,
        groups: &["g"],
        payloads: vec![payload(0), payload(1)],
    };
    let replan = |reason: &str| (0, 0, 0, reason.to_owned());

    let stale = Plan {
        groups: &[],
        ..plan.clone()
    };
    assert_eq!(
        invoke(&mut conn, &keys, &stale).await,
        replan("the groups changed")
    );
    let stale = Plan {
        groups: &["h"],
        ..plan.clone()
    };
    assert_eq!(
        invoke(&mut conn, &keys, &stale).await,
        replan("group g is new")
    );

    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&stream)
        .arg("g")
        .arg("9-0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        invoke(&mut conn, &keys, &plan).await,
        replan("group g has not read 10-0")
    );

    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let options = redis::streams::StreamReadOptions::default()
        .group("g", "c")
        .count(1);
    let _: redis::streams::StreamReadReply = conn
        .xread_options(&[&stream], &[">"], &options)
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("SETID")
        .arg(&stream)
        .arg("g")
        .arg("100-1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        invoke(&mut conn, &keys, &plan).await,
        replan("entry 9-0 is pending in group g")
    );
    let _: i64 = conn.xack(&stream, "g", &["9-0"]).await.unwrap();

    // A dead letter holds entry 1's payload, twice: two groups gave up on it.
    let _: i64 = conn.hincr(keys.holds(), "m1", 2).await.unwrap();
    let stale = Plan {
        keep: 4,
        ..plan.clone()
    };
    assert_eq!(
        invoke(&mut conn, &keys, &stale).await,
        replan("the stream got shorter")
    );

    // Nothing was written by the refused plans.
    let len: u64 = conn.xlen(&stream).await.unwrap();
    assert_eq!(len, 5);
    for i in 0..5 {
        assert!(conn.exists::<_, bool>(hash(i)).await.unwrap());
    }

    let keep = Plan {
        keep: 3,
        ..plan.clone()
    };
    assert_eq!(
        invoke(&mut conn, &keys, &keep).await,
        (1, 2, 1, String::new())
    );
    let held: Option<i64> = conn.hget(keys.holds(), "m1").await.unwrap();
    assert_eq!(
        held,
        Some(2),
        "the original entry went; the dead letters still hold it"
    );
    let left: StreamRangeReply = conn.xrange_all(&stream).await.unwrap();
    let left: Vec<&str> = left.ids.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(left, &ids[2..]);
    assert!(!conn.exists::<_, bool>(hash(0)).await.unwrap());
    assert!(conn.exists::<_, bool>(hash(1)).await.unwrap());
}

#[test]
fn ids_parse_order_and_follow() {
    assert_eq!(
        StreamId::parse("1526919030474-55", false),
        Some(StreamId(1526919030474, 55))
    );
    assert_eq!(StreamId::parse("5", true), Some(StreamId(5, 0)));
    for bad in ["5", "", "-", "1-", "-1", "1-2-3", "+1-2", "a-1", " 1-2"] {
        assert_eq!(StreamId::parse(bad, false), None, "{bad:?}");
    }
    assert!(StreamId(9, 0) < StreamId(10, 0) && StreamId(10, 0) < StreamId(10, 5));
    assert_eq!(StreamId(1, 2).next(), StreamId(1, 3));
    assert_eq!(StreamId(1, u64::MAX).next(), StreamId(2, 0));
    assert_eq!(StreamId(7, 1).to_string(), "7-1");
}
