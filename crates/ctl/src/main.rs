//! The `lepusctl` binary: runs one command and maps its error to an exit code.

fn main() {
    match lepus_ctl::run(std::env::args_os()) {
        Ok(text) if text.is_empty() => {}
        Ok(text) => println!("{text}"),
        Err(lepus_ctl::CtlError::Usage(e)) => e.exit(),
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
