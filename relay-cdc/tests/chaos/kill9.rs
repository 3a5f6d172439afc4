//! Kill -9 of the relay, repeatedly, while a writer inserts.

use std::time::Duration;

use crate::common::*;
use crate::report::case;

/// 10 kills over 50k events (500 transactions of 100, 20 aggregates): nothing lost, order per
/// aggregate kept, the slot confirmed to the end.
#[tokio::test(flavor = "multi_thread")]
async fn kill9_ten_times_during_50k_events() {
    case("kill9-x10-50k", async {
        let f = Fixture::new(4).await;
        let writer = spawn_writer(f.db.pool.clone(), 500, 100, 20, Duration::from_millis(5));
        let mut relay = f.relay(&[]);
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(400 + 150 * i)).await;
            relay.kill9();
            relay = f.relay(&[]);
        }
        writer.await?;
        f.wait_all_sent(Duration::from_secs(180)).await;
        f.wait_slot_caught_up().await;
        let rows = f.row_ids().await;
        anyhow::ensure!(rows.len() == 50_000, "{} rows in the outbox", rows.len());
        let records = f.wait_records(50_000).await.len();
        let duplicates = assert_delivered(&f, &rows);
        drop(relay);
        Ok(format!(
            "10 kills, 50000 events: 0 lost, {records} records, {duplicates} duplicates, order kept, slot confirmed"
        ))
    })
    .await;
}
