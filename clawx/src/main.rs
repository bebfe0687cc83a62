use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One TLS stack (rustls with ring) for every outgoing connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = clawx::cli::Cli::parse();
    clawx_common::telemetry::init(&cli.telemetry);
    match clawx::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
