//! One line per chaos case: `PASS <case>: <figures>` or `FAIL <case>: <why>`.

use std::future::Future;

/// Runs `body` as chaos case `name`. `Ok(figures)` prints `PASS name: figures`; an error or a
/// panic (a failed `assert!` in a shared helper included) prints `FAIL name: why` and fails
/// the calling test.
pub async fn case<F>(name: &str, body: F)
where
    F: Future<Output = anyhow::Result<String>> + Send + 'static,
{
    let why = match tokio::spawn(body).await {
        Ok(Ok(figures)) => {
            println!("\nPASS {name}: {figures}");
            return;
        }
        Ok(Err(e)) => format!("{e:#}"),
        Err(join) => match join.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".to_string()),
            Err(e) => e.to_string(),
        },
    };
    // The summary keeps one line per case; the full text stays in the test output above it.
    let first = why.lines().next().unwrap_or_default();
    println!("\nFAIL {name}: {first}");
    panic!("chaos case {name} failed: {why}");
}
