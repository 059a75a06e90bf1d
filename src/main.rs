use clap::Parser;

fn main() {
    let cli = sqlora::cli::Cli::parse();
    if let Err(e) = sqlora::run(cli) {
        eprintln!("sqlora: error: {e:#}");
        std::process::exit(1);
    }
}
