//! The three rule lists of Canal's MQ routing, parsed once: `canal.mq.dynamicTopic`,
//! `canal.mq.partitionHash` and `canal.mq.dynamicTopicPartitionNum` (docs/configuration.md, "MQ
//! routing").
//!
//! Java Canal splits each list on `,` and `;`, tells a regex from a plain name by the presence of
//! any of `*?+|(){}[]\$^`, matches plain names case-insensitively and regexes as a full,
//! case-insensitive match over the lower-cased name (the same matcher as the table filter).
//! Where Java silently ignores an item that cannot work, we refuse it with a typed error.

use crate::filter::TableFilter;

use super::RoutingError;

pub(crate) const KEY_DYNAMIC_TOPIC: &str = "canal.mq.dynamicTopic";
pub(crate) const KEY_PARTITION_HASH: &str = "canal.mq.partitionHash";
pub(crate) const KEY_TOPIC_PARTITIONS: &str = "canal.mq.dynamicTopicPartitionNum";

fn config_error(key: &'static str, value: &str, reason: impl Into<String>) -> RoutingError {
    RoutingError::Config { key, value: value.to_owned(), reason: reason.into() }
}

/// The items of a rule list: split on `,` and `;`, trimmed, empty items dropped.
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', ';']).map(str::trim).filter(|s| !s.is_empty())
}

/// Java's `isWildCard`: a pattern with any of these characters is a regex.
fn is_regex(pattern: &str) -> bool {
    pattern.contains(['*', '?', '+', '|', '(', ')', '{', '}', '[', ']', '\\', '$', '^'])
}

/// Java's `String.equalsIgnoreCase`, close enough for names: ASCII fast path, else per character.
pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    let mut x = a.chars();
    let mut y = b.chars();
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(c), Some(d)) => {
                if c != d && !c.to_lowercase().eq(d.to_lowercase()) {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// A plain name or a regex.
#[derive(Clone, Debug)]
pub(crate) enum NameMatch {
    Exact(String),
    Regex(TableFilter),
}

impl NameMatch {
    fn parse(key: &'static str, item: &str, pattern: &str) -> Result<Self, RoutingError> {
        if pattern.is_empty() {
            return Err(config_error(key, item, "empty name or pattern"));
        }
        if !is_regex(pattern) {
            return Ok(Self::Exact(pattern.to_owned()));
        }
        TableFilter::white(pattern)
            .map(Self::Regex)
            .map_err(|e| config_error(key, item, format!("bad regex: {e}")))
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(s) => eq_ignore_case(s, name),
            Self::Regex(f) => f.matches(name),
        }
    }
}

/// One `canal.mq.dynamicTopic` item: `[topic:]pattern`.
#[derive(Clone, Debug)]
struct TopicRule {
    /// The explicit topic; `None` = the matched name, lower-cased.
    topic: Option<String>,
    /// Plain names match `schema` or `schema.table`; a regex containing `\.` matches only
    /// `schema.table`, any other regex only `schema`.
    target: NameMatch,
    table_regex: bool,
}

impl TopicRule {
    fn matches(&self, name: &str) -> bool {
        match &self.target {
            NameMatch::Exact(s) => eq_ignore_case(s, name),
            NameMatch::Regex(f) => name.contains('.') == self.table_regex && f.matches(name),
        }
    }
}

/// `canal.mq.dynamicTopic`.
#[derive(Clone, Debug, Default)]
pub(crate) struct DynamicTopics {
    rules: Vec<TopicRule>,
}

impl DynamicTopics {
    pub(crate) fn parse(list: &str) -> Result<Self, RoutingError> {
        let mut rules = Vec::new();
        for item in items(list) {
            // The first `:` separates an explicit topic (Java's `indexOf`).
            let (topic, pattern) = match item.split_once(':') {
                Some((t, p)) => {
                    let t = t.trim();
                    if t.is_empty() {
                        return Err(config_error(
                            KEY_DYNAMIC_TOPIC,
                            item,
                            "empty topic before ':'",
                        ));
                    }
                    (Some(t.to_owned()), p.trim())
                }
                None => (None, item),
            };
            let target = NameMatch::parse(KEY_DYNAMIC_TOPIC, item, pattern)?;
            rules.push(TopicRule { topic, target, table_regex: pattern.contains("\\.") });
        }
        if rules.is_empty() {
            return Err(config_error(KEY_DYNAMIC_TOPIC, list, "no rule"));
        }
        Ok(Self { rules })
    }

    /// The topic of an entry of `schema.table` before Canal's `.` → `_` replacement, or `None`
    /// for the default topic. All rules are tried on `schema.table` first, then on `schema`; the
    /// first match wins.
    pub(crate) fn topic_for(&self, schema: &str, table: &str) -> Option<String> {
        if schema.is_empty() || table.is_empty() {
            return None;
        }
        let full = format!("{schema}.{table}");
        for name in [full.as_str(), schema] {
            if let Some(r) = self.rules.iter().find(|r| r.matches(name)) {
                return Some(match &r.topic {
                    Some(t) => t.clone(),
                    None => name.to_lowercase(),
                });
            }
        }
        None
    }
}

/// How the rows of a matched table are hashed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HashMode {
    /// No column list: the table name's hash, the entry is not split.
    Table,
    /// `$pk$`: the key columns.
    PrimaryKey,
    /// `pk1^pk2`: the named columns.
    Columns(Vec<String>),
}

#[derive(Clone, Debug)]
struct HashRule {
    name: NameMatch,
    mode: HashMode,
}

/// `canal.mq.partitionHash`.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartitionHash {
    rules: Vec<HashRule>,
}

impl PartitionHash {
    pub(crate) fn parse(list: &str) -> Result<Self, RoutingError> {
        let mut rules = Vec::new();
        for item in items(list) {
            // The last `:` separates the columns (Java's `lastIndexOf`, position > 0).
            let (pattern, mode) = match item.rfind(':') {
                Some(0) => {
                    return Err(config_error(KEY_PARTITION_HASH, item, "empty table before ':'"));
                }
                Some(i) => {
                    let cols = item[i + 1..].trim();
                    let mode = if cols.eq_ignore_ascii_case("$pk$") {
                        HashMode::PrimaryKey
                    } else {
                        let names: Vec<String> = cols
                            .split('^')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                        if names.is_empty() {
                            return Err(config_error(
                                KEY_PARTITION_HASH,
                                item,
                                "no column after ':' (write `$pk$`, `col1^col2`, or no ':' for a table hash)",
                            ));
                        }
                        HashMode::Columns(names)
                    };
                    (item[..i].trim(), mode)
                }
                None => (item, HashMode::Table),
            };
            let name = NameMatch::parse(KEY_PARTITION_HASH, item, pattern)?;
            rules.push(HashRule { name, mode });
        }
        if rules.is_empty() {
            return Err(config_error(KEY_PARTITION_HASH, list, "no rule"));
        }
        Ok(Self { rules })
    }

    /// The index of the first rule matching `schema.table`.
    pub(crate) fn rule_for(&self, schema: &str, table: &str) -> Option<usize> {
        let full = format!("{schema}.{table}");
        self.rules.iter().position(|r| r.name.matches(&full))
    }

    pub(crate) fn mode(&self, rule: usize) -> &HashMode {
        &self.rules[rule].mode
    }
}

#[derive(Clone, Debug)]
struct CountRule {
    name: NameMatch,
    count: u32,
}

/// `canal.mq.dynamicTopicPartitionNum`: `topic:count` items.
#[derive(Clone, Debug, Default)]
pub(crate) struct TopicPartitions {
    rules: Vec<CountRule>,
}

impl TopicPartitions {
    pub(crate) fn parse(list: &str) -> Result<Self, RoutingError> {
        let mut rules = Vec::new();
        for item in items(list) {
            let Some(i) = item.rfind(':').filter(|&i| i > 0) else {
                return Err(config_error(KEY_TOPIC_PARTITIONS, item, "expected `topic:count`"));
            };
            let count_text = item[i + 1..].trim();
            let count = parse_count(count_text).ok_or_else(|| {
                config_error(KEY_TOPIC_PARTITIONS, item, "count must be 1..=2147483647")
            })?;
            let name = NameMatch::parse(KEY_TOPIC_PARTITIONS, item, item[..i].trim())?;
            rules.push(CountRule { name, count });
        }
        if rules.is_empty() {
            return Err(config_error(KEY_TOPIC_PARTITIONS, list, "no rule"));
        }
        Ok(Self { rules })
    }

    /// The partition count of the first rule matching `topic`.
    pub(crate) fn count_for(&self, topic: &str) -> Option<u32> {
        self.rules.iter().find(|r| r.name.matches(topic)).map(|r| r.count)
    }
}

/// A partition count: digits only (Java's `isNumeric`), 1..=i32::MAX.
pub(crate) fn parse_count(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&n| n > 0 && n <= i32::MAX as u32)
}
