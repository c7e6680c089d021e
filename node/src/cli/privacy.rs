//! `veil-node privacy sample|stream-sample`: releases through the exact
//! production code path, so anyone can test the mechanisms empirically.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// Print N releases of VALUE, one integer per line, through the exact
    /// production code path, so anyone can test the mechanism empirically.
    Sample {
        /// discrete-laplace (needs --epsilon) or discrete-gaussian (needs --rho).
        #[arg(long)]
        mechanism: String,
        /// Pure DP epsilon (discrete-laplace).
        #[arg(long, conflicts_with = "rho")]
        epsilon: Option<f64>,
        /// zCDP rho (discrete-gaussian).
        #[arg(long)]
        rho: Option<f64>,
        /// Sensitivity of the count.
        #[arg(long, default_value_t = 1)]
        sensitivity: u32,
        /// The true value.
        #[arg(long)]
        value: i64,
        /// Number of releases.
        #[arg(long)]
        n: usize,
    },
    /// Print RUNS releases of a whole continual-release stream (one line
    /// each: T comma-separated running totals) through the node's production
    /// code path and calibration, so anyone can test the attendee-day
    /// guarantee empirically.
    StreamSample {
        /// Steps T (windows in the day); FILE must have exactly T lines.
        #[arg(long)]
        steps: u32,
        /// zCDP rho of the stream-day per attendee (joint over a node's zones).
        #[arg(long)]
        rho: f64,
        /// V: zone visits per attendee-day (the node calibrates to 2V events).
        #[arg(long)]
        max_visits: u32,
        /// K: visits to this one zone; only changes the guarantee stated for
        /// this stream alone (2 min(K, V) events), not the noise.
        #[arg(long)]
        max_zone_visits: Option<u32>,
        /// sqrt (square-root factorization, the default) or tree.
        #[arg(long, default_value = "sqrt")]
        mechanism: String,
        /// Independent runs.
        #[arg(long)]
        runs: usize,
        /// T lines: the zone's exact net change at each step (an integer).
        #[arg(long)]
        input: PathBuf,
    },
}

/// Runs a `privacy` subcommand.
pub fn run(command: PrivacyCommand) -> anyhow::Result<()> {
    match command {
        PrivacyCommand::Sample {
            mechanism,
            epsilon,
            rho,
            sensitivity,
            value,
            n,
        } => sample(&mechanism, epsilon, rho, sensitivity, value, n),
        PrivacyCommand::StreamSample {
            steps,
            rho,
            max_visits,
            max_zone_visits,
            mechanism,
            runs,
            input,
        } => stream_sample(
            steps,
            rho,
            max_visits,
            max_zone_visits,
            &mechanism,
            runs,
            &input,
        ),
    }
}

fn sample(
    mechanism: &str,
    epsilon: Option<f64>,
    rho: Option<f64>,
    sensitivity: u32,
    value: i64,
    n: usize,
) -> anyhow::Result<()> {
    use std::io::Write;
    use veil_privacy::sample::{SampleMechanism, sample};
    let m = match (mechanism, epsilon, rho) {
        ("discrete-laplace", Some(e), None) => SampleMechanism::DiscreteLaplace {
            epsilon: veil_privacy::Epsilon::new(e)?,
        },
        ("discrete-gaussian", None, Some(r)) => SampleMechanism::DiscreteGaussian {
            rho: veil_privacy::Rho::new(r)?,
        },
        ("discrete-laplace", _, _) => {
            anyhow::bail!("--mechanism discrete-laplace needs --epsilon (and no --rho)")
        }
        ("discrete-gaussian", _, _) => {
            anyhow::bail!("--mechanism discrete-gaussian needs --rho (and no --epsilon)")
        }
        (other, _, _) => anyhow::bail!(
            "unknown --mechanism {other:?}: use discrete-laplace or discrete-gaussian"
        ),
    };
    let out = sample(m, sensitivity, value, n)?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for v in out {
        writeln!(w, "{v}")?;
    }
    w.flush()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn stream_sample(
    steps: u32,
    rho: f64,
    max_visits: u32,
    max_zone_visits: Option<u32>,
    mechanism: &str,
    runs: usize,
    input: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    use veil_privacy::mechanisms::{Contribution, StreamMechanism, StreamParams};
    let mech = match mechanism {
        "sqrt" => StreamMechanism::SqrtFactorization,
        "tree" => StreamMechanism::Tree,
        other => anyhow::bail!("unknown --mechanism {other:?}: use sqrt or tree"),
    };
    if !(1..=1000).contains(&max_visits) {
        anyhow::bail!("--max-visits must be in 1..=1000");
    }
    if let Some(k) = max_zone_visits
        && !(1..=max_visits).contains(&k)
    {
        anyhow::bail!("--max-zone-visits must be in 1..=--max-visits");
    }
    if runs == 0 || runs > 1_000_000 {
        anyhow::bail!("--runs must be in 1..=1000000");
    }
    let text = std::fs::read_to_string(input)
        .map_err(|e| anyhow::anyhow!("reading --input {}: {e}", input.display()))?;
    let mut increments = Vec::with_capacity(steps as usize);
    for (i, line) in text.lines().enumerate() {
        let v: i64 = line.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "--input {} line {}: expected an integer (the zone's net change at that step)",
                input.display(),
                i + 1
            )
        })?;
        increments.push(v);
    }
    if increments.len() != steps as usize {
        anyhow::bail!(
            "--input {} has {} lines, --steps says {steps}",
            input.display(),
            increments.len()
        );
    }
    let rho = veil_privacy::Rho::new(rho)?;
    let params = StreamParams::new(
        mech,
        steps,
        Contribution::Alternating {
            events: max_visits * 2,
        },
        rho,
    )?;
    let cal = params.calibrate()?;
    let k = max_zone_visits.unwrap_or(max_visits).min(max_visits);
    eprintln!(
        "{} stream, T = {steps}, calibrated as a node calibrates presence under V = {max_visits}: E = {} events, noise sigma {:.4} (encoded x{}), std of the running total up to {:.3}; the stream-day costs rho {} per attendee jointly over a node's zones, this zone's stream alone (at most {} events, K = {k}) rho {:.6}",
        mech.as_str(),
        2 * max_visits,
        cal.sigma(),
        cal.gamma(),
        cal.max_std(),
        rho.get(),
        2 * k,
        rho.get() * f64::from(k) / f64::from(max_visits),
    );
    let out = veil_node::release::stream_sample(mech, rho, max_visits, &increments, runs)?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for run in out {
        let line: Vec<String> = run.iter().map(|v| v.to_string()).collect();
        writeln!(w, "{}", line.join(","))?;
    }
    w.flush()?;
    Ok(())
}
