//! Interactive jobs at saturation with every callback going to a
//! receiver that never answers, next to the same load without callbacks.

use crate::report::{median, thousands, Report};
use crate::stack::{cpu_by_part, Stack};
use crate::Args;

/// A receiver that accepts connections and never answers: every attempt
/// runs into the dispatcher's timeout.
pub(crate) async fn dead_receiver() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    Ok((url, task))
}

pub(crate) async fn webhooks(
    args: &Args,
    clients: usize,
    seconds: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (url, receiver) = dead_receiver().await?;
    let env = [
        ("INFQ_WEBHOOKS__ALLOW_HTTP", "true".to_string()),
        ("INFQ_WEBHOOKS__ALLOW_HOSTS", "[\"127.0.0.1\"]".to_string()),
    ];
    let (mut plain, mut hooked) = (vec![], vec![]);
    let warm = if args.smoke { 1 } else { 15 };
    let (mut cpu_plain, mut cpu_hooked) = (vec![], vec![]);
    for run in 0..args.runs {
        let stack = Stack::start_with(&args.profile, &env).await?;
        stack.closed_loop(clients.min(32), 1).await?;
        // Alternate the order between runs, so drift favours neither.
        let order: [Option<&str>; 2] = if run % 2 == 0 {
            [None, Some(url.as_str())]
        } else {
            [Some(url.as_str()), None]
        };
        for hook in order {
            // Long enough unmeasured that a dead receiver's attempts have
            // timed out, its circuit is open and its events cycle through
            // the delay tiers: the steady state is what is measured.
            stack.closed_loop_with(clients, warm, hook).await?;
            let before = cpu_by_part(&stack);
            let (rate, h) = stack.closed_loop_with(clients, seconds, hook).await?;
            let after = cpu_by_part(&stack);
            let per_job: Vec<String> = before
                .iter()
                .zip(after)
                .zip(["producer", "worker", "rabbitmq", "redis", "load generator"])
                .map(|((b, a), name)| format!("{name} {:.0}", (a - b) * 1e6 / h.len() as f64))
                .collect();
            eprintln!(
                "  {}: {rate:.0} jobs/s; CPU us per job: {}",
                if hook.is_some() { "callbacks" } else { "plain" },
                per_job.join(", ")
            );
            // The service's CPU per job: producer, worker, broker, Redis.
            let service: f64 =
                (0..4).map(|i| after[i] - before[i]).sum::<f64>() * 1e6 / h.len().max(1) as f64;
            match hook {
                None => cpu_plain.push(service),
                Some(_) => cpu_hooked.push(service),
            }
            match hook {
                None => plain.push(rate),
                Some(_) => hooked.push(rate),
            }
        }
        eprintln!(
            "webhooks run {}: {:.0} jobs/s without callbacks, {:.0} with a dead receiver",
            run + 1,
            plain.last().unwrap_or(&0.0),
            hooked.last().unwrap_or(&0.0)
        );
        stack.stop().await?;
    }
    receiver.abort();
    // Runs differ more than the two loads of one run: the ratio is taken
    // within each run, and its median reported.
    let ratios: Vec<f64> = plain.iter().zip(&hooked).map(|(p, h)| h / p).collect();
    let per_run = ratios
        .iter()
        .map(|r| format!("{:.0}%", 100.0 * r))
        .collect::<Vec<_>>()
        .join(", ");
    let ratio = median(ratios);
    let (p, h) = (median(plain), median(hooked));
    report.row(
        &format!(
            "interactive jobs at saturation, every callback to a receiver that never answers ({clients} clients)"
        ),
        format!(
            "{} jobs/s; {:.0} us CPU per job",
            thousands(h),
            median(cpu_hooked)
        ),
        format!(
            "same load without callbacks: {} jobs/s; {:.0} us CPU per job",
            thousands(p),
            median(cpu_plain)
        ),
        format!("{:.0}% (runs: {per_run}; target: at least 90%)", 100.0 * ratio),
    );
    Ok(())
}
