//! The reader: on demand, reads this consumer's pending entries (after a start or a reconnect),
//! then new ones with a blocking `XREADGROUP` on its own connection, and hands each batch to
//! the fetcher.

use std::sync::Arc;
use std::time::Duration;

use backbone_core::middleware::{ReadKind, ReadRequest};
use backbone_core::Error;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::job::Shared;
use super::messages::Batch;
use crate::connection::{redis_error, Connection};
use crate::entry::{parse_read_reply, RawEntry};
use crate::retry::Backoff;

pub(super) struct Reader {
    pub shared: Arc<Shared>,
    /// A connection of its own (a blocking read stalls its connection); it connects again by
    /// itself on the command after a failure.
    pub connection: Connection,
    pub block: Duration,
}

impl Reader {
    /// Serves read requests (each carries the number of entries wanted) until stopped: each
    /// non-empty batch goes to the fetcher, which fetches its payloads while
    /// this task already reads the next batch.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<usize>,
        batches: mpsc::Sender<Batch>,
        stop: CancellationToken,
    ) {
        // `Some(cursor)`: re-reading own pending entries after `cursor`; `None`: reading new ones.
        let mut pending: Option<String> = Some("0-0".into());
        let mut backoff = Backoff::read();
        let mut failing = false;
        loop {
            let count = tokio::select! {
                _ = stop.cancelled() => return,
                request = requests.recv() => match request { Some(n) => n, None => return },
            };
            loop {
                let result = tokio::select! {
                    biased;
                    result = self.read(pending.as_deref(), count) => result,
                    _ = stop.cancelled() => return,
                };
                match &result {
                    Ok(_) => self.shared.health.read_ok(std::mem::take(&mut failing)),
                    Err(_) => {
                        self.shared.health.read_failed(failing);
                        failing = true;
                    }
                }
                match result {
                    Ok(entries) if entries.is_empty() => pending = None,
                    Ok(entries) => {
                        backoff = Backoff::read();
                        let counts = pending.is_some();
                        if let (Some(cursor), Some(last)) = (pending.as_mut(), entries.last()) {
                            *cursor = last.id.clone();
                        }
                        let _ = batches.send(Batch { entries, counts }).await;
                        break;
                    }
                    Err(e) => {
                        if self.recover(e, &stop, &mut backoff).await.is_err() {
                            return;
                        }
                        pending = Some("0-0".into());
                    }
                }
            }
        }
    }

    /// One read, inside the middlewares' read hooks.
    async fn read(&mut self, after: Option<&str>, count: usize) -> Result<Vec<RawEntry>, Error> {
        let shared = self.shared.clone();
        let kind = match after {
            Some(_) => ReadKind::Own,
            None => ReadKind::New,
        };
        let mut entries = Vec::new();
        let read = async {
            entries = self.xreadgroup(after, count).await?;
            Ok(entries.len())
        };
        shared
            .middlewares
            .read(&shared.info, ReadRequest { kind, count }, Box::pin(read))
            .await?;
        Ok(entries)
    }

    async fn xreadgroup(
        &mut self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<RawEntry>, Error> {
        let shared = &self.shared;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&shared.group)
            .arg(&shared.name)
            .arg("COUNT")
            .arg(count);
        if after.is_none() {
            cmd.arg("BLOCK").arg(self.block.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(shared.keys.stream())
            .arg(after.unwrap_or(">"));
        let context = || format!("XREADGROUP on {}", shared.keys.stream());
        let reply: Value = cmd
            .query_async(&mut self.connection)
            .await
            .map_err(|e| redis_error(context(), e))?;
        parse_read_reply(reply)
            .map_err(|reason| Error::channel(context(), format!("unexpected reply: {reason}")))
    }

    /// Backs off after an error (the next read connects again if the connection broke); sends
    /// fatal ones to the worker.
    async fn recover(
        &mut self,
        e: Error,
        stop: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), ()> {
        let fatal = &self.shared.fatal;
        let e = fatal.raise_if_fatal(e).ok_or(())?;
        let delay = backoff.next();
        tracing::warn!(stream = self.shared.keys.stream(), consumer = %self.shared.name, error = %e,
            retry_in_ms = delay.as_millis() as u64, "read failed; will try again (connecting again if the connection broke)");
        tokio::select! {
            _ = stop.cancelled() => return Err(()),
            _ = tokio::time::sleep(delay) => {}
        }
        Ok(())
    }
}
