//! `EventStore::append`: expected version, idempotency key and the writes, in one script.

use backbone_core::envelope::Envelope;
use backbone_core::error::KeyReuse;
use backbone_core::metadata::now_millis;
use backbone_core::names::check_name;
use backbone_core::personal::seal_event;
use backbone_core::storage::Storage;
use backbone_core::store::{AppendOptions, AppendResult, ExpectedVersion};
use backbone_core::{ContractEvent, Error, Fields, MessageId, Operation};
use redis::Value;

use super::{check_aggregate_id, EventStore};
use crate::connection::redis_error;
use crate::entry::{envelope_fields, PARAM_PREFIX};
use crate::lua::APPEND;

impl<E: ContractEvent> EventStore<E> {
    /// Appends `events` to aggregate `aggregate_id` if its version is what `expected` says:
    /// all of them or none. A version conflict is [`Error::WrongExpectedVersion`] with the
    /// actual version.
    ///
    /// An operation stored inline ([`Storage::Inline`]) has its parameters as `param.<name>`
    /// fields of both its entries (the aggregate's stream and the contract's), and no payload
    /// hash.
    ///
    /// **Idempotency keys.** With a key seen before (within the store's idempotency TTL),
    /// nothing is written: a retry of that append (same aggregate, same events: operations,
    /// versions and encoded parameters, whatever `expected` says) gets the first append's
    /// result with `replayed: true`; an append to another aggregate, or with other events, is
    /// [`Error::IdempotencyKeyReused`] naming the original aggregate. Events are compared by
    /// their encoding, so a parameter whose JSON is not deterministic (e.g. a `HashMap`) can
    /// make a true retry look like other events.
    ///
    /// ```no_run
    /// use backbone_core::{events_contract, Error};
    /// use backbone_core::store::{AppendOptions, ExpectedVersion};
    /// # #[events_contract]
    /// # pub trait Account { async fn deposited(&self, cents: i64); }
    ///
    /// # async fn run(store: backbone_redis::store::EventStore<AccountEvent>) -> Result<(), Error> {
    /// let events = [AccountEvent::Deposited { cents: 500 }];
    /// let key = AppendOptions::idempotent("deposit-7");
    /// let first = store.append("acc-1", ExpectedVersion::Any, &events, key.clone()).await?;
    /// let retry = store.append("acc-1", ExpectedVersion::Any, &events, key.clone()).await?;
    /// assert!(retry.replayed && retry.positions == first.positions);
    /// let reuse = store.append("acc-2", ExpectedVersion::Any, &events, key).await;
    /// assert!(matches!(reuse, Err(Error::IdempotencyKeyReused { .. })));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append(
        &self,
        aggregate_id: &str,
        expected: ExpectedVersion,
        events: &[E],
        options: AppendOptions,
    ) -> Result<AppendResult, Error> {
        check_aggregate_id(aggregate_id)?;
        if events.is_empty() {
            return Err(Error::Config(format!(
                "append to aggregate `{aggregate_id}`: no events given"
            )));
        }
        if let Some(key) = &options.idempotency_key {
            check_name("idempotency key", key, "")?;
        }
        if let Some(key) = &options.idempotency_key {
            self.key_used_elsewhere(aggregate_id, key).await?;
        }
        let keys = self.keys_for(aggregate_id);
        let mut invocation = APPEND.key(keys.stream());
        invocation
            .key(keys.aggregate(aggregate_id))
            .key(keys.store_stats());
        if let Some(key) = &options.idempotency_key {
            invocation.key(keys.idempotency(key));
        }
        let (kind, version) = match expected {
            ExpectedVersion::Any => ("any", 0),
            ExpectedVersion::NoStream => ("none", 0),
            ExpectedVersion::Exact(n) => ("exact", n),
        };
        let encoded = events
            .iter()
            .map(|event| Ok((event.operation(), event.encode()?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let object = encoded.iter().find(|(op, _)| op.storage == Storage::Object);
        if let (Some((operation, _)), None) = (object, &self.objects) {
            return Err(Error::Config(format!(
                "operation `{}` keeps large parameters in an object store (storage = \"object\"), \
                 and this event store has none (EventStoreBuilder::object_store). Nothing was \
                 written",
                operation.name
            )));
        }
        let fingerprint = match options.idempotency_key {
            Some(_) => fingerprint(&encoded),
            None => String::new(),
        };
        invocation
            .arg(kind)
            .arg(version)
            .arg(u8::from(options.idempotency_key.is_some()))
            .arg(self.idempotency_ttl.as_secs())
            .arg(aggregate_id)
            .arg(now_millis())
            .arg(events.len())
            .arg(fingerprint);
        let base = options.envelope();
        // The events whose objects were put, deleted again unless the script writes them.
        let mut uploaded = Vec::new();
        for (operation, mut fields) in encoded {
            let id = MessageId::new();
            let (subject, personal) = seal_event(
                Some(&*self.key_store),
                operation,
                options.subject.as_deref(),
                &id,
                &mut fields,
            )
            .await?;
            let mut objects = Vec::new();
            if let (Storage::Object, Some(store)) = (operation.storage, &self.objects) {
                let put = store.offload(keys.stream(), &id, &mut fields).await;
                if put.is_err() {
                    self.delete_unwritten(keys.stream(), &uploaded).await;
                }
                objects = put?;
                if !objects.is_empty() {
                    uploaded.push(id);
                }
            }
            let envelope = Envelope {
                subject,
                personal,
                objects,
                ..base.clone()
            };
            invocation.key(keys.payload(&id));
            invocation
                .arg(id.to_string())
                .arg(operation.name)
                .arg(operation.version);
            let extra = envelope_fields(&id, None, &envelope);
            // An inline event's parameters are entry fields (`param.<name>`), in both
            // streams, and it has no payload hash: no hash fields.
            let inline = operation.storage.is_inline();
            let params = if inline { fields.len() } else { 0 };
            invocation.arg(extra.len() + params);
            for (name, value) in &extra {
                invocation.arg(name.as_ref()).arg(value.as_ref());
            }
            if inline {
                for (name, value) in fields.iter() {
                    invocation.arg(format!("{PARAM_PREFIX}{name}")).arg(value);
                }
                invocation.arg(0);
            } else {
                invocation.arg(fields.len());
                for (name, value) in fields.iter() {
                    invocation.arg(name).arg(value);
                }
            }
        }
        let context = || format!("append to aggregate `{aggregate_id}` of {}", keys.stream());
        let reply: Value = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(context(), e))?;
        let (status, text): (String, String) = redis::from_redis_value(reply)
            .map_err(|e| Error::channel(context(), format!("unexpected reply: {e}")))?;
        if status != "ok" {
            // Refused, or the replay of an earlier append: these events were not written.
            self.delete_unwritten(keys.stream(), &uploaded).await;
        }
        match status.as_str() {
            "conflict" => Err(Error::WrongExpectedVersion {
                aggregate: aggregate_id.to_owned(),
                expected: expected.to_string(),
                actual: text.parse().unwrap_or(0),
            }),
            "ok" | "replay" => parse_result(&text, status == "replay")
                .map(|(result, _)| result)
                .ok_or_else(|| Error::channel(context(), format!("unexpected result {text:?}"))),
            "other_aggregate" | "other_events" => {
                let original = parse_result(&text, true).and_then(|(_, original)| original);
                let original = original.ok_or_else(|| {
                    Error::channel(context(), format!("unexpected record {text:?}"))
                })?;
                Err(Error::IdempotencyKeyReused {
                    key: options.idempotency_key.clone().unwrap_or_default(),
                    aggregate: aggregate_id.to_owned(),
                    original_aggregate: original.to_owned(),
                    reuse: match status.as_str() {
                        "other_aggregate" => KeyReuse::OtherAggregate,
                        _ => KeyReuse::OtherEvents,
                    },
                })
            }
            other => Err(Error::channel(
                context(),
                format!("unexpected status {other:?}"),
            )),
        }
    }
}

impl<E: ContractEvent> EventStore<E> {
    /// Deletes the objects of `events`, which the append did not write; a failure is logged
    /// (`StreamAdmin::delete_orphan_objects` finds what is left).
    async fn delete_unwritten(&self, stream: &str, events: &[MessageId]) {
        let Some(objects) = &self.objects else { return };
        for id in events {
            if let Err(e) = objects.delete(stream, id).await {
                tracing::warn!(stream, message_id = %id, error = %e,
                    "cannot delete the objects of an event that was not appended");
            }
        }
    }

    /// On a partitioned store, the append script sees only the idempotency records of its
    /// aggregate's partition: first look for `key` in the others, so that a key reused for an
    /// aggregate of another partition is refused too. (Two appends racing with one new key to
    /// aggregates of different partitions can both pass; within a partition the script decides.)
    async fn key_used_elsewhere(&self, aggregate_id: &str, key: &str) -> Result<(), Error> {
        if self.layout().count() == 1 {
            return Ok(());
        }
        let mine = self.layout().for_key(aggregate_id);
        for (p, keys) in self.layout().partitions().iter().enumerate() {
            if p == usize::from(mine) {
                continue;
            }
            let record_key = keys.idempotency(key);
            let record: Option<String> = redis::cmd("GET")
                .arg(&record_key)
                .query_async(&mut self.connection())
                .await
                .map_err(|e| redis_error(format!("GET {record_key}"), e))?;
            let original = record
                .as_deref()
                .and_then(|text| parse_result(text, true))
                .and_then(|(_, original)| original.map(str::to_owned));
            if let Some(original_aggregate) = original {
                return Err(Error::IdempotencyKeyReused {
                    key: key.to_owned(),
                    aggregate: aggregate_id.to_owned(),
                    original_aggregate,
                    reuse: KeyReuse::OtherAggregate,
                });
            }
        }
        Ok(())
    }
}

/// A result `"<first> <last> <pos1,pos2,...>"`, or an idempotency record: the same, then
/// `" <fingerprint> <aggregate>"` (absent from records written before fingerprints). Returns
/// the result and the record's aggregate, if it names one.
fn parse_result(text: &str, replayed: bool) -> Option<(AppendResult, Option<&str>)> {
    let parts: Vec<&str> = text.split(' ').collect();
    let aggregate = match parts.len() {
        3 => None,
        5 => Some(parts[4]),
        _ => return None,
    };
    let result = AppendResult {
        first_version: parts[0].parse().ok()?,
        version: parts[1].parse().ok()?,
        positions: parts[2].split(',').map(str::to_owned).collect(),
        replayed,
    };
    Some((result, aggregate))
}

/// The SHA-1 (hex) of the events as appended: each one's operation, version and encoded
/// parameters (names and values), in order, every part length-prefixed so that no two
/// different batches hash the same bytes.
fn fingerprint(events: &[(&Operation, Fields)]) -> String {
    let mut hash = sha1_smol::Sha1::new();
    let mut put = |bytes: &[u8]| {
        hash.update(&(bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    put(&(events.len() as u64).to_le_bytes());
    for (operation, fields) in events {
        put(operation.name.as_bytes());
        put(&operation.version.to_le_bytes());
        put(&(fields.len() as u64).to_le_bytes());
        for (name, value) in fields.iter() {
            put(name.as_bytes());
            put(value);
        }
    }
    hash.digest().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_and_both_record_formats() {
        let (result, aggregate) = parse_result("1 2 5-0,5-1", false).unwrap();
        assert_eq!(
            (result.first_version, result.version, result.positions),
            (1, 2, vec!["5-0".to_owned(), "5-1".to_owned()])
        );
        assert_eq!(aggregate, None);
        let record = "3 3 7-0 da39a3ee5e6b4b0d3255bfef95601890afd80709 acc-1";
        let (result, aggregate) = parse_result(record, true).unwrap();
        assert_eq!((result.version, result.replayed), (3, true));
        assert_eq!(aggregate, Some("acc-1"));
        assert!(parse_result("3 3", true).is_none());
        assert!(parse_result("x 3 7-0", true).is_none());
    }

    #[test]
    fn fingerprints_differ_by_operation_version_and_fields() {
        let ops = [("a", 0), ("b", 0), ("a", 1)].map(|(name, version)| Operation {
            name,
            version,
            parameters: &[],
            deprecated: None,
            upcast: None,
            storage: backbone_core::storage::Storage::Hash,
            personal: &[],
            subject: None,
        });
        let op = |name: &str, version: u32| {
            ops.iter()
                .find(|o| o.name == name && o.version == version)
                .unwrap()
        };
        let fields = |pairs: &[(&str, &str)]| -> Fields {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let base = fingerprint(&[(op("a", 0), fields(&[("n", "1")]))]);
        assert_eq!(base.len(), 40);
        assert_eq!(base, fingerprint(&[(op("a", 0), fields(&[("n", "1")]))]));
        for other in [
            vec![(op("b", 0), fields(&[("n", "1")]))],
            vec![(op("a", 1), fields(&[("n", "1")]))],
            vec![(op("a", 0), fields(&[("n", "2")]))],
            vec![(op("a", 0), fields(&[("m", "1")]))],
            vec![(op("a", 0), fields(&[("n", "1"), ("", "")]))],
            vec![
                (op("a", 0), fields(&[("n", "1")])),
                (op("a", 0), fields(&[])),
            ],
            vec![(op("a", 0), fields(&[("n1", "")]))],
        ] {
            assert_ne!(base, fingerprint(&other), "{other:?}");
        }
    }
}
