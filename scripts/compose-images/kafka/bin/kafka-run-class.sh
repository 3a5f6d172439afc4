#!/usr/bin/env bash
# Runs a Kafka class with the jars in /opt/kafka/libs (what Kafka's own script of this name does).
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} -XX:+UseSerialGC -Djava.awt.headless=true \
  -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' "$@"
