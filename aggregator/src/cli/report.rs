//! `veil-aggregator report`: the post-event report as one self-contained
//! HTML file.

/// `veil-aggregator report` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Aggregator config file.
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Venue.
    #[arg(long)]
    pub venue: String,
    /// Event day, YYYY-MM-DD (default: today, UTC, as `budget show`).
    #[arg(long)]
    pub day: Option<String>,
    /// Output file.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// `html` (default). `pdf` is not offered: see the README.
    #[arg(long, default_value = "html")]
    pub format: String,
}

/// Runs `report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    super::with_config(&args.config.clone(), |cfg| async move {
        let sources = cfg.report_sources().map_err(anyhow::Error::msg)?;
        let day = args
            .day
            .clone()
            .unwrap_or_else(|| veil_aggregator::ledger::day_of(veil_common::now_ms()));
        veil_aggregator::report::write(sources, &args.venue, &day, &args.out, &args.format).await
    })
}
