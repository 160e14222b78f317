//! An event-driven micro service without gRPC handlers of its own:
//!
//! - every event on the durable `orders` topic (`{"id": ..., ...}`) is stored in the store
//!   table `orders` under `order/<id>`; the service's instances share the topic (group
//!   `orders`), an event is acked once stored, and one that cannot be handled is retried
//!   three times, then given up on;
//! - every broker message on `audit` is appended to the durable `audit-log` topic; the
//!   instances share the subscription, so each message is appended once.
//!
//! ```sh
//! micro run ./examples/orders
//! micro events publish orders '{"id": 7, "total": 12}'
//! micro store read --table orders order/7
//! micro broker publish audit '{"who": "admin"}'
//! micro events read audit-log
//! ```

use micro::broker::Message;
use micro::events::{ConsumeOptions, Event, Start};

#[tokio::main]
async fn main() -> micro::Result<()> {
    micro::Service::new("orders")
        .consume("orders", ConsumeOptions::default().start(Start::Sequence(1)).retry_limit(3), store_order)
        .subscribe("audit", append_audit)
        .run()
        .await
}

/// Stores one order under `order/<id>`.
async fn store_order(event: Event) -> Result<(), String> {
    let order: serde_json::Value =
        event.json().map_err(|err| format!("order {} is not JSON: {err}", event.sequence))?;
    let id = match &order["id"] {
        serde_json::Value::String(id) => id.clone(),
        serde_json::Value::Number(id) => id.to_string(),
        _ => return Err(format!("order {} has no id", event.sequence)),
    };
    micro::store::Store::table("orders")
        .write(&format!("order/{id}"), event.payload.clone())
        .await
        .map_err(|err| err.to_string())?;
    micro::tracing::info!(%id, sequence = event.sequence, "Stored order");
    Ok(())
}

/// Appends one audit message to the durable `audit-log` topic.
async fn append_audit(message: Message) {
    match micro::events::publish_raw("audit-log", message.body, message.header).await {
        Ok(published) => micro::tracing::info!(sequence = published.sequence, "Appended audit message"),
        Err(err) => micro::tracing::warn!(cause = %err, "cannot append an audit message; it is lost"),
    }
}
