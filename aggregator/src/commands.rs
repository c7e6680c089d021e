//! The operator and compliance commands behind `veil-aggregator policy`,
//! `budget` and `audit`: each returns what it prints, or an error naming
//! what was wrong.

use std::path::Path;

use veil_privacy::{
    audit::{ExportInput, VerifierKey, verify_export},
    policy::LoadedPolicy,
};

use crate::{Config, ledger, storage::Storage};

/// `policy check FILE`: validates a policy; returns its summary (with hash).
pub fn policy_check(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let p = LoadedPolicy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(p.summary())
}

/// `budget show --config FILE --venue V [--day D]`.
pub async fn budget_show(
    config: &Config,
    venue: &str,
    day: Option<&str>,
) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let day = day.map_or_else(|| ledger::day_of(veil_common::now_ms()), str::to_owned);
    if !ledger::valid_day(&day) {
        anyhow::bail!("--day must be YYYY-MM-DD, got {day:?}");
    }
    let policies = config.policies().map_err(anyhow::Error::msg)?;
    let policy = policies.get(venue).ok_or_else(|| {
        let mut venues: Vec<&str> = config.venues.iter().map(|v| v.name.as_str()).collect();
        venues.sort_unstable();
        anyhow::anyhow!(
            "--venue {venue:?} is not a venue of this aggregator's config; its venues: {}",
            if venues.is_empty() {
                "none ([[venue]] tables)".to_owned()
            } else {
                venues.join(", ")
            }
        )
    })?;
    let storage = Storage::open_with(&config.storage_options()).await?;
    let r = ledger::report(storage.reads(), venue, &day, Some(policy)).await?;
    storage.close().await;
    let mut s = String::new();
    writeln!(
        s,
        "Budget of venue {} on {} (epsilon at delta {:e})",
        r.venue, r.day, r.delta
    )?;
    writeln!(
        s,
        "  spent {:.4} of {} epsilon, {:.4} left",
        r.spent_epsilon, r.budget_epsilon, r.remaining_epsilon
    )?;
    writeln!(
        s,
        "  {:<18} {:<16} {:>12} {:>12}",
        "metric", "purpose", "epsilon", "rho"
    )?;
    for (metric, purpose, eps, rho) in &r.lines {
        writeln!(s, "  {metric:<18} {purpose:<16} {eps:>12.4} {rho:>12.6}")?;
    }
    if r.lines.is_empty() {
        writeln!(s, "  nothing charged")?;
    }
    writeln!(s, "budget_spent_epsilon {:.6}", r.spent_epsilon)?;
    writeln!(s, "budget_remaining_epsilon {:.6}", r.remaining_epsilon)?;
    Ok(s)
}

/// `audit export --config FILE --out DIR [--from A --to B]` (local operator
/// access to the database).
pub async fn audit_export(
    config: &Config,
    out: &Path,
    range: Option<(u64, u64)>,
) -> anyhow::Result<String> {
    // An export never mixes with (or silently replaces) an earlier one.
    if let Ok(mut entries) = std::fs::read_dir(out)
        && entries.next().is_some()
    {
        anyhow::bail!(
            "--out {} exists and is not empty: give a new or empty directory",
            out.display()
        );
    }
    let storage = Storage::open_with(&config.storage_options()).await?;
    let audit = config.open_audit(&storage).await?;
    let export = audit.export(&storage, range, veil_common::now_ms()).await?;
    export.write(out)?;
    storage.close().await;
    // The verifier key `pki init` and `audit keygen` write beside the
    // signing key, when it is there; otherwise say what to give.
    let vkey = config
        .resolve(&config.audit.signing_key)
        .with_extension("vkey");
    let key = if vkey.is_file() {
        vkey.display().to_string()
    } else {
        "VERIFIER_KEY (the .vkey of audit.signing_key)".to_owned()
    };
    Ok(format!(
        "Exported {} of {} audit entries to {} (entries.jsonl, checkpoint{}); verify with: veil-aggregator audit verify {} --key {key}",
        export.entries_jsonl.lines().count(),
        export.size,
        out.display(),
        if export.proofs_json.is_some() {
            ", proofs.json"
        } else {
            ""
        },
        out.display()
    ))
}

/// `audit verify DIR --key KEYFILE [--previous CHECKPOINT] [--origin O]`:
/// recomputes everything offline; an error names the first thing wrong.
pub fn audit_verify(
    dir: &Path,
    key: &Path,
    previous: Option<&Path>,
    origin: Option<&str>,
) -> anyhow::Result<String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))
    };
    let read_opt = |p: &Path| -> anyhow::Result<Option<String>> {
        if p.exists() {
            Ok(Some(read(p)?))
        } else {
            Ok(None)
        }
    };
    let vkey = read(key)?;
    let vkey = vkey.trim();
    if vkey.starts_with("PRIVATE+KEY+") {
        anyhow::bail!(
            "{} is the checkpoint signing (private) key: verify with the verifier key, the \
             `.vkey` file beside it (e.g. audit.vkey), and keep the signing key on the aggregator",
            key.display()
        );
    }
    let parsed = VerifierKey::parse(vkey).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let origin = origin.map_or_else(|| parsed.name().to_owned(), str::to_owned);
    let entries = read(&dir.join("entries.jsonl"))?;
    let checkpoint = read(&dir.join("checkpoint"))?;
    let proofs = read_opt(&dir.join("proofs.json"))?;
    let consistency = read_opt(&dir.join("consistency.json"))?;
    let previous = previous.map(read).transpose()?;
    let v = verify_export(ExportInput {
        entries_jsonl: &entries,
        checkpoint: &checkpoint,
        proofs_json: proofs.as_deref(),
        vkey,
        origin: &origin,
        previous_checkpoint: previous.as_deref(),
        consistency_proof: consistency.as_deref(),
    })
    .map_err(|e| anyhow::anyhow!("verification FAILED: {e}"))?;
    let range = match (v.first_seq, v.last_seq) {
        (Some(a), Some(b)) => format!("entries {a}..={b}"),
        _ => "no entries".to_owned(),
    };
    let mut msg = format!(
        "OK: {:?} export verified: {range} of a log of size {}, root {}, signed by {}",
        v.kind,
        v.size,
        v.root,
        parsed.label()
    );
    if let Some(p) = &v.previous {
        msg.push_str(&format!(
            "; consistent with the previous checkpoint of size {}",
            p.size
        ));
    }
    // Budget is charged when a lease is granted; release entries name the
    // per-release cost drawn from it.
    let eps: f64 = v
        .entries
        .iter()
        .filter(|e| e.action == crate::audit::action::LEASE && e.decision == "allow")
        .map(|e| e.epsilon)
        .fold(0.0, |a, b| a + b); // not `sum()`: an empty f64 sum is -0.0 ("-0.0000")
    let denies = v.entries.iter().filter(|e| e.decision == "deny").count();
    msg.push_str(&format!(
        "\n  {} entries: {} refusals; epsilon charged by leases in these entries {:.4} (summed, before composition)",
        v.entries.len(),
        denies,
        eps
    ));
    Ok(msg)
}
