//! Configuration loading: canal.toml / instance.toml, environment and CLI overrides, the legacy
//! canal.properties / instance.properties path, warnings, errors naming file and key, discovery,
//! and the shipped `conf/` directory.

use std::path::{Path, PathBuf};

use canal_coord::BackendKind;
use canal_core::binlog::decode::{TextCharset, TimeZoneOffset};
use canal_core::instance::InstanceConfig;
use canal_core::store::BatchMode;
use canal_server::config::{self, ConfigError, LoadOptions, LoadedConfig};

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

fn load(dir: &Path) -> LoadedConfig {
    config::load(dir, &LoadOptions::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(dir: &Path) -> String {
    match config::load(dir, &LoadOptions::new()) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

fn only(c: &LoadedConfig) -> &InstanceConfig {
    assert_eq!(c.destinations.len(), 1, "{:?}", c.destinations);
    &c.destinations[0].instance
}

const MINIMAL_INSTANCE: &str = "[master]\naddress = \"127.0.0.1:3306\"\n";

#[test]
fn toml_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    write(&conf, "canal.toml", "");
    write(&conf, "example/instance.toml", MINIMAL_INSTANCE);
    let c = load(&conf);
    assert_eq!(c.server.port, 11111);
    assert_eq!(c.server.metrics_port, 11112);
    assert_eq!(c.server.ip, "");
    assert!(!c.auth.requires_password());
    assert_eq!(c.coord.backend_kind(), BackendKind::Local);
    assert_eq!(c.coord.takeover_delay_ms, 5000);
    assert_eq!(c.coord.cursor_flush_period_ms, 0);
    assert_eq!(c.coord.zookeeper.session_timeout_ms, 90_000);
    assert_eq!(c.conf_dir, conf);
    assert_eq!(c.data_dir, tmp.path().join("data"));
    assert_eq!(c.coord.local.data_dir, Some(tmp.path().join("data/coord")));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.destinations[0].name, "example");
    let i = only(&c);
    assert_eq!(i.destination, "example");
    assert_eq!((i.source.host.as_str(), i.source.port), ("127.0.0.1", 3306));
    assert_eq!((i.source.user.as_str(), i.source.password.as_str()), ("retl", "retl"));
    assert_eq!(i.source.slave_id, config::resolve::derive_slave_id("example", ""));
    assert_eq!(i.start, Default::default());
    assert!(!i.gtid_mode);
    assert_eq!(i.convert.filter.white().source(), ".*\\..*");
    assert!(i.convert.filter.black().is_empty());
    assert!(i.convert.filter.accepts("any", "table"));
    assert!(i.convert.field_filter.is_empty());
    assert!(!i.convert.filter_query_dml && !i.convert.filter_rows && !i.convert.skip_table_errors);
    assert_eq!(i.convert.decode.charset, TextCharset::Utf8);
    assert_eq!(i.convert.decode.time_zone, TimeZoneOffset::UTC);
    assert_eq!(i.store.capacity, 16384);
    assert_eq!(i.store.mem_unit, 1024);
    assert_eq!(i.store.batch_mode, BatchMode::MemSize);
    assert_eq!(i.store.memory_budget, 16384 * 1024);
    assert!(!i.store.ddl_isolation);
    assert_eq!(i.transaction_size, 1024);
    assert_eq!(i.data_dir.as_deref(), Some(tmp.path().join("data").as_path()));
    let s = c.server_settings();
    assert_eq!(s.bind, "0.0.0.0:11111".parse().unwrap());
    assert_eq!(s.metrics_bind, Some("0.0.0.0:11112".parse().unwrap()));
    assert_eq!(s.register_address, None);
    assert!(!s.session.auth.requires_password());
    assert_eq!(c.instances().len(), 1);
}

#[test]
fn toml_full_with_server_defaults_under_instance_files() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    write(
        &conf,
        "canal.toml",
        r#"
ip = "127.0.0.1"
register_ip = "10.1.2.3"
port = 12000
metrics_port = 0
user = "canal"
passwd = "E3619321C1A937C46A0D8BD1DAC39F93B27D4458"
destinations = ["b", "a"]
data_dir = "/var/lib/canal"
[coord]
zk_servers = "127.0.0.1:2181"
key_prefix = "/canal-rs"
takeover_delay_ms = 2000
[instance]
transaction_size = 2048
time_zone = "+08:00"
[instance.filter]
black_regex = 'mysql\.slave_.*'
rows = true
[instance.memory]
buffer_size = 1024
batch_mode = "ITEMSIZE"
"#,
    );
    write(
        &conf,
        "a/instance.toml",
        r#"
gtid_mode = true
ddl_isolation = true
[master]
address = "db1:3307"
journal_name = "mysql-bin.000003"
position = 4
timestamp = 1700000000000
gtid = "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"
[db]
username = "canal"
password = 123456
slave_id = 77
connection_charset = "latin1"
[filter]
regex = 'shop\..*,crm\.users'
field = "shop.orders:id/total"
black_field = "crm.users:password"
query_dml = true
query_dcl = true
query_ddl = true
table_error = true
rows = false
[memory]
buffer_memunit = 512
memory_budget = 1048576
"#,
    );
    write(&conf, "b/instance.toml", "[master]\naddress = \"[::1]:3306\"\n");
    write(&conf, "ignored-dir/instance.toml", "this is not toml = [");
    let c = load(&conf);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.server.ip, "127.0.0.1");
    assert_eq!(c.server.port, 12000);
    assert_eq!(c.server.metrics_port, 0);
    assert!(c.auth.requires_password());
    assert_eq!(c.coord.backend_kind(), BackendKind::Zookeeper);
    assert_eq!(c.coord.zookeeper.servers, "127.0.0.1:2181/canal-rs");
    assert_eq!(c.coord.takeover_delay_ms, 2000);
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/canal"));
    let s = c.server_settings();
    assert_eq!(s.bind, "127.0.0.1:12000".parse().unwrap());
    assert_eq!(s.metrics_bind, None);
    assert_eq!(s.register_address.as_deref(), Some("10.1.2.3:12000"));
    assert!(s.session.auth.requires_password());
    assert_eq!(s.coord.backend_kind(), BackendKind::Zookeeper);
    let names: Vec<_> = c.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["b", "a"], "configured order");

    let b = &c.destinations[0].instance;
    assert_eq!(b.source.host, "::1");
    assert_eq!(b.transaction_size, 2048, "server default");
    assert_eq!(b.convert.decode.time_zone, TimeZoneOffset::east(8 * 3600));
    assert!(b.convert.filter_rows, "server default");
    assert!(!b.convert.filter.accepts("mysql", "slave_relay_log_info"));
    assert!(b.convert.filter.accepts("shop", "x"));
    assert_eq!(b.store.capacity, 1024);
    assert_eq!(b.store.memory_budget, 1024 * 1024);
    assert_eq!(b.store.batch_mode, BatchMode::ItemSize);
    assert_eq!(b.source.slave_id, (config::resolve::derive_slave_id("b", "10.1.2.3")));
    assert_eq!(b.source.slave_id & 0xff_ffff, 0x01_0203);

    let a = &c.destinations[1].instance;
    assert_eq!((a.source.host.as_str(), a.source.port), ("db1", 3307));
    assert_eq!((a.source.user.as_str(), a.source.password.as_str()), ("canal", "123456"));
    assert_eq!(a.source.slave_id, 77);
    assert!(a.gtid_mode && a.convert.gtid_mode);
    assert_eq!(a.start.journal.as_deref(), Some("mysql-bin.000003"));
    assert_eq!(a.start.position, Some(4));
    assert_eq!(a.start.timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(a.start.gtid.as_deref(), Some("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"));
    assert_eq!(a.convert.decode.charset, TextCharset::Latin1);
    assert!(a.convert.filter.accepts("SHOP", "Orders"));
    assert!(a.convert.filter.accepts("crm", "users"));
    assert!(!a.convert.filter.accepts("crm", "other"));
    assert!(!a.convert.filter.accepts("mysql", "slave_master_info"), "server black list");
    assert!(a.convert.field_filter.keeps("shop", "orders", "TOTAL"));
    assert!(!a.convert.field_filter.keeps("shop", "orders", "note"));
    assert!(!a.convert.field_filter.keeps("crm", "users", "password"));
    assert!(a.convert.filter_query_dml && a.convert.filter_query_dcl && a.convert.filter_query_ddl);
    assert!(a.convert.skip_table_errors);
    assert!(!a.convert.filter_rows, "instance overrides the server default");
    assert_eq!(a.store.capacity, 1024);
    assert_eq!(a.store.mem_unit, 512);
    assert_eq!(a.store.memory_budget, 1_048_576);
    assert!(a.store.ddl_isolation);
}

#[test]
fn env_and_cli_override_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path();
    write(conf, "canal.toml", "port = 12000\n[instance.db]\npassword = \"file\"\n");
    write(conf, "example/instance.toml", MINIMAL_INSTANCE);
    let env = [
        ("CANAL_PORT", "11113"),
        ("CANAL_COORD__BACKEND", "etcd"),
        ("CANAL_COORD__ETCD_ENDPOINTS", "http://127.0.0.1:2379, http://127.0.0.2:2379"),
        ("CANAL_INSTANCE__DB__PASSWORD", "0123"),
        ("CANAL_INSTANCE__FILTER__REGEX", "test\\..*"),
        // Not configuration: other tools' variables with the same prefix are left alone.
        ("CANAL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"),
        ("PATH", "/usr/bin"),
    ];
    let c = config::load(conf, &LoadOptions::new().with_env(env)).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.server.port, 11113);
    assert_eq!(c.coord.backend_kind(), BackendKind::Etcd);
    assert_eq!(c.coord.etcd.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]);
    let i = only(&c);
    assert_eq!(i.source.password, "0123", "env values are not type-inferred");
    assert!(i.convert.filter.accepts("test", "t") && !i.convert.filter.accepts("other", "t"));

    let opts = LoadOptions::new().with_env(env).with_override("port", "11114");
    let c = config::load(conf, &opts).unwrap();
    assert_eq!(c.server.port, 11114, "CLI beats env");
    let opts = LoadOptions::new().with_override_arg("coord.backend=local").unwrap();
    assert_eq!(config::load(conf, &opts).unwrap().coord.backend_kind(), BackendKind::Local);
    assert!(LoadOptions::new().with_override_arg("port").is_err());

    // Bad values from the environment name the variable.
    let e = config::load(conf, &LoadOptions::new().with_env([("CANAL_PORT", "abc")])).unwrap_err();
    assert!(e.to_string().contains("environment") && e.to_string().contains("CANAL_PORT"), "{e}");
    // Unknown nested keys under a known section are warned.
    let c = config::load(conf, &LoadOptions::new().with_env([("CANAL_COORD__BACKNED", "etcd")]))
        .unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("CANAL_COORD__BACKNED")), "{:?}", c.warnings);
}

/// Canal's own sample files, in spirit: the keys of its conf/canal.properties and
/// conf/example/instance.properties, with Java escaping, empty values and MQ/admin/tsdb noise.
const CANAL_PROPERTIES: &str = r#"#################################################
#########       common argument         #############
#################################################
# tcp bind ip
canal.ip =
# register ip to zookeeper
canal.register.ip =
canal.port = 11111
canal.metrics.pull.port = 11112
# canal instance user/passwd
# canal.user = canal
# canal.passwd = E3619321C1A937C46A0D8BD1DAC39F93B27D4458

# canal admin config
#canal.admin.manager = 127.0.0.1:8089
canal.admin.port = 11110
canal.admin.user = admin
canal.admin.passwd = 4ACFE3202A5FF5CF467898FC58AAB1D615029441

canal.zkServers =
# flush data to zk
canal.zookeeper.flush.period = 1000
canal.withoutNetty = false
# tcp, kafka, rocketMQ, rabbitMQ, pulsarMQ
canal.serverMode = tcp
# flush meta cursor/parse position to file
canal.file.data.dir = ${canal.conf.dir}
canal.file.flush.period = 1000
## memory store RingBuffer size, should be Math.pow(2,n)
canal.instance.memory.buffer.size = 16384
## memory store RingBuffer used memory unit size , default 1kb
canal.instance.memory.buffer.memunit = 1024
## meory store gets mode used MEMSIZE or ITEMSIZE
canal.instance.memory.batch.mode = MEMSIZE
canal.instance.memory.rawEntry = true

## detecing config
canal.instance.detecting.enable = false
canal.instance.detecting.sql = select 1
canal.instance.detecting.interval.time = 3
canal.instance.detecting.retry.threshold = 3
canal.instance.detecting.heartbeatHaEnable = false

# support maximum transaction size, more than the size of the transaction will be cut into multiple transactions delivery
canal.instance.transaction.size =  1024
# mysql fallback connected to new master should fallback times
canal.instance.fallbackIntervalInSeconds = 30

# network config
canal.instance.network.receiveBufferSize = 16384
canal.instance.network.sendBufferSize = 16384
canal.instance.network.soTimeout = 30

# binlog filter config
canal.instance.filter.druid.ddl = true
canal.instance.filter.query.dcl = false
canal.instance.filter.query.dml = false
canal.instance.filter.query.ddl = false
canal.instance.filter.table.error = false
canal.instance.filter.rows = false
canal.instance.filter.transaction.entry = false
canal.instance.filter.dml.insert = false

# binlog format/image check
canal.instance.binlog.format = ROW,STATEMENT,MIXED
canal.instance.binlog.image = FULL,MINIMAL,NOBLOB

# binlog ddl isolation
canal.instance.get.ddl.isolation = false

# parallel parser config
canal.instance.parser.parallel = true
canal.instance.parser.parallelBufferSize = 256

# table meta tsdb info
canal.instance.tsdb.enable = true
canal.instance.tsdb.dir = ${canal.file.data.dir:../conf}/${canal.instance.destination:}
canal.instance.tsdb.url = jdbc:h2:${canal.instance.tsdb.dir}/h2;CACHE_SIZE=1000;MODE=MYSQL;
canal.instance.tsdb.dbUsername = canal
canal.instance.tsdb.dbPassword = canal
canal.instance.tsdb.snapshot.interval = 24
canal.instance.tsdb.snapshot.expire = 360

#################################################
#########       destinations        #############
#################################################
canal.destinations = example
# conf root dir
canal.conf.dir = ../conf
# auto scan instance dir add/remove and start/stop instance
canal.auto.scan = true
canal.auto.scan.interval = 5
canal.auto.reset.latest.pos.mode = false

canal.instance.tsdb.spring.xml = classpath:spring/tsdb/h2-tsdb.xml
canal.instance.global.mode = spring
canal.instance.global.lazy = false
canal.instance.global.manager.address = ${canal.admin.manager}
canal.instance.global.spring.xml = classpath:spring/file-instance.xml

##################################################
#########         MQ Properties      #############
##################################################
canal.aliyun.accessKey =
canal.aliyun.secretKey =
canal.mq.flatMessage = true
canal.mq.canalBatchSize = 50
canal.mq.accessChannel = local
kafka.bootstrap.servers = 127.0.0.1:9092
kafka.acks = all
"#;

const INSTANCE_PROPERTIES: &str = r#"#################################################
## mysql serverId , v1.0.26+ will autoGen
# canal.instance.mysql.slaveId=0

# enable gtid use true/false
canal.instance.gtidon=false

# position info
canal.instance.master.address=127.0.0.1:3306
canal.instance.master.journal.name=
canal.instance.master.position=
canal.instance.master.timestamp=
canal.instance.master.gtid=

# rds oss binlog
canal.instance.rds.accesskey=
canal.instance.rds.secretkey=
canal.instance.rds.instanceId=

# table meta tsdb info
canal.instance.tsdb.enable=true

#canal.instance.standby.address =
#canal.instance.standby.journal.name =

# username/password
canal.instance.dbUsername=canal
canal.instance.dbPassword=0123
canal.instance.connectionCharset = UTF-8
# enable druid Decrypt database password
canal.instance.enableDruid=false
#canal.instance.pwdPublicKey=MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBALK4BUxdDltRRE5/zXpVEVPUgunvscYFtEip3pmLlhrWpacX7y7GCMo2/JM6LeHmiiNdH1FWgGCpUfircSwlWKUCAwEAAQ==

# table regex
canal.instance.filter.regex=.*\\..*
# table black regex
canal.instance.filter.black.regex=mysql\\.slave_.*
# table field filter(format: schema1.tableName1:field1/field2,schema2.tableName2:field1/field2)
#canal.instance.filter.field=test1.t_product:id/subject/keywords,test2.t_company:id/name/contact/ch
# table field black filter(format: schema1.tableName1:field1/field2,schema2.tableName2:field1/field2)
#canal.instance.filter.black.field=test1.t_product:subject/product_image,test2.t_company:id/name/contact/ch

# mq config
canal.mq.topic=example
# dynamic topic route by schema or table regex
#canal.mq.dynamicTopic=mytest1.user,topic2:mytest2\\..*,.*\\..*
canal.mq.partition=0
canal.mq.enableDynamicQueuePartition=false
#################################################
"#;

const EQUIVALENT_TOML: &str = r#"
fallback_interval_s = 30
[master]
address = "127.0.0.1:3306"
[db]
username = "canal"
password = "0123"
connection_charset = "UTF-8"
[filter]
regex = '.*\..*'
black_regex = 'mysql\.slave_.*'
"#;

#[test]
fn legacy_properties_map_to_the_same_instance_as_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = tmp.path().join("legacy/conf");
    write(&legacy, "canal.properties", CANAL_PROPERTIES);
    write(&legacy, "example/instance.properties", INSTANCE_PROPERTIES);
    let toml = tmp.path().join("toml/conf");
    write(&toml, "canal.toml", "destinations = \"example\"\n");
    write(&toml, "example/instance.toml", EQUIVALENT_TOML);

    let l = load(&legacy);
    let t = load(&toml);
    assert_eq!(l.server_file, legacy.join("canal.properties"));
    assert_eq!(l.server.port, 11111);
    assert_eq!(l.server.destinations, ["example"]);
    assert_eq!(l.conf_dir, legacy, "canal.conf.dir=../conf from conf/ is conf/");
    assert_eq!(l.data_dir, legacy, "canal.file.data.dir=${{canal.conf.dir}} expanded");
    assert_eq!(l.coord.backend_kind(), BackendKind::Local);
    assert_eq!(l.coord.cursor_flush_period_ms, 1000);
    let li = only(&l);
    let ti = only(&t);
    assert_eq!(li.source.password, "0123", "no type inference");
    assert_eq!(li.source.password, ti.source.password);
    assert_eq!(li.fallback_interval, std::time::Duration::from_secs(30));
    assert_eq!(li.convert.filter.white().source(), ".*\\..*", "Java \\\\. unescaped");
    assert_eq!(li.convert.filter.black().source(), "mysql\\.slave_.*");
    assert!(!li.convert.filter.accepts("mysql", "slave_relay_log_info"));
    assert!(li.convert.filter.accepts("mysqlxslave", "t"));
    // The whole config, bar paths (data dirs differ by directory) and the redacted password.
    let strip = |i: &InstanceConfig| {
        let mut i = i.clone();
        i.data_dir = None;
        format!("{i:?}")
    };
    assert_eq!(strip(li), strip(ti));

    // MQ keys map (the mode stays tcp: the sample's serverMode).
    assert_eq!(l.server.mq.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(l.server.mq.kafka.acks, "all");
    assert_eq!(l.server.mq.batch_size, 50);
    assert_eq!(l.destinations[0].mq.topic, "example");
    assert_eq!(l.destinations[0].mq.partition, 0);
    assert!(l.mq_settings().is_none(), "tcp mode has no MQ settings");

    // Every key canal-rs does not act on is reported, by its Canal name, in one warning per file.
    let all = l.warnings.join("\n");
    for key in [
        "canal.admin.port",
        "canal.file.flush.period",
        "canal.instance.detecting.sql",
        "canal.instance.tsdb.url",
        "canal.mq.accessChannel",
        "canal.instance.filter.dml.insert",
    ] {
        assert!(all.contains(key), "{key} not in {all}");
    }
    assert!(all.contains("not supported by canal-rs"), "{all}");
    // `canal.auto.scan` is acted on now (hot reload).
    assert!(l.server.auto_scan && l.server.auto_scan_interval_s >= 1);
    for quiet in [
        "canal.auto.scan",
        "canal.serverMode",
        "canal.instance.gtidon",
        "canal.aliyun.accessKey",
        "canal.port",
        "canal.instance.fallbackIntervalInSeconds",
    ] {
        assert!(!all.contains(&format!("{quiet},")) && !all.ends_with(quiet), "{quiet}: {all}");
    }
    assert!(l.warnings.iter().any(|w| w.contains("canal.properties")), "{all}");
    assert!(l.warnings.iter().any(|w| w.contains("instance.properties")), "{all}");
}

#[test]
fn legacy_zk_servers_select_zookeeper_and_errors_use_canal_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path();
    write(
        conf,
        "canal.properties",
        "canal.zkServers=127.0.0.1:2181,127.0.0.2:2181\ncanal.zookeeper.flush.period=0\n",
    );
    write(conf, "example/instance.properties", "canal.instance.master.address=db:3306\n");
    let c = load(conf);
    assert_eq!(c.coord.backend_kind(), BackendKind::Zookeeper);
    assert_eq!(c.coord.zookeeper.servers, "127.0.0.1:2181,127.0.0.2:2181");
    assert_eq!(c.coord.cursor_flush_period_ms, 0);

    write(conf, "canal.properties", "canal.port=abc\n");
    let e = load_err(conf);
    assert!(e.contains("canal.properties") && e.contains("'canal.port'"), "{e}");
    write(conf, "canal.properties", "canal.instance.memory.buffer.size=1000\n");
    let e = load_err(conf);
    assert!(
        e.contains("canal.properties") && e.contains("'canal.instance.memory.buffer.size'"),
        "{e}"
    );
    write(conf, "canal.properties", "");
    write(conf, "example/instance.properties", "canal.instance.master.address=db\n");
    let e = load_err(conf);
    assert!(
        e.contains("example/instance.properties") && e.contains("'canal.instance.master.address'"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_warned_with_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path();
    write(
        conf,
        "canal.toml",
        "prot = 1\n[coord]\nbacknd = \"etcd\"\n[instance.filter]\nregexp = \"x\"\n",
    );
    write(
        conf,
        "example/instance.toml",
        "[master]\naddress = \"h:1\"\nadress = \"h:2\"\n[mq]\ntopicc = \"t\"\n",
    );
    let c = load(conf);
    let all = c.warnings.join("\n");
    for (file, key) in [
        ("canal.toml", "'prot'"),
        ("canal.toml", "'coord.backnd'"),
        ("canal.toml", "'instance.filter.regexp'"),
        ("example/instance.toml", "'master.adress'"),
        ("example/instance.toml", "'mq.topicc'"),
    ] {
        assert!(
            c.warnings.iter().any(|w| w.contains(file) && w.contains(key) && w.contains("unknown")),
            "{file} {key}: {all}"
        );
    }
    assert_eq!(c.warnings.len(), 5, "{all}");
}

#[test]
fn invalid_values_name_file_and_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (canal.toml, instance.toml, expected file, expected key)
        ("port = \"abc\"", MINIMAL_INSTANCE, "canal.toml", "'port'"),
        ("port = 0\nregister_ip = \"10.0.0.1\"", MINIMAL_INSTANCE, "canal.toml", "'port'"),
        ("port = 70000", MINIMAL_INSTANCE, "canal.toml", "'port'"),
        ("metrics_port = 11111", MINIMAL_INSTANCE, "canal.toml", "'metrics_port'"),
        ("ip = \"not an ip\"", MINIMAL_INSTANCE, "canal.toml", "'ip'"),
        ("passwd = \"xyz\"", MINIMAL_INSTANCE, "canal.toml", "'passwd'"),
        ("passwd = \"abcd\"", MINIMAL_INSTANCE, "canal.toml", "'passwd'"),
        ("user = \"canal\"", MINIMAL_INSTANCE, "canal.toml", "'passwd'"),
        ("[coord]\nbackend = \"consul\"", MINIMAL_INSTANCE, "canal.toml", "'coord.backend'"),
        ("[coord]\nbackend = \"etcd\"", MINIMAL_INSTANCE, "canal.toml", "'coord.etcd_endpoints'"),
        ("[coord]\nzk_servers = \"nohost\"", MINIMAL_INSTANCE, "canal.toml", "'coord.zk_servers'"),
        ("destinations = [\"a\", \"a\"]", MINIMAL_INSTANCE, "canal.toml", "'destinations'"),
        (
            "[instance.memory]\nbuffer_size = 1000",
            MINIMAL_INSTANCE,
            "canal.toml",
            "'instance.memory.buffer_size'",
        ),
        (
            "[instance.filter]\nregex = \"(\"",
            MINIMAL_INSTANCE,
            "canal.toml",
            "'instance.filter.regex'",
        ),
        ("", "[master]\naddress = \"h\"", "instance.toml", "'master.address'"),
        ("", "[master]\naddress = \"h:x\"", "instance.toml", "'master.address'"),
        ("", "[db]\nusername = \"u\"", "instance.toml", "'master.address'"),
        (
            "",
            "[master]\naddress = \"h:1\"\nposition = \"four\"",
            "instance.toml",
            "'master.position'",
        ),
        (
            "",
            "[master]\naddress = \"h:1\"\n[memory]\nbuffer_size = 3",
            "instance.toml",
            "'memory.buffer_size'",
        ),
        (
            "",
            "[master]\naddress = \"h:1\"\n[memory]\nbatch_mode = \"BYTES\"",
            "instance.toml",
            "'memory.batch_mode'",
        ),
        (
            "",
            "[master]\naddress = \"h:1\"\n[filter]\nregex = \"a(\"",
            "instance.toml",
            "'filter.regex'",
        ),
        (
            "",
            "[master]\naddress = \"h:1\"\n[filter]\nblack_regex = \"(a)\\\\1\"",
            "instance.toml",
            "'filter.black_regex'",
        ),
        (
            "",
            "[master]\naddress = \"h:1\"\n[filter]\nfield = \"nocolon\"",
            "instance.toml",
            "'filter.field'",
        ),
        (
            "",
            "[master]\naddress = \"h:1\"\n[db]\nconnection_charset = \"GBK\"",
            "instance.toml",
            "'db.connection_charset'",
        ),
        (
            "",
            "time_zone = \"Asia/Shanghai\"\n[master]\naddress = \"h:1\"",
            "instance.toml",
            "'time_zone'",
        ),
        (
            "",
            "transaction_size = 1000\n[master]\naddress = \"h:1\"",
            "instance.toml",
            "'transaction_size'",
        ),
        ("", "gtid_mode = \"maybe\"\n[master]\naddress = \"h:1\"", "instance.toml", "'gtid_mode'"),
    ];
    for (server, instance, file, key) in cases {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "canal.toml", server);
        write(tmp.path(), "example/instance.toml", instance);
        let e = match config::load(tmp.path(), &LoadOptions::new()) {
            Ok(_) => panic!("{server:?} / {instance:?} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(file) && e.contains(key), "{server:?} / {instance:?}: {e}");
    }
}

#[test]
fn file_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = config::load(tmp.path(), &LoadOptions::new()).unwrap_err();
    assert!(matches!(e, ConfigError::NoServerFile(_)), "{e}");
    write(tmp.path(), "canal.toml", "port = [");
    let e = load_err(tmp.path());
    assert!(e.contains("canal.toml"), "{e}");
    write(tmp.path(), "canal.toml", "destinations = \"missing\"");
    let e = load_err(tmp.path());
    assert!(e.contains("'missing'") && e.contains("no instance.toml"), "{e}");
    write(tmp.path(), "canal.toml", "destinations = \"../x\"");
    let e = load_err(tmp.path());
    assert!(e.contains("not a valid destination name"), "{e}");
}

#[test]
fn destinations_are_discovered_by_scanning() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path();
    write(conf, "canal.toml", "");
    write(conf, "zeta/instance.toml", MINIMAL_INSTANCE);
    write(conf, "alpha/instance.properties", "canal.instance.master.address=127.0.0.1:3306\n");
    std::fs::create_dir_all(conf.join("empty")).unwrap();
    write(conf, "spring/README", "not a destination");
    write(conf, "logback.xml", "<configuration/>");
    let c = load(conf);
    let names: Vec<_> = c.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(c.destinations[0].file, conf.join("alpha/instance.properties"));
    assert_eq!(config::scan_destinations(conf).unwrap(), ["alpha", "zeta"]);
    // Both files present: the TOML one wins and the other is reported.
    write(conf, "zeta/instance.properties", "canal.instance.master.address=other:3306\n");
    let c = load(conf);
    assert_eq!(c.destinations[1].instance.source.host, "127.0.0.1");
    assert!(c.warnings.iter().any(|w| w.contains("zeta/instance.properties")), "{:?}", c.warnings);
}

#[test]
fn shipped_conf_passes_check() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let c = load(&conf);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let i = only(&c);
    assert_eq!(i.destination, "example");
    assert_eq!((i.source.user.as_str(), i.source.password.as_str()), ("canal", "canal"));
    assert!(!i.convert.filter.accepts("mysql", "slave_master_info"));
    let text = config::check(&conf, &LoadOptions::new()).unwrap();
    for part in ["port 11111", "example", "127.0.0.1:3306", "coordinator: local", "warnings: none"]
    {
        assert!(text.contains(part), "{part} not in\n{text}");
    }
}

#[test]
fn canal_keys_in_the_environment_override_both_files() {
    // Canal's docker image turns `-e canal.instance.master.address=...` into JVM system
    // properties, which beat canal.properties and instance.properties alike.
    let tmp = tempfile::tempdir().unwrap();
    // The sample's canal.conf.dir=../conf needs the directory to be called conf.
    let conf = &tmp.path().join("conf");
    write(conf, "canal.properties", CANAL_PROPERTIES);
    write(conf, "example/instance.properties", INSTANCE_PROPERTIES);
    let env = [
        ("canal.port", "11120"),
        ("canal.instance.master.address", "mysql:3307"),
        ("canal.instance.dbPassword", "007"),
        ("canal.mq.accessChannel", "local"),
        ("CANAL_METRICS_PORT", "0"),
    ];
    let c = config::load(conf, &LoadOptions::new().with_env(env)).unwrap();
    assert_eq!(c.server.port, 11120);
    assert_eq!(c.server.metrics_port, 0);
    let i = only(&c);
    assert_eq!((i.source.host.as_str(), i.source.port), ("mysql", 3307));
    assert_eq!(i.source.password, "007");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("environment") && w.contains("canal.mq.accessChannel")),
        "{:?}",
        c.warnings
    );
    // The same with TOML files; a bad value names the variable.
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "canal.toml", "");
    write(tmp.path(), "example/instance.toml", MINIMAL_INSTANCE);
    let env = [("canal.instance.master.address", "nohost")];
    let e = config::load(tmp.path(), &LoadOptions::new().with_env(env)).unwrap_err().to_string();
    assert!(e.contains("environment") && e.contains("'canal.instance.master.address'"), "{e}");
}

#[test]
fn docs_list_every_key_and_mapping() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let toml = std::fs::read_to_string(root.join("conf/canal.toml")).unwrap();
    let instance = std::fs::read_to_string(root.join("conf/example/instance.toml")).unwrap();
    for key in config::server_keys() {
        if !key.starts_with("instance.") {
            assert!(docs.contains(&format!("`{key}`")), "docs lack {key}");
            let leaf = key.rsplit('.').next().unwrap();
            assert!(toml.contains(leaf), "conf/canal.toml lacks {key}");
        }
    }
    for key in config::instance_keys() {
        assert!(docs.contains(&format!("`{key}`")), "docs lack {key}");
        let leaf = key.rsplit('.').next().unwrap();
        assert!(instance.contains(leaf) || toml.contains(leaf), "conf lacks {key}");
    }
    for (canal, ours) in config::legacy::SERVER_KEYS {
        assert!(docs.contains(&format!("| `{canal}` | `{ours}`")), "docs lack {canal}");
    }
    for (canal, ours) in config::legacy::INSTANCE_KEYS {
        assert!(
            docs.contains(&format!("| `canal.instance.{canal}` | `{ours}`")),
            "docs lack {canal}"
        );
    }
}

#[test]
fn check_args_and_start_warnings() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        config: config::ConfigCommand,
    }
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "canal.toml", "");
    let dir = tmp.path().to_str().unwrap();
    let cli = Cli::parse_from(["x", "check", "--conf", dir, "--set", "port=12345", "--no-env"]);
    let config::ConfigCommand::Check(args) = cli.config;
    let opts = args.load_options().unwrap();
    let c = config::load(&args.conf, &opts).unwrap();
    assert_eq!(c.server.port, 12345);
    assert!(c.destinations.is_empty());
    assert!(c.warnings.iter().any(|w| w.contains("no destinations")), "{:?}", c.warnings);
    let text = config::check(&args.conf, &opts).unwrap();
    assert!(text.contains("port 12345") && text.contains("destinations: 0"), "{text}");
    assert!(Cli::try_parse_from(["x", "check", "--set"]).is_err());

    write(
        tmp.path(),
        "example/instance.toml",
        "[master]\naddress = \"h:1\"\nposition = 4\ngtid = \"u:1-2\"\n",
    );
    let c = load(tmp.path());
    let all = c.warnings.join("\n");
    assert!(all.contains("'master.position' is set without a journal name"), "{all}");
    assert!(all.contains("'master.gtid' is only used with gtid_mode"), "{all}");
    assert!(all.contains("example/instance.toml"), "{all}");
}

#[test]
fn mq_mode_settings_and_errors_name_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path();
    write(
        conf,
        "canal.toml",
        "[mq]\nmode = \"kafka\"\nflat_message = false\nbatch_size = 7\n\
         [mq.kafka]\nbootstrap_servers = \"k1:9092,k2:9092\"\ntransactional = true\n\
         [mq.kafka.properties]\n\"message.timeout.ms\" = \"60000\"\n",
    );
    write(
        conf,
        "example/instance.toml",
        "[master]\naddress = \"h:1\"\n[mq]\ntopic = \"t1\"\npartitions_num = 3\npartition_hash = \"db.t:id\"\n",
    );
    let c = load(conf);
    assert!(c.warnings.is_empty(), "librdkafka properties are not unknown keys: {:?}", c.warnings);
    let mq = c.mq_settings().expect("kafka mode");
    assert_eq!(mq.worker.batch_size, 7);
    assert!(mq.kafka.transactional);
    assert_eq!(mq.kafka.properties.get("message.timeout.ms").map(String::as_str), Some("60000"));
    let r = &mq.routing["example"];
    assert!(!r.flat_message);
    assert_eq!((r.topic.as_str(), r.partitions_num), ("t1", Some(3)));
    assert!(c.server_settings().mq.is_some());

    // Canal's spelling of the mode, in a properties file.
    let tmp = tempfile::tempdir().unwrap();
    let conf = &tmp.path().join("conf");
    write(
        conf,
        "canal.properties",
        "canal.serverMode = rabbitMQ\nrabbitmq.host = mq:5673\nrabbitmq.exchange = ex\n",
    );
    write(
        conf,
        "example/instance.properties",
        "canal.instance.master.address=h:1\ncanal.mq.topic=orders\n",
    );
    let c = load(conf);
    let mq = c.mq_settings().expect("rabbitmq mode");
    assert_eq!(mq.mode, config::ServerMode::Rabbitmq);
    assert_eq!((mq.rabbitmq.host.as_str(), mq.rabbitmq.exchange.as_str()), ("mq:5673", "ex"));
    assert_eq!(mq.routing["example"].topic, "orders");

    // Errors name the file and key.
    let bad = |server: &str, instance: &str| {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "canal.toml", server);
        write(
            tmp.path(),
            "example/instance.toml",
            &format!("[master]\naddress = \"h:1\"\n{instance}"),
        );
        load_err(tmp.path())
    };
    let e = bad("[mq]\nmode = \"rocketMQ\"\n", "");
    assert!(
        e.contains("canal.toml") && e.contains("rocketMQ") && e.contains("not supported"),
        "{e}"
    );
    let e = bad("[mq]\nmode = \"kafka\"\n[mq.kafka]\nbootstrap_servers = \"\"\n", "");
    assert!(e.contains("mq.kafka.bootstrap_servers"), "{e}");
    let e = bad("[mq]\nmode = \"kafka\"\nmax_in_flight_batches = 0\n", "");
    assert!(e.contains("mq.max_in_flight_batches"), "{e}");
    let e = bad("[mq]\nmode = \"kafka\"\n", "[mq]\npartitions_num = 0\n");
    assert!(e.contains("instance.toml") && e.contains("mq.partitions_num"), "{e}");
    // In tcp mode routing keys are not checked (they are not used).
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "canal.toml", "");
    write(
        tmp.path(),
        "example/instance.toml",
        "[master]\naddress = \"h:1\"\n[mq]\npartitions_num = 0\n",
    );
    load(tmp.path());
}

#[test]
fn balance_settings_and_per_destination_weight_and_prefer() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    write(&conf, "canal.toml", "");
    write(&conf, "a/instance.toml", MINIMAL_INSTANCE);
    let b = load(&conf).balance_settings();
    assert!(b.enabled);
    assert_eq!((b.slack, b.max_defer.as_millis(), b.refresh.as_millis()), (0, 10_000, 1000));
    assert_eq!(b.destinations["a"].weight, 1);
    assert!(b.destinations["a"].prefer.is_empty());

    write(
        &conf,
        "canal.toml",
        "[balance]\nslack = 1\nmax_defer_ms = 3000\nrefresh_ms = 500\n[instance.balance]\nweight = 2\n",
    );
    write(
        &conf,
        "b/instance.toml",
        &format!(
            "{MINIMAL_INSTANCE}[balance]\nweight = 5\nprefer = [\"10.0.0.1:11111\", \"10.0.0.2:11111\"]\n"
        ),
    );
    let c = load(&conf);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let b = c.server_settings().balance;
    assert_eq!((b.slack, b.max_defer.as_millis(), b.refresh.as_millis()), (1, 3000, 500));
    // `[instance.balance]` is the default of every instance file.
    assert_eq!(b.destinations["a"].weight, 2);
    assert_eq!(b.destinations["b"].weight, 5);
    assert_eq!(b.destinations["b"].prefer, ["10.0.0.1:11111", "10.0.0.2:11111"]);

    // Canal-style properties spell the same keys.
    let legacy = tmp.path().join("legacy");
    write(&legacy, "canal.properties", "canal.balance.enabled = false\ncanal.balance.slack = 2\n");
    write(
        &legacy,
        "x/instance.properties",
        "canal.instance.master.address = 127.0.0.1:3306\ncanal.instance.balance.weight = 3\ncanal.instance.balance.prefer = 10.0.0.1:11111,10.0.0.3:11111\n",
    );
    let b = load(&legacy).balance_settings();
    assert!(!b.enabled);
    assert_eq!(b.slack, 2);
    assert_eq!(b.destinations["x"].weight, 3);
    assert_eq!(b.destinations["x"].prefer, ["10.0.0.1:11111", "10.0.0.3:11111"]);

    // Bad values name the file and key.
    write(&conf, "b/instance.toml", &format!("{MINIMAL_INSTANCE}[balance]\nweight = 0\n"));
    let e = load_err(&conf);
    assert!(e.contains("b/instance.toml") && e.contains("balance.weight"), "{e}");
    write(
        &conf,
        "b/instance.toml",
        &format!("{MINIMAL_INSTANCE}[balance]\nprefer = [\"nohost\"]\n"),
    );
    let e = load_err(&conf);
    assert!(
        e.contains("b/instance.toml") && e.contains("balance.prefer") && e.contains("nohost"),
        "{e}"
    );
}

/// A reload restarts a destination when its fingerprint changes: two loads of the same files
/// (every kind of key set, column filters and MQ routing included) give the same fingerprints,
/// and an edit of one instance file changes only that destination's.
#[test]
fn reload_fingerprints_are_stable_and_follow_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    write(&conf, "canal.toml", "[instance.filter]\nfield = 'db.t:a/b,db.u:c'\n");
    let full = format!(
        "{MINIMAL_INSTANCE}[filter]\nregex = 'db\\..*'\nblack_field = 'db.t:z,db.v:y'\n[mq]\ntopic = 'x'\npartition_hash = 'db.t:a,db.u:b'\ndynamic_topic = 'a:db.t,b:db.u'\n[balance]\nweight = 2\nprefer = ['10.0.0.1:1', '10.0.0.2:2']\n"
    );
    write(&conf, "a/instance.toml", &full);
    write(&conf, "b/instance.toml", MINIMAL_INSTANCE);
    let prints = |c: &LoadedConfig| -> Vec<(String, String)> {
        c.specs().into_iter().map(|s| (s.config.destination.clone(), s.fingerprint)).collect()
    };
    let first = prints(&load(&conf));
    for _ in 0..20 {
        assert_eq!(prints(&load(&conf)), first);
    }
    write(&conf, "b/instance.toml", &format!("{MINIMAL_INSTANCE}ddl_isolation = false\n"));
    let after = prints(&load(&conf));
    assert_eq!(after[0], first[0], "a is unchanged");
    assert_ne!(after[1], first[1], "b was edited");
}
