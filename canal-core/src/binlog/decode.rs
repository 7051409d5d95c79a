//! Pure binlog decoding: bytes in, values out, no I/O.
