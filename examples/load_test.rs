//! Uploads prediction/reference pairs from a folder through the REST API and
//! measures sustained throughput until every pair is scored, for
//! bench/service_throughput.sh. Usage:
//! `load_test --url URL --key KEY --dir DIR [--concurrency N] [--prefix P]`
//! with DIR/pred/*.nii.gz and DIR/ref/*.nii.gz paired by name. The last lines are
//! `PAIRS_PER_SECOND x`, `UPLOAD_P50_SECONDS x` and `UPLOAD_P99_SECONDS x`.

use std::sync::Arc;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: load_test --url URL --key KEY --dir DIR [--concurrency N] [--prefix P]";
    let (url, key, dir) = match (
        arg(&args, "--url"),
        arg(&args, "--key"),
        arg(&args, "--dir"),
    ) {
        (Some(u), Some(k), Some(d)) => (u, k, d),
        _ => return Err(usage.into()),
    };
    let concurrency: usize = arg(&args, "--concurrency").map_or(Ok(4), |c| c.parse())?;
    let prefix = arg(&args, "--prefix").unwrap_or_else(|| "load".into());
    let mut names: Vec<String> = std::fs::read_dir(format!("{dir}/pred"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".nii.gz"))
        .collect();
    names.sort();
    // Read every file first: the benchmark measures the service, not the disk.
    let mut pairs = Vec::new();
    for name in &names {
        let case = format!("{prefix}-{}", name.trim_end_matches(".nii.gz"));
        pairs.push((
            case,
            std::fs::read(format!("{dir}/pred/{name}"))?,
            std::fs::read(format!("{dir}/ref/{name}"))?,
        ));
    }
    let client = reqwest::Client::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (case, pred, reference) in pairs {
        let permit = limit.clone().acquire_owned().await?;
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut latencies = Vec::new();
            for (role, body) in [
                ("prediction?model=bench&model_version=1", pred),
                ("reference", reference),
            ] {
                let sent = Instant::now();
                let response = client
                    .put(format!("{url}/v1/sites/bench/cases/{case}/{role}"))
                    .bearer_auth(&key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("{case} {role}: {}", response.status()));
                }
                latencies.push(sent.elapsed().as_secs_f64());
            }
            Ok::<_, String>((case, latencies))
        }));
    }
    let mut latencies = Vec::new();
    let mut cases = Vec::new();
    for task in tasks {
        let (case, l) = task.await??;
        latencies.extend(l);
        cases.push(case);
    }
    let uploaded = started.elapsed().as_secs_f64();
    // Wait until every pair is scored.
    for case in &cases {
        loop {
            let view: serde_json::Value = client
                .get(format!("{url}/v1/sites/bench/cases/{case}"))
                .bearer_auth(&key)
                .send()
                .await?
                .json()
                .await?;
            match view["status"].as_str() {
                Some("scored") => break,
                Some("failed") => return Err(format!("{case} failed: {}", view["reason"]).into()),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{} pairs uploaded in {uploaded:.2} s, all scored after {total:.2} s",
        cases.len()
    );
    println!("PAIRS_PER_SECOND {:.3}", cases.len() as f64 / total);
    println!("UPLOAD_P50_SECONDS {:.4}", quantile(&latencies, 0.5));
    println!("UPLOAD_P99_SECONDS {:.4}", quantile(&latencies, 0.99));
    Ok(())
}
