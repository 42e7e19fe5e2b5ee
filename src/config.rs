//! Daemon configuration: embedded defaults, a TOML file, then flags.
