//! Reading the store: an aggregate's events by version (paged, or as a `Stream`), and the
//! contract's stream between two times.

use backbone_core::personal::open_all;
use backbone_core::store::StoredEvent;
use backbone_core::{ContractEvent, Error, Fields};
use futures::future::join_all;
use futures::Stream;
use redis::Value;

use super::{check_aggregate_id, EventStore};
use crate::connection::redis_error;
use crate::entry::{
    parse_range_reply, EntryHeader, RawEntry, AGGREGATE, AGGREGATE_VERSION, PAYLOAD, POSITION,
};

/// One page of events, and where the next page starts, if there is one.
#[derive(Debug, Clone)]
pub struct Page<E, C> {
    /// The events, oldest first.
    pub events: Vec<StoredEvent<E>>,
    /// Where the next page starts (a version for aggregate reads, a position for time reads);
    /// `None` when this page reached the end.
    pub next: Option<C>,
}

impl<E: ContractEvent> EventStore<E> {
    /// The aggregate's version: how many events it holds (0 when none).
    pub async fn version(&self, aggregate_id: &str) -> Result<u64, Error> {
        check_aggregate_id(aggregate_id)?;
        let key = self.keys_for(aggregate_id).aggregate(aggregate_id);
        let reply: Value = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("XREVRANGE {key}"), e))?;
        let entries =
            parse_range_reply(reply).map_err(|r| Error::channel(format!("XREVRANGE {key}"), r))?;
        Ok(entries.first().and_then(|e| version_of(&e.id)).unwrap_or(0))
    }

    /// Up to `page_size` events of the aggregate from version `from` (1 is the first event).
    /// Asks for one more than `page_size` to know whether there is a next page.
    ///
    /// An event that does not decode (a malformed entry, a missing payload hash, a parameter
    /// that does not decode, an operation or version the contract lacks) fails the read with
    /// an [`Error::BadStoredEvent`] naming the aggregate, the event's version and its position
    /// in the contract's stream; so does an entry whose `payload` names a key outside this
    /// stream's payload hashes (that key is not read). [`stream`](Self::stream),
    /// [`load`](Self::load), [`load_uncached`](Self::load_uncached) and
    /// [`read_between`](Self::read_between) fail the same way.
    ///
    /// ```no_run
    /// # use backbone_core::{events_contract, Error};
    /// # #[events_contract]
    /// # pub trait Account { async fn deposited(&self, cents: i64); }
    /// # async fn run(store: backbone_redis::store::EventStore<AccountEvent>) -> Result<(), Error> {
    /// match store.read("acc-1", 1, 100).await {
    ///     Ok(page) => println!("{} events, next page at {:?}", page.events.len(), page.next),
    ///     Err(Error::BadStoredEvent { version, position, source, .. }) => {
    ///         println!("event {version:?} at {position:?} is bad: {source}")
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read(
        &self,
        aggregate_id: &str,
        from: u64,
        page_size: usize,
    ) -> Result<Page<E, u64>, Error> {
        check_aggregate_id(aggregate_id)?;
        let key = self.keys_for(aggregate_id).aggregate(aggregate_id);
        let page_size = page_size.max(1);
        let reply: Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg(format!("0-{}", from.max(1)))
            .arg("+")
            .arg("COUNT")
            .arg(page_size + 1)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("XRANGE {key}"), e))?;
        let mut raw =
            parse_range_reply(reply).map_err(|r| Error::channel(format!("XRANGE {key}"), r))?;
        let next = (raw.len() > page_size).then(|| raw.pop().and_then(|e| version_of(&e.id)));
        Ok(Page {
            events: self.decode(raw, Origin::Aggregate(aggregate_id)).await?,
            next: next.flatten(),
        })
    }

    /// Every event of the aggregate from version `from`, as a stream read page by page.
    pub fn stream(
        &self,
        aggregate_id: &str,
        from: u64,
    ) -> impl Stream<Item = Result<StoredEvent<E>, Error>> + Send + 'static {
        let store = self.clone();
        let aggregate_id = aggregate_id.to_owned();
        let pages = futures::stream::try_unfold(Some(from), move |from| {
            let (store, aggregate_id) = (store.clone(), aggregate_id.clone());
            async move {
                let Some(from) = from else { return Ok(None) };
                let page = store.read(&aggregate_id, from, 100).await?;
                Ok::<_, Error>(Some((page.events, page.next)))
            }
        });
        futures::TryStreamExt::try_flatten(futures::TryStreamExt::map_ok(pages, |events| {
            futures::stream::iter(events.into_iter().map(Ok))
        }))
    }

    /// Up to `page_size` events of the contract's stream produced between `from_ms` and
    /// `to_ms` (inclusive, milliseconds since the epoch), after position `after` if given.
    /// Includes events sent by plain producers (they have no aggregate). An event that does
    /// not decode is an [`Error::BadStoredEvent`] naming its position (and its aggregate and
    /// version, when it has them), as for [`read`](Self::read).
    pub async fn read_between(
        &self,
        from_ms: u64,
        to_ms: u64,
        after: Option<&str>,
        page_size: usize,
    ) -> Result<Page<E, String>, Error> {
        self.unpartitioned("read_between")?;
        let stream = self.keys().stream();
        let page_size = page_size.max(1);
        let start = match after {
            Some(position) => format!("({position}"),
            None => from_ms.to_string(),
        };
        let reply: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start)
            .arg(to_ms.to_string())
            .arg("COUNT")
            .arg(page_size + 1)
            .query_async(&mut self.connection())
            .await
            .map_err(|e| redis_error(format!("XRANGE {stream}"), e))?;
        let mut raw =
            parse_range_reply(reply).map_err(|r| Error::channel(format!("XRANGE {stream}"), r))?;
        let next = if raw.len() > page_size {
            raw.pop();
            raw.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(Page {
            events: self.decode(raw, Origin::Contract).await?,
            next,
        })
    }

    /// Fetches the payloads of `raw` (entries of the stream `origin` says) in one round trip
    /// and decodes every event. Reads are strict: an entry that does not decode is an
    /// [`Error::BadStoredEvent`] naming its aggregate, version and position, and an entry
    /// whose `payload` names a key outside this stream's payload hashes is malformed: that key
    /// is never read.
    pub(crate) async fn decode(
        &self,
        raw: Vec<RawEntry>,
        origin: Origin<'_>,
    ) -> Result<Vec<StoredEvent<E>>, Error> {
        let keys = match origin {
            Origin::Aggregate(id) => self.keys_for(id),
            Origin::Contract => self.keys(),
        };
        let prefix = keys.payload_prefix();
        let headers = raw
            .iter()
            .map(|entry| {
                let header = entry.header().map_err(|e| origin.bad(entry, e))?;
                match &header.payload {
                    Some(key) if !confined(key, &prefix) => Err(origin.bad(
                        entry,
                        Error::malformed(
                            &entry.id,
                            format!(
                                "field `{PAYLOAD}` names key {key:?}, outside this stream's \
                                 payload hashes ({prefix}*); it is not read"
                            ),
                        ),
                    )),
                    _ => Ok(header),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pipe = redis::pipe();
        for header in &headers {
            if let Some(payload) = &header.payload {
                pipe.cmd("HGETALL").arg(payload);
            }
        }
        let mut payloads: Vec<Vec<(String, Vec<u8>)>> =
            if headers.iter().any(|h| h.payload.is_some()) {
                pipe.query_async(&mut self.connection())
                    .await
                    .map_err(|e| redis_error(format!("fetch payloads of {}", keys.stream()), e))?
            } else {
                Vec::new()
            };
        payloads.reverse();
        let mut parts = Vec::with_capacity(raw.len());
        for (entry, header) in raw.into_iter().zip(headers) {
            let fields =
                parameters(&entry, &header, &mut payloads).map_err(|e| origin.bad(&entry, e))?;
            parts.push((entry, header, fields));
        }
        // Objects hold sealed values: fetched (all at once) before opening. Their paths derive
        // from the contract stream's key, whichever of the two streams the entry comes from.
        let fetched = join_all(
            parts
                .iter_mut()
                .map(|(_, header, fields)| self.fetch_objects(keys.stream(), header, fields)),
        )
        .await;
        for ((entry, _, _), fetched) in parts.iter().zip(fetched) {
            fetched.map_err(|e| origin.bad(entry, e))?;
        }
        let mut opened: Vec<Result<(), Error>> = parts.iter().map(|_| Ok(())).collect();
        let mut sealed = Vec::new();
        let mut at = Vec::new();
        for (i, (_, header, fields)) in parts.iter_mut().enumerate() {
            if let Some(one) = header.sealed(fields) {
                at.push(i);
                sealed.push(one);
            }
        }
        if !sealed.is_empty() {
            for (i, result) in at
                .into_iter()
                .zip(open_all(&*self.key_store, sealed).await?)
            {
                opened[i] = result;
            }
        }
        let mut events = Vec::with_capacity(parts.len());
        for ((entry, header, fields), opened) in parts.into_iter().zip(opened) {
            opened.map_err(|e| origin.bad(&entry, e))?;
            let event = E::decode(&header.operation, header.version, &fields)
                .map_err(|e| origin.bad(&entry, e))?;
            let position = header.position.clone().unwrap_or_else(|| entry.id.clone());
            events.push(StoredEvent {
                event,
                metadata: header.metadata(self.address(), position, 0),
                aggregate_id: header.aggregate,
                aggregate_version: header.aggregate_version,
            });
        }
        Ok(events)
    }
}

impl<E: ContractEvent> EventStore<E> {
    /// Replaces the entry's object references in `fields` with the objects.
    async fn fetch_objects(
        &self,
        stream: &str,
        header: &EntryHeader,
        fields: &mut Fields,
    ) -> Result<(), Error> {
        let Some(first) = header.objects.first() else {
            return Ok(());
        };
        let Some(objects) = &self.objects else {
            return Err(Error::BadObject {
                parameter: first.clone(),
                reason: "the entry keeps it in an object store, and this event store has none \
                         (EventStoreBuilder::object_store)"
                    .into(),
            });
        };
        objects
            .fetch(stream, &header.message_id, &header.objects, fields)
            .await
    }
}

/// An entry's parameters, the one place they are put together: an inline entry's
/// `param.<name>` fields; else, when the entry names a payload hash, that hash's fields (the
/// last of `hashes`, which holds one `HGETALL` reply per such entry, in reverse entry order;
/// a missing hash is an [`Error::MissingPayload`]); else none.
fn parameters(
    entry: &RawEntry,
    header: &EntryHeader,
    hashes: &mut Vec<Vec<(String, Vec<u8>)>>,
) -> Result<Fields, Error> {
    if header.inline {
        return Ok(entry.params());
    }
    let Some(key) = &header.payload else {
        return Ok(Fields::new());
    };
    let fields = hashes.pop().unwrap_or_default();
    if fields.is_empty() {
        return Err(Error::MissingPayload {
            entry: entry.id.clone(),
            key: key.clone(),
        });
    }
    Ok(Fields::from(fields))
}

/// Which stream entries given to [`EventStore::decode`] come from: it says where to find an
/// event's aggregate, version and position.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// The stream of this aggregate: entry ids `0-<version>`, the position in a field.
    Aggregate(&'a str),
    /// The contract's stream: the entry id is the position, the aggregate and its version
    /// are fields (absent for events of plain producers).
    Contract,
}

impl Origin<'_> {
    /// `error` (about `entry`), as an [`Error::BadStoredEvent`] naming the event, when it is a
    /// bad event; else unchanged. Reads the entry's fields as they are, as its header may be
    /// what is wrong.
    fn bad(self, entry: &RawEntry, error: Error) -> Error {
        if !error.is_bad_event() {
            return error;
        }
        let field = |name: &str| {
            let fields = entry.fields.as_ref()?;
            let (_, value) = fields.iter().find(|(n, _)| n == name)?;
            String::from_utf8(value.clone()).ok()
        };
        let (aggregate, version, position) = match self {
            Origin::Aggregate(id) => (Some(id.to_owned()), version_of(&entry.id), field(POSITION)),
            Origin::Contract => (
                field(AGGREGATE),
                field(AGGREGATE_VERSION).and_then(|v| v.parse().ok()),
                Some(entry.id.clone()),
            ),
        };
        Error::BadStoredEvent {
            aggregate,
            version,
            position,
            source: Box::new(error),
        }
    }
}

/// Whether `key` is one of this stream's payload hashes (`<prefix><something>`).
fn confined(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty())
}

/// The version in an aggregate stream's entry id `0-<version>`.
fn version_of(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse().ok()
}
