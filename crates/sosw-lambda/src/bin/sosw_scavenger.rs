//! The sosw Scavenger as a Lambda function (`provided.al2023`): see the `sosw_lambda` crate.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sosw_lambda::run(sosw_core::Essential::Scavenger).await
}
