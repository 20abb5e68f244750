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
    let report = rt.block_on(async {
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
        let mut forwarder =
            offpath::forward::Forwarder::new(fwd, key, Arc::clone(&telemetry), None)?;
        offpath::fallback::replay::replay(&opts, &encoder, &mut forwarder, &telemetry)
            .await
            .map_err(anyhow::Error::from)
    })?;
    println!("{report}");
    Ok(if report.not_delivered == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
