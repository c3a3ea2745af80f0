//! The `dealbridge` binary: everything is a subcommand of [`dealbridge::cli`].

fn main() -> std::process::ExitCode {
    dealbridge::cli::main()
}
