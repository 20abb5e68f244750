use super::*;
use crate::enhanced::proc::{Cpu, Net};

const T: i64 = 1_700_000_000;

fn names(points: &[OwnPoint]) -> Vec<&str> {
    points
        .iter()
        .map(|p| p.name.strip_prefix(PREFIX).unwrap_or(&p.name))
        .collect()
}

fn value(points: &[OwnPoint], name: &str) -> f64 {
    let full = format!("{PREFIX}{name}");
    let found: Vec<_> = points.iter().filter(|p| p.name == full).collect();
    assert_eq!(found.len(), 1, "{name} in {points:#?}");
    found[0].value
}

fn done(id: &str, status: &str) -> RuntimeDone {
    RuntimeDone {
        request_id: id.into(),
        status: status.into(),
        error_type: None,
        duration_ms: Some(40.5),
        produced_bytes: Some(12.0),
        time: Some(T + 1),
    }
}

fn report(id: &str) -> Report {
    Report {
        request_id: id.into(),
        status: "success".into(),
        duration_ms: Some(52.5),
        billed_duration_ms: Some(53.0),
        memory_size_mb: Some(1024.0),
        max_memory_used_mb: Some(80.0),
        init_duration_ms: None,
        time: Some(T + 2),
    }
}

fn invoke(e: &mut Enhanced, id: &str, since_start: Duration) -> Vec<OwnPoint> {
    let mut out = Vec::new();
    e.on_invoke(
        id,
        T,
        since_start,
        Counters::default(),
        Usage::default(),
        &mut out,
    );
    out
}

fn runtime_done(e: &mut Enhanced, rd: &RuntimeDone) -> Vec<OwnPoint> {
    let mut out = Vec::new();
    e.on_runtime_done(
        rd,
        T + 5,
        &Counters::default(),
        Usage::default(),
        &Limits::default(),
        &mut out,
    );
    out
}

#[test]
fn an_invocation_yields_datadogs_metrics_in_datadogs_units() {
    let mut e = Enhanced::new(false, "x86_64");
    let out = invoke(&mut e, "r1", Duration::from_millis(300));
    assert_eq!(names(&out), ["invocations"]);
    assert_eq!(out[0].value, 1.0);
    assert_eq!(out[0].tags, "cold_start:true");
    assert_eq!(out[0].ts, T);

    let out = runtime_done(&mut e, &done("r1", "success"));
    assert_eq!(names(&out), ["runtime_duration", "produced_bytes"]);
    assert_eq!(value(&out, "runtime_duration"), 40.5, "milliseconds");
    assert_eq!(value(&out, "produced_bytes"), 12.0);
    assert!(out.iter().all(|p| p.ts == T + 1), "the event's time");

    let mut out = Vec::new();
    e.on_report(&report("r1"), T + 9, &mut out);
    assert_eq!(
        names(&out),
        [
            "duration",
            "post_runtime_duration",
            "billed_duration",
            "max_memory_used",
            "memorysize",
            "estimated_cost"
        ]
    );
    assert_eq!(value(&out, "duration"), 0.0525, "seconds");
    assert_eq!(value(&out, "billed_duration"), 0.053, "seconds");
    assert_eq!(value(&out, "post_runtime_duration"), 12.0, "milliseconds");
    assert_eq!(value(&out, "max_memory_used"), 80.0, "MB");
    assert_eq!(value(&out, "memorysize"), 1024.0, "MB");
    // 0.053 s × 1 GB × 0.0000166667 + 0.0000002
    assert_eq!(value(&out, "estimated_cost"), 0.000_001_083_335);
    assert!(
        out.iter()
            .all(|p| p.tags == "cold_start:true" && p.ts == T + 2)
    );

    let out = invoke(&mut e, "r2", Duration::from_secs(60));
    assert_eq!(out[0].tags, "cold_start:false", "warm after the first");
}

#[test]
fn arm64_is_priced_lower_and_an_unknown_architecture_has_no_cost() {
    assert_eq!(
        estimated_cost(1000.0, 1024.0, price_per_gb_second("arm64").unwrap()),
        0.000_013_533_4
    );
    assert_eq!(
        estimated_cost(0.0, 128.0, price_per_gb_second("x86_64").unwrap()),
        0.000_000_2
    );
    assert_eq!(price_per_gb_second("riscv64"), None);
    let mut e = Enhanced::new(false, "riscv64");
    invoke(&mut e, "r1", Duration::ZERO);
    let mut out = Vec::new();
    e.on_report(&report("r1"), T, &mut out);
    assert!(!names(&out).contains(&"estimated_cost"));
}

#[test]
fn a_first_invocation_long_after_the_start_is_a_proactive_initialization() {
    let mut e = Enhanced::new(false, "x86_64");
    let out = invoke(&mut e, "r1", Duration::from_secs(11));
    assert_eq!(
        out[0].tags,
        "cold_start:false,proactive_initialization:true"
    );
    let out = invoke(&mut e, "r2", Duration::from_secs(12));
    assert_eq!(out[0].tags, "cold_start:false");
}

#[test]
fn errors_and_out_of_memory_count_once_per_request_id() {
    let mut e = Enhanced::new(false, "x86_64");
    invoke(&mut e, "r1", Duration::ZERO);
    let mut out = Vec::new();
    e.on_invocation_error(T, &mut out);
    assert_eq!(names(&out), ["errors"]);
    let mut rd = done("r1", "error");
    rd.error_type = Some("Runtime.OutOfMemory".into());
    let out = runtime_done(&mut e, &rd);
    assert_eq!(
        names(&out),
        ["runtime_duration", "produced_bytes", "out_of_memory"]
    );
    let mut r = report("r1");
    r.max_memory_used_mb = r.memory_size_mb;
    let mut out = Vec::new();
    e.on_report(&r, T, &mut out);
    assert!(!names(&out).contains(&"out_of_memory"), "already counted");

    // A timeout is an error and a timeout; a full memory in the report alone is out of memory.
    invoke(&mut e, "r2", Duration::ZERO);
    let out = runtime_done(&mut e, &done("r2", "timeout"));
    assert_eq!(
        names(&out),
        ["runtime_duration", "produced_bytes", "errors", "timeouts"]
    );
    let mut out = Vec::new();
    e.on_invocation_error(T, &mut out);
    assert!(out.is_empty(), "r2 is already counted as an error");
    let mut out = Vec::new();
    e.on_report(&r_with_full_memory("r2"), T, &mut out);
    assert_eq!(value(&out, "out_of_memory"), 1.0);

    // A failure without an error type, then a success.
    invoke(&mut e, "r3", Duration::ZERO);
    assert_eq!(
        names(&runtime_done(&mut e, &done("r3", "failure")))[2],
        "errors"
    );
    invoke(&mut e, "r4", Duration::ZERO);
    assert_eq!(runtime_done(&mut e, &done("r4", "success")).len(), 2);
}

fn r_with_full_memory(id: &str) -> Report {
    let mut r = report(id);
    r.max_memory_used_mb = Some(1024.0);
    r
}

#[test]
fn init_duration_comes_once_from_the_init_report_else_from_the_first_report() {
    let mut e = Enhanced::new(false, "x86_64");
    let mut out = Vec::new();
    let ir = InitReport {
        initialization_type: "provisioned-concurrency".into(),
        phase: "init".into(),
        duration_ms: Some(250.0),
        time: Some(T - 5),
    };
    // Before the first invocation: held until its tags are known.
    e.on_init_report(&ir, T, &mut out);
    assert!(out.is_empty());
    let out = invoke(&mut e, "r1", Duration::from_millis(10));
    assert_eq!(names(&out), ["init_duration", "invocations"]);
    assert_eq!(out[0].value, 0.25, "seconds");
    assert_eq!(
        out[0].tags,
        "cold_start:true,init_type:provisioned-concurrency"
    );
    assert_eq!(out[0].ts, T - 5);
    let mut r = report("r1");
    r.init_duration_ms = Some(250.0);
    let mut out = Vec::new();
    e.on_report(&r, T, &mut out);
    assert!(!names(&out).contains(&"init_duration"), "once");

    // Without an init report, the first report's initDurationMs, as on-demand.
    let mut e = Enhanced::new(false, "x86_64");
    invoke(&mut e, "r1", Duration::ZERO);
    let mut out = Vec::new();
    e.on_report(&r, T, &mut out);
    let init: Vec<_> = out
        .iter()
        .filter(|p| p.name.ends_with("init_duration"))
        .collect();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].tags, "cold_start:true,init_type:on-demand");
}

#[test]
fn shutdown_counts_and_an_unused_init_is_said() {
    let mut e = Enhanced::new(false, "x86_64");
    let mut out = Vec::new();
    e.on_shutdown(T, &mut out);
    assert_eq!(names(&out), ["shutdowns", "unused_init"]);
    let mut e = Enhanced::new(false, "x86_64");
    invoke(&mut e, "r1", Duration::ZERO);
    invoke(&mut e, "r2", Duration::ZERO);
    let mut out = Vec::new();
    e.on_shutdown(T, &mut out);
    assert_eq!(names(&out), ["shutdowns"]);
    assert_eq!(out[0].tags, "cold_start:false");
}

#[test]
fn a_runtime_done_or_report_without_its_invoke_is_still_counted_as_warm() {
    let mut e = Enhanced::new(false, "x86_64");
    let out = runtime_done(&mut e, &done("ghost", "success"));
    assert_eq!(out[0].tags, "cold_start:false");
    for i in 0..100 {
        let mut out = Vec::new();
        e.on_report(&report(&format!("lost-{i}")), T, &mut out);
        runtime_done(&mut e, &done(&format!("never-reported-{i}"), "success"));
    }
    assert!(e.invocations.len() <= REMEMBERED, "bounded");
}

#[test]
fn resource_metrics_are_the_differences_between_the_invoke_and_runtime_done_snapshots() {
    let mut e = Enhanced::new(true, "arm64");
    assert!(e.wants_snapshots());
    let start = Counters {
        cpu: Some(Cpu {
            user_ms: 1000.0,
            system_ms: 500.0,
            idle_ms: 10_000.0,
            core_idle_ms: vec![5000.0, 5000.0],
        }),
        uptime_ms: Some(100_000.0),
        net: Some(Net {
            rx_bytes: 1000.0,
            tx_bytes: 2000.0,
        }),
    };
    let end = Counters {
        cpu: Some(Cpu {
            user_ms: 1060.0,
            system_ms: 520.0,
            idle_ms: 10_120.0,
            core_idle_ms: vec![5020.0, 5100.0],
        }),
        uptime_ms: Some(100_100.0),
        net: Some(Net {
            rx_bytes: 1500.0,
            tx_bytes: 2250.0,
        }),
    };
    let mut out = Vec::new();
    let at_invoke = Usage {
        tmp_used: Some(4096.0),
        fd_use: Some(20.0),
        threads_use: Some(9.0),
    };
    e.on_invoke("r1", T, Duration::ZERO, start, at_invoke, &mut out);
    let at_done = Usage {
        tmp_used: Some(1024.0),
        fd_use: Some(25.0),
        threads_use: Some(7.0),
    };
    let limits = Limits {
        tmp_max: Some(10_240.0),
        fd_max: 1024.0,
        threads_max: 1024.0,
    };
    let mut out = Vec::new();
    e.on_runtime_done(
        &done("r1", "success"),
        T + 5,
        &end,
        at_done,
        &limits,
        &mut out,
    );
    let v = |n| value(&out, n);
    assert_eq!(v("cpu_user_time"), 60.0);
    assert_eq!(v("cpu_system_time"), 20.0);
    assert_eq!(v("cpu_total_time"), 80.0);
    // 2 cores × 100 ms, 120 ms idle: 40 % busy, 0.8 cores; core 0 idle 20 ms (80 %), core 1 idle 100 ms (0 %).
    assert!((v("cpu_total_utilization_pct") - 40.0).abs() < 1e-9);
    assert!((v("cpu_total_utilization") - 0.8).abs() < 1e-9);
    assert_eq!(v("num_cores"), 2.0);
    assert!((v("cpu_max_utilization") - 80.0).abs() < 1e-9);
    assert_eq!(v("cpu_min_utilization"), 0.0);
    assert_eq!(v("rx_bytes"), 500.0);
    assert_eq!(v("tx_bytes"), 250.0);
    assert_eq!(v("total_network"), 750.0);
    assert_eq!(v("tmp_used"), 4096.0, "the larger snapshot");
    assert_eq!(v("tmp_max"), 10_240.0);
    assert_eq!(v("tmp_free"), 6144.0);
    assert_eq!(v("fd_use"), 25.0);
    assert_eq!(v("fd_max"), 1024.0);
    assert_eq!(v("threads_use"), 9.0);
    assert_eq!(v("threads_max"), 1024.0);
    let resource = out
        .iter()
        .find(|p| p.name.ends_with("cpu_user_time"))
        .unwrap();
    assert_eq!(resource.ts, T + 5, "measured when processed");
}

#[test]
fn without_proc_metrics_or_snapshots_no_resource_metric_is_made_up() {
    let mut e = Enhanced::new(false, "x86_64");
    invoke(&mut e, "r1", Duration::ZERO);
    let out = runtime_done(&mut e, &done("r1", "success"));
    assert_eq!(names(&out), ["runtime_duration", "produced_bytes"]);

    // Proc metrics on, but nothing could be read: only the limits' defaults.
    let mut e = Enhanced::new(true, "x86_64");
    invoke(&mut e, "r1", Duration::ZERO);
    let out = runtime_done(&mut e, &done("r1", "success"));
    assert_eq!(
        names(&out),
        [
            "runtime_duration",
            "produced_bytes",
            "fd_max",
            "threads_max"
        ]
    );
}
