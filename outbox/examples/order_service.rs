//! An application using the outbox: it writes its own domain row (an order) and the event that
//! announces it in one transaction, so the event exists exactly when the order does. relay-cdc
//! then publishes the event from the WAL; nothing here talks to Kafka.
//!
//! ```bash
//! eval "$(scripts/services env)"          # DATABASE_URL of a database `relay-cdc migrate` set up
//! cargo run -p outbox --example order_service -- widget 3
//! ```

use anyhow::Context;
use outbox::{NewEvent, emit};
use sqlx::PgPool;
use uuid::Uuid;

/// The application's own schema (an application would keep it in its own migrations).
pub async fn create_schema(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS shop_orders (
             id       uuid   PRIMARY KEY,
             item     text   NOT NULL,
             quantity int    NOT NULL CHECK (quantity > 0)
         )",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Places an order: the order row and its `order.placed` event commit together or not at all.
/// Returns (order id, event id).
pub async fn place_order(pool: &PgPool, item: &str, quantity: i32) -> anyhow::Result<(Uuid, Uuid)> {
    let order_id = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO shop_orders (id, item, quantity) VALUES ($1, $2, $3)")
        .bind(order_id)
        .bind(item)
        .bind(quantity)
        .execute(&mut *tx)
        .await
        .context("inserting the order")?;
    let event_id = emit(
        &mut tx,
        NewEvent {
            event_type: "order.placed",
            aggregate_type: "order",
            aggregate_id: &order_id.to_string(),
            payload: serde_json::json!({ "order_id": order_id, "item": item, "quantity": quantity }),
            // One event per order, even if this function is retried after a lost commit reply.
            idempotency_key: &format!("order.placed:{order_id}"),
        },
    )
    .await
    .context("writing the event")?
    .context("the event already exists")?;
    tx.commit().await?;
    Ok((order_id, event_id))
}

#[allow(dead_code)] // the test includes this file for its functions
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("set DATABASE_URL")?;
    let mut args = std::env::args().skip(1);
    let item = args.next().unwrap_or_else(|| "widget".into());
    let quantity: i32 = args.next().map_or(Ok(1), |q| q.parse()).context("quantity")?;
    let pool = PgPool::connect(&url).await?;
    create_schema(&pool).await?;
    let (order, event) = place_order(&pool, &item, quantity).await?;
    println!("order {order} placed; event {event} is in outbox_events for relay-cdc");
    Ok(())
}
