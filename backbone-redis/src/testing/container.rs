//! A `redis:7` container (testcontainers), kept by a thread with its own runtime.

use std::thread::{self, JoinHandle};

use backbone_core::Error;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::{runners::AsyncRunner, GenericImage, TestcontainersError};
use tokio::sync::oneshot;

use super::no_redis_message;

/// Keeps a container on a thread with its own runtime, so that it outlives the runtime of the
/// test that started it; dropping this removes the container.
#[derive(Debug)]
pub(super) struct ContainerKeeper {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ContainerKeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(super) async fn start_container() -> Result<(String, ContainerKeeper), Error> {
    let (ready_tx, ready_rx) = oneshot::channel::<Result<String, String>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let keep = async move {
        let image = GenericImage::new("redis", "7")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"));
        let started = async {
            let container = image.start().await?;
            let host = container.get_host().await?;
            let port = container.get_host_port_ipv4(6379).await?;
            let url = format!("redis://{host}:{port}/");
            Ok::<_, TestcontainersError>((container, url))
        };
        match started.await {
            Ok((container, url)) => {
                if ready_tx.send(Ok(url)).is_ok() {
                    let _ = stop_rx.await;
                }
                drop(container);
            }
            Err(e) => drop(ready_tx.send(Err(e.to_string()))),
        }
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let thread = thread::Builder::new()
        .name("backbone-redis-container".into())
        .spawn(move || runtime().expect("cannot build a runtime").block_on(keep))
        .map_err(|e| Error::channel("start the testcontainers thread", e))?;
    let (stop, thread) = (Some(stop_tx), Some(thread));
    let keeper = ContainerKeeper { stop, thread };
    let failure = match ready_rx.await {
        Ok(Ok(url)) => return Ok((url, keeper)),
        Ok(Err(e)) => e,
        Err(_) => "its thread died".to_owned(),
    };
    let hint = no_redis_message();
    Err(Error::Config(format!(
        "no redis:7 container ({failure}); {hint}"
    )))
}
