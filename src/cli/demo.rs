//! `segwatch demo`: the service on a fresh embedded store, a simulated fleet
//! with one injected drift, and a tour of what segwatch found.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

use super::simulate::{DriftSpec, SimulateArgs};
use crate::config::Config;
use crate::store::Role;

/// The demo fleet: as the monitoring end-to-end test, 3 sites over 30 days,
/// site3's liver losing 0.10 Dice from day 20.
const SITES: u32 = 3;
const DAYS: u32 = 30;
const CASES_PER_DAY: u32 = 8;
const DRIFT: &str = "day20:site3:liver:0.10";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's embedded store; it must be new or empty
    /// [default: a new directory under the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to serve on [default: 127.0.0.1:8080, or a free port when it is taken].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Exit after the summary instead of serving until Ctrl-C.
    #[arg(long)]
    exit: bool,
}

/// A directory for the store: the one given (new or empty), else a new one.
fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(dir) => dir,
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
            std::env::temp_dir().join(format!("segwatch-demo-{stamp}-{}", std::process::id()))
        }
    };
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        bail!(
            "{} is not empty; the demo starts from a fresh data directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(dir)
}

/// The address asked for, else 127.0.0.1:8080, else any free port.
async fn listener(listen: Option<String>) -> anyhow::Result<tokio::net::TcpListener> {
    if let Some(address) = listen {
        return tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"));
    }
    match tokio::net::TcpListener::bind("127.0.0.1:8080").await {
        Ok(listener) => Ok(listener),
        Err(_) => Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = data_dir(args.data_dir)?;
    crate::telemetry::init_logging("text", "warn");
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    // The demo's simulated cases arrive within seconds: feed them to the
    // detectors and refresh the gauges without the production delays.
    config.drift.lateness_secs = 2;
    config.drift.refresh_secs = 2;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = listener(args.listen).await?;
        let base = format!("http://{}", listener.local_addr()?);
        config.listen = listener.local_addr()?.to_string();
        let config = Arc::new(config);
        let router = crate::service::launch(config.clone()).await?;
        let timeout = Duration::from_secs(config.limits.header_read_timeout_secs);
        let server = tokio::spawn(super::serve::serve_http1(
            listener,
            router,
            timeout,
            super::serve::shutdown(),
        ));

        let store = config.store(2)?;
        let admin = store.create_key(Role::Admin, None, Some("demo admin")).await?;
        let reader = store.create_key(Role::Read, None, Some("demo dashboards")).await?;
        let ingest = store
            .create_key(Role::Ingest, Some("site1"), Some("demo PACS of site1"))
            .await?;
        println!("segwatch demo");
        println!("  serving         {base}");
        println!("  data directory  {} (embedded store; delete it when done)", dir.display());
        println!("  admin key       {admin}");
        println!("  read key        {reader}   (dashboards, Prometheus)");
        println!("  ingest key      {ingest}   (uploads to site1 only)");
        println!();
        println!(
            "Simulating {} cases: {SITES} sites over {DAYS} days; from day 20 the model loses 0.10 Dice on site3's liver.",
            SITES * DAYS * CASES_PER_DAY
        );
        let uploads = SimulateArgs {
            url: base.clone(),
            key: admin.clone(),
            sites: SITES,
            days: DAYS,
            cases_per_day: CASES_PER_DAY,
            drift_at: vec![DRIFT.parse::<DriftSpec>().map_err(anyhow::Error::msg)?],
            seed: 1,
            model: "simnet".into(),
            model_version: "1.0".into(),
            concurrency: 2,
            shadow_version: None,
            shadow_worse: Vec::new(),
            second_reader: false,
            reader_disagrees: Vec::new(),
            lesions: None,
            probabilities_at: Vec::new(),
        };
        let total = super::simulate::simulate(uploads).await?;
        wait_until_fed(&store, total).await?;
        println!(
            "  {total} cases uploaded, scored and fed to the drift detectors after {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let client = reqwest::Client::new();
        let get = |path: String| {
            let (client, url, key) = (client.clone(), format!("{base}{path}"), admin.clone());
            async move {
                let response = client.get(&url).bearer_auth(key).send().await?;
                anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
                Ok::<Value, anyhow::Error>(response.json().await?)
            }
        };
        let incidents = get("/v1/incidents?state=all".into()).await?;
        let incidents = incidents.as_array().cloned().unwrap_or_default();
        println!();
        println!("Drift incidents: {} (the injected drift is site3 liver)", incidents.len());
        for incident in &incidents {
            print_incident(incident);
            let id = &incident["id"];
            let strata = get(format!("/v1/incidents/{id}/strata")).await?;
            print_strata(&strata);
        }
        let worst = get("/v1/sites/site3/cases?order=dice&structure=liver&limit=5".into()).await?;
        println!();
        println!("Worst site3 cases by liver Dice:");
        for case in worst.as_array().into_iter().flatten() {
            let dice = case["structures"][0]["dice"].as_f64().unwrap_or(f64::NAN);
            println!("  {:<20} liver Dice {dice:.3}", case["case"].as_str().unwrap_or("?"));
        }
        println!();
        println!("Look around:");
        println!("  API reference   {base}/docs");
        println!("  metrics         {base}/metrics (read key)");
        println!("  API             {base}/v1/...");
        println!("Try next:");
        println!("  export KEY={reader}");
        println!("  curl -H \"Authorization: Bearer $KEY\" '{base}/v1/incidents?state=all'");
        println!("  curl -H \"Authorization: Bearer $KEY\" '{base}/v1/sites/site3/cases?order=dice&structure=liver&limit=10'");
        println!("  curl -H \"Authorization: Bearer $KEY\" {base}/metrics | grep segwatch_drift_incident_open");
        println!("  # upload a bundled case pair as site1's PACS would (from the repository's folder):");
        println!("  export INGEST={ingest}");
        println!(
            "  curl -X PUT -H \"Authorization: Bearer $INGEST\" --data-binary @tests/fixtures/reference/cases/P09_pred.nii.gz \
             '{base}/v1/sites/site1/cases/P09/prediction?model=p09net&model_version=1'"
        );
        println!(
            "  curl -X PUT -H \"Authorization: Bearer $INGEST\" --data-binary @tests/fixtures/reference/cases/P09_ref.nii.gz \
             {base}/v1/sites/site1/cases/P09/reference"
        );
        println!("  curl -H \"Authorization: Bearer $INGEST\" {base}/v1/sites/site1/cases/P09");
        if args.exit {
            return Ok(());
        }
        println!();
        println!("Serving until Ctrl-C.");
        server.await?;
        Ok(())
    })
}

/// Waits until every uploaded case is scored and fed to the detectors.
async fn wait_until_fed(store: &crate::store::Store, total: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let (queued, running) = store.job_counts().await?;
        let backlog = store.drift_backlog().await?;
        if queued == 0 && running == 0 && backlog == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{queued} of {total} cases still queued after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_incident(incident: &Value) {
    let text = |field: &str| incident[field].as_str().unwrap_or("?").to_owned();
    println!(
        "  #{} {} {} ({} detector), opened at case time {}; statistic {:.3}, limit {:.3}; {}",
        incident["id"],
        text("site"),
        text("structure"),
        text("detector"),
        text("observed_at"),
        incident["statistic"].as_f64().unwrap_or(f64::NAN),
        incident["limit"].as_f64().unwrap_or(f64::NAN),
        if incident["resolved_at"].is_null() {
            "open"
        } else {
            "resolved"
        },
    );
    let streams: Vec<String> = incident["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}/{} {}",
                s["site"].as_str().unwrap_or("?"),
                s["structure"].as_str().unwrap_or("?"),
                s["detector"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!("     alarming streams: {}", streams.join(", "));
}

fn print_strata(strata: &Value) {
    println!("     strata, largest Dice drop against the baseline first:");
    for stratum in strata.as_array().into_iter().flatten().take(4) {
        println!(
            "       {}={}: {} cases, mean Dice {:.3} ({:+.3})",
            stratum["attribute"].as_str().unwrap_or("?"),
            stratum["value"].as_str().unwrap_or("?"),
            stratum["cases"],
            stratum["mean_dice"].as_f64().unwrap_or(f64::NAN),
            -stratum["drop"].as_f64().unwrap_or(f64::NAN),
        );
    }
}
