//! The demo's organizer surface: dashboard and metrics config,
//! a dashboard token, and `--serve`.

use std::{fmt::Write as _, path::Path, sync::Arc};

use veil_node::simulate::{Simulation, ZoneRole};

/// The `[dashboard]`, `[metrics]`, `[report]` and `[[alerts.rules]]` part
/// of the demo's aggregator.toml: a crowd-density rule per camera zone at
/// 90% of its capacity (the report's occupancy limit too).
pub fn config_toml(sim: &Simulation, dash_port: u16, metrics_port: u16) -> String {
    let mut s = format!(
        "[dashboard]\nlisten = \"127.0.0.1:{dash_port}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [report]\nsound_limit_db = 100.0\n\n[report.occupancy_limits]\n"
    );
    let zones: Vec<_> = sim
        .zones()
        .iter()
        .filter(|z| z.role != ZoneRole::Gate)
        .collect();
    for z in &zones {
        let _ = writeln!(s, "{} = {:.0}", z.name, f64::from(z.capacity) * 0.9);
    }
    for z in &zones {
        let _ = write!(
            s,
            "\n[[alerts.rules]]\nname = \"density-{name}\"\nseverity = \"critical\"\nzones = [\"{name}\"]\n\
             metric = \"occupancy\"\nabove = {limit:.0}\n\
             runbook = \"Crowd density in {name} is above 90% of capacity: redirect foot traffic to the \
             neighbouring zones and hold entry to {name} until it drops.\"\n",
            name = z.name,
            limit = f64::from(z.capacity) * 0.9
        );
    }
    s
}

/// Issues a 12-hour dashboard token for `venue`.
pub async fn issue_token(
    state: &Arc<veil_aggregator::state::State>,
    venue: &str,
) -> anyhow::Result<String> {
    let t = veil_aggregator::dashboard::tokens::issue(
        state.storage.unaudited_tables(),
        venue,
        "veil demo",
        std::time::Duration::from_secs(12 * 3600),
        veil_common::now_ms(),
    )
    .await?;
    Ok(t.token)
}

/// `--serve`: serves the demo's aggregator again until Ctrl-C.
pub fn serve(rt: &tokio::runtime::Runtime, cfg_path: &Path, venue: &str) -> anyhow::Result<()> {
    rt.block_on(async {
        let cfg = veil_aggregator::Config::load(cfg_path)?;
        let bound = veil_aggregator::bind(cfg).await?;
        let token = issue_token(bound.state(), venue).await?;
        let dash = bound
            .dashboard_addr()
            .ok_or_else(|| anyhow::anyhow!("the demo config has no [dashboard]"))?;
        println!("\nServing until Ctrl-C:");
        println!("  gRPC (mTLS)  https://{}", bound.local_addr());
        println!("  dashboard    https://{dash}/?token={token}");
        println!("               (dev certificate: trust DIR/pki/ca.pem or accept the warning)");
        if let Some(m) = bound.metrics_addr() {
            println!("  metrics      http://{m}/metrics");
        }
        bound.serve(veil_aggregator::shutdown_signal()).await?;
        anyhow::Ok(())
    })
}
