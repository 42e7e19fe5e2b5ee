fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Hidden subcommand: the per-pod monitor the daemon runs from a sealed
    // copy of this binary (see capcri::runtime::monitor_main).
    if args.get(1).map(String::as_str) == Some("monitor") {
        std::process::exit(capcri::runtime::monitor_main(&args[1..]));
    }
    println!("capcri {}", env!("CARGO_PKG_VERSION"));
}
