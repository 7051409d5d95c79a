"""Interop oracle for canal-core's protocol: builds Canal's messages with canal-python's own classes.

Used by canal-core/tests/it/interop.rs, inside a venv with `canal-python==0.4` and
`protobuf==3.20.3`.

  canal_interop.py emit    print {"name": "hex", ...}: every case encoded by canal-python
  canal_interop.py check   read the same JSON shape (encoded by Rust) on stdin, decode each case with
                           canal-python's classes, compare with the message built here; print one
                           "OK name" or "DIFF name: ..." line per case; exit 1 on any difference

Every field of every message is set to a non-default value. The Rust test builds the same logical
values, so any change here must be mirrored in interop.rs.

Only `canal.protocol.*` is imported: `canal/example.py` connects to a remote host when imported.
"""

import json
import sys

from google.protobuf import text_format

from canal.protocol import CanalProtocol_pb2 as C
from canal.protocol import EntryProtocol_pb2 as E

PT = C.PacketType
CO = C.Compression


def pair(k, v):
    return E.Pair(key=k, value=v)


def column_a():
    return E.Column(
        index=1,
        sqlType=-5,
        name="id",
        isKey=True,
        updated=True,
        isNull=False,
        props=[pair("c", "1")],
        value="-9223372036854775808",
        length=20,
        mysqlType="bigint(20)",
    )


def column_b():
    return E.Column(
        index=3,
        sqlType=12,
        name="näme",
        isKey=True,
        updated=True,
        isNull=True,
        props=[pair("k", "v"), pair("", "empty key")],
        value="ü-välue ✓",
        length=255,
        mysqlType="varchar(255)",
    )


def row_data():
    return E.RowData(
        beforeColumns=[column_a()],
        afterColumns=[column_a(), column_b()],
        props=[pair("rd", "x")],
    )


def row_change():
    return E.RowChange(
        tableId=108,
        eventType=E.DELETE,
        isDdl=True,
        sql="DELETE FROM `test`.`t1` WHERE id = 1",
        rowDatas=[row_data(), row_data()],
        props=[pair("XA_TYPE", "XA COMMIT"), pair("XA_XID", "'x1'")],
        ddlSchemaName="test",
    )


def transaction_begin():
    return E.TransactionBegin(
        executeTime=1700000000123,
        transactionId="tx-1",
        props=[pair("XA_TYPE", "XA START")],
        threadId=12345,
    )


def transaction_end():
    return E.TransactionEnd(
        executeTime=1700000000456,
        transactionId="987654321",
        props=[pair("XA_TYPE", "XA END"), pair("XA_XID", "'x1'")],
    )


def header():
    return E.Header(
        version=2,
        logfileName="mysql-bin.000001",
        logfileOffset=4,
        serverId=4294967295,
        serverenCode="UTF-8",
        executeTime=1700000000000,
        sourceType=E.PGSQL,
        schemaName="test",
        tableName="t1",
        eventLength=64,
        eventType=E.DELETE,
        props=[pair("rowsCount", "2"), pair("curtGtid", "uuid:5")],
        gtid="3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
    )


def entry_rowdata():
    return E.Entry(
        header=header(),
        entryType=E.ROWDATA,
        storeValue=row_change().SerializeToString(),
    )


def entry_end():
    return E.Entry(
        header=header(),
        entryType=E.TRANSACTIONEND,
        storeValue=transaction_end().SerializeToString(),
    )


# (packet type, body) for every body message.
BODIES = {
    "handshake": (
        PT.Value("HANDSHAKE"),
        C.Handshake(
            communication_encoding="utf8",
            seeds=bytes(range(0xA0, 0xA8)),
            supported_compressions=CO.Value("ZLIB"),
        ),
    ),
    "client_auth": (
        PT.Value("CLIENTAUTHENTICATION"),
        C.ClientAuth(
            username="canal",
            password=b"e3619321c1a937c46a0d8bd1dac39f93b27d4458",
            net_read_timeout=3600000,
            net_write_timeout=1800000,
            destination="example",
            client_id="1001",
            filter="test\\..*",
            start_timestamp=1700000000000,
        ),
    ),
    "ack": (
        PT.Value("ACK"),
        C.Ack(error_code=402, error_message="batchId should assign value"),
    ),
    "sub": (
        PT.Value("SUBSCRIPTION"),
        C.Sub(destination="example", client_id="1001", filter=".*\\..*"),
    ),
    "unsub": (
        PT.Value("UNSUBSCRIPTION"),
        C.Unsub(destination="example", client_id="1002", filter="test\\.t1"),
    ),
    "get": (
        PT.Value("GET"),
        C.Get(
            destination="example",
            client_id="1001",
            fetch_size=1000,
            timeout=30,
            unit=3,
            auto_ack=True,
        ),
    ),
    "messages": (
        PT.Value("MESSAGES"),
        C.Messages(batch_id=42, messages=[b"\x08\x01", b"\x00\xff\x10", b"raw"]),
    ),
    "client_ack": (
        PT.Value("CLIENTACK"),
        C.ClientAck(destination="example", client_id="1001", batch_id=7),
    ),
    "client_rollback": (
        PT.Value("CLIENTROLLBACK"),
        C.ClientRollback(destination="example", client_id="1001", batch_id=8),
    ),
    # canal-python spells this enum value HEARTBEATS (Canal: HEARTBEAT); both are 11.
    "heartbeat": (
        PT.Value("HEARTBEATS"),
        C.HeartBeat(send_timestamp=1700000000123, start_timestamp=1699999999000),
    ),
    "dump": (
        PT.Value("DUMP"),
        C.Dump(journal="mysql-bin.000003", position=4, timestamp=1700000000000),
    ),
}


def packet(ptype, body):
    return C.Packet(
        magic_number=17,
        version=1,
        type=ptype,
        compression=CO.Value("NONE"),
        body=body.SerializeToString(),
    )


def cases():
    """name -> (message, {field name: class of the bytes it holds}) for every case."""
    out = {}
    for name, (ptype, body) in BODIES.items():
        out["body_" + name] = (body, {})
        out["packet_" + name] = (packet(ptype, body), {"body": type(body)})
    # What canal-python's own client sends for get_without_ack(): presence of -1/-1/false.
    out["body_get_python_client"] = (
        C.Get(
            destination="example",
            client_id="1001",
            fetch_size=10,
            timeout=-1,
            unit=-1,
            auto_ack=False,
        ),
        {},
    )
    # An explicitly set zero is present.
    out["body_ack_zero"] = (C.Ack(error_code=0), {})
    out["pair"] = (pair("rowsCount", "2"), {})
    out["column"] = (column_b(), {})
    out["row_data"] = (row_data(), {})
    out["row_change"] = (row_change(), {})
    out["transaction_begin"] = (transaction_begin(), {})
    out["transaction_end"] = (transaction_end(), {})
    out["header"] = (header(), {})
    out["entry_rowdata"] = (entry_rowdata(), {"storeValue": E.RowChange})
    out["entry_end"] = (entry_end(), {"storeValue": E.TransactionEnd})
    return out


def unknown_fields(msg, path):
    """Paths of (sub)messages that kept unknown fields after parsing."""
    found = []
    if len(msg.UnknownFields()) > 0:
        found.append(path or "<root>")
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        values = value if field.label == field.LABEL_REPEATED else [value]
        for i, v in enumerate(values):
            found += unknown_fields(v, "%s.%s[%d]" % (path, field.name, i))
    return found


def show(msg):
    return text_format.MessageToString(msg, as_one_line=True, as_utf8=True)


def check_one(name, expected, nested, data):
    got = type(expected)()
    got.ParseFromString(data)
    problems = []
    unknown = unknown_fields(got, "")
    if unknown:
        problems.append("unknown fields at " + ", ".join(unknown))
    # Compare bytes fields that hold messages by their decoded content, the rest by value.
    for field, cls in nested.items():
        inner_got, inner_want = cls(), cls()
        inner_got.ParseFromString(getattr(got, field))
        inner_want.ParseFromString(getattr(expected, field))
        if len(inner_got.UnknownFields()) > 0:
            problems.append("unknown fields in " + field)
        if inner_got != inner_want:
            problems.append(
                "%s differs: got {%s} want {%s}" % (field, show(inner_got), show(inner_want))
            )
        got.ClearField(field)
    want = type(expected)()
    want.CopyFrom(expected)
    for field in nested:
        want.ClearField(field)
    # Presence of every oneof-wrapped field must match too (e.g. an explicit zero).
    for oneof in want.DESCRIPTOR.oneofs:
        if got.WhichOneof(oneof.name) != want.WhichOneof(oneof.name):
            problems.append("presence of %s differs" % oneof.name)
    if got != want:
        problems.append("got {%s} want {%s}" % (show(got), show(want)))
    return problems


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    all_cases = cases()
    if mode == "emit":
        print(json.dumps({n: m.SerializeToString().hex() for n, (m, _) in all_cases.items()}))
        return 0
    if mode == "check":
        received = json.load(sys.stdin)
        failed = 0
        for name in sorted(set(all_cases) | set(received)):
            if name not in received:
                problems = ["not sent by Rust"]
            elif name not in all_cases:
                problems = ["unknown case"]
            else:
                msg, nested = all_cases[name]
                try:
                    problems = check_one(name, msg, nested, bytes.fromhex(received[name]))
                except Exception as e:  # a decode error is a difference, not a crash
                    problems = ["decode failed: %r" % e]
            if problems:
                failed += 1
                print("DIFF %s: %s" % (name, "; ".join(problems)))
            else:
                print("OK %s" % name)
        return 1 if failed else 0
    print("usage: canal_interop.py emit|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
