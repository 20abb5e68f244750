//! Mapper vectors from the Datadog Agent's documented examples and its mapper's test scenarios, the
//! blocklist's rules, and the configuration errors that stop offpath.

use super::*;
use crate::config::{Config, EnvOverFile, YamlFile};

fn config(yaml: &str, env: &'static [(&'static str, &'static str)]) -> Result<Config, String> {
    let (file, _) = YamlFile::parse(yaml, "offpath.yaml").map_err(|e| e.to_string())?;
    let env = move |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    };
    Config::load(&EnvOverFile::new(env, file)).map_err(|e| e.to_string())
}

fn filter(yaml: &str, env: &'static [(&'static str, &'static str)]) -> Box<Filter> {
    let c = config(yaml, env).unwrap();
    Filter::new(&c.aggregate.filter, &c.aggregate.namespace).unwrap()
}

/// What `name` becomes: `None` when dropped; the name and the extra tags, sorted.
fn apply(f: &mut Filter, name: &str, namespace: &str) -> Option<(String, Vec<String>)> {
    let ns = namespace.to_owned();
    let namespaced = move |n: &str| !ns.is_empty() && !n.starts_with("datadog.agent");
    match f.check(name, namespaced) {
        Verdict::Drop => None,
        Verdict::Keep => Some((name.to_owned(), Vec::new())),
        Verdict::Mapped(slot) => {
            let (n, tags) = f.mapped(slot).unwrap();
            let mut tags = tags.to_vec();
            tags.sort();
            Some((n.to_owned(), tags))
        }
    }
}

#[cfg(feature = "mapper")]
fn kept(name: &str, tags: &[&str]) -> Option<(String, Vec<String>)> {
    let mut tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    tags.sort();
    Some((name.to_owned(), tags))
}

#[test]
fn nothing_configured_means_no_filter() {
    let c = config("", &[]).unwrap();
    assert!(!c.aggregate.filter.is_active());
    assert!(Filter::new(&c.aggregate.filter, "").is_none());
}

#[cfg(feature = "mapper")]
mod mapper {
    use super::*;

    /// (profiles YAML, [(name received, what it becomes)]).
    type Scenario = (
        &'static str,
        &'static [(
            &'static str,
            Option<(&'static str, &'static [&'static str])>,
        )],
    );

    const SCENARIOS: &[Scenario] = &[
        // The documentation's first example: two wildcards become two tags.
        (
            "dogstatsd_mapper_profiles:
  - name: airflow
    prefix: 'airflow.'
    mappings:
      - match: 'airflow.job.duration.*.*'
        name: 'airflow.job.duration'
        tags:
          job_type: '$1'
          job_name: '$2'
",
            &[
                (
                    "airflow.job.duration.my_job_type.my_job_name",
                    Some((
                        "airflow.job.duration",
                        &["job_type:my_job_type", "job_name:my_job_name"],
                    )),
                ),
                // Under the prefix, matched by no mapping: left as it is.
                ("airflow.job.size.x.y", Some(("airflow.job.size.x.y", &[]))),
                (
                    "airflow.job.duration.only_one",
                    Some(("airflow.job.duration.only_one", &[])),
                ),
            ],
        ),
        // Several mappings, not or partly mapped tags, ${n} with text after it, `$n` in the name.
        (
            "dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: 'test.job.duration.*.*'
        name: 'test.job.duration'
        tags:
          job_type: '$1'
      - match: 'test.job.size.*.*'
        name: 'test.job.size'
        tags:
          foo: '${1}_x'
          bar: '${2}_y'
      - match: 'test.task.duration.*.*'
        name: 'test.task.duration'
      - match: 'test.hello.*.*'
        name: 'test.hello.$2.$1'
      - match: 'test.*_start'
        name: 'test.start'
        tags:
          job: '$1'
      - match: 'test.my-worker.stop.*'
        name: 'test.worker.stop'
      - match: 'test.abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234567.*'
        name: 'test.alphabet'
",
            &[
                (
                    "test.job.duration.my_job_type.my_job_name",
                    Some(("test.job.duration", &["job_type:my_job_type"])),
                ),
                (
                    "test.job.size.my_job_type.my_job_name",
                    Some(("test.job.size", &["foo:my_job_type_x", "bar:my_job_name_y"])),
                ),
                (
                    "test.job.size.not_match",
                    Some(("test.job.size.not_match", &[])),
                ),
                ("test.task.duration.a.b", Some(("test.task.duration", &[]))),
                (
                    "test.hello.my_job_type.my_job_name",
                    Some(("test.hello.my_job_name.my_job_type", &[])),
                ),
                ("test.my_job_start", Some(("test.start", &["job:my_job"]))),
                (
                    "test.my-worker.stop.worker-name",
                    Some(("test.worker.stop", &[])),
                ),
                (
                    "test.abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-01234567.123",
                    Some(("test.alphabet", &[])),
                ),
            ],
        ),
        // Regex matches: anchored, escaped or single-quoted, named groups.
        (
            r#"dogstatsd_mapper_profiles:
  - name: test
    prefix: 'test.'
    mappings:
      - match: "test\\.job\\.duration\\.(.*)"
        match_type: regex
        name: "test.job.duration"
        tags:
          job_name: "$1"
      - match: 'test\.task\.duration\.(.*)'
        match_type: regex
        name: "test.task.duration"
        tags:
          task_name: "$1"
      - match: 'test\.job\.([a-z][0-9]-\w+)\.(.*)'
        match_type: regex
        name: "test.job"
        tags:
          job_type: "$1"
          job_name: "$2"
      - match: 'test\.size\.(?P<job_type>[a-z_]+)\.(?P<job_name>[a-z_]+)'
        match_type: regex
        name: 'test.size'
        tags:
          job_type: '${job_type}'
          job_name: '${job_name}'
"#,
            &[
                (
                    "test.job.duration.my.funky.job$name-abc/123",
                    Some(("test.job.duration", &["job_name:my.funky.job$name-abc/123"])),
                ),
                (
                    "test.task.duration.MY_task_name",
                    Some(("test.task.duration", &["task_name:MY_task_name"])),
                ),
                (
                    "test.job.a5-foo.bar",
                    Some(("test.job", &["job_type:a5-foo", "job_name:bar"])),
                ),
                (
                    "test.job.foo.bar-not-match",
                    Some(("test.job.foo.bar-not-match", &[])),
                ),
                (
                    "test.size.my_type.my_name",
                    Some(("test.size", &["job_type:my_type", "job_name:my_name"])),
                ),
                (
                    "xtest.task.duration.a",
                    Some(("xtest.task.duration.a", &[])),
                ),
            ],
        ),
        // The first profile whose prefix matches decides, even when a later one would map the name.
        (
            "dogstatsd_mapper_profiles:
  - name: test
    prefix: 'foo.'
    mappings:
      - match: 'foo.duration.*'
        name: 'foo.duration'
        tags:
          name: '$1'
      - match: 'foo.*.duration.*'
        name: 'foo.bar1.duration'
        tags:
          bar: '$1'
          foo: '$2'
  - name: test
    prefix: 'bar.'
    mappings:
      - match: 'bar.count.*'
        name: 'bar.count'
        tags:
          name: '$1'
      - match: 'foo.duration2.*'
        name: 'foo.duration2'
  - name: test
    prefix: 'foo.bar.'
    mappings:
      - match: 'foo.bar.duration.*'
        name: 'foo.bar2.duration'
",
            &[
                (
                    "foo.duration.foo_name1",
                    Some(("foo.duration", &["name:foo_name1"])),
                ),
                (
                    "foo.duration2.foo_name1",
                    Some(("foo.duration2.foo_name1", &[])),
                ),
                (
                    "bar.count.bar_name1",
                    Some(("bar.count", &["name:bar_name1"])),
                ),
                ("z.not.mapped", Some(("z.not.mapped", &[]))),
                (
                    "foo.bar.duration.foo_name",
                    Some(("foo.bar1.duration", &["bar:bar", "foo:foo_name"])),
                ),
            ],
        ),
        // Prefix `*` takes every name; the first of two such profiles wins.
        (
            "dogstatsd_mapper_profiles:
  - name: one
    prefix: '*'
    mappings:
      - match: 'foo.duration.*'
        name: 'foo.duration'
        tags:
          name1: '$1'
  - name: two
    prefix: '*'
    mappings:
      - match: 'foo.duration.*'
        name: 'foo.duration'
        tags:
          name2: '$1'
",
            &[(
                "foo.duration.foo_name",
                Some(("foo.duration", &["name1:foo_name"])),
            )],
        ),
    ];

    #[test]
    fn the_agents_examples_map_as_in_the_agent() {
        for (yaml, cases) in SCENARIOS {
            let mut f = filter(yaml, &[]);
            // Twice: the second pass is answered from the cache.
            for pass in 0..2 {
                for (name, want) in *cases {
                    let want = want.and_then(|(n, t)| kept(n, t));
                    assert_eq!(
                        apply(&mut f, name, ""),
                        want,
                        "{name} (pass {pass}) in\n{yaml}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_environment_gives_the_profiles_as_json() {
        let mut f = filter(
            "",
            &[(
                "DD_DOGSTATSD_MAPPER_PROFILES",
                r#"[{"name":"airflow","prefix":"airflow.","mappings":[{"match":"airflow.job.duration.*.*","name":"airflow.job.duration","tags":{"job_type":"$1","job_name":"$2"}}]}]"#,
            )],
        );
        assert_eq!(
            apply(&mut f, "airflow.job.duration.t.n", ""),
            kept("airflow.job.duration", &["job_type:t", "job_name:n"])
        );
    }

    #[test]
    fn the_cache_is_bounded_and_answers_the_same_after_it_is_emptied() {
        let yaml = "dogstatsd_mapper_cache_size: 2
dogstatsd_mapper_profiles:
  - name: p
    prefix: 'a.'
    mappings:
      - match: 'a.*'
        name: 'a'
        tags:
          k: '$1'
";
        let mut f = filter(yaml, &[]);
        for round in 0..3 {
            for i in 0..5 {
                let name = format!("a.{i}");
                let want = kept("a", &[&format!("k:{i}")]);
                assert_eq!(apply(&mut f, &name, ""), want, "round {round}");
            }
        }
        let m = f.mapper.as_ref().unwrap();
        assert!(m.cache_len() <= 2, "{}", m.cache_len());
    }

    #[test]
    fn mapping_comes_before_the_namespace_and_the_blocklist() {
        let yaml = "statsd_metric_namespace: app
statsd_metric_blocklist: [app.job.duration]
dogstatsd_mapper_profiles:
  - name: p
    prefix: 'job.'
    mappings:
      - match: 'job.*.duration'
        name: 'job.duration'
        tags:
          job: '$1'
";
        let mut f = filter(yaml, &[]);
        // Mapped to job.duration, namespaced to app.job.duration: blocked.
        assert_eq!(apply(&mut f, "job.x.duration", "app."), None);
        // Not mapped: job.y.size is not on the list.
        assert_eq!(apply(&mut f, "job.y.size", "app."), kept("job.y.size", &[]));
    }

    #[test]
    fn malformed_profiles_stop_offpath_naming_the_key() {
        let cases: &[(&str, &str)] = &[
            (
                "dogstatsd_mapper_profiles:\n  - prefix: 'test.'\n    mappings: []\n",
                "missing profile name",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    mappings: []\n",
                "missing prefix for profile `test`",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - match: 't.*'\n        name: ''\n",
                "mapping 0: name is required",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - name: 't'\n",
                "mapping 0: match is required",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - match: 't.[]duration.*'\n        name: t\n",
                "invalid wildcard match",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - match: '^t.x'\n        name: t\n",
                "invalid wildcard match",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - match: 't.**'\n        name: t\n",
                "consecutive `*`",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - match: 't.x'\n        match_type: invalid\n        name: t\n",
                "invalid match type `invalid`",
            ),
            (
                "dogstatsd_mapper_profiles:\n  - name: test\n    prefix: 't.'\n    mappings:\n      - match: 't\\.(x'\n        match_type: regex\n        name: t\n",
                "invalid regex",
            ),
            (
                "dogstatsd_mapper_profiles: 'not json'\n",
                "a list of profiles",
            ),
            (
                "dogstatsd_mapper_profiles:\n  name: test\n",
                "a list of profiles",
            ),
        ];
        for (yaml, want) in cases {
            let e = config(yaml, &[]).unwrap_err();
            assert!(e.contains("DD_DOGSTATSD_MAPPER_PROFILES"), "{e}");
            assert!(e.contains(want), "{want:?} not in {e}");
        }
        let e = config("", &[("DD_DOGSTATSD_MAPPER_PROFILES", "[{")]).unwrap_err();
        assert!(e.contains("DD_DOGSTATSD_MAPPER_PROFILES"), "{e}");
        let e = config("dogstatsd_mapper_cache_size: 0\n", &[]).unwrap_err();
        assert!(e.contains("DD_DOGSTATSD_MAPPER_CACHE_SIZE"), "{e}");
    }
}

#[cfg(not(feature = "mapper"))]
#[test]
fn without_the_mapper_feature_profiles_are_a_start_up_error_naming_the_key() {
    let e = config(
        "dogstatsd_mapper_profiles:\n  - name: p\n    prefix: 'a.'\n    mappings: []\n",
        &[],
    )
    .unwrap_err();
    assert!(e.contains("DD_DOGSTATSD_MAPPER_PROFILES"), "{e}");
    assert!(e.contains("mapper"), "{e}");
    assert!(config("", &[("DD_DOGSTATSD_MAPPER_PROFILES", "[]")]).is_ok());
}

#[test]
fn the_blocklist_matches_whole_names_or_prefixes() {
    let names = ["foo", "foo.bar", "foobar", "bar.baz", "ba", "qux"];
    type Env = &'static [(&'static str, &'static str)];
    let cases: &[(&str, Env, &[bool])] = &[
        (
            "statsd_metric_blocklist: [foo, bar.baz]\n",
            &[],
            &[true, false, false, true, false, false],
        ),
        (
            "statsd_metric_blocklist: [foo, ba]\nstatsd_metric_blocklist_match_prefix: true\n",
            &[],
            &[true, true, true, true, true, false],
        ),
        // The environment: a space-separated list.
        (
            "",
            &[("DD_STATSD_METRIC_BLOCKLIST", "foo bar.baz")],
            &[true, false, false, true, false, false],
        ),
        // metric_filterlist wins over statsd_metric_blocklist, with its own match_prefix.
        (
            "statsd_metric_blocklist: [qux]\nmetric_filterlist: [foo.]\nmetric_filterlist_match_prefix: true\n",
            &[],
            &[false, true, false, false, false, false],
        ),
        (
            "metric_filterlist: []\nstatsd_metric_blocklist: [qux]\n",
            &[],
            &[false, false, false, false, false, true],
        ),
    ];
    for (yaml, env, want) in cases {
        let mut f = filter(yaml, env);
        for (name, blocked) in names.iter().zip(*want) {
            assert_eq!(
                apply(&mut f, name, "").is_none(),
                *blocked,
                "{name} with {yaml}{env:?}"
            );
        }
    }
}

#[test]
fn the_blocklist_sees_the_name_with_the_namespace() {
    let ns = "app.";
    for (entries, prefix, name, blocked) in [
        (&["app.foo"][..], false, "foo", true),
        (&["foo"], false, "foo", false),
        (&["app.fo"], true, "foo", true),
        (&["app.fo"], false, "foo", false),
        (&["ap"], true, "anything", true),
        (&["app."], true, "x", true),
        // Exempt from the namespace: tested as written.
        (&["app.datadog.agent.x"], false, "datadog.agent.x", false),
        (&["datadog.agent.x"], false, "datadog.agent.x", true),
    ] {
        let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
        let cfg = FilterConfig {
            blocklist: entries.clone(),
            match_prefix: prefix,
            ..FilterConfig::default()
        };
        let mut f = Filter::new(&cfg, ns).unwrap();
        assert_eq!(
            apply(&mut f, name, ns).is_none(),
            blocked,
            "{name} with {entries:?} {prefix}"
        );
    }
}

#[test]
fn prefix_entries_covered_by_shorter_ones_still_block() {
    let entries: Vec<String> = ["a.b", "a.b.c", "a.c", "b"]
        .iter()
        .map(|e| (*e).to_owned())
        .collect();
    let b = Blocklist::new(&entries, true, "");
    for (name, blocked) in [
        ("a.b.c.d", true),
        ("a.bz", true),
        ("a.a", false),
        ("a.c", true),
        ("bb", true),
        ("a", false),
    ] {
        assert_eq!(b.blocks(name, false), blocked, "{name}");
    }
}

#[cfg(feature = "mapper")]
#[test]
fn the_aggregator_ships_mapped_names_and_counts_filtered_points() {
    use crate::aggregate::Aggregator;
    use crate::telemetry::{PointDrop, Telemetry};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    let c = config(
        "statsd_metric_namespace: app
metric_filterlist: [app.noisy]
dogstatsd_mapper_profiles:
  - name: jobs
    prefix: 'jobs.'
    mappings:
      - match: 'jobs.*.duration'
        name: 'jobs.duration'
        tags:
          job: '$1'
          host: 'worker-$1'
      - match: 'jobs.*.noise'
        name: 'noisy'
",
        &[],
    )
    .unwrap();
    let telemetry = Arc::new(Telemetry::default());
    let mut agg = Aggregator::new(&c.aggregate, Arc::clone(&telemetry));
    agg.insert_packet(
        b"jobs.etl.duration:5|g|#team:a\njobs.etl.noise:1:2:3|d\nnoisy:1|c\nplain:1|c",
        1_000,
    );
    let flush = agg.flush(2_000, true);
    let mut shipped: Vec<(String, Vec<String>, String)> = flush
        .series
        .iter()
        .map(|s| (s.name.clone(), s.tags.clone(), s.host.clone()))
        .collect();
    shipped.sort();
    assert_eq!(
        shipped,
        [
            (
                "app.jobs.duration".to_owned(),
                vec!["job:etl".to_owned(), "team:a".to_owned()],
                "worker-etl".to_owned()
            ),
            ("app.plain".to_owned(), vec![], String::new()),
        ]
    );
    assert!(flush.sketches.is_empty(), "{:?}", flush.sketches);
    let p = &telemetry.points;
    assert_eq!(p.received.load(Relaxed), 6);
    assert_eq!(p.dropped[PointDrop::Filtered as usize].load(Relaxed), 4);
    assert_eq!(p.dropped_total(), 4);
}
