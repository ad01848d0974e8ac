//! Rebuilding rules quickly without changing what they do: the classifier is trained only
//! when one of its inputs changed (`nlu::cache`), a reused model (from memory or from a
//! persistent store) understands exactly as a fresh one, a stored blob that is not right
//! is trained over, and `dsl::check_dir` reports exactly what `dsl::load_dir` reports.
//!
//! Every test that needs a training of its own makes its intents unique (the process's
//! memory of trained models is shared by the tests running at once), and asserts a reuse
//! as "not trained", since another test may have pushed a model out of memory.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use kefu::diag::Span;
use kefu::dsl::{self, LoadOptions, Summary, TrainedCache};
use kefu::nlu::cache::{self, Input, Origin, Trained};
use kefu::nlu::classifier::Params;
use kefu::nlu::{Context, Intent, Nlu, Options};

/// A persistent level in memory that records what it was asked.
#[derive(Default)]
struct Recorder {
    blobs: Mutex<HashMap<String, Vec<u8>>>,
    gets: Mutex<Vec<String>>,
    puts: Mutex<Vec<String>>,
}

impl TrainedCache for Recorder {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.gets.lock().unwrap().push(key.to_string());
        self.blobs.lock().unwrap().get(key).cloned()
    }

    fn put(&self, key: &str, bytes: &[u8]) {
        self.puts.lock().unwrap().push(key.to_string());
        self.blobs.lock().unwrap().insert(key.to_string(), bytes.to_vec());
    }
}

impl Recorder {
    fn puts(&self) -> usize {
        self.puts.lock().unwrap().len()
    }
}

/// A store that answers every key with the same bytes and keeps nothing.
struct Answers(Vec<u8>);

impl TrainedCache for Answers {
    fn get(&self, _: &str) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }

    fn put(&self, _: &str, _: &[u8]) {}
}

/// Something no other test (or run) trains on.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}{}x{nanos}", std::process::id())
}

/// A copy of the demo rules in a temporary directory, with one unique example added to
/// an intent so that its classifier is trained by this test alone.
fn demo_copy(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(&support::root().join("rules"), dir.path());
    edit(
        dir.path(),
        "intents.kefu",
        "\"what size should I get\",",
        &format!("\"what size should I get\", \"{}\",", unique(tag)),
    );
    dir
}

/// Replaces the one occurrence of `old` in `dir/file`.
fn edit(dir: &Path, file: &str, old: &str, new: &str) {
    let path: PathBuf = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches(old).count(), 1, "{old} in {file}");
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
}

fn build(dir: &Path, store: &Arc<Recorder>) -> kefu::RuleSet {
    let store: Arc<dyn TrainedCache> = Arc::clone(store) as Arc<dyn TrainedCache>;
    let compiled = dsl::load_dir_with(
        dir,
        LoadOptions {
            trained_cache: Some(store),
            ..LoadOptions::default()
        },
    );
    compiled.rules.unwrap_or_else(|| panic!("{}", compiled.report))
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 5).unwrap()
}

/// Messages of every kind: intents, levels, out of scope, entities, English.
fn messages() -> Vec<String> {
    let mut texts: Vec<String> = kefu::nlu::eval::read(&support::root().join("rules/tests/intents.jsonl"))
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .take(150)
        .collect();
    texts.extend(
        [
            "我想退货",
            "帮我订一张去武汉的机票",
            "黑色XL还有吗",
            "what size should I get",
            "？？？",
        ]
        .map(String::from),
    );
    texts
}

/// Whether two understandings agree on everything, for every message.
fn same_understanding(a: &Nlu, b: &Nlu) {
    assert_eq!(a.model().parameters(), b.model().parameters());
    assert_eq!(a.report(), b.report());
    for text in messages() {
        assert_eq!(
            a.understand_on(&text, &Context::default(), today()),
            b.understand_on(&text, &Context::default(), today()),
            "{text}"
        );
        assert_eq!(a.classify(&text), b.classify(&text), "{text}");
    }
}

#[test]
fn editing_replies_promotions_or_the_threshold_reuses_the_classifier_and_editing_intents_retrains() {
    let dir = demo_copy("edits");
    let store = Arc::new(Recorder::default());
    let first = build(dir.path(), &store);
    assert_eq!(first.nlu.origin(), Origin::Trained);
    assert_eq!(store.puts(), 1, "what was trained is stored");

    // Replies, promotions, the threshold: not training inputs.
    let mut versions = vec![first.version.clone()];
    for (file, old, new) in [
        (
            "presale.kefu",
            "尺码标准，按平时穿的尺码拍就行",
            "尺码标准，按平常穿的尺码拍就好",
        ),
        ("promotions.kefu", "双11期间全场满300减50", "双11期间全场满300减60"),
        ("shop.kefu", "threshold 0.6 ", "threshold 0.7 "),
    ] {
        edit(dir.path(), file, old, new);
        let rules = build(dir.path(), &store);
        assert_ne!(rules.nlu.origin(), Origin::Trained, "{file}: trained again");
        assert_eq!(store.puts(), 1, "{file}: stored again");
        assert!(!versions.contains(&rules.version), "{file}: the version did not change");
        versions.push(rules.version.clone());
        same_understanding(&first.nlu, &rules.nlu);
    }
    let rules = build(dir.path(), &store);
    assert_eq!(
        rules.nlu.threshold(),
        0.7,
        "what is not trained is taken from the new rules"
    );

    // An intent's example, and a keyword: training inputs.
    edit(
        dir.path(),
        "intents.kefu",
        "\"is it oversized\",",
        "\"is it oversized or not\",",
    );
    let rules = build(dir.path(), &store);
    assert_eq!(rules.nlu.origin(), Origin::Trained);
    assert_eq!(store.puts(), 2);
    assert_ne!(rules.nlu.model().parameters(), first.nlu.model().parameters());

    // Back to the first intents: that model is known, whatever else changed.
    edit(
        dir.path(),
        "intents.kefu",
        "\"is it oversized or not\",",
        "\"is it oversized\",",
    );
    let rules = build(dir.path(), &store);
    assert_ne!(rules.nlu.origin(), Origin::Trained);
    assert_eq!(store.puts(), 2);
    same_understanding(&first.nlu, &rules.nlu);
}

/// Two intents with examples and keywords, unique to the caller.
fn intents(tag: &str) -> Vec<Intent> {
    let span = Span::new(0, 0, 0);
    vec![
        Intent {
            name: "物流.发货".into(),
            examples: vec![
                "什么时候发货".into(),
                "几天能发货".into(),
                "今天能发出吗".into(),
                "发货要多久".into(),
                "下单后多久发".into(),
                unique(tag),
            ],
            keywords: vec!["发货".into()],
            span,
        },
        Intent {
            name: "售后.退货".into(),
            examples: vec![
                "我想退货".into(),
                "怎么退货".into(),
                "不想要了能退吗".into(),
                "退货地址是哪".into(),
                "七天无理由吗".into(),
            ],
            keywords: vec!["退货".into(), "退回".into()],
            span,
        },
    ]
}

#[test]
fn every_training_input_changes_the_key_and_nothing_else_does() {
    let base = intents("key");
    let options = Options::default();
    let key = |intents: &[Intent], options: &Options| Input::new(intents, options).key();
    let original = key(&base, &options);

    let mut changed: Vec<(&str, String)> = Vec::new();
    let mut with = |what: &'static str, f: &dyn Fn(&mut Vec<Intent>, &mut Options)| {
        let (mut i, mut o) = (base.clone(), options.clone());
        f(&mut i, &mut o);
        changed.push((what, key(&i, &o)));
    };
    with("an intent's name", &|i, _| i[0].name = "物流.催发货".into());
    with("an example", &|i, _| i[1].examples[0] = "我要退货".into());
    with("an example added", &|i, _| i[1].examples.push("退货怎么弄".into()));
    with("an example moved to another intent", &|i, _| {
        let e = i[0].examples.remove(0);
        i[1].examples.push(e);
    });
    with("the examples' order", &|i, _| i[1].examples.swap(0, 1));
    with("a keyword", &|i, _| i[1].keywords[1] = "退款".into());
    with("a keyword removed", &|i, _| {
        i[1].keywords.pop();
    });
    with("the intents' order", &|i, _| i.swap(0, 1));
    with("an intent added", &|i, _| {
        let mut extra = i[0].clone();
        extra.name = "其他.问候".into();
        i.push(extra);
    });
    with("the penalties", &|_, o| o.params.lambdas = vec![1e-4]);
    with("the iterations", &|_, o| o.params.max_iter += 1);
    with("the tolerance", &|_, o| o.params.tolerance *= 2.0);
    with("the folds", &|_, o| o.params.folds = 3);
    with("the memory", &|_, o| o.params.memory += 1);
    with("min_df", &|_, o| o.params.min_df += 1);
    with("large", &|_, o| o.params.large += 1);
    with("the unseen weight", &|_, o| o.params.unseen_weight += 0.05);
    with("the built-in corpus", &|_, o| o.builtin_oos = false);
    with("the corpus weight", &|_, o| o.oos_weight += 0.01);
    with("the corpus calibration weight", &|_, o| {
        o.oos_calibration_weight += 0.01
    });
    let mut seen = std::collections::HashSet::from([original.clone()]);
    for (what, k) in &changed {
        assert!(seen.insert(k.clone()), "changing {what} left the key as another's");
    }
    // Every field of `Params` is covered above: a new field must be added here (the
    // struct literal below stops compiling otherwise).
    let Params {
        lambdas: _,
        max_iter: _,
        tolerance: _,
        folds: _,
        memory: _,
        min_df: _,
        large: _,
        unseen_weight: _,
    } = Params::default();

    // Not inputs: where an intent is declared, the threshold, the zone, the memo's size.
    let mut same = base.clone();
    same[0].span = Span::new(3, 10, 20);
    let other = Options {
        threshold: 0.9,
        timezone: chrono_tz::Europe::Paris,
        memo_capacity: 0,
        ..Options::default()
    };
    assert_eq!(key(&same, &other), original);
}

#[test]
fn a_reused_model_understands_exactly_as_a_fresh_one() {
    let intents = intents("same");
    let options = Options::default();
    let fresh = Nlu::train(&intents, &[], &options);

    // From memory: the first build trains it, the second finds it.
    let store = Arc::new(Recorder::default());
    let first = Nlu::reuse_or_train(&intents, &[], &options, Some(store.as_ref()));
    assert_eq!(first.origin(), Origin::Trained);
    same_understanding(&fresh, &first);
    let again = Nlu::reuse_or_train(&intents, &[], &options, Some(store.as_ref()));
    assert_ne!(again.origin(), Origin::Trained);
    same_understanding(&fresh, &again);

    // From the store: what was stored for these intents, read by a process that has never
    // trained them (here: other options of the same inputs are not in memory, so the
    // stored bytes are all there is).
    let input = Input::new(&intents, &options);
    let bytes = store.blobs.lock().unwrap().get(&input.key()).cloned().expect("stored");
    let loaded = cache::decode(&bytes, &input.key(), &input).expect("a stored model reads back");
    assert_eq!(loaded.model().parameters(), fresh.model().parameters());
    assert_eq!(loaded.model().report(), fresh.model().report());
    let other = intents_with_new_example(&intents);
    let trained = Trained::train(&Input::new(&other, &options));
    let stored = Arc::new(Recorder::default());
    let key = Input::new(&other, &options).key();
    stored.put(&key, &cache::encode(&trained, &key));
    let from_store = Nlu::reuse_or_train(&other, &[], &options, Some(stored.as_ref()));
    assert_eq!(from_store.origin(), Origin::Stored);
    same_understanding(&Nlu::train(&other, &[], &options), &from_store);
}

fn intents_with_new_example(intents: &[Intent]) -> Vec<Intent> {
    let mut other = intents.to_vec();
    other[1].examples.push(unique("stored"));
    other
}

#[test]
fn a_blob_that_is_not_right_is_trained_over_never_served() {
    let intents = intents("blob");
    let options = Options::default();
    let input = Input::new(&intents, &options);
    let key = input.key();
    let good = cache::encode(&Trained::train(&input), &key);
    let other_intents = intents_with_new_example(&intents);
    let other_input = Input::new(&other_intents, &options);
    let foreign = cache::encode(&Trained::train(&other_input), &other_input.key());

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut format = good.clone();
    format[8] = 99;
    let mut longer = good.clone();
    longer.push(0);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        (
            "text",
            b"not a model at all, just some text that is long enough".to_vec(),
        ),
        ("cut short", good[..good.len() - 7].to_vec()),
        ("one byte longer", longer),
        ("one bit flipped", flipped),
        ("another format", format),
        ("another key's model", foreign),
    ];
    for (what, bytes) in bad {
        assert!(
            cache::decode(&bytes, &key, &input).is_err(),
            "{what} was read as a model"
        );
        // Not in memory (its own intents), so the build asks the store, refuses the blob
        // and trains.
        let mine = intents_with_new_example(&intents);
        let nlu = Nlu::reuse_or_train(&mine, &[], &options, Some(&Answers(bytes)));
        assert_eq!(nlu.origin(), Origin::Trained, "{what}");
        assert_eq!(nlu.label("我想退货"), "售后.退货", "{what}");
    }
    assert!(cache::decode(&good, &key, &input).is_ok());
}

#[test]
fn a_check_reports_exactly_what_a_build_reports() {
    let mut dirs = support::case_dirs(Path::new("tests/data/diagnostics"));
    dirs.push(PathBuf::from("rules"));
    dirs.push(PathBuf::from("tests/data/no-such-dir"));
    for dir in dirs {
        let built = dsl::load_dir(&dir);
        let checked = dsl::check_dir(&dir);
        assert_eq!(
            checked.report.render_all(false),
            built.report.render_all(false),
            "{}",
            dir.display()
        );
        assert_eq!(checked.report.counts(), built.report.counts(), "{}", dir.display());
        assert_eq!(
            checked.summary,
            built.rules.as_ref().map(Summary::of),
            "{}",
            dir.display()
        );
    }
}
