fn main() {
    println!("capcri {}", env!("CARGO_PKG_VERSION"));
}
