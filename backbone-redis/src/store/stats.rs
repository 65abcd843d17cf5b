//! Time windows and statistics: count, sum, average, minimum and maximum of a numeric
//! projection of the events between two times ([`EventStore::window`]), the number of entries
//! between two times without decoding them ([`EventStore::count_between`]), and the store's
//! totals and recent rate ([`EventStore::stats`]).
//!
//! Times are the milliseconds of the entries' stream ids in the contract's stream, i.e. the
//! Redis server's clock when the entry was written; bounds are inclusive. Windows cover every
//! entry of the stream, events sent by plain producers included (they have no aggregate).

use std::time::Duration;

use backbone_core::store::{StoredEvent, WindowStats};
use backbone_core::{ContractEvent, Error};

use super::EventStore;
use crate::connection::redis_error;
use crate::lua::COUNT;

/// Events decoded per page by [`EventStore::window`].
const WINDOW_PAGE: usize = 500;

/// Entries counted per round trip by [`EventStore::count_between`].
const COUNT_PAGE: usize = 1000;

/// The store's totals and recent rate, from [`EventStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreStats {
    /// Events appended through the store since the stream was created (the `appended` field
    /// of [`StreamKeys::store_stats`](crate::keys::StreamKeys::store_stats)). Replayed appends
    /// (a known idempotency key) and version conflicts add nothing; trimming removes nothing.
    pub appended: u64,
    /// Entries in the contract's stream now (`XLEN`): store events and events sent by plain
    /// producers, minus whatever was trimmed.
    pub stream_length: u64,
    /// Entries of the contract's stream written in the last `window`, up to `at_ms`.
    pub in_window: u64,
    /// `in_window` per second of `window`.
    pub rate_per_sec: f64,
    /// The window asked for.
    pub window: Duration,
    /// The Redis server's time (ms since the epoch) the window ends at.
    pub at_ms: u64,
}

impl<E: ContractEvent> EventStore<E> {
    /// The count, sum, average, minimum and maximum of `value` over the events of the
    /// contract's stream written between `from_ms` and `to_ms` (inclusive, ms since the epoch,
    /// by stream id). Events for which `value` returns `None` (or NaN) are left out of every
    /// figure. Reads 500 events per page (see [`EventStore::window_paged`]).
    ///
    /// Values are added oldest first; an event that does not decode is an error (as for
    /// [`EventStore::read_between`]).
    ///
    /// ```no_run
    /// use backbone_core::{events_contract, Error};
    /// use backbone_redis::store::EventStoreBuilder;
    ///
    /// #[events_contract]
    /// pub trait Orders {
    ///     async fn order_placed(&self, gateway: String, amount_cents: u64);
    ///     async fn order_cancelled(&self, gateway: String);
    /// }
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let store = EventStoreBuilder::new().uri("orders").build::<OrdersEvent>().await?;
    /// let now = backbone_core::metadata::now_millis();
    /// // Orders placed in the last minute; cancellations have no amount, so they don't count.
    /// let placed = store
    ///     .window(now - 60_000, now, |e| match &e.event {
    ///         OrdersEvent::OrderPlaced { amount_cents, .. } => Some(*amount_cents as f64),
    ///         OrdersEvent::OrderCancelled { .. } => None,
    ///     })
    ///     .await?;
    /// println!("{} orders, {} cents, average {:?}", placed.count, placed.sum, placed.avg);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn window(
        &self,
        from_ms: u64,
        to_ms: u64,
        value: impl FnMut(&StoredEvent<E>) -> Option<f64>,
    ) -> Result<WindowStats, Error> {
        self.window_paged(from_ms, to_ms, WINDOW_PAGE, value).await
    }

    /// [`EventStore::window`], reading `page_size` events (at least 1) per round trip: the
    /// memory it needs is one page, whatever the window's size.
    ///
    /// ```no_run
    /// # use backbone_core::{events_contract, Error};
    /// # #[events_contract]
    /// # pub trait Orders { async fn order_placed(&self, gateway: String, amount_cents: u64); }
    /// # async fn run(store: backbone_redis::store::EventStore<OrdersEvent>) -> Result<(), Error> {
    /// // The largest order of gateway "north" ever, 100 events at a time.
    /// let north = store
    ///     .window_paged(0, u64::MAX, 100, |e| match &e.event {
    ///         OrdersEvent::OrderPlaced { gateway, amount_cents } if gateway == "north" => {
    ///             Some(*amount_cents as f64)
    ///         }
    ///         _ => None,
    ///     })
    ///     .await?;
    /// println!("largest: {:?}", north.max);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn window_paged(
        &self,
        from_ms: u64,
        to_ms: u64,
        page_size: usize,
        mut value: impl FnMut(&StoredEvent<E>) -> Option<f64>,
    ) -> Result<WindowStats, Error> {
        let mut stats = WindowStats::default();
        if from_ms > to_ms {
            return Ok(stats);
        }
        let mut after: Option<String> = None;
        loop {
            let page = self
                .read_between(from_ms, to_ms, after.as_deref(), page_size)
                .await?;
            for event in &page.events {
                if let Some(v) = value(event).filter(|v| !v.is_nan()) {
                    stats.add(v);
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(stats),
            }
        }
    }

    /// How many entries the contract's stream holds between `from_ms` and `to_ms` (inclusive,
    /// ms since the epoch, by stream id), whatever they are. Counts on the server, a thousand
    /// entries per round trip, without reading or decoding any entry or payload.
    ///
    /// ```no_run
    /// # use backbone_core::{events_contract, Error};
    /// # #[events_contract]
    /// # pub trait Orders { async fn order_placed(&self, gateway: String, amount_cents: u64); }
    /// # async fn run(store: backbone_redis::store::EventStore<OrdersEvent>) -> Result<(), Error> {
    /// let now = backbone_core::metadata::now_millis();
    /// let last_second = store.count_between(now - 999, now).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn count_between(&self, from_ms: u64, to_ms: u64) -> Result<u64, Error> {
        let mut total = 0;
        for keys in self.layout().partitions() {
            total += self.count_in(keys.stream(), from_ms, to_ms).await?;
        }
        Ok(total)
    }

    /// [`count_between`](Self::count_between) of one partition's stream.
    async fn count_in(&self, stream: &str, from_ms: u64, to_ms: u64) -> Result<u64, Error> {
        if from_ms > to_ms {
            return Ok(0);
        }
        let end = to_ms.to_string();
        let mut start = from_ms.to_string();
        let mut total = 0;
        loop {
            let (n, last): (u64, String) = COUNT
                .key(stream)
                .arg(&start)
                .arg(&end)
                .arg(COUNT_PAGE)
                .invoke_async(&mut self.connection())
                .await
                .map_err(|e| redis_error(format!("count entries of {stream}"), e))?;
            total += n;
            if n < COUNT_PAGE as u64 {
                return Ok(total);
            }
            start = format!("({last}");
        }
    }

    /// The store's totals, and how many entries the contract's stream received in the last
    /// `window` (at least 1 ms) by the Redis server's clock. `appended` and `stream_length`
    /// are read together (`MULTI`); `in_window` is counted right after, with
    /// [`EventStore::count_between`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use backbone_core::{events_contract, Error};
    /// # #[events_contract]
    /// # pub trait Orders { async fn order_placed(&self, gateway: String, amount_cents: u64); }
    /// # async fn run(store: backbone_redis::store::EventStore<OrdersEvent>) -> Result<(), Error> {
    /// let stats = store.stats(Duration::from_secs(60)).await?;
    /// println!(
    ///     "{} appended via the store, {} in the stream, {:.1}/s over the last minute",
    ///     stats.appended, stats.stream_length, stats.rate_per_sec
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stats(&self, window: Duration) -> Result<StoreStats, Error> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if window_ms == 0 {
            return Err(Error::Config(format!(
                "stats window must be at least 1 ms, got {window:?}"
            )));
        }
        let (mut at_ms, mut appended, mut stream_length) = (0, 0, 0);
        for keys in self.layout().partitions() {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("TIME")
                .cmd("HGET")
                .arg(keys.store_stats())
                .arg("appended")
                .cmd("XLEN")
                .arg(keys.stream());
            let ((secs, micros), added, length): ((u64, u64), Option<u64>, u64) = pipe
                .query_async(&mut self.connection())
                .await
                .map_err(|e| redis_error(format!("read the stats of {}", keys.stream()), e))?;
            at_ms = at_ms.max(secs * 1000 + micros / 1000);
            appended += added.unwrap_or(0);
            stream_length += length;
        }
        let in_window = self
            .count_between(at_ms.saturating_sub(window_ms - 1), at_ms)
            .await?;
        Ok(StoreStats {
            appended,
            stream_length,
            in_window,
            rate_per_sec: in_window as f64 / window.as_secs_f64(),
            window,
            at_ms,
        })
    }
}
