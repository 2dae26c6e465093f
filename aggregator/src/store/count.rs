//! Counting the matches of a query, in total and per group of field values
//! (`group_by: [namespace]`), for alert rules.
//!
//! The store has no fast (columnar) fields besides `timestamp`, so a group's
//! value is read from the inverted index instead of from each hit: the
//! matching documents of a segment go into a bitset (one bit per document),
//! then the postings of each term of the grouped field mark which value each
//! matching document has. The cost is one pass over the query's matches and
//! one over the postings of the grouped field in the searched days; no hit
//! is loaded, except for record attributes whose value the tokenizer split
//! into several words, whose stored document is read to get the value whole.
//!
//! This module must not write, and is blocking like the rest of the store.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::{BooleanQuery, Occur, RangeQuery};
use tantivy::schema::{Field, IndexRecordOption, Type};
use tantivy::{
    DateTime, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TERMINATED, TantivyDocument,
    Term,
};

use super::{DayIndex, Store, days, schema::names};
use crate::Error;

/// Most distinct groups one count returns; matches in further groups are
/// counted in [`GroupCounts::other`].
pub const MAX_GROUPS: usize = 1_000;

/// The result of [`Store::count_by`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupCounts {
    /// Every match in the time range.
    pub total: u64,
    /// Matches per tuple of group values (one per `group_by` field, in
    /// order; empty where a record has no value for the field).
    pub groups: BTreeMap<Vec<String>, u64>,
    /// Matches in groups past [`MAX_GROUPS`].
    pub other: u64,
}

/// Where the value of a `group_by` field is read.
#[derive(Debug, Clone)]
enum Source {
    /// A raw string field (`namespace`, `severity`).
    Raw(Field),
    /// A path in a JSON field; `tokenized` for the attributes, whose
    /// string values are split into lowercased words.
    Json {
        field: Field,
        path: String,
        tokenized: bool,
    },
}

impl Store {
    /// Counts the records matching `query` with `from_ns <= timestamp <=
    /// to_ns`, in total and per tuple of values of the `group_by` fields
    /// (schema fields such as `namespace` or `level`, `resource.<key>`,
    /// `attributes.<key>`, or a bare key looked up in the resource
    /// attributes, then in the record attributes). Record attribute values
    /// are grouped lowercased, as the index keeps them.
    pub fn count_by(
        &self,
        query: &str,
        from_ns: i64,
        to_ns: i64,
        group_by: &[String],
    ) -> Result<GroupCounts, Error> {
        let parsed = self.parse_query(query)?;
        let mut out = GroupCounts::default();
        if from_ns > to_ns {
            return Ok(out);
        }
        let range = RangeQuery::new(
            Bound::Included(Term::from_field_date(
                self.fields.timestamp,
                DateTime::from_timestamp_nanos(from_ns),
            )),
            Bound::Included(Term::from_field_date(
                self.fields.timestamp,
                DateTime::from_timestamp_nanos(to_ns),
            )),
        );
        let query = BooleanQuery::new(vec![(Occur::Must, parsed), (Occur::Must, Box::new(range))]);
        let sources: Vec<Vec<Source>> = group_by.iter().map(|g| self.sources(g)).collect();
        let (first, last) = (days::day_of(from_ns), days::day_of(to_ns));
        let indexes: Vec<Arc<DayIndex>> = self
            .read_days()
            .range(first..=last)
            .map(|(_, d)| Arc::clone(d))
            .collect();
        for day in indexes {
            let searcher = day.reader.searcher();
            let matches = searcher
                .search(&query, &MatchSets)
                .map_err(|e| Error::index(day.day, e))?;
            for m in matches {
                out.total += m.count;
                if group_by.is_empty() || m.count == 0 {
                    continue;
                }
                let reader = searcher.segment_reader(m.segment);
                let values: Vec<(Vec<String>, Vec<u32>)> = sources
                    .iter()
                    .map(|s| values_of(reader, &m, s))
                    .collect::<Result<_, _>>()
                    .map_err(|e| Error::index(day.day, e))?;
                // Count by value ordinals first: no string per document.
                let mut by_ords: HashMap<Vec<u32>, u64> = HashMap::new();
                for i in 0..values.first().map_or(0, |(_, ords)| ords.len()) {
                    let key: Vec<u32> = values
                        .iter()
                        .map(|(_, ords)| ords.get(i).copied().unwrap_or(NONE))
                        .collect();
                    *by_ords.entry(key).or_default() += 1;
                }
                let per_doc = by_ords.into_iter().map(|(ords, n)| {
                    let key: Vec<String> = ords
                        .iter()
                        .zip(&values)
                        .map(|(o, (dict, _))| dict.get(*o as usize).cloned().unwrap_or_default())
                        .collect();
                    (key, n)
                });
                for (key, n) in per_doc {
                    if out.groups.len() < MAX_GROUPS || out.groups.contains_key(&key) {
                        *out.groups.entry(key).or_default() += n;
                    } else {
                        out.other += n;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Where the values of a `group_by` field are found, in order of
    /// preference.
    fn sources(&self, name: &str) -> Vec<Source> {
        let f = &self.fields;
        let json = |field, path: &str, tokenized| Source::Json {
            field,
            path: path.to_string(),
            tokenized,
        };
        match name {
            names::LEVEL | names::SEVERITY => return vec![Source::Raw(f.severity)],
            _ => {}
        }
        if let Some((field, _)) = f
            .resource_fields
            .iter()
            .find(|(field, _)| f.schema.get_field_name(*field) == name)
        {
            return vec![Source::Raw(*field)];
        }
        if let Some(path) = name.strip_prefix("resource.") {
            return vec![json(f.resource, path, false)];
        }
        if let Some(path) = name.strip_prefix("attributes.") {
            return vec![json(f.attributes, path, true)];
        }
        vec![
            json(f.resource, name, false),
            json(f.attributes, name, true),
        ]
    }
}

/// The matching documents of one segment.
struct MatchSet {
    segment: SegmentOrdinal,
    /// One bit per document id.
    bits: Vec<u64>,
    /// Matches before each word of `bits` (filled by `harvest`).
    before: Vec<u32>,
    count: u64,
}

impl MatchSet {
    fn contains(&self, doc: DocId) -> bool {
        let (word, bit) = ((doc / 64) as usize, doc % 64);
        self.bits.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// The matching document ids, ascending.
    fn docs(&self) -> impl Iterator<Item = DocId> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u32)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i as u32 * 64 + b)
        })
    }

    /// The position of `doc` among the matching documents.
    fn rank(&self, doc: DocId) -> usize {
        let (word, bit) = ((doc / 64) as usize, doc % 64);
        let before = self.before.get(word).copied().unwrap_or(0);
        let in_word = self
            .bits
            .get(word)
            .map_or(0, |w| (w & ((1u64 << bit) - 1)).count_ones());
        (before + in_word) as usize
    }
}

/// Collects each segment's matches into a [`MatchSet`].
struct MatchSets;

impl Collector for MatchSets {
    type Fruit = Vec<MatchSet>;
    type Child = MatchSet;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<MatchSet> {
        Ok(MatchSet {
            segment,
            bits: vec![0; (reader.max_doc() as usize).div_ceil(64)],
            before: Vec::new(),
            count: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<MatchSet>) -> tantivy::Result<Vec<MatchSet>> {
        Ok(fruits)
    }
}

impl SegmentCollector for MatchSet {
    type Fruit = MatchSet;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let (word, bit) = ((doc / 64) as usize, doc % 64);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= 1 << bit;
            self.count += 1;
        }
    }

    fn harvest(mut self) -> MatchSet {
        let mut sum = 0u32;
        self.before = self
            .bits
            .iter()
            .map(|w| {
                let b = sum;
                sum += w.count_ones();
                b
            })
            .collect();
        self
    }
}

/// "No value" among value ordinals.
const NONE: u32 = u32::MAX;

/// The values of one `group_by` field in a segment and, for each matching
/// document (by rank), the ordinal of its value ([`NONE`] without one),
/// from the first source that has one.
fn values_of(
    reader: &SegmentReader,
    matches: &MatchSet,
    sources: &[Source],
) -> tantivy::Result<(Vec<String>, Vec<u32>)> {
    let n = usize::try_from(matches.count).unwrap_or(usize::MAX);
    let mut dict: Vec<String> = Vec::new();
    let mut known: HashMap<String, u32> = HashMap::new();
    let mut intern = |dict: &mut Vec<String>, v: String| -> u32 {
        *known.entry(v).or_insert_with_key(|v| {
            dict.push(v.clone());
            u32::try_from(dict.len() - 1).unwrap_or(NONE)
        })
    };
    let mut ords = vec![NONE; n];
    for source in sources {
        let mut seen_here = vec![0u8; n];
        let mut found = vec![NONE; n];
        let (field, prefix, tokenized) = match source {
            Source::Raw(field) => (*field, Vec::new(), false),
            Source::Json {
                field,
                path,
                tokenized,
            } => {
                let term = Term::from_field_json_path(*field, path, true);
                (*field, term.serialized_value_bytes().to_vec(), *tokenized)
            }
        };
        let index = reader.inverted_index(field)?;
        let mut terms = index.terms().range().ge(&prefix).into_stream()?;
        while terms.advance() {
            let key = terms.key();
            if !key.starts_with(&prefix) {
                break;
            }
            let Some(value) = decode(&key[prefix.len()..], prefix.is_empty()) else {
                continue;
            };
            let mut ord = None;
            let mut postings =
                index.read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)?;
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if matches.contains(doc) {
                    let r = matches.rank(doc);
                    if let (Some(count), Some(slot)) = (seen_here.get_mut(r), found.get_mut(r)) {
                        *count = count.saturating_add(1);
                        if *slot == NONE {
                            *slot = *ord.get_or_insert_with(|| intern(&mut dict, value.clone()));
                        }
                    }
                }
                doc = postings.advance();
            }
        }
        // A prose value split into several words: read it whole.
        if tokenized && seen_here.iter().any(|&c| c > 1) {
            let store = reader.get_store_reader(1)?;
            let Source::Json { field, path, .. } = source else {
                continue;
            };
            for (r, doc) in matches.docs().enumerate() {
                if seen_here.get(r).is_some_and(|&c| c > 1) {
                    let stored: TantivyDocument = store.get(doc)?;
                    if let (Some(whole), Some(slot)) = (
                        stored_value(&stored, *field, path).map(|v| v.to_lowercase()),
                        found.get_mut(r),
                    ) {
                        *slot = intern(&mut dict, whole);
                    }
                }
            }
        }
        for (slot, v) in ords.iter_mut().zip(found) {
            if *slot == NONE {
                *slot = v;
            }
        }
    }
    Ok((dict, ords))
}

/// A term's value as text: the bytes of a raw string field, or the typed
/// value after a JSON path.
fn decode(bytes: &[u8], raw: bool) -> Option<String> {
    if raw {
        return std::str::from_utf8(bytes).ok().map(str::to_string);
    }
    let code = *bytes.first()?;
    let typ = Type::from_code(code)?;
    let value = tantivy::schema::ValueBytes::wrap(bytes);
    match typ {
        Type::Str => value.as_str().map(str::to_string),
        Type::U64 => value.as_u64().map(|v| v.to_string()),
        Type::I64 => value.as_i64().map(|v| v.to_string()),
        Type::F64 => value.as_f64().map(|v| v.to_string()),
        Type::Bool => value.as_bool().map(|v| v.to_string()),
        _ => None,
    }
}

/// The scalar at a dotted `path` of a stored JSON field: the key as written
/// (`http.method`), or nested objects.
fn stored_value(doc: &TantivyDocument, field: Field, path: &str) -> Option<String> {
    let object = doc.get_first(field)?;
    let value = serde_json::to_value(tantivy::schema::OwnedValue::from(object)).ok()?;
    let found = value.get(path).cloned().or_else(|| {
        path.split('.')
            .try_fold(&value, |v, seg| v.get(seg))
            .cloned()
    })?;
    match found {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mecha_parsers::Severity;

    use super::*;
    use crate::test_support::*;

    fn key(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn counts_split_by_schema_resource_and_attribute_values() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let mut records = Vec::new();
        for (i, (ns, deploy, tenant)) in [
            ("shop", "cart", "Acme Corp"),
            ("shop", "cart", "acme corp"),
            ("shop", "checkout", "globex"),
            ("bank", "ledger", "globex"),
            ("bank", "", ""),
        ]
        .into_iter()
        .enumerate()
        {
            let mut r = record(t + i as i64, Severity::Error, ns, "boom");
            if !deploy.is_empty() {
                r.resource.set("k8s.deployment.name", deploy);
            }
            if !tenant.is_empty() {
                r = with_attr(r, "tenant", tenant);
            }
            records.push(r);
        }
        records.push(record(t + 9, Severity::Info, "shop", "fine"));
        writer.write_batches(vec![records]).unwrap();
        let (from, to) = (t - HOUR_NS, t + HOUR_NS);
        let by = |fields: &[&str]| {
            let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            store.count_by("level:error", from, to, &fields).unwrap()
        };
        let c = by(&[]);
        assert_eq!((c.total, c.groups.len()), (5, 0));
        let c = by(&["namespace"]);
        assert_eq!(
            c.groups,
            BTreeMap::from([(key(&["bank"]), 2), (key(&["shop"]), 3)])
        );
        let c = by(&["namespace", "k8s.deployment.name"]);
        assert_eq!(
            c.groups,
            BTreeMap::from([
                (key(&["bank", ""]), 1),
                (key(&["bank", "ledger"]), 1),
                (key(&["shop", "cart"]), 2),
                (key(&["shop", "checkout"]), 1),
            ])
        );
        // Prose values are grouped whole, lowercased.
        let c = by(&["tenant"]);
        assert_eq!(
            c.groups,
            BTreeMap::from([
                (key(&[""]), 1),
                (key(&["acme corp"]), 2),
                (key(&["globex"]), 2)
            ])
        );
        assert_eq!(by(&["attributes.tenant"]).groups, c.groups);
        let c = store
            .count_by("*", from, to, &["level".to_string()])
            .unwrap();
        assert_eq!(
            c.groups,
            BTreeMap::from([(key(&["error"]), 5), (key(&["info"]), 1)])
        );
        // Outside the range nothing counts.
        let c = store
            .count_by("*", t + 10, to, &["level".to_string()])
            .unwrap();
        assert_eq!((c.total, c.groups.len()), (0, 0));
    }

    #[test]
    fn numeric_attributes_group_by_their_number() {
        let dir = tempdir();
        let (store, mut writer) = open_store(dir.path());
        let t = today_start_ns() + HOUR_NS;
        let records = (0..5)
            .map(|i| {
                with_attr(
                    record(t + i, Severity::Error, "shop", "x"),
                    "sentry.issue_id",
                    if i < 3 { 7 } else { 12 },
                )
            })
            .collect();
        writer.write_batches(vec![records]).unwrap();
        let c = store
            .count_by("*", t - 1, t + 10, &["sentry.issue_id".to_string()])
            .unwrap();
        assert_eq!(
            c.groups,
            BTreeMap::from([(key(&["12"]), 2), (key(&["7"]), 3)])
        );
    }
}
