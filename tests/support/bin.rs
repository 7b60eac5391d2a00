//! The real `ingress-egress` command line, built inside the harness package so
//! tests can run it as a separate process (and kill it).

fn main() -> std::process::ExitCode {
    ingress_egress::cli::main()
}
