//! The in-memory producer: [`InMemoryProducerBuilder`] and the publisher that appends to a
//! stream of the broker, offloading the large parameters of `storage = "object"` operations
//! to the broker's object store first.

use std::sync::Arc;

use async_trait::async_trait;

use super::{lock, InMemoryBroker, Stream, SYSTEM};
use crate::middleware::{ChannelInfo, Middlewares};
use crate::objects::ObjectStorage;
use crate::storage::Storage;
use crate::{
    Error, MessageId, Middleware, OutgoingEvent, Producer, ProducerBuilder, Publish, StreamAddress,
};

/// Builds producers for an [`InMemoryBroker`]; options as on the Redis builder.
#[derive(Debug, Clone)]
pub struct InMemoryProducerBuilder {
    broker: InMemoryBroker,
    environment: Option<String>,
    uri: Option<String>,
    middlewares: Middlewares,
}

impl InMemoryProducerBuilder {
    pub(super) fn new(broker: InMemoryBroker) -> Self {
        InMemoryProducerBuilder {
            broker,
            environment: None,
            uri: None,
            middlewares: Middlewares::default(),
        }
    }

    /// The environment (optional).
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The stream's uri (required).
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Adds a [`Middleware`] around every send, inside the ones added before.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middlewares = self.middlewares.with(middleware);
        self
    }
}

impl ProducerBuilder for InMemoryProducerBuilder {
    async fn build_producer(self) -> Result<Producer, Error> {
        let address =
            StreamAddress::from_options(self.environment.as_deref(), self.uri.as_deref())?;
        let stream = self.broker.stream(&address);
        let publisher = MemoryPublisher {
            stream,
            objects: self.broker.objects.clone(),
            address,
        };
        Ok(
            Producer::with_middlewares(Arc::new(publisher), self.middlewares)
                .with_key_store(self.broker.keys.clone()),
        )
    }
}

struct MemoryPublisher {
    stream: Arc<Stream>,
    objects: ObjectStorage,
    address: StreamAddress,
}

#[async_trait]
impl Publish for MemoryPublisher {
    async fn publish(&self, mut event: OutgoingEvent) -> Result<MessageId, Error> {
        let id = event.message_id;
        if event.storage == Storage::Object {
            // As on Redis: the parameters are sealed already, so an object holds ciphertext.
            let stream = super::object_stream(&self.address);
            let moved = self
                .objects
                .offload(&stream, &id, &mut event.fields)
                .await?;
            event.envelope.objects = moved;
        }
        let len = {
            let mut state = lock(&self.stream.state);
            state.entries.push(Arc::new(event));
            state.entries.len()
        };
        self.stream.appended.send_replace(len);
        Ok(id)
    }

    fn info(&self) -> ChannelInfo {
        ChannelInfo::producer(SYSTEM, self.address.clone())
    }
}
