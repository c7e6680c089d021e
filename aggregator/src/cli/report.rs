//! `veil-aggregator report`: the post-event report as one self-contained
//! HTML file.

pub use veil_aggregator::report::ReportArgs;

/// Runs `report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    super::with_config(&args.config.clone(), |cfg| async move {
        veil_aggregator::report::run(&cfg, args).await
    })
}
