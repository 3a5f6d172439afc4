#!/usr/bin/env bash
# apache/kafka's environment interface: every KAFKA_* variable becomes a server.properties
# line (KAFKA_ dropped, lower case, "___" -> "-", "__" -> "_", "_" -> "."), CLUSTER_ID formats
# the storage on first start, then the broker runs in the foreground.
set -euo pipefail
props=/opt/kafka/config/server.properties
: >"$props"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_LOG4J_OPTS|KAFKA_GC_LOG_OPTS|KAFKA_JMX_OPTS) continue ;;
    KAFKA_*) ;;
    *) continue ;;
  esac
  key=${name#KAFKA_}
  key=${key,,}
  key=${key//___/-}
  key=${key//__/@}
  key=${key//_/.}
  key=${key//@/_}
  printf '%s=%s\n' "$key" "$value" >>"$props"
done < <(env)
: "${CLUSTER_ID:?CLUSTER_ID is not set}"
log_dirs=$(sed -n 's/^log\.dirs=//p' "$props")
if [ ! -e "${log_dirs%%,*}/meta.properties" ]; then
  /opt/kafka/bin/kafka-storage.sh format -t "$CLUSTER_ID" -c "$props" --ignore-formatted
fi
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
exec java $KAFKA_HEAP_OPTS -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j.configuration=file:/opt/kafka/config/log4j.properties ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$props"
