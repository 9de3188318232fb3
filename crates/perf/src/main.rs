//! `lepus-perf`: see the library's documentation. Exits 3 when messages were lost,
//! duplicated or reordered.

use std::process::ExitCode;

use lepus_perf::{Args, Parser, run};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lepus-perf: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(port) = args.sink {
        if let Err(e) = runtime.block_on(lepus_perf::sink::serve(port)) {
            eprintln!("lepus-perf: {e}");
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    match runtime.block_on(run(args)) {
        Ok(summary) if summary.is_clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("lepus-perf: {e}");
            ExitCode::FAILURE
        }
    }
}
