"""Read what canal-server published, as a third-party consumer would (PyPI confluent-kafka, pika).

Usage: mq_consume.py kafka BOOTSTRAP TOPIC PARTITIONS COUNT
       mq_consume.py rabbitmq AMQP_URL QUEUE COUNT

Kafka: assigns every partition of TOPIC from the beginning (no group rebalance to wait for) and
reads COUNT records. RabbitMQ: basic_get (acking each) until COUNT messages arrived.
Prints one JSON object per message on stdout: {"partition", "offset", "value" (hex of the
exact bytes)}; a FlatMessage JSON payload is also parsed here and reported as
"flat": {"database", "table", "type", "isDdl", "data"} (what a Python consumer of Canal's flat
messages uses). Exits 3 on a 60 s timeout.
"""
import json
import sys
import time

deadline = time.monotonic() + 60


def report(partition, offset, value):
    out = {
        "partition": partition,
        "offset": offset,
        "value": value.hex(),
    }
    if value[:1] == b"{":
        m = json.loads(value.decode("utf-8"))
        out["flat"] = {k: m.get(k) for k in ("database", "table", "type", "isDdl", "data")}
    print(json.dumps(out), flush=True)


def timeout(got, count):
    print(f"timeout: {got} of {count} messages read", file=sys.stderr)
    sys.exit(3)


def kafka(bootstrap, topic, partitions, count):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{topic}-py",
        "enable.auto.commit": False,
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    while got < count:
        if time.monotonic() > deadline:
            timeout(got, count)
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        report(msg.partition(), msg.offset(), msg.value())
        got += 1
    consumer.close()


def rabbitmq(url, queue, count):
    import pika

    params = pika.URLParameters(url)
    params.socket_timeout = 10
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    got = 0
    while got < count:
        if time.monotonic() > deadline:
            timeout(got, count)
        method, _props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            time.sleep(0.05)
            continue
        report(0, got, body)
        ch.basic_ack(method.delivery_tag)
        got += 1
    conn.close()


if sys.argv[1] == "kafka":
    kafka(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
elif sys.argv[1] == "rabbitmq":
    rabbitmq(sys.argv[2], sys.argv[3], int(sys.argv[4]))
else:
    print(f"unknown broker {sys.argv[1]!r}", file=sys.stderr)
    sys.exit(2)
