"""Publish to RabbitMQ with PyPI pika (publisher confirms), then read the messages back.

Usage: rabbitmq_roundtrip.py AMQP_URL EXCHANGE QUEUE COUNT [produce|consume]

Declares a durable direct EXCHANGE and a durable QUEUE bound to it with routing key QUEUE,
publishes COUNT persistent messages "m{i}" with confirms on (pika raises if the broker nacks
or cannot route one), then gets them back with basic_get (acking each). Prints one JSON object
per message consumed on stdout: {"body", "redelivered"}. Exits 3 on a 60 s timeout. With
`produce` only the publishing runs, with `consume` only the reading (across a broker restart).
"""
import json
import sys
import time

import pika

url, exchange, queue, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "both"
deadline = time.monotonic() + 60

params = pika.URLParameters(url)
params.socket_timeout = 10
params.blocked_connection_timeout = 30
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
ch.exchange_declare(exchange, exchange_type="direct", durable=True)
ch.queue_declare(queue, durable=True)
ch.queue_bind(queue, exchange, routing_key=queue)
if mode in ("both", "produce"):
    for i in range(count):
        # With confirms on, this returns once the broker confirmed the message; a nack raises
        # NackError and an unroutable message (mandatory) UnroutableError.
        ch.basic_publish(exchange, queue, f"m{i}".encode(),
                         pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
                         mandatory=True)

got = 0
while mode in ("both", "consume") and got < count:
    if time.monotonic() > deadline:
        print(f"timeout: {got} of {count} messages read", file=sys.stderr)
        sys.exit(3)
    method, _props, body = ch.basic_get(queue, auto_ack=False)
    if method is None:
        time.sleep(0.05)
        continue
    print(json.dumps({"body": body.decode(), "redelivered": method.redelivered}), flush=True)
    ch.basic_ack(method.delivery_tag)
    got += 1
conn.close()
