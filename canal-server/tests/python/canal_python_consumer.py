"""Consume a canal-rs destination with the unmodified PyPI canal-python 0.4 client.

Usage: canal_python_consumer.py HOST PORT DESTINATION FILTER ROWS

Connects, authenticates (empty credentials), subscribes (canal-python first sends CLIENTROLLBACK
with batch id 0, which the server must answer with nothing), then gets batches without ack. The
first non-empty batch is rolled back and must be delivered again; every later batch is acked.
Prints one JSON object per row change on stdout: {"batch", "db", "table", "type", "before",
"after"}; canal-python's own chatter goes to stderr. Exits 0 after ROWS rows, 3 on a 30 s timeout.
"""
import contextlib
import json
import sys
import time

from canal.client import Client
from canal.protocol import EntryProtocol_pb2 as E

host, port, dest, flt, want = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])

TYPES = {E.EventType.INSERT: "INSERT", E.EventType.UPDATE: "UPDATE", E.EventType.DELETE: "DELETE"}


def columns(cols):
    return {c.name: (None if c.isNull else c.value) for c in cols}


def rows(message):
    out = []
    for entry in message["entries"]:
        if entry.entryType != E.EntryType.ROWDATA:
            continue
        rc = E.RowChange()
        rc.MergeFromString(entry.storeValue)
        if rc.isDdl or rc.eventType not in TYPES:
            continue
        for r in rc.rowDatas:
            out.append({
                "batch": message["id"],
                "db": entry.header.schemaName,
                "table": entry.header.tableName,
                "type": TYPES[rc.eventType],
                "before": columns(r.beforeColumns),
                "after": columns(r.afterColumns),
            })
    return out


client = Client()
with contextlib.redirect_stdout(sys.stderr):
    client.connect(host=host, port=port)
    client.check_valid(username=b"", password=b"")
    client.subscribe(client_id=b"1001", destination=dest.encode(), filter=flt.encode())

got = []
rolled_back = None
deadline = time.time() + 30
while len(got) < want:
    if time.time() > deadline:
        print("timeout after %d rows" % len(got), file=sys.stderr)
        sys.exit(3)
    message = client.get_without_ack(batch_size=100, timeout=-1, unit=-1)
    if message["id"] == 0:
        time.sleep(0.05)
        continue
    batch_rows = rows(message)
    if rolled_back is None:
        # Roll the first batch back: the same rows must come again in the next batch.
        rolled_back = batch_rows
        client.rollback(message["id"])
        continue
    if rolled_back:
        again = [dict(r, batch=None) for r in batch_rows[: len(rolled_back)]]
        first = [dict(r, batch=None) for r in rolled_back]
        if again != first:
            print("rollback did not redeliver the batch: %r vs %r" % (first, again), file=sys.stderr)
            sys.exit(1)
        rolled_back = []
    got.extend(batch_rows)
    client.ack(message["id"])

for r in got:
    print(json.dumps(r, sort_keys=True))
client.disconnect()
