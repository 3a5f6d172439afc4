//! Runs the `order_service` example's code: the domain row and its event commit together, and a
//! failed domain write leaves no event behind.

#[path = "../examples/order_service.rs"]
mod order_service;

use outbox::testkit::TestDb;

#[tokio::test]
async fn the_example_writes_the_order_and_its_event_in_one_transaction() {
    let db = TestDb::new().await.unwrap();
    order_service::create_schema(&db.pool).await.unwrap();
    let (order, event) = order_service::place_order(&db.pool, "widget", 3).await.unwrap();
    let (event_type, aggregate_id, payload): (String, String, serde_json::Value) = sqlx::query_as(
        "SELECT event_type, aggregate_id, payload FROM outbox_events WHERE id = $1 AND status = 'new'",
    )
    .bind(event)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(event_type, "order.placed");
    assert_eq!(aggregate_id, order.to_string());
    assert_eq!(payload["quantity"], 3);

    // The order is refused by its CHECK: no order, and no event either.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(order_service::place_order(&db.pool, "widget", 0).await.is_err());
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(before, after);
}
