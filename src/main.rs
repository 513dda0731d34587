//! The `drover` binary: everything lives in the library; this only exits.

fn main() {
    std::process::exit(drover::cmd::main());
}
