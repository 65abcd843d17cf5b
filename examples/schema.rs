//! Prints the AsyncAPI 3.0 document of the shipment-tracking contract on its stream
//! (`dev:hello.event-sourcing`), or with `--operations` the JSON Schema of each operation and
//! version. Needs the `schema` feature (on for the examples); no Redis.
//!
//! ```sh
//! cargo run --example schema > shipment.asyncapi.json
//! cargo run --example schema -- --operations
//! ```

mod shipment;

use backbone_core::{schema, StreamAddress};
use shipment::ShipmentTracking;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = match std::env::args().nth(1).as_deref() {
        None => {
            let address = StreamAddress::new(Some(shipment::ENVIRONMENT), shipment::URI)?;
            schema::asyncapi::document::<ShipmentTracking>(&address)
        }
        Some("--operations") => {
            let ops: Vec<_> = schema::operation_schemas::<ShipmentTracking>()
                .into_iter()
                .map(|op| op.schema)
                .collect();
            serde_json::Value::from(ops)
        }
        Some(other) => return Err(format!("unknown argument {other:?}; try --operations").into()),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
