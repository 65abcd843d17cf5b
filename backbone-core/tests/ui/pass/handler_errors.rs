//! Handlers use `?` on any error and `Err("reason".into())`.

use std::sync::Arc;

use backbone_core::{
    async_trait, events_contract, Acknowledge, ConsumerContext, Dispatch, Error, HandlerResult,
    MessageId, Metadata,
};

#[events_contract]
pub trait Files {
    async fn uploaded(&self, path: String);
}

struct Reader;

#[async_trait]
impl FilesConsumer for Reader {
    async fn uploaded(&self, _ctx: &ConsumerContext, path: String) -> HandlerResult {
        if path.is_empty() {
            return Err("the path is empty".into());
        }
        let _contents = std::fs::read(&path)?;
        Ok(())
    }
}

struct NoAck;

#[async_trait]
impl Acknowledge for NoAck {
    async fn ack(&self, _metadata: &Metadata) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let ctx = ConsumerContext::new(
        Metadata::new(MessageId::new(), "uploaded", 0, "files"),
        Arc::new(NoAck),
    );
    let empty = FilesEvent::Uploaded {
        path: String::new(),
    };
    let err = empty.dispatch(&Reader, &ctx).await.unwrap_err();
    assert_eq!(err.to_string(), "the path is empty");
    let missing = FilesEvent::Uploaded {
        path: "/definitely/not/here".into(),
    };
    let err = missing.dispatch(&Reader, &ctx).await.unwrap_err();
    let io = err.into_inner().downcast::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
}
