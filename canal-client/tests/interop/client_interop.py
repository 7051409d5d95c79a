"""Interop oracle for canal-client: server frames built with canal-python's own protobuf classes.

Used by canal-client/tests/it/interop.rs, inside the venv with `canal-python==0.4` and
`protobuf==3.20.3` that canal-core's interop test also builds (target/interop-venv).

  client_interop.py   print {"frames": {name: hex}, "expect": [...]} where each frame is a whole
                      wire frame (4-byte big-endian length + Packet) and "expect" describes, per
                      ROWDATA entry of the batches, what the client's row view must show.

Only `canal.protocol.*` is imported: `canal/example.py` connects to a remote host when imported.
"""

import json
import struct

from canal.protocol import CanalProtocol_pb2 as C
from canal.protocol import EntryProtocol_pb2 as E

PT = C.PacketType


def frame(packet):
    data = packet.SerializeToString()
    return (struct.pack(">i", len(data)) + data).hex()


def col(index, name, value, key=False, updated=False, mysql_type="varchar(255)", sql_type=12):
    c = E.Column(
        index=index,
        sqlType=sql_type,
        name=name,
        isKey=key,
        updated=updated,
        isNull=value is None,
        mysqlType=mysql_type,
    )
    if value is not None:
        c.value = value
    return c


def header(table, offset, event_type=None):
    h = E.Header(
        version=1,
        logfileName="mysql-bin.000007",
        logfileOffset=offset,
        serverId=1,
        serverenCode="UTF-8",
        executeTime=1700000000000 + offset,
        sourceType=E.MYSQL,
        schemaName="shop" if table else "",
        tableName=table,
        eventLength=77,
    )
    if event_type is not None:
        h.eventType = event_type
    return h


def rowdata(table, offset, event_type, rows, is_ddl=False, sql=""):
    rc = E.RowChange(tableId=42, eventType=event_type, isDdl=is_ddl, sql=sql)
    for before, after in rows:
        rc.rowDatas.append(E.RowData(beforeColumns=before, afterColumns=after))
    if is_ddl:
        rc.ddlSchemaName = "shop"
    return E.Entry(
        header=header(table, offset, event_type),
        entryType=E.ROWDATA,
        storeValue=rc.SerializeToString(),
    )


def key(i, v):
    return col(i, "id", v, key=True, mysql_type="bigint(20)", sql_type=-5)


ENTRIES_1 = [
    E.Entry(
        header=header("", 4),
        entryType=E.TRANSACTIONBEGIN,
        storeValue=E.TransactionBegin(threadId=77).SerializeToString(),
    ),
    rowdata(
        "users",
        100,
        E.INSERT,
        [
            ([], [key(0, "1"), col(1, "name", "ü-välue ✓", updated=True), col(2, "email", None, updated=True)]),
            ([], [key(0, "2"), col(1, "name", "", updated=True), col(2, "email", "b@x", updated=True)]),
        ],
    ),
    rowdata(
        "users",
        200,
        E.UPDATE,
        [([key(0, "1"), col(1, "name", "a"), col(2, "email", None)],
          [key(0, "1"), col(1, "name", "b", updated=True), col(2, "email", "new@x", updated=True)])],
    ),
    E.Entry(
        header=header("", 300),
        entryType=E.TRANSACTIONEND,
        storeValue=E.TransactionEnd(transactionId="991").SerializeToString(),
    ),
]

ENTRIES_2 = [
    rowdata("users", 400, E.DELETE, [([key(0, "2"), col(1, "name", "x"), col(2, "email", "b@x")], [])]),
    rowdata("users", 500, E.ALTER, [], is_ddl=True, sql="ALTER TABLE users ADD COLUMN age INT"),
]


def expect(entries, batch_id):
    out = []
    for e in entries:
        if e.entryType != E.ROWDATA:
            continue
        rc = E.RowChange()
        rc.ParseFromString(e.storeValue)
        image = lambda cols: [[c.name, None if c.isNull else c.value] for c in cols]
        out.append({
            "batch": batch_id,
            "schema": e.header.schemaName,
            "table": e.header.tableName,
            "type": E.EventType.Name(rc.eventType),
            "isDdl": rc.isDdl,
            "sql": rc.sql,
            "file": e.header.logfileName,
            "offset": e.header.logfileOffset,
            "rows": [{"before": image(r.beforeColumns), "after": image(r.afterColumns)} for r in rc.rowDatas],
        })
    return out


def main():
    frames = {
        "handshake": frame(C.Packet(version=1, type=PT.Value("HANDSHAKE"),
                                    body=C.Handshake(seeds=bytes(range(1, 9))).SerializeToString())),
        "ack_ok": frame(C.Packet(version=1, type=PT.Value("ACK"))),
        # Java's non-raw shape: version 1.
        "messages": frame(C.Packet(version=1, type=PT.Value("MESSAGES"), body=C.Messages(
            batch_id=7, messages=[e.SerializeToString() for e in ENTRIES_1]).SerializeToString())),
        # Raw-mode shape: no version field.
        "messages_raw": frame(C.Packet(type=PT.Value("MESSAGES"), body=C.Messages(
            batch_id=8, messages=[e.SerializeToString() for e in ENTRIES_2]).SerializeToString())),
        "empty": frame(C.Packet(version=1, type=PT.Value("MESSAGES"),
                                body=C.Messages(batch_id=-1).SerializeToString())),
        "ack_error": frame(C.Packet(version=1, type=PT.Value("ACK"), body=C.Ack(
            error_code=400, error_message="something goes wrong with channel").SerializeToString())),
    }
    print(json.dumps({"frames": frames, "expect": expect(ENTRIES_1, 7) + expect(ENTRIES_2, 8)}))


main()
