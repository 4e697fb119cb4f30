//! One request to a running segwatch from the command line: its JSON answer,
//! or an error that says what was asked and what the service said.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

/// Where the service is and the key to call it with.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// segwatch base URL, such as http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// A read or admin key (an ingest key with --site of its own site).
    #[arg(long, env = "SEGWATCH_KEY", hide_env_values = true)]
    key: String,
}

/// Runs a command's requests to completion on a runtime of their own.
pub(super) fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

/// A segwatch at a base URL, called with one key.
pub(super) struct Service {
    pub client: reqwest::Client,
    base: String,
    key: String,
}

impl Service {
    /// The service and key of the command line.
    pub fn new(args: &ServiceArgs) -> anyhow::Result<Service> {
        Ok(Service {
            // The statistics of thousands of cases can take a while.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
            base: args.url.trim_end_matches('/').to_owned(),
            key: args.key.clone(),
        })
    }

    /// The URL of `path` (from `/v1/…`) on the service.
    pub fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        reqwest::Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("{} is not a URL", self.base))
    }

    /// Sends `request` with the key; the JSON answer of a success, else an
    /// error naming `what` was asked, the status and the problem's detail.
    pub async fn call(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("segwatch unreachable at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body["detail"].as_str().unwrap_or("no detail");
            bail!("{what}: {status}: {detail}");
        }
        Ok(body)
    }
}
