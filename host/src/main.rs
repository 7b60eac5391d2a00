fn main() -> std::process::ExitCode {
    ingress_egress::cli::main()
}
