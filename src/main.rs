//! The tensorwire binary: everything is in the library; see `cli`.
fn main() -> std::process::ExitCode {
    tensorwire::cli::main()
}
