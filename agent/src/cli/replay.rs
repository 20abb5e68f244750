//! `offpath replay`: re-ship offpath records from a file, stdin or a CloudWatch Logs group.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use offpath::errors::Chain;
use offpath::telemetry::Telemetry;

use super::args::ReplayArgs;
use super::{init_logging, load_config, runtime};

/// `offpath replay`: re-ship offpath records from a file, stdin or a CloudWatch Logs group.
pub(crate) fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    use offpath::fallback::destination::DestinationFilter;
    use offpath::fallback::replay::{ReplayOptions, ReplaySource};
    let (config, warnings) = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("offpath replay: configuration error: {}", Chain(e.as_ref()));
            return Ok(ExitCode::from(2));
        }
    };
    init_logging(config.ops.log_level);
    for w in warnings.iter().chain(&config.forward.warnings()) {
        tracing::warn!("{w}");
    }
    if config.forward.api_key.is_none() && config.forward.api_key_secret_arn.is_none() {
        anyhow::bail!(
            "offpath replay needs DD_API_KEY (or api_key in the config file) or \
             DD_API_KEY_SECRET_ARN to ship records"
        );
    }
    let now = offpath::control::unix_now();
    let source = match (&args.from_file, &args.log_group, &config.fallback.log_group) {
        (Some(path), _, _) => ReplaySource::from_file_arg(&path.to_string_lossy()),
        (None, Some(group), _) | (None, None, Some(group)) => ReplaySource::log_group(
            group,
            args.log_stream.as_deref(),
            args.since.as_deref(),
            args.until.as_deref(),
            now * 1000,
        )?,
        (None, None, None) => anyhow::bail!(
            "offpath replay needs --from-file PATH (or - for stdin) or --log-group NAME (or OFFPATH_FALLBACK_LOG_GROUP)"
        ),
    };
    #[cfg(feature = "cloudwatch")]
    let log_group_source = matches!(source, ReplaySource::LogGroup { .. });
    #[cfg(not(feature = "cloudwatch"))]
    let log_group_source = false;
    let mut opts = ReplayOptions::new(source, now);
    opts.dedupe = args.dedupe;
    let telemetry = Arc::new(Telemetry::default());
    let rt = runtime()?;
    let reports = rt.block_on(async {
        let fwd = &config.forward;
        let connected = offpath::auth::connect(
            fwd.api_key.clone(),
            fwd.api_key_secret_arn.clone(),
            fwd.aws_credentials,
            log_group_source,
        )
        .await;
        #[cfg(feature = "cloudwatch")]
        if log_group_source {
            opts.aws = connected.aws;
        }
        let Some(mut key) = connected.api_key else {
            anyhow::bail!("offpath replay needs DD_API_KEY or DD_API_KEY_SECRET_ARN");
        };
        // DD_API_KEY wins; else the secret is read once, before anything is sent.
        if let Some(secret) = key.secret() {
            let read = secret
                .resolve()
                .await
                .context("offpath replay cannot read the API key from DD_API_KEY_SECRET_ARN")?;
            tracing::info!(arn = %secret.arn(), "API key read from DD_API_KEY_SECRET_ARN");
            key = offpath::auth::ApiKeySource::Fixed(read);
        }
        let encoder = offpath::encode::Encoder::new(fwd.zstd_level);
        // One run per destination (dual shipping), each sending only the records of its own.
        let fanout = offpath::forward::Fanout::build(fwd, key, &telemetry, None)?;
        let names: Vec<String> = telemetry
            .destinations()
            .iter()
            .map(|d| d.destination.name())
            .collect();
        let forwarders = fanout.into_forwarders();
        let _stdin_copy = if forwarders.len() > 1 && matches!(opts.source, ReplaySource::Stdin) {
            // Each run reads the records again: keep stdin in a file for them.
            let copy = StdinCopy::take()?;
            opts.source = ReplaySource::File(copy.path.clone());
            Some(copy)
        } else {
            None
        };
        let mut reports = Vec::with_capacity(forwarders.len());
        for (i, mut forwarder) in forwarders.into_iter().enumerate() {
            let mut run = opts.clone();
            run.destinations = DestinationFilter {
                only: (i > 0).then(|| names.get(i).cloned()).flatten(),
                known: names.clone(),
            };
            let report =
                offpath::fallback::replay::replay(&run, &encoder, &mut forwarder, &telemetry)
                    .await?;
            reports.push((names.get(i).cloned().unwrap_or_default(), report));
        }
        Ok(reports)
    })?;
    let mut ok = true;
    for (name, report) in &reports {
        if reports.len() == 1 {
            println!("{report}");
        } else {
            println!("{name}: {report}");
        }
        if report.unknown_destination > 0 {
            eprintln!(
                "offpath replay: {} records name a destination that is not configured; they were not \
                 sent (check DD_ADDITIONAL_ENDPOINTS and DD_DD_URL / DD_SITE)",
                report.unknown_destination
            );
        }
        ok &= report.not_delivered == 0 && report.unknown_destination == 0;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Standard input kept in a file, so that each destination's run can read the records again; removed
/// when dropped.
struct StdinCopy {
    path: std::path::PathBuf,
}

impl StdinCopy {
    fn take() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("offpath-replay-{}.jsonl", std::process::id()));
        let mut file = std::fs::File::create(&path)
            .with_context(|| format!("cannot keep stdin in {}", path.display()))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut file)
            .with_context(|| format!("cannot keep stdin in {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for StdinCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
