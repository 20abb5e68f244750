//! Register once with the Extensions API and exit: the extension's hyper client (`hyper`) or reqwest
//! (`reqwest`). `offpath-lambda-startbench --probe` times exec -> register for both, cold, to choose
//! the Runtime API client by start-up latency.

use offpath_lambda::extension::{EXTENSION_NAME, ExtensionClient};

fn main() -> anyhow::Result<()> {
    let client = std::env::args().nth(1).unwrap_or_default();
    let addr = std::env::var("AWS_LAMBDA_RUNTIME_API")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match client.as_str() {
            "hyper" => {
                ExtensionClient::register(&addr, EXTENSION_NAME).await?;
            }
            "reqwest" => {
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()?;
                let resp = http
                    .post(format!("http://{addr}/2020-01-01/extension/register"))
                    .header("Lambda-Extension-Name", EXTENSION_NAME)
                    .header("Lambda-Extension-Accept-Feature", "accountId")
                    .body(r#"{"events":["INVOKE","SHUTDOWN"]}"#)
                    .send()
                    .await?;
                anyhow::ensure!(resp.status().is_success(), "register: {}", resp.status());
            }
            other => anyhow::bail!("usage: register_probe hyper|reqwest (got {other:?})"),
        }
        Ok(())
    })
}
