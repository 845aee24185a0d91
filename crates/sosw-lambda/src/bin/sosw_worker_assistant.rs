//! The sosw WorkerAssistant as a Lambda function (`provided.al2023`): see the `sosw_lambda` crate.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    sosw_lambda::main(sosw_core::Essential::WorkerAssistant).await
}
