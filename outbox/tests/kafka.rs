//! Proves the broker is a real Kafka over TCP: rdkafka writes, kcat (Debian's librdkafka build,
//! a separate process) reads the same records back.

use std::time::Duration;

use outbox::testkit::{create_topic, kafka_bootstrap, kcat_read_all};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
async fn rdkafka_writes_and_kcat_reads_back() {
    let topic = create_topic("it-kafka", 3).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let key = format!("agg-{}", i % 4);
        let value = format!("{{\"n\":{i}}}");
        let delivery = producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&value)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "id",
                        value: Some(&i.to_string()),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        sent.push((delivery.partition, delivery.offset, key, value));
    }

    let mut read = kcat_read_all(&topic).unwrap();
    assert_eq!(read.len(), 20, "kcat read {read:?}");
    read.sort_by_key(|r| (r.partition, r.offset));
    sent.sort_by_key(|s| (s.0, s.1));
    for (r, s) in read.iter().zip(&sent) {
        assert_eq!((r.partition, r.offset, &r.key, &r.value), (s.0, s.1, &s.2, &s.3));
        assert!(r.headers.starts_with("id="), "headers {:?}", r.headers);
    }
    // Same key, same partition: the broker partitions by key.
    for k in 0..4 {
        let parts: std::collections::HashSet<i32> = read
            .iter()
            .filter(|r| r.key == format!("agg-{k}"))
            .map(|r| r.partition)
            .collect();
        assert_eq!(parts.len(), 1);
    }
}
