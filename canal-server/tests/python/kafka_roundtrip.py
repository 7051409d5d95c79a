"""Produce keyed records to a Kafka-protocol broker with PyPI confluent-kafka, then read them back.

Usage: kafka_roundtrip.py BOOTSTRAP TOPIC PARTITIONS COUNT [produce|consume]

Creates TOPIC with PARTITIONS partitions (it must not exist), produces COUNT records with key
"k{i % 7}" and value "v{i}" from an idempotent producer with acks=all (each delivery report must
be a success), then consumes the topic from the beginning in a fresh consumer group (subscribe,
rebalance, commit) until COUNT records arrived. Prints one JSON object per line on stdout:
first {"partitions": N} from the topic's metadata, then one {"partition", "offset", "key",
"value"} per record consumed. Exits 2 on a produce error, 3 on a 60 s timeout. With `produce`
only the first half runs, with `consume` only the second (across a broker restart in between).
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "both"
deadline = time.monotonic() + 60


def produce():
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    for fut in admin.create_topics([new]).values():
        fut.result(timeout=30)
    meta = admin.list_topics(topic, timeout=30)
    print(json.dumps({"partitions": len(meta.topics[topic].partitions)}), flush=True)

    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
    })
    for i in range(count):
        producer.produce(topic, key=f"k{i % 7}", value=f"v{i}", on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(30)
    if left or errors:
        print(f"produce failed: {left} undelivered, errors {errors[:5]}", file=sys.stderr)
        sys.exit(2)


def consume():
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{topic}-reader",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    got = 0
    while got < count:
        if time.monotonic() > deadline:
            print(f"timeout: {got} of {count} records consumed", file=sys.stderr)
            sys.exit(3)
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        print(json.dumps({
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": msg.key().decode(),
            "value": msg.value().decode(),
        }), flush=True)
        got += 1
    consumer.commit(asynchronous=False)
    consumer.close()


if mode in ("both", "produce"):
    produce()
if mode in ("both", "consume"):
    consume()
