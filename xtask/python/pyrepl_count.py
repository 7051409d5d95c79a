"""Count row images with python-mysql-replication (PyPI `mysql-replication`), for `cargo xtask bench`.

Usage: pyrepl_count.py HOST PORT USER PASSWORD LOG_FILE SCHEMA ROWS

Dumps from LOG_FILE offset 4 as a replica (file/position mode: with is_mariadb=True the library
ignores log_file and has a framing bug on MariaDB, see notes/services.md), decodes every rows event
of SCHEMA fully (values of every row), and stops after ROWS row images. Prints the count.
"""
import sys

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

host, port, user, password, log_file, schema, want = sys.argv[1:8]
want = int(want)
stream = BinLogStreamReader(
    connection_settings={"host": host, "port": int(port), "user": user, "passwd": password},
    server_id=987654,
    log_file=log_file,
    log_pos=4,
    resume_stream=True,
    blocking=False,
    only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    only_schemas=[schema],
)
n = 0
for ev in stream:
    for row in ev.rows:
        # Touch the values so they are really decoded.
        _ = row.get("values") or row.get("after_values")
        n += 1
    if n >= want:
        break
stream.close()
print(n)
