//! A consumer of a partitioned stream: one set of tasks (reader, fetcher, claimer, worker)
//! per partition, and [`supervise`], which stops them together and ends with the first error.

use backbone_core::Error;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs until `stop` is cancelled or one partition's worker ends (by an error); then stops
/// every partition, waits for all of them and returns the first error, if any.
pub(super) async fn supervise(
    stop: CancellationToken,
    partitions: Vec<(CancellationToken, JoinHandle<Result<(), Error>>)>,
) -> Result<(), Error> {
    let (stops, tasks): (Vec<_>, Vec<_>) = partitions.into_iter().unzip();
    let stop_all = || stops.iter().for_each(CancellationToken::cancel);
    let mut running: FuturesUnordered<_> = tasks.into_iter().collect();
    let mut outcome = Ok(());
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                stop_all();
            }
            next = running.next() => {
                let Some(result) = next else { return outcome };
                let result = result.unwrap_or_else(|e| {
                    Err(Error::Stopped(format!("consumer stopped: a partition's task failed: {e}")))
                });
                if let (Err(e), true) = (result, outcome.is_ok()) {
                    outcome = Err(e);
                }
                if !stopping {
                    stopping = true;
                    stop_all();
                }
            }
        }
    }
}
