//! The results as Markdown: tables, verdicts against the targets, the machine and versions.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::{Cli, MIB, Row, Sample, Table, median, servers};
use servers::Peer;

fn version(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn render(cli: &Cli, tables: &[Table]) -> anyhow::Result<String> {
    let mut out = String::new();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = version("uname", &["-r"]);
    let commit = version("git", &["rev-parse", "--short", "HEAD"]);
    writeln!(out, "# Benchmarks")?;
    writeln!(out)?;
    writeln!(
        out,
        "Produced by `{}` (bootherd {commit}); {} repetitions per figure, the table shows the median and the range (min–max). Every server runs alone on 127.0.0.1:69 serving the same directory, restarted for each repetition so memory figures are per run; the load generator runs on the same machine.",
        cli.command,
        if cli.quick { 1 } else { cli.reps }
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "- Machine: {} cores, {cpu}, Linux {kernel}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    writeln!(
        out,
        "- Peers: tftpd-hpa `{}`, atftpd `{}`, dnsmasq `{}`",
        version("/usr/sbin/in.tftpd", &["-V"]),
        version(cli.atftpd.to_str().unwrap_or("atftpd"), &["--version"]),
        version("dnsmasq", &["--version"])
    )?;
    writeln!(
        out,
        "- Settings: concurrency limits raised above the storm size for every server (bootherd `--max-transfers 4096 --max-transfers-per-client 4096`, atftpd `--maxthread 4096`, dnsmasq `--tftp-max=4096`); routine logging off (bootherd `RUST_LOG=warn`, dnsmasq `--quiet-tftp`/`--quiet-dhcp`, atftpd to /dev/null)"
    )?;
    writeln!(
        out,
        "- CPU is the server's user+system time; in the TFTP scenarios a control group of the server's own counts it, together with every process the server forks (tftpd-hpa serves each transfer in a child). Peak RSS is the highest resident memory of the server's process tree, sampled every 10 ms and including the main process's high-water mark."
    )?;
    writeln!(
        out,
        "- One-client scenarios: the client runs on the first CPU and the server (all its threads and children) on the last, as with a client on another machine; left to the scheduler, whether the two share a CPU changed a lock-step transfer's speed twofold. Each repetition repeats the download until at least 2 s are measured."
    )?;
    writeln!(
        out,
        "- Targets are judged round by round: every server is measured once per round, in turn, and bootherd's figure is divided by the best peer's from the same round."
    )?;
    writeln!(out)?;
    let mut verdicts = Vec::new();
    for table in tables {
        write_table(&mut out, table, &mut verdicts)?;
    }
    write_targets(&mut out, tables, &verdicts)?;
    // Hand-written findings that go with the figures (profiling, changes made, assessment).
    if let Ok(notes) = fs::read_to_string("bench/notes.md") {
        writeln!(out)?;
        out.push_str(&notes);
    }
    Ok(out)
}

/// One scenario's table, and its verdict against the targets.
fn write_table(out: &mut String, table: &Table, verdicts: &mut Vec<String>) -> anyhow::Result<()> {
    writeln!(out, "## {}", table.title)?;
    writeln!(out)?;
    writeln!(
        out,
        "Figure: {} ({}, {} is better).",
        table.what,
        table.unit,
        if table.higher_is_better {
            "higher"
        } else {
            "lower"
        }
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| server | {} (median) | range | bootherd vs this | CPU s/GiB | CPU s | peak RSS MiB | failures | notes |",
        table.unit
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    let ours = table
        .rows
        .iter()
        .find(|r| r.peer == Peer::Bootherd)
        .map(|r| median(&mut good_values(r)));
    let mut best_peer: Option<f64> = None;
    let mut best_row: Option<&Row> = None;
    for row in &table.rows {
        if let Some(reason) = &row.unsupported {
            writeln!(out, "| {} | n/a | | | | | | | {reason} |", row.peer.name())?;
            continue;
        }
        let mut values = good_values(row);
        let med = median(&mut values);
        let (lo, hi) = (
            values.first().copied().unwrap_or(f64::NAN),
            values.last().copied().unwrap_or(f64::NAN),
        );
        let ratio = match (ours, row.peer) {
            (_, Peer::Bootherd) => "—".to_string(),
            (Some(o), _) if table.higher_is_better => format!("{:.2}×", o / med),
            (Some(o), _) => format!("{:.2}×", med / o),
            _ => String::new(),
        };
        if row.peer.is_other_server() && med.is_finite() {
            let better = match best_peer {
                None => true,
                Some(b) if table.higher_is_better => med > b,
                Some(b) => med < b,
            };
            if better {
                best_peer = Some(med);
                best_row = Some(row);
            }
        }
        let mut cpu_gib: Vec<f64> = row
            .samples
            .iter()
            .map(|s| s.cpu_per_gib)
            .filter(|v| v.is_finite())
            .collect();
        let mut cpu_s: Vec<f64> = row.samples.iter().map(|s| s.cpu_seconds).collect();
        let peak = row.samples.iter().map(|s| s.peak_rss).max().unwrap_or(0) as f64 / MIB;
        let failures: u64 = row.samples.iter().map(|s| s.failures).sum();
        let mut notes: Vec<String> = row
            .samples
            .iter()
            .map(|s| s.extra.clone())
            .filter(|e| !e.is_empty())
            .take(1)
            .collect();
        if let Some(error) = row
            .samples
            .iter()
            .map(|s| s.note.clone())
            .find(|n| !n.is_empty())
        {
            notes.push(format!("first failure: {error}"));
        }
        writeln!(
            out,
            "| {} | {:.1} | {:.1}–{:.1} | {ratio} | {} | {:.2} | {peak:.1} | {failures} | {} |",
            row.peer.name(),
            med,
            lo,
            hi,
            if cpu_gib.is_empty() {
                "—".into()
            } else {
                format!("{:.2}", median(&mut cpu_gib))
            },
            median(&mut cpu_s),
            notes.join("; ")
        )?;
    }
    writeln!(out)?;
    let our_row = table.rows.iter().find(|r| r.peer == Peer::Bootherd);
    if let (Some(o), Some(b), Some(ours_row), Some(best_row)) = (ours, best_peer, our_row, best_row)
    {
        let verdict = paired_verdict(ours_row, best_row, table.higher_is_better);
        verdicts.push(format!(
            "- {}: bootherd {o:.1} vs best peer ({}) {b:.1} {} by median — {verdict}",
            table.title,
            best_row.peer.name(),
            table.unit,
        ));
    }
    Ok(())
}

/// The verdicts, and the targets that are not a comparison (storm failures and memory,
/// windowing).
fn write_targets(out: &mut String, tables: &[Table], verdicts: &[String]) -> anyhow::Result<()> {
    writeln!(out, "## Targets")?;
    writeln!(out)?;
    for v in verdicts {
        writeln!(out, "{v}")?;
    }
    if let Some(storm) = tables.iter().find(|t| t.title.starts_with("Boot storm")) {
        if let Some(row) = storm.rows.iter().find(|r| r.peer == Peer::Bootherd) {
            let failures: u64 = row.samples.iter().map(|s| s.failures).sum();
            let peak = row.samples.iter().map(|s| s.peak_rss).max().unwrap_or(0) as f64 / MIB;
            writeln!(
                out,
                "- Boot storm failures (bootherd, all repetitions): {failures} (target 0)"
            )?;
            writeln!(
                out,
                "- Boot storm peak RSS (bootherd): {peak:.1} MiB (target under 64 MiB)"
            )?;
        }
    }
    let windowed = tables.iter().find(|t| t.title.contains("windowsize"));
    let lockstep = tables
        .iter()
        .find(|t| t.title.contains("blksize 1468") && !t.title.contains("windowsize"));
    if let (Some(w), Some(l)) = (windowed, lockstep) {
        let ours = w
            .rows
            .iter()
            .find(|r| r.peer == Peer::Bootherd)
            .map(|r| median(&mut good_values(r)));
        let best_lockstep = l
            .rows
            .iter()
            .filter(|r| r.peer.is_other_server())
            .map(|r| median(&mut good_values(r)))
            .filter(|v| v.is_finite())
            .fold(f64::NAN, f64::max);
        if let Some(o) = ours {
            writeln!(
                out,
                "- Windowsize 16 vs the best stop-and-wait peer at blksize 1468: {:.1}×",
                o / best_lockstep
            )?;
        }
    }
    Ok(())
}

/// Whether bootherd is slower than `best`, judged repetition by repetition: the harness runs
/// every server once per round, so a round's figures share the machine's state of the moment,
/// and the ratio within a round is free of the drift between rounds (often ±20 % on a shared
/// machine, more than the gaps being judged). Slower means slower in every round; where the
/// rounds disagree, the servers are level within what this machine can tell apart.
fn paired_verdict(ours: &Row, best: &Row, higher_is_better: bool) -> String {
    let usable = |s: &Sample| s.value.is_finite() && s.value > 0.0;
    let mut ratios: Vec<f64> = ours
        .samples
        .iter()
        .zip(&best.samples)
        .filter(|(a, b)| usable(a) && usable(b))
        .map(|(a, b)| {
            if higher_is_better {
                a.value / b.value
            } else {
                b.value / a.value
            }
        })
        .collect();
    if ratios.is_empty() {
        return "**not measured** in a common round".into();
    }
    ratios.sort_by(f64::total_cmp);
    let rounds = ratios.len();
    let ahead = ratios.iter().filter(|r| **r >= 1.0).count();
    let (lo, hi) = (ratios[0], ratios[rounds - 1]);
    let med = median(&mut ratios);
    let spread = format!("bootherd/peer per round {med:.2}× median, {lo:.2}–{hi:.2}×");
    if ahead == rounds {
        format!("not slower: ahead in all {rounds} rounds ({spread})")
    } else if med >= 1.0 {
        format!("not slower: ahead in {ahead} of {rounds} rounds ({spread})")
    } else if ahead > 0 {
        format!("level within noise: ahead in {ahead} of {rounds} rounds ({spread})")
    } else {
        format!("**slower** in all {rounds} rounds ({spread})")
    }
}

fn good_values(row: &Row) -> Vec<f64> {
    let mut v: Vec<f64> = row
        .samples
        .iter()
        .filter(|s| s.failures == 0 || s.value > 0.0)
        .map(|s| s.value)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}
