#!/usr/bin/env bash
# Runs a Kafka tool class with the jars in /opt/kafka/libs (what Kafka's own script of this name
# does); C1 only: a tool (the health check) runs for seconds, where start-up time is what counts.
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
  -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' "$@"
