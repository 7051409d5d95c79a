//! Decoder throughput on a generated binlog (no criterion: `cargo bench -p canal-core --bench decode`).
//!
//! The binlog is built in memory: a FORMAT_DESCRIPTION (CRC32), then transactions of one TABLE_MAP
//! and one WRITE_ROWS_V2 of 100 rows each, for 1,000,000 rows, on a 10-column table of
//! common types: BIGINT, INT, INT UNSIGNED, VARCHAR(64), DECIMAL(12,2), DATETIME(3),
//! TIMESTAMP, TEXT, TINYINT, DOUBLE. Reports framing + CRC, event decoding, and full row decoding to
//! Canal value strings.

use std::hint::black_box;
use std::time::Instant;

use canal_core::binlog::decode::{BinlogFile, DecodeOptions, Decoder, EventData, RowImage};

const ROWS: usize = 1_000_000;
const ROWS_PER_EVENT: usize = 100;

fn event(ty: u8, log_pos: &mut u32, body: &[u8]) -> Vec<u8> {
    let size = (19 + body.len() + 4) as u32;
    *log_pos += size;
    let mut e = Vec::with_capacity(size as usize);
    e.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    e.push(ty);
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&size.to_le_bytes());
    e.extend_from_slice(&log_pos.to_le_bytes());
    e.extend_from_slice(&0u16.to_le_bytes());
    e.extend_from_slice(body);
    let crc = crc32(&e);
    e.extend_from_slice(&crc.to_le_bytes());
    e
}

fn crc32(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

fn generate() -> Vec<u8> {
    let mut out = vec![0xfe, b'b', b'i', b'n'];
    let mut pos = 4u32;
    // FORMAT_DESCRIPTION: version 4, "8.0.32", post-header lengths for 41 types, CRC32.
    let mut fde = Vec::new();
    fde.extend_from_slice(&4u16.to_le_bytes());
    let mut ver = [0u8; 50];
    ver[..6].copy_from_slice(b"8.0.32");
    fde.extend_from_slice(&ver);
    fde.extend_from_slice(&0u32.to_le_bytes());
    fde.push(19);
    let mut post = vec![0u8; 41];
    post[18] = 8; // TABLE_MAP
    post[29] = 10; // WRITE_ROWS_V2
    fde.extend_from_slice(&post);
    fde.push(1); // CRC32
    out.extend(event(15, &mut pos, &fde));

    // TABLE_MAP for bench.t (table id 42).
    let types = [8u8, 3, 3, 15, 246, 18, 7, 252, 1, 5];
    let mut tm = Vec::new();
    tm.extend_from_slice(&42u64.to_le_bytes()[..6]);
    tm.extend_from_slice(&1u16.to_le_bytes());
    tm.push(5);
    tm.extend_from_slice(b"bench\0");
    tm.push(1);
    tm.extend_from_slice(b"t\0");
    tm.push(types.len() as u8);
    tm.extend_from_slice(&types);
    let meta = [256u16.to_le_bytes().to_vec(), vec![12, 2], vec![3], vec![2], vec![8]].concat();
    tm.push(meta.len() as u8);
    tm.extend_from_slice(&meta);
    tm.extend_from_slice(&[0xfe, 0x03]); // nullable bitmap
    // Optional metadata: SIGNEDNESS (INT #3 unsigned among the numeric columns).
    tm.extend_from_slice(&[1, 1, 0b0010_0000]);
    let table_map = tm;

    let mut n = 0usize;
    while n < ROWS {
        out.extend(event(19, &mut pos, &table_map));
        let mut rows = Vec::new();
        rows.extend_from_slice(&42u64.to_le_bytes()[..6]);
        rows.extend_from_slice(&1u16.to_le_bytes());
        rows.extend_from_slice(&2u16.to_le_bytes());
        rows.push(types.len() as u8);
        rows.extend_from_slice(&[0xff, 0x03]);
        for _ in 0..ROWS_PER_EVENT {
            let i = n as i64;
            rows.extend_from_slice(&[0, 0]); // null bitmap: nothing null
            rows.extend_from_slice(&i.to_le_bytes());
            rows.extend_from_slice(&((i % 100_000) as i32).to_le_bytes());
            rows.extend_from_slice(&(4_000_000_000u32 - n as u32).to_le_bytes());
            let s = format!("name-{n:08}");
            rows.extend_from_slice(&(s.len() as u16).to_le_bytes());
            rows.extend_from_slice(s.as_bytes());
            // DECIMAL(12,2) 1234567890.12 - positive: 10 int digits = 1 group of 1 + 9, 2 frac digits.
            rows.extend_from_slice(&[0x81, 0x0d, 0xfb, 0x38, 0xd2, 12]);
            // DATETIME(3) 2024-02-29 23:59:59.123
            let ym = 2024u64 * 13 + 2;
            let int = (((ym << 5) | 29) << 17) | (23 << 12 | 59 << 6 | 59);
            rows.extend_from_slice(&(int + 0x80_0000_0000).to_be_bytes()[3..]);
            rows.extend_from_slice(&1230u16.to_be_bytes());
            rows.extend_from_slice(&(1_700_000_000u32 + n as u32).to_le_bytes());
            let text = b"some text value for the bench";
            rows.extend_from_slice(&(text.len() as u16).to_le_bytes());
            rows.extend_from_slice(text);
            rows.push((n % 128) as u8);
            rows.extend_from_slice(&(i as f64 * 0.25).to_le_bytes());
            n += 1;
        }
        out.extend(event(30, &mut pos, &rows));
    }
    out
}

fn main() {
    let t = Instant::now();
    let bin = generate();
    let events = BinlogFile::new(&bin).expect("magic").count();
    eprintln!(
        "generated {} MB, {events} events, {ROWS} rows in {:.2?}",
        bin.len() / 1_000_000,
        t.elapsed()
    );

    let mb = bin.len() as f64 / 1e6;
    for round in 0..3 {
        // 1. Framing only.
        let t = Instant::now();
        let mut n = 0usize;
        for e in BinlogFile::new(&bin).expect("magic") {
            n += black_box(e.expect("framing").1.len());
        }
        let frame = t.elapsed();
        black_box(n);

        // 2. Framing + CRC + event decoding (rows left encoded).
        let t = Instant::now();
        let mut dec = Decoder::new(DecodeOptions::default());
        for e in BinlogFile::new(&bin).expect("magic") {
            black_box(dec.decode(e.expect("framing").1).expect("decode"));
        }
        let events_t = t.elapsed();

        // 3. Everything: rows to Canal value strings in reused images.
        let t = Instant::now();
        let mut dec = Decoder::new(DecodeOptions::default());
        let (mut b, mut a) = (RowImage::new(), RowImage::new());
        let mut rows = 0usize;
        let mut bytes = 0usize;
        for e in BinlogFile::new(&bin).expect("magic") {
            let ev = dec.decode(e.expect("framing").1).expect("decode");
            if let EventData::Rows(r) = &ev.data {
                let mut rd = dec.rows(r).expect("plan");
                while rd.next_row(&mut b, &mut a).expect("row") {
                    rows += 1;
                    bytes += a.iter().map(|(_, v)| v.map_or(0, |v| v.len())).sum::<usize>();
                }
            }
        }
        let full = t.elapsed();
        assert_eq!(rows, ROWS);
        black_box(bytes);
        println!(
            "round {round}: framing {:.3}s ({:.0} MB/s) | + CRC + events {:.3}s ({:.0} MB/s) | + rows {:.3}s: {:.2}M rows/s, {:.0} MB/s",
            frame.as_secs_f64(),
            mb / frame.as_secs_f64(),
            events_t.as_secs_f64(),
            mb / events_t.as_secs_f64(),
            full.as_secs_f64(),
            ROWS as f64 / full.as_secs_f64() / 1e6,
            mb / full.as_secs_f64(),
        );
    }
}
