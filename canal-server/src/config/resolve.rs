//! One destination's effective settings: the instance file over the server's `[instance]`
//! defaults over Canal's defaults, checked and turned into [`canal_core::instance::InstanceConfig`]
//! (filters compiled, charset and zone parsed, slave id derived).

use std::net::Ipv4Addr;
use std::path::Path;

use canal_core::binlog::decode::{TextCharset, TimeZoneOffset};
use canal_core::binlog::replica::ReplicaConfig;
use canal_core::filter::{FieldFilter, NameFilter, TableFilter};
use canal_core::instance::{InstanceConfig, StartConfig};
use canal_core::store::{BatchMode, StoreConfig};

use super::ConfigError;
use super::model::{
    DbSection, FilterSection, InstanceBalanceSection, InstanceFileConfig, InstanceMqSection,
    MasterSection, MemorySection,
};

/// Canal's default table white list: every table.
pub const DEFAULT_FILTER_REGEX: &str = ".*\\..*";
/// Canal's default replication user and password (`retl`, from its instance XML).
pub const DEFAULT_DB_ACCOUNT: &str = "retl";

/// `file` over `defaults`, key by key.
pub fn merge(file: &InstanceFileConfig, defaults: &InstanceFileConfig) -> InstanceFileConfig {
    fn or<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
        a.clone().or_else(|| b.clone())
    }
    let (f, d) = (file, defaults);
    InstanceFileConfig {
        master: MasterSection {
            address: or(&f.master.address, &d.master.address),
            journal_name: or(&f.master.journal_name, &d.master.journal_name),
            position: or(&f.master.position, &d.master.position),
            timestamp: or(&f.master.timestamp, &d.master.timestamp),
            gtid: or(&f.master.gtid, &d.master.gtid),
        },
        db: DbSection {
            username: or(&f.db.username, &d.db.username),
            password: or(&f.db.password, &d.db.password),
            slave_id: or(&f.db.slave_id, &d.db.slave_id),
            connection_charset: or(&f.db.connection_charset, &d.db.connection_charset),
        },
        gtid_mode: or(&f.gtid_mode, &d.gtid_mode),
        filter: FilterSection {
            regex: or(&f.filter.regex, &d.filter.regex),
            black_regex: or(&f.filter.black_regex, &d.filter.black_regex),
            field: or(&f.filter.field, &d.filter.field),
            black_field: or(&f.filter.black_field, &d.filter.black_field),
            query_dml: or(&f.filter.query_dml, &d.filter.query_dml),
            query_dcl: or(&f.filter.query_dcl, &d.filter.query_dcl),
            query_ddl: or(&f.filter.query_ddl, &d.filter.query_ddl),
            rows: or(&f.filter.rows, &d.filter.rows),
            table_error: or(&f.filter.table_error, &d.filter.table_error),
        },
        memory: MemorySection {
            buffer_size: or(&f.memory.buffer_size, &d.memory.buffer_size),
            buffer_memunit: or(&f.memory.buffer_memunit, &d.memory.buffer_memunit),
            batch_mode: or(&f.memory.batch_mode, &d.memory.batch_mode),
            memory_budget: or(&f.memory.memory_budget, &d.memory.memory_budget),
        },
        transaction_size: or(&f.transaction_size, &d.transaction_size),
        fallback_interval_s: or(&f.fallback_interval_s, &d.fallback_interval_s),
        ddl_isolation: or(&f.ddl_isolation, &d.ddl_isolation),
        time_zone: or(&f.time_zone, &d.time_zone),
        mq: InstanceMqSection {
            topic: or(&f.mq.topic, &d.mq.topic),
            dynamic_topic: or(&f.mq.dynamic_topic, &d.mq.dynamic_topic),
            partition: or(&f.mq.partition, &d.mq.partition),
            partitions_num: or(&f.mq.partitions_num, &d.mq.partitions_num),
            partition_hash: or(&f.mq.partition_hash, &d.mq.partition_hash),
            dynamic_topic_partition_num: or(
                &f.mq.dynamic_topic_partition_num,
                &d.mq.dynamic_topic_partition_num,
            ),
        },
        balance: InstanceBalanceSection {
            weight: or(&f.balance.weight, &d.balance.weight),
            prefer: if f.balance.prefer.is_empty() {
                d.balance.prefer.clone()
            } else {
                f.balance.prefer.clone()
            },
        },
    }
}

/// Names where the effective value of an instance key came from: `(file, key as written there)`.
pub type Origin<'a> = &'a dyn Fn(&str) -> (String, String);

/// Builds the instance of `destination` from its merged settings. `register_ip` (or the bind
/// ip) feeds the slave id derivation; `data_dir` is the server's state root.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the file and key of the first bad value.
pub fn instance_config(
    destination: &str,
    cfg: &InstanceFileConfig,
    register_ip: &str,
    data_dir: &Path,
    origin: Origin<'_>,
) -> Result<InstanceConfig, ConfigError> {
    let bad = |key: &str, message: String| {
        let (file, key) = origin(key);
        ConfigError::Invalid { origin: file, key, message }
    };
    let address = cfg.master.address.as_deref().ok_or_else(|| {
        bad("master.address", "is required (host:port of the MySQL source)".into())
    })?;
    let (host, port) = parse_address(address).map_err(|m| bad("master.address", m))?;
    let user = cfg.db.username.clone().unwrap_or_else(|| DEFAULT_DB_ACCOUNT.into());
    let password = cfg.db.password.clone().unwrap_or_else(|| DEFAULT_DB_ACCOUNT.into());
    let slave_id = match cfg.db.slave_id {
        Some(id) if id != 0 => id,
        _ => derive_slave_id(destination, register_ip),
    };
    let source = ReplicaConfig::new(host, port, user, password).with_slave_id(slave_id);
    let mut out = InstanceConfig::new(destination, source);

    if let Some(ts) = cfg.master.timestamp.filter(|ts| *ts < 0) {
        return Err(bad("master.timestamp", format!("{ts} is negative (ms since the epoch)")));
    }
    out.start = StartConfig {
        journal: cfg.master.journal_name.clone(),
        position: cfg.master.position,
        timestamp_ms: cfg.master.timestamp,
        gtid: cfg.master.gtid.clone(),
    };
    out.gtid_mode = cfg.gtid_mode.unwrap_or(false);

    let f = &cfg.filter;
    let white = f.regex.as_deref().unwrap_or(DEFAULT_FILTER_REGEX);
    let black = f.black_regex.as_deref().unwrap_or("");
    TableFilter::white(white).map_err(|e| bad("filter.regex", e.to_string()))?;
    TableFilter::black(black).map_err(|e| bad("filter.black_regex", e.to_string()))?;
    out.convert.filter =
        NameFilter::new(white, black).map_err(|e| bad("filter.regex", e.to_string()))?;
    let field = f.field.as_deref().unwrap_or("");
    let black_field = f.black_field.as_deref().unwrap_or("");
    FieldFilter::new(field, "").map_err(|e| bad("filter.field", e.to_string()))?;
    FieldFilter::new("", black_field).map_err(|e| bad("filter.black_field", e.to_string()))?;
    out.convert.field_filter =
        FieldFilter::new(field, black_field).map_err(|e| bad("filter.field", e.to_string()))?;
    out.convert.filter_query_dml = f.query_dml.unwrap_or(false);
    out.convert.filter_query_dcl = f.query_dcl.unwrap_or(false);
    out.convert.filter_query_ddl = f.query_ddl.unwrap_or(false);
    out.convert.filter_rows = f.rows.unwrap_or(false);
    out.convert.skip_table_errors = f.table_error.unwrap_or(false);
    out.convert.gtid_mode = out.gtid_mode;
    if let Some(cs) = &cfg.db.connection_charset {
        out.convert.decode.charset =
            parse_charset(cs).map_err(|m| bad("db.connection_charset", m))?;
    }
    if let Some(tz) = &cfg.time_zone {
        out.convert.decode.time_zone = parse_time_zone(tz).map_err(|m| bad("time_zone", m))?;
    }

    let m = &cfg.memory;
    let mut store = StoreConfig::default();
    if let Some(n) = m.buffer_size {
        if !n.is_power_of_two() {
            return Err(bad("memory.buffer_size", format!("{n} is not a power of two")));
        }
        store.capacity = n;
    }
    if let Some(n) = m.buffer_memunit {
        if n == 0 {
            return Err(bad("memory.buffer_memunit", "must be positive".into()));
        }
        store.mem_unit = n;
    }
    if let Some(mode) = &m.batch_mode {
        store.batch_mode = match mode.to_ascii_uppercase().as_str() {
            "MEMSIZE" => BatchMode::MemSize,
            "ITEMSIZE" => BatchMode::ItemSize,
            _ => {
                return Err(bad(
                    "memory.batch_mode",
                    format!("{mode:?} is neither \"MEMSIZE\" nor \"ITEMSIZE\""),
                ));
            }
        };
    }
    store.memory_budget = match m.memory_budget {
        Some(0) => return Err(bad("memory.memory_budget", "must be positive".into())),
        Some(n) => n,
        None => store.capacity.checked_mul(store.mem_unit).ok_or_else(|| {
            bad("memory.buffer_memunit", "buffer_size × buffer_memunit overflows".into())
        })?,
    };
    store.ddl_isolation = cfg.ddl_isolation.unwrap_or(false);
    out.store = store;
    if let Some(n) = cfg.transaction_size {
        if !n.is_power_of_two() {
            return Err(bad("transaction_size", format!("{n} is not a power of two")));
        }
        out.transaction_size = n;
    }
    if let Some(s) = cfg.fallback_interval_s {
        out.fallback_interval = std::time::Duration::from_secs(s);
    }
    out.data_dir = Some(data_dir.to_owned());
    Ok(out)
}

/// Splits `host:port` (`[v6]:port` too).
///
/// # Errors
/// A message when the host is empty or the port is not 1..=65535.
pub fn parse_address(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{s:?} has no valid host (expected host:port)"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?} has no valid port (expected host:port)"))?;
    Ok((host.to_owned(), port))
}

/// Canal's `connectionCharset` names: UTF-8 (utf8, utf8mb4, utf8mb3) or ISO-8859-1 (latin1).
///
/// # Errors
/// A message for any other charset.
pub fn parse_charset(s: &str) -> Result<TextCharset, String> {
    let norm: String =
        s.trim().chars().filter(|c| *c != '-' && *c != '_').collect::<String>().to_lowercase();
    match norm.as_str() {
        "utf8" | "utf8mb4" | "utf8mb3" => Ok(TextCharset::Utf8),
        "latin1" | "iso88591" | "iso8859" => Ok(TextCharset::Latin1),
        _ => Err(format!("charset {s:?} is not supported (UTF-8, utf8mb4, latin1 or ISO-8859-1)")),
    }
}

/// `UTC` / `Z` / `GMT`, or an offset `+08:00`, `-0530`, `+8`, optionally after `UTC`/`GMT`.
///
/// # Errors
/// A message for named zones (`Asia/Shanghai`, `local`) and offsets beyond ±18:00.
pub fn parse_time_zone(s: &str) -> Result<TimeZoneOffset, String> {
    let t = s.trim();
    let upper = t.to_ascii_uppercase();
    if matches!(upper.as_str(), "UTC" | "Z" | "GMT") {
        return Ok(TimeZoneOffset::UTC);
    }
    let err = || {
        format!(
            "time zone {s:?} is not UTC or a fixed offset like \"+08:00\" (named zones are not \
             supported)"
        )
    };
    let rest = upper.strip_prefix("UTC").or_else(|| upper.strip_prefix("GMT")).unwrap_or(&upper);
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'+') => (1, &rest[1..]),
        Some(b'-') => (-1, &rest[1..]),
        _ => return Err(err()),
    };
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => digits.split_at(2),
        None => (digits, "0"),
    };
    if h.is_empty() || h.len() > 2 || m.is_empty() || m.len() > 2 {
        return Err(err());
    }
    let h: i32 = h.parse().map_err(|_| err())?;
    let m: i32 = m.parse().map_err(|_| err())?;
    if m >= 60 || h * 60 + m > 18 * 60 {
        return Err(err());
    }
    Ok(TimeZoneOffset::east(sign * (h * 3600 + m * 60)))
}

/// The slave id used when none is configured: Canal's `(destination.hashCode() & 0x7f) << 24`
/// plus the low three octets of the register address (Canal uses the local host's IPv4; we use
/// `register_ip`, else `ip`, when it is an IPv4 literal), else the low 24 bits of the FNV-1a hash
/// of `destination@address`. Never 0.
pub fn derive_slave_id(destination: &str, address: &str) -> u32 {
    let java_hash =
        destination.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let high = ((java_hash & 0x7f) as u32) << 24;
    let low = match address.trim().parse::<Ipv4Addr>() {
        Ok(ip) => {
            let o = ip.octets();
            (u32::from(o[1]) << 16) | (u32::from(o[2]) << 8) | u32::from(o[3])
        }
        Err(_) => {
            let mut h: u32 = 0x811c_9dc5;
            for b in destination.bytes().chain([b'@']).chain(address.trim().bytes()) {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            h & 0x00ff_ffff
        }
    };
    (high + low).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_address("127.0.0.1:3306").unwrap(), ("127.0.0.1".into(), 3306));
        assert_eq!(parse_address("[::1]:3307").unwrap(), ("::1".into(), 3307));
        assert_eq!(parse_address("db.example:3306").unwrap(), ("db.example".into(), 3306));
        for bad in ["127.0.0.1", ":3306", "h:0", "h:99999", "h:x", ""] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones_and_charsets() {
        assert_eq!(parse_time_zone("UTC").unwrap(), TimeZoneOffset::UTC);
        assert_eq!(parse_time_zone("+08:00").unwrap(), TimeZoneOffset::east(8 * 3600));
        assert_eq!(parse_time_zone("-0530").unwrap(), TimeZoneOffset::east(-(5 * 3600 + 1800)));
        assert_eq!(parse_time_zone("GMT+8").unwrap(), TimeZoneOffset::east(8 * 3600));
        for bad in ["Asia/Shanghai", "local", "+19:00", "+08:60", "8", "+"] {
            assert!(parse_time_zone(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_charset("UTF-8").unwrap(), TextCharset::Utf8);
        assert_eq!(parse_charset("utf8mb4").unwrap(), TextCharset::Utf8);
        assert_eq!(parse_charset("ISO-8859-1").unwrap(), TextCharset::Latin1);
        assert_eq!(parse_charset("latin1").unwrap(), TextCharset::Latin1);
        assert!(parse_charset("GBK").is_err());
    }

    #[test]
    fn slave_id_is_deterministic_and_follows_canal_for_ipv4() {
        // "example".hashCode() = -1322970774; & 0x7f = 0x6a.
        assert_eq!(derive_slave_id("example", "10.1.2.3"), (0x6a << 24) + 0x010203);
        let a = derive_slave_id("example", "");
        assert_eq!(a, derive_slave_id("example", ""));
        assert_ne!(a, derive_slave_id("example2", ""));
        assert!(a >> 24 == 0x6a && a != 0);
    }
}
